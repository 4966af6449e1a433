//! Port sets: lists and ranges, e.g. `22,80,8000-8100`, `-` or `all` (1-65535).

use serde::{Deserialize, Serialize};
use std::fmt;

/// Sorted, disjoint, non-adjacent inclusive ranges of ports (never port 0).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSet {
    ranges: Vec<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error(
        "bad port spec {token:?} in {input:?}: {reason} (expected e.g. 22,80,8000-8100 or 1-65535)"
    )]
    Bad {
        input: String,
        token: String,
        reason: String,
    },
    #[error("empty port spec (expected e.g. 22,80,8000-8100 or 1-65535)")]
    Empty,
}

impl PortSet {
    pub fn parse(input: &str) -> Result<Self, PortError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(PortError::Empty);
        }
        if s == "-" || s.eq_ignore_ascii_case("all") {
            return Ok(PortSet {
                ranges: vec![(1, 65535)],
            });
        }
        let mut ranges = Vec::new();
        for tok in s.split(',') {
            let t = tok.trim();
            let err = |reason: &str| PortError::Bad {
                input: crate::security::clip(input, 128),
                token: crate::security::clip(t, 64),
                reason: reason.into(),
            };
            if t.is_empty() {
                return Err(err("empty item"));
            }
            let port = |p: &str| -> Result<u16, PortError> {
                let v: u32 = p.trim().parse().map_err(|_| err("not a number"))?;
                if v == 0 || v > 65535 {
                    return Err(err("port must be within 1-65535"));
                }
                Ok(v as u16)
            };
            let (a, b) = match t.split_once('-') {
                Some((a, b)) => {
                    // `-N` reads as a negative number, not as `1-N`: refused.
                    if a.trim().is_empty() && !b.trim().is_empty() {
                        return Err(err(
                            "a range needs its start (write 1-N; ports are never negative)",
                        ));
                    }
                    let a = if a.trim().is_empty() { 1 } else { port(a)? };
                    let b = if b.trim().is_empty() { 65535 } else { port(b)? };
                    if a > b {
                        return Err(err("range start is after its end"));
                    }
                    (a, b)
                }
                None => {
                    let p = port(t)?;
                    (p, p)
                }
            };
            ranges.push((a, b));
        }
        Ok(Self::from_ranges(ranges))
    }

    pub fn from_ranges(mut ranges: Vec<(u16, u16)>) -> Self {
        ranges.sort();
        let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a as u32 <= last.1 as u32 + 1 => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        PortSet { ranges: out }
    }

    pub fn from_ports(ports: &[u16]) -> Self {
        Self::from_ranges(
            ports
                .iter()
                .filter(|p| **p != 0)
                .map(|p| (*p, *p))
                .collect(),
        )
    }

    pub fn len(&self) -> u32 {
        self.ranges
            .iter()
            .map(|(a, b)| (*b as u32) - (*a as u32) + 1)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn contains(&self, p: u16) -> bool {
        self.ranges.iter().any(|(a, b)| (*a..=*b).contains(&p))
    }

    /// Ports `[from, from+n)` in ascending order (by index into the set).
    pub fn slice(&self, from: u32, n: u32) -> Vec<u16> {
        let mut out = Vec::with_capacity(n as usize);
        let mut skip = from;
        for (a, b) in &self.ranges {
            let len = (*b as u32) - (*a as u32) + 1;
            if skip >= len {
                skip -= len;
                continue;
            }
            let mut p = *a as u32 + skip;
            skip = 0;
            while p <= *b as u32 && (out.len() as u32) < n {
                out.push(p as u16);
                p += 1;
            }
            if out.len() as u32 >= n {
                break;
            }
        }
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        self.ranges.iter().flat_map(|(a, b)| *a..=*b)
    }
}

impl fmt::Display for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_merge_slice() {
        let p = PortSet::parse("80, 22,81-90,85,1000-").unwrap();
        assert_eq!(p.to_string(), "22,80-90,1000-65535");
        assert_eq!(p.len(), 1 + 11 + 64536);
        assert_eq!(p.slice(0, 3), vec![22, 80, 81]);
        assert_eq!(p.slice(11, 3), vec![90, 1000, 1001]);
        assert_eq!(p.slice(p.len() - 1, 5), vec![65535]);
        assert_eq!(PortSet::parse("1-65535").unwrap().len(), 65535);
        assert_eq!(PortSet::parse("-").unwrap().len(), 65535);
        assert!(p.contains(85) && !p.contains(91));
    }

    #[test]
    fn errors_name_the_token() {
        for (input, tok) in [
            ("0", "0"),
            ("22,x", "x"),
            ("70000", "70000"),
            ("90-80", "90-80"),
            ("22,,23", ""),
            ("-1", "-1"),
            ("80,-1024", "-1024"),
        ] {
            match PortSet::parse(input).unwrap_err() {
                PortError::Bad { token, .. } => assert_eq!(token, tok),
                e => panic!("{e}"),
            }
        }
        assert_eq!(PortSet::parse(" ").unwrap_err(), PortError::Empty);
    }

    #[test]
    fn a_huge_port_spec_is_not_echoed_back() {
        let huge = "x".repeat(1 << 20);
        let e = PortSet::parse(&huge).unwrap_err().to_string();
        assert!(e.len() < 600, "{} bytes", e.len());
        assert!(e.contains("1048576 bytes"), "{e}");
    }
}
