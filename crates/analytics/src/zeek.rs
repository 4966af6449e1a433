//! Streaming readers for Zeek `conn`, `dns`, `http` and `ssl` logs.
//!
//! * TSV: columns are mapped from the `#fields` header (re-read whenever a header block appears
//!   again, so concatenated logs work); `-` (unset) and `(empty)` are handled; line order is free.
//! * JSON lines: one object per line, `ts` as epoch seconds or an ISO-8601 string.
//! * gzip: detected from the magic bytes, any file may be compressed.
//!
//! Memory is bounded: the reader keeps one buffer (1 MiB) plus at most one line of
//! [`MAX_LINE`] bytes; longer lines are counted as bad and skipped. A bad line never aborts a read:
//! it is counted, and the first few are kept with their line number and reason.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::AnalyticsError;

/// Longest accepted log line, in bytes.
pub const MAX_LINE: usize = 64 * 1024;
/// How many bad lines are kept (with reason) per file.
pub const MAX_BAD_EXAMPLES: usize = 5;

/// The Zeek log types the beacon detector reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum LogKind {
    Conn,
    Dns,
    Http,
    Ssl,
}

/// The finding schema's name of a log type.
impl From<LogKind> for overlord_core::finding::beacon::BeaconLog {
    fn from(k: LogKind) -> Self {
        use overlord_core::finding::beacon::BeaconLog;
        match k {
            LogKind::Conn => BeaconLog::Conn,
            LogKind::Dns => BeaconLog::Dns,
            LogKind::Http => BeaconLog::Http,
            LogKind::Ssl => BeaconLog::Ssl,
        }
    }
}

impl LogKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LogKind::Conn => "conn",
            LogKind::Dns => "dns",
            LogKind::Http => "http",
            LogKind::Ssl => "ssl",
        }
    }

    fn from_path_name(s: &str) -> Option<LogKind> {
        match s {
            "conn" => Some(LogKind::Conn),
            "dns" => Some(LogKind::Dns),
            "http" => Some(LogKind::Http),
            "ssl" => Some(LogKind::Ssl),
            _ => None,
        }
    }

    /// Guess from a file name such as `conn.00:00:00-01:00:00.log.gz` or `ssl.json`.
    pub fn from_file_name(path: &Path) -> Option<LogKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        let stem = name.split(['.', '_', '-']).next()?;
        LogKind::from_path_name(stem)
    }
}

/// Transport protocol of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    #[default]
    Unknown,
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn parse(b: &[u8]) -> Proto {
        match b {
            b"tcp" => Proto::Tcp,
            b"udp" => Proto::Udp,
            b"icmp" => Proto::Icmp,
            _ => Proto::Unknown,
        }
    }
}

/// One parsed log line, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub kind: LogKind,
    /// Timestamp in microseconds since the Unix epoch.
    pub ts_us: i64,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub dst_port: u16,
    pub proto: Proto,
    /// dns: the query; http: the Host header; ssl: the SNI server name. `None` when unset.
    pub name: Option<&'a str>,
    /// dns only: the answer was NXDOMAIN.
    pub nxdomain: bool,
    pub orig_bytes: u64,
    pub resp_bytes: u64,
    /// conn only: the connection never got established (S0, REJ, RSTOS0, RSTRH, SH, SHR).
    pub failed: bool,
}

/// A line that could not be used (the finding schema's record).
pub use overlord_core::finding::beacon::BadLine;

/// Counters of one read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadStats {
    /// Data lines seen (headers and blank lines excluded).
    pub lines: u64,
    /// Lines turned into records.
    pub records: u64,
    /// Lines counted as bad (malformed, unparsable fields, too long, no header yet, ...).
    pub bad_lines: u64,
    /// The first few bad lines.
    pub bad_examples: Vec<BadLine>,
    pub bytes: u64,
}

impl ReadStats {
    fn bad(&mut self, line: u64, reason: impl Into<String>) {
        self.bad_lines += 1;
        if self.bad_examples.len() < MAX_BAD_EXAMPLES {
            self.bad_examples.push(BadLine {
                line,
                reason: reason.into(),
            });
        }
    }

