//! SSH: identification banner, the server's KEXINIT lists, the HASSH server fingerprint and the
//! host-key fingerprints (one curve25519 key exchange per host-key type, stopped at the reply:
//! no authentication is ever attempted).

use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::{GrabError, line_end, read_until};
use crate::service::engine::Dialer;
use crate::service::io::BoxStream;
use crate::service::tls::hex;
pub use overlord_core::finding::service::{HostKey, KexInit, SshGrab};

const OUR_IDENT: &[u8] = b"SSH-2.0-OverlordProbe\r\n";
const MAX_PACKET: usize = 64 * 1024;

pub async fn grab(d: &Dialer, wait: Duration) -> Result<SshGrab, GrabError> {
    let deadline = Instant::now() + wait * 2;
    let mut s = d.dial().await?;
    let mut buf = Vec::new();
    let banner = read_ident(&mut s, &mut buf, deadline).await?;
    s.write_all(OUR_IDENT).await?;
    let payload = read_packet(&mut s, &mut buf, deadline).await?;
    let kex = parse_kexinit(&payload)?;
    drop(s);
    let mut g = SshGrab::default();
    fill_banner(&mut g, &banner);
    let algs = format!(
        "{};{};{};{}",
        kex.kex_algorithms.join(","),
        kex.ciphers_s2c.join(","),
        kex.macs_s2c.join(","),
        kex.compression_s2c.join(",")
    );
    g.hassh_server = hex(&Md5::digest(algs.as_bytes()));
    g.hassh_server_algorithms = algs;
    // One key exchange per host-key type, in parallel.
    if kex
        .kex_algorithms
        .iter()
        .any(|k| k.starts_with("curve25519-sha256"))
    {
        let mut wanted: Vec<String> = Vec::new();
        let mut seen_types = Vec::new();
        for a in &kex.host_key_algorithms {
            let t = match a.as_str() {
                "ssh-ed25519" => "ed25519",
                "rsa-sha2-512" | "rsa-sha2-256" | "ssh-rsa" => "rsa",
                x if x.starts_with("ecdsa-sha2-") => x,
                _ => continue,
            };
            if !seen_types.contains(&t) {
                seen_types.push(t);
                wanted.push(a.clone());
            }
        }
        let futs = wanted.iter().map(|alg| host_key(d, alg, &kex, deadline));
        for r in futures_util::future::join_all(futs)
            .await
            .into_iter()
            .flatten()
        {
            g.host_keys.push(r);
        }
    }
    g.kex = kex;
    Ok(g)
}

fn fill_banner(g: &mut SshGrab, banner: &str) {
    g.banner = banner.to_string();
    let rest = banner.strip_prefix("SSH-").unwrap_or(banner);
    let (proto, rest) = rest.split_once('-').unwrap_or((rest, ""));
    g.protocol = proto.to_string();
    let (software, comments) = match rest.split_once(' ') {
        Some((s, c)) => (s, Some(c.to_string())),
        None => (rest, None),
    };
    g.software = software.to_string();
    g.comments = comments;
    if let Some((p, v)) = software.split_once('_') {
        g.product = Some(match p {
            "OpenSSH" => "OpenSSH".to_string(),
            "dropbear" => "Dropbear sshd".to_string(),
            other => other.to_string(),
        });
        g.version = Some(v.to_string());
    } else if !software.is_empty() {
        g.product = Some(software.to_string());
    }
}

