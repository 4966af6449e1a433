//! The query language: a hand-written recursive-descent parser from text to [`Expr`].
//!
//! ```text
//! query   := or EOF
//! or      := and ( "OR" and )*
//! and     := unary ( ["AND"] unary )*          (juxtaposition is AND)
//! unary   := ("NOT" | "-") unary | primary
//! primary := "(" or ")" | term
//! term    := FIELD ":" value | value           (a value without a field is free text)
//! value   := PHRASE | "[" bound "TO" bound "]" | ("<"|"<="|">"|">=") word | word
//! ```
//!
//! The parser knows nothing about fields: names are resolved (and values typed) by the
//! [`crate::fields::Registry`] when the expression is compiled, so a new enrichment field is one
//! registry entry. Every node keeps its [`Span`] so that errors found later (an unknown field, a
//! port that is not a number) point at the text too.

use std::fmt;
use std::ops::Bound;

/// Byte offsets `[start, end)` into the query text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// Matches everything (the empty query).
    All,
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Term(Term),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Term {
    /// `None` = free text over the default text fields.
    pub field: Option<(String, Span)>,
    pub value: Value,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Word(String),
    Phrase(String),
    /// `abc*`
    Prefix(String),
    /// `a?c*d` (any other use of `*` / `?`)
    Wildcard(String),
    Range {
        lo: Bound<String>,
        hi: Bound<String>,
    },
}

/// A query that does not parse: where, what was expected, what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// Byte offset into the query.
    pub pos: usize,
    /// 1-based column (in characters) of `pos`.
    pub column: usize,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "at column {}: expected {}, found {}",
            self.column, self.expected, self.found
        )
    }
}

impl ParseError {
    pub fn new(
        text: &str,
        pos: usize,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        let pos = pos.min(text.len());
        ParseError {
            pos,
            column: text[..pos].chars().count() + 1,
            expected: expected.into(),
            found: found.into(),
        }
    }

    /// The query with a caret under the error position (for terminals).
    pub fn pointer(&self, text: &str) -> String {
        format!("{text}\n{}^", " ".repeat(self.column - 1))
    }
}

/// Longest query accepted (bytes) and deepest nesting: bounded work on hostile input.
pub const MAX_QUERY_BYTES: usize = 8192;
pub const MAX_DEPTH: usize = 32;

