//! The firehose against the real `nats-server` (JetStream, started here on free ports with temp
//! stores): every durable finding reaches the stream exactly once across a coordinator `kill -9`
//! and restart, across NATS going down and coming back, and across the loss of one node of a
//! 3-node cluster; bad settings give a clear error in the job status while scanning goes on and
//! nothing is lost.
//!
//! "Exactly once" is checked on the stream itself: every message read back by a plain consumer,
//! no client-side deduplication; message ids `<job>:<cursor>` must be exactly `1..=findings`.

use async_nats::jetstream;
use overlord_cli::{client, embedded::Embedded};
use overlord_coordinator::firehose::FirehoseConfig;
use overlord_coordinator::firehose::natsd::{NatsCluster, NatsOpts, NatsServer};
use overlord_core::job::FindingRecord;
use overlord_proto::v1;
use overlord_testkit::process::{Kill, wait_for_addr_file};
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const STREAM: &str = "FINDINGS";

fn noop_job(tasks: u64, sleep_ms: u64) -> v1::JobSpec {
    v1::JobSpec {
        name: "firehose-test".into(),
        modules: vec!["noop".into()],
        params_json: serde_json::json!({"count": tasks, "sleep_ms": sleep_ms, "emit": true})
            .to_string(),
        ..Default::default()
    }
}

/// The shared wait (`overlord-testkit`), failing the test on timeout.
async fn wait_until<T>(what: &str, limit: Duration, f: impl AsyncFnMut() -> Option<T>) -> T {
    overlord_testkit::wait::wait_some(limit, what, f)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn fh(st: &v1::JobStatus) -> v1::FirehoseStatus {
    st.firehose
        .clone()
        .expect("firehose status is filled when the firehose is on")
}

/// Every message of the stream, read one by one by sequence from the stream's leader (the
/// message-get API): (msg id, subject, finding). Not through a consumer: in a cluster that just
/// lost a node, creating one may be placed on the lost node and time out, again and again.
async fn read_stream(url: &str) -> Vec<(String, String, FindingRecord)> {
    let client = async_nats::connect(url)
        .await
        .expect("connect to read the stream");
    let js = jetstream::new(client);
    // A cluster that just lost a node may take a moment to elect the stream's leader.
    let (stream, first, last) =
        wait_until("the stream's bounds", Duration::from_secs(60), async || {
            let mut stream = js.get_stream(STREAM).await.ok()?;
            let st = stream.info().await.ok()?.state.clone();
            Some((stream, st.first_sequence, st.last_sequence))
        })
        .await;
    let mut out = Vec::new();
    for seq in first..=last {
        let m = wait_until(
            &format!("stream message {seq}"),
            Duration::from_secs(30),
            async || stream.get_raw_message(seq).await.ok(),
        )
        .await;
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.to_string())
            .expect("every message has a Nats-Msg-Id");
        let f: FindingRecord = serde_json::from_slice(&m.payload).expect("payload is a finding");
        out.push((id, m.subject.to_string(), f));
    }
    out
}

/// The stream holds every finding of `job` exactly once: ids 1..=findings, each once, payloads
/// that match their ids and subjects by kind.
fn assert_exactly_once(msgs: &[(String, String, FindingRecord)], job: u64, findings: u64) {
    assert!(findings > 0);
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for (id, subject, f) in msgs {
        assert_eq!(
            id,
            &format!("{}:{}", f.job_id, f.cursor),
            "id matches the payload"
        );
        assert_eq!(subject, &format!("overlord.findings.{}", f.kind));
        if f.job_id == job {
            *seen.entry(f.cursor).or_default() += 1;
        }
    }
    let dup: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "published twice: {dup:?}");
    let missing: Vec<u64> = (1..=findings).filter(|c| !seen.contains_key(c)).collect();
    assert!(
        missing.is_empty(),
        "never published: {} e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.len() as u64, findings);
}

// ---------------- a coordinator process, killed with -9 ----------------

