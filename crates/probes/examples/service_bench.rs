//! Benchmark: our service identification vs `nmap -sV` on the same loopback services, same run.
//!
//! `cargo run --release -p overlord-probes --example service_bench [-- --no-nmap] [--json]`
//!
//! Starts real daemons (sshd, redis, mosquitto, nginx, nginx+TLS, vsftpd, aiosmtpd, Xvfb, x11vnc,
//! Xvnc) plus a silent port, an echo port and a custom banner, identifies every port with both
//! tools, and prints both wall times, the ratio and what each tool named per port.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use overlord_probes::service::testsupport::{self as ts, Behaviour};
use overlord_probes::service::{IdentifyOptions, ProbeDb, ServiceReport, identify};

struct Row {
    label: &'static str,
    addr: SocketAddr,
    want_service: &'static str,
    want_product: &'static str,
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

    let sshd = ts::sshd()?;
    let redis = ts::redis(None)?;
    let mosq = ts::mosquitto()?;
    let nginx = ts::nginx(false)?;
    let nginx_tls = ts::nginx(true)?;
    let ftp = ts::vsftpd()?;
    let smtp = ts::smtpd()?;
    let xvfb = ts::xvfb(true)?;
    let x11vnc = ts::x11vnc(xvfb.display.expect("display"))?;
    let xvnc = ts::xvnc(true)?;
    let silent = ts::serve(Behaviour::Silent).await?;
    let echo = ts::serve(Behaviour::Echo).await?;
    let custom = ts::serve(Behaviour::Banner(b"OVERLORD-CUSTOM 1.2 ready\r\n".to_vec())).await?;

    let rows = vec![
        Row {
            label: "sshd",
            addr: sshd.addr,
            want_service: "ssh",
            want_product: "OpenSSH",
        },
        Row {
            label: "redis",
            addr: redis.addr,
            want_service: "redis",
            want_product: "Redis",
        },
        Row {
            label: "mosquitto",
            addr: mosq.addr,
            want_service: "mqtt",
            want_product: "mosquitto",
        },
        Row {
            label: "nginx",
            addr: nginx.addr,
            want_service: "http",
            want_product: "nginx",
        },
        Row {
            label: "nginx+tls",
            addr: nginx_tls.addr,
            want_service: "http",
            want_product: "nginx",
        },
        Row {
            label: "vsftpd",
            addr: ftp.addr,
            want_service: "ftp",
            want_product: "vsftpd",
        },
        Row {
            label: "aiosmtpd",
            addr: smtp.addr,
            want_service: "smtp",
            want_product: "aiosmtpd",
        },
        Row {
            label: "Xvfb",
            addr: xvfb.addr,
            want_service: "X11",
            want_product: "X.Org",
        },
        Row {
            label: "x11vnc",
            addr: x11vnc.addr,
            want_service: "vnc",
            want_product: "x11vnc",
        },
        Row {
            label: "Xvnc",
            addr: xvnc.addr,
            want_service: "vnc",
            want_product: "TigerVNC",
        },
        Row {
            label: "silent",
            addr: silent.addr,
            want_service: "",
            want_product: "",
        },
        Row {
            label: "echo",
            addr: echo.addr,
            want_service: "echo",
            want_product: "",
        },
        Row {
            label: "custom",
            addr: custom.addr,
            want_service: "overlord-custom",
            want_product: "Overlord custom daemon",
        },
    ];

    // Our engine: nmap's probes (when installed) + ours + a user file for the custom daemon.
    let t_load = Instant::now();
    let mut db = ProbeDb::default();
    if Path::new(overlord_probes::service::probefile::NMAP_PROBES_PATH).exists() {
        db.add_file(Path::new(
            overlord_probes::service::probefile::NMAP_PROBES_PATH,
        ))?;
    }
    db.add_source(
        "builtin:overlord-service-probes",
        overlord_probes::service::probefile::BUILTIN_PROBES.as_bytes(),
    );
    db.add_source(
        "bench:user-probes",
        b"Probe TCP NULL q||\nmatch overlord-custom m|^OVERLORD-CUSTOM ([\\d.]+) ready\\r\\n| p/Overlord custom daemon/ v/$1/\n",
    );
    let load = t_load.elapsed();
    let cov = db.coverage();
    let opts = IdentifyOptions::default();

