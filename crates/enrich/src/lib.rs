//! overlord-enrich: the image workflow of Overlord, usable without the cluster.
//!
//! decode (bounded) → blank filter → perceptual hashes → OCR → faces → logos → e-mails → tags;
//! plus the persistent indexes that serve the results: a multi-index-hashing similar-image index,
//! tag/face queries and a leak database (all in sled); text search over screens is the
//! coordinator's query index (`screen.text`).
//! See docs/DESIGN.md, section "Image enrichment".

// Index loops over parallel pixel/channel arrays read better than zipped iterators here.
#![allow(clippy::needless_range_loop)]

pub mod analyze;
pub mod blank;
pub mod decode;
pub mod error;
pub mod faces;
pub mod leak;
pub mod logo;
pub mod metrics;
pub mod mih;
pub mod ocr;
pub mod phash;
pub mod simindex;
pub mod store;
pub mod tld;

pub use analyze::{Analysis, AnalyzerConfig, EnrichTimings, derive_tags, extract_emails};
#[cfg(feature = "ocr")]
pub use analyze::{Analyzer, analyze_files};
pub use blank::{BlankParams, BlankStats, blank_stats};
pub use decode::{DecodeCaps, Grey, Rgb, decode};
pub use error::EnrichError;
pub use faces::{Cascade, Face, FaceParams};
pub use leak::{ImportReport, LeakDb, LeakRecord};
pub use logo::{LogoHit, LogoParams, Template};
#[cfg(feature = "ocr")]
pub use ocr::OcrEngine;
pub use ocr::{OcrParams, OcrText, Word};
pub use phash::{PHashes, hamming64, hamming256, phashes};
pub use simindex::{InsertOutcome, OpenReport, SimilarMatch, SimilarityIndex, SledMihIndex};
pub use store::{EnrichStore, IngestReport};
