//! A TCP fault proxy the harness puts between each minion (or client) and the coordinator.
//!
//! gRPC runs over HTTP/2 over TCP, so faults are applied at the TCP level, without parsing frames:
//!
//! | fault | effect |
//! |---|---|
//! | [`LinkFault::Delay`] | every chunk is held for a fixed latency (a delay line: throughput is kept) |
//! | [`LinkFault::Blackhole`] | both directions stall: bytes are held, nothing is delivered, no FIN/RST; a partition |
//! | [`LinkFault::OneWayLoss`] | one direction stalls, the other flows (e.g. results arrive, acks never do) |
//! | [`LinkFault::Refuse`] | new connections are reset at once; established ones are untouched |
//! | [`FaultProxy::reset_all`] | every live connection gets an RST on both sides |
//! | [`FaultProxy::close_all`] | every live connection gets a FIN on both sides |
//!
//! Held bytes are delivered when the fault is lifted (like TCP retransmission after a partition heals),
//! unless a peer gave up and closed first. The upstream address can be changed at run time, so a
//! coordinator restarted on a new port is reached through the same proxy address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Direction of a byte flow through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the connecting side (minion/client) to the upstream (coordinator).
    ToUpstream,
    /// From the upstream (coordinator) back to the connecting side.
    ToDownstream,
}

/// The fault currently applied to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkFault {
    Pass,
    Delay(Duration),
    Blackhole,
    OneWayLoss(Direction),
    Refuse,
}

impl LinkFault {
    fn stalls(self, dir: Direction) -> bool {
        match self {
            LinkFault::Blackhole => true,
            LinkFault::OneWayLoss(d) => d == dir,
            _ => false,
        }
    }
    fn delay(self) -> Duration {
        match self {
            LinkFault::Delay(d) => d,
            _ => Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Close,
    Reset,
}

/// Counters of one proxy.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub cuts: AtomicU64,
}

struct Shared {
    upstream: Mutex<SocketAddr>,
    fault: watch::Sender<LinkFault>,
    cut: watch::Sender<(u64, Cut)>,
    stats: ProxyStats,
    conns: Mutex<JoinSet<()>>,
}

/// A running proxy; dropping it closes the listener and every connection through it.
pub struct FaultProxy {
    name: String,
    local: SocketAddr,
    shared: Arc<Shared>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and forwards to `upstream`.
    pub async fn start(name: impl Into<String>, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream),
            fault: watch::channel(LinkFault::Pass).0,
            cut: watch::channel((0, Cut::Close)).0,
            stats: ProxyStats::default(),
            conns: Mutex::new(JoinSet::new()),
        });
        let accept_shared = shared.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = accept_shared.clone();
                let mut conns = accept_shared.conns.lock().expect("proxy conns lock");
                while conns.try_join_next().is_some() {}
                conns.spawn(serve(client, s));
            }
        });
        Ok(Self {
            name: name.into(),
            local,
            shared,
            accept_task,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address peers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// `http://127.0.0.1:PORT`, for gRPC clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.local)
    }

    pub fn upstream(&self) -> SocketAddr {
        *self.shared.upstream.lock().expect("proxy upstream lock")
    }

    /// New connections go to `addr` (existing ones keep their upstream until cut).
    pub fn set_upstream(&self, addr: SocketAddr) {
        *self.shared.upstream.lock().expect("proxy upstream lock") = addr;
    }

    pub fn set_fault(&self, fault: LinkFault) {
        self.shared.fault.send_replace(fault);
    }

    pub fn fault(&self) -> LinkFault {
        *self.shared.fault.borrow()
    }

    /// Heals the link: [`LinkFault::Pass`].
    pub fn heal(&self) {
        self.set_fault(LinkFault::Pass);
    }

    /// RST every live connection, both sides.
    pub fn reset_all(&self) {
        self.cut(Cut::Reset);
    }

    /// FIN every live connection, both sides.
    pub fn close_all(&self) {
        self.cut(Cut::Close);
    }

    fn cut(&self, kind: Cut) {
        self.shared.stats.cuts.fetch_add(1, Ordering::Relaxed);
        self.shared.cut.send_modify(|(epoch, k)| {
            *epoch += 1;
            *k = kind;
        });
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    /// Live connections through the proxy.
    pub fn live_connections(&self) -> usize {
        let mut conns = self.shared.conns.lock().expect("proxy conns lock");
        while conns.try_join_next().is_some() {}
        conns.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        if let Ok(mut conns) = self.shared.conns.lock() {
            conns.abort_all();
        }
    }
}

fn set_rst_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let mut cut_rx = shared.cut.subscribe();
    cut_rx.borrow_and_update();
    if *shared.fault.borrow() == LinkFault::Refuse {
        shared.stats.refused.fetch_add(1, Ordering::Relaxed);
        set_rst_on_close(&client);
        return;
    }
    let upstream_addr = *shared.upstream.lock().expect("proxy upstream lock");
    let upstream =
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(upstream_addr)).await
        {
            Ok(Ok(s)) => s,
            _ => {
                shared
                    .stats
                    .upstream_failures
                    .fetch_add(1, Ordering::Relaxed);
                set_rst_on_close(&client);
                return;
            }
        };
    let _ = upstream.set_nodelay(true);
    shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let cut = {
        let up = pump(&mut cr, &mut uw, Direction::ToUpstream, &shared);
        let down = pump(&mut ur, &mut cw, Direction::ToDownstream, &shared);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => None,
            r = cut_rx.changed() => r.ok().map(|_| cut_rx.borrow().1),
        }
    };
    if cut == Some(Cut::Reset) {
        // Reunite first: dropping an owned write half sends a FIN, which would precede the RST.
        if let Ok(c) = cr.reunite(cw) {
            set_rst_on_close(&c);
        }
        if let Ok(u) = ur.reunite(uw) {
            set_rst_on_close(&u);
        }
    }
    // Dropping the sockets closes them (FIN, or RST with linger 0).
}

