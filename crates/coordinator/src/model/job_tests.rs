//! Tests of [`JobModel`] without processes: unit tests of each decision, and the property that
//! recovering from any prefix of the committed write batches gives back the model as it was right
//! after that batch, and that a recovered model still completes its job with no task lost or
//! duplicated.

use super::job::{CancelOutcome, Effects, JobModel, Limits, Offered, ToRegistry};
use super::sim::Rng;
use crate::engine::{IngestedResult, ParsedFinding, parse_findings};
use overlord_core::finding::scan::OpenPort;
use overlord_core::job::{
    JobRecord, JobSpec, JobState, RawSpec, TaskRecord, TaskState, prepare, root_index, root_plan,
};
use overlord_core::scope::Scope;
use overlord_core::{JobId, TaskId, Token};
use overlord_proto::v1;
use overlord_storage::{Batch, MemStore, Op, Store, StoredTask};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

const JOB: JobId = 7;

fn spec(targets: &str, ports: &str, modules: &[&str], params: &str) -> JobSpec {
    let raw = RawSpec {
        name: "model".into(),
        targets: vec![targets.into()],
        ports: ports.into(),
        modules: modules.iter().map(|m| m.to_string()).collect(),
        params_json: params.into(),
        ..Default::default()
    };
    prepare(&raw, &Scope::loopback(), &|_| Err("no resolver".into())).expect("valid spec")
}

fn limits(watermark: usize) -> Limits {
    Limits {
        task_timeout_ms: 600_000,
        max_attempts: 3,
        expand_watermark: watermark,
    }
}

/// A submitted job: the manager's batch (spec + first record) and the model.
fn submit(spec: JobSpec, watermark: usize) -> (Vec<Op>, JobModel) {
    let plan = root_plan(&spec).expect("plan");
    let rec = JobRecord::new(JOB, plan.total, 0x5eed, 1_000);
    let batch = vec![Op::Spec(JOB, Box::new(spec.clone())), Op::Job(rec.clone())];
    let m = JobModel::new(limits(watermark), None, rec, Arc::new(spec), plan);
    (batch, m)
}

fn open_ports(task: &TaskRecord, n: usize) -> Vec<ParsedFinding> {
    let target = task.spec.target.expect("scan task has a target");
    let out: Vec<v1::FindingOut> = task
        .spec
        .ports
        .iter()
        .take(n)
        .map(|p| v1::FindingOut {
            kind: "open_port".into(),
            target: target.to_string(),
            port: u32::from(*p),
            data_json: serde_json::to_string(&OpenPort::tcp()).unwrap(),
            ..Default::default()
        })
        .collect();
    parse_findings(&out).expect("valid findings")
}

fn result(
    token: Token,
    task: TaskId,
    findings: Result<Vec<ParsedFinding>, String>,
) -> IngestedResult {
    IngestedResult {
        token,
        job_id: JOB,
        task_id: task,
        ok: true,
        findings,
        error: String::new(),
        permanent: false,
        started_at_ms: 1,
        finished_at_ms: 2,
        probe_counts: Vec::new(),
        partial: None,
    }
}

fn failed(token: Token, task: TaskId, permanent: bool) -> IngestedResult {
    IngestedResult {
        ok: false,
        findings: Ok(Vec::new()),
        error: "connection refused by the test".into(),
        permanent,
        ..result(token, task, Ok(Vec::new()))
    }
}

struct Minion {
    id: String,
    provider: String,
    generation: u64,
    modules: Vec<String>,
}

impl Minion {
    fn new(id: &str, provider: &str) -> Self {
        Minion {
            id: id.into(),
            provider: provider.into(),
            generation: 1,
            modules: ["portscan", "service", "banner"].map(String::from).to_vec(),
        }
    }
}

/// Offers `free[i]` slots of each minion; returns (minion index, token, task) per lease.
fn offer(
    m: &mut JobModel,
    minions: &[Minion],
    free: &[u32],
    now: u64,
    next_token: &mut u64,
) -> Vec<(usize, Token, TaskId)> {
    let slots: Vec<Offered<'_>> = minions
        .iter()
        .zip(free)
        .map(|(mn, f)| Offered {
            minion: &mn.id,
            provider: &mn.provider,
            generation: mn.generation,
            modules: &mn.modules,
            free: *f,
        })
        .collect();
    let leases = m.offer(
        1,
        &slots,
        minions.len() as u32,
        now,
        &mut || {
            *next_token += 1;
            *next_token
        },
        &|_| None,
    );
    leases
        .into_iter()
        .enumerate()
        .flat_map(|(i, ls)| ls.into_iter().map(move |l| (i, l.token, l.task_id)))
        .collect()
}

fn tasks_written(fx: &Effects) -> Vec<&TaskRecord> {
    fx.writes
        .iter()
        .filter_map(|op| match op {
            Op::Task(t) => Some(t),
            _ => None,
        })
        .collect()
}

