//! Screenshots per second of a 1024x768 screen over loopback: our RFB client against
//! `vncsnapshot` (and vncdotool's `capture` when installed) on the same servers in the same run.
//!
//! cargo run --release -p overlord-probes --example screen_bench -- [--count N] [--size WxH]
//!
//! Starts its own Xvfb + x11vnc and TigerVNC Xvnc on free loopback ports, paints a many-coloured
//! pattern and an xterm, then times sequential captures (connect, handshake, full frame, PNG
//! encode + sha256 for us; process start, capture, JPEG/PNG file for the peers).

#[path = "../tests/screen/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use overlord_probes::screen::{Encoding, ScreenOptions, SettlePolicy, vnc_screenshot};

struct Args {
    count: usize,
    w: u32,
    h: u32,
}

fn args() -> Result<Args> {
    let mut a = Args {
        count: 30,
        w: 1024,
        h: 768,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--count" => a.count = it.next().unwrap_or_default().parse()?,
            "--size" => {
                let v = it.next().unwrap_or_default();
                let (w, h) = v
                    .split_once('x')
                    .ok_or_else(|| anyhow::anyhow!("--size WxH"))?;
                (a.w, a.h) = (w.parse()?, h.parse()?);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(a)
}

/// Sequential captures: (shots/s, p50 latency ms, PNG bytes, p50 handshake / first frame /
/// settle ms, captures that settled).
async fn ours(port: u16, count: usize, opts: &ScreenOptions) -> Result<Stats> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut bytes = 0;
    let (mut lat, mut hs, mut ff, mut st) = (vec![], vec![], vec![], vec![]);
    let mut settled = 0;
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        let cap = vnc_screenshot(addr, opts).await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        hs.push(cap.timings.connect_ms + cap.timings.handshake_ms);
        ff.push(cap.timings.first_frame_ms);
        st.push(cap.timings.frames_ms - cap.timings.first_frame_ms);
        settled += usize::from(cap.settled);
        bytes = cap.screenshot.map(|s| s.png.len()).unwrap_or(0);
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    Ok(Stats {
        rate,
        p50: p50(lat),
        png: bytes,
        handshake: p50(hs),
        first_frame: p50(ff),
        settle: p50(st),
        settled,
    })
}

struct Stats {
    rate: f64,
    p50: f64,
    png: usize,
    handshake: f64,
    first_frame: f64,
    settle: f64,
    settled: usize,
}

fn p50(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs a peer tool `count` times; `None` when it is missing, fails or hangs (> 15 s).
fn peer(
    label: &str,
    count: usize,
    mut cmd: impl FnMut(&std::path::Path) -> Command,
) -> Result<Option<f64>> {
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    for i in 0..count {
        let out = dir.path().join(format!("shot{i}"));
        let mut child = match cmd(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                println!("  {label}: not runnable ({e})");
                return Ok(None);
            }
        };
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break Some(st);
            }
            if t.elapsed() > Duration::from_secs(15) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        match status {
            Some(st) if st.success() => {}
            Some(st) => {
                println!("  {label}: failed on capture {i} ({st})");
                return Ok(None);
            }
            None => {
                println!("  {label}: capture {i} hung for 15 s, killed");
                return Ok(None);
            }
        }
    }
    Ok(Some(count as f64 / start.elapsed().as_secs_f64()))
}

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

