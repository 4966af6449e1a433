//! A bounded reader/writer over any async stream: every read is limited by the idle timeout,
//! the overall deadline and the byte budget.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::screen::ScreenError;

pub(crate) struct Conn<S> {
    inner: BufReader<S>,
    pub(crate) phase: &'static str,
    pub(crate) bytes_read: u64,
    max_bytes: u64,
    io_timeout: Duration,
    deadline: Instant,
    total_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(
        stream: S,
        max_bytes: u64,
        io_timeout: Duration,
        deadline: Instant,
        total_timeout: Duration,
    ) -> Self {
        Self {
            inner: BufReader::with_capacity(64 * 1024, stream),
            phase: "handshake",
            bytes_read: 0,
            max_bytes,
            io_timeout,
            deadline,
            total_timeout,
        }
    }

    fn timeout_for_next(&self) -> Result<(Duration, bool), ScreenError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(self.timeout_error(true));
        }
        Ok(if left < self.io_timeout {
            (left, true)
        } else {
            (self.io_timeout, false)
        })
    }

    fn timeout_error(&self, total: bool) -> ScreenError {
        ScreenError::Timeout {
            phase: self.phase,
            limit: if total {
                self.total_timeout
            } else {
                self.io_timeout
            },
            bytes_read: self.bytes_read,
        }
    }

    /// Fills `buf` completely or fails with a phase-tagged error.
    pub(crate) async fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ScreenError> {
        let want = buf.len() as u64;
        if self.bytes_read + want > self.max_bytes {
            return Err(ScreenError::Limit {
                what: "bytes read from server",
                value: self.bytes_read + want,
                limit: self.max_bytes,
            });
        }
        let mut filled = 0;
        while filled < buf.len() {
            let (t, total) = self.timeout_for_next()?;
            let n = match tokio::time::timeout(t, self.inner.read(&mut buf[filled..])).await {
                Err(_) => return Err(self.timeout_error(total)),
                Ok(Err(e)) => {
                    return Err(ScreenError::Io {
                        phase: self.phase,
                        source: e,
                    });
                }
                Ok(Ok(0)) => {
                    return Err(ScreenError::Closed {
                        phase: self.phase,
                        bytes_read: self.bytes_read,
                    });
                }
                Ok(Ok(n)) => n,
            };
            filled += n;
            self.bytes_read += n as u64;
        }
        Ok(())
    }

    pub(crate) async fn read_array<const N: usize>(&mut self) -> Result<[u8; N], ScreenError> {
        let mut b = [0u8; N];
        self.read_exact(&mut b).await?;
        Ok(b)
    }

    pub(crate) async fn u8(&mut self) -> Result<u8, ScreenError> {
        Ok(self.read_array::<1>().await?[0])
    }

    pub(crate) async fn u16(&mut self) -> Result<u16, ScreenError> {
        Ok(u16::from_be_bytes(self.read_array().await?))
    }

    pub(crate) async fn u32(&mut self) -> Result<u32, ScreenError> {
        Ok(u32::from_be_bytes(self.read_array().await?))
    }

    /// Reads `len` bytes into a fresh vector (after checking the byte budget).
    pub(crate) async fn read_vec(&mut self, len: usize) -> Result<Vec<u8>, ScreenError> {
        let mut v = Vec::new();
        self.read_into(&mut v, len).await?;
        Ok(v)
    }

    /// Replaces the content of `v` with the next `len` bytes.
    pub(crate) async fn read_into(
        &mut self,
        v: &mut Vec<u8>,
        len: usize,
    ) -> Result<(), ScreenError> {
        if self.bytes_read + len as u64 > self.max_bytes {
            return Err(ScreenError::Limit {
                what: "bytes read from server",
                value: self.bytes_read + len as u64,
                limit: self.max_bytes,
            });
        }
        v.clear();
        v.resize(len, 0);
        self.read_exact(v).await
    }

    /// Reads and drops `len` bytes in bounded chunks.
    pub(crate) async fn skip(&mut self, mut len: u64) -> Result<(), ScreenError> {
        let mut chunk = [0u8; 4096];
        while len > 0 {
            let n = len.min(chunk.len() as u64) as usize;
            self.read_exact(&mut chunk[..n]).await?;
            len -= n as u64;
        }
        Ok(())
    }

    pub(crate) async fn write_all(&mut self, data: &[u8]) -> Result<(), ScreenError> {
        let (t, total) = self.timeout_for_next()?;
        let stream = self.inner.get_mut();
        let fut = async {
            stream.write_all(data).await?;
            stream.flush().await
        };
        match tokio::time::timeout(t, fut).await {
            Err(_) => Err(self.timeout_error(total)),
            Ok(Err(e)) => Err(ScreenError::Io {
                phase: self.phase,
                source: e,
            }),
            Ok(Ok(())) => Ok(()),
        }
    }
}
