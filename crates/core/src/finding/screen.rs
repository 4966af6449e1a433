//! Payloads of the `screenshot` module: `screenshot` (the PNG travels as the finding's blob),
//! `vnc_auth`, `x11_refused`, `rdp` and `screenshot_error`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Remote-desktop protocol of a screenshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScreenProtocol {
    Vnc,
    X11,
    Rdp,
}

impl ScreenProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ScreenProtocol::Vnc => "vnc",
            ScreenProtocol::X11 => "x11",
            ScreenProtocol::Rdp => "rdp",
        }
    }
}

/// `screenshot`: a captured screen. The PNG is the finding's blob (`blob_sha256` = `sha256`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Screenshot {
    pub protocol: ScreenProtocol,
    pub width: u32,
    pub height: u32,
    /// Lowercase hex SHA-256 of the PNG (the image id).
    pub sha256: String,
    pub png_bytes: u64,
    /// What the capture learned on the way (per protocol).
    pub capture: Capture,
    /// Set when the PNG was too large to travel (no blob then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob_dropped: Option<String>,
}

/// Capture details, by protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Capture {
    Vnc(VncCapture),
    X11(X11Capture),
}

/// What an RFB (VNC) capture learned. Also the payload of `vnc_auth` (the server wants a
/// password: `auth_required`, no screenshot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VncCapture {
    /// The server's ProtocolVersion banner, e.g. "RFB 003.008".
    pub server_version: String,
    /// The version we spoke: "3.3", "3.7" or "3.8".
    pub protocol_version: String,
    /// Security types offered (3.7+) or imposed (3.3) by the server.
    pub security_types: Vec<u8>,
    pub security_type_names: Vec<String>,
    /// True when the server offers no "None" security type: no screenshot was attempted.
    pub auth_required: bool,
    /// Reason string sent by the server when it refused the connection.
    pub security_failure: Option<String>,
    pub desktop_name: Option<String>,
    /// Version string sent in answer to the ServerIdentity pseudo-encoding (LibVNCServer).
    pub server_identity: Option<String>,
    pub width: u32,
    pub height: u32,
    /// The server's native pixel format (from ServerInit).
    pub server_pixel_format: Option<PixelFormat>,
    /// Encodings the server used for the captured frames.
    pub encodings_used: Vec<String>,
    /// Full frames fetched.
    pub frames: u32,
    /// Whether the last two full frames were identical.
    pub stable: bool,
    /// Whether the settle phase ran.
    pub settled: bool,
    /// Settle rounds (each spans at least one scan pass of a polling server).
    pub settle_rounds: u32,
    /// Updates received while settling that changed something.
    pub settle_updates: u32,
    /// The first of those updates (at most 32).
    pub settle_log: Vec<SettleUpdate>,
    pub bytes_read: u64,
    pub timings: VncTimings,
}

/// An RFB PIXEL_FORMAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PixelFormat {
    pub bits_per_pixel: u8,
    pub depth: u8,
    pub big_endian: bool,
    pub true_colour: bool,
    pub red_max: u16,
    pub green_max: u16,
    pub blue_max: u16,
    pub red_shift: u8,
    pub green_shift: u8,
    pub blue_shift: u8,
}

/// One incremental update applied during the settle phase.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SettleUpdate {
    /// Milliseconds after the end of the full frame(s).
    pub at_ms: f64,
    pub rects: u32,
    /// Pixels painted (sum of the rectangle areas).
    pub pixels: u64,
}

/// RFB capture timings, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VncTimings {
    pub connect_ms: f64,
    pub handshake_ms: f64,
    /// From the first FramebufferUpdateRequest to a complete first frame.
    pub first_frame_ms: f64,
    /// From the end of the full frame(s) to the last incremental update applied while settling.
    pub last_settle_update_ms: Option<f64>,
    /// Length of the settle phase.
    pub settle_ms: f64,
    pub frames_ms: f64,
    pub total_ms: f64,
}

/// What an X11 capture learned. Also the payload of `x11_refused` (`open` false).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct X11Capture {
    /// True when the connection setup succeeded without credentials.
    pub open: bool,
    /// Why the server refused the setup ("Failed" or "Authenticate" reason text).
    pub refused_reason: Option<String>,
    pub protocol_version: Option<String>,
    pub vendor: Option<String>,
    pub release: Option<u32>,
    pub screens: Vec<X11Screen>,
    pub connect_ms: f64,
    pub total_ms: f64,
}

/// One X11 screen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct X11Screen {
    pub width: u16,
    pub height: u16,
    pub width_mm: u16,
    pub height_mm: u16,
    pub root_depth: u8,
}

/// RDP security protocols (RDP_NEG_REQ/RSP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RdpProtocol {
    /// Standard RDP security (no TLS).
    Rdp,
    Tls,
    /// CredSSP (NLA).
    Hybrid,
    RdsTls,
    /// CredSSP with Early User Authorization Result PDU.
    HybridEx,
    RdsAad,
}

impl RdpProtocol {
    /// The protocol's bit in RDP_NEG_REQ / RDP_NEG_RSP (standard RDP security is 0).
    pub fn bits(self) -> u32 {
        match self {
            RdpProtocol::Rdp => 0,
            RdpProtocol::Tls => 1,
            RdpProtocol::Hybrid => 2,
            RdpProtocol::RdsTls => 4,
            RdpProtocol::HybridEx => 8,
            RdpProtocol::RdsAad => 0x10,
        }
    }

    /// The protocol a selected-protocol value names, if any.
    pub fn from_bits(v: u32) -> Option<Self> {
        [
            Self::Rdp,
            Self::Tls,
            Self::Hybrid,
            Self::RdsTls,
            Self::HybridEx,
            Self::RdsAad,
        ]
        .into_iter()
        .find(|p| p.bits() == v)
    }
}

/// `rdp`: what an unauthenticated client learns about an RDP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Rdp {
    /// Protocol the server selects when offered TLS, CredSSP and CredSSP-EX.
    pub preferred: Option<RdpProtocol>,
    /// Protocols the server accepted when offered alone (or preferred above).
    pub supported: Vec<RdpProtocol>,
    /// True when neither standard RDP security nor plain TLS is accepted and CredSSP is.
    pub nla_required: bool,
    /// RDP_NEG_RSP flags of the preferred answer.
    pub flags: Option<u8>,
    pub attempts: Vec<RdpAttempt>,
    pub total_ms: f64,
}

/// One RDP Connection Request and its answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RdpAttempt {
    pub requested: Vec<RdpProtocol>,
    pub outcome: RdpOutcome,
}

/// The server's answer to one RDP Connection Request, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RdpOutcome {
    /// RDP_NEG_RSP: the server picked this protocol.
    Selected { protocol: RdpProtocol, flags: u8 },
    /// RDP_NEG_FAILURE with its code and name.
    Failure { code: u32, reason: String },
    /// A Connection Confirm without negotiation data (a legacy server).
    NoNegotiation,
    /// The exchange failed (refused, reset, timeout, malformed answer).
    Error { message: String },
}

/// `screenshot_error`: the server answered but broke the protocol or a cap (not retried).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScreenshotError {
    pub protocol: ScreenProtocol,
    pub error: String,
}
