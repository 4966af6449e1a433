//! From a parsed [`Expr`] to a tantivy query: names resolved by the [`Registry`], values typed
//! by the field's [`Kind`]. Errors keep the position of the offending term.

use crate::fields::{Column, FieldDef, Kind, Registry};
use crate::index::{Fields, ip6};
use crate::lang::{Expr, ParseError, Span, Term as QTerm, Value};
use std::net::{IpAddr, Ipv6Addr};
use std::ops::Bound;
use tantivy::query::{
    AllQuery, BooleanQuery, EmptyQuery, InvertedIndexRangeQuery, Occur, PhraseQuery, Query,
    RangeQuery, RegexQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DateTime, Term};

/// Largest number of terms a prefix or wildcard may be expanded against is tantivy's concern;
/// we bound the pattern length.
const MAX_PATTERN: usize = 256;

/// A range spanning at most this many values (ports, a CIDR of /20 or narrower) is answered from
/// the inverted index: the few terms in range give an exact set of documents, which a
/// conjunction can lead with. tantivy's default for a fast column scans the whole column per
/// segment and tells the conjunction it matches a tenth of the rows (measured at 10 M rows:
/// `port:[8000 TO 8100] product:nginx` walked all 2.7 M nginx rows, 341 ms).
const NARROW_RANGE: u128 = 1 << 16;

/// Inclusive width of a range of `u128` values (`None`: unbounded on a side).
fn width(lo: &Bound<u128>, hi: &Bound<u128>) -> Option<u128> {
    let lo = match lo {
        Bound::Included(a) => *a,
        Bound::Excluded(a) => a.checked_add(1)?,
        Bound::Unbounded => return None,
    };
    let hi = match hi {
        Bound::Included(b) => *b,
        Bound::Excluded(b) => b.checked_sub(1)?,
        Bound::Unbounded => return None,
    };
    Some(hi.saturating_sub(lo).saturating_add(1))
}

/// A range over an indexed column: through the inverted index when narrow, else tantivy's
/// choice (the fast column).
fn range(lo: Bound<Term>, hi: Bound<Term>, narrow: bool) -> Box<dyn Query> {
    if narrow {
        Box::new(InvertedIndexRangeQuery::new(lo, hi))
    } else {
        Box::new(RangeQuery::new(lo, hi))
    }
}

pub struct Compiler<'a> {
    pub registry: &'a Registry,
    pub fields: &'a Fields,
    pub tokenizers: &'a TokenizerManager,
    pub text: &'a str,
}

type Q = Box<dyn Query>;

