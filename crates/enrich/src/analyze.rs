//! The whole workflow on one image: [`Analyzer::analyze`].

use crate::blank::{BlankParams, blank_stats};
use crate::decode::{DecodeCaps, Rgb, decode};
use crate::error::EnrichError;
use crate::faces::{Cascade, DEFAULT_CASCADE, Face, FaceParams};
use crate::leak::{LeakDb, LeakRecord};
use crate::logo::{LogoHit, LogoParams, Template, find_logo};
use crate::ocr::{OcrEngine, OcrParams, Word};
use crate::phash::{PHashes, parse_hex64, phashes};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Version of the [`Analysis`] record (stored in sled and sent over the wire).
pub const ANALYSIS_VERSION: u32 = 1;

/// Milliseconds spent per step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub decode_ms: f64,
    pub blank_ms: f64,
    pub hash_ms: f64,
    pub faces_ms: f64,
    pub logos_ms: f64,
    pub ocr_ms: f64,
    pub total_ms: f64,
}

/// Everything the workflow learns about one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub version: u32,
    pub width: u32,
    pub height: u32,
    pub blank: bool,
    /// Shannon entropy of the grey histogram, bits.
    pub entropy: f64,
    /// Pixels differing from the dominant grey level.
    pub differing_pixels: u64,
    /// 64-bit DCT perceptual hash, 16 hex digits.
    pub phash64: String,
    /// 256-bit DCT perceptual hash, 64 hex digits.
    pub phash256: String,
    pub text: String,
    pub words: Vec<Word>,
    pub emails: Vec<String>,
    pub faces: Vec<Face>,
    pub logos: Vec<LogoHit>,
    pub tags: Vec<String>,
    /// Leak records of the e-mails (filled by [`Analyzer::lookup_leaks`] / the store).
    #[serde(default)]
    pub leaks: Vec<LeakRecord>,
    pub timings: Timings,
}

impl Analysis {
    /// The perceptual hashes in binary form.
    pub fn hashes(&self) -> Option<PHashes> {
        let phash64 = parse_hex64(&self.phash64)?;
        if self.phash256.len() != 64 {
            return None;
        }
        let mut phash256 = [0u64; 4];
        for (i, w) in phash256.iter_mut().enumerate() {
            *w = u64::from_str_radix(&self.phash256[16 * i..16 * i + 16], 16).ok()?;
        }
        Some(PHashes { phash64, phash256 })
    }
}

/// Configuration of an [`Analyzer`].
#[derive(Debug, Clone)]
pub struct AnalyzerConfig {
    pub caps: DecodeCaps,
    pub blank: BlankParams,
    pub ocr: OcrParams,
    pub faces: FaceParams,
    /// Haar cascade XML (OpenCV format); default: Debian's `opencv-data` frontal-face alt2.
    pub cascade: PathBuf,
    /// Logo templates (name, RGBA PNG path); empty = the built-in Windows logo.
    pub logo_templates: Vec<(String, PathBuf)>,
    pub logos: LogoParams,
    /// Faces and logos are searched on images up to this many pixels (larger ones are skipped
    /// with a tag), OCR blocks are capped by [`OcrParams::max_side`].
    pub max_detect_pixels: u64,
}

impl Default for AnalyzerConfig {
    fn default() -> Self {
        AnalyzerConfig {
            caps: DecodeCaps::default(),
            blank: BlankParams::default(),
            ocr: OcrParams::default(),
            faces: FaceParams::default(),
            cascade: std::env::var_os("OVERLORD_HAAR_CASCADE").map(PathBuf::from).unwrap_or(DEFAULT_CASCADE.into()),
            logo_templates: Vec::new(),
            logos: LogoParams::default(),
            max_detect_pixels: 4096 * 2304,
        }
    }
}

