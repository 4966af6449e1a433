//! Local leak database: leaked addresses with their source and date, imported from a file and
//! stored in sled (tree `leak`, key `lower(address) 0x00 source 0x00 date`, empty value).

use crate::error::EnrichError;
use overlord_storage::kv::{KvBatch, KvDb, KvTree};
use serde::{Deserialize, Serialize};
use std::io::BufRead;

/// A known address's leak record: the finding schema's record.
pub use overlord_core::finding::enrichment::LeakRecord;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub imported: u64,
    /// Malformed lines, each with its 1-based number and the reason; they are skipped.
    pub rejected: Vec<(usize, String)>,
}

/// The leak database.
#[derive(Clone)]
pub struct LeakDb {
    tree: KvTree,
}

/// Is this a plausible e-mail address (one '@', non-empty local part, dotted domain)?
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == '\0')
}

impl LeakDb {
    pub fn open(db: &KvDb) -> Result<LeakDb, EnrichError> {
        Ok(LeakDb {
            tree: db.open_tree("leak")?,
        })
    }

    /// A leak database in a temporary sled directory (removed on drop), e.g. for the CLI's
    /// `images analyze --leaks FILE`.
    pub fn temporary() -> Result<LeakDb, EnrichError> {
        LeakDb::open(&KvDb::temporary()?)
    }

    fn key(r: &LeakRecord) -> Vec<u8> {
        format!("{}\0{}\0{}", r.address.to_lowercase(), r.source, r.date).into_bytes()
    }

    /// Adds one record (idempotent).
    pub fn add(&self, r: &LeakRecord) -> Result<(), EnrichError> {
        self.tree.insert(Self::key(r), &[])?;
        Ok(())
    }

    /// Imports `address,source,date` lines (CSV without quoting; `#` comments, blank lines and a
    /// header line starting with `address` are ignored). Malformed lines are reported, not fatal.
    pub fn import(&self, reader: impl BufRead) -> Result<ImportReport, EnrichError> {
        let mut report = ImportReport::default();
        let mut batch = KvBatch::default();
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| EnrichError::LeakLine {
                line: n,
                reason: e.to_string(),
            })?;
            let t = line.trim();
            if t.is_empty()
                || t.starts_with('#')
                || (n == 1 && t.to_lowercase().starts_with("address"))
            {
                continue;
            }
            let parts: Vec<&str> = t.split(',').map(str::trim).collect();
            if parts.len() != 3 {
                report.rejected.push((
                    n,
                    format!("expected 3 fields address,source,date, got {}", parts.len()),
                ));
                continue;
            }
            if !plausible_address(parts[0]) {
                report
                    .rejected
                    .push((n, format!("not an e-mail address: {:?}", parts[0])));
                continue;
            }
            if parts[1].is_empty() || parts[1].contains('\0') || parts[2].contains('\0') {
                report.rejected.push((n, "empty source".into()));
                continue;
            }
            let r = LeakRecord {
                address: parts[0].into(),
                source: parts[1].into(),
                date: parts[2].into(),
            };
            batch.insert(Self::key(&r), &[]);
            report.imported += 1;
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(report)
    }

    /// Imports a file (see [`LeakDb::import`]).
    pub fn import_file(&self, path: &std::path::Path) -> Result<ImportReport, EnrichError> {
        let f = std::fs::File::open(path).map_err(|e| EnrichError::Io {
            path: path.display().to_string(),
            source: e,
        })?;
        self.import(std::io::BufReader::new(f))
    }

    /// Every leak of `address` (case-insensitive).
    pub fn lookup(&self, address: &str) -> Result<Vec<LeakRecord>, EnrichError> {
        let prefix = format!("{}\0", address.to_lowercase());
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(prefix.as_bytes()) {
            let (k, _) = kv?;
            let s = String::from_utf8_lossy(&k);
            let mut it = s.splitn(3, '\0');
            let (_, source, date) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
            out.push(LeakRecord {
                address: address.to_lowercase(),
                source: source.into(),
                date: date.into(),
            });
        }
        Ok(out)
    }

    /// Leaks of an address *as read by OCR*: the address itself first; when it is unknown, the
    /// readings it may stand for ([`ocr_variants`], at most two confusions, fewest first) are
    /// looked up. Returns the known address that matched (lower case) with its records, or
    /// `None` when neither the address nor a variant is known.
    pub fn lookup_read(
        &self,
        read: &str,
    ) -> Result<Option<(String, Vec<LeakRecord>)>, EnrichError> {
        let read = read.trim().to_lowercase();
        for cand in std::iter::once(read.clone()).chain(ocr_variants(&read, 2)) {
            let recs = self.lookup(&cand)?;
            if !recs.is_empty() {
                return Ok(Some((cand, recs)));
            }
        }
        Ok(None)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}

