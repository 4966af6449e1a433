//! The minion registry and scheduler: minion sessions (register, heartbeats, generations, death),
//! the table of live leases (fencing token → job, minion), and placement of work.
//!
//! Scheduling is by **slot offers**: each job actor reports its demand (pending tasks per module,
//! and how many more leases it takes now); the registry reserves free slots of minions that run
//! those modules — a fair share of the free slots per job, one outstanding offer per job — and
//! offers them to the job actor. The job actor picks tasks for them (placement preferences live
//! in `core::sched::place`), tells the registry which tokens it used (`Taken`, sent *before* the
//! leases go out, so the registry knows a token before any result for it can arrive) and returns
//! the rest.
//!
//! Results come from the ingestor; an item whose token is not live for that minion is rejected on
//! the spot (stale), the others are routed to their job actors, which acknowledge after the flush.

use crate::actors::Shared;
use crate::commit::Committer;
use crate::engine::{Counters, IngestedResult, SessionTx};
use crate::job::JobMsg;
use crate::manager::MgrMsg;
use crate::telemetry;
use overlord_core::sched::{self, Health};
use overlord_core::{JobId, Token, now_ms};
use overlord_proto::v1::{self, coordinator_message::Msg as CMsg};
use overlord_storage::{MinionRecord, Op};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// An offer not answered within this time is withdrawn (its job actor may have died).
const OFFER_TIMEOUT: Duration = Duration::from_secs(5);

/// Free slots of one minion offered to a job.
#[derive(Clone)]
pub struct SlotOffer {
    pub minion: String,
    pub provider: String,
    pub generation: u64,
    pub modules: Arc<Vec<String>>,
    pub free: u32,
    pub tx: SessionTx,
}

/// What a job can use now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Demand {
    /// Pending tasks per module (only modules with pending tasks).
    pub by_module: Vec<(String, u64)>,
    /// How many more leases the job takes now (a rate limit caps tasks in flight).
    pub max_new: u64,
}

impl Demand {
    pub fn total(&self) -> u64 {
        self.by_module
            .iter()
            .map(|(_, n)| *n)
            .sum::<u64>()
            .min(self.max_new)
    }
    fn wants(&self, modules: &[String]) -> bool {
        self.by_module
            .iter()
            .any(|(m, n)| *n > 0 && modules.iter().any(|x| x == m))
    }
}

pub enum RegMsg {
    Register(Box<v1::Register>, SessionTx, u64, RpcReplyPort<u64>),
    Heartbeat(String, u64),
    /// Validated results from the ingestor: (minion, generation, items, session).
    Results(String, u64, Vec<IngestedResult>, SessionTx),
    Kick(String, u64, String),
    Disconnected(String, u64),
    Demand(JobId, Demand),
    /// Answer to an offer: the tokens leased per (minion, generation), and the job's new demand.
    Taken {
        job: JobId,
        offer: u64,
        used: Vec<(String, u64, Vec<Token>)>,
        demand: Demand,
    },
    /// The job gave these leases up (deadline passed, cancelled): free the slots, tell the minions.
    Release(JobId, Vec<Token>),
    /// A job actor (re)started holding leases (token, minion, generation). With `keep`, leases of
    /// minions still current stay; the others (all, without `keep`) are sent back for requeueing.
    Adopt {
        job: JobId,
        leases: Vec<(Token, String, u64)>,
        keep: bool,
    },
    JobGone(JobId),
    /// Per job (one, or all with `None`): modules it has pending tasks for that no live minion
    /// declares (only jobs with such modules are listed).
    Unserved(Option<JobId>, RpcReplyPort<Vec<(JobId, Vec<String>)>>),
    Tick,
    Flushed(u64),
    InjectPanic,
}

struct MinionRt {
    rec: MinionRecord,
    modules: Arc<Vec<String>>,
    capacity: u32,
    leases: HashSet<Token>,
    /// Slots in outstanding offers.
    reserved: u32,
    last_seen_ms: u64,
    tx: Option<SessionTx>,
    session_id: u64,
    dead: bool,
}

impl MinionRt {
    fn free(&self) -> u32 {
        self.capacity
            .saturating_sub(self.leases.len() as u32)
            .saturating_sub(self.reserved)
    }
}

struct Outstanding {
    id: u64,
    at: Instant,
    slots: Vec<(String, u32)>,
}

#[derive(Default)]
struct JobSched {
    demand: Demand,
    offer: Option<Outstanding>,
    /// Used nothing of its last offer: not offered again until its demand changes.
    stalled: bool,
}

pub struct RegistryActor;

