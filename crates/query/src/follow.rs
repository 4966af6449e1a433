//! Keeps the index in step with the job store: folds every durable finding of every job after
//! the index's per-job cursor. The coordinator calls [`Follower::catch_up`] for jobs the hub
//! reports new findings of (and [`Follower::catch_up_all`] at start); the CLI calls
//! `catch_up_all` before querying a data directory directly.

use crate::extract::extract;
use crate::index::{IndexError, QueryIndex, now_ms};
use overlord_storage::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const PAGE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("job store: {0}")]
    Store(#[from] overlord_storage::StoreError),
}

/// How far the index is behind the store.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Lag {
    /// Durable findings known to the follower that searches do not see yet.
    pub findings: u64,
    /// Age of the oldest of them, ms (0 when none).
    pub age_ms: u64,
    /// Rows in the index.
    pub rows: u64,
    /// Jobs in the index.
    pub jobs: u64,
}

pub struct Follower {
    pub index: Arc<QueryIndex>,
    store: Arc<dyn Store>,
    /// job → (highest durable cursor reported, when the oldest not-yet-visible one was reported)
    seen: Mutex<BTreeMap<u64, (u64, u64)>>,
}

impl Follower {
    pub fn new(index: Arc<QueryIndex>, store: Arc<dyn Store>) -> Self {
        Follower {
            index,
            store,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// The hub says findings of `job` up to `cursor` are durable.
    pub fn notify(&self, job: u64, cursor: u64) {
        let mut s = self.seen.lock().expect("seen");
        let e = s.entry(job).or_insert((0, 0));
        if cursor > e.0 {
            e.0 = cursor;
        }
        if e.1 == 0 {
            e.1 = now_ms();
        }
    }

    /// Folds the findings of `job` after the index's cursor. Returns how many were folded.
    pub fn catch_up(&self, job: u64) -> Result<u64, FollowError> {
        let mut after = self.index.cursor(job);
        let mut n = 0u64;
        loop {
            let page = self.store.findings(job, after, PAGE)?;
            let Some(last) = page.last().map(|f| f.cursor) else {
                break;
            };
            let batch: Vec<_> = page.iter().map(extract).collect();
            n += self.index.add(&batch)? as u64;
            after = last;
            self.index.maybe_commit()?;
            if page.len() < PAGE {
                break;
            }
        }
        Ok(n)
    }

    /// Every job of the store.
    pub fn catch_up_all(&self) -> Result<u64, FollowError> {
        let mut n = 0;
        for j in self.store.jobs()? {
            n += self.catch_up(j.id)?;
        }
        Ok(n)
    }

    /// Folds every job whose durable findings searches do not see yet and commits: for a read
    /// that must see everything durable so far (the image service's text search). Safe beside
    /// the follower task (a finding at or below its job's cursor is skipped).
    pub fn sync(&self) -> Result<(), FollowError> {
        let committed = self.index.committed();
        for r in self.store.jobs()? {
            if r.findings > committed.get(&r.id).copied().unwrap_or(0) {
                self.catch_up(r.id)?;
            }
        }
        if self.index.pending_rows() > 0 || self.index.pending_age_ms() > 0 {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits when due and forgets lag that became visible.
    pub fn maybe_commit(&self) -> Result<bool, FollowError> {
        let c = self.index.maybe_commit()?;
        self.prune();
        Ok(c)
    }

    pub fn commit(&self) -> Result<(), FollowError> {
        self.index.commit()?;
        self.prune();
        Ok(())
    }

    fn prune(&self) {
        let committed = self.index.committed();
        let mut s = self.seen.lock().expect("seen");
        for (job, e) in s.iter_mut() {
            if committed.get(job).is_some_and(|c| *c >= e.0) {
                e.1 = 0;
            }
        }
    }

    /// How far searches are behind the store, over `jobs` (`None`: every job). The durable
    /// count is each job's stored record (`JobRecord::findings` == its last cursor), not what the
    /// hub has reported yet: a job whose findings are durable but not yet announced to the
    /// follower still counts as lag, so a caller waiting for `findings == 0` never stops early.
    /// `rows` and `jobs` are those of `jobs` when given (rows counted by the caller), else the
    /// whole index's.
    pub fn lag(&self, jobs: Option<&BTreeSet<u64>>) -> Result<Lag, FollowError> {
        let records = self.store.jobs()?;
        let committed = self.index.committed();
        let s = self.seen.lock().expect("seen");
        Ok(lag_of(
            records.iter().map(|r| (r.id, r.findings)),
            &committed,
            &s,
            jobs,
            now_ms(),
            self.index.num_rows(),
        ))
    }
}

/// The lag decision (pure): durable findings per job against the cursors searches see.
/// `seen` gives the time a not-yet-visible finding was first reported (its age).
fn lag_of(
    durable: impl IntoIterator<Item = (u64, u64)>,
    committed: &BTreeMap<u64, u64>,
    seen: &BTreeMap<u64, (u64, u64)>,
    jobs: Option<&BTreeSet<u64>>,
    now: u64,
    index_rows: u64,
) -> Lag {
    let mut lag = Lag {
        rows: index_rows,
        ..Default::default()
    };
    for (job, durable) in durable {
        if jobs.is_some_and(|s| !s.contains(&job)) {
            continue;
        }
        lag.jobs += 1;
        let visible = committed.get(&job).copied().unwrap_or(0);
        // the hub may have reported more than the record read here says (read order)
        let durable = durable.max(seen.get(&job).map(|e| e.0).unwrap_or(0));
        if durable > visible {
            lag.findings += durable - visible;
            if let Some((_, since)) = seen.get(&job).filter(|e| e.1 > 0) {
                lag.age_ms = lag.age_ms.max(now.saturating_sub(*since));
            }
        }
    }
    lag
}

/// The latest job before `a` over the same targets and ports (else the latest before `a`), among
/// the jobs in the index: what `diff A` compares `A` with.
pub fn previous_job(store: &dyn Store, a: u64, indexed: &[u64]) -> Option<u64> {
    let spec_a = store.spec(a).ok().flatten();
    let key = |s: &overlord_core::job::JobSpec| (s.targets.clone(), s.ports.clone());
    let earlier: Vec<u64> = indexed.iter().copied().filter(|j| *j < a).collect();
    if let Some(sa) = &spec_a {
        for j in earlier.iter().rev() {
            if store
                .spec(*j)
                .ok()
                .flatten()
                .is_some_and(|s| key(&s) == key(sa))
            {
                return Some(*j);
            }
        }
    }
    earlier.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_durable_findings_the_hub_has_not_reported() {
        // job 2 is durable in the store (5 findings) but the follower has heard nothing of it:
        // that is lag, not "caught up" (regression: a client saw lag 0 and 0 rows for a new job)
        let committed = BTreeMap::from([(1, 10)]);
        let l = lag_of(
            [(1, 10), (2, 5)],
            &committed,
            &BTreeMap::new(),
            None,
            1_000,
            7,
        );
        assert_eq!((l.findings, l.jobs, l.rows, l.age_ms), (5, 2, 7, 0));
    }

    #[test]
    fn lag_is_scoped_and_aged_from_the_first_report() {
        let committed = BTreeMap::from([(1, 4), (2, 1)]);
        let seen = BTreeMap::from([(1, (6, 900)), (2, (3, 400))]);
        let only1 = BTreeSet::from([1]);
        let l = lag_of([(1, 6), (2, 3)], &committed, &seen, Some(&only1), 1_000, 0);
        assert_eq!((l.findings, l.jobs, l.age_ms), (2, 1, 100));
        let all = lag_of([(1, 6), (2, 3)], &committed, &seen, None, 1_000, 0);
        assert_eq!((all.findings, all.jobs, all.age_ms), (4, 2, 600));
        // a report newer than the record read counts too; a caught-up job adds nothing
        let l = lag_of([(1, 4), (2, 1)], &committed, &seen, None, 1_000, 0);
        assert_eq!(l.findings, 4);
        let caught = lag_of([(1, 4)], &committed, &BTreeMap::new(), None, 1_000, 0);
        assert_eq!(caught.findings, 0);
    }
}
