//! OTLP export end to end: a real coordinator process and a real minion process (the `overlord`
//! binary, telemetry switched on in their configs) export to a tiny OTLP gRPC receiver started
//! here on 127.0.0.1:0. The minion's `task` span must be a child of the coordinator's `lease`
//! span (same trace id, parent span id = lease span id), and the coordinator's and the minion's
//! metrics arrive.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
struct SpanSeen {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Default)]
struct Seen {
    spans: Vec<SpanSeen>,
    metrics: HashSet<(String, String)>,
    /// Latest value of each integer sum (a cumulative counter) or gauge, keyed by service, name and
    /// labels.
    sums: HashMap<(String, String, String), i64>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Seen>>);

fn service_of(r: &Option<Resource>) -> String {
    r.as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = service_of(&rs.resource);
            for ss in rs.scope_spans {
                for s in ss.spans {
                    seen.spans.push(SpanSeen {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut seen = self.0.lock().unwrap();
        for rm in req.into_inner().resource_metrics {
            let service = service_of(&rm.resource);
            for sm in rm.scope_metrics {
                for m in sm.metrics {
                    let points = match &m.data {
                        Some(Data::Sum(sum)) => Some(&sum.data_points),
                        Some(Data::Gauge(g)) => Some(&g.data_points),
                        _ => None,
                    };
                    if let Some(points) = points {
                        for p in points {
                            if let Some(number_data_point::Value::AsInt(v)) = p.value {
                                let mut labels: Vec<String> = p
                                    .attributes
                                    .iter()
                                    .map(|kv| {
                                        let v = match kv
                                            .value
                                            .as_ref()
                                            .and_then(|v| v.value.as_ref())
                                        {
                                            Some(Value::StringValue(s)) => s.clone(),
                                            other => format!("{other:?}"),
                                        };
                                        format!("{}={v}", kv.key)
                                    })
                                    .collect();
                                labels.sort();
                                seen.sums
                                    .insert((service.clone(), m.name.clone(), labels.join(",")), v);
                            }
                        }
                    }
                    seen.metrics.insert((service.clone(), m.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

use overlord_testkit::process::{Kill, wait_for_addr_file};

fn overlord(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_overlord"));
    c.args(args)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    c
}

/// The shared wait (`overlord-testkit`), failing the test on timeout.
fn wait_for<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    overlord_testkit::wait::wait_some_sync(limit, what, f).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver_with_context_across_the_hop() {
    // The OTLP receiver.
    let recv = Receiver::default();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", l.local_addr().unwrap());
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(recv.clone()))
        .add_service(MetricsServiceServer::new(recv.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l));
    tokio::spawn(server);

    // A target: one open port on loopback.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = target.accept().await {
            drop(s);
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord_cfg = d.join("coordinator.toml");
    std::fs::write(
        &coord_cfg,
        format!(
            "version = 1\nlisten = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\n[telemetry]\n\
             otlp_enabled = true\notlp_endpoint = \"{otlp}\"\nservice_name = \"test-coordinator\"\n"
        ),
    )
    .unwrap();
    let addr_file = d.join("addr");
    let mut kids = Kill(Vec::new());
    kids.0.push(
        overlord(&[
            "coordinator",
            "--config",
            coord_cfg.to_str().unwrap(),
            "--addr-file",
            addr_file.to_str().unwrap(),
        ])
        .spawn()
        .expect("spawn coordinator"),
    );
    let addr = wait_for_addr_file(&mut kids.0[0], &addr_file, Duration::from_secs(60));
    let url = format!("http://{addr}");
    let minion_cfg = d.join("minion.toml");
    std::fs::write(
        &minion_cfg,
        format!(
            "version = 1\nid = \"m1\"\nprovider = \"lab\"\ncoordinator = \"{url}\"\n\n[telemetry]\n\
             otlp_enabled = true\notlp_endpoint = \"{otlp}\"\nservice_name = \"test-minion\"\n"
        ),
    )
    .unwrap();
    kids.0.push(
        overlord(&["minion", "--config", minion_cfg.to_str().unwrap()])
            .spawn()
            .expect("spawn minion"),
    );

    // A job through the cluster (the client waits until the job is done).
    let port_s = port.to_string();
    let st = tokio::task::spawn_blocking(move || {
        overlord(&[
            "scan",
            "127.0.0.1",
            "-p",
            &port_s,
            "-m",
            "portscan",
            "--coordinator",
            &url,
            "--format",
            "jsonl",
        ])
        .status()
    })
    .await
    .unwrap()
    .expect("run scan");
    assert!(st.success(), "scan failed: {st}");

    let seen = recv.0.clone();
    let (lease, task) = tokio::task::spawn_blocking(move || {
        wait_for(
            "a minion task span whose parent is a coordinator lease span",
            Duration::from_secs(30),
            || {
                let s = seen.lock().unwrap();
                s.spans
                    .iter()
                    .filter(|t| t.service == "test-minion" && t.name == "task")
                    .find_map(|t| {
                        s.spans
                            .iter()
                            .find(|l| {
                                l.service == "test-coordinator"
                                    && l.name == "lease"
                                    && l.span_id == t.parent
                            })
                            .map(|l| (l.clone(), t.clone()))
                    })
            },
        )
    })
    .await
    .unwrap();
    assert_eq!(task.trace_id, lease.trace_id, "one trace across the hop");
    assert_eq!(lease.trace_id.len(), 16);
    assert!(lease.trace_id.iter().any(|b| *b != 0));

    let seen = recv.0.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("coordinator metrics", Duration::from_secs(30), || {
            let s = seen.lock().unwrap();
            let has = |n: &str| s.metrics.contains(&("test-coordinator".into(), n.into()));
            (has("overlord.tasks.leased")
                && has("overlord.tasks.done")
                && has("overlord.results.accepted")
                && has("overlord.minions.alive"))
            .then_some(())
        })
    })
    .await
    .unwrap();

    // The minion's own metrics: every name arrives, and the counts describe the job just run
    // (one portscan task, finished ok, its result and finding sent).
    let seen = recv.0.clone();
    let missing = tokio::task::spawn_blocking(move || {
        let t0 = Instant::now();
        loop {
            let missing: Vec<&str> = {
                let s = seen.lock().unwrap();
                overlord_minion::telemetry::metrics::ALL
                    .iter()
                    .copied()
                    .filter(|n| !s.metrics.contains(&("test-minion".into(), n.to_string())))
                    .collect()
            };
            if missing.is_empty() || t0.elapsed() > Duration::from_secs(30) {
                return missing;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    assert!(
        missing.is_empty(),
        "minion metrics never exported: {missing:?}"
    );
    let sums = recv.0.lock().unwrap().sums.clone();
    let sum = |name: &str, labels: &str| {
        sums.get(&("test-minion".into(), name.into(), labels.into()))
            .copied()
    };
    assert!(
        sum("overlord.minion.tasks.started", "minion=m1,module=portscan").unwrap_or(0) >= 1,
        "tasks.started: {:?}",
        sums
    );
    assert!(
        sum(
            "overlord.minion.tasks.finished",
            "minion=m1,module=portscan,outcome=ok"
        )
        .unwrap_or(0)
            >= 1,
        "tasks.finished: {:?}",
        sums
    );
    assert!(sum("overlord.minion.results.sent", "minion=m1").unwrap_or(0) >= 1);
    assert!(sum("overlord.minion.findings.sent", "minion=m1").unwrap_or(0) >= 1);
    assert_eq!(
        sum("overlord.minion.session.reconnects", "minion=m1"),
        Some(0)
    );
    assert_eq!(sum("overlord.minion.tasks.revoked", "minion=m1"), Some(0));
    // The job is over: the in-flight gauge comes back to 0 (a finished task is never left behind).
    let seen = recv.0.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("in-flight gauge back to 0", Duration::from_secs(30), || {
            let s = seen.lock().unwrap();
            (s.sums.get(&(
                "test-minion".into(),
                "overlord.minion.leases.in_flight".into(),
                "minion=m1".into(),
            )) == Some(&0))
            .then_some(())
        })
    })
    .await
    .unwrap();

    // The coordinator dies and comes back on the same address: the minion's session reconnects,
    // and the counter says so.
    let _ = kids.0[0].kill();
    let _ = kids.0[0].wait();
    let addr_file2 = d.join("addr2");
    kids.0.push(
        overlord(&[
            "coordinator",
            "--config",
            coord_cfg.to_str().unwrap(),
            "--listen",
            addr.trim(),
            "--addr-file",
            addr_file2.to_str().unwrap(),
        ])
        .spawn()
        .expect("respawn coordinator"),
    );
    let seen = recv.0.clone();
    tokio::task::spawn_blocking(move || {
        wait_for(
            "session.reconnects = 1 after a coordinator restart",
            Duration::from_secs(60),
            || {
                let s = seen.lock().unwrap();
                (s.sums.get(&(
                    "test-minion".into(),
                    "overlord.minion.session.reconnects".into(),
                    "minion=m1".into(),
                )) == Some(&1))
                .then_some(())
            },
        )
    })
    .await
    .unwrap();
}
