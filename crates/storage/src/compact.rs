//! Version 2 record encoding: a compact binary layout for the hot records (tasks and findings),
//! written several times per task. Version 1 (`[1] ++ JSON`) stays readable.
//!
//! Layout primitives: unsigned integers are LEB128 varints; a string is `varint len ++ UTF-8`;
//! an optional value is a `0` byte (absent) or `1` followed by the value; an IP address is
//! `4 ++ 4 bytes` or `6 ++ 16 bytes` (`0` = none); a JSON value (`params`, `data`) is its JSON text
//! as a string, the empty string meaning `null`. A record must be consumed exactly (trailing bytes
//! are an error).
//!
//! ```text
//! TaskRecord    = 2 ++ spec ++ state ++ varint attempts ++ opt str last_minion
//!                 ++ opt str last_provider ++ opt str last_error [++ varint target_count]
//!                 (target_count: addresses of a sweep block, written only when it is not 1;
//!                 records without it read as 1)
//! spec          = varint job_id ++ varint task_id ++ opt varint parent ++ str module ++ ip target
//!                 ++ varint n ++ n × (u16 LE port) ++ opt str input ++ json params ++ opt str blob
//! state         = 0 pending | 1 leased str minion varint generation varint token varint deadline
//!                 | 2 done | 3 failed str reason | 4 cancelled
//! FindingRecord = 2 ++ varint cursor ++ varint job_id ++ varint task_id ++ opt varint parent
//!                 ++ str module ++ str kind ++ ip target ++ opt u16 LE port ++ json data
//!                 ++ opt str blob ++ str minion ++ str provider ++ varint started
//!                 ++ varint finished ++ varint stored
//! ```

use overlord_core::job::{FindingRecord, TaskRecord, TaskSpec, TaskState};
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 2;

struct W(Vec<u8>);

impl W {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn var(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn str(&mut self, s: &str) {
        self.var(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    fn opt_var(&mut self, v: Option<u64>) {
        match v {
            None => self.u8(0),
            Some(v) => {
                self.u8(1);
                self.var(v);
            }
        }
    }
    fn ip(&mut self, ip: Option<IpAddr>) {
        match ip {
            None => self.u8(0),
            Some(IpAddr::V4(a)) => {
                self.u8(4);
                self.0.extend_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                self.u8(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }
    fn json(&mut self, v: &Value) {
        if v.is_null() {
            self.var(0);
        } else {
            let s = serde_json::to_vec(v).expect("serializable JSON value");
            self.var(s.len() as u64);
            self.0.extend_from_slice(&s);
        }
    }
}

struct R<'a>(&'a [u8]);

type Res<T> = Result<T, String>;

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Res<&'a [u8]> {
        if self.0.len() < n {
            return Err(format!("truncated: need {n} bytes, {} left", self.0.len()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.take(1)?[0])
    }
    fn var(&mut self) -> Res<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    break;
                }
                return Ok(v);
            }
        }
        Err("varint overflows u64".into())
    }
    fn len(&mut self) -> Res<usize> {
        let n = self.var()?;
        if n > self.0.len() as u64 {
            return Err(format!(
                "length {n} exceeds the {} bytes left",
                self.0.len()
            ));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Res<String> {
        let n = self.len()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|e| format!("string is not UTF-8: {e}"))
    }
    fn flag(&mut self, what: &str) -> Res<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(format!("bad presence byte {t} for {what}")),
        }
    }
    fn opt_str(&mut self, what: &str) -> Res<Option<String>> {
        Ok(if self.flag(what)? {
            Some(self.str()?)
        } else {
            None
        })
    }
    fn opt_var(&mut self, what: &str) -> Res<Option<u64>> {
        Ok(if self.flag(what)? {
            Some(self.var()?)
        } else {
            None
        })
    }
    fn u16(&mut self) -> Res<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn ip(&mut self) -> Res<Option<IpAddr>> {
        Ok(match self.u8()? {
            0 => None,
            4 => {
                let b: [u8; 4] = self.take(4)?.try_into().expect("4 bytes");
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            6 => {
                let b: [u8; 16] = self.take(16)?.try_into().expect("16 bytes");
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            t => return Err(format!("bad address tag {t}")),
        })
    }
    fn json(&mut self) -> Res<Value> {
        let n = self.len()?;
        if n == 0 {
            return Ok(Value::Null);
        }
        serde_json::from_slice(self.take(n)?).map_err(|e| format!("bad JSON value: {e}"))
    }
    fn end(&self) -> Res<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.0.len()))
        }
    }
}

