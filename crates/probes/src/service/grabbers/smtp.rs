//! SMTP: banner and EHLO extensions.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, parse_reply, read_until, reply_end};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::SmtpGrab;

const CAP: usize = 16 * 1024;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<SmtpGrab, GrabError> {
    let mut s = d.dial().await?;
    let deadline = Instant::now() + wait * 2;
    let mut buf = Vec::new();
    let n = read_until(&mut *s, &mut buf, deadline, CAP, "SMTP banner", reply_end).await?;
    let (code, banner) = parse_reply(&buf[..n]);
    buf.drain(..n);
    if !(200..600).contains(&code) {
        return Err(GrabError::Protocol("no SMTP reply code".into()));
    }
    let mut g = SmtpGrab {
        banner_code: code,
        banner,
        ..Default::default()
    };
    if code != 220 {
        return Ok(g);
    }
    s.write_all(b"EHLO overlord.invalid\r\n").await?;
    let n = read_until(&mut *s, &mut buf, deadline, CAP, "EHLO reply", reply_end).await?;
    let (c, lines) = parse_reply(&buf[..n]);
    g.ehlo_code = Some(c);
    if c == 250 {
        let mut it = lines.into_iter();
        g.ehlo_host = it
            .next()
            .map(|l| l.split_whitespace().next().unwrap_or("").to_string());
        for l in it {
            let up = l.to_ascii_uppercase();
            if up == "STARTTLS" {
                g.starttls = true;
            }
            if let Some(m) = up
                .strip_prefix("AUTH ")
                .or_else(|| up.strip_prefix("AUTH="))
            {
                g.auth = m.split_whitespace().map(str::to_string).collect();
            }
            g.extensions.push(l);
        }
    }
    let _ = s.write_all(b"QUIT\r\n").await;
    Ok(g)
}
