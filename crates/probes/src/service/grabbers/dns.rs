//! DNS over TCP: one `version.bind` CH TXT query (length-prefixed), reply tied to our query id.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, read_until};
use crate::service::engine::Dialer;
use crate::udp::proto::Proto;
pub use overlord_core::finding::service::DnsGrab;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<DnsGrab, GrabError> {
    let id = u64::from(std::process::id() as u16 ^ 0x5a5a) | 0x0100;
    let q = Proto::Dns.build(id);
    let mut s = d.dial().await?;
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(&q);
    s.write_all(&msg).await?;
    let mut buf = Vec::new();
    let n = read_until(
        &mut *s,
        &mut buf,
        Instant::now() + wait,
        64 * 1024 + 2,
        "DNS reply",
        |b| {
            let l = u16::from_be_bytes([*b.first()?, *b.get(1)?]) as usize + 2;
            (b.len() >= l).then_some(l)
        },
    )
    .await?;
    parse(&buf[2..n], id)
}

/// Parses the reply to our query `id` (without the TCP length prefix).
pub fn parse(m: &[u8], id: u64) -> Result<DnsGrab, GrabError> {
    let a = Proto::Dns
        .validate(m, id)
        .ok_or_else(|| GrabError::Protocol("not a DNS reply to our query".into()))?;
    Ok(DnsGrab {
        product: a.product,
        version: a.version,
        info: a.info,
    })
}
