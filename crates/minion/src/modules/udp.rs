//! `udp`: UDP scan with service identification of the task's ports (see `overlord_probes::udp`).
//! One `udp` finding per port judged `open` or `open|filtered` (closed and filtered ports too
//! with `report_closed: true`); its data is the serialized `UdpReport` (state, reason, service,
//! product, version, the probes sent, tries, the budget and the time spent).
//!
//! Params (all optional): any `UdpOptions` field (`wait_ms`, `wait_min_ms`, `retries` (a cap on
//! re-send rounds; the rounds sent follow measured loss), `budget_ms`,
//! `intensity`, `nmap_probes`, `hinted_only`, `concurrency`), `report_closed`. Probes: ours +
//! the UDP probes of `/usr/share/nmap/nmap-service-probes` when present, loaded once.

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, Output, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::UdpPort;
use overlord_probes::service::ProbeDb;
use overlord_probes::udp::{UdpOptions, UdpState, scan_targets};
use std::sync::Arc;
use tokio::sync::OnceCell;

#[derive(Default)]
pub struct UdpScan {
    db: OnceCell<Arc<ProbeDb>>,
}

/// Checks and bounds the task's options (a job cannot ask for an hour per port).
pub fn options(params: &serde_json::Value) -> Result<UdpOptions, ModuleError> {
    let mut o: UdpOptions = if params.is_object() {
        serde_json::from_value(params.clone())
            .map_err(|e| ModuleError::Invalid(format!("udp params: {e}")))?
    } else {
        UdpOptions::default()
    };
    if o.intensity > 9 {
        return Err(ModuleError::Invalid(format!(
            "udp params: intensity {} is not in 0..=9",
            o.intensity
        )));
    }
    o.retries = o.retries.min(15);
    o.wait_min_ms = o.wait_min_ms.clamp(1, 10_000);
    o.wait_ms = o.wait_ms.clamp(10, 10_000);
    o.budget_ms = o.budget_ms.clamp(50, 60_000);
    o.concurrency = o.concurrency.clamp(1, 1024);
    o.banner_cap = o.banner_cap.min(4096);
    Ok(o)
}

impl UdpScan {
    async fn db(&self) -> Result<Arc<ProbeDb>, ModuleError> {
        self.db
            .get_or_try_init(|| async {
                let db = tokio::task::spawn_blocking(ProbeDb::load_default)
                    .await
                    .map_err(|e| ModuleError::Failed(format!("probe db loader: {e}")))?
                    .map_err(|e| ModuleError::Failed(e.to_string()))?;
                Ok(db)
            })
            .await
            .cloned()
    }
}

impl Module for UdpScan {
    fn name(&self) -> &'static str {
        "udp"
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
            let ip = task.require_target("udp")?;
            let opts = options(&task.params)?;
            let report_closed = task
                .params
                .get("report_closed")
                .and_then(|v| v.as_bool())
                .unwrap_or(false);
            let db = self.db().await?;
            let targets: Vec<std::net::SocketAddr> = task
                .ports
                .iter()
                .map(|p| std::net::SocketAddr::new(ip, *p))
                .collect();
            let sweep = scan_targets(&targets, &opts, &db).await;
            let probe_counts = super::portscan::net_counts(&sweep.counts);
            let mut out = Vec::new();
            for r in sweep.reports {
                let keep = matches!(r.state, UdpState::Open | UdpState::OpenFiltered);
                if !keep && !report_closed {
                    continue;
                }
                // The probe's report as the schema's payload (a typed move of every field).
                let port = r.addr.port();
                let payload = Box::new(UdpPort::from(r));
                out.push(FindingOut::new(Some(ip), Some(port), payload));
            }
            Ok(Output {
                findings: out,
                probe_counts,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::finding::Payload;
    use overlord_core::scope::Scope;

    fn task(ports: Vec<u16>, params: serde_json::Value) -> TaskInput {
        TaskInput {
            job_id: Default::default(),
            task_id: Default::default(),
            parent_task_id: None,
            module: "udp".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports,
            params,
            blob: None,
            input: None,
            ranges: Vec::new(),
        }
    }

    fn ctx() -> ModuleCtx {
        ModuleCtx {
            minion_id: "m1".into(),
            provider: "test".into(),
            scope: Scope::loopback(),
            input_dir: None,
        }
    }

    /// A memcached-shaped UDP responder (request id echoed) and a closed port: one `udp`
    /// finding, open and named; the closed port only with `report_closed`.
    #[tokio::test]
    async fn open_port_is_a_finding_closed_port_only_on_request() {
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let open = s.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                let Ok((n, from)) = s.recv_from(&mut buf).await else {
                    return;
                };
                if n >= 8 && buf[8..n].starts_with(b"version\r\n") {
                    let mut r = buf[..8].to_vec();
                    r.extend_from_slice(b"VERSION 1.6.99\r\n");
                    let _ = s.send_to(&r, from).await;
                }
            }
        });
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let m = UdpScan::default();
        let params = serde_json::json!({"nmap_probes": false, "retries": 0, "wait_ms": 300});
        let out = m
            .run(&task(vec![open, closed], params), &ctx())
            .await
            .unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].port, Some(open));
        let Payload::Udp(u) = &out[0].payload else {
            panic!("not a udp finding: {out:?}")
        };
        assert_eq!(u.state, overlord_core::finding::UdpState::Open);
        assert_eq!(u.service.as_deref(), Some("memcached"));
        assert_eq!(u.version.as_deref(), Some("1.6.99"));
        assert!(u.validated);

        let params = serde_json::json!({"nmap_probes": false, "retries": 0, "report_closed": true});
        let out = m.run(&task(vec![closed], params), &ctx()).await.unwrap();
        assert_eq!(out.len(), 1, "{out:?}");
        let Payload::Udp(u) = &out[0].payload else {
            panic!("not a udp finding: {out:?}")
        };
        assert_eq!(u.state, overlord_core::finding::UdpState::Closed);
        assert_eq!(u.reason, "port-unreach");

        let bad = m
            .run(
                &task(vec![open], serde_json::json!({"intensity": 12})),
                &ctx(),
            )
            .await
            .unwrap_err();
        assert!(bad.permanent(), "{bad}");
        server.abort();
    }
}
