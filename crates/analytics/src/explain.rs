//! `beacons explain KEY LOG...`: the evidence behind one finding, for a person — the interval
//! histogram (log-spaced bins), the timeline (check-ins per 15 min over the day) and the
//! finding's own evidence fields, as text and as a PNG.
//!
//! KEY is `SRC -> DST` (as the table prints it), optionally prefixed by the log kind
//! (`conn 10.1.0.7 -> 203.0.113.9`, `dns 10.1.0.7 -> evil.example`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::report::Finding;
use crate::zeek::{self, LogKind, Record};
use crate::{AnalyticsError, BeaconConfig, Scorer};

/// A parsed KEY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub kind: Option<LogKind>,
    pub src: String,
    pub dst: String,
}

impl KeySpec {
    pub fn parse(s: &str) -> Result<KeySpec, AnalyticsError> {
        let bad = || AnalyticsError::Config(format!("key {s:?}: expected [KIND] SRC -> DST"));
        let (left, dst) = s.split_once("->").ok_or_else(bad)?;
        let mut words = left.split_whitespace();
        let (kind, src) = match (words.next(), words.next(), words.next()) {
            (Some(src), None, None) => (None, src),
            (Some(k), Some(src), None) => {
                // `dns` as the table prints it, or `[dns]` as the usage line writes it
                let kind = match k.trim_start_matches('[').trim_end_matches(']') {
                    "conn" => LogKind::Conn,
                    "dns" => LogKind::Dns,
                    "http" => LogKind::Http,
                    "ssl" => LogKind::Ssl,
                    _ => return Err(bad()),
                };
                (Some(kind), src)
            }
            _ => return Err(bad()),
        };
        let dst = dst.trim();
        if dst.is_empty() {
            return Err(bad());
        }
        Ok(KeySpec {
            kind,
            src: src.to_string(),
            dst: dst.to_string(),
        })
    }

    fn matches(&self, r: &Record<'_>) -> bool {
        if self.kind.is_some_and(|k| k != r.kind) {
            return false;
        }
        // cheap reject first: the source
        let mut buf = [0u8; 48];
        let src = {
            use std::io::Write;
            let mut c = std::io::Cursor::new(&mut buf[..]);
            let _ = write!(c, "{}", r.src);
            let n = c.position() as usize;
            std::str::from_utf8(&buf[..n]).unwrap_or("").to_string()
        };
        if src != self.src {
            return false;
        }
        match (r.kind, r.name) {
            (LogKind::Conn, _) | (_, None) => r.dst.to_string() == self.dst,
            (LogKind::Dns, Some(n)) => {
                let want = self.dst.strip_suffix(" (NXDOMAIN)");
                match want {
                    Some(w) => r.nxdomain && n == w,
                    None => !r.nxdomain && n == self.dst,
                }
            }
            (_, Some(n)) => n == self.dst,
        }
    }
}

/// Everything `explain` shows.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub key: KeySpec,
    /// Event times (epoch seconds), sorted.
    pub events: Vec<f64>,
    /// Check-ins (bursts collapsed), epoch seconds.
    pub checkins: Vec<f64>,
    pub intervals: Vec<f64>,
    /// (lower edge s, upper edge s, count), log-spaced.
    pub histogram: Vec<(f64, f64, u32)>,
    /// Check-ins per 15-minute slot, from the first event's day start (UTC).
    pub timeline: Vec<u32>,
    pub timeline_start: f64,
    /// The scored finding(s) of this key (one per 24 h window).
    pub findings: Vec<Finding>,
}

/// Read `logs`, score them, and collect the evidence for `key`.
pub fn explain(
    key: &KeySpec,
    logs: &[PathBuf],
    cfg: &BeaconConfig,
) -> Result<Explanation, AnalyticsError> {
    let mut scorer = Scorer::new(cfg)?;
    let mut events: Vec<f64> = Vec::new();
    for p in logs {
        scorer.add_path(p)?;
        let mut visit = |r: &Record<'_>| {
            if key.matches(r) {
                events.push(r.ts_us as f64 / 1e6);
            }
        };
        zeek::read_path(p, &mut visit)?;
    }
    let report = scorer.finish_all()?;
    let findings: Vec<Finding> = report
        .findings
        .into_iter()
        .filter(|f| f.src == key.src && f.dst == key.dst && key.kind.is_none_or(|k| k == f.kind))
        .collect();
    Ok(build(key.clone(), events, findings, cfg.burst_gap))
}

