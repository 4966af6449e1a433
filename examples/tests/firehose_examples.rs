//! Both firehose consumer examples (Rust `overlord_examples::firehose`, Python
//! `examples/firehose_consumer.py`, nats-py) against a real nats-server fed by the coordinator's
//! firehose publisher: each receives exactly the findings of its subject filter, once.

use overlord_coordinator::firehose::natsd::{NatsOpts, NatsServer};
use overlord_coordinator::firehose::{Firehose, FirehoseConfig};
use overlord_coordinator::hub::Durable;
use overlord_core::job::FindingRecord;
use overlord_storage::{Batch, Op, SledStore, Store};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn finding(cursor: u64) -> FindingRecord {
    FindingRecord {
        cursor,
        job_id: 4,
        task_id: cursor,
        parent_task_id: None,
        module: "x".into(),
        kind: if cursor % 3 == 0 {
            "screenshot"
        } else {
            "open_port"
        }
        .into(),
        target: Some("127.0.0.1".parse().unwrap()),
        port: Some(5900),
        data: serde_json::json!({"n": cursor}),
        blob_sha256: None,
        minion_id: "m".into(),
        provider: "p".into(),
        started_at_ms: 1,
        finished_at_ms: 2,
        stored_at_ms: 3,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_consumers_get_their_subjects_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"), "ex", NatsOpts::default()).unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("data")).unwrap());
    let mut b = Batch::default();
    for c in 1..=300 {
        b.push(Op::Finding(Arc::new(finding(c))));
    }
    store.apply(b).unwrap();
    store.flush().unwrap();
    let durable = Durable::default();
    durable.set(4, 300);
    let (hub, _) = tokio::sync::broadcast::channel(16);
    let fh = Firehose::spawn(
        FirehoseConfig::new(nats.url(), "EX"),
        store,
        durable,
        hub.subscribe(),
    );
    let t0 = Instant::now();
    while fh.status().published(4) < 300 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "not published: {:?}",
            fh.status().error()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fh.shutdown().await;
    let want = |kind: &str| -> BTreeSet<String> {
        (1..=300)
            .filter(|c| finding(*c).kind == kind)
            .map(|c| format!("4:{c}"))
            .collect()
    };

    let mut got = Vec::new();
    let n = overlord_examples::firehose::consume(
        &nats.url(),
        "EX",
        "rust-shots",
        "overlord.findings.screenshot",
        usize::MAX,
        Duration::from_secs(2),
        |r| {
            assert_eq!(r.subject, "overlord.findings.screenshot");
            assert_eq!(r.finding["kind"], "screenshot");
            got.push(r.id.clone());
        },
    )
    .await
    .unwrap();
    assert_eq!(n, 100);
    assert_eq!(
        got.iter().cloned().collect::<BTreeSet<_>>(),
        want("screenshot")
    );
    assert_eq!(got.len(), 100, "each once");

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/firehose_consumer.py");
    let out = tokio::process::Command::new("python3")
        .args([script, "--url", &nats.url(), "--stream", "EX"])
        .args(["--subject", "overlord.findings.open_port", "--idle", "2"])
        .output()
        .await
        .expect("python3");
    assert!(
        out.status.success(),
        "python consumer failed (pip install nats-py): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut ids = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (id, subject, json) = (
            parts.next().unwrap(),
            parts.next().unwrap(),
            parts.next().unwrap(),
        );
        assert_eq!(subject, "overlord.findings.open_port");
        let f: FindingRecord = serde_json::from_str(json).unwrap();
        assert_eq!(id, format!("{}:{}", f.job_id, f.cursor));
        ids.push(id.to_string());
    }
    assert_eq!(ids.len(), 200, "each once");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), want("open_port"));
}
