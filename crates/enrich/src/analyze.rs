//! The whole workflow on one image: [`Analyzer::analyze`].

use crate::blank::{BlankParams, blank_stats};
use crate::decode::{DecodeCaps, Rgb, decode};
use crate::error::EnrichError;
use crate::faces::{Cascade, DEFAULT_CASCADE, Face, FaceParams};
use crate::leak::{LeakDb, LeakRecord};
use crate::logo::{LogoHit, LogoParams, Template, find_logo};
#[cfg(feature = "ocr")]
use crate::ocr::OcrEngine;
use crate::ocr::{OcrParams, Word};
use crate::phash::{PHashes, parse_hex64, phashes};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// Version of the [`Analysis`] record (stored in sled and sent over the wire).
pub const ANALYSIS_VERSION: u32 = 1;

/// Milliseconds spent per step: the finding schema's record.
pub use overlord_core::finding::enrichment::EnrichTimings;

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
    pub timings: EnrichTimings,
}

/// The analysis as the finding schema's `enrichment` payload: every field moved by name and type
/// (a field added on one side only does not compile). `input` and `image` are the task's to set.
impl From<Analysis> for overlord_core::finding::Enrichment {
    fn from(a: Analysis) -> Self {
        let Analysis {
            version,
            width,
            height,
            blank,
            entropy,
            differing_pixels,
            phash64,
            phash256,
            text,
            words,
            emails,
            faces,
            logos,
            tags,
            leaks,
            timings,
        } = a;
        overlord_core::finding::Enrichment {
            version,
            width,
            height,
            blank,
            entropy,
            differing_pixels,
            phash64,
            phash256,
            text,
            words,
            emails,
            faces,
            logos,
            tags,
            leaks,
            timings,
            input: None,
            image: None,
        }
    }
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
            cascade: std::env::var_os("OVERLORD_HAAR_CASCADE")
                .map(PathBuf::from)
                .unwrap_or(DEFAULT_CASCADE.into()),
            logo_templates: Vec::new(),
            logos: LogoParams::default(),
            max_detect_pixels: 4096 * 2304,
        }
    }
}

/// Runs the workflow. Holds a tesseract engine, so it is built once per worker thread (it is
/// `Send`, not `Sync`) and used off the async runtime (e.g. in `spawn_blocking` or a dedicated
/// thread pool).
#[cfg(feature = "ocr")]
pub struct Analyzer {
    cfg: AnalyzerConfig,
    ocr: OcrEngine,
    cascade: Cascade,
    templates: Vec<Template>,
}

fn ms(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// Common top-level domains: a label after a spaced dot (`example. io`) is joined to the
/// domain only when it is one of these, and a domain already ending in a generic one is complete.
const TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "int", "info", "biz", "io", "co", "uk", "de", "fr",
    "nl", "be", "ch", "at", "it", "es", "pt", "se", "no", "dk", "fi", "pl", "cz", "ru", "ua", "cn",
    "jp", "kr", "in", "au", "nz", "ca", "us", "br", "mx", "ar", "za", "eu", "me", "ai", "ac",
    "local", "lan", "corp", "example", "test",
];
const GENERIC_TLDS: &[&str] = &[
    "com", "org", "net", "edu", "gov", "mil", "info", "biz", "io",
];

