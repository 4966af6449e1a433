//! The slot planner: minion sessions (register, heartbeats, generations, death), the one table of
//! live leases (fencing token → job, minion, generation), and slot offers to jobs (fair share,
//! rate caps, placement). Pure: every method takes the time and returns [`Effect`]s; the
//! registry actor (`registry.rs`) routes messages here and applies the effects (sends offers to
//! job actors, leases back for requeueing, revocations and session closes to minions, minion
//! records to storage).
//!
//! Staleness of a *result* is not judged here: a result is handed to its job, which alone knows
//! the task's state (`core::sched::judge_result`). The planner only frees the lease's slot. This
//! is what keeps a restarted planner live: its table is empty until the jobs report their leases
//! again (`adopt`), and a result that arrives meanwhile must still reach its job (see
//! `tests::result_before_readoption_still_completes_the_task`).

use overlord_core::sched::{self, Health};
use overlord_core::{JobId, Token};
use overlord_storage::MinionRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// An offer not answered within this time is withdrawn (its job actor may have died).
pub const OFFER_TIMEOUT_MS: u64 = 5_000;

/// A lease missing from its minion's heartbeats for this many heartbeat timeouts is lost.
pub const LOST_AFTER_TIMEOUTS: u64 = 3;

/// Tokens of results seen for leases the table did not hold (a restarted planner), so that a late
/// `adopt` of the same token does not take a slot forever. Oldest forgotten first beyond this.
const MAX_RETIRED: usize = 100_000;

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
    pub fn wants(&self, modules: &[String]) -> bool {
        self.by_module
            .iter()
            .any(|(m, n)| *n > 0 && modules.iter().any(|x| x == m))
    }
}

/// Free slots of one minion offered to a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferedSlots {
    pub minion: String,
    pub provider: String,
    pub generation: u64,
    pub modules: Arc<Vec<String>>,
    pub free: u32,
}

/// Why leases go back to their job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequeueReason {
    MinionRestarted,
    MinionDead,
    /// The minion went away before the job's `taken` reached the planner.
    GoneBeforeTaken,
    /// A (re)started job reported leases of minions no longer current.
    HolderUnknown,
    /// The minion's heartbeats have not listed the lease for a while, and no result came: the
    /// lease was lost on its way (sent on a session that closed just then).
    LostInTransit,
}

impl RequeueReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RequeueReason::MinionRestarted => "minion restarted (new generation)",
            RequeueReason::MinionDead => "minion dead (missed heartbeats)",
            RequeueReason::GoneBeforeTaken => "minion went away before its lease was registered",
            RequeueReason::HolderUnknown => "lease holder unknown after restart",
            RequeueReason::LostInTransit => "lease never reached its minion",
        }
    }
    /// Whether the failed lease counts as an attempt of the task.
    pub fn counts_attempt(self) -> bool {
        matches!(
            self,
            RequeueReason::MinionRestarted | RequeueReason::MinionDead
        )
    }
}

/// What the planner asks its actor to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Persist a minion's record (its generation).
    PersistMinion(MinionRecord),
    /// Offer free slots to a job.
    Offer {
        job: JobId,
        offer: u64,
        slots: Vec<OfferedSlots>,
        /// Live minions that run something the job wants (the rate-limit split).
        alive: u32,
    },
    /// These leases are gone: the job requeues their tasks.
    Requeue {
        job: JobId,
        tokens: Vec<Token>,
        reason: RequeueReason,
    },
    /// Tell a minion to stop working on these leases.
    Revoke { minion: String, tokens: Vec<Token> },
    /// Close a minion's session: it was declared dead and must reconnect.
    CloseDead { minion: String },
}

/// Where a result goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultRoute {
    /// To its job actor, which judges it (accepts, or rejects it as stale).
    ToJob,
    /// Nowhere, unacknowledged: the lease was live but its job actor is restarting; the restarted
    /// actor requeues every lease it held, and the minion's re-sent result is then stale.
    Hold,
    /// Rejected here: no live lease and no running job to ask (a finished job).
    Reject,
}

