//! Connection limits below gRPC: a connection must deliver its first [`PREFACE_BYTES`] (the
//! HTTP/2 client preface; with TLS, the handshake's first bytes) within the handshake timeout,
//! and afterwards may not stay silent longer than the idle timeout (the server pings every
//! connection every 10 s and a live client answers, so only dead or hostile peers go silent).
//! tonic's TLS handshake has its own timeout on top (`ServerTlsConfig::timeout`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
pub const PREFACE_BYTES: u64 = 24;

#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    pub handshake: Duration,
    pub idle: Duration,
}

/// A TCP connection with a handshake deadline and a read-idle deadline.
pub struct Guarded {
    inner: TcpStream,
    limits: ConnLimits,
    read: u64,
    deadline: Pin<Box<Sleep>>,
    last_reset: Instant,
}

impl Guarded {
    pub fn new(inner: TcpStream, limits: ConnLimits) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            limits,
            read: 0,
            deadline: Box::pin(tokio::time::sleep_until(now + limits.handshake)),
            last_reset: now,
        }
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    self.read += n;
                    // Past the preface: the idle deadline, moved at most once a second.
                    let now = Instant::now();
                    let crossed = self.read - n < PREFACE_BYTES;
                    if self.read >= PREFACE_BYTES
                        && (crossed
                            || now.duration_since(self.last_reset) >= Duration::from_secs(1))
                    {
                        self.last_reset = now;
                        let idle = self.limits.idle;
                        self.deadline.as_mut().reset(now + idle);
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    if self.read < PREFACE_BYTES {
                        "connection did not complete its handshake in time"
                    } else {
                        "connection idle too long"
                    },
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Accepted connections of `listener`, each guarded; accept errors (e.g. out of file
/// descriptors) are logged and retried after a short pause instead of ending the server.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = Result<Guarded, io::Error>> + Send + 'static {
    async_stream(listener, limits)
}

fn async_stream(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = Result<Guarded, io::Error>> + Send + 'static {
    futures::stream::unfold(listener, move |l| async move {
        loop {
            match l.accept().await {
                Ok((s, _)) => {
                    let _ = s.set_nodelay(true);
                    return Some((Ok(Guarded::new(s, limits)), l));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}
