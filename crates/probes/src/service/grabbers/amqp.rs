//! AMQP 0-9-1: send the protocol header, read `Connection.Start` and its server properties
//! (product, version, platform, cluster name) and the offered SASL mechanisms. No login.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, read_until};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::AmqpGrab;

const CAP: usize = 64 * 1024;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<AmqpGrab, GrabError> {
    let mut s = d.dial().await?;
    s.write_all(b"AMQP\x00\x00\x09\x01").await?;
    let mut buf = Vec::new();
    let n = read_until(
        &mut *s,
        &mut buf,
        Instant::now() + wait,
        CAP,
        "Connection.Start",
        |b| {
            if b.starts_with(b"AMQP") {
                return (b.len() >= 8).then_some(8);
            }
            let size = u32::from_be_bytes(b.get(3..7)?.try_into().ok()?) as usize;
            let end = 7usize.checked_add(size)?.checked_add(1)?;
            (b.len() >= end).then_some(end)
        },
    )
    .await?;
    parse(&buf[..n])
}

/// Parses a `Connection.Start` frame (or the server's own protocol header: it wants another
/// version).
pub fn parse(b: &[u8]) -> Result<AmqpGrab, GrabError> {
    let bad = |w: &str| GrabError::Protocol(format!("AMQP: {w}"));
    if let Some(h) = b.strip_prefix(b"AMQP") {
        return Ok(AmqpGrab {
            protocol: format!("header {:02x?}", h),
            ..Default::default()
        });
    }
    if b.len() < 8 || b[0] != 1 {
        return Err(bad("not a method frame"));
    }
    let p = &b[7..b.len() - 1];
    if b[b.len() - 1] != 0xce {
        return Err(bad("bad frame end"));
    }
    if p.len() < 6 || p[..4] != [0, 10, 0, 10] {
        return Err(bad("not Connection.Start"));
    }
    let mut g = AmqpGrab {
        protocol: format!("0-{}", p[5]).replace("0-", &format!("{}-", p[4])),
        ..Default::default()
    };
    let tlen = u32::from_be_bytes(
        p.get(6..10)
            .ok_or(bad("short"))?
            .try_into()
            .unwrap_or([0; 4]),
    ) as usize;
    let table = p.get(10..10 + tlen).ok_or(bad("table past the frame"))?;
    let mut i = 0;
    while i < table.len() {
        let kl = table[i] as usize;
        let Some(key) = table.get(i + 1..i + 1 + kl) else {
            break;
        };
        i += 1 + kl;
        let Some(&ty) = table.get(i) else { break };
        i += 1;
        let skip = |n: usize| table.get(i..i + n).map(|_| n);
        let used = match ty {
            b'S' | b'F' | b'A' | b'x' => {
                let Some(l) = table.get(i..i + 4) else { break };
                let l = u32::from_be_bytes(l.try_into().unwrap_or([0; 4])) as usize;
                if ty == b'S'
                    && let Some(v) = table.get(i + 4..i + 4 + l)
                {
                    let v = String::from_utf8_lossy(v)
                        .chars()
                        .take(200)
                        .collect::<String>();
                    match key {
                        b"product" => g.product = Some(v),
                        b"version" => g.version = Some(v),
                        b"platform" => g.platform = Some(v),
                        b"cluster_name" => g.cluster_name = Some(v),
                        _ => {}
                    }
                }
                Some(4 + l)
            }
            b't' | b'b' | b'B' => skip(1),
            b's' | b'u' => skip(2),
            b'I' | b'i' | b'f' => skip(4),
            b'l' | b'd' | b'T' => skip(8),
            b'D' => skip(5),
            b'V' => Some(0),
            _ => None,
        };
        match used {
            Some(n) if i + n <= table.len() => i += n,
            _ => break,
        }
    }
    let rest = &p[10 + tlen..];
    if let Some(l) = rest.get(..4) {
        let l = u32::from_be_bytes(l.try_into().unwrap_or([0; 4])) as usize;
        if let Some(m) = rest.get(4..4 + l) {
            g.mechanisms = String::from_utf8_lossy(m)
                .split_whitespace()
                .take(16)
                .map(str::to_string)
                .collect();
        }
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_start_properties() {
        let mut table = Vec::new();
        for (k, v) in [("product", "RabbitMQ"), ("version", "3.10.8")] {
            table.push(k.len() as u8);
            table.extend_from_slice(k.as_bytes());
            table.push(b'S');
            table.extend_from_slice(&(v.len() as u32).to_be_bytes());
            table.extend_from_slice(v.as_bytes());
        }
        table.extend_from_slice(b"\x0cinformationt\x01");
        let mut p = vec![0, 10, 0, 10, 0, 9];
        p.extend_from_slice(&(table.len() as u32).to_be_bytes());
        p.extend_from_slice(&table);
        p.extend_from_slice(&14u32.to_be_bytes());
        p.extend_from_slice(b"PLAIN AMQPLAIN");
        p.extend_from_slice(&5u32.to_be_bytes());
        p.extend_from_slice(b"en_US");
        let mut f = vec![1, 0, 0];
        f.extend_from_slice(&(p.len() as u32).to_be_bytes());
        f.extend_from_slice(&p);
        f.push(0xce);
        let g = parse(&f).unwrap();
        assert_eq!(g.product.as_deref(), Some("RabbitMQ"));
        assert_eq!(g.version.as_deref(), Some("3.10.8"));
        assert_eq!(g.protocol, "0-9");
        assert_eq!(g.mechanisms, vec!["PLAIN", "AMQPLAIN"]);
        // Truncations never panic.
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
    }
}
