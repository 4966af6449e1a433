//! Pieces shared by the coordinator's actors: configuration, counters, the wire view of a job,
//! and the validation of findings reported by minions (done by the result ingestor).
//!
//! The job manager itself is a tree of actors (see `actors.rs`): the registry/scheduler
//! (`registry.rs`), one actor per running job (`job.rs`) under the job manager (`manager.rs`), the
//! result ingestor (`ingest.rs`), the stream fan-out (`hub.rs`) and the group-commit flusher
//! (`commit.rs`).

use overlord_core::job::{JobRecord, JobSpec, JobState};
use overlord_proto::v1;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;

pub type SessionTx = mpsc::UnboundedSender<Result<v1::CoordinatorMessage, tonic::Status>>;

/// Max blob size accepted from a minion.
pub const MAX_BLOB_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub heartbeat_interval_ms: u64,
    pub heartbeat_timeout_ms: u64,
    pub task_timeout_ms: u64,
    pub max_attempts: u32,
    /// Pending tasks kept expanded per job (at least; grows with cluster capacity).
    pub expand_watermark: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            heartbeat_interval_ms: 200,
            heartbeat_timeout_ms: 1000,
            task_timeout_ms: 600_000,
            max_attempts: 5,
            expand_watermark: 4096,
        }
    }
}

/// Counters of the job manager (shared by its actors; relaxed atomics).
#[derive(Default, Debug)]
pub struct Counters {
    pub results_accepted: AtomicU64,
    pub results_rejected: AtomicU64,
    pub leases_granted: AtomicU64,
    pub requeued: AtomicU64,
    pub minions_declared_dead: AtomicU64,
    pub apply_us: AtomicU64,
    pub batches: AtomicU64,
    pub flushes: AtomicU64,
    pub offers: AtomicU64,
    /// Outputs (acks, replies, events) deferred until a flush and not yet released.
    pub unreleased: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            results_accepted: g(&self.results_accepted),
            results_rejected: g(&self.results_rejected),
            leases_granted: g(&self.leases_granted),
            requeued: g(&self.requeued),
            minions_declared_dead: g(&self.minions_declared_dead),
            apply_us: g(&self.apply_us),
            batches: g(&self.batches),
            flushes: g(&self.flushes),
            offers: g(&self.offers),
        }
    }
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub results_accepted: u64,
    pub results_rejected: u64,
    pub leases_granted: u64,
    pub requeued: u64,
    pub minions_declared_dead: u64,
    /// Time spent applying write batches to storage (µs, summed over actors) and their number.
    pub apply_us: u64,
    pub batches: u64,
    pub flushes: u64,
    /// Slot offers made by the scheduler to job actors.
    pub offers: u64,
}

/// The wire status of a job; `live` = (pending, leased) task counts of a running job.
pub fn status_of(rec: &JobRecord, spec: &JobSpec, live: Option<(u64, u64)>) -> v1::JobStatus {
    let (pending, leased) = live.unwrap_or((0, 0));
    v1::JobStatus {
        job_id: rec.id,
        spec: Some(wire_spec(spec)),
        state: match rec.state {
            JobState::Running => v1::JobState::Running,
            JobState::Completed => v1::JobState::Completed,
            JobState::Cancelled => v1::JobState::Cancelled,
        } as i32,
        tasks_total: rec.tasks_created + (rec.root_total - rec.root_next),
        tasks_done: rec.done,
        tasks_failed: rec.failed,
        tasks_pending: pending,
        tasks_leased: leased,
        tasks_unexpanded: rec.root_total - rec.root_next,
        findings: rec.findings,
        created_at_ms: rec.created_ms,
        finished_at_ms: rec.finished_ms,
        stale_results_rejected: rec.stale_rejected,
        findings_unknown_kind: rec.findings_unknown_kind,
        findings_unknown_fields: rec.findings_unknown_fields,
        waiting_for_modules: Vec::new(),
        quality: (!rec.quality.is_empty()).then(|| quality_of(&rec.quality)),
        firehose: None,
        tasks_cancelled: rec.cancelled,
        errors: overlord_proto::convert::error_counts(&rec.errors),
    }
}

/// The wire form of a job's quality ledger, with the verdicts of [`overlord_core::quality::judge`].
pub fn quality_of(l: &overlord_core::quality::Ledger) -> v1::QualityLedger {
    use overlord_core::quality::Counts;
    let row = |k: &String, c: &Counts| v1::LedgerRow {
        key: k.clone(),
        sent: c.sent,
        answered: c.answered,
        retried: c.retried,
        sampled: c.sampled,
        missed: c.missed,
    };
    let mut nets: Vec<(&String, &Counts)> = l.by_net.iter().collect();
    nets.sort_by_key(|(k, c)| (std::cmp::Reverse(c.sent.saturating_sub(c.answered)), *k));
    v1::QualityLedger {
        minions: l.by_minion.iter().map(|(k, c)| row(k, c)).collect(),
        providers: l.by_provider.iter().map(|(k, c)| row(k, c)).collect(),
        nets: nets.iter().take(32).map(|(k, c)| row(k, c)).collect(),
        flags: overlord_core::quality::judge(l)
            .into_iter()
            .map(|f| f.reason)
            .collect(),
        nets_total: l.by_net.len() as u64,
    }
}

