//! The probing engine: NULL probe first, TLS attempt and port-hinted probes beside it, then the
//! remaining probes in parallel by rarity; stops at the first hard match.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::AsyncWriteExt;
use tokio::time::{Instant, sleep_until, timeout};

use super::grabbers::{self, GrabKind};
use super::io::{
    BoxStream, DialError, ReadPlan, Response, connect_tcp, escape_bytes, read_response,
};
use super::probefile::{ProbeDb, Protocol};
use super::template::expand;
use super::tls::{self, Tls, TlsAttempt};
use super::{IdentifyOptions, RuleRef, ServiceBanner, ServiceReport, ServiceStatus, TlsMode};

/// How to open a connection to the target (plain, or through TLS).
#[derive(Debug, Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    pub connect_timeout: Duration,
    pub tls: bool,
    pub sni: Option<String>,
    pub tls_limit: Duration,
    pub tls_cap: usize,
}

impl Dialer {
    /// A dialer with the default timeouts (`tls`: wrap every connection in a TLS handshake).
    pub fn new(addr: SocketAddr, tls: bool) -> Dialer {
        let o = IdentifyOptions::default();
        Dialer {
            addr,
            connect_timeout: Duration::from_millis(o.connect_timeout_ms),
            tls,
            sni: None,
            tls_limit: Duration::from_millis(3000),
            tls_cap: o.tls_handshake_cap,
        }
    }

    pub async fn dial(&self) -> Result<BoxStream, DialError> {
        if self.tls {
            let a = tls::handshake(
                self.addr,
                self.sni.as_deref(),
                self.connect_timeout,
                self.tls_limit,
                self.tls_cap,
            )
            .await;
            a.result.map(|(s, _)| Box::new(s) as BoxStream)
        } else {
            connect_tcp(self.addr, self.connect_timeout)
                .await
                .map(|s| Box::new(s) as BoxStream)
        }
    }
}

/// Waits derived from the measured round-trip time.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub banner: Duration,
    pub response: Duration,
    pub idle: Duration,
    pub patience: Duration,
    pub max_probe: Duration,
}

impl Waits {
    pub fn new(rtt: Duration, o: &IdentifyOptions) -> Self {
        let scaled = rtt * o.rtt_factor;
        Waits {
            banner: scaled.max(Duration::from_millis(o.banner_wait_ms)),
            response: scaled.max(Duration::from_millis(o.response_wait_ms)),
            idle: (rtt * 4).max(Duration::from_millis(o.idle_ms)),
            patience: Duration::from_millis(o.patience_ms),
            max_probe: Duration::from_millis(o.max_probe_wait_ms),
        }
    }
}

/// A rule that matched, with its fields expanded.
#[derive(Debug, Clone)]
struct Found {
    rule: RuleRef,
    product: Option<String>,
    version: Option<String>,
    info: Option<String>,
    hostname: Option<String>,
    os: Option<String>,
    device: Option<String>,
    cpe: Vec<String>,
}

struct Ctx<'a> {
    db: &'a ProbeDb,
    opts: &'a IdentifyOptions,
    port: u16,
    waits: Waits,
    deadline: Instant,
    null_idx: Option<usize>,
    /// Probe sent on the NULL probe's own connection when the peer stays silent past the banner
    /// wait (`Help`, `HELP\r\n`; GenericLines when there is no Help probe): line-based servers
    /// that wait for the client (IRC answers 451, which it does not for GenericLines' empty
    /// lines) answer on the one connection that is sure to be accepted: ngircd refused our
    /// other probes' connections ("too many connections from your IP address").
    nudge_idx: Option<usize>,
}

