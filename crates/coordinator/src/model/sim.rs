//! A deterministic simulation of the coordinator's scheduling protocol, for tests: the real
//! [`Planner`] behind a registry mailbox, jobs that lease, requeue and judge results with the
//! core decisions (`sched::place`, `sched::judge_result`), and minions that run leases and re-send
//! unacknowledged results on a new session. Every actor has a FIFO mailbox (as in ractor); a seeded
//! RNG picks which actor runs next, so any interleaving of deliveries can be produced and replayed.
//! Faults: planner (registry) restart with its mailbox lost, minion death (missed heartbeats) and
//! restart, job cancel.

use super::job::{JobModel, Limits, Offered, ToRegistry};
use super::planner::{Demand, Effect, Planner, ResultRoute};
use crate::engine::IngestedResult;
use overlord_core::job::{JobRecord, JobSpec, JobState, RawSpec, TaskState, prepare, root_plan};
use overlord_core::scope::Scope;
use overlord_core::{JobId, Token};
use overlord_storage::{Batch, MemStore, MinionRecord, Op, Store, StoredTask};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// splitmix64: a tiny seeded RNG (reproducible runs, no dependency).
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

pub const HEARTBEAT_TIMEOUT_MS: u64 = 1_000;

#[derive(Debug)]
pub enum RegIn {
    Register {
        minion: String,
        incarnation: u64,
        capacity: u32,
        session: u64,
    },
    Heartbeat(String, u64, Vec<Token>),
    Results(String, u64, u64, Vec<(Token, JobId, u64)>),
    Demand(JobId, Demand),
    Taken(JobId, u64, Vec<(String, u64, Vec<Token>)>, Demand),
    Release(Vec<Token>),
    Adopt(JobId, Vec<(Token, String, u64)>, bool),
    JobGone(JobId),
    Tick,
}

#[derive(Debug)]
pub enum JobIn {
    Offer(u64, Vec<super::planner::OfferedSlots>),
    Requeue(Vec<Token>),
    Result {
        minion: String,
        generation: u64,
        session: u64,
        token: Token,
        task: u64,
    },
    Readopt,
    Cancel,
}

#[derive(Debug)]
pub enum MinionIn {
    Leases(u64, Vec<(Token, JobId, u64)>),
    Ack(u64, Token),
    Revoke(Vec<Token>),
    Closed(u64),
}

/// A job: the real [`JobModel`] over an in-memory store its writes are applied to (so a job
/// actor restart recovers it from exactly what was written).
pub struct SimJob {
    pub id: JobId,
    /// Root tasks (task ids 1..=n; the sim numbers them 0..n).
    pub n: u64,
    pub model: JobModel,
    pub store: MemStore,
    pub cancelled: bool,
    pub finished: bool,
}

