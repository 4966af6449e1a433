//! What the index stores per row: the merged state of one service (`job`, address, port) —
//! every finding a job reported about that address and port folded into one record. Pure data
//! and pure merging; [`crate::extract`] turns a finding into an [`Observation`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// An extension field's value (`ext.<name>` in the index).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExtValue {
    U64(u64),
    F64(f64),
    Bool(bool),
    Str(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Http {
    pub title: Option<String>,
    pub status: Option<u16>,
    pub server: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tls {
    pub subject: String,
    pub issuer: String,
    pub expired: bool,
    pub self_signed: bool,
    pub sha256: String,
    /// Unix seconds.
    pub not_after: i64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ssh {
    pub hassh: Option<String>,
    pub key: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    /// sha256 of the PNG.
    pub image: Option<String>,
    pub text: Option<String>,
    pub faces: Option<u32>,
    pub logos: Vec<String>,
    pub tags: Vec<String>,
    pub emails: Vec<String>,
}

/// What one finding says about its service. Every part is optional: a port scan says only
/// `open`, a screenshot only `screen`, and so on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    pub open: Option<bool>,
    pub transport: Option<String>,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub cpe: Vec<String>,
    pub banner: Option<String>,
    pub http: Option<Http>,
    pub tls: Option<Tls>,
    pub ssh: Option<Ssh>,
    pub screen: Option<Screen>,
    pub leaks: Vec<String>,
    pub ext: BTreeMap<String, ExtValue>,
}

/// Provenance of a finding (from the stored record, not its payload).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub job: u64,
    pub cursor: u64,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub module: String,
    pub minion: String,
    pub provider: String,
    pub at_ms: u64,
}

impl Provenance {
    /// The row this finding folds into: `job/ip/port`, or `job/-/cursor` without an address.
    pub fn key(&self) -> String {
        let mut k = String::new();
        self.write_key(&mut k);
        k
    }

    /// [`Self::key`] into `out` (cleared first): no allocation once `out` has grown.
    pub fn write_key(&self, out: &mut String) {
        use std::fmt::Write;
        out.clear();
        let _ = match self.ip {
            Some(ip) => write!(out, "{}/{}/{}", self.job, ip, self.port),
            None => write!(out, "{}/-/{}", self.job, self.cursor),
        };
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ServiceState {
    pub key: String,
    pub job: u64,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub transport: String,
    pub open: bool,
    pub service: Option<String>,
    pub product: Option<String>,
    pub version: Option<String>,
    pub cpe: Vec<String>,
    pub banner: Option<String>,
    pub http: Option<Http>,
    pub tls: Option<Tls>,
    pub ssh: Option<Ssh>,
    pub screen: Option<Screen>,
    pub leaks: Vec<String>,
    pub modules: BTreeSet<String>,
    pub minions: BTreeSet<String>,
    pub providers: BTreeSet<String>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Highest finding cursor folded in.
    pub cursor: u64,
    pub findings: u32,
    pub ext: BTreeMap<String, ExtValue>,
}

fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
    if src.is_some() {
        *dst = src.clone();
    }
}

fn union(dst: &mut Vec<String>, src: &[String]) {
    for s in src {
        if !dst.contains(s) {
            dst.push(s.clone());
        }
    }
}

impl ServiceState {
    pub fn new(p: &Provenance) -> Self {
        ServiceState {
            key: p.key(),
            job: p.job,
            ip: p.ip,
            port: p.port,
            transport: "tcp".into(),
            first_seen_ms: p.at_ms,
            last_seen_ms: p.at_ms,
            ..Default::default()
        }
    }

    /// Folds one finding in. Later findings (by cursor, which is the fold order) win for single values; lists are unions.
    /// Folding the same finding twice changes nothing (replays after a crash are harmless).
    pub fn fold(&mut self, p: &Provenance, o: &Observation) {
        if self.findings > 0 && p.cursor <= self.cursor {
            // already folded (a replay): a job's findings are folded in cursor order
            return;
        }
        self.findings += 1;
        self.cursor = self.cursor.max(p.cursor);
        self.first_seen_ms = if self.first_seen_ms == 0 {
            p.at_ms
        } else {
            self.first_seen_ms.min(p.at_ms)
        };
        self.last_seen_ms = self.last_seen_ms.max(p.at_ms);
        self.modules.insert(p.module.clone());
        if !p.minion.is_empty() {
            self.minions.insert(p.minion.clone());
        }
        if !p.provider.is_empty() {
            self.providers.insert(p.provider.clone());
        }
        if let Some(o) = o.open {
            self.open |= o;
        }
        if let Some(t) = &o.transport {
            self.transport = t.clone();
        }
        set(&mut self.service, &o.service);
        set(&mut self.product, &o.product);
        set(&mut self.version, &o.version);
        union(&mut self.cpe, &o.cpe);
        set(&mut self.banner, &o.banner);
        set(&mut self.http, &o.http);
        set(&mut self.tls, &o.tls);
        set(&mut self.ssh, &o.ssh);
        if let Some(s) = &o.screen {
            let cur = self.screen.get_or_insert_with(Screen::default);
            // a new screenshot of the service: what was read on the old one is not its text
            if s.image.is_some() && cur.image.is_some() && s.image != cur.image {
                *cur = Screen::default();
            }
            set(&mut cur.image, &s.image);
            set(&mut cur.text, &s.text);
            set(&mut cur.faces, &s.faces);
            union(&mut cur.logos, &s.logos);
            union(&mut cur.tags, &s.tags);
            union(&mut cur.emails, &s.emails);
        }
        union(&mut self.leaks, &o.leaks);
        for (k, v) in &o.ext {
            self.ext.insert(k.clone(), v.clone());
        }
    }

    pub fn has_screenshot(&self) -> bool {
        self.screen.as_ref().is_some_and(|s| s.image.is_some())
    }

    /// `ip:port` (or the key when there is no address).
    pub fn endpoint(&self) -> String {
        match self.ip {
            Some(IpAddr::V6(a)) => format!("[{a}]:{}", self.port),
            Some(a) => format!("{a}:{}", self.port),
            None => self.key.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prov(cursor: u64, module: &str, at: u64) -> Provenance {
        Provenance {
            job: 1,
            cursor,
            ip: Some("127.0.0.1".parse().unwrap()),
            port: 80,
            module: module.into(),
            minion: "m1".into(),
            provider: "a".into(),
            at_ms: at,
        }
    }

    #[test]
    fn fold_merges_and_replays_are_harmless() {
        let p1 = prov(1, "portscan", 100);
        let mut s = ServiceState::new(&p1);
        s.fold(
            &p1,
            &Observation {
                open: Some(true),
                ..Default::default()
            },
        );
        let p2 = prov(2, "service", 200);
        let o2 = Observation {
            product: Some("nginx".into()),
            cpe: vec!["cpe:/a:nginx:nginx".into()],
            ..Default::default()
        };
        s.fold(&p2, &o2);
        let snapshot = s.clone();
        s.fold(&p2, &o2);
        s.fold(
            &p1,
            &Observation {
                open: Some(true),
                ..Default::default()
            },
        );
        assert_eq!(s, snapshot);
        assert!(s.open);
        assert_eq!(s.product.as_deref(), Some("nginx"));
        assert_eq!((s.first_seen_ms, s.last_seen_ms, s.findings), (100, 200, 2));
        assert_eq!(s.key, "1/127.0.0.1/80");
    }
}
