//! OCR time per text screen on one core (persistent engine, our preprocessing), beside the
//! tesseract CLI (a process per image, default settings) on the same files.
//! `OMP_THREAD_LIMIT=1 cargo run --release -p overlord-enrich --example bench_ocr`
use overlord_enrich::ocr::{OcrEngine, OcrParams};
use overlord_enrich::{DecodeCaps, decode, metrics};
use std::process::Command;
use std::time::Instant;

mod common;
use common::{children_cpu, loadavg, thread_cpu};

fn main() -> anyhow::Result<()> {
    let dir = metrics::fixtures_dir().map_err(anyhow::Error::msg)?.join("screens");
    let gt: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json"))?)?;
    let text: Vec<(std::path::PathBuf, String)> = gt["fixtures"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| !f["text"].as_str().unwrap_or("").is_empty())
        .map(|f| (dir.join(f["file"].as_str().unwrap()), f["text"].as_str().unwrap().to_string()))
        .collect();
    let greys: Vec<_> = text.iter().map(|(p, _)| decode(&std::fs::read(p).unwrap(), &DecodeCaps::default()).unwrap().to_grey()).collect();
    let mut engine = OcrEngine::new(OcrParams::default())?;
    let rounds = 3;
    let (mut ours_ms, mut ours_cer) = (0.0, 0.0);
    engine.ocr(&greys[0])?; // warm-up
    for _ in 0..rounds {
        for (g, (_, truth)) in greys.iter().zip(&text) {
            let t = thread_cpu();
            let o = engine.ocr(g)?;
            ours_ms += (thread_cpu() - t) * 1e3;
            ours_cer += metrics::cer(&o.text, truth);
        }
    }
    let n = (rounds * text.len()) as f64;
    println!("load average {}", loadavg());
    println!("overlord OCR (persistent engine, blocks + invert + upscale): {:.0} ms/screen per core (CPU time), mean CER {:.3}", ours_ms / n, ours_cer / n);
    let (mut cli_ms, mut cli_cer, mut cli_wall) = (0.0, 0.0, 0.0);
    for _ in 0..rounds {
        for (p, truth) in &text {
            let t = children_cpu();
            let w = Instant::now();
            let o = Command::new("tesseract").arg(p).arg("-").env("OMP_THREAD_LIMIT", "1").output()?;
            cli_ms += (children_cpu() - t) * 1e3;
            cli_wall += w.elapsed().as_secs_f64() * 1e3;
            cli_cer += metrics::cer(&String::from_utf8_lossy(&o.stdout), truth);
        }
    }
    println!("tesseract CLI (process per image, defaults): {:.0} ms/screen per core (CPU time incl. start-up; {:.0} wall), mean CER {:.3}", cli_ms / n, cli_wall / n, cli_cer / n);
    println!("ratio (CLI time / ours): {:.2}x", cli_ms / ours_ms);
    Ok(())
}
