//! Scanning benchmarks beside the peer tools, in a network namespace the benchmark makes (so the
//! open set is only the listeners it binds, and raw-packet peers never see a real interface):
//!
//! - `overlord bench sweep`: a horizontal sweep (many addresses × one port) on the embedded
//!   cluster vs `nmap -sT` and `zmap` (on the namespace's `lo`), same work in the same run;
//!   open sets compared, ratios printed, progress + ETA while ours runs, process peak RSS.
//! - `overlord bench loss`: 500 listeners among 65,535 ports of 127.0.0.1 at 0/5/20 % nftables
//!   random loss: our connect sweep vs `nmap -sT` and `masscan` (recall, time, probes per port).
//!   `--scans syn,udp` adds the SYN scan (SYNs dropped on input, answers on output) and the UDP
//!   scan (500 DNS responders among `--udp-ports` ports, the rest closed; UDP datagrams and ICMP
//!   errors dropped), each with its time as a ratio of its own lossless row.
//!
//! The outer process (root) makes the namespace and re-runs itself inside with `--inner`.

use crate::client;
use crate::embedded::Embedded;
use anyhow::{Context, Result, bail};
use overlord_probes::netns::NetNs;
use overlord_proto::v1;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(clap::Args, Clone, Debug)]
pub struct SweepArgs {
    /// IPv4 CIDR inside 127.0.0.0/8 to sweep.
    #[arg(long, default_value = "127.1.0.0/16")]
    pub targets: String,
    #[arg(long, default_value_t = 80)]
    pub port: u16,
    /// Listeners bound on random addresses of the range (the open set).
    #[arg(long, default_value_t = 200)]
    pub listeners: u32,
    /// Peer tools to run on the same work: nmap, zmap (comma separated; empty = none).
    #[arg(long, default_value = "nmap,zmap", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Minions of the embedded cluster.
    #[arg(long, default_value_t = 2)]
    pub minions: usize,
    #[arg(long, hide = true)]
    pub inner: bool,
}

#[derive(clap::Args, Clone, Debug)]
pub struct LossArgs {
    /// Loss percentages to measure (each on a fresh namespace).
    #[arg(long, default_value = "0,5,20", value_delimiter = ',')]
    pub loss: Vec<u32>,
    /// Peer tools: nmap, masscan (comma separated; empty = none). nmap at 20 % takes ~30 min;
    /// masscan on a namespace's lo sent nothing here (bounded at 120 s).
    #[arg(long, default_value = "nmap", value_delimiter = ',')]
    pub peers: Vec<String>,
    #[arg(long, default_value_t = 500)]
    pub listeners: u32,
    /// Scans to measure: connect, syn, udp (comma separated). Peers run with `connect` only.
    #[arg(long, default_value = "connect", value_delimiter = ',')]
    pub scans: Vec<String>,
    /// Ports of the UDP rows (listeners among them, the rest closed).
    #[arg(long, default_value_t = 20_000)]
    pub udp_ports: u16,
    #[arg(long, hide = true)]
    pub inner: Option<u32>,
    #[arg(long, hide = true, default_value = "connect")]
    pub scan: String,
    #[arg(long, hide = true, default_value = "")]
    pub base_file: String,
}

