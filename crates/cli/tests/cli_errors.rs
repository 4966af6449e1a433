//! `overlord jobs list|get|cancel` and `overlord results` against a real coordinator process, and the
//! errors a user meets: unknown job id, coordinator unreachable, malformed URL, bad `--format`, a job id
//! that is not a number. Each error must name the bad input and say how to fix it; nothing succeeds
//! silently.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use overlord_testkit::process::{Kill, spawn_with_addr_file};

fn overlord(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_overlord"))
        .args(args)
        .env_remove("OVERLORD_COORDINATOR")
        .stdin(Stdio::null())
        .output()
        .expect("run overlord")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `args`, expects failure, and checks stderr names every one of `mentions`.
fn fails_naming(args: &[&str], mentions: &[&str]) {
    let o = overlord(args);
    let (out, err) = text(&o);
    assert!(
        !o.status.success(),
        "`overlord {}` succeeded: {out}",
        args.join(" ")
    );
    for m in mentions {
        assert!(
            err.contains(m),
            "`overlord {}`: stderr does not name {m:?}:\n{err}",
            args.join(" ")
        );
    }
}

fn start_coordinator(dir: &std::path::Path) -> (Kill, String) {
    let cfg = dir.join("coordinator.toml");
    std::fs::write(
        &cfg,
        "version = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let addr_file = dir.join("addr");
    let (kill, addr) = spawn_with_addr_file(
        Command::new(env!("CARGO_BIN_EXE_overlord"))
            .args([
                "coordinator",
                "--config",
                cfg.to_str().unwrap(),
                "--addr-file",
                addr_file.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
        &addr_file,
        Duration::from_secs(60),
    );
    (kill, format!("http://{addr}"))
}

#[test]
fn jobs_and_results_commands_and_their_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_coord, url) = start_coordinator(dir.path());
    let url = url.as_str();

    // A job to list, get, read and cancel (no minion: it stays running until cancelled).
    let o = overlord(&[
        "scan",
        "127.0.0.1",
        "-p",
        "1-100",
        "-m",
        "portscan",
        "--coordinator",
        url,
        "--detach",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "scan --detach: {err}");
    let id: String = out
        .split(|c: char| !c.is_ascii_digit())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| panic!("no job id in {out:?}"))
        .to_string();

    let o = overlord(&["jobs", "list", "--coordinator", url]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "jobs list: {err}");
    assert!(out.contains(&id), "jobs list does not show job {id}: {out}");
    // No minion runs `portscan`: `jobs get` says so instead of showing a silently pending job
    // (the job reports its demand to the scheduler asynchronously: poll briefly).
    let t0 = Instant::now();
    loop {
        let o = overlord(&["jobs", "get", &id, "--coordinator", url]);
        assert!(o.status.success(), "jobs get: {}", text(&o).1);
        let out = text(&o).0;
        assert!(out.contains(&id));
        if out.contains("WAITING for a minion with module portscan") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "jobs get never names the module nobody serves: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for format in ["table", "jsonl", "csv"] {
        let o = overlord(&["results", &id, "--format", format, "--coordinator", url]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "results --format {format}: {err}");
        assert!(out.is_empty(), "a job nobody ran has no findings: {out}");
        assert!(err.contains("0 findings"), "{err}");
    }
    let o = overlord(&["jobs", "cancel", &id, "--coordinator", url]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "jobs cancel: {err}");
    assert!(out.to_lowercase().contains("cancel"), "{out}");

    // Unknown job ids: NotFound, the id named, and where to find the right one.
    for args in [
        &["jobs", "get", "987654321"][..],
        &["jobs", "cancel", "987654321"],
        &["results", "987654321"],
        &["watch", "987654321"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--coordinator", url]);
        fails_naming(&a, &["987654321", "not found", "overlord jobs list"]);
    }

    // Bad input on the command line: named by clap with the accepted values.
    fails_naming(
        &["results", &id, "--format", "xml", "--coordinator", url],
        &["xml", "--format", "table", "jsonl"],
    );
    fails_naming(
        &["jobs", "get", "seven", "--coordinator", url],
        &["seven", "<JOB>"],
    );

    // The coordinator unreachable (a port nothing listens on) or a malformed URL: the URL is named
    // with the flag that changes it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = format!("http://{closed}");
    for args in [
        &["jobs", "list"][..],
        &["results", "1"],
        &["jobs", "get", "1"],
    ] {
        let mut a = args.to_vec();
        a.extend(["--coordinator", dead.as_str()]);
        fails_naming(&a, &[dead.as_str(), "--coordinator"]);
    }
    fails_naming(
        &["jobs", "list", "--coordinator", "not a url"],
        &["not a url", "http://127.0.0.1:50051"],
    );
}

/// The coordinator's own gRPC port (tonic, cleartext HTTP/2) is named by the service engine
/// (`http2`, from the SETTINGS frame it sends first), not left unrecognised with a binary
/// banner: a scan of the machine running the coordinator (the quick start's) shows what it is.
#[test]
fn the_coordinators_grpc_port_is_named_http2() {
    use overlord_probes::service::{IdentifyOptions, ProbeDb, identify};
    let dir = tempfile::tempdir().unwrap();
    let (_kill, url) = start_coordinator(dir.path());
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();
    // what a minion loads: nmap's file when installed, then ours
    let db = ProbeDb::load_default().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(identify(addr, &IdentifyOptions::default(), db.as_ref()));
    assert_eq!(r.service.as_deref(), Some("http2"), "{r:?}");
    assert!(r.info.as_deref().unwrap_or("").contains("h2c"), "{r:?}");
}
