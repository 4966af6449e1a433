//! Jobs and tasks: the validated spec, the stored records, and lazy randomized expansion of a
//! spec into bounded root tasks.

use crate::followup::{RuleError, RuleSet};
use crate::modules::{self, RootKind};
use crate::perm::Permutation;
use crate::ports::{PortError, PortSet};
use crate::scope::{Scope, ScopeError};
use crate::target::{IpRange, TargetError, TargetInput, parse_target};
use crate::{JobId, TaskId, Token};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;

/// Upper bound on root tasks of one job (expansion is lazy; this only guards the arithmetic).
pub const MAX_ROOT_TASKS: u64 = 1 << 40;
/// Upper bound on the number of inputs of one job.
pub const MAX_INPUTS: usize = 1_000_000;

/// A job as a client submits it (strings, unvalidated).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RawSpec {
    pub name: String,
    pub targets: Vec<String>,
    pub ports: String,
    pub modules: Vec<String>,
    pub rate_limit: u32,
    pub inputs: Vec<String>,
    pub params_json: String,
    /// Follow-up rules added to the built-in ones, in text form (`crate::followup`).
    #[serde(default)]
    pub rules: Vec<String>,
    /// Built-in follow-up rules to disable, by name.
    #[serde(default)]
    pub disable_rules: Vec<String>,
    /// Targets from a stored hitlist (the coordinator looks the client's id up and fills this).
    #[serde(default)]
    pub hitlist: Option<crate::hitlist::HitlistRef>,
}

/// A validated, scoped job spec with host names resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub targets: Vec<String>,
    pub ranges: Vec<IpRange>,
    pub ports: PortSet,
    pub modules: Vec<String>,
    pub rate_limit: u32,
    pub inputs: Vec<String>,
    pub params: Value,
    /// The job's follow-up rules (added and disabled; the built-in ones apply otherwise).
    #[serde(default)]
    pub rules: RuleSet,
    /// Who owns the job: the `owner` of the API token that submitted it (empty: submitted
    /// without tokens configured). Older records have none.
    #[serde(default)]
    pub owner: String,
    /// Targets from a hitlist file (sorted, deduplicated, scope-checked when it was uploaded):
    /// root tasks are cut from it by address index ([`crate::hitlist::Hitlist::slice`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hitlist: Option<crate::hitlist::HitlistRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("cannot resolve host name {host:?}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("unknown module {name:?}; available modules: {}", .available.join(", "))]
    UnknownModule {
        name: String,
        available: Vec<String>,
    },
    #[error("no module enabled; pick from: {}", .available.join(", "))]
    NoModules { available: Vec<String> },
    #[error("{0}")]
    Shape(String),
    #[error("params must be a JSON object: {0}")]
    Params(String),
    #[error("job too large: {tasks} root tasks (max {max}); split it into smaller jobs")]
    TooLarge { tasks: u128, max: u64 },
    #[error(transparent)]
    Rule(#[from] RuleError),
}

