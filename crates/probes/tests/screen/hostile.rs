//! Hostile fake servers (tokio listeners on 127.0.0.1:0): each must end with a precise error
//! within the configured caps on time, bytes and memory.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use flate2::{Compress, Compression, FlushCompress};
use overlord_probes::screen::{
    Encoding, PixelFormat, RdpProtocol, ScreenError, ScreenOptions, rdp_probe, vnc_screenshot,
    x11_screenshot,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::OwnedWriteHalf;

/// Serves every connection with `script` (the client's bytes are drained and ignored).
async fn fake<F, Fut>(script: F) -> SocketAddr
where
    F: Fn(OwnedWriteHalf) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let script = std::sync::Arc::new(script);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (mut r, w) = s.into_split();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while matches!(r.read(&mut buf).await, Ok(n) if n > 0) {}
            });
            tokio::spawn(script(w));
        }
    });
    addr
}

fn server_init(w: u16, h: u16, name: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&w.to_be_bytes());
    m.extend_from_slice(&h.to_be_bytes());
    m.extend_from_slice(&PixelFormat::RGB888.to_bytes());
    m.extend_from_slice(&(name.len() as u32).to_be_bytes());
    m.extend_from_slice(name);
    m
}

/// RFB 3.8 handshake with security None up to ServerInit (the client's replies are drained).
fn handshake(w: u16, h: u16) -> Vec<u8> {
    let mut m = b"RFB 003.008\n".to_vec();
    m.extend_from_slice(&[1, 1]);
    m.extend_from_slice(&0u32.to_be_bytes());
    m.extend(server_init(w, h, b"fake"));
    m
}

fn rect(x: u16, y: u16, w: u16, h: u16, enc: i32) -> Vec<u8> {
    let mut m = Vec::new();
    for v in [x, y, w, h] {
        m.extend_from_slice(&v.to_be_bytes());
    }
    m.extend_from_slice(&enc.to_be_bytes());
    m
}

fn update_header(n: u16) -> Vec<u8> {
    let mut m = vec![0u8, 0];
    m.extend_from_slice(&n.to_be_bytes());
    m
}

fn quick() -> ScreenOptions {
    ScreenOptions {
        io_timeout: Duration::from_secs(1),
        total_timeout: Duration::from_secs(3),
        settle: Duration::ZERO,
        ..Default::default()
    }
}

