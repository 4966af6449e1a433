//! Network namespaces made by tests and benchmarks (needs root / CAP_SYS_ADMIN): a fresh stack
//! with only `lo`, so lossy links (nftables random drop), raw packets and peer scanners never
//! touch the host's interfaces. Named (`ip netns`), so outside tools (`nft`, `zmap`, `nmap`)
//! can be run inside with [`NetNs::command`]; a thread of this process can move in with
//! [`NetNs::enter`] (network namespaces are per thread). Deleted on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("network namespaces need root (CAP_SYS_ADMIN); this process has euid {0}")]
    NotRoot(u32),
    #[error("`{cmd}` failed: {stderr}")]
    Command { cmd: String, stderr: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A namespace this process created.
#[derive(Debug)]
pub struct NetNs {
    pub name: String,
}

fn run(cmd: &mut Command) -> Result<String, NetNsError> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(NetNsError::Command {
            cmd: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether namespaces can be made here (root, `ip` present): `Err` says why not.
pub fn available() -> Result<(), NetNsError> {
    // SAFETY: plain syscall.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(NetNsError::NotRoot(euid));
    }
    run(Command::new("ip").arg("-V")).map(|_| ())
}

impl NetNs {
    /// A new namespace with `lo` up. `tag` goes into the name (`ovl-<tag>-<pid>-<n>`).
    pub fn create(tag: &str) -> Result<NetNs, NetNsError> {
        available()?;
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "ovl-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = NetNs { name };
        run(Command::new("ip").args(["-n", &ns.name, "link", "set", "lo", "up"]))?;
        Ok(ns)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a shell script inside the namespace; its stdout.
    pub fn sh(&self, script: &str) -> Result<String, NetNsError> {
        run(self.command("sh").args(["-c", script]))
    }

    /// Lets raw frames written to `lo` with 127/8 addresses be received (they arrive with no
    /// route attached, so the kernel applies the martian checks that locally routed traffic
    /// skips): `route_localnet` and `accept_local` on `lo`, in this namespace only.
    pub fn allow_raw_loopback(&self) -> Result<(), NetNsError> {
        self.sh(
            "sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.lo.route_localnet=1 \
             net.ipv4.conf.all.accept_local=1 net.ipv4.conf.lo.accept_local=1",
        )
        .map(|_| ())
    }

    /// Moves the calling thread into the namespace (sockets it opens afterwards live there;
    /// other threads are unaffected). Use a dedicated thread.
    pub fn enter(&self) -> Result<(), NetNsError> {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(format!("/var/run/netns/{}", self.name))?;
        // SAFETY: a valid namespace fd; affects only this thread.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Adds a random-drop rule on input: each packet (both directions pass `input` on `lo`) is
    /// dropped with probability `percent`/100. The kernel here has no netem.
    pub fn random_drop(&self, percent: u32) -> Result<(), NetNsError> {
        self.sh(&format!(
            "nft -f - <<'EOF'
table inet ovl_loss {{
  chain input {{
    type filter hook input priority 0; policy accept;
    meta l4proto tcp numgen random mod 1000 < {} counter drop
  }}
}}
EOF",
            percent.min(100) * 10
        ))
        .map(|_| ())
    }

    /// Random loss for a raw-packet scan on `lo`: our injected SYNs only pass `input`, the
    /// kernel's answers pass `output` then `input` and are read from the interface before
    /// `input`; so SYNs are dropped on `input` and answers on `output` (each packet once).
    pub fn random_drop_raw(&self, percent: u32) -> Result<(), NetNsError> {
        let p = percent.min(100) * 10;
        self.sh(&format!(
            "nft -f - <<'EOF'
table inet ovl_loss {{
  chain input {{
    type filter hook input priority 0; policy accept;
    tcp flags & (syn | ack) == syn numgen random mod 1000 < {p} counter drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    meta l4proto tcp numgen random mod 1000 < {p} counter drop
  }}
}}
EOF"
        ))
        .map(|_| ())
    }

    /// Random loss for a UDP scan on `lo`: every UDP datagram and ICMP error (both pass `input`
    /// once) is dropped with probability `percent`/100.
    pub fn random_drop_udp(&self, percent: u32) -> Result<(), NetNsError> {
        let p = percent.min(100) * 10;
        self.sh(&format!(
            "nft -f - <<'EOF'
table inet ovl_loss {{
  chain input {{
    type filter hook input priority 0; policy accept;
    meta l4proto {{ udp, icmp, ipv6-icmp }} numgen random mod 1000 < {p} counter drop
  }}
}}
EOF"
        ))
        .map(|_| ())
    }

    /// TX packet count of an interface of the namespace.
    pub fn tx_packets(&self, dev: &str) -> Result<u64, NetNsError> {
        let out = run(Command::new("ip").args(["-n", &self.name, "-s", "link", "show", dev]))?;
        // "TX:  bytes packets ..." then the numbers on the next line.
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.trim_start().starts_with("TX:") {
                return lines
                    .next()
                    .and_then(|n| n.split_whitespace().nth(1))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| NetNsError::Command {
                        cmd: "ip -s link".into(),
                        stderr: format!("no TX counters in {out:?}"),
                    });
            }
        }
        Err(NetNsError::Command {
            cmd: "ip -s link".into(),
            stderr: format!("no TX line in {out:?}"),
        })
    }

    /// Packets dropped by [`NetNs::random_drop`] so far.
    pub fn dropped(&self) -> Result<u64, NetNsError> {
        let out = run(self
            .command("nft")
            .args(["list", "table", "inet", "ovl_loss"]))?;
        Ok(out
            .split("packets ")
            .skip(1)
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
