//! Structured protocol grabbers: typed fields for protocols where a banner is not enough.
//! None of them ever tries a password: they record only what is open without credentials.

pub mod amqp;
pub mod dns;
pub mod ftp;
pub mod http;
pub mod mqtt;
pub mod redis;
pub mod smtp;
pub mod ssh;
pub mod vnc;
pub mod x11;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

use super::engine::{Dialer, Waits};
use super::io::DialError;
use super::{IdentifyOptions, RuleRef, ServiceReport, ServiceStatus};
use overlord_core::finding::ScreenProtocol;

/// Which grabber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrabKind {
    Ssh,
    Http,
    Redis,
    Mqtt,
    Ftp,
    Smtp,
    Vnc,
    X11,
    Dns,
    Amqp,
}

impl GrabKind {
    /// The grabber for an nmap service name.
    pub fn for_service(service: &str) -> Option<GrabKind> {
        Some(match service {
            "ssh" => GrabKind::Ssh,
            "http" | "https" | "http-proxy" | "http-alt" => GrabKind::Http,
            "redis" => GrabKind::Redis,
            "mqtt" => GrabKind::Mqtt,
            "ftp" => GrabKind::Ftp,
            "smtp" | "smtps" | "submission" => GrabKind::Smtp,
            "vnc" => GrabKind::Vnc,
            "X11" | "x11" => GrabKind::X11,
            "domain" => GrabKind::Dns,
            "amqp" => GrabKind::Amqp,
            _ => return None,
        })
    }

    /// The usual grabber of a well-known port (used when the probes named nothing).
    pub fn for_port(port: u16) -> Option<GrabKind> {
        Some(match port {
            22 | 2222 => GrabKind::Ssh,
            80 | 443 | 8000 | 8080 | 8443 | 8888 => GrabKind::Http,
            6379 => GrabKind::Redis,
            1883 | 8883 => GrabKind::Mqtt,
            21 => GrabKind::Ftp,
            25 | 465 | 587 => GrabKind::Smtp,
            5900..=5999 => GrabKind::Vnc,
            6000..=6063 => GrabKind::X11,
            53 => GrabKind::Dns,
            5672 => GrabKind::Amqp,
            _ => return None,
        })
    }
}

/// Typed grabber output: the finding schema's record (`overlord_core::finding::service::Grab`).
pub use overlord_core::finding::service::Grab;

