//! Throughput benchmark (`overlord bench beacons`, `--example bench`): generate (or reuse) a
//! multi-million-line conn.log, read + score it on one thread, then run the Python RITA-style
//! peer (`benches/rita_peer.py`) on the same file in the same run, and print both with the ratio
//! and this process's peak RSS.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use crate::{AnalyticsError, BeaconConfig, GenConfig, generate, score_logs, zeek};

/// Options of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dir: PathBuf,
    pub hosts: usize,
    pub browsing: f64,
    pub peer: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            dir: std::env::temp_dir().join("overlord-beacon-bench"),
            hosts: 400,
            browsing: 1.0,
            peer: true,
        }
    }
}

/// User + system CPU seconds of this process (Linux /proc; clock ticks assumed 100 Hz).
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Peak resident set size of this process in MB (VmHWM).
pub fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn err(m: String) -> AnalyticsError {
    AnalyticsError::Config(m)
}

/// Run the benchmark; returns the printed report.
pub fn run(o: &BenchOptions) -> Result<String, AnalyticsError> {
    let mut out = String::new();
    let conn = o.dir.join("conn.log");
    if !conn.exists() {
        let cfg = GenConfig {
            hosts: o.hosts,
            browsing: o.browsing,
            dns: false,
            ..GenConfig::default()
        };
        let t = Instant::now();
        let s = generate(99, &cfg, &o.dir)?;
        let _ = writeln!(
            out,
            "generated {} lines into {} in {:.1}s",
            s.conn_lines,
            o.dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&conn)
        .map_err(|e| AnalyticsError::io(&conn, e))?
        .len();
    let rss0 = peak_rss_mb();
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
    let _ = writeln!(
        out,
        "file: {} ({:.1} MB, {} lines, {} bad)",
        conn.display(),
        bytes as f64 / 1e6,
        stats.lines,
        stats.bad_lines
    );
    let _ = writeln!(
        out,
        "{:<32} {:>8} {:>14} {:>8} {:>14}",
        "", "wall s", "lines/s wall", "CPU s", "lines/s CPU"
    );
    let _ = writeln!(
        out,
        "{:<32} {:>8.2} {:>14.0} {:>8.2} {:>14.0}   ({:.0} MB/s wall)",
        "overlord parse only",
        read_s,
        stats.lines as f64 / read_s,
        read_cpu,
        stats.lines as f64 / read_cpu.max(0.01),
        bytes as f64 / 1e6 / read_s
    );
    let _ = writeln!(
        out,
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
    let _ = writeln!(
        out,
        "peak RSS {:.0} MB (before reading {:.0} MB)",
        peak_rss_mb(),
        rss0
    );
    if o.peer {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/rita_peer.py");
        let t = Instant::now();
        let res = std::process::Command::new("python3")
            .arg(&script)
            .arg(&conn)
            .output()
            .map_err(|e| err(format!("running python3 (Debian package python3): {e}")))?;
        let peer_s = t.elapsed().as_secs_f64();
        if !res.status.success() {
            return Err(err(format!(
                "peer failed: {}",
                String::from_utf8_lossy(&res.stderr)
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&res.stdout).map_err(|e| err(format!("peer output: {e}")))?;
        let peer_lines = v["lines"].as_f64().unwrap_or(0.0);
        let peer_cpu = v["cpu_seconds"].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "{:<32} {:>8.2} {:>14.0} {:>8.2} {:>14.0}   ({} pairs scored)",
            "python RITA-style peer",
            peer_s,
            peer_lines / peer_s,
            peer_cpu,
            peer_lines / peer_cpu,
            v["scored"]
        );
        let _ = writeln!(
            out,
            "ratio overlord/peer, read+score: {:.1}x wall, {:.1}x CPU",
            (lines / score_s) / (peer_lines / peer_s).max(1.0),
            (lines / score_cpu.max(0.01)) / (peer_lines / peer_cpu).max(1.0)
        );
    }
    Ok(out)
}
