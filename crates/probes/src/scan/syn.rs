//! Stateless SYN scan: raw SYNs written to one pinned interface (an `AF_PACKET` socket bound to
//! it: nothing can leave through any other interface, whatever the routing table says), replies
//! read from the same socket, validated with no per-probe state by a cookie: the SYN's sequence
//! number is a keyed hash of the 4-tuple, so a SYN-ACK or RST answers probe `(dst, port)` only if
//! it comes from there to our source address and port with `ack == cookie + 1`.
//!
//! The kernel's own RSTs: the scanning host's kernel has no socket for our source port, so it
//! answers each SYN-ACK with a RST. That is what a SYN scanner wants (the target's half-open
//! connection is torn down, as with `nmap -sS`), and it cannot be mistaken for an answer: it
//! goes from our address to the target, not back, and carries no valid cookie ack.
//!
//! Needs CAP_NET_RAW in the calling thread's effective set ([`SynScanner::new`] refuses with an
//! error saying so). Loss is handled as in the connect sweep: unanswered probes are re-sent in
//! rounds per target network, driven by the measured yield ([`super::retry`]).
//!
//! On `lo` (tests, benchmarks — in a namespace they make), frames carry all-zero MACs and the
//! namespace needs `route_localnet` + `accept_local` ([`crate::netns::NetNs::allow_raw_loopback`]):
//! raw frames arrive with no route attached, so the kernel applies the martian checks.

use super::connect::{Outcome, Probe, Rtt, SweepReport};
use super::retry::{LossBook, Net, RetryPolicy};
use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum SynError {
    #[error(
        "the syn scan needs CAP_NET_RAW (raw packets); run the minion as root or grant it: setcap cap_net_raw+ep <binary>"
    )]
    NoCapNetRaw,
    #[error("interface {0:?} not found")]
    NoInterface(String),
    #[error("source address {src} and target {dst} are of different families")]
    Family { src: IpAddr, dst: IpAddr },
    #[error("raw socket: {0}")]
    Io(#[from] std::io::Error),
}

/// SYN scan knobs.
#[derive(Clone, Debug)]
pub struct SynOptions {
    /// The one interface packets go out of and replies are read from.
    pub interface: String,
    pub source_v4: std::net::Ipv4Addr,
    pub source_v6: std::net::Ipv6Addr,
    /// Our first source port (the cookie is in the sequence number, not the port). Round `r` of
    /// re-sends uses `source_port + r % SOURCE_PORTS`: a re-sent SYN on the same 4-tuple as a
    /// lost SYN-ACK would meet the target's half-open connection, whose kernel answers a
    /// duplicate SYN at most once per 500 ms (Linux `tcp_invalid_ratelimit`) — a new source port
    /// is a new connection, answered at once.
    pub source_port: u16,
    pub src_mac: [u8; 6],
    /// Next hop's MAC (all zeros on `lo`).
    pub gateway_mac: [u8; 6],
    /// Packets per second, 0 = as fast as the socket takes them.
    pub rate_limit: u32,
    /// Upper bound of the wait for answers after a round's last SYN. The wait itself follows the
    /// measured RTT (srtt + 4·rttvar, at least `wait_min`; `wait` until the first answer), and a
    /// round whose probes have all been answered ends at once.
    pub wait: Duration,
    pub wait_min: Duration,
    pub policy: RetryPolicy,
    /// Cookie key (random per scan by default).
    pub key: u64,
}

impl Default for SynOptions {
    fn default() -> Self {
        let mut key = [0u8; 8];
        // Best effort: a scan with a predictable key only risks spoofed "open" answers.
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            use std::io::Read;
            let _ = f.read_exact(&mut key);
        }
        SynOptions {
            interface: "lo".into(),
            source_v4: std::net::Ipv4Addr::LOCALHOST,
            source_v6: std::net::Ipv6Addr::LOCALHOST,
            source_port: 61_000,
            src_mac: [0x02, 0, 0, 0, 0, 1],
            gateway_mac: [0; 6],
            rate_limit: 0,
            wait: Duration::from_millis(200),
            wait_min: Duration::from_millis(20),
            policy: RetryPolicy::default(),
            key: u64::from_le_bytes(key),
        }
    }
}

