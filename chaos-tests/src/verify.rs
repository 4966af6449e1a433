//! Invariants checked after every scenario, against the independent ledger.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use overlord_core::finding::FindingKind;
use overlord_proto::v1::{Finding, JobState, JobStatus};

use crate::client::{self, JobClient, WatchLog};
use crate::figures::Figures;
use crate::ledger::{Ledger, PortReport};
use crate::wait::wait_for;

/// Waits until the job is terminal (completed or cancelled), tolerating coordinator restarts.
pub async fn wait_terminal(
    c: &JobClient,
    job_id: u64,
    timeout: Duration,
) -> anyhow::Result<JobStatus> {
    let c = c.clone();
    let s = wait_for(timeout, &format!("job {job_id} terminal"), || {
        let mut c = c.clone();
        async move {
            match client::get(&mut c, job_id).await {
                Ok(s) if client::is_terminal(&s) => Ok(Some(s)),
                Ok(s) => Err(format!(
                    "state {:?}: total {} done {} failed {} pending {} leased {} unexpanded {}",
                    JobState::try_from(s.state),
                    s.tasks_total,
                    s.tasks_done,
                    s.tasks_failed,
                    s.tasks_pending,
                    s.tasks_leased,
                    s.tasks_unexpanded
                )),
                Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
            }
        }
    })
    .await?;
    Ok(s)
}

/// The violations found for one job (empty = every invariant holds), figures updated.
#[derive(Debug, Default)]
pub struct JobVerdict {
    pub job_id: u64,
    pub violations: Vec<String>,
}

/// Checks one finished job:
/// - terminal state `Completed`, every task accounted (`done + failed == total`, nothing pending/leased);
/// - no task failed (on loopback nothing should);
/// - every open cell of the ledger reported exactly once as `open_port`, nothing closed reported open;
/// - each task's findings come from exactly one execution (one minion, one start time): a result from a
///   revoked lease stored beside the new lease's result breaks this;
/// - no finding stored twice (same task, kind, target, port);
/// - cursors strictly increasing in `ListResults`;
/// - provenance present (task, minion, provider, module);
/// - the watch stream (resumed after faults) saw every stored finding once, and the final status.
pub async fn verify_job(
    c: &mut JobClient,
    job_id: u64,
    ledger: Option<&Ledger>,
    watch: Option<&WatchLog>,
    figs: &mut Figures,
) -> anyhow::Result<JobVerdict> {
    let mut v = JobVerdict {
        job_id,
        violations: Vec::new(),
    };
    let s = client::get(c, job_id).await?;
    figs.jobs += 1;
    if client::is_terminal(&s) {
        figs.jobs_terminal += 1;
    }
    figs.tasks += s.tasks_total;
    *figs.rejected_stale.get_or_insert(0) += s.stale_results_rejected;
    if JobState::try_from(s.state) != Ok(JobState::Completed) {
        v.violations.push(format!(
            "job {job_id} not completed: state {:?}",
            JobState::try_from(s.state)
        ));
    }
    if s.tasks_done + s.tasks_failed != s.tasks_total
        || s.tasks_pending + s.tasks_leased + s.tasks_unexpanded != 0
    {
        v.violations.push(format!(
            "job {job_id} task accounting: total {} done {} failed {} pending {} leased {} unexpanded {}",
            s.tasks_total, s.tasks_done, s.tasks_failed, s.tasks_pending, s.tasks_leased, s.tasks_unexpanded
        ));
        figs.lost += s.tasks_total.saturating_sub(s.tasks_done + s.tasks_failed);
    }
    if s.tasks_failed > 0 {
        v.violations
            .push(format!("job {job_id}: {} tasks failed", s.tasks_failed));
        figs.lost += s.tasks_failed;
    }
    let results = client::all_results(c, job_id).await?;
    figs.results += results.len() as u64;
    if s.findings != results.len() as u64 {
        v.violations.push(format!(
            "job {job_id}: status says {} findings, ListResults has {}",
            s.findings,
            results.len()
        ));
    }
    check_results(job_id, &results, &mut v, figs);
    if let Some(ledger) = ledger {
        let reports: Vec<PortReport> = results
            .iter()
            .filter(|f| f.kind == FindingKind::OpenPort.as_str())
            .filter_map(|f| {
                Some(PortReport {
                    ip: f.target.parse().ok()?,
                    port: u16::try_from(f.port).ok()?,
                })
            })
            .collect();
        let check = ledger.check(&reports).await;
        figs.open_ports_expected += check.expected_open as u64;
        figs.lost += check.missing.len() as u64;
        figs.duplicates += check
            .duplicated
            .iter()
            .map(|(_, n)| (*n - 1) as u64)
            .sum::<u64>();
        figs.false_open += check.false_open.len() as u64;
        if !check.ok() {
            v.violations.push(format!("job {job_id} ledger: {check}"));
        }
    }
    if let Some(w) = watch {
        let (gaps, dups) = w.compare(&results);
        figs.watch_events += w.findings.len() as u64;
        figs.watch_resumes += w.resumes;
        figs.watch_gaps += gaps.len() as u64;
        figs.watch_dups += dups.len() as u64;
        if !gaps.is_empty() || !dups.is_empty() || w.non_increasing > 0 {
            v.violations.push(format!(
                "job {job_id} watch: {} gaps (first {:?}), {} dups (first {:?}), {} non-increasing cursors, {} resumes",
                gaps.len(),
                gaps.first(),
                dups.len(),
                dups.first(),
                w.non_increasing,
                w.resumes
            ));
        }
        if w.finished.is_none() {
            v.violations.push(format!(
                "job {job_id} watch never saw the final status ({} resumes, last errors {:?})",
                w.resumes,
                w.errors.iter().rev().take(3).collect::<Vec<_>>()
            ));
        }
    }
    Ok(v)
}

