//! Trace-context propagation across the coordinator → minion hop (W3C `traceparent`).
//!
//! Every lease carries `00-<trace id>-<span id>-01`: the trace id is derived from the job (all of a
//! job's tasks share one trace), the span id from the lease's fencing token. The minion runs the
//! task inside a span that records it, so coordinator and minion logs of one task correlate.
//! OTLP export itself is not wired yet (see docs/DESIGN.md).

use overlord_core::{JobId, Token};

pub fn traceparent(job: JobId, token: Token) -> String {
    let trace = (0x6f76_6c64_u128 << 96) | job as u128; // "ovld" prefix: never all-zero
    format!("00-{trace:032x}-{:016x}-01", token.max(1))
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
}
