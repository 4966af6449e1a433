//! Launchers for real services on loopback and for hostile test servers (feature `testsupport`).
//!
//! Every launcher picks a free loopback port, writes its config into its own temp dir, starts the
//! daemon in the foreground, waits until the port accepts connections and kills the process when
//! the returned guard is dropped. A missing binary is an error that names the Debian package.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

/// A launcher failed.
#[derive(Debug, thiserror::Error)]
pub enum SupportError {
    #[error("{bin} not found: install the Debian package `{package}`")]
    Missing { bin: String, package: String },
    #[error("{what} did not start: {detail}")]
    Start { what: String, detail: String },
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A running daemon; killed on drop.
pub struct Daemon {
    pub name: String,
    pub addr: SocketAddr,
    /// X display number for X servers (`:N`).
    pub display: Option<u16>,
    child: Child,
    pub dir: tempfile::TempDir,
    /// The loopback TCP front of a daemon that itself listens only on a Unix socket (Xvfb).
    _forward: Option<UnixForwarder>,
    /// Clean-up after the child stopped (helpers it spawned that detached, e.g. epmd).
    pub(crate) after_stop: Option<Box<dyn FnOnce() + Send>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        stop_child(&mut self.child);
        if let Some(f) = self.after_stop.take() {
            f();
        }
    }
}

/// How long a stopped child gets to exit after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// Stops a child we spawned: SIGTERM, up to [`STOP_GRACE`] to exit, then SIGKILL; always reaped.
///
/// Not plain `Child::kill` (SIGKILL): a SIGKILLed daemon cannot clean up after itself. An X server
/// leaves `/tmp/.X<n>-lock` and `/tmp/.X11-unix/X<n>` behind (hundreds had piled up on the dev
/// machine), x11vnc its SysV shm segments (4096 of them: every later shmget failed with ENOSPC and
/// x11vnc exited at start, the cause of a CI failure), nginx its worker processes (orphans that
/// keep the listening socket).
pub fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    // SAFETY: kill(2) on our own child, not yet reaped (so its pid cannot have been reused).
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let end = Instant::now() + STOP_GRACE;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Daemon {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The daemon's log (stderr) so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
}

/// Finds a binary in the usual places.
pub fn require_bin(bin: &str, package: &str) -> Result<PathBuf, SupportError> {
    for d in [
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
        "/usr/local/bin",
        "/usr/local/sbin",
        // Unpacked, not installed, by scripts/install-deps.sh (conflicts with an installed package).
        "/opt/overlord-lab/proftpd/usr/sbin",
    ] {
        let p = Path::new(d).join(bin);
        if p.exists() {
            return Ok(p);
        }
    }
    Err(SupportError::Missing {
        bin: bin.into(),
        package: package.into(),
    })
}

/// A port that was free a moment ago on 127.0.0.1 (the shared helper).
pub use overlord_testkit::port::free_port;
use overlord_testkit::port::port_free;

/// Polls until `addr` accepts a TCP connection (not a self-connect) on a listener held by the
/// child itself, or the child exits.
///
/// The port came from [`free_port`]: bound, released, handed to the daemon. In between, another
/// test (or the daemon of a parallel test) may take it; our daemon then fails to bind and exits,
/// but a bare "connect succeeds" check would have accepted the foreign listener and the test would
/// talk to the wrong server. So readiness means: the child's own fds hold the listening socket.
pub(crate) fn wait_ready(
    child: &mut Child,
    addr: SocketAddr,
    limit: Duration,
) -> Result<(), String> {
    let end = Instant::now() + limit;
    let pid = child.id();
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited early with {st}"));
        }
        let ours = tcp_listeners_of(pid).is_ok_and(|l| l.contains(&addr));
        if ours
            && let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            && s.local_addr().ok() != Some(addr)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let others = tcp_listeners_on(addr.port()).unwrap_or_default();
    Err(if others.is_empty() {
        format!("{addr} not accepting connections after {limit:?}")
    } else {
        format!("{addr} held by another process ({others:?}), not pid {pid}, after {limit:?}")
    })
}

/// Spawns `cmd` (stdout/stderr to files in `dir`) and waits for `addr`; retries on a new port
/// via `make` when the first attempt fails (e.g. the port was taken in between).
pub(crate) type Launch = (Command, SocketAddr, Option<u16>);

