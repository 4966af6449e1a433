//! `overlord search | stats | host | diff | export | import`: against a coordinator's
//! `QueryService`, or (no coordinator) directly on a data directory, after folding in whatever
//! the index has not seen yet. Both paths print the same domain types.

use anyhow::{Context, Result, bail};
use overlord_proto::v1;
use overlord_query::export;
use overlord_query::search::{
    self, ChangeKind, Counted, Diff, Engine, FieldChange, HostView, Page, RowKey, SearchRequest,
    View,
};
use overlord_query::state::ServiceState;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone, Debug)]
pub struct Source {
    /// Query this coordinator (else the data directory is read directly).
    #[arg(long, env = "OVERLORD_COORDINATOR")]
    pub coordinator: Option<String>,
    /// Data directory read when no coordinator is given (the quick start's by default).
    #[arg(long, default_value = ".overlord-data")]
    pub data_dir: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    Table,
    Jsonl,
    Csv,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportAs {
    Jsonl,
    Csv,
    NmapXml,
}

/// A data directory opened for querying: the job store plus its index, caught up.
pub struct Local {
    pub engine: Engine,
    pub follower: overlord_query::follow::Follower,
    pub store: Arc<dyn overlord_storage::Store>,
}

impl Local {
    pub fn open(dir: &Path) -> Result<Local> {
        if !dir.exists() {
            bail!(
                "no data directory {} (run a scan first, or give --coordinator)",
                dir.display()
            );
        }
        let store: Arc<dyn overlord_storage::Store> =
            Arc::new(overlord_storage::SledStore::open(dir).with_context(|| {
                format!(
                    "cannot open {} (is a coordinator using it? then give --coordinator)",
                    dir.display()
                )
            })?);
        let index = Arc::new(overlord_query::index::QueryIndex::open_or_rebuild(
            &dir.join("query"),
        )?);
        let follower = overlord_query::follow::Follower::new(index.clone(), store.clone());
        let n = follower.catch_up_all()?;
        follower.commit()?;
        if n > 0 {
            eprintln!("indexed {n} new findings");
        }
        Ok(Local {
            engine: Engine::new(index),
            follower,
            store,
        })
    }
}

pub async fn connect(
    url: &str,
) -> Result<v1::query_service_client::QueryServiceClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())?
        .connect()
        .await
        .with_context(|| format!("cannot connect to coordinator {url}"))?;
    Ok(v1::query_service_client::QueryServiceClient::new(ch)
        .max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES))
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", s.message())
}

fn row_of(r: &v1::ServiceRow) -> Result<ServiceState> {
    serde_json::from_str(&r.row_json).context("row from the coordinator")
}

