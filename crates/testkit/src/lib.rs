//! overlord-testkit: the helpers every test binary shares, written once.
//!
//! - [`wait`]: polling with a deadline (async and blocking); tests wait for conditions, never
//!   sleep blindly.
//! - [`port`]: free loopback ports.
//! - [`process`]: programs a test starts (killed and reaped on drop; wait for the address a
//!   listening program writes to its `--addr-file`).
//!
//! Service launchers (sshd, redis, Xvfb, x11vnc, ...) are `overlord_probes::service::testsupport`
//! (feature `testsupport`), and the cluster sandbox is `overlord_chaos_tests`; both use these.

pub mod port;
pub mod process;
pub mod wait;
