//! Parser for the `nmap-service-probes` file format and the loaded probe database.
//!
//! The format is documented at <https://nmap.org/book/vscan-fileformat.html>. Every line is parsed
//! independently; a line that cannot be understood is rejected with its number and a reason and the
//! rest of the file still loads (see [`ParseReport`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use pcre2::bytes::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Where Debian's `nmap` package installs its probe file.
pub const NMAP_PROBES_PATH: &str = "/usr/share/nmap/nmap-service-probes";

/// Our own probes file (same format), shipped with the crate and always loaded.
pub const BUILTIN_PROBES: &str = include_str!("../../data/overlord-service-probes");

/// Errors that stop a probe file from loading at all (single bad lines are only reported).
#[derive(Debug, thiserror::Error)]
pub enum ProbeFileError {
    #[error("cannot read probe file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("probe file {path} defines no probe at all ({rejected} lines rejected)")]
    Empty { path: String, rejected: usize },
}

/// Transport of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// A list of port ranges (`80,443,8000-8100`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortList(pub Vec<(u16, u16)>);

impl PortList {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|&(a, b)| a <= port && port <= b)
    }

    /// Parses `80,443,8000-8100` (an optional `T:`/`U:` prefix per item is accepted).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let item = item
                .strip_prefix("T:")
                .or_else(|| item.strip_prefix("U:"))
                .unwrap_or(item);
            let (a, b) = match item.split_once('-') {
                Some((a, b)) => (a, b),
                None => (item, item),
            };
            let a: u16 = a.trim().parse().map_err(|_| format!("bad port {a:?}"))?;
            let b: u16 = b.trim().parse().map_err(|_| format!("bad port {b:?}"))?;
            if a > b {
                return Err(format!("reversed port range {a}-{b}"));
            }
            out.push((a, b));
        }
        if out.is_empty() {
            return Err("empty port list".into());
        }
        Ok(PortList(out))
    }
}

/// Version-information templates of a match line (`p/…/ v/…/ i/…/ h/…/ o/…/ d/…/ cpe:/…/`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionTemplate {
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
    pub cpe: Vec<String>,
}

/// One `match` or `softmatch` line.
#[derive(Debug)]
pub struct MatchRule {
    pub soft: bool,
    pub service: String,
    /// The pattern as written in the file (high bytes rendered as `\xHH`).
    pub pattern: String,
    pub case_insensitive: bool,
    pub dot_all: bool,
    pub template: VersionTemplate,
    /// 1-based line number in its file.
    pub line: usize,
    /// Index into [`ProbeDb::files`].
    pub file: usize,
    pub(crate) regex: Regex,
}

impl MatchRule {
    /// Runs the rule's regex on a response; returns the capture groups (index 0 = whole match).
    pub fn captures<'a>(&self, data: &'a [u8]) -> Option<Vec<Option<&'a [u8]>>> {
        match self.regex.captures(data) {
            Ok(Some(c)) => Some(
                (0..c.len())
                    .map(|i| c.get(i).map(|m| m.as_bytes()))
                    .collect(),
            ),
            // A match error (e.g. PCRE's backtracking limit on hostile input) counts as no match.
            _ => None,
        }
    }
}

/// One `Probe` section.
#[derive(Debug)]
pub struct Probe {
    pub protocol: Protocol,
    pub name: String,
    pub payload: Vec<u8>,
    pub no_payload: bool,
    pub ports: PortList,
    pub sslports: PortList,
    /// 1 (common) … 9 (rare). The NULL probe and probes without a `rarity` line count as 1 / 5.
    pub rarity: u8,
    pub totalwaitms: Option<u64>,
    pub tcpwrappedms: Option<u64>,
    pub fallback: Vec<String>,
    pub matches: Vec<MatchRule>,
    pub line: usize,
    pub file: usize,
}

impl Probe {
    pub fn is_null(&self) -> bool {
        self.protocol == Protocol::Tcp && self.payload.is_empty()
    }
}

/// A rejected line and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    pub line: usize,
    pub reason: String,
    /// The line's start (capped at 160 chars).
    pub text: String,
}

