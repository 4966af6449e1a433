//! Scheduling decisions: placement, failure detection, lease checks, retry policy, fencing tokens.

use crate::Token;
use crate::job::TaskState;

/// What the scheduler knows about a minion when placing a task.
#[derive(Clone, Debug)]
pub struct MinionView<'a> {
    pub id: &'a str,
    pub provider: &'a str,
    pub modules: &'a [String],
    pub free: u32,
    pub alive: bool,
}

/// Picks a minion for a task of `module`: alive, runs the module, has a free slot; prefers a
/// minion other than the one that last failed the task, then another provider, then the most free
/// slots. Returns the index into `minions`.
pub fn place(
    module: &str,
    last_minion: Option<&str>,
    last_provider: Option<&str>,
    minions: &[MinionView<'_>],
) -> Option<usize> {
    minions
        .iter()
        .enumerate()
        .filter(|(_, m)| m.alive && m.free > 0 && m.modules.iter().any(|x| x == module))
        .max_by_key(|(i, m)| {
            (
                Some(m.id) != last_minion,
                Some(m.provider) != last_provider,
                m.free,
                std::cmp::Reverse(*i),
            )
        })
        .map(|(i, _)| i)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Alive,
    /// Missed heartbeats for more than half the timeout: no new leases.
    Suspect,
    /// Missed heartbeats for the whole timeout: leases are requeued.
    Dead,
}

pub fn health(last_seen_ms: u64, now_ms: u64, timeout_ms: u64) -> Health {
    let silent = now_ms.saturating_sub(last_seen_ms);
    if silent >= timeout_ms {
        Health::Dead
    } else if silent * 2 >= timeout_ms {
        Health::Suspect
    } else {
        Health::Alive
    }
}

/// What to do with a result reported under `token` by `minion`/`generation`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// The task is done already (a duplicate delivery of an accepted result).
    Duplicate,
    /// The lease was revoked or re-issued: the result is rejected and counted.
    Stale,
    /// No such task.
    Unknown,
}

pub fn judge_result(
    state: Option<&TaskState>,
    token: Token,
    minion: &str,
    generation: u64,
) -> Verdict {
    match state {
        None => Verdict::Unknown,
        Some(TaskState::Leased {
            minion: m,
            generation: g,
            token: t,
            ..
        }) if *t == token && m == minion && *g == generation => Verdict::Accept,
        Some(TaskState::Done) => Verdict::Duplicate,
        Some(_) => Verdict::Stale,
    }
}

/// What to do with a partial result (findings of a task still running, `seq` 1, 2, ... per
/// lease) when the highest seq accepted under its token so far is `last_seq`: accepted only under
/// the live lease and above `last_seq` (a re-sent one is a duplicate, acknowledged, not stored
/// again); seq 0 is not a partial's.
pub fn judge_partial(
    state: Option<&TaskState>,
    token: Token,
    minion: &str,
    generation: u64,
    seq: u64,
    last_seq: Option<u64>,
) -> Verdict {
    match judge_result(state, token, minion, generation) {
        Verdict::Accept if seq == 0 => Verdict::Stale,
        Verdict::Accept if seq <= last_seq.unwrap_or(0) => Verdict::Duplicate,
        v => v,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    Requeue,
    Fail,
}

/// After a failed attempt (`attempts` counts this one).
pub fn on_failure(attempts: u32, max_attempts: u32, permanent: bool) -> Retry {
    if permanent || attempts >= max_attempts {
        Retry::Fail
    } else {
        Retry::Requeue
    }
}

/// Fencing tokens: the coordinator's start epoch (persisted, +1 per start) in the high bits, a
/// counter in the low 40 bits, so tokens increase across restarts.
pub fn token(epoch: u64, counter: u64) -> Token {
    (epoch << 40) | (counter & ((1 << 40) - 1))
}

/// What a rate-limited job may lease now: how many new tasks, and the rate each gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RatePlan {
    pub max_new: u64,
    /// connections/s for each new lease (0: unlimited)
    pub share: u32,
}

