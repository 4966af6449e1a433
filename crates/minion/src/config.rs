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
        Ok(MinionSettings {
            id: self.id.clone(),
            provider: self.provider.clone(),
            coordinator: self.coordinator.clone(),
            capacity: self.capacity,
            capabilities: self.capabilities.clone(),
            modules,
            scope,
            reconnect_max: Duration::from_millis(self.reconnect_max_ms.max(50)),
        })
    }
}
