//! The minion's event loop: connect → register → (leases, revocations, acks) ↔ (heartbeats,
//! result batches), reconnecting with exponential backoff. Results survive reconnects: each is kept
//! until the coordinator acknowledges it (accepted or rejected) and is re-sent on a new session.

use crate::config::MinionSettings;
use crate::module::{FindingOut, Live, Module, ModuleCtx, ModuleError, Output, TaskInput};
use crate::telemetry::metrics;
use futures::FutureExt;
use overlord_core::Token;
use overlord_proto::v1::{self, coordinator_message::Msg as CMsg, minion_message::Msg as MMsg};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum MinionError {
    #[error("no module for {0:?} in this minion binary")]
    MissingModule(String),
}

struct Shared {
    minion: String,
    /// Sessions registered so far (the second and later are reconnects).
    sessions: std::sync::atomic::AtomicU64,
    /// Results sent and not yet acknowledged, by (token, seq): a partial result's seq, or
    /// [`FINAL`] for the task's result (so a re-send keeps partials before their final result).
    unacked: Mutex<BTreeMap<(Token, u64), v1::TaskResult>>,
    running: Mutex<HashMap<Token, AbortHandle>>,
    session: Mutex<Option<mpsc::Sender<v1::MinionMessage>>>,
}

const MAX_BATCH: usize = 1024;
/// The `unacked` seq of a task's final result.
const FINAL: u64 = u64::MAX;

/// Where a result is kept until acknowledged.
fn unacked_key(r: &v1::TaskResult) -> (Token, u64) {
    (r.token, if r.partial { r.seq } else { FINAL })
}

fn msg(m: MMsg) -> v1::MinionMessage {
    v1::MinionMessage { msg: Some(m) }
}

