//! Protocol payloads with a per-send identifier, and the validators that accept only the reply
//! to that very request (DNS query id, NTP origin timestamp, SNMP request id / msgID, NetBIOS
//! transaction id, memcached request id). SSDP has no identifier: its reply is only checked for
//! the shape of a search response.
//!
//! Everything here is pure: `build(id)` makes bytes, `validate(reply, id)` reads bytes. Replies
//! are hostile input: every length is checked, nothing panics (fuzzed in `tests/udp.rs`).

use serde::{Deserialize, Serialize};

/// A protocol we speak ourselves (as opposed to the nmap-service-probes UDP probes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proto {
    /// `version.bind` CH TXT query.
    Dns,
    /// NTPv4 client request (mode 3).
    Ntp,
    /// SNMPv2c GetRequest sysDescr.0, community `public`.
    SnmpV2c,
    /// SNMPv3 engine discovery (empty USM user): every v3 agent answers with its engine id.
    SnmpV3,
    /// SSDP M-SEARCH ssdp:all.
    Ssdp,
    /// NetBIOS name service NBSTAT `*` query.
    NetBios,
    /// memcached UDP frame + `version`.
    Memcached,
}

impl Proto {
    pub const ALL: [Proto; 7] = [
        Proto::Dns,
        Proto::Ntp,
        Proto::SnmpV2c,
        Proto::SnmpV3,
        Proto::Ssdp,
        Proto::NetBios,
        Proto::Memcached,
    ];

    /// Probe name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Dns => "udp:dns-version-bind",
            Proto::Ntp => "udp:ntp-client",
            Proto::SnmpV2c => "udp:snmpv2c-get-sysdescr",
            Proto::SnmpV3 => "udp:snmpv3-discovery",
            Proto::Ssdp => "udp:ssdp-msearch",
            Proto::NetBios => "udp:netbios-nbstat",
            Proto::Memcached => "udp:memcached-version",
        }
    }

    /// The protocol's well-known ports (tried first, and the only ones sent in `hinted_only` mode).
    pub fn ports(self) -> &'static [u16] {
        match self {
            Proto::Dns => &[53, 5353],
            Proto::Ntp => &[123],
            Proto::SnmpV2c | Proto::SnmpV3 => &[161, 162],
            Proto::Ssdp => &[1900],
            Proto::NetBios => &[137],
            Proto::Memcached => &[11211],
        }
    }

    /// The request for identifier `id`.
    pub fn build(self, id: u64) -> Vec<u8> {
        match self {
            Proto::Dns => dns_query(id as u16),
            Proto::Ntp => ntp_request(id),
            Proto::SnmpV2c => snmp_v2c_get(id as u32 & 0x7fff_ffff),
            Proto::SnmpV3 => snmp_v3_discovery(id as u32 & 0x7fff_ffff),
            Proto::Ssdp => SSDP_MSEARCH.to_vec(),
            Proto::NetBios => nbstat_query(id as u16),
            Proto::Memcached => memcached_version(id as u16),
        }
    }

    /// Whether `reply` answers the request built with `id`; what it says when it does.
    pub fn validate(self, reply: &[u8], id: u64) -> Option<Answer> {
        match self {
            Proto::Dns => dns_answer(reply, id as u16),
            Proto::Ntp => ntp_answer(reply, id),
            Proto::SnmpV2c => snmp_v2c_answer(reply, id as u32 & 0x7fff_ffff),
            Proto::SnmpV3 => snmp_v3_answer(reply, id as u32 & 0x7fff_ffff),
            Proto::Ssdp => ssdp_answer(reply),
            Proto::NetBios => nbstat_answer(reply, id as u16),
            Proto::Memcached => memcached_answer(reply, id as u16),
        }
    }
}

/// What a validated reply says.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// nmap service name (`domain`, `ntp`, `snmp`, `upnp`, `netbios-ns`, `memcached`).
    pub service: String,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    /// What was checked (`dns id 0x1a2b`, `ntp origin timestamp`, ...).
    pub check: String,
}

fn answer(service: &str, check: String) -> Answer {
    Answer {
        service: service.into(),
        check,
        ..Default::default()
    }
}

// ------------------------------------------------------------------------------------------ DNS

fn dns_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(30);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD, 1 question
    q.extend_from_slice(b"\x07version\x04bind\x00");
    q.extend_from_slice(&[0, 16, 0, 3]); // TXT, CH
    q
}

