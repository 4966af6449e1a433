//! Scenario engine: jobs over ledgers, a fault schedule applied to a live cluster, invariants checked
//! when the faults stop, figures returned. Used by the CI tests (bounded) and by `overlord-soak`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::client::{self, WatchLog, WatchOptions};
use crate::faults::{Fault, FaultKind, FaultMix, Schedule, ScheduleShape};
use crate::figures::Figures;
use crate::ledger::{Ledger, LedgerSpec, loopback_cidr, loopback_ips};
use crate::proxy::LinkFault;
use crate::rng::Rng;
use crate::rogue::{RogueIdentity, RogueMinion, execute_scan};
use crate::sandbox::{Cluster, ClusterBuilder, Timing, wait_serving_url};
use crate::verify::{verify_job, wait_terminal};

/// A randomized run.
#[derive(Debug, Clone)]
pub struct RandomRun {
    pub name: String,
    pub seed: u64,
    pub faults: usize,
    pub mean_gap: Duration,
    pub max_outage: Duration,
    pub per_provider: Vec<usize>,
    pub capacity: u32,
    pub timing: Timing,
    pub mix: FaultMix,
    /// Keep submitting jobs until at least this many tasks were submitted (and the faults are done).
    pub min_tasks: u64,
    /// Prefix of each job's target CIDR (/18 = 16,384 tasks with ≤ 2048 ports).
    pub job_prefix: u8,
    /// Addresses per job that may hold open cells, and ports per job.
    pub open_ips: usize,
    pub ports: usize,
    /// Jobs in flight at once.
    pub concurrent_jobs: usize,
    /// Upper bound on coordinator RSS (bytes) — "memory stays bounded".
    pub rss_limit: u64,
    /// Time allowed for all jobs to finish once faults stop.
    pub settle: Duration,
    /// A secured cluster: minions enrolled over mTLS, clients with an API token over TLS.
    pub tls: bool,
}

impl RandomRun {
    /// A bounded CI run: about `faults` faults over a few jobs of a /22 (1,024 tasks each).
    pub fn ci(seed: u64, faults: usize) -> Self {
        Self {
            name: "random-ci".into(),
            seed,
            faults,
            mean_gap: Duration::from_millis(400),
            max_outage: Duration::from_millis(1500),
            per_provider: vec![2, 2, 1],
            capacity: 8,
            timing: Timing::default(),
            mix: FaultMix::default(),
            min_tasks: 3_000,
            job_prefix: 22,
            open_ips: 24,
            ports: 4,
            concurrent_jobs: 2,
            rss_limit: 1 << 30,
            settle: Duration::from_secs(120),
            tls: false,
        }
    }

    /// The soak: ≥ 1,000 faults over jobs of 16,384 tasks each.
    pub fn soak(seed: u64, faults: usize) -> Self {
        Self {
            name: "soak".into(),
            mean_gap: Duration::from_millis(250),
            min_tasks: 50_000,
            job_prefix: 18,
            open_ips: 64,
            ports: 3,
            settle: Duration::from_secs(300),
            ..Self::ci(seed, faults)
        }
    }
}

struct LiveJob {
    id: u64,
    ledger: Ledger,
    watch: JoinHandle<WatchLog>,
}

