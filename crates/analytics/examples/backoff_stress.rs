//! Stress measurement of the back-off detector alone ([`overlord_analytics::stat::backoff`]) on
//! back-off schedules harder than the generator's: jitter 0–50 % (symmetric or down-only),
//! factor 1.3–2.5, caps 4–32× the base sleep, idle resets 2–30 % per check-in, or outage-driven
//! growth; against the crate's benign activity (browsing, Poisson, uniform, Pareto, diurnal).
//! Prints the share of sequences with a detector score ≥ 0.5 (the beacon threshold).
//!
//! ```text
//! cargo run --release -p overlord-analytics --example backoff_stress -- [--n 300] [--seed 99]
//! ```

use anyhow::Result;
use overlord_analytics::features;
use overlord_analytics::rng::Rng;
use overlord_analytics::stat;
use overlord_analytics::synth::{self, Backoff, BeaconSpec, DAY};

fn arg(name: &str, default: u64) -> Result<u64> {
    let a: Vec<String> = std::env::args().collect();
    match a.iter().position(|x| x == name) {
        Some(i) => Ok(a
            .get(i + 1)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default)),
        None => Ok(default),
    }
}

/// Detector score of a sorted list of event times (bursts collapsed as in scoring), or None
/// when the sequence is too short to be scored.
fn detect(times: &mut [f64]) -> Option<f32> {
    times.sort_by(f64::total_cmp);
    let (mut checkins, mut iv) = (Vec::new(), Vec::new());
    features::collapse(times, overlord_analytics::DEFAULT_BURST_GAP, &mut checkins);
    if checkins.len() < overlord_analytics::MIN_CHECKINS {
        return None;
    }
    features::intervals(&checkins, &mut iv);
    Some(stat::backoff(&iv))
}

fn main() -> Result<()> {
    let n = arg("--n", 300)? as usize;
    let mut rng = Rng::new(arg("--seed", 99)?);
    println!("back-off sleepers, share detected (detector score >= 0.5)");
    println!("jitter  symmetric  down-only  outage-driven");
    for &j in &[0.0, 0.1, 0.2, 0.3, 0.4, 0.5] {
        let mut row = Vec::new();
        for style in 0..3 {
            let (mut hit, mut tot) = (0, 0);
            for _ in 0..n {
                let period = rng.log_range(10.0, 900.0);
                let mut spec = BeaconSpec::simple(period);
                spec.jitter = j;
                spec.jitter_down_only = style == 1;
                let mut b = Backoff {
                    factor: rng.range(1.3, 2.5),
                    max_period: period * rng.range(4.0, 32.0),
                    reset_p: rng.range(0.02, 0.3),
                    outages: Vec::new(),
                };
                if style == 2 {
                    let mut t = rng.range(0.0, 6.0 * 3600.0);
                    while t < DAY {
                        let len = rng.range(1800.0, 4.0 * 3600.0);
                        b.outages.push((t, t + len));
                        t += len + rng.exp(3.0 * 3600.0);
                    }
                }
                spec.backoff = Some(b);
                let mut times: Vec<f64> = synth::beacon_times(&mut rng, &spec)
                    .into_iter()
                    .map(|(t, _)| t)
                    .collect();
                if let Some(s) = detect(&mut times) {
                    tot += 1;
                    if s >= 0.5 {
                        hit += 1;
                    }
                }
            }
            row.push(hit as f64 / tot.max(1) as f64);
        }
        println!(
            "{:>5.0} %  {:>9.3}  {:>9.3}  {:>13.3}",
            j * 100.0,
            row[0],
            row[1],
            row[2]
        );
    }
    let (mut fp, mut tot) = (0, 0);
    for _ in 0..n * 10 {
        let mut times = synth::random_activity(&mut rng);
        if let Some(s) = detect(&mut times) {
            tot += 1;
            if s >= 0.5 {
                fp += 1;
            }
        }
    }
    println!(
        "benign activity: {fp} of {tot} scored sequences flagged ({:.4})",
        fp as f64 / tot.max(1) as f64
    );
    Ok(())
}