/// Parse coverage of one probe file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseReport {
    pub source: String,
    pub lines: usize,
    pub probes: usize,
    pub matches: usize,
    pub softmatches: usize,
    /// `match`/`softmatch` lines whose regex PCRE2 refused (included in `rejected`).
    pub regex_failures: usize,
    pub rejected: Vec<RejectedLine>,
}

impl ParseReport {
    /// Share of match/softmatch lines that loaded (0..=1).
    pub fn match_coverage(&self) -> f64 {
        let ok = (self.matches + self.softmatches) as f64;
        let total = ok
            + self.regex_failures as f64
            + self
                .rejected
                .iter()
                .filter(|r| r.text.starts_with("match") || r.text.starts_with("softmatch"))
                .filter(|r| !r.reason.starts_with("regex"))
                .count() as f64;
        if total == 0.0 { 1.0 } else { ok / total }
    }
}

/// The loaded probe database: every probe of every file, merged by (protocol, name).
#[derive(Debug, Default)]
pub struct ProbeDb {
    pub probes: Vec<Probe>,
    /// `Exclude` ports (nmap's default excludes printer ports): never probed except when asked.
    pub exclude: Vec<PortList>,
    pub files: Vec<String>,
    pub reports: Vec<ParseReport>,
    index: HashMap<(Protocol, String), usize>,
}

impl ProbeDb {
    /// Our own probes plus nmap's file when it is installed (the usual choice).
    pub fn load_default() -> Result<Arc<ProbeDb>, ProbeFileError> {
        let mut db = ProbeDb::default();
        if Path::new(NMAP_PROBES_PATH).exists() {
            db.add_file(Path::new(NMAP_PROBES_PATH))?;
        }
        db.add_source("builtin:overlord-service-probes", BUILTIN_PROBES.as_bytes());
        Ok(Arc::new(db))
    }

    /// Only our own probes file.
    pub fn builtin() -> ProbeDb {
        let mut db = ProbeDb::default();
        db.add_source("builtin:overlord-service-probes", BUILTIN_PROBES.as_bytes());
        db
    }

    /// Loads one file by path (nmap's, or a user's own) on top of what is loaded already.
    pub fn add_file(&mut self, path: &Path) -> Result<&ParseReport, ProbeFileError> {
        let bytes = std::fs::read(path).map_err(|source| ProbeFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let before = self.probes.len();
        let report_idx = self.add_source(&path.display().to_string(), &bytes);
        let r = &self.reports[report_idx];
        if r.probes == 0 && self.probes.len() == before {
            return Err(ProbeFileError::Empty {
                path: path.display().to_string(),
                rejected: r.rejected.len(),
            });
        }
        Ok(&self.reports[report_idx])
    }

    /// Parses probe-file text from memory. Returns the index of its [`ParseReport`].
    pub fn add_source(&mut self, name: &str, bytes: &[u8]) -> usize {
        let file = self.files.len();
        self.files.push(name.to_string());
        let mut report = ParseReport {
            source: name.to_string(),
            ..Default::default()
        };
        // Index of the probe that following lines belong to.
        let mut current: Option<usize> = None;
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let lineno = i + 1;
            report.lines = lineno;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let line = trim_bytes(raw);
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            match self.parse_line(line, lineno, file, &mut current, &mut report) {
                Ok(()) => {}
                Err(reason) => {
                    if reason.starts_with("regex") {
                        report.regex_failures += 1;
                    }
                    report.rejected.push(RejectedLine {
                        line: lineno,
                        reason,
                        text: String::from_utf8_lossy(&line[..line.len().min(160)]).into_owned(),
                    })
                }
            }
        }
        self.reports.push(report);
        self.reports.len() - 1
    }

