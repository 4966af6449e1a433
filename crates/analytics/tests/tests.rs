//! Integration tests of overlord-analytics (one test binary).

use std::io::Write;
use std::path::Path;

use overlord_analytics::zeek::{self, LogKind, Record};
use overlord_analytics::{
    BeaconConfig, GenConfig, TrainConfig, eval, format_jsonl, format_table, generate, score_logs,
};

const CONN_HEADER: &str = "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t2023-11-15-00-00-00\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n";

fn conn_line(ts: f64, src: &str, dst: &str, ob: &str, state: &str) -> String {
    format!(
        "{ts:.6}\tCabc\t{src}\t50000\t{dst}\t443\ttcp\tssl\t0.5\t{ob}\t900\t{state}\tT\tF\t0\tShADadFf\t3\t400\t3\t1000\t(empty)\n"
    )
}

#[derive(Debug, PartialEq)]
struct Owned {
    kind: LogKind,
    ts_us: i64,
    src: String,
    dst: String,
    name: Option<String>,
    nx: bool,
    ob: u64,
    failed: bool,
}

fn read_all(path: &Path) -> (Vec<Owned>, zeek::ReadStats) {
    let mut v = Vec::new();
    let stats = zeek::read_path(path, &mut |r: &Record<'_>| {
        v.push(Owned {
            kind: r.kind,
            ts_us: r.ts_us,
            src: r.src.to_string(),
            dst: r.dst.to_string(),
            name: r.name.map(str::to_string),
            nx: r.nxdomain,
            ob: r.orig_bytes,
            failed: r.failed,
        })
    })
    .expect("read");
    (v, stats)
}

#[test]
fn tsv_conn_with_unset_fields_unordered_lines_and_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conn.log");
    let mut s = String::from(CONN_HEADER);
    s.push_str(&conn_line(
        1700000100.5,
        "10.0.0.1",
        "198.51.100.7",
        "120",
        "SF",
    ));
    s.push_str(&conn_line(
        1700000000.25,
        "10.0.0.1",
        "198.51.100.7",
        "-",
        "S0",
    )); // earlier, unset bytes
    s.push_str("not\ta\tvalid\tline\n"); // too few columns
    s.push_str(&conn_line(
        1700000050.0,
        "10.0.0.999",
        "198.51.100.7",
        "1",
        "SF",
    )); // bad IP
    s.push_str(
        &conn_line(1700000060.0, "fe80::1", "2001:db8::2", "7", "REJ")
            .replace("1700000060.000000", "17x"),
    ); // bad ts
    s.push_str(&conn_line(
        1700000070.0,
        "fe80::1",
        "2001:db8::2",
        "7",
        "REJ",
    ));
    s.push_str("\r\n\n"); // blank lines are not data
    s.push_str("#close\t2023-11-15-01-00-00\n");
    std::fs::write(&p, s).unwrap();
    let (recs, st) = read_all(&p);
    assert_eq!(st.lines, 6);
    assert_eq!(st.records, 3);
    assert_eq!(st.bad_lines, 3);
    let reasons: Vec<&str> = st.bad_examples.iter().map(|b| b.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec!["fewer columns than #fields", "bad id.orig_h", "bad ts"]
    );
    assert_eq!(st.bad_examples[0].line, 11);
    assert_eq!(recs[0].ts_us, 1_700_000_100_500_000);
    assert_eq!(recs[1].ob, 0, "'-' bytes read as 0");
    assert!(recs[1].failed && !recs[0].failed);
    assert_eq!(recs[2].src, "fe80::1");
    assert_eq!(recs[2].dst, "2001:db8::2");
    assert!(recs.iter().all(|r| r.kind == LogKind::Conn));
}