/// The pure part of [`verify_job`]: checks on the stored findings alone.
pub fn check_results(job_id: u64, results: &[Finding], v: &mut JobVerdict, figs: &mut Figures) {
    let mut last_cursor = 0;
    let mut per_finding: BTreeMap<(u64, &str, &str, u32), usize> = BTreeMap::new();
    let mut executions: BTreeMap<u64, BTreeSet<(&str, u64)>> = BTreeMap::new();
    let mut bad_provenance = 0;
    let mut bad_example = None;
    for f in results {
        if f.cursor <= last_cursor {
            v.violations.push(format!(
                "job {job_id}: cursor {} after {last_cursor} in ListResults",
                f.cursor
            ));
        }
        last_cursor = f.cursor;
        if f.job_id != job_id {
            v.violations.push(format!(
                "job {job_id}: finding of job {} in its results",
                f.job_id
            ));
        }
        *per_finding
            .entry((f.task_id, f.kind.as_str(), f.target.as_str(), f.port))
            .or_default() += 1;
        executions
            .entry(f.task_id)
            .or_default()
            .insert((f.minion_id.as_str(), f.started_at_ms));
        if f.minion_id.is_empty() || f.provider.is_empty() || f.module.is_empty() {
            bad_provenance += 1;
            bad_example.get_or_insert_with(|| format!("{f:?}"));
        }
    }
    let dups: Vec<_> = per_finding.iter().filter(|(_, n)| **n > 1).collect();
    if !dups.is_empty() {
        figs.duplicates += dups.iter().map(|(_, n)| (**n - 1) as u64).sum::<u64>();
        v.violations.push(format!(
            "job {job_id}: {} findings stored more than once, e.g. {:?}",
            dups.len(),
            dups[0]
        ));
    }
    let multi: Vec<_> = executions.iter().filter(|(_, e)| e.len() > 1).collect();
    if !multi.is_empty() {
        figs.duplicates += multi.len() as u64;
        v.violations.push(format!(
            "job {job_id}: {} tasks have results from more than one execution (a revoked lease's result was stored), e.g. task {} from {:?}",
            multi.len(),
            multi[0].0,
            multi[0].1
        ));
    }
    if bad_provenance > 0 {
        v.violations.push(format!(
            "job {job_id}: {bad_provenance} findings without full provenance (minion, provider, module), e.g. {}",
            bad_example.unwrap_or_default()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(cursor: u64, task: u64, minion: &str, started: u64, port: u32) -> Finding {
        Finding {
            cursor,
            job_id: 1,
            task_id: task,
            module: "portscan".into(),
            kind: FindingKind::OpenPort.as_str().into(),
            target: "127.0.0.2".into(),
            port,
            minion_id: minion.into(),
            provider: "p0".into(),
            started_at_ms: started,
            ..Default::default()
        }
    }

    #[test]
    fn detects_duplicates_stale_executions_and_cursor_disorder() {
        let mut figs = Figures::new("t", None);
        let mut v = JobVerdict::default();
        check_results(
            1,
            &[f(1, 1, "a", 10, 80), f(2, 2, "a", 11, 81)],
            &mut v,
            &mut figs,
        );
        assert!(v.violations.is_empty(), "{:?}", v.violations);

        let mut v = JobVerdict::default();
        check_results(
            1,
            &[f(1, 1, "a", 10, 80), f(2, 1, "a", 10, 80)],
            &mut v,
            &mut figs,
        );
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(figs.duplicates, 1);

        let mut v = JobVerdict::default();
        check_results(
            1,
            &[f(1, 1, "a", 10, 80), f(2, 1, "b", 12, 81)],
            &mut v,
            &mut figs,
        );
        assert!(
            v.violations[0].contains("more than one execution"),
            "{:?}",
            v.violations
        );

        let mut v = JobVerdict::default();
        check_results(
            1,
            &[f(2, 1, "a", 10, 80), f(2, 2, "a", 10, 81)],
            &mut v,
            &mut figs,
        );
        assert!(v.violations[0].contains("cursor"), "{:?}", v.violations);
    }
}
