//! Stream fan-out of job events to WatchJob subscribers (the `FanOut` actor) and to the
//! process-wide broadcast. Events are published only after the flush
//! that made them durable, so a watcher that falls behind (or reconnects) can always replay the
//! gap from storage by cursor.

use overlord_core::JobId;
use overlord_core::job::FindingRecord;
use overlord_proto::v1;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub enum HubEvent {
    /// Shared: the fan-out queues the same record for every watcher of the job.
    Finding(Arc<FindingRecord>),
    Progress(JobId, v1::JobStatus),
    Finished(JobId, v1::JobStatus),
}

impl HubEvent {
    pub fn job_id(&self) -> JobId {
        match self {
            HubEvent::Finding(f) => f.job_id,
            HubEvent::Progress(j, _) | HubEvent::Finished(j, _) => *j,
        }
    }
}

/// Highest durable finding cursor per job (readers never see findings beyond it).
#[derive(Clone, Default)]
pub struct Durable(Arc<Mutex<HashMap<JobId, u64>>>);

impl Durable {
    pub fn set(&self, job: JobId, cursor: u64) {
        let mut m = self.0.lock().expect("durable lock");
        let e = m.entry(job).or_insert(0);
        *e = (*e).max(cursor);
    }
    pub fn get(&self, job: JobId) -> Option<u64> {
        self.0.lock().expect("durable lock").get(&job).copied()
    }
    /// Every job's durable cursor.
    pub fn snapshot(&self) -> Vec<(JobId, u64)> {
        let m = self.0.lock().expect("durable lock");
        m.iter().map(|(j, c)| (*j, *c)).collect()
    }
}

// ---------------- Stream fan-out actor ----------------

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{broadcast, mpsc};

/// Queue per watcher. A watcher that lets it fill up is dropped (its channel closes); it then
/// replays from storage by cursor and subscribes again, so a slow client costs bounded memory.
pub const WATCH_QUEUE: usize = 32;

pub enum FanMsg {
    /// Durable events of one job, in order (sent by its job actor after the flush).
    Publish(Vec<HubEvent>),
    /// Events of `job` from now on go to the sender; the reply says the subscription is active.
    Subscribe(JobId, mpsc::Sender<HubEvent>, RpcReplyPort<()>),
}

/// Routes each job's events to that job's watchers only, and every event to the process-wide
/// broadcast (the image indexer follows it).
pub struct FanOutActor;

pub struct FanOutState {
    subs: HashMap<JobId, Vec<mpsc::Sender<HubEvent>>>,
    global: broadcast::Sender<HubEvent>,
    subscribed: u64,
}

impl Actor for FanOutActor {
    type Msg = FanMsg;
    type State = FanOutState;
    type Arguments = broadcast::Sender<HubEvent>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        global: broadcast::Sender<HubEvent>,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(FanOutState {
            subs: HashMap::new(),
            global,
            subscribed: 0,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FanMsg::Subscribe(job, tx, reply) => {
                let v = st.subs.entry(job).or_default();
                v.retain(|s| !s.is_closed());
                v.push(tx);
                let _ = reply.send(());
                st.subscribed += 1;
                if st.subscribed % 256 == 0 {
                    // Watchers of jobs that publish nothing more (finished before they
                    // subscribed) are pruned here.
                    st.subs.retain(|_, v| {
                        v.retain(|s| !s.is_closed());
                        !v.is_empty()
                    });
                }
            }
            FanMsg::Publish(events) => {
                for ev in events {
                    let job = ev.job_id();
                    let last = matches!(ev, HubEvent::Finished(..));
                    if let Some(v) = st.subs.get_mut(&job) {
                        // try_send: a full queue drops that watcher (it replays from storage).
                        v.retain(|s| s.try_send(ev.clone()).is_ok());
                        if last || v.is_empty() {
                            st.subs.remove(&job);
                        }
                    }
                    let _ = st.global.send(ev);
                }
            }
        }
        Ok(())
    }
}
