//! Blank filter: Shannon entropy of the grey histogram plus the number of pixels that differ
//! from the dominant grey level.

use crate::decode::Grey;
use serde::{Deserialize, Serialize};

/// Blank-filter figures of one image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlankStats {
    /// Shannon entropy of the 256-bin grey histogram, in bits.
    pub entropy: f64,
    /// Pixels whose grey level differs from the dominant level by more than `tolerance`.
    pub differing_pixels: u64,
    /// The dominant grey level.
    pub dominant: u8,
    /// The verdict.
    pub blank: bool,
}

/// Thresholds of the blank filter.
#[derive(Debug, Clone, Copy)]
pub struct BlankParams {
    /// Grey levels within this distance of the dominant one count as "the same colour".
    pub tolerance: u8,
    /// An image is blank only if its entropy is at most this many bits...
    pub max_entropy: f64,
    /// ...and at most this many pixels differ from the dominant colour (a mouse pointer is ~150).
    pub max_differing: u64,
}

impl Default for BlankParams {
    fn default() -> Self {
        BlankParams { tolerance: 8, max_entropy: 0.004, max_differing: 300 }
    }
}

/// Computes the blank statistics of a grey image.
pub fn blank_stats(grey: &Grey, params: &BlankParams) -> BlankStats {
    let mut hist = [0u64; 256];
    for &v in &grey.data {
        hist[v as usize] += 1;
    }
    let n = grey.data.len() as f64;
    let entropy = hist
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum::<f64>()
        .max(0.0);
    let dominant = (0..256).max_by_key(|&i| hist[i]).unwrap_or(0) as u8;
    let lo = dominant.saturating_sub(params.tolerance) as usize;
    let hi = dominant.saturating_add(params.tolerance) as usize;
    let same: u64 = hist[lo..=hi].iter().sum();
    let differing_pixels = grey.data.len() as u64 - same;
    let blank = entropy <= params.max_entropy && differing_pixels <= params.max_differing;
    BlankStats { entropy, differing_pixels, dominant, blank }
}
