//! Fault kinds and a seeded fault schedule.
//!
//! A schedule is a pure function of `(seed, shape)`: the same seed gives the same list of faults at the
//! same offsets, so a failing run is replayed with `CHAOS_SEED=<seed>`. (The OS still interleaves
//! processes its own way; the schedule, not the exact interleaving, is what a seed replays.)

use std::collections::BTreeMap;
use std::time::Duration;

use crate::proxy::{Direction, LinkFault};
use crate::rng::Rng;

/// Every kind of injected fault, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    MinionKill9,
    MinionStopCont,
    MinionRestartSameId,
    CoordinatorKill9,
    LinkDelay,
    LinkBlackhole,
    LinkOneWayLoss,
    LinkReset,
    LinkClose,
    LinkRefuse,
    ProviderDown,
    ClientLinkReset,
    SlowWatcher,
    GarbageBytes,
    MalformedProtobuf,
    DuplicateResult,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::MinionKill9 => "minion kill -9",
            FaultKind::MinionStopCont => "minion SIGSTOP/SIGCONT",
            FaultKind::MinionRestartSameId => "minion restart same id",
            FaultKind::CoordinatorKill9 => "coordinator kill -9 + restart",
            FaultKind::LinkDelay => "link delay",
            FaultKind::LinkBlackhole => "link black-hole",
            FaultKind::LinkOneWayLoss => "link one-way loss",
            FaultKind::LinkReset => "link reset (RST)",
            FaultKind::LinkClose => "link close (FIN)",
            FaultKind::LinkRefuse => "link refuse new conns",
            FaultKind::ProviderDown => "provider down (late return)",
            FaultKind::ClientLinkReset => "client watch link reset",
            FaultKind::SlowWatcher => "slow watch subscriber",
            FaultKind::GarbageBytes => "garbage bytes",
            FaultKind::MalformedProtobuf => "malformed protobuf",
            FaultKind::DuplicateResult => "duplicate/late result",
        }
    }
}

/// One fault to inject. Indices refer to the sandbox's minions / providers.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `kill -9` the minion, start it again (same id, same config) after `down_for`.
    KillMinion { minion: usize, down_for: Duration },
    /// `SIGSTOP`, then `SIGCONT` after `stopped_for` (its leases may be revoked meanwhile).
    StopMinion {
        minion: usize,
        stopped_for: Duration,
    },
    /// Graceless restart under the same id (new generation expected).
    RestartMinion { minion: usize },
    /// `kill -9` the coordinator, restart it on the same sled directory after `down_for`.
    KillCoordinator { down_for: Duration },
    /// A fault on the minion's link to the coordinator for `lasting`.
    Link {
        minion: usize,
        fault: LinkFault,
        lasting: Duration,
    },
    /// RST every connection of the minion's link.
    ResetLink { minion: usize },
    /// FIN every connection of the minion's link.
    CloseLink { minion: usize },
    /// Every minion of a provider killed at once; they come back after `down_for` (late).
    ProviderDown { provider: usize, down_for: Duration },
    /// RST the client's watch stream connection (the watcher resumes from its cursor).
    ClientReset,
}

impl Fault {
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::KillMinion { .. } => FaultKind::MinionKill9,
            Fault::StopMinion { .. } => FaultKind::MinionStopCont,
            Fault::RestartMinion { .. } => FaultKind::MinionRestartSameId,
            Fault::KillCoordinator { .. } => FaultKind::CoordinatorKill9,
            Fault::Link { fault, .. } => match fault {
                LinkFault::Delay(_) => FaultKind::LinkDelay,
                LinkFault::Blackhole => FaultKind::LinkBlackhole,
                LinkFault::OneWayLoss(_) => FaultKind::LinkOneWayLoss,
                LinkFault::Refuse => FaultKind::LinkRefuse,
                LinkFault::Pass => FaultKind::LinkDelay,
            },
            Fault::ResetLink { .. } => FaultKind::LinkReset,
            Fault::CloseLink { .. } => FaultKind::LinkClose,
            Fault::ProviderDown { .. } => FaultKind::ProviderDown,
            Fault::ClientReset => FaultKind::ClientLinkReset,
        }
    }
}

