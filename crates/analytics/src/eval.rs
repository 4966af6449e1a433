//! Evaluation over a labelled Zeek directory (as written by [`crate::generate()`]): every log in
//! the directory is scored, findings are matched to `labels.jsonl` by (kind, src, dst), keys not
//! listed are benign ("browsing"), labelled keys that were never scored count with score 0.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::generate::Label;
use crate::score::Scorer;
use crate::{AnalyticsError, BeaconConfig};

/// Precision/recall at a threshold plus ranking metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Metrics {
    pub positives: u64,
    pub negatives: u64,
    pub threshold: f32,
    pub tp: u64,
    pub fp: u64,
    pub fn_: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub roc_auc: f64,
    pub pr_auc: f64,
}

/// Per-pattern figures: recall (malicious) or false positives (benign).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PatternMetrics {
    pub pattern: String,
    pub malicious: bool,
    pub keys: u64,
    /// Flagged at the threshold (true positives for malicious, false positives for benign).
    pub flagged: u64,
    pub rate: f64,
    /// Malicious: ROC-AUC of this pattern against all benign keys.
    pub roc_auc: Option<f64>,
    pub mean_score: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EvalReport {
    /// The combined score (what `overlord beacons` ranks by).
    pub combined: Metrics,
    /// The CNN alone and the RITA-style scorer alone, each at the same threshold.
    pub cnn_only: Metrics,
    pub stat_only: Metrics,
    pub per_pattern: Vec<PatternMetrics>,
    /// The combined score per log type (conn, dns, ...).
    #[serde(default)]
    pub per_kind: Vec<(String, Metrics)>,
    pub lines: u64,
    pub bad_lines: u64,
    pub seconds: f64,
}

/// Compute metrics from (score, is_positive) pairs.
pub fn metrics(scores: &[(f32, bool)], threshold: f32) -> Metrics {
    let mut m = Metrics {
        threshold,
        ..Default::default()
    };
    for &(s, p) in scores {
        if p {
            m.positives += 1;
            if s >= threshold {
                m.tp += 1;
            } else {
                m.fn_ += 1;
            }
        } else {
            m.negatives += 1;
            if s >= threshold {
                m.fp += 1;
            }
        }
    }
    m.precision = ratio(m.tp, m.tp + m.fp);
    m.recall = ratio(m.tp, m.positives);
    m.f1 = if m.precision + m.recall > 0.0 {
        2.0 * m.precision * m.recall / (m.precision + m.recall)
    } else {
        0.0
    };
    m.roc_auc = roc_auc(scores);
    m.pr_auc = average_precision(scores);
    m
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// ROC-AUC via the rank-sum statistic (ties count half).
pub fn roc_auc(scores: &[(f32, bool)]) -> f64 {
    let mut v: Vec<(f32, bool)> = scores.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut pos, mut neg) = (0f64, 0f64);
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // 1-based average rank
        for x in &v[i..j] {
            if x.1 {
                pos += 1.0;
                rank_sum += avg_rank;
            } else {
                neg += 1.0;
            }
        }
        i = j;
    }
    if pos == 0.0 || neg == 0.0 {
        return 0.0;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Average precision (area under the precision-recall curve, step-wise, ties grouped).
pub fn average_precision(scores: &[(f32, bool)]) -> f64 {
    let mut v: Vec<(f32, bool)> = scores.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total_pos = v.iter().filter(|x| x.1).count() as f64;
    if total_pos == 0.0 {
        return 0.0;
    }
    let (mut tp, mut fp) = (0f64, 0f64);
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            if v[j].1 {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            j += 1;
        }
        let recall = tp / total_pos;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
        i = j;
    }
    ap
}

pub(crate) fn load_labels(path: &Path) -> Result<Vec<Label>, AnalyticsError> {
    let f = std::fs::File::open(path).map_err(|e| AnalyticsError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| AnalyticsError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let l: Label = serde_json::from_str(&line).map_err(|e| AnalyticsError::Dataset {
            path: path.display().to_string(),
            detail: format!("line {}: {e}", i + 1),
        })?;
        out.push(l);
    }
    Ok(out)
}