/// Validates a raw spec. `resolve` maps a host name to its addresses (the one I/O step, done by
/// the caller once at submission). Nothing is persisted when this fails.
pub fn prepare(
    raw: &RawSpec,
    scope: &Scope,
    resolve: &dyn Fn(&str) -> Result<Vec<IpAddr>, String>,
) -> Result<JobSpec, SpecError> {
    let available = || {
        modules::names()
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    if raw.modules.is_empty() {
        return Err(SpecError::NoModules {
            available: available(),
        });
    }
    let mut mods: Vec<String> = Vec::new();
    for m in &raw.modules {
        let m = m.trim().to_ascii_lowercase();
        if modules::info(&m).is_none() {
            return Err(SpecError::UnknownModule {
                name: m,
                available: available(),
            });
        }
        if !mods.contains(&m) {
            mods.push(m);
        }
    }
    let mut ranges = Vec::new();
    for t in &raw.targets {
        match parse_target(t)? {
            TargetInput::Range(r) => ranges.push(r),
            TargetInput::Host(h) => {
                let ips = resolve(&h).map_err(|reason| SpecError::Resolve {
                    host: h.clone(),
                    reason,
                })?;
                if ips.is_empty() {
                    return Err(SpecError::Resolve {
                        host: h,
                        reason: "no addresses".into(),
                    });
                }
                for ip in ips {
                    let r = IpRange::single(ip);
                    if !ranges.contains(&r) {
                        ranges.push(r);
                    }
                }
            }
        }
    }
    scope.check(&ranges)?;
    let ports = if raw.ports.trim().is_empty() && ranges.is_empty() {
        PortSet::default()
    } else {
        PortSet::parse(&raw.ports)?
    };
    let params: Value = if raw.params_json.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(&raw.params_json).map_err(|e| SpecError::Params(e.to_string()))?
    };
    if !params.is_object() {
        return Err(SpecError::Params("got a non-object value".into()));
    }
    if raw.inputs.len() > MAX_INPUTS {
        return Err(SpecError::Shape(format!(
            "too many inputs: {} (max {MAX_INPUTS})",
            raw.inputs.len()
        )));
    }
    let rules = RuleSet::from_text(&raw.rules, &raw.disable_rules)?;
    let spec = JobSpec {
        rules,
        name: raw.name.clone(),
        targets: raw.targets.clone(),
        ranges,
        ports,
        modules: mods,
        rate_limit: raw.rate_limit,
        inputs: raw.inputs.clone(),
        params,
        owner: String::new(),
        hitlist: raw.hitlist.clone(),
    };
    root_plan(&spec)?;
    Ok(spec)
}

/// How a job's root tasks are laid out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootPlan {
    pub module: String,
    pub kind: RootKind,
    pub n_targets: u128,
    pub ports_per_task: u32,
    pub n_chunks: u64,
    /// Addresses per task (a block of consecutive addresses of one target range), and the number
    /// of blocks over all ranges. A task is one block × one chunk of ports.
    pub addrs_per_task: u64,
    pub n_blocks: u64,
    pub total: u64,
}

/// Addresses per task for a module sized by probes: enough addresses that a task holds about
/// `probes_per_task` probes (so a sweep of one port is not one probe per task).
pub fn addrs_per_task(probes_per_task: u32, ports_in_chunk: u32) -> u64 {
    if probes_per_task == 0 || ports_in_chunk == 0 {
        return 1;
    }
    (probes_per_task / ports_in_chunk).max(1) as u64
}

/// The job's `params.probes_per_task`: smaller sweep tasks than the catalog's (more, shorter
/// tasks: finer progress and spreading, e.g. for fault tests). Between 1 and the module's
/// catalog value (tasks can only shrink, so a task's memory and time stay bounded); absent =
/// the catalog value. Modules sized one address per task (catalog 0) ignore it.
pub fn probes_per_task_of(spec: &JobSpec, catalog: u32) -> Result<u32, SpecError> {
    let Some(v) = spec.params.get("probes_per_task") else {
        return Ok(catalog);
    };
    if catalog == 0 {
        return Ok(0);
    }
    match v.as_u64() {
        Some(n) if (1..=u64::from(catalog)).contains(&n) => Ok(n as u32),
        _ => Err(SpecError::Params(format!(
            "probes_per_task must be an integer from 1 to {catalog}, got {v}"
        ))),
    }
}

/// The job's `params.verify_per_mille`: the share (per thousand) of finished scan tasks re-run
/// by another minion to estimate misses (the quality ledger), 0 = never. Absent: 20 ‰ for a
/// job of at least [`crate::quality::DEFAULT_VERIFY_MIN_TASKS`] root tasks (a sample of a few
/// tasks estimates nothing), none below.
pub fn verify_per_mille_of(spec: &JobSpec, root_tasks: u64) -> Result<u32, SpecError> {
    let Some(v) = spec.params.get("verify_per_mille") else {
        return Ok(if root_tasks >= crate::quality::DEFAULT_VERIFY_MIN_TASKS {
            crate::quality::DEFAULT_VERIFY_PER_MILLE
        } else {
            0
        });
    };
    match v.as_u64() {
        Some(n) if n <= 1000 => Ok(n as u32),
        _ => Err(SpecError::Params(format!(
            "verify_per_mille must be an integer from 0 to 1000, got {v}"
        ))),
    }
}

