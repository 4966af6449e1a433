//! Throughput bench (see `overlord_analytics::bench`): read + score a multi-million-line
//! conn.log on one core beside the Python RITA-style peer. `overlord bench beacons` runs the same.
//!
//! ```text
//! cargo run --release -p overlord-analytics --example bench -- [--dir D] [--hosts N] [--browsing X] [--no-peer]
//! ```

use anyhow::Result;
use overlord_analytics::bench::{BenchOptions, run};

fn main() -> Result<()> {
    // One core: candle's matrix kernels follow RAYON_NUM_THREADS.
    // SAFETY: single-threaded at this point, before any other thread exists.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut get = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args.get(i + 1).cloned();
        args.drain(i..(i + 2).min(args.len()));
        v
    };
    let mut o = BenchOptions::default();
    if let Some(d) = get("--dir") {
        o.dir = d.into();
    }
    if let Some(h) = get("--hosts") {
        o.hosts = h.parse()?;
    }
    if let Some(b) = get("--browsing") {
        o.browsing = b.parse()?;
    }
    o.peer = !args.iter().any(|a| a == "--no-peer");
    print!("{}", run(&o)?);
    Ok(())
}
