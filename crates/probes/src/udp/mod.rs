//! UDP scan with service identification.
//!
//! Per port and round, one connected UDP socket (`IP_RECVERR`, see [`sock`]):
//! 1. **Stage 1** — our protocol requests ([`proto::Proto`]: DNS, NTP, SNMP v2c + v3, SSDP,
//!    NetBIOS, memcached; the port's own protocol first) and the nmap-service-probes UDP probes
//!    whose `ports` list the port, all sent at once (one *burst*: the UDP scan's probe). Each of
//!    ours carries a fresh identifier and its reply is accepted only when it echoes it
//!    (validated); nmap's are matched by their rules.
//! 2. **Re-send rounds, driven by measured loss** — every port gets a burst in round 0; the ports
//!    that stayed silent are re-sent network by network (IPv4 /24, IPv6 /64) while the yield of
//!    the re-sends says live ports are still being lost: the same per-network decisions as the
//!    TCP scans ([`crate::scan::retry`]), not a fixed retry count. The wait of a round follows
//!    the measured RTT (srtt + 4·rttvar, between `wait_min_ms` and `wait_ms`, ×1.5 per re-send
//!    round), so a re-send round on a fast network costs tens of milliseconds, not a timeout.
//! 3. **Stage 2** — the other nmap UDP probes with `rarity ≤ intensity`, in one burst, when the port
//!    answered but nothing named it (on the same socket, at once), or when it stayed silent after
//!    its last round (on a fresh socket; nmap -sV does the same; a reply turns `open|filtered`
//!    into `open`).
//!
//! Verdicts: any datagram from the port → `open` (reason `udp-response`); ICMP port unreachable →
//! `closed` (`port-unreach`); another ICMP unreachable → `filtered` (`host-unreach`,
//! `admin-prohibited`, ...); silence → `open|filtered` (`no-response`). One port is bounded by
//! `budget_ms` over all its rounds; the report says which probes were sent, how many bursts and
//! the time spent.
//!
//! **What "answered" means for the loss book, and what the yield measures.** A burst is answered
//! when anything comes back from the port: a datagram (validated or not — either proves the path
//! works both ways and re-sending would add nothing) or an ICMP error. Silence is what loss looks
//! like, but also what an open service that ignores our requests, a filtering firewall or an
//! ICMP rate limit looks like; a UDP scan cannot tell them apart. So the re-send yield `y` of a
//! network is (delivered live ports) / (lost live ports + silent ports): silent ports lower it,
//! the policy over-estimates loss and keeps re-sending while re-sends still bring answers (the
//! safe side: recall), and a network whose re-sends bring nothing is given up after one re-send
//! (filtered). The cost of silent ports is one burst each per extra round; the measured figures
//! (`overlord bench loss --scans udp`) are in DESIGN.md.

pub mod proto;
pub mod sock;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout_at};

use crate::scan::connect::{Rtt, SweepReport};
use crate::scan::retry::{LossBook, Net, RetryPolicy};

use crate::service::engine::match_reply;
use crate::service::io::escape_bytes;
use crate::service::probefile::{ProbeDb, Protocol};
use proto::Proto;

/// Knobs of the UDP scan; defaults suit loopback and LAN targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UdpOptions {
    /// Upper bound of the wait for a reply after a burst (the wait itself follows the measured
    /// RTT; it is this until the first answer); also the wait of stage 2.
    pub wait_ms: u64,
    /// Lower bound of the adaptive wait.
    pub wait_min_ms: u64,
    /// Upper bound on re-send rounds of stage 1 to silent ports; how many a network gets follows
    /// its measured loss ([`crate::scan::retry`]).
    pub retries: u32,
    /// After the first reply, how long to keep listening for a better (validated) one.
    pub settle_ms: u64,
    /// Hard cap on one port (all stages and retries).
    pub budget_ms: u64,
    /// nmap's version intensity for stage 2 (nmap UDP probes rarer than this are skipped).
    pub intensity: u8,
    /// Send the nmap-service-probes UDP probes at all.
    pub nmap_probes: bool,
    /// Send our protocol requests only on their well-known ports (quieter; misses services on
    /// unusual ports).
    pub hinted_only: bool,
    /// Ports scanned at once.
    pub concurrency: usize,
    /// Bytes of the reply kept in the report.
    pub banner_cap: usize,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            wait_ms: 400,
            wait_min_ms: 100,
            retries: RetryPolicy::default().max_rounds - 1,
            settle_ms: 60,
            budget_ms: 5000,
            intensity: 7,
            nmap_probes: true,
            hinted_only: false,
            concurrency: 128,
            banner_cap: 512,
        }
    }
}

