//! Payloads of the scan modules: `open_port` (portscan) and `banner` (banner grab).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// State of a scanned port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PortState {
    /// The port answered (TCP: the handshake completed).
    Open,
    /// No answer that rules `open` out (UDP without a reply).
    OpenFiltered,
}

/// How an open TCP port was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScanMethod {
    /// A full connect (`portscan`).
    Connect,
    /// A SYN answered by a SYN-ACK carrying our cookie (`syn`, stateless raw packets).
    Syn,
}

/// `open_port`: a port that accepted a connection (target and port are the finding's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenPort {
    pub state: PortState,
    pub proto: Transport,
    /// How it was found; absent = a connect (`portscan`, and every record written before the
    /// `syn` module existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<ScanMethod>,
}

impl OpenPort {
    /// An open TCP port (the connect scan's finding).
    pub fn tcp() -> Self {
        OpenPort {
            state: PortState::Open,
            proto: Transport::Tcp,
            method: None,
        }
    }

    /// An open TCP port found by the stateless SYN scan.
    pub fn syn() -> Self {
        OpenPort {
            method: Some(ScanMethod::Syn),
            ..OpenPort::tcp()
        }
    }
}

/// `banner`: what a port said first (or answered to a short generic probe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Banner {
    /// Escaped text (`\r`, `\n`, `\xHH`) of the bytes read.
    pub banner: String,
    /// Bytes read.
    pub bytes: u64,
    /// The port was silent and a generic probe was sent first.
    pub probed: bool,
    /// The byte or time cap cut the banner.
    pub truncated: bool,
}

/// `noop`: one per task of the `noop` module with `emit` set (exactly-once checks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Noop {
    /// The task that emitted it.
    pub task: u64,
}

/// State of a UDP port as the `udp` module judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum UdpState {
    /// A reply came back.
    #[serde(rename = "open")]
    Open,
    /// Silence after every retransmission: open or dropped.
    #[serde(rename = "open|filtered")]
    OpenFiltered,
    /// ICMP port unreachable.
    #[serde(rename = "closed")]
    Closed,
    /// Another ICMP error (administratively prohibited, host unreachable, ...).
    #[serde(rename = "filtered")]
    Filtered,
}

impl UdpState {
    /// The state's name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            UdpState::Open => "open",
            UdpState::OpenFiltered => "open|filtered",
            UdpState::Closed => "closed",
            UdpState::Filtered => "filtered",
        }
    }
}

/// `udp`: one UDP port probed with protocol payloads (`udp` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UdpPort {
    /// `ip:port` probed.
    pub addr: String,
    pub state: UdpState,
    /// `udp-response`, `port-unreach`, `admin-prohibited`, `no-response`, ...
    pub reason: String,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    #[serde(default)]
    pub cpe: Vec<String>,
    /// The probe whose reply named the service.
    pub probe: Option<String>,
    /// How the reply was tied to our request, or the rule that matched.
    pub evidence: Option<String>,
    /// Only a softmatch named the service.
    #[serde(default)]
    pub soft: bool,
    /// The naming reply echoed our request's identifier.
    #[serde(default)]
    pub validated: bool,
    /// The first reply (escaped, capped).
    pub reply: Option<String>,
    #[serde(default)]
    pub reply_bytes: usize,
    /// Distinct probes sent, in order.
    #[serde(default)]
    pub probes_sent: Vec<String>,
    /// Bursts sent (1 = no retransmission).
    pub tries: u32,
    /// First reply (or ICMP error) after the first send.
    pub rtt_ms: Option<f64>,
    pub budget_ms: u64,
    pub spent_ms: f64,
}
