//! Service identification on a lab of real Debian daemons on loopback: ours vs `nmap -sV`, same
//! ports, same run, side by side with the ratio and the products each named.
//!
//! Two sets: `tune` (daemons the engine's timing and probe order were adjusted on) and `heldout`
//! (daemons never looked at while tuning; report these figures separately).
//!
//! `cargo run --release -p overlord-probes --example lab_bench -- [--set tune|heldout|all] [--no-nmap] [--json]`

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use overlord_probes::service::lab;
use overlord_probes::service::testsupport::{self as ts, Daemon, SupportError};
use overlord_probes::service::{IdentifyOptions, ProbeDb, ServiceReport, identify};

type Launcher = fn() -> Result<Daemon, SupportError>;

fn tune_set() -> Vec<(&'static str, Launcher)> {
    vec![
        ("unbound/tcp", lab::unbound as Launcher),
        ("ngircd", lab::ngircd),
        ("rabbitmq", lab::rabbitmq),
        ("cupsd", lab::cupsd),
        ("haproxy", lab::haproxy),
        ("mariadb", lab::mariadb),
        ("dovecot", lab::dovecot),
        ("sshd", ts::sshd),
        ("redis", || ts::redis(None)),
        ("mosquitto", ts::mosquitto),
        ("nginx", || ts::nginx(false)),
        ("nginx+tls", || ts::nginx(true)),
        ("vsftpd", ts::vsftpd),
        ("aiosmtpd", ts::smtpd),
    ]
}

/// Never tuned on: chosen before the first run of this bench.
fn heldout_set() -> Vec<(&'static str, Launcher)> {
    vec![
        ("named/tcp", lab::named as Launcher),
        ("inspircd", lab::inspircd),
        ("lighttpd", lab::lighttpd),
        ("proftpd", lab::proftpd),
        ("postgres", lab::postgres),
        ("exim", lab::exim),
        ("memcached", lab::memcached_udp),
    ]
}

#[derive(Default, Clone)]
struct Named {
    service: String,
    product: String,
    version: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run_nmap = !args.iter().any(|a| a == "--no-nmap");
    let set = args
        .iter()
        .position(|a| a == "--set")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("all");
    let mut sets = Vec::new();
    if set == "tune" || set == "all" {
        sets.push(("tune", tune_set()));
    }
    if set == "heldout" || set == "all" {
        sets.push(("heldout", heldout_set()));
    }
    anyhow::ensure!(!sets.is_empty(), "--set tune|heldout|all");
    let db = ProbeDb::load_default()?;
    let opts = IdentifyOptions::default();
    for (name, launchers) in sets {
        let mut daemons = Vec::new();
        for (label, f) in launchers {
            match f() {
                Ok(d) => daemons.push((label, d)),
                Err(e) => println!("{label}: not started: {e}"),
            }
        }
        run_set(name, &daemons, &db, &opts, run_nmap).await?;
        if args.iter().any(|a| a == "--json") {
            let reps = futures_util::future::join_all(
                daemons.iter().map(|(_, d)| identify(d.addr, &opts, &db)),
            )
            .await;
            println!("{}", serde_json::to_string_pretty(&reps)?);
        }
    }
    Ok(())
}

async fn run_set(
    set: &str,
    daemons: &[(&str, Daemon)],
    db: &ProbeDb,
    opts: &IdentifyOptions,
    run_nmap: bool,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let reports: Vec<ServiceReport> =
        futures_util::future::join_all(daemons.iter().map(|(_, d)| identify(d.addr, opts, db)))
            .await;
    let ours_time = t.elapsed();
    let (nm, nmap_time) = if run_nmap {
        let ports: Vec<String> = daemons
            .iter()
            .map(|(_, d)| d.addr.port().to_string())
            .collect();
        let t = Instant::now();
        let out = Command::new("nmap")
            .args([
                "-sV",
                "-Pn",
                "-n",
                "-oX",
                "-",
                "-p",
                &ports.join(","),
                "127.0.0.1",
            ])
            .output()
            .context("running nmap")?;
        let took = t.elapsed();
        (
            parse_nmap_xml(&String::from_utf8_lossy(&out.stdout)),
            Some(took),
        )
    } else {
        (Vec::new(), None)
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "\n== set {set}: {} daemons; load average {}",
        daemons.len(),
        load.trim()
    );
    println!(
        "{:<12} {:>5} | {:<48} | {:>6} | {:<40}",
        "daemon", "port", "overlord (status)", "ms", "nmap -sV"
    );
    let (mut s_o, mut p_o, mut s_n, mut p_n) = (0, 0, 0, 0);
    for ((label, d), r) in daemons.iter().zip(&reports) {
        let n = nm
            .iter()
            .find(|(p, _)| *p == d.addr.port())
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let named_svc = |s: &str| !s.is_empty() && s != "unknown" && s != "tcpwrapped";
        s_o += named_svc(r.service.as_deref().unwrap_or("")) as u32;
        p_o += r.product.as_deref().is_some_and(|p| !p.is_empty()) as u32;
        s_n += named_svc(&n.service) as u32;
        p_n += (!n.product.is_empty()) as u32;
        println!(
            "{:<12} {:>5} | {:<48.48} | {:>6.0} | {:<40.40}",
            label,
            d.addr.port(),
            format!(
                "{} {} {} ({:?})",
                r.full_service().unwrap_or_default(),
                r.product.as_deref().unwrap_or(""),
                r.version.as_deref().unwrap_or(""),
                r.status
            ),
            r.timings.total_ms,
            format!("{} {} {}", n.service, n.product, n.version)
        );
    }
    println!(
        "set {set}: services named overlord {s_o} nmap {s_n}; products named overlord {p_o} nmap {p_n}"
    );
    println!("set {set}: overlord {:.3} s", ours_time.as_secs_f64());
    if let Some(nt) = nmap_time {
        println!(
            "set {set}: nmap -sV {:.3} s; speed-up {:.1}x (bar >= 10x) => {}",
            nt.as_secs_f64(),
            nt.as_secs_f64() / ours_time.as_secs_f64(),
            if ours_time * 10 <= nt && p_o >= p_n {
                "PASS"
            } else {
                "FAIL"
            }
        );
    }
    let _ = Duration::ZERO;
    Ok(())
}

fn parse_nmap_xml(xml: &str) -> Vec<(u16, Named)> {
    let attr = |tag: &str, name: &str| -> String {
        let key = format!(" {name}=\"");
        tag.find(&key)
            .map(|i| {
                let rest = &tag[i + key.len()..];
                rest[..rest.find('"').unwrap_or(rest.len())].to_string()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for chunk in xml.split("<port ").skip(1) {
        let head = &chunk[..chunk.find('>').unwrap_or(chunk.len())];
        let Ok(port) = attr(head, "portid").parse::<u16>() else {
            continue;
        };
        let chunk = &chunk[..chunk.find("</port>").unwrap_or(chunk.len())];
        let mut n = Named::default();
        if let Some(i) = chunk.find("<service ") {
            let tag = &chunk[i..i + chunk[i..].find('>').unwrap_or(chunk.len() - i)];
            let tunnel = attr(tag, "tunnel");
            n.service = attr(tag, "name");
            if !tunnel.is_empty() {
                n.service = format!("{tunnel}/{}", n.service);
            }
            n.product = attr(tag, "product");
            n.version = attr(tag, "version");
        }
        out.push((port, n));
    }
    out
}