fn overlord(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_overlord"));
    c.args(args)
        .env("OVERLORD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

/// Starts the coordinator of `cfg` and returns it with its address (from its address file).
fn coordinator(cfg: &Path, dir: &Path) -> (Child, String) {
    let addr_file = dir.join("addr");
    let _ = std::fs::remove_file(&addr_file);
    let mut child = overlord(&[
        "coordinator",
        "--config",
        cfg.to_str().unwrap(),
        "--addr-file",
        addr_file.to_str().unwrap(),
    ])
    .spawn()
    .expect("spawn coordinator");
    let addr = wait_for_addr_file(&mut child, &addr_file, Duration::from_secs(60));
    (child, addr)
}

/// Kill -9 of the coordinator mid-job and a restart; NATS down (kill -9) mid-job and back: the
/// stream ends with every finding exactly once, the job completes meanwhile, and while NATS is
/// down the job status says why nothing is published and the lag grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_across_coordinator_kill9_and_nats_down_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut nats = NatsServer::start(&d.join("nats"), "solo", NatsOpts::default()).unwrap();
    let cfg_path = d.join("coordinator.toml");
    let cfg = |listen: &str| {
        format!(
            "version = 1\nlisten = \"{listen}\"\ndata_dir = \"data\"\n\n[firehose]\nurl = \"{}\"\nstream = \"{STREAM}\"\n",
            nats.url()
        )
    };
    std::fs::write(&cfg_path, cfg("127.0.0.1:0")).unwrap();
    let mut kids = Kill(Vec::new());
    let (c, addr) = coordinator(&cfg_path, d);
    kids.0.push(c);
    // A restart comes back on the same port (the minion reconnects there).
    std::fs::write(&cfg_path, cfg(&addr)).unwrap();
    let url = format!("http://{addr}");
    let minion_cfg = d.join("minion.toml");
    std::fs::write(
        &minion_cfg,
        format!(
            "version = 1\nid = \"m1\"\nprovider = \"lab\"\ncoordinator = \"{url}\"\ncapacity = 8\n"
        ),
    )
    .unwrap();
    kids.0.push(
        overlord(&["minion", "--config", minion_cfg.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );

    let mut c = client::connect(&url).await.unwrap();
    let job = client::submit(&mut c, noop_job(3000, 30))
        .await
        .unwrap()
        .job_id;
    // Some findings published, the job still running: kill -9.
    wait_until(
        "findings on the stream",
        Duration::from_secs(60),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (fh(&st).published_cursor >= 200).then_some(())
        },
    )
    .await;
    let before = client::get(&mut c, job).await.unwrap();
    assert_eq!(
        before.state,
        v1::JobState::Running as i32,
        "the job must still run at the kill"
    );
    let _ = kids.0[0].kill();
    let _ = kids.0[0].wait();
    let (restarted, _) = coordinator(&cfg_path, d);
    kids.0[0] = restarted;
    let mut c = wait_until(
        "the restarted coordinator",
        Duration::from_secs(30),
        async || client::connect(&url).await.ok(),
    )
    .await;

    // NATS down mid-job: scanning goes on, the status says why nothing is published.
    wait_until(
        "more findings after the restart",
        Duration::from_secs(60),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (fh(&st).published_cursor > before.findings + 100).then_some(())
        },
    )
    .await;
    nats.kill();
    let down = wait_until(
        "the firehose error in the job status",
        Duration::from_secs(30),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (!fh(&st).error.is_empty()).then_some(st)
        },
    )
    .await;
    eprintln!("while NATS is down: {}", client::status_line(&down));
    let later = wait_until(
        "tasks finishing while NATS is down",
        Duration::from_secs(30),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (st.tasks_done > down.tasks_done + 50 && fh(&st).lag > fh(&down).lag).then_some(st)
        },
    )
    .await;
    assert!(!fh(&later).error.is_empty());
    nats.restart().unwrap();
    let done = wait_until(
        "the job done and the firehose caught up",
        Duration::from_secs(120),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (st.state == v1::JobState::Completed as i32
                && fh(&st).lag == 0
                && fh(&st).error.is_empty())
            .then_some(st)
        },
    )
    .await;
    assert_eq!(done.findings, 3000);
    assert_eq!(fh(&done).published_cursor, 3000);
    let msgs = read_stream(&nats.url()).await;
    assert_exactly_once(&msgs, job, done.findings);
    assert_eq!(msgs.len(), 3000, "nothing else on the stream");
}

// ---------------- in-process coordinator ----------------

async fn embedded(dir: &Path, fh: FirehoseConfig) -> Embedded {
    let mut s = overlord_coordinator::Settings::local(dir.join("data"));
    s.firehose = Some(fh);
    Embedded::start_with(s, 1, 64).await.unwrap()
}