async fn send_then_hold(mut w: OwnedWriteHalf, data: Vec<u8>) {
    let _ = w.write_all(&data).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn huge_framebuffer_is_refused() {
    let addr = fake(|w| send_then_hold(w, handshake(65535, 65535))).await;
    let t = Instant::now();
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "framebuffer dimension",
                value: 65535,
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    // within the dimension cap but over the pixel cap
    let addr = fake(|w| send_then_hold(w, handshake(16000, 16000))).await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "framebuffer pixels",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn rectangle_outside_screen_is_refused() {
    let addr = fake(|w| {
        let mut m = handshake(100, 100);
        m.extend(update_header(1));
        m.extend(rect(90, 90, 20, 20, 0));
        m.extend(vec![0u8; 20 * 20 * 4]);
        send_then_hold(w, m)
    })
    .await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::RectOutOfBounds {
                x: 90,
                y: 90,
                w: 20,
                h: 20,
                fb_w: 100,
                fb_h: 100
            }
        ),
        "{err}"
    );
    // a CopyRect whose source lies outside
    let addr = fake(|w| {
        let mut m = handshake(100, 100);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 50, 50, 1));
        m.extend([0, 80, 0, 80]);
        send_then_hold(w, m)
    })
    .await;
    let opts = ScreenOptions {
        encodings: vec![Encoding::CopyRect, Encoding::Raw],
        ..quick()
    };
    let err = vnc_screenshot(addr, &opts).await.unwrap_err();
    assert!(
        matches!(err, ScreenError::RectOutOfBounds { x: 80, y: 80, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn server_stopping_mid_update() {
    // closes the connection half-way through a Raw rectangle
    let addr = fake(|mut w| async move {
        let mut m = handshake(64, 64);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 64, 64, 0));
        m.extend(vec![7u8; 64 * 32 * 4]);
        let _ = w.write_all(&m).await;
        let _ = w.shutdown().await;
    })
    .await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Closed {
                phase: "framebuffer update",
                ..
            }
        ),
        "{err}"
    );

    // stays connected but goes silent: the idle timeout fires
    let addr = fake(|w| {
        let mut m = handshake(64, 64);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 64, 64, 0));
        m.extend(vec![7u8; 100]);
        send_then_hold(w, m)
    })
    .await;
    let t = Instant::now();
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Timeout {
                phase: "framebuffer update",
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // a partial update that never covers the whole screen
    let addr = fake(|w| {
        let mut m = handshake(64, 64);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 64, 32, 0));
        m.extend(vec![7u8; 64 * 32 * 4]);
        send_then_hold(w, m)
    })
    .await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Timeout {
                phase: "framebuffer update (partial screen so far)",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn dripping_server_hits_total_deadline() {
    // a valid but endless stream of tiny Raw updates, one byte every 20 ms
    let addr = fake(|mut w| async move {
        let mut m = handshake(1024, 768);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 1024, 768, 0));
        for b in m.iter().copied().chain(std::iter::repeat(0u8)) {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let t = Instant::now();
    let opts = ScreenOptions {
        total_timeout: Duration::from_secs(2),
        ..quick()
    };
    let err = vnc_screenshot(addr, &opts).await.unwrap_err();
    assert!(
        matches!(err, ScreenError::Timeout { limit, .. } if limit == Duration::from_secs(2)),
        "{err}"
    );
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(1900) && el < Duration::from_secs(3),
        "{el:?}"
    );
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::best(), true);
    let mut out = Vec::with_capacity(data.len() / 100 + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    out
}

#[tokio::test]
async fn zlib_bomb_is_bounded() {
    // 64x64 ZRLE rectangle whose stream inflates to 64 MiB
    let bomb = zlib(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 200 * 1024);
    let payload = bomb.clone();
    let addr = fake(move |w| {
        let mut m = handshake(64, 64);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 64, 64, 16));
        m.extend((payload.len() as u32).to_be_bytes());
        m.extend(&payload);
        send_then_hold(w, m)
    })
    .await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    // either the compressed length is already implausible for the rectangle, or inflating stops at the bound
    assert!(matches!(err, ScreenError::Limit { .. }), "{err}");

    // a length within the plausible range: inflating stops at the rectangle's bound
    let small_bomb = zlib(&vec![0u8; 8 << 20]);
    assert!(small_bomb.len() < 21 * 1024, "{}", small_bomb.len());
    let addr = fake(move |w| {
        let mut m = handshake(64, 64);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 64, 64, 16));
        m.extend((small_bomb.len() as u32).to_be_bytes());
        m.extend(&small_bomb);
        send_then_hold(w, m)
    })
    .await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "decompressed bytes for one rectangle",
                ..
            }
        ),
        "{err}"
    );

    // the session-wide decompression budget applies across rectangles
    let tile = {
        let mut t = vec![1u8]; // solid tile
        t.extend([1, 2, 3]);
        t
    };
    let addr = fake(move |w| {
        let mut m = handshake(64, 64);
        m.extend(update_header(3));
        let mut c = Compress::new(Compression::fast(), true);
        for _ in 0..3 {
            let mut out = Vec::with_capacity(1024);
            c.compress_vec(&tile, &mut out, FlushCompress::Sync)
                .unwrap();
            m.extend(rect(0, 0, 64, 64, 16));
            m.extend((out.len() as u32).to_be_bytes());
            m.extend(&out);
        }
        send_then_hold(w, m)
    })
    .await;
    let opts = ScreenOptions {
        max_decompressed_bytes: 10,
        ..quick()
    };
    let err = vnc_screenshot(addr, &opts).await.unwrap_err();
    assert!(matches!(err, ScreenError::Limit { limit: 2, .. }), "{err}");
}

