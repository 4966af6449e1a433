//! Findings, the report, and its table / JSON-lines renderings.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::zeek::{BadLine, LogKind, ReadStats};

/// One scored sequence: a key (source → destination, per log type) in one 24 h window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Finding {
    pub rank: u32,
    pub kind: LogKind,
    pub src: String,
    /// Destination IP (conn), query (dns, with " (NXDOMAIN)" when unresolved), Host (http),
    /// server name (ssl).
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
    /// Final score (blend + hints; raised to the rotation group's score when one is found).
    pub combined: f32,
    /// `combined >= threshold`.
    pub is_beacon: bool,
    /// Median interval between check-ins, seconds.
    pub period_secs: f64,
    /// Interquartile range of the intervals / median (≈ jitter fraction).
    pub jitter: f64,
    /// Log lines (connections, queries, ...) in the sequence.
    pub events: u64,
    /// Check-ins after collapsing bursts.
    pub checkins: u64,
    /// Largest burst of events in one check-in.
    pub max_burst: u32,
    /// Epoch seconds.
    pub first_seen: f64,
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
    /// Which hints lowered the score (empty: none applied).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hints: Vec<BeaconHint>,
    /// The fan-in / popularity from which the benign hints apply (for the explanation).
    #[serde(default)]
    pub fan_in_needed: u32,
    #[serde(default)]
    pub popularity_needed: u32,
    /// Destinations of the rotation group this finding was credited from (C2 over several IPs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_period_secs: Option<f64>,
    /// Events beyond `max_events_per_key` were dropped.
    pub truncated: bool,
    /// Inputs of the learned combiner (for training it; not serialized).
    #[serde(skip)]
    pub features: Vec<f32>,
}

/// A finding as the finding schema's `beacon` payload: every field moved by name and type (a
/// field added on one side only does not compile); the combiner's training inputs stay behind.
impl From<Finding> for overlord_core::finding::Beacon {
    fn from(f: Finding) -> Self {
        let Finding {
            rank,
            kind,
            src,
            dst,
            dst_port,
            window,
            cnn_score,
            jitter_score,
            stat_score,
            combined,
            is_beacon,
            period_secs,
            jitter,
            events,
            checkins,
            max_burst,
            first_seen,
            last_seen,
            failed_fraction,
            fan_in,
            benign_hint,
            popularity,
            active_hours,
            period_stability,
            hints,
            fan_in_needed,
            popularity_needed,
            group,
            group_period_secs,
            truncated,
            features: _,
        } = f;
        overlord_core::finding::Beacon {
            rank,
            kind: kind.into(),
            src,
            dst,
            dst_port,
            window,
            cnn_score,
            jitter_score,
            stat_score,
            combined,
            is_beacon,
            period_secs,
            jitter,
            events,
            checkins,
            max_burst,
            first_seen,
            last_seen,
            failed_fraction,
            fan_in,
            benign_hint,
            popularity,
            active_hours,
            period_stability,
            hints,
            fan_in_needed,
            popularity_needed,
            group,
            group_period_secs,
            truncated,
        }
    }
}

/// A rule that lowered a finding's score (×0.3 each): the finding schema's `BeaconHint`.
pub use overlord_core::finding::beacon::BeaconHint;

/// The evidence of a finding as a few lines of text.
pub fn format_evidence(f: &Finding) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "window {}: combined {:.3} ({}), CNN {:.3}, RITA-style {:.3}",
        f.window,
        f.combined,
        if f.is_beacon {
            "BEACON"
        } else {
            "not a beacon"
        },
        f.cnn_score,
        f.stat_score
    );
    let _ = writeln!(
        s,
        "  period {} (median interval), {:.0} % of intervals within ±20 % of it; jitter (IQR/median) {:.2}",
        human_secs(f.period_secs),
        f.period_stability * 100.0,
        f.jitter
    );
    let _ = writeln!(
        s,
        "  {} events in {} check-ins (largest burst {}), active {} of 24 hours, {} .. {}",
        f.events,
        f.checkins,
        f.max_burst,
        f.active_hours,
        utc(f.first_seen),
        utc(f.last_seen)
    );
    let _ = writeln!(s, "  failed connections {:.0} %", f.failed_fraction * 100.0);
    if !f.group.is_empty() {
        let _ = writeln!(
            s,
            "  credited from a rotation group {:?} (merged period {})",
            f.group,
            human_secs(f.group_period_secs.unwrap_or(0.0))
        );
    }
    let fan = if f.hints.contains(&BeaconHint::PeriodicFanIn) {
        "applied"
    } else {
        "not applied"
    };
    let _ = writeln!(
        s,
        "  benign-periodic hint {fan}: {} sources reach this destination periodically (needs {})",
        f.fan_in, f.fan_in_needed
    );
    if f.kind != LogKind::Conn {
        let pop = if f.hints.contains(&BeaconHint::PopularName) {
            "applied"
        } else {
            "not applied"
        };
        let _ = writeln!(
            s,
            "  popular-name hint {pop}: {} sources ask for this name (needs {})",
            f.popularity, f.popularity_needed
        );
    }
    let failed = if f.hints.contains(&BeaconHint::FailedConnections) {
        "applied"
    } else {
        "not applied"
    };
    let _ = writeln!(s, "  failed-connection hint {failed} (needs >= 80 %)");
    if f.hints.contains(&BeaconHint::ResolverRefresh) {
        let _ = writeln!(
            s,
            "  resolver-refresh hint applied: the source answers other hosts' queries and no client looks this name up periodically"
        );
    }
    if f.hints.contains(&BeaconHint::NoClock) {
        let _ = writeln!(
            s,
            "  no-clock cap applied: CNN, RITA-style and back-off scores all below the evidence floor"
        );
    }
    s
}

