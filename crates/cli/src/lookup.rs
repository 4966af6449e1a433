//! The coordinator's lookup minion: a minion inside the coordinator process, next to the leak
//! database, that runs `leak` tasks. It uses the normal minion runtime over real gRPC to the
//! coordinator's own address (provider `coordinator`, capability and module `leak` only), so the
//! scheduler, leases, fencing and result ingestion treat it like any other minion. Ordinary minions
//! do not ship the `leak` module, so they are never leased a `leak` task.

use overlord_core::scope::Scope;
use overlord_minion::modules::leak;
use std::future::Future;

/// Tasks the lookup minion runs at once (a lookup is a few sled reads).
pub const LOOKUP_CAPACITY: u32 = 16;

/// Starts the lookup minion of `running` (whose settings had `scope`); it stops when `shutdown`
/// resolves. Stop it before the coordinator: it holds a handle on the coordinator's image store.
pub fn spawn_lookup_minion(
    running: &overlord_coordinator::Running,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let settings = leak::lookup_settings(&running.local_url(), LOOKUP_CAPACITY, scope);
    let modules = leak::lookup_modules(running.leak_db());
    tokio::spawn(async move {
        if let Err(e) = overlord_minion::run(settings, modules, shutdown).await {
            tracing::error!(error = %e, "lookup minion stopped");
        }
    })
}
