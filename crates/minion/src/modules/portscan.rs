//! `portscan`: TCP connect scan of the task's block of addresses × ports (a sweep task covers
//! `target_count` consecutive addresses). Probes go out in a random order (keyed by the task) and
//! unanswered ones are re-sent by measured loss per target network (`overlord_probes::scan::retry`).
//! Params: `timeout_ms` (upper bound of the adaptive per-probe timeout, default 1000),
//! `concurrency` (connects in flight for this task, 2048), `rate_limit` (connections/s, 0 = none).

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, Output, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::OpenPort;
use overlord_probes::scan::connect::SharedLimit;
use overlord_probes::scan::{ScanOptions, sweep};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Sockets in flight across every portscan task of this process (under the fd limit).
pub const PROCESS_CONNECT_LIMIT: usize = 8192;

fn limiter() -> Arc<SharedLimit> {
    static L: OnceLock<Arc<SharedLimit>> = OnceLock::new();
    L.get_or_init(|| Arc::new(SharedLimit::new(PROCESS_CONNECT_LIMIT)))
        .clone()
}

/// A keyed shuffle (Fisher–Yates over a splitmix stream): the order probes leave in.
pub fn shuffle<T>(v: &mut [T], key: u64) {
    let mut z = key;
    let mut next = || {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = z;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    };
    for i in (1..v.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The sweep's per-network counts as the result reports them.
pub fn net_counts(
    rep: &overlord_probes::scan::connect::SweepReport,
) -> Vec<crate::module::NetCounts> {
    rep.nets
        .iter()
        .map(|(n, c)| crate::module::NetCounts {
            net: n.to_string(),
            sent: c.sent,
            answered: c.answered,
            retried: c.retried,
        })
        .collect()
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
            task.require_target("portscan")?;
            let d = ScanOptions::default();
            let opts = ScanOptions {
                concurrency: task
                    .param_u64("concurrency")
                    .map(|v| v.clamp(1, 8192) as usize)
                    .unwrap_or(2048),
                timeout: task
                    .param_u64("timeout_ms")
                    .map(|v| Duration::from_millis(v.clamp(1, 60_000)))
                    .unwrap_or(d.timeout),
                retries: 0,
                rate_limit: task.param_u64("rate_limit").map(|v| v as u32).unwrap_or(0),
                limiter: Some(limiter()),
            };
            let targets = task.targets();
            let mut probes = Vec::with_capacity(targets.len() * task.ports.len());
            for a in &targets {
                for p in &task.ports {
                    probes.push((*a, *p));
                }
            }
            shuffle(&mut probes, task.job_id.rotate_left(32) ^ task.task_id);
            let (probes, rep) = sweep(probes, &opts)
                .await
                .map_err(|e| ModuleError::Failed(format!("connect sweep: {e}")))?;
            let mut open: Vec<_> = rep.open(&probes).collect();
            open.sort_unstable();
            tracing::debug!(
                task = task.task_id,
                sent = rep.sent,
                answered = rep.answered,
                retried = rep.retried,
                rounds = rep.rounds,
                "portscan sweep"
            );
            let probe_counts = super::portscan::net_counts(&rep);
            let findings = open
                .into_iter()
                .map(|(ip, p)| FindingOut::new(Some(ip), Some(p), OpenPort::tcp()))
                .collect();
            Ok(Output {
                findings,
                probe_counts,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_a_keyed_permutation() {
        let mut a: Vec<u32> = (0..1000).collect();
        let mut b = a.clone();
        shuffle(&mut a, 7);
        shuffle(&mut b, 7);
        assert_eq!(a, b);
        assert_ne!(a, (0..1000).collect::<Vec<_>>());
        a.sort_unstable();
        assert_eq!(a, (0..1000).collect::<Vec<_>>());
    }
}