fn launch(
    name: &str,
    make: &mut dyn FnMut(&Path, u16) -> Result<Launch, SupportError>,
) -> Result<Daemon, SupportError> {
    launch_ready(name, make, &wait_ready, Duration::from_secs(20))
}

/// A readiness check: `Ok` once the child holds what it should (see [`wait_ready`]).
pub(crate) type Ready = dyn Fn(&mut Child, SocketAddr, Duration) -> Result<(), String>;

/// [`launch`] with another readiness check (UDP ports, several ports) and time limit.
pub(crate) fn launch_ready(
    name: &str,
    make: &mut dyn FnMut(&Path, u16) -> Result<Launch, SupportError>,
    ready: &Ready,
    limit: Duration,
) -> Result<Daemon, SupportError> {
    let mut last = String::new();
    for attempt in 1..=3 {
        let dir = tempfile::Builder::new()
            .prefix(&format!("ov-{name}-"))
            .tempdir()?;
        let (mut cmd, addr, display) = make(dir.path(), free_port())?;
        let err = std::fs::File::create(dir.path().join("stderr.log"))?;
        let out = std::fs::File::create(dir.path().join("stdout.log"))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let mut child = cmd.spawn().map_err(|e| SupportError::Start {
            what: name.into(),
            detail: e.to_string(),
        })?;
        // Generous: under load (2 cores, a parallel cargo build) sshd or python start slowly,
        // and a retry would only start the same slow program again.
        match ready(&mut child, addr, limit) {
            Ok(()) => {
                return Ok(Daemon {
                    name: name.into(),
                    addr,
                    display,
                    child,
                    dir,
                    _forward: None,
                    after_stop: None,
                });
            }
            Err(e) => {
                stop_child(&mut child);
                let log =
                    std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                last += &format!(
                    "\nattempt {attempt} on {addr}: {e}; log: {}",
                    log.chars().take(800).collect::<String>()
                );
            }
        }
    }
    Err(SupportError::Start {
        what: name.into(),
        detail: last,
    })
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// OpenSSH's sshd with a fresh ed25519 + ECDSA host key and its own config.
pub fn sshd() -> Result<Daemon, SupportError> {
    let bin = require_bin("sshd", "openssh-server")?;
    let keygen = require_bin("ssh-keygen", "openssh-client")?;
    if is_root() {
        // Privilege-separation directory sshd insists on.
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    launch("sshd", &mut |dir, port| {
        for t in ["ed25519", "ecdsa"] {
            let key = dir.join(format!("host_{t}"));
            if !key.exists() {
                let st = Command::new(&keygen)
                    .args(["-q", "-t", t, "-N", "", "-f"])
                    .arg(&key)
                    .status()?;
                if !st.success() {
                    return Err(SupportError::Start {
                        what: "ssh-keygen".into(),
                        detail: format!("{st}"),
                    });
                }
            }
        }
        let cfg = dir.join("sshd_config");
        std::fs::write(
            &cfg,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nHostKey {d}/host_ecdsa\n\
                 PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nAuthorizedKeysFile none\nLogLevel ERROR\n",
                d = dir.display()
            ),
        )?;
        let mut c = Command::new(&bin);
        c.arg("-D").arg("-e").arg("-f").arg(&cfg);
        Ok((c, loopback(port), None))
    })
}

/// redis-server without persistence; with `password` set, INFO needs AUTH.
pub fn redis(password: Option<&str>) -> Result<Daemon, SupportError> {
    let bin = require_bin("redis-server", "redis-server")?;
    launch("redis", &mut |dir, port| {
        let mut c = Command::new(&bin);
        c.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir);
        if let Some(p) = password {
            c.args(["--requirepass", p]);
        }
        Ok((c, loopback(port), None))
    })
}

/// mosquitto with anonymous access allowed.
pub fn mosquitto() -> Result<Daemon, SupportError> {
    let bin = require_bin("mosquitto", "mosquitto")?;
    launch("mosquitto", &mut |dir, port| {
        let cfg = dir.join("mosquitto.conf");
        std::fs::write(
            &cfg,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest stderr\n"
            ),
        )?;
        let mut c = Command::new(&bin);
        c.arg("-c").arg(&cfg);
        Ok((c, loopback(port), None))
    })
}

