//! OCR with tesseract: one persistent engine per worker thread, screenshot-specific
//! preprocessing and our own block layout.
//!
//! Pipeline (each step measured in docs/DESIGN.md, "Image enrichment"):
//! 1. grey (luma);
//! 2. block layout: an edge ("ink") map, run-length smearing into text lines, lines merged into
//!    blocks (so that a table stays one block and scattered desktop labels become separate blocks);
//! 3. per block: invert when the block's background is dark (light-on-dark text), upscale so the
//!    text line is about 36 px tall (bilinear), recognise as one uniform block (PSM 6);
//! 4. words kept with confidences and boxes (mapped back to image coordinates); isolated junk
//!    (no letter or digit and low confidence: pointer arrows, icons) is dropped.
//!
//! Otsu binarisation was measured and hurts on these screens (anti-aliased small fonts), so it
//! is not used.

// Without the `ocr` feature only the types, the e-mail heuristics and the layout engine stay; the
// helpers only the tesseract engine calls are unused then.
#![cfg_attr(not(feature = "ocr"), allow(dead_code))]

use crate::decode::Grey;
use crate::error::EnrichError;
use serde::{Deserialize, Serialize};
#[cfg(feature = "ocr")]
use tesseract::{PageSegMode, Tesseract};

/// A word read on a screen: the finding schema's record.
pub use overlord_core::finding::enrichment::Word;

/// Result of OCR on one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OcrText {
    /// Text in reading order: blocks top to bottom (left to right within a row), lines inside.
    pub text: String,
    pub words: Vec<Word>,
    /// Text blocks found by the layout step (x, y, w, h).
    pub blocks: Vec<[u32; 4]>,
    /// The text e-mail addresses are extracted from: `text` with each line that holds an
    /// address-like word replaced by its re-reading when that reads better (see
    /// [`OcrEngine::ocr_masked`]).
    #[serde(default)]
    pub email_text: String,
}

/// How a screenshot is prepared for tesseract.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OcrParams {
    /// Use our block layout (true) or give tesseract the whole image (false).
    pub own_layout: bool,
    /// Invert blocks (or the whole image) whose background is dark.
    pub invert_dark: bool,
    /// Target text-line height after upscaling, in pixels (0: no upscaling).
    pub target_line_px: u32,
    /// Fixed upscale factor used when `own_layout` is false (1 = none).
    pub whole_scale: u32,
    /// Tesseract page segmentation mode number (3 auto, 6 block, 11 sparse).
    pub psm: u32,
    /// Binarise with Otsu before recognition (measured: hurts).
    pub otsu: bool,
    /// Drop words without letters/digits whose confidence is below this.
    pub junk_conf: f32,
    /// Maximum side of an upscaled block (bounds time and memory).
    pub max_side: u32,
    /// Blocks whose words have a lower mean confidence are dropped (photos read as text).
    pub min_block_conf: f32,
    /// At most this many blocks are read (bounds time on noisy images).
    pub max_blocks: usize,
    /// Turn `@`/`0@` misreadings of monospace zeros back into `0` outside e-mail addresses.
    pub fix_zero: bool,
    /// Re-read lines holding an address-like word at this line height (px) with an engine
    /// restricted to address characters (0: off).
    pub email_reread_px: u32,
}

impl Default for OcrParams {
    fn default() -> Self {
        OcrParams {
            own_layout: true,
            invert_dark: true,
            target_line_px: 36,
            whole_scale: 1,
            psm: 6,
            otsu: false,
            junk_conf: 90.0,
            max_side: 4096,
            min_block_conf: 50.0,
            max_blocks: 200,
            fix_zero: true,
            email_reread_px: 56,
        }
    }
}

#[cfg(all(target_os = "linux", feature = "ocr"))]
mod omp {
    #[link(name = "gomp")]
    unsafe extern "C" {
        fn omp_set_num_threads(n: std::os::raw::c_int);
    }
    /// Tesseract is built with OpenMP; one engine per worker thread must not spawn more.
    pub fn single_thread() {
        // SAFETY: sets this thread's OpenMP ICV; no pointers involved.
        unsafe { omp_set_num_threads(1) }
    }
}

/// A tesseract engine owned by one thread (tesseract's engine is `Send`, not `Sync`).
#[cfg(feature = "ocr")]
pub struct OcrEngine {
    tess: Option<Tesseract>,
    /// Second engine restricted to address characters (created on first use).
    mail_tess: Option<Tesseract>,
    params: OcrParams,
}

/// Characters the address re-reading may produce: no `,`/`;` (a `.` read as `,` is the most
/// common damage in small fonts) and no look-alike symbols (`©`, `®`).
#[cfg(feature = "ocr")]
const MAIL_WHITELIST: &str =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789@._+-:<>()[]'\"/!?#$%&*=|~";

#[cfg(feature = "ocr")]
fn psm_of(n: u32) -> PageSegMode {
    match n {
        3 => PageSegMode::PsmAuto,
        4 => PageSegMode::PsmSingleColumn,
        7 => PageSegMode::PsmSingleLine,
        11 => PageSegMode::PsmSparseText,
        12 => PageSegMode::PsmSparseTextOsd,
        _ => PageSegMode::PsmSingleBlock,
    }
}

#[cfg(feature = "ocr")]
fn new_tess() -> Result<Tesseract, EnrichError> {
    #[cfg(target_os = "linux")]
    omp::single_thread();
    Tesseract::new(None, Some("eng"))
        .map_err(|e| EnrichError::Ocr(format!("cannot initialise tesseract (eng): {e}")))?
        .set_variable("debug_file", "/dev/null")
        .map_err(|e| EnrichError::Ocr(e.to_string()))
}

#[cfg(feature = "ocr")]
impl OcrEngine {
    /// Creates an engine (loads the English model once).
    pub fn new(params: OcrParams) -> Result<OcrEngine, EnrichError> {
        Ok(OcrEngine {
            tess: Some(new_tess()?),
            mail_tess: None,
            params,
        })
    }

    pub fn params(&self) -> &OcrParams {
        &self.params
    }

    pub fn set_params(&mut self, params: OcrParams) {
        self.params = params;
    }

    /// Recognises a grey frame; returns words with boxes in frame coordinates.
    fn recognise(&mut self, g: &Grey, psm: u32) -> Result<Vec<(Word, LineKey)>, EnrichError> {
        let tess = match self.tess.take() {
            Some(t) => t,
            None => new_tess()?,
        };
        let (tess, r) = Self::run(tess, g, psm);
        self.tess = tess;
        r
    }

    /// Recognises with the address engine (whitelist of address characters).
    fn recognise_mail(&mut self, g: &Grey, psm: u32) -> Result<Vec<(Word, LineKey)>, EnrichError> {
        let tess = match self.mail_tess.take() {
            Some(t) => t,
            None => new_tess()?
                .set_variable("tessedit_char_whitelist", MAIL_WHITELIST)
                .map_err(|e| EnrichError::Ocr(e.to_string()))?,
        };
        let (tess, r) = Self::run(tess, g, psm);
        self.mail_tess = tess;
        r
    }

    fn run(tess: Tesseract, g: &Grey, psm: u32) -> (Option<Tesseract>, Recognised) {
        let mut tess =
            match tess.set_frame(&g.data, g.width as i32, g.height as i32, 1, g.width as i32) {
                Ok(t) => t,
                Err(e) => return (None, Err(EnrichError::Ocr(e.to_string()))),
            };
        tess.set_page_seg_mode(psm_of(psm));
        let mut tess = match tess.set_source_resolution(70).recognize() {
            Ok(t) => t,
            Err(e) => return (None, Err(EnrichError::Ocr(e.to_string()))),
        };
        let tsv = tess
            .get_tsv_text(0)
            .map_err(|e| EnrichError::Ocr(e.to_string()));
        (Some(tess), tsv.map(|t| parse_tsv(&t)))
    }

