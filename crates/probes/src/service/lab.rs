//! More real daemons on loopback (feature `testsupport`): the UDP servers of the UDP scan tests
//! (unbound, chronyd, snmpd, memcached -U) and the wider service-identification lab (DNS over
//! TCP, IRC, AMQP, IPP, HAProxy, databases, mail). Same rules as [`super::testsupport`]: a free
//! port, config in the daemon's own temp dir, foreground, bound to 127.0.0.1 only, and ready =
//! the daemon's own pid holds the port (UDP: `/proc/net/udp`; TCP: `/proc/net/tcp`).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::testsupport::{
    Daemon, Launch, SupportError, launch_ready, parse_proc_addr, require_bin, tcp_listeners,
    wait_ready,
};

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// UDP sockets held by process `pid` (bound, any state), from `/proc/net/udp{,6}`.
pub fn udp_sockets_of(pid: u32) -> std::io::Result<Vec<SocketAddr>> {
    let inodes = socket_inodes(pid)?;
    let mut out = Vec::new();
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(file)?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10
                && inodes.contains(f[9])
                && let Some(a) = parse_proc_addr(f[1])
            {
                out.push(a);
            }
        }
    }
    Ok(out)
}

/// Every UDP socket of this network namespace bound to `port` (any process).
pub fn udp_sockets_on(port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for file in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(file)?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 10
                && let Some(a) = parse_proc_addr(f[1])
                && a.port() == port
            {
                out.push(a);
            }
        }
    }
    Ok(out)
}

fn socket_inodes(pid: u32) -> std::io::Result<std::collections::HashSet<String>> {
    let mut inodes = std::collections::HashSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(link) = std::fs::read_link(e?.path()) else {
            continue;
        };
        let link = link.to_string_lossy().into_owned();
        if let Some(n) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            inodes.insert(n.to_string());
        }
    }
    Ok(inodes)
}

/// TCP listeners held by `pid` or any of its descendants (daemons that fork workers: the
/// listening socket may live in a child, e.g. rabbitmq's beam.smp under its shell wrapper).
fn tcp_listeners_of_tree(pid: u32) -> Vec<SocketAddr> {
    let mut inodes = std::collections::HashSet::new();
    for p in process_tree(pid) {
        if let Ok(i) = socket_inodes(p) {
            inodes.extend(i);
        }
    }
    tcp_listeners()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, i)| inodes.contains(i))
        .map(|(a, _)| a)
        .collect()
}

/// `pid` and its descendants (from `/proc/*/stat` parent ids).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(st) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                && let Some(rest) = st.rsplit_once(')').map(|(_, r)| r)
                && let Some(pp) = rest.split_whitespace().nth(1).and_then(|x| x.parse::<u32>().ok())
            {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// Ready = the child holds a UDP socket on `addr` (and, with `tcp_too`, a TCP listener there).
fn ready_udp(tcp_too: bool) -> impl Fn(&mut Child, SocketAddr, Duration) -> Result<(), String> {
    move |child: &mut Child, addr: SocketAddr, limit: Duration| {
        let end = Instant::now() + limit;
        let pid = child.id();
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("exited early with {st}"));
            }
            let udp = udp_sockets_of(pid).is_ok_and(|l| l.contains(&addr));
            if udp {
                if !tcp_too {
                    return Ok(());
                }
                let left = end.saturating_duration_since(Instant::now());
                return wait_ready(child, addr, left);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "{addr}/udp not held by pid {pid} after {limit:?} (udp sockets on the port: {:?})",
            udp_sockets_on(addr.port()).unwrap_or_default()
        ))
    }
}

/// Ready = the child or one of its descendants holds a TCP listener on `addr` that accepts.
fn ready_tree(child: &mut Child, addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let end = Instant::now() + limit;
    let pid = child.id();
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited early with {st}"));
        }
        if tcp_listeners_of_tree(pid).contains(&addr)
            && let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            && s.local_addr().ok() != Some(addr)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr} not held by pid {pid} or its children after {limit:?}"))
}

fn write(dir: &Path, name: &str, text: &str) -> Result<std::path::PathBuf, SupportError> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p)
}

// ------------------------------------------------------------------------------------- UDP lab

/// unbound on 127.0.0.1:P (UDP and TCP), answering `version.bind` and a local zone; it never
/// queries anyone (`do-not-query-address` everything, root zone `static`).
pub fn unbound() -> Result<Daemon, SupportError> {
    let bin = require_bin("unbound", "unbound")?;
    launch_ready(
        "unbound",
        &mut |dir, port| {
            let d = dir.display();
            let conf = write(
                dir,
                "unbound.conf",
                &format!(
                    "server:\n  interface: 127.0.0.1@{port}\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  username: \"\"\n  chroot: \"\"\n  directory: \"{d}\"\n  pidfile: \"{d}/unbound.pid\"\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  hide-version: no\n  module-config: \"iterator\"\n  do-not-query-localhost: yes\n  do-not-query-address: 0.0.0.0/0\n  local-zone: \".\" static\n  local-zone: \"overlord.test.\" static\n  local-data: \"a.overlord.test. A 127.0.0.1\"\n  num-threads: 1\n  so-reuseport: no\nremote-control:\n  control-enable: no\n"
                ),
            )?;
            let mut c = Command::new(&bin);
            c.arg("-d").arg("-c").arg(conf);
            Ok((c, loopback(port), None))
        },
        &ready_udp(true),
        Duration::from_secs(20),
    )
}