/// A self-signed certificate + key (PEM) for `localhost` / 127.0.0.1.
pub fn self_signed_pem() -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen self-signed");
    (ck.cert.pem(), ck.key_pair.serialize_pem())
}

/// nginx serving a small site (`/` redirects to `/home.html`, a favicon); with `tls`, the listener
/// speaks TLS with a fresh self-signed certificate.
pub fn nginx(tls: bool) -> Result<Daemon, SupportError> {
    let bin = require_bin("nginx", "nginx-light")?;
    launch(if tls { "nginx-tls" } else { "nginx" }, &mut |dir, port| {
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(
            www.join("index.html"),
            "<html><head><title>Overlord test page</title></head><body>hello</body></html>\n",
        )?;
        std::fs::write(
            www.join("home.html"),
            "<html><head><title>Overlord home</title></head></html>\n",
        )?;
        std::fs::write(
            www.join("favicon.ico"),
            b"\x00\x00\x01\x00overlord-test-icon",
        )?;
        let tls_cfg = if tls {
            let (cert, key) = self_signed_pem();
            std::fs::write(dir.join("cert.pem"), cert)?;
            std::fs::write(dir.join("key.pem"), key)?;
            format!(
                " ssl;\n ssl_certificate {d}/cert.pem;\n ssl_certificate_key {d}/key.pem",
                d = dir.display()
            )
        } else {
            String::new()
        };
        let user = if is_root() { "user root;\n" } else { "" };
        let d = dir.display();
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "{user}daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n access_log off;\n client_body_temp_path {d}/t1;\n proxy_temp_path {d}/t2;\n\
                 fastcgi_temp_path {d}/t3;\n uwsgi_temp_path {d}/t4;\n scgi_temp_path {d}/t5;\n\
                 server {{\n listen 127.0.0.1:{port}{tls_cfg};\n root {d}/www;\n index index.html;\n\
                 location = / {{ return 302 /home.html; }}\n }}\n}}\n"
            ),
        )?;
        let mut c = Command::new(&bin);
        c.arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"));
        Ok((c, loopback(port), None))
    })
}

/// vsftpd with anonymous login enabled (read-only, empty root).
pub fn vsftpd() -> Result<Daemon, SupportError> {
    let bin = require_bin("vsftpd", "vsftpd")?;
    launch("vsftpd", &mut |dir, port| {
        let root = dir.join("ftproot");
        let empty = dir.join("empty");
        std::fs::create_dir_all(&root)?;
        std::fs::create_dir_all(&empty)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        let cfg = dir.join("vsftpd.conf");
        std::fs::write(
            &cfg,
            format!(
                "listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\n\
                 anonymous_enable=YES\nanon_root={r}\nlocal_enable=NO\nwrite_enable=NO\n\
                 secure_chroot_dir={e}\nseccomp_sandbox=NO\nisolate=NO\nisolate_network=NO\n\
                 xferlog_enable=NO\nnopriv_user=nobody\nftp_username=ftp\nconnect_from_port_20=NO\n",
                r = root.display(),
                e = empty.display()
            ),
        )?;
        let mut c = Command::new(&bin);
        c.arg(&cfg);
        Ok((c, loopback(port), None))
    })
}

/// aiosmtpd (Debian `python3-aiosmtpd`) as an SMTP server.
pub fn smtpd() -> Result<Daemon, SupportError> {
    let py = Path::new("/usr/bin/python3");
    let ok = py.exists()
        && Command::new(py)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
    if !ok {
        return Err(SupportError::Missing {
            bin: "python3 -m aiosmtpd".into(),
            package: "python3-aiosmtpd".into(),
        });
    }
    launch("aiosmtpd", &mut |_dir, port| {
        let mut c = Command::new(py);
        c.args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")]);
        Ok((c, loopback(port), None))
    })
}

/// Whether X display `:n` is taken: a lock file naming a live process (or one we cannot read), or
/// a Unix socket that accepts. A lock or socket left behind by a killed server does not count: the
/// next X server on `:n` removes both (stale locks piled up on a long-lived machine until no
/// display looked free).
pub fn x_display_in_use(n: u16) -> bool {
    let lock = format!("/tmp/.X{n}-lock");
    match std::fs::read_to_string(&lock) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(pid) if !Path::new(&format!("/proc/{pid}")).exists() => {}
            _ => return true,
        },
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return true,
        Err(_) => {}
    }
    let sock = format!("/tmp/.X11-unix/X{n}");
    Path::new(&sock).exists() && std::os::unix::net::UnixStream::connect(&sock).is_ok()
}

