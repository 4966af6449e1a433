//! The ractor supervision tree:
//!
//! ```text
//! CoordinatorSupervisor      restart policy: core::sched::restart_decision
//! ├── Engine                 job manager + scheduler + registry + result ingestion (state in engine.rs)
//! └── Flusher                group commit: one sled flush covers every write before it
//! ```
//! A child that fails (panics) is restarted by the supervisor with backoff; a restarted Engine
//! recovers its whole state from storage, and minions re-register on new sessions.

use crate::engine::{Engine, EngineConfig, SessionTx};
use crate::hub::{Durable, HubEvent};
use overlord_core::JobId;
use overlord_core::job::JobSpec;
use overlord_core::sched::{RestartDecision, restart_decision};
use overlord_proto::error::ApiError;
use overlord_proto::v1;
use overlord_storage::Store;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::broadcast;
use tracing::{error, warn};

pub enum EngineMsg {
    Submit(Box<JobSpec>, RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    Get(JobId, RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    List(RpcReplyPort<Vec<v1::JobStatus>>),
    Cancel(JobId, RpcReplyPort<Result<v1::JobStatus, ApiError>>),
    Register(Box<v1::Register>, SessionTx, u64, RpcReplyPort<u64>),
    Heartbeat(String, u64),
    Results(String, u64, v1::ResultBatch, SessionTx),
    Kick(String, u64, String),
    Disconnected(String, u64),
    Tick,
    Flushed(u64),
    FlusherRestarted,
    Stats(RpcReplyPort<crate::engine::Stats>),
    /// Applies the pending write batch and answers its epoch (the flush that follows covers it).
    WriteEpoch(RpcReplyPort<u64>),
    /// Test hook: panics inside the handler (supervision test).
    InjectPanic,
}

/// Where the current Engine lives (it changes when the supervisor restarts it).
#[derive(Clone, Default)]
pub struct EngineHandle(Arc<RwLock<Option<ActorRef<EngineMsg>>>>);

impl EngineHandle {
    pub fn get(&self) -> Result<ActorRef<EngineMsg>, ApiError> {
        self.0
            .read()
            .expect("handle lock")
            .clone()
            .ok_or_else(|| ApiError::Unavailable("job manager restarting".into()))
    }
    fn set(&self, r: Option<ActorRef<EngineMsg>>) {
        *self.0.write().expect("handle lock") = r;
    }
}

#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub cfg: EngineConfig,
    pub hub: broadcast::Sender<HubEvent>,
    pub durable: Durable,
    pub engine: EngineHandle,
    pub flusher: Arc<RwLock<Option<ActorRef<FlushMsg>>>>,
    pub restarts: Arc<std::sync::atomic::AtomicU64>,
}

// ---------------- Engine ----------------

pub struct EngineActor;

pub struct EngineState {
    eng: Engine,
    flush_in_flight: bool,
    shared: Shared,
}

impl EngineState {
    fn after(&mut self, myself: &ActorRef<EngineMsg>) -> Result<(), ActorProcessingErr> {
        if self.eng.commit()? {
            self.request_flush(myself);
        }
        Ok(())
    }

