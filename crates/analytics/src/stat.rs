//! A RITA-style statistical beacon scorer.
//!
//! Like RITA it scores the regularity of the check-in intervals and of the sizes from their
//! Bowley skew and median absolute deviation about the median (MADM), the connection count and
//! the spread of the connections over time; each sub-score is in [0, 1] and they are averaged.

use serde::{Deserialize, Serialize};

use crate::features::quartiles;

/// Sub-scores and estimates of one sequence.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct StatScore {
    /// Overall statistical score in [0, 1].
    pub score: f32,
    pub ts_skew: f32,
    pub ts_madm: f32,
    pub count: f32,
    pub spread: f32,
    /// Size regularity (None when the log has no sizes, e.g. dns/ssl).
    pub size: Option<f32>,
    /// Median interval between check-ins, seconds.
    pub period: f32,
    /// Interquartile range of the intervals relative to the median (≈ the jitter fraction).
    pub jitter: f32,
    /// Fraction of consecutive intervals that stay flat or grow by at most ×2.1 (ratio
    /// 0.82–2.1): ≈ 1 for a fixed period and for exponential back-off sleepers (ramps and
    /// plateaus, rare resets), ≈ 0.3 for a Poisson process.
    pub growth: f32,
    /// Back-off ladder score ([`ladder`]): share of consecutive check-in intervals explained
    /// as flat, one multiplicative back-off step, or a reset to the base sleep; ≈ 1 for back-off
    /// sleepers (and fixed periods), ≈ 0.35 for a Poisson process.
    pub ladder: f32,
    /// The back-off detector's score in [0, 1] ([`backoff`]): how far above chance a ladder
    /// explains the steps, given at least three back-off steps.
    pub backoff: f32,
}

fn madm(sorted: &[f32], med: f32, scratch: &mut Vec<f32>) -> f32 {
    scratch.clear();
    scratch.extend(sorted.iter().map(|x| (x - med).abs()));
    let mid = scratch.len() / 2;
    if scratch.is_empty() {
        return 0.0;
    }
    *scratch.select_nth_unstable_by(mid, f32::total_cmp).1
}

fn skew_score(q1: f32, q2: f32, q3: f32) -> f32 {
    let den = q3 - q1;
    if den <= f32::EPSILON {
        1.0
    } else {
        1.0 - ((q1 + q3 - 2.0 * q2) / den).abs().min(1.0)
    }
}

/// Score check-in `times` (sorted seconds), their `intervals`, and per check-in sizes
/// (`sizes` empty when unknown). `window` is the analysis window length in seconds.
pub fn score(
    times: &[f64],
    intervals: &[f32],
    sizes: &[f32],
    window: f64,
    scratch: &mut Vec<f32>,
) -> StatScore {
    if intervals.len() < 2 {
        return StatScore::default();
    }
    let mut iv = intervals.to_vec();
    iv.sort_unstable_by(f32::total_cmp);
    let (q1, q2, q3) = quartiles(&iv);
    let ts_skew = skew_score(q1, q2, q3);
    let m = madm(&iv, q2, scratch);
    let ts_madm = if q2 > 0.0 {
        (1.0 - m / q2).max(0.0)
    } else {
        0.0
    };
    // Count: relative to what the observed span could hold at this period, and absolute.
    let n = times.len() as f32;
    let count = (n.ln() / 36f32.ln()).clamp(0.0, 1.0);
    // Spread: connections evenly spread over the active span (24 buckets), RITA v5 style.
    let first = times[0];
    let last = *times.last().unwrap_or(&first);
    let span = (last - first).max(1.0);
    let mut buckets = [0u32; 24];
    for &t in times {
        let b = (((t - first) / span) * 24.0).min(23.0) as usize;
        buckets[b] += 1;
    }
    let mean = n / 24.0;
    let var = buckets
        .iter()
        .map(|&c| (c as f32 - mean).powi(2))
        .sum::<f32>()
        / 24.0;
    let cv = var.sqrt() / mean.max(1e-6);
    let expected_cv = if n >= 24.0 {
        0.0
    } else {
        (24.0 / n - 1.0).sqrt()
    };
    let spread_even = (1.0 - (cv - expected_cv).max(0.0)).max(0.0);
    let coverage = (span / window).min(1.0) as f32;
    let spread = spread_even * (0.5 + 0.5 * coverage);
    let size = if sizes.len() >= 2 {
        let mut s = sizes.to_vec();
        s.sort_unstable_by(f32::total_cmp);
        let (a, b, c) = quartiles(&s);
        let sk = skew_score(a, b, c);
        let sm = madm(&s, b, scratch);
        let mad = if b > 0.0 {
            (1.0 - sm / b).max(0.0)
        } else if sm == 0.0 {
            1.0
        } else {
            0.0
        };
        let small = 1.0 - (b / 65_535.0).min(1.0);
        Some((sk + mad + small) / 3.0)
    } else {
        None
    };
    // shrunk towards the Poisson level (0.3) when there are few intervals
    let growth = (intervals
        .windows(2)
        .filter(|w| w[0] > 0.0 && w[1] > 0.0 && (0.82..=2.1).contains(&(w[1] / w[0])))
        .count() as f32
        + 0.3 * 8.0)
        / (intervals.len() - 1 + 8) as f32;
    let lad = ladder(intervals);
    let ts = (ts_skew + ts_madm + count + spread) / 4.0;
    let score = match size {
        Some(s) => 0.7 * ts + 0.3 * s,
        None => ts,
    };
    StatScore {
        score,
        ts_skew,
        ts_madm,
        count,
        spread,
        size,
        period: q2,
        jitter: if q2 > 0.0 {
            ((q3 - q1) / q2).min(10.0)
        } else {
            0.0
        },
        growth,
        ladder: lad.score(),
        backoff: backoff(intervals),
    }
}