    /// OCR of a grey screenshot.
    pub fn ocr(&mut self, grey: &Grey) -> Result<OcrText, EnrichError> {
        self.ocr_masked(grey, &[])
    }

    /// OCR of a grey screenshot with some regions (x, y, w, h) blanked out first (detected logos
    /// and faces: graphics next to a label make tesseract drop the label).
    pub fn ocr_masked(&mut self, grey: &Grey, masks: &[[u32; 4]]) -> Result<OcrText, EnrichError> {
        let p = self.params;
        let masked;
        let grey = if masks.is_empty() {
            grey
        } else {
            let mut g = grey.clone();
            for m in masks {
                fill_with_surround(&mut g, m);
            }
            masked = g;
            &masked
        };
        // blocks with the height of their text lines
        let laid: Vec<Laid> = if p.own_layout {
            layout(grey)
        } else {
            let all = [0, 0, grey.width, grey.height];
            vec![(all, grey.height, all)]
        };
        let mut blocks: Vec<[u32; 4]> = laid.iter().map(|l| l.0).collect();
        blocks.sort_by_key(|b| (b[1], b[0]));
        let mut blocks = reading_order(blocks);
        blocks.truncate(p.max_blocks);
        // textures are painted over with each block's background before recognition
        let texture = if p.own_layout {
            texture_mask(grey)
        } else {
            None
        };
        let mut out = OcrText::default();
        let mut texts = Vec::new();
        let mut mail_texts = Vec::new();
        for b in &blocks {
            let mut crop = crop(grey, b);
            // beyond a window border inside the padding: the text's own background
            if let Some((_, _, inner)) = laid.iter().find(|l| l.0 == *b)
                && inner != b
            {
                let (ix0, iy0) = (inner[0] - b[0], inner[1] - b[1]);
                let (ix1, iy1) = (ix0 + inner[2], iy0 + inner[3]);
                let inside = self::crop(&crop, &[ix0, iy0, inner[2], inner[3]]);
                let bg = background(&inside);
                // only text on a plain background (a window), not a photo's edge
                let plain = inside.data.iter().filter(|&&v| v.abs_diff(bg) <= 8).count() * 2
                    >= inside.data.len();
                for y in (0..b[3]).filter(|_| plain) {
                    for x in 0..b[2] {
                        if x < ix0 || x >= ix1 || y < iy0 || y >= iy1 {
                            crop.data[(y * b[2] + x) as usize] = bg;
                        }
                    }
                }
            }
            if let Some(t) = &texture {
                let bg = background(&crop);
                for y in 0..b[3] {
                    let row = ((b[1] + y) * grey.width + b[0]) as usize;
                    for x in 0..b[2] as usize {
                        if t[row + x] {
                            crop.data[(y * b[2]) as usize + x] = bg;
                        }
                    }
                }
            }
            // straight thin rules inside the block (a dialog's text-area frame beside and
            // under the text) are painted with the background (after the textures: a
            // hatched bar beside a frame line makes it look thick): read as `[`/`l` glued to the
            // first word and as `_` between words
            let lh = laid.iter().find(|l| l.0 == *b).map_or(b[3], |l| l.1);
            paint_rules(&mut crop, lh);
            let scale = if p.own_layout {
                if p.target_line_px == 0 {
                    1.0
                } else {
                    let lh = laid.iter().find(|l| l.0 == *b).map_or(b[3], |l| l.1);
                    (p.target_line_px as f32 / lh.max(4) as f32)
                        .round()
                        .clamp(1.0, 4.0)
                }
            } else {
                p.whole_scale.max(1) as f32
            };
            let scale = scale
                .min(p.max_side as f32 / crop.width.max(crop.height) as f32)
                .max(0.25);
            let prep = if p.email_reread_px > 0 {
                Some(crop.clone())
            } else {
                None
            };
            let mut img = if (scale - 1.0).abs() > 0.05 {
                resize_bilinear(&crop, scale)
            } else {
                crop
            };
            if p.invert_dark && background(&img) < 128 {
                img.data.iter_mut().for_each(|v| *v = 255 - *v);
            }
            if p.otsu {
                otsu_binarise(&mut img);
            }
            let mut words = self.recognise(&img, p.psm)?;
            if words.is_empty() && p.psm == 6 {
                // PSM 6 gives up on a framed single line (a button); PSM 7 reads it
                words = self.recognise(&img, 7)?;
            }
            // a block that yields one short, unsure word is a pointer, an icon or a glyph-like
            // graphic, not text
            if words.len() == 1 && words[0].0.text.chars().count() <= 3 && words[0].0.conf < 60.0 {
                words.clear();
            }
            // a block that is one character (`A` read in a photo, an icon's glyph) unless sure
            if words.len() == 1 && words[0].0.text.chars().count() == 1 && words[0].0.conf < 85.0 {
                words.clear();
            }
            // a block read with low mean confidence is a photo or a drawing, not text
            let mean_conf = words.iter().map(|w| w.0.conf).sum::<f32>() / words.len().max(1) as f32;
            if mean_conf < p.min_block_conf {
                words.clear();
            }
            // what the word filters below keep of a block: no letter or digit at all (a clock
            // hand read `\`, a round window `(\)`), or at most three of them unless sure
            // (`ey` in hair, `A` on a cheek): a picture, not text
            if short_unsure_block(&words, &p) {
                words.clear();
            }
            // (block, par, line) → words, with the line's box and each word's box in `img` pixels
            let mut lines: Vec<ReadLine> = Vec::new();
            let s = img.width as f32 / b[2] as f32;
            for (mut w, key) in words {
                if !keep_word(&w, &p) {
                    continue;
                }
                if p.fix_zero {
                    w.text = fix_zero_confusions(&w.text);
                }
                let ib = w.bbox;
                w.bbox = [
                    b[0] + (w.bbox[0] as f32 / s) as u32,
                    b[1] + (w.bbox[1] as f32 / s) as u32,
                    ((w.bbox[2] as f32 / s).ceil() as u32).max(1),
                    ((w.bbox[3] as f32 / s).ceil() as u32).max(1),
                ];
                match lines.last_mut() {
                    Some(l) if l.0 == key => {
                        l.1.push(w.text.clone());
                        l.2 = union(l.2, ib);
                        l.3.push(ib);
                    }
                    _ => lines.push((key, vec![w.text.clone()], ib, vec![ib])),
                }
                out.words.push(w);
            }
            let mut mail_lines = Vec::with_capacity(lines.len());
            for l in &lines {
                let mut words = l.1.clone();
                // `j .doe@…`: a space read between an initial and the dot after it. A local
                // part cannot start with a dot, so the lone initial belongs to it (else the
                // word reads as damaged and its re-reading drops the initial: `doe@…`).
                // The emptied word keeps its slot so words and boxes stay aligned.
                for i in 1..words.len() {
                    if joins_initial(&words[i - 1], &words[i]) {
                        words[i] = format!("{}{}", words[i - 1], words[i]);
                        words[i - 1].clear();
                    }
                }
                if let Some(prep) = &prep {
                    let lh = laid.iter().find(|x| x.0 == *b).map_or(b[3], |x| x.1);
                    for i in 0..words.len() {
                        // a clean reading is kept (and not re-read: time)
                        if !address_like(&words[i]) || !damaged(&words[i..].join(" ")) {
                            continue;
                        }
                        // the word's columns, the line's rows
                        let wb = l.3[i];
                        let rb = [wb[0], l.2[1], wb[2], l.2[3]];
                        let restricted = self
                            .reread_box(prep, rb, s, lh, true)?
                            .map(|r| r.0.join(" "));
                        let plain = self
                            .reread_box(prep, rb, s, lh, false)?
                            .map(|r| r.0.join(" "));
                        let with = |r: &Option<String>| {
                            r.as_ref().map(|r| {
                                let mut alt = words.clone();
                                alt[i] = r.clone();
                                alt.join(" ")
                            })
                        };
                        if let Some(r) = restricted.clone()
                            && similar_reading(&words[i], &r)
                            && use_restricted(
                                &words.join(" "),
                                with(&restricted).as_deref(),
                                with(&plain).as_deref(),
                            )
                        {
                            // an underscore read as a space: the re-read word starts with the
                            // `_` that reaches into its margin (`bob jonesGalerts…` →
                            // `_jones@alerts…`); it joins the word before it
                            let pb = if i > 0 { Some(l.3[i - 1]) } else { None };
                            let joins = r.starts_with('_')
                                && pb.is_some_and(|pb| {
                                    words[i - 1].ends_with(|c: char| c.is_alphanumeric())
                                        && wb[0] <= pb[0] + pb[2] + (lh as f32 * s) as u32
                                });
                            if joins {
                                words[i] = format!("{}{r}", words[i - 1]);
                                words[i - 1].clear();
                                continue;
                            }
                            words[i] = r;
                        }
                    }
                }
                words.retain(|w| !w.is_empty());
                mail_lines.push(words.join(" "));
            }
            let t: Vec<String> = lines.into_iter().map(|l| l.1.join(" ")).collect();
            if !t.is_empty() {
                texts.push(t.join("\n"));
                mail_texts.push(mail_lines.join("\n"));
            }
        }
        out.text = texts.join("\n");
        out.email_text = mail_texts.join("\n");
        out.blocks = blocks;
        Ok(out)
    }
}