pub fn encode_task(t: &TaskRecord) -> Vec<u8> {
    // Hitlist tasks with a list of ranges have no compact layout: version 1 (JSON) holds them.
    if !t.spec.ranges.is_empty() {
        return crate::encode(t);
    }
    let mut w = W(Vec::with_capacity(64));
    w.u8(VERSION);
    let s = &t.spec;
    w.var(s.job_id);
    w.var(s.task_id);
    w.opt_var(s.parent);
    w.str(&s.module);
    w.ip(s.target);
    w.var(s.ports.len() as u64);
    for p in &s.ports {
        w.0.extend_from_slice(&p.to_le_bytes());
    }
    w.opt_str(s.input.as_deref());
    w.json(&s.params);
    w.opt_str(s.blob_sha256.as_deref());
    match &t.state {
        TaskState::Pending => w.u8(0),
        TaskState::Leased {
            minion,
            generation,
            token,
            deadline_ms,
            rate,
        } => {
            // tag 5 = a lease with its rate share (tag 1, without, is what older records hold)
            w.u8(if *rate == 0 { 1 } else { 5 });
            w.str(minion);
            w.var(*generation);
            w.var(*token);
            w.var(*deadline_ms);
            if *rate != 0 {
                w.var(u64::from(*rate));
            }
        }
        TaskState::Done => w.u8(2),
        TaskState::Failed { reason } => {
            w.u8(3);
            w.str(reason);
        }
        TaskState::Cancelled => w.u8(4),
    }
    w.var(u64::from(t.attempts));
    w.opt_str(t.last_minion.as_deref());
    w.opt_str(t.last_provider.as_deref());
    w.opt_str(t.last_error.as_deref());
    if s.target_count != 1 {
        w.var(u64::from(s.target_count));
    }
    w.0
}

/// Decodes the body (after the version byte) of a version-2 task record.
pub fn decode_task(body: &[u8]) -> Res<TaskRecord> {
    let mut r = R(body);
    let job_id = r.var()?;
    let task_id = r.var()?;
    let parent = r.opt_var("parent")?;
    let module = r.str()?;
    let target = r.ip()?;
    let n = r.len()?;
    let mut ports = Vec::with_capacity(n.min(r.0.len() / 2));
    for _ in 0..n {
        ports.push(r.u16()?);
    }
    let input = r.opt_str("input")?;
    let params = r.json()?;
    let blob_sha256 = r.opt_str("blob_sha256")?;
    let state = match r.u8()? {
        0 => TaskState::Pending,
        tag @ (1 | 5) => TaskState::Leased {
            minion: r.str()?,
            generation: r.var()?,
            token: r.var()?,
            deadline_ms: r.var()?,
            rate: if tag == 5 {
                u32::try_from(r.var()?).map_err(|_| "lease rate does not fit in u32".to_string())?
            } else {
                0
            },
        },
        2 => TaskState::Done,
        3 => TaskState::Failed { reason: r.str()? },
        4 => TaskState::Cancelled,
        t => return Err(format!("bad task state tag {t}")),
    };
    let attempts = u32::try_from(r.var()?).map_err(|_| "attempts do not fit in u32".to_string())?;
    let last_minion = r.opt_str("last_minion")?;
    let last_provider = r.opt_str("last_provider")?;
    let last_error = r.opt_str("last_error")?;
    let target_count = if r.0.is_empty() {
        1
    } else {
        // Written only when not 1, so 0 and 1 here are corruption (e.g. a trailing byte).
        u32::try_from(r.var()?)
            .ok()
            .filter(|n| *n >= 2)
            .ok_or_else(|| "bad target_count".to_string())?
    };
    r.end()?;
    Ok(TaskRecord {
        spec: TaskSpec {
            job_id,
            task_id,
            parent,
            module,
            target,
            target_count,
            ports,
            input,
            params,
            blob_sha256,
            ranges: Vec::new(),
        },
        state,
        attempts,
        last_minion,
        last_provider,
        last_error,
    })
}

pub fn encode_finding(f: &FindingRecord) -> Vec<u8> {
    let mut w = W(Vec::with_capacity(96));
    w.u8(VERSION);
    w.var(f.cursor);
    w.var(f.job_id);
    w.var(f.task_id);
    w.opt_var(f.parent_task_id);
    w.str(&f.module);
    w.str(&f.kind);
    w.ip(f.target);
    match f.port {
        None => w.u8(0),
        Some(p) => {
            w.u8(1);
            w.0.extend_from_slice(&p.to_le_bytes());
        }
    }
    w.json(&f.data);
    w.opt_str(f.blob_sha256.as_deref());
    w.str(&f.minion_id);
    w.str(&f.provider);
    w.var(f.started_at_ms);
    w.var(f.finished_at_ms);
    w.var(f.stored_at_ms);
    w.0
}