async fn read_ident(
    s: &mut BoxStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<String, GrabError> {
    // Servers may send other lines before the identification (RFC 4253 §4.2).
    for _ in 0..20 {
        let n = read_until(
            &mut **s,
            buf,
            deadline,
            8192,
            "SSH identification",
            line_end,
        )
        .await?;
        let line: Vec<u8> = buf.drain(..n).collect();
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.starts_with("SSH-") {
            return Ok(text);
        }
    }
    Err(GrabError::Protocol("no SSH identification line".into()))
}

/// Reads one unencrypted binary packet; returns its payload.
async fn read_packet(
    s: &mut BoxStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Vec<u8>, GrabError> {
    let n = read_until(
        &mut **s,
        buf,
        deadline,
        MAX_PACKET + 8,
        "SSH packet",
        packet_len,
    )
    .await?;
    let pkt: Vec<u8> = buf.drain(..n).collect();
    packet_payload(&pkt)
}

fn packet_len(b: &[u8]) -> Option<usize> {
    if b.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    if len > MAX_PACKET {
        // Let the parser reject it with a clear message.
        return Some(b.len());
    }
    (b.len() >= 4 + len).then_some(4 + len)
}

/// Payload of an unencrypted binary packet (`len, padlen, payload, padding`).
pub fn packet_payload(pkt: &[u8]) -> Result<Vec<u8>, GrabError> {
    if pkt.len() < 5 {
        return Err(GrabError::Protocol("short SSH packet".into()));
    }
    let len = u32::from_be_bytes([pkt[0], pkt[1], pkt[2], pkt[3]]) as usize;
    if len > MAX_PACKET || len + 4 > pkt.len() {
        return Err(GrabError::Protocol(format!(
            "SSH packet length {len} out of bounds"
        )));
    }
    let pad = pkt[4] as usize;
    if pad + 1 > len {
        return Err(GrabError::Protocol("SSH padding longer than packet".into()));
    }
    Ok(pkt[5..4 + len - pad].to_vec())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], GrabError> {
        if self.0.len() < n {
            return Err(GrabError::Protocol("truncated SSH message".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, GrabError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn string(&mut self) -> Result<&'a [u8], GrabError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn list(&mut self) -> Result<Vec<String>, GrabError> {
        let s = self.string()?;
        Ok(String::from_utf8_lossy(s)
            .split(',')
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// Parses a KEXINIT payload (message 20).
pub fn parse_kexinit(p: &[u8]) -> Result<KexInit, GrabError> {
    let mut r = Reader(p);
    let msg = r.take(1)?[0];
    if msg != 20 {
        return Err(GrabError::Protocol(format!(
            "expected KEXINIT (20), got message {msg}"
        )));
    }
    r.take(16)?;
    let k = KexInit {
        kex_algorithms: r.list()?,
        host_key_algorithms: r.list()?,
        ciphers_c2s: r.list()?,
        ciphers_s2c: r.list()?,
        macs_c2s: r.list()?,
        macs_s2c: r.list()?,
        compression_c2s: r.list()?,
        compression_s2c: r.list()?,
        first_kex_follows: {
            r.list()?;
            r.list()?;
            r.take(1)?[0] != 0
        },
    };
    Ok(k)
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn packet(payload: &[u8]) -> Vec<u8> {
    let mut pad = 8 - (5 + payload.len()) % 8;
    if pad < 4 {
        pad += 8;
    }
    let mut out = Vec::with_capacity(5 + payload.len() + pad);
    out.extend_from_slice(&((1 + payload.len() + pad) as u32).to_be_bytes());
    out.push(pad as u8);
    out.extend_from_slice(payload);
    out.extend(std::iter::repeat_n(0u8, pad));
    out
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let seed = format!(
        "{:?}{:?}",
        std::time::SystemTime::now(),
        std::thread::current().id()
    );
    let mut out = Vec::new();
    let mut h = Sha256::digest(seed.as_bytes());
    while out.len() < n {
        out.extend_from_slice(&h);
        h = Sha256::digest(h);
    }
    out.truncate(n);
    out
}

/// Runs a curve25519 key exchange up to the server's reply and fingerprints its host key.
async fn host_key(
    d: &Dialer,
    alg: &str,
    server: &KexInit,
    deadline: Instant,
) -> Result<HostKey, GrabError> {
    let mut s = d.dial().await?;
    let mut buf = Vec::new();
    read_ident(&mut s, &mut buf, deadline).await?;
    s.write_all(OUR_IDENT).await?;
    read_packet(&mut s, &mut buf, deadline).await?;
    let first = |l: &[String]| l.first().cloned().unwrap_or_else(|| "none".into());
    let mut kexinit = vec![20u8];
    kexinit.extend_from_slice(&pseudo_random(16));
    for l in [
        "curve25519-sha256,curve25519-sha256@libssh.org".to_string(),
        alg.to_string(),
        first(&server.ciphers_c2s),
        first(&server.ciphers_s2c),
        first(&server.macs_c2s),
        first(&server.macs_s2c),
        "none".into(),
        "none".into(),
        String::new(),
        String::new(),
    ] {
        put_string(&mut kexinit, l.as_bytes());
    }
    kexinit.extend_from_slice(&[0, 0, 0, 0, 0]);
    let mut init = vec![30u8];
    put_string(&mut init, &pseudo_random(32));
    let mut out = packet(&kexinit);
    out.extend_from_slice(&packet(&init));
    s.write_all(&out).await?;
    let reply = read_packet(&mut s, &mut buf, deadline).await?;
    let mut r = Reader(&reply);
    let msg = r.take(1)?[0];
    if msg != 31 {
        return Err(GrabError::Protocol(format!(
            "expected KEX_ECDH_REPLY (31), got {msg}"
        )));
    }
    let blob = r.string()?;
    Ok(fingerprint(blob))
}

/// Fingerprints a public-key blob.
pub fn fingerprint(blob: &[u8]) -> HostKey {
    let mut r = Reader(blob);
    let key_type = r
        .string()
        .map(|t| String::from_utf8_lossy(t).into_owned())
        .unwrap_or_default();
    let bits = match key_type.as_str() {
        "ssh-rsa" => r.string().ok().and_then(|_e| r.string().ok()).map(|n| {
            let n = n.iter().skip_while(|&&c| c == 0).count();
            (n * 8) as u32
        }),
        "ssh-ed25519" => Some(256),
        t if t.starts_with("ecdsa-sha2-nistp") => t[16..].parse().ok(),
        _ => None,
    };
    let sha = base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob));
    let md5 = Md5::digest(blob)
        .iter()
        .map(|c| format!("{c:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    HostKey {
        key_type,
        sha256: format!("SHA256:{sha}"),
        md5,
        bits,
    }
}
