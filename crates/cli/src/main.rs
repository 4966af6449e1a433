//! `overlord`: coordinator, minion, scan (embedded cluster when no coordinator is given), jobs,
//! watch, results, bench.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use overlord_cli::client::{self, Format};
use overlord_cli::{bench, embedded::Embedded, files, otel};
use overlord_proto::v1;
use std::io::Write;
use std::path::PathBuf;

/// glibc's malloc was the top of the coordinator's profile (arena lock waits, `_int_malloc`,
/// sled's copy-on-write node clones); mimalloc's thread-local heaps remove that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "overlord",
    version,
    about = "Internet-scanning and data-enrichment cluster (loopback-only scope by default)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// File holding the API token for client commands (or OVERLORD_TOKEN with the token itself).
    #[arg(long, env = "OVERLORD_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The cluster CA certificate (ca.pem of `overlord ca init`) that verifies an https://
    /// coordinator.
    #[arg(long, env = "OVERLORD_CA", global = true)]
    ca: Option<PathBuf>,
}

/// Prints one line of command output; a closed stdout (`| head -1`) ends the command quietly.
macro_rules! out {
    ($($t:tt)*) => {{
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            panic!("cannot write to stdout: {e}");
        }
    }};
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs a coordinator. Prints `listening on ADDR` as its first stdout line.
    Coordinator {
        #[arg(long)]
        config: PathBuf,
        /// Overrides `listen` (use 127.0.0.1:0 for a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Overrides `data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Also writes the bound address to this file.
        #[arg(long)]
        addr_file: Option<PathBuf>,
    },
    /// Runs a minion (`--config FILE`), or `enroll`s one.
    #[command(args_conflicts_with_subcommands = true)]
    Minion {
        #[command(subcommand)]
        sub: Option<MinionCmd>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Overrides `coordinator`.
        #[arg(long)]
        coordinator: Option<String>,
        /// Overrides `id`.
        #[arg(long)]
        id: Option<String>,
    },
    /// Scans targets. Without --coordinator, runs an embedded cluster (coordinator + 2 minions).
    Scan {
        /// Addresses, CIDRs, ranges or host names.
        #[arg(required_unless_present = "targets_file")]
        targets: Vec<String>,
        /// A hitlist: a file of addresses and CIDRs, one per line (`#` comments, blank lines;
        /// IPv4 and IPv6), streamed to the coordinator, scope-checked (the bad line is named),
        /// deduplicated. Also `-iL FILE` as in nmap.
        #[arg(long = "targets-file", value_name = "FILE", conflicts_with = "targets")]
        targets_file: Option<PathBuf>,
        /// Ports, e.g. 22,80,8000-8100 or 1-65535.
        #[arg(short, long, default_value = "1-1024")]
        ports: String,
        /// Modules to enable (comma separated).
        #[arg(
            short,
            long,
            default_value = "portscan,service,screenshot,enrich,leak",
            value_delimiter = ','
        )]
        modules: Vec<String>,
        /// Connections per second for the whole job (0 = unlimited).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        #[arg(long, env = "OVERLORD_COORDINATOR")]
        coordinator: Option<String>,
        /// Data directory of the embedded cluster.
        #[arg(long, default_value = ".overlord-data")]
        data_dir: PathBuf,
        /// Leak file (`address,source,date` lines) imported by the embedded cluster: e-mail
        /// addresses on screens that it knows become `leak` findings. (A standalone coordinator
        /// takes `[images] leaks = "FILE"` in its config instead.)
        #[arg(long)]
        leaks: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Extra module params (JSON object).
        #[arg(long)]
        params: Option<String>,
        /// Submit and print the job id without waiting.
        #[arg(long)]
        detach: bool,
        /// A follow-up rule added to the built-in ones (repeatable), e.g.
        /// 'open_port port=5900 -> screenshot protocol=vnc' (README "Follow-up rules").
        #[arg(long = "rule", value_name = "RULE")]
        rules: Vec<String>,
        /// A file of follow-up rules, one per line (`#` starts a comment).
        #[arg(long = "rules-file", value_name = "FILE")]
        rules_file: Option<PathBuf>,
        /// Disables a built-in follow-up rule by name (repeatable; `overlord schema --rules`).
        #[arg(long = "disable-rule", value_name = "NAME")]
        disable_rules: Vec<String>,
    },
    /// Lists, shows or cancels jobs.
    Jobs {
        #[command(subcommand)]
        cmd: JobsCmd,
        #[arg(
            long,
            env = "OVERLORD_COORDINATOR",
            default_value = "http://127.0.0.1:50051",
            global = true
        )]
        coordinator: String,
    },
    /// Follows a job: live findings and a progress bar (resumable with --after).
    Watch {
        job: u64,
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[arg(
            long,
            env = "OVERLORD_COORDINATOR",
            default_value = "http://127.0.0.1:50051"
        )]
        coordinator: String,
    },
    /// Prints stored findings of a job.
    Results {
        job: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        #[arg(
            long,
            env = "OVERLORD_COORDINATOR",
            default_value = "http://127.0.0.1:50051"
        )]
        coordinator: String,
    },
    /// Image enrichment.
    Images {
        #[command(subcommand)]
        cmd: ImagesCmd,
    },
    /// Prints the finding schema: JSON Schema of every kind's payload (or the Markdown reference,
    /// docs/SCHEMA.md, with --markdown).
    Schema {
        #[arg(long)]
        markdown: bool,
        /// Prints the built-in follow-up rules instead (one per line, in rule text).
        #[arg(long, conflicts_with = "markdown")]
        rules: bool,
    },
    /// Finds C2 beaconing in Zeek logs (CNN + RITA-style scorer); also train|eval|generate.
    Beacons(overlord_cli::beacons::BeaconsArgs),
    /// Searches every finding of every job (docs/QUERY.md): services, or hosts with --hosts.
    Search {
        /// The query, e.g. 'product:nginx port:[8000 TO 8100]' ('' = everything).
        query: String,
        /// One row per address instead of per ip:port.
        #[arg(long)]
        hosts: bool,
        /// Top values of a field over the matches: FIELD or FIELD:N (repeatable).
        #[arg(long = "facet")]
        facets: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: overlord_cli::query::OutFormat,
        /// Rows per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Page after this key (printed at the end of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Every page.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        src: overlord_cli::query::Source,
    },
    /// Counts and facets over a query (default facets: service, product, port, provider).
    Stats {
        #[arg(default_value = "")]
        query: String,
        #[arg(long = "facet")]
        facets: Vec<String>,
        #[command(flatten)]
        src: overlord_cli::query::Source,
    },
    /// Everything known about an address, per port with its history across jobs.
    Host {
        ip: String,
        /// The host as it was at this time (YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS]Z, unix ms).
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        src: overlord_cli::query::Source,
    },
    /// What changed between two jobs (or a job and the previous job over the same targets).
    Diff {
        job_a: u64,
        job_b: Option<u64>,
        /// Changes listed (counts are exact).
        #[arg(long, default_value_t = 200)]
        limit: u32,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        src: overlord_cli::query::Source,
    },
    /// Every row of a query as JSON lines, CSV or nmap XML.
    Export {
        query: String,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: overlord_cli::query::ExportAs,
        #[command(flatten)]
        src: overlord_cli::query::Source,
    },
    /// Imports nmap XML, masscan JSON or zgrab2 JSON lines as an import job (data directory).
    Import {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, default_value = ".overlord-data")]
        data_dir: PathBuf,
    },
    /// The cluster CA: init, join tokens for minions, revocation.
    Ca {
        #[command(subcommand)]
        cmd: CaCmd,
    },
    /// Client API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Runs a benchmark and prints figures.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

