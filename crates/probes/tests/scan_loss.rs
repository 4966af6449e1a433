//! Recall of the connect sweep under random packet loss, in a network namespace this test makes
//! (nftables random drop on input: every packet on `lo` passes it once, so a probe is lost when
//! its SYN or its answer is). 500 listeners among all 65,535 ports of 127.0.0.1; the sweep must
//! find every one at 0, 5 and 20 % loss, with no false positives and at most 2 probes per port on
//! average. Times are printed (the ratios are a benchmark: `overlord bench loss`), not asserted.

use overlord_probes::netns::{self, NetNs};
use overlord_probes::scan::connect::{Outcome, SweepOptions, sweep};
use std::collections::HashSet;
use std::net::{IpAddr, TcpListener};
use std::time::Instant;

fn in_ns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter().expect("setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

#[test]
fn sweep_recall_under_random_loss() {
    if let Err(e) = netns::available() {
        eprintln!("SKIPPED sweep_recall_under_random_loss: {e} (CI runs it as root)");
        return;
    }
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let mut base = None;
    for loss in [0u32, 5, 20] {
        let ns = NetNs::create("loss").expect("netns");
        // Listeners live in the namespace's own loopback; bound from a thread inside it.
        let listeners: Vec<TcpListener> = in_ns(&ns, || {
            (0..500)
                .map(|_| TcpListener::bind((ip, 0)).expect("bind"))
                .collect()
        });
        let want: HashSet<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert_eq!(want.len(), 500);
        if loss > 0 {
            ns.random_drop(loss).expect("nft random drop");
        }
        let mut probes: Vec<(IpAddr, u16)> = (1..=65535u16).map(|p| (ip, p)).collect();
        // A fixed shuffle (the minion shuffles per task the same way).
        let mut z = 0x5eed_u64 + loss as u64;
        for i in (1..probes.len()).rev() {
            z = z
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            probes.swap(i, (z >> 33) as usize % (i + 1));
        }
        let t = Instant::now();
        let rep = in_ns(&ns, || sweep(&probes, &SweepOptions::default())).expect("sweep");
        let secs = t.elapsed().as_secs_f64();
        let found: HashSet<u16> = rep.open(&probes).map(|(_, p)| p).collect();
        let dropped = if loss > 0 { ns.dropped().unwrap() } else { 0 };
        let unanswered = rep
            .outcomes
            .iter()
            .filter(|o| **o == Outcome::Unanswered)
            .count();
        let per_port = rep.sent as f64 / probes.len() as f64;
        let b = *base.get_or_insert(secs);
        eprintln!(
            "loss {loss:>2}%: {}/500 open found in {secs:.2}s ({:.1}x lossless), {per_port:.3} probes/port, {} rounds, {unanswered} unanswered, {dropped} packets dropped",
            found.intersection(&want).count(),
            secs / b,
            rep.rounds,
        );
        assert!(
            found.is_subset(&want),
            "false positives: {:?}",
            found.difference(&want).collect::<Vec<_>>()
        );
        assert_eq!(
            found.len(),
            500,
            "recall at {loss}% loss: missed {:?}",
            want.difference(&found).collect::<Vec<_>>()
        );
        assert!(
            per_port <= 2.0,
            "{per_port} probes per port at {loss}% loss"
        );
        assert!(
            unanswered <= 65,
            "{unanswered} ports unanswered at {loss}% loss (>0.1%)"
        );
        if loss > 0 {
            assert!(dropped > 0, "the drop rule never fired");
            assert!(rep.retried > 0);
        }
        drop(listeners);
    }
}

/// A DNS responder on `s` answering the `version.bind` query of the UDP scan (id echoed, QR set).
async fn dns_responder(s: tokio::net::UdpSocket) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, from)) = s.recv_from(&mut buf).await else {
            return;
        };
        if n >= 12 && buf[4..6] == [0, 1] && buf[12..n].starts_with(b"\x07version") {
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            let _ = s.send_to(&r, from).await;
        }
    }
}