fn noop_spec(n: u64) -> JobSpec {
    let raw = RawSpec {
        name: "sim".into(),
        modules: vec!["noop".into()],
        params_json: format!(r#"{{"count":{n}}}"#),
        ..Default::default()
    };
    prepare(&raw, &Scope::loopback(), &|_| Err("no resolver".into())).expect("noop spec")
}

fn sim_limits() -> Limits {
    // attempts are not what this simulation checks: a task is never failed for being requeued
    Limits {
        task_timeout_ms: u64::MAX / 4,
        max_attempts: u32::MAX,
        expand_watermark: 8,
    }
}

impl SimJob {
    fn new(id: JobId, n: u64, now: u64) -> Self {
        let spec = noop_spec(n);
        let plan = root_plan(&spec).expect("plan");
        let rec = JobRecord::new(id, plan.total, id, now);
        let store = MemStore::new();
        store
            .apply(Batch {
                ops: vec![Op::Spec(id, Box::new(spec.clone())), Op::Job(rec.clone())],
            })
            .expect("submit");
        let model = JobModel::new(sim_limits(), None, rec, Arc::new(spec), plan);
        SimJob {
            id,
            n,
            model,
            store,
            cancelled: false,
            finished: false,
        }
    }

    /// Task `k`'s state: live in the model, ended in the store, or not expanded yet (pending).
    pub fn state_of(&self, k: u64) -> TaskState {
        let id = k + 1;
        if let Some(t) = self.model.tasks().get(&id) {
            return t.state.clone();
        }
        match self.store.task(self.id, id).expect("store") {
            Some(StoredTask::Done(_)) => TaskState::Done,
            Some(StoredTask::Record(t)) => t.state,
            // a cancelled job never creates the root tasks it had not expanded
            None if self.model.record().state == JobState::Cancelled => TaskState::Cancelled,
            None => TaskState::Pending,
        }
    }

    /// Applies the model's effects: writes to the store, the rest as messages to the registry.
    fn effects(&mut self, now: u64, to_reg: &mut Vec<RegIn>) {
        let fx = self.model.take_effects(now);
        if !fx.writes.is_empty() {
            self.store.apply(Batch { ops: fx.writes }).expect("apply");
        }
        for r in fx.registry {
            to_reg.push(match r {
                ToRegistry::Adopt { leases, keep } => RegIn::Adopt(self.id, leases, keep),
                ToRegistry::Release(tokens) | ToRegistry::Expired(tokens) => RegIn::Release(tokens),
                ToRegistry::Kick { .. } => continue,
                ToRegistry::Taken {
                    offer,
                    used,
                    demand,
                } => RegIn::Taken(self.id, offer, used, demand),
                ToRegistry::Demand(d) => RegIn::Demand(self.id, d),
            });
        }
        if fx.finished.is_some() {
            self.finished = true;
            to_reg.push(RegIn::JobGone(self.id));
        }
    }

    pub fn leased(&self) -> Vec<(Token, String, u64)> {
        self.model.leased()
    }
}

pub struct SimMinion {
    pub id: String,
    pub incarnation: u64,
    pub generation: u64,
    pub capacity: u32,
    pub session: u64,
    pub connected: bool,
    pub alive: bool,
    /// Leases being run: token → (job, task).
    pub running: BTreeMap<Token, (JobId, u64)>,
    /// Results sent and not acknowledged: token → (job, task).
    pub unacked: BTreeMap<Token, (JobId, u64)>,
}

pub struct Sim {
    pub rng: Rng,
    pub now: u64,
    pub planner: Planner,
    pub stored: BTreeMap<String, MinionRecord>,
    pub reg: VecDeque<RegIn>,
    pub jobs: BTreeMap<JobId, (SimJob, VecDeque<JobIn>)>,
    pub minions: BTreeMap<String, (SimMinion, VecDeque<MinionIn>)>,
    next_token: Token,
    next_session: u64,
    /// Tasks completed per (job, task): each must be exactly once.
    pub accepted: HashMap<(JobId, u64), u32>,
    /// Leases each minion runs (to check a task is never run by two at once).
    pub violations: Vec<String>,
    /// The rule routing results (the fixed one unless a test asks for the old one).
    pub restarts: u32,
    pub job_restarts: u32,
}

impl Sim {
    pub fn new(seed: u64, minions: &[(&str, u32)]) -> Self {
        let mut s = Sim {
            rng: Rng::new(seed),
            now: 1_000_000,
            planner: Planner::new(HEARTBEAT_TIMEOUT_MS, Vec::new(), 1_000_000),
            stored: BTreeMap::new(),
            reg: VecDeque::new(),
            jobs: BTreeMap::new(),
            minions: BTreeMap::new(),
            next_token: 0,
            next_session: 0,
            accepted: HashMap::new(),
            violations: Vec::new(),
            restarts: 0,
            job_restarts: 0,
        };
        for (id, cap) in minions {
            let m = SimMinion {
                id: id.to_string(),
                incarnation: 1,
                generation: 0,
                capacity: *cap,
                session: 0,
                connected: false,
                alive: true,
                running: BTreeMap::new(),
                unacked: BTreeMap::new(),
            };
            s.minions.insert(id.to_string(), (m, VecDeque::new()));
            s.connect(id);
        }
        s
    }

    fn connect(&mut self, id: &str) {
        self.next_session += 1;
        let sid = self.next_session;
        let (m, _) = self.minions.get_mut(id).expect("minion");
        m.session = sid;
        m.connected = true;
        self.reg.push_back(RegIn::Register {
            minion: id.to_string(),
            incarnation: m.incarnation,
            capacity: m.capacity,
            session: sid,
        });
    }

    pub fn submit(&mut self, id: JobId, n: u64) {
        let mut j = SimJob::new(id, n, self.now);
        j.model.start(self.now);
        let mut to_reg = Vec::new();
        j.effects(self.now, &mut to_reg);
        self.jobs.insert(id, (j, VecDeque::new()));
        self.reg.extend(to_reg);
    }

    /// A job actor fails and is restarted: its mailbox is lost, a new model is recovered from
    /// the job's store and gives its leases back (`Adopt` without `keep`).
    pub fn restart_job(&mut self, id: JobId) {
        let Some((j, q)) = self.jobs.get_mut(&id) else {
            return;
        };
        if j.finished {
            return;
        }
        q.clear();
        self.job_restarts += 1;
        j.model =
            JobModel::recover(&j.store, id, false, sim_limits(), None, self.now).expect("recover");
        j.model.start(self.now);
        let mut to_reg = Vec::new();
        j.effects(self.now, &mut to_reg);
        self.reg.extend(to_reg);
    }

    /// The registry actor panics: its mailbox is lost, a new planner starts from the stored
    /// minion records, sessions end (minions reconnect), job actors are asked to re-report.
    pub fn restart_planner(&mut self) {
        self.restarts += 1;
        self.reg.clear();
        self.planner = Planner::new(
            HEARTBEAT_TIMEOUT_MS,
            self.stored.values().cloned().collect(),
            self.now,
        );
        let ids: Vec<String> = self.minions.keys().cloned().collect();
        for id in ids {
            let (m, q) = self.minions.get_mut(&id).expect("minion");
            if m.alive && m.connected {
                q.push_back(MinionIn::Closed(m.session));
            }
        }
        for (_, q) in self.jobs.values_mut() {
            q.push_back(JobIn::Readopt);
        }
    }

    /// A minion process dies (its leases are lost) and a new one (new incarnation) starts later.
    pub fn kill_minion(&mut self, id: &str) {
        let (m, q) = self.minions.get_mut(id).expect("minion");
        m.alive = false;
        m.connected = false;
        m.running.clear();
        m.unacked.clear();
        q.clear();
    }

    pub fn restart_minion(&mut self, id: &str) {
        let (m, _) = self.minions.get_mut(id).expect("minion");
        if m.alive {
            return;
        }
        m.alive = true;
        m.incarnation += 1;
        self.connect(id);
    }

    pub fn cancel(&mut self, job: JobId) {
        if let Some((_, q)) = self.jobs.get_mut(&job) {
            q.push_back(JobIn::Cancel);
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::PersistMinion(rec) => {
                    self.stored.insert(rec.id.clone(), rec);
                }
                Effect::Offer {
                    job, offer, slots, ..
                } => match self.jobs.get_mut(&job) {
                    Some((j, q)) if !j.finished => q.push_back(JobIn::Offer(offer, slots)),
                    _ => self.planner.undeliverable(job, offer),
                },
                Effect::Requeue { job, tokens, .. } => {
                    if let Some((_, q)) = self.jobs.get_mut(&job) {
                        q.push_back(JobIn::Requeue(tokens));
                    }
                }
                Effect::Revoke { minion, tokens } => {
                    if let Some((m, q)) = self.minions.get_mut(&minion)
                        && m.alive
                    {
                        q.push_back(MinionIn::Revoke(tokens));
                    }
                }
                Effect::CloseDead { minion } => {
                    let (m, q) = self.minions.get_mut(&minion).expect("minion");
                    if m.alive && m.connected {
                        q.push_back(MinionIn::Closed(m.session));
                    }
                }
            }
        }
    }

    pub fn step_registry(&mut self) {
        let Some(msg) = self.reg.pop_front() else {
            return;
        };
        let now = self.now;
        let mut schedule = true;
        match msg {
            RegIn::Register {
                minion,
                incarnation,
                capacity,
                session,
            } => {
                let (g, eff) = self.planner.register(
                    &minion,
                    &incarnation.to_string(),
                    "p",
                    vec!["noop".into()],
                    capacity,
                    session,
                    now,
                );
                self.apply(eff);
                let (m, _) = self.minions.get_mut(&minion).expect("minion");
                if m.session == session && m.alive {
                    m.generation = g;
                    // The minion re-sends what was not acknowledged on its new session.
                    let items: Vec<_> = m.unacked.iter().map(|(t, (j, k))| (*t, *j, *k)).collect();
                    if !items.is_empty() {
                        self.reg
                            .push_back(RegIn::Results(minion.clone(), g, session, items));
                    }
                }
            }
            RegIn::Heartbeat(id, g, held) => {
                let eff = self.planner.heartbeat(&id, g, &held, now);
                schedule = !eff.is_empty();
                self.apply(eff);
            }
            RegIn::Results(id, g, session, items) => {
                for (token, job, task) in items {
                    let running = self.jobs.get(&job).is_some_and(|(j, _)| !j.finished);
                    match self.planner.result(&id, g, token, job, running, now) {
                        ResultRoute::ToJob => {
                            let (_, q) = self.jobs.get_mut(&job).expect("job");
                            q.push_back(JobIn::Result {
                                minion: id.clone(),
                                generation: g,
                                session,
                                token,
                                task,
                            });
                        }
                        ResultRoute::Hold => {}
                        ResultRoute::Reject => {
                            let (_, q) = self.minions.get_mut(&id).expect("minion");
                            q.push_back(MinionIn::Ack(session, token));
                        }
                    }
                }
            }
            RegIn::Demand(job, d) => self.planner.demand(job, d),
            RegIn::Taken(job, offer, used, d) => {
                let eff = self.planner.taken(job, offer, used, d);
                self.apply(eff);
            }
            RegIn::Release(tokens) => {
                let eff = self.planner.release(tokens);
                self.apply(eff);
            }
            RegIn::Adopt(job, leases, keep) => {
                let eff = self.planner.adopt(job, leases, keep);
                self.apply(eff);
            }
            RegIn::JobGone(job) => self.planner.job_gone(job),
            RegIn::Tick => {
                let eff = self.planner.tick(now);
                self.apply(eff);
            }
        }
        if schedule {
            let jobs = &self.jobs;
            let eff = self
                .planner
                .schedule(now, |j| jobs.get(&j).is_some_and(|(j, _)| !j.finished));
            self.apply(eff);
        }
    }

    pub fn step_job(&mut self, id: JobId) {
        let Some((j, q)) = self.jobs.get_mut(&id) else {
            return;
        };
        let Some(msg) = q.pop_front() else {
            return;
        };
        let now = self.now;
        let mut to_reg = Vec::new();
        let mut to_minions: Vec<(String, MinionIn)> = Vec::new();
        match msg {
            JobIn::Offer(offer, slots) => {
                let offered: Vec<Offered<'_>> = slots
                    .iter()
                    .map(|s| Offered {
                        minion: &s.minion,
                        provider: &s.provider,
                        generation: s.generation,
                        modules: &s.modules,
                        free: s.free,
                    })
                    .collect();
                let next = &mut self.next_token;
                let leases = j.model.offer(
                    offer,
                    &offered,
                    self.minions.len() as u32,
                    now,
                    &mut || {
                        *next += 1;
                        *next
                    },
                    &|_| None,
                );
                for (s, leases) in slots.iter().zip(leases) {
                    if leases.is_empty() {
                        continue;
                    }
                    // Sent on the session the offer named (a closed one loses them).
                    let session = self.minions[&s.minion].0.session;
                    let gen_now = self.minions[&s.minion].0.generation;
                    if gen_now == s.generation {
                        let leases = leases
                            .iter()
                            .map(|l| (l.token, id, l.task_id - 1))
                            .collect();
                        to_minions.push((s.minion.clone(), MinionIn::Leases(session, leases)));
                    }
                }
            }
            JobIn::Requeue(tokens) => j.model.requeue_tokens(tokens, "minion lost", true, now),
            JobIn::Result {
                minion,
                generation,
                session,
                token,
                task,
            } => {
                let item = IngestedResult {
                    token,
                    job_id: id,
                    task_id: task + 1,
                    ok: true,
                    findings: Ok(Vec::new()),
                    error: String::new(),
                    permanent: false,
                    started_at_ms: now,
                    finished_at_ms: now,
                    probe_counts: Vec::new(),
                    partial: None,
                };
                let acks = j.model.results(&minion, "p", generation, vec![item], now);
                if acks[0].accepted && acks[0].reason.is_empty() {
                    *self.accepted.entry((id, task)).or_default() += 1;
                }
                to_minions.push((minion, MinionIn::Ack(session, token)));
            }
            JobIn::Readopt => j.model.readopt(),
            JobIn::Cancel => {
                if !j.finished {
                    j.cancelled = true;
                }
                let _ = j.model.cancel(now);
            }
        }
        if !j.finished {
            j.effects(now, &mut to_reg);
        }
        self.reg.extend(to_reg);
        for (m, msg) in to_minions {
            if let Some((mm, q)) = self.minions.get_mut(&m)
                && mm.alive
            {
                q.push_back(msg);
            }
        }
    }

    /// Returns whether the minion did something.
    pub fn step_minion(&mut self, id: &str, finish_one: bool) -> bool {
        let (m, q) = self.minions.get_mut(id).expect("minion");
        if !m.alive {
            return false;
        }
        if let Some(msg) = q.pop_front() {
            match msg {
                MinionIn::Leases(session, leases) => {
                    if session == m.session && m.connected {
                        for (t, j, k) in leases {
                            m.running.insert(t, (j, k));
                        }
                    }
                }
                MinionIn::Ack(session, token) => {
                    if session == m.session {
                        m.unacked.remove(&token);
                    }
                }
                MinionIn::Revoke(tokens) => {
                    for t in tokens {
                        m.running.remove(&t);
                    }
                }
                MinionIn::Closed(session) => {
                    if session == m.session && m.connected {
                        m.connected = false;
                        let id = id.to_string();
                        self.connect(&id);
                    }
                }
            }
            return true;
        }
        if finish_one && m.connected {
            let Some((&t, &(j, k))) = m.running.iter().next() else {
                return false;
            };
            m.running.remove(&t);
            m.unacked.insert(t, (j, k));
            let msg = RegIn::Results(m.id.clone(), m.generation, m.session, vec![(t, j, k)]);
            self.reg.push_back(msg);
            return true;
        }
        false
    }

    fn heartbeats(&mut self) {
        for (m, _) in self.minions.values() {
            if m.alive && m.connected && m.generation > 0 {
                let held = m.running.keys().copied().collect();
                self.reg
                    .push_back(RegIn::Heartbeat(m.id.clone(), m.generation, held));
            }
        }
    }

    /// One step: a randomly chosen actor handles its next message (or a minion finishes a task,
    /// or time passes with heartbeats and a registry tick).
    pub fn step(&mut self) {
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        let minions: Vec<String> = self.minions.keys().cloned().collect();
        let n = 1 + jobs.len() + minions.len() + 1;
        match self.rng.below(n as u64) as usize {
            0 => self.step_registry(),
            k if k <= jobs.len() => self.step_job(jobs[k - 1]),
            k if k <= jobs.len() + minions.len() => {
                let id = minions[k - 1 - jobs.len()].clone();
                let finish = self.rng.chance(50);
                self.step_minion(&id, finish);
            }
            // Time passes only while the registry keeps up (a real one handles a heartbeat in
            // microseconds; here it gets one step in n).
            _ if self.reg.len() > 8 => self.step_registry(),
            _ => {
                self.now += 100;
                self.heartbeats();
                self.reg.push_back(RegIn::Tick);
            }
        }
        self.check();
    }

    /// Invariants after every step.
    fn check(&mut self) {
        // No task leased twice at once: a token is held by at most one minion, and no two live
        // minion-held leases are for the same task.
        let mut held: HashMap<(JobId, u64), Token> = HashMap::new();
        for (m, _) in self.minions.values() {
            for (t, jk) in &m.running {
                if let Some(other) = held.insert(*jk, *t) {
                    // Two minions run the same task: allowed only if one lease is no longer the
                    // job's (its result will be rejected); the job's view holds one token.
                    let (j, _) = &self.jobs[&jk.0];
                    let cur = match &j.state_of(jk.1) {
                        TaskState::Leased { token, .. } => Some(*token),
                        _ => None,
                    };
                    if cur == Some(other) && cur == Some(*t) {
                        self.violations.push(format!("task {jk:?} leased twice"));
                    }
                }
            }
        }
        for ((j, k), n) in &self.accepted {
            if *n > 1 {
                self.violations
                    .push(format!("task {k} of job {j} accepted {n} times"));
            }
        }
        // The planner never offers more than a minion's capacity. (After a planner restart it
        // may, until the jobs have re-reported their leases: the minion then queues the extra
        // leases behind its capacity; nothing is lost.)
        for m in self.planner.minions() {
            if self.restarts == 0 && m.leased + m.reserved > m.capacity && m.capacity > 0 {
                self.violations.push(format!(
                    "minion {} over capacity: {} leased + {} reserved > {}",
                    m.rec.id, m.leased, m.reserved, m.capacity
                ));
            }
        }
    }

    /// Runs without faults until every job finished (or `max_steps` passed). Returns whether all
    /// jobs finished.
    pub fn run_to_completion(&mut self, max_steps: u64) -> bool {
        for _ in 0..max_steps {
            if self.jobs.values().all(|(j, _)| j.finished) {
                return true;
            }
            // Dead minions come back (a new process), so every task can still run somewhere.
            let dead: Vec<String> = self
                .minions
                .values()
                .filter(|(m, _)| !m.alive)
                .map(|(m, _)| m.id.clone())
                .collect();
            for id in dead {
                self.restart_minion(&id);
            }
            self.step();
        }
        self.jobs.values().all(|(j, _)| j.finished)
    }

    pub fn unfinished(&self) -> Vec<String> {
        self.jobs
            .values()
            .filter(|(j, _)| !j.finished)
            .map(|(j, _)| {
                let stuck: Vec<_> = (0..j.n)
                    .map(|k| (k, j.state_of(k)))
                    .filter(|(_, t)| !matches!(t, TaskState::Done | TaskState::Cancelled))
                    .take(5)
                    .collect();
                format!("job {}: {:?}", j.id, stuck)
            })
            .collect()
    }

    /// A summary of the planner's and the minions' state (for failure messages).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for m in self.planner.minions() {
            out += &format!(
                "planner {}: gen {} cap {} leased {} reserved {} session {:?} dead {}\n",
                m.rec.id, m.rec.generation, m.capacity, m.leased, m.reserved, m.session, m.dead
            );
        }
        for (t, l) in self.planner.leases() {
            out += &format!("lease {t}: {l:?}\n");
        }
        for (m, q) in self.minions.values() {
            out += &format!(
                "minion {}: alive {} connected {} gen {} session {} running {:?} unacked {:?} queue {}\n",
                m.id,
                m.alive,
                m.connected,
                m.generation,
                m.session,
                m.running,
                m.unacked,
                q.len()
            );
        }
        out += &format!("registry queue {}\n", self.reg.len());
        out
    }

    pub fn minion_modules() -> Arc<Vec<String>> {
        Arc::new(vec!["noop".into()])
    }
}
