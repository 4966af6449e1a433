//! The job manager: accepts jobs (idempotently, by client request id), answers get/list/cancel,
//! and supervises one [`JobActor`] per running job. A job actor that fails is restarted (with
//! backoff, per job) and rebuilds itself from storage; when a job finishes, its actor reports the
//! final record here and stops.

use crate::commit::Committer;
use crate::engine::status_of;
use crate::job::{JobActor, JobCtx};
use crate::msg::{JobInit, JobMsg, MgrMsg};
use overlord_core::job::{JobRecord, JobSpec, JobState, root_plan};
use overlord_core::sched::{RestartDecision, note_failure};
use overlord_core::{JobId, now_ms};
use overlord_proto::error::ApiError;
use overlord_proto::v1;
use overlord_storage::{Op, StoreError};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{error, info, warn};

/// Longest accepted client request id.
pub const MAX_REQUEST_ID: usize = 128;

/// What the manager uses: what its job actors use (it spawns them with it), and the restart
/// counter it bumps when it restarts one.
#[derive(Clone)]
pub struct ManagerCtx {
    pub job: JobCtx,
    pub restarts: Arc<AtomicU64>,
    /// Owner of the list queries it spawns.
    pub tasks: crate::slot::Tasks,
}

pub struct JobManagerActor;

pub struct MgrState {
    sh: ManagerCtx,
    c: Committer,
    running: BTreeMap<JobId, ActorRef<JobMsg>>,
    by_actor: HashMap<ActorId, JobId>,
    finished: BTreeMap<JobId, JobRecord>,
    specs: HashMap<JobId, Arc<JobSpec>>,
    next_job_id: JobId,
    requests: HashMap<String, JobId>,
    failures: HashMap<JobId, Vec<u64>>,
}

impl MgrState {
    async fn spawn_job(
        &mut self,
        myself: &ActorRef<MgrMsg>,
        id: JobId,
        init: JobInit,
    ) -> Result<(), ActorProcessingErr> {
        let (a, _) = Actor::spawn_linked(
            None,
            JobActor,
            (self.sh.job.clone(), init),
            myself.get_cell(),
        )
        .await?;
        self.by_actor.insert(a.get_id(), id);
        self.running.insert(id, a);
        Ok(())
    }

    fn finished_status(&self, id: JobId) -> Result<v1::JobStatus, ApiError> {
        let rec = self.finished.get(&id).ok_or(ApiError::JobNotFound(id))?;
        let spec = match self.specs.get(&id) {
            Some(s) => s.clone(),
            None => Arc::new(
                self.sh
                    .job
                    .store
                    .spec(id)
                    .map_err(|e| ApiError::Storage(e.to_string()))?
                    .ok_or(ApiError::JobNotFound(id))?,
            ),
        };
        Ok(status_of(rec, &spec, None))
    }

    fn get(&self, id: JobId, reply: RpcReplyPort<Result<v1::JobStatus, ApiError>>) {
        match self.running.get(&id) {
            Some(a) => {
                if let Err(e) = a.cast(JobMsg::Status(reply)) {
                    warn!(job_id = id, error = %e, "job actor unreachable");
                }
            }
            None => {
                let _ = reply.send(self.finished_status(id));
            }
        }
    }
}

