//! Payloads of the `beacon` analytics module: `beacon` (one scored sequence) and
//! `beacon_summary` (one per input log).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Zeek log types the beacon detector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BeaconLog {
    Conn,
    Dns,
    Http,
    Ssl,
}

/// `beacon`: one scored sequence — a key (source → destination, per log type) in one 24 h window.
/// The finding's target is `src`, its port `dst_port` (conn logs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Beacon {
    pub rank: u32,
    pub kind: BeaconLog,
    pub src: String,
    /// Destination IP (conn), query (dns), Host (http), server name (ssl).
    pub dst: String,
    pub dst_port: u16,
    /// Index of the 24 h window, counted from the earliest event read.
    pub window: u32,
    /// CNN *beaconing* output (max over the sequence's windows).
    pub cnn_score: f32,
    /// CNN *has jitter* output at that window.
    pub jitter_score: f32,
    /// RITA-style statistical score.
    pub stat_score: f32,
    /// Final score.
    pub combined: f32,
    /// `combined >= threshold`.
    pub is_beacon: bool,
    /// Median interval between check-ins, seconds.
    pub period_secs: f64,
    /// Interquartile range of the intervals / median (≈ jitter fraction).
    pub jitter: f64,
    /// Log lines in the sequence.
    pub events: u64,
    /// Check-ins after collapsing bursts.
    pub checkins: u64,
    /// Largest burst of events in one check-in.
    pub max_burst: u32,
    /// Epoch seconds.
    pub first_seen: f64,
    /// Epoch seconds.
    pub last_seen: f64,
    /// Fraction of connections never established (S0, REJ, ...).
    pub failed_fraction: f32,
    /// Sources reaching this destination periodically in the same window.
    pub fan_in: u32,
    /// Many sources reach this destination periodically: likely NTP/updates/telemetry.
    pub benign_hint: bool,
    /// dns/http/ssl: distinct sources asking for this name at all (0 for conn).
    #[serde(default)]
    pub popularity: u32,
    /// Distinct hours of the day (UTC) with a check-in.
    #[serde(default)]
    pub active_hours: u32,
    /// Share of intervals within ±20 % of the period (1 = a clock).
    #[serde(default)]
    pub period_stability: f32,
    /// The hints that lowered the score (empty: none applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<BeaconHint>,
    /// The fan-in from which the benign-periodic hint applies.
    #[serde(default)]
    pub fan_in_needed: u32,
    /// The popularity from which the popular-name hint applies.
    #[serde(default)]
    pub popularity_needed: u32,
    /// Destinations of the rotation group this finding was credited from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_period_secs: Option<f64>,
    /// Events beyond the per-key cap were dropped.
    pub truncated: bool,
}

/// Why a beacon's score was lowered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BeaconHint {
    /// Many sources reach the destination periodically (NTP, updates, telemetry).
    PeriodicFanIn,
    /// Many sources ask for this name at all (browsing behind TTL caches, WPAD, mail).
    PopularName,
    /// Most connections were never established.
    FailedConnections,
    /// dns: a resolver's lookups of a name none of its clients looks up periodically (its own
    /// cache refreshing).
    ResolverRefresh,
    /// No scorer sees a clock in the key's own check-ins (score capped below the threshold).
    NoClock,
}

/// `beacon_summary`: counters of one scored log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BeaconSummary {
    /// The log path.
    pub input: String,
    pub lines: u64,
    pub records: u64,
    pub bad_lines: u64,
    /// The first bad lines with their reasons.
    pub bad_examples: Vec<BadLine>,
    /// Distinct keys seen.
    pub keys: u64,
    /// Sequences long enough to be scored.
    pub scored: u64,
    /// Findings at or above the threshold.
    pub beacons: u64,
    pub threshold: f32,
    pub seconds: f64,
}

/// A log line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BadLine {
    pub line: u64,
    pub reason: String,
}
