//! Backbone scenarios on real coordinators, minions and TCP listeners (loopback, port 0, temp
//! dirs). Each states an invariant and checks it.

use overlord_chaos_tests::backbone_sandbox::*;
use overlord_core::finding::{FindingKind, Payload};
use overlord_proto::v1;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The in-process scenarios, each run on both storage backends (`on_sled::NAME`, `on_mem::NAME`):
/// the coordinator sees storage only through the `Store` seam.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Backend::Sled).await
                }
            )*
        }
        mod on_mem {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> anyhow::Result<()> {
                    super::$name(super::Backend::Mem).await
                }
            )*
        }
    };
}

on_both_stores!(
    every_open_port_and_banner_exactly_once,
    out_of_scope_and_bad_input_refused,
    job_manager_panic_is_supervised_and_recovered,
    minion_blocklist_refuses_before_sending,
    registry_panic_is_supervised_and_recovered,
    slow_watcher_misses_nothing_and_sees_nothing_twice,
    job_rate_limit_is_respected_and_used,
    cancel_revokes_leases_promptly,
    graceful_stop_loses_no_acknowledged_result,
);

fn count_by<K: Ord + Clone>(items: impl Iterator<Item = K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for k in items {
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

/// Invariant: every open port is reported exactly once as `open_port` and once as `banner` (with
/// what the service said, probing silent ones), each banner task's parent is the scan task that
/// found the port, and closed ports are not reported.
async fn every_open_port_and_banner_exactly_once(backend: Backend) -> anyhow::Result<()> {
    let cluster = InProc::start(backend, &[("m1", "prov-a"), ("m2", "prov-b")], 16).await?;
    let targets = Targets::start(6, 2).await?;
    let closed = closed_ports(50).await?;
    let ports: Vec<String> = targets
        .all()
        .iter()
        .chain(closed.iter())
        .map(|p| p.to_string())
        .collect();
    let mut c = client(&cluster.url).await?;
    let mut s = spec(&["127.0.0.1"], &ports.join(","), &["portscan", "banner"]);
    s.params_json = r#"{"wait_ms": 300}"#.into();
    let job = submit(&mut c, s).await?;
    let st = wait_finished(&cluster.url, job, Duration::from_secs(60)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    assert_eq!(st.tasks_failed, 0);
    let found = all_results(&mut c, job).await?;
    let open = count_by(
        found
            .iter()
            .filter(|f| f.kind == "open_port")
            .map(|f| f.port as u16),
    );
    let want: BTreeMap<u16, usize> = targets.all().into_iter().map(|p| (p, 1)).collect();
    assert_eq!(open, want, "open ports found exactly once each");
    let banners: HashMap<u16, Vec<&v1::Finding>> = found
        .iter()
        .filter(|f| f.kind == "banner")
        .fold(HashMap::new(), |mut m, f| {
            m.entry(f.port as u16).or_default().push(f);
            m
        });
    let scan_tasks: HashMap<u16, u64> = found
        .iter()
        .filter(|f| f.kind == "open_port")
        .map(|f| (f.port as u16, f.task_id))
        .collect();
    for p in targets.all() {
        let b = banners
            .get(&p)
            .unwrap_or_else(|| panic!("no banner for {p}"));
        assert_eq!(b.len(), 1, "banner for {p} exactly once");
        let data: serde_json::Value = serde_json::from_str(&b[0].data_json)?;
        let text = data["banner"].as_str().unwrap_or_default();
        let speaks = targets.speaking.contains(&p);
        let expect = if speaks {
            format!("banner-{p}\r\n")
        } else {
            format!("reply-{p}\r\n")
        };
        assert_eq!(text, expect);
        assert_eq!(data["probed"].as_bool(), Some(!speaks));
        assert_eq!(
            b[0].parent_task_id, scan_tasks[&p],
            "banner task's parent is the scan task"
        );
        assert!(
            !b[0].minion_id.is_empty()
                && !b[0].provider.is_empty()
                && b[0].finished_at_ms >= b[0].started_at_ms
        );
    }
    assert_eq!(
        banners.len(),
        targets.all().len(),
        "no banner for a closed port"
    );
    // Cursors are dense and unique: nothing stored twice.
    let cursors: Vec<u64> = found.iter().map(|f| f.cursor).collect();
    assert_eq!(cursors, (1..=found.len() as u64).collect::<Vec<_>>());
    cluster.shutdown().await;
    Ok(())
}

/// Invariant: a job with any target outside the allow-list, or bad input, is refused with an
/// error naming the problem, and nothing is persisted.
async fn out_of_scope_and_bad_input_refused(backend: Backend) -> anyhow::Result<()> {
    // No scanning minion is started (the coordinator's own lookup minion runs only `leak`, a
    // database lookup): even a job wrongly accepted here could not send anything, so the
    // non-loopback targets below never see traffic; they only have to appear in the refusal.
    let cluster = InProc::start(backend, &[], 1).await?;
    let mut c = client(&cluster.url).await?;
    let e = submit_err(
        &mut c,
        spec(
            &["127.0.0.1", "10.0.0.0/8", "192.168.1.1"],
            "80",
            &["portscan"],
        ),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    assert!(
        e.message().contains("10.0.0.0/8") && e.message().contains("192.168.1.1"),
        "{}",
        e.message()
    );
    let e = submit_err(
        &mut c,
        spec(&["127.0.0.1"], "80", &["portscan", "teleport"]),
    )
    .await;
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("teleport")
            && e.message().contains("portscan")
            && e.message().contains("banner"),
        "{}",
        e.message()
    );
    let e = submit_err(&mut c, spec(&["127.0.0.1"], "22,99999", &["portscan"])).await;
    assert!(e.message().contains("99999"), "{}", e.message());
    let e = submit_err(&mut c, spec(&["127.0.0.300"], "22", &["portscan"])).await;
    assert!(e.message().contains("127.0.0.300"), "{}", e.message());
    let jobs = c.list_jobs(v1::ListJobsRequest {}).await?.into_inner().jobs;
    assert!(jobs.is_empty(), "nothing half-persisted: {jobs:?}");
    cluster.shutdown().await;
    Ok(())
}

async fn submit_err(c: &mut Client, s: v1::JobSpec) -> tonic::Status {
    c.submit_job(v1::SubmitJobRequest {
        spec: Some(s),
        ..Default::default()
    })
    .await
    .expect_err("must be refused")
}

/// Invariant: when the job-manager actor panics, the supervisor restarts it, it recovers from
/// storage, and the job still completes with each task's result stored exactly once.
async fn job_manager_panic_is_supervised_and_recovered(backend: Backend) -> anyhow::Result<()> {
    panic_mid_job_then_complete(backend, |c| c.inject_panic()).await
}

/// Runs a 300-task job, injects a panic with `inject` once some tasks are done, waits for the
/// supervisor's restart, then checks the job completes with each result stored exactly once.
async fn panic_mid_job_then_complete(
    backend: Backend,
    inject: impl FnOnce(&overlord_coordinator::Running),
) -> anyhow::Result<()> {
    let cluster = InProc::start(backend, &[("m1", "prov-a"), ("m2", "prov-b")], 8).await?;
    let mut c = client(&cluster.url).await?;
    let job = submit(&mut c, noop_spec(300, 10)).await?;
    wait_until(Duration::from_secs(20), "some progress", || async {
        let mut c = client(&cluster.url).await.ok()?;
        (status(&mut c, job).await.ok()?.tasks_done > 20).then_some(())
    })
    .await?;
    inject(&cluster.coordinator);
    wait_until(Duration::from_secs(10), "a restart", || async {
        (cluster
            .coordinator
            .restarts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1)
            .then_some(())
    })
    .await?;
    let st = wait_finished(&cluster.url, job, Duration::from_secs(60)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    let mut c = client(&cluster.url).await?;
    check_noop_exactly_once(&mut c, job, 300).await?;
    cluster.shutdown().await;
    Ok(())
}

async fn check_noop_exactly_once(c: &mut Client, job: u64, n: u64) -> anyhow::Result<()> {
    let found = all_results(c, job).await?;
    let per_task = count_by(found.iter().map(|f| {
        serde_json::from_str::<serde_json::Value>(&f.data_json).unwrap()["task"]
            .as_u64()
            .unwrap()
    }));
    let dup: Vec<_> = per_task.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dup.is_empty(), "tasks stored twice: {dup:?}");
    assert_eq!(per_task.len() as u64, n, "every task's result stored");
    let st = status(c, job).await?;
    assert_eq!(st.tasks_done, n);
    assert_eq!(st.findings, n);
    Ok(())
}

/// Invariant: `kill -9` of a minion holding leases → its tasks are re-leased to the other
/// minion (another provider) and the job completes with every result exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minion_killed_mid_job_job_completes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let coord = CoordProc::spawn(dir.path(), "127.0.0.1:0")?;
    let mut a = spawn_minion(dir.path(), &coord.url, "a", "prov-a", 4)?;
    let _b = spawn_minion(dir.path(), &coord.url, "b", "prov-b", 4)?;
    let mut c = client(&coord.url).await?;
    let n = 200;
    let job = submit(&mut c, noop_spec(n, 40)).await?;
    wait_until(
        Duration::from_secs(30),
        "progress on both minions",
        || async {
            let mut c = client(&coord.url).await.ok()?;
            let f = all_results(&mut c, job).await.ok()?;
            (f.iter().any(|f| f.minion_id == "a") && f.iter().any(|f| f.minion_id == "b"))
                .then_some(())
        },
    )
    .await?;
    a.kill9();
    let st = wait_finished(&coord.url, job, Duration::from_secs(60)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    assert_eq!(st.tasks_failed, 0);
    check_noop_exactly_once(&mut c, job, n).await?;
    let found = all_results(&mut c, job).await?;
    let last_a = found
        .iter()
        .filter(|f| f.minion_id == "a")
        .map(|f| f.cursor)
        .max()
        .unwrap_or(0);
    assert!(
        found
            .iter()
            .any(|f| f.minion_id == "b" && f.cursor > last_a),
        "b finished the work after a died"
    );
    Ok(())
}

/// Invariant: `kill -9` of the coordinator mid-job, restart on the same data dir → the job
/// continues and completes; no accepted result lost or stored twice; a watcher resuming from
/// its cursor sees every finding exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_and_restarted_mid_job() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut coord = CoordProc::spawn(dir.path(), "127.0.0.1:0")?;
    let addr = coord.addr;
    let _a = spawn_minion(dir.path(), &coord.url, "a", "prov-a", 8)?;
    let _b = spawn_minion(dir.path(), &coord.url, "b", "prov-b", 8)?;
    let mut c = client(&coord.url).await?;
    let n = 400;
    let job = submit(&mut c, noop_spec(n, 15)).await?;
    // Watch until some findings arrived, remembering the cursor.
    let mut seen: Vec<u64> = Vec::new();
    let mut stream = c
        .watch_job(v1::WatchJobRequest {
            job_id: job,
            after_cursor: 0,
        })
        .await?
        .into_inner();
    while seen.len() < 60 {
        if let Some(v1::JobEvent {
            event: Some(v1::job_event::Event::Finding(f)),
        }) = stream.message().await?
        {
            seen.push(f.cursor);
        }
    }
    drop(stream);
    coord.proc.kill9();
    let coord2 = CoordProc::spawn(dir.path(), &addr.to_string())?;
    assert_eq!(coord2.addr, addr);
    let mut c = client(&coord2.url).await?;
    // Resume the watch from the last cursor seen.
    let mut after = *seen.last().unwrap();
    let mut stream = c
        .watch_job(v1::WatchJobRequest {
            job_id: job,
            after_cursor: after,
        })
        .await?
        .into_inner();
    loop {
        match stream.message().await? {
            Some(v1::JobEvent {
                event: Some(v1::job_event::Event::Finding(f)),
            }) => {
                assert!(f.cursor > after, "watch resumed without repeats");
                after = f.cursor;
                seen.push(f.cursor);
            }
            Some(v1::JobEvent {
                event: Some(v1::job_event::Event::Finished(st)),
            }) => {
                assert_eq!(st.state, v1::JobState::Completed as i32);
                break;
            }
            Some(_) => {}
            None => anyhow::bail!("watch ended before the job finished"),
        }
    }
    check_noop_exactly_once(&mut c, job, n).await?;
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<_>>(),
        "the watcher saw every finding exactly once, in order"
    );
    Ok(())
}

/// Invariant: a coordinator upgraded on a sled directory written by the JSON-record version
/// (record version 1, before the compact task/finding records and the done marker) continues its
/// job: the first coordinator is killed mid-job, every task and finding record it wrote is
/// rewritten as the old version wrote it, and the new coordinator completes the job with each
/// result stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_upgraded_on_json_records_continues_its_job() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut coord = CoordProc::spawn(dir.path(), "127.0.0.1:0")?;
    let addr = coord.addr;
    let _a = spawn_minion(dir.path(), &coord.url, "a", "prov-a", 8)?;
    let _b = spawn_minion(dir.path(), &coord.url, "b", "prov-b", 8)?;
    let mut c = client(&coord.url).await?;
    let n = 300;
    let job = submit(&mut c, noop_spec(n, 15)).await?;
    wait_until(Duration::from_secs(30), "60 findings", || async {
        let st = status(&mut client(&coord.url).await.ok()?, job)
            .await
            .ok()?;
        (st.findings >= 60).then_some(())
    })
    .await?;
    coord.proc.kill9();
    let (tasks, done, findings) = rewrite_as_json_records(&dir.path().join("data"), job)?;
    assert!(
        tasks > 0 && done >= 60 && findings >= 60,
        "rewrote {tasks} task records, {done} done markers, {findings} findings"
    );
    let coord2 = CoordProc::spawn(dir.path(), &addr.to_string())?;
    let st = wait_finished(&coord2.url, job, Duration::from_secs(60)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    let mut c = client(&coord2.url).await?;
    check_noop_exactly_once(&mut c, job, n).await?;
    Ok(())
}

/// Rewrites `job`'s task and finding records as the JSON-record version stored them (done
/// markers become full task records in state `done`), through the storage API (which owns the
/// key layout). Returns (task records, done markers, findings) rewritten.
fn rewrite_as_json_records(data: &std::path::Path, job: u64) -> anyhow::Result<(u64, u64, u64)> {
    use overlord_core::job::{TaskRecord, TaskState, root_plan, root_task};
    use overlord_storage::{Batch, Op, SledStore, Store, StoredTask};
    let store = SledStore::open(data)?;
    let rec = store.job(job)?.expect("job record");
    let spec = store.spec(job)?.expect("job spec");
    let plan = root_plan(&spec)?;
    let perm = overlord_core::perm::Permutation::new(plan.total, rec.perm_key);
    let (mut tasks, mut done, mut findings) = (0, 0, 0);
    let mut b = Batch::default();
    for t in store.tasks(job)? {
        b.push(Op::Task(match t {
            StoredTask::Done(task_id) => {
                done += 1;
                let mut t = TaskRecord::new(root_task(job, &spec, &plan, &perm, task_id - 1));
                t.state = TaskState::Done;
                t.attempts = 1;
                t
            }
            StoredTask::Record(t) => {
                tasks += 1;
                t
            }
        }));
    }
    for f in store.findings(job, 0, usize::MAX)? {
        findings += 1;
        b.push(Op::Finding(std::sync::Arc::new(f)));
    }
    store.apply_as_json_v1(b)?;
    store.flush()?;
    Ok((tasks, done, findings))
}

/// Invariant: a minion re-checks its own scope before sending anything: a target the coordinator
/// allows but the minion's blocklist refuses fails permanently (no retry, no finding), and the job
/// still completes.
async fn minion_blocklist_refuses_before_sending(backend: Backend) -> anyhow::Result<()> {
    let targets = Targets::start(1, 0).await?;
    let port = targets.speaking[0];
    let cluster = InProc::start_with(backend, &[("m1", "prov-a")], 4, |s| {
        s.scope.block = overlord_core::target::parse_ranges(["127.0.0.1"]).unwrap();
    })
    .await?;
    let mut c = client(&cluster.url).await?;
    let job = submit(
        &mut c,
        spec(&["127.0.0.1"], &port.to_string(), &["portscan", "banner"]),
    )
    .await?;
    let st = wait_finished(&cluster.url, job, Duration::from_secs(30)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    assert_eq!(
        (st.tasks_done, st.tasks_failed, st.findings),
        (0, 1, 0),
        "{st:?}"
    );
    assert!(all_results(&mut c, job).await?.is_empty());
    cluster.shutdown().await;
    Ok(())
}

/// Invariant: when the registry/scheduler actor panics, the root supervisor restarts it, minions
/// reconnect, job actors hand it their live leases again, and the job completes with each result
/// stored exactly once.
async fn registry_panic_is_supervised_and_recovered(backend: Backend) -> anyhow::Result<()> {
    panic_mid_job_then_complete(backend, |c| c.inject_registry_panic()).await
}

/// Invariant: a submission retried with the same request id — even after `kill -9` of the
/// coordinator and a restart — returns the job the first try created; another id creates another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_is_idempotent_across_coordinator_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut coord = CoordProc::spawn(dir.path(), "127.0.0.1:0")?;
    let addr = coord.addr;
    let mut c = client(&coord.url).await?;
    let req = |rid: &str| v1::SubmitJobRequest {
        spec: Some(noop_spec(5, 0)),
        request_id: rid.to_string(),
    };
    let first = c.submit_job(req("retry-me")).await?.into_inner().job_id;
    let again = c.submit_job(req("retry-me")).await?.into_inner().job_id;
    assert_eq!(first, again, "same request id, same job");
    coord.proc.kill9();
    let coord2 = CoordProc::spawn(dir.path(), &addr.to_string())?;
    let mut c = client(&coord2.url).await?;
    let after_restart = c.submit_job(req("retry-me")).await?.into_inner().job_id;
    assert_eq!(first, after_restart, "the request id survived kill -9");
    let other = c.submit_job(req("another")).await?.into_inner().job_id;
    assert_ne!(other, first);
    let jobs = c.list_jobs(v1::ListJobsRequest {}).await?.into_inner().jobs;
    assert_eq!(jobs.len(), 2, "exactly two jobs exist: {jobs:?}");
    let long = c
        .submit_job(req(&"x".repeat(200)))
        .await
        .expect_err("too long");
    assert_eq!(long.code(), tonic::Code::InvalidArgument);
    Ok(())
}

/// Invariant: a watcher that stops reading is dropped by the fan-out once its bounded queue is
/// full, replays the gap from storage when it reads again, and still sees every finding exactly
/// once, in order, then the end of the job.
async fn slow_watcher_misses_nothing_and_sees_nothing_twice(
    backend: Backend,
) -> anyhow::Result<()> {
    let cluster = InProc::start(backend, &[("m1", "prov-a"), ("m2", "prov-b")], 64).await?;
    let mut c = client(&cluster.url).await?;
    let n = 3000;
    let job = submit(&mut c, noop_spec(n, 0)).await?;
    let mut stream = c
        .watch_job(v1::WatchJobRequest {
            job_id: job,
            after_cursor: 0,
        })
        .await?
        .into_inner();
    // Do not read while the job runs: far more events than the queues hold pile up.
    let st = wait_finished(&cluster.url, job, Duration::from_secs(120)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    let mut seen = Vec::new();
    loop {
        match stream.message().await? {
            Some(v1::JobEvent {
                event: Some(v1::job_event::Event::Finding(f)),
            }) => seen.push(f.cursor),
            Some(v1::JobEvent {
                event: Some(v1::job_event::Event::Finished(_)),
            }) => break,
            Some(_) => {}
            None => anyhow::bail!("watch ended before Finished"),
        }
    }
    assert_eq!(seen, (1..=n).collect::<Vec<_>>());
    cluster.shutdown().await;
    Ok(())
}

/// Invariant: a job's rate limit (connections/s) holds across the cluster — never exceeded in
/// any window — and a job with fewer tasks than minions still gets its whole rate (a single scan
/// task is not slowed to rate / number of minions).
async fn job_rate_limit_is_respected_and_used(backend: Backend) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;
    let cluster = InProc::start(backend, &[("m1", "prov-a"), ("m2", "prov-b")], 16).await?;
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut ports = Vec::new();
    for _ in 0..300 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        ports.push(l.local_addr()?.port().to_string());
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((_s, _)) = l.accept().await {
                seen.lock().unwrap().push(Instant::now());
            }
        });
    }
    let rate = 200u32;
    let mut s = spec(&["127.0.0.1"], &ports.join(","), &["portscan"]);
    s.rate_limit = rate;
    let mut c = client(&cluster.url).await?;
    let job = submit(&mut c, s).await?;
    let st = wait_finished(&cluster.url, job, Duration::from_secs(60)).await?;
    assert_eq!(st.state, v1::JobState::Completed as i32);
    let open = all_results(&mut c, job)
        .await?
        .iter()
        .filter(|f| f.kind == "open_port")
        .count();
    assert_eq!(open, 300, "every listener found once");
    let mut t = seen.lock().unwrap().clone();
    t.sort();
    assert_eq!(t.len(), 300, "one connection per open port");
    // Never above the rate: at most rate (+10 % for the accept loops' own scheduling jitter,
    // which bunches timestamps) in any one-second window.
    let window = Duration::from_secs(1);
    let max_in_window = (0..t.len())
        .map(|i| t[i..].iter().take_while(|x| **x - t[i] < window).count())
        .max()
        .unwrap_or(0);
    assert!(
        max_in_window <= (rate as usize) * 11 / 10,
        "{max_in_window} connections within 1 s exceed {rate}/s"
    );
    // And the whole rate is used: 300 connections at 200/s take ~1.5 s (at rate/2, ~3 s).
    let span = t[t.len() - 1] - t[0];
    assert!(
        span >= Duration::from_millis(1300) && span <= Duration::from_millis(2500),
        "300 connections at {rate}/s took {span:?}"
    );
    cluster.shutdown().await;
    Ok(())
}

