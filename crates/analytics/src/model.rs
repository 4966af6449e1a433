//! The 1D CNN, in the talk's shape: conv (32 filters) → conv (64 filters) → dense → dense → two
//! sigmoid outputs, *beaconing* and *has jitter*. Built on candle (CPU only).
//!
//! ```text
//! input  [B, 3, 128]   (interval / window median, ln(1+interval)/ln(1+day), mask)
//! conv1  3→32,  k=5, pad 2, stride 2, ReLU        → [B, 32, 64]
//! conv2  32→64, k=5, pad 2, stride 2, ReLU        → [B, 64, 32]
//! pool   mean ‖ max over time                    → [B, 128]
//! fc1    128→32, ReLU;  fc2  32→2 (logits; sigmoid at inference)
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Conv1d, Conv1dConfig, Linear, Module};

use crate::AnalyticsError;
use crate::features::{CHANNELS, WIN};
use crate::rng::Rng;

/// The weights shipped with the crate (reproduced by `train` with the default seed).
pub const SHIPPED_WEIGHTS: &[u8] = include_bytes!("../weights/beacon_cnn.safetensors");

const PARAMS: [(&str, &[usize]); 8] = [
    ("conv1.weight", &[32, CHANNELS, 5]),
    ("conv1.bias", &[32]),
    ("conv2.weight", &[64, 32, 5]),
    ("conv2.bias", &[64]),
    ("fc1.weight", &[32, 128]),
    ("fc1.bias", &[32]),
    ("fc2.weight", &[2, 32]),
    ("fc2.bias", &[2]),
];

/// Trained (or freshly initialised) CNN weights.
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// The weights committed in `crates/analytics/weights/beacon_cnn.safetensors`.
    pub fn shipped() -> Result<Weights, AnalyticsError> {
        Weights::from_bytes(SHIPPED_WEIGHTS)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Weights, AnalyticsError> {
        let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu)
            .map_err(|e| AnalyticsError::Weights(e.to_string()))?;
        let w = Weights { tensors };
        w.check()?;
        Ok(w)
    }

    pub fn load(path: &Path) -> Result<Weights, AnalyticsError> {
        let bytes = std::fs::read(path).map_err(|e| AnalyticsError::io(path, e))?;
        Weights::from_bytes(&bytes)
    }

    pub fn save(&self, path: &Path) -> Result<(), AnalyticsError> {
        candle_core::safetensors::save(&self.tensors, path)
            .map_err(|e| AnalyticsError::Weights(e.to_string()))
    }

    /// Serialized safetensors bytes (deterministic: tensors are written in name order).
    pub fn to_bytes(&self) -> Result<Vec<u8>, AnalyticsError> {
        let dir = std::env::temp_dir().join(format!(
            "overlord-weights-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        self.save(&dir)?;
        let b = std::fs::read(&dir).map_err(|e| AnalyticsError::io(&dir, e));
        let _ = std::fs::remove_file(&dir);
        b
    }

    fn check(&self) -> Result<(), AnalyticsError> {
        for (name, shape) in PARAMS {
            let t = self
                .tensors
                .get(name)
                .ok_or_else(|| AnalyticsError::Weights(format!("missing tensor {name}")))?;
            if t.dims() != shape {
                return Err(AnalyticsError::Weights(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.dims()
                )));
            }
            if t.dtype() != DType::F32 {
                return Err(AnalyticsError::Weights(format!("tensor {name} is not f32")));
            }
        }
        Ok(())
    }

    /// He-initialised weights drawn from our own seeded generator.
    pub fn init(rng: &mut Rng) -> Weights {
        let mut tensors = HashMap::new();
        for (name, shape) in PARAMS {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = if name.ends_with("bias") {
                vec![0.0; n]
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let std = (2.0 / fan_in as f64).sqrt();
                (0..n).map(|_| (rng.normal() * std) as f32).collect()
            };
            let t = Tensor::from_vec(data, shape, &Device::Cpu).expect("shape matches");
            tensors.insert(name.to_string(), t);
        }
        Weights { tensors }
    }

    /// The learned score combiner (logistic regression over [`crate::score::NF`] features), if
    /// these weights carry one.
    pub fn combiner(&self) -> Option<(Vec<f32>, f32)> {
        let w = self.tensors.get("combiner.weight")?.to_vec1::<f32>().ok()?;
        let b = self.tensors.get("combiner.bias")?.to_vec1::<f32>().ok()?;
        if w.len() != crate::score::NF || b.len() != 1 {
            return None;
        }
        Some((w, b[0]))
    }

    /// Attach a combiner.
    pub fn with_combiner(mut self, w: &[f32], b: f32) -> Weights {
        let wt = Tensor::from_slice(w, w.len(), &Device::Cpu).expect("1-d");
        let bt = Tensor::from_slice(&[b], 1, &Device::Cpu).expect("1-d");
        self.tensors.insert("combiner.weight".into(), wt);
        self.tensors.insert("combiner.bias".into(), bt);
        self
    }

    /// The same CNN without a combiner.
    pub fn without_combiner(mut self) -> Weights {
        self.tensors.remove("combiner.weight");
        self.tensors.remove("combiner.bias");
        self
    }

    pub(crate) fn tensor(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }

    pub(crate) fn from_vars(vars: &HashMap<String, Var>) -> Weights {
        Weights {
            tensors: vars
                .iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
                .collect(),
        }
    }

    pub(crate) fn to_vars(&self) -> HashMap<String, Var> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), Var::from_tensor(t).expect("f32 var")))
            .collect()
    }
}

