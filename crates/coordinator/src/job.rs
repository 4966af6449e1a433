//! One actor per running job: routes the job's messages (offers, results, requeues, cancel,
//! ticks) into its [`JobModel`] (`crate::model::job`, where every decision lives) and applies the
//! model's effects: the writes go through its [`Committer`], registry messages are cast after
//! the writes are applied, and acknowledgements, replies and published events wait for the flush
//! that covers them.
//!
//! A job actor that fails is restarted by the job manager and rebuilds its model from storage; it
//! then gives back every lease it held (`Adopt` without `keep`): those tasks run again under new
//! tokens, and a late result under an old token is rejected, so nothing is stored twice.

use crate::commit::{Committer, FlushMsg};
use crate::engine::{Counters, EngineConfig};
use crate::hub::{Durable, FanMsg, HubEvent};
use crate::model::job::{
    CancelOutcome, Effects, JobModel, Limits, LocalRun, LocalRunner, Offered, ToRegistry,
};
use crate::msg::{JobInit, JobMsg, MgrMsg, RegMsg};
use crate::slot::{JobDir, Slot, TokenSource};
use overlord_core::now_ms;
use overlord_proto::v1::{self, coordinator_message::Msg as CMsg};
use overlord_storage::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::sync::Arc;
use std::time::Duration;

pub const TICK: Duration = Duration::from_millis(100);

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
    m: JobModel,
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
        let limits = Limits::from(&sh.cfg);
        let local = local_runner(&sh);
        let now = now_ms();
        let mut m = match init {
            JobInit::New { rec, spec, plan } => JobModel::new(limits, local, rec, spec, plan),
            JobInit::Recover { id, keep_leases } => {
                JobModel::recover(&*sh.store, id, keep_leases, limits, local, now)?
            }
        };
        sh.jobs.insert(m.id(), myself.clone());
        m.start(now);
        myself.send_interval(TICK, || JobMsg::Tick);
        let mut st = JobSt { sh, c, m };
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
            } => {
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
                let tokens = st.sh.tokens.clone();
                let store = st.sh.store.clone();
                let leases = st.m.offer(
                    offer,
                    &offered,
                    alive,
                    now_ms(),
                    &mut || tokens.next(),
                    &|sha| store.blob(sha).ok().flatten(),
                );
                // the leased state is applied and the registry knows the tokens before the
                // minions get them
                st.end_turn(&myself)?;
                for (s, leases) in slots.iter().zip(leases) {
                    if !leases.is_empty() {
                        let _ = s.tx.send(Ok(v1::CoordinatorMessage {
                            msg: Some(CMsg::Leases(v1::LeaseBatch { leases })),
                        }));
                    }
                }
                return Ok(());
            }
            JobMsg::Results {
                minion,
                provider,
                generation,
                items,
                tx,
            } => {
                let acks =
                    st.m.results(&minion, &provider, generation, items, now_ms());
                st.c.defer(move || {
                    let _ = tx.send(Ok(v1::CoordinatorMessage {
                        msg: Some(CMsg::Ack(v1::ResultAck { items: acks })),
                    }));
                });
            }
            JobMsg::Requeue(tokens, reason, count) => {
                st.m.requeue_tokens(tokens, &reason, count, now_ms())
            }
            JobMsg::Stale(n) => st.m.stale(n),
            JobMsg::Status(reply) => {
                let _ = reply.send(Ok(st.m.status()));
            }
            JobMsg::Cancel(reply) => match st.m.cancel(now_ms()) {
                CancelOutcome::AlreadyDone(s) => {
                    let _ = reply.send(Ok(s));
                }
                CancelOutcome::Cancelled(s) => st.c.defer(move || {
                    let _ = reply.send(Ok(s));
                }),
            },
            JobMsg::Readopt => st.m.readopt(),
            JobMsg::Flushed(seq) => {
                st.c.flushed(seq);
                if st.m.finishing() && !st.c.has_unreleased() {
                    st.m.final_durable();
                }
            }
            JobMsg::Tick => st.m.tick(now_ms()),
            JobMsg::Stop => {
                myself.stop(None);
                return Ok(());
            }
            JobMsg::InjectPanic => panic!("injected panic in job {} (supervision test)", st.m.id()),
        }
        st.end_turn(&myself)?;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        st.sh.jobs.remove_if(st.m.id(), myself.get_id());
        Ok(())
    }
}

/// The leak lookup as the model's runner of local tasks (timed here).
fn local_runner(sh: &JobCtx) -> Option<LocalRunner> {
    let lookup = sh.lookup.clone()?;
    Some(Arc::new(move |spec| {
        let started_ms = now_ms();
        let result = lookup.run(spec);
        LocalRun {
            result,
            started_ms,
            finished_ms: now_ms(),
        }
    }))
}

impl JobSt {
    /// Applies the model's effects: writes join the batch, outputs that acknowledge something
    /// wait for the flush, the batch is applied, then the registry hears what changed.
    fn end_turn(&mut self, myself: &ActorRef<JobMsg>) -> Result<(), ActorProcessingErr> {
        let Effects {
            writes,
            registry,
            events,
            finished,
            tally,
        } = self.m.take_effects(now_ms());
        let counters = &self.sh.counters;
        if tally.accepted > 0 {
            Counters::add(&counters.results_accepted, tally.accepted);
        }
        if tally.rejected > 0 {
            Counters::add(&counters.results_rejected, tally.rejected);
        }
        if tally.granted > 0 {
            Counters::add(&counters.leases_granted, tally.granted);
        }
        self.c.batch.ops.extend(writes);
        if !events.is_empty() || finished.is_some() {
            let durable = self.sh.durable.clone();
            let fanout = self.sh.fanout.clone();
            let id = self.m.id();
            let last_cursor = events
                .iter()
                .filter_map(|e| match e {
                    HubEvent::Finding(f) => Some(f.cursor),
                    _ => None,
                })
                .max();
            let finished = finished
                .map(|(rec, spec)| (self.sh.manager.clone(), rec, spec, self.sh.registry.clone()));
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
        if !registry.is_empty()
            && let Some(r) = self.sh.registry.get()
        {
            let job = self.m.id();
            for msg in registry {
                let _ = r.cast(match msg {
                    ToRegistry::Adopt { leases, keep } => RegMsg::Adopt { job, leases, keep },
                    ToRegistry::Release(tokens) => RegMsg::Release(job, tokens),
                    ToRegistry::Expired(tokens) => RegMsg::Expired(job, tokens),
                    ToRegistry::Kick {
                        minion,
                        generation,
                        reason,
                    } => RegMsg::Kick(minion, generation, reason),
                    ToRegistry::Taken {
                        offer,
                        used,
                        demand,
                    } => RegMsg::Taken {
                        job,
                        offer,
                        used,
                        demand,
                    },
                    ToRegistry::Demand(d) => RegMsg::Demand(job, d),
                });
            }
        }
        Ok(())
    }
}
