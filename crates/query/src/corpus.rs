//! A generated corpus for `overlord bench query`: jobs of up to `per_job` services each, every
//! job a re-scan of the same address space with a few percent of services changed (versions,
//! certificates, opened and closed ports), with a realistic mix of ports, products, banners,
//! certificates and screen text. Deterministic per seed.

use crate::state::{Http, Observation, Provenance, Screen, Tls};
use std::net::{IpAddr, Ipv4Addr};

/// xorshift64*: small, fast, deterministic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }
}

/// (port, weight, service, products)
const PORTS: &[(u16, u32, &str, &[&str])] = &[
    (
        80,
        30,
        "http",
        &["nginx", "Apache httpd", "Microsoft IIS httpd", "lighttpd"],
    ),
    (
        443,
        25,
        "ssl/http",
        &["nginx", "Apache httpd", "Microsoft IIS httpd"],
    ),
    (22, 20, "ssh", &["OpenSSH", "Dropbear sshd"]),
    (8080, 6, "http", &["Jetty", "Apache Tomcat", "nginx"]),
    (21, 4, "ftp", &["vsftpd", "ProFTPD", "Pure-FTPd"]),
    (25, 3, "smtp", &["Postfix smtpd", "Exim smtpd"]),
    (3389, 3, "ms-wbt-server", &["Microsoft Terminal Services"]),
    (5900, 2, "vnc", &["RealVNC", "TightVNC", "x11vnc"]),
    (6379, 2, "redis", &["Redis key-value store"]),
    (3306, 2, "mysql", &["MySQL", "MariaDB"]),
    (8443, 2, "ssl/http", &["nginx", "Apache Tomcat"]),
    (1883, 1, "mqtt", &["Mosquitto"]),
];

const WORDS: &[&str] = &[
    "welcome",
    "login",
    "router",
    "admin",
    "dashboard",
    "status",
    "camera",
    "printer",
    "portal",
    "control",
    "panel",
    "system",
    "network",
    "device",
    "server",
    "default",
    "page",
    "index",
    "setup",
    "configuration",
    "monitor",
    "gateway",
    "firewall",
    "storage",
    "backup",
    "cloud",
];
const SCREEN: &[&str] = &[
    "PLANT OVERVIEW pump 3 running",
    "ALARM high pressure tank 2",
    "Windows login press ctrl alt del",
    "root@server:~# ",
    "SCADA HMI line 4 stopped",
    "Enter password",
    "Desktop",
    "ALARM acknowledged",
];

fn version(rng: &mut Rng, product: &str) -> String {
    match product {
        "OpenSSH" => format!("{}.{}p1", rng.below(4) + 6, rng.below(10)),
        "nginx" => format!("1.{}.{}", rng.below(10) + 16, rng.below(5)),
        "Apache httpd" => format!("2.4.{}", rng.below(60)),
        "vsftpd" => format!("{}", rng.pick(&["2.3.4", "3.0.3", "3.0.5"])),
        "Redis key-value store" => {
            format!("{}.{}.{}", rng.below(5) + 3, rng.below(3), rng.below(20))
        }
        _ => format!("{}.{}", rng.below(10), rng.below(20)),
    }
}

/// One service of the address space: stable per (host, slot) so that jobs see the same services.
#[derive(Clone, Debug)]
pub struct Service {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub obs: Observation,
}