/// Addresses per root task of a hitlist job at most: a task holds its addresses as a list of
/// ranges (scattered addresses are one range each), so this bounds a task record's size.
pub const HITLIST_ADDRS_PER_TASK: u64 = 512;

fn blocks_of(r: &IpRange, addrs: u64) -> u128 {
    r.len().div_ceil(addrs as u128)
}

pub fn root_plan(spec: &JobSpec) -> Result<RootPlan, SpecError> {
    verify_per_mille_of(spec, 0)?;
    if spec.hitlist.is_some() && !spec.ranges.is_empty() {
        return Err(SpecError::Shape(
            "a job has either targets or a hitlist (--targets-file), not both".into(),
        ));
    }
    let has_targets = !spec.ranges.is_empty() || spec.hitlist.is_some();
    let has_inputs = !spec.inputs.is_empty();
    if has_targets && has_inputs {
        return Err(SpecError::Shape(
            "a job has either targets or inputs, not both".into(),
        ));
    }
    for m in &spec.modules {
        let info = modules::info(m).expect("validated");
        match info.root {
            RootKind::Network {
                ports_per_task,
                probes_per_task,
            } if has_targets => {
                if spec.ports.is_empty() {
                    return Err(SpecError::Shape(format!("module {m} needs ports (-p)")));
                }
                let n_chunks = spec.ports.len().div_ceil(ports_per_task) as u64;
                let probes_per_task = probes_per_task_of(spec, probes_per_task)?;
                let mut addrs =
                    addrs_per_task(probes_per_task, spec.ports.len().min(ports_per_task));
                let (n_targets, n_blocks): (u128, u128) = match &spec.hitlist {
                    Some(h) => {
                        addrs = addrs.min(HITLIST_ADDRS_PER_TASK);
                        let n = u128::from(h.addresses);
                        (n, n.div_ceil(addrs as u128))
                    }
                    None => (
                        spec.ranges.iter().map(|r| r.len()).sum(),
                        spec.ranges.iter().map(|r| blocks_of(r, addrs)).sum(),
                    ),
                };
                let total = n_blocks.saturating_mul(n_chunks as u128);
                if total > MAX_ROOT_TASKS as u128 {
                    return Err(SpecError::TooLarge {
                        tasks: total,
                        max: MAX_ROOT_TASKS,
                    });
                }
                return Ok(RootPlan {
                    module: m.clone(),
                    kind: info.root,
                    n_targets,
                    ports_per_task,
                    n_chunks,
                    addrs_per_task: addrs,
                    n_blocks: n_blocks as u64,
                    total: total as u64,
                });
            }
            RootKind::Input if has_inputs => {
                let total = spec.inputs.len() as u64;
                return Ok(RootPlan {
                    module: m.clone(),
                    kind: info.root,
                    n_targets: 0,
                    ports_per_task: 0,
                    n_chunks: 0,
                    addrs_per_task: 0,
                    n_blocks: 0,
                    total,
                });
            }
            RootKind::Count if !has_targets && !has_inputs => {
                let count = spec
                    .params
                    .get("count")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| {
                        SpecError::Shape(format!("module {m} needs params {{\"count\": N}}"))
                    })?;
                if count > MAX_ROOT_TASKS {
                    return Err(SpecError::TooLarge {
                        tasks: count as u128,
                        max: MAX_ROOT_TASKS,
                    });
                }
                return Ok(RootPlan {
                    module: m.clone(),
                    kind: info.root,
                    n_targets: 0,
                    ports_per_task: 0,
                    n_chunks: 0,
                    addrs_per_task: 0,
                    n_blocks: 0,
                    total: count,
                });
            }
            _ => {}
        }
    }
    Err(SpecError::Shape(format!(
        "no enabled module can start this job: targets need one of portscan/syn/udp/service/banner/screenshot (with ports), inputs need enrich/beacon, noop needs params.count (enabled: {})",
        spec.modules.join(",")
    )))
}

