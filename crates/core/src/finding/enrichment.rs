//! Payloads of image enrichment (`enrichment`) and of the coordinator's leak lookup (`leak`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `enrichment`: everything the enrichment workflow learned about one image. The image is the
/// screenshot the task was spawned from (`image`), or the input file's bytes (the finding's blob).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Enrichment {
    /// Version of the analysis record (overlord-enrich's `ANALYSIS_VERSION`).
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
    /// OCR text in reading order.
    pub text: String,
    pub words: Vec<Word>,
    /// E-mail addresses read on the image (drive the `leak` follow-up).
    pub emails: Vec<String>,
    pub faces: Vec<Face>,
    pub logos: Vec<LogoHit>,
    /// Tags (`blank`, `login_prompt`, `has_faces`, ...), computed once by the enrichment and
    /// served as stored.
    pub tags: Vec<String>,
    /// Leak records of the e-mails, when the analysis itself had a leak database (local
    /// `images analyze --leaks`); in a cluster they are `leak` findings instead.
    #[serde(default)]
    pub leaks: Vec<LeakRecord>,
    pub timings: EnrichTimings,
    /// The input path, when the image came from a file rather than a screenshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// The image id (sha256 hex of its PNG/JPEG bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// One recognised word.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Word {
    pub text: String,
    /// Tesseract confidence, 0..100.
    pub conf: f32,
    /// x, y, width, height in image pixels.
    pub bbox: [u32; 4],
}

/// A detected face.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Face {
    /// x, y, width, height in image pixels.
    pub bbox: [u32; 4],
    /// Number of raw detections merged into this box (OpenCV's "neighbours").
    pub neighbours: u32,
}

/// A detected logo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogoHit {
    pub name: String,
    /// x, y, width, height in image pixels.
    pub bbox: [u32; 4],
    /// Full-resolution masked ZNCC, -1..1.
    pub score: f32,
}

/// One leak record of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeakRecord {
    pub address: String,
    pub source: String,
    pub date: String,
}

/// Milliseconds spent per enrichment step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrichTimings {
    pub decode_ms: f64,
    pub blank_ms: f64,
    pub hash_ms: f64,
    pub faces_ms: f64,
    pub logos_ms: f64,
    pub ocr_ms: f64,
    pub total_ms: f64,
}

/// `leak`: an address read on a screen that the coordinator's leak database knows (one finding
/// per known address; produced by the coordinator itself, never by a minion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Leak {
    /// The known address.
    pub email: String,
    /// The address as OCR read it, when typical confusions were undone to find it.
    pub read_as: Option<String>,
    /// Source of the first record.
    pub source: String,
    /// Date of the first record.
    pub date: String,
    /// Every record of the address.
    pub leaks: Vec<LeakSource>,
    /// The image id (sha256 of its PNG) the address was read on.
    pub image: Option<String>,
}

/// One leak of an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeakSource {
    pub source: String,
    pub date: String,
}