fn service(seed: u64, host: u64, slot: u64, mutate: u64) -> Service {
    let mut rng = Rng::new(seed ^ host.wrapping_mul(0x1000_0001) ^ slot.wrapping_mul(0x7FF1));
    // 10.0.0.0/8: the host's address
    let ip = Ipv4Addr::from(0x0A00_0000u32 + (host as u32 & 0x00FF_FFFF));
    let total: u32 = PORTS.iter().map(|p| p.1).sum();
    let mut w = rng.below(total as u64) as u32;
    let mut pi = 0;
    for (i, p) in PORTS.iter().enumerate() {
        if w < p.1 {
            pi = i;
            break;
        }
        w -= p.1;
    }
    let (port, _, svc, products) = PORTS[pi];
    let port = if slot > 0 && rng.chance(0.3) {
        port + 1000 * slot as u16
    } else {
        port
    };
    let product = rng.pick(products).to_string();
    let mut ver = version(&mut rng, &product);
    let mut m = Rng::new(mutate ^ host ^ (slot << 40));
    if mutate > 0 && m.chance(0.03) {
        ver = version(&mut m, &product); // an upgrade between jobs
    }
    let mut o = Observation {
        open: Some(true),
        transport: Some("tcp".into()),
        service: Some(svc.into()),
        product: Some(product.clone()),
        version: Some(ver.clone()),
        cpe: vec![format!(
            "cpe:/a:{}:{}",
            product.split(' ').next().unwrap_or("x").to_lowercase(),
            ver
        )],
        ..Default::default()
    };
    let words: Vec<&str> = (0..4).map(|_| *rng.pick(WORDS)).collect();
    match svc {
        "http" | "ssl/http" => {
            o.banner = Some(format!(
                "HTTP/1.1 200 OK\\r\\nServer: {product}/{ver}\\r\\n"
            ));
            o.http = Some(Http {
                title: Some(words.join(" ")),
                status: Some(*rng.pick(&[200, 200, 200, 301, 401, 403, 404])),
                server: Some(format!("{product}/{ver}")),
            });
            if svc == "ssl/http" {
                let cn = format!("CN={}.example", words[0]);
                let self_signed = rng.chance(0.2);
                let mut sha = format!("{:016x}{:016x}", rng.next(), rng.next());
                if mutate > 0 && m.chance(0.02) {
                    sha = format!("{:016x}{:016x}", m.next(), m.next()); // a renewed certificate
                }
                o.tls = Some(Tls {
                    subject: cn.clone(),
                    issuer: if self_signed {
                        cn
                    } else {
                        (*rng.pick(&["CN=R3", "CN=DigiCert TLS RSA", "CN=Sectigo RSA"])).into()
                    },
                    expired: rng.chance(0.1),
                    self_signed,
                    sha256: sha,
                    not_after: 1_700_000_000 + rng.below(100_000_000) as i64,
                });
            }
        }
        "ssh" => {
            o.banner = Some(format!(
                "SSH-2.0-{}_{} {}",
                product.replace(' ', "_"),
                ver,
                rng.pick(&["Debian-5", "Ubuntu-4ubuntu0.5", "FreeBSD-20230316"])
            ))
        }
        "ftp" => o.banner = Some(format!("220 ({product} {ver}) {} ready", words[1])),
        "smtp" => o.banner = Some(format!("220 mail.{}.example ESMTP {product}", words[2])),
        "vnc" | "ms-wbt-server" => {
            o.screen = Some(Screen {
                image: Some(format!(
                    "{:016x}{:016x}{:016x}{:016x}",
                    rng.next(),
                    rng.next(),
                    rng.next(),
                    rng.next()
                )),
                text: Some(format!("{} {}", rng.pick(SCREEN), words.join(" "))),
                faces: Some(rng.below(3) as u32),
                tags: if rng.chance(0.3) {
                    vec!["login_prompt".into()]
                } else {
                    vec![]
                },
                ..Default::default()
            });
        }
        "redis" => {
            o.banner = Some(format!(
                "-NOAUTH Authentication required. redis_version:{ver}"
            ))
        }
        _ => o.banner = Some(format!("{product} {ver} {}", words[3])),
    }
    Service { ip, port, obs: o }
}

/// The corpus: `n` findings in jobs of `per_job`, one finding per service row.
pub struct Corpus {
    pub seed: u64,
    pub n: u64,
    pub per_job: u64,
    /// Unix ms of job 1; job k is `k - 1` days later.
    pub start_ms: u64,
}

impl Corpus {
    pub fn jobs(&self) -> u64 {
        self.n.div_ceil(self.per_job)
    }

    /// Hosts per job: each has 1..=3 services (mean 2).
    pub fn hosts(&self) -> u64 {
        (self.per_job / 2).max(1)
    }

    /// The `i`-th finding (0-based) of the corpus: provenance and observation.
    pub fn finding(&self, i: u64) -> (Provenance, Observation) {
        let job = i / self.per_job + 1;
        let k = i % self.per_job;
        // finding k of a job: host k/2, slot k%2 (2 services per host), 1% of hosts closed or new
        let host = k / 2;
        let slot = k % 2;
        let mut mutate = if job > 1 { self.seed ^ job } else { 0 };
        let mut h = host;
        if job > 1 && Rng::new(self.seed ^ job ^ (host << 1)).chance(0.01) {
            h = self.hosts() + host; // a host only this job sees
            mutate = 0;
        }
        let s = service(self.seed, h, slot, mutate);
        let minion = (h % 8) as usize;
        let p = Provenance {
            job,
            cursor: k + 1,
            ip: Some(IpAddr::V4(s.ip)),
            port: s.port,
            module: "service".into(),
            minion: format!("minion-{minion}"),
            provider: ["aws", "gcp", "hetzner", "ovh"][minion % 4].into(),
            at_ms: self.start_ms + (job - 1) * 86_400_000 + k * 10,
        };
        (p, s.obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_jobs_overlap() {
        let c = Corpus {
            seed: 7,
            n: 2000,
            per_job: 1000,
            start_ms: 0,
        };
        assert_eq!(c.finding(5), c.finding(5));
        let same = (0..1000)
            .filter(|i| c.finding(*i).0.key()[2..] == c.finding(1000 + i).0.key()[2..])
            .count();
        assert!(same > 950 && same < 1000, "{same}");
        let ports: std::collections::BTreeSet<u16> =
            (0..1000).map(|i| c.finding(i).0.port).collect();
        assert!(ports.contains(&80) && ports.contains(&22) && ports.len() > 10);
    }
}
