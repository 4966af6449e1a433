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
                && let Some(pp) = rest
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse::<u32>().ok())
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
    Err(format!(
        "{addr} not held by pid {pid} or its children after {limit:?}"
    ))
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
                "rocommunity public 127.0.0.1\nsysLocation overlord lab\nmaster no\n",
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

pub fn tree_launch(
    name: &str,
    limit: Duration,
    make: &mut dyn FnMut(&Path, u16) -> Result<Launch, SupportError>,
) -> Result<Daemon, SupportError> {
    launch_ready(name, make, &ready_tree, limit)
}

fn cmd(bin: &Path) -> Command {
    Command::new(bin)
}

/// ngircd (IRC) on 127.0.0.1:P; it looks the client up (DNS, ident) before greeting: a late greeter.
pub fn ngircd() -> Result<Daemon, SupportError> {
    let bin = require_bin("ngircd", "ngircd")?;
    tree_launch("ngircd", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        let conf = write(
            dir,
            "ngircd.conf",
            &format!(
                "[Global]\nName = irc.overlord.test\nInfo = lab\nListen = 127.0.0.1\nPorts = {port}\nPidFile = {d}/ngircd.pid\nMotdPhrase = lab\n[Options]\nPAM = no\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.args(["-n", "-f"]).arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// InspIRCd (IRC) on 127.0.0.1:P.
pub fn inspircd() -> Result<Daemon, SupportError> {
    let bin = require_bin("inspircd", "inspircd")?;
    tree_launch("inspircd", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        let conf = write(
            dir,
            "inspircd.conf",
            &format!(
                "<server name=\"irc.overlord.test\" description=\"lab\" network=\"Lab\">\n<admin name=\"a\" nick=\"a\" email=\"a@overlord.test\">\n<bind address=\"127.0.0.1\" port=\"{port}\" type=\"clients\">\n<connect allow=\"*\" timeout=\"60\" pingfreq=\"120\" recvq=\"8192\" sendq=\"262144\" localmax=\"100\" globalmax=\"100\">\n<class name=\"Users\" commands=\"*\">\n<pid file=\"{d}/inspircd.pid\">\n<log method=\"file\" type=\"* -USERINPUT -USEROUTPUT\" level=\"default\" target=\"{d}/ircd.log\">\n<dns timeout=\"2\">\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.args(["--nofork", "--runasroot", "--config"]).arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// HAProxy in HTTP mode on 127.0.0.1:P with a backend that has no server (it answers its 503).
pub fn haproxy() -> Result<Daemon, SupportError> {
    let bin = require_bin("haproxy", "haproxy")?;
    tree_launch("haproxy", Duration::from_secs(20), &mut |dir, port| {
        let conf = write(
            dir,
            "haproxy.cfg",
            &format!(
                "global\n  maxconn 64\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 5s\n  timeout server 5s\nfrontend f\n  bind 127.0.0.1:{port}\n  default_backend b\nbackend b\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.args(["-db", "-f"]).arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// lighttpd on 127.0.0.1:P serving an empty directory.
pub fn lighttpd() -> Result<Daemon, SupportError> {
    let bin = require_bin("lighttpd", "lighttpd")?;
    tree_launch("lighttpd", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("www"))?;
        std::fs::write(
            dir.join("www/index.html"),
            "<html><title>lab</title></html>\n",
        )?;
        let conf = write(
            dir,
            "lighttpd.conf",
            &format!(
                "server.document-root = \"{d}/www\"\nserver.port = {port}\nserver.bind = \"127.0.0.1\"\nserver.errorlog = \"{d}/error.log\"\nindex-file.names = ( \"index.html\" )\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.args(["-D", "-f"]).arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// ProFTPD standalone on 127.0.0.1:P.
pub fn proftpd() -> Result<Daemon, SupportError> {
    let bin = require_bin("proftpd", "proftpd-core")?;
    tree_launch("proftpd", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        let conf = write(
            dir,
            "proftpd.conf",
            &format!(
                "ServerName \"lab\"\nServerType standalone\nDefaultServer on\nPort {port}\nDefaultAddress 127.0.0.1\nSocketBindTight on\nUseIPv6 off\nUser nobody\nGroup nogroup\nPidFile {d}/proftpd.pid\nScoreboardFile {d}/scoreboard\nDelayTable {d}/delay\nWtmpLog off\nUseReverseDNS off\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.args(["-n", "-q", "-c"]).arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// Dovecot IMAP on 127.0.0.1:P (no TLS, no POP3).
pub fn dovecot() -> Result<Daemon, SupportError> {
    let bin = require_bin("dovecot", "dovecot-imapd")?;
    tree_launch("dovecot", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("run"))?;
        let conf = write(
            dir,
            "dovecot.conf",
            &format!(
                "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\nssl = no\nmail_location = maildir:{d}/mail\npassdb {{\n  driver = static\n  args = password=x\n}}\nuserdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home={d}/home\n}}\nservice imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\nservice anvil {{\n  chroot =\n}}\nservice imap-login {{\n  chroot =\n}}\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.args(["-F", "-c"]).arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// Exim 4 SMTP daemon on 127.0.0.1:P (`-bdf`), accepting nothing.
pub fn exim() -> Result<Daemon, SupportError> {
    let bin = require_bin("exim4", "exim4-daemon-light")?;
    tree_launch("exim", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        std::fs::create_dir_all(dir.join("spool"))?;
        let conf = write(
            dir,
            "exim.conf",
            &format!(
                "primary_hostname = lab.overlord.test\nlocal_interfaces = <; 127.0.0.1.{port}\ndaemon_smtp_ports = {port}\nspool_directory = {d}/spool\nlog_file_path = {d}/%slog\nexim_user = root\nexim_group = root\nnever_users =\ntrusted_users = root\nbegin acl\nbegin routers\nbegin transports\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.arg("-bdf")
            .arg("-oX")
            .arg(port.to_string())
            .arg("-C")
            .arg(conf);
        Ok((c, loopback(port), None))
    })
}

/// PostgreSQL 15 on 127.0.0.1:P (initdb as the `postgres` user into the temp dir first).
pub fn postgres() -> Result<Daemon, SupportError> {
    let base = Path::new("/usr/lib/postgresql/15/bin");
    if !base.join("postgres").exists() {
        return Err(SupportError::Missing {
            bin: "postgres".into(),
            package: "postgresql".into(),
        });
    }
    tree_launch("postgres", Duration::from_secs(40), &mut |dir, port| {
        let data = dir.join("data");
        let chown = |p: &Path| {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(p)
                .status()
        };
        chown(dir)?;
        let st = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(base.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            return Err(SupportError::Start {
                what: "initdb".into(),
                detail: st.to_string(),
            });
        }
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(base.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir)
            .args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        Ok((c, loopback(port), None))
    })
}

/// MariaDB on 127.0.0.1:P (a fresh datadir made by mariadb-install-db).
pub fn mariadb() -> Result<Daemon, SupportError> {
    let bin = require_bin("mariadbd", "mariadb-server")?;
    let install = require_bin("mariadb-install-db", "mariadb-server")?;
    tree_launch("mariadb", Duration::from_secs(60), &mut |dir, port| {
        let data = dir.join("data");
        let st = Command::new(&install)
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", data.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        if !st.success() {
            return Err(SupportError::Start {
                what: "mariadb-install-db".into(),
                detail: st.to_string(),
            });
        }
        let mut c = cmd(&bin);
        c.args([
            "--no-defaults",
            "--user=root",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--socket={}", dir.join("sock").display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--port={port}"));
        Ok((c, loopback(port), None))
    })
}

/// CUPS (IPP over HTTP) on 127.0.0.1:P.
pub fn cupsd() -> Result<Daemon, SupportError> {
    let bin = require_bin("cupsd", "cups-daemon")?;
    tree_launch("cupsd", Duration::from_secs(20), &mut |dir, port| {
        let d = dir.display();
        for sub in ["spool", "cache", "state", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let conf = write(
            dir,
            "cupsd.conf",
            &format!(
                "Listen 127.0.0.1:{port}\nBrowsing No\nDefaultAuthType None\nWebInterface Yes\n<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
            ),
        )?;
        let files = write(
            dir,
            "cups-files.conf",
            &format!(
                "ServerRoot {d}\nRequestRoot {d}/spool\nCacheDir {d}/cache\nStateDir {d}/state\nTempDir {d}/tmp\nErrorLog stderr\nAccessLog stderr\nPageLog stderr\nSystemGroup root\n"
            ),
        )?;
        let mut c = cmd(&bin);
        c.arg("-f").arg("-c").arg(conf).arg("-s").arg(files);
        Ok((c, loopback(port), None))
    })
}

/// RabbitMQ (AMQP 0-9-1) on 127.0.0.1:P. Erlang distribution and epmd stay on loopback
/// (`ERL_EPMD_ADDRESS`, `inet_dist_use_interface`) on ports of their own.
pub fn rabbitmq() -> Result<Daemon, SupportError> {
    let bin = require_bin("rabbitmq-server", "rabbitmq-server")?;
    let epmd = super::testsupport::free_port();
    let mut d = tree_launch("rabbitmq", Duration::from_secs(90), &mut |dir, port| {
        let dist = super::testsupport::free_port();
        let mut c = cmd(&bin);
        c.env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODENAME", format!("lab{port}@localhost"))
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("ERL_EPMD_PORT", epmd.to_string())
            // No epmd at all (it would daemonize and outlive the test): the node's
            // distribution port is fixed instead.
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                format!("-start_epmd false -erl_epmd_port {dist} -kernel inet_dist_use_interface {{127,0,0,1}}"),
            )
            .env("HOME", dir)
            .current_dir(dir);
        std::fs::create_dir_all(dir.join("mnesia"))?;
        std::fs::create_dir_all(dir.join("log"))?;
        std::fs::write(dir.join("plugins"), "[].\n")?;
        // The server script runs the node as the `rabbitmq` user.
        Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status()?;
        Ok((c, loopback(port), None))
    })?;
    // The scripts start an epmd that daemonizes (parent 1) on our private port: stop it too.
    // The node (beam.smp) runs under a wrapper that SIGTERM does not pass on: stop the whole
    // tree as it was when the node was ready.
    let tree = process_tree(d.pid());
    d.after_stop = Some(Box::new(move || {
        for p in tree.into_iter().skip(1) {
            // SAFETY: kill(2) of a descendant of our own child, recorded at start.
            unsafe {
                libc::kill(p as i32, libc::SIGTERM);
            }
        }
        kill_tcp_listener_holders(epmd)
    }));
    Ok(d)
}

/// SIGTERMs the processes holding a TCP listener on 127.0.0.1:`port` (a private port we chose
/// for a helper we started).
fn kill_tcp_listener_holders(port: u16) {
    let want: std::collections::HashSet<String> = tcp_listeners()
        .unwrap_or_default()
        .into_iter()
        .filter(|(a, _)| a.port() == port)
        .map(|(_, i)| i)
        .collect();
    if want.is_empty() {
        return;
    }
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if socket_inodes(pid as u32).is_ok_and(|i| i.iter().any(|x| want.contains(x))) {
            // SAFETY: kill(2) of a helper process found holding our private port.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}
