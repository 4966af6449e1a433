//! Other tools' output in: nmap XML (`-oX`), masscan JSON (`-oJ`) and zgrab2 JSON lines, parsed
//! into [`Imported`] services (typed serde structs for the JSON formats, roxmltree for XML). The
//! CLI stores them as the findings of an import job; the follower indexes them like any other.
//! Bad input gives a precise error (file, line or element) and the rest of the file goes on.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// One service another tool saw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imported {
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub transport: String,
    pub open: bool,
    pub service: Option<String>,
    pub tunnel: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub cpe: Vec<String>,
    pub banner: Option<String>,
    pub http_title: Option<String>,
    pub http_status: Option<u16>,
    pub http_server: Option<String>,
    /// Unix ms (0 = unknown: the import time is used).
    pub at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    NmapXml,
    MasscanJson,
    Zgrab2,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::NmapXml => "nmap",
            Format::MasscanJson => "masscan",
            Format::Zgrab2 => "zgrab2",
        }
    }

    /// By content: `<` → nmap XML; a JSON line with `"data"` → zgrab2; else masscan.
    pub fn sniff(text: &str) -> Format {
        let t = text.trim_start();
        if t.starts_with('<') {
            Format::NmapXml
        } else if t
            .lines()
            .next()
            .is_some_and(|l| l.trim_start().starts_with('{') && l.contains("\"data\""))
        {
            Format::Zgrab2
        } else {
            Format::MasscanJson
        }
    }
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub services: Vec<Imported>,
    /// (where, why) of records skipped.
    pub rejected: Vec<(String, String)>,
}

/// Largest input accepted (bytes).
pub const MAX_INPUT: usize = 1 << 30;

pub fn parse(text: &str, f: Format) -> Result<Parsed, String> {
    if text.len() > MAX_INPUT {
        return Err(format!("input of {} bytes is over {MAX_INPUT}", text.len()));
    }
    match f {
        Format::NmapXml => nmap(text),
        Format::MasscanJson => Ok(masscan(text)),
        Format::Zgrab2 => Ok(zgrab2(text)),
    }
}

fn attr(n: &roxmltree::Node, a: &str) -> Option<String> {
    n.attribute(a)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty())
}

