//! One job's task model as a plain type: lazy expansion of root tasks, the pending queue, leases
//! with fencing tokens and deadlines, the judging of results (verdicts, findings, follow-up rules,
//! retries, partial results, verification runs), completion and cancel, and recovery from the
//! stored records. No actor, socket or clock: every input carries the time, and every change the
//! world must see is an [`Effects`] entry (writes to commit, messages to the registry, hub events,
//! the job's end) that the job actor (`crate::job`) applies through its committer.
//!
//! What is persisted, and what recovery rebuilds from it ([`JobModel::recover`]):
//! - the job record (counts, expansion cursor, partial seqs, verification checks, quality ledger),
//!   written at the end of every input that changed it ([`JobModel::take_effects`]);
//! - a task's record at each state change except creation of a root task (a pure function of
//!   the spec and its index: below the cursor and unrecorded = pending), and its end
//!   ([`Op::TaskDone`] or a terminal record);
//! - findings and blobs, with the task end that produced them (one batch).
//!
//! Kept in memory only (rebuilt empty): the follow-up guard (dedup, depth), verification skip
//! counts, demand bookkeeping and the capacity hint.

use crate::engine::{EngineConfig, IngestedResult, ParsedFinding, status_of};
use crate::hub::HubEvent;
use crate::model::planner::Demand;
use crate::telemetry;
use overlord_core::finding::Payload;
use overlord_core::followup::{FindingView, follow_ups};
use overlord_core::job::{
    FindingRecord, JobRecord, JobSpec, JobState, RootPlan, TaskRecord, TaskSpec, TaskState,
    lease_params, root_index, root_plan, root_task,
};
use overlord_core::perm::Permutation;
use overlord_core::sched::{self, Retry, Verdict};
use overlord_core::{JobId, TaskId, Token};
use overlord_proto::v1;
use overlord_storage::{Op, Store, StoreError, StoredTask};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tracing::{info, warn};

/// Progress events per job at most every this many ms.
const PROGRESS_EVERY_MS: u64 = 250;
/// Re-announce demand at least this often while tasks are pending (covers lost messages).
const DEMAND_REFRESH_MS: u64 = 500;
/// Pending tasks an offer may skip over (no offered minion runs their module) before it stops.
const MAX_SKIP: usize = 1024;

/// What the job tells the registry (the actor casts these after the turn's writes are applied).
#[derive(Clone, Debug, PartialEq)]
pub enum ToRegistry {
    /// The job (re)started holding these leases (token, minion, generation); `keep`: leases of
    /// minions still current stay, the others are sent back for requeueing.
    Adopt {
        leases: Vec<(Token, String, u64)>,
        keep: bool,
    },
    /// Leases given up (cancel, a rejected partial): free the slots, tell the minions.
    Release(Vec<Token>),
    /// Leases past their deadline, requeued here.
    Expired(Vec<Token>),
    /// The minion sent something malformed: end its session.
    Kick {
        minion: String,
        generation: u64,
        reason: String,
    },
    /// Answer to offer `offer`: tokens leased per (minion, generation), and the new demand.
    Taken {
        offer: u64,
        used: Vec<(String, u64, Vec<Token>)>,
        demand: Demand,
    },
    Demand(Demand),
}

/// Counts for the shared counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub accepted: u64,
    pub rejected: u64,
    pub granted: u64,
}

/// What one input (or several) changed, for the actor to apply: `writes` in one batch, then
/// `registry` messages; `events`, `finished` and acknowledgements only once the batch is durable.
#[derive(Debug, Default)]
pub struct Effects {
    pub writes: Vec<Op>,
    pub registry: Vec<ToRegistry>,
    pub events: Vec<HubEvent>,
    /// The job ended (completed or cancelled) with this record: the manager and the registry
    /// learn it once durable.
    pub finished: Option<(JobRecord, Arc<JobSpec>)>,
    pub tally: Tally,
}

/// Free slots of one minion in an offer.
#[derive(Clone, Copy, Debug)]
pub struct Offered<'a> {
    pub minion: &'a str,
    pub provider: &'a str,
    pub generation: u64,
    pub modules: &'a [String],
    pub free: u32,
}

/// A task the coordinator runs itself (the leak lookup): its findings or error, and its times.
pub struct LocalRun {
    pub result: Result<Vec<ParsedFinding>, String>,
    pub started_ms: u64,
    pub finished_ms: u64,
}

/// Runs tasks of modules `crate::lookup::runs_here` names, inside the coordinator.
pub type LocalRunner = Arc<dyn Fn(&TaskSpec) -> LocalRun + Send + Sync>;

/// How a cancel was answered.
pub enum CancelOutcome {
    /// The job had ended already: answer now.
    AlreadyDone(v1::JobStatus),
    /// Cancelled now: answer once the cancel is durable.
    Cancelled(v1::JobStatus),
}

/// The limits a job model works with (from the engine's configuration).
#[derive(Clone, Debug)]
pub struct Limits {
    pub task_timeout_ms: u64,
    pub max_attempts: u32,
    pub expand_watermark: usize,
}

impl From<&EngineConfig> for Limits {
    fn from(c: &EngineConfig) -> Self {
        Limits {
            task_timeout_ms: c.task_timeout_ms,
            max_attempts: c.max_attempts,
            expand_watermark: c.expand_watermark,
        }
    }
}