/// A free X display number whose TCP port (6000+N) is free too.
fn free_display(ports_too: &[u16]) -> u16 {
    // Spread by pid and by call: parallel tests of one binary share the pid, and with the same
    // start they all raced for the same display (the losers' X servers exit, costing a retry).
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let start = (std::process::id() % 900) as u16
        + NEXT.fetch_add(53, std::sync::atomic::Ordering::Relaxed) % 900;
    for i in 0..900u16 {
        let d = 20 + (start + i * 7) % 900;
        if x_display_in_use(d) {
            continue;
        }
        if port_free(6000 + d) && !ports_too.contains(&(6000 + d)) {
            return d;
        }
    }
    panic!("no free X display number in :20..:919");
}

/// Who may open a connection to an X server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XAccess {
    /// No access control (`-ac`): every client is let in.
    Open,
    /// An empty authorization file (`-auth`): every client, presenting no cookie, is refused.
    Refuse,
    /// A fresh MIT cookie in `<dir>/auth` (`-auth`): only clients with `XAUTHORITY` set to it.
    Cookie,
}

/// What X server to start ([`XServer::start`]).
#[derive(Clone, Debug)]
pub struct XSpec {
    pub width: u32,
    pub height: u32,
    pub access: XAccess,
    /// Reachable over TCP at 127.0.0.1:6000+N through a loopback relay ([`UnixForwarder`]).
    pub tcp: bool,
    /// TigerVNC's Xvnc instead of Xvfb, serving RFB on a free loopback port with these
    /// `-SecurityTypes` ("None", "VncAuth": password `secret12`).
    pub vnc_security: Option<String>,
    /// More server arguments (e.g. `-wr`: white root window).
    pub extra: Vec<String>,
}

impl XSpec {
    /// An Xvfb of `width`×`height`, open, local socket only.
    pub fn xvfb(width: u32, height: u32) -> XSpec {
        XSpec {
            width,
            height,
            access: XAccess::Open,
            tcp: false,
            vnc_security: None,
            extra: Vec::new(),
        }
    }
}

/// A running X server (Xvfb or Xvnc) on display `:N`; stopped on drop (SIGTERM first, so it
/// removes its lock file and socket). The server itself never listens on TCP: its `-listen tcp`
/// binds every interface, so it runs with `-nolisten tcp` and, when asked, a [`UnixForwarder`] on
/// 127.0.0.1:6000+N relays each TCP connection to its Unix socket.
pub struct XServer {
    pub display: u16,
    /// RFB port (Xvnc).
    pub rfb_port: Option<u16>,
    /// The cookie file clients must present ([`XAccess::Cookie`]).
    pub auth: Option<PathBuf>,
    /// The process, its temp dir and log (`stderr.log`), and the TCP relay as `addr` (with `tcp`;
    /// else the RFB address for Xvnc, else 127.0.0.1:6000+N, which nothing serves).
    pub daemon: Daemon,
}

