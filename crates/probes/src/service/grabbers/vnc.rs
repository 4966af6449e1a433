//! VNC / RFB: protocol version, security types, whether authentication is required, and the
//! desktop name and size when it is open. Only the `None` security type is ever selected.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, read_until};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::VncGrab;

const CAP: usize = 64 * 1024;

pub fn security_name(t: u8) -> &'static str {
    match t {
        0 => "Invalid",
        1 => "None",
        2 => "VNC Authentication",
        5 => "RA2",
        6 => "RA2ne",
        16 => "Tight",
        17 => "Ultra",
        18 => "TLS",
        19 => "VeNCrypt",
        20 => "SASL",
        21 => "MD5 hash",
        22 => "xvp",
        30 => "Apple Remote Desktop",
        113 => "MSLogonII",
        129 => "Unix Login",
        _ => "unknown",
    }
}

pub async fn grab(d: &Dialer, wait: Duration) -> Result<VncGrab, GrabError> {
    let mut s = d.dial().await?;
    let deadline = Instant::now() + wait * 2;
    let mut buf = Vec::new();
    read_until(&mut *s, &mut buf, deadline, CAP, "RFB version", |b| {
        (b.len() >= 12).then_some(12)
    })
    .await?;
    let (major, minor) = parse_version(&buf[..12])?;
    let mut g = VncGrab {
        server_version: String::from_utf8_lossy(&buf[..11]).into_owned(),
        ..Default::default()
    };
    buf.drain(..12);
    let minor = if major > 3 { 8 } else { minor.min(8) };
    let minor = if minor < 7 { 3 } else { minor };
    let ours = format!("RFB 003.{minor:03}\n");
    g.negotiated = ours.trim().to_string();
    s.write_all(ours.as_bytes()).await?;
    if minor == 3 {
        read_until(&mut *s, &mut buf, deadline, CAP, "security type", |b| {
            (b.len() >= 4).then_some(4)
        })
        .await?;
        let t = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        buf.drain(..4);
        if t == 0 {
            g.failure_reason = Some(read_reason(&mut s, &mut buf, deadline).await?);
            return Ok(finish(g));
        }
        g.security_types = vec![t.min(255) as u8];
    } else {
        read_until(&mut *s, &mut buf, deadline, CAP, "security types", |b| {
            let n = *b.first()? as usize;
            (b.len() > n).then_some(1 + n)
        })
        .await?;
        let n = buf[0] as usize;
        g.security_types = buf[1..1 + n].to_vec();
        buf.drain(..1 + n);
        if n == 0 {
            g.failure_reason = Some(read_reason(&mut s, &mut buf, deadline).await?);
            return Ok(finish(g));
        }
    }
    g.auth_required = !g.security_types.contains(&1);
    if g.auth_required {
        return Ok(finish(g));
    }
    if minor >= 7 {
        s.write_all(&[1]).await?;
    }
    if minor >= 8 {
        read_until(&mut *s, &mut buf, deadline, CAP, "security result", |b| {
            (b.len() >= 4).then_some(4)
        })
        .await?;
        let r = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        buf.drain(..4);
        if r != 0 {
            g.failure_reason = read_reason(&mut s, &mut buf, deadline).await.ok();
            return Ok(finish(g));
        }
    }
    // ClientInit: shared session, so we never disconnect other viewers.
    s.write_all(&[1]).await?;
    let n = read_until(
        &mut *s,
        &mut buf,
        deadline,
        CAP,
        "ServerInit",
        server_init_len,
    )
    .await?;
    let (w, h, name) = parse_server_init(&buf[..n])?;
    g.width = Some(w);
    g.height = Some(h);
    g.desktop_name = Some(name);
    g.open = true;
    Ok(finish(g))
}

fn finish(mut g: VncGrab) -> VncGrab {
    g.security_names = g
        .security_types
        .iter()
        .map(|&t| security_name(t).to_string())
        .collect();
    g.product_guess = guess_product(&g);
    g
}

/// x11vnc names the desktop after the X display it exports (`host:0`, `127.0.0.1:24`);
/// TigerVNC's Xvnc uses `user@host` (older: `x11`) by default and `host:N (user)` when started
/// by `vncserver`.
/// A guess, stated as such in the field name.
fn guess_product(g: &VncGrab) -> Option<String> {
    let name = g.desktop_name.as_deref()?;
    let display_like = |s: &str| {
        s.rsplit_once(':').is_some_and(|(h, d)| {
            h.chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
                && !d.is_empty()
                && d.chars().all(|c| c.is_ascii_digit() || c == '.')
        })
    };
    let user_at_host = name.split_once('@').is_some_and(|(u, h)| {
        !u.is_empty()
            && !h.is_empty()
            && u.chars()
                .chain(h.chars())
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
    });
    if name == "x11"
        || user_at_host
        || (name.ends_with(')') && name.split_once(" (").is_some_and(|(h, _)| display_like(h)))
    {
        Some("TigerVNC".into())
    } else if display_like(name) {
        Some("x11vnc".into())
    } else {
        None
    }
}

/// Parses `RFB xxx.yyy\n`.
pub fn parse_version(b: &[u8]) -> Result<(u32, u32), GrabError> {
    let bad = || {
        GrabError::Protocol(format!(
            "not an RFB greeting: {}",
            crate::service::io::escape_bytes(b)
        ))
    };
    if b.len() < 12 || !b.starts_with(b"RFB ") || b[7] != b'.' || b[11] != b'\n' {
        return Err(bad());
    }
    let num = |r: &[u8]| std::str::from_utf8(r).ok()?.parse::<u32>().ok();
    Ok((
        num(&b[4..7]).ok_or_else(bad)?,
        num(&b[8..11]).ok_or_else(bad)?,
    ))
}

fn server_init_len(b: &[u8]) -> Option<usize> {
    if b.len() < 24 {
        return None;
    }
    let n = u32::from_be_bytes([b[20], b[21], b[22], b[23]]) as usize;
    let n = n.min(4096);
    (b.len() >= 24 + n).then_some(24 + n)
}

/// (width, height, desktop name) from a ServerInit message.
pub fn parse_server_init(b: &[u8]) -> Result<(u16, u16, String), GrabError> {
    if b.len() < 24 {
        return Err(GrabError::Protocol("short ServerInit".into()));
    }
    let w = u16::from_be_bytes([b[0], b[1]]);
    let h = u16::from_be_bytes([b[2], b[3]]);
    let n = (u32::from_be_bytes([b[20], b[21], b[22], b[23]]) as usize).min(4096);
    let name = b
        .get(24..24 + n)
        .ok_or_else(|| GrabError::Protocol("short desktop name".into()))?;
    Ok((w, h, String::from_utf8_lossy(name).into_owned()))
}

async fn read_reason(
    s: &mut crate::service::io::BoxStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<String, GrabError> {
    let n = read_until(&mut **s, buf, deadline, CAP, "failure reason", |b| {
        if b.len() < 4 {
            return None;
        }
        let n = (u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).min(4096);
        (b.len() >= 4 + n).then_some(4 + n)
    })
    .await?;
    Ok(String::from_utf8_lossy(&buf[4..n]).into_owned())
}
