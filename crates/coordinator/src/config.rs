//! Coordinator configuration (TOML, versioned, strict).

use crate::engine::EngineConfig;
use overlord_core::scope::{Scope, parse_blocklist};
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Config format version; must be 1.
    pub version: u32,
    /// gRPC listen address; port 0 picks a free port (the bound address is printed).
    pub listen: String,
    /// sled data directory (relative paths are relative to the config file).
    pub data_dir: PathBuf,
    #[serde(default = "d_hb")]
    pub heartbeat_interval_ms: u64,
    #[serde(default = "d_hb_timeout")]
    pub heartbeat_timeout_ms: u64,
    #[serde(default = "d_task_timeout")]
    pub task_timeout_ms: u64,
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// Pending tasks kept expanded per job (expansion is lazy beyond this).
    #[serde(default = "d_watermark")]
    pub expand_watermark: usize,
    /// Allowed target ranges; default loopback only (127.0.0.0/8, ::1).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Blocklist file of opted-out ranges (relative to the config file).
    #[serde(default)]
    pub blocklist: Option<PathBuf>,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Image serving (`[images]`, see crate::images).
    #[serde(default)]
    pub images: crate::images::ImagesConfig,
    /// NATS JetStream firehose (`[firehose]`, see crate::firehose); absent = off.
    #[serde(default)]
    pub firehose: Option<crate::firehose::FirehoseConfig>,
}

/// OpenTelemetry OTLP export; off by default.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    #[serde(default)]
    pub otlp_enabled: bool,
    /// e.g. `http://127.0.0.1:4317`
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    #[serde(default)]
    pub service_name: Option<String>,
}

fn d_hb() -> u64 {
    200
}
fn d_hb_timeout() -> u64 {
    1000
}
fn d_task_timeout() -> u64 {
    600_000
}
fn d_watermark() -> usize {
    4096
}
fn d_attempts() -> u32 {
    5
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unsupported coordinator config version {0} (expected 1)")]
    Version(u32),
    #[error("invalid coordinator config: {0}")]
    Invalid(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: String,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub scope: Scope,
    pub telemetry: TelemetryConfig,
    pub images: crate::images::ImagesConfig,
    pub firehose: Option<crate::firehose::FirehoseConfig>,
}

impl Settings {
    /// Defaults for an embedded/test coordinator: loopback scope, default timings.
    pub fn local(data_dir: PathBuf) -> Self {
        Settings {
            listen: "127.0.0.1:0".into(),
            data_dir,
            engine: EngineConfig::default(),
            scope: Scope::loopback(),
            telemetry: Default::default(),
            images: Default::default(),
            firehose: None,
        }
    }
}

impl CoordinatorConfig {
    /// Validates; relative paths resolve against `base` (the config file's directory).
    pub fn validate(&self, base: &Path) -> Result<Settings, ConfigError> {
        if self.version != 1 {
            return Err(ConfigError::Version(self.version));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "listen {:?} must be an address like 127.0.0.1:50051",
                self.listen
            )));
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_timeout_ms < 2 * self.heartbeat_interval_ms
        {
            return Err(ConfigError::Invalid(format!(
                "heartbeat_timeout_ms ({}) must be at least twice heartbeat_interval_ms ({}), which must be > 0",
                self.heartbeat_timeout_ms, self.heartbeat_interval_ms
            )));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::Invalid("max_attempts must be >= 1".into()));
        }
        let block = match &self.blocklist {
            Some(p) => {
                let path = base.join(p);
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                parse_blocklist(&text).map_err(|(line, e)| {
                    ConfigError::Invalid(format!("blocklist {}: line {line}: {e}", path.display()))
                })?
            }
            None => Vec::new(),
        };
        if let Some(f) = &self.firehose {
            f.validate().map_err(ConfigError::Invalid)?;
        }
        let scope = Scope::new(&self.allow, block)
            .map_err(|e| ConfigError::Invalid(format!("allow: {e}")))?;
        Ok(Settings {
            listen: self.listen.clone(),
            data_dir: base.join(&self.data_dir),
            engine: EngineConfig {
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                heartbeat_timeout_ms: self.heartbeat_timeout_ms,
                task_timeout_ms: self.task_timeout_ms,
                max_attempts: self.max_attempts,
                expand_watermark: self.expand_watermark.max(1),
            },
            scope,
            telemetry: self.telemetry.clone(),
            images: crate::images::ImagesConfig {
                leaks: self.images.leaks.as_ref().map(|p| base.join(p)),
            },
            firehose: self.firehose.clone(),
        })
    }
}
