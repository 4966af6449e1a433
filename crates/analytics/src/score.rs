//! The scoring pipeline: stream logs into per-key event lists (bounded), then per key and 24 h
//! window: sort, collapse bursts, score with the RITA-style scorer and the CNN, add rotation
//! groups, the benign-periodic and failed-connection hints, and rank.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::features::{self, CHANNELS, WIN};
use crate::model::{BeaconCnn, Weights};
use crate::report::{BeaconReport, FileStats, Finding};
use crate::stat::{self, StatScore};
use crate::zeek::{self, LogKind, ReadStats, Record};
use crate::{AnalyticsError, BeaconConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Dst {
    Ip(IpAddr),
    Name(u32, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    kind: LogKind,
    src: IpAddr,
    dst: Dst,
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t_us: i64,
    bytes: u32,
    failed: bool,
}

struct Seq {
    key: Key,
    port: u16,
    events: Vec<Ev>,
    dropped: u64,
}

#[derive(Default)]
struct Interner {
    ids: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn get(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }
}

/// Accumulates logs, then scores them. Use [`score_logs`] for the one-call version.
pub struct Scorer {
    cfg: BeaconConfig,
    cnn: BeaconCnn,
    combiner: Option<(Vec<f32>, f32)>,
    map: FxHashMap<Key, u32>,
    seqs: Vec<Seq>,
    names: Interner,
    min_ts: i64,
    files: Vec<FileStats>,
    dropped_keys: u64,
    dropped_events: u64,
    /// Addresses that answered DNS queries (resolvers), bounded by [`MAX_DNS_SERVERS`].
    dns_servers: FxHashSet<IpAddr>,
    started: Instant,
}

/// DNS server addresses remembered (a log naming more is hostile or not one network's).
const MAX_DNS_SERVERS: usize = 65_536;

/// What one candidate (key × window, or a rotation group) looks like after preparation.
struct Cand {
    seq: usize,
    window: u32,
    members: Vec<usize>,
    events: u64,
    checkins: u64,
    max_burst: u32,
    first_us: i64,
    last_us: i64,
    failed: f32,
    stat: StatScore,
    cnn: f32,
    jitter: f32,
    active_hours: u32,
    stability: f32,
}

impl Scorer {
    pub fn new(cfg: &BeaconConfig) -> Result<Scorer, AnalyticsError> {
        cfg.validate()?;
        let weights = match &cfg.weights {
            Some(p) => Weights::load(p)?,
            None => Weights::shipped()?,
        };
        Scorer::with_weights(cfg, &weights)
    }

    /// A scorer using these weights (ignores `cfg.weights`).
    pub fn with_weights(cfg: &BeaconConfig, weights: &Weights) -> Result<Scorer, AnalyticsError> {
        cfg.validate()?;
        Ok(Scorer {
            cfg: cfg.clone(),
            cnn: BeaconCnn::new(weights),
            combiner: weights.combiner(),
            map: FxHashMap::default(),
            seqs: Vec::new(),
            names: Interner::default(),
            min_ts: i64::MAX,
            files: Vec::new(),
            dropped_keys: 0,
            dropped_events: 0,
            dns_servers: FxHashSet::default(),
            started: Instant::now(),
        })
    }

    /// Read one log file (any supported type, TSV or JSON, plain or gzip).
    pub fn add_path(&mut self, path: &Path) -> Result<&FileStats, AnalyticsError> {
        let stats = {
            let mut parts = self_parts(self);
            let mut visit = |r: &Record<'_>| insert(&mut parts, r);
            zeek::read_path(path, &mut visit)?
        };
        self.push_file(path.display().to_string(), stats);
        Ok(self.files.last().expect("just pushed"))
    }

    /// Read records from a decompressed stream.
    pub fn add_reader<R: std::io::BufRead>(
        &mut self,
        name: &str,
        reader: R,
        hint: Option<LogKind>,
    ) -> Result<&FileStats, AnalyticsError> {
        let stats = {
            let mut parts = self_parts(self);
            let mut visit = |r: &Record<'_>| insert(&mut parts, r);
            zeek::read_stream(reader, hint, &mut visit)?
        };
        self.push_file(name.to_string(), stats);
        Ok(self.files.last().expect("just pushed"))
    }

    fn push_file(&mut self, path: String, stats: ReadStats) {
        tracing::debug!(
            path = %path,
            records = stats.records,
            bad_lines = stats.bad_lines,
            "log read"
        );
        self.files.push(FileStats { path, stats });
    }

    /// Score everything read so far. Findings below `min_report_score` are left out.
    pub fn finish(self) -> Result<BeaconReport, AnalyticsError> {
        let min = self.cfg.min_report_score;
        let mut r = self.finish_all()?;
        r.findings.retain(|f| f.combined >= min);
        Ok(r)
    }

    /// Score everything read so far and return every scored sequence (for evaluation).
    pub fn finish_all(mut self) -> Result<BeaconReport, AnalyticsError> {
        let mut r = self.score_now()?;
        r.files = std::mem::take(&mut self.files);
        Ok(r)
    }

    /// Live mode: forget events older than `keep_from_us` (and keys left empty), so memory stays
    /// bounded by one window; the one window scored next starts there.
    pub fn evict_before(&mut self, keep_from_us: i64) {
        let mut any = false;
        for s in &mut self.seqs {
            let n = s.events.partition_point(|e| e.t_us < keep_from_us);
            let sorted = s.events.windows(2).all(|w| w[0].t_us <= w[1].t_us);
            if !sorted {
                s.events.retain(|e| e.t_us >= keep_from_us);
            } else if n > 0 {
                s.events.drain(..n);
            }
            any |= s.events.is_empty();
        }
        if any {
            self.seqs.retain(|s| !s.events.is_empty());
            self.map.clear();
            for (i, s) in self.seqs.iter().enumerate() {
                self.map.insert(s.key, i as u32);
            }
        }
        self.min_ts = keep_from_us;
    }

    /// Live mode: drop the per-file read counters (they grow with every poll).
    pub fn forget_files(&mut self) {
        self.files.clear();
    }

    /// Newest event timestamp read so far (µs), if any.
    pub fn max_ts_us(&self) -> Option<i64> {
        self.seqs
            .iter()
            .filter_map(|s| s.events.iter().map(|e| e.t_us).max())
            .max()
    }

    /// Distinct keys and events currently held.
    pub fn held(&self) -> (usize, usize) {
        (
            self.seqs.len(),
            self.seqs.iter().map(|s| s.events.len()).sum(),
        )
    }

    /// Score everything held now without consuming the scorer (live mode); `files` is left empty.
    pub fn score_now(&mut self) -> Result<BeaconReport, AnalyticsError> {
        let cfg = self.cfg.clone();
        let window_us = (cfg.window_secs * 1e6) as i64;
        let origin = if self.min_ts == i64::MAX {
            0
        } else {
            self.min_ts
        };
        let mut cands: Vec<Cand> = Vec::new();
        let mut batch = CnnBatch::new(&self.cnn);
        let mut work = Work::default();
        let mut sources: FxHashSet<IpAddr> = FxHashSet::default();
        // Pass 1: every key × window.
        for (si, seq) in self.seqs.iter_mut().enumerate() {
            sources.insert(seq.key.src);
            seq.events.sort_unstable_by_key(|e| e.t_us);
            let mut i = 0;
            while i < seq.events.len() {
                let w = ((seq.events[i].t_us - origin) / window_us) as u32;
                let wend = origin + (w as i64 + 1) * window_us;
                let j = i + seq.events[i..].partition_point(|e| e.t_us < wend);
                let has_sizes = matches!(seq.key.kind, LogKind::Conn | LogKind::Http);
                if let Some(c) = prepare(
                    &cfg,
                    si,
                    w,
                    &seq.events[i..j],
                    origin + w as i64 * window_us,
                    has_sizes,
                    &mut work,
                ) {
                    let idx = cands.len();
                    let run_cnn = c.stat.score >= cfg.cnn_min_stat;
                    cands.push(c);
                    if run_cnn {
                        batch.push(idx, &work.intervals, cfg.max_cnn_windows, &mut cands)?;
                    }
                }
                i = j;
            }
        }
        batch.flush(&mut cands)?;
        // Pass 2: rotation groups (conn): one source, one port, several destinations.
        if cfg.group_rotation {
            let groups = rotation_groups(&self.seqs, &cfg);
            let mut merged: Vec<Ev> = Vec::new();
            for (members, window) in groups {
                merged.clear();
                let wstart = origin + window as i64 * window_us;
                let wend = wstart + window_us;
                for &m in &members {
                    merged.extend(
                        self.seqs[m]
                            .events
                            .iter()
                            .filter(|e| e.t_us >= wstart && e.t_us < wend),
                    );
                }
                merged.sort_unstable_by_key(|e| e.t_us);
                let has_sizes = self.seqs[members[0]].key.kind == LogKind::Conn;
                if let Some(mut c) = prepare(
                    &cfg, members[0], window, &merged, wstart, has_sizes, &mut work,
                ) {
                    c.members = members;
                    let idx = cands.len();
                    cands.push(c);
                    batch.push(idx, &work.intervals, cfg.max_cnn_windows, &mut cands)?;
                }
            }
        }
        batch.flush(&mut cands)?;
        for c in cands.iter().filter(|c| !c.members.is_empty()) {
            tracing::debug!(
                src = %self.seqs[c.seq].key.src,
                members = c.members.len(),
                cnn = c.cnn,
                stat = c.stat.score,
                checkins = c.checkins,
                "rotation group"
            );
        }

        // Benign-periodic hint: how many sources reach the same destination periodically.
        let mut fan_in: FxHashMap<(LogKind, Dst, u32), u32> = FxHashMap::default();
        for c in cands.iter().filter(|c| c.members.is_empty()) {
            if c.cnn >= 0.5 || c.stat.score >= 0.75 || c.stat.backoff >= 0.5 {
                let k = self.seqs[c.seq].key;
                *fan_in.entry((k.kind, k.dst, c.window)).or_default() += 1;
            }
        }
        let benign_min = (cfg.benign_min_sources as f64)
            .max(cfg.benign_source_fraction * sources.len() as f64)
            .ceil() as u32;
        // Popularity of a name (dns/http/ssl): distinct sources asking for it at all. Behind
        // resolver and TTL caches the lookups of a popular name are one per TTL — periodic —
        // for every host that keeps using it; a C2 domain is asked for by its implants only.
        let mut popularity: FxHashMap<(LogKind, u32), u32> = FxHashMap::default();
        for s in &self.seqs {
            if let Dst::Name(id, _) = s.key.dst {
                *popularity.entry((s.key.kind, id)).or_default() += 1;
            }
        }
        let popular_min = (cfg.popular_min_sources as f64)
            .max(cfg.popular_source_fraction * sources.len() as f64)
            .ceil() as u32;
        let popularity_of = |k: &Key| match k.dst {
            Dst::Name(id, _) => popularity.get(&(k.kind, id)).copied().unwrap_or(0),
            Dst::Ip(_) => 0,
        };

        let mut findings: Vec<Finding> = Vec::with_capacity(cands.len());
        let mut group_credit: FxHashMap<(usize, u32), (f32, usize)> = FxHashMap::default();
        // single keys are scored before the groups (pass 2 appended them)
        let mut alone: FxHashMap<(usize, u32), f32> = FxHashMap::default();
        // the strongest single scorer's opinion of each key's own check-ins
        let mut evidence: FxHashMap<(usize, u32), f32> = FxHashMap::default();
        for (ci, c) in cands.iter().enumerate() {
            let k = self.seqs[c.seq].key;
            let fi = fan_in.get(&(k.kind, k.dst, c.window)).copied().unwrap_or(0);
            let pop = popularity_of(&k);
            let benign = fi >= benign_min || pop >= popular_min;
            let (combined, no_clock) = combine(&cfg, self.combiner.as_ref(), c, benign);
            if !c.members.is_empty() {
                // When the group adds no evidence over its best member alone (a C2 plus a
                // browsed site sharing its port and size class scores as high as the C2), it
                // credits only the members with a fair share of the check-ins (a rotating C2
                // spreads them evenly), not a site visited a few times.
                let best_alone = c
                    .members
                    .iter()
                    .filter_map(|&m| alone.get(&(m, c.window)).copied())
                    .fold(0.0f32, f32::max);
                let dominated = best_alone >= cfg.threshold && combined <= best_alone + 0.05;
                // dns: a host's rare names are many (typos, long-tail sites); a merge of them
                // must look like one clock, not just score well
                if k.kind == LogKind::Dns && (c.stat.score < 0.8 || c.cnn < 0.8) {
                    continue;
                }
                let total: usize = c.members.iter().map(|&m| self.seqs[m].events.len()).sum();
                let fair = |m: usize| {
                    self.seqs[m].events.len() as f32 * c.members.len() as f32 >= 0.5 * total as f32
                };
                // a member scored alone must show a clock of its own (a browsed site merged
                // with a C2 does not); one too short to be scored alone is credited
                let own = |m: usize| {
                    evidence
                        .get(&(m, c.window))
                        .is_none_or(|e| *e >= cfg.min_evidence)
                };
                for &m in c
                    .members
                    .iter()
                    .filter(|&&m| (!dominated || fair(m)) && own(m))
                {
                    let e = group_credit.entry((m, c.window)).or_insert((0.0, ci));
                    if combined > e.0 {
                        *e = (combined, ci);
                    }
                }
                continue;
            }
            alone.insert((c.seq, c.window), combined);
            evidence.insert((c.seq, c.window), evidence_of(&cfg, c));
            let mut f = self.finding(c, fi, benign, combined, &cfg);
            f.popularity = pop;
            f.fan_in_needed = benign_min;
            f.popularity_needed = if k.kind == LogKind::Conn {
                0
            } else {
                popular_min
            };
            if fi >= benign_min {
                f.hints.push(crate::report::BeaconHint::PeriodicFanIn);
            }
            if pop >= popular_min {
                f.hints.push(crate::report::BeaconHint::PopularName);
            }
            if c.failed >= 0.8 {
                f.hints.push(crate::report::BeaconHint::FailedConnections);
            }
            if no_clock {
                f.hints.push(crate::report::BeaconHint::NoClock);
            }
            findings.push(f);
        }
        // Credit rotation-group members with the group's score.
        if !group_credit.is_empty() {
            let pos: FxHashMap<(usize, u32), usize> = cands
                .iter()
                .filter(|c| c.members.is_empty())
                .enumerate()
                .map(|(fi, c)| ((c.seq, c.window), fi))
                .collect();
            for ((m, w), (score, ci)) in group_credit {
                let g = &cands[ci];
                let group: Vec<String> = g
                    .members
                    .iter()
                    .map(|&x| self.dst_string(&self.seqs[x].key))
                    .collect();
                match pos.get(&(m, w)) {
                    Some(&fi) => {
                        let f = &mut findings[fi];
                        if score > f.combined {
                            f.combined = score;
                            f.group = group;
                            f.group_period_secs = Some(g.stat.period as f64);
                        }
                    }
                    None => {
                        // member too short to be scored alone: report it through the group
                        let seq = &self.seqs[m];
                        let mut f = self.finding(g, 0, false, score, &cfg);
                        f.src = seq.key.src.to_string();
                        f.dst = self.dst_string(&seq.key);
                        f.dst_port = seq.port;
                        let n = seq.events.len() as u64;
                        f.events = n;
                        f.group = group;
                        f.group_period_secs = Some(g.stat.period as f64);
                        findings.push(f);
                    }
                }
            }
        }
        self.resolver_keys(&mut findings, &sources, &cfg, origin, window_us);
        for f in &mut findings {
            f.is_beacon = f.combined >= cfg.threshold;
        }
        findings.sort_by(|a, b| {
            b.combined
                .total_cmp(&a.combined)
                .then_with(|| a.src.cmp(&b.src))
                .then_with(|| a.dst.cmp(&b.dst))
        });
        for (i, f) in findings.iter_mut().enumerate() {
            f.rank = i as u32 + 1;
        }
        let mut totals = ReadStats::default();
        for f in &self.files {
            totals.merge(&f.stats);
        }
        Ok(BeaconReport {
            findings,
            files: Vec::new(),
            records: totals.records,
            lines: totals.lines,
            bad_lines: totals.bad_lines,
            bad_examples: totals.bad_examples,
            keys: self.seqs.len() as u64,
            scored: cands.len() as u64,
            sources: sources.len() as u64,
            dropped_keys: self.dropped_keys,
            dropped_events: self.dropped_events,
            threshold: cfg.threshold,
            seconds: self.started.elapsed().as_secs_f64(),
        })
    }

    /// DNS keys of resolvers (sources other hosts send their queries to). A resolver forwards
    /// its clients' lookups and refreshes (or prefetches) its cache on its own, so its lookups
    /// of a name follow its clients, not a clock of its own:
    /// * a client's key for the name (same window) is a beacon → the resolver's key is that
    ///   C2's lookups seen upstream: it gets the client's score (`group` = the client, marked
    ///   `via`), and is reported even when it has too few lookups to be scored alone;
    /// * no client's key is → the resolver-refresh hint (×0.3).
    fn resolver_keys(
        &self,
        findings: &mut Vec<Finding>,
        sources: &FxHashSet<IpAddr>,
        cfg: &BeaconConfig,
        origin: i64,
        window_us: i64,
    ) {
        let resolver_ips: FxHashSet<IpAddr> = sources
            .iter()
            .filter(|s| self.dns_servers.contains(s))
            .copied()
            .collect();
        if resolver_ips.is_empty() {
            return;
        }
        let resolvers: FxHashSet<String> = resolver_ips.iter().map(|s| s.to_string()).collect();
        // the best beaconing client finding per (name, window)
        let mut beaconing: FxHashMap<(String, u32), usize> = FxHashMap::default();
        for (i, f) in findings.iter().enumerate() {
            if f.kind == LogKind::Dns && f.combined >= cfg.threshold && !resolvers.contains(&f.src)
            {
                let e = beaconing.entry((f.dst.clone(), f.window)).or_insert(i);
                if f.combined > findings[*e].combined {
                    *e = i;
                }
            }
        }
        let mut seen: FxHashSet<(String, String, u32)> = FxHashSet::default();
        let mut via: Vec<(usize, usize)> = Vec::new();
        for (i, f) in findings.iter().enumerate() {
            if f.kind != LogKind::Dns || !resolvers.contains(&f.src) {
                continue;
            }
            seen.insert((f.src.clone(), f.dst.clone(), f.window));
            if let Some(&ci) = beaconing.get(&(f.dst.clone(), f.window)) {
                via.push((i, ci));
            }
        }
        for f in findings
            .iter_mut()
            .filter(|f| f.kind == LogKind::Dns && resolvers.contains(&f.src))
        {
            if !beaconing.contains_key(&(f.dst.clone(), f.window)) {
                f.combined *= 0.3;
                f.hints.push(crate::report::BeaconHint::ResolverRefresh);
            }
        }
        if !cfg.resolver_credit {
            return;
        }
        for (i, ci) in via {
            let (score, src, period) = {
                let c = &findings[ci];
                (c.combined, c.src.clone(), c.period_secs)
            };
            let f = &mut findings[i];
            if score > f.combined {
                f.combined = score;
                f.group = vec![format!("via {src}")];
                f.group_period_secs = Some(period);
            }
        }
        // forwarded lookups too few to be scored alone
        if beaconing.is_empty() {
            return;
        }
        let mut extra = Vec::new();
        for seq in &self.seqs {
            if seq.key.kind != LogKind::Dns || !resolver_ips.contains(&seq.key.src) {
                continue;
            }
            let dst = self.dst_string(&seq.key);
            let src = seq.key.src.to_string();
            let mut per_window: FxHashMap<u32, (u64, i64, i64)> = FxHashMap::default();
            for e in &seq.events {
                let w = ((e.t_us - origin).max(0) / window_us) as u32;
                let x = per_window.entry(w).or_insert((0, i64::MAX, i64::MIN));
                x.0 += 1;
                x.1 = x.1.min(e.t_us);
                x.2 = x.2.max(e.t_us);
            }
            for (w, (n, first, last)) in per_window {
                let Some(&ci) = beaconing.get(&(dst.clone(), w)) else {
                    continue;
                };
                if seen.contains(&(src.clone(), dst.clone(), w)) {
                    continue;
                }
                let c = &findings[ci];
                let mut f = c.clone();
                f.src = src.clone();
                f.events = n;
                f.checkins = n;
                f.max_burst = 1;
                f.first_seen = first as f64 / 1e6;
                f.last_seen = last as f64 / 1e6;
                f.hints = Vec::new();
                f.group = vec![format!("via {}", c.src)];
                f.group_period_secs = Some(c.period_secs);
                f.features = Vec::new();
                extra.push(f);
            }
        }
        findings.extend(extra);
    }

    fn dst_string(&self, k: &Key) -> String {
        match k.dst {
            Dst::Ip(ip) => ip.to_string(),
            Dst::Name(id, nx) => {
                let n = &self.names.names[id as usize];
                if nx {
                    format!("{n} (NXDOMAIN)")
                } else {
                    n.to_string()
                }
            }
        }
    }

    fn finding(
        &self,
        c: &Cand,
        fan_in: u32,
        benign: bool,
        combined: f32,
        cfg: &BeaconConfig,
    ) -> Finding {
        let seq = &self.seqs[c.seq];
        Finding {
            rank: 0,
            kind: seq.key.kind,
            src: seq.key.src.to_string(),
            dst: self.dst_string(&seq.key),
            dst_port: seq.port,
            window: c.window,
            cnn_score: c.cnn,
            jitter_score: c.jitter,
            stat_score: c.stat.score,
            combined,
            is_beacon: false,
            period_secs: c.stat.period as f64,
            jitter: c.stat.jitter as f64,
            events: c.events,
            checkins: c.checkins,
            max_burst: c.max_burst,
            first_seen: c.first_us as f64 / 1e6,
            last_seen: c.last_us as f64 / 1e6,
            failed_fraction: c.failed,
            fan_in,
            benign_hint: benign,
            popularity: 0,
            active_hours: c.active_hours,
            period_stability: c.stability,
            hints: Vec::new(),
            fan_in_needed: 0,
            popularity_needed: 0,
            group: Vec::new(),
            group_period_secs: None,
            features: features_of(cfg, c).to_vec(),
            truncated: seq.dropped > 0,
        }
    }
}

/// Number of features the learned combiner reads.
pub const NF: usize = 16;

/// Features of a candidate for the learned combiner (all roughly within [0, 1]).
fn features_of(cfg: &BeaconConfig, c: &Cand) -> [f32; NF] {
    let lnchk = ((c.checkins as f32).ln() / 1000f32.ln()).min(1.0);
    let cover = ((c.last_us - c.first_us) as f64 / (cfg.window_secs * 1e6)).min(1.0) as f32;
    [
        c.cnn,
        c.jitter,
        c.stat.score,
        c.stat.ts_skew,
        c.stat.ts_madm,
        c.stat.count,
        c.stat.spread,
        c.stat.size.unwrap_or(0.5),
        lnchk,
        c.stat.jitter.min(3.0) / 3.0,
        cover,
        c.cnn * (1.0 - lnchk),
        if c.stat.size.is_some() { 1.0 } else { 0.0 },
        c.stat.growth,
        c.stat.ladder,
        c.stat.ladder * lnchk,
    ]
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The final score: the learned combiner over CNN + statistical features (or a fixed blend when
/// the weights carry no combiner), then the hints applied.
/// The back-off detector's opinion, when the sequence is long enough for it
/// (`BeaconConfig::backoff_min_checkins`).
fn backoff_of(cfg: &BeaconConfig, c: &Cand) -> f32 {
    if c.checkins >= cfg.backoff_min_checkins as u64 {
        c.stat.backoff
    } else {
        0.0
    }
}

/// The strongest opinion of the three independent scorers on a candidate's own check-ins.
fn evidence_of(cfg: &BeaconConfig, c: &Cand) -> f32 {
    c.cnn.max(c.stat.score).max(backoff_of(cfg, c))
}

/// The combined score, and whether the evidence floor (`min_evidence`) capped it.
fn combine(
    cfg: &BeaconConfig,
    comb: Option<&(Vec<f32>, f32)>,
    c: &Cand,
    benign: bool,
) -> (f32, bool) {
    let mut s = match comb {
        Some((w, b)) => {
            let f = features_of(cfg, c);
            sigmoid(f.iter().zip(w).map(|(x, w)| x * w).sum::<f32>() + b)
        }
        None => {
            let w = cfg.cnn_weight;
            w * c.cnn + (1.0 - w) * c.stat.score
        }
    };
    if c.stat.score < cfg.cnn_min_stat {
        // did not pass the prefilter: the CNN never saw it
        s = s.min(c.stat.score);
    }
    // the back-off detector is a second, independent opinion (on single keys: merged rotation
    // groups of unrelated sites can line up into ladders by chance)
    if c.members.is_empty() {
        s = s.max(backoff_of(cfg, c));
    }
    // no scorer sees a clock: the combiner alone (bursts, few check-ins) is not enough
    let mut capped = false;
    let ev = evidence_of(cfg, c);
    if c.members.is_empty() && ev < cfg.min_evidence && s > ev {
        s = ev;
        capped = true;
    }
    if c.failed >= 0.8 {
        s *= 0.3;
    }
    if benign {
        s *= 0.3;
    }
    (s, capped)
}

// --- insertion (split borrows so the reader's closure can borrow the store mutably) ---

struct Parts<'a> {
    map: &'a mut FxHashMap<Key, u32>,
    seqs: &'a mut Vec<Seq>,
    names: &'a mut Interner,
    min_ts: &'a mut i64,
    dropped_keys: &'a mut u64,
    dropped_events: &'a mut u64,
    dns_servers: &'a mut FxHashSet<IpAddr>,
    max_keys: usize,
    max_events: usize,
}

fn self_parts(s: &mut Scorer) -> Parts<'_> {
    Parts {
        map: &mut s.map,
        seqs: &mut s.seqs,
        names: &mut s.names,
        min_ts: &mut s.min_ts,
        dropped_keys: &mut s.dropped_keys,
        dropped_events: &mut s.dropped_events,
        dns_servers: &mut s.dns_servers,
        max_keys: s.cfg.max_keys,
        max_events: s.cfg.max_events_per_key,
    }
}

#[inline]
fn insert(p: &mut Parts<'_>, r: &Record<'_>) {
    if r.kind == LogKind::Dns && p.dns_servers.len() < MAX_DNS_SERVERS {
        p.dns_servers.insert(r.dst);
    }
    let dst = match (r.kind, r.name) {
        (LogKind::Conn, _) | (_, None) => Dst::Ip(r.dst),
        (LogKind::Dns, Some(n)) => Dst::Name(p.names.get(n), r.nxdomain),
        (_, Some(n)) => Dst::Name(p.names.get(n), false),
    };
    let key = Key {
        kind: r.kind,
        src: r.src,
        dst,
    };
    let ev = Ev {
        t_us: r.ts_us,
        bytes: r.orig_bytes.min(u32::MAX as u64) as u32,
        failed: r.failed,
    };
    let idx = match p.map.get(&key) {
        Some(&i) => i as usize,
        None => {
            if p.map.len() >= p.max_keys {
                *p.dropped_keys += 1;
                return;
            }
            let i = p.seqs.len();
            p.seqs.push(Seq {
                key,
                port: r.dst_port,
                events: Vec::new(),
                dropped: 0,
            });
            p.map.insert(key, i as u32);
            i
        }
    };
    if r.ts_us < *p.min_ts {
        *p.min_ts = r.ts_us;
    }
    let max_events = p.max_events;
    let seq = &mut p.seqs[idx];
    if seq.events.len() >= max_events {
        seq.dropped += 1;
        *p.dropped_events += 1;
        return;
    }
    seq.events.push(ev);
}

// --- preparation ---

#[derive(Default)]
struct Work {
    times: Vec<f64>,
    checkins: Vec<f64>,
    sizes: Vec<f32>,
    intervals: Vec<f32>,
    scratch: Vec<f32>,
}

fn prepare(
    cfg: &BeaconConfig,
    seq: usize,
    window: u32,
    events: &[Ev],
    wstart_us: i64,
    has_sizes: bool,
    w: &mut Work,
) -> Option<Cand> {
    if events.len() < cfg.min_checkins {
        return None;
    }
    // collapse bursts, keeping one size per check-in (the burst's total)
    w.checkins.clear();
    w.sizes.clear();
    let mut max_burst = 0u32;
    let mut cur = 0u32;
    let mut prev = i64::MIN / 2;
    let gap_us = (cfg.burst_gap * 1e6) as i64;
    let mut failed = 0u64;
    for e in events {
        if e.failed {
            failed += 1;
        }
        if e.t_us - prev >= gap_us {
            w.checkins.push((e.t_us - wstart_us) as f64 / 1e6);
            w.sizes.push(e.bytes as f32);
            max_burst = max_burst.max(cur);
            cur = 1;
        } else {
            cur += 1;
            if let Some(s) = w.sizes.last_mut() {
                *s += e.bytes as f32;
            }
        }
        prev = e.t_us;
    }
    max_burst = max_burst.max(cur);
    if w.checkins.len() < cfg.min_checkins {
        return None;
    }
    features::intervals(&w.checkins, &mut w.intervals);
    let sizes: &[f32] = if has_sizes { &w.sizes } else { &[] };
    let st = stat::score(
        &w.checkins,
        &w.intervals,
        sizes,
        cfg.window_secs,
        &mut w.scratch,
    );
    w.times.clear();
    let mut hours = 0u32;
    for &t in &w.checkins {
        let tod = (wstart_us as f64 / 1e6 + t).rem_euclid(86_400.0);
        hours |= 1 << ((tod / 3600.0) as u32).min(23);
    }
    let active_hours = hours.count_ones();
    let stability = if w.intervals.is_empty() || st.period <= 0.0 {
        0.0
    } else {
        let p = st.period;
        w.intervals
            .iter()
            .filter(|&&x| (x - p).abs() <= 0.2 * p)
            .count() as f32
            / w.intervals.len() as f32
    };
    Some(Cand {
        seq,
        window,
        members: Vec::new(),
        events: events.len() as u64,
        checkins: w.checkins.len() as u64,
        max_burst,
        first_us: events[0].t_us,
        last_us: events[events.len() - 1].t_us,
        failed: failed as f32 / events.len() as f32,
        stat: st,
        cnn: 0.0,
        jitter: 0.0,
        active_hours,
        stability,
    })
}

/// Candidate rotation groups (C2 rotating over a few IPs): per source, destination port and
/// size class, the destinations that only this source (or one other) talks to, each long-lived;
/// then members are removed greedily while that makes the merged check-ins more regular, so
/// rarely visited web sites that share the port and size class drop out.
fn rotation_groups(seqs: &[Seq], cfg: &BeaconConfig) -> Vec<(Vec<usize>, u32)> {
    // conn: C2 over several IPs; dns: C2 over several domains (rare names of one source)
    let rotates = |k: LogKind| matches!(k, LogKind::Conn | LogKind::Dns);
    let mut prevalence: FxHashMap<(LogKind, Dst), u32> = FxHashMap::default();
    for s in seqs.iter().filter(|s| rotates(s.key.kind)) {
        *prevalence.entry((s.key.kind, s.key.dst)).or_default() += 1;
    }
    let mut by: FxHashMap<(LogKind, IpAddr, u16, i32), Vec<usize>> = FxHashMap::default();
    for (i, s) in seqs.iter().enumerate() {
        if !rotates(s.key.kind) || s.events.len() < 3 || prevalence[&(s.key.kind, s.key.dst)] > 2 {
            continue;
        }
        let first = s.events[0].t_us;
        let last = s.events[s.events.len() - 1].t_us;
        if ((last - first) as f64) < cfg.window_secs * 1e6 * 0.1 {
            continue;
        }
        let mut b: Vec<u32> = s.events.iter().map(|e| e.bytes).collect();
        let mid = b.len() / 2;
        let med = *b.select_nth_unstable(mid).1;
        let class = ((med as f32 + 1.0).log2() * 2.0).round() as i32;
        by.entry((s.key.kind, s.key.src, s.port, class))
            .or_default()
            .push(i);
    }
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for mut m in by.into_values() {
        if m.len() < 2 {
            continue;
        }
        if m.len() > 12 {
            // busy sources: keep the destinations with the most events (a short-period C2
            // rotating over a few IPs gives each of them many)
            m.sort_unstable_by_key(|&i| std::cmp::Reverse(seqs[i].events.len()));
            m.truncate(12);
        }
        m.sort_unstable();
        // Backward elimination: drop the member whose removal leaves the most regular merge;
        // keep dropping while that does not hurt, and always while more than 6 remain.
        let mut best = merged_regularity(seqs, &m, cfg, &mut scratch);
        while m.len() > 2 {
            let mut cand: Option<(usize, f32)> = None;
            for drop in 0..m.len() {
                let trial: Vec<usize> = m
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != drop)
                    .map(|(_, &x)| x)
                    .collect();
                let r = merged_regularity(seqs, &trial, cfg, &mut scratch);
                if cand.is_none_or(|(_, b)| r > b) {
                    cand = Some((drop, r));
                }
            }
            match cand {
                Some((drop, r)) if r >= best - 0.002 || m.len() > 6 => {
                    m.remove(drop);
                    best = r;
                }
                _ => break,
            }
        }
        if m.len() > 6 {
            continue;
        }
        // rotation spreads check-ins over all members: drop the ones with a tiny share
        let total: usize = m.iter().map(|&i| seqs[i].events.len()).sum();
        m.retain(|&i| seqs[i].events.len() * 10 >= total);
        if m.len() >= 2 {
            out.push((m, 0));
        }
    }
    out.sort();
    out
}

/// Regularity of the merged, burst-collapsed check-ins of `members` (MADM + skew sub-scores).
fn merged_regularity(
    seqs: &[Seq],
    members: &[usize],
    cfg: &BeaconConfig,
    scratch: &mut Vec<f32>,
) -> f32 {
    let mut t: Vec<i64> = members
        .iter()
        .flat_map(|&i| seqs[i].events.iter().map(|e| e.t_us))
        .collect();
    t.sort_unstable();
    let gap = (cfg.burst_gap * 1e6) as i64;
    let mut checkins: Vec<f64> = Vec::with_capacity(t.len());
    let mut prev = i64::MIN / 2;
    for &x in &t {
        if x - prev >= gap {
            checkins.push(x as f64 / 1e6);
        }
        prev = x;
    }
    if checkins.len() < cfg.min_checkins {
        return 0.0;
    }
    let iv: Vec<f32> = checkins.windows(2).map(|w| (w[1] - w[0]) as f32).collect();
    let s = stat::score(&checkins, &iv, &[], cfg.window_secs, scratch);
    s.ts_madm + s.ts_skew
}

// --- batched CNN ---

struct CnnBatch<'m> {
    cnn: &'m BeaconCnn,
    inputs: Vec<f32>,
    owners: Vec<usize>,
}

