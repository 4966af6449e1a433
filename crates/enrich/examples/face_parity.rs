//! Parity of our Haar face detector with OpenCV's `CascadeClassifier::detectMultiScale` on a
//! directory of PNGs, against a reference JSON written by `scripts/faces_opencv_ref.py` (cv2,
//! alt2, scaleFactor 1.1, minNeighbors 3, minSize 24, grey = `cvtColor(BGR2GRAY)`).
//!
//! `cargo run --release -p overlord-enrich --example face_parity -- DIR REF.json [--pil-grey] [-v]`
//!
//! Prints per image the boxes that differ, then totals: grouped boxes matched exactly (x, y, w,
//! h and neighbour count), matched at IoU ≥ 0.5, missed and extra; and, when the reference has
//! them, the raw window hits (before grouping) equal / missed / extra. `--pil-grey` feeds the
//! detector `Rgb::to_grey` (PIL's luma) instead of OpenCV's grey.
use overlord_enrich::faces::{Cascade, DEFAULT_CASCADE, FaceParams};
use overlord_enrich::{DecodeCaps, decode};
use std::collections::BTreeMap;

fn iou(a: &[i64], b: &[i64]) -> f64 {
    let ix = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0);
    let iy = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0);
    let i = (ix * iy) as f64;
    i / ((a[2] * a[3] + b[2] * b[3]) as f64 - i)
}

/// Multiset difference: (common, only in a, only in b).
fn diff(a: &[Vec<i64>], b: &[Vec<i64>]) -> (usize, Vec<Vec<i64>>, Vec<Vec<i64>>) {
    let mut m: BTreeMap<&Vec<i64>, i64> = BTreeMap::new();
    for r in a {
        *m.entry(r).or_default() += 1;
    }
    for r in b {
        *m.entry(r).or_default() -= 1;
    }
    let (mut only_a, mut only_b) = (Vec::new(), Vec::new());
    for (r, k) in m {
        for _ in 0..k.max(0) {
            only_a.push(r.clone());
        }
        for _ in 0..(-k).max(0) {
            only_b.push(r.clone());
        }
    }
    (a.len() - only_a.len(), only_a, only_b)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    let [dir, refp] = pos[..] else {
        anyhow::bail!("usage: face_parity DIR REF.json [--pil-grey] [-v]");
    };
    let pil = args.iter().any(|a| a == "--pil-grey");
    let verbose = args.iter().any(|a| a == "-v");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(refp)?)?;
    let files = r["files"]
        .as_object()
        .ok_or_else(|| anyhow::anyhow!("{refp}: no \"files\" object"))?;
    let c = Cascade::load(std::path::Path::new(DEFAULT_CASCADE))?;
    let p = FaceParams::default();
    let raw_p = FaceParams {
        min_neighbours: 0,
        ..p
    };
    let (mut n_cv, mut exact, mut iou_ok, mut missed, mut extra) = (0, 0, 0, 0, 0);
    let (mut raw_cv, mut raw_eq, mut raw_missed, mut raw_extra, mut raw_files) = (0, 0, 0, 0, 0);
    let mut ms = 0.0;
    for (name, e) in files {
        let rgb = decode(
            &std::fs::read(std::path::Path::new(dir).join(name))?,
            &DecodeCaps::default(),
        )?;
        let g = if pil {
            rgb.to_grey()
        } else {
            rgb.to_grey_opencv()
        };
        let t = std::time::Instant::now();
        let ours: Vec<Vec<i64>> = c
            .detect(&g, &p)
            .iter()
            .map(|f| {
                let b = f.bbox;
                vec![
                    b[0] as i64,
                    b[1] as i64,
                    b[2] as i64,
                    b[3] as i64,
                    f.neighbours as i64,
                ]
            })
            .collect();
        ms += t.elapsed().as_secs_f64() * 1e3;
        let cv: Vec<Vec<i64>> = serde_json::from_value(e["faces"].clone())?;
        n_cv += cv.len();
        let (same, only_cv, only_ours) = diff(&cv, &ours);
        exact += same;
        // IoU matching of the boxes that differ
        let mut used = vec![false; only_ours.len()];
        for a in &only_cv {
            let best = (0..only_ours.len())
                .filter(|&j| !used[j])
                .map(|j| (iou(a, &only_ours[j]), j))
                .max_by(|x, y| x.0.total_cmp(&y.0));
            match best {
                Some((v, j)) if v >= 0.5 => {
                    used[j] = true;
                    iou_ok += 1;
                }
                _ => missed += 1,
            }
        }
        extra += used.iter().filter(|u| !**u).count();
        let mut line = String::new();
        if !only_cv.is_empty() || !only_ours.is_empty() {
            line += &format!(" faces: OpenCV only {only_cv:?}, ours only {only_ours:?}");
        }
        if let Some(raw) = e.get("raw") {
            raw_files += 1;
            let cv_raw: Vec<Vec<i64>> = serde_json::from_value(raw.clone())?;
            let ours_raw: Vec<Vec<i64>> = c
                .detect(&g, &raw_p)
                .iter()
                .map(|f| f.bbox.iter().map(|&v| v as i64).collect())
                .collect();
            let (same, a, b) = diff(&cv_raw, &ours_raw);
            raw_cv += cv_raw.len();
            raw_eq += same;
            raw_missed += a.len();
            raw_extra += b.len();
            if !a.is_empty() || !b.is_empty() {
                line += &format!(" raw hits: {} of {} equal", same, cv_raw.len());
                if verbose {
                    line += &format!(", OpenCV only {a:?}, ours only {b:?}");
                } else {
                    line += &format!(", {} OpenCV only, {} ours only", a.len(), b.len());
                }
            }
        }
        if !line.is_empty() {
            println!("{name}:{line}");
        }
    }
    println!(
        "OpenCV {} ({}), grey {}: {} images, {n_cv} OpenCV faces: {exact} identical (box + neighbours), {iou_ok} more at IoU >= 0.5, {missed} missed, {extra} extra; {ms:.0} ms detecting",
        r["opencv"].as_str().unwrap_or("?"),
        r["cascade"].as_str().unwrap_or("?"),
        if pil { "PIL" } else { "OpenCV" },
        files.len()
    );
    if raw_files > 0 {
        println!(
            "raw window hits ({raw_files} images): {raw_cv} OpenCV, {raw_eq} identical, {raw_missed} missed, {raw_extra} extra"
        );
    }
    Ok(())
}