impl Actor for JobManagerActor {
    type Msg = MgrMsg;
    type State = MgrState;
    /// (shared, fresh): `fresh` on coordinator start, false when the manager itself restarted.
    type Arguments = (ManagerCtx, bool);

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        (sh, fresh): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let t0 = std::time::Instant::now();
        // Job actors of a previous incarnation of this manager are replaced.
        let old = sh.job.jobs.drain();
        for a in old {
            a.stop(None);
        }
        let store = sh.job.store.clone();
        let mut st = MgrState {
            c: Committer::new(store.clone(), sh.job.counters.clone()),
            sh,
            running: BTreeMap::new(),
            by_actor: HashMap::new(),
            finished: BTreeMap::new(),
            specs: HashMap::new(),
            next_job_id: store.meta("next_job")?.unwrap_or(1),
            requests: store.requests()?.into_iter().collect(),
            failures: HashMap::new(),
        };
        let mut to_start = Vec::new();
        for rec in store.jobs()? {
            st.sh.job.durable.set(rec.id, rec.findings);
            st.next_job_id = st.next_job_id.max(rec.id + 1);
            if rec.state == JobState::Running {
                to_start.push(rec.id);
            } else {
                st.finished.insert(rec.id, rec);
            }
        }
        for id in &to_start {
            st.spawn_job(
                &myself,
                *id,
                JobInit::Recover {
                    id: *id,
                    keep_leases: fresh,
                },
            )
            .await?;
        }
        info!(
            running = to_start.len(),
            finished = st.finished.len(),
            ms = t0.elapsed().as_millis() as u64,
            "job manager started"
        );
        Ok(st)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MgrMsg::Submit(spec, request_id, reply) => {
                st.submit(&myself, *spec, request_id, reply).await?;
            }
            MgrMsg::Get(id, reply) => st.get(id, reply),
            MgrMsg::List(reply) => {
                let running: Vec<ActorRef<JobMsg>> = st.running.values().cloned().collect();
                let done: Vec<v1::JobStatus> = st
                    .finished
                    .keys()
                    .filter_map(|id| st.finished_status(*id).ok())
                    .collect();
                // Asking each job actor must not hold up the manager.
                st.sh.tasks.spawn(async move {
                    let mut all = done;
                    for a in running {
                        if let Ok(ractor::rpc::CallResult::Success(Ok(s))) =
                            a.call(JobMsg::Status, Some(Duration::from_secs(5))).await
                        {
                            all.push(s);
                        }
                    }
                    all.sort_unstable_by_key(|s| std::cmp::Reverse(s.job_id));
                    let _ = reply.send(all);
                });
            }
            MgrMsg::Cancel(id, reply) => match st.running.get(&id) {
                Some(a) => {
                    let _ = a.cast(JobMsg::Cancel(reply));
                }
                None => {
                    let _ = reply.send(st.finished_status(id));
                }
            },
            MgrMsg::Finished(id, rec, spec) => {
                if let Some(a) = st.running.remove(&id) {
                    // A message, not a signal: requests already queued at the actor are answered.
                    let _ = a.cast(JobMsg::Stop);
                }
                st.failures.remove(&id);
                st.specs.insert(id, spec);
                st.finished.insert(id, rec);
            }
            MgrMsg::Stale(id, n) => {
                if let Some(rec) = st.finished.get_mut(&id) {
                    rec.stale_rejected += n;
                    st.c.batch.push(Op::Job(rec.clone()));
                }
            }
            MgrMsg::Readopt => {
                for a in st.running.values() {
                    let _ = a.cast(JobMsg::Readopt);
                }
            }
            MgrMsg::RestartJob(id) => {
                if !st.running.contains_key(&id) && !st.finished.contains_key(&id) {
                    st.spawn_job(
                        &myself,
                        id,
                        JobInit::Recover {
                            id,
                            keep_leases: false,
                        },
                    )
                    .await?;
                    st.sh.restarts.fetch_add(1, Ordering::Relaxed);
                }
            }
            MgrMsg::Flushed(seq) => st.c.flushed(seq),
            MgrMsg::InjectPanic => match st.running.values().next() {
                Some(a) => {
                    let _ = a.cast(JobMsg::InjectPanic);
                }
                None => panic!("injected panic in the job manager (supervision test)"),
            },
        }
        st.c.end_turn(&st.sh.job.flusher, &myself, MgrMsg::Flushed)?;
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        ev: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match ev {
            SupervisionEvent::ActorFailed(cell, err) => (cell, Some(err.to_string())),
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            _ => return Ok(()),
        };
        let Some(id) = st.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        let Some(reason) = failure else {
            return Ok(()); // a finished job's actor stopped
        };
        if st
            .running
            .get(&id)
            .is_some_and(|a| a.get_id() == cell.get_id())
        {
            st.running.remove(&id);
        } else {
            return Ok(());
        }
        match note_failure(st.failures.entry(id).or_default(), 5, now_ms()) {
            RestartDecision::RestartAfterMs(ms) => {
                warn!(
                    job_id = id,
                    reason,
                    backoff_ms = ms,
                    "job actor failed; restarting"
                );
                myself.send_after(Duration::from_millis(ms), move || MgrMsg::RestartJob(id));
                Ok(())
            }
            RestartDecision::GiveUp => {
                error!(job_id = id, reason, "job actor keeps failing; escalating");
                Err(format!("job {id} actor keeps failing: {reason}").into())
            }
        }
    }
}

impl MgrState {
    async fn submit(
        &mut self,
        myself: &ActorRef<MgrMsg>,
        spec: JobSpec,
        request_id: Option<String>,
        reply: RpcReplyPort<Result<v1::JobStatus, ApiError>>,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(rid) = &request_id
            && let Some(&id) = self.requests.get(rid)
        {
            // A retry of a submission already accepted: the same job, once its record is durable.
            info!(job_id = id, request_id = %rid, "duplicate submission answered with its job");
            let me = myself.clone();
            self.c.defer(move || {
                let _ = me.cast(MgrMsg::Get(id, reply));
            });
            return Ok(());
        }
        let plan = match root_plan(&spec) {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(ApiError::Spec(e)));
                return Ok(());
            }
        };
        let id = self.next_job_id;
        self.next_job_id += 1;
        let rec = JobRecord::new(id, plan.total, rand::random::<u64>(), now_ms());
        self.c.batch.push(Op::Meta("next_job", self.next_job_id));
        self.c.batch.push(Op::Spec(id, Box::new(spec.clone())));
        self.c.batch.push(Op::Job(rec.clone()));
        if let Some(rid) = &request_id {
            self.c.batch.push(Op::Request(rid.clone(), id));
            self.requests.insert(rid.clone(), id);
        }
        // Applied before the job actor exists, so its later writes come after these.
        self.c
            .commit()
            .map_err(|e: StoreError| -> ActorProcessingErr { Box::new(e) })?;
        self.sh.job.durable.set(id, 0);
        info!(job_id = id, root_tasks = plan.total, module = %plan.module, "job submitted");
        let spec = Arc::new(spec);
        self.spawn_job(myself, id, JobInit::New { rec, spec, plan })
            .await?;
        // Answered once durable, with the status the job actor reports then (its first tasks
        // expanded). Routed through this actor so a job that already finished is answered from
        // the finished records.
        let me = myself.clone();
        self.c.defer(move || {
            let _ = me.cast(MgrMsg::Get(id, reply));
        });
        Ok(())
    }
}