/// Log files of a labelled directory: everything but `labels.jsonl`, sorted.
pub fn dataset_logs(dir: &Path) -> Result<Vec<PathBuf>, AnalyticsError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| AnalyticsError::io(dir, e))? {
        let p = e.map_err(|e| AnalyticsError::io(dir, e))?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_file()
            && name != "labels.jsonl"
            && (name.contains(".log") || name.contains(".json"))
        {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

/// Evaluate the default configuration on a labelled directory.
pub fn evaluate(labelled_dir: &Path) -> Result<EvalReport, AnalyticsError> {
    evaluate_with(labelled_dir, &BeaconConfig::default())
}

/// Evaluate a configuration on a labelled directory.
pub fn evaluate_with(
    labelled_dir: &Path,
    cfg: &BeaconConfig,
) -> Result<EvalReport, AnalyticsError> {
    let labels_path = labelled_dir.join("labels.jsonl");
    let labels = load_labels(&labels_path)?;
    let logs = dataset_logs(labelled_dir)?;
    if logs.is_empty() {
        return Err(AnalyticsError::Dataset {
            path: labelled_dir.display().to_string(),
            detail: "no *.log / *.json files".into(),
        });
    }
    let mut scorer = Scorer::new(cfg)?;
    for p in &logs {
        scorer.add_path(p)?;
    }
    let report = scorer.finish_all()?;
    // Best score per key over windows.
    let mut best: FxHashMap<(String, String, String), [f32; 3]> = FxHashMap::default();
    for f in &report.findings {
        let e = best
            .entry((f.kind.as_str().to_string(), f.src.clone(), f.dst.clone()))
            .or_insert([0.0; 3]);
        e[0] = e[0].max(f.combined);
        e[1] = e[1].max(f.cnn_score);
        e[2] = e[2].max(f.stat_score);
    }
    let mut rows: Vec<([f32; 3], bool, String, String)> = Vec::new();
    let mut labelled: FxHashMap<(String, String, String), ()> = FxHashMap::default();
    for l in &labels {
        let k = (l.kind.clone(), l.src.clone(), l.dst.clone());
        if labelled.insert(k.clone(), ()).is_some() {
            continue;
        }
        let s = best.get(&k).copied().unwrap_or([0.0; 3]);
        rows.push((s, l.label == "malicious", l.pattern.clone(), l.kind.clone()));
    }
    for (k, s) in &best {
        if !labelled.contains_key(k) {
            rows.push((*s, false, format!("{}_browsing", k.0), k.0.clone()));
        }
    }
    let col = |i: usize| -> Vec<(f32, bool)> { rows.iter().map(|r| (r.0[i], r.1)).collect() };
    let t = cfg.threshold;
    let combined = metrics(&col(0), t);
    let cnn_only = metrics(&col(1), t);
    let stat_only = metrics(&col(2), t);
    let mut kinds: Vec<String> = rows.iter().map(|r| r.3.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let per_kind = kinds
        .into_iter()
        .map(|k| {
            let v: Vec<(f32, bool)> = rows
                .iter()
                .filter(|r| r.3 == k)
                .map(|r| (r.0[0], r.1))
                .collect();
            (k, metrics(&v, t))
        })
        .collect();
    let negatives: Vec<(f32, bool)> = rows
        .iter()
        .filter(|r| !r.1)
        .map(|r| (r.0[0], false))
        .collect();
    let mut by: BTreeMap<(bool, String), Vec<f32>> = BTreeMap::new();
    for r in &rows {
        by.entry((!r.1, r.2.clone())).or_default().push(r.0[0]);
    }
    let per_pattern = by
        .into_iter()
        .map(|((benign, pattern), scores)| {
            let flagged = scores.iter().filter(|&&s| s >= t).count() as u64;
            let roc = if benign {
                None
            } else {
                let mut v = negatives.clone();
                v.extend(scores.iter().map(|&s| (s, true)));
                Some(roc_auc(&v))
            };
            PatternMetrics {
                pattern,
                malicious: !benign,
                keys: scores.len() as u64,
                flagged,
                rate: ratio(flagged, scores.len() as u64),
                roc_auc: roc,
                mean_score: scores.iter().map(|&s| s as f64).sum::<f64>()
                    / scores.len().max(1) as f64,
            }
        })
        .collect();
    Ok(EvalReport {
        combined,
        cnn_only,
        stat_only,
        per_pattern,
        per_kind,
        lines: report.lines,
        bad_lines: report.bad_lines,
        seconds: report.seconds,
    })
}

/// Human-readable rendering of an [`EvalReport`].
pub fn format_eval(r: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<10} {:>6} {:>7} {:>5} {:>5} {:>5} {:>9} {:>7} {:>6} {:>8} {:>7}",
        "scorer",
        "thresh",
        "pos/neg",
        "tp",
        "fp",
        "fn",
        "precision",
        "recall",
        "F1",
        "ROC-AUC",
        "PR-AUC"
    );
    for (name, m) in [
        ("combined", &r.combined),
        ("cnn", &r.cnn_only),
        ("rita-like", &r.stat_only),
    ] {
        let _ = writeln!(
            s,
            "{name:<10} {:>6.2} {:>7} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>6.3} {:>8.4} {:>7.4}",
            m.threshold,
            format!("{}/{}", m.positives, m.negatives),
            m.tp,
            m.fp,
            m.fn_,
            m.precision,
            m.recall,
            m.f1,
            m.roc_auc,
            m.pr_auc
        );
    }
    for (k, m) in &r.per_kind {
        let _ = writeln!(
            s,
            "{:<10} {:>6.2} {:>7} {:>5} {:>5} {:>5} {:>9.3} {:>7.3} {:>6.3} {:>8.4} {:>7.4}",
            format!("  {k}"),
            m.threshold,
            format!("{}/{}", m.positives, m.negatives),
            m.tp,
            m.fp,
            m.fn_,
            m.precision,
            m.recall,
            m.f1,
            m.roc_auc,
            m.pr_auc
        );
    }
    let _ = writeln!(s, "\nper pattern (combined score):");
    let _ = writeln!(
        s,
        "{:<16} {:<9} {:>6} {:>8} {:>7} {:>8} {:>6}",
        "pattern", "label", "keys", "flagged", "rate", "ROC-AUC", "mean"
    );
    for p in &r.per_pattern {
        let _ = writeln!(
            s,
            "{:<16} {:<9} {:>6} {:>8} {:>7.3} {:>8} {:>6.3}",
            p.pattern,
            if p.malicious { "malicious" } else { "benign" },
            p.keys,
            p.flagged,
            p.rate,
            p.roc_auc
                .map(|a| format!("{a:.4}"))
                .unwrap_or_else(|| "-".into()),
            p.mean_score
        );
    }
    let _ = writeln!(
        s,
        "\n{} lines, {} bad, scored in {:.2}s",
        r.lines, r.bad_lines, r.seconds
    );
    s
}
