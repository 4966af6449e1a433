//! One actor per running job: owns the job's tasks (lazy expansion of root tasks, the pending
//! queue, leases with fencing tokens and deadlines), takes slot offers from the registry, ingests
//! the job's results (verdicts, findings, follow-up rules, retries), and completes or cancels the
//! job. Every change goes through its [`Committer`]: acknowledgements, replies and published
//! events wait for the flush that covers them.
//!
//! A job actor that fails is restarted by the job manager and rebuilds itself from storage; it
//! then gives back every lease it held (`Adopt` without `keep`): those tasks run again under new
//! tokens, and a late result under an old token is rejected, so nothing is stored twice.

use crate::commit::{Committer, FlushMsg};
use crate::engine::{
    Counters, EngineConfig, IngestedResult, ParsedFinding, SessionTx, pending_blob, status_of,
};
use crate::hub::{Durable, FanMsg, HubEvent};
use crate::msg::{Demand, JobInit, JobMsg, MgrMsg, RegMsg, SlotOffer};
use crate::slot::{JobDir, Slot, TokenSource};
use crate::telemetry;
use overlord_core::finding::Payload;
use overlord_core::followup::{FindingView, follow_ups};
use overlord_core::job::{
    FindingRecord, JobRecord, JobSpec, JobState, RootPlan, TaskRecord, TaskSpec, TaskState,
    lease_params, root_index, root_plan, root_task,
};
use overlord_core::perm::Permutation;
use overlord_core::sched::{self, Retry, Verdict};
use overlord_core::{JobId, TaskId, Token, now_ms};
use overlord_proto::error::ApiError;
use overlord_proto::v1::{self, coordinator_message::Msg as CMsg};
use overlord_storage::{Op, Store, StoreError, StoredTask};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

pub const TICK: Duration = Duration::from_millis(100);
/// Progress events per job at most every this many ms.
const PROGRESS_EVERY_MS: u64 = 250;
/// Re-announce demand at least this often while tasks are pending (covers lost messages).
const DEMAND_REFRESH_MS: u64 = 500;
/// Pending tasks an offer may skip over (no offered minion runs their module) before it stops.
const MAX_SKIP: usize = 1024;

/// What a job actor uses.
#[derive(Clone)]
pub struct JobCtx {
    pub store: Arc<dyn Store>,
    pub cfg: EngineConfig,
    pub counters: Arc<Counters>,
    pub flusher: Slot<FlushMsg>,
    pub fanout: Slot<FanMsg>,
    pub registry: Slot<RegMsg>,
    pub manager: Slot<MgrMsg>,
    pub durable: Durable,
    /// The actor enters itself here (and leaves on stop) so results and offers reach it.
    pub jobs: JobDir<JobMsg>,
    pub tokens: TokenSource,
    /// The leak lookup the coordinator runs itself (`crate::lookup`); None: `leak` tasks fail.
    pub lookup: Option<crate::lookup::LeakLookup>,
}

pub struct JobActor;