impl XServer {
    /// Starts the server on a free display: ready when the display's lock file names our child
    /// and its socket accepts (and, for Xvnc, when our child holds the RFB port and answers
    /// `RFB `). A display or port taken meanwhile by a parallel test costs a retry on another.
    pub fn start(spec: &XSpec) -> Result<XServer, SupportError> {
        let (bin, pkg) = match spec.vnc_security {
            Some(_) => ("Xvnc", "tigervnc-standalone-server"),
            None => ("Xvfb", "xvfb"),
        };
        let bin = require_bin(bin, pkg)?;
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::Builder::new().prefix("ov-x-").tempdir()?;
            let d = free_display(&[]);
            let rfb = free_port();
            let mut c = Command::new(&bin);
            c.arg(format!(":{d}"))
                .args(["-nolisten", "tcp", "-noreset"]);
            match &spec.vnc_security {
                Some(sec) => {
                    c.args(["-geometry", &format!("{}x{}", spec.width, spec.height)])
                        .args(["-depth", "24", "-localhost", "-rfbport", &rfb.to_string()])
                        .args(["-SecurityTypes", sec]);
                    if sec.contains("VncAuth") {
                        c.arg("-PasswordFile").arg(vnc_password_file(dir.path())?);
                    }
                }
                None => {
                    c.args([
                        "-screen",
                        "0",
                        &format!("{}x{}x24", spec.width, spec.height),
                    ]);
                }
            }
            let auth = match spec.access {
                XAccess::Open => {
                    c.arg("-ac");
                    None
                }
                XAccess::Refuse => {
                    let f = dir.path().join("empty-auth");
                    std::fs::write(&f, b"")?;
                    c.arg("-auth").arg(&f);
                    None
                }
                XAccess::Cookie => {
                    let f = dir.path().join("auth");
                    x_cookie(&f, d)?;
                    c.arg("-auth").arg(&f);
                    Some(f)
                }
            };
            c.args(&spec.extra);
            let err = std::fs::File::create(dir.path().join("stderr.log"))?;
            let out = std::fs::File::create(dir.path().join("stdout.log"))?;
            c.stdin(Stdio::null()).stdout(out).stderr(err);
            let mut child = c.spawn().map_err(|e| SupportError::Start {
                what: "X server".into(),
                detail: e.to_string(),
            })?;
            let sock = PathBuf::from(format!("/tmp/.X11-unix/X{d}"));
            let ready =
                wait_x_socket(&mut child, d, &sock).and_then(|()| match spec.vnc_security {
                    Some(_) => wait_own_rfb(&mut child, rfb),
                    None => Ok(()),
                });
            let forward = ready.and_then(|()| match spec.tcp {
                true => UnixForwarder::start(loopback(6000 + d), sock.clone())
                    .map(Some)
                    .map_err(|e| format!("relay on 127.0.0.1:{}: {e}", 6000 + d)),
                false => Ok(None),
            });
            match forward {
                Ok(forward) => {
                    let addr = match (&forward, spec.vnc_security.is_some()) {
                        (Some(f), _) => f.addr,
                        (None, true) => loopback(rfb),
                        (None, false) => loopback(6000 + d),
                    };
                    return Ok(XServer {
                        display: d,
                        rfb_port: spec.vnc_security.is_some().then_some(rfb),
                        auth,
                        daemon: Daemon {
                            name: "X server".into(),
                            addr,
                            display: Some(d),
                            child,
                            dir,
                            _forward: forward,
                            after_stop: None,
                        },
                    });
                }
                Err(e) => {
                    stop_child(&mut child);
                    let log =
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
                    last += &format!(
                        "\n:{d}: {e}; log: {}",
                        log.chars()
                            .rev()
                            .take(600)
                            .collect::<Vec<_>>()
                            .into_iter()
                            .rev()
                            .collect::<String>()
                    );
                }
            }
        }
        Err(SupportError::Start {
            what: "X server".into(),
            detail: last,
        })
    }

    /// The display name for local clients (`:N`).
    pub fn name(&self) -> String {
        format!(":{}", self.display)
    }

    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// Whether the server process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.daemon.child.try_wait(), Ok(Some(_)))
    }

    /// Where X11 over TCP reaches this server: its loopback relay (127.0.0.1:6000+N), if any.
    pub fn relay(&self) -> Option<SocketAddr> {
        self.daemon._forward.as_ref().map(|f| f.addr)
    }

    /// [`XServer::relay`] of a server started with `tcp`.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.relay().expect("X server started without TCP")
    }
}

/// Ready when the lock file of `:d` names our child (another server may own the display) and
/// its socket accepts; an error when the child exits or 20 s pass.
fn wait_x_socket(child: &mut Child, d: u16, sock: &Path) -> Result<(), String> {
    let lock = PathBuf::from(format!("/tmp/.X{d}-lock"));
    let pid = child.id().to_string();
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited with {st}"));
        }
        let ours = std::fs::read_to_string(&lock).is_ok_and(|l| l.trim() == pid);
        if ours && std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Err(format!("no X socket {} after 20 s", sock.display()))
}

