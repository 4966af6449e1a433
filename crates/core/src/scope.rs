//! Scope safety: an allow-list (default loopback only) and a blocklist of opted-out ranges.

use crate::target::{IpRange, TargetError, parse_ranges};
use std::net::IpAddr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub allow: Vec<IpRange>,
    pub block: Vec<IpRange>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("targets out of scope: {}{}", describe("outside the allow-list", .outside), describe("inside the blocklist", .blocked))]
    OutOfScope {
        outside: Vec<String>,
        blocked: Vec<String>,
    },
}

fn describe(what: &str, v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!("[{what}: {}] ", v.join(", "))
    }
}

impl Default for Scope {
    fn default() -> Self {
        Self::loopback()
    }
}

impl Scope {
    /// 127.0.0.0/8 and ::1, no blocklist.
    pub fn loopback() -> Self {
        Scope {
            allow: parse_ranges(["127.0.0.0/8", "::1"]).expect("static"),
            block: Vec::new(),
        }
    }

    pub fn new(allow: &[String], block: Vec<IpRange>) -> Result<Self, TargetError> {
        let allow = if allow.is_empty() {
            Self::loopback().allow
        } else {
            parse_ranges(allow.iter().map(|s| s.as_str()))?
        };
        Ok(Scope { allow, block })
    }

    /// A range is allowed when it lies inside one allow range (allow ranges are not merged; list
    /// them as CIDRs covering what you need) and touches no blocked range.
    pub fn check(&self, ranges: &[IpRange]) -> Result<(), ScopeError> {
        let mut outside = Vec::new();
        let mut blocked = Vec::new();
        for r in ranges {
            if !self.allow.iter().any(|a| r.within(a)) {
                outside.push(r.to_string());
            }
            if let Some(b) = self.block.iter().find(|b| r.intersects(b)) {
                blocked.push(format!("{r} (blocked by {b})"));
            }
        }
        if outside.is_empty() && blocked.is_empty() {
            Ok(())
        } else {
            Err(ScopeError::OutOfScope { outside, blocked })
        }
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|a| a.contains_ip(ip))
            && !self.block.iter().any(|b| b.contains_ip(ip))
    }
}

/// Parses a blocklist file: one address/CIDR/range per line, `#` comments, blank lines ignored.
pub fn parse_blocklist(text: &str) -> Result<Vec<IpRange>, (usize, TargetError)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        out.extend(parse_ranges([l]).map_err(|e| (i + 1, e))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_default() {
        let s = Scope::default();
        let r = |x: &str| parse_ranges([x]).unwrap();
        assert!(s.check(&r("127.0.0.1")).is_ok());
        assert!(s.check(&r("::1")).is_ok());
        let e = s
            .check(&[r("10.0.0.0/8")[0], r("127.0.0.1")[0], r("8.8.8.8")[0]])
            .unwrap_err();
        let ScopeError::OutOfScope { outside, blocked } = &e;
        assert_eq!(
            outside,
            &vec!["10.0.0.0/8".to_string(), "8.8.8.8".to_string()]
        );
        assert!(blocked.is_empty());
        assert!(e.to_string().contains("10.0.0.0/8"));
        assert!(!s.permits("192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn blocklist() {
        let block = parse_blocklist("# opt-outs\n127.0.0.9\n\n127.0.1.0/24 # lab\n").unwrap();
        let s = Scope::new(&[], block).unwrap();
        let e = s
            .check(&parse_ranges(["127.0.0.0/16"]).unwrap())
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("127.0.0.0/16 (blocked by 127.0.0.9)"),
            "{e}"
        );
        assert!(!s.permits("127.0.1.7".parse().unwrap()));
        assert!(s.permits("127.0.0.8".parse().unwrap()));
        assert_eq!(parse_blocklist("ok.example\n").unwrap_err().0, 1);
        assert_eq!(parse_blocklist("1.2.3.4\n1.2.3.4/40").unwrap_err().0, 2);
    }
}