pub struct JobModel {
    limits: Limits,
    local: Option<LocalRunner>,
    rec: JobRecord,
    spec: Arc<JobSpec>,
    plan: RootPlan,
    perm: Permutation,
    pending: VecDeque<TaskId>,
    pending_by_module: HashMap<String, u64>,
    /// Non-terminal tasks (pending or leased).
    tasks: HashMap<TaskId, TaskRecord>,
    leases: HashMap<Token, TaskId>,
    /// The time of the input being handled.
    now: u64,
    dirty: bool,
    progress_dirty: bool,
    last_progress_ms: u64,
    /// Completed or cancelled in memory; `final_durable` once the flush covering it returned.
    finishing: bool,
    final_durable: bool,
    /// Minions alive (from the last offer): rate limit, verification sampling.
    alive: u32,
    /// Minions of this job whose miss rate is out of line → the share of their slots it uses
    /// (`quality::judge`, recomputed when a verification ends).
    flagged: HashMap<String, f64>,
    /// Offers a verification run let pass waiting for another minion (in memory only).
    verify_skips: HashMap<TaskId, u32>,
    /// The largest offer seen plus leases held: the expansion watermark grows with it.
    capacity_hint: usize,
    last_demand: Option<Demand>,
    last_demand_ms: u64,
    /// Follow-up admission (scope, dedup, depth, per-job cap); in memory only.
    followups: overlord_core::trust::FollowupGuard,
    /// The job ended in this turn: [`Effects::finished`] carries its final record.
    notify_manager: bool,
    out: Effects,
}

impl JobModel {
    /// A job just submitted (its spec and first record are written by the manager).
    pub fn new(
        limits: Limits,
        local: Option<LocalRunner>,
        rec: JobRecord,
        spec: Arc<JobSpec>,
        plan: RootPlan,
    ) -> Self {
        let perm = Permutation::new(plan.total, rec.perm_key);
        JobModel {
            limits,
            local,
            rec,
            spec,
            plan,
            perm,
            pending: VecDeque::new(),
            pending_by_module: HashMap::new(),
            tasks: HashMap::new(),
            leases: HashMap::new(),
            now: 0,
            dirty: true,
            progress_dirty: true,
            last_progress_ms: 0,
            finishing: false,
            final_durable: false,
            alive: 1,
            flagged: HashMap::new(),
            verify_skips: HashMap::new(),
            capacity_hint: 0,
            last_demand: None,
            last_demand_ms: 0,
            followups: Default::default(),
            notify_manager: false,
            out: Effects::default(),
        }
    }

