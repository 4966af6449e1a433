//! Thin gRPC adapters: validate and convert at the edge, then ask the actors (job manager for
//! jobs, fan-out for watches, registry and ingestor for minion sessions).

use crate::actors::Handles;
use crate::engine::SessionTx;
use crate::hub::{Durable, FanMsg, HubEvent, WATCH_QUEUE};
use crate::manager::MAX_REQUEST_ID;
use crate::msg::{IngestMsg, MgrMsg, RegMsg};
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
use tonic::codegen::http;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::security::sessions::Gate;
use crate::security::tokens::{Principal, principal};
use overlord_core::security::may_access;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent WatchJob streams per coordinator, and per client address.
const MAX_WATCHERS: usize = 1024;
const MAX_WATCHERS_PER_CLIENT: usize = 256;
/// SubmitJob calls in flight at once (host names are resolved during validation), in all and per
/// client address: one flooding address holds at most a quarter of the slots, so other clients
/// still get through (a flood from 4+ addresses is bounded by the global cap only).
pub const MAX_SUBMITS_IN_FLIGHT: usize = 64;
pub const MAX_SUBMITS_PER_CLIENT: usize = 16;
/// Largest JobService request message (a job spec; a lying length prefix is refused before any
/// allocation with `ResourceExhausted`, see [`SizeLimited`]).
pub const MAX_JOB_REQUEST_BYTES: usize = 1 << 20;
/// Entries in a job's target list (each may be a host name resolved at submission; use CIDRs for
/// large ranges).
pub const MAX_SUBMIT_TARGETS: usize = 10_000;
/// Modules named by one job.
pub const MAX_SUBMIT_MODULES: usize = 32;
/// Events queued per watch stream before the sender waits for the client, and findings read per
/// storage page on replay: with the fan-out's per-watcher queue (`hub::WATCH_QUEUE`) they bound
/// what one slow watcher holds.
const STREAM_QUEUE: usize = 16;
const REPLAY_PAGE: usize = 32;

async fn ask<T: Send + 'static>(
    sh: &Handles,
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
    pub shared: Handles,
    pub store: Arc<dyn Store>,
    pub durable: Durable,
    pub scope: Arc<Scope>,
    pub watchers: Arc<Semaphore>,
    pub watchers_by_client: SlotsByClient,
    pub submits: Arc<Semaphore>,
    pub submits_by_client: SlotsByClient,
    /// The firehose's progress (GetJob/ListJobs fill `JobStatus.firehose`); None when it is off.
    pub firehose: Option<crate::firehose::FirehoseStatus>,
    /// Per-owner caps (only with API tokens: without, every caller is the same anonymous owner).
    pub watchers_by_owner: SlotsByClient<String>,
    pub submits_by_owner: SlotsByClient<String>,
    pub limits: crate::config::LimitsConfig,
    /// Where uploaded hitlists are kept (`<data_dir>/hitlists`).
    pub hitlist_dir: std::path::PathBuf,
    /// Job owners already read from storage (a job's owner never changes).
    owners: Arc<std::sync::Mutex<std::collections::HashMap<u64, String>>>,
}

/// Calls (live watch streams, submissions in flight) per client IP address (or per owner).
#[derive(Clone, Debug)]
pub struct SlotsByClient<K = IpAddr>(Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>);

impl<K> Default for SlotsByClient<K> {
    fn default() -> Self {
        SlotsByClient(Arc::default())
    }
}

/// One call counted against its client address (or owner); released on drop.
#[derive(Debug)]
pub struct ClientSlot<K: std::hash::Hash + Eq + Clone = IpAddr>(SlotsByClient<K>, Option<K>);

impl<K: std::hash::Hash + Eq + Clone> SlotsByClient<K> {
    /// Takes a slot for `client` (None: address unknown, not counted) unless it holds `max`.
    pub fn acquire(&self, client: Option<K>, max: usize) -> Option<ClientSlot<K>> {
        if let Some(ip) = client.clone() {
            let mut m = self.0.lock().expect("watchers lock");
            let n = m.entry(ip).or_insert(0);
            if *n >= max {
                return None;
            }
            *n += 1;
        }
        Some(ClientSlot(self.clone(), client))
    }

