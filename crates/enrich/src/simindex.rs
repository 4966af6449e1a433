//! The similar-image index: perceptual hashes persisted in sled, searched through an in-memory
//! multi-index-hashing structure ([`crate::mih::Mih`]) rebuilt from sled on open.
//!
//! Key layout (all in the sled `Db` handed to [`SledMihIndex::open`]):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `sim.ord` | ordinal (u32 BE) — one per distinct hash pair | `[1][phash64 BE][phash256 4×u64 BE]` (v1) |
//! | `sim.hash` | phash64 BE ++ phash256 | ordinal (u32 BE) — the exact-duplicate short-circuit |
//! | `sim.members` | ordinal BE ++ image id | empty |
//! | `sim.id` | image id | ordinal BE |
//!
//! Identical hashes share one ordinal, so exact duplicates cost one MIH entry and are answered by
//! one key lookup.

use crate::error::EnrichError;
use crate::mih::Mih;
use crate::phash::{PHashes, hamming256};
use serde::{Deserialize, Serialize};
use std::sync::RwLock;

/// Result of an insert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InsertOutcome {
    /// Ids already stored with exactly the same hashes (exact duplicates), excluding this id.
    pub duplicate_of: Vec<String>,
    /// False when the id was already in the index (the insert was a no-op).
    pub inserted: bool,
}

/// One answer of a similarity query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimilarMatch {
    pub id: String,
    /// Hamming distance of the 64-bit hashes.
    pub distance: u32,
    /// Hamming distance of the 256-bit hashes (finer tie-breaker).
    pub distance256: u32,
}

/// A similar-image index over 64-bit perceptual hashes.
pub trait SimilarityIndex: Send + Sync {
    /// Adds `id` with its hashes; reports exact duplicates.
    fn insert(&self, id: &str, hashes: &PHashes) -> Result<InsertOutcome, EnrichError>;
    /// Every image within Hamming radius `radius` of `hashes.phash64`, sorted by (distance,
    /// distance256, id). Recall is exact.
    fn query(&self, hashes: &PHashes, radius: u32) -> Result<Vec<SimilarMatch>, EnrichError>;
    /// The stored hashes of an image.
    fn hashes_of(&self, id: &str) -> Result<Option<PHashes>, EnrichError>;
    /// Number of distinct hashes.
    fn distinct_hashes(&self) -> usize;
    /// Makes every insert durable.
    fn flush(&self) -> Result<(), EnrichError>;
}

/// [`SimilarityIndex`] persisted in sled with an in-memory MIH.
pub struct SledMihIndex {
    ord: sled::Tree,
    by_hash: sled::Tree,
    members: sled::Tree,
    by_id: sled::Tree,
    mem: RwLock<Mem>,
}

struct Mem {
    mih: Mih,
}

fn encode_ord_record(h: &PHashes) -> Vec<u8> {
    let mut v = Vec::with_capacity(41);
    v.push(1u8);
    v.extend_from_slice(&h.phash64.to_be_bytes());
    for w in h.phash256 {
        v.extend_from_slice(&w.to_be_bytes());
    }
    v
}

fn decode_ord_record(b: &[u8]) -> Result<PHashes, EnrichError> {
    if b.len() != 41 || b[0] != 1 {
        return Err(EnrichError::CorruptRecord {
            tree: "sim.ord",
            reason: format!("expected v1 record of 41 bytes, got {} bytes", b.len()),
        });
    }
    let word = |i: usize| u64::from_be_bytes(b[1 + 8 * i..9 + 8 * i].try_into().expect("8 bytes"));
    Ok(PHashes { phash64: word(0), phash256: [word(1), word(2), word(3), word(4)] })
}

fn hash_key(h: &PHashes) -> Vec<u8> {
    let mut k = h.phash64.to_be_bytes().to_vec();
    for w in h.phash256 {
        k.extend_from_slice(&w.to_be_bytes());
    }
    k
}

fn ord_of(b: &[u8], tree: &'static str) -> Result<u32, EnrichError> {
    b.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| EnrichError::CorruptRecord { tree, reason: format!("ordinal of {} bytes", b.len()) })
}

impl SledMihIndex {
    /// Opens (or creates) the index in `db` and builds the in-memory MIH from it.
    pub fn open(db: &sled::Db) -> Result<SledMihIndex, EnrichError> {
        let ord = db.open_tree("sim.ord")?;
        let mut h64 = Vec::with_capacity(ord.len());
        for (i, kv) in ord.iter().enumerate() {
            let (k, v) = kv?;
            let o = ord_of(&k, "sim.ord")?;
            if o as usize != i {
                return Err(EnrichError::CorruptRecord { tree: "sim.ord", reason: format!("gap at ordinal {i}") });
            }
            h64.push(decode_ord_record(&v)?.phash64);
        }
        Ok(SledMihIndex {
            ord,
            by_hash: db.open_tree("sim.hash")?,
            members: db.open_tree("sim.members")?,
            by_id: db.open_tree("sim.id")?,
            mem: RwLock::new(Mem { mih: Mih::build(h64) }),
        })
    }

    fn members_of(&self, o: u32) -> Result<Vec<String>, EnrichError> {
        let mut out = Vec::new();
        for kv in self.members.scan_prefix(o.to_be_bytes()) {
            let (k, _) = kv?;
            out.push(String::from_utf8_lossy(&k[4..]).into_owned());
        }
        Ok(out)
    }