/// The network, ready to run.
pub struct BeaconCnn {
    conv1: Conv1d,
    conv2: Conv1d,
    fc1: Linear,
    fc2: Linear,
}

impl BeaconCnn {
    pub fn new(w: &Weights) -> BeaconCnn {
        Self::from_tensors(|n| w.tensor(n).clone())
    }

    pub(crate) fn from_vars(vars: &HashMap<String, Var>) -> BeaconCnn {
        Self::from_tensors(|n| vars[n].as_tensor().clone())
    }

    fn from_tensors(get: impl Fn(&str) -> Tensor) -> BeaconCnn {
        let c1 = Conv1dConfig {
            padding: 2,
            stride: 2,
            ..Default::default()
        };
        let c2 = Conv1dConfig {
            padding: 2,
            stride: 2,
            ..Default::default()
        };
        BeaconCnn {
            conv1: Conv1d::new(get("conv1.weight"), Some(get("conv1.bias")), c1),
            conv2: Conv1d::new(get("conv2.weight"), Some(get("conv2.bias")), c2),
            fc1: Linear::new(get("fc1.weight"), Some(get("fc1.bias"))),
            fc2: Linear::new(get("fc2.weight"), Some(get("fc2.bias"))),
        }
    }

    /// Logits `[B, 2]` for inputs `[B, CHANNELS, WIN]`.
    pub fn logits(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.conv1.forward(x)?.relu()?;
        let h = self.conv2.forward(&h)?.relu()?;
        let mean = h.mean(2)?;
        let max = h.max(2)?;
        let h = Tensor::cat(&[&mean, &max], 1)?;
        let h = self.fc1.forward(&h)?.relu()?;
        self.fc2.forward(&h)
    }

    /// Probabilities (beaconing, has jitter) for `n` encoded windows laid out back to back.
    pub fn predict(&self, inputs: &[f32]) -> Result<Vec<[f32; 2]>, AnalyticsError> {
        let per = CHANNELS * WIN;
        let n = inputs.len() / per;
        let mut out = Vec::with_capacity(n);
        const BATCH: usize = 512;
        for chunk in inputs.chunks(BATCH * per) {
            let b = chunk.len() / per;
            let x = Tensor::from_slice(chunk, (b, CHANNELS, WIN), &Device::Cpu)
                .map_err(|e| AnalyticsError::Model(e.to_string()))?;
            let p = self
                .logits(&x)
                .and_then(|l| candle_nn::ops::sigmoid(&l))
                .and_then(|p| p.to_vec2::<f32>())
                .map_err(|e| AnalyticsError::Model(e.to_string()))?;
            out.extend(p.into_iter().map(|r| [r[0], r[1]]));
        }
        Ok(out)
    }
}
