//! The sweep engine of the TCP connect scan: many non-blocking connects in flight from one thread
//! (epoll), an adaptive per-probe timeout from measured RTT, and loss-driven re-send rounds
//! ([`super::retry`]). Runs on a blocking thread; memory is bounded by the probe list it is given
//! (a task: a block of addresses × a chunk of ports) plus the in-flight window.
//!
//! Why not `tokio::net::TcpStream::connect` per probe: each one costs a task, an epoll
//! registration and a wake-up; a loopback connect to a closed port is usually refused before
//! `connect(2)` returns, so most probes here finish with two syscalls and never touch epoll.

use super::retry::{LossBook, Net, RetryPolicy};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One probe: an address and a port.
pub type Probe = (IpAddr, u16);

/// What a probe ended as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Open,
    /// Refused, unreachable, or a loopback self-connect.
    Closed,
    /// No answer after every round this probe's network got.
    Unanswered,
}

/// Sweep knobs.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// Connects in flight at once (this sweep).
    pub window: usize,
    /// Per-probe timeout bounds; the timeout itself follows measured RTT (srtt + 4·rttvar).
    pub timeout_min: Duration,
    pub timeout_max: Duration,
    /// Connect attempts per second, 0 = unlimited.
    pub rate_limit: u32,
    pub policy: RetryPolicy,
    /// Process-wide cap on sockets in flight, shared by concurrent sweeps.
    pub shared_limit: Option<Arc<SharedLimit>>,
}

impl Default for SweepOptions {
    fn default() -> Self {
        SweepOptions {
            window: 2048,
            timeout_min: Duration::from_millis(40),
            timeout_max: Duration::from_millis(1000),
            rate_limit: 0,
            policy: RetryPolicy::default(),
            shared_limit: None,
        }
    }
}

/// A process-wide budget of sockets in flight.
#[derive(Debug)]
pub struct SharedLimit {
    cap: usize,
    used: AtomicUsize,
}

impl SharedLimit {
    pub fn new(cap: usize) -> Self {
        SharedLimit {
            cap,
            used: AtomicUsize::new(0),
        }
    }
    fn try_take(&self) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                (u < self.cap).then_some(u + 1)
            })
            .is_ok()
    }
    fn put(&self) {
        self.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a sweep did, for the result and the job's quality ledger.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SweepReport {
    /// Outcome of each probe, in the order given.
    pub outcomes: Vec<Outcome>,
    /// Connect attempts made (first sends + re-sends).
    pub sent: u64,
    /// Probes answered (open or closed).
    pub answered: u64,
    /// Re-sends (attempts after a probe's first).
    pub retried: u64,
    /// Rounds run (1 = no re-send).
    pub rounds: u32,
    /// Smoothed RTT at the end (µs).
    pub srtt_us: u64,
    /// The same counts per target network (for the job's quality ledger).
    pub nets: std::collections::BTreeMap<Net, NetCount>,
}

/// Probe counts of one target network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCount {
    pub sent: u64,
    pub answered: u64,
    pub retried: u64,
}

impl SweepReport {
    pub(crate) fn count_send(&mut self, net: Net, resend: bool) {
        self.sent += 1;
        self.retried += resend as u64;
        let n = self.nets.entry(net).or_default();
        n.sent += 1;
        n.retried += resend as u64;
    }

    pub(crate) fn count_answer(&mut self, net: Net) {
        self.answered += 1;
        self.nets.entry(net).or_default().answered += 1;
    }
}

impl SweepReport {
    pub fn open<'a>(&'a self, probes: &'a [Probe]) -> impl Iterator<Item = Probe> + 'a {
        probes
            .iter()
            .zip(&self.outcomes)
            .filter(|(_, o)| **o == Outcome::Open)
            .map(|(p, _)| *p)
    }
}

/// RFC 6298-style RTT estimator (also the UDP scan's adaptive wait).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Rtt {
    pub(crate) srtt: f64,
    rttvar: f64,
    seen: bool,
}

