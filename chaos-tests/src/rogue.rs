//! A minion the harness drives by hand over the real `MinionService/Session` protocol: it registers,
//! records every lease, revocation and ack with a timestamp, and sends whatever results it is told to —
//! honest ones, duplicates, late ones on revoked tokens, or none at all (a hung minion).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlord_proto::v1::coordinator_message::Msg as CoordMsg;
use overlord_proto::v1::minion_message::Msg as MinionMsg;
use overlord_proto::v1::minion_service_client::MinionServiceClient;
use overlord_proto::v1::{
    AckItem, FindingOut, Heartbeat, MinionMessage, Register, ResultBatch, TaskLease, TaskResult,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

/// Everything the coordinator told a rogue minion.
#[derive(Debug, Default)]
pub struct RogueLog {
    pub generation: Option<u64>,
    pub leases: Vec<(Instant, TaskLease)>,
    pub revoked: Vec<(Instant, u64)>,
    pub acks: Vec<(Instant, AckItem)>,
    /// Set when the session ended (status code and message, or "eof").
    pub closed: Option<(Instant, String)>,
}

/// A hand-driven minion session.
pub struct RogueMinion {
    pub id: String,
    tx: Option<mpsc::Sender<MinionMessage>>,
    log: Arc<Mutex<RogueLog>>,
    reader: tokio::task::JoinHandle<()>,
    heart: Option<tokio::task::JoinHandle<()>>,
}

/// Who the rogue minion says it is.
#[derive(Debug, Clone)]
pub struct RogueIdentity {
    pub id: String,
    pub provider: String,
    pub capabilities: Vec<String>,
    pub modules: Vec<String>,
    pub capacity: u32,
}

impl RogueIdentity {
    /// Runs only `noop` tasks (a cluster whose real minions do not enable `noop` leaves them to it).
    pub fn noop(id: &str, provider: &str, capacity: u32) -> Self {
        Self {
            id: id.into(),
            provider: provider.into(),
            capabilities: vec!["noop".into()],
            modules: vec!["noop".into()],
            capacity,
        }
    }

    pub fn scanner(id: &str, provider: &str, capacity: u32) -> Self {
        Self {
            id: id.into(),
            provider: provider.into(),
            capabilities: vec!["scan".into(), "grab".into(), "noop".into()],
            modules: vec!["portscan".into(), "banner".into(), "noop".into()],
            capacity,
        }
    }
}

impl RogueMinion {
    /// Opens a session and registers. With `heartbeat = Some(interval)` it heartbeats by itself.
    pub async fn connect(
        url: &str,
        who: &RogueIdentity,
        heartbeat: Option<Duration>,
    ) -> anyhow::Result<Self> {
        let ch = Endpoint::from_shared(url.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await?;
        let mut client = MinionServiceClient::new(ch)
            .max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES)
            // A hostile peer may send more than the coordinator accepts.
            .max_encoding_message_size(usize::MAX);
        let (tx, rx) = mpsc::channel(1024);
        tx.send(MinionMessage {
            msg: Some(MinionMsg::Register(Register {
                minion_id: who.id.clone(),
                incarnation: format!("rogue-{}-{:?}", std::process::id(), Instant::now()),
                provider: who.provider.clone(),
                capabilities: who.capabilities.clone(),
                modules: who.modules.clone(),
                capacity: who.capacity,
                version: "chaos-rogue".into(),
            })),
        })
        .await?;
        let mut inbound = client.session(ReceiverStream::new(rx)).await?.into_inner();
        let log = Arc::new(Mutex::new(RogueLog::default()));
        let rlog = log.clone();
        let reader = tokio::spawn(async move {
            loop {
                let m = inbound.message().await;
                let now = Instant::now();
                let mut l = rlog.lock().expect("rogue log");
                match m {
                    Ok(Some(msg)) => match msg.msg {
                        Some(CoordMsg::Registered(r)) => l.generation = Some(r.generation),
                        Some(CoordMsg::Leases(b)) => {
                            l.leases.extend(b.leases.into_iter().map(|x| (now, x)))
                        }
                        Some(CoordMsg::Revoke(r)) => {
                            l.revoked.extend(r.tokens.into_iter().map(|t| (now, t)))
                        }
                        Some(CoordMsg::Ack(a)) => {
                            l.acks.extend(a.items.into_iter().map(|x| (now, x)))
                        }
                        None => {}
                    },
                    Ok(None) => {
                        l.closed = Some((now, "eof".into()));
                        return;
                    }
                    Err(s) => {
                        l.closed = Some((now, format!("{:?}: {}", s.code(), s.message())));
                        return;
                    }
                }
            }
        });
        let mut me = Self {
            id: who.id.clone(),
            tx: Some(tx),
            log,
            reader,
            heart: None,
        };
        if let Some(every) = heartbeat {
            me.start_heartbeats(every);
        }
        Ok(me)
    }

    /// Heartbeats every `every` until [`stop_heartbeats`](Self::stop_heartbeats).
    pub fn start_heartbeats(&mut self, every: Duration) {
        let Some(tx) = self.tx.clone() else { return };
        let log = self.log.clone();
        self.heart = Some(tokio::spawn(async move {
            loop {
                let held: Vec<u64> = {
                    let l = log.lock().expect("rogue log");
                    l.leases.iter().map(|(_, x)| x.token).collect()
                };
                let hb = MinionMessage {
                    msg: Some(MinionMsg::Heartbeat(Heartbeat {
                        running: held.len() as u32,
                        held_tokens: held,
                    })),
                };
                if tx.send(hb).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        }));
    }

    /// Goes silent (a hung minion): the session stays open, nothing is sent.
    pub fn stop_heartbeats(&mut self) {
        if let Some(h) = self.heart.take() {
            h.abort();
        }
    }

    pub fn log(&self) -> std::sync::MutexGuard<'_, RogueLog> {
        self.log.lock().expect("rogue log")
    }

    pub fn generation(&self) -> Option<u64> {
        self.log().generation
    }

    pub fn lease_count(&self) -> usize {
        self.log().leases.len()
    }

    pub fn leases(&self) -> Vec<TaskLease> {
        self.log().leases.iter().map(|(_, l)| l.clone()).collect()
    }

    /// Sends one batch of results.
    pub async fn send(&self, items: Vec<TaskResult>) -> anyhow::Result<()> {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("session closed by the harness"))?;
        tx.send(MinionMessage {
            msg: Some(MinionMsg::Results(ResultBatch { items })),
        })
        .await?;
        Ok(())
    }

    /// Ends the session (the outbound stream closes; the process "dies" from the coordinator's view).
    pub fn hang_up(&mut self) {
        self.stop_heartbeats();
        self.tx = None;
    }
}

