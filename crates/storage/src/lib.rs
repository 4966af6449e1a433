//! overlord-storage: the coordinator's persistent state, behind the [`Store`] trait, over sled.
//!
//! ## Key layout (one sled tree, so a [`Batch`] is applied atomically)
//!
//! | key | value |
//! |---|---|
//! | `m:` + name | meta counter (u64 BE), e.g. `m:epoch`, `m:next_job` |
//! | `j:` + job id (u64 BE) | [`JobRecord`] (progress, small, rewritten often) |
//! | `s:` + job id | [`JobSpec`] (written once) |
//! | `t:` + job id + task id (u64 BE each) | [`TaskRecord`] (state incl. lease), or the done marker |
//! | `f:` + job id + cursor (u64 BE each) | [`FindingRecord`] |
//! | `b:` + sha256 hex | blob bytes (content-addressed, raw) |
//! | `n:` + minion id | [`MinionRecord`] (incarnation, generation) |
//! | `r:` + client request id | job id (u64 BE): idempotent submission |
//! | `c:` + reader + `\0` + job id | a reader's cursor in a job's findings (u64 BE), e.g. the firehose's last published |
//!
//! ## Record encoding
//! Every record starts with a version byte. Version 1 is `[1] ++ JSON` (every record type; still
//! written for jobs, specs and minions). Version 2 is a compact binary layout ([`compact`]) for the
//! hot records, tasks and findings (written several times per task); their decoders read both, so a
//! store written by an older coordinator keeps working. A task that finished is stored as the
//! one-byte done marker `[3]` ([`DONE_MARKER`]): nothing else about it is read again (its findings
//! carry the provenance). Tests keep frozen bytes of each version.
//!
//! ## Durability
//! `apply` makes a batch visible; it is durable only after `flush`. Callers group many batches per
//! flush and acknowledge nothing before the flush that covers it returns.

use overlord_core::job::{FindingRecord, JobRecord, JobSpec, TaskRecord};
use overlord_core::{JobId, TaskId};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::path::Path;
use std::sync::Arc;

pub mod compact;
pub mod kv;
mod mem;

pub use compact::FindingView;
pub use mem::MemStore;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Engine(Box::new(e))
    }
}

