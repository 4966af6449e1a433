//! `overlord-soak`: the long chaos soak, on demand.
//!
//! ```text
//! cargo build -p overlord-cli --release
//! OVERLORD_BIN=target/release/overlord cargo run -p overlord-chaos-tests --release --bin overlord-soak -- \
//!     --faults 1000 --min-tasks 50000 [--seed N] [--gap-ms 250] [--reassign-samples 40] [--tls]
//! ```
//! `--tls`: the cluster is secured (CA, enrolled minions over mTLS, clients with an API token).
//! Jobs are port scans of a /18 (16,384 tasks each); faults come from a seeded schedule (the seed is
//! printed; `--seed` replays it). Exits 1 if any invariant is violated.

use std::time::Duration;

use overlord_chaos_tests::figures::Figures;
use overlord_chaos_tests::rng::Rng;
use overlord_chaos_tests::sandbox::ClusterBuilder;
use overlord_chaos_tests::scenario::{RandomRun, random_run, rogue_reassignment};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}: cannot parse {v:?}"))
        })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "overlord-soak [--seed N] [--faults 1000] [--min-tasks 50000] [--gap-ms 250] [--max-outage-ms 1500] \
             [--prefix 18] [--reassign-samples 40] [--tls]"
        );
        return Ok(());
    }
    let seed = arg(&args, "--seed").unwrap_or_else(|| Rng::seed_from_env("CHAOS_SEED"));
    let faults = arg(&args, "--faults").unwrap_or(1000);
    let mut cfg = RandomRun::soak(seed, faults);
    if let Some(t) = arg(&args, "--min-tasks") {
        cfg.min_tasks = t;
    }
    if let Some(g) = arg::<u64>(&args, "--gap-ms") {
        cfg.mean_gap = Duration::from_millis(g);
    }
    if let Some(o) = arg::<u64>(&args, "--max-outage-ms") {
        cfg.max_outage = Duration::from_millis(o);
    }
    if let Some(p) = arg(&args, "--prefix") {
        cfg.job_prefix = p;
    }
    cfg.tls = args.iter().any(|a| a == "--tls");
    let samples: usize = arg(&args, "--reassign-samples").unwrap_or(40);
    println!(
        "overlord-soak: seed {seed} (replay: --seed {seed}), {faults} faults, ≥ {} tasks",
        cfg.min_tasks
    );

    let (mut figs, mut violations) = random_run(&cfg).await?;

    // Reassignment latency, exactly, on a separate cluster of hand-driven minions.
    if samples > 0 {
        let cl = ClusterBuilder::new("soak-reassign", &[], 0).start().await?;
        let mut rng = Rng::new(seed ^ 0xA55A);
        let mut rf = Figures::new("reassign", Some(seed));
        for i in 0..samples {
            match rogue_reassignment(&cl, &mut rng, i % 3 == 2, &mut rf).await {
                Ok((lat, v)) => {
                    figs.reassign.push(lat);
                    violations.extend(v);
                }
                Err(e) => violations.push(format!("reassignment sample {i}: {e:#}")),
            }
        }
        for (k, n) in rf.faults {
            *figs.faults.entry(k).or_default() += n;
        }
        figs.lost += rf.lost;
        figs.duplicates += rf.duplicates;
        *figs.rejected_stale.get_or_insert(0) += rf.rejected_stale.unwrap_or(0);
    }
    println!("{figs}");
    if !violations.is_empty() || !figs.clean() {
        eprintln!("VIOLATIONS ({}):", violations.len());
        for v in &violations {
            eprintln!("  {v}");
        }
        std::process::exit(1);
    }
    Ok(())
}
