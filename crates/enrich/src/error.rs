//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong while enriching an image or using the indexes.
#[derive(Debug, Error)]
pub enum EnrichError {
    /// The input is larger than the byte cap (checked before any decoding).
    #[error("input is {len} bytes, over the cap of {cap} bytes")]
    InputTooLarge { len: usize, cap: usize },
    /// The header announces dimensions over the caps (checked before decoding pixels).
    #[error(
        "image is {width}x{height}, over the caps (max side {max_side}, max pixels {max_pixels})"
    )]
    DimensionsTooLarge {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    /// Zero-sized or otherwise unusable dimensions.
    #[error("image has invalid dimensions {width}x{height}")]
    BadDimensions { width: u32, height: u32 },
    /// The format could not be recognised (only PNG and JPEG are accepted).
    #[error("unsupported or unrecognised image format")]
    UnsupportedFormat,
    /// The decoder failed (truncated, corrupt, or over the decoder's memory limit).
    #[error("cannot decode image: {0}")]
    Decode(String),
    /// A raw pixel buffer does not match its declared dimensions.
    #[error("pixel buffer has {got} bytes, expected {expected} for {width}x{height} RGB")]
    BadBuffer {
        got: usize,
        expected: usize,
        width: u32,
        height: u32,
    },
    /// Tesseract could not be initialised or failed on a frame.
    #[error("ocr: {0}")]
    Ocr(String),
    /// A model file (Haar cascade, logo template) is missing or malformed.
    #[error("model {path}: {reason}")]
    Model { path: String, reason: String },
    /// The storage engine failed (its type stays inside `overlord-storage`).
    #[error("storage: {0}")]
    Storage(#[from] overlord_storage::kv::KvError),
    /// A stored record could not be decoded (unknown version, truncated bytes).
    #[error("corrupt stored record in {tree}: {reason}")]
    CorruptRecord { tree: &'static str, reason: String },
    /// A leak-database import line was malformed.
    #[error("leak file line {line}: {reason}")]
    LeakLine { line: usize, reason: String },
    /// Unknown image id.
    #[error("unknown image id {0:?}")]
    UnknownImage(String),
    /// I/O on a local file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// JSON (de)serialisation of a stored analysis.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}