/// BIND 9 (`named -g`) on 127.0.0.1:P (UDP and TCP), authoritative for one zone, no recursion.
pub fn named() -> Result<Daemon, SupportError> {
    let bin = require_bin("named", "bind9")?;
    launch_ready(
        "named",
        &mut |dir, port| {
            let d = dir.display();
            write(
                dir,
                "db.overlord",
                "$TTL 60\n@ IN SOA ns.overlord.test. root.overlord.test. 1 60 60 60 60\n@ IN NS ns.overlord.test.\nns IN A 127.0.0.1\n",
            )?;
            let conf = write(
                dir,
                "named.conf",
                &format!(
                    "options {{\n directory \"{d}\";\n listen-on port {port} {{ 127.0.0.1; }};\n listen-on-v6 {{ none; }};\n recursion no;\n dnssec-validation no;\n notify no;\n pid-file \"{d}/named.pid\";\n session-keyfile \"{d}/session.key\";\n managed-keys-directory \"{d}\";\n}};\ncontrols {{ }};\nzone \"overlord.test\" {{ type primary; file \"{d}/db.overlord\"; }};\n"
                ),
            )?;
            let mut c = Command::new(&bin);
            c.args(["-g", "-n", "1", "-c"]).arg(conf);
            Ok((c, loopback(port), None))
        },
        &ready_udp(true),
        Duration::from_secs(30),
    )
}

/// chronyd serving NTP on 127.0.0.1:P without touching the system clock (`-x`), stratum 10
/// from its local clock, no command port, no sources.
pub fn chronyd() -> Result<Daemon, SupportError> {
    let bin = require_bin("chronyd", "chrony")?;
    launch_ready(
        "chronyd",
        &mut |dir, port| {
            let d = dir.display();
            let conf = write(
                dir,
                "chrony.conf",
                &format!(
                    "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\ncmdport 0\nlocal stratum 10\npidfile {d}/chronyd.pid\ndriftfile {d}/drift\n"
                ),
            )?;
            let mut c = Command::new(&bin);
            c.args(["-d", "-x", "-u", "root", "-f"]).arg(conf);
            Ok((c, loopback(port), None))
        },
        &ready_udp(false),
        Duration::from_secs(20),
    )
}

/// net-snmp's snmpd on udp:127.0.0.1:P, community `public` read-only for loopback.
pub fn snmpd() -> Result<Daemon, SupportError> {
    let bin = require_bin("snmpd", "snmpd")?;
    launch_ready(
        "snmpd",
        &mut |dir, port| {
            let conf = write(
                dir,
                "snmpd.conf",
                &format!(
                    "rocommunity public 127.0.0.1\nsysLocation overlord lab\nmaster no\n"
                ),
            )?;
            let mut c = Command::new(&bin);
            c.args(["-f", "-Le", "-C", "-c"])
                .arg(conf)
                .arg("-p")
                .arg(dir.join("snmpd.pid"))
                .env("SNMP_PERSISTENT_DIR", dir)
                .env("MIBS", "")
                .arg(format!("udp:127.0.0.1:{port}"));
            Ok((c, loopback(port), None))
        },
        &ready_udp(false),
        Duration::from_secs(20),
    )
}

/// memcached with UDP on 127.0.0.1:P (`-U P`) and TCP on the same port.
pub fn memcached_udp() -> Result<Daemon, SupportError> {
    let bin = require_bin("memcached", "memcached")?;
    launch_ready(
        "memcached",
        &mut |_dir, port| {
            let mut c = Command::new(&bin);
            c.args(["-l", "127.0.0.1", "-u", "root", "-m", "16", "-t", "1"])
                .arg("-U")
                .arg(port.to_string())
                .arg("-p")
                .arg(port.to_string());
            Ok((c, loopback(port), None))
        },
        &ready_udp(true),
        Duration::from_secs(20),
    )
}

/// A UDP socket that reads everything and never answers (an `open|filtered` port that is open).
pub struct SilentUdp {
    pub addr: SocketAddr,
    _sock: std::net::UdpSocket,
}

pub fn silent_udp() -> std::io::Result<SilentUdp> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(SilentUdp {
        addr: s.local_addr()?,
        _sock: s,
    })
}

/// A UDP port nobody holds (was free a moment ago): the kernel answers port unreachable.
pub fn closed_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

// ------------------------------------------------------------------------------------- TCP lab

pub(crate) fn tree_launch(
    name: &str,
    limit: Duration,
    make: &mut dyn FnMut(&Path, u16) -> Result<Launch, SupportError>,
) -> Result<Daemon, SupportError> {
    launch_ready(name, make, &ready_tree, limit)
}
