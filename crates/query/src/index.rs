//! The tantivy index: one document per service row ([`ServiceState`]), upserted by (job,
//! address, port) as findings are folded in.
//!
//! ## Durability: derived state
//! The index is derived from the job store. Each commit carries, in tantivy's commit payload,
//! the highest finding cursor folded in per job (written atomically with the documents). On open
//! the indexer resumes every job from those cursors, so after `kill -9` the findings after the
//! last commit are folded again from the store. A directory that does not open (deleted, corrupt,
//! other schema version) is removed and rebuilt from the store.
//!
//! ## Upserts
//! A row is identified by (job, address, port): the columns it is indexed by anyway. No term
//! names a row (a unique term per row cost 5-10 % of ingest: every segment's dictionary and every
//! merge carried one more term per row, see the Query section of DESIGN), so a row is found
//! through its address's postings, filtered by the job and port columns ([`row_docs`]).
//! Rows changed since the last commit live in `pending`; a row not pending is loaded from the
//! committed index unless its job has nothing committed yet (then it is new). Changed rows are
//! handed to tantivy's indexing thread in batches of [`OP_BATCH`] as they accumulate (so it
//! indexes while the next findings are folded) and the rest at commit; a row written before
//! (committed, or handed over since the last commit) is deleted first ([`RowId`]). A row
//! without an address is keyed by its finding's cursor: it is written once, never updated.
//! Nothing handed over is visible or durable before the commit that also records the cursors.