/// nmap's UDP port states: the finding schema's.
pub use overlord_core::finding::UdpState;

/// Everything learned about one UDP port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UdpReport {
    pub addr: SocketAddr,
    pub state: UdpState,
    /// `udp-response`, `port-unreach`, `admin-prohibited`, `no-response`, ...
    pub reason: String,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub cpe: Vec<String>,
    /// The probe whose reply named the service.
    pub probe: Option<String>,
    /// How the reply was tied to our request (`dns id 0x1a2b, QR set`), or the rule that matched
    /// (`nmap-service-probes:15005`); none when nothing named the service.
    pub evidence: Option<String>,
    /// Only a softmatch named the service.
    pub soft: bool,
    /// The naming reply echoed our request's identifier (one of our protocol requests).
    pub validated: bool,
    /// The first reply (escaped, capped).
    pub reply: Option<String>,
    pub reply_bytes: usize,
    /// Distinct probes sent, in order.
    pub probes_sent: Vec<String>,
    /// Stage-1 bursts sent (1 = no re-send).
    pub tries: u32,
    /// First reply (or ICMP error) after the send of the burst that got it.
    pub rtt_ms: Option<f64>,
    pub budget_ms: u64,
    pub spent_ms: f64,
}

/// The report as the finding schema's `udp` payload: every field moved by name and type (a field
/// added on one side only does not compile).
impl From<UdpReport> for overlord_core::finding::UdpPort {
    fn from(r: UdpReport) -> Self {
        let UdpReport {
            addr,
            state,
            reason,
            service,
            product,
            version,
            info,
            hostname,
            os,
            cpe,
            probe,
            evidence,
            soft,
            validated,
            reply,
            reply_bytes,
            probes_sent,
            tries,
            rtt_ms,
            budget_ms,
            spent_ms,
        } = r;
        overlord_core::finding::UdpPort {
            addr: addr.to_string(),
            state,
            reason,
            service,
            product,
            version,
            info,
            hostname,
            os,
            cpe,
            probe,
            evidence,
            soft,
            validated,
            reply,
            reply_bytes,
            probes_sent,
            tries,
            rtt_ms,
            budget_ms,
            spent_ms,
        }
    }
}