#[derive(Clone, Debug)]
pub struct Minion {
    pub rec: MinionRecord,
    pub modules: Arc<Vec<String>>,
    pub capacity: u32,
    /// Leases in the table held by this minion (a count of the one table, kept with it).
    pub leased: u32,
    /// Slots in outstanding offers.
    pub reserved: u32,
    pub last_seen_ms: u64,
    /// The session currently attached (an id given by the actor), if any.
    pub session: Option<u64>,
    pub dead: bool,
    /// The offer that last gave this minion slots (0 = never): offers start with the minion
    /// offered least recently, so rounding remainders and small jobs rotate over equal minions
    /// instead of going by id order.
    pub last_offer: u64,
    /// A lease of this minion passed its deadline with no answer: no new offers until it reports
    /// a result (any, even a late one) or a new process registers under its id. A minion that
    /// heartbeats but never answers loses its leases at their deadline and gets none back.
    pub unresponsive: bool,
}

impl Minion {
    pub fn free(&self) -> u32 {
        self.capacity
            .saturating_sub(self.leased)
            .saturating_sub(self.reserved)
    }
    fn current(&self, generation: u64) -> bool {
        self.rec.generation == generation && !self.dead
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub job: JobId,
    pub minion: String,
    pub generation: u64,
    /// Since when the minion's heartbeats have not listed this lease.
    pub missing_since: Option<u64>,
}

impl Lease {
    fn new(job: JobId, minion: String, generation: u64) -> Self {
        Lease {
            job,
            minion,
            generation,
            missing_since: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Outstanding {
    id: u64,
    at_ms: u64,
    slots: Vec<(String, u32)>,
}

#[derive(Clone, Debug, Default)]
struct JobSched {
    demand: Demand,
    offer: Option<Outstanding>,
    /// Used nothing of its last offer: not offered again until its demand or capacity changes.
    stalled: bool,
}

#[derive(Clone, Debug)]
pub struct Planner {
    heartbeat_timeout_ms: u64,
    lost_after_ms: u64,
    minions: BTreeMap<String, Minion>,
    leases: HashMap<Token, Lease>,
    retired: BTreeSet<Token>,
    jobs: BTreeMap<JobId, JobSched>,
    rr: usize,
    next_offer: u64,
}

impl Planner {
    /// A planner that knows the stored minions: each gets one heartbeat timeout (from `now`) to
    /// come back before its leases move.
    pub fn new(heartbeat_timeout_ms: u64, stored: Vec<MinionRecord>, now: u64) -> Self {
        let minions = stored
            .into_iter()
            .map(|rec| {
                (
                    rec.id.clone(),
                    Minion {
                        rec,
                        modules: Arc::new(Vec::new()),
                        capacity: 0,
                        leased: 0,
                        reserved: 0,
                        last_seen_ms: now,
                        session: None,
                        dead: false,
                        last_offer: 0,
                        unresponsive: false,
                    },
                )
            })
            .collect();
        Planner {
            heartbeat_timeout_ms,
            lost_after_ms: LOST_AFTER_TIMEOUTS * heartbeat_timeout_ms,
            minions,
            leases: HashMap::new(),
            retired: BTreeSet::new(),
            jobs: BTreeMap::new(),
            rr: 0,
            // Offer ids of a restarted planner must not meet answers to its predecessor's offers.
            next_offer: now << 16,
        }
    }

    pub fn minion(&self, id: &str) -> Option<&Minion> {
        self.minions.get(id)
    }

    pub fn minions(&self) -> impl Iterator<Item = &Minion> {
        self.minions.values()
    }

    pub fn lease(&self, token: Token) -> Option<&Lease> {
        self.leases.get(&token)
    }

    pub fn leases(&self) -> impl Iterator<Item = (&Token, &Lease)> {
        self.leases.iter()
    }

    /// Whether `generation` is the current, live generation of `minion`.
    pub fn is_current(&self, minion: &str, generation: u64) -> bool {
        self.minions
            .get(minion)
            .is_some_and(|m| m.current(generation))
    }

    /// Minions alive with a session attached.
    pub fn alive(&self) -> usize {
        self.minions
            .values()
            .filter(|m| !m.dead && m.session.is_some())
            .count()
    }

    fn requeue_effects(
        by_job: BTreeMap<JobId, Vec<Token>>,
        reason: RequeueReason,
        out: &mut Vec<Effect>,
    ) {
        for (job, tokens) in by_job {
            if !tokens.is_empty() {
                out.push(Effect::Requeue {
                    job,
                    tokens,
                    reason,
                });
            }
        }
    }

    /// Removes every lease of `minion` and sends them back to their jobs.
    fn requeue_minion(&mut self, minion: &str, reason: RequeueReason, out: &mut Vec<Effect>) {
        let mut by_job: BTreeMap<JobId, Vec<Token>> = BTreeMap::new();
        self.leases.retain(|t, l| {
            if l.minion == minion {
                by_job.entry(l.job).or_default().push(*t);
                false
            } else {
                true
            }
        });
        for ts in by_job.values_mut() {
            ts.sort_unstable();
        }
        if let Some(m) = self.minions.get_mut(minion) {
            m.leased = 0;
        }
        Self::requeue_effects(by_job, reason, out);
    }

    fn insert_lease(&mut self, token: Token, lease: Lease) {
        if let Some(m) = self.minions.get_mut(&lease.minion) {
            m.leased += 1;
        }
        if let Some(old) = self.leases.insert(token, lease)
            && let Some(m) = self.minions.get_mut(&old.minion)
        {
            m.leased = m.leased.saturating_sub(1);
        }
    }

    fn remove_lease(&mut self, token: Token) -> Option<Lease> {
        let l = self.leases.remove(&token)?;
        if let Some(m) = self.minions.get_mut(&l.minion) {
            m.leased = m.leased.saturating_sub(1);
        }
        Some(l)
    }

    /// A minion (re)registers on session `session`. Returns its generation: the same while the
    /// minion process is the same (incarnation) and was not declared dead, else the next one (its
    /// earlier leases go back to their jobs).
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        id: &str,
        incarnation: &str,
        provider: &str,
        modules: Vec<String>,
        capacity: u32,
        session: u64,
        now: u64,
    ) -> (u64, Vec<Effect>) {
        let mut out = Vec::new();
        let (generation, revoke_old) = match self.minions.get(id) {
            Some(m) if m.rec.incarnation == incarnation && !m.dead => (m.rec.generation, false),
            Some(m) => (m.rec.generation + 1, true),
            None => (1, false),
        };
        if revoke_old {
            self.requeue_minion(id, RequeueReason::MinionRestarted, &mut out);
        }
        let rec = MinionRecord {
            id: id.to_string(),
            incarnation: incarnation.to_string(),
            generation,
            provider: provider.to_string(),
        };
        out.push(Effect::PersistMinion(rec.clone()));
        let (leased, reserved, last_offer, unresponsive) = self
            .minions
            .remove(id)
            .map(|m| (m.leased, m.reserved, m.last_offer, m.unresponsive))
            .unwrap_or_default();
        // The same process reconnecting stays unresponsive; a new one starts afresh.
        let unresponsive = unresponsive && !revoke_old;
        self.minions.insert(
            id.to_string(),
            Minion {
                rec,
                modules: Arc::new(modules),
                capacity,
                leased,
                reserved,
                last_seen_ms: now,
                session: Some(session),
                dead: false,
                last_offer,
                unresponsive,
            },
        );
        // New capacity: jobs that could not use earlier offers may use this one.
        for js in self.jobs.values_mut() {
            js.stalled = false;
        }
        (generation, out)
    }

    /// A heartbeat of `id`/`generation` listing the leases it `held`. A lease of this minion that
    /// its heartbeats have not listed for `LOST_AFTER_TIMEOUTS` heartbeat timeouts, and whose
    /// result never came, goes back to its job: it was sent on a session that closed (a minion
    /// that reconnects keeps its generation, so nothing else would ever free it). If the minion
    /// did run it after all, its late result is judged stale by the job.
    pub fn heartbeat(
        &mut self,
        id: &str,
        generation: u64,
        held: &[Token],
        now: u64,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        match self.minions.get_mut(id) {
            Some(m) if m.current(generation) => m.last_seen_ms = now,
            _ => return out,
        }
        let held: std::collections::HashSet<Token> = held.iter().copied().collect();
        let mut lost: BTreeMap<JobId, Vec<Token>> = BTreeMap::new();
        for (t, l) in self.leases.iter_mut() {
            if l.minion != id || l.generation != generation {
                continue;
            }
            if held.contains(t) {
                l.missing_since = None;
            } else {
                let since = *l.missing_since.get_or_insert(now);
                if now.saturating_sub(since) >= self.lost_after_ms {
                    lost.entry(l.job).or_default().push(*t);
                }
            }
        }
        for ts in lost.values_mut() {
            ts.sort_unstable();
            for t in ts.iter() {
                self.remove_lease(*t);
            }
        }
        Self::requeue_effects(lost, RequeueReason::LostInTransit, &mut out);
        out
    }

    /// Session `session` of `id` ended (a newer session of the same minion is not affected).
    /// Returns whether it was the attached one.
    pub fn disconnected(&mut self, id: &str, session: u64) -> bool {
        match self.minions.get_mut(id) {
            Some(m) if m.session == Some(session) => {
                m.session = None;
                true
            }
            _ => false,
        }
    }

    pub fn demand(&mut self, job: JobId, d: Demand) {
        let js = self.jobs.entry(job).or_default();
        js.demand = d;
        js.stalled = false;
    }

    /// `minion`/`generation` reported under `token` for `job` (a result or a partial): it is
    /// heard from (an answer clears `unresponsive`); returns whether the lease is live here.
    fn heard(&mut self, minion: &str, generation: u64, token: Token, job: JobId, now: u64) -> bool {
        if let Some(m) = self.minions.get_mut(minion)
            && m.current(generation)
        {
            m.last_seen_ms = now;
            m.unresponsive = false;
        }
        matches!(self.leases.get(&token), Some(l) if l.job == job && l.minion == minion)
    }

    /// A result reported by `minion`/`generation` under `token` for `job` (`job_running`: its
    /// actor is up): frees its slot and says where it goes.
    pub fn result(
        &mut self,
        minion: &str,
        generation: u64,
        token: Token,
        job: JobId,
        job_running: bool,
        now: u64,
    ) -> ResultRoute {
        let live = self.heard(minion, generation, token, job, now);
        if live {
            self.remove_lease(token);
        } else {
            self.retired.insert(token);
            while self.retired.len() > MAX_RETIRED {
                self.retired.pop_first();
            }
        }
        route(job_running, live)
    }

    /// A partial result (findings of a task still running, or a keep-alive) under `token`:
    /// like [`Planner::result`] but the lease and its slot stay.
    pub fn progress(
        &mut self,
        minion: &str,
        generation: u64,
        token: Token,
        job: JobId,
        job_running: bool,
        now: u64,
    ) -> ResultRoute {
        let live = self.heard(minion, generation, token, job, now);
        route(job_running, live)
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

    /// A job's answer to offer `offer`: the tokens it leased per (minion, generation) and its new
    /// demand. Tokens of minions no longer current go back to the job.
    pub fn taken(
        &mut self,
        job: JobId,
        offer: u64,
        used: Vec<(String, u64, Vec<Token>)>,
        demand: Demand,
    ) -> Vec<Effect> {
        let o = match self.jobs.get_mut(&job) {
            Some(js) if js.offer.as_ref().map(|o| o.id) == Some(offer) => js.offer.take(),
            _ => None,
        };
        self.withdraw(o);
        let mut n_used = 0;
        let mut back = Vec::new();
        for (minion, generation, tokens) in used {
            n_used += tokens.len();
            if self.is_current(&minion, generation) {
                for t in tokens {
                    self.insert_lease(t, Lease::new(job, minion.clone(), generation));
                }
            } else {
                back.extend(tokens);
            }
        }
        let mut out = Vec::new();
        Self::requeue_effects(
            BTreeMap::from([(job, back)]),
            RequeueReason::GoneBeforeTaken,
            &mut out,
        );
        let js = self.jobs.entry(job).or_default();
        js.stalled = n_used == 0 && demand.total() > 0;
        js.demand = demand;
        out
    }

    /// The job gave these leases up (deadline passed, cancelled): free the slots, revoke them.
    pub fn release(&mut self, tokens: Vec<Token>) -> Vec<Effect> {
        let mut by_minion: BTreeMap<String, Vec<Token>> = BTreeMap::new();
        for t in tokens {
            if let Some(l) = self.remove_lease(t) {
                by_minion.entry(l.minion).or_default().push(t);
            }
        }
        by_minion
            .into_iter()
            .map(|(minion, tokens)| Effect::Revoke { minion, tokens })
            .collect()
    }

    /// These leases passed their deadline with no answer: like [`release`](Self::release), and
    /// their minions are unresponsive (no new offers until they answer anything).
    pub fn expired(&mut self, tokens: Vec<Token>) -> Vec<Effect> {
        for t in &tokens {
            if let Some(l) = self.leases.get(t)
                && let Some(m) = self.minions.get_mut(&l.minion)
            {
                m.unresponsive = true;
            }
        }
        self.release(tokens)
    }

    /// A job actor (re)started holding `leases` (token, minion, generation). With `keep` (the
    /// planner restarted, or the coordinator did), leases of minions still current stay; the
    /// others (all, without `keep`: the job actor itself restarted) go back for requeueing, and
    /// the table's own leases of the job are revoked.
    pub fn adopt(
        &mut self,
        job: JobId,
        leases: Vec<(Token, String, u64)>,
        keep: bool,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        let mut back = Vec::new();
        if !keep {
            let mut mine: Vec<Token> = self
                .leases
                .iter()
                .filter(|(_, l)| l.job == job)
                .map(|(t, _)| *t)
                .collect();
            mine.sort_unstable();
            out.extend(self.release(mine));
            back = leases.into_iter().map(|(t, _, _)| t).collect();
        } else {
            for (t, minion, generation) in leases {
                if self.retired.contains(&t) {
                    // Its result came in before this report: the slot is free already.
                    continue;
                }
                if self.is_current(&minion, generation) {
                    self.insert_lease(t, Lease::new(job, minion, generation));
                } else {
                    back.push(t);
                }
            }
        }
        Self::requeue_effects(
            BTreeMap::from([(job, back)]),
            RequeueReason::HolderUnknown,
            &mut out,
        );
        out
    }

    /// The job finished: it takes no more offers.
    pub fn job_gone(&mut self, job: JobId) {
        if let Some(js) = self.jobs.remove(&job) {
            self.withdraw(js.offer);
        }
    }

    /// Failure detection and offer expiry at `now`. Returns also the ids of minions just declared
    /// dead (for logs and counters) through `Effect::CloseDead`.
    pub fn tick(&mut self, now: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let timeout = self.heartbeat_timeout_ms;
        let dead: Vec<String> = self
            .minions
            .iter()
            .filter(|(_, m)| !m.dead && sched::health(m.last_seen_ms, now, timeout) == Health::Dead)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            let m = self.minions.get_mut(&id).expect("present");
            m.dead = true;
            m.session = None;
            out.push(Effect::CloseDead { minion: id.clone() });
            self.requeue_minion(&id, RequeueReason::MinionDead, &mut out);
        }
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, js)| {
                js.offer
                    .as_ref()
                    .is_some_and(|o| now.saturating_sub(o.at_ms) > OFFER_TIMEOUT_MS)
            })
            .map(|(j, _)| *j)
            .collect();
        for j in expired {
            let o = self.jobs.get_mut(&j).and_then(|js| js.offer.take());
            self.withdraw(o);
        }
        out
    }

