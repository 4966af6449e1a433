//! The quality ledger of a scan job: probes sent / answered / re-sent and an estimated miss rate,
//! per minion, per provider and per target /24 — and the decision which minion is out of line.
//! Pure: the coordinator feeds it task results and applies the verdicts.
//!
//! How the miss rate is estimated: a keyed random sample of finished scan tasks
//! ([`verify_task`]) is run a second time by another minion (another provider when there is
//! one). Every closed/unanswered probe of the first run is thereby re-sent; an address:port the
//! second run finds open that the first did not is a miss of the first minion. `sampled` counts the
//! probes re-checked this way, `missed` the misses. A minion whose miss rate is significantly above
//! that of its peers (two-proportion z > 3 and at least twice the peers' rate plus 1 point) is
//! flagged and its share of work reduced ([`FLAGGED_SHARE`]); the reason goes into the job status.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-network rows kept per job (the ledger lives in the job record, rewritten often); beyond
/// this, rows aggregate into [`OTHER_NETS`]. Only networks where something was re-sent or stayed
/// unanswered get a row: fully answered networks only add to the minion/provider totals.
pub const MAX_NETS: usize = 256;
pub const OTHER_NETS: &str = "other";
/// Share of work (relative to a healthy minion) given to a flagged minion.
pub const FLAGGED_SHARE: f64 = 0.25;
/// Fewest re-checked probes before a minion can be judged.
pub const MIN_SAMPLED: u64 = 200;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub sent: u64,
    pub answered: u64,
    pub retried: u64,
    /// Probes of this row re-checked by another minion, and those found open there only.
    pub sampled: u64,
    pub missed: u64,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.retried += o.retried;
        self.sampled += o.sampled;
        self.missed += o.missed;
    }

    pub fn miss_rate(&self) -> Option<f64> {
        (self.sampled > 0).then(|| self.missed as f64 / self.sampled as f64)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    pub by_minion: BTreeMap<String, Counts>,
    pub by_provider: BTreeMap<String, Counts>,
    pub by_net: BTreeMap<String, Counts>,
}

impl Ledger {
    pub fn is_empty(&self) -> bool {
        self.by_minion.is_empty()
    }

    /// Adds one task's counts (per target network) run by `minion` of `provider`.
    pub fn record(&mut self, minion: &str, provider: &str, nets: &[(String, Counts)]) {
        let mut total = Counts::default();
        for (net, c) in nets {
            total.add(c);
            if c.retried == 0 && c.answered >= c.sent {
                continue;
            }
            let key = if self.by_net.len() < MAX_NETS || self.by_net.contains_key(net) {
                net.as_str()
            } else {
                OTHER_NETS
            };
            self.by_net.entry(key.to_string()).or_default().add(c);
        }
        self.by_minion
            .entry(minion.to_string())
            .or_default()
            .add(&total);
        self.by_provider
            .entry(provider.to_string())
            .or_default()
            .add(&total);
    }

    /// A verification run of a task first run by `minion`/`provider` re-checked `sampled`
    /// closed/unanswered probes of `net` and found `missed` of them open.
    pub fn record_check(
        &mut self,
        minion: &str,
        provider: &str,
        net: &str,
        sampled: u64,
        missed: u64,
    ) {
        let c = Counts {
            sampled,
            missed,
            ..Default::default()
        };
        self.by_minion
            .entry(minion.to_string())
            .or_default()
            .add(&c);
        self.by_provider
            .entry(provider.to_string())
            .or_default()
            .add(&c);
        if let Some(n) = self.by_net.get_mut(net) {
            n.add(&c);
        }
    }

    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for c in self.by_minion.values() {
            t.add(c);
        }
        t
    }
}

/// A minion whose miss rate is out of line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Flag {
    pub minion: String,
    pub miss_rate: f64,
    pub peers_rate: f64,
    pub share: f64,
    pub reason: String,
}