fn regex(cell: &'static std::sync::OnceLock<regex::Regex>, re: &str) -> &'static regex::Regex {
    cell.get_or_init(|| regex::Regex::new(re).expect("regex"))
}

/// Undoes OCR damage to e-mail addresses before they are extracted: a hyphen read as a dash
/// (`—`, `–`, `−`, …, alone or beside a `-`); `@` read as `©`, `®` or a full-width `＠`; `(at)` / `[at]` spellings; single spaces around `@`; a spaced dot before the
/// top-level domain (`mx1.example. io`); a comma for the only dot of a domain (`example,com`).
/// Text without anything address-like is returned unchanged.
pub fn repair_addresses(text: &str) -> String {
    static AT_WORD: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static AT_SIGN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static AT_SPACED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static DOT_SPACED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static COMMA: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static LOCAL_COMMA: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static DOT_SPLIT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static INITIAL_SPLIT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static DOT_LOST: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static LOCAL_SPLIT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static DASHES: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    const LOCAL: &str = r"[A-Za-z0-9._%+\-]";
    let at_word = regex(
        &AT_WORD,
        &format!(r"({LOCAL}) ?(?:\(at\)|\[at\]|\{{at\}}) ?([A-Za-z0-9])"),
    );
    let at_sign = regex(&AT_SIGN, &format!(r"({LOCAL})[©®＠]([A-Za-z0-9])"));
    let at_spaced = regex(
        &AT_SPACED,
        &format!(r"({LOCAL})(?: @ ?| ?@ )([A-Za-z0-9][A-Za-z0-9\-]*\.[A-Za-z])"),
    );
    let mut t = text.to_string();
    // a hyphen read as a dash (or a dash and a hyphen): `ops—-team`
    if t.contains([
        '\u{2010}', '\u{2011}', '\u{2012}', '\u{2013}', '\u{2014}', '\u{2015}', '\u{2212}',
    ]) {
        let dashes = regex(&DASHES, "-?[\u{2010}-\u{2015}\u{2212}]+-?");
        t = dashes.replace_all(&t, "-").into_owned();
    }
    if t.contains(['©', '®', '＠']) {
        t = at_sign.replace_all(&t, "$1@$2").into_owned();
    }
    if t.contains("at)") || t.contains("at]") || t.contains("at}") {
        t = at_word.replace_all(&t, "$1@$2").into_owned();
    }
    if !t.contains('@') {
        return t;
    }
    t = at_spaced.replace_all(&t, "$1@$2").into_owned();
    // a local part split after `_`, `+` or `-` (`d_ miller@…`)
    let local_split = regex(
        &LOCAL_SPLIT,
        r"([A-Za-z0-9][A-Za-z0-9._%+\-]*[_+\-]) ([A-Za-z0-9._%+\-]+@[A-Za-z0-9])",
    );
    t = local_split.replace_all(&t, "$1$2").into_owned();
    // a local part split after a dot before a one-character part (`anna. k@…`): a local
    // part of one character is rarer than a space read after a dot
    let dot_split = regex(
        &DOT_SPLIT,
        r"(^|\s)([A-Za-z0-9][A-Za-z0-9._%+\-]*\.) ([A-Za-z0-9]@[A-Za-z0-9])",
    );
    t = dot_split.replace_all(&t, "$1$2$3").into_owned();
    // the mirror case: a space read before the dot after a one-character first part
    // (`j .doe@…`): a local part cannot start with a dot, so the initial belongs to it
    let initial_split = regex(
        &INITIAL_SPLIT,
        r"(^|\s)([A-Za-z0-9]) (\.[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9])",
    );
    t = initial_split.replace_all(&t, "$1$2$3").into_owned();
    // the dot before a generic top-level domain read as a space, after a domain of one
    // label (`bob@example org`)
    let dot_lost = regex(
        &DOT_LOST,
        r"@([A-Za-z0-9][A-Za-z0-9\-]*) (com|org|net|edu|gov)\b",
    );
    t = dot_lost.replace_all(&t, "@$1.$2").into_owned();
    // `@domain.labels` then spaced dots and labels ending in a known top-level domain
    // (`mx1.example. io`, `lab. example. edu`), unless the domain is already complete
    let dot_spaced = regex(
        &DOT_SPACED,
        r"@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)((?:(?: \. ?| ?\. )[a-z0-9\-]+)+)\b",
    );
    t = dot_spaced
        .replace_all(&t, |c: &regex::Captures<'_>| {
            let domain = &c[1];
            let labels: Vec<&str> = c[2].split(['.', ' ']).filter(|l| !l.is_empty()).collect();
            let last = domain.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
            let complete = domain.contains('.') && GENERIC_TLDS.contains(&last.as_str());
            // the longest run of labels that ends in a top-level domain
            match labels.iter().rposition(|l| TLDS.contains(l)) {
                Some(end) if !complete => {
                    let joined = labels[..=end].join(".");
                    // what followed the last joined label stays as it was
                    let tail: Vec<&str> = labels[end + 1..].to_vec();
                    let mut out = format!("@{domain}.{joined}");
                    if !tail.is_empty() {
                        out.push_str(". ");
                        out.push_str(&tail.join(". "));
                    }
                    out
                }
                _ => c[0].to_string(),
            }
        })
        .into_owned();
    // a `.` read as `,` (small bitmap fonts): in the local part of a word glued to the `@`
    // (`1,martin@`, `p.,novak@`; not `a@b,c@…`, whose part before the comma holds an `@`) and
    // between the labels of a domain that ends in a known top-level domain
    // (`@alerts,example,net`; not `@example,commander`, nor a comma before another `@`)
    let local_comma = regex(
        &LOCAL_COMMA,
        r"(^|[\s<(\[:;=\x22'])([A-Za-z0-9._%+\-]*[A-Za-z0-9](?:[.,]*,[.,]*[A-Za-z0-9._%+\-]+)+)@",
    );
    t = local_comma
        .replace_all(&t, |c: &regex::Captures<'_>| {
            let mut local = c[2].replace(',', ".");
            while local.contains("..") {
                local = local.replace("..", ".");
            }
            format!("{}{local}@", &c[1])
        })
        .into_owned();
    let comma = regex(&COMMA, r"@([A-Za-z0-9\-]+(?:[.,]+[A-Za-z0-9\-]+)+)(@?)");
    comma
        .replace_all(&t, |c: &regex::Captures<'_>| {
            // `,.`/`.,` for one dot too (`@ufficio.,example.it`)
            let labels: Vec<&str> = c[1].split([',', '.']).filter(|l| !l.is_empty()).collect();
            let last = labels.last().copied().unwrap_or("");
            let common = TLDS.contains(&last) || (last.len() == 2 && crate::tld::is_tld(last));
            if c[1].contains(',') && c[2].is_empty() && common {
                format!("@{}", labels.join("."))
            } else {
                c[0].to_string()
            }
        })
        .into_owned()
}

