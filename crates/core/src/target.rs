//! Target parsing: addresses, CIDRs, dash ranges. Host names are recognised here and resolved by
//! the caller (I/O), once, at submission.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An inclusive range of addresses of one family.
///
/// Serialized internally tagged (`{"f":"v4","start":..,"end":..}`); the IPv6 bounds are written
/// as address text (`{"f":"v6","start":"::1","end":"::1"}`): serde buffers an internally tagged
/// enum's fields and that buffer has no u128, so numeric IPv6 bounds could be written but never
/// read back. Reading also takes a bound that fits a u64 as a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum IpRange {
    V4 {
        start: u32,
        end: u32,
    },
    V6 {
        #[serde(with = "v6_bound")]
        start: u128,
        #[serde(with = "v6_bound")]
        end: u128,
    },
}

/// IPv6 range bounds as address text (see [`IpRange`]).
mod v6_bound {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::net::Ipv6Addr;

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Ipv6Addr::from(*v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = u128;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IPv6 address")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<u128, E> {
                v.parse::<Ipv6Addr>()
                    .map(u128::from)
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<u128, E> {
                Ok(u128::from(v))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<u128, E> {
                Ok(v)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("empty target")]
    Empty,
    #[error(
        "bad target {input:?}: {reason} (expected an IPv4/IPv6 address, a CIDR like 10.0.0.0/24, a range like 10.0.0.1-10.0.0.9, or a host name)"
    )]
    Bad { input: String, reason: String },
}

/// What a target string is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetInput {
    Range(IpRange),
    Host(String),
}

impl IpRange {
    pub fn single(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => IpRange::V4 {
                start: a.into(),
                end: a.into(),
            },
            IpAddr::V6(a) => IpRange::V6 {
                start: a.into(),
                end: a.into(),
            },
        }
    }

    /// `count` consecutive addresses from `first` (None if that runs past the family's end).
    pub fn block(first: IpAddr, count: u32) -> Option<Self> {
        let n = count.max(1) - 1;
        match first {
            IpAddr::V4(a) => {
                let s = u32::from(a);
                Some(IpRange::V4 {
                    start: s,
                    end: s.checked_add(n)?,
                })
            }
            IpAddr::V6(a) => {
                let s = u128::from(a);
                Some(IpRange::V6 {
                    start: s,
                    end: s.checked_add(n as u128)?,
                })
            }
        }
    }

    /// Number of addresses (a full IPv6 range saturates at u128::MAX).
    pub fn len(&self) -> u128 {
        match *self {
            IpRange::V4 { start, end } => (end as u128) - (start as u128) + 1,
            IpRange::V6 { start, end } => (end - start).saturating_add(1),
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `i`-th address (caller guarantees `i < len`).
    pub fn nth(&self, i: u128) -> IpAddr {
        match *self {
            IpRange::V4 { start, .. } => IpAddr::V4(Ipv4Addr::from(start + i as u32)),
            IpRange::V6 { start, .. } => IpAddr::V6(Ipv6Addr::from(start + i)),
        }
    }

    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        match (*self, ip) {
            (IpRange::V4 { start, end }, IpAddr::V4(a)) => (start..=end).contains(&u32::from(a)),
            (IpRange::V6 { start, end }, IpAddr::V6(a)) => (start..=end).contains(&u128::from(a)),
            _ => false,
        }
    }

    /// Whether `self` lies entirely inside `other`.
    pub fn within(&self, other: &IpRange) -> bool {
        match (*self, *other) {
            (IpRange::V4 { start, end }, IpRange::V4 { start: s, end: e }) => {
                s <= start && end <= e
            }
            (IpRange::V6 { start, end }, IpRange::V6 { start: s, end: e }) => {
                s <= start && end <= e
            }
            _ => false,
        }
    }

    pub fn intersects(&self, other: &IpRange) -> bool {
        match (*self, *other) {
            (IpRange::V4 { start, end }, IpRange::V4 { start: s, end: e }) => {
                start <= e && s <= end
            }
            (IpRange::V6 { start, end }, IpRange::V6 { start: s, end: e }) => {
                start <= e && s <= end
            }
            _ => false,
        }
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = (self.nth(0), self.nth(self.len().saturating_sub(1)));
        if self.len() == 1 {
            return write!(f, "{a}");
        }
        // Print as CIDR when it is one.
        let n = self.len();
        if n.is_power_of_two() {
            let bits = n.trailing_zeros();
            let (total, start) = match *self {
                IpRange::V4 { start, .. } => (32, start as u128),
                IpRange::V6 { start, .. } => (128, start),
            };
            if bits < 128 && start % n == 0 {
                return write!(f, "{a}/{}", total - bits);
            }
        }
        write!(f, "{a}-{b}")
    }
}

fn bad(input: &str, reason: impl Into<String>) -> TargetError {
    // Never echo a huge input back (a 1 MB target would come back in the error).
    TargetError::Bad {
        input: crate::security::clip(input, 128),
        reason: crate::security::clip(&reason.into(), 256),
    }
}

fn parse_cidr(input: &str, addr: &str, len: &str) -> Result<IpRange, TargetError> {
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| bad(input, format!("{addr:?} is not an IP address")))?;
    let prefix: u32 = len
        .parse()
        .map_err(|_| bad(input, format!("prefix length {len:?} is not a number")))?;
    match ip {
        IpAddr::V4(a) => {
            if prefix > 32 {
                return Err(bad(input, format!("IPv4 prefix length {prefix} > 32")));
            }
            let mask: u32 = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            let start = u32::from(a) & mask;
            Ok(IpRange::V4 {
                start,
                end: start | !mask,
            })
        }
        IpAddr::V6(a) => {
            if prefix > 128 {
                return Err(bad(input, format!("IPv6 prefix length {prefix} > 128")));
            }
            let mask: u128 = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - prefix)
            };
            let start = u128::from(a) & mask;
            Ok(IpRange::V6 {
                start,
                end: start | !mask,
            })
        }
    }
}