/// Ready when our child itself listens on 127.0.0.1:`port` and an `RFB ` banner comes from it.
/// 127.0.0.1 exactly: an Xvnc whose IPv4 bind failed may serve [::1]:port alone, and a banner
/// check on IPv4 would then meet whoever took the port.
fn wait_own_rfb(child: &mut Child, port: u16) -> Result<(), String> {
    use std::io::Read;
    let own = loopback(port);
    let end = Instant::now() + Duration::from_secs(20);
    while Instant::now() < end {
        if let Ok(Some(st)) = child.try_wait() {
            return Err(format!("exited with {st}"));
        }
        if tcp_listeners_of(child.id()).is_ok_and(|l| l.contains(&own))
            && let Ok(mut s) = std::net::TcpStream::connect_timeout(&own, Duration::from_secs(1))
        {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut b = [0u8; 4];
            if s.read_exact(&mut b).is_ok() && &b == b"RFB " {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let others = tcp_listeners_on(port).unwrap_or_default();
    Err(format!(
        "no RFB banner on {own} after 20 s; listeners: {others:?}"
    ))
}

/// A fresh MIT-MAGIC-COOKIE-1 for display `:d` written to `file` (with `xauth`).
fn x_cookie(file: &Path, d: u16) -> Result<(), SupportError> {
    let xauth = require_bin("xauth", "xauth")?;
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))?;
    let cookie: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let ok = Command::new(xauth)
        .arg("-f")
        .arg(file)
        .args(["add", &format!(":{d}"), ".", &cookie])
        .stderr(Stdio::null())
        .status()?
        .success();
    if !ok {
        return Err(SupportError::Start {
            what: "xauth add".into(),
            detail: file.display().to_string(),
        });
    }
    Ok(())
}

/// A VNC password file for `secret12` (TigerVNC's `vncpasswd -f`).
fn vnc_password_file(dir: &Path) -> Result<PathBuf, SupportError> {
    use std::io::Write;
    let bin = require_bin("vncpasswd", "tigervnc-tools")?;
    let mut ch = Command::new(bin)
        .arg("-f")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    ch.stdin.take().expect("stdin").write_all(b"secret12\n")?;
    let out = ch.wait_with_output()?;
    let f = dir.join("passwd");
    std::fs::write(&f, out.stdout)?;
    Ok(f)
}

/// Xvfb (800×600) reachable over TCP on 127.0.0.1:6000+N — and only there (see [`XServer`]).
/// `open`: no access control; otherwise every client, presenting no cookie, is refused.
pub fn xvfb(open: bool) -> Result<Daemon, SupportError> {
    let x = XServer::start(&XSpec {
        access: if open { XAccess::Open } else { XAccess::Refuse },
        tcp: true,
        ..XSpec::xvfb(800, 600)
    })?;
    let mut d = x.daemon;
    d.name = "xvfb".into();
    Ok(d)
}

/// Relays every TCP connection accepted on a loopback listener to a Unix socket (e.g. an X
/// server's `/tmp/.X11-unix/X<N>`), so a daemon that can only listen on all interfaces can run
/// without TCP and still be reached at a loopback address. One thread accepts; two per connection
/// copy the bytes (when either direction ends, both sockets are shut down). Dropping it closes
/// the listener; open connections end when either side closes.
pub struct UnixForwarder {
    pub addr: SocketAddr,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl UnixForwarder {
    /// Listens on `listen`, which must be a loopback address (port 0 picks a free port).
    pub fn start(listen: SocketAddr, target: PathBuf) -> std::io::Result<UnixForwarder> {
        if !listen.ip().is_loopback() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("forwarder address {listen} is not loopback"),
            ));
        }
        let l = TcpListener::bind(listen)?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let accept = std::thread::Builder::new()
            .name(format!("fwd-{}", addr.port()))
            .spawn(move || {
                while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    match l.accept() {
                        Ok((tcp, _)) => {
                            let unix = std::os::unix::net::UnixStream::connect(&target);
                            if let (Ok(unix), Ok(())) = (unix, tcp.set_nonblocking(false)) {
                                relay(tcp, unix);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })?;
        Ok(UnixForwarder {
            addr,
            stop,
            accept: Some(accept),
        })
    }
}

impl Drop for UnixForwarder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn relay(tcp: std::net::TcpStream, unix: std::os::unix::net::UnixStream) {
    use std::net::Shutdown;
    let (Ok(tcp_w), Ok(unix_w)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let (Ok(tcp_c), Ok(unix_c)) = (tcp.try_clone(), unix.try_clone()) else {
        return;
    };
    let both = Arc::new((tcp_c, unix_c));
    let close = move |b: &(std::net::TcpStream, std::os::unix::net::UnixStream)| {
        let _ = b.0.shutdown(Shutdown::Both);
        let _ = b.1.shutdown(Shutdown::Both);
    };
    let b1 = both.clone();
    std::thread::spawn(move || {
        let (mut from, mut to) = (tcp, unix_w);
        let _ = std::io::copy(&mut from, &mut to);
        close(&b1);
    });
    std::thread::spawn(move || {
        let (mut from, mut to) = (unix, tcp_w);
        let _ = std::io::copy(&mut from, &mut to);
        close(&both);
    });
}

/// TCP sockets in LISTEN state held by process `pid` (its `/proc/<pid>/fd` socket inodes matched
/// against `/proc/net/tcp` and `/proc/net/tcp6`).
pub fn tcp_listeners_of(pid: u32) -> std::io::Result<Vec<SocketAddr>> {
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
    Ok(tcp_listeners()?
        .into_iter()
        .filter(|(_, inode)| inodes.contains(inode))
        .map(|(a, _)| a)
        .collect())
}

/// Every TCP listener of this network namespace on `port` (any process, any address).
pub fn tcp_listeners_on(port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Ok(tcp_listeners()?
        .into_iter()
        .map(|(a, _)| a)
        .filter(|a| a.port() == port)
        .collect())
}

/// (local address, socket inode) of every LISTEN socket in `/proc/net/tcp` and `/proc/net/tcp6`.
pub(crate) fn tcp_listeners() -> std::io::Result<Vec<(SocketAddr, String)>> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(file)?;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue; // 0A = TCP_LISTEN
            }
            if let Some(a) = parse_proc_addr(f[1]) {
                out.push((a, f[9].to_string()));
            }
        }
    }
    Ok(out)
}