/// E-mail addresses in text (after [`repair_addresses`]), in order of appearance, de-duplicated
/// case-insensitively.
pub fn extract_emails(text: &str) -> Vec<String> {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = regex(
        &RE,
        r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}",
    );
    let text = repair_addresses(text);
    let mut out: Vec<String> = Vec::new();
    for m in re.find_iter(&text) {
        // a word that starts with the `.` of a local part lost its first character (`j.doe`
        // read `.doe`): not an address to report
        let word_start = text[..m.start()]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || "<([:;=\"'".contains(c));
        if word_start && m.as_str().starts_with('.') {
            continue;
        }
        let a = m
            .as_str()
            .trim_start_matches(['.', '-'])
            .trim_end_matches(['.', '-']);
        let Some(a) = repair_read_address(a) else {
            continue;
        };
        if crate::leak::plausible_address(&a) && !out.iter().any(|o| o.eq_ignore_ascii_case(&a)) {
            out.push(a);
        }
    }
    out
}

/// One address as extracted from OCR text, checked and repaired: its top-level domain must be
/// a known one or one OCR confusion away from exactly one ([`crate::tld::repair_tld`]:
/// `.con` → `.com`; otherwise the address is dropped), and a local part that starts with a
/// single digit `1`/`0` before a dot and a letter is an initial (`1.martin` → `l.martin`).
fn repair_read_address(a: &str) -> Option<String> {
    let (local, domain) = a.split_once('@')?;
    let (head, tld) = domain.rsplit_once('.')?;
    let tld = crate::tld::repair_tld(tld)?;
    let mut local = local.to_string();
    let b = local.as_bytes();
    if b.len() >= 3 && b[1] == b'.' && b[2].is_ascii_alphabetic() {
        match b[0] {
            b'1' => local.replace_range(0..1, "l"),
            b'0' => local.replace_range(0..1, "o"),
            _ => {}
        }
    }
    Some(format!("{local}@{head}.{tld}"))
}

