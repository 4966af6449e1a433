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
use async_nats::jetstream;
use futures::StreamExt;
use overlord_core::JobId;
use overlord_core::job::FindingRecord;
use overlord_proto::v1;
use overlord_storage::{Batch, FindingView, Op, Store};
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
    let data = serde_json::to_string(&f.data).expect("a JSON value serializes");
    let mut out = Vec::with_capacity(256);
    render(&FindingView::of(f, &data), &mut out);
    out
}

/// Appends the message body of a stored finding to `out` ([`payload`] of its record, written
/// straight from the store's bytes: `data` is copied as the JSON text it is stored as).
pub fn render(v: &FindingView<'_>, out: &mut Vec<u8>) {
    fn num(out: &mut Vec<u8>, n: u64) {
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    fn text(out: &mut Vec<u8>, s: &str) {
        serde_json::to_writer(&mut *out, s).expect("a string serializes");
    }
    fn opt_num(out: &mut Vec<u8>, n: Option<u64>) {
        match n {
            Some(n) => num(out, n),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b"{\"id\":\"");
    num(out, v.job_id);
    out.push(b':');
    num(out, v.cursor);
    out.extend_from_slice(b"\",\"schema_version\":");
    num(out, u64::from(overlord_core::finding::SCHEMA_VERSION));
    out.extend_from_slice(b",\"cursor\":");
    num(out, v.cursor);
    out.extend_from_slice(b",\"job_id\":");
    num(out, v.job_id);
    out.extend_from_slice(b",\"task_id\":");
    num(out, v.task_id);
    out.extend_from_slice(b",\"parent_task_id\":");
    opt_num(out, v.parent_task_id);
    out.extend_from_slice(b",\"module\":");
    text(out, v.module);
    out.extend_from_slice(b",\"kind\":");
    text(out, v.kind);
    out.extend_from_slice(b",\"target\":");
    match v.target {
        Some(ip) => {
            use std::io::Write;
            write!(out, "\"{ip}\"").expect("writing to a Vec");
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"port\":");
    opt_num(out, v.port.map(u64::from));
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(v.data.as_bytes());
    out.extend_from_slice(b",\"blob_sha256\":");
    match v.blob_sha256 {
        Some(b) => text(out, b),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"minion_id\":");
    text(out, v.minion_id);
    out.extend_from_slice(b",\"provider\":");
    text(out, v.provider);
    out.extend_from_slice(b",\"started_at_ms\":");
    num(out, v.started_at_ms);
    out.extend_from_slice(b",\"finished_at_ms\":");
    num(out, v.finished_at_ms);
    out.extend_from_slice(b",\"stored_at_ms\":");
    num(out, v.stored_at_ms);
    out.push(b'}');
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
        // The one subscription takes the acknowledgements: at most WINDOW are outstanding, and a
        // full subscription would drop them (then the publish times out and is re-sent).
        .subscription_capacity(4 * WINDOW)
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
                .build(client.clone());
            ensure_stream(&js, &cfg).await?;
            Ok::<_, String>(client)
        };
        let client = tokio::select! {
            r = attempt => r,
            _ = stop.changed() => return,
        };
        let client = match client {
            Ok(c) => c,
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
            &client,
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

/// Publishes awaiting their acknowledgement, in publish order. Each publish gets the reply subject
/// `<inbox>.<seq>` (one subscription takes every acknowledgement); a job's cursor advances only
/// over the acknowledged prefix, so after a failure publishing resumes from a cursor below which
/// everything was acknowledged. Pure bookkeeping, unit-tested.
#[derive(Default)]
pub struct Window {
    /// Sequence number of the front entry.
    base: u64,
    /// (job, cursor, when sent, acknowledged)
    q: std::collections::VecDeque<(JobId, u64, Instant, bool)>,
}

impl Window {
    pub fn len(&self) -> usize {
        self.q.len()
    }
    pub fn is_empty(&self) -> bool {
        self.q.is_empty()
    }
    /// Records a publish; returns its sequence number (the last token of its reply subject).
    pub fn push(&mut self, job: JobId, cursor: u64, now: Instant) -> u64 {
        self.q.push_back((job, cursor, now, false));
        self.base + self.q.len() as u64 - 1
    }
    /// The finding published as `seq`, if it awaits its acknowledgement.
    pub fn pending(&self, seq: u64) -> Option<(JobId, u64)> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.q.get(i).filter(|e| !e.3).map(|e| (e.0, e.1))
    }
    /// Marks `seq` acknowledged and moves every acknowledged finding at the front into `acked`
    /// (the last cursor per job); false when `seq` awaits nothing (stale or repeated).
    pub fn ack(&mut self, seq: u64, acked: &mut HashMap<JobId, u64>) -> bool {
        let Some(i) = seq
            .checked_sub(self.base)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return false;
        };
        match self.q.get_mut(i) {
            Some(e) if !e.3 => e.3 = true,
            _ => return false,
        }
        while let Some(&(job, cursor, _, true)) = self.q.front() {
            acked.insert(job, cursor);
            self.q.pop_front();
            self.base += 1;
        }
        true
    }
    /// When the oldest unacknowledged publish is overdue.
    pub fn deadline(&self) -> Option<Instant> {
        self.q.front().map(|e| e.2 + ACK_TIMEOUT)
    }
    /// The oldest publish awaiting its acknowledgement.
    fn oldest(&self) -> Option<(JobId, u64)> {
        self.q.front().map(|e| (e.0, e.1))
    }
}

/// JetStream's answer to a publish.
#[derive(Deserialize)]
struct PubAck<'a> {
    #[serde(default)]
    duplicate: bool,
    #[serde(default, borrow)]
    error: Option<PubAckError<'a>>,
}

#[derive(Deserialize)]
struct PubAckError<'a> {
    #[serde(default)]
    code: u64,
    #[serde(default, borrow)]
    description: std::borrow::Cow<'a, str>,
}