    /// Inserts many images at once (sled batches, one MIH rebuild): for imports and rebuilds.
    /// Ids already present are skipped. Returns how many ids were added.
    pub fn bulk_insert<'a>(&self, items: impl IntoIterator<Item = (&'a str, PHashes)>) -> Result<usize, EnrichError> {
        let mut mem = self.mem.write().expect("index lock");
        let mut new_hashes: std::collections::HashMap<Vec<u8>, u32> = Default::default();
        let (mut b_ord, mut b_hash, mut b_mem, mut b_id) =
            (sled::Batch::default(), sled::Batch::default(), sled::Batch::default(), sled::Batch::default());
        let mut seen_ids: std::collections::HashSet<&str> = Default::default();
        let mut h64 = Vec::new();
        let mut added = 0;
        for (id, h) in items {
            if !seen_ids.insert(id) || self.by_id.contains_key(id)? {
                continue;
            }
            let hk = hash_key(&h);
            let o = match new_hashes.get(&hk) {
                Some(&o) => o,
                None => match self.by_hash.get(&hk)? {
                    Some(o) => ord_of(&o, "sim.hash")?,
                    None => {
                        let o = (mem.mih.len() + h64.len()) as u32;
                        b_ord.insert(&o.to_be_bytes(), encode_ord_record(&h));
                        b_hash.insert(hk.clone(), &o.to_be_bytes());
                        new_hashes.insert(hk, o);
                        h64.push(h.phash64);
                        o
                    }
                },
            };
            let mut mk = o.to_be_bytes().to_vec();
            mk.extend_from_slice(id.as_bytes());
            b_mem.insert(mk, &[]);
            b_id.insert(id.as_bytes(), &o.to_be_bytes());
            added += 1;
        }
        self.ord.apply_batch(b_ord)?;
        self.by_hash.apply_batch(b_hash)?;
        self.members.apply_batch(b_mem)?;
        self.by_id.apply_batch(b_id)?;
        let mut all: Vec<u64> = (0..mem.mih.len() as u32).map(|i| mem.mih.hash(i)).collect();
        all.extend(h64);
        mem.mih = Mih::build(all);
        Ok(added)
    }

    /// Bytes of heap used by the in-memory structure.
    pub fn heap_bytes(&self) -> usize {
        self.mem.read().expect("index lock").mih.heap_bytes()
    }
}

impl SimilarityIndex for SledMihIndex {
    fn insert(&self, id: &str, hashes: &PHashes) -> Result<InsertOutcome, EnrichError> {
        let mut mem = self.mem.write().expect("index lock");
        if let Some(o) = self.by_id.get(id)? {
            let o = ord_of(&o, "sim.id")?;
            let duplicate_of = self.members_of(o)?.into_iter().filter(|m| m != id).collect();
            return Ok(InsertOutcome { duplicate_of, inserted: false });
        }
        let hk = hash_key(hashes);
        let (o, duplicate_of) = match self.by_hash.get(&hk)? {
            Some(o) => {
                let o = ord_of(&o, "sim.hash")?;
                (o, self.members_of(o)?)
            }
            None => {
                let o = mem.mih.len() as u32;
                self.ord.insert(o.to_be_bytes(), encode_ord_record(hashes))?;
                self.by_hash.insert(hk, &o.to_be_bytes())?;
                mem.mih.push(hashes.phash64);
                (o, Vec::new())
            }
        };
        let mut mk = o.to_be_bytes().to_vec();
        mk.extend_from_slice(id.as_bytes());
        self.members.insert(mk, &[])?;
        self.by_id.insert(id, &o.to_be_bytes())?;
        Ok(InsertOutcome { duplicate_of, inserted: true })
    }

    fn query(&self, hashes: &PHashes, radius: u32) -> Result<Vec<SimilarMatch>, EnrichError> {
        let mut hits = Vec::new();
        self.mem.read().expect("index lock").mih.query(hashes.phash64, radius, &mut hits);
        let mut out = Vec::new();
        for (o, d) in hits {
            // the 256-bit hash stays in sled (memory holds only the 64-bit MIH)
            let rec = self.ord.get(o.to_be_bytes())?.ok_or_else(|| EnrichError::CorruptRecord {
                tree: "sim.ord",
                reason: format!("missing ordinal {o}"),
            })?;
            let d256 = hamming256(&decode_ord_record(&rec)?.phash256, &hashes.phash256);
            for id in self.members_of(o)? {
                out.push(SimilarMatch { id, distance: d, distance256: d256 });
            }
        }
        out.sort_by(|a, b| (a.distance, a.distance256, &a.id).cmp(&(b.distance, b.distance256, &b.id)));
        Ok(out)
    }

    fn hashes_of(&self, id: &str) -> Result<Option<PHashes>, EnrichError> {
        let Some(o) = self.by_id.get(id)? else { return Ok(None) };
        let o = ord_of(&o, "sim.id")?;
        match self.ord.get(o.to_be_bytes())? {
            Some(v) => Ok(Some(decode_ord_record(&v)?)),
            None => Err(EnrichError::CorruptRecord { tree: "sim.ord", reason: format!("missing ordinal {o}") }),
        }
    }

    fn distinct_hashes(&self) -> usize {
        self.mem.read().expect("index lock").mih.len()
    }

    fn flush(&self) -> Result<(), EnrichError> {
        self.ord.flush()?;
        self.by_hash.flush()?;
        self.members.flush()?;
        self.by_id.flush()?;
        Ok(())
    }
}