#[tokio::test]
async fn byte_budget_and_names() {
    let addr = fake(|w| {
        let mut m = b"RFB 003.008\n".to_vec();
        m.extend_from_slice(&[1, 1]);
        m.extend_from_slice(&0u32.to_be_bytes());
        m.extend_from_slice(&[0, 64, 0, 64]);
        m.extend_from_slice(&PixelFormat::RGB888.to_bytes());
        m.extend_from_slice(&u32::MAX.to_be_bytes());
        send_then_hold(w, m)
    })
    .await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "desktop name length",
                ..
            }
        ),
        "{err}"
    );

    // an endless Raw screen larger than the byte budget
    let addr = fake(|w| {
        let mut m = handshake(1024, 768);
        m.extend(update_header(1));
        m.extend(rect(0, 0, 1024, 768, 0));
        send_then_hold(w, m)
    })
    .await;
    let opts = ScreenOptions {
        max_bytes: 1 << 20,
        ..quick()
    };
    let err = vnc_screenshot(addr, &opts).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "bytes read from server",
                ..
            }
        ),
        "{err}"
    );

    // not RFB at all
    let addr = fake(|w| send_then_hold(w, b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n".to_vec())).await;
    let err = vnc_screenshot(addr, &quick()).await.unwrap_err();
    assert!(
        matches!(err, ScreenError::Protocol(ref m) if m.contains("not an RFB server")),
        "{err}"
    );
}

#[tokio::test]
async fn auth_and_refusals_are_recorded() {
    // RFB 3.3 server imposing VNC authentication
    let addr = fake(|w| {
        let mut m = b"RFB 003.003\n".to_vec();
        m.extend_from_slice(&2u32.to_be_bytes());
        m.extend_from_slice(&[0x55; 16]); // challenge, never answered
        send_then_hold(w, m)
    })
    .await;
    let cap = vnc_screenshot(addr, &quick()).await.unwrap();
    assert!(cap.auth_required && cap.screenshot.is_none());
    assert_eq!(cap.security_types, vec![2]);
    assert_eq!(cap.protocol_version.as_str(), "3.3");

    // RFB 3.7 server refusing with a reason
    let addr = fake(|w| {
        let mut m = b"RFB 003.007\n".to_vec();
        m.push(0);
        m.extend_from_slice(&(14u32).to_be_bytes());
        m.extend_from_slice(b"Too many users");
        send_then_hold(w, m)
    })
    .await;
    let cap = vnc_screenshot(addr, &quick()).await.unwrap();
    assert!(cap.auth_required);
    assert_eq!(cap.security_failure.as_deref(), Some("Too many users"));

    // RFB 3.7 with None: no SecurityResult, straight to ServerInit; a 3.3 with None likewise
    for (banner, sec) in [
        (&b"RFB 003.007\n"[..], vec![2u8, 2, 1]),
        (&b"RFB 003.003\n"[..], vec![0, 0, 0, 1]),
    ] {
        let (banner, sec) = (banner.to_vec(), sec.clone());
        let addr = fake(move |w| {
            let mut m = banner.clone();
            m.extend(&sec);
            m.extend(server_init(2, 1, b"tiny"));
            m.extend(update_header(1));
            m.extend(rect(0, 0, 2, 1, 0));
            m.extend([0, 0, 255, 0, 255, 0, 0, 0]);
            send_then_hold(w, m)
        })
        .await;
        let cap = vnc_screenshot(addr, &quick()).await.unwrap();
        assert!(!cap.auth_required);
        assert_eq!(cap.desktop_name.as_deref(), Some("tiny"));
        let shot = cap.screenshot.unwrap();
        assert_eq!((shot.width, shot.height), (2, 1));
    }
}

#[tokio::test]
async fn x11_silent_server_times_out() {
    let addr = fake(|w| send_then_hold(w, Vec::new())).await;
    let t = Instant::now();
    let opts = ScreenOptions {
        total_timeout: Duration::from_millis(800),
        ..quick()
    };
    let err = x11_screenshot(addr, &opts).await.unwrap_err();
    assert!(
        matches!(
            err,
            ScreenError::Timeout {
                phase: "x11 capture",
                ..
            }
        ),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// A fake RDP server: answers each X.224 Connection Request per `policy(requested)`.
async fn rdp_fake(policy: fn(u32) -> Vec<u8>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut req = [0u8; 19];
                if s.read_exact(&mut req).await.is_err() {
                    return;
                }
                let requested = u32::from_le_bytes(req[15..19].try_into().unwrap());
                let _ = s.write_all(&policy(requested)).await;
                let mut sink = [0u8; 64];
                let _ = s.read(&mut sink).await;
            });
        }
    });
    addr
}

