//! DCT perceptual hashes computed straight from RGB pixels.
//!
//! Same construction as Python `imagehash.phash` (grey → small square → 2-D DCT-II → low
//! frequencies → bit = coefficient > median), except that the downscale is an exact area average
//! (box filter) rather than Lanczos: it is the cheapest downscale that still integrates every
//! pixel, and it keeps hashing above 2,000 screens/s per core.
//!
//! * `phash64`: 32x32 grey, top-left 8x8 DCT coefficients.
//! * `phash256`: 64x64 grey, top-left 16x16 DCT coefficients (finer, for re-ranking).
//!
//! Bit order: coefficient (row r, column c) of the k x k block is bit `k*k-1 - (r*k+c)` (MSB first,
//! row-major), as imagehash prints it in hex.

use crate::decode::Rgb;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Both hashes of one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PHashes {
    pub phash64: u64,
    pub phash256: [u64; 4],
}

impl PHashes {
    /// 64-bit hash as 16 hex digits (imagehash's `str()` format).
    pub fn phash64_hex(&self) -> String {
        format!("{:016x}", self.phash64)
    }
    /// 256-bit hash as 64 hex digits.
    pub fn phash256_hex(&self) -> String {
        self.phash256.iter().map(|w| format!("{w:016x}")).collect()
    }
}

/// Hamming distance of two 64-bit hashes.
#[inline]
pub fn hamming64(a: u64, b: u64) -> u32 {
    (a ^ b).count_ones()
}

/// Hamming distance of two 256-bit hashes.
#[inline]
pub fn hamming256(a: &[u64; 4], b: &[u64; 4]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Parses a 16-hex-digit 64-bit hash.
pub fn parse_hex64(s: &str) -> Option<u64> {
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

/// Area-averaged 64x64 luma (scaled by 65536*255 ≈ PIL luma range 0..255) of an RGB image.
fn downscale64(img: &Rgb) -> [f32; 64 * 64] {
    const N: usize = 64;
    let (w, h) = (img.width as usize, img.height as usize);
    // column and row bin boundaries; images smaller than 64 px replicate pixels
    let xb: Vec<usize> = (0..=N).map(|i| i * w / N).collect();
    let yb: Vec<usize> = (0..=N).map(|i| i * h / N).collect();
    let mut out = [0f32; N * N];
    let mut acc = [[0u64; 3]; N];
    for by in 0..N {
        let (y0, mut y1) = (yb[by], yb[by + 1]);
        if y1 <= y0 {
            y1 = (y0 + 1).min(h);
        }
        let y0 = y0.min(h - 1);
        for a in acc.iter_mut() {
            *a = [0; 3];
        }
        for y in y0..y1 {
            let row = &img.data[y * w * 3..(y + 1) * w * 3];
            for bx in 0..N {
                let (x0, mut x1) = (xb[bx], xb[bx + 1]);
                if x1 <= x0 {
                    x1 = (x0 + 1).min(w);
                }
                let x0 = x0.min(w - 1);
                let (mut r, mut g, mut b) = (0u32, 0u32, 0u32);
                for p in row[x0 * 3..x1 * 3].chunks_exact(3) {
                    r += p[0] as u32;
                    g += p[1] as u32;
                    b += p[2] as u32;
                }
                let a = &mut acc[bx];
                a[0] += r as u64;
                a[1] += g as u64;
                a[2] += b as u64;
            }
        }
        let rows = (y1 - y0) as f32;
        for bx in 0..N {
            let (x0, mut x1) = (xb[bx], xb[bx + 1]);
            if x1 <= x0 {
                x1 = (x0 + 1).min(w);
            }
            let x0 = x0.min(w - 1);
            let cnt = rows * (x1 - x0) as f32;
            let a = acc[bx];
            out[by * N + bx] = (0.299 * a[0] as f32 + 0.587 * a[1] as f32 + 0.114 * a[2] as f32) / cnt;
        }
    }
    out
}

/// DCT-II basis rows: `basis[k][n] = cos(pi*k*(2n+1)/(2N))` for k < K.
fn basis(n: usize, k: usize) -> Vec<f32> {
    let mut v = vec![0f32; k * n];
    for kk in 0..k {
        for nn in 0..n {
            v[kk * n + nn] =
                (std::f64::consts::PI * kk as f64 * (2 * nn + 1) as f64 / (2 * n) as f64).cos() as f32;
        }
    }
    v
}

fn basis32() -> &'static [f32] {
    static B: OnceLock<Vec<f32>> = OnceLock::new();
    B.get_or_init(|| basis(32, 8))
}
fn basis64() -> &'static [f32] {
    static B: OnceLock<Vec<f32>> = OnceLock::new();
    B.get_or_init(|| basis(64, 16))
}

/// Low-frequency k x k block of the 2-D DCT-II of an n x n image: B · X · Bᵀ.
fn dct_low(x: &[f32], n: usize, k: usize, b: &[f32]) -> Vec<f32> {
    // t = B · X  (k x n)
    let mut t = vec![0f32; k * n];
    for kk in 0..k {
        let brow = &b[kk * n..(kk + 1) * n];
        let trow = &mut t[kk * n..(kk + 1) * n];
        for (i, &bv) in brow.iter().enumerate() {
            let xrow = &x[i * n..(i + 1) * n];
            for (tv, &xv) in trow.iter_mut().zip(xrow) {
                *tv += bv * xv;
            }
        }
    }
    // out = t · Bᵀ (k x k)
    let mut out = vec![0f32; k * k];
    for r in 0..k {
        for c in 0..k {
            out[r * k + c] = t[r * n..(r + 1) * n].iter().zip(&b[c * n..(c + 1) * n]).map(|(a, b)| a * b).sum();
        }
    }
    out
}

fn bits_over_median(coeffs: &[f32]) -> Vec<bool> {
    let mut sorted = coeffs.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let m = sorted.len();
    let median = (sorted[m / 2 - 1] + sorted[m / 2]) / 2.0;
    coeffs.iter().map(|&c| c > median).collect()
}

/// Computes both perceptual hashes of an RGB image.
pub fn phashes(img: &Rgb) -> PHashes {
    let g64 = downscale64(img);
    // 32x32 = 2x2 means of the 64x64 grid (exact area average when sides divide by 64)
    let mut g32 = [0f32; 32 * 32];
    for y in 0..32 {
        for x in 0..32 {
            let i = 2 * y * 64 + 2 * x;
            g32[y * 32 + x] = 0.25 * (g64[i] + g64[i + 1] + g64[i + 64] + g64[i + 65]);
        }
    }
    let low8 = dct_low(&g32, 32, 8, basis32());
    let mut phash64 = 0u64;
    for (i, b) in bits_over_median(&low8).into_iter().enumerate() {
        if b {
            phash64 |= 1u64 << (63 - i);
        }
    }
    let low16 = dct_low(&g64, 64, 16, basis64());
    let mut phash256 = [0u64; 4];
    for (i, b) in bits_over_median(&low16).into_iter().enumerate() {
        if b {
            phash256[i / 64] |= 1u64 << (63 - (i % 64));
        }
    }
    PHashes { phash64, phash256 }
}