/// Tries the rules of `probe` (its own, its fallbacks, then the NULL probe's) on `data`.
/// Returns the first hard match and the first softmatch seen before it.
fn match_response(ctx: &Ctx<'_>, probe: usize, data: &[u8]) -> (Option<Found>, Option<Found>) {
    let db = ctx.db;
    let p = &db.probes[probe];
    if !p.payload.is_empty() && data == p.payload.as_slice() {
        let rule = RuleRef {
            probe: p.name.clone(),
            file: "builtin:echo".into(),
            line: 0,
            soft: false,
            service: "echo".into(),
        };
        return (Some(found_plain(rule)), None);
    }
    let mut order = vec![probe];
    for f in &p.fallback {
        if let Some(i) = db.probe_index(p.protocol, f)
            && !order.contains(&i)
        {
            order.push(i);
        }
    }
    if p.protocol == Protocol::Tcp
        && let Some(n) = ctx.null_idx
        && !order.contains(&n)
    {
        order.push(n);
    }
    let mut soft = None;
    for i in order {
        for m in &db.probes[i].matches {
            if soft.is_some() && m.soft {
                continue;
            }
            let Some(groups) = m.captures(data) else {
                continue;
            };
            let t = &m.template;
            let ex = |o: &Option<String>| {
                o.as_deref()
                    .map(|s| expand(s, &groups))
                    .filter(|s| !s.is_empty())
            };
            let f = Found {
                rule: RuleRef {
                    probe: p.name.clone(),
                    file: db.files[m.file].clone(),
                    line: m.line as u64,
                    soft: m.soft,
                    service: m.service.clone(),
                },
                product: ex(&t.product),
                version: ex(&t.version),
                info: ex(&t.info),
                hostname: ex(&t.hostname),
                os: ex(&t.os),
                device: ex(&t.device),
                cpe: t.cpe.iter().map(|c| expand(c, &groups)).collect(),
            };
            if m.soft {
                soft = Some(f);
            } else {
                return (Some(f), soft);
            }
        }
    }
    (None, soft)
}

/// What a rule of a probe file says about a reply (used by the UDP scan for nmap's UDP probes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleMatch {
    pub rule: RuleRef,
    pub product: Option<String>,
    pub version: Option<String>,
    pub info: Option<String>,
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub device: Option<String>,
    pub cpe: Vec<String>,
}

/// Tries the rules of probe `probe` (its own, then its fallbacks') on a reply: the first hard
/// match, else the first softmatch. No NULL-probe rules (UDP has no banner).
pub fn match_reply(db: &ProbeDb, probe: usize, data: &[u8]) -> Option<RuleMatch> {
    let ctx = Ctx {
        db,
        opts: &IdentifyOptions::default(),
        port: 0,
        waits: Waits::new(Duration::ZERO, &IdentifyOptions::default()),
        deadline: Instant::now(),
        null_idx: None,
        nudge_idx: None,
    };
    let (h, s) = match_response(&ctx, probe, data);
    h.or(s).map(|f| RuleMatch {
        rule: f.rule,
        product: f.product,
        version: f.version,
        info: f.info,
        hostname: f.hostname,
        os: f.os,
        device: f.device,
        cpe: f.cpe,
    })
}

fn found_plain(rule: RuleRef) -> Found {
    Found {
        rule,
        product: None,
        version: None,
        info: None,
        hostname: None,
        os: None,
        device: None,
        cpe: Vec::new(),
    }
}

struct ProbeOutcome {
    probe: usize,
    resp: Response,
    hard: Option<Found>,
    soft: Option<Found>,
    dial_error: Option<DialError>,
    /// The NULL probe's connection was nudged with the GenericLines payload.
    nudged: bool,
}

