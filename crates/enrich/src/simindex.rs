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
//! | `sim.chunk` | chunk number (u32 BE) | `[2]` ++ the phash64 of ordinals `c·4096 .. (c+1)·4096`, 4096 × u64 LE |
//! | `sim.meta` | `format` | index format (u32 BE), [`FORMAT`] = 2 |
//!
//! Identical hashes share one ordinal, so exact duplicates cost one MIH entry and are answered by
//! one key lookup.
//!
//! **Opening** reads the 64-bit hashes of every *full* chunk of [`CHUNK`] ordinals from
//! `sim.chunk` (one sled value per 4096 hashes: 245 reads for 10⁶ hashes instead of 10⁶ record
//! reads) and the tail (< 4096 ordinals) from `sim.ord`. `sim.ord` stays the source of truth:
//! a chunk is written once its last ordinal is, and a missing or unreadable chunk (crash between
//! the two writes, an index written by format 1 which had no chunks) is rebuilt from `sim.ord` on
//! open. A store of an unknown (newer) format is refused with a clear error.

use crate::error::EnrichError;
use crate::mih::Mih;
use crate::phash::{PHashes, hamming256};
use overlord_storage::kv::{KvBatch, KvDb, KvTree};
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

/// Ordinals per `sim.chunk` record.
pub const CHUNK: u32 = 4096;
/// On-disk format of the index (`sim.meta` key `format`). 1 (no key): `sim.ord` only.
pub const FORMAT: u32 = 2;
const CHUNK_BYTES: usize = 1 + 8 * CHUNK as usize;

/// What [`SledMihIndex::open`] did, for logs and the benchmark.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenReport {
    /// Distinct hashes loaded.
    pub hashes: usize,
    /// Hashes read from `sim.chunk` records.
    pub from_chunks: usize,
    /// Hashes read one by one from `sim.ord` (the tail, or everything when chunks were missing).
    pub from_records: usize,
    /// Chunks (re)written from `sim.ord` (migration from format 1 or repair).
    pub chunks_written: usize,
}

/// [`SimilarityIndex`] persisted in sled with an in-memory MIH.
pub struct SledMihIndex {
    ord: KvTree,
    chunks: KvTree,
    by_hash: KvTree,
    members: KvTree,
    by_id: KvTree,
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
    Ok(PHashes {
        phash64: word(0),
        phash256: [word(1), word(2), word(3), word(4)],
    })
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
        .map_err(|_| EnrichError::CorruptRecord {
            tree,
            reason: format!("ordinal of {} bytes", b.len()),
        })
}

fn encode_chunk(hashes: &[u64]) -> Vec<u8> {
    debug_assert_eq!(hashes.len(), CHUNK as usize);
    let mut v = Vec::with_capacity(CHUNK_BYTES);
    v.push(2u8);
    for h in hashes {
        v.extend_from_slice(&h.to_le_bytes());
    }
    v
}

impl SledMihIndex {
    /// Opens (or creates) the index in `db` and builds the in-memory MIH from it.
    pub fn open(db: &KvDb) -> Result<SledMihIndex, EnrichError> {
        Self::open_with_report(db).map(|(idx, _)| idx)
    }

