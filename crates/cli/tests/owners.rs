//! Owners end to end: a real in-process cluster with API tokens of two owners. Owner A's job
//! scans a listener on loopback; its findings are visible through `QueryService` to A's viewer
//! and to an admin, and invisible to owner B's viewer (search, count, host, diff, export are
//! empty or NotFound); `ImageService` listings of B are empty and A's job's images are not B's.

use overlord_cli::embedded::Embedded;
use overlord_coordinator::security::tokens;
use overlord_core::security::Role;
use overlord_proto::v1::{
    self, image_service_client::ImageServiceClient, job_service_client::JobServiceClient,
    query_service_client::QueryServiceClient,
};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn search(q: &mut QueryServiceClient<Channel>, tok: &str, query: &str) -> usize {
    q.search(with_token(
        v1::SearchRequest {
            query: query.into(),
            limit: 100,
            ..Default::default()
        },
        tok,
    ))
    .await
    .unwrap()
    .into_inner()
    .services
    .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_owners_findings_and_images_are_invisible() {
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("tokens.toml");
    let admin = tokens::add_token(&tf, "root", Role::Admin, None).unwrap();
    let op_a = tokens::add_token(&tf, "alice", Role::Operator, Some("team-a")).unwrap();
    let view_a = tokens::add_token(&tf, "bob", Role::Viewer, Some("team-a")).unwrap();
    let view_b = tokens::add_token(&tf, "carol", Role::Viewer, Some("team-b")).unwrap();
    let mut s = overlord_coordinator::Settings::local(dir.path().join("data"));
    s.tokens = Some(tokens::Tokens::load(&tf).unwrap());
    let emb = Embedded::start_with(s, 1, 8).await.unwrap();

    // something open on loopback for A's job to find
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let accept = tokio::spawn(async move {
        while let Ok((c, _)) = l.accept().await {
            drop(c);
        }
    });

    let ch = tonic::transport::Endpoint::from_shared(emb.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut jc = JobServiceClient::new(ch.clone());
    let job = jc
        .submit_job(with_token(
            v1::SubmitJobRequest {
                spec: Some(v1::JobSpec {
                    name: "team-a scan".into(),
                    targets: vec!["127.0.0.1".into()],
                    ports: port.to_string(),
                    modules: vec!["portscan".into()],
                    ..Default::default()
                }),
                request_id: String::new(),
            },
            &op_a,
        ))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let t0 = Instant::now();
    loop {
        let st = jc
            .get_job(with_token(v1::GetJobRequest { job_id: job }, &admin))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if st.state == v1::JobState::Completed as i32 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job not done: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let mut q = QueryServiceClient::new(ch.clone());
    let query = format!("port:{port}");
    // the index follows the store with a bounded lag: wait until the admin sees the row
    let t0 = Instant::now();
    while search(&mut q, &admin, &query).await != 1 {
        assert!(t0.elapsed() < Duration::from_secs(20), "row never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(search(&mut q, &view_a, &query).await, 1, "A sees its row");
    assert_eq!(search(&mut q, &view_b, &query).await, 0, "B does not");
    assert_eq!(
        search(&mut q, &view_b, "").await,
        0,
        "not even with an empty query"
    );

    let count = |tok: &str| {
        let mut q = q.clone();
        let tok = tok.to_string();
        let query = query.clone();
        async move {
            q.count(with_token(
                v1::CountRequest {
                    query,
                    facets: vec!["port".into()],
                    deadline_ms: 0,
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    // index stats: B's rows and jobs are its own (none), the admin's the whole index's
    let stats = |tok: &str| {
        let mut q = q.clone();
        let tok = tok.to_string();
        async move {
            q.index_status(with_token(v1::IndexStatusRequest::default(), &tok))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let (sa, sb, sx) = (
        stats(&view_a).await,
        stats(&view_b).await,
        stats(&admin).await,
    );
    assert_eq!((sb.rows, sb.jobs), (0, 0), "{sb:?}");
    assert_eq!(
        (sa.rows, sa.jobs),
        (sx.rows, sx.jobs),
        "A's job is the only one"
    );
    assert!(sa.rows >= 1);
    let (ca, cb) = (count(&view_a).await, count(&view_b).await);
    assert_eq!(ca.matched, 1);
    assert_eq!(cb.matched, 0);
    assert!(cb.facets.iter().all(|f| f.values.is_empty()), "{cb:?}");

    let host = |tok: &str| {
        let mut q = q.clone();
        let tok = tok.to_string();
        async move {
            q.host(with_token(
                v1::HostRequest {
                    ip: "127.0.0.1".into(),
                    as_of_ms: 0,
                },
                &tok,
            ))
            .await
            .unwrap()
            .into_inner()
        }
    };
    assert_eq!(host(&admin).await.ports.len(), 1);
    assert_eq!(host(&view_a).await.ports[0].jobs, [job]);
    assert!(host(&view_b).await.ports.is_empty());

    let diff = |tok: &str| {
        let mut q = q.clone();
        let tok = tok.to_string();
        async move {
            q.diff(with_token(
                v1::DiffRequest {
                    job_a: job,
                    job_b: job,
                    ..Default::default()
                },
                &tok,
            ))
            .await
        }
    };
    assert_eq!(diff(&view_a).await.unwrap().into_inner().rows_a, 1);
    let e = diff(&view_b).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");

    let export = |tok: &str| {
        let mut q = q.clone();
        let tok = tok.to_string();
        let query = query.clone();
        async move {
            let mut s = q
                .export(with_token(
                    v1::ExportRequest {
                        query,
                        format: v1::ExportFormat::Jsonl as i32,
                        ..Default::default()
                    },
                    &tok,
                ))
                .await
                .unwrap()
                .into_inner();
            let mut out = Vec::new();
            while let Some(c) = s.message().await.unwrap() {
                out.extend(c.data);
            }
            String::from_utf8(out).unwrap()
        }
    };
    assert_eq!(export(&admin).await.lines().count(), 1);
    assert_eq!(export(&view_b).await, "");

    // images: B's listing is empty; A's job took no screenshot here, so the listings of A and
    // the admin are the same (per-image visibility is unit-tested in overlord-core)
    let mut ic = ImageServiceClient::new(ch);
    let list = |tok: &str| {
        let mut ic = ic.clone();
        let tok = tok.to_string();
        async move {
            ic.list_images(with_token(v1::ListImagesRequest::default(), &tok))
                .await
                .unwrap()
                .into_inner()
                .images
                .len()
        }
    };
    assert_eq!(list(&view_b).await, 0);
    assert_eq!(list(&view_a).await, list(&admin).await);
    // an image id B cannot see is NotFound, exactly like one that does not exist
    let e = ic
        .get_image(with_token(
            v1::GetImageRequest {
                id: "0".repeat(64),
                ..Default::default()
            },
            &view_b,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    accept.abort();
    emb.shutdown().await;
}