    pub fn merge(&mut self, other: &ReadStats) {
        self.lines += other.lines;
        self.records += other.records;
        self.bad_lines += other.bad_lines;
        self.bytes += other.bytes;
        for b in &other.bad_examples {
            if self.bad_examples.len() < MAX_BAD_EXAMPLES {
                self.bad_examples.push(b.clone());
            }
        }
    }
}

/// Open a file, transparently gunzipping it, and stream its records to `visit`.
pub fn read_path(
    path: &Path,
    visit: &mut dyn FnMut(&Record<'_>),
) -> Result<ReadStats, AnalyticsError> {
    let file = File::open(path).map_err(|e| AnalyticsError::io(path, e))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let gz = {
        let head = reader.fill_buf().map_err(|e| AnalyticsError::io(path, e))?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    let hint = LogKind::from_file_name(path);
    let res = if gz {
        let dec = flate2::bufread::MultiGzDecoder::new(reader);
        read_stream(BufReader::with_capacity(1 << 20, dec), hint, visit)
    } else {
        read_stream(reader, hint, visit)
    };
    res.map_err(|e| match e {
        AnalyticsError::Io { source, .. } => AnalyticsError::io(path, source),
        AnalyticsError::UnknownLogType { detail, .. } => AnalyticsError::UnknownLogType {
            path: path.display().to_string(),
            detail,
        },
        other => other,
    })
}

/// Stream records from any reader (already decompressed). `hint` is the log type if known
/// (TSV files name it in `#path`; JSON files are recognised by their fields otherwise).
pub fn read_stream<R: BufRead>(
    mut reader: R,
    hint: Option<LogKind>,
    visit: &mut dyn FnMut(&Record<'_>),
) -> Result<ReadStats, AnalyticsError> {
    let mut stats = ReadStats::default();
    let mut parser = LineParser {
        hint,
        tsv: None,
        pending_path: None,
        json_kind: hint,
    };
    let mut carry: Vec<u8> = Vec::new();
    let mut skipping_long = false;
    let mut line_no: u64 = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(AnalyticsError::io(Path::new("<stream>"), e)),
        };
        if buf.is_empty() {
            break;
        }
        let len = buf.len();
        stats.bytes += len as u64;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            line_no += 1;
            if skipping_long {
                skipping_long = false;
                start = nl + 1;
                continue;
            }
            if carry.is_empty() {
                if nl - start > MAX_LINE {
                    stats.lines += 1;
                    stats.bad(line_no, "line too long");
                } else {
                    parser.line(&buf[start..nl], line_no, &mut stats, visit)?;
                }
            } else {
                carry.extend_from_slice(&buf[start..nl]);
                if carry.len() > MAX_LINE {
                    stats.lines += 1;
                    stats.bad(line_no, "line too long");
                } else {
                    let line = std::mem::take(&mut carry);
                    parser.line(&line, line_no, &mut stats, visit)?;
                    carry = line;
                }
                carry.clear();
            }
            start = nl + 1;
        }
        if start < len && !skipping_long {
            carry.extend_from_slice(&buf[start..]);
            if carry.len() > MAX_LINE {
                stats.lines += 1;
                stats.bad(line_no + 1, "line too long");
                carry.clear();
                skipping_long = true;
            }
        }
        reader.consume(len);
    }
    if !carry.is_empty() && !skipping_long {
        line_no += 1;
        let line = std::mem::take(&mut carry);
        parser.line(&line, line_no, &mut stats, visit)?;
    }
    Ok(stats)
}

const S_TS: usize = 0;
const S_SRC: usize = 1;
const S_DST: usize = 2;
const S_DPORT: usize = 3;
const S_PROTO: usize = 4;
const S_OBYTES: usize = 5;
const S_RBYTES: usize = 6;
const S_STATE: usize = 7;
const S_NAME: usize = 8;
const S_RCODE: usize = 9;
const NSLOTS: usize = 10;
const UNUSED: u8 = u8::MAX;