pub struct JobSt {
    sh: JobCtx,
    c: Committer,
    rec: JobRecord,
    spec: Arc<JobSpec>,
    plan: RootPlan,
    perm: Permutation,
    pending: VecDeque<TaskId>,
    pending_by_module: HashMap<String, u64>,
    /// Non-terminal tasks (pending or leased).
    tasks: HashMap<TaskId, TaskRecord>,
    leases: HashMap<Token, TaskId>,
    dirty: bool,
    progress_dirty: bool,
    last_progress_ms: u64,
    /// Events to publish once this message's writes are durable.
    publish: Vec<HubEvent>,
    /// Completed or cancelled in memory; `final_durable` once the flush covering it returned.
    finishing: bool,
    final_durable: bool,
    notify_manager: bool,
    /// Minions alive (from the last offer) and the largest offer seen: rate limit, expansion.
    alive: u32,
    /// Minions of this job whose miss rate is out of line → the share of their slots it uses
    /// (`quality::judge`, recomputed when a verification ends).
    flagged: HashMap<String, f64>,
    /// Offers a verification run let pass waiting for another minion (in memory only).
    verify_skips: HashMap<TaskId, u32>,
    capacity_hint: usize,
    last_demand: Option<Demand>,
    last_demand_ms: u64,
    /// Follow-up admission (scope, dedup, depth, per-job cap); in memory only.
    followups: overlord_core::trust::FollowupGuard,
}

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = JobSt;
    type Arguments = (JobCtx, JobInit);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (sh, init): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let c = Committer::new(sh.store.clone(), sh.counters.clone());
        let (mut st, adopt) = match init {
            JobInit::New { rec, spec, plan } => {
                let perm = Permutation::new(plan.total, rec.perm_key);
                (JobSt::new(sh, c, rec, spec, plan, perm), None)
            }
            JobInit::Recover { id, keep_leases } => {
                let mut st = JobSt::recover(sh, c, id)?;
                let leased = st.leased();
                for t in st.tasks.values() {
                    if let TaskState::Leased { token, .. } = &t.state {
                        st.leases.insert(*token, t.spec.task_id);
                    }
                }
                (st, Some((leased, keep_leases)))
            }
        };
        st.sh.jobs.insert(st.rec.id, myself.clone());
        if let Some((leases, keep)) = adopt
            && let Some(r) = st.sh.registry.get()
        {
            let _ = r.cast(RegMsg::Adopt {
                job: st.rec.id,
                leases,
                keep,
            });
        }
        st.expand();
        st.check_complete();
        myself.send_interval(TICK, || JobMsg::Tick);
        st.end_turn(&myself)?;
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JobMsg::Offer {
                offer,
                slots,
                alive,
            } => st.offer(offer, slots, alive)?,
            JobMsg::Results {
                minion,
                provider,
                generation,
                items,
                tx,
            } => st.results(&minion, &provider, generation, items, tx),
            JobMsg::Requeue(tokens, reason, count) => {
                for tok in tokens {
                    st.forget_partials(tok);
                    if let Some(task) = st.leases.remove(&tok) {
                        st.requeue(task, &reason, count);
                    }
                }
                st.check_complete();
            }
            JobMsg::Stale(n) => {
                st.rec.stale_rejected += n;
                st.dirty = true;
            }
            JobMsg::Status(reply) => {
                let _ = reply.send(Ok(st.status()));
            }
            JobMsg::Cancel(reply) => st.cancel(reply),
            JobMsg::Readopt => {
                let leases = st.leased();
                if let Some(r) = st.sh.registry.get() {
                    let _ = r.cast(RegMsg::Adopt {
                        job: st.rec.id,
                        leases,
                        keep: true,
                    });
                }
                st.last_demand = None;
            }
            JobMsg::Flushed(seq) => {
                st.c.flushed(seq);
                if st.finishing && !st.c.has_unreleased() {
                    st.final_durable = true;
                }
            }
            JobMsg::Tick => st.tick(),
            JobMsg::Stop => {
                myself.stop(None);
                return Ok(());
            }
            JobMsg::InjectPanic => panic!("injected panic in job {} (supervision test)", st.rec.id),
        }
        st.end_turn(&myself)?;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.sh.jobs.remove_if(st.rec.id, myself.get_id());
        Ok(())
    }
}

impl JobSt {
    fn new(
        sh: JobCtx,
        c: Committer,
        rec: JobRecord,
        spec: Arc<JobSpec>,
        plan: RootPlan,
        perm: Permutation,
    ) -> Self {
        JobSt {
            sh,
            c,
            rec,
            spec,
            plan,
            perm,
            pending: VecDeque::new(),
            pending_by_module: HashMap::new(),
            tasks: HashMap::new(),
            leases: HashMap::new(),
            dirty: true,
            progress_dirty: true,
            last_progress_ms: 0,
            publish: Vec::new(),
            finishing: false,
            final_durable: false,
            notify_manager: false,
            alive: 1,
            flagged: HashMap::new(),
            verify_skips: HashMap::new(),
            capacity_hint: 0,
            last_demand: None,
            last_demand_ms: 0,
            followups: Default::default(),
        }
    }

