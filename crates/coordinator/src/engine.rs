//! The job manager's state machine: jobs, tasks, leases, minions. Called by the `Engine` actor, one
//! message at a time; decisions come from `overlord_core` (placement, verdicts, retries, health,
//! follow-ups). Every change is put in a write batch; outputs that acknowledge something (submit
//! replies, result acks, published findings) wait in the outbox until the flush covering their
//! writes is done.

use crate::hub::{Durable, HubEvent};
use overlord_core::followup::{FindingView, follow_ups};
use overlord_core::job::{
    FindingRecord, JobRecord, JobSpec, JobState, RootPlan, TaskRecord, TaskSpec, TaskState,
    lease_params, root_plan, root_task,
};
use overlord_core::perm::Permutation;
use overlord_core::sched::{self, Health, Retry, Verdict};
use overlord_core::{JobId, TaskId, Token, now_ms};
use overlord_proto::error::ApiError;
use overlord_proto::v1::{self, coordinator_message::Msg as CMsg};
use overlord_storage::{Batch, MinionRecord, Op, Store, StoreError};
use ractor::RpcReplyPort;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

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

struct JobRt {
    rec: JobRecord,
    spec: Arc<JobSpec>,
    plan: RootPlan,
    perm: Permutation,
    pending: VecDeque<TaskId>,
    /// Non-terminal tasks (pending or leased).
    tasks: HashMap<TaskId, TaskRecord>,
    dirty: bool,
    progress_dirty: bool,
    last_progress_ms: u64,
}

struct MinionRt {
    rec: MinionRecord,
    modules: Vec<String>,
    capacity: u32,
    leases: HashSet<Token>,
    last_seen_ms: u64,
    tx: Option<SessionTx>,
    session_id: u64,
    dead: bool,
}

/// Outputs released once the writes before them are durable.
pub enum Deferred {
    Submit(RpcReplyPort<Result<v1::JobStatus, ApiError>>, v1::JobStatus),
    Cancel(RpcReplyPort<Result<v1::JobStatus, ApiError>>, v1::JobStatus),
    Ack(SessionTx, Vec<v1::AckItem>),
    Publish(HubEvent),
}

#[derive(Default, Debug, Clone)]
pub struct Stats {
    pub results_accepted: u64,
    pub results_rejected: u64,
    pub leases_granted: u64,
    pub requeued: u64,
    pub minions_declared_dead: u64,
    /// Time spent applying write batches to storage (µs) and number of batches.
    pub apply_us: u64,
    pub batches: u64,
    /// Time spent in result ingestion (µs) and scheduling (µs).
    pub results_us: u64,
    pub schedule_us: u64,
}

pub struct Engine {
    store: Arc<dyn Store>,
    cfg: EngineConfig,
    epoch: u64,
    token_ctr: u64,
    next_job_id: u64,
    jobs: BTreeMap<JobId, JobRt>,
    finished: BTreeMap<JobId, JobRecord>,
    leases: HashMap<Token, (JobId, TaskId)>,
    minions: HashMap<String, MinionRt>,
    batch: Batch,
    pending_out: Vec<Deferred>,
    write_epoch: u64,
    outbox: VecDeque<(u64, Deferred)>,
    rr: usize,
    hub: broadcast::Sender<HubEvent>,
    durable: Durable,
    /// Jobs finished in memory whose final writes are not yet durable: reported as running.
    finishing: HashSet<JobId>,
    /// Specs of jobs that finished while this engine ran (their spec may not be applied yet).
    finished_specs: HashMap<JobId, Arc<JobSpec>>,
    pub stats: Stats,
}

fn status_of(rec: &JobRecord, spec: &JobSpec, rt: Option<&JobRt>) -> v1::JobStatus {
    let (pending, leased) = rt
        .map(|r| {
            (
                r.pending.len() as u64,
                (r.tasks.len() - r.pending.len()) as u64,
            )
        })
        .unwrap_or((0, 0));
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
    }
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
    }
}

