//! Named ordered byte trees for the stores beside the coordinator's [`Store`](crate::Store): the
//! enrichment store and its indexes (similar images, OCR text, tags), the leak database, the
//! image metadata. Their key layouts and record versions live with their owners (enrich,
//! coordinator `images.rs`); the engine stays here: no sled type is part of this API, so the
//! engine can be replaced in this crate alone.
//!
//! Two engines behind one API: sled (a directory, [`KvDb::open`]) and memory ([`KvDb::memory`],
//! what the in-memory [`MemStore`](crate::MemStore) pairs with, so a coordinator on it keeps its
//! images in memory too). Semantics are sled's: writes are visible at once and durable after
//! [`KvDb::flush`] (or a tree's [`KvTree::flush`]); a [`KvBatch`] is applied to one tree
//! atomically; iteration is in ascending byte order of keys. The memory engine has no crash
//! model: everything written is kept for as long as the database lives.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, Deref, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

/// The engine failed (I/O, its own corruption checks).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct KvError(#[from] sled::Error);

/// A value (or key) read from a tree: bytes, shared with the engine's cache (no copy).
#[derive(Clone, Debug)]
pub struct KvBytes(Bytes);

#[derive(Clone, Debug)]
enum Bytes {
    Sled(sled::IVec),
    Mem(Arc<[u8]>),
}

impl Deref for KvBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Sled(v) => v,
            Bytes::Mem(v) => v,
        }
    }
}

impl AsRef<[u8]> for KvBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for KvBytes {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for KvBytes {}

fn sled_bytes(v: sled::IVec) -> KvBytes {
    KvBytes(Bytes::Sled(v))
}

fn mem_bytes(v: &Arc<[u8]>) -> KvBytes {
    KvBytes(Bytes::Mem(v.clone()))
}

type MemTree = Arc<RwLock<BTreeMap<Vec<u8>, Arc<[u8]>>>>;

/// A database of named trees in one directory (or a temporary one, or memory).
#[derive(Clone)]
pub struct KvDb(Db);

#[derive(Clone)]
enum Db {
    Sled(sled::Db),
    Mem(Arc<Mutex<HashMap<String, MemTree>>>),
}

impl Default for KvDb {
    /// In memory.
    fn default() -> Self {
        KvDb::memory()
    }
}

impl KvDb {
    /// Opens (or creates) the database in `dir`, waiting for the lock a just-dropped instance
    /// may still hold ([`crate::open_sled`]).
    pub fn open(dir: &Path) -> Result<KvDb, KvError> {
        Ok(KvDb(Db::Sled(crate::open_sled(
            &sled::Config::new().path(dir),
        )?)))
    }

    /// Like [`KvDb::open`] with a larger cache (bulk builds, benchmarks).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<KvDb, KvError> {
        Ok(KvDb(Db::Sled(crate::open_sled(
            &sled::Config::new().path(dir).cache_capacity(cache_bytes),
        )?)))
    }

    /// A database in a temporary directory, removed on drop.
    pub fn temporary() -> Result<KvDb, KvError> {
        Ok(KvDb(Db::Sled(sled::Config::new().temporary(true).open()?)))
    }

    /// A database in memory. Clones share it.
    pub fn memory() -> KvDb {
        KvDb(Db::Mem(Default::default()))
    }

    pub fn open_tree(&self, name: &str) -> Result<KvTree, KvError> {
        Ok(KvTree(match &self.0 {
            Db::Sled(db) => Tree::Sled(db.open_tree(name)?),
            Db::Mem(trees) => Tree::Mem(
                trees
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(name.to_string())
                    .or_default()
                    .clone(),
            ),
        }))
    }

    /// Makes every tree's writes durable.
    pub fn flush(&self) -> Result<(), KvError> {
        if let Db::Sled(db) = &self.0 {
            db.flush()?;
        }
        Ok(())
    }
}

/// Writes applied to one tree atomically ([`KvTree::apply_batch`]).
#[derive(Default)]
pub struct KvBatch(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl KvBatch {
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.0
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.0.push((key.as_ref().to_vec(), None));
    }
}

/// One ordered tree of a [`KvDb`].
#[derive(Clone)]
pub struct KvTree(Tree);

#[derive(Clone)]
enum Tree {
    Sled(sled::Tree),
    Mem(MemTree),
}

/// (key, value) pairs in ascending key order.
pub type KvIter = Box<dyn Iterator<Item = Result<(KvBytes, KvBytes), KvError>> + Send>;

fn wrap(
    it: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + Send + 'static,
) -> KvIter {
    Box::new(it.map(|kv| {
        kv.map(|(k, v)| (sled_bytes(k), sled_bytes(v)))
            .map_err(KvError)
    }))
}

/// The memory engine's iterators read a snapshot of the matching entries (values shared, not
/// copied), taken when the iterator is made.
fn snapshot<'a>(it: impl Iterator<Item = (&'a Vec<u8>, &'a Arc<[u8]>)>) -> KvIter {
    let v: Vec<_> = it
        .map(|(k, v)| Ok((KvBytes(Bytes::Mem(k.as_slice().into())), mem_bytes(v))))
        .collect();
    Box::new(v.into_iter())
}

