//! The module plug-in interface (see `notes/CONTRACT.md`).

use bytes::Bytes;
use futures::future::BoxFuture;
use overlord_core::finding::Payload;
use overlord_core::scope::Scope;
use overlord_core::{JobId, TaskId};
use serde_json::Value;
use std::net::IpAddr;

/// One leased task, as a module sees it.
#[derive(Clone, Debug)]
pub struct TaskInput {
    pub job_id: JobId,
    pub task_id: TaskId,
    pub parent_task_id: Option<TaskId>,
    pub module: String,
    pub target: Option<IpAddr>,
    /// Sweeps: consecutive addresses from `target` this task covers (1 = just `target`); the
    /// runtime checked all of them against the minion's scope.
    pub target_count: u32,
    pub ports: Vec<u16>,
    /// Job params merged with task params (a JSON object; `rate_limit` is this task's share of the
    /// job's connections/s, when the job has a limit).
    pub params: Value,
    /// A blob the task works on (e.g. the PNG for `enrich`).
    pub blob: Option<Bytes>,
    /// An input for input-driven modules (e.g. a log path for `beacon`).
    pub input: Option<String>,
    /// Hitlist tasks: the address ranges covered when they are not one block (`target` is the
    /// first address, `target_count` the total); the runtime checked each against its scope.
    pub ranges: Vec<overlord_core::target::IpRange>,
}

impl TaskInput {
    pub fn param_u64(&self, key: &str) -> Option<u64> {
        self.params.get(key).and_then(Value::as_u64)
    }

    /// Every address the task covers (its ranges, or `target_count` from `target`), in order.
    pub fn targets(&self) -> Vec<IpAddr> {
        if !self.ranges.is_empty() {
            return self
                .ranges
                .iter()
                .flat_map(|r| (0..r.len()).map(move |i| r.nth(i)))
                .collect();
        }
        let Some(t) = self.target else {
            return Vec::new();
        };
        let n = self.target_count.max(1) as u128;
        match t {
            IpAddr::V4(a) => (0..n)
                .filter_map(|i| {
                    u32::from(a)
                        .checked_add(i as u32)
                        .map(|v| IpAddr::V4(v.into()))
                })
                .collect(),
            IpAddr::V6(a) => (0..n)
                .filter_map(|i| u128::from(a).checked_add(i).map(|v| IpAddr::V6(v.into())))
                .collect(),
        }
    }

    /// The task's target address; a task without one is invalid for `module`.
    pub fn require_target(&self, module: &str) -> Result<IpAddr, ModuleError> {
        self.target
            .ok_or_else(|| ModuleError::Invalid(format!("{module} needs a target")))
    }
}

/// One result item: a typed payload (`overlord_core::finding`). The minion adds provenance (job,
/// task, parent, minion, provider, module, timestamps) itself.
#[derive(Clone, Debug, PartialEq)]
pub struct FindingOut {
    pub payload: Payload,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    /// ≤ 16 MiB; stored content-addressed (sha256) by the coordinator.
    pub blob: Option<Bytes>,
}

impl FindingOut {
    pub fn new(target: Option<IpAddr>, port: Option<u16>, payload: impl Into<Payload>) -> Self {
        FindingOut {
            payload: payload.into(),
            target,
            port,
            blob: None,
        }
    }

    /// The kind's wire name.
    pub fn kind(&self) -> &str {
        self.payload.kind_name()
    }

    /// The wire form (`schema_version` is this build's).
    pub fn into_wire(self) -> overlord_proto::v1::FindingOut {
        overlord_proto::v1::FindingOut {
            kind: self.payload.kind_name().to_string(),
            target: self.target.map(|t| t.to_string()).unwrap_or_default(),
            port: self.port.map(u32::from).unwrap_or(0),
            data_json: self.payload.to_json(),
            blob: self.blob.map(|b| b.to_vec()).unwrap_or_default(),
            schema_version: overlord_core::finding::SCHEMA_VERSION,
        }
    }
}

/// What the runtime gives a module besides the task.
#[derive(Clone, Debug)]
pub struct ModuleCtx {
    pub minion_id: String,
    pub provider: String,
    /// The minion's own scope (allow-list + blocklist). The runtime checks `TaskInput::target`
    /// before calling the module; a module that connects anywhere else must check it too.
    pub scope: Scope,
    /// Canonical directory file inputs are read from (`crate::inputs::open_input`); None: file
    /// inputs are refused.
    pub input_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModuleError {
    /// Bad task input: retrying will not help.
    #[error("{}{}", overlord_core::task_error::INVALID_PREFIX, .0)]
    Invalid(String),
    /// Refused by scope/blocklist: never retried.
    #[error("{}{}", overlord_core::task_error::BLOCKED_PREFIX, .0)]
    Blocked(String),
    /// A transient failure: the coordinator may retry the task (up to its max attempts).
    #[error("{0}")]
    Failed(String),
}

impl ModuleError {
    pub fn permanent(&self) -> bool {
        !matches!(self, ModuleError::Failed(_))
    }
}

/// Probe counts of one target network (scan modules report them for the job's quality ledger).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounts {
    /// "a.b.c.0/24" or "x:x:x:x::/64".
    pub net: String,
    pub sent: u64,
    pub answered: u64,
    pub retried: u64,
}

