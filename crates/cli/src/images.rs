//! `overlord images get|search|similar|list`: the gRPC `ImageService` client, and the readable
//! `watch` lines of screenshot / enrichment / leak findings.

use anyhow::{Context, Result, anyhow};
use overlord_core::finding::Payload;
use overlord_proto::v1::{self, image_service_client::ImageServiceClient};
use std::path::Path;
use tonic::transport::Channel;

pub type ImageClient = ImageServiceClient<
    tonic::service::interceptor::InterceptedService<Channel, crate::client::Bearer>,
>;

pub async fn connect(url: &str) -> Result<ImageClient> {
    connect_with(url, &crate::client::current_credentials()).await
}

pub async fn connect_with(url: &str, c: &crate::client::Credentials) -> Result<ImageClient> {
    let ch = crate::client::channel(url, c).await?;
    Ok(
        ImageServiceClient::with_interceptor(ch, crate::client::Bearer::new(c)?)
            .max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(overlord_proto::MAX_MESSAGE_BYTES),
    )
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("{} ({:?})", s.message(), s.code())
}

/// What to search for.
#[derive(Debug, Clone)]
pub enum Search {
    Text(String),
    Tag(String),
    Faces(u32),
}

pub async fn get(c: &mut ImageClient, id: &str, with_png: bool) -> Result<v1::Image> {
    c.get_image(v1::GetImageRequest {
        id: id.to_string(),
        metadata_only: !with_png,
    })
    .await
    .map(|r| r.into_inner())
    .map_err(status_err)
}

pub async fn search(c: &mut ImageClient, q: Search, limit: u32) -> Result<v1::ImageList> {
    use v1::search_images_request::Query;
    let query = match q {
        Search::Text(t) => Query::Text(t),
        Search::Tag(t) => Query::Tag(t),
        Search::Faces(n) => Query::MinFaces(n),
    };
    c.search_images(v1::SearchImagesRequest {
        query: Some(query),
        limit,
    })
    .await
    .map(|r| r.into_inner())
    .map_err(status_err)
}

/// Similar images of a stored image id, or of a local PNG/JPEG file (uploaded).
pub async fn similar(
    c: &mut ImageClient,
    id: Option<&str>,
    file: Option<&Path>,
    radius: u32,
    limit: u32,
) -> Result<v1::ImageList> {
    use v1::similar_images_request::Query;
    let query = match (id, file) {
        (Some(id), None) => Query::Id(id.to_string()),
        (None, Some(f)) => {
            Query::Png(std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?)
        }
        _ => anyhow::bail!("give exactly one of an image ID or --file"),
    };
    c.similar_images(v1::SimilarImagesRequest {
        query: Some(query),
        radius,
        limit,
    })
    .await
    .map(|r| r.into_inner())
    .map_err(status_err)
}

/// One page of stored images in id order (`enriched_only`: only images whose enrichment is
/// indexed).
pub async fn list(
    c: &mut ImageClient,
    after: &str,
    limit: u32,
    enriched_only: bool,
) -> Result<v1::ImageList> {
    c.list_images(v1::ListImagesRequest {
        after: after.to_string(),
        limit,
        enriched_only,
    })
    .await
    .map(|r| r.into_inner())
    .map_err(status_err)
}

/// The metadata of an image as JSON.
pub fn meta_json(m: &v1::ImageMeta) -> serde_json::Value {
    serde_json::json!({
        "id": m.id, "target": m.target, "port": m.port, "protocol": m.protocol,
        "width": m.width, "height": m.height, "png_bytes": m.png_bytes,
        "captured_at_ms": m.captured_at_ms, "job_id": m.job_id, "task_id": m.task_id,
        "minion": m.minion_id, "provider": m.provider, "module": m.module,
        "capture": serde_json::from_str::<serde_json::Value>(&m.capture_json)
            .unwrap_or(serde_json::Value::Null),
        "enriched": m.enriched,
        "tags": m.tags,
    })
}

/// One line per hit: id, distance/score, where, tags (`not-enriched` when not enriched yet).
pub fn hit_line(h: &v1::ImageHit) -> String {
    let m = h.meta.clone().unwrap_or_default();
    let tags = if m.enriched {
        format!("[{}]", m.tags.join(","))
    } else {
        "not-enriched".to_string()
    };
    format!(
        "{}  d={:<2} score={:<7.3} {}:{} {}x{} {} {tags}",
        m.id, h.distance, h.score, m.target, m.port, m.width, m.height, m.protocol,
    )
}

/// Readable `watch` detail for image findings.
pub fn finding_detail(payload: &Payload, blob_sha256: &str) -> String {
    let id = if blob_sha256.is_empty() {
        "-".to_string()
    } else {
        blob_sha256[..blob_sha256.len().min(16)].to_string()
    };
    match payload {
        Payload::Screenshot(s) => format!(
            "{} {}x{} {} bytes image:{id}",
            s.protocol.as_str(),
            s.width,
            s.height,
            s.png_bytes
        ),
        Payload::Enrichment(e) => {
            let text: String = e.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let text = if text.chars().count() > 50 {
                format!("{}…", text.chars().take(50).collect::<String>())
            } else {
                text
            };
            format!(
                "image:{id} tags=[{}] faces={} logos={} emails=[{}] text={text:?}",
                e.tags.join(","),
                e.faces.len(),
                e.logos.len(),
                e.emails.join(","),
            )
        }
        Payload::Leak(l) => {
            let image = match l.image.as_deref() {
                None | Some("") => "-",
                Some(i) => &i[..i.floor_char_boundary(16)],
            };
            let more = l.leaks.len().saturating_sub(1);
            let more = if more > 0 {
                format!(" (+{more} more)")
            } else {
                String::new()
            };
            let read = match &l.read_as {
                Some(r) if !r.is_empty() => format!(" (read as {r})"),
                _ => String::new(),
            };
            format!(
                "{}{read} leaked in {} ({}){more} image:{image}",
                l.email, l.source, l.date
            )
        }
        _ => format!("image:{id}"),
    }
}
