//! Held-out evaluation: the whole workflow on screens generated from a seed (never seen while
//! tuning), scored per capability.
//!
//! `OMP_THREAD_LIMIT=1 cargo run --release -p overlord-enrich --example heldout_eval -- \
//!     [--seed 1] [--per-kind 8] [--x 24] [--save DIR] [-v]`
//!
//! `--per-kind` composited screens of each kind (blank, near-blank, faces, logo, look-alike) and
//! `--x` screens of real X programs on a private Xvfb (see tests/support/unseen.rs). `--save` writes
//! the screens as PNG with a `truth.json`; `--load DIR` evaluates such a saved set instead of
//! generating one (X captures differ slightly between runs: a saved set makes two versions of
//! the code comparable screen for screen); `--only KIND` keeps the screens of kinds starting
//! with KIND; `-v` prints every screen, otherwise only those with an error.
#[path = "../tests/support/unseen.rs"]
mod unseen;

use overlord_enrich::{Analysis, Analyzer, AnalyzerConfig, metrics};

mod common;
use std::collections::BTreeMap;

/// Greedy matching at IoU ≥ t: (matched, unmatched detections, unmatched truths).
fn matches(det: &[[u32; 4]], truth: &[[u32; 4]], t: f64) -> (usize, usize, usize) {
    let mut used = vec![false; det.len()];
    let mut m = 0;
    for tb in truth {
        let best = det
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(i, d)| (i, metrics::iou(*d, *tb)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, v)) = best
            && v >= t
        {
            used[i] = true;
            m += 1;
        }
    }
    (m, det.len() - m, truth.len() - m)
}

#[derive(Default)]
struct Score {
    screens: usize,
    blank_ok: usize,
    email_tp: usize,
    email_fp: usize,
    email_fn: usize,
    face_count_ok: usize,
    face_screens: usize,
    face_tp: usize,
    face_fp: usize,
    face_fn: usize,
    logo_tp: usize,
    logo_fp: usize,
    logo_fn: usize,
    cer_sum: f64,
    cer_n: usize,
    spurious_chars: usize,
    ms_total: f64,
    ms_ocr: f64,
}

impl Score {
    fn add(&mut self, s: &unseen::Screen, a: &Analysis) -> Vec<String> {
        let t = &s.truth;
        let mut errs = Vec::new();
        self.screens += 1;
        if a.blank == t.blank {
            self.blank_ok += 1;
        } else {
            errs.push(format!(
                "blank {} (truth {}; entropy {:.4}, differing {})",
                a.blank, t.blank, a.entropy, a.differing_pixels
            ));
        }
        let want: Vec<String> = t.emails.iter().map(|e| e.to_lowercase()).collect();
        let got: Vec<String> = a.emails.iter().map(|e| e.to_lowercase()).collect();
        let tp = got.iter().filter(|g| want.contains(g)).count();
        self.email_tp += tp;
        self.email_fp += got.len() - tp;
        self.email_fn += want.len() - tp;
        if tp != want.len() || tp != got.len() {
            errs.push(format!(
                "e-mails {got:?} (truth {want:?}); read {:?}",
                metrics::normalise_ws(&a.text)
            ));
        }
        let fb: Vec<[u32; 4]> = a.faces.iter().map(|f| f.bbox).collect();
        let (m, fp, fnn) = matches(&fb, &t.faces, 0.4);
        self.face_tp += m;
        self.face_fp += fp;
        self.face_fn += fnn;
        if !t.faces.is_empty() {
            self.face_screens += 1;
            if fb.len() == t.faces.len() {
                self.face_count_ok += 1;
            }
        }
        if fp + fnn > 0 {
            errs.push(format!("faces {fb:?} (truth {:?})", t.faces));
        }
        let lb: Vec<[u32; 4]> = a.logos.iter().map(|l| l.bbox).collect();
        let (m, fp, fnn) = matches(&lb, &t.logos, 0.3);
        self.logo_tp += m;
        self.logo_fp += fp;
        self.logo_fn += fnn;
        if fp + fnn > 0 {
            errs.push(format!(
                "logos {:?} (truth {:?})",
                a.logos
                    .iter()
                    .map(|l| (l.bbox, l.score))
                    .collect::<Vec<_>>(),
                t.logos
            ));
        }
        match &t.text {
            Some(text) if !text.trim().is_empty() => {
                let c = metrics::cer(&a.text, text);
                self.cer_sum += c;
                self.cer_n += 1;
                if c > 0.10 {
                    errs.push(format!("CER {c:.3}: {:?}", metrics::normalise_ws(&a.text)));
                }
            }
            _ => {
                let n = metrics::normalise_ws(&a.text).chars().count();
                self.spurious_chars += n;
                if n > 0 {
                    errs.push(format!("text on a screen without text: {:?}", a.text));
                }
            }
        }
        self.ms_total += a.timings.total_ms;
        self.ms_ocr += a.timings.ocr_ms;
        errs
    }
}

fn ratio(a: usize, b: usize) -> String {
    if b == 0 {
        "-".into()
    } else {
        format!("{:.3} ({a}/{b})", a as f64 / b as f64)
    }
}