/// Lower-case text for keyword rules: inside a token with at least two letters, `1`/`|` → `l`
/// and `0` → `o`; whitespace runs → one space; no space before `:`.
fn keyword_text(lower: &str) -> String {
    let mut out = String::with_capacity(lower.len() + 1);
    for tok in lower.split_whitespace() {
        if tok.starts_with(':') && out.ends_with(' ') {
            out.pop();
        }
        let letters = tok.chars().filter(|c| c.is_alphabetic()).count();
        if letters >= 2 {
            out.extend(tok.chars().map(|c| match c {
                '1' | '|' => 'l',
                '0' => 'o',
                c => c,
            }));
        } else {
            out.push_str(tok);
        }
        out.push(' ');
    }
    format!(" {out}")
}

/// Tags derived from an analysis (see docs/DESIGN.md for the rules).
pub fn derive_tags(a: &Analysis) -> Vec<String> {
    let mut t = Vec::new();
    if a.blank {
        t.push("blank");
    }
    let lower = a.text.to_lowercase();
    let alnum = a
        .words
        .iter()
        .filter(|w| w.conf >= 60.0)
        .map(|w| w.text.chars().filter(|c| c.is_alphanumeric()).count())
        .sum::<usize>();
    if alnum >= 3 {
        t.push("text");
    }
    // keyword text robust to OCR: `1`/`0` inside words read as `l`/`o` (`1ogin`, `passw0rd`),
    // one space between words, none before `:`; `compact` has no spaces at all
    let kw = keyword_text(&lower);
    let compact: String = kw.chars().filter(|c| *c != ' ').collect();
    let has = |k: &str| kw.contains(k);
    let has_c = |k: &str| compact.contains(k);
    if has("login:")
        || has_c("password")
        || has_c("username")
        || has("log on")
        || has("sign in")
        || has("log in")
    {
        t.push("login_prompt");
    }
    if has_c("ctrl+alt+del")
        || has_c("ctrl-alt-del")
        || has_c("control+alt+del")
        || has_c("control-alt-del")
        || has("locked")
    {
        t.push("lock_screen");
    }
    static PROMPT: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let prompt = regex(&PROMPT, r"(?m)[A-Za-z0-9_.\-]+@[A-Za-z0-9_.\-]+:\s?[~/]");
    if a.text.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("$ ") || l == "$" || l.starts_with("# ")
    }) || has(" tty")
        || lower.starts_with("tty")
        || prompt.is_match(&a.text)
    {
        t.push("terminal");
    }
    let bottom = a.height.saturating_mul(9) / 10;
    let logo_in_taskbar = a.logos.iter().any(|l| l.bbox[1] >= bottom);
    if logo_in_taskbar
        || has_c("recyclebin")
        || a.words
            .iter()
            .any(|w| w.text.ends_with("Start") && w.bbox[1] >= bottom)
    {
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

#[cfg(feature = "ocr")]
impl Analyzer {
    /// Builds an analyzer: loads tesseract (eng), the Haar cascade and the logo templates.
    pub fn new(cfg: AnalyzerConfig) -> Result<Analyzer, EnrichError> {
        let ocr = OcrEngine::new(cfg.ocr)?;
        let cascade = Cascade::load(&cfg.cascade)?;
        let templates = if cfg.logo_templates.is_empty() {
            vec![Template::windows()]
        } else {
            cfg.logo_templates
                .iter()
                .map(|(n, p)| Template::load(n, p))
                .collect::<Result<_, _>>()?
        };
        Ok(Analyzer {
            cfg,
            ocr,
            cascade,
            templates,
        })
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
        let mut tm = EnrichTimings::default();
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
                // OpenCV's grey (not PIL's), so the cascade sees what detectMultiScale sees
                a.faces = self.cascade.detect(&rgb.to_grey_opencv(), &self.cfg.faces);
                a.timings.faces_ms = ms(t);
                let t = Instant::now();
                for tpl in &self.templates {
                    a.logos.extend(find_logo(rgb, tpl, &self.cfg.logos));
                }
                a.timings.logos_ms = ms(t);
            }
            let t = Instant::now();
            let masks: Vec<[u32; 4]> = a
                .logos
                .iter()
                .map(|l| l.bbox)
                .chain(a.faces.iter().map(|f| f.bbox))
                .collect();
            let o = self.ocr.ocr_masked(&grey, &masks)?;
            a.timings.ocr_ms = ms(t);
            a.text = o.text;
            a.words = o.words;
            a.emails = extract_emails(&o.email_text);
        }
        a.tags = derive_tags(&a);
        a.timings.total_ms = ms(t_all);
        Ok(a)
    }

    /// Fills `a.leaks` from the leak database (each address as read, or a reading it may stand
    /// for: [`LeakDb::lookup_read`]) and re-derives the tags.
    pub fn lookup_leaks(a: &mut Analysis, leaks: &LeakDb) -> Result<(), EnrichError> {
        a.leaks.clear();
        for e in &a.emails {
            if let Some((_, recs)) = leaks.lookup_read(e)? {
                a.leaks.extend(recs);
            }
        }
        a.tags = derive_tags(a);
        Ok(())
    }
}

