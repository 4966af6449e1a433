//! `overlord bench firehose`: findings through the coordinator's firehose publisher into a local
//! JetStream (file storage): one node, then a 3-node cluster (stream with 3 replicas).
//!
//! Per setup:
//! 1. **throughput**: N findings are written to a sled store as ingestion does (batches of 1000,
//!    each flushed, then marked durable) as fast as sled takes them; the publisher runs
//!    concurrently. Figure: N / (first finding durable → last finding acknowledged by JetStream).
//! 2. **latency**: findings written at a paced rate (default 50,000/s) with a consumer reading
//!    the stream (an ordered pull consumer in this process, reading only `stored_at_ms` of each
//!    body); end-to-end latency = consumer receipt − the finding's `stored_at_ms`.
//! 3. **peer**: the same N message bodies with the same message ids published by a plain async-nats
//!    client straight to JetStream (no store), the same number of acknowledgements in flight
//!    (`nats bench js pub --async`-style: `send_publish` and its ack futures). Printed beside ours
//!    as a ratio. Ours pays for the store on top (the producer writes and flushes the findings
//!    into sled in the same process while the publisher reads them back).

use anyhow::{Context, Result, anyhow, bail};
use async_nats::jetstream;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use overlord_coordinator::firehose::natsd::{NatsCluster, NatsOpts, NatsServer};
use overlord_coordinator::firehose::{self, Firehose, FirehoseConfig};
use overlord_coordinator::hub::{Durable, HubEvent};
use overlord_core::job::FindingRecord;
use overlord_storage::{Batch, Op, SledStore, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

const BATCH: u64 = 1000;

fn finding(job: u64, cursor: u64, now: u64) -> FindingRecord {
    FindingRecord {
        cursor,
        job_id: job,
        task_id: cursor,
        parent_task_id: Some(1),
        module: "portscan".into(),
        kind: if cursor % 10 == 0 {
            "service"
        } else {
            "open_port"
        }
        .into(),
        target: Some(std::net::Ipv4Addr::from(0x7f00_0000 | (cursor as u32 & 0xffff)).into()),
        port: Some((cursor % 65535) as u16 + 1),
        data: serde_json::json!({"state": "open", "rtt_us": cursor % 997}),
        blob_sha256: None,
        minion_id: "bench-minion-1".into(),
        provider: "local-a".into(),
        started_at_ms: now.saturating_sub(3),
        finished_at_ms: now.saturating_sub(1),
        stored_at_ms: now,
    }
}

/// Writes findings `1..=n` of `job` like ingestion: batches applied, flushed, then durable.
/// `rate` 0 = as fast as the store takes them.
fn produce(
    store: Arc<dyn Store>,
    durable: Durable,
    hub: broadcast::Sender<HubEvent>,
    job: u64,
    n: u64,
    rate: u64,
) -> Result<()> {
    let t0 = Instant::now();
    let mut c = 0;
    while c < n {
        if rate > 0 {
            let due = Duration::from_secs_f64(c as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let now = overlord_core::now_ms();
        let mut b = Batch::default();
        let end = (c + BATCH).min(n);
        let mut last = None;
        for cur in c + 1..=end {
            let f = Arc::new(finding(job, cur, now));
            last = Some(f.clone());
            b.push(Op::Finding(f));
        }
        store.apply(b)?;
        store.flush()?;
        durable.set(job, end);
        if let Some(f) = last {
            let _ = hub.send(HubEvent::Finding(f));
        }
        c = end;
    }
    Ok(())
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Setup {
    name: &'static str,
    url: String,
    replicas: usize,
}

/// One publisher run over a fresh store: returns (findings/s, latencies ms sorted when consumed).
async fn ours(
    setup: &Setup,
    stream: &str,
    job: u64,
    n: u64,
    rate: u64,
    consume: bool,
) -> Result<(f64, Vec<u64>)> {
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path())?);
    let durable = Durable::default();
    let (hub, _) = broadcast::channel(1024);
    let mut cfg = FirehoseConfig::new(setup.url.clone(), stream);
    cfg.replicas = setup.replicas;
    let fh = Firehose::spawn(cfg, store.clone(), durable.clone(), hub.subscribe());
    let status = fh.status();
    // The stream exists once the publisher is connected.
    let t_wait = Instant::now();
    let client = async_nats::connect(setup.url.split(',').next().unwrap_or_default()).await?;
    let js = jetstream::new(client);
    while js.get_stream(stream).await.is_err() {
        if t_wait.elapsed() > Duration::from_secs(30) {
            bail!("stream {stream} not created: {:?}", status.error());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumer = if consume {
        let s = js.get_stream(stream).await?;
        let c = s
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await?;
        let mut msgs = c.messages().await?;
        Some(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            while (lat.len() as u64) < n {
                let m = match tokio::time::timeout(Duration::from_secs(30), msgs.next()).await {
                    Ok(Some(Ok(m))) => m,
                    other => {
                        return Err(anyhow!(
                            "consumer stalled: {:?}",
                            other.map(|o| o.map(|r| r.map(|_| ())))
                        ));
                    }
                };
                let now = overlord_core::now_ms();
                // Only the time stamp: the consumer shares the 2 cores with what it measures.
                #[derive(serde::Deserialize)]
                struct Stamp {
                    stored_at_ms: u64,
                }
                let f: Stamp = serde_json::from_slice(&m.payload)?;
                lat.push(now.saturating_sub(f.stored_at_ms));
            }
            Ok::<_, anyhow::Error>(lat)
        }))
    } else {
        None
    };
    let t0 = Instant::now();
    let (s2, d2, h2) = (store.clone(), durable.clone(), hub.clone());
    let producer = tokio::task::spawn_blocking(move || produce(s2, d2, h2, job, n, rate));
    // Errors are retried by the publisher (a cluster still placing the stream's replicas); only
    // a stall ends the run.
    let (mut last, mut moved) = (0, Instant::now());
    while status.published(job) < n {
        let p = status.published(job);
        if p != last {
            (last, moved) = (p, Instant::now());
        } else if moved.elapsed() > Duration::from_secs(60) {
            bail!("firehose stalled at {p} of {n}: {:?}", status.error());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    producer.await??;
    let mut lat = match consumer {
        Some(c) => c.await??,
        None => Vec::new(),
    };
    lat.sort_unstable();
    let (sent, dups) = status.sent();
    if sent != n || dups != 0 {
        bail!("publisher acknowledged {sent} ({dups} duplicates) for {n} findings");
    }
    fh.shutdown().await;
    // The next run's stream takes the same subjects: JetStream refuses overlapping streams.
    js.delete_stream(stream).await?;
    Ok((n as f64 / secs, lat))
}

/// The peer: the same bodies and ids published by a plain client, `WINDOW` acks in flight.
async fn peer(setup: &Setup, stream: &str, job: u64, n: u64) -> Result<f64> {
    let client = async_nats::connect(setup.url.split(',').next().unwrap_or_default()).await?;
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .max_ack_inflight(firehose::WINDOW)
        .build(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: stream.into(),
        subjects: vec!["peer.>".into()],
        storage: jetstream::stream::StorageType::File,
        num_replicas: setup.replicas,
        ..Default::default()
    })
    .await
    .context("peer stream")?;
    let now = overlord_core::now_ms();
    let bodies: Vec<(String, String, bytes::Bytes)> = (1..=n)
        .map(|c| {
            let f = finding(job, c, now);
            (
                format!("peer.{}", f.kind),
                firehose::msg_id(job, c),
                firehose::payload(&f).into(),
            )
        })
        .collect();
    let t0 = Instant::now();
    let mut inflight = FuturesOrdered::new();
    for (subject, id, body) in bodies {
        while inflight.len() >= firehose::WINDOW {
            let r: Result<jetstream::publish::PublishAck, _> =
                inflight.next().await.expect("non-empty");
            r?;
        }
        let ack = js
            .send_publish(
                subject,
                jetstream::message::PublishMessage::build()
                    .payload(body)
                    .message_id(id),
            )
            .await?;
        inflight.push_back(ack.into_future());
    }
    while let Some(r) = inflight.next().await {
        r?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn one_setup(setup: Setup, n: u64, rate: u64, latency_n: u64) -> Result<()> {
    println!(
        "== firehose, {}: {n} findings, JetStream file storage, {} replica(s)",
        setup.name, setup.replicas
    );
    let (ours_rate, _) = ours(&setup, "BENCH_TPUT", 1, n, 0, false).await?;
    let peer_rate = peer(&setup, "BENCH_PEER", 1, n).await?;
    println!(
        "   throughput: ours {ours_rate:.0} findings/s (store -> JetStream, acked); peer (plain async-nats js publish, same bytes, {} acks in flight) {peer_rate:.0} msgs/s; ratio {:.2} (bar >= 50000/s)",
        firehose::WINDOW,
        ours_rate / peer_rate
    );
    let (lat_rate, lat) = ours(&setup, "BENCH_LAT", 2, latency_n, rate, true).await?;
    println!(
        "   end-to-end latency at {rate} findings/s offered ({latency_n} findings, consumer reading the stream): p50 {} ms, p99 {} ms, max {} ms (bar p99 <= 1000 ms); sustained {lat_rate:.0}/s",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or(0)
    );
    Ok(())
}

pub async fn run(n: u64, rate: u64, latency_n: u64, cluster: bool) -> Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average before: {}", load.trim());
    let dir = tempfile::tempdir()?;
    {
        let solo = NatsServer::start(&dir.path().join("solo"), "solo", NatsOpts::default())
            .map_err(|e| anyhow!(e))?;
        one_setup(
            Setup {
                name: "1 node",
                url: solo.url(),
                replicas: 1,
            },
            n,
            rate,
            latency_n,
        )
        .await?;
    }
    if cluster {
        let c = NatsCluster::start(&dir.path().join("cluster"), 3).map_err(|e| anyhow!(e))?;
        one_setup(
            Setup {
                name: "3-node cluster",
                url: c.urls(),
                replicas: 3,
            },
            n,
            rate,
            latency_n,
        )
        .await?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
    Ok(())
}