impl Compiler<'_> {
    fn err(&self, span: Span, expected: impl Into<String>, found: impl Into<String>) -> ParseError {
        ParseError::new(self.text, span.start, expected, found)
    }

    pub fn compile(&self, e: &Expr) -> Result<Q, ParseError> {
        Ok(match e {
            Expr::All => Box::new(AllQuery),
            Expr::Term(t) => self.term(t)?,
            Expr::And(v) => {
                let mut clauses = Vec::new();
                let mut positive = false;
                for x in v {
                    match x {
                        Expr::Not(inner) => clauses.push((Occur::MustNot, self.compile(inner)?)),
                        x => {
                            positive = true;
                            clauses.push((Occur::Must, self.compile(x)?))
                        }
                    }
                }
                if !positive {
                    clauses.push((Occur::Must, Box::new(AllQuery)));
                }
                Box::new(BooleanQuery::new(clauses))
            }
            Expr::Or(v) => Box::new(BooleanQuery::new(
                v.iter()
                    .map(|x| Ok((Occur::Should, self.compile(x)?)))
                    .collect::<Result<Vec<_>, ParseError>>()?,
            )),
            Expr::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Q),
                (Occur::MustNot, self.compile(inner)?),
            ])),
        })
    }

    fn term(&self, t: &QTerm) -> Result<Q, ParseError> {
        let Some((name, fspan)) = &t.field else {
            return self.free_text(&t.value, t.span);
        };
        let def = self.registry.resolve(name, *fspan).map_err(|e| {
            self.err(
                *fspan,
                format!("a field name ({})", e.known),
                format!("{name:?}"),
            )
        })?;
        let vspan = Span {
            start: fspan.end + 1,
            end: t.span.end,
        };
        match def.column {
            Column::Ext => self.ext(def, &t.value, vspan),
            Column::Builtin(col) => {
                let f = self.fields.get(col);
                match def.kind {
                    Kind::Text => self.text_query(f, &t.value, vspan),
                    Kind::Keyword => self.keyword(f, &t.value, vspan),
                    Kind::Ip | Kind::Net => self.ip(f, def, &t.value, vspan),
                    Kind::U64 => self.number(f, def, &t.value, vspan),
                    Kind::Bool => {
                        let b = self.bool_value(def, &t.value, vspan)?;
                        Ok(Box::new(TermQuery::new(
                            Term::from_field_bool(f, b),
                            IndexRecordOption::Basic,
                        )))
                    }
                    Kind::Date => self.date(f, def, &t.value, vspan),
                    Kind::F64 => Err(self.err(vspan, "a built-in field", "an f64 column")),
                }
            }
        }
    }

    fn tokens(&self, f: Field, s: &str) -> Vec<String> {
        let name = if f == self.fields.text || !self.is_keyword(f) {
            "default"
        } else {
            crate::index::KW
        };
        let mut a = self.tokenizers.get(name).expect("tokenizer registered");
        let mut out = Vec::new();
        let mut ts = a.token_stream(s);
        while ts.advance() {
            out.push(ts.token().text.clone());
        }
        out
    }

    fn is_keyword(&self, _f: Field) -> bool {
        false
    }

    /// Free text: any of the text columns (banner, HTTP title, screen text) or the short values
    /// gathered in `text` (service, product, version, server, certificate subject). The long
    /// texts are not copied into `text`: tokenising them twice was a measured share of ingest.
    fn free_text(&self, v: &Value, span: Span) -> Result<Q, ParseError> {
        let mut clauses = vec![(Occur::Should, self.text_query(self.fields.text, v, span)?)];
        for col in crate::index::FREE_TEXT {
            clauses.push((
                Occur::Should,
                self.text_query(self.fields.get(col), v, span)?,
            ));
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    fn text_query(&self, f: Field, v: &Value, span: Span) -> Result<Q, ParseError> {
        match v {
            Value::Word(w) | Value::Phrase(w) => {
                let toks = self.tokens(f, w);
                match toks.len() {
                    0 => Ok(Box::new(EmptyQuery)),
                    1 => Ok(Box::new(TermQuery::new(
                        Term::from_field_text(f, &toks[0]),
                        IndexRecordOption::WithFreqs,
                    ))),
                    _ => Ok(Box::new(PhraseQuery::new(
                        toks.iter().map(|t| Term::from_field_text(f, t)).collect(),
                    ))),
                }
            }
            Value::Prefix(p) => {
                self.regex(f, &format!("{}.*", regex_escape(&p.to_lowercase())), span)
            }
            Value::Wildcard(w) => self.regex(f, &wildcard(&w.to_lowercase()), span),
            Value::Range { .. } => Err(self.err(
                span,
                "a word, \"phrase\" or prefix* for a text field",
                "a range",
            )),
        }
    }

    fn regex(&self, f: Field, pattern: &str, span: Span) -> Result<Q, ParseError> {
        if pattern.len() > MAX_PATTERN {
            return Err(self.err(
                span,
                format!("a pattern of at most {MAX_PATTERN} bytes"),
                "a longer one",
            ));
        }
        RegexQuery::from_pattern(pattern, f)
            .map(|q| Box::new(q) as Q)
            .map_err(|e| self.err(span, "a valid pattern", e.to_string()))
    }

    fn keyword(&self, f: Field, v: &Value, span: Span) -> Result<Q, ParseError> {
        match v {
            Value::Word(w) | Value::Phrase(w) => Ok(Box::new(TermQuery::new(
                Term::from_field_text(f, &w.to_lowercase()),
                IndexRecordOption::Basic,
            ))),
            Value::Prefix(p) => {
                self.regex(f, &format!("{}.*", regex_escape(&p.to_lowercase())), span)
            }
            Value::Wildcard(w) => self.regex(f, &wildcard(&w.to_lowercase()), span),
            Value::Range { lo, hi } => {
                let t = |s: &String| Term::from_field_text(f, &s.to_lowercase());
                Ok(Box::new(RangeQuery::new(
                    map_bound(lo, t),
                    map_bound(hi, t),
                )))
            }
        }
    }

    fn ip(&self, f: Field, def: &FieldDef, v: &Value, span: Span) -> Result<Q, ParseError> {
        let (lo, hi) = match v {
            Value::Word(w) | Value::Phrase(w) => {
                let (lo, hi) = cidr(w).map_err(|e| {
                    self.err(
                        span,
                        format!("an address or CIDR for {} ({e})", def.name),
                        format!("{w:?}"),
                    )
                })?;
                (Bound::Included(lo), Bound::Included(hi))
            }
            Value::Range { lo, hi } => {
                let p = |s: &String| -> Result<Ipv6Addr, ParseError> {
                    s.parse::<IpAddr>()
                        .map(ip6)
                        .map_err(|_| self.err(span, "an address as range bound", format!("{s:?}")))
                };
                (try_bound(lo, p)?, try_bound(hi, p)?)
            }
            _ => {
                return Err(self.err(
                    span,
                    format!("an address or CIDR for {}", def.name),
                    "a pattern",
                ));
            }
        };
        let t = |a: &Ipv6Addr| Term::from_field_ip_addr(f, *a);
        if let (Bound::Included(a), Bound::Included(b)) = (&lo, &hi)
            && a == b
        {
            return Ok(Box::new(TermQuery::new(t(a), IndexRecordOption::Basic)));
        }
        let n = |a: &Ipv6Addr| u128::from(*a);
        let narrow =
            width(&map_bound(&lo, n), &map_bound(&hi, n)).is_some_and(|w| w <= NARROW_RANGE / 16);
        Ok(range(map_bound(&lo, t), map_bound(&hi, t), narrow))
    }

    fn number(&self, f: Field, def: &FieldDef, v: &Value, span: Span) -> Result<Q, ParseError> {
        let p = |s: &String| -> Result<u64, ParseError> {
            let ok = s
                .parse::<u64>()
                .ok()
                .filter(|n| def.name != "port" || *n <= 65535);
            ok.ok_or_else(|| {
                let what = if def.name == "port" {
                    "a port number 0-65535"
                } else {
                    "a non-negative integer"
                };
                self.err(span, format!("{what} for {}", def.name), format!("{s:?}"))
            })
        };
        match v {
            Value::Word(w) => Ok(Box::new(TermQuery::new(
                Term::from_field_u64(f, p(w)?),
                IndexRecordOption::Basic,
            ))),
            Value::Range { lo, hi } => {
                let lo = try_bound(lo, p)?;
                let hi = try_bound(hi, p)?;
                let t = |n: &u64| Term::from_field_u64(f, *n);
                let n = |x: &u64| *x as u128;
                let narrow = def.name == "port"
                    || width(&map_bound(&lo, n), &map_bound(&hi, n))
                        .is_some_and(|w| w <= NARROW_RANGE);
                Ok(range(map_bound(&lo, t), map_bound(&hi, t), narrow))
            }
            _ => Err(self.err(
                span,
                format!("a number or [a TO b] for {}", def.name),
                "a pattern or phrase",
            )),
        }
    }

    fn bool_value(&self, def: &FieldDef, v: &Value, span: Span) -> Result<bool, ParseError> {
        match v {
            Value::Word(w) => match w.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(self.err(
                    span,
                    format!("true or false for {}", def.name),
                    format!("{w:?}"),
                )),
            },
            _ => Err(self.err(
                span,
                format!("true or false for {}", def.name),
                "a pattern, phrase or range",
            )),
        }
    }

    fn date(&self, f: Field, def: &FieldDef, v: &Value, span: Span) -> Result<Q, ParseError> {
        let p = |s: &String| -> Result<(i64, i64), ParseError> {
            parse_date(s).ok_or_else(|| {
                self.err(
                    span,
                    format!("a {} for {}", Kind::Date.name(), def.name),
                    format!("{s:?}"),
                )
            })
        };
        let t =
            |ms: &i64| Term::from_field_date_for_search(f, DateTime::from_timestamp_millis(*ms));
        let (lo, hi) = match v {
            // a day (or a second) is an interval
            Value::Word(w) => {
                let (a, b) = p(w)?;
                (Bound::Included(a), Bound::Excluded(b))
            }
            Value::Range { lo, hi } => {
                // `>D` starts after D's interval, `>=D` at its start, `<D` before it, `<=D` at its end
                let lo = match lo {
                    Bound::Included(s) => Bound::Included(p(s)?.0),
                    Bound::Excluded(s) => Bound::Included(p(s)?.1),
                    Bound::Unbounded => Bound::Unbounded,
                };
                let hi = match hi {
                    Bound::Included(s) => Bound::Excluded(p(s)?.1),
                    Bound::Excluded(s) => Bound::Excluded(p(s)?.0),
                    Bound::Unbounded => Bound::Unbounded,
                };
                (lo, hi)
            }
            _ => {
                return Err(self.err(
                    span,
                    format!("a date or range for {}", def.name),
                    "a pattern or phrase",
                ));
            }
        };
        Ok(Box::new(RangeQuery::new(
            map_bound(&lo, t),
            map_bound(&hi, t),
        )))
    }

    fn ext(&self, def: &FieldDef, v: &Value, span: Span) -> Result<Q, ParseError> {
        let base = || {
            Term::from_field_json_path(self.fields.ext, &crate::fields::ext_key(&def.name), false)
        };
        let num = |s: &String| -> Result<Term, ParseError> {
            let mut t = base();
            match def.kind {
                // tantivy stores JSON integers that fit as i64
                Kind::U64 => {
                    let n: i64 = s.parse().map_err(|_| {
                        self.err(
                            span,
                            format!("an integer for {}", def.name),
                            format!("{s:?}"),
                        )
                    })?;
                    t.append_type_and_fast_value(n);
                }
                _ => {
                    let x: f64 = s.parse().map_err(|_| {
                        self.err(span, format!("a number for {}", def.name), format!("{s:?}"))
                    })?;
                    t.append_type_and_fast_value(x);
                }
            }
            Ok(t)
        };
        match (def.kind, v) {
            (Kind::Keyword | Kind::Text, Value::Word(w) | Value::Phrase(w)) => {
                let mut t = base();
                t.append_type_and_str(&w.to_lowercase());
                Ok(Box::new(TermQuery::new(t, IndexRecordOption::Basic)))
            }
            (Kind::Bool, _) => {
                let b = self.bool_value(def, v, span)?;
                let mut t = base();
                t.append_type_and_fast_value(b);
                Ok(Box::new(TermQuery::new(t, IndexRecordOption::Basic)))
            }
            (Kind::U64 | Kind::F64, Value::Word(w)) => {
                Ok(Box::new(TermQuery::new(num(w)?, IndexRecordOption::Basic)))
            }
            (Kind::U64 | Kind::F64, Value::Range { lo, hi }) => {
                let lo = try_bound(lo, num)?;
                let hi = try_bound(hi, num)?;
                if matches!((&lo, &hi), (Bound::Unbounded, Bound::Unbounded)) {
                    return Err(self.err(span, "at least one bound", "[* TO *]"));
                }
                Ok(Box::new(RangeQuery::new(lo, hi)))
            }
            (k, _) => Err(self.err(
                span,
                format!("a {} value for {}", k.name(), def.name),
                "an unsupported form (patterns on extension fields)",
            )),
        }
    }
}