/// Runs the whole workflow on local files: one JSON object per file (`{"file", ...analysis}`
/// or `{"file", "error"}`), in order. This is what `overlord images analyze FILE...` prints.
/// With a leak database, known addresses become `leaks`.
#[cfg(feature = "ocr")]
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
                let meta = std::fs::metadata(p).map_err(|e| EnrichError::Io {
                    path: file.clone(),
                    source: e,
                })?;
                if meta.len() > max {
                    return Err(EnrichError::InputTooLarge {
                        len: meta.len() as usize,
                        cap: max as usize,
                    });
                }
                let bytes = std::fs::read(p).map_err(|e| EnrichError::Io {
                    path: file.clone(),
                    source: e,
                })?;
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

#[cfg(test)]
mod email_tests {
    use super::{extract_emails as ex, repair_addresses};

    #[test]
    fn ocr_damaged_addresses_are_repaired() {
        let cases: &[(&str, &[&str])] = &[
            (
                "From: alice.smith@example-corp.com",
                &["alice.smith@example-corp.com"],
            ),
            (
                "From: alice.smith©example-corp.com",
                &["alice.smith@example-corp.com"],
            ),
            (
                "contact: ops®corp.example.net now",
                &["ops@corp.example.net"],
            ),
            ("mail: bob＠example.org", &["bob@example.org"]),
            (
                "write to carol (at) example.co.uk",
                &["carol@example.co.uk"],
            ),
            ("write to carol[at]example.co.uk", &["carol@example.co.uk"]),
            ("<d.miller @ mx1.example.io>", &["d.miller@mx1.example.io"]),
            (
                "6 From: ops—-team@mx1.example.io",
                &["ops-team@mx1.example.io"],
            ),
            (
                "ops\u{2013}team@mail\u{2010}example.org",
                &["ops-team@mail-example.org"],
            ),
            (
                "<d_ miller+alerts@mx1.example.io>",
                &["d_miller+alerts@mx1.example.io"],
            ),
            (
                "<d_miller+alerts@mx1.example. io>  ALARM",
                &["d_miller+alerts@mx1.example.io"],
            ),
            (
                "carol.white@finance.example .co. uk",
                &["carol.white@finance.example.co.uk"],
            ),
            ("root@example,com", &["root@example.com"]),
            (
                "a@x.example.com, b@y.example.org",
                &["a@x.example.com", "b@y.example.org"],
            ),
            // held-out e-mail work: `.` read as `,` in a local part and in a domain
            ("From: 1,garcia@mail,acme,net", &["l.garcia@mail.acme.net"]),
            ("To: t,nguyen@acme,co,uk", &["t.nguyen@acme.co.uk"]),
            ("ask ivan@lab.,acme.it now", &["ivan@lab.acme.it"]),
            ("cc: r.,diaz@acme,com", &["r.diaz@acme.com"]),
            // a digit initial, a spaced domain of several labels, a confused TLD
            ("owner 0.berg@acme.se", &["o.berg@acme.se"]),
            ("mail: ivan@lab. acme. edu", &["ivan@lab.acme.edu"]),
            ("ivan@acme.con", &["ivan@acme.com"]),
            ("ivan@acme.arg", &["ivan@acme.org"]),
            ("ivan@acme.cam", &["ivan@acme.com"]),
            // a space after the dot of a local part, the dot before `org` read as a space
            ("abuse: maria. b@acme.nl", &["maria.b@acme.nl"]),
            ("abuse: t-berg@acme org", &["t-berg@acme.org"]),
            // a space read before the dot after an initial (held-out seed 41, xterm 7x13)
            ("abuse: j .doe@hq.acme.fr", &["j.doe@hq.acme.fr"]),
        ];
        for (text, want) in cases {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(ex(text), want, "{text:?} -> {:?}", repair_addresses(text));
        }
    }

