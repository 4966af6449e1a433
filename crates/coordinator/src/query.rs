//! The query index inside the coordinator: a follower task that folds durable findings into the
//! index (`<data_dir>/query`, see `overlord_query`), and the gRPC `QueryService` over it.
//!
//! The follower is fed by the hub, which publishes findings only after the flush that made them
//! durable (like the image indexer). It does not trust the events' contents: a job the hub names
//! is caught up from the store after the index's cursor, so lagged broadcasts and restarts lose
//! nothing. Queries run on blocking threads, at most [`QUERY_THREADS`] at once and at a lower
//! scheduling priority than the follower (`overlord_query::priority`), so searches cannot take
//! the cores from result ingestion.

use crate::hub::HubEvent;
use crate::owners::Owners;
use crate::security::tokens::principal;
use overlord_proto::v1;
use overlord_query::follow::{Follower, Lag};
use overlord_query::index::QueryIndex;
use overlord_query::search::{self, Engine, QueryError, RowKey, SearchRequest, View};
use overlord_query::state::ServiceState;
use overlord_storage::Store;
use std::collections::BTreeSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, broadcast, oneshot};
use tonic::{Request, Response, Status};

/// Queries executing at once (the rest wait, up to their deadline).
pub const QUERY_THREADS: usize = 2;
/// How often the follower folds the jobs the hub named.
pub const FOLLOW_TICK: Duration = Duration::from_millis(100);

pub struct Query {
    pub follower: Arc<Follower>,
    pub engine: Arc<Engine>,
    store: Arc<dyn Store>,
    permits: Arc<Semaphore>,
}

impl Query {
    pub fn open(
        dir: &Path,
        store: Arc<dyn Store>,
    ) -> Result<Arc<Query>, overlord_query::index::IndexError> {
        let index = Arc::new(QueryIndex::open_or_rebuild(dir)?);
        Ok(Arc::new(Query {
            follower: Arc::new(Follower::new(index.clone(), store.clone())),
            engine: Arc::new(Engine::new(index)),
            store,
            permits: Arc::new(Semaphore::new(QUERY_THREADS)),
        }))
    }
}

/// The follower task; `stop` ends it after a last commit.
pub fn spawn_follower(
    q: Arc<Query>,
    mut rx: broadcast::Receiver<HubEvent>,
    mut stop: oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let f = q.follower.clone();
        let mut all = true; // catch every job up at start
        let mut dirty: BTreeSet<u64> = BTreeSet::new();
        let mut tick = tokio::time::interval(FOLLOW_TICK);
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(HubEvent::Finding(x)) => {
                        f.notify(x.job_id, x.cursor);
                        dirty.insert(x.job_id);
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "query indexer lagged; catching up from the store");
                        all = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let jobs = std::mem::take(&mut dirty);
                    let everything = std::mem::take(&mut all);
                    let f2 = f.clone();
                    let r = tokio::task::spawn_blocking(move || -> Result<(), overlord_query::follow::FollowError> {
                        if everything {
                            f2.catch_up_all()?;
                        } else {
                            for j in jobs {
                                f2.catch_up(j)?;
                            }
                        }
                        f2.maybe_commit()?;
                        Ok(())
                    }).await;
                    match r {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(error = %e, "query indexing failed; retrying");
                            all = true;
                        }
                        Err(e) => tracing::error!(error = %e, "query indexing panicked"),
                    }
                }
                _ = &mut stop => break,
            }
        }
        let _ = tokio::task::spawn_blocking(move || f.commit()).await;
    })
}

/// The one mapping from query errors to gRPC codes.
fn status(e: QueryError) -> Status {
    match e {
        QueryError::Parse(_) | QueryError::Invalid(_) => Status::invalid_argument(e.to_string()),
        QueryError::Deadline(_) => Status::deadline_exceeded(e.to_string()),
        QueryError::Index(_) => Status::internal(e.to_string()),
    }
}

fn deadline(ms: u32) -> Duration {
    if ms == 0 {
        search::DEFAULT_DEADLINE
    } else {
        Duration::from_millis(ms as u64).min(Duration::from_secs(300))
    }
}

