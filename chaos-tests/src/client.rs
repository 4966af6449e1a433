//! Typed clients of the coordinator's `JobService`, and a watch stream that survives faults by resuming
//! from its cursor (and records whether resuming ever left a gap or repeated a finding).
//!
//! A secured sandbox (mTLS + API tokens) registers its coordinator's addresses with
//! [`register_credentials`]: every client made here for an `https://` URL of such an address
//! verifies the coordinator against that cluster CA and sends that token; an `https://` URL with no
//! registered credentials is an error, never a plaintext fallback.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use overlord_proto::v1::job_event::Event;
use overlord_proto::v1::job_service_client::JobServiceClient;
use overlord_proto::v1::{
    Finding, GetJobRequest, JobSpec, JobState, JobStatus, ListResultsRequest, SubmitJobRequest,
    WatchJobRequest,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type JobClient = JobServiceClient<InterceptedService<Channel, Bearer>>;

/// What a client of a secured coordinator needs: the cluster CA (PEM) and an API token.
#[derive(Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials { .. }") // never print the token
    }
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Credentials>>> {
    static R: OnceLock<Mutex<HashMap<String, Arc<Credentials>>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// `host:port` of a URL (`https://127.0.0.1:5000/x` → `127.0.0.1:5000`).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}

/// Clients made for `https://` URLs of `authority` (`host:port`) use `creds`.
pub fn register_credentials(authority_of: &str, creds: Arc<Credentials>) {
    registry()
        .lock()
        .expect("credentials")
        .insert(authority(authority_of).to_string(), creds);
}

/// Forgets the credentials of `authority` (a sandbox that stops).
pub fn forget_credentials(authority_of: &str) {
    registry()
        .lock()
        .expect("credentials")
        .remove(authority(authority_of));
}

fn credentials_for(url: &str) -> Option<Arc<Credentials>> {
    registry()
        .lock()
        .expect("credentials")
        .get(authority(url))
        .cloned()
}

/// Adds `authorization: Bearer <token>` to every call (nothing without a token).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The endpoint and bearer for `url`: TLS with the registered CA and token for `https://`.
/// Panics on an `https://` URL without registered credentials (a test setup error).
fn endpoint(url: &str) -> (Endpoint, Bearer) {
    let ep = Endpoint::from_shared(url.to_string())
        .expect("valid url")
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if !url.starts_with("https://") {
        return (ep, Bearer(None));
    }
    let creds = credentials_for(url)
        .unwrap_or_else(|| panic!("no credentials registered for {url}: https never falls back"));
    let ep = ep
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&creds.ca_pem)))
        .expect("tls config");
    let v = format!("Bearer {}", creds.token)
        .parse()
        .expect("ascii token");
    (ep, Bearer(Some(v)))
}

/// A lazily connecting client: it does not fail while the coordinator is down, calls fail with
/// `Unavailable` until it is back.
pub fn job_client(url: &str) -> JobClient {
    let (ep, bearer) = endpoint(url);
    let ep = ep.timeout(Duration::from_secs(10));
    with_limits(JobServiceClient::with_interceptor(
        ep.connect_lazy(),
        bearer,
    ))
}

/// A client connected now (not lazily; no per-call timeout, so a watch may run long): `Err`
/// while nothing listens at `url`.
pub async fn connect(url: &str) -> Result<JobClient, tonic::transport::Error> {
    let (ep, bearer) = endpoint(url);
    Ok(with_limits(JobServiceClient::with_interceptor(
        ep.connect().await?,
        bearer,
    )))
}

fn with_limits(c: JobClient) -> JobClient {
    c.max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(overlord_proto::MAX_MESSAGE_BYTES)
}

/// A port-scan job spec over `targets` × `ports`.
pub fn scan_spec(name: &str, targets: Vec<String>, ports: String, modules: &[&str]) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        targets,
        ports,
        modules: modules.iter().map(|m| m.to_string()).collect(),
        rate_limit: 0,
        inputs: vec![],
        params_json: String::new(),
        ..Default::default()
    }
}

pub async fn submit(c: &mut JobClient, spec: JobSpec) -> Result<JobStatus, tonic::Status> {
    let r = c
        .submit_job(SubmitJobRequest {
            spec: Some(spec),
            ..Default::default()
        })
        .await?
        .into_inner();
    r.status
        .ok_or_else(|| tonic::Status::internal("SubmitJob reply without status"))
}

pub async fn get(c: &mut JobClient, job_id: u64) -> Result<JobStatus, tonic::Status> {
    c.get_job(GetJobRequest { job_id })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| tonic::Status::internal("GetJob reply without status"))
}

pub fn is_terminal(s: &JobStatus) -> bool {
    matches!(
        JobState::try_from(s.state),
        Ok(JobState::Completed) | Ok(JobState::Cancelled)
    )
}

