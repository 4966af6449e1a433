//! overlord-core: domain types and the pure decisions of the job manager.
//!
//! Nothing here does I/O. The coordinator's actors call these functions; they are unit-tested
//! without actors or sockets.
//!
//! - [`target`]: IPv4/IPv6 addresses, CIDRs and ranges ([`target::IpRange`]).
//! - [`ports`]: port lists and ranges ([`ports::PortSet`]).
//! - [`scope`]: allow-list (default loopback) and blocklist checks.
//! - [`modules`]: the module catalog (names, capabilities, how root tasks are made).
//! - [`job`]: job spec, job and task records, lazy randomized expansion into bounded tasks.
//! - [`finding`]: the typed, versioned finding schema (kinds, payloads, JSON Schema).
//! - [`followup`]: follow-up rules (finding → new tasks).
//! - [`sched`]: placement, lease checks, retry policy, failure detection.
//! - [`trust`]: results as untrusted input (findings vs. their task, follow-up guard, strikes).
//! - [`security`]: roles and what they may do, minion session admission, reserved identities,
//!   input-path confinement, error-text clipping.

pub mod finding;
pub mod followup;
pub mod hitlist;
pub mod job;
pub mod modules;
pub mod perm;
pub mod ports;
pub mod quality;
pub mod sched;
pub mod scope;
pub mod security;
pub mod target;
pub mod task_error;
pub mod trust;

/// Job identifier (monotonic per coordinator data directory).
pub type JobId = u64;
/// Task identifier, unique within a job.
pub type TaskId = u64;
/// Fencing token of a lease; strictly increasing across coordinator restarts.
pub type Token = u64;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