// ---------------- unit tests ----------------

#[test]
fn expansion_is_lazy_up_to_the_watermark_and_unwritten() {
    let (_, mut m) = submit(
        spec(
            "127.0.0.0/27",
            "1-8",
            &["portscan"],
            r#"{"probes_per_task":4}"#,
        ),
        5,
    );
    let total = m.record().root_total;
    assert!(
        total > 5,
        "the test needs more root tasks ({total}) than the watermark"
    );
    m.start(10);
    assert_eq!(m.pending().count(), 5);
    assert_eq!(m.record().root_next, 5);
    let fx = m.take_effects(10);
    // only the job record (with the cursor) is written, never a created root task
    assert!(tasks_written(&fx).is_empty());
    assert!(matches!(&fx.writes[..], [Op::Job(r)] if r.root_next == 5));
    let d = m.demand();
    assert_eq!(d.by_module, vec![("portscan".to_string(), 5)]);
    assert!(fx.registry.contains(&ToRegistry::Demand(d)));
}

#[test]
fn an_offer_leases_in_queue_order_writes_the_leases_and_tells_the_registry_first() {
    let (_, mut m) = submit(
        spec(
            "127.0.0.0/29",
            "1-2",
            &["portscan"],
            r#"{"probes_per_task":2}"#,
        ),
        100,
    );
    m.start(10);
    m.take_effects(10);
    let first: Vec<TaskId> = m.pending().take(3).collect();
    let minions = [Minion::new("a", "p1"), Minion::new("b", "p2")];
    let mut tok = 0;
    let leased = offer(&mut m, &minions, &[2, 1], 20, &mut tok);
    let mut got: Vec<TaskId> = leased.iter().map(|l| l.2).collect();
    got.sort();
    let mut want = first.clone();
    want.sort();
    assert_eq!(got, want);
    let fx = m.take_effects(20);
    let written = tasks_written(&fx);
    assert_eq!(written.len(), 3);
    assert!(
        written
            .iter()
            .all(|t| matches!(t.state, TaskState::Leased { .. }))
    );
    let ToRegistry::Taken { used, .. } = &fx.registry[0] else {
        panic!("Taken first: {:?}", fx.registry)
    };
    let tokens: usize = used.iter().map(|u| u.2.len()).sum();
    assert_eq!(tokens, 3);
    assert_eq!(fx.tally.granted, 3);
    assert_eq!(m.leases().len(), 3);
}