#[test]
fn tsv_columns_come_from_fields_header_and_may_change_midway() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.log");
    let s = "#path\tdns\n#fields\tquery\tid.resp_h\tts\tid.orig_h\trcode_name\n\
             evil.example\t10.0.0.53\t1700000000.0\t10.0.0.5\tNXDOMAIN\n\
             (empty)\t10.0.0.53\t1700000001.0\t10.0.0.5\tNOERROR\n\
             #path\thttp\n#fields\tts\tid.orig_h\tid.resp_h\thost\trequest_body_len\n\
             1700000002.0\t10.0.0.6\t203.0.113.1\tc2.example\t55\n";
    std::fs::write(&p, s).unwrap();
    let (recs, st) = read_all(&p);
    assert_eq!(st.bad_lines, 0, "{:?}", st.bad_examples);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].kind, LogKind::Dns);
    assert_eq!(recs[0].name.as_deref(), Some("evil.example"));
    assert!(recs[0].nx);
    assert_eq!(recs[1].name, None, "(empty) is unset");
    assert_eq!(recs[2].kind, LogKind::Http);
    assert_eq!(recs[2].name.as_deref(), Some("c2.example"));
    assert_eq!(recs[2].ob, 55);
}

#[test]
fn json_lines_with_numeric_and_iso_timestamps_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let body = concat!(
        r#"{"ts":1700000000.5,"uid":"C1","id.orig_h":"10.0.0.5","id.orig_p":5000,"id.resp_h":"203.0.113.9","id.resp_p":443,"version":"TLSv13","cipher":"TLS_AES_128_GCM_SHA256","server_name":"upd\u0061te.example"}"#,
        "\n",
        r#"{"ts":"2023-11-14T22:13:21.000000Z","id.orig_h":"10.0.0.5","id.resp_h":"203.0.113.9","id.resp_p":443,"server_name":"update.example"}"#,
        "\n",
        "{not json\n",
        r#"{"ts":1700000003,"id.orig_h":"nope","id.resp_h":"203.0.113.9"}"#,
        "\n"
    );
    let p = dir.path().join("ssl.json.gz");
    let f = std::fs::File::create(&p).unwrap();
    let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    gz.finish().unwrap();
    let (recs, st) = read_all(&p);
    assert_eq!((st.records, st.bad_lines), (2, 2), "{:?}", st.bad_examples);
    assert!(st.bad_examples[0].reason.starts_with("invalid JSON"));
    assert_eq!(st.bad_examples[1].reason, "bad id.orig_h");
    assert_eq!(recs[0].kind, LogKind::Ssl);
    assert_eq!(
        recs[0].name.as_deref(),
        Some("update.example"),
        "escapes decoded"
    );
    assert_eq!(recs[1].ts_us, 1_700_000_001_000_000);
}

#[test]
fn overlong_lines_are_bad_not_fatal_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conn.log");
    let mut s = String::from(CONN_HEADER);
    s.push_str(&"A".repeat(zeek::MAX_LINE * 3));
    s.push('\n');
    s.push_str(&conn_line(
        1700000100.0,
        "10.0.0.1",
        "198.51.100.7",
        "1",
        "SF",
    ));
    std::fs::write(&p, s).unwrap();
    let (recs, st) = read_all(&p);
    assert_eq!(recs.len(), 1);
    assert_eq!(st.bad_lines, 1);
    assert_eq!(st.bad_examples[0].reason, "line too long");
}

#[test]
fn unknown_log_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("weird.log");
    std::fs::write(&p, "#path\tfiles\n#fields\tts\tfuid\n1\tx\n").unwrap();
    let e = zeek::read_path(&p, &mut |_r| {}).unwrap_err().to_string();
    assert!(e.contains("weird.log") && e.contains("files"), "{e}");
}