const CNN_BATCH: usize = 1024;

impl<'m> CnnBatch<'m> {
    fn new(cnn: &'m BeaconCnn) -> Self {
        CnnBatch {
            cnn,
            inputs: Vec::with_capacity(CNN_BATCH * CHANNELS * WIN),
            owners: Vec::with_capacity(CNN_BATCH),
        }
    }

    fn push(
        &mut self,
        owner: usize,
        iv: &[f32],
        max_windows: usize,
        cands: &mut [Cand],
    ) -> Result<(), AnalyticsError> {
        for s in features::window_starts(iv.len(), max_windows) {
            let end = (s + WIN).min(iv.len());
            let at = self.inputs.len();
            self.inputs.resize(at + CHANNELS * WIN, 0.0);
            features::encode_window(&iv[s..end], &mut self.inputs[at..]);
            self.owners.push(owner);
            if self.owners.len() >= CNN_BATCH {
                self.flush(cands)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, cands: &mut [Cand]) -> Result<(), AnalyticsError> {
        if self.owners.is_empty() {
            return Ok(());
        }
        let out = self.cnn.predict(&self.inputs)?;
        for (o, p) in self.owners.iter().zip(out) {
            let c = &mut cands[*o];
            if p[0] > c.cnn {
                c.cnn = p[0];
                c.jitter = p[1];
            }
        }
        self.inputs.clear();
        self.owners.clear();
        Ok(())
    }
}

/// Read and score `paths` (conn/dns/http/ssl; TSV or JSON; plain or gzip).
pub fn score_logs(paths: &[PathBuf], cfg: &BeaconConfig) -> Result<BeaconReport, AnalyticsError> {
    let mut s = Scorer::new(cfg)?;
    for p in paths {
        s.add_path(p)?;
    }
    s.finish()
}
