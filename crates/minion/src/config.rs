//! Minion configuration (TOML, versioned, strict).

use overlord_core::scope::{Scope, parse_blocklist};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MinionConfig {
    /// Config format version; must be 1.
    pub version: u32,
    pub id: String,
    pub provider: String,
    /// Coordinator URL, e.g. `http://127.0.0.1:50051`.
    pub coordinator: String,
    #[serde(default = "default_capacity")]
    pub capacity: u32,
    /// Capabilities declared; default: those of all enabled modules.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Modules enabled; default: every built-in module.
    #[serde(default)]
    pub modules: Vec<String>,
    /// Allowed target ranges; default loopback only.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Blocklist file (one range per line).
    #[serde(default)]
    pub blocklist: Option<PathBuf>,
    #[serde(default = "default_backoff")]
    pub reconnect_max_ms: u64,
    /// OpenTelemetry OTLP export (off by default); installed by the process (the CLI).
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// mTLS to the coordinator (`[tls]`, files written by `overlord minion enroll`). Required for
    /// an `https://` coordinator URL: it never falls back to plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The only directory file inputs (beacon logs, enrich files) are read from; none = file
    /// inputs refused.
    #[serde(default)]
    pub input_dir: Option<PathBuf>,
}

/// `[tls]` of a minion: PEM files (relative to the config file).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA certificate (verifies the coordinator).
    pub ca: PathBuf,
    /// This minion's certificate and key (its identity).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Loaded client TLS material (PEM).
#[derive(Clone)]
pub struct ClientTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls { .. }") // never print the key
    }
}

impl ClientTls {
    pub fn endpoint_config(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(
                &self.cert_pem,
                &self.key_pem,
            ))
    }
}

/// OpenTelemetry OTLP export; off by default. Same shape as the coordinator's `[telemetry]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub otlp_enabled: bool,
    /// OTLP gRPC endpoint, e.g. `http://127.0.0.1:4317`
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
}

fn default_capacity() -> u32 {
    64
}
fn default_backoff() -> u64 {
    2000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unsupported minion config version {0} (expected 1)")]
    Version(u32),
    #[error("invalid minion config: {0}")]
    Invalid(String),
    #[error("blocklist {path}: line {line}: {reason}")]
    Blocklist {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Validated settings the runtime uses.
#[derive(Clone, Debug)]
pub struct MinionSettings {
    pub id: String,
    pub provider: String,
    pub coordinator: String,
    pub capacity: u32,
    pub capabilities: Vec<String>,
    pub modules: Vec<String>,
    pub scope: Scope,
    pub reconnect_max: Duration,
    /// mTLS material; required for `https://`.
    pub tls: Option<ClientTls>,
    /// Sent as `x-overlord-internal` (the coordinator's own lookup minion only).
    pub internal_secret: Option<String>,
    /// Canonical directory file inputs come from (None: file inputs refused).
    pub input_dir: Option<PathBuf>,
}

impl MinionSettings {
    /// Settings for a minion made in code (tests, the embedded cluster): loopback scope, no
    /// TLS, no input directory.
    pub fn local(coordinator: &str, id: &str, provider: &str, capacity: u32) -> Self {
        MinionSettings {
            id: id.into(),
            provider: provider.into(),
            coordinator: coordinator.into(),
            capacity,
            capabilities: Vec::new(),
            modules: Vec::new(),
            scope: Scope::loopback(),
            reconnect_max: Duration::from_millis(1000),
            tls: None,
            internal_secret: None,
            input_dir: None,
        }
    }
}

impl MinionConfig {
    pub fn validate(&self, available: &[&str]) -> Result<MinionSettings, ConfigError> {
        if self.version != 1 {
            return Err(ConfigError::Version(self.version));
        }
        if self.id.trim().is_empty() || self.provider.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "id and provider must not be empty".into(),
            ));
        }
        if !(self.coordinator.starts_with("http://") || self.coordinator.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "coordinator {:?} must be a URL like http://127.0.0.1:50051",
                self.coordinator
            )));
        }
        if self.capacity == 0 || self.capacity > 100_000 {
            return Err(ConfigError::Invalid(format!(
                "capacity {} must be within 1..=100000",
                self.capacity
            )));
        }
        let modules: Vec<String> = if self.modules.is_empty() {
            available.iter().map(|s| s.to_string()).collect()
        } else {
            self.modules.clone()
        };
        for m in &modules {
            if !available.contains(&m.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "unknown module {m:?}; available: {}",
                    available.join(", ")
                )));
            }
        }
        let block = match &self.blocklist {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.clone(),
                    source,
                })?;
                parse_blocklist(&text).map_err(|(line, e)| ConfigError::Blocklist {
                    path: p.clone(),
                    line,
                    reason: e.to_string(),
                })?
            }
            None => Vec::new(),
        };
        let scope = Scope::new(&self.allow, block)
            .map_err(|e| ConfigError::Invalid(format!("allow: {e}")))?;
        let tls = match &self.tls {
            Some(t) => {
                let read = |p: &PathBuf| {
                    std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                        path: p.clone(),
                        source,
                    })
                };
                Some(ClientTls {
                    ca_pem: read(&t.ca)?,
                    cert_pem: read(&t.cert)?,
                    key_pem: read(&t.key)?,
                })
            }
            None => None,
        };
        if self.coordinator.starts_with("https://") && tls.is_none() {
            return Err(ConfigError::Invalid(format!(
                "coordinator {:?} is https:// but there is no [tls] section (enroll with `overlord minion enroll`); https never falls back to plaintext",
                self.coordinator
            )));
        }
        let input_dir = match &self.input_dir {
            Some(d) => Some(
                std::fs::canonicalize(d).map_err(|source| ConfigError::Read {
                    path: d.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        Ok(MinionSettings {
            id: self.id.clone(),
            provider: self.provider.clone(),
            coordinator: self.coordinator.clone(),
            capacity: self.capacity,
            capabilities: self.capabilities.clone(),
            modules,
            scope,
            reconnect_max: Duration::from_millis(self.reconnect_max_ms.max(50)),
            tls,
            internal_secret: None,
            input_dir,
        })
    }
}