use crate::state::{ExtValue, Observation, Provenance, ServiceState};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tantivy::InvertedIndexReader;
use tantivy::indexer::UserOperation;
use tantivy::schema::{
    FAST, Field, IndexRecordOption, IpAddrOptions, JsonObjectOptions, NumericOptions, OwnedValue,
    STORED, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{LowerCaser, RawTokenizer, TextAnalyzer};
use tantivy::{DateTime, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Bumped when the schema or the row format changes: an index of another version is rebuilt.
pub const INDEX_VERSION: u32 = 5;
/// Commit after this many pending rows or this long after the first uncommitted change. Pending
/// rows are folded states held in memory: this bounds what the index adds to the coordinator's
/// memory under a flood of results (with the writer's arena below). Each commit also ends the
/// indexing threads' segments: 200 k / 2 s instead of 100 k / 1 s makes a flood write half as
/// many segments (each rebuilds the shared vocabulary's dictionaries and columns and is merged
/// again), for ~7 % less CPU per finding and a few hundred MiB more during a flood (figures in
/// DESIGN, Query section); searches see a result at most 2 s after it is folded.
pub const COMMIT_ROWS: usize = 200_000;
pub const COMMIT_INTERVAL: Duration = Duration::from_millis(2000);
/// How often an idle index reloads its searcher to pick up finished merges.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
/// The writer's indexing arenas: tantivy splits the budget over its indexing threads (64 MiB
/// each). Two threads: indexing a row costs about twice what folding and building it does
/// (measured: ~11 us vs ~5 us of CPU per finding), so with one thread the folding thread waited
/// on it; two let the pipeline use both cores of a small coordinator (1.3x ingest measured under
/// load 7.5 on 2 cores).
const WRITER_BUDGET: usize = 128 << 20;
const WRITER_THREADS: usize = 2;
/// Operations handed to the indexing thread at once.
const OP_BATCH: usize = 512;
/// Segments of one size merged at once (tantivy's default is 8). Each merge rewrites every row
/// it takes in, and at 10 M rows merging cost as much CPU as a third of indexing: with 16, a
/// row of a flood is rewritten about once on its way to a ~1 M-row segment instead of twice,
/// for up to twice as many segments per size class (measured in the Query section of DESIGN).
const MERGE_MIN_SEGMENTS: usize = 16;
/// tantivy's merge threads (its default count and thread names), lowered once found: see
/// [`crate::priority`].
const MERGE_THREADS: usize = 4;
pub const MERGE_THREAD_NAME: &str = "merge_thread_";

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index directory {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("stored row: {0}")]
    Row(String),
}

impl From<std::io::Error> for IndexError {
    fn from(e: std::io::Error) -> Self {
        IndexError::Tantivy(e.into())
    }
}

/// The schema's fields by name (see [`crate::fields::BUILTIN`] for the query names).
#[derive(Clone)]
pub struct Fields {
    pub state: Field,
    pub text: Field,
    pub ext: Field,
    pub chash: Field,
    pub open: Field,
    by_name: HashMap<&'static str, Field>,
    /// The columns a document is built from, resolved once (a name lookup per value was a
    /// measurable share of ingest).
    cols: Cols,
}

#[derive(Clone)]
struct Cols {
    transport: Field,
    service: Field,
    product: Field,
    version: Field,
    cpe: Field,
    http_server: Field,
    tls_subject: Field,
    tls_issuer: Field,
    tls_sha256: Field,
    ssh_hassh: Field,
    ssh_key: Field,
    logo: Field,
    tag: Field,
    email: Field,
    leak: Field,
    module: Field,
    minion: Field,
    provider: Field,
    banner: Field,
    http_title: Field,
    screen_text: Field,
    port: Field,
    http_status: Field,
    faces: Field,
    job: Field,
    tls_expired: Field,
    tls_self_signed: Field,
    has_screenshot: Field,
    first_seen: Field,
    last_seen: Field,
    ip: Field,
}

impl Cols {
    fn new(m: &HashMap<&'static str, Field>) -> Cols {
        let f = |n: &str| *m.get(n).unwrap_or_else(|| panic!("no index column {n}"));
        Cols {
            transport: f("transport"),
            service: f("service"),
            product: f("product"),
            version: f("version"),
            cpe: f("cpe"),
            http_server: f("http_server"),
            tls_subject: f("tls_subject"),
            tls_issuer: f("tls_issuer"),
            tls_sha256: f("tls_sha256"),
            ssh_hassh: f("ssh_hassh"),
            ssh_key: f("ssh_key"),
            logo: f("logo"),
            tag: f("tag"),
            email: f("email"),
            leak: f("leak"),
            module: f("module"),
            minion: f("minion"),
            provider: f("provider"),
            banner: f("banner"),
            http_title: f("http_title"),
            screen_text: f("screen_text"),
            port: f("port"),
            http_status: f("http_status"),
            faces: f("faces"),
            job: f("job"),
            tls_expired: f("tls_expired"),
            tls_self_signed: f("tls_self_signed"),
            has_screenshot: f("has_screenshot"),
            first_seen: f("first_seen"),
            last_seen: f("last_seen"),
            ip: f("ip"),
        }
    }
}

impl Fields {
    pub fn get(&self, name: &str) -> Field {
        *self
            .by_name
            .get(name)
            .unwrap_or_else(|| panic!("no index column {name}"))
    }
}

const KEYWORDS: &[&str] = &[
    "transport",
    "service",
    "product",
    "version",
    "cpe",
    "http_server",
    "tls_subject",
    "tls_issuer",
    "tls_sha256",
    "ssh_hassh",
    "ssh_key",
    "logo",
    "tag",
    "email",
    "leak",
    "module",
    "minion",
    "provider",
];
const TEXTS: &[&str] = &["banner", "http_title", "screen_text"];
/// The text columns free text searches besides `text` (which holds only the short values).
pub const FREE_TEXT: &[&str] = TEXTS;
const U64S: &[&str] = &["port", "http_status", "faces", "job"];
const BOOLS: &[&str] = &["tls_expired", "tls_self_signed", "has_screenshot"];
const DATES: &[&str] = &["first_seen", "last_seen"];
/// Tokenizer of keyword columns: the whole value, lower-cased.
pub const KW: &str = "kw";

pub fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let mut by_name = HashMap::new();
    let state = b.add_bytes_field("state", STORED);
    let kw_opts = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(KW)
                .set_index_option(IndexRecordOption::Basic)
                // keyword matches are not scored: no per-document norm to record
                .set_fieldnorms(false),
        )
        .set_fast("raw");
    for n in KEYWORDS {
        by_name.insert(*n, b.add_text_field(n, kw_opts.clone()));
    }
    let text_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    for n in TEXTS {
        by_name.insert(*n, b.add_text_field(n, text_opts.clone()));
    }
    let text = b.add_text_field("text", text_opts);
    // `INDEXED` also records a per-document norm, which nothing scores on these columns
    let num = || NumericOptions::default().set_indexed().set_fast();
    for n in U64S {
        by_name.insert(*n, b.add_u64_field(n, num()));
    }
    for n in BOOLS {
        by_name.insert(*n, b.add_bool_field(n, num()));
    }
    // Dates are only ever queried as ranges, which tantivy answers from the fast column; an
    // inverted index of them added two near-unique terms per row (a measured ingest cost).
    for n in DATES {
        by_name.insert(*n, b.add_date_field(n, FAST));
    }
    by_name.insert(
        "ip",
        b.add_ip_addr_field("ip", IpAddrOptions::default().set_indexed().set_fast()),
    );
    let chash = b.add_u64_field("chash", FAST);
    let open = b.add_bool_field("open", num());
    by_name.insert("open", open);
    let ext = b.add_json_field(
        "ext",
        JsonObjectOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(KW)
                    .set_index_option(IndexRecordOption::Basic)
                    .set_fieldnorms(false),
            )
            .set_fast("raw"),
    );
    let cols = Cols::new(&by_name);
    (
        b.build(),
        Fields {
            state,
            text,
            ext,
            chash,
            open,
            by_name,
            cols,
        },
    )
}

