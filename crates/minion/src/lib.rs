//! overlord-minion: the agent runtime. It connects to a coordinator (reconnecting with backoff),
//! registers, heartbeats, runs leased tasks concurrently up to its capacity through [`Module`]s,
//! and reports results in batches until each is acknowledged.
//!
//! Adding a module: write `src/modules/<name>.rs` implementing [`Module`], add one line to
//! [`modules::builtin`], and (if the name is new) one line to `overlord_core::modules::CATALOG`.

pub mod config;
pub mod inputs;
pub mod module;
pub mod modules;
pub mod runtime;
pub mod telemetry;

pub use config::{ConfigError, MinionConfig, MinionSettings};
pub use module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
pub use runtime::{MinionError, run};
