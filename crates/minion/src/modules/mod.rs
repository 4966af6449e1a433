//! The module registry: one line per module.

use crate::module::Module;
use std::sync::Arc;

pub mod banner;
pub mod beacon;
pub mod enrich;
pub mod leak;
pub mod noop;
pub mod portscan;
pub mod screenshot;
pub mod service;
pub mod syn;

/// Every module an ordinary minion runs. `leak` is not here: it needs the coordinator's leak
/// database and runs only on the coordinator's lookup minion (see [`leak::lookup_modules`]).
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
    ]
}
