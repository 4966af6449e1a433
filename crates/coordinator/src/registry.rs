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
//! Results come from the ingestor and go to their job actors, which judge them (accept, or reject
//! as stale) and acknowledge after the flush; only results for jobs no longer running are
//! rejected here.
//!
//! Every decision (sessions, generations, death, the lease table, fair share, offers) is the
//! pure [`Planner`]'s (`model/planner.rs`); this actor routes messages to it and applies the
//! effects it returns.

use crate::commit::{Committer, FlushMsg};
use crate::engine::{Counters, EngineConfig, IngestedResult, SessionTx};
use crate::model::planner::{Effect, Planner, ResultRoute};
use crate::msg::{JobMsg, MgrMsg, RegMsg, SlotOffer};
use crate::slot::{JobDir, Slot};
use crate::telemetry;
use overlord_core::{JobId, now_ms};
use overlord_proto::v1::{self, coordinator_message::Msg as CMsg};
use overlord_storage::Op;
use overlord_storage::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// What the registry uses.
#[derive(Clone)]
pub struct RegistryCtx {
    pub store: Arc<dyn Store>,
    pub cfg: EngineConfig,
    pub counters: Arc<Counters>,
    pub flusher: Slot<FlushMsg>,
    /// Running job actors: offers, requeues and results go to them.
    pub jobs: JobDir<JobMsg>,
    /// Stale results of finished jobs are counted by the manager.
    pub manager: Slot<MgrMsg>,
}

pub struct RegistryActor;

pub struct RegState {
    sh: RegistryCtx,
    c: Committer,
    planner: Planner,
    /// The session attached per minion (id given by the gRPC layer, and its sender).
    sessions: HashMap<String, (u64, SessionTx)>,
}

