//! `noop`: does nothing and reports nothing (job-manager benchmarks).

use crate::module::{FindingOut, Module, ModuleCtx, ModuleError, TaskInput};
use futures::future::BoxFuture;

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
        _task: &'a TaskInput,
        _ctx: &'a ModuleCtx,
    ) -> BoxFuture<'a, Result<Vec<FindingOut>, ModuleError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
