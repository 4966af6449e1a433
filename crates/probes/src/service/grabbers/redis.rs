//! Redis: `INFO` without credentials.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, line_end, read_until};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::RedisGrab;

const CAP: usize = 256 * 1024;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<RedisGrab, GrabError> {
    let mut s = d.dial().await?;
    s.write_all(b"*1\r\n$4\r\nINFO\r\n").await?;
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let n = read_until(&mut *s, &mut buf, deadline, CAP, "INFO reply", complete).await?;
    parse(&buf[..n])
}

/// Length of a complete RESP reply (simple error/status or bulk string).
pub fn complete(b: &[u8]) -> Option<usize> {
    let first = line_end(b)?;
    match b.first()? {
        b'$' => {
            let len: i64 = std::str::from_utf8(&b[1..first])
                .ok()?
                .trim()
                .parse()
                .ok()?;
            if len < 0 {
                return Some(first);
            }
            let end = first + len as usize + 2;
            (b.len() >= end).then_some(end)
        }
        _ => Some(first),
    }
}

/// Parses an INFO reply or its refusal.
pub fn parse(b: &[u8]) -> Result<RedisGrab, GrabError> {
    let text = String::from_utf8_lossy(b);
    let mut g = RedisGrab::default();
    match b.first() {
        Some(b'-') => {
            let line = text
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches('-')
                .to_string();
            g.auth_required =
                line.starts_with("NOAUTH") || line.contains("Authentication required");
            g.protected_mode = line.starts_with("DENIED");
            g.error = Some(line);
            Ok(g)
        }
        Some(b'$') => {
            for l in text.lines() {
                if let Some((k, v)) = l.split_once(':') {
                    let v = Some(v.trim().to_string());
                    match k {
                        "redis_version" => g.version = v,
                        "redis_mode" => g.mode = v,
                        "os" => g.os = v,
                        "role" => g.role = v,
                        _ => {}
                    }
                }
            }
            if g.version.is_none() {
                return Err(GrabError::Protocol(
                    "INFO reply without redis_version".into(),
                ));
            }
            Ok(g)
        }
        _ => Err(GrabError::Protocol(format!(
            "not a RESP reply: {}",
            crate::service::io::escape_bytes(&b[..b.len().min(40)])
        ))),
    }
}