/// Runs the workflow. Holds a tesseract engine, so it is built once per worker thread (it is
/// `Send`, not `Sync`) and used off the async runtime (e.g. in `spawn_blocking` or a dedicated
/// thread pool).
pub struct Analyzer {
    cfg: AnalyzerConfig,
    ocr: OcrEngine,
    cascade: Cascade,
    templates: Vec<Template>,
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// E-mail addresses in text, in order of appearance, de-duplicated case-insensitively.
pub fn extract_emails(text: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}").expect("regex")
    });
    let mut out: Vec<String> = Vec::new();
    for m in re.find_iter(text) {
        let a = m.as_str().trim_start_matches(['.', '-']).trim_end_matches(['.', '-']).to_string();
        if crate::leak::plausible_address(&a) && !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

/// Tags derived from an analysis (see docs/DESIGN.md for the rules).
pub fn derive_tags(a: &Analysis) -> Vec<String> {
    let mut t = Vec::new();
    if a.blank {
        t.push("blank");
    }
    let lower = a.text.to_lowercase();
    let alnum = a.words.iter().filter(|w| w.conf >= 60.0).map(|w| w.text.chars().filter(|c| c.is_alphanumeric()).count()).sum::<usize>();
    if alnum >= 3 {
        t.push("text");
    }
    let has = |k: &str| lower.contains(k);
    if has("login:") || has("password") || has("username") || has("log on") || has("sign in") || has("log in") {
        t.push("login_prompt");
    }
    if has("ctrl + alt + del") || has("ctrl+alt+del") || has("locked") {
        t.push("lock_screen");
    }
    if a.text.lines().any(|l| { let l = l.trim_start(); l.starts_with("$ ") || l == "$" || l.starts_with("# ") }) || has(" tty") {
        t.push("terminal");
    }
    let bottom = a.height.saturating_mul(9) / 10;
    let logo_in_taskbar = a.logos.iter().any(|l| l.bbox[1] >= bottom);
    if logo_in_taskbar || has("recycle bin") || a.words.iter().any(|w| w.text.ends_with("Start") && w.bbox[1] >= bottom) {
        t.push("desktop");
    }
    if !a.faces.is_empty() {
        t.push("has_faces");
    }
    if a.logos.iter().any(|l| l.name == "windows") || has("windows") {
        t.push("windows");
    }
    if !a.emails.is_empty() {
        t.push("has_emails");
    }
    if !a.leaks.is_empty() {
        t.push("leaked_email");
    }
    t.into_iter().map(String::from).collect()
}

impl Analyzer {
    /// Builds an analyzer: loads tesseract (eng), the Haar cascade and the logo templates.
    pub fn new(cfg: AnalyzerConfig) -> Result<Analyzer, EnrichError> {
        let ocr = OcrEngine::new(cfg.ocr)?;
        let cascade = Cascade::load(&cfg.cascade)?;
        let templates = if cfg.logo_templates.is_empty() {
            vec![Template::windows()]
        } else {
            cfg.logo_templates.iter().map(|(n, p)| Template::load(n, p)).collect::<Result<_, _>>()?
        };
        Ok(Analyzer { cfg, ocr, cascade, templates })
    }

    /// Analyzer with the default configuration.
    pub fn with_defaults() -> Result<Analyzer, EnrichError> {
        Analyzer::new(AnalyzerConfig::default())
    }

    pub fn config(&self) -> &AnalyzerConfig {
        &self.cfg
    }

    /// Decodes (within the caps) and analyses PNG or JPEG bytes.
    pub fn analyze(&mut self, bytes: &[u8]) -> Result<Analysis, EnrichError> {
        let t = Instant::now();
        let rgb = decode(bytes, &self.cfg.caps)?;
        let decode_ms = ms(t);
        let mut a = self.analyze_rgb(&rgb)?;
        a.timings.decode_ms = decode_ms;
        a.timings.total_ms = ((a.timings.total_ms + decode_ms) * 1e3).round() / 1e3;
        Ok(a)
    }

    /// Analyses decoded RGB pixels.
    pub fn analyze_rgb(&mut self, rgb: &Rgb) -> Result<Analysis, EnrichError> {
        let t_all = Instant::now();
        if rgb.width as u64 * rgb.height as u64 > self.cfg.caps.max_pixels
            || rgb.width > self.cfg.caps.max_side
            || rgb.height > self.cfg.caps.max_side
        {
            return Err(EnrichError::DimensionsTooLarge {
                width: rgb.width,
                height: rgb.height,
                max_side: self.cfg.caps.max_side,
                max_pixels: self.cfg.caps.max_pixels,
            });
        }
        let mut tm = Timings::default();
        let t = Instant::now();
        let grey = rgb.to_grey();
        let bs = blank_stats(&grey, &self.cfg.blank);
        tm.blank_ms = ms(t);
        let t = Instant::now();
        let h = phashes(rgb);
        tm.hash_ms = ms(t);
        let mut a = Analysis {
            version: ANALYSIS_VERSION,
            width: rgb.width,
            height: rgb.height,
            blank: bs.blank,
            entropy: bs.entropy,
            differing_pixels: bs.differing_pixels,
            phash64: h.phash64_hex(),
            phash256: h.phash256_hex(),
            text: String::new(),
            words: Vec::new(),
            emails: Vec::new(),
            faces: Vec::new(),
            logos: Vec::new(),
            tags: Vec::new(),
            leaks: Vec::new(),
            timings: tm,
        };
        if !bs.blank {
            let detect = rgb.width as u64 * rgb.height as u64 <= self.cfg.max_detect_pixels;
            if detect {
                let t = Instant::now();
                a.faces = self.cascade.detect(&grey, &self.cfg.faces);
                a.timings.faces_ms = ms(t);
                let t = Instant::now();
                for tpl in &self.templates {
                    a.logos.extend(find_logo(rgb, tpl, &self.cfg.logos));
                }
                a.timings.logos_ms = ms(t);
            }
            let t = Instant::now();
            let masks: Vec<[u32; 4]> = a.logos.iter().map(|l| l.bbox).chain(a.faces.iter().map(|f| f.bbox)).collect();
            let o = self.ocr.ocr_masked(&grey, &masks)?;
            a.timings.ocr_ms = ms(t);
            a.text = o.text;
            a.words = o.words;
            a.emails = extract_emails(&a.text);
        }
        a.tags = derive_tags(&a);
        a.timings.total_ms = ms(t_all);
        Ok(a)
    }

    /// Fills `a.leaks` from the leak database and re-derives the tags.
    pub fn lookup_leaks(a: &mut Analysis, leaks: &LeakDb) -> Result<(), EnrichError> {
        a.leaks.clear();
        for e in &a.emails {
            a.leaks.extend(leaks.lookup(e)?);
        }
        a.tags = derive_tags(a);
        Ok(())
    }
}

/// Runs the whole workflow on local files: one JSON object per file (`{"file", ...analysis}`
/// or `{"file", "error"}`), in order. This is what `overlord images analyze FILE...` prints.
/// With a leak database, known addresses become `leaks`.
pub fn analyze_files(
    paths: &[PathBuf],
    cfg: AnalyzerConfig,
    leaks: Option<&LeakDb>,
) -> Result<Vec<serde_json::Value>, EnrichError> {
    let mut analyzer = Analyzer::new(cfg)?;
    let max = analyzer.cfg.caps.max_bytes as u64;
    Ok(paths
        .iter()
        .map(|p| {
            let file = p.display().to_string();
            let res = (|| {
                let meta = std::fs::metadata(p).map_err(|e| EnrichError::Io { path: file.clone(), source: e })?;
                if meta.len() > max {
                    return Err(EnrichError::InputTooLarge { len: meta.len() as usize, cap: max as usize });
                }
                let bytes = std::fs::read(p).map_err(|e| EnrichError::Io { path: file.clone(), source: e })?;
                let mut a = analyzer.analyze(&bytes)?;
                if let Some(l) = leaks {
                    Analyzer::lookup_leaks(&mut a, l)?;
                }
                Ok::<_, EnrichError>(a)
            })();
            match res {
                Ok(a) => {
                    let mut v = serde_json::to_value(&a).unwrap_or(serde_json::Value::Null);
                    if let serde_json::Value::Object(m) = &mut v {
                        m.insert("file".into(), file.into());
                    }
                    v
                }
                Err(e) => serde_json::json!({ "file": file, "error": e.to_string() }),
            }
        })
        .collect())
}
