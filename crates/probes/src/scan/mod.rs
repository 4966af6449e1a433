//! TCP connect port scan and generic banner grab (plain library, no cluster dependency).
//!
//! Both are bounded: the scan by a window of connects in flight, an adaptive per-probe timeout,
//! loss-driven re-send rounds ([`retry`]) and an optional rate limit (connections/s), run by the
//! sweep engine in [`connect`]; the grab by a byte cap and a total deadline.

pub mod connect;
pub mod retry;
pub mod syn;

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Port-scan options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScanOptions {
    /// Connections in flight at once.
    pub concurrency: usize,
    /// Per-connection timeout.
    pub timeout: Duration,
    /// Extra attempts after a timeout in [`probe_port`] (a refused connection is final). The
    /// sweep ([`scan_ports`]) re-sends by measured loss instead ([`retry`]).
    pub retries: u32,
    /// Connection attempts per second, 0 = unlimited.
    pub rate_limit: u32,
    /// Optional process-wide cap on connections in flight, shared by concurrent scans (keeps a
    /// busy minion under its file-descriptor and ephemeral-port limits).
    #[serde(skip)]
    pub limiter: Option<std::sync::Arc<connect::SharedLimit>>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            concurrency: 1024,
            timeout: Duration::from_millis(1000),
            retries: 1,
            rate_limit: 0,
            limiter: None,
        }
    }
}

/// Outcome of probing one port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortState {
    Open,
    Closed,
    /// No answer within the timeout (after retries).
    Filtered,
}

/// A loopback connect where source and destination are the same socket is TCP simultaneous-open
/// with itself, not a listening service.
fn is_self_connect(s: &TcpStream, dst: SocketAddr) -> bool {
    s.local_addr().map(|l| l == dst).unwrap_or(false)
}

/// Probes one port with a TCP connect.
pub async fn probe_port(ip: IpAddr, port: u16, opts: &ScanOptions) -> PortState {
    let dst = SocketAddr::new(ip, port);
    for _ in 0..=opts.retries {
        match tokio::time::timeout(opts.timeout, TcpStream::connect(dst)).await {
            Ok(Ok(s)) => {
                if is_self_connect(&s, dst) {
                    return PortState::Closed;
                }
                return PortState::Open;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return PortState::Closed;
            }
            // Out of local resources (ephemeral ports, fds): back off briefly and retry.
            Ok(Err(e)) if matches!(e.raw_os_error(), Some(99) | Some(24) | Some(23)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(_)) => return PortState::Closed,
            Err(_) => {}
        }
    }
    PortState::Filtered
}

/// Scans `ports` on `ip`; returns the open ports, ascending.
pub async fn scan_ports(ip: IpAddr, ports: &[u16], opts: &ScanOptions) -> Vec<u16> {
    let probes: Vec<connect::Probe> = ports.iter().map(|p| (ip, *p)).collect();
    match sweep(probes, opts).await {
        Ok((probes, rep)) => {
            let mut open: Vec<u16> = rep.open(&probes).map(|(_, p)| p).collect();
            open.sort_unstable();
            open
        }
        Err(e) => {
            tracing::warn!(error = %e, "port scan failed");
            Vec::new()
        }
    }
}