    pub fn count(&self, client: K) -> usize {
        self.0
            .lock()
            .expect("watchers lock")
            .get(&client)
            .copied()
            .unwrap_or(0)
    }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for ClientSlot<K> {
    fn drop(&mut self) {
        if let Some(ip) = self.1.take() {
            let mut m = (self.0).0.lock().expect("watchers lock");
            if let Some(n) = m.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&ip);
                }
            }
        }
    }
}

impl JobApi {
    pub fn new(shared: Handles, scope: Scope) -> Self {
        JobApi {
            store: shared.store.clone(),
            durable: shared.durable.clone(),
            shared,
            scope: Arc::new(scope),
            watchers: Arc::new(Semaphore::new(MAX_WATCHERS)),
            watchers_by_client: SlotsByClient::default(),
            submits: Arc::new(Semaphore::new(MAX_SUBMITS_IN_FLIGHT)),
            submits_by_client: SlotsByClient::default(),
            firehose: None,
            watchers_by_owner: SlotsByClient::default(),
            submits_by_owner: SlotsByClient::default(),
            limits: Default::default(),
            owners: Default::default(),
            hitlist_dir: std::env::temp_dir().join("overlord-hitlists"),
        }
    }

    pub fn with_limits(mut self, l: &crate::config::LimitsConfig) -> Self {
        self.limits = l.clone();
        self
    }

    pub fn with_hitlist_dir(mut self, dir: std::path::PathBuf) -> Self {
        self.hitlist_dir = dir;
        self
    }

    /// A job's owner (from its stored spec).
    fn owner_of(&self, job: u64) -> Result<String, ApiError> {
        if let Some(o) = self.owners.lock().expect("owners").get(&job) {
            return Ok(o.clone());
        }
        let spec = self
            .store
            .spec(job)
            .map_err(|e| ApiError::Storage(e.to_string()))?
            .ok_or(ApiError::JobNotFound(job))?;
        self.owners
            .lock()
            .expect("owners")
            .insert(job, spec.owner.clone());
        Ok(spec.owner)
    }

    /// The caller may see job `job`; another owner's job is "not found" (its existence is not
    /// revealed).
    fn check_access(&self, who: &Principal, job: u64) -> Result<(), ApiError> {
        if who.role == overlord_core::security::Role::Admin {
            return Ok(());
        }
        let owner = self.owner_of(job)?;
        if may_access(who.role, &who.owner, &owner) {
            Ok(())
        } else {
            Err(ApiError::JobNotFound(job))
        }
    }

    /// The per-owner slot key: only when tokens identify owners.
    fn owner_key(&self, who: &Principal) -> Option<String> {
        (who.name != "anonymous").then(|| who.owner.clone())
    }
}

/// A call's slots: one of its client address's (at most `per_client`; an unknown address is not
/// counted), then one of the coordinator's `global` ones. The address's first, so a call refused
/// there takes no global slot. Both are released when the returned guard drops (the call ended).
/// `refused`: what the error names, per address and in all.
fn take_slots(
    global: &Arc<Semaphore>,
    by_client: &SlotsByClient,
    client: Option<IpAddr>,
    per_client: usize,
    refused: [&'static str; 2],
) -> Result<(ClientSlot, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let slot = by_client
        .acquire(client, per_client)
        .ok_or(ApiError::Exhausted(refused[0]))?;
    let permit = global
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Exhausted(refused[1]))?;
    Ok((slot, permit))
}

/// Takes a submission slot for `client`: its address's (at most [`MAX_SUBMITS_PER_CLIENT`]), then
/// one of the coordinator's [`MAX_SUBMITS_IN_FLIGHT`].
pub fn submit_slot(
    global: &Arc<Semaphore>,
    by_client: &SlotsByClient,
    client: Option<IpAddr>,
) -> Result<(ClientSlot, tokio::sync::OwnedSemaphorePermit), ApiError> {
    take_slots(
        global,
        by_client,
        client,
        MAX_SUBMITS_PER_CLIENT,
        [
            "submissions from this client address (max 16 in flight per address)",
            "submissions (max 64 in flight)",
        ],
    )
}

