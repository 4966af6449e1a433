//! The main job's whole chain on real services: an X server (Xvfb) showing an xterm with known
//! text, exported by x11vnc on loopback; one job with `portscan,service,screenshot,enrich,leak` on
//! the embedded cluster with a leak file. The open port must be identified as VNC, screenshotted,
//! enriched (OCR finds the text and the e-mail), the e-mail found in the leak database (a `leak`
//! finding from the coordinator's own lookup) and the image served by `ImageService` — every
//! step through real gRPC.
//! Regression: the enrich lease must carry the PNG even when the screenshot result that spawned
//! it is still in the coordinator's unapplied write batch.

use overlord_cli::embedded::Embedded;
use overlord_cli::images::{self, Search};
use overlord_probes::service::testsupport as ts;
use overlord_proto::v1;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        ts::stop_child(&mut self.0);
    }
}

/// Waits until a window named `name` is mapped on `display` (xwininfo from x11-utils); fails at
/// once if `client`, the program that is to show it, exits.
fn wait_window(display: &str, name: &str, client: &mut Child) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = client.try_wait() {
            panic!("the client for window {name} exited with {st}");
        }
        let out = Command::new("xwininfo")
            .args(["-display", display, "-root", "-tree"])
            .output()
            .expect("xwininfo (Debian package x11-utils) must be installed");
        if String::from_utf8_lossy(&out.stdout).contains(name) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "no {name} window on {display}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_identifies_screenshots_and_enriches_a_live_vnc_desktop() {
    let xvfb = ts::xvfb(true).expect("Xvfb (package xvfb)");
    let display = format!("127.0.0.1:{}", xvfb.display.unwrap());
    let text_dir = tempfile::tempdir().unwrap();
    let motd = text_dir.path().join("motd");
    std::fs::write(
        &motd,
        "REACTOR PUMP STATUS: ALARM\noperator contact: night.shift@example.org\n",
    )
    .unwrap();
    let mut xterm = Kill(
        Command::new("xterm")
            .env("DISPLAY", &display)
            .args([
                "-title",
                "overlordlive",
                "-geometry",
                "80x10+30+30",
                "-fa",
                "Monospace",
            ])
            .args(["-fs", "14", "-e", "sh", "-c"])
            .arg(format!("cat '{}'; exec sleep 600", motd.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xterm (package xterm)"),
    );
    wait_window(&display, "overlordlive", &mut xterm.0);
    let vnc = ts::x11vnc(xvfb.display.unwrap()).expect("x11vnc (package x11vnc)");

    let dir = tempfile::tempdir().unwrap();
    let leaks = dir.path().join("leaks.csv");
    std::fs::write(&leaks, "night.shift@example.org,pastebin-2023,2023-11-02\n").unwrap();
    let mut settings = overlord_coordinator::Settings::local(dir.path().join("coord"));
    settings.images.leaks = Some(leaks);
    let emb = Embedded::start_with(settings, 2, 8).await.unwrap();
    let mut jc = overlord_cli::client::connect(&emb.url).await.unwrap();
    let st = overlord_cli::client::submit(
        &mut jc,
        v1::JobSpec {
            name: "live".into(),
            targets: vec!["127.0.0.1".into()],
            ports: vnc.addr.port().to_string(),
            modules: ["portscan", "service", "screenshot", "enrich", "leak"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let t0 = Instant::now();
    let st = loop {
        let s = overlord_cli::client::get(&mut jc, st.job_id).await.unwrap();
        if s.state == v1::JobState::Completed as i32 {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(180),
            "job not done: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st.tasks_failed, 0, "no task may fail: {st:?}");

    let mut results = Vec::new();
    overlord_cli::client::results(&mut jc, st.job_id, |f| results.push(f.clone()))
        .await
        .unwrap();
    let kinds: Vec<&str> = results.iter().map(|f| f.kind.as_str()).collect();
    for k in ["open_port", "service", "screenshot", "enrichment", "leak"] {
        assert_eq!(
            kinds.iter().filter(|x| **x == k).count(),
            1,
            "exactly one {k} finding expected: {kinds:?}"
        );
    }
    let enrichment = results.iter().find(|f| f.kind == "enrichment").unwrap();
    let a: overlord_enrich::Analysis = serde_json::from_str(&enrichment.data_json).unwrap();
    assert!(!a.blank, "the xterm screen is not blank");
    assert!(a.text.contains("ALARM"), "OCR text: {:?}", a.text);
    assert_eq!(a.emails, vec!["night.shift@example.org".to_string()]);
    let leak = results.iter().find(|f| f.kind == "leak").unwrap();
    assert_eq!(
        leak.parent_task_id, enrichment.task_id,
        "spawned by the enrich task"
    );
    assert_eq!(leak.port, vnc.addr.port() as u32);
    let d: serde_json::Value = serde_json::from_str(&leak.data_json).unwrap();
    assert_eq!(d["email"], "night.shift@example.org");
    assert_eq!(d["source"], "pastebin-2023");

    // Served by ImageService once indexed: the OCR word finds it.
    let mut c = images::connect(&emb.url).await.unwrap();
    let t0 = Instant::now();
    loop {
        let hits = images::search(&mut c, Search::Text("alarm".into()), 10)
            .await
            .unwrap();
        if let Some(h) = hits.images.first() {
            let m = h.meta.as_ref().unwrap();
            assert_eq!(m.port, vnc.addr.port() as u32, "{m:?}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "image never indexed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
