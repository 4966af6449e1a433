//! Image serving end to end: a real in-process cluster (coordinator + minion over loopback gRPC)
//! runs the `enrich` module on fixture screenshots; the coordinator indexes the enrichment
//! findings and serves them through `ImageService`, also after a restart.

use overlord_cli::embedded::Embedded;
use overlord_cli::images::{self, Search};
use overlord_core::finding::Payload;
use overlord_probes::service::testsupport as ts;
use overlord_proto::v1;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The fixture screens, canonical: minions refuse input paths with `..` (inputs are confined).
fn screens() -> PathBuf {
    let d = overlord_enrich::metrics::fixtures_dir()
        .unwrap_or_else(|e| panic!("{e}"))
        .join("screens");
    std::fs::canonicalize(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()))
}

fn sha_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

async fn wait_job(url: &str, job: u64) {
    let mut c = overlord_cli::client::connect(url).await.unwrap();
    let t0 = Instant::now();
    loop {
        let st = overlord_cli::client::get(&mut c, job).await.unwrap();
        if st.state == v1::JobState::Completed as i32 {
            assert_eq!(st.tasks_failed, 0, "no enrich task may fail: {st:?}");
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "job not done: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until `n` images are listed with their enrichment indexed.
async fn wait_indexed(c: &mut images::ImageClient, n: usize) -> v1::ImageList {
    let t0 = Instant::now();
    loop {
        let l = images::list(c, "", 100, false).await.unwrap();
        let enriched = l
            .images
            .iter()
            .filter(|h| h.meta.as_ref().unwrap().enriched)
            .count();
        if enriched == n {
            return l;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{enriched} of {n} images indexed: {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_job_images_are_served_over_grpc_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let login = screens().join("04_console_login_web01.png");
    let mail = screens().join("07_mail_from_light.png");
    let login_png = std::fs::read(&login).unwrap();
    let mail_png = std::fs::read(&mail).unwrap();
    let login_id = sha_hex(&login_png);
    let mail_id = sha_hex(&mail_png);

    let emb = Embedded::start_with_inputs(
        overlord_coordinator::Settings::local(dir.path().join("coord")),
        1,
        4,
        Some(screens()),
    )
    .await
    .unwrap();
    let mut jc = overlord_cli::client::connect(&emb.url).await.unwrap();
    let st = overlord_cli::client::submit(
        &mut jc,
        v1::JobSpec {
            name: "images".into(),
            modules: vec!["enrich".into()],
            inputs: vec![login.display().to_string(), mail.display().to_string()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_job(&emb.url, st.job_id).await;

    let mut c = images::connect(&emb.url).await.unwrap();
    let l = wait_indexed(&mut c, 2).await;
    let mut ids: Vec<_> = l
        .images
        .iter()
        .map(|h| h.meta.clone().unwrap().id)
        .collect();
    ids.sort();
    let mut want = vec![login_id.clone(), mail_id.clone()];
    want.sort();
    assert_eq!(ids, want);

    // get: identical bytes, provenance, enrichment JSON
    let img = images::get(&mut c, &login_id, true).await.unwrap();
    assert!(img.png == login_png, "served PNG differs from the input");
    let m = img.meta.unwrap();
    assert_eq!(m.job_id, st.job_id);
    assert_eq!(m.module, "enrich");
    assert_eq!((m.width, m.height), (1024, 768));
    assert!(m.protocol.ends_with("04_console_login_web01.png"), "{m:?}");
    let a: overlord_enrich::Analysis = serde_json::from_str(&img.enrichment_json).unwrap();
    assert!(a.text.contains("login"), "{:?}", a.text);
    let meta_only = images::get(&mut c, &mail_id, false).await.unwrap();
    assert!(meta_only.png.is_empty());
    let a: overlord_enrich::Analysis = serde_json::from_str(&meta_only.enrichment_json).unwrap();
    assert!(
        a.emails
            .contains(&"alice.smith@example-corp.com".to_string()),
        "{:?}",
        a.emails
    );

    // ranked text search: a word only on one screen finds exactly that screen first
    let hits = images::search(&mut c, Search::Text("login".into()), 10)
        .await
        .unwrap();
    assert_eq!(
        hits.images[0].meta.as_ref().unwrap().id,
        login_id,
        "{hits:?}"
    );
    assert!(hits.images[0].score > 0.0);
    let hits = images::search(&mut c, Search::Text("alice".into()), 10)
        .await
        .unwrap();
    let got: Vec<_> = hits
        .images
        .iter()
        .map(|h| h.meta.clone().unwrap().id)
        .collect();
    assert_eq!(got, vec![mail_id.clone()]);
    // tags and faces
    let tagged = images::search(&mut c, Search::Tag("text".into()), 10)
        .await
        .unwrap();
    assert_eq!(tagged.images.len(), 2, "{tagged:?}");
    let faces = images::search(&mut c, Search::Faces(1), 10).await.unwrap();
    assert!(
        faces.images.is_empty(),
        "no faces on text screens: {faces:?}"
    );

    // similar: own PNG uploaded → itself at distance 0; by id → itself first at 0
    let sim = images::similar(&mut c, None, Some(&login), 0, 10)
        .await
        .unwrap();
    assert_eq!(sim.images.len(), 1, "{sim:?}");
    assert_eq!(sim.images[0].meta.as_ref().unwrap().id, login_id);
    assert_eq!(sim.images[0].distance, 0);
    let sim = images::similar(&mut c, Some(&mail_id), None, 8, 10)
        .await
        .unwrap();
    assert_eq!(sim.images[0].meta.as_ref().unwrap().id, mail_id);
    assert_eq!(sim.images[0].distance, 0);

    // errors through the one mapping
    let unknown = "0".repeat(64);
    let e = c
        .get_image(v1::GetImageRequest {
            id: unknown.clone(),
            metadata_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = c
        .similar_images(v1::SimilarImagesRequest {
            query: Some(v1::similar_images_request::Query::Id(unknown)),
            radius: 4,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = c
        .similar_images(v1::SimilarImagesRequest {
            query: Some(v1::similar_images_request::Query::Id(login_id.clone())),
            radius: 99,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = c
        .similar_images(v1::SimilarImagesRequest {
            query: Some(v1::similar_images_request::Query::Png(
                b"\x89PNG\r\n\x1a\nnot really".to_vec(),
            )),
            radius: 4,
            limit: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = c
        .get_image(v1::GetImageRequest {
            id: "../etc".into(),
            metadata_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let e = images::search(&mut c, Search::Text("  ".into()), 10)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("InvalidArgument"), "{e}");

    // paging
    let p1 = images::list(&mut c, "", 1, false).await.unwrap();
    assert_eq!(p1.images.len(), 1);
    assert!(!p1.next_after.is_empty());
    let p2 = images::list(&mut c, &p1.next_after, 1, false)
        .await
        .unwrap();
    assert_eq!(p2.images.len(), 1);
    assert_ne!(p1.images[0].meta, p2.images[0].meta);
    assert!(p2.next_after.is_empty());

    drop(c);
    drop(jc);
    emb.shutdown().await;

    // restart on the same data dir: everything still served, nothing ingested twice
    // per-connection server tasks may hold the store for a moment after shutdown
    let t0 = Instant::now();
    let emb = loop {
        match Embedded::start(dir.path().join("coord"), 0, 4).await {
            Ok(e) => break e,
            Err(e)
                if t0.elapsed() < Duration::from_secs(15) && format!("{e:#}").contains("lock") =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart: {e:#}"),
        }
    };
    let mut c = images::connect(&emb.url).await.unwrap();
    let l = wait_indexed(&mut c, 2).await;
    assert_eq!(l.images.len(), 2);
    let hits = images::search(&mut c, Search::Text("login".into()), 10)
        .await
        .unwrap();
    assert_eq!(hits.images[0].meta.as_ref().unwrap().id, login_id);
    let img = images::get(&mut c, &login_id, true).await.unwrap();
    assert!(img.png == login_png);
    drop(c);
    emb.shutdown().await;
}

/// Issue #5 items 6-7: e-mail addresses on a screen that the coordinator's leak database knows
/// become `leak` findings, produced by the coordinator itself (`overlord_coordinator::lookup`; spawned by the
/// `enrichment` → `leak` rule, parent = the enrich task), streamed to `watch` and stored in the
/// results; addresses the database does not know give none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_addresses_on_a_screen_become_leak_findings_streamed_to_watch() {
    let dir = tempfile::tempdir().unwrap();
    let mail = screens().join("07_mail_from_light.png");
    let login = screens().join("04_console_login_web01.png");
    let mail_id = sha_hex(&std::fs::read(&mail).unwrap());
    // 07 shows alice.smith@, bob.jones@ and noreply@; the database knows alice (twice) and
    // noreply, plus an address that is on no screen; bob is unknown
    let leaks = dir.path().join("leaks.csv");
    std::fs::write(
        &leaks,
        "address,source,date\n\
         Alice.Smith@example-corp.com,combo-2019,2019-01-07\n\
         alice.smith@example-corp.com,forum-dump,2021-06-30\n\
         noreply@alerts.example.net,breach-x,2022-02-02\n\
         carol.absent@example.com,combo-2019,2019-01-07\n",
    )
    .unwrap();
    let mut s = overlord_coordinator::Settings::local(dir.path().join("coord"));
    s.images.leaks = Some(leaks);
    let emb = Embedded::start_with_inputs(s, 1, 4, Some(screens()))
        .await
        .unwrap();
    let mut jc = overlord_cli::client::connect(&emb.url).await.unwrap();
    let st = overlord_cli::client::submit(
        &mut jc,
        v1::JobSpec {
            name: "leaks".into(),
            modules: vec!["enrich".into(), "leak".into()],
            inputs: vec![mail.display().to_string(), login.display().to_string()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let job = st.job_id;
    // a watch client following the job from the start
    let url = emb.url.clone();
    let watcher = tokio::spawn(async move {
        let mut c = overlord_cli::client::connect(&url).await.unwrap();
        let mut seen = Vec::new();
        let st = overlord_cli::client::watch(&mut c, job, 0, false, |f| seen.push(f.clone()))
            .await
            .unwrap();
        (st, seen)
    });
    wait_job(&emb.url, job).await;
    let (fin, watched) = tokio::time::timeout(Duration::from_secs(30), watcher)
        .await
        .expect("watch ends when the job finishes")
        .unwrap();
    assert_eq!(fin.state, v1::JobState::Completed as i32);
    // 2 enrich roots + 1 leak lookup (the login screen has no e-mail: no lookup)
    assert_eq!(fin.tasks_total, 3, "{fin:?}");

    let mut results = Vec::new();
    overlord_cli::client::results(&mut jc, job, |f| results.push(f.clone()))
        .await
        .unwrap();
    let enrich_task = results
        .iter()
        .find(|f| f.kind == "enrichment" && f.blob_sha256 == mail_id)
        .expect("enrichment of the mail screen")
        .task_id;
    for (what, list) in [("results", &results), ("watch", &watched)] {
        let mut leaks: Vec<&v1::Finding> = list.iter().filter(|f| f.kind == "leak").collect();
        leaks.sort_by_key(|f| f.data_json.clone());
        let emails: Vec<String> = leaks
            .iter()
            .map(|f| {
                let d: serde_json::Value = serde_json::from_str(&f.data_json).unwrap();
                d["email"].as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            emails,
            vec![
                "alice.smith@example-corp.com".to_string(),
                "noreply@alerts.example.net".to_string()
            ],
            "{what}: exactly one leak finding per known address on the screen"
        );
        for f in &leaks {
            assert_eq!(f.module, "leak", "{what}");
            assert_eq!(
                f.parent_task_id, enrich_task,
                "{what}: spawned by the enrich task"
            );
            assert_eq!(
                f.minion_id, "coordinator",
                "{what}: the coordinator ran the lookup itself"
            );
            assert_eq!(f.provider, "coordinator", "{what}");
            let d: serde_json::Value = serde_json::from_str(&f.data_json).unwrap();
            assert_eq!(d["image"], mail_id.as_str(), "{what}");
        }
        let alice: serde_json::Value = serde_json::from_str(&leaks[0].data_json).unwrap();
        assert_eq!(alice["source"], "combo-2019");
        assert_eq!(alice["date"], "2019-01-07");
        assert_eq!(alice["leaks"].as_array().unwrap().len(), 2, "{alice}");
        let line =
            overlord_cli::client::finding_line(leaks[0], overlord_cli::client::Format::Table);
        assert!(
            line.contains(
                "alice.smith@example-corp.com leaked in combo-2019 (2019-01-07) (+1 more)"
            ),
            "{line}"
        );
    }
    // the image store serves the tags the enrichment computed, as they are (computed once; the
    // leak lookup is the `leak` findings above, not a re-tagging of the image)
    let enrichment = results
        .iter()
        .find(|f| f.kind == "enrichment" && f.blob_sha256 == mail_id)
        .unwrap();
    let Payload::Enrichment(e) = Payload::parse(
        &enrichment.kind,
        &serde_json::from_str(&enrichment.data_json).unwrap(),
    )
    .payload
    else {
        panic!("typed enrichment")
    };
    let mut c = images::connect(&emb.url).await.unwrap();
    let t0 = Instant::now();
    loop {
        let got = images::get(&mut c, &mail_id, false).await;
        if let Ok(img) = got
            && img.meta.as_ref().is_some_and(|m| m.enriched)
        {
            assert_eq!(
                img.meta.unwrap().tags,
                e.tags,
                "served as the enrichment computed them"
            );
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "never indexed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    drop(jc);
    emb.shutdown().await;
}

/// ListImages lists every stored image and says which are enriched: a screenshot from a job
/// without `enrich` (a real X11 capture of an Xvfb screen) is listed with `enriched: false` and no
/// tags, skipped by `enriched_only`, and never returned by SearchImages/SimilarImages; an enriched
/// image is listed with `enriched: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn screenshots_not_enriched_are_listed_as_such_and_never_searched() {
    let xvfb = ts::xvfb(true).expect("Xvfb (package xvfb)");
    let x11_port = 6000 + xvfb.display.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let emb = Embedded::start_with_inputs(
        overlord_coordinator::Settings::local(dir.path().join("coord")),
        1,
        4,
        Some(screens()),
    )
    .await
    .unwrap();
    let mut jc = overlord_cli::client::connect(&emb.url).await.unwrap();
    let shot = overlord_cli::client::submit(
        &mut jc,
        v1::JobSpec {
            name: "shot only".into(),
            targets: vec!["127.0.0.1".into()],
            ports: x11_port.to_string(),
            modules: vec!["screenshot".into()],
            // display numbers above 63 are not guessed as X11 from the port
            params_json: r#"{"protocol": "x11"}"#.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_job(&emb.url, shot.job_id).await;
    let mut results = Vec::new();
    overlord_cli::client::results(&mut jc, shot.job_id, |f| results.push(f.clone()))
        .await
        .unwrap();
    let shot_id = results
        .iter()
        .find(|f| f.kind == "screenshot")
        .unwrap_or_else(|| panic!("an X11 screenshot finding: {results:?}"))
        .blob_sha256
        .clone();
    let mail = screens().join("07_mail_from_light.png");
    let mail_id = sha_hex(&std::fs::read(&mail).unwrap());
    let st = overlord_cli::client::submit(
        &mut jc,
        v1::JobSpec {
            name: "enrich".into(),
            modules: vec!["enrich".into()],
            inputs: vec![mail.display().to_string()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_job(&emb.url, st.job_id).await;

    let mut c = images::connect(&emb.url).await.unwrap();
    let l = wait_indexed(&mut c, 1).await;
    let t0 = Instant::now();
    let l = loop {
        // the screenshot's record is written by the same indexer; wait for both
        if l.images.len() == 2 {
            break l;
        }
        let l = images::list(&mut c, "", 100, false).await.unwrap();
        if l.images.len() == 2 {
            break l;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "{l:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let by_id = |id: &str| {
        l.images
            .iter()
            .map(|h| h.meta.clone().unwrap())
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("{id} not listed: {l:?}"))
    };
    let s = by_id(&shot_id);
    assert!(!s.enriched, "{s:?}");
    assert!(s.tags.is_empty());
    assert_eq!(
        (s.module.as_str(), s.protocol.as_str()),
        ("screenshot", "x11")
    );
    assert_eq!(s.port, x11_port as u32);
    let m = by_id(&mail_id);
    assert!(m.enriched, "{m:?}");
    assert!(!m.tags.is_empty());
    let line = images::hit_line(
        &l.images[l
            .images
            .iter()
            .position(|h| h.meta.as_ref().unwrap().id == shot_id)
            .unwrap()],
    );
    assert!(line.ends_with("not-enriched"), "{line}");
    // enriched_only: only the enriched image, also across pages
    let only = images::list(&mut c, "", 100, true).await.unwrap();
    let ids: Vec<_> = only
        .images
        .iter()
        .map(|h| h.meta.clone().unwrap().id)
        .collect();
    assert_eq!(ids, vec![mail_id.clone()]);
    let mut after = String::new();
    let mut paged = Vec::new();
    loop {
        let p = images::list(&mut c, &after, 1, true).await.unwrap();
        paged.extend(p.images.iter().map(|h| h.meta.clone().unwrap().id));
        if p.next_after.is_empty() {
            break;
        }
        after = p.next_after;
    }
    assert_eq!(paged, vec![mail_id.clone()]);
    // search and similar never return the un-enriched screenshot (an all-black screen is
    // what a `blank` tag search would find if it had been enriched)
    let blank = images::search(&mut c, Search::Tag("blank".into()), 10)
        .await
        .unwrap();
    assert!(blank.images.is_empty(), "{blank:?}");
    let e = images::similar(&mut c, Some(&shot_id), None, 32, 10)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NotFound"), "{e}");
    // get still serves it: PNG bytes, no enrichment
    let img = images::get(&mut c, &shot_id, true).await.unwrap();
    assert!(!img.png.is_empty());
    assert!(img.enrichment_json.is_empty());
    assert!(!img.meta.unwrap().enriched);
    drop(c);
    drop(jc);
    emb.shutdown().await;
}
