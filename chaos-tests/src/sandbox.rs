//! The cluster sandbox: a coordinator and N minions as real OS processes of the `overlord` binary,
//! each minion behind its own [`FaultProxy`], clients behind another one. Ports are chosen at run time,
//! data lives in a temp dir, logs go to files and are printed when a test fails.
//!
//! ```text
//! client ──▶ client proxy ──┐
//! minion-0 ─▶ proxy-0 ──────┼──▶ coordinator (sled dir survives kill -9 + restart)
//! minion-1 ─▶ proxy-1 ──────┘
//! ```
//!
//! With [`ClusterBuilder::tls`] the cluster is secured the way an operator sets one up, through the
//! real CLI: `overlord ca init` in the sandbox dir, `overlord token add` (an operator token for the
//! test's clients), a coordinator config with `[tls]` and `[auth]`, and per minion
//! `overlord ca join-token` + `overlord minion enroll` (its certificate carries the minion's id
//! and provider) and a minion config with `[tls]` and an `https://` coordinator URL. The proxies
//! forward the TLS bytes unchanged; clients of this crate find the CA and token by address
//! ([`crate::client::register_credentials`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::{Credentials, JobClient, job_client};
use crate::process::{ManagedProcess, ProcSpec, RunState};
use crate::proxy::FaultProxy;
use crate::wait::wait_for_alive;
use overlord_testkit::process::read_addr_file;

/// One minion of the sandbox.
#[derive(Debug, Clone)]
pub struct MinionSpec {
    pub id: String,
    pub provider: String,
    pub capacity: u32,
}

/// Timing knobs passed to the coordinator and minions.
#[derive(Debug, Clone)]
pub struct Timing {
    /// `heartbeat_interval_ms` (the coordinator tells minions at registration).
    pub heartbeat: Duration,
    /// `heartbeat_timeout_ms`: a minion silent this long is declared dead, its leases requeued.
    pub dead_after: Duration,
    /// `task_timeout_ms`: a lease's deadline.
    pub lease: Duration,
    /// `max_attempts` per task before it is failed. High in chaos runs: a task whose holders are
    /// killed again and again must still not be lost.
    pub max_attempts: u32,
    /// Minion `reconnect_max_ms` (backoff cap).
    pub reconnect_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(200),
            dead_after: Duration::from_millis(1000),
            lease: Duration::from_secs(30),
            max_attempts: 1000,
            reconnect_max: Duration::from_millis(500),
        }
    }
}

/// Builds a [`Cluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    pub minions: Vec<MinionSpec>,
    pub timing: Timing,
    /// Extra TOML appended to the coordinator config.
    pub coordinator_extra: String,
    /// Extra TOML appended to every minion config.
    pub minion_extra: String,
    pub name: String,
    /// mTLS for minions and API tokens for clients, set up through the CLI (see the module doc).
    pub tls: bool,
}

impl ClusterBuilder {
    /// `per_provider[i]` minions for provider `p<i>`, each of `capacity`.
    pub fn new(name: &str, per_provider: &[usize], capacity: u32) -> Self {
        let mut minions = Vec::new();
        for (p, n) in per_provider.iter().enumerate() {
            for k in 0..*n {
                minions.push(MinionSpec {
                    id: format!("m{p}-{k}"),
                    provider: format!("p{p}"),
                    capacity,
                });
            }
        }
        Self {
            minions,
            timing: Timing::default(),
            coordinator_extra: String::new(),
            minion_extra: String::new(),
            name: name.into(),
            tls: false,
        }
    }

    /// A secured cluster (mTLS + API tokens) when `on`.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    pub fn timing(mut self, t: Timing) -> Self {
        self.timing = t;
        self
    }

    pub async fn start(self) -> anyhow::Result<Cluster> {
        Cluster::start(self).await
    }
}

/// A minion process and its link.
pub struct MinionHandle {
    pub spec: MinionSpec,
    pub process: ManagedProcess,
    pub proxy: FaultProxy,
}

/// A running cluster. Dropping it kills every process; if the thread is panicking, the log tails are
/// printed and the data dir is kept.
pub struct Cluster {
    pub name: String,
    dir: Option<tempfile::TempDir>,
    bin: PathBuf,
    pub timing: Timing,
    coordinator: ManagedProcess,
    coord_addr: SocketAddr,
    client_proxy: FaultProxy,
    pub minions: Vec<MinionHandle>,
    /// The secured cluster's credentials (CA + operator token), when TLS is on.
    tls: Option<Arc<Credentials>>,
}

