//! `overlord beacons`: C2 beacon detection in Zeek logs (see `overlord-analytics`).
//!
//! * `overlord beacons LOG...` scores in-process and prints a ranked table (or `--format jsonl`);
//! * `overlord beacons --cluster LOG...` runs the same as a cluster job (one `beacon` task per
//!   log; embedded cluster unless `--coordinator` is given): findings stream like `watch`;
//! * `overlord beacons train|eval|generate` reproduce the weights, evaluate on a labelled set,
//!   and generate one.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use overlord_analytics::{
    BeaconConfig, GenConfig, TrainConfig, eval, format_jsonl, format_table, generate::OutFormat,
};
use overlord_proto::v1;

use crate::client::{self, Format};
use crate::embedded::Embedded;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BeaconsArgs {
    #[command(subcommand)]
    pub cmd: Option<BeaconsCmd>,
    /// Zeek logs: conn/dns/http/ssl, TSV or JSON lines, optionally gzip.
    pub logs: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// Rows of the table.
    #[arg(long, default_value_t = 50)]
    pub top: usize,
    /// Combined score from which a finding is a beacon (default 0.5).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Weights file (safetensors) instead of the shipped one (local mode only).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Run as a cluster job (one `beacon` task per log).
    #[arg(long)]
    pub cluster: bool,
    #[arg(long, env = "OVERLORD_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Data directory of the embedded cluster (with --cluster and no --coordinator).
    #[arg(long, default_value = ".overlord-data")]
    pub data_dir: PathBuf,
}

#[derive(clap::Subcommand, Debug)]
pub enum BeaconsCmd {
    /// Trains the CNN and the score combiner from a seed (seed 7 = the shipped weights).
    Train {
        #[arg(long, default_value_t = overlord_analytics::train::DEFAULT_SEED)]
        seed: u64,
        #[arg(long, default_value = "beacon_cnn.safetensors")]
        out: PathBuf,
        #[arg(long)]
        samples: Option<usize>,
        #[arg(long)]
        epochs: Option<usize>,
    },
    /// Scores a labelled directory (labels.jsonl + logs) and prints precision, recall, F1,
    /// ROC-AUC, PR-AUC overall and per pattern.
    Eval {
        dir: PathBuf,
        #[arg(long)]
        weights: Option<PathBuf>,
        #[arg(long)]
        threshold: Option<f32>,
        #[arg(long)]
        json: bool,
    },
    /// Generates a labelled synthetic Zeek day (conn.log + labels.jsonl).
    Generate {
        dir: PathBuf,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 300)]
        hosts: usize,
        #[arg(long, default_value_t = 60)]
        beacons: usize,
        /// Browsing volume (1.0 ≈ 10k conn lines per host).
        #[arg(long, default_value_t = 1.0)]
        browsing: f64,
        #[arg(long)]
        gzip: bool,
        /// JSON lines instead of TSV.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(a: BeaconsArgs) -> Result<()> {
    match a.cmd {
        Some(BeaconsCmd::Train {
            seed,
            out,
            samples,
            epochs,
        }) => {
            let mut cfg = TrainConfig {
                verbose: true,
                ..TrainConfig::default()
            };
            if let Some(s) = samples {
                cfg.samples = s;
            }
            if let Some(e) = epochs {
                cfg.epochs = e;
            }
            let t = std::time::Instant::now();
            let w = tokio::task::spawn_blocking(move || overlord_analytics::train(seed, &cfg))
                .await??;
            w.save(&out)?;
            eprintln!(
                "trained seed {seed} in {:.1}s -> {}",
                t.elapsed().as_secs_f64(),
                out.display()
            );
        }
        Some(BeaconsCmd::Eval {
            dir,
            weights,
            threshold,
            json,
        }) => {
            let mut cfg = BeaconConfig {
                weights,
                ..BeaconConfig::default()
            };
            if let Some(t) = threshold {
                cfg.threshold = t;
            }
            let r = tokio::task::spawn_blocking(move || eval::evaluate_with(&dir, &cfg)).await??;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", eval::format_eval(&r));
            }
        }
        Some(BeaconsCmd::Generate {
            dir,
            seed,
            hosts,
            beacons,
            browsing,
            gzip,
            json,
        }) => {
            let cfg = GenConfig {
                hosts,
                beacons,
                browsing,
                gzip,
                format: if json {
                    OutFormat::Json
                } else {
                    OutFormat::Tsv
                },
                ..GenConfig::default()
            };
            let s =
                tokio::task::spawn_blocking(move || overlord_analytics::generate(seed, &cfg, &dir))
                    .await??;
            eprintln!(
                "{} conn lines, {} labels ({} malicious keys): {}",
                s.conn_lines,
                s.labels,
                s.malicious_keys,
                s.files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        None if a.logs.is_empty() => bail!("give Zeek logs to score, or train|eval|generate"),
        None if a.cluster || a.coordinator.is_some() => cluster(a).await?,
        None => {
            let mut cfg = BeaconConfig {
                weights: a.weights,
                ..BeaconConfig::default()
            };
            if let Some(t) = a.threshold {
                cfg.threshold = t;
            }
            let logs = a.logs;
            let r =
                tokio::task::spawn_blocking(move || overlord_analytics::score_logs(&logs, &cfg))
                    .await??;
            match a.format {
                Format::Table => print!("{}", format_table(&r, a.top)),
                Format::Jsonl => print!("{}", format_jsonl(&r)),
            }
        }
    }
    Ok(())
}

async fn cluster(a: BeaconsArgs) -> Result<()> {
    let mut inputs = Vec::new();
    for p in &a.logs {
        let abs = std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?;
        inputs.push(abs.display().to_string());
    }
    let mut params = serde_json::Map::new();
    if let Some(t) = a.threshold {
        params.insert("threshold".into(), t.into());
    }
    let spec = v1::JobSpec {
        name: format!("beacons {}", inputs.join(" ")),
        modules: vec!["beacon".into()],
        inputs,
        params_json: serde_json::Value::Object(params).to_string(),
        ..Default::default()
    };
    let (url, emb) = match a.coordinator {
        Some(u) => (u, None),
        None => {
            let e = Embedded::start(a.data_dir, 2, 4).await?;
            (e.url.clone(), Some(e))
        }
    };
    let r = async {
        let mut c = client::connect(&url).await?;
        let st = client::submit(&mut c, spec).await?;
        let id = st.job_id;
        eprintln!("job {id} submitted: {} task(s)", st.tasks_total);
        let mut beacons = 0u64;
        let st = client::watch(&mut c, id, 0, true, |f| {
            if f.kind == overlord_core::finding::FindingKind::Beacon.as_str() {
                beacons += 1;
            }
            println!("{}", client::finding_line(f, a.format));
        })
        .await?;
        eprintln!("{}", client::status_line(&st));
        eprintln!("{beacons} beacon(s)");
        if st.state != v1::JobState::Completed as i32 {
            bail!("job {id} ended {}", client::state_name(st.state));
        }
        Ok(())
    }
    .await;
    if let Some(e) = emb {
        e.shutdown().await;
    }
    r
}
