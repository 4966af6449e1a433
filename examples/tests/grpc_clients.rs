//! Both gRPC client examples (Rust `grpc-client`, Python `examples/grpc_client.py`, stubs
//! generated from proto/ into a temp dir at run time) against a real coordinator with a minion on
//! loopback: each submits a portscan of three listening ports, watches, resumes the watch after
//! the first finding's cursor, pages the results (the watch and the pages agree: nothing lost,
//! nothing twice) and finds the three services with `QueryService.Search`.

use overlord_cli::embedded::Embedded;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::Output;
use tokio::process::Command;

fn listeners(n: usize) -> (Vec<TcpListener>, Vec<u16>) {
    let ls: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    (ls, ports)
}

/// Checks one client's output; returns its job id.
fn check(who: &str, out: &Output, ports: &[u16]) -> u64 {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{who} failed: {}\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{who}: no `{prefix}` line in\n{text}"))
            .to_string()
    };
    let job: u64 = line("submitted job ")["submitted job ".len()..]
        .parse()
        .unwrap();
    assert!(
        line("disconnected; resuming the watch after cursor ").ends_with(" 1"),
        "{text}"
    );
    assert!(
        line("finished: ").starts_with("finished: completed"),
        "{text}"
    );
    // Three findings paged two at a time.
    assert_eq!(
        line("results: "),
        "results: 3 findings in 2 pages of 2",
        "{who}"
    );
    let search = line(&format!("search job:{job}: "));
    let got: BTreeSet<&str> = search.split(": ").nth(2).unwrap().split(' ').collect();
    let want: BTreeSet<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(
        got,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "{who}: {search}"
    );
    assert!(search.contains(" in 2 pages"), "{who}: {search}");
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_clients_submit_watch_resume_page_and_search() {
    let dir = tempfile::tempdir().unwrap();
    let emb = Embedded::start(dir.path().join("coord"), 1, 8)
        .await
        .unwrap();
    let (_ls, ports) = listeners(3);
    let ports_arg = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");

    let rust = Command::new(env!("CARGO_BIN_EXE_grpc-client"))
        .args(["--coordinator", &emb.url, "--target", "127.0.0.1"])
        .args(["--ports", &ports_arg, "--page", "2", "--timeout-secs", "60"])
        .env_remove("OVERLORD_TOKEN")
        .output()
        .await
        .unwrap();
    let rust_job = check("rust client", &rust, &ports);

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/grpc_client.py");
    let py = Command::new("python3")
        .arg(script)
        .args(["--coordinator", &emb.url, "--target", "127.0.0.1"])
        .args(["--ports", &ports_arg, "--page", "2", "--timeout", "60"])
        .env_remove("OVERLORD_TOKEN")
        .output()
        .await
        .expect("python3 (scripts/install-deps.sh installs grpcio, grpcio-tools)");
    let py_job = check("python client", &py, &ports);
    assert_ne!(rust_job, py_job);
}

/// A coordinator that requires API tokens: without `OVERLORD_TOKEN` the client is refused
/// (Unauthenticated, named on stderr); with an operator's token both clients do the whole walk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_send_the_token_from_overlord_token() {
    use overlord_coordinator::security::tokens;
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("tokens.toml");
    let token = tokens::add_token(
        &tf,
        "example",
        overlord_core::security::Role::Operator,
        Some("team-x"),
    )
    .unwrap();
    let mut s = overlord_coordinator::Settings::local(dir.path().join("coord"));
    s.tokens = Some(tokens::Tokens::load(&tf).unwrap());
    let emb = Embedded::start_with(s, 1, 8).await.unwrap();
    let (_ls, ports) = listeners(3);
    let ports_arg = ports
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let rust = |tok: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_grpc-client"));
        c.args(["--coordinator", &emb.url, "--target", "127.0.0.1"])
            .args(["--ports", &ports_arg, "--page", "2", "--timeout-secs", "60"]);
        match tok {
            Some(t) => c.env("OVERLORD_TOKEN", t),
            None => c.env_remove("OVERLORD_TOKEN"),
        };
        c
    };
    let refused = rust(None).output().await.unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("valid authentication credentials"), "{err}");

    let ok = rust(Some(&token)).output().await.unwrap();
    check("rust client with a token", &ok, &ports);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/grpc_client.py");
    let py = Command::new("python3")
        .arg(script)
        .args(["--coordinator", &emb.url, "--target", "127.0.0.1"])
        .args(["--ports", &ports_arg, "--page", "2", "--timeout", "60"])
        .env("OVERLORD_TOKEN", &token)
        .output()
        .await
        .expect("python3");
    check("python client with a token", &py, &ports);
}
