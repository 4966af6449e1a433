//! Answers over the index: services (one row per ip:port, latest state), hosts (one row per
//! address), counts with facets, the host view with history, and job diffs.
//!
//! Memory is bounded by the page, not by the number of matches: the page collectors keep at most
//! `limit` keys (plus the one being displaced), reading only fast columns; stored rows are read
//! for the page alone. Every search has a deadline, checked while collecting.

use crate::compile::Compiler;
use crate::fields::{Column as FCol, Kind, Registry};
use crate::index::{IndexError, QueryIndex, ip_of};
use crate::lang::{self, ParseError};
use crate::state::ServiceState;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};
use tantivy::collector::{Collector, Count, SegmentCollector};
use tantivy::columnar::Column;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery, TermSetQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, Term};

/// Largest page; default page.
pub const MAX_LIMIT: usize = 10_000;
pub const DEFAULT_LIMIT: usize = 100;
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);
/// Largest number of facet values per facet.
pub const MAX_FACET_SIZE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("bad query: {0}")]
    Parse(#[from] ParseError),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("query deadline of {0:?} exceeded")]
    Deadline(Duration),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl From<std::io::Error> for QueryError {
    fn from(e: std::io::Error) -> Self {
        QueryError::Index(IndexError::from(e))
    }
}

impl From<tantivy::TantivyError> for QueryError {
    fn from(e: tantivy::TantivyError) -> Self {
        QueryError::Index(IndexError::Tantivy(e))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    Services,
    Hosts,
}

/// The sort/page key of a service row: address and port (rows without an address after all
/// addressed ones, by their position in the index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowKey {
    pub ip: u128,
    pub port: u64,
}

impl RowKey {
    pub fn encode(&self) -> String {
        format!("{:032x}:{:x}", self.ip, self.port)
    }
    pub fn decode(s: &str) -> Option<RowKey> {
        let (a, b) = s.split_once(':')?;
        Some(RowKey {
            ip: u128::from_str_radix(a, 16).ok()?,
            port: u64::from_str_radix(b, 16).ok()?,
        })
    }
}

#[derive(Clone, Debug)]
pub struct SearchRequest {
    pub query: String,
    pub view: View,
    pub limit: usize,
    /// Page after this key ([`Page::next`]).
    pub after: Option<RowKey>,
    pub deadline: Duration,
}

impl SearchRequest {
    pub fn new(query: &str) -> Self {
        SearchRequest {
            query: query.into(),
            view: View::Services,
            limit: DEFAULT_LIMIT,
            after: None,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostRow {
    pub ip: IpAddr,
    pub last_seen_ms: u64,
    /// Latest state per port.
    pub services: Vec<ServiceState>,
}

#[derive(Clone, Debug, Default)]
pub struct Page {
    pub services: Vec<ServiceState>,
    pub hosts: Vec<HostRow>,
    /// Index rows (job × service) the query matched.
    pub matched: u64,
    /// Key to pass as `after` for the next page (None = last page).
    pub next: Option<RowKey>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Facet {
    pub field: String,
    pub values: Vec<FacetCount>,
    /// Rows whose value is not among `values`.
    pub other: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Counted {
    pub matched: u64,
    pub facets: Vec<Facet>,
}

/// `product:10` → ("product", 10); `port` → ("port", default).
pub fn parse_facet(spec: &str) -> Result<(String, usize), QueryError> {
    let (f, n) = match spec.rsplit_once(':') {
        Some((f, n)) => (
            f,
            n.parse::<usize>().map_err(|_| {
                QueryError::Invalid(format!("facet {spec:?}: size must be a number"))
            })?,
        ),
        None => (spec, 10),
    };
    if n == 0 || n > MAX_FACET_SIZE {
        return Err(QueryError::Invalid(format!(
            "facet {spec:?}: size must be 1..={MAX_FACET_SIZE}"
        )));
    }
    Ok((f.to_string(), n))
}

struct Deadline {
    end: Instant,
    budget: Duration,
}

impl Deadline {
    fn new(d: Duration) -> Self {
        Deadline {
            end: Instant::now() + d,
            budget: d,
        }
    }
    fn check(&self) -> Result<(), QueryError> {
        if Instant::now() > self.end {
            Err(QueryError::Deadline(self.budget))
        } else {
            Ok(())
        }
    }
}

/// The fast columns a row collector reads.
struct Cols {
    ip: Option<Column<Ipv6Addr>>,
    port: Column<u64>,
    last: Column<tantivy::DateTime>,
}

fn cols(seg: &SegmentReader) -> tantivy::Result<Cols> {
    let ff = seg.fast_fields();
    Ok(Cols {
        ip: ff.column_opt::<Ipv6Addr>("ip")?,
        port: ff.u64("port")?,
        last: ff.date("last_seen")?,
    })
}

impl Cols {
    fn last(&self, doc: DocId) -> i64 {
        self.last
            .first(doc)
            .map(|d| d.into_timestamp_millis())
            .unwrap_or(0)
    }
}

/// Keeps the `limit` smallest keys above `after`, with the latest doc per key.
struct PageCollector {
    limit: usize,
    after: Option<RowKey>,
    /// Group by address only (hosts view): the port is kept inside the group.
    hosts: bool,
}

type Best = BTreeMap<RowKey, BTreeMap<u64, (i64, DocAddress)>>;

struct PageSeg {
    cols: Cols,
    seg: SegmentOrdinal,
    limit: usize,
    after: Option<RowKey>,
    hosts: bool,
    best: Best,
    /// Scratch space of [`SegmentCollector::collect_block`].
    ips: Vec<Option<Ipv6Addr>>,
}

fn put(best: &mut Best, limit: usize, k: RowKey, port: u64, last: i64, addr: DocAddress) {
    if best.len() >= limit
        && !best.contains_key(&k)
        && best.last_key_value().is_some_and(|(m, _)| k > *m)
    {
        return;
    }
    let e = best
        .entry(k)
        .or_default()
        .entry(port)
        .or_insert((i64::MIN, addr));
    if last > e.0 || (last == e.0 && addr > e.1) {
        *e = (last, addr);
    }
    while best.len() > limit {
        best.pop_last();
    }
}

impl PageSeg {
    fn collect_ip(&mut self, doc: DocId, ip: Option<u128>) {
        // most matches of a broad query fall outside a full page: decided on the address alone
        if let (Some(ip), true) = (ip, self.best.len() >= self.limit)
            && self.best.last_key_value().is_some_and(|(m, _)| ip > m.ip)
        {
            return;
        }
        let mut k = match ip {
            Some(ip) => RowKey {
                ip,
                port: self.cols.port.first(doc).unwrap_or(0),
            },
            None => RowKey {
                ip: u128::MAX,
                port: ((self.seg as u64) << 32) | doc as u64,
            },
        };
        let port = k.port;
        if self.hosts && k.ip != u128::MAX {
            k.port = 0;
        }
        if self.after.is_some_and(|a| k <= a) {
            return;
        }
        let last = self.cols.last(doc);
        put(
            &mut self.best,
            self.limit,
            k,
            port,
            last,
            DocAddress::new(self.seg, doc),
        );
    }
}

impl SegmentCollector for PageSeg {
    type Fruit = Best;
    fn collect(&mut self, doc: DocId, _: Score) {
        let ip = self
            .cols
            .ip
            .as_ref()
            .and_then(|c| c.first(doc))
            .map(u128::from);
        self.collect_ip(doc, ip);
    }
    /// The addresses of a block of matches are read at once (a broad query hands over
    /// hundreds of thousands of matches, most of them rejected on the address alone).
    fn collect_block(&mut self, docs: &[DocId]) {
        let mut ips = std::mem::take(&mut self.ips);
        ips.clear();
        ips.resize(docs.len(), None);
        if let Some(c) = &self.cols.ip {
            c.first_vals(docs, &mut ips);
        }
        for (doc, ip) in docs.iter().zip(&ips) {
            self.collect_ip(*doc, ip.map(u128::from));
        }
        self.ips = ips;
    }
    fn harvest(self) -> Best {
        self.best
    }
}

impl Collector for PageCollector {
    type Fruit = Best;
    type Child = PageSeg;
    fn for_segment(
        &self,
        seg_ord: SegmentOrdinal,
        seg: &SegmentReader,
    ) -> tantivy::Result<PageSeg> {
        Ok(PageSeg {
            cols: cols(seg)?,
            seg: seg_ord,
            limit: self.limit + 1,
            after: self.after,
            hosts: self.hosts,
            best: BTreeMap::new(),
            ips: Vec::new(),
        })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, fruits: Vec<Best>) -> tantivy::Result<Best> {
        let mut out = Best::new();
        for f in fruits {
            for (k, ports) in f {
                for (p, (last, addr)) in ports {
                    put(&mut out, self.limit + 1, k, p, last, addr);
                }
            }
        }
        Ok(out)
    }
}

/// Every matching doc (address, last seen); for bounded sets (one host, one job).
struct AllDocs;
struct AllSeg {
    seg: SegmentOrdinal,
    out: Vec<DocAddress>,
}
impl SegmentCollector for AllSeg {
    type Fruit = Vec<DocAddress>;
    fn collect(&mut self, doc: DocId, _: Score) {
        self.out.push(DocAddress::new(self.seg, doc));
    }
    fn harvest(self) -> Vec<DocAddress> {
        self.out
    }
}
impl Collector for AllDocs {
    type Fruit = Vec<DocAddress>;
    type Child = AllSeg;
    fn for_segment(&self, seg: SegmentOrdinal, _: &SegmentReader) -> tantivy::Result<AllSeg> {
        Ok(AllSeg {
            seg,
            out: Vec::new(),
        })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, f: Vec<Vec<DocAddress>>) -> tantivy::Result<Vec<DocAddress>> {
        Ok(f.into_iter().flatten().collect())
    }
}

/// A query as the clauses of one conjunction ([`Engine::conjuncts`]).
struct Conjunction {
    must: Vec<Box<dyn Query>>,
    not: Vec<Box<dyn Query>>,
}

/// Documents per window of [`DocSet::fill_bitset_block`] (tantivy's `BLOCK_WINDOW`).
const WINDOW: DocId = 1024;

/// Marks the matches of a conjunction in one segment. When the rarest required clause is dense
/// (at least one document in 32) the segment is read window by window (1,024 documents): each
/// required clause fills the window's bitmask, the masks are ANDed, the excluded clauses'
/// documents removed. This is how tantivy counts a dense conjunction
/// (`Intersection::count_including_deleted`); its document-at-a-time iteration, which the
/// sparse case keeps, leads with the clause of fewest postings and asks the others about each
/// candidate — for an address range (a fast column) a point read per candidate:
/// `net:10.0.0.0/16 port:22` at 10 M rows counted in 13 ms but marked in ~80 ms.
/// `mark` gets the matches in document order.
fn mark_conjunction(
    seg: &SegmentReader,
    must: &[Box<dyn tantivy::query::Weight>],
    not: &[Box<dyn tantivy::query::Weight>],
    mark: &mut dyn FnMut(&[DocId]),
) -> tantivy::Result<()> {
    use tantivy::DocSet;
    use tantivy_common::TinySet;
    let mut must = must
        .iter()
        .map(|w| w.scorer(seg, 1.0))
        .collect::<tantivy::Result<Vec<_>>>()?;
    let mut not = not
        .iter()
        .map(|w| w.scorer(seg, 1.0))
        .collect::<tantivy::Result<Vec<_>>>()?;
    must.sort_by_key(|s| s.cost());
    let max_doc = seg.max_doc();
    let mut docs: Vec<DocId> = Vec::with_capacity(WINDOW as usize);
    if (must[0].size_hint() as u64) * 32 < max_doc as u64 {
        let mut it = tantivy::query::intersect_scorers(must, max_doc);
        let mut buf = [0; tantivy::COLLECT_BLOCK_BUFFER_LEN];
        loop {
            let k = it.fill_buffer(&mut buf);
            docs.clear();
            for d in &buf[..k] {
                let excluded = not.iter_mut().any(|s| {
                    if s.doc() < *d {
                        s.seek(*d);
                    }
                    s.doc() == *d
                });
                if !excluded {
                    docs.push(*d);
                }
            }
            mark(&docs);
            if k < buf.len() {
                return Ok(());
            }
        }
    }
    // every required scorer stands at or before `base` (the largest document any of them
    // stood on or returned: no match comes before it), so `fill_bitset_block`'s seek only
    // moves forward (tantivy asserts it)
    let mut base = must
        .iter()
        .map(|s| s.doc())
        .max()
        .unwrap_or(tantivy::TERMINATED);
    while base < tantivy::TERMINATED {
        let horizon = base + WINDOW;
        let mut mask = [TinySet::empty(); 16];
        let mut next = must[0].fill_bitset_block(base, &mut mask);
        let mut empty = false;
        for s in &mut must[1..] {
            let mut m = [TinySet::empty(); 16];
            next = next.max(s.fill_bitset_block(base, &mut m));
            empty = true;
            for (a, b) in mask.iter_mut().zip(m) {
                *a = a.intersect(b);
                empty &= a.is_empty();
            }
            if empty {
                break;
            }
        }
        if !empty {
            for s in &mut not {
                if s.doc() < base {
                    s.seek(base);
                }
                // an excluded scorer may stand past `base` (it is not part of `next`)
                let mut d = s.doc();
                while d < horizon {
                    mask[((d - base) / 64) as usize].remove_mut((d - base) % 64);
                    d = s.advance();
                }
            }
            docs.clear();
            for (i, t) in mask.iter().enumerate() {
                let mut t = *t;
                while let Some(b) = t.pop_lowest() {
                    docs.push(base + 64 * i as DocId + b);
                }
            }
            mark(&docs);
        }
        base = next.max(horizon);
    }
    Ok(())
}

/// The query engine: an index plus the field registry.
/// One image found by [`Engine::screen_text`].
#[derive(Clone, Debug, PartialEq)]
pub struct ScreenHit {
    /// The image id (sha256 of the PNG).
    pub image: String,
    pub score: f64,
}

pub struct Engine {
    pub index: std::sync::Arc<QueryIndex>,
    pub registry: Registry,
    /// Page with the reference paths only: matches marked by tantivy's own iteration, the
    /// address dictionary walked from `after` without the query's address bounds. The faster
    /// paths must give the same pages (tests compare them; `qtime` times both). Default false.
    pub plain_paths: bool,
}

impl Engine {
    pub fn new(index: std::sync::Arc<QueryIndex>) -> Self {
        Engine {
            index,
            registry: Registry::default(),
            plain_paths: false,
        }
    }

    /// Parses and compiles `text` (errors carry the position).
    pub fn compile(&self, text: &str) -> Result<Box<dyn Query>, QueryError> {
        let e = lang::parse(text)?;
        Ok(self.compiler(text).compile(&e)?)
    }

    fn compiler<'a>(&'a self, text: &'a str) -> Compiler<'a> {
        Compiler {
            registry: &self.registry,
            fields: &self.index.fields,
            tokenizers: self.index.index.tokenizers(),
            text,
        }
    }

    /// `e` (parsed from `text`, restricted to `jobs`) as the clauses of one conjunction — required, excluded —
    /// compiled each on its own, for [`mark_conjunction`]; `None` when it is not a conjunction of
    /// at least two clauses (one clause is marked as fast by its own scorer).
    fn conjuncts(
        &self,
        text: &str,
        e: &lang::Expr,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<Option<Conjunction>, QueryError> {
        let c = self.compiler(text);
        let (mut must, mut not) = (Vec::new(), Vec::new());
        match e {
            lang::Expr::And(v) => {
                for x in v {
                    match x {
                        lang::Expr::Not(inner) => not.push(c.compile(inner)?),
                        x => must.push(c.compile(x)?),
                    }
                }
            }
            e => must.push(c.compile(e)?),
        }
        if let Some(jobs) = jobs {
            must.push(self.jobs_filter(jobs));
        }
        if must.is_empty() || must.len() + not.len() < 2 {
            return Ok(None);
        }
        Ok(Some(Conjunction { must, not }))
    }

    /// `text` compiled and, when `jobs` is given, restricted to the rows of those jobs (a caller's
    /// visible jobs): a filter on the indexed `job` field, never text pasted into the query. An
    /// empty set matches nothing.
    pub fn compile_in(
        &self,
        text: &str,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<Box<dyn Query>, QueryError> {
        let q = self.compile(text)?;
        Ok(match jobs {
            None => q,
            Some(jobs) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, q),
                (Occur::Must, self.jobs_filter(jobs)),
            ])),
        })
    }

    fn jobs_filter(&self, jobs: &BTreeSet<u64>) -> Box<dyn Query> {
        let f = self.index.fields.get("job");
        Box::new(TermSetQuery::new(
            jobs.iter().map(|j| Term::from_field_u64(f, *j)),
        ))
    }

    pub fn search(&self, r: &SearchRequest) -> Result<Page, QueryError> {
        self.search_in(r, None)
    }

    /// Screens whose text matches any word of `text`, best first (BM25 over `screen.text`, the
    /// score of an image its best row's), one hit per image id, at most `limit`. This is the
    /// image service's text search: the screen text lives in the query index with everything
    /// else known about its service, not in an index of its own.
    pub fn screen_text(&self, text: &str, limit: usize) -> Result<Vec<ScreenHit>, QueryError> {
        let f = self.index.fields.get("screen_text");
        let mut a = self
            .index
            .index
            .tokenizers()
            .get("default")
            .expect("default tokenizer");
        let mut words = BTreeSet::new();
        let mut ts = a.token_stream(text);
        while ts.advance() {
            words.insert(ts.token().text.clone());
        }
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let q = BooleanQuery::new(
            words
                .into_iter()
                .map(|w| {
                    (
                        Occur::Should,
                        Box::new(TermQuery::new(
                            Term::from_field_text(f, &w),
                            IndexRecordOption::WithFreqs,
                        )) as Box<dyn Query>,
                    )
                })
                .collect(),
        );
        let s = self.index.searcher();
        // rows of the same image (re-scans, several jobs) collapse into one hit: ask for more
        // rows than hits until enough distinct images are found or the rows run out
        let mut want = limit.saturating_mul(2).max(16);
        loop {
            let top = s.search(
                &q,
                &tantivy::collector::TopDocs::with_limit(want).order_by_score(),
            )?;
            let mut best: Vec<ScreenHit> = Vec::new();
            let mut seen = BTreeSet::new();
            for (score, addr) in &top {
                let row = self.index.row(&s, *addr)?;
                let Some(id) = row.screen.and_then(|x| x.image) else {
                    continue;
                };
                if seen.insert(id.clone()) {
                    best.push(ScreenHit {
                        image: id,
                        score: *score as f64,
                    });
                }
            }
            if best.len() >= limit || top.len() < want {
                // equal scores in a stable order (the image id)
                best.sort_by(|a, b| {
                    b.score
                        .total_cmp(&a.score)
                        .then_with(|| a.image.cmp(&b.image))
                });
                best.truncate(limit);
                return Ok(best);
            }
            want = want.saturating_mul(4);
        }
    }

    /// [`Engine::search`] over the rows of `jobs` only (`None`: every job); host rows too show
    /// only those jobs' ports.
    pub fn search_in(
        &self,
        r: &SearchRequest,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<Page, QueryError> {
        if r.limit == 0 || r.limit > MAX_LIMIT {
            return Err(QueryError::Invalid(format!(
                "limit must be 1..={MAX_LIMIT}"
            )));
        }
        let dl = Deadline::new(r.deadline);
        let q = self.compile_in(&r.query, jobs)?;
        let s = self.index.searcher();
        let hosts = r.view == View::Hosts;
        let (best, matched) = self.page(&s, q.as_ref(), r, jobs, &dl)?;
        dl.check()?;
        let mut page = Page {
            matched: matched as u64,
            ..Default::default()
        };
        let mut best: Vec<_> = best.into_iter().collect();
        if best.len() > r.limit {
            best.truncate(r.limit);
            page.next = best.last().map(|(k, _)| *k);
        }
        for (k, ports) in best {
            dl.check()?;
            if hosts && k.ip != u128::MAX {
                // every port of the host, not only those the query matched: the host row shows
                // the host; latest state per port
                let ip = Ipv6Addr::from(k.ip);
                let services = self.latest_per_port(&s, ip, None, jobs)?;
                let last = services.iter().map(|x| x.last_seen_ms).max().unwrap_or(0);
                page.hosts.push(HostRow {
                    ip: ip_of(ip),
                    last_seen_ms: last,
                    services,
                });
            } else {
                for (_, (_, addr)) in ports {
                    let row = self.index.row(&s, addr)?;
                    if hosts {
                        if let Some(ip) = row.ip {
                            page.hosts.push(HostRow {
                                ip,
                                last_seen_ms: row.last_seen_ms,
                                services: vec![row],
                            });
                        }
                    } else {
                        page.services.push(row);
                    }
                }
            }
        }
        Ok(page)
    }

    /// The first page of matches in (address, port) order, and the number of matches.
    ///
    /// Per segment the matches are marked in a bitset first (a few ns each). When they are
    /// many — a broad filter over 10 M rows matches hundreds of thousands — the page is read by
    /// walking the segment's address dictionary upward from `after` and keeping the marked
    /// documents of each address, until the page is full: a few thousand documents instead of
    /// every match's address from the fast column (`banner:freebsd port:22` at 10 M rows, 575 k
    /// matches: 70 → 25 ms). Few matches are read from the fast column as before,
    /// and so is a segment whose walk ran out of addresses (its rows without an address come
    /// last). A query bounded to a range of addresses (`compile::address_bounds`) walks only
    /// that range, within a budget. A conjunction is marked by [`mark_conjunction`] (window by
    /// window when dense). `plain_paths` turns both off (the reference the tests compare with).
    fn page(
        &self,
        s: &tantivy::Searcher,
        q: &dyn Query,
        r: &SearchRequest,
        jobs: Option<&BTreeSet<u64>>,
        dl: &Deadline,
    ) -> Result<(Best, usize), QueryError> {
        let pc = PageCollector {
            limit: r.limit,
            after: r.after,
            hosts: r.view == View::Hosts,
        };
        let w = q.weight(tantivy::query::EnableScoring::disabled_from_searcher(s))?;
        let ip_field = self.index.fields.get("ip");
        // the query's text was compiled into `q`: it parses
        let e = lang::parse(&r.query)?;
        let bounds =
            crate::compile::address_bounds(&self.registry, &e).filter(|_| !self.plain_paths);
        let scoring = tantivy::query::EnableScoring::disabled_from_searcher(s);
        let conj = match self.conjuncts(&r.query, &e, jobs)? {
            Some(c) if !self.plain_paths => Some((
                c.must
                    .iter()
                    .map(|q| q.weight(scoring))
                    .collect::<tantivy::Result<Vec<_>>>()?,
                c.not
                    .iter()
                    .map(|q| q.weight(scoring))
                    .collect::<tantivy::Result<Vec<_>>>()?,
            )),
            _ => None,
        };
        let mut fruits = Vec::new();
        let mut matched = 0usize;
        for (ord, seg) in s.segment_readers().iter().enumerate() {
            dl.check()?;
            let mut bits = tantivy::BitSet::with_max_value(seg.max_doc().max(1));
            let mut n = 0usize;
            // walking pays when the page fills within a small share of the segment's rows
            let few = 64 * (r.limit + 1);
            let mut small: Vec<DocId> = Vec::new();
            let alive = seg.alive_bitset();
            let mut mark = |docs: &[DocId]| {
                for d in docs {
                    if alive.is_none_or(|a| a.is_alive(*d)) {
                        bits.insert(*d);
                        n += 1;
                        if n <= few {
                            small.push(*d);
                        }
                    }
                }
            };
            match &conj {
                Some((must, not)) => mark_conjunction(seg, must, not, &mut mark)?,
                None => w.for_each_no_score(seg, &mut mark)?,
            }
            matched += n;
            if n == 0 {
                continue;
            }
            let mut ps = pc.for_segment(ord as SegmentOrdinal, seg)?;
            // walking visits about (limit + 1) * max_doc / n documents at ~0.5 us each (a
            // postings list opened per address), reading from the fast column ~40 ns per match.
            // A query bounded to a range of addresses (`net:`, `ip:`) walks that range only, so
            // it is walked whenever its matches are many, with a budget: a walk that has visited
            // a sixteenth as many documents as there are matches without filling the page gives
            // up and the segment is read the ordinary way (its matches were spread thin; the
            // walk costs ~1-2 us per document visited, reading a match ~0.3 us).
            let m = seg.max_doc() as u128;
            let walk = n > few
                && ps.cols.ip.is_some()
                && (bounds.is_some() || (n as u128) * (n as u128) > 16 * (r.limit as u128 + 1) * m);
            let budget = match bounds {
                Some(_) => n / 16,
                None => usize::MAX,
            };
            let mut full = false;
            if walk {
                let inv = seg.inverted_index(ip_field)?;
                let (lo, hi) = bounds.unwrap_or((0, u128::MAX));
                let from = r.after.map(|a| a.ip).unwrap_or(0).max(lo);
                let mut st = inv.terms().range().ge(from.to_be_bytes()).into_stream()?;
                let mut seen = 0usize;
                let mut visited = 0usize;
                while st.advance() {
                    let Ok(k) = <[u8; 16]>::try_from(st.key()) else {
                        continue;
                    };
                    let ip = u128::from_be_bytes(k);
                    if ip > hi {
                        // no match has a later address: the segment is done
                        full = true;
                        break;
                    }
                    let mut p =
                        inv.read_postings_from_terminfo(st.value(), IndexRecordOption::Basic)?;
                    let mut doc = tantivy::DocSet::doc(&p);
                    while doc != tantivy::TERMINATED {
                        if bits.contains(doc) {
                            ps.collect_ip(doc, Some(ip));
                        }
                        doc = tantivy::DocSet::advance(&mut p);
                    }
                    visited += st.value().doc_freq as usize;
                    seen += 1;
                    if seen % 4096 == 0 {
                        dl.check()?;
                    }
                    // every later address sorts after every key kept
                    if ps.best.len() >= ps.limit {
                        full = true;
                        break;
                    }
                    if visited > budget {
                        break;
                    }
                }
                if !full {
                    // out of addresses or of budget: read this segment's matches the ordinary way
                    ps = pc.for_segment(ord as SegmentOrdinal, seg)?;
                }
            }
            if !full && n <= few {
                ps.collect_block(&small);
            } else if !full {
                let mut block = Vec::with_capacity(1024);
                for d in (0..seg.max_doc()).filter(|d| bits.contains(*d)) {
                    block.push(d);
                    if block.len() == 1024 {
                        ps.collect_block(&block);
                        block.clear();
                    }
                }
                ps.collect_block(&block);
            }
            fruits.push(ps.harvest());
        }
        Ok((pc.merge_fruits(fruits)?, matched))
    }

    /// Every row of `ip` (all jobs), oldest first.
    pub fn host_rows(
        &self,
        s: &tantivy::Searcher,
        ip: Ipv6Addr,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<Vec<ServiceState>, QueryError> {
        let t: Box<dyn Query> = Box::new(TermQuery::new(
            Term::from_field_ip_addr(self.index.fields.get("ip"), ip),
            IndexRecordOption::Basic,
        ));
        let q: Box<dyn Query> = match jobs {
            None => t,
            Some(jobs) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, t),
                (Occur::Must, self.jobs_filter(jobs)),
            ])),
        };
        let docs = s.search(&q, &AllDocs)?;
        let mut rows = docs
            .into_iter()
            .map(|a| self.index.row(s, a))
            .collect::<Result<Vec<_>, _>>()?;
        rows.sort_by_key(|a| (a.last_seen_ms, a.job, a.port));
        Ok(rows)
    }

    fn latest_per_port(
        &self,
        s: &tantivy::Searcher,
        ip: Ipv6Addr,
        as_of: Option<u64>,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<Vec<ServiceState>, QueryError> {
        let mut by_port: BTreeMap<u16, ServiceState> = BTreeMap::new();
        for r in self.host_rows(s, ip, jobs)? {
            if as_of.is_some_and(|t| r.first_seen_ms > t) {
                continue;
            }
            by_port.insert(r.port, r);
        }
        Ok(by_port.into_values().collect())
    }

    /// Count and facets (`(field, size)`) over a query.
    pub fn count(
        &self,
        query: &str,
        facets: &[(String, usize)],
        deadline: Duration,
    ) -> Result<Counted, QueryError> {
        self.count_in(query, facets, deadline, None)
    }

    /// [`Engine::count`] over the rows of `jobs` only (`None`: every job).
    pub fn count_in(
        &self,
        query: &str,
        facets: &[(String, usize)],
        deadline: Duration,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<Counted, QueryError> {
        use tantivy::aggregation::agg_req::Aggregations;
        use tantivy::aggregation::{
            AggContextParams, AggregationCollector, AggregationLimitsGuard,
        };
        let dl = Deadline::new(deadline);
        let q = self.compile_in(query, jobs)?;
        let mut req = serde_json::Map::new();
        for (i, (f, n)) in facets.iter().enumerate() {
            let def = self.registry.get(f).ok_or_else(|| {
                QueryError::Invalid(format!(
                    "unknown facet field {f:?}; expected one of: {}",
                    self.registry.names().join(", ")
                ))
            })?;
            if !def.facetable() {
                return Err(QueryError::Invalid(format!(
                    "field {f:?} ({}) cannot be a facet",
                    def.kind.name()
                )));
            }
            let col = match def.column {
                FCol::Builtin(c) => c.to_string(),
                FCol::Ext => format!("ext.{}", crate::fields::ext_key(&def.name)),
            };
            req.insert(format!("f{i}"), serde_json::json!({"terms": {"field": col, "size": n, "segment_size": (n * 10).max(100)}}));
        }
        let s = self.index.searcher();
        if req.is_empty() {
            let n = s.search(&q, &Count)?;
            return Ok(Counted {
                matched: n as u64,
                facets: vec![],
            });
        }
        let aggs: Aggregations = serde_json::from_value(serde_json::Value::Object(req))
            .map_err(|e| QueryError::Invalid(e.to_string()))?;
        let ctx = AggContextParams::new(
            AggregationLimitsGuard::new(Some(512 << 20), Some(65_000)),
            self.index.index.tokenizers().clone(),
        );
        let coll = AggregationCollector::from_aggs(aggs, ctx);
        let (res, n) = s.search(&q, &(coll, Count))?;
        dl.check()?;
        let v = serde_json::to_value(&res).map_err(|e| QueryError::Invalid(e.to_string()))?;
        let mut out = Counted {
            matched: n as u64,
            facets: vec![],
        };
        for (i, (f, _)) in facets.iter().enumerate() {
            let kind = self.registry.get(f).map(|d| d.kind);
            let a = &v[format!("f{i}")];
            let mut facet = Facet {
                field: f.clone(),
                other: a["sum_other_doc_count"].as_u64().unwrap_or(0),
                values: vec![],
            };
            for b in a["buckets"].as_array().into_iter().flatten() {
                let key = &b["key"];
                let value = match (kind, key) {
                    (_, serde_json::Value::String(s)) => s.clone(),
                    (Some(Kind::Ip), k) => k.to_string(),
                    (Some(Kind::Bool), serde_json::Value::Number(n)) => {
                        (n.as_f64() == Some(1.0)).to_string()
                    }
                    (Some(Kind::Date), serde_json::Value::Number(n)) => {
                        // terms over dates: nanoseconds
                        format_ms((n.as_f64().unwrap_or(0.0) / 1e6) as u64)
                    }
                    (_, serde_json::Value::Number(n)) => match n.as_f64() {
                        Some(x) if x.fract() == 0.0 => format!("{}", x as i64),
                        _ => n.to_string(),
                    },
                    (_, k) => k.to_string(),
                };
                facet.values.push(FacetCount {
                    value,
                    count: b["doc_count"].as_u64().unwrap_or(0),
                });
            }
            out.facets.push(facet);
        }
        Ok(out)
    }

    /// Everything known about an address: per port, its history across jobs.
    pub fn host(&self, ip: IpAddr, as_of: Option<u64>) -> Result<HostView, QueryError> {
        self.host_in(ip, as_of, None)
    }

    /// [`Engine::host`] from the rows of `jobs` only (`None`: every job).
    pub fn host_in(
        &self,
        ip: IpAddr,
        as_of: Option<u64>,
        jobs: Option<&BTreeSet<u64>>,
    ) -> Result<HostView, QueryError> {
        let s = self.index.searcher();
        let rows = self.host_rows(&s, crate::index::ip6(ip), jobs)?;
        Ok(host_view(ip, rows, as_of))
    }

    /// Jobs present in the index (from the committed cursors).
    pub fn jobs(&self) -> Vec<u64> {
        self.index.committed().keys().copied().collect()
    }

    /// Rows of one job from the fast columns, sorted by (address, port), one per key; and its
    /// open rows counted per minion and per provider.
    fn job_rows(
        &self,
        s: &tantivy::Searcher,
        job: u64,
        dl: &Deadline,
    ) -> Result<JobRows, QueryError> {
        let q = TermQuery::new(
            Term::from_field_u64(self.index.fields.get("job"), job),
            IndexRecordOption::Basic,
        );
        let mut out = s.search(&q, &JobRowsCollector)?;
        dl.check()?;
        // one row per key: the later document wins (as the index's upsert keeps one)
        out.rows
            .sort_by_key(|r| (r.ip, r.port, r.addr.segment_ord, r.addr.doc_id));
        out.rows.dedup_by(|later, earlier| {
            if (later.ip, later.port) == (earlier.ip, earlier.port) {
                *earlier = *later;
                true
            } else {
                false
            }
        });
        Ok(out)
    }

    /// What changed from job `a` to job `b`. At most `limit` changes are described; the counts
    /// are exact.
    ///
    /// Both jobs' rows are read from the fast columns (address, port, content hash, open,
    /// minion, provider) in one pass each, sorted by key and merge-joined; stored rows are read
    /// only for the changes described. (Per-row hash maps and four facet aggregations for the
    /// minion and provider coverage took 3.4 s at 10 M rows with two 1 M jobs.)
    pub fn diff(
        &self,
        a: u64,
        b: u64,
        limit: usize,
        deadline: Duration,
    ) -> Result<Diff, QueryError> {
        let dl = Deadline::new(deadline);
        let s = self.index.searcher();
        let ja = self.job_rows(&s, a, &dl)?;
        let jb = self.job_rows(&s, b, &dl)?;
        let (ra, rb) = (&ja.rows, &jb.rows);
        let mut d = Diff {
            job_a: a,
            job_b: b,
            rows_a: ra.len() as u64,
            rows_b: rb.len() as u64,
            ..Default::default()
        };
        let v4 = |ip: u128| ip >> 32 == 0xffff;
        let prefix = |ip: u128| -> u128 {
            if v4(ip) {
                ip & !0xff
            } else {
                ip & !((1u128 << 64) - 1)
            }
        };
        let prefix_name = |ip: u128| -> String {
            let a = ip_of(Ipv6Addr::from(ip));
            match a {
                IpAddr::V4(v) => {
                    let o = v.octets();
                    format!("{}.{}.{}.0/24", o[0], o[1], o[2])
                }
                IpAddr::V6(v) => {
                    let s = v.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            }
        };
        let change = |d: &mut Diff,
                      kind: ChangeKind,
                      k: (u128, u16),
                      da: Option<DocAddress>,
                      db: Option<DocAddress>|
         -> Result<(), QueryError> {
            match kind {
                ChangeKind::Opened => d.opened += 1,
                ChangeKind::Closed => d.closed += 1,
                ChangeKind::Changed => d.changed += 1,
            }
            if d.changes.len() < limit {
                let before = da.map(|x| self.index.row(&s, x)).transpose()?;
                let after = db.map(|x| self.index.row(&s, x)).transpose()?;
                let fields = match (&before, &after) {
                    (Some(x), Some(y)) => changed_fields(x, y),
                    _ => vec![],
                };
                d.changes.push(ServiceChange {
                    ip: ip_of(Ipv6Addr::from(k.0)),
                    port: k.1,
                    kind,
                    fields,
                    before,
                    after,
                });
            }
            Ok(())
        };
        // merge-join in key order; coverage per prefix accumulates while the prefix lasts
        let (mut i, mut j) = (0, 0);
        let mut cov: Option<(u128, u64, u64)> = None;
        let mut steps = 0u64;
        while i < ra.len() || j < rb.len() {
            steps += 1;
            if steps % 65536 == 0 {
                dl.check()?;
            }
            let ka = ra.get(i).map(|r| (r.ip, r.port));
            let kb = rb.get(j).map(|r| (r.ip, r.port));
            let (x, y, k) = match (ka, kb) {
                (Some(p), Some(q)) if p == q => {
                    i += 1;
                    j += 1;
                    (Some(&ra[i - 1]), Some(&rb[j - 1]), p)
                }
                (Some(p), Some(q)) if p < q => {
                    i += 1;
                    (Some(&ra[i - 1]), None, p)
                }
                (Some(p), None) => {
                    i += 1;
                    (Some(&ra[i - 1]), None, p)
                }
                (_, Some(q)) => {
                    j += 1;
                    (None, Some(&rb[j - 1]), q)
                }
                (None, None) => break,
            };
            let x = x.filter(|x| x.open);
            let y = y.filter(|y| y.open);
            let pf = prefix(k.0);
            match &mut cov {
                Some(c) if c.0 == pf => {}
                c => {
                    if let Some((p, na, nb)) = c.take()
                        && na != nb
                    {
                        d.coverage_net.push(Coverage {
                            key: prefix_name(p),
                            a: na,
                            b: nb,
                        });
                    }
                    *c = Some((pf, 0, 0));
                }
            }
            let c = cov.as_mut().expect("coverage");
            c.1 += x.is_some() as u64;
            c.2 += y.is_some() as u64;
            match (x, y) {
                (None, Some(y)) => change(&mut d, ChangeKind::Opened, k, None, Some(y.addr))?,
                (Some(x), None) => change(&mut d, ChangeKind::Closed, k, Some(x.addr), None)?,
                (Some(x), Some(y)) if x.chash != y.chash => {
                    change(&mut d, ChangeKind::Changed, k, Some(x.addr), Some(y.addr))?
                }
                (Some(_), Some(_)) => d.unchanged += 1,
                (None, None) => {}
            }
        }
        if let Some((p, na, nb)) = cov
            && na != nb
        {
            d.coverage_net.push(Coverage {
                key: prefix_name(p),
                a: na,
                b: nb,
            });
        }
        for (x, y, out) in [
            (&ja.minions, &jb.minions, &mut d.coverage_minion),
            (&ja.providers, &jb.providers, &mut d.coverage_provider),
        ] {
            let mut m: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
            for (k, n) in x {
                m.entry(k).or_default().0 = *n;
            }
            for (k, n) in y {
                m.entry(k).or_default().1 = *n;
            }
            *out = m
                .into_iter()
                .map(|(k, (x, y))| Coverage {
                    key: k.to_string(),
                    a: x,
                    b: y,
                })
                .collect();
        }
        Ok(d)
    }
}

/// A row of a job as the diff compares it (fast columns only).
#[derive(Clone, Copy)]
struct JobRow {
    ip: u128,
    port: u16,
    chash: u64,
    open: bool,
    addr: DocAddress,
}

#[derive(Default)]
struct JobRows {
    rows: Vec<JobRow>,
    /// Open rows per minion / provider value.
    minions: BTreeMap<String, u64>,
    providers: BTreeMap<String, u64>,
}

struct JobRowsCollector;

struct JobRowsSeg {
    seg: SegmentOrdinal,
    ip: Option<Column<Ipv6Addr>>,
    port: Column<u64>,
    chash: Column<u64>,
    open: Column<bool>,
    minion: Option<tantivy::columnar::StrColumn>,
    provider: Option<tantivy::columnar::StrColumn>,
    /// Open rows per term ordinal of the segment's minion / provider dictionaries.
    minion_n: Vec<u64>,
    provider_n: Vec<u64>,
    rows: Vec<JobRow>,
}

fn str_counts(
    c: &Option<tantivy::columnar::StrColumn>,
    n: &[u64],
    out: &mut BTreeMap<String, u64>,
) {
    let Some(c) = c else { return };
    let mut s = String::new();
    for (ord, k) in n.iter().enumerate() {
        if *k > 0 {
            s.clear();
            if c.ord_to_str(ord as u64, &mut s).unwrap_or(false) {
                *out.entry(s.clone()).or_default() += k;
            }
        }
    }
}

impl SegmentCollector for JobRowsSeg {
    type Fruit = JobRows;
    fn collect(&mut self, doc: DocId, _: Score) {
        let open = self.open.first(doc).unwrap_or(false);
        if open {
            for (c, n) in [
                (&self.minion, &mut self.minion_n),
                (&self.provider, &mut self.provider_n),
            ] {
                if let Some(c) = c {
                    for o in c.term_ords(doc) {
                        n[o as usize] += 1;
                    }
                }
            }
        }
        let Some(ip) = self.ip.as_ref().and_then(|c| c.first(doc)) else {
            return;
        };
        self.rows.push(JobRow {
            ip: u128::from(ip),
            port: self.port.first(doc).unwrap_or(0) as u16,
            chash: self.chash.first(doc).unwrap_or(0),
            open,
            addr: DocAddress::new(self.seg, doc),
        });
    }
    fn harvest(self) -> JobRows {
        let mut out = JobRows {
            rows: self.rows,
            ..Default::default()
        };
        str_counts(&self.minion, &self.minion_n, &mut out.minions);
        str_counts(&self.provider, &self.provider_n, &mut out.providers);
        out
    }
}

impl Collector for JobRowsCollector {
    type Fruit = JobRows;
    type Child = JobRowsSeg;
    fn for_segment(&self, seg: SegmentOrdinal, r: &SegmentReader) -> tantivy::Result<JobRowsSeg> {
        let ff = r.fast_fields();
        let minion = ff.str("minion")?;
        let provider = ff.str("provider")?;
        Ok(JobRowsSeg {
            seg,
            ip: ff.column_opt("ip")?,
            port: ff.u64("port")?,
            chash: ff.u64("chash")?,
            open: ff.bool("open")?,
            minion_n: vec![0; minion.as_ref().map_or(0, |c| c.num_terms())],
            provider_n: vec![0; provider.as_ref().map_or(0, |c| c.num_terms())],
            minion,
            provider,
            rows: Vec::new(),
        })
    }
    fn requires_scoring(&self) -> bool {
        false
    }
    fn merge_fruits(&self, f: Vec<JobRows>) -> tantivy::Result<JobRows> {
        let mut out = JobRows::default();
        for x in f {
            out.rows.extend(x.rows);
            for (k, n) in x.minions {
                *out.minions.entry(k).or_default() += n;
            }
            for (k, n) in x.providers {
                *out.providers.entry(k).or_default() += n;
            }
        }
        Ok(out)
    }
}

pub fn format_ms(ms: u64) -> String {
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60
    )
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Opened,
    Closed,
    Changed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceChange {
    pub ip: IpAddr,
    pub port: u16,
    pub kind: ChangeKind,
    pub fields: Vec<FieldChange>,
    pub before: Option<ServiceState>,
    pub after: Option<ServiceState>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Coverage {
    pub key: String,
    pub a: u64,
    pub b: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub job_a: u64,
    pub job_b: u64,
    pub rows_a: u64,
    pub rows_b: u64,
    pub opened: u64,
    pub closed: u64,
    pub changed: u64,
    pub unchanged: u64,
    pub changes: Vec<ServiceChange>,
    /// Open services per /24 (IPv4) or /64 (IPv6), only prefixes whose count differs.
    pub coverage_net: Vec<Coverage>,
    pub coverage_minion: Vec<Coverage>,
    pub coverage_provider: Vec<Coverage>,
}

/// The compared values of a row (what a change is made of).
pub fn compared(s: &ServiceState) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("open", Some(s.open.to_string())),
        ("service", s.service.clone()),
        ("product", s.product.clone()),
        ("version", s.version.clone()),
        ("tls.sha256", s.tls.as_ref().map(|t| t.sha256.clone())),
        ("banner", s.banner.clone()),
        ("screen", s.screen.as_ref().and_then(|x| x.image.clone())),
    ]
}

pub fn changed_fields(a: &ServiceState, b: &ServiceState) -> Vec<FieldChange> {
    compared(a)
        .into_iter()
        .zip(compared(b))
        .filter(|((_, x), (_, y))| x != y)
        .map(|((f, x), (_, y))| FieldChange {
            field: f.into(),
            from: x,
            to: y,
        })
        .collect()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    pub job: u64,
    pub fields: Vec<FieldChange>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortHistory {
    pub port: u16,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// The state as of the view's time.
    pub current: ServiceState,
    /// Every change, oldest first (the first event is the port's first sighting).
    pub events: Vec<Event>,
    pub jobs: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub ip: IpAddr,
    pub as_of_ms: Option<u64>,
    pub ports: Vec<PortHistory>,
}

/// Pure: a host's rows (any order) → per-port history as of `as_of` (rows first seen after it
/// are left out).
pub fn host_view(ip: IpAddr, mut rows: Vec<ServiceState>, as_of: Option<u64>) -> HostView {
    rows.retain(|r| as_of.is_none_or(|t| r.first_seen_ms <= t));
    rows.sort_by_key(|a| (a.port, a.last_seen_ms, a.job));
    let mut ports: Vec<PortHistory> = Vec::new();
    for r in rows {
        match ports.last_mut() {
            Some(p) if p.port == r.port => {
                let fields = changed_fields(&p.current, &r);
                if !fields.is_empty() {
                    p.events.push(Event {
                        at_ms: r.first_seen_ms,
                        job: r.job,
                        fields,
                    });
                }
                p.first_seen_ms = p.first_seen_ms.min(r.first_seen_ms);
                p.last_seen_ms = p.last_seen_ms.max(r.last_seen_ms);
                if !p.jobs.contains(&r.job) {
                    p.jobs.push(r.job);
                }
                p.current = r;
            }
            _ => {
                let fields = compared(&r)
                    .into_iter()
                    .filter(|(_, v)| v.is_some())
                    .map(|(f, v)| FieldChange {
                        field: f.into(),
                        from: None,
                        to: v,
                    })
                    .collect();
                ports.push(PortHistory {
                    port: r.port,
                    first_seen_ms: r.first_seen_ms,
                    last_seen_ms: r.last_seen_ms,
                    events: vec![Event {
                        at_ms: r.first_seen_ms,
                        job: r.job,
                        fields,
                    }],
                    jobs: vec![r.job],
                    current: r,
                });
            }
        }
    }
    HostView {
        ip,
        as_of_ms: as_of,
        ports,
    }
}