fn nmap(text: &str) -> Result<Parsed, String> {
    let doc = roxmltree::Document::parse_with_options(
        text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("not nmap XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "nmaprun" {
        return Err(format!(
            "not nmap XML: root element is <{}>, expected <nmaprun>",
            root.tag_name().name()
        ));
    }
    let start: u64 = root
        .attribute("start")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = Parsed::default();
    for host in root.children().filter(|n| n.has_tag_name("host")) {
        let pos = doc.text_pos_at(host.range().start);
        let at = host
            .attribute("endtime")
            .or(host.attribute("starttime"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(start)
            * 1000;
        let addr = host
            .children()
            .filter(|n| n.has_tag_name("address"))
            .find(|n| matches!(n.attribute("addrtype"), Some("ipv4") | Some("ipv6")))
            .and_then(|n| n.attribute("addr"));
        let ip: IpAddr = match addr.map(|a| a.parse()) {
            Some(Ok(ip)) => ip,
            Some(Err(_)) => {
                out.rejected.push((
                    format!("line {}", pos.row),
                    format!("bad address {:?}", addr.unwrap_or("")),
                ));
                continue;
            }
            None => {
                out.rejected.push((
                    format!("line {}", pos.row),
                    "host without an IPv4/IPv6 address".into(),
                ));
                continue;
            }
        };
        for port in host.descendants().filter(|n| n.has_tag_name("port")) {
            let ppos = doc.text_pos_at(port.range().start);
            let Some(p) = port.attribute("portid").and_then(|s| s.parse::<u16>().ok()) else {
                out.rejected.push((
                    format!("line {}", ppos.row),
                    format!("bad portid {:?}", port.attribute("portid").unwrap_or("")),
                ));
                continue;
            };
            let state = port
                .children()
                .find(|n| n.has_tag_name("state"))
                .and_then(|n| n.attribute("state"))
                .unwrap_or("");
            if !state.starts_with("open") {
                continue;
            }
            let mut s = Imported {
                ip: Some(ip),
                port: p,
                transport: port.attribute("protocol").unwrap_or("tcp").into(),
                open: true,
                at_ms: at,
                ..Default::default()
            };
            if let Some(svc) = port.children().find(|n| n.has_tag_name("service")) {
                s.service = attr(&svc, "name");
                s.tunnel = attr(&svc, "tunnel");
                s.product = attr(&svc, "product");
                s.version = attr(&svc, "version");
                s.cpe = svc
                    .children()
                    .filter(|n| n.has_tag_name("cpe"))
                    .filter_map(|n| n.text())
                    .map(String::from)
                    .collect();
            }
            for sc in port.children().filter(|n| n.has_tag_name("script")) {
                let out_text = attr(&sc, "output");
                match sc.attribute("id") {
                    Some("banner") => s.banner = out_text,
                    Some("http-title") => s.http_title = out_text,
                    Some("http-server-header") => s.http_server = out_text,
                    _ => {}
                }
            }
            out.services.push(s);
        }
    }
    Ok(out)
}

#[derive(Deserialize)]
struct MasscanRec {
    ip: String,
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    ports: Vec<MasscanPort>,
}

#[derive(Deserialize)]
struct MasscanPort {
    port: u16,
    #[serde(default)]
    proto: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    service: Option<MasscanService>,
}

#[derive(Deserialize)]
struct MasscanService {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    banner: Option<String>,
}

fn masscan_ts(v: &Option<serde_json::Value>) -> u64 {
    let secs = match v {
        Some(serde_json::Value::String(s)) => s.parse::<u64>().unwrap_or(0),
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    secs * 1000
}

/// masscan `-oJ`: a JSON array of records, one per line with commas between (older versions end
/// with a `{"finished": 1}` record or a dangling comma): read line by line.
fn masscan(text: &str) -> Parsed {
    let mut out = Parsed::default();
    // port records of one ip:port merged (masscan writes the open port and banners separately)
    let mut merged: BTreeMap<(IpAddr, u16, String), Imported> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let l = line
            .trim()
            .trim_start_matches(',')
            .trim_end_matches(',')
            .trim();
        if l.is_empty() || l == "[" || l == "]" || !l.starts_with('{') {
            continue;
        }
        let rec: MasscanRec = match serde_json::from_str(l) {
            Ok(r) => r,
            Err(e) => {
                if !l.contains("\"finished\"") {
                    out.rejected
                        .push((format!("line {}", i + 1), e.to_string()));
                }
                continue;
            }
        };
        let Ok(ip) = rec.ip.parse::<IpAddr>() else {
            out.rejected.push((
                format!("line {}", i + 1),
                format!("bad address {:?}", rec.ip),
            ));
            continue;
        };
        let at = masscan_ts(&rec.timestamp);
        for p in rec.ports {
            let proto = p.proto.unwrap_or_else(|| "tcp".into());
            let e = merged
                .entry((ip, p.port, proto.clone()))
                .or_insert_with(|| Imported {
                    ip: Some(ip),
                    port: p.port,
                    transport: proto,
                    at_ms: at,
                    ..Default::default()
                });
            if p.status.as_deref().is_none_or(|s| s == "open") {
                e.open = true;
            }
            if let Some(s) = p.service {
                e.open = true;
                if let Some(b) = s.banner.filter(|b| !b.is_empty()) {
                    match s.name.as_deref() {
                        Some("title") => e.http_title = Some(b),
                        Some("http.server") => e.http_server = Some(b),
                        _ => e.banner = Some(b),
                    }
                }
                if let Some(n) = s
                    .name
                    .filter(|n| !matches!(n.as_str(), "title" | "http.server"))
                {
                    e.service.get_or_insert(n);
                }
            }
        }
    }
    out.services = merged.into_values().filter(|s| s.open).collect();
    out
}

#[derive(Deserialize)]
struct ZgrabLine {
    ip: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, ZgrabModule>,
}

#[derive(Deserialize)]
struct ZgrabModule {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    result: Option<ZgrabResult>,
}

#[derive(Deserialize, Default)]
struct ZgrabResult {
    #[serde(default)]
    response: Option<ZgrabHttp>,
    /// ssh
    #[serde(default)]
    server_id: Option<ZgrabSshId>,
    /// banner-style modules (ftp, smtp, ...)
    #[serde(default)]
    banner: Option<String>,
}

#[derive(Deserialize)]
struct ZgrabHttp {
    #[serde(default)]
    status_code: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    body: Option<String>,
}

#[derive(Deserialize)]
struct ZgrabSshId {
    #[serde(default)]
    raw: Option<String>,
    #[serde(default)]
    software: Option<String>,
}

fn default_port(module: &str) -> u16 {
    match module {
        "http" => 80,
        "https" | "tls" => 443,
        "ssh" => 22,
        "ftp" => 21,
        "smtp" => 25,
        "redis" => 6379,
        "mysql" => 3306,
        "mqtt" => 1883,
        _ => 0,
    }
}

fn html_title(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let a = lower.find("<title")?;
    let a = a + lower[a..].find('>')? + 1;
    let b = a + lower[a..].find("</title")?;
    let t = body.get(a..b)?.trim();
    (!t.is_empty()).then(|| t.chars().take(512).collect())
}

/// zgrab2 JSON lines: one target per line, `data.<module>` per scan module.
fn zgrab2(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let rec: ZgrabLine = match serde_json::from_str(l) {
            Ok(r) => r,
            Err(e) => {
                out.rejected
                    .push((format!("line {}", i + 1), e.to_string()));
                continue;
            }
        };
        let Some(Ok(ip)) = rec.ip.as_deref().map(str::parse::<IpAddr>) else {
            out.rejected.push((
                format!("line {}", i + 1),
                format!("bad or missing ip {:?}", rec.ip),
            ));
            continue;
        };
        for (name, m) in rec.data {
            if m.status.as_deref() != Some("success") {
                continue;
            }
            let port = m.port.unwrap_or_else(|| default_port(&name));
            let at = m
                .timestamp
                .as_deref()
                .and_then(|t| crate::compile::parse_date(t.get(..19).unwrap_or(t)))
                .map(|(a, _)| a as u64)
                .unwrap_or(0);
            let mut s = Imported {
                ip: Some(ip),
                port,
                transport: "tcp".into(),
                open: true,
                service: Some(m.protocol.clone().unwrap_or_else(|| name.clone())),
                at_ms: at,
                ..Default::default()
            };
            let r = m.result.unwrap_or_default();
            if let Some(h) = r.response {
                s.http_status = h.status_code;
                s.http_server = h
                    .headers
                    .get("server")
                    .and_then(|v| v.as_array())
                    .and_then(|a| a.first())
                    .and_then(|v| v.as_str())
                    .map(String::from);
                s.http_title = h.body.as_deref().and_then(html_title);
            }
            if let Some(id) = r.server_id {
                s.banner = id.raw;
                s.product = id.software;
            }
            if let Some(b) = r.banner {
                s.banner = Some(b);
            }
            out.services.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmap_xml() {
        let x = r#"<?xml version="1.0"?>
<nmaprun start="1700000000">
<host endtime="1700000100"><address addr="127.0.0.1" addrtype="ipv4"/><address addr="00:11" addrtype="mac"/>
<ports>
<port protocol="tcp" portid="22"><state state="open"/><service name="ssh" product="OpenSSH" version="9.2p1"><cpe>cpe:/a:openbsd:openssh:9.2p1</cpe></service></port>
<port protocol="tcp" portid="23"><state state="closed"/></port>
<port protocol="tcp" portid="443"><state state="open"/><service name="http" tunnel="ssl"/><script id="http-title" output="Router"/></port>
<port protocol="tcp" portid="99999"><state state="open"/></port>
</ports></host>
<host><address addr="not-an-ip" addrtype="ipv4"/></host>
</nmaprun>"#;
        assert_eq!(Format::sniff(x), Format::NmapXml);
        let p = parse(x, Format::NmapXml).unwrap();
        assert_eq!(p.services.len(), 2);
        assert_eq!(p.services[0].product.as_deref(), Some("OpenSSH"));
        assert_eq!(p.services[0].cpe, ["cpe:/a:openbsd:openssh:9.2p1"]);
        assert_eq!(p.services[0].at_ms, 1_700_000_100_000);
        assert_eq!(p.services[1].tunnel.as_deref(), Some("ssl"));
        assert_eq!(p.services[1].http_title.as_deref(), Some("Router"));
        assert_eq!(p.rejected.len(), 2, "{:?}", p.rejected);
        assert!(p.rejected[0].1.contains("99999"));
        assert!(
            parse("<html/>", Format::NmapXml)
                .unwrap_err()
                .contains("nmaprun")
        );
        assert!(parse("<nmaprun", Format::NmapXml).is_err());
    }

    #[test]
    fn masscan_json() {
        let j = r#"[
{   "ip": "127.0.0.2",   "timestamp": "1700000000", "ports": [ {"port": 80, "proto": "tcp", "status": "open", "reason": "syn-ack", "ttl": 64} ] }
,
{   "ip": "127.0.0.2",   "timestamp": "1700000001", "ports": [ {"port": 80, "proto": "tcp", "service": {"name": "title", "banner": "Welcome"} } ] }
,
{   "ip": "bogus", "ports": [] }
,
{"finished": 1}
]"#;
        assert_eq!(Format::sniff(j), Format::MasscanJson);
        let p = parse(j, Format::MasscanJson).unwrap();
        assert_eq!(p.services.len(), 1);
        assert_eq!(p.services[0].http_title.as_deref(), Some("Welcome"));
        assert_eq!(p.services[0].at_ms, 1_700_000_000_000);
        assert_eq!(p.rejected.len(), 1);
    }

    #[test]
    fn zgrab2_lines() {
        let j = r#"{"ip":"127.0.0.3","data":{"http":{"status":"success","protocol":"http","timestamp":"2026-11-02T10:00:00Z","result":{"response":{"status_code":200,"headers":{"server":["nginx/1.25"]},"body":"<html><head><TITLE> Hi there </TITLE>"}}}}}
{"ip":"127.0.0.3","data":{"ssh":{"status":"success","protocol":"ssh","port":2222,"result":{"server_id":{"raw":"SSH-2.0-OpenSSH_9.2","software":"OpenSSH_9.2"}}}}}
{"ip":"127.0.0.3","data":{"ftp":{"status":"connection-timeout"}}}
not json"#;
        assert_eq!(Format::sniff(j), Format::Zgrab2);
        let p = parse(j, Format::Zgrab2).unwrap();
        assert_eq!(p.services.len(), 2);
        assert_eq!(p.services[0].port, 80);
        assert_eq!(p.services[0].http_title.as_deref(), Some("Hi there"));
        assert_eq!(p.services[0].http_server.as_deref(), Some("nginx/1.25"));
        assert_eq!(p.services[1].port, 2222);
        assert_eq!(p.services[1].banner.as_deref(), Some("SSH-2.0-OpenSSH_9.2"));
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].0, "line 4");
    }
}

/// The typed finding payload of an imported service: a `service` report (what the other tool
/// identified; its HTTP title/server as an HTTP grab), or an `open_port` when it only saw the port.
pub fn to_payload(s: &Imported) -> overlord_core::finding::Payload {
    use overlord_core::finding::Payload;
    use overlord_core::finding::scan::{OpenPort, PortState, Transport};
    use overlord_core::finding::service::{
        Grab, HttpGrab, Service, ServiceBanner, ServiceStatus, ServiceTimings,
    };
    let identified = s.service.is_some()
        || s.product.is_some()
        || s.banner.is_some()
        || s.http_title.is_some()
        || s.http_status.is_some();
    if !identified {
        return Payload::OpenPort(OpenPort {
            state: PortState::Open,
            proto: if s.transport == "udp" {
                Transport::Udp
            } else {
                Transport::Tcp
            },
            method: None,
        });
    }
    let addr = match s.ip {
        Some(IpAddr::V6(a)) => format!("[{a}]:{}", s.port),
        Some(a) => format!("{a}:{}", s.port),
        None => String::new(),
    };
    let http =
        (s.http_title.is_some() || s.http_status.is_some() || s.http_server.is_some()).then(|| {
            Grab::Http(HttpGrab {
                status: s.http_status.unwrap_or(0),
                reason: String::new(),
                http_version: String::new(),
                path: "/".into(),
                headers: s
                    .http_server
                    .iter()
                    .map(|v| ("Server".to_string(), v.clone()))
                    .collect(),
                server: s.http_server.clone(),
                powered_by: None,
                content_type: None,
                title: s.http_title.clone(),
                body_bytes: 0,
                body_truncated: false,
                body_sha256: String::new(),
                redirects: vec![],
                favicon: None,
            })
        });
    Payload::Service(Box::new(Service {
        addr,
        status: if s.product.is_some() || s.service.is_some() {
            ServiceStatus::Identified
        } else {
            ServiceStatus::Unrecognized
        },
        status_detail: Some("imported".into()),
        service: s.service.clone(),
        tunnel: s.tunnel.clone(),
        product: s.product.clone(),
        version: s.version.clone(),
        info: None,
        hostname: None,
        os: None,
        device: None,
        cpe: s.cpe.clone(),
        rule: None,
        softmatch: None,
        tls: None,
        tls_error: None,
        grab: http,
        grab_error: None,
        budget_ms: 0,
        budget_exhausted: false,
        screenshot: None,
        banner: s.banner.as_ref().map(|b| ServiceBanner {
            probe: "import".into(),
            bytes: b.len() as u64,
            truncated: false,
            text: b.clone(),
        }),
        probes_sent: vec![],
        timings: ServiceTimings {
            connect_ms: 0.0,
            banner_ms: None,
            probes_ms: 0.0,
            grab_ms: 0.0,
            total_ms: 0.0,
        },
    }))
}