pub fn parse(text: &str) -> Result<Expr, ParseError> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(ParseError::new(
            text,
            MAX_QUERY_BYTES,
            format!("a query of at most {MAX_QUERY_BYTES} bytes"),
            format!("{} bytes", text.len()),
        ));
    }
    let mut p = Parser {
        text,
        pos: 0,
        depth: 0,
    };
    p.skip_ws();
    if p.at_end() {
        return Ok(Expr::All);
    }
    let e = p.or()?;
    p.skip_ws();
    if !p.at_end() {
        let found = p.describe_here();
        return Err(p.err("an operator (AND, OR, NOT) or end of query", found));
    }
    Ok(e)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '"' | '[' | ']' | '{' | '}')
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }
    fn at_end(&self) -> bool {
        self.pos >= self.text.len()
    }
    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }
    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }
    fn err(&self, expected: &str, found: String) -> ParseError {
        ParseError::new(self.text, self.pos, expected, found)
    }
    fn describe_here(&self) -> String {
        match self.peek() {
            None => "end of query".into(),
            Some(_) => {
                let w: String = self.rest().chars().take(16).collect();
                format!("{w:?}")
            }
        }
    }
    /// The keyword `kw` (followed by a non-word char or end) at the current position.
    fn at_keyword(&self, kw: &str) -> bool {
        let r = self.rest();
        r.starts_with(kw)
            && r[kw.len()..]
                .chars()
                .next()
                .is_none_or(|c| !is_word_char(c))
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.and()?];
        loop {
            self.skip_ws();
            if self.at_keyword("OR") {
                self.pos += 2;
                parts.push(self.and()?);
            } else {
                break;
            }
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one")
        } else {
            Expr::Or(parts)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut parts = vec![self.unary()?];
        loop {
            self.skip_ws();
            if self.at_end() || self.peek() == Some(')') || self.at_keyword("OR") {
                break;
            }
            if self.at_keyword("AND") {
                self.pos += 3;
            }
            parts.push(self.unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.pop().expect("one")
        } else {
            Expr::And(parts)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        if self.at_keyword("NOT") {
            self.pos += 3;
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        if self.peek() == Some('-') {
            self.bump();
            if self.peek().is_none_or(char::is_whitespace) {
                return Err(self.err("a term right after '-'", self.describe_here()));
            }
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        self.primary()
    }

    fn nested(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<Expr, ParseError>,
    ) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(
                &format!("at most {MAX_DEPTH} levels of nesting"),
                "deeper nesting".into(),
            ));
        }
        let r = f(self);
        self.depth -= 1;
        r
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.err("a term, a field:value or '('", "end of query".into())),
            Some('(') => {
                let open = self.pos;
                self.bump();
                let e = self.nested(|p| p.or())?;
                self.skip_ws();
                if self.peek() != Some(')') {
                    let found = self.describe_here();
                    let mut e = self.err("')' to close the '(' at column", found);
                    e.expected = format!(
                        "')' to close the '(' at column {}",
                        self.text[..open].chars().count() + 1
                    );
                    return Err(e);
                }
                self.bump();
                Ok(e)
            }
            Some(')') => Err(self.err("a term, a field:value or '('", "')'".into())),
            Some(c) if matches!(c, ']' | '}') => {
                Err(self.err("a term, a field:value or '('", format!("'{c}'")))
            }
            Some(_) if self.at_keyword("AND") || self.at_keyword("OR") => {
                let kw = if self.at_keyword("AND") { "AND" } else { "OR" };
                Err(self.err("a term before the operator", kw.into()))
            }
            Some(_) => self.term(),
        }
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let start = self.pos;
        // field name: [A-Za-z0-9_.-]+ followed by ':'
        let flen = self
            .rest()
            .chars()
            .take_while(|c| is_field_char(*c))
            .map(char::len_utf8)
            .sum::<usize>();
        let mut field = None;
        if flen > 0 && self.rest()[flen..].starts_with(':') {
            let name = self.rest()[..flen].to_string();
            field = Some((
                name,
                Span {
                    start,
                    end: start + flen,
                },
            ));
            self.pos += flen + 1;
            if self.peek().is_none_or(char::is_whitespace) || self.peek() == Some(')') {
                let found = self.describe_here();
                return Err(self.err("a value after ':'", found));
            }
        }
        let value = self.value(field.is_some())?;
        Ok(Expr::Term(Term {
            field,
            value,
            span: Span {
                start,
                end: self.pos,
            },
        }))
    }

    fn word(&mut self) -> Option<String> {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.bump();
        }
        (self.pos > start).then(|| self.text[start..self.pos].to_string())
    }

    fn value(&mut self, has_field: bool) -> Result<Value, ParseError> {
        match self.peek() {
            Some('"') => {
                let open = self.pos;
                self.bump();
                let mut s = String::new();
                loop {
                    match self.bump() {
                        None => {
                            let mut e = self.err("'\"' to close the phrase", "end of query".into());
                            e.expected = format!(
                                "'\"' to close the phrase opened at column {}",
                                self.text[..open].chars().count() + 1
                            );
                            return Err(e);
                        }
                        Some('"') => break,
                        Some('\\') => match self.bump() {
                            Some(c) => s.push(c),
                            None => {
                                return Err(
                                    self.err("a character after '\\'", "end of query".into())
                                );
                            }
                        },
                        Some(c) => s.push(c),
                    }
                }
                Ok(Value::Phrase(s))
            }
            Some(c @ ('[' | '{')) if has_field => {
                self.bump();
                let lo_incl = c == '[';
                self.skip_ws();
                let lo = self
                    .bound_word()
                    .ok_or_else(|| self.err("a lower bound or '*'", self.describe_here()))?;
                self.skip_ws();
                if !self.at_keyword("TO") {
                    return Err(self.err("TO", self.describe_here()));
                }
                self.pos += 2;
                self.skip_ws();
                let hi = self
                    .bound_word()
                    .ok_or_else(|| self.err("an upper bound or '*'", self.describe_here()))?;
                self.skip_ws();
                let hi_incl = match self.peek() {
                    Some(']') => true,
                    Some('}') => false,
                    _ => {
                        return Err(self.err("']' or '}' to close the range", self.describe_here()));
                    }
                };
                self.bump();
                let b = |w: String, incl: bool| match (w.as_str(), incl) {
                    ("*", _) => Bound::Unbounded,
                    (_, true) => Bound::Included(w),
                    (_, false) => Bound::Excluded(w),
                };
                Ok(Value::Range {
                    lo: b(lo, lo_incl),
                    hi: b(hi, hi_incl),
                })
            }
            Some(c @ ('<' | '>')) if has_field => {
                self.bump();
                let incl = if self.peek() == Some('=') {
                    self.bump();
                    true
                } else {
                    false
                };
                let w = self.word().ok_or_else(|| {
                    self.err(&format!("a value after '{c}'"), self.describe_here())
                })?;
                let b = if incl {
                    Bound::Included(w)
                } else {
                    Bound::Excluded(w)
                };
                Ok(if c == '<' {
                    Value::Range {
                        lo: Bound::Unbounded,
                        hi: b,
                    }
                } else {
                    Value::Range {
                        lo: b,
                        hi: Bound::Unbounded,
                    }
                })
            }
            _ => {
                let w = self.word().ok_or_else(|| {
                    self.err(
                        "a value (word, \"phrase\", [a TO b], >x)",
                        self.describe_here(),
                    )
                })?;
                Ok(classify(w))
            }
        }
    }

    /// A range bound: a word without ']' '}' (already excluded by `is_word_char`).
    fn bound_word(&mut self) -> Option<String> {
        if self.at_keyword("TO") {
            return None;
        }
        self.word()
    }
}