/// `0100007F:1770` (IPv4) or 32 hex digits + port (IPv6): 32-bit words in host (little-endian)
/// byte order, port big-endian hex.
pub(crate) fn parse_proc_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).into(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod proc_net_tests {
    #[test]
    fn proc_net_addresses_parse() {
        assert_eq!(
            super::parse_proc_addr("0100007F:1770"),
            Some("127.0.0.1:6000".parse().unwrap())
        );
        assert_eq!(
            super::parse_proc_addr("00000000:0050"),
            Some("0.0.0.0:80".parse().unwrap())
        );
        assert_eq!(
            super::parse_proc_addr("00000000000000000000000001000000:1770"),
            Some("[::1]:6000".parse().unwrap())
        );
        assert_eq!(
            super::parse_proc_addr("00000000000000000000000000000000:1770"),
            Some("[::]:6000".parse().unwrap())
        );
    }

    #[test]
    fn our_own_listener_is_found_with_its_address() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let mine = super::tcp_listeners_of(std::process::id()).unwrap();
        assert!(mine.contains(&a), "{a} not in {mine:?}");
        assert_eq!(super::tcp_listeners_on(a.port()).unwrap(), vec![a]);
    }
}

/// x11vnc exporting an X display without a password (`-nopw`, shared, loopback only).
pub fn x11vnc(display: u16) -> Result<Daemon, SupportError> {
    x11vnc_on(&format!("127.0.0.1:{display}"), &[])
}

/// [`x11vnc`] on any X display name (`:N` for a local socket, `127.0.0.1:N`), with `extra`
/// arguments. `-noipv6`: when another process took the port first, x11vnc exits instead of
/// serving on [::1] alone; `-noshm`: a killed x11vnc leaves no SysV shm segments behind. Ready
/// when its own pid holds the port (a failed attempt is retried on a new port).
pub fn x11vnc_on(display: &str, extra: &[&str]) -> Result<Daemon, SupportError> {
    let bin = require_bin("x11vnc", "x11vnc")?;
    let number = display
        .rsplit(':')
        .next()
        .and_then(|n| n.split('.').next())
        .and_then(|n| n.parse().ok());
    launch("x11vnc", &mut |_dir, port| {
        let mut c = Command::new(&bin);
        c.args(["-display", display]).args([
            "-rfbport",
            &port.to_string(),
            "-localhost",
            "-nopw",
            "-forever",
            "-shared",
            "-noipv6",
            "-noshm",
            "-quiet",
        ]);
        c.args(extra);
        Ok((c, loopback(port), number))
    })
}