async fn run_probe(
    ctx: &Ctx<'_>,
    dialer: &Dialer,
    probe: usize,
    stream: Option<BoxStream>,
) -> ProbeOutcome {
    let mut out = ProbeOutcome {
        probe,
        resp: Response::default(),
        hard: None,
        soft: None,
        dial_error: None,
        nudged: false,
    };
    let mut s = match stream {
        Some(s) => s,
        None => match dialer.dial().await {
            Ok(s) => s,
            Err(e) => {
                out.dial_error = Some(e);
                return out;
            }
        },
    };
    let p = &ctx.db.probes[probe];
    let w = ctx.waits;
    if !p.payload.is_empty() {
        match timeout(w.response, s.write_all(&p.payload)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                out.resp.error = Some(format!("send failed: {e}"));
                out.resp.closed = true;
                return out;
            }
            Err(_) => {
                out.resp.error = Some("send timed out".into());
                return out;
            }
        }
    }
    let start = Instant::now();
    // The NULL probe keeps listening past the point where the other probes start (a slow banner
    // still wins); see `stage2_at` in `run_engine`.
    let first = if p.is_null() {
        w.banner * 4
    } else {
        w.response
    };
    let total = Duration::from_millis(p.totalwaitms.unwrap_or(5000)).min(w.max_probe);
    let plan = ReadPlan {
        first_byte_by: (start + first).min(ctx.deadline),
        deadline: (start + total.max(first)).min(ctx.deadline),
        idle: w.idle,
        patience: w.patience,
        cap: ctx.opts.max_response_bytes,
    };
    // A silent NULL connection is nudged after the banner wait (see `Ctx::nudge_idx`); a late
    // banner still arrives on it and is matched by the NULL rules (every probe falls back to them).
    let nudge = p.is_null().then_some(ctx.nudge_idx).flatten();
    let plan = match nudge {
        Some(_) => ReadPlan {
            first_byte_by: (start + w.banner).min(ctx.deadline),
            ..plan
        },
        None => plan,
    };
    let mut hard = None;
    let mut soft = None;
    let mut resp = read_response(&mut s, plan, |data| {
        let (h, so) = match_response(ctx, probe, data);
        if soft.is_none() {
            soft = so;
        }
        if h.is_some() {
            hard = h;
            true
        } else {
            false
        }
    })
    .await;
    if let Some(g) = nudge
        && resp.data.is_empty()
        && !resp.closed
        && resp.error.is_none()
        && Instant::now() < ctx.deadline
        && timeout(w.response, s.write_all(&ctx.db.probes[g].payload))
            .await
            .is_ok_and(|r| r.is_ok())
    {
        out.nudged = true;
        let start2 = Instant::now();
        let plan2 = ReadPlan {
            first_byte_by: (start2 + (first - w.banner).max(w.response)).min(ctx.deadline),
            deadline: (start2 + total.max(first)).min(ctx.deadline),
            ..plan
        };
        resp = read_response(&mut s, plan2, |data| {
            let (h, so) = match_response(ctx, g, data);
            if soft.is_none() {
                soft = so;
            }
            if h.is_some() {
                hard = h;
                true
            } else {
                false
            }
        })
        .await;
        if hard.is_none() && !resp.data.is_empty() {
            let (h, so) = match_response(ctx, g, &resp.data);
            hard = h;
            if soft.is_none() {
                soft = so;
            }
        }
        out.resp = resp;
        out.hard = hard;
        out.soft = soft;
        return out;
    }
    if hard.is_none() && !resp.data.is_empty() {
        let (h, so) = match_response(ctx, probe, &resp.data);
        hard = h;
        if soft.is_none() {
            soft = so;
        }
    }
    out.resp = resp;
    out.hard = hard;
    out.soft = soft;
    out
}

#[derive(Default)]
struct EngineResult {
    hard: Option<(Found, usize)>,
    soft: Option<(Found, usize)>,
    responses: Vec<(usize, Response)>,
    sent: Vec<usize>,
    null_closed_empty: bool,
    null_first_byte: Option<Duration>,
    capped: bool,
    drip: bool,
    deadline_hit: bool,
    dial_errors: Vec<DialError>,
}

type TlsFut<'a> = Pin<Box<dyn Future<Output = TlsAttempt> + Send + 'a>>;

#[allow(clippy::large_enum_variant)] // one value per identification, moved once
enum EngineEnd {
    Done(EngineResult, Option<Box<TlsAttempt>>),
    Tls(Box<TlsAttempt>),
}

