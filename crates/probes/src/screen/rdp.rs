//! RDP security probe: X.224 Connection Requests carrying RDP_NEG_REQ ([MS-RDPBCGR] 2.2.1.1/2.2.1.2).
//!
//! Three short connections ask for (1) TLS + CredSSP + CredSSP-EX, (2) standard RDP security only,
//! (3) TLS only. The answers give the protocol the server prefers, which ones it accepts, and
//! whether Network Level Authentication (CredSSP) is required before any login screen.
//! Nothing beyond the Connection Confirm is exchanged.

use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ScreenError, ScreenOptions, ms};

/// The RDP security protocols, one Connection Request's answer and what the probe learned: the
/// finding schema's records (`RdpProtocol::bits` is the RDP_NEG bit of each).
pub use overlord_core::finding::screen::{Rdp, RdpAttempt, RdpOutcome, RdpProtocol};

/// Name of an RDP_NEG_FAILURE code.
pub fn failure_name(code: u32) -> &'static str {
    match code {
        1 => "SSL_REQUIRED_BY_SERVER",
        2 => "SSL_NOT_ALLOWED_BY_SERVER",
        3 => "SSL_CERT_NOT_ON_SERVER",
        4 => "INCONSISTENT_FLAGS",
        5 => "HYBRID_REQUIRED_BY_SERVER",
        6 => "SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER",
        _ => "unknown",
    }
}

/// TPKT + X.224 Connection Request + RDP_NEG_REQ (19 bytes).
pub fn connection_request(protocols: u32) -> [u8; 19] {
    let mut m = [0u8; 19];
    m[..4].copy_from_slice(&[3, 0, 0, 19]);
    m[4..11].copy_from_slice(&[14, 0xe0, 0, 0, 0, 0, 0]);
    m[11..15].copy_from_slice(&[1, 0, 8, 0]);
    m[15..19].copy_from_slice(&protocols.to_le_bytes());
    m
}

/// Parses a Connection Confirm (TPKT payload after the 4-byte TPKT header).
pub fn parse_confirm(tpdu: &[u8]) -> Result<RdpOutcome, ScreenError> {
    let bad = |m: &str| ScreenError::Protocol(format!("not an RDP Connection Confirm: {m}"));
    if tpdu.len() < 7 {
        return Err(bad("short X.224 TPDU"));
    }
    let li = usize::from(tpdu[0]);
    if tpdu[1] & 0xf0 != 0xd0 {
        return Err(bad(&format!("TPDU code {:#04x}", tpdu[1])));
    }
    if li + 1 > tpdu.len() || li < 6 {
        return Err(bad("length indicator out of range"));
    }
    let var = &tpdu[7..li + 1];
    if var.is_empty() {
        return Ok(RdpOutcome::NoNegotiation);
    }
    if var.len() < 8 {
        return Err(bad("truncated negotiation data"));
    }
    let value = u32::from_le_bytes([var[4], var[5], var[6], var[7]]);
    match var[0] {
        2 => match RdpProtocol::from_bits(value) {
            Some(protocol) => Ok(RdpOutcome::Selected {
                protocol,
                flags: var[1],
            }),
            None => Err(bad(&format!("unknown selected protocol {value:#x}"))),
        },
        3 => Ok(RdpOutcome::Failure {
            code: value,
            reason: failure_name(value).into(),
        }),
        t => Err(bad(&format!("negotiation type {t}"))),
    }
}

async fn negotiate(
    addr: SocketAddr,
    protocols: u32,
    opts: &ScreenOptions,
) -> Result<RdpOutcome, ScreenError> {
    let stream = tokio::time::timeout(opts.connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| ScreenError::Timeout {
            phase: "connect",
            limit: opts.connect_timeout,
            bytes_read: 0,
        })?
        .map_err(|e| ScreenError::Connect {
            addr: addr.to_string(),
            source: e,
        })?;
    super::rfb::reject_self_connect(&stream, addr)?;
    let mut stream = stream;
    let exchange = async {
        stream.write_all(&connection_request(protocols)).await?;
        let mut hdr = [0u8; 4];
        stream.read_exact(&mut hdr).await?;
        if hdr[0] != 3 {
            return Ok(Err(ScreenError::Protocol(format!(
                "not a TPKT header: {hdr:02x?}"
            ))));
        }
        let len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
        if !(11..=512).contains(&len) {
            return Ok(Err(ScreenError::Protocol(format!(
                "TPKT length {len} out of range for a Connection Confirm"
            ))));
        }
        let mut body = vec![0u8; len - 4];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(parse_confirm(&body))
    };
    match tokio::time::timeout(opts.io_timeout, exchange).await {
        Err(_) => Err(ScreenError::Timeout {
            phase: "RDP negotiation",
            limit: opts.io_timeout,
            bytes_read: 0,
        }),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(ScreenError::Closed {
            phase: "RDP negotiation",
            bytes_read: 0,
        }),
        Ok(Err(e)) => Err(ScreenError::Io {
            phase: "RDP negotiation",
            source: e,
        }),
        Ok(Ok(r)) => r,
    }
}