fn resolve(host: &str) -> Result<Vec<IpAddr>, String> {
    (host, 0u16)
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .map_err(|e| e.to_string())
}

/// Validates a wire spec into a domain spec (host names resolved once, here; a hitlist id looked
/// up in `hitlist_dir`).
pub async fn validate(
    spec: Option<v1::JobSpec>,
    scope: Arc<Scope>,
    hitlist_dir: &std::path::Path,
) -> Result<JobSpec, ApiError> {
    let spec = spec.ok_or_else(|| ApiError::InvalidArgument("missing spec".into()))?;
    let hitlist = if spec.hitlist.is_empty() {
        None
    } else {
        let h = overlord_core::hitlist::Hitlist::open(hitlist_dir, &spec.hitlist)
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        Some(h.reference(hitlist_dir, &spec.hitlist))
    };
    let mut raw = convert::raw_spec(spec);
    raw.hitlist = hitlist;
    if raw.targets.len() > MAX_SUBMIT_TARGETS {
        return Err(ApiError::InvalidArgument(format!(
            "too many targets: {} entries (max {MAX_SUBMIT_TARGETS}); give ranges as CIDRs or split the job",
            raw.targets.len()
        )));
    }
    if raw.modules.len() > MAX_SUBMIT_MODULES {
        return Err(ApiError::InvalidArgument(format!(
            "too many modules: {} (max {MAX_SUBMIT_MODULES})",
            raw.modules.len()
        )));
    }
    tokio::task::spawn_blocking(move || prepare(&raw, &scope, &resolve))
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .map_err(ApiError::Spec)
}

