//! Top-level domains: the last label of an e-mail address read by OCR is checked against the
//! ICANN list (`assets/tlds.txt`, from the Public Suffix List) and repaired when one typical
//! OCR confusion turns an unknown or rare one into a known one (`.con` → `.com`, `.arg` →
//! `.org`, `.cam` → `.com`).

use std::collections::HashSet;
use std::sync::OnceLock;

/// Names used inside organisations that are not delegated TLDs (not `example`: an address
/// ending in `.example` is a domain whose last label was lost, `corp.example.co.uk` read as
/// `corp.example.d`).
const SPECIAL_USE: &[&str] = &[
    "local",
    "localdomain",
    "localhost",
    "lan",
    "home",
    "corp",
    "internal",
    "intranet",
    "private",
    "test",
];

/// The original generic TLDs: a rarely used TLD one confusion away from one of these is
/// taken for it (`.cam` for `.com`).
const LEGACY: &[&str] = &["com", "org", "net", "edu", "gov", "mil", "int"];

/// Pairs of characters tesseract confuses in small screen fonts (both directions).
const CONFUSIONS: &[(char, char)] = &[
    ('a', 'o'),
    ('a', 'e'),
    ('e', 'c'),
    ('e', 'o'),
    ('o', 'c'),
    ('n', 'm'),
    ('n', 'r'),
    ('n', 'h'),
    ('u', 'v'),
    ('i', 'l'),
    ('h', 'b'),
    ('g', 'q'),
    ('t', 'f'),
    ('0', 'o'),
    ('1', 'l'),
    ('5', 's'),
];

fn known() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        include_str!("../assets/tlds.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .chain(SPECIAL_USE.iter().copied())
            .collect()
    })
}

/// Whether `label` (lower case) is a delegated or special-use top-level domain.
pub fn is_tld(label: &str) -> bool {
    known().contains(label)
}

/// Readings one confusion away from `label` (a substitution, or `rn` ↔ `m`).
fn one_confusion(label: &str) -> Vec<String> {
    let c: Vec<char> = label.chars().collect();
    let mut out = Vec::new();
    for i in 0..c.len() {
        for &(x, y) in CONFUSIONS {
            for (from, to) in [(x, y), (y, x)] {
                if c[i] == from {
                    let mut v = c.clone();
                    v[i] = to;
                    out.push(v.into_iter().collect());
                }
            }
        }
        if c[i] == 'm' {
            out.push(format!(
                "{}rn{}",
                c[..i].iter().collect::<String>(),
                c[i + 1..].iter().collect::<String>()
            ));
        }
        if c[i] == 'r' && c.get(i + 1) == Some(&'n') {
            out.push(format!(
                "{}m{}",
                c[..i].iter().collect::<String>(),
                c[i + 2..].iter().collect::<String>()
            ));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The top-level domain an OCR reading `label` stands for: itself when it is a known TLD
/// (unless it is a rarely used one a single confusion away from exactly one original generic
/// TLD: `cam` → `com`), else the one known TLD a single confusion away (`con` → `com`,
/// `arg` → `org`); `None` when there is no such TLD or more than one.
pub fn repair_tld(label: &str) -> Option<String> {
    let l = label.to_ascii_lowercase();
    let near = one_confusion(&l);
    if is_tld(&l) {
        if l.len() >= 3 && !LEGACY.contains(&l.as_str()) && !SPECIAL_USE.contains(&l.as_str()) {
            let legacy: Vec<&String> = near
                .iter()
                .filter(|n| LEGACY.contains(&n.as_str()))
                .collect();
            if let [one] = legacy[..] {
                return Some(one.clone());
            }
        }
        return Some(l);
    }
    let cands: Vec<&String> = near.iter().filter(|n| is_tld(n)).collect();
    match cands[..] {
        [one] => Some(one.clone()),
        _ => {
            // several: the original generic one if exactly one is
            let legacy: Vec<&&String> = cands
                .iter()
                .filter(|n| LEGACY.contains(&n.as_str()))
                .collect();
            match legacy[..] {
                [one] => Some((*one).clone()),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_tlds_stay_and_confused_ones_are_repaired_or_refused() {
        for t in [
            "com", "org", "net", "de", "uk", "io", "ch", "museum", "local", "cat", "co",
        ] {
            assert_eq!(repair_tld(t).as_deref(), Some(t), "{t}");
        }
        assert_eq!(repair_tld("COM").as_deref(), Some("com"));
        // not TLDs, one confusion from exactly one
        assert_eq!(repair_tld("con").as_deref(), Some("com"));
        assert_eq!(repair_tld("arg").as_deref(), Some("org"));
        assert_eq!(repair_tld("c0m").as_deref(), Some("com"));
        assert_eq!(repair_tld("nct").as_deref(), Some("net"));
        assert_eq!(repair_tld("corn").as_deref(), Some("com"));
        // a rarely used TLD one confusion from a legacy one
        assert_eq!(repair_tld("cam").as_deref(), Some("com"));
        // nothing near: refused
        assert_eq!(repair_tld("xqzw"), None);
        assert_eq!(repair_tld("qqq"), None);
    }
}
