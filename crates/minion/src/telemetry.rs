//! Trace context on the minion side: a task's span becomes a child of the coordinator's lease
//! span (W3C `traceparent` carried by the lease), through the global text-map propagator.
//! Off by default; the process switches it on once its OpenTelemetry pipeline is installed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Makes `span` a child of the remote context in `traceparent` (no-op when export is off or the
/// header is empty or malformed: the propagator then yields an empty context).
pub fn adopt_parent(span: &tracing::Span, traceparent: &str) {
    if !enabled() || traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(cx);
}