fn protocols_of(bits: u32) -> Vec<RdpProtocol> {
    if bits == 0 {
        return vec![RdpProtocol::Rdp];
    }
    [
        RdpProtocol::Tls,
        RdpProtocol::Hybrid,
        RdpProtocol::RdsTls,
        RdpProtocol::HybridEx,
        RdpProtocol::RdsAad,
    ]
    .into_iter()
    .filter(|p| bits & p.bits() != 0)
    .collect()
}

/// Probes the RDP server at `addr`. Fails when the first exchange fails or the peer does not
/// speak X.224; later exchanges that fail are recorded in [`Rdp::attempts`].
pub async fn rdp_probe(addr: SocketAddr, opts: &ScreenOptions) -> Result<Rdp, ScreenError> {
    let start = Instant::now();
    let mut info = Rdp {
        preferred: None,
        supported: Vec::new(),
        nla_required: false,
        flags: None,
        attempts: Vec::new(),
        total_ms: 0.0,
    };
    let all = 1 | 2 | 8;
    for (i, bits) in [all, 0u32, 1].into_iter().enumerate() {
        if start.elapsed() >= opts.total_timeout {
            return Err(ScreenError::Timeout {
                phase: "RDP probe",
                limit: opts.total_timeout,
                bytes_read: 0,
            });
        }
        let outcome = match negotiate(addr, bits, opts).await {
            Ok(o) => o,
            Err(e) if i == 0 => return Err(e),
            Err(e) => RdpOutcome::Error {
                message: e.to_string(),
            },
        };
        match &outcome {
            RdpOutcome::Selected { protocol, flags } => {
                if i == 0 {
                    info.preferred = Some(*protocol);
                    info.flags = Some(*flags);
                }
                if !info.supported.contains(protocol) {
                    info.supported.push(*protocol);
                }
            }
            RdpOutcome::NoNegotiation => {
                // A legacy server ignores the request and speaks standard RDP security.
                if !info.supported.contains(&RdpProtocol::Rdp) {
                    info.supported.push(RdpProtocol::Rdp);
                }
                if i == 0 {
                    info.preferred = Some(RdpProtocol::Rdp);
                }
            }
            _ => {}
        }
        info.attempts.push(RdpAttempt {
            requested: protocols_of(bits),
            outcome,
        });
    }
    let accepts = |p| info.supported.contains(&p);
    info.nla_required = !accepts(RdpProtocol::Rdp)
        && !accepts(RdpProtocol::Tls)
        && (accepts(RdpProtocol::Hybrid) || accepts(RdpProtocol::HybridEx));
    info.total_ms = ms(start.elapsed());
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let m = connection_request(0x0b);
        assert_eq!(
            m,
            [
                3, 0, 0, 0x13, 0x0e, 0xe0, 0, 0, 0, 0, 0, 1, 0, 8, 0, 0x0b, 0, 0, 0
            ]
        );
    }

    #[test]
    fn confirm_parsing() {
        let rsp = [0x0e, 0xd0, 0, 0, 0x12, 0x34, 0, 2, 0x1f, 8, 0, 2, 0, 0, 0];
        assert_eq!(
            parse_confirm(&rsp).unwrap(),
            RdpOutcome::Selected {
                protocol: RdpProtocol::Hybrid,
                flags: 0x1f
            }
        );
        let fail = [0x0e, 0xd0, 0, 0, 0, 0, 0, 3, 0, 8, 0, 5, 0, 0, 0];
        assert_eq!(
            parse_confirm(&fail).unwrap(),
            RdpOutcome::Failure {
                code: 5,
                reason: "HYBRID_REQUIRED_BY_SERVER".into()
            }
        );
        assert_eq!(
            parse_confirm(&[6, 0xd0, 0, 0, 0, 0, 0]).unwrap(),
            RdpOutcome::NoNegotiation
        );
        assert!(parse_confirm(&[6, 0xe0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_confirm(&[0x40, 0xd0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_confirm(&[0x0a, 0xd0, 0, 0, 0, 0, 0, 2, 0, 8, 0]).is_err());
        assert!(parse_confirm(&[0x0e, 0xd0, 0, 0, 0, 0, 0, 2, 0, 8, 0, 0x40, 0, 0, 0]).is_err());
    }
}