    /// Rebuilds a running job from storage.
    fn recover(sh: JobCtx, c: Committer, id: JobId) -> Result<Self, StoreError> {
        let store = sh.store.clone();
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
        let perm = Permutation::new(plan.total, rec.perm_key);
        let now = now_ms();
        let task_timeout = sh.cfg.task_timeout_ms;
        let mut st = JobSt::new(sh, c, rec, Arc::new(spec), plan, perm);
        st.dirty = false;
        // Root tasks below the expansion cursor with no record were created but never leased
        // (creation is not persisted): they are pending again.
        let mut stored_roots = HashSet::new();
        for stored in store.tasks(id)? {
            if let Some(index) = root_index(stored.task_id(), st.rec.root_total)
                && index < st.rec.root_next
            {
                stored_roots.insert(index);
            }
            let StoredTask::Record(mut t) = stored else {
                continue; // finished
            };
            match &mut t.state {
                TaskState::Pending => {
                    let tid = t.spec.task_id;
                    st.tasks.insert(tid, t);
                    st.push_back(tid);
                }
                TaskState::Leased { deadline_ms, .. } => {
                    // The minion may still hold it: a fresh lease timeout of its module (as
                    // when leased, not the global maximum: a silent holder loses it in seconds
                    // after a coordinator restart too).
                    *deadline_ms = now
                        + overlord_core::trust::lease_timeout_ms(
                            &t.spec.module,
                            t.spec.ports.len(),
                            &st.spec.params,
                            task_timeout,
                        );
                    st.tasks.insert(t.spec.task_id, t);
                }
                _ => {}
            }
        }
        for index in 0..st.rec.root_next {
            if !stored_roots.contains(&index) {
                let t = root_task(id, &st.spec, &st.plan, &st.perm, index);
                let tid = t.task_id;
                st.tasks.insert(tid, TaskRecord::new(t));
                st.push_back(tid);
            }
        }
        st.flagged = flagged_of(&st.rec.quality);
        info!(
            job_id = id,
            tasks = st.tasks.len(),
            pending = st.pending.len(),
            "job actor recovered"
        );
        Ok(st)
    }

    /// Leases held: (token, minion, generation).
    fn leased(&self) -> Vec<(Token, String, u64)> {
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

    fn leased_count(&self) -> u64 {
        (self.tasks.len() - self.pending.len()) as u64
    }

    fn demand(&self) -> Demand {
        let mut by_module: Vec<(String, u64)> = self
            .pending_by_module
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(m, n)| (m.clone(), *n))
            .collect();
        by_module.sort();
        let max_new = if self.finishing {
            0
        } else if self.spec.rate_limit > 0 {
            // A rate-limited job: as many as its limit's unused part allows (`sched::rate_plan`).
            self.rate_plan().max_new
        } else {
            u64::MAX
        };
        Demand { by_module, max_new }
    }

    fn status(&self) -> v1::JobStatus {
        let live = (!self.finishing || !self.final_durable)
            .then(|| (self.pending.len() as u64, self.leased_count()));
        let mut st = status_of(&self.rec, &self.spec, live);
        if self.finishing && !self.final_durable {
            // Not durable yet: nobody may see it finished before its results are readable.
            st.state = v1::JobState::Running as i32;
        }
        st
    }

    // ---------- turn end: durability, events, demand ----------

    /// Puts the job record in the write batch if it changed.
    fn write_record(&mut self) {
        if self.dirty {
            self.dirty = false;
            self.c.batch.push(Op::Job(self.rec.clone()));
        }
    }

