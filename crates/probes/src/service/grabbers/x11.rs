//! X11: connection setup without authorization; open or not, vendor, release, screen size.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, read_until};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::X11Grab;

/// Little-endian setup request, protocol 11.0, no authorization.
pub const SETUP: &[u8] = b"l\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00";
const CAP: usize = 1024 * 1024;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<X11Grab, GrabError> {
    let deadline = Instant::now() + wait * 2;
    // An X server resets when its last client leaves and drops connections meanwhile:
    // a connection closed before any byte is retried a few times.
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut s = d.dial().await?;
        s.write_all(SETUP).await?;
        let mut buf = Vec::new();
        match read_until(
            &mut *s,
            &mut buf,
            deadline,
            CAP,
            "X11 setup reply",
            reply_len,
        )
        .await
        {
            Ok(n) => return parse(&buf[..n]),
            Err(GrabError::Protocol(_)) if buf.is_empty() && attempt < 4 => {
                tokio::time::sleep(Duration::from_millis(30 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn reply_len(b: &[u8]) -> Option<usize> {
    if b.len() < 8 {
        return None;
    }
    let extra = u16::from_le_bytes([b[6], b[7]]) as usize * 4;
    let total = 8 + extra;
    (b.len() >= total).then_some(total)
}

/// Parses a (little-endian) X11 connection setup reply.
pub fn parse(b: &[u8]) -> Result<X11Grab, GrabError> {
    let bad = |m: &str| GrabError::Protocol(format!("X11 setup reply: {m}"));
    if b.len() < 8 || b[0] > 2 {
        return Err(bad("bad header"));
    }
    let u16le = |o: usize| b.get(o..o + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let major = u16le(2).ok_or_else(|| bad("short"))?;
    let minor = u16le(4).ok_or_else(|| bad("short"))?;
    if major != 11 {
        return Err(bad("protocol major is not 11"));
    }
    let mut g = X11Grab {
        protocol: format!("{major}.{minor}"),
        ..Default::default()
    };
    match b[0] {
        0 => {
            g.result = "failed".into();
            let n = b[1] as usize;
            g.reason = b
                .get(8..8 + n)
                .map(|r| String::from_utf8_lossy(r).trim().to_string());
        }
        2 => {
            g.result = "authenticate".into();
            g.reason = b.get(8..).map(|r| {
                String::from_utf8_lossy(r)
                    .trim_end_matches('\0')
                    .trim()
                    .to_string()
            });
        }
        _ => {
            g.result = "success".into();
            g.open = true;
            let release = b
                .get(8..12)
                .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]));
            g.release = release;
            g.version = release.map(decode_release);
            let vlen = u16le(24).ok_or_else(|| bad("short"))? as usize;
            g.screens = *b.get(28).ok_or_else(|| bad("short"))?;
            let nformats = *b.get(29).ok_or_else(|| bad("short"))? as usize;
            g.vendor = b
                .get(40..40 + vlen)
                .map(|v| String::from_utf8_lossy(v).into_owned());
            let screen = 40 + vlen.div_ceil(4) * 4 + 8 * nformats;
            if g.screens > 0 {
                g.width = u16le(screen + 20);
                g.height = u16le(screen + 22);
                g.depth = b.get(screen + 38).copied();
            }
        }
    }
    Ok(g)
}

fn decode_release(r: u32) -> String {
    let (maj, min, patch, snap) = (
        r / 10_000_000,
        (r / 100_000) % 100,
        (r / 1000) % 100,
        r % 1000,
    );
    if maj == 1 && min >= 21 {
        format!("{min}.{patch}.{snap}")
    } else {
        format!("{maj}.{min}.{patch}")
    }
}
