//! `syn`: stateless SYN scan of the task's block of addresses × ports through one pinned
//! interface (`overlord_probes::scan::syn`). Params: `interface` (default `lo`), `source_ip`
//! (default 127.0.0.1 / ::1 by family), `source_port` (61000; re-send rounds use the next 15
//! too), `gateway_mac` (`aa:bb:..`, default all zeros as on `lo`), `wait_ms` (upper bound of the
//! RTT-driven answer wait after a round, 200), `rate_limit` (packets/s).
//! Needs CAP_NET_RAW: without it the task fails permanently with an error saying so.

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, Output, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::OpenPort;
use overlord_probes::scan::syn::{SynError, SynOptions, SynScanner};
use std::net::IpAddr;
use std::time::Duration;

pub struct Syn;

fn mac(s: &str) -> Result<[u8; 6], ModuleError> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .map_err(|_| ModuleError::Invalid(format!("gateway_mac {s:?} is not aa:bb:cc:dd:ee:ff")))?;
    v.try_into()
        .map_err(|_| ModuleError::Invalid(format!("gateway_mac {s:?} is not 6 bytes")))
}

impl Module for Syn {
    fn name(&self) -> &'static str {
        "syn"
    }
    fn capability(&self) -> &'static str {
        "raw"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move { Ok(self.run_counted(task, ctx).await?.findings) })
    }

    fn run_counted<'a>(
        &'a self,
        task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Output, ModuleError>> {
        Box::pin(async move {
            task.require_target("syn")?;
            let mut o = SynOptions::default();
            if let Some(i) = task.params.get("interface").and_then(|v| v.as_str()) {
                o.interface = i.to_string();
            }
            if let Some(s) = task.params.get("source_ip").and_then(|v| v.as_str()) {
                match s.parse::<IpAddr>() {
                    Ok(IpAddr::V4(a)) => o.source_v4 = a,
                    Ok(IpAddr::V6(a)) => o.source_v6 = a,
                    Err(_) => return Err(ModuleError::Invalid(format!("source_ip {s:?}"))),
                }
            }
            if let Some(m) = task.params.get("gateway_mac").and_then(|v| v.as_str()) {
                o.gateway_mac = mac(m)?;
            }
            if let Some(p) = task.param_u64("source_port") {
                o.source_port = u16::try_from(p)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| ModuleError::Invalid(format!("source_port {p}")))?;
            }
            if let Some(w) = task.param_u64("wait_ms") {
                o.wait = Duration::from_millis(w.clamp(1, 10_000));
            }
            o.rate_limit = task.param_u64("rate_limit").unwrap_or(0) as u32;
            let mut probes = Vec::new();
            for a in task.targets() {
                for p in &task.ports {
                    probes.push((a, *p));
                }
            }
            super::portscan::shuffle(&mut probes, task.job_id.rotate_left(17) ^ task.task_id);
            let (probes, rep) = tokio::task::spawn_blocking(move || {
                let s = SynScanner::new(o)?;
                let rep = s.scan(&probes)?;
                Ok::<_, SynError>((probes, rep))
            })
            .await
            .map_err(|e| ModuleError::Failed(format!("syn scan thread: {e}")))?
            .map_err(|e| match e {
                SynError::NoCapNetRaw | SynError::NoInterface(_) | SynError::Family { .. } => {
                    ModuleError::Invalid(e.to_string())
                }
                SynError::Io(e) => ModuleError::Failed(format!("syn scan: {e}")),
            })?;
            let mut open: Vec<_> = rep.open(&probes).collect();
            open.sort_unstable();
            let probe_counts = super::portscan::net_counts(&rep);
            let findings = open
                .into_iter()
                .map(|(ip, p)| FindingOut::new(Some(ip), Some(p), OpenPort::syn()))
                .collect();
            Ok(Output {
                findings,
                probe_counts,
            })
        })
    }
}