    fn parse_line(
        &mut self,
        line: &[u8],
        lineno: usize,
        file: usize,
        current: &mut Option<usize>,
        report: &mut ParseReport,
    ) -> Result<(), String> {
        let (directive, rest) = split_word(line);
        let directive = std::str::from_utf8(directive).map_err(|_| "directive is not UTF-8")?;
        let rest_str = || String::from_utf8_lossy(rest).trim().to_string();
        let need_probe = |current: &Option<usize>| current.ok_or("directive before any Probe line");
        match directive {
            "Exclude" => {
                self.exclude.push(PortList::parse(&rest_str())?);
                Ok(())
            }
            "Probe" => {
                let p = parse_probe_line(rest, lineno, file)?;
                let key = (p.protocol, p.name.clone());
                if let Some(&idx) = self.index.get(&key) {
                    // A later file extends an earlier probe of the same name (its payload must agree).
                    if self.probes[idx].payload != p.payload {
                        *current = None;
                        return Err(format!(
                            "probe {} redefined with a different payload",
                            p.name
                        ));
                    }
                    *current = Some(idx);
                } else {
                    self.index.insert(key, self.probes.len());
                    *current = Some(self.probes.len());
                    self.probes.push(p);
                }
                report.probes += 1;
                Ok(())
            }
            "match" | "softmatch" => {
                let idx = need_probe(current)?;
                let rule = parse_match_line(directive == "softmatch", rest, lineno, file)?;
                if rule.soft {
                    report.softmatches += 1;
                } else {
                    report.matches += 1;
                }
                self.probes[idx].matches.push(rule);
                Ok(())
            }
            "ports" | "sslports" => {
                let idx = need_probe(current)?;
                let pl = PortList::parse(&rest_str())?;
                let p = &mut self.probes[idx];
                let target = if directive == "ports" {
                    &mut p.ports
                } else {
                    &mut p.sslports
                };
                target.0.extend(pl.0);
                Ok(())
            }
            "rarity" => {
                let idx = need_probe(current)?;
                let r: u8 = rest_str()
                    .parse()
                    .map_err(|_| format!("bad rarity {:?}", rest_str()))?;
                if !(1..=9).contains(&r) {
                    return Err(format!("rarity {r} outside 1..=9"));
                }
                self.probes[idx].rarity = r;
                Ok(())
            }
            "totalwaitms" | "tcpwrappedms" => {
                let idx = need_probe(current)?;
                let v: u64 = rest_str()
                    .parse()
                    .map_err(|_| format!("bad {directive} {:?}", rest_str()))?;
                if v == 0 || v > 600_000 {
                    return Err(format!("{directive} {v} outside 1..=600000"));
                }
                if directive == "totalwaitms" {
                    self.probes[idx].totalwaitms = Some(v);
                } else {
                    self.probes[idx].tcpwrappedms = Some(v);
                }
                Ok(())
            }
            "fallback" => {
                let idx = need_probe(current)?;
                let names: Vec<String> = rest_str()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err("empty fallback list".into());
                }
                self.probes[idx].fallback.extend(names);
                Ok(())
            }
            other => Err(format!("unknown directive {other:?}")),
        }
    }

    /// Finds a probe by protocol and name.
    pub fn probe(&self, protocol: Protocol, name: &str) -> Option<&Probe> {
        self.index
            .get(&(protocol, name.to_string()))
            .map(|&i| &self.probes[i])
    }

    pub(crate) fn probe_index(&self, protocol: Protocol, name: &str) -> Option<usize> {
        self.index.get(&(protocol, name.to_string())).copied()
    }

    /// Totals over every loaded file.
    pub fn coverage(&self) -> ParseReport {
        let mut t = ParseReport {
            source: self.files.join(" + "),
            ..Default::default()
        };
        for r in &self.reports {
            t.lines += r.lines;
            t.probes += r.probes;
            t.matches += r.matches;
            t.softmatches += r.softmatches;
            t.regex_failures += r.regex_failures;
            t.rejected.extend(r.rejected.iter().cloned());
        }
        t
    }

    pub fn is_excluded(&self, port: u16) -> bool {
        self.exclude.iter().any(|e| e.contains(port))
    }
}