async fn run_engine<'a>(
    ctx: &Ctx<'a>,
    dialer: &Dialer,
    first: Option<BoxStream>,
    mut tls_fut: Option<TlsFut<'a>>,
) -> EngineEnd {
    let db = ctx.db;
    let mut res = EngineResult::default();
    let mut inflight = FuturesUnordered::new();
    let mut null_done = true;
    let mut first = first;
    if let Some(n) = ctx.null_idx {
        inflight.push(run_probe(ctx, dialer, n, first.take()));
        null_done = false;
    }
    // Candidate probes: port-hinted ones first (any rarity, as nmap does), then by rarity.
    let hinted = |i: usize| {
        let p = &db.probes[i];
        p.ports.contains(ctx.port) || (dialer.tls && p.sslports.contains(ctx.port))
    };
    let mut cands: Vec<usize> = (0..db.probes.len())
        .filter(|&i| {
            let p = &db.probes[i];
            p.protocol == Protocol::Tcp
                && Some(i) != ctx.null_idx
                && !p.payload.is_empty()
                && (hinted(i) || p.rarity <= ctx.opts.intensity)
        })
        .collect();
    cands.sort_by_key(|&i| (!hinted(i), db.probes[i].rarity, i));
    let mut queue: VecDeque<usize> = cands.into();
    // Port-hinted probes start right away, beside the NULL probe.
    let stage1 = (ctx.opts.parallelism / 2).max(1);
    while inflight.len() < stage1 + 1 {
        match queue.front() {
            Some(&i) if hinted(i) => {
                queue.pop_front();
                inflight.push(run_probe(ctx, dialer, i, None));
            }
            _ => break,
        }
    }
    let mut tls_done: Option<TlsAttempt> = None;
    // The other probes start when the NULL probe ends or after the banner wait, whichever is first.
    let stage2_at = Instant::now() + ctx.waits.banner;
    let mut soft_service: Option<String> = None;
    let par = ctx.opts.parallelism.max(1);
    loop {
        if res.hard.is_some() {
            break;
        }
        if null_done {
            while inflight.len() < par {
                let Some(i) = queue.pop_front() else { break };
                if let Some(s) = &soft_service {
                    // After a softmatch only probes that can name that service are worth sending.
                    if !db.probes[i]
                        .matches
                        .iter()
                        .any(|m| !m.soft && &m.service == s)
                    {
                        continue;
                    }
                }
                inflight.push(run_probe(ctx, dialer, i, None));
            }
        }
        if inflight.is_empty() && tls_fut.is_none() {
            break;
        }
        tokio::select! {
            Some(o) = inflight.next(), if !inflight.is_empty() => {
                if Some(o.probe) == ctx.null_idx {
                    null_done = true;
                    // After a nudge the reply's first byte is not a banner.
                    res.null_first_byte = o.resp.first_byte.filter(|_| !o.nudged);
                    res.null_closed_empty = o.resp.closed && o.resp.data.is_empty() && o.dial_error.is_none();
                }
                res.sent.push(o.probe);
                if o.nudged && let Some(g) = ctx.nudge_idx {
                    res.sent.push(g);
                }
                res.capped |= o.resp.capped;
                res.drip |= o.resp.deadline_hit;
                if let Some(e) = o.dial_error { res.dial_errors.push(e); }
                if res.soft.is_none()
                    && let Some(s) = o.soft {
                        soft_service = Some(s.rule.service.clone());
                        res.soft = Some((s, o.probe));
                    }
                if let Some(h) = o.hard {
                    res.hard = Some((h, o.probe));
                }
                if !o.resp.data.is_empty() {
                    res.responses.push((o.probe, o.resp));
                }
            }
            t = async { tls_fut.as_mut().expect("guarded").await }, if tls_fut.is_some() => {
                tls_fut = None;
                if t.result.is_ok() {
                    return EngineEnd::Tls(Box::new(t));
                }
                tls_done = Some(t);
            }
            _ = sleep_until(stage2_at), if !null_done => {
                null_done = true;
            }
            _ = sleep_until(ctx.deadline) => {
                res.deadline_hit = true;
                break;
            }
        }
    }
    drop(inflight);
    // A plain hard match does not settle a TLS port (nginx answers plain HTTP on 443 with a 400):
    // let a pending handshake finish (it is bounded by its own limit).
    // A TLS server answers a ClientHello within a round trip, so by the time a plain probe has
    // matched, a real TLS port has (nearly) finished its handshake: wait only a short while more.
    if let Some(f) = tls_fut {
        let grace = ctx.waits.response * 2;
        match timeout(grace, f).await {
            Ok(t) if t.result.is_ok() => return EngineEnd::Tls(Box::new(t)),
            Ok(t) => tls_done = Some(t),
            Err(_) => {}
        }
    }
    EngineEnd::Done(res, tls_done.map(Box::new))
}