/// Judges every minion with enough re-checked probes against the pooled rate of the others.
pub fn judge(l: &Ledger) -> Vec<Flag> {
    let total = l.total();
    let mut out = Vec::new();
    for (m, c) in &l.by_minion {
        if c.sampled < MIN_SAMPLED {
            continue;
        }
        let (os, om) = (total.sampled - c.sampled, total.missed - c.missed);
        if os < MIN_SAMPLED {
            continue;
        }
        let r = c.missed as f64 / c.sampled as f64;
        let peers = om as f64 / os as f64;
        let pooled = (c.missed + om) as f64 / (c.sampled + os) as f64;
        let se = (pooled * (1.0 - pooled) * (1.0 / c.sampled as f64 + 1.0 / os as f64)).sqrt();
        let z = if se > 0.0 { (r - peers) / se } else { 0.0 };
        if z > 3.0 && r >= 2.0 * peers + 0.01 {
            out.push(Flag {
                minion: m.clone(),
                miss_rate: r,
                peers_rate: peers,
                share: FLAGGED_SHARE,
                reason: format!(
                    "minion {m} missed {} of {} re-checked probes ({:.1} %) vs {:.1} % for the other minions (z = {z:.1}); its share of work is cut to {:.0} %",
                    c.missed,
                    c.sampled,
                    r * 100.0,
                    peers * 100.0,
                    FLAGGED_SHARE * 100.0
                ),
            });
        }
    }
    out
}

/// The free slots of a minion a job uses: all of them, or a flagged minion's `share` (at least
/// one, so a minion that has recovered can still show it).
pub fn cut_free(free: u32, share: Option<f64>) -> u32 {
    match share {
        Some(s) if free > 0 => ((f64::from(free) * s).floor() as u32).clamp(1, free),
        _ => free,
    }
}

/// Whether finished scan task `task_id` is re-run by another minion to estimate misses: a keyed
/// random sample of `per_mille`/1000 of the tasks.
pub fn verify_task(key: u64, task_id: u64, per_mille: u32) -> bool {
    let mut z = key ^ task_id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    z % 1000 < per_mille as u64
}

/// The ledger's network of an address (the row name the scan modules report): IPv4 /24,
/// IPv6 /64.
pub fn net_of(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => {
            format!(
                "{}/24",
                std::net::Ipv4Addr::from(u32::from(a) & 0xffff_ff00)
            )
        }
        std::net::IpAddr::V6(a) => {
            format!("{}/64", std::net::Ipv6Addr::from(u128::from(a) >> 64 << 64))
        }
    }
}

/// Share of finished scan tasks re-run by another minion when a job does not say
/// (`params.verify_per_mille`): 2 %.
pub const DEFAULT_VERIFY_PER_MILLE: u32 = 20;
/// Fewest root tasks for the default sample to apply.
pub const DEFAULT_VERIFY_MIN_TASKS: u64 = 50;
/// A task whose first run found more open address:ports than this is not re-checked (its
/// record would be large, and a mostly open block says little about missed probes).
pub const MAX_CHECK_OPEN: usize = 1024;

/// A verification run in flight: which task it re-checks, who ran that, and what it found open.
/// Kept in the job record until the verification ends (so it survives a restart).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub of: u64,
    pub minion: String,
    pub provider: String,
    /// The /24 (or /64) of the task's first address: the ledger row it counts in.
    pub net: String,
    /// Probes of the task (addresses × ports).
    pub probes: u64,
    pub first_open: Vec<(std::net::IpAddr, u16)>,
}

/// Whether a finished task is re-run by another minion: a root task (not a follow-up) of a
/// module that reports open ports, a keyed sample of `per_mille`/1000, when the first run found
/// at most [`MAX_CHECK_OPEN`] open and another live minion can run it.
pub fn should_verify(
    reports_open_ports: bool,
    is_root: bool,
    live_minions: u32,
    first_open: usize,
    key: u64,
    task_id: u64,
    per_mille: u32,
) -> bool {
    reports_open_ports
        && is_root
        && live_minions >= 2
        && first_open <= MAX_CHECK_OPEN
        && verify_task(key, task_id, per_mille)
}

