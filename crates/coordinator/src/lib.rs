//! overlord-coordinator: the ractor actor tree that owns jobs, and thin tonic adapters
//! (`JobService` for clients, `MinionService` for minions). See `docs/DESIGN.md`.

pub mod actors;
pub mod api;
pub mod commit;
pub mod config;
pub mod engine;
pub mod firehose;
pub mod hub;
pub mod images;
pub mod ingest;
pub mod job;
pub mod lookup;
pub mod manager;
pub mod model;
pub mod msg;
pub mod owners;
pub mod query;
pub mod registry;
pub mod security;
pub mod slot;
pub mod telemetry;

pub use config::{CoordinatorConfig, Settings};
pub use engine::EngineConfig;

use actors::{CoordinatorSupervisor, Handles, SupMsg, Tree};
use overlord_proto::v1;
use overlord_storage::{SledStore, Store};
use ractor::{Actor, ActorRef};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::broadcast;

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("storage at {path}: {source}")]
    Storage {
        path: String,
        source: overlord_storage::StoreError,
    },
    #[error("cannot start actors: {0}")]
    Actors(String),
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("gRPC server: {0}")]
    Server(String),
    #[error(transparent)]
    Images(#[from] images::ImagesError),
    #[error("query index: {0}")]
    Query(#[from] overlord_query::index::IndexError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The longest a graceful stop waits for each of its steps.
pub const SHUTDOWN_STEP: std::time::Duration = std::time::Duration::from_secs(10);

/// A running coordinator (actors + gRPC server on its listener).
pub struct Running {
    /// The client API's address (JobService, ImageService).
    pub addr: SocketAddr,
    /// The minions' address (MinionService, EnrollService): `addr` unless `minion_listen` is set.
    pub minion_addr: SocketAddr,
    /// TLS on: URLs are `https://`.
    pub tls: bool,
    /// The cluster CA (TLS on): tests and the embedded cluster issue minion certificates with it.
    pub ca: Option<Arc<security::pki::Ca>>,
    pub gate: Arc<security::sessions::Gate>,
    handles: Handles,
    counters: Arc<engine::Counters>,
    tasks: slot::Tasks,
    jobs: slot::JobDir<msg::JobMsg>,
    store: Arc<dyn Store>,
    pub restarts: Arc<AtomicU64>,
    sup: ActorRef<SupMsg>,
    sup_join: tokio::task::JoinHandle<()>,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    minion_server: Option<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    revocations: Option<tokio::task::JoinHandle<()>>,
    indexer: tokio::task::JoinHandle<()>,
    images: Arc<images::Images>,
    firehose: Option<firehose::Firehose>,
    /// The query index follower (stopped after a last commit on shutdown).
    query: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropped without `shutdown` (a test, a panic): the firehose and the revocation watch must
        // not outlive it.
        if let Some(f) = &self.firehose {
            f.abort();
        }
        if let Some(r) = self.revocations.take() {
            r.abort();
        }
    }
}

impl Running {
    /// The leak database of the image store (a shared handle: it reads the coordinator's sled
    /// tree); the coordinator runs `leak` tasks over it itself (`lookup`).
    pub fn leak_db(&self) -> overlord_enrich::LeakDb {
        self.images.enrich().leaks().clone()
    }

    /// A URL for reaching this coordinator from its own process (an unspecified listen address
    /// becomes the loopback address of the same family).
    pub fn local_url(&self) -> String {
        url_of(self.addr, self.tls)
    }

    /// Same for the minion listener.
    pub fn minion_url(&self) -> String {
        url_of(self.minion_addr, self.tls)
    }

    /// Graceful stop, in order:
    /// 1. stop accepting: the firehose stops, the server takes no new connections, sessions
    ///    read no more messages and new sessions and watch streams are refused or ended;
    /// 2. finish acks: barriers through the ingestor, the registry and every job actor (each has
    ///    handled every result taken in before it), then wait until every deferred output (result
    ///    acks, replies, events) was released by the flush covering it;
    /// 3. flush storage once more;
    /// 4. close: the actors stop (dropping the minion sessions), the tracked tasks end, the server
    ///    ends. Each wait is bounded ([`SHUTDOWN_STEP`]); past it the step is forced.
    pub async fn shutdown(mut self) {
        use tokio::time::timeout;
        if let Some(f) = self.firehose.take() {
            let _ = timeout(SHUTDOWN_STEP, f.shutdown()).await;
        }
        // 1. Stop accepting.
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(true);
        }
        if let Some(r) = self.revocations.take() {
            r.abort();
        }
        self.tasks.close();
        // 2. Finish acks.
        let _ = timeout(SHUTDOWN_STEP, self.barriers()).await;
        let drained = timeout(SHUTDOWN_STEP, async {
            while self.counters.unreleased.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                unreleased = self.counters.unreleased.load(Ordering::Relaxed),
                "graceful stop: outputs still waiting for a flush"
            );
        }
        // 3. Flush.
        let store = self.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
            tracing::error!(error = %e, "graceful stop: final flush failed");
        }
        // 4. Close.
        self.sup.stop(None);
        let _ = timeout(SHUTDOWN_STEP, &mut self.sup_join).await;
        let _ = timeout(SHUTDOWN_STEP, self.tasks.wait()).await;
        if timeout(SHUTDOWN_STEP, &mut self.server).await.is_err() {
            self.server.abort();
            let _ = (&mut self.server).await;
        }
        if let Some(mut m) = self.minion_server.take()
            && timeout(SHUTDOWN_STEP, &mut m).await.is_err()
        {
            m.abort();
            let _ = m.await;
        }
        // The indexer follows durable events; a restart catches up from storage.
        self.indexer.abort();
        let _ = (&mut self.indexer).await;
        if let Some((stop, task)) = self.query.take() {
            let _ = stop.send(());
            let _ = timeout(SHUTDOWN_STEP, task).await;
        }
    }

    /// Returns once the ingestor, the registry and then every job actor handled every message
    /// sent to them before (results in flight reach their job and are judged).
    async fn barriers(&self) {
        let t = Some(SHUTDOWN_STEP);
        if let Some(i) = self.handles.ingest.get() {
            let _ = i.call(msg::IngestMsg::Barrier, t).await;
        }
        if let Some(r) = self.handles.registry.get() {
            let _ = r.call(msg::RegMsg::Barrier, t).await;
        }
        for j in self.jobs.all() {
            let _ = j.call(msg::JobMsg::Status, t).await;
        }
    }

    /// Waits until the server task ends (e.g. a fatal error).
    pub async fn wait(&mut self) -> Result<(), CoordError> {
        match (&mut self.server).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(CoordError::Server(e.to_string())),
            Err(e) => Err(CoordError::Server(e.to_string())),
        }
    }

    /// The firehose's progress; None when it is off.
    pub fn firehose(&self) -> Option<firehose::FirehoseStatus> {
        self.firehose.as_ref().map(|f| f.status())
    }

    pub async fn stats(&self) -> Option<engine::Stats> {
        Some(self.counters.snapshot())
    }

    /// Test hook: makes a running job's actor panic (the job manager restarts it), or the job
    /// manager itself when no job runs (the root supervisor restarts it).
    pub fn inject_panic(&self) {
        if let Some(m) = self.handles.manager.get() {
            let _ = m.cast(msg::MgrMsg::InjectPanic);
        }
    }

    /// Test hook: makes the registry/scheduler panic (the root supervisor restarts it).
    pub fn inject_registry_panic(&self) {
        if let Some(r) = self.handles.registry.get() {
            let _ = r.cast(msg::RegMsg::InjectPanic);
        }
    }
}

