//! The firehose: every durable finding published to NATS JetStream exactly once (docs/FIREHOSE.md).
//!
//! A task owned by [`crate::Running`] (off unless the coordinator config has a `[firehose]` block).
//! It reads the store, never the ingestion path: findings are published only once durable (the
//! [`Durable`] cursor of each job, advanced after the flush that covers them), so scanning and
//! result ingestion never wait for NATS, and while NATS is down findings simply stay in the store
//! (the backlog is bounded only by the store) and drain when it is back.
//!
//! Exactly once: each message carries `Nats-Msg-Id: <job>:<cursor>`, so JetStream drops a
//! re-publish within the stream's duplicate window. The last cursor JetStream acknowledged per
//! job is stored through the storage API (`Op::Cursor`, reader [`READER`]) and flushed at least
//! every [`PERSIST_EVERY`]; after a crash the publisher resumes there and re-sends at most what was
//! acknowledged after the last persisted cursor, which JetStream recognises as duplicates.
//!
//! Pure decisions ([`backlog`], [`subject_for`], [`msg_id`], [`payload`], [`lag_of`]) are
//! unit-tested below; the loop only routes.

#[cfg(feature = "natsd")]
pub mod natsd;

use crate::hub::{Durable, HubEvent};
use async_nats::jetstream::{self, message::PublishMessage};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use overlord_core::JobId;
use overlord_core::job::FindingRecord;
use overlord_proto::v1;
use overlord_storage::{Batch, Op, Store};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use tracing::{info, warn};

/// The storage reader name of the firehose's cursors.
pub const READER: &str = "firehose";
/// Subjects are `overlord.findings.<kind>` (once tenants exist: `overlord.findings.<tenant>.<kind>`,
/// see docs/FIREHOSE.md).
pub const SUBJECT_PREFIX: &str = "overlord.findings";
/// Findings read from the store per page.
const PAGE: usize = 4096;
/// Publishes awaiting their JetStream acknowledgement at once.
pub const WINDOW: usize = 8192;
/// How long one acknowledgement may take before the connection is judged broken.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Published cursors are stored (and flushed) at least this often while publishing.
pub const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// With nothing to do, the publisher looks at the durable cursors this often (it is also woken by
/// every durable finding event).
const IDLE_TICK: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `[firehose]` in the coordinator config; absent = off.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirehoseConfig {
    /// `nats://HOST:PORT` (credentials as `nats://user:pass@HOST:PORT`); several servers of one
    /// cluster separated by commas.
    pub url: String,
    /// JetStream stream name; created (subjects `overlord.findings.>`, file storage) when missing.
    pub stream: String,
    /// Replicas of a stream the firehose creates (3 on a 3-node cluster).
    #[serde(default = "d_replicas")]
    pub replicas: usize,
    /// Duplicate window of a stream the firehose creates: a coordinator that restarts within it
    /// publishes nothing twice.
    #[serde(default = "d_dup")]
    pub duplicate_window_s: u64,
}

fn d_replicas() -> usize {
    1
}
fn d_dup() -> u64 {
    120
}

impl FirehoseConfig {
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> Self {
        FirehoseConfig {
            url: url.into(),
            stream: stream.into(),
            replicas: d_replicas(),
            duplicate_window_s: d_dup(),
        }
    }

    /// Checks what can be checked without a server: URL syntax, stream name, replicas.
    pub fn validate(&self) -> Result<(), String> {
        self.servers()?;
        let name = &self.stream;
        if name.is_empty()
            || name.len() > 255
            || name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || ".*>/\\".contains(c))
        {
            return Err(format!(
                "firehose stream {name:?}: a stream name is 1-255 characters without spaces, '.', '*', '>', '/' or '\\'"
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!("firehose replicas {} must be 1..=5", self.replicas));
        }
        if self.duplicate_window_s == 0 {
            return Err("firehose duplicate_window_s must be > 0".into());
        }
        Ok(())
    }

    fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, String> {
        let mut out = Vec::new();
        for part in self.url.split(',').map(str::trim) {
            let scheme_ok = ["nats://", "tls://"].iter().any(|s| part.starts_with(s));
            let addr: Result<async_nats::ServerAddr, _> = part.parse();
            match addr {
                // Explicit host and port: async-nats would fill in localhost:4222.
                Ok(a) if scheme_ok && a.port() != 0 && has_host_and_port(part) => out.push(a),
                Ok(_) | Err(_) => {
                    return Err(format!(
                        "firehose url {part:?} must look like nats://HOST:PORT (or nats://user:pass@HOST:PORT)"
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// `scheme://[user:pass@]HOST:PORT` with a non-empty host and a numeric port.
fn has_host_and_port(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or("");
    let hostport = rest.rsplit_once('@').map(|(_, h)| h).unwrap_or(rest);
    match hostport.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

/// The subject of a finding of `kind`: `overlord.findings.<kind>`. A NATS subject token holds no
/// `.`, `*`, `>` or whitespace; such characters in a kind become `_`.
pub fn subject_for(kind: &str) -> String {
    let token: String = kind
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    let token = if token.is_empty() { "_".into() } else { token };
    format!("{SUBJECT_PREFIX}.{token}")
}

/// The JetStream message id of a finding: `<job>:<cursor>`.
pub fn msg_id(job: JobId, cursor: u64) -> String {
    format!("{job}:{cursor}")
}

/// The message body of a finding (the one place the wire format is chosen): the stored record's
/// fields, its `id` (`<job>:<cursor>`, as the message id) and the `schema_version` of the finding
/// schema (`overlord schema`, docs/SCHEMA.md) that `kind` + `data` follow. `data` was checked
/// against the kind's payload type when the result was accepted (`core::trust`); fields a newer
/// minion added are kept, as the store keeps them. A consumer may read it as a
/// [`FindingRecord`] (extra keys are ignored) and type `data` with `Payload::parse`.
pub fn payload(f: &FindingRecord) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Message<'a> {
        id: String,
        schema_version: u32,
        #[serde(flatten)]
        record: &'a FindingRecord,
    }
    serde_json::to_vec(&Message {
        id: msg_id(f.job_id, f.cursor),
        schema_version: overlord_core::finding::SCHEMA_VERSION,
        record: f,
    })
    .expect("a finding record serializes")
}

/// What to publish: for each job whose durable cursor is past its published one,
/// (job, published, durable), ascending by job.
pub fn backlog(
    durable: &[(JobId, u64)],
    published: &HashMap<JobId, u64>,
) -> Vec<(JobId, u64, u64)> {
    let mut out: Vec<_> = durable
        .iter()
        .filter_map(|&(job, upto)| {
            let from = published.get(&job).copied().unwrap_or(0);
            (upto > from).then_some((job, from, upto))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Findings durable but not yet published, of one job.
pub fn lag_of(durable: u64, published: u64) -> u64 {
    durable.saturating_sub(published)
}

// ---------------- shared status ----------------

/// What the job API and metrics see of the publisher.
#[derive(Clone)]
pub struct FirehoseStatus(Arc<StatusInner>);

struct StatusInner {
    durable: Durable,
    published: Mutex<HashMap<JobId, u64>>,
    error: Mutex<Option<String>>,
    sent: std::sync::atomic::AtomicU64,
    duplicates: std::sync::atomic::AtomicU64,
}

impl FirehoseStatus {
    fn new(durable: Durable) -> Self {
        FirehoseStatus(Arc::new(StatusInner {
            durable,
            published: Mutex::new(HashMap::new()),
            error: Mutex::new(None),
            sent: Default::default(),
            duplicates: Default::default(),
        }))
    }

    /// The current error (why nothing is being published), if any.
    pub fn error(&self) -> Option<String> {
        self.0.error.lock().expect("firehose status").clone()
    }

    fn set_error(&self, e: Option<String>) {
        *self.0.error.lock().expect("firehose status") = e;
    }

    /// Last published cursor of `job`.
    pub fn published(&self, job: JobId) -> u64 {
        self.0
            .published
            .lock()
            .expect("firehose status")
            .get(&job)
            .copied()
            .unwrap_or(0)
    }

    /// Findings durable but not yet published, summed over jobs.
    pub fn lag(&self) -> u64 {
        let published = self.0.published.lock().expect("firehose status").clone();
        self.0
            .durable
            .snapshot()
            .into_iter()
            .map(|(j, d)| lag_of(d, published.get(&j).copied().unwrap_or(0)))
            .sum()
    }

    /// Publishes acknowledged by JetStream since start, and how many of them it judged duplicates.
    pub fn sent(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.0.sent.load(Relaxed), self.0.duplicates.load(Relaxed))
    }

    /// Fills the `firehose` field of job statuses.
    pub fn note(&self, statuses: &mut [v1::JobStatus]) {
        let error = self.error().unwrap_or_default();
        for st in statuses {
            let published = self.published(st.job_id);
            let durable = self.0.durable.get(st.job_id).unwrap_or(0);
            st.firehose = Some(v1::FirehoseStatus {
                published_cursor: published,
                lag: lag_of(durable, published),
                error: error.clone(),
            });
        }
    }

    fn publish_progress(&self, updates: &HashMap<JobId, u64>) {
        let mut p = self.0.published.lock().expect("firehose status");
        for (j, c) in updates {
            let e = p.entry(*j).or_insert(0);
            *e = (*e).max(*c);
        }
    }
}

/// Fills `firehose` of job statuses when the firehose is on (a no-op when `fh` is None).
pub fn note(fh: &Option<FirehoseStatus>, statuses: &mut [v1::JobStatus]) {
    if let Some(f) = fh {
        f.note(statuses);
    }
}

// ---------------- metrics ----------------

fn record_metrics(status: &FirehoseStatus, acked: u64) {
    use opentelemetry::metrics::{Counter, Gauge};
    struct M {
        lag: Gauge<u64>,
        published: Counter<u64>,
    }
    static METRICS: std::sync::OnceLock<M> = std::sync::OnceLock::new();
    if !crate::telemetry::enabled() {
        return;
    }
    let m = METRICS.get_or_init(|| {
        let m = opentelemetry::global::meter("overlord-coordinator");
        M {
            lag: m.u64_gauge("overlord.firehose.lag").build(),
            published: m.u64_counter("overlord.firehose.published").build(),
        }
    });
    m.lag.record(status.lag(), &[]);
    if acked > 0 {
        m.published.add(acked, &[]);
    }
}

// ---------------- the publisher ----------------

/// The running publisher.
pub struct Firehose {
    status: FirehoseStatus,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Firehose {
    /// Starts publishing the durable findings of `store` (the cursors in `durable`; woken by `hub`).
    pub fn spawn(
        cfg: FirehoseConfig,
        store: Arc<dyn Store>,
        durable: Durable,
        hub: broadcast::Receiver<HubEvent>,
    ) -> Firehose {
        let status = FirehoseStatus::new(durable.clone());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(cfg, store, durable, status.clone(), hub, stopped));
        Firehose { status, stop, task }
    }

    pub fn status(&self) -> FirehoseStatus {
        self.status.clone()
    }

    /// Stops after storing the published cursors.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops without waiting (a dropped coordinator).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Why publishing stopped.
enum Stop {
    Asked,
    Failed(String),
}

/// A clear message for a failed connect.
fn connect_error(url: &str, e: &async_nats::ConnectError) -> String {
    use async_nats::ConnectErrorKind as K;
    let what = match e.kind() {
        K::AuthorizationViolation | K::Authentication => {
            "credentials refused by the NATS server".to_string()
        }
        K::ServerParse => "not a NATS server URL".to_string(),
        K::Dns => "host name not found".to_string(),
        K::TimedOut => "connect timed out (is a NATS server listening there?)".to_string(),
        K::Tls => format!("TLS error: {e}"),
        K::Io | K::MaxReconnects => {
            format!("cannot connect ({e}; is a NATS server listening there?)")
        }
    };
    format!("firehose: NATS at {}: {what}", redact(url))
}

/// The URL without a password.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|u| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***@{}", &u[..s + 3], &u[at + 1..]),
            _ => u.to_string(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn connect(cfg: &FirehoseConfig) -> Result<async_nats::Client, String> {
    let servers = cfg.servers()?;
    let events_url = redact(&cfg.url);
    // async-nats does not read credentials from the URL itself.
    let creds = servers
        .iter()
        .find_map(|s| Some((s.username()?.to_string(), s.password()?.to_string())));
    let opts = match creds {
        Some((u, p)) => async_nats::ConnectOptions::with_user_and_password(u, p),
        None => async_nats::ConnectOptions::new(),
    };
    let opts = opts
        .connection_timeout(Duration::from_secs(3))
        .name("overlord-firehose")
        .event_callback(move |ev| {
            let url = events_url.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => info!(url, "firehose: NATS connected"),
                    async_nats::Event::Disconnected => warn!(url, "firehose: NATS disconnected"),
                    other => tracing::debug!(url, event = %other, "firehose: NATS event"),
                }
            }
        });
    async_nats::connect_with_options(servers, opts)
        .await
        .map_err(|e| connect_error(&cfg.url, &e))
}

/// Finds or creates the stream; it must take the firehose's subjects.
async fn ensure_stream(js: &jetstream::Context, cfg: &FirehoseConfig) -> Result<(), String> {
    let subjects = format!("{SUBJECT_PREFIX}.>");
    let want = jetstream::stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![subjects.clone()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: cfg.replicas,
        duplicate_window: Duration::from_secs(cfg.duplicate_window_s),
        ..Default::default()
    };
    let mut stream = js.get_or_create_stream(want).await.map_err(|e| {
        format!(
            "firehose: JetStream stream {:?} is missing and cannot be created: {e}",
            cfg.stream
        )
    })?;
    let info = stream
        .info()
        .await
        .map_err(|e| format!("firehose: JetStream stream {:?}: {e}", cfg.stream))?;
    if !info
        .config
        .subjects
        .iter()
        .any(|s| s == &subjects || s == ">" || s == "overlord.>")
    {
        return Err(format!(
            "firehose: JetStream stream {:?} exists but does not take subjects {subjects} (it takes {:?})",
            cfg.stream, info.config.subjects
        ));
    }
    Ok(())
}

async fn run(
    cfg: FirehoseConfig,
    store: Arc<dyn Store>,
    durable: Durable,
    status: FirehoseStatus,
    mut hub: broadcast::Receiver<HubEvent>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    // Published cursors, from the store (a restart resumes there).
    let mut published = loop {
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.cursors(READER)).await {
            Ok(Ok(c)) => break c.into_iter().collect::<HashMap<_, _>>(),
            Ok(Err(e)) => {
                let msg = format!("firehose: cannot read its cursors from storage: {e}");
                warn!(error = %msg);
                status.set_error(Some(msg));
            }
            Err(e) => status.set_error(Some(format!("firehose: {e}"))),
        }
        if sleep_or_stop(&mut stop, MAX_BACKOFF).await {
            return;
        }
    };
    status.publish_progress(&published);
    let mut persisted = published.clone();
    loop {
        let attempt = async {
            let client = connect(&cfg).await?;
            let js = jetstream::context::ContextBuilder::new()
                .timeout(ACK_TIMEOUT)
                .max_ack_inflight(WINDOW)
                .build(client);
            ensure_stream(&js, &cfg).await?;
            Ok::<_, String>(js)
        };
        let js = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        let js = match js {
            Ok(js) => js,
            Err(e) => {
                warn!(error = %e, "firehose not publishing; findings wait in the store");
                status.set_error(Some(e));
                record_metrics(&status, 0);
                if sleep_or_stop(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        info!(stream = %cfg.stream, url = %redact(&cfg.url), "firehose publishing");
        status.set_error(None);
        backoff = Duration::from_millis(100);
        let outcome = pump(
            &js,
            &store,
            &durable,
            &status,
            &mut published,
            &mut persisted,
            &mut hub,
            &mut stop,
        )
        .await;
        persist(&store, &published, &mut persisted).await;
        match outcome {
            Stop::Asked => return,
            Stop::Failed(e) => {
                warn!(error = %e, "firehose publish failed; retrying from the last acknowledged cursor");
                status.set_error(Some(e));
                if sleep_or_stop(&mut stop, backoff).await {
                    return;
                }
            }
        }
    }
}

/// True when asked to stop.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// Stores the published cursors that moved since the last call, and flushes.
async fn persist(
    store: &Arc<dyn Store>,
    published: &HashMap<JobId, u64>,
    persisted: &mut HashMap<JobId, u64>,
) {
    let mut b = Batch::default();
    for (job, c) in published {
        if persisted.get(job) != Some(c) {
            b.push(Op::Cursor {
                reader: READER,
                job: *job,
                cursor: *c,
            });
        }
    }
    if b.is_empty() {
        return;
    }
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.apply(b).and_then(|_| s.flush())).await {
        Ok(Ok(())) => persisted.clone_from(published),
        // Not fatal: the cursor is stored later; a restart meanwhile re-sends a little more,
        // which JetStream recognises as duplicates.
        Ok(Err(e)) => warn!(error = %e, "firehose: cannot store its cursors"),
        Err(e) => warn!(error = %e, "firehose: cursor store task failed"),
    }
}

type Acked = (
    JobId,
    u64,
    Result<Result<jetstream::publish::PublishAck, String>, String>,
);

#[allow(clippy::too_many_arguments)]
async fn pump(
    js: &jetstream::Context,
    store: &Arc<dyn Store>,
    durable: &Durable,
    status: &FirehoseStatus,
    published: &mut HashMap<JobId, u64>,
    persisted: &mut HashMap<JobId, u64>,
    hub: &mut broadcast::Receiver<HubEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Stop {
    let mut last_persist = Instant::now();
    loop {
        if *stop.borrow() {
            return Stop::Asked;
        }
        let work = backlog(&durable.snapshot(), published);
        if work.is_empty() {
            record_metrics(status, 0);
            tokio::select! {
                _ = hub.recv() => {}
                _ = tokio::time::sleep(IDLE_TICK) => {}
                _ = stop.changed() => return Stop::Asked,
            }
            // Wake-ups come in bursts: take what is queued without waiting.
            while hub.try_recv().is_ok() {}
            continue;
        }
        let mut inflight = FuturesOrdered::new();
        let mut acked_now = HashMap::new();
        let settle = |r: Acked, acked_now: &mut HashMap<JobId, u64>| -> Result<(), String> {
            let (job, cursor, res) = r;
            let ack = res.and_then(|a| a).map_err(|e| {
                format!("firehose: JetStream did not acknowledge finding {job}:{cursor}: {e}")
            })?;
            use std::sync::atomic::Ordering::Relaxed;
            status.0.sent.fetch_add(1, Relaxed);
            if ack.duplicate {
                status.0.duplicates.fetch_add(1, Relaxed);
            }
            acked_now.insert(job, cursor);
            Ok(())
        };
        for (job, mut from, upto) in work {
            while from < upto {
                let s = store.clone();
                let want = PAGE.min((upto - from) as usize);
                let page = match tokio::task::spawn_blocking(move || s.findings(job, from, want))
                    .await
                {
                    Ok(Ok(p)) => p,
                    Ok(Err(e)) => return Stop::Failed(format!("firehose: reading findings: {e}")),
                    Err(e) => return Stop::Failed(format!("firehose: {e}")),
                };
                let page: Vec<_> = page.into_iter().filter(|f| f.cursor <= upto).collect();
                let Some(last) = page.last().map(|f| f.cursor) else {
                    break;
                };
                for f in page {
                    while inflight.len() >= WINDOW {
                        let r = inflight.next().await.expect("non-empty");
                        if let Err(e) = settle(r, &mut acked_now) {
                            status.publish_progress(&acked_now);
                            published.extend(acked_now);
                            return Stop::Failed(e);
                        }
                    }
                    let msg = PublishMessage::build()
                        .payload(payload(&f).into())
                        .message_id(msg_id(job, f.cursor));
                    let ack = match js.send_publish(subject_for(&f.kind), msg).await {
                        Ok(a) => a,
                        Err(e) => {
                            status.publish_progress(&acked_now);
                            published.extend(acked_now);
                            return Stop::Failed(format!("firehose: publishing: {e}"));
                        }
                    };
                    let cursor = f.cursor;
                    // The context's own ack timeout (ACK_TIMEOUT) bounds the wait: no timer per
                    // message here.
                    inflight.push_back(async move {
                        let r = ack.into_future().await.map_err(|e| e.to_string());
                        (job, cursor, Ok(r))
                    });
                }
                from = last;
                if last_persist.elapsed() >= PERSIST_EVERY {
                    status.publish_progress(&acked_now);
                    published.extend(acked_now.drain());
                    record_metrics(status, 0);
                    persist(store, published, persisted).await;
                    last_persist = Instant::now();
                }
            }
        }
        while let Some(r) = inflight.next().await {
            if let Err(e) = settle(r, &mut acked_now) {
                status.publish_progress(&acked_now);
                published.extend(acked_now);
                return Stop::Failed(e);
            }
        }
        let n: u64 = acked_now.len() as u64;
        status.publish_progress(&acked_now);
        published.extend(acked_now);
        record_metrics(status, n);
        if last_persist.elapsed() >= PERSIST_EVERY {
            persist(store, published, persisted).await;
            last_persist = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_carry_the_kind_as_one_token() {
        assert_eq!(subject_for("open_port"), "overlord.findings.open_port");
        assert_eq!(subject_for("screenshot"), "overlord.findings.screenshot");
        // A kind can never add tokens or wildcards to the subject.
        assert_eq!(subject_for("a.b*c> d"), "overlord.findings.a_b_c__d");
        assert_eq!(subject_for(""), "overlord.findings._");
    }

    #[test]
    fn message_ids_are_job_and_cursor() {
        assert_eq!(msg_id(7, 12), "7:12");
        assert_ne!(msg_id(1, 23), msg_id(12, 3));
    }

    #[test]
    fn backlog_is_every_job_behind_its_durable_cursor() {
        let published: HashMap<_, _> = [(1, 10), (2, 5), (4, 9)].into_iter().collect();
        let durable = [(3, 4), (1, 10), (2, 8), (4, 3), (5, 0)];
        assert_eq!(backlog(&durable, &published), vec![(2, 5, 8), (3, 0, 4)]);
        assert!(backlog(&[], &published).is_empty());
        assert_eq!(lag_of(8, 5), 3);
        // A published cursor ahead of a durable one (a store restored from an older copy) is
        // not negative lag.
        assert_eq!(lag_of(3, 9), 0);
    }

    #[test]
    fn config_is_checked_before_connecting() {
        let ok = FirehoseConfig::new("nats://127.0.0.1:4222", "OVERLORD");
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.url = "nats://u:p@127.0.0.1:4222, nats://127.0.0.1:4223".into();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        for bad in [
            "",
            "127.0.0.1:4222",
            "http://127.0.0.1:4222",
            "nats://",
            "nats://h:notaport",
            "nats://127.0.0.1",
            "nats://:4222",
        ] {
            c.url = bad.into();
            let e = c.validate().unwrap_err();
            assert!(e.contains("nats://HOST:PORT"), "{bad}: {e}");
        }
        for bad in ["", "a.b", "a b", "x>", "all*"] {
            let mut c = ok.clone();
            c.stream = bad.into();
            assert!(c.validate().unwrap_err().contains("stream"), "{bad}");
        }
        let mut c = ok.clone();
        c.replicas = 0;
        assert!(c.validate().is_err());
        let parsed: FirehoseConfig =
            toml::from_str("url = \"nats://127.0.0.1:1\"\nstream = \"S\"").unwrap();
        assert_eq!(parsed, FirehoseConfig::new("nats://127.0.0.1:1", "S"));
        assert!(
            toml::from_str::<FirehoseConfig>("url = \"x\"\nstream = \"S\"\nbogus = 1").is_err()
        );
    }

    #[test]
    fn passwords_never_reach_the_status() {
        assert_eq!(
            redact("nats://alice:s3cret@127.0.0.1:4222,nats://127.0.0.1:5"),
            "nats://***@127.0.0.1:4222,nats://127.0.0.1:5"
        );
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn payload_is_the_record_as_json() {
        let f = FindingRecord {
            cursor: 3,
            job_id: 9,
            task_id: 4,
            parent_task_id: None,
            module: "portscan".into(),
            kind: "open_port".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            port: Some(22),
            data: serde_json::json!({"state": "open"}),
            blob_sha256: None,
            minion_id: "m".into(),
            provider: "p".into(),
            started_at_ms: 1,
            finished_at_ms: 2,
            stored_at_ms: 3,
        };
        let bytes = payload(&f);
        let back: FindingRecord = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, f);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["id"], "9:3");
        assert_eq!(v["schema_version"], overlord_core::finding::SCHEMA_VERSION);
        assert_eq!(v["kind"], "open_port");
    }
}