/// Version byte of JSON records.
pub const RECORD_VERSION: u8 = 1;
/// The whole value stored for a task that finished ([`Op::TaskDone`]), version byte 3.
pub const DONE_MARKER: &[u8] = &[3];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine under the store failed (I/O, its own corruption checks); its type stays hidden.
    #[error("storage engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// An operation this store or writer cannot perform (a caller's mistake, not data).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
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
// Most ops are task records: boxing them would add an allocation per write.
#[allow(clippy::large_enum_variant)]
pub enum Op {
    Meta(&'static str, u64),
    Job(JobRecord),
    Spec(JobId, Box<JobSpec>),
    Task(TaskRecord),
    /// A task finished: its record is replaced by the [`DONE_MARKER`].
    TaskDone(JobId, TaskId),
    /// Shared with the fan-out that publishes it once durable.
    Finding(Arc<FindingRecord>),
    Blob(String, Vec<u8>),
    Minion(MinionRecord),
    /// A client's submission request id → the job it created.
    Request(String, JobId),
    /// A reader of the findings (e.g. `firehose`) got as far as `cursor` in `job`.
    Cursor {
        reader: &'static str,
        job: JobId,
        cursor: u64,
    },
}

/// A stored task: its record, or only the fact that it finished ([`Op::TaskDone`]).
#[derive(Clone, Debug, PartialEq)]
// Read once per job at recovery; boxing would add an allocation per live task.
#[allow(clippy::large_enum_variant)]
pub enum StoredTask {
    Record(TaskRecord),
    Done(TaskId),
}

impl StoredTask {
    pub fn task_id(&self) -> TaskId {
        match self {
            StoredTask::Record(t) => t.spec.task_id,
            StoredTask::Done(id) => *id,
        }
    }
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
    fn tasks(&self, job: JobId) -> Result<Vec<StoredTask>, StoreError>;
    fn task(&self, job: JobId, task: TaskId) -> Result<Option<StoredTask>, StoreError>;
    /// Findings of `job` with cursor > `after`, at most `limit`, ascending.
    fn findings(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<FindingRecord>, StoreError>;
    /// Calls `f` on the findings of `job` with cursor > `after`, at most `limit`, ascending, each
    /// borrowed from the store ([`FindingView`]: no owned copy, `data` as its JSON text), until
    /// `f` returns false. For readers that pass findings on (the firehose).
    fn visit_findings(
        &self,
        job: JobId,
        after: u64,
        limit: usize,
        f: &mut dyn FnMut(&FindingView<'_>) -> bool,
    ) -> Result<(), StoreError>;
    fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn minions(&self) -> Result<Vec<MinionRecord>, StoreError>;
    /// Every (request id, job id) of accepted submissions.
    fn requests(&self) -> Result<Vec<(String, JobId)>, StoreError>;
    /// Every (job id, cursor) stored by `reader` with [`Op::Cursor`].
    fn cursors(&self, reader: &str) -> Result<Vec<(JobId, u64)>, StoreError>;
    /// The database the stores kept beside this one (image metadata, enrichment) use, when this
    /// store brings its own (the memory store: one in memory, shared by its clones); `None`:
    /// they open their own directory.
    fn companion_kv(&self) -> Option<kv::KvDb> {
        None
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    serde_json::to_writer(&mut out, v).expect("serializable record");
    out
}

/// A stored record type: how its versions decode.
pub trait Record: Sized {
    /// Decodes `body` (the bytes after the version byte) of a record of version `version`.
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, String>;
}

fn json_v1<T: DeserializeOwned>(version: u8, body: &[u8]) -> Result<T, String> {
    match version {
        RECORD_VERSION => serde_json::from_slice(body).map_err(|e| e.to_string()),
        v => Err(format!("unknown record version {v}")),
    }
}

macro_rules! json_record {
    ($($t:ty),*) => {$(
        impl Record for $t {
            fn decode_version(version: u8, body: &[u8]) -> Result<Self, String> {
                json_v1(version, body)
            }
        }
    )*};
}
json_record!(JobRecord, JobSpec, MinionRecord);

impl Record for TaskRecord {
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, String> {
        match version {
            compact::VERSION => compact::decode_task(body),
            v => json_v1(v, body),
        }
    }
}

impl Record for FindingRecord {
    fn decode_version(version: u8, body: &[u8]) -> Result<Self, String> {
        match version {
            compact::VERSION => compact::decode_finding(body),
            v => json_v1(v, body),
        }
    }
}

pub fn decode<T: Record>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    match bytes.split_first() {
        Some((v, rest)) => T::decode_version(*v, rest).map_err(corrupt),
        None => Err(corrupt("empty record".into())),
    }
}

/// Calls `f` on the stored finding `value` (at `key`): borrowed when compact, through an owned
/// decode for a version-1 (JSON) record.
fn view_finding(
    key: &[u8],
    value: &[u8],
    f: &mut dyn FnMut(&FindingView<'_>) -> bool,
) -> Result<bool, StoreError> {
    if let Some((&compact::VERSION, body)) = value.split_first() {
        let view = compact::view_finding(body).map_err(|reason| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        })?;
        return Ok(f(&view));
    }
    let rec: FindingRecord = decode(key, value)?;
    let data = serde_json::to_string(&rec.data).expect("a JSON value serializes");
    Ok(f(&FindingView::of(&rec, &data)))
}

/// Decodes a `t:` entry: the done marker or a task record.
fn stored_task(key: &[u8], value: &[u8]) -> Result<StoredTask, StoreError> {
    if value == DONE_MARKER {
        let id = key
            .len()
            .checked_sub(8)
            .map(|i| u64::from_be_bytes(key[i..].try_into().expect("8 bytes")))
            .ok_or_else(|| StoreError::Corrupt {
                key: String::from_utf8_lossy(key).into_owned(),
                reason: "task key too short".into(),
            })?;
        return Ok(StoredTask::Done(id));
    }
    decode(key, value).map(StoredTask::Record)
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

fn cursor_prefix(reader: &str) -> Vec<u8> {
    let mut k = key_str(b"c:", reader);
    k.push(0);
    k
}

fn key_str(prefix: &[u8], s: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(s.as_bytes());
    k
}

/// (key, value) pairs written together.
pub(crate) type Entries = Vec<(Vec<u8>, Vec<u8>)>;
/// Called on each visited entry; returns whether to go on.
pub(crate) type Visitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// The ordered byte-key engine under a [`Store`]. The key layout and record encodings above are
/// written once, over these operations; [`SledStore`] and [`MemStore`] only supply them, so both
/// keep the same order, cursors and versions.
pub(crate) trait Kv: Send + Sync + 'static {
    /// Makes every (key, value) visible at once (a reader sees all of them or none).
    fn write(&self, entries: Entries) -> Result<(), StoreError>;
    /// Makes everything written so far durable.
    fn sync(&self) -> Result<(), StoreError>;
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Calls `f` on every entry with key >= `start` that starts with `prefix`, ascending, until
    /// `f` returns false.
    fn visit(&self, start: &[u8], prefix: &[u8], f: &mut Visitor<'_>) -> Result<(), StoreError>;
}

/// How a batch's records are encoded: as this version writes them, or as the version-1 (JSON)
/// coordinator did (to build stores an upgrade must read; tests only).
#[derive(Clone, Copy, PartialEq)]
enum Writer {
    Current,
    JsonV1,
}

fn entries(batch: Batch, writer: Writer) -> Result<Entries, StoreError> {
    let mut out = Vec::with_capacity(batch.ops.len());
    for op in batch.ops {
        out.push(match op {
            Op::Meta(name, v) => (key_str(b"m:", name), v.to_be_bytes().to_vec()),
            Op::Job(j) => (key1(b"j:", j.id), encode(&j)),
            Op::Spec(id, s) => (key1(b"s:", id), encode(&*s)),
            Op::Task(t) => (
                key2(b"t:", t.spec.job_id, t.spec.task_id),
                match writer {
                    Writer::Current => compact::encode_task(&t),
                    Writer::JsonV1 => encode(&t),
                },
            ),
            Op::TaskDone(job, task) => {
                if writer == Writer::JsonV1 {
                    return Err(StoreError::Unsupported(
                        "version 1 has no done marker: store the task record in state done",
                    ));
                }
                (key2(b"t:", job, task), DONE_MARKER.to_vec())
            }
            Op::Finding(f) => (
                key2(b"f:", f.job_id, f.cursor),
                match writer {
                    Writer::Current => compact::encode_finding(&f),
                    Writer::JsonV1 => encode(&*f),
                },
            ),
            Op::Blob(sha, bytes) => (key_str(b"b:", &sha), bytes),
            Op::Minion(m) => (key_str(b"n:", &m.id), encode(&m)),
            Op::Request(rid, job) => (key_str(b"r:", &rid), job.to_be_bytes().to_vec()),
            Op::Cursor {
                reader,
                job,
                cursor,
            } => (
                key1(&cursor_prefix(reader), job),
                cursor.to_be_bytes().to_vec(),
            ),
        });
    }
    Ok(out)
}

fn scan<T: Record>(kv: &impl Kv, prefix: &[u8]) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    kv.visit(prefix, prefix, &mut |k, v| {
        out.push(decode(k, v)?);
        Ok(true)
    })?;
    Ok(out)
}

fn get<T: Record>(kv: &impl Kv, key: Vec<u8>) -> Result<Option<T>, StoreError> {
    match kv.get(&key)? {
        Some(v) => Ok(Some(decode(&key, &v)?)),
        None => Ok(None),
    }
}

fn be_u64(key: &[u8], v: &[u8], what: &str) -> Result<u64, StoreError> {
    Ok(u64::from_be_bytes(v.try_into().map_err(|_| {
        StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason: format!("{what} is not 8 bytes"),
        }
    })?))
}

/// The [`Store`] methods over any [`Kv`]: one key layout, one set of decoders.
macro_rules! kv_store {
    ($t:ty) => {
        impl Store for $t {
            fn apply(&self, batch: Batch) -> Result<(), StoreError> {
                self.kv().write(entries(batch, Writer::Current)?)
            }

            fn flush(&self) -> Result<(), StoreError> {
                self.kv().sync()
            }

            fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
                let key = key_str(b"m:", name);
                match self.kv().get(&key)? {
                    Some(v) => be_u64(&key, &v, "meta value").map(Some),
                    None => Ok(None),
                }
            }

            fn jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
                scan(self.kv(), b"j:")
            }

            fn job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
                get(self.kv(), key1(b"j:", id))
            }

