//! OCR preprocessing ablation on the fixtures: CER per screen and mean, per variant.
//! `OMP_THREAD_LIMIT=1 cargo run --release -p overlord-enrich --example ocr_eval`
use overlord_enrich::ocr::{OcrEngine, OcrParams};
use overlord_enrich::{DecodeCaps, decode, metrics};
use overlord_enrich::logo::{LogoParams, Template, find_logo};

mod common;
use common::thread_cpu;

fn main() -> anyhow::Result<()> {
    let dir = metrics::fixtures_dir().map_err(anyhow::Error::msg)?.join("screens");
    let gt: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ground_truth.json"))?)?;
    let d = OcrParams::default();
    let whole = OcrParams {
        own_layout: false,
        invert_dark: false,
        target_line_px: 0,
        whole_scale: 1,
        psm: 3,
        junk_conf: 0.0,
        min_block_conf: 0.0,
        fix_zero: false,
        ..d
    };
    let blocks = OcrParams { own_layout: true, invert_dark: false, target_line_px: 0, psm: 6, ..whole };
    // (name, params, mask detected logos)
    let mut variants: Vec<(&str, OcrParams, bool)> = vec![
        ("1. plain tesseract (whole image, grey, PSM 3)", whole, false),
        ("2. + invert if dark", OcrParams { invert_dark: true, ..whole }, false),
        ("3. + upscale 2x", OcrParams { invert_dark: true, whole_scale: 2, ..whole }, false),
        ("4. + upscale 3x", OcrParams { invert_dark: true, whole_scale: 3, ..whole }, false),
        ("5. + upscale 3x + Otsu", OcrParams { invert_dark: true, whole_scale: 3, otsu: true, ..whole }, false),
        ("6. own blocks, PSM 6 per block", blocks, false),
        ("7. + invert per block", OcrParams { invert_dark: true, ..blocks }, false),
        ("8. + upscale per block (line -> 36 px)", OcrParams { invert_dark: true, target_line_px: 36, ..blocks }, false),
        ("9. + junk filters (glyph/cursor words, low-confidence blocks)", OcrParams { fix_zero: false, ..d }, false),
        ("10. + zero/@ fix", d, false),
        ("11. + mask detected logos (= default pipeline)", d, true),
        ("12. default with Otsu", OcrParams { otsu: true, ..d }, true),
        ("13. default with line -> 48 px", OcrParams { target_line_px: 48, ..d }, true),
    ];
    if let Some(only) = std::env::args().nth(1) {
        variants.retain(|v| v.0.contains(&only));
    }
    let verbose = std::env::var_os("VERBOSE").is_some();
    let mut engine = OcrEngine::new(d)?;
    println!("| step | mean CER | ms/screen (CPU) | per screen |");
    println!("|---|---|---|---|");
    let tpl = Template::windows();
    for (name, p, mask) in variants {
        engine.set_params(p);
        let (mut sum, mut n, mut per, mut ms) = (0.0, 0, Vec::new(), 0.0);
        for f in gt["fixtures"].as_array().unwrap() {
            let truth = f["text"].as_str().unwrap_or("");
            if truth.is_empty() {
                continue;
            }
            let file = f["file"].as_str().unwrap();
            let img = decode(&std::fs::read(dir.join(file))?, &DecodeCaps::default())?;
            let masks: Vec<[u32; 4]> =
                if mask { find_logo(&img, &tpl, &LogoParams::default()).into_iter().map(|h| h.bbox).collect() } else { vec![] };
            let t = thread_cpu();
            let out = engine.ocr_masked(&img.to_grey(), &masks)?;
            ms += (thread_cpu() - t) * 1e3;
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