/// Relative weights of fault kinds in a random schedule (0 disables a kind).
#[derive(Debug, Clone)]
pub struct FaultMix {
    pub kill_minion: u32,
    pub stop_minion: u32,
    pub restart_minion: u32,
    pub kill_coordinator: u32,
    pub link_delay: u32,
    pub link_blackhole: u32,
    pub link_oneway: u32,
    pub link_reset: u32,
    pub link_close: u32,
    pub link_refuse: u32,
    pub provider_down: u32,
    pub client_reset: u32,
}

impl Default for FaultMix {
    fn default() -> Self {
        Self {
            kill_minion: 6,
            stop_minion: 4,
            restart_minion: 3,
            kill_coordinator: 2,
            link_delay: 3,
            link_blackhole: 3,
            link_oneway: 3,
            link_reset: 4,
            link_close: 2,
            link_refuse: 2,
            provider_down: 1,
            client_reset: 3,
        }
    }
}

/// The shape of the cluster a schedule is made for.
#[derive(Debug, Clone)]
pub struct ScheduleShape {
    /// Provider index of each minion.
    pub minion_providers: Vec<usize>,
    /// Mean gap between two faults.
    pub mean_gap: Duration,
    /// How long a fault lasts (kill → restart, stop → cont, link fault → heal), at most.
    pub max_outage: Duration,
}

/// A fault at an offset from the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub fault: Fault,
}

/// A replayable list of faults.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

impl Schedule {
    /// `count` faults. Faults on one minion never overlap; a provider-down fault takes a whole
    /// provider but never the last one standing; the coordinator is never killed while down.
    pub fn random(seed: u64, count: usize, shape: &ScheduleShape, mix: &FaultMix) -> Self {
        let mut rng = Rng::new(seed);
        let n = shape.minion_providers.len();
        let providers = shape
            .minion_providers
            .iter()
            .copied()
            .max()
            .map_or(0, |m| m + 1);
        let mut busy_until = vec![Duration::ZERO; n];
        let mut coordinator_busy = Duration::ZERO;
        let mut t = Duration::ZERO;
        let mut steps = Vec::with_capacity(count);
        let weights = [
            mix.kill_minion,
            mix.stop_minion,
            mix.restart_minion,
            mix.kill_coordinator,
            mix.link_delay,
            mix.link_blackhole,
            mix.link_oneway,
            mix.link_reset,
            mix.link_close,
            mix.link_refuse,
            if providers > 1 { mix.provider_down } else { 0 },
            mix.client_reset,
        ];
        let max_ms = shape.max_outage.as_millis().max(50) as u64;
        let gap_ms = shape.mean_gap.as_millis().max(1) as u64;
        while steps.len() < count {
            t += Duration::from_millis(rng.range(gap_ms / 2, gap_ms * 3 / 2));
            let outage = Duration::from_millis(rng.range(max_ms / 5, max_ms));
            let kind = rng.weighted(&weights);
            // Minions free at `t`, keeping at least one minion untouched.
            let free: Vec<usize> = (0..n).filter(|i| busy_until[*i] <= t).collect();
            let can_touch_minion = free.len() >= 2 || (free.len() == 1 && n == 1);
            let fault = match kind {
                3 => {
                    if coordinator_busy > t {
                        continue;
                    }
                    coordinator_busy = t + outage;
                    Fault::KillCoordinator {
                        down_for: outage / 2,
                    }
                }
                10 => {
                    let p = rng.below(providers as u64) as usize;
                    let members: Vec<usize> =
                        (0..n).filter(|i| shape.minion_providers[*i] == p).collect();
                    let others_free =
                        (0..n).any(|i| shape.minion_providers[i] != p && busy_until[i] <= t);
                    if members.iter().any(|i| busy_until[*i] > t) || !others_free {
                        continue;
                    }
                    for i in members {
                        busy_until[i] = t + outage;
                    }
                    Fault::ProviderDown {
                        provider: p,
                        down_for: outage,
                    }
                }
                11 => Fault::ClientReset,
                _ => {
                    if !can_touch_minion {
                        continue;
                    }
                    let minion = *rng.pick(&free);
                    busy_until[minion] = t + outage;
                    match kind {
                        0 => Fault::KillMinion {
                            minion,
                            down_for: outage / 2,
                        },
                        1 => Fault::StopMinion {
                            minion,
                            stopped_for: outage,
                        },
                        2 => Fault::RestartMinion { minion },
                        4 => Fault::Link {
                            minion,
                            fault: LinkFault::Delay(Duration::from_millis(rng.range(20, 300))),
                            lasting: outage,
                        },
                        5 => Fault::Link {
                            minion,
                            fault: LinkFault::Blackhole,
                            lasting: outage,
                        },
                        6 => Fault::Link {
                            minion,
                            fault: LinkFault::OneWayLoss(if rng.chance(0.5) {
                                Direction::ToUpstream
                            } else {
                                Direction::ToDownstream
                            }),
                            lasting: outage,
                        },
                        7 => Fault::ResetLink { minion },
                        8 => Fault::CloseLink { minion },
                        _ => Fault::Link {
                            minion,
                            fault: LinkFault::Refuse,
                            lasting: outage,
                        },
                    }
                }
            };
            steps.push(Step { at: t, fault });
        }
        Self { seed, steps }
    }

