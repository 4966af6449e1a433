//! Why tasks fail, in classes a person can act on (issue 17 point 8): `overlord jobs get` counts
//! failed attempts per class, `overlord jobs errors` lists the tasks with their last error.
//!
//! The wire carries a task's error as text (`TaskResult.error`), so the class is read from the
//! text. Every prefix matched here is produced by Overlord itself: the minion's `ModuleError`
//! (`INVALID_PREFIX`, `BLOCKED_PREFIX`), the coordinator's requeue reasons (`LEASE_EXPIRED`,
//! `MALFORMED_PREFIX`, `trust::REJECTED_PREFIX`, the planner's `RequeueReason`s, pinned by a test
//! in the coordinator). Only a module's own transient failure text is read loosely, to tell
//! timeouts and network errors from the rest.

use serde::{Deserialize, Serialize};

/// Display prefix of `ModuleError::Invalid` (bad task input, never retried).
pub const INVALID_PREFIX: &str = "invalid task: ";
/// Display prefix of `ModuleError::Blocked` (refused by scope, never retried).
pub const BLOCKED_PREFIX: &str = "refused by scope: ";
/// The coordinator's reason when a lease ran past its deadline.
pub const LEASE_EXPIRED: &str = "lease deadline passed";
/// The coordinator's reason when a result could not be read.
pub const MALFORMED_PREFIX: &str = "malformed result: ";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The task's input is wrong (a bad parameter, an unusable target): fix the job.
    Invalid,
    /// A minion's scope refused the target.
    Blocked,
    /// The module ran out of time on the target.
    Timeout,
    /// The network said no (refused, unreachable, reset).
    Network,
    /// Any other failure a module reported.
    Module,
    /// The lease's minion went away (dead, restarted, never got it); another one retries.
    MinionLost,
    /// The lease ran past its deadline without a result.
    LeaseExpired,
    /// The result was refused (malformed, or findings outside the task).
    Rejected,
    /// A task the coordinator runs itself failed (e.g. no leak database).
    Coordinator,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Invalid,
        ErrorClass::Blocked,
        ErrorClass::Timeout,
        ErrorClass::Network,
        ErrorClass::Module,
        ErrorClass::MinionLost,
        ErrorClass::LeaseExpired,
        ErrorClass::Rejected,
        ErrorClass::Coordinator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Invalid => "invalid",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Network => "network",
            ErrorClass::Module => "module",
            ErrorClass::MinionLost => "minion_lost",
            ErrorClass::LeaseExpired => "lease_expired",
            ErrorClass::Rejected => "rejected",
            ErrorClass::Coordinator => "coordinator",
        }
    }
}

/// The class of a task error text (see the module doc for where each text comes from).
pub fn classify(error: &str) -> ErrorClass {
    if error.starts_with(INVALID_PREFIX) {
        return ErrorClass::Invalid;
    }
    if error.starts_with(BLOCKED_PREFIX) {
        return ErrorClass::Blocked;
    }
    if error.starts_with(LEASE_EXPIRED) {
        return ErrorClass::LeaseExpired;
    }
    if error.starts_with(MALFORMED_PREFIX) || error.starts_with(crate::trust::REJECTED_PREFIX) {
        return ErrorClass::Rejected;
    }
    if error.starts_with("minion ") || error.starts_with("lease ") {
        return ErrorClass::MinionLost;
    }
    if error.starts_with(COORDINATOR_PREFIX) {
        return ErrorClass::Coordinator;
    }
    let l = error.to_ascii_lowercase();
    if ["timed out", "timeout", "deadline", "budget"]
        .iter()
        .any(|w| l.contains(w))
    {
        return ErrorClass::Timeout;
    }
    if [
        "refused",
        "unreachable",
        "reset by peer",
        "broken pipe",
        "no route",
        "network",
        "closed the connection",
    ]
    .iter()
    .any(|w| l.contains(w))
    {
        return ErrorClass::Network;
    }
    ErrorClass::Module
}

/// Prefix of the errors of tasks the coordinator runs itself.
pub const COORDINATOR_PREFIX: &str = "coordinator: ";

/// One line of a task's last error for a table: the text on one line, at most `max` chars.
pub fn one_line(error: &str, max: usize) -> String {
    let s: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() <= max {
        s
    } else {
        s.chars().take(max.saturating_sub(1)).collect::<String>() + "…"
    }
}

/// Where a task that hit an error stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorState {
    Failed,
    Retrying,
    Cancelled,
}

/// A task's place in `jobs errors`: failed tasks always (a leak lookup may fail without a
/// recorded attempt), others only after an error; `None` for tasks without one.
pub fn error_state(t: &crate::job::TaskRecord) -> Option<ErrorState> {
    use crate::job::TaskState;
    match (&t.state, &t.last_error) {
        (TaskState::Failed { .. }, _) => Some(ErrorState::Failed),
        (TaskState::Done, _) | (_, None) => None,
        (TaskState::Cancelled, Some(_)) => Some(ErrorState::Cancelled),
        (TaskState::Pending | TaskState::Leased { .. }, Some(_)) => Some(ErrorState::Retrying),
    }
}