/// TigerVNC's Xvnc (an X server with a VNC frontend). `open`: security type None; otherwise
/// VncAuth with a password file (we never try it).
pub fn xvnc(open: bool) -> Result<Daemon, SupportError> {
    let bin = require_bin("Xvnc", "tigervnc-standalone-server")?;
    launch("xvnc", &mut |dir, port| {
        let d = free_display(&[port]);
        let mut c = Command::new(&bin);
        c.arg(format!(":{d}"))
            .args([
                "-rfbport",
                &port.to_string(),
                "-localhost",
                "-geometry",
                "640x480",
                "-depth",
                "24",
            ])
            .args(["-nolisten", "unix", "-nolisten", "tcp", "-noreset"]);
        if open {
            c.args(["-SecurityTypes", "None"]);
        } else {
            let pw = dir.join("passwd");
            // VNC password file: the DES-obfuscated password; content is irrelevant to the test.
            std::fs::write(&pw, [0x17u8, 0x52, 0x6b, 0x06, 0x23, 0x4e, 0x58, 0x07])?;
            c.args(["-SecurityTypes", "VncAuth", "-PasswordFile"])
                .arg(&pw);
        }
        Ok((c, loopback(port), Some(d)))
    })
}

/// An in-process test server; aborted on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What an in-process server does with each connection.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Accepts and never sends anything.
    Silent,
    /// Sends back everything it receives.
    Echo,
    /// Sends this banner, then reads and discards.
    Banner(Vec<u8>),
    /// Sends an endless stream of bytes as fast as the peer reads.
    Endless,
    /// Sends these bytes one per `interval`.
    Drip(Vec<u8>, Duration),
    /// Closes the connection at once.
    CloseAtOnce,
    /// Sends this many pseudo-random bytes then stays silent.
    Garbage(usize),
    /// Reads the ClientHello and answers with a TLS handshake_failure alert.
    TlsAlert,
    /// A real TLS server whose certificate chain has this many certificates.
    TlsChain(usize),
}

/// Starts an in-process server on 127.0.0.1:0 (needs a Tokio runtime).
pub async fn serve(b: Behaviour) -> std::io::Result<TestServer> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let tls = match &b {
        Behaviour::TlsChain(n) => Some(tls_acceptor(*n)),
        _ => None,
    };
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let b = b.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                match b {
                    Behaviour::Silent => {
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Behaviour::Echo => {
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                    Behaviour::Banner(text) => {
                        let _ = s.write_all(&text).await;
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Behaviour::Endless => {
                        let chunk = vec![b'A'; 16 * 1024];
                        while s.write_all(&chunk).await.is_ok() {}
                    }
                    Behaviour::Drip(text, every) => {
                        for c in text.iter().cycle() {
                            if s.write_all(&[*c]).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(every).await;
                        }
                    }
                    Behaviour::CloseAtOnce => drop(s),
                    Behaviour::Garbage(n) => {
                        let mut x: u32 = 0x9e37_79b9;
                        let data: Vec<u8> = (0..n)
                            .map(|_| {
                                x ^= x << 13;
                                x ^= x >> 17;
                                x ^= x << 5;
                                (x >> 11) as u8
                            })
                            .collect();
                        let _ = s.write_all(&data).await;
                        while let Ok(n) = s.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                    Behaviour::TlsAlert => {
                        if let Ok(n) = s.read(&mut buf).await
                            && n > 0
                            && buf[0] == 0x16
                        {
                            let _ = s.write_all(b"\x15\x03\x03\x00\x02\x02\x28").await;
                        }
                    }
                    Behaviour::TlsChain(_) => {
                        if let Some(acc) = tls
                            && let Ok(mut t) = acc.accept(s).await
                        {
                            let _ = t.write_all(b"hello over tls\r\n").await;
                            let _ = t.read(&mut buf).await;
                        }
                    }
                }
            });
        }
    });
    Ok(TestServer { addr, task })
}

fn tls_acceptor(chain_len: usize) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let leaf = CertificateDer::from(ck.cert.der().to_vec());
    let mut chain = vec![leaf.clone()];
    for _ in 1..chain_len.max(1) {
        chain.push(leaf.clone());
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server cert");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}