    /// Rebuilds a running job from storage. Its leases are reported to the registry
    /// ([`ToRegistry::Adopt`], `keep` as given): after a coordinator restart leases of minions
    /// that come back stay valid; after the job actor's own failure they are all given back.
    pub fn recover(
        store: &dyn Store,
        id: JobId,
        keep_leases: bool,
        limits: Limits,
        local: Option<LocalRunner>,
        now: u64,
    ) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            key: format!("j:{id}"),
            reason,
        };
        let rec = store
            .job(id)?
            .ok_or_else(|| corrupt("missing job record".into()))?;
        let spec = store
            .spec(id)?
            .ok_or_else(|| corrupt("missing job spec".into()))?;
        let plan = root_plan(&spec).map_err(|e| corrupt(e.to_string()))?;
        let mut m = JobModel::new(limits, local, rec, Arc::new(spec), plan);
        m.now = now;
        m.dirty = false;
        // Root tasks below the expansion cursor with no record were created but never leased
        // (creation is not persisted): they are pending again.
        let mut stored_roots = HashSet::new();
        for stored in store.tasks(id)? {
            if let Some(index) = root_index(stored.task_id(), m.rec.root_total)
                && index < m.rec.root_next
            {
                stored_roots.insert(index);
            }
            let StoredTask::Record(mut t) = stored else {
                continue; // finished
            };
            match &mut t.state {
                TaskState::Pending => {
                    let tid = t.spec.task_id;
                    m.tasks.insert(tid, t);
                    m.push_back(tid);
                }
                TaskState::Leased {
                    deadline_ms, token, ..
                } => {
                    // The minion may still hold it: a fresh lease timeout of its module (as
                    // when leased, not the global maximum: a silent holder loses it in seconds
                    // after a coordinator restart too).
                    *deadline_ms = now
                        + overlord_core::trust::lease_timeout_ms(
                            &t.spec.module,
                            t.spec.ports.len(),
                            &m.spec.params,
                            m.limits.task_timeout_ms,
                        );
                    m.leases.insert(*token, t.spec.task_id);
                    m.tasks.insert(t.spec.task_id, t);
                }
                _ => {}
            }
        }
        for index in 0..m.rec.root_next {
            if !stored_roots.contains(&index) {
                let t = root_task(id, &m.spec, &m.plan, &m.perm, index);
                let tid = t.task_id;
                m.tasks.insert(tid, TaskRecord::new(t));
                m.push_back(tid);
            }
        }
        m.readmit_follow_ups();
        m.flagged = flagged_of(&m.rec.quality);
        info!(
            job_id = id,
            tasks = m.tasks.len(),
            pending = m.pending.len(),
            "job model recovered"
        );
        let leases = m.leased();
        m.out.registry.push(ToRegistry::Adopt {
            leases,
            keep: keep_leases,
        });
        Ok(m)
    }

    /// The follow-up guard is kept in memory only: at recovery the follow-ups still live (not
    /// verification runs) are admitted again, so a finding reported again after a restart does
    /// not make one of them twice. Ended follow-ups are forgotten, and a depth is known only down
    /// to the nearest ended ancestor (a lower bound).
    fn readmit_follow_ups(&mut self) {
        let mut live: Vec<&TaskSpec> = self
            .tasks
            .values()
            .map(|t| &t.spec)
            .filter(|t| t.parent.is_some() && !self.rec.checks.contains_key(&t.task_id))
            .collect();
        // parents before their children (ids grow)
        live.sort_unstable_by_key(|t| t.task_id);
        for t in live {
            let depth = t.parent.map_or(0, |p| self.followups.depth_of(p)) + 1;
            let _ = self.followups.admit(
                &t.module,
                t.target,
                &t.ports,
                t.blob_sha256.as_deref(),
                1,
                true,
            );
            self.followups.set_depth(t.task_id, depth);
        }
    }

    /// The first turn of a new or recovered job: expand, and complete it if nothing is left.
    pub fn start(&mut self, now: u64) {
        self.now = now;
        self.expand();
        self.check_complete();
    }

    // ---------- what the actor reads ----------

    pub fn id(&self) -> JobId {
        self.rec.id
    }

    pub fn record(&self) -> &JobRecord {
        &self.rec
    }

    pub fn spec(&self) -> &Arc<JobSpec> {
        &self.spec
    }

    /// Non-terminal tasks (pending or leased).
    pub fn tasks(&self) -> &HashMap<TaskId, TaskRecord> {
        &self.tasks
    }

    /// Pending tasks in queue order.
    pub fn pending(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.pending.iter().copied()
    }

    /// Pending tasks per module (only modules with pending tasks, sorted).
    pub fn pending_by_module(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .pending_by_module
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(m, n)| (m.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Live leases: token → task.
    pub fn leases(&self) -> &HashMap<Token, TaskId> {
        &self.leases
    }

    pub fn finishing(&self) -> bool {
        self.finishing
    }

    /// The flush covering the job's end returned (nothing of it waits for one any more).
    pub fn final_durable(&mut self) {
        if self.finishing {
            self.final_durable = true;
        }
    }

    /// Leases held: (token, minion, generation).
    pub fn leased(&self) -> Vec<(Token, String, u64)> {
        self.tasks
            .values()
            .filter_map(|t| match &t.state {
                TaskState::Leased {
                    minion,
                    generation,
                    token,
                    ..
                } => Some((*token, minion.clone(), *generation)),
                _ => None,
            })
            .collect()
    }

    fn leased_count(&self) -> u64 {
        (self.tasks.len() - self.pending.len()) as u64
    }

    pub fn demand(&self) -> Demand {
        let max_new = if self.finishing {
            0
        } else if self.spec.rate_limit > 0 {
            // A rate-limited job: as many as its limit's unused part allows (`sched::rate_plan`).
            self.rate_plan().max_new
        } else {
            u64::MAX
        };
        Demand {
            by_module: self.pending_by_module(),
            max_new,
        }
    }

    pub fn status(&self) -> v1::JobStatus {
        let live = (!self.finishing || !self.final_durable)
            .then(|| (self.pending.len() as u64, self.leased_count()));
        let mut st = status_of(&self.rec, &self.spec, live);
        if self.finishing && !self.final_durable {
            // Not durable yet: nobody may see it finished before its results are readable.
            st.state = v1::JobState::Running as i32;
        }
        st
    }

    /// Ends a turn: the job record joins the writes if it changed, and the demand is announced
    /// if it changed (or is due for a refresh). Returns everything to apply.
    pub fn take_effects(&mut self, now: u64) -> Effects {
        self.write_record();
        if std::mem::take(&mut self.notify_manager) {
            self.out.finished = Some((self.rec.clone(), self.spec.clone()));
        }
        if !self.finishing {
            let d = self.demand();
            let changed = self.last_demand.as_ref() != Some(&d);
            let refresh =
                d.total() > 0 && now.saturating_sub(self.last_demand_ms) >= DEMAND_REFRESH_MS;
            if changed || refresh {
                self.out.registry.push(ToRegistry::Demand(d.clone()));
                self.last_demand = Some(d);
                self.last_demand_ms = now;
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Puts the job record in the writes if it changed.
    fn write_record(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.out.writes.push(Op::Job(self.rec.clone()));
        }
    }

    // ---------- the pending queue ----------

    /// Adds one pending task of `task`'s module to the per-module counts (or takes one away).
    fn count_pending(&mut self, task: TaskId, add: bool) {
        let Some(t) = self.tasks.get(&task) else {
            return;
        };
        let module = t.spec.module.as_str();
        match self.pending_by_module.get_mut(module) {
            Some(n) if add => *n += 1,
            Some(n) => *n = n.saturating_sub(1),
            None if add => {
                self.pending_by_module.insert(module.to_string(), 1);
            }
            None => {}
        }
    }

    fn push_back(&mut self, task: TaskId) {
        self.count_pending(task, true);
        self.pending.push_back(task);
    }

    fn push_front(&mut self, task: TaskId) {
        self.count_pending(task, true);
        self.pending.push_front(task);
    }

    fn pop_front(&mut self) -> Option<TaskId> {
        let t = self.pending.pop_front()?;
        self.count_pending(t, false);
        Some(t)
    }

    /// The rate decision for this job now (`sched::rate_plan`), from the rates its leases in
    /// flight were given (recorded in each lease, so they survive a restart).
    fn rate_plan(&self) -> sched::RatePlan {
        let in_flight: Vec<u32> = if self.spec.rate_limit == 0 {
            Vec::new()
        } else {
            self.tasks
                .values()
                .filter_map(|t| match t.state {
                    TaskState::Leased { rate, .. } => Some(rate),
                    _ => None,
                })
                .collect()
        };
        let left = self.tasks.len() as u64 + (self.rec.root_total - self.rec.root_next);
        sched::rate_plan(self.spec.rate_limit, &in_flight, self.alive as u64, left)
    }

    /// The lease `token` ended: its partial-result seq is no longer needed.
    fn forget_partials(&mut self, token: Token) {
        if self.rec.partial_seq.remove(&token).is_some() {
            self.dirty = true;
        }
    }

    // ---------- expansion and completion ----------

    /// Expands root tasks up to the watermark (lazy: a /8 never materialises at once).
    fn expand(&mut self) {
        if self.finishing {
            return;
        }
        let watermark = self.limits.expand_watermark.max(self.capacity_hint * 2);
        while self.pending.len() < watermark && self.rec.root_next < self.rec.root_total {
            let t = root_task(
                self.rec.id,
                &self.spec,
                &self.plan,
                &self.perm,
                self.rec.root_next,
            );
            self.rec.root_next += 1;
            self.rec.tasks_created += 1;
            let tid = t.task_id;
            // Not written: a root task is a pure function of (job spec, index); until its
            // first state change (lease) it is recomputed from the persisted expansion cursor
            // (`root_next`, in the job record) at recovery.
            self.tasks.insert(tid, TaskRecord::new(t));
            self.push_back(tid);
            self.dirty = true;
        }
    }

    fn check_complete(&mut self) {
        if self.finishing || !self.rec.is_complete() {
            return;
        }
        self.rec.state = JobState::Completed;
        self.rec.finished_ms = self.now;
        self.dirty = true;
        info!(
            job_id = self.rec.id,
            done = self.rec.done,
            failed = self.rec.failed,
            findings = self.rec.findings,
            "job completed"
        );
        self.finish();
    }

    fn finish(&mut self) {
        self.finishing = true;
        let st = status_of(&self.rec, &self.spec, None);
        self.out.events.push(HubEvent::Finished(self.rec.id, st));
        self.notify_manager = true;
    }

    /// Cancels the job: every live task ends cancelled, its leases are released.
    pub fn cancel(&mut self, now: u64) -> CancelOutcome {
        self.now = now;
        if self.finishing {
            return CancelOutcome::AlreadyDone(self.status());
        }
        let mut revoke = Vec::new();
        for (_, mut t) in self.tasks.drain() {
            if let TaskState::Leased { token, .. } = &t.state {
                revoke.push(*token);
            }
            t.state = TaskState::Cancelled;
            self.rec.cancelled += 1;
            self.out.writes.push(Op::Task(t));
        }
        self.pending.clear();
        self.pending_by_module.clear();
        self.leases.clear();
        self.rec.partial_seq.clear();
        self.out.registry.push(ToRegistry::Release(revoke));
        self.rec.checks.clear();
        self.verify_skips.clear();
        self.rec.state = JobState::Cancelled;
        self.rec.finished_ms = now;
        self.dirty = true;
        info!(job_id = self.rec.id, "job cancelled");
        self.finish();
        CancelOutcome::Cancelled(status_of(&self.rec, &self.spec, None))
    }

    // ---------- leases ----------

    /// Leases pending tasks to the offered slots. Returns the leases per offered minion (same
    /// order as `slots`); the tasks' leased state is in the writes, and [`ToRegistry::Taken`]
    /// tells the registry the tokens (send it before the leases). `token` makes fencing tokens;
    /// `blob` reads a stored blob a task refers to.
    pub fn offer(
        &mut self,
        offer: u64,
        slots: &[Offered<'_>],
        alive: u32,
        now: u64,
        token: &mut dyn FnMut() -> Token,
        blob: &dyn Fn(&str) -> Option<Vec<u8>>,
    ) -> Vec<Vec<v1::TaskLease>> {
        self.now = now;
        self.alive = alive.max(1);
        let offered: usize = slots.iter().map(|s| s.free as usize).sum();
        self.capacity_hint = self
            .capacity_hint
            .max(offered + self.leased_count() as usize);
        let max_new = self.demand().max_new;
        // A rate-limited job's leases together stay within its limit (`sched::rate_plan`): each
        // new lease gets the share planned now and keeps it until it ends.
        let rate_share = self.rate_plan().share;
        let mut views: Vec<sched::MinionView<'_>> = slots
            .iter()
            .map(|s| sched::MinionView {
                id: s.minion,
                provider: s.provider,
                modules: s.modules,
                free: overlord_core::quality::cut_free(s.free, self.flagged.get(s.minion).copied()),
                alive: true,
            })
            .collect();
        let mut out: Vec<Vec<v1::TaskLease>> = vec![Vec::new(); slots.len()];
        let mut tokens: Vec<Vec<Token>> = vec![Vec::new(); slots.len()];
        let mut skipped = Vec::new();
        let mut granted = 0u64;
        let mut shared_params: Option<String> = None;
        while granted < max_new && views.iter().any(|v| v.free > 0) {
            let Some(task_id) = self.pop_front() else {
                break;
            };
            let t = self.tasks.get(&task_id).expect("pending task");
            let Some(i) = sched::place(
                &t.spec.module,
                t.last_minion.as_deref(),
                t.last_provider.as_deref(),
                &views,
            ) else {
                skipped.push(task_id);
                if skipped.len() >= MAX_SKIP {
                    break;
                }
                continue;
            };
            // a verification run waits for another minion than the first run's (a bounded wait)
            if let Some(c) = self.rec.checks.get(&task_id)
                && !overlord_core::quality::may_verify_on(
                    &c.minion,
                    views[i].id,
                    self.alive,
                    self.verify_skips.get(&task_id).copied().unwrap_or(0),
                )
            {
                *self.verify_skips.entry(task_id).or_default() += 1;
                skipped.push(task_id);
                if skipped.len() >= MAX_SKIP {
                    break;
                }
                continue;
            }
            let token = token();
            // A lease lasts as long as its module is expected to take (x4), not the global max:
            // a minion that heartbeats but never answers loses it in seconds.
            let deadline = now
                + overlord_core::trust::lease_timeout_ms(
                    &t.spec.module,
                    t.spec.ports.len(),
                    &self.spec.params,
                    self.limits.task_timeout_ms,
                );
            let t = self.tasks.get_mut(&task_id).expect("pending task");
            t.state = TaskState::Leased {
                minion: slots[i].minion.to_string(),
                generation: slots[i].generation,
                token,
                deadline_ms: deadline,
                rate: rate_share,
            };
            self.out.writes.push(Op::Task(t.clone()));
            // Without params of its own a task's lease params are the job's (plus the rate
            // share), the same for the whole offer: serialized once.
            let params_json = if t.spec.params.as_object().is_some_and(|o| !o.is_empty()) {
                lease_params(&self.spec, &t.spec, rate_share).to_string()
            } else {
                shared_params
                    .get_or_insert_with(|| {
                        lease_params(&self.spec, &t.spec, rate_share).to_string()
                    })
                    .clone()
            };
            // A blob that arrived in this turn's writes (not yet applied) first, then the store.
            let blob = t
                .spec
                .blob_sha256
                .as_ref()
                .and_then(|sha| pending_blob(&self.out.writes, sha).or_else(|| blob(sha)))
                .unwrap_or_default();
            out[i].push(v1::TaskLease {
                job_id: self.rec.id,
                task_id,
                parent_task_id: t.spec.parent.unwrap_or(0),
                module: t.spec.module.clone(),
                target: t.spec.target.map(|a| a.to_string()).unwrap_or_default(),
                target_count: t.spec.target_count,
                target_ranges: t.spec.ranges.iter().map(|r| r.to_string()).collect(),
                ports: t.spec.ports.iter().map(|p| *p as u32).collect(),
                params_json,
                blob,
                input: t.spec.input.clone().unwrap_or_default(),
                token,
                deadline_ms: deadline,
                traceparent: telemetry::lease_traceparent(
                    self.rec.id,
                    task_id,
                    token,
                    &t.spec.module,
                ),
            });
            telemetry::record(
                telemetry::Event::TaskLeased {
                    module: &t.spec.module,
                },
                1,
            );
            tokens[i].push(token);
            self.leases.insert(token, task_id);
            views[i].free -= 1;
            granted += 1;
        }
        for tid in skipped.into_iter().rev() {
            self.push_front(tid);
        }
        if granted > 0 {
            self.progress_dirty = true;
            self.out.tally.granted += granted;
        }
        self.expand();
        // Leased state is applied before the registry learns the tokens, and the registry
        // learns them before the minions get them (so it knows a token before its result).
        self.write_record();
        let demand = self.demand();
        let used = slots
            .iter()
            .zip(tokens)
            .filter(|(_, t)| !t.is_empty())
            .map(|(s, t)| (s.minion.to_string(), s.generation, t))
            .collect();
        self.out.registry.push(ToRegistry::Taken {
            offer,
            used,
            demand: demand.clone(),
        });
        self.last_demand = Some(demand);
        self.last_demand_ms = now;
        out
    }

    /// Leases the registry took back (minion dead or replaced): their tasks run again.
    pub fn requeue_tokens(&mut self, tokens: Vec<Token>, reason: &str, count: bool, now: u64) {
        self.now = now;
        for tok in tokens {
            self.forget_partials(tok);
            if let Some(task) = self.leases.remove(&tok) {
                self.requeue(task, reason, count);
            }
        }
        self.check_complete();
    }

    /// Results the registry rejected as stale (counted in the job's record).
    pub fn stale(&mut self, n: u64) {
        self.rec.stale_rejected += n;
        self.dirty = true;
    }

    /// The registry restarted: report live leases again (they stay), and the demand.
    pub fn readopt(&mut self) {
        let leases = self.leased();
        self.out
            .registry
            .push(ToRegistry::Adopt { leases, keep: true });
        self.last_demand = None;
    }

    /// Returns a task to the queue (or fails it after max attempts). The token is already gone.
    fn requeue(&mut self, task: TaskId, reason: &str, count_attempt: bool) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        if let TaskState::Leased { minion, .. } = &t.state {
            t.last_minion = Some(minion.clone());
        }
        if count_attempt {
            t.attempts += 1;
        }
        t.last_error = Some(reason.to_string());
        self.rec.count_error(reason);
        self.dirty = true;
        self.progress_dirty = true;
        if sched::on_failure(t.attempts, self.limits.max_attempts, false) == Retry::Fail {
            let reason = format!("{reason} (after {} attempts)", t.attempts);
            self.fail_task(task, reason);
        } else {
            t.state = TaskState::Pending;
            self.out.writes.push(Op::Task(t.clone()));
            self.push_front(task);
        }
    }

    /// Time passes: leases past their deadline are requeued, the queue refilled, completion
    /// checked, and a progress event published at most every [`PROGRESS_EVERY_MS`].
    pub fn tick(&mut self, now: u64) {
        self.now = now;
        if self.finishing {
            return;
        }
        let mut expired: Vec<(Token, TaskId)> = self
            .leases
            .iter()
            .filter(|(_, t)| {
                self.tasks.get(t).is_some_and(
                    |t| matches!(t.state, TaskState::Leased { deadline_ms, .. } if deadline_ms < now),
                )
            })
            .map(|(tok, t)| (*tok, *t))
            .collect();
        if !expired.is_empty() {
            // in token order (lease order), whatever the map's order
            expired.sort_unstable();
            self.out.registry.push(ToRegistry::Expired(
                expired.iter().map(|(t, _)| *t).collect(),
            ));
            for (tok, task) in expired {
                self.leases.remove(&tok);
                self.forget_partials(tok);
                self.requeue(task, overlord_core::task_error::LEASE_EXPIRED, true);
            }
        }
        self.expand();
        self.check_complete();
        if self.progress_dirty
            && !self.finishing
            && now.saturating_sub(self.last_progress_ms) >= PROGRESS_EVERY_MS
        {
            self.progress_dirty = false;
            self.last_progress_ms = now;
            self.out
                .events
                .push(HubEvent::Progress(self.rec.id, self.status()));
        }
    }

    // ---------- results ----------

    /// Judges a batch of results of one minion session and returns their acknowledgements (to
    /// send once this turn's writes are durable).
    pub fn results(
        &mut self,
        minion: &str,
        provider: &str,
        generation: u64,
        items: Vec<IngestedResult>,
        now: u64,
    ) -> Vec<v1::AckItem> {
        self.now = now;
        let mut acks = Vec::with_capacity(items.len());
        let mut malformed = None;
        for r in items {
            let token = r.token;
            if let Some(seq) = r.partial {
                acks.push(self.partial(r, seq, minion, provider, generation, &mut malformed));
                continue;
            }
            self.forget_partials(token);
            let state = self.tasks.get(&r.task_id).map(|t| &t.state);
            match sched::judge_result(state, token, minion, generation) {
                Verdict::Accept => {}
                Verdict::Duplicate => {
                    acks.push(ack(token, true, "duplicate"));
                    continue;
                }
                Verdict::Stale | Verdict::Unknown => {
                    self.out.tally.rejected += 1;
                    telemetry::record(telemetry::Event::ResultRejected { reason: "stale" }, 1);
                    self.rec.stale_rejected += 1;
                    self.dirty = true;
                    acks.push(ack(
                        token,
                        false,
                        "no live lease for this token (revoked, re-leased or completed)",
                    ));
                    continue;
                }
            }
            self.leases.remove(&token);
            match r.findings {
                Err(e) => {
                    telemetry::record(
                        telemetry::Event::ResultRejected {
                            reason: "malformed",
                        },
                        1,
                    );
                    acks.push(ack(
                        token,
                        false,
                        &format!("{}{e}", overlord_core::task_error::MALFORMED_PREFIX),
                    ));
                    self.requeue(
                        r.task_id,
                        &format!("{}{e}", overlord_core::task_error::MALFORMED_PREFIX),
                        true,
                    );
                    malformed = Some(e);
                }
                // Untrusted input: every finding is held against the task it answers.
                Ok(findings)
                    if r.ok
                        && let Some(Err(v)) = self
                            .tasks
                            .get(&r.task_id)
                            .map(|t| check_findings(&t.spec, &findings)) =>
                {
                    telemetry::record(
                        telemetry::Event::ResultRejected {
                            reason: "violation",
                        },
                        1,
                    );
                    warn!(job_id = self.rec.id, task_id = r.task_id, minion, violation = %v, "result rejected");
                    let reason = format!("{}{v}", overlord_core::trust::REJECTED_PREFIX);
                    acks.push(ack(token, false, &reason));
                    // Another minion gets the task; this attempt is not counted against it.
                    self.requeue(r.task_id, &reason, false);
                    malformed = Some(reason);
                }
                Ok(findings) if r.ok => {
                    if !r.probe_counts.is_empty() {
                        self.rec.quality.record(minion, provider, &r.probe_counts);
                        self.dirty = true;
                    }
                    let findings = self.judge_verification(r.task_id, minion, findings);
                    self.complete_task(
                        r.task_id,
                        findings,
                        minion,
                        provider,
                        r.started_at_ms,
                        r.finished_at_ms,
                    );
                    self.out.tally.accepted += 1;
                    telemetry::record(telemetry::Event::ResultAccepted, 1);
                    acks.push(ack(token, true, ""));
                }
                Ok(_) => {
                    self.out.tally.accepted += 1;
                    telemetry::record(telemetry::Event::ResultAccepted, 1);
                    acks.push(ack(token, true, ""));
                    self.fail_attempt(r.task_id, minion, provider, &r.error, r.permanent);
                }
            }
        }
        self.expand();
        self.check_complete();
        if let Some(e) = malformed {
            self.out.registry.push(ToRegistry::Kick {
                minion: minion.to_string(),
                generation,
                reason: format!("malformed result: {e}"),
            });
        }
        acks
    }

    /// A partial result of a live task (`beacon_follow`): its findings are checked and stored
    /// like a final result's, the lease stays and its deadline moves on (an empty partial is a
    /// keep-alive); a partial at or below the highest seq accepted under its token is a
    /// duplicate. A malformed or violating partial ends the lease (the task is requeued).
    fn partial(
        &mut self,
        r: IngestedResult,
        seq: u64,
        minion: &str,
        provider: &str,
        generation: u64,
        malformed: &mut Option<String>,
    ) -> v1::AckItem {
        let token = r.token;
        let state = self.tasks.get(&r.task_id).map(|t| &t.state);
        let last = self.rec.partial_seq.get(&token).copied();
        match sched::judge_partial(state, token, minion, generation, seq, last) {
            Verdict::Accept => {}
            Verdict::Duplicate => return ack_seq(token, true, "duplicate", seq),
            Verdict::Stale | Verdict::Unknown => {
                self.out.tally.rejected += 1;
                telemetry::record(telemetry::Event::ResultRejected { reason: "stale" }, 1);
                self.rec.stale_rejected += 1;
                self.dirty = true;
                return ack_seq(
                    token,
                    false,
                    "no live lease for this token (revoked, re-leased or completed)",
                    seq,
                );
            }
        }
        let reject = |m: &mut Self, reason: String, count: bool| {
            m.leases.remove(&token);
            m.forget_partials(token);
            m.out.registry.push(ToRegistry::Release(vec![token]));
            m.requeue(r.task_id, &reason, count);
            ack_seq(token, false, &reason, seq)
        };
        let findings = match r.findings {
            Err(e) => {
                let reason = format!("{}{e}", overlord_core::task_error::MALFORMED_PREFIX);
                *malformed = Some(e);
                return reject(self, reason, true);
            }
            Ok(_) if !r.ok => {
                let reason = format!(
                    "{}a partial result must be ok",
                    overlord_core::task_error::MALFORMED_PREFIX
                );
                *malformed = Some(reason.clone());
                return reject(self, reason, true);
            }
            Ok(f) => f,
        };
        let Some(t) = self.tasks.get(&r.task_id) else {
            return ack_seq(token, false, "unknown task", seq);
        };
        if let Err(v) = check_findings(&t.spec, &findings) {
            warn!(job_id = self.rec.id, task_id = r.task_id, minion, violation = %v, "partial result rejected");
            let reason = format!("{}{v}", overlord_core::trust::REJECTED_PREFIX);
            *malformed = Some(reason.clone());
            return reject(self, reason, false);
        }
        let spec = t.spec.clone();
        let timeout = overlord_core::trust::lease_timeout_ms(
            &spec.module,
            spec.ports.len(),
            &self.spec.params,
            self.limits.task_timeout_ms,
        );
        let now = self.now;
        if let Some(t) = self.tasks.get_mut(&r.task_id)
            && let TaskState::Leased { deadline_ms, .. } = &mut t.state
        {
            *deadline_ms = now + timeout;
        }
        // kept in the job record (written with these findings): a partial re-sent after a
        // coordinator restart is still a duplicate
        self.rec.partial_seq.insert(token, seq);
        self.dirty = true;
        if !findings.is_empty() {
            self.progress_dirty = true;
            self.store_findings(
                &spec,
                findings,
                minion,
                provider,
                r.started_at_ms,
                r.finished_at_ms,
            );
        }
        ack_seq(token, true, "", seq)
    }

    fn fail_attempt(
        &mut self,
        task: TaskId,
        minion: &str,
        provider: &str,
        error: &str,
        permanent: bool,
    ) {
        let Some(t) = self.tasks.get_mut(&task) else {
            return;
        };
        t.attempts += 1;
        t.last_error = Some(error.to_string());
        t.last_minion = Some(minion.to_string());
        t.last_provider = Some(provider.to_string());
        self.rec.count_error(error);
        self.dirty = true;
        self.progress_dirty = true;
        match sched::on_failure(t.attempts, self.limits.max_attempts, permanent) {
            Retry::Requeue => {
                t.state = TaskState::Pending;
                self.out.writes.push(Op::Task(t.clone()));
                self.push_back(task);
            }
            Retry::Fail => {
                warn!(
                    job_id = self.rec.id,
                    task_id = task,
                    attempts = t.attempts,
                    error,
                    "task failed"
                );
                self.fail_task(task, error.to_string());
            }
        }
    }

    /// Ends a task as failed for good (its last state is written; it leaves the live tasks).
    fn fail_task(&mut self, task: TaskId, reason: String) {
        let Some(mut t) = self.tasks.remove(&task) else {
            return;
        };
        // a verification run that failed re-checked nothing
        self.rec.checks.remove(&task);
        self.verify_skips.remove(&task);
        telemetry::record(
            telemetry::Event::TaskFailed {
                module: &t.spec.module,
            },
            1,
        );
        t.state = TaskState::Failed { reason };
        self.out.writes.push(Op::Task(t));
        self.rec.failed += 1;
        self.dirty = true;
    }

    /// Runs a task the coordinator does itself (`crate::lookup`) and completes or fails it.
    fn run_here(&mut self, id: TaskId) {
        let Some(spec) = self.tasks.get(&id).map(|t| t.spec.clone()) else {
            return;
        };
        let run = match &self.local {
            Some(l) => l(&spec),
            None => LocalRun {
                result: Err("this coordinator has no leak database".into()),
                started_ms: self.now,
                finished_ms: self.now,
            },
        };
        match run.result {
            Ok(findings) => {
                let me = crate::lookup::LOOKUP_MINION_ID;
                let provider = crate::lookup::LOOKUP_PROVIDER;
                self.complete_task(id, findings, me, provider, run.started_ms, run.finished_ms)
            }
            Err(e) => {
                warn!(job = self.rec.id, task = id, error = %e, "leak lookup failed");
                let e = format!("{}{e}", overlord_core::task_error::COORDINATOR_PREFIX);
                self.rec.count_error(&e);
                if let Some(t) = self.tasks.get_mut(&id) {
                    t.attempts += 1;
                    t.last_error = Some(e.clone());
                    t.last_minion = Some(crate::lookup::LOOKUP_MINION_ID.into());
                }
                self.fail_task(id, e);
            }
        }
    }

    fn complete_task(
        &mut self,
        task: TaskId,
        findings: Vec<ParsedFinding>,
        minion: &str,
        provider: &str,
        started: u64,
        finished: u64,
    ) {
        let Some(t) = self.tasks.remove(&task) else {
            return;
        };
        let job = self.rec.id;
        let first_open: Vec<_> = findings.iter().filter_map(open_port_of).collect();
        telemetry::record(
            telemetry::Event::TaskDone {
                module: &t.spec.module,
            },
            1,
        );
        self.rec.done += 1;
        self.dirty = true;
        self.progress_dirty = true;
        self.store_findings(&t.spec, findings, minion, provider, started, finished);
        self.maybe_verify(&t, &first_open, minion, provider);
        // Only the end of a finished task is read again (at recovery); its findings carry the
        // provenance (minion, provider, times).
        self.out.writes.push(Op::TaskDone(job, task));
    }

    /// Stores the findings of task `t` (a final or a partial result) and spawns their follow-ups.
    fn store_findings(
        &mut self,
        t: &TaskSpec,
        findings: Vec<ParsedFinding>,
        minion: &str,
        provider: &str,
        started: u64,
        finished: u64,
    ) {
        let job = self.rec.id;
        let task = t.task_id;
        let now = self.now;
        let mut spawned = Vec::new();
        // tasks the coordinator runs itself (the leak lookup): done at once, never leased
        let mut local = Vec::new();
        for f in findings {
            // A finding without a blob of a task given one (an enrichment of a screenshot) is
            // about that blob: the PNG is not sent back, only referred to.
            let blob_sha = f
                .blob
                .map(|(sha, b)| {
                    self.out.writes.push(Op::Blob(sha.clone(), b));
                    sha
                })
                .or_else(|| t.blob_sha256.clone());
            self.rec.findings += 1;
            match &f.parsed.payload {
                Payload::Unknown(_) => self.rec.findings_unknown_kind += 1,
                _ if !f.parsed.unknown_fields.is_empty() => self.rec.findings_unknown_fields += 1,
                _ => {}
            }
            let rec = FindingRecord {
                cursor: self.rec.findings,
                job_id: job,
                task_id: task,
                parent_task_id: t.parent,
                module: t.module.clone(),
                kind: f.kind,
                target: f.target,
                port: f.port,
                data: f.data,
                blob_sha256: blob_sha,
                minion_id: minion.to_string(),
                provider: provider.to_string(),
                started_at_ms: started,
                finished_at_ms: finished,
                stored_at_ms: now,
            };
            let view = FindingView {
                payload: &f.parsed.payload,
                target: rec.target,
                port: rec.port,
                blob_sha256: rec.blob_sha256.as_deref(),
            };
            let depth = self.followups.depth_of(task) + 1;
            for fu in follow_ups(&self.spec.rules, &self.spec.modules, &view) {
                // Re-checked against the job's scope, deduplicated, capped in depth and number.
                if fu.module == "leak"
                    && !overlord_core::trust::leak_lookup_allowed(t, rec.blob_sha256.as_deref())
                {
                    continue;
                }
                let in_scope = fu
                    .target
                    .is_none_or(|ip| self.spec.ranges.iter().any(|r| r.contains_ip(ip)));
                if self
                    .followups
                    .admit(
                        &fu.module,
                        fu.target,
                        &fu.ports,
                        fu.blob_sha256.as_deref(),
                        depth,
                        in_scope,
                    )
                    .is_err()
                {
                    continue;
                }
                let id = self.rec.next_task_id;
                self.followups.set_depth(id, depth);
                self.rec.next_task_id += 1;
                self.rec.tasks_created += 1;
                let spec = TaskSpec {
                    job_id: job,
                    task_id: id,
                    parent: Some(task),
                    module: fu.module.to_string(),
                    target: fu.target,
                    target_count: 1,
                    ports: fu.ports,
                    input: None,
                    params: fu.params,
                    blob_sha256: fu.blob_sha256,
                    ranges: Vec::new(),
                };
                let tr = TaskRecord::new(spec);
                self.out.writes.push(Op::Task(tr.clone()));
                self.tasks.insert(id, tr);
                if crate::lookup::runs_here(&fu.module) {
                    local.push(id);
                } else {
                    spawned.push(id);
                }
            }
            let rec = Arc::new(rec);
            self.out.writes.push(Op::Finding(rec.clone()));
            self.out.events.push(HubEvent::Finding(rec));
        }
        for id in spawned {
            self.push_back(id);
        }
        for id in local {
            self.run_here(id);
        }
    }

    // ---------- the quality ledger's verification runs ----------

    /// A finished root scan task, sampled by `quality::should_verify`, is run again by another
    /// minion (another provider when there is one: placement avoids the task's last minion and
    /// provider); what it re-checks is kept in the job record until it ends.
    fn maybe_verify(
        &mut self,
        t: &TaskRecord,
        first_open: &[(std::net::IpAddr, u16)],
        minion: &str,
        provider: &str,
    ) {
        let Ok(per_mille) =
            overlord_core::job::verify_per_mille_of(&self.spec, self.rec.root_total)
        else {
            return;
        };
        if self.finishing
            || !overlord_core::quality::should_verify(
                overlord_core::modules::is_port_scan(&t.spec.module),
                t.spec.parent.is_none(),
                self.alive,
                first_open.len(),
                self.rec.perm_key,
                t.spec.task_id,
                per_mille,
            )
        {
            return;
        }
        let id = self.rec.next_task_id;
        self.rec.next_task_id += 1;
        self.rec.tasks_created += 1;
        let net = t
            .spec
            .target
            .map(overlord_core::quality::net_of)
            .unwrap_or_default();
        self.rec.checks.insert(
            id,
            overlord_core::quality::Check {
                of: t.spec.task_id,
                minion: minion.to_string(),
                provider: provider.to_string(),
                net,
                probes: u64::from(t.spec.target_count) * t.spec.ports.len() as u64,
                first_open: first_open.to_vec(),
            },
        );
        let mut tr = TaskRecord::new(TaskSpec {
            task_id: id,
            parent: Some(t.spec.task_id),
            ..t.spec.clone()
        });
        tr.last_minion = Some(minion.to_string());
        tr.last_provider = Some(provider.to_string());
        self.out.writes.push(Op::Task(tr.clone()));
        self.tasks.insert(id, tr);
        self.push_back(id);
        self.dirty = true;
    }

    /// The result of a verification run: the ledger learns the first run's misses, and only the
    /// address:ports the first run missed are kept as findings (the rest are stored already).
    /// Any other task's findings pass through.
    fn judge_verification(
        &mut self,
        task: TaskId,
        minion: &str,
        findings: Vec<ParsedFinding>,
    ) -> Vec<ParsedFinding> {
        let Some(check) = self.rec.checks.remove(&task) else {
            return findings;
        };
        self.verify_skips.remove(&task);
        self.dirty = true;
        let found: Vec<_> = findings.iter().filter_map(open_port_of).collect();
        let Some((sampled, missed, new)) =
            overlord_core::quality::judge_check(&check, minion, &found)
        else {
            // re-run on the first run's own minion: it checks nothing, and stores nothing new
            return Vec::new();
        };
        self.rec
            .quality
            .record_check(&check.minion, &check.provider, &check.net, sampled, missed);
        self.flagged = flagged_of(&self.rec.quality);
        if missed > 0 {
            info!(
                job_id = self.rec.id,
                task_id = check.of,
                first_minion = %check.minion,
                verifier = minion,
                missed,
                sampled,
                "verification found ports the first run missed"
            );
        }
        findings
            .into_iter()
            .filter(|f| open_port_of(f).is_some_and(|k| new.contains(&k)))
            .collect()
    }
}

/// Holds reported findings against the task they answer (`trust::check_result`).
fn check_findings(
    spec: &TaskSpec,
    findings: &[ParsedFinding],
) -> Result<(), overlord_core::trust::Violation> {
    let seen: Vec<overlord_core::trust::Reported<'_>> = findings
        .iter()
        .map(|f| overlord_core::trust::Reported {
            kind: &f.kind,
            target: f.target,
            port: f.port,
            data_bytes: f.data_bytes,
        })
        .collect();
    overlord_core::trust::check_result(spec, &seen)
}

/// A blob written by one of `writes` (not yet applied to the store).
fn pending_blob(writes: &[Op], sha: &str) -> Option<Vec<u8>> {
    writes.iter().rev().find_map(|op| match op {
        Op::Blob(s, bytes) if s == sha => Some(bytes.clone()),
        _ => None,
    })
}

/// The address:port of an open-port finding.
fn open_port_of(f: &ParsedFinding) -> Option<(std::net::IpAddr, u16)> {
    match &f.parsed.payload {
        Payload::OpenPort(p) if p.state == overlord_core::finding::PortState::Open => {
            Some((f.target?, f.port?))
        }
        _ => None,
    }
}

/// Minions whose miss rate is out of line (`quality::judge`) → the share of work they keep.
fn flagged_of(l: &overlord_core::quality::Ledger) -> HashMap<String, f64> {
    overlord_core::quality::judge(l)
        .into_iter()
        .map(|f| (f.minion, f.share))
        .collect()
}

fn ack(token: Token, accepted: bool, reason: &str) -> v1::AckItem {
    ack_seq(token, accepted, reason, 0)
}

fn ack_seq(token: Token, accepted: bool, reason: &str, seq: u64) -> v1::AckItem {
    v1::AckItem {
        token,
        accepted,
        reason: reason.to_string(),
        seq,
    }
}
