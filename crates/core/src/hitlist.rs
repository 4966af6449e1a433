//! Hitlists: targets from a file of known addresses (one address or CIDR per line, `#` comments,
//! blank lines; IPv4 and IPv6), streamed, scope-checked line by line and deduplicated exactly with
//! bounded memory, into a sorted file of disjoint ranges that root tasks are cut from.
//!
//! - **Streamed**: [`Builder::push_line`] takes one line at a time; nothing holds the file.
//! - **Dedup, exact, bounded**: parsed ranges are collected in a chunk of at most `chunk_cap`
//!   entries; a full chunk is sorted, merged (overlapping or adjacent ranges of one family become
//!   one) and written as a sorted *run* file; [`Builder::finish`] merges the runs (k-way, one
//!   buffered entry per run) into the final file, merging across runs too. Memory: `chunk_cap`
//!   entries (33 bytes each) + one entry and an 8 KiB read buffer per run; with the default
//!   65,536-entry chunk a 10 M-line file is 153 runs, ≈ 3.4 MB in all. The same address twice
//!   (or inside a CIDR also listed) is one address of one range: probed once.
//! - **Scope**: every line is checked against the scope as it is read; an out-of-scope or
//!   malformed line is refused with its line number ([`HitlistError`]), and nothing is kept.
//! - **Cut into tasks** ([`Hitlist::slice`]): the final file is a header + fixed-size records
//!   `(family, start, end, addresses before)`; the `i`-th block of `n` addresses is found by a
//!   binary search on "addresses before" (`log2(records)` reads of 49 bytes), so a task holds a
//!   list of at most `n` ranges — non-contiguous targets — and the job record holds only the
//!   file's reference ([`HitlistRef`]).

use crate::scope::Scope;
use crate::target::{IpRange, TargetInput, parse_target};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Longest accepted line (bytes); longer lines are refused with their number.
pub const MAX_LINE: usize = 1024;
/// Lines one upload may have (its runs on disk stay ≤ 33 bytes × this, ≈ 3.3 GB).
pub const MAX_LINES: u64 = 100_000_000;
/// Entries kept in memory before a sorted run is written.
pub const DEFAULT_CHUNK: usize = 65_536;
/// Addresses a hitlist may hold in all (the root-task arithmetic stays in u64).
pub const MAX_ADDRESSES: u128 = 1 << 48;
const MAGIC: &[u8; 8] = b"OVLHIT01";
const HEADER: u64 = 8 + 8 + 8;
const REC: u64 = 1 + 16 + 16 + 16;

/// A stored hitlist, as a job spec references it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HitlistRef {
    /// Its id (lowercase hex; the file is `<hitlist dir>/<id>.hit`).
    pub id: String,
    /// Distinct addresses.
    pub addresses: u64,
    /// Disjoint ranges they form.
    pub ranges: u64,
    /// Where the coordinator keeps the file (filled at submission; not from clients).
    #[serde(default)]
    pub path: String,
}

/// What building a hitlist read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildStats {
    pub lines: u64,
    /// Lines that named a target (not blank, not a comment).
    pub entries: u64,
    /// Addresses named by the entries (with repeats).
    pub named: u128,
    /// Distinct addresses kept.
    pub addresses: u64,
    pub ranges: u64,
    /// Sorted runs written (1 = it fit one chunk).
    pub runs: u64,
    /// Most entries held in memory at once.
    pub peak_entries: usize,
}

