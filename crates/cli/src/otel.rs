//! OpenTelemetry OTLP export (gRPC) of traces and metrics for the `coordinator` and `minion`
//! processes; off by default, switched on by `[telemetry] otlp_enabled = true` in their config.
//!
//! Spans: every `tracing` span of the process goes through a `tracing-opentelemetry` layer to a
//! batch span processor. Metrics: the coordinator's counters (`overlord.tasks.*`,
//! `overlord.results.*`, `overlord.leases.revoked`, gauge `overlord.minions.alive`) through a
//! periodic reader. The W3C trace-context propagator is installed globally so the minion's task
//! span becomes a child of the coordinator's lease span. Standard `OTEL_BSP_*` and
//! `OTEL_METRIC_EXPORT_INTERVAL` environment variables tune the export cadence.

use anyhow::{Context, Result};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Default OTLP gRPC endpoint when the config names none.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4317";

/// What a process asks for (from its config's `[telemetry]` section).
#[derive(Clone, Debug, Default)]
pub struct OtelSettings {
    pub enabled: bool,
    pub endpoint: Option<String>,
    pub service_name: String,
}

/// Keeps the providers alive; [`OtelGuard::shutdown`] flushes what is buffered.
pub struct OtelGuard {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl OtelGuard {
    pub fn shutdown(self) {
        let _ = self.tracer.force_flush();
        let _ = self.meter.force_flush();
        let _ = self.tracer.shutdown();
        let _ = self.meter.shutdown();
    }
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("OVERLORD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
}

/// Installs the process's tracing subscriber: logs to stderr (`OVERLORD_LOG`, default `warn`)
/// and, when `otel.enabled`, OTLP export of spans (level `info` and above) and metrics. Must run
/// inside a tokio runtime (the gRPC channels live on it).
pub fn init(otel: Option<&OtelSettings>) -> Result<Option<OtelGuard>> {
    // Colour codes only on a terminal: log files and pipes get plain text.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(env_filter());
    let Some(o) = otel.filter(|o| o.enabled) else {
        let _ = tracing_subscriber::registry().with(fmt).try_init();
        return Ok(None);
    };
    let endpoint = o
        .endpoint
        .clone()
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into());
    let resource = Resource::builder()
        .with_service_name(o.service_name.clone())
        .build();
    let spans = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .with_context(|| {
            format!("telemetry: cannot build the OTLP span exporter for {endpoint}")
        })?;
    let tracer = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource.clone())
        .build();
    let metrics = MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .with_context(|| {
            format!("telemetry: cannot build the OTLP metric exporter for {endpoint}")
        })?;
    let meter = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(metrics).build())
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_meter_provider(meter.clone());
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("overlord"))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(layer)
        .try_init();
    overlord_coordinator::telemetry::set_enabled(true);
    overlord_minion::telemetry::set_enabled(true);
    tracing::info!(endpoint, service = %o.service_name, "OTLP export of traces and metrics on");
    Ok(Some(OtelGuard { tracer, meter }))
}
