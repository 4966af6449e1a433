//! Throughput bench: generate (or reuse) a multi-million-line conn.log, read + score it on one
//! core, and run the Python RITA-style peer (`benches/rita_peer.py`) on the same file.
//!
//! ```text
//! cargo run --release -p overlord-analytics --example bench -- [--dir D] [--hosts N] [--browsing X] [--no-peer]
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use overlord_analytics::{BeaconConfig, GenConfig, generate, score_logs, zeek};

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
    let dir: PathBuf = get("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("overlord-beacon-bench"));
    let hosts: usize = get("--hosts").map(|s| s.parse()).transpose()?.unwrap_or(400);
    let browsing: f64 = get("--browsing").map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let no_peer = args.iter().any(|a| a == "--no-peer");
    let conn = dir.join("conn.log");
    if !conn.exists() {
        let cfg = GenConfig {
            hosts,
            browsing,
            ..GenConfig::default()
        };
        let t = Instant::now();
        let s = generate(99, &cfg, &dir)?;
        eprintln!(
            "generated {} lines into {} in {:.1}s",
            s.conn_lines,
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&conn)
        .with_context(|| conn.display().to_string())?
        .len();

    // Warm the page cache so both tools read from memory.
    let _ = std::fs::read(&conn)?;

    let t = Instant::now();
    let mut n = 0u64;
    let stats = zeek::read_path(&conn, &mut |_r| n += 1)?;
    let read_s = t.elapsed().as_secs_f64();

    let cfg = BeaconConfig::default();
    let t = Instant::now();
    let report = score_logs(std::slice::from_ref(&conn), &cfg)?;
    let score_s = t.elapsed().as_secs_f64();
    let lines = report.lines as f64;
    println!(
        "file: {} ({:.1} MB, {} lines, {} bad)",
        conn.display(),
        bytes as f64 / 1e6,
        stats.lines,
        stats.bad_lines
    );
    println!(
        "overlord parse only        : {:>9.2}s  {:>12.0} lines/s  ({:.0} MB/s)",
        read_s,
        stats.lines as f64 / read_s,
        bytes as f64 / 1e6 / read_s
    );
    println!(
        "overlord read+score (1 core): {:>9.2}s  {:>12.0} lines/s  ({} keys, {} scored, {} beacons)",
        score_s,
        lines / score_s,
        report.keys,
        report.scored,
        report.beacons().count()
    );
    if !no_peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/rita_peer.py");
        let t = Instant::now();
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(&conn)
            .output()
            .context("running python3 (Debian package python3)")?;
        let peer_s = t.elapsed().as_secs_f64();
        if !out.status.success() {
            anyhow::bail!("peer failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let peer_lps = v["lines_per_sec"].as_f64().unwrap_or(0.0);
        println!(
            "python RITA-style peer      : {:>9.2}s  {:>12.0} lines/s  ({} pairs scored)",
            peer_s, peer_lps, v["scored"]
        );
        println!(
            "ratio overlord/peer (read+score): {:.1}x",
            (lines / score_s) / peer_lps.max(1.0)
        );
    }
    Ok(())
}
