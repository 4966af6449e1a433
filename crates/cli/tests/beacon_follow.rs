//! Live beacon detection as a cluster job (issue 16 point 3): a `beacon` job with `follow` on a
//! real in-process cluster (coordinator + minion over real gRPC, sled store, query index). The
//! test writes Zeek conn logs into a directory below the minion's input directory over time —
//! lines in a log, more lines into it after it was renamed by rotation, then a new log — and
//! checks that the `beacon` finding reaches the coordinator while the task is still running
//! (a partial result), is reported once, is searchable (`module:beacon`), that the lease
//! outlives several lease timeouts through keep-alives (no expiry, one attempt), that the job
//! ends by itself after `duration_secs` with a summary counting every line exactly once, and that
//! a second live job ends at once when cancelled.

use overlord_cli::client;
use overlord_cli::embedded::Embedded;
use overlord_proto::v1;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const CONN_HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t2023-11-15-00-00-00\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n";

fn conn_line(ts: f64, src: &str, dst: &str) -> String {
    format!(
        "{ts:.6}\tCabc\t{src}\t50000\t{dst}\t443\ttcp\tssl\t0.5\t700\t900\tSF\tT\tF\t0\tShADadFf\t3\t400\t3\t1000\t(empty)\n"
    )
}

fn append(p: &Path, s: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .unwrap();
    f.write_all(s.as_bytes()).unwrap();
}

/// Lines `from..to`: the beacon (every 60 s) and, after each check-in, a browsing host reaching
/// one of a few sites at an irregular time.
fn lines(from: usize, to: usize, t0: f64) -> String {
    let mut s = String::new();
    for i in from..to {
        let t = t0 + i as f64 * 60.0;
        s.push_str(&conn_line(t, "10.0.0.5", "203.0.113.7"));
        let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        s.push_str(&conn_line(
            t + 3.0 + (h % 55) as f64,
            "10.0.0.8",
            ["198.51.100.1", "198.51.100.2", "198.51.100.3"][(h / 55 % 3) as usize],
        ));
    }
    s
}

/// The findings about the beacon's key.
fn beacons_of(findings: &[v1::Finding]) -> Vec<serde_json::Value> {
    findings
        .iter()
        .filter(|f| f.kind == "beacon")
        .map(|f| serde_json::from_str::<serde_json::Value>(&f.data_json).unwrap())
        .filter(|b| b["src"] == "10.0.0.5" && b["dst"] == "203.0.113.7")
        .collect()
}

