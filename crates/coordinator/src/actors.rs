//! The ractor supervision tree of the coordinator:
//!
//! ```text
//! CoordinatorSupervisor        restart policy: core::sched::restart_decision, per child
//! ├── Flusher                  group commit: one sled flush wakes every actor that wrote before it
//! ├── FanOut                   stream fan-out: each job's durable events to that job's watchers
//! ├── Ingestor                 result ingestion: validates result batches, hashes blobs
//! ├── Registry                 minion registry + scheduler: sessions, health, leases, slot offers
//! └── JobManager               submit/get/list/cancel, idempotent submission
//!     └── Job × running job    a job's tasks: expansion, leases, results, follow-ups, completion
//! ```
//! ractor has no restart strategy of its own (a supervisor just gets an event when a child
//! fails), so each supervisor here applies `restart_decision`: restart with backoff, give up
//! (and fail upwards) after too many failures in a window. A restarted actor rebuilds its state
//! from storage; see each module for how it reconciles with the others.

use crate::commit::{FlushMsg, FlusherActor};
use crate::engine::{Counters, EngineConfig};
use crate::hub::{Durable, FanMsg, FanOutActor, HubEvent};
use crate::ingest::{IngestMsg, IngestorActor};
use crate::job::JobMsg;
use crate::manager::{JobManagerActor, MgrMsg};
use crate::registry::{RegMsg, RegistryActor};
use overlord_core::JobId;
use overlord_core::sched::{RestartDecision, restart_decision};
use overlord_storage::Store;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{error, warn};

/// Where an actor currently lives (it changes when its supervisor restarts it).
pub struct Slot<M>(Arc<RwLock<Option<ActorRef<M>>>>);

impl<M> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot(self.0.clone())
    }
}

impl<M> Default for Slot<M> {
    fn default() -> Self {
        Slot(Arc::new(RwLock::new(None)))
    }
}

impl<M> Slot<M> {
    pub fn get(&self) -> Option<ActorRef<M>> {
        self.0.read().expect("slot lock").clone()
    }
    pub fn set(&self, r: Option<ActorRef<M>>) {
        *self.0.write().expect("slot lock") = r;
    }
}

/// Running job actors by job id (for routing results and offers).
pub type JobDir = Arc<RwLock<HashMap<JobId, ActorRef<JobMsg>>>>;

/// What every actor of the tree can reach.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub cfg: EngineConfig,
    /// Process-wide stream of durable events (fed by the fan-out; the image indexer follows it).
    pub hub: broadcast::Sender<HubEvent>,
    pub durable: Durable,
    pub flusher: Slot<FlushMsg>,
    pub fanout: Slot<FanMsg>,
    pub ingest: Slot<IngestMsg>,
    pub registry: Slot<RegMsg>,
    pub manager: Slot<MgrMsg>,
    pub jobs: JobDir,
    /// This coordinator process's start epoch (fencing tokens carry it in their high bits).
    pub epoch: u64,
    pub token_ctr: Arc<AtomicU64>,
    pub restarts: Arc<AtomicU64>,
    pub counters: Arc<Counters>,
    /// The leak lookup the coordinator runs itself (`lookup`); None: `leak` tasks fail.
    pub lookup: Option<crate::lookup::LeakLookup>,
}

