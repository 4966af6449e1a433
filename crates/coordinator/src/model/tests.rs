//! Tests of the model: scripted regressions and seeded random runs of the simulation.

use super::planner::{Demand, Effect, Planner};
use super::sim::{Rng, Sim};
use overlord_core::job::TaskState;

fn drain_registry(s: &mut Sim) {
    while !s.reg.is_empty() {
        s.step_registry();
    }
}

/// Regression (issue 11, "a rare liveness failure after a registry restart"): a minion's result
/// reaches the restarted registry before the job actor has re-reported its leases (`Readopt` →
/// `Adopt` takes three hops: supervisor → manager → job → registry). The old registry judged the
/// result stale because its new lease table did not know the token, and rejected it; the minion
/// dropped it, the job kept the task leased until its 10-minute deadline, and the job never
/// completed within the chaos test's 60 s.
#[test]
fn result_before_readoption_still_completes_the_task() {
    let mut s = Sim::new(1, &[("m1", 1)]);
    s.submit(1, 1);
    drain_registry(&mut s); // register m1, demand → an offer to job 1
    s.step_job(1); // job 1 leases task 0 to m1: Taken → registry, the lease → m1
    drain_registry(&mut s);
    s.step_minion("m1", false); // m1 gets the lease
    s.step_minion("m1", true); // … runs it and reports the result
    assert_eq!(s.reg.len(), 1, "the result is in the registry's mailbox");
    s.restart_planner(); // the registry panics: the result is lost with its mailbox
    s.step_minion("m1", false); // the session closed: m1 reconnects (Register)
    s.step_registry(); // re-registered; m1 re-sends the unacknowledged result
    s.step_registry(); // the result arrives before the job re-reported its leases
    while s.step_minion("m1", false) {}
    s.step_job(1); // job 1 handles the result and/or Readopt
    assert!(
        s.run_to_completion(20_000),
        "job stuck after a registry restart: {:?}",
        s.unfinished()
    );
    assert_eq!(s.accepted.get(&(1, 0)), Some(&1));
    assert!(s.violations.is_empty(), "{:?}", s.violations);
}

/// After a restarted planner saw a result for a lease it did not know, a late report of the same
/// lease by its job must not take the minion's slot forever.
#[test]
fn late_adoption_of_a_finished_lease_takes_no_slot() {
    let mut p = Planner::new(1000, Vec::new(), 0);
    let (g, _) = p.register("m", "i", "p", vec!["noop".into()], 2, 1, 0);
    p.result("m", g, 77, 1, true, 0);
    p.adopt(1, vec![(77, "m".into(), g)], true);
    assert_eq!(p.minion("m").unwrap().leased, 0);
    assert!(p.lease(77).is_none());
}

fn offered(effects: &[Effect]) -> Vec<(u64, u32)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Offer { job, slots, .. } => Some((*job, slots.iter().map(|s| s.free).sum())),
            _ => None,
        })
        .collect()
}

fn demand(n: u64) -> Demand {
    Demand {
        by_module: vec![("noop".into(), n)],
        max_new: u64::MAX,
    }
}

/// Fair share: with J jobs all wanting more than the cluster has, each offer round gives every
/// job ceil(free/J) or floor(free/J) slots (the bound: jobs differ by at most one slot per
/// round, and the round-robin rotates who gets the extra one).
#[test]
fn concurrent_jobs_get_fair_shares() {
    let mut rng = Rng::new(7);
    for _ in 0..200 {
        let mut p = Planner::new(1000, Vec::new(), 0);
        let n_minions = 1 + rng.below(4);
        let mut total = 0u64;
        for k in 0..n_minions {
            let cap = 1 + rng.below(20) as u32;
            total += cap as u64;
            p.register(&format!("m{k}"), "i", "p", vec!["noop".into()], cap, k, 0);
        }
        let n_jobs = 1 + rng.below(5);
        for j in 1..=n_jobs {
            p.demand(j, demand(1000));
        }
        let offers = offered(&p.schedule(1, |_| true));
        let sum: u64 = offers.iter().map(|(_, n)| *n as u64).sum();
        assert_eq!(sum, total, "all free slots offered: {offers:?}");
        let min = offers.iter().map(|(_, n)| *n).min().unwrap_or(0) as u64;
        let max = offers.iter().map(|(_, n)| *n).max().unwrap_or(0) as u64;
        let served = offers.len() as u64;
        assert!(
            served == n_jobs.min(total),
            "every job served while slots last: {offers:?} of {total}"
        );
        // Shares are ceil(free / jobs left) in rotation: they differ by at most ceil(total/J)
        // - floor(total/J) plus the rounding of the per-minion split (one per minion).
        assert!(
            max - min <= 1 + n_minions,
            "unfair: {offers:?} ({total} slots, {n_minions} minions, {n_jobs} jobs)"
        );
    }
}

