//! Service identification: an nmap-service-probes compatible engine, TLS observation and
//! structured protocol grabbers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use overlord_probes::service::{identify, IdentifyOptions, ProbeDb};
//! let db = ProbeDb::load_default()?; // our probes + /usr/share/nmap/nmap-service-probes if present
//! let report = identify("127.0.0.1:22".parse()?, &IdentifyOptions::default(), &db).await;
//! println!("{}", serde_json::to_string_pretty(&report)?);
//! # Ok(()) }
//! ```

pub mod engine;
#[doc(hidden)]
pub mod fuzzing;
pub mod grabbers;
pub mod io;
#[cfg(feature = "testsupport")]
pub mod lab;
pub mod probefile;
pub mod template;
#[cfg(feature = "testsupport")]
pub mod testsupport;
pub mod tls;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use engine::Dialer;
pub use engine::identify;
pub use grabbers::{Grab, GrabKind};
pub use probefile::{ParseReport, ProbeDb, ProbeFileError};
pub use tls::{Certificate, Tls};

/// Whether to try TLS on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    /// Try a TLS handshake in parallel with the plain probes; use the tunnel when it works.
    #[default]
    Auto,
    /// Never try TLS.
    Off,
}

/// Tuning knobs; the defaults suit loopback and LAN targets and stay bounded on hostile peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdentifyOptions {
    /// nmap's version intensity (0..=9): probes rarer than this are skipped unless the port is in
    /// their `ports`/`sslports` list.
    pub intensity: u8,
    /// Probes in flight at once after the NULL probe (per target port).
    pub parallelism: usize,
    pub connect_timeout_ms: u64,
    /// Lower bound of the wait for a banner on the NULL probe (scaled up by the connect RTT).
    pub banner_wait_ms: u64,
    /// Lower bound of the wait for the first byte of a reply to a probe.
    pub response_wait_ms: u64,
    /// Waits are at least `rtt_factor` × the measured connect round-trip time.
    pub rtt_factor: u32,
    /// Quiet gap after which a reply is matched.
    pub idle_ms: u64,
    /// Further quiet gap allowed when a reply has not matched yet.
    pub patience_ms: u64,
    /// Hard cap on one probe's read (the probe's `totalwaitms` when smaller).
    pub max_probe_wait_ms: u64,
    /// The port's time budget: hard cap on the whole identification of one port (probes,
    /// late banners, TLS and grabbers included).
    pub total_timeout_ms: u64,
    /// Bytes read per reply at most.
    pub max_response_bytes: usize,
    /// Bytes of raw banner kept in the report.
    pub banner_cap: usize,
    pub tls: TlsMode,
    /// Bytes the server may send during a TLS handshake.
    pub tls_handshake_cap: usize,
    /// Server name to send (SNI); none for a bare IP.
    pub sni: Option<String>,
    /// Run the structured grabber of the identified protocol.
    pub grabbers: bool,
    /// Time limit of a grabber.
    pub grab_timeout_ms: u64,
}

impl Default for IdentifyOptions {
    fn default() -> Self {
        IdentifyOptions {
            intensity: 7,
            parallelism: 8,
            connect_timeout_ms: 3000,
            banner_wait_ms: 300,
            response_wait_ms: 250,
            rtt_factor: 20,
            idle_ms: 40,
            patience_ms: 1500,
            max_probe_wait_ms: 4000,
            total_timeout_ms: 12_000,
            max_response_bytes: 64 * 1024,
            banner_cap: 2048,
            tls: TlsMode::Auto,
            tls_handshake_cap: 128 * 1024,
            sni: None,
            grabbers: true,
            grab_timeout_ms: 3000,
        }
    }
}

/// How identification ended, the matching rule, the raw reply kept and the timings: the finding
/// schema's records (the engine fills them directly).
pub use overlord_core::finding::service::{RuleRef, ServiceBanner, ServiceStatus, ServiceTimings};
use overlord_core::finding::{ScreenProtocol, Service};

/// Everything learned about one port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceReport {
    pub addr: SocketAddr,
    pub status: ServiceStatus,
    pub status_detail: Option<String>,
    /// nmap service name (`ssh`, `http`, `X11`, ...).
    pub service: Option<String>,
    /// `ssl` when the service runs inside TLS.
    pub tunnel: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
    pub cpe: Vec<String>,
    /// The hard match (or the grabber) that named the service.
    pub rule: Option<RuleRef>,
    /// The softmatch seen, if any.
    pub softmatch: Option<RuleRef>,
    pub tls: Option<Tls>,
    /// TLS was tried and failed: why.
    pub tls_error: Option<String>,
    pub grab: Option<Grab>,
    pub grab_error: Option<String>,
    /// `vnc` or `x11` when the desktop is open without credentials (spawns a screenshot task).
    pub screenshot: Option<ScreenProtocol>,
    pub banner: Option<ServiceBanner>,
    /// Probe names sent, in order of completion (`Help` right after `NULL` when the silent
    /// NULL connection was nudged).
    pub probes_sent: Vec<String>,
    pub timings: ServiceTimings,
    /// The port's time budget (`total_timeout_ms`); `timings.total_ms` is what was spent.
    #[serde(default)]
    pub budget_ms: u64,
    /// The budget ran out before every probe (or the grabber) finished.
    #[serde(default)]
    pub budget_exhausted: bool,
}

impl ServiceReport {
    pub(crate) fn new(addr: SocketAddr, status: ServiceStatus) -> Self {
        ServiceReport {
            addr,
            status,
            status_detail: None,
            service: None,
            tunnel: None,
            product: None,
            version: None,
            info: None,
            hostname: None,
            os: None,
            device: None,
            cpe: Vec::new(),
            rule: None,
            softmatch: None,
            tls: None,
            tls_error: None,
            grab: None,
            grab_error: None,
            screenshot: None,
            banner: None,
            probes_sent: Vec::new(),
            timings: ServiceTimings::default(),
            budget_ms: 0,
            budget_exhausted: false,
        }
    }

    /// `ssl/http`-style service name as nmap prints it.
    pub fn full_service(&self) -> Option<String> {
        let s = self.service.as_deref()?;
        Some(match &self.tunnel {
            Some(t) => format!("{t}/{s}"),
            None => s.to_string(),
        })
    }
}

/// The report as the finding schema's `service` payload: every field moves over by name and type,
/// so a field added to one side and not the other does not compile.
impl From<ServiceReport> for Service {
    fn from(r: ServiceReport) -> Service {
        let ServiceReport {
            addr,
            status,
            status_detail,
            service,
            tunnel,
            product,
            version,
            info,
            hostname,
            os,
            device,
            cpe,
            rule,
            softmatch,
            tls,
            tls_error,
            grab,
            grab_error,
            screenshot,
            banner,
            probes_sent,
            timings,
            budget_ms,
            budget_exhausted,
        } = r;
        Service {
            addr: addr.to_string(),
            status,
            status_detail,
            service,
            tunnel,
            product,
            version,
            info,
            hostname,
            os,
            device,
            cpe,
            rule,
            softmatch,
            tls,
            tls_error,
            grab,
            grab_error,
            screenshot,
            banner,
            probes_sent,
            timings,
            budget_ms,
            budget_exhausted,
        }
    }
}
