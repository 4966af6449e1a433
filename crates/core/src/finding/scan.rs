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

/// `open_port`: a port that accepted a connection (target and port are the finding's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OpenPort {
    pub state: PortState,
    pub proto: Transport,
}

impl OpenPort {
    /// An open TCP port (the connect scan's finding).
    pub fn tcp() -> Self {
        OpenPort {
            state: PortState::Open,
            proto: Transport::Tcp,
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