/// Skips a (possibly compressed) DNS name starting at `i`; returns the index after it.
fn dns_skip_name(m: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..128 {
        let l = *m.get(i)?;
        if l == 0 {
            return Some(i + 1);
        }
        if l & 0xc0 == 0xc0 {
            m.get(i + 1)?;
            return Some(i + 2);
        }
        if l & 0xc0 != 0 {
            return None;
        }
        i += 1 + l as usize;
    }
    None
}

fn be16(m: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]))
}

fn dns_answer(m: &[u8], id: u16) -> Option<Answer> {
    if m.len() < 12 || be16(m, 0)? != id || m[2] & 0x80 == 0 {
        return None;
    }
    let rcode = m[3] & 0x0f;
    let qd = be16(m, 4)?;
    let an = be16(m, 6)?;
    let mut a = answer("domain", format!("dns id {id:#06x}, QR set"));
    let mut i = 12;
    for _ in 0..qd.min(8) {
        i = dns_skip_name(m, i)? + 4;
    }
    let mut txt = None;
    for _ in 0..an.min(16) {
        i = dns_skip_name(m, i)?;
        let ty = be16(m, i)?;
        let rdlen = be16(m, i + 8)? as usize;
        let rd = m.get(i + 10..i + 10 + rdlen)?;
        i += 10 + rdlen;
        if ty == 16 && !rd.is_empty() {
            let l = rd[0] as usize;
            if let Some(s) = rd.get(1..1 + l) {
                txt = Some(String::from_utf8_lossy(s).into_owned());
                break;
            }
        }
    }
    match txt {
        Some(v) => {
            let (p, ver, info) = dns_product(&v);
            a.product = p;
            a.version = ver;
            a.info = info;
        }
        None => {
            let r = match rcode {
                0 => "no version.bind answer",
                1 => "version.bind: FORMERR",
                2 => "version.bind: SERVFAIL",
                3 => "version.bind: NXDOMAIN",
                4 => "version.bind: NOTIMP",
                5 => "version.bind: REFUSED",
                _ => "version.bind: error",
            };
            a.info = Some(r.into());
        }
    }
    Some(a)
}

/// Product and version from a `version.bind` string.
pub fn dns_product(v: &str) -> (Option<String>, Option<String>, Option<String>) {
    let v = v.trim();
    let lower = v.to_ascii_lowercase();
    let word_ver = |prefix: &str| {
        lower.strip_prefix(prefix).map(|rest| {
            v[v.len() - rest.len()..]
                .trim_start_matches([' ', '-', '/'])
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_string()
        })
    };
    let some = |s: String| (!s.is_empty()).then_some(s);
    for (prefix, product) in [
        ("unbound", "Unbound"),
        ("dnsmasq", "dnsmasq"),
        ("powerdns recursor", "PowerDNS Recursor"),
        (
            "powerdns authoritative server",
            "PowerDNS Authoritative Server",
        ),
        ("knot dns", "Knot DNS"),
        ("knot resolver", "Knot Resolver"),
        ("nsd", "NSD"),
        ("coredns", "CoreDNS"),
    ] {
        if let Some(ver) = word_ver(prefix) {
            return (Some(product.into()), some(ver), None);
        }
    }
    // BIND answers its bare version (`9.18.28-1~deb12u2-Debian`).
    if let Some(rest) = v.strip_prefix("9.")
        && rest.starts_with(|c: char| c.is_ascii_digit())
    {
        let ver: String = v
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let info = v[ver.len()..].trim_start_matches('-');
        return (
            Some("ISC BIND".into()),
            Some(ver.trim_end_matches('.').to_string()),
            (!info.is_empty()).then(|| info.to_string()),
        );
    }
    (None, None, Some(format!("version.bind: {v}")))
}

// ------------------------------------------------------------------------------------------ NTP

fn ntp_request(id: u64) -> Vec<u8> {
    let mut p = vec![0u8; 48];
    p[0] = 0x23; // LI 0, VN 4, mode 3 (client)
    p[40..48].copy_from_slice(&id.to_be_bytes());
    p
}

