//! Minion results are untrusted input. [`check_result`] holds every finding of a result against
//! the task it answers (target and port within the task's, kind among those the module may
//! produce, sizes and counts within limits); [`FollowupGuard`] re-checks follow-up tasks against
//! the job's scope, drops duplicates and caps their depth and number per job; [`Strikes`]
//! decides when a minion that keeps sending violations is quarantined. All pure.

use crate::job::TaskSpec;
use std::collections::HashSet;
use std::net::IpAddr;

/// Largest JSON data of one finding.
pub const MAX_FINDING_DATA_BYTES: usize = 1 << 20;
/// Findings one result may carry (a port-scan chunk reports at most one per port).
pub const MAX_FINDINGS_PER_RESULT: usize = 4096;
/// Follow-up tasks one job may spawn in all, and the depth of a follow-up chain.
pub const MAX_FOLLOWUPS_PER_JOB: u64 = 1_000_000;
pub const MAX_FOLLOWUP_DEPTH: u32 = 4;

/// The finding kinds a module may produce; `None` for a module this table does not know (its
/// kinds are not restricted, its targets and ports still are).
pub fn kinds_of(module: &str) -> Option<&'static [&'static str]> {
    Some(match module {
        "portscan" | "syn" => &["open_port"],
        "banner" => &["banner"],
        "service" => &["service"],
        "screenshot" => &[
            "screenshot",
            "screenshot_error",
            "vnc_auth",
            "x11_refused",
            "rdp",
        ],
        "enrich" => &["enrichment"],
        "leak" => &["leak"],
        "beacon" => &["beacon", "beacon_summary"],
        "noop" => &["noop"],
        "udp" => &["udp"],
        _ => return None,
    })
}

/// Modules whose findings name addresses read from their input (a log), not the task's target.
fn reports_foreign_addresses(module: &str) -> bool {
    module == "beacon"
}

/// What the checks need of one reported finding.
#[derive(Clone, Copy, Debug)]
pub struct Reported<'a> {
    pub kind: &'a str,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    pub data_bytes: usize,
}

/// Start of the ack reason of a result rejected by [`check_result`] (the session layer counts
/// these as strikes against the minion).
pub const REJECTED_PREFIX: &str = "rejected finding: ";

/// Why a result was rejected (shown to the minion in its ack, counted against it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("module {module} may not report kind {kind:?}")]
    Kind { module: String, kind: String },
    #[error("finding target {found} is not the task's target {task}")]
    Target { found: IpAddr, task: String },
    #[error("finding port {port} is not among the task's ports")]
    Port { port: u16 },
    #[error("finding data of {0} bytes is over the limit of {MAX_FINDING_DATA_BYTES}")]
    DataSize(usize),
    #[error("{0} findings in one result; at most {1}")]
    Count(usize, usize),
}

/// Checks a successful result's findings against the task they answer.
pub fn check_result(task: &TaskSpec, findings: &[Reported<'_>]) -> Result<(), Violation> {
    let cap = if matches!(task.module.as_str(), "portscan" | "syn") && !task.ports.is_empty() {
        // One finding per probe at most: the task's block of addresses × its ports.
        task.ports.len() * task.target_count.max(1) as usize
    } else {
        MAX_FINDINGS_PER_RESULT
    };
    if findings.len() > cap {
        return Err(Violation::Count(findings.len(), cap));
    }
    let kinds = kinds_of(&task.module);
    // A sweep task covers `target_count` consecutive addresses from its target; a hitlist task
    // its list of ranges (sorted: a binary search finds the one an address would be in).
    let covered = task.target_ranges();
    let within = |ip: IpAddr| {
        let i = covered.partition_point(|r| r.nth(0) <= ip);
        i > 0 && covered[i - 1].contains_ip(ip)
    };
    let foreign = reports_foreign_addresses(&task.module);
    for f in findings {
        if let Some(k) = kinds
            && !k.contains(&f.kind)
        {
            return Err(Violation::Kind {
                module: task.module.clone(),
                kind: crate::security::clip(f.kind, 64),
            });
        }
        if f.data_bytes > MAX_FINDING_DATA_BYTES {
            return Err(Violation::DataSize(f.data_bytes));
        }
        if foreign {
            continue;
        }
        if let Some(found) = f.target
            && !within(found)
        {
            return Err(Violation::Target {
                found,
                task: match covered.as_slice() {
                    [] => "(none)".into(),
                    [b] => b.to_string(),
                    [a, .., z] => format!("{} ranges, {a} .. {z}", covered.len()),
                },
            });
        }
        if let Some(p) = f.port
            && !task.ports.contains(&p)
        {
            return Err(Violation::Port { port: p });
        }
    }
    Ok(())
}

/// Why a follow-up task was not made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowupRefusal {
    OutOfScope,
    Duplicate,
    TooDeep,
    TooMany,
}

