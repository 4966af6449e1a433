//! Faces on every fixture: count, boxes and ms per screen.
//! `cargo run --release -p overlord-enrich --example faces_eval [cascade.xml] [min_neighbours]`
use overlord_enrich::faces::{Cascade, DEFAULT_CASCADE, FaceParams};
use overlord_enrich::{DecodeCaps, decode, metrics};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let dir = metrics::fixtures_dir()
        .map_err(anyhow::Error::msg)?
        .join("screens");
    let gt: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json"))?)?;
    let path = std::env::args().nth(1).unwrap_or(DEFAULT_CASCADE.into());
    let mut p = FaceParams::default();
    if let Some(n) = std::env::args().nth(2) {
        p.min_neighbours = n.parse()?;
    }
    let c = Cascade::load(std::path::Path::new(&path))?;
    for f in gt["fixtures"].as_array().unwrap() {
        let file = f["file"].as_str().unwrap();
        let g = decode(&std::fs::read(dir.join(file))?, &DecodeCaps::default())?.to_grey_opencv();
        let t = Instant::now();
        let faces = c.detect(&g, &p);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!(
            "{file}: {} faces (truth {}) {ms:.1} ms {:?}",
            faces.len(),
            f["face_count"],
            faces
                .iter()
                .map(|f| (f.bbox, f.neighbours))
                .collect::<Vec<_>>()
        );
    }
    Ok(())
}