    /// Modules with pending tasks of `job` (or every job) that no live minion declares.
    pub fn unserved(&self, job: Option<JobId>) -> Vec<(JobId, Vec<String>)> {
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

    /// An offer could not be delivered (its job actor is gone): its slots are free again.
    pub fn undeliverable(&mut self, job: JobId, offer: u64) {
        let o = match self.jobs.get_mut(&job) {
            Some(js) if js.offer.as_ref().map(|o| o.id) == Some(offer) => js.offer.take(),
            _ => None,
        };
        self.withdraw(o);
    }

    /// Offers free slots to jobs with demand: round-robin order, each job at most
    /// `ceil(free / jobs still to serve)` slots (its fair share), split over the minions that run
    /// its modules in proportion to their free slots; one outstanding offer per job. `running`
    /// tells whether a job actor can take offers now.
    pub fn schedule(&mut self, now: u64, running: impl Fn(JobId) -> bool) -> Vec<Effect> {
        let mut out = Vec::new();
        let timeout = self.heartbeat_timeout_ms;
        let mut avail: Vec<(String, u32)> = self
            .minions
            .iter()
            .filter(|(_, m)| {
                !m.dead
                    && !m.unresponsive
                    && m.session.is_some()
                    && sched::health(m.last_seen_ms, now, timeout) == Health::Alive
                    && m.free() > 0
            })
            .map(|(id, m)| (id.clone(), m.free()))
            .collect();
        if avail.is_empty() {
            return out;
        }
        let mut wanting: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, js)| js.offer.is_none() && !js.stalled && js.demand.total() > 0)
            .map(|(j, _)| *j)
            .collect();
        if wanting.is_empty() {
            return out;
        }
        let n = wanting.len();
        wanting.rotate_left(self.rr % n);
        self.rr = self.rr.wrapping_add(1);
        for (k, job) in wanting.into_iter().enumerate() {
            let free_now: u64 = avail.iter().map(|(_, f)| *f as u64).sum();
            if free_now == 0 {
                break;
            }
            if !running(job) {
                continue;
            }
            let demand = &self.jobs[&job].demand;
            // Live minions that can run something this job wants (the coordinator's lookup
            // minion does not count for a port scan): a rate-limited job runs one task per
            // such minion, each at its share of the rate.
            let alive = self
                .minions
                .values()
                .filter(|m| !m.dead && m.session.is_some() && demand.wants(&m.modules))
                .count() as u32;
            let share = free_now.div_ceil((n - k) as u64).max(1);
            let budget = share.min(demand.total());
            let mut elig: Vec<usize> = (0..avail.len())
                .filter(|i| avail[*i].1 > 0 && demand.wants(&self.minions[&avail[*i].0].modules))
                .collect();
            // Least recently offered first (ties in id order): the split below is proportional
            // to free slots, and whoever comes first gets the rounding up.
            elig.sort_by_key(|i| self.minions[&avail[*i].0].last_offer);
            let elig_free: u64 = elig.iter().map(|i| avail[*i].1 as u64).sum();
            if elig.is_empty() || budget == 0 {
                continue;
            }
            let mut left = budget;
            let mut slots = Vec::new();
            let mut offered = Vec::new();
            let this_offer = self.next_offer + 1;
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
                m.last_offer = this_offer;
                offered.push((avail[i].0.clone(), give));
                slots.push(OfferedSlots {
                    minion: avail[i].0.clone(),
                    provider: m.rec.provider.clone(),
                    generation: m.rec.generation,
                    modules: m.modules.clone(),
                    free: give,
                });
            }
            self.next_offer += 1;
            let id = self.next_offer;
            self.jobs.get_mut(&job).expect("job").offer = Some(Outstanding {
                id,
                at_ms: now,
                slots: offered,
            });
            out.push(Effect::Offer {
                job,
                offer: id,
                slots,
                alive,
            });
        }
        out
    }
}

/// Where a report goes. Not judged here: the job knows whether the task is still leased under
/// this token. (The planner used to reject every token missing from its table — after its own
/// restart, before the jobs re-reported their leases, that dropped live results for good.)
fn route(job_running: bool, live: bool) -> ResultRoute {
    match (job_running, live) {
        (true, _) => ResultRoute::ToJob,
        (false, true) => ResultRoute::Hold,
        (false, false) => ResultRoute::Reject,
    }
}

#[cfg(test)]
mod requeue_reason_tests {
    use super::RequeueReason;
    use overlord_core::task_error::{ErrorClass, classify};

    /// `overlord jobs get` counts these as `minion_lost`: the texts must keep the prefix
    /// `task_error::classify` reads.
    #[test]
    fn every_requeue_reason_classifies_as_minion_lost() {
        for r in [
            RequeueReason::MinionRestarted,
            RequeueReason::MinionDead,
            RequeueReason::GoneBeforeTaken,
            RequeueReason::HolderUnknown,
            RequeueReason::LostInTransit,
        ] {
            assert_eq!(classify(r.as_str()), ErrorClass::MinionLost, "{r:?}");
        }
    }
}
