//! The query index end to end: a real in-process cluster scans real daemons on loopback (redis
//! without AUTH, nginx over TLS with a self-signed certificate); the coordinator indexes the
//! durable findings and answers `QueryService` over gRPC; the index is rebuilt from the store when
//! deleted; the `overlord` binary answers the same queries directly on the data directory.

use overlord_cli::embedded::Embedded;
use overlord_probes::service::testsupport as ts;
use overlord_proto::v1;
use std::time::{Duration, Instant};

async fn wait_job(url: &str, job: u64) {
    let mut c = overlord_cli::client::connect(url).await.unwrap();
    let t0 = Instant::now();
    loop {
        let st = overlord_cli::client::get(&mut c, job).await.unwrap();
        if st.state == v1::JobState::Completed as i32 {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job not done: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Client = v1::query_service_client::QueryServiceClient<tonic::transport::Channel>;

/// Searches until `want` rows match (the index follows the store with a bounded lag).
async fn wait_rows(c: &mut Client, q: &str, want: usize) -> v1::SearchResponse {
    let t0 = Instant::now();
    loop {
        let r = c
            .search(v1::SearchRequest {
                query: q.into(),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        if r.services.len() == want {
            return r;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{q}: {} rows, want {want}: {r:?}",
            r.services.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn overlord() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_overlord"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_are_searchable_over_grpc_after_a_rebuild_and_from_the_data_dir() {
    let redis = match ts::redis(None) {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let nginx = ts::nginx(true).unwrap_or_else(|e| panic!("{e}"));
    let (rp, np) = (redis.addr.port(), nginx.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("coord");

    let emb = Embedded::start(data.clone(), 1, 8).await.unwrap();
    let mut jc = overlord_cli::client::connect(&emb.url).await.unwrap();
    let st = overlord_cli::client::submit(
        &mut jc,
        v1::JobSpec {
            name: "query test".into(),
            targets: vec!["127.0.0.1".into()],
            ports: format!("{rp},{np}"),
            modules: vec!["portscan".into(), "service".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_job(&emb.url, st.job_id).await;
    let mut q = overlord_cli::query::connect(&emb.url).await.unwrap();

    let r = wait_rows(&mut q, &format!("port:{rp} redis.auth:false"), 1).await;
    let row = &r.services[0];
    assert_eq!(row.ip, "127.0.0.1");
    assert!(row.open);
    assert!(row.product.to_lowercase().contains("redis"), "{row:?}");
    assert!(
        row.modules.contains(&"service".to_string())
            && row.modules.contains(&"portscan".to_string()),
        "{row:?}"
    );
    let r = wait_rows(&mut q, "tls.self_signed:true", 1).await;
    assert_eq!(r.services[0].port, np as u32);
    wait_rows(&mut q, r#"http.title:"overlord home""#, 1).await;
    wait_rows(&mut q, "net:127.0.0.0/24 -port:1", 2).await;

    // facets and stats; the rows above are visible, the job's last findings may still be one
    // commit away (a loaded machine): the reported lag reaches 0 within a bounded wait
    let t0 = Instant::now();
    let c = loop {
        let c = q
            .count(v1::CountRequest {
                query: "net:127.0.0.0/8".into(),
                facets: vec!["port:5".into(), "provider".into()],
                deadline_ms: 0,
            })
            .await
            .unwrap()
            .into_inner();
        let lag = c.lag.clone().unwrap().findings;
        if lag == 0 {
            break c;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the index never caught up: lag {lag}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(c.matched, 2);
    assert_eq!(c.facets[0].values.len(), 2);

    // host view
    let h = q
        .host(v1::HostRequest {
            ip: "127.0.0.1".into(),
            as_of_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.ports.len(), 2);
    assert_eq!(h.ports[0].jobs, [st.job_id]);

    // a bad query: InvalidArgument with the position
    let e = q
        .search(v1::SearchRequest {
            query: "port:[1 TO".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("column 11"), "{}", e.message());

    // export (streamed)
    let mut s = q
        .export(v1::ExportRequest {
            query: "".into(),
            format: v1::ExportFormat::NmapXml as i32,
            deadline_ms: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut xml = Vec::new();
    while let Some(ch) = s.message().await.unwrap() {
        xml.extend(ch.data);
    }
    let xml = String::from_utf8(xml).unwrap();
    assert!(
        xml.contains(&format!(r#"portid="{rp}""#)) && xml.ends_with("</nmaprun>\n"),
        "{xml}"
    );

    // derived state: delete the index, restart, it is rebuilt from the store
    emb.shutdown().await;
    std::fs::remove_dir_all(data.join("query")).unwrap();
    let emb = Embedded::start(data.clone(), 1, 8).await.unwrap();
    let mut q = overlord_cli::query::connect(&emb.url).await.unwrap();
    wait_rows(&mut q, &format!("port:{rp}"), 1).await;
    emb.shutdown().await;

    // no coordinator: the binary reads the data directory
    let out = overlord()
        .args([
            "search",
            &format!("port:{rp}"),
            "--format",
            "jsonl",
            "--data-dir",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8(out.stdout).unwrap();
    let row: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(row["port"], rp);
    let out = overlord()
        .args(["search", "prodct:redis", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("column 1") && err.contains("expected a field name"),
        "{err}"
    );
    let out = overlord()
        .args(["host", "127.0.0.1", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("127.0.0.1:{np}")));
    drop((redis, nginx));
}

#[test]
fn import_then_search_and_diff_on_a_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let a = dir.path().join("a.xml");
    let b = dir.path().join("b.jsonl");
    std::fs::write(
        &a,
        r#"<?xml version="1.0"?><nmaprun start="1793491200"><host><address addr="127.0.0.7" addrtype="ipv4"/><ports>
<port protocol="tcp" portid="22"><state state="open"/><service name="ssh" product="OpenSSH" version="9.2p1"/></port>
<port protocol="tcp" portid="80"><state state="open"/><service name="http" product="nginx" version="1.24.0"/></port>
</ports></host></nmaprun>"#,
    )
    .unwrap();
    std::fs::write(
        &b,
        r#"{"ip":"127.0.0.7","data":{"http":{"status":"success","protocol":"http","timestamp":"2026-11-03T00:00:00Z","result":{"response":{"status_code":200,"headers":{"server":["nginx/1.25.3"]},"body":"<title>Fleet ALARM</title>"}}}}}
"#,
    )
    .unwrap();
    let out = overlord()
        .arg("import")
        .arg(&a)
        .arg(&b)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let search = |q: &str| {
        let out = overlord()
            .args(["search", q, "--format", "csv", "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = search("product:openssh");
    assert!(csv.starts_with("ip,port,"), "{csv}");
    assert!(
        csv.contains("127.0.0.7,22,tcp,true,ssh,OpenSSH,9.2p1"),
        "{csv}"
    );
    assert!(search("ALARM").contains("127.0.0.7,80,"));
    let out = overlord()
        .args(["diff", "1", "2", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            d["opened"].as_u64(),
            d["closed"].as_u64(),
            d["changed"].as_u64()
        ),
        (Some(0), Some(1), Some(1)),
        "{d}"
    );
}