/// Runs a randomized scenario and returns its figures and violations (empty = clean).
pub async fn random_run(cfg: &RandomRun) -> anyhow::Result<(Figures, Vec<String>)> {
    eprintln!(
        "chaos run {}: seed {} (replay with CHAOS_SEED={})",
        cfg.name, cfg.seed, cfg.seed
    );
    let mut figs = Figures::new(&cfg.name, Some(cfg.seed));
    let cluster = ClusterBuilder::new(&cfg.name, &cfg.per_provider, cfg.capacity)
        .timing(cfg.timing.clone())
        .tls(cfg.tls)
        .start()
        .await?;
    figs.observe_rss(cluster.coordinator_rss());
    let shape = ScheduleShape {
        minion_providers: cluster
            .minions
            .iter()
            .map(|m| m.spec.provider.trim_start_matches('p').parse().unwrap_or(0))
            .collect(),
        mean_gap: cfg.mean_gap,
        max_outage: cfg.max_outage,
    };
    let schedule = Schedule::random(cfg.seed, cfg.faults, &shape, &cfg.mix);
    let url = cluster.url();
    // A secured run must really be secured (else it proves nothing about mTLS).
    let mut early_violations = cluster.security_violations().await;
    let cluster = Arc::new(Mutex::new(cluster));
    let figs_shared = Arc::new(std::sync::Mutex::new(
        Vec::<(FaultKind, Option<Duration>)>::new(),
    ));

    // Fault injector.
    let injector = {
        let cluster = cluster.clone();
        let log = figs_shared.clone();
        let schedule = schedule.clone();
        tokio::spawn(async move { inject(cluster, schedule, log).await })
    };

    // RSS sampler.
    let rss_samples = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let sampler = {
        let cluster = cluster.clone();
        let samples = rss_samples.clone();
        tokio::spawn(async move {
            loop {
                if let Some(r) = cluster.lock().await.coordinator_rss() {
                    samples.lock().expect("rss").push(r);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // Job producer: keep `concurrent_jobs` in flight until the faults are done and enough tasks ran.
    let mut rng = Rng::new(cfg.seed ^ 0x005E_ED0F_10B5);
    let mut jobs: Vec<LiveJob> = Vec::new();
    let mut submitted_tasks = 0u64;
    let mut c = client::job_client(&url);
    let mut n = 0;
    loop {
        let faults_done = injector.is_finished();
        if faults_done && submitted_tasks >= cfg.min_tasks {
            break;
        }
        let running = count_running(&mut c, &jobs).await;
        if running < cfg.concurrent_jobs {
            n += 1;
            let ((base, prefix), ips) = loopback_cidr(&mut rng, cfg.job_prefix, cfg.open_ips);
            let ledger = Ledger::sparse(
                &LedgerSpec {
                    ips,
                    ports: cfg.ports,
                    open_ratio: 0.5,
                    banner: false,
                    cidr: Some((base, prefix)),
                },
                &mut rng,
            )
            .await?;
            let mut spec = client::scan_spec(
                &format!("{}-{n}", cfg.name),
                ledger.targets(),
                ledger.ports_arg(),
                &["portscan"],
            );
            // Sixteen addresses per task: a /22 job is 64 tasks spread over the minions, so faults
            // land on leases mid-job (sized by probes alone, a whole /22 was one or two tasks).
            spec.params_json = format!(r#"{{"probes_per_task": {}}}"#, 16 * cfg.ports);
            // Submission itself may hit a coordinator restart or a client link fault: retry; a job
            // accepted twice would show up as an extra job, so only retry on errors before acceptance.
            let status = submit_retrying(&mut c, spec, Duration::from_secs(60)).await?;
            submitted_tasks += ledger.target_count() * (ledger.ports().len().div_ceil(2048) as u64);
            let slow = n % 3 == 0;
            let watch = tokio::spawn(client::resumable_watch(
                url.clone(),
                status.job_id,
                WatchOptions {
                    per_event_delay: if slow {
                        Duration::from_millis(20)
                    } else {
                        Duration::ZERO
                    },
                    deadline: Duration::from_secs(3600),
                },
            ));
            if slow {
                figs.fault(FaultKind::SlowWatcher);
            }
            jobs.push(LiveJob {
                id: status.job_id,
                ledger,
                watch,
            });
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    injector.await??;
    for (kind, recovery) in figs_shared.lock().expect("fault log").drain(..) {
        figs.fault(kind);
        if let Some(r) = recovery {
            figs.recovery.push(r);
        }
    }

    // Faults stop: heal everything, then every job must finish and every invariant hold.
    let mut violations = std::mem::take(&mut early_violations);
    {
        let mut cl = cluster.lock().await;
        cl.heal_all()?;
        if !cl.coordinator().is_alive() {
            let t = cl.restart_coordinator().await?;
            figs.recovery.push(t);
        }
    }
    let settle_deadline = Instant::now() + cfg.settle;
    for job in &jobs {
        let left = settle_deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        if let Err(e) = wait_terminal(&c, job.id, left).await {
            violations.push(format!("job {} never terminal: {e}", job.id));
        }
    }
    // Every job the coordinator accepted — including one whose submission reply was lost in a fault
    // and which the client never learned about — must be terminal too.
    let all_terminal = crate::wait::wait_for(
        Duration::from_secs(60),
        "every accepted job terminal",
        || {
            let mut c = c.clone();
            async move {
                let jobs = c
                    .list_jobs(overlord_proto::v1::ListJobsRequest {})
                    .await
                    .map_err(|e| format!("{:?}: {}", e.code(), e.message()))?
                    .into_inner()
                    .jobs;
                let open: Vec<u64> = jobs
                    .iter()
                    .filter(|j| !client::is_terminal(j))
                    .map(|j| j.job_id)
                    .collect();
                if open.is_empty() {
                    Ok(Some(jobs.len()))
                } else {
                    Err(format!("jobs not terminal: {open:?}"))
                }
            }
        },
    )
    .await;
    match all_terminal {
        Ok(n) if n > jobs.len() + 1 => eprintln!(
            "note: {} jobs accepted for {} submitted (replies lost in faults)",
            n,
            jobs.len()
        ),
        Ok(_) => {}
        Err(e) => violations.push(e.to_string()),
    }
    for job in jobs {
        let log = match tokio::time::timeout(Duration::from_secs(60), job.watch).await {
            Ok(Ok(l)) => Some(l),
            _ => {
                violations.push(format!("job {}: watcher did not finish", job.id));
                None
            }
        };
        let v = verify_job(&mut c, job.id, Some(&job.ledger), log.as_ref(), &mut figs).await?;
        violations.extend(v.violations);
    }

    // Once faults stop, a fresh job succeeds.
    let fresh = fresh_job_succeeds(&url, &mut rng, &mut figs).await;
    if let Err(e) = fresh {
        violations.push(format!("fresh job after faults: {e}"));
    } else if let Ok(v) = fresh {
        violations.extend(v);
    }

    sampler.abort();
    for r in rss_samples.lock().expect("rss").iter() {
        figs.observe_rss(Some(*r));
    }
    if let Some(max) = figs.coordinator_rss_max
        && max > cfg.rss_limit
    {
        violations.push(format!(
            "coordinator RSS {max} bytes above the bound {}",
            cfg.rss_limit
        ));
    }
    let mut cl = cluster.lock().await;
    for crash in cl.crashed() {
        violations.push(crash);
    }
    if !violations.is_empty() {
        eprintln!("{}", cl.dump_logs(4096));
        let kept = cl.keep();
        eprintln!("sandbox kept at {}", kept.display());
    }
    Ok((figs, violations))
}

async fn count_running(c: &mut client::JobClient, jobs: &[LiveJob]) -> usize {
    let mut n = 0;
    for j in jobs {
        match client::get(c, j.id).await {
            Ok(s) if client::is_terminal(&s) => {}
            _ => n += 1,
        }
    }
    n
}

/// Submits, retrying while the coordinator is unreachable. Only `Unavailable`/`DeadlineExceeded`
/// before any reply are retried.
pub async fn submit_retrying(
    c: &mut client::JobClient,
    spec: overlord_proto::v1::JobSpec,
    timeout: Duration,
) -> anyhow::Result<overlord_proto::v1::JobStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match client::submit(c, spec.clone()).await {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => anyhow::bail!("submit failed: {:?}: {}", e.code(), e.message()),
        }
    }
}

/// A small dense job after the faults: must complete with every open port exactly once.
pub async fn fresh_job_succeeds(
    url: &str,
    rng: &mut Rng,
    figs: &mut Figures,
) -> anyhow::Result<Vec<String>> {
    let ips = loopback_ips(rng, 6);
    let ledger = Ledger::dense(
        &LedgerSpec {
            ips,
            ports: 5,
            open_ratio: 0.4,
            banner: false,
            cidr: None,
        },
        rng,
    )
    .await?;
    let mut c = client::job_client(url);
    let spec = client::scan_spec(
        "fresh-after-faults",
        ledger.targets(),
        ledger.ports_arg(),
        &["portscan"],
    );
    let s = submit_retrying(&mut c, spec, Duration::from_secs(30)).await?;
    let watch = tokio::spawn(client::resumable_watch(
        url.to_string(),
        s.job_id,
        WatchOptions::default(),
    ));
    wait_terminal(&c, s.job_id, Duration::from_secs(60)).await?;
    let log = watch.await?;
    let v = verify_job(&mut c, s.job_id, Some(&ledger), Some(&log), figs).await?;
    Ok(v.violations)
}

/// What the injector reports per fault: its kind and, for a coordinator restart, the recovery time.
pub type FaultLog = Arc<std::sync::Mutex<Vec<(FaultKind, Option<Duration>)>>>;

/// Applies a schedule to a live cluster. Records `(kind, coordinator recovery time)` per fault.
pub async fn inject(
    cluster: Arc<Mutex<Cluster>>,
    schedule: Schedule,
    log: FaultLog,
) -> anyhow::Result<()> {
    let start = tokio::time::Instant::now();
    let mut pending: Vec<JoinHandle<anyhow::Result<()>>> = Vec::new();
    for (i, step) in schedule.steps.iter().enumerate() {
        tokio::time::sleep_until(start + step.at).await;
        let kind = step.fault.kind();
        let cl = cluster.clone();
        let log2 = log.clone();
        let fault = step.fault.clone();
        match fault {
            Fault::KillMinion { minion, down_for } => {
                cl.lock().await.minion(minion).process.kill9();
                pending.push(tokio::spawn(async move {
                    tokio::time::sleep(down_for).await;
                    cl.lock().await.minion(minion).process.start_again()?;
                    Ok(())
                }));
            }
            Fault::StopMinion {
                minion,
                stopped_for,
            } => {
                cl.lock().await.minion(minion).process.stop()?;
                pending.push(tokio::spawn(async move {
                    tokio::time::sleep(stopped_for).await;
                    cl.lock().await.minion(minion).process.cont()?;
                    Ok(())
                }));
            }
            Fault::RestartMinion { minion } => {
                cl.lock().await.minion(minion).process.restart()?;
            }
            Fault::KillCoordinator { down_for } => {
                cl.lock().await.kill_coordinator();
                // Recovery is measured inline: the next coordinator fault waits for it.
                tokio::time::sleep(down_for).await;
                let url = {
                    let mut g = cl.lock().await;
                    g.coordinator().start_again()?;
                    g.direct_url()
                };
                let t = wait_serving_url(&url, Duration::from_secs(30), || true).await?;
                log2.lock().expect("fault log").push((kind, Some(t)));
                continue;
            }
            Fault::Link {
                minion,
                fault,
                lasting,
            } => {
                cl.lock().await.minion(minion).proxy.set_fault(fault);
                pending.push(tokio::spawn(async move {
                    tokio::time::sleep(lasting).await;
                    cl.lock().await.minion(minion).proxy.heal();
                    Ok(())
                }));
            }
            Fault::ResetLink { minion } => cl.lock().await.minion(minion).proxy.reset_all(),
            Fault::CloseLink { minion } => cl.lock().await.minion(minion).proxy.close_all(),
            Fault::ProviderDown { provider, down_for } => {
                let p = format!("p{provider}");
                let mut g = cl.lock().await;
                let members = g.provider_members(&p);
                // Even steps kill the provider's minions; odd ones partition them, so they come back
                // late still holding leases that were revoked meanwhile.
                let kill = i % 2 == 0;
                for &m in &members {
                    if kill {
                        g.minion(m).process.kill9();
                    } else {
                        g.minion(m).proxy.set_fault(LinkFault::Blackhole);
                    }
                }
                drop(g);
                pending.push(tokio::spawn(async move {
                    tokio::time::sleep(down_for).await;
                    let mut g = cl.lock().await;
                    for &m in &members {
                        if kill {
                            g.minion(m).process.start_again()?;
                        } else {
                            g.minion(m).proxy.heal();
                        }
                    }
                    Ok(())
                }));
            }
            Fault::ClientReset => cl.lock().await.client_proxy().reset_all(),
        }
        log.lock().expect("fault log").push((kind, None));
        pending.retain(|h| !h.is_finished());
        if (i + 1) % 100 == 0 {
            eprintln!(
                "  {} / {} faults injected ({:.0} s)",
                i + 1,
                schedule.steps.len(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    for h in pending {
        h.await??;
    }
    Ok(())
}

/// Reassignment latency, measured exactly over the real Session protocol: minion A (capacity ≥ the
/// job's tasks) takes every lease, then dies (its connection is reset, as the kernel does for a
/// `kill -9`ed process) or hangs (stops heartbeating); minion B, idle, records when it has been
/// leased every task A held. B then runs them honestly. A's late results on its revoked tokens must
/// be rejected and never stored. Returns (latency, violations).
pub async fn rogue_reassignment(
    cluster: &Cluster,
    rng: &mut Rng,
    hang_instead_of_kill: bool,
    figs: &mut Figures,
) -> anyhow::Result<(Duration, Vec<String>)> {
    let mut violations = Vec::new();
    let ips = loopback_ips(rng, 8);
    let ledger = Ledger::dense(
        &LedgerSpec {
            ips,
            ports: 3,
            open_ratio: 0.5,
            banner: false,
            cidr: None,
        },
        rng,
    )
    .await?;
    let tasks = ledger.ips().len();
    let hb = cluster.timing.heartbeat;
    let tag = rng.next_u64() % 100_000;
    let a_proxy = crate::proxy::FaultProxy::start("rogue-a", cluster.coordinator_addr()).await?;
    let mut a = RogueMinion::connect(
        &a_proxy.url(),
        &RogueIdentity::scanner(&format!("rogue-a-{tag}"), "pa", 64),
        Some(hb),
    )
    .await?;
    crate::wait::wait_until(Duration::from_secs(5), "rogue A registered", || async {
        a.generation().is_some()
    })
    .await?;
    let mut c = client::job_client(&cluster.url());
    let spec = client::scan_spec(
        "rogue-reassign",
        ledger.targets(),
        ledger.ports_arg(),
        &["portscan"],
    );
    let st = submit_retrying(&mut c, spec, Duration::from_secs(10)).await?;
    crate::wait::wait_until(
        Duration::from_secs(10),
        "rogue A holds every lease",
        || async { a.leases().iter().filter(|l| l.job_id == st.job_id).count() >= tasks },
    )
    .await?;
    let held: Vec<_> = a
        .leases()
        .into_iter()
        .filter(|l| l.job_id == st.job_id)
        .collect();
    let b = RogueMinion::connect(
        &cluster.url(),
        &RogueIdentity::scanner(&format!("rogue-b-{tag}"), "pb", 64),
        Some(hb),
    )
    .await?;
    crate::wait::wait_until(Duration::from_secs(5), "rogue B registered", || async {
        b.generation().is_some()
    })
    .await?;
    let t0 = Instant::now();
    if hang_instead_of_kill {
        a.stop_heartbeats();
        a_proxy.set_fault(LinkFault::Blackhole);
        figs.fault(FaultKind::LinkBlackhole);
    } else {
        a_proxy.reset_all();
        a_proxy.set_fault(LinkFault::Refuse);
        figs.fault(FaultKind::MinionKill9);
    }
    let held_ids: std::collections::BTreeSet<u64> = held.iter().map(|l| l.task_id).collect();
    crate::wait::wait_until(
        Duration::from_secs(30),
        "rogue B leased every task A held",
        || async {
            let got: std::collections::BTreeSet<u64> = b
                .leases()
                .iter()
                .filter(|l| l.job_id == st.job_id)
                .map(|l| l.task_id)
                .collect();
            held_ids.is_subset(&got)
        },
    )
    .await?;
    let latency = {
        let log = b.log();
        let mut last = t0;
        for (at, l) in &log.leases {
            if l.job_id == st.job_id && held_ids.contains(&l.task_id) {
                last = last.max(*at);
            }
        }
        last.duration_since(t0)
    };
    // B runs the tasks honestly; it also delivers its first batch twice (duplicate delivery).
    let b_leases: Vec<_> = b
        .leases()
        .into_iter()
        .filter(|l| l.job_id == st.job_id)
        .collect();
    let mut results = Vec::new();
    for l in &b_leases {
        results.push(execute_scan(l).await);
    }
    b.send(results.clone()).await?;
    b.send(results).await?;
    figs.fault(FaultKind::DuplicateResult);
    wait_terminal(&c, st.job_id, Duration::from_secs(30)).await?;
    // A comes back late: a new session under the same id sends results for its revoked tokens.
    a_proxy.heal();
    let a2 = RogueMinion::connect(
        &a_proxy.url(),
        &RogueIdentity::scanner(&a.id, "pa", 64),
        Some(hb),
    )
    .await?;
    let mut late = Vec::new();
    for l in &held {
        let mut r = execute_scan(l).await;
        // Make the stale result distinguishable if it were ever stored.
        for f in &mut r.findings {
            f.data_json = r#"{"stale":true}"#.into();
        }
        late.push(r);
    }
    a2.send(late).await?;
    figs.fault(FaultKind::DuplicateResult);
    crate::wait::wait_until(
        Duration::from_secs(10),
        "acks for the late results",
        || async { a2.log().acks.len() >= held.len() || a2.log().closed.is_some() },
    )
    .await
    .ok();
    let accepted_late = a2.log().acks.iter().filter(|(_, x)| x.accepted).count();
    if accepted_late > 0 {
        violations.push(format!(
            "{accepted_late} late results on revoked tokens were accepted"
        ));
    }
    let stored = client::all_results(&mut c, st.job_id).await?;
    if stored.iter().any(|f| f.data_json.contains("stale")) {
        violations.push("a result from a revoked lease was stored".into());
    }
    let v = verify_job(&mut c, st.job_id, Some(&ledger), None, figs).await?;
    violations.extend(v.violations);
    drop(a);
    Ok((latency, violations))
}