/// Runs a minion until `shutdown` resolves.
pub async fn run(
    settings: MinionSettings,
    all_modules: Vec<Arc<dyn Module>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), MinionError> {
    let mut modules: HashMap<String, Arc<dyn Module>> = HashMap::new();
    for name in &settings.modules {
        let m = all_modules
            .iter()
            .find(|m| m.name() == name)
            .ok_or_else(|| MinionError::MissingModule(name.clone()))?;
        modules.insert(name.clone(), m.clone());
    }
    let mut capabilities = settings.capabilities.clone();
    if capabilities.is_empty() {
        for m in modules.values() {
            if !capabilities.iter().any(|c| c == m.capability()) {
                capabilities.push(m.capability().to_string());
            }
        }
    }
    // Only run modules whose capability is declared.
    modules.retain(|_, m| capabilities.iter().any(|c| c == m.capability()));
    let modules = Arc::new(modules);
    let ctx = Arc::new(ModuleCtx {
        minion_id: settings.id.clone(),
        provider: settings.provider.clone(),
        scope: settings.scope.clone(),
        input_dir: settings.input_dir.clone(),
    });
    let shared = Arc::new(Shared {
        minion: settings.id.clone(),
        sessions: Default::default(),
        unacked: Mutex::default(),
        running: Mutex::default(),
        session: Mutex::default(),
    });
    let incarnation = format!("{:016x}", rand::random::<u64>());
    let (res_tx, res_rx) = mpsc::channel::<v1::TaskResult>(8192);
    let reporter = tokio::spawn(reporter(res_rx, shared.clone()));
    let sem = Arc::new(tokio::sync::Semaphore::new(settings.capacity as usize));

    let main = async {
        let mut backoff = Duration::from_millis(50);
        let mut failures: u64 = 0;
        loop {
            match session(
                &settings,
                &incarnation,
                &capabilities,
                &modules,
                &ctx,
                &shared,
                &res_tx,
                &sem,
            )
            .await
            {
                Ok(()) => {
                    info!(minion = %settings.id, "session closed by coordinator");
                    backoff = Duration::from_millis(50);
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    // Said at the default level (first failure, then every 10th), so a minion
                    // that cannot reach or is refused by its coordinator is never silent.
                    if report_failure(failures) {
                        warn!(minion = %settings.id, coordinator = %settings.coordinator, failures, error = %error_chain(&*e), "cannot hold a session with the coordinator; retrying");
                    } else {
                        debug!(minion = %settings.id, error = %error_chain(&*e), "session failed");
                    }
                }
            }
            *shared.session.lock().expect("lock") = None;
            let jitter = rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1);
            tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
            backoff = (backoff * 2).min(settings.reconnect_max);
        }
    };
    tokio::select! {
        _ = main => {}
        _ = shutdown => {}
    }
    reporter.abort();
    for (_, h) in shared.running.lock().expect("lock").drain() {
        h.abort();
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn session(
    settings: &MinionSettings,
    incarnation: &str,
    capabilities: &[String],
    modules: &Arc<HashMap<String, Arc<dyn Module>>>,
    ctx: &Arc<ModuleCtx>,
    shared: &Arc<Shared>,
    res_tx: &mpsc::Sender<v1::TaskResult>,
    sem: &Arc<tokio::sync::Semaphore>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(settings.coordinator.clone())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    match (&settings.tls, settings.coordinator.starts_with("https://")) {
        (Some(t), true) => endpoint = endpoint.tls_config(t.endpoint_config())?,
        // An https URL never falls back to plaintext; a certificate is never sent in the clear.
        (None, true) => return Err("https:// coordinator but no TLS configured".into()),
        (Some(_), false) => {
            return Err(
                "TLS is configured but the coordinator URL is http://; use https://".into(),
            );
        }
        (None, false) => {}
    }
    let channel = endpoint.connect().await?;
    let mut client = v1::minion_service_client::MinionServiceClient::new(channel)
        .max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(overlord_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<v1::MinionMessage>(1024);
    let mut mods: Vec<String> = modules.keys().cloned().collect();
    mods.sort();
    tx.send(msg(MMsg::Register(v1::Register {
        minion_id: settings.id.clone(),
        incarnation: incarnation.to_string(),
        provider: settings.provider.clone(),
        capabilities: capabilities.to_vec(),
        modules: mods,
        capacity: settings.capacity,
        version: env!("CARGO_PKG_VERSION").to_string(),
    })))
    .await?;
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(secret) = &settings.internal_secret {
        request.metadata_mut().insert(
            overlord_core::security::INTERNAL_HEADER,
            secret.parse().map_err(|_| "bad internal secret")?,
        );
    }
    let mut inbound = client.session(request).await?.into_inner();
    let registered = match inbound.message().await? {
        Some(v1::CoordinatorMessage {
            msg: Some(CMsg::Registered(r)),
        }) => r,
        other => return Err(format!("expected Registered, got {other:?}").into()),
    };
    info!(minion = %settings.id, generation = registered.generation, "registered");
    if shared
        .sessions
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        > 0
    {
        metrics::reconnected(&shared.minion);
    } else {
        metrics::init(&shared.minion);
    }
    // Re-send results the previous session did not get acknowledged.
    let pending: Vec<v1::TaskResult> = shared
        .unacked
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    for chunk in pending.chunks(MAX_BATCH) {
        record_batch(&shared.minion, chunk);
        tx.send(msg(MMsg::Results(v1::ResultBatch {
            items: chunk.to_vec(),
        })))
        .await?;
    }
    *shared.session.lock().expect("lock") = Some(tx.clone());
    let hb_every = Duration::from_millis(registered.heartbeat_interval_ms.max(10) as u64);
    let hb_tx = tx.clone();
    let hb_shared = shared.clone();
    let heartbeat = tokio::spawn(async move {
        let mut iv = tokio::time::interval(hb_every);
        loop {
            iv.tick().await;
            let held: Vec<u64> = hb_shared
                .running
                .lock()
                .expect("lock")
                .keys()
                .copied()
                .collect();
            let hb = v1::Heartbeat {
                running: held.len() as u32,
                held_tokens: held,
            };
            if hb_tx.send(msg(MMsg::Heartbeat(hb))).await.is_err() {
                break;
            }
        }
    });
    let _guard = AbortOnDrop(heartbeat.abort_handle());
    while let Some(m) = inbound.message().await? {
        match m.msg {
            Some(CMsg::Leases(batch)) => {
                for lease in batch.leases {
                    start_task(lease, modules, ctx, shared, res_tx, sem);
                }
            }
            Some(CMsg::Revoke(r)) => {
                let mut running = shared.running.lock().expect("lock");
                let mut unacked = shared.unacked.lock().expect("lock");
                let mut aborted = 0;
                for t in r.tokens {
                    if let Some(h) = running.remove(&t) {
                        h.abort();
                        aborted += 1;
                    }
                    unacked.retain(|(tok, _), _| *tok != t);
                }
                metrics::tasks_revoked(&shared.minion, aborted);
                metrics::leases_in_flight(&shared.minion, running.len());
            }
            Some(CMsg::Ack(a)) => {
                let mut unacked = shared.unacked.lock().expect("lock");
                for it in a.items {
                    if !it.accepted {
                        debug!(token = it.token, reason = %it.reason, "result rejected");
                    }
                    unacked.remove(&(it.token, if it.seq == 0 { FINAL } else { it.seq }));
                }
            }
            Some(CMsg::Registered(_)) | None => return Err("unexpected message".into()),
        }
    }
    Ok(())
}

/// Whether the `n`th consecutive session failure is reported at warn level.
fn report_failure(n: u64) -> bool {
    n == 1 || n % 10 == 0
}

/// An error with its sources ("transport error: tcp connect error: Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

struct AbortOnDrop(AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_task(
    lease: v1::TaskLease,
    modules: &Arc<HashMap<String, Arc<dyn Module>>>,
    ctx: &Arc<ModuleCtx>,
    shared: &Arc<Shared>,
    res_tx: &mpsc::Sender<v1::TaskResult>,
    sem: &Arc<tokio::sync::Semaphore>,
) {
    let token = lease.token;
    // Held across the spawn and the insert, so a task finishing at once cannot remove its entry
    // before it is inserted (which would leave a stale token in every heartbeat).
    let mut running = shared.running.lock().expect("lock");
    if running.contains_key(&token) {
        return; // already running (lease re-sent)
    }
    let (modules, ctx, res_tx, sem, shared2) = (
        modules.clone(),
        ctx.clone(),
        res_tx.clone(),
        sem.clone(),
        shared.clone(),
    );
    // A live module renews its lease with a partial result every quarter of the lease.
    let lease_ms = lease.deadline_ms.saturating_sub(overlord_core::now_ms());
    let every = Duration::from_millis(if lease.deadline_ms == 0 {
        15_000
    } else {
        (lease_ms / 4).clamp(100, 60_000)
    });
    let live = Live::new(res_tx.clone(), lease.job_id, lease.task_id, token, every);
    let handle = tokio::spawn(async move {
        let _permit = sem.acquire_owned().await;
        let started = overlord_core::now_ms();
        let clock = std::time::Instant::now();
        metrics::task_started(&shared2.minion, &lease.module);
        let span = tracing::info_span!(
            "task",
            job_id = lease.job_id,
            task_id = lease.task_id,
            module = %lease.module,
            traceparent = %lease.traceparent
        );
        crate::telemetry::adopt_parent(&span, &lease.traceparent);
        let outcome =
            tracing::Instrument::instrument(execute(&lease, &modules, &ctx, live), span).await;
        let finished = overlord_core::now_ms();
        let mut r = v1::TaskResult {
            job_id: lease.job_id,
            task_id: lease.task_id,
            token,
            started_at_ms: started,
            finished_at_ms: finished,
            ..Default::default()
        };
        let outcome_word = match &outcome {
            Ok(_) => "ok",
            Err(ModuleError::Failed(_)) => "failed",
            Err(ModuleError::Invalid(_)) => "invalid",
            Err(ModuleError::Blocked(_)) => "blocked",
        };
        metrics::task_finished(
            &shared2.minion,
            &lease.module,
            outcome_word,
            clock.elapsed().as_secs_f64(),
        );
        match outcome {
            Ok(out) => {
                r.ok = true;
                r.probe_counts = out
                    .probe_counts
                    .into_iter()
                    .map(|c| v1::NetCounts {
                        net: c.net,
                        sent: c.sent,
                        answered: c.answered,
                        retried: c.retried,
                    })
                    .collect();
                r.findings = out
                    .findings
                    .into_iter()
                    .map(FindingOut::into_wire)
                    .collect();
            }
            Err(e) => {
                r.ok = false;
                r.permanent = e.permanent();
                r.error = e.to_string();
            }
        }
        {
            let mut running = shared2.running.lock().expect("lock");
            running.remove(&token);
            metrics::leases_in_flight(&shared2.minion, running.len());
        }
        let _ = res_tx.send(r).await;
    });
    running.insert(token, handle.abort_handle());
    metrics::leases_in_flight(&shared.minion, running.len());
}

/// Counts one result batch put on a session (results, their findings and blob bytes).
fn record_batch(minion: &str, items: &[v1::TaskResult]) {
    if !crate::telemetry::enabled() {
        return;
    }
    let findings = items.iter().map(|r| r.findings.len() as u64).sum();
    let blob_bytes = items
        .iter()
        .flat_map(|r| &r.findings)
        .map(|f| f.blob.len() as u64)
        .sum();
    metrics::batch_sent(minion, items.len() as u64, findings, blob_bytes);
}

async fn execute(
    lease: &v1::TaskLease,
    modules: &HashMap<String, Arc<dyn Module>>,
    ctx: &ModuleCtx,
    live: Live,
) -> Result<Output, ModuleError> {
    let module = modules.get(&lease.module).ok_or_else(|| {
        ModuleError::Invalid(format!(
            "module {:?} not available on minion {}",
            lease.module, ctx.minion_id
        ))
    })?;
    let target = if lease.target.is_empty() {
        None
    } else {
        Some(
            lease
                .target
                .parse()
                .map_err(|_| ModuleError::Invalid(format!("bad target {:?}", lease.target)))?,
        )
    };
    // The minion re-checks its own scope before sending anything (the whole block of a sweep,
    // every range of a hitlist task).
    let target_count = lease.target_count.max(1);
    let mut ranges = Vec::with_capacity(lease.target_ranges.len());
    for r in &lease.target_ranges {
        match overlord_core::target::parse_target(r) {
            Ok(overlord_core::target::TargetInput::Range(r)) => ranges.push(r),
            _ => {
                return Err(ModuleError::Invalid(format!(
                    "bad target range {:?}",
                    overlord_core::security::clip(r, 64)
                )));
            }
        }
    }
    if !ranges.is_empty() {
        if let Err(e) = ctx.scope.check(&ranges) {
            warn!(
                task = lease.task_id,
                "hitlist ranges refused by minion scope"
            );
            return Err(ModuleError::Blocked(format!(
                "a range of this task is outside this minion's allow-list or inside its blocklist: {e}"
            )));
        }
    } else if let Some(ip) = target {
        let block = overlord_core::target::IpRange::block(ip, target_count).ok_or_else(|| {
            ModuleError::Invalid(format!(
                "{target_count} addresses from {ip} overflow the family"
            ))
        })?;
        if let Err(e) = ctx.scope.check(&[block]) {
            warn!(target = %block, task = lease.task_id, "target refused by minion scope");
            return Err(ModuleError::Blocked(format!(
                "{block} is outside this minion's allow-list or inside its blocklist: {e}"
            )));
        }
    }
    let input = TaskInput {
        job_id: lease.job_id,
        task_id: lease.task_id,
        parent_task_id: (lease.parent_task_id != 0).then_some(lease.parent_task_id),
        module: lease.module.clone(),
        target,
        target_count,
        ports: lease
            .ports
            .iter()
            .filter(|p| **p > 0 && **p <= 65535)
            .map(|p| *p as u16)
            .collect(),
        params: serde_json::from_str(&lease.params_json)
            .unwrap_or(serde_json::Value::Object(Default::default())),
        blob: (!lease.blob.is_empty()).then(|| bytes::Bytes::from(lease.blob.clone())),
        input: (!lease.input.is_empty()).then(|| lease.input.clone()),
        ranges,
    };
    // A panicking module fails its task instead of killing the minion.
    match std::panic::AssertUnwindSafe(module.run_live(&input, ctx, live))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(_) => Err(ModuleError::Failed(format!(
            "module {} panicked",
            lease.module
        ))),
    }
}

/// Collects finished results into batches, remembers them until acknowledged, and sends them on
/// the current session (if any; otherwise the next session re-sends them).
async fn reporter(mut rx: mpsc::Receiver<v1::TaskResult>, shared: Arc<Shared>) {
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        // Linger briefly so results finishing together travel (and are stored) together.
        let linger = tokio::time::Instant::now() + Duration::from_millis(2);
        while items.len() < MAX_BATCH {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(r)) => items.push(r),
                _ => break,
            }
        }
        {
            let mut unacked = shared.unacked.lock().expect("lock");
            for r in &items {
                unacked.insert(unacked_key(r), r.clone());
            }
        }
        let tx = shared.session.lock().expect("lock").clone();
        if let Some(tx) = tx {
            record_batch(&shared.minion, &items);
            let _ = tx.send(msg(MMsg::Results(v1::ResultBatch { items }))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unacknowledged results are re-sent in key order after a reconnect: a task's partials
    /// (by seq) before its final result, or the coordinator would complete the task first and
    /// drop the partials' findings as late.
    #[test]
    fn partials_are_resent_before_their_final_result() {
        let r = |partial: bool, seq: u64| v1::TaskResult {
            token: 9,
            partial,
            seq,
            ..Default::default()
        };
        let mut m: BTreeMap<(Token, u64), v1::TaskResult> = BTreeMap::new();
        for x in [r(false, 0), r(true, 2), r(true, 1)] {
            m.insert(unacked_key(&x), x);
        }
        let order: Vec<(bool, u64)> = m.values().map(|x| (x.partial, x.seq)).collect();
        assert_eq!(order, vec![(true, 1), (true, 2), (false, 0)]);
    }
}
