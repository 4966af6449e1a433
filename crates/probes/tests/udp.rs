//! UDP scan against real daemons on loopback: unbound (DNS), chronyd (NTP), snmpd (SNMP),
//! memcached -U; a silent socket, a closed port, and a server that answers with the wrong id.

use std::net::{IpAddr, SocketAddr};

use overlord_probes::service::ProbeDb;
use overlord_probes::service::lab;
use overlord_probes::udp::{UdpOptions, UdpReport, UdpState, scan, scan_port};

fn find(rs: &[UdpReport], a: SocketAddr) -> &UdpReport {
    rs.iter().find(|r| r.addr == a).expect("port in the report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_udp_daemons_are_open_and_named_with_validated_replies() {
    let unbound = lab::unbound().expect("unbound");
    let chrony = lab::chronyd().expect("chronyd");
    let snmpd = lab::snmpd().expect("snmpd");
    let memcached = lab::memcached_udp().expect("memcached");
    let silent = lab::silent_udp().unwrap();
    let closed = lab::closed_udp_port();
    let db = ProbeDb::load_default().unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let ports = [
        unbound.addr.port(),
        chrony.addr.port(),
        snmpd.addr.port(),
        memcached.addr.port(),
        silent.addr.port(),
        closed,
    ];
    let opts = UdpOptions::default();
    let rs = scan(ip, &ports, &opts, &db).await;
    let show = serde_json::to_string_pretty(&rs).unwrap();

    let r = find(&rs, unbound.addr);
    assert_eq!(r.state, UdpState::Open, "{show}");
    assert_eq!(r.service.as_deref(), Some("domain"), "{show}");
    assert_eq!(r.product.as_deref(), Some("Unbound"), "{show}");
    assert!(
        r.validated && r.evidence.as_deref().unwrap().starts_with("dns id"),
        "{show}"
    );

    let r = find(&rs, chrony.addr);
    assert_eq!(r.state, UdpState::Open, "{show}");
    assert_eq!(r.service.as_deref(), Some("ntp"), "{show}");
    assert!(
        r.validated && r.evidence.as_deref().unwrap().contains("origin timestamp"),
        "{show}"
    );
    assert!(r.info.as_deref().unwrap().contains("stratum 10"), "{show}");

    let r = find(&rs, snmpd.addr);
    assert_eq!(r.state, UdpState::Open, "{show}");
    assert_eq!(r.service.as_deref(), Some("snmp"), "{show}");
    assert_eq!(r.product.as_deref(), Some("net-snmp"), "{show}");
    assert!(r.validated, "{show}");

    let r = find(&rs, memcached.addr);
    assert_eq!(r.state, UdpState::Open, "{show}");
    assert_eq!(r.service.as_deref(), Some("memcached"), "{show}");
    assert_eq!(r.product.as_deref(), Some("Memcached"), "{show}");
    assert!(
        r.version.as_deref().is_some_and(|v| v.starts_with("1.")),
        "{show}"
    );
    assert!(r.validated, "{show}");

    let r = find(&rs, silent.addr);
    assert_eq!(r.state, UdpState::OpenFiltered, "{show}");
    assert_eq!(r.reason, "no-response");
    // Re-sent once (round 0 cannot tell loss from silence), then given up: the re-sends of its
    // network (127.0.0.0/24, every other port answered at once) brought nothing back.
    assert_eq!(r.tries, 2, "silent ports are re-sent once: {show}");
    assert!(r.spent_ms <= opts.budget_ms as f64 + 200.0, "{show}");
    assert!(
        r.probes_sent.iter().any(|p| p.starts_with("nmap:")),
        "stage 2 (nmap's UDP probes) tried on a silent port: {show}"
    );

    let r = find(&rs, SocketAddr::new(ip, closed));
    assert_eq!(r.state, UdpState::Closed, "{show}");
    assert_eq!(r.reason, "port-unreach", "{show}");
    assert_eq!(r.tries, 1, "{show}");
}

/// A DNS responder on `bind` that answers our `version.bind` query with its id + `id_delta`
/// (0: a correct answer), until aborted.
async fn dns_responder(bind: &str, id_delta: u16) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let s = tokio::net::UdpSocket::bind(bind).await.unwrap();
    let addr = s.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        loop {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            // Only DNS-shaped requests (the version.bind query) get an answer.
            if n >= 12 && buf[4..6] == [0, 1] && buf[12..n].starts_with(b"\x07version") {
                let mut r = buf[..n].to_vec();
                let id = u16::from_be_bytes([r[0], r[1]]).wrapping_add(id_delta);
                r[..2].copy_from_slice(&id.to_be_bytes());
                r[2] |= 0x80; // QR: a response
                let _ = s.send_to(&r, from).await;
            }
        }
    });
    (addr, server)
}

/// A DNS server that answers with the query id + 1: the port is open, but the reply is not
/// taken as the answer to our query.
#[tokio::test]
async fn reply_with_a_wrong_id_is_open_but_not_validated() {
    let (addr, server) = dns_responder("127.0.0.1:0", 1).await;
    let db = ProbeDb::builtin();
    let opts = UdpOptions {
        nmap_probes: false,
        ..Default::default()
    };
    let r = scan_port(addr, &opts, &db).await;
    assert_eq!(r.state, UdpState::Open, "{r:?}");
    assert_eq!(r.reason, "udp-response");
    assert!(!r.validated, "{r:?}");
    assert_eq!(r.service, None, "{r:?}");
    server.abort();
}

/// The UDP scan on `::1` (IPv6 loopback): a DNS responder that echoes our query id is `open`
/// and validated, a silent socket `open|filtered`, a closed port `closed` from the kernel's
/// ICMPv6 port unreachable (read through `IPV6_RECVERR`) in one try.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_loopback_open_silent_and_closed() {
    let (dns, server) = dns_responder("[::1]:0", 0).await;
    let silent = std::net::UdpSocket::bind("[::1]:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let closed_port = {
        let c = std::net::UdpSocket::bind("[::1]:0").unwrap();
        c.local_addr().unwrap().port()
    };
    let ip: IpAddr = "::1".parse().unwrap();
    let db = ProbeDb::builtin();
    let opts = UdpOptions {
        nmap_probes: false,
        ..Default::default()
    };
    let rs = scan(ip, &[dns.port(), silent_port, closed_port], &opts, &db).await;
    let open = find(&rs, dns);
    assert_eq!(open.state, UdpState::Open, "{open:?}");
    assert!(open.validated, "{open:?}");
    let quiet = find(&rs, SocketAddr::new(ip, silent_port));
    assert_eq!(quiet.state, UdpState::OpenFiltered, "{quiet:?}");
    assert_eq!(quiet.reason, "no-response", "{quiet:?}");
    let closed = find(&rs, SocketAddr::new(ip, closed_port));
    assert_eq!(closed.state, UdpState::Closed, "{closed:?}");
    assert_eq!(closed.reason, "port-unreach", "{closed:?}");
    assert_eq!(closed.tries, 1, "{closed:?}");
    server.abort();
    drop(silent);
}
