//! Trace-context propagation across the coordinator → minion hop (W3C `traceparent`) and the
//! coordinator's OpenTelemetry metrics.
//!
//! Every lease carries `00-<trace id>-<span id>-01`. The trace id is derived from the job (all of
//! a job's tasks share one trace). With OTLP export off (the default) the span id is the lease's
//! fencing token and no span is created (nothing on the hot path). With export on
//! ([`set_enabled`], called by the process once its OpenTelemetry pipeline is installed), each
//! lease opens a `lease` span (a child of the job's trace) and the lease carries *that* span's
//! context, so the minion's `task` span becomes its child in the exported trace.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use overlord_core::{JobId, TaskId, Token};
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Switches lease spans and metrics on. Call only after the global tracer and meter providers
/// are installed (instruments bind to the provider present when they are first created).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

fn job_trace_id(job: JobId) -> u128 {
    (0x6f76_6c64_u128 << 96) | job as u128 // "ovld" prefix: never all-zero
}

/// The deterministic traceparent used when export is off.
pub fn traceparent(job: JobId, token: Token) -> String {
    format!("00-{:032x}-{:016x}-01", job_trace_id(job), token.max(1))
}

/// The traceparent for one lease; opens (and closes) a `lease` span when export is on.
pub fn lease_traceparent(job: JobId, task: TaskId, token: Token, module: &str) -> String {
    if !enabled() {
        return traceparent(job, token);
    }
    let span = tracing::info_span!("lease", job_id = job, task_id = task, token, module);
    let job_root = SpanContext::new(
        TraceId::from(job_trace_id(job)),
        SpanId::from(job.max(1)),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(job_root));
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if !sc.is_valid() {
        return traceparent(job, token);
    }
    format!("00-{:032x}-{:016x}-01", sc.trace_id(), sc.span_id())
}

struct Metrics {
    tasks_leased: Counter<u64>,
    tasks_done: Counter<u64>,
    tasks_failed: Counter<u64>,
    results_accepted: Counter<u64>,
    results_rejected: Counter<u64>,
    leases_revoked: Counter<u64>,
    minions_alive: Gauge<u64>,
}

fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(|| {
        let m = opentelemetry::global::meter("overlord-coordinator");
        Metrics {
            tasks_leased: m.u64_counter("overlord.tasks.leased").build(),
            tasks_done: m.u64_counter("overlord.tasks.done").build(),
            tasks_failed: m.u64_counter("overlord.tasks.failed").build(),
            results_accepted: m.u64_counter("overlord.results.accepted").build(),
            results_rejected: m.u64_counter("overlord.results.rejected").build(),
            leases_revoked: m.u64_counter("overlord.leases.revoked").build(),
            minions_alive: m.u64_gauge("overlord.minions.alive").build(),
        }
    })
}

/// What the engine reports. Labels are low-cardinality: module names (a fixed catalog) and
/// fixed reason words.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    TaskLeased { module: &'a str },
    TaskDone { module: &'a str },
    TaskFailed { module: &'a str },
    ResultAccepted,
    ResultRejected { reason: &'static str },
    LeaseRevoked,
}

pub fn record(ev: Event<'_>, n: u64) {
    if !enabled() || n == 0 {
        return;
    }
    let m = metrics();
    match ev {
        Event::TaskLeased { module } => m
            .tasks_leased
            .add(n, &[KeyValue::new("module", module.to_string())]),
        Event::TaskDone { module } => m
            .tasks_done
            .add(n, &[KeyValue::new("module", module.to_string())]),
        Event::TaskFailed { module } => m
            .tasks_failed
            .add(n, &[KeyValue::new("module", module.to_string())]),
        Event::ResultAccepted => m.results_accepted.add(n, &[]),
        Event::ResultRejected { reason } => m
            .results_rejected
            .add(n, &[KeyValue::new("reason", reason)]),
        Event::LeaseRevoked => m.leases_revoked.add(n, &[]),
    }
}

pub fn minions_alive(n: u64) {
    if enabled() {
        metrics().minions_alive.record(n, &[]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn w3c_shape() {
        let t = super::traceparent(7, 9);
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!(parts.len(), 4);
        assert_eq!(
            (parts[0], parts[1].len(), parts[2].len(), parts[3]),
            ("00", 32, 16, "01")
        );
        assert!(parts[1].ends_with("7") && parts[2].ends_with("9"));
    }

    #[test]
    fn off_by_default_no_span() {
        assert!(!super::enabled());
        assert_eq!(
            super::lease_traceparent(7, 1, 9, "banner"),
            super::traceparent(7, 9)
        );
    }
}