impl Rtt {
    pub(crate) fn sample(&mut self, us: f64) {
        if !self.seen {
            self.srtt = us;
            self.rttvar = us / 2.0;
            self.seen = true;
        } else {
            self.rttvar = 0.75 * self.rttvar + 0.25 * (self.srtt - us).abs();
            self.srtt = 0.875 * self.srtt + 0.125 * us;
        }
    }
    fn timeout(&self, o: &SweepOptions) -> Duration {
        self.bounded(o.timeout_min, o.timeout_max)
    }
    /// srtt + 4·rttvar within `[min, max]`; `max` until the first sample.
    pub(crate) fn bounded(&self, min: Duration, max: Duration) -> Duration {
        if !self.seen {
            return max;
        }
        Duration::from_micros((self.srtt + 4.0 * self.rttvar) as u64).clamp(min, max.max(min))
    }
}

struct Slot {
    fd: RawFd,
    probe: usize,
    sent: Instant,
}

fn sockaddr(dst: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; zeroed is a valid value.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match dst {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write(&mut ss as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn so_error(fd: RawFd) -> i32 {
    let mut e: libc::c_int = 0;
    let mut l = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd, out-pointers to locals of the right size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut e as *mut _ as *mut _,
            &mut l,
        )
    };
    if r < 0 { errno() } else { e }
}

/// The local address a socket was given (the ephemeral port picked by connect(2)).
fn local_addr(fd: RawFd) -> Option<SocketAddr> {
    // SAFETY: zeroed sockaddr_storage is valid; getsockname writes at most `l` bytes.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut l = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { libc::getsockname(fd, &mut ss as *mut _ as *mut _, &mut l) } < 0 {
        return None;
    }
    match ss.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read(&ss as *const _ as *const _) };
            Some(SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read(&ss as *const _ as *const _) };
            Some(SocketAddr::from((
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
            )))
        }
        _ => None,
    }
}

/// Whether a connect that succeeded reached a service, not one of our own sockets. Besides a
/// socket connected to itself, two of our loopback probes can open each other: A (local port Y)
/// probes port X while B (local port X) probes port Y — a simultaneous open that "succeeds" on
/// both with no listener. `ours` holds every local address our loopback probes were given; a
/// port with a listener is never handed out as an ephemeral port, so a hit there is a crossing.
fn reached_service(fd: RawFd, dst: SocketAddr, ours: &HashSet<SocketAddr>) -> bool {
    // A socket connected to itself has the destination as its own local address.
    !(local_addr(fd) == Some(dst) || ours.contains(&dst))
}

fn close_rst(fd: RawFd) {
    // Abortive close: a RST instead of FIN (no TIME_WAIT, the peer's accept queue is not filled).
    let lg = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: valid fd and a linger struct of the right size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &lg as *const _ as *const _,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
        libc::close(fd);
    }
}

/// Sweeps `probes` (in the given order; callers randomise). Blocking.
pub fn sweep(probes: &[Probe], o: &SweepOptions) -> std::io::Result<SweepReport> {
    let mut rep = SweepReport {
        outcomes: vec![Outcome::Unanswered; probes.len()],
        ..Default::default()
    };
    // SAFETY: plain syscall.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut rtt = Rtt {
        srtt: 0.0,
        rttvar: 0.0,
        seen: false,
    };
    let mut book = LossBook::default();
    let mut todo: Vec<usize> = (0..probes.len()).collect();
    let mut round = 0u32;
    let mut ours = HashSet::new();
    let result = loop {
        if let Err(e) = pass(
            ep,
            probes,
            &todo,
            o,
            &mut rtt,
            &mut rep,
            &mut book,
            &mut ours,
            round > 0,
        ) {
            break Err(e);
        }
        rep.rounds = round + 1;
        let mut unanswered: HashMap<Net, u64> = HashMap::new();
        for &i in &todo {
            if rep.outcomes[i] == Outcome::Unanswered {
                *unanswered.entry(Net::of(probes[i].0)).or_default() += 1;
            }
        }
        let again = book.decide(&o.policy, round, &unanswered);
        if again.is_empty() {
            break Ok(());
        }
        todo.retain(|&i| {
            rep.outcomes[i] == Outcome::Unanswered
                && again.binary_search(&Net::of(probes[i].0)).is_ok()
        });
        round += 1;
    };
    // SAFETY: our epoll fd.
    unsafe { libc::close(ep) };
    rep.srtt_us = rtt.srtt as u64;
    result.map(|_| rep)
}

