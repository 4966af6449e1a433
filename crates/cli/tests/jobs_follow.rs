//! Jobs a person can follow (issue 17 point 8), over a real embedded cluster and the real
//! `overlord` binary: task errors with their class, minion and attempts (`jobs errors`, the
//! ListTaskErrors RPC, `jobs get`), cancelled tasks counted apart from failed ones, the spec and
//! params in `jobs get`, the cursor and an unrecognised service's banner in table output, and
//! `--format csv` for `results`, `watch` and `jobs errors`.

use overlord_cli::embedded::Embedded;
use overlord_proto::v1;
use std::io::Write;
use std::time::{Duration, Instant};

async fn overlord(args: &[&str]) -> (String, String) {
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
        .args(args)
        .env_remove("OVERLORD_COORDINATOR")
        .env_remove("OVERLORD_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("run overlord");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(o.status.success(), "overlord {args:?}: {err}\n{out}");
    (out, err)
}

async fn wait_until(
    c: &mut overlord_cli::client::Client,
    job: u64,
    what: &str,
    done: impl Fn(&v1::JobStatus) -> bool,
) -> v1::JobStatus {
    let t0 = Instant::now();
    loop {
        let st = overlord_cli::client::get(c, job).await.unwrap();
        if done(&st) {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{what}: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn spec(modules: &[&str], ports: &str, params: &str) -> v1::JobSpec {
    v1::JobSpec {
        targets: vec!["127.0.0.1".into()],
        ports: ports.into(),
        modules: modules.iter().map(|m| m.to_string()).collect(),
        params_json: params.into(),
        ..Default::default()
    }
}

/// A TCP service nobody recognises: it greets every connection with a fixed line.
fn odd_service() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"ZQX-OVERLORD-ODD 7 ready\r\n");
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    port
}

/// A TCP port that accepts and hangs up at once.
fn slammer() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            drop(s);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_errors_cancelled_tasks_job_detail_cursor_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let emb = Embedded::start(dir.path().join("coord"), 1, 8)
        .await
        .unwrap();
    let url = emb.url.as_str();
    let mut c = overlord_cli::client::connect(url).await.unwrap();
    let closed = slammer();

    // A screenshot of a port that hangs up at once: a network error on every attempt, failed
    // after max_attempts (5).
    let refused = overlord_cli::client::submit(
        &mut c,
        spec(
            &["screenshot"],
            &closed.to_string(),
            r#"{"protocol":"vnc"}"#,
        ),
    )
    .await
    .unwrap()
    .job_id;
    // A bad parameter: invalid, failed at once (permanent).
    let invalid = overlord_cli::client::submit(
        &mut c,
        spec(
            &["screenshot"],
            &closed.to_string(),
            r#"{"protocol":"telex"}"#,
        ),
    )
    .await
    .unwrap()
    .job_id;
    let done = |st: &v1::JobStatus| st.state == v1::JobState::Completed as i32;
    let st = wait_until(&mut c, refused, "refused job", done).await;
    assert_eq!((st.tasks_failed, st.tasks_cancelled), (1, 0), "{st:?}");
    let classes: Vec<(String, u64)> = st
        .errors
        .iter()
        .map(|e| (overlord_cli::client::error_class_name(e.class), e.attempts))
        .collect();
    assert_eq!(classes, vec![("network".to_string(), 5)], "{st:?}");
    let st = wait_until(&mut c, invalid, "invalid job", done).await;
    assert_eq!(st.tasks_failed, 1);
    assert_eq!(
        overlord_cli::client::error_class_name(st.errors[0].class),
        "invalid"
    );

    // The API: the task, its minion, its attempts, its last error.
    let page = overlord_cli::client::task_errors(&mut c, refused, 0, 0)
        .await
        .unwrap();
    assert_eq!(page.errors.len(), 1, "{page:?}");
    let e = &page.errors[0];
    assert_eq!(e.state, v1::TaskErrorState::Failed as i32);
    assert_eq!(e.attempts, 5);
    assert_eq!(e.minion, "embedded-1");
    assert_eq!(e.module, "screenshot");
    assert_eq!(e.target, "127.0.0.1");
    assert_eq!(e.ports, closed.to_string());
    assert_eq!(e.class, v1::TaskErrorClass::Network as i32);
    assert!(e.error.contains("closed the connection"), "{e:?}");
    assert_eq!(page.next_after_task, 0);
    let after = overlord_cli::client::task_errors(&mut c, refused, e.task_id, 0)
        .await
        .unwrap();
    assert!(
        after.errors.is_empty(),
        "paged past the only task: {after:?}"
    );

    // The CLI: `jobs get` shows spec, params, counters, errors by class and the task.
    let id = refused.to_string();
    let (out, _) = overlord(&["jobs", "get", &id, "--coordinator", url]).await;
    for want in [
        "1 failed, 0 cancelled",
        "modules     screenshot",
        &format!("ports       {closed}"),
        r#"params      {"protocol":"vnc"}"#,
        "errors      network 5",
        "failed    screenshot attempt 5  minion embedded-1",
    ] {
        assert!(out.contains(want), "jobs get lacks `{want}`:\n{out}");
    }
    let (out, err) = overlord(&[
        "jobs",
        "errors",
        &id,
        "--format",
        "csv",
        "--coordinator",
        url,
    ])
    .await;
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], overlord_cli::client::TASK_ERROR_CSV_HEADER);
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[1].contains(",failed,5,embedded-1,local-a,network,"),
        "{}",
        rows[1]
    );
    assert!(err.contains("1 task errors"), "{err}");
    let (out, _) = overlord(&[
        "jobs",
        "errors",
        &invalid.to_string(),
        "--format",
        "jsonl",
        "--coordinator",
        url,
    ])
    .await;
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["class"], "invalid");
    assert_eq!(v["attempts"], 1);
    assert!(
        v["error"].as_str().unwrap().starts_with("invalid task: "),
        "{v}"
    );

    // Cancel a running job: its tasks count as cancelled, not failed.
    let slow = overlord_cli::client::submit(
        &mut c,
        v1::JobSpec {
            modules: vec!["noop".into()],
            params_json: r#"{"count":16,"sleep_ms":30000}"#.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .job_id;
    wait_until(&mut c, slow, "slow job leased", |st| st.tasks_leased > 0).await;
    let (out, _) = overlord(&["jobs", "cancel", &slow.to_string(), "--coordinator", url]).await;
    assert!(out.contains("0 failed"), "{out}");
    let st = overlord_cli::client::get(&mut c, slow).await.unwrap();
    assert_eq!(st.state, v1::JobState::Cancelled as i32);
    assert_eq!(st.tasks_failed, 0, "{st:?}");
    assert!(st.tasks_cancelled > 0, "{st:?}");

    // Table output: the cursor first, and what an unrecognised service said.
    let odd = odd_service();
    let found =
        overlord_cli::client::submit(&mut c, spec(&["portscan", "service"], &odd.to_string(), ""))
            .await
            .unwrap()
            .job_id;
    wait_until(&mut c, found, "service job", done).await;
    let id = found.to_string();
    let (out, _) = overlord(&["results", &id, "--coordinator", url]).await;
    let first = out.lines().next().unwrap_or_default();
    assert!(first.trim_start().starts_with("1 open_port"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" service ") && l.contains("banner:ZQX-OVERLORD-ODD 7 ready")),
        "{out}"
    );
    // `--after` takes the printed cursor.
    let (out, _) = overlord(&["results", &id, "--format", "csv", "--coordinator", url]).await;
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows[0], overlord_cli::client::FINDING_CSV_HEADER);
    assert!(rows[1].starts_with(&format!("1,{found},")), "{out}");
    assert_eq!(rows.len(), 3, "open_port + service: {out}");
    let (out, _) = overlord(&[
        "watch",
        &id,
        "--after",
        "1",
        "--format",
        "csv",
        "--coordinator",
        url,
    ])
    .await;
    let rows: Vec<&str> = out.lines().collect();
    assert_eq!(rows.len(), 2, "header + the finding after cursor 1: {out}");
    assert!(rows[1].starts_with(&format!("2,{found},")), "{out}");
}