pub fn row(s: &ServiceState) -> v1::ServiceRow {
    let o = |x: &Option<String>| x.clone().unwrap_or_default();
    v1::ServiceRow {
        ip: s.ip.map(|i| i.to_string()).unwrap_or_default(),
        port: s.port as u32,
        transport: s.transport.clone(),
        service: o(&s.service),
        product: o(&s.product),
        version: o(&s.version),
        cpe: s.cpe.clone(),
        banner: o(&s.banner),
        http_title: s
            .http
            .as_ref()
            .and_then(|h| h.title.clone())
            .unwrap_or_default(),
        http_status: s.http.as_ref().and_then(|h| h.status).unwrap_or(0) as u32,
        tls_subject: s
            .tls
            .as_ref()
            .map(|t| t.subject.clone())
            .unwrap_or_default(),
        job_id: s.job,
        first_seen_ms: s.first_seen_ms,
        last_seen_ms: s.last_seen_ms,
        modules: s.modules.iter().cloned().collect(),
        minions: s.minions.iter().cloned().collect(),
        providers: s.providers.iter().cloned().collect(),
        open: s.open,
        row_json: serde_json::to_string(s).unwrap_or_default(),
    }
}

/// The index's lag as a caller may see it: rows and jobs are those of its visible `jobs` (`None`:
/// all); the findings not yet searchable and their age stay the whole index's (how far behind
/// it is, not what it holds).
fn scoped_lag(q: &Query, jobs: Option<&BTreeSet<u64>>) -> Result<Lag, Status> {
    let mut l = q
        .follower
        .lag(jobs)
        .map_err(|e| Status::internal(e.to_string()))?;
    if let Some(jobs) = jobs {
        l.rows = q
            .engine
            .count_in("", &[], search::DEFAULT_DEADLINE, Some(jobs))
            .map_err(status)?
            .matched;
    }
    Ok(l)
}

fn lag(l: Lag) -> v1::IndexLag {
    v1::IndexLag {
        findings: l.findings,
        age_ms: l.age_ms,
        rows: l.rows,
        jobs: l.jobs,
    }
}

fn changes(v: &[search::FieldChange]) -> Vec<v1::FieldChange> {
    v.iter()
        .map(|c| v1::FieldChange {
            field: c.field.clone(),
            from: c.from.clone().unwrap_or_default(),
            to: c.to.clone().unwrap_or_default(),
        })
        .collect()
}

fn request(r: &v1::SearchRequest) -> Result<SearchRequest, Status> {
    let after = match r.after.as_str() {
        "" => None,
        a => Some(
            RowKey::decode(a)
                .ok_or_else(|| Status::invalid_argument(format!("bad page token {a:?}")))?,
        ),
    };
    Ok(SearchRequest {
        query: r.query.clone(),
        view: if r.view == v1::SearchView::Hosts as i32 {
            View::Hosts
        } else {
            View::Services
        },
        limit: if r.limit == 0 {
            search::DEFAULT_LIMIT
        } else {
            r.limit as usize
        },
        after,
        deadline: deadline(r.deadline_ms),
    })
}

fn page(p: search::Page, l: Lag) -> v1::SearchResponse {
    v1::SearchResponse {
        services: p.services.iter().map(row).collect(),
        hosts: p
            .hosts
            .iter()
            .map(|h| v1::HostRow {
                ip: h.ip.to_string(),
                last_seen_ms: h.last_seen_ms,
                services: h.services.iter().map(row).collect(),
            })
            .collect(),
        matched: p.matched,
        next_after: p.next.map(|k| k.encode()).unwrap_or_default(),
        lag: Some(lag(l)),
    }
}

#[derive(Clone)]
pub struct QueryApi {
    q: Arc<Query>,
    owners: Owners,
}

impl QueryApi {
    pub fn new(q: Arc<Query>) -> Self {
        let owners = Owners::new(q.store.clone());
        QueryApi { q, owners }
    }

    /// The jobs the caller may see (`None`: all, an admin), taken from the store's jobs, not
    /// the index's: a job submitted a moment ago is in scope (and its lag counted) before its
    /// first finding is searchable. Every answer is restricted to these through the engine's
    /// job filter.
    fn scope<T>(&self, req: &Request<T>) -> Result<Option<Arc<BTreeSet<u64>>>, Status> {
        let who = principal(req);
        if who.role == overlord_core::security::Role::Admin {
            return Ok(None);
        }
        let jobs = self
            .q
            .store
            .jobs()
            .map_err(|e| Status::internal(e.to_string()))?;
        self.owners
            .scope(&who, jobs.iter().map(|j| j.id))
            .map(|s| s.map(Arc::new))
            .map_err(Status::internal)
    }