/// Identifies the service on one TCP port. Never panics on peer behaviour; every outcome is a
/// [`ServiceReport`] with a [`ServiceStatus`].
pub async fn identify(addr: SocketAddr, opts: &IdentifyOptions, db: &ProbeDb) -> ServiceReport {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_millis(opts.total_timeout_ms);
    let mut report = ServiceReport::new(addr, ServiceStatus::NoResponse);
    report.budget_ms = opts.total_timeout_ms;
    let connect_timeout = Duration::from_millis(opts.connect_timeout_ms);
    let first = match connect_tcp(addr, connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            report.status = match e {
                DialError::Refused | DialError::SelfConnect => ServiceStatus::Closed,
                DialError::Timeout(_) => ServiceStatus::Filtered,
                _ => ServiceStatus::Closed,
            };
            report.status_detail = Some(e.to_string());
            report.timings.total_ms = ms(t0.elapsed());
            return report;
        }
    };
    let rtt = t0.elapsed();
    report.timings.connect_ms = ms(rtt);
    let waits = Waits::new(rtt, opts);
    let ctx = Ctx {
        db,
        opts,
        port: addr.port(),
        waits,
        deadline,
        null_idx: db.probe_index(Protocol::Tcp, "NULL"),
        nudge_idx: db
            .probe_index(Protocol::Tcp, "Help")
            .or_else(|| db.probe_index(Protocol::Tcp, "GenericLines")),
    };
    let tls_limit = (waits.response * 4).max(Duration::from_millis(1500));
    let mut dialer = Dialer {
        addr,
        connect_timeout,
        tls: false,
        sni: opts.sni.clone(),
        tls_limit,
        tls_cap: opts.tls_handshake_cap,
    };
    let tls_fut: Option<TlsFut<'_>> = (opts.tls == TlsMode::Auto).then(|| {
        let d = dialer.clone();
        Box::pin(async move {
            tls::handshake(
                d.addr,
                d.sni.as_deref(),
                d.connect_timeout,
                d.tls_limit,
                d.tls_cap,
            )
            .await
        }) as TlsFut<'_>
    });
    let t_probe = Instant::now();
    let mut tls_failure: Option<Box<TlsAttempt>> = None;
    let res = match run_engine(&ctx, &dialer, Some(Box::new(first)), tls_fut).await {
        EngineEnd::Done(r, t) => {
            tls_failure = t;
            r
        }
        EngineEnd::Tls(t) => {
            let (stream, info): (_, Tls) = t.result.expect("Tls end carries a stream");
            report.tls = Some(info);
            report.tunnel = Some("ssl".into());
            dialer.tls = true;
            match run_engine(&ctx, &dialer, Some(Box::new(stream)), None).await {
                EngineEnd::Done(r, _) => r,
                EngineEnd::Tls(_) => unreachable!("no TLS attempt inside the tunnel"),
            }
        }
    };
    report.timings.probes_ms = ms(t_probe.elapsed());
    report.timings.banner_ms = res.null_first_byte.map(ms);
    report.probes_sent = res
        .sent
        .iter()
        .map(|&i| db.probes[i].name.clone())
        .collect();
    if let Some(t) = &tls_failure
        && let Err(e) = &t.result
        && (t.peer_speaks_tls || t.byte_capped)
    {
        report.tls_error = Some(e.to_string());
    }

    // The reply to report: the matching one, else the banner, else the first reply.
    let matched_probe = res.hard.as_ref().or(res.soft.as_ref()).map(|(_, p)| *p);
    let shown = matched_probe
        .and_then(|p| res.responses.iter().find(|(i, _)| *i == p))
        .or_else(|| res.responses.iter().find(|(i, _)| Some(*i) == ctx.null_idx))
        .or_else(|| res.responses.first());
    if let Some((i, r)) = shown {
        let cap = opts.banner_cap.min(r.data.len());
        report.banner = Some(ServiceBanner {
            probe: db.probes[*i].name.clone(),
            bytes: r.data.len() as u64,
            truncated: r.capped || cap < r.data.len(),
            text: escape_bytes(&r.data[..cap]),
        });
    }

    let tls_only = |f: &Found| matches!(f.rule.service.as_str(), "ssl" | "tls");
    if let Some((f, _)) = res
        .hard
        .as_ref()
        .filter(|(f, _)| !(tls_only(f) && report.tls_error.is_some()))
    {
        apply(&mut report, f);
        report.status = ServiceStatus::Identified;
    } else if let Some((f, _)) = &res.soft {
        apply(&mut report, f);
        report.rule = None;
        report.status = ServiceStatus::SoftMatch;
    } else if report.tls_error.is_some() {
        // The peer speaks TLS (a rule may even say `ssl`) but we could not get through.
        if let Some((f, _)) = &res.hard {
            apply(&mut report, f);
        }
        report.status = ServiceStatus::TlsFailed;
        report.status_detail = report.tls_error.clone();
    } else if res.capped {
        report.status = ServiceStatus::ByteCap;
        report.status_detail = Some(format!(
            "peer sent more than {} bytes without matching any rule",
            opts.max_response_bytes
        ));
    } else if res.drip || (res.deadline_hit && !res.responses.is_empty()) {
        report.status = ServiceStatus::Timeout;
        report.status_detail = Some("peer was still sending at the deadline (slow drip?)".into());
    } else if !res.responses.is_empty() {
        report.status = ServiceStatus::Unrecognized;
    } else if res.null_closed_empty {
        report.status = ServiceStatus::Tcpwrapped;
        report.status_detail = Some("peer closed the connection without sending anything".into());
    } else if res.deadline_hit {
        report.status = ServiceStatus::Timeout;
        report.status_detail = Some("identification deadline reached".into());
    } else {
        report.status = ServiceStatus::NoResponse;
    }
    if let Some((f, _)) = &res.soft {
        report.softmatch = Some(f.rule.clone());
    }
    if report.status == ServiceStatus::Identified && res.capped {
        report.status_detail = Some("a reply was truncated at the byte cap".into());
    }

    // Structured grabber of the identified protocol (or the port's usual one).
    if opts.grabbers {
        let kind = report
            .service
            .as_deref()
            .and_then(GrabKind::for_service)
            .or_else(|| {
                matches!(
                    report.status,
                    ServiceStatus::NoResponse | ServiceStatus::Unrecognized
                )
                .then(|| GrabKind::for_port(addr.port()))
                .flatten()
            });
        if let Some(kind) = kind {
            let t_grab = Instant::now();
            // The grabber lives inside the port's budget (it used to get 500 ms on top).
            let left = deadline.saturating_duration_since(Instant::now());
            let limit = Duration::from_millis(opts.grab_timeout_ms).min(left);
            if limit.is_zero() {
                report.grab_error = Some(format!("{kind:?} grabber not run: budget spent"));
                report.budget_exhausted = true;
            } else {
                match timeout(limit, grabbers::grab(kind, &dialer, &waits, opts)).await {
                    Ok(Ok(g)) => {
                        grabbers::merge(&mut report, kind, g);
                    }
                    Ok(Err(e)) => report.grab_error = Some(e.to_string()),
                    Err(_) => {
                        report.grab_error =
                            Some(format!("{kind:?} grabber timed out after {limit:?}"))
                    }
                }
            }
            report.timings.grab_ms = ms(t_grab.elapsed());
        }
    }
    report.budget_exhausted |= res.deadline_hit || Instant::now() >= deadline;
    report.timings.total_ms = ms(t0.elapsed());
    tracing::debug!(%addr, status = ?report.status, service = ?report.service, product = ?report.product,
        total_ms = report.timings.total_ms, "service identified");
    report
}

fn apply(report: &mut ServiceReport, f: &Found) {
    report.service = Some(f.rule.service.clone());
    report.product = f.product.clone();
    report.version = f.version.clone();
    report.info = f.info.clone();
    report.hostname = f.hostname.clone();
    report.os = f.os.clone();
    report.device = f.device.clone();
    report.cpe = f.cpe.clone();
    report.rule = Some(f.rule.clone());
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

#[allow(dead_code)]
fn _assert_send() {
    fn is_send<T: Send>(_: T) {}
    let db = ProbeDb::default();
    let o = IdentifyOptions::default();
    is_send(identify("127.0.0.1:1".parse().unwrap(), &o, &db));
}