/// Inclusive bounds on the address of every row `e` can match (`None`: not bounded), from its
/// `ip:`/`net:` terms: a conjunction is bounded by the intersection of its bounded positive
/// clauses, a disjunction by the hull of its clauses when every clause is bounded. The page walk
/// (`search.rs` `Engine::page`) starts at the lower bound and stops after the upper one. A term
/// that does not type-check gives no bound (compiling it fails anyway).
pub fn address_bounds(registry: &Registry, e: &Expr) -> Option<(u128, u128)> {
    match e {
        Expr::All | Expr::Not(_) => None,
        Expr::Term(t) => {
            let (name, span) = t.field.as_ref()?;
            let def = registry.resolve(name, *span).ok()?;
            if !matches!(def.kind, Kind::Ip | Kind::Net) || def.column != Column::Builtin("ip") {
                return None;
            }
            match &t.value {
                Value::Word(w) | Value::Phrase(w) => {
                    let (lo, hi) = cidr(w).ok()?;
                    Some((u128::from(lo), u128::from(hi)))
                }
                Value::Range { lo, hi } => {
                    let p = |s: &String| s.parse::<IpAddr>().map(|a| u128::from(ip6(a)));
                    let lo = match try_bound(lo, p).ok()? {
                        Bound::Included(a) => a,
                        Bound::Excluded(a) => a.checked_add(1)?,
                        Bound::Unbounded => 0,
                    };
                    let hi = match try_bound(hi, p).ok()? {
                        Bound::Included(b) => b,
                        Bound::Excluded(b) => b.checked_sub(1)?,
                        Bound::Unbounded => u128::MAX,
                    };
                    Some((lo, hi))
                }
                _ => None,
            }
        }
        Expr::And(v) => v
            .iter()
            .filter_map(|x| address_bounds(registry, x))
            .reduce(|(a, b), (c, d)| (a.max(c), b.min(d))),
        Expr::Or(v) => v
            .iter()
            .map(|x| address_bounds(registry, x))
            .reduce(|x, y| Some(x?).zip(y).map(|((a, b), (c, d))| (a.min(c), b.max(d))))?,
    }
}

