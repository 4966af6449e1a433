//! `portscan`: TCP connect scan of the task's ports on its target. Params: `timeout_ms`
//! (default 1000), `retries` (1), `concurrency` (1024), `rate_limit` (connections/s, 0 = none).

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;
use overlord_probes::scan::{ScanOptions, scan_ports};
use overlord_core::finding::OpenPort;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Connections in flight across every portscan task of this process.
pub const PROCESS_CONNECT_LIMIT: usize = 4096;

fn limiter() -> Arc<Semaphore> {
    static L: OnceLock<Arc<Semaphore>> = OnceLock::new();
    L.get_or_init(|| Arc::new(Semaphore::new(PROCESS_CONNECT_LIMIT)))
        .clone()
}

pub struct PortScan;

impl Module for PortScan {
    fn name(&self) -> &'static str {
        "portscan"
    }
    fn capability(&self) -> &'static str {
        "scan"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            let ip = task.require_target("portscan")?;
            let d = ScanOptions::default();
            let opts = ScanOptions {
                concurrency: task
                    .param_u64("concurrency")
                    .map(|v| v.clamp(1, 8192) as usize)
                    .unwrap_or(d.concurrency),
                timeout: task
                    .param_u64("timeout_ms")
                    .map(Duration::from_millis)
                    .unwrap_or(d.timeout),
                retries: task
                    .param_u64("retries")
                    .map(|v| v.min(5) as u32)
                    .unwrap_or(d.retries),
                rate_limit: task.param_u64("rate_limit").map(|v| v as u32).unwrap_or(0),
                limiter: Some(limiter()),
            };
            let open = scan_ports(ip, &task.ports, &opts).await;
            Ok(open
                .into_iter()
                .map(|p| FindingOut::new(Some(ip), Some(p), OpenPort::tcp()))
                .collect())
        })
    }
}