impl BuildStats {
    /// Addresses named more than once (dropped by the dedup).
    pub fn duplicates(&self) -> u128 {
        self.named.saturating_sub(self.addresses as u128)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HitlistError {
    #[error("hitlist line {line}: {reason}")]
    Line { line: u64, reason: String },
    #[error("hitlist line {line}: {reason}")]
    Scope {
        line: u64,
        range: String,
        reason: String,
    },
    #[error("the hitlist names no address")]
    Empty,
    #[error("the hitlist names more than {MAX_ADDRESSES} addresses; split it")]
    TooLarge,
    #[error("hitlist {id:?}: {reason}")]
    Unknown { id: String, reason: String },
    #[error("hitlist storage: {0}")]
    Io(#[from] std::io::Error),
}

/// One line: `Ok(None)` for blank lines and comments. Host names are refused (a hitlist is
/// addresses; resolving a million names is not a submission step).
pub fn parse_line(line: &str) -> Result<Option<IpRange>, String> {
    let t = line.split('#').next().unwrap_or("").trim();
    if t.is_empty() {
        return Ok(None);
    }
    match parse_target(t).map_err(|e| e.to_string())? {
        TargetInput::Range(r) => Ok(Some(r)),
        TargetInput::Host(h) => Err(format!(
            "{:?} is a host name; a hitlist holds addresses and CIDRs",
            crate::security::clip(&h, 64)
        )),
    }
}

/// A range as a sortable key: (family 4/6, start, end).
type Key = (u8, u128, u128);

fn key(r: &IpRange) -> Key {
    match *r {
        IpRange::V4 { start, end } => (4, start as u128, end as u128),
        IpRange::V6 { start, end } => (6, start, end),
    }
}

fn range(k: Key) -> IpRange {
    if k.0 == 4 {
        IpRange::V4 {
            start: k.1 as u32,
            end: k.2 as u32,
        }
    } else {
        IpRange::V6 {
            start: k.1,
            end: k.2,
        }
    }
}

/// Merges sorted keys into disjoint ones (overlapping or adjacent ranges of a family joined).
struct Merger<F: FnMut(Key) -> std::io::Result<()>> {
    cur: Option<Key>,
    out: F,
}

impl<F: FnMut(Key) -> std::io::Result<()>> Merger<F> {
    fn push(&mut self, k: Key) -> std::io::Result<()> {
        match &mut self.cur {
            Some(c) if c.0 == k.0 && k.1 <= c.2.saturating_add(1) => {
                c.2 = c.2.max(k.2);
                Ok(())
            }
            _ => {
                if let Some(c) = self.cur.replace(k) {
                    (self.out)(c)?;
                }
                Ok(())
            }
        }
    }
    fn finish(mut self) -> std::io::Result<()> {
        if let Some(c) = self.cur.take() {
            (self.out)(c)?;
        }
        Ok(())
    }
}

fn write_key(w: &mut impl Write, k: Key) -> std::io::Result<()> {
    w.write_all(&[k.0])?;
    w.write_all(&k.1.to_be_bytes())?;
    w.write_all(&k.2.to_be_bytes())
}

fn read_key(r: &mut impl Read) -> std::io::Result<Option<Key>> {
    let mut b = [0u8; 33];
    match r.read_exact(&mut b) {
        Ok(()) => Ok(Some((
            b[0],
            u128::from_be_bytes(b[1..17].try_into().expect("16")),
            u128::from_be_bytes(b[17..33].try_into().expect("16")),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Builds a hitlist file from lines, with bounded memory (see the module doc).
pub struct Builder<'a> {
    scope: &'a Scope,
    dir: PathBuf,
    id: String,
    chunk: Vec<Key>,
    chunk_cap: usize,
    runs: Vec<PathBuf>,
    stats: BuildStats,
}

impl<'a> Builder<'a> {
    /// A builder writing `<dir>/<id>.hit` (and its temporary runs in `dir`).
    pub fn new(
        dir: &Path,
        id: &str,
        scope: &'a Scope,
        chunk_cap: usize,
    ) -> Result<Self, HitlistError> {
        if !valid_id(id) {
            return Err(HitlistError::Unknown {
                id: crate::security::clip(id, 64),
                reason: "not a hitlist id".into(),
            });
        }
        std::fs::create_dir_all(dir)?;
        Ok(Builder {
            scope,
            dir: dir.to_path_buf(),
            id: id.to_string(),
            chunk: Vec::with_capacity(chunk_cap.clamp(1, DEFAULT_CHUNK)),
            chunk_cap: chunk_cap.max(1),
            runs: Vec::new(),
            stats: BuildStats::default(),
        })
    }

    /// Reads one line (without its newline).
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), HitlistError> {
        self.stats.lines += 1;
        let n = self.stats.lines;
        if n > MAX_LINES {
            return Err(HitlistError::Line {
                line: n,
                reason: format!("a hitlist has at most {MAX_LINES} lines; split it"),
            });
        }
        if line.len() > MAX_LINE {
            return Err(HitlistError::Line {
                line: n,
                reason: format!("{} bytes long; at most {MAX_LINE}", line.len()),
            });
        }
        let text = std::str::from_utf8(line).map_err(|_| HitlistError::Line {
            line: n,
            reason: "not UTF-8 text".into(),
        })?;
        let Some(r) = parse_line(text).map_err(|reason| HitlistError::Line { line: n, reason })?
        else {
            return Ok(());
        };
        self.scope.check(&[r]).map_err(|e| HitlistError::Scope {
            line: n,
            range: r.to_string(),
            reason: e.to_string(),
        })?;
        self.stats.entries += 1;
        self.stats.named = self.stats.named.saturating_add(r.len());
        self.chunk.push(key(&r));
        self.stats.peak_entries = self.stats.peak_entries.max(self.chunk.len());
        if self.chunk.len() >= self.chunk_cap {
            self.spill()?;
        }
        Ok(())
    }

    /// Sorts, merges and writes the chunk as a run.
    fn spill(&mut self) -> Result<(), HitlistError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        self.chunk.sort_unstable();
        let path = self.dir.join(format!("{}.run{}", self.id, self.runs.len()));
        let mut w = BufWriter::new(File::create(&path)?);
        let mut m = Merger {
            cur: None,
            out: |k| write_key(&mut w, k),
        };
        for k in self.chunk.drain(..) {
            m.push(k)?;
        }
        m.finish()?;
        w.flush()?;
        self.runs.push(path);
        self.stats.runs += 1;
        Ok(())
    }

    /// Merges the runs into the final file; its reference and what was read.
    pub fn finish(mut self) -> Result<(HitlistRef, BuildStats), HitlistError> {
        let result = self.merge();
        for r in &self.runs {
            let _ = std::fs::remove_file(r);
        }
        if result.is_err() {
            let _ = std::fs::remove_file(path_of(&self.dir, &self.id));
        }
        result
    }

    fn merge(&mut self) -> Result<(HitlistRef, BuildStats), HitlistError> {
        self.spill()?;
        let mut readers: Vec<BufReader<File>> = self
            .runs
            .iter()
            .map(|p| File::open(p).map(|f| BufReader::with_capacity(8192, f)))
            .collect::<std::io::Result<_>>()?;
        let mut heap = BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(k) = read_key(r)? {
                heap.push(Reverse((k, i)));
            }
        }
        let final_path = path_of(&self.dir, &self.id);
        let mut w = BufWriter::new(File::create(&final_path)?);
        w.write_all(&[0u8; HEADER as usize])?;
        let (mut records, mut before) = (0u64, 0u128);
        {
            let mut m = Merger {
                cur: None,
                out: |k: Key| {
                    write_key(&mut w, k)?;
                    w.write_all(&before.to_be_bytes())?;
                    records += 1;
                    before += k.2 - k.1 + 1;
                    if before > MAX_ADDRESSES {
                        return Err(std::io::Error::other("too large"));
                    }
                    Ok(())
                },
            };
            while let Some(Reverse((k, i))) = heap.pop() {
                m.push(k).map_err(|e| too_large(e))?;
                if let Some(n) = read_key(&mut readers[i])? {
                    heap.push(Reverse((n, i)));
                }
            }
            m.finish().map_err(too_large)?;
        }
        if records == 0 {
            return Err(HitlistError::Empty);
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        let mut h = Vec::with_capacity(HEADER as usize);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&records.to_be_bytes());
        h.extend_from_slice(&(before as u64).to_be_bytes());
        f.write_all_at(&h, 0)?;
        f.sync_all()?;
        self.stats.addresses = before as u64;
        self.stats.ranges = records;
        Ok((
            HitlistRef {
                id: self.id.clone(),
                addresses: before as u64,
                ranges: records,
                path: final_path.display().to_string(),
            },
            self.stats.clone(),
        ))
    }
}

fn too_large(e: std::io::Error) -> HitlistError {
    if e.to_string() == "too large" {
        HitlistError::TooLarge
    } else {
        HitlistError::Io(e)
    }
}

/// Whether `id` is a hitlist id (8–64 lowercase hex digits: safe as a file name).
pub fn valid_id(id: &str) -> bool {
    (8..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The file of hitlist `id` in `dir`.
pub fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.hit"))
}

/// A stored hitlist, open for cutting into tasks.
pub struct Hitlist {
    file: File,
    pub records: u64,
    pub addresses: u64,
}

impl Hitlist {
    pub fn open(dir: &Path, id: &str) -> Result<Hitlist, HitlistError> {
        if !valid_id(id) {
            return Err(HitlistError::Unknown {
                id: crate::security::clip(id, 64),
                reason: "not a hitlist id".into(),
            });
        }
        Self::open_path(&path_of(dir, id))
    }

    /// Opens a hitlist file by its path.
    pub fn open_path(path: &Path) -> Result<Hitlist, HitlistError> {
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bad = |reason: &str| HitlistError::Unknown {
            id: crate::security::clip(&id, 64),
            reason: reason.into(),
        };
        let file = File::open(path).map_err(|e| bad(&e.to_string()))?;
        let mut h = [0u8; HEADER as usize];
        file.read_exact_at(&mut h, 0)
            .map_err(|_| bad("truncated header"))?;
        if &h[..8] != MAGIC {
            return Err(bad("not a hitlist file"));
        }
        let records = u64::from_be_bytes(h[8..16].try_into().expect("8"));
        let addresses = u64::from_be_bytes(h[16..24].try_into().expect("8"));
        if file.metadata()?.len() != HEADER + records * REC {
            return Err(bad("size does not match its header"));
        }
        Ok(Hitlist {
            file,
            records,
            addresses,
        })
    }

    /// The reference a job spec keeps.
    pub fn reference(&self, dir: &Path, id: &str) -> HitlistRef {
        HitlistRef {
            id: id.to_string(),
            addresses: self.addresses,
            ranges: self.records,
            path: path_of(dir, id).display().to_string(),
        }
    }

    fn record(&self, i: u64) -> std::io::Result<(Key, u128)> {
        let mut b = [0u8; REC as usize];
        self.file.read_exact_at(&mut b, HEADER + i * REC)?;
        let k = (
            b[0],
            u128::from_be_bytes(b[1..17].try_into().expect("16")),
            u128::from_be_bytes(b[17..33].try_into().expect("16")),
        );
        Ok((k, u128::from_be_bytes(b[33..49].try_into().expect("16"))))
    }

    /// Addresses `first .. first + count` (in the file's sorted order) as ranges, in order.
    pub fn slice(&self, first: u64, count: u64) -> std::io::Result<Vec<IpRange>> {
        let mut out = Vec::new();
        if first >= self.addresses || count == 0 || self.records == 0 {
            return Ok(out);
        }
        // The last record whose `before` ≤ first.
        let (mut lo, mut hi) = (0u64, self.records - 1);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.record(mid)?.1 <= first as u128 {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let mut want = count.min(self.addresses - first) as u128;
        let mut i = lo;
        let mut at = first as u128;
        while want > 0 && i < self.records {
            let (k, before) = self.record(i)?;
            let off = at - before;
            let len = (k.2 - k.1 + 1 - off).min(want);
            out.push(range((k.0, k.1 + off, k.1 + off + len - 1)));
            want -= len;
            at += len;
            i += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(lines: &[&str], cap: usize) -> (tempfile_dir::Dir, HitlistRef, BuildStats) {
        let d = tempfile_dir::Dir::new();
        let scope = Scope::loopback();
        let mut b = Builder::new(&d.0, "00c0ffee", &scope, cap).unwrap();
        for l in lines {
            b.push_line(l.as_bytes()).unwrap();
        }
        let (r, s) = b.finish().unwrap();
        (d, r, s)
    }

    /// A temp dir without a dev-dependency.
    mod tempfile_dir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ovl-hitlist-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn lines_comments_blanks_and_hosts() {
        assert_eq!(parse_line("  # a comment").unwrap(), None);
        assert_eq!(parse_line("").unwrap(), None);
        assert_eq!(
            parse_line("127.0.0.1 # the host").unwrap(),
            Some(IpRange::single("127.0.0.1".parse().unwrap()))
        );
        assert_eq!(parse_line("::1").unwrap().unwrap().len(), 1);
        assert_eq!(parse_line("127.0.0.0/30").unwrap().unwrap().len(), 4);
        assert!(parse_line("example.com").unwrap_err().contains("host name"));
        assert!(parse_line("127.0.0.300").is_err());
    }

    #[test]
    fn duplicates_and_overlaps_are_one_address_across_runs() {
        // A chunk of 2 entries: 4 runs, dedup across them.
        let (d, r, s) = build(
            &[
                "# loopback hitlist",
                "127.0.0.5",
                "::1",
                "",
                "127.0.0.5",
                "127.0.0.4/31",
                "::1",
                "127.0.0.9",
            ],
            2,
        );
        assert_eq!(s.runs, 3);
        assert!(s.peak_entries <= 2);
        assert_eq!(s.lines, 8);
        assert_eq!(s.entries, 6);
        assert_eq!(r.addresses, 4, "127.0.0.4, .5, .9 and ::1");
        assert_eq!(s.duplicates(), 3);
        assert_eq!(r.ranges, 3);
        let h = Hitlist::open(&d.0, &r.id).unwrap();
        let all = h.slice(0, 100).unwrap();
        let text: Vec<String> = all.iter().map(|r| r.to_string()).collect();
        assert_eq!(text, vec!["127.0.0.4/31", "127.0.0.9", "::1"]);
        // Cut into blocks of 2 addresses: every address exactly once.
        let b: Vec<Vec<String>> = (0..2)
            .map(|i| {
                h.slice(i * 2, 2)
                    .unwrap()
                    .iter()
                    .map(|r| r.to_string())
                    .collect()
            })
            .collect();
        assert_eq!(b[0], vec!["127.0.0.4/31"]);
        assert_eq!(b[1], vec!["127.0.0.9", "::1"]);
        assert!(h.slice(4, 2).unwrap().is_empty());
    }

    #[test]
    fn bad_and_out_of_scope_lines_are_refused_with_their_number() {
        let d = tempfile_dir::Dir::new();
        let scope = Scope::loopback();
        let mut b = Builder::new(&d.0, "0badf00d", &scope, 16).unwrap();
        b.push_line(b"127.0.0.1").unwrap();
        b.push_line(b"# fine").unwrap();
        let e = b.push_line(b"127.0.0.999").unwrap_err();
        assert!(e.to_string().starts_with("hitlist line 3: "), "{e}");
        let e = b.push_line(b"10.0.0.1").unwrap_err();
        assert!(
            e.to_string().starts_with("hitlist line 4: ") && e.to_string().contains("out of scope"),
            "{e}"
        );
        let e = b.push_line(&[b'1'; 2000]).unwrap_err();
        assert!(e.to_string().contains("line 5"), "{e}");
        let e = b.push_line(b"::2").unwrap_err();
        assert!(
            e.to_string().contains("line 6") && e.to_string().contains("out of scope"),
            "{e}"
        );
        let d2 = tempfile_dir::Dir::new();
        let b = Builder::new(&d2.0, "0badf00d", &scope, 16).unwrap();
        assert!(matches!(b.finish(), Err(HitlistError::Empty)));
        assert!(!valid_id("../etc") && !valid_id("ABCDEF01") && valid_id("abcdef01"));
    }

    #[test]
    fn large_scattered_list_each_address_once_with_bounded_memory() {
        // 20,000 addresses spread over 127/8, each listed twice, in a keyed random order; a
        // chunk of 1,000 entries.
        let mut v: Vec<u32> = (0..20_000u32)
            .map(|i| 0x7f00_0000 | (i * 797 % 0xff_ffff))
            .collect();
        v.extend(v.clone());
        let mut z = 7u64;
        for i in (1..v.len()).rev() {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            v.swap(i, (z >> 33) as usize % (i + 1));
        }
        let lines: Vec<String> = v
            .iter()
            .map(|a| std::net::Ipv4Addr::from(*a).to_string())
            .collect();
        let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
        let (d, r, s) = build(&refs, 1000);
        assert!(s.peak_entries <= 1000);
        assert_eq!(s.runs, 40);
        let mut want: Vec<u32> = v.clone();
        want.sort_unstable();
        want.dedup();
        assert_eq!(r.addresses, want.len() as u64);
        let h = Hitlist::open(&d.0, &r.id).unwrap();
        let mut got = Vec::new();
        let mut first = 0;
        while first < h.addresses {
            let block = h.slice(first, 512).unwrap();
            assert!(block.len() <= 512);
            for r in block {
                for i in 0..r.len() {
                    match r.nth(i) {
                        std::net::IpAddr::V4(a) => got.push(u32::from(a)),
                        _ => unreachable!(),
                    }
                }
            }
            first += 512;
        }
        assert_eq!(got, want, "every address once, in order");
    }
}