pub struct RegState {
    sh: Shared,
    c: Committer,
    minions: HashMap<String, MinionRt>,
    leases: HashMap<Token, (JobId, String)>,
    jobs: BTreeMap<JobId, JobSched>,
    rr: usize,
    next_offer: u64,
}

impl Actor for RegistryActor {
    type Msg = RegMsg;
    type State = RegState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        sh: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let now = now_ms();
        let mut minions = HashMap::new();
        for rec in sh.store.minions()? {
            // Known minions get one heartbeat timeout to come back before their leases move.
            minions.insert(
                rec.id.clone(),
                MinionRt {
                    rec,
                    modules: Arc::new(Vec::new()),
                    capacity: 0,
                    leases: HashSet::new(),
                    reserved: 0,
                    last_seen_ms: now,
                    tx: None,
                    session_id: 0,
                    dead: false,
                },
            );
        }
        let every = Duration::from_millis((sh.cfg.heartbeat_interval_ms / 2).clamp(10, 100));
        myself.send_interval(every, || RegMsg::Tick);
        Ok(RegState {
            c: Committer::new(sh.store.clone(), sh.counters.clone()),
            sh,
            minions,
            leases: HashMap::new(),
            jobs: BTreeMap::new(),
            rr: 0,
            next_offer: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut sched = true;
        match msg {
            RegMsg::Register(reg, tx, sid, reply) => {
                let g = st.register(*reg, tx, sid);
                let _ = reply.send(g);
            }
            RegMsg::Heartbeat(id, g) => {
                sched = false;
                if let Some(m) = st.minions.get_mut(&id)
                    && m.rec.generation == g
                    && !m.dead
                {
                    m.last_seen_ms = now_ms();
                }
            }
            RegMsg::Results(id, g, items, tx) => st.results(&id, g, items, tx),
            RegMsg::Kick(id, g, reason) => st.kick(&id, g, &reason),
            RegMsg::Disconnected(id, sid) => {
                if let Some(m) = st.minions.get_mut(&id)
                    && m.session_id == sid
                {
                    debug!(minion = %id, "session ended");
                    m.tx = None;
                }
            }
            RegMsg::Demand(job, d) => {
                let js = st.jobs.entry(job).or_default();
                js.demand = d;
                js.stalled = false;
            }
            RegMsg::Taken {
                job,
                offer,
                used,
                demand,
            } => st.taken(job, offer, used, demand),
            RegMsg::Release(job, tokens) => st.release(job, tokens, "lease released by its job"),
            RegMsg::Adopt { job, leases, keep } => st.adopt(job, leases, keep),
            RegMsg::JobGone(job) => {
                if let Some(js) = st.jobs.remove(&job) {
                    st.withdraw(js.offer);
                }
            }
            RegMsg::Unserved(job, reply) => {
                sched = false;
                let _ = reply.send(st.unserved(job));
            }
            RegMsg::Tick => st.tick(),
            RegMsg::Flushed(seq) => {
                sched = false;
                st.c.flushed(seq);
            }
            RegMsg::InjectPanic => panic!("injected panic in the registry (supervision test)"),
        }
        if sched {
            st.schedule();
        }
        st.c.end_turn(&st.sh.flusher, &myself, RegMsg::Flushed)?;
        Ok(())
    }
}

impl RegState {
    /// Sends `tokens` of `job` back to its actor for requeueing.
    fn requeue(&self, job: JobId, tokens: Vec<Token>, reason: &str, count_attempt: bool) {
        if tokens.is_empty() {
            return;
        }
        Counters::add(&self.sh.counters.requeued, tokens.len() as u64);
        telemetry::record(telemetry::Event::LeaseRevoked, tokens.len() as u64);
        if let Some(j) = self.sh.job(job) {
            let _ = j.cast(JobMsg::Requeue(tokens, reason.to_string(), count_attempt));
        }
    }

    /// Removes every lease of `minion` and sends them back to their jobs.
    fn requeue_minion(&mut self, minion: &str, reason: &str, count_attempt: bool) {
        let Some(m) = self.minions.get_mut(minion) else {
            return;
        };
        let mut by_job: BTreeMap<JobId, Vec<Token>> = BTreeMap::new();
        for tok in m.leases.drain() {
            if let Some((j, _)) = self.leases.remove(&tok) {
                by_job.entry(j).or_default().push(tok);
            }
        }
        for (j, toks) in by_job {
            self.requeue(j, toks, reason, count_attempt);
        }
    }