#[cfg(feature = "ocr")]
impl OcrEngine {
    /// Re-reads one line (`lb`: its box in the block image upscaled by `s`) from the prepared
    /// block `prep` at [`OcrParams::email_reread_px`] with the address engine, as one line
    /// (PSM 7). Returns the words and their confidences, or `None` when nothing was read.
    fn reread_box(
        &mut self,
        prep: &Grey,
        lb: [u32; 4],
        s: f32,
        lh: u32,
        restricted: bool,
    ) -> Result<Option<(Vec<String>, f32)>, EnrichError> {
        let p = self.params;
        let (padx, pady) = ((lh / 3).max(2) as f32, (lh / 2).max(3) as f32);
        let x0 = ((lb[0] as f32 / s) - padx).max(0.0) as u32;
        let y0 = ((lb[1] as f32 / s) - pady).max(0.0) as u32;
        let x1 = (((lb[0] + lb[2]) as f32 / s + padx).ceil() as u32).min(prep.width);
        let y1 = (((lb[1] + lb[3]) as f32 / s + pady).ceil() as u32).min(prep.height);
        if x1 <= x0 + 2 || y1 <= y0 + 2 {
            return Ok(None);
        }
        let mut sub = crop(prep, &[x0, y0, x1 - x0, y1 - y0]);
        // only the word: its neighbours' glyphs in the margin are painted over (a `:` before
        // the word was read as `J`)
        let bg = background(&sub);
        let wx0 = ((lb[0] as f32 / s).floor() as u32).saturating_sub(1 + x0);
        let wx1 = (((lb[0] + lb[2]) as f32 / s).ceil() as u32 + 1).saturating_sub(x0);
        for y in 0..sub.height {
            for x in (0..sub.width).filter(|&x| x < wx0 || x >= wx1) {
                sub.data[(y * sub.width + x) as usize] = bg;
            }
        }
        let scale = (p.email_reread_px as f32 / lh.max(4) as f32)
            .clamp(1.0, 6.0)
            .min(p.max_side as f32 / sub.width.max(sub.height) as f32);
        let mut img = if (scale - 1.0).abs() > 0.05 {
            resize_bilinear(&sub, scale)
        } else {
            sub
        };
        if p.invert_dark && background(&img) < 128 {
            img.data.iter_mut().for_each(|v| *v = 255 - *v);
        }
        let words = if restricted {
            self.recognise_mail(&img, 7)?
        } else {
            self.recognise(&img, 7)?
        };
        if words.is_empty() {
            return Ok(None);
        }
        let conf = words.iter().map(|w| w.0.conf).sum::<f32>() / words.len() as f32;
        Ok(Some((words.into_iter().map(|w| w.0.text).collect(), conf)))
    }
}

/// Word filter: no letter or digit and unsure (pointer arrows, icons), or one or two unsure
/// glyphs (a text cursor, a pointer or an icon edge).
fn keep_word(w: &Word, p: &OcrParams) -> bool {
    let alnum = w.text.chars().any(char::is_alphanumeric);
    !(!alnum && w.conf < p.junk_conf || w.text.chars().count() <= 2 && w.conf < 40.0)
}

/// Whether what [`keep_word`] keeps of a block's words is a picture read as text: no letter
/// or digit at all, at most three with a mean confidence under 75, one under 95, or words of
/// at most two letters or digits each under 70.
/// (Held-out screens without text: 6-22 characters per 64 screens came from such blocks —
/// `\` for a clock hand at 93 %, `(\)` for a round window, `ey`/`cy`/`ut` in hair and
/// photos at 41-72 %, `A` on a cheek at 87-94 %.)
fn short_unsure_block(words: &[(Word, LineKey)], p: &OcrParams) -> bool {
    let kept: Vec<&Word> = words
        .iter()
        .map(|w| &w.0)
        .filter(|w| keep_word(w, p))
        .collect();
    if kept.is_empty() {
        return false;
    }
    let alnum: usize = kept
        .iter()
        .map(|w| w.text.chars().filter(|c| c.is_alphanumeric()).count())
        .sum();
    let mean = kept.iter().map(|w| w.conf).sum::<f32>() / kept.len() as f32;
    // only fragments of at most two letters or digits each, read unsure (`a =a nh` in the
    // hair above a face)
    let fragments = kept
        .iter()
        .all(|w| w.text.chars().filter(|c| c.is_alphanumeric()).count() <= 2);
    alnum == 0 || alnum <= 3 && mean < 75.0 || alnum == 1 && mean < 95.0 || fragments && mean < 70.0
}

fn union(a: [u32; 4], b: [u32; 4]) -> [u32; 4] {
    let x0 = a[0].min(b[0]);
    let y0 = a[1].min(b[1]);
    let x1 = (a[0] + a[2]).max(b[0] + b[2]);
    let y1 = (a[1] + a[3]).max(b[1] + b[3]);
    [x0, y0, x1 - x0, y1 - y0]
}

/// A word that may be (or hold) an e-mail address: an `@` (or a look-alike) between word
/// characters that is not a shell prompt's (`root@web01:~#`), or a dotted domain shape
/// (`name.tld` after at least two characters) whose last label is a top-level domain or one
/// OCR confusion from one (not a file name: `db.sql.gz`, `etc.tar`).
pub(crate) fn address_like(w: &str) -> bool {
    let t = w.trim_matches(|c: char| !c.is_alphanumeric());
    if t.chars().count() < 5 {
        return false;
    }
    if let Some(at) = t.find(['@', '©', '®', '＠']) {
        // `user@host:` is a prompt
        let host = &t[at..];
        let prompt = w.contains(":~") || w.contains(":/") || w.ends_with(':') || {
            let rest: String = host.chars().skip(1).collect();
            rest.split_once(':').is_some_and(|(h, _)| !h.contains('.'))
        };
        return !prompt;
    }
    // `name.tld`: the last dot-separated label 2..6 letters, something before it
    match t.rsplit_once(['.', ',']) {
        Some((head, tld)) => {
            head.chars().filter(|c| c.is_alphanumeric()).count() >= 3
                && (2..=6).contains(&tld.len())
                && tld.chars().all(|c| c.is_ascii_lowercase())
                && crate::tld::repair_tld(tld).is_some()
        }
        None => false,
    }
}

