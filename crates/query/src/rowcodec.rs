//! The stored form of a [`ServiceState`] inside an index document: a compact binary record
//! (a version byte, then the fields in a fixed order; integers as LEB128 varints, strings and
//! lists length-prefixed, options behind a presence byte).
//!
//! It replaced JSON: encoding the row as JSON was the largest single cost of building a
//! document, and the JSON was about three times larger to compress and store. The format is
//! versioned by [`ROW_FORMAT`]; an index written with another format is rebuilt from the store
//! (the index version changes with it), so no reader of older rows is kept.

use crate::state::{ExtValue, Http, Screen, ServiceState, Ssh, Tls};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// First byte of every encoded row.
pub const ROW_FORMAT: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stored row: {0}")]
pub struct DecodeError(&'static str);

/// Appends the encoding of `s` to `out`.
pub fn encode(s: &ServiceState, out: &mut Vec<u8>) {
    let mut w = W(out);
    w.u8(ROW_FORMAT);
    w.str(&s.key);
    w.uv(s.job);
    match s.ip {
        None => w.u8(0),
        Some(IpAddr::V4(a)) => {
            w.u8(4);
            w.0.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            w.u8(6);
            w.0.extend_from_slice(&a.octets());
        }
    }
    w.uv(s.port as u64);
    w.str(&s.transport);
    w.u8(s.open as u8);
    w.ostr(&s.service);
    w.ostr(&s.product);
    w.ostr(&s.version);
    w.strs(&s.cpe);
    w.ostr(&s.banner);
    match &s.http {
        None => w.u8(0),
        Some(h) => {
            w.u8(1);
            w.ostr(&h.title);
            match h.status {
                None => w.u8(0),
                Some(x) => {
                    w.u8(1);
                    w.uv(x as u64);
                }
            }
            w.ostr(&h.server);
        }
    }
    match &s.tls {
        None => w.u8(0),
        Some(t) => {
            w.u8(1);
            w.str(&t.subject);
            w.str(&t.issuer);
            w.u8(t.expired as u8 | (t.self_signed as u8) << 1);
            w.str(&t.sha256);
            w.uv(zigzag(t.not_after));
        }
    }
    match &s.ssh {
        None => w.u8(0),
        Some(x) => {
            w.u8(1);
            w.ostr(&x.hassh);
            w.ostr(&x.key);
        }
    }
    match &s.screen {
        None => w.u8(0),
        Some(x) => {
            w.u8(1);
            w.ostr(&x.image);
            w.ostr(&x.text);
            match x.faces {
                None => w.u8(0),
                Some(n) => {
                    w.u8(1);
                    w.uv(n as u64);
                }
            }
            w.strs(&x.logos);
            w.strs(&x.tags);
            w.strs(&x.emails);
        }
    }
    w.strs(&s.leaks);
    for set in [&s.modules, &s.minions, &s.providers] {
        w.uv(set.len() as u64);
        for x in set {
            w.str(x);
        }
    }
    w.uv(s.first_seen_ms);
    w.uv(s.last_seen_ms);
    w.uv(s.cursor);
    w.uv(s.findings as u64);
    w.uv(s.ext.len() as u64);
    for (k, v) in &s.ext {
        w.str(k);
        match v {
            ExtValue::U64(n) => {
                w.u8(0);
                w.uv(*n);
            }
            ExtValue::F64(x) => {
                w.u8(1);
                w.0.extend_from_slice(&x.to_le_bytes());
            }
            ExtValue::Bool(b) => w.u8(2 + *b as u8),
            ExtValue::Str(x) => {
                w.u8(4);
                w.str(x);
            }
        }
    }
}

/// Decodes a row written by [`encode`]. Bytes that are not such a row are an error, never a
/// panic (the index directory is outside our control).
pub fn decode(b: &[u8]) -> Result<ServiceState, DecodeError> {
    let mut r = R(b);
    if r.u8()? != ROW_FORMAT {
        return Err(DecodeError("unknown row format"));
    }
    let key = r.str()?;
    let job = r.uv()?;
    let ip = match r.u8()? {
        0 => None,
        4 => Some(IpAddr::from(
            <[u8; 4]>::try_from(r.take(4)?).expect("4 bytes"),
        )),
        6 => Some(IpAddr::from(
            <[u8; 16]>::try_from(r.take(16)?).expect("16 bytes"),
        )),
        _ => return Err(DecodeError("bad address tag")),
    };
    let port = u16::try_from(r.uv()?).map_err(|_| DecodeError("port out of range"))?;
    let transport = r.str()?;
    let open = r.flag()?;
    let service = r.ostr()?;
    let product = r.ostr()?;
    let version = r.ostr()?;
    let cpe = r.strs()?;
    let banner = r.ostr()?;
    let http = match r.flag()? {
        false => None,
        true => Some(Http {
            title: r.ostr()?,
            status: match r.flag()? {
                false => None,
                true => Some(u16::try_from(r.uv()?).map_err(|_| DecodeError("bad status"))?),
            },
            server: r.ostr()?,
        }),
    };
    let tls = match r.flag()? {
        false => None,
        true => {
            let subject = r.str()?;
            let issuer = r.str()?;
            let bits = r.u8()?;
            Some(Tls {
                subject,
                issuer,
                expired: bits & 1 != 0,
                self_signed: bits & 2 != 0,
                sha256: r.str()?,
                not_after: unzigzag(r.uv()?),
            })
        }
    };
    let ssh = match r.flag()? {
        false => None,
        true => Some(Ssh {
            hassh: r.ostr()?,
            key: r.ostr()?,
        }),
    };
    let screen = match r.flag()? {
        false => None,
        true => Some(Screen {
            image: r.ostr()?,
            text: r.ostr()?,
            faces: match r.flag()? {
                false => None,
                true => Some(u32::try_from(r.uv()?).map_err(|_| DecodeError("bad faces"))?),
            },
            logos: r.strs()?,
            tags: r.strs()?,
            emails: r.strs()?,
        }),
    };
    let leaks = r.strs()?;
    let mut sets: [BTreeSet<String>; 3] = Default::default();
    for set in sets.iter_mut() {
        let n = r.len()?;
        for _ in 0..n {
            set.insert(r.str()?);
        }
    }
    let [modules, minions, providers] = sets;
    let first_seen_ms = r.uv()?;
    let last_seen_ms = r.uv()?;
    let cursor = r.uv()?;
    let findings = u32::try_from(r.uv()?).map_err(|_| DecodeError("bad count"))?;
    let mut ext = BTreeMap::new();
    for _ in 0..r.len()? {
        let k = r.str()?;
        let v = match r.u8()? {
            0 => ExtValue::U64(r.uv()?),
            1 => ExtValue::F64(f64::from_le_bytes(r.take(8)?.try_into().expect("8 bytes"))),
            2 => ExtValue::Bool(false),
            3 => ExtValue::Bool(true),
            4 => ExtValue::Str(r.str()?),
            _ => return Err(DecodeError("bad extension tag")),
        };
        ext.insert(k, v);
    }
    if !r.0.is_empty() {
        return Err(DecodeError("trailing bytes"));
    }
    Ok(ServiceState {
        key,
        job,
        ip,
        port,
        transport,
        open,
        service,
        product,
        version,
        cpe,
        banner,
        http,
        tls,
        ssh,
        screen,
        leaks,
        modules,
        minions,
        providers,
        first_seen_ms,
        last_seen_ms,
        cursor,
        findings,
        ext,
    })
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

struct W<'a>(&'a mut Vec<u8>);

impl W<'_> {
    fn u8(&mut self, x: u8) {
        self.0.push(x);
    }
    fn uv(&mut self, mut x: u64) {
        while x >= 0x80 {
            self.0.push(x as u8 | 0x80);
            x >>= 7;
        }
        self.0.push(x as u8);
    }
    fn str(&mut self, s: &str) {
        self.uv(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn ostr(&mut self, s: &Option<String>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn strs(&mut self, v: &[String]) {
        self.uv(v.len() as u64);
        for s in v {
            self.str(s);
        }
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError("bad flag")),
        }
    }
    fn uv(&mut self) -> Result<u64, DecodeError> {
        let mut x = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            x |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(DecodeError("varint too long"))
    }
    /// A length, bounded by the bytes left (a corrupt length cannot make us allocate).
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.uv()?;
        if n > self.0.len() as u64 {
            return Err(DecodeError("length beyond the record"));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<String, DecodeError> {
        let n = self.len()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("string not UTF-8"))
    }
    fn ostr(&mut self) -> Result<Option<String>, DecodeError> {
        Ok(match self.flag()? {
            false => None,
            true => Some(self.str()?),
        })
    }
    fn strs(&mut self) -> Result<Vec<String>, DecodeError> {
        let n = self.len()?;
        (0..n).map(|_| self.str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> ServiceState {
        let mut ext = BTreeMap::new();
        ext.insert("redis.auth".into(), ExtValue::Bool(true));
        ext.insert("x11.open".into(), ExtValue::Bool(false));
        ext.insert("beacon.period".into(), ExtValue::F64(-60.5));
        ext.insert("n".into(), ExtValue::U64(u64::MAX));
        ext.insert("udp.state".into(), ExtValue::Str("open".into()));
        ServiceState {
            key: "3/::1/443".into(),
            job: 3,
            ip: Some("::1".parse().unwrap()),
            port: 443,
            transport: "tcp".into(),
            open: true,
            service: Some("ssl/http".into()),
            product: Some("nginx".into()),
            version: Some("1.25.3".into()),
            cpe: vec!["cpe:/a:nginx:nginx:1.25.3".into(), "x".into()],
            banner: Some("HTTP/1.1 200 OK\r\nServer: nginx — ✓".into()),
            http: Some(Http {
                title: Some("Welcome".into()),
                status: Some(200),
                server: None,
            }),
            tls: Some(Tls {
                subject: "CN=a".into(),
                issuer: "CN=b".into(),
                expired: false,
                self_signed: true,
                sha256: "ab".repeat(32),
                not_after: -1_700_000_000,
            }),
            ssh: Some(Ssh {
                hassh: None,
                key: Some("k".into()),
            }),
            screen: Some(Screen {
                image: Some("cd".repeat(32)),
                text: Some("ALARM".into()),
                faces: Some(2),
                logos: vec!["acme".into()],
                tags: vec![],
                emails: vec!["a@example.com".into()],
            }),
            leaks: vec!["a@example.com".into()],
            modules: ["service".to_string(), "portscan".to_string()].into(),
            minions: ["m1".to_string()].into(),
            providers: BTreeSet::new(),
            first_seen_ms: 1,
            last_seen_ms: 1_793_491_200_000,
            cursor: 99,
            findings: 4,
            ext,
        }
    }

    #[test]
    fn round_trips_full_and_empty_rows() {
        for s in [
            full(),
            ServiceState::default(),
            ServiceState {
                ip: Some("10.1.2.3".parse().unwrap()),
                ..Default::default()
            },
        ] {
            let mut b = Vec::new();
            encode(&s, &mut b);
            assert_eq!(decode(&b), Ok(s));
        }
    }

    #[test]
    fn rejects_truncated_and_foreign_bytes() {
        let mut b = Vec::new();
        encode(&full(), &mut b);
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "prefix of {n} bytes decoded");
        }
        let mut extra = b.clone();
        extra.push(0);
        assert_eq!(decode(&extra), Err(DecodeError("trailing bytes")));
        assert_eq!(
            decode(b"{\"key\":\"1/x/2\"}"),
            Err(DecodeError("unknown row format"))
        );
        // a huge length prefix is refused before any allocation
        assert!(decode(&[ROW_FORMAT, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