/// Invariant: cancel answers `Cancelled` at once, revokes the job's leases (the minions drop the
/// running tasks, so no result of the cancelled job is stored afterwards and their slots are free
/// for the next job right away), and another job runs to completion on the same minions.
async fn cancel_revokes_leases_promptly(backend: Backend) -> anyhow::Result<()> {
    let cluster = InProc::start(backend, &[("m1", "prov-a"), ("m2", "prov-b")], 4).await?;
    let mut c = client(&cluster.url).await?;
    // 40 tasks of 5 s each: 8 in flight, the rest pending, when we cancel.
    let job = submit(&mut c, noop_spec(40, 5000)).await?;
    wait_until(Duration::from_secs(20), "leases out", || async {
        let mut c = client(&cluster.url).await.ok()?;
        (status(&mut c, job).await.ok()?.tasks_leased == 8).then_some(())
    })
    .await?;
    let t = std::time::Instant::now();
    let st = c
        .cancel_job(v1::CancelJobRequest { job_id: job })
        .await?
        .into_inner()
        .status
        .expect("status");
    assert_eq!(st.state, v1::JobState::Cancelled as i32);
    assert_eq!(st.tasks_leased, 0);
    // The next job needs the slots the cancelled one held: it finishes long before their 5 s.
    let next = submit(&mut c, noop_spec(16, 0)).await?;
    let st2 = wait_finished(&cluster.url, next, Duration::from_secs(30)).await?;
    assert_eq!(st2.state, v1::JobState::Completed as i32);
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "slots freed promptly: next job done {:?} after cancel",
        t.elapsed()
    );
    // Wait past the cancelled tasks' 5 s: none of their results is stored.
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let st = status(&mut c, job).await?;
    assert_eq!(st.state, v1::JobState::Cancelled as i32);
    assert_eq!(st.findings, 0, "no finding of a cancelled job stored");
    assert!(all_results(&mut c, job).await?.is_empty());
    cluster.shutdown().await;
    Ok(())
}