fn map_bound<T, U>(b: &Bound<T>, f: impl Fn(&T) -> U) -> Bound<U> {
    match b {
        Bound::Included(x) => Bound::Included(f(x)),
        Bound::Excluded(x) => Bound::Excluded(f(x)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

fn try_bound<T, U, E>(b: &Bound<T>, f: impl Fn(&T) -> Result<U, E>) -> Result<Bound<U>, E> {
    Ok(match b {
        Bound::Included(x) => Bound::Included(f(x)?),
        Bound::Excluded(x) => Bound::Excluded(f(x)?),
        Bound::Unbounded => Bound::Unbounded,
    })
}

fn regex_escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

fn wildcard(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            '*' => o.push_str(".*"),
            '?' => o.push('.'),
            c => o.push_str(&regex_escape(&c.to_string())),
        }
    }
    o
}

/// `10.0.0.0/8` → first and last address (IPv4 mapped into IPv6); a bare address is itself.
pub fn cidr(s: &str) -> Result<(Ipv6Addr, Ipv6Addr), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u32 = match len {
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("prefix length must be 0..={max}"))?,
        None => max,
    };
    let bits = u128::from(ip6(ip));
    let host = 128 - (128 - max + len);
    let mask: u128 = if host == 128 { 0 } else { !0u128 << host };
    let lo = bits & mask;
    let hi = lo | !mask;
    Ok((Ipv6Addr::from(lo), Ipv6Addr::from(hi)))
}