impl UdpReport {
    fn new(addr: SocketAddr, budget_ms: u64) -> Self {
        UdpReport {
            addr,
            state: UdpState::OpenFiltered,
            reason: "no-response".into(),
            service: None,
            product: None,
            version: None,
            info: None,
            hostname: None,
            os: None,
            cpe: Vec::new(),
            probe: None,
            evidence: None,
            soft: false,
            validated: false,
            reply: None,
            reply_bytes: 0,
            probes_sent: Vec::new(),
            tries: 0,
            rtt_ms: None,
            budget_ms,
            spent_ms: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ours(Proto),
    Nmap(usize),
}

struct Sent {
    kind: Kind,
    id: u64,
    payload: Vec<u8>,
}

/// A fresh 64-bit identifier (not cryptographic: it ties replies to requests).
fn fresh_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// The probe plan of a port: (stage 1, stage 2). Pure.
fn plan(port: u16, opts: &UdpOptions, db: &ProbeDb) -> (Vec<Kind>, Vec<Kind>) {
    let mut ours: Vec<Proto> = Proto::ALL
        .into_iter()
        .filter(|p| !opts.hinted_only || p.ports().contains(&port))
        .collect();
    ours.sort_by_key(|p| !p.ports().contains(&port));
    let mut s1: Vec<Kind> = ours.into_iter().map(Kind::Ours).collect();
    let mut s2 = Vec::new();
    if opts.nmap_probes {
        let mut udp: Vec<usize> = (0..db.probes.len())
            .filter(|&i| db.probes[i].protocol == Protocol::Udp && !db.probes[i].payload.is_empty())
            .collect();
        udp.sort_by_key(|&i| (db.probes[i].rarity, i));
        for i in udp {
            let p = &db.probes[i];
            if p.ports.contains(port) {
                s1.push(Kind::Nmap(i));
            } else if p.rarity <= opts.intensity {
                s2.push(Kind::Nmap(i));
            }
        }
    }
    (s1, s2)
}

fn probe_name(k: Kind, db: &ProbeDb) -> String {
    match k {
        Kind::Ours(p) => p.name().to_string(),
        Kind::Nmap(i) => format!("nmap:{}", db.probes[i].name),
    }
}

/// Best reading of one reply against what was sent: (validated/hard?, fills the report).
fn judge(reply: &[u8], sent: &[Sent], db: &ProbeDb, r: &mut UdpReport) -> bool {
    for s in sent {
        if let Kind::Ours(p) = s.kind
            && let Some(a) = p.validate(reply, s.id)
        {
            let complete = a.product.is_some();
            if r.validated && r.service.as_deref() == Some(a.service.as_str()) {
                // A second validated answer of the same service (SNMP v2c then v3): it adds
                // what the first one lacked.
                if r.product.is_none() {
                    r.product = a.product;
                    r.version = a.version;
                    r.probe = Some(p.name().into());
                    r.evidence = Some(a.check);
                }
                let joined = match (r.info.take(), a.info) {
                    (Some(x), Some(y)) if x != y => Some(format!("{x}; {y}")),
                    (x, y) => x.or(y),
                };
                r.info = joined;
                r.hostname = r.hostname.take().or(a.hostname);
                r.os = r.os.take().or(a.os);
                return complete;
            }
            r.service = Some(a.service);
            r.product = a.product;
            r.version = a.version;
            r.info = a.info;
            r.hostname = a.hostname;
            r.os = a.os;
            r.cpe.clear();
            r.probe = Some(p.name().into());
            r.evidence = Some(a.check);
            r.soft = false;
            r.validated = true;
            return complete;
        }
    }
    if r.validated {
        // Already tied to our request; an unvalidated rule match would only be weaker.
        return false;
    }
    let mut soft = None;
    for s in sent {
        if let Kind::Nmap(i) = s.kind
            && let Some(m) = match_reply(db, i, reply)
        {
            if !m.rule.soft {
                fill_rule(r, &m, db, i, false);
                return true;
            }
            soft.get_or_insert((m, i));
        }
    }
    if r.service.is_none()
        && let Some((m, i)) = soft
    {
        fill_rule(r, &m, db, i, true);
    }
    false
}

fn fill_rule(
    r: &mut UdpReport,
    m: &crate::service::engine::RuleMatch,
    db: &ProbeDb,
    i: usize,
    soft: bool,
) {
    r.service = Some(m.rule.service.clone());
    r.product = m.product.clone();
    r.version = m.version.clone();
    r.info = m.info.clone();
    r.hostname = m.hostname.clone();
    r.os = m.os.clone();
    r.cpe = m.cpe.clone();
    r.probe = Some(format!("nmap:{}", db.probes[i].name));
    r.evidence = Some(format!("{}:{}", m.rule.file, m.rule.line));
    r.soft = soft;
}

enum Burst {
    /// At least one reply; `true` when it named the service for sure.
    Replied(bool),
    Icmp(sock::IcmpError),
    Silent,
    /// The socket failed in a way that is not an ICMP error.
    Error(String),
}

/// Sends `sent[from..]`, then reads replies until `end` (or `settle` after a reply, or at once
/// after a validated one).
#[allow(clippy::too_many_arguments)]
async fn burst(
    s: &tokio::net::UdpSocket,
    sent: &[Sent],
    from: usize,
    end: Instant,
    settle: Duration,
    t0: Instant,
    opts: &UdpOptions,
    db: &ProbeDb,
    r: &mut UdpReport,
    first: &mut Option<Duration>,
) -> Burst {
    for p in &sent[from..] {
        if let Err(e) = s.send(&p.payload).await {
            if let Some(icmp) = sock::take_icmp_error(s) {
                first.get_or_insert(t0.elapsed());
                r.rtt_ms.get_or_insert(ms(t0.elapsed()));
                return Burst::Icmp(icmp);
            }
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                first.get_or_insert(t0.elapsed());
                return Burst::Icmp(refused());
            }
            return Burst::Error(format!("send: {e}"));
        }
    }
    let mut buf = vec![0u8; 65_536];
    let mut end = end;
    let mut replied = false;
    loop {
        match timeout_at(end, s.recv(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(n)) => {
                first.get_or_insert(t0.elapsed());
                r.rtt_ms.get_or_insert(ms(t0.elapsed()));
                let data = &buf[..n];
                if r.reply.is_none() {
                    r.reply_bytes = n;
                    r.reply = Some(escape_bytes(&data[..n.min(opts.banner_cap)]));
                }
                if judge(data, sent, db, r) {
                    return Burst::Replied(true);
                }
                if !replied {
                    replied = true;
                    end = end.min(Instant::now() + settle);
                }
            }
            Ok(Err(e)) => {
                if let Some(icmp) = sock::take_icmp_error(s) {
                    first.get_or_insert(t0.elapsed());
                    r.rtt_ms.get_or_insert(ms(t0.elapsed()));
                    if replied {
                        // A datagram came back earlier: the port is open whatever follows.
                        continue;
                    }
                    return Burst::Icmp(icmp);
                }
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                    first.get_or_insert(t0.elapsed());
                    if replied {
                        continue;
                    }
                    return Burst::Icmp(refused());
                }
                return Burst::Error(format!("recv: {e}"));
            }
        }
    }
    if replied {
        Burst::Replied(false)
    } else {
        Burst::Silent
    }
}

