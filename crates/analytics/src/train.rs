//! Training the CNN on the project's own synthetic sequences. Deterministic from a seed: the data,
//! the initial weights and the batch order all come from [`Rng`], and training runs on one thread.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::AnalyticsError;
use crate::features::{self, CHANNELS, WIN};
use crate::model::{BeaconCnn, Weights};
use crate::rng::Rng;
use crate::synth;

/// Seed that produces the shipped weights.
pub const DEFAULT_SEED: u64 = 7;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training windows generated (40 % beacons, 60 % benign).
    pub samples: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Burst-collapse gap used to build the inputs (must match scoring).
    pub burst_gap: f64,
    /// Hosts of the generated dataset the score combiner is fitted on.
    pub combiner_hosts: usize,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            samples: 40_000,
            epochs: 6,
            batch: 64,
            learning_rate: 2e-3,
            burst_gap: crate::DEFAULT_BURST_GAP,
            combiner_hosts: 250,
            verbose: false,
        }
    }
}

/// One labelled training window.
pub struct Sample {
    pub input: Vec<f32>,
    pub beacon: bool,
    pub jitter: bool,
}

/// Draw one training window (retries until the sequence has enough check-ins).
pub fn sample(rng: &mut Rng, burst_gap: f64) -> Sample {
    let mut sorted = Vec::new();
    let mut checkins = Vec::new();
    let mut iv = Vec::new();
    loop {
        let positive = rng.bool(0.4);
        let mut jitter = false;
        sorted.clear();
        if positive {
            let spec = synth::random_beacon_spec(rng);
            jitter = spec.jitter > 0.05 || spec.backoff.is_some();
            sorted.extend(synth::beacon_times(rng, &spec).into_iter().map(|(t, _)| t));
            if rng.bool(0.2) {
                let expected = ((spec.end - spec.start) / spec.period) as u64;
                let sessions = rng.int(1, 1 + expected / 12);
                sorted.extend(synth::browsing_sessions(rng, sessions as usize));
            }
        } else {
            sorted.extend(synth::random_activity(rng));
        }
        sorted.sort_by(f64::total_cmp);
        features::collapse(&sorted, burst_gap, &mut checkins);
        if checkins.len() < crate::MIN_CHECKINS {
            continue;
        }
        features::intervals(&checkins, &mut iv);
        let starts = features::window_starts(iv.len(), 8);
        let s = *rng.choose(&starts);
        let end = (s + WIN).min(iv.len());
        let mut input = vec![0.0; CHANNELS * WIN];
        features::encode_window(&iv[s..end], &mut input);
        return Sample {
            input,
            beacon: positive,
            jitter,
        };
    }
}

/// Train from scratch. Same seed and config → the same weights, bit for bit.
pub fn train(seed: u64, cfg: &TrainConfig) -> Result<Weights, AnalyticsError> {
    let m = |e: candle_core::Error| AnalyticsError::Model(e.to_string());
    let mut rng = Rng::new(seed);
    let mut data_rng = rng.fork(1);
    let data: Vec<Sample> = (0..cfg.samples)
        .map(|_| sample(&mut data_rng, cfg.burst_gap))
        .collect();
    let init = Weights::init(&mut rng.fork(2));
    let vars: HashMap<String, Var> = init.to_vars();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    let var_list: Vec<Var> = names.iter().map(|n| vars[*n].clone()).collect();
    let mut opt = AdamW::new(
        var_list,
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: 1e-4,
            ..Default::default()
        },
    )
    .map_err(m)?;
    let model = BeaconCnn::from_vars(&vars);
    let per = CHANNELS * WIN;
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut order_rng = rng.fork(3);
    let steps_per_epoch = data.len() / cfg.batch;
    let total_steps = steps_per_epoch * cfg.epochs;
    let mut step = 0usize;
    for epoch in 0..cfg.epochs {
        order_rng.shuffle(&mut order);
        let mut epoch_loss = 0.0f64;
        for b in 0..steps_per_epoch {
            // cosine learning-rate decay
            let lr = cfg.learning_rate
                * 0.5
                * (1.0 + (std::f64::consts::PI * step as f64 / total_steps as f64).cos());
            opt.set_learning_rate(lr.max(cfg.learning_rate * 0.02));
            let idx = &order[b * cfg.batch..(b + 1) * cfg.batch];
            let mut x = Vec::with_capacity(cfg.batch * per);
            let mut y = Vec::with_capacity(cfg.batch * 2);
            let mut w = Vec::with_capacity(cfg.batch * 2);
            for &i in idx {
                let s = &data[i];
                x.extend_from_slice(&s.input);
                y.push(if s.beacon { 1.0f32 } else { 0.0 });
                y.push(if s.jitter { 1.0 } else { 0.0 });
                w.push(1.0f32);
                w.push(if s.beacon { 0.5 } else { 0.0 });
            }
            let xt = Tensor::from_vec(x, (cfg.batch, CHANNELS, WIN), &Device::Cpu).map_err(m)?;
            let yt = Tensor::from_vec(y, (cfg.batch, 2), &Device::Cpu).map_err(m)?;
            let wt = Tensor::from_vec(w, (cfg.batch, 2), &Device::Cpu).map_err(m)?;
            let logits = model.logits(&xt).map_err(m)?;
            let loss = bce_with_logits(&logits, &yt, &wt).map_err(m)?;
            opt.backward_step(&loss).map_err(m)?;
            epoch_loss += loss.to_scalar::<f32>().map_err(m)? as f64;
            step += 1;
        }
        if cfg.verbose {
            eprintln!(
                "epoch {epoch}: mean loss {:.4}",
                epoch_loss / steps_per_epoch.max(1) as f64
            );
        }
    }
    let weights = Weights::from_vars(&vars);
    refit_combiner(seed, &weights, cfg)
}