    fn request_flush(&mut self, myself: &ActorRef<EngineMsg>) {
        if self.flush_in_flight || !self.eng.has_unreleased() {
            return;
        }
        let flusher = self.shared.flusher.read().expect("lock").clone();
        if let Some(f) = flusher
            && f.cast(FlushMsg::Flush(self.eng.write_epoch(), myself.clone()))
                .is_ok()
        {
            self.flush_in_flight = true;
        }
    }
}

impl Actor for EngineActor {
    type Msg = EngineMsg;
    type State = EngineState;
    type Arguments = Shared;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        shared: Shared,
    ) -> Result<Self::State, ActorProcessingErr> {
        let eng = Engine::recover(
            shared.store.clone(),
            shared.cfg.clone(),
            shared.hub.clone(),
            shared.durable.clone(),
        )?;
        let every = Duration::from_millis((shared.cfg.heartbeat_interval_ms / 2).clamp(10, 100));
        myself.send_interval(every, || EngineMsg::Tick);
        Ok(EngineState {
            eng,
            flush_in_flight: false,
            shared,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            EngineMsg::Submit(spec, reply) => {
                st.eng.submit(*spec, reply);
                st.eng.schedule();
            }
            EngineMsg::Get(id, reply) => {
                let _ = reply.send(st.eng.status(id));
            }
            EngineMsg::List(reply) => {
                let _ = reply.send(st.eng.list());
            }
            EngineMsg::Cancel(id, reply) => st.eng.cancel(id, reply),
            EngineMsg::Register(reg, tx, sid, reply) => {
                let g = st.eng.register(*reg, tx, sid);
                let _ = reply.send(g);
                st.eng.schedule();
            }
            EngineMsg::Heartbeat(id, g) => st.eng.heartbeat(&id, g),
            EngineMsg::Results(id, g, batch, tx) => {
                st.eng.results(&id, g, batch, tx);
                st.eng.schedule();
            }
            EngineMsg::Kick(id, g, reason) => st.eng.kick(&id, g, &reason),
            EngineMsg::Disconnected(id, sid) => st.eng.disconnected(&id, sid),
            EngineMsg::Tick => st.eng.tick(),
            EngineMsg::Flushed(epoch) => {
                st.flush_in_flight = false;
                st.eng.flushed(epoch);
            }
            EngineMsg::FlusherRestarted => st.flush_in_flight = false,
            EngineMsg::WriteEpoch(reply) => {
                let e = st.eng.apply_pending()?;
                let _ = reply.send(e);
            }
            EngineMsg::Stats(reply) => {
                let _ = reply.send(st.eng.stats.clone());
            }
            EngineMsg::InjectPanic => panic!("injected panic (supervision test)"),
        }
        st.after(&myself)?;
        st.request_flush(&myself);
        Ok(())
    }
}

// ---------------- Flusher ----------------

pub enum FlushMsg {
    Flush(u64, ActorRef<EngineMsg>),
}

pub struct FlusherActor;

/// Minimum spacing of flushes: writes arriving meanwhile share the next flush (group commit).
/// Bounds the extra acknowledgement latency.
pub const FLUSH_WINDOW: Duration = Duration::from_millis(5);

pub struct FlusherState {
    store: Arc<dyn Store>,
    last: std::time::Instant,
}

impl Actor for FlusherActor {
    type Msg = FlushMsg;
    type State = FlusherState;
    type Arguments = Arc<dyn Store>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        store: Arc<dyn Store>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(FlusherState {
            store,
            last: std::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let FlushMsg::Flush(_requested, engine) = msg;
        let since = st.last.elapsed();
        if since < FLUSH_WINDOW {
            tokio::time::sleep(FLUSH_WINDOW - since).await;
        }
        // The engine applies everything it has pending and tells us its epoch; the flush below
        // covers it.
        let epoch = match engine
            .call(EngineMsg::WriteEpoch, Some(Duration::from_secs(30)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(e)) => e,
            _ => {
                warn!("engine did not report its write epoch; skipping flush round");
                let _ = engine.cast(EngineMsg::FlusherRestarted);
                return Ok(());
            }
        };
        let s = st.store.clone();
        // sled's flush blocks on fsync: keep it off the async workers.
        tokio::task::spawn_blocking(move || s.flush()).await??;
        st.last = std::time::Instant::now();
        let _ = engine.cast(EngineMsg::Flushed(epoch));
        Ok(())
    }
}

// ---------------- Supervisor ----------------

pub struct CoordinatorSupervisor;

pub enum SupMsg {
    RestartEngine,
    RestartFlusher,
}

pub struct SupState {
    shared: Shared,
    engine: Option<ActorRef<EngineMsg>>,
    flusher: Option<ActorRef<FlushMsg>>,
    failures: Vec<u64>,
}

impl CoordinatorSupervisor {
    async fn spawn_engine(
        myself: &ActorRef<SupMsg>,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let (e, _) =
            Actor::spawn_linked(None, EngineActor, st.shared.clone(), myself.get_cell()).await?;
        st.shared.engine.set(Some(e.clone()));
        st.engine = Some(e);
        Ok(())
    }
    async fn spawn_flusher(
        myself: &ActorRef<SupMsg>,
        st: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let (f, _) = Actor::spawn_linked(
            None,
            FlusherActor,
            st.shared.store.clone(),
            myself.get_cell(),
        )
        .await?;
        *st.shared.flusher.write().expect("lock") = Some(f.clone());
        st.flusher = Some(f);
        Ok(())
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
            engine: None,
            flusher: None,
            failures: Vec::new(),
        };
        Self::spawn_flusher(&myself, &mut st).await?;
        Self::spawn_engine(&myself, &mut st).await?;
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::RestartEngine => {
                Self::spawn_engine(&myself, st).await?;
                st.shared
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            SupMsg::RestartFlusher => {
                Self::spawn_flusher(&myself, st).await?;
                if let Some(e) = &st.engine {
                    let _ = e.cast(EngineMsg::FlusherRestarted);
                }
                st.shared
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
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
        let is_engine = st
            .engine
            .as_ref()
            .map(|e| e.get_id() == cell.get_id())
            .unwrap_or(false);
        let is_flusher = st
            .flusher
            .as_ref()
            .map(|f| f.get_id() == cell.get_id())
            .unwrap_or(false);
        if !is_engine && !is_flusher {
            return Ok(());
        }
        let now = overlord_core::now_ms();
        st.failures.push(now);
        st.failures.retain(|t| now - *t <= 60_000);
        match restart_decision(&st.failures, now, 10, 60_000) {
            RestartDecision::RestartAfterMs(ms) => {
                warn!(
                    child = if is_engine { "engine" } else { "flusher" },
                    reason,
                    backoff_ms = ms,
                    "child failed; restarting"
                );
                let msg = if is_engine {
                    st.shared.engine.set(None);
                    st.engine = None;
                    SupMsg::RestartEngine
                } else {
                    *st.shared.flusher.write().expect("lock") = None;
                    st.flusher = None;
                    SupMsg::RestartFlusher
                };
                myself.send_after(Duration::from_millis(ms), move || msg);
            }
            RestartDecision::GiveUp => {
                error!(
                    reason,
                    "children keep failing; coordinator supervisor stops"
                );
                st.shared.engine.set(None);
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
        st.shared.engine.set(None);
        if let Some(e) = st.engine.take() {
            e.stop(None);
        }
        if let Some(f) = st.flusher.take() {
            f.stop(None);
        }
        Ok(())
    }
}