/// What a task produced: findings, and probe counts when the module scans.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    pub findings: Vec<FindingOut>,
    pub probe_counts: Vec<NetCounts>,
}

pub trait Module: Send + Sync + 'static {
    /// "portscan", "banner", "service", "screenshot", "enrich", "beacon", ...
    fn name(&self) -> &'static str;
    /// Capability a minion must declare to run it: "scan", "grab", "screenshot", "enrich", "analytics".
    fn capability(&self) -> &'static str;
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>>;

    /// Like [`Module::run_counted`], for live modules that report findings while they run
    /// (`beacon` with `follow`): `live` sends them as partial results (the runtime calls this).
    fn run_live<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
        live: Live,
    ) -> BoxFuture<'a, Result<Output, ModuleError>> {
        let _ = live;
        self.run_counted(task, ctx)
    }

    /// Like [`Module::run`], with probe counts; scan modules override it.
    fn run_counted<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Output, ModuleError>> {
        Box::pin(async move {
            Ok(Output {
                findings: self.run(task, ctx).await?,
                probe_counts: Vec::new(),
            })
        })
    }
}

/// A running task's channel for partial results (findings reported before the task ends). Each
/// partial also renews the task's lease at the coordinator; a live module calls
/// [`Live::keep_alive`] often (it sends an empty partial once [`Live::every`] has passed since
/// the last one), so a lease of a module that found nothing new does not run out.
#[derive(Clone)]
pub struct Live {
    inner: std::sync::Arc<LiveInner>,
}

struct LiveInner {
    tx: Option<tokio::sync::mpsc::Sender<overlord_proto::v1::TaskResult>>,
    job_id: JobId,
    task_id: TaskId,
    token: overlord_core::Token,
    started_at_ms: u64,
    every: std::time::Duration,
    /// (last seq sent, when the last partial was sent)
    state: tokio::sync::Mutex<(u64, std::time::Instant)>,
}

impl Live {
    /// A channel to the runtime's reporter for lease `token`.
    pub fn new(
        tx: tokio::sync::mpsc::Sender<overlord_proto::v1::TaskResult>,
        job_id: JobId,
        task_id: TaskId,
        token: overlord_core::Token,
        every: std::time::Duration,
    ) -> Live {
        Live {
            inner: std::sync::Arc::new(LiveInner {
                tx: Some(tx),
                job_id,
                task_id,
                token,
                started_at_ms: overlord_core::now_ms(),
                every,
                state: tokio::sync::Mutex::new((0, std::time::Instant::now())),
            }),
        }
    }

    /// Nowhere to send (a module run outside the runtime): partials are dropped.
    pub fn detached() -> Live {
        Live {
            inner: std::sync::Arc::new(LiveInner {
                tx: None,
                job_id: 0,
                task_id: 0,
                token: 0,
                started_at_ms: 0,
                every: std::time::Duration::from_secs(3600),
                state: tokio::sync::Mutex::new((0, std::time::Instant::now())),
            }),
        }
    }

    /// How often a keep-alive is due.
    pub fn every(&self) -> std::time::Duration {
        self.inner.every
    }

    /// Sends `findings` now (in chunks the coordinator accepts), as partial results.
    pub async fn emit(&self, findings: Vec<FindingOut>) {
        let mut st = self.inner.state.lock().await;
        let chunks: Vec<Vec<FindingOut>> = if findings.is_empty() {
            vec![Vec::new()]
        } else {
            findings
                .chunks(overlord_core::trust::MAX_FINDINGS_PER_RESULT / 4)
                .map(<[FindingOut]>::to_vec)
                .collect()
        };
        for chunk in chunks {
            st.0 += 1;
            st.1 = std::time::Instant::now();
            let Some(tx) = &self.inner.tx else { continue };
            let r = overlord_proto::v1::TaskResult {
                job_id: self.inner.job_id,
                task_id: self.inner.task_id,
                token: self.inner.token,
                ok: true,
                findings: chunk.into_iter().map(FindingOut::into_wire).collect(),
                started_at_ms: self.inner.started_at_ms,
                finished_at_ms: overlord_core::now_ms(),
                partial: true,
                seq: st.0,
                ..Default::default()
            };
            let _ = tx.send(r).await;
        }
    }

    /// Sends an empty partial (renewing the lease) if none was sent for [`Live::every`].
    pub async fn keep_alive(&self) {
        let due = self.inner.state.lock().await.1.elapsed() >= self.inner.every;
        if due {
            self.emit(Vec::new()).await;
        }
    }

    /// Partials sent so far.
    pub async fn sent(&self) -> u64 {
        self.inner.state.lock().await.0
    }
}