struct TsvLayout {
    kind: LogKind,
    slot_of: Vec<u8>,
    max_col: usize,
    required: u16,
}

impl TsvLayout {
    fn new(kind: LogKind, fields: &[&str]) -> Result<TsvLayout, String> {
        let mut slot_of = vec![UNUSED; fields.len()];
        let mut present = 0u16;
        for (i, f) in fields.iter().enumerate() {
            let slot = match (*f, kind) {
                ("ts", _) => S_TS,
                ("id.orig_h", _) => S_SRC,
                ("id.resp_h", _) => S_DST,
                ("id.resp_p", _) => S_DPORT,
                ("proto", _) => S_PROTO,
                ("orig_bytes", LogKind::Conn) | ("request_body_len", LogKind::Http) => S_OBYTES,
                ("resp_bytes", LogKind::Conn) | ("response_body_len", LogKind::Http) => S_RBYTES,
                ("conn_state", LogKind::Conn) => S_STATE,
                ("query", LogKind::Dns)
                | ("host", LogKind::Http)
                | ("server_name", LogKind::Ssl) => S_NAME,
                ("rcode_name", LogKind::Dns) => S_RCODE,
                _ => continue,
            };
            slot_of[i] = slot as u8;
            present |= 1 << slot;
        }
        let required = (1 << S_TS) | (1 << S_SRC) | (1 << S_DST);
        if present & required != required {
            return Err("#fields lacks one of ts, id.orig_h, id.resp_h".into());
        }
        let max_col = slot_of.iter().rposition(|&s| s != UNUSED).unwrap_or(0);
        slot_of.truncate(max_col + 1);
        Ok(TsvLayout {
            kind,
            slot_of,
            max_col,
            required,
        })
    }
}

struct LineParser {
    hint: Option<LogKind>,
    tsv: Option<TsvLayout>,
    pending_path: Option<LogKind>,
    json_kind: Option<LogKind>,
}

