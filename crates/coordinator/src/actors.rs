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
use crate::ingest::IngestorActor;
use crate::job::JobCtx;
use crate::manager::{JobManagerActor, ManagerCtx};
use crate::msg::{IngestMsg, JobMsg, MgrMsg, RegMsg};
use crate::registry::{RegistryActor, RegistryCtx};
use crate::slot::{JobDir, Slot, Tasks, TokenSource};
use overlord_core::sched::{RestartDecision, note_failure};
use overlord_storage::Store;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{error, warn};

/// The wiring of the tree, owned by the supervisor: it hands each child the typed handles that
/// child uses (see `RegistryCtx`, `JobCtx`, `ManagerCtx`), never this whole struct.
#[derive(Clone)]
pub struct Tree {
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
    pub jobs: JobDir<JobMsg>,
    pub tokens: TokenSource,
    pub restarts: Arc<AtomicU64>,
    pub counters: Arc<Counters>,
    /// The leak lookup the coordinator runs itself (`lookup`); None: `leak` tasks fail.
    pub lookup: Option<crate::lookup::LeakLookup>,
    pub tasks: Tasks,
}

impl Tree {
    pub fn new(
        store: Arc<dyn Store>,
        cfg: EngineConfig,
        hub: broadcast::Sender<HubEvent>,
        epoch: u64,
    ) -> Self {
        Tree {
            store,
            cfg,
            hub,
            durable: Durable::default(),
            flusher: Slot::default(),
            fanout: Slot::default(),
            ingest: Slot::default(),
            registry: Slot::default(),
            manager: Slot::default(),
            jobs: JobDir::default(),
            tokens: TokenSource::new(epoch),
            restarts: Arc::new(AtomicU64::new(0)),
            counters: Arc::default(),
            lookup: None,
            tasks: Tasks::default(),
        }
    }

    fn registry_ctx(&self) -> RegistryCtx {
        RegistryCtx {
            store: self.store.clone(),
            cfg: self.cfg.clone(),
            counters: self.counters.clone(),
            flusher: self.flusher.clone(),
            jobs: self.jobs.clone(),
            manager: self.manager.clone(),
        }
    }

    fn manager_ctx(&self) -> ManagerCtx {
        ManagerCtx {
            job: JobCtx {
                store: self.store.clone(),
                cfg: self.cfg.clone(),
                counters: self.counters.clone(),
                flusher: self.flusher.clone(),
                fanout: self.fanout.clone(),
                registry: self.registry.clone(),
                manager: self.manager.clone(),
                durable: self.durable.clone(),
                jobs: self.jobs.clone(),
                tokens: self.tokens.clone(),
                lookup: self.lookup.clone(),
            },
            restarts: self.restarts.clone(),
            tasks: self.tasks.clone(),
        }
    }

    /// What the gRPC layer uses.
    pub fn handles(&self) -> Handles {
        Handles {
            store: self.store.clone(),
            durable: self.durable.clone(),
            fanout: self.fanout.clone(),
            ingest: self.ingest.clone(),
            registry: self.registry.clone(),
            manager: self.manager.clone(),
            tasks: self.tasks.clone(),
        }
    }
}

/// The tree's entry points for the gRPC adapters (`api.rs`): they ask the manager, the registry
/// and the ingestor, follow the fan-out, and read storage.
#[derive(Clone)]
pub struct Handles {
    pub store: Arc<dyn Store>,
    pub durable: Durable,
    pub fanout: Slot<FanMsg>,
    pub ingest: Slot<IngestMsg>,
    pub registry: Slot<RegMsg>,
    pub manager: Slot<MgrMsg>,
    /// Owner of the tasks the gRPC layer spawns (sessions, watch streams).
    pub tasks: Tasks,
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
    tree: Tree,
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
        let sh = &st.tree;
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
                let (a, _) =
                    Actor::spawn_linked(None, IngestorActor, sh.registry.clone(), sup).await?;
                sh.ingest.set(Some(a.clone()));
                a.get_cell()
            }
            Child::Registry => {
                let (a, _) =
                    Actor::spawn_linked(None, RegistryActor, sh.registry_ctx(), sup).await?;
                sh.registry.set(Some(a.clone()));
                if !fresh && let Some(m) = sh.manager.get() {
                    // Job actors report their live leases to the new registry.
                    let _ = m.cast(MgrMsg::Readopt);
                }
                a.get_cell()
            }
            Child::Manager => {
                let (a, _) =
                    Actor::spawn_linked(None, JobManagerActor, (sh.manager_ctx(), fresh), sup)
                        .await?;
                sh.manager.set(Some(a.clone()));
                a.get_cell()
            }
        };
        st.children.retain(|(c, _)| *c != which);
        st.children.push((which, cell));
        Ok(())
    }

    fn slot_clear(sh: &Tree, which: Child) {
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
    type Arguments = Tree;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        tree: Tree,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut st = SupState {
            tree,
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
        st.tree.restarts.fetch_add(1, Ordering::Relaxed);
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
        Self::slot_clear(&st.tree, which);
        match note_failure(&mut st.failures, 10, overlord_core::now_ms()) {
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
            Self::slot_clear(&st.tree, which);
            cell.stop(None);
        }
        for j in st.tree.jobs.drain() {
            j.stop(None);
        }
        Ok(())
    }
}
