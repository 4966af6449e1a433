//! Debug: OCR one file and print blocks and words.
use overlord_enrich::ocr::{OcrEngine, OcrParams};
use overlord_enrich::{DecodeCaps, decode};
fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("file");
    let img = decode(&std::fs::read(path)?, &DecodeCaps::default())?;
    let mut p = OcrParams::default();
    // debugging knobs
    if let Ok(v) = std::env::var("MIN_BLOCK_CONF") {
        p.min_block_conf = v.parse()?;
    }
    if let Ok(v) = std::env::var("TARGET_LINE_PX") {
        p.target_line_px = v.parse()?;
    }
    let mut e = OcrEngine::new(p)?;
    let masks: Vec<[u32; 4]> = std::env::args()
        .skip(2)
        .map(|a| {
            let v: Vec<u32> = a.split(',').map(|x| x.parse().unwrap()).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect();
    let out = e.ocr_masked(&img.to_grey(), &masks)?;
    println!("blocks {:?}", out.blocks);
    for w in &out.words {
        println!("{:?} {:.0} {:?}", w.text, w.conf, w.bbox);
    }
    println!("{}", out.text);
    Ok(())
}
