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
    /// A separate listen address for minions (MinionService, EnrollService); default: minions
    /// use `listen` too.
    #[serde(default)]
    pub minion_listen: Option<String>,
    /// TLS (`[tls]`): server certificate and minion client certificates from the cluster CA.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Client API tokens (`[auth]`).
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// Connection and per-owner limits (`[limits]`).
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `[tls]`: the CA directory made by `overlord ca init`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Relative to the config file.
    pub ca_dir: PathBuf,
}

/// `[auth]`: the API token file written by `overlord token add`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Relative to the config file.
    pub tokens: PathBuf,
}

/// `[limits]` (all optional).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// A new connection must send its HTTP/2 preface (or TLS handshake) within this.
    #[serde(default = "d_handshake")]
    pub handshake_timeout_ms: u64,
    /// A connection silent this long is closed (the server pings every 10 s).
    #[serde(default = "d_idle")]
    pub idle_timeout_ms: u64,
    /// Live WatchJob streams per owner.
    #[serde(default = "d_watch_owner")]
    pub watches_per_owner: usize,
    /// SubmitJob calls in flight per owner.
    #[serde(default = "d_submit_owner")]
    pub submits_per_owner: usize,
    /// Bytes of findings in one ListResults page (a page holds at least one finding).
    #[serde(default = "d_page_bytes")]
    pub results_page_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            handshake_timeout_ms: d_handshake(),
            idle_timeout_ms: d_idle(),
            watches_per_owner: d_watch_owner(),
            submits_per_owner: d_submit_owner(),
            results_page_bytes: d_page_bytes(),
        }
    }
}

fn d_handshake() -> u64 {
    10_000
}
fn d_idle() -> u64 {
    60_000
}
fn d_watch_owner() -> usize {
    64
}
fn d_submit_owner() -> usize {
    8
}
fn d_page_bytes() -> usize {
    16 << 20
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
    pub minion_listen: Option<String>,
    pub tls: Option<crate::security::TlsSettings>,
    pub tokens: Option<crate::security::tokens::Tokens>,
    pub limits: LimitsConfig,
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
            minion_listen: None,
            tls: None,
            tokens: None,
            limits: LimitsConfig::default(),
        }
    }

    /// With neither TLS nor tokens, only loopback listen addresses are allowed: anyone who can
    /// reach the port would control the cluster. Checked at start (after command-line overrides).
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let secured = self.tls.is_some() && self.tokens.is_some();
        for (what, a) in std::iter::once(("listen", &self.listen))
            .chain(self.minion_listen.iter().map(|m| ("minion_listen", m)))
        {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "{what} {a:?} must be an address like 127.0.0.1:50051"
                ))
            })?;
            if !addr.ip().is_loopback() && !secured {
                return Err(ConfigError::Invalid(format!(
                    "{what} {a} is not a loopback address, and this coordinator has {}: anyone reaching the port would control the cluster. Enable both: `overlord ca init --dir pki` and `[tls] ca_dir = \"pki\"`, `overlord token add --file tokens.toml --name NAME --role admin` and `[auth] tokens = \"tokens.toml\"`",
                    match (self.tls.is_some(), self.tokens.is_some()) {
                        (false, false) => "neither TLS nor API tokens",
                        (true, false) => "TLS but no API tokens",
                        _ => "API tokens but no TLS",
                    }
                )));
            }
        }
        Ok(())
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
            minion_listen: self.minion_listen.clone(),
            tls: self.tls.as_ref().map(|t| crate::security::TlsSettings {
                ca_dir: base.join(&t.ca_dir),
            }),
            tokens: match &self.auth {
                Some(a) => Some(
                    crate::security::tokens::Tokens::load(&base.join(&a.tokens))
                        .map_err(|e| ConfigError::Invalid(e.to_string()))?,
                ),
                None => None,
            },
            limits: {
                let l = self.limits.clone();
                if l.handshake_timeout_ms == 0 || l.idle_timeout_ms < 20_000 {
                    return Err(ConfigError::Invalid(format!(
                        "[limits] handshake_timeout_ms ({}) must be > 0 and idle_timeout_ms ({}) at least 20000 (the server pings every 10 s)",
                        l.handshake_timeout_ms, l.idle_timeout_ms
                    )));
                }
                if l.watches_per_owner == 0
                    || l.submits_per_owner == 0
                    || l.results_page_bytes < 1024
                {
                    return Err(ConfigError::Invalid(
                        "[limits] watches_per_owner and submits_per_owner must be > 0, results_page_bytes >= 1024".into(),
                    ));
                }
                l
            },
        })
    }
}
