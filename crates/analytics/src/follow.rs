//! Live mode: follow a Zeek log directory as Zeek writes it.
//!
//! * Every poll, each `*.log` / `*.json` file of the directory (and its date subdirectories) is
//!   read from where the last poll stopped, up to its last complete line. Files are tracked by
//!   inode, so a log renamed by rotation (`conn.log` → `conn.10:00:00-11:00:00.log`) is read on
//!   from the same offset, and a new `conn.log` starts at 0. A file that shrank was truncated and
//!   is read again from 0.
//! * gzip archives (`*.log.gz`) are read whole once, at start-up only (back-fill): an archive
//!   appearing later is the compressed copy of a log already followed and is skipped.
//! * TSV header lines (`#fields` ...) of each file are kept and put in front of every new chunk,
//!   so the stateless line parser knows the columns; JSON lines need nothing.
//! * The scorer keeps one sliding window (24 h by default) per key: after each poll, events older
//!   than the newest event minus the window are evicted, bounded further by `max_keys` and
//!   `max_events_per_key`.
//! * The decision to report is [`Transitions::update`]: a key is reported when it first
//!   crosses the threshold and again only when its class (beacon / not) changes.
//! * Untrusted directories (the minion's `beacon` task with `follow`): files are opened without
//!   following a symlink and without blocking (a FIFO is skipped), a subdirectory must resolve
//!   inside the followed directory, at most [`MAX_FILES`] files are looked at per poll and at
//!   most 64 MiB read per file per poll; a file that is not a Zeek log is counted
//!   ([`Follower::file_errors`]) and skipped, never fatal.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::report::Finding;
use crate::{AnalyticsError, BeaconConfig, Scorer};

/// Files looked at per poll (the newest names sort last and are kept).
pub const MAX_FILES: usize = 4096;
/// Decompressed bytes read from one gzip archive at start-up.
const MAX_GZ_BYTES: u64 = 4 << 30;

/// Opens a regular file without following a symlink or blocking on a FIFO.
fn open_plain(p: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(0o4000 | 0o400000); // O_NONBLOCK | O_NOFOLLOW
    }
    let f = o.open(p)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(f)
}

struct Tail {
    offset: u64,
    header: Vec<u8>,
    in_header: bool,
    /// Not a readable Zeek log: not looked at again.
    skip: bool,
}

/// A followed directory.
pub struct Follower {
    dir: PathBuf,
    scorer: Scorer,
    tails: HashMap<(u64, u64), Tail>,
    started: bool,
    window_us: i64,
    transitions: Transitions,
    pub lines: u64,
    /// Read counters over every poll (lines, records, bad lines with the first reasons).
    pub stats: crate::zeek::ReadStats,
    /// Files skipped because they could not be read or are not Zeek logs.
    pub file_errors: u64,
    /// The first few of those, as "name: reason".
    pub file_error_examples: Vec<String>,
    /// Sequences scored at the last rescoring.
    pub last_scored: u64,
}

/// Class memory per key: which keys were last reported as beacons.
#[derive(Default)]
pub struct Transitions {
    class: HashMap<String, bool>,
}

impl Transitions {
    /// Keys whose last reported class is beacon.
    pub fn beacons(&self) -> usize {
        self.class.values().filter(|b| **b).count()
    }

    /// The findings to emit now: keys whose class differs from the last one reported (a key
    /// never reported is emitted only when it is a beacon). A key that was reported as a beacon
    /// and no longer appears in `findings` (scored too low, or evicted) turns benign silently
    /// only when it is scored again.
    pub fn update<'a>(&mut self, findings: &'a [Finding]) -> Vec<&'a Finding> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, bool> = HashMap::new();
        for f in findings {
            let k = f.key();
            let b = seen.entry(k).or_insert(false);
            *b |= f.is_beacon;
        }
        for f in findings {
            let k = f.key();
            let now = seen[&k];
            // one finding per key: the best-ranked one of its class
            if now != f.is_beacon {
                continue;
            }
            let before = self.class.get(&k).copied();
            let emit = match before {
                None => now,
                Some(b) => b != now,
            };
            if emit {
                self.class.insert(k, now);
                out.push(f);
            }
        }
        out
    }
}

impl Follower {
    pub fn new(dir: &Path, cfg: &BeaconConfig) -> Result<Follower, AnalyticsError> {
        let mut cfg = cfg.clone();
        // everything is scored; what to emit is decided by the transitions
        cfg.min_report_score = 0.0;
        Ok(Follower {
            dir: dir.to_path_buf(),
            window_us: (cfg.window_secs * 1e6) as i64,
            scorer: Scorer::new(&cfg)?,
            tails: HashMap::new(),
            started: false,
            transitions: Transitions::default(),
            lines: 0,
            stats: Default::default(),
            file_errors: 0,
            file_error_examples: Vec::new(),
            last_scored: 0,
        })
    }

    fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![(self.dir.clone(), 0)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() && depth < 1 {
                    // a subdirectory swapped for a symlink after listing must not lead out
                    if std::fs::canonicalize(&p).is_ok_and(|c| c.starts_with(&self.dir)) {
                        stack.push((p, depth + 1));
                    }
                } else if ft.is_file() {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if crate::zeek::LogKind::from_file_name(&p).is_some()
                        && (n.ends_with(".log") || n.ends_with(".json") || n.ends_with(".gz"))
                    {
                        out.push(p);
                    }
                }
            }
        }
        out.sort();
        if out.len() > MAX_FILES {
            tracing::warn!(
                files = out.len(),
                kept = MAX_FILES,
                "too many files to follow"
            );
            out.drain(..out.len() - MAX_FILES);
        }
        out
    }

    fn file_error(&mut self, p: &Path, e: &dyn std::fmt::Display) {
        self.file_errors += 1;
        if self.file_error_examples.len() < 5 {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("?");
            self.file_error_examples.push(format!("{n}: {e}"));
        }
    }

    fn count(&mut self, st: &crate::zeek::ReadStats) -> u64 {
        self.stats.merge(st);
        st.lines
    }

    /// Read whatever was appended since the last poll. Returns the lines read.
    pub fn poll(&mut self) -> Result<u64, AnalyticsError> {
        let first = !self.started;
        self.started = true;
        let mut read = 0u64;
        let mut live: std::collections::HashSet<(u64, u64)> = Default::default();
        for p in self.files() {
            let Ok(md) = std::fs::metadata(&p) else {
                continue; // rotated away between listing and reading
            };
            let id = (md.dev(), md.ino());
            live.insert(id);
            let gz = p.extension().is_some_and(|e| e == "gz");
            if gz {
                if first && !self.tails.contains_key(&id) {
                    let r = open_plain(&p)
                        .map_err(|e| AnalyticsError::io(&p, e))
                        .and_then(|f| {
                            let dec = flate2::read::MultiGzDecoder::new(std::io::BufReader::new(f));
                            let r =
                                std::io::BufReader::with_capacity(1 << 20, dec.take(MAX_GZ_BYTES));
                            let name = p.display().to_string();
                            let hint = crate::zeek::LogKind::from_file_name(&p);
                            self.scorer
                                .add_reader(&name, r, hint)
                                .map(|st| st.stats.clone())
                        });
                    match r {
                        Ok(st) => read += self.count(&st),
                        Err(e) => self.file_error(&p, &e),
                    }
                }
                self.tails.entry(id).or_insert(Tail {
                    offset: md.len(),
                    header: Vec::new(),
                    in_header: false,
                    skip: false,
                });
                continue;
            }
            let tail = self.tails.entry(id).or_insert(Tail {
                offset: 0,
                header: Vec::new(),
                in_header: true,
                skip: false,
            });
            if tail.skip {
                continue;
            }
            if md.len() < tail.offset {
                // truncated in place
                *tail = Tail {
                    offset: 0,
                    header: Vec::new(),
                    in_header: true,
                    skip: false,
                };
            }
            if md.len() == tail.offset {
                continue;
            }
            let mut buf = Vec::new();
            let got = open_plain(&p).and_then(|mut f| {
                f.seek(SeekFrom::Start(tail.offset))?;
                f.take(64 << 20).read_to_end(&mut buf)
            });
            if let Err(e) = got {
                // unreadable (a FIFO, a symlink swapped in, permissions): skipped from here on
                tail.skip = true;
                let e = AnalyticsError::io(&p, e);
                self.file_error(&p, &e);
                continue;
            }
            let Some(end) = memchr::memrchr(b'\n', &buf) else {
                continue; // no complete line yet
            };
            buf.truncate(end + 1);
            tail.offset += buf.len() as u64;
            // keep the header lines seen at the start of the file
            let mut body_from = 0;
            if tail.in_header {
                let mut at = 0;
                while at < buf.len() && buf[at] == b'#' {
                    let nl = at + memchr::memchr(b'\n', &buf[at..]).expect("complete lines");
                    tail.header.extend_from_slice(&buf[at..=nl]);
                    at = nl + 1;
                }
                if at < buf.len() {
                    tail.in_header = false;
                }
                body_from = at;
            }
            let mut chunk = tail.header.clone();
            chunk.extend_from_slice(&buf[body_from..]);
            let hint = crate::zeek::LogKind::from_file_name(&p);
            let name = p.display().to_string();
            match self
                .scorer
                .add_reader(&name, std::io::Cursor::new(chunk), hint)
            {
                Ok(st) => {
                    let st = st.stats.clone();
                    read += self.count(&st);
                }
                Err(e) => {
                    // not a Zeek log we read (e.g. an unsupported #path): skipped from here on
                    if let Some(t) = self.tails.get_mut(&id) {
                        t.skip = true;
                    }
                    self.file_error(&p, &e);
                }
            }
        }
        // files gone for good (deleted archives) are forgotten
        self.tails.retain(|id, _| live.contains(id));
        self.lines += read;
        Ok(read)
    }

    /// Slide the window to the newest event and score; returns the findings to emit now.
    pub fn score(&mut self) -> Result<Vec<Finding>, AnalyticsError> {
        if let Some(max) = self.scorer.max_ts_us() {
            self.scorer.evict_before(max - self.window_us + 1);
        }
        let report = self.scorer.score_now()?;
        self.last_scored = report.scored;
        self.scorer.forget_files();
        Ok(self
            .transitions
            .update(&report.findings)
            .into_iter()
            .cloned()
            .collect())
    }

    /// Keys whose last reported class is beacon.
    pub fn beacons(&self) -> usize {
        self.transitions.beacons()
    }

    /// Keys and events held (bounded by the window, `max_keys`, `max_events_per_key`).
    pub fn held(&self) -> (usize, usize) {
        self.scorer.held()
    }
}