#[derive(Subcommand)]
enum MinionCmd {
    /// Turns a one-time join token into this minion's certificate: makes a key (it never leaves
    /// this machine), sends a CSR, writes ca.pem, minion.pem, minion.key into --out.
    Enroll {
        /// The coordinator's https:// URL (its minion listener).
        #[arg(long)]
        coordinator: String,
        /// The join token from `overlord ca join-token` (or OVERLORD_JOIN_TOKEN).
        #[arg(long, env = "OVERLORD_JOIN_TOKEN", hide_env_values = true)]
        join_token: String,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CaCmd {
    /// Makes a cluster CA and the coordinator's server certificate in --dir.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// IP addresses and DNS names the coordinator is reached at (loopback always included).
        #[arg(long)]
        san: Vec<String>,
    },
    /// Prints a one-time join token for one minion (id and provider go into its certificate).
    JoinToken {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        minion_id: String,
        #[arg(long)]
        provider: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Revokes every certificate of a minion; a running coordinator closes its session within a
    /// second.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        minion_id: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Adds an API token to a token file (only its hash is stored) and prints the token once.
    Add {
        #[arg(long)]
        file: PathBuf,
        #[arg(long)]
        name: String,
        /// admin | operator | viewer
        #[arg(long)]
        role: String,
        /// Owner of the jobs it submits (default: the name); viewers of an owner see its jobs.
        #[arg(long)]
        owner: Option<String>,
    },
}

#[derive(Subcommand)]
enum ImagesCmd {
    /// Runs the whole enrichment workflow (blank filter, hashes, OCR, faces, logos, e-mails,
    /// tags) on local PNG/JPEG files and prints one JSON object per file.
    Analyze {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Leak file (`address,source,date` lines): known e-mail addresses become `leaks`.
        #[arg(long)]
        leaks: Option<PathBuf>,
    },
    /// Gets a stored image: prints its metadata and enrichment JSON; `-o` writes the PNG.
    Get {
        id: String,
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[command(flatten)]
        coord: CoordArg,
    },
    /// Searches stored images by OCR text (ranked), tag, or face presence.
    Search {
        #[arg(long, group = "q")]
        text: Option<String>,
        #[arg(long, group = "q")]
        tag: Option<String>,
        /// Images with faces (at least --min-faces).
        #[arg(long, group = "q")]
        faces: bool,
        #[arg(long, default_value_t = 1)]
        min_faces: u32,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        coord: CoordArg,
    },
    /// Images similar to a stored image ID or to a local PNG/JPEG (--file).
    Similar {
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        id: Option<String>,
        #[arg(long)]
        file: Option<PathBuf>,
        /// Hamming radius on the 64-bit perceptual hash (0..=32).
        #[arg(long, default_value_t = 8)]
        radius: u32,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        coord: CoordArg,
    },
    /// Lists stored images (paged by id); images whose enrichment is not indexed (yet) show
    /// `not-enriched`.
    List {
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Only images whose enrichment is indexed.
        #[arg(long)]
        enriched_only: bool,
        #[command(flatten)]
        coord: CoordArg,
    },
}

#[derive(clap::Args)]
struct CoordArg {
    #[arg(
        long,
        env = "OVERLORD_COORDINATOR",
        default_value = "http://127.0.0.1:50051"
    )]
    coordinator: String,
}