            fn spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError> {
                get(self.kv(), key1(b"s:", id))
            }

            fn tasks(&self, job: JobId) -> Result<Vec<StoredTask>, StoreError> {
                let mut out = Vec::new();
                let prefix = key1(b"t:", job);
                self.kv().visit(&prefix, &prefix, &mut |k, v| {
                    out.push(stored_task(k, v)?);
                    Ok(true)
                })?;
                Ok(out)
            }

            fn task(&self, job: JobId, task: TaskId) -> Result<Option<StoredTask>, StoreError> {
                let key = key2(b"t:", job, task);
                match self.kv().get(&key)? {
                    Some(v) => Ok(Some(stored_task(&key, &v)?)),
                    None => Ok(None),
                }
            }

            fn findings(
                &self,
                job: JobId,
                after: u64,
                limit: usize,
            ) -> Result<Vec<FindingRecord>, StoreError> {
                let mut out = Vec::new();
                if limit == 0 || after == u64::MAX {
                    return Ok(out);
                }
                self.kv().visit(
                    &key2(b"f:", job, after + 1),
                    &key1(b"f:", job),
                    &mut |k, v| {
                        out.push(decode(k, v)?);
                        Ok(out.len() < limit)
                    },
                )?;
                Ok(out)
            }

            fn visit_findings(
                &self,
                job: JobId,
                after: u64,
                limit: usize,
                f: &mut dyn FnMut(&FindingView<'_>) -> bool,
            ) -> Result<(), StoreError> {
                if limit == 0 || after == u64::MAX {
                    return Ok(());
                }
                let mut seen = 0;
                self.kv().visit(
                    &key2(b"f:", job, after + 1),
                    &key1(b"f:", job),
                    &mut |k, v| {
                        seen += 1;
                        let go = view_finding(k, v, &mut *f)?;
                        Ok(go && seen < limit)
                    },
                )
            }

            fn blob(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.kv().get(&key_str(b"b:", sha256))
            }

            fn minions(&self) -> Result<Vec<MinionRecord>, StoreError> {
                scan(self.kv(), b"n:")
            }

            fn requests(&self) -> Result<Vec<(String, JobId)>, StoreError> {
                let mut out = Vec::new();
                self.kv().visit(b"r:", b"r:", &mut |k, v| {
                    let id = be_u64(k, v, "request value")?;
                    out.push((String::from_utf8_lossy(&k[2..]).into_owned(), id));
                    Ok(true)
                })?;
                Ok(out)
            }

            fn companion_kv(&self) -> Option<kv::KvDb> {
                self.companion()
            }

            fn cursors(&self, reader: &str) -> Result<Vec<(JobId, u64)>, StoreError> {
                let prefix = cursor_prefix(reader);
                let mut out = Vec::new();
                self.kv().visit(&prefix, &prefix, &mut |k, v| {
                    let job = be_u64(k, &k[prefix.len()..], "cursor key's job id")?;
                    out.push((job, be_u64(k, v, "cursor value")?));
                    Ok(true)
                })?;
                Ok(out)
            }
        }

