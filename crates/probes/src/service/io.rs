//! Connections and bounded reads: every read has a deadline and a byte cap.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};

/// Any byte stream we probe over (plain TCP or a TLS tunnel).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DialError {
    #[error("connection refused")]
    Refused,
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("self-connect on loopback (no listener)")]
    SelfConnect,
    #[error("connect failed: {0}")]
    Io(String),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
}

/// Opens a TCP connection with a timeout; refuses loopback self-connects.
pub async fn connect_tcp(addr: SocketAddr, limit: Duration) -> Result<TcpStream, DialError> {
    let s = match timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => return Err(DialError::Timeout(limit)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(DialError::Refused);
        }
        Ok(Err(e)) => return Err(DialError::Io(e.to_string())),
        Ok(Ok(s)) => s,
    };
    if s.local_addr().ok() == Some(addr) {
        return Err(DialError::SelfConnect);
    }
    let _ = s.set_nodelay(true);
    Ok(s)
}

/// What a bounded read produced.
#[derive(Debug, Default, Clone)]
pub struct Response {
    pub data: Vec<u8>,
    /// The peer closed the connection.
    pub closed: bool,
    /// The byte cap was reached (the peer kept sending).
    pub capped: bool,
    /// The read deadline hit while the peer was still sending (a drip).
    pub deadline_hit: bool,
    /// Time from the read start to the first byte.
    pub first_byte: Option<Duration>,
    pub error: Option<String>,
}

/// Timing plan for one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadPlan {
    /// Give up if no byte has arrived by then.
    pub first_byte_by: Instant,
    /// Hard end of the read.
    pub deadline: Instant,
    /// Quiet gap after which the data so far is matched.
    pub idle: Duration,
    /// Longer quiet gap to wait for more data when the data so far did not match.
    pub patience: Duration,
    pub cap: usize,
}

/// Reads until the matcher accepts the data, the peer goes quiet, closes, exceeds the cap, or the
/// deadline. `matcher` is called on every quiet gap with the data so far; `true` stops reading.
pub async fn read_response<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    plan: ReadPlan,
    mut matcher: impl FnMut(&[u8]) -> bool,
) -> Response {
    let start = Instant::now();
    let mut r = Response::default();
    let mut buf = vec![0u8; 8192];
    let mut last_data = start;
    let mut matched_len = 0usize;
    // Times data resumed after a quiet gap had already been matched (a drip does this again and
    // again; a burst followed by silence never).
    let mut resumed = 0u32;
    loop {
        let until = if r.data.is_empty() {
            plan.first_byte_by
        } else if r.data.len() != matched_len {
            last_data + plan.idle
        } else {
            last_data + plan.patience
        };
        let until = until.min(plan.deadline);
        match timeout_at(until, s.read(&mut buf)).await {
            Ok(Ok(0)) => {
                r.closed = true;
                break;
            }
            Ok(Ok(n)) => {
                let now = Instant::now();
                if !r.data.is_empty() && r.data.len() == matched_len {
                    resumed += 1;
                }
                r.first_byte.get_or_insert(now - start);
                last_data = now;
                let room = plan.cap - r.data.len();
                r.data.extend_from_slice(&buf[..n.min(room)]);
                if n >= room {
                    r.capped = true;
                    break;
                }
            }
            Ok(Err(e)) => {
                r.error = Some(e.to_string());
                r.closed = matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                );
                break;
            }
            Err(_) => {
                let now = Instant::now();
                if r.data.is_empty() {
                    break;
                }
                if now >= plan.deadline {
                    // Still sending if bytes came within the patience window before the deadline.
                    r.deadline_hit = resumed >= 2 && now - last_data < plan.patience;
                    break;
                }
                if r.data.len() != matched_len {
                    matched_len = r.data.len();
                    if matcher(&r.data) {
                        break;
                    }
                    continue;
                }
                break;
            }
        }
    }
    r
}

/// Shared record of a [`Recording`] stream's traffic.
#[derive(Debug, Default)]
pub struct Rec {
    pub read: usize,
    pub written: usize,
    pub first_read: Vec<u8>,
    pub first_written: Vec<u8>,
    pub capped: bool,
}

/// A stream wrapper that counts bytes, keeps the first bytes each way and fails reads past a cap
/// (bounds TLS handshakes with absurd certificate chains).
pub struct Recording<S> {
    inner: S,
    cap: usize,
    pub rec: Arc<Mutex<Rec>>,
}

impl<S> Recording<S> {
    pub fn new(inner: S, cap: usize) -> Self {
        Recording {
            inner,
            cap,
            rec: Arc::default(),
        }
    }
}

const KEEP: usize = 16;

impl<S: AsyncRead + Unpin> AsyncRead for Recording<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        {
            let rec = this.rec.lock().unwrap_or_else(|e| e.into_inner());
            if rec.read >= this.cap {
                drop(rec);
                this.rec.lock().unwrap_or_else(|e| e.into_inner()).capped = true;
                return Poll::Ready(Err(io::Error::other(format!(
                    "peer sent more than {} bytes",
                    this.cap
                ))));
            }
        }
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let got = &buf.filled()[before..];
            let mut rec = this.rec.lock().unwrap_or_else(|e| e.into_inner());
            let need = KEEP.saturating_sub(rec.first_read.len());
            rec.first_read
                .extend_from_slice(&got[..got.len().min(need)]);
            rec.read += got.len();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recording<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &res {
            let mut rec = this.rec.lock().unwrap_or_else(|e| e.into_inner());
            let need = KEEP.saturating_sub(rec.first_written.len());
            rec.first_written.extend_from_slice(&data[..(*n).min(need)]);
            rec.written += n;
        }
        res
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Renders bytes the way nmap prints fingerprints: printable ASCII kept, the rest `\xHH`.
pub fn escape_bytes(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s
}