    fn register(&mut self, reg: v1::Register, tx: SessionTx, session_id: u64) -> u64 {
        let now = now_ms();
        let id = reg.minion_id.clone();
        let (generation, revoke_old) = match self.minions.get(&id) {
            Some(m) if m.rec.incarnation == reg.incarnation && !m.dead => (m.rec.generation, false),
            Some(m) => (m.rec.generation + 1, true),
            None => (1, false),
        };
        if revoke_old {
            self.requeue_minion(&id, "minion restarted (new generation)", true);
        }
        let rec = MinionRecord {
            id: id.clone(),
            incarnation: reg.incarnation.clone(),
            generation,
            provider: reg.provider.clone(),
        };
        self.c.batch.push(Op::Minion(rec.clone()));
        let _ = tx.send(Ok(v1::CoordinatorMessage {
            msg: Some(CMsg::Registered(v1::Registered {
                generation,
                heartbeat_interval_ms: self.sh.cfg.heartbeat_interval_ms as u32,
            })),
        }));
        let (leases, reserved) = self
            .minions
            .remove(&id)
            .map(|m| (m.leases, m.reserved))
            .unwrap_or_default();
        info!(minion = %id, provider = %reg.provider, generation, capacity = reg.capacity, "minion registered");
        self.minions.insert(
            id,
            MinionRt {
                rec,
                modules: Arc::new(reg.modules),
                capacity: reg.capacity,
                leases,
                reserved,
                last_seen_ms: now,
                tx: Some(tx),
                session_id,
                dead: false,
            },
        );
        // New capacity: jobs that could not use earlier offers may use this one.
        for js in self.jobs.values_mut() {
            js.stalled = false;
        }
        generation
    }

    /// Drops a misbehaving session (malformed or oversized messages); nothing else is affected.
    fn kick(&mut self, id: &str, generation: u64, reason: &str) {
        if let Some(m) = self.minions.get_mut(id)
            && m.rec.generation == generation
        {
            warn!(minion = %id, reason, "closing minion session");
            if let Some(tx) = m.tx.take() {
                let _ = tx.send(Err(tonic::Status::invalid_argument(reason.to_string())));
            }
        }
    }

    fn results(
        &mut self,
        minion: &str,
        generation: u64,
        items: Vec<IngestedResult>,
        tx: SessionTx,
    ) {
        let now = now_ms();
        let current = match self.minions.get_mut(minion) {
            Some(m) if m.rec.generation == generation && !m.dead => {
                m.last_seen_ms = now;
                Some(m.rec.provider.clone())
            }
            _ => None,
        };
        let mut rejects = Vec::new();
        let mut stale: BTreeMap<JobId, u64> = BTreeMap::new();
        let mut routed: BTreeMap<JobId, Vec<IngestedResult>> = BTreeMap::new();
        for r in items {
            let live = current.is_some()
                && matches!(self.leases.get(&r.token), Some((j, m)) if *j == r.job_id && m == minion);
            if live {
                self.leases.remove(&r.token);
                if let Some(m) = self.minions.get_mut(minion) {
                    m.leases.remove(&r.token);
                }
                routed.entry(r.job_id).or_default().push(r);
            } else {
                *stale.entry(r.job_id).or_default() += 1;
                debug!(
                    minion,
                    token = r.token,
                    job_id = r.job_id,
                    task_id = r.task_id,
                    "stale result rejected"
                );
                rejects.push(v1::AckItem {
                    token: r.token,
                    accepted: false,
                    reason: if current.is_some() {
                        "no live lease for this token (revoked, re-leased or completed)".into()
                    } else {
                        "session generation is no longer current".into()
                    },
                });
            }
        }
        if !rejects.is_empty() {
            // A rejection stores nothing: it needs no flush.
            Counters::add(&self.sh.counters.results_rejected, rejects.len() as u64);
            telemetry::record(
                telemetry::Event::ResultRejected { reason: "stale" },
                rejects.len() as u64,
            );
            let _ = tx.send(Ok(v1::CoordinatorMessage {
                msg: Some(CMsg::Ack(v1::ResultAck { items: rejects })),
            }));
        }
        for (j, n) in stale {
            match self.sh.job(j) {
                Some(a) => {
                    let _ = a.cast(JobMsg::Stale(n));
                }
                None => {
                    if let Some(m) = self.sh.manager.get() {
                        let _ = m.cast(MgrMsg::Stale(j, n));
                    }
                }
            }
        }
        let Some(provider) = current else {
            return;
        };
        for (j, items) in routed {
            match self.sh.job(j) {
                Some(a) => {
                    let _ = a.cast(JobMsg::Results {
                        minion: minion.to_string(),
                        provider: provider.clone(),
                        generation,
                        items,
                        tx: tx.clone(),
                    });
                }
                None => {
                    // The job actor is restarting; it requeues every lease it held when it
                    // comes back (these results stay unacknowledged and are re-sent, then
                    // rejected as stale).
                    warn!(
                        job_id = j,
                        n = items.len(),
                        "results for a job being restarted"
                    );
                }
            }
        }
    }

