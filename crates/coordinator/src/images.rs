//! Image serving: indexes screenshots and their enrichment into an
//! [`overlord_enrich::EnrichStore`] (its own sled database in `<data_dir>/images`) and serves them
//! through the gRPC `ImageService`.
//!
//! The indexer is a task fed by the hub, which only publishes findings after the flush that made
//! them durable, so everything indexed here is already in the job store. It keeps a cursor per job
//! (tree `img.cursor`) and re-reads the job store from that cursor whenever it sees a gap (hub
//! lag, restart), so every finding is looked at and replays are harmless: an image's id is the
//! sha256 of its PNG, and an id already ingested is skipped.
//!
//! | tree | key | value |
//! |---|---|---|
//! | `img.meta` | image id | `[1]` ++ JSON of [`MetaRec`] (where/when it was captured); stores written before records were versioned hold bare JSON, read as version 0 ([`decode_meta`]) |
//! | `img.cursor` | job id (u64 BE) | last finding cursor looked at (u64 BE) |
//! | `img.*`, `sim.*`, `txt.*`, `leak` | see `overlord_enrich::store` | |

use crate::hub::HubEvent;
use crate::owners::Owners;
use crate::security::tokens::{Principal, principal};
use overlord_core::finding::{FindingKind, Payload, Screenshot};
use overlord_core::job::FindingRecord;
use overlord_enrich::{Analysis, DecodeCaps, EnrichError, EnrichStore};
use overlord_proto::error::ApiError;
use overlord_proto::v1;
use overlord_storage::Store;
use overlord_storage::kv::{KvDb, KvTree};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::broadcast;
use tonic::{Request, Response, Status};

/// Largest Hamming radius a similar-image query may ask for (64-bit hash).
pub const MAX_RADIUS: u32 = 32;
/// Largest page / result count.
pub const MAX_LIMIT: u32 = 1000;
const DEFAULT_LIMIT: u32 = 50;

/// `[images]` in the coordinator config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesConfig {
    /// A leak database file (`address,source,date` lines, see `overlord_enrich::leak`)
    /// imported at start; relative to the config file.
    #[serde(default)]
    pub leaks: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImagesError {
    #[error("image store {path}: {source}")]
    Open { path: String, source: EnrichError },
    #[error("leak database {path}: {source}")]
    Leaks { path: String, source: EnrichError },
    #[error("image store: {0}")]
    Storage(#[from] overlord_storage::kv::KvError),
}

/// Where and when an image was captured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetaRec {
    pub target: String,
    pub port: u16,
    pub protocol: String,
    pub width: u32,
    pub height: u32,
    pub png_bytes: u64,
    pub captured_at_ms: u64,
    pub job_id: u64,
    pub task_id: u64,
    pub minion_id: String,
    pub provider: String,
    pub module: String,
    /// The screenshot finding's data (null when the image came from elsewhere).
    pub capture: serde_json::Value,
}

/// Version byte of `img.meta` records.
pub const META_VERSION: u8 = 1;

/// Encodes an `img.meta` record: `[META_VERSION]` ++ JSON.
pub fn encode_meta(rec: &MetaRec) -> Result<Vec<u8>, EnrichError> {
    let mut out = vec![META_VERSION];
    serde_json::to_writer(&mut out, rec)?;
    Ok(out)
}

/// Decodes an `img.meta` record of any version this coordinator knows: 1 (`[1]` ++ JSON), or 0
/// (bare JSON, a store written before records were versioned; a JSON object starts with `{`,
/// never a version byte). Anything else is refused naming the version.
pub fn decode_meta(bytes: &[u8]) -> Result<MetaRec, EnrichError> {
    let corrupt = |reason: String| EnrichError::CorruptRecord {
        tree: "img.meta",
        reason,
    };
    match bytes.first() {
        Some(&META_VERSION) => serde_json::from_slice(&bytes[1..])
            .map_err(|e| corrupt(format!("version 1 record: {e}"))),
        Some(b'{') => serde_json::from_slice(bytes)
            .map_err(|e| corrupt(format!("unversioned (version 0) record: {e}"))),
        Some(v) => Err(corrupt(format!("unknown record version {v}"))),
        None => Err(corrupt("empty record".into())),
    }
}