    /// Runs `f` on a blocking thread, at query priority, once a query permit is free (waiting at
    /// most `d`).
    async fn run<T: Send + 'static>(
        &self,
        d: Duration,
        f: impl FnOnce(&Query) -> Result<T, Status> + Send + 'static,
    ) -> Result<T, Status> {
        let permit = tokio::time::timeout(d, self.q.permits.clone().acquire_owned())
            .await
            .map_err(|_| Status::resource_exhausted("too many concurrent queries; retry later"))?
            .map_err(|_| Status::unavailable("query service stopping"))?;
        let q = self.q.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            // below the follower and tantivy's indexing threads: queries do not slow the
            // folding of accepted results (overlord_query::priority)
            overlord_query::priority::below_ingest(|| f(&q))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
    }
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl v1::query_service_server::QueryService for QueryApi {
    async fn search(
        &self,
        req: Request<v1::SearchRequest>,
    ) -> Result<Response<v1::SearchResponse>, Status> {
        let jobs = self.scope(&req)?;
        let r = request(&req.into_inner())?;
        let d = r.deadline;
        self.run(d, move |q| {
            let p = q.engine.search_in(&r, jobs.as_deref()).map_err(status)?;
            Ok(page(p, scoped_lag(q, jobs.as_deref())?))
        })
        .await
        .map(Response::new)
    }

    type SearchStreamStream = Stream<v1::SearchResponse>;

    async fn search_stream(
        &self,
        req: Request<v1::SearchRequest>,
    ) -> Result<Response<Self::SearchStreamStream>, Status> {
        let jobs = self.scope(&req)?;
        let mut r = request(&req.into_inner())?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let api = self.clone();
        tokio::spawn(async move {
            loop {
                let r2 = r.clone();
                let jobs = jobs.clone();
                let res = api
                    .run(r.deadline, move |q| {
                        let p = q.engine.search_in(&r2, jobs.as_deref()).map_err(status)?;
                        Ok(page(p, scoped_lag(q, jobs.as_deref())?))
                    })
                    .await;
                let next = res.as_ref().ok().map(|p| p.next_after.clone());
                if tx.send(res).await.is_err() {
                    break;
                }
                match next {
                    Some(n) if !n.is_empty() => r.after = RowKey::decode(&n),
                    _ => break,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn count(
        &self,
        req: Request<v1::CountRequest>,
    ) -> Result<Response<v1::CountResponse>, Status> {
        let jobs = self.scope(&req)?;
        let r = req.into_inner();
        let d = deadline(r.deadline_ms);
        let facets = r
            .facets
            .iter()
            .map(|f| search::parse_facet(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(status)?;
        self.run(d, move |q| {
            let c = q
                .engine
                .count_in(&r.query, &facets, d, jobs.as_deref())
                .map_err(status)?;
            Ok(v1::CountResponse {
                matched: c.matched,
                facets: c
                    .facets
                    .into_iter()
                    .map(|f| v1::Facet {
                        field: f.field,
                        values: f
                            .values
                            .into_iter()
                            .map(|v| v1::FacetValue {
                                value: v.value,
                                count: v.count,
                            })
                            .collect(),
                        other: f.other,
                    })
                    .collect(),
                lag: Some(lag(scoped_lag(q, jobs.as_deref())?)),
            })
        })
        .await
        .map(Response::new)
    }

    async fn host(
        &self,
        req: Request<v1::HostRequest>,
    ) -> Result<Response<v1::HostResponse>, Status> {
        let jobs = self.scope(&req)?;
        let r = req.into_inner();
        let ip: std::net::IpAddr =
            r.ip.parse()
                .map_err(|_| Status::invalid_argument(format!("{:?} is not an address", r.ip)))?;
        let as_of = (r.as_of_ms > 0).then_some(r.as_of_ms);
        self.run(search::DEFAULT_DEADLINE, move |q| {
            let h = q
                .engine
                .host_in(ip, as_of, jobs.as_deref())
                .map_err(status)?;
            Ok(v1::HostResponse {
                ip: h.ip.to_string(),
                ports: h
                    .ports
                    .iter()
                    .map(|p| v1::PortHistory {
                        port: p.port as u32,
                        first_seen_ms: p.first_seen_ms,
                        last_seen_ms: p.last_seen_ms,
                        current: Some(row(&p.current)),
                        events: p
                            .events
                            .iter()
                            .map(|e| v1::HostEvent {
                                at_ms: e.at_ms,
                                job_id: e.job,
                                fields: changes(&e.fields),
                            })
                            .collect(),
                        jobs: p.jobs.clone(),
                    })
                    .collect(),
            })
        })
        .await
        .map(Response::new)
    }

    async fn diff(
        &self,
        req: Request<v1::DiffRequest>,
    ) -> Result<Response<v1::DiffResponse>, Status> {
        let jobs = self.scope(&req)?;
        let r = req.into_inner();
        let d = deadline(r.deadline_ms);
        let limit = if r.limit == 0 {
            1000
        } else {
            r.limit.min(100_000) as usize
        };
        self.run(d, move |q| {
            // a job the caller may not see is "not found" (its existence is not revealed)
            let visible = |j: u64| jobs.as_ref().is_none_or(|s| s.contains(&j));
            for j in [r.job_a, r.job_b] {
                if j != 0 && !visible(j) {
                    return Err(Status::not_found(format!("job {j} not found")));
                }
            }
            let (a, b) = match r.job_b {
                0 => {
                    let candidates: Vec<u64> = q
                        .engine
                        .jobs()
                        .into_iter()
                        .filter(|j| visible(*j))
                        .collect();
                    let prev = overlord_query::follow::previous_job(
                        q.store.as_ref(),
                        r.job_a,
                        &candidates,
                    )
                    .ok_or_else(|| {
                        Status::not_found(format!("no job before {} to compare with", r.job_a))
                    })?;
                    (prev, r.job_a)
                }
                b => (r.job_a, b),
            };
            let x = q.engine.diff(a, b, limit, d).map_err(status)?;
            Ok(diff_proto(&x))
        })
        .await
        .map(Response::new)
    }

    type ExportStream = Stream<v1::ExportChunk>;

    async fn export(
        &self,
        req: Request<v1::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        use overlord_query::export;
        let jobs = self.scope(&req)?;
        let r = req.into_inner();
        let fmt =
            match v1::ExportFormat::try_from(r.format).unwrap_or(v1::ExportFormat::Unspecified) {
                v1::ExportFormat::Csv => export::ExportFormat::Csv,
                v1::ExportFormat::NmapXml => export::ExportFormat::NmapXml,
                _ => export::ExportFormat::Jsonl,
            };
        let mut sr = SearchRequest::new(&r.query);
        sr.limit = 1000;
        sr.deadline = deadline(r.deadline_ms);
        // validate before streaming (a bad query is an error status, not a broken stream)
        self.q.engine.compile(&sr.query).map_err(status)?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let api = self.clone();
        tokio::spawn(async move {
            let mut first = true;
            loop {
                let r2 = sr.clone();
                let jobs = jobs.clone();
                let res = api
                    .run(sr.deadline, move |q| {
                        q.engine.search_in(&r2, jobs.as_deref()).map_err(status)
                    })
                    .await;
                let p = match res {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                let mut buf = Vec::new();
                let last = p.next.is_none();
                match fmt {
                    export::ExportFormat::Jsonl => {
                        for s in &p.services {
                            buf.extend_from_slice(export::jsonl_row(s).as_bytes());
                            buf.push(b'\n');
                        }
                    }
                    export::ExportFormat::Csv => {
                        if first {
                            buf.extend_from_slice(export::csv_header().as_bytes());
                            buf.push(b'\n');
                        }
                        for s in &p.services {
                            buf.extend_from_slice(export::csv_row(s).as_bytes());
                            buf.push(b'\n');
                        }
                    }
                    export::ExportFormat::NmapXml => {
                        let _ = export::nmap_xml_part(&p.services, first, last, &mut buf);
                    }
                }
                first = false;
                if tx.send(Ok(v1::ExportChunk { data: buf })).await.is_err() || last {
                    return;
                }
                sr.after = p.next;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn index_status(
        &self,
        req: Request<v1::IndexStatusRequest>,
    ) -> Result<Response<v1::IndexLag>, Status> {
        let jobs = self.scope(&req)?;
        let l = scoped_lag(&self.q, jobs.as_deref())?;
        Ok(Response::new(lag(l)))
    }
}

pub fn diff_proto(x: &search::Diff) -> v1::DiffResponse {
    let cov = |v: &[search::Coverage]| {
        v.iter()
            .map(|c| v1::Coverage {
                key: c.key.clone(),
                a: c.a,
                b: c.b,
            })
            .collect()
    };
    v1::DiffResponse {
        job_a: x.job_a,
        job_b: x.job_b,
        rows_a: x.rows_a,
        rows_b: x.rows_b,
        opened: x.opened,
        closed: x.closed,
        changed: x.changed,
        unchanged: x.unchanged,
        changes: x
            .changes
            .iter()
            .map(|c| v1::ServiceChange {
                ip: c.ip.to_string(),
                port: c.port as u32,
                kind: match c.kind {
                    search::ChangeKind::Opened => v1::ChangeKind::Opened,
                    search::ChangeKind::Closed => v1::ChangeKind::Closed,
                    search::ChangeKind::Changed => v1::ChangeKind::Changed,
                } as i32,
                fields: changes(&c.fields),
                before: c.before.as_ref().map(row),
                after: c.after.as_ref().map(row),
            })
            .collect(),
        coverage_net: cov(&x.coverage_net),
        coverage_minion: cov(&x.coverage_minion),
        coverage_provider: cov(&x.coverage_provider),
    }
}
