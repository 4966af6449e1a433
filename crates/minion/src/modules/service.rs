//! `service`: service identification on each of the task's ports (nmap-service-probes engine,
//! TLS, structured grabbers; see `overlord_probes::service`). One `service` finding per port that
//! still accepts connections; its payload is the schema's `Service` (the probes' `ServiceReport`
//! moved over field by field by its typed `From`), whose `screenshot` hint ("vnc" / "x11") drives
//! the screenshot follow-up rule.
//!
//! Params (all optional; any `IdentifyOptions` field, e.g. `intensity`, `total_timeout_ms`,
//! `tls`: "off", `grabbers`: false) plus `probes_file`: an extra nmap-format probes file on the
//! minion's disk. Probes: ours + `/usr/share/nmap/nmap-service-probes` when present, loaded once.

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::{Payload, Service};
use overlord_probes::service::{IdentifyOptions, ProbeDb, ServiceStatus, identify};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct ServiceId {
    /// Probe databases by extra probes file (None = default set), loaded on first use.
    dbs: Mutex<HashMap<Option<PathBuf>, Arc<ProbeDb>>>,
}

impl ServiceId {
    async fn db(&self, extra: Option<PathBuf>) -> Result<Arc<ProbeDb>, ModuleError> {
        if let Some(db) = self
            .dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&extra)
        {
            return Ok(db.clone());
        }
        let key = extra.clone();
        // Compiling ~12k PCRE2 patterns takes a moment: off the async runtime.
        let db = tokio::task::spawn_blocking(move || -> Result<ProbeDb, String> {
            let mut db = ProbeDb::default();
            let nmap = std::path::Path::new(overlord_probes::service::probefile::NMAP_PROBES_PATH);
            if nmap.exists() {
                db.add_file(nmap).map_err(|e| e.to_string())?;
            }
            db.add_source(
                "builtin:overlord-service-probes",
                overlord_probes::service::probefile::BUILTIN_PROBES.as_bytes(),
            );
            if let Some(p) = &extra {
                db.add_file(p).map_err(|e| e.to_string())?;
            }
            Ok(db)
        })
        .await
        .map_err(|e| ModuleError::Failed(format!("probe db loader: {e}")))?
        .map_err(ModuleError::Invalid)?;
        let db = Arc::new(db);
        let cov = db.coverage();
        tracing::info!(
            probes = cov.probes,
            matches = cov.matches,
            softmatches = cov.softmatches,
            rejected = cov.rejected.len(),
            "service probe database loaded"
        );
        self.dbs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, db.clone());
        Ok(db)
    }
}

impl Module for ServiceId {
    fn name(&self) -> &'static str {
        "service"
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
            let ip = task.require_target("service")?;
            let opts: IdentifyOptions = if task.params.is_object() {
                serde_json::from_value(task.params.clone())
                    .map_err(|e| ModuleError::Invalid(format!("service params: {e}")))?
            } else {
                IdentifyOptions::default()
            };
            let extra = task
                .params
                .get("probes_file")
                .and_then(|v| v.as_str())
                .map(PathBuf::from);
            let db = self.db(extra).await?;
            let reports = futures::future::join_all(
                task.ports
                    .iter()
                    .map(|p| identify(SocketAddr::new(ip, *p), &opts, &db)),
            )
            .await;
            let mut out = Vec::new();
            for r in reports {
                match r.status {
                    // The port closed since the scan (or was a self-connect): nothing to report.
                    ServiceStatus::Closed => {}
                    ServiceStatus::Filtered => {
                        return Err(ModuleError::Failed(format!(
                            "{}: {}",
                            r.addr,
                            r.status_detail.unwrap_or_default()
                        )));
                    }
                    _ => {
                        let port = r.addr.port();
                        out.push(FindingOut::new(
                            Some(ip),
                            Some(port),
                            Payload::Service(Box::new(Service::from(r))),
                        ));
                    }
                }
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::scope::Scope;
    use tokio::io::AsyncWriteExt;

    fn task(port: u16, params: serde_json::Value) -> TaskInput {
        TaskInput {
            job_id: Default::default(),
            task_id: Default::default(),
            parent_task_id: None,
            module: "service".into(),
            target: Some("127.0.0.1".parse().unwrap()),
            target_count: 1,
            ports: vec![port],
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

    #[tokio::test]
    async fn identifies_a_banner_and_skips_a_closed_port() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n").await;
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                });
            }
        });
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let m = ServiceId::default();
        let params = serde_json::json!({"grabbers": false, "rate_limit": 10});
        let out = m.run(&task(port, params.clone()), &ctx()).await.unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].port, Some(port));
        let Payload::Service(s) = &out[0].payload else {
            panic!("{out:?}")
        };
        assert_eq!(s.service.as_deref(), Some("ssh"));
        assert_eq!(s.product.as_deref(), Some("OpenSSH"));
        assert_eq!(
            s.status,
            overlord_core::finding::service::ServiceStatus::Identified
        );
        assert!(
            m.run(&task(closed, params), &ctx())
                .await
                .unwrap()
                .is_empty()
        );
        let bad = m
            .run(
                &task(port, serde_json::json!({"intensity": "high"})),
                &ctx(),
            )
            .await
            .unwrap_err();
        assert!(bad.permanent(), "{bad}");
        server.abort();
    }
}