/// Runs `overlord ARGS` to completion; its trimmed stdout, or an error with its stderr.
async fn run_cli(bin: &Path, args: &[&std::ffi::OsStr], cwd: &Path) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(bin)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .with_context(|| format!("overlord {args:?} did not finish in 60 s"))??;
    if !out.status.success() {
        bail!(
            "overlord {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `[tls]`/`[auth]` of a secured sandbox coordinator.
fn coordinator_tls_section(ca_dir: &Path, tokens: &Path) -> String {
    format!(
        "\n[tls]\nca_dir = \"{}\"\n\n[auth]\ntokens = \"{}\"\n",
        ca_dir.display(),
        tokens.display()
    )
}

/// `[tls]` of a minion enrolled into `dir` by `overlord minion enroll --out dir`.
fn minion_tls_section(dir: &Path) -> String {
    format!(
        "\n[tls]\nca = \"{d}/ca.pem\"\ncert = \"{d}/minion.pem\"\nkey = \"{d}/minion.key\"\n",
        d = dir.display()
    )
}

/// `http://…` → `https://…` when `tls`.
fn scheme(url: String, tls: bool) -> String {
    if tls {
        url.replacen("http://", "https://", 1)
    } else {
        url
    }
}

/// The `overlord` binary under test (one lookup for both sandboxes, done once per test binary):
/// `$OVERLORD_BIN`, else built with cargo for this workspace (`cargo build -p overlord-cli --bin
/// overlord`), else an existing `<target>/{debug,release}/overlord`.
pub fn overlord_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_overlord_bin)
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn find_overlord_bin() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("OVERLORD_BIN") {
        // Absolute: processes start in their own temp dirs, where a relative path (as in the
        // soak's documented `OVERLORD_BIN=target/debug/overlord`) names nothing.
        return std::fs::canonicalize(&p)
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| format!("OVERLORD_BIN={p} does not exist"));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let built = build_overlord(&root);
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("overlord");
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(format!(
        "the `overlord` binary is not available ({built:?}): run `cargo build -p overlord-cli` (looked in {}/{{debug,release}}), \
         or set OVERLORD_BIN",
        target.display()
    ))
}

/// `cargo build -p overlord-cli --bin overlord` in the workspace at `root`.
fn build_overlord(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "build",
            "-q",
            "-p",
            "overlord-cli",
            "--bin",
            "overlord",
            "--message-format=short",
        ])
        .current_dir(root)
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building overlord failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The coordinator's config file (fields of `overlord_coordinator::config::CoordinatorConfig`).
pub fn coordinator_config(listen: SocketAddr, data_dir: &Path, t: &Timing, extra: &str) -> String {
    format!(
        r#"version = 1
listen = "{listen}"
data_dir = "{data}"
heartbeat_interval_ms = {hb}
heartbeat_timeout_ms = {dead}
task_timeout_ms = {lease}
max_attempts = {attempts}
{extra}
"#,
        data = data_dir.display(),
        hb = ms(t.heartbeat),
        dead = ms(t.dead_after),
        lease = ms(t.lease),
        attempts = t.max_attempts,
    )
}

/// A minion's config file (fields of `overlord_minion::config::MinionConfig`).
pub fn minion_config(m: &MinionSpec, coordinator_url: &str, t: &Timing, extra: &str) -> String {
    format!(
        r#"version = 1
id = "{id}"
provider = "{provider}"
coordinator = "{coordinator_url}"
capacity = {cap}
reconnect_max_ms = {backoff}
{extra}
"#,
        id = m.id,
        provider = m.provider,
        cap = m.capacity,
        backoff = ms(t.reconnect_max),
    )
}

