//! Chaos scenarios against a real cluster (coordinator + minions as OS processes of `overlord`).
//!
//! Needs the binary: `cargo build -p overlord-cli` (or `OVERLORD_BIN=/path/to/overlord`).
//! Every scenario checks the invariants against its own ledger of listeners and prints its figures.
//! `CHAOS_SEED=<n>` replays the randomized scenario; `CHAOS_FAULTS=<n>` sizes it (default 40).

use std::time::{Duration, Instant};

use overlord_chaos_tests::client::{self, WatchLog, WatchOptions};
use overlord_chaos_tests::faults::FaultKind;
use overlord_chaos_tests::figures::Figures;
use overlord_chaos_tests::ledger::{Ledger, LedgerSpec, loopback_cidr, loopback_ips};
use overlord_chaos_tests::proxy::{Direction, LinkFault};
use overlord_chaos_tests::rng::Rng;
use overlord_chaos_tests::rogue::{RogueIdentity, RogueMinion, execute_scan};
use overlord_chaos_tests::sandbox::{Cluster, ClusterBuilder, Timing};
use overlord_chaos_tests::scenario::{self, RandomRun, submit_retrying};
use overlord_chaos_tests::verify::{verify_job, wait_terminal};
use overlord_chaos_tests::wait::wait_until;
use tokio::task::JoinHandle;

fn finish(figs: &Figures, violations: &[String]) {
    eprintln!("{figs}");
    assert!(
        violations.is_empty(),
        "invariants violated:\n  {}",
        violations.join("\n  ")
    );
    assert!(figs.clean(), "figures not clean:\n{figs}");
}

struct Running {
    id: u64,
    ledger: Ledger,
    watch: JoinHandle<WatchLog>,
    tasks: u64,
}

/// Submits a port-scan job over a sparse ledger in a /`prefix`, paced by `rate` connections/s
/// (0 = unlimited), with a resumable watcher through the client proxy.
async fn start_job(cl: &Cluster, rng: &mut Rng, prefix: u8, rate: u32) -> Running {
    let ((base, p), ips) = loopback_cidr(rng, prefix, 16);
    let ledger = Ledger::sparse(
        &LedgerSpec {
            ips,
            ports: 3,
            open_ratio: 0.5,
            banner: false,
            cidr: Some((base, p)),
        },
        rng,
    )
    .await
    .expect("ledger");
    let mut spec = client::scan_spec("chaos", ledger.targets(), ledger.ports_arg(), &["portscan"]);
    spec.rate_limit = rate;
    // One address per task (sweeps are sized by probes otherwise: 4,096 addresses x 3 ports
    // would be 4 tasks that finish together, and no fault could land mid-job).
    spec.params_json = r#"{"probes_per_task": 3}"#.into();
    let mut c = cl.jobs();
    let st = submit_retrying(&mut c, spec, Duration::from_secs(30))
        .await
        .expect("submit");
    let watch = tokio::spawn(client::resumable_watch(
        cl.url(),
        st.job_id,
        WatchOptions::default(),
    ));
    Running {
        id: st.job_id,
        tasks: ledger.target_count(),
        ledger,
        watch,
    }
}

/// Waits until the job has made some progress but is not finished (so a fault lands mid-job).
async fn wait_mid_job(cl: &Cluster, job: &Running, fraction: f64) {
    let c = cl.jobs();
    wait_until(Duration::from_secs(60), "job mid-way", || {
        let mut c = c.clone();
        let id = job.id;
        async move {
            match client::get(&mut c, id).await {
                Ok(s) => {
                    s.tasks_total > 0 && (s.tasks_done as f64) >= fraction * s.tasks_total as f64
                }
                Err(_) => false,
            }
        }
    })
    .await
    .expect("job never progressed");
    let s = client::get(&mut cl.jobs(), job.id).await.expect("get");
    assert!(
        !client::is_terminal(&s),
        "job {} finished before the fault could land: raise its size or lower its rate",
        job.id
    );
}