fn register_tokenizers(index: &Index) {
    index.tokenizers().register(
        KW,
        TextAnalyzer::builder(RawTokenizer::default())
            .filter(LowerCaser)
            .build(),
    );
}

/// The address as the index stores it (IPv4 mapped into IPv6).
pub fn ip6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

pub fn ip_of(a: Ipv6Addr) -> IpAddr {
    match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    }
}

pub fn date(ms: u64) -> DateTime {
    DateTime::from_timestamp_millis(ms as i64)
}

/// A hash of what a diff compares (service, product, version, certificate, banner, screen).
pub fn content_hash(s: &ServiceState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.open.hash(&mut h);
    s.service.hash(&mut h);
    s.product.hash(&mut h);
    s.version.hash(&mut h);
    s.tls.as_ref().map(|t| &t.sha256).hash(&mut h);
    s.banner.hash(&mut h);
    s.screen
        .as_ref()
        .and_then(|x| x.image.as_ref())
        .hash(&mut h);
    h.finish()
}

/// The document of a row; `buf` is scratch space for the encoded row, reused across rows.
fn document(f: &Fields, s: &ServiceState, buf: &mut Vec<u8>) -> TantivyDocument {
    let c = &f.cols;
    let mut d = TantivyDocument::default();
    buf.clear();
    crate::rowcodec::encode(s, buf);
    d.add_bytes(f.state, buf.as_slice());
    let kw = |d: &mut TantivyDocument, n: Field, v: &str| {
        if !v.is_empty() {
            d.add_text(n, v);
        }
    };
    let mut text = String::new();
    let mut push_text = |t: &str| {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(t);
    };
    kw(&mut d, c.transport, &s.transport);
    for (n, v) in [
        (c.service, &s.service),
        (c.product, &s.product),
        (c.version, &s.version),
    ] {
        if let Some(v) = v {
            kw(&mut d, n, v);
            push_text(v);
        }
    }
    for x in &s.cpe {
        kw(&mut d, c.cpe, x);
    }
    if let Some(b) = &s.banner {
        d.add_text(c.banner, b);
    }
    if let Some(h) = &s.http {
        if let Some(t) = &h.title {
            d.add_text(c.http_title, t);
        }
        if let Some(st) = h.status {
            d.add_u64(c.http_status, st as u64);
        }
        if let Some(sv) = &h.server {
            kw(&mut d, c.http_server, sv);
            push_text(sv);
        }
    }
    if let Some(t) = &s.tls {
        kw(&mut d, c.tls_subject, &t.subject);
        kw(&mut d, c.tls_issuer, &t.issuer);
        kw(&mut d, c.tls_sha256, &t.sha256);
        d.add_bool(c.tls_expired, t.expired);
        d.add_bool(c.tls_self_signed, t.self_signed);
        push_text(&t.subject);
    }
    if let Some(ssh) = &s.ssh {
        if let Some(h) = &ssh.hassh {
            kw(&mut d, c.ssh_hassh, h);
        }
        if let Some(k) = &ssh.key {
            kw(&mut d, c.ssh_key, k);
        }
    }
    d.add_bool(c.has_screenshot, s.has_screenshot());
    if let Some(sc) = &s.screen {
        if let Some(t) = &sc.text {
            d.add_text(c.screen_text, t);
        }
        if let Some(n) = sc.faces {
            d.add_u64(c.faces, n as u64);
        }
        for l in &sc.logos {
            kw(&mut d, c.logo, l);
        }
        for t in &sc.tags {
            kw(&mut d, c.tag, t);
        }
        for e in &sc.emails {
            kw(&mut d, c.email, e);
        }
    }
    for l in &s.leaks {
        kw(&mut d, c.leak, l);
    }
    for m in &s.modules {
        kw(&mut d, c.module, m);
    }
    for m in &s.minions {
        kw(&mut d, c.minion, m);
    }
    for p in &s.providers {
        kw(&mut d, c.provider, p);
    }
    d.add_u64(c.port, s.port as u64);
    d.add_u64(c.job, s.job);
    d.add_date(c.first_seen, date(s.first_seen_ms));
    d.add_date(c.last_seen, date(s.last_seen_ms));
    if let Some(ip) = s.ip {
        d.add_ip_addr(c.ip, ip6(ip));
    }
    d.add_bool(f.open, s.open);
    d.add_u64(f.chash, content_hash(s));
    if !text.is_empty() {
        d.add_text(f.text, &text);
    }
    if !s.ext.is_empty() {
        let obj: BTreeMap<String, OwnedValue> = s
            .ext
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    ExtValue::U64(n) => OwnedValue::U64(*n),
                    ExtValue::F64(x) => OwnedValue::F64(*x),
                    ExtValue::Bool(b) => OwnedValue::Bool(*b),
                    ExtValue::Str(s) => OwnedValue::Str(s.clone()),
                };
                (crate::fields::ext_key(k), v)
            })
            .collect();
        d.add_object(f.ext, obj);
    }
    d
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Payload {
    version: u32,
    /// job id → highest cursor folded in (committed).
    cursors: BTreeMap<u64, u64>,
}