/// Runs the sweep engine on a blocking thread; gives the probes back beside the report.
pub async fn sweep(
    probes: Vec<connect::Probe>,
    opts: &ScanOptions,
) -> std::io::Result<(Vec<connect::Probe>, connect::SweepReport)> {
    let so = connect::SweepOptions {
        window: opts.concurrency.max(1),
        timeout_max: opts.timeout,
        timeout_min: connect::SweepOptions::default()
            .timeout_min
            .min(opts.timeout),
        rate_limit: opts.rate_limit,
        shared_limit: opts.limiter.clone(),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || {
        let rep = connect::sweep(&probes, &so)?;
        Ok((probes, rep))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Banner-grab options.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BannerOptions {
    pub connect_timeout: Duration,
    /// How long to wait for the service to speak first before sending the probe.
    pub wait_first: Duration,
    /// Total time budget for the grab (connect excluded).
    pub total: Duration,
    /// Max bytes kept.
    pub max_bytes: usize,
    /// Sent when the service is silent.
    pub probe: Vec<u8>,
}

impl Default for BannerOptions {
    fn default() -> Self {
        BannerOptions {
            connect_timeout: Duration::from_secs(2),
            wait_first: Duration::from_millis(1500),
            total: Duration::from_secs(4),
            max_bytes: 4096,
            probe: b"HEAD / HTTP/1.0\r\n\r\n".to_vec(),
        }
    }
}

/// What a service said.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Banner {
    pub bytes: Vec<u8>,
    /// Whether the generic probe had to be sent (the service was silent at first).
    pub probed: bool,
    /// The byte cap was hit (more data was available).
    pub truncated: bool,
}

impl Banner {
    /// Printable text form (lossy UTF-8, control chars escaped).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .chars()
            .flat_map(|c| {
                if c.is_control() && c != '\n' && c != '\r' && c != '\t' {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GrabError {
    #[error("connect to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("{0} is a self-connect, not a service")]
    SelfConnect(SocketAddr),
}

/// Reads until `deadline`, the cap, EOF, or `quiet` of silence after some data arrived.
async fn read_some(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    cap: usize,
    deadline: Instant,
    quiet: Duration,
) -> bool {
    let mut chunk = [0u8; 2048];
    loop {
        let now = Instant::now();
        if now >= deadline || buf.len() >= cap {
            return buf.len() >= cap;
        }
        let wait = if buf.is_empty() {
            deadline - now
        } else {
            (deadline - now).min(quiet)
        };
        match tokio::time::timeout(wait, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return false,
            Ok(Ok(n)) => {
                let take = n.min(cap - buf.len());
                buf.extend_from_slice(&chunk[..take]);
                if take < n {
                    return true;
                }
            }
        }
    }
}

/// Connects, reads what the service says first; if silent, sends the generic probe and reads the
/// reply. Bounded by `max_bytes` and `total`.
pub async fn grab_banner(addr: SocketAddr, opts: &BannerOptions) -> Result<Banner, GrabError> {
    let mut s = match tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(GrabError::Connect(addr, e)),
        Err(_) => return Err(GrabError::ConnectTimeout(addr)),
    };
    if is_self_connect(&s, addr) {
        return Err(GrabError::SelfConnect(addr));
    }
    let start = Instant::now();
    let end = start + opts.total;
    let quiet = Duration::from_millis(200);
    let mut buf = Vec::new();
    let first_deadline = (start + opts.wait_first).min(end);
    let mut truncated = read_some(&mut s, &mut buf, opts.max_bytes, first_deadline, quiet).await;
    let mut probed = false;
    if buf.is_empty() && !opts.probe.is_empty() && Instant::now() < end {
        probed = true;
        if s.write_all(&opts.probe).await.is_ok() {
            truncated = read_some(&mut s, &mut buf, opts.max_bytes, end, quiet).await;
        }
    }
    Ok(Banner {
        bytes: buf,
        probed,
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn finds_open_ports_only() {
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (p1, p2) = (
            l1.local_addr().unwrap().port(),
            l2.local_addr().unwrap().port(),
        );
        // A closed port: bind then drop.
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let open = scan_ports(ip, &[p1, closed, p2], &ScanOptions::default()).await;
        let mut want = vec![p1, p2];
        want.sort();
        assert_eq!(open, want);
    }

    #[tokio::test]
    async fn rate_limit_paces_attempts() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = Instant::now();
        let opts = ScanOptions {
            rate_limit: 50,
            ..Default::default()
        };
        scan_ports(ip, &[closed; 11], &opts).await;
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
    }

    #[tokio::test]
    async fn banner_speaks_first_silent_and_endless() {
        // Speaks first.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"SSH-2.0-Test\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let b = grab_banner(a, &BannerOptions::default()).await.unwrap();
        assert_eq!(b.bytes, b"SSH-2.0-Test\r\n");
        assert!(!b.probed);

        // Silent until probed.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).await.unwrap();
            assert!(buf[..n].starts_with(b"HEAD"));
            s.write_all(b"HTTP/1.0 200 OK\r\n\r\n").await.unwrap();
        });
        let opts = BannerOptions {
            wait_first: Duration::from_millis(100),
            ..Default::default()
        };
        let b = grab_banner(a, &opts).await.unwrap();
        assert!(b.probed);
        assert!(b.text().starts_with("HTTP/1.0 200"));

        // Endless: capped in bytes and time.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let junk = vec![b'A'; 65536];
            while s.write_all(&junk).await.is_ok() {}
        });
        let t = Instant::now();
        let b = grab_banner(a, &BannerOptions::default()).await.unwrap();
        assert_eq!(b.bytes.len(), 4096);
        assert!(b.truncated);
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}
