//! UDP scan with service identification.
//!
//! Per port, one connected UDP socket (`IP_RECVERR`, see [`sock`]):
//! 1. **Stage 1** — our protocol requests ([`proto::Proto`]: DNS, NTP, SNMP v2c + v3, SSDP,
//!    NetBIOS, memcached; the port's own protocol first) and the nmap-service-probes UDP probes
//!    whose `ports` list the port, all sent at once. Each of ours carries a fresh identifier and
//!    its reply is accepted only when it echoes it (validated); nmap's are matched by their rules.
//! 2. **Retransmission** — when the port stays silent, stage 1 is sent again (`retries` times, the
//!    wait growing ×1.5 each time): a lost datagram or a rate-limited ICMP error is not a verdict.
//! 3. **Stage 2** — the other nmap UDP probes with `rarity ≤ intensity`, in one burst, when the port
//!    answered but nothing named it, or when it stayed silent (nmap -sV does the same; a reply
//!    turns `open|filtered` into `open`).
//!
//! Verdicts: any datagram from the port → `open` (reason `udp-response`); ICMP port unreachable →
//! `closed` (`port-unreach`); another ICMP unreachable → `filtered` (`host-unreach`,
//! `admin-prohibited`, ...); silence → `open|filtered` (`no-response`). The whole port is bounded
//! by `budget_ms`; the report says which probes were sent, how many tries and the time spent.

pub mod proto;
pub mod sock;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, timeout_at};

use crate::service::engine::match_reply;
use crate::service::io::escape_bytes;
use crate::service::probefile::{ProbeDb, Protocol};
use proto::Proto;

/// Knobs of the UDP scan; defaults suit loopback and LAN targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct UdpOptions {
    /// First wait for a reply after a burst; grows ×1.5 per retransmission.
    pub wait_ms: u64,
    /// Retransmissions of stage 1 to a silent port.
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
            retries: 2,
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

/// nmap's UDP port states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UdpState {
    #[serde(rename = "open")]
    Open,
    #[serde(rename = "open|filtered")]
    OpenFiltered,
    #[serde(rename = "closed")]
    Closed,
    #[serde(rename = "filtered")]
    Filtered,
}

impl UdpState {
    pub fn as_str(self) -> &'static str {
        match self {
            UdpState::Open => "open",
            UdpState::OpenFiltered => "open|filtered",
            UdpState::Closed => "closed",
            UdpState::Filtered => "filtered",
        }
    }
}

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
    /// Bursts sent (1 = no retransmission).
    pub tries: u32,
    /// First reply (or ICMP error) after the first send.
    pub rtt_ms: Option<f64>,
    pub budget_ms: u64,
    pub spent_ms: f64,
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
) -> Burst {
    for p in &sent[from..] {
        if let Err(e) = s.send(&p.payload).await {
            if let Some(icmp) = sock::take_icmp_error(s) {
                r.rtt_ms.get_or_insert(ms(t0.elapsed()));
                return Burst::Icmp(icmp);
            }
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
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
                    r.rtt_ms.get_or_insert(ms(t0.elapsed()));
                    if replied {
                        // A datagram came back earlier: the port is open whatever follows.
                        continue;
                    }
                    return Burst::Icmp(icmp);
                }
                if e.kind() == std::io::ErrorKind::ConnectionRefused {
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

/// Scans and identifies one UDP port. Never panics on peer behaviour.
pub async fn scan_port(addr: SocketAddr, opts: &UdpOptions, db: &ProbeDb) -> UdpReport {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(opts.budget_ms);
    let mut r = UdpReport::new(addr, opts.budget_ms);
    let s = match sock::connect(addr) {
        Ok(s) => s,
        Err(e) => {
            r.state = UdpState::Filtered;
            r.reason = format!("socket error: {e}");
            return r;
        }
    };
    let (s1, s2) = plan(addr.port(), opts, db);
    let mk = |k: Kind| {
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
    };
    let mut sent: Vec<Sent> = s1.into_iter().map(mk).collect();
    r.probes_sent = sent.iter().map(|p| probe_name(p.kind, db)).collect();
    let settle = Duration::from_millis(opts.settle_ms);
    let mut wait = Duration::from_millis(opts.wait_ms);
    let mut outcome = Burst::Silent;
    for attempt in 0..=opts.retries {
        if Instant::now() >= deadline {
            break;
        }
        r.tries = attempt + 1;
        outcome = burst(
            &s,
            &sent,
            0,
            (Instant::now() + wait).min(deadline),
            settle,
            t0,
            opts,
            db,
            &mut r,
        )
        .await;
        if !matches!(outcome, Burst::Silent) {
            break;
        }
        wait = wait * 3 / 2;
    }
    let need_stage2 = match outcome {
        Burst::Silent => true,
        Burst::Replied(false) => !r.validated && (r.service.is_none() || r.soft),
        _ => false,
    };
    if need_stage2 && !s2.is_empty() && Instant::now() < deadline {
        let from = sent.len();
        sent.extend(s2.into_iter().map(mk));
        r.probes_sent
            .extend(sent[from..].iter().map(|p| probe_name(p.kind, db)));
        let end = (Instant::now() + Duration::from_millis(opts.wait_ms)).min(deadline);
        // Replies to stage 1 probes may still arrive; every sent probe is matched.
        let o2 = burst(&s, &sent, from, end, settle, t0, opts, db, &mut r).await;
        outcome = match (outcome, o2) {
            (Burst::Replied(_), Burst::Icmp(_) | Burst::Error(_) | Burst::Silent) => {
                Burst::Replied(false)
            }
            (_, o2) => o2,
        };
    }
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
    r.spent_ms = ms(t0.elapsed());
    tracing::debug!(%addr, state = r.state.as_str(), reason = %r.reason, service = ?r.service,
        product = ?r.product, tries = r.tries, spent_ms = r.spent_ms, "udp port judged");
    r
}

/// Scans `ports` of `ip` (`concurrency` at a time); reports in port order.
pub async fn scan(ip: IpAddr, ports: &[u16], opts: &UdpOptions, db: &ProbeDb) -> Vec<UdpReport> {
    let mut out: Vec<UdpReport> = futures_util::stream::iter(ports.iter().copied())
        .map(|p| scan_port(SocketAddr::new(ip, p), opts, db))
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
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