    fn end_turn(&mut self, myself: &ActorRef<JobMsg>) -> Result<(), ActorProcessingErr> {
        self.write_record();
        if !self.publish.is_empty() || self.notify_manager {
            let events = std::mem::take(&mut self.publish);
            let durable = self.sh.durable.clone();
            let fanout = self.sh.fanout.clone();
            let id = self.rec.id;
            let last_cursor = events
                .iter()
                .filter_map(|e| match e {
                    HubEvent::Finding(f) => Some(f.cursor),
                    _ => None,
                })
                .max();
            let finished = self.notify_manager.then(|| {
                self.notify_manager = false;
                (
                    self.sh.manager.clone(),
                    self.rec.clone(),
                    self.spec.clone(),
                    self.sh.registry.clone(),
                )
            });
            self.c.defer(move || {
                if let Some(c) = last_cursor {
                    durable.set(id, c);
                }
                if !events.is_empty()
                    && let Some(f) = fanout.get()
                {
                    let _ = f.cast(FanMsg::Publish(events));
                }
                if let Some((mgr, rec, spec, reg)) = finished {
                    if let Some(r) = reg.get() {
                        let _ = r.cast(RegMsg::JobGone(id));
                    }
                    if let Some(m) = mgr.get() {
                        let _ = m.cast(MgrMsg::Finished(id, rec, spec));
                    }
                }
            });
        }
        self.c.end_turn(&self.sh.flusher, myself, JobMsg::Flushed)?;
        if !self.finishing {
            let d = self.demand();
            let now = now_ms();
            let changed = self.last_demand.as_ref() != Some(&d);
            let refresh =
                d.total() > 0 && now.saturating_sub(self.last_demand_ms) >= DEMAND_REFRESH_MS;
            if (changed || refresh)
                && let Some(r) = self.sh.registry.get()
            {
                let _ = r.cast(RegMsg::Demand(self.rec.id, d.clone()));
                self.last_demand = Some(d);
                self.last_demand_ms = now;
            }
        }
        Ok(())
    }

    // ---------- expansion and completion ----------

    /// Expands root tasks up to the watermark (lazy: a /8 never materialises at once).
    fn expand(&mut self) {
        if self.finishing {
            return;
        }
        let watermark = self.sh.cfg.expand_watermark.max(self.capacity_hint * 2);
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
        self.rec.finished_ms = now_ms();
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
        self.publish.push(HubEvent::Finished(self.rec.id, st));
        self.notify_manager = true;
    }

    fn cancel(&mut self, reply: RpcReplyPort<Result<v1::JobStatus, ApiError>>) {
        if self.finishing {
            let _ = reply.send(Ok(self.status()));
            return;
        }
        let mut revoke = Vec::new();
        for (_, mut t) in self.tasks.drain() {
            if let TaskState::Leased { token, .. } = &t.state {
                revoke.push(*token);
            }
            t.state = TaskState::Cancelled;
            self.rec.cancelled += 1;
            self.c.batch.push(Op::Task(t));
        }
        self.pending.clear();
        self.pending_by_module.clear();
        self.leases.clear();
        self.rec.partial_seq.clear();
        if let Some(r) = self.sh.registry.get() {
            let _ = r.cast(RegMsg::Release(self.rec.id, revoke));
        }
        self.rec.checks.clear();
        self.verify_skips.clear();
        self.rec.state = JobState::Cancelled;
        self.rec.finished_ms = now_ms();
        self.dirty = true;
        info!(job_id = self.rec.id, "job cancelled");
        self.finish();
        let st = status_of(&self.rec, &self.spec, None);
        self.c.defer(move || {
            let _ = reply.send(Ok(st));
        });
    }

    // ---------- leases ----------