fn url_of(mut a: SocketAddr, tls: bool) -> String {
    if a.ip().is_unspecified() {
        a.set_ip(match a.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("{}://{a}", if tls { "https" } else { "http" })
}

/// Serves `routes` on `listener` (TLS when given; connections guarded by `limits`) until `stop`
/// turns true.
fn serve(
    routes: tonic::service::RoutesBuilder,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    limits: security::conn::ConnLimits,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>, CoordError> {
    let mut b = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(256)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    if let Some(t) = tls {
        b = b
            .tls_config(t)
            .map_err(|e| CoordError::Tls(e.to_string()))?;
    }
    let router = b.add_routes(routes.routes());
    let incoming = security::conn::incoming(listener, limits);
    Ok(tokio::spawn(router.serve_with_incoming_shutdown(
        incoming,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    )))
}

/// Opens storage, recovers state, starts the actor tree and serves gRPC on `listener`.
pub async fn start(
    settings: Settings,
    listener: tokio::net::TcpListener,
) -> Result<Running, CoordError> {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&settings.data_dir).map_err(
        |source| CoordError::Storage {
            path: settings.data_dir.display().to_string(),
            source,
        },
    )?);
    start_with_store(settings, store, listener).await
}

pub async fn start_with_store(
    settings: Settings,
    store: Arc<dyn Store>,
    listener: tokio::net::TcpListener,
) -> Result<Running, CoordError> {
    let addr = listener.local_addr()?;
    let (hub, _) = broadcast::channel(4096);
    let images = images::Images::open(
        &settings.data_dir.join("images"),
        store.clone(),
        settings.images.leaks.as_deref(),
    )?;
    let indexer = images::spawn_indexer(images.clone(), hub.subscribe());
    let query = query::Query::open(&settings.data_dir.join("query"), store.clone())?;
    let (query_stop, stopped) = tokio::sync::oneshot::channel();
    let query_task = query::spawn_follower(query.clone(), hub.subscribe(), stopped);
    // A new epoch per start: fencing tokens of this run are above every earlier one.
    let storage_err = |source| CoordError::Storage {
        path: settings.data_dir.display().to_string(),
        source,
    };
    let epoch = store.meta("epoch").map_err(storage_err)?.unwrap_or(0) + 1;
    let mut b = overlord_storage::Batch::default();
    b.push(overlord_storage::Op::Meta("epoch", epoch));
    store
        .apply(b)
        .and_then(|_| store.flush())
        .map_err(storage_err)?;
    let mut tree = Tree::new(store.clone(), settings.engine.clone(), hub.clone(), epoch);
    tree.lookup = Some(lookup::LeakLookup::new(images.enrich().leaks().clone()));
    let handles = tree.handles();
    let restarts = tree.restarts.clone();
    let counters = tree.counters.clone();
    let (tasks, jobs) = (tree.tasks.clone(), tree.jobs.clone());
    // Off unless configured: publishes durable findings from the store (it never waits on, nor
    // slows, the actors).
    let firehose = settings.firehose.clone().map(|cfg| {
        firehose::Firehose::spawn(cfg, store.clone(), tree.durable.clone(), hub.subscribe())
    });
    let (sup, sup_join) = Actor::spawn(None, CoordinatorSupervisor, tree)
        .await
        .map_err(|e| CoordError::Actors(e.to_string()))?;
    let gate = security::sessions::Gate::new(
        settings.tls.is_some(),
        settings.engine.heartbeat_timeout_ms,
        settings.tls.as_ref().map(|t| t.ca_dir.clone()),
    );
    let ca = match &settings.tls {
        Some(t) => Some(Arc::new(
            security::pki::Ca::load(&t.ca_dir).map_err(|e| CoordError::Tls(e.to_string()))?,
        )),
        None => None,
    };
    let mut job_api = api::JobApi::new(handles.clone(), settings.scope.clone())
        .with_limits(&settings.limits)
        .with_hitlist_dir(settings.data_dir.join("hitlists"));
    job_api.firehose = firehose.as_ref().map(|f| f.status());
    let minion_api = api::MinionApi {
        shared: handles.clone(),
        sessions: Arc::new(AtomicU64::new(0)),
        gate: gate.clone(),
    };
    let max = overlord_proto::MAX_MESSAGE_BYTES;
    let reflection =
        overlord_proto::reflection_service().map_err(|e| CoordError::Server(e.to_string()))?;
    let reflection_alpha = overlord_proto::reflection_service_alpha()
        .map_err(|e| CoordError::Server(e.to_string()))?;
    let tokens = settings.tokens.clone();
    use security::tokens::Authn;
    let mut client_routes = tonic::service::RoutesBuilder::default();
    client_routes
        .add_service(Authn::new(
            api::SizeLimited::new(
                v1::job_service_server::JobServiceServer::new(job_api)
                    .max_decoding_message_size(api::MAX_JOB_REQUEST_BYTES)
                    .max_encoding_message_size(max),
                api::MAX_JOB_REQUEST_BYTES,
            ),
            tokens.clone(),
        ))
        .add_service(Authn::new(
            api::SizeLimited::new(
                v1::image_service_server::ImageServiceServer::new(images::ImageApi::new(
                    images.clone(),
                    query.clone(),
                ))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
                max,
            ),
            tokens.clone(),
        ))
        .add_service(Authn::new(
            v1::query_service_server::QueryServiceServer::new(query::QueryApi::new(query))
                .max_decoding_message_size(api::MAX_JOB_REQUEST_BYTES)
                .max_encoding_message_size(max),
            tokens.clone(),
        ))
        .add_service(Authn::new(reflection, tokens.clone()))
        .add_service(Authn::new(reflection_alpha, tokens.clone()));
    let minion_svc = v1::minion_service_server::MinionServiceServer::new(minion_api)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let enroll_svc = ca.as_ref().map(|ca| {
        v1::enroll_service_server::EnrollServiceServer::new(security::enroll::EnrollApi {
            ca: ca.clone(),
        })
        .max_decoding_message_size(64 * 1024)
    });
    let minion_listener = match &settings.minion_listen {
        Some(a) => Some(tokio::net::TcpListener::bind(a).await?),
        None => None,
    };
    let minion_addr = match &minion_listener {
        Some(l) => l.local_addr()?,
        None => addr,
    };
    // Exposure is judged on the addresses actually bound (command-line overrides included).
    let mut bound = settings.clone();
    bound.listen = addr.to_string();
    bound.minion_listen = minion_listener.as_ref().map(|_| minion_addr.to_string());
    bound.check_exposure()?;
    let limits = security::conn::ConnLimits {
        handshake: std::time::Duration::from_millis(settings.limits.handshake_timeout_ms),
        idle: std::time::Duration::from_millis(settings.limits.idle_timeout_ms),
    };
    let tls_cfg = match &settings.tls {
        Some(t) => Some(t.server_config(limits.handshake).map_err(CoordError::Tls)?),
        None => None,
    };
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (server, minion_server) = match minion_listener {
        None => {
            client_routes.add_service(minion_svc);
            if let Some(e) = enroll_svc {
                client_routes.add_service(e);
            }
            (serve(client_routes, listener, tls_cfg, limits, rx)?, None)
        }
        Some(ml) => {
            let mut minion_routes = tonic::service::RoutesBuilder::default();
            minion_routes.add_service(minion_svc);
            if let Some(e) = enroll_svc {
                minion_routes.add_service(e);
            }
            (
                serve(client_routes, listener, tls_cfg.clone(), limits, rx.clone())?,
                Some(serve(minion_routes, ml, tls_cfg, limits, rx)?),
            )
        }
    };
    tracing::info!(%addr, %minion_addr, tls = settings.tls.is_some(), tokens = settings.tokens.is_some(), "coordinator serving");
    let revocations = gate.spawn_revocation_watch();
    let running = Running {
        addr,
        minion_addr,
        tls: settings.tls.is_some(),
        ca: ca.clone(),
        gate: gate.clone(),
        handles,
        counters,
        tasks,
        jobs,
        store: store.clone(),
        restarts,
        sup,
        sup_join,
        shutdown: Some(tx),
        server,
        minion_server,
        revocations,
        indexer,
        images,
        firehose,
        query: Some((query_stop, query_task)),
    };
    Ok(running)
}