/// The image store plus the job store (for PNG blobs and catch-up).
pub struct Images {
    enrich: EnrichStore,
    meta: KvTree,
    cursors: KvTree,
    jobs: Arc<dyn Store>,
}

impl Images {
    /// Opens `<dir>` and imports `leaks` when given.
    pub fn open(
        dir: &Path,
        jobs: Arc<dyn Store>,
        leaks: Option<&Path>,
    ) -> Result<Arc<Images>, ImagesError> {
        let open_err = |source| ImagesError::Open {
            path: dir.display().to_string(),
            source,
        };
        // Waits for the file lock: a restart in the same process finds the previous instance's
        // sled threads still holding it for a moment.
        // A store that brings its own companion database (the memory store) keeps the images
        // there; otherwise they live in `dir`.
        let db = match jobs.companion_kv() {
            Some(db) => db,
            None => KvDb::open(dir)
                .map_err(EnrichError::from)
                .map_err(open_err)?,
        };
        let enrich = EnrichStore::from_db(db.clone()).map_err(open_err)?;
        if let Some(path) = leaks {
            let rep = enrich
                .leaks()
                .import_file(path)
                .map_err(|source| ImagesError::Leaks {
                    path: path.display().to_string(),
                    source,
                })?;
            tracing::info!(
                path = %path.display(),
                imported = rep.imported,
                rejected = rep.rejected.len(),
                "leak database imported"
            );
            for (line, why) in rep.rejected.iter().take(10) {
                tracing::warn!(path = %path.display(), line, reason = %why, "leak line rejected");
            }
        }
        Ok(Arc::new(Images {
            enrich,
            meta: db.open_tree("img.meta")?,
            cursors: db.open_tree("img.cursor")?,
            jobs,
        }))
    }

    pub fn enrich(&self) -> &EnrichStore {
        &self.enrich
    }

