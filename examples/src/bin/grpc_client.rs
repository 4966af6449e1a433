//! `cargo run -p overlord-examples --bin grpc-client -- --coordinator http://127.0.0.1:50051
//! --target 127.0.0.1 --ports 22,80` (README "gRPC clients"). Token: `OVERLORD_TOKEN`.

use clap::Parser;
use overlord_examples::grpc_client::{Plan, run};
use std::time::Duration;

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        env = "OVERLORD_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
    /// Target (repeatable).
    #[arg(long = "target", default_values_t = ["127.0.0.1".to_string()])]
    targets: Vec<String>,
    #[arg(long, default_value = "22,80,443")]
    ports: String,
    #[arg(long, value_delimiter = ',', default_value = "portscan")]
    modules: Vec<String>,
    /// Findings per ListResults page and rows per Search page.
    #[arg(long, default_value_t = 2)]
    page: u32,
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let plan = Plan {
        coordinator: a.coordinator,
        token: std::env::var("OVERLORD_TOKEN").ok(),
        targets: a.targets,
        ports: a.ports,
        modules: a.modules,
        page: a.page.max(1),
        timeout: Duration::from_secs(a.timeout_secs),
    };
    run(&plan, |line| println!("{line}")).await?;
    Ok(())
}
