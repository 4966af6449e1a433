//! Chaos harness for Overlord: a cluster sandbox of real OS processes, fault injectors (signals, a TCP
//! fault proxy, hostile peers), an independent ledger of what the targets really are, seeded fault
//! schedules, and the figures printed after every run.
//!
//! Everything runs on loopback (127.0.0.0/8) with ports chosen at run time.
//!
//! `backbone_sandbox` (written with the backbone) holds the first end-to-end scenarios' helpers.

pub mod backbone_sandbox;
pub mod client;
pub mod faults;
pub mod figures;
pub mod garbage;
pub mod ledger;
pub mod process;
pub mod proxy;
pub mod rng;
pub mod rogue;
pub mod sandbox;
pub mod scenario;
pub mod verify;
/// The shared polling helpers (one copy, in `overlord-testkit`).
pub use overlord_testkit::wait;
