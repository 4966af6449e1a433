//! Synthetic activity timing: beacons (with every variation the detector must survive) and the
//! benign activity they hide in. Used both to train the CNN (timestamps only) and by the Zeek
//! dataset generator ([`crate::generate`]). All times are seconds from the start of the day.

use crate::rng::Rng;

pub const DAY: f64 = 86_400.0;

/// Exponential back-off: the sleep grows by `factor` after each check-in without tasking, up to
/// `max_period`; a check-in that gets tasking (probability `reset_p`) resets it to the base period.
/// With `outages`, the growth is driven by the C2 being unreachable instead: a check-in inside an
/// outage (start, end) fails and grows the sleep, the first one after it succeeds and resets it.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub factor: f64,
    pub max_period: f64,
    pub reset_p: f64,
    pub outages: Vec<(f64, f64)>,
}

/// A beacon's timing.
#[derive(Debug, Clone)]
pub struct BeaconSpec {
    pub period: f64,
    /// Jitter as a fraction of the period (0.5 = up to ±50 %).
    pub jitter: f64,
    /// Cobalt-Strike style: jitter only shortens the sleep.
    pub jitter_down_only: bool,
    /// Network latency noise, uniform in ±latency seconds.
    pub latency: f64,
    /// Connections per check-in, uniform in [burst.0, burst.1].
    pub burst: (u32, u32),
    /// Largest spacing between connections of one check-in (seconds).
    pub burst_spread: f64,
    pub start: f64,
    pub end: f64,
    /// Periods of silence (start, end).
    pub gaps: Vec<(f64, f64)>,
    pub backoff: Option<Backoff>,
}

impl BeaconSpec {
    pub fn simple(period: f64) -> BeaconSpec {
        BeaconSpec {
            period,
            jitter: 0.0,
            jitter_down_only: false,
            latency: 2.0,
            burst: (1, 1),
            burst_spread: 1.0,
            start: 0.0,
            end: DAY,
            gaps: Vec::new(),
            backoff: None,
        }
    }
}

/// Check-in times of a beacon (each check-in may expand to a burst of connections).
/// Returns (connection time, index of its check-in).
pub fn beacon_times(rng: &mut Rng, spec: &BeaconSpec) -> Vec<(f64, u32)> {
    let mut out = Vec::new();
    let mut t = spec.start + rng.range(0.0, spec.period.min(spec.end - spec.start).max(1.0));
    let mut current = spec.period;
    let mut checkin = 0u32;
    while t < spec.end {
        let at = t;
        let in_gap = spec.gaps.iter().any(|&(a, b)| t >= a && t < b);
        if !in_gap {
            let base = t + rng.range(-spec.latency, spec.latency);
            let n = rng.int(spec.burst.0 as u64, spec.burst.1.max(spec.burst.0) as u64) as u32;
            let mut bt = base;
            for i in 0..n {
                if i > 0 {
                    bt += rng.range(0.05, spec.burst_spread.max(0.06));
                }
                if (0.0..DAY).contains(&bt) {
                    out.push((bt, checkin));
                }
            }
            checkin += 1;
        }
        let j = if spec.jitter > 0.0 {
            if spec.jitter_down_only {
                -rng.range(0.0, spec.jitter)
            } else {
                rng.range(-spec.jitter, spec.jitter)
            }
        } else {
            0.0
        };
        let sleep = current * (1.0 + j);
        t += sleep.max(1.0);
        if let Some(b) = &spec.backoff {
            let reset = if b.outages.is_empty() {
                rng.bool(b.reset_p)
            } else {
                !b.outages.iter().any(|&(a, e)| at >= a && at < e)
            };
            if reset {
                current = spec.period;
            } else {
                current = (current * b.factor).min(b.max_period);
            }
        }
        // skip over gaps quickly
        if let Some(&(_, gend)) = spec.gaps.iter().find(|&&(a, b)| t >= a && t < b) {
            t = gend + rng.range(0.0, spec.period);
        }
    }
    out
}

/// Poisson process with the given mean interval on [start, end).
pub fn poisson(rng: &mut Rng, mean: f64, start: f64, end: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut t = start + rng.exp(mean);
    while t < end {
        out.push(t);
        t += rng.exp(mean);
    }
    out
}

/// Relative activity of an office host by hour of day (peaks 9–17 h).
pub fn diurnal_weight(hour: f64) -> f64 {
    if (8.0..18.0).contains(&hour) {
        1.0
    } else if (7.0..20.0).contains(&hour) {
        0.4
    } else {
        0.05
    }
}