/// Tolerance on log-interval steps (±35 %: absorbs jitter up to ≈ ±20 % on both intervals).
const LADDER_TOL: f32 = 0.3;
/// What a Poisson process scores; short sequences are shrunk towards it.
const LADDER_PRIOR: f32 = 0.35;
const LADDER_SHRINK: f32 = 8.0;

/// How a sequence of check-in intervals fits a back-off ladder (see [`ladder`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ladder {
    /// Steps between consecutive intervals.
    pub steps: u32,
    /// Steps explained as flat, one back-off step or a reset to the base level.
    pub explained: u32,
    /// Steps explained as one back-off step (a rise by the estimated factor).
    pub rises: u32,
}

impl Ladder {
    /// Share of steps explained, shrunk towards the Poisson level for short sequences.
    pub fn score(&self) -> f32 {
        (self.explained as f32 + LADDER_PRIOR * LADDER_SHRINK) / (self.steps as f32 + LADDER_SHRINK)
    }
}

/// Fit check-in intervals (seconds) to a back-off ladder.
///
/// A back-off sleeper multiplies its sleep by a factor (1.3–3) after each unanswered check-in,
/// up to a cap, and drops back to its base sleep after a success. In log-interval space that is
/// a piecewise-linear ladder: consecutive steps are ≈ 0 (plateau, cap, fixed period), ≈ ln(factor)
/// (one back-off step) or a drop back to the base level (reset). A step is explained when it is
/// one of these (±0.3 in log space), with the factor estimated as the median of the moderate
/// rises and the base level as the 10th percentile of the log intervals. Only ratios of
/// intervals matter, so the fit is invariant to scaling all intervals (any base period) and to
/// the start time. Poisson and browsing activity explain about a third of their steps by chance.
pub fn ladder(intervals: &[f32]) -> Ladder {
    let l: Vec<f32> = intervals.iter().map(|&x| x.max(1.0).ln()).collect();
    ladder_log(&l, LADDER_TOL)
}

/// [`ladder`] on log intervals with a given tolerance.
fn ladder_log(l: &[f32], tol: f32) -> Ladder {
    let n = l.len();
    if n < 3 {
        return Ladder {
            steps: 0,
            explained: 0,
            rises: 0,
        };
    }
    let mut ups: Vec<f32> = l
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| (0.2..=1.2).contains(d))
        .collect();
    let g = if ups.len() >= 2 {
        let mid = ups.len() / 2;
        Some(*ups.select_nth_unstable_by(mid, f32::total_cmp).1)
    } else {
        None
    };
    let mut sorted = l.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let base = sorted[n / 10];
    let (mut explained, mut rises) = (0u32, 0u32);
    for w in l.windows(2) {
        let d = w[1] - w[0];
        if d.abs() <= tol || (d < -tol && (w[1] - base).abs() <= tol) {
            explained += 1;
        } else if g.is_some_and(|g| (d - g).abs() <= tol) {
            explained += 1;
            rises += 1;
        }
    }
    Ladder {
        steps: (n - 1) as u32,
        explained,
        rises,
    }
}

/// Shuffles of the intervals forming the permutation null of [`backoff`].
const NULL_SHUFFLES: usize = 4;
/// Least excess of explained steps over the shuffled level, as a share of the steps.
const MIN_EFFECT: f32 = 0.1;