/// The second stage of [`train()`] alone: keep the CNN of `weights` (trained from `seed`) and
/// fit the score combiner as `train(seed, cfg)` does. `train(seed, cfg)` ≡
/// `refit_combiner(seed, cnn_of(train(seed, cfg)), cfg)` bit for bit, so a change of the
/// combiner features needs no CNN retraining to reproduce the shipped weights.
pub fn refit_combiner(
    seed: u64,
    weights: &Weights,
    cfg: &TrainConfig,
) -> Result<Weights, AnalyticsError> {
    fit_combiner(
        seed.wrapping_mul(1000).wrapping_add(17),
        &weights.clone().without_combiner(),
        cfg.combiner_hosts,
        cfg.verbose,
    )
}

/// Fit the score combiner (a logistic regression over the CNN and statistical features) on a
/// labelled Zeek dataset produced by the generator from `seed`, scored with `weights`.
/// Sequences carrying a hint (benign-periodic, failed connections) or credited from a rotation
/// group are left out: the hints are rules applied after the combiner.
pub fn fit_combiner(
    seed: u64,
    weights: &Weights,
    hosts: usize,
    verbose: bool,
) -> Result<Weights, AnalyticsError> {
    let dir = std::env::temp_dir().join(format!("overlord-combiner-{}-{seed}", std::process::id()));
    let gen_cfg = crate::GenConfig {
        hosts,
        beacons: hosts * 9 / 10,
        browsing: 0.4,
        ..crate::GenConfig::default()
    };
    let res = (|| {
        crate::generate(seed, &gen_cfg, &dir)?;
        let labels = crate::eval::load_labels(&dir.join("labels.jsonl"))?;
        let mal: rustc_hash::FxHashSet<(String, String)> = labels
            .iter()
            .filter(|l| l.label == "malicious")
            .map(|l| (l.src.clone(), l.dst.clone()))
            .collect();
        // The rules applied after the combiner stay out of its fit (the evidence floor would
        // change which rotation-group members are credited, i.e. which rows are left out).
        let cfg = crate::BeaconConfig {
            min_evidence: 0.0,
            backoff_min_checkins: 0,
            resolver_credit: false,
            ..crate::BeaconConfig::default()
        };
        let mut scorer = crate::Scorer::with_weights(&cfg, weights)?;
        for p in crate::eval::dataset_logs(&dir)? {
            scorer.add_path(&p)?;
        }
        let report = scorer.finish_all()?;
        let rows: Vec<(Vec<f32>, f32)> = report
            .findings
            .iter()
            .filter(|f| f.group.is_empty() && !f.benign_hint && f.failed_fraction < 0.8)
            .map(|f| {
                let y = mal.contains(&(f.src.clone(), f.dst.clone()));
                (f.features.clone(), if y { 1.0 } else { 0.0 })
            })
            .collect();
        Ok::<_, AnalyticsError>(rows)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let rows = res?;
    let (w, b) = logistic_regression(&rows, 4000, 0.5, 1e-4);
    if verbose {
        let pos = rows.iter().filter(|r| r.1 > 0.5).count();
        eprintln!(
            "combiner fitted on {} sequences ({pos} beacons): w={w:?} b={b:.3}",
            rows.len()
        );
    }
    Ok(weights.clone().with_combiner(&w, b))
}

/// Full-batch gradient descent on the logistic loss with L2 (deterministic).
pub fn logistic_regression(
    rows: &[(Vec<f32>, f32)],
    iters: usize,
    lr: f64,
    l2: f64,
) -> (Vec<f32>, f32) {
    let nf = rows.first().map(|r| r.0.len()).unwrap_or(0);
    let mut w = vec![0f64; nf];
    let mut b = 0f64;
    let n = rows.len().max(1) as f64;
    for _ in 0..iters {
        let mut gw = vec![0f64; nf];
        let mut gb = 0f64;
        for (x, y) in rows {
            let z: f64 = x.iter().zip(&w).map(|(x, w)| *x as f64 * w).sum::<f64>() + b;
            let p = 1.0 / (1.0 + (-z).exp());
            let d = p - *y as f64;
            for (g, xi) in gw.iter_mut().zip(x) {
                *g += d * *xi as f64;
            }
            gb += d;
        }
        for (wi, g) in w.iter_mut().zip(&gw) {
            *wi -= lr * (g / n + l2 * *wi);
        }
        b -= lr * gb / n;
    }
    (w.iter().map(|&x| x as f32).collect(), b as f32)
}

/// Weighted binary cross-entropy on logits: max(x,0) − x·y + ln(1 + e^(−|x|)).
fn bce_with_logits(x: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let l = ((x.relu()? - (x * y)?)? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    (l * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}