/// A set written by `--save`: the PNGs and their `truth.json`.
fn load_screens(dir: &std::path::Path) -> anyhow::Result<Vec<unseen::Screen>> {
    let truth: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("truth.json"))?)?;
    let boxes = |v: &serde_json::Value| -> Vec<[u32; 4]> {
        serde_json::from_value(v.clone()).unwrap_or_default()
    };
    let mut out = Vec::new();
    for t in truth {
        let file = t["file"].as_str().unwrap_or_default();
        let img = image::open(dir.join(file))?.to_rgb8();
        let kind: &'static str = Box::leak(t["kind"].as_str().unwrap_or("?").to_string().into());
        out.push(unseen::Screen {
            name: file.trim_end_matches(".png").to_string(),
            kind,
            desc: t["desc"].as_str().unwrap_or_default().to_string(),
            rgb: overlord_enrich::Rgb {
                width: img.width(),
                height: img.height(),
                data: img.into_raw(),
            },
            truth: unseen::Truth {
                blank: t["blank"].as_bool().unwrap_or(false),
                text: t["text"].as_str().map(str::to_string),
                emails: serde_json::from_value(t["emails"].clone()).unwrap_or_default(),
                faces: boxes(&t["face_boxes_xywh"]),
                logos: boxes(&t["logo_boxes_xywh"]),
            },
        });
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let mut seed = 1u64;
    let mut per_kind = 8usize;
    let mut nx = 24usize;
    let mut save: Option<std::path::PathBuf> = None;
    let mut verbose = false;
    let mut load: Option<std::path::PathBuf> = None;
    let mut only = String::new();
    let cfg = AnalyzerConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seed" => seed = args.next().unwrap_or_default().parse()?,
            "--per-kind" => per_kind = args.next().unwrap_or_default().parse()?,
            "--x" => nx = args.next().unwrap_or_default().parse()?,
            "--save" => save = args.next().map(Into::into),
            "--load" => load = args.next().map(Into::into),
            "--only" => only = args.next().unwrap_or_default(),
            "-v" => verbose = true,
            o => anyhow::bail!("unknown argument {o}"),
        }
    }
    let tmp = tempfile::tempdir()?;
    let t = std::time::Instant::now();
    let mut screens = match &load {
        Some(dir) => load_screens(dir)?,
        None => {
            let screens_dir = unseen::screens_dir();
            let mut s = unseen::composited(seed, per_kind, &screens_dir);
            if nx > 0 {
                s.extend(unseen::x_screens(seed, nx, tmp.path()).map_err(anyhow::Error::msg)?);
            }
            s
        }
    };
    screens.retain(|s| s.kind.starts_with(only.as_str()));
    eprintln!(
        "generated {} screens in {:.1} s (seed {seed})",
        screens.len(),
        t.elapsed().as_secs_f64()
    );
    let mut analyzer = Analyzer::new(cfg)?;
    let mut total = Score::default();
    let mut by_kind: BTreeMap<&str, Score> = BTreeMap::new();
    let mut truth_json = Vec::new();
    let mut cpu = 0.0;
    for s in &screens {
        let c0 = common::thread_cpu();
        let a = analyzer.analyze_rgb(&s.rgb)?;
        cpu += common::thread_cpu() - c0;
        let errs = total.add(s, &a);
        by_kind.entry(s.kind).or_default().add(s, &a);
        if verbose || !errs.is_empty() {
            println!("{} [{}] {}", s.name, s.kind, s.desc);
            for e in &errs {
                println!("    {e}");
            }
        }
        if let Some(dir) = &save {
            std::fs::create_dir_all(dir)?;
            let img = image::RgbImage::from_raw(s.rgb.width, s.rgb.height, s.rgb.data.clone())
                .expect("size");
            img.save(dir.join(format!("{}.png", s.name)))?;
            truth_json.push(serde_json::json!({
                "file": format!("{}.png", s.name), "kind": s.kind, "desc": s.desc,
                "blank": s.truth.blank, "text": s.truth.text, "emails": s.truth.emails,
                "face_boxes_xywh": s.truth.faces, "logo_boxes_xywh": s.truth.logos,
            }));
        }
    }
    if let Some(dir) = &save {
        std::fs::write(
            dir.join("truth.json"),
            serde_json::to_string_pretty(&truth_json)?,
        )?;
    }
    println!(
        "CPU time of the whole workflow: {:.0} ms/screen on one core ({} screens, load {})",
        cpu * 1e3 / screens.len().max(1) as f64,
        screens.len(),
        common::loadavg()
    );
    println!();
    println!(
        "| kind | screens | blank acc. | e-mail P | e-mail R | face count acc. | face boxes R (IoU≥0.4) | false face boxes | logo P | logo R | false logo boxes | mean CER | chars on text-free screens | ms/screen (OCR) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<(&str, &Score)> = by_kind.iter().map(|(k, v)| (*k, v)).collect();
    rows.push(("**all**", &total));
    for (k, s) in rows {
        println!(
            "| {k} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} ({:.0}) |",
            s.screens,
            ratio(s.blank_ok, s.screens),
            ratio(s.email_tp, s.email_tp + s.email_fp),
            ratio(s.email_tp, s.email_tp + s.email_fn),
            ratio(s.face_count_ok, s.face_screens),
            ratio(s.face_tp, s.face_tp + s.face_fn),
            s.face_fp,
            ratio(s.logo_tp, s.logo_tp + s.logo_fp),
            ratio(s.logo_tp, s.logo_tp + s.logo_fn),
            s.logo_fp,
            if s.cer_n > 0 {
                format!("{:.3} ({})", s.cer_sum / s.cer_n as f64, s.cer_n)
            } else {
                "-".into()
            },
            s.spurious_chars,
            s.ms_total / s.screens.max(1) as f64,
            s.ms_ocr / s.screens.max(1) as f64,
        );
    }
    Ok(())
}