#[derive(Subcommand)]
enum JobsCmd {
    List,
    /// Status, spec, params, counters, errors by class, the quality ledger and the first task
    /// errors.
    Get {
        job: u64,
    },
    Cancel {
        job: u64,
    },
    /// Tasks that hit an error: the last error and its class, the minion, the attempt count
    /// (failed for good, retrying, or cancelled after an error).
    Errors {
        job: u64,
        /// Tasks with an id above this one (printed as `task N`; pages resume from there).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Rows at most (0 = every task error).
        #[arg(long, default_value_t = 0)]
        limit: u64,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
}

fn raise_fd_limit() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
}

async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
}

/// mimalloc keeps freed memory for a while before returning it and commits whole arenas eagerly; a
/// coordinator under the watch/submit flood test then grew +241..+262 MiB (bound +256 MiB; glibc
/// +124..+167). Purging at once and committing on demand keeps it near +180 MiB; the cost is
/// throughput (23-28k instead of 35-37k tasks/s in the same runs, still over the 20k bar).
fn tune_allocator() {
    // mimalloc.h `mi_option_e`: arena_eager_commit = 4, purge_delay = 15.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // mimalloc's own environment variables win (operators can trade memory for throughput).
    let unset = |v: &str| std::env::var_os(v).is_none();
    // SAFETY: option setters of the allocator; they take plain integers and are thread-safe.
    unsafe {
        if unset("MIMALLOC_ARENA_EAGER_COMMIT") {
            libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
        if unset("MIMALLOC_PURGE_DELAY") {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}

fn main() -> Result<()> {
    tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async_main())
}

async fn async_main() -> Result<()> {
    // nmap's `-iL FILE` (one dash, two letters) is `--targets-file FILE` here.
    let cli = Cli::parse_from(std::env::args_os().map(|a| {
        if a == "-iL" {
            "--targets-file".into()
        } else {
            a
        }
    }));
    raise_fd_limit();
    client::set_credentials(client::credentials_from(
        std::env::var("OVERLORD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
        cli.token_file.as_deref(),
        cli.ca.as_deref(),
    )?);
    if !matches!(cli.cmd, Cmd::Coordinator { .. } | Cmd::Minion { .. }) {
        otel::init(None)?;
    }
    match cli.cmd {
        Cmd::Coordinator {
            config,
            listen,
            data_dir,
            addr_file,
        } => {
            let mut s = files::coordinator(&config)?;
            if let Some(l) = listen {
                s.listen = l;
            }
            if let Some(d) = data_dir {
                s.data_dir = d;
            }
            let guard = otel::init(Some(&otel::OtelSettings {
                enabled: s.telemetry.otlp_enabled,
                endpoint: s.telemetry.otlp_endpoint.clone(),
                service_name: s
                    .telemetry
                    .service_name
                    .clone()
                    .unwrap_or_else(|| "overlord-coordinator".into()),
            }))?;
            let listener = tokio::net::TcpListener::bind(&s.listen)
                .await
                .with_context(|| format!("cannot listen on {}", s.listen))?;
            let addr = listener.local_addr()?;
            let mut running = overlord_coordinator::start(s, listener).await?;
            println!("listening on {addr}");
            std::io::stdout().flush()?;
            if let Some(f) = addr_file {
                std::fs::write(&f, addr.to_string())
                    .with_context(|| format!("cannot write {}", f.display()))?;
            }
            let r = tokio::select! {
                r = running.wait() => r,
                _ = ctrl_c() => {
                    running.shutdown().await;
                    Ok(())
                }
            };
            if let Some(g) = guard {
                g.shutdown();
            }
            r?
        }
        Cmd::Minion {
            sub:
                Some(MinionCmd::Enroll {
                    coordinator,
                    join_token,
                    out,
                }),
            ..
        } => {
            let ca = cli.ca.as_deref().context(
                "enrollment needs the cluster CA certificate to verify the coordinator: pass --ca ca.pem",
            )?;
            let r = overlord_cli::secure::enroll(&coordinator, &join_token, ca, &out).await?;
            out!("{r}");
        }
        Cmd::Minion {
            sub: None,
            config,
            coordinator,
            id,
        } => {
            let config = config.context("pass --config FILE (or `overlord minion enroll ...`)")?;
            let (mut s, tel) = files::minion_with_telemetry(&config)?;
            let guard = otel::init(Some(&otel::OtelSettings {
                enabled: tel.otlp_enabled,
                endpoint: tel.otlp_endpoint,
                service_name: tel
                    .service_name
                    .unwrap_or_else(|| format!("overlord-minion-{}", s.id)),
            }))?;
            if let Some(c) = coordinator {
                s.coordinator = c;
            }
            if let Some(i) = id {
                s.id = i;
            }
            println!("minion {} ({}) -> {}", s.id, s.provider, s.coordinator);
            let r = overlord_minion::run(s, overlord_minion::modules::builtin(), ctrl_c()).await;
            if let Some(g) = guard {
                g.shutdown();
            }
            r?;
        }
        Cmd::Scan {
            targets,
            targets_file,
            ports,
            modules,
            rate,
            coordinator,
            data_dir,
            leaks,
            format,
            params,
            detach,
            mut rules,
            rules_file,
            disable_rules,
        } => {
            if let Some(path) = rules_file {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("rules file {}", path.display()))?;
                rules.extend(
                    text.lines()
                        .map(|l| l.split('#').next().unwrap_or("").trim())
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
            // checked here for a quick, local error; the coordinator checks again at submission
            overlord_core::followup::RuleSet::from_text(&rules, &disable_rules)?;
            let name = match &targets_file {
                Some(f) => format!("scan -iL {}", f.display()),
                None => format!("scan {}", targets.join(" ")),
            };
            let spec = v1::JobSpec {
                name,
                targets,
                ports,
                modules,
                rate_limit: rate,
                inputs: vec![],
                params_json: params.unwrap_or_default(),
                rules,
                disable_rules,
                hitlist: String::new(),
            };
            let (url, emb) = match coordinator {
                Some(_) if leaks.is_some() => bail!(
                    "--leaks is for the embedded cluster; a coordinator imports its leak file from `[images] leaks` in its config"
                ),
                Some(u) => (u, None),
                None => {
                    let mut s = overlord_coordinator::Settings::local(data_dir);
                    s.images.leaks = leaks;
                    let e = Embedded::start_with(s, 2, 64).await?;
                    (e.url.clone(), Some(e))
                }
            };
            let r = scan(&url, spec, targets_file.as_deref(), format, detach).await;
            if let Some(e) = emb {
                e.shutdown().await;
            }
            r?;
        }
        Cmd::Jobs { cmd, coordinator } => {
            let mut c = client::connect(&coordinator).await?;
            match cmd {
                JobsCmd::List => {
                    for st in client::list(&mut c).await? {
                        out!("{}", client::status_line(&st));
                    }
                }
                JobsCmd::Get { job } => {
                    let st = client::get(&mut c, job).await?;
                    out!("{}", client::job_detail(&st).trim_end());
                    if let Some(q) = &st.quality {
                        out!("{}", client::quality_lines(q).trim_end());
                    }
                    // A coordinator without ListTaskErrors (older) still shows the rest.
                    let page = match client::task_errors(&mut c, job, 0, 10).await {
                        Ok(p) => p,
                        Err(e) => {
                            eprintln!("task errors unavailable: {e}");
                            Default::default()
                        }
                    };
                    for e in &page.errors {
                        out!("  {}", client::task_error_line(e, Format::Table));
                    }
                    if page.next_after_task != 0 {
                        out!(
                            "  … more: overlord jobs errors {job} --after {}",
                            page.next_after_task
                        );
                    }
                }
                JobsCmd::Errors {
                    job,
                    after,
                    limit,
                    format,
                } => {
                    let mut lines = client::Lines::task_errors(format);
                    let (mut after, mut n) = (after, 0u64);
                    'pages: loop {
                        let page = client::task_errors(&mut c, job, after, 1000).await?;
                        for e in &page.errors {
                            if limit != 0 && n == limit {
                                break 'pages;
                            }
                            out!("{}", lines.with_header(client::task_error_line(e, format)));
                            n += 1;
                        }
                        if page.next_after_task == 0 {
                            break;
                        }
                        after = page.next_after_task;
                    }
                    eprintln!("{n} task errors");
                }
                JobsCmd::Cancel { job } => out!(
                    "{}",
                    client::status_line(&client::cancel(&mut c, job).await?)
                ),
            }
        }
        Cmd::Watch {
            job,
            after,
            format,
            coordinator,
        } => {
            let mut c = client::connect(&coordinator).await?;
            let mut lines = client::Lines::findings(format);
            let st =
                client::watch(&mut c, job, after, true, |f| out!("{}", lines.finding(f))).await?;
            eprintln!("{}", client::status_line(&st));
        }
        Cmd::Results {
            job,
            format,
            coordinator,
        } => {
            let mut c = client::connect(&coordinator).await?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut lines = client::Lines::findings(format);
            let n = client::results(&mut c, job, |f| {
                let _ = writeln!(out, "{}", lines.finding(f));
            })
            .await?;
            drop(out);
            eprintln!("{n} findings");
        }
        Cmd::Images {
            cmd: ImagesCmd::Get { id, output, coord },
        } => {
            let mut c = overlord_cli::images::connect(&coord.coordinator).await?;
            let img = overlord_cli::images::get(&mut c, &id, output.is_some()).await?;
            let meta = img.meta.clone().unwrap_or_default();
            let enrichment = serde_json::from_str::<serde_json::Value>(&img.enrichment_json)
                .unwrap_or(serde_json::Value::Null);
            let obj = serde_json::json!({
                "meta": overlord_cli::images::meta_json(&meta),
                "enrichment": enrichment,
            });
            out!("{}", serde_json::to_string_pretty(&obj)?);
            if let Some(path) = output {
                if img.png.is_empty() {
                    bail!("the coordinator has no PNG bytes for image {id}");
                }
                std::fs::write(&path, &img.png)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("wrote {} bytes to {}", img.png.len(), path.display());
            }
        }
        Cmd::Images {
            cmd:
                ImagesCmd::Search {
                    text,
                    tag,
                    faces,
                    min_faces,
                    limit,
                    coord,
                },
        } => {
            use overlord_cli::images::Search;
            let q = match (text, tag, faces) {
                (Some(t), _, _) => Search::Text(t),
                (_, Some(t), _) => Search::Tag(t),
                (_, _, true) => Search::Faces(min_faces),
                _ => bail!("give --text, --tag or --faces"),
            };
            let mut c = overlord_cli::images::connect(&coord.coordinator).await?;
            let l = overlord_cli::images::search(&mut c, q, limit).await?;
            for h in &l.images {
                out!("{}", overlord_cli::images::hit_line(h));
            }
            eprintln!("{} images", l.images.len());
        }
        Cmd::Images {
            cmd:
                ImagesCmd::Similar {
                    id,
                    file,
                    radius,
                    limit,
                    coord,
                },
        } => {
            let mut c = overlord_cli::images::connect(&coord.coordinator).await?;
            let l = overlord_cli::images::similar(
                &mut c,
                id.as_deref(),
                file.as_deref(),
                radius,
                limit,
            )
            .await?;
            for h in &l.images {
                out!("{}", overlord_cli::images::hit_line(h));
            }
            eprintln!("{} images", l.images.len());
        }
        Cmd::Images {
            cmd:
                ImagesCmd::List {
                    after,
                    limit,
                    enriched_only,
                    coord,
                },
        } => {
            let mut c = overlord_cli::images::connect(&coord.coordinator).await?;
            let l = overlord_cli::images::list(&mut c, &after, limit, enriched_only).await?;
            for h in &l.images {
                out!("{}", overlord_cli::images::hit_line(h));
            }
            if !l.next_after.is_empty() {
                eprintln!("more: --after {}", l.next_after);
            }
        }
        Cmd::Images {
            cmd: ImagesCmd::Analyze { files, leaks },
        } => {
            // CPU-bound (tesseract, cascades): off the async runtime
            let objs = tokio::task::spawn_blocking(move || -> Result<Vec<serde_json::Value>> {
                let db = match &leaks {
                    Some(path) => {
                        let db = overlord_enrich::LeakDb::temporary()?;
                        let report = db.import_file(path)?;
                        for (line, reason) in &report.rejected {
                            eprintln!("{}:{line}: skipped: {reason}", path.display());
                        }
                        Some(db)
                    }
                    None => None,
                };
                Ok(overlord_enrich::analyze_files(
                    &files,
                    Default::default(),
                    db.as_ref(),
                )?)
            })
            .await??;
            let mut out = std::io::stdout().lock();
            let mut failed = 0;
            for o in &objs {
                failed += usize::from(o.get("error").is_some());
                writeln!(out, "{}", serde_json::to_string(o)?)?;
            }
            if failed > 0 {
                bail!("{failed} of {} files could not be analysed", objs.len());
            }
        }
        Cmd::Schema { markdown, rules } => {
            let text = if rules {
                overlord_core::followup::builtin()
                    .iter()
                    .map(|r| format!("{r}\n"))
                    .collect()
            } else if markdown {
                overlord_core::finding::markdown()
            } else {
                serde_json::to_string_pretty(&overlord_core::finding::json_schema())? + "\n"
            };
            // a closed pipe (`| head`) is not an error
            use std::io::Write;
            match std::io::stdout().write_all(text.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r?,
            }
        }
        Cmd::Search {
            query,
            hosts,
            facets,
            format,
            limit,
            after,
            all,
            src,
        } => {
            let a = overlord_cli::query::SearchArgs {
                query,
                hosts,
                facets,
                format,
                limit,
                after,
                all,
            };
            overlord_cli::query::search_cmd(&src, a).await?
        }
        Cmd::Stats { query, facets, src } => {
            overlord_cli::query::stats_cmd(&src, &query, &facets).await?
        }
        Cmd::Host {
            ip,
            as_of,
            json,
            src,
        } => overlord_cli::query::host_cmd(&src, &ip, as_of.as_deref(), json).await?,
        Cmd::Diff {
            job_a,
            job_b,
            limit,
            json,
            src,
        } => overlord_cli::query::diff_cmd(&src, job_a, job_b, limit, json).await?,
        Cmd::Export { query, format, src } => {
            overlord_cli::query::export_cmd(&src, &query, format).await?
        }
        Cmd::Import { files, data_dir } => {
            tokio::task::block_in_place(|| overlord_cli::query::import_cmd(&data_dir, &files))?
        }
        Cmd::Beacons(args) => overlord_cli::beacons::run(args).await?,
        Cmd::Ca {
            cmd: CaCmd::Init { dir, san },
        } => {
            overlord_coordinator::security::pki::init(&dir, &san)?;
            out!(
                "cluster CA in {d}: ca.pem (give to minions and clients), server.pem/server.key (the coordinator's), ca.key (keep secret)\nconfigure the coordinator with:\n[tls]\nca_dir = \"{d}\"",
                d = dir.display()
            );
        }
        Cmd::Ca {
            cmd:
                CaCmd::JoinToken {
                    dir,
                    minion_id,
                    provider,
                    ttl_secs,
                },
        } => {
            let t = overlord_coordinator::security::pki::new_join_token(
                &dir,
                &minion_id,
                &provider,
                std::time::Duration::from_secs(ttl_secs),
            )?;
            out!("{t}");
        }
        Cmd::Ca {
            cmd: CaCmd::Revoke { dir, minion_id },
        } => {
            let n = overlord_coordinator::security::pki::revoke(&dir, &minion_id)?;
            out!("revoked {n} certificate(s) of minion {minion_id}");
        }
        Cmd::Token {
            cmd:
                TokenCmd::Add {
                    file,
                    name,
                    role,
                    owner,
                },
        } => {
            let role = overlord_core::security::Role::parse(&role)
                .with_context(|| format!("role {role:?} must be admin, operator or viewer"))?;
            let t = overlord_coordinator::security::tokens::add_token(
                &file,
                &name,
                role,
                owner.as_deref(),
            )?;
            out!("{t}");
        }
        Cmd::Bench { which } => bench::run(which).await?,
    }
    Ok(())
}

async fn scan(
    url: &str,
    mut spec: v1::JobSpec,
    targets_file: Option<&std::path::Path>,
    format: Format,
    detach: bool,
) -> Result<()> {
    let mut c = client::connect(url).await?;
    if let Some(path) = targets_file {
        let h = client::upload_hitlist(&mut c, path).await?;
        eprintln!(
            "hitlist {}: {} lines, {} addresses in {} ranges ({} duplicate addresses dropped)",
            h.id, h.lines, h.addresses, h.ranges, h.duplicates
        );
        spec.hitlist = h.id;
    }
    let t0 = std::time::Instant::now();
    let st = client::submit(&mut c, spec).await?;
    let id = st.job_id;
    if detach {
        out!("{id}");
        return Ok(());
    }
    eprintln!("job {id} submitted: {} root tasks", st.tasks_total);
    let mut open = 0;
    let mut lines = client::Lines::findings(format);
    let st = client::watch(&mut c, id, 0, true, |f| {
        if f.kind == overlord_core::finding::FindingKind::OpenPort.as_str() {
            open += 1;
        }
        out!("{}", lines.finding(f));
    })
    .await?;
    eprintln!("{}", client::status_line(&st));
    eprintln!(
        "{open} open ports, {} findings in {:.2}s",
        st.findings,
        t0.elapsed().as_secs_f64()
    );
    if st.state != v1::JobState::Completed as i32 {
        bail!("job {id} ended {}", client::state_name(st.state));
    }
    Ok(())
}
