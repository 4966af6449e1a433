//! The `dns.log` half of the labelled generator ([`crate::generate()`]): lookups as a Zeek sensor
//! sees them on an office network, with the traps that make browsing look periodic.
//!
//! * every host resolves through a local stub cache (a lookup only when the cached answer has
//!   expired) and, behind it, the shared resolver has its own cache; the sensor sees both
//!   client → resolver and resolver → upstream queries;
//! * browsing names are drawn from one Zipf-popular pool, so many hosts resolve the same names;
//!   CDN names have short TTLs (20–60 s); an open tab or chat client polling a name every few
//!   seconds turns, behind the TTL cache, into one lookup per TTL — exactly periodic, all workday;
//! * benign periodic services (NTP pool, telemetry, update checks, mail polling, WPAD NXDOMAIN)
//!   are shared by many hosts; random NXDOMAIN names (typos, search-suffix misses) are sparse;
//! * each C2 (from the conn half) resolves its domain at its check-ins through the same cache
//!   (TTL 0–300 s); some C2 call a dead fallback domain (periodic NXDOMAIN); rotating C2 use
//!   several domains.
//!
//! `variant` 2 (harder): no stub cache on any host, up to 8 polling tabs, short TTLs, a
//! prefetching resolver.
//! `variant` 1 is a differently-built network for held-out checks (other TTL mix, more polling
//! tabs, a resolver that also prefetches, no per-host cache on a third of the hosts).

use crate::generate::Label;
use crate::rng::Rng;
use crate::synth::{self, DAY};

/// One dns.log line.
#[derive(Clone, Debug)]
pub struct DnsLine {
    pub ts: f64,
    pub src: u32,
    pub dst: u32,
    pub name: u32,
    pub nx: bool,
    pub ttl: u32,
}

/// What the conn half tells this half about one C2.
pub struct C2Dns {
    pub host: u32,
    pub pattern: String,
    /// Connection times (s of the day), bursts included.
    pub times: Vec<f64>,
    /// Number of C2 addresses (rotating C2 use as many domains).
    pub domains: usize,
}

/// Names and lines. `names[i]` is the query of name id `i`.
pub struct DnsDay {
    pub names: Vec<String>,
    pub lines: Vec<DnsLine>,
    pub labels: Vec<Label>,
}

struct Cache {
    expiry: rustc_hash::FxHashMap<u32, f64>,
}

impl Cache {
    fn new() -> Cache {
        Cache {
            expiry: Default::default(),
        }
    }
    /// True when a lookup leaves the host (the answer was not cached).
    fn miss(&mut self, name: u32, t: f64, ttl: f64) -> bool {
        match self.expiry.get(&name) {
            Some(&e) if t < e => false,
            _ => {
                self.expiry.insert(name, t + ttl);
                true
            }
        }
    }
}

fn tld(r: &mut Rng) -> &'static str {
    *r.choose(&["com", "net", "org", "io", "info", "top", "xyz", "biz"])
}

fn word(r: &mut Rng, len: usize) -> String {
    const A: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    (0..len).map(|_| A[r.int(0, 25) as usize] as char).collect()
}

