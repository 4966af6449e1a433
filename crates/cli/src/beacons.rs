//! `overlord beacons`: C2 beacon detection in Zeek logs (see `overlord-analytics`).
//!
//! * `overlord beacons LOG...` scores in-process and prints a ranked table (or `--format jsonl`);
//! * `overlord beacons --cluster LOG...` runs the same as a cluster job (one `beacon` task per
//!   log; embedded cluster unless `--coordinator` is given): findings stream like `watch`;
//! * `overlord beacons --follow DIR` follows a Zeek log directory in-process; with `--cluster` or
//!   `--coordinator` it is a live cluster job instead (a `beacon` task with `follow` on a minion,
//!   DIR below the minion's input directory, for `--duration-secs`): findings stream as keys
//!   change class;
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
    /// Follow a Zeek log directory as Zeek writes it (rotation, gzip archives, TSV and JSON):
    /// a sliding 24 h window per key; a finding is printed when a key crosses the threshold
    /// and again only when its class changes. With --cluster/--coordinator: a live cluster job.
    #[arg(long)]
    pub follow: Option<PathBuf>,
    /// With --follow as a cluster job: how long the minion follows the directory.
    #[arg(long, default_value_t = 3600.0)]
    pub duration_secs: f64,
    /// With --follow: seconds between polls of the directory.
    #[arg(long, default_value_t = 5.0)]
    pub poll_secs: f64,
    /// With --follow: seconds between re-scorings of the window.
    #[arg(long, default_value_t = 60.0)]
    pub rescore_secs: f64,
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
    /// Explains one key: its evidence, the interval histogram and the timeline (text; PNG with
    /// --png). KEY is `[KIND] SRC -> DST` as the table prints it.
    Explain {
        key: String,
        #[arg(required = true)]
        logs: Vec<PathBuf>,
        /// Also draw the histogram and timeline into this PNG.
        #[arg(long)]
        png: Option<PathBuf>,
        #[arg(long)]
        weights: Option<PathBuf>,
    },
    /// Generates a labelled synthetic Zeek day (conn.log, dns.log + labels.jsonl).
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
        /// 1 = a differently-built network, 2 = a harder CDN-heavy one (`GenConfig::variant`).
        #[arg(long, default_value_t = 0)]
        variant: u8,
        /// conn.log only.
        #[arg(long)]
        no_dns: bool,
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
            variant,
            no_dns,
        }) => {
            let cfg = GenConfig {
                variant,
                dns: !no_dns,
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
        Some(BeaconsCmd::Explain {
            key,
            logs,
            png,
            weights,
        }) => {
            let key = overlord_analytics::explain::KeySpec::parse(&key)?;
            let cfg = BeaconConfig {
                weights,
                ..BeaconConfig::default()
            };
            let e = tokio::task::spawn_blocking(move || {
                overlord_analytics::explain::explain(&key, &logs, &cfg)
            })
            .await??;
            print!("{}", overlord_analytics::explain::format_text(&e));
            if let Some(p) = png {
                overlord_analytics::explain::write_png(&e, &p)?;
                eprintln!("wrote {}", p.display());
            }
        }
        None if a.follow.is_some() && (a.cluster || a.coordinator.is_some()) => {
            cluster_follow(a).await?
        }
        None if a.follow.is_some() => follow(a).await?,
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
                Format::Csv => {
                    let rows: Vec<serde_json::Value> = r
                        .findings
                        .iter()
                        .map(serde_json::to_value)
                        .collect::<Result<_, _>>()?;
                    let mut keys = None;
                    for v in &rows {
                        let k = keys.get_or_insert_with(|| {
                            let k = client::json_keys(v);
                            println!("{}", client::csv_line(&k));
                            k
                        });
                        println!("{}", client::json_csv_row(v, k));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `--follow DIR`: poll, re-score on a cadence, print class changes; stops on Ctrl-C.
async fn follow(a: BeaconsArgs) -> Result<()> {
    let dir = a.follow.clone().expect("checked by the caller");
    let mut cfg = BeaconConfig {
        weights: a.weights.clone(),
        ..BeaconConfig::default()
    };
    if let Some(t) = a.threshold {
        cfg.threshold = t;
    }
    let mut f = overlord_analytics::follow::Follower::new(&dir, &cfg)?;
    let poll = std::time::Duration::from_secs_f64(a.poll_secs.max(0.05));
    let rescore = std::time::Duration::from_secs_f64(a.rescore_secs.max(0.05));
    let mut last_score = std::time::Instant::now() - rescore;
    let mut dirty = false;
    let format = a.format;
    let mut csv_keys: Option<Vec<String>> = None;
    loop {
        let (n, out, held, f2) = tokio::task::spawn_blocking(move || {
            let n = f.poll()?;
            let mut out = Vec::new();
            if (dirty || n > 0) && last_score.elapsed() >= rescore {
                out = f.score()?;
            }
            let held = f.held();
            Ok::<_, overlord_analytics::AnalyticsError>((n, out, held, f))
        })
        .await??;
        f = f2;
        if n > 0 {
            dirty = true;
        }
        if last_score.elapsed() >= rescore && dirty {
            last_score = std::time::Instant::now();
            dirty = false;
            tracing::debug!(keys = held.0, events = held.1, "window rescored");
        }
        for x in &out {
            match format {
                Format::Jsonl => println!("{}", serde_json::to_string(x)?),
                Format::Csv => {
                    let v = serde_json::to_value(x)?;
                    let k = csv_keys.get_or_insert_with(|| {
                        let k = client::json_keys(&v);
                        println!("{}", client::csv_line(&k));
                        k
                    });
                    println!("{}", client::json_csv_row(&v, k));
                }
                Format::Table => println!(
                    "{} {} combined {:.3} period {:.0}s checkins {}",
                    if x.is_beacon { "BEACON" } else { "cleared" },
                    x.key(),
                    x.combined,
                    x.period_secs,
                    x.checkins
                ),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// `--follow DIR --cluster`: one live `beacon` task on a minion; stops after `--duration-secs`
/// or on Ctrl-C (the job is cancelled).
async fn cluster_follow(mut a: BeaconsArgs) -> Result<()> {
    let dir = a.follow.take().expect("checked by the caller");
    // The embedded cluster's minions read below the current directory: an absolute path there
    // is accepted; a remote minion reads DIR as given, below its own input directory.
    let input = match (&a.coordinator, std::fs::canonicalize(&dir)) {
        (None, Ok(abs)) => abs.display().to_string(),
        (None, Err(e)) => bail!("{}: {e}", dir.display()),
        (Some(_), _) => dir.display().to_string(),
    };
    let mut params = serde_json::json!({
        "follow": true,
        "duration_secs": a.duration_secs,
        "poll_secs": a.poll_secs,
        "rescore_secs": a.rescore_secs,
    });
    if let Some(t) = a.threshold {
        params["threshold"] = t.into();
    }
    a.logs = Vec::new();
    submit_and_watch(a, vec![input], params, "beacons --follow").await
}

async fn cluster(a: BeaconsArgs) -> Result<()> {
    let mut inputs = Vec::new();
    for p in &a.logs {
        let abs = std::fs::canonicalize(p).with_context(|| format!("{}", p.display()))?;
        inputs.push(abs.display().to_string());
    }
    let mut params = serde_json::json!({});
    if let Some(t) = a.threshold {
        params["threshold"] = t.into();
    }
    submit_and_watch(a, inputs, params, "beacons").await
}

async fn submit_and_watch(
    a: BeaconsArgs,
    inputs: Vec<String>,
    params: serde_json::Value,
    what: &str,
) -> Result<()> {
    let spec = v1::JobSpec {
        name: format!("{what} {}", inputs.join(" ")),
        modules: vec!["beacon".into()],
        inputs,
        params_json: params.to_string(),
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
        let mut lines = client::Lines::findings(a.format);
        let mut c2 = c.clone();
        let watched = client::watch(&mut c, id, 0, true, |f| {
            if f.kind == overlord_core::finding::FindingKind::Beacon.as_str() {
                beacons += 1;
            }
            println!("{}", lines.finding(f));
        });
        // Ctrl-C cancels the job (a live one would run on for its duration otherwise).
        let st = tokio::select! {
            st = watched => st?,
            _ = tokio::signal::ctrl_c() => {
                let st = client::cancel(&mut c2, id).await?;
                eprintln!("job {id} cancelled");
                st
            }
        };
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
