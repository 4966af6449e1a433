//! Trace-context propagation across the coordinator → minion hop (W3C `traceparent`).

/// The W3C traceparent of the current span, or empty when tracing export is off.
pub fn current_traceparent() -> String {
    String::new()
}