fn ntp_answer(m: &[u8], id: u64) -> Option<Answer> {
    if m.len() < 48 || m[0] & 7 != 4 || m[24..32] != id.to_be_bytes() {
        return None;
    }
    let li = m[0] >> 6;
    let vn = (m[0] >> 3) & 7;
    let stratum = m[1];
    let mut a = answer(
        "ntp",
        "ntp mode 4, origin timestamp = our transmit timestamp".into(),
    );
    a.product = Some("NTP".into());
    a.version = Some(format!("v{vn}"));
    let kind = match stratum {
        1 => "primary server".to_string(),
        2..=15 => "secondary server".to_string(),
        _ => "unsynchronized".to_string(),
    };
    let refid = if stratum == 1 {
        let r: String = m[12..16]
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| b as char)
            .filter(|c| c.is_ascii_graphic())
            .collect();
        format!(", refid {r}")
    } else {
        String::new()
    };
    let unsync = if li == 3 && (1..=15).contains(&stratum) {
        "; unsynchronized"
    } else {
        ""
    };
    a.info = Some(format!("{kind}{unsync}; stratum {stratum}{refid}"));
    Some(a)
}

// ----------------------------------------------------------------------------------------- SNMP

/// One BER TLV: (tag, content, rest).
fn ber(m: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *m.first()?;
    let l0 = *m.get(1)?;
    let (len, hdr) = if l0 < 0x80 {
        (l0 as usize, 2)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for k in 0..n {
            len = (len << 8) | *m.get(2 + k)? as usize;
        }
        (len, 2 + n)
    };
    let content = m.get(hdr..hdr.checked_add(len)?)?;
    Some((tag, content, &m[hdr + len..]))
}

fn ber_int(c: &[u8]) -> Option<i64> {
    if c.is_empty() || c.len() > 8 {
        return None;
    }
    let mut v: i64 = if c[0] & 0x80 != 0 { -1 } else { 0 };
    for &b in c {
        v = (v << 8) | b as i64;
    }
    Some(v)
}

fn ber_wrap(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let n = content.len();
    if n < 0x80 {
        v.push(n as u8);
    } else {
        v.push(0x82);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    }
    v.extend_from_slice(content);
    v
}

fn ber_u32(v: u32) -> Vec<u8> {
    // Four bytes, high bit clear by construction (ids are masked to 31 bits).
    ber_wrap(0x02, &v.to_be_bytes())
}

const SYSDESCR_OID: &[u8] = &[0x2b, 6, 1, 2, 1, 1, 1, 0];

fn snmp_v2c_get(reqid: u32) -> Vec<u8> {
    let varbind = ber_wrap(
        0x30,
        &[ber_wrap(0x06, SYSDESCR_OID), vec![0x05, 0x00]].concat(),
    );
    let pdu = ber_wrap(
        0xa0,
        &[
            ber_u32(reqid),
            vec![0x02, 1, 0, 0x02, 1, 0],
            ber_wrap(0x30, &varbind),
        ]
        .concat(),
    );
    ber_wrap(
        0x30,
        &[vec![0x02, 1, 1], ber_wrap(0x04, b"public"), pdu].concat(),
    )
}

fn snmp_v2c_answer(m: &[u8], reqid: u32) -> Option<Answer> {
    let (t, msg, _) = ber(m)?;
    if t != 0x30 {
        return None;
    }
    let (t, ver, rest) = ber(msg)?;
    if t != 0x02 || !matches!(ber_int(ver)?, 0 | 1) {
        return None;
    }
    let (t, community, rest) = ber(rest)?;
    let (pt, pdu, _) = ber(rest)?;
    if t != 0x04 || pt != 0xa2 {
        return None;
    }
    let (t, id, rest) = ber(pdu)?;
    if t != 0x02 || ber_int(id)? != reqid as i64 {
        return None;
    }
    let (_, err, rest) = ber(rest)?;
    let (_, _idx, rest) = ber(rest)?;
    let mut a = answer("snmp", format!("snmp request-id {reqid:#x}"));
    a.info = Some(format!("community {}", String::from_utf8_lossy(community)));
    if ber_int(err) == Some(0)
        && let Some((0x30, vbl, _)) = ber(rest)
        && let Some((0x30, vb, _)) = ber(vbl)
        && let Some((0x06, oid, rest)) = ber(vb)
        && oid == SYSDESCR_OID
        && let Some((0x04, descr, _)) = ber(rest)
    {
        let d = String::from_utf8_lossy(descr).into_owned();
        if let Some(host) = d.strip_prefix("Linux ").and_then(|r| r.split(' ').next()) {
            a.os = Some("Linux".into());
            a.hostname = Some(host.to_string());
        }
        a.info = Some(format!(
            "community {}; sysDescr: {}",
            String::from_utf8_lossy(community),
            d.chars().take(200).collect::<String>()
        ));
    }
    Some(a)
}

