//! Evaluation helpers (used by tests, benchmarks and the DESIGN table).

/// Collapses whitespace runs to one space and trims (the fixtures README's normalisation).
pub fn normalise_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Levenshtein distance over chars.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j + 1] + 1)
                .min(cur[j] + 1)
                .min(prev[j] + usize::from(ca != cb));
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// Area shared by two `[x, y, w, h]` boxes.
pub fn intersection(a: [u32; 4], b: [u32; 4]) -> u32 {
    let x0 = a[0].max(b[0]);
    let y0 = a[1].max(b[1]);
    let x1 = (a[0] + a[2]).min(b[0] + b[2]);
    let y1 = (a[1] + a[3]).min(b[1] + b[3]);
    if x1 <= x0 || y1 <= y0 {
        return 0;
    }
    (x1 - x0) * (y1 - y0)
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn iou(a: [u32; 4], b: [u32; 4]) -> f64 {
    let i = intersection(a, b) as f64;
    if i == 0.0 {
        return 0.0;
    }
    i / ((a[2] * a[3] + b[2] * b[3]) as f64 - i)
}

/// Character error rate: Levenshtein(ocr, truth) / len(truth) after whitespace normalisation.
pub fn cer(ocr: &str, truth: &str) -> f64 {
    let (o, t) = (normalise_ws(ocr), normalise_ws(truth));
    levenshtein(&o, &t) as f64 / t.chars().count().max(1) as f64
}

/// The fixtures directory: `$OVERLORD_FIXTURES` or `<crate>/../../../shared/fixtures`.
pub fn fixtures_dir() -> Result<std::path::PathBuf, String> {
    let p = match std::env::var_os("OVERLORD_FIXTURES") {
        Some(p) => std::path::PathBuf::from(p),
        None => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    };
    if p.join("screens/ground_truth.json").is_file() {
        Ok(p)
    } else {
        Err(format!(
            "fixtures not found at {} (set OVERLORD_FIXTURES to the shared/fixtures directory)",
            p.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cer_basics() {
        assert_eq!(super::levenshtein("kitten", "sitting"), 3);
        assert!((super::cer("a  b\nc", "a b c") - 0.0).abs() < 1e-12);
        assert!((super::cer("abd", "abc") - 1.0 / 3.0).abs() < 1e-12);
    }
}