/// Fills `waiting_for_modules` of running jobs: modules they have pending tasks for that no live
/// minion declares (asked of the registry, which knows both; left empty if it does not answer).
async fn note_waiting(sh: &Handles, job: Option<u64>, statuses: &mut [v1::JobStatus]) {
    if !statuses
        .iter()
        .any(|s| s.state == v1::JobState::Running as i32)
    {
        return;
    }
    let Some(reg) = sh.registry.get() else { return };
    let Ok(ractor::rpc::CallResult::Success(unserved)) = reg
        .call(|r| RegMsg::Unserved(job, r), Some(Duration::from_secs(2)))
        .await
    else {
        return;
    };
    for (id, modules) in unserved {
        if let Some(st) = statuses
            .iter_mut()
            .find(|s| s.job_id == id && s.state == v1::JobState::Running as i32)
        {
            st.waiting_for_modules = modules;
        }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<v1::JobEvent, Status>> + Send>>;

/// A fresh hitlist id (time, process and a counter, hashed: unique per coordinator, hex).
fn hitlist_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// Builds a hitlist from chunks of text as they arrive (lines split across chunks are joined;
/// a line longer than the limit is refused without being buffered whole). Blocking.
fn build_hitlist(
    mut chunks: mpsc::Receiver<Vec<u8>>,
    dir: &std::path::Path,
    scope: &Scope,
) -> Result<
    (
        overlord_core::hitlist::HitlistRef,
        overlord_core::hitlist::BuildStats,
    ),
    overlord_core::hitlist::HitlistError,
> {
    use overlord_core::hitlist::{Builder, DEFAULT_CHUNK, MAX_LINE};
    let id = hitlist_id();
    let mut b = Builder::new(dir, &id, scope, DEFAULT_CHUNK)?;
    let mut line: Vec<u8> = Vec::with_capacity(256);
    let cleanup = |e| {
        let _ = std::fs::remove_file(overlord_core::hitlist::path_of(dir, &id));
        for i in 0.. {
            if std::fs::remove_file(dir.join(format!("{id}.run{i}"))).is_err() {
                break;
            }
        }
        e
    };
    while let Some(c) = chunks.blocking_recv() {
        for &byte in &c {
            if byte == b'\n' {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                b.push_line(&line).map_err(cleanup)?;
                line.clear();
            } else if line.len() <= MAX_LINE {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        b.push_line(&line).map_err(cleanup)?;
    }
    b.finish()
}

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobApi {
    async fn upload_hitlist(
        &self,
        req: Request<tonic::Streaming<v1::HitlistChunk>>,
    ) -> Result<Response<v1::UploadHitlistResponse>, Status> {
        let _slots = submit_slot(
            &self.submits,
            &self.submits_by_client,
            req.remote_addr().map(|a| a.ip()),
        )?;
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let dir = self.hitlist_dir.clone();
        let scope = self.scope.clone();
        let builder = tokio::task::spawn_blocking(move || build_hitlist(rx, &dir, &scope));
        // Chunks go to the builder as they arrive; a builder that stopped (a bad line) ends
        // the upload early with its error.
        while let Some(chunk) = stream.message().await? {
            if tx.send(chunk.data).await.is_err() {
                break;
            }
        }
        drop(tx);
        let (r, st) = builder
            .await
            .map_err(|e| ApiError::Unavailable(e.to_string()))?
            .map_err(|e| match e {
                overlord_core::hitlist::HitlistError::Io(e) => ApiError::Storage(e.to_string()),
                e => ApiError::InvalidArgument(e.to_string()),
            })?;
        debug!(id = %r.id, addresses = r.addresses, ranges = r.ranges, lines = st.lines,
            runs = st.runs, "hitlist stored");
        Ok(Response::new(v1::UploadHitlistResponse {
            id: r.id,
            addresses: r.addresses,
            ranges: r.ranges,
            lines: st.lines,
            entries: st.entries,
            duplicates: st.duplicates().min(u64::MAX as u128) as u64,
            runs: st.runs,
        }))
    }

    async fn submit_job(
        &self,
        req: Request<v1::SubmitJobRequest>,
    ) -> Result<Response<v1::SubmitJobResponse>, Status> {
        let who = principal(&req);
        let _owner_slot = self
            .submits_by_owner
            .acquire(self.owner_key(&who), self.limits.submits_per_owner)
            .ok_or(ApiError::Exhausted(
                "submissions by this owner (see [limits] submits_per_owner)",
            ))?;
        let _slots = submit_slot(
            &self.submits,
            &self.submits_by_client,
            req.remote_addr().map(|a| a.ip()),
        )?;
        let req = req.into_inner();
        if req.request_id.len() > MAX_REQUEST_ID {
            return Err(ApiError::InvalidArgument(format!(
                "request_id is {} chars; at most {MAX_REQUEST_ID}",
                req.request_id.len()
            ))
            .into());
        }
        let rid = (!req.request_id.is_empty()).then_some(req.request_id);
        let mut spec = validate(req.spec, self.scope.clone(), &self.hitlist_dir).await?;
        spec.owner = who.owner.clone();
        let asked = spec.clone();
        let status = ask(&self.shared, |r| {
            MgrMsg::Submit(Box::new(spec), rid.clone(), r)
        })
        .await??;
        // A retry with the same request id gets the first try's job only if it asks for the
        // same job (and comes from the same owner).
        if let Some(rid) = rid {
            let stored = self
                .store
                .spec(status.job_id)
                .map_err(|e| ApiError::Storage(e.to_string()))?;
            if stored.is_some_and(|s| !overlord_core::security::same_submission(&s, &asked)) {
                return Err(
                    ApiError::RequestIdReused(overlord_core::security::clip(&rid, 64)).into(),
                );
            }
        }
        Ok(Response::new(v1::SubmitJobResponse {
            job_id: status.job_id,
            status: Some(status),
        }))
    }

    async fn get_job(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let who = principal(&req);
        let id = req.into_inner().job_id;
        self.check_access(&who, id)?;
        let mut status = ask(&self.shared, |r| MgrMsg::Get(id, r)).await??;
        note_waiting(&self.shared, Some(id), std::slice::from_mut(&mut status)).await;
        crate::firehose::note(&self.firehose, std::slice::from_mut(&mut status));
        Ok(Response::new(v1::GetJobResponse {
            status: Some(status),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let who = principal(&req);
        let mut jobs = ask(&self.shared, MgrMsg::List).await?;
        jobs.retain(|st| self.check_access(&who, st.job_id).is_ok());
        note_waiting(&self.shared, None, &mut jobs).await;
        crate::firehose::note(&self.firehose, &mut jobs);
        Ok(Response::new(v1::ListJobsResponse { jobs }))
    }

    async fn cancel_job(
        &self,
        req: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let who = principal(&req);
        let id = req.into_inner().job_id;
        self.check_access(&who, id)?;
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
        let who = principal(&req);
        self.check_access(&who, req.get_ref().job_id)?;
        let owner_slot = self
            .watchers_by_owner
            .acquire(self.owner_key(&who), self.limits.watches_per_owner)
            .ok_or(ApiError::Exhausted(
                "watch streams of this owner (see [limits] watches_per_owner)",
            ))?;
        let slots = take_slots(
            &self.watchers,
            &self.watchers_by_client,
            req.remote_addr().map(|a| a.ip()),
            MAX_WATCHERS_PER_CLIENT,
            [
                "watch streams from this client address (max 256)",
                "watch streams (max 1024 per coordinator)",
            ],
        )?;
        let v1::WatchJobRequest {
            job_id,
            after_cursor,
        } = req.into_inner();
        // Fails fast for an unknown job.
        ask(&self.shared, |r| MgrMsg::Get(job_id, r)).await??;
        let (tx, rx) = mpsc::channel::<Result<v1::JobEvent, Status>>(STREAM_QUEUE);
        let sh = self.shared.clone();
        let closing = sh.tasks.closing();
        self.shared.tasks.spawn(async move {
            let _slots = (slots, owner_slot);
            // A graceful stop ends the stream; the client resumes from its last cursor.
            tokio::select! {
                _ = watch_loop(sh, job_id, after_cursor, tx) => {}
                _ = closing => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_task_errors(
        &self,
        req: Request<v1::ListTaskErrorsRequest>,
    ) -> Result<Response<v1::ListTaskErrorsResponse>, Status> {
        let who = principal(&req);
        let r = req.into_inner();
        self.check_access(&who, r.job_id)?;
        let limit = if r.limit == 0 { 100 } else { r.limit.min(1000) } as usize;
        if self.durable.get(r.job_id).is_none() {
            return Err(ApiError::JobNotFound(r.job_id).into());
        }
        // The job's task records as stored (a retried task's record is written when it is
        // queued again, so this trails the job actor by at most one commit).
        let tasks = self
            .store
            .tasks(r.job_id)
            .map_err(|e| ApiError::Storage(e.to_string()))?;
        let mut rows: Vec<v1::TaskError> = tasks
            .iter()
            .filter_map(|t| match t {
                overlord_storage::StoredTask::Record(t) if t.spec.task_id > r.after_task => {
                    convert::task_error(t)
                }
                _ => None,
            })
            .collect();
        rows.sort_by_key(|e| e.task_id);
        let next_after_task = if rows.len() > limit {
            rows.truncate(limit);
            rows.last().map(|e| e.task_id).unwrap_or(0)
        } else {
            0
        };
        Ok(Response::new(v1::ListTaskErrorsResponse {
            errors: rows,
            next_after_task,
        }))
    }

    async fn list_results(
        &self,
        req: Request<v1::ListResultsRequest>,
    ) -> Result<Response<v1::ListResultsResponse>, Status> {
        let who = principal(&req);
        let r = req.into_inner();
        self.check_access(&who, r.job_id)?;
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
        // Paged by bytes as well as by count: a page stops before the finding that would take
        // it over `results_page_bytes` (it always holds at least one).
        let mut bytes = 0usize;
        let mut cut = false;
        let mut findings: Vec<v1::Finding> = Vec::new();
        for f in page.iter().filter(|f| f.cursor <= upto) {
            let w = convert::finding(f);
            let n = prost::Message::encoded_len(&w) + 8;
            if !findings.is_empty() && bytes + n > self.limits.results_page_bytes {
                cut = true;
                break;
            }
            bytes += n;
            findings.push(w);
        }
        let next_cursor = if cut || findings.len() == limit {
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
        let page = match store.findings(job, *cursor, REPLAY_PAGE) {
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
    sh: Handles,
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
            let next = tokio::select! {
                e = erx.recv() => e,
                // The client went away: end now and free its slots, even if its job is idle
                // (no event would otherwise reveal the closed stream).
                _ = tx.closed() => return,
            };
            match next {
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

/// Wraps a generated client-API service so that a request message over its decoding limit is
/// answered `ResourceExhausted` naming the limit. tonic refuses such a message on its length prefix
/// (before allocating it) with `OutOfRange`, before our handler runs; it puts that `Status` in the
/// response's extensions, which is where this wrapper finds it. Our handlers never return
/// `OutOfRange` (see `ApiError`), so the code alone identifies the refusal.
#[derive(Clone)]
pub struct SizeLimited<S> {
    inner: S,
    limit: usize,
}

impl<S> SizeLimited<S> {
    /// `limit` must be the `max_decoding_message_size` set on `inner`.
    pub fn new(inner: S, limit: usize) -> Self {
        SizeLimited { inner, limit }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for SizeLimited<S> {
    const NAME: &'static str = S::NAME;
}

/// The status a client gets for a request message over `limit` bytes on `path`.
pub fn oversized_request(path: &str, limit: usize, tonic_msg: &str) -> Status {
    Status::resource_exhausted(format!(
        "request message to {path} over the limit of {limit} bytes ({} MiB) for this service: {tonic_msg}",
        limit >> 20
    ))
}

impl<S, B> tonic::codegen::Service<http::Request<B>> for SizeLimited<S>
where
    S: tonic::codegen::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_string();
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let oversized = resp
                .extensions()
                .get::<Status>()
                .filter(|st| st.code() == tonic::Code::OutOfRange)
                .map(|st| oversized_request(&path, limit, st.message()));
            Ok(match oversized {
                Some(st) => st.into_http(),
                None => resp,
            })
        })
    }
}

#[derive(Clone)]
pub struct MinionApi {
    pub shared: Handles,
    pub sessions: Arc<AtomicU64>,
    /// Identity (certificate), reserved ids, one live session per id, revocation.
    pub gate: Arc<Gate>,
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

/// How long a new session may take to send its Register.
const REGISTER_WITHIN: Duration = Duration::from_secs(10);

/// Names a minion message (or its absence) for protocol-violation statuses.
fn describe(m: Option<Option<&MMsg>>) -> &'static str {
    match m {
        None => "the end of the stream",
        Some(None) => "an empty MinionMessage (no field set)",
        Some(Some(MMsg::Register(_))) => "a second Register",
        Some(Some(MMsg::Heartbeat(_))) => "Heartbeat",
        Some(Some(MMsg::Results(_))) => "ResultBatch",
    }
}

/// Maps an error reading the session stream to the status the minion gets: undecodable bytes are
/// `InvalidArgument` (see `overlord_proto::codec`), a message over the size limit is
/// `ResourceExhausted` naming the limit, broken framing `InvalidArgument`, anything else keeps its
/// code.
fn inbound_error(e: Status) -> Status {
    match e.code() {
        tonic::Code::OutOfRange => Status::resource_exhausted(format!(
            "minion message over the session limit of {} bytes (overlord_proto::MAX_MESSAGE_BYTES): {}",
            overlord_proto::MAX_MESSAGE_BYTES,
            e.message()
        )),
        // Request-side Internal comes from the framing (bad compressed flag, a message cut short
        // by EOF): the peer's bytes, not a coordinator fault.
        tonic::Code::Internal => {
            Status::invalid_argument(format!("bad gRPC framing from the minion: {}", e.message()))
        }
        _ => e,
    }
}

#[tonic::async_trait]
impl v1::minion_service_server::MinionService for MinionApi {
    type SessionStream = Pin<Box<dyn Stream<Item = Result<v1::CoordinatorMessage, Status>> + Send>>;

    async fn session(
        &self,
        req: Request<tonic::Streaming<v1::MinionMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        if self.shared.tasks.is_closing() {
            return Err(Status::unavailable("coordinator shutting down"));
        }
        let gate = self.gate.clone();
        // The certificate is checked before anything is read from the stream.
        if gate.mtls && req.peer_certs().is_none() {
            return Err(Status::unauthenticated(
                "minion sessions need a client certificate (enroll with `overlord minion enroll`)",
            ));
        }
        let certs = req.peer_certs();
        let metadata = req.metadata().clone();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(REGISTER_WITHIN, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no Register within {}s of opening the session",
                    REGISTER_WITHIN.as_secs()
                ))
            })?
            .map_err(inbound_error)?;
        let reg = match first.map(|m| m.msg) {
            Some(Some(MMsg::Register(r))) => r,
            other => {
                return Err(ApiError::Protocol(format!(
                    "the first message of a session must be Register, got {}",
                    describe(other.as_ref().map(|m| m.as_ref()))
                ))
                .into());
            }
        };
        let mut reg = reg;
        let serial = gate.identify(certs, &metadata, &mut reg)?;
        check_register(&reg)?;
        let id = reg.minion_id.clone();
        let id_out = id.clone();
        let sid = self.sessions.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::unbounded_channel();
        let txc: SessionTx = tx.clone();
        let admitted = gate.admit(&id, &reg.provider, sid, serial, tx.clone())?;
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
            _ => {
                gate.leave(&id, sid);
                return Err(unavailable());
            }
        };
        let closing = self.shared.tasks.closing();
        self.shared.tasks.spawn(async move {
            tokio::pin!(closing);
            loop {
                // A graceful stop takes no more messages; acks of those taken still go out (the
                // response stream lives until the registry drops the session).
                let next = tokio::select! {
                    m = inbound.message() => m,
                    // Displaced or revoked: the status was already sent on the response stream.
                    _ = admitted.kill.notified() => break,
                    _ = &mut closing => break,
                };
                admitted
                    .last_seen
                    .store(overlord_core::now_ms(), Ordering::Relaxed);
                let m = match next {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) if e.code() == tonic::Code::Unknown => {
                        // The connection dropped (minion killed, network): a plain disconnect.
                        debug!(minion = %id, error = %e.message(), "minion stream ended");
                        break;
                    }
                    Err(e) => {
                        // Oversized or undecodable messages end up here: close only this session,
                        // with the precise status (the first error on the stream is the one sent).
                        let st = inbound_error(e);
                        warn!(minion = %id, code = ?st.code(), error = %st.message(), "closing minion session");
                        // The status ends the response stream; `Disconnected` below (matched
                        // by session id, so a quick reconnect is never hit) detaches it.
                        let _ = tx.send(Err(st));
                        break;
                    }
                };
                let sent = match m.msg {
                    Some(MMsg::Heartbeat(hb)) => registry
                        .cast(RegMsg::Heartbeat(id.clone(), generation, hb.held_tokens))
                        .map_err(|_| ()),
                    Some(MMsg::Results(b)) => ingest
                        .cast(IngestMsg::Results(id.clone(), generation, b, tx.clone()))
                        .map_err(|_| ()),
                    other => {
                        let reason = format!(
                            "protocol violation: unexpected {} after Register",
                            describe(Some(other.as_ref()))
                        );
                        warn!(minion = %id, %reason, "closing minion session");
                        let _ = tx.send(Err(Status::invalid_argument(reason)));
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
            gate.leave(&id, sid);
            let _ = registry.cast(RegMsg::Disconnected(id, sid));
        });
        // A session closed for a rejected result (a violation: the job kicks the minion) counts
        // against this minion; repeated, it is quarantined.
        let (gate, who) = (self.gate.clone(), id_out);
        let out = tokio_stream::StreamExt::map(UnboundedReceiverStream::new(rx), move |m| {
            if let Err(st) = &m
                && st.message().contains(overlord_core::trust::REJECTED_PREFIX)
            {
                gate.strike(&who, 1);
            }
            m
        });
        Ok(Response::new(Box::pin(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_slots_per_client_address_are_capped_and_released() {
        let w = SlotsByClient::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let held: Vec<_> = (0..3).map(|_| w.acquire(Some(a), 3).unwrap()).collect();
        assert!(w.acquire(Some(a), 3).is_none(), "a 4th slot over the cap");
        assert!(
            w.acquire(Some(b), 3).is_some(),
            "another address is not affected"
        );
        assert!(w.acquire(None, 3).is_some(), "unknown address: not counted");
        drop(held);
        assert_eq!(w.count(a), 0);
        assert!(w.acquire(Some(a), 3).is_some());
    }

    #[test]
    fn submit_slots_per_client_address_leave_room_for_others() {
        let global = Arc::new(Semaphore::new(MAX_SUBMITS_IN_FLIGHT));
        let by = SlotsByClient::default();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let flood: Vec<_> = (0..MAX_SUBMITS_PER_CLIENT)
            .map(|_| submit_slot(&global, &by, ip("127.0.0.2")).expect("under the cap"))
            .collect();
        let e = submit_slot(&global, &by, ip("127.0.0.2")).expect_err("over the per-address cap");
        let st = Status::from(e);
        assert_eq!(st.code(), tonic::Code::ResourceExhausted);
        assert!(st.message().contains("client address (max 16"), "{st:?}");
        // The refused call took no global slot: 64 - 16 remain for everyone else.
        assert_eq!(
            global.available_permits(),
            MAX_SUBMITS_IN_FLIGHT - MAX_SUBMITS_PER_CLIENT
        );
        let other = submit_slot(&global, &by, ip("127.0.0.3")).expect("another address");
        // Three more addresses fill the coordinator; then everybody is refused by the global cap.
        let mut rest = Vec::new();
        for a in ["127.0.0.4", "127.0.0.5", "127.0.0.6"] {
            for _ in 0..MAX_SUBMITS_PER_CLIENT {
                if let Ok(s) = submit_slot(&global, &by, ip(a)) {
                    rest.push(s);
                }
            }
        }
        assert_eq!(global.available_permits(), 0);
        let st = Status::from(submit_slot(&global, &by, ip("127.0.0.7")).expect_err("full"));
        assert!(st.message().contains("max 64 in flight"), "{st:?}");
        // A call refused by the global cap does not keep its per-address slot.
        assert_eq!(by.count("127.0.0.7".parse().unwrap()), 0);
        drop((flood, other, rest));
        assert_eq!(global.available_permits(), MAX_SUBMITS_IN_FLIGHT);
        assert_eq!(by.count("127.0.0.2".parse().unwrap()), 0);
        assert!(submit_slot(&global, &by, ip("127.0.0.2")).is_ok());
    }

    #[test]
    fn session_read_errors_map_to_precise_codes() {
        let big = inbound_error(Status::out_of_range(
            "Error, decoded message length too large: found 40000000 bytes, the limit is: 33554432 bytes",
        ));
        assert_eq!(big.code(), tonic::Code::ResourceExhausted);
        assert!(big.message().contains("33554432"));
        let cut = inbound_error(Status::internal("Unexpected EOF decoding stream."));
        assert_eq!(cut.code(), tonic::Code::InvalidArgument);
        assert!(cut.message().contains("EOF"));
        let bad = inbound_error(Status::invalid_argument("malformed protobuf for X"));
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            describe(Some(Some(&MMsg::Heartbeat(Default::default())))),
            "Heartbeat"
        );
        assert_eq!(
            describe(Some(None)),
            "an empty MinionMessage (no field set)"
        );
    }
}
