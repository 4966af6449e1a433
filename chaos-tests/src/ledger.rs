//! The independent ledger: what the targets really are, from listeners the test started itself.
//!
//! A ledger is a matrix `ips × ports`. Every cell is held by the harness: an *open* cell is a listening
//! socket (it accepts, optionally writes a banner, closes); a *closed* cell is a socket bound but not
//! listening, so nobody else can listen there while the ledger lives and a connect gets an RST. The
//! truth therefore does not depend on what other processes on the machine do.
//!
//! For jobs too big to hold every cell (thousands of addresses), [`Ledger::sparse`] holds the open cells
//! plus an *anchor* listener per port on one address (a wildcard bind of another process on that port
//! then fails), and treats every other cell as closed; [`Ledger::verify_extra`] re-checks an unexpected
//! open report by connecting.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinSet;

use crate::rng::Rng;

/// A finding as the harness sees it, reduced to what the ledger can judge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortReport {
    pub ip: IpAddr,
    pub port: u16,
}

/// Outcome of comparing reported open ports with the truth.
#[derive(Debug, Default, Clone)]
pub struct LedgerCheck {
    /// Open cells never reported.
    pub missing: Vec<SocketAddr>,
    /// Cells reported more than once, with their count.
    pub duplicated: Vec<(SocketAddr, usize)>,
    /// Reported open but closed in the ledger, and not open now either.
    pub false_open: Vec<SocketAddr>,
    /// Reported open, not ours, but something really listens there now (another process).
    pub foreign: Vec<SocketAddr>,
    pub expected_open: usize,
    pub reported: usize,
}

impl LedgerCheck {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.false_open.is_empty()
    }
}

impl std::fmt::Display for LedgerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "expected open {}, reported {}, missing {} {:?}, duplicated {} {:?}, false open {} {:?}, foreign {}",
            self.expected_open,
            self.reported,
            self.missing.len(),
            &self.missing[..self.missing.len().min(8)],
            self.duplicated.len(),
            &self.duplicated[..self.duplicated.len().min(8)],
            self.false_open.len(),
            &self.false_open[..self.false_open.len().min(8)],
            self.foreign.len()
        )
    }
}

/// Options for building a ledger.
#[derive(Debug, Clone)]
pub struct LedgerSpec {
    /// Target addresses (each must be in 127.0.0.0/8).
    pub ips: Vec<Ipv4Addr>,
    /// Number of distinct ports in the job's port list.
    pub ports: usize,
    /// Probability that a cell is open.
    pub open_ratio: f64,
    /// Write `CHAOS <ip>:<port>\r\n` on accept (for banner grabs).
    pub banner: bool,
    /// When set, the job targets this whole CIDR (e.g. a /18 = 16,384 tasks); `ips` must lie in it
    /// and only they may hold open cells. Use with [`Ledger::sparse`].
    pub cidr: Option<(Ipv4Addr, u8)>,
}

/// The truth about a set of loopback targets, held for as long as the value lives.
pub struct Ledger {
    ips: Vec<Ipv4Addr>,
    cidr: Option<(Ipv4Addr, u8)>,
    ports: Vec<u16>,
    open: BTreeSet<SocketAddr>,
    _closed_holders: Vec<TcpSocket>,
    accepts: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

/// Errors building a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("address {0} is not loopback (the harness only ever uses 127.0.0.0/8)")]
    NotLoopback(Ipv4Addr),
    #[error("could not reserve {wanted} ports free on every target address after {tries} tries")]
    NoPorts { wanted: usize, tries: usize },
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

fn reserve_closed(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    let s = TcpSocket::new_v4()?;
    s.bind(addr)?;
    Ok(s)
}

impl Ledger {
    /// Every cell held: open cells listen, closed cells are bound without listening.
    pub async fn dense(spec: &LedgerSpec, rng: &mut Rng) -> Result<Self, LedgerError> {
        Self::build(spec, rng, true).await
    }

    /// Only the open cells and one anchor per port are held; see the module docs.
    pub async fn sparse(spec: &LedgerSpec, rng: &mut Rng) -> Result<Self, LedgerError> {
        Self::build(spec, rng, false).await
    }

