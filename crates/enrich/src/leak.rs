//! Local leak database: leaked addresses with their source and date, imported from a file and
//! stored in sled (tree `leak`, key `lower(address) 0x00 source 0x00 date`, empty value).

use crate::error::EnrichError;
use serde::{Deserialize, Serialize};
use std::io::BufRead;

/// One leak record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeakRecord {
    pub address: String,
    pub source: String,
    pub date: String,
}

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
    tree: sled::Tree,
}

/// Is this a plausible e-mail address (one '@', non-empty local part, dotted domain)?
pub fn plausible_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else { return false };
    !local.is_empty()
        && domain.contains('.')
        && !domain.contains('@')
        && !a.chars().any(|c| c.is_whitespace() || c == ',' || c == '\0')
}

impl LeakDb {
    pub fn open(db: &sled::Db) -> Result<LeakDb, EnrichError> {
        Ok(LeakDb { tree: db.open_tree("leak")? })
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
        let mut batch = sled::Batch::default();
        for (i, line) in reader.lines().enumerate() {
            let n = i + 1;
            let line = line.map_err(|e| EnrichError::LeakLine { line: n, reason: e.to_string() })?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || (n == 1 && t.to_lowercase().starts_with("address")) {
                continue;
            }
            let parts: Vec<&str> = t.split(',').map(str::trim).collect();
            if parts.len() != 3 {
                report.rejected.push((n, format!("expected 3 fields address,source,date, got {}", parts.len())));
                continue;
            }
            if !plausible_address(parts[0]) {
                report.rejected.push((n, format!("not an e-mail address: {:?}", parts[0])));
                continue;
            }
            if parts[1].is_empty() || parts[1].contains('\0') || parts[2].contains('\0') {
                report.rejected.push((n, "empty source".into()));
                continue;
            }
            let r = LeakRecord { address: parts[0].into(), source: parts[1].into(), date: parts[2].into() };
            batch.insert(Self::key(&r), &[]);
            report.imported += 1;
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush()?;
        Ok(report)
    }

    /// Imports a file (see [`LeakDb::import`]).
    pub fn import_file(&self, path: &std::path::Path) -> Result<ImportReport, EnrichError> {
        let f = std::fs::File::open(path)
            .map_err(|e| EnrichError::Io { path: path.display().to_string(), source: e })?;
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
            out.push(LeakRecord { address: address.to_lowercase(), source: source.into(), date: date.into() });
        }
        Ok(out)
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }
}
