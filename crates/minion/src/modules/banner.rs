//! `banner`: generic banner grab on each of the task's ports (read first; if silent, send a short
//! generic probe). Params: `max_bytes` (4096), `wait_ms` (1500), `total_ms` (4000).

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::Banner;
use overlord_probes::scan::{BannerOptions, GrabError, grab_banner};
use std::net::SocketAddr;
use std::time::Duration;

pub struct BannerGrab;

impl Module for BannerGrab {
    fn name(&self) -> &'static str {
        "banner"
    }
    fn capability(&self) -> &'static str {
        "grab"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            let ip = task.require_target("banner")?;
            let d = BannerOptions::default();
            let opts = BannerOptions {
                max_bytes: task
                    .param_u64("max_bytes")
                    .map(|v| v.clamp(1, 1 << 20) as usize)
                    .unwrap_or(d.max_bytes),
                wait_first: task
                    .param_u64("wait_ms")
                    .map(Duration::from_millis)
                    .unwrap_or(d.wait_first),
                total: task
                    .param_u64("total_ms")
                    .map(Duration::from_millis)
                    .unwrap_or(d.total),
                ..d
            };
            let grabs = futures::future::join_all(task.ports.iter().map(|p| {
                let opts = &opts;
                async move { (*p, grab_banner(SocketAddr::new(ip, *p), opts).await) }
            }))
            .await;
            let mut out = Vec::new();
            for (port, g) in grabs {
                match g {
                    Ok(b) => out.push(FindingOut::new(
                        Some(ip),
                        Some(port),
                        Banner {
                            banner: b.text(),
                            bytes: b.bytes.len() as u64,
                            probed: b.probed,
                            truncated: b.truncated,
                        },
                    )),
                    // The port closed since the scan, or was a self-connect: nothing to report.
                    Err(GrabError::Connect(..)) | Err(GrabError::SelfConnect(_)) => {}
                    Err(e @ GrabError::ConnectTimeout(_)) => {
                        return Err(ModuleError::Failed(e.to_string()));
                    }
                }
            }
            Ok(out)
        })
    }
}