/// Copies one direction through a delay line, honouring stalls. Returns when the reader hits EOF
/// or either side errors.
async fn pump(
    read: &mut OwnedReadHalf,
    write: &mut OwnedWriteHalf,
    dir: Direction,
    shared: &Shared,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let mut fault_rx = shared.fault.subscribe();
    let reader = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let due = Instant::now() + shared.fault.borrow().delay();
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
        drop(tx);
    };
    let writer = async {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            // Hold the bytes while this direction is stalled.
            loop {
                let f = *fault_rx.borrow_and_update();
                if !f.stalls(dir) {
                    break;
                }
                if fault_rx.changed().await.is_err() {
                    return;
                }
            }
            if write.write_all(&chunk).await.is_err() {
                return;
            }
            let counter = match dir {
                Direction::ToUpstream => &shared.stats.bytes_up,
                Direction::ToDownstream => &shared.stats.bytes_down,
            };
            counter.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        let _ = write.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        s.write_all(msg).await.ok()?;
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(timeout, s.read_exact(&mut got))
            .await
            .ok()?
            .ok()?;
        Some(got)
    }

    #[tokio::test]
    async fn pass_delay_blackhole_oneway_reset_refuse_upstream_switch() {
        let echo = echo_server().await;
        let proxy = FaultProxy::start("t", echo).await.unwrap();
        let mut s = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut s, b"hello", Duration::from_secs(2))
                .await
                .unwrap(),
            b"hello"
        );

        proxy.set_fault(LinkFault::Delay(Duration::from_millis(200)));
        let t = std::time::Instant::now();
        assert!(
            roundtrip(&mut s, b"slow", Duration::from_secs(3))
                .await
                .is_some()
        );
        assert!(
            t.elapsed() >= Duration::from_millis(400),
            "two hops of 200 ms: {:?}",
            t.elapsed()
        );

        proxy.set_fault(LinkFault::Blackhole);
        assert!(
            roundtrip(&mut s, b"lost?", Duration::from_millis(300))
                .await
                .is_none()
        );
        proxy.heal();
        // Held bytes are delivered once healed.
        let mut got = [0u8; 5];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"lost?");

        proxy.set_fault(LinkFault::OneWayLoss(Direction::ToDownstream));
        assert!(
            roundtrip(&mut s, b"oneway", Duration::from_millis(300))
                .await
                .is_none()
        );
        assert!(proxy.stats().bytes_up.load(Ordering::Relaxed) >= 5 + 4 + 5 + 6);
        proxy.heal();
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();

        proxy.reset_all();
        let mut b = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut b))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "expected RST, got {r:?}"
        );

        proxy.set_fault(LinkFault::Refuse);
        let mut s2 = TcpStream::connect(proxy.local_addr()).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(2), s2.read(&mut b))
            .await
            .unwrap();
        assert!(
            matches!(r, Err(_) | Ok(0)),
            "refused connection must end: {r:?}"
        );
        assert_eq!(proxy.stats().refused.load(Ordering::Relaxed), 1);

        proxy.heal();
        let echo2 = echo_server().await;
        proxy.set_upstream(echo2);
        let mut s3 = TcpStream::connect(proxy.local_addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut s3, b"again", Duration::from_secs(2))
                .await
                .unwrap(),
            b"again"
        );
        proxy.close_all();
        let r = tokio::time::timeout(Duration::from_secs(2), s3.read(&mut b))
            .await
            .unwrap();
        assert!(matches!(r, Ok(0)), "expected FIN, got {r:?}");
    }
}
