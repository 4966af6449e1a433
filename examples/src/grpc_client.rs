//! A gRPC client of the coordinator's public API, generated from `proto/` by this crate's
//! `build.rs` (no Overlord crate is used): it submits a job, watches it, drops the watch after the
//! first finding and resumes it from that finding's cursor (what a client does after a
//! disconnect), pages the stored results, and searches the query index for the job's services.
//!
//! With a coordinator that requires tokens, pass one (`OVERLORD_TOKEN`); it goes out as
//! `authorization: Bearer <token>` on every call.

use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;

/// Code generated from `proto/overlord/v1/{job,query,common}.proto`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("overlord.v1");
}

/// Adds the bearer token (when there is one) to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    pub fn new(token: Option<&str>) -> Result<Self> {
        Ok(Bearer(match token {
            None | Some("") => None,
            Some(t) => Some(
                format!("Bearer {}", t.trim())
                    .parse()
                    .context("the token is not valid header text")?,
            ),
        }))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Intercepted = tonic::service::interceptor::InterceptedService<Channel, Bearer>;
pub type Jobs = v1::job_service_client::JobServiceClient<Intercepted>;
pub type Query = v1::query_service_client::QueryServiceClient<Intercepted>;

/// What the client does, from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub coordinator: String,
    pub token: Option<String>,
    pub targets: Vec<String>,
    pub ports: String,
    pub modules: Vec<String>,
    /// Findings per `ListResults` page and rows per `Search` page.
    pub page: u32,
    /// How long to wait for the job and for the index to catch up.
    pub timeout: Duration,
}

/// What the client saw; `run` fails when the parts disagree (a lost or repeated finding).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub job_id: u64,
    /// Cursor the watch was resumed after (0 when the job had no finding before it finished).
    pub resumed_after: u64,
    /// Cursors received by the two watches together, in order.
    pub watched: Vec<u64>,
    pub result_pages: usize,
    pub results: Vec<u64>,
    /// `ip:port` of every service row the search returned, and the pages it took.
    pub services: Vec<String>,
    pub search_pages: usize,
    pub final_state: String,
}

pub async fn connect(plan: &Plan) -> Result<(Jobs, Query)> {
    let ch = Channel::from_shared(plan.coordinator.clone())
        .context("coordinator URL")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {}", plan.coordinator))?;
    let auth = Bearer::new(plan.token.as_deref())?;
    Ok((
        v1::job_service_client::JobServiceClient::with_interceptor(ch.clone(), auth.clone()),
        v1::query_service_client::QueryServiceClient::with_interceptor(ch, auth),
    ))
}

