//! overlord-storage: the coordinator's persistent state, behind the [`Store`] trait, over sled.
//!
//! ## Key layout (one sled tree, so a [`Batch`] is applied atomically)
//!
//! | key | value |
//! |---|---|
//! | `m:` + name | meta counter (u64 BE), e.g. `m:epoch`, `m:next_job` |
//! | `j:` + job id (u64 BE) | [`JobRecord`] (progress, small, rewritten often) |
//! | `s:` + job id | [`JobSpec`] (written once) |
//! | `t:` + job id + task id (u64 BE each) | [`TaskRecord`] (state incl. lease) |
//! | `f:` + job id + cursor (u64 BE each) | [`FindingRecord`] |
//! | `b:` + sha256 hex | blob bytes (content-addressed, raw) |
//! | `n:` + minion id | [`MinionRecord`] (incarnation, generation) |
//! | `r:` + client request id | job id (u64 BE): idempotent submission |
//!
//! ## Record encoding
//! Every record is `[version: u8] ++ JSON`. Version 1 is the only one so far; decoders match on the
//! version byte, and tests keep frozen bytes of each version.
//!
//! ## Durability
//! `apply` makes a batch visible; it is durable only after `flush`. Callers group many batches per
//! flush and acknowledge nothing before the flush that covers it returns.

use overlord_core::job::{FindingRecord, JobRecord, JobSpec, TaskRecord};
use overlord_core::{JobId, TaskId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;

pub const RECORD_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt record under key {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
}

/// A minion's identity across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinionRecord {
    pub id: String,
    pub incarnation: String,
    pub generation: u64,
    pub provider: String,
}

#[derive(Clone, Debug)]
pub enum Op {
    Meta(&'static str, u64),
    Job(JobRecord),
    Spec(JobId, Box<JobSpec>),
    Task(TaskRecord),
    Finding(FindingRecord),
    Blob(String, Vec<u8>),
    Minion(MinionRecord),
    /// A client's submission request id → the job it created.
    Request(String, JobId),
}

/// Writes applied together (atomically).
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

pub trait Store: Send + Sync + 'static {
    fn apply(&self, batch: Batch) -> Result<(), StoreError>;
    /// Makes everything applied so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    fn meta(&self, name: &str) -> Result<Option<u64>, StoreError>;
    fn jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    fn spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError>;
    fn tasks(&self, job: JobId) -> Result<Vec<TaskRecord>, StoreError>;
    fn task(&self, job: JobId, task: TaskId) -> Result<Option<TaskRecord>, StoreError>;
    /// Findings of `job` with cursor > `after`, at most `limit`, ascending.
    fn findings(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FindingRecord>, StoreError>;
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn minions(&self) -> Result<Vec<MinionRecord>, StoreError>;
    /// Every (request id, job id) of accepted submissions.
    fn requests(&self) -> Result<Vec<(String, JobId)>, StoreError>;
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, v).expect("serializable record");
    out
}

pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((1, rest)) => serde_json::from_slice(rest).map_err(|e| corrupt(e.to_string())),
        Some((v, _)) => Err(corrupt(format!("unknown record version {v}"))),
        None => Err(corrupt("empty record".into())),
    }
}

fn key2(prefix: &[u8], a: u64, b: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 16);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&a.to_be_bytes());
    k.extend_from_slice(&b.to_be_bytes());
    k
}

fn key1(prefix: &[u8], a: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&a.to_be_bytes());
    k
}

fn key_str(prefix: &[u8], s: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(s.as_bytes());
    k
}

/// The sled implementation.
pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(256 * 1024 * 1024)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()?;
        Ok(SledStore { db })
    }

    fn scan<T: DeserializeOwned>(&self, prefix: Vec<u8>) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(prefix) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    fn get<T: DeserializeOwned>(&self, key: Vec<u8>) -> Result<Option<T>, StoreError> {
        match self.db.get(&key)? {
            Some(v) => Ok(Some(decode(&key, &v)?)),
            None => Ok(None),
        }
    }
}