fn is_hostname(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

/// Parses one target: `1.2.3.4`, `::1`, `10.0.0.0/24`, `fe80::/64`, `10.0.0.1-10.0.0.9`, or a host name.
pub fn parse_target(input: &str) -> Result<TargetInput, TargetError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(TargetError::Empty);
    }
    let s = s.trim_start_matches('[').trim_end_matches(']');
    if let Some((addr, len)) = s.split_once('/') {
        return parse_cidr(input, addr, len).map(TargetInput::Range);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(TargetInput::Range(IpRange::single(ip)));
    }
    if let Some((a, b)) = s.split_once('-')
        && let (Ok(a), Ok(b)) = (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>())
    {
        return match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if u32::from(a) <= u32::from(b) => {
                Ok(TargetInput::Range(IpRange::V4 {
                    start: a.into(),
                    end: b.into(),
                }))
            }
            (IpAddr::V6(a), IpAddr::V6(b)) if u128::from(a) <= u128::from(b) => {
                Ok(TargetInput::Range(IpRange::V6 {
                    start: a.into(),
                    end: b.into(),
                }))
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err(bad(input, "range start is after its end"))
            }
            _ => Err(bad(input, "range mixes IPv4 and IPv6")),
        };
    }
    if is_hostname(s) {
        return Ok(TargetInput::Host(s.to_ascii_lowercase()));
    }
    Err(bad(input, "not an address, CIDR, range or host name"))
}

/// Parses a list of ranges (scope files, configs): literals only, no host names.
pub fn parse_ranges<'a>(
    items: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<IpRange>, TargetError> {
    let mut out = Vec::new();
    for it in items {
        match parse_target(it)? {
            TargetInput::Range(r) => out.push(r),
            TargetInput::Host(h) => {
                return Err(bad(
                    it,
                    format!("host name {h:?} not allowed here, use addresses or CIDRs"),
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> IpRange {
        match parse_target(s).unwrap() {
            TargetInput::Range(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_addresses_cidrs_ranges() {
        assert_eq!(r("127.0.0.1").len(), 1);
        assert_eq!(
            r("10.1.2.3/24").nth(0),
            "10.1.2.0".parse::<IpAddr>().unwrap()
        );
        assert_eq!(r("10.1.2.3/24").len(), 256);
        assert_eq!(r("0.0.0.0/0").len(), 1u128 << 32);
        assert_eq!(r("::1").nth(0), "::1".parse::<IpAddr>().unwrap());
        assert_eq!(r("[::1]").len(), 1);
        assert_eq!(r("fe80::/64").len(), 1u128 << 64);
        assert_eq!(r("10.0.0.1-10.0.0.9").len(), 9);
        assert_eq!(r("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(r("10.0.0.1-10.0.0.9").to_string(), "10.0.0.1-10.0.0.9");
    }

    #[test]
    fn hostnames_and_errors() {
        assert_eq!(
            parse_target("LocalHost").unwrap(),
            TargetInput::Host("localhost".into())
        );
        assert_eq!(parse_target("  ").unwrap_err(), TargetError::Empty);
        for bad_input in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.9-10.0.0.1",
            "1.2.3.4-::1",
            "a b",
            "300.1.1.1/8",
            "1.2.3.4/x",
            "-x-",
        ] {
            let e = parse_target(bad_input).unwrap_err();
            assert!(e.to_string().contains(bad_input), "{e}");
        }
    }

    #[test]
    fn containment() {
        assert!(r("127.0.0.5").within(&r("127.0.0.0/8")));
        assert!(!r("126.0.0.0/7").within(&r("127.0.0.0/8")));
        assert!(r("126.0.0.0/7").intersects(&r("127.0.0.0/8")));
        assert!(!r("::1").intersects(&r("127.0.0.0/8")));
        assert!(r("127.0.0.0/8").contains_ip("127.1.2.3".parse().unwrap()));
    }

    #[test]
    fn ranges_round_trip_through_json_both_families() {
        for t in [
            "127.0.0.0/22",
            "::1",
            "fe80::/64",
            "::/0",
            "2001:db8::1-2001:db8::ff",
        ] {
            let a = r(t);
            let text = serde_json::to_string(&a).unwrap();
            let b: IpRange = serde_json::from_str(&text).unwrap();
            assert_eq!(a, b, "{t}: {text}");
            // And inside a containing struct/Vec (as JobSpec stores them).
            let v: Vec<IpRange> =
                serde_json::from_str(&serde_json::to_string(&vec![a]).unwrap()).unwrap();
            assert_eq!(v, vec![a]);
        }
        assert_eq!(
            serde_json::to_string(&r("::1")).unwrap(),
            r#"{"f":"v6","start":"::1","end":"::1"}"#
        );
        assert_eq!(
            serde_json::to_string(&r("127.0.0.1")).unwrap(),
            r#"{"f":"v4","start":2130706433,"end":2130706433}"#
        );
        // A small bound written as a number still reads; garbage is a precise error.
        let n: IpRange = serde_json::from_str(r#"{"f":"v6","start":1,"end":1}"#).unwrap();
        assert_eq!(n, r("::1"));
        let e = serde_json::from_str::<IpRange>(r#"{"f":"v6","start":"nope","end":"::1"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("IPv6"), "{e}");
    }
}