fn write_beacon_log(path: &Path) {
    // One jittered beacon (every 300 s ± 20 %, bursts of 2), hidden among random pairs.
    let mut rng = overlord_analytics::rng::Rng::new(11);
    let mut s = String::from(CONN_HEADER);
    let mut lines = Vec::new();
    let t0 = 1_700_000_000.0;
    let mut t = t0;
    while t < t0 + 86_400.0 {
        lines.push(conn_line(t, "10.0.0.66", "198.51.100.66", "310", "SF"));
        lines.push(conn_line(
            t + 0.3,
            "10.0.0.66",
            "198.51.100.66",
            "305",
            "SF",
        ));
        t += 300.0 * (1.0 + rng.range(-0.2, 0.2));
    }
    for h in 0..30 {
        let n = rng.int(5, 60);
        for _ in 0..n {
            let ts = t0 + rng.range(0.0, 86_400.0);
            lines.push(conn_line(
                ts,
                &format!("10.0.0.{h}"),
                &format!("192.0.2.{}", h % 7),
                "800",
                "SF",
            ));
        }
    }
    rng.shuffle(&mut lines); // Zeek logs are not in time order
    for l in lines {
        s.push_str(&l);
    }
    s.push_str("garbage line\n");
    std::fs::write(path, s).unwrap();
}

#[test]
fn scorer_ranks_a_jittered_bursty_beacon_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conn.log");
    write_beacon_log(&p);
    let r = score_logs(&[p], &BeaconConfig::default()).unwrap();
    assert_eq!(r.bad_lines, 1);
    let top = &r.findings[0];
    assert_eq!(
        (top.src.as_str(), top.dst.as_str()),
        ("10.0.0.66", "198.51.100.66")
    );
    assert!(top.is_beacon, "{top:?}");
    assert!((top.period_secs - 300.0).abs() < 30.0, "{top:?}");
    assert!(top.jitter > 0.05 && top.jitter < 0.5, "{top:?}");
    assert_eq!(top.max_burst, 2);
    assert!(top.cnn_score > 0.5 && top.stat_score > 0.6, "{top:?}");
    assert_eq!(r.beacons().count(), 1, "{}", format_table(&r, 10));
    // formatters
    let table = format_table(&r, 5);
    assert!(
        table.contains("198.51.100.66:443") && table.contains("BEACON"),
        "{table}"
    );
    let jsonl = format_jsonl(&r);
    let first: serde_json::Value = serde_json::from_str(jsonl.lines().next().unwrap()).unwrap();
    assert_eq!(first["dst"], "198.51.100.66");
    assert_eq!(first["is_beacon"], true);
    let last: serde_json::Value = serde_json::from_str(jsonl.lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["bad_lines"], 1);
}

#[test]
fn benign_periodic_destination_shared_by_many_hosts_is_demoted() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conn.log");
    let mut s = String::from(CONN_HEADER);
    let t0 = 1_700_000_000.0;
    for h in 0..20 {
        let mut t = t0 + h as f64 * 7.0;
        while t < t0 + 86_400.0 {
            s.push_str(&conn_line(
                t,
                &format!("10.0.1.{h}"),
                "192.0.2.123",
                "48",
                "SF",
            ));
            t += 1024.0;
        }
    }
    std::fs::write(&p, s).unwrap();
    let r = score_logs(&[p], &BeaconConfig::default()).unwrap();
    assert!(!r.findings.is_empty());
    assert!(
        r.findings
            .iter()
            .all(|f| f.benign_hint && !f.is_beacon && f.fan_in == 20)
    );
}

#[test]
fn generator_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        hosts: 12,
        beacons: 9,
        browsing: 0.05,
        ..GenConfig::default()
    };
    let sa = generate(5, &cfg, a.path()).unwrap();
    generate(5, &cfg, b.path()).unwrap();
    generate(6, &cfg, c.path()).unwrap();
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read(a.path(), "conn.log"), read(b.path(), "conn.log"));
    assert_eq!(
        read(a.path(), "labels.jsonl"),
        read(b.path(), "labels.jsonl")
    );
    assert_ne!(read(a.path(), "conn.log"), read(c.path(), "conn.log"));
    assert!(sa.malicious_keys >= 9);
    // and what it writes reads back without a single bad line
    let r = score_logs(&[a.path().join("conn.log")], &BeaconConfig::default()).unwrap();
    assert_eq!(r.bad_lines, 0);
    assert_eq!(r.records, sa.conn_lines);
}

