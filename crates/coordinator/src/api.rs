//! Thin gRPC adapters: validate and convert at the edge, then ask the Engine actor.

use crate::actors::{EngineHandle, EngineMsg};
use crate::engine::SessionTx;
use crate::hub::{Durable, HubEvent};
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
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_WATCHERS: usize = 1024;
const MAX_SUBMITS_IN_FLIGHT: usize = 64;

async fn ask<T: Send + 'static>(
    engine: &EngineHandle,
    f: impl FnOnce(ractor::RpcReplyPort<T>) -> EngineMsg,
) -> Result<T, ApiError> {
    let e = engine.get()?;
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
    pub engine: EngineHandle,
    pub store: Arc<dyn Store>,
    pub hub: broadcast::Sender<HubEvent>,
    pub durable: Durable,
    pub scope: Arc<Scope>,
    pub watchers: Arc<Semaphore>,
    pub submits: Arc<Semaphore>,
}

impl JobApi {
    pub fn new(
        engine: EngineHandle,
        store: Arc<dyn Store>,
        hub: broadcast::Sender<HubEvent>,
        durable: Durable,
        scope: Scope,
    ) -> Self {
        JobApi {
            engine,
            store,
            hub,
            durable,
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
        let spec = validate(req.into_inner().spec, self.scope.clone()).await?;
        let status = ask(&self.engine, |r| EngineMsg::Submit(Box::new(spec), r)).await??;
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
        let status = ask(&self.engine, |r| EngineMsg::Get(id, r)).await??;
        Ok(Response::new(v1::GetJobResponse {
            status: Some(status),
        }))
    }

    async fn list_jobs(
        &self,
        _req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let jobs = ask(&self.engine, EngineMsg::List).await?;
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        req: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let id = req.into_inner().job_id;
        let status = ask(&self.engine, |r| EngineMsg::Cancel(id, r)).await??;
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
        // Subscribe before reading the status so nothing falls between the two.
        let mut sub = self.hub.subscribe();
        let status = ask(&self.engine, |r| EngineMsg::Get(job_id, r)).await??;
        let (tx, rx) = mpsc::channel::<Result<v1::JobEvent, Status>>(256);
        let store = self.store.clone();
        let durable = self.durable.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut cursor = after_cursor;
            let send = |e: Event| {
                let tx = tx.clone();
                async move { tx.send(Ok(v1::JobEvent { event: Some(e) })).await.is_ok() }
            };
            // Replays stored findings after `cursor` up to the durable cursor.
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
            if !replay(&store, &durable, job_id, &mut cursor, &tx).await {
                return;
            }
            let done = status.state != v1::JobState::Running as i32;
            if done {
                let _ = send(Event::Finished(status)).await;
                return;
            }
            if !send(Event::Progress(status)).await {
                return;
            }
            loop {
                match sub.recv().await {
                    Ok(ev) if ev.job_id() != job_id => {}
                    Ok(HubEvent::Finding(f)) => {
                        if f.cursor <= cursor {
                            continue;
                        }
                        if f.cursor != cursor + 1
                            && !replay(&store, &durable, job_id, &mut cursor, &tx).await
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
                    Ok(HubEvent::Progress(_, st)) => {
                        if !send(Event::Progress(st)).await {
                            return;
                        }
                    }
                    Ok(HubEvent::Finished(_, st)) => {
                        if replay(&store, &durable, job_id, &mut cursor, &tx).await {
                            let _ = send(Event::Finished(st)).await;
                        }
                        return;
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        debug!(
                            job_id,
                            skipped = n,
                            "watcher lagged; replaying from storage"
                        );
                        if !replay(&store, &durable, job_id, &mut cursor, &tx).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx
                            .send(Err(Status::unavailable("coordinator shutting down")))
                            .await;
                        return;
                    }
                }
            }
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

#[derive(Clone)]
pub struct MinionApi {
    pub engine: EngineHandle,
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
        let generation = ask(&self.engine, |r| {
            EngineMsg::Register(Box::new(reg), txc, sid, r)
        })
        .await?;
        let engine = self.engine.get()?;
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
                        let _ = engine.cast(EngineMsg::Kick(
                            id.clone(),
                            generation,
                            format!("stream error: {}", e.message()),
                        ));
                        break;
                    }
                };
                let sent = match m.msg {
                    Some(MMsg::Heartbeat(_)) => {
                        engine.cast(EngineMsg::Heartbeat(id.clone(), generation))
                    }
                    Some(MMsg::Results(b)) => {
                        engine.cast(EngineMsg::Results(id.clone(), generation, b, tx.clone()))
                    }
                    Some(MMsg::Register(_)) | None => {
                        let _ = engine.cast(EngineMsg::Kick(
                            id.clone(),
                            generation,
                            "unexpected message after Register".into(),
                        ));
                        break;
                    }
                };
                if sent.is_err() {
                    // The engine was restarted: end the session; the minion reconnects.
                    let _ = tx.send(Err(Status::unavailable("job manager restarted; reconnect")));
                    break;
                }
            }
            let _ = engine.cast(EngineMsg::Disconnected(id, sid));
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}
