//! Loopback ports for tests.

use std::net::TcpListener;

/// A port that was free a moment ago on 127.0.0.1 (bound, then released). Another process may
/// take it before the caller binds it: a launcher must check that its own child holds it (see
/// `overlord_probes::service::testsupport`), or bind port 0 itself where it can.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// Can 127.0.0.1:`port` be bound right now?
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_free_and_a_held_one_is_not() {
        let p = free_port();
        assert!(port_free(p));
        let held = TcpListener::bind(("127.0.0.1", p)).unwrap();
        assert!(!port_free(p));
        drop(held);
    }
}