impl Actor for RegistryActor {
    type Msg = RegMsg;
    type State = RegState;
    type Arguments = RegistryCtx;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        sh: RegistryCtx,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Known minions get one heartbeat timeout to come back before their leases move.
        let planner = Planner::new(sh.cfg.heartbeat_timeout_ms, sh.store.minions()?, now_ms());
        let every = Duration::from_millis((sh.cfg.heartbeat_interval_ms / 2).clamp(10, 100));
        myself.send_interval(every, || RegMsg::Tick);
        Ok(RegState {
            c: Committer::new(sh.store.clone(), sh.counters.clone()),
            sh,
            planner,
            sessions: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let mut sched = true;
        let now = now_ms();
        match msg {
            RegMsg::Register(reg, tx, sid, reply) => {
                let g = st.register(*reg, tx, sid, now);
                let _ = reply.send(g);
            }
            RegMsg::Heartbeat(id, g, held) => {
                let e = st.planner.heartbeat(&id, g, &held, now);
                sched = !e.is_empty();
                st.apply(e);
            }
            RegMsg::Results(id, g, items, tx) => st.results(&id, g, items, tx, now),
            RegMsg::Kick(id, g, reason) => st.kick(&id, g, &reason),
            RegMsg::Disconnected(id, sid) => {
                if st.planner.disconnected(&id, sid) {
                    debug!(minion = %id, "session ended");
                    st.sessions.remove(&id);
                }
            }
            RegMsg::Demand(job, d) => st.planner.demand(job, d),
            RegMsg::Taken {
                job,
                offer,
                used,
                demand,
            } => {
                let e = st.planner.taken(job, offer, used, demand);
                st.apply(e);
            }
            RegMsg::Release(_job, tokens) => {
                let e = st.planner.release(tokens);
                st.apply(e);
            }
            RegMsg::Expired(_job, tokens) => {
                let e = st.planner.expired(tokens);
                st.apply(e);
            }
            RegMsg::Adopt { job, leases, keep } => {
                let e = st.planner.adopt(job, leases, keep);
                st.apply(e);
            }
            RegMsg::JobGone(job) => st.planner.job_gone(job),
            RegMsg::Unserved(job, reply) => {
                sched = false;
                let _ = reply.send(st.planner.unserved(job));
            }
            RegMsg::Tick => {
                let e = st.planner.tick(now);
                st.apply(e);
                telemetry::minions_alive(st.planner.alive() as u64);
            }
            RegMsg::Flushed(seq) => {
                sched = false;
                st.c.flushed(seq);
            }
            RegMsg::InjectPanic => panic!("injected panic in the registry (supervision test)"),
            RegMsg::Barrier(reply) => {
                sched = false;
                let _ = reply.send(());
            }
        }
        if sched {
            let sh = &st.sh;
            let e = st.planner.schedule(now, |j| sh.jobs.get(j).is_some());
            st.apply(e);
        }
        st.c.end_turn(&st.sh.flusher, &myself, RegMsg::Flushed)?;
        Ok(())
    }
}

impl RegState {
    /// Applies the planner's effects.
    fn apply(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::PersistMinion(rec) => self.c.batch.push(Op::Minion(rec)),
                Effect::Offer {
                    job,
                    offer,
                    slots,
                    alive,
                } => {
                    let slots: Option<Vec<SlotOffer>> = slots
                        .into_iter()
                        .map(|s| {
                            let tx = self.sessions.get(&s.minion)?.1.clone();
                            Some(SlotOffer {
                                minion: s.minion,
                                provider: s.provider,
                                generation: s.generation,
                                modules: s.modules,
                                free: s.free,
                                tx,
                            })
                        })
                        .collect();
                    let sent = match (slots, self.sh.jobs.get(job)) {
                        (Some(slots), Some(a)) => a
                            .cast(JobMsg::Offer {
                                offer,
                                slots,
                                alive,
                            })
                            .is_ok(),
                        _ => false,
                    };
                    if sent {
                        Counters::add(&self.sh.counters.offers, 1);
                    } else {
                        self.planner.undeliverable(job, offer);
                    }
                }
                Effect::Requeue {
                    job,
                    tokens,
                    reason,
                } => {
                    Counters::add(&self.sh.counters.requeued, tokens.len() as u64);
                    telemetry::record(telemetry::Event::LeaseRevoked, tokens.len() as u64);
                    if let Some(j) = self.sh.jobs.get(job) {
                        let _ = j.cast(JobMsg::Requeue(
                            tokens,
                            reason.as_str().to_string(),
                            reason.counts_attempt(),
                        ));
                    }
                }
                Effect::Revoke { minion, tokens } => {
                    debug!(minion = %minion, n = tokens.len(), "revoking leases");
                    if let Some((_, tx)) = self.sessions.get(&minion) {
                        let _ = tx.send(Ok(v1::CoordinatorMessage {
                            msg: Some(CMsg::Revoke(v1::Revoke { tokens })),
                        }));
                    }
                }
                Effect::CloseDead { minion } => {
                    if let Some((_, tx)) = self.sessions.remove(&minion) {
                        let _ = tx.send(Err(tonic::Status::unavailable(
                            "declared dead: missed heartbeats; reconnect",
                        )));
                    }
                    warn!(minion = %minion, "minion declared dead; requeueing its leases");
                    Counters::add(&self.sh.counters.minions_declared_dead, 1);
                }
            }
        }
    }

    fn register(&mut self, reg: v1::Register, tx: SessionTx, session_id: u64, now: u64) -> u64 {
        let (generation, effects) = self.planner.register(
            &reg.minion_id,
            &reg.incarnation,
            &reg.provider,
            reg.modules,
            reg.capacity,
            session_id,
            now,
        );
        self.apply(effects);
        let _ = tx.send(Ok(v1::CoordinatorMessage {
            msg: Some(CMsg::Registered(v1::Registered {
                generation,
                heartbeat_interval_ms: self.sh.cfg.heartbeat_interval_ms as u32,
            })),
        }));
        info!(minion = %reg.minion_id, provider = %reg.provider, generation, capacity = reg.capacity, "minion registered");
        self.sessions.insert(reg.minion_id, (session_id, tx));
        generation
    }

    /// Drops a misbehaving session (malformed or oversized messages); nothing else is affected.
    fn kick(&mut self, id: &str, generation: u64, reason: &str) {
        if self.planner.is_current(id, generation)
            && let Some((_, tx)) = self.sessions.remove(id)
        {
            warn!(minion = %id, reason, "closing minion session");
            let _ = tx.send(Err(tonic::Status::invalid_argument(reason.to_string())));
        }
    }

    fn results(
        &mut self,
        minion: &str,
        generation: u64,
        items: Vec<IngestedResult>,
        tx: SessionTx,
        now: u64,
    ) {
        let provider = self
            .planner
            .minion(minion)
            .map(|m| m.rec.provider.clone())
            .unwrap_or_default();
        let mut rejects = Vec::new();
        let mut stale: BTreeMap<JobId, u64> = BTreeMap::new();
        let mut routed: BTreeMap<JobId, Vec<IngestedResult>> = BTreeMap::new();
        for r in items {
            let job = self.sh.jobs.get(r.job_id);
            let route = match r.partial {
                // findings of a task still running: its lease and slot stay
                Some(_) => {
                    self.planner
                        .progress(minion, generation, r.token, r.job_id, job.is_some(), now)
                }
                None => {
                    self.planner
                        .result(minion, generation, r.token, r.job_id, job.is_some(), now)
                }
            };
            match route {
                ResultRoute::ToJob => routed.entry(r.job_id).or_default().push(r),
                ResultRoute::Hold => {
                    // The job actor is restarting; it requeues every lease it held when it
                    // comes back (this result stays unacknowledged, is re-sent, then rejected).
                    warn!(job_id = r.job_id, "result for a job being restarted");
                }
                ResultRoute::Reject => {
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
                        reason: "no live lease for this token (revoked, re-leased or completed)"
                            .into(),
                        seq: r.partial.unwrap_or(0),
                    });
                }
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
            match self.sh.jobs.get(j) {
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
        for (j, items) in routed {
            if let Some(a) = self.sh.jobs.get(j) {
                let _ = a.cast(JobMsg::Results {
                    minion: minion.to_string(),
                    provider: provider.clone(),
                    generation,
                    items,
                    tx: tx.clone(),
                });
            }
        }
    }
}