    fn cursor(&self, job: u64) -> u64 {
        self.cursors
            .get(job.to_be_bytes())
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0)
    }

    /// Looks at one durable finding: screenshots record where the image came from, enrichments
    /// are ingested (once per image id). Returns true when something was written.
    pub fn index_finding(&self, f: &FindingRecord) -> Result<bool, EnrichError> {
        let Some(id) = f.blob_sha256.as_deref() else {
            return Ok(false);
        };
        match f.parsed().payload {
            Payload::Screenshot(shot) => {
                let rec = meta_of(f, Some(&shot));
                // a screenshot's provenance wins over one recorded from an enrichment
                let old = self.meta(id)?;
                if old.as_ref().is_none_or(|m| m.capture.is_null()) {
                    self.meta.insert(id, encode_meta(&rec)?)?;
                    return Ok(true);
                }
                Ok(false)
            }
            Payload::Enrichment(e) => {
                let mut wrote = false;
                if self.meta(id)?.is_none() {
                    let mut rec = meta_of(f, None);
                    if let Some(input) = &e.input {
                        rec.protocol = format!("file:{input}");
                    }
                    self.meta.insert(id, encode_meta(&rec)?)?;
                    wrote = true;
                }
                if self.enrich.get(id)?.is_some() {
                    return Ok(wrote);
                }
                // stored as the enrichment computed it (tags included: computed once)
                let a: Analysis = serde_json::from_value(serde_json::to_value(&*e)?)?;
                let rep = self.enrich.ingest(id, &a)?;
                tracing::info!(
                    image = id,
                    job = f.job_id,
                    tags = ?a.tags,
                    duplicates = rep.same_hash.len(),
                    "image indexed"
                );
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Indexes every finding of `job` after the stored cursor; returns the new cursor.
    pub fn catch_up(&self, job: u64, from: u64) -> Result<u64, EnrichError> {
        let mut after = from;
        let mut wrote = false;
        loop {
            let page = self
                .jobs
                .findings(job, after, 1024)
                .map_err(|e| EnrichError::Decode(format!("job store: {e}")))?;
            let Some(last) = page.last().map(|f| f.cursor) else {
                break;
            };
            for f in &page {
                wrote |= self.index_finding(f)?;
            }
            after = last;
        }
        if after != from {
            self.cursors
                .insert(job.to_be_bytes(), after.to_be_bytes())?;
        }
        if wrote || after != from {
            self.enrich.flush()?;
        }
        Ok(after)
    }

    fn meta(&self, id: &str) -> Result<Option<MetaRec>, EnrichError> {
        match self.meta.get(id)? {
            Some(v) => decode_meta(&v).map(Some),
            None => Ok(None),
        }
    }

    fn meta_proto(&self, id: &str) -> Result<Option<v1::ImageMeta>, EnrichError> {
        let m = self.meta(id)?;
        let a = self.enrich.get(id)?;
        if m.is_none() && a.is_none() {
            return Ok(None);
        }
        let m = m.unwrap_or_default();
        let (width, height) = match &a {
            Some(a) if m.width == 0 => (a.width, a.height),
            _ => (m.width, m.height),
        };
        Ok(Some(v1::ImageMeta {
            id: id.to_string(),
            target: m.target,
            port: m.port as u32,
            protocol: m.protocol,
            width,
            height,
            png_bytes: m.png_bytes,
            captured_at_ms: m.captured_at_ms,
            job_id: m.job_id,
            task_id: m.task_id,
            minion_id: m.minion_id,
            provider: m.provider,
            module: m.module,
            capture_json: if m.capture.is_null() {
                String::new()
            } else {
                m.capture.to_string()
            },
            enriched: a.is_some(),
            tags: a.map(|a| a.tags).unwrap_or_default(),
        }))
    }

    fn hits(
        &self,
        ids: impl IntoIterator<Item = (String, f64, u32)>,
    ) -> Result<v1::ImageList, ApiError> {
        let mut images = Vec::new();
        for (id, score, distance) in ids {
            if let Some(meta) = self.meta_proto(&id).map_err(api_err)? {
                images.push(v1::ImageHit {
                    meta: Some(meta),
                    score,
                    distance,
                });
            }
        }
        Ok(v1::ImageList {
            images,
            next_after: String::new(),
        })
    }
}

/// Where an image came from: its screenshot finding (`shot`), else the enrichment finding `f`.
fn meta_of(f: &FindingRecord, shot: Option<&Screenshot>) -> MetaRec {
    MetaRec {
        target: f.target.map(|t| t.to_string()).unwrap_or_default(),
        port: f.port.unwrap_or(0),
        protocol: shot
            .map(|s| s.protocol.as_str().to_string())
            .unwrap_or_default(),
        width: shot.map_or(0, |s| s.width),
        height: shot.map_or(0, |s| s.height),
        png_bytes: shot.map_or(0, |s| s.png_bytes),
        captured_at_ms: f.finished_at_ms,
        job_id: f.job_id,
        task_id: f.task_id,
        minion_id: f.minion_id.clone(),
        provider: f.provider.clone(),
        module: f.module.clone(),
        capture: shot
            .and_then(|s| serde_json::to_value(s).ok())
            .unwrap_or(serde_json::Value::Null),
    }
}

fn api_err(e: EnrichError) -> ApiError {
    match e {
        EnrichError::UnknownImage(id) => ApiError::ImageNotFound(id),
        EnrichError::Storage(_)
        | EnrichError::CorruptRecord { .. }
        | EnrichError::Json(_)
        | EnrichError::Io { .. }
        | EnrichError::Ocr(_)
        | EnrichError::Model { .. } => ApiError::Storage(e.to_string()),
        other => ApiError::InvalidArgument(other.to_string()),
    }
}

/// Runs the indexer until the hub closes: catches up every known job, then follows the hub.
pub fn spawn_indexer(
    images: Arc<Images>,
    mut rx: broadcast::Receiver<HubEvent>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut cursors: HashMap<u64, u64> = HashMap::new();
        let start = {
            let images = images.clone();
            tokio::task::spawn_blocking(move || -> Result<HashMap<u64, u64>, EnrichError> {
                let mut out = HashMap::new();
                let jobs = images
                    .jobs
                    .jobs()
                    .map_err(|e| EnrichError::Decode(format!("job store: {e}")))?;
                for j in jobs {
                    let c = images.catch_up(j.id, images.cursor(j.id))?;
                    out.insert(j.id, c);
                }
                Ok(out)
            })
            .await
        };
        match start {
            Ok(Ok(c)) => cursors = c,
            Ok(Err(e)) => tracing::error!(error = %e, "image catch-up failed"),
            Err(e) => tracing::error!(error = %e, "image catch-up panicked"),
        }
        loop {
            let ev = match rx.recv().await {
                Ok(HubEvent::Finding(f)) => f,
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "image indexer lagged; re-reading job store");
                    // each job catches up on its next finding (gap detected below)
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => break,
            };
            let job = ev.job_id;
            let known = match cursors.get(&job) {
                Some(c) => *c,
                None => images.cursor(job),
            };
            if ev.cursor <= known {
                continue;
            }
            let images2 = images.clone();
            let r = if ev.cursor == known + 1 {
                if matches!(
                    FindingKind::from_name(&ev.kind),
                    Some(FindingKind::Screenshot | FindingKind::Enrichment)
                ) {
                    tokio::task::spawn_blocking(move || images2.catch_up(job, known)).await
                } else {
                    Ok(Ok(ev.cursor))
                }
            } else {
                tokio::task::spawn_blocking(move || images2.catch_up(job, known)).await
            };
            match r {
                Ok(Ok(c)) => {
                    cursors.insert(job, c.max(ev.cursor));
                }
                Ok(Err(e)) => tracing::error!(job, error = %e, "image indexing failed"),
                Err(e) => tracing::error!(job, error = %e, "image indexing panicked"),
            }
        }
        let _ = images.enrich.flush();
    })
}

