//! Benchmarks (`overlord bench ...`): programs that print figures, not timed tests.

use anyhow::Result;

#[derive(clap::Subcommand, Clone, Debug)]
pub enum Which {
    /// All benchmarks.
    All,
}

pub async fn run(_w: Which) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
