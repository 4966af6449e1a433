//! Face detection time per 1024x768 screen (our Haar cascade evaluator), beside OpenCV's
//! CascadeClassifier (python3 cv2, one thread) with the same cascade and parameters.
//! `cargo run --release -p overlord-enrich --example bench_faces`
use overlord_enrich::faces::{Cascade, DEFAULT_CASCADE, FaceParams};
use overlord_enrich::{DecodeCaps, decode, metrics};
use std::process::Command;

mod common;
use common::{loadavg, thread_cpu};

const PY: &str = r#"
import sys, time, cv2
cv2.setNumThreads(1)
c = cv2.CascadeClassifier(sys.argv[1])
imgs = [cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2GRAY) for p in sys.argv[2:]]
faces = sum(len(c.detectMultiScale(g, scaleFactor=1.1, minNeighbors=3, minSize=(24, 24))) for g in imgs)
n = 0; t = time.thread_time()
for _ in range(3):
    for g in imgs:
        c.detectMultiScale(g, scaleFactor=1.1, minNeighbors=3, minSize=(24, 24)); n += 1
print((time.thread_time() - t) * 1000 / n, faces)
"#;

fn main() -> anyhow::Result<()> {
    let dir = metrics::fixtures_dir()
        .map_err(anyhow::Error::msg)?
        .join("screens");
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "png"));
    files.sort();
    let greys: Vec<_> = files
        .iter()
        .map(|p| {
            decode(&std::fs::read(p).unwrap(), &DecodeCaps::default())
                .unwrap()
                .to_grey_opencv()
        })
        .collect();
    let c = Cascade::load(std::path::Path::new(DEFAULT_CASCADE))?;
    let p = FaceParams::default();
    let faces: usize = greys.iter().map(|g| c.detect(g, &p).len()).sum();
    let t = thread_cpu();
    for _ in 0..3 {
        for g in &greys {
            c.detect(g, &p);
        }
    }
    let ours = (thread_cpu() - t) * 1e3 / (3 * greys.len()) as f64;
    println!("load average {}", loadavg());
    println!(
        "overlord Haar (alt2, scale 1.1, min neighbours 3, min 24 px): {ours:.1} ms/screen per core (CPU time), {faces} faces on {} screens",
        greys.len()
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY)
        .arg(DEFAULT_CASCADE)
        .args(&files)
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout);
            let mut it = s.split_whitespace();
            let cv: f64 = it.next().unwrap_or("0").parse()?;
            println!(
                "OpenCV CascadeClassifier (same cascade/params, 1 thread): {cv:.1} ms/screen per core (CPU time), {} faces",
                it.next().unwrap_or("?")
            );
            println!("ratio (OpenCV time / ours): {:.2}x", cv / ours);
        }
        Ok(o) => println!(
            "OpenCV unavailable (pip install opencv-python-headless): {}",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("python3 unavailable: {e}"),
    }
    Ok(())
}
