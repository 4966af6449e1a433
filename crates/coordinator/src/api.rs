//! Thin gRPC adapters: validate and convert at the edge, then ask the actors (job manager for
//! jobs, fan-out for watches, registry and ingestor for minion sessions).

use crate::actors::Shared;
use crate::engine::SessionTx;
use crate::hub::{Durable, FanMsg, HubEvent, WATCH_QUEUE};
use crate::ingest::IngestMsg;
use crate::manager::{MAX_REQUEST_ID, MgrMsg};
use crate::registry::RegMsg;
use overlord_core::job::{JobSpec, prepare};
use overlord_core::scope::Scope;
use overlord_proto::convert;
use overlord_proto::error::ApiError;
use overlord_proto::v1::{self, job_event::Event, minion_message::Msg as MMsg};
use overlord_storage::Store;
use std::net::{IpAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_WATCHERS: usize = 1024;
const MAX_SUBMITS_IN_FLIGHT: usize = 64;

async fn ask<T: Send + 'static>(
    sh: &Shared,
    f: impl FnOnce(ractor::RpcReplyPort<T>) -> MgrMsg,
) -> Result<T, ApiError> {
    let e = sh
        .manager
        .get()
        .ok_or_else(|| ApiError::Unavailable("job manager restarting".into()))?;
    match e.call(f, Some(CALL_TIMEOUT)).await {
        Ok(ractor::rpc::CallResult::Success(v)) => Ok(v),
        Ok(_) => Err(ApiError::Unavailable(
            "job manager did not answer in time".into(),
        )),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

#[derive(Clone)]
pub struct JobApi {
    pub shared: Shared,
    pub store: Arc<dyn Store>,
    pub durable: Durable,
    pub scope: Arc<Scope>,
    pub watchers: Arc<Semaphore>,
    pub submits: Arc<Semaphore>,
}

impl JobApi {
    pub fn new(shared: Shared, scope: Scope) -> Self {
        JobApi {
            store: shared.store.clone(),
            durable: shared.durable.clone(),
            shared,
            scope: Arc::new(scope),
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            submits: Arc::new(Semaphore::new(MAX_SUBMITS_IN_FLIGHT)),
        }
    }
}

fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    (host, 0u16)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .map_err(|e| e.to_string())
}

/// Validates a wire spec into a domain spec (host names resolved once, here).
pub async fn validate(spec: Option<v1::JobSpec>, scope: Arc<Scope>) -> Result<JobSpec, ApiError> {
    let raw =
        convert::raw_spec(spec.ok_or_else(|| ApiError::InvalidArgument("missing spec".into()))?);
    tokio::task::spawn_blocking(move || prepare(&raw, &scope, &resolve))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(ApiError::Spec)
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobApi {
    async fn submit_job(
        &self,
        req: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let _permit = self
            .submits
            .try_acquire()
            .map_err(|_| ApiError::Exhausted("submissions"))?;
        let req = req.into_inner();
        if req.request_id.len() > MAX_REQUEST_ID {
            return Err(ApiError::InvalidArgument(format!(
                "request_id is {} chars; at most {MAX_REQUEST_ID}",
                req.request_id.len()
            ))
            .into());
        }
        let rid = (!req.request_id.is_empty()).then_some(req.request_id);
        let spec = validate(req.spec, self.scope.clone()).await?;
        let status = ask(&self.shared, |r| MgrMsg::Submit(Box::new(spec), rid, r)).await??;
        Ok(Response::new(v1::SubmitJobResponse {
            job_id: status.job_id,
            status: Some(status),
        }))
    }

    async fn get_job(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let id = req.into_inner().job_id;
        let status = ask(&self.shared, |r| MgrMsg::Get(id, r)).await??;
        Ok(Response::new(v1::GetJobResponse {
            status: Some(status),
        }))
    }

    async fn list_jobs(
        &self,
        _req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let jobs = ask(&self.shared, MgrMsg::List).await?;
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        req: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let id = req.into_inner().job_id;
        let status = ask(&self.shared, |r| MgrMsg::Cancel(id, r)).await??;
        Ok(Response::new(v1::CancelJobResponse {
            status: Some(status),
        }))
    }

    type WatchJobStream = EventStream;

    async fn watch_job(
        &self,
        req: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let permit = self
            .watchers
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Exhausted("watchers"))?;
        let v1::WatchJobRequest {
            job_id,
            after_cursor,
        } = req.into_inner();
        // Fails fast for an unknown job.
        ask(&self.shared, |r| MgrMsg::Get(job_id, r)).await??;
        let (tx, rx) = mpsc::channel::<Result<v1::JobEvent, Status>>(256);
        let sh = self.shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            watch_loop(sh, job_id, after_cursor, tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_results(
        &self,
        req: Request<v1::ListResultsRequest>,
    ) -> Result<Response<v1::ListResultsResponse>, Status> {
        let r = req.into_inner();
        let limit = if r.limit == 0 {
            1000
        } else {
            r.limit.min(10_000)
        } as usize;
        let upto = match self.durable.get(r.job_id) {
            Some(u) => u,
            None => return Err(ApiError::JobNotFound(r.job_id).into()),
        };
        let page = self
            .store
            .findings(r.job_id, r.after_cursor, limit)
            .map_err(|e| ApiError::Storage(e.to_string()))?;
        let findings: Vec<v1::Finding> = page
            .iter()
            .filter(|f| f.cursor <= upto)
            .map(convert::finding)
            .collect();
        let next_cursor = if findings.len() == limit {
            findings.last().map(|f| f.cursor).unwrap_or(0)
        } else {
            0
        };
        Ok(Response::new(v1::ListResultsResponse {
            findings,
            next_cursor,
        }))
    }
}

/// Replays stored findings after `cursor` up to the durable cursor.
async fn replay(
    store: &Arc<dyn Store>,
    durable: &Durable,
    job: u64,
    cursor: &mut u64,
    tx: &mpsc::Sender<Result<v1::JobEvent, Status>>,
) -> bool {
    let upto = durable.get(job).unwrap_or(0);
    while *cursor < upto {
        let page = match store.findings(job, *cursor, 1000) {
            Ok(p) => p,
            Err(e) => {
                let _ = tx.send(Err(ApiError::Storage(e.to_string()).into())).await;
                return false;
            }
        };
        if page.is_empty() {
            break;
        }
        for f in page {
            if f.cursor > upto {
                return true;
            }
            *cursor = f.cursor;
            if tx
                .send(Ok(v1::JobEvent {
                    event: Some(Event::Finding(convert::finding(&f))),
                }))
                .await
                .is_err()
            {
                return false;
            }
        }
    }
    true
}

/// One watcher: subscribe at the fan-out, read the status, replay the gap from storage, then
/// follow live events. When the fan-out drops the subscription (this watcher fell a whole queue
/// behind, or the fan-out restarted) it starts over from its cursor: nothing missed, nothing twice,
/// and memory per watcher stays bounded.
async fn watch_loop(
    sh: Shared,
    job_id: u64,
    mut cursor: u64,
    tx: mpsc::Sender<Result<v1::JobEvent, Status>>,
) {
    let send = |e: Event| {
        let tx = tx.clone();
        async move { tx.send(Ok(v1::JobEvent { event: Some(e) })).await.is_ok() }
    };
    let mut first = true;
    loop {
        if tx.is_closed() {
            return;
        }
        let (etx, mut erx) = mpsc::channel::<HubEvent>(WATCH_QUEUE);
        let subscribed = match sh.fanout.get() {
            Some(f) => matches!(
                f.call(|r| FanMsg::Subscribe(job_id, etx, r), Some(CALL_TIMEOUT))
                    .await,
                Ok(ractor::rpc::CallResult::Success(()))
            ),
            None => false,
        };
        if !subscribed {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let status = match ask(&sh, |r| MgrMsg::Get(job_id, r)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) | Err(e) => {
                if matches!(e, ApiError::Unavailable(_)) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if !replay(&sh.store, &sh.durable, job_id, &mut cursor, &tx).await {
            return;
        }
        if status.state != v1::JobState::Running as i32 {
            let _ = send(Event::Finished(status)).await;
            return;
        }
        if first {
            first = false;
            if !send(Event::Progress(status)).await {
                return;
            }
        }
        loop {
            match erx.recv().await {
                Some(HubEvent::Finding(f)) => {
                    if f.cursor <= cursor {
                        continue;
                    }
                    if f.cursor != cursor + 1
                        && !replay(&sh.store, &sh.durable, job_id, &mut cursor, &tx).await
                    {
                        return;
                    }
                    if f.cursor == cursor + 1 {
                        cursor = f.cursor;
                        if !send(Event::Finding(convert::finding(&f))).await {
                            return;
                        }
                    }
                }
                Some(HubEvent::Progress(_, st)) => {
                    if !send(Event::Progress(st)).await {
                        return;
                    }
                }
                Some(HubEvent::Finished(_, st)) => {
                    if replay(&sh.store, &sh.durable, job_id, &mut cursor, &tx).await {
                        let _ = send(Event::Finished(st)).await;
                    }
                    return;
                }
                None => {
                    debug!(
                        job_id,
                        cursor, "watch subscription dropped; replaying from storage"
                    );
                    break;
                }
            }
        }
    }
}

#[derive(Clone)]
pub struct MinionApi {
    pub shared: Shared,
    pub sessions: Arc<AtomicU64>,
}

fn check_register(r: &v1::Register) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::Protocol(m));
    if r.minion_id.is_empty() || r.minion_id.len() > 128 {
        return bad("minion_id must be 1-128 chars".into());
    }
    if r.provider.is_empty() || r.provider.len() > 128 {
        return bad("provider must be 1-128 chars".into());
    }
    if r.capacity == 0 || r.capacity > 100_000 {
        return bad(format!("capacity {} must be within 1..=100000", r.capacity));
    }
    if r.modules.len() > 64 || r.capabilities.len() > 64 {
        return bad("too many modules/capabilities".into());
    }
    Ok(())
}

#[tonic::async_trait]
impl v1::minion_service_server::MinionService for MinionApi {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<tonic::Streaming<v1::MinionMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register within 10s"))??;
        let reg = match first {
            Some(v1::MinionMessage {
                msg: Some(MMsg::Register(r)),
            }) => r,
            _ => {
                return Err(ApiError::Protocol(
                    "the first message of a session must be Register".into(),
                )
                .into());
            }
        };
        check_register(&reg)?;
        let id = reg.minion_id.clone();
        let sid = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let txc: SessionTx = tx.clone();
        let unavailable = || Status::unavailable("scheduler restarting; reconnect");
        let registry = self.shared.registry.get().ok_or_else(unavailable)?;
        let ingest = self.shared.ingest.get().ok_or_else(unavailable)?;
        let generation = match registry
            .call(
                |r| RegMsg::Register(Box::new(reg), txc, sid, r),
                Some(CALL_TIMEOUT),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(g)) => g,
            _ => return Err(unavailable()),
        };
        tokio::spawn(async move {
            loop {
                let m = match inbound.message().await {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) if e.code() == tonic::Code::Unknown => {
                        // The connection dropped (minion killed, network): a plain disconnect.
                        debug!(minion = %id, error = %e.message(), "minion stream ended");
                        break;
                    }
                    Err(e) => {
                        // Oversized or undecodable messages end up here: close only this session.
                        warn!(minion = %id, error = %e, "minion stream error");
                        let _ = registry.cast(RegMsg::Kick(
                            id.clone(),
                            generation,
                            format!("stream error: {}", e.message()),
                        ));
                        break;
                    }
                };
                let sent = match m.msg {
                    Some(MMsg::Heartbeat(_)) => registry
                        .cast(RegMsg::Heartbeat(id.clone(), generation))
                        .map_err(|_| ()),
                    Some(MMsg::Results(b)) => ingest
                        .cast(IngestMsg::Results(id.clone(), generation, b, tx.clone()))
                        .map_err(|_| ()),
                    Some(MMsg::Register(_)) | None => {
                        let _ = registry.cast(RegMsg::Kick(
                            id.clone(),
                            generation,
                            "unexpected message after Register".into(),
                        ));
                        break;
                    }
                };
                if sent.is_err() {
                    // The registry or ingestor was restarted: end the session; the minion
                    // reconnects and re-sends what was not acknowledged.
                    let _ = tx.send(Err(Status::unavailable("scheduler restarted; reconnect")));
                    break;
                }
            }
            let _ = registry.cast(RegMsg::Disconnected(id, sid));
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}
