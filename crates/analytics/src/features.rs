//! From event times to model inputs: burst collapsing, intervals, windows and their encoding.

/// Intervals per CNN window.
pub const WIN: usize = 128;
/// Input channels: interval relative to the window median, log-scaled absolute interval, mask.
pub const CHANNELS: usize = 3;
const LOG_DAY: f32 = 11.366_754; // ln(1 + 86400)
const REL_CLIP: f32 = 8.0;

/// Collapse bursts: an event closer than `gap` seconds to the previous event joins its check-in.
/// Input must be sorted. Returns the check-in times (first event of each burst) and the size of
/// the largest burst.
pub fn collapse(sorted: &[f64], gap: f64, out: &mut Vec<f64>) -> u32 {
    out.clear();
    let mut max_burst = 0u32;
    let mut cur = 0u32;
    let mut prev = f64::NEG_INFINITY;
    for &t in sorted {
        if t - prev >= gap {
            out.push(t);
            max_burst = max_burst.max(cur);
            cur = 1;
        } else {
            cur += 1;
        }
        prev = t;
    }
    max_burst.max(cur)
}

/// Intervals between consecutive check-ins, in seconds (robust to the start time by construction).
pub fn intervals(checkins: &[f64], out: &mut Vec<f32>) {
    out.clear();
    out.extend(checkins.windows(2).map(|w| (w[1] - w[0]) as f32));
}

/// Start offsets of the windows covering a sequence of `m` intervals: one window if it fits,
/// otherwise up to `max_windows` windows spread evenly over the whole sequence.
pub fn window_starts(m: usize, max_windows: usize) -> Vec<usize> {
    if m <= WIN {
        return vec![0];
    }
    let k = m.div_ceil(WIN).min(max_windows.max(1));
    if k == 1 {
        return vec![(m - WIN) / 2];
    }
    let span = m - WIN;
    (0..k).map(|i| i * span / (k - 1)).collect()
}

/// Median of a small slice (copies; fine for ≤ WIN values).
pub fn median(v: &[f32]) -> f32 {
    if v.is_empty() {
        return 0.0;
    }
    let mut c: Vec<f32> = v.to_vec();
    let mid = c.len() / 2;
    let (_, m, _) = c.select_nth_unstable_by(mid, f32::total_cmp);
    *m
}

/// Encode one window of intervals (≤ WIN) into `out` laid out as [CHANNELS][WIN].
pub fn encode_window(iv: &[f32], out: &mut [f32]) {
    debug_assert_eq!(out.len(), CHANNELS * WIN);
    out.fill(0.0);
    let n = iv.len().min(WIN);
    let med = median(&iv[..n]).max(0.5);
    for (i, &x) in iv[..n].iter().enumerate() {
        out[i] = (x / med).min(REL_CLIP) / 2.0;
        out[WIN + i] = (1.0 + x.max(0.0)).ln() / LOG_DAY;
        out[2 * WIN + i] = 1.0;
    }
}

/// Quartiles of `v` (sorted copy). Returns (q1, q2, q3).
pub fn quartiles(sorted: &[f32]) -> (f32, f32, f32) {
    let q = |p: f32| -> f32 {
        if sorted.is_empty() {
            return 0.0;
        }
        let pos = p * (sorted.len() - 1) as f32;
        let lo = pos.floor() as usize;
        let hi = pos.ceil() as usize;
        let f = pos - lo as f32;
        sorted[lo] * (1.0 - f) + sorted[hi] * f
    };
    (q(0.25), q(0.5), q(0.75))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_merges_bursts() {
        let mut out = Vec::new();
        let mb = collapse(&[0.0, 0.3, 0.6, 60.0, 60.2, 120.0], 2.0, &mut out);
        assert_eq!(out, vec![0.0, 60.0, 120.0]);
        assert_eq!(mb, 3);
    }

    #[test]
    fn windows_cover_the_sequence() {
        assert_eq!(window_starts(50, 8), vec![0]);
        assert_eq!(window_starts(256, 8), vec![0, 128]);
        let w = window_starts(10_000, 8);
        assert_eq!(w.len(), 8);
        assert_eq!(*w.last().unwrap(), 10_000 - WIN);
    }

    #[test]
    fn encoding_is_start_time_invariant_and_masked() {
        let times: Vec<f64> = (0..20).map(|i| 1000.0 + i as f64 * 60.0).collect();
        let shifted: Vec<f64> = times.iter().map(|t| t + 12_345.0).collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        intervals(&times, &mut a);
        intervals(&shifted, &mut b);
        let (mut ea, mut eb) = (vec![0.0; CHANNELS * WIN], vec![0.0; CHANNELS * WIN]);
        encode_window(&a, &mut ea);
        encode_window(&b, &mut eb);
        assert_eq!(ea, eb);
        assert_eq!(ea[2 * WIN + 18], 1.0);
        assert_eq!(ea[2 * WIN + 19], 0.0);
        assert!((ea[0] - 0.5).abs() < 1e-6);
    }
}