async fn bench_server(name: &str, port: u16, a: &Args) -> Result<()> {
    println!(
        "== {name}, {}x{}, {} sequential captures each",
        a.w, a.h, a.count
    );
    // warm up (x11vnc starts polling once a client has connected)
    vnc_screenshot(
        SocketAddr::from(([127, 0, 0, 1], port)),
        &ScreenOptions::default(),
    )
    .await?;
    let no_settle = |encodings: Vec<Encoding>| ScreenOptions {
        settle_policy: SettlePolicy::Never,
        encodings,
        ..Default::default()
    };
    let variants: Vec<(&str, ScreenOptions)> = vec![
        (
            "overlord default (ZRLE, settle if polling)",
            ScreenOptions::default(),
        ),
        (
            "overlord Hextile, settle if polling",
            ScreenOptions {
                encodings: vec![Encoding::Hextile],
                ..Default::default()
            },
        ),
        ("overlord ZRLE, no settle", no_settle(vec![Encoding::Zrle])),
        (
            "overlord Tight, no settle",
            no_settle(vec![Encoding::Tight]),
        ),
        (
            "overlord Hextile, no settle",
            no_settle(vec![Encoding::Hextile]),
        ),
        ("overlord Raw, no settle", no_settle(vec![Encoding::Raw])),
    ];
    let mut best_ours = 0f64;
    let mut hextile_settled = 0f64;
    for (label, opts) in &variants {
        let s = ours(port, a.count, opts).await?;
        println!(
            "  {label:<44} {:7.2} shots/s  p50 {:6.1} ms (handshake {:5.1}, first frame {:5.1}, \
             settle {:5.1}; settled {}/{})  png {} B",
            s.rate, s.p50, s.handshake, s.first_frame, s.settle, s.settled, a.count, s.png
        );
        if label.contains("no settle") {
            best_ours = best_ours.max(s.rate);
        }
        if label.starts_with("overlord Hextile, settle") {
            hextile_settled = s.rate;
        }
    }
    // again, right before the peers (load on this shared machine varies)
    let default_rate = ours(port, a.count, &variants[0].1).await?.rate;
    println!(
        "  {:<44} {default_rate:7.2} shots/s",
        "overlord default (again)"
    );
    // the settle wait overlaps when captures run concurrently (as in a minion)
    let conc = 8;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.count {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        tasks.push(tokio::spawn(async move {
            vnc_screenshot(addr, &ScreenOptions::default()).await
        }));
        if tasks.len() == conc {
            for t in tasks.drain(..) {
                t.await??;
            }
        }
    }
    for t in tasks {
        t.await??;
    }
    let conc_rate = a.count as f64 / start.elapsed().as_secs_f64();
    println!(
        "  {:<42} {conc_rate:7.2} shots/s",
        format!("overlord default, batches of {conc} concurrent")
    );
    if have("vncsnapshot") {
        if let Some(r) = peer("vncsnapshot", a.count, |out| {
            let mut c = Command::new("vncsnapshot");
            c.args([
                "-quiet",
                "-nocursor",
                "-nojpeg",
                "-encodings",
                "zrle tight copyrect raw",
            ])
            .arg(format!("127.0.0.1::{port}"))
            .arg(out.with_extension("jpg"));
            c
        })? {
            println!(
                "  {:<42} {r:7.2} shots/s",
                "vncsnapshot (process per shot, JPEG file)"
            );
            println!(
                "  ratio overlord/vncsnapshot: {:.2}x (best no-settle), {:.2}x (default), {:.2}x (Hextile, settle if polling), {:.2}x (default, {conc} concurrent)",
                best_ours / r,
                default_rate / r,
                hextile_settled / r,
                conc_rate / r
            );
        }
    } else {
        println!("  vncsnapshot not installed (Debian package vncsnapshot)");
    }
    if have("vncdo") {
        if let Some(r) = peer("vncdotool", a.count, |out| {
            let mut c = Command::new("vncdo");
            c.args(["-s", &format!("127.0.0.1::{port}"), "capture"])
                .arg(out.with_extension("png"));
            c
        })? {
            println!(
                "  {:<42} {r:7.2} shots/s",
                "vncdotool capture (process per shot, PNG)"
            );
            println!(
                "  ratio overlord/vncdotool: {:.2}x (best no-settle), {:.2}x (default), {:.2}x (default, {conc} concurrent)",
                best_ours / r,
                default_rate / r,
                conc_rate / r
            );
        }
    } else {
        println!("  vncdotool not installed (pip install vncdotool)");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = args()?;
    {
        let x = harness::xvfb(a.w, a.h, false)?;
        harness::paint_pattern(&x, 7)?;
        let _term = harness::xterm(&x, "OVERLORD BENCH")?;
        let (_vnc, port) = harness::x11vnc(&x)?;
        bench_server("x11vnc on Xvfb", port, &a).await?;
    }
    {
        let x = harness::xvnc(a.w, a.h, "None")?;
        harness::paint_pattern(&x, 7)?;
        let _term = harness::xterm(&x, "OVERLORD BENCH")?;
        bench_server("TigerVNC Xvnc", x.rfb_port.unwrap(), &a).await?;
    }
    Ok(())
}