fn snmp_v3_discovery(msgid: u32) -> Vec<u8> {
    let global = ber_wrap(
        0x30,
        &[
            ber_u32(msgid),
            vec![0x02, 3, 0x00, 0xff, 0xe3], // msgMaxSize 65507
            vec![0x04, 1, 0x04],             // flags: reportable
            vec![0x02, 1, 3],                // USM
        ]
        .concat(),
    );
    let usm = ber_wrap(
        0x30,
        &[0x04, 0, 0x02, 1, 0, 0x02, 1, 0, 0x04, 0, 0x04, 0, 0x04, 0],
    );
    let pdu = ber_wrap(
        0xa0,
        &[ber_u32(msgid), vec![0x02, 1, 0, 0x02, 1, 0, 0x30, 0]].concat(),
    );
    let scoped = ber_wrap(0x30, &[vec![0x04, 0, 0x04, 0], pdu].concat());
    ber_wrap(
        0x30,
        &[vec![0x02, 1, 3], global, ber_wrap(0x04, &usm), scoped].concat(),
    )
}

/// Enterprise number of an SNMP engine id → product.
fn snmp_enterprise(n: u32) -> Option<&'static str> {
    Some(match n {
        8072 => "net-snmp",
        2021 => "ucd-snmp",
        9 => "Cisco SNMP service",
        311 => "Microsoft SNMP service",
        4526 => "Netgear SNMP service",
        2636 => "Juniper SNMP service",
        11 => "HP SNMP service",
        _ => return None,
    })
}

fn snmp_v3_answer(m: &[u8], msgid: u32) -> Option<Answer> {
    let (t, msg, _) = ber(m)?;
    if t != 0x30 {
        return None;
    }
    let (t, ver, rest) = ber(msg)?;
    if t != 0x02 || ber_int(ver)? != 3 {
        return None;
    }
    let (t, global, rest) = ber(rest)?;
    if t != 0x30 {
        return None;
    }
    let (t, id, _) = ber(global)?;
    if t != 0x02 || ber_int(id)? != msgid as i64 {
        return None;
    }
    let mut a = answer("snmp", format!("snmpv3 msgID {msgid:#x}"));
    let (t, sec, _) = ber(rest)?;
    if t == 0x04
        && let Some((0x30, usm, _)) = ber(sec)
        && let Some((0x04, engine, rest)) = ber(usm)
    {
        let hex: String = engine.iter().map(|b| format!("{b:02x}")).collect();
        let mut info = format!("SNMPv3; engine id {hex}");
        if let Some((0x02, boots, rest)) = ber(rest)
            && let Some((0x02, time, _)) = ber(rest)
        {
            info += &format!(
                "; boots {}; up {} s",
                ber_int(boots).unwrap_or(0),
                ber_int(time).unwrap_or(0)
            );
        }
        if engine.len() >= 4 && engine[0] & 0x80 != 0 {
            let ent = u32::from_be_bytes([engine[0] & 0x7f, engine[1], engine[2], engine[3]]);
            a.product = snmp_enterprise(ent).map(str::to_string);
            if a.product.is_none() {
                info += &format!("; enterprise {ent}");
            }
        }
        a.info = Some(info);
    }
    Some(a)
}

// ----------------------------------------------------------------------------------------- SSDP

const SSDP_MSEARCH: &[u8] = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";

fn ssdp_answer(m: &[u8]) -> Option<Answer> {
    let text = std::str::from_utf8(m.get(..m.len().min(4096))?).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    let header = |name: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    // A search response carries ST and USN (UPnP 1.1, 1.3.3); anything else is not SSDP.
    let st = header("ST")?;
    header("USN")?;
    let mut a = answer(
        "upnp",
        "ssdp search response (ST + USN; the protocol has no id)".into(),
    );
    if let Some(server) = header("SERVER") {
        // `OS/version UPnP/1.0 product/version`
        let parts: Vec<&str> = server.split_whitespace().collect();
        if let Some(last) = parts.last().filter(|_| parts.len() >= 3) {
            let (p, v) = last.split_once('/').unwrap_or((last, ""));
            a.product = Some(p.to_string());
            a.version = (!v.is_empty()).then(|| v.to_string());
            a.os = Some(parts[0].to_string());
        }
        a.info = Some(format!("SERVER: {server}; ST: {st}"));
    } else {
        a.info = Some(format!("ST: {st}"));
    }
    Some(a)
}