fn reexec_in(ns: &NetNs, args: &[String]) -> Result<()> {
    let exe = std::env::current_exe()?;
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(exe)
        .args(args)
        .status()
        .context("ip netns exec")?;
    if !st.success() {
        bail!("benchmark inside namespace {} failed: {st}", ns.name);
    }
    Ok(())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn splitmix(z: &mut u64) -> u64 {
    *z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut x = *z;
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn v4_range(cidr: &str) -> Result<(u32, u32)> {
    match overlord_core::target::parse_target(cidr)? {
        overlord_core::target::TargetInput::Range(overlord_core::target::IpRange::V4 {
            start,
            end,
        }) if start >> 24 == 127 && end >> 24 == 127 => Ok((start, end)),
        _ => bail!("--targets must be an IPv4 range inside 127.0.0.0/8"),
    }
}

fn nmap_open(args: &[&str]) -> Result<(f64, BTreeSet<(IpAddr, u16)>)> {
    let t = Instant::now();
    let out = Command::new("nmap")
        .args(args)
        .args(["-oG", "-"])
        .output()
        .context("running nmap (scripts/install-deps.sh installs it)")?;
    let secs = t.elapsed().as_secs_f64();
    let mut open = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("Host: ") else {
            continue;
        };
        let Some(ip) = rest.split_whitespace().next().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Some(list) = line.split("Ports:").nth(1) else {
            continue;
        };
        for item in list.split(',') {
            let f: Vec<&str> = item.trim().split('/').collect();
            if f.len() > 1 && f[1] == "open" {
                open.insert((ip, f[0].parse()?));
            }
        }
    }
    Ok((secs, open))
}

fn compare(
    name: &str,
    secs: f64,
    ours_secs: f64,
    open: &BTreeSet<(IpAddr, u16)>,
    ours: &BTreeSet<(IpAddr, u16)>,
) {
    let only_ours = ours.difference(open).count();
    let only_theirs = open.difference(ours).count();
    println!(
        "   {name:<8} {secs:>8.2}s  open {:>6}  | overlord/{name} time ratio {:.2}  | open only in overlord {only_ours}, only in {name} {only_theirs}{}",
        open.len(),
        ours_secs / secs,
        if only_ours + only_theirs == 0 {
            " (same open set)"
        } else {
            ""
        }
    );
}

pub async fn sweep(a: SweepArgs) -> Result<()> {
    if !a.inner {
        overlord_probes::netns::available()?;
        let ns = NetNs::create("sweep")?;
        ns.allow_raw_loopback()?;
        let mut args = vec![
            "bench".to_string(),
            "sweep".into(),
            "--inner".into(),
            "--targets".into(),
            a.targets.clone(),
            "--port".into(),
            a.port.to_string(),
            "--listeners".into(),
            a.listeners.to_string(),
            "--minions".into(),
            a.minions.to_string(),
        ];
        args.push(format!("--peers={}", a.peers.join(",")));
        return reexec_in(&ns, &args);
    }
    let (start, end) = v4_range(&a.targets)?;
    let n = (end - start) as u64 + 1;
    let mut z = 0x5eed_u64;
    let mut listeners = Vec::new();
    let mut want = BTreeSet::new();
    while want.len() < (a.listeners as u64).min(n) as usize {
        let ip = IpAddr::V4(Ipv4Addr::from(start + (splitmix(&mut z) % n) as u32));
        if want.insert((ip, a.port)) {
            listeners.push(
                TcpListener::bind((ip, a.port)).with_context(|| format!("bind {ip}:{}", a.port))?,
            );
        }
    }
    println!(
        "== sweep: {} ({n} addresses) x port {} in a fresh network namespace, {} listeners; load {}",
        a.targets,
        a.port,
        listeners.len(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    // Ours: the embedded cluster (coordinator + minions, gRPC over loopback, sled).
    let dir = tempfile::tempdir()?;
    let cluster = Embedded::start(dir.path().join("data"), a.minions, 8).await?;
    let mut c = client::connect(&cluster.url).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let spec = v1::JobSpec {
        name: "bench sweep".into(),
        targets: vec![a.targets.clone()],
        ports: a.port.to_string(),
        modules: vec!["portscan".into()],
        ..Default::default()
    };
    let t = Instant::now();
    let st = client::submit(&mut c, spec).await?;
    let job = st.job_id;
    let total = st.tasks_total;
    let mut last_print = Instant::now();
    let st = loop {
        let st = client::get(&mut c, job).await?;
        if st.state != v1::JobState::Running as i32 {
            break st;
        }
        if last_print.elapsed() >= Duration::from_secs(2) {
            last_print = Instant::now();
            let done = st.tasks_done + st.tasks_failed;
            let el = t.elapsed().as_secs_f64();
            let frac = done as f64 / total.max(1) as f64;
            let eta = if frac > 0.0 { el / frac - el } else { f64::NAN };
            eprintln!(
                "   .. {done}/{total} tasks ({:.1} %), {:.0} addresses/s, ETA {eta:.0}s, {} open so far, RSS {:.0} MB",
                frac * 100.0,
                frac * n as f64 / el,
                st.findings,
                peak_rss_mb()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ours_secs = t.elapsed().as_secs_f64();
    let mut ours = BTreeSet::new();
    client::results(&mut c, job, |f| {
        if let Ok(ip) = f.target.parse::<IpAddr>() {
            ours.insert((ip, f.port as u16));
        }
    })
    .await?;
    cluster.shutdown().await;
    let rss = peak_rss_mb();
    println!(
        "   overlord {ours_secs:>8.2}s  open {:>6}  ({} tasks, {} failed, {:.0} addresses/s; peak RSS of the whole process (coordinator + minions) {rss:.0} MB)",
        ours.len(),
        st.tasks_done,
        st.tasks_failed,
        n as f64 / ours_secs
    );
    if ours != want {
        println!(
            "   overlord open set differs from the listeners: missing {}, extra {}",
            want.difference(&ours).count(),
            ours.difference(&want).count()
        );
    }
    for p in &a.peers {
        match p.as_str() {
            "nmap" => {
                let port = a.port.to_string();
                let (secs, open) = nmap_open(&[
                    "-sT",
                    "-p",
                    &port,
                    "-n",
                    "-Pn",
                    "-T5",
                    "--min-rate",
                    "50000",
                    &a.targets,
                ])?;
                compare("nmap", secs, ours_secs, &open, &ours);
            }
            "zmap" => {
                let t = Instant::now();
                let out = Command::new("zmap")
                    .args([
                        "-p",
                        &a.port.to_string(),
                        "-i",
                        "lo",
                        "--gateway-mac=00:00:00:00:00:00",
                        "--source-mac=02:00:00:00:00:01",
                        "--source-ip=127.0.0.1",
                        "-b",
                        "/dev/null",
                        "-r",
                        "0",
                        "-c",
                        "1",
                        "-q",
                        "-o",
                        "-",
                        &a.targets,
                    ])
                    .output()
                    .context("running zmap (scripts/install-deps.sh installs it)")?;
                let secs = t.elapsed().as_secs_f64();
                let open: BTreeSet<(IpAddr, u16)> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .map(|ip| (ip, a.port))
                    .collect();
                compare("zmap", secs, ours_secs, &open, &ours);
                println!(
                    "            (zmap: raw SYNs on the namespace's lo, 1 s cooldown included)"
                );
            }
            "" => {}
            other => bail!("unknown peer {other:?} (nmap, zmap)"),
        }
    }
    drop(listeners);
    Ok(())
}

/// The time of this scan's lossless row, kept in a file between the re-executed rows (each row
/// is its own process in its own namespace).
fn lossless_secs(file: &str, pct: u32, secs: f64) -> f64 {
    if pct == 0 {
        let _ = std::fs::write(file, secs.to_string());
        return secs;
    }
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// The TCP loss rows' work: `n` listeners on `ip` (kept open by the caller), their ports, and
/// every port of `ip` in the keyed random order of seed `pct`.
fn tcp_loss_targets(
    ip: IpAddr,
    n: u32,
    pct: u32,
) -> Result<(Vec<TcpListener>, BTreeSet<u16>, Vec<(IpAddr, u16)>)> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((ip, 0)))
        .collect::<std::io::Result<_>>()?;
    let want: BTreeSet<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<_>>()?;
    let mut probes: Vec<(IpAddr, u16)> = (1..=65535u16).map(|p| (ip, p)).collect();
    overlord_minion::modules::portscan::shuffle(&mut probes, pct as u64);
    Ok((listeners, want, probes))
}

/// One row of `bench loss --scans syn|udp`, inside the namespace.
async fn loss_other(a: &LossArgs, pct: u32) -> Result<()> {
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    match a.scan.as_str() {
        "syn" => {
            let (listeners, want, probes) = tcp_loss_targets(ip, a.listeners, pct)?;
            let t = Instant::now();
            let rep = tokio::task::spawn_blocking({
                let probes = probes.clone();
                move || {
                    overlord_probes::scan::syn::SynScanner::new(Default::default())?.scan(&probes)
                }
            })
            .await??;
            let secs = t.elapsed().as_secs_f64();
            let found: BTreeSet<u16> = rep.open(&probes).map(|(_, p)| p).collect();
            let base = lossless_secs(&a.base_file, pct, secs);
            println!(
                "   {pct:>2}% syn      {secs:>8.2}s recall {:>7.3} %  {:.3} probes/port, {} rounds | time / lossless {:.2}",
                found.intersection(&want).count() as f64 / want.len() as f64 * 100.0,
                rep.sent as f64 / 65535.0,
                rep.rounds,
                secs / base,
            );
            drop(listeners);
        }
        "udp" => {
            use overlord_probes::udp::{UdpOptions, UdpState, scan_targets};
            let mut responders = BTreeSet::new();
            let mut tasks = Vec::new();
            for _ in 0..a.listeners {
                let s = tokio::net::UdpSocket::bind((ip, 0)).await?;
                responders.insert(s.local_addr()?);
                tasks.push(tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    while let Ok((n, from)) = s.recv_from(&mut buf).await {
                        // The scan's DNS request (version.bind): echoed as a response.
                        if n >= 12 && buf[4..6] == [0, 1] && buf[12..n].starts_with(b"\x07version")
                        {
                            let mut r = buf[..n].to_vec();
                            r[2] |= 0x80;
                            let _ = s.send_to(&r, from).await;
                        }
                    }
                }));
            }
            let mut targets: Vec<std::net::SocketAddr> = responders.iter().copied().collect();
            // Closed ports below the ephemeral range (nothing of ours is bound there).
            let closed = a.udp_ports.saturating_sub(a.listeners as u16);
            targets.extend(
                (1024..1024u16.saturating_add(closed)).map(|p| std::net::SocketAddr::new(ip, p)),
            );
            overlord_minion::modules::portscan::shuffle(&mut targets, pct as u64);
            let db = overlord_probes::service::ProbeDb::builtin();
            let opts = UdpOptions {
                nmap_probes: false,
                ..Default::default()
            };
            let t = Instant::now();
            let rep = scan_targets(&targets, &opts, &db).await;
            let secs = t.elapsed().as_secs_f64();
            let n = rep.reports.len();
            let found = rep
                .reports
                .iter()
                .filter(|r| responders.contains(&r.addr) && r.state == UdpState::Open)
                .count();
            let right = rep
                .reports
                .iter()
                .filter(|r| {
                    r.state
                        == if responders.contains(&r.addr) {
                            UdpState::Open
                        } else {
                            UdpState::Closed
                        }
                })
                .count();
            let base = lossless_secs(&a.base_file, pct, secs);
            println!(
                "   {pct:>2}% udp      {secs:>8.2}s recall {:>7.3} % ({found}/{} responders; {right}/{n} ports judged right)  {:.3} bursts/port ({:.2} datagrams/port), {} rounds | time / lossless {:.2}",
                found as f64 / responders.len() as f64 * 100.0,
                responders.len(),
                rep.counts.sent as f64 / n as f64,
                rep.datagrams as f64 / n as f64,
                rep.counts.rounds,
                secs / base,
            );
            for t in tasks {
                t.abort();
            }
        }
        other => bail!("unknown scan {other:?} (connect, syn, udp)"),
    }
    Ok(())
}

pub async fn loss(a: LossArgs) -> Result<()> {
    let Some(pct) = a.inner else {
        overlord_probes::netns::available()?;
        println!(
            "== loss: {} listeners among 65,535 ports of 127.0.0.1, nftables random drop on input (each packet once), fresh namespace per row; load {}",
            a.listeners,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        for scan in &a.scans {
            let base = std::env::temp_dir().join(format!("ovl-loss-{}-{scan}", std::process::id()));
            let _ = std::fs::remove_file(&base);
            for &pct in &a.loss {
                let ns = NetNs::create("loss")?;
                ns.allow_raw_loopback()?;
                if pct > 0 {
                    match scan.as_str() {
                        "connect" => ns.random_drop(pct)?,
                        "syn" => ns.random_drop_raw(pct)?,
                        "udp" => ns.random_drop_udp(pct)?,
                        other => bail!("unknown scan {other:?} (connect, syn, udp)"),
                    }
                }
                reexec_in(
                    &ns,
                    &[
                        "bench".into(),
                        "loss".into(),
                        format!("--inner={pct}"),
                        format!("--scan={scan}"),
                        format!("--base-file={}", base.display()),
                        format!("--listeners={}", a.listeners),
                        format!("--udp-ports={}", a.udp_ports),
                        format!(
                            "--peers={}",
                            if scan == "connect" {
                                a.peers.join(",")
                            } else {
                                String::new()
                            }
                        ),
                    ],
                )?;
            }
            let _ = std::fs::remove_file(&base);
        }
        return Ok(());
    };
    if a.scan != "connect" {
        return loss_other(&a, pct).await;
    }
    let ip: IpAddr = "127.0.0.1".parse().expect("ip");
    let (_listeners, want, probes) = tcp_loss_targets(ip, a.listeners, pct)?;
    let t = Instant::now();
    let rep = tokio::task::spawn_blocking({
        let probes = probes.clone();
        move || overlord_probes::scan::connect::sweep(&probes, &Default::default())
    })
    .await??;
    let ours_secs = t.elapsed().as_secs_f64();
    let found: BTreeSet<u16> = rep.open(&probes).map(|(_, p)| p).collect();
    let recall = found.intersection(&want).count() as f64 / want.len() as f64;
    println!(
        "   {pct:>2}% overlord {ours_secs:>8.2}s recall {:>7.3} %  {:.3} probes/port, {} rounds",
        recall * 100.0,
        rep.sent as f64 / 65535.0,
        rep.rounds
    );
    for p in &a.peers {
        let (name, secs, open) = match p.as_str() {
            "nmap" => {
                let (secs, open) = nmap_open(&["-sT", "-p-", "-n", "-Pn", "-T4", "127.0.0.1"])?;
                (
                    "nmap",
                    secs,
                    open.into_iter().map(|(_, p)| p).collect::<BTreeSet<u16>>(),
                )
            }
            "masscan" => {
                let t = Instant::now();
                // Bounded: on this kernel masscan on a namespace's lo sent nothing and hung.
                let out = Command::new("timeout")
                    .args([
                        "120",
                        "masscan",
                        "127.0.0.1",
                        "-p1-65535",
                        "--rate",
                        "100000",
                        "-e",
                        "lo",
                    ])
                    .args([
                        "--source-mac",
                        "02-00-00-00-00-01",
                        "--router-mac",
                        "00-00-00-00-00-00",
                    ])
                    .args(["--source-ip", "127.0.0.1", "--wait", "1", "-oL", "-"])
                    .output()
                    .context("running masscan (scripts/install-deps.sh installs it)")?;
                let secs = t.elapsed().as_secs_f64();
                let open = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| {
                        let f: Vec<&str> = l.split_whitespace().collect();
                        (f.len() >= 4 && f[0] == "open")
                            .then(|| f[2].parse().ok())
                            .flatten()
                    })
                    .collect::<BTreeSet<u16>>();
                ("masscan", secs, open)
            }
            "" => continue,
            other => bail!("unknown peer {other:?} (nmap, masscan)"),
        };
        println!(
            "   {pct:>2}% {name:<8} {secs:>8.2}s recall {:>7.3} %  | overlord/{name} time ratio {:.2}",
            open.intersection(&want).count() as f64 / want.len() as f64 * 100.0,
            ours_secs / secs,
        );
    }
    Ok(())
}
