//! `beacon`: C2 beacon detection over one Zeek log (the task's `input`: a path readable by this
//! minion), via `overlord-analytics`. CPU work runs on the blocking pool.
//!
//! Params (all optional): `threshold` (f64, default 0.5), `all` (bool: also report findings below
//! the threshold down to `min_score`, default false), `min_score` (f64, default 0.2),
//! `max_findings` (u64, default 1000).
//!
//! Findings: one `beacon` per flagged sequence (target = source IP, port = destination port for
//! conn logs, data = the analytics `Finding` as JSON), then one `beacon_summary` (lines, records,
//! bad lines with the first reasons, keys, scored sequences, seconds).
//!
//! With `follow: true` the input is a Zeek log *directory*, followed live for `duration_secs`;
//! findings are sent while the task runs (see [`follow`]).

use crate::module::{FindingOut, Live, Module, ModuleCtx, ModuleError, Output, TaskInput};
use futures::future::BoxFuture;
use overlord_analytics::{AnalyticsError, BeaconConfig, LogKind, score_logs};
use overlord_core::finding::Payload;
use overlord_core::finding::beacon::{BadLine, Beacon as BeaconFinding, BeaconSummary};
use serde_json::Value;

pub mod follow;

pub struct Beacon;

/// Whether the task is a live (`follow`) one.
fn follows(params: &Value) -> bool {
    params.get("follow").and_then(Value::as_bool) == Some(true)
}

/// Largest log a beacon task reads (checked before reading; see `crate::inputs`).
pub const MAX_INPUT_BYTES: u64 = 512 << 20;
/// A beacon task's work is bounded in time as well as by the input's size.
pub const TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

fn config(params: &Value) -> Result<(BeaconConfig, bool, usize), ModuleError> {
    let mut cfg = BeaconConfig::default();
    let num = |k: &str| -> Result<Option<f64>, ModuleError> {
        match params.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| ModuleError::Invalid(format!("param {k} must be a number"))),
        }
    };
    if let Some(t) = num("threshold")? {
        cfg.threshold = t as f32;
    }
    if let Some(m) = num("min_score")? {
        cfg.min_report_score = m as f32;
    }
    let all = params.get("all").and_then(Value::as_bool).unwrap_or(false);
    let max = num("max_findings")?.unwrap_or(1000.0).max(0.0) as usize;
    cfg.validate()
        .map_err(|e| ModuleError::Invalid(e.to_string()))?;
    Ok((cfg, all, max))
}