/// The gRPC `ImageService`.
#[derive(Clone)]
pub struct ImageApi {
    images: Arc<Images>,
    owners: Owners,
    /// Text search over screens is answered by the query index (`screen.text`).
    query: Arc<crate::query::Query>,
}

impl ImageApi {
    pub fn new(images: Arc<Images>, query: Arc<crate::query::Query>) -> Self {
        let owners = Owners::new(images.jobs.clone());
        ImageApi {
            images,
            owners,
            query,
        }
    }
}

/// What a caller may see of the images: an image is visible when the job that captured it is
/// ([`Owners::may_see`]); an image with no capture record (job 0) is an admin's only.
#[derive(Clone)]
struct Viewer {
    who: Principal,
    owners: Owners,
}

impl Viewer {
    fn sees(&self, images: &Images, id: &str) -> Result<bool, ApiError> {
        if self.who.role == overlord_core::security::Role::Admin {
            return Ok(true);
        }
        let job = images.meta(id).map_err(api_err)?.map_or(0, |m| m.job_id);
        self.owners
            .may_see(&self.who, job)
            .map_err(ApiError::Storage)
    }

    /// `ids` without the images the caller may not see.
    fn filter<T>(
        &self,
        images: &Images,
        ids: impl IntoIterator<Item = (String, T, u32)>,
    ) -> Result<Vec<(String, T, u32)>, ApiError> {
        let mut out = Vec::new();
        for x in ids {
            if self.sees(images, &x.0)? {
                out.push(x);
            }
        }
        Ok(out)
    }
}