/// ECONNREFUSED without a queued ICMP message: still a port unreachable.
fn refused() -> sock::IcmpError {
    sock::IcmpError {
        v6: false,
        icmp_type: 3,
        code: 3,
        errno: libc::ECONNREFUSED,
    }
}

fn make_sent(k: Kind, db: &ProbeDb) -> Sent {
    let id = fresh_id();
    let payload = match k {
        Kind::Ours(p) => p.build(id),
        Kind::Nmap(i) => db.probes[i].payload.clone(),
    };
    Sent {
        kind: k,
        id,
        payload,
    }
}

/// What one round did to one port.
struct PortRound {
    index: usize,
    r: UdpReport,
    outcome: Burst,
    /// A burst left (false: the socket could not be made).
    sent: bool,
    /// Time from the send to the first answer.
    first: Option<Duration>,
    took: Duration,
    datagrams: u64,
}

/// One stage-1 burst to one port on a fresh socket with fresh identifiers. When the port answers
/// without naming itself, stage 2 follows at once on the same socket (replies to stage 1 may
/// still arrive and are matched too).
async fn port_round(
    index: usize,
    mut r: UdpReport,
    wait: Duration,
    opts: &UdpOptions,
    db: &ProbeDb,
) -> PortRound {
    let t0 = Instant::now();
    let addr = r.addr;
    let s = match sock::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            return PortRound {
                index,
                r,
                outcome: Burst::Error(format!("socket error: {e}")),
                sent: false,
                first: None,
                took: t0.elapsed(),
                datagrams: 0,
            };
        }
    };
    let (s1, s2) = plan(addr.port(), opts, db);
    let mut sent: Vec<Sent> = s1.into_iter().map(|k| make_sent(k, db)).collect();
    if r.probes_sent.is_empty() {
        r.probes_sent = sent.iter().map(|p| probe_name(p.kind, db)).collect();
    }
    r.tries += 1;
    let settle = Duration::from_millis(opts.settle_ms);
    let mut first = None;
    let mut outcome = burst(
        &s,
        &sent,
        0,
        t0 + wait,
        settle,
        t0,
        opts,
        db,
        &mut r,
        &mut first,
    )
    .await;
    let unnamed =
        matches!(outcome, Burst::Replied(false)) && !r.validated && (r.service.is_none() || r.soft);
    if unnamed && !s2.is_empty() {
        let from = sent.len();
        sent.extend(s2.into_iter().map(|k| make_sent(k, db)));
        r.probes_sent
            .extend(sent[from..].iter().map(|p| probe_name(p.kind, db)));
        let end = Instant::now() + Duration::from_millis(opts.wait_ms);
        let o2 = burst(
            &s, &sent, from, end, settle, t0, opts, db, &mut r, &mut None,
        )
        .await;
        if let Burst::Replied(true) = o2 {
            outcome = o2;
        }
    }
    PortRound {
        index,
        r,
        outcome,
        sent: true,
        first,
        took: t0.elapsed(),
        datagrams: sent.len() as u64,
    }
}

/// Stage 2 for a port that stayed silent through its rounds: the other nmap UDP probes, one
/// burst on a fresh socket.
async fn silent_stage2(
    index: usize,
    mut r: UdpReport,
    wait: Duration,
    opts: &UdpOptions,
    db: &ProbeDb,
) -> PortRound {
    let t0 = Instant::now();
    let (_, s2) = plan(r.addr.port(), opts, db);
    let mut outcome = Burst::Silent;
    let mut datagrams = 0;
    if let Ok(s) = sock::connect(r.addr) {
        let sent: Vec<Sent> = s2.into_iter().map(|k| make_sent(k, db)).collect();
        r.probes_sent
            .extend(sent.iter().map(|p| probe_name(p.kind, db)));
        datagrams = sent.len() as u64;
        let settle = Duration::from_millis(opts.settle_ms);
        outcome = burst(
            &s,
            &sent,
            0,
            t0 + wait,
            settle,
            t0,
            opts,
            db,
            &mut r,
            &mut None,
        )
        .await;
    }
    PortRound {
        index,
        r,
        outcome,
        sent: true,
        first: None,
        took: t0.elapsed(),
        datagrams,
    }
}