// -------------------------------------------------------------------------------------- NetBIOS

fn nbstat_query(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(50);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.push(32);
    // First-level encoding of "*" padded with NULs to 16 bytes.
    q.extend_from_slice(b"CK");
    q.extend_from_slice(&[b'A'; 30]);
    q.push(0);
    q.extend_from_slice(&[0, 0x21, 0, 1]); // NBSTAT, IN
    q
}

fn nbstat_answer(m: &[u8], id: u16) -> Option<Answer> {
    if m.len() < 12 || be16(m, 0)? != id || m[2] & 0x80 == 0 || be16(m, 6)? == 0 {
        return None;
    }
    let i = dns_skip_name(m, 12)?;
    if be16(m, i)? != 0x21 {
        return None;
    }
    let rdlen = be16(m, i + 8)? as usize;
    let rd = m.get(i + 10..i + 10 + rdlen)?;
    let n = *rd.first()? as usize;
    let mut a = answer("netbios-ns", format!("netbios transaction id {id:#06x}"));
    let mut host = None;
    let mut group = None;
    for k in 0..n.min(64) {
        let e = rd.get(1 + k * 18..1 + (k + 1) * 18)?;
        let name = String::from_utf8_lossy(&e[..15]).trim_end().to_string();
        let suffix = e[15];
        let is_group = e[16] & 0x80 != 0;
        if suffix == 0 && !is_group && host.is_none() {
            host = Some(name);
        } else if suffix == 0 && is_group && group.is_none() {
            group = Some(name);
        }
    }
    a.hostname = host.clone();
    a.info = Some(match (host, group) {
        (Some(h), Some(g)) => format!("NetBIOS name: {h}; workgroup: {g}"),
        (Some(h), None) => format!("NetBIOS name: {h}"),
        (None, Some(g)) => format!("workgroup: {g}"),
        _ => format!("{n} names"),
    });
    Some(a)
}

// ------------------------------------------------------------------------------------ memcached

fn memcached_version(id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(17);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0]); // seq 0 of 1, reserved
    q.extend_from_slice(b"version\r\n");
    q
}

