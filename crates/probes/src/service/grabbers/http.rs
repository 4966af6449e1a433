//! HTTP: status, headers, title, server, favicon hash, body hash and redirects (followed only
//! when they stay on the same host and port).

use base64::Engine;
use sha2::{Digest, Sha256};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout_at};

use super::GrabError;
use crate::service::IdentifyOptions;
use crate::service::engine::Dialer;
use crate::service::tls::hex;
pub use overlord_core::finding::service::{Favicon, HttpGrab, Redirect};

/// A parsed response.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub truncated: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

const BODY_CAP: usize = 512 * 1024;
const MAX_REDIRECTS: usize = 3;

pub async fn grab(
    d: &Dialer,
    wait: Duration,
    opts: &IdentifyOptions,
) -> Result<HttpGrab, GrabError> {
    let host = opts.sni.clone().unwrap_or_else(|| d.addr.to_string());
    let deadline = Instant::now() + wait * 3;
    let mut path = "/".to_string();
    let mut redirects = Vec::new();
    let resp = loop {
        let r = fetch(d, &host, &path, deadline).await?;
        let loc = r.header("location").map(str::to_string);
        match (r.status, loc) {
            (301 | 302 | 303 | 307 | 308, Some(loc)) if redirects.len() < MAX_REDIRECTS => {
                let next = same_origin_path(&loc, &host, d.tls);
                redirects.push(Redirect {
                    status: r.status,
                    from: path.clone(),
                    location: loc,
                    followed: next.is_some(),
                });
                match next {
                    Some(p) if p != path => path = p,
                    _ => break r,
                }
            }
            _ => break r,
        }
    };
    let favicon = match fetch(d, &host, "/favicon.ico", deadline).await {
        Ok(f) if f.status == 200 && !f.body.is_empty() && !f.truncated => Some(Favicon {
            path: "/favicon.ico".into(),
            bytes: f.body.len() as u64,
            sha256: hex(&Sha256::digest(&f.body)),
            mmh3: favicon_hash(&f.body),
        }),
        _ => None,
    };
    Ok(HttpGrab {
        status: resp.status,
        reason: resp.reason.clone(),
        http_version: resp.version.clone(),
        path,
        server: resp.header("server").map(str::to_string),
        powered_by: resp.header("x-powered-by").map(str::to_string),
        content_type: resp.header("content-type").map(str::to_string),
        title: title(&resp.body),
        body_bytes: resp.body.len() as u64,
        body_truncated: resp.truncated,
        body_sha256: hex(&Sha256::digest(&resp.body)),
        headers: resp.headers,
        redirects,
        favicon,
    })
}

/// The path to follow when `loc` stays on our host and port (and scheme); `None` otherwise.
fn same_origin_path(loc: &str, host: &str, tls: bool) -> Option<String> {
    if loc.starts_with('/') && !loc.starts_with("//") {
        return Some(loc.to_string());
    }
    let scheme = if tls { "https://" } else { "http://" };
    let rest = loc.strip_prefix(scheme)?;
    let (auth, p) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    (auth.eq_ignore_ascii_case(host)).then(|| p.to_string())
}