#[test]
fn shipped_weights_reach_the_bars_on_a_fresh_generated_set() {
    let dir = tempfile::tempdir().unwrap();
    // seed 4242: not the training seed, not the combiner's dataset seed
    let s = generate(4242, &GenConfig::small(), dir.path()).unwrap();
    assert!(s.conn_lines > 50_000);
    let r = eval::evaluate(dir.path()).unwrap();
    let m = &r.combined;
    assert!(
        m.recall >= 0.9 && m.precision >= 0.9,
        "{}",
        eval::format_eval(&r)
    );
    assert!(m.roc_auc > 0.98, "{}", eval::format_eval(&r));
}

#[test]
fn json_and_gzip_datasets_score_like_tsv() {
    let tsv = tempfile::tempdir().unwrap();
    let js = tempfile::tempdir().unwrap();
    let cfg = GenConfig {
        hosts: 10,
        beacons: 9,
        browsing: 0.05,
        ..GenConfig::default()
    };
    generate(8, &cfg, tsv.path()).unwrap();
    generate(
        8,
        &GenConfig {
            format: overlord_analytics::generate::OutFormat::Json,
            gzip: true,
            ..cfg
        },
        js.path(),
    )
    .unwrap();
    let a = score_logs(&[tsv.path().join("conn.log")], &BeaconConfig::default()).unwrap();
    let b = score_logs(&[js.path().join("conn.json.gz")], &BeaconConfig::default()).unwrap();
    assert_eq!(a.records, b.records);
    assert_eq!(b.bad_lines, 0);
    let key = |r: &overlord_analytics::BeaconReport| -> Vec<(String, String, bool)> {
        let mut v: Vec<_> = r
            .findings
            .iter()
            .map(|f| (f.src.clone(), f.dst.clone(), f.is_beacon))
            .collect();
        v.sort();
        v
    };
    assert_eq!(key(&a), key(&b));
}

#[test]
fn training_is_reproducible_from_a_seed() {
    let cfg = TrainConfig {
        samples: 256,
        epochs: 1,
        batch: 32,
        combiner_hosts: 12,
        ..TrainConfig::default()
    };
    let a = overlord_analytics::train(3, &cfg)
        .unwrap()
        .to_bytes()
        .unwrap();
    let b = overlord_analytics::train(3, &cfg)
        .unwrap()
        .to_bytes()
        .unwrap();
    let c = overlord_analytics::train(4, &cfg)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    // and the result loads back
    let w = overlord_analytics::Weights::from_bytes(&a).unwrap();
    assert!(w.combiner().is_some());
}

#[test]
fn metrics_are_right_on_known_inputs() {
    let perfect = [(0.9, true), (0.8, true), (0.1, false), (0.2, false)];
    assert_eq!(eval::roc_auc(&perfect), 1.0);
    assert_eq!(eval::average_precision(&perfect), 1.0);
    let inverted = [(0.1, true), (0.9, false)];
    assert_eq!(eval::roc_auc(&inverted), 0.0);
    let m = eval::metrics(&[(0.9, true), (0.6, false), (0.4, true), (0.1, false)], 0.5);
    assert_eq!((m.tp, m.fp, m.fn_), (1, 1, 1));
    assert!((m.precision - 0.5).abs() < 1e-9 && (m.recall - 0.5).abs() < 1e-9);
    assert!((m.roc_auc - 0.75).abs() < 1e-9);
}

#[test]
fn shipped_weights_are_what_train_produces() {
    // `train(7)` = CNN from seed 7, then the combiner fitted by `refit_combiner(7, ..)`. The CNN
    // stage is checked for determinism above (a full run takes minutes); here the shipped file
    // must be exactly its own CNN plus the combiner that the default training refits, byte for
    // byte (run `beacons train --seed 7` to reproduce the whole file).
    let shipped = overlord_analytics::Weights::shipped().unwrap();
    let refit =
        overlord_analytics::train::refit_combiner(7, &shipped, &TrainConfig::default()).unwrap();
    assert_eq!(
        refit.to_bytes().unwrap(),
        overlord_analytics::model::SHIPPED_WEIGHTS,
        "shipped weights differ from `beacons train --seed 7`: retrain and commit them"
    );
}