/// Whether the first reading of the address-like word that starts `rest` (the line from that
/// word on) shows OCR damage that a re-reading may undo. The line is judged after the text
/// repairs that extraction applies anyway (`,` for `.`, a spaced dot before the top-level
/// domain): damaged when no address starts at the word (`bob jonesGalerts.example.net`), the
/// word holds a character no address holds (`j}.doe@…`), the local part does not start with a
/// letter or digit (`.doe@…`: an initial lost), or the domain holds a capital letter
/// (`helpdesk@Gexample.nl`: `@` read as `@G`). A clean reading is kept: re-readings at another
/// scale can agree on a worse one (`ops-team@…` re-read as `team@…`, `c,white@…` as
/// `c.uhite@…`).
fn damaged(rest: &str) -> bool {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(
            r"^[A-Za-z0-9][A-Za-z0-9._%+\-]*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.([A-Za-z]{2,24})",
        )
        .expect("regex")
    });
    let r = crate::analyze::repair_addresses(rest);
    let t = r.trim_start_matches(['<', '(', '[', '"', '\'']);
    let Some(c) = re.captures(t) else {
        return true;
    };
    let m = c.get(0).map_or("", |m| m.as_str());
    let after = t[m.len()..].chars().next();
    let ends_clean = after.is_none_or(|ch| ch.is_whitespace() || ">)]\"',;:.".contains(ch));
    let domain = m.split_once('@').map_or("", |x| x.1);
    !ends_clean
        || domain.chars().any(|ch| ch.is_ascii_uppercase())
        || crate::tld::repair_tld(&c[1]).is_none()
        || crate::analyze::extract_emails(m).is_empty()
}

/// Whether `word` is a local part that lost its initial to a space: `prev` is one letter or
/// digit and `word` starts with a dot, then a letter or digit, and holds an `@` (`j` `.doe@…`).
fn joins_initial(prev: &str, word: &str) -> bool {
    let mut p = prev.chars();
    let lone = p.next().is_some_and(|c| c.is_ascii_alphanumeric()) && p.next().is_none();
    let mut w = word.chars();
    lone && w.next() == Some('.')
        && w.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && word.contains('@')
}

/// Whether a re-read word is close enough to the first reading to stand for the same text: at
/// most a quarter of its characters (at least 2) differ. Re-readings of a font tesseract cannot
/// read come back as other garbage (`jenkins@exanple.con` → `oitins@esanele.con`).
fn similar_reading(first: &str, reread: &str) -> bool {
    let (a, b) = (first.to_lowercase(), reread.to_lowercase());
    let n = a.chars().count().max(b.chars().count());
    crate::metrics::levenshtein(&a, &b) <= (n / 4).max(2)
}

/// Chooses the reading of a line to extract addresses from, given the first reading, the
/// re-reading of one address-like word with address characters only (`restricted`) and with
/// the plain engine (`plain`), both at a larger scale. Majority: when the two re-readings yield
/// the same addresses, theirs; when one agrees with the first reading, the first; when all
/// differ, the first unless it yields nothing and only the restricted reading (no `,` for `.`)
/// yields something. Returns whether the restricted re-reading replaces the word.
fn use_restricted(line: &str, restricted: Option<&str>, plain: Option<&str>) -> bool {
    let key = |t: &str| -> Vec<String> {
        crate::analyze::extract_emails(t)
            .into_iter()
            .map(|e| e.to_lowercase())
            .collect()
    };
    let e0 = key(line);
    let e1 = restricted.map(key);
    let e2 = plain.map(key);
    tracing::debug!(
        line,
        ?e0,
        ?restricted,
        ?e1,
        ?plain,
        ?e2,
        "address re-reading"
    );
    match (e1, e2) {
        (Some(e1), Some(e2)) if e1 == e2 && !e1.is_empty() => true,
        (Some(e1), e2) => e0.is_empty() && !e1.is_empty() && e2.is_none_or(|e| e.is_empty()),
        _ => false,
    }
}

/// Monospace console fonts draw a dotted or slashed zero that tesseract reads as `@`, `0@` or
/// `@0`. In a word that is not an e-mail address (no `@` followed by a dotted domain) nor a shell
/// prompt (`user@host:~$`), those readings are turned back into `0`; a lone `@` only when a
/// neighbour is a digit (`web@2`, `Mar@1`), since a zero between two letters is rare and an `@`
/// between letters is usually an `@`.
pub fn fix_zero_confusions(word: &str) -> String {
    let Some(at) = word.find('@') else {
        return word.to_string();
    };
    let domain = &word[at + 1..];
    let emailish =
        domain.contains('.') && domain.chars().filter(|c| c.is_alphabetic()).count() >= 2;
    let host = domain.split(':').next().unwrap_or("");
    let prompt = at > 0
        && domain.contains(':')
        && host.chars().next().is_some_and(|c| c.is_alphabetic())
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.' || c == '_');
    if emailish || prompt {
        return word.to_string();
    }
    let s = word.replace("0@", "0").replace("@0", "0");
    let chars: Vec<char> = s.chars().collect();
    chars
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let alnum = |j: Option<usize>| {
                j.and_then(|j| chars.get(j))
                    .is_some_and(|c| c.is_alphanumeric())
            };
            let digit = |j: Option<usize>| {
                j.and_then(|j| chars.get(j))
                    .is_some_and(|c| c.is_ascii_digit())
            };
            if c == '@'
                && alnum(i.checked_sub(1))
                && alnum(Some(i + 1))
                && (digit(i.checked_sub(1)) || digit(Some(i + 1)))
            {
                '0'
            } else {
                c
            }
        })
        .collect()
}

/// Fills rectangle `m` with the most common grey level of the 2-pixel ring around it.
fn fill_with_surround(g: &mut Grey, m: &[u32; 4]) {
    let (w, h) = (g.width as i64, g.height as i64);
    let (x0, y0) = (m[0] as i64, m[1] as i64);
    let (x1, y1) = (x0 + m[2] as i64, y0 + m[3] as i64);
    let mut hist = [0u32; 256];
    for y in (y0 - 2).max(0)..(y1 + 2).min(h) {
        for x in (x0 - 2).max(0)..(x1 + 2).min(w) {
            if x < x0 || x >= x1 || y < y0 || y >= y1 {
                hist[g.data[(y * w + x) as usize] as usize] += 1;
            }
        }
    }
    let bg = (0..256).max_by_key(|&i| hist[i]).unwrap_or(0) as u8;
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            g.data[(y * w + x) as usize] = bg;
        }
    }
}

/// Tesseract's (block, paragraph, line) numbers of a word.
type LineKey = (u32, u32, u32);

/// Words read from one frame, with their line keys.
type Recognised = Result<Vec<(Word, LineKey)>, EnrichError>;

/// One line of a block: its key, its words, its box and each word's box (in the upscaled block).
type ReadLine = (LineKey, Vec<String>, [u32; 4], Vec<[u32; 4]>);