/// The UDP scan under random loss of every UDP datagram and ICMP error (nftables on input, in a
/// namespace this test makes): 100 DNS responders among 2,000 ports of 127.0.0.1 (the other
/// 1,900 closed: the kernel answers ICMP port unreachable). A port is answered when a reply or
/// an ICMP error comes back. Every responder must be found open with a validated reply, at most
/// 0.1 % of all ports may end unanswered or wrong, at most 2 bursts (the UDP scan's probe) per
/// port on average. Times are printed; the ratios are `overlord bench loss --scans udp`.
#[test]
fn udp_recall_under_random_loss() {
    use overlord_probes::service::ProbeDb;
    use overlord_probes::udp::{UdpOptions, UdpState, scan_targets};
    use std::net::SocketAddr;
    if let Err(e) = netns::available() {
        eprintln!("SKIPPED udp_recall_under_random_loss: {e} (CI runs it as root)");
        return;
    }
    let db = ProbeDb::builtin();
    let mut base = None;
    for loss in [0u32, 5, 20] {
        let ns = NetNs::create("udploss").expect("netns");
        if loss > 0 {
            ns.random_drop_udp(loss).expect("nft random drop");
        }
        let (rep, responders, secs) = in_ns(&ns, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut responders = HashSet::new();
                for _ in 0..100 {
                    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                    responders.insert(s.local_addr().unwrap());
                    tokio::spawn(dns_responder(s));
                }
                let ip: IpAddr = "127.0.0.1".parse().unwrap();
                // Closed: below the ephemeral range, so nothing of ours is bound there.
                let mut targets: Vec<SocketAddr> = responders.iter().copied().collect();
                targets.extend((20_000..21_900u16).map(|p| SocketAddr::new(ip, p)));
                let mut z = 0x5eed_u64 + loss as u64;
                for i in (1..targets.len()).rev() {
                    z = z
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    targets.swap(i, (z >> 33) as usize % (i + 1));
                }
                let opts = UdpOptions {
                    nmap_probes: false,
                    ..Default::default()
                };
                let t = Instant::now();
                let rep = scan_targets(&targets, &opts, &db).await;
                (rep, responders, t.elapsed().as_secs_f64())
            })
        });
        let n = rep.reports.len();
        let found = rep
            .reports
            .iter()
            .filter(|r| responders.contains(&r.addr) && r.state == UdpState::Open && r.validated)
            .count();
        let right = rep
            .reports
            .iter()
            .filter(|r| {
                if responders.contains(&r.addr) {
                    r.state == UdpState::Open
                } else {
                    r.state == UdpState::Closed
                }
            })
            .count();
        let per_port = rep.counts.sent as f64 / n as f64;
        let dropped = if loss > 0 { ns.dropped().unwrap() } else { 0 };
        let b = *base.get_or_insert(secs);
        eprintln!(
            "udp loss {loss:>2}%: {found}/100 responders, {right}/{n} ports right in {secs:.2}s ({:.1}x lossless), {per_port:.3} bursts/port, {:.2} datagrams/port, {} rounds, {dropped} packets dropped",
            secs / b,
            rep.datagrams as f64 / n as f64,
            rep.counts.rounds,
        );
        let missed: Vec<_> = rep
            .reports
            .iter()
            .filter(|r| responders.contains(&r.addr) && !(r.state == UdpState::Open && r.validated))
            .map(|r| (r.addr, r.state, r.tries, r.spent_ms, r.validated))
            .collect();
        assert_eq!(
            found, 100,
            "responders found at {loss}% loss; missed {missed:?}"
        );
        assert!(
            right * 1000 >= n * 999,
            "{right}/{n} ports judged right at {loss}% loss"
        );
        assert!(
            per_port <= 2.0,
            "{per_port} bursts per port at {loss}% loss"
        );
        if loss > 0 {
            assert!(dropped > 0, "the drop rule never fired");
        }
    }
}
