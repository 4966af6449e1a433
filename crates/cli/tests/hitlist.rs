//! Hitlists through the whole cluster (embedded coordinator + 2 minions over real gRPC), on
//! 127.0.0.0/8 and ::1 only: a file with duplicates, comments, blank lines, a CIDR overlapping an
//! address, IPv4 and IPv6 loopback is uploaded streamed, deduplicated, cut into tasks, and each
//! address is probed once (the job's ledger counts exactly addresses × ports probes) with the
//! exact open set; a bad line and an out-of-scope line are refused naming their line; a large
//! generated list (200,000 addresses of 127/8, with 20,000 repeated lines) is probed once per
//! address in tasks of at most 512 addresses.

mod support;

use overlord_cli::client;
use overlord_cli::embedded::Embedded;
use overlord_proto::v1;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::time::{Duration, Instant};

/// Listeners on one port of 127.0.0.1, 127.0.0.9 and ::1.
fn listeners() -> (u16, Vec<TcpListener>, BTreeSet<(IpAddr, u16)>) {
    support::listeners(&["127.0.0.1", "127.0.0.9", "::1"])
}

/// Uploads `path`, runs a portscan job over it and waits; (upload answer, status, open set,
/// findings, probes sent by the ledger).
async fn run(
    url: &str,
    path: &std::path::Path,
    port: u16,
) -> (
    v1::UploadHitlistResponse,
    v1::JobStatus,
    BTreeSet<(IpAddr, u16)>,
    usize,
    u64,
) {
    let mut c = client::connect(url).await.unwrap();
    let h = client::upload_hitlist(&mut c, path).await.unwrap();
    let spec = v1::JobSpec {
        name: "hitlist".into(),
        hitlist: h.id.clone(),
        ports: port.to_string(),
        modules: vec!["portscan".into()],
        params_json: r#"{"verify_per_mille": 0}"#.into(),
        ..Default::default()
    };
    let (st, open, n) = support::run_to_end(&mut c, spec, Duration::from_secs(240)).await;
    let sent = st
        .quality
        .as_ref()
        .map(|q| q.minions.iter().map(|r| r.sent).sum())
        .unwrap_or(0);
    (h, st, open, n, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hitlist_with_duplicates_comments_v4_and_v6_is_probed_once_per_address() {
    let (port, _ls, want) = listeners();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Embedded::start(dir.path().join("data"), 2, 8)
        .await
        .unwrap();
    let file = dir.path().join("hits.txt");
    std::fs::write(
        &file,
        "# known hosts\n127.0.0.1\n::1\n\n127.0.0.9   # again below\n127.0.0.1\n\
         127.0.0.8/30\n::1\r\n127.0.0.9\n127.0.5.5",
    )
    .unwrap();
    let (h, st, open, n, sent) = run(&cluster.url, &file, port).await;
    // 127.0.0.1, 127.0.0.8-11, 127.0.5.5, ::1.
    assert_eq!(h.addresses, 7, "{h:?}");
    assert_eq!(h.ranges, 4, "{h:?}");
    assert_eq!(h.lines, 10);
    assert_eq!(h.entries, 8);
    assert_eq!(h.duplicates, 4, "{h:?}");
    assert_eq!(h.runs, 1);
    assert_eq!(st.tasks_failed, 0, "{}", client::status_line(&st));
    assert_eq!(st.tasks_total, 1, "7 addresses x 1 port: one task");
    assert_eq!(open, want);
    assert_eq!(n, 3, "one finding per open address");
    assert_eq!(sent, 7, "each address probed once");
    assert_eq!(st.spec.unwrap().hitlist, h.id);

    // A bad line and an out-of-scope line: refused with their number, nothing stored.
    let mut c = client::connect(&cluster.url).await.unwrap();
    std::fs::write(&file, "127.0.0.1\n# ok\n127.0.0.256\n").unwrap();
    let e = client::upload_hitlist(&mut c, &file).await.unwrap_err();
    assert!(e.to_string().contains("hitlist line 3:"), "{e:#}");
    assert!(e.to_string().contains("127.0.0.256"), "{e:#}");
    std::fs::write(&file, "::1\n\n\n10.0.0.1\n").unwrap();
    let e = client::upload_hitlist(&mut c, &file).await.unwrap_err();
    assert!(
        e.to_string().contains("hitlist line 4:") && e.to_string().contains("out of scope"),
        "{e:#}"
    );
    std::fs::write(&file, "# only comments\n\n").unwrap();
    let e = client::upload_hitlist(&mut c, &file).await.unwrap_err();
    assert!(e.to_string().contains("no address"), "{e:#}");
    // An unknown id is refused at submission.
    let e = client::submit(
        &mut c,
        v1::JobSpec {
            hitlist: "0123456789abcdef".into(),
            ports: "80".into(),
            modules: vec!["portscan".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("0123456789abcdef"), "{e:#}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("data/hitlists"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        left,
        vec![format!("{}.hit", h.id)],
        "refused uploads leave no file"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_generated_hitlist_is_probed_once_per_address() {
    let (port, _ls, _) = listeners();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Embedded::start(dir.path().join("data"), 2, 16)
        .await
        .unwrap();
    // 200,000 distinct addresses spread over 127/8 (a stride coprime to 2^24), 127.0.0.1 among
    // them, and 20,000 of them listed a second time, in a keyed random order.
    let n = 200_000u32;
    let mut addrs: Vec<u32> = (0..n)
        .map(|i| 0x7f00_0000 | (1 + i.wrapping_mul(2_654_435) % 0xff_fffe))
        .collect();
    addrs.extend_from_within(..20_000);
    let mut z = 0x5eed_u64;
    for i in (1..addrs.len()).rev() {
        z = z
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        addrs.swap(i, (z >> 33) as usize % (i + 1));
    }
    let distinct: BTreeSet<u32> = addrs.iter().copied().collect();
    assert_eq!(distinct.len(), n as usize);
    let file = dir.path().join("big.txt");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    writeln!(w, "# generated").unwrap();
    for a in &addrs {
        writeln!(w, "{}", std::net::Ipv4Addr::from(*a)).unwrap();
    }
    drop(w);
    let want: BTreeSet<(IpAddr, u16)> = if distinct.contains(&0x7f00_0001) {
        [("127.0.0.1".parse().unwrap(), port)].into()
    } else {
        BTreeSet::new()
    };
    let t = Instant::now();
    let (h, st, open, found, sent) = run(&cluster.url, &file, port).await;
    eprintln!(
        "{} addresses ({} lines, {} duplicates, {} ranges) scanned in {:.1}s, {} tasks",
        h.addresses,
        h.lines,
        h.duplicates,
        h.ranges,
        t.elapsed().as_secs_f64(),
        st.tasks_total
    );
    assert_eq!(h.addresses, n as u64);
    assert_eq!(h.duplicates, 20_000);
    // Never held whole: 220,001 lines went through sorted runs of at most 65,536 entries.
    assert_eq!(h.runs, 4, "{h:?}");
    assert_eq!(st.tasks_failed, 0, "{}", client::status_line(&st));
    assert_eq!(
        st.tasks_total,
        u64::from(n).div_ceil(512),
        "512 addresses per task"
    );
    assert_eq!(sent, u64::from(n), "each address probed once");
    assert_eq!(open, want);
    assert_eq!(found, want.len());
    cluster.shutdown().await;
}
