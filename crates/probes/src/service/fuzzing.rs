//! Entry points shared by the `cargo fuzz` targets (crates/probes/fuzz) and the stable smoke
//! test: each feeds arbitrary bytes to a parser that faces untrusted input. None may panic.

use super::grabbers::{http, mqtt, parse_reply, redis, reply_end, ssh, vnc, x11};
use super::probefile::{PortList, ProbeDb, unescape_payload};
use super::template::expand;

/// The probe-file parser, and the matcher/template path on the loaded rules.
pub fn probefile(data: &[u8]) {
    let mut db = ProbeDb::default();
    db.add_source("fuzz", data);
    let _ = db.coverage().match_coverage();
    // Run every loaded rule on the input itself and expand its templates.
    for p in &db.probes {
        for m in p.matches.iter().take(64) {
            if let Some(groups) = m.captures(data) {
                for t in [&m.template.product, &m.template.version, &m.template.info]
                    .into_iter()
                    .flatten()
                {
                    let _ = expand(t, &groups);
                }
            }
        }
    }
    let text = String::from_utf8_lossy(data);
    let _ = PortList::parse(&text);
    let _ = unescape_payload(data);
}

/// Template expansion with arbitrary templates and groups.
pub fn template(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xff);
    let t = String::from_utf8_lossy(parts.next().unwrap_or(&[])).into_owned();
    let groups: Vec<Option<&[u8]>> = parts.map(Some).collect();
    let _ = expand(&t, &groups);
}

/// Protocol parsers of the grabbers; the first byte picks the parser.
pub fn protocols(data: &[u8]) {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    match sel % 10 {
        0 => {
            if let Ok(p) = ssh::packet_payload(b) {
                let _ = ssh::parse_kexinit(&p);
            }
            let _ = ssh::parse_kexinit(b);
            let _ = ssh::fingerprint(b);
        }
        1 => {
            if let Ok(r) = http::parse_response(b) {
                let _ = http::title(&r.body);
            }
            let _ = http::favicon_hash(b);
        }
        2 => {
            let _ = redis::complete(b);
            let _ = redis::parse(b);
        }
        3 => {
            let _ = mqtt::packet_len(b);
            let _ = mqtt::parse_connack(b);
            let _ = mqtt::parse_publish(b);
        }
        4 => {
            let _ = vnc::parse_version(b);
            let _ = vnc::parse_server_init(b);
        }
        5 => {
            let _ = x11::parse(b);
        }
        6 => {
            let _ = reply_end(b);
            let _ = parse_reply(b);
        }
        7 => {
            let _ = super::tls::cert_info(b);
        }
        8 => template(b),
        _ => {
            let _ = super::io::escape_bytes(b);
        }
    }
}