/// Most variants [`ocr_variants`] returns.
pub const MAX_VARIANTS: usize = 512;

/// Readings an OCR'd address may stand for, with up to `max_edits` typical tesseract confusions
/// on screen fonts: `l`↔`1`, `o`↔`0`, `t`→`+` and a `t` beside a `+` dropped (a small `+` read as
/// `t` or `t+`), `rn`→`m`. Lower case, without the address itself, fewest edits first, at most
/// [`MAX_VARIANTS`]; each is still a plausible address.
pub fn ocr_variants(address: &str, max_edits: usize) -> Vec<String> {
    fn one_edit(a: &str) -> Vec<String> {
        let b: Vec<char> = a.chars().collect();
        let at = b.iter().position(|c| *c == '@').unwrap_or(b.len());
        let mut out = Vec::new();
        let with = |i: usize, n: usize, rep: &str| -> String {
            let mut s: String = b[..i].iter().collect();
            s.push_str(rep);
            s.extend(&b[i + n..]);
            s
        };
        for i in 0..b.len() {
            match b[i] {
                'l' => out.push(with(i, 1, "1")),
                '1' => out.push(with(i, 1, "l")),
                'o' => out.push(with(i, 1, "0")),
                '0' => out.push(with(i, 1, "o")),
                // `+` only in the local part
                't' if i < at => {
                    out.push(with(i, 1, "+"));
                    if b.get(i + 1) == Some(&'+') || (i > 0 && b[i - 1] == '+') {
                        out.push(with(i, 1, ""));
                    }
                }
                'r' if b.get(i + 1) == Some(&'n') => out.push(with(i, 2, "m")),
                _ => {}
            }
        }
        out
    }
    let start = address.trim().to_lowercase();
    let mut seen: std::collections::HashSet<String> = [start.clone()].into_iter().collect();
    let mut out = Vec::new();
    let mut frontier = vec![start];
    for _ in 0..max_edits {
        let mut next = Vec::new();
        for a in &frontier {
            for v in one_edit(a) {
                if out.len() >= MAX_VARIANTS {
                    return out;
                }
                if plausible_address(&v) && seen.insert(v.clone()) {
                    out.push(v.clone());
                    next.push(v);
                }
            }
        }
        frontier = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ocr_readings_find_the_leaked_address() {
        let db = LeakDb::temporary().unwrap();
        db.import(
            "sec+alerts@mx1.example.io,combo,2020-01-01\nj.doe@example.com,forum,2021-02-02\n"
                .as_bytes(),
        )
        .unwrap();
        // exact (any case)
        let (a, r) = db.lookup_read("J.Doe@Example.com").unwrap().unwrap();
        assert_eq!((a.as_str(), r.len()), ("j.doe@example.com", 1));
        // `+` read as `t`, `1` read as `l`: two confusions
        for read in [
            "sectalerts@mx1.example.io",
            "sec+talerts@mx1.example.io",
            "sect+alerts@mxl.example.io",
            "sec+alerts@mxl.example.io",
        ] {
            let (a, r) = db
                .lookup_read(read)
                .unwrap()
                .unwrap_or_else(|| panic!("{read} not matched"));
            assert_eq!(a, "sec+alerts@mx1.example.io", "{read}");
            assert_eq!(r[0].source, "combo");
        }
        // three confusions, or a different address: no match
        assert!(
            db.lookup_read("sectalerts@mxl.exampie.io")
                .unwrap()
                .is_none()
        );
        assert!(db.lookup_read("jdoe@example.com").unwrap().is_none());
        assert!(db.lookup_read("bob@example.com").unwrap().is_none());
    }

    #[test]
    fn variants_are_bounded_plausible_and_ordered_by_edits() {
        let v = ocr_variants("lol@ollo.io", 2);
        assert!(v.len() <= MAX_VARIANTS);
        assert!(v.iter().all(|a| plausible_address(a)));
        assert!(!v.contains(&"lol@ollo.io".to_string()));
        assert_eq!(v[0], "1ol@ollo.io", "one-edit variants come first");
        let long = "lllllllllllllllllllllllllllllllllllllllll@lllllllllllllll.lo";
        assert_eq!(ocr_variants(long, 2).len(), MAX_VARIANTS);
        // `+` never enters the domain
        assert!(
            ocr_variants("a@test.com", 1)
                .iter()
                .all(|a| !a.contains('+'))
        );
    }
}