fn limit_of(l: u32) -> Result<usize, ApiError> {
    match l {
        0 => Ok(DEFAULT_LIMIT as usize),
        l if l <= MAX_LIMIT => Ok(l as usize),
        l => Err(ApiError::InvalidArgument(format!(
            "limit {l} is over {MAX_LIMIT}"
        ))),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(Status::from)
}

#[tonic::async_trait]
impl v1::image_service_server::ImageService for ImageApi {
    async fn get_image(
        &self,
        req: Request<v1::GetImageRequest>,
    ) -> Result<Response<v1::Image>, Status> {
        let viewer = Viewer {
            who: principal(&req),
            owners: self.owners.clone(),
        };
        let r = req.into_inner();
        let images = self.images.clone();
        blocking(move || {
            if r.id.len() != 64 || !r.id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ApiError::InvalidArgument(format!(
                    "image id {:?} must be 64 hex digits (sha256 of the PNG)",
                    r.id
                )));
            }
            let id = r.id.to_ascii_lowercase();
            // another owner's image is "not found" (its existence is not revealed)
            if !viewer.sees(&images, &id)? {
                return Err(ApiError::ImageNotFound(id));
            }
            let meta = images
                .meta_proto(&id)
                .map_err(api_err)?
                .ok_or_else(|| ApiError::ImageNotFound(id.clone()))?;
            let png = if !r.metadata_only {
                images
                    .jobs
                    .blob(&id)
                    .map_err(|e| ApiError::Storage(e.to_string()))?
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            let enrichment_json = match images.enrich.get(&id).map_err(api_err)? {
                Some(a) => {
                    serde_json::to_string(&a).map_err(|e| ApiError::Storage(e.to_string()))?
                }
                None => String::new(),
            };
            Ok(v1::Image {
                meta: Some(meta),
                png,
                enrichment_json,
            })
        })
        .await
        .map(Response::new)
    }

    async fn search_images(
        &self,
        req: Request<v1::SearchImagesRequest>,
    ) -> Result<Response<v1::ImageList>, Status> {
        use v1::search_images_request::Query;
        let viewer = Viewer {
            who: principal(&req),
            owners: self.owners.clone(),
        };
        let r = req.into_inner();
        let images = self.images.clone();
        let query = self.query.clone();
        blocking(move || {
            let limit = limit_of(r.limit)?;
            // a non-admin's hits are filtered after the store ranked them: ask for the most the
            // store gives so a page is not short of visible images
            let fetch = if viewer.who.role == overlord_core::security::Role::Admin {
                limit
            } else {
                MAX_LIMIT as usize
            };
            let e = &images.enrich;
            let ids: Vec<(String, f64, u32)> = match r.query {
                None => {
                    return Err(ApiError::InvalidArgument(
                        "search needs text, tag or min_faces".into(),
                    ));
                }
                Some(Query::Text(t)) if t.trim().is_empty() => {
                    return Err(ApiError::InvalidArgument("empty text query".into()));
                }
                // the query index answers; it first folds what is durable and not yet
                // visible, so an image enriched a moment ago is found
                Some(Query::Text(t)) => {
                    query
                        .follower
                        .sync()
                        .map_err(|e| ApiError::Storage(e.to_string()))?;
                    query
                        .engine
                        .screen_text(&t, fetch)
                        .map_err(|e| ApiError::Storage(e.to_string()))?
                        .into_iter()
                        .map(|h| (h.image, h.score, 0))
                        .collect()
                }
                Some(Query::Tag(t)) if t.is_empty() || t.contains('\0') => {
                    return Err(ApiError::InvalidArgument(format!("bad tag {t:?}")));
                }
                Some(Query::Tag(t)) => e
                    .by_tag(&t, fetch)
                    .map_err(api_err)?
                    .into_iter()
                    .map(|id| (id, 0.0, 0))
                    .collect(),
                Some(Query::MinFaces(n)) => e
                    .with_faces(n.max(1), fetch)
                    .map_err(api_err)?
                    .into_iter()
                    .map(|(id, n)| (id, n as f64, 0))
                    .collect(),
            };
            let mut ids = viewer.filter(&images, ids)?;
            ids.truncate(limit);
            images.hits(ids)
        })
        .await
        .map(Response::new)
    }

    async fn similar_images(
        &self,
        req: Request<v1::SimilarImagesRequest>,
    ) -> Result<Response<v1::ImageList>, Status> {
        use v1::similar_images_request::Query;
        let viewer = Viewer {
            who: principal(&req),
            owners: self.owners.clone(),
        };
        let r = req.into_inner();
        let images = self.images.clone();
        blocking(move || {
            let limit = limit_of(r.limit)?;
            if r.radius > MAX_RADIUS {
                return Err(ApiError::InvalidArgument(format!(
                    "radius {} is over {MAX_RADIUS}",
                    r.radius
                )));
            }
            let e = &images.enrich;
            let mut found = match r.query {
                None => {
                    return Err(ApiError::InvalidArgument(
                        "similar needs an image id or PNG bytes".into(),
                    ));
                }
                Some(Query::Id(id)) => {
                    let id = id.to_ascii_lowercase();
                    if !viewer.sees(&images, &id)? {
                        return Err(ApiError::ImageNotFound(id));
                    }
                    // the image itself is a match at distance 0
                    let mut v = e.similar_to_id(&id, r.radius).map_err(api_err)?;
                    v.insert(
                        0,
                        overlord_enrich::SimilarMatch {
                            id: id.clone(),
                            distance: 0,
                            distance256: 0,
                        },
                    );
                    v
                }
                Some(Query::Png(b)) if b.is_empty() => {
                    return Err(ApiError::InvalidArgument("empty PNG upload".into()));
                }
                Some(Query::Png(b)) => e
                    .similar_to_image(&b, r.radius, &DecodeCaps::default())
                    .map_err(api_err)?,
            };
            found.sort_by(|a, b| a.distance.cmp(&b.distance).then_with(|| a.id.cmp(&b.id)));
            let mut found =
                viewer.filter(&images, found.into_iter().map(|m| (m.id, 0.0, m.distance)))?;
            found.truncate(limit);
            images.hits(found)
        })
        .await
        .map(Response::new)
    }

    async fn list_images(
        &self,
        req: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ImageList>, Status> {
        let viewer = Viewer {
            who: principal(&req),
            owners: self.owners.clone(),
        };
        let r = req.into_inner();
        let images = self.images.clone();
        blocking(move || {
            let limit = limit_of(r.limit)?;
            let range = match r.after.as_str() {
                "" => images.meta.range::<&[u8], _>(..),
                a => images.meta.range::<&[u8], _>((
                    std::ops::Bound::Excluded(a.as_bytes()),
                    std::ops::Bound::Unbounded,
                )),
            };
            let mut ids = Vec::new();
            let mut more = false;
            for kv in range {
                let (k, _) = kv.map_err(|e| ApiError::Storage(e.to_string()))?;
                let id = String::from_utf8_lossy(&k).into_owned();
                if r.enriched_only && !images.enrich.contains(&id).map_err(api_err)? {
                    continue;
                }
                if !viewer.sees(&images, &id)? {
                    continue;
                }
                if ids.len() == limit {
                    more = true;
                    break;
                }
                ids.push((id, 0.0, 0));
            }
            let next = if more {
                ids.last().map(|x| x.0.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            let mut list = images.hits(ids)?;
            list.next_after = next;
            Ok(list)
        })
        .await
        .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image is visible when its job is: owner A's images are listed, found and matched for A
    /// and an admin, and are "not there" for owner B; an image without a capture record is an
    /// admin's only.
    #[test]
    fn images_follow_their_jobs_owner() {
        use overlord_core::job::{RawSpec, prepare};
        use overlord_core::scope::Scope;
        use overlord_core::security::Role;
        use overlord_storage::{Batch, MemStore, Op};
        let spec = |owner: &str| {
            let raw = RawSpec {
                targets: vec!["127.0.0.1".into()],
                ports: "80".into(),
                modules: vec!["portscan".into()],
                ..Default::default()
            };
            let mut s = prepare(&raw, &Scope::loopback(), &|_| Err("no dns".into())).unwrap();
            s.owner = owner.into();
            Box::new(s)
        };
        let store = Arc::new(MemStore::new());
        let mut b = Batch::default();
        b.push(Op::Spec(1, spec("team-a")));
        b.push(Op::Spec(2, spec("team-b")));
        store.apply(b).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let images = Images::open(dir.path(), store.clone(), None).unwrap();
        let (a, b, orphan) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
        for (id, job) in [(&a, 1), (&b, 2), (&orphan, 0)] {
            let rec = MetaRec {
                job_id: job,
                ..Default::default()
            };
            images.meta.insert(id, encode_meta(&rec).unwrap()).unwrap();
        }
        let viewer = |role, owner: &str| Viewer {
            who: Principal {
                name: owner.into(),
                role,
                owner: owner.into(),
            },
            owners: Owners::new(store.clone()),
        };
        let sees = |v: &Viewer| {
            let all = [&a, &b, &orphan].map(|id| (id.clone(), 0.0, 0));
            v.filter(&images, all)
                .unwrap()
                .into_iter()
                .map(|x| x.0)
                .collect::<Vec<_>>()
        };
        assert_eq!(sees(&viewer(Role::Viewer, "team-a")), [a.clone()]);
        assert_eq!(sees(&viewer(Role::Operator, "team-b")), [b.clone()]);
        assert!(sees(&viewer(Role::Viewer, "team-c")).is_empty());
        assert_eq!(sees(&viewer(Role::Admin, "root")).len(), 3);
        assert!(!viewer(Role::Viewer, "team-b").sees(&images, &a).unwrap());
        // On the memory store the images live in its companion database, not in `dir`, and a
        // coordinator restarted on the same store (Images opened again) finds them.
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
        drop(images);
        let again = Images::open(dir.path(), store.clone(), None).unwrap();
        assert_eq!(
            decode_meta(&again.meta.get(&b).unwrap().unwrap())
                .unwrap()
                .job_id,
            2
        );
    }

    /// Frozen bytes of `img.meta` records: version 1, and the bare JSON written before records
    /// were versioned (version 0); an unknown version is refused naming it.
    #[test]
    fn meta_records_of_every_version_decode() {
        let v1 = b"\x01{\"target\":\"127.0.0.1\",\"port\":5900,\"protocol\":\"vnc\",\"width\":640,\"height\":480,\"png_bytes\":9,\"captured_at_ms\":1,\"job_id\":2,\"task_id\":3,\"minion_id\":\"m\",\"provider\":\"p\",\"module\":\"screenshot\",\"capture\":null}";
        let m = decode_meta(v1).unwrap();
        assert_eq!((m.port, m.job_id, m.task_id), (5900, 2, 3));
        assert_eq!(&encode_meta(&m).unwrap()[..], &v1[..]);
        let v0 = &v1[1..];
        assert_eq!(decode_meta(v0).unwrap().protocol, "vnc");
        for (bytes, want) in [
            (&b"\x02{}"[..], "unknown record version 2"),
            (&b""[..], "empty record"),
            (&b"\x01{"[..], "version 1 record"),
        ] {
            let e = decode_meta(bytes).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("img.meta"), "{e}");
        }
    }
}