    fn withdraw(&mut self, offer: Option<Outstanding>) {
        if let Some(o) = offer {
            for (m, n) in o.slots {
                if let Some(m) = self.minions.get_mut(&m) {
                    m.reserved = m.reserved.saturating_sub(n);
                }
            }
        }
    }

    fn taken(
        &mut self,
        job: JobId,
        offer: u64,
        used: Vec<(String, u64, Vec<Token>)>,
        demand: Demand,
    ) {
        let o = match self.jobs.get_mut(&job) {
            Some(js) if js.offer.as_ref().map(|o| o.id) == Some(offer) => js.offer.take(),
            _ => None,
        };
        self.withdraw(o);
        let mut n_used = 0;
        let mut requeue = Vec::new();
        for (minion, generation, tokens) in used {
            n_used += tokens.len();
            match self.minions.get_mut(&minion) {
                Some(m) if m.rec.generation == generation && !m.dead => {
                    for t in tokens {
                        m.leases.insert(t);
                        self.leases.insert(t, (job, minion.clone()));
                    }
                }
                _ => requeue.extend(tokens),
            }
        }
        self.requeue(
            job,
            requeue,
            "minion went away before its lease was registered",
            false,
        );
        let js = self.jobs.entry(job).or_default();
        js.stalled = n_used == 0 && demand.total() > 0;
        js.demand = demand;
    }

    fn release(&mut self, job: JobId, tokens: Vec<Token>, why: &str) {
        let mut by_minion: HashMap<String, Vec<Token>> = HashMap::new();
        for t in tokens {
            if let Some((j, m)) = self.leases.remove(&t) {
                debug_assert_eq!(j, job);
                if let Some(mr) = self.minions.get_mut(&m) {
                    mr.leases.remove(&t);
                }
                by_minion.entry(m).or_default().push(t);
            }
        }
        for (m, tokens) in by_minion {
            debug!(minion = %m, n = tokens.len(), why, "revoking leases");
            if let Some(tx) = self.minions.get(&m).and_then(|m| m.tx.as_ref()) {
                let _ = tx.send(Ok(v1::CoordinatorMessage {
                    msg: Some(CMsg::Revoke(v1::Revoke { tokens })),
                }));
            }
        }
    }

    fn adopt(&mut self, job: JobId, leases: Vec<(Token, String, u64)>, keep: bool) {
        let mut back = Vec::new();
        if !keep {
            // Every lease of a restarted job actor goes back; leases we still hold are revoked.
            let mine: Vec<Token> = self
                .leases
                .iter()
                .filter(|(_, (j, _))| *j == job)
                .map(|(t, _)| *t)
                .collect();
            self.release(job, mine, "job actor restarted");
            back = leases.into_iter().map(|(t, _, _)| t).collect();
        } else {
            for (t, minion, generation) in leases {
                match self.minions.get_mut(&minion) {
                    Some(m) if m.rec.generation == generation && !m.dead => {
                        m.leases.insert(t);
                        self.leases.insert(t, (job, minion));
                    }
                    _ => back.push(t),
                }
            }
        }
        self.requeue(job, back, "lease holder unknown after restart", false);
    }