struct Pending {
    row: ServiceState,
    /// A version of the row is in the committed index, or was handed to the indexing thread
    /// since: writing the row again deletes that version first.
    written: bool,
    /// The latest state has not been handed to the indexing thread.
    dirty: bool,
}

struct Writer {
    w: IndexWriter,
    /// The rows changed since the last commit, and their slots by key (an arena: the map
    /// holds small values, a row is never moved by the map's growth).
    pending: Vec<Pending>,
    slots: HashMap<Box<str>, u32, foldhash::fast::RandomState>,
    /// Slots of pending rows whose latest state the indexing thread has not been given.
    dirty: Vec<u32>,
    /// Reused for each finding's key.
    key: String,
    /// Reused scratch space for encoded rows.
    buf: Vec<u8>,
    /// job → highest cursor folded in (committed + pending)
    cursors: BTreeMap<u64, u64>,
    committed: BTreeMap<u64, u64>,
    first_change: Option<Instant>,
    committed_at_ms: u64,
    /// How many merge threads were found and lowered (looked for at commits until all are).
    merge_threads_lowered: usize,
}

/// The index plus its writer. Thread-safe; one writer at a time.
pub struct QueryIndex {
    pub(crate) index: Index,
    pub(crate) reader: IndexReader,
    pub(crate) fields: Fields,
    writer: Mutex<Writer>,
    dir: PathBuf,
    pub(crate) committed_cursors: Mutex<BTreeMap<u64, u64>>,
    /// When the searcher was last reloaded without a commit (see [`QueryIndex::maybe_commit`]).
    reloaded: Mutex<Instant>,
    columns: ColumnCache,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl QueryIndex {
    /// Opens the index in `dir`, or (missing, corrupt, other version) removes it and creates an
    /// empty one: the caller's catch-up then rebuilds it from the store.
    pub fn open_or_rebuild(dir: &Path) -> Result<QueryIndex, IndexError> {
        let (index, cursors) = match Self::open(dir) {
            Ok(x) => x,
            Err(e) => {
                if dir.exists() {
                    tracing::warn!(dir = %dir.display(), error = %e, "query index unusable; rebuilding from the store");
                    std::fs::remove_dir_all(dir).map_err(io_err(dir))?;
                }
                std::fs::create_dir_all(dir).map_err(io_err(dir))?;
                (Index::create_in_dir(dir, schema().0)?, BTreeMap::new())
            }
        };
        // Errors from here on (a writer lock held by another instance) are not corruption: the
        // directory is left alone.
        Self::finish(index, dir, cursors)
    }

    fn open(dir: &Path) -> Result<(Index, BTreeMap<u64, u64>), IndexError> {
        let index = Index::open_in_dir(dir)?;
        let (schema, _) = schema();
        if index.schema() != schema {
            return Err(IndexError::Row("schema differs".into()));
        }
        let metas = index.load_metas()?;
        let payload: Payload = match &metas.payload {
            Some(p) => serde_json::from_str(p).map_err(|e| IndexError::Row(e.to_string()))?,
            None => Payload {
                version: INDEX_VERSION,
                ..Default::default()
            },
        };
        if payload.version != INDEX_VERSION {
            return Err(IndexError::Row(format!(
                "index version {}",
                payload.version
            )));
        }
        // every segment the commit names must be readable (a truncated or deleted file fails
        // here, not in a later search)
        let reader: IndexReader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let s = reader.searcher();
        for seg in s.segment_readers() {
            let store = seg
                .get_store_reader(1)
                .map_err(|e| IndexError::Row(e.to_string()))?;
            if seg.max_doc() > 0 {
                store.get::<TantivyDocument>(0)?;
            }
        }
        Ok((index, payload.cursors))
    }

    /// An index in memory (tests, benchmarks of the query side).
    pub fn in_ram() -> Result<QueryIndex, IndexError> {
        let (schema, _) = schema();
        Self::finish(
            Index::create_in_ram(schema),
            Path::new(":memory:"),
            BTreeMap::new(),
        )
    }

    fn finish(
        index: Index,
        dir: &Path,
        cursors: BTreeMap<u64, u64>,
    ) -> Result<QueryIndex, IndexError> {
        register_tokenizers(&index);
        let (_, fields) = schema();
        // A restart in the same process finds the previous writer's lock for a moment.
        let mut tries = 0;
        let w = loop {
            match index.writer_with_num_threads(WRITER_THREADS, WRITER_BUDGET) {
                Ok(w) => break w,
                Err(tantivy::TantivyError::LockFailure(..)) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        let mut mp = tantivy::indexer::LogMergePolicy::default();
        mp.set_min_num_segments(MERGE_MIN_SEGMENTS);
        w.set_merge_policy(Box::new(mp));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(QueryIndex {
            index,
            reader,
            fields,
            writer: Mutex::new(Writer {
                w,
                pending: Vec::new(),
                slots: HashMap::default(),
                dirty: Vec::new(),
                key: String::new(),
                buf: Vec::with_capacity(4096),
                cursors: cursors.clone(),
                committed: cursors.clone(),
                first_change: None,
                committed_at_ms: 0,
                merge_threads_lowered: 0,
            }),
            dir: dir.to_path_buf(),
            committed_cursors: Mutex::new(cursors),
            reloaded: Mutex::new(Instant::now()),
            columns: ColumnCache::default(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Highest cursor of `job` folded in (committed or pending).
    pub fn cursor(&self, job: u64) -> u64 {
        self.writer
            .lock()
            .expect("writer")
            .cursors
            .get(&job)
            .copied()
            .unwrap_or(0)
    }

    /// Highest cursor per job that a search sees (committed).
    pub fn committed(&self) -> BTreeMap<u64, u64> {
        self.committed_cursors.lock().expect("cursors").clone()
    }

    /// Folds a batch of findings (of any jobs) in. Findings at or below their job's cursor are
    /// skipped. Returns how many were folded.
    pub fn add(&self, batch: &[(Provenance, Observation)]) -> Result<usize, IndexError> {
        let mut w = self.writer.lock().expect("writer");
        let w = &mut *w;
        let mut n = 0;
        let searcher = self.reader.searcher();
        // job → the address dictionaries of the segments holding rows of that job (a segment
        // without the job cannot hold its row: a new row of a job is answered by those few
        // dictionaries, not by every segment's)
        let mut holders: HashMap<u64, Vec<(u32, RowColumns<'_>)>, foldhash::fast::RandomState> =
            HashMap::default();
        for (p, o) in batch {
            let cur = w.cursors.entry(p.job).or_insert(0);
            if p.cursor <= *cur {
                continue;
            }
            *cur = p.cursor;
            p.write_key(&mut w.key);
            let key = w.key.as_str();
            let row = match w.slots.get(key) {
                Some(&slot) => {
                    let r = &mut w.pending[slot as usize];
                    if !r.dirty {
                        r.dirty = true;
                        w.dirty.push(slot);
                    }
                    &mut r.row
                }
                None => {
                    let has_committed = w.committed.get(&p.job).is_some_and(|c| *c > 0);
                    // a row without an address is keyed by its finding: always new
                    let old = match p.ip {
                        Some(ip) if has_committed => {
                            let segs = match holders.entry(p.job) {
                                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                                std::collections::hash_map::Entry::Vacant(e) => {
                                    e.insert(self.holders(&searcher, p.job)?)
                                }
                            };
                            self.load(&searcher, segs, p.job, ip6(ip), p.port)?
                        }
                        _ => None,
                    };
                    let written = old.is_some();
                    let row = old.unwrap_or_else(|| ServiceState::new(p));
                    let slot = w.pending.len() as u32;
                    w.slots.insert(key.into(), slot);
                    w.dirty.push(slot);
                    w.pending.push(Pending {
                        row,
                        written,
                        dirty: true,
                    });
                    &mut w.pending[slot as usize].row
                }
            };
            row.fold(p, o);
            n += 1;
            w.first_change.get_or_insert_with(Instant::now);
            // Hand full batches to the indexing thread now rather than all at commit: it
            // indexes while the next findings are folded.
            if w.dirty.len() >= OP_BATCH {
                self.send_dirty(w)?;
            }
        }
        Ok(n)
    }

    /// The address dictionaries and row columns of the segments that hold rows of `job`.
    fn holders<'s>(
        &'s self,
        searcher: &'s tantivy::Searcher,
        job: u64,
    ) -> Result<Vec<(u32, RowColumns<'s>)>, IndexError> {
        let jt = Term::from_field_u64(self.fields.cols.job, job);
        let mut out = Vec::new();
        for (ord, seg) in searcher.segment_readers().iter().enumerate() {
            if seg.inverted_index(self.fields.cols.job)?.doc_freq(&jt)? > 0 {
                out.push((
                    ord as u32,
                    RowColumns::open(seg, self.fields.cols.ip, &self.columns)?,
                ));
            }
        }
        Ok(out)
    }

    /// The committed version of the row (job, ip, port), searched in `segs` (see
    /// [`Self::holders`]).
    fn load(
        &self,
        searcher: &tantivy::Searcher,
        segs: &[(u32, RowColumns<'_>)],
        job: u64,
        ip: Ipv6Addr,
        port: u16,
    ) -> Result<Option<ServiceState>, IndexError> {
        let id = self.row_id(job, ip, port);
        for (ord, cols) in segs {
            let seg = searcher.segment_reader(*ord);
            // most rows of a running job are new: a dictionary miss answers that
            for doc in row_docs(cols, &id)? {
                if !seg.is_deleted(doc) {
                    return Ok(Some(
                        self.row(searcher, tantivy::DocAddress::new(*ord, doc))?,
                    ));
                }
            }
        }
        Ok(None)
    }

    pub(crate) fn row(
        &self,
        searcher: &tantivy::Searcher,
        addr: tantivy::DocAddress,
    ) -> Result<ServiceState, IndexError> {
        use tantivy::schema::Value;
        let d: TantivyDocument = searcher.doc(addr)?;
        let b = d
            .get_first(self.fields.state)
            .and_then(|v| v.as_bytes())
            .ok_or_else(|| IndexError::Row("row without state".into()))?;
        crate::rowcodec::decode(b).map_err(|e| IndexError::Row(e.to_string()))
    }

    fn row_id(&self, job: u64, ip: Ipv6Addr, port: u16) -> RowId {
        RowId {
            ip_field: self.fields.cols.ip,
            job_field: self.fields.cols.job,
            cache: self.columns.clone(),
            job,
            ip,
            port,
        }
    }

    /// Gives the indexing thread the latest state of every dirty row, in batches (one channel
    /// send per document was a measurable share of ingest). A row written before (committed,
    /// or sent since) is deleted first: the delete is stamped before its batch of additions is
    /// handed over, so tantivy orders it after the earlier version (an earlier batch or commit)
    /// and before the new one. A slot is dirty at most once per batch.
    fn send_dirty(&self, w: &mut Writer) -> Result<(), IndexError> {
        let mut ops = Vec::with_capacity(OP_BATCH.min(w.dirty.len()));
        for slot in w.dirty.drain(..) {
            let r = &mut w.pending[slot as usize];
            if r.written {
                match r.row.ip {
                    Some(ip) => {
                        w.w.delete_query(Box::new(self.row_id(r.row.job, ip6(ip), r.row.port)))?;
                    }
                    // keyed by its finding's cursor: folded once (a replay is skipped)
                    None => debug_assert!(false, "a row without an address written twice"),
                }
            }
            ops.push(UserOperation::Add(document(
                &self.fields,
                &r.row,
                &mut w.buf,
            )));
            r.written = true;
            r.dirty = false;
            if ops.len() >= OP_BATCH {
                w.w.run(std::mem::take(&mut ops))?;
            }
        }
        if !ops.is_empty() {
            w.w.run(ops)?;
        }
        Ok(())
    }

    /// True when a commit is due (enough rows, or the oldest change is old enough).
    pub fn commit_due(&self) -> bool {
        let w = self.writer.lock().expect("writer");
        w.pending.len() >= COMMIT_ROWS
            || w.first_change
                .is_some_and(|t| t.elapsed() >= COMMIT_INTERVAL)
    }

    /// Milliseconds since the oldest change not yet visible to searches (0 = none).
    pub fn pending_age_ms(&self) -> u64 {
        let w = self.writer.lock().expect("writer");
        w.first_change
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0)
    }

    pub fn pending_rows(&self) -> usize {
        self.writer.lock().expect("writer").pending.len()
    }

    /// Writes every pending row and commits them with the cursors; searches see them after.
    pub fn commit(&self) -> Result<(), IndexError> {
        let mut w = self.writer.lock().expect("writer");
        let w = &mut *w;
        if w.first_change.is_none() && w.pending.is_empty() {
            return Ok(());
        }
        self.send_dirty(w)?;
        w.pending.clear();
        w.slots.clear();
        let payload = Payload {
            version: INDEX_VERSION,
            cursors: w.cursors.clone(),
        };
        let mut pc = w.w.prepare_commit()?;
        pc.set_payload(&serde_json::to_string(&payload).expect("payload"));
        pc.commit()?;
        self.reader.reload()?;
        self.columns.retain_live(&self.reader.searcher());
        w.committed = w.cursors.clone();
        *self.committed_cursors.lock().expect("cursors") = w.cursors.clone();
        w.first_change = None;
        w.committed_at_ms = now_ms();
        // the commit reloaded the searcher: the idle reload's interval starts again
        *self.reloaded.lock().expect("reloaded") = Instant::now();
        // tantivy starts its merge threads itself (they name themselves once running): look
        // for them at commits until all were found
        if w.merge_threads_lowered < MERGE_THREADS {
            w.merge_threads_lowered += crate::priority::lower_threads_named(
                MERGE_THREAD_NAME,
                crate::priority::MERGE_NICE,
            );
        }
        Ok(())
    }

    /// Commits when due; returns true if it committed. When nothing is due, reloads the
    /// searcher at most every [`RELOAD_INTERVAL`]: merges finished since the last commit are
    /// published in the index's metadata but searched only after a reload (same documents,
    /// fewer segments), and after a flood no commit may come for a long time.
    pub fn maybe_commit(&self) -> Result<bool, IndexError> {
        if self.commit_due() {
            self.commit()?;
            return Ok(true);
        }
        let mut last = self.reloaded.lock().expect("reloaded");
        if last.elapsed() >= RELOAD_INTERVAL {
            *last = Instant::now();
            drop(last);
            // the writer lock keeps a commit from interleaving (its own reload is the newer)
            let _w = self.writer.lock().expect("writer");
            self.reader.reload()?;
        }
        Ok(false)
    }

    pub fn searcher(&self) -> tantivy::Searcher {
        self.reader.searcher()
    }

    pub fn num_rows(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Waits for merging threads (a clean close).
    pub fn close(self) -> Result<(), IndexError> {
        self.commit()?;
        let w = self.writer.into_inner().expect("writer");
        w.w.wait_merging_threads()?;
        Ok(())
    }
}

/// What finding a row in a segment reads: the address dictionary and postings, then the job and
/// port columns, opened once the address is found (a segment without it costs one dictionary
/// miss, as a key term did) and kept for the segment's next lookups (opening a column by name
/// per lookup cost more than the unique term this replaced).
struct RowColumns<'s> {
    seg: &'s tantivy::SegmentReader,
    ips: std::sync::Arc<InvertedIndexReader>,
    cols: std::cell::OnceCell<JobPort>,
    cache: &'s ColumnCache,
}

type JobPort = (
    tantivy::columnar::Column<u64>,
    tantivy::columnar::Column<u64>,
);

/// The job and port columns of each segment, opened once and shared by every lookup and delete
/// (opening a column deserializes its block index, O(rows): per delete and segment that made
/// updates of committed rows 2x as costly as with a key term). Pruned to the live segments at
/// each commit.
#[derive(Clone, Default)]
struct ColumnCache(std::sync::Arc<Mutex<HashMap<tantivy::index::SegmentId, JobPort>>>);

impl ColumnCache {
    fn get(&self, seg: &tantivy::SegmentReader) -> tantivy::Result<JobPort> {
        if let Some(c) = self.0.lock().expect("columns").get(&seg.segment_id()) {
            return Ok(c.clone());
        }
        let ff = seg.fast_fields();
        let c = (ff.u64("job")?, ff.u64("port")?);
        self.0
            .lock()
            .expect("columns")
            .insert(seg.segment_id(), c.clone());
        Ok(c)
    }

    fn retain_live(&self, searcher: &tantivy::Searcher) {
        let live: std::collections::HashSet<_> = searcher
            .segment_readers()
            .iter()
            .map(|s| s.segment_id())
            .collect();
        self.0
            .lock()
            .expect("columns")
            .retain(|id, _| live.contains(id));
    }
}

impl std::fmt::Debug for ColumnCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ColumnCache")
    }
}

impl<'s> RowColumns<'s> {
    fn open(
        seg: &'s tantivy::SegmentReader,
        ip_field: Field,
        cache: &'s ColumnCache,
    ) -> tantivy::Result<RowColumns<'s>> {
        Ok(RowColumns {
            seg,
            ips: seg.inverted_index(ip_field)?,
            cols: std::cell::OnceCell::new(),
            cache,
        })
    }

    fn jobs_and_ports(&self) -> tantivy::Result<&JobPort> {
        if let Some(c) = self.cols.get() {
            return Ok(c);
        }
        let c = self.cache.get(self.seg)?;
        Ok(self.cols.get_or_init(|| c))
    }
}

/// A row's identity in the index, and the delete query of its earlier versions.
#[derive(Clone, Debug)]
struct RowId {
    ip_field: Field,
    job_field: Field,
    cache: ColumnCache,
    job: u64,
    ip: Ipv6Addr,
    port: u16,
}

/// The documents of row `id` in one segment (deleted ones included): the address's postings,
/// filtered by the job and port columns. A segment without the address costs one dictionary
/// miss.
fn row_docs(seg: &RowColumns<'_>, id: &RowId) -> tantivy::Result<Vec<tantivy::DocId>> {
    use tantivy::{DocSet, TERMINATED};
    let term = Term::from_field_ip_addr(id.ip_field, id.ip);
    let Some(ti) = seg.ips.get_term_info(&term)? else {
        return Ok(Vec::new());
    };
    let mut postings = seg
        .ips
        .read_postings_from_terminfo(&ti, IndexRecordOption::Basic)?;
    let (jobs, ports) = seg.jobs_and_ports()?;
    let mut out = Vec::new();
    let mut doc = postings.doc();
    while doc != TERMINATED {
        if jobs.first(doc) == Some(id.job) && ports.first(doc) == Some(id.port as u64) {
            out.push(doc);
        }
        doc = postings.advance();
    }
    Ok(out)
}

impl tantivy::query::Query for RowId {
    fn weight(
        &self,
        _: tantivy::query::EnableScoring<'_>,
    ) -> tantivy::Result<Box<dyn tantivy::query::Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl tantivy::query::Weight for RowId {
    fn scorer(
        &self,
        seg: &tantivy::SegmentReader,
        boost: tantivy::Score,
    ) -> tantivy::Result<Box<dyn tantivy::query::Scorer>> {
        // most segments of a big index hold no row of the job: one lookup in the small job
        // dictionary answers that before the address is looked up
        let jt = Term::from_field_u64(self.job_field, self.job);
        if seg.inverted_index(self.job_field)?.doc_freq(&jt)? == 0 {
            return Ok(Box::new(tantivy::query::EmptyScorer));
        }
        let docs = row_docs(&RowColumns::open(seg, self.ip_field, &self.cache)?, self)?;
        Ok(Box::new(tantivy::query::ConstScorer::new(
            Docs { docs, at: 0 },
            boost,
        )))
    }

    fn explain(
        &self,
        seg: &tantivy::SegmentReader,
        doc: tantivy::DocId,
    ) -> tantivy::Result<tantivy::query::Explanation> {
        if row_docs(&RowColumns::open(seg, self.ip_field, &self.cache)?, self)?.contains(&doc) {
            Ok(tantivy::query::Explanation::new(
                "the row's address, job and port",
                1.0,
            ))
        } else {
            Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} is not row {}/{}/{}",
                self.job, self.ip, self.port
            )))
        }
    }
}

/// A row's few documents in one segment, ascending (postings order).
struct Docs {
    docs: Vec<tantivy::DocId>,
    at: usize,
}

impl tantivy::DocSet for Docs {
    fn advance(&mut self) -> tantivy::DocId {
        self.at = (self.at + 1).min(self.docs.len());
        self.doc()
    }

    fn doc(&self) -> tantivy::DocId {
        self.docs
            .get(self.at)
            .copied()
            .unwrap_or(tantivy::TERMINATED)
    }

    fn size_hint(&self) -> u32 {
        self.docs.len() as u32
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