/// Human browsing towards one site: sessions at diurnally weighted times, each a handful of
/// connections a few seconds apart (page + resources), sometimes several page views.
pub fn browsing_sessions(rng: &mut Rng, sessions: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..sessions {
        let t0 = loop {
            let t = rng.range(0.0, DAY);
            if rng.f64() < diurnal_weight(t / 3600.0) {
                break t;
            }
        };
        let views = 1 + rng.exp(1.5) as usize;
        let mut t = t0;
        for _ in 0..views {
            let conns = 1 + rng.exp(3.0) as usize;
            for _ in 0..conns {
                out.push(t);
                t += rng.exp(0.4);
            }
            t += rng.exp(40.0) + 2.0;
        }
    }
    out.retain(|t| (0.0..DAY).contains(t));
    out
}

/// Random benign activity of the kinds the CNN must reject (used for training negatives). The
/// mix deliberately includes many *short* sequences (a handful of browsing sessions), because
/// most real keys are short and a network trained only on long random sequences calls every
/// short one a beacon.
pub fn random_activity(rng: &mut Rng) -> Vec<f64> {
    let kind = rng.int(0, 19);
    let mut v = match kind {
        // a few browsing sessions (the most common benign key)
        0..=4 => {
            let n = rng.int(1, 10) as usize;
            browsing_sessions(rng, n)
        }
        // a lot of browsing
        5 | 6 => {
            let n = rng.int(10, 80) as usize;
            browsing_sessions(rng, n)
        }
        // steady Poisson service, whole day
        7..=9 => {
            let mean = rng.log_range(5.0, 4.0 * 3600.0);
            poisson(rng, mean, 0.0, DAY)
        }
        // Poisson over part of the day
        10 | 11 => {
            let start = rng.range(0.0, DAY * 0.8);
            let end = rng.range(start + 1800.0, DAY);
            let mean = rng.log_range(5.0, (end - start) / 6.0);
            poisson(rng, mean, start, end)
        }
        // a few uniform random events
        12 | 13 => {
            let n = rng.int(5, 40) as usize;
            let start = rng.range(0.0, DAY * 0.5);
            let end = rng.range(start + 600.0, DAY);
            (0..n).map(|_| rng.range(start, end)).collect()
        }
        // many uniform random events
        14 => {
            let n = rng.int(40, 1500) as usize;
            (0..n).map(|_| rng.range(0.0, DAY)).collect()
        }
        // heavy-tailed (Pareto) inter-arrival times
        15 | 16 => {
            let scale = rng.log_range(2.0, 600.0);
            let alpha = rng.range(0.8, 2.5);
            let mut out = Vec::new();
            let mut t = rng.range(0.0, 3600.0);
            while t < DAY && out.len() < 20_000 {
                out.push(t);
                t += scale / (1.0 - rng.f64()).powf(1.0 / alpha);
            }
            out
        }
        // diurnal Poisson (rate follows office hours)
        _ => {
            let mean = rng.log_range(10.0, 3600.0);
            let mut out = Vec::new();
            let mut t = 0.0;
            while t < DAY {
                t += rng.exp(mean);
                if rng.f64() < diurnal_weight(t / 3600.0) && t < DAY {
                    out.push(t);
                }
            }
            out
        }
    };
    v.sort_by(f64::total_cmp);
    v
}

/// A random beacon timing as used for training, returning the spec too.
pub fn random_beacon_spec(rng: &mut Rng) -> BeaconSpec {
    let period = rng.log_range(10.0, 4.0 * 3600.0);
    let mut spec = BeaconSpec::simple(period);
    spec.jitter = if rng.bool(0.3) {
        0.0
    } else {
        rng.range(0.02, 0.6)
    };
    spec.jitter_down_only = rng.bool(0.3);
    spec.latency = rng.range(0.0, 2.0);
    if rng.bool(0.35) {
        spec.burst = (2, rng.int(2, 5) as u32);
        spec.burst_spread = rng.range(0.1, 1.5);
    }
    if rng.bool(0.3) {
        // partial day
        let len = rng.range((period * 12.0).min(DAY * 0.5), DAY);
        spec.start = rng.range(0.0, DAY - len);
        spec.end = spec.start + len;
    }
    if rng.bool(0.3) {
        for _ in 0..rng.int(1, 3) {
            let a = rng.range(0.0, DAY);
            let len = rng.range(1800.0, 4.0 * 3600.0);
            spec.gaps.push((a, a + len));
        }
    }
    if rng.bool(0.15) {
        spec.backoff = Some(Backoff {
            factor: rng.range(1.3, 2.0),
            max_period: period * rng.range(4.0, 32.0),
            reset_p: rng.range(0.05, 0.3),
            outages: Vec::new(),
        });
        spec.jitter = spec.jitter.min(0.2);
    }
    spec
}

/// Merge `extra` (benign) events into a beacon's times.
pub fn mix(mut a: Vec<f64>, extra: Vec<f64>) -> Vec<f64> {
    a.extend(extra);
    a.sort_by(f64::total_cmp);
    a
}