#[allow(clippy::too_many_arguments)]
fn pass(
    ep: RawFd,
    probes: &[Probe],
    todo: &[usize],
    o: &SweepOptions,
    rtt: &mut Rtt,
    rep: &mut SweepReport,
    book: &mut LossBook,
    ours: &mut HashSet<SocketAddr>,
    resend: bool,
) -> std::io::Result<()> {
    let window = o.window.max(1);
    let mut slots: Vec<Option<Slot>> = Vec::with_capacity(window);
    let mut free: Vec<usize> = Vec::new();
    let mut gens: Vec<u32> = Vec::new();
    let mut deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>> = BinaryHeap::new();
    let mut inflight = 0usize;
    let mut next = 0usize;
    let interval = (o.rate_limit > 0).then(|| Duration::from_secs_f64(1.0 / o.rate_limit as f64));
    let mut next_send = Instant::now();
    let mut events: Vec<libc::epoll_event> = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let finish = |rep: &mut SweepReport, book: &mut LossBook, i: usize, out: Outcome| {
        rep.outcomes[i] = out;
        let answered = out != Outcome::Unanswered;
        if answered {
            rep.count_answer(Net::of(probes[i].0));
        }
        book.record(Net::of(probes[i].0), answered);
    };
    let release = |o: &SweepOptions| {
        if let Some(l) = &o.shared_limit {
            l.put();
        }
    };
    loop {
        // 1. Open connects while the window, the shared budget and the pacer allow.
        let mut blocked = false;
        while next < todo.len() && inflight < window {
            let now = Instant::now();
            if let Some(iv) = interval {
                if now < next_send {
                    break;
                }
                next_send = next_send.max(now.checked_sub(iv).unwrap_or(now)) + iv;
            }
            if let Some(l) = &o.shared_limit {
                if !l.try_take() {
                    blocked = true;
                    break;
                }
            }
            let i = todo[next];
            let dst = SocketAddr::new(probes[i].0, probes[i].1);
            let fam = if dst.is_ipv4() {
                libc::AF_INET
            } else {
                libc::AF_INET6
            };
            // SAFETY: plain syscall.
            let fd = unsafe {
                libc::socket(
                    fam,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                )
            };
            if fd < 0 {
                release(o);
                let e = errno();
                if matches!(
                    e,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) && inflight > 0
                {
                    blocked = true;
                    break;
                }
                return Err(std::io::Error::from_raw_os_error(e));
            }
            let (sa, len) = sockaddr(dst);
            // SAFETY: sa is a valid sockaddr of `len` bytes.
            let r = unsafe { libc::connect(fd, &sa as *const _ as *const libc::sockaddr, len) };
            let e = if r == 0 { 0 } else { errno() };
            if e == libc::EADDRNOTAVAIL || e == libc::EAGAIN {
                // Out of ephemeral ports for now: retry this probe once something completes.
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
                release(o);
                if inflight > 0 {
                    blocked = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            next += 1;
            rep.count_send(Net::of(dst.ip()), resend);
            if dst.ip().is_loopback()
                && (e == 0 || e == libc::EINPROGRESS)
                && let Some(a) = local_addr(fd)
            {
                ours.insert(a);
            }
            // Loopback often answers inside connect(2): check before involving epoll.
            let e = if e == libc::EINPROGRESS {
                so_error(fd)
            } else {
                e
            };
            // (SO_ERROR is 0 while the handshake is still in progress.)
            if e != 0 || r == 0 {
                rtt.sample(now.elapsed().as_micros() as f64);
            }
            if e == 0 && r == 0 {
                let out = if reached_service(fd, dst, ours) {
                    Outcome::Open
                } else {
                    Outcome::Closed
                };
                close_rst(fd);
                release(o);
                finish(rep, book, i, out);
                continue;
            }
            if e != 0 && e != libc::EINPROGRESS {
                // Refused, unreachable: answered, not open.
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
                release(o);
                finish(rep, book, i, Outcome::Closed);
                continue;
            }
            let s = match free.pop() {
                Some(s) => s,
                None => {
                    slots.push(None);
                    gens.push(0);
                    slots.len() - 1
                }
            };
            gens[s] = gens[s].wrapping_add(1);
            let mut ev = libc::epoll_event {
                events: (libc::EPOLLOUT | libc::EPOLLERR | libc::EPOLLHUP) as u32,
                u64: s as u64,
            };
            // SAFETY: valid epoll fd and socket fd.
            if unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                let err = std::io::Error::last_os_error();
                // SAFETY: our fd.
                unsafe { libc::close(fd) };
                release(o);
                return Err(err);
            }
            slots[s] = Some(Slot {
                fd,
                probe: i,
                sent: now,
            });
            deadlines.push(Reverse((now + rtt.timeout(o), s, gens[s])));
            inflight += 1;
        }
        if next >= todo.len() && inflight == 0 {
            return Ok(());
        }
        // 2. Wait for answers: not at all when more can be sent now, else until the next
        //    deadline or send time.
        let now = Instant::now();
        let can_send_now = next < todo.len()
            && inflight < window
            && !blocked
            && interval.is_none_or(|_| now >= next_send);
        let wait_ms: i32 = if can_send_now {
            0
        } else {
            let mut until = deadlines.peek().map(|Reverse((d, _, _))| *d);
            if next < todo.len() {
                let t = if blocked {
                    now + Duration::from_millis(1)
                } else {
                    next_send
                };
                until = Some(until.map_or(t, |u| u.min(t)));
            }
            match until {
                Some(u) => (u.saturating_duration_since(now).as_micros().div_ceil(1000)) as i32,
                None => 1,
            }
        };
        // SAFETY: events has room for its length.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, wait_ms) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(std::io::Error::from_raw_os_error(e));
        }
        let now = Instant::now();
        for ev in &events[..n as usize] {
            let s = ev.u64 as usize;
            let Some(slot) = slots[s].take() else {
                continue;
            };
            let dst = SocketAddr::new(probes[slot.probe].0, probes[slot.probe].1);
            let e = so_error(slot.fd);
            let out = if e == 0 {
                if reached_service(slot.fd, dst, ours) {
                    Outcome::Open
                } else {
                    Outcome::Closed
                }
            } else {
                Outcome::Closed
            };
            rtt.sample(now.duration_since(slot.sent).as_micros() as f64);
            close_rst(slot.fd);
            release(o);
            free.push(s);
            inflight -= 1;
            finish(rep, book, slot.probe, out);
        }
        // 3. Expire probes past their deadline.
        while let Some(Reverse((d, s, g))) = deadlines.peek().copied() {
            if d > now {
                break;
            }
            deadlines.pop();
            if gens[s] != g {
                continue;
            }
            if let Some(slot) = slots[s].take() {
                // SAFETY: our fd (closing removes it from the epoll set).
                unsafe { libc::close(slot.fd) };
                release(o);
                free.push(s);
                inflight -= 1;
                finish(rep, book, slot.probe, Outcome::Unanswered);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn open_closed_on_v4_and_v6_loopback() {
        let mut probes = Vec::new();
        let mut want = Vec::new();
        let mut keep = Vec::new();
        for host in ["127.0.0.1", "::1"] {
            let l = TcpListener::bind((host, 0)).unwrap();
            let p = l.local_addr().unwrap().port();
            keep.push(l);
            let closed = TcpListener::bind((host, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let ip: IpAddr = host.parse().unwrap();
            probes.push((ip, p));
            probes.push((ip, closed));
            want.push((ip, p));
        }
        let rep = sweep(&probes, &SweepOptions::default()).unwrap();
        assert_eq!(rep.open(&probes).collect::<Vec<_>>(), want);
        assert_eq!(rep.answered, 4);
        assert_eq!(rep.sent, 4);
        assert_eq!(rep.rounds, 1);
    }

    #[test]
    fn shared_limit_and_rate_are_respected() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let probes = vec![(ip, closed); 11];
        let t = Instant::now();
        let lim = Arc::new(SharedLimit::new(1));
        let o = SweepOptions {
            rate_limit: 50,
            shared_limit: Some(lim.clone()),
            ..Default::default()
        };
        let rep = sweep(&probes, &o).unwrap();
        assert_eq!(rep.answered, 11);
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(lim.used.load(Ordering::Acquire), 0, "every slot returned");
    }
}