/// A UDP scan of many ports: the per-port reports and what the rounds cost.
#[derive(Debug, Clone, Default)]
pub struct UdpSweep {
    /// One report per target, in the order given.
    pub reports: Vec<UdpReport>,
    /// Stage-1 bursts (a burst is the UDP scan's probe: `sent` / targets = probes per port),
    /// answered bursts, re-sent bursts, rounds, per target network — the counts the quality
    /// ledger takes (`outcomes` is empty: the verdicts are in `reports`).
    pub counts: SweepReport,
    /// Datagrams sent in all (stage 1 and stage 2).
    pub datagrams: u64,
}

/// Scans and identifies `targets` (`concurrency` ports at a time): round 0 sends every port a
/// burst, later rounds re-send the silent ports of the networks the loss policy picks, then
/// stage 2 tries the ports still silent. Never panics on peer behaviour.
pub async fn scan_targets(targets: &[SocketAddr], opts: &UdpOptions, db: &ProbeDb) -> UdpSweep {
    let policy = RetryPolicy {
        max_rounds: opts.retries.saturating_add(1),
        ..Default::default()
    };
    let budget = Duration::from_millis(opts.budget_ms);
    let wait_max = Duration::from_millis(opts.wait_ms.max(1));
    let wait_min = Duration::from_millis(opts.wait_min_ms.min(opts.wait_ms));
    let conc = opts.concurrency.max(1);
    let mut reports: Vec<Option<UdpReport>> = targets
        .iter()
        .map(|a| Some(UdpReport::new(*a, opts.budget_ms)))
        .collect();
    let mut outcomes: Vec<Burst> = targets.iter().map(|_| Burst::Silent).collect();
    let mut spent: Vec<Duration> = vec![Duration::ZERO; targets.len()];
    let mut counts = SweepReport::default();
    let mut datagrams = 0u64;
    let rtt = std::sync::Mutex::new(Rtt::default());
    let mut book = LossBook::default();
    let mut todo: Vec<usize> = (0..targets.len()).collect();
    let mut round = 0u32;
    loop {
        let grow = 1.5f64.powi(round.min(8) as i32);
        let results: Vec<PortRound> = {
            let reports = &mut reports;
            let (rtt, spent) = (&rtt, &spent);
            futures_util::stream::iter(todo.iter().copied())
                .map(move |i| {
                    let r = reports[i].take().expect("one round per port at a time");
                    let base = rtt
                        .lock()
                        .map(|g| g.bounded(wait_min, wait_max))
                        .unwrap_or(wait_max);
                    let wait = base
                        .mul_f64(grow)
                        .min(wait_max)
                        .min(budget.saturating_sub(spent[i]));
                    async move {
                        let pr = port_round(i, r, wait, opts, db).await;
                        if let Some(f) = pr.first
                            && let Ok(mut g) = rtt.lock()
                        {
                            g.sample(f.as_micros() as f64);
                        }
                        pr
                    }
                })
                .buffer_unordered(conc)
                .collect()
                .await
        };
        for pr in results {
            let i = pr.index;
            let net = Net::of(targets[i].ip());
            spent[i] += pr.took;
            datagrams += pr.datagrams;
            reports[i] = Some(pr.r);
            if pr.sent {
                counts.count_send(net, round > 0);
                match pr.outcome {
                    // A local failure says nothing about the network.
                    Burst::Error(_) => {}
                    Burst::Silent => book.record(net, false),
                    _ => {
                        counts.count_answer(net);
                        book.record(net, true);
                    }
                }
            }
            outcomes[i] = pr.outcome;
        }
        counts.rounds = round + 1;
        let silent = |i: usize| matches!(outcomes[i], Burst::Silent) && spent[i] < budget;
        let mut unanswered: std::collections::HashMap<Net, u64> = Default::default();
        for &i in &todo {
            if silent(i) {
                *unanswered.entry(Net::of(targets[i].ip())).or_default() += 1;
            }
        }
        let again = book.decide(&policy, round, &unanswered);
        if again.is_empty() {
            break;
        }
        todo.retain(|&i| silent(i) && again.binary_search(&Net::of(targets[i].ip())).is_ok());
        if todo.is_empty() {
            break;
        }
        round += 1;
    }
    // Stage 2 for the ports still silent.
    let s2: Vec<usize> = (0..targets.len())
        .filter(|&i| {
            matches!(outcomes[i], Burst::Silent)
                && spent[i] < budget
                && !plan(targets[i].port(), opts, db).1.is_empty()
        })
        .collect();
    if !s2.is_empty() {
        let results: Vec<PortRound> = {
            let reports = &mut reports;
            let spent = &spent;
            futures_util::stream::iter(s2)
                .map(move |i| {
                    let r = reports[i].take().expect("one round per port at a time");
                    let wait = wait_max.min(budget.saturating_sub(spent[i]));
                    silent_stage2(i, r, wait, opts, db)
                })
                .buffer_unordered(conc)
                .collect()
                .await
        };
        for pr in results {
            let i = pr.index;
            spent[i] += pr.took;
            datagrams += pr.datagrams;
            reports[i] = Some(pr.r);
            if !matches!(pr.outcome, Burst::Silent) {
                outcomes[i] = pr.outcome;
            }
        }
    }
    let mut out = Vec::with_capacity(targets.len());
    for (i, (r, outcome)) in reports.into_iter().zip(outcomes).enumerate() {
        let mut r = r.expect("every port's report is back");
        match outcome {
            Burst::Replied(_) => {
                r.state = UdpState::Open;
                r.reason = "udp-response".into();
            }
            Burst::Icmp(e) => {
                r.state = if e.port_unreachable() {
                    UdpState::Closed
                } else {
                    UdpState::Filtered
                };
                r.reason = e.reason();
            }
            Burst::Silent => {
                r.state = UdpState::OpenFiltered;
                r.reason = "no-response".into();
            }
            Burst::Error(e) => {
                r.state = UdpState::Filtered;
                r.reason = e;
            }
        }
        r.spent_ms = ms(spent[i]);
        tracing::debug!(addr = %r.addr, state = r.state.as_str(), reason = %r.reason,
            service = ?r.service, product = ?r.product, tries = r.tries, spent_ms = r.spent_ms,
            "udp port judged");
        out.push(r);
    }
    UdpSweep {
        reports: out,
        counts,
        datagrams,
    }
}