impl Engine {
    /// Recovers the state from storage (every running job continues).
    pub fn recover(
        store: Arc<dyn Store>,
        cfg: EngineConfig,
        hub: broadcast::Sender<HubEvent>,
        durable: Durable,
    ) -> Result<Self, StoreError> {
        let t0 = std::time::Instant::now();
        let epoch = store.meta("epoch")?.unwrap_or(0) + 1;
        let mut b = Batch::default();
        b.push(Op::Meta("epoch", epoch));
        store.apply(b)?;
        store.flush()?;
        let now = now_ms();
        let mut minions = HashMap::new();
        for rec in store.minions()? {
            minions.insert(
                rec.id.clone(),
                MinionRt {
                    rec,
                    modules: vec![],
                    capacity: 0,
                    leases: HashSet::new(),
                    last_seen_ms: now,
                    tx: None,
                    session_id: 0,
                    dead: false,
                },
            );
        }
        let mut eng = Engine {
            store: store.clone(),
            cfg,
            epoch,
            token_ctr: 0,
            next_job_id: store.meta("next_job")?.unwrap_or(1),
            jobs: BTreeMap::new(),
            finished: BTreeMap::new(),
            leases: HashMap::new(),
            minions,
            batch: Batch::default(),
            pending_out: Vec::new(),
            write_epoch: 0,
            outbox: VecDeque::new(),
            rr: 0,
            hub,
            durable,
            finishing: HashSet::new(),
            finished_specs: HashMap::new(),
            stats: Stats::default(),
        };
        let mut n_tasks = 0usize;
        for rec in store.jobs()? {
            eng.durable.set(rec.id, rec.findings);
            eng.next_job_id = eng.next_job_id.max(rec.id + 1);
            if rec.state != JobState::Running {
                eng.finished.insert(rec.id, rec);
                continue;
            }
            let spec = store.spec(rec.id)?.ok_or_else(|| StoreError::Corrupt {
                key: format!("s:{}", rec.id),
                reason: "missing job spec".into(),
            })?;
            let plan = root_plan(&spec).map_err(|e| StoreError::Corrupt {
                key: format!("s:{}", rec.id),
                reason: e.to_string(),
            })?;
            let perm = Permutation::new(plan.total, rec.perm_key);
            let mut rt = JobRt {
                rec,
                spec: Arc::new(spec),
                plan,
                perm,
                pending: VecDeque::new(),
                tasks: HashMap::new(),
                dirty: false,
                progress_dirty: true,
                last_progress_ms: 0,
            };
            for mut t in store.tasks(rt.rec.id)? {
                match &mut t.state {
                    TaskState::Pending => rt.pending.push_back(t.spec.task_id),
                    TaskState::Leased {
                        minion,
                        token,
                        deadline_ms,
                        ..
                    } => {
                        // The minion may still hold it; it gets a heartbeat timeout to come back.
                        *deadline_ms = now + eng.cfg.task_timeout_ms;
                        eng.leases.insert(*token, (rt.rec.id, t.spec.task_id));
                        if let Some(m) = eng.minions.get_mut(minion.as_str()) {
                            m.leases.insert(*token);
                        }
                    }
                    _ => continue,
                }
                n_tasks += 1;
                rt.tasks.insert(t.spec.task_id, t);
            }
            eng.jobs.insert(rt.rec.id, rt);
        }
        // Leases held by minions we have no record of cannot be reclaimed by heartbeat: requeue now.
        let orphan: Vec<Token> = eng
            .leases
            .iter()
            .filter(|(tok, _)| !eng.minions.values().any(|m| m.leases.contains(tok)))
            .map(|(t, _)| *t)
            .collect();
        for tok in orphan {
            eng.requeue(tok, "lease holder unknown after restart", false);
        }
        info!(
            epoch,
            jobs = eng.jobs.len(),
            tasks = n_tasks,
            ms = t0.elapsed().as_millis() as u64,
            "coordinator state recovered"
        );
        Ok(eng)
    }

    // ---------- jobs ----------

