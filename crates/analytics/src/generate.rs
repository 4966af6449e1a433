//! A labelled synthetic Zeek dataset: one day of an office network (hundreds of hosts browsing,
//! DNS, NTP/update/telemetry services, steady Poisson services, failed connections) with C2
//! beacons hidden in it in every hard variation. Writes `conn.log` (Zeek TSV, optionally gzip or
//! JSON lines; lines ordered by connection end as Zeek does, so not in `ts` order) and
//! `labels.jsonl` (one line per labelled key: `{"kind","src","dst","label","pattern"}`; keys not
//! listed are benign browsing).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::AnalyticsError;
use crate::rng::Rng;
use crate::synth::{self, Backoff, BeaconSpec, DAY};

/// Malicious patterns (each beacon has one primary pattern; most also have jitter).
pub const MALICIOUS_PATTERNS: [&str; 11] = [
    "fixed", "jitter", "burst", "partial", "gapped", "backoff", "rotating", "mixed", "combo",
    "long", "medium",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutFormat {
    Tsv,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenConfig {
    /// Internal hosts.
    pub hosts: usize,
    /// Infected hosts (one C2 each).
    pub beacons: usize,
    /// Epoch seconds of the first second of the day (deliberately not midnight by default).
    pub start: f64,
    /// Scales browsing volume (1.0 ≈ 10k conn lines per host).
    pub browsing: f64,
    pub format: OutFormat,
    pub gzip: bool,
    /// Also write `dns.log` (lookups through host and resolver caches, C2 domains).
    pub dns: bool,
    /// 0 = the tuning network; 1 = a differently-built network; 2 = a harder, CDN-heavy one:
    /// browsing concentrated on few shared (CDN) addresses, C2 behind a popular browsed
    /// address with more browsing mixed into its key, 30 % of C2 periods 20 min–4 h, and DNS
    /// with no stub cache on any host, more polling tabs, short TTLs and a prefetching
    /// resolver. Seeds of each variant are split into tuning and held-out ones (DESIGN.md).
    pub variant: u8,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            hosts: 300,
            beacons: 60,
            start: 1_700_003_600.0,
            browsing: 1.0,
            format: OutFormat::Tsv,
            gzip: false,
            dns: true,
            variant: 0,
        }
    }
}

impl GenConfig {
    /// A small set for tests: a few dozen hosts, little browsing.
    pub fn small() -> GenConfig {
        GenConfig {
            hosts: 40,
            beacons: 27,
            browsing: 0.15,
            ..GenConfig::default()
        }
    }
}

/// One labelled key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Label {
    pub kind: String,
    pub src: String,
    pub dst: String,
    /// "malicious" or "benign".
    pub label: String,
    pub pattern: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenSummary {
    pub conn_lines: u64,
    pub labels: usize,
    pub malicious_keys: usize,
    pub files: Vec<PathBuf>,
}

#[derive(Clone, Copy)]
struct Conn {
    ts: f64,
    src: u32,
    dst: u32,
    dport: u16,
    proto: u8, // 0 tcp 1 udp
    dur: f32,
    ob: u32,
    rb: u32,
    state: u8, // 0 SF 1 S0 2 REJ
}

fn ip(x: u32) -> Ipv4Addr {
    Ipv4Addr::from(x)
}

fn internal(i: usize) -> u32 {
    u32::from(Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 2) as u8))
}

