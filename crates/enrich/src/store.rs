//! The enrichment store: everything the coordinator needs to serve image queries, in one sled
//! database — analyses by image id, the similar-image index, tags and the leak database.
//!
//! Text search over screens is not here: the coordinator's query index holds the OCR text of
//! every enriched screen (`screen.text`) and answers the image service's text search. The
//! `txt.*` trees an older store kept (a BM25 index of its own) are no longer written or read.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `img.analysis` | image id | `[1]` ++ JSON of [`Analysis`] (v1) |
//! | `img.tag` | tag 0x00 image id | face count (u32 BE) |
//! | `sim.*` | see [`crate::simindex`] | |
//! | `leak` | see [`crate::leak`] | |
//! | `img.layout` | `version` | layout version of the whole store (u32 BE), [`LAYOUT_VERSION`] |
//!
//! Records carry their own version byte (analyses, `sim.*`); fixed-size values (tag
//! face counts, counters) and the key layouts are covered by the store's layout version, checked
//! on open: a store written by a newer layout is refused, never misread.

use crate::analyze::{Analysis, derive_tags};
use crate::decode::{DecodeCaps, decode};
use crate::error::EnrichError;
use crate::leak::LeakDb;
use crate::phash::{PHashes, phashes};
use crate::simindex::{SimilarMatch, SimilarityIndex, SledMihIndex};
use overlord_storage::kv::{KvDb, KvTree};
use serde::{Deserialize, Serialize};

/// What ingesting one analysis produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestReport {
    /// Ids of stored images with identical perceptual hashes (64 and 256 bit): exact or
    /// perceptually indistinguishable duplicates, found by one key lookup.
    pub same_hash: Vec<String>,
    /// False when the id had already been ingested (the analysis is replaced, indexes kept).
    pub new: bool,
}

pub struct EnrichStore {
    db: KvDb,
    sim: SledMihIndex,
    leaks: LeakDb,
    analyses: KvTree,
    tags: KvTree,
}

impl EnrichStore {
    /// Opens (or creates) the store in a directory.
    pub fn open(path: &std::path::Path) -> Result<EnrichStore, EnrichError> {
        // Waits for the lock a just-dropped database may still hold.
        let db = KvDb::open(path)?;
        EnrichStore::from_db(db)
    }

    /// Uses an already open sled database (e.g. the coordinator's).
    pub fn from_db(db: KvDb) -> Result<EnrichStore, EnrichError> {
        check_layout(&db.open_tree("img.layout")?)?;
        Ok(EnrichStore {
            sim: SledMihIndex::open(&db)?,
            leaks: LeakDb::open(&db)?,
            analyses: db.open_tree("img.analysis")?,
            tags: db.open_tree("img.tag")?,
            db,
        })
    }

    pub fn leaks(&self) -> &LeakDb {
        &self.leaks
    }

    pub fn similarity(&self) -> &SledMihIndex {
        &self.sim
    }

    /// Stores an analysis under `id` as it is (its tags were computed once, by the analysis, and
    /// are served as stored; leak lookups are the coordinator's `leak` findings), indexes its
    /// hash and tags. Not durable until [`EnrichStore::flush`].
    pub fn ingest(&self, id: &str, analysis: &Analysis) -> Result<IngestReport, EnrichError> {
        let hashes = analysis
            .hashes()
            .ok_or_else(|| EnrichError::CorruptRecord {
                tree: "img.analysis",
                reason: format!("analysis of {id} has malformed hashes"),
            })?;
        let outcome = self.sim.insert(id, &hashes)?;
        if let Some(old) = self.get(id)? {
            for t in &old.tags {
                self.tags.remove(tag_key(t, id))?;
            }
        }
        let faces = analysis.faces.len() as u32;
        for t in &analysis.tags {
            self.tags.insert(tag_key(t, id), &faces.to_be_bytes())?;
        }
        let mut rec = vec![1u8];
        rec.extend_from_slice(&serde_json::to_vec(analysis)?);
        self.analyses.insert(id, rec)?;
        Ok(IngestReport {
            same_hash: outcome.duplicate_of,
            new: outcome.inserted,
        })
    }

    /// The stored analysis of an image.
    pub fn get(&self, id: &str) -> Result<Option<Analysis>, EnrichError> {
        match self.analyses.get(id)? {
            None => Ok(None),
            Some(v) if v.first() == Some(&1) => Ok(Some(serde_json::from_slice(&v[1..])?)),
            Some(v) => Err(EnrichError::CorruptRecord {
                tree: "img.analysis",
                reason: format!("unknown record version {:?}", v.first()),
            }),
        }
    }

    /// Is an analysis stored under `id` (one key lookup, no decoding)?
    pub fn contains(&self, id: &str) -> Result<bool, EnrichError> {
        Ok(self.analyses.contains_key(id)?)
    }

