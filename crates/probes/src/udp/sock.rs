//! A connected UDP socket with `IP_RECVERR` / `IPV6_RECVERR`: the kernel queues the ICMP errors
//! the target's host sends back for our datagrams (port unreachable, admin prohibited, ...), and
//! we read type and code from the socket's error queue. No raw socket, no privileges.

use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;

use serde::{Deserialize, Serialize};
use tokio::net::UdpSocket;

/// An ICMP error read from the socket's error queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpError {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    pub errno: i32,
}

impl IcmpError {
    /// Port unreachable: nothing listens (nmap's `closed`).
    pub fn port_unreachable(&self) -> bool {
        if self.v6 {
            self.icmp_type == 1 && self.code == 4
        } else {
            self.icmp_type == 3 && self.code == 3
        }
    }

    /// nmap's reason name.
    pub fn reason(&self) -> String {
        match (self.v6, self.icmp_type, self.code) {
            (false, 3, 3) | (true, 1, 4) => "port-unreach".into(),
            (false, 3, 0) | (true, 1, 3) => "net-unreach".into(),
            (false, 3, 1) => "host-unreach".into(),
            (false, 3, 2) => "proto-unreach".into(),
            (false, 3, 9 | 10 | 13) | (true, 1, 1) => "admin-prohibited".into(),
            (v6, t, c) => format!("icmp{} type {t} code {c}", if v6 { "v6" } else { "" }),
        }
    }
}

/// Opens a UDP socket connected to `addr` with ICMP error reporting on. A loopback self-connect
/// (our local port = the target port: we would read our own datagrams) is refused.
pub fn connect(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    for _ in 0..4 {
        let s = StdUdpSocket::bind(local)?;
        let on: libc::c_int = 1;
        let (level, opt) = if addr.is_ipv4() {
            (libc::SOL_IP, libc::IP_RECVERR)
        } else {
            (libc::SOL_IPV6, libc::IPV6_RECVERR)
        };
        // SAFETY: setsockopt on a socket we own, with a correctly sized int option.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                level,
                opt,
                &on as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        s.connect(addr)?;
        if s.local_addr()?.port() == addr.port() && addr.ip().is_loopback() {
            continue;
        }
        s.set_nonblocking(true)?;
        return UdpSocket::from_std(s);
    }
    Err(io::Error::other(
        "self-connect on loopback four times in a row",
    ))
}

/// Reads one queued ICMP error, if any (non-blocking).
pub fn take_icmp_error(s: &UdpSocket) -> Option<IcmpError> {
    let fd = s.as_raw_fd();
    let mut data = [0u8; 512];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = [0u64; 64]; // aligned control buffer (512 bytes)
    let mut name = [0u8; 128];
    // SAFETY: zeroed msghdr is a valid initial value; every pointer below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = name.as_mut_ptr() as *mut libc::c_void;
    msg.msg_namelen = name.len() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: recvmsg with buffers owned by this frame; MSG_ERRQUEUE never blocks.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    // SAFETY: walking the control messages the kernel just wrote into `cbuf`.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            let v4 = h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR;
            let v6 = h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR;
            if v4 || v6 {
                let e =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::sock_extended_err);
                if e.ee_origin == libc::SO_EE_ORIGIN_ICMP || e.ee_origin == libc::SO_EE_ORIGIN_ICMP6
                {
                    return Some(IcmpError {
                        v6: e.ee_origin == libc::SO_EE_ORIGIN_ICMP6,
                        icmp_type: e.ee_type,
                        code: e.ee_code,
                        errno: e.ee_errno as i32,
                    });
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    None
}