impl Drop for RogueMinion {
    fn drop(&mut self) {
        self.stop_heartbeats();
        self.reader.abort();
    }
}

/// Runs a lease honestly: a TCP connect to each port of each of its (loopback only) addresses
/// (a block task holds `target_count` consecutive addresses).
pub async fn execute_scan(lease: &TaskLease) -> TaskResult {
    let started = overlord_core::now_ms();
    let mut findings = Vec::new();
    let first: Option<std::net::IpAddr> = lease.target.parse().ok();
    let addrs = first.into_iter().flat_map(|a| {
        (0..lease.target_count.max(1)).filter_map(move |i| match a {
            std::net::IpAddr::V4(v4) => u32::from(v4)
                .checked_add(i)
                .map(|n| std::net::IpAddr::V4(n.into())),
            std::net::IpAddr::V6(v6) => u128::from(v6)
                .checked_add(u128::from(i))
                .map(|n| std::net::IpAddr::V6(n.into())),
        })
    });
    for ip in addrs.filter(|ip| ip.is_loopback()) {
        for &p in &lease.ports {
            let addr = std::net::SocketAddr::new(ip, p as u16);
            if let Ok(Ok(s)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await
                && s.local_addr().map(|l| l != addr).unwrap_or(false)
            {
                let payload = overlord_core::finding::Payload::OpenPort(
                    overlord_core::finding::OpenPort::tcp(),
                );
                findings.push(FindingOut {
                    kind: payload.kind_name().into(),
                    target: ip.to_string(),
                    port: p,
                    data_json: payload.to_json(),
                    blob: Default::default(),
                    schema_version: overlord_core::finding::SCHEMA_VERSION,
                });
            }
        }
    }
    TaskResult {
        job_id: lease.job_id,
        task_id: lease.task_id,
        token: lease.token,
        ok: true,
        error: String::new(),
        permanent: false,
        findings,
        started_at_ms: started,
        finished_at_ms: overlord_core::now_ms(),
        probe_counts: vec![],
        ..Default::default()
    }
}

/// An honest, empty result for a lease (what `noop` reports).
pub fn empty_result(lease: &TaskLease) -> TaskResult {
    let now = overlord_core::now_ms();
    TaskResult {
        job_id: lease.job_id,
        task_id: lease.task_id,
        token: lease.token,
        ok: true,
        error: String::new(),
        permanent: false,
        findings: vec![],
        started_at_ms: now,
        finished_at_ms: now,
        probe_counts: vec![],
        ..Default::default()
    }
}