/// Regression (issue 12, "small jobs hand slots out in alphabetical order of minion id"): with
/// equal idle minions, one-task jobs one after another were all offered the first minion by id.
/// Offers now start with the minion offered least recently: 30 one-task jobs on 3 equal minions
/// go 10/10/10, and a 2-task job's slots rotate too.
#[test]
fn small_jobs_rotate_over_equal_minions_not_by_id() {
    let mut p = Planner::new(1000, Vec::new(), 0);
    let mut gens = std::collections::BTreeMap::new();
    for id in ["a", "b", "c"] {
        let (g, _) = p.register(id, "i", "p", vec!["noop".into()], 8, 1, 0);
        gens.insert(id.to_string(), g);
    }
    let mut count: std::collections::BTreeMap<String, u32> = Default::default();
    let mut token = 0u64;
    for job in 1..=30u64 {
        p.demand(job, demand(1));
        let effects = p.schedule(job, |_| true);
        let (offer, slots) = effects
            .iter()
            .find_map(|e| match e {
                Effect::Offer {
                    job: j,
                    offer,
                    slots,
                    ..
                } if *j == job => Some((*offer, slots.clone())),
                _ => None,
            })
            .expect("an offer for the job");
        assert_eq!(slots.iter().map(|s| s.free).sum::<u32>(), 1, "{slots:?}");
        let m = slots[0].minion.clone();
        *count.entry(m.clone()).or_default() += 1;
        token += 1;
        let g = gens[&m];
        p.taken(job, offer, vec![(m.clone(), g, vec![token])], demand(0));
        p.result(&m, g, token, job, true, job);
        p.job_gone(job);
    }
    assert_eq!(
        count.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "one-task jobs by minion: {count:?}"
    );
}

/// Issue 12, "a minion that heartbeats but never answers": its leases expire at their deadline
/// and come back to the job, and it is offered nothing more until it answers something (a late
/// result counts) — else the expired tasks went half back to it, round after round.
#[test]
fn a_minion_whose_lease_expired_unanswered_gets_no_offers_until_it_answers() {
    let mut p = Planner::new(1000, Vec::new(), 0);
    let (gs, _) = p.register("silent", "i", "p", vec!["noop".into()], 8, 1, 0);
    p.demand(1, demand(4));
    let offer = match &p.schedule(1, |_| true)[..] {
        [Effect::Offer { offer, .. }] => *offer,
        e => panic!("{e:?}"),
    };
    p.taken(
        1,
        offer,
        vec![("silent".into(), gs, vec![1, 2, 3, 4])],
        demand(0),
    );
    let (gh, _) = p.register("honest", "j", "p", vec!["noop".into()], 8, 2, 0);
    // Heartbeats list every lease: only the deadline takes them away.
    assert!(p.heartbeat("silent", gs, &[1, 2, 3, 4], 10).is_empty());
    let revoked = p.expired(vec![1, 2, 3, 4]);
    assert!(
        matches!(&revoked[..], [Effect::Revoke { minion, tokens }] if minion == "silent" && tokens.len() == 4),
        "{revoked:?}"
    );
    assert!(p.minion("silent").unwrap().unresponsive);
    p.demand(1, demand(4));
    let slots: Vec<String> = p
        .schedule(20, |_| true)
        .iter()
        .flat_map(|e| match e {
            Effect::Offer { slots, .. } => slots.iter().map(|s| s.minion.clone()).collect(),
            _ => vec![],
        })
        .collect();
    assert_eq!(
        slots,
        vec!["honest".to_string()],
        "only the honest minion is offered slots"
    );
    let _ = gh;
    // A late answer (rejected by the job as stale) makes it a candidate again.
    p.result("silent", gs, 1, 1, true, 30);
    assert!(!p.minion("silent").unwrap().unresponsive);
}