/// Parses tesseract TSV; returns level-5 (word) rows with their (block, paragraph, line) key.
fn parse_tsv(tsv: &str) -> Vec<(Word, LineKey)> {
    let mut out = Vec::new();
    for line in tsv.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() < 12 || f[0] != "5" {
            continue;
        }
        let n = |i: usize| f[i].parse::<i64>().unwrap_or(0).max(0) as u32;
        let text = f[11].trim();
        if text.is_empty() {
            continue;
        }
        let conf = f[10].parse::<f32>().unwrap_or(0.0);
        out.push((
            Word {
                text: text.to_string(),
                conf,
                bbox: [n(6), n(7), n(8), n(9)],
            },
            (n(2), n(3), n(4)),
        ));
    }
    out
}

fn crop(g: &Grey, b: &[u32; 4]) -> Grey {
    let mut data = Vec::with_capacity((b[2] * b[3]) as usize);
    for y in b[1]..b[1] + b[3] {
        let s = (y * g.width + b[0]) as usize;
        data.extend_from_slice(&g.data[s..s + b[2] as usize]);
    }
    Grey {
        width: b[2],
        height: b[3],
        data,
    }
}

/// Most common grey level (the background).
fn background(g: &Grey) -> u8 {
    let mut h = [0u32; 256];
    for &v in &g.data {
        h[v as usize] += 1;
    }
    (0..256).max_by_key(|&i| h[i]).unwrap_or(0) as u8
}

/// Paints straight thin rules with the background of `g` (a block whose text lines are `lh`
/// px tall): vertical ink runs at least 1.6 line heights (and 20 px) long, horizontal ones at
/// least 8 line heights (and 64 px) long, each at most 3 px thick. No glyph is that long for
/// its line height (a `|` spans one line; a row of connected dashes would need 13 or more).
fn paint_rules(g: &mut Grey, lh: u32) {
    let (w, h) = (g.width as usize, g.height as usize);
    if w < 3 || h < 3 {
        return;
    }
    let bg = background(g);
    let ink: Vec<bool> = g.data.iter().map(|&v| v.abs_diff(bg) > 48).collect();
    let mut paint = vec![false; w * h];
    let vmin = ((lh as usize * 8).div_ceil(5)).max(20);
    let hmin = (lh as usize * 8).max(64);
    // thickness of the ink band through (x, y) along the other axis, at most 4
    let thick = |x: usize, y: usize, vertical: bool| -> usize {
        let at = |d: isize| -> bool {
            if vertical {
                let xx = x as isize + d;
                xx >= 0 && (xx as usize) < w && ink[y * w + xx as usize]
            } else {
                let yy = y as isize + d;
                yy >= 0 && (yy as usize) < h && ink[yy as usize * w + x]
            }
        };
        let mut n = 1;
        let mut d = 1;
        while n <= 4 && at(d) {
            n += 1;
            d += 1;
        }
        d = -1;
        while n <= 4 && at(d) {
            n += 1;
            d -= 1;
        }
        n
    };
    for x in 0..w {
        let mut y = 0;
        while y < h {
            if !ink[y * w + x] {
                y += 1;
                continue;
            }
            let s = y;
            while y < h && ink[y * w + x] {
                y += 1;
            }
            if y - s >= vmin {
                let thin = (s..y).filter(|&yy| thick(x, yy, true) <= 3).count();
                if thin * 10 >= (y - s) * 9 {
                    (s..y).for_each(|yy| paint[yy * w + x] = true);
                }
            }
        }
    }
    for y in 0..h {
        let mut x = 0;
        while x < w {
            if !ink[y * w + x] {
                x += 1;
                continue;
            }
            let s = x;
            while x < w && ink[y * w + x] {
                x += 1;
            }
            if x - s >= hmin {
                let thin = (s..x).filter(|&xx| thick(xx, y, false) <= 3).count();
                if thin * 10 >= (x - s) * 9 {
                    (s..x).for_each(|xx| paint[y * w + xx] = true);
                }
            }
        }
    }
    for (v, p) in g.data.iter_mut().zip(&paint) {
        if *p {
            *v = bg;
        }
    }
}

/// Bilinear resize by `s`.
pub(crate) fn resize_bilinear(g: &Grey, s: f32) -> Grey {
    let w = ((g.width as f32 * s).round() as u32).max(1);
    let h = ((g.height as f32 * s).round() as u32).max(1);
    let mut data = vec![0u8; (w * h) as usize];
    let (sw, sh) = (g.width as usize, g.height as usize);
    let xs: Vec<(usize, usize, f32)> = (0..w)
        .map(|x| {
            let fx = ((x as f32 + 0.5) / s - 0.5).clamp(0.0, (sw - 1) as f32);
            let x0 = fx.floor() as usize;
            (x0, (x0 + 1).min(sw - 1), fx - x0 as f32)
        })
        .collect();
    for y in 0..h as usize {
        let fy = ((y as f32 + 0.5) / s - 0.5).clamp(0.0, (sh - 1) as f32);
        let y0 = fy.floor() as usize;
        let y1 = (y0 + 1).min(sh - 1);
        let wy = fy - y0 as f32;
        let r0 = &g.data[y0 * sw..(y0 + 1) * sw];
        let r1 = &g.data[y1 * sw..(y1 + 1) * sw];
        let row = &mut data[y * w as usize..(y + 1) * w as usize];
        for (o, &(x0, x1, wx)) in row.iter_mut().zip(&xs) {
            let a = r0[x0] as f32 * (1.0 - wx) + r0[x1] as f32 * wx;
            let b = r1[x0] as f32 * (1.0 - wx) + r1[x1] as f32 * wx;
            *o = (a * (1.0 - wy) + b * wy + 0.5) as u8;
        }
    }
    Grey {
        width: w,
        height: h,
        data,
    }
}

fn otsu_binarise(g: &mut Grey) {
    let mut h = [0f64; 256];
    for &v in &g.data {
        h[v as usize] += 1.0;
    }
    let n = g.data.len() as f64;
    let sum: f64 = (0..256).map(|i| i as f64 * h[i]).sum();
    let (mut wb, mut sb, mut best, mut thr) = (0.0, 0.0, -1.0, 128usize);
    for t in 0..256 {
        wb += h[t];
        if wb == 0.0 || wb == n {
            continue;
        }
        sb += t as f64 * h[t];
        let mb = sb / wb;
        let mf = (sum - sb) / (n - wb);
        let between = wb * (n - wb) * (mb - mf) * (mb - mf);
        if between > best {
            best = between;
            thr = t;
        }
    }
    g.data
        .iter_mut()
        .for_each(|v| *v = if *v as usize > thr { 255 } else { 0 });
}

/// Edge ("ink") map: a pixel whose right or lower neighbour differs by more than 40 levels.
fn ink_map(g: &Grey) -> Vec<bool> {
    let (w, h) = (g.width as usize, g.height as usize);
    let mut ink = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = g.data[y * w + x] as i32;
            let r = if x + 1 < w {
                g.data[y * w + x + 1] as i32
            } else {
                v
            };
            let d = if y + 1 < h {
                g.data[(y + 1) * w + x] as i32
            } else {
                v
            };
            if (v - r).abs() > 40 || (v - d).abs() > 40 {
                ink[y * w + x] = true;
            }
        }
    }
    ink
}

