//! Figures printed at the end of every chaos run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::faults::FaultKind;

/// What a run did and what it proved. `lost` and `duplicates` must be 0.
#[derive(Debug, Clone)]
pub struct Figures {
    pub name: String,
    pub seed: Option<u64>,
    pub faults: BTreeMap<FaultKind, u64>,
    pub jobs: u64,
    pub jobs_terminal: u64,
    pub tasks: u64,
    pub results: u64,
    pub open_ports_expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub false_open: u64,
    /// Late results from revoked leases the coordinator said it rejected (if it reports them).
    pub rejected_stale: Option<u64>,
    pub watch_events: u64,
    pub watch_resumes: u64,
    pub watch_gaps: u64,
    pub watch_dups: u64,
    pub reassign: Vec<Duration>,
    pub recovery: Vec<Duration>,
    pub coordinator_rss_start: Option<u64>,
    pub coordinator_rss_max: Option<u64>,
    pub started: Instant,
}

impl Figures {
    pub fn new(name: impl Into<String>, seed: Option<u64>) -> Self {
        Self {
            name: name.into(),
            seed,
            faults: BTreeMap::new(),
            jobs: 0,
            jobs_terminal: 0,
            tasks: 0,
            results: 0,
            open_ports_expected: 0,
            lost: 0,
            duplicates: 0,
            false_open: 0,
            rejected_stale: None,
            watch_events: 0,
            watch_resumes: 0,
            watch_gaps: 0,
            watch_dups: 0,
            reassign: Vec::new(),
            recovery: Vec::new(),
            coordinator_rss_start: None,
            coordinator_rss_max: None,
            started: Instant::now(),
        }
    }

    pub fn fault(&mut self, kind: FaultKind) {
        *self.faults.entry(kind).or_default() += 1;
    }

    pub fn faults_total(&self) -> u64 {
        self.faults.values().sum()
    }

    pub fn observe_rss(&mut self, rss: Option<u64>) {
        let Some(rss) = rss else { return };
        if self.coordinator_rss_start.is_none() {
            self.coordinator_rss_start = Some(rss);
        }
        self.coordinator_rss_max = Some(self.coordinator_rss_max.map_or(rss, |m| m.max(rss)));
    }

    /// Whether every invariant counted here holds.
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.duplicates == 0
            && self.false_open == 0
            && self.watch_gaps == 0
            && self.watch_dups == 0
            && self.jobs_terminal == self.jobs
    }
}

/// The `p`-th percentile (0..=100) by nearest rank; `None` when empty.
pub fn percentile(samples: &[Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

fn fmt_pct(samples: &[Duration]) -> String {
    match (percentile(samples, 50.0), percentile(samples, 99.0)) {
        (Some(a), Some(b)) => format!(
            "p50 {:.0} ms, p99 {:.0} ms (n={})",
            a.as_secs_f64() * 1e3,
            b.as_secs_f64() * 1e3,
            samples.len()
        ),
        _ => "n/a (no sample)".to_string(),
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or("n/a".into(), |b| {
        format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
    })
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "==== chaos figures: {} ====", self.name)?;
        match self.seed {
            Some(s) => writeln!(f, "seed                 {s} (replay: CHAOS_SEED={s})")?,
            None => writeln!(f, "seed                 (deterministic scenario)")?,
        }
        writeln!(
            f,
            "wall time            {:.1} s",
            self.started.elapsed().as_secs_f64()
        )?;
        writeln!(f, "faults injected      {}", self.faults_total())?;
        for (k, n) in &self.faults {
            writeln!(f, "  {:<30} {n}", k.name())?;
        }
        writeln!(
            f,
            "jobs                 {} ({} terminal)",
            self.jobs, self.jobs_terminal
        )?;
        writeln!(f, "tasks                {}", self.tasks)?;
        writeln!(f, "results              {}", self.results)?;
        writeln!(f, "open ports expected  {}", self.open_ports_expected)?;
        writeln!(f, "lost                 {}  (must be 0)", self.lost)?;
        writeln!(f, "duplicates           {}  (must be 0)", self.duplicates)?;
        writeln!(f, "false open           {}  (must be 0)", self.false_open)?;
        if let Some(r) = self.rejected_stale {
            writeln!(f, "stale results rejected by coordinator  {r}")?;
        }
        writeln!(
            f,
            "watch                {} events, {} resumes, {} gaps, {} dups",
            self.watch_events, self.watch_resumes, self.watch_gaps, self.watch_dups
        )?;
        writeln!(f, "reassignment latency {}", fmt_pct(&self.reassign))?;
        writeln!(f, "coordinator recovery {}", fmt_pct(&self.recovery))?;
        writeln!(
            f,
            "coordinator RSS      start {}, max {}",
            mib(self.coordinator_rss_start),
            mib(self.coordinator_rss_max)
        )?;
        write!(
            f,
            "verdict              {}",
            if self.clean() { "CLEAN" } else { "VIOLATIONS" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&v, 100.0), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&[], 50.0), None);
        let mut f = Figures::new("t", Some(5));
        f.fault(FaultKind::MinionKill9);
        f.jobs = 1;
        f.jobs_terminal = 1;
        assert!(f.clean());
        let s = f.to_string();
        assert!(
            s.contains("CHAOS_SEED=5") && s.contains("minion kill -9"),
            "{s}"
        );
        f.lost = 1;
        assert!(!f.clean());
    }
}
