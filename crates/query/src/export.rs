//! Rows out: JSON lines, CSV and nmap XML (pure writers over [`ServiceState`]).

use crate::search::format_ms;
use crate::state::ServiceState;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Jsonl,
    Csv,
    NmapXml,
}

/// CSV columns, in order.
pub const CSV_COLUMNS: &[&str] = &[
    "ip",
    "port",
    "transport",
    "open",
    "service",
    "product",
    "version",
    "cpe",
    "http_title",
    "http_status",
    "tls_subject",
    "tls_expired",
    "has_screenshot",
    "tags",
    "job",
    "first_seen",
    "last_seen",
    "minions",
    "providers",
    "banner",
];

pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn csv_header() -> String {
    CSV_COLUMNS.join(",")
}

pub fn csv_row(s: &ServiceState) -> String {
    let o = |x: &Option<String>| x.clone().unwrap_or_default();
    let cols = [
        s.ip.map(|i| i.to_string()).unwrap_or_default(),
        s.port.to_string(),
        s.transport.clone(),
        s.open.to_string(),
        o(&s.service),
        o(&s.product),
        o(&s.version),
        s.cpe.join(" "),
        s.http
            .as_ref()
            .and_then(|h| h.title.clone())
            .unwrap_or_default(),
        s.http
            .as_ref()
            .and_then(|h| h.status)
            .map(|x| x.to_string())
            .unwrap_or_default(),
        s.tls
            .as_ref()
            .map(|t| t.subject.clone())
            .unwrap_or_default(),
        s.tls
            .as_ref()
            .map(|t| t.expired.to_string())
            .unwrap_or_default(),
        s.has_screenshot().to_string(),
        s.screen
            .as_ref()
            .map(|x| x.tags.join(" "))
            .unwrap_or_default(),
        s.job.to_string(),
        format_ms(s.first_seen_ms),
        format_ms(s.last_seen_ms),
        s.minions.iter().cloned().collect::<Vec<_>>().join(" "),
        s.providers.iter().cloned().collect::<Vec<_>>().join(" "),
        o(&s.banner),
    ];
    cols.iter()
        .map(|c| csv_field(c))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn jsonl_row(s: &ServiceState) -> String {
    serde_json::to_string(s).expect("row serializes")
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => o.push(c),
        }
    }
    o
}

/// nmap XML (`nmaprun` with one `host` per address, its open ports and service names), readable
/// by tools that read `nmap -oX` (and by [`crate::import`]).
pub fn nmap_xml(rows: &[ServiceState], out: &mut impl Write) -> std::io::Result<()> {
    nmap_xml_part(rows, true, true, out)
}

/// One part of a streamed nmap XML document: the header with the first part, the footer with the
/// last. (A host whose rows straddle two parts is written as two `host` elements.)
pub fn nmap_xml_part(
    rows: &[ServiceState],
    first: bool,
    last: bool,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut hosts: BTreeMap<IpAddr, Vec<&ServiceState>> = BTreeMap::new();
    for r in rows {
        if let Some(ip) = r.ip
            && r.port > 0
        {
            hosts.entry(ip).or_default().push(r);
        }
    }
    if first {
        writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#)?;
        writeln!(
            out,
            r#"<nmaprun scanner="overlord" args="overlord export" xmloutputversion="1.05">"#
        )?;
    }
    for (ip, ports) in hosts {
        let last = ports.iter().map(|p| p.last_seen_ms).max().unwrap_or(0) / 1000;
        writeln!(
            out,
            r#"<host endtime="{last}"><status state="up" reason="user-set"/>"#
        )?;
        let t = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        writeln!(out, r#"<address addr="{ip}" addrtype="{t}"/>"#)?;
        writeln!(out, "<ports>")?;
        for p in ports {
            write!(
                out,
                r#"<port protocol="{}" portid="{}"><state state="{}" reason="syn-ack"/>"#,
                xml_escape(&p.transport),
                p.port,
                if p.open { "open" } else { "closed" }
            )?;
            if p.service.is_some() || p.product.is_some() {
                let (tunnel, name) = match p.service.as_deref().unwrap_or("").split_once('/') {
                    Some((t, n)) => (Some(t), n),
                    None => (None, p.service.as_deref().unwrap_or("")),
                };
                write!(out, r#"<service name="{}""#, xml_escape(name))?;
                if let Some(x) = &p.product {
                    write!(out, r#" product="{}""#, xml_escape(x))?;
                }
                if let Some(x) = &p.version {
                    write!(out, r#" version="{}""#, xml_escape(x))?;
                }
                if let Some(t) = tunnel {
                    write!(out, r#" tunnel="{}""#, xml_escape(t))?;
                }
                write!(out, r#" method="probed">"#)?;
                for c in &p.cpe {
                    write!(out, "<cpe>{}</cpe>", xml_escape(c))?;
                }
                write!(out, "</service>")?;
            }
            if let Some(b) = &p.banner {
                write!(out, r#"<script id="banner" output="{}"/>"#, xml_escape(b))?;
            }
            writeln!(out, "</port>")?;
        }
        writeln!(out, "</ports></host>")?;
    }
    if last {
        writeln!(out, "</nmaprun>")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
        let s = ServiceState {
            banner: Some("x,\ny".into()),
            ..Default::default()
        };
        assert_eq!(csv_row(&s).split(',').count() >= CSV_COLUMNS.len(), true);
        assert!(csv_row(&s).ends_with("\"x,\ny\""));
    }

    #[test]
    fn xml_is_escaped() {
        let s = ServiceState {
            ip: Some("127.0.0.1".parse().unwrap()),
            port: 80,
            open: true,
            transport: "tcp".into(),
            service: Some("ssl/http".into()),
            product: Some("A<&>\"B".into()),
            ..Default::default()
        };
        let mut out = Vec::new();
        nmap_xml(&[s], &mut out).unwrap();
        let x = String::from_utf8(out).unwrap();
        assert!(x.contains(r#"product="A&lt;&amp;&gt;&quot;B""#), "{x}");
        assert!(
            x.contains(r#"name="http""#) && x.contains(r#"tunnel="ssl""#),
            "{x}"
        );
        roxmltree::Document::parse(&x).unwrap();
    }
}