/// The pure part: histogram and timeline from event times.
pub fn build(key: KeySpec, mut events: Vec<f64>, findings: Vec<Finding>, gap: f64) -> Explanation {
    events.sort_by(f64::total_cmp);
    let mut checkins: Vec<f64> = Vec::new();
    let mut prev = f64::NEG_INFINITY;
    for &t in &events {
        if t - prev >= gap {
            checkins.push(t);
        }
        prev = t;
    }
    let intervals: Vec<f64> = checkins.windows(2).map(|w| w[1] - w[0]).collect();
    // log-spaced bins from 1 s to 1 day, 4 per decade
    let mut histogram = Vec::new();
    let mut lo = 1.0f64;
    while lo < 86_400.0 * 1.5 {
        let hi = lo * 10f64.powf(0.25);
        let n = intervals
            .iter()
            .filter(|&&x| x >= lo && x < hi || (lo == 1.0 && x < 1.0))
            .count() as u32;
        histogram.push((lo, hi, n));
        lo = hi;
    }
    let timeline_start = checkins
        .first()
        .map(|t| (t / 86_400.0).floor() * 86_400.0)
        .unwrap_or(0.0);
    let slots = checkins
        .last()
        .map(|t| (((t - timeline_start) / 900.0) as usize + 1).max(96))
        .unwrap_or(96);
    let mut timeline = vec![0u32; slots];
    for &t in &checkins {
        timeline[((t - timeline_start) / 900.0) as usize] += 1;
    }
    Explanation {
        key,
        events,
        checkins,
        intervals,
        histogram,
        timeline,
        timeline_start,
        findings,
    }
}

fn human(s: f64) -> String {
    if s >= 3600.0 {
        format!("{:.1}h", s / 3600.0)
    } else if s >= 60.0 {
        format!("{:.1}m", s / 60.0)
    } else {
        format!("{s:.1}s")
    }
}

/// Text rendering: evidence, histogram, timeline.
pub fn format_text(e: &Explanation) -> String {
    let mut s = String::new();
    let k = &e.key;
    let _ = writeln!(
        s,
        "{}{} -> {}: {} events, {} check-ins",
        k.kind
            .map(|k| format!("{} ", k.as_str()))
            .unwrap_or_default(),
        k.src,
        k.dst,
        e.events.len(),
        e.checkins.len()
    );
    if e.findings.is_empty() {
        let _ = writeln!(
            s,
            "not scored (fewer than the minimum check-ins in every window)"
        );
    }
    for f in &e.findings {
        s.push_str(&crate::report::format_evidence(f));
    }
    let _ = writeln!(
        s,
        "\ninterval histogram (check-in to check-in, log-spaced bins):"
    );
    let max = e.histogram.iter().map(|h| h.2).max().unwrap_or(0).max(1);
    let first = e.histogram.iter().position(|h| h.2 > 0).unwrap_or(0);
    let last = e.histogram.iter().rposition(|h| h.2 > 0).unwrap_or(0);
    for &(lo, hi, n) in &e.histogram[first..=last.max(first)] {
        let bar = "#".repeat(((n as f64 / max as f64) * 50.0).ceil() as usize);
        let _ = writeln!(s, "  {:>7} - {:<7} {:>5} {bar}", human(lo), human(hi), n);
    }
    let _ = writeln!(
        s,
        "\ntimeline (check-ins per 15 min; one row per 6 h; . = none, 1-9, * = 10+):"
    );
    for (row, chunk) in e.timeline.chunks(24).enumerate() {
        let t0 = e.timeline_start + row as f64 * 6.0 * 3600.0;
        let line: String = chunk
            .iter()
            .map(|&n| match n {
                0 => '.',
                1..=9 => char::from(b'0' + n as u8),
                _ => '*',
            })
            .collect();
        let _ = writeln!(s, "  {} |{line}|", &crate::report::utc(t0)[..16]);
    }
    s
}

