//! `beacon` with `follow: true`: live mode on a minion. The task's input names a Zeek log
//! directory below the minion's input directory (`crate::inputs::open_dir`); the task follows it
//! (`overlord_analytics::follow::Follower`: rotation, gzip back-fill, TSV and JSON, a sliding
//! 24 h window per key in bounded memory) and sends a `beacon` finding as a partial result
//! (`crate::module::Live`) whenever a key crosses the threshold, and again only when its class
//! changes. Between findings it sends keep-alives, which renew its lease.
//!
//! It ends after `duration_secs` (default 3600, at most 7 days) with one `beacon_summary`, or
//! earlier when the job is cancelled (the runtime aborts it on the revocation). If the minion
//! dies the lease runs out (4 keep-alive periods) and the task goes to another minion, which
//! reads the directory again from the start: keys that are beacons then are reported again.
//!
//! Params: `duration_secs`, `poll_secs` (default 5), `rescore_secs` (default 60), and the
//! `beacon` params `threshold` and `max_findings` (per emission).

use super::config;
use crate::module::{FindingOut, Live, ModuleCtx, ModuleError, Output, TaskInput};
use overlord_analytics::LogKind;
use overlord_analytics::follow::Follower;
use overlord_core::finding::Payload;
use overlord_core::finding::beacon::{BadLine, Beacon as BeaconFinding, BeaconSummary};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Longest a live task runs.
pub const MAX_DURATION_SECS: f64 = 7.0 * 86_400.0;

struct Timing {
    duration: Duration,
    poll: Duration,
    rescore: Duration,
}

fn timing(params: &Value) -> Result<Timing, ModuleError> {
    let secs = |k: &str, default: f64, min: f64, max: f64| -> Result<Duration, ModuleError> {
        let v = match params.get(k) {
            None | Some(Value::Null) => default,
            Some(v) => v
                .as_f64()
                .ok_or_else(|| ModuleError::Invalid(format!("param {k} must be a number")))?,
        };
        if !(min..=max).contains(&v) {
            return Err(ModuleError::Invalid(format!(
                "param {k} must be within [{min}, {max}] seconds"
            )));
        }
        Ok(Duration::from_secs_f64(v))
    };
    Ok(Timing {
        duration: secs("duration_secs", 3600.0, 1.0, MAX_DURATION_SECS)?,
        poll: secs("poll_secs", 5.0, 0.05, 3600.0)?,
        rescore: secs("rescore_secs", 60.0, 0.05, 86_400.0)?,
    })
}

fn failed(path: &str, e: impl std::fmt::Display) -> ModuleError {
    ModuleError::Failed(format!("input {path:?}: {e}"))
}

pub(super) async fn run(
    task: &TaskInput,
    ctx: &ModuleCtx,
    live: Live,
) -> Result<Output, ModuleError> {
    let name = task.input.clone().ok_or_else(|| {
        ModuleError::Invalid("beacon follow needs an input (a Zeek log directory)".into())
    })?;
    let (cfg, _all, max) = config(&task.params)?;
    let t = timing(&task.params)?;
    let dir = crate::inputs::open_dir(ctx, &name)?;
    let shown = dir.name.clone();
    let threshold = cfg.threshold;
    let path = dir.path.clone();
    let mut f = tokio::task::spawn_blocking(move || Follower::new(&path, &cfg))
        .await
        .map_err(|e| failed(&shown, format!("start panicked: {e}")))?
        .map_err(|e| ModuleError::Invalid(format!("input {shown:?}: {e}")))?;
    let started = Instant::now();
    let end = started + t.duration;
    let mut last_score: Option<Instant> = None;
    let mut dirty = false;
    let mut emitted = 0u64;
    loop {
        let rescore_due = last_score.is_none_or(|at| at.elapsed() >= t.rescore);
        let (f2, res) = tokio::task::spawn_blocking(move || {
            let res = f.poll().and_then(|n| {
                if (dirty || n > 0) && rescore_due {
                    f.score().map(|out| (n, Some(out)))
                } else {
                    Ok((n, None))
                }
            });
            (f, res)
        })
        .await
        .map_err(|e| failed(&shown, format!("follower panicked: {e}")))?;
        f = f2;
        let (n, out) = res.map_err(|e| failed(&shown, e))?;
        dirty |= n > 0;
        if let Some(out) = out {
            last_score = Some(Instant::now());
            dirty = false;
            let findings = out
                .iter()
                .take(max)
                .map(|x| {
                    let port = (x.kind == LogKind::Conn && x.dst_port != 0).then_some(x.dst_port);
                    let src = x.src.parse().ok();
                    let b = BeaconFinding::from(x.clone());
                    FindingOut::new(src, port, Payload::Beacon(Box::new(b)))
                })
                .collect::<Vec<_>>();
            if !findings.is_empty() {
                emitted += findings.len() as u64;
                tracing::debug!(dir = %shown, findings = findings.len(), "class changes sent");
                live.emit(findings).await;
            }
        }
        live.keep_alive().await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep(t.poll.min(live.every()).min(end - now)).await;
    }
    let (keys, _) = f.held();
    let mut bad_examples: Vec<BadLine> = f
        .stats
        .bad_examples
        .iter()
        .map(|b| BadLine {
            line: b.line,
            reason: b.reason.clone(),
        })
        .collect();
    bad_examples.extend(f.file_error_examples.iter().map(|e| BadLine {
        line: 0,
        reason: e.clone(),
    }));
    tracing::info!(dir = %shown, lines = f.stats.lines, emitted, "follow ended");
    Ok(Output {
        findings: vec![FindingOut::new(
            None,
            None,
            BeaconSummary {
                input: shown,
                lines: f.stats.lines,
                records: f.stats.records,
                bad_lines: f.stats.bad_lines + f.file_errors,
                bad_examples,
                keys: keys as u64,
                scored: f.last_scored,
                beacons: f.beacons() as u64,
                threshold,
                seconds: started.elapsed().as_secs_f64(),
            },
        )],
        probe_counts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timing_params_are_bounded() {
        let t = timing(&json!({})).unwrap();
        assert_eq!(t.duration, Duration::from_secs(3600));
        assert!(timing(&json!({"duration_secs": 0})).is_err());
        assert!(timing(&json!({"duration_secs": 8.0 * 86400.0})).is_err());
        assert!(timing(&json!({"poll_secs": "fast"})).is_err());
        assert!(timing(&json!({"rescore_secs": 0.0})).is_err());
        let t =
            timing(&json!({"duration_secs": 2, "poll_secs": 0.1, "rescore_secs": 0.2})).unwrap();
        assert_eq!(t.poll, Duration::from_millis(100));
    }
}
