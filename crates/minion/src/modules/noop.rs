//! `noop`: no network traffic. Params: `sleep_ms` (default 0) to make tasks take time (chaos
//! tests), `emit` (default false) to report one `noop` finding per task (exactly-once checks).

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;
use overlord_core::finding::Noop as NoopFinding;
use std::time::Duration;

pub struct Noop;

impl Module for Noop {
    fn name(&self) -> &'static str {
        "noop"
    }
    fn capability(&self) -> &'static str {
        "noop"
    }
    fn run<'a>(
        &'a self,
        task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async move {
            if let Some(ms) = task.param_u64("sleep_ms").filter(|ms| *ms > 0) {
                tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
            }
            if task
                .params
                .get("emit")
                .and_then(|v| v.as_bool())
                .unwrap_or(false)
            {
                return Ok(vec![FindingOut::new(
                    None,
                    None,
                    NoopFinding { task: task.task_id },
                )]);
            }
            Ok(Vec::new())
        })
    }
}
