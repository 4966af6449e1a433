//! Payload of `service` findings: what service identification learned about one port, with a
//! typed sub-record per structured grabber (SSH, HTTP, Redis, MQTT, FTP, SMTP, VNC, X11) and TLS.

use super::screen::ScreenProtocol;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the identification of a port ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceStatus {
    /// A hard `match` named the service.
    Identified,
    /// Only a `softmatch` (service known, product not).
    SoftMatch,
    /// Data came back but no rule matched it.
    Unrecognized,
    /// The port accepted connections but never sent a byte.
    NoResponse,
    /// Connection refused (no listener).
    Closed,
    /// Connect timed out.
    Filtered,
    /// The peer closed every connection at once without a byte (nmap's "tcpwrapped").
    Tcpwrapped,
    /// The peer kept sending past the byte cap (e.g. an endless banner).
    ByteCap,
    /// The peer was still trickling data at the deadline.
    Timeout,
    /// The peer speaks TLS but the handshake failed (reason in `status_detail`).
    TlsFailed,
}

/// `service`: everything learned about one port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Service {
    /// `ip:port` that was identified.
    pub addr: String,
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
    /// The structured grabber's record, tagged by `grabber`.
    pub grab: Option<Grab>,
    pub grab_error: Option<String>,
    /// Set when the desktop is open without credentials (`vnc` or `x11`): the screenshot hint the
    /// built-in follow-up rule `service screenshot=… -> screenshot` reads.
    pub screenshot: Option<ScreenProtocol>,
    /// Raw reply kept in the report (capped).
    pub banner: Option<ServiceBanner>,
    /// Probe names sent, in order of completion.
    pub probes_sent: Vec<String>,
    pub timings: ServiceTimings,
    /// The port's time budget (ms): no probe or grabber runs past it.
    #[serde(default)]
    pub budget_ms: u64,
    /// The budget ran out before every probe or the grabber was tried.
    #[serde(default)]
    pub budget_exhausted: bool,
}

/// The probe-file rule that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RuleRef {
    pub probe: String,
    /// Probe file (path, or `builtin:…`), or `grabber:<name>` / `builtin:echo`.
    pub file: String,
    /// 1-based line of the `match`/`softmatch` in that file (0 for non-file rules).
    pub line: u64,
    pub soft: bool,
    pub service: String,
}

/// A raw reply kept in a service report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceBanner {
    /// Probe whose reply this is.
    pub probe: String,
    /// Total bytes received on that reply.
    pub bytes: u64,
    pub truncated: bool,
    /// Escaped text (`\r`, `\n`, `\xHH`) of the first bytes.
    pub text: String,
}

/// Identification timings in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServiceTimings {
    pub connect_ms: f64,
    /// First byte on the NULL probe (banner), if any.
    pub banner_ms: Option<f64>,
    pub probes_ms: f64,
    pub grab_ms: f64,
    pub total_ms: f64,
}

/// What the TLS handshake showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Tls {
    /// e.g. `TLSv1_3`.
    pub version: String,
    /// e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    pub alpn: Option<String>,
    /// Leaf first, as sent by the server.
    pub chain: Vec<Certificate>,
    /// Bytes the server sent during the handshake.
    pub handshake_bytes: u64,
}

/// One certificate of a TLS chain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Certificate {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    pub expired: bool,
    pub self_signed: bool,
    /// SHA-256 of the DER encoding, lowercase hex.
    pub sha256: String,
    pub signature_algorithm: String,
    /// Set when the DER did not parse (the fingerprint is still given).
    pub parse_error: Option<String>,
}

/// A structured grabber's record, tagged by `grabber`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "grabber", rename_all = "snake_case")]
pub enum Grab {
    Ssh(SshGrab),
    Http(HttpGrab),
    Redis(RedisGrab),
    Mqtt(MqttGrab),
    Ftp(FtpGrab),
    Smtp(SmtpGrab),
    Vnc(VncGrab),
    X11(X11Grab),
    Dns(DnsGrab),
    Amqp(AmqpGrab),
}

/// DNS over TCP: the `version.bind` CHAOS TXT answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DnsGrab {
    pub product: Option<String>,
    pub version: Option<String>,
    /// The `version.bind` answer or the reason there is none (REFUSED, ...).
    pub info: Option<String>,
}

/// AMQP 0-9-1: the server's `Connection.Start` properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AmqpGrab {
    /// Protocol version the server offered (`0-9`), or the header it sent back instead.
    pub protocol: String,
    pub product: Option<String>,
    pub version: Option<String>,
    pub platform: Option<String>,
    pub cluster_name: Option<String>,
    #[serde(default)]
    pub mechanisms: Vec<String>,
}