    /// [`SledMihIndex::open`], also saying where the hashes came from.
    pub fn open_with_report(db: &KvDb) -> Result<(SledMihIndex, OpenReport), EnrichError> {
        let ord = db.open_tree("sim.ord")?;
        let chunks = db.open_tree("sim.chunk")?;
        let meta = db.open_tree("sim.meta")?;
        let format = match meta.get("format")? {
            None => 1,
            Some(v) => ord_of(&v, "sim.meta")?,
        };
        if format > FORMAT {
            return Err(EnrichError::CorruptRecord {
                tree: "sim.meta",
                reason: format!(
                    "similarity index format {format} is newer than this build's {FORMAT}; \
                     use a newer overlord or remove the image store to rebuild it"
                ),
            });
        }
        let mut rep = OpenReport::default();
        let mut h64: Vec<u64> = Vec::new();
        // full chunks, in order; stop at the first missing or malformed one
        if format == FORMAT {
            for (c, kv) in chunks.iter().enumerate() {
                let (k, v) = kv?;
                if ord_of(&k, "sim.chunk")? as usize != c || v.len() != CHUNK_BYTES || v[0] != 2 {
                    break;
                }
                h64.extend(
                    v[1..]
                        .chunks_exact(8)
                        .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))),
                );
            }
            // a chunk is written after its records: its last ordinal must exist
            if !h64.is_empty() && !ord.contains_key((h64.len() as u32 - 1).to_be_bytes())? {
                tracing::warn!(
                    chunked = h64.len(),
                    "sim.chunk ahead of sim.ord; rebuilding chunks from records"
                );
                h64.clear();
                chunks.clear()?;
            }
        }
        rep.from_chunks = h64.len();
        let first = h64.len() as u32;
        for kv in ord.range(first.to_be_bytes()..) {
            let (k, v) = kv?;
            let o = ord_of(&k, "sim.ord")?;
            if o as usize != h64.len() {
                return Err(EnrichError::CorruptRecord {
                    tree: "sim.ord",
                    reason: format!("gap at ordinal {}", h64.len()),
                });
            }
            h64.push(decode_ord_record(&v)?.phash64);
        }
        rep.from_records = h64.len() - rep.from_chunks;
        // chunk every full run of records read one by one (format 1, repair, crash)
        let mut batch = KvBatch::default();
        let mut c = first / CHUNK;
        while ((c + 1) * CHUNK) as usize <= h64.len() {
            let a = (c * CHUNK) as usize;
            batch.insert(&c.to_be_bytes(), encode_chunk(&h64[a..a + CHUNK as usize]));
            c += 1;
            rep.chunks_written += 1;
        }
        if rep.chunks_written > 0 {
            chunks.apply_batch(batch)?;
        }
        if format != FORMAT {
            meta.insert("format", &FORMAT.to_be_bytes())?;
        }
        if rep.chunks_written > 0 || format != FORMAT {
            // later opens must not redo this
            db.flush()?;
        }
        rep.hashes = h64.len();
        Ok((
            SledMihIndex {
                ord,
                chunks,
                by_hash: db.open_tree("sim.hash")?,
                members: db.open_tree("sim.members")?,
                by_id: db.open_tree("sim.id")?,
                mem: RwLock::new(Mem {
                    mih: Mih::build(h64),
                }),
            },
            rep,
        ))
    }

    /// Writes the chunk records completed by the ordinals `from..mih.len()`.
    fn write_chunks(&self, mih: &Mih, from: usize) -> Result<(), EnrichError> {
        let chunk = CHUNK as usize;
        let mut batch = KvBatch::default();
        let mut any = false;
        for c in from / chunk..mih.len() / chunk {
            if (c + 1) * chunk <= from {
                continue; // already complete before
            }
            let hashes: Vec<u64> = (c * chunk..(c + 1) * chunk)
                .map(|i| mih.hash(i as u32))
                .collect();
            batch.insert(&(c as u32).to_be_bytes(), encode_chunk(&hashes));
            any = true;
        }
        if any {
            self.chunks.apply_batch(batch)?;
        }
        Ok(())
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
    pub fn bulk_insert<'a>(
        &self,
        items: impl IntoIterator<Item = (&'a str, PHashes)>,
    ) -> Result<usize, EnrichError> {
        let mut mem = self.mem.write().expect("index lock");
        let mut new_hashes: std::collections::HashMap<Vec<u8>, u32> = Default::default();
        let (mut b_ord, mut b_hash, mut b_mem, mut b_id) = (
            KvBatch::default(),
            KvBatch::default(),
            KvBatch::default(),
            KvBatch::default(),
        );
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
        let before = mem.mih.len();
        let mut all: Vec<u64> = (0..before as u32).map(|i| mem.mih.hash(i)).collect();
        all.extend(h64);
        mem.mih = Mih::build(all);
        self.write_chunks(&mem.mih, before)?;
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
            let duplicate_of = self
                .members_of(o)?
                .into_iter()
                .filter(|m| m != id)
                .collect();
            return Ok(InsertOutcome {
                duplicate_of,
                inserted: false,
            });
        }
        let hk = hash_key(hashes);
        let (o, duplicate_of) = match self.by_hash.get(&hk)? {
            Some(o) => {
                let o = ord_of(&o, "sim.hash")?;
                (o, self.members_of(o)?)
            }
            None => {
                let o = mem.mih.len() as u32;
                self.ord
                    .insert(o.to_be_bytes(), encode_ord_record(hashes))?;
                self.by_hash.insert(hk, &o.to_be_bytes())?;
                mem.mih.push(hashes.phash64);
                self.write_chunks(&mem.mih, o as usize)?;
                (o, Vec::new())
            }
        };
        let mut mk = o.to_be_bytes().to_vec();
        mk.extend_from_slice(id.as_bytes());
        self.members.insert(mk, &[])?;
        self.by_id.insert(id, &o.to_be_bytes())?;
        Ok(InsertOutcome {
            duplicate_of,
            inserted: true,
        })
    }

    fn query(&self, hashes: &PHashes, radius: u32) -> Result<Vec<SimilarMatch>, EnrichError> {
        let mut hits = Vec::new();
        self.mem
            .read()
            .expect("index lock")
            .mih
            .query(hashes.phash64, radius, &mut hits);
        let mut out = Vec::new();
        for (o, d) in hits {
            // the 256-bit hash stays in sled (memory holds only the 64-bit MIH)
            let rec = self
                .ord
                .get(o.to_be_bytes())?
                .ok_or_else(|| EnrichError::CorruptRecord {
                    tree: "sim.ord",
                    reason: format!("missing ordinal {o}"),
                })?;
            let d256 = hamming256(&decode_ord_record(&rec)?.phash256, &hashes.phash256);
            for id in self.members_of(o)? {
                out.push(SimilarMatch {
                    id,
                    distance: d,
                    distance256: d256,
                });
            }
        }
        out.sort_by(|a, b| {
            (a.distance, a.distance256, &a.id).cmp(&(b.distance, b.distance256, &b.id))
        });
        Ok(out)
    }

    fn hashes_of(&self, id: &str) -> Result<Option<PHashes>, EnrichError> {
        let Some(o) = self.by_id.get(id)? else {
            return Ok(None);
        };
        let o = ord_of(&o, "sim.id")?;
        match self.ord.get(o.to_be_bytes())? {
            Some(v) => Ok(Some(decode_ord_record(&v)?)),
            None => Err(EnrichError::CorruptRecord {
                tree: "sim.ord",
                reason: format!("missing ordinal {o}"),
            }),
        }
    }

    fn distinct_hashes(&self) -> usize {
        self.mem.read().expect("index lock").mih.len()
    }

    fn flush(&self) -> Result<(), EnrichError> {
        self.ord.flush()?;
        self.chunks.flush()?;
        self.by_hash.flush()?;
        self.members.flush()?;
        self.by_id.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    fn ph(h: u64) -> PHashes {
        PHashes {
            phash64: h,
            phash256: [h, !h, h.rotate_left(7), 42],
        }
    }

    /// Through `KvDb::open` (it waits for the lock): each block below reopens the dir the previous one just dropped, and
    /// sled's flusher thread holds the file lock a moment longer. A plain `open` failed with
    /// "could not acquire lock ... WouldBlock" (seen in a full `cargo test` run on 2 loaded cores).
    fn db(dir: &std::path::Path) -> KvDb {
        KvDb::open(dir).unwrap()
    }

    /// Every stored hash is found again at radius 0 and near hashes at radius 3, as brute force.
    fn check(idx: &SledMihIndex, hashes: &[u64]) {
        assert_eq!(idx.distinct_hashes(), hashes.len());
        let mut s = 77u64;
        for _ in 0..50 {
            let q =
                hashes[(rng(&mut s) % hashes.len() as u64) as usize] ^ (1 << (rng(&mut s) % 64));
            let got: Vec<String> = idx
                .query(&ph(q), 3)
                .unwrap()
                .into_iter()
                .map(|m| m.id)
                .collect();
            let mut got = got;
            got.sort();
            let mut want: Vec<String> = hashes
                .iter()
                .enumerate()
                .filter(|(_, h)| (**h ^ q).count_ones() <= 3)
                .map(|(i, _)| format!("img{i:06}"))
                .collect();
            want.sort();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn reopen_reads_full_chunks_and_the_tail_and_finds_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = 5u64;
        let hashes: Vec<u64> = (0..3 * CHUNK as usize + 100).map(|_| rng(&mut s)).collect();
        let ids: Vec<String> = (0..hashes.len()).map(|i| format!("img{i:06}")).collect();
        {
            let db = db(dir.path());
            let idx = SledMihIndex::open(&db).unwrap();
            // bulk part, then single inserts across a chunk boundary
            let split = 2 * CHUNK as usize - 10;
            idx.bulk_insert(
                ids[..split]
                    .iter()
                    .map(|i| i.as_str())
                    .zip(hashes[..split].iter().map(|&h| ph(h))),
            )
            .unwrap();
            for i in split..hashes.len() {
                idx.insert(&ids[i], &ph(hashes[i])).unwrap();
            }
            idx.flush().unwrap();
            check(&idx, &hashes);
        }
        let db = db(dir.path());
        let (idx, rep) = SledMihIndex::open_with_report(&db).unwrap();
        assert_eq!(
            rep,
            OpenReport {
                hashes: hashes.len(),
                from_chunks: 3 * CHUNK as usize,
                from_records: 100,
                chunks_written: 0
            }
        );
        check(&idx, &hashes);
    }

    #[test]
    fn a_format_1_index_is_chunked_on_first_open_and_a_newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = 9u64;
        let hashes: Vec<u64> = (0..CHUNK as usize + 5).map(|_| rng(&mut s)).collect();
        {
            // format 1 as written by the previous version: only the four record trees, with
            // frozen v1 `sim.ord` bytes
            let db = db(dir.path());
            let (ord, by_hash, members, by_id) = (
                db.open_tree("sim.ord").unwrap(),
                db.open_tree("sim.hash").unwrap(),
                db.open_tree("sim.members").unwrap(),
                db.open_tree("sim.id").unwrap(),
            );
            for (i, &h) in hashes.iter().enumerate() {
                let o = (i as u32).to_be_bytes();
                let mut rec = vec![1u8];
                rec.extend_from_slice(&h.to_be_bytes());
                for w in ph(h).phash256 {
                    rec.extend_from_slice(&w.to_be_bytes());
                }
                assert_eq!(rec.len(), 41);
                ord.insert(o, rec).unwrap();
                by_hash.insert(hash_key(&ph(h)), &o).unwrap();
                let id = format!("img{i:06}");
                let mut mk = o.to_vec();
                mk.extend_from_slice(id.as_bytes());
                members.insert(mk, &[]).unwrap();
                by_id.insert(id.as_bytes(), &o).unwrap();
            }
            db.flush().unwrap();
        }
        {
            let db = db(dir.path());
            let (idx, rep) = SledMihIndex::open_with_report(&db).unwrap();
            assert_eq!(
                (rep.from_chunks, rep.from_records, rep.chunks_written),
                (0, hashes.len(), 1)
            );
            check(&idx, &hashes);
        }
        {
            let db = db(dir.path());
            let (idx, rep) = SledMihIndex::open_with_report(&db).unwrap();
            assert_eq!(
                (rep.from_chunks, rep.from_records, rep.chunks_written),
                (CHUNK as usize, 5, 0)
            );
            check(&idx, &hashes);
            // a chunk ahead of its records (records lost in a crash) is not trusted
            drop(idx);
            let ord = db.open_tree("sim.ord").unwrap();
            for i in CHUNK - 3..CHUNK + 5 {
                ord.remove(i.to_be_bytes()).unwrap();
            }
            let (idx, rep) = SledMihIndex::open_with_report(&db).unwrap();
            assert_eq!((rep.hashes, rep.from_chunks), (CHUNK as usize - 3, 0));
            assert_eq!(idx.distinct_hashes(), CHUNK as usize - 3);
            db.open_tree("sim.meta")
                .unwrap()
                .insert("format", &3u32.to_be_bytes())
                .unwrap();
            let e = SledMihIndex::open(&db).err().expect("newer format refused");
            assert!(e.to_string().contains("format 3 is newer"), "{e}");
        }
    }
}