    fn tick(&mut self) {
        let now = now_ms();
        let timeout = self.sh.cfg.heartbeat_timeout_ms;
        let dead: Vec<String> = self
            .minions
            .iter()
            .filter(|(_, m)| !m.dead && sched::health(m.last_seen_ms, now, timeout) == Health::Dead)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            let m = self.minions.get_mut(&id).expect("present");
            m.dead = true;
            if let Some(tx) = m.tx.take() {
                let _ = tx.send(Err(tonic::Status::unavailable(
                    "declared dead: missed heartbeats; reconnect",
                )));
            }
            warn!(minion = %id, provider = %m.rec.provider, leases = m.leases.len(), "minion declared dead; requeueing its leases");
            Counters::add(&self.sh.counters.minions_declared_dead, 1);
            self.requeue_minion(&id, "minion dead (missed heartbeats)", true);
        }
        telemetry::minions_alive(
            self.minions
                .values()
                .filter(|m| !m.dead && m.tx.is_some())
                .count() as u64,
        );
        // Withdraw offers nobody answered (their job actor died meanwhile).
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, js)| {
                js.offer
                    .as_ref()
                    .is_some_and(|o| o.at.elapsed() > OFFER_TIMEOUT)
            })
            .map(|(j, _)| *j)
            .collect();
        for j in expired {
            let o = self.jobs.get_mut(&j).and_then(|js| js.offer.take());
            warn!(job_id = j, "slot offer unanswered; withdrawn");
            self.withdraw(o);
        }
    }

    /// Modules with pending tasks of `job` (or every job) that no live minion declares.
    fn unserved(&self, job: Option<JobId>) -> Vec<(JobId, Vec<String>)> {
        let served = |m: &str| {
            self.minions
                .values()
                .any(|r| !r.dead && r.modules.iter().any(|x| x == m))
        };
        self.jobs
            .iter()
            .filter(|(id, _)| job.is_none_or(|j| j == **id))
            .filter_map(|(id, js)| {
                let missing: Vec<String> = js
                    .demand
                    .by_module
                    .iter()
                    .filter(|(m, n)| *n > 0 && !served(m))
                    .map(|(m, _)| m.clone())
                    .collect();
                (!missing.is_empty()).then_some((*id, missing))
            })
            .collect()
    }

    /// Offers free slots to jobs with demand (a fair share each, round-robin order).
    fn schedule(&mut self) {
        let now = now_ms();
        let timeout = self.sh.cfg.heartbeat_timeout_ms;
        let mut avail: Vec<(String, u32)> = self
            .minions
            .iter()
            .filter(|(_, m)| {
                !m.dead
                    && m.tx.is_some()
                    && sched::health(m.last_seen_ms, now, timeout) == Health::Alive
                    && m.free() > 0
            })
            .map(|(id, m)| (id.clone(), m.free()))
            .collect();
        if avail.is_empty() {
            return;
        }
        avail.sort();
        let mut wanting: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, js)| js.offer.is_none() && !js.stalled && js.demand.total() > 0)
            .map(|(j, _)| *j)
            .collect();
        if wanting.is_empty() {
            return;
        }
        let n = wanting.len();
        wanting.rotate_left(self.rr % n);
        self.rr = self.rr.wrapping_add(1);
        for (k, job) in wanting.into_iter().enumerate() {
            let free_now: u64 = avail.iter().map(|(_, f)| *f as u64).sum();
            if free_now == 0 {
                break;
            }
            let Some(actor) = self.sh.job(job) else {
                continue;
            };
            let js = &self.jobs[&job];
            // Live minions that can run something this job wants (the coordinator's lookup
            // minion does not count for a port scan): a rate-limited job runs one task per
            // such minion, each at its share of the rate.
            let alive = self
                .minions
                .values()
                .filter(|m| !m.dead && m.tx.is_some() && js.demand.wants(&m.modules))
                .count() as u32;
            let share = free_now.div_ceil((n - k) as u64).max(1);
            let budget = share.min(js.demand.total());
            let elig: Vec<usize> = (0..avail.len())
                .filter(|i| avail[*i].1 > 0 && js.demand.wants(&self.minions[&avail[*i].0].modules))
                .collect();
            let elig_free: u64 = elig.iter().map(|i| avail[*i].1 as u64).sum();
            if elig.is_empty() || budget == 0 {
                continue;
            }
            let mut left = budget;
            let mut slots = Vec::new();
            let mut offered = Vec::new();
            for i in elig {
                if left == 0 {
                    break;
                }
                let f = avail[i].1 as u64;
                let give = (budget * f).div_ceil(elig_free).min(f).min(left) as u32;
                if give == 0 {
                    continue;
                }
                left -= give as u64;
                avail[i].1 -= give;
                let m = self.minions.get_mut(&avail[i].0).expect("minion");
                m.reserved += give;
                offered.push((avail[i].0.clone(), give));
                slots.push(SlotOffer {
                    minion: avail[i].0.clone(),
                    provider: m.rec.provider.clone(),
                    generation: m.rec.generation,
                    modules: m.modules.clone(),
                    free: give,
                    tx: m.tx.clone().expect("alive minion has a session"),
                });
            }
            self.next_offer += 1;
            let id = self.next_offer;
            if actor
                .cast(JobMsg::Offer {
                    offer: id,
                    slots,
                    alive,
                })
                .is_err()
            {
                self.withdraw(Some(Outstanding {
                    id,
                    at: Instant::now(),
                    slots: offered,
                }));
                continue;
            }
            Counters::add(&self.sh.counters.offers, 1);
            self.jobs.get_mut(&job).expect("job").offer = Some(Outstanding {
                id,
                at: Instant::now(),
                slots: offered,
            });
        }
    }
}