    /// Image ids carrying `tag`, in id order.
    pub fn by_tag(&self, tag: &str, limit: usize) -> Result<Vec<String>, EnrichError> {
        let mut prefix = tag.as_bytes().to_vec();
        prefix.push(0);
        self.tags
            .scan_prefix(&prefix)
            .take(limit)
            .map(|kv| Ok(String::from_utf8_lossy(&kv?.0[prefix.len()..]).into_owned()))
            .collect()
    }

    /// Images with at least `min_faces` faces: (id, face count), most faces first.
    pub fn with_faces(
        &self,
        min_faces: u32,
        limit: usize,
    ) -> Result<Vec<(String, u32)>, EnrichError> {
        let prefix = b"has_faces\0";
        let mut out = Vec::new();
        for kv in self.tags.scan_prefix(prefix) {
            let (k, v) = kv?;
            let n = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0);
            if n >= min_faces {
                out.push((String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), n));
            }
        }
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out.truncate(limit);
        Ok(out)
    }

    /// Images within Hamming radius `radius` of stored image `id` (the image itself excluded).
    pub fn similar_to_id(&self, id: &str, radius: u32) -> Result<Vec<SimilarMatch>, EnrichError> {
        let h = self
            .sim
            .hashes_of(id)?
            .ok_or_else(|| EnrichError::UnknownImage(id.into()))?;
        Ok(self
            .sim
            .query(&h, radius)?
            .into_iter()
            .filter(|m| m.id != id)
            .collect())
    }

    /// Images within Hamming radius `radius` of an uploaded PNG/JPEG (decoded within `caps`).
    pub fn similar_to_image(
        &self,
        bytes: &[u8],
        radius: u32,
        caps: &DecodeCaps,
    ) -> Result<Vec<SimilarMatch>, EnrichError> {
        let h: PHashes = phashes(&decode(bytes, caps)?);
        self.sim.query(&h, radius)
    }

    /// Re-derives tags (e.g. after the leak database changed) for one image.
    pub fn retag(&self, id: &str) -> Result<(), EnrichError> {
        let mut a = self
            .get(id)?
            .ok_or_else(|| EnrichError::UnknownImage(id.into()))?;
        a.tags = derive_tags(&a);
        self.ingest(id, &a).map(|_| ())
    }

    /// Number of stored analyses.
    pub fn len(&self) -> usize {
        self.analyses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.analyses.is_empty()
    }

    /// Makes everything durable.
    pub fn flush(&self) -> Result<(), EnrichError> {
        self.db.flush()?;
        Ok(())
    }
}

/// Layout version of the enrichment store (trees, key layouts, fixed-size values).
pub const LAYOUT_VERSION: u32 = 1;

/// Stamps a new store with [`LAYOUT_VERSION`]; accepts a store of this layout and one written
/// before the stamp existed (the same layout, version 1); refuses any other, naming both.
fn check_layout(t: &KvTree) -> Result<(), EnrichError> {
    match t.get("version")? {
        None => {
            t.insert("version", LAYOUT_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) => match <[u8; 4]>::try_from(&*v).map(u32::from_be_bytes) {
            Ok(LAYOUT_VERSION) => Ok(()),
            Ok(other) => Err(EnrichError::CorruptRecord {
                tree: "img.layout",
                reason: format!(
                    "store layout version {other}; this build reads version {LAYOUT_VERSION}"
                ),
            }),
            Err(_) => Err(EnrichError::CorruptRecord {
                tree: "img.layout",
                reason: format!("layout version of {} bytes", v.len()),
            }),
        },
    }
}

fn tag_key(tag: &str, id: &str) -> Vec<u8> {
    let mut k = tag.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_version_is_stamped_and_a_newer_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = KvDb::open(dir.path()).unwrap();
        let layout = db.open_tree("img.layout").unwrap();
        // A store written before the stamp existed opens and is stamped.
        drop(EnrichStore::from_db(db.clone()).unwrap());
        assert_eq!(
            &*layout.get("version").unwrap().unwrap(),
            &LAYOUT_VERSION.to_be_bytes()
        );
        drop(EnrichStore::from_db(db.clone()).unwrap());
        layout.insert("version", 2u32.to_be_bytes()).unwrap();
        let e = EnrichStore::from_db(db.clone()).err().unwrap().to_string();
        assert!(
            e.contains("img.layout")
                && e.contains("layout version 2")
                && e.contains("reads version 1"),
            "{e}"
        );
        layout.insert("version", [1u8, 2, 3]).unwrap();
        let e = EnrichStore::from_db(db).err().unwrap().to_string();
        assert!(e.contains("3 bytes"), "{e}");
    }
}