/// Source ports one scan uses, from [`SynOptions::source_port`] (see there).
pub const SOURCE_PORTS: u16 = 16;

impl SynOptions {
    /// The source port of re-send round `round`.
    pub fn source_port_of(&self, round: u32) -> u16 {
        let span = (65_536 - self.source_port as u32).min(SOURCE_PORTS as u32);
        self.source_port + (round % span.max(1)) as u16
    }

    /// Whether `port` is one of this scan's source ports.
    pub fn is_source_port(&self, port: u16) -> bool {
        port >= self.source_port && u32::from(port - self.source_port) < SOURCE_PORTS as u32
    }
}

/// The keyed cookie of a 4-tuple (SipHash-like mixing of the key with the tuple).
pub fn cookie(key: u64, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> u32 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    let fold = |ip: IpAddr| -> u64 {
        match ip {
            IpAddr::V4(a) => u32::from(a) as u64,
            IpAddr::V6(a) => {
                let v = u128::from(a);
                mix(v as u64) ^ (v >> 64) as u64
            }
        }
    };
    let mut h = mix(key ^ fold(src));
    h = mix(h ^ fold(dst));
    h = mix(h ^ ((sport as u64) << 16 | dport as u64));
    (h ^ (h >> 32)) as u32
}

/// Whether the calling thread has CAP_NET_RAW in its effective set.
pub fn has_cap_net_raw() -> bool {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a v3 header and two data structs, as the ABI requires.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    r == 0 && d[0].effective & (1 << 13) != 0
}

fn csum_add(mut sum: u32, b: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        sum += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    if i < b.len() {
        sum += (b[i] as u32) << 8;
    }
    sum
}