impl Module for Beacon {
    fn name(&self) -> &'static str {
        "beacon"
    }
    fn capability(&self) -> &'static str {
        "analytics"
    }
    fn run_live<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
        live: Live,
    ) -> BoxFuture<'a, Result<Output, ModuleError>> {
        if follows(&task.params) {
            Box::pin(follow::run(task, ctx, live))
        } else {
            self.run_counted(task, ctx)
        }
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            let name = task.input.clone().ok_or_else(|| {
                ModuleError::Invalid("beacon needs an input (a Zeek log path)".into())
            })?;
            let (cfg, all, max) = config(&task.params)?;
            let input = crate::inputs::open_input(ctx, &name, MAX_INPUT_BYTES)?;
            let path = input.name.clone();
            let p = input.path.clone();
            drop(input);
            // Bounded in time; a cancelled task is aborted here (the blocking scorer then ends on
            // its own, bounded by the checked input size).
            let scored = tokio::time::timeout(
                TIME_LIMIT,
                tokio::task::spawn_blocking(move || score_logs(&[p], &cfg)),
            )
            .await
            .map_err(|_| {
                ModuleError::Failed(format!(
                    "input {path:?}: scoring took longer than {}s",
                    TIME_LIMIT.as_secs()
                ))
            })?;
            // Errors name the input and the kind of failure, never a line of the file.
            let report = scored
                .map_err(|e| ModuleError::Failed(format!("beacon scoring panicked: {e}")))?
                .map_err(|e| match e {
                    AnalyticsError::Io { source, .. } => ModuleError::Invalid(format!(
                        "input {path:?}: cannot read ({})",
                        source.kind()
                    )),
                    AnalyticsError::UnknownLogType { .. } => ModuleError::Invalid(format!(
                        "input {path:?}: not a Zeek conn/dns/http log"
                    )),
                    AnalyticsError::Config(c) => ModuleError::Invalid(c),
                    _ => ModuleError::Failed(format!("input {path:?}: scoring failed")),
                })?;
            let mut out: Vec<FindingOut> = report
                .findings
                .iter()
                .filter(|f| all || f.is_beacon)
                .take(max)
                .map(|f| {
                    let port = (f.kind == LogKind::Conn && f.dst_port != 0).then_some(f.dst_port);
                    let src = f.src.parse().ok();
                    let b = BeaconFinding::from(f.clone());
                    FindingOut::new(src, port, Payload::Beacon(Box::new(b)))
                })
                .collect();
            out.push(FindingOut::new(
                None,
                None,
                BeaconSummary {
                    input: path,
                    lines: report.lines,
                    records: report.records,
                    bad_lines: report.bad_lines,
                    bad_examples: report
                        .bad_examples
                        .iter()
                        .map(|b| BadLine {
                            line: b.line,
                            reason: b.reason.clone(),
                        })
                        .collect(),
                    keys: report.keys,
                    scored: report.scored,
                    beacons: report.beacons().count() as u64,
                    threshold: report.threshold,
                    seconds: report.seconds,
                },
            ));
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use overlord_core::scope::Scope;
    use serde_json::json;

    fn task(input: Option<String>, params: Value) -> TaskInput {
        TaskInput {
            job_id: Default::default(),
            task_id: Default::default(),
            parent_task_id: None,
            module: "beacon".into(),
            target: None,
            target_count: 1,
            ports: vec![],
            params,
            blob: None,
            input,
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
    async fn finds_the_generated_beacons_and_reports_a_summary() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = overlord_analytics::GenConfig {
            hosts: 12,
            beacons: 9,
            browsing: 0.05,
            ..Default::default()
        };
        let s = overlord_analytics::generate(3, &cfg, dir.path()).unwrap();
        let log = dir.path().join("conn.log").display().to_string();
        let _ = log;
        let mut c = ctx();
        c.input_dir = Some(std::fs::canonicalize(dir.path()).unwrap());
        let out = Beacon
            .run(&task(Some("conn.log".into()), json!({})), &c)
            .await
            .unwrap();
        let Payload::BeaconSummary(summary) = &out.last().unwrap().payload else {
            panic!("summary last: {out:?}")
        };
        assert_eq!(summary.records, s.conn_lines);
        assert_eq!(summary.bad_lines, 0);
        let beacons: Vec<&BeaconFinding> = out
            .iter()
            .filter_map(|f| match &f.payload {
                Payload::Beacon(b) if f.target.is_some() => Some(&**b),
                _ => None,
            })
            .collect();
        assert!(beacons.len() >= 6, "{out:?}");
        assert_eq!(beacons.len(), out.len() - 1, "every beacon has a target");
        assert!(beacons.iter().all(|b| b.is_beacon));
    }

    #[tokio::test]
    async fn bad_inputs_are_permanent_errors() {
        let e = Beacon
            .run(&task(None, json!({})), &ctx())
            .await
            .unwrap_err();
        assert!(e.permanent(), "{e}");
        let e = Beacon
            .run(
                &task(Some("/nonexistent/conn.log".into()), json!({})),
                &ctx(),
            )
            .await
            .unwrap_err();
        assert!(e.permanent() && e.to_string().contains("input_dir"), "{e}");
        let e = Beacon
            .run(
                &task(Some("x".into()), json!({"threshold": "high"})),
                &ctx(),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ModuleError::Invalid(_)), "{e}");
    }
}
