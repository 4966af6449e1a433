//! Blank filter: Shannon entropy of the grey histogram plus the number of pixels that differ
//! from the dominant grey level; and, for screens that fail that test only because their
//! background is not one colour, the number of pixels that differ from a smooth background.
//!
//! "Blank" means: nothing on the screen but its background — one colour or a smooth gradient —
//! and at most a mouse pointer; mild noise or JPEG ringing of such a screen is still blank.
//! Anything a person could look at (a small clock, an icon, a word, a window outline, even in
//! low contrast) is not blank.

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
    /// Pixels differing by more than `tolerance` from the smooth background (bilinear
    /// interpolation of 16x16 block medians); computed only when the histogram test fails
    /// (`None` otherwise).
    pub off_background: Option<u64>,
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
        BlankParams {
            tolerance: 8,
            max_entropy: 0.004,
            max_differing: 300,
        }
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
        .sum::<f64>();
    // a single-colour image sums to -0.0
    let entropy = if entropy > 0.0 { entropy } else { 0.0 };
    let dominant = (0..256).max_by_key(|&i| hist[i]).unwrap_or(0) as u8;
    let lo = dominant.saturating_sub(params.tolerance) as usize;
    let hi = dominant.saturating_add(params.tolerance) as usize;
    let same: u64 = hist[lo..=hi].iter().sum();
    let differing_pixels = grey.data.len() as u64 - same;
    let mut blank = entropy <= params.max_entropy && differing_pixels <= params.max_differing;
    let mut off_background = None;
    if !blank {
        let n = off_smooth_background(grey, params.tolerance, params.max_differing);
        off_background = Some(n);
        blank = n <= params.max_differing;
    }
    BlankStats {
        entropy,
        differing_pixels,
        dominant,
        off_background,
        blank,
    }
}

/// Side of the blocks whose medians model the background.
const BLOCK: usize = 16;

/// Pixels differing by more than `tol` from a smooth background model: the median of every
/// 16x16 block (robust: content covering less than half a block does not move it), bilinearly
/// interpolated between block centres. A gradient, a vignette or mild noise leave (almost)
/// nothing; a clock, an icon or text stand out by their full contrast. Stops counting past
/// `stop` (the caller only needs to know whether the count exceeds it).
fn off_smooth_background(g: &Grey, tol: u8, stop: u64) -> u64 {
    let (w, h) = (g.width as usize, g.height as usize);
    if w < BLOCK || h < BLOCK {
        return u64::MAX;
    }
    let (bw, bh) = (w.div_ceil(BLOCK), h.div_ceil(BLOCK));
    let mut med = vec![0f32; bw * bh];
    let mut buf = Vec::with_capacity(BLOCK * BLOCK);
    for by in 0..bh {
        for bx in 0..bw {
            buf.clear();
            for y in by * BLOCK..((by + 1) * BLOCK).min(h) {
                buf.extend_from_slice(
                    &g.data[y * w + bx * BLOCK..y * w + ((bx + 1) * BLOCK).min(w)],
                );
            }
            let mid = buf.len() / 2;
            med[by * bw + bx] = *buf.select_nth_unstable(mid).1 as f32;
        }
    }
    // block centres at (b + 0.5) * BLOCK - 0.5; clamp outside the outermost centres
    let coord = |p: usize, nb: usize| -> (usize, usize, f32) {
        let f = ((p as f32 + 0.5) / BLOCK as f32 - 0.5).clamp(0.0, (nb - 1) as f32);
        let i = (f.floor() as usize).min(nb - 1);
        (i, (i + 1).min(nb - 1), f - i as f32)
    };
    let xs: Vec<(usize, usize, f32)> = (0..w).map(|x| coord(x, bw)).collect();
    let tol = tol as f32 + 0.5;
    let mut n = 0u64;
    // content as large as a block moves its median: a block whose median stands out from the
    // mean of its two opposite neighbours along every axis that has both is content as a whole
    // (on a gradient, or a vignette, the median lies on that mean)
    for by in 0..bh {
        for bx in 0..bw {
            let m = med[by * bw + bx];
            let mut dev = f32::INFINITY;
            if bx > 0 && bx + 1 < bw {
                dev = dev.min((m - (med[by * bw + bx - 1] + med[by * bw + bx + 1]) / 2.0).abs());
            }
            if by > 0 && by + 1 < bh {
                dev =
                    dev.min((m - (med[(by - 1) * bw + bx] + med[(by + 1) * bw + bx]) / 2.0).abs());
            }
            if dev.is_finite() && dev > tol {
                n += (BLOCK * BLOCK) as u64;
            }
        }
    }
    for y in 0..h {
        let (y0, y1, fy) = coord(y, bh);
        let row = &g.data[y * w..(y + 1) * w];
        for (x, &v) in row.iter().enumerate() {
            let (x0, x1, fx) = xs[x];
            let top = med[y0 * bw + x0] * (1.0 - fx) + med[y0 * bw + x1] * fx;
            let bot = med[y1 * bw + x0] * (1.0 - fx) + med[y1 * bw + x1] * fx;
            let bg = top * (1.0 - fy) + bot * fy;
            if (v as f32 - bg).abs() > tol {
                n += 1;
            }
        }
        if n > stop {
            return n;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Grey {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.push(f(x, y));
            }
        }
        Grey {
            width: w,
            height: h,
            data,
        }
    }

    #[test]
    fn gradients_are_blank_but_a_small_mark_on_them_is_not() {
        let p = BlankParams::default();
        let ramp = |x: u32, y: u32| ((x + y) * 255 / (1024 + 768)) as u8;
        let s = blank_stats(&grey(1024, 768, ramp), &p);
        assert!(s.blank, "{s:?}");
        assert!(s.entropy > 7.0, "{s:?}");
        // a 24x24 icon on the same ramp
        let icon = |x: u32, y: u32| {
            if (500..524).contains(&x) && (300..324).contains(&y) {
                255 - ramp(x, y)
            } else {
                ramp(x, y)
            }
        };
        let s = blank_stats(&grey(1024, 768, icon), &p);
        assert!(!s.blank, "{s:?}");
        // low contrast (+16 levels) stripes on a flat grey
        let stripes = |x: u32, y: u32| {
            if (100..220).contains(&x) && (100..160).contains(&y) && (y / 7).is_multiple_of(2) {
                96
            } else {
                80
            }
        };
        let s = blank_stats(&grey(1024, 768, stripes), &p);
        assert!(!s.blank, "{s:?}");
    }
}
