//! Loading config files (TOML) with errors that name the file and the problem.

use anyhow::{Context, Result};
use overlord_coordinator::{CoordinatorConfig, Settings};
use overlord_minion::config::TelemetryConfig;
use overlord_minion::{MinionConfig, MinionSettings};
use std::path::Path;

pub fn coordinator(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read coordinator config {}", path.display()))?;
    let cfg: CoordinatorConfig = toml::from_str(&text)
        .with_context(|| format!("invalid coordinator config {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    cfg.validate(base)
        .with_context(|| format!("coordinator config {}", path.display()))
}

pub fn minion(path: &Path) -> Result<MinionSettings> {
    minion_with_telemetry(path).map(|(s, _)| s)
}

/// The minion's settings and its `[telemetry]` section.
pub fn minion_with_telemetry(path: &Path) -> Result<(MinionSettings, TelemetryConfig)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read minion config {}", path.display()))?;
    let mut cfg: MinionConfig = toml::from_str(&text)
        .with_context(|| format!("invalid minion config {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    cfg.blocklist = cfg.blocklist.map(|b| base.join(b));
    cfg.input_dir = cfg.input_dir.map(|d| base.join(d));
    if let Some(t) = cfg.tls.as_mut() {
        t.ca = base.join(&t.ca);
        t.cert = base.join(&t.cert);
        t.key = base.join(&t.key);
    }
    let names: Vec<&str> = overlord_minion::modules::builtin()
        .iter()
        .map(|m| m.name())
        .collect();
    let settings = cfg
        .validate(&names)
        .with_context(|| format!("minion config {}", path.display()))?;
    Ok((settings, cfg.telemetry))
}