/// SSH: identification line, KEXINIT lists, HASSH server fingerprint, host keys.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SshGrab {
    /// The identification line, e.g. `SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3`.
    pub banner: String,
    pub protocol: String,
    pub software: String,
    pub comments: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub kex: KexInit,
    /// MD5 of `kex;ciphers_s2c;macs_s2c;compression_s2c` (HASSH server).
    pub hassh_server: String,
    pub hassh_server_algorithms: String,
    pub host_keys: Vec<HostKey>,
}

/// The name-lists of an SSH KEXINIT message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KexInit {
    pub kex_algorithms: Vec<String>,
    pub host_key_algorithms: Vec<String>,
    pub ciphers_c2s: Vec<String>,
    pub ciphers_s2c: Vec<String>,
    pub macs_c2s: Vec<String>,
    pub macs_s2c: Vec<String>,
    pub compression_c2s: Vec<String>,
    pub compression_s2c: Vec<String>,
    pub first_kex_follows: bool,
}

/// An SSH host key's fingerprints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostKey {
    /// Key type from the key blob (`ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`).
    pub key_type: String,
    /// `SHA256:` + unpadded base64, as `ssh-keygen -l` prints it.
    pub sha256: String,
    /// Colon-separated MD5 (legacy format).
    pub md5: String,
    pub bits: Option<u32>,
}

/// HTTP: the final response of a GET (after same-origin redirects) and the favicon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HttpGrab {
    /// Status of the final response.
    pub status: u16,
    pub reason: String,
    pub http_version: String,
    pub path: String,
    /// Headers in order: `[name as sent, value]` pairs.
    pub headers: Vec<(String, String)>,
    pub server: Option<String>,
    pub powered_by: Option<String>,
    pub content_type: Option<String>,
    pub title: Option<String>,
    pub body_bytes: u64,
    pub body_truncated: bool,
    pub body_sha256: String,
    pub redirects: Vec<Redirect>,
    pub favicon: Option<Favicon>,
}

/// One HTTP redirect seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Redirect {
    pub status: u16,
    pub from: String,
    pub location: String,
    /// False when the target was elsewhere (never followed).
    pub followed: bool,
}

/// An HTTP favicon.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Favicon {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// Shodan-style `http.favicon.hash` (MurmurHash3 x86 32-bit, signed, of the base64 text).
    pub mmh3: i32,
}

/// Redis: INFO (or why it was refused).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RedisGrab {
    pub auth_required: bool,
    /// Protected mode refused us (no password set, non-loopback client).
    pub protected_mode: bool,
    pub version: Option<String>,
    pub mode: Option<String>,
    pub os: Option<String>,
    pub role: Option<String>,
    /// The error line when INFO was refused.
    pub error: Option<String>,
}

/// MQTT: the CONNACK to an anonymous CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MqttGrab {
    /// CONNACK return code (0 = accepted).
    pub return_code: u8,
    pub accepted: bool,
    /// Human reading of the return code.
    pub result: String,
    /// `$SYS/broker/version` when the broker publishes it.
    pub broker: Option<String>,
}

/// FTP: banner, anonymous login, SYST.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct FtpGrab {
    pub banner_code: u16,
    pub banner: Vec<String>,
    pub anonymous_allowed: bool,
    /// Reply to the anonymous attempt (code and text).
    pub anonymous_reply: Option<String>,
    pub syst: Option<String>,
}

/// SMTP: banner and EHLO.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SmtpGrab {
    pub banner_code: u16,
    pub banner: Vec<String>,
    pub ehlo_code: Option<u16>,
    /// The host name the server gives in its EHLO reply.
    pub ehlo_host: Option<String>,
    /// Extensions (`SIZE 33554432`, `8BITMIME`, `STARTTLS`, ...).
    pub extensions: Vec<String>,
    pub starttls: bool,
    /// `AUTH` mechanisms offered.
    pub auth: Vec<String>,
}

/// VNC: the RFB handshake up to ServerInit (no password is ever tried).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VncGrab {
    /// As sent by the server, e.g. `RFB 003.008`.
    pub server_version: String,
    /// The version we answered with.
    pub negotiated: String,
    /// Security type numbers offered.
    pub security_types: Vec<u8>,
    pub security_names: Vec<String>,
    pub auth_required: bool,
    /// The session is open without credentials (ServerInit received).
    pub open: bool,
    pub desktop_name: Option<String>,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Why the server refused, if it did.
    pub failure_reason: Option<String>,
    /// Server implementation guessed from the handshake (`TigerVNC`, `x11vnc`, ...).
    pub product_guess: Option<String>,
}

/// X11: the connection setup without authorization.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct X11Grab {
    /// The server accepted a connection without authorization.
    pub open: bool,
    /// `failed`, `success` or `authenticate`.
    pub result: String,
    pub protocol: String,
    pub reason: Option<String>,
    pub vendor: Option<String>,
    pub release: Option<u32>,
    /// Release decoded the X.Org way (e.g. 12101007 → 21.1.7).
    pub version: Option<String>,
    pub screens: u8,
    pub width: Option<u16>,
    pub height: Option<u16>,
    pub depth: Option<u8>,
}
