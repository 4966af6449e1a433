//! Times the connect sweep engine alone (no cluster) on loopback:
//! `cargo run --release -p overlord-probes --example sweep_lab -- 127.1.0.0 65536 80 [window]`
//! (first address, count, port). Only 127.0.0.0/8 and ::1 are accepted.

use overlord_probes::scan::connect::{SweepOptions, sweep};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let first: Ipv4Addr = a
        .get(1)
        .map_or("127.1.0.0", |s| s)
        .parse()
        .expect("address");
    let n: u32 = a.get(2).map_or("65536", |s| s).parse().expect("count");
    let port: u16 = a.get(3).map_or("80", |s| s).parse().expect("port");
    let window: usize = a.get(4).map_or("2048", |s| s).parse().expect("window");
    assert!(first.octets()[0] == 127, "loopback only");
    let probes: Vec<(IpAddr, u16)> = (0..n)
        .map(|i| (IpAddr::V4((u32::from(first) + i).into()), port))
        .collect();
    let t = Instant::now();
    let rep = sweep(
        &probes,
        &SweepOptions {
            window,
            ..Default::default()
        },
    )
    .expect("sweep");
    let s = t.elapsed().as_secs_f64();
    println!(
        "{n} probes in {s:.3}s = {:.0}/s; open {}, answered {}, sent {}, rounds {}",
        n as f64 / s,
        rep.open(&probes).count(),
        rep.answered,
        rep.sent,
        rep.rounds
    );
}