    /// Count of faults by kind.
    pub fn by_kind(&self) -> BTreeMap<FaultKind, u64> {
        let mut m = BTreeMap::new();
        for s in &self.steps {
            *m.entry(s.fault.kind()).or_default() += 1;
        }
        m
    }

    /// Offset of the last step plus its outage: when the cluster is fault-free again.
    pub fn duration(&self) -> Duration {
        self.steps.last().map_or(Duration::ZERO, |s| s.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> ScheduleShape {
        ScheduleShape {
            minion_providers: vec![0, 0, 1, 1, 2],
            mean_gap: Duration::from_millis(200),
            max_outage: Duration::from_millis(1500),
        }
    }

    #[test]
    fn a_seed_replays_the_same_schedule() {
        let a = Schedule::random(1234, 300, &shape(), &FaultMix::default());
        let b = Schedule::random(1234, 300, &shape(), &FaultMix::default());
        let c = Schedule::random(1235, 300, &shape(), &FaultMix::default());
        assert_eq!(a.steps, b.steps);
        assert_ne!(a.steps, c.steps);
        assert_eq!(a.steps.len(), 300);
        // Every kind shows up in a long schedule.
        assert!(a.by_kind().len() >= 11, "{:?}", a.by_kind());
    }

    #[test]
    fn never_every_minion_at_once_and_no_overlap_on_one_minion() {
        let sh = shape();
        let s = Schedule::random(99, 2000, &sh, &FaultMix::default());
        let n = sh.minion_providers.len();
        // Reconstruct busy intervals and check that at every step at least one minion is untouched.
        let mut busy: Vec<Vec<(Duration, Duration)>> = vec![vec![]; n];
        for step in &s.steps {
            let (who, until): (Vec<usize>, Duration) = match &step.fault {
                Fault::KillMinion { minion, down_for } => (vec![*minion], step.at + *down_for * 2),
                Fault::StopMinion {
                    minion,
                    stopped_for,
                } => (vec![*minion], step.at + *stopped_for),
                Fault::Link {
                    minion, lasting, ..
                } => (vec![*minion], step.at + *lasting),
                Fault::ProviderDown { provider, down_for } => (
                    (0..n)
                        .filter(|i| sh.minion_providers[*i] == *provider)
                        .collect(),
                    step.at + *down_for,
                ),
                _ => continue,
            };
            for w in who {
                for (a, b) in &busy[w] {
                    assert!(
                        step.at >= *b || until <= *a,
                        "overlap on minion {w} at {:?}",
                        step.at
                    );
                }
                busy[w].push((step.at, until));
            }
            let touched = (0..n)
                .filter(|i| busy[*i].iter().any(|(a, b)| *a <= step.at && step.at < *b))
                .count();
            assert!(touched < n, "all minions faulted at {:?}", step.at);
        }
    }
}
