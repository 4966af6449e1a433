//! Conversions between generated (wire) types and domain types.

use crate::v1;
use overlord_core::job::{FindingRecord, RawSpec};

pub fn raw_spec(s: v1::JobSpec) -> RawSpec {
    RawSpec {
        name: s.name,
        targets: s.targets,
        ports: s.ports,
        modules: s.modules,
        rate_limit: s.rate_limit,
        inputs: s.inputs,
        params_json: s.params_json,
        rules: s.rules,
        disable_rules: s.disable_rules,
        hitlist: None,
    }
}

pub fn wire_spec(s: &RawSpec) -> v1::JobSpec {
    v1::JobSpec {
        name: s.name.clone(),
        targets: s.targets.clone(),
        ports: s.ports.clone(),
        modules: s.modules.clone(),
        rate_limit: s.rate_limit,
        inputs: s.inputs.clone(),
        params_json: s.params_json.clone(),
        rules: s.rules.clone(),
        disable_rules: s.disable_rules.clone(),
        hitlist: s.hitlist.as_ref().map(|h| h.id.clone()).unwrap_or_default(),
    }
}

pub fn finding(f: &FindingRecord) -> v1::Finding {
    v1::Finding {
        cursor: f.cursor,
        job_id: f.job_id,
        task_id: f.task_id,
        parent_task_id: f.parent_task_id.unwrap_or(0),
        module: f.module.clone(),
        kind: f.kind.clone(),
        target: f.target.map(|t| t.to_string()).unwrap_or_default(),
        port: f.port.map(u32::from).unwrap_or(0),
        data_json: f.data.to_string(),
        blob_sha256: f.blob_sha256.clone().unwrap_or_default(),
        minion_id: f.minion_id.clone(),
        provider: f.provider.clone(),
        started_at_ms: f.started_at_ms,
        finished_at_ms: f.finished_at_ms,
        stored_at_ms: f.stored_at_ms,
        schema_version: overlord_core::finding::SCHEMA_VERSION,
    }
}

/// Wire finding → domain record (used by clients reading results).
pub fn finding_record(f: &v1::Finding) -> FindingRecord {
    FindingRecord {
        cursor: f.cursor,
        job_id: f.job_id,
        task_id: f.task_id,
        parent_task_id: (f.parent_task_id != 0).then_some(f.parent_task_id),
        module: f.module.clone(),
        kind: f.kind.clone(),
        target: f.target.parse().ok(),
        port: (f.port != 0).then_some(f.port as u16),
        data: serde_json::from_str(&f.data_json).unwrap_or(serde_json::Value::Null),
        blob_sha256: (!f.blob_sha256.is_empty()).then(|| f.blob_sha256.clone()),
        minion_id: f.minion_id.clone(),
        provider: f.provider.clone(),
        started_at_ms: f.started_at_ms,
        finished_at_ms: f.finished_at_ms,
        stored_at_ms: f.stored_at_ms,
    }
}

/// The wire class of a task error.
pub fn error_class(c: overlord_core::task_error::ErrorClass) -> v1::TaskErrorClass {
    use overlord_core::task_error::ErrorClass as C;
    use v1::TaskErrorClass as W;
    match c {
        C::Invalid => W::Invalid,
        C::Blocked => W::Blocked,
        C::Timeout => W::Timeout,
        C::Network => W::Network,
        C::Module => W::Module,
        C::MinionLost => W::MinionLost,
        C::LeaseExpired => W::LeaseExpired,
        C::Rejected => W::Rejected,
        C::Coordinator => W::Coordinator,
    }
}

/// A job's failed attempts per class, in class order.
pub fn error_counts(
    m: &std::collections::BTreeMap<overlord_core::task_error::ErrorClass, u64>,
) -> Vec<v1::ErrorClassCount> {
    m.iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| v1::ErrorClassCount {
            class: error_class(*c) as i32,
            attempts: *n,
        })
        .collect()
}

/// A task's row in `ListTaskErrors`, `None` when it has no error.
pub fn task_error(t: &overlord_core::job::TaskRecord) -> Option<v1::TaskError> {
    use overlord_core::task_error::{self as te, ErrorState};
    let state = match te::error_state(t)? {
        ErrorState::Failed => v1::TaskErrorState::Failed,
        ErrorState::Retrying => v1::TaskErrorState::Retrying,
        ErrorState::Cancelled => v1::TaskErrorState::Cancelled,
    };
    let error = te::error_text(t);
    Some(v1::TaskError {
        task_id: t.spec.task_id,
        parent_task_id: t.spec.parent.unwrap_or(0),
        module: t.spec.module.clone(),
        target: t.spec.target.map(|a| a.to_string()).unwrap_or_default(),
        target_count: t.spec.target_count,
        ports: te::ports_text(&t.spec.ports),
        input: t.spec.input.clone().unwrap_or_default(),
        state: state as i32,
        attempts: t.attempts,
        minion: t.last_minion.clone().unwrap_or_default(),
        provider: t.last_provider.clone().unwrap_or_default(),
        class: error_class(te::classify(&error)) as i32,
        error,
    })
}
