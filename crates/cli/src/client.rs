//! gRPC client commands: submit, watch (resumable, progress bar), jobs, results.

use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use overlord_proto::v1::{self, job_event::Event, job_service_client::JobServiceClient};
use std::path::Path;
use std::time::Duration;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub type Client = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// How the CLI authenticates: an API token (sent as `authorization: Bearer`) and the cluster CA
/// that verifies an `https://` coordinator.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub token: Option<String>,
    pub ca_pem: Option<String>,
}

static CREDENTIALS: std::sync::OnceLock<Credentials> = std::sync::OnceLock::new();

/// Sets the process's credentials (from `--token-file`/`OVERLORD_TOKEN_FILE`, `OVERLORD_TOKEN`,
/// `--ca`/`OVERLORD_CA`); [`connect`] uses them.
pub fn set_credentials(c: Credentials) {
    let _ = CREDENTIALS.set(c);
}

/// Credentials from the environment: `OVERLORD_TOKEN`, else the file `OVERLORD_TOKEN_FILE`;
/// `OVERLORD_CA` (a PEM file).
pub fn credentials_from(
    token: Option<String>,
    token_file: Option<&Path>,
    ca: Option<&Path>,
) -> Result<Credentials> {
    let token = match (token, token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("cannot read token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let ca_pem = match ca {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read CA certificate {}", p.display()))?,
        ),
        None => None,
    };
    Ok(Credentials { token, ca_pem })
}

pub fn current_credentials() -> Credentials {
    CREDENTIALS.get().cloned().unwrap_or_default()
}

/// Adds the API token to every call.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Bearer {
    pub fn new(c: &Credentials) -> Result<Self> {
        Ok(Bearer(match &c.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| anyhow!("the API token has characters a header cannot carry"))?,
            ),
            None => None,
        }))
    }
}

/// A channel to `url`: TLS (verified against the credentials' CA) for `https://`, which never
/// falls back to plaintext; a token is never sent over plaintext to a non-loopback address.
pub async fn channel(url: &str, c: &Credentials) -> Result<Channel> {
    let mut ep = tonic::transport::Endpoint::from_shared(url.to_string())
        .with_context(|| {
            format!("bad coordinator URL {url:?} (expected e.g. http://127.0.0.1:50051)")
        })?
        .connect_timeout(Duration::from_secs(3));
    if url.starts_with("https://") {
        let ca = c.ca_pem.as_ref().ok_or_else(|| {
            anyhow!("{url} is https:// but no CA certificate was given: pass --ca FILE or set OVERLORD_CA (the ca.pem of `overlord ca init`)")
        })?;
        ep = ep.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
        )?;
    } else if c.token.is_some() {
        let host = ep.uri().host().unwrap_or("").trim_matches(['[', ']']);
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            bail!("refusing to send an API token over plaintext to {url}; use https://");
        }
    }
    ep.connect()
        .await
        .with_context(|| format!("cannot reach coordinator at {url} (is `overlord coordinator` running? pass --coordinator URL)"))
}

pub async fn connect(url: &str) -> Result<Client> {
    connect_with(url, &current_credentials()).await
}

pub async fn connect_with(url: &str, c: &Credentials) -> Result<Client> {
    let ch = channel(url, c).await?;
    Ok(JobServiceClient::with_interceptor(ch, Bearer::new(c)?)
        .max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES))
}

/// A coordinator's refusal as a CLI error: its message, its code, and what to do about it.
fn status_err(s: tonic::Status) -> anyhow::Error {
    let hint = match s.code() {
        tonic::Code::NotFound => "; `overlord jobs list` shows the known job ids",
        tonic::Code::Unauthenticated => {
            "; pass an API token: --token-file FILE or OVERLORD_TOKEN (from `overlord token add`)"
        }
        tonic::Code::PermissionDenied => "; this token's role does not allow it",
        tonic::Code::ResourceExhausted => "; the coordinator is busy, retry in a moment",
        tonic::Code::Unavailable => {
            "; is the coordinator running and reachable? (pass --coordinator URL)"
        }
        _ => "",
    };
    anyhow!("{} ({:?}){hint}", s.message(), s.code())
}