/// Per-job follow-up admission: in the job's scope, once per (module, target, ports), at most
/// [`MAX_FOLLOWUP_DEPTH`] deep and [`MAX_FOLLOWUPS_PER_JOB`] in all.
#[derive(Debug, Default)]
pub struct FollowupGuard {
    seen: HashSet<(String, Option<IpAddr>, Vec<u16>, Option<String>)>,
    made: u64,
    /// Depth of follow-up tasks made here (root tasks: 0, absent).
    depth: std::collections::HashMap<u64, u32>,
}

impl FollowupGuard {
    /// Depth of a task (0 for a root task or one this guard did not make).
    pub fn depth_of(&self, task: u64) -> u32 {
        self.depth.get(&task).copied().unwrap_or(0)
    }

    /// Remembers the depth of follow-up `task`.
    pub fn set_depth(&mut self, task: u64, depth: u32) {
        self.depth.insert(task, depth);
    }

    /// `depth`: the new task's depth (a root task's follow-up is 1); `in_scope`: whether its
    /// target lies in the job's ranges (and the coordinator's scope).
    pub fn admit(
        &mut self,
        module: &str,
        target: Option<IpAddr>,
        ports: &[u16],
        blob: Option<&str>,
        depth: u32,
        in_scope: bool,
    ) -> Result<(), FollowupRefusal> {
        if !in_scope {
            return Err(FollowupRefusal::OutOfScope);
        }
        if depth > MAX_FOLLOWUP_DEPTH {
            return Err(FollowupRefusal::TooDeep);
        }
        if self.made >= MAX_FOLLOWUPS_PER_JOB {
            return Err(FollowupRefusal::TooMany);
        }
        let key = (
            module.to_string(),
            target,
            ports.to_vec(),
            blob.map(str::to_string),
        );
        if !self.seen.insert(key) {
            return Err(FollowupRefusal::Duplicate);
        }
        self.made += 1;
        Ok(())
    }
}

/// Leak lookups run only for e-mails of an `enrichment` from an `enrich` task that worked on an
/// image this job stored: a screenshot of the job (the task's blob) or the file input's PNG the
/// coordinator stored and hashed itself with the enrichment (`stored_blob`); never for one reported
/// by any other task, nor for an enrichment with no stored image.
pub fn leak_lookup_allowed(parent: &TaskSpec, stored_blob: Option<&str>) -> bool {
    parent.module == "enrich" && (parent.blob_sha256.is_some() || stored_blob.is_some())
}

/// How long a lease of `module` over `ports` ports may run before it is taken back, even from a
/// minion that keeps heartbeating: four times the module's expected duration, at least 30 s, at
/// most `max_ms` (the configured `task_timeout_ms`). Unknown modules get `max_ms`.
pub fn lease_timeout_ms(
    module: &str,
    ports: usize,
    params: &serde_json::Value,
    max_ms: u64,
) -> u64 {
    let p = ports.max(1) as u64;
    let expected_ms = match module {
        // A connect scan of a chunk: a few ms per port with the module's concurrency, plus
        // connect timeouts.
        "portscan" => 5_000 + 5 * p,
        "banner" => 10_000 * p,
        "service" => 20_000 * p,
        "screenshot" => 30_000 * p,
        "enrich" => 60_000,
        "leak" => 5_000,
        // A live (`follow`) beacon task runs for hours: its lease is renewed by every partial
        // result, and the minion sends one (a keep-alive if nothing else) every quarter of this.
        "beacon" if params.get("follow").and_then(|v| v.as_bool()) == Some(true) => 15_000,
        "beacon" => 300_000, // its own time limit (minion `modules::beacon::TIME_LIMIT`)
        "noop" => 1_000 + params.get("sleep_ms").and_then(|v| v.as_u64()).unwrap_or(0),
        _ => return max_ms,
    };
    (expected_ms.saturating_mul(4))
        .clamp(30_000, max_ms.max(30_000))
        .min(max_ms)
}

/// Violations a minion may send within [`STRIKE_WINDOW_MS`] before it is quarantined for
/// [`QUARANTINE_MS`].
pub const MAX_STRIKES: u32 = 3;
pub const STRIKE_WINDOW_MS: u64 = 60_000;
pub const QUARANTINE_MS: u64 = 300_000;

/// One minion's violation record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strikes {
    /// Times (ms) of recent violations, oldest first.
    recent: Vec<u64>,
    /// Quarantined until this time (ms), if at all.
    pub until: Option<u64>,
}