fn trim_bytes(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

fn split_word(b: &[u8]) -> (&[u8], &[u8]) {
    let b = trim_bytes(b);
    match b.iter().position(|c| c.is_ascii_whitespace()) {
        Some(i) => (&b[..i], trim_bytes(&b[i..])),
        None => (b, &[]),
    }
}

/// `Probe <TCP|UDP> <name> q|payload| [no-payload]`
fn parse_probe_line(rest: &[u8], line: usize, file: usize) -> Result<Probe, String> {
    let (proto, rest) = split_word(rest);
    let protocol = match proto {
        b"TCP" => Protocol::Tcp,
        b"UDP" => Protocol::Udp,
        other => {
            return Err(format!(
                "probe protocol must be TCP or UDP, got {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    let (name, rest) = split_word(rest);
    if name.is_empty() || !name.iter().all(|c| c.is_ascii_graphic()) {
        return Err("missing or invalid probe name".into());
    }
    let name = String::from_utf8_lossy(name).into_owned();
    if rest.len() < 3 || rest[0] != b'q' {
        return Err("probe string must look like q|...|".into());
    }
    let delim = rest[1];
    let body = &rest[2..];
    let end = body
        .iter()
        .position(|&c| c == delim)
        .ok_or("unterminated probe string")?;
    let payload = unescape_payload(&body[..end])?;
    let tail = trim_bytes(&body[end + 1..]);
    let no_payload = match tail {
        b"" => false,
        b"no-payload" => true,
        other => {
            return Err(format!(
                "unexpected text after probe string: {:?}",
                String::from_utf8_lossy(other)
            ));
        }
    };
    Ok(Probe {
        protocol,
        name,
        payload,
        no_payload,
        ports: PortList::default(),
        sslports: PortList::default(),
        rarity: 5,
        totalwaitms: None,
        tcpwrappedms: None,
        fallback: Vec::new(),
        matches: Vec::new(),
        line,
        file,
    })
}

/// C-style escapes of probe strings: `\\ \0 \a \b \f \n \r \t \v \xHH`, any other `\c` is `c`.
pub fn unescape_payload(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = *s
            .get(i + 1)
            .ok_or("probe string ends with a lone backslash")?;
        i += 2;
        out.push(match e {
            b'0' => 0,
            b'a' => 7,
            b'b' => 8,
            b'f' => 12,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 11,
            b'x' => {
                let h = s.get(i..i + 2).ok_or("truncated \\x escape")?;
                let h = std::str::from_utf8(h).map_err(|_| "bad \\x escape")?;
                let v = u8::from_str_radix(h, 16).map_err(|_| format!("bad \\x escape {h:?}"))?;
                i += 2;
                v
            }
            other => other,
        });
    }
    Ok(out)
}

/// `<service> m<d>regex<d>[is] [p/…/] [v/…/] … [cpe:/…/[a]]`
fn parse_match_line(
    soft: bool,
    rest: &[u8],
    line: usize,
    file: usize,
) -> Result<MatchRule, String> {
    let (service, rest) = split_word(rest);
    if service.is_empty() || !service.iter().all(|c| c.is_ascii_graphic()) {
        return Err("missing or invalid service name".into());
    }
    let service = String::from_utf8_lossy(service).into_owned();
    if rest.len() < 3 || rest[0] != b'm' {
        return Err("pattern must look like m|regex|flags".into());
    }
    let delim = rest[1];
    let body = &rest[2..];
    let end = body
        .iter()
        .position(|&c| c == delim)
        .ok_or("unterminated pattern")?;
    let pattern = pattern_to_str(&body[..end]);
    let mut rest = &body[end + 1..];
    let (mut ci, mut dotall) = (false, false);
    while let Some(&f) = rest.first() {
        match f {
            b'i' => ci = true,
            b's' => dotall = true,
            c if c.is_ascii_whitespace() => break,
            c => return Err(format!("unknown pattern flag {:?}", c as char)),
        }
        rest = &rest[1..];
    }
    let template = parse_template(rest)?;
    let regex = RegexBuilder::new()
        .caseless(ci)
        .dotall(dotall)
        .jit_if_available(true)
        .build(&pattern)
        .map_err(|e| format!("regex does not compile: {e}"))?;
    Ok(MatchRule {
        soft,
        service,
        pattern,
        case_insensitive: ci,
        dot_all: dotall,
        template,
        line,
        file,
        regex,
    })
}

/// Patterns are bytes; raw high bytes become `\xHH` so PCRE2 (non-UTF mode) sees the same bytes.
fn pattern_to_str(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii() {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    s
}

fn parse_template(mut rest: &[u8]) -> Result<VersionTemplate, String> {
    let mut t = VersionTemplate::default();
    loop {
        rest = trim_bytes(rest);
        if rest.is_empty() {
            return Ok(t);
        }
        let (key, after) = if let Some(r) = rest.strip_prefix(b"cpe:") {
            ("cpe", r)
        } else {
            let k = match rest[0] {
                b'p' => "p",
                b'v' => "v",
                b'i' => "i",
                b'h' => "h",
                b'o' => "o",
                b'd' => "d",
                c => return Err(format!("unknown version field {:?}", c as char)),
            };
            (k, &rest[1..])
        };
        let delim = *after.first().ok_or("version field without a value")?;
        if delim.is_ascii_alphanumeric() || delim.is_ascii_whitespace() {
            return Err(format!(
                "bad delimiter {:?} after field {key}",
                delim as char
            ));
        }
        let body = &after[1..];
        let end = body
            .iter()
            .position(|&c| c == delim)
            .ok_or_else(|| format!("unterminated {key} field"))?;
        let value = String::from_utf8_lossy(&body[..end]).into_owned();
        rest = &body[end + 1..];
        if key == "cpe" {
            // Optional flags after a CPE (only `a` exists: the CPE is assumed, not detected).
            while let Some(&c) = rest.first() {
                if c.is_ascii_alphabetic() {
                    rest = &rest[1..];
                } else {
                    break;
                }
            }
            t.cpe.push(format!("cpe:/{value}"));
            continue;
        }
        let slot = match key {
            "p" => &mut t.product,
            "v" => &mut t.version,
            "i" => &mut t.info,
            "h" => &mut t.hostname,
            "o" => &mut t.os,
            _ => &mut t.device,
        };
        if slot.is_some() {
            return Err(format!("field {key} given twice"));
        }
        *slot = Some(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_probe_and_match_fields() {
        let mut db = ProbeDb::default();
        let src = b"Probe TCP NULL q||\ntotalwaitms 6000\nmatch ssh m|^SSH-([\\d.]+)-OpenSSH_([\\w.]+)|i p/OpenSSH/ v/$2/ i/protocol $1/ cpe:/a:openbsd:openssh:$2/a\nsoftmatch ftp m/^220 /\nProbe TCP Get q|GET / HTTP/1.0\\r\\n\\r\\n|\nrarity 1\nports 80,8000-8010\nfallback NULL\nbogus line\nmatch x m|(| p/broken/\n";
        let r = db.add_source("t", src);
        let r = &db.reports[r];
        assert_eq!((r.probes, r.matches, r.softmatches), (2, 1, 1));
        assert_eq!(r.rejected.len(), 2, "{:?}", r.rejected);
        assert_eq!(r.regex_failures, 1);
        assert_eq!(r.rejected[0].line, 9);
        let get = db.probe(Protocol::Tcp, "Get").unwrap();
        assert_eq!(get.payload, b"GET / HTTP/1.0\r\n\r\n");
        assert!(get.ports.contains(8005) && !get.ports.contains(8011));
        let m = &db.probes[0].matches[0];
        assert!(m.case_insensitive && !m.dot_all);
        assert_eq!(
            m.template.cpe,
            vec!["cpe:/a:openbsd:openssh:$2".to_string()]
        );
        assert!(m.captures(b"ssh-2.0-openssh_9.2p1\r\n").is_some());
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape_payload(br"\x00\0a\\\|\r").unwrap(), b"\0\0a\\|\r");
        assert!(unescape_payload(br"\x4").is_err());
        assert!(unescape_payload(b"\\").is_err());
    }
}