fn classify(w: String) -> Value {
    let stars = w.chars().filter(|c| *c == '*' || *c == '?').count();
    if stars == 0 {
        Value::Word(w)
    } else if stars == 1 && w.ends_with('*') && w.len() > 1 {
        Value::Prefix(w[..w.len() - 1].to_string())
    } else {
        Value::Wildcard(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(field: &str, v: Value) -> Expr {
        Expr::Term(Term {
            field: Some((field.into(), Span { start: 0, end: 0 })),
            value: v,
            span: Span { start: 0, end: 0 },
        })
    }

    /// Spans zeroed, to compare shapes.
    fn shape(e: Expr) -> Expr {
        match e {
            Expr::Term(mut t) => {
                t.span = Span { start: 0, end: 0 };
                if let Some(f) = &mut t.field {
                    f.1 = Span { start: 0, end: 0 };
                }
                Expr::Term(t)
            }
            Expr::And(v) => Expr::And(v.into_iter().map(shape).collect()),
            Expr::Or(v) => Expr::Or(v.into_iter().map(shape).collect()),
            Expr::Not(b) => Expr::Not(Box::new(shape(*b))),
            Expr::All => Expr::All,
        }
    }

    fn w(s: &str) -> Value {
        Value::Word(s.into())
    }

    #[test]
    fn precedence_and_binds_tighter_than_or() {
        let e = shape(parse("port:80 product:nginx OR port:443").unwrap());
        assert_eq!(
            e,
            Expr::Or(vec![
                Expr::And(vec![t("port", w("80")), t("product", w("nginx"))]),
                t("port", w("443")),
            ])
        );
    }

    #[test]
    fn not_minus_and_parentheses() {
        let e = shape(parse("-port:22 AND NOT (tag:a OR tag:b)").unwrap());
        assert_eq!(
            e,
            Expr::And(vec![
                Expr::Not(Box::new(t("port", w("22")))),
                Expr::Not(Box::new(Expr::Or(vec![t("tag", w("a")), t("tag", w("b"))]))),
            ])
        );
    }

    #[test]
    fn values_ranges_phrases_wildcards() {
        let e = shape(
            parse(r#"port:[8000 TO 8100] last_seen:>2026-11-01 http.title:"Router \"X\"" product:ngi* cpe:a?c ip:::1"#)
                .unwrap(),
        );
        let Expr::And(v) = e else { panic!("and") };
        assert_eq!(
            v[0],
            t(
                "port",
                Value::Range {
                    lo: Bound::Included("8000".into()),
                    hi: Bound::Included("8100".into())
                }
            )
        );
        assert_eq!(
            v[1],
            t(
                "last_seen",
                Value::Range {
                    lo: Bound::Excluded("2026-11-01".into()),
                    hi: Bound::Unbounded
                }
            )
        );
        assert_eq!(v[2], t("http.title", Value::Phrase("Router \"X\"".into())));
        assert_eq!(v[3], t("product", Value::Prefix("ngi".into())));
        assert_eq!(v[4], t("cpe", Value::Wildcard("a?c".into())));
        assert_eq!(v[5], t("ip", w("::1")));
        let e = shape(parse("port:{* TO 1024} beacon.period:<=60").unwrap());
        let Expr::And(v) = e else { panic!("and") };
        assert_eq!(
            v[0],
            t(
                "port",
                Value::Range {
                    lo: Bound::Unbounded,
                    hi: Bound::Excluded("1024".into())
                }
            )
        );
        assert_eq!(
            v[1],
            t(
                "beacon.period",
                Value::Range {
                    lo: Bound::Unbounded,
                    hi: Bound::Included("60".into())
                }
            )
        );
    }

    #[test]
    fn free_text_and_empty() {
        assert_eq!(parse("  ").unwrap(), Expr::All);
        let Expr::Term(t) = parse("ALARM").unwrap() else {
            panic!()
        };
        assert_eq!(t.field, None);
        assert_eq!(t.value, w("ALARM"));
        // keywords are case-sensitive: `and` is a word
        assert!(matches!(parse("a and b").unwrap(), Expr::And(v) if v.len() == 3));
    }

    #[test]
    fn spans_point_into_the_text() {
        let q = "port:80 product:nginx";
        let Expr::And(v) = parse(q).unwrap() else {
            panic!()
        };
        let Expr::Term(t) = &v[1] else { panic!() };
        assert_eq!(&q[t.span.start..t.span.end], "product:nginx");
        let (_, fs) = t.field.as_ref().unwrap();
        assert_eq!(&q[fs.start..fs.end], "product");
    }

    fn err(q: &str) -> ParseError {
        parse(q).unwrap_err()
    }

    #[test]
    fn errors_point_at_the_problem_and_say_what_was_expected() {
        let e = err("port:80 AND");
        assert_eq!(e.column, 12);
        assert!(e.expected.contains("a term"), "{e}");
        assert_eq!(e.found, "end of query");

        let e = err("(port:80 OR port:443");
        assert_eq!(e.column, 21);
        assert!(
            e.expected.contains("')' to close the '(' at column 1"),
            "{e}"
        );

        let e = err("port:[80 100]");
        assert_eq!(e.column, 10);
        assert_eq!(e.expected, "TO");

        let e = err("http.title:\"abc");
        assert!(e.expected.contains("phrase opened at column 12"), "{e}");

        let e = err("port: 80");
        assert_eq!(e.column, 6);
        assert!(e.expected.contains("value after ':'"), "{e}");

        let e = err("port:80 )");
        assert_eq!(e.column, 9);

        let e = err("OR port:1");
        assert_eq!(e.column, 1);
        assert_eq!(e.found, "OR");

        let e = err("- port:1");
        assert_eq!(e.column, 2);

        let e = err("é port:[1 TO 2");
        assert_eq!(e.column, 15, "columns count characters, not bytes");
        assert!(e.pointer("é port:[1 TO 2").ends_with("              ^"));
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = "(".repeat(1000) + "a" + &")".repeat(1000);
        let e = err(&deep);
        assert!(e.expected.contains("levels of nesting"), "{e}");
        let nots = "NOT ".repeat(100) + "a";
        assert!(err(&nots).expected.contains("nesting"));
        let long = "a ".repeat(MAX_QUERY_BYTES);
        assert!(err(&long).expected.contains("bytes"));
    }
}