async fn fetch(
    d: &Dialer,
    host: &str,
    path: &str,
    deadline: Instant,
) -> Result<Response, GrabError> {
    let mut s = d.dial().await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: overlord-probe/0.1\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let mut truncated = false;
    loop {
        if let Some(n) = complete_len(&buf) {
            buf.truncate(n);
            break;
        }
        if buf.len() >= BODY_CAP {
            truncated = true;
            break;
        }
        match timeout_at(deadline, s.read(&mut tmp)).await {
            Err(_) if buf.is_empty() => return Err(GrabError::Timeout("HTTP response")),
            Err(_) => {
                truncated = true;
                break;
            }
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
            Ok(Err(_)) if !buf.is_empty() => break,
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let mut r = parse_response(&buf)?;
    r.truncated |= truncated;
    Ok(r)
}

/// Length of a complete response when the framing says so (Content-Length or chunked end).
fn complete_len(b: &[u8]) -> Option<usize> {
    let he = find(b, b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..he]).to_ascii_lowercase();
    for l in head.lines() {
        if let Some(v) = l.strip_prefix("content-length:") {
            let n: usize = v.trim().parse().ok()?;
            return (b.len() >= he + n).then_some(he + n);
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            return find(&b[he..], b"\r\n0\r\n\r\n")
                .map(|i| he + i + 7)
                .or_else(|| b[he..].starts_with(b"0\r\n\r\n").then_some(he + 5));
        }
    }
    None
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Parses a raw HTTP/1.x response (chunked bodies are decoded).
pub fn parse_response(b: &[u8]) -> Result<Response, GrabError> {
    let he = find(b, b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| find(b, b"\n\n").map(|i| (i, i + 2)))
        .unwrap_or((b.len(), b.len()));
    let head = String::from_utf8_lossy(&b[..he.0]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(GrabError::Protocol(format!(
            "not an HTTP response: {status_line:.60}"
        )));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| GrabError::Protocol(format!("bad status line: {status_line:.60}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .take(200)
        .collect();
    let mut r = Response {
        version: version.to_string(),
        status,
        reason,
        headers,
        body: b[he.1..].to_vec(),
        truncated: false,
    };
    if r.header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        r.body = dechunk(&r.body);
    }
    Ok(r)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(le) = find(b, b"\r\n") {
        let size_str = String::from_utf8_lossy(&b[..le]);
        let Ok(n) = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)
        else {
            break;
        };
        if n == 0 {
            break;
        }
        let start = le + 2;
        let end = (start + n).min(b.len());
        out.extend_from_slice(&b[start..end]);
        b = b.get(end + 2..).unwrap_or(&[]);
    }
    out
}

/// Text of the first `<title>` element (whitespace collapsed, at most 256 chars).
pub fn title(body: &[u8]) -> Option<String> {
    let lower: Vec<u8> = body.iter().map(u8::to_ascii_lowercase).collect();
    let open = find(&lower, b"<title")?;
    let start = open + lower[open..].iter().position(|&c| c == b'>')? + 1;
    let end = start + find(&lower[start..], b"</title")?;
    let t = String::from_utf8_lossy(&body[start..end]);
    let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
    Some(t.chars().take(256).collect())
}

/// Shodan's favicon hash: mmh3 of `base64.encodebytes(data)`.
pub fn favicon_hash(data: &[u8]) -> i32 {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let mut text = Vec::with_capacity(b64.len() + b64.len() / 76 + 1);
    for chunk in b64.as_bytes().chunks(76) {
        text.extend_from_slice(chunk);
        text.push(b'\n');
    }
    murmur3_32(&text, 0) as i32
}

/// MurmurHash3 x86 32-bit.
pub fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut h = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let mut k: u32 = 0;
    for (i, &b) in tail.iter().enumerate() {
        k ^= (b as u32) << (8 * i);
    }
    if !tail.is_empty() {
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        h ^= k;
    }
    h ^= data.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur_known_values() {
        // Reference values of MurmurHash3_x86_32.
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(
            murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
            0x2e4f_f723
        );
    }

    #[test]
    fn parses_chunked_and_title() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nServer: x/1\r\n\r\n5\r\n<titl\r\n10\r\ne> Hi  there</ti\r\n3\r\ntle\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.header("server"), Some("x/1"));
        assert_eq!(title(&r.body).as_deref(), Some("Hi there"));
        assert_eq!(complete_len(raw), Some(raw.len()));
    }

    #[test]
    fn same_origin_only() {
        assert_eq!(
            same_origin_path("/a", "127.0.0.1:80", false).as_deref(),
            Some("/a")
        );
        assert_eq!(
            same_origin_path("http://127.0.0.1:80/b", "127.0.0.1:80", false).as_deref(),
            Some("/b")
        );
        assert_eq!(
            same_origin_path("http://example.com/", "127.0.0.1:80", false),
            None
        );
        assert_eq!(
            same_origin_path("//example.com/", "127.0.0.1:80", false),
            None
        );
    }
}
