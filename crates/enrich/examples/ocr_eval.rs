//! OCR preprocessing ablation on the fixtures: CER per screen and mean, per variant.
//! `OMP_THREAD_LIMIT=1 cargo run --release -p overlord-enrich --example ocr_eval`
use overlord_enrich::ocr::{OcrEngine, OcrParams};
use overlord_enrich::{DecodeCaps, decode, metrics};
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    let dir = metrics::fixtures_dir().map_err(anyhow::Error::msg)?.join("screens");
    let gt: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json"))?)?;
    let d = OcrParams::default();
    let whole = OcrParams { own_layout: false, invert_dark: false, target_line_px: 0, whole_scale: 1, psm: 3, ..d };
    let mut variants: Vec<(&str, OcrParams)> = vec![
        ("plain tesseract (whole image, PSM 3)", whole),
        ("+ invert if dark", OcrParams { invert_dark: true, ..whole }),
        ("+ upscale 2x", OcrParams { invert_dark: true, whole_scale: 2, ..whole }),
        ("+ upscale 3x", OcrParams { invert_dark: true, whole_scale: 3, ..whole }),
        ("+ upscale 3x + Otsu", OcrParams { invert_dark: true, whole_scale: 3, otsu: true, ..whole }),
        ("own blocks, PSM 6, no invert, no upscale", OcrParams { target_line_px: 0, invert_dark: false, ..d }),
        ("own blocks, PSM 6, invert per block, no upscale", OcrParams { target_line_px: 0, ..d }),
        ("own blocks, PSM 6, invert per block, line → 36 px", d),
        ("own blocks + Otsu", OcrParams { otsu: true, ..d }),
        ("own blocks, line → 48 px", OcrParams { target_line_px: 48, ..d }),
        ("own blocks, no junk filters", OcrParams { junk_conf: 0.0, min_block_conf: 0.0, ..d }),
    ];
    if let Some(only) = std::env::args().nth(1) {
        variants.retain(|v| v.0.contains(&only));
    }
    let verbose = std::env::var_os("VERBOSE").is_some();
    let mut engine = OcrEngine::new(d)?;
    println!("| variant | mean CER | ms/screen | per screen |");
    println!("|---|---|---|---|");
    for (name, p) in variants {
        engine.set_params(p);
        let (mut sum, mut n, mut per, mut ms) = (0.0, 0, Vec::new(), 0.0);
        for f in gt["fixtures"].as_array().unwrap() {
            let truth = f["text"].as_str().unwrap_or("");
            if truth.is_empty() {
                continue;
            }
            let file = f["file"].as_str().unwrap();
            let img = decode(&std::fs::read(dir.join(file))?, &DecodeCaps::default())?;
            let t = Instant::now();
            let out = engine.ocr(&img.to_grey())?;
            ms += t.elapsed().as_secs_f64() * 1e3;
            let c = metrics::cer(&out.text, truth);
            if std::env::var("VERBOSE").as_deref() == Ok("2") {
                for w in out.words.iter().filter(|w| w.conf < 80.0) {
                    eprintln!("   low conf {:?} {:.0} {:?}", w.text, w.conf, w.bbox);
                }
            }
            if verbose {
                eprintln!("{name} {file} {c:.3} {:?}", metrics::normalise_ws(&out.text));
            }
            sum += c;
            n += 1;
            per.push(format!("{}={c:.3}", &file[..2]));
        }
        println!("| {name} | {:.3} | {:.0} | {} |", sum / n as f64, ms / n as f64, per.join(" "));
    }
    Ok(())
}