/// PNG rendering (800 × 420): the histogram on top (bars over log-spaced bins, ticks at 1 s,
/// 10 s, 1 min, 10 min, 1 h, 1 d), the timeline below (one column per 15 min, a tick per hour,
/// a taller tick every 6 h). Labels are drawn with a small built-in bitmap font.
pub fn write_png(e: &Explanation, path: &Path) -> Result<(), AnalyticsError> {
    const W: usize = 800;
    const H: usize = 420;
    let mut px = vec![255u8; W * H * 3];
    let mut canvas = Canvas {
        px: &mut px,
        w: W,
        h: H,
    };
    // --- histogram panel: y 30..200 ---
    let (hx0, hx1, hy0, hy1) = (60usize, 780usize, 30usize, 200usize);
    canvas.text(10, 8, "INTERVALS BETWEEN CHECK-INS (LOG SCALE)", [0, 0, 0]);
    canvas.rect(hx0, hy1, hx1 - hx0, 1, [0, 0, 0]);
    let nb = e.histogram.len().max(1);
    let bw = (hx1 - hx0) / nb;
    let max = e.histogram.iter().map(|h| h.2).max().unwrap_or(0).max(1);
    for (i, &(_, _, n)) in e.histogram.iter().enumerate() {
        let hgt = ((n as f64 / max as f64) * (hy1 - hy0) as f64).round() as usize;
        if hgt > 0 {
            canvas.rect(
                hx0 + i * bw + 1,
                hy1 - hgt,
                bw.saturating_sub(2).max(1),
                hgt,
                [40, 90, 200],
            );
        }
    }
    canvas.text(10, hy0, &max.to_string(), [0, 0, 0]);
    canvas.text(10, hy1 - 6, "0", [0, 0, 0]);
    for (secs, lab) in [
        (1.0, "1 SEC"),
        (10.0, "10 SEC"),
        (60.0, "1 MIN"),
        (600.0, "10 MIN"),
        (3600.0, "1 H"),
        (86_400.0, "1 DAY"),
    ] {
        let pos = (secs as f64).log10() * 4.0; // 4 bins per decade from 1 s
        let x = hx0 + (pos * bw as f64) as usize;
        if x < W {
            canvas.rect(x, hy1, 1, 6, [0, 0, 0]);
            canvas.text(x.saturating_sub(4), hy1 + 9, lab, [0, 0, 0]);
        }
    }
    // --- timeline panel: y 260..380 ---
    let (tx0, tx1, ty0, ty1) = (60usize, 780usize, 260usize, 380usize);
    canvas.text(10, 238, "CHECK-INS PER 15 MIN (UTC DAY)", [0, 0, 0]);
    canvas.rect(tx0, ty1, tx1 - tx0, 1, [0, 0, 0]);
    let slots = e.timeline.len().max(1);
    let sw = ((tx1 - tx0) as f64 / slots as f64).max(1.0);
    let tmax = e.timeline.iter().copied().max().unwrap_or(0).max(1);
    for (i, &n) in e.timeline.iter().enumerate() {
        let hgt = ((n as f64 / tmax as f64) * (ty1 - ty0) as f64).round() as usize;
        if hgt > 0 {
            let x = tx0 + (i as f64 * sw) as usize;
            canvas.rect(
                x,
                ty1 - hgt,
                (sw as usize).saturating_sub(1).max(1),
                hgt,
                [200, 60, 40],
            );
        }
    }
    canvas.text(10, ty0, &tmax.to_string(), [0, 0, 0]);
    for h in 0..=(slots / 4) {
        let x = tx0 + (h as f64 * 4.0 * sw) as usize;
        if x > tx1 {
            break;
        }
        let tall = h % 6 == 0;
        canvas.rect(x, ty1, 1, if tall { 8 } else { 4 }, [0, 0, 0]);
        if tall {
            canvas.text(
                x.saturating_sub(4),
                ty1 + 11,
                &format!("{}H", h % 24),
                [0, 0, 0],
            );
        }
    }
    let f = std::fs::File::create(path).map_err(|e| AnalyticsError::io(path, e))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), W as u32, H as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc
        .write_header()
        .map_err(|e| AnalyticsError::io(path, std::io::Error::other(e)))?;
    w.write_image_data(&px)
        .map_err(|e| AnalyticsError::io(path, std::io::Error::other(e)))?;
    Ok(())
}