/// Offers a verification run lets pass while waiting for another minion than the first run's.
pub const MAX_VERIFY_SKIPS: u32 = 64;

/// Whether a verification run of a task first run by `first` may run on `candidate`: only on
/// another minion, unless no other is alive or none has been offered for [`MAX_VERIFY_SKIPS`]
/// offers (the other live minions may not run this module). Then it runs anyway, checks nothing
/// ([`judge_check`]), and the job is not held up by a verification no other minion takes.
pub fn may_verify_on(first: &str, candidate: &str, live_minions: u32, skipped: u32) -> bool {
    candidate != first || live_minions < 2 || skipped >= MAX_VERIFY_SKIPS
}

/// What a verification run found: `(sampled, missed)` for the first run's minion — the probes
/// the first run did not find open were all re-sent; `missed` of them are open now — and the
/// address:ports the first run missed (the only findings of the verification worth storing:
/// the others are stored already). `None` when the verification ran on the first run's own
/// minion (it checks nothing).
pub fn judge_check(
    check: &Check,
    verifier: &str,
    found_open: &[(std::net::IpAddr, u16)],
) -> Option<(
    u64,
    u64,
    std::collections::BTreeSet<(std::net::IpAddr, u16)>,
)> {
    if verifier == check.minion {
        return None;
    }
    let first: std::collections::BTreeSet<_> = check.first_open.iter().copied().collect();
    let now: std::collections::BTreeSet<_> = found_open.iter().copied().collect();
    let missed: std::collections::BTreeSet<_> = now.difference(&first).copied().collect();
    let sampled = check.probes.saturating_sub(first.len() as u64);
    Some((sampled, missed.len() as u64, missed))
}