/// Generate the DNS day. `hosts` are the internal hosts, `resolver` the internal resolver,
/// `upstream` its forwarder.
pub fn generate_dns(
    r: &mut Rng,
    hosts: &[u32],
    resolver: u32,
    upstream: u32,
    c2s: &[C2Dns],
    variant: u8,
) -> DnsDay {
    let ip = |x: u32| std::net::Ipv4Addr::from(x).to_string();
    let mut names: Vec<String> = Vec::new();
    let mut ttls: Vec<f64> = Vec::new();
    let mut add = |n: String, ttl: f64, names: &mut Vec<String>| {
        names.push(n);
        ttls.push(ttl);
        (names.len() - 1) as u32
    };
    // Popular pool: Zipf ranks; CDN names short TTLs.
    let pool = 2500usize;
    let ttl_set: &[f64] = match variant {
        0 => &[20.0, 30.0, 60.0, 60.0, 120.0, 300.0, 300.0, 600.0, 3600.0],
        1 => &[5.0, 15.0, 30.0, 45.0, 90.0, 180.0, 900.0, 1800.0, 7200.0],
        _ => &[10.0, 20.0, 30.0, 60.0, 60.0, 300.0, 900.0, 3600.0],
    };
    let mut nr = r.fork(1);
    let mut popular = Vec::with_capacity(pool);
    for i in 0..pool {
        let cdn = nr.bool(0.35);
        let ttl = if cdn {
            *nr.choose(&[20.0, 30.0, 60.0])
        } else {
            *nr.choose(ttl_set)
        };
        let n = if cdn {
            format!("e{}.{}.cdn{}.net", nr.int(1, 9999), word(&mut nr, 5), i % 7)
        } else {
            format!("www.{}{}.{}", word(&mut nr, 6), i, tld(&mut nr))
        };
        popular.push(add(n, ttl, &mut names));
    }
    // Benign periodic services shared by many hosts.
    let ntp = add("pool.ntp.example.org".into(), 150.0, &mut names);
    let tele = add("v10.events.telemetry.example.com".into(), 60.0, &mut names);
    let upd = add("update.vendor.example.com".into(), 300.0, &mut names);
    let mail = add("outlook.mail.example.com".into(), 300.0, &mut names);
    let wpad = add("wpad.corp.example".into(), 0.0, &mut names);
    let av = add("av-cloud.example.net".into(), 30.0, &mut names);

    let mut lines: Vec<DnsLine> = Vec::new();
    let mut labels: Vec<Label> = Vec::new();
    let mut client: Vec<(f64, u32, u32)> = Vec::new(); // (t, host, name) client queries
    let mut nx_keys: Vec<(u32, u32)> = Vec::new(); // (host, name) NXDOMAIN
    let mut hr = r.fork(2);
    for (hi, &h) in hosts.iter().enumerate() {
        let mut r = hr.fork(hi as u64);
        let no_cache = (variant == 1 && r.bool(0.33)) || variant == 2;
        let mut cache = Cache::new();
        let q = |t: f64, name: u32, ttl: f64, cache: &mut Cache, out: &mut Vec<(f64, u32, u32)>| {
            // a host without a stub cache still has the browser's ~60 s cache
            let ttl = if no_cache { ttl.min(60.0) } else { ttl };
            if (0.0..DAY).contains(&t) && cache.miss(name, t, ttl.max(1.0)) {
                out.push((t, h, name));
            }
        };
        // workday of this host
        let on = r.range(6.5, 9.5) * 3600.0;
        let off = r.range(16.0, 19.5) * 3600.0;
        let stays_on = r.bool(0.3);
        let mut ev: Vec<(f64, u32)> = Vec::new();
        // browsing: sessions towards Zipf-chosen names
        let n_names = r.int(20, 120) as usize;
        for _ in 0..n_names {
            let rank = ((r.exp(1.0) * 120.0) as usize).min(pool - 1);
            let name = popular[rank];
            let sessions = 1 + r.exp(3.0) as usize;
            for t in synth::browsing_sessions(&mut r, sessions) {
                ev.push((t, name));
            }
        }
        // open tabs / chat clients polling a popular name every few seconds all workday
        let tabs = r.int(0, [3, 6, 8][variant.min(2) as usize]);
        for _ in 0..tabs {
            let name = popular[((r.exp(1.0) * 30.0) as usize).min(pool - 1)];
            let every = r.log_range(2.0, 90.0);
            let (a, b) = if r.bool(0.5) {
                (on, off)
            } else {
                let a = r.range(on, off - 3600.0);
                (a, r.range(a + 1800.0, off))
            };
            let mut t = a + r.range(0.0, every);
            while t < b {
                ev.push((t, name));
                t += every * r.range(0.7, 1.3);
            }
        }
        // benign periodic services: all day or during the workday
        let (s0, s1) = if stays_on { (0.0, DAY) } else { (on, off) };
        let periodic = |r: &mut Rng, name: u32, every: f64, jit: f64, ev: &mut Vec<(f64, u32)>| {
            let mut t = s0 + r.range(0.0, every);
            while t < s1 {
                ev.push((t, name));
                t += every * (1.0 + r.range(-jit, jit));
            }
        };
        if r.bool(0.9) {
            let p = *r.choose(&[64.0, 1024.0, 3600.0]);
            periodic(&mut r, ntp, p, 0.01, &mut ev);
        }
        if r.bool(0.6) {
            let p = *r.choose(&[300.0, 900.0]);
            periodic(&mut r, tele, p, 0.2, &mut ev);
        }
        if r.bool(0.7) {
            let p = *r.choose(&[3600.0, 4.0 * 3600.0]);
            periodic(&mut r, upd, p, 0.1, &mut ev);
        }
        if r.bool(0.5) {
            let p = *r.choose(&[60.0, 300.0, 600.0]);
            periodic(&mut r, mail, p, 0.05, &mut ev);
        }
        if r.bool(0.4) {
            periodic(&mut r, av, 1800.0, 0.05, &mut ev);
        }
        ev.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (t, name) in ev {
            q(t, name, ttls[name as usize], &mut cache, &mut client);
        }
        // WPAD: Windows hosts ask for the proxy config every 15-60 min (negative answer)
        if r.bool(0.55) {
            let every = *r.choose(&[900.0, 1800.0, 3600.0]);
            let mut t = s0 + r.range(0.0, every);
            while t < s1 {
                lines.push(DnsLine {
                    ts: t,
                    src: h,
                    dst: resolver,
                    name: wpad,
                    nx: true,
                    ttl: 0,
                });
                t += every * (1.0 + r.range(-0.05, 0.05));
            }
            labels.push(label(&ip(h), &names[wpad as usize], true, false, "wpad"));
        }
        // random NXDOMAIN: typos, search-suffix misses, a few lookups at random times
        for _ in 0..r.int(0, 3) {
            let len = r.int(4, 10) as usize;
            let n = format!("{}.corp.example", word(&mut r, len));
            let name = {
                names.push(n);
                ttls.push(0.0);
                (names.len() - 1) as u32
            };
            let k = r.int(2, 30) as usize;
            let a = r.range(0.0, DAY * 0.7);
            let b = r.range(a + 1800.0, DAY);
            for _ in 0..k {
                let t = r.range(a, b);
                // a retry a second later, as resolvers do
                for d in [0.0, if r.bool(0.3) { 1.0 } else { -1.0 }] {
                    if d >= 0.0 {
                        lines.push(DnsLine {
                            ts: t + d,
                            src: h,
                            dst: resolver,
                            name,
                            nx: true,
                            ttl: 0,
                        });
                    }
                }
            }
            nx_keys.push((h, name));
            labels.push(label(
                &ip(h),
                &names[name as usize],
                true,
                false,
                "nx_random",
            ));
        }
        // chromium's random probes at start-up: unique names, once each
        for _ in 0..3 {
            let n = word(&mut r, 10);
            names.push(n);
            ttls.push(0.0);
            lines.push(DnsLine {
                ts: on + r.range(0.0, 60.0),
                src: h,
                dst: resolver,
                name: (names.len() - 1) as u32,
                nx: true,
                ttl: 0,
            });
        }
    }
    for (t, h, name) in &client {
        lines.push(DnsLine {
            ts: *t,
            src: *h,
            dst: resolver,
            name: *name,
            nx: false,
            ttl: ttls[*name as usize] as u32,
        });
    }
    // C2 domains: looked up at check-ins through the host's cache.
    let mut cr = r.fork(3);
    let mut c2_client: Vec<(f64, u32, u32, bool)> = Vec::new();
    for c in c2s {
        let mut r = cr.fork(c.host as u64);
        let dead = r.bool(0.15);
        // rotating C2: one round-robin domain, or (harder) one domain per address
        let n_dom = if c.domains > 1 && r.bool(0.6) {
            1
        } else {
            c.domains.max(1)
        };
        let ttl = if variant != 1 {
            *r.choose(&[0.0, 1.0, 5.0, 30.0, 60.0, 300.0])
        } else {
            *r.choose(&[0.0, 10.0, 20.0, 120.0, 600.0])
        };
        let doms: Vec<u32> = (0..n_dom)
            .map(|_| {
                let len = r.int(6, 14) as usize;
                let n = format!("{}.{}", word(&mut r, len), tld(&mut r));
                names.push(n);
                ttls.push(ttl);
                (names.len() - 1) as u32
            })
            .collect();
        let mut cache = Cache::new();
        for &t in &c.times {
            let d = doms[r.int(0, n_dom as u64 - 1) as usize];
            if dead {
                // dead C2: NXDOMAIN, never cached (negative caching is short), no burst
                if c2_client
                    .last()
                    .is_some_and(|l| l.1 == c.host && t - l.0 < 3.0)
                {
                    continue;
                }
                c2_client.push((t - 0.05, c.host, d, true));
            } else if cache.miss(d, t, ttl.max(0.5)) {
                c2_client.push((t - 0.05, c.host, d, false));
            }
        }
        for &d in &doms {
            let n = if dead {
                format!("{} (NXDOMAIN)", names[d as usize])
            } else {
                names[d as usize].clone()
            };
            labels.push(Label {
                kind: "dns".into(),
                src: ip(c.host),
                dst: n,
                label: "malicious".into(),
                pattern: format!("dns_{}", c.pattern),
            });
        }
    }
    for (t, h, name, nx) in &c2_client {
        lines.push(DnsLine {
            ts: *t,
            src: *h,
            dst: resolver,
            name: *name,
            nx: *nx,
            ttl: ttls[*name as usize] as u32,
        });
    }
    // The resolver's own cache: upstream queries when its answer expired (variant 1 prefetches
    // popular names shortly before expiry, which makes them exactly periodic).
    let mut all: Vec<(f64, u32, bool)> = client.iter().map(|c| (c.0, c.2, false)).collect();
    all.extend(c2_client.iter().map(|c| (c.0, c.2, c.3)));
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rc = Cache::new();
    let mut hits: rustc_hash::FxHashMap<u32, u32> = Default::default();
    for (t, name, nx) in all {
        let ttl = ttls[name as usize];
        let h = hits.entry(name).or_default();
        *h += 1;
        let ttl_eff = if nx { 5.0 } else { ttl.max(1.0) };
        if rc.miss(name, t, ttl_eff) {
            lines.push(DnsLine {
                ts: t + 0.001,
                src: resolver,
                dst: upstream,
                name,
                nx,
                ttl: ttl as u32,
            });
            if variant >= 1 && *h > 50 && ttl >= 20.0 {
                // prefetch: refresh at 90 % of the TTL while the name stays hot
                let mut p = t + 0.9 * ttl;
                for _ in 0..3 {
                    if p < DAY {
                        lines.push(DnsLine {
                            ts: p,
                            src: resolver,
                            dst: upstream,
                            name,
                            nx: false,
                            ttl: ttl as u32,
                        });
                    }
                    p += 0.9 * ttl;
                }
                rc.expiry.insert(name, p);
            }
        }
    }
    // C2 lookups forwarded by the resolver are the C2's too (one source: the resolver).
    {
        let c2_names: rustc_hash::FxHashSet<u32> = c2_client.iter().map(|c| c.2).collect();
        let mut seen = rustc_hash::FxHashSet::default();
        let mut per: rustc_hash::FxHashMap<u32, u32> = Default::default();
        for l in lines
            .iter()
            .filter(|l| l.src == resolver && c2_names.contains(&l.name))
        {
            *per.entry(l.name).or_default() += 1;
        }
        for l in lines
            .iter()
            .filter(|l| l.src == resolver && c2_names.contains(&l.name))
        {
            if seen.insert(l.name) && per[&l.name] >= 3 {
                let mut lab = label(
                    &ip(resolver),
                    &names[l.name as usize],
                    l.nx,
                    true,
                    "dns_via_resolver",
                );
                lab.label = "malicious".into();
                labels.push(lab);
            }
        }
    }
    let _ = nx_keys;
    lines.sort_by(|a, b| a.ts.total_cmp(&b.ts));
    DnsDay {
        names,
        lines,
        labels,
    }
}

fn label(src: &str, name: &str, nx: bool, mal: bool, pattern: &str) -> Label {
    Label {
        kind: "dns".into(),
        src: src.into(),
        dst: if nx {
            format!("{name} (NXDOMAIN)")
        } else {
            name.into()
        },
        label: if mal { "malicious" } else { "benign" }.into(),
        pattern: pattern.into(),
    }
}