    async fn build(spec: &LedgerSpec, rng: &mut Rng, dense: bool) -> Result<Self, LedgerError> {
        for ip in &spec.ips {
            if !ip.is_loopback() {
                return Err(LedgerError::NotLoopback(*ip));
            }
        }
        let accepts = Arc::new(AtomicU64::new(0));
        let mut me = Self {
            ips: spec.ips.clone(),
            cidr: spec.cidr,
            ports: Vec::new(),
            open: BTreeSet::new(),
            _closed_holders: Vec::new(),
            accepts,
            tasks: JoinSet::new(),
        };
        let mut tries = 0;
        while me.ports.len() < spec.ports {
            tries += 1;
            if tries > spec.ports * 20 + 50 {
                return Err(LedgerError::NoPorts {
                    wanted: spec.ports,
                    tries,
                });
            }
            // A port free on every address: ask the kernel for one on the wildcard address, then
            // claim it on each target address (open or closed).
            let probe = std::net::TcpListener::bind("0.0.0.0:0")?;
            let port = probe.local_addr()?.port();
            drop(probe);
            let mut listeners = Vec::new();
            let mut holders = Vec::new();
            let mut ok = true;
            for (i, ip) in spec.ips.iter().enumerate() {
                let addr = SocketAddr::new(IpAddr::V4(*ip), port);
                let want_open = rng.chance(spec.open_ratio);
                if want_open {
                    match TcpListener::bind(addr).await {
                        Ok(l) => listeners.push(l),
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                } else if dense || i == 0 {
                    match reserve_closed(addr) {
                        Ok(h) => holders.push(h),
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
            }
            if !ok {
                continue;
            }
            me.ports.push(port);
            me._closed_holders.extend(holders);
            for l in listeners {
                let addr = l.local_addr()?;
                me.open.insert(addr);
                let accepts = me.accepts.clone();
                let banner = spec.banner;
                me.tasks.spawn(async move {
                    let mut conns = JoinSet::new();
                    while let Ok((mut s, _)) = l.accept().await {
                        accepts.fetch_add(1, Ordering::Relaxed);
                        while conns.try_join_next().is_some() {}
                        conns.spawn(async move {
                            if banner {
                                let line = format!("CHAOS {addr}\r\n");
                                let _ = s.write_all(line.as_bytes()).await;
                                // Keep the connection briefly so a banner grab reads it, then close.
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        });
                    }
                });
            }
        }
        me.ports.sort_unstable();
        Ok(me)
    }

    pub fn ips(&self) -> &[Ipv4Addr] {
        &self.ips
    }

    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    pub fn open(&self) -> &BTreeSet<SocketAddr> {
        &self.open
    }

    /// Connections accepted by the ledger's listeners (a scanner's probes and grabs).
    pub fn accepts(&self) -> u64 {
        self.accepts.load(Ordering::Relaxed)
    }

    /// The job's targets: the CIDR if any, else every address.
    pub fn targets(&self) -> Vec<String> {
        match self.cidr {
            Some((base, prefix)) => vec![format!("{base}/{prefix}")],
            None => self.ips.iter().map(|i| i.to_string()).collect(),
        }
    }

    /// Number of target addresses the job covers.
    pub fn target_count(&self) -> u64 {
        match self.cidr {
            Some((_, prefix)) => 1u64 << (32 - u32::from(prefix)),
            None => self.ips.len() as u64,
        }
    }

    /// `p1,p2,...` for a job spec.
    pub fn ports_arg(&self) -> String {
        self.ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Compares reports with the truth. Unexpected open reports are re-checked with a connect.
    pub async fn check(&self, reports: &[PortReport]) -> LedgerCheck {
        let mut counts: BTreeMap<SocketAddr, usize> = BTreeMap::new();
        for r in reports {
            *counts.entry(SocketAddr::new(r.ip, r.port)).or_default() += 1;
        }
        let mut out = LedgerCheck {
            expected_open: self.open.len(),
            reported: reports.len(),
            ..Default::default()
        };
        for addr in &self.open {
            if !counts.contains_key(addr) {
                out.missing.push(*addr);
            }
        }
        for (addr, n) in &counts {
            if *n > 1 {
                out.duplicated.push((*addr, *n));
            }
            if !self.open.contains(addr) {
                if Self::verify_extra(*addr).await {
                    out.foreign.push(*addr);
                } else {
                    out.false_open.push(*addr);
                }
            }
        }
        out
    }

    /// Whether something listens at `addr` right now (loopback only; anything else is refused).
    pub async fn verify_extra(addr: SocketAddr) -> bool {
        if !addr.ip().is_loopback() {
            return false;
        }
        matches!(
            tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(s)) if s.local_addr().map(|l| l != addr).unwrap_or(false)
        )
    }
}

/// A random /`prefix` inside 127.0.0.0/8 (never 127.0.0.0/16) and `count` distinct addresses in it.
pub fn loopback_cidr(rng: &mut Rng, prefix: u8, count: usize) -> ((Ipv4Addr, u8), Vec<Ipv4Addr>) {
    assert!((16..=30).contains(&prefix));
    let size = 1u32 << (32 - u32::from(prefix));
    let a = 1 + rng.below(254) as u32;
    let within16 = rng.below(u64::from((1u32 << 16) / size)) as u32 * size;
    let base = (127u32 << 24) | (a << 16) | within16;
    let mut set = BTreeSet::new();
    while set.len() < count.min(size as usize - 2) {
        let off = 1 + rng.below(u64::from(size - 2)) as u32;
        set.insert(Ipv4Addr::from(base + off));
    }
    ((Ipv4Addr::from(base), prefix), set.into_iter().collect())
}

/// `count` distinct addresses in 127.<a>.<b>.<c>, avoiding 127.0.0.1 (shared with every other test
/// on the machine) and network/broadcast-looking last octets.
pub fn loopback_ips(rng: &mut Rng, count: usize) -> Vec<Ipv4Addr> {
    let mut set = BTreeSet::new();
    let a = 100 + (rng.below(100) as u8);
    while set.len() < count {
        let b = rng.below(256) as u8;
        let c = 1 + rng.below(254) as u8;
        set.insert(Ipv4Addr::new(127, a, b, c));
    }
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dense_ledger_truth_and_check() {
        let mut rng = Rng::new(7);
        let ips = loopback_ips(&mut rng, 4);
        let spec = LedgerSpec {
            ips: ips.clone(),
            ports: 5,
            open_ratio: 0.4,
            banner: true,
            cidr: None,
        };
        let ledger = Ledger::dense(&spec, &mut rng).await.unwrap();
        assert_eq!(ledger.ports().len(), 5);
        assert!(!ledger.open().is_empty() && ledger.open().len() < 20);
        // The truth matches real connects.
        for ip in &ips {
            for &port in ledger.ports() {
                let addr = SocketAddr::new(IpAddr::V4(*ip), port);
                let really = tokio::net::TcpStream::connect(addr).await.is_ok();
                assert_eq!(really, ledger.open().contains(&addr), "{addr}");
            }
        }
        let mut reports: Vec<PortReport> = ledger
            .open()
            .iter()
            .map(|a| PortReport {
                ip: a.ip(),
                port: a.port(),
            })
            .collect();
        assert!(ledger.check(&reports).await.ok());
        if let Some(first) = reports.first().cloned() {
            reports.push(first);
            let c = ledger.check(&reports).await;
            assert_eq!(c.duplicated.len(), 1, "{c}");
            reports.pop();
            let dropped = reports.pop().unwrap();
            let c = ledger.check(&reports).await;
            assert_eq!(c.missing, vec![SocketAddr::new(dropped.ip, dropped.port)]);
        }
        // A closed cell reported open is a false positive.
        let closed = ips
            .iter()
            .flat_map(|ip| {
                ledger
                    .ports()
                    .iter()
                    .map(move |p| SocketAddr::new(IpAddr::V4(*ip), *p))
            })
            .find(|a| !ledger.open().contains(a));
        if let Some(c) = closed {
            let c = ledger
                .check(&[PortReport {
                    ip: c.ip(),
                    port: c.port(),
                }])
                .await;
            assert_eq!(c.false_open.len(), 1);
        }
    }
}