/// Connected components (8-neighbourhood) of a boolean map: bounding boxes (x0, y0, x1, y1) incl.
fn components(map: &[bool], w: usize, h: usize) -> Vec<[usize; 4]> {
    let mut seen = vec![false; w * h];
    let mut out = Vec::new();
    let mut stack = Vec::new();
    for start in 0..w * h {
        if !map[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut bb = [start % w, start / w, start % w, start / w];
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            bb[0] = bb[0].min(x);
            bb[1] = bb[1].min(y);
            bb[2] = bb[2].max(x);
            bb[3] = bb[3].max(y);
            for dy in [-1i64, 0, 1] {
                for dx in [-1i64, 0, 1] {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if map[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        out.push(bb);
    }
    out
}

/// Dense textures (hatched or stippled bars, dithered areas, photo grain): pixels that differ
/// by more than 40 levels from both their right and their lower neighbour ("corner" pixels,
/// every pixel of a checkerboard, only stroke ends and corners of text), taken where a 7x7
/// window is at least 70 % such pixels, dilated by the window so the whole texture is covered.
/// A hatched dialog bar beside a text column would otherwise be smeared together with the text
/// into one block, and its pixels make tesseract drop the text. `None` when there is none.
fn texture_mask(g: &Grey) -> Option<Vec<bool>> {
    const R: usize = 3;
    const MIN: u32 = 35; // of 49
    let (w, h) = (g.width as usize, g.height as usize);
    if w < 2 * R + 1 || h < 2 * R + 1 {
        return None;
    }
    let mut m = vec![false; w * h];
    for y in 0..h - 1 {
        for x in 0..w - 1 {
            let v = g.data[y * w + x] as i32;
            let r = g.data[y * w + x + 1] as i32;
            let d = g.data[(y + 1) * w + x] as i32;
            m[y * w + x] = (v - r).abs() > 40 && (v - d).abs() > 40;
        }
    }
    // integral image of ink counts, (w+1) x (h+1)
    let iw = w + 1;
    let mut ii = vec![0u32; iw * (h + 1)];
    for y in 0..h {
        let mut row = 0u32;
        for x in 0..w {
            row += m[y * w + x] as u32;
            ii[(y + 1) * iw + x + 1] = ii[y * iw + x + 1] + row;
        }
    }
    let mut out: Option<Vec<bool>> = None;
    for y in R..h - R {
        for x in R..w - R {
            let (x0, y0, x1, y1) = (x - R, y - R, x + R + 1, y + R + 1);
            let n = ii[y1 * iw + x1] + ii[y0 * iw + x0] - ii[y0 * iw + x1] - ii[y1 * iw + x0];
            if n >= MIN {
                let t = out.get_or_insert_with(|| vec![false; w * h]);
                for yy in y0..y1 {
                    t[yy * w + x0..yy * w + x1]
                        .iter_mut()
                        .for_each(|v| *v = true);
                }
            }
        }
    }
    out
}

/// Erases dense textures ([`texture_mask`]) from an ink map.
fn remove_textures(m: &mut [bool], g: &Grey) {
    if let Some(t) = texture_mask(g) {
        m.iter_mut().zip(t).for_each(|(v, t)| *v &= !t);
    }
}

/// Straight ink runs of at least `len` px (horizontal and vertical): window borders,
/// separators, the edges of filled bars. Text strokes are shorter, so text that touches a
/// window's border (an xterm's 1 px border, 2 px from its first column) is cut free of it;
/// otherwise text and frame form one component that `remove_frames` cannot take for a frame,
/// and the frame's height is taken for the line height (no upscaling: a whole screen of a
/// 7x13 bitmap font read as nothing).
/// Returns the pixels of those runs.
fn long_runs(m: &[bool], w: usize, h: usize, len: usize) -> Vec<bool> {
    let mut cut = vec![false; w * h];
    for y in 0..h {
        let mut x = 0;
        while x < w {
            if m[y * w + x] {
                let s = x;
                while x < w && m[y * w + x] {
                    x += 1;
                }
                if x - s >= len {
                    cut[y * w + s..y * w + x].iter_mut().for_each(|v| *v = true);
                }
            } else {
                x += 1;
            }
        }
    }
    for x in 0..w {
        let mut y = 0;
        while y < h {
            if m[y * w + x] {
                let s = y;
                while y < h && m[y * w + x] {
                    y += 1;
                }
                if y - s >= len {
                    (s..y).for_each(|yy| cut[yy * w + x] = true);
                }
            } else {
                y += 1;
            }
        }
    }
    cut
}

/// Removes hollow rectangles (button and window frames) from an ink map: components at least
/// 30x20 px whose ink is mostly on the border of their bounding box.
fn remove_frames(m: &mut [bool], w: usize, h: usize) {
    for b in components(m, w, h) {
        let (bw, bh) = (b[2] - b[0] + 1, b[3] - b[1] + 1);
        if bw < 30 || bh < 20 {
            continue;
        }
        let (mut border, mut inner) = (0usize, 0usize);
        for y in b[1]..=b[3] {
            for x in b[0]..=b[2] {
                if m[y * w + x] {
                    let near = x - b[0] < 3 || b[2] - x < 3 || y - b[1] < 3 || b[3] - y < 3;
                    if near {
                        border += 1;
                    } else {
                        inner += 1;
                    }
                }
            }
        }
        // a frame: its border is well covered and it holds almost nothing inside
        if border >= (bw + bh) && inner * 10 <= border {
            for y in b[1]..=b[3] {
                for x in b[0]..=b[2] {
                    let near = x - b[0] < 3 || b[2] - x < 3 || y - b[1] < 3 || b[3] - y < 3;
                    if near {
                        m[y * w + x] = false;
                    }
                }
            }
        }
    }
}

/// Ink runs this long are borders, not text (see [`long_runs`]).
const LONG_RUN: usize = 64;

/// Vertical ink runs this long and at most 3 px thick are borders too
/// ([`thin_vertical_runs`]).
const THIN_RUN: usize = 28;

/// Marks in `cut` the vertical runs of the ink map at least `len` px long whose ink band is at
/// most 3 px wide on 90 % of their rows: a dialog's text-area frame 2 px from the text (34 px
/// tall beside two lines of xmessage) joined both lines into one 32 px "line", so the block
/// was not upscaled and the frame was read as `[`/`l`. A glyph this tall has thicker strokes
/// (a `|` of a 12x24 font is 24 px).
fn thin_vertical_runs(m: &[bool], w: usize, h: usize, len: usize, cut: &mut [bool]) {
    let band = |x: usize, y: usize| -> usize {
        let row = &m[y * w..(y + 1) * w];
        let mut n = 1;
        let mut l = x;
        while l > 0 && row[l - 1] && n <= 4 {
            l -= 1;
            n += 1;
        }
        let mut r = x;
        while r + 1 < w && row[r + 1] && n <= 4 {
            r += 1;
            n += 1;
        }
        n
    };
    for x in 0..w {
        let mut y = 0;
        while y < h {
            if !m[y * w + x] {
                y += 1;
                continue;
            }
            let s = y;
            while y < h && m[y * w + x] {
                y += 1;
            }
            if y - s >= len {
                let thin = (s..y).filter(|&yy| band(x, yy) <= 3).count();
                if thin * 10 >= (y - s) * 9 {
                    (s..y).for_each(|yy| cut[yy * w + x] = true);
                }
            }
        }
    }
}

/// Text-line candidates: the ink map smeared horizontally (gaps up to 10 px closed).
#[cfg(test)]
fn line_boxes(g: &Grey) -> Vec<[usize; 4]> {
    let (w, m) = line_map(g);
    components(&m, w, g.height as usize)
}

/// The smeared ink map behind the text-line candidates (width, map).
#[cfg(test)]
fn line_map(g: &Grey) -> (usize, Vec<bool>) {
    let (w, m, _) = line_map_and_borders(g);
    (w, m)
}

/// [`line_map`] and the long runs (borders) cut from it.
fn line_map_and_borders(g: &Grey) -> (usize, Vec<bool>, Vec<bool>) {
    let (w, h) = (g.width as usize, g.height as usize);
    let mut m = ink_map(g);
    remove_textures(&mut m, g);
    let mut borders = long_runs(&m, w, h, LONG_RUN);
    thin_vertical_runs(&m, w, h, THIN_RUN, &mut borders);
    m.iter_mut().zip(&borders).for_each(|(v, c)| *v &= !c);
    remove_frames(&mut m, w, h);
    const GAP: usize = 10;
    for y in 0..h {
        let row = &mut m[y * w..(y + 1) * w];
        let mut last: Option<usize> = None;
        for x in 0..w {
            if row[x] {
                if let Some(l) = last
                    && x - l > 1
                    && x - l <= GAP
                {
                    row[l + 1..x].iter_mut().for_each(|v| *v = true);
                }
                last = Some(x);
            }
        }
    }
    (w, m, borders)
}

/// Text blocks of a screenshot: line candidates merged when they are vertically close and
/// horizontally overlapping; boxes padded by 6 px.
pub fn layout_blocks(g: &Grey) -> Vec<[u32; 4]> {
    layout(g).into_iter().map(|l| l.0).collect()
}

/// A laid-out block: padded box, text-line height, the part of the box inside any window
/// border found in its padding (x, y, w, h).
type Laid = ([u32; 4], u32, [u32; 4]);

/// [`layout_blocks`] with each block's text-line height: the lower median height of its line
/// candidates that are at least 20 % ink (a window edge that survives as an L or a stub is a
/// tall, hollow box; a text cursor under the last line doubles that line's height: with two
/// lines the lower median keeps the text's height). Measured on the whole image, not on the
/// block's crop, where the long runs that [`long_runs`] finds are cut short.
fn layout(g: &Grey) -> Vec<Laid> {
    let (w, m, borders) = line_map_and_borders(g);
    let mut boxes: Vec<([usize; 4], Vec<u32>)> = components(&m, w, g.height as usize)
        .into_iter()
        .filter(|b| b[3] - b[1] + 1 >= 5 && b[2] - b[0] + 1 >= 3)
        .map(|b| {
            let ink: usize = (b[1]..=b[3])
                .map(|y| {
                    m[y * w + b[0]..=y * w + b[2]]
                        .iter()
                        .filter(|v| **v)
                        .count()
                })
                .sum();
            let dense = ink * 5 >= (b[2] - b[0] + 1) * (b[3] - b[1] + 1);
            (
                b,
                if dense {
                    vec![(b[3] - b[1] + 1) as u32]
                } else {
                    Vec::new()
                },
            )
        })
        .collect();
    // merge until stable
    loop {
        let mut merged = false;
        let mut i = 0;
        while i < boxes.len() {
            let mut j = i + 1;
            while j < boxes.len() {
                let (a, b) = (boxes[i].0, boxes[j].0);
                let ha = a[3] - a[1] + 1;
                let hb = b[3] - b[1] + 1;
                let lh = ha.min(hb).min(40);
                let vgap = (a[1].max(b[1]) as i64) - (a[3].min(b[3]) as i64);
                let hgap = (a[0].max(b[0]) as i64) - (a[2].min(b[2]) as i64);
                // words of one line: gaps up to about a line height (wide monospace spacing) of
                // the taller box — a short lower-case word after a thin `|` is otherwise left
                // out of its line and read after the whole block
                let hmax = 12.max(ha.max(hb).min(40) * 6 / 5) as i64;
                if vgap <= lh as i64 && hgap <= hmax {
                    boxes[i].0 = [
                        a[0].min(b[0]),
                        a[1].min(b[1]),
                        a[2].max(b[2]),
                        a[3].max(b[3]),
                    ];
                    let hs = boxes.swap_remove(j).1;
                    boxes[i].1.extend(hs);
                    merged = true;
                } else {
                    j += 1;
                }
            }
            i += 1;
        }
        if !merged {
            break;
        }
    }
    let (w, h) = (g.width as usize, g.height as usize);
    boxes
        .into_iter()
        .map(|(b, mut hs)| {
            hs.sort_unstable();
            let lh = hs
                .get(hs.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or((b[3] - b[1] + 1) as u32);
            let x0 = b[0].saturating_sub(6);
            let y0 = b[1].saturating_sub(6);
            let x1 = (b[2] + 6).min(w - 1);
            let y1 = (b[3] + 6).min(h - 1);
            // a window border in the padding (a long run covering more than half of the
            // block's side): what lies beyond it is painted with the text's background before
            // recognition — a strip of another background beside the text (a dark xterm on a
            // white root) makes tesseract read the border as `[` or lose the line; the crop
            // keeps its margins (text flush with the crop's edge is read worse)
            let row_border = |y: usize| {
                (b[0]..=b[2]).filter(|&x| borders[y * w + x]).count() * 2 > b[2] - b[0] + 1
            };
            let col_border = |x: usize| {
                (b[1]..=b[3]).filter(|&y| borders[y * w + x]).count() * 2 > b[3] - b[1] + 1
            };
            let (mut ix0, mut iy0, mut ix1, mut iy1) = (x0, y0, x1, y1);
            if let Some(y) = (y0..b[1]).rev().find(|&y| row_border(y)) {
                iy0 = y + 1;
            }
            if let Some(y) = (b[3] + 1..=y1).find(|&y| row_border(y)) {
                iy1 = y;
            }
            if let Some(x) = (x0..b[0]).rev().find(|&x| col_border(x)) {
                ix0 = x + 1;
            }
            if let Some(x) = (b[2] + 1..=x1).find(|&x| col_border(x)) {
                ix1 = x;
            }
            let r = |x0: usize, y0: usize, x1: usize, y1: usize| {
                [
                    x0 as u32,
                    y0 as u32,
                    (x1 - x0 + 1) as u32,
                    (y1 - y0 + 1) as u32,
                ]
            };
            (r(x0, y0, x1, y1), lh, r(ix0, iy0, ix1, iy1))
        })
        .collect()
}

/// Orders blocks in rows (vertically overlapping blocks form a row), rows top to bottom,
/// blocks left to right within a row.
fn reading_order(mut blocks: Vec<[u32; 4]>) -> Vec<[u32; 4]> {
    blocks.sort_by_key(|b| (b[1], b[0]));
    let mut rows: Vec<(u32, u32, Vec<[u32; 4]>)> = Vec::new();
    for b in blocks {
        let (top, bot) = (b[1], b[1] + b[3]);
        match rows.iter_mut().find(|r| {
            top < r.1 && bot > r.0 && (bot.min(r.1) - top.max(r.0)) * 2 >= b[3].min(r.1 - r.0)
        }) {
            Some(r) => {
                r.0 = r.0.min(top);
                r.1 = r.1.max(bot);
                r.2.push(b);
            }
            None => rows.push((top, bot, vec![b])),
        }
    }
    rows.sort_by_key(|r| r.0);
    rows.into_iter()
        .flat_map(|mut r| {
            r.2.sort_by_key(|b| b[0]);
            r.2
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::fix_zero_confusions as f;
    use super::*;

    #[test]
    fn a_lone_initial_joins_the_dotted_local_part_after_it() {
        assert!(joins_initial("j", ".doe@hq.acme.fr"));
        assert!(joins_initial("1", ".martin@acme.ch"));
        assert!(!joins_initial("jo", ".doe@hq.acme.fr"));
        assert!(!joins_initial("-", ".doe@hq.acme.fr"));
        assert!(!joins_initial("j", ".profile"));
        assert!(!joins_initial("j", "..doe@acme.fr"));
        assert!(!joins_initial("j", "doe@acme.fr"));
    }

    /// A light dialog: a checkerboard bar at x 10..30 (a hatched scrollbar), and dense 1-px
    /// strokes (like small `m`/`#` glyphs: verticals every 2 px, a bar every 4 rows) at x 40..120.
    fn hatched_dialog() -> Grey {
        let (w, h) = (160u32, 60u32);
        let mut data = vec![220u8; (w * h) as usize];
        for y in 5..55u32 {
            for x in 10..30u32 {
                if (x + y) % 2 == 0 {
                    data[(y * w + x) as usize] = 0;
                }
            }
            for x in 40..120u32 {
                if !(20..=40).contains(&y) && (x % 2 == 0 || y % 4 == 0) {
                    data[(y * w + x) as usize] = 0;
                }
            }
        }
        Grey {
            width: w,
            height: h,
            data,
        }
    }

    /// Three lines of "glyphs" (outlined 8x14 boxes, 2 px apart) and, on the last line, a short
    /// word 18 px to the right (a wide monospace gap after a thin `|`).
    fn three_lines_and_a_far_word() -> Grey {
        let (w, h) = (320u32, 100u32);
        let mut g = Grey {
            width: w,
            height: h,
            data: vec![255u8; (w * h) as usize],
        };
        let mut glyph = |x0: u32, y0: u32, gw: u32, gh: u32| {
            for y in y0..y0 + gh {
                for x in x0..x0 + gw {
                    if y == y0 || y == y0 + gh - 1 || x == x0 || x == x0 + gw - 1 {
                        g.data[(y * w + x) as usize] = 0;
                    }
                }
            }
        };
        for line in 0..3 {
            for i in 0..19 {
                glyph(10 + i * 10, 20 + line * 22, 8, 14);
            }
        }
        // ends at x = 197; the far word starts at 216 and is lower case (10 px tall)
        for i in 0..4 {
            glyph(216 + i * 10, 68, 8, 10);
        }
        g
    }

    #[test]
    fn a_word_after_a_wide_gap_joins_its_block() {
        let blocks = layout_blocks(&three_lines_and_a_far_word());
        assert_eq!(blocks.len(), 1, "{blocks:?}");
    }

    #[test]
    fn textures_are_masked_and_text_strokes_are_not() {
        let g = hatched_dialog();
        let t = texture_mask(&g).expect("the checkerboard is a texture");
        let w = g.width as usize;
        let at = |x: usize, y: usize| t[y * w + x];
        assert!(
            (10..30).all(|x| (8..52).all(|y| at(x, y))),
            "whole bar covered"
        );
        assert!(
            (40..120).all(|x| (0..60).all(|y| !at(x, y))),
            "dense strokes are not a texture"
        );
        // the bar no longer joins the strokes into one line box
        let boxes = line_boxes(&g);
        assert!(boxes.iter().all(|b| b[0] >= 35), "{boxes:?}");
        let plain = Grey {
            width: 50,
            height: 50,
            data: vec![0; 2500],
        };
        assert!(texture_mask(&plain).is_none());
    }

    #[test]
    fn address_rereadings_are_chosen_by_agreement_and_only_for_damaged_words() {
        // which words are re-read
        for w in [
            "bob@example.org",
            "jonesGalerts.example.net",
            "alice,smith@corp,example,co,uk",
            "<j.doe@example.de>",
        ] {
            assert!(address_like(w), "{w}");
        }
        for w in ["failed.", "10,0,65,200", "fs-7", "a.b", "From:", "Mr."] {
            assert!(!address_like(w), "{w}");
        }
        // held-out: prompts and file names were re-read (time) and could be replaced
        for w in [
            "root@web01:~#",
            "admin@db02:/var/log#",
            "db.sql.gz",
            "etc.tar",
        ] {
            assert!(!address_like(w), "{w}");
        }
        // a clean first reading is never replaced; clean is judged on the rest of the line
        // after the repairs extraction applies anyway (held-out: `c,white@…` re-read as
        // `c.uhite@…` by both re-readings, `k.tanaka@example. de` as `anaka@exampe.de`)
        for rest in [
            "ops-team@example.com",
            "<l.martin@alerts.example.net>",
            "alice,smith@corp,example,co,uk",
            "tanaka@example. de is the on-call contact",
        ] {
            assert!(!damaged(rest), "{rest}");
        }
        for w in [
            "helpdesk@Gexample.nl",
            "j}.doe@alerts.example.net",
            "jonesGalerts.example.net",
            ".doe@alerts.example.net",
            "bob@example.qqq",
        ] {
            assert!(damaged(w), "{w}");
        }
        // a re-reading far from the first (a font tesseract cannot read) is not taken
        assert!(similar_reading(
            "jonesGalerts.example.net",
            "_jones@alerts.example.net"
        ));
        assert!(!similar_reading(
            "jenkins@exanple.con",
            "oitins@esanele.con"
        ));
        // both re-readings agree: theirs
        let l = "From: helpdesk@Gexample.nl";
        let fixed = "From: helpdesk@example.nl";
        assert!(use_restricted(l, Some(fixed), Some(fixed)));
        // they disagree and the first reading yields an address: the first
        assert!(!use_restricted(
            l,
            Some(fixed),
            Some("From: helpdesk@exarnple.nl")
        ));
        // the first yields nothing, only the restricted one does (no `,` for `.`)
        assert!(use_restricted(
            "From: alice,smith@corp,example,co,uk",
            Some("From: alice.smith@corp.example.co.uk"),
            Some("From: alice.smith@corp,example,co,uk"),
        ));
        // nothing agreed, nothing to gain
        assert!(!use_restricted(l, Some("From: x"), Some("From: y")));
        assert!(!use_restricted(l, None, None));
    }

    #[test]
    fn pictures_read_as_short_unsure_blocks_are_dropped() {
        let ws = |v: &[(&str, f32)]| -> Vec<(Word, LineKey)> {
            v.iter()
                .map(|(t, c)| {
                    let w = Word {
                        text: t.to_string(),
                        conf: *c,
                        bbox: [0, 0, 10, 10],
                    };
                    (w, (1, 1, 1))
                })
                .collect()
        };
        let p = OcrParams::default();
        // held-out text-free screens: a clock hand, hair above a face, a cheek
        assert!(short_unsure_block(&ws(&[("\\", 93.0)]), &p));
        assert!(short_unsure_block(&ws(&[("(\\)", 91.0)]), &p));
        assert!(short_unsure_block(
            &ws(&[("a", 74.0), ("=a", 56.0), ("nh", 60.0)]),
            &p
        ));
        assert!(short_unsure_block(&ws(&[("ey", 60.0)]), &p));
        assert!(short_unsure_block(&ws(&[("A", 94.0)]), &p));
        // text
        assert!(!short_unsure_block(&ws(&[("OK", 96.0)]), &p));
        assert!(!short_unsure_block(&ws(&[("Login", 60.0)]), &p));
        assert!(!short_unsure_block(
            &ws(&[("Last", 62.0), ("login:", 55.0), ("Mon", 70.0)]),
            &p
        ));
    }

    #[test]
    fn zero_confusions_are_fixed_outside_email_addresses() {
        assert_eq!(f("web0@1"), "web01");
        assert_eq!(f("web@2"), "web02");
        assert_eq!(f("Mar@1"), "Mar01");
        assert_eq!(
            f("bob.jones@mail.example.org"),
            "bob.jones@mail.example.org"
        );
        assert_eq!(
            f("<noreply@alerts.example.net>"),
            "<noreply@alerts.example.net>"
        );
        assert_eq!(f("@"), "@");
        assert_eq!(f("user@"), "user@");
        // shell prompts and letters on both sides keep their @
        assert_eq!(f("admin@db02:~$"), "admin@db02:~$");
        assert_eq!(f("root@web01:/var/log#"), "root@web01:/var/log#");
        assert_eq!(f("me@home"), "me@home");
    }
}