impl Shared {
    pub fn job(&self, id: JobId) -> Option<ActorRef<JobMsg>> {
        self.jobs.read().expect("job dir").get(&id).cloned()
    }
    pub fn next_token(&self) -> overlord_core::Token {
        let n = self
            .token_ctr
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        overlord_core::sched::token(self.epoch, n)
    }
    pub fn restarted(&self) {
        self.restarts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The restart policy of every supervisor here: records a child failure (times of failures within
/// the last minute are kept) and decides, after `core::sched::restart_decision`, whether to restart
/// it with backoff or give up once more than `max` failures fall in that minute.
pub fn note_failure(failures: &mut Vec<u64>, max: usize) -> RestartDecision {
    const WINDOW_MS: u64 = 60_000;
    let now = overlord_core::now_ms();
    failures.push(now);
    failures.retain(|t| now - *t <= WINDOW_MS);
    restart_decision(failures, now, max, WINDOW_MS)
}

// ---------------- Supervisor ----------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Child {
    Flusher,
    FanOut,
    Ingestor,
    Registry,
    Manager,
}

pub struct CoordinatorSupervisor;

pub enum SupMsg {
    Restart(Child),
}

pub struct SupState {
    shared: Shared,
    children: Vec<(Child, ActorCell)>,
    failures: Vec<u64>,
}

impl CoordinatorSupervisor {
    async fn spawn(
        myself: &ActorRef<SupMsg>,
        st: &mut SupState,
        which: Child,
        fresh: bool,
    ) -> Result<(), ActorProcessingErr> {
        let sh = st.shared.clone();
        let sup = myself.get_cell();
        let cell = match which {
            Child::Flusher => {
                let (a, _) = Actor::spawn_linked(
                    None,
                    FlusherActor,
                    (sh.store.clone(), sh.counters.clone()),
                    sup,
                )
                .await?;
                sh.flusher.set(Some(a.clone()));
                a.get_cell()
            }
            Child::FanOut => {
                let (a, _) = Actor::spawn_linked(None, FanOutActor, sh.hub.clone(), sup).await?;
                sh.fanout.set(Some(a.clone()));
                a.get_cell()
            }
            Child::Ingestor => {
                let (a, _) = Actor::spawn_linked(None, IngestorActor, sh.clone(), sup).await?;
                sh.ingest.set(Some(a.clone()));
                a.get_cell()
            }
            Child::Registry => {
                let (a, _) = Actor::spawn_linked(None, RegistryActor, sh.clone(), sup).await?;
                sh.registry.set(Some(a.clone()));
                if !fresh && let Some(m) = sh.manager.get() {
                    // Job actors report their live leases to the new registry.
                    let _ = m.cast(MgrMsg::Readopt);
                }
                a.get_cell()
            }
            Child::Manager => {
                let (a, _) =
                    Actor::spawn_linked(None, JobManagerActor, (sh.clone(), fresh), sup).await?;
                sh.manager.set(Some(a.clone()));
                a.get_cell()
            }
        };
        st.children.retain(|(c, _)| *c != which);
        st.children.push((which, cell));
        Ok(())
    }

    fn slot_clear(sh: &Shared, which: Child) {
        match which {
            Child::Flusher => sh.flusher.set(None),
            Child::FanOut => sh.fanout.set(None),
            Child::Ingestor => sh.ingest.set(None),
            Child::Registry => sh.registry.set(None),
            Child::Manager => sh.manager.set(None),
        }
    }
}

impl Actor for CoordinatorSupervisor {
    type Msg = SupMsg;
    type State = SupState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut st = SupState {
            shared,
            children: Vec::new(),
            failures: Vec::new(),
        };
        for c in [
            Child::Flusher,
            Child::FanOut,
            Child::Ingestor,
            Child::Registry,
            Child::Manager,
        ] {
            Self::spawn(&myself, &mut st, c, true).await?;
        }
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let SupMsg::Restart(which) = msg;
        Self::spawn(&myself, st, which, false).await?;
        st.shared.restarted();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        ev: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason) = match ev {
            SupervisionEvent::ActorFailed(cell, err) => (cell, err.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "terminated".into()))
            }
            _ => return Ok(()),
        };
        let Some(pos) = st
            .children
            .iter()
            .position(|(_, c)| c.get_id() == cell.get_id())
        else {
            return Ok(());
        };
        let (which, _) = st.children.remove(pos);
        Self::slot_clear(&st.shared, which);
        match note_failure(&mut st.failures, 10) {
            RestartDecision::RestartAfterMs(ms) => {
                warn!(child = ?which, reason, backoff_ms = ms, "child failed; restarting");
                myself.send_after(Duration::from_millis(ms), move || SupMsg::Restart(which));
            }
            RestartDecision::GiveUp => {
                error!(
                    reason,
                    "children keep failing; coordinator supervisor stops"
                );
                myself.stop(Some("restart intensity exceeded".into()));
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (which, cell) in st.children.drain(..).rev() {
            Self::slot_clear(&st.shared, which);
            cell.stop(None);
        }
        let jobs: Vec<_> = st
            .shared
            .jobs
            .write()
            .expect("job dir")
            .drain()
            .map(|(_, a)| a)
            .collect();
        for j in jobs {
            j.stop(None);
        }
        Ok(())
    }
}
