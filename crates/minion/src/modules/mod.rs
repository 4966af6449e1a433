//! The module registry: one line per module.

use crate::module::Module;
use std::sync::Arc;

pub mod banner;
pub mod beacon;
pub mod noop;
pub mod portscan;

/// Every module this minion binary ships.
pub fn builtin() -> Vec<Arc<dyn Module>> {
    vec![
        Arc::new(portscan::PortScan),
        Arc::new(banner::BannerGrab),
        Arc::new(noop::Noop),
        Arc::new(beacon::Beacon),
    ]
}
