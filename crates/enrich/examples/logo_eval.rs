//! Logos on every fixture: boxes, scores and ms per screen.
//! `cargo run --release -p overlord-enrich --example logo_eval`
use overlord_enrich::logo::{LogoParams, Template, find_logo};
use overlord_enrich::{DecodeCaps, decode, metrics};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let root = metrics::fixtures_dir().map_err(anyhow::Error::msg)?;
    let dir = root.join("screens");
    let gt: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json"))?)?;
    let t = Template::load("windows", &dir.join("templates/logo_windows_template_64.png"))?;
    let mut p = LogoParams::default();
    if let Some(v) = std::env::args().nth(1) {
        p.coarse_threshold = v.parse()?;
    }
    for f in gt["fixtures"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let img = decode(&std::fs::read(dir.join(file))?, &DecodeCaps::default())?;
        let t0 = Instant::now();
        let hits = find_logo(&img, &t, &p);
        println!("{file}: {:?} (truth {} {}) {:.1} ms", hits.iter().map(|h| (h.bbox, h.score)).collect::<Vec<_>>(), f["logo"], f["logo_box"], t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok(())
}