    fn offer(&mut self, offer: u64, slots: Vec<SlotOffer>, alive: u32) -> Result<(), StoreError> {
        self.alive = alive.max(1);
        let offered: usize = slots.iter().map(|s| s.free as usize).sum();
        self.capacity_hint = self
            .capacity_hint
            .max(offered + self.leased_count() as usize);
        let now = now_ms();
        let max_new = self.demand().max_new;
        // A rate-limited job's leases together stay within its limit (`sched::rate_plan`): each
        // new lease gets the share planned now and keeps it until it ends.
        let rate_share = self.rate_plan().share;
        let mut views: Vec<sched::MinionView<'_>> = slots
            .iter()
            .map(|s| sched::MinionView {
                id: &s.minion,
                provider: &s.provider,
                modules: &s.modules,
                free: overlord_core::quality::cut_free(
                    s.free,
                    self.flagged.get(&s.minion).copied(),
                ),
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
            let token = self.sh.tokens.next();
            // A lease lasts as long as its module is expected to take (x4), not the global max:
            // a minion that heartbeats but never answers loses it in seconds.
            let deadline = now
                + overlord_core::trust::lease_timeout_ms(
                    &t.spec.module,
                    t.spec.ports.len(),
                    &self.spec.params,
                    self.sh.cfg.task_timeout_ms,
                );
            let t = self.tasks.get_mut(&task_id).expect("pending task");
            t.state = TaskState::Leased {
                minion: slots[i].minion.clone(),
                generation: slots[i].generation,
                token,
                deadline_ms: deadline,
                rate: rate_share,
            };
            self.c.batch.push(Op::Task(t.clone()));
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
            // The blob may have arrived in a result of this very turn (not yet applied to the
            // store): look there first, then in the store.
            let blob = t
                .spec
                .blob_sha256
                .as_ref()
                .and_then(|sha| {
                    pending_blob(&self.c.batch, sha)
                        .or_else(|| self.c.store().blob(sha).ok().flatten())
                })
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
            Counters::add(&self.sh.counters.leases_granted, granted);
        }
        self.expand();
        // Leased state is applied before the registry learns the tokens, and the registry
        // learns them before the minions get them (so it knows a token before its result).
        self.write_record();
        self.c.commit()?;
        let demand = self.demand();
        let used = slots
            .iter()
            .zip(tokens)
            .filter(|(_, t)| !t.is_empty())
            .map(|(s, t)| (s.minion.clone(), s.generation, t))
            .collect();
        if let Some(r) = self.sh.registry.get() {
            let _ = r.cast(RegMsg::Taken {
                job: self.rec.id,
                offer,
                used,
                demand: demand.clone(),
            });
        }
        self.last_demand = Some(demand);
        self.last_demand_ms = now;
        for (s, leases) in slots.iter().zip(out) {
            if !leases.is_empty() {
                let _ = s.tx.send(Ok(v1::CoordinatorMessage {
                    msg: Some(CMsg::Leases(v1::LeaseBatch { leases })),
                }));
            }
        }
        Ok(())
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
        if sched::on_failure(t.attempts, self.sh.cfg.max_attempts, false) == Retry::Fail {
            let reason = format!("{reason} (after {} attempts)", t.attempts);
            self.fail_task(task, reason);
        } else {
            t.state = TaskState::Pending;
            self.c.batch.push(Op::Task(t.clone()));
            self.push_front(task);
        }
    }

    fn tick(&mut self) {
        if self.finishing {
            return;
        }
        let now = now_ms();
        let expired: Vec<(Token, TaskId)> = self
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
            if let Some(r) = self.sh.registry.get() {
                let _ = r.cast(RegMsg::Expired(
                    self.rec.id,
                    expired.iter().map(|(t, _)| *t).collect(),
                ));
            }
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
            self.publish
                .push(HubEvent::Progress(self.rec.id, self.status()));
        }
    }

    // ---------- results ----------

