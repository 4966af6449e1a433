use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Result, ensure};
use overlord_probes::screen::{
    Encoding, PixelFormat, ScreenOptions, VncCapture, sha256_hex, vnc_screenshot, x11_screenshot,
};

use crate::harness::{self, XServer};

fn rfb(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Captures until our image equals `xwd -root` (the screen may still be settling after
/// xterm starts), then returns; fails with the mismatch after the timeout.
async fn assert_matches_xwd(x: &XServer, port: u16, opts: &ScreenOptions) -> Result<VncCapture> {
    let start = std::time::Instant::now();
    loop {
        let (w, h, want) = harness::xwd_rgb(x)?;
        let cap = vnc_screenshot(rfb(port), opts).await?;
        let shot = cap.screenshot.as_ref().expect("screenshot");
        ensure!(shot.sha256 == sha256_hex(&shot.png));
        let (gw, gh, got) = harness::png_rgb(&shot.png)?;
        ensure!((gw, gh) == (w, h), "size {gw}x{gh} vs xwd {w}x{h}");
        let (n, bbox) = harness::diff(&got, &want, w);
        if n == 0 {
            return Ok(cap);
        }
        if start.elapsed() > Duration::from_secs(10) {
            anyhow::bail!(
                "{n} pixels differ from xwd, bounding box {bbox:?} (encodings {:?})",
                cap.encodings_used
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11vnc_screenshot_equals_xwd() -> Result<()> {
    let x = harness::xvfb(1024, 768, false)?;
    harness::paint_pattern(&x, 7)?;
    let _term = harness::xterm(&x, "OVERLORD SCREENSHOT TEST 4242")?;
    let (vnc, port) = harness::x11vnc(&x)?;
    harness::assert_loopback_only(&x);
    harness::assert_listeners_loopback(vnc.pid(), "x11vnc");
    for encodings in [
        vec![Encoding::Zrle],
        vec![Encoding::Raw],
        vec![Encoding::Tight],
        ScreenOptions::default().encodings,
    ] {
        let opts = ScreenOptions {
            encodings: encodings.clone(),
            max_frames: 2,
            settle: Duration::from_millis(200),
            ..Default::default()
        };
        let cap = assert_matches_xwd(&x, port, &opts).await?;
        assert!(!cap.auth_required);
        // x11vnc is recognised as a LibVNCServer poller and settled
        assert!(cap.settled, "{:?}", cap.server_identity);
        assert!(
            cap.server_identity
                .as_deref()
                .is_some_and(|s| s.contains("LibVNCServer"))
        );
        assert_eq!(cap.security_types, vec![1]);
        assert_eq!((cap.width, cap.height), (1024, 768));
        // frame 2 equal to frame 1, or frame 1 was x11vnc's stale copy and frame 2 is current
        assert!(
            cap.stable || cap.frames == 2,
            "frames {} stable {}",
            cap.frames,
            cap.stable
        );
        let first = format!("{:?}", encodings[0]);
        let used = cap.encodings_used.join(",");
        assert!(
            used.to_lowercase().contains(&first.to_lowercase()),
            "asked {first}, server used {used}"
        );
    }
    // 16-bit pixel format (RGB565): every channel must be one of the 32/64 levels our scaling
    // produces and within one quantisation step of the true 24-bit colour (servers may round
    // or truncate when reducing).
    let opts = ScreenOptions {
        pixel_format: Some(PixelFormat::RGB565),
        encodings: vec![Encoding::Zrle],
        settle: Duration::from_millis(200),
        ..Default::default()
    };
    let cap = vnc_screenshot(rfb(port), &opts).await?;
    let (_, _, got) = harness::png_rgb(&cap.screenshot.unwrap().png)?;
    let (_, _, want) = harness::xwd_rgb(&x)?;
    let levels = |bits: u32| -> Vec<u8> {
        let max = (1u32 << bits) - 1;
        (0..=max)
            .map(|v| ((v * 255 + max / 2) / max) as u8)
            .collect()
    };
    let (l5, l6) = (levels(5), levels(6));
    let mut bad = 0;
    for (g, t) in got.chunks_exact(3).zip(want.chunks_exact(3)) {
        for (c, lv, step) in [(0, &l5, 9i32), (1, &l6, 5), (2, &l5, 9)] {
            if !lv.contains(&g[c]) || (i32::from(g[c]) - i32::from(t[c])).abs() > step {
                bad += 1;
            }
        }
    }
    assert_eq!(bad, 0, "{bad} channel values off in the RGB565 capture");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xvnc_none_and_vncauth() -> Result<()> {
    let x = harness::xvnc(800, 600, "None")?;
    // RFB on loopback only (`-localhost`), no X11 TCP listener (`-nolisten tcp`).
    harness::assert_listeners_loopback(x.pid(), "Xvnc");
    assert!(
        harness::tcp_listeners_of(x.pid())
            .unwrap()
            .iter()
            .all(|a| Some(a.port()) == x.rfb_port),
        "Xvnc listens on more than its RFB port"
    );
    harness::paint_pattern(&x, 3)?;
    let _term = harness::xterm(&x, "XVNC NO AUTH")?;
    let port = x.rfb_port.unwrap();
    for encodings in [
        vec![Encoding::Zrle],
        vec![Encoding::Tight],
        vec![Encoding::Raw],
    ] {
        let opts = ScreenOptions {
            encodings,
            ..Default::default()
        };
        let cap = assert_matches_xwd(&x, port, &opts).await?;
        assert_eq!(cap.protocol_version.as_str(), "3.8");
        // TigerVNC is the X server itself: never stale, no settle phase
        assert!(!cap.settled && cap.server_identity.is_none());
        assert_eq!(
            cap.desktop_name.as_deref().map(|n| n.is_empty()),
            Some(false)
        );
    }

    // Hextile and RRE alone (old and embedded servers speak only Raw/Hextile/RRE): the image
    // equals xwd, hence the Raw capture of the same still screen.
    let raw = assert_matches_xwd(
        &x,
        port,
        &ScreenOptions {
            encodings: vec![Encoding::Raw],
            ..Default::default()
        },
    )
    .await?;
    for (enc, name) in [(Encoding::Hextile, "Hextile"), (Encoding::Rre, "RRE")] {
        let opts = ScreenOptions {
            encodings: vec![enc],
            ..Default::default()
        };
        let cap = assert_matches_xwd(&x, port, &opts).await?;
        // Raw is always allowed (RFC 6143), TigerVNC uses it for some small rectangles
        assert!(
            cap.encodings_used.iter().all(|e| e == name || e == "Raw")
                && cap.encodings_used.iter().any(|e| e == name),
            "{name}: {:?}",
            cap.encodings_used
        );
        let (a, b) = (
            harness::png_rgb(&cap.screenshot.unwrap().png)?.2,
            harness::png_rgb(&raw.screenshot.as_ref().unwrap().png)?.2,
        );
        assert_eq!(harness::diff(&a, &b, 800).0, 0, "{name} differs from Raw");
    }

    let locked = harness::xvnc(640, 480, "VncAuth")?;
    let cap = vnc_screenshot(rfb(locked.rfb_port.unwrap()), &ScreenOptions::default()).await?;
    assert!(cap.auth_required);
    assert!(cap.screenshot.is_none());
    assert_eq!(cap.security_types, vec![2]);
    assert_eq!(
        cap.security_type_names,
        vec!["VNC Authentication".to_string()]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11_over_tcp_equals_xwd() -> Result<()> {
    let x = harness::xvfb(640, 480, true)?;
    // Safety: X11 over TCP is reachable on loopback only (the relay), never on 0.0.0.0/::.
    harness::assert_loopback_only(&x);
    harness::paint_pattern(&x, 11)?;
    let _term = harness::xterm(&x, "X11 ROOT WINDOW")?;
    let (w, h, want) = harness::xwd_rgb(&x)?;
    let cap = x11_screenshot(x.tcp_addr(), &ScreenOptions::default()).await?;
    assert!(cap.open);
    assert_eq!(cap.vendor.as_deref(), Some("The X.Org Foundation"));
    assert!(cap.release.unwrap() > 0);
    assert_eq!((cap.screens[0].width, cap.screens[0].height), (640, 480));
    let shot = cap.screenshot.unwrap();
    let (gw, gh, got) = harness::png_rgb(&shot.png)?;
    assert_eq!((gw, gh), (w, h));
    let (n, bbox) = harness::diff(&got, &want, w);
    assert_eq!(n, 0, "{n} pixels differ, box {bbox:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11_refused_without_cookie() -> Result<()> {
    // Without -ac, Xvfb refuses a client that presents no authorization.
    harness::need("Xvfb", "xvfb");
    let x = harness::xvfb_auth(320, 240)?;
    harness::assert_loopback_only(&x);
    let cap = x11_screenshot(x.tcp_addr(), &ScreenOptions::default()).await?;
    assert!(!cap.open);
    assert!(cap.screenshot.is_none());
    let reason = cap.refused_reason.unwrap_or_default();
    assert!(!reason.is_empty(), "expected a refusal reason");
    Ok(())
}

/// x11vnc does not poll the X screen while no client is connected, so it may answer a new
/// client's first request with an old picture. Right after each repaint, a capture with the
/// default settle window must show the new screen; captures trusting the first frame are
/// counted to show the problem is real (not asserted: it depends on timing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x11vnc_stale_first_frame() -> Result<()> {
    let x = harness::xvfb(1024, 768, false)?;
    harness::paint_pattern(&x, 5)?;
    let (_vnc, port) = harness::x11vnc(&x)?;
    let naive = ScreenOptions {
        max_frames: 1,
        settle: Duration::ZERO,
        ..Default::default()
    };
    let mut stale_naive = 0;
    for round in 0..5u32 {
        harness::paint_pattern(&x, 9 + round * 2)?;
        let cap = vnc_screenshot(rfb(port), &naive).await?;
        let (w, _, want) = harness::xwd_rgb(&x)?;
        let (_, _, got) = harness::png_rgb(&cap.screenshot.unwrap().png)?;
        stale_naive += usize::from(harness::diff(&got, &want, w).0 > 0);

        harness::paint_pattern(&x, 10 + round * 2)?;
        let cap = vnc_screenshot(rfb(port), &ScreenOptions::default()).await?;
        eprintln!(
            "round {round}: {} settle updates, first frame {:.0} ms, last update {:?} ms after it",
            cap.settle_updates, cap.timings.first_frame_ms, cap.timings.last_settle_update_ms
        );
        let (w, _, want) = harness::xwd_rgb(&x)?;
        let (_, _, got) = harness::png_rgb(&cap.screenshot.unwrap().png)?;
        let (n, bbox) = harness::diff(&got, &want, w);
        assert_eq!(
            n, 0,
            "round {round}: settled capture is stale ({n} pixels, box {bbox:?}, {} settle updates)",
            cap.settle_updates
        );
    }
    eprintln!("first-frame-only captures that were stale: {stale_naive}/5");
    Ok(())
}
