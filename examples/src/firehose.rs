//! A firehose consumer (docs/FIREHOSE.md): a durable JetStream pull consumer on the firehose's
//! stream, filtered by subject (e.g. `overlord.findings.screenshot`, or `overlord.findings.>` for
//! everything), acknowledging each finding after handling it.
//!
//! JetStream delivers to consumers at least once (a message whose ack was lost is delivered
//! again), so the handler treats the message id `<job>:<cursor>` as the finding's key: storing by
//! that key (an upsert) makes the whole path exactly once.

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;
use std::time::Duration;

/// One finding as received: its id (`<job>:<cursor>`), subject, and the finding's JSON.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub subject: String,
    pub finding: serde_json::Value,
}

/// Reads findings on `filter` from `stream` through the durable consumer `durable` (created when
/// missing; a restarted consumer goes on where it acknowledged), calling `each` for every one,
/// until `max` were handled or none arrived for `idle`.
pub async fn consume(
    url: &str,
    stream: &str,
    durable: &str,
    filter: &str,
    max: usize,
    idle: Duration,
    mut each: impl FnMut(&Received),
) -> Result<usize> {
    let client = async_nats::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let js = jetstream::new(client);
    let stream = js
        .get_stream(stream)
        .await
        .with_context(|| format!("stream {stream}"))?;
    let consumer = stream
        .get_or_create_consumer(
            durable,
            pull::Config {
                durable_name: Some(durable.into()),
                filter_subject: filter.into(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .context("consumer")?;
    let mut messages = consumer.messages().await.context("messages")?;
    let mut n = 0;
    while n < max {
        let msg = match tokio::time::timeout(idle, messages.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(m)) => m.map_err(|e| anyhow::anyhow!("receiving: {e}"))?,
        };
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        let finding: serde_json::Value =
            serde_json::from_slice(&msg.payload).context("a finding is JSON")?;
        each(&Received {
            id,
            subject: msg.subject.to_string(),
            finding,
        });
        msg.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        n += 1;
    }
    Ok(n)
}