/// The error text of a task in `jobs errors`: the final reason of a failed task, else the last
/// attempt's error.
pub fn error_text(t: &crate::job::TaskRecord) -> String {
    match (&t.state, &t.last_error) {
        (crate::job::TaskState::Failed { reason }, _) => reason.clone(),
        (_, Some(e)) => e.clone(),
        (_, None) => String::new(),
    }
}

/// Ports as ranges, e.g. `22,80,8000-8100` (input order kept, runs of +1 folded).
pub fn ports_text(ports: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len()
            && ports[j + 1] == ports[j].wrapping_add(1)
            && ports[j] != u16::MAX
        {
            j += 1;
        }
        out.push(if i == j {
            ports[i].to_string()
        } else {
            format!("{}-{}", ports[i], ports[j])
        });
        i = j + 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_fold_into_ranges() {
        assert_eq!(ports_text(&[]), "");
        assert_eq!(ports_text(&[22]), "22");
        assert_eq!(ports_text(&[22, 80, 81, 82, 443]), "22,80-82,443");
        assert_eq!(ports_text(&[65534, 65535]), "65534-65535");
    }

    #[test]
    fn error_states() {
        use crate::job::{TaskRecord, TaskState};
        let spec: crate::job::TaskSpec = serde_json::from_value(serde_json::json!({
            "job_id": 1, "task_id": 2, "parent": null, "module": "portscan", "target": "127.0.0.1",
            "ports": [22], "input": null, "params": null, "blob_sha256": null
        }))
        .unwrap();
        let mut t = TaskRecord::new(spec);
        assert_eq!(error_state(&t), None);
        t.last_error = Some("connect timed out".into());
        assert_eq!(error_state(&t), Some(ErrorState::Retrying));
        assert_eq!(error_text(&t), "connect timed out");
        t.state = TaskState::Cancelled;
        assert_eq!(error_state(&t), Some(ErrorState::Cancelled));
        t.state = TaskState::Failed {
            reason: "lease deadline passed (after 3 attempts)".into(),
        };
        assert_eq!(error_state(&t), Some(ErrorState::Failed));
        assert_eq!(error_text(&t), "lease deadline passed (after 3 attempts)");
        t.state = TaskState::Done;
        assert_eq!(error_state(&t), None);
        t.last_error = None;
        t.state = TaskState::Failed { reason: "x".into() };
        assert_eq!(error_state(&t), Some(ErrorState::Failed));
    }

    #[test]
    fn our_own_prefixes_decide() {
        assert_eq!(classify("invalid task: no ports"), ErrorClass::Invalid);
        assert_eq!(
            classify("refused by scope: 10.0.0.1 not allowed"),
            ErrorClass::Blocked
        );
        assert_eq!(classify("lease deadline passed"), ErrorClass::LeaseExpired);
        assert_eq!(
            classify("lease deadline passed (after 3 attempts)"),
            ErrorClass::LeaseExpired
        );
        assert_eq!(classify("malformed result: bad json"), ErrorClass::Rejected);
        assert_eq!(
            classify(&format!(
                "{}port 9 not in task",
                crate::trust::REJECTED_PREFIX
            )),
            ErrorClass::Rejected
        );
        assert_eq!(
            classify("minion dead (missed heartbeats)"),
            ErrorClass::MinionLost
        );
        assert_eq!(
            classify("coordinator: this coordinator has no leak database"),
            ErrorClass::Coordinator
        );
        // A prefix wins over words further on.
        assert_eq!(
            classify("invalid task: timeout must be > 0"),
            ErrorClass::Invalid
        );
    }

    #[test]
    fn module_text_is_read_for_timeouts_and_network_errors() {
        assert_eq!(classify("connect timed out"), ErrorClass::Timeout);
        assert_eq!(classify("TLS handshake: Timeout"), ErrorClass::Timeout);
        assert_eq!(
            classify("Connection refused (os error 111)"),
            ErrorClass::Network
        );
        assert_eq!(
            classify("Network is unreachable (os error 101)"),
            ErrorClass::Network
        );
        assert_eq!(
            classify(
                "vnc 127.0.0.1:5900: server closed the connection during handshake after 0 bytes"
            ),
            ErrorClass::Network
        );
        assert_eq!(classify("x11: bad auth reply"), ErrorClass::Module);
        assert_eq!(classify(""), ErrorClass::Module);
    }

    #[test]
    fn names_are_distinct_and_match_serde() {
        let mut seen = std::collections::BTreeSet::new();
        for c in ErrorClass::ALL {
            assert!(seen.insert(c.as_str()));
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::String(c.as_str().into())
            );
        }
    }

    #[test]
    fn one_line_flattens_and_cuts() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdefghij", 5), "abcd…");
        assert_eq!(one_line("ab", 2), "ab");
    }
}