        impl $t {
            /// Applies `batch` encoded as the version-1 (JSON) coordinator wrote it: the stores an
            /// upgrade must keep reading, built through this API (tests of upgrades).
            pub fn apply_as_json_v1(&self, batch: Batch) -> Result<(), StoreError> {
                self.kv().write(entries(batch, Writer::JsonV1)?)
            }
        }
    };
}

/// The sled implementation.
pub struct SledStore {
    db: sled::Db,
}

/// Opens a sled database, waiting up to 5 s for its file lock: sled's threads keep a just-dropped
/// database, and its lock, alive for a moment, so a reopen right after a drop (an in-process
/// restart, a test) would otherwise fail with "could not acquire lock ... WouldBlock" (seen in CI).
pub fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            opened => return opened,
        }
    }
}

impl SledStore {
    /// The stores beside this one open their own directories.
    fn companion(&self) -> Option<kv::KvDb> {
        None
    }

    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = open_sled(
            &sled::Config::new()
                .path(dir)
                .cache_capacity(256 * 1024 * 1024)
                .mode(sled::Mode::HighThroughput)
                .flush_every_ms(None),
        )?;
        Ok(SledStore { db })
    }

    fn kv(&self) -> &sled::Db {
        &self.db
    }
}

impl Kv for sled::Db {
    fn write(&self, entries: Entries) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in entries {
            b.insert(k, v);
        }
        self.apply_batch(b)?;
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.flush()?;
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sled::Tree::get(self, key)?.map(|v| v.to_vec()))
    }

    fn visit(&self, start: &[u8], prefix: &[u8], f: &mut Visitor<'_>) -> Result<(), StoreError> {
        for kv in self.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(prefix) || !f(&k, &v)? {
                break;
            }
        }
        Ok(())
    }
}

