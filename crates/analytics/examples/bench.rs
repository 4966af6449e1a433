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

/// User + system CPU seconds of this process (Linux /proc; clock ticks assumed 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // fields after the command name: state is index 0, utime 11, stime 12
    (tick(11) + tick(12)) / 100.0
}

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
    let hosts: usize = get("--hosts")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(400);
    let browsing: f64 = get("--browsing")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1.0);
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
    let c0 = cpu_seconds();
    let mut n = 0u64;
    let stats = zeek::read_path(&conn, &mut |_r| n += 1)?;
    let read_s = t.elapsed().as_secs_f64();
    let read_cpu = cpu_seconds() - c0;

    let cfg = BeaconConfig::default();
    let t = Instant::now();
    let c0 = cpu_seconds();
    let report = score_logs(std::slice::from_ref(&conn), &cfg)?;
    let score_s = t.elapsed().as_secs_f64();
    let score_cpu = cpu_seconds() - c0;
    let lines = report.lines as f64;
    println!(
        "file: {} ({:.1} MB, {} lines, {} bad)",
        conn.display(),
        bytes as f64 / 1e6,
        stats.lines,
        stats.bad_lines
    );
    println!(
        "{:<32} {:>8} {:>14} {:>8} {:>14}",
        "", "wall s", "lines/s wall", "CPU s", "lines/s CPU"
    );
    println!(
        "{:<32} {:>8.2} {:>14.0} {:>8.2} {:>14.0}   ({:.0} MB/s wall)",
        "overlord parse only",
        read_s,
        stats.lines as f64 / read_s,
        read_cpu,
        stats.lines as f64 / read_cpu.max(0.01),
        bytes as f64 / 1e6 / read_s
    );
    println!(
        "{:<32} {:>8.2} {:>14.0} {:>8.2} {:>14.0}   ({} keys, {} scored, {} beacons)",
        "overlord read+score (1 thread)",
        score_s,
        lines / score_s,
        score_cpu,
        lines / score_cpu.max(0.01),
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
        let peer_lines = v["lines"].as_f64().unwrap_or(0.0);
        let peer_cpu = v["cpu_seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<32} {:>8.2} {:>14.0} {:>8.2} {:>14.0}   ({} pairs scored)",
            "python RITA-style peer",
            peer_s,
            peer_lines / peer_s,
            peer_cpu,
            peer_lines / peer_cpu,
            v["scored"]
        );
        println!(
            "ratio overlord/peer, read+score: {:.1}x wall, {:.1}x CPU",
            (lines / score_s) / (peer_lines / peer_s).max(1.0),
            (lines / score_cpu.max(0.01)) / (peer_lines / peer_cpu).max(1.0)
        );
    }
    Ok(())
}
