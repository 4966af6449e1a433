//! Starts each lab daemon once and prints whether it came up (launcher smoke check).
//! `cargo run -p overlord-probes --example lab_check -- [name...]`
use overlord_probes::service::lab;
use overlord_probes::service::testsupport::{Daemon, SupportError};

fn main() {
    let all: Vec<(&str, fn() -> Result<Daemon, SupportError>)> = vec![
        ("ngircd", lab::ngircd),
        ("inspircd", lab::inspircd),
        ("haproxy", lab::haproxy),
        ("lighttpd", lab::lighttpd),
        ("proftpd", lab::proftpd),
        ("dovecot", lab::dovecot),
        ("exim", lab::exim),
        ("postgres", lab::postgres),
        ("mariadb", lab::mariadb),
        ("cupsd", lab::cupsd),
        ("rabbitmq", lab::rabbitmq),
        ("named", lab::named),
        ("unbound", lab::unbound),
    ];
    let mut want: Vec<String> = std::env::args().skip(1).collect();
    let hold = want.iter().any(|w| w == "--hold");
    want.retain(|w| w != "--hold");
    let mut keep = Vec::new();
    for (n, f) in all {
        if !want.is_empty() && !want.iter().any(|w| w == n) {
            continue;
        }
        let t = std::time::Instant::now();
        match f() {
            Ok(d) => {
                println!("{n:<10} ok {} in {:.1}s", d.addr, t.elapsed().as_secs_f64());
                keep.push(d);
            }
            Err(e) => println!(
                "{n:<10} FAIL {}",
                e.to_string().chars().take(600).collect::<String>()
            ),
        }
    }
    if hold {
        std::thread::sleep(std::time::Duration::from_secs(900));
    }
    drop(keep);
}