// --- live mode ---

fn append(path: &Path, s: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(s.as_bytes()).unwrap();
    f.flush().unwrap();
}

fn json_conn(ts: f64, src: &str, dst: &str) -> String {
    format!(
        "{{\"ts\":{ts:.6},\"uid\":\"Cj\",\"id.orig_h\":\"{src}\",\"id.orig_p\":50000,\"id.resp_h\":\"{dst}\",\"id.resp_p\":443,\"proto\":\"tcp\",\"duration\":0.5,\"orig_bytes\":700,\"resp_bytes\":900,\"conn_state\":\"SF\"}}\n"
    )
}

/// Follows a directory while a "Zeek" appends, splits a line across polls, rotates the log
/// (rename + new JSON log), and leaves a gzip archive: every line is read exactly once, the
/// beacon is emitted once when it crosses the threshold and again only when it changes class,
/// and the 24 h window evicts old events.
#[test]
fn follow_reads_appends_rotation_and_gzip_once_and_emits_on_class_change() {
    use overlord_analytics::follow::Follower;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t0 = 1_700_000_000.0;
    // a back-fill archive present at start: read once
    {
        let f = std::fs::File::create(d.join("conn.00:00:00-01:00:00.log.gz")).unwrap();
        let mut gz = flate2_write(f);
        gz.write_all(CONN_HEADER.as_bytes()).unwrap();
        for i in 0..3 {
            gz.write_all(
                conn_line(
                    t0 - 3600.0 + i as f64 * 1000.0,
                    "10.0.0.9",
                    "198.51.100.1",
                    "500",
                    "SF",
                )
                .as_bytes(),
            )
            .unwrap();
        }
        gz.finish().unwrap();
    }
    let log = d.join("conn.log");
    append(&log, CONN_HEADER);
    // 3 check-ins: not scored yet
    let mut body = String::new();
    for i in 0..3 {
        body.push_str(&conn_line(
            t0 + i as f64 * 60.0,
            "10.0.0.5",
            "203.0.113.7",
            "700",
            "SF",
        ));
    }
    append(&log, &body);
    let mut f = Follower::new(d, &BeaconConfig::default()).unwrap();
    assert!(f.poll().unwrap() >= 6);
    assert!(f.score().unwrap().is_empty());
    assert_eq!(f.held().1, 6);
    // the beacon goes on, every 60 s for 3 hours; the last line is cut in half
    let mut body = String::new();
    for i in 3..180 {
        body.push_str(&conn_line(
            t0 + i as f64 * 60.0,
            "10.0.0.5",
            "203.0.113.7",
            "700",
            "SF",
        ));
    }
    let cut = conn_line(t0 + 180.0 * 60.0, "10.0.0.5", "203.0.113.7", "700", "SF");
    let (a, b) = cut.split_at(20);
    body.push_str(a);
    append(&log, &body);
    f.poll().unwrap();
    assert_eq!(f.held().1, 6 + 177, "the half line waits");
    let out = f.score().unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].dst, "203.0.113.7");
    assert!(out[0].is_beacon);
    append(&log, b);
    f.poll().unwrap();
    assert_eq!(f.held().1, 6 + 178);
    assert!(
        f.score().unwrap().is_empty(),
        "same class: not emitted again"
    );
    // rotation: the log is renamed, more lines land in it before Zeek closes it, then a new
    // JSON log starts; a gzip archive appearing now is a copy of what was followed: skipped
    let rotated = d.join("conn.01:00:00-02:00:00.log");
    std::fs::rename(&log, &rotated).unwrap();
    append(
        &rotated,
        &conn_line(t0 + 181.0 * 60.0, "10.0.0.5", "203.0.113.7", "700", "SF"),
    );
    let jlog = d.join("conn.json");
    let mut body = String::new();
    for i in 182..200 {
        body.push_str(&json_conn(t0 + i as f64 * 60.0, "10.0.0.5", "203.0.113.7"));
    }
    append(&jlog, &body);
    std::fs::copy(&rotated, d.join("conn.01:00:00-02:00:00.log.gz.tmp")).unwrap();
    {
        let f = std::fs::File::create(d.join("conn.late.log.gz")).unwrap();
        let mut gz = flate2_write(f);
        gz.write_all(CONN_HEADER.as_bytes()).unwrap();
        gz.write_all(conn_line(t0, "10.0.0.77", "198.51.100.2", "1", "SF").as_bytes())
            .unwrap();
        gz.finish().unwrap();
    }
    f.poll().unwrap();
    assert_eq!(
        f.held().1,
        6 + 178 + 1 + 18,
        "rotated tail + JSON read once, late archive skipped"
    );
    assert!(f.score().unwrap().is_empty());
    // 25 hours later the beacon has stopped and a noisy key appears: the window slides, the
    // old events are evicted, and the beacon key (gone) is not re-emitted
    let later = t0 + 25.0 * 3600.0;
    let mut body = String::new();
    for dt in [0.0, 50.0, 2000.0, 2100.0, 9000.0, 30000.0, 30010.0, 61000.0] {
        body.push_str(&json_conn(later + dt, "10.0.0.5", "203.0.113.7"));
    }
    append(&jlog, &body);
    f.poll().unwrap();
    let out = f.score().unwrap();
    assert_eq!(f.held().1, 8, "only the last 24 h are held");
    assert_eq!(
        out.len(),
        1,
        "the class changed: reported once more {out:?}"
    );
    assert!(!out[0].is_beacon);
    assert!(f.score().unwrap().is_empty());
}

