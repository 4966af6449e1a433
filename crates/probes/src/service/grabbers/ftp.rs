//! FTP: banner, and whether anonymous login is allowed (the public `anonymous` convention only).

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, parse_reply, read_until, reply_end};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::FtpGrab;

const CAP: usize = 16 * 1024;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<FtpGrab, GrabError> {
    let mut s = d.dial().await?;
    let deadline = Instant::now() + wait * 2;
    let mut buf = Vec::new();
    let n = read_until(&mut *s, &mut buf, deadline, CAP, "FTP banner", reply_end).await?;
    let (code, banner) = parse_reply(&buf[..n]);
    buf.drain(..n);
    if !(100..600).contains(&code) {
        return Err(GrabError::Protocol("no FTP reply code".into()));
    }
    let mut g = FtpGrab {
        banner_code: code,
        banner,
        ..Default::default()
    };
    if code != 220 {
        return Ok(g);
    }
    let cmd = async |s: &mut crate::service::io::BoxStream, buf: &mut Vec<u8>, line: &str| {
        s.write_all(line.as_bytes()).await?;
        let n = read_until(&mut **s, buf, deadline, CAP, "FTP reply", reply_end).await?;
        let r = parse_reply(&buf[..n]);
        buf.drain(..n);
        Ok::<_, GrabError>(r)
    };
    let (c, t) = cmd(&mut s, &mut buf, "USER anonymous\r\n").await?;
    let (c, t) = if c == 331 {
        cmd(&mut s, &mut buf, "PASS overlord@example.invalid\r\n").await?
    } else {
        (c, t)
    };
    g.anonymous_allowed = c == 230;
    g.anonymous_reply = Some(format!("{c} {}", t.join(" / ")));
    if let Ok((215, t)) = cmd(&mut s, &mut buf, "SYST\r\n").await {
        g.syst = t.first().cloned();
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    Ok(g)
}