async fn all_results(c: &mut client::Client, job: u64) -> Vec<v1::Finding> {
    let mut out = Vec::new();
    client::results(c, job, |f| out.push(f.clone()))
        .await
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_beacon_job_reports_while_it_follows_a_rotating_log_directory() {
    let base = tempfile::tempdir().unwrap();
    let inputs = base.path().join("inputs");
    let zeek = inputs.join("zeek");
    std::fs::create_dir_all(&zeek).unwrap();
    let mut settings = overlord_coordinator::Settings::local(base.path().join("data"));
    // Leases of 4 s: the live task must renew its lease (keep-alives every second) to run 14 s.
    settings.engine.task_timeout_ms = 4_000;
    let emb = Embedded::start_with_inputs(settings, 1, 2, Some(inputs.clone()))
        .await
        .unwrap();
    let mut c = client::connect(&emb.url).await.unwrap();
    let spec = |duration: f64| v1::JobSpec {
        name: "live beacons".into(),
        modules: vec!["beacon".into()],
        inputs: vec!["zeek".into()],
        params_json: serde_json::json!({
            "follow": true,
            "duration_secs": duration,
            "poll_secs": 0.1,
            "rescore_secs": 0.2,
        })
        .to_string(),
        ..Default::default()
    };
    // the log starts with 3 check-ins (too few to score)
    let t0 = 1_700_000_000.0;
    let log = zeek.join("conn.log");
    append(&log, CONN_HEADER);
    append(&log, &lines(0, 3, t0));
    let job = client::submit(&mut c, spec(14.0)).await.unwrap().job_id;
    let started = Instant::now();
    // a second live job on the same directory, to be cancelled
    let job2 = client::submit(&mut c, spec(3600.0)).await.unwrap().job_id;
    // Zeek goes on writing; then rotates: the log is renamed, a few more lines land in it before
    // it is closed, and a new conn.log starts
    append(&log, &lines(3, 100, t0));
    let rotated = zeek.join("conn.00:00:00-01:40:00.log");
    std::fs::rename(&log, &rotated).unwrap();
    append(&rotated, &lines(100, 110, t0));
    append(&log, CONN_HEADER);
    append(&log, &lines(110, 180, t0));
    let written = 2 * 180u64;

    // the beacon arrives while the job is still running
    let t = Instant::now();
    let found = loop {
        let r = all_results(&mut c, job).await;
        let b = beacons_of(&r);
        if !b.is_empty() {
            let st = client::get(&mut c, job).await.unwrap();
            assert_eq!(
                st.state,
                v1::JobState::Running as i32,
                "a live finding must arrive before the task ends: {st:?}"
            );
            break b;
        }
        assert!(
            t.elapsed() < Duration::from_secs(12),
            "no beacon finding while following: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found[0]["is_beacon"], true);
    assert!((found[0]["period_secs"].as_f64().unwrap() - 60.0).abs() < 1.0);

    // searchable in the query index as a beacon finding of this job
    let mut q = v1::query_service_client::QueryServiceClient::new(
        client::channel(&emb.url, &client::current_credentials())
            .await
            .unwrap(),
    );
    let t = Instant::now();
    loop {
        let r = q
            .search(v1::SearchRequest {
                query: format!("module:beacon beacon.period:<120 job:{job}"),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if r.services.iter().any(|s| s.ip == "10.0.0.5") {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "beacon not in the index: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // the second job: found too, then cancelled while it follows
    let t = Instant::now();
    while beacons_of(&all_results(&mut c, job2).await).is_empty() {
        assert!(t.elapsed() < Duration::from_secs(15), "job 2 found nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let st = client::cancel(&mut c, job2).await.unwrap();
    assert_eq!(st.state, v1::JobState::Cancelled as i32, "{st:?}");

    // the first job ends by itself after its duration, having renewed its 4 s lease throughout
    let t = Instant::now();
    let st = loop {
        let st = client::get(&mut c, job).await.unwrap();
        if st.state != v1::JobState::Running as i32 {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(40),
            "job never ended: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        started.elapsed() >= Duration::from_secs(13),
        "ended before its duration"
    );
    assert_eq!(st.state, v1::JobState::Completed as i32, "{st:?}");
    assert_eq!((st.tasks_done, st.tasks_failed), (1, 0), "{st:?}");
    assert!(st.errors.is_empty(), "no expired lease, no retry: {st:?}");
    let r = all_results(&mut c, job).await;
    let b = beacons_of(&r);
    assert_eq!(b.len(), 1, "one class change, one finding: {b:?}");
    let summaries: Vec<serde_json::Value> = r
        .iter()
        .filter(|f| f.kind == "beacon_summary")
        .map(|f| serde_json::from_str(&f.data_json).unwrap())
        .collect();
    assert_eq!(summaries.len(), 1, "{r:?}");
    let s = &summaries[0];
    assert_eq!(s["input"], "zeek");
    assert_eq!(
        s["lines"], written,
        "every line read once across the rotation: {s}"
    );
    assert_eq!(s["records"], written, "{s}");
    assert_eq!(s["bad_lines"], 0, "{s}");
    assert!(s["beacons"].as_u64().unwrap() >= 1, "{s}");
    // the beacon's finding was stored before the summary (a partial result)
    let pos = |k: &str| r.iter().position(|f| f.kind == k).unwrap();
    assert!(pos("beacon") < pos("beacon_summary"));
    assert!(r[pos("beacon")].cursor < r[pos("beacon_summary")].cursor);
    emb.shutdown().await;
}