/// Reads one acknowledgement message: Ok(duplicate) or why the publish was refused.
fn read_ack(m: &async_nats::Message) -> Result<bool, String> {
    if let Some(st) = m.status.filter(|s| !s.is_success()) {
        return Err(if st == async_nats::StatusCode::NO_RESPONDERS {
            "no stream takes the subject (no responders)".into()
        } else {
            format!("status {st} {}", m.description.as_deref().unwrap_or(""))
        });
    }
    let ack: PubAck<'_> = serde_json::from_slice(&m.payload)
        .map_err(|e| format!("unreadable acknowledgement: {e}"))?;
    match ack.error {
        Some(e) => Err(format!("{} (code {})", e.description, e.code)),
        None => Ok(ack.duplicate),
    }
}

/// A page of findings of one job, read and rendered on a blocking thread: message bodies back to
/// back in `buf`, and per finding (cursor, index into `kinds`, end of its body in `buf`).
struct Page {
    buf: bytes::Bytes,
    items: Vec<(u64, usize, usize)>,
    kinds: Vec<String>,
}

/// Reads the findings of `job` in `(after, upto]`, at most [`PAGE`], and renders their bodies.
fn read_page(store: &dyn Store, job: JobId, after: u64, upto: u64) -> Result<Page, String> {
    let want = PAGE.min(usize::try_from(upto - after).unwrap_or(PAGE));
    let mut buf = Vec::with_capacity(want * 384);
    let mut items = Vec::with_capacity(want);
    let mut kinds: Vec<String> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    store
        .visit_findings(job, after, want, &mut |v| {
            if v.cursor > upto {
                return false;
            }
            let k = match index.get(v.kind) {
                Some(&k) => k,
                None => {
                    kinds.push(v.kind.to_string());
                    index.insert(v.kind.to_string(), kinds.len() - 1);
                    kinds.len() - 1
                }
            };
            render(v, &mut buf);
            items.push((v.cursor, k, buf.len()));
            true
        })
        .map_err(|e| format!("firehose: reading findings: {e}"))?;
    Ok(Page {
        buf: buf.into(),
        items,
        kinds,
    })
}

fn spawn_read(
    store: &Arc<dyn Store>,
    job: JobId,
    after: u64,
    upto: u64,
) -> tokio::task::JoinHandle<Result<Page, String>> {
    let s = store.clone();
    tokio::task::spawn_blocking(move || read_page(&*s, job, after, upto))
}

