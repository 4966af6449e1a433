//! Debug: OCR one file and print blocks and words.
use overlord_enrich::ocr::{OcrEngine, OcrParams};
use overlord_enrich::{DecodeCaps, decode};
fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("file");
    let img = decode(&std::fs::read(path)?, &DecodeCaps::default())?;
    let mut e = OcrEngine::new(OcrParams::default())?;
    let masks: Vec<[u32; 4]> = std::env::args().skip(2).map(|a| {
        let v: Vec<u32> = a.split(',').map(|x| x.parse().unwrap()).collect();
        [v[0], v[1], v[2], v[3]]
    }).collect();
    let out = e.ocr_masked(&img.to_grey(), &masks)?;
    println!("blocks {:?}", out.blocks);
    for w in &out.words {
        println!("{:?} {:.0} {:?}", w.text, w.conf, w.bbox);
    }
    println!("{}", out.text);
    Ok(())
}
