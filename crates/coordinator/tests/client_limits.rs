//! Limits of the client API over a real socket: a library coordinator on 127.0.0.1:0, real tonic
//! clients.

use overlord_proto::v1::image_service_client::ImageServiceClient;
use overlord_proto::v1::job_service_client::JobServiceClient;
use overlord_proto::v1::{GetJobRequest, JobSpec, SimilarImagesRequest, SubmitJobRequest};
use tonic::Code;

struct Coord {
    _dir: tempfile::TempDir,
    running: overlord_coordinator::Running,
}

/// The coordinator on the sled store, or on the memory store (`mem`): the limits hold on both.
async fn coordinator(mem: bool) -> Coord {
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let settings = overlord_coordinator::Settings::local(dir.path().join("data"));
    let running = if mem {
        overlord_coordinator::start_with_store(
            settings,
            std::sync::Arc::new(overlord_storage::MemStore::new()),
            listener,
        )
        .await
    } else {
        overlord_coordinator::start(settings, listener).await
    }
    .expect("coordinator");
    Coord { _dir: dir, running }
}

fn spec(targets: Vec<String>) -> JobSpec {
    JobSpec {
        name: "limits".into(),
        targets,
        ports: "1".into(),
        modules: vec!["portscan".into()],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_requests_get_resource_exhausted_naming_the_limit() {
    oversized_client_requests(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_requests_get_resource_exhausted_naming_the_limit_on_mem() {
    oversized_client_requests(true).await
}

async fn oversized_client_requests(mem: bool) {
    let c = coordinator(mem).await;
    let url = c.running.local_url();
    let mut jobs = JobServiceClient::connect(url.clone())
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX);
    // ~2.4 MB of targets: over the 1 MiB JobService limit.
    let targets: Vec<String> = (0..200_000)
        .map(|i| format!("127.1.{}.{}", (i / 250) % 250, i % 250 + 1))
        .collect();
    let e = jobs
        .submit_job(SubmitJobRequest {
            spec: Some(spec(targets)),
            ..Default::default()
        })
        .await
        .expect_err("a 2.4 MB SubmitJob must be refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for want in ["1048576", "/overlord.v1.JobService/SubmitJob"] {
        assert!(e.message().contains(want), "message names {want}: {e:?}");
    }
    // The connection and the service still work, and handler statuses pass through unchanged.
    let ok = jobs
        .submit_job(SubmitJobRequest {
            spec: Some(spec(vec!["127.0.0.2".into()])),
            ..Default::default()
        })
        .await
        .expect("a small job after the refusal");
    assert!(ok.into_inner().job_id > 0);
    let e = jobs
        .get_job(GetJobRequest { job_id: 424_242 })
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // ImageService: an uploaded PNG over the 32 MiB message limit.
    let mut images = ImageServiceClient::connect(url)
        .await
        .expect("connect")
        .max_encoding_message_size(usize::MAX);
    let png = vec![0u8; overlord_proto::MAX_MESSAGE_BYTES + 1024];
    let e = images
        .similar_images(SimilarImagesRequest {
            query: Some(overlord_proto::v1::similar_images_request::Query::Png(png)),
            radius: 4,
            ..Default::default()
        })
        .await
        .expect_err("a 32 MiB upload must be refused");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    for want in ["33554432", "/overlord.v1.ImageService/SimilarImages"] {
        assert!(e.message().contains(want), "message names {want}: {e:?}");
    }
    // A small undecodable upload still gets the handler's InvalidArgument.
    let e = images
        .similar_images(SimilarImagesRequest {
            query: Some(overlord_proto::v1::similar_images_request::Query::Png(
                b"not a png".to_vec(),
            )),
            radius: 4,
            ..Default::default()
        })
        .await
        .expect_err("garbage PNG");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    c.running.shutdown().await;
}

/// A channel to `url` whose connections come from `src` (any 127.0.0.0/8 address is local).
async fn channel_from(url: &str, src: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .expect("url")
        .local_address(Some(src.parse().expect("ip")))
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_flooding_address_cannot_starve_other_submitters() {
    flooding_address(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_flooding_address_cannot_starve_other_submitters_on_mem() {
    flooding_address(true).await
}

async fn flooding_address(mem: bool) {
    let c = coordinator(mem).await;
    let url = c.running.local_url();
    let submit = |ch: tonic::transport::Channel, target: String| async move {
        JobServiceClient::new(ch)
            .submit_job(SubmitJobRequest {
                spec: Some(spec(vec![target])),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().job_id)
    };
    // The flood: 400 concurrent submissions from 127.0.0.2 over 4 connections. Beside it, a
    // polite client at 127.0.0.3 with 16 concurrent submissions (its per-address cap): with the
    // flood held to 16 slots, 16 + 16 < 64, so none of the polite ones may be refused.
    let mut flood = tokio::task::JoinSet::new();
    for k in 0..4 {
        let ch = channel_from(&url, "127.0.0.2").await;
        for i in 0..100 {
            flood.spawn(submit(ch.clone(), format!("127.0.{k}.{}", i + 1)));
        }
    }
    let polite_ch = channel_from(&url, "127.0.0.3").await;
    let mut polite = tokio::task::JoinSet::new();
    for i in 0..overlord_coordinator::api::MAX_SUBMITS_PER_CLIENT {
        polite.spawn(submit(polite_ch.clone(), format!("127.0.9.{}", i + 1)));
    }
    let (mut ok, mut capped) = (0, 0);
    while let Some(r) = flood.join_next().await {
        match r.expect("join") {
            Ok(_) => ok += 1,
            Err(e)
                if e.code() == Code::ResourceExhausted
                    && e.message().contains("from this client address (max 16") =>
            {
                capped += 1
            }
            Err(e) => panic!("flood submission: {:?} {}", e.code(), e.message()),
        }
    }
    eprintln!("flood from 127.0.0.2: {ok} accepted, {capped} refused by the per-address cap");
    assert!(
        capped > 0,
        "400 concurrent submissions never hit the cap of 16"
    );
    assert!(ok > 0, "the flooding client itself still gets some through");
    while let Some(r) = polite.join_next().await {
        let id = r
            .expect("join")
            .expect("the polite client is never refused");
        assert!(id > 0);
    }
    // Slots are released: the flooding address can submit again.
    submit(channel_from(&url, "127.0.0.2").await, "127.0.8.1".into())
        .await
        .expect("a submission after the flood");
    c.running.shutdown().await;
}