/// The task id of the `index`-th root task. Task ids start at 1: on the wire `parent_task_id == 0`
/// means "no parent", so no task may have id 0.
pub fn root_task_id(index: u64) -> TaskId {
    index + 1
}

/// The expansion index of a root task id, if `task_id` is one of the job's `root_total` roots.
pub fn root_index(task_id: TaskId, root_total: u64) -> Option<u64> {
    (1..=root_total).contains(&task_id).then(|| task_id - 1)
}

/// The `index`-th root task (in randomized order) of a job. `index < plan.total`.
pub fn root_task(
    job_id: JobId,
    spec: &JobSpec,
    plan: &RootPlan,
    perm: &Permutation,
    index: u64,
) -> TaskSpec {
    let slot = perm.at(index);
    let mut t = TaskSpec {
        job_id,
        task_id: root_task_id(index),
        parent: None,
        module: plan.module.clone(),
        target: None,
        target_count: 1,
        ports: Vec::new(),
        input: None,
        params: Value::Null,
        blob_sha256: None,
        ranges: Vec::new(),
    };
    match plan.kind {
        RootKind::Network { .. } => {
            let n_blocks = plan.n_blocks as u128;
            let (bi, ci) = ((slot as u128) % n_blocks, (slot as u128 / n_blocks) as u32);
            let addrs = plan.addrs_per_task as u128;
            if let Some(h) = &spec.hitlist {
                // Block `bi` of the hitlist: up to `addrs` addresses, as ranges. A file gone
                // missing leaves the task without a target (it fails, naming the module).
                let ranges = crate::hitlist::Hitlist::open_path(std::path::Path::new(&h.path))
                    .and_then(|l| Ok(l.slice(bi as u64 * addrs as u64, addrs as u64)?))
                    .unwrap_or_default();
                if let Some(first) = ranges.first() {
                    t.target = Some(first.nth(0));
                    t.target_count = ranges.iter().map(|r| r.len()).sum::<u128>() as u32;
                    if ranges.len() > 1 {
                        t.ranges = ranges;
                    }
                }
                t.ports = spec
                    .ports
                    .slice(ci * plan.ports_per_task, plan.ports_per_task);
                return t;
            }
            let mut off = bi;
            for r in &spec.ranges {
                let nb = blocks_of(r, plan.addrs_per_task);
                if off < nb {
                    let first = off * addrs;
                    t.target = Some(r.nth(first));
                    t.target_count = (r.len() - first).min(addrs) as u32;
                    break;
                }
                off -= nb;
            }
            t.ports = spec
                .ports
                .slice(ci * plan.ports_per_task, plan.ports_per_task);
        }
        RootKind::Input => t.input = Some(spec.inputs[slot as usize].clone()),
        RootKind::Count | RootKind::FollowUpOnly => {}
    }
    t
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl TaskSpec {
    /// The address ranges this task covers: its hitlist ranges, or its block.
    pub fn target_ranges(&self) -> Vec<IpRange> {
        if !self.ranges.is_empty() {
            return self.ranges.clone();
        }
        self.target
            .and_then(|t| IpRange::block(t, self.target_count))
            .into_iter()
            .collect()
    }

    /// The addresses this task covers, in order.
    pub fn targets(&self) -> Box<dyn Iterator<Item = IpAddr> + '_> {
        if !self.ranges.is_empty() {
            return Box::new(
                self.ranges
                    .iter()
                    .flat_map(|r| (0..r.len()).map(move |i| r.nth(i))),
            );
        }
        let r = self.target.map(IpRange::single);
        Box::new(
            (0..self.target_count.max(1) as u128).filter_map(move |i| match r? {
                IpRange::V4 { start, .. } => {
                    let a = (start as u128).checked_add(i)?;
                    (a <= u32::MAX as u128).then(|| IpAddr::V4((a as u32).into()))
                }
                IpRange::V6 { start, .. } => Some(IpAddr::V6(start.checked_add(i)?.into())),
            }),
        )
    }
}

