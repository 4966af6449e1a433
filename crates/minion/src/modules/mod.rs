//! The module registry: one line per module.

use crate::module::Module;
use std::sync::Arc;

pub mod banner;
pub mod enrich;
pub mod beacon;
pub mod noop;
pub mod portscan;
pub mod screenshot;
pub mod service;

/// Every module this minion binary ships.
pub fn builtin() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(portscan::PortScan),
        Arc::new(banner::BannerGrab),
        Arc::new(screenshot::Screenshot),
        Arc::new(service::ServiceId::default()),
        Arc::new(noop::Noop),
        Arc::new(enrich::Enrich::default()),
        Arc::new(beacon::Beacon),
    ]
}