impl LineParser {
    #[inline]
    fn line(
        &mut self,
        mut line: &[u8],
        line_no: u64,
        stats: &mut ReadStats,
        visit: &mut dyn FnMut(&Record<'_>),
    ) -> Result<(), AnalyticsError> {
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.is_empty() {
            return Ok(());
        }
        match line[0] {
            b'#' => self.header(line, line_no, stats),
            b'{' => {
                stats.lines += 1;
                self.json(line, line_no, stats, visit);
                Ok(())
            }
            _ => {
                stats.lines += 1;
                match &self.tsv {
                    Some(layout) => match parse_tsv(layout, line) {
                        Ok(rec) => {
                            stats.records += 1;
                            visit(&rec);
                        }
                        Err(reason) => stats.bad(line_no, reason),
                    },
                    None => stats.bad(line_no, "data line before any #fields header"),
                }
                Ok(())
            }
        }
    }

    fn header(
        &mut self,
        line: &[u8],
        line_no: u64,
        stats: &mut ReadStats,
    ) -> Result<(), AnalyticsError> {
        let text = String::from_utf8_lossy(line);
        let mut parts = text.split('\t');
        match parts.next() {
            Some("#path") => {
                let p = parts.next().unwrap_or("");
                match LogKind::from_path_name(p) {
                    Some(k) => self.pending_path = Some(k),
                    None => {
                        return Err(AnalyticsError::UnknownLogType {
                            path: String::new(),
                            detail: format!("#path {p:?} is not one of conn, dns, http, ssl"),
                        });
                    }
                }
            }
            Some("#fields") => {
                let fields: Vec<&str> = parts.collect();
                let kind = self
                    .pending_path
                    .or(self.hint)
                    .or_else(|| guess_kind(fields.iter().copied()));
                let Some(kind) = kind else {
                    return Err(AnalyticsError::UnknownLogType {
                        path: String::new(),
                        detail: "no #path header and the #fields match no supported log".into(),
                    });
                };
                match TsvLayout::new(kind, &fields) {
                    Ok(l) => self.tsv = Some(l),
                    Err(e) => {
                        stats.bad(line_no, e);
                        self.tsv = None;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn json(
        &mut self,
        line: &[u8],
        line_no: u64,
        stats: &mut ReadStats,
        visit: &mut dyn FnMut(&Record<'_>),
    ) {
        let obj: JsonLine<'_> = match serde_json::from_slice(line) {
            Ok(o) => o,
            Err(e) => {
                stats.bad(line_no, format!("invalid JSON: {e}"));
                return;
            }
        };
        let kind = match self.json_kind {
            Some(k) => k,
            None => match obj.guess_kind() {
                Some(k) => {
                    self.json_kind = Some(k);
                    k
                }
                None => {
                    stats.bad(line_no, "cannot tell the log type of this JSON line");
                    return;
                }
            },
        };
        match obj.to_record(kind) {
            Ok(rec) => {
                stats.records += 1;
                visit(&rec);
            }
            Err(reason) => stats.bad(line_no, reason),
        }
    }
}

fn guess_kind<'a>(mut fields: impl Iterator<Item = &'a str>) -> Option<LogKind> {
    let mut conn = false;
    let mut found = None;
    for f in fields.by_ref() {
        match f {
            "query" | "qtype_name" | "rcode_name" => found = found.or(Some(LogKind::Dns)),
            "server_name" | "cipher" | "ssl_history" => found = found.or(Some(LogKind::Ssl)),
            "method" | "uri" | "user_agent" => found = found.or(Some(LogKind::Http)),
            "conn_state" => conn = true,
            _ => {}
        }
    }
    found.or(if conn { Some(LogKind::Conn) } else { None })
}

#[inline]
fn unset(b: &[u8]) -> bool {
    b.is_empty() || b == b"-" || b == b"(empty)"
}

fn parse_tsv<'a>(layout: &TsvLayout, line: &'a [u8]) -> Result<Record<'a>, &'static str> {
    let mut f: [&[u8]; NSLOTS] = [b""; NSLOTS];
    let mut got = 0u16;
    let mut col = 0usize;
    let mut start = 0usize;
    let slot_of = &layout.slot_of;
    let mut it = memchr::memchr_iter(b'\t', line);
    loop {
        let end = it.next().unwrap_or(line.len());
        let s = slot_of[col];
        if s != UNUSED {
            f[s as usize] = &line[start..end];
            got |= 1 << s;
        }
        if col == layout.max_col {
            break;
        }
        if end == line.len() {
            return Err("fewer columns than #fields");
        }
        col += 1;
        start = end + 1;
    }
    if got & layout.required != layout.required {
        return Err("missing required column");
    }
    let ts_us = parse_ts(f[S_TS]).ok_or("bad ts")?;
    let src = parse_ip(f[S_SRC]).ok_or("bad id.orig_h")?;
    let dst = parse_ip(f[S_DST]).ok_or("bad id.resp_h")?;
    let dst_port = if unset(f[S_DPORT]) {
        0
    } else {
        parse_u64(f[S_DPORT]).ok_or("bad id.resp_p")?.min(65535) as u16
    };
    let num = |b: &[u8], what: &'static str| -> Result<u64, &'static str> {
        if unset(b) {
            Ok(0)
        } else {
            parse_u64(b).ok_or(what)
        }
    };
    let orig_bytes = num(f[S_OBYTES], "bad byte count")?;
    let resp_bytes = num(f[S_RBYTES], "bad byte count")?;
    let name = if unset(f[S_NAME]) {
        None
    } else {
        Some(std::str::from_utf8(f[S_NAME]).map_err(|_| "name is not UTF-8")?)
    };
    Ok(Record {
        kind: layout.kind,
        ts_us,
        src,
        dst,
        dst_port,
        proto: Proto::parse(f[S_PROTO]),
        name,
        nxdomain: f[S_RCODE] == b"NXDOMAIN",
        orig_bytes,
        resp_bytes,
        failed: failed_state(f[S_STATE]),
    })
}

#[inline]
fn failed_state(s: &[u8]) -> bool {
    matches!(s, b"S0" | b"REJ" | b"RSTOS0" | b"RSTRH" | b"SH" | b"SHR")
}

#[inline]
fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() || b.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in b {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    Some(v)
}

/// `1700000000.123456` → microseconds. Also accepts no fraction and a leading sign.
#[inline]
pub(crate) fn parse_ts(b: &[u8]) -> Option<i64> {
    let (neg, b) = match b.first() {
        Some(b'-') if b.len() > 1 => (true, &b[1..]),
        _ => (false, b),
    };
    let (int, frac) = match memchr::memchr(b'.', b) {
        Some(p) => (&b[..p], &b[p + 1..]),
        None => (b, &b""[..]),
    };
    if int.is_empty() || int.len() > 12 {
        return None;
    }
    let secs = parse_u64(int)? as i64;
    let mut us: i64 = 0;
    let mut scale = 100_000;
    for &c in frac {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            // tolerate exponent-free trailing junk? no: reject
            return None;
        }
        us += d as i64 * scale;
        scale /= 10;
    }
    let v = secs * 1_000_000 + us;
    Some(if neg { -v } else { v })
}

#[inline]
fn parse_ip(b: &[u8]) -> Option<IpAddr> {
    // Fast path for dotted IPv4.
    if b.len() >= 7 && b.len() <= 15 {
        let mut oct = [0u32; 4];
        let mut i = 0;
        let mut digits = 0;
        let mut ok = true;
        for &c in b {
            if c == b'.' {
                if digits == 0 || i == 3 {
                    ok = false;
                    break;
                }
                i += 1;
                digits = 0;
            } else if c.is_ascii_digit() {
                oct[i] = oct[i] * 10 + (c - b'0') as u32;
                digits += 1;
                if digits > 3 || oct[i] > 255 {
                    ok = false;
                    break;
                }
            } else {
                ok = false;
                break;
            }
        }
        if ok && i == 3 && digits > 0 {
            return Some(IpAddr::V4(Ipv4Addr::new(
                oct[0] as u8,
                oct[1] as u8,
                oct[2] as u8,
                oct[3] as u8,
            )));
        }
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTs<'a> {
    Num(f64),
    #[serde(borrow)]
    Str(Cow<'a, str>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonNum<'a> {
    Num(u64),
    #[serde(borrow)]
    Str(Cow<'a, str>),
}

impl JsonNum<'_> {
    fn get(&self) -> Option<u64> {
        match self {
            JsonNum::Num(n) => Some(*n),
            JsonNum::Str(s) => s.parse().ok(),
        }
    }
}

#[derive(Deserialize)]
struct JsonLine<'a> {
    ts: Option<JsonTs<'a>>,
    #[serde(rename = "id.orig_h", borrow)]
    orig_h: Option<Cow<'a, str>>,
    #[serde(rename = "id.resp_h", borrow)]
    resp_h: Option<Cow<'a, str>>,
    #[serde(rename = "id.resp_p")]
    resp_p: Option<u64>,
    #[serde(borrow)]
    proto: Option<Cow<'a, str>>,
    orig_bytes: Option<JsonNum<'a>>,
    resp_bytes: Option<JsonNum<'a>>,
    request_body_len: Option<JsonNum<'a>>,
    response_body_len: Option<JsonNum<'a>>,
    #[serde(borrow)]
    conn_state: Option<Cow<'a, str>>,
    #[serde(borrow)]
    query: Option<Cow<'a, str>>,
    #[serde(borrow)]
    rcode_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    server_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    method: Option<Cow<'a, str>>,
    #[serde(borrow)]
    cipher: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uri: Option<Cow<'a, str>>,
}

impl<'a> JsonLine<'a> {
    fn guess_kind(&self) -> Option<LogKind> {
        if self.query.is_some() || self.rcode_name.is_some() {
            Some(LogKind::Dns)
        } else if self.server_name.is_some() || self.cipher.is_some() {
            Some(LogKind::Ssl)
        } else if self.method.is_some() || self.uri.is_some() || self.host.is_some() {
            Some(LogKind::Http)
        } else if self.conn_state.is_some() || self.orig_bytes.is_some() {
            Some(LogKind::Conn)
        } else {
            None
        }
    }

    fn to_record(&'a self, kind: LogKind) -> Result<Record<'a>, &'static str> {
        let ts_us = match &self.ts {
            Some(JsonTs::Num(x)) if x.is_finite() => (x * 1e6).round() as i64,
            Some(JsonTs::Str(s)) => parse_iso8601(s).ok_or("bad ts")?,
            _ => return Err("missing ts"),
        };
        let ip = |v: &Option<Cow<'_, str>>, what: &'static str| -> Result<IpAddr, &'static str> {
            v.as_deref()
                .and_then(|s| parse_ip(s.as_bytes()))
                .ok_or(what)
        };
        let src = ip(&self.orig_h, "bad id.orig_h")?;
        let dst = ip(&self.resp_h, "bad id.resp_h")?;
        let n = |v: &Option<JsonNum<'_>>| v.as_ref().and_then(|x| x.get()).unwrap_or(0);
        let (orig_bytes, resp_bytes) = match kind {
            LogKind::Conn => (n(&self.orig_bytes), n(&self.resp_bytes)),
            LogKind::Http => (n(&self.request_body_len), n(&self.response_body_len)),
            _ => (0, 0),
        };
        let name = match kind {
            LogKind::Dns => self.query.as_deref(),
            LogKind::Http => self.host.as_deref(),
            LogKind::Ssl => self.server_name.as_deref(),
            LogKind::Conn => None,
        }
        .filter(|s| !unset(s.as_bytes()));
        Ok(Record {
            kind,
            ts_us,
            src,
            dst,
            dst_port: self.resp_p.unwrap_or(0).min(65535) as u16,
            proto: Proto::parse(self.proto.as_deref().unwrap_or("").as_bytes()),
            name,
            nxdomain: self.rcode_name.as_deref() == Some("NXDOMAIN"),
            orig_bytes,
            resp_bytes,
            failed: failed_state(self.conn_state.as_deref().unwrap_or("").as_bytes()),
        })
    }
}

/// `2026-11-21T08:00:00.123456Z` (also `+00:00`, or no zone = UTC) → microseconds.
fn parse_iso8601(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || (b[10] != b'T' && b[10] != b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| parse_u64(&b[r]).map(|v| v as i64);
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut us = 0i64;
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        let mut scale = 100_000;
        for &c in &r[..n] {
            us += (c - b'0') as i64 * scale;
            scale /= 10;
        }
        rest = &r[n..];
    }
    let offset = match rest {
        b"" | b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), hh1, hh2, b':', mm1, mm2] => {
            let hh = parse_u64(&[*hh1, *hh2])? as i64;
            let mm = parse_u64(&[*mm1, *mm2])? as i64;
            let o = (hh * 60 + mm) * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    // days from civil (Howard Hinnant's algorithm)
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000 + us)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(parse_ts(b"1700000000.123456"), Some(1_700_000_000_123_456));
        assert_eq!(parse_ts(b"1700000000.5"), Some(1_700_000_000_500_000));
        assert_eq!(parse_ts(b"1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_ts(b"17x0"), None);
        assert_eq!(parse_ts(b"-"), None);
        assert_eq!(
            parse_iso8601("2023-11-14T22:13:20.25Z"),
            Some(1_700_000_000_250_000)
        );
        assert_eq!(
            parse_iso8601("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(parse_iso8601("2023-13-14T23:13:20"), None);
    }

    #[test]
    fn ips() {
        assert_eq!(parse_ip(b"10.1.2.3"), Some("10.1.2.3".parse().unwrap()));
        assert_eq!(parse_ip(b"fe80::1"), Some("fe80::1".parse().unwrap()));
        assert_eq!(parse_ip(b"10.1.2"), None);
        assert_eq!(parse_ip(b"10.1.2.256"), None);
        assert_eq!(parse_ip(b"-"), None);
    }
}