/// Probe counts of a result, clipped (at most 4,096 networks, names of at most 64 bytes).
pub fn probe_counts(items: &[v1::NetCounts]) -> Vec<(String, overlord_core::quality::Counts)> {
    items
        .iter()
        .filter(|c| !c.net.is_empty() && c.net.len() <= 64)
        .take(4096)
        .map(|c| {
            (
                c.net.clone(),
                overlord_core::quality::Counts {
                    sent: c.sent,
                    answered: c.answered.min(c.sent),
                    retried: c.retried.min(c.sent),
                    ..Default::default()
                },
            )
        })
        .collect()
}

pub fn wire_spec(s: &JobSpec) -> v1::JobSpec {
    const MAX_LISTED_INPUTS: usize = 100;
    v1::JobSpec {
        name: s.name.clone(),
        targets: s.targets.clone(),
        ports: s.ports.to_string(),
        modules: s.modules.clone(),
        rate_limit: s.rate_limit,
        inputs: s.inputs.iter().take(MAX_LISTED_INPUTS).cloned().collect(),
        params_json: s.params.to_string(),
        rules: s.rules.add.iter().map(|r| r.to_string()).collect(),
        disable_rules: s.rules.disable.clone(),
        hitlist: s.hitlist.as_ref().map(|h| h.id.clone()).unwrap_or_default(),
    }
}

/// A finding that passed validation (its blob hashed, ready to store).
#[derive(Debug)]
pub struct ParsedFinding {
    pub kind: String,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    /// Stored and served as sent (a newer minion's kinds and fields are kept).
    pub data: serde_json::Value,
    /// `data` typed by the schema (the follow-up rules read this).
    pub parsed: overlord_core::finding::Parsed,
    /// Size of the data as reported (JSON bytes), for `overlord_core::trust::check_result`.
    pub data_bytes: usize,
    /// (sha256 hex, bytes)
    pub blob: Option<(String, Vec<u8>)>,
}

/// One result item after the ingestor's validation.
#[derive(Debug)]
pub struct IngestedResult {
    pub token: overlord_core::Token,
    pub job_id: overlord_core::JobId,
    pub task_id: overlord_core::TaskId,
    pub ok: bool,
    /// Findings of a successful task, or why they were malformed.
    pub findings: Result<Vec<ParsedFinding>, String>,
    pub error: String,
    pub permanent: bool,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    /// Scan modules: probe counts per target network.
    pub probe_counts: Vec<(String, overlord_core::quality::Counts)>,
    /// Live modules: `Some(seq)` for findings of a task still running (the lease stays).
    pub partial: Option<u64>,
}

/// Validates one reported result (parses findings, hashes blobs).
pub fn ingest_item(r: v1::TaskResult) -> IngestedResult {
    let findings = if r.ok {
        parse_findings(&r.findings)
    } else {
        Ok(Vec::new())
    };
    IngestedResult {
        probe_counts: probe_counts(&r.probe_counts),
        token: r.token,
        job_id: r.job_id,
        task_id: r.task_id,
        ok: r.ok,
        findings,
        error: r.error,
        permanent: r.permanent,
        started_at_ms: r.started_at_ms,
        finished_at_ms: r.finished_at_ms,
        partial: r.partial.then_some(r.seq),
    }
}

pub fn parse_findings(items: &[v1::FindingOut]) -> Result<Vec<ParsedFinding>, String> {
    items
        .iter()
        .map(|f| {
            if f.kind.is_empty() || f.kind.len() > 64 {
                return Err(format!("finding kind {:?} must be 1-64 chars", f.kind));
            }
            let target =
                if f.target.is_empty() {
                    None
                } else {
                    Some(f.target.parse::<IpAddr>().map_err(|_| {
                        format!("finding target {:?} is not an IP address", f.target)
                    })?)
                };
            if f.port > 65535 {
                return Err(format!("finding port {} > 65535", f.port));
            }
            let data = if f.data_json.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_str(&f.data_json)
                    .map_err(|e| format!("finding data is not JSON: {e}"))?
            };
            if f.blob.len() > MAX_BLOB_BYTES {
                return Err(format!(
                    "blob of {} bytes exceeds {MAX_BLOB_BYTES}",
                    f.blob.len()
                ));
            }
            let parsed = overlord_core::finding::Payload::parse(&f.kind, &data);
            if parsed.is_partial() {
                tracing::debug!(kind = %f.kind, schema_version = f.schema_version, unknown_fields = ?parsed.unknown_fields, "finding not fully known to this schema; stored as sent");
            }
            Ok(ParsedFinding {
                parsed,
                kind: f.kind.clone(),
                target,
                port: (f.port != 0).then_some(f.port as u16),
                data,
                data_bytes: f.data_json.len(),
                blob: (!f.blob.is_empty()).then(|| {
                    use sha2::Digest;
                    (hex(&sha2::Sha256::digest(&f.blob)), f.blob.clone())
                }),
            })
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
