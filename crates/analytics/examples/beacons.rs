//! Thin command-line front end over the library, until `overlord beacons` is wired:
//!
//! ```text
//! cargo run --release -p overlord-analytics --example beacons -- [--json] [--top N] [--weights F] LOG...
//! cargo run --release -p overlord-analytics --example beacons -- train [--seed S] [--out F] [--samples N] [--epochs E] [--cnn-from W]
//! cargo run --release -p overlord-analytics --example beacons -- eval DIR [--weights F] [--json]
//! cargo run --release -p overlord-analytics --example beacons -- generate OUT_DIR [--seed S] [--hosts N] [--beacons N] [--browsing X] [--gzip] [--json]
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use overlord_analytics::{
    BeaconConfig, GenConfig, TrainConfig, eval, format_jsonl, format_table, generate,
    generate::OutFormat, score_logs, train,
};

fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>> {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if i + 1 >= args.len() {
            bail!("{flag} needs a value");
        }
        let v = args.remove(i + 1);
        args.remove(i);
        Ok(Some(v))
    } else {
        Ok(None)
    }
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args.remove(i);
        true
    } else {
        false
    }
}

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_default();
    match cmd.as_str() {
        "train" => {
            args.remove(0);
            let seed: u64 = take_value(&mut args, "--seed")?
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(overlord_analytics::train::DEFAULT_SEED);
            let out =
                take_value(&mut args, "--out")?.unwrap_or_else(|| "beacon_cnn.safetensors".into());
            let mut cfg = TrainConfig {
                verbose: true,
                ..TrainConfig::default()
            };
            if let Some(n) = take_value(&mut args, "--samples")? {
                cfg.samples = n.parse()?;
            }
            if let Some(n) = take_value(&mut args, "--epochs")? {
                cfg.epochs = n.parse()?;
            }
            let t = std::time::Instant::now();
            let w = match take_value(&mut args, "--cnn-from")? {
                // keep that file's CNN (trained from the same seed), refit the combiner only
                Some(f) => overlord_analytics::train::refit_combiner(
                    seed,
                    &overlord_analytics::Weights::load(std::path::Path::new(&f))?,
                    &cfg,
                )?,
                None => train(seed, &cfg)?,
            };
            w.save(std::path::Path::new(&out))?;
            eprintln!(
                "trained seed {seed} in {:.1}s -> {out}",
                t.elapsed().as_secs_f64()
            );
        }
        "eval" => {
            args.remove(0);
            let json = take_flag(&mut args, "--json");
            let mut cfg = BeaconConfig::default();
            if let Some(w) = take_value(&mut args, "--weights")? {
                cfg.weights = Some(w.into());
            }
            if let Some(t) = take_value(&mut args, "--threshold")? {
                cfg.threshold = t.parse()?;
            }
            let dir = args.first().context("eval needs a labelled directory")?;
            let r = eval::evaluate_with(std::path::Path::new(dir), &cfg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", eval::format_eval(&r));
            }
        }
        "generate" => {
            args.remove(0);
            let mut cfg = GenConfig::default();
            let seed: u64 = take_value(&mut args, "--seed")?
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(1);
            if let Some(v) = take_value(&mut args, "--hosts")? {
                cfg.hosts = v.parse()?;
            }
            if let Some(v) = take_value(&mut args, "--beacons")? {
                cfg.beacons = v.parse()?;
            }
            if let Some(v) = take_value(&mut args, "--browsing")? {
                cfg.browsing = v.parse()?;
            }
            if let Some(v) = take_value(&mut args, "--variant")? {
                cfg.variant = v.parse()?;
            }
            cfg.dns = !take_flag(&mut args, "--no-dns");
            cfg.gzip = take_flag(&mut args, "--gzip");
            if take_flag(&mut args, "--json") {
                cfg.format = OutFormat::Json;
            }
            let out = args.first().context("generate needs an output directory")?;
            let t = std::time::Instant::now();
            let s = generate(seed, &cfg, std::path::Path::new(out))?;
            eprintln!(
                "{} conn lines, {} labels ({} malicious keys) in {:.1}s",
                s.conn_lines,
                s.labels,
                s.malicious_keys,
                t.elapsed().as_secs_f64()
            );
        }
        _ => {
            let json = take_flag(&mut args, "--json");
            let top: usize = take_value(&mut args, "--top")?
                .map(|s| s.parse())
                .transpose()?
                .unwrap_or(50);
            let mut cfg = BeaconConfig::default();
            if let Some(w) = take_value(&mut args, "--weights")? {
                cfg.weights = Some(w.into());
            }
            if let Some(t) = take_value(&mut args, "--threshold")? {
                cfg.threshold = t.parse()?;
            }
            if args.is_empty() {
                bail!("usage: beacons [--json] [--top N] LOG... | train | eval DIR | generate DIR");
            }
            let paths: Vec<PathBuf> = args.iter().map(PathBuf::from).collect();
            let r = score_logs(&paths, &cfg)?;
            if json {
                print!("{}", format_jsonl(&r));
            } else {
                print!("{}", format_table(&r, top));
            }
        }
    }
    Ok(())
}