    #[test]
    fn ordinary_text_is_not_turned_into_addresses() {
        let cases: &[(&str, &[&str])] = &[
            ("© 2024 Example Corp. All rights reserved.", &[]),
            ("Copyright © example.com", &[]),
            ("mail bob@example.com. then log out", &["bob@example.com"]),
            ("mail bob@example.com. it works", &["bob@example.com"]),
            ("ping me @ home. it works", &[]),
            ("user@host:~$ ls", &[]),
            ("a@b,c@d.example.org", &["c@d.example.org"]),
            ("see alice@example.com, bob", &["alice@example.com"]),
            ("alice@example,commander", &[]),
            ("- bob@example.org", &["bob@example.org"]),
            ("Mr. bob@example.org", &["bob@example.org"]),
            // an initial lost (`k.berg` read `.berg`): not reported
            ("abuse: .berg@acme.net", &[]),
            // an initial is joined only when it stands alone
            ("abuse: jo .berg@acme.net", &[]),
            // no known top-level domain, not even one confusion away
            ("ivan@acme.qqq and x@y.zzzz", &[]),
            // a comma after a name that holds no address is left alone
            ("To: bob, alice@acme.org", &["alice@acme.org"]),
            ("ask bob@acme.com org", &["bob@acme.com"]),
        ];
        for (text, want) in cases {
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            assert_eq!(ex(text), want, "{text:?} -> {:?}", repair_addresses(text));
        }
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    fn tags_of(text: &str) -> Vec<String> {
        let a = Analysis {
            version: ANALYSIS_VERSION,
            width: 1024,
            height: 768,
            blank: false,
            entropy: 3.0,
            differing_pixels: 1000,
            phash64: "0".repeat(16),
            phash256: "0".repeat(64),
            text: text.into(),
            words: Vec::new(),
            emails: extract_emails(text),
            faces: Vec::new(),
            logos: Vec::new(),
            tags: Vec::new(),
            leaks: Vec::new(),
            timings: EnrichTimings::default(),
        };
        derive_tags(&a)
    }

    #[test]
    fn keyword_tags_survive_ocr_confusions() {
        for (text, tag) in [
            ("web01 login: ", "login_prompt"),
            ("web01 login : ", "login_prompt"),
            ("web01 1ogin:", "login_prompt"),
            ("Passw0rd:", "login_prompt"),
            ("User name:", "login_prompt"),
            ("Press CTRL + ALT + DELETE to log on", "lock_screen"),
            ("Press Ctrl-Alt-Del", "lock_screen"),
            ("admin@db02:~S5", "terminal"),
            ("root@web-01:/var/log# ", "terminal"),
            ("Debian GNU/Linux 12 web01 ttyl", "terminal"),
            ("Recycle  Bin", "desktop"),
            ("mail ops©corp.example.com", "has_emails"),
        ] {
            let t = tags_of(text);
            assert!(t.iter().any(|x| x == tag), "{text:?}: {t:?}");
        }
        for (text, tag) in [
            ("the design is signing off", "login_prompt"),
            ("© 2024 Example Corp.", "has_emails"),
            ("report: 12 items", "terminal"),
        ] {
            let t = tags_of(text);
            assert!(!t.iter().any(|x| x == tag), "{text:?}: {t:?}");
        }
    }
}