    let t = Instant::now();
    let reports: Vec<ServiceReport> =
        futures_util::future::join_all(rows.iter().map(|r| identify(r.addr, &opts, &db))).await;
    let ours_time = t.elapsed();

    let (nmap_named, nmap_time) = if run_nmap {
        let ports: Vec<String> = rows.iter().map(|r| r.addr.port().to_string()).collect();
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
            .context("running nmap (Debian package `nmap`)")?;
        let took = t.elapsed();
        anyhow::ensure!(
            out.status.success(),
            "nmap failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            parse_nmap_xml(&String::from_utf8_lossy(&out.stdout)),
            Some(took),
        )
    } else {
        (Vec::new(), None)
    };

    println!(
        "probe db: {} probes, {} matches, {} softmatches, {} rejected lines (loaded in {:.0} ms)",
        cov.probes,
        cov.matches,
        cov.softmatches,
        cov.rejected.len(),
        load.as_secs_f64() * 1e3
    );
    println!(
        "{:<10} {:>5} | {:<44} | {:<44} | ours nmap",
        "service", "port", "overlord (status, ms)", "nmap -sV"
    );
    let (mut ok_ours, mut ok_nmap) = (0, 0);
    for (row, rep) in rows.iter().zip(&reports) {
        let ours = Named {
            service: rep.service.clone().unwrap_or_default(),
            product: rep.product.clone().unwrap_or_default(),
            version: rep.version.clone().unwrap_or_default(),
        };
        let nm = nmap_named
            .iter()
            .find(|(p, _)| *p == row.addr.port())
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        let good = |n: &Named| {
            let svc = n.service.trim_start_matches("ssl/");
            if row.want_service.is_empty() {
                svc.is_empty() || svc == "unknown" || svc == "tcpwrapped"
            } else {
                svc.eq_ignore_ascii_case(row.want_service)
                    && n.product
                        .to_lowercase()
                        .contains(&row.want_product.to_lowercase())
            }
        };
        let (a, b) = (good(&ours), run_nmap && good(&nm));
        ok_ours += a as usize;
        ok_nmap += b as usize;
        let ours_s = format!(
            "{}{} {} {} ({:?}, {:.0})",
            rep.tunnel
                .as_deref()
                .map(|t| format!("{t}/"))
                .unwrap_or_default(),
            ours.service,
            ours.product,
            ours.version,
            rep.status,
            rep.timings.total_ms
        );
        let nmap_s = format!("{} {} {}", nm.service, nm.product, nm.version);
        println!(
            "{:<10} {:>5} | {:<44.44} | {:<44.44} | {:<4} {}",
            row.label,
            row.addr.port(),
            ours_s,
            nmap_s,
            if a { "ok" } else { "MISS" },
            if !run_nmap {
                "-"
            } else if b {
                "ok"
            } else {
                "MISS"
            }
        );
    }
    println!(
        "accuracy: overlord {ok_ours}/{n}, nmap {ok_nmap}/{n}",
        n = rows.len()
    );
    println!(
        "overlord: {:.3} s for {} ports (concurrent)",
        ours_time.as_secs_f64(),
        rows.len()
    );
    if let Some(nt) = nmap_time {
        println!("nmap -sV: {:.3} s", nt.as_secs_f64());
        println!(
            "ratio overlord/nmap = {:.4} (bar <= 0.1) => {}",
            ours_time.as_secs_f64() / nt.as_secs_f64(),
            if ours_time.as_secs_f64() * 10.0 <= nt.as_secs_f64() {
                "PASS"
            } else {
                "FAIL"
            }
        );
    }
    if args.iter().any(|a| a == "--json") {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    }
    Ok(())
}

/// (port, service/product/version) from nmap's XML output.
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
