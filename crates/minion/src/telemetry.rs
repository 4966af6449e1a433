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

/// The minion's OpenTelemetry metrics (through the global meter provider; nothing is recorded
/// while export is off). Labels are low-cardinality: the minion id (a fixed set of nodes), module
/// names (a fixed catalog) and fixed outcome words — never a target address.
///
/// | name | kind | labels |
/// |---|---|---|
/// | `overlord.minion.tasks.started` | counter | minion, module |
/// | `overlord.minion.tasks.finished` | counter | minion, module, outcome (`ok`, `failed`, `invalid`, `blocked`) |
/// | `overlord.minion.tasks.revoked` | counter | minion (running tasks aborted by a revocation) |
/// | `overlord.minion.task.duration` | histogram, seconds | minion, module, outcome |
/// | `overlord.minion.results.sent` | counter | minion (result items put on a session, re-sends included) |
/// | `overlord.minion.findings.sent` | counter | minion |
/// | `overlord.minion.blob.bytes.sent` | counter, bytes | minion |
/// | `overlord.minion.session.reconnects` | counter | minion (sessions opened after the first) |
/// | `overlord.minion.leases.in_flight` | gauge | minion (tasks leased and running or queued) |
pub mod metrics {
    use opentelemetry::KeyValue;
    use opentelemetry::metrics::{Counter, Gauge, Histogram};
    use std::sync::OnceLock;

    pub const TASKS_STARTED: &str = "overlord.minion.tasks.started";
    pub const TASKS_FINISHED: &str = "overlord.minion.tasks.finished";
    pub const TASKS_REVOKED: &str = "overlord.minion.tasks.revoked";
    pub const TASK_DURATION: &str = "overlord.minion.task.duration";
    pub const RESULTS_SENT: &str = "overlord.minion.results.sent";
    pub const FINDINGS_SENT: &str = "overlord.minion.findings.sent";
    pub const BLOB_BYTES_SENT: &str = "overlord.minion.blob.bytes.sent";
    pub const SESSION_RECONNECTS: &str = "overlord.minion.session.reconnects";
    pub const LEASES_IN_FLIGHT: &str = "overlord.minion.leases.in_flight";

    /// Every metric name above (tests check they all arrive).
    pub const ALL: [&str; 9] = [
        TASKS_STARTED,
        TASKS_FINISHED,
        TASKS_REVOKED,
        TASK_DURATION,
        RESULTS_SENT,
        FINDINGS_SENT,
        BLOB_BYTES_SENT,
        SESSION_RECONNECTS,
        LEASES_IN_FLIGHT,
    ];

    struct Instruments {
        started: Counter<u64>,
        finished: Counter<u64>,
        revoked: Counter<u64>,
        duration: Histogram<f64>,
        results: Counter<u64>,
        findings: Counter<u64>,
        blob_bytes: Counter<u64>,
        reconnects: Counter<u64>,
        in_flight: Gauge<u64>,
    }

    fn inst() -> &'static Instruments {
        static I: OnceLock<Instruments> = OnceLock::new();
        I.get_or_init(|| {
            let m = opentelemetry::global::meter("overlord-minion");
            Instruments {
                started: m.u64_counter(TASKS_STARTED).build(),
                finished: m.u64_counter(TASKS_FINISHED).build(),
                revoked: m.u64_counter(TASKS_REVOKED).build(),
                duration: m
                    .f64_histogram(TASK_DURATION)
                    .with_unit("s")
                    .with_boundaries(vec![
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ])
                    .build(),
                results: m.u64_counter(RESULTS_SENT).build(),
                findings: m.u64_counter(FINDINGS_SENT).build(),
                blob_bytes: m.u64_counter(BLOB_BYTES_SENT).with_unit("By").build(),
                reconnects: m.u64_counter(SESSION_RECONNECTS).build(),
                in_flight: m.u64_gauge(LEASES_IN_FLIGHT).build(),
            }
        })
    }

    fn on() -> bool {
        super::enabled()
    }

    fn who(minion: &str) -> KeyValue {
        KeyValue::new("minion", minion.to_string())
    }

    /// Puts the counters that may stay at zero for a long time (reconnects, revocations) and the
    /// in-flight gauge on the wire from the first session on, so dashboards see a 0, not a gap.
    pub fn init(minion: &str) {
        if on() {
            inst().reconnects.add(0, &[who(minion)]);
            inst().revoked.add(0, &[who(minion)]);
            inst().in_flight.record(0, &[who(minion)]);
        }
    }

    pub fn task_started(minion: &str, module: &str) {
        if on() {
            inst().started.add(
                1,
                &[who(minion), KeyValue::new("module", module.to_string())],
            );
        }
    }

    pub fn task_finished(minion: &str, module: &str, outcome: &'static str, seconds: f64) {
        if on() {
            let labels = [
                who(minion),
                KeyValue::new("module", module.to_string()),
                KeyValue::new("outcome", outcome),
            ];
            inst().finished.add(1, &labels);
            inst().duration.record(seconds, &labels);
        }
    }

    pub fn tasks_revoked(minion: &str, n: u64) {
        if on() && n > 0 {
            inst().revoked.add(n, &[who(minion)]);
        }
    }

    /// One batch put on a session: `results` items carrying `findings` findings and `blob_bytes`.
    pub fn batch_sent(minion: &str, results: u64, findings: u64, blob_bytes: u64) {
        if on() {
            let l = [who(minion)];
            inst().results.add(results, &l);
            inst().findings.add(findings, &l);
            inst().blob_bytes.add(blob_bytes, &l);
        }
    }

    pub fn reconnected(minion: &str) {
        if on() {
            inst().reconnects.add(1, &[who(minion)]);
        }
    }

    pub fn leases_in_flight(minion: &str, n: usize) {
        if on() {
            inst().in_flight.record(n as u64, &[who(minion)]);
        }
    }
}