/// Why a grabber gave up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GrabError {
    #[error("connect: {0}")]
    Dial(#[from] DialError),
    #[error("i/o: {0}")]
    Io(String),
    #[error("peer did not answer in time ({0})")]
    Timeout(&'static str),
    #[error("not this protocol: {0}")]
    Protocol(String),
    #[error("peer sent more than {0} bytes")]
    TooLarge(usize),
}

impl From<std::io::Error> for GrabError {
    fn from(e: std::io::Error) -> Self {
        GrabError::Io(e.to_string())
    }
}

/// Runs one grabber (each opens its own connections through `dialer`).
pub async fn grab(
    kind: GrabKind,
    dialer: &Dialer,
    waits: &Waits,
    opts: &IdentifyOptions,
) -> Result<Grab, GrabError> {
    let wait = waits.response.max(waits.banner) * 4;
    Ok(match kind {
        GrabKind::Ssh => Grab::Ssh(ssh::grab(dialer, wait).await?),
        GrabKind::Http => Grab::Http(http::grab(dialer, wait, opts).await?),
        GrabKind::Redis => Grab::Redis(redis::grab(dialer, wait).await?),
        GrabKind::Mqtt => Grab::Mqtt(mqtt::grab(dialer, wait).await?),
        GrabKind::Ftp => Grab::Ftp(ftp::grab(dialer, wait).await?),
        GrabKind::Smtp => Grab::Smtp(smtp::grab(dialer, wait).await?),
        GrabKind::Vnc => Grab::Vnc(vnc::grab(dialer, wait).await?),
        GrabKind::X11 => Grab::X11(x11::grab(dialer, wait).await?),
        GrabKind::Dns => Grab::Dns(dns::grab(dialer, wait).await?),
        GrabKind::Amqp => Grab::Amqp(amqp::grab(dialer, wait).await?),
    })
}

/// Folds a grab into the report: fills product/version the rules left empty, names the service
/// when the rules named nothing, and sets the screenshot hint for open desktops.
pub(crate) fn merge(report: &mut ServiceReport, kind: GrabKind, g: Grab) {
    let (service, product, version) = match &g {
        Grab::Ssh(s) => ("ssh", s.product.clone(), s.version.clone()),
        Grab::Http(h) => {
            let (p, v) = h
                .server
                .as_deref()
                .map(split_product)
                .unwrap_or((None, None));
            ("http", p, v)
        }
        Grab::Redis(r) => (
            "redis",
            Some("Redis key-value store".to_string()),
            r.version.clone(),
        ),
        Grab::Mqtt(m) => {
            let (p, v) = m
                .broker
                .as_deref()
                .map(|b| match b.split_once(" version ") {
                    Some((p, v)) => (Some(p.to_string()), Some(v.trim().to_string())),
                    None => (Some(b.to_string()), None),
                })
                .unwrap_or((None, None));
            ("mqtt", p, v)
        }
        Grab::Ftp(_) => ("ftp", None, None),
        Grab::Smtp(_) => ("smtp", None, None),
        Grab::Vnc(v) => {
            if v.open {
                report.screenshot = Some(ScreenProtocol::Vnc);
            }
            ("vnc", v.product_guess.clone(), None)
        }
        Grab::X11(x) => {
            if x.open {
                report.screenshot = Some(ScreenProtocol::X11);
            }
            ("X11", x.vendor.clone(), x.version.clone())
        }
        Grab::Dns(d) => {
            if report.info.is_none() {
                report.info = d.info.clone();
            }
            ("domain", d.product.clone(), d.version.clone())
        }
        Grab::Amqp(a) => {
            if report.info.is_none() {
                report.info = a
                    .protocol
                    .strip_prefix("0-")
                    .map(|_| format!("AMQP {}", a.protocol));
            }
            ("amqp", a.product.clone(), a.version.clone())
        }
    };
    if report.service.is_none() {
        report.service = Some(service.to_string());
        report.status = ServiceStatus::Identified;
        report.status_detail = None;
        report.rule = Some(RuleRef {
            probe: format!("grabber:{kind:?}").to_lowercase(),
            file: "builtin:grabber".into(),
            line: 0,
            soft: false,
            service: service.to_string(),
        });
    }
    let generic = report.product.as_deref().is_none_or(|p| {
        matches!(
            p,
            "VNC" | "MQTT broker" | "X11 server" | "Advanced Message Queue Protocol"
        )
    });
    if generic && product.is_some() {
        report.product = product;
        if version.is_some() {
            report.version = version;
        }
    } else if report.version.is_none() && report.product.is_some() && report.product == product {
        report.version = version;
    }
    if report.status == ServiceStatus::SoftMatch && report.product.is_some() {
        report.status = ServiceStatus::Identified;
    }
    report.grab = Some(g);
}

/// `nginx/1.22.1 (Debian)` → (`nginx`, `1.22.1`).
fn split_product(s: &str) -> (Option<String>, Option<String>) {
    let first = s.split_whitespace().next().unwrap_or(s);
    match first.split_once('/') {
        Some((p, v)) => (Some(p.to_string()), Some(v.to_string())),
        None => (Some(first.to_string()), None),
    }
}

/// Reads into `buf` until `done(buf)` says how many bytes form a complete unit, the deadline, or
/// the cap. Returns the unit's length.
pub(crate) async fn read_until<S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    buf: &mut Vec<u8>,
    deadline: Instant,
    cap: usize,
    what: &'static str,
    mut done: impl FnMut(&[u8]) -> Option<usize>,
) -> Result<usize, GrabError> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(n) = done(buf) {
            return Ok(n);
        }
        if buf.len() >= cap {
            return Err(GrabError::TooLarge(cap));
        }
        let n = match timeout_at(deadline, s.read(&mut tmp)).await {
            Err(_) => return Err(GrabError::Timeout(what)),
            Ok(r) => r?,
        };
        if n == 0 {
            return Err(GrabError::Protocol(format!(
                "connection closed while reading {what}"
            )));
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// Position just past the first `\n`, if any.
pub fn line_end(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n').map(|i| i + 1)
}

/// End of a complete multi-line reply (`NNN-...` lines then `NNN ...`), FTP/SMTP style.
pub fn reply_end(b: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(e) = line_end(&b[start..]) {
        let line = &b[start..start + e];
        start += e;
        if line.len() >= 4 && line[..3].iter().all(u8::is_ascii_digit) && line[3] != b'-' {
            return Some(start);
        }
        if line.len() < 4 && line.len() >= 3 && line[..3].iter().all(u8::is_ascii_digit) {
            return Some(start);
        }
    }
    None
}

/// Splits a multi-line reply into (code, text lines).
pub fn parse_reply(b: &[u8]) -> (u16, Vec<String>) {
    let text = String::from_utf8_lossy(b);
    let mut code = 0;
    let mut lines = Vec::new();
    for l in text.lines() {
        if let Some(c) = l.get(..3) {
            code = c.parse().unwrap_or(0);
        }
        lines.push(l.get(4..).unwrap_or("").to_string());
    }
    (code, lines)
}