    pub fn submit(&mut self, spec: JobSpec, reply: RpcReplyPort<Result<v1::JobStatus, ApiError>>) {
        let plan = match root_plan(&spec) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(ApiError::Spec(e)));
                return;
            }
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let key = rand::random::<u64>();
        let rec = JobRecord::new(id, plan.total, key, now_ms());
        self.batch.push(Op::Meta("next_job", self.next_job_id));
        self.batch.push(Op::Spec(id, Box::new(spec.clone())));
        let perm = Permutation::new(plan.total, key);
        let rt = JobRt {
            rec,
            spec: Arc::new(spec),
            plan,
            perm,
            pending: VecDeque::new(),
            tasks: HashMap::new(),
            dirty: true,
            progress_dirty: true,
            last_progress_ms: 0,
        };
        info!(job_id = id, root_tasks = rt.plan.total, module = %rt.plan.module, "job submitted");
        self.durable.set(id, 0);
        self.jobs.insert(id, rt);
        self.expand(id);
        let rt = &self.jobs[&id];
        let st = status_of(&rt.rec, &rt.spec, Some(rt));
        self.pending_out.push(Deferred::Submit(reply, st));
        self.check_complete(id);
    }

    pub fn status(&self, id: JobId) -> Result<v1::JobStatus, ApiError> {
        if let Some(rt) = self.jobs.get(&id) {
            return Ok(status_of(&rt.rec, &rt.spec, Some(rt)));
        }
        let rec = self.finished.get(&id).ok_or(ApiError::JobNotFound(id))?;
        let spec = match self.finished_specs.get(&id) {
            Some(s) => s.clone(),
            None => Arc::new(
                self.store
                    .spec(id)
                    .map_err(|e| ApiError::Storage(e.to_string()))?
                    .ok_or(ApiError::JobNotFound(id))?,
            ),
        };
        let mut st = status_of(rec, &spec, None);
        if self.finishing.contains(&id) {
            // Not durable yet: nobody may see it finished before its results are readable.
            st.state = v1::JobState::Running as i32;
        }
        Ok(st)
    }

    pub fn list(&self) -> Vec<v1::JobStatus> {
        let mut ids: Vec<JobId> = self
            .jobs
            .keys()
            .chain(self.finished.keys())
            .copied()
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.into_iter()
            .filter_map(|id| self.status(id).ok())
            .collect()
    }

    pub fn cancel(&mut self, id: JobId, reply: RpcReplyPort<Result<v1::JobStatus, ApiError>>) {
        let Some(mut rt) = self.jobs.remove(&id) else {
            let r = self.status(id);
            let _ = reply.send(r);
            return;
        };
        let mut revoke: HashMap<String, Vec<Token>> = HashMap::new();
        for (_, mut t) in rt.tasks.drain() {
            if let TaskState::Leased { minion, token, .. } = &t.state {
                self.leases.remove(token);
                if let Some(m) = self.minions.get_mut(minion) {
                    m.leases.remove(token);
                }
                revoke.entry(minion.clone()).or_default().push(*token);
            }
            t.state = TaskState::Cancelled;
            rt.rec.failed += 1;
            self.batch.push(Op::Task(t));
        }
        for (m, tokens) in revoke {
            if let Some(tx) = self.minions.get(&m).and_then(|m| m.tx.as_ref()) {
                let _ = tx.send(Ok(v1::CoordinatorMessage {
                    msg: Some(CMsg::Revoke(v1::Revoke { tokens })),
                }));
            }
        }
        rt.rec.state = JobState::Cancelled;
        rt.rec.finished_ms = now_ms();
        self.batch.push(Op::Job(rt.rec.clone()));
        let st = status_of(&rt.rec, &rt.spec, None);
        info!(job_id = id, "job cancelled");
        self.finishing.insert(id);
        self.finished_specs.insert(id, rt.spec.clone());
        self.pending_out
            .push(Deferred::Publish(HubEvent::Finished(id, st.clone())));
        self.pending_out.push(Deferred::Cancel(reply, st));
        self.finished.insert(id, rt.rec);
    }

    /// Expands root tasks of `id` up to the watermark (lazy: a /8 never materialises at once).
    fn expand(&mut self, id: JobId) {
        let cap: usize = self
            .minions
            .values()
            .filter(|m| !m.dead)
            .map(|m| m.capacity as usize)
            .sum();
        let watermark = self.cfg.expand_watermark.max(cap * 2);
        let Some(rt) = self.jobs.get_mut(&id) else {
            return;
        };
        while rt.pending.len() < watermark && rt.rec.root_next < rt.rec.root_total {
            let t = root_task(id, &rt.spec, &rt.plan, &rt.perm, rt.rec.root_next);
            rt.rec.root_next += 1;
            rt.rec.tasks_created += 1;
            rt.pending.push_back(t.task_id);
            let rec = TaskRecord::new(t);
            self.batch.push(Op::Task(rec.clone()));
            rt.tasks.insert(rec.spec.task_id, rec);
            rt.dirty = true;
        }
    }

    fn check_complete(&mut self, id: JobId) {
        let complete = self
            .jobs
            .get(&id)
            .map(|rt| rt.rec.is_complete())
            .unwrap_or(false);
        if !complete {
            return;
        }
        let mut rt = self.jobs.remove(&id).expect("present");
        rt.rec.state = JobState::Completed;
        rt.rec.finished_ms = now_ms();
        self.batch.push(Op::Job(rt.rec.clone()));
        info!(
            job_id = id,
            done = rt.rec.done,
            failed = rt.rec.failed,
            findings = rt.rec.findings,
            "job completed"
        );
        let st = status_of(&rt.rec, &rt.spec, None);
        self.finishing.insert(id);
        self.finished_specs.insert(id, rt.spec.clone());
        self.pending_out
            .push(Deferred::Publish(HubEvent::Finished(id, st)));
        self.finished.insert(id, rt.rec);
    }

    // ---------- minions ----------

    /// Registers a minion session; returns its generation. A new incarnation (process restart)
    /// under a known id gets a new generation and loses every lease of the old one.
    pub fn register(&mut self, reg: v1::Register, tx: SessionTx, session_id: u64) -> u64 {
        let now = now_ms();
        let id = reg.minion_id.clone();
        let (generation, revoke_old) = match self.minions.get(&id) {
            Some(m) if m.rec.incarnation == reg.incarnation && !m.dead => (m.rec.generation, false),
            Some(m) => (m.rec.generation + 1, true),
            None => (1, false),
        };
        if revoke_old {
            let old: Vec<Token> = self
                .minions
                .get(&id)
                .map(|m| m.leases.iter().copied().collect())
                .unwrap_or_default();
            for tok in old {
                self.requeue(tok, "minion restarted (new generation)", true);
            }
        }
        let rec = MinionRecord {
            id: id.clone(),
            incarnation: reg.incarnation.clone(),
            generation,
            provider: reg.provider.clone(),
        };
        self.batch.push(Op::Minion(rec.clone()));
        let _ = tx.send(Ok(v1::CoordinatorMessage {
            msg: Some(CMsg::Registered(v1::Registered {
                generation,
                heartbeat_interval_ms: self.cfg.heartbeat_interval_ms as u32,
            })),
        }));
        let leases = self
            .minions
            .remove(&id)
            .map(|m| if revoke_old { HashSet::new() } else { m.leases })
            .unwrap_or_default();
        info!(minion = %id, provider = %reg.provider, generation, capacity = reg.capacity, "minion registered");
        self.minions.insert(
            id,
            MinionRt {
                rec,
                modules: reg.modules,
                capacity: reg.capacity,
                leases,
                last_seen_ms: now,
                tx: Some(tx),
                session_id,
                dead: false,
            },
        );
        generation
    }

    pub fn heartbeat(&mut self, id: &str, generation: u64) {
        if let Some(m) = self.minions.get_mut(id)
            && m.rec.generation == generation
            && !m.dead
        {
            m.last_seen_ms = now_ms();
        }
    }

    pub fn disconnected(&mut self, id: &str, session_id: u64) {
        if let Some(m) = self.minions.get_mut(id)
            && m.session_id == session_id
        {
            debug!(minion = %id, "session ended");
            m.tx = None;
        }
    }

    /// Drops a misbehaving session (malformed or oversized messages); nothing else is affected.
    pub fn kick(&mut self, id: &str, generation: u64, reason: &str) {
        if let Some(m) = self.minions.get_mut(id)
            && m.rec.generation == generation
        {
            warn!(minion = %id, reason, "closing minion session");
            if let Some(tx) = m.tx.take() {
                let _ = tx.send(Err(tonic::Status::invalid_argument(reason.to_string())));
            }
        }
    }

    /// Returns a lease to the queue (or fails the task after max attempts).
    fn requeue(&mut self, token: Token, reason: &str, count_attempt: bool) {
        let Some((job, task)) = self.leases.remove(&token) else {
            return;
        };
        let mut fail_job = false;
        if let Some(rt) = self.jobs.get_mut(&job)
            && let Some(t) = rt.tasks.get_mut(&task)
        {
            if let TaskState::Leased { minion, .. } = &t.state {
                if let Some(m) = self.minions.get_mut(minion) {
                    m.leases.remove(&token);
                    t.last_provider = Some(m.rec.provider.clone());
                }
                t.last_minion = Some(minion.clone());
            }
            if count_attempt {
                t.attempts += 1;
            }
            t.last_error = Some(reason.to_string());
            if sched::on_failure(t.attempts, self.cfg.max_attempts, false) == Retry::Fail {
                t.state = TaskState::Failed {
                    reason: format!("{reason} (after {} attempts)", t.attempts),
                };
                self.batch.push(Op::Task(t.clone()));
                rt.tasks.remove(&task);
                rt.rec.failed += 1;
                fail_job = true;
            } else {
                t.state = TaskState::Pending;
                self.batch.push(Op::Task(t.clone()));
                rt.pending.push_front(task);
            }
            rt.dirty = true;
            rt.progress_dirty = true;
            self.stats.requeued += 1;
        }
        if fail_job {
            self.check_complete(job);
        }
    }

    /// Periodic: failure detection, lease expiry, expansion, scheduling, progress.
    pub fn tick(&mut self) {
        let now = now_ms();
        let mut dead = Vec::new();
        for (id, m) in &self.minions {
            if !m.dead
                && sched::health(m.last_seen_ms, now, self.cfg.heartbeat_timeout_ms) == Health::Dead
            {
                dead.push(id.clone());
            }
        }
        for id in dead {
            let m = self.minions.get_mut(&id).expect("present");
            m.dead = true;
            if let Some(tx) = m.tx.take() {
                let _ = tx.send(Err(tonic::Status::unavailable(
                    "declared dead: missed heartbeats; reconnect",
                )));
            }
            let toks: Vec<Token> = m.leases.iter().copied().collect();
            warn!(minion = %id, provider = %m.rec.provider, leases = toks.len(), "minion declared dead; requeueing its leases");
            self.stats.minions_declared_dead += 1;
            for t in toks {
                self.requeue(t, "minion dead (missed heartbeats)", true);
            }
        }
        let expired: Vec<Token> = self
            .leases
            .iter()
            .filter(|(_, (j, t))| {
                self.jobs
                    .get(j)
                    .and_then(|rt| rt.tasks.get(t))
                    .map(|t| matches!(t.state, TaskState::Leased { deadline_ms, .. } if deadline_ms < now))
                    .unwrap_or(false)
            })
            .map(|(tok, _)| *tok)
            .collect();
        for tok in expired {
            if let Some((j, t)) = self.leases.get(&tok).copied()
                && let Some(minion) =
                    self.jobs
                        .get(&j)
                        .and_then(|rt| rt.tasks.get(&t))
                        .and_then(|t| match &t.state {
                            TaskState::Leased { minion, .. } => Some(minion.clone()),
                            _ => None,
                        })
                && let Some(tx) = self.minions.get(&minion).and_then(|m| m.tx.as_ref())
            {
                let _ = tx.send(Ok(v1::CoordinatorMessage {
                    msg: Some(CMsg::Revoke(v1::Revoke { tokens: vec![tok] })),
                }));
            }
            self.requeue(tok, "lease deadline passed", true);
        }
        let ids: Vec<JobId> = self.jobs.keys().copied().collect();
        for id in ids {
            self.expand(id);
        }
        for (id, rt) in self.jobs.iter_mut() {
            if rt.progress_dirty && now.saturating_sub(rt.last_progress_ms) >= 250 {
                rt.progress_dirty = false;
                rt.last_progress_ms = now;
                self.pending_out.push(Deferred::Publish(HubEvent::Progress(
                    *id,
                    status_of(&rt.rec, &rt.spec, Some(rt)),
                )));
            }
        }
        self.schedule();
    }

    /// Leases pending tasks to minions with free slots (round-robin across jobs).
    pub fn schedule(&mut self) {
        let t0 = std::time::Instant::now();
        self.schedule_inner();
        self.stats.schedule_us += t0.elapsed().as_micros() as u64;
    }

    fn schedule_inner(&mut self) {
        let now = now_ms();
        let mut ids: Vec<String> = self
            .minions
            .iter()
            .filter(|(_, m)| {
                !m.dead
                    && m.tx.is_some()
                    && sched::health(m.last_seen_ms, now, self.cfg.heartbeat_timeout_ms)
                        == Health::Alive
                    && (m.leases.len() as u32) < m.capacity
            })
            .map(|(id, _)| id.clone())
            .collect();
        if ids.is_empty() || self.jobs.is_empty() {
            return;
        }
        ids.sort();
        let alive = ids.len() as u32;
        let mut free: Vec<u32> = ids
            .iter()
            .map(|id| self.minions[id].capacity - self.minions[id].leases.len() as u32)
            .collect();
        let providers: Vec<String> = ids
            .iter()
            .map(|id| self.minions[id].rec.provider.clone())
            .collect();
        let modules: Vec<Vec<String>> = ids
            .iter()
            .map(|id| self.minions[id].modules.clone())
            .collect();
        let mut out: Vec<Vec<v1::TaskLease>> = vec![Vec::new(); ids.len()];
        let job_ids: Vec<JobId> = self.jobs.keys().copied().collect();
        let n = job_ids.len();
        let mut progressed = true;
        while progressed && free.iter().any(|f| *f > 0) {
            progressed = false;
            for k in 0..n {
                let jid = job_ids[(self.rr + k) % n];
                // Up to 64 tasks of one job per round keeps jobs fair without per-task rotation cost.
                for _ in 0..64 {
                    let views: Vec<sched::MinionView<'_>> = (0..ids.len())
                        .map(|i| sched::MinionView {
                            id: &ids[i],
                            provider: &providers[i],
                            modules: &modules[i],
                            free: free[i],
                            alive: true,
                        })
                        .collect();
                    let rt = self.jobs.get_mut(&jid).expect("job");
                    let leased_now = rt.tasks.len() - rt.pending.len();
                    if rt.spec.rate_limit > 0 && leased_now as u32 >= alive {
                        break;
                    }
                    let Some(&task_id) = rt.pending.front() else {
                        break;
                    };
                    let t = rt.tasks.get(&task_id).expect("pending task");
                    let Some(i) = sched::place(
                        &t.spec.module,
                        t.last_minion.as_deref(),
                        t.last_provider.as_deref(),
                        &views,
                    ) else {
                        break;
                    };
                    drop(views);
                    rt.pending.pop_front();
                    self.token_ctr += 1;
                    let token = sched::token(self.epoch, self.token_ctr);
                    let deadline = now + self.cfg.task_timeout_ms;
                    let t = rt.tasks.get_mut(&task_id).expect("pending task");
                    t.state = TaskState::Leased {
                        minion: ids[i].clone(),
                        generation: self.minions[&ids[i]].rec.generation,
                        token,
                        deadline_ms: deadline,
                    };
                    self.batch.push(Op::Task(t.clone()));
                    let params = lease_params(
                        &rt.spec,
                        &t.spec,
                        sched::rate_share(rt.spec.rate_limit, alive),
                    );
                    let blob = t
                        .spec
                        .blob_sha256
                        .as_ref()
                        .and_then(|s| self.store.blob(s).ok().flatten())
                        .unwrap_or_default();
                    out[i].push(v1::TaskLease {
                        job_id: jid,
                        task_id,
                        parent_task_id: t.spec.parent.unwrap_or(0),
                        module: t.spec.module.clone(),
                        target: t.spec.target.map(|a| a.to_string()).unwrap_or_default(),
                        ports: t.spec.ports.iter().map(|p| *p as u32).collect(),
                        params_json: params.to_string(),
                        blob,
                        input: t.spec.input.clone().unwrap_or_default(),
                        token,
                        deadline_ms: deadline,
                        traceparent: crate::telemetry::traceparent(jid, token),
                    });
                    rt.progress_dirty = true;
                    self.leases.insert(token, (jid, task_id));
                    self.minions
                        .get_mut(&ids[i])
                        .expect("minion")
                        .leases
                        .insert(token);
                    free[i] -= 1;
                    self.stats.leases_granted += 1;
                    progressed = true;
                }
            }
            self.rr = self.rr.wrapping_add(1);
        }
        for (i, leases) in out.into_iter().enumerate() {
            if leases.is_empty() {
                continue;
            }
            if let Some(tx) = &self.minions[&ids[i]].tx {
                let _ = tx.send(Ok(v1::CoordinatorMessage {
                    msg: Some(CMsg::Leases(v1::LeaseBatch { leases })),
                }));
            }
        }
    }

    // ---------- results ----------

    /// Ingests a batch of results from `minion` (generation `generation`): validates, de-duplicates
    /// by fencing token, stores findings, applies follow-up rules, and queues per-item acks.
    pub fn results(
        &mut self,
        minion: &str,
        generation: u64,
        batch: v1::ResultBatch,
        tx: SessionTx,
    ) {
        let now = now_ms();
        let provider = match self.minions.get_mut(minion) {
            Some(m) if m.rec.generation == generation && !m.dead => {
                m.last_seen_ms = now;
                m.rec.provider.clone()
            }
            _ => {
                // A dead or replaced session: every result is from a revoked lease.
                let items = batch
                    .items
                    .iter()
                    .map(|r| v1::AckItem {
                        token: r.token,
                        accepted: false,
                        reason: "session generation is no longer current".into(),
                    })
                    .collect::<Vec<_>>();
                self.stats.results_rejected += items.len() as u64;
                for r in &batch.items {
                    if let Some(rt) = self.jobs.get_mut(&r.job_id) {
                        rt.rec.stale_rejected += 1;
                        rt.dirty = true;
                    }
                }
                self.pending_out.push(Deferred::Ack(tx, items));
                return;
            }
        };
        let mut acks = Vec::with_capacity(batch.items.len());
        let mut touched = HashSet::new();
        let mut malformed = None;
        for r in batch.items {
            let token = r.token;
            let state = self
                .leases
                .get(&token)
                .filter(|(j, t)| *j == r.job_id && *t == r.task_id)
                .and_then(|(j, t)| self.jobs.get(j).and_then(|rt| rt.tasks.get(t)))
                .map(|t| &t.state);
            let verdict = match state {
                Some(s) => sched::judge_result(Some(s), token, minion, generation),
                None => Verdict::Stale,
            };
            match verdict {
                Verdict::Accept => {}
                Verdict::Duplicate => {
                    acks.push(v1::AckItem {
                        token,
                        accepted: true,
                        reason: "duplicate".into(),
                    });
                    continue;
                }
                Verdict::Stale | Verdict::Unknown => {
                    self.stats.results_rejected += 1;
                    if let Some(rt) = self.jobs.get_mut(&r.job_id) {
                        rt.rec.stale_rejected += 1;
                        rt.dirty = true;
                    } else if let Some(rec) = self.finished.get_mut(&r.job_id) {
                        rec.stale_rejected += 1;
                        self.batch.push(Op::Job(rec.clone()));
                    }
                    debug!(
                        minion,
                        token,
                        job_id = r.job_id,
                        task_id = r.task_id,
                        "stale result rejected"
                    );
                    acks.push(v1::AckItem {
                        token,
                        accepted: false,
                        reason: "no live lease for this token (revoked, re-leased or completed)"
                            .into(),
                    });
                    continue;
                }
            }
            let parsed = if r.ok {
                parse_findings(&r.findings)
            } else {
                Ok(Vec::new())
            };
            let (job, task) = self.leases.remove(&token).expect("accepted lease");
            if let Some(m) = self.minions.get_mut(minion) {
                m.leases.remove(&token);
            }
            touched.insert(job);
            match parsed {
                Err(e) => {
                    malformed = Some(e.clone());
                    acks.push(v1::AckItem {
                        token,
                        accepted: false,
                        reason: format!("malformed result: {e}"),
                    });
                    self.leases.insert(token, (job, task));
                    self.requeue(token, &format!("malformed result: {e}"), true);
                }
                Ok(findings) if r.ok => {
                    self.complete_task(
                        job,
                        task,
                        findings,
                        minion,
                        &provider,
                        r.started_at_ms,
                        r.finished_at_ms,
                    );
                    self.stats.results_accepted += 1;
                    acks.push(v1::AckItem {
                        token,
                        accepted: true,
                        reason: String::new(),
                    });
                }
                Ok(_) => {
                    self.stats.results_accepted += 1;
                    acks.push(v1::AckItem {
                        token,
                        accepted: true,
                        reason: String::new(),
                    });
                    self.fail_attempt(job, task, minion, &provider, &r.error, r.permanent);
                }
            }
        }
        self.pending_out.push(Deferred::Ack(tx, acks));
        for j in touched {
            self.expand(j);
            self.check_complete(j);
        }
        if let Some(e) = malformed {
            self.kick(minion, generation, &format!("malformed result: {e}"));
        }
    }

    fn fail_attempt(
        &mut self,
        job: JobId,
        task: TaskId,
        minion: &str,
        provider: &str,
        error: &str,
        permanent: bool,
    ) {
        let Some(rt) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(t) = rt.tasks.get_mut(&task) else {
            return;
        };
        t.attempts += 1;
        t.last_error = Some(error.to_string());
        t.last_minion = Some(minion.to_string());
        t.last_provider = Some(provider.to_string());
        rt.dirty = true;
        rt.progress_dirty = true;
        match sched::on_failure(t.attempts, self.cfg.max_attempts, permanent) {
            Retry::Requeue => {
                t.state = TaskState::Pending;
                self.batch.push(Op::Task(t.clone()));
                rt.pending.push_back(task);
            }
            Retry::Fail => {
                warn!(
                    job_id = job,
                    task_id = task,
                    attempts = t.attempts,
                    error,
                    "task failed"
                );
                t.state = TaskState::Failed {
                    reason: error.to_string(),
                };
                self.batch.push(Op::Task(t.clone()));
                rt.tasks.remove(&task);
                rt.rec.failed += 1;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn complete_task(
        &mut self,
        job: JobId,
        task: TaskId,
        findings: Vec<ParsedFinding>,
        minion: &str,
        provider: &str,
        started: u64,
        finished: u64,
    ) {
        let Some(rt) = self.jobs.get_mut(&job) else {
            return;
        };
        let Some(mut t) = rt.tasks.remove(&task) else {
            return;
        };
        t.state = TaskState::Done;
        t.attempts += 1;
        t.last_minion = Some(minion.to_string());
        t.last_provider = Some(provider.to_string());
        rt.rec.done += 1;
        rt.dirty = true;
        rt.progress_dirty = true;
        let now = now_ms();
        for f in findings {
            let blob_sha = f.blob.map(|b| {
                let sha = hex(&sha2::Sha256::digest(&b));
                self.batch.push(Op::Blob(sha.clone(), b));
                sha
            });
            rt.rec.findings += 1;
            let rec = FindingRecord {
                cursor: rt.rec.findings,
                job_id: job,
                task_id: task,
                parent_task_id: t.spec.parent,
                module: t.spec.module.clone(),
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
                kind: &rec.kind,
                target: rec.target,
                port: rec.port,
                data: &rec.data,
                blob_sha256: rec.blob_sha256.as_deref(),
            };
            for fu in follow_ups(&rt.spec.modules, &view) {
                let id = rt.rec.next_task_id;
                rt.rec.next_task_id += 1;
                rt.rec.tasks_created += 1;
                let spec = TaskSpec {
                    job_id: job,
                    task_id: id,
                    parent: Some(task),
                    module: fu.module.to_string(),
                    target: fu.target,
                    ports: fu.ports,
                    input: None,
                    params: fu.params,
                    blob_sha256: fu.blob_sha256,
                };
                let tr = TaskRecord::new(spec);
                self.batch.push(Op::Task(tr.clone()));
                rt.tasks.insert(id, tr);
                rt.pending.push_back(id);
            }
            self.batch.push(Op::Finding(rec.clone()));
            self.pending_out
                .push(Deferred::Publish(HubEvent::Finding(rec)));
        }
        self.batch.push(Op::Task(t));
    }

    // ---------- durability ----------

    /// Ends a message: job records touched are added to the pending write batch, and the
    /// message's outputs are filed under the epoch of the batch that will contain its writes.
    /// Returns whether anything waits for a flush.
    pub fn commit(&mut self) -> Result<bool, StoreError> {
        let dirty: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, rt)| rt.dirty)
            .map(|(id, _)| *id)
            .collect();
        for id in dirty {
            let rt = self.jobs.get_mut(&id).expect("job");
            rt.dirty = false;
            self.batch.push(Op::Job(rt.rec.clone()));
        }
        let epoch = if self.batch.is_empty() {
            self.write_epoch
        } else {
            self.write_epoch + 1
        };
        for d in self.pending_out.drain(..) {
            self.outbox.push_back((epoch, d));
        }
        Ok(!self.outbox.is_empty())
    }

    /// Applies the pending write batch (all messages since the last one, atomically) and returns
    /// its epoch; the flush that follows covers it. Batching across messages keeps the number
    /// of storage batches to about one per flush.
    pub fn apply_pending(&mut self) -> Result<u64, StoreError> {
        if !self.batch.is_empty() {
            let b = std::mem::take(&mut self.batch);
            let t = std::time::Instant::now();
            self.store.apply(b)?;
            self.stats.apply_us += t.elapsed().as_micros() as u64;
            self.stats.batches += 1;
            self.write_epoch += 1;
        }
        Ok(self.write_epoch)
    }

    pub fn write_epoch(&self) -> u64 {
        self.write_epoch
    }

    /// Everything written up to `epoch` is durable: release the outputs that waited for it.
    pub fn flushed(&mut self, epoch: u64) {
        while let Some((e, _)) = self.outbox.front() {
            if *e > epoch {
                break;
            }
            let (_, d) = self.outbox.pop_front().expect("front");
            match d {
                Deferred::Submit(reply, st) | Deferred::Cancel(reply, st) => {
                    let _ = reply.send(Ok(st));
                }
                Deferred::Ack(tx, items) => {
                    let _ = tx.send(Ok(v1::CoordinatorMessage {
                        msg: Some(CMsg::Ack(v1::ResultAck { items })),
                    }));
                }
                Deferred::Publish(ev) => {
                    match &ev {
                        HubEvent::Finding(f) => self.durable.set(f.job_id, f.cursor),
                        HubEvent::Finished(id, _) => {
                            self.finishing.remove(id);
                        }
                        HubEvent::Progress(..) => {}
                    }
                    let _ = self.hub.send(ev);
                }
            }
        }
    }

    pub fn has_unreleased(&self) -> bool {
        !self.outbox.is_empty()
    }
}

pub struct ParsedFinding {
    kind: String,
    target: Option<IpAddr>,
    port: Option<u16>,
    data: serde_json::Value,
    blob: Option<Vec<u8>>,
}

fn parse_findings(items: &[v1::FindingOut]) -> Result<Vec<ParsedFinding>, String> {
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
            Ok(ParsedFinding {
                kind: f.kind.clone(),
                target,
                port: (f.port != 0).then_some(f.port as u16),
                data,
                blob: (!f.blob.is_empty()).then(|| f.blob.clone()),
            })
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
