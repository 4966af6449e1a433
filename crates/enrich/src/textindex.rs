//! Full-text index over OCR text, ranked with Okapi BM25 (k1 = 1.2, b = 0.75), in sled.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `txt.post` | term 0x00 doc | term frequency (u32 BE) |
//! | `txt.doc` | doc | `[1][doc length u32 BE][terms, 0x00-separated]` (v1) |
//! | `txt.meta` | `"n"`, `"len"` | document count, total length (u64 BE) |
//!
//! Terms are lower-cased runs of letters and digits (so `bob.jones@mail.example.org` is found by
//! `bob`, `jones`, `example`, ...). Re-indexing a document replaces its postings.

use crate::error::EnrichError;
use overlord_storage::kv::{KvBatch, KvDb, KvTree};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// One ranked hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextHit {
    pub id: String,
    pub score: f64,
}

/// Splits text into index terms.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .map(str::to_lowercase)
        .collect()
}

#[derive(Clone)]
pub struct TextIndex {
    post: KvTree,
    doc: KvTree,
    meta: KvTree,
}

fn get_u64(t: &KvTree, k: &str) -> Result<u64, EnrichError> {
    Ok(t.get(k)?
        .map(|v| v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0))
        .unwrap_or(0))
}

impl TextIndex {
    pub fn open(db: &KvDb) -> Result<TextIndex, EnrichError> {
        Ok(TextIndex {
            post: db.open_tree("txt.post")?,
            doc: db.open_tree("txt.doc")?,
            meta: db.open_tree("txt.meta")?,
        })
    }

    fn post_key(term: &str, doc: &str) -> Vec<u8> {
        let mut k = term.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(doc.as_bytes());
        k
    }

    /// Indexes (or re-indexes) the text of `doc`.
    pub fn index(&self, doc: &str, text: &str) -> Result<(), EnrichError> {
        self.remove(doc)?;
        let ts = terms(text);
        let mut tf: BTreeMap<&str, u32> = BTreeMap::new();
        for t in &ts {
            *tf.entry(t.as_str()).or_default() += 1;
        }
        let mut batch = KvBatch::default();
        for (t, f) in &tf {
            batch.insert(Self::post_key(t, doc), &f.to_be_bytes());
        }
        self.post.apply_batch(batch)?;
        let mut rec = vec![1u8];
        rec.extend_from_slice(&(ts.len() as u32).to_be_bytes());
        rec.extend_from_slice(tf.keys().copied().collect::<Vec<_>>().join("\0").as_bytes());
        self.doc.insert(doc, rec)?;
        self.meta
            .insert("n", &(get_u64(&self.meta, "n")? + 1).to_be_bytes())?;
        self.meta.insert(
            "len",
            &(get_u64(&self.meta, "len")? + ts.len() as u64).to_be_bytes(),
        )?;
        Ok(())
    }

    /// Removes `doc` from the index (no-op if absent).
    pub fn remove(&self, doc: &str) -> Result<(), EnrichError> {
        let Some(rec) = self.doc.remove(doc)? else {
            return Ok(());
        };
        if rec.len() < 5 || rec[0] != 1 {
            return Err(EnrichError::CorruptRecord {
                tree: "txt.doc",
                reason: "not a v1 record".into(),
            });
        }
        let len = u32::from_be_bytes(rec[1..5].try_into().expect("4 bytes")) as u64;
        let terms = String::from_utf8_lossy(&rec[5..]).into_owned();
        for t in terms.split('\0').filter(|t| !t.is_empty()) {
            self.post.remove(Self::post_key(t, doc))?;
        }
        self.meta.insert(
            "n",
            &get_u64(&self.meta, "n")?.saturating_sub(1).to_be_bytes(),
        )?;
        self.meta.insert(
            "len",
            &get_u64(&self.meta, "len")?
                .saturating_sub(len)
                .to_be_bytes(),
        )?;
        Ok(())
    }

    fn doc_len(&self, doc: &str) -> Result<u32, EnrichError> {
        match self.doc.get(doc)? {
            Some(r) if r.len() >= 5 => Ok(u32::from_be_bytes(r[1..5].try_into().expect("4 bytes"))),
            _ => Ok(0),
        }
    }

    /// Documents matching any query term, best BM25 score first.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<TextHit>, EnrichError> {
        let n = get_u64(&self.meta, "n")? as f64;
        if n == 0.0 {
            return Ok(Vec::new());
        }
        let avg = (get_u64(&self.meta, "len")? as f64 / n).max(1.0);
        let (k1, b) = (1.2, 0.75);
        let mut scores: HashMap<String, f64> = HashMap::new();
        let mut qterms = terms(query);
        qterms.sort();
        qterms.dedup();
        for t in qterms {
            let mut prefix = t.as_bytes().to_vec();
            prefix.push(0);
            let postings: Vec<(String, u32)> = self
                .post
                .scan_prefix(&prefix)
                .map(|kv| {
                    let (k, v) = kv?;
                    let doc = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                    let f = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0);
                    Ok((doc, f))
                })
                .collect::<Result<_, EnrichError>>()?;
            let df = postings.len() as f64;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for (doc, f) in postings {
                let dl = self.doc_len(&doc)? as f64;
                let f = f as f64;
                *scores.entry(doc).or_default() +=
                    idf * f * (k1 + 1.0) / (f + k1 * (1.0 - b + b * dl / avg));
            }
        }
        let mut hits: Vec<TextHit> = scores
            .into_iter()
            .map(|(id, score)| TextHit { id, score })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        hits.truncate(limit);
        Ok(hits)
    }
}