impl Finding {
    /// `conn 10.0.0.5 -> 203.0.113.7`
    pub fn key(&self) -> String {
        format!("{} {} -> {}", self.kind.as_str(), self.src, self.dst)
    }
}

/// Read counters of one input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileStats {
    pub path: String,
    #[serde(flatten)]
    pub stats: ReadStats,
}

/// The result of [`crate::score_logs`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BeaconReport {
    /// Ranked, best first.
    pub findings: Vec<Finding>,
    pub files: Vec<FileStats>,
    pub lines: u64,
    pub records: u64,
    pub bad_lines: u64,
    pub bad_examples: Vec<BadLine>,
    /// Distinct keys seen.
    pub keys: u64,
    /// Key × window sequences long enough to be scored (plus rotation groups).
    pub scored: u64,
    pub sources: u64,
    pub dropped_keys: u64,
    pub dropped_events: u64,
    pub threshold: f32,
    pub seconds: f64,
}

impl BeaconReport {
    pub fn beacons(&self) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(|f| f.is_beacon)
    }
}

fn human_secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.1}s")
    }
}

pub(crate) fn utc(epoch: f64) -> String {
    let secs = epoch.floor() as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil from days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// A fixed-width table of the top `limit` findings plus a summary line.
pub fn format_table(r: &BeaconReport, limit: usize) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>4} {:<5} {:<15} {:<32} {:>5} {:>5} {:>5} {:>5} {:>8} {:>6} {:>6} {:<20} {:<20} note",
        "rank",
        "log",
        "source",
        "destination",
        "score",
        "cnn",
        "jit",
        "stat",
        "period",
        "jitter",
        "count",
        "first seen",
        "last seen"
    );
    for f in r.findings.iter().take(limit) {
        let mut dst = f.dst.clone();
        if f.dst_port != 0 && f.kind == LogKind::Conn {
            dst = format!("{dst}:{}", f.dst_port);
        }
        if dst.len() > 32 {
            dst.truncate(31);
            dst.push('~');
        }
        let mut note = Vec::new();
        if f.is_beacon {
            note.push("BEACON".to_string());
        }
        if f.benign_hint {
            note.push(format!("benign-periodic? ({} sources)", f.fan_in));
        }
        if f.failed_fraction >= 0.8 {
            note.push("failed connections".into());
        }
        if !f.group.is_empty() {
            note.push(format!("rotation over {}", f.group.join(",")));
        }
        if f.max_burst > 1 {
            note.push(format!("bursts<= {}", f.max_burst));
        }
        let _ = writeln!(
            s,
            "{:>4} {:<5} {:<15} {:<32} {:>5.3} {:>5.2} {:>5.2} {:>5.2} {:>8} {:>5.0}% {:>6} {:<20} {:<20} {}",
            f.rank,
            f.kind.as_str(),
            f.src,
            dst,
            f.combined,
            f.cnn_score,
            f.jitter_score,
            f.stat_score,
            human_secs(f.period_secs),
            f.jitter * 100.0,
            f.events,
            utc(f.first_seen),
            utc(f.last_seen),
            note.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "{} beacon(s) at threshold {:.2}; {} finding(s) listed of {}; {} records, {} bad line(s), {} keys, {} scored, {} sources, {:.2}s",
        r.beacons().count(),
        r.threshold,
        r.findings.len().min(limit),
        r.findings.len(),
        r.records,
        r.bad_lines,
        r.keys,
        r.scored,
        r.sources,
        r.seconds
    );
    for b in &r.bad_examples {
        let _ = writeln!(s, "  bad line {}: {}", b.line, b.reason);
    }
    s
}

/// One JSON object per finding, then one `{"summary": ...}` line.
pub fn format_jsonl(r: &BeaconReport) -> String {
    let mut s = String::new();
    for f in &r.findings {
        s.push_str(&serde_json::to_string(f).expect("finding serializes"));
        s.push('\n');
    }
    let summary = serde_json::json!({ "summary": {
        "lines": r.lines, "records": r.records, "bad_lines": r.bad_lines,
        "bad_examples": r.bad_examples, "keys": r.keys, "scored": r.scored,
        "sources": r.sources, "beacons": r.beacons().count(), "threshold": r.threshold,
        "dropped_keys": r.dropped_keys, "dropped_events": r.dropped_events, "seconds": r.seconds,
        "files": r.files,
    }});
    s.push_str(&summary.to_string());
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_format() {
        assert_eq!(super::utc(1_700_000_000.9), "2023-11-14T22:13:20Z");
        assert_eq!(super::utc(0.0), "1970-01-01T00:00:00Z");
    }
}