/// Generate the dataset into `out_dir` (created if needed).
pub fn generate(seed: u64, cfg: &GenConfig, out_dir: &Path) -> Result<GenSummary, AnalyticsError> {
    std::fs::create_dir_all(out_dir).map_err(|e| AnalyticsError::io(out_dir, e))?;
    let mut rng = Rng::new(seed ^ 0x05ee_d0fb_eac0);
    let mut conns: Vec<Conn> = Vec::new();
    let mut labels: Vec<Label> = Vec::new();
    let label = |src: u32, dst: u32, mal: bool, pattern: &str| Label {
        kind: "conn".into(),
        src: ip(src).to_string(),
        dst: ip(dst).to_string(),
        label: if mal { "malicious" } else { "benign" }.into(),
        pattern: pattern.into(),
    };
    // External address pools.
    let mut ext_rng = rng.fork(1);
    let ext = |r: &mut Rng| -> u32 {
        loop {
            let a = r.int(11, 223) as u8;
            if a == 127 || a == 10 || a == 172 || a == 192 {
                continue;
            }
            return u32::from(Ipv4Addr::new(
                a,
                r.int(0, 255) as u8,
                r.int(0, 255) as u8,
                r.int(1, 254) as u8,
            ));
        }
    };
    let sites: Vec<u32> = (0..3000).map(|_| ext(&mut ext_rng)).collect();
    let resolver = u32::from(Ipv4Addr::new(10, 0, 0, 2));
    let ntp = u32::from(Ipv4Addr::new(10, 0, 0, 3));
    let update = ext(&mut ext_rng);
    let telemetry = ext(&mut ext_rng);
    let av = ext(&mut ext_rng);
    let hosts: Vec<u32> = (0..cfg.hosts).map(internal).collect();

    let mut hr = rng.fork(2);
    for (hi, &h) in hosts.iter().enumerate() {
        let mut r = hr.fork(hi as u64);
        // Browsing: Zipf-ish choice of sites, diurnal sessions.
        let n_sites = (r.int(10, 80) as f64 * cfg.browsing.max(0.01).sqrt()).ceil() as usize;
        for _ in 0..n_sites {
            let spread = if cfg.variant == 2 { 60.0 } else { 250.0 };
            let rank = (r.exp(1.0) * spread) as usize % sites.len();
            let site = sites[rank];
            let sessions = 1 + (r.exp(4.0) * cfg.browsing.sqrt()) as usize;
            for t in synth::browsing_sessions(&mut r, sessions) {
                conns.push(Conn {
                    ts: t,
                    src: h,
                    dst: site,
                    dport: 443,
                    proto: 0,
                    dur: r.exp(2.0) as f32,
                    ob: (r.exp(1.0) * 900.0) as u32 + 200,
                    rb: (r.exp(1.0) * 30_000.0) as u32 + 300,
                    state: if r.bool(0.02) { 1 } else { 0 },
                });
            }
        }
        // DNS to the internal resolver: diurnal Poisson.
        let mean = r.log_range(8.0, 60.0) / cfg.browsing.max(0.05).sqrt();
        let mut t = 0.0;
        while t < DAY {
            t += r.exp(mean);
            if t < DAY && r.f64() < synth::diurnal_weight(t / 3600.0).max(0.2) {
                conns.push(Conn {
                    ts: t,
                    src: h,
                    dst: resolver,
                    dport: 53,
                    proto: 1,
                    dur: 0.01,
                    ob: 40 + r.int(0, 30) as u32,
                    rb: 90 + r.int(0, 200) as u32,
                    state: 0,
                });
            }
        }
        // Benign periodic services shared by many hosts.
        if r.bool(0.9) {
            let p = *r.choose(&[64.0, 128.0, 256.0, 1024.0]);
            push_beacon(
                &mut conns,
                &mut r,
                h,
                ntp,
                123,
                1,
                &BeaconSpec {
                    jitter: 0.02,
                    ..BeaconSpec::simple(p)
                },
                (48, 48),
                (48, 48),
            );
        }
        if r.bool(0.7) {
            let p = *r.choose(&[3600.0, 3.0 * 3600.0]);
            push_beacon(
                &mut conns,
                &mut r,
                h,
                update,
                443,
                0,
                &BeaconSpec {
                    jitter: 0.1,
                    ..BeaconSpec::simple(p)
                },
                (600, 900),
                (2000, 9000),
            );
        }
        if r.bool(0.6) {
            let p = *r.choose(&[300.0, 900.0]);
            push_beacon(
                &mut conns,
                &mut r,
                h,
                telemetry,
                443,
                0,
                &BeaconSpec {
                    jitter: 0.2,
                    ..BeaconSpec::simple(p)
                },
                (1500, 4000),
                (300, 600),
            );
        }
        if r.bool(0.5) {
            push_beacon(
                &mut conns,
                &mut r,
                h,
                av,
                443,
                0,
                &BeaconSpec {
                    jitter: 0.05,
                    burst: (2, 3),
                    burst_spread: 0.5,
                    ..BeaconSpec::simple(1800.0)
                },
                (700, 900),
                (500, 50_000),
            );
        }
        // Steady Poisson services (hard negatives), each to a host-specific server.
        for _ in 0..r.int(0, 2) {
            let dst = ext(&mut r);
            let mean = r.log_range(20.0, 1800.0);
            for t in synth::poisson(&mut r, mean, 0.0, DAY) {
                conns.push(Conn {
                    ts: t,
                    src: h,
                    dst,
                    dport: *r.choose(&[443, 993, 5222, 8080]),
                    proto: 0,
                    dur: r.exp(1.0) as f32,
                    ob: 300 + r.int(0, 400) as u32,
                    rb: 500 + r.int(0, 3000) as u32,
                    state: 0,
                });
            }
            labels.push(label(h, dst, false, "poisson_service"));
        }
        // Sparse random services: a few connections at uniformly random times (chat, mail,
        // APIs) — short sequences a detector must not call beacons.
        for _ in 0..r.int(1, 4) {
            let dst = ext(&mut r);
            let n = r.int(3, 40) as usize;
            let start = r.range(0.0, DAY * 0.5);
            let end = r.range(start + 3600.0, DAY);
            for _ in 0..n {
                let t = r.range(start, end);
                conns.push(Conn {
                    ts: t,
                    src: h,
                    dst,
                    dport: *r.choose(&[443, 80, 8443]),
                    proto: 0,
                    dur: r.exp(1.0) as f32,
                    ob: 200 + r.int(0, 2000) as u32,
                    rb: 300 + r.int(0, 20_000) as u32,
                    state: 0,
                });
            }
            labels.push(label(h, dst, false, "sparse_random"));
        }
        // Failed connections (hard negatives): a dead server retried, periodically or not.
        if r.bool(0.12) {
            let dst = ext(&mut r);
            let state = if r.bool(0.5) { 1 } else { 2 };
            let times: Vec<f64> = if r.bool(0.5) {
                let spec = BeaconSpec {
                    jitter: r.range(0.0, 0.3),
                    ..BeaconSpec::simple(r.log_range(10.0, 900.0))
                };
                synth::beacon_times(&mut r, &spec)
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect()
            } else {
                {
                    let m = r.log_range(10.0, 600.0);
                    synth::poisson(&mut r, m, 0.0, DAY)
                }
            };
            for t in times {
                conns.push(Conn {
                    ts: t,
                    src: h,
                    dst,
                    dport: 8443,
                    proto: 0,
                    dur: 0.0,
                    ob: 0,
                    rb: 0,
                    state,
                });
            }
            labels.push(label(h, dst, false, "failed_conn"));
        }
    }
    labels.push(label(0, resolver, false, "dns_resolver"));
    for (dst, name) in [
        (ntp, "benign_periodic"),
        (update, "benign_periodic"),
        (telemetry, "benign_periodic"),
        (av, "benign_periodic"),
    ] {
        // one label line per (src, dst) actually present, emitted below
        let _ = (dst, name);
    }

    // Beacons: one infected host each, patterns cycled so every pattern is represented.
    let mut br = rng.fork(3);
    let nb = cfg.beacons.min(hosts.len());
    let mut c2_dns: Vec<crate::gen_dns::C2Dns> = Vec::new();
    let mut infected: Vec<usize> = (0..hosts.len()).collect();
    br.shuffle(&mut infected);
    for (bi, &hidx) in infected.iter().take(nb).enumerate() {
        let h = hosts[hidx];
        let pattern = MALICIOUS_PATTERNS[bi % MALICIOUS_PATTERNS.len()];
        let mut r = br.fork(bi as u64);
        let period = if cfg.variant == 1 && r.bool(0.3) {
            r.log_range(900.0, 4.0 * 3600.0)
        } else if cfg.variant == 2 && r.bool(0.3) {
            r.log_range(1200.0, 4.0 * 3600.0)
        } else {
            r.log_range(10.0, 4.0 * 3600.0)
        };
        let mut spec = BeaconSpec::simple(period);
        spec.jitter = r.range(0.0, 0.5);
        spec.jitter_down_only = r.bool(0.3);
        let base = (r.int(150, 1200) as u32, r.int(200, 3000) as u32);
        let c2 = ext(&mut r);
        let mut dsts = vec![c2];
        match pattern {
            "fixed" => spec.jitter = 0.0,
            "jitter" => spec.jitter = r.range(0.2, 0.5),
            "burst" => {
                spec.burst = (2, 5);
                spec.burst_spread = r.range(0.1, 1.0);
            }
            "partial" => {
                spec.period = r.log_range(10.0, 1800.0);
                let len = r.range(2.0 * 3600.0, 12.0 * 3600.0);
                spec.start = r.range(0.0, DAY - len);
                spec.end = spec.start + len;
            }
            "gapped" => {
                spec.period = r.log_range(10.0, 3600.0);
                for _ in 0..r.int(1, 3) {
                    let a = r.range(0.0, DAY);
                    spec.gaps.push((a, a + r.range(3600.0, 4.0 * 3600.0)));
                }
            }
            "backoff" => {
                spec.period = r.log_range(10.0, 600.0);
                spec.jitter = r.range(0.0, 0.2);
                let mut b = Backoff {
                    factor: r.range(1.5, 2.0),
                    max_period: spec.period * r.range(8.0, 32.0),
                    reset_p: r.range(0.05, 0.25),
                    outages: Vec::new(),
                };
                // three back-off styles, the last two with up to 40 % jitter
                match r.int(0, 2) {
                    // sleep grows while idle, tasking (reset_p per check-in) resets it
                    0 => {}
                    // grows while the C2 is unreachable (outages of 30 min - 4 h every few
                    // hours), resets on the first successful check-in
                    1 => {
                        spec.jitter = r.range(0.0, 0.4);
                        let mut t = r.range(0.0, 6.0 * 3600.0);
                        while t < DAY {
                            let len = r.range(1800.0, 4.0 * 3600.0);
                            b.outages.push((t, t + len));
                            t += len + r.exp(3.0 * 3600.0);
                        }
                    }
                    // sleeper: backs off to its cap and mostly stays there
                    _ => {
                        spec.jitter = r.range(0.0, 0.4);
                        b.reset_p = r.range(0.0, 0.03);
                        b.max_period = spec.period * r.range(4.0, 16.0);
                    }
                }
                spec.backoff = Some(b);
            }
            "rotating" => {
                spec.period = r.log_range(10.0, 1800.0);
                for _ in 0..r.int(1, 3) {
                    dsts.push(ext(&mut r));
                }
            }
            "mixed" => {
                // the C2 sits behind an address the user also browses (CDN, fronting)
                let spread = if cfg.variant == 2 { 20.0 } else { 50.0 };
                dsts[0] = sites[(r.exp(1.0) * spread) as usize % sites.len()];
                spec.period = r.log_range(10.0, 3600.0);
                if r.bool(0.3) {
                    spec.burst = (2, 4);
                }
            }
            "long" => {
                // 1-4 h: 6-24 check-ins a day, often jittered, sometimes only part of the day
                spec.period = r.log_range(3600.0, 4.0 * 3600.0);
                spec.jitter = r.range(0.0, 0.5);
                if r.bool(0.3) {
                    spec.burst = (2, 5);
                }
            }
            "medium" => {
                // 15-60 min, partial-day or gapped half of the time
                spec.period = r.log_range(900.0, 3600.0);
                spec.jitter = r.range(0.0, 0.5);
                if r.bool(0.5) {
                    let len = r.range(8.0 * 3600.0, 20.0 * 3600.0);
                    spec.start = r.range(0.0, DAY - len);
                    spec.end = spec.start + len;
                }
                if r.bool(0.3) {
                    spec.burst = (2, 5);
                }
            }
            _ => {
                // combo: burst + partial + big jitter
                spec.burst = (2, 5);
                spec.jitter = r.range(0.3, 0.5);
                spec.period = r.log_range(10.0, 1800.0);
                let len = r.range(4.0 * 3600.0, 16.0 * 3600.0);
                spec.start = r.range(0.0, DAY - len);
                spec.end = spec.start + len;
            }
        }
        let times = synth::beacon_times(&mut r, &spec);
        c2_dns.push(crate::gen_dns::C2Dns {
            host: h,
            pattern: pattern.to_string(),
            times: times.iter().map(|x| x.0).collect(),
            domains: dsts.len(),
        });
        for (t, checkin) in times {
            let dst = if dsts.len() > 1 {
                *r.choose(&dsts)
            } else {
                dsts[0]
            };
            let _ = checkin;
            let tasking = r.bool(0.05);
            conns.push(Conn {
                ts: t,
                src: h,
                dst,
                dport: 443,
                proto: 0,
                dur: r.range(0.05, 1.5) as f32,
                ob: base.0
                    + r.int(0, 40) as u32
                    + if tasking {
                        r.int(1000, 50_000) as u32
                    } else {
                        0
                    },
                rb: base.1 + r.int(0, 60) as u32,
                state: 0,
            });
        }
        if pattern == "mixed" {
            let n = if cfg.variant == 2 {
                r.int(4, 20)
            } else {
                r.int(2, 8)
            } as usize;
            for t in synth::browsing_sessions(&mut r, n) {
                conns.push(Conn {
                    ts: t,
                    src: h,
                    dst: dsts[0],
                    dport: 443,
                    proto: 0,
                    dur: r.exp(2.0) as f32,
                    ob: (r.exp(1.0) * 900.0) as u32 + 200,
                    rb: (r.exp(1.0) * 30_000.0) as u32 + 300,
                    state: 0,
                });
            }
        }
        for &d in &dsts {
            labels.push(label(h, d, true, pattern));
        }
    }

    // Label the benign periodic pairs that exist.
    {
        let mut seen = rustc_hash::FxHashSet::default();
        for c in &conns {
            if (c.dst == ntp || c.dst == update || c.dst == telemetry || c.dst == av)
                && seen.insert((c.src, c.dst))
            {
                labels.push(label(c.src, c.dst, false, "benign_periodic"));
            }
        }
    }
    // A malicious label wins over a benign one for the same key (e.g. C2 behind a browsed CDN).
    {
        let mal: rustc_hash::FxHashSet<(String, String)> = labels
            .iter()
            .filter(|l| l.label == "malicious")
            .map(|l| (l.src.clone(), l.dst.clone()))
            .collect();
        labels.retain(|l| l.label == "malicious" || !mal.contains(&(l.src.clone(), l.dst.clone())));
    }

    // Zeek writes a connection when it ends: order by ts + duration.
    conns.sort_by(|a, b| (a.ts + a.dur as f64).total_cmp(&(b.ts + b.dur as f64)));
    let conn_path = out_dir.join(match (cfg.format, cfg.gzip) {
        (OutFormat::Tsv, false) => "conn.log",
        (OutFormat::Tsv, true) => "conn.log.gz",
        (OutFormat::Json, false) => "conn.json",
        (OutFormat::Json, true) => "conn.json.gz",
    });
    write_conns(&conn_path, &conns, cfg, &mut rng.fork(4))?;
    let mut files = vec![conn_path];
    if cfg.dns {
        let upstream = ext(&mut rng.fork(5));
        let day = crate::gen_dns::generate_dns(
            &mut rng.fork(6),
            &hosts,
            resolver,
            upstream,
            &c2_dns,
            cfg.variant,
        );
        let dns_path = out_dir.join(match (cfg.format, cfg.gzip) {
            (OutFormat::Tsv, false) => "dns.log",
            (OutFormat::Tsv, true) => "dns.log.gz",
            (OutFormat::Json, false) => "dns.json",
            (OutFormat::Json, true) => "dns.json.gz",
        });
        write_dns(&dns_path, &day, cfg, &mut rng.fork(7))?;
        labels.extend(day.labels);
        files.push(dns_path);
    }
    let labels_path = out_dir.join("labels.jsonl");
    {
        let f = File::create(&labels_path).map_err(|e| AnalyticsError::io(&labels_path, e))?;
        let mut w = BufWriter::new(f);
        for l in &labels {
            let line = serde_json::to_string(l).expect("label serializes");
            writeln!(w, "{line}").map_err(|e| AnalyticsError::io(&labels_path, e))?;
        }
        w.flush().map_err(|e| AnalyticsError::io(&labels_path, e))?;
    }
    Ok(GenSummary {
        conn_lines: conns.len() as u64,
        labels: labels.len(),
        malicious_keys: labels.iter().filter(|l| l.label == "malicious").count(),
        files: {
            files.push(labels_path);
            files
        },
    })
}