/// Subjects by kind, built once per kind (bounded: a flood of kinds only rebuilds them).
#[derive(Default)]
struct Subjects(HashMap<String, async_nats::Subject>);

impl Subjects {
    fn get(&mut self, kind: &str) -> async_nats::Subject {
        if let Some(s) = self.0.get(kind) {
            return s.clone();
        }
        if self.0.len() >= 1024 {
            self.0.clear();
        }
        let s = async_nats::Subject::from(subject_for(kind));
        self.0.insert(kind.to_string(), s.clone());
        s
    }
}

/// The publishing half of one connection: the window of unacknowledged publishes and the
/// subscription that takes their acknowledgements.
struct Publisher<'a> {
    client: &'a async_nats::Client,
    inbox: String,
    acks: async_nats::Subscriber,
    window: Window,
    /// Acknowledged since the last progress report: last cursor per job.
    acked: HashMap<JobId, u64>,
    status: &'a FirehoseStatus,
}

impl Publisher<'_> {
    async fn publish(
        &mut self,
        subject: async_nats::Subject,
        job: JobId,
        cursor: u64,
        body: bytes::Bytes,
    ) -> Result<(), String> {
        while self.window.len() >= WINDOW {
            self.wait_acks().await?;
        }
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id(job, cursor));
        let seq = self.window.push(job, cursor, Instant::now());
        let reply = async_nats::Subject::from(format!("{}.{seq}", self.inbox));
        self.client
            .publish_with_reply_and_headers(subject, reply, headers, body)
            .await
            .map_err(|e| format!("firehose: publishing: {e}"))
    }

    /// Waits for at least one acknowledgement (bounded by the oldest publish's deadline), then
    /// takes every one already received.
    async fn wait_acks(&mut self) -> Result<(), String> {
        let Some(deadline) = self.window.deadline() else {
            return Ok(());
        };
        let m = match tokio::time::timeout_at(deadline.into(), self.acks.next()).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err("firehose: NATS connection closed".into()),
            Err(_) => {
                let (job, cursor) = self.window.oldest().expect("a deadline has an entry");
                return Err(format!(
                    "firehose: JetStream did not acknowledge finding {job}:{cursor}: no acknowledgement within {ACK_TIMEOUT:?}"
                ));
            }
        };
        self.take(m)?;
        self.drain()
    }

    /// Takes the acknowledgements already received, without waiting.
    fn drain(&mut self) -> Result<(), String> {
        use futures::FutureExt;
        while let Some(Some(m)) = self.acks.next().now_or_never() {
            self.take(m)?;
        }
        Ok(())
    }

    fn take(&mut self, m: async_nats::Message) -> Result<(), String> {
        let seq = m
            .subject
            .as_str()
            .rsplit_once('.')
            .and_then(|(_, s)| s.parse::<u64>().ok());
        let Some((seq, (job, cursor))) = seq.and_then(|q| Some((q, self.window.pending(q)?)))
        else {
            // Not awaited (an answer to an earlier connection's publish): nothing to do.
            return Ok(());
        };
        let duplicate = read_ack(&m).map_err(|e| {
            format!("firehose: JetStream did not acknowledge finding {job}:{cursor}: {e}")
        })?;
        use std::sync::atomic::Ordering::Relaxed;
        self.status.0.sent.fetch_add(1, Relaxed);
        if duplicate {
            self.status.0.duplicates.fetch_add(1, Relaxed);
        }
        self.window.ack(seq, &mut self.acked);
        Ok(())
    }

    /// Reports the acknowledged cursors (to the status and `published`); returns how many jobs
    /// moved.
    fn report(&mut self, published: &mut HashMap<JobId, u64>) -> u64 {
        let n = self.acked.len() as u64;
        if n > 0 {
            self.status.publish_progress(&self.acked);
            published.extend(self.acked.drain());
        }
        n
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump(
    client: &async_nats::Client,
    store: &Arc<dyn Store>,
    durable: &Durable,
    status: &FirehoseStatus,
    published: &mut HashMap<JobId, u64>,
    persisted: &mut HashMap<JobId, u64>,
    hub: &mut broadcast::Receiver<HubEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Stop {
    let inbox = client.new_inbox();
    let acks = match client.subscribe(format!("{inbox}.*")).await {
        Ok(s) => s,
        Err(e) => return Stop::Failed(format!("firehose: subscribing to acknowledgements: {e}")),
    };
    let mut p = Publisher {
        client,
        inbox,
        acks,
        window: Window::default(),
        acked: HashMap::new(),
        status,
    };
    let out = pump_on(&mut p, store, durable, published, persisted, hub, stop).await;
    // What was acknowledged before a failure counts.
    p.report(published);
    out
}

async fn pump_on(
    p: &mut Publisher<'_>,
    store: &Arc<dyn Store>,
    durable: &Durable,
    published: &mut HashMap<JobId, u64>,
    persisted: &mut HashMap<JobId, u64>,
    hub: &mut broadcast::Receiver<HubEvent>,
    stop: &mut watch::Receiver<bool>,
) -> Stop {
    let mut last_persist = Instant::now();
    let mut subjects = Subjects::default();
    // Published (not necessarily acknowledged yet) up to, per job: the next round starts there,
    // so the window stays full across rounds.
    let mut sent = published.clone();
    loop {
        if *stop.borrow() {
            return Stop::Asked;
        }
        if let Err(e) = p.drain() {
            return Stop::Failed(e);
        }
        let n = p.report(published);
        record_metrics(p.status, n);
        if last_persist.elapsed() >= PERSIST_EVERY {
            persist(store, published, persisted).await;
            last_persist = Instant::now();
        }
        let work = backlog(&durable.snapshot(), &sent);
        if work.is_empty() {
            let deadline = p.window.deadline();
            let tick = if p.window.is_empty() {
                IDLE_TICK
            } else {
                PERSIST_EVERY
            };
            tokio::select! {
                r = p.wait_acks(), if deadline.is_some() => {
                    if let Err(e) = r {
                        return Stop::Failed(e);
                    }
                }
                _ = hub.recv() => {}
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return Stop::Asked,
            }
            // Wake-ups come in bursts: take what is queued without waiting.
            while hub.try_recv().is_ok() {}
            continue;
        }
        for (job, from, upto) in work {
            let mut next = Some(spawn_read(store, job, from, upto));
            while let Some(reading) = next.take() {
                let page = match reading.await {
                    Ok(Ok(page)) => page,
                    Ok(Err(e)) => return Stop::Failed(e),
                    Err(e) => return Stop::Failed(format!("firehose: {e}")),
                };
                let Some(&(last, _, _)) = page.items.last() else {
                    break;
                };
                // The next page is read while this one is published.
                if last < upto {
                    next = Some(spawn_read(store, job, last, upto));
                }
                let kinds: Vec<_> = page.kinds.iter().map(|k| subjects.get(k)).collect();
                let mut start = 0;
                for &(cursor, kind, end) in &page.items {
                    let body = page.buf.slice(start..end);
                    start = end;
                    if let Err(e) = p.publish(kinds[kind].clone(), job, cursor, body).await {
                        return Stop::Failed(e);
                    }
                }
                sent.insert(job, last);
                if let Err(e) = p.drain() {
                    return Stop::Failed(e);
                }
                p.report(published);
                if last_persist.elapsed() >= PERSIST_EVERY {
                    record_metrics(p.status, 0);
                    persist(store, published, persisted).await;
                    last_persist = Instant::now();
                }
            }
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

    /// The body written from the store's bytes is byte for byte the serde serialization of the
    /// record with `id` and `schema_version` before it (what consumers were promised).
    #[test]
    fn rendered_bodies_are_the_serialized_records() {
        #[derive(serde::Serialize)]
        struct Reference<'a> {
            id: String,
            schema_version: u32,
            #[serde(flatten)]
            record: &'a FindingRecord,
        }
        let base = FindingRecord {
            cursor: u64::MAX,
            job_id: 12,
            task_id: 0,
            parent_task_id: Some(7),
            module: "screen\"shot\n".into(),
            kind: "screenshot".into(),
            target: Some("2001:db8::1".parse().unwrap()),
            port: Some(65535),
            data: serde_json::json!({"title": "caf\u{e9} <\u{1}>", "n": [1, -2.5, null, true], "o": {}}),
            blob_sha256: Some("ab".repeat(32)),
            minion_id: "m\\1".into(),
            provider: "".into(),
            started_at_ms: 0,
            finished_at_ms: 1,
            stored_at_ms: 1_733_318_400_003,
        };
        let mut bare = base.clone();
        (
            bare.parent_task_id,
            bare.target,
            bare.port,
            bare.blob_sha256,
        ) = (None, None, None, None);
        bare.data = serde_json::Value::Null;
        let mut v4 = base.clone();
        v4.target = Some("127.0.0.1".parse().unwrap());
        v4.data = serde_json::json!("text");
        for f in [base, bare, v4] {
            let want = serde_json::to_vec(&Reference {
                id: msg_id(f.job_id, f.cursor),
                schema_version: overlord_core::finding::SCHEMA_VERSION,
                record: &f,
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(payload(&f)).unwrap(),
                String::from_utf8(want).unwrap()
            );
            let back: FindingRecord = serde_json::from_slice(&payload(&f)).unwrap();
            assert_eq!(back, f);
        }
    }

    /// Acknowledgements may come in any order; a job's cursor moves only over the acknowledged
    /// prefix, and an answer nobody awaits changes nothing.
    #[test]
    fn the_window_advances_over_the_acknowledged_prefix() {
        let now = Instant::now();
        let mut w = Window::default();
        let seqs: Vec<u64> = [(1, 1), (1, 2), (2, 1), (1, 3)]
            .into_iter()
            .map(|(j, c)| w.push(j, c, now))
            .collect();
        assert_eq!(seqs, vec![0, 1, 2, 3]);
        assert_eq!(w.deadline(), Some(now + ACK_TIMEOUT));
        let mut acked = HashMap::new();
        assert!(w.ack(1, &mut acked));
        assert!(w.ack(3, &mut acked));
        assert!(
            acked.is_empty(),
            "nothing before the first unacknowledged publish"
        );
        assert!(!w.ack(1, &mut acked), "an acknowledgement counts once");
        assert!(!w.ack(9, &mut acked));
        assert_eq!(w.pending(0), Some((1, 1)));
        assert_eq!(w.pending(1), None);
        assert!(w.ack(0, &mut acked));
        assert_eq!(acked, HashMap::from([(1, 2)]));
        assert_eq!(w.len(), 2);
        assert!(w.ack(2, &mut acked));
        assert_eq!(acked, HashMap::from([(1, 3), (2, 1)]));
        assert!(w.is_empty() && w.deadline().is_none());
        assert!(!w.ack(0, &mut acked), "stale");
        assert_eq!(w.push(3, 1, now), 4, "sequence numbers go on");
    }

    #[test]
    fn acknowledgements_are_read_strictly() {
        let msg = |payload: &'static [u8], status: Option<u16>| async_nats::Message {
            subject: "_INBOX.x.0".into(),
            reply: None,
            payload: bytes::Bytes::from_static(payload),
            headers: None,
            status: status.map(|s| async_nats::StatusCode::from_u16(s).unwrap()),
            description: None,
            length: 0,
        };
        assert_eq!(
            read_ack(&msg(br#"{"stream":"S","seq":4}"#, None)),
            Ok(false)
        );
        assert_eq!(
            read_ack(&msg(br#"{"stream":"S","seq":4,"duplicate":true}"#, None)),
            Ok(true)
        );
        let e = read_ack(&msg(
            br#"{"error":{"code":503,"err_code":10077,"description":"maximum messages exceeded"}}"#,
            None,
        ))
        .unwrap_err();
        assert!(
            e.contains("maximum messages exceeded") && e.contains("503"),
            "{e}"
        );
        assert!(
            read_ack(&msg(b"", Some(503)))
                .unwrap_err()
                .contains("no responders")
        );
        assert!(read_ack(&msg(b"garbage", None)).is_err());
    }
}
