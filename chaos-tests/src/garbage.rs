//! A hostile peer: raw garbage on the TCP port, and malformed protobuf inside well-formed gRPC calls
//! (HTTP/2 via `h2`, so no generated types are needed and any bytes can be sent).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a peer did with raw garbage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawOutcome {
    /// Bytes the server sent back before closing (an HTTP/2 GOAWAY, for instance).
    pub reply_len: usize,
    /// The server closed the connection (FIN or RST) before the timeout.
    pub closed: bool,
}

/// Writes `garbage` to `addr` and reads until the server closes or `timeout`.
pub async fn send_raw(
    addr: SocketAddr,
    garbage: &[u8],
    timeout: Duration,
) -> std::io::Result<RawOutcome> {
    let mut s = TcpStream::connect(addr).await?;
    // The server may close while we are still writing; that is an answer too.
    let _ = s.write_all(garbage).await;
    let mut buf = vec![0u8; 4096];
    let mut reply_len = 0;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => {
                return Ok(RawOutcome {
                    reply_len,
                    closed: false,
                });
            }
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Ok(RawOutcome {
                    reply_len,
                    closed: true,
                });
            }
            Ok(Ok(n)) => reply_len += n,
        }
    }
}

/// A gRPC length-prefixed message (uncompressed).
pub fn grpc_frame(payload: &[u8]) -> Bytes {
    grpc_frame_declared(payload, payload.len() as u32)
}

/// A gRPC message whose 5-byte prefix declares `declared_len` (which may lie).
pub fn grpc_frame_declared(payload: &[u8], declared_len: u32) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(declared_len);
    b.put_slice(payload);
    b.freeze()
}

/// Payloads that are not valid protobuf for any message with fields 1..15.
pub fn malformed_protobufs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        // A varint that never ends (11 continuation bytes).
        (
            "endless varint",
            vec![
                0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
            ],
        ),
        // Field 1, length-delimited, declares 127 bytes, carries 3.
        ("truncated length-delimited", vec![0x0A, 0x7F, 1, 2, 3]),
        // Wire type 7 does not exist.
        ("invalid wire type", vec![0x0F, 0x01]),
        // Field number 0 is illegal.
        ("field number zero", vec![0x00, 0x01]),
        // Deprecated group start without end.
        ("unterminated group", vec![0x0B, 0x08, 0x01]),
    ]
}

/// The reply to a raw gRPC call.
#[derive(Debug, Clone, Default)]
pub struct RawGrpcReply {
    pub http_status: u16,
    /// `grpc-status` from trailers (or headers, for trailers-only replies).
    pub grpc_status: Option<i32>,
    pub grpc_message: Option<String>,
    pub data_len: usize,
}

/// Errors of a raw gRPC call.
#[derive(Debug, thiserror::Error)]
pub enum RawGrpcError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("http/2: {0}")]
    H2(#[from] h2::Error),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("bad request: {0}")]
    Http(#[from] http::Error),
}

/// POSTs `body` (already gRPC-framed, possibly garbage) to `path` (e.g.
/// `/overlord.v1.MinionService/Session`) and returns the status the server answers with.
pub async fn grpc_call_raw(
    addr: SocketAddr,
    path: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<RawGrpcReply, RawGrpcError> {
    let fut = async {
        let tcp = TcpStream::connect(addr).await?;
        let (client, conn) = h2::client::handshake(tcp).await?;
        let conn_task = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut client = client.ready().await?;
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())?;
        let (resp, mut send) = client.send_request(req, false)?;
        // Send in pieces so large bodies respect flow control.
        let mut rest = body;
        while !rest.is_empty() {
            send.reserve_capacity(rest.len().min(64 * 1024));
            let cap = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(c)) => c,
                _ => break,
            };
            let chunk = rest.split_to(cap.min(rest.len()));
            if send.send_data(chunk, false).is_err() {
                break;
            }
        }
        let _ = send.send_data(Bytes::new(), true);
        let resp = resp.await?;
        let mut reply = RawGrpcReply {
            http_status: resp.status().as_u16(),
            ..Default::default()
        };
        let read_status = |h: &http::HeaderMap, r: &mut RawGrpcReply| {
            if let Some(s) = h
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
            {
                r.grpc_status = Some(s);
            }
            if let Some(m) = h.get("grpc-message").and_then(|v| v.to_str().ok()) {
                r.grpc_message = Some(m.to_string());
            }
        };
        read_status(resp.headers(), &mut reply);
        let mut body = resp.into_body();
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(c) => {
                    reply.data_len += c.len();
                    let _ = body.flow_control().release_capacity(c.len());
                }
                Err(_) => break,
            }
        }
        if let Ok(Some(trailers)) = body.trailers().await {
            read_status(&trailers, &mut reply);
        }
        conn_task.abort();
        Ok(reply)
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| RawGrpcError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing() {
        let f = grpc_frame(b"abc");
        assert_eq!(&f[..], &[0, 0, 0, 0, 3, b'a', b'b', b'c']);
        let f = grpc_frame_declared(b"", u32::MAX);
        assert_eq!(&f[..], &[0, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert_eq!(malformed_protobufs().len(), 5);
    }

    #[tokio::test]
    async fn raw_garbage_to_a_closing_server() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 16];
            let _ = s.read(&mut b).await;
            let _ = s.write_all(b"no").await;
        });
        let out = send_raw(addr, b"\x00\x01garbage", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            out,
            RawOutcome {
                reply_len: 2,
                closed: true
            }
        );
    }
}
