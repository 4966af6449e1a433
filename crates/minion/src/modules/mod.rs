//! The module registry: one line per module.

use crate::module::Module;
use std::sync::Arc;

pub mod banner;
pub mod beacon;
pub mod enrich;
pub mod noop;
pub mod portscan;
pub mod screenshot;
pub mod service;
pub mod syn;
pub mod udp;

/// Every module a minion runs. `leak` is not a minion module: the coordinator runs it itself, next
/// to its leak database (`overlord_coordinator::lookup`).
pub fn builtin() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(portscan::PortScan),
        Arc::new(syn::Syn),
        Arc::new(banner::BannerGrab),
        Arc::new(screenshot::Screenshot),
        Arc::new(service::ServiceId::default()),
        Arc::new(noop::Noop),
        Arc::new(enrich::Enrich::default()),
        Arc::new(beacon::Beacon),
        Arc::new(udp::UdpScan::default()),
    ]
}