struct Canvas<'a> {
    px: &'a mut [u8],
    w: usize,
    h: usize,
}

impl Canvas<'_> {
    fn rect(&mut self, x: usize, y: usize, w: usize, h: usize, c: [u8; 3]) {
        for yy in y..(y + h).min(self.h) {
            for xx in x..(x + w).min(self.w) {
                let i = (yy * self.w + xx) * 3;
                self.px[i..i + 3].copy_from_slice(&c);
            }
        }
    }

    /// 3×5 glyphs scaled ×2.
    fn text(&mut self, x: usize, y: usize, s: &str, c: [u8; 3]) {
        let mut cx = x;
        for ch in s.chars() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        self.rect(cx + col * 2, y + row * 2, 2, 2, c);
                    }
                }
            }
            cx += 8;
        }
    }
}

/// 3×5 bitmap glyphs (rows top to bottom, 3 bits each, MSB left).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [7, 5, 5, 7, 1],
        'R' => [7, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        ':' => [0, 2, 0, 2, 0],
        '(' => [1, 2, 2, 2, 1],
        ')' => [4, 2, 2, 2, 4],
        '/' => [1, 1, 2, 4, 4],
        '%' => [5, 1, 2, 4, 5],
        _ => [0, 0, 0, 0, 0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parses_with_and_without_kind() {
        let k = KeySpec::parse("dns 10.1.0.2 -> evil.example (NXDOMAIN)").unwrap();
        assert_eq!(k.kind, Some(LogKind::Dns));
        assert_eq!(k.dst, "evil.example (NXDOMAIN)");
        let k = KeySpec::parse("10.1.0.2->1.2.3.4").unwrap();
        assert_eq!((k.kind, k.src.as_str()), (None, "10.1.0.2"));
        assert!(KeySpec::parse("10.1.0.2").is_err());
        assert!(KeySpec::parse("bogus 10.1.0.2 -> x").is_err());
        let k = KeySpec::parse("[ssl] 10.1.0.2 -> c2.example").unwrap();
        assert_eq!(k.kind, Some(LogKind::Ssl));
    }

    #[test]
    fn histogram_and_timeline_of_a_periodic_key() {
        // every 300 s with a burst of 3, for 6 hours from 02:00 UTC
        let mut ev = Vec::new();
        for i in 0..72 {
            let t = 86_400.0 * 100.0 + 7200.0 + i as f64 * 300.0;
            ev.extend([t, t + 0.3, t + 0.6]);
        }
        let k = KeySpec::parse("1.1.1.1 -> 2.2.2.2").unwrap();
        let e = build(k, ev, Vec::new(), 2.0);
        assert_eq!(e.checkins.len(), 72);
        let full: Vec<_> = e.histogram.iter().filter(|h| h.2 > 0).collect();
        assert_eq!(full.len(), 1, "one bin holds every 300 s interval");
        assert!(full[0].0 <= 300.0 && full[0].1 > 300.0);
        assert_eq!(full[0].2, 71);
        // 3 check-ins per 15 min between slot 8 (02:00) and slot 31
        assert_eq!(e.timeline[7], 0);
        assert_eq!(e.timeline[8], 3);
        assert_eq!(e.timeline[31], 3);
        assert_eq!(e.timeline[32], 0);
        let text = format_text(&e);
        assert!(text.contains("72 check-ins"), "{text}");
        assert!(text.contains("..333"), "{text}");
    }
}