    fn results(
        &mut self,
        minion: &str,
        provider: &str,
        generation: u64,
        items: Vec<IngestedResult>,
        tx: SessionTx,
    ) {
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
                    Counters::add(&self.sh.counters.results_rejected, 1);
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
                        && let Some(Err(v)) = self.tasks.get(&r.task_id).map(|t| {
                            let seen: Vec<overlord_core::trust::Reported<'_>> = findings
                                .iter()
                                .map(|f| overlord_core::trust::Reported {
                                    kind: &f.kind,
                                    target: f.target,
                                    port: f.port,
                                    data_bytes: f.data_bytes,
                                })
                                .collect();
                            overlord_core::trust::check_result(&t.spec, &seen)
                        }) =>
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
                    Counters::add(&self.sh.counters.results_accepted, 1);
                    telemetry::record(telemetry::Event::ResultAccepted, 1);
                    acks.push(ack(token, true, ""));
                }
                Ok(_) => {
                    Counters::add(&self.sh.counters.results_accepted, 1);
                    telemetry::record(telemetry::Event::ResultAccepted, 1);
                    acks.push(ack(token, true, ""));
                    self.fail_attempt(r.task_id, minion, provider, &r.error, r.permanent);
                }
            }
        }
        self.c.defer(move || {
            let _ = tx.send(Ok(v1::CoordinatorMessage {
                msg: Some(CMsg::Ack(v1::ResultAck { items: acks })),
            }));
        });
        self.expand();
        self.check_complete();
        if let Some(e) = malformed
            && let Some(r) = self.sh.registry.get()
        {
            let _ = r.cast(RegMsg::Kick(
                minion.to_string(),
                generation,
                format!("malformed result: {e}"),
            ));
        }
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
                Counters::add(&self.sh.counters.results_rejected, 1);
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
        let reject = |st: &mut Self, reason: String, count: bool| {
            st.leases.remove(&token);
            st.forget_partials(token);
            if let Some(reg) = st.sh.registry.get() {
                let _ = reg.cast(RegMsg::Release(st.rec.id, vec![token]));
            }
            st.requeue(r.task_id, &reason, count);
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
        let seen: Vec<overlord_core::trust::Reported<'_>> = findings
            .iter()
            .map(|f| overlord_core::trust::Reported {
                kind: &f.kind,
                target: f.target,
                port: f.port,
                data_bytes: f.data_bytes,
            })
            .collect();
        if let Err(v) = overlord_core::trust::check_result(&t.spec, &seen) {
            warn!(job_id = self.rec.id, task_id = r.task_id, minion, violation = %v, "partial result rejected");
            let reason = format!("{}{v}", overlord_core::trust::REJECTED_PREFIX);
            *malformed = Some(reason.clone());
            return reject(self, reason, false);
        }
        let spec = t.spec.clone();
        let now = now_ms();
        let timeout = overlord_core::trust::lease_timeout_ms(
            &spec.module,
            spec.ports.len(),
            &self.spec.params,
            self.sh.cfg.task_timeout_ms,
        );
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
        match sched::on_failure(t.attempts, self.sh.cfg.max_attempts, permanent) {
            Retry::Requeue => {
                t.state = TaskState::Pending;
                self.c.batch.push(Op::Task(t.clone()));
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
        self.c.batch.push(Op::Task(t));
        self.rec.failed += 1;
    }

    /// Runs a task the coordinator does itself (`crate::lookup`) and completes or fails it.
    fn run_here(&mut self, id: TaskId) {
        let Some(spec) = self.tasks.get(&id).map(|t| t.spec.clone()) else {
            return;
        };
        let started = now_ms();
        let res = match &self.sh.lookup {
            Some(l) => l.run(&spec),
            None => Err("this coordinator has no leak database".into()),
        };
        match res {
            Ok(findings) => {
                let me = crate::lookup::LOOKUP_MINION_ID;
                let provider = crate::lookup::LOOKUP_PROVIDER;
                self.complete_task(id, findings, me, provider, started, now_ms())
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
        self.c.batch.push(Op::TaskDone(job, task));
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
        let now = now_ms();
        let mut spawned = Vec::new();
        // tasks the coordinator runs itself (the leak lookup): done at once, never leased
        let mut local = Vec::new();
        for f in findings {
            // A finding without a blob of a task given one (an enrichment of a screenshot) is
            // about that blob: the PNG is not sent back, only referred to.
            let blob_sha = f
                .blob
                .map(|(sha, b)| {
                    self.c.batch.push(Op::Blob(sha.clone(), b));
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
                self.c.batch.push(Op::Task(tr.clone()));
                self.tasks.insert(id, tr);
                if crate::lookup::runs_here(&fu.module) {
                    local.push(id);
                } else {
                    spawned.push(id);
                }
            }
            let rec = Arc::new(rec);
            self.c.batch.push(Op::Finding(rec.clone()));
            self.publish.push(HubEvent::Finding(rec));
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
        self.c.batch.push(Op::Task(tr.clone()));
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
