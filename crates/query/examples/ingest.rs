//! Ingest-only timing of the query index over the bench corpus:
//! `cargo run --release --example ingest -- N [PER_JOB [update]]`. With `update`, every finding
//! is folded a second time after the first pass is committed (a later cursor, the same rows):
//! each then loads its committed row and deletes its old version, and the pass's CPU per
//! finding is printed apart.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use overlord_query::corpus::Corpus;
use overlord_query::index::QueryIndex;
use std::time::{Duration, Instant};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let per_job: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let idx = QueryIndex::open_or_rebuild(&dir.path().join("q")).unwrap();
    let c = Corpus {
        seed: 7,
        n,
        per_job,
        start_ms: 1_700_000_000_000,
    };
    let mut spent = Duration::ZERO;
    let mut i = 0;
    while i < n {
        let b: Vec<_> = (i..(i + 10_000).min(n)).map(|k| c.finding(k)).collect();
        let t = Instant::now();
        idx.add(&b).unwrap();
        idx.maybe_commit().unwrap();
        spent += t.elapsed();
        i += 10_000;
    }
    let t = Instant::now();
    idx.commit().unwrap();
    spent += t.elapsed();
    if std::env::args().nth(3).as_deref() == Some("update") {
        let cpu0 = process_cpu_s();
        let t = Instant::now();
        let mut i = 0;
        while i < n {
            let b: Vec<_> = (i..(i + 10_000).min(n))
                .map(|k| {
                    let (mut p, o) = c.finding(k);
                    p.cursor += n;
                    (p, o)
                })
                .collect();
            idx.add(&b).unwrap();
            idx.maybe_commit().unwrap();
            i += 10_000;
        }
        idx.commit().unwrap();
        println!(
            "update pass: {n} findings into committed rows in {:.2}s, {:.1} us/finding of process CPU (merges still running included as far as they ran); rows {}",
            t.elapsed().as_secs_f64(),
            (process_cpu_s() - cpu0) * 1e6 / n as f64,
            idx.num_rows()
        );
    }
    let (rows, segs) = (idx.num_rows(), idx.searcher().segment_readers().len());
    let t_close = Instant::now();
    idx.close().unwrap();
    let merge_wait = t_close.elapsed();
    let mut threads = std::collections::BTreeMap::<String, f64>::new();
    for t in std::fs::read_dir("/proc/self/task").unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string();
        let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
        let rest = &stat[stat.rfind(')').map(|i| i + 2).unwrap_or(0)..];
        let f: Vec<&str> = rest.split(' ').collect();
        let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
            + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
        *threads.entry(comm).or_default() += ticks / 100.0;
    }
    println!("live threads cpu s: {threads:?}");
    let cpu = process_cpu_s();
    println!(
        "process cpu {cpu:.1}s = {:.1} us/finding",
        cpu * 1e6 / n as f64
    );
    println!(
        "{n} findings in {:.2}s = {:.0}/s, rows {rows}, segments {segs}; merges finished {:.1}s after",
        spent.as_secs_f64(),
        n as f64 / spent.as_secs_f64(),
        merge_wait.as_secs_f64(),
    );
}

fn process_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
