//! A sweep through the whole cluster (embedded coordinator + 2 minions over real gRPC): many
//! addresses × one port become a couple of block tasks, not one task per address, and the open
//! set is exactly the listeners — on 127.0.0.0/22 and on ::1 (the portscan module's IPv6 check;
//! it also proves a spec with an IPv6 range is stored and read back).

mod support;

use overlord_cli::client;
use overlord_cli::embedded::Embedded;
use overlord_proto::v1;
use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};
use std::time::Duration;

fn listeners() -> (u16, Vec<TcpListener>, BTreeSet<(IpAddr, u16)>) {
    support::listeners(&["127.0.1.7", "127.0.2.9", "127.0.3.254", "127.0.0.1", "::1"])
}

async fn run_job(
    url: &str,
    module: &str,
    port: u16,
    targets: &[&str],
) -> (v1::JobStatus, BTreeSet<(IpAddr, u16)>) {
    let (st, open, n) = run_job_with(url, module, port, targets, "").await;
    assert_eq!(n, open.len(), "duplicate findings");
    (st, open)
}

/// Runs a job with `params_json`; returns its status, the open set and the number of findings.
async fn run_job_with(
    url: &str,
    module: &str,
    port: u16,
    targets: &[&str],
    params_json: &str,
) -> (v1::JobStatus, BTreeSet<(IpAddr, u16)>, usize) {
    let mut c = client::connect(url).await.unwrap();
    let spec = v1::JobSpec {
        name: format!("sweep {module}"),
        targets: targets.iter().map(|t| t.to_string()).collect(),
        ports: port.to_string(),
        modules: vec![module.into()],
        params_json: params_json.into(),
        ..Default::default()
    };
    support::run_to_end(&mut c, spec, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_is_a_few_block_tasks_with_the_exact_open_set_on_v4_and_v6() {
    let (port, _ls, want) = listeners();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Embedded::start(dir.path().join("data"), 2, 8)
        .await
        .unwrap();
    let (st, open) = run_job(&cluster.url, "portscan", port, &["127.0.0.0/22"]).await;
    // 1,024 addresses of the /22 in one block task (4,096 probes per task).
    assert_eq!(st.tasks_total, 1, "{}", client::status_line(&st));
    assert_eq!(st.tasks_failed, 0, "{}", client::status_line(&st));
    let want4: BTreeSet<_> = want.iter().filter(|(a, _)| a.is_ipv4()).copied().collect();
    assert_eq!(open, want4);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_sweep_through_the_cluster() {
    let (port, _ls, want) = listeners();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Embedded::start(dir.path().join("data"), 2, 8)
        .await
        .unwrap();
    let (st, open) = run_job(&cluster.url, "portscan", port, &["127.0.0.0/22", "::1"]).await;
    assert_eq!(st.tasks_total, 2, "{}", client::status_line(&st));
    assert_eq!(open, want);
    cluster.shutdown().await;
}

/// The quality ledger's verification runs: every finished block task (`verify_per_mille` 1000)
/// is run again, by the other minion when the offer has its slots; the ledger counts the probes
/// re-checked and the misses (none here: both minions see every listener), and no finding is
/// stored twice (a verification keeps only what the first run missed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_runs_recheck_tasks_without_duplicating_findings() {
    let (port, _ls, want) = listeners();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Embedded::start(dir.path().join("data"), 2, 8)
        .await
        .unwrap();
    // Both minions registered first: a task that ends while the scheduler knows one live minion
    // is not re-checked (there is nobody else to re-check it). A warm-up sweep of 64 small tasks
    // (more than one minion's 8 slots) shows both minions in its ledger once both run.
    let mut both = false;
    for _ in 0..10 {
        let (w, _, _) = run_job_with(
            &cluster.url,
            "portscan",
            port,
            &["127.0.0.0/22"],
            r#"{"verify_per_mille": 0, "probes_per_task": 16}"#,
        )
        .await;
        if w.quality.is_some_and(|q| q.minions.len() == 2) {
            both = true;
            break;
        }
    }
    assert!(both, "the second minion never ran a task");
    let (st, open, n) = run_job_with(
        &cluster.url,
        "portscan",
        port,
        &["127.0.0.0/22"],
        r#"{"verify_per_mille": 1000, "probes_per_task": 256}"#,
    )
    .await;
    // 4 block tasks of 256 addresses, each run twice
    assert_eq!(st.tasks_total, 8, "{}", client::status_line(&st));
    assert_eq!(st.tasks_done, 8, "{}", client::status_line(&st));
    let want4: BTreeSet<_> = want.iter().filter(|(a, _)| a.is_ipv4()).copied().collect();
    assert_eq!(open, want4);
    assert_eq!(n, want4.len(), "a verification stored a finding again");
    let q = st.quality.expect("ledger");
    let sampled: u64 = q.minions.iter().map(|r| r.sampled).sum();
    let missed: u64 = q.minions.iter().map(|r| r.missed).sum();
    // each block holds one listener: a re-check on the other minion re-sends its 255 other
    // probes (one on the first run's own minion checks nothing and is not counted)
    assert!(
        sampled > 0 && sampled <= 4 * 255 && sampled % 255 == 0,
        "{q:?}"
    );
    assert_eq!(missed, 0, "{q:?}");
    assert!(q.flags.is_empty(), "{q:?}");
    cluster.shutdown().await;
}