impl Cluster {
    pub async fn start(b: ClusterBuilder) -> anyhow::Result<Self> {
        let bin = overlord_bin()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("chaos-{}-", b.name))
            .tempdir()?;
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs)?;
        let data = dir.path().join("coordinator-data");
        std::fs::create_dir_all(&data)?;
        // The coordinator binds 127.0.0.1:0 itself and reports the port (`--addr-file`). A port
        // picked beforehand (bound, released, handed over: this sandbox did that) can be taken
        // by a parallel test's listener before the coordinator binds it: the coordinator then exits at start and the
        // whole test fails. Once the port is known the config names it, so a restart (kill -9,
        // start again with the same command line) comes back where the proxies forward to.
        let cfg = dir.path().join("coordinator.toml");
        let addr_file = dir.path().join("coordinator.addr");
        let unbound: SocketAddr = "127.0.0.1:0".parse()?;
        let ca_dir = dir.path().join("pki");
        let mut coordinator_extra = b.coordinator_extra.clone();
        let mut creds = None;
        if b.tls {
            // The operator's steps (README "A secured cluster"), through the real CLI.
            let tokens = dir.path().join("tokens.toml");
            run_cli(
                &bin,
                &[
                    "ca".as_ref(),
                    "init".as_ref(),
                    "--dir".as_ref(),
                    ca_dir.as_os_str(),
                ],
                dir.path(),
            )
            .await?;
            let token = run_cli(
                &bin,
                &[
                    "token".as_ref(),
                    "add".as_ref(),
                    "--file".as_ref(),
                    tokens.as_os_str(),
                    "--name".as_ref(),
                    "chaos".as_ref(),
                    "--role".as_ref(),
                    "operator".as_ref(),
                ],
                dir.path(),
            )
            .await?;
            anyhow::ensure!(
                !token.is_empty() && !token.contains(char::is_whitespace),
                "`overlord token add` printed no single token: {token:?}"
            );
            creds = Some(Arc::new(Credentials {
                ca_pem: std::fs::read_to_string(ca_dir.join("ca.pem"))
                    .context("ca.pem of `overlord ca init`")?,
                token,
            }));
            coordinator_extra += &coordinator_tls_section(&ca_dir, &tokens);
        }
        std::fs::write(
            &cfg,
            coordinator_config(unbound, &data, &b.timing, &coordinator_extra),
        )?;
        let mut coordinator = ManagedProcess::spawn(
            ProcSpec {
                name: "coordinator".into(),
                program: bin.clone(),
                args: vec![
                    "coordinator".into(),
                    "--config".into(),
                    cfg.clone().into_os_string(),
                    "--addr-file".into(),
                    addr_file.clone().into_os_string(),
                ],
                env: vec![("RUST_LOG".into(), "info".into())],
                cwd: Some(dir.path().to_path_buf()),
            },
            &logs,
        )?;
        let coord_addr: SocketAddr = wait_for_alive(
            Duration::from_secs(30),
            "coordinator address file",
            || coordinator.is_alive(),
            || {
                let a = read_addr_file(&addr_file).and_then(|a| a.parse::<SocketAddr>().ok());
                async move { Ok::<_, String>(a) }
            },
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{e}\n--- coordinator log ---\n{}",
                coordinator.log_tail(8 * 1024)
            )
        })?;
        std::fs::write(
            &cfg,
            coordinator_config(coord_addr, &data, &b.timing, &coordinator_extra),
        )?;
        let client_proxy = FaultProxy::start("client", coord_addr).await?;
        if let Some(c) = &creds {
            crate::client::register_credentials(&coord_addr.to_string(), c.clone());
            crate::client::register_credentials(&client_proxy.url(), c.clone());
        }
        let mut me = Self {
            name: b.name.clone(),
            dir: Some(dir),
            bin,
            timing: b.timing.clone(),
            coordinator,
            coord_addr,
            client_proxy,
            minions: Vec::new(),
            tls: creds,
        };
        me.wait_serving(Duration::from_secs(30))
            .await
            .context("coordinator did not start serving")?;
        for m in &b.minions {
            let proxy = FaultProxy::start(m.id.clone(), coord_addr).await?;
            let cfg = me.dir().join(format!("minion-{}.toml", m.id));
            let mut minion_extra = b.minion_extra.clone();
            if me.tls.is_some() {
                let out = me.enroll(&ca_dir, &m.id, &m.provider).await?;
                minion_extra += &minion_tls_section(&out);
            }
            std::fs::write(
                &cfg,
                minion_config(
                    m,
                    &scheme(proxy.url(), me.tls.is_some()),
                    &b.timing,
                    &minion_extra,
                ),
            )?;
            let process = ManagedProcess::spawn(
                ProcSpec {
                    name: format!("minion-{}", m.id),
                    program: me.bin.clone(),
                    args: vec!["minion".into(), "--config".into(), cfg.into_os_string()],
                    env: vec![("RUST_LOG".into(), "info".into())],
                    cwd: Some(me.dir().to_path_buf()),
                },
                &logs,
            )?;
            me.minions.push(MinionHandle {
                spec: m.clone(),
                process,
                proxy,
            });
        }
        Ok(me)
    }

    /// A one-time join token (`overlord ca join-token`) turned into the minion's certificate by
    /// `overlord minion enroll` against the running coordinator; returns the directory holding
    /// ca.pem, minion.pem and minion.key.
    async fn enroll(&self, ca_dir: &Path, id: &str, provider: &str) -> anyhow::Result<PathBuf> {
        let join = run_cli(
            &self.bin,
            &[
                "ca".as_ref(),
                "join-token".as_ref(),
                "--dir".as_ref(),
                ca_dir.as_os_str(),
                "--minion-id".as_ref(),
                id.as_ref(),
                "--provider".as_ref(),
                provider.as_ref(),
                "--ttl-secs".as_ref(),
                "600".as_ref(),
            ],
            self.dir(),
        )
        .await?;
        let out = self.dir().join(format!("enrolled-{id}"));
        let url = self.direct_url();
        run_cli(
            &self.bin,
            &[
                "--ca".as_ref(),
                ca_dir.join("ca.pem").as_os_str(),
                "minion".as_ref(),
                "enroll".as_ref(),
                "--coordinator".as_ref(),
                url.as_ref(),
                "--join-token".as_ref(),
                join.as_ref(),
                "--out".as_ref(),
                out.as_os_str(),
            ],
            self.dir(),
        )
        .await
        .with_context(|| format!("enrolling minion {id}"))?;
        Ok(out)
    }

    /// For a secured cluster: the violations of "nothing is served without TLS and a token" —
    /// a plaintext `ListJobs` to the coordinator must fail, and one over TLS without a token must
    /// be refused with `Unauthenticated`. Empty when secured as it should be (or TLS is off).
    pub async fn security_violations(&self) -> Vec<String> {
        use overlord_proto::v1::{ListJobsRequest, job_service_client::JobServiceClient};
        use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
        let Some(creds) = &self.tls else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let plain = job_client(&format!("http://{}", self.coord_addr))
            .list_jobs(ListJobsRequest {})
            .await;
        if plain.is_ok() {
            out.push("a plaintext ListJobs was answered by the TLS coordinator".to_string());
        }
        let anon = async {
            let ch = Endpoint::from_shared(self.direct_url())?
                .connect_timeout(Duration::from_secs(2))
                .tls_config(
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&creds.ca_pem)),
                )?
                .connect()
                .await?;
            Ok::<_, anyhow::Error>(
                JobServiceClient::new(ch)
                    .list_jobs(ListJobsRequest {})
                    .await,
            )
        }
        .await;
        match anon {
            Ok(Err(s)) if s.code() == tonic::Code::Unauthenticated => {}
            Ok(Err(s)) => out.push(format!(
                "ListJobs over TLS without a token: {:?} (want Unauthenticated)",
                s.code()
            )),
            Ok(Ok(_)) => out.push("ListJobs over TLS without a token was answered".to_string()),
            Err(e) => out.push(format!("TLS connection with the cluster CA failed: {e:#}")),
        }
        out
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("sandbox dir").path()
    }

    /// Whether this is a secured (mTLS + tokens) cluster.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The secured cluster's CA and operator token.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.tls.clone()
    }

    /// gRPC URL for clients, through the client proxy (`https://` when TLS is on).
    pub fn url(&self) -> String {
        scheme(self.client_proxy.url(), self.is_tls())
    }

    /// gRPC URL straight to the coordinator (`https://` when TLS is on).
    pub fn direct_url(&self) -> String {
        scheme(format!("http://{}", self.coord_addr), self.is_tls())
    }

    pub fn coordinator_addr(&self) -> SocketAddr {
        self.coord_addr
    }

    pub fn client_proxy(&self) -> &FaultProxy {
        &self.client_proxy
    }

    pub fn jobs(&self) -> JobClient {
        job_client(&self.url())
    }

    pub fn coordinator(&mut self) -> &mut ManagedProcess {
        &mut self.coordinator
    }

    pub fn coordinator_rss(&self) -> Option<u64> {
        self.coordinator.rss_bytes()
    }

    /// Waits until the coordinator answers `ListJobs` (directly, not through the client proxy).
    pub async fn wait_serving(&mut self, timeout: Duration) -> anyhow::Result<Duration> {
        let url = self.direct_url();
        let coordinator = &mut self.coordinator;
        let r = wait_serving_url(&url, timeout, || coordinator.is_alive()).await;
        r.map_err(|e| {
            anyhow::anyhow!(
                "{e}\n--- coordinator log ---\n{}",
                self.coordinator.log_tail(8 * 1024)
            )
        })
    }

    /// `kill -9` the coordinator.
    pub fn kill_coordinator(&mut self) {
        self.coordinator.kill9();
    }

    /// Starts the coordinator again on the same sled directory and port; returns the time from spawn
    /// until it serves again (the recovery time).
    pub async fn restart_coordinator(&mut self) -> anyhow::Result<Duration> {
        self.coordinator.kill9();
        let t0 = Instant::now();
        self.coordinator.start_again()?;
        self.wait_serving(Duration::from_secs(30)).await?;
        Ok(t0.elapsed())
    }

    pub fn minion(&mut self, i: usize) -> &mut MinionHandle {
        &mut self.minions[i]
    }

    /// Indices of the minions of provider `p`.
    pub fn provider_members(&self, provider: &str) -> Vec<usize> {
        (0..self.minions.len())
            .filter(|i| self.minions[*i].spec.provider == provider)
            .collect()
    }

    pub fn providers(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .minions
            .iter()
            .map(|m| m.spec.provider.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Restarts every dead minion and resumes every stopped one, heals every link.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        for m in &mut self.minions {
            m.proxy.heal();
            match m.process.state() {
                RunState::Stopped => m.process.cont()?,
                RunState::Dead => m.process.start_again()?,
                RunState::Running => {
                    if !m.process.is_alive() {
                        m.process.start_again()?;
                    }
                }
            }
        }
        self.client_proxy.heal();
        Ok(())
    }

    /// Processes that exited on their own (crashes), with their log tails.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        if self.coordinator.state() == RunState::Running && !self.coordinator.is_alive() {
            out.push(format!(
                "coordinator crashed:\n{}",
                self.coordinator.log_tail(4096)
            ));
        }
        for m in &mut self.minions {
            if m.process.state() == RunState::Running && !m.process.is_alive() {
                out.push(format!(
                    "minion {} crashed:\n{}",
                    m.spec.id,
                    m.process.log_tail(4096)
                ));
            }
        }
        out
    }

    /// Tails of every log.
    pub fn dump_logs(&self, per_log: u64) -> String {
        let mut s = format!(
            "=== sandbox {} at {} ===\n",
            self.name,
            self.dir().display()
        );
        s += &format!(
            "--- coordinator ({}) ---\n{}\n",
            self.coordinator.log_path().display(),
            self.coordinator.log_tail(per_log)
        );
        for m in &self.minions {
            s += &format!(
                "--- minion {} ({}) ---\n{}\n",
                m.spec.id,
                m.process.log_path().display(),
                m.process.log_tail(per_log)
            );
        }
        s
    }

    /// Keeps the sandbox dir after the run (for post-mortems).
    pub fn keep(&mut self) -> PathBuf {
        self.dir.take().map(|d| d.keep()).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.tls.is_some() {
            crate::client::forget_credentials(&self.coord_addr.to_string());
            crate::client::forget_credentials(&self.client_proxy.url());
        }
        for m in &mut self.minions {
            m.process.kill9();
        }
        self.coordinator.kill9();
        if std::thread::panicking() && self.dir.is_some() {
            eprintln!("{}", self.dump_logs(6 * 1024));
            let kept = self.keep();
            eprintln!("sandbox kept at {}", kept.display());
        }
    }
}

/// Waits until a coordinator at `url` answers `ListJobs`; fails early when `alive()` turns false.
pub async fn wait_serving_url(
    url: &str,
    timeout: Duration,
    alive: impl FnMut() -> bool,
) -> Result<Duration, crate::wait::WaitTimeout> {
    let start = Instant::now();
    let c = job_client(url);
    wait_for_alive(timeout, "coordinator serving ListJobs", alive, || {
        let mut c = c.clone();
        async move {
            match tokio::time::timeout(
                Duration::from_secs(2),
                c.list_jobs(overlord_proto::v1::ListJobsRequest {}),
            )
            .await
            {
                Ok(Ok(_)) => Ok(Some(())),
                Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => Err("timeout".to_string()),
            }
        }
    })
    .await?;
    Ok(start.elapsed())
}
