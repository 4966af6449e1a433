//! How stale is x11vnc's first frame, and when do the late updates arrive?
//!
//! cargo run --release -p overlord-probes --example x11vnc_staleness -- [--rounds N]
//!
//! Starts Xvfb + x11vnc (as the tests do), connects once so x11vnc has an old copy, then for
//! each kind of change (the whole screen, a band of 8 rows, a single row) changes the screen
//! while no client is connected and captures with a long settle window (3 s quiet), printing
//! when each incremental update arrived; and whether the first frame alone (even rounds) or
//! the default settle rule (odd rounds) was stale.

#[path = "../tests/screen/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use harness::XServer;
use overlord_probes::screen::{ScreenOptions, SettlePolicy, vnc_screenshot};

/// Draws a filled rectangle of colour `rgb` on the root window.
fn draw(x: &XServer, rx: i16, ry: i16, w: u16, h: u16, rgb: u32) -> Result<()> {
    use x11rb::connection::Connection;
    use x11rb::protocol::xproto::{self, ConnectionExt as _};
    use x11rb::wrapper::ConnectionExt as _;
    let (conn, n) = x11rb::connect(Some(&x.name()))?;
    let root = conn.setup().roots[n].root;
    let gc = conn.generate_id()?;
    conn.create_gc(gc, root, &xproto::CreateGCAux::new().foreground(rgb))?;
    conn.poly_fill_rectangle(
        root,
        gc,
        &[xproto::Rectangle {
            x: rx,
            y: ry,
            width: w,
            height: h,
        }],
    )?;
    conn.sync()?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut rounds = 3u32;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--rounds" {
            rounds = it.next().unwrap_or_default().parse()?;
        }
    }
    let x = harness::xvfb(1024, 768, false)?;
    harness::paint_pattern(&x, 7)?;
    let (_vnc, port) = harness::x11vnc(&x)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let never = ScreenOptions {
        settle_policy: SettlePolicy::Never,
        ..Default::default()
    };
    let default = ScreenOptions::default();
    let long = ScreenOptions {
        settle_policy: SettlePolicy::Always,
        settle_passes: 64,
        settle: Duration::from_secs(3),
        settle_max: Duration::from_secs(6),
        ..Default::default()
    };
    vnc_screenshot(addr, &never).await?;
    for round in 0..rounds {
        for (kind, change) in [("whole screen", 0u32), ("8-row band", 8), ("1 row", 1)] {
            // the change happens while no client is connected
            tokio::time::sleep(Duration::from_millis(300)).await;
            let colour = 0x10_20_30 * (round + 1) + change;
            let y = 100 + 37 * round as i16;
            if change == 0 {
                harness::paint_pattern(&x, 9 + round * 2)?;
            } else {
                draw(&x, 200, y, 600, change as u16, colour)?;
            }
            let (w, _, want) = harness::xwd_rgb(&x)?;
            let first =
                vnc_screenshot(addr, if round % 2 == 0 { &never } else { &default }).await?;
            let (_, _, got) = harness::png_rgb(&first.screenshot.unwrap().png)?;
            let stale_first = harness::diff(&got, &want, w).0;
            // change it again (same kind) and capture with the long window
            tokio::time::sleep(Duration::from_millis(300)).await;
            if change == 0 {
                harness::paint_pattern(&x, 10 + round * 2)?;
            } else {
                draw(&x, 200, y + 300, 600, change as u16, colour ^ 0xffffff)?;
            }
            let (w, _, want) = harness::xwd_rgb(&x)?;
            let cap = vnc_screenshot(addr, &long).await?;
            let (_, _, got) = harness::png_rgb(&cap.screenshot.unwrap().png)?;
            let stale_settled = harness::diff(&got, &want, w).0;
            let log: Vec<String> = cap
                .settle_log
                .iter()
                .map(|u| format!("{:.0}ms/{}px", u.at_ms, u.pixels))
                .collect();
            println!(
                "round {round} {kind:<13} {}: {stale_first:>6} px stale (first frame {:.0} ms, {} rounds) | \
                 64 quiet rounds: {stale_settled} px stale, first frame {:.0} ms, updates [{}] identity {:?}",
                if round % 2 == 0 {
                    "first frame only"
                } else {
                    "default rule"
                },
                first.timings.first_frame_ms,
                first.settle_rounds,
                cap.timings.first_frame_ms,
                log.join(", "),
                cap.server_identity
            );
        }
    }
    Ok(())
}