fn confirm(neg: Option<(u8, u32)>) -> Vec<u8> {
    let mut tpdu = vec![6u8, 0xd0, 0, 0, 0x12, 0x34, 0];
    if let Some((t, v)) = neg {
        tpdu[0] = 14;
        tpdu.extend([t, 0x1f, 8, 0]);
        tpdu.extend(v.to_le_bytes());
    }
    let mut m = vec![3, 0];
    m.extend(((tpdu.len() + 4) as u16).to_be_bytes());
    m.extend(tpdu);
    m
}

#[tokio::test]
async fn rdp_probe_against_fake_servers() -> Result<()> {
    let opts = quick();
    // NLA required: CredSSP selected when offered, HYBRID_REQUIRED_BY_SERVER otherwise
    let addr = rdp_fake(|req| {
        if req & 2 != 0 {
            confirm(Some((2, 2)))
        } else {
            confirm(Some((3, 5)))
        }
    })
    .await;
    let info = rdp_probe(addr, &opts).await?;
    assert_eq!(info.preferred, Some(RdpProtocol::Hybrid));
    assert!(info.nla_required);
    assert_eq!(info.supported, vec![RdpProtocol::Hybrid]);
    assert_eq!(info.flags, Some(0x1f));

    // TLS without NLA (xrdp's default): TLS picked, standard RDP refused
    let addr = rdp_fake(|req| {
        if req & 1 != 0 {
            confirm(Some((2, 1)))
        } else {
            confirm(Some((3, 1)))
        }
    })
    .await;
    let info = rdp_probe(addr, &opts).await?;
    assert_eq!(info.preferred, Some(RdpProtocol::Tls));
    assert!(!info.nla_required);
    assert_eq!(info.supported, vec![RdpProtocol::Tls]);

    // legacy server: no negotiation data at all
    let addr = rdp_fake(|_| confirm(None)).await;
    let info = rdp_probe(addr, &opts).await?;
    assert_eq!(info.preferred, Some(RdpProtocol::Rdp));
    assert!(!info.nla_required);

    // not RDP
    let addr = rdp_fake(|_| b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()).await;
    assert!(matches!(
        rdp_probe(addr, &opts).await,
        Err(ScreenError::Protocol(_))
    ));

    // nothing listening
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let err = rdp_probe(SocketAddr::from(([127, 0, 0, 1], port)), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, ScreenError::Connect { .. }), "{err}");
    Ok(())
}