/// A coordinator started through the library answers `leak` tasks by itself (its own lookup
/// minion, over real gRPC on loopback): an enrich → leak chain on a fixture screen ends in `leak`
/// findings. Before any minion with `enrich` exists, `GetJob`/`ListJobs` say what the job waits
/// for instead of hanging silently. An ordinary minion cannot declare `leak`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn library_coordinator_runs_leak_lookups_and_names_modules_nobody_serves()
-> anyhow::Result<()> {
    let screens = overlord_enrich::metrics::fixtures_dir()
        .map_err(anyhow::Error::msg)?
        .join("screens");
    let mail = screens.join("07_mail_from_light.png");
    let dir = tempfile::tempdir()?;
    let leaks = dir.path().join("leaks.csv");
    // 07 shows alice.smith@example-corp.com (known here) and bob.jones@ (unknown).
    std::fs::write(
        &leaks,
        "address,source,date\nalice.smith@example-corp.com,combo-2019,2019-01-07\n",
    )?;
    let mut settings = overlord_coordinator::Settings::local(dir.path().join("data"));
    settings.images.leaks = Some(leaks);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let coordinator = overlord_coordinator::start(settings, listener).await?;
    let url = coordinator.local_url();
    let mut c = client(&url).await?;
    let job = submit(
        &mut c,
        v1::JobSpec {
            name: "leak-chain".into(),
            modules: vec!["enrich".into(), "leak".into()],
            // relative to the minion's input directory (inputs are confined to it)
            inputs: vec!["07_mail_from_light.png".into()],
            ..Default::default()
        },
    )
    .await?;
    // No minion is live: the enrich root waits, and the status says for what.
    let waiting = wait_until(
        Duration::from_secs(10),
        "the job to name what it waits for",
        || {
            let mut c = c.clone();
            async move {
                let st = status(&mut c, job).await.ok()?;
                (!st.waiting_for_modules.is_empty()).then_some(st)
            }
        },
    )
    .await?;
    assert_eq!(waiting.waiting_for_modules, vec!["enrich".to_string()]);
    let listed = c.list_jobs(v1::ListJobsRequest {}).await?.into_inner().jobs;
    assert_eq!(listed[0].waiting_for_modules, vec!["enrich".to_string()]);

    // A minion may not declare `leak` (the coordinator runs it itself): no minion module has it.
    let mut bad = minion_settings(&url, "would-be-lookup", "px", 1);
    bad.modules = vec!["leak".into()];
    let refused = overlord_minion::run(bad, overlord_minion::modules::builtin(), async {}).await;
    assert!(
        matches!(refused, Err(overlord_minion::MinionError::MissingModule(ref m)) if m == "leak"),
        "{refused:?}"
    );

    // A minion with the builtin modules (enrich among them) arrives: the chain runs to the end.
    let (stop, _) = tokio::sync::watch::channel(false);
    let mut rx = stop.subscribe();
    let mut s = minion_settings(&url, "enricher", "px", 2);
    s.input_dir = Some(std::fs::canonicalize(&screens)?);
    let _ = &mail;
    let minion = tokio::spawn(async move {
        let _ = overlord_minion::run(s, overlord_minion::modules::builtin(), async move {
            let _ = rx.wait_for(|v| *v).await;
        })
        .await;
    });
    let fin = wait_finished(&url, job, Duration::from_secs(120)).await?;
    assert_eq!(fin.state, v1::JobState::Completed as i32, "{fin:?}");
    assert_eq!(
        (fin.tasks_total, fin.tasks_failed),
        (2, 0),
        "enrich + leak: {fin:?}"
    );
    assert!(status(&mut c, job).await?.waiting_for_modules.is_empty());
    let results = all_results(&mut c, job).await?;
    let enrich = results
        .iter()
        .find(|f| f.kind == FindingKind::Enrichment.as_str())
        .expect("an enrichment finding");
    let leak: Vec<&v1::Finding> = results
        .iter()
        .filter(|f| f.kind == FindingKind::Leak.as_str())
        .collect();
    assert_eq!(
        leak.len(),
        1,
        "one known address on the screen: {results:?}"
    );
    let l = leak[0];
    assert_eq!(
        (l.module.as_str(), l.minion_id.as_str(), l.provider.as_str()),
        ("leak", "coordinator", "coordinator"),
        "the coordinator ran the lookup itself"
    );
    assert_eq!(
        l.parent_task_id, enrich.task_id,
        "leak task spawned by the enrich task"
    );
    let Payload::Leak(found) =
        Payload::parse(&l.kind, &serde_json::from_str(&l.data_json)?).payload
    else {
        panic!("a typed leak finding: {l:?}")
    };
    assert_eq!(found.email, "alice.smith@example-corp.com");
    assert_eq!(found.source, "combo-2019");
    assert_eq!(
        found.image.as_deref(),
        Some(enrich.blob_sha256.as_str()),
        "the lookup names the image, which the enrichment refers to without re-sending it"
    );
    assert!(!enrich.blob_sha256.is_empty());
    let _ = stop.send(true);
    let _ = minion.await;
    coordinator.shutdown().await;
    Ok(())
}