/// The back-off detector, in [0, 1]. At tolerances ±0.3, ±0.45 and ±0.6 (back-off with up to
/// 30–50 % jitter) the ladder fit in time order is tested against a *permutation* null: the
/// chance level is what the same intervals explain in shuffled order (deterministic shuffles).
/// A ladder lives in the order of the intervals; Poisson, Pareto or browsing activity has
/// exchangeable intervals and explains as much shuffled as in order, whatever its spread. A
/// tolerance counts when ≥ 3 steps are back-off rises, ≥ 75 % of the steps are explained and
/// the excess over the shuffled level is ≥ 20 % of the steps (otherwise any long sequence with
/// slowly drifting rates, like a host's DNS, passes on z alone); its one-sided z-score maps
/// to [0, 1] (z 4 → 0.5, z 5 → 0.95) and the best tolerance wins. Flat periodic sequences
/// score 0 (shuffling changes nothing): they are the other scorers' business.
pub fn backoff(intervals: &[f32]) -> f32 {
    if intervals.len() < 5 {
        return 0.0;
    }
    let l: Vec<f32> = intervals.iter().map(|&x| x.max(1.0).ln()).collect();
    let mut shuffled: Vec<Vec<f32>> = Vec::new();
    let mut best = 0.0f32;
    for tol in [LADDER_TOL, 0.45, 0.6] {
        let lad = ladder_log(&l, tol);
        let n = lad.steps as f32;
        if lad.rises < 3 || (lad.explained as f32) < 0.75 * n {
            continue;
        }
        if shuffled.is_empty() {
            let mut rng = crate::rng::Rng::new(0x001a_dde5 ^ l.len() as u64);
            for _ in 0..NULL_SHUFFLES {
                let mut s = l.clone();
                rng.shuffle(&mut s);
                shuffled.push(s);
            }
        }
        let mu = shuffled
            .iter()
            .map(|s| ladder_log(s, tol).explained as f32)
            .sum::<f32>()
            / NULL_SHUFFLES as f32;
        if (lad.explained as f32 - mu) < MIN_EFFECT * n {
            continue;
        }
        let p = (mu / n).clamp(0.05, 0.95);
        let z = (lad.explained as f32 - mu) / (n * p * (1.0 - p)).sqrt();
        best = best.max(1.0 / (1.0 + (-3.0 * (z - 4.0)).exp()));
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn run(times: &[f64]) -> StatScore {
        let iv: Vec<f32> = times.windows(2).map(|w| (w[1] - w[0]) as f32).collect();
        score(times, &iv, &[], 86_400.0, &mut Vec::new())
    }

    #[test]
    fn periodic_beats_poisson() {
        let periodic: Vec<f64> = (0..200).map(|i| i as f64 * 300.0).collect();
        let mut r = Rng::new(3);
        let poisson = crate::synth::poisson(&mut r, 300.0, 0.0, 86_400.0);
        let p = run(&periodic);
        let q = run(&poisson);
        assert!(p.score > 0.9, "{p:?}");
        // RITA-style scores are lenient with Poisson traffic (its skew is small); the MADM is
        // what separates them.
        assert!(p.score - q.score > 0.2, "{p:?} {q:?}");
        assert!(q.ts_madm < 0.5, "{q:?}");
        assert!((p.period - 300.0).abs() < 1e-3);
        assert!(p.jitter < 0.01);
    }

    #[test]
    fn jitter_estimate_tracks_uniform_jitter() {
        let mut r = Rng::new(5);
        let mut t = 0.0;
        let mut times = Vec::new();
        while t < 86_400.0 {
            times.push(t);
            t += 600.0 * (1.0 + r.range(-0.3, 0.3));
        }
        let s = run(&times);
        assert!((s.jitter - 0.3).abs() < 0.08, "{s:?}");
        assert!((s.period - 600.0).abs() < 40.0, "{s:?}");
    }

    #[test]
    fn ladder_finds_back_off_sleepers_at_any_scale() {
        let mut r = Rng::new(9);
        // ×1.7 back-off from 60 s, capped at ×20, resets with p = 0.15, ±15 % jitter
        let mut iv = Vec::new();
        let mut cur: f32 = 60.0;
        for _ in 0..80 {
            iv.push(cur * (1.0 + r.range(-0.15, 0.15) as f32));
            cur = if r.bool(0.15) {
                60.0
            } else {
                (cur * 1.7).min(1200.0)
            };
        }
        let a = ladder(&iv);
        let scaled: Vec<f32> = iv.iter().map(|x| x * 37.0).collect();
        assert!(a.score() > 0.85 && backoff(&iv) > 0.9, "{a:?}");
        assert_eq!(ladder(&scaled), a);
        let poisson = crate::synth::poisson(&mut r, 300.0, 0.0, 86_400.0);
        let piv: Vec<f32> = poisson.windows(2).map(|w| (w[1] - w[0]) as f32).collect();
        let p = ladder(&piv);
        assert!(p.score() < 0.5 && backoff(&piv) < 0.1, "{p:?}");
        // 45 % jitter: found by the permutation test at a wider tolerance
        let mut iv = Vec::new();
        let mut cur: f32 = 45.0;
        for _ in 0..300 {
            iv.push(cur * (1.0 + r.range(-0.45, 0.45) as f32));
            cur = if r.bool(0.1) {
                45.0
            } else {
                (cur * 2.0).min(720.0)
            };
        }
        assert!(backoff(&iv) > 0.9, "{:?}", ladder(&iv));
        // heavy-tailed (Pareto) intervals piled up near their scale explain most steps as
        // "flat" or "reset", in any order: not a back-off
        let pareto: Vec<f32> = (0..500)
            .map(|_| 300.0 / (1.0 - r.f64() as f32).powf(1.0 / 2.5))
            .collect();
        assert!(backoff(&pareto) < 0.1, "{:?}", ladder(&pareto));
        // a fixed period is explained but is not a back-off
        let flat = ladder(&[300.0; 50]);
        assert!(
            flat.score() > 0.9 && backoff(&[300.0; 50]) == 0.0,
            "{flat:?}"
        );
    }
}