impl Store for SledStore {
    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for op in batch.ops {
            match op {
                Op::Meta(name, v) => b.insert(key_str(b"m:", name), &v.to_be_bytes()),
                Op::Job(j) => b.insert(key1(b"j:", j.id), encode(&j)),
                Op::Spec(id, s) => b.insert(key1(b"s:", id), encode(&*s)),
                Op::Task(t) => b.insert(key2(b"t:", t.spec.job_id, t.spec.task_id), encode(&t)),
                Op::Finding(f) => b.insert(key2(b"f:", f.job_id, f.cursor), encode(&f)),
                Op::Blob(sha, bytes) => b.insert(key_str(b"b:", &sha), bytes),
                Op::Minion(m) => b.insert(key_str(b"n:", &m.id), encode(&m)),
                Op::Request(rid, job) => b.insert(key_str(b"r:", &rid), &job.to_be_bytes()),
            }
        }
        self.db.apply_batch(b)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let key = key_str(b"m:", name);
        Ok(match self.db.get(&key)? {
            Some(v) => Some(u64::from_be_bytes(v.as_ref().try_into().map_err(|_| {
                StoreError::Corrupt {
                    key: format!("m:{name}"),
                    reason: "meta value is not 8 bytes".into(),
                }
            })?)),
            None => None,
        })
    }

    fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        self.scan(b"j:".to_vec())
    }

    fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.get(key1(b"j:", id))
    }

    fn spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError> {
        self.get(key1(b"s:", id))
    }

    fn tasks(&self, job: JobId) -> Result<Vec<TaskRecord>, StoreError> {
        self.scan(key1(b"t:", job))
    }

    fn task(&self, job: JobId, task: TaskId) -> Result<Option<TaskRecord>, StoreError> {
        self.get(key2(b"t:", job, task))
    }

    fn findings(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FindingRecord>, StoreError> {
        let start = key2(b"f:", job, after.saturating_add(1));
        let end = key2(b"f:", job, u64::MAX);
        let mut out = Vec::new();
        for kv in self.db.range(start..=end).take(limit) {
            let (k, v) = kv?;
            out.push(decode(&k, &v)?);
        }
        Ok(out)
    }

    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get(key_str(b"b:", sha256))?.map(|v| v.to_vec()))
    }

    fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
        self.scan(b"n:".to_vec())
    }

    fn requests(&self) -> Result<Vec<(String, JobId)>, StoreError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(b"r:") {
            let (k, v) = kv?;
            let id =
                u64::from_be_bytes(v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: "request value is not 8 bytes".into(),
                })?);
            out.push((String::from_utf8_lossy(&k[2..]).into_owned(), id));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::job::{RawSpec, TaskSpec, TaskState, prepare, root_plan};
    use overlord_core::scope::Scope;

    fn spec() -> JobSpec {
        let raw = RawSpec {
            targets: vec!["127.0.0.1".into()],
            ports: "22,80".into(),
            modules: vec!["portscan".into(), "banner".into()],
            ..Default::default()
        };
        prepare(&raw, &Scope::loopback(), &|_| Err("no dns".into())).unwrap()
    }

    fn task(job: u64, id: u64) -> TaskRecord {
        TaskRecord::new(TaskSpec {
            job_id: job,
            task_id: id,
            parent: None,
            module: "portscan".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            ports: vec![22, 80],
            input: None,
            params: serde_json::Value::Null,
            blob_sha256: None,
        })
    }

    #[test]
    fn roundtrip_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStore::open(dir.path()).unwrap();
            let sp = spec();
            let plan = root_plan(&sp).unwrap();
            let mut b = Batch::default();
            b.push(Op::Meta("epoch", 3));
            b.push(Op::Job(JobRecord::new(7, plan.total, 1, 100)));
            b.push(Op::Spec(7, Box::new(sp.clone())));
            for i in 0..3 {
                b.push(Op::Task(task(7, i)));
            }
            b.push(Op::Task(task(8, 0)));
            for c in 1..=5 {
                b.push(Op::Finding(FindingRecord {
                    cursor: c,
                    job_id: 7,
                    task_id: 0,
                    parent_task_id: None,
                    module: "portscan".into(),
                    kind: "open_port".into(),
                    target: Some("127.0.0.1".parse().unwrap()),
                    port: Some(c as u16),
                    data: serde_json::json!({}),
                    blob_sha256: None,
                    minion_id: "m1".into(),
                    provider: "p".into(),
                    started_at_ms: 1,
                    finished_at_ms: 2,
                    stored_at_ms: 3,
                }));
            }
            b.push(Op::Blob("abc".into(), vec![1, 2, 3]));
            b.push(Op::Minion(MinionRecord {
                id: "m1".into(),
                incarnation: "x".into(),
                generation: 2,
                provider: "p".into(),
            }));
            b.push(Op::Request("req-1".into(), 7));
            s.apply(b).unwrap();
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.requests().unwrap(), vec![("req-1".to_string(), 7)]);
        assert_eq!(s.meta("epoch").unwrap(), Some(3));
        assert_eq!(s.meta("nope").unwrap(), None);
        assert_eq!(s.jobs().unwrap().len(), 1);
        assert_eq!(s.spec(7).unwrap().unwrap(), spec());
        assert_eq!(s.tasks(7).unwrap().len(), 3);
        assert_eq!(s.tasks(8).unwrap().len(), 1);
        assert_eq!(s.task(7, 2).unwrap().unwrap().state, TaskState::Pending);
        let page = s.findings(7, 2, 2).unwrap();
        assert_eq!(
            page.iter().map(|f| f.cursor).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(s.findings(7, 5, 10).unwrap().len(), 0);
        assert_eq!(s.blob("abc").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(s.minions().unwrap()[0].generation, 2);
    }

    /// Frozen bytes of version-1 records: changing a record type must keep these decoding.
    #[test]
    fn frozen_v1_records_decode() {
        let task = b"\x01{\"spec\":{\"job_id\":1,\"task_id\":2,\"parent\":null,\"module\":\"portscan\",\"target\":\"127.0.0.1\",\"ports\":[22],\"input\":null,\"params\":null,\"blob_sha256\":null},\"state\":{\"s\":\"leased\",\"minion\":\"m\",\"generation\":1,\"token\":9,\"deadline_ms\":5},\"attempts\":1,\"last_minion\":null,\"last_provider\":null,\"last_error\":null}";
        let t: TaskRecord = decode(b"k", task).unwrap();
        assert_eq!(
            t.state,
            TaskState::Leased {
                minion: "m".into(),
                generation: 1,
                token: 9,
                deadline_ms: 5
            }
        );
        let job = b"\x01{\"id\":1,\"state\":\"running\",\"created_ms\":1,\"finished_ms\":0,\"perm_key\":3,\"root_total\":4,\"root_next\":2,\"next_task_id\":4,\"tasks_created\":2,\"done\":1,\"failed\":0,\"findings\":1,\"stale_rejected\":0}";
        let j: JobRecord = decode(b"k", job).unwrap();
        assert_eq!(j.active(), 1);
        assert!(matches!(
            decode::<JobRecord>(b"k", b"\x02{}"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            decode::<JobRecord>(b"k", b""),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