fn state_name(s: i32) -> String {
    v1::JobState::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("JOB_STATE_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| format!("state-{s}"))
}

/// Runs the whole walk-through, printing one line per step through `say`.
pub async fn run(plan: &Plan, mut say: impl FnMut(String)) -> Result<Outcome> {
    let (mut jobs, mut query) = connect(plan).await?;
    let deadline = Instant::now() + plan.timeout;
    let mut out = Outcome::default();

    // 1. Submit. The request id makes a retried submission return the same job.
    let request_id = format!(
        "grpc-client-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    );
    let submitted = jobs
        .submit_job(v1::SubmitJobRequest {
            spec: Some(v1::JobSpec {
                name: "grpc-client example".into(),
                targets: plan.targets.clone(),
                ports: plan.ports.clone(),
                modules: plan.modules.clone(),
                ..Default::default()
            }),
            request_id,
        })
        .await
        .context("SubmitJob")?
        .into_inner();
    out.job_id = submitted.job_id;
    say(format!("submitted job {}", out.job_id));

    // 2. Watch until the first finding, then hang up (a client losing its connection).
    let mut stream = jobs
        .watch_job(v1::WatchJobRequest {
            job_id: out.job_id,
            after_cursor: 0,
        })
        .await
        .context("WatchJob")?
        .into_inner();
    let mut finished = None;
    while let Some(ev) = tokio::time::timeout_at(deadline.into(), stream.message())
        .await
        .context("watch timed out")?
        .context("watch stream")?
    {
        match ev.event {
            Some(v1::job_event::Event::Finding(f)) => {
                say(format!(
                    "watch: cursor {} {} {}:{}",
                    f.cursor, f.kind, f.target, f.port
                ));
                out.watched.push(f.cursor);
                break;
            }
            Some(v1::job_event::Event::Finished(st)) => {
                finished = Some(st);
                break;
            }
            _ => {}
        }
    }
    drop(stream);
    out.resumed_after = out.watched.last().copied().unwrap_or(0);

    // 3. Resume from the last cursor seen: only later findings come, then the final status.
    if finished.is_none() {
        say(format!(
            "disconnected; resuming the watch after cursor {}",
            out.resumed_after
        ));
        let mut stream = jobs
            .watch_job(v1::WatchJobRequest {
                job_id: out.job_id,
                after_cursor: out.resumed_after,
            })
            .await
            .context("WatchJob (resumed)")?
            .into_inner();
        while let Some(ev) = tokio::time::timeout_at(deadline.into(), stream.message())
            .await
            .context("watch timed out")?
            .context("watch stream")?
        {
            match ev.event {
                Some(v1::job_event::Event::Finding(f)) => {
                    say(format!(
                        "watch: cursor {} {} {}:{}",
                        f.cursor, f.kind, f.target, f.port
                    ));
                    if f.cursor <= *out.watched.last().unwrap_or(&0) {
                        bail!("cursor {} came again after the resume", f.cursor);
                    }
                    out.watched.push(f.cursor);
                }
                Some(v1::job_event::Event::Finished(st)) => {
                    finished = Some(st);
                    break;
                }
                _ => {}
            }
        }
    }
    let st = finished.context("the watch ended without the job's final status")?;
    out.final_state = state_name(st.state);
    say(format!(
        "finished: {} tasks {}/{} done, {} failed, findings {}",
        out.final_state, st.tasks_done, st.tasks_total, st.tasks_failed, st.findings
    ));

    // 4. Page the stored results.
    let mut after = 0;
    loop {
        let page = jobs
            .list_results(v1::ListResultsRequest {
                job_id: out.job_id,
                after_cursor: after,
                limit: plan.page,
            })
            .await
            .context("ListResults")?
            .into_inner();
        out.result_pages += 1;
        out.results.extend(page.findings.iter().map(|f| f.cursor));
        if page.next_cursor == 0 {
            break;
        }
        after = page.next_cursor;
    }
    say(format!(
        "results: {} findings in {} pages of {}",
        out.results.len(),
        out.result_pages,
        plan.page
    ));
    if out.watched != out.results {
        bail!(
            "the watch saw cursors {:?}, the results hold {:?}",
            out.watched,
            out.results
        );
    }

    // 5. Search the index for the job's services. The index follows the store with a small lag
    //    (SearchResponse.lag says how much), so wait until it has caught up with this job.
    let q = format!("job:{}", out.job_id);
    loop {
        let (mut rows, mut pages, mut after) = (Vec::new(), 0, String::new());
        let mut lag;
        loop {
            let r = query
                .search(v1::SearchRequest {
                    query: q.clone(),
                    view: v1::SearchView::Services as i32,
                    limit: plan.page,
                    after: after.clone(),
                    deadline_ms: 0,
                })
                .await
                .context("Search")?
                .into_inner();
            pages += 1;
            lag = r.lag.map(|l| l.findings).unwrap_or(0);
            rows.extend(r.services.iter().map(|s| format!("{}:{}", s.ip, s.port)));
            if r.next_after.is_empty() {
                break;
            }
            after = r.next_after;
        }
        if lag == 0 || Instant::now() >= deadline {
            out.services = rows;
            out.search_pages = pages;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    say(format!(
        "search {q}: {} services in {} pages: {}",
        out.services.len(),
        out.search_pages,
        out.services.join(" ")
    ));
    Ok(out)
}