/// A 3-node JetStream cluster (stream with 3 replicas); one node is killed with -9 mid-job. The
/// stream, read from a surviving node, holds every finding exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_node_cluster_loses_a_node_mid_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = NatsCluster::start(&dir.path().join("nats"), 3).unwrap();
    let mut cfg = FirehoseConfig::new(cluster.urls(), STREAM);
    cfg.replicas = 3;
    let js = jetstream::new(async_nats::connect(cluster.nodes[1].url()).await.unwrap());
    let cl = embedded(dir.path(), cfg).await;
    let mut c = client::connect(&cl.url).await.unwrap();
    wait_until(
        "the firehose's stream",
        Duration::from_secs(30),
        async || js.get_stream(STREAM).await.ok(),
    )
    .await;
    let job = client::submit(&mut c, noop_job(3000, 100))
        .await
        .unwrap()
        .job_id;
    wait_until(
        "findings on the stream",
        Duration::from_secs(60),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (fh(&st).published_cursor >= 300).then_some(())
        },
    )
    .await;
    let st = client::get(&mut c, job).await.unwrap();
    assert_eq!(
        st.state,
        v1::JobState::Running as i32,
        "the job must still run at the kill"
    );
    // The first node: the one the publisher connected to first.
    cluster.nodes[0].kill();
    let done = wait_until(
        "the job done and the firehose caught up",
        Duration::from_secs(120),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (st.state == v1::JobState::Completed as i32 && fh(&st).lag == 0).then_some(st)
        },
    )
    .await;
    assert_eq!(done.findings, 3000);
    let msgs = read_stream(&cluster.nodes[1].url()).await;
    assert_exactly_once(&msgs, job, done.findings);
    assert_eq!(msgs.len(), 3000);
    cl.shutdown().await;
}

/// Nothing listens at the URL: the job runs to completion, its status names the problem, the lag
/// is every finding; a NATS server started there later receives them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_url_then_server_appears_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cl = embedded(
        dir.path(),
        FirehoseConfig::new(format!("nats://127.0.0.1:{port}"), STREAM),
    )
    .await;
    let mut c = client::connect(&cl.url).await.unwrap();
    let job = client::submit(&mut c, noop_job(200, 0))
        .await
        .unwrap()
        .job_id;
    let st = wait_until("the job done", Duration::from_secs(60), async || {
        let st = client::get(&mut c, job).await.ok()?;
        (st.state == v1::JobState::Completed as i32 && !fh(&st).error.is_empty()).then_some(st)
    })
    .await;
    let f = fh(&st);
    assert!(
        f.error.contains(&format!("nats://127.0.0.1:{port}")) && f.error.contains("connect"),
        "{}",
        f.error
    );
    assert_eq!((f.lag, f.published_cursor), (200, 0));
    assert!(client::status_line(&st).contains("FIREHOSE ERROR"));
    let nats = NatsServer::start(
        &dir.path().join("nats"),
        "late",
        NatsOpts {
            port: Some(port),
            ..Default::default()
        },
    )
    .unwrap();
    wait_until("the backlog drained", Duration::from_secs(60), async || {
        let st = client::get(&mut c, job).await.ok()?;
        (fh(&st).lag == 0 && fh(&st).error.is_empty()).then_some(())
    })
    .await;
    assert_exactly_once(&read_stream(&nats.url()).await, job, 200);
    cl.shutdown().await;
}

/// Credentials refused, and a stream of that name that does not take the firehose's subjects:
/// each a clear error in the job status; the job completes regardless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_and_a_foreign_stream_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(
        &dir.path().join("nats"),
        "auth",
        NatsOpts {
            user_pass: Some(("alice".into(), "right".into())),
            ..Default::default()
        },
    )
    .unwrap();
    let bad = format!("nats://alice:wrong@127.0.0.1:{}", nats.port);
    let cl = embedded(&dir.path().join("a"), FirehoseConfig::new(bad, STREAM)).await;
    let mut c = client::connect(&cl.url).await.unwrap();
    let job = client::submit(&mut c, noop_job(20, 0))
        .await
        .unwrap()
        .job_id;
    let st = wait_until(
        "the job done with an error",
        Duration::from_secs(60),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (st.state == v1::JobState::Completed as i32 && !fh(&st).error.is_empty()).then_some(st)
        },
    )
    .await;
    let f = fh(&st);
    assert!(f.error.contains("credentials refused"), "{}", f.error);
    assert!(
        !f.error.contains("wrong"),
        "the password stays out of the status: {}",
        f.error
    );
    assert_eq!(f.lag, 20);
    cl.shutdown().await;

    // A stream named like ours that takes other subjects.
    let good = format!("nats://alice:right@127.0.0.1:{}", nats.port);
    let js = jetstream::new(
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "right".into())
            .connect(nats.url())
            .await
            .unwrap(),
    );
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let cl = embedded(&dir.path().join("b"), FirehoseConfig::new(good, STREAM)).await;
    let mut c = client::connect(&cl.url).await.unwrap();
    let job = client::submit(&mut c, noop_job(20, 0))
        .await
        .unwrap()
        .job_id;
    let st = wait_until(
        "the job done with an error",
        Duration::from_secs(60),
        async || {
            let st = client::get(&mut c, job).await.ok()?;
            (st.state == v1::JobState::Completed as i32 && !fh(&st).error.is_empty()).then_some(st)
        },
    )
    .await;
    let f = fh(&st);
    assert!(
        f.error
            .contains("does not take subjects overlord.findings.>"),
        "{}",
        f.error
    );
    assert_eq!(f.lag, 20);
    cl.shutdown().await;
}