#[test]
fn a_result_completes_its_task_stores_findings_and_spawns_follow_ups() {
    let (_, mut m) = submit(
        spec("127.0.0.1/32", "22", &["portscan", "service"], ""),
        100,
    );
    m.start(10);
    m.take_effects(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let l = offer(&mut m, &minions, &[1], 20, &mut tok);
    let (_, token, task) = l[0];
    m.take_effects(20);
    let findings = open_ports(&m.tasks()[&task], 1);
    let acks = m.results("a", "p1", 1, vec![result(token, task, Ok(findings))], 30);
    assert!(acks[0].accepted, "{:?}", acks[0]);
    let fx = m.take_effects(30);
    assert!(
        fx.writes
            .iter()
            .any(|op| matches!(op, Op::TaskDone(JOB, t) if *t == task))
    );
    assert!(
        fx.writes
            .iter()
            .any(|op| matches!(op, Op::Finding(f) if f.cursor == 1 && f.port == Some(22)))
    );
    let follow: Vec<_> = tasks_written(&fx)
        .into_iter()
        .filter(|t| t.spec.parent == Some(task))
        .collect();
    assert_eq!(follow.len(), 1);
    assert_eq!(follow[0].spec.module, "service");
    assert_eq!(m.record().done, 1);
    assert_eq!(m.record().findings, 1);
    assert_eq!(fx.tally.accepted, 1);
    // the follow-up runs and the job completes
    assert!(!m.finishing());
    let l = offer(&mut m, &minions, &[1], 40, &mut tok);
    let (_, token, task) = l[0];
    m.results("a", "p1", 1, vec![result(token, task, Ok(Vec::new()))], 50);
    assert!(m.finishing());
    let fx = m.take_effects(50);
    let (rec, _) = fx.finished.expect("the job ended");
    assert_eq!(rec.state, JobState::Completed);
    assert_eq!(rec.done, 2);
    assert!(
        fx.events
            .iter()
            .any(|e| matches!(e, crate::hub::HubEvent::Finished(..)))
    );
}

#[test]
fn a_result_under_a_stale_token_or_minion_is_rejected_and_counted() {
    let (_, mut m) = submit(spec("127.0.0.1/32", "22", &["portscan"], ""), 100);
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let (_, token, task) = offer(&mut m, &minions, &[1], 20, &mut tok)[0];
    m.take_effects(20);
    let acks = m.results(
        "a",
        "p1",
        1,
        vec![result(token + 100, task, Ok(Vec::new()))],
        30,
    );
    assert!(!acks[0].accepted);
    let acks = m.results("a", "p1", 2, vec![result(token, task, Ok(Vec::new()))], 30);
    assert!(!acks[0].accepted, "an older session's generation is stale");
    assert_eq!(m.record().stale_rejected, 2);
    assert_eq!(m.take_effects(30).tally.rejected, 2);
    // the live lease still completes the task, once
    assert!(m.results("a", "p1", 1, vec![result(token, task, Ok(Vec::new()))], 40)[0].accepted);
    assert!(!m.results("a", "p1", 1, vec![result(token, task, Ok(Vec::new()))], 40)[0].accepted);
    assert_eq!(m.record().done, 1);
}

#[test]
fn failures_retry_until_max_attempts_and_a_permanent_one_fails_at_once() {
    let (_, mut m) = submit(
        spec(
            "127.0.0.0/31",
            "22",
            &["portscan"],
            r#"{"probes_per_task":1}"#,
        ),
        100,
    );
    m.start(10);
    assert_eq!(m.record().root_total, 2);
    let minions = [Minion::new("a", "p1"), Minion::new("b", "p2")];
    let mut tok = 0;
    let leased = offer(&mut m, &minions, &[1, 1], 20, &mut tok);
    let (ia, ta, task_a) = leased[0];
    let (ib, tb, task_b) = leased[1];
    let (ma, mb) = (&minions[ia].id, &minions[ib].id);
    m.results(
        mb,
        &minions[ib].provider,
        1,
        vec![failed(tb, task_b, true)],
        30,
    );
    assert_eq!(m.record().failed, 1, "a permanent failure is not retried");
    // transient: requeued twice, failed at the third attempt (max_attempts = 3)
    let mut token = ta;
    let mut minion = ma.clone();
    for attempt in 1..=3 {
        let i = minions.iter().position(|x| x.id == minion).unwrap();
        m.results(
            &minion,
            &minions[i].provider,
            1,
            vec![failed(token, task_a, false)],
            40,
        );
        let t = m.tasks().get(&task_a);
        if attempt < 3 {
            let t = t.expect("requeued");
            assert_eq!(t.attempts, attempt);
            assert_eq!(t.state, TaskState::Pending);
            let l = offer(&mut m, &minions, &[1, 1], 50, &mut tok);
            assert_eq!(l.len(), 1);
            token = l[0].1;
            minion = minions[l[0].0].id.clone();
        } else {
            assert!(t.is_none());
        }
    }
    assert_eq!(m.record().failed, 2);
    assert!(m.finishing(), "every task ended");
    let fx = m.take_effects(60);
    assert!(
        tasks_written(&fx)
            .iter()
            .any(|t| matches!(t.state, TaskState::Failed { .. }))
    );
}

#[test]
fn an_expired_lease_is_requeued_with_an_attempt_and_the_registry_told() {
    let (_, mut m) = submit(spec("127.0.0.1/32", "22", &["portscan"], ""), 100);
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let (_, token, task) = offer(&mut m, &minions, &[1], 20, &mut tok)[0];
    m.take_effects(20);
    m.tick(1_000);
    assert!(
        m.take_effects(1_000)
            .registry
            .iter()
            .all(|r| !matches!(r, ToRegistry::Expired(_)))
    );
    m.tick(10_000_000);
    let fx = m.take_effects(10_000_000);
    assert!(fx.registry.contains(&ToRegistry::Expired(vec![token])));
    assert_eq!(m.tasks()[&task].state, TaskState::Pending);
    assert_eq!(m.tasks()[&task].attempts, 1);
    assert!(m.leases().is_empty());
    // the late result is stale
    assert!(
        !m.results(
            "a",
            "p1",
            1,
            vec![result(token, task, Ok(Vec::new()))],
            10_000_001
        )[0]
        .accepted
    );
}

#[test]
fn a_malformed_result_requeues_the_task_and_kicks_the_minion() {
    let (_, mut m) = submit(spec("127.0.0.1/32", "22", &["portscan"], ""), 100);
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let (_, token, task) = offer(&mut m, &minions, &[1], 20, &mut tok)[0];
    m.take_effects(20);
    let acks = m.results(
        "a",
        "p1",
        1,
        vec![result(token, task, Err("bad json".into()))],
        30,
    );
    assert!(!acks[0].accepted);
    let fx = m.take_effects(30);
    assert!(
        fx.registry
            .iter()
            .any(|r| matches!(r, ToRegistry::Kick { minion, .. } if minion == "a"))
    );
    assert_eq!(m.tasks()[&task].state, TaskState::Pending);
    // a finding outside the task (another port) is a violation: requeued, attempt not counted
    let (_, token, task) = offer(&mut m, &minions, &[1], 40, &mut tok)[0];
    let mut f = open_ports(&m.tasks()[&task], 1);
    f[0].port = Some(23);
    assert!(!m.results("a", "p1", 1, vec![result(token, task, Ok(f))], 50)[0].accepted);
    assert_eq!(m.tasks()[&task].attempts, 1);
    assert_eq!(m.record().findings, 0);
}

#[test]
fn partials_keep_the_lease_move_its_deadline_and_stay_duplicates_after_recovery() {
    let (submitted, mut m) = submit(spec("127.0.0.1/32", "22", &["portscan"], ""), 100);
    let store = MemStore::new();
    store.apply(Batch { ops: submitted }).unwrap();
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let (_, token, task) = offer(&mut m, &minions, &[1], 20, &mut tok)[0];
    store
        .apply(Batch {
            ops: m.take_effects(20).writes,
        })
        .unwrap();
    let deadline = |m: &JobModel| match m.tasks()[&task].state {
        TaskState::Leased { deadline_ms, .. } => deadline_ms,
        ref s => panic!("not leased: {s:?}"),
    };
    let first = deadline(&m);
    let partial = |seq| IngestedResult {
        partial: Some(seq),
        ..result(token, task, Ok(Vec::new()))
    };
    let acks = m.results("a", "p1", 1, vec![partial(1)], 5_000);
    assert!(acks[0].accepted && acks[0].reason.is_empty() && acks[0].seq == 1);
    assert!(deadline(&m) > first, "a partial moves the deadline on");
    assert_eq!(m.record().partial_seq.get(&token), Some(&1));
    assert_eq!(m.leases().get(&token), Some(&task), "the lease stays");
    store
        .apply(Batch {
            ops: m.take_effects(5_000).writes,
        })
        .unwrap();
    // a coordinator restart: the re-sent partial is still a duplicate, the next one is new
    let mut r = JobModel::recover(&store, JOB, true, limits(100), None, 6_000).unwrap();
    let acks = r.results("a", "p1", 1, vec![partial(1)], 6_000);
    assert!(acks[0].accepted && acks[0].reason == "duplicate");
    assert!(
        r.results("a", "p1", 1, vec![partial(2)], 6_001)[0]
            .reason
            .is_empty()
    );
    // the final result ends the lease and forgets its seqs
    assert!(
        r.results(
            "a",
            "p1",
            1,
            vec![result(token, task, Ok(Vec::new()))],
            6_002
        )[0]
        .accepted
    );
    assert!(r.record().partial_seq.is_empty());
    assert!(r.finishing());
    // a partial without ok is malformed: the lease ends, the task goes back to the queue
    let (_, mut m2) = submit(spec("127.0.0.1/32", "22", &["portscan"], ""), 100);
    m2.start(10);
    let (_, token, task) = offer(&mut m2, &minions, &[1], 20, &mut tok)[0];
    let bad = IngestedResult {
        partial: Some(1),
        ..failed(token, task, false)
    };
    assert!(!m2.results("a", "p1", 1, vec![bad], 30)[0].accepted);
    let fx = m2.take_effects(30);
    assert!(fx.registry.contains(&ToRegistry::Release(vec![token])));
    assert!(
        fx.registry
            .iter()
            .any(|r| matches!(r, ToRegistry::Kick { .. }))
    );
    assert_eq!(m2.tasks()[&task].state, TaskState::Pending);
}

/// Regression: the follow-up guard lives in memory only, and a recovered job started it empty, so
/// a finding reported again after a restart (a live task's next partial, a re-run) made a
/// follow-up that was still queued a second time.
#[test]
fn a_follow_up_live_at_a_restart_is_not_made_again_by_a_repeated_finding() {
    let (submitted, mut m) = submit(
        spec("127.0.0.1/32", "22", &["portscan", "service"], ""),
        100,
    );
    let store = MemStore::new();
    store.apply(Batch { ops: submitted }).unwrap();
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let (_, token, task) = offer(&mut m, &minions, &[1], 20, &mut tok)[0];
    store
        .apply(Batch {
            ops: m.take_effects(20).writes,
        })
        .unwrap();
    let partial = |seq| IngestedResult {
        partial: Some(seq),
        ..result(token, task, Ok(open_ports(&m.tasks()[&task], 1)))
    };
    // the same open port in three partials of one live task
    let (p1, p2, p3) = (partial(1), partial(2), partial(3));
    let service = |m: &JobModel| {
        m.tasks()
            .values()
            .filter(|t| t.spec.module == "service")
            .count()
    };
    assert!(m.results("a", "p1", 1, vec![p1], 30)[0].accepted);
    assert_eq!(service(&m), 1);
    assert!(m.results("a", "p1", 1, vec![p2], 40)[0].accepted);
    assert_eq!(service(&m), 1, "the live model makes a follow-up once");
    store
        .apply(Batch {
            ops: m.take_effects(40).writes,
        })
        .unwrap();
    let mut r = JobModel::recover(&store, JOB, true, limits(100), None, 50).unwrap();
    let created = r.record().tasks_created;
    assert!(r.results("a", "p1", 1, vec![p3], 60)[0].accepted);
    assert_eq!(service(&r), 1, "a recovered model makes it once too");
    assert_eq!(r.record().tasks_created, created);
}

#[test]
fn cancel_ends_every_live_task_releases_the_leases_and_answers_once_durable() {
    let (_, mut m) = submit(
        spec(
            "127.0.0.0/29",
            "1-2",
            &["portscan"],
            r#"{"probes_per_task":2}"#,
        ),
        3,
    );
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let leased = offer(&mut m, &minions, &[2], 20, &mut tok);
    m.take_effects(20);
    let live = m.tasks().len() as u64;
    let CancelOutcome::Cancelled(st) = m.cancel(30) else {
        panic!("a running job is cancelled")
    };
    assert_eq!(st.state, v1::JobState::Cancelled as i32);
    let fx = m.take_effects(30);
    let mut tokens: Vec<Token> = leased.iter().map(|l| l.1).collect();
    tokens.sort();
    let released = fx
        .registry
        .iter()
        .find_map(|r| match r {
            ToRegistry::Release(t) => Some(t.clone()),
            _ => None,
        })
        .expect("released");
    let mut released = released;
    released.sort();
    assert_eq!(released, tokens);
    assert_eq!(tasks_written(&fx).len() as u64, live);
    assert!(
        tasks_written(&fx)
            .iter()
            .all(|t| t.state == TaskState::Cancelled)
    );
    assert_eq!(m.record().cancelled, live);
    assert!(fx.finished.is_some());
    // not reported finished before the flush
    assert_eq!(m.status().state, v1::JobState::Running as i32);
    m.final_durable();
    assert_eq!(m.status().state, v1::JobState::Cancelled as i32);
    assert!(matches!(m.cancel(40), CancelOutcome::AlreadyDone(_)));
    // a result of a cancelled lease is stale
    let (_, token, task) = leased[0];
    assert!(!m.results("a", "p1", 1, vec![result(token, task, Ok(Vec::new()))], 50)[0].accepted);
}

#[test]
fn a_recovered_job_reports_its_leases_and_requeues_what_the_registry_gives_back() {
    let (submitted, mut m) = submit(
        spec(
            "127.0.0.0/29",
            "1-2",
            &["portscan"],
            r#"{"probes_per_task":2}"#,
        ),
        100,
    );
    let store = MemStore::new();
    store.apply(Batch { ops: submitted }).unwrap();
    m.start(10);
    let minions = [Minion::new("a", "p1")];
    let mut tok = 0;
    let leased = offer(&mut m, &minions, &[2], 20, &mut tok);
    store
        .apply(Batch {
            ops: m.take_effects(20).writes,
        })
        .unwrap();
    let mut r = JobModel::recover(&store, JOB, false, limits(100), None, 30).unwrap();
    let fx = r.take_effects(30);
    let Some(ToRegistry::Adopt {
        leases,
        keep: false,
    }) = fx.registry.first()
    else {
        panic!("Adopt first: {:?}", fx.registry)
    };
    let mut got: Vec<Token> = leases.iter().map(|l| l.0).collect();
    got.sort();
    assert_eq!(got, leased.iter().map(|l| l.1).collect::<Vec<_>>());
    r.requeue_tokens(got, "lease given back", false, 40);
    assert!(r.leases().is_empty());
    assert_eq!(r.pending().count(), m.tasks().len());
}

// ---------------- recovery from any prefix of writes ----------------

/// The fields of a model that recovery must give back.
#[derive(Debug, PartialEq)]
struct Snap {
    rec: JobRecord,
    /// Live tasks, lease deadlines cleared (recovery gives a leased task a fresh deadline).
    tasks: BTreeMap<TaskId, TaskRecord>,
    pending: BTreeSet<TaskId>,
    pending_by_module: Vec<(String, u64)>,
    leases: BTreeMap<Token, TaskId>,
}

fn snap(m: &JobModel) -> Snap {
    let tasks = m
        .tasks()
        .iter()
        .map(|(id, t)| {
            let mut t = t.clone();
            if let TaskState::Leased { deadline_ms, .. } = &mut t.state {
                *deadline_ms = 0;
            }
            (*id, t)
        })
        .collect();
    let pending: BTreeSet<TaskId> = m.pending().collect();
    assert_eq!(pending.len(), m.pending().count(), "a task queued twice");
    Snap {
        rec: m.record().clone(),
        tasks,
        pending,
        pending_by_module: m.pending_by_module(),
        leases: m.leases().iter().map(|(k, v)| (*k, *v)).collect(),
    }
}

/// Invariants of a live model between inputs.
fn check_live(m: &JobModel) {
    let pending: BTreeSet<TaskId> = m.pending().collect();
    for (id, t) in m.tasks() {
        match &t.state {
            TaskState::Pending => assert!(pending.contains(id), "pending task {id} not queued"),
            TaskState::Leased { token, .. } => {
                assert_eq!(
                    m.leases().get(token),
                    Some(id),
                    "lease of task {id} not in the table"
                );
                assert!(!pending.contains(id), "leased task {id} also queued");
            }
            s => panic!("task {id} in state {s:?} is not live"),
        }
    }
    for t in &pending {
        assert!(m.tasks().contains_key(t), "queued task {t} unknown");
    }
    assert_eq!(m.leases().len() + pending.len(), m.tasks().len());
    let r = m.record();
    assert_eq!(
        r.tasks_created - r.done - r.failed - r.cancelled,
        m.tasks().len() as u64,
        "counts disagree with the live tasks"
    );
}

/// A driver of one job: random inputs from a seeded RNG, every committed batch recorded.
struct Run {
    m: JobModel,
    store: MemStore,
    /// Every batch committed so far, the manager's submission first.
    batches: Vec<Vec<Op>>,
    /// The model right after each batch.
    snaps: Vec<Snap>,
    /// Unanswered leases and minion generations right after each batch.
    outs: Vec<(Vec<(usize, u64, Token, TaskId)>, Vec<u64>)>,
    minions: Vec<Minion>,
    /// Leases handed out and not yet answered: (minion index, generation, token, task).
    out: Vec<(usize, u64, Token, TaskId)>,
    /// Leases answered (their tokens can be re-sent as duplicates).
    answered: Vec<(usize, u64, Token, TaskId)>,
    now: u64,
    token: Token,
}

impl Run {
    fn new(submitted: Option<Vec<Op>>, m: JobModel) -> Self {
        let store = MemStore::new();
        let mut r = Run {
            m,
            store,
            batches: Vec::new(),
            snaps: Vec::new(),
            outs: Vec::new(),
            minions: vec![
                Minion::new("m0", "p0"),
                Minion::new("m1", "p1"),
                Minion::new("m2", "p0"),
            ],
            out: Vec::new(),
            answered: Vec::new(),
            now: 1_000,
            token: 0,
        };
        if let Some(ops) = submitted {
            r.commit(ops);
        }
        r
    }

    fn commit(&mut self, ops: Vec<Op>) {
        if ops.is_empty() {
            return;
        }
        self.store.apply(Batch { ops: ops.clone() }).unwrap();
        self.batches.push(ops);
        self.snaps.push(snap(&self.m));
        let gens = self.minions.iter().map(|m| m.generation).collect();
        self.outs.push((self.out.clone(), gens));
    }

    fn end_turn(&mut self) {
        let fx = self.m.take_effects(self.now);
        check_live(&self.m);
        self.commit(fx.writes);
    }

    fn offer(&mut self, free: &[u32]) {
        let l = offer(&mut self.m, &self.minions, free, self.now, &mut self.token);
        for (i, tok, task) in l {
            self.out.push((i, self.minions[i].generation, tok, task));
        }
    }

    fn answer(&mut self, k: usize, item: impl FnOnce(Token, TaskId, &JobModel) -> IngestedResult) {
        let (i, generation, token, task) = self.out.swap_remove(k);
        let r = item(token, task, &self.m);
        let mn = &self.minions[i];
        self.m.results(
            &mn.id.clone(),
            &mn.provider.clone(),
            generation,
            vec![r],
            self.now,
        );
        self.answered.push((i, generation, token, task));
    }

    /// One random input.
    fn step(&mut self, rng: &mut Rng, cancel_percent: u64) {
        self.now += 1 + rng.below(50);
        match rng.below(100) {
            0..30 => {
                let free: Vec<u32> = (0..self.minions.len())
                    .map(|_| rng.below(4) as u32)
                    .collect();
                self.offer(&free);
            }
            30..70 if !self.out.is_empty() => {
                let k = rng.below(self.out.len() as u64) as usize;
                let kind = rng.below(100);
                let n = rng.below(3) as usize;
                self.answer(k, |token, task, m| {
                    let live = m.tasks().get(&task);
                    let findings = match live {
                        Some(t) if t.spec.target.is_some() && t.spec.module == "portscan" => {
                            open_ports(t, n)
                        }
                        _ => Vec::new(),
                    };
                    match kind {
                        0..70 => result(token, task, Ok(findings)),
                        70..85 => failed(token, task, false),
                        85..90 => failed(token, task, true),
                        90..95 => result(token, task, Err("truncated finding".into())),
                        _ => {
                            // a finding on a port the task never had: a violation
                            let mut f = findings;
                            if let Some(first) = f.first_mut() {
                                first.port = Some(9);
                            }
                            result(token, task, Ok(f))
                        }
                    }
                });
            }
            70..75 if !self.answered.is_empty() => {
                // a re-sent result (after a reconnect): a duplicate or stale
                let k = rng.below(self.answered.len() as u64) as usize;
                let (i, generation, token, task) = self.answered[k];
                let mn = &self.minions[i];
                self.m.results(
                    &mn.id.clone(),
                    &mn.provider.clone(),
                    generation,
                    vec![result(token, task, Ok(Vec::new()))],
                    self.now,
                );
            }
            75..80 => {
                // a minion dies: the registry takes its leases back; it comes back as a new
                // generation (its unanswered leases are lost with it)
                let i = rng.below(self.minions.len() as u64) as usize;
                let gen_ = self.minions[i].generation;
                let tokens: Vec<Token> = self
                    .m
                    .leased()
                    .into_iter()
                    .filter(|(_, mn, g)| *mn == self.minions[i].id && *g == gen_)
                    .map(|(t, _, _)| t)
                    .collect();
                self.out.retain(|o| o.0 != i);
                self.minions[i].generation += 1;
                self.m.requeue_tokens(tokens, "minion lost", true, self.now);
            }
            80..92 => {
                if rng.chance(10) {
                    // long enough for every lease to expire
                    self.now += 10_000_000;
                }
                self.m.tick(self.now);
            }
            92..94 => self.m.stale(1 + rng.below(3)),
            94..96 => self.m.readopt(),
            96..100 if rng.chance(cancel_percent) && self.batches.len() > 25 => {
                let _ = self.m.cancel(self.now);
            }
            _ => self.m.tick(self.now),
        }
        self.end_turn();
    }

    /// Well-behaved minions until the job ends (bounded).
    fn drain(&mut self, rng: &mut Rng) {
        for _ in 0..100_000 {
            if self.m.finishing() {
                return;
            }
            self.now += 10;
            if self.out.is_empty() {
                self.offer(&[3, 3, 3]);
                if self.out.is_empty() {
                    // nothing leasable: let time pass (expired leases come back)
                    self.now += 10_000_000;
                    self.m.tick(self.now);
                }
            } else {
                let k = rng.below(self.out.len() as u64) as usize;
                let n = rng.below(2) as usize;
                self.answer(k, |token, task, m| {
                    let f = match m.tasks().get(&task) {
                        Some(t) if t.spec.module == "portscan" => open_ports(t, n),
                        _ => Vec::new(),
                    };
                    result(token, task, Ok(f))
                });
            }
            self.end_turn();
        }
        panic!("the job did not end: {:?}", snap(&self.m));
    }
}

/// Every task ends exactly once over the whole write history, and the final store agrees.
fn check_history(batches: &[Vec<Op>], store: &dyn Store, cancelled: bool) {
    let rec = store.job(JOB).unwrap().unwrap();
    let want = if cancelled {
        JobState::Cancelled
    } else {
        JobState::Completed
    };
    assert_eq!(rec.state, want);
    assert_eq!(rec.root_next, rec.root_total);
    assert_eq!(rec.done + rec.failed + rec.cancelled, rec.tasks_created);
    let mut ended: HashMap<TaskId, usize> = HashMap::new();
    let mut findings = BTreeSet::new();
    for op in batches.iter().flatten() {
        match op {
            Op::TaskDone(_, t) => {
                *ended.entry(*t).or_default() += 1;
            }
            Op::Task(t) => {
                assert!(
                    !ended.contains_key(&t.spec.task_id),
                    "task {} written after it ended: {t:?}",
                    t.spec.task_id
                );
                if matches!(t.state, TaskState::Failed { .. } | TaskState::Cancelled) {
                    *ended.entry(t.spec.task_id).or_default() += 1;
                }
            }
            Op::Finding(f) => assert!(
                findings.insert(f.cursor),
                "finding cursor {} twice",
                f.cursor
            ),
            _ => {}
        }
    }
    if let Some((t, n)) = ended.iter().find(|(_, n)| **n > 1) {
        panic!("task {t} ended {n} times");
    }
    assert_eq!(findings.len() as u64, rec.findings);
    assert_eq!(findings.last().copied().unwrap_or(0), rec.findings);
    // a cancel ends the expanded tasks only; every created task ended
    assert_eq!(ended.len() as u64, rec.tasks_created, "tasks lost");
    let stored = store.tasks(JOB).unwrap();
    assert_eq!(stored.len() as u64, rec.tasks_created);
    let mut roots = BTreeSet::new();
    for s in &stored {
        match s {
            StoredTask::Done(_) => {}
            StoredTask::Record(t) => assert!(
                matches!(t.state, TaskState::Failed { .. } | TaskState::Cancelled),
                "task left live: {t:?}"
            ),
        }
        if let Some(i) = root_index(s.task_id(), rec.root_total) {
            roots.insert(i);
        }
    }
    if !cancelled {
        assert_eq!(roots.len() as u64, rec.root_total, "root tasks lost");
    }
}

fn store_of(batches: &[Vec<Op>]) -> MemStore {
    let s = MemStore::new();
    for b in batches {
        s.apply(Batch { ops: b.clone() }).unwrap();
    }
    s
}

fn prefix_spec() -> JobSpec {
    // 16 addresses x 3 ports, one address per task: 16 root tasks, follow-ups on open ports,
    // and verification runs of half the scan tasks.
    spec(
        "127.0.0.0/28",
        "21,22,80",
        &["portscan", "service"],
        r#"{"probes_per_task":2,"verify_per_mille":500}"#,
    )
}

#[test]
fn recovery_from_any_prefix_of_writes_gives_the_same_model_and_the_job_still_completes() {
    #[derive(Default)]
    struct Seen {
        cancelled: bool,
        failed: bool,
        follow_ups: bool,
        verified: bool,
        stale: bool,
        errors: BTreeSet<String>,
    }
    let mut seen = Seen::default();
    for seed in 0..12u64 {
        let mut rng = Rng::new(0x0b5e_55ed ^ seed);
        let (submitted, m) = submit(prefix_spec(), 6);
        let mut run = Run::new(Some(submitted), m);
        run.m.start(run.now);
        run.end_turn();
        let cancel_percent = if seed % 4 == 3 { 60 } else { 0 };
        for _ in 0..400 {
            if run.m.finishing() {
                break;
            }
            run.step(&mut rng, cancel_percent);
        }
        run.drain(&mut rng);
        let cancelled = run.m.record().state == JobState::Cancelled;
        check_history(&run.batches, &run.store, cancelled);
        assert!(run.batches.len() > 20, "seed {seed}: too short a run");
        let r = run.m.record();
        seen.cancelled |= r.cancelled > 0;
        seen.failed |= r.failed > 0;
        seen.follow_ups |= r.tasks_created > r.root_total;
        seen.verified |= !r.quality.by_minion.is_empty();
        seen.stale |= r.stale_rejected > 0;
        for class in r.errors.keys() {
            seen.errors.insert(format!("{class:?}"));
        }
        // every prefix: recovery gives back the model as it was right after that batch
        for k in 1..=run.batches.len() {
            let store = store_of(&run.batches[..k]);
            let r = JobModel::recover(&store, JOB, true, limits(6), None, run.now)
                .unwrap_or_else(|e| panic!("seed {seed}, prefix {k}: {e}"));
            let want = &run.snaps[k - 1];
            let got = snap(&r);
            assert_eq!(
                got, *want,
                "seed {seed}: recovery from the first {k} batches differs"
            );
        }
        // and from every prefix of a running job, a recovered model still completes the job,
        // no task lost or duplicated: its leases given back (as after a job actor restart), or
        // kept and answered late by the minions that held them (as after a coordinator restart)
        for k in 1..=run.batches.len() {
            if run.snaps[k - 1].rec.state != JobState::Running {
                continue;
            }
            let keep = k % 2 == 0;
            let store = store_of(&run.batches[..k]);
            let r = JobModel::recover(&store, JOB, keep, limits(6), None, run.now).unwrap();
            let mut cont = Run::new(None, r);
            cont.store = store;
            cont.batches = run.batches[..k].to_vec();
            cont.now = run.now;
            let (out, gens) = &run.outs[k - 1];
            for (m, g) in cont.minions.iter_mut().zip(gens) {
                m.generation = *g;
            }
            cont.m.start(cont.now);
            if keep {
                cont.out = out.clone();
                // (the minions also hold leases that expired meanwhile: their results are stale)
                let held: BTreeSet<Token> = out.iter().map(|o| o.2).collect();
                assert!(
                    cont.m.leases().keys().all(|t| held.contains(t)),
                    "seed {seed}, prefix {k}: a kept lease no minion holds"
                );
            } else {
                let leased: Vec<Token> = cont.m.leased().into_iter().map(|l| l.0).collect();
                cont.m
                    .requeue_tokens(leased, "lease given back at restart", false, cont.now);
            }
            cont.end_turn();
            let mut rng = Rng::new(seed * 1000 + k as u64);
            cont.drain(&mut rng);
            check_history(&cont.batches, &cont.store, false);
        }
    }
    // the runs went through what they are meant to test
    assert!(seen.cancelled && seen.failed && seen.follow_ups && seen.verified && seen.stale);
    for class in ["LeaseExpired", "MinionLost", "Network", "Rejected"] {
        assert!(
            seen.errors.contains(class),
            "no {class} error in any run: {:?}",
            seen.errors
        );
    }
}