/// A stable-toolchain companion of the cargo-fuzz target: thousands of mutated server
/// transcripts (from the fuzz seeds) through the whole client; each must end (Ok or a typed
/// error) quickly, never panic or hang.
#[test]
fn mutated_transcripts_never_panic_or_hang() {
    use overlord_probes::screen::rfb::vnc_session;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/rfb_session");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz seeds missing at {}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 4);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // every seed, unmutated, is a valid session (Hextile and RRE seeds included)
    for seed in &seeds {
        let opts = ScreenOptions {
            settle: Duration::ZERO,
            encodings: all_encodings(),
            io_timeout: Duration::from_millis(200),
            ..Default::default()
        };
        let r = rt.block_on(vnc_session(
            tokio::io::join(&seed[1..], tokio::io::sink()),
            &opts,
        ));
        assert!(r.is_ok(), "seed {:?}: {r:?}", &seed[..16.min(seed.len())]);
    }
    let (mut ok, mut errs) = (0, 0);
    for i in 0..4000 {
        let mut d = seeds[i % seeds.len()].clone();
        for _ in 0..1 + next() % 4 {
            let pos = (next() as usize) % d.len();
            match next() % 4 {
                0 => d[pos] = next() as u8,
                1 => d[pos] ^= 1 << (next() % 8),
                2 => d.insert(pos, next() as u8),
                _ => {
                    d.truncate(pos.max(1));
                }
            }
        }
        let (knobs, server) = d.split_first().unwrap();
        let opts = ScreenOptions {
            max_pixels: 1 << 16,
            max_bytes: 1 << 20,
            max_decompressed_bytes: 4 << 20,
            pixel_format: if knobs & 1 == 0 {
                Some(PixelFormat::RGB888)
            } else {
                None
            },
            io_timeout: Duration::from_millis(50),
            total_timeout: Duration::from_millis(200),
            settle: Duration::ZERO,
            encodings: all_encodings(),
            ..Default::default()
        };
        let t = Instant::now();
        let r = rt.block_on(vnc_session(
            tokio::io::join(server, tokio::io::sink()),
            &opts,
        ));
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "input {i} took {:?}",
            t.elapsed()
        );
        if r.is_ok() { ok += 1 } else { errs += 1 }
    }
    // the seeds themselves decode; most mutations fail with typed errors
    assert!(ok > 0 && errs > 0, "ok {ok} errors {errs}");
}

/// Serves `body` (one FramebufferUpdate after the handshake of a `w`x`h` screen) and returns
/// the client's error, checking it came within the caps on time.
async fn rfb_error(w: u16, h: u16, body: Vec<u8>, encodings: Vec<Encoding>) -> ScreenError {
    let addr = fake(move |wr| {
        let mut m = handshake(w, h);
        m.extend(body.clone());
        send_then_hold(wr, m)
    })
    .await;
    let t = Instant::now();
    let opts = ScreenOptions {
        encodings,
        ..quick()
    };
    let err = vnc_screenshot(addr, &opts).await.unwrap_err();
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "{:?}: {err}",
        t.elapsed()
    );
    err
}

fn px(v: u32) -> [u8; 4] {
    v.to_le_bytes()
}

#[tokio::test]
async fn hostile_rre() {
    let rre = || vec![Encoding::Rre];
    // 4 billion subrectangles announced: refused before reading any
    let mut m = update_header(1);
    m.extend(rect(0, 0, 64, 64, 2));
    m.extend(u32::MAX.to_be_bytes());
    m.extend(px(0));
    let err = rfb_error(64, 64, m, rre()).await;
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "RRE subrectangle count",
                value: 4294967295,
                limit: 4096
            }
        ),
        "{err}"
    );
    // a subrectangle reaching outside its rectangle
    let mut m = update_header(1);
    m.extend(rect(0, 0, 64, 64, 2));
    m.extend(1u32.to_be_bytes());
    m.extend(px(0));
    m.extend(px(0xff));
    for v in [60u16, 0, 8, 8] {
        m.extend(v.to_be_bytes());
    }
    let err = rfb_error(64, 64, m, rre()).await;
    assert!(
        err.to_string()
            .contains("RRE subrectangle 8x8+60+0 lies outside its 64x64 rectangle"),
        "{err}"
    );
    // 4096 full-size subrectangles: 16.7 M pixel writes for a 4096-pixel rectangle
    let mut m = update_header(1);
    m.extend(rect(0, 0, 64, 64, 2));
    m.extend(4096u32.to_be_bytes());
    m.extend(px(0));
    for _ in 0..4096 {
        m.extend(px(0xff));
        for v in [0u16, 0, 64, 64] {
            m.extend(v.to_be_bytes());
        }
    }
    let err = rfb_error(64, 64, m, rre()).await;
    assert!(
        matches!(
            err,
            ScreenError::Limit {
                what: "RRE subrectangle pixels for one rectangle",
                limit: 81920,
                ..
            }
        ),
        "{err}"
    );
    // truncated: stops after the background
    let mut m = update_header(1);
    m.extend(rect(0, 0, 64, 64, 2));
    m.extend(3u32.to_be_bytes());
    m.extend(px(0));
    let err = rfb_error(64, 64, m, rre()).await;
    assert!(
        matches!(
            err,
            ScreenError::Timeout {
                phase: "framebuffer update",
                ..
            }
        ),
        "{err}"
    );
    // RRE sent although only Hextile was offered
    let mut m = update_header(1);
    m.extend(rect(0, 0, 64, 64, 2));
    let err = rfb_error(64, 64, m, vec![Encoding::Hextile]).await;
    assert!(matches!(err, ScreenError::UnsupportedEncoding(2)), "{err}");
}