/// Random runs: submits, offers, results, minion deaths and restarts, registry restarts, job actor
/// restarts (the real job model recovered from its store) and cancels in any interleaving; then, without new faults, every job finishes, every task of a job
/// not cancelled is accepted exactly once, no task was run under two live leases, and no minion
/// was offered more than its capacity.
#[test]
fn random_fault_sequences_keep_every_job_live() {
    let mut job_restarts = 0;
    for seed in 0..300u64 {
        let mut s = Sim::new(seed, &[("m1", 3), ("m2", 2), ("m3", 1)]);
        let mut rng = Rng::new(seed ^ 0xabcdef);
        let n_jobs = 1 + rng.below(3);
        for j in 1..=n_jobs {
            s.submit(j, 1 + rng.below(30));
        }
        for _ in 0..(200 + rng.below(1500)) {
            match rng.below(1000) {
                0..=3 => s.restart_planner(),
                4..=6 => {
                    let m = ["m1", "m2", "m3"][rng.below(3) as usize];
                    s.kill_minion(m);
                }
                7..=12 => {
                    let m = ["m1", "m2", "m3"][rng.below(3) as usize];
                    s.restart_minion(m);
                }
                13 => s.cancel(1 + rng.below(n_jobs)),
                14..=16 => s.restart_job(1 + rng.below(n_jobs)),
                _ => s.step(),
            }
        }
        assert!(
            s.run_to_completion(200_000),
            "seed {seed}: jobs stuck: {:?}\n{}",
            s.unfinished(),
            s.dump()
        );
        assert!(s.violations.is_empty(), "seed {seed}: {:?}", s.violations);
        job_restarts += s.job_restarts;
        for (j, _) in s.jobs.values() {
            for k in 0..j.n {
                let n = s.accepted.get(&(j.id, k)).copied().unwrap_or(0);
                match j.state_of(k) {
                    TaskState::Done => assert_eq!(n, 1, "seed {seed}: job {} task {k}", j.id),
                    TaskState::Cancelled => assert!(j.cancelled && n == 0),
                    other => panic!("seed {seed}: job {} task {k} ended {other:?}", j.id),
                }
            }
        }
    }
    assert!(
        job_restarts > 100,
        "job actor restarts exercised: {job_restarts}"
    );
}

/// Regression: a lease sent on a session that closed at that moment never reaches the minion; the
/// minion reconnects with the same generation, so neither death nor a new generation frees it.
/// Its heartbeats stop listing it: after `LOST_AFTER_TIMEOUTS` timeouts it goes back to its job.
#[test]
fn a_lease_lost_in_transit_goes_back_to_its_job() {
    use super::planner::{LOST_AFTER_TIMEOUTS, RequeueReason};
    let mut p = Planner::new(1000, Vec::new(), 0);
    let (g, _) = p.register("m", "i", "p", vec!["noop".into()], 2, 1, 0);
    p.demand(1, demand(2));
    let offer = match &p.schedule(0, |_| true)[..] {
        [Effect::Offer { offer, .. }] => *offer,
        other => panic!("{other:?}"),
    };
    assert!(
        p.taken(1, offer, vec![("m".into(), g, vec![5, 6])], demand(0))
            .is_empty()
    );
    let lost_after = LOST_AFTER_TIMEOUTS * 1000;
    // Lease 5 is listed (the minion runs it); 6 is not: missing since 100.
    assert!(p.heartbeat("m", g, &[5], 100).is_empty());
    assert!(p.heartbeat("m", g, &[5], 100 + lost_after - 1).is_empty());
    let e = p.heartbeat("m", g, &[5], 100 + lost_after);
    assert_eq!(
        e,
        vec![Effect::Requeue {
            job: 1,
            tokens: vec![6],
            reason: RequeueReason::LostInTransit
        }]
    );
    assert!(p.lease(6).is_none() && p.lease(5).is_some());
    assert_eq!(p.minion("m").unwrap().leased, 1);
    // A lease listed again is not missing any more.
    assert!(p.heartbeat("m", g, &[], 10_000).is_empty());
    assert!(
        p.heartbeat("m", g, &[5], 10_000 + lost_after - 1)
            .is_empty()
    );
    assert!(p.heartbeat("m", g, &[], 10_000 + lost_after).is_empty());
    assert!(p.lease(5).is_some());
}
