//! [`MemStore`]: the [`Store`](crate::Store) in memory, a second implementation of the seam.
//!
//! It keeps the same key layout and record encodings as the sled store (both are written over
//! [`Kv`]), so ordering, cursors, atomic batches and versions are the same code. It also keeps
//! sled's durability contract: a batch is visible at once but durable only after `flush`;
//! [`MemStore::after_crash`] gives the store a restarted process would find (what was flushed).

use crate::kv::KvDb;
use crate::{Entries, Kv, StoreError, Visitor};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
struct State {
    /// What readers see: every applied batch.
    live: Map,
    /// What survives a crash: every batch covered by a flush.
    durable: Map,
    /// Applied, not yet flushed, in order.
    unflushed: Vec<(Vec<u8>, Vec<u8>)>,
}

/// An in-memory store. Clones share the same data (one store, several handles), like reopening a
/// sled directory after a graceful stop.
/// Its companion database (image metadata, enrichment: [`crate::Store::companion_kv`]) is in
/// memory too and has no crash model: a store [`after_crash`](MemStore::after_crash) keeps it whole.
#[derive(Clone, Default)]
pub struct MemStore {
    state: Arc<RwLock<State>>,
    kv: KvDb,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new store holding only what was flushed: what a process restarted after a crash reads.
    pub fn after_crash(&self) -> MemStore {
        let durable = self.read().durable.clone();
        MemStore {
            state: Arc::new(RwLock::new(State {
                live: durable.clone(),
                durable,
                unflushed: Vec::new(),
            })),
            kv: self.kv.clone(),
        }
    }

    pub(crate) fn companion(&self) -> Option<KvDb> {
        Some(self.kv.clone())
    }

    pub(crate) fn kv(&self) -> &Self {
        self
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        // A panic while holding the lock leaves whole batches (each is applied under one guard).
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl Kv for MemStore {
    fn write(&self, entries: Entries) -> Result<(), StoreError> {
        let mut s = self.write_lock();
        for (k, v) in entries {
            s.live.insert(k.clone(), v.clone());
            s.unflushed.push((k, v));
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        let mut s = self.write_lock();
        let pending = std::mem::take(&mut s.unflushed);
        s.durable.extend(pending);
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.read().live.get(key).cloned())
    }

    fn visit(&self, start: &[u8], prefix: &[u8], f: &mut Visitor<'_>) -> Result<(), StoreError> {
        let s = self.read();
        for (k, v) in s.live.range(start.to_vec()..) {
            if !k.starts_with(prefix) || !f(k, v)? {
                break;
            }
        }
        Ok(())
    }
}