fn flate2_write(f: std::fs::File) -> flate2::write::GzEncoder<std::fs::File> {
    flate2::write::GzEncoder::new(f, flate2::Compression::fast())
}

#[test]
fn transitions_emit_on_crossing_and_on_class_change_only() {
    use overlord_analytics::follow::Transitions;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("conn.log");
    write_beacon_log(&p);
    let r = score_logs(&[p], &BeaconConfig::default()).unwrap();
    let mut findings = r.findings.clone();
    let mut t = Transitions::default();
    let first = t.update(&findings).len();
    assert_eq!(first, findings.iter().filter(|f| f.is_beacon).count());
    assert!(first > 0);
    assert!(t.update(&findings).is_empty());
    findings[0].is_beacon = false;
    let again = t.update(&findings);
    assert_eq!(again.len(), 1);
    assert!(!again[0].is_beacon);
}

/// A followed directory is untrusted (the minion's live task): a FIFO named like a log, a
/// symlink out of it and a file that is not a Zeek log are skipped and counted, never fatal,
/// and never block; the real log beside them is read.
#[test]
fn follow_skips_fifos_symlinks_and_foreign_files() {
    use overlord_analytics::follow::Follower;
    let base = tempfile::tempdir().unwrap();
    let d = base.path().join("zeek");
    std::fs::create_dir(&d).unwrap();
    let outside = base.path().join("secret.log");
    std::fs::write(
        &outside,
        format!(
            "{CONN_HEADER}{}",
            conn_line(1.0, "10.9.9.9", "10.8.8.8", "1", "SF")
        ),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, d.join("conn.link.log")).unwrap();
    std::os::unix::fs::symlink(base.path(), d.join("2026-01-01")).unwrap();
    assert!(
        std::process::Command::new("mkfifo")
            .arg(d.join("dns.log"))
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(d.join("http.log"), "#path\tweird\n#fields\ta\tb\nx\ty\n").unwrap();
    append(
        &d.join("conn.log"),
        &format!(
            "{CONN_HEADER}{}",
            conn_line(5.0, "10.0.0.1", "10.0.0.2", "1", "SF")
        ),
    );
    let mut f = Follower::new(&d, &BeaconConfig::default()).unwrap();
    assert_eq!(f.poll().unwrap(), 1, "only conn.log is read");
    assert_eq!(f.held(), (1, 1));
    assert_eq!(f.file_errors, 1, "{:?}", f.file_error_examples);
    assert!(
        f.file_error_examples[0].starts_with("http.log"),
        "{:?}",
        f.file_error_examples
    );
    // the foreign file is not read again when it grows
    append(&d.join("http.log"), "x\ty\n");
    assert_eq!(f.poll().unwrap(), 0);
    assert_eq!(f.file_errors, 1);
}

/// Resolver keys follow their clients: the resolver's exactly periodic refreshes of a browsing
/// name nobody beacons on get the resolver-refresh hint; its few forwarded lookups of a C2 name a
/// client beacons on are reported with the client's score.
#[test]
fn resolver_keys_follow_their_clients() {
    use overlord_analytics::BeaconHint;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("dns.json");
    let t0 = 1_700_000_000.0;
    let line = |t: f64, src: &str, dst: &str, q: &str| {
        format!(
            "{{\"ts\":{t:.6},\"uid\":\"D1\",\"id.orig_h\":\"{src}\",\"id.orig_p\":5353,\"id.resp_h\":\"{dst}\",\"id.resp_p\":53,\"proto\":\"udp\",\"query\":\"{q}\",\"qtype_name\":\"A\",\"rcode\":0,\"rcode_name\":\"NOERROR\"}}\n"
        )
    };
    let (resolver, upstream) = ("10.0.0.2", "198.51.100.53");
    let mut s = String::new();
    let mut rng = overlord_analytics::rng::Rng::new(5);
    // the implant: every 300 s ± 10 % all day, through the resolver
    let mut t = t0;
    while t < t0 + 86_000.0 {
        s.push_str(&line(t, "10.0.0.50", resolver, "c2.example.xyz"));
        t += 300.0 * rng.range(0.9, 1.1);
    }
    // the resolver asked upstream for it only three times (its cache answered the rest)
    for k in [0.0, 30_000.0, 60_000.0] {
        s.push_str(&line(t0 + k + 0.01, resolver, upstream, "c2.example.xyz"));
    }
    // a browsing name: two clients at random times, the resolver prefetching it every 54 s
    for _ in 0..30 {
        for c in ["10.0.0.60", "10.0.0.61"] {
            s.push_str(&line(
                t0 + rng.range(0.0, 86_000.0),
                c,
                resolver,
                "news.example.com",
            ));
        }
    }
    let mut t = t0 + 5.0;
    while t < t0 + 86_000.0 {
        s.push_str(&line(t, resolver, upstream, "news.example.com"));
        t += 54.0;
    }
    std::fs::write(&p, s).unwrap();
    let r = score_logs(&[p], &BeaconConfig::default()).unwrap();
    let find = |src: &str, dst: &str| {
        r.findings
            .iter()
            .find(|f| f.src == src && f.dst == dst)
            .unwrap_or_else(|| panic!("no finding {src} -> {dst}: {:#?}", r.findings))
    };
    let implant = find("10.0.0.50", "c2.example.xyz");
    assert!(implant.is_beacon, "{implant:?}");
    let refresh = find(resolver, "news.example.com");
    assert!(
        refresh.hints.contains(&BeaconHint::ResolverRefresh),
        "{refresh:?}"
    );
    assert!(!refresh.is_beacon, "{refresh:?}");
    assert!(
        refresh.stat_score > 0.5,
        "exactly periodic on its own: {refresh:?}"
    );
    let via = find(resolver, "c2.example.xyz");
    assert!(via.is_beacon, "{via:?}");
    assert_eq!(via.group, vec!["via 10.0.0.50".to_string()]);
    assert_eq!(via.events, 3);
    // the rule off: the forwarded C2 lookups are too few to be reported at all
    let p = dir.path().join("dns.json");
    let cfg = BeaconConfig {
        resolver_credit: false,
        ..BeaconConfig::default()
    };
    let r = score_logs(&[p], &cfg).unwrap();
    assert!(
        !r.findings
            .iter()
            .any(|f| f.src == resolver && f.dst == "c2.example.xyz")
    );
}
