//! `overlord bench query`: a generated corpus ([`overlord_query::corpus`]) ingested into the
//! query index, the same rows loaded into DuckDB (Python package) and PostgreSQL 15 (JSONB + GIN),
//! and the same 20 queries timed on each in one run; ratios per query.

use crate::corpus::Corpus;
use crate::index::QueryIndex;
use crate::search::{Engine, SearchRequest, View};
use crate::state::{Observation, Provenance};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Errors of the benchmark (a program that prints figures; the message is what to fix).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchError(String);

type Result<T> = std::result::Result<T, BenchError>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(BenchError(format!($($t)*))) };
}

trait Context<T> {
    fn context(self, what: &str) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: &str) -> Result<T> {
        self.map_err(|e| BenchError(format!("{what}: {e}")))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, what: &str) -> Result<T> {
        self.ok_or_else(|| BenchError(what.to_string()))
    }
}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        BenchError(e.to_string())
    }
}
impl From<serde_json::Error> for BenchError {
    fn from(e: serde_json::Error) -> Self {
        BenchError(e.to_string())
    }
}
impl From<crate::index::IndexError> for BenchError {
    fn from(e: crate::index::IndexError) -> Self {
        BenchError(e.to_string())
    }
}
impl From<crate::search::QueryError> for BenchError {
    fn from(e: crate::search::QueryError) -> Self {
        BenchError(e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct QueryBenchArgs {
    /// Findings in the corpus.
    pub n: u64,
    /// Findings per job (the diff compares jobs 1 and 2).
    pub per_job: u64,
    /// Timed runs per query (after one warm-up run).
    pub runs: usize,
    /// Skip DuckDB and PostgreSQL.
    pub no_peers: bool,
    pub seed: u64,
    /// Work directory (default: a temporary one, removed after).
    pub dir: Option<PathBuf>,
}

enum Op {
    Search(String, View),
    Count(String, Vec<(String, usize)>),
    Host(IpAddr),
    Diff(u64, u64),
}

struct Q {
    name: &'static str,
    class: &'static str,
    op: Op,
    duck: String,
    pg: String,
}

const START_MS: u64 = 1_793_491_200_000; // 2026-11-01

fn ip4n(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(a) => u32::from(a) as u64,
        IpAddr::V6(_) => 0,
    }
}

fn queries(c: &Corpus) -> Vec<Q> {
    let (p0, _) = c.finding(2 * 12_345);
    let ip0 = p0.ip.expect("ip");
    let late = START_MS + 86_400_000 + (c.per_job.min(c.n) - 1000) * 10;
    let page = |w: &str| {
        format!(
            "SELECT *, count(*) OVER () AS total FROM rows WHERE {w} ORDER BY ipn, port LIMIT 100"
        )
    };
    let pgpage = |w: &str| {
        format!(
            "SELECT doc, count(*) OVER () AS total FROM rows WHERE {w} ORDER BY (doc->>'ipn')::bigint, (doc->>'port')::int LIMIT 100"
        )
    };
    let ts = "to_tsvector('simple', coalesce(doc->>'banner','') || ' ' || coalesce(doc->>'http_title','') || ' ' || coalesce(doc->>'screen_text',''))";
    let cidr = |a: u32, bits: u32| {
        let lo = a as u64;
        let hi = lo + (1u64 << (32 - bits)) - 1;
        (lo, hi)
    };
    // prefixes inside the corpus's address space (10.0.0.0 + host number)
    let base = match ip0 {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => 0x0A00_0000,
    };
    let (l1, h1) = cidr(base & !0xff, 24);
    let (l2, h2) = cidr(0x0A00_0000, 16);
    let (l3, h3) = cidr(0x0A00_0000, 16);
    let net = |a: u64, bits: u32| format!("{}/{bits}", std::net::Ipv4Addr::from(a as u32));
    let s = |name, q: &str, duck: &str, pg: &str| Q {
        name,
        class: "selective",
        op: Op::Search(q.into(), View::Services),
        duck: page(duck),
        pg: pgpage(pg),
    };
    let facet = |name, q: &str, f: &str, n: usize, dw: &str, pw: &str| Q {
        name,
        class: "facet",
        op: Op::Count(q.into(), vec![(f.into(), n)]),
        duck: format!(
            "SELECT {f}, count(*) FROM rows WHERE {dw} GROUP BY 1 ORDER BY 2 DESC LIMIT {n}",
            f = f.replace('.', "_")
        ),
        pg: format!(
            "SELECT doc->>'{f}', count(*) FROM rows WHERE {pw} GROUP BY 1 ORDER BY 2 DESC LIMIT {n}",
            f = f.replace('.', "_")
        ),
    };
    vec![
        s("vsftpd 2.3.4", "product:vsftpd version:2.3.4", "product='vsftpd' AND version='2.3.4'", r#"doc @> '{"product":"vsftpd","version":"2.3.4"}'"#),
        s("redis 7 prefix", "product:redis* version:7*", "product LIKE 'Redis%' AND version LIKE '7%'", "doc->>'product' LIKE 'Redis%' AND doc->>'version' LIKE '7%'"),
        s("title phrase", r#"http.title:"router login""#, "lower(http_title) LIKE '%router login%'", &format!("{ts} @@ phraseto_tsquery('simple','router login') AND lower(doc->>'http_title') LIKE '%router login%'")),
        s("expired on 8443", "tls.expired:true port:8443", "tls_expired AND port=8443", r#"doc @> '{"tls_expired":true,"port":8443}'"#),
        s("cidr /24", &format!("net:{}", net(l1, 24)), &format!("ipn BETWEEN {l1} AND {h1}"), &format!("(doc->>'ipn')::bigint BETWEEN {l1} AND {h1}")),
        s("cidr /16 ssh", &format!("net:{} port:22", net(l2, 16)), &format!("ipn BETWEEN {l2} AND {h2} AND port=22"), &format!(r#"(doc->>'ipn')::bigint BETWEEN {l2} AND {h2} AND doc @> '{{"port":22}}'"#)),
        s("free text ALARM", "ALARM", "banner ILIKE '%alarm%' OR http_title ILIKE '%alarm%' OR screen_text ILIKE '%alarm%'", &format!("{ts} @@ to_tsquery('simple','alarm')")),
        s("banner word", "banner:freebsd port:22", "banner ILIKE '%freebsd%' AND port=22", &format!(r#"{ts} @@ to_tsquery('simple','freebsd') AND doc @> '{{"port":22}}'"#)),
        s("port range + product", "port:[8000 TO 8100] product:nginx", "port BETWEEN 8000 AND 8100 AND product='nginx'", r#"(doc->>'port')::int BETWEEN 8000 AND 8100 AND doc @> '{"product":"nginx"}'"#),
        s("one address", &format!("ip:{ip0}"), &format!("ipn={}", ip4n(ip0)), &format!(r#"doc @> '{{"ip":"{ip0}"}}'"#)),
        s("self-signed and expired", "tls.self_signed:true tls.expired:true port:443", "tls_self_signed AND tls_expired AND port=443", r#"doc @> '{"tls_self_signed":true,"tls_expired":true,"port":443}'"#),
        s("ftp not vsftpd", "service:ftp -product:vsftpd", "service='ftp' AND product<>'vsftpd'", r#"doc @> '{"service":"ftp"}' AND NOT doc @> '{"product":"vsftpd"}'"#),
        s("job 2, last seen after", &format!("job:2 last_seen:>{late}"), &format!("job=2 AND last_seen>{late}"), &format!(r#"doc @> '{{"job":2}}' AND (doc->>'last_seen')::bigint > {late}"#)),
        facet("facet product (all)", "", "product", 10, "true", "true"),
        facet("facet port (all)", "", "port", 10, "true", "true"),
        facet("facet product on :80", "port:80", "product", 10, "port=80", r#"doc @> '{"port":80}'"#),
        facet("stats expired by issuer", "tls.expired:true", "tls.issuer", 5, "tls_expired", r#"doc @> '{"tls_expired":true}'"#),
        Q {
            name: "host view",
            class: "host",
            op: Op::Host(ip0),
            duck: format!("SELECT * FROM rows WHERE ipn={} ORDER BY port, last_seen", ip4n(ip0)),
            pg: format!(r#"SELECT doc FROM rows WHERE doc @> '{{"ip":"{ip0}"}}' ORDER BY (doc->>'port')::int, (doc->>'last_seen')::bigint"#),
        },
        Q {
            name: "diff job 1 vs 2",
            class: "diff",
            op: Op::Diff(1, 2),
            duck: "SELECT CASE WHEN a.ipn IS NULL THEN 'opened' WHEN b.ipn IS NULL THEN 'closed' ELSE 'changed' END AS k, count(*) FROM (SELECT * FROM rows WHERE job=1) a FULL OUTER JOIN (SELECT * FROM rows WHERE job=2) b ON a.ipn=b.ipn AND a.port=b.port WHERE a.ipn IS NULL OR b.ipn IS NULL OR a.chash<>b.chash GROUP BY 1".into(),
            pg: "SELECT CASE WHEN a.k IS NULL THEN 'opened' WHEN b.k IS NULL THEN 'closed' ELSE 'changed' END, count(*) FROM (SELECT doc->>'ip' || ':' || (doc->>'port') AS k, doc->>'chash' AS h FROM rows WHERE doc @> '{\"job\":1}') a FULL OUTER JOIN (SELECT doc->>'ip' || ':' || (doc->>'port') AS k, doc->>'chash' AS h FROM rows WHERE doc @> '{\"job\":2}') b ON a.k=b.k WHERE a.k IS NULL OR b.k IS NULL OR a.h<>b.h GROUP BY 1".into(),
        },
        Q {
            name: "hosts with login screens",
            class: "selective",
            op: Op::Search(format!("has_screenshot:true tag:login_prompt net:{}", net(l3, 16)), View::Hosts),
            duck: format!("SELECT ip, count(*) OVER () AS total FROM rows WHERE has_screenshot AND tags LIKE '%login_prompt%' AND ipn BETWEEN {l3} AND {h3} GROUP BY ip, ipn ORDER BY ipn LIMIT 100"),
            pg: format!(r#"SELECT doc->>'ip', count(*) OVER () FROM rows WHERE doc @> '{{"has_screenshot":true,"tags":"login_prompt"}}' AND (doc->>'ipn')::bigint BETWEEN {l3} AND {h3} GROUP BY doc->>'ip', (doc->>'ipn')::bigint ORDER BY (doc->>'ipn')::bigint LIMIT 100"#),
        },
    ]
}

/// One flat row for the peers (the fields the queries read).
fn flat(p: &Provenance, o: &Observation) -> serde_json::Value {
    let mut st = crate::state::ServiceState::new(p);
    st.fold(p, o);
    let ip = p.ip.expect("ip");
    serde_json::json!({
        "ip": ip.to_string(), "ipn": ip4n(ip), "port": p.port, "transport": st.transport,
        "service": st.service, "product": st.product, "version": st.version,
        "banner": st.banner, "http_title": st.http.as_ref().and_then(|h| h.title.clone()),
        "http_status": st.http.as_ref().and_then(|h| h.status),
        "tls_subject": st.tls.as_ref().map(|t| t.subject.clone()),
        "tls_issuer": st.tls.as_ref().map(|t| t.issuer.clone()),
        "tls_expired": st.tls.as_ref().map(|t| t.expired),
        "tls_self_signed": st.tls.as_ref().map(|t| t.self_signed),
        "has_screenshot": st.has_screenshot(),
        "screen_text": st.screen.as_ref().and_then(|s| s.text.clone()),
        "tags": st.screen.as_ref().map(|s| s.tags.join(" ")).unwrap_or_default(),
        "job": p.job, "minion": p.minion, "provider": p.provider,
        "first_seen": st.first_seen_ms, "last_seen": st.last_seen_ms,
        "chash": crate::index::content_hash(&st).to_string(),
    })
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

const DUCK_PY: &str = r#"
import duckdb, json, sys, time
path, qfile, runs = sys.argv[1], sys.argv[2], int(sys.argv[3])
con = duckdb.connect()
con.execute("SET threads TO 2")
t = time.time()
con.execute(f"CREATE TABLE rows AS SELECT * FROM read_json('{path}', format='newline_delimited', columns={{'ip':'VARCHAR','ipn':'UBIGINT','port':'INTEGER','transport':'VARCHAR','service':'VARCHAR','product':'VARCHAR','version':'VARCHAR','banner':'VARCHAR','http_title':'VARCHAR','http_status':'INTEGER','tls_subject':'VARCHAR','tls_issuer':'VARCHAR','tls_expired':'BOOLEAN','tls_self_signed':'BOOLEAN','has_screenshot':'BOOLEAN','screen_text':'VARCHAR','tags':'VARCHAR','job':'INTEGER','minion':'VARCHAR','provider':'VARCHAR','first_seen':'UBIGINT','last_seen':'UBIGINT','chash':'VARCHAR'}})")
load = time.time() - t
out = {"load_s": load, "rows": con.execute("SELECT count(*) FROM rows").fetchone()[0], "q": []}
for q in json.load(open(qfile)):
    con.execute(q).fetchall()
    ts = []
    for _ in range(runs):
        t = time.perf_counter(); con.execute(q).fetchall(); ts.append((time.perf_counter() - t) * 1000)
    out["q"].append(ts)
print(json.dumps(out))
"#;

fn duckdb(dir: &Path, rows: &Path, qs: &[Q], runs: usize) -> Result<(f64, Vec<Vec<f64>>)> {
    let py = dir.join("duck.py");
    std::fs::write(&py, DUCK_PY)?;
    let qf = dir.join("duck.json");
    std::fs::write(
        &qf,
        serde_json::to_string(&qs.iter().map(|q| &q.duck).collect::<Vec<_>>())?,
    )?;
    let out = Command::new("python3")
        .arg(&py)
        .arg(rows)
        .arg(&qf)
        .arg(runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .context("python3 (pip install duckdb)")?;
    if !out.status.success() {
        bail!("duckdb run failed");
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let load = v["load_s"].as_f64().unwrap_or(0.0);
    let t = v["q"]
        .as_array()
        .context("duckdb output")?
        .iter()
        .map(|x| {
            x.as_array()
                .into_iter()
                .flatten()
                .filter_map(|y| y.as_f64())
                .collect()
        })
        .collect();
    Ok((load, t))
}

fn pg_bin(name: &str) -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin").join(name)
}

fn as_postgres(cmd: &mut Command) -> &mut Command {
    // initdb and postgres refuse to run as root
    if unsafe_is_root() {
        let prog = cmd.get_program().to_owned();
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        *cmd = Command::new("runuser");
        cmd.arg("-u").arg("postgres").arg("--").arg(prog).args(args);
    }
    cmd
}

fn unsafe_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

struct Pg {
    data: PathBuf,
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = as_postgres(
            Command::new(pg_bin("pg_ctl"))
                .arg("-D")
                .arg(&self.data)
                .arg("-m")
                .arg("immediate")
                .arg("stop"),
        )
        .stdout(Stdio::null())
        .status();
    }
}

fn postgres(dir: &Path, rows: &Path, qs: &[Q], runs: usize) -> Result<(f64, Vec<Vec<f64>>)> {
    let pgdir = dir.join("pg");
    std::fs::create_dir_all(&pgdir)?;
    let _ = Command::new("chown")
        .arg("-R")
        .arg("postgres")
        .arg(&pgdir)
        .status();
    let _ = Command::new("chmod").arg("a+rx").arg(dir).status();
    let _ = Command::new("chmod").arg("a+r").arg(rows).status();
    let data = pgdir.join("data");
    let sock = pgdir.clone();
    let st = as_postgres(
        Command::new(pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .arg("-U")
            .arg("postgres")
            .arg("--auth=trust"),
    )
    .stdout(Stdio::null())
    .status()?;
    if !st.success() {
        bail!("initdb failed");
    }
    let port = 20000 + (std::process::id() % 20000);
    let opts = format!(
        "-k {} -p {port} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=1GB -c work_mem=256MB -c maintenance_work_mem=1GB -c max_parallel_workers_per_gather=2 -c jit=off",
        sock.display()
    );
    let st = as_postgres(
        Command::new(pg_bin("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-o")
            .arg(&opts)
            .arg("-w")
            .arg("-l")
            .arg(pgdir.join("log"))
            .arg("start"),
    )
    .stdout(Stdio::null())
    .status()?;
    if !st.success() {
        bail!("pg_ctl start failed (see {})", pgdir.join("log").display());
    }
    let guard = Pg { data };
    let psql = |sql: &str| -> Result<String> {
        let mut c = Command::new("psql");
        c.arg("-h")
            .arg(&sock)
            .arg("-p")
            .arg(port.to_string())
            .arg("-U")
            .arg("postgres")
            .arg("-X")
            .arg("-q")
            .arg("-v")
            .arg("ON_ERROR_STOP=1");
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(sql.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("psql failed");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let t = Instant::now();
    psql(&format!(
        "CREATE TABLE rows(doc jsonb);\n\\copy rows(doc) FROM PROGRAM 'gzip -dc {}' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')\n\
         CREATE INDEX rows_gin ON rows USING gin (doc jsonb_path_ops);\n\
         CREATE INDEX rows_fts ON rows USING gin (to_tsvector('simple', coalesce(doc->>'banner','') || ' ' || coalesce(doc->>'http_title','') || ' ' || coalesce(doc->>'screen_text','')));\n\
         VACUUM ANALYZE rows;\n",
        rows.display()
    ))?;
    let load = t.elapsed().as_secs_f64();
    let mut script = String::from("\\o /dev/null\n\\timing on\n");
    for q in qs {
        for _ in 0..runs + 1 {
            script.push_str(&q.pg);
            script.push_str(";\n");
        }
    }
    let out = psql(&script)?;
    let times: Vec<f64> = out
        .lines()
        .filter_map(|l| l.strip_prefix("Time: "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    if times.len() != qs.len() * (runs + 1) {
        bail!(
            "psql printed {} timings, expected {}",
            times.len(),
            qs.len() * (runs + 1)
        );
    }
    drop(guard);
    Ok((
        load,
        times.chunks(runs + 1).map(|c| c[1..].to_vec()).collect(),
    ))
}

/// CPU seconds (user + system) of `/proc/<path>/stat`: the process (`self`) or this thread
/// (`thread-self`).
fn cpu_s(path: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{path}/stat")).unwrap_or_default();
    let rest = stat.rfind(')').map(|i| &stat[i + 2..]).unwrap_or("");
    let f: Vec<&str> = rest.split(' ').collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // clock ticks: 100 per second on Linux
    (t(11) + t(12)) / 100.0
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn threads_cpu_s(prefix: &str) -> f64 {
    crate::priority::threads_named(prefix)
        .into_iter()
        .map(|tid| cpu_s(&format!("self/task/{tid}")))
        .sum()
}

/// Waits (at most `max`) until the index's merge threads have used no CPU for a second: the
/// merges the flood deferred (they run below ingest, see `priority`) have caught up. Returns
/// the wait and the merge CPU seconds spent meanwhile.
fn settle_merges(max: Duration) -> (Duration, f64) {
    let t = Instant::now();
    let c0 = threads_cpu_s(crate::index::MERGE_THREAD_NAME);
    let mut last = c0;
    let mut quiet = 0;
    while t.elapsed() < max && quiet < 4 {
        std::thread::sleep(Duration::from_millis(250));
        let c = threads_cpu_s(crate::index::MERGE_THREAD_NAME);
        quiet = if c > last { 0 } else { quiet + 1 };
        last = c;
    }
    (t.elapsed(), last - c0)
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// One run of a benchmark query; returns its result count.
fn query_once(e: &Engine, q: &Q) -> Result<usize> {
    Ok(match &q.op {
        Op::Search(s, v) => {
            let mut r = SearchRequest::new(s);
            r.view = *v;
            let p = e.search(&r)?;
            p.services.len() + p.hosts.len()
        }
        Op::Count(s, f) => e.count(s, f, Duration::from_secs(60))?.matched as usize,
        Op::Host(ip) => e.host(*ip, None)?.ports.len(),
        Op::Diff(x, y) => {
            let d = e.diff(*x, *y, 1000, Duration::from_secs(120))?;
            (d.opened + d.closed + d.changed) as usize
        }
    })
}

pub fn run(a: QueryBenchArgs) -> Result<()> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "bench query: n={} per_job={} runs={} seed={} load={}",
        a.n,
        a.per_job,
        a.runs,
        a.seed,
        load.trim()
    );
    let c = Corpus {
        seed: a.seed,
        n: a.n,
        per_job: a.per_job,
        start_ms: START_MS,
    };
    let idx = QueryIndex::open_or_rebuild(&dir.join("query"))?;
    // the peers' rows first, in a pass of their own (JSON and `gzip -1` beside the ingest took
    // the cores from it): 10 M rows are ~5 GB as text; DuckDB and psql's `\copy ... FROM
    // PROGRAM` read the compressed file
    let rows_path = dir.join("rows.jsonl.gz");
    if !a.no_peers {
        let t = Instant::now();
        let mut child = Command::new("gzip")
            .arg("-1")
            .stdin(Stdio::piped())
            .stdout(std::fs::File::create(&rows_path)?)
            .spawn()
            .context("gzip")?;
        let mut w =
            std::io::BufWriter::with_capacity(1 << 20, child.stdin.take().context("gzip stdin")?);
        for k in 0..a.n {
            let (p, o) = c.finding(k);
            serde_json::to_writer(&mut w, &flat(&p, &o))?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
        drop(w);
        if !child.wait()?.success() {
            bail!("gzip of the peers' rows failed");
        }
        println!("peers' rows written in {:.1}s", t.elapsed().as_secs_f64());
    }
    // The ingest: a generator thread makes the findings (as the follower reads them from the
    // store) and hands batches over; the rate is over the whole wall time, generator included.
    // The index's CPU is the process's less the generator's.
    let batch = 10_000;
    let proc0 = cpu_s("self");
    let t = Instant::now();
    let gen_cpu = std::thread::scope(|sc| -> Result<f64> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<(Provenance, Observation)>>(2);
        let c = &c;
        let g = sc.spawn(move || {
            let c0 = cpu_s("thread-self");
            let mut i = 0;
            while i < a.n {
                let b: Vec<_> = (i..(i + batch).min(a.n)).map(|k| c.finding(k)).collect();
                if tx.send(b).is_err() {
                    break;
                }
                i += batch;
            }
            cpu_s("thread-self") - c0
        });
        for b in rx {
            idx.add(&b)?;
            idx.maybe_commit()?;
        }
        idx.commit()?;
        g.join()
            .map_err(|_| BenchError("corpus generator panicked".into()))
    })?;
    let spent = t.elapsed();
    let cpu = cpu_s("self") - proc0 - gen_cpu;
    let per = |x: f64| x * 1e6 / a.n.max(1) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "ingest: {} findings in {:.1}s = {:.0} findings/s into the index, wall time with the corpus generator on the same cores (bar >= 100000/s); index CPU {:.1} us/finding (all its threads; merges still running not counted) = {:.0} findings/s on {} cores to itself; generator {:.1} us/finding; {} rows; RSS {:.0} MiB",
        a.n,
        spent.as_secs_f64(),
        a.n as f64 / spent.as_secs_f64(),
        per(cpu),
        cores as f64 * 1e6 / per(cpu),
        cores,
        per(gen_cpu),
        idx.num_rows(),
        rss_mb()
    );
    let segs = idx.searcher().segment_readers().len();
    let (waited, merge_cpu) = settle_merges(Duration::from_secs(600));
    idx.maybe_commit()?; // reloads the searcher: the merged segments
    println!(
        "merges deferred by the flood caught up {:.1}s after it ({:.1} us/finding more CPU; {:.1} us/finding in all); segments {} -> {}",
        waited.as_secs_f64(),
        per(merge_cpu),
        per(cpu + merge_cpu),
        segs,
        idx.searcher().segment_readers().len()
    );
    let e = Engine::new(Arc::new(idx));
    let qs = queries(&c);
    let mut ours: Vec<Vec<f64>> = Vec::new();
    let mut rss_max: f64 = 0.0;
    for q in &qs {
        let one = || -> Result<usize> { crate::priority::below_ingest(|| query_once(&e, q)) };
        let n = one()?;
        let mut ts = vec![];
        for _ in 0..a.runs {
            let t = Instant::now();
            one()?;
            ts.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        rss_max = rss_max.max(rss_mb());
        println!(
            "  ours  {:<26} {:>8.2} ms p50 {:>8.2} ms p99 ({} results)",
            q.name,
            pct(&mut ts.clone(), 0.5),
            pct(&mut ts.clone(), 0.99),
            n
        );
        ours.push(ts);
    }
    println!("RSS after queries: {rss_max:.0} MiB");
    // ingestion while queries run: the same amount folded alone, then with 4 query threads
    // looping over the selective queries
    let extra = (a.n / 10).clamp(10_000, 500_000);
    let base_job = c.jobs() + 1;
    let fold = |job_off: u64, e: &Engine| -> Result<f64> {
        let t = Instant::now();
        let mut i = 0;
        while i < extra {
            let b: Vec<_> = (i..(i + batch).min(extra))
                .map(|k| {
                    let (mut p, o) = c.finding(k);
                    p.job = base_job + job_off;
                    (p, o)
                })
                .collect();
            e.index.add(&b)?;
            e.index.maybe_commit()?;
            i += batch;
        }
        e.index.commit()?;
        Ok(extra as f64 / t.elapsed().as_secs_f64())
    };
    let alone = fold(0, &e)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let served = std::sync::atomic::AtomicU64::new(0);
    let busy = std::thread::scope(|sc| -> Result<f64> {
        for t in 0..4 {
            let (e, qs, stop, served) = (&e, &qs, &stop, &served);
            sc.spawn(move || {
                let mut k = t;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let q = &qs[k % 13];
                    if let Op::Search(..) = q.op {
                        // as the coordinator runs a query (below ingest), not at full priority
                        let _ = crate::priority::below_ingest(|| query_once(e, q));
                        served.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    k += 1;
                }
            });
        }
        let r = fold(1, &e);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })?;
    println!(
        "ingest of {extra} findings: {alone:.0}/s alone, {busy:.0}/s with 4 query threads ({} queries served meanwhile): {:.0}% of the alone rate",
        served.load(std::sync::atomic::Ordering::Relaxed),
        100.0 * busy / alone
    );
    // the index is not needed any more: its disk goes to PostgreSQL (10 M rows with two GIN
    // indexes take ~10 GB)
    if !a.no_peers {
        // merges may still be writing: close waits for them
        if let Ok(idx) = Arc::try_unwrap(e.index) {
            idx.close()?;
        }
        if let Err(err) = std::fs::remove_dir_all(dir.join("query")) {
            println!("index directory not removed before the peers: {err}");
        }
    }
    let duck = if a.no_peers {
        None
    } else {
        match duckdb(&dir, &rows_path, &qs, a.runs) {
            Ok((l, t)) => {
                println!("duckdb: loaded in {l:.1}s");
                Some(t)
            }
            Err(err) => {
                println!("duckdb: not run: {err}");
                None
            }
        }
    };
    let pg = if a.no_peers {
        None
    } else {
        match postgres(&dir, &rows_path, &qs, a.runs) {
            Ok((l, t)) => {
                println!("postgres: loaded + indexed in {l:.1}s");
                Some(t)
            }
            Err(err) => {
                println!("postgres: not run: {err}");
                None
            }
        }
    };
    println!();
    println!(
        "{:<26} {:>9} {:>10} {:>10} {:>10} {:>8} {:>8}  bar",
        "query (p99 ms)", "class", "ours", "duckdb", "postgres", "duck/us", "pg/us"
    );
    for (k, q) in qs.iter().enumerate() {
        let o = pct(&mut ours[k].clone(), 0.99);
        let d = duck.as_ref().map(|t| pct(&mut t[k].clone(), 0.99));
        let p = pg.as_ref().map(|t| pct(&mut t[k].clone(), 0.99));
        let bar = match q.class {
            "selective" => (o <= 50.0, "<= 50 ms"),
            "facet" => (o <= 1000.0, "<= 1 s"),
            "host" => (o <= 20.0, "<= 20 ms"),
            _ => (o <= 5000.0, "<= 5 s"),
        };
        let f = |x: Option<f64>| x.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into());
        let r = |x: Option<f64>| {
            x.map(|v| format!("{:.1}x", v / o))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{:<26} {:>9} {:>10.2} {:>10} {:>10} {:>8} {:>8}  {} {}",
            q.name,
            q.class,
            o,
            f(d),
            f(p),
            r(d),
            r(p),
            bar.1,
            if bar.0 { "met" } else { "MISSED" }
        );
    }
    Ok(())
}