#[tokio::test]
async fn hostile_hextile() {
    let hx = || vec![Encoding::Hextile];
    let tile_rect = |w, h| {
        let mut m = update_header(1);
        m.extend(rect(0, 0, w, h, 5));
        m
    };
    // first non-raw tile without a background
    let mut m = tile_rect(32, 16);
    m.push(8); // AnySubrects only
    let err = rfb_error(32, 16, m, hx()).await;
    assert!(err.to_string().contains("has no background"), "{err}");
    // undefined subencoding bits
    let mut m = tile_rect(32, 16);
    m.push(0x40);
    let err = rfb_error(32, 16, m, hx()).await;
    assert!(
        err.to_string().contains("undefined subencoding bits 0x40"),
        "{err}"
    );
    // subrectangle outside a 16x16 tile of a 20x16 rectangle's last (4-wide) tile
    let mut m = tile_rect(20, 16);
    m.push(2);
    m.extend(px(0));
    m.extend([2 | 8 | 4]);
    m.extend(px(0));
    m.extend(px(0xffffff));
    m.extend([1, 0x20, 0x20]); // at (2, 0), 3x1 in a 4-wide tile
    let err = rfb_error(20, 16, m, hx()).await;
    assert!(
        err.to_string()
            .contains("Hextile subrectangle 3x1+2+0 lies outside its 4x16 tile"),
        "{err}"
    );
    // subrectangles in the foreground colour, which was never given
    let mut m = tile_rect(16, 16);
    m.push(2 | 8);
    m.extend(px(0));
    m.extend([1, 0x00, 0x00]);
    let err = rfb_error(16, 16, m, hx()).await;
    assert!(err.to_string().contains("without a foreground"), "{err}");
    // the largest legal tiles (255 coloured 16x16 subrectangles each) over a 1024x768 screen
    // are bounded work: a 3072-tile rectangle costs ~200 M pixel writes at most; here the
    // server stops after 10 tiles and the client times out, not hangs or grows.
    let mut m = tile_rect(1024, 768);
    for _ in 0..10 {
        m.push(2 | 8 | 16);
        m.extend(px(0));
        m.push(255);
        for _ in 0..255 {
            m.extend(px(0x123456));
            m.extend([0x00, 0xff]);
        }
    }
    let err = rfb_error(1024, 768, m, hx()).await;
    assert!(
        matches!(
            err,
            ScreenError::Timeout {
                phase: "framebuffer update",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn hextile_and_rre_decode_a_scripted_screen() {
    // A 20x18 screen: one Hextile rectangle (raw tile, background + foreground subrects,
    // coloured subrects, background kept from the previous tile) and one RRE rectangle.
    let addr = fake(|w| {
        let mut m = handshake(20, 18);
        m.extend(update_header(2));
        m.extend(rect(0, 0, 20, 16, 5));
        // tile 1 (16x16): background blue, foreground red, one 2x3 subrect at (1, 2)
        m.push(2 | 4 | 8);
        m.extend(px(0x0000ff));
        m.extend(px(0xff0000));
        m.extend([1, 0x12, 0x12]);
        // tile 2 (4x16): raw, all green
        m.push(1);
        for _ in 0..4 * 16 {
            m.extend(px(0x00ff00));
        }
        m.extend(rect(0, 16, 20, 2, 2));
        m.extend(1u32.to_be_bytes());
        m.extend(px(0xffffff));
        m.extend(px(0x000000));
        for v in [19u16, 1, 1, 1] {
            m.extend(v.to_be_bytes());
        }
        send_then_hold(w, m)
    })
    .await;
    let opts = ScreenOptions {
        encodings: vec![Encoding::Hextile, Encoding::Rre],
        ..quick()
    };
    let cap = vnc_screenshot(addr, &opts).await.unwrap();
    let png = cap.screenshot.unwrap().png;
    let dec = png::Decoder::new(std::io::Cursor::new(png));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    r.next_frame(&mut buf).unwrap();
    let at = |x: usize, y: usize| -> [u8; 3] {
        let o = (y * 20 + x) * 3;
        [buf[o], buf[o + 1], buf[o + 2]]
    };
    // RGB888 little-endian pixel 0xRRGGBB
    assert_eq!(at(0, 0), [0, 0, 255]);
    assert_eq!(at(1, 2), [255, 0, 0]);
    assert_eq!(at(2, 4), [255, 0, 0]);
    assert_eq!(at(3, 4), [0, 0, 255]);
    assert_eq!(at(1, 5), [0, 0, 255]);
    assert_eq!(at(16, 0), [0, 255, 0]);
    assert_eq!(at(19, 15), [0, 255, 0]);
    assert_eq!(at(0, 16), [255, 255, 255]);
    assert_eq!(at(19, 17), [0, 0, 0]);
    assert_eq!(at(18, 17), [255, 255, 255]);
    assert_eq!(cap.encodings_used, vec!["Hextile", "RRE"]);
}

fn all_encodings() -> Vec<Encoding> {
    vec![
        Encoding::Zrle,
        Encoding::Tight,
        Encoding::Hextile,
        Encoding::Rre,
        Encoding::CopyRect,
        Encoding::Raw,
    ]
}

#[tokio::test]
async fn endless_changes_while_settling_are_bounded() {
    // A "LibVNCServer" (ServerIdentity answered) that never stops changing: the settle phase
    // ends at settle_max with the capture kept, not at the total deadline.
    let addr = fake(|mut w| async move {
        let mut m = handshake(64, 64);
        m.extend(update_header(2));
        let id = b"unknown (LibVNCServer 0.9.14)\0";
        m.extend(rect(0, 0, id.len() as u16, 0, 0xFFFE_0003_u32 as i32));
        m.extend_from_slice(id);
        m.extend(rect(0, 0, 64, 64, 0));
        m.extend(vec![9u8; 64 * 64 * 4]);
        if w.write_all(&m).await.is_err() {
            return;
        }
        for i in 0u32.. {
            let mut u = update_header(1);
            u.extend(rect(8, 8, 8, 8, 0));
            u.extend(vec![i as u8; 8 * 8 * 4]);
            if w.write_all(&u).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let opts = ScreenOptions {
        settle: Duration::from_millis(200),
        settle_max: Duration::from_millis(300),
        ..quick()
    };
    let t = Instant::now();
    let cap = vnc_screenshot(addr, &opts).await.unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(cap.settled);
    assert_eq!(
        cap.server_identity.as_deref(),
        Some("unknown (LibVNCServer 0.9.14)")
    );
    assert!(cap.settle_updates >= 3, "{}", cap.settle_updates);
    assert!(
        cap.timings.settle_ms >= 290.0 && cap.timings.settle_ms < 600.0,
        "{}",
        cap.timings.settle_ms
    );
}
