//! Benchmark: our UDP scan + identification vs `nmap -sU` and `nmap -sU -sV` on the same real
//! loopback daemons, same run: unbound, named (BIND 9), chronyd, snmpd, memcached -U, a silent
//! socket and a closed port. Prints per port what each tool said, the wall times and the ratios.
//! nmap -sU needs root.
//!
//! `cargo run --release -p overlord-probes --example udp_bench [-- --no-nmap] [--json]`

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use overlord_probes::service::ProbeDb;
use overlord_probes::service::lab;
use overlord_probes::udp::{UdpOptions, scan};

#[derive(Default, Clone, Debug)]
struct Nm {
    state: String,
    reason: String,
    service: String,
    product: String,
    version: String,
}

fn nmap(args: &[&str], ports: &str) -> anyhow::Result<(Vec<(u16, Nm)>, Duration)> {
    let t = Instant::now();
    let out = Command::new("nmap")
        .args(args)
        .args(["-Pn", "-n", "-oX", "-", "-p", ports, "127.0.0.1"])
        .output()
        .context("running nmap (Debian package `nmap`)")?;
    let took = t.elapsed();
    anyhow::ensure!(
        out.status.success(),
        "nmap failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((parse_nmap_xml(&String::from_utf8_lossy(&out.stdout)), took))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_nmap = !args.iter().any(|a| a == "--no-nmap");
    let unbound = lab::unbound()?;
    let named = lab::named()?;
    let chrony = lab::chronyd()?;
    let snmpd = lab::snmpd()?;
    let memcached = lab::memcached_udp()?;
    let silent = lab::silent_udp()?;
    let closed = lab::closed_udp_port();
    let rows: Vec<(&str, u16, &str, &str)> = vec![
        ("unbound", unbound.addr.port(), "domain", "Unbound"),
        ("named", named.addr.port(), "domain", "BIND"),
        ("chronyd", chrony.addr.port(), "ntp", "NTP"),
        ("snmpd", snmpd.addr.port(), "snmp", "net-snmp"),
        ("memcached", memcached.addr.port(), "memcached", "Memcached"),
        ("silent", silent.addr.port(), "", ""),
        ("closed", closed, "", ""),
    ];
    let ip: IpAddr = "127.0.0.1".parse()?;
    let ports: Vec<u16> = rows.iter().map(|r| r.1).collect();
    let db = ProbeDb::load_default()?;
    let opts = UdpOptions::default();
    let t = Instant::now();
    let ours = scan(ip, &ports, &opts, &db).await;
    let ours_time = t.elapsed();

    let list: Vec<String> = ports.iter().map(u16::to_string).collect();
    let list = list.join(",");
    let (su, sv) = if run_nmap {
        (
            Some(nmap(&["-sU"], &list)?),
            Some(nmap(&["-sU", "-sV"], &list)?),
        )
    } else {
        (None, None)
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average: {}", load.trim());
    println!(
        "{:<10} {:>5} | {:<52} | {:<22} | {:<40}",
        "daemon",
        "port",
        "overlord udp (state reason: service product version)",
        "nmap -sU",
        "nmap -sU -sV"
    );
    let (mut named_ours, mut named_nmap) = (0, 0);
    for (label, port, want_s, want_p) in &rows {
        let r = ours
            .iter()
            .find(|r| r.addr == SocketAddr::new(ip, *port))
            .expect("scanned");
        let o = format!(
            "{} {}: {} {} {}",
            r.state.as_str(),
            r.reason,
            r.service.as_deref().unwrap_or("-"),
            r.product.as_deref().unwrap_or(""),
            r.version.as_deref().unwrap_or("")
        );
        let get = |x: &Option<(Vec<(u16, Nm)>, Duration)>| {
            x.as_ref()
                .and_then(|(v, _)| v.iter().find(|(p, _)| p == port).map(|(_, n)| n.clone()))
                .unwrap_or_default()
        };
        let a = get(&su);
        let b = get(&sv);
        let ok = |s: &str, p: &str| {
            !want_s.is_empty() && s == *want_s && p.to_lowercase().contains(&want_p.to_lowercase())
        };
        named_ours += ok(
            r.service.as_deref().unwrap_or(""),
            r.product.as_deref().unwrap_or(""),
        ) as u32;
        named_nmap += ok(&b.service, &b.product) as u32;
        println!(
            "{:<10} {:>5} | {:<52.52} | {:<22.22} | {:<40.40}",
            label,
            port,
            o,
            format!("{} {}", a.state, a.reason),
            format!(
                "{} {}: {} {} {}",
                b.state, b.reason, b.service, b.product, b.version
            )
        );
    }
    println!("named (service + product): overlord {named_ours}/5, nmap -sU -sV {named_nmap}/5");
    println!(
        "overlord udp: {:.3} s for {} ports",
        ours_time.as_secs_f64(),
        ports.len()
    );
    if let (Some((_, t1)), Some((_, t2))) = (&su, &sv) {
        println!(
            "nmap -sU:     {:.3} s   ratio overlord/nmap = {:.3}",
            t1.as_secs_f64(),
            ours_time.as_secs_f64() / t1.as_secs_f64()
        );
        println!(
            "nmap -sU -sV: {:.3} s   ratio overlord/nmap = {:.3}",
            t2.as_secs_f64(),
            ours_time.as_secs_f64() / t2.as_secs_f64()
        );
    }
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string_pretty(&ours)?);
    }
    Ok(())
}

/// (port, state/reason/service/product/version) from nmap's XML output.
fn parse_nmap_xml(xml: &str) -> Vec<(u16, Nm)> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!(" {name}=\"");
        tag.find(&key)
            .map(|i| {
                let rest = &tag[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].to_string()
            })
            .unwrap_or_default()
    };
    let tag_of = |chunk: &str, t: &str| -> Option<String> {
        let i = chunk.find(t)?;
        Some(chunk[i..i + chunk[i..].find('>').unwrap_or(chunk.len() - i)].to_string())
    };
    let mut out = Vec::new();
    for chunk in xml.split("<port ").skip(1) {
        let head = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        let Ok(port) = attr(head, "portid").parse::<u16>() else {
            continue;
        };
        let chunk = &chunk[..chunk.find("</port>").unwrap_or(chunk.len())];
        let mut n = Nm::default();
        if let Some(st) = tag_of(chunk, "<state ") {
            n.state = attr(&st, "state");
            n.reason = attr(&st, "reason");
        }
        if let Some(sv) = tag_of(chunk, "<service ") {
            n.service = attr(&sv, "name");
            n.product = attr(&sv, "product");
            n.version = attr(&sv, "version");
        }
        out.push((port, n));
    }
    out
}