/// Misses of a first run given the open sets of the first and the verifying run of one task.
pub fn misses<T: Ord>(
    first: &std::collections::BTreeSet<T>,
    check: &std::collections::BTreeSet<T>,
) -> u64 {
    check.difference(first).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(sent: u64, answered: u64) -> Counts {
        Counts {
            sent,
            answered,
            ..Default::default()
        }
    }

    #[test]
    fn records_roll_up_by_minion_provider_and_net() {
        let mut l = Ledger::default();
        l.record(
            "m1",
            "aws",
            &[
                ("127.0.0.0/24".into(), c(10, 9)),
                ("127.0.1.0/24".into(), c(5, 5)),
            ],
        );
        l.record("m2", "aws", &[("127.0.0.0/24".into(), c(4, 3))]);
        assert_eq!(l.by_minion["m1"].sent, 15);
        assert_eq!(l.by_provider["aws"].answered, 17);
        assert_eq!(l.by_net["127.0.0.0/24"].sent, 14);
        assert!(
            !l.by_net.contains_key("127.0.1.0/24"),
            "fully answered: no row"
        );
        l.record_check("m1", "aws", "127.0.0.0/24", 100, 3);
        assert_eq!(l.by_minion["m1"].miss_rate(), Some(0.03));
        assert_eq!(l.by_net["127.0.0.0/24"].missed, 3);
    }

    #[test]
    fn net_rows_are_bounded() {
        let mut l = Ledger::default();
        for i in 0..(MAX_NETS + 10) {
            l.record("m", "p", &[(format!("n{i}"), c(1, 0))]);
        }
        assert_eq!(l.by_net.len(), MAX_NETS + 1);
        assert_eq!(l.by_net[OTHER_NETS].sent, 10);
    }

    #[test]
    fn flags_only_the_minion_out_of_line() {
        let mut l = Ledger::default();
        l.record_check("good1", "a", "n", 5000, 10);
        l.record_check("good2", "b", "n", 5000, 15);
        l.record_check("blocked", "c", "n", 5000, 400);
        let f = judge(&l);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!(f[0].minion, "blocked");
        assert_eq!(f[0].share, FLAGGED_SHARE);
        assert!(f[0].reason.contains("400 of 5000"), "{}", f[0].reason);
    }

    #[test]
    fn noise_and_small_samples_are_not_flagged() {
        let mut l = Ledger::default();
        l.record_check("a", "p", "n", 5000, 10);
        l.record_check("b", "p", "n", 5000, 16); // within noise of a
        l.record_check("c", "p", "n", 50, 20); // huge rate, too few samples
        assert!(judge(&l).is_empty());
    }

    #[test]
    fn verification_goes_to_another_minion_while_there_is_one() {
        assert!(!may_verify_on("m1", "m1", 2, 0));
        assert!(may_verify_on("m1", "m2", 2, 0));
        assert!(may_verify_on("m1", "m1", 1, 0));
        // the other live minion never takes it (another module): not held forever
        assert!(!may_verify_on("m1", "m1", 2, MAX_VERIFY_SKIPS - 1));
        assert!(may_verify_on("m1", "m1", 2, MAX_VERIFY_SKIPS));
    }

    #[test]
    fn a_flagged_minion_gets_its_share_of_its_slots() {
        assert_eq!(cut_free(64, None), 64);
        assert_eq!(cut_free(64, Some(FLAGGED_SHARE)), 16);
        assert_eq!(cut_free(2, Some(FLAGGED_SHARE)), 1);
        assert_eq!(cut_free(0, Some(FLAGGED_SHARE)), 0);
    }

    #[test]
    fn nets_are_slash_24_and_slash_64() {
        assert_eq!(net_of("127.1.2.3".parse().unwrap()), "127.1.2.0/24");
        assert_eq!(net_of("::1".parse().unwrap()), "::/64");
        assert_eq!(
            net_of("2001:db8:1:2:3::4".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn a_check_counts_what_only_the_second_minion_found() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let c = Check {
            of: 7,
            minion: "m1".into(),
            provider: "a".into(),
            net: "127.0.0.0/24".into(),
            probes: 256,
            first_open: vec![(ip("127.0.0.1"), 80), (ip("127.0.0.2"), 80)],
        };
        let found = [
            (ip("127.0.0.2"), 80),
            (ip("127.0.0.9"), 80),
            (ip("127.0.0.9"), 80),
        ];
        let (sampled, missed, new) = judge_check(&c, "m2", &found).unwrap();
        assert_eq!((sampled, missed), (254, 1));
        assert_eq!(new.into_iter().collect::<Vec<_>>(), [(ip("127.0.0.9"), 80)]);
        // re-run on the same minion: no evidence either way
        assert!(judge_check(&c, "m1", &found).is_none());
        // a port the second run did not find (the first was right, or it was lost) is no miss
        assert_eq!(judge_check(&c, "m2", &[]).unwrap().1, 0);
    }

    #[test]
    fn only_root_scan_tasks_with_peers_are_verified() {
        let picked = (0..10_000u64)
            .filter(|t| should_verify(true, true, 2, 3, 9, *t, 1000))
            .count();
        assert_eq!(picked, 10_000);
        assert!(!should_verify(false, true, 2, 0, 9, 1, 1000));
        assert!(!should_verify(true, false, 2, 0, 9, 1, 1000));
        assert!(!should_verify(true, true, 1, 0, 9, 1, 1000));
        assert!(!should_verify(
            true,
            true,
            2,
            MAX_CHECK_OPEN + 1,
            9,
            1,
            1000
        ));
        assert!(!(0..1000).any(|t| should_verify(true, true, 3, 0, 9, t, 0)));
    }

    #[test]
    fn verification_sample_is_keyed_and_near_its_rate() {
        let n = (0..100_000).filter(|t| verify_task(7, *t, 20)).count();
        assert!((1_700..2_300).contains(&n), "{n}");
        let a: Vec<u64> = (0..1000).filter(|t| verify_task(7, *t, 20)).collect();
        let b: Vec<u64> = (0..1000).filter(|t| verify_task(8, *t, 20)).collect();
        assert_ne!(a, b);
    }
}