async fn settle_and_verify(cl: &Cluster, jobs: Vec<Running>, figs: &mut Figures) -> Vec<String> {
    let mut violations = Vec::new();
    let mut c = cl.jobs();
    for j in jobs {
        if let Err(e) = wait_terminal(&c, j.id, Duration::from_secs(120)).await {
            violations.push(format!(
                "job {} ({} tasks) never terminal: {e}",
                j.id, j.tasks
            ));
            continue;
        }
        let log = tokio::time::timeout(Duration::from_secs(30), j.watch)
            .await
            .ok()
            .and_then(|r| r.ok());
        if log.is_none() {
            violations.push(format!("job {}: watcher did not finish", j.id));
        }
        let v = verify_job(&mut c, j.id, Some(&j.ledger), log.as_ref(), figs)
            .await
            .expect("verify");
        violations.extend(v.violations);
    }
    figs.observe_rss(cl.coordinator_rss());
    violations
}

async fn fresh_job(cl: &Cluster, rng: &mut Rng, figs: &mut Figures) -> Vec<String> {
    match scenario::fresh_job_succeeds(&cl.url(), rng, figs).await {
        Ok(v) => v,
        Err(e) => vec![format!("fresh job after faults: {e}")],
    }
}

fn seed(default: u64) -> u64 {
    if std::env::var("CHAOS_SEED").is_ok() {
        Rng::seed_from_env("CHAOS_SEED")
    } else {
        default
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn baseline_every_open_port_exactly_once_with_banners() {
    let mut figs = Figures::new("baseline", None);
    let mut rng = Rng::new(seed(1));
    let cl = ClusterBuilder::new("baseline", &[2, 1], 8)
        .start()
        .await
        .expect("cluster");
    figs.observe_rss(cl.coordinator_rss());
    let ips = loopback_ips(&mut rng, 10);
    let ledger = Ledger::dense(
        &LedgerSpec {
            ips,
            ports: 6,
            open_ratio: 0.3,
            banner: true,
            cidr: None,
        },
        &mut rng,
    )
    .await
    .expect("ledger");
    let mut c = cl.jobs();
    // Only addresses with at least one open port: then every scan task (task 0 included) spawns
    // banner tasks, and the provenance of each is checked (regression: B2, parent_task_id 0).
    let mut with_open: Vec<String> = ledger.open().iter().map(|a| a.ip().to_string()).collect();
    with_open.dedup();
    assert!(with_open.len() >= 3, "ledger too sparse: {with_open:?}");
    let st = client::submit(
        &mut c,
        client::scan_spec(
            "baseline",
            with_open.clone(),
            ledger.ports_arg(),
            &["portscan", "banner"],
        ),
    )
    .await
    .expect("submit");
    let watch = tokio::spawn(client::resumable_watch(
        cl.url(),
        st.job_id,
        WatchOptions::default(),
    ));
    let job = Running {
        id: st.job_id,
        tasks: with_open.len() as u64,
        ledger,
        watch,
    };
    let ledger_open: Vec<_> = job.ledger.open().iter().copied().collect();
    let mut violations = settle_and_verify(&cl, vec![job], &mut figs).await;
    // Follow-up rule: each open port got exactly one banner finding, whose task's parent is the scan task.
    let results = client::all_results(&mut c, st.job_id)
        .await
        .expect("results");
    // On the wire `parent_task_id == 0` means "root task", so no task may have id 0 (B2).
    if let Some(f) = results.iter().find(|f| f.task_id == 0) {
        violations.push(format!(
            "task id 0 exists, so its follow-ups look like root tasks (parent_task_id 0 means root): {f:?}"
        ));
    }
    for addr in &ledger_open {
        let banners: Vec<_> = results
            .iter()
            .filter(|f| {
                f.kind == "banner"
                    && f.port == u32::from(addr.port())
                    && f.target == addr.ip().to_string()
            })
            .collect();
        if banners.len() != 1 {
            violations.push(format!(
                "{addr}: {} banner findings (want 1)",
                banners.len()
            ));
        } else {
            // Provenance: the banner task's parent is the scan task that found the port open.
            let scan_task = results
                .iter()
                .find(|f| {
                    f.kind == "open_port"
                        && f.port == u32::from(addr.port())
                        && f.target == addr.ip().to_string()
                })
                .map(|f| f.task_id);
            if scan_task != Some(banners[0].parent_task_id) {
                violations.push(format!(
                    "{addr}: banner's parent_task_id {} is not the scan task {scan_task:?}",
                    banners[0].parent_task_id
                ));
            }
            if !banners[0].data_json.contains(&format!("CHAOS {addr}")) {
                violations.push(format!(
                    "{addr}: banner text is not what the listener said: {}",
                    banners[0].data_json
                ));
            }
        }
    }
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minion_kill9_and_restart_same_id_mid_job() {
    let mut figs = Figures::new("minion-kill9", None);
    let mut rng = Rng::new(seed(2));
    let mut cl = ClusterBuilder::new("kill9", &[2, 2], 8)
        .start()
        .await
        .expect("cluster");
    let job = start_job(&cl, &mut rng, 20, 6_000).await;
    for (i, frac) in [(0usize, 0.1), (2, 0.3), (1, 0.5)] {
        wait_mid_job(&cl, &job, frac).await;
        cl.minion(i).process.kill9();
        figs.fault(FaultKind::MinionKill9);
        tokio::time::sleep(Duration::from_millis(300)).await;
        cl.minion(i).process.start_again().expect("restart");
        figs.fault(FaultKind::MinionRestartSameId);
    }
    let mut violations = settle_and_verify(&cl, vec![job], &mut figs).await;
    violations.extend(fresh_job(&cl, &mut rng, &mut figs).await);
    violations.extend(cl.crashed());
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minion_sigstop_leases_revoked_then_sigcont_late_results_rejected() {
    let mut figs = Figures::new("minion-sigstop", None);
    let mut rng = Rng::new(seed(3));
    let mut cl = ClusterBuilder::new("sigstop", &[2, 1], 8)
        .start()
        .await
        .expect("cluster");
    let dead_after = cl.timing.dead_after;
    let job = start_job(&cl, &mut rng, 20, 6_000).await;
    wait_mid_job(&cl, &job, 0.1).await;
    cl.minion(0).process.stop().expect("SIGSTOP");
    figs.fault(FaultKind::MinionStopCont);
    // Hung well past the failure detector's timeout: its leases are revoked and re-leased.
    tokio::time::sleep(dead_after * 3).await;
    cl.minion(0).process.cont().expect("SIGCONT");
    let mut violations = settle_and_verify(&cl, vec![job], &mut figs).await;
    violations.extend(fresh_job(&cl, &mut rng, &mut figs).await);
    violations.extend(cl.crashed());
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinator_kill9_restart_repeatedly_watch_resumes_without_gap() {
    let mut figs = Figures::new("coordinator-kill9", None);
    let mut rng = Rng::new(seed(4));
    let mut cl = ClusterBuilder::new("coord-kill9", &[2, 1], 8)
        .start()
        .await
        .expect("cluster");
    let job = start_job(&cl, &mut rng, 20, 5_000).await;
    for frac in [0.05, 0.25, 0.5, 0.7] {
        wait_mid_job(&cl, &job, frac).await;
        // A random moment after the threshold.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 300))).await;
        cl.kill_coordinator();
        figs.fault(FaultKind::CoordinatorKill9);
        let t = cl.restart_coordinator().await.expect("coordinator restart");
        figs.recovery.push(t);
    }
    // A job submitted while the coordinator restarts must be accepted once and complete.
    let second = start_job(&cl, &mut rng, 24, 0).await;
    cl.kill_coordinator();
    figs.fault(FaultKind::CoordinatorKill9);
    figs.recovery
        .push(cl.restart_coordinator().await.expect("restart"));
    let mut violations = settle_and_verify(&cl, vec![job, second], &mut figs).await;
    violations.extend(fresh_job(&cl, &mut rng, &mut figs).await);
    violations.extend(cl.crashed());
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn link_faults_blackhole_oneway_delay_reset_refuse() {
    let mut figs = Figures::new("link-faults", None);
    let mut rng = Rng::new(seed(5));
    let mut cl = ClusterBuilder::new("links", &[2, 2], 8)
        .start()
        .await
        .expect("cluster");
    let dead_after = cl.timing.dead_after;
    let job = start_job(&cl, &mut rng, 20, 6_000).await;
    wait_mid_job(&cl, &job, 0.05).await;
    let faults = [
        (0, LinkFault::Blackhole, FaultKind::LinkBlackhole),
        (
            1,
            LinkFault::OneWayLoss(Direction::ToDownstream),
            FaultKind::LinkOneWayLoss,
        ),
        (
            2,
            LinkFault::OneWayLoss(Direction::ToUpstream),
            FaultKind::LinkOneWayLoss,
        ),
        (
            3,
            LinkFault::Delay(Duration::from_millis(150)),
            FaultKind::LinkDelay,
        ),
    ];
    for (i, f, k) in faults {
        cl.minion(i).proxy.set_fault(f);
        figs.fault(k);
    }
    tokio::time::sleep(dead_after * 2).await;
    for i in 0..4 {
        cl.minion(i).proxy.heal();
    }
    wait_mid_job(&cl, &job, 0.3).await;
    cl.minion(0).proxy.reset_all();
    figs.fault(FaultKind::LinkReset);
    cl.minion(1).proxy.close_all();
    figs.fault(FaultKind::LinkClose);
    cl.minion(2).proxy.set_fault(LinkFault::Refuse);
    cl.minion(2).proxy.reset_all();
    figs.fault(FaultKind::LinkRefuse);
    cl.client_proxy().reset_all();
    figs.fault(FaultKind::ClientLinkReset);
    tokio::time::sleep(dead_after * 2).await;
    cl.minion(2).proxy.heal();
    let mut violations = settle_and_verify(&cl, vec![job], &mut figs).await;
    violations.extend(fresh_job(&cl, &mut rng, &mut figs).await);
    violations.extend(cl.crashed());
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn provider_down_work_moves_and_late_return_is_rejected() {
    let mut figs = Figures::new("provider-down", None);
    let mut rng = Rng::new(seed(6));
    let mut cl = ClusterBuilder::new("provider", &[2, 2], 8)
        .start()
        .await
        .expect("cluster");
    let dead_after = cl.timing.dead_after;
    let job = start_job(&cl, &mut rng, 20, 6_000).await;
    wait_mid_job(&cl, &job, 0.1).await;
    // Provider p0 is partitioned away as a whole: its minions keep running and keep their leases.
    let p0 = cl.provider_members("p0");
    for &i in &p0 {
        cl.minion(i).proxy.set_fault(LinkFault::Blackhole);
    }
    figs.fault(FaultKind::ProviderDown);
    // The job keeps progressing on p1 alone.
    wait_mid_job(&cl, &job, 0.4).await;
    tokio::time::sleep(dead_after * 2).await;
    // p0 comes back late, its held bytes (results on revoked tokens) delivered now.
    for &i in &p0 {
        cl.minion(i).proxy.heal();
    }
    // Then provider p1 dies hard (kill -9 of all its minions) and p0 must finish the work.
    let p1 = cl.provider_members("p1");
    for &i in &p1 {
        cl.minion(i).process.kill9();
    }
    figs.fault(FaultKind::ProviderDown);
    let mut violations = settle_and_verify(&cl, vec![job], &mut figs).await;
    for &i in &p1 {
        cl.minion(i).process.start_again().expect("restart");
    }
    violations.extend(fresh_job(&cl, &mut rng, &mut figs).await);
    violations.extend(cl.crashed());
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reassignment_latency_and_revoked_lease_results_never_stored() {
    let mut figs = Figures::new("reassignment", None);
    let mut rng = Rng::new(seed(7));
    // No real minion: two hand-driven minions over the real Session protocol.
    let cl = ClusterBuilder::new("reassign", &[], 0)
        .start()
        .await
        .expect("cluster");
    figs.observe_rss(cl.coordinator_rss());
    let mut violations = Vec::new();
    for round in 0..6 {
        let hang = round % 3 == 2;
        match scenario::rogue_reassignment(&cl, &mut rng, hang, &mut figs).await {
            Ok((latency, v)) => {
                eprintln!(
                    "round {round} ({}): reassigned in {latency:?}",
                    if hang { "hung" } else { "killed" }
                );
                figs.reassign.push(latency);
                violations.extend(v);
            }
            Err(e) => violations.push(format!("round {round}: {e:#}")),
        }
        figs.observe_rss(cl.coordinator_rss());
    }
    finish(&figs, &violations);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_seeded_fault_schedule() {
    let seed = Rng::seed_from_env("CHAOS_SEED");
    let faults = std::env::var("CHAOS_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let cfg = RandomRun::ci(seed, faults);
    let start = Instant::now();
    let (figs, violations) = scenario::random_run(&cfg)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    eprintln!("randomized run took {:?}", start.elapsed());
    finish(&figs, &violations);
}

/// The randomized fault soak on a secured cluster: CA made by `overlord ca init`, every minion
/// enrolled with a join token through `overlord minion enroll` (mTLS through its fault proxy),
/// clients over TLS with an operator token. Same invariants as the plaintext run (0 lost, 0
/// duplicated, no false opens, watchers without gaps), plus: the coordinator serves nothing in
/// plaintext or without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_fault_schedule_with_mtls() {
    let seed = Rng::seed_from_env("CHAOS_SEED");
    let faults = std::env::var("CHAOS_FAULTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut cfg = RandomRun::ci(seed, faults);
    cfg.name = "random-ci-mtls".into();
    cfg.tls = true;
    let start = Instant::now();
    let (figs, violations) = scenario::random_run(&cfg)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: {e:#}"));
    eprintln!(
        "randomized mTLS run took {:?}: {} faults, {} tasks, {} lost, {} duplicated",
        start.elapsed(),
        figs.faults_total(),
        figs.tasks,
        figs.lost,
        figs.duplicates
    );
    assert!(
        figs.faults_total() >= faults as u64,
        "only {} of {faults} faults were injected",
        figs.faults_total()
    );
    finish(&figs, &violations);
}

/// Answers every lease `m` gets, once, honestly (a loopback connect per port), until aborted.
fn answer_leases(m: std::sync::Arc<RogueMinion>) -> JoinHandle<()> {
    answer_leases_with(m, true)
}

/// Answers every lease `m` gets, once, until aborted: honestly, or (`honest` false) with
/// "nothing open", like a minion whose provider drops or blocks its probes.
fn answer_leases_with(m: std::sync::Arc<RogueMinion>, honest: bool) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut done = std::collections::BTreeSet::new();
        loop {
            let fresh: Vec<_> = m
                .leases()
                .into_iter()
                .filter(|l| done.insert(l.token))
                .collect();
            let mut results = Vec::new();
            for l in &fresh {
                results.push(if honest {
                    execute_scan(l).await
                } else {
                    overlord_chaos_tests::rogue::empty_result(l)
                });
            }
            if !results.is_empty() && m.send(results).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

/// A port-scan spec of one task per address (`probes_per_task` = ports).
fn one_address_per_task(
    name: &str,
    targets: Vec<String>,
    port: u16,
) -> overlord_proto::v1::JobSpec {
    let mut spec = client::scan_spec(name, targets, port.to_string(), &["portscan"]);
    spec.params_json = r#"{"probes_per_task": 1}"#.into();
    spec
}

/// Issue 12, "a minion that heartbeats but never answers holds its leases for task_timeout_ms
/// (600 s by default)". Against a coordinator configured with that default, a hand-driven minion
/// takes every lease of a port-scan job, keeps heartbeating (listing them all as held) and never
/// answers. Its leases expire after the module's own lease timeout (seconds: 30 s for a one-port
/// scan, `core::trust::lease_timeout_ms`), not ten minutes: they are revoked on its still open
/// session, an honest minion gets every task, the job completes, and the silent minion's late
/// results are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minion_that_heartbeats_but_never_answers_loses_its_leases_in_seconds() {
    const TASKS: usize = 6;
    const BOUND: Duration = Duration::from_secs(45);
    let timing = Timing {
        lease: Duration::from_secs(600), // the product default `task_timeout_ms`
        ..Timing::default()
    };
    let cl = ClusterBuilder::new("silent", &[], 0)
        .timing(timing)
        .start()
        .await
        .expect("cluster");
    let hb = cl.timing.heartbeat;
    let silent = RogueMinion::connect(
        &cl.direct_url(),
        &RogueIdentity::scanner("silent", "pa", 64),
        Some(hb),
    )
    .await
    .expect("silent minion");
    wait_until(
        Duration::from_secs(5),
        "silent minion registered",
        || async { silent.generation().is_some() },
    )
    .await
    .expect("registered");
    let mut c = cl.jobs();
    let targets: Vec<String> = (1..=TASKS).map(|i| format!("127.77.0.{i}")).collect();
    let st = submit_retrying(
        &mut c,
        one_address_per_task("silent", targets, 9),
        Duration::from_secs(10),
    )
    .await
    .expect("submit");
    wait_until(
        Duration::from_secs(10),
        "the silent minion holds every lease",
        || async {
            silent
                .leases()
                .iter()
                .filter(|l| l.job_id == st.job_id)
                .count()
                >= TASKS
        },
    )
    .await
    .expect("silent minion leased");
    let held: Vec<(Instant, overlord_proto::v1::TaskLease)> = silent
        .log()
        .leases
        .iter()
        .filter(|(_, l)| l.job_id == st.job_id)
        .cloned()
        .collect();
    let honest = std::sync::Arc::new(
        RogueMinion::connect(
            &cl.direct_url(),
            &RogueIdentity::scanner("honest", "pb", 64),
            Some(hb),
        )
        .await
        .expect("honest minion"),
    );
    let answering = answer_leases(honest.clone());
    let task_ids: std::collections::BTreeSet<u64> = held.iter().map(|(_, l)| l.task_id).collect();
    wait_until(
        Duration::from_secs(90),
        "the honest minion leased every task",
        || async {
            let got: std::collections::BTreeSet<u64> = honest
                .leases()
                .iter()
                .filter(|l| l.job_id == st.job_id)
                .map(|l| l.task_id)
                .collect();
            task_ids.is_subset(&got)
        },
    )
    .await
    .expect("tasks moved");
    // How long each task stayed with the silent minion: from its lease there to its lease here.
    let moved_after: Vec<Duration> = {
        let log = honest.log();
        held.iter()
            .map(|(at, l)| {
                log.leases
                    .iter()
                    .filter(|(_, x)| x.job_id == st.job_id && x.task_id == l.task_id)
                    .map(|(t, _)| t.duration_since(*at))
                    .min()
                    .expect("re-leased")
            })
            .collect()
    };
    let worst = moved_after.iter().max().copied().unwrap_or_default();
    eprintln!("silent minion's leases moved after {moved_after:?} (worst {worst:?})");
    assert!(
        worst < BOUND,
        "a silent minion kept its leases {worst:?} (bound {BOUND:?})"
    );
    {
        let log = silent.log();
        assert!(
            log.closed.is_none(),
            "the silent minion's session was closed ({:?}): the leases must go by their timeout, \
             not by declaring it dead",
            log.closed
        );
        let revoked: std::collections::BTreeSet<u64> =
            log.revoked.iter().map(|(_, t)| *t).collect();
        let missing: Vec<u64> = held
            .iter()
            .map(|(_, l)| l.token)
            .filter(|t| !revoked.contains(t))
            .collect();
        assert!(missing.is_empty(), "leases never revoked: {missing:?}");
    }
    wait_terminal(&c, st.job_id, Duration::from_secs(30))
        .await
        .expect("job terminal");
    // The silent minion's results, now late, are refused.
    let acks_before = silent.log().acks.len();
    let late: Vec<_> = held.iter().map(|(_, l)| execute_scan_empty(l)).collect();
    silent.send(late).await.expect("send late results");
    // (Whether a refusal is acknowledged is the protocol's business; an acceptance must not be.)
    let _ = wait_until(
        Duration::from_secs(5),
        "acks for the late results",
        || async { silent.log().acks.len() >= acks_before + TASKS },
    )
    .await;
    let accepted = silent.log().acks.iter().filter(|(_, a)| a.accepted).count();
    assert_eq!(accepted, 0, "late results of expired leases accepted");
    let s = client::get(&mut c, st.job_id).await.expect("status");
    assert_eq!(s.tasks_done, TASKS as u64, "{s:?}");
    assert_eq!(s.tasks_failed, 0, "{s:?}");
    answering.abort();
    assert!(cl_crashed(cl).is_empty());
}

fn execute_scan_empty(l: &overlord_proto::v1::TaskLease) -> overlord_proto::v1::TaskResult {
    overlord_chaos_tests::rogue::empty_result(l)
}

fn cl_crashed(mut cl: Cluster) -> Vec<String> {
    cl.crashed()
}

/// Issue 12, "small jobs hand slots out in alphabetical order of minion id". Three hand-driven
/// minions of equal capacity (over real sessions with a real coordinator) answer every lease at
/// once. A job of 30 tasks: each gets 10 ± 2. Then 12 one-task jobs one after another: each minion
/// gets 4 ± 1 (by id order the first one got all 12).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_are_spread_fairly_over_equal_minions_not_by_id_order() {
    let cl = ClusterBuilder::new("fair", &[], 0)
        .start()
        .await
        .expect("cluster");
    let hb = cl.timing.heartbeat;
    let mut minions = Vec::new();
    for id in ["fair-a", "fair-b", "fair-c"] {
        let m = RogueMinion::connect(
            &cl.direct_url(),
            &RogueIdentity::scanner(id, "p", 16),
            Some(hb),
        )
        .await
        .expect("minion");
        wait_until(Duration::from_secs(5), "registered", || async {
            m.generation().is_some()
        })
        .await
        .expect("registered");
        minions.push(std::sync::Arc::new(m));
    }
    let answering: Vec<_> = minions.iter().map(|m| answer_leases(m.clone())).collect();
    let mut c = cl.jobs();
    let per_minion = |job: u64| -> Vec<usize> {
        minions
            .iter()
            .map(|m| m.leases().iter().filter(|l| l.job_id == job).count())
            .collect()
    };
    // One job of 30 tasks.
    let targets: Vec<String> = (1..=30).map(|i| format!("127.78.0.{i}")).collect();
    let st = submit_retrying(
        &mut c,
        one_address_per_task("fair-30", targets, 9),
        Duration::from_secs(10),
    )
    .await
    .expect("submit");
    wait_terminal(&c, st.job_id, Duration::from_secs(30))
        .await
        .expect("job terminal");
    let big = per_minion(st.job_id);
    eprintln!("a job of 30 tasks over 3 equal minions: {big:?}");
    assert_eq!(big.iter().sum::<usize>(), 30, "{big:?}");
    assert!(
        big.iter().all(|n| n.abs_diff(10) <= 2),
        "30 tasks over 3 equal minions: {big:?} (each must be 10 ± 2)"
    );
    // Twelve one-task jobs, one after another.
    let mut small = vec![0usize; minions.len()];
    for k in 0..12 {
        let st = submit_retrying(
            &mut c,
            one_address_per_task(
                &format!("fair-1-{k}"),
                vec![format!("127.78.1.{}", k + 1)],
                9,
            ),
            Duration::from_secs(10),
        )
        .await
        .expect("submit");
        wait_terminal(&c, st.job_id, Duration::from_secs(30))
            .await
            .expect("job terminal");
        for (i, n) in per_minion(st.job_id).into_iter().enumerate() {
            small[i] += n;
        }
    }
    eprintln!("12 one-task jobs over 3 equal minions: {small:?}");
    assert_eq!(small.iter().sum::<usize>(), 12, "{small:?}");
    assert!(
        small.iter().all(|n| n.abs_diff(4) <= 1),
        "one-task jobs over 3 equal minions: {small:?} (each must be 4 ± 1, not by id order)"
    );
    for a in answering {
        a.abort();
    }
}

/// Issue 14, the quality ledger: "a minion whose miss rate is out of line (a provider being
/// blocked or dropping) is flagged and its share of work reduced, with the reason in the job's
/// status". Two hand-driven scanners of two providers share a sweep of 127.78.0.0/22 × one port
/// with 60 listeners: one scans honestly, the other answers every task with "nothing open".
/// Every task is re-checked by the other minion (`verify_per_mille` 1000): the dropper is
/// flagged with its miss rate in the reason, the honest one is not, and the ports the dropper
/// missed are found by the re-checks, so the job's open set is still every listener, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minion_that_drops_probes_is_flagged_and_its_misses_are_recovered() {
    const LISTENERS: u32 = 60;
    // one port every listener address can bind
    let (port, _ls, want) = loop {
        let first = std::net::TcpListener::bind("127.78.0.1:0").unwrap();
        let p = first.local_addr().unwrap().port();
        let mut ls = vec![first];
        for i in 1..LISTENERS {
            // spread over the /22: 127.78.0.1, 127.78.0.18, ... 127.78.3.x
            let n = u32::from(std::net::Ipv4Addr::new(127, 78, 0, 1)) + i * 17;
            match std::net::TcpListener::bind((std::net::Ipv4Addr::from(n), p)) {
                Ok(l) => ls.push(l),
                Err(_) => break,
            }
        }
        if ls.len() == LISTENERS as usize {
            let want: std::collections::BTreeSet<(String, u32)> = ls
                .iter()
                .map(|l| (l.local_addr().unwrap().ip().to_string(), u32::from(p)))
                .collect();
            break (p, ls, want);
        }
    };
    let cl = ClusterBuilder::new("dropper", &[], 0)
        .start()
        .await
        .expect("cluster");
    let hb = cl.timing.heartbeat;
    let honest = std::sync::Arc::new(
        RogueMinion::connect(
            &cl.direct_url(),
            &RogueIdentity::scanner("honest", "pa", 8),
            Some(hb),
        )
        .await
        .expect("honest minion"),
    );
    let dropper = std::sync::Arc::new(
        RogueMinion::connect(
            &cl.direct_url(),
            &RogueIdentity::scanner("dropper", "pb", 8),
            Some(hb),
        )
        .await
        .expect("dropping minion"),
    );
    for m in [&honest, &dropper] {
        wait_until(Duration::from_secs(5), "minion registered", || async {
            m.generation().is_some()
        })
        .await
        .expect("registered");
    }
    let a = answer_leases(honest.clone());
    let b = answer_leases_with(dropper.clone(), false);
    let mut c = cl.jobs();
    let mut spec = client::scan_spec(
        "dropper",
        vec!["127.78.0.0/22".into()],
        port.to_string(),
        &["portscan"],
    );
    spec.params_json = r#"{"verify_per_mille": 1000, "probes_per_task": 8}"#.into();
    let st = submit_retrying(&mut c, spec, Duration::from_secs(10))
        .await
        .expect("submit");
    let st = wait_terminal(&c, st.job_id, Duration::from_secs(120))
        .await
        .expect("job ends");
    a.abort();
    b.abort();
    assert_eq!(st.tasks_failed, 0, "{st:?}");
    // 128 block tasks, each run twice
    assert_eq!(st.tasks_total, 256, "{st:?}");
    let q = st.quality.clone().expect("ledger");
    let row = |k: &str| {
        q.minions
            .iter()
            .find(|r| r.key == k)
            .cloned()
            .unwrap_or_default()
    };
    let (d, h) = (row("dropper"), row("honest"));
    eprintln!("dropper {d:?}\nhonest {h:?}\nflags {:?}", q.flags);
    assert!(d.sampled >= 200 && d.missed > 0, "{q:?}");
    assert!(h.sampled >= 200 && h.missed == 0, "{q:?}");
    assert_eq!(q.flags.len(), 1, "{q:?}");
    assert!(
        q.flags[0].contains("minion dropper missed") && q.flags[0].contains("share of work"),
        "{q:?}"
    );
    let found = client::all_results(&mut c, st.job_id)
        .await
        .expect("results");
    let open: Vec<(String, u32)> = found.iter().map(|f| (f.target.clone(), f.port)).collect();
    let set: std::collections::BTreeSet<_> = open.iter().cloned().collect();
    assert_eq!(open.len(), set.len(), "a finding stored twice");
    assert_eq!(set, want, "the re-checks recover what the dropper missed");
}