/// A finding as stored, borrowed from the store's bytes: for readers that pass findings on without
/// an owned copy (the firehose). `data` is the payload's JSON text (`null` when absent), checked to
/// be one JSON value; the other fields are those of [`FindingRecord`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FindingView<'a> {
    pub cursor: u64,
    pub job_id: u64,
    pub task_id: u64,
    pub parent_task_id: Option<u64>,
    pub module: &'a str,
    pub kind: &'a str,
    pub target: Option<IpAddr>,
    pub port: Option<u16>,
    pub data: &'a str,
    pub blob_sha256: Option<&'a str>,
    pub minion_id: &'a str,
    pub provider: &'a str,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub stored_at_ms: u64,
}

impl<'a> FindingView<'a> {
    /// The view of an owned record; `data` is its JSON text, which the caller keeps.
    pub fn of(f: &'a FindingRecord, data: &'a str) -> Self {
        FindingView {
            cursor: f.cursor,
            job_id: f.job_id,
            task_id: f.task_id,
            parent_task_id: f.parent_task_id,
            module: &f.module,
            kind: &f.kind,
            target: f.target,
            port: f.port,
            data,
            blob_sha256: f.blob_sha256.as_deref(),
            minion_id: &f.minion_id,
            provider: &f.provider,
            started_at_ms: f.started_at_ms,
            finished_at_ms: f.finished_at_ms,
            stored_at_ms: f.stored_at_ms,
        }
    }
}

impl<'a> R<'a> {
    fn str_ref(&mut self) -> Res<&'a str> {
        let n = self.len()?;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|e| format!("string is not UTF-8: {e}"))
    }
    fn opt_str_ref(&mut self, what: &str) -> Res<Option<&'a str>> {
        Ok(if self.flag(what)? {
            Some(self.str_ref()?)
        } else {
            None
        })
    }
    /// A JSON value's text, checked to be one JSON value (without building it).
    /// A JSON value's text (UTF-8; `null` when absent), not parsed.
    fn json_text(&mut self) -> Res<&'a str> {
        let n = self.len()?;
        if n == 0 {
            return Ok("null");
        }
        std::str::from_utf8(self.take(n)?).map_err(|e| format!("bad JSON value: {e}"))
    }
}

/// Decodes the body (after the version byte) of a version-2 finding record without copying it.
pub fn view_finding(body: &[u8]) -> Res<FindingView<'_>> {
    let v = read_finding(body)?;
    serde_json::from_str::<serde::de::IgnoredAny>(v.data)
        .map_err(|e| format!("bad JSON value: {e}"))?;
    Ok(v)
}

/// Decodes the body (after the version byte) of a version-2 finding record.
pub fn decode_finding(body: &[u8]) -> Res<FindingRecord> {
    let v = read_finding(body)?;
    Ok(FindingRecord {
        cursor: v.cursor,
        job_id: v.job_id,
        task_id: v.task_id,
        parent_task_id: v.parent_task_id,
        module: v.module.to_string(),
        kind: v.kind.to_string(),
        target: v.target,
        port: v.port,
        data: serde_json::from_str(v.data).map_err(|e| format!("bad JSON value: {e}"))?,
        blob_sha256: v.blob_sha256.map(str::to_string),
        minion_id: v.minion_id.to_string(),
        provider: v.provider.to_string(),
        started_at_ms: v.started_at_ms,
        finished_at_ms: v.finished_at_ms,
        stored_at_ms: v.stored_at_ms,
    })
}

/// The one reader of the finding layout: fields borrowed from `body`, `data` as its UTF-8 text
/// (not yet checked to be JSON: the callers parse or check it).
fn read_finding(body: &[u8]) -> Res<FindingView<'_>> {
    let mut r = R(body);
    let cursor = r.var()?;
    let job_id = r.var()?;
    let task_id = r.var()?;
    let parent_task_id = r.opt_var("parent_task_id")?;
    let module = r.str_ref()?;
    let kind = r.str_ref()?;
    let target = r.ip()?;
    let port = if r.flag("port")? {
        Some(r.u16()?)
    } else {
        None
    };
    let data = r.json_text()?;
    let blob_sha256 = r.opt_str_ref("blob_sha256")?;
    let minion_id = r.str_ref()?;
    let provider = r.str_ref()?;
    let started_at_ms = r.var()?;
    let finished_at_ms = r.var()?;
    let stored_at_ms = r.var()?;
    r.end()?;
    Ok(FindingView {
        cursor,
        job_id,
        task_id,
        parent_task_id,
        module,
        kind,
        target,
        port,
        data,
        blob_sha256,
        minion_id,
        provider,
        started_at_ms,
        finished_at_ms,
        stored_at_ms,
    })
}