fn page_of(r: v1::SearchResponse) -> Result<Page> {
    Ok(Page {
        services: r.services.iter().map(row_of).collect::<Result<_>>()?,
        hosts: r
            .hosts
            .iter()
            .map(|h| {
                Ok(search::HostRow {
                    ip: h.ip.parse()?,
                    last_seen_ms: h.last_seen_ms,
                    services: h.services.iter().map(row_of).collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?,
        matched: r.matched,
        next: RowKey::decode(&r.next_after),
    })
}

fn fc(v: &[v1::FieldChange]) -> Vec<FieldChange> {
    let o = |s: &str| (!s.is_empty()).then(|| s.to_string());
    v.iter()
        .map(|c| FieldChange {
            field: c.field.clone(),
            from: o(&c.from),
            to: o(&c.to),
        })
        .collect()
}

pub fn bad_query(e: search::QueryError, query: &str) -> anyhow::Error {
    match &e {
        search::QueryError::Parse(p) => anyhow::anyhow!("{e}\n{}", p.pointer(query)),
        _ => anyhow::anyhow!("{e}"),
    }
}

pub fn short(s: &str, n: usize) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.chars().count() > n {
        format!("{}…", s.chars().take(n).collect::<String>())
    } else {
        s
    }
}

pub fn table_line(s: &ServiceState) -> String {
    let what = [s.product.as_deref(), s.version.as_deref()]
        .iter()
        .flatten()
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let extra = s
        .http
        .as_ref()
        .and_then(|h| h.title.clone())
        .or_else(|| s.screen.as_ref().and_then(|x| x.text.clone()))
        .or_else(|| s.banner.clone())
        .unwrap_or_default();
    format!(
        "{:<24} {:<5} {:<14} {:<28} job {:<4} {}  {}",
        s.endpoint(),
        if s.open { "open" } else { "-" },
        short(s.service.as_deref().unwrap_or("?"), 14),
        short(&what, 28),
        s.job,
        search::format_ms(s.last_seen_ms),
        short(&extra, 60)
    )
}

fn print_rows(
    rows: &[ServiceState],
    format: OutFormat,
    header: bool,
    out: &mut impl Write,
) -> Result<()> {
    if format == OutFormat::Csv && header {
        writeln!(out, "{}", export::csv_header())?;
    }
    for r in rows {
        match format {
            OutFormat::Table => writeln!(out, "{}", table_line(r))?,
            OutFormat::Jsonl => writeln!(out, "{}", export::jsonl_row(r))?,
            OutFormat::Csv => writeln!(out, "{}", export::csv_row(r))?,
        }
    }
    Ok(())
}

fn print_counted(c: &Counted) {
    println!("{} rows", c.matched);
    for f in &c.facets {
        println!("{}:", f.field);
        for v in &f.values {
            println!("  {:>10}  {}", v.count, v.value);
        }
        if f.other > 0 {
            println!("  {:>10}  (other)", f.other);
        }
    }
}

pub struct SearchArgs {
    pub query: String,
    pub hosts: bool,
    pub facets: Vec<String>,
    pub format: OutFormat,
    pub limit: u32,
    pub after: Option<String>,
    pub all: bool,
}

pub async fn search_cmd(src: &Source, a: SearchArgs) -> Result<()> {
    let facets = a
        .facets
        .iter()
        .map(|f| search::parse_facet(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let view = if a.hosts { View::Hosts } else { View::Services };
    let mut after = match &a.after {
        Some(s) => Some(RowKey::decode(s).context("bad --after")?),
        None => None,
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let mut local = None;
    let mut client = None;
    match &src.coordinator {
        Some(u) => client = Some(connect(u).await?),
        None => local = Some(tokio::task::block_in_place(|| Local::open(&src.data_dir))?),
    }
    let counted;
    loop {
        let page = match (&local, &mut client) {
            (Some(l), _) => {
                let r = SearchRequest {
                    query: a.query.clone(),
                    view,
                    limit: a.limit as usize,
                    after,
                    deadline: search::DEFAULT_DEADLINE,
                };
                tokio::task::block_in_place(|| l.engine.search(&r))
                    .map_err(|e| bad_query(e, &a.query))?
            }
            (None, Some(c)) => {
                let r = v1::SearchRequest {
                    query: a.query.clone(),
                    view: if a.hosts {
                        v1::SearchView::Hosts
                    } else {
                        v1::SearchView::Services
                    } as i32,
                    limit: a.limit,
                    after: after.map(|k| k.encode()).unwrap_or_default(),
                    deadline_ms: 0,
                };
                page_of(c.search(r).await.map_err(status_err)?.into_inner())?
            }
            _ => unreachable!(),
        };
        if a.hosts {
            for h in &page.hosts {
                match a.format {
                    OutFormat::Table => {
                        let ports: Vec<String> = h
                            .services
                            .iter()
                            .map(|s| format!("{}/{}", s.port, s.service.as_deref().unwrap_or("?")))
                            .collect();
                        writeln!(
                            out,
                            "{:<40} {}  {}",
                            h.ip,
                            search::format_ms(h.last_seen_ms),
                            ports.join(" ")
                        )?;
                    }
                    _ => print_rows(&h.services, a.format, first, &mut out)?,
                }
                first = false;
            }
        } else {
            print_rows(&page.services, a.format, first, &mut out)?;
            first = false;
        }
        if first_page_summary(&page, a.all) {
            out.flush()?;
            eprintln!("{} rows matched", page.matched);
        }
        match page.next {
            Some(k) if a.all => after = Some(k),
            Some(k) => {
                out.flush()?;
                eprintln!("more: --after {}  (or --all)", k.encode());
                break;
            }
            None => break,
        }
    }
    out.flush()?;
    drop(out);
    if !facets.is_empty() {
        counted = count(src, &local, &mut client, &a.query, &a.facets, &facets).await?;
        print_counted(&counted);
    }
    Ok(())
}

fn first_page_summary(_p: &Page, all: bool) -> bool {
    !all
}

async fn count(
    _src: &Source,
    local: &Option<Local>,
    client: &mut Option<v1::query_service_client::QueryServiceClient<tonic::transport::Channel>>,
    query: &str,
    raw: &[String],
    facets: &[(String, usize)],
) -> Result<Counted> {
    match (local, client) {
        (Some(l), _) => {
            tokio::task::block_in_place(|| l.engine.count(query, facets, search::DEFAULT_DEADLINE))
                .map_err(|e| bad_query(e, query))
        }
        (None, Some(c)) => {
            let r = c
                .count(v1::CountRequest {
                    query: query.into(),
                    facets: raw.to_vec(),
                    deadline_ms: 0,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            Ok(Counted {
                matched: r.matched,
                facets: r
                    .facets
                    .into_iter()
                    .map(|f| search::Facet {
                        field: f.field,
                        other: f.other,
                        values: f
                            .values
                            .into_iter()
                            .map(|v| search::FacetCount {
                                value: v.value,
                                count: v.count,
                            })
                            .collect(),
                    })
                    .collect(),
            })
        }
        _ => unreachable!(),
    }
}

pub async fn stats_cmd(src: &Source, query: &str, raw: &[String]) -> Result<()> {
    let raw: Vec<String> = if raw.is_empty() {
        ["service", "product", "port", "provider"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    } else {
        raw.to_vec()
    };
    let facets = raw
        .iter()
        .map(|f| search::parse_facet(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let (local, mut client) = open(src).await?;
    let c = count(src, &local, &mut client, query, &raw, &facets).await?;
    print_counted(&c);
    Ok(())
}

async fn open(
    src: &Source,
) -> Result<(
    Option<Local>,
    Option<v1::query_service_client::QueryServiceClient<tonic::transport::Channel>>,
)> {
    Ok(match &src.coordinator {
        Some(u) => (None, Some(connect(u).await?)),
        None => (
            Some(tokio::task::block_in_place(|| Local::open(&src.data_dir))?),
            None,
        ),
    })
}

pub fn parse_when(s: &str) -> Result<u64> {
    overlord_query::compile::parse_date(s)
        .map(|(a, b)| (b - 1).max(a) as u64)
        .with_context(|| {
            format!("{s:?} is not a date (YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS]Z or unix ms)")
        })
}

pub async fn host_cmd(src: &Source, ip: &str, as_of: Option<&str>, json: bool) -> Result<()> {
    let ipa: std::net::IpAddr = ip
        .parse()
        .with_context(|| format!("{ip:?} is not an address"))?;
    let as_of = as_of.map(parse_when).transpose()?;
    let (local, client) = open(src).await?;
    let view = match (&local, client) {
        (Some(l), _) => tokio::task::block_in_place(|| l.engine.host(ipa, as_of))
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        (None, Some(mut c)) => {
            let r = c
                .host(v1::HostRequest {
                    ip: ip.into(),
                    as_of_ms: as_of.unwrap_or(0),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            HostView {
                ip: ipa,
                as_of_ms: as_of,
                ports: r
                    .ports
                    .iter()
                    .map(|p| {
                        Ok(search::PortHistory {
                            port: p.port as u16,
                            first_seen_ms: p.first_seen_ms,
                            last_seen_ms: p.last_seen_ms,
                            current: row_of(p.current.as_ref().context("port without state")?)?,
                            events: p
                                .events
                                .iter()
                                .map(|e| search::Event {
                                    at_ms: e.at_ms,
                                    job: e.job_id,
                                    fields: fc(&e.fields),
                                })
                                .collect(),
                            jobs: p.jobs.clone(),
                        })
                    })
                    .collect::<Result<_>>()?,
            }
        }
        _ => unreachable!(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(());
    }
    match view.as_of_ms {
        Some(t) => println!("{} as of {}", view.ip, search::format_ms(t)),
        None => println!("{}", view.ip),
    }
    if view.ports.is_empty() {
        println!("  nothing known");
    }
    for p in &view.ports {
        println!(
            "  {}  first {}  last {}  jobs {:?}",
            table_line(&p.current),
            search::format_ms(p.first_seen_ms),
            search::format_ms(p.last_seen_ms),
            p.jobs
        );
        for e in &p.events {
            let ch: Vec<String> = e
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{}: {} -> {}",
                        f.field,
                        short(f.from.as_deref().unwrap_or("∅"), 30),
                        short(f.to.as_deref().unwrap_or("∅"), 30)
                    )
                })
                .collect();
            println!(
                "      {} job {:<4} {}",
                search::format_ms(e.at_ms),
                e.job,
                ch.join("; ")
            );
        }
    }
    Ok(())
}

pub async fn diff_cmd(src: &Source, a: u64, b: Option<u64>, limit: u32, json: bool) -> Result<()> {
    let (local, client) = open(src).await?;
    let d: Diff = match (&local, client) {
        (Some(l), _) => {
            let (x, y) = match b {
                Some(b) => (a, b),
                None => {
                    let prev =
                        overlord_query::follow::previous_job(l.store.as_ref(), a, &l.engine.jobs())
                            .with_context(|| format!("no job before {a} to compare with"))?;
                    (prev, a)
                }
            };
            tokio::task::block_in_place(|| {
                l.engine.diff(x, y, limit as usize, Duration::from_secs(60))
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?
        }
        (None, Some(mut c)) => {
            let r = c
                .diff(v1::DiffRequest {
                    job_a: a,
                    job_b: b.unwrap_or(0),
                    limit,
                    deadline_ms: 60_000,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            let cov = |v: &[v1::Coverage]| {
                v.iter()
                    .map(|c| search::Coverage {
                        key: c.key.clone(),
                        a: c.a,
                        b: c.b,
                    })
                    .collect()
            };
            Diff {
                job_a: r.job_a,
                job_b: r.job_b,
                rows_a: r.rows_a,
                rows_b: r.rows_b,
                opened: r.opened,
                closed: r.closed,
                changed: r.changed,
                unchanged: r.unchanged,
                changes: r
                    .changes
                    .iter()
                    .map(|c| {
                        Ok(search::ServiceChange {
                            ip: c.ip.parse()?,
                            port: c.port as u16,
                            kind: match v1::ChangeKind::try_from(c.kind) {
                                Ok(v1::ChangeKind::Opened) => ChangeKind::Opened,
                                Ok(v1::ChangeKind::Closed) => ChangeKind::Closed,
                                _ => ChangeKind::Changed,
                            },
                            fields: fc(&c.fields),
                            before: c.before.as_ref().map(row_of).transpose()?,
                            after: c.after.as_ref().map(row_of).transpose()?,
                        })
                    })
                    .collect::<Result<_>>()?,
                coverage_net: cov(&r.coverage_net),
                coverage_minion: cov(&r.coverage_minion),
                coverage_provider: cov(&r.coverage_provider),
            }
        }
        _ => unreachable!(),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
        return Ok(());
    }
    println!(
        "job {} -> job {}: {} opened, {} closed, {} changed, {} unchanged ({} / {} rows)",
        d.job_a, d.job_b, d.opened, d.closed, d.changed, d.unchanged, d.rows_a, d.rows_b
    );
    for c in &d.changes {
        let k = match c.kind {
            ChangeKind::Opened => "+",
            ChangeKind::Closed => "-",
            ChangeKind::Changed => "~",
        };
        let what = match c.kind {
            ChangeKind::Changed => c
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{}: {} -> {}",
                        f.field,
                        short(f.from.as_deref().unwrap_or("∅"), 30),
                        short(f.to.as_deref().unwrap_or("∅"), 30)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            _ => c
                .after
                .as_ref()
                .or(c.before.as_ref())
                .map(table_line)
                .unwrap_or_default(),
        };
        let ep = if c.ip.is_ipv6() {
            format!("[{}]:{}", c.ip, c.port)
        } else {
            format!("{}:{}", c.ip, c.port)
        };
        println!("{k} {ep:<24} {what}");
    }
    if (d.changes.len() as u64) < d.opened + d.closed + d.changed {
        println!(
            "  ({} more; --limit)",
            d.opened + d.closed + d.changed - d.changes.len() as u64
        );
    }
    for (name, v) in [
        ("per /24", &d.coverage_net),
        ("per minion", &d.coverage_minion),
        ("per provider", &d.coverage_provider),
    ] {
        if v.is_empty() {
            continue;
        }
        println!(
            "coverage {name} (open services, job {} -> job {}):",
            d.job_a, d.job_b
        );
        for c in v {
            let delta = c.b as i64 - c.a as i64;
            println!("  {:<28} {:>8} -> {:<8} {:+}", c.key, c.a, c.b, delta);
        }
    }
    Ok(())
}

pub async fn export_cmd(src: &Source, query: &str, fmt: ExportAs) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match &src.coordinator {
        Some(u) => {
            let mut c = connect(u).await?;
            let f = match fmt {
                ExportAs::Jsonl => v1::ExportFormat::Jsonl,
                ExportAs::Csv => v1::ExportFormat::Csv,
                ExportAs::NmapXml => v1::ExportFormat::NmapXml,
            };
            let mut s = c
                .export(v1::ExportRequest {
                    query: query.into(),
                    format: f as i32,
                    deadline_ms: 0,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            while let Some(chunk) = s.message().await.map_err(status_err)? {
                out.write_all(&chunk.data)?;
            }
        }
        None => {
            let l = tokio::task::block_in_place(|| Local::open(&src.data_dir))?;
            let mut r = SearchRequest::new(query);
            r.limit = 1000;
            let mut first = true;
            loop {
                let p = tokio::task::block_in_place(|| l.engine.search(&r))
                    .map_err(|e| bad_query(e, query))?;
                let last = p.next.is_none();
                match fmt {
                    ExportAs::Jsonl => print_rows(&p.services, OutFormat::Jsonl, first, &mut out)?,
                    ExportAs::Csv => print_rows(&p.services, OutFormat::Csv, first, &mut out)?,
                    ExportAs::NmapXml => export::nmap_xml_part(&p.services, first, last, &mut out)?,
                }
                first = false;
                match p.next {
                    Some(k) => r.after = Some(k),
                    None => break,
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// `overlord import FILE...`: each file becomes one completed import job in the data directory
/// (module `import`, minion `import:<format>`, provider `import`), indexed like any other job.
pub fn import_cmd(data_dir: &Path, files: &[PathBuf]) -> Result<()> {
    use overlord_core::job::{FindingRecord, JobRecord, JobSpec, JobState};
    use overlord_query::import;
    use overlord_storage::{Batch, Op, Store};
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let store = overlord_storage::SledStore::open(data_dir).with_context(|| {
        format!(
            "cannot open {} (is a coordinator using it?)",
            data_dir.display()
        )
    })?;
    let now = overlord_query::index::now_ms();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        let fmt = import::Format::sniff(&text);
        let parsed =
            import::parse(&text, fmt).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        for (at, why) in parsed.rejected.iter().take(20) {
            eprintln!("{}: {at}: skipped: {why}", f.display());
        }
        let next = store.meta("next_job")?.unwrap_or(1);
        let id = store
            .jobs()?
            .iter()
            .map(|j| j.id + 1)
            .max()
            .unwrap_or(1)
            .max(next);
        let mut b = Batch::default();
        let mut targets: Vec<String> = parsed
            .services
            .iter()
            .filter_map(|s| s.ip.map(|i| i.to_string()))
            .collect();
        targets.sort();
        targets.dedup();
        let spec = JobSpec {
            name: format!("import {} ({})", f.display(), fmt.name()),
            targets,
            ranges: vec![],
            ports: Default::default(),
            modules: vec!["import".into()],
            rate_limit: 0,
            inputs: vec![f.display().to_string()],
            params: serde_json::Value::Null,
            rules: Default::default(),
            owner: String::new(),
            hitlist: None,
        };
        let mut rec = JobRecord::new(id, 0, 0, now);
        rec.state = JobState::Completed;
        rec.finished_ms = now;
        rec.findings = parsed.services.len() as u64;
        b.push(Op::Meta("next_job", id + 1));
        b.push(Op::Spec(id, Box::new(spec)));
        b.push(Op::Job(rec));
        for (i, s) in parsed.services.iter().enumerate() {
            let p = import::to_payload(s);
            let at = if s.at_ms > 0 { s.at_ms } else { now };
            b.push(Op::Finding(Arc::new(FindingRecord {
                cursor: i as u64 + 1,
                job_id: id,
                task_id: 0,
                parent_task_id: None,
                module: "import".into(),
                kind: p.kind_name().to_string(),
                target: s.ip,
                port: Some(s.port),
                data: p.to_data(),
                blob_sha256: None,
                minion_id: format!("import:{}", fmt.name()),
                provider: "import".into(),
                started_at_ms: at,
                finished_at_ms: at,
                stored_at_ms: now,
            })));
        }
        store.apply(b)?;
        store.flush()?;
        println!(
            "job {id}: {} services from {} ({}), {} records skipped",
            parsed.services.len(),
            f.display(),
            fmt.name(),
            parsed.rejected.len()
        );
    }
    Ok(())
}
