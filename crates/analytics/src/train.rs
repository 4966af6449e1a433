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
    /// Training windows generated (half beacons, half benign).
    pub samples: usize,
    pub epochs: usize,
    pub batch: usize,
    pub learning_rate: f64,
    /// Burst-collapse gap used to build the inputs (must match scoring).
    pub burst_gap: f64,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            samples: 16_000,
            epochs: 6,
            batch: 64,
            learning_rate: 2e-3,
            burst_gap: crate::DEFAULT_BURST_GAP,
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
        let positive = rng.bool(0.5);
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
    Ok(Weights::from_vars(&vars))
}

/// Weighted binary cross-entropy on logits: max(x,0) − x·y + ln(1 + e^(−|x|)).
fn bce_with_logits(x: &Tensor, y: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let l = ((x.relu()? - (x * y)?)? + ((x.abs()?.neg()?.exp()? + 1.0)?.log()?))?;
    (l * w)?.sum_all()? / w.sum_all()?.to_scalar::<f32>()? as f64
}