impl Strikes {
    /// Records a violation at `now`; true if the minion is now quarantined.
    pub fn strike(&mut self, now: u64) -> bool {
        self.recent
            .retain(|t| now.saturating_sub(*t) < STRIKE_WINDOW_MS);
        self.recent.push(now);
        if self.recent.len() as u32 >= MAX_STRIKES {
            self.until = Some(now + QUARANTINE_MS);
            self.recent.clear();
            return true;
        }
        false
    }

    pub fn quarantined(&self, now: u64) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(module: &str, target: Option<&str>, ports: &[u16]) -> TaskSpec {
        TaskSpec {
            job_id: 1,
            task_id: 2,
            parent: None,
            module: module.into(),
            target: target.map(|t| t.parse().unwrap()),
            target_count: 1,
            ports: ports.to_vec(),
            input: None,
            params: serde_json::Value::Null,
            blob_sha256: None,
            ranges: Vec::new(),
        }
    }

    fn f<'a>(kind: &'a str, target: Option<&str>, port: Option<u16>) -> Reported<'a> {
        Reported {
            kind,
            target: target.map(|t| t.parse().unwrap()),
            port,
            data_bytes: 10,
        }
    }

    #[test]
    fn findings_must_stay_within_their_task() {
        let t = task("portscan", Some("127.0.0.1"), &[22, 80]);
        assert_eq!(
            check_result(&t, &[f("open_port", Some("127.0.0.1"), Some(80))]),
            Ok(())
        );
        assert!(matches!(
            check_result(&t, &[f("open_port", Some("10.9.9.9"), Some(80))]),
            Err(Violation::Target { .. })
        ));
        assert!(matches!(
            check_result(&t, &[f("open_port", Some("127.0.0.1"), Some(443))]),
            Err(Violation::Port { port: 443 })
        ));
        assert!(matches!(
            check_result(&t, &[f("leak", Some("127.0.0.1"), Some(80))]),
            Err(Violation::Kind { .. })
        ));
        // One port scanned, three findings: a flood.
        let many = vec![f("open_port", Some("127.0.0.1"), Some(80)); 3];
        assert!(matches!(
            check_result(&t, &many),
            Err(Violation::Count(3, 2))
        ));
        let mut big = f("open_port", Some("127.0.0.1"), Some(22));
        big.data_bytes = MAX_FINDING_DATA_BYTES + 1;
        assert!(matches!(
            check_result(&t, &[big]),
            Err(Violation::DataSize(_))
        ));
        // A task without a target (noop) may not report one.
        let n = task("noop", None, &[]);
        assert_eq!(check_result(&n, &[f("noop", None, None)]), Ok(()));
        assert!(check_result(&n, &[f("noop", Some("8.8.8.8"), None)]).is_err());
        // beacon reports the addresses of its log.
        let b = task("beacon", None, &[]);
        assert_eq!(
            check_result(&b, &[f("beacon", Some("10.1.2.3"), Some(443))]),
            Ok(())
        );
        assert!(check_result(&b, &[f("open_port", None, None)]).is_err());
        // A module this table does not know: any kind, but still the task's target.
        let u = task("futurescan", Some("127.0.0.1"), &[53]);
        assert_eq!(
            check_result(&u, &[f("future_kind", Some("127.0.0.1"), Some(53))]),
            Ok(())
        );
        assert!(check_result(&u, &[f("future_kind", Some("127.0.0.2"), Some(53))]).is_err());
        // udp reports only `udp` findings.
        let d = task("udp", Some("127.0.0.1"), &[53]);
        assert_eq!(
            check_result(&d, &[f("udp", Some("127.0.0.1"), Some(53))]),
            Ok(())
        );
        assert!(check_result(&d, &[f("open_port", Some("127.0.0.1"), Some(53))]).is_err());
        // A sweep task covers its block of addresses: findings anywhere in it pass, one past
        // its end does not; the flood cap is block × ports.
        for m in ["portscan", "syn"] {
            let mut s = task(m, Some("127.0.1.0"), &[80]);
            s.target_count = 256;
            assert_eq!(
                check_result(&s, &[f("open_port", Some("127.0.1.255"), Some(80))]),
                Ok(())
            );
            assert!(matches!(
                check_result(&s, &[f("open_port", Some("127.0.2.0"), Some(80))]),
                Err(Violation::Target { .. })
            ));
            assert!(check_result(&s, &[f("service", Some("127.0.1.1"), Some(80))]).is_err());
            let all: Vec<_> = (0..=255).map(|i| format!("127.0.1.{i}")).collect();
            let fs: Vec<_> = all
                .iter()
                .map(|a| f("open_port", Some(a), Some(80)))
                .collect();
            assert_eq!(check_result(&s, &fs), Ok(()));
            let mut more = fs.clone();
            more.push(f("open_port", Some("127.0.1.1"), Some(80)));
            assert!(matches!(
                check_result(&s, &more),
                Err(Violation::Count(257, 256))
            ));
        }
    }

    #[test]
    fn a_hitlist_task_covers_its_ranges_only() {
        let mut t = task("portscan", Some("127.0.0.4"), &[80]);
        t.ranges = ["127.0.0.4/31", "127.0.0.9", "::1"]
            .iter()
            .map(|r| match crate::target::parse_target(r).unwrap() {
                crate::target::TargetInput::Range(r) => r,
                _ => unreachable!(),
            })
            .collect();
        t.target_count = 4;
        for ok in ["127.0.0.4", "127.0.0.5", "127.0.0.9", "::1"] {
            assert!(
                check_result(&t, &[f("open_port", Some(ok), Some(80))]).is_ok(),
                "{ok}"
            );
        }
        for bad in ["127.0.0.6", "127.0.0.8", "127.0.0.3", "::2", "::"] {
            let e = check_result(&t, &[f("open_port", Some(bad), Some(80))]).unwrap_err();
            assert!(e.to_string().contains("3 ranges"), "{bad}: {e}");
        }
    }

    #[test]
    fn follow_ups_are_scoped_deduplicated_and_capped() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut g = FollowupGuard::default();
        assert_eq!(g.admit("service", Some(ip), &[80], None, 1, true), Ok(()));
        assert_eq!(
            g.admit("service", Some(ip), &[80], None, 1, true),
            Err(FollowupRefusal::Duplicate)
        );
        assert_eq!(g.admit("service", Some(ip), &[81], None, 1, true), Ok(()));
        assert_eq!(
            g.admit(
                "banner",
                Some("10.9.9.9".parse().unwrap()),
                &[80],
                None,
                1,
                false
            ),
            Err(FollowupRefusal::OutOfScope)
        );
        assert_eq!(
            g.admit(
                "enrich",
                Some(ip),
                &[80],
                Some("ab"),
                MAX_FOLLOWUP_DEPTH + 1,
                true
            ),
            Err(FollowupRefusal::TooDeep)
        );
        g.made = MAX_FOLLOWUPS_PER_JOB;
        assert_eq!(
            g.admit("service", Some(ip), &[82], None, 1, true),
            Err(FollowupRefusal::TooMany)
        );
    }

    #[test]
    fn leak_lookups_only_from_enrichment_of_a_stored_screenshot() {
        let mut t = task("enrich", Some("127.0.0.1"), &[5900]);
        assert!(
            !leak_lookup_allowed(&t, None),
            "an enrich task over a file input whose image was not stored"
        );
        assert!(
            leak_lookup_allowed(&t, Some("cd")),
            "an enrich task over a file input whose PNG the coordinator stored"
        );
        t.blob_sha256 = Some("ab".into());
        assert!(leak_lookup_allowed(&t, None));
        let mut s = task("screenshot", Some("127.0.0.1"), &[5900]);
        s.blob_sha256 = Some("ab".into());
        assert!(!leak_lookup_allowed(&s, Some("ab")));
    }

    #[test]
    fn lease_timeouts_follow_the_modules_expected_duration() {
        let none = serde_json::Value::Null;
        assert_eq!(lease_timeout_ms("noop", 0, &none, 600_000), 30_000);
        assert_eq!(lease_timeout_ms("beacon", 0, &none, 600_000), 600_000);
        let follow = serde_json::json!({"follow": true});
        assert_eq!(lease_timeout_ms("beacon", 0, &follow, 600_000), 60_000);
        assert_eq!(lease_timeout_ms("beacon", 0, &follow, 5_000), 5_000);
        assert_eq!(
            lease_timeout_ms("noop", 0, &serde_json::json!({"sleep_ms": 20_000}), 600_000),
            84_000
        );
        assert_eq!(lease_timeout_ms("portscan", 2048, &none, 600_000), 60_960);
        assert_eq!(
            lease_timeout_ms("service", 16, &none, 600_000),
            600_000,
            "capped"
        );
        assert_eq!(
            lease_timeout_ms("udp", 1, &none, 600_000),
            600_000,
            "unknown: the max"
        );
        assert_eq!(
            lease_timeout_ms("noop", 0, &none, 5_000),
            5_000,
            "never above the max"
        );
    }

    #[test]
    fn repeated_violations_quarantine_a_minion_for_a_while() {
        let mut s = Strikes::default();
        assert!(!s.strike(1_000));
        assert!(!s.strike(2_000));
        assert!(!s.quarantined(2_000));
        assert!(s.strike(3_000));
        assert!(s.quarantined(3_000 + QUARANTINE_MS - 1));
        assert!(!s.quarantined(3_000 + QUARANTINE_MS));
        // Violations spread wider than the window do not add up.
        let mut s = Strikes::default();
        for i in 0..10 {
            assert!(!s.strike(i * STRIKE_WINDOW_MS));
        }
    }
}