/// The rate decision for a job with `rate_limit` connections/s (0: unlimited). `in_flight` are
/// the rates of its leases still out (0 = given before rates were recorded: counted as the
/// whole limit, the safe guess), `alive` the live minions, `left` the tasks not yet done.
///
/// Invariant (property-tested): granting `max_new` leases at `share` keeps the sum of the rates
/// in flight within `rate_limit`, whatever was leased before, so the job's rate is never
/// exceeded, even while the number of live minions changes. A job keeps at most one task per
/// live minion in flight (never more than it has tasks left), each with the limit divided by
/// that many; a lease keeps the rate it was given until it ends, so a share freed by a dead or
/// finished task is what lets the next task start.
pub fn rate_plan(rate_limit: u32, in_flight: &[u32], alive: u64, left: u64) -> RatePlan {
    if rate_limit == 0 {
        return RatePlan {
            max_new: u64::MAX,
            share: 0,
        };
    }
    let limit = u64::from(rate_limit);
    let used: u64 = in_flight
        .iter()
        .map(|r| if *r == 0 { limit } else { u64::from(*r) })
        .sum();
    let budget = limit.saturating_sub(used);
    let slots = alive.min(left).max(1);
    let share = (limit / slots).max(1);
    let free_slots = slots.saturating_sub(in_flight.len() as u64);
    let n = free_slots.min(budget / share);
    if n == 0 && free_slots > 0 && budget > 0 {
        // what is left of the limit (less than a full share) still runs one task
        return RatePlan {
            max_new: 1,
            share: budget as u32,
        };
    }
    RatePlan {
        max_new: n,
        share: share as u32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv<'a>(
        id: &'a str,
        provider: &'a str,
        modules: &'a [String],
        free: u32,
        alive: bool,
    ) -> MinionView<'a> {
        MinionView {
            id,
            provider,
            modules,
            free,
            alive,
        }
    }

    #[test]
    fn placement() {
        let all = vec!["portscan".to_string(), "banner".to_string()];
        let scan = vec!["portscan".to_string()];
        let ms = [
            mv("a", "p1", &all, 5, true),
            mv("b", "p2", &scan, 9, true),
            mv("c", "p1", &all, 50, false),
        ];
        assert_eq!(place("portscan", None, None, &ms), Some(1));
        assert_eq!(place("banner", None, None, &ms), Some(0));
        assert_eq!(place("portscan", Some("b"), None, &ms), Some(0));
        assert_eq!(place("portscan", None, Some("p2"), &ms), Some(0));
        assert_eq!(place("screenshot", None, None, &ms), None);
        let full = [mv("a", "p1", &all, 0, true)];
        assert_eq!(place("portscan", None, None, &full), None);
        // A failed minion is still used when it is the only one.
        assert_eq!(place("banner", Some("a"), Some("p1"), &ms[..1]), Some(0));
    }

    #[test]
    fn failure_detection() {
        assert_eq!(health(1000, 1100, 1000), Health::Alive);
        assert_eq!(health(1000, 1500, 1000), Health::Suspect);
        assert_eq!(health(1000, 2000, 1000), Health::Dead);
        assert_eq!(health(2000, 1000, 1000), Health::Alive);
    }

    #[test]
    fn verdicts() {
        let leased = TaskState::Leased {
            minion: "m".into(),
            generation: 2,
            token: 7,
            deadline_ms: 0,
            rate: 0,
        };
        assert_eq!(judge_result(Some(&leased), 7, "m", 2), Verdict::Accept);
        assert_eq!(judge_result(Some(&leased), 6, "m", 2), Verdict::Stale);
        assert_eq!(judge_result(Some(&leased), 7, "m", 1), Verdict::Stale);
        assert_eq!(judge_result(Some(&leased), 7, "x", 2), Verdict::Stale);
        assert_eq!(
            judge_result(Some(&TaskState::Pending), 7, "m", 2),
            Verdict::Stale
        );
        assert_eq!(
            judge_result(Some(&TaskState::Done), 7, "m", 2),
            Verdict::Duplicate
        );
        assert_eq!(judge_result(None, 7, "m", 2), Verdict::Unknown);
        // partial results: the same fencing, then the seq
        let p = |tok, seq, last| judge_partial(Some(&leased), tok, "m", 2, seq, last);
        assert_eq!(p(7, 1, None), Verdict::Accept);
        assert_eq!(p(7, 3, Some(2)), Verdict::Accept);
        assert_eq!(p(7, 2, Some(2)), Verdict::Duplicate);
        assert_eq!(p(7, 1, Some(2)), Verdict::Duplicate);
        assert_eq!(p(7, 0, None), Verdict::Stale);
        assert_eq!(p(6, 5, None), Verdict::Stale);
        assert_eq!(judge_partial(None, 7, "m", 2, 1, None), Verdict::Unknown);
    }

    #[test]
    fn retries_tokens_rates() {
        assert_eq!(on_failure(1, 3, false), Retry::Requeue);
        assert_eq!(on_failure(3, 3, false), Retry::Fail);
        assert_eq!(on_failure(1, 3, true), Retry::Fail);
        assert!(token(2, 0) > token(1, (1 << 40) - 1));
    }

    #[test]
    fn rate_plan_examples() {
        // unlimited
        assert_eq!(rate_plan(0, &[5, 5], 3, 10).max_new, u64::MAX);
        // 1000/s over 4 live minions, nothing out: 4 × 250
        assert_eq!(
            rate_plan(1000, &[], 4, 100),
            RatePlan {
                max_new: 4,
                share: 250
            }
        );
        // fewer tasks left than minions: the last task runs at the full rate
        assert_eq!(
            rate_plan(1000, &[], 4, 1),
            RatePlan {
                max_new: 1,
                share: 1000
            }
        );
        // 3/s over 4 minions: three tasks at 1/s, not four (was 4 × 1 = 4/s)
        assert_eq!(
            rate_plan(3, &[], 4, 100),
            RatePlan {
                max_new: 3,
                share: 1
            }
        );
        // one task took the whole limit while one minion was alive; a second minion joins:
        // nothing more until it ends (was a second lease at 500/s: 1,500/s in flight)
        assert_eq!(rate_plan(1000, &[1000], 2, 100).max_new, 0);
        // a lease from before rates were recorded counts as the whole limit
        assert_eq!(rate_plan(1000, &[0], 4, 100).max_new, 0);
        // a partly used limit: what is left runs one task
        assert_eq!(rate_plan(1000, &[333, 333], 2, 100).max_new, 0);
        assert_eq!(
            rate_plan(1000, &[333, 333], 3, 100),
            RatePlan {
                max_new: 1,
                share: 333
            }
        );
        assert_eq!(
            rate_plan(1000, &[500, 400], 3, 100),
            RatePlan {
                max_new: 1,
                share: 100
            }
        );
    }

    /// Random sequences of grants (as planned), task ends and minions joining and dying: the
    /// rates in flight never sum above the limit, and a job with tasks left, a live minion and
    /// nothing in flight can always lease.
    #[test]
    fn rate_plan_never_exceeds_the_limit_and_never_stalls() {
        let mut seed = 0x5eed_u64;
        let mut rnd = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n.max(1)
        };
        for _ in 0..2_000 {
            let limit = [1u32, 2, 3, 7, 10, 100, 999, 1000, 65_535][rnd(9) as usize];
            let mut alive = 1 + rnd(6);
            let mut left = 1 + rnd(40);
            let mut out: Vec<u32> = if rnd(4) == 0 { vec![0] } else { vec![] };
            for _ in 0..200 {
                match rnd(4) {
                    0 => {
                        let p = rate_plan(limit, &out, alive, left);
                        if out.is_empty() && left > 0 {
                            assert!(p.max_new >= 1, "stalled: {limit} {alive} {left}");
                        }
                        let n = p.max_new.min(left.saturating_sub(out.len() as u64));
                        for _ in 0..n {
                            assert!(p.share >= 1);
                            out.push(p.share);
                        }
                    }
                    1 if !out.is_empty() => {
                        out.swap_remove(rnd(out.len() as u64) as usize);
                        left = left.saturating_sub(1);
                    }
                    2 => alive = (alive + 1).min(8),
                    _ => alive = alive.saturating_sub(1).max(1),
                }
                let used: u64 = out
                    .iter()
                    .map(|r| {
                        if *r == 0 {
                            u64::from(limit)
                        } else {
                            u64::from(*r)
                        }
                    })
                    .sum();
                assert!(used <= u64::from(limit), "{used} > {limit}: {out:?}");
                if left == 0 {
                    break;
                }
            }
        }
    }
}