/// `YYYY-MM-DD` → that day; `YYYY-MM-DDTHH:MM[:SS][Z]` → that second (minute); a number →
/// unix milliseconds. Returns `[start, end)` in unix ms.
pub fn parse_date(s: &str) -> Option<(i64, i64)> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && s.len() > 8 {
        let ms: i64 = s.parse().ok()?;
        return Some((ms, ms + 1));
    }
    let (d, t) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut it = d.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let dd: u32 = it.next()?.parse().ok()?;
    if it.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&dd)
        || !(1970..=9999).contains(&y)
    {
        return None;
    }
    let day_ms = days_from_civil(y, m, dd) * 86_400_000;
    let Some(t) = t else {
        return Some((day_ms, day_ms + 86_400_000));
    };
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() < 2 || parts.len() > 3 {
        return None;
    }
    let h: i64 = parts[0].parse().ok().filter(|h| *h < 24)?;
    let mi: i64 = parts[1].parse().ok().filter(|m| *m < 60)?;
    let (sec, width) = match parts.get(2) {
        Some(x) => (x.parse::<f64>().ok().filter(|s| *s < 61.0)? as i64, 1000),
        None => (0, 60_000),
    };
    let start = day_ms + (h * 3600 + mi * 60 + sec) * 1000;
    Some((start, start + width))
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_bounds_of_terms_conjunctions_and_disjunctions() {
        let r = Registry::default();
        let b = |q: &str| address_bounds(&r, &crate::lang::parse(q).unwrap());
        let a = |s: &str| u128::from(ip6(s.parse().unwrap()));
        let net = |s: &str| {
            let (lo, hi) = cidr(s).unwrap();
            Some((u128::from(lo), u128::from(hi)))
        };
        assert_eq!(b("net:10.0.0.0/16 port:22"), net("10.0.0.0/16"));
        assert_eq!(b("ip:10.1.2.3"), Some((a("10.1.2.3"), a("10.1.2.3"))));
        assert_eq!(
            b("ip:[10.0.0.5 TO 10.0.1.0}"),
            Some((a("10.0.0.5"), a("10.0.0.255")))
        );
        assert_eq!(b("ip:[10.0.0.5 TO *]"), Some((a("10.0.0.5"), u128::MAX)));
        // a conjunction: the intersection (possibly empty); excluded clauses do not bound
        assert_eq!(b("net:10.0.0.0/8 net:10.2.0.0/16"), net("10.2.0.0/16"));
        let (lo, hi) = b("net:10.1.0.0/16 net:10.2.0.0/16").unwrap();
        assert!(lo > hi);
        assert_eq!(b("-net:10.0.0.0/8 port:22"), None);
        assert_eq!(
            b("port:22 -net:10.0.0.0/8 net:10.3.0.0/16"),
            net("10.3.0.0/16")
        );
        // a disjunction: the hull, only when every clause is bounded
        assert_eq!(
            b("net:10.0.1.0/24 OR ip:10.0.3.9"),
            Some((a("10.0.1.0"), a("10.0.3.9")))
        );
        assert_eq!(b("net:10.0.1.0/24 OR port:22"), None);
        assert_eq!(
            b("(net:10.0.1.0/24 OR port:22) net:10.5.0.0/16"),
            net("10.5.0.0/16")
        );
        // not an address term, or not one that type-checks
        assert_eq!(b("port:22"), None);
        assert_eq!(b("NOT net:10.0.0.0/8"), None);
        assert_eq!(b("net:banana"), None);
    }

    #[test]
    fn cidr_bounds() {
        let (lo, hi) = cidr("127.0.0.0/24").unwrap();
        assert_eq!(
            lo,
            "127.0.0.0"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped()
        );
        assert_eq!(
            hi,
            "127.0.0.255"
                .parse::<std::net::Ipv4Addr>()
                .unwrap()
                .to_ipv6_mapped()
        );
        let (lo, hi) = cidr("10.1.2.3").unwrap();
        assert_eq!(lo, hi);
        let (lo, hi) = cidr("::/0").unwrap();
        assert_eq!((u128::from(lo), u128::from(hi)), (0, u128::MAX));
        assert!(cidr("1.2.3.4/33").is_err());
        assert!(cidr("x/8").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-02"), Some((86_400_000, 2 * 86_400_000)));
        let (a, _) = parse_date("2026-11-01").unwrap();
        assert_eq!(a, 1_793_491_200_000);
        assert_eq!(
            parse_date("2026-11-01T00:00:01Z"),
            Some((a + 1000, a + 2000))
        );
        assert_eq!(parse_date("1793491200000"), Some((a, a + 1)));
        assert_eq!(parse_date("2026-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
    }
}
