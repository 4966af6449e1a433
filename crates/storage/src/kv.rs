//! Named ordered byte trees for the stores beside the coordinator's [`Store`](crate::Store): the
//! enrichment store and its indexes (similar images, OCR text, tags), the leak database, the
//! image metadata. Their key layouts and record versions live with their owners (enrich,
//! coordinator `images.rs`); the engine stays here: no sled type is part of this API, so the
//! engine can be replaced in this crate alone.
//!
//! Semantics are sled's: writes are visible at once and durable after [`KvDb::flush`] (or a
//! tree's [`KvTree::flush`]); a [`KvBatch`] is applied to one tree atomically; iteration is in
//! ascending byte order of keys.

use std::ops::{Bound, Deref, RangeBounds};
use std::path::Path;

/// The engine failed (I/O, its own corruption checks).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct KvError(#[from] sled::Error);

/// A value (or key) read from a tree: bytes, shared with the engine's cache (no copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvBytes(sled::IVec);

impl Deref for KvBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for KvBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A database of named trees in one directory (or a temporary one).
#[derive(Clone)]
pub struct KvDb(sled::Db);

impl KvDb {
    /// Opens (or creates) the database in `dir`, waiting for the lock a just-dropped instance
    /// may still hold ([`crate::open_sled`]).
    pub fn open(dir: &Path) -> Result<KvDb, KvError> {
        Ok(KvDb(crate::open_sled(&sled::Config::new().path(dir))?))
    }

    /// Like [`KvDb::open`] with a larger cache (bulk builds, benchmarks).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<KvDb, KvError> {
        Ok(KvDb(crate::open_sled(
            &sled::Config::new().path(dir).cache_capacity(cache_bytes),
        )?))
    }

    /// A database in a temporary directory, removed on drop.
    pub fn temporary() -> Result<KvDb, KvError> {
        Ok(KvDb(sled::Config::new().temporary(true).open()?))
    }

    pub fn open_tree(&self, name: &str) -> Result<KvTree, KvError> {
        Ok(KvTree(self.0.open_tree(name)?))
    }

    /// Makes every tree's writes durable.
    pub fn flush(&self) -> Result<(), KvError> {
        self.0.flush()?;
        Ok(())
    }
}

/// Writes applied to one tree atomically ([`KvTree::apply_batch`]).
#[derive(Default)]
pub struct KvBatch(sled::Batch);

impl KvBatch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0.insert(key.as_ref(), value.as_ref());
    }
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.remove(key.as_ref());
    }
}

/// One ordered tree of a [`KvDb`].
#[derive(Clone)]
pub struct KvTree(sled::Tree);

/// (key, value) pairs in ascending key order.
pub type KvIter = Box<dyn Iterator<Item = Result<(KvBytes, KvBytes), KvError>> + Send>;

fn wrap(
    it: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send + 'static,
) -> KvIter {
    Box::new(it.map(|kv| kv.map(|(k, v)| (KvBytes(k), KvBytes(v))).map_err(KvError)))
}

impl KvTree {
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KvBytes>, KvError> {
        Ok(self.0.get(key)?.map(KvBytes))
    }
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, KvError> {
        Ok(self.0.contains_key(key)?)
    }
    /// Stores `value` under `key`; returns the previous value.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<KvBytes>, KvError> {
        Ok(self.0.insert(key, value.as_ref())?.map(KvBytes))
    }
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<KvBytes>, KvError> {
        Ok(self.0.remove(key)?.map(KvBytes))
    }
    pub fn apply_batch(&self, batch: KvBatch) -> Result<(), KvError> {
        Ok(self.0.apply_batch(batch.0)?)
    }
    /// Every entry whose key starts with `prefix`.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> KvIter {
        wrap(self.0.scan_prefix(prefix))
    }
    /// Every entry whose key is in `range`.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> KvIter {
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        wrap(
            self.0
                .range::<Vec<u8>, _>((own(range.start_bound()), own(range.end_bound()))),
        )
    }
    pub fn iter(&self) -> KvIter {
        wrap(self.0.iter())
    }
    /// Number of entries (walks the tree).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn clear(&self) -> Result<(), KvError> {
        Ok(self.0.clear()?)
    }
    /// Makes this tree's writes durable.
    pub fn flush(&self) -> Result<(), KvError> {
        self.0.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_batches_ranges_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = KvDb::open(dir.path()).unwrap();
            let t = db.open_tree("t").unwrap();
            let mut b = KvBatch::default();
            for k in ["b1", "a2", "a1", "c"] {
                b.insert(k, k.as_bytes());
            }
            b.remove("c");
            t.apply_batch(b).unwrap();
            assert_eq!(t.insert("a1", b"x").unwrap().as_deref(), Some(&b"a1"[..]));
            // Another tree of the same database is separate.
            assert!(db.open_tree("u").unwrap().is_empty());
            db.flush().unwrap();
        }
        let db = KvDb::open(dir.path()).unwrap();
        let t = db.open_tree("t").unwrap();
        let keys = |it: KvIter| {
            it.map(|kv| String::from_utf8(kv.unwrap().0.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(t.iter()), ["a1", "a2", "b1"]);
        assert_eq!(keys(t.scan_prefix("a")), ["a1", "a2"]);
        assert_eq!(keys(t.range("a2".."b1")), ["a2"]);
        assert_eq!(
            keys(t.range::<&str, _>((Bound::Excluded("a1"), Bound::Unbounded))),
            ["a2", "b1"]
        );
        assert_eq!(&*t.get("a1").unwrap().unwrap(), b"x");
        assert!(t.contains_key("b1").unwrap() && !t.contains_key("c").unwrap());
        assert_eq!(t.len(), 3);
        t.clear().unwrap();
        assert!(t.is_empty());
    }
}