/// Supervisor restart policy: restart a failed child with exponential backoff unless it failed
/// more than `max_restarts` times within `window_ms` (then give up and stop, escalating).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartDecision {
    RestartAfterMs(u64),
    GiveUp,
}

pub fn restart_decision(
    failures_ms: &[u64],
    now_ms: u64,
    max_restarts: usize,
    window_ms: u64,
) -> RestartDecision {
    let recent = failures_ms
        .iter()
        .filter(|t| now_ms.saturating_sub(**t) <= window_ms)
        .count();
    if recent > max_restarts {
        RestartDecision::GiveUp
    } else {
        RestartDecision::RestartAfterMs((10u64 << recent.min(8)).min(2000))
    }
}

/// The restart policy of every supervisor: records a child failure at `now_ms` (failures within
/// the last minute are kept) and decides with [`restart_decision`] whether to restart it with
/// backoff or give up once more than `max` failures fall in that minute.
pub fn note_failure(failures: &mut Vec<u64>, max: usize, now_ms: u64) -> RestartDecision {
    const WINDOW_MS: u64 = 60_000;
    failures.push(now_ms);
    failures.retain(|t| now_ms.saturating_sub(*t) <= WINDOW_MS);
    restart_decision(failures, now_ms, max, WINDOW_MS)
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    #[test]
    fn restart_policy() {
        assert_eq!(
            restart_decision(&[1000], 1000, 3, 10_000),
            RestartDecision::RestartAfterMs(20)
        );
        assert_eq!(
            restart_decision(&[0, 500, 900, 1000], 1000, 3, 10_000),
            RestartDecision::GiveUp
        );
        let mut f = Vec::new();
        for k in 0..2 {
            assert!(matches!(
                note_failure(&mut f, 2, 1000 + k),
                RestartDecision::RestartAfterMs(_)
            ));
        }
        assert_eq!(note_failure(&mut f, 2, 1002), RestartDecision::GiveUp);
        assert!(matches!(
            note_failure(&mut f, 2, 200_000),
            RestartDecision::RestartAfterMs(20)
        ));
        // Old failures fall out of the window.
        assert_eq!(
            restart_decision(&[0, 1, 2, 20_000], 20_000, 3, 10_000),
            RestartDecision::RestartAfterMs(20)
        );
    }
}