/// One unit of work.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub job_id: JobId,
    pub task_id: TaskId,
    pub parent: Option<TaskId>,
    pub module: String,
    pub target: Option<IpAddr>,
    /// Consecutive addresses from `target` this task covers (sweeps: a block of addresses × the
    /// ports). 1 for single-host tasks; omitted from stored records when 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub target_count: u32,
    pub ports: Vec<u16>,
    pub input: Option<String>,
    /// Task-specific params (merged over the job params when leased).
    pub params: Value,
    /// Content-addressed blob the task works on (e.g. a screenshot for `enrich`).
    pub blob_sha256: Option<String>,
    /// Hitlist tasks whose addresses are not one block: the ranges covered (`target` is the
    /// first address, `target_count` the total). Stored records without it hold a block.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<IpRange>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "s", rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Leased {
        minion: String,
        generation: u64,
        token: Token,
        deadline_ms: u64,
        /// The rate (connections/s) this lease was given from its job's limit; 0 = the job is
        /// not rate-limited, or the lease predates recorded rates (see `sched::rate_plan`).
        #[serde(default, skip_serializing_if = "crate::job::is_zero_u32")]
        rate: u32,
    },
    Done,
    Failed {
        reason: String,
    },
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub spec: TaskSpec,
    pub state: TaskState,
    pub attempts: u32,
    pub last_minion: Option<String>,
    pub last_provider: Option<String>,
    pub last_error: Option<String>,
}

impl TaskRecord {
    pub fn new(spec: TaskSpec) -> Self {
        TaskRecord {
            spec,
            state: TaskState::Pending,
            attempts: 0,
            last_minion: None,
            last_provider: None,
            last_error: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Completed,
    Cancelled,
}

/// A job's progress record (small; rewritten often). The spec is stored once beside it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub state: JobState,
    pub created_ms: u64,
    pub finished_ms: u64,
    pub perm_key: u64,
    /// Root tasks in total, and how many have been expanded (the expansion cursor).
    pub root_total: u64,
    pub root_next: u64,
    /// Next id for follow-up tasks (starts after the last root id, `root_total + 1`).
    pub next_task_id: TaskId,
    pub tasks_created: u64,
    pub done: u64,
    pub failed: u64,
    /// Number of stored findings == cursor of the last one.
    pub findings: u64,
    pub stale_rejected: u64,
    /// Findings of a kind this build does not know, or whose data does not fit its kind's type
    /// (stored and served as sent; see `finding`).
    #[serde(default)]
    pub findings_unknown_kind: u64,
    /// Findings with fields this build does not know (stored and served as sent).
    #[serde(default)]
    pub findings_unknown_fields: u64,
    /// Scan jobs: the quality ledger (absent from records of jobs without probe counts).
    #[serde(default, skip_serializing_if = "crate::quality::Ledger::is_empty")]
    pub quality: crate::quality::Ledger,
    /// Tasks dropped by a cancel (counted apart from `failed`; records before this field counted
    /// them in `failed`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cancelled: u64,
    /// Live tasks sending partial results: the highest seq accepted per lease token (so a
    /// partial re-sent after a coordinator restart is still a duplicate).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub partial_seq: std::collections::BTreeMap<Token, u64>,
    /// Verification runs in flight (task id of the re-run → what it re-checks).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub checks: std::collections::BTreeMap<TaskId, crate::quality::Check>,
    /// Failed attempts (retried or final) by class (`task_error::classify`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub errors: std::collections::BTreeMap<crate::task_error::ErrorClass, u64>,
}

pub(crate) fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobRecord {
    pub fn new(id: JobId, root_total: u64, perm_key: u64, now: u64) -> Self {
        JobRecord {
            id,
            state: JobState::Running,
            created_ms: now,
            finished_ms: 0,
            perm_key,
            root_total,
            root_next: 0,
            next_task_id: root_task_id(root_total),
            tasks_created: 0,
            done: 0,
            failed: 0,
            findings: 0,
            stale_rejected: 0,
            findings_unknown_kind: 0,
            findings_unknown_fields: 0,
            quality: Default::default(),
            checks: Default::default(),
            partial_seq: Default::default(),
            cancelled: 0,
            errors: Default::default(),
        }
    }

    /// Counts one failed attempt under the class of its error text.
    pub fn count_error(&mut self, error: &str) -> crate::task_error::ErrorClass {
        let class = crate::task_error::classify(error);
        *self.errors.entry(class).or_default() += 1;
        class
    }

    /// Tasks created and not finished (pending or leased).
    pub fn active(&self) -> u64 {
        self.tasks_created - self.done - self.failed - self.cancelled
    }

    /// A job completes when every root task was expanded and no task remains.
    pub fn is_complete(&self) -> bool {
        self.state == JobState::Running && self.root_next == self.root_total && self.active() == 0
    }
}

/// A stored finding with provenance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    pub cursor: u64,
    pub job_id: JobId,
    pub task_id: TaskId,
    pub parent_task_id: Option<TaskId>,
    pub module: String,
    pub kind: String,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    pub data: Value,
    pub blob_sha256: Option<String>,
    pub minion_id: String,
    pub provider: String,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub stored_at_ms: u64,
}