fn memcached_answer(m: &[u8], id: u16) -> Option<Answer> {
    if m.len() < 8 || be16(m, 0)? != id {
        return None;
    }
    let body = &m[8..];
    let mut a = answer("memcached", format!("memcached request id {id:#06x}"));
    if let Some(v) = body.strip_prefix(b"VERSION ") {
        let v: String = String::from_utf8_lossy(v)
            .chars()
            .take_while(|c| !c.is_whitespace())
            .take(64)
            .collect();
        a.product = Some("Memcached".into());
        a.version = (!v.is_empty()).then_some(v);
    } else if body.starts_with(b"ERROR") || body.starts_with(b"SERVER_ERROR") {
        a.product = Some("Memcached".into());
    } else {
        return None;
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_requests_are_well_formed_ber() {
        for p in [Proto::SnmpV2c, Proto::SnmpV3] {
            let b = p.build(0x1234_5678_9abc);
            let (t, c, rest) = ber(&b).unwrap();
            assert_eq!(t, 0x30);
            assert!(rest.is_empty());
            assert_eq!(c.len() + 2, b.len());
        }
        // Same bytes as the classic sysDescr.0 get (length 41).
        assert_eq!(Proto::SnmpV2c.build(1).len(), 43);
        assert_eq!(Proto::SnmpV3.build(1).len(), 64);
    }

    #[test]
    fn dns_reply_needs_our_id_and_qr() {
        let q = Proto::Dns.build(0xbeef);
        let mut r = q.clone();
        r[2] |= 0x80;
        r[7] = 1; // one answer
        r.extend_from_slice(&[0xc0, 12, 0, 16, 0, 3, 0, 0, 0, 0, 0, 15, 14]);
        r.extend_from_slice(b"unbound 1.17.1");
        let a = Proto::Dns.validate(&r, 0xbeef).unwrap();
        assert_eq!(a.product.as_deref(), Some("Unbound"));
        assert_eq!(a.version.as_deref(), Some("1.17.1"));
        assert!(Proto::Dns.validate(&r, 0xbeee).is_none());
        assert!(
            Proto::Dns.validate(&q, 0xbeef).is_none(),
            "a query echoed back is no answer"
        );
    }

    #[test]
    fn bind_and_other_version_strings() {
        let (p, v, i) = dns_product("9.18.28-1~deb12u2-Debian");
        assert_eq!(p.as_deref(), Some("ISC BIND"));
        assert_eq!(v.as_deref(), Some("9.18.28"));
        assert_eq!(i.as_deref(), Some("1~deb12u2-Debian"));
        assert_eq!(dns_product("dnsmasq-2.89").1.as_deref(), Some("2.89"));
        assert_eq!(dns_product("none of your business").0, None);
    }

    #[test]
    fn ntp_reply_needs_our_origin_timestamp() {
        let id: u64 = 0x0102_0304_0506_0708;
        let mut r = vec![0u8; 48];
        r[0] = 0x24;
        r[1] = 3;
        r[24..32].copy_from_slice(&id.to_be_bytes());
        let a = Proto::Ntp.validate(&r, id).unwrap();
        assert_eq!(a.version.as_deref(), Some("v4"));
        assert!(a.info.unwrap().starts_with("secondary server"));
        assert!(Proto::Ntp.validate(&r, id + 1).is_none());
        r[0] = 0x23; // a client request reflected back
        assert!(Proto::Ntp.validate(&r, id).is_none());
    }

    #[test]
    fn memcached_and_netbios_ids() {
        let mut r = vec![0x12, 0x34, 0, 0, 0, 1, 0, 0];
        r.extend_from_slice(b"VERSION 1.6.18\r\n");
        let a = Proto::Memcached.validate(&r, 0x1234).unwrap();
        assert_eq!(a.version.as_deref(), Some("1.6.18"));
        assert!(Proto::Memcached.validate(&r, 0x1235).is_none());

        let mut n = nbstat_query(7);
        n[2] = 0x84;
        n[5] = 0; // no question in the reply
        n[7] = 1;
        let mut reply = n[..12].to_vec();
        reply.extend_from_slice(&n[12..46]); // the name
        reply.extend_from_slice(&[0, 0x21, 0, 1, 0, 0, 0, 0]);
        let mut rd = vec![2u8];
        let mut e = *b"HOST1          \x00\x04\x00";
        rd.extend_from_slice(&e);
        e = *b"WORKGROUP      \x00\x84\x00";
        rd.extend_from_slice(&e);
        reply.extend_from_slice(&(rd.len() as u16).to_be_bytes());
        reply.extend_from_slice(&rd);
        let a = Proto::NetBios.validate(&reply, 7).unwrap();
        assert_eq!(a.hostname.as_deref(), Some("HOST1"));
        assert_eq!(
            a.info.as_deref(),
            Some("NetBIOS name: HOST1; workgroup: WORKGROUP")
        );
        assert!(Proto::NetBios.validate(&reply, 8).is_none());
    }

    #[test]
    fn ssdp_needs_st_and_usn() {
        let ok = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\nUSN: uuid:x::upnp:rootdevice\r\nSERVER: Linux/6.1 UPnP/1.0 MiniDLNA/1.3.2\r\n\r\n";
        let a = Proto::Ssdp.validate(ok, 0).unwrap();
        assert_eq!(a.product.as_deref(), Some("MiniDLNA"));
        assert_eq!(a.version.as_deref(), Some("1.3.2"));
        assert!(
            Proto::Ssdp
                .validate(b"HTTP/1.1 200 OK\r\nServer: nginx\r\n\r\n", 0)
                .is_none()
        );
    }

    #[test]
    fn hostile_replies_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for n in 0..4000 {
            let len = n % 90;
            let mut m = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                m.push(seed as u8);
            }
            // Also mutate valid requests (the most structured input we have).
            for p in Proto::ALL {
                let _ = p.validate(&m, seed);
                let mut b = p.build(1);
                if !b.is_empty() {
                    let k = (seed as usize) % b.len();
                    b[k] ^= seed as u8;
                    b.truncate(len.max(1).min(b.len()));
                }
                let _ = p.validate(&b, 1);
            }
        }
    }
}
