//! Regressions: `jobs list | head -0`, `images list | head -0` and `watch | head -0` (stdout
//! closed before the first line) end quietly instead of panicking on the broken pipe; a minion
//! that cannot reach its coordinator says so at the default log level, without ANSI colour codes
//! when stderr is not a terminal.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use overlord_testkit::process::{Kill, spawn_with_addr_file};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_overlord"));
    c.env_remove("OVERLORD_COORDINATOR")
        .env_remove("OVERLORD_LOG")
        .env_remove("OVERLORD_TOKEN")
        .env_remove("OVERLORD_TOKEN_FILE")
        .stdin(Stdio::null());
    c
}

fn spawn_waiting_for_addr(
    _dir: &std::path::Path,
    args: &[&str],
    addr_file: &std::path::Path,
) -> (Kill, String) {
    spawn_with_addr_file(
        bin()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
        addr_file,
        Duration::from_secs(60),
    )
}

/// Runs `args` with stdout closed from the start; the command must end by itself, successfully,
/// without a panic message.
fn with_closed_stdout(args: &[&str]) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take()); // the reader is gone: the first write gets EPIPE
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!(
                "`overlord {}` did not end with its stdout closed",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        !err.contains("panicked"),
        "`overlord {}`: {err}",
        args.join(" ")
    );
    assert!(
        status.success(),
        "`overlord {}` {status}: {err}",
        args.join(" ")
    );
}

#[test]
fn closed_stdout_ends_list_and_watch_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("coordinator.toml");
    std::fs::write(
        &cfg,
        "version = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n",
    )
    .unwrap();
    let addr_file = dir.path().join("addr");
    let (_coord, addr) = spawn_waiting_for_addr(
        dir.path(),
        &[
            "coordinator",
            "--config",
            cfg.to_str().unwrap(),
            "--addr-file",
            addr_file.to_str().unwrap(),
        ],
        &addr_file,
    );
    let url = format!("http://{addr}");
    let mcfg = dir.path().join("minion.toml");
    std::fs::write(
        &mcfg,
        format!("version = 1\nid = \"m1\"\nprovider = \"p\"\ncoordinator = \"{url}\"\nmodules = [\"noop\"]\n"),
    )
    .unwrap();
    let _minion = Kill::one(
        bin()
            .args(["minion", "--config", mcfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // A job with findings (noop, one per task).
    let id = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = overlord_cli::client::connect(&url).await.unwrap();
        let spec = overlord_proto::v1::JobSpec {
            name: "pipes".into(),
            modules: vec!["noop".into()],
            params_json: r#"{"count":20,"emit":true}"#.into(),
            ..Default::default()
        };
        overlord_cli::client::submit(&mut c, spec)
            .await
            .unwrap()
            .job_id
    });
    let id = id.to_string();
    with_closed_stdout(&["jobs", "list", "--coordinator", &url]);
    with_closed_stdout(&["watch", &id, "--coordinator", &url]);
    with_closed_stdout(&["results", &id, "--coordinator", &url]);
    with_closed_stdout(&["images", "list", "--coordinator", &url]);
}

#[test]
fn an_unreachable_coordinator_is_reported_at_the_default_level_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mcfg = dir.path().join("minion.toml");
    std::fs::write(
        &mcfg,
        format!("version = 1\nid = \"lonely\"\nprovider = \"p\"\ncoordinator = \"http://127.0.0.1:{port}\"\nmodules = [\"noop\"]\n"),
    )
    .unwrap();
    let mut child = Kill::one(
        bin()
            .args(["minion", "--config", mcfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.first().stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(l) = line else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the minion said nothing about its unreachable coordinator");
    assert!(line.contains("cannot hold a session"), "{line}");
    assert!(
        line.contains(&port.to_string()),
        "names the coordinator: {line}"
    );
    assert!(
        !line.contains('\u{1b}'),
        "ANSI codes on a non-terminal: {line:?}"
    );
}
