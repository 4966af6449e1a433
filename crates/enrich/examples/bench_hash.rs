//! Hashing throughput from raw pixels, beside Python imagehash pHash on the same pixels.
//! `cargo run --release -p overlord-enrich --example bench_hash`
use overlord_enrich::{DecodeCaps, decode, metrics, phashes};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{loadavg, thread_cpu};

const PY: &str = r#"
import sys, time
from PIL import Image
import imagehash
imgs = [Image.open(p).convert('RGB') for p in sys.argv[1:]]
for im in imgs: im.load()
n = 0; t = time.perf_counter(); c = time.thread_time()
while time.perf_counter() - t < 3.0:
    for im in imgs:
        imagehash.phash(im); n += 1
print(n / (time.thread_time() - c), n / (time.perf_counter() - t))
"#;

fn main() -> anyhow::Result<()> {
    let dir = metrics::fixtures_dir().map_err(anyhow::Error::msg)?.join("screens");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "png"));
    files.sort();
    let imgs: Vec<_> = files.iter().map(|p| decode(&std::fs::read(p).unwrap(), &DecodeCaps::default()).unwrap()).collect();
    // warm up, then time for ~3 s on one thread
    let mut sink = 0u64;
    for im in &imgs {
        sink ^= phashes(im).phash64;
    }
    let t = Instant::now();
    let c = thread_cpu();
    let mut n = 0u64;
    while t.elapsed().as_secs_f64() < 3.0 {
        for im in &imgs {
            sink = sink.wrapping_add(phashes(im).phash64);
            n += 1;
        }
    }
    let ours = n as f64 / (thread_cpu() - c);
    let ours_wall = n as f64 / t.elapsed().as_secs_f64();
    println!("load average {}", loadavg());
    println!("overlord phash64+phash256 from raw RGB ({} screens, 1024x768, 1 thread): {ours:.0} images/s per core (CPU time; {ours_wall:.0} wall) (checksum {sink:x})", imgs.len());
    let out = Command::new("python3").arg("-c").arg(PY).args(&files).env("OMP_NUM_THREADS", "1").output();
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            let v: Vec<f64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            let py = v[0];
            println!("python imagehash.phash (PIL images already decoded, 1 thread): {py:.0} images/s per core (CPU time; {:.0} wall)", v[1]);
            println!("ratio: {:.1}x", ours / py);
        }
        Ok(o) => println!("python imagehash unavailable (pip install imagehash): {}", String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")),
        Err(e) => println!("python3 unavailable: {e}"),
    }
    Ok(())
}