fn owned<K: AsRef<[u8]>>(b: Bound<&K>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl KvTree {
    fn mem_read(t: &MemTree) -> std::sync::RwLockReadGuard<'_, BTreeMap<Vec<u8>, Arc<[u8]>>> {
        t.read().unwrap_or_else(|p| p.into_inner())
    }

    fn mem_write(t: &MemTree) -> std::sync::RwLockWriteGuard<'_, BTreeMap<Vec<u8>, Arc<[u8]>>> {
        t.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KvBytes>, KvError> {
        Ok(match &self.0 {
            Tree::Sled(t) => t.get(key)?.map(sled_bytes),
            Tree::Mem(t) => Self::mem_read(t).get(key.as_ref()).map(mem_bytes),
        })
    }
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool, KvError> {
        Ok(match &self.0 {
            Tree::Sled(t) => t.contains_key(key)?,
            Tree::Mem(t) => Self::mem_read(t).contains_key(key.as_ref()),
        })
    }
    /// Stores `value` under `key`; returns the previous value.
    pub fn insert(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> Result<Option<KvBytes>, KvError> {
        Ok(match &self.0 {
            Tree::Sled(t) => t.insert(key, value.as_ref())?.map(sled_bytes),
            Tree::Mem(t) => Self::mem_write(t)
                .insert(key.as_ref().to_vec(), value.as_ref().into())
                .map(|v| KvBytes(Bytes::Mem(v))),
        })
    }
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<Option<KvBytes>, KvError> {
        Ok(match &self.0 {
            Tree::Sled(t) => t.remove(key)?.map(sled_bytes),
            Tree::Mem(t) => Self::mem_write(t)
                .remove(key.as_ref())
                .map(|v| KvBytes(Bytes::Mem(v))),
        })
    }
    pub fn apply_batch(&self, batch: KvBatch) -> Result<(), KvError> {
        match &self.0 {
            Tree::Sled(t) => {
                let mut b = sled::Batch::default();
                for (k, v) in batch.0 {
                    match v {
                        Some(v) => b.insert(k, v),
                        None => b.remove(k),
                    }
                }
                t.apply_batch(b)?;
            }
            Tree::Mem(t) => {
                // one guard: readers see the whole batch or none of it
                let mut m = Self::mem_write(t);
                for (k, v) in batch.0 {
                    match v {
                        Some(v) => {
                            m.insert(k, v.into());
                        }
                        None => {
                            m.remove(&k);
                        }
                    }
                }
            }
        }
        Ok(())
    }
    /// Every entry whose key starts with `prefix`.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> KvIter {
        match &self.0 {
            Tree::Sled(t) => wrap(t.scan_prefix(prefix)),
            Tree::Mem(t) => {
                let p = prefix.as_ref();
                let m = Self::mem_read(t);
                snapshot(
                    m.range::<[u8], _>((Bound::Included(p), Bound::Unbounded))
                        .take_while(|(k, _)| k.starts_with(p)),
                )
            }
        }
    }
    /// Every entry whose key is in `range`.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> KvIter {
        let bounds = (owned(range.start_bound()), owned(range.end_bound()));
        match &self.0 {
            Tree::Sled(t) => wrap(t.range::<Vec<u8>, _>(bounds)),
            Tree::Mem(t) => {
                let m = Self::mem_read(t);
                snapshot(m.range::<Vec<u8>, _>(bounds))
            }
        }
    }
    pub fn iter(&self) -> KvIter {
        match &self.0 {
            Tree::Sled(t) => wrap(t.iter()),
            Tree::Mem(t) => snapshot(Self::mem_read(t).iter()),
        }
    }
    /// Number of entries (walks the tree).
    pub fn len(&self) -> usize {
        match &self.0 {
            Tree::Sled(t) => t.len(),
            Tree::Mem(t) => Self::mem_read(t).len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn clear(&self) -> Result<(), KvError> {
        match &self.0 {
            Tree::Sled(t) => t.clear()?,
            Tree::Mem(t) => Self::mem_write(t).clear(),
        }
        Ok(())
    }
    /// Makes this tree's writes durable.
    pub fn flush(&self) -> Result<(), KvError> {
        if let Tree::Sled(t) = &self.0 {
            t.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trees_batches_ranges_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        trees_batches_ranges(KvDb::open(dir.path()).unwrap(), || {
            KvDb::open(dir.path()).unwrap()
        });
    }

    #[test]
    fn memory_engine_same_semantics() {
        let db = KvDb::memory();
        let again = db.clone();
        trees_batches_ranges(db, move || again.clone());
    }

    /// The contract both engines keep; `reopen` gives the database back after a drop + reopen.
    fn trees_batches_ranges(first: KvDb, reopen: impl FnOnce() -> KvDb) {
        {
            let db = first;
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
        let db = reopen();
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
        // a snapshot iterator is not disturbed by writes made while it runs (memory), and a
        // removed key is gone
        assert_eq!(&*t.remove("a2").unwrap().unwrap(), b"a2");
        assert_eq!(keys(t.scan_prefix("a")), ["a1"]);
        assert_eq!(keys(t.scan_prefix("")), ["a1", "b1"]);
        t.clear().unwrap();
        assert!(t.is_empty());
    }
}