fn csum_fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Builds an Ethernet + IPv4/IPv6 + TCP SYN frame into `buf`; returns its length.
pub fn build_syn(
    buf: &mut [u8; 128],
    o: &SynOptions,
    sport: u16,
    src: IpAddr,
    dst: IpAddr,
    dport: u16,
    seq: u32,
) -> usize {
    buf[0..6].copy_from_slice(&o.gateway_mac);
    buf[6..12].copy_from_slice(&o.src_mac);
    let tcp_len = 24usize; // 20 + MSS option
    let (l3, ip_len) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let ip = &mut buf[14..34];
            ip.fill(0);
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip[4..6].copy_from_slice(&((seq >> 16) as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = 6;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let c = csum_fold(csum_add(0, ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            (14usize, 20usize)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            buf[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
            let ip = &mut buf[14..54];
            ip.fill(0);
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
            ip[6] = 6;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            (14usize, 40usize)
        }
        _ => unreachable!("families checked by the caller"),
    };
    let t0 = l3 + ip_len;
    let tcp = &mut buf[t0..t0 + tcp_len];
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = ((tcp_len / 4) as u8) << 4;
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&1024u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    // Pseudo-header checksum.
    let mut sum = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            sum = csum_add(sum, &s.octets());
            sum = csum_add(sum, &d.octets());
            sum += 6 + tcp_len as u32;
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            sum = csum_add(sum, &s.octets());
            sum = csum_add(sum, &d.octets());
            sum += tcp_len as u32 + 6;
        }
        _ => {}
    }
    sum = csum_add(sum, tcp);
    let c = csum_fold(sum);
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    t0 + tcp_len
}

/// A validated answer parsed from a received frame: (target, target port, our port, ack, flags).
pub fn parse_reply(frame: &[u8]) -> Option<(IpAddr, u16, IpAddr, u16, u32, u8)> {
    if frame.len() < 14 {
        return None;
    }
    let et = u16::from_be_bytes([frame[12], frame[13]]);
    let (src, dst, t0) = match et {
        0x0800 => {
            let ip = frame.get(14..34)?;
            if ip[0] >> 4 != 4 || ip[9] != 6 {
                return None;
            }
            let ihl = (ip[0] & 0x0f) as usize * 4;
            let s = IpAddr::V4(<[u8; 4]>::try_from(&ip[12..16]).ok()?.into());
            let d = IpAddr::V4(<[u8; 4]>::try_from(&ip[16..20]).ok()?.into());
            (s, d, 14 + ihl)
        }
        0x86DD => {
            let ip = frame.get(14..54)?;
            if ip[0] >> 4 != 6 || ip[6] != 6 {
                return None;
            }
            let s = IpAddr::V6(<[u8; 16]>::try_from(&ip[8..24]).ok()?.into());
            let d = IpAddr::V6(<[u8; 16]>::try_from(&ip[24..40]).ok()?.into());
            (s, d, 54)
        }
        _ => return None,
    };
    let tcp = frame.get(t0..t0 + 20)?;
    let sport = u16::from_be_bytes([tcp[0], tcp[1]]);
    let dport = u16::from_be_bytes([tcp[2], tcp[3]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    Some((src, sport, dst, dport, ack, tcp[13]))
}

fn ifindex(name: &str) -> Option<i32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i as i32)
}

/// The bookkeeping of one scan: outcomes, the loss book, and the send time of each probe (for
/// the RTT estimate that sizes the waits).
struct ScanState {
    index: HashMap<(IpAddr, u16), usize>,
    rep: SweepReport,
    book: LossBook,
    rtt: Rtt,
    t0: Instant,
    sent_at_us: Vec<u64>,
    answered_in_round: usize,
}

/// A raw socket pinned to one interface.
pub struct SynScanner {
    fd: RawFd,
    ifindex: i32,
    o: SynOptions,
}

impl Drop for SynScanner {
    fn drop(&mut self) {
        // SAFETY: our fd.
        unsafe { libc::close(self.fd) };
    }
}

impl SynScanner {
    /// Opens the raw socket, bound to `o.interface`. Refuses without CAP_NET_RAW.
    pub fn new(o: SynOptions) -> Result<Self, SynError> {
        if !has_cap_net_raw() {
            return Err(SynError::NoCapNetRaw);
        }
        let ifindex =
            ifindex(&o.interface).ok_or_else(|| SynError::NoInterface(o.interface.clone()))?;
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain syscall.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                proto,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EPERM) {
                return Err(SynError::NoCapNetRaw);
            }
            return Err(e.into());
        }
        let s = SynScanner { fd, ifindex, o };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex;
        // Pinning: bound to the interface, frames are sent there and only its frames are read.
        // SAFETY: sll is a valid sockaddr_ll.
        if unsafe {
            libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        } < 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
        let buf: libc::c_int = 8 << 20;
        // SAFETY: valid fd and int option.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                &buf as *const _ as *const _,
                4,
            );
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                &buf as *const _ as *const _,
                4,
            );
        }
        Ok(s)
    }

    fn source_for(&self, dst: IpAddr) -> IpAddr {
        match dst {
            IpAddr::V4(_) => IpAddr::V4(self.o.source_v4),
            IpAddr::V6(_) => IpAddr::V6(self.o.source_v6),
        }
    }

    fn send(&self, frame: &[u8]) -> std::io::Result<bool> {
        // SAFETY: zeroed sockaddr_ll is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&self.o.gateway_mac);
        // SAFETY: frame and sll are valid for their lengths.
        let r = unsafe {
            libc::sendto(
                self.fd,
                frame.as_ptr() as *const _,
                frame.len(),
                0,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOBUFS)) {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Reads every queued frame; records validated answers (and their RTT, from the probe's
    /// send time: timing only, validation needs no state).
    fn drain(&self, st: &mut ScanState, probes: &[Probe]) -> std::io::Result<()> {
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: zeroed sockaddr_ll is valid; recvfrom writes at most its size.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut sl = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            let n = unsafe {
                libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr() as *mut _,
                    buf.len(),
                    0,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut sl,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EAGAIN) {
                    return Ok(());
                }
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(e);
            }
            if sll.sll_pkttype == libc::PACKET_OUTGOING as u8 {
                continue;
            }
            let Some((src, sport, dst, dport, ack, flags)) = parse_reply(&buf[..n as usize]) else {
                continue;
            };
            if !self.o.is_source_port(dport) || dst != self.source_for(src) {
                continue;
            }
            // SYN-ACK = open, RST = closed; anything else (or a bad cookie) is ignored.
            let out = match flags & 0x16 {
                0x12 => Outcome::Open,
                f if f & 0x04 != 0 => Outcome::Closed,
                _ => continue,
            };
            if ack != cookie(self.o.key, dst, dport, src, sport).wrapping_add(1) {
                continue;
            }
            let Some(&i) = st.index.get(&(src, sport)) else {
                continue;
            };
            if st.rep.outcomes[i] == Outcome::Unanswered {
                st.rep.outcomes[i] = out;
                st.rep.count_answer(Net::of(probes[i].0));
                st.book.record(Net::of(probes[i].0), true);
                st.answered_in_round += 1;
                let us = st.t0.elapsed().as_micros() as u64;
                st.rtt.sample(us.saturating_sub(st.sent_at_us[i]) as f64);
            }
        }
    }

    /// Scans `probes` (callers randomise the order). Blocking.
    pub fn scan(&self, probes: &[Probe]) -> Result<SweepReport, SynError> {
        let o = &self.o;
        for p in probes {
            let src = self.source_for(p.0);
            if src.is_ipv4() != p.0.is_ipv4() {
                return Err(SynError::Family { src, dst: p.0 });
            }
        }
        let mut st = ScanState {
            index: probes.iter().enumerate().map(|(i, p)| (*p, i)).collect(),
            rep: SweepReport {
                outcomes: vec![Outcome::Unanswered; probes.len()],
                ..Default::default()
            },
            book: LossBook::default(),
            rtt: Rtt::default(),
            t0: Instant::now(),
            sent_at_us: vec![0; probes.len()],
            answered_in_round: 0,
        };
        // Our own source ports on our own address would be answered by ourselves: closed.
        let mut todo = Vec::with_capacity(probes.len());
        for (i, p) in probes.iter().enumerate() {
            if o.is_source_port(p.1) && p.0 == self.source_for(p.0) {
                st.rep.outcomes[i] = Outcome::Closed;
            } else {
                todo.push(i);
            }
        }
        let interval =
            (o.rate_limit > 0).then(|| Duration::from_secs_f64(1.0 / o.rate_limit as f64));
        let mut frame = [0u8; 128];
        let mut round = 0u32;
        loop {
            let t0 = Instant::now();
            let mut next_send = t0;
            st.answered_in_round = 0;
            for (k, &i) in todo.iter().enumerate() {
                if let Some(iv) = interval {
                    let now = Instant::now();
                    if now < next_send {
                        std::thread::sleep(next_send - now);
                    }
                    next_send += iv;
                }
                let (dst, port) = probes[i];
                let src = self.source_for(dst);
                let sport = o.source_port_of(round);
                let seq = cookie(o.key, src, sport, dst, port);
                let len = build_syn(&mut frame, o, sport, src, dst, port, seq);
                while !self.send(&frame[..len])? {
                    self.drain(&mut st, probes)?;
                    std::thread::sleep(Duration::from_micros(50));
                }
                st.sent_at_us[i] = st.t0.elapsed().as_micros() as u64;
                st.rep.count_send(Net::of(dst), round > 0);
                if k % 64 == 63 {
                    self.drain(&mut st, probes)?;
                }
            }
            // Wait for the stragglers: the RTT-driven wait, or less when every probe of the
            // round has been answered.
            let end = Instant::now() + st.rtt.bounded(o.wait_min, o.wait);
            while Instant::now() < end && st.answered_in_round < todo.len() {
                self.drain(&mut st, probes)?;
                if st.answered_in_round >= todo.len() {
                    break;
                }
                let mut pfd = libc::pollfd {
                    fd: self.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = end
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .max(1) as i32;
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            self.drain(&mut st, probes)?;
            st.rep.rounds = round + 1;
            // Per-network accounting of the round: sends minus answers are the unanswered.
            let mut unanswered: HashMap<Net, u64> = HashMap::new();
            for &i in &todo {
                let n = Net::of(probes[i].0);
                if st.rep.outcomes[i] == Outcome::Unanswered {
                    *unanswered.entry(n).or_default() += 1;
                    st.book.record(n, false);
                }
            }
            // `record(.., true)` ran at answer time; complete `sent` for answered probes of this
            // round is implied (sent = answered + unanswered).
            let again = st.book.decide(&o.policy, round, &unanswered);
            if again.is_empty() {
                break;
            }
            todo.retain(|&i| {
                st.rep.outcomes[i] == Outcome::Unanswered
                    && again.binary_search(&Net::of(probes[i].0)).is_ok()
            });
            round += 1;
        }
        st.rep.srtt_us = st.rtt.srtt as u64;
        Ok(st.rep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_frames_check_out() {
        let o = SynOptions::default();
        let mut f = [0u8; 128];
        let src: IpAddr = "127.0.0.1".parse().unwrap();
        let dst: IpAddr = "127.0.0.9".parse().unwrap();
        let n = build_syn(&mut f, &o, o.source_port, src, dst, 80, 0xdead_beef);
        assert_eq!(n, 14 + 20 + 24);
        // IPv4 header checksum verifies to zero.
        assert_eq!(csum_fold(csum_add(0, &f[14..34])), 0);
        // TCP checksum over the pseudo-header verifies to zero.
        let mut s = csum_add(0, &f[26..34]);
        s += 6 + 24;
        assert_eq!(csum_fold(csum_add(s, &f[34..58])), 0);
        let (s2, sp, d2, dp, _, flags) = parse_reply(&f[..n]).unwrap();
        assert_eq!((s2, sp, d2, dp, flags), (src, o.source_port, dst, 80, 0x02));
        let n6 = build_syn(
            &mut f,
            &o,
            o.source_port,
            "::1".parse().unwrap(),
            "::1".parse().unwrap(),
            443,
            1,
        );
        assert_eq!(n6, 14 + 40 + 24);
        let mut s = csum_add(0, &f[22..54]);
        s += 24 + 6;
        assert_eq!(csum_fold(csum_add(s, &f[54..78])), 0);
    }

    #[test]
    fn rounds_cycle_through_the_source_ports_and_stay_in_range() {
        let o = SynOptions::default();
        assert_eq!(o.source_port_of(0), 61_000);
        assert_eq!(o.source_port_of(3), 61_003);
        assert_eq!(o.source_port_of(16), 61_000);
        assert!(o.is_source_port(61_015) && !o.is_source_port(61_016) && !o.is_source_port(60_999));
        let top = SynOptions {
            source_port: 65_530,
            ..Default::default()
        };
        assert!((0..40).all(|r| top.source_port_of(r) >= 65_530));
        assert!(top.is_source_port(65_535));
    }

    #[test]
    fn cookies_depend_on_every_part_of_the_tuple_and_the_key() {
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let c = cookie(1, a, 1000, b, 80);
        assert_ne!(c, cookie(2, a, 1000, b, 80));
        assert_ne!(c, cookie(1, b, 1000, a, 80));
        assert_ne!(c, cookie(1, a, 1001, b, 80));
        assert_ne!(c, cookie(1, a, 1000, b, 81));
        assert_eq!(c, cookie(1, a, 1000, b, 80));
    }
}