/// Submits a job under a fresh request id, retrying transient failures (coordinator restarting,
/// connection reset) with the same id: the coordinator creates the job at most once.
/// Uploads a hitlist file, streamed in 64 KiB chunks (the file is never held whole); the
/// coordinator checks, deduplicates and stores it and answers with its id and counts.
pub async fn upload_hitlist(
    c: &mut Client,
    path: &std::path::Path,
) -> Result<v1::UploadHitlistResponse> {
    use tokio::io::AsyncReadExt;
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("targets file {}", path.display()))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::HitlistChunk>(4);
    let reader = tokio::spawn(async move {
        loop {
            let mut buf = vec![0u8; 64 * 1024];
            let n = f.read(&mut buf).await?;
            if n == 0 {
                return Ok::<(), std::io::Error>(());
            }
            buf.truncate(n);
            if tx.send(v1::HitlistChunk { data: buf }).await.is_err() {
                return Ok(());
            }
        }
    });
    let r = c
        .upload_hitlist(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|c| (c, rx))
        }))
        .await;
    reader
        .await
        .context("targets file reader")?
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(r.map_err(status_err)?.into_inner())
}

pub async fn submit(c: &mut Client, spec: v1::JobSpec) -> Result<v1::JobStatus> {
    let request_id = format!("cli-{:032x}", rand::random::<u128>());
    let mut delay = std::time::Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = c
            .submit_job(v1::SubmitJobRequest {
                spec: Some(spec.clone()),
                request_id: request_id.clone(),
            })
            .await;
        match r {
            Ok(r) => {
                return r
                    .into_inner()
                    .status
                    .ok_or_else(|| anyhow!("coordinator returned no status"));
            }
            Err(s)
                if attempt < 5
                    && matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) =>
            {
                tracing::debug!(attempt, error = %s.message(), "submit failed; retrying with the same request id");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(s) => return Err(status_err(s)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Jsonl,
    /// One header line (before the first row), then one row per line (RFC 4180 quoting).
    Csv,
}

/// The CSV columns of a finding (`data` is the payload's JSON).
pub const FINDING_CSV_HEADER: &str = "cursor,job_id,task_id,parent_task_id,module,kind,target,port,minion,provider,started_at_ms,finished_at_ms,blob_sha256,data";

/// One CSV line from fields (quoted where needed).
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    fields
        .iter()
        .map(|f| overlord_query::export::csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Prints rows through `emit`, with the CSV header before the first one (none when there is no
/// row, so an empty answer stays empty).
pub struct Lines {
    pub format: Format,
    header: Option<&'static str>,
}

impl Lines {
    pub fn findings(format: Format) -> Self {
        Lines {
            format,
            header: (format == Format::Csv).then_some(FINDING_CSV_HEADER),
        }
    }
    pub fn task_errors(format: Format) -> Self {
        Lines {
            format,
            header: (format == Format::Csv).then_some(TASK_ERROR_CSV_HEADER),
        }
    }
    /// The header (once, CSV only) and then `line`.
    pub fn with_header(&mut self, line: String) -> String {
        match self.header.take() {
            Some(h) => format!("{h}\n{line}"),
            None => line,
        }
    }
    pub fn finding(&mut self, f: &v1::Finding) -> String {
        let l = finding_line(f, self.format);
        self.with_header(l)
    }
}

pub fn finding_json(f: &v1::Finding) -> serde_json::Value {
    serde_json::json!({
        "cursor": f.cursor, "job_id": f.job_id, "task_id": f.task_id,
        "parent_task_id": if f.parent_task_id == 0 { serde_json::Value::Null } else { f.parent_task_id.into() },
        "module": f.module, "kind": f.kind, "target": f.target,
        "port": if f.port == 0 { serde_json::Value::Null } else { f.port.into() },
        "data": serde_json::from_str::<serde_json::Value>(&f.data_json).unwrap_or(serde_json::Value::Null),
        "blob_sha256": f.blob_sha256, "minion": f.minion_id, "provider": f.provider,
        "started_at_ms": f.started_at_ms, "finished_at_ms": f.finished_at_ms,
    })
}

pub fn finding_line(f: &v1::Finding, fmt: Format) -> String {
    match fmt {
        Format::Jsonl => finding_json(f).to_string(),
        Format::Csv => csv_line(&[
            f.cursor.to_string(),
            f.job_id.to_string(),
            f.task_id.to_string(),
            if f.parent_task_id == 0 {
                String::new()
            } else {
                f.parent_task_id.to_string()
            },
            f.module.clone(),
            f.kind.clone(),
            f.target.clone(),
            if f.port == 0 {
                String::new()
            } else {
                f.port.to_string()
            },
            f.minion_id.clone(),
            f.provider.clone(),
            f.started_at_ms.to_string(),
            f.finished_at_ms.to_string(),
            f.blob_sha256.clone(),
            f.data_json.clone(),
        ]),
        Format::Table => {
            use overlord_core::finding::Payload;
            let data: serde_json::Value =
                serde_json::from_str(&f.data_json).unwrap_or(serde_json::Value::Null);
            let payload = Payload::parse(&f.kind, &data).payload;
            let detail = match &payload {
                Payload::Banner(b) => b.banner.trim_end().to_string(),
                Payload::OpenPort(_) => String::new(),
                Payload::Service(s) => {
                    let o = |v: &Option<String>| v.clone().unwrap_or_default();
                    let svc = match &s.tunnel {
                        None => o(&s.service),
                        Some(t) => format!("{t}/{}", o(&s.service)),
                    };
                    let shot = match s.screenshot {
                        None => String::new(),
                        Some(x) => format!(" screenshot:{}", x.as_str()),
                    };
                    let status = serde_json::to_value(s.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default();
                    // A service nobody recognised: what it said is all there is to read.
                    let said = match (&s.service, &s.banner) {
                        (None, Some(b)) if !b.text.is_empty() => {
                            format!(
                                " banner:{}",
                                overlord_core::task_error::one_line(&b.text, 80)
                            )
                        }
                        _ => String::new(),
                    };
                    format!(
                        "{svc} {} {} [{status}]{shot}{said}",
                        o(&s.product),
                        o(&s.version)
                    )
                }
                Payload::Screenshot(_) | Payload::Enrichment(_) | Payload::Leak(_) => {
                    crate::images::finding_detail(&payload, &f.blob_sha256)
                }
                _ => {
                    let s = data.to_string();
                    if s.len() > 120 {
                        format!("{}…", &s[..s.floor_char_boundary(120)])
                    } else {
                        s
                    }
                }
            };
            let addr = if f.port != 0 {
                if f.target.contains(':') {
                    format!("[{}]:{}", f.target, f.port)
                } else {
                    format!("{}:{}", f.target, f.port)
                }
            } else {
                f.target.clone()
            };
            // The cursor first: what `--after` takes to resume after this finding.
            format!(
                "{:>7} {:<10} {:<22} {:<12} {}",
                f.cursor, f.kind, addr, f.minion_id, detail
            )
        }
    }
}

fn bar(total: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total.max(1));
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  ETA {eta}  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb.enable_steady_tick(Duration::from_millis(200));
    pb
}

fn update(pb: &ProgressBar, st: &v1::JobStatus) {
    pb.set_length(st.tasks_total.max(1));
    pb.set_position(st.tasks_done + st.tasks_failed);
    pb.set_message(format!(
        "{} findings, {} leased, {} failed",
        st.findings, st.tasks_leased, st.tasks_failed
    ));
}

/// Follows a job until it finishes, calling `on_finding` for each finding exactly once; resumes
/// from the last cursor after a dropped stream. Returns the final status.
pub async fn watch(
    c: &mut Client,
    job_id: u64,
    mut after: u64,
    progress: bool,
    mut on_finding: impl FnMut(&v1::Finding),
) -> Result<v1::JobStatus> {
    let pb = bar(1, progress);
    let mut retries = 0;
    loop {
        let stream = c
            .watch_job(v1::WatchJobRequest {
                job_id,
                after_cursor: after,
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && retries < 50 => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(s) => return Err(status_err(s)),
        };
        loop {
            match stream.message().await {
                Ok(Some(v1::JobEvent { event: Some(ev) })) => match ev {
                    Event::Finding(f) => {
                        if f.cursor <= after {
                            continue; // never twice
                        }
                        after = f.cursor;
                        pb.suspend(|| on_finding(&f));
                    }
                    Event::Progress(st) => update(&pb, &st),
                    Event::Finished(st) => {
                        update(&pb, &st);
                        pb.finish_and_clear();
                        return Ok(st);
                    }
                },
                Ok(Some(_)) => {}
                Ok(None) if retries < 50 => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                // Connection-level trouble is retried from the cursor; a refusal is not.
                Err(s)
                    if retries < 50
                        && matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                                | tonic::Code::Internal
                        ) =>
                {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
                Ok(None) => bail!("watch stream ended before the job finished"),
                Err(s) => return Err(status_err(s)),
            }
        }
    }
}

pub async fn get(c: &mut Client, id: u64) -> Result<v1::JobStatus> {
    c.get_job(v1::GetJobRequest { job_id: id })
        .await
        .map_err(status_err)?
        .into_inner()
        .status
        .ok_or_else(|| anyhow!("no status"))
}

pub async fn list(c: &mut Client) -> Result<Vec<v1::JobStatus>> {
    Ok(c.list_jobs(v1::ListJobsRequest {})
        .await
        .map_err(status_err)?
        .into_inner()
        .jobs)
}

pub async fn cancel(c: &mut Client, id: u64) -> Result<v1::JobStatus> {
    c.cancel_job(v1::CancelJobRequest { job_id: id })
        .await
        .map_err(status_err)?
        .into_inner()
        .status
        .ok_or_else(|| anyhow!("no status"))
}

/// Every stored finding of a job, page by page.
pub async fn results(c: &mut Client, id: u64, mut each: impl FnMut(&v1::Finding)) -> Result<u64> {
    let mut after = 0;
    let mut n = 0;
    loop {
        let page = c
            .list_results(v1::ListResultsRequest {
                job_id: id,
                after_cursor: after,
                limit: 1000,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        for f in &page.findings {
            each(f);
            n += 1;
        }
        if page.next_cursor == 0 {
            return Ok(n);
        }
        after = page.next_cursor;
    }
}

pub fn state_name(s: i32) -> &'static str {
    match v1::JobState::try_from(s).unwrap_or(v1::JobState::Unspecified) {
        v1::JobState::Running => "running",
        v1::JobState::Completed => "completed",
        v1::JobState::Cancelled => "cancelled",
        v1::JobState::Unspecified => "unknown",
    }
}

pub fn status_line(st: &v1::JobStatus) -> String {
    let spec = st.spec.clone().unwrap_or_default();
    let waiting = if st.waiting_for_modules.is_empty() {
        String::new()
    } else {
        format!(
            "  WAITING for a minion with module {} (no live minion declares it)",
            st.waiting_for_modules.join(", ")
        )
    };
    format!(
        "job {:<4} {:<9} tasks {}/{} done, {} failed, {} cancelled, {} leased  findings {}  stale-rejected {}  modules {}  targets {}",
        st.job_id,
        state_name(st.state),
        st.tasks_done,
        st.tasks_total,
        st.tasks_failed,
        st.tasks_cancelled,
        st.tasks_leased,
        st.findings,
        st.stale_results_rejected,
        spec.modules.join(","),
        if spec.hitlist.is_empty() {
            spec.targets.join(",")
        } else {
            format!("hitlist {}", spec.hitlist)
        },
    ) + &waiting
        + &firehose_note(st.firehose.as_ref())
}

/// `  firehose published N lag L [ERROR …]` for `jobs get`/`jobs list` (empty when it is off).
pub fn firehose_note(f: Option<&v1::FirehoseStatus>) -> String {
    let Some(f) = f else {
        return String::new();
    };
    let mut s = format!("  firehose published {} lag {}", f.published_cursor, f.lag);
    if !f.error.is_empty() {
        s += &format!("  FIREHOSE ERROR: {}", f.error);
    }
    s
}

/// The quality ledger of a scan job, one line per minion, provider and (worst) target network.
pub fn quality_lines(q: &v1::QualityLedger) -> String {
    let mut out = String::new();
    let line = |kind: &str, r: &v1::LedgerRow| {
        let miss = if r.sampled > 0 {
            format!(
                "{:.2} % ({} of {} re-checked)",
                r.missed as f64 * 100.0 / r.sampled as f64,
                r.missed,
                r.sampled
            )
        } else {
            "not sampled".into()
        };
        format!(
            "  {kind:<8} {:<28} sent {:>10}  answered {:>10} ({:>6.2} %)  re-sent {:>8}  miss {miss}\n",
            r.key,
            r.sent,
            r.answered,
            if r.sent > 0 {
                r.answered as f64 * 100.0 / r.sent as f64
            } else {
                0.0
            },
            r.retried,
        )
    };
    out.push_str("quality:\n");
    for r in &q.minions {
        out.push_str(&line("minion", r));
    }
    for r in &q.providers {
        out.push_str(&line("provider", r));
    }
    for r in &q.nets {
        out.push_str(&line("net", r));
    }
    if q.nets_total as usize > q.nets.len() {
        out.push_str(&format!(
            "  ({} networks with loss or silence; the {} worst shown)\n",
            q.nets_total,
            q.nets.len()
        ));
    }
    for f in &q.flags {
        out.push_str(&format!("  FLAGGED: {f}\n"));
    }
    out
}

/// The CSV columns of a task error.
pub const TASK_ERROR_CSV_HEADER: &str = "task_id,parent_task_id,module,target,target_count,ports,input,state,attempts,minion,provider,class,error";

/// `failed` | `retrying` | `cancelled`.
pub fn task_error_state(s: i32) -> &'static str {
    match v1::TaskErrorState::try_from(s).unwrap_or(v1::TaskErrorState::Unspecified) {
        v1::TaskErrorState::Failed => "failed",
        v1::TaskErrorState::Retrying => "retrying",
        v1::TaskErrorState::Cancelled => "cancelled",
        v1::TaskErrorState::Unspecified => "unknown",
    }
}

/// The class name (`timeout`, `minion_lost`, …) of a wire error class.
pub fn error_class_name(c: i32) -> String {
    v1::TaskErrorClass::try_from(c)
        .map(|c| {
            c.as_str_name()
                .trim_start_matches("TASK_ERROR_CLASS_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("class-{c}"))
}

pub fn task_error_json(e: &v1::TaskError) -> serde_json::Value {
    serde_json::json!({
        "task_id": e.task_id,
        "parent_task_id": if e.parent_task_id == 0 { serde_json::Value::Null } else { e.parent_task_id.into() },
        "module": e.module, "target": e.target, "target_count": e.target_count, "ports": e.ports,
        "input": e.input, "state": task_error_state(e.state), "attempts": e.attempts,
        "minion": e.minion, "provider": e.provider, "class": error_class_name(e.class),
        "error": e.error,
    })
}

pub fn task_error_line(e: &v1::TaskError, fmt: Format) -> String {
    match fmt {
        Format::Jsonl => task_error_json(e).to_string(),
        Format::Csv => csv_line(&[
            e.task_id.to_string(),
            if e.parent_task_id == 0 {
                String::new()
            } else {
                e.parent_task_id.to_string()
            },
            e.module.clone(),
            e.target.clone(),
            e.target_count.to_string(),
            e.ports.clone(),
            e.input.clone(),
            task_error_state(e.state).to_string(),
            e.attempts.to_string(),
            e.minion.clone(),
            e.provider.clone(),
            error_class_name(e.class),
            e.error.clone(),
        ]),
        Format::Table => {
            let what = if !e.input.is_empty() {
                e.input.clone()
            } else if e.ports.is_empty() {
                e.target.clone()
            } else {
                format!("{} ports {}", e.target, e.ports)
            };
            format!(
                "task {:<6} {:<9} {:<10} attempt {:<2} minion {:<12} {:<13} {}  {}",
                e.task_id,
                task_error_state(e.state),
                e.module,
                e.attempts,
                if e.minion.is_empty() { "-" } else { &e.minion },
                error_class_name(e.class),
                overlord_core::task_error::one_line(&e.error, 160),
                what
            )
        }
    }
}

/// One page of a job's task errors (tasks with id > `after`).
pub async fn task_errors(
    c: &mut Client,
    job: u64,
    after: u64,
    limit: u32,
) -> Result<v1::ListTaskErrorsResponse> {
    Ok(c.list_task_errors(v1::ListTaskErrorsRequest {
        job_id: job,
        after_task: after,
        limit,
    })
    .await
    .map_err(status_err)?
    .into_inner())
}

/// `overlord jobs get`: the status line, then the spec, params, counters, errors by class.
pub fn job_detail(st: &v1::JobStatus) -> String {
    let spec = st.spec.clone().unwrap_or_default();
    let mut out = status_line(st) + "\n";
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    out += &format!(
        "  name        {}\n",
        if spec.name.is_empty() {
            "-"
        } else {
            &spec.name
        }
    );
    out += &format!("  targets     {}\n", list(&spec.targets));
    out += &format!(
        "  ports       {}\n",
        if spec.ports.is_empty() {
            "-"
        } else {
            &spec.ports
        }
    );
    out += &format!("  modules     {}\n", list(&spec.modules));
    if !spec.inputs.is_empty() {
        out += &format!("  inputs      {}\n", list(&spec.inputs));
    }
    out += &format!(
        "  rate limit  {}\n",
        if spec.rate_limit == 0 {
            "unlimited".to_string()
        } else {
            format!("{}/s", spec.rate_limit)
        }
    );
    let params = if spec.params_json.trim().is_empty() {
        "{}".to_string()
    } else {
        spec.params_json.clone()
    };
    out += &format!("  params      {params}\n");
    for r in &spec.rules {
        out += &format!("  rule        {r}\n");
    }
    if !spec.disable_rules.is_empty() {
        out += &format!("  disabled    {}\n", list(&spec.disable_rules));
    }
    out += &format!(
        "  tasks       total {}  done {}  failed {}  cancelled {}  pending {}  leased {}  unexpanded {}\n",
        st.tasks_total,
        st.tasks_done,
        st.tasks_failed,
        st.tasks_cancelled,
        st.tasks_pending,
        st.tasks_leased,
        st.tasks_unexpanded
    );
    out += &format!(
        "  findings    {}  unknown kind {}  unknown fields {}  stale results rejected {}\n",
        st.findings,
        st.findings_unknown_kind,
        st.findings_unknown_fields,
        st.stale_results_rejected
    );
    if st.errors.is_empty() {
        out += "  errors      none\n";
    } else {
        let by: Vec<String> = st
            .errors
            .iter()
            .map(|e| format!("{} {}", error_class_name(e.class), e.attempts))
            .collect();
        out += &format!(
            "  errors      {}  (failed attempts by class; `overlord jobs errors {}` lists the tasks)\n",
            by.join(", "),
            st.job_id
        );
    }
    out
}

/// The top-level keys of a JSON object (CSV columns of JSON rows), in serde_json's order.
pub fn json_keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// A JSON object as a CSV row over `keys`: strings as they are, other scalars as JSON text,
/// arrays and objects as JSON, missing keys empty.
pub fn json_csv_row(v: &serde_json::Value, keys: &[String]) -> String {
    let cells: Vec<String> = keys
        .iter()
        .map(|k| match v.get(k) {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(x) => x.to_string(),
        })
        .collect();
    csv_line(&cells)
}

#[cfg(test)]
mod csv_tests {
    use super::*;

    #[test]
    fn csv_rows_quote_and_flatten() {
        let v = serde_json::json!({"a": "x,y", "b": 3, "c": [1, 2], "d": null});
        let keys = json_keys(&v);
        assert_eq!(keys, ["a", "b", "c", "d"]);
        assert_eq!(json_csv_row(&v, &keys), "\"x,y\",3,\"[1,2]\",");
        assert_eq!(csv_line(&["a\"b", "c"]), "\"a\"\"b\",c");
    }

    #[test]
    fn the_csv_header_comes_once_before_the_first_row() {
        let f = v1::Finding {
            cursor: 7,
            kind: "open_port".into(),
            target: "127.0.0.1".into(),
            port: 22,
            data_json: "{\"port\":22}".into(),
            ..Default::default()
        };
        let mut l = Lines::findings(Format::Csv);
        let first = l.finding(&f);
        assert_eq!(first.lines().next(), Some(FINDING_CSV_HEADER));
        assert_eq!(
            FINDING_CSV_HEADER.matches(',').count(),
            first.lines().nth(1).unwrap().matches(',').count()
        );
        assert!(!l.finding(&f).contains("cursor"));
        let mut t = Lines::findings(Format::Table);
        assert!(t.finding(&f).trim_start().starts_with("7 open_port"));
    }
}