/// Invariant: a graceful stop (`Running::shutdown`: stop accepting, finish acks, flush, close)
/// loses no acknowledged result. A minion keeps answering leases while the coordinator stops;
/// afterwards every result the coordinator acknowledged as accepted is stored as done (read back
/// through the storage API), the session ended with a status (not a reset), and the stop took
/// bounded time.
async fn graceful_stop_loses_no_acknowledged_result(backend: Backend) -> anyhow::Result<()> {
    use overlord_chaos_tests::rogue::{RogueIdentity, RogueMinion, empty_result};
    use overlord_storage::StoredTask;
    use std::collections::HashSet;
    use std::sync::Arc;
    let cluster = InProc::start(backend, &[], 1).await?;
    let mut c = client(&cluster.url).await?;
    let who = RogueIdentity::noop("r", "prov-r", 64);
    let rogue =
        Arc::new(RogueMinion::connect(&cluster.url, &who, Some(Duration::from_millis(100))).await?);
    let job = submit(&mut c, noop_spec(20_000, 0)).await?;
    // The minion answers every lease at once, in batches, until its session ends.
    let sender = {
        let r = rogue.clone();
        tokio::spawn(async move {
            let mut next = 0;
            loop {
                let (fresh, closed) = {
                    let l = r.log();
                    let fresh: Vec<_> = l.leases[next..]
                        .iter()
                        .map(|(_, x)| empty_result(x))
                        .collect();
                    next = l.leases.len();
                    (fresh, l.closed.is_some())
                };
                if closed {
                    break;
                }
                if fresh.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                } else if r.send(fresh).await.is_err() {
                    break;
                }
            }
        })
    };
    let accepted = |r: &RogueMinion| r.log().acks.iter().filter(|(_, a)| a.accepted).count();
    wait_until(
        Duration::from_secs(30),
        "some acknowledged results",
        || async { (accepted(&rogue) > 500).then_some(()) },
    )
    .await?;
    let InProc {
        coordinator, store, ..
    } = cluster;
    let t0 = std::time::Instant::now();
    coordinator.shutdown().await;
    let took = t0.elapsed();
    tokio::time::timeout(Duration::from_secs(10), sender).await??;
    let (acked, closed, n_leases) = {
        let l = rogue.log();
        let acked: HashSet<u64> = l
            .acks
            .iter()
            .filter(|(_, a)| a.accepted)
            .map(|(_, a)| a.token)
            .collect();
        (acked, l.closed.clone(), l.leases.len())
    };
    let task_of: HashMap<u64, u64> = rogue
        .leases()
        .iter()
        .map(|l| (l.token, l.task_id))
        .collect();
    assert!(closed.is_some(), "the session ended");
    assert!(
        took < Duration::from_secs(30),
        "graceful stop took {took:?}"
    );
    assert!(
        acked.len() < 20_000,
        "the stop came while results were still flowing ({} acked of {n_leases} leased)",
        acked.len()
    );
    // The store is free once the coordinator is gone; reopen it like a restart would (the memory
    // store keeps only what was flushed).
    let store = store.reopen()?;
    let done: HashSet<u64> = store
        .tasks(job)?
        .into_iter()
        .filter_map(|t| match t {
            StoredTask::Done(id) => Some(id),
            StoredTask::Record(_) => None,
        })
        .collect();
    let lost: Vec<u64> = acked
        .iter()
        .map(|t| task_of[t])
        .filter(|id| !done.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged results not stored after a graceful stop (of {}): {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
    Ok(())
}
