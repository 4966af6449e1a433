//! MQTT: CONNECT without credentials; when accepted, read the broker's `$SYS/broker/version`.

use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, read_until};
use crate::service::engine::Dialer;
pub use overlord_core::finding::service::MqttGrab;

/// MQTT 3.1.1 CONNECT, clean session, client id "ov", keepalive 60 s, no credentials.
pub const CONNECT: &[u8] = b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02ov";
const SUBSCRIBE_VERSION: &[u8] = b"\x82\x18\x00\x01\x00\x13$SYS/broker/version\x00";

pub async fn grab(d: &Dialer, wait: Duration) -> Result<MqttGrab, GrabError> {
    let mut s = d.dial().await?;
    s.write_all(CONNECT).await?;
    let deadline = Instant::now() + wait;
    let mut buf = Vec::new();
    let n = read_until(&mut *s, &mut buf, deadline, 4096, "CONNACK", packet_len).await?;
    let mut g = parse_connack(&buf[..n])?;
    buf.drain(..n);
    if g.accepted {
        s.write_all(SUBSCRIBE_VERSION).await?;
        // SUBACK, then the retained PUBLISH (if the broker has $SYS topics).
        let sys_deadline = Instant::now() + wait.min(Duration::from_millis(1500));
        while let Ok(n) = read_until(
            &mut *s,
            &mut buf,
            sys_deadline,
            64 * 1024,
            "PUBLISH",
            packet_len,
        )
        .await
        {
            let pkt: Vec<u8> = buf.drain(..n).collect();
            if let Some((topic, payload)) = parse_publish(&pkt)
                && topic == "$SYS/broker/version"
            {
                g.broker = Some(String::from_utf8_lossy(&payload).trim().to_string());
                break;
            }
        }
        let _ = s.write_all(b"\xe0\x00").await;
    }
    Ok(g)
}

/// Total length of the first complete MQTT packet in `b`.
pub fn packet_len(b: &[u8]) -> Option<usize> {
    let mut len = 0usize;
    let mut mult = 1usize;
    for i in 1..5 {
        let c = *b.get(i)?;
        len += (c & 0x7f) as usize * mult;
        if c & 0x80 == 0 {
            let total = 1 + i + len;
            return (b.len() >= total).then_some(total);
        }
        mult *= 128;
    }
    // Malformed length: treat what we have as the packet so the parser rejects it.
    Some(b.len().min(5))
}

pub fn parse_connack(b: &[u8]) -> Result<MqttGrab, GrabError> {
    if b.len() < 4 || b[0] != 0x20 || b[1] != 2 {
        return Err(GrabError::Protocol(format!(
            "not a CONNACK: {}",
            crate::service::io::escape_bytes(&b[..b.len().min(16)])
        )));
    }
    let rc = b[3];
    let result = match rc {
        0 => "accepted",
        1 => "refused: unacceptable protocol version",
        2 => "refused: identifier rejected",
        3 => "refused: server unavailable",
        4 => "refused: bad user name or password",
        5 => "refused: not authorized",
        _ => "refused: unknown code",
    };
    Ok(MqttGrab {
        return_code: rc,
        accepted: rc == 0,
        result: result.into(),
        broker: None,
    })
}

/// (topic, payload) of a PUBLISH packet.
pub fn parse_publish(b: &[u8]) -> Option<(String, Vec<u8>)> {
    if b.first()? >> 4 != 3 {
        return None;
    }
    let qos = (b[0] >> 1) & 3;
    let mut i = 1;
    while *b.get(i)? & 0x80 != 0 {
        i += 1;
    }
    i += 1;
    let tl = u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]) as usize;
    let topic = String::from_utf8_lossy(b.get(i + 2..i + 2 + tl)?).into_owned();
    let mut p = i + 2 + tl;
    if qos > 0 {
        p += 2;
    }
    Some((topic, b.get(p..)?.to_vec()))
}
