//! # overlord-analytics — beacon (C2) detection in Zeek logs
//!
//! Command-and-control implants call home on a period, with jitter. This crate finds them in
//! Zeek `conn`, `dns`, `http` and `ssl` logs from timestamps (and sizes) alone, with two scorers
//! side by side:
//!
//! * a small **1D CNN** ([`model`]) in the shape of the seed talk (conv 32 → conv 64 → dense →
//!   two sigmoid outputs: *beaconing*, *has jitter*), trained on the crate's own synthetic
//!   generator ([`synth`], [`train()`]) and run over whole 24 h windows;
//! * a **RITA-style statistical scorer** ([`stat`]): interval and size regularity (Bowley skew,
//!   median absolute deviation), connection count and spread over the day;
//!
//! plus a benign-periodic hint (many internal hosts hitting the same destination) and a
//! failed-connection hint. Both scores are combined into one ranked list ([`score_logs`]).
//!
//! Entry points: [`score_logs`], [`train()`], [`evaluate`], [`generate()`], and the formatters
//! [`report::format_table`] / [`report::format_jsonl`]. The crate does not depend on the cluster.

pub mod bench;
pub mod eval;
pub mod explain;
pub mod features;
pub mod follow;
pub mod gen_dns;
pub mod generate;
pub mod model;
pub mod report;
pub mod rng;
pub mod score;
pub mod stat;
pub mod synth;
pub mod train;
pub mod zeek;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use eval::{EvalReport, evaluate, evaluate_with};
pub use generate::{GenConfig, GenSummary, generate};
pub use model::{BeaconCnn, Weights};
pub use report::{BeaconHint, BeaconReport, Finding, format_jsonl, format_table};
pub use score::{Scorer, score_logs};
pub use train::{TrainConfig, train};
pub use zeek::LogKind;

/// Events closer than this (seconds) to the previous one join the same check-in.
pub const DEFAULT_BURST_GAP: f64 = 2.0;
/// Sequences with fewer check-ins are not scored.
pub const MIN_CHECKINS: usize = 5;

/// Errors of this crate. Bad log lines are *not* errors: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unsupported log: {detail}")]
    UnknownLogType { path: String, detail: String },
    #[error("invalid model weights: {0}")]
    Weights(String),
    #[error("model failure: {0}")]
    Model(String),
    #[error("invalid labelled dataset {path}: {detail}")]
    Dataset { path: String, detail: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl AnalyticsError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> AnalyticsError {
        AnalyticsError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Scoring options (defaults are the tuned ones).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BeaconConfig {
    /// Seconds: events closer than this to the previous one form one check-in (burst collapse).
    pub burst_gap: f64,
    /// Sequences with fewer check-ins are not scored.
    pub min_checkins: usize,
    /// Length of an analysis window in seconds (24 h); windows start at the earliest event seen.
    pub window_secs: f64,
    /// CNN windows (of 128 intervals) per sequence, spread over the whole sequence.
    pub max_cnn_windows: usize,
    /// Events kept per key (later events are counted but dropped: bounded memory).
    pub max_events_per_key: usize,
    /// Distinct keys kept (new keys beyond this are counted and dropped: bounded memory).
    pub max_keys: usize,
    /// Combined score from which a finding is called a beacon.
    pub threshold: f32,
    /// Findings below this combined score are left out of the report.
    pub min_report_score: f32,
    /// The CNN only runs on sequences whose statistical score reaches this (cheap prefilter;
    /// the others get CNN score 0).
    pub cnn_min_stat: f32,
    /// Weight of the CNN in the combined score when the weights carry no learned combiner (the rest goes to the statistical scorer).
    pub cnn_weight: f32,
    /// Benign-periodic hint: a destination reached periodically by at least this many sources...
    pub benign_min_sources: usize,
    /// ...and by at least this fraction of all sources seen.
    pub benign_source_fraction: f64,
    /// Popular-name hint (dns/http/ssl): a name asked for by at least this many sources...
    pub popular_min_sources: usize,
    /// ...and by at least this fraction of all sources seen, whether periodic or not.
    pub popular_source_fraction: f64,
    /// A key is a beacon only if the CNN, the RITA-style scorer or the back-off detector reaches
    /// this on its own check-ins (a rotation-group member too, unless too short to score alone):
    /// otherwise the combined score is capped below the threshold. The combiner alone can be
    /// talked into a high score by bursts and a few check-ins (browsing page loads).
    pub min_evidence: f32,
    /// The back-off detector's opinion counts from this many check-ins: with fewer, its
    /// permutation null (4 shuffles of ≤ 10 steps) is too coarse — browsing keys with bursty
    /// page loads and 6–10 check-ins reached 0.55–0.89 on the tuning sets, while every back-off
    /// C2 there had ≥ 14.
    pub backoff_min_checkins: usize,
    /// dns: a resolver's forwarded lookups of a name a client beacons on get that client's
    /// score (and are reported even when too few to be scored alone).
    pub resolver_credit: bool,
    /// Also score each source's traffic to several destinations on one port together (C2
    /// rotating over a few IPs) and credit the member pairs.
    pub group_rotation: bool,
    /// Weights file (safetensors); `None` = the shipped weights.
    pub weights: Option<PathBuf>,
}

impl Default for BeaconConfig {
    fn default() -> Self {
        BeaconConfig {
            burst_gap: DEFAULT_BURST_GAP,
            min_checkins: MIN_CHECKINS,
            window_secs: 86_400.0,
            max_cnn_windows: 4,
            cnn_min_stat: 0.35,
            max_events_per_key: 50_000,
            max_keys: 4_000_000,
            threshold: 0.5,
            min_report_score: 0.2,
            cnn_weight: 0.6,
            benign_min_sources: 5,
            benign_source_fraction: 0.05,
            popular_min_sources: 5,
            popular_source_fraction: 0.01,
            min_evidence: 0.5,
            backoff_min_checkins: 12,
            resolver_credit: true,
            group_rotation: true,
            weights: None,
        }
    }
}

impl BeaconConfig {
    // `!(x >= bound)` on purpose: it also rejects NaN, which `x < bound` would let through.
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    pub fn validate(&self) -> Result<(), AnalyticsError> {
        let bad = |m: &str| Err(AnalyticsError::Config(m.to_string()));
        if !(self.burst_gap >= 0.0) {
            return bad("burst_gap must be >= 0");
        }
        if self.min_checkins < 3 {
            return bad("min_checkins must be >= 3");
        }
        if !(self.window_secs >= 60.0) {
            return bad("window_secs must be >= 60");
        }
        if !(0.0..=1.0).contains(&self.cnn_weight) {
            return bad("cnn_weight must be within [0, 1]");
        }
        if self.max_events_per_key < self.min_checkins || self.max_keys == 0 {
            return bad("max_events_per_key/max_keys too small");
        }
        Ok(())
    }
}