/// Scans and identifies one UDP port (a scan of one target: its network's loss is measured from
/// this port alone, so a silent port is re-sent once and given up when that yields nothing).
pub async fn scan_port(addr: SocketAddr, opts: &UdpOptions, db: &ProbeDb) -> UdpReport {
    scan_targets(&[addr], opts, db)
        .await
        .reports
        .pop()
        .expect("one report per target")
}

/// Scans `ports` of `ip`; reports in port order.
pub async fn scan(ip: IpAddr, ports: &[u16], opts: &UdpOptions, db: &ProbeDb) -> Vec<UdpReport> {
    let targets: Vec<SocketAddr> = ports.iter().map(|p| SocketAddr::new(ip, *p)).collect();
    let mut out = scan_targets(&targets, opts, db).await.reports;
    out.sort_by_key(|r| r.addr.port());
    out
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_puts_the_ports_protocol_first_and_hinted_only_filters() {
        let db = ProbeDb::builtin();
        let (s1, _) = plan(123, &UdpOptions::default(), &db);
        assert_eq!(s1[0], Kind::Ours(Proto::Ntp));
        assert_eq!(s1.len(), Proto::ALL.len());
        let o = UdpOptions {
            hinted_only: true,
            ..Default::default()
        };
        let (s1, _) = plan(11211, &o, &db);
        assert_eq!(s1, vec![Kind::Ours(Proto::Memcached)]);
        assert!(plan(4000, &o, &db).0.is_empty());
    }

    #[test]
    fn icmp_reasons() {
        let e = |v6, t, c| sock::IcmpError {
            v6,
            icmp_type: t,
            code: c,
            errno: 0,
        };
        assert!(e(false, 3, 3).port_unreachable());
        assert!(e(true, 1, 4).port_unreachable());
        assert!(!e(false, 3, 13).port_unreachable());
        assert_eq!(e(false, 3, 13).reason(), "admin-prohibited");
        assert_eq!(e(false, 3, 1).reason(), "host-unreach");
    }
}