kv_store!(SledStore);
kv_store!(MemStore);

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::job::{RawSpec, TaskSpec, TaskState, prepare, root_plan};
    use overlord_core::scope::Scope;

    /// A backend under test, and how it restarts: sled reopens its directory; the memory store
    /// keeps what was flushed ([`MemStore::after_crash`]). Every contract test runs on both.
    enum Backend {
        Sled(tempfile::TempDir),
        Mem(std::cell::RefCell<MemStore>),
    }

    enum Opened {
        Sled(SledStore),
        Mem(MemStore),
    }

    impl std::ops::Deref for Opened {
        type Target = dyn Store;
        fn deref(&self) -> &dyn Store {
            match self {
                Opened::Sled(s) => s,
                Opened::Mem(s) => s,
            }
        }
    }

    impl Opened {
        fn apply_v1(&self, b: Batch) -> Result<(), StoreError> {
            match self {
                Opened::Sled(s) => s.apply_as_json_v1(b),
                Opened::Mem(s) => s.apply_as_json_v1(b),
            }
        }
        fn raw(&self, key: &[u8]) -> Option<Vec<u8>> {
            match self {
                Opened::Sled(s) => s.kv().get(key).unwrap(),
                Opened::Mem(s) => s.kv().get(key).unwrap(),
            }
        }
    }

    impl Backend {
        fn all() -> Vec<Backend> {
            vec![
                Backend::Sled(tempfile::tempdir().unwrap()),
                Backend::Mem(Default::default()),
            ]
        }
        /// Opens (first call) or restarts the store.
        fn open(&self) -> Opened {
            match self {
                Backend::Sled(dir) => Opened::Sled(SledStore::open(dir.path()).unwrap()),
                Backend::Mem(cur) => {
                    let next = cur.borrow().after_crash();
                    *cur.borrow_mut() = next.clone();
                    Opened::Mem(next)
                }
            }
        }
    }

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
            target_count: 1,
            ports: vec![22, 80],
            input: None,
            params: serde_json::Value::Null,
            blob_sha256: None,
            ranges: Vec::new(),
        })
    }

    #[test]
    fn roundtrip_and_reopen() {
        for b in Backend::all() {
            roundtrip_and_reopen_on(b);
        }
    }

    fn roundtrip_and_reopen_on(backend: Backend) {
        {
            let s = backend.open();
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
                b.push(Op::Finding(Arc::new(FindingRecord {
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
                })));
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
        let s = backend.open();
        assert_eq!(s.requests().unwrap(), vec![("req-1".to_string(), 7)]);
        assert_eq!(s.meta("epoch").unwrap(), Some(3));
        assert_eq!(s.meta("nope").unwrap(), None);
        assert_eq!(s.jobs().unwrap().len(), 1);
        assert_eq!(s.spec(7).unwrap().unwrap(), spec());
        assert_eq!(s.tasks(7).unwrap().len(), 3);
        assert_eq!(s.tasks(8).unwrap().len(), 1);
        assert!(matches!(
            s.task(7, 2).unwrap().unwrap(),
            StoredTask::Record(TaskRecord {
                state: TaskState::Pending,
                ..
            })
        ));
        let page = s.findings(7, 2, 2).unwrap();
        assert_eq!(
            page.iter().map(|f| f.cursor).collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(s.findings(7, 5, 10).unwrap().len(), 0);
        assert_eq!(s.blob("abc").unwrap(), Some(vec![1, 2, 3]));
        assert_eq!(s.minions().unwrap()[0].generation, 2);
    }

    /// The contracts the coordinator relies on, on every backend: findings ascend by cursor within
    /// one job and never cross into the next, paging by `after`/`limit` sees each once, a later
    /// write replaces a record, and a batch is seen whole or not at all by a concurrent reader.
    #[test]
    fn contracts_hold_on_every_backend() {
        for backend in Backend::all() {
            let s = Arc::new(backend.open());
            let mut b = Batch::default();
            // Written out of order, over three jobs (ids whose bytes neighbour each other).
            for c in [5u64, 1, 300, 2, 256, 4, 3] {
                for job in [1u64, 2, 256] {
                    b.push(Op::Finding(Arc::new(finding(job, c))));
                }
            }
            s.apply(b).unwrap();
            let mut seen = Vec::new();
            let mut after = 0;
            loop {
                let page = s.findings(2, after, 2).unwrap();
                if page.is_empty() {
                    break;
                }
                assert!(page.len() <= 2);
                assert!(page.iter().all(|f| f.job_id == 2));
                after = page.last().unwrap().cursor;
                seen.extend(page.iter().map(|f| f.cursor));
            }
            assert_eq!(seen, vec![1, 2, 3, 4, 5, 256, 300]);
            assert!(s.findings(2, 300, 10).unwrap().is_empty());
            assert!(s.findings(2, 0, 0).unwrap().is_empty());
            assert!(s.findings(3, 0, 10).unwrap().is_empty());
            // A later write replaces; a done marker replaces a record.
            let mut t = task(4, 1);
            let mut b = Batch::default();
            b.push(Op::Task(t.clone()));
            s.apply(b).unwrap();
            t.attempts = 3;
            let mut b = Batch::default();
            b.push(Op::Task(t.clone()));
            b.push(Op::TaskDone(4, 2));
            s.apply(b).unwrap();
            assert_eq!(
                s.tasks(4).unwrap(),
                vec![StoredTask::Record(t), StoredTask::Done(2)]
            );
            // Atomic batches: 50 tasks at a time, never seen in part.
            let writer = {
                let s = s.clone();
                std::thread::spawn(move || {
                    for round in 0..40u64 {
                        let mut b = Batch::default();
                        for i in 0..50 {
                            b.push(Op::Task(task(9, round * 50 + i)));
                        }
                        s.apply(b).unwrap();
                    }
                })
            };
            loop {
                let n = s.tasks(9).unwrap().len();
                assert_eq!(n % 50, 0, "a reader saw part of a batch ({n} tasks)");
                if n == 2000 {
                    break;
                }
            }
            writer.join().unwrap();
        }
    }

    /// The memory store keeps sled's durability contract: what was not flushed is gone after a
    /// crash, what was flushed stays.
    #[test]
    fn mem_store_keeps_only_flushed_writes_across_a_crash() {
        let s = MemStore::new();
        let mut b = Batch::default();
        b.push(Op::Meta("epoch", 1));
        s.apply(b).unwrap();
        s.flush().unwrap();
        let mut b = Batch::default();
        b.push(Op::Meta("epoch", 2));
        b.push(Op::Request("r".into(), 4));
        s.apply(b).unwrap();
        assert_eq!(s.meta("epoch").unwrap(), Some(2));
        let after = s.after_crash();
        assert_eq!(after.meta("epoch").unwrap(), Some(1));
        assert!(after.requests().unwrap().is_empty());
        s.flush().unwrap();
        assert_eq!(s.after_crash().meta("epoch").unwrap(), Some(2));
        // A clone is the same store (a reopen after a graceful stop).
        assert_eq!(s.clone().requests().unwrap(), vec![("r".to_string(), 4)]);
    }

    #[test]
    fn reader_cursors_are_per_reader_and_survive_reopen() {
        for backend in Backend::all() {
            {
                let s = backend.open();
                let mut b = Batch::default();
                for (job, cursor) in [(2, 10), (1, 5), (2, 12)] {
                    b.push(Op::Cursor {
                        reader: "firehose",
                        job,
                        cursor,
                    });
                }
                // A reader whose name extends another's is a different reader.
                b.push(Op::Cursor {
                    reader: "firehose2",
                    job: 1,
                    cursor: 99,
                });
                s.apply(b).unwrap();
                s.flush().unwrap();
            }
            let s = backend.open();
            assert_eq!(s.cursors("firehose").unwrap(), vec![(1, 5), (2, 12)]);
            assert_eq!(s.cursors("firehose2").unwrap(), vec![(1, 99)]);
            assert!(s.cursors("fire").unwrap().is_empty());
        }
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
                deadline_ms: 5,
                rate: 0,
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

    fn finding(job: u64, cursor: u64) -> FindingRecord {
        FindingRecord {
            cursor,
            job_id: job,
            task_id: cursor,
            parent_task_id: Some(1),
            module: "banner".into(),
            kind: "banner".into(),
            target: Some("::1".parse().unwrap()),
            port: Some(8080),
            data: serde_json::json!({"banner": "SSH-2.0-x\r\n", "n": [1, 2.5, null]}),
            blob_sha256: Some("ab".repeat(32)),
            minion_id: "m-1".into(),
            provider: "p".into(),
            started_at_ms: 1_700_000_000_000,
            finished_at_ms: 1_700_000_000_001,
            stored_at_ms: u64::MAX,
        }
    }

    fn all_states() -> Vec<TaskState> {
        vec![
            TaskState::Pending,
            TaskState::Leased {
                minion: "minion-ü".into(),
                generation: 3,
                token: (7 << 40) | 12345,
                deadline_ms: 1_700_000_000_000,
                rate: 0,
            },
            TaskState::Done,
            TaskState::Failed {
                reason: "refused".into(),
            },
            TaskState::Cancelled,
        ]
    }

    #[test]
    fn compact_records_roundtrip() {
        let mut t = task(u64::MAX, 1 << 40);
        t.spec.parent = Some(3);
        t.spec.input = Some("/tmp/conn.log".into());
        t.spec.params = serde_json::json!({"screenshot": "vnc", "x": [1, {"y": null}]});
        t.spec.blob_sha256 = Some("cd".repeat(32));
        t.spec.ports = (0..=65535).step_by(4099).collect();
        t.attempts = 2;
        t.last_minion = Some("m".into());
        t.last_provider = Some(String::new());
        t.last_error = Some("timeout".into());
        for state in all_states() {
            for target in [
                None,
                Some("10.1.2.3".parse().unwrap()),
                Some("::1".parse().unwrap()),
            ] {
                let mut t = t.clone();
                t.state = state.clone();
                t.spec.target = target;
                let bytes = compact::encode_task(&t);
                assert_eq!(bytes[0], compact::VERSION);
                assert_eq!(decode::<TaskRecord>(b"k", &bytes).unwrap(), t);
                // Every strict prefix is refused, and so are trailing bytes.
                for cut in 0..bytes.len() {
                    assert!(
                        decode::<TaskRecord>(b"k", &bytes[..cut]).is_err(),
                        "cut {cut}"
                    );
                }
                let mut long = bytes.clone();
                long.push(0);
                assert!(decode::<TaskRecord>(b"k", &long).is_err());
            }
        }
        let bare = task(1, 2);
        assert_eq!(
            decode::<TaskRecord>(b"k", &compact::encode_task(&bare)).unwrap(),
            bare
        );
        let f = finding(9, 4);
        let bytes = compact::encode_finding(&f);
        assert_eq!(decode::<FindingRecord>(b"k", &bytes).unwrap(), f);
        for cut in 0..bytes.len() {
            assert!(decode::<FindingRecord>(b"k", &bytes[..cut]).is_err());
        }
        let mut g = f.clone();
        g.parent_task_id = None;
        g.target = None;
        g.port = None;
        g.data = serde_json::Value::Null;
        g.blob_sha256 = None;
        assert_eq!(
            decode::<FindingRecord>(b"k", &compact::encode_finding(&g)).unwrap(),
            g
        );
        // The compact form is what makes it worth it: a no-op task's records shrink ~5x.
        let noop = TaskRecord {
            state: all_states()[1].clone(),
            ..task(1, 70_000)
        };
        assert!(compact::encode_task(&noop).len() * 4 < encode(&noop).len());
    }

    /// A lease's rate share (tag 5) round-trips; without one the record keeps tag 1, the bytes
    /// older records hold.
    #[test]
    fn lease_rate_round_trips_in_the_compact_record() {
        let mut t = TaskRecord::new(overlord_core::job::TaskSpec {
            job_id: 1,
            task_id: 2,
            parent: None,
            module: "portscan".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports: vec![22],
            input: None,
            params: serde_json::Value::Null,
            blob_sha256: None,
            ranges: Vec::new(),
        });
        for rate in [0, 1, 250, u32::MAX] {
            t.state = TaskState::Leased {
                minion: "m".into(),
                generation: 1,
                token: 9,
                deadline_ms: 5,
                rate,
            };
            let bytes = compact::encode_task(&t);
            let back: TaskRecord = decode(b"k", &bytes).unwrap();
            assert_eq!(back, t, "rate {rate}");
        }
    }

    /// Frozen bytes of version-2 records: changing the layout must keep these decoding.
    #[test]
    fn frozen_v2_records_decode() {
        let task = b"\x02\x01\x02\x00\x08portscan\x04\x7f\x00\x00\x01\x01\x16\x00\x00\x00\x00\x01\x01m\x01\x09\x05\x01\x00\x00\x00";
        let t: TaskRecord = decode(b"k", task).unwrap();
        assert_eq!(t.spec.target, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(t.spec.ports, vec![22]);
        assert_eq!(
            t.state,
            TaskState::Leased {
                minion: "m".into(),
                generation: 1,
                token: 9,
                deadline_ms: 5,
                rate: 0,
            }
        );
        assert_eq!(t.attempts, 1);
        assert_eq!(&compact::encode_task(&t)[..], &task[..]);
        let finding =
            b"\x02\x03\x01\x02\x00\x04noop\x04noop\x00\x00\x07{\"i\":1}\x00\x01m\x01p\x01\x02\x03";
        let f: FindingRecord = decode(b"k", finding).unwrap();
        assert_eq!((f.cursor, f.job_id, f.task_id), (3, 1, 2));
        assert_eq!(f.data, serde_json::json!({"i": 1}));
        assert_eq!(
            (f.started_at_ms, f.finished_at_ms, f.stored_at_ms),
            (1, 2, 3)
        );
        assert_eq!(&compact::encode_finding(&f)[..], &finding[..]);
        // The done marker is the task key's whole value.
        assert_eq!(DONE_MARKER, b"\x03");
        assert!(decode::<TaskRecord>(b"k", DONE_MARKER).is_err());
        assert_eq!(
            stored_task(&key2(b"t:", 1, 77), DONE_MARKER).unwrap(),
            StoredTask::Done(77)
        );
        // JSON records have no version 2.
        assert!(matches!(
            decode::<JobRecord>(b"k", b"\x02\x01"),
            Err(StoreError::Corrupt { .. })
        ));
    }

    /// A store written by a coordinator that wrote JSON (version 1) task and finding records:
    /// after the upgrade it reads them, and records rewritten as version 2 sit beside them.
    #[test]
    fn store_with_v1_records_reads_after_upgrade() {
        for backend in Backend::all() {
            store_with_v1_records_reads_after_upgrade_on(backend);
        }
    }

    fn store_with_v1_records_reads_after_upgrade_on(backend: Backend) {
        let states = all_states();
        {
            let s = backend.open();
            // Exactly what the JSON-writing `apply` stored.
            let mut b = Batch::default();
            for (i, st) in states.iter().enumerate() {
                let mut t = task(5, i as u64 + 1);
                t.state = st.clone();
                b.push(Op::Task(t));
            }
            for c in 1..=3 {
                b.push(Op::Finding(Arc::new(finding(5, c))));
            }
            s.apply_v1(b).unwrap();
            let mut done = Batch::default();
            done.push(Op::TaskDone(5, 1));
            assert!(matches!(s.apply_v1(done), Err(StoreError::Unsupported(_))));
            assert_eq!(
                s.raw(&key2(b"t:", 5, 1)).unwrap(),
                encode(&{
                    let mut t = task(5, 1);
                    t.state = states[0].clone();
                    t
                })
            );
            s.flush().unwrap();
        }
        let s = backend.open();
        let tasks: Vec<TaskRecord> = s
            .tasks(5)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                StoredTask::Record(t) => t,
                StoredTask::Done(id) => panic!("task {id} read as a done marker"),
            })
            .collect();
        assert_eq!(
            tasks.iter().map(|t| t.state.clone()).collect::<Vec<_>>(),
            states
        );
        assert_eq!(
            s.findings(5, 0, 10).unwrap(),
            vec![finding(5, 1), finding(5, 2), finding(5, 3)]
        );
        // The upgraded coordinator goes on: the pending task is leased (v2 record), the leased
        // one finishes (done marker) and a fourth finding is stored; old and new records read
        // together.
        let mut t = tasks[0].clone();
        t.state = states[1].clone();
        let mut b = Batch::default();
        b.push(Op::Task(t.clone()));
        b.push(Op::TaskDone(5, 2));
        b.push(Op::Finding(Arc::new(finding(5, 4))));
        s.apply(b).unwrap();
        s.flush().unwrap();
        drop(s);
        let s = backend.open();
        assert_eq!(
            s.task(5, 1).unwrap().unwrap(),
            StoredTask::Record(t.clone())
        );
        assert_eq!(s.task(5, 2).unwrap().unwrap(), StoredTask::Done(2));
        assert_eq!(s.raw(&key2(b"t:", 5, 1)).unwrap()[0], compact::VERSION);
        assert_eq!(s.raw(&key2(b"t:", 5, 3)).unwrap()[0], RECORD_VERSION);
        let all = s.tasks(5).unwrap();
        assert_eq!(all.len(), states.len());
        assert_eq!(
            all.iter().map(StoredTask::task_id).collect::<Vec<_>>(),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(all[0], StoredTask::Record(t));
        assert_eq!(all[1], StoredTask::Done(2));
        assert!(matches!(&all[2], StoredTask::Record(r) if r.state == TaskState::Done));
        let all = s.findings(5, 0, 10).unwrap();
        assert_eq!(
            all.iter().map(|f| f.cursor).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(all[3], finding(5, 4));
    }

    /// An owned copy of a view (`data` parsed), to compare with what `findings` decodes.
    fn owned(v: &FindingView<'_>) -> FindingRecord {
        FindingRecord {
            cursor: v.cursor,
            job_id: v.job_id,
            task_id: v.task_id,
            parent_task_id: v.parent_task_id,
            module: v.module.into(),
            kind: v.kind.into(),
            target: v.target,
            port: v.port,
            data: serde_json::from_str(v.data).unwrap(),
            blob_sha256: v.blob_sha256.map(Into::into),
            minion_id: v.minion_id.into(),
            provider: v.provider.into(),
            started_at_ms: v.started_at_ms,
            finished_at_ms: v.finished_at_ms,
            stored_at_ms: v.stored_at_ms,
        }
    }

    /// `visit_findings` sees exactly what `findings` decodes, compact and version-1 records, on
    /// every backend; it pages by `after`/`limit` the same way and stops when asked to.
    #[test]
    fn finding_views_are_the_decoded_findings() {
        for backend in Backend::all() {
            let s = backend.open();
            let mut compact = Batch::default();
            let mut v1 = Batch::default();
            for c in 1..=6 {
                let mut f = finding(1, c);
                match c {
                    2 => f.data = serde_json::Value::Null,
                    3 => {
                        (f.target, f.port, f.parent_task_id, f.blob_sha256) =
                            (None, None, None, None);
                        f.data = serde_json::json!("quote \" and \u{e9}");
                    }
                    _ => {}
                }
                let mut old = f.clone();
                old.job_id = 2;
                compact.push(Op::Finding(Arc::new(f)));
                v1.push(Op::Finding(Arc::new(old)));
            }
            s.apply(compact).unwrap();
            s.apply_v1(v1).unwrap();
            for job in [1, 2] {
                for (after, limit) in [(0, 10), (1, 3), (5, 1), (6, 4), (0, 0)] {
                    let want = s.findings(job, after, limit).unwrap();
                    let mut got = Vec::new();
                    s.visit_findings(job, after, limit, &mut |v| {
                        got.push(owned(v));
                        true
                    })
                    .unwrap();
                    assert_eq!(got, want, "job {job} after {after} limit {limit}");
                }
                let mut n = 0;
                s.visit_findings(job, 0, 10, &mut |_| {
                    n += 1;
                    n < 2
                })
                .unwrap();
                assert_eq!(n, 2, "stops when the visitor says so");
            }
            let mut null = None;
            s.visit_findings(1, 1, 1, &mut |v| {
                null = Some(v.data.to_string());
                true
            })
            .unwrap();
            assert_eq!(null.as_deref(), Some("null"));
        }
    }

    /// A stored payload that is not one JSON value is a corrupt record, never passed on.
    #[test]
    fn a_finding_view_checks_its_json() {
        let mut f = finding(1, 1);
        f.data = serde_json::json!("ab");
        let bytes = compact::encode_finding(&f);
        assert_eq!(
            compact::view_finding(&bytes[1..]).unwrap(),
            FindingView::of(&f, "\"ab\"")
        );
        let at = bytes.windows(4).position(|w| w == b"\"ab\"").unwrap();
        let mut bad = bytes.clone();
        bad[at + 3] = b'x';
        assert!(
            compact::view_finding(&bad[1..])
                .unwrap_err()
                .contains("JSON")
        );
        let mut short = bytes.clone();
        short.pop();
        assert!(compact::view_finding(&short[1..]).is_err());
    }
}