#[allow(clippy::too_many_arguments)]
fn push_beacon(
    conns: &mut Vec<Conn>,
    r: &mut Rng,
    src: u32,
    dst: u32,
    port: u16,
    proto: u8,
    spec: &BeaconSpec,
    ob: (u32, u32),
    rb: (u32, u32),
) {
    for (t, _) in synth::beacon_times(r, spec) {
        conns.push(Conn {
            ts: t,
            src,
            dst,
            dport: port,
            proto,
            dur: r.range(0.01, 0.5) as f32,
            ob: r.int(ob.0 as u64, ob.1 as u64) as u32,
            rb: r.int(rb.0 as u64, rb.1 as u64) as u32,
            state: 0,
        });
    }
}

const STATES: [&str; 3] = ["SF", "S0", "REJ"];

fn write_dns(
    path: &Path,
    day: &crate::gen_dns::DnsDay,
    cfg: &GenConfig,
    r: &mut Rng,
) -> Result<(), AnalyticsError> {
    let f = File::create(path).map_err(|e| AnalyticsError::io(path, e))?;
    let inner: Box<dyn Write> = if cfg.gzip {
        Box::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(f)
    };
    let mut w = BufWriter::with_capacity(1 << 20, inner);
    let io = |e| AnalyticsError::io(path, e);
    if cfg.format == OutFormat::Tsv {
        w.write_all(b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tdns\n#open\t2023-11-15-00-00-00\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\ttrans_id\trtt\tquery\tqclass\tqclass_name\tqtype\tqtype_name\trcode\trcode_name\tAA\tTC\tRD\tRA\tZ\tanswers\tTTLs\trejected\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tcount\tinterval\tstring\tcount\tstring\tcount\tstring\tcount\tstring\tbool\tbool\tbool\tbool\tcount\tvector[string]\tvector[interval]\tbool\n").map_err(io)?;
    }
    for (i, l) in day.lines.iter().enumerate() {
        let ts = cfg.start + l.ts;
        let sport = 1024 + (r.next_u64() % 60_000) as u16;
        let name = &day.names[l.name as usize];
        let (rc, rcn) = if l.nx {
            (3, "NXDOMAIN")
        } else {
            (0, "NOERROR")
        };
        let ans = if l.nx {
            "-".to_string()
        } else {
            format!("{}", ip(0x5db8_0000 | (l.name & 0xffff)))
        };
        let ttl = if l.nx {
            "-".to_string()
        } else {
            format!("{}.000000", l.ttl)
        };
        match cfg.format {
            OutFormat::Tsv => writeln!(
                w,
                "{ts:.6}\tD{i:x}\t{}\t{sport}\t{}\t53\tudp\t{}\t0.001\t{name}\t1\tC_INTERNET\t1\tA\t{rc}\t{rcn}\tF\tF\tT\tT\t0\t{ans}\t{ttl}\tF",
                ip(l.src),
                ip(l.dst),
                i % 65536
            )
            .map_err(io)?,
            OutFormat::Json => writeln!(
                w,
                "{{\"ts\":{ts:.6},\"uid\":\"D{i:x}\",\"id.orig_h\":\"{}\",\"id.orig_p\":{sport},\"id.resp_h\":\"{}\",\"id.resp_p\":53,\"proto\":\"udp\",\"query\":\"{name}\",\"qtype_name\":\"A\",\"rcode\":{rc},\"rcode_name\":\"{rcn}\"}}",
                ip(l.src),
                ip(l.dst)
            )
            .map_err(io)?,
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    Ok(())
}

fn write_conns(
    path: &Path,
    conns: &[Conn],
    cfg: &GenConfig,
    r: &mut Rng,
) -> Result<(), AnalyticsError> {
    let f = File::create(path).map_err(|e| AnalyticsError::io(path, e))?;
    let inner: Box<dyn Write> = if cfg.gzip {
        Box::new(flate2::write::GzEncoder::new(
            f,
            flate2::Compression::fast(),
        ))
    } else {
        Box::new(f)
    };
    let mut w = BufWriter::with_capacity(1 << 20, inner);
    let io = |e| AnalyticsError::io(path, e);
    if cfg.format == OutFormat::Tsv {
        w.write_all(b"#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n#open\t2023-11-15-00-00-00\n#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration\torig_bytes\tresp_bytes\tconn_state\tlocal_orig\tlocal_resp\tmissed_bytes\thistory\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes\ttunnel_parents\n#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring\tbool\tbool\tcount\tstring\tcount\tcount\tcount\tcount\tset[string]\n").map_err(io)?;
    }
    let mut uid = 0u64;
    for c in conns {
        uid += 1;
        let ts = cfg.start + c.ts;
        let sport = 1024 + (r.next_u64() % 60_000) as u16;
        let proto = if c.proto == 1 { "udp" } else { "tcp" };
        let service = match (c.dport, c.state) {
            (_, 1 | 2) => "-",
            (53, _) => "dns",
            (123, _) => "ntp",
            (443, _) => "ssl",
            _ => "-",
        };
        let state = STATES[c.state as usize];
        let (opk, rpk) = (
            1 + c.ob / 1000,
            if c.state == 0 { 1 + c.rb / 1400 } else { 0 },
        );
        let history = match c.state {
            0 => "ShADadFf",
            1 => "S",
            _ => "Sr",
        };
        match cfg.format {
            OutFormat::Tsv => {
                let (dur, ob, rb) = if c.state == 1 {
                    ("-".to_string(), "-".to_string(), "-".to_string())
                } else {
                    (format!("{:.6}", c.dur), c.ob.to_string(), c.rb.to_string())
                };
                writeln!(
                    w,
                    "{ts:.6}\tC{uid:x}\t{}\t{sport}\t{}\t{}\t{proto}\t{service}\t{dur}\t{ob}\t{rb}\t{state}\tT\tF\t0\t{history}\t{opk}\t{}\t{rpk}\t{}\t(empty)",
                    ip(c.src),
                    ip(c.dst),
                    c.dport,
                    c.ob + 40 * opk,
                    c.rb + 40 * rpk
                )
                .map_err(io)?;
            }
            OutFormat::Json => {
                writeln!(
                    w,
                    "{{\"ts\":{ts:.6},\"uid\":\"C{uid:x}\",\"id.orig_h\":\"{}\",\"id.orig_p\":{sport},\"id.resp_h\":\"{}\",\"id.resp_p\":{},\"proto\":\"{proto}\",\"duration\":{:.6},\"orig_bytes\":{},\"resp_bytes\":{},\"conn_state\":\"{state}\",\"history\":\"{history}\"}}",
                    ip(c.src),
                    ip(c.dst),
                    c.dport,
                    c.dur,
                    c.ob,
                    c.rb
                )
                .map_err(io)?;
            }
        }
    }
    w.flush().map_err(io)?;
    drop(w);
    Ok(())
}