/// Every stored finding of a job, in cursor order, through `ListResults` paging.
pub async fn all_results(c: &mut JobClient, job_id: u64) -> Result<Vec<Finding>, tonic::Status> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .list_results(ListResultsRequest {
                job_id,
                after_cursor: after,
                limit: 10_000,
            })
            .await?
            .into_inner();
        out.extend(page.findings);
        if page.next_cursor == 0 {
            return Ok(out);
        }
        if page.next_cursor <= after {
            return Err(tonic::Status::internal(format!(
                "ListResults did not advance: next_cursor {} after {after}",
                page.next_cursor
            )));
        }
        after = page.next_cursor;
    }
}

/// What a resumable watch saw.
#[derive(Debug, Default, Clone)]
pub struct WatchLog {
    /// Findings in the order received, across resumes.
    pub findings: Vec<Finding>,
    pub resumes: u64,
    /// A finding with a cursor not above the last one received (seen twice, or out of order).
    pub non_increasing: u64,
    pub finished: Option<JobStatus>,
    pub errors: Vec<String>,
}

impl WatchLog {
    /// Compares the watched findings with the stored ones: cursors missing from the watch (gaps) and
    /// cursors received more than once (duplicates).
    pub fn compare(&self, stored: &[Finding]) -> (Vec<u64>, Vec<u64>) {
        let mut seen: BTreeMap<u64, u32> = BTreeMap::new();
        for f in &self.findings {
            *seen.entry(f.cursor).or_default() += 1;
        }
        let gaps = stored
            .iter()
            .map(|f| f.cursor)
            .filter(|c| !seen.contains_key(c))
            .collect();
        let dups = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(c, _)| *c)
            .collect();
        (gaps, dups)
    }
}

/// Options of a resumable watcher.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Delay after each event (a slow subscriber).
    pub per_event_delay: Duration,
    /// Give up after this long overall.
    pub deadline: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            per_event_delay: Duration::ZERO,
            deadline: Duration::from_secs(120),
        }
    }
}

/// Follows a job to its end through `WatchJob`, reconnecting from the last cursor after any error
/// (coordinator restarts, connection resets). Returns what it saw.
pub async fn resumable_watch(url: String, job_id: u64, opts: WatchOptions) -> WatchLog {
    let mut log = WatchLog::default();
    let mut cursor = 0u64;
    let deadline = tokio::time::Instant::now() + opts.deadline;
    let mut first = true;
    while tokio::time::Instant::now() < deadline {
        if !first {
            log.resumes += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first = false;
        if let Err(e) = Endpoint::from_shared(url.clone()) {
            log.errors.push(e.to_string());
            return log;
        }
        let (ep, bearer) = endpoint(&url);
        let Ok(ch) = ep.connect().await else { continue };
        let mut c = JobServiceClient::with_interceptor(ch, bearer)
            .max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES);
        let mut stream = match c
            .watch_job(WatchJobRequest {
                job_id,
                after_cursor: cursor,
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(e) => {
                log.errors.push(format!("{:?}: {}", e.code(), e.message()));
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout_at(deadline, stream.message()).await;
            match next {
                Err(_) => return log,
                Ok(Err(e)) => {
                    log.errors.push(format!("{:?}: {}", e.code(), e.message()));
                    break;
                }
                Ok(Ok(None)) => break, // stream ended without `finished`: resume
                Ok(Ok(Some(ev))) => match ev.event {
                    Some(Event::Finding(f)) => {
                        if f.cursor <= cursor {
                            log.non_increasing += 1;
                        }
                        cursor = cursor.max(f.cursor);
                        log.findings.push(f);
                        if !opts.per_event_delay.is_zero() {
                            tokio::time::sleep(opts.per_event_delay).await;
                        }
                    }
                    Some(Event::Finished(s)) => {
                        log.finished = Some(s);
                        return log;
                    }
                    Some(Event::Progress(_)) | None => {}
                },
            }
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(cursor: u64) -> Finding {
        Finding {
            cursor,
            ..Default::default()
        }
    }

    #[test]
    fn watch_compare_finds_gaps_and_duplicates() {
        let stored: Vec<Finding> = (1..=5).map(f).collect();
        let log = WatchLog {
            findings: vec![f(1), f(2), f(2), f(4), f(5)],
            ..Default::default()
        };
        let (gaps, dups) = log.compare(&stored);
        assert_eq!(gaps, vec![3]);
        assert_eq!(dups, vec![2]);
        let clean = WatchLog {
            findings: stored.clone(),
            ..Default::default()
        };
        assert_eq!(clean.compare(&stored), (vec![], vec![]));
    }
}
