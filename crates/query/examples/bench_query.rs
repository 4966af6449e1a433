//! The query benchmark without the CLI: `cargo run --release -p overlord-query --example
//! bench_query -- N PER_JOB RUNS` (the CLI's `overlord bench query` runs the same code, with the
//! same allocator).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let a: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|s| s.parse().ok())
        .collect();
    let args = overlord_query::bench::QueryBenchArgs {
        n: a.first().copied().unwrap_or(10_000_000),
        per_job: a.get(1).copied().unwrap_or(1_000_000),
        runs: a.get(2).copied().unwrap_or(10) as usize,
        no_peers: std::env::var_os("NO_PEERS").is_some(),
        seed: 7,
        dir: std::env::var_os("BENCH_DIR").map(Into::into),
    };
    if let Err(e) = overlord_query::bench::run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