/// Merges task params over job params, and adds the per-task share of the job's rate limit.
pub fn lease_params(job: &JobSpec, task: &TaskSpec, rate_share: u32) -> Value {
    let mut out = job.params.clone();
    if !out.is_object() {
        out = Value::Object(Default::default());
    }
    let obj = out.as_object_mut().expect("object");
    if let Some(tp) = task.params.as_object() {
        for (k, v) in tp {
            obj.insert(k.clone(), v.clone());
        }
    }
    if rate_share > 0 {
        obj.insert("rate_limit".into(), Value::from(rate_share));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dns(h: &str) -> Result<Vec<IpAddr>, String> {
        if h == "localhost" {
            Ok(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()])
        } else {
            Err("NXDOMAIN".into())
        }
    }

    fn raw(targets: &[&str], ports: &str, modules: &[&str]) -> RawSpec {
        RawSpec {
            targets: targets.iter().map(|s| s.to_string()).collect(),
            ports: ports.into(),
            modules: modules.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn prepare_validates() {
        let s = Scope::loopback();
        let spec = prepare(
            &raw(
                &["localhost", "127.0.0.0/30"],
                "1-65535",
                &["portscan", "banner"],
            ),
            &s,
            &no_dns,
        )
        .unwrap();
        assert_eq!(spec.ranges.len(), 3);
        let plan = root_plan(&spec).unwrap();
        assert_eq!(plan.module, "portscan");
        assert_eq!(plan.n_targets, 6);
        assert_eq!(plan.n_chunks, 32);
        // 2048 ports per chunk, 4096 probes per task: blocks of 2 addresses (1 + 1 + 2 blocks).
        assert_eq!(plan.addrs_per_task, 2);
        assert_eq!(plan.total, 4 * 32);

        let e = prepare(
            &raw(&["127.0.0.1"], "80", &["portscan", "bogus"]),
            &s,
            &no_dns,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("bogus") && e.to_string().contains("portscan, syn, service"),
            "{e}"
        );
        let e = prepare(&raw(&["nope.invalid"], "80", &["portscan"]), &s, &no_dns).unwrap_err();
        assert!(matches!(e, SpecError::Resolve { .. }));
        let e = prepare(&raw(&["10.0.0.0/8"], "80", &["portscan"]), &s, &no_dns).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"));
        let e = prepare(&raw(&["127.0.0.1"], "", &["portscan"]), &s, &no_dns).unwrap_err();
        assert!(matches!(e, SpecError::Ports(_)));
        let e = prepare(&raw(&[], "", &["noop"]), &s, &no_dns).unwrap_err();
        assert!(e.to_string().contains("count"));
    }

    #[test]
    fn expansion_covers_every_target_port_once() {
        let s = Scope::loopback();
        let spec = prepare(
            &raw(&["127.0.0.0/29", "::1"], "1-5000", &["portscan"]),
            &s,
            &no_dns,
        )
        .unwrap();
        let plan = root_plan(&spec).unwrap();
        let perm = Permutation::new(plan.total, 99);
        let mut seen = std::collections::HashSet::new();
        let mut first_targets = Vec::new();
        for i in 0..plan.total {
            let t = root_task(1, &spec, &plan, &perm, i);
            assert!(t.ports.len() <= 2048 && !t.ports.is_empty());
            assert!(t.ports.len() * t.targets().count() <= 4096);
            if i < 4 {
                first_targets.push(t.target.unwrap());
            }
            for a in t.targets() {
                for p in &t.ports {
                    assert!(seen.insert((a, *p)));
                }
            }
        }
        assert_eq!(seen.len(), 9 * 5000);
        // Randomized: the first few tasks are not all on the same address.
        first_targets.dedup();
        assert!(first_targets.len() > 1);
    }

    #[test]
    fn sweeps_are_sized_by_probes_not_addresses() {
        // Regression (issue 14): a /16 x 1 port was 65,536 tasks of one probe each.
        let s = Scope::loopback();
        let spec = prepare(&raw(&["127.0.0.0/8"], "80", &["portscan"]), &s, &no_dns).unwrap();
        let plan = root_plan(&spec).unwrap();
        assert_eq!(plan.addrs_per_task, 4096);
        assert_eq!(plan.total, 4096);
        // params.probes_per_task shrinks tasks (1..=catalog); out of range is a precise error.
        let mut r = raw(&["127.0.0.0/20"], "80,443,8080", &["portscan"]);
        r.params_json = r#"{"probes_per_task": 3}"#.into();
        let plan = root_plan(&prepare(&r, &s, &no_dns).unwrap()).unwrap();
        assert_eq!((plan.addrs_per_task, plan.total), (1, 4096));
        for bad in [
            serde_json::json!(0),
            serde_json::json!(4097),
            serde_json::json!("3"),
        ] {
            r.params_json = serde_json::json!({ "probes_per_task": bad }).to_string();
            let e = prepare(&r, &s, &no_dns).unwrap_err();
            assert!(
                matches!(e, SpecError::Params(_)) && e.to_string().contains("1 to 4096"),
                "{e}"
            );
        }
        // Two ranges whose sizes are not multiples of the block: blocks never cross a range,
        // every (address, port) is covered once, tasks come in a randomised order.
        let spec = prepare(
            &raw(
                &["127.0.0.0/22", "127.1.0.5-127.1.0.9", "::1"],
                "80,443",
                &["portscan"],
            ),
            &s,
            &no_dns,
        )
        .unwrap();
        let plan = root_plan(&spec).unwrap();
        assert_eq!(plan.addrs_per_task, 2048);
        assert_eq!(plan.total, 1 + 1 + 1);
        let perm = Permutation::new(plan.total, 5);
        let mut seen = std::collections::HashSet::new();
        for i in 0..plan.total {
            let t = root_task(1, &spec, &plan, &perm, i);
            let addrs: Vec<IpAddr> = t.targets().collect();
            assert_eq!(addrs.len(), t.target_count as usize);
            assert!(
                spec.ranges
                    .iter()
                    .any(|r| r.contains_ip(addrs[0]) && r.contains_ip(*addrs.last().unwrap())),
                "block crosses a range: {addrs:?}"
            );
            for a in addrs {
                for p in &t.ports {
                    assert!(seen.insert((a, *p)));
                }
            }
        }
        assert_eq!(seen.len(), (1024 + 5 + 1) * 2);
        // Single-host modules keep one address per task.
        let spec = prepare(&raw(&["127.0.0.0/30"], "80", &["service"]), &s, &no_dns).unwrap();
        assert_eq!(root_plan(&spec).unwrap().total, 4);
    }

    #[test]
    fn stored_task_specs_without_a_count_read_as_one_address() {
        // Records written before blocks existed have no `target_count`.
        let old = r#"{"job_id":1,"task_id":2,"parent":null,"module":"portscan","target":"127.0.0.1","ports":[80],"input":null,"params":null,"blob_sha256":null}"#;
        let t: TaskSpec = serde_json::from_str(old).unwrap();
        assert_eq!(t.target_count, 1);
        assert_eq!(serde_json::to_string(&t).unwrap(), old);
    }

    #[test]
    fn task_ids_start_at_one_so_zero_can_mean_no_parent() {
        // Regression (chaos B2): root ids were expansion indexes, so task 0 existed and its
        // follow-ups looked like root tasks on the wire (parent_task_id 0 = none).
        assert_eq!(root_task_id(0), 1);
        assert_eq!(root_index(1, 3), Some(0));
        assert_eq!(root_index(3, 3), Some(2));
        assert_eq!(root_index(0, 3), None);
        assert_eq!(root_index(4, 3), None);
        let rec = JobRecord::new(7, 3, 0, 0);
        assert_eq!(rec.next_task_id, 4, "follow-up ids follow the last root id");
    }

    #[test]
    fn big_ranges_stay_lazy() {
        let spec = prepare(
            &raw(&["10.0.0.0/8"], "1-65535", &["portscan"]),
            &Scope::new(&["0.0.0.0/0".into()], vec![]).unwrap(),
            &no_dns,
        )
        .unwrap();
        let plan = root_plan(&spec).unwrap();
        assert_eq!(plan.total, (1u64 << 23) * 32);
        let perm = Permutation::new(plan.total, 1);
        let t = root_task(1, &spec, &plan, &perm, plan.total - 1);
        assert!(t.target.is_some());
    }

    #[test]
    fn record_completion() {
        let mut j = JobRecord::new(1, 2, 0, 0);
        assert!(!j.is_complete());
        j.root_next = 2;
        j.tasks_created = 3;
        j.done = 2;
        assert!(!j.is_complete());
        j.failed = 1;
        assert!(j.is_complete());
    }

    #[test]
    fn cancelled_tasks_are_not_active_and_errors_count_by_class() {
        let mut j = JobRecord::new(1, 2, 0, 0);
        j.root_next = 2;
        j.tasks_created = 4;
        j.done = 1;
        j.failed = 1;
        j.cancelled = 2;
        assert_eq!(j.active(), 0);
        use crate::task_error::ErrorClass;
        assert_eq!(j.count_error("connect timed out"), ErrorClass::Timeout);
        j.count_error("lease deadline passed");
        j.count_error("read timed out");
        assert_eq!(j.errors[&ErrorClass::Timeout], 2);
        assert_eq!(j.errors[&ErrorClass::LeaseExpired], 1);
        // The stored form names classes; a record without the new fields still reads.
        let v = serde_json::to_value(&j).unwrap();
        assert_eq!(v["errors"]["timeout"], 2);
        assert_eq!(v["cancelled"], 2);
        let mut old = v.clone();
        old.as_object_mut().unwrap().remove("errors");
        old.as_object_mut().unwrap().remove("cancelled");
        let back: JobRecord = serde_json::from_value(old).unwrap();
        assert_eq!((back.cancelled, back.errors.len()), (0, 0));
    }
}
