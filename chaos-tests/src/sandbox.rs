//! The cluster sandbox: a coordinator and N minions as real OS processes of the `overlord` binary,
//! each minion behind its own [`FaultProxy`], clients behind another one. Ports are chosen at run time,
//! data lives in a temp dir, logs go to files and are printed when a test fails.
//!
//! ```text
//! client ──▶ client proxy ──┐
//! minion-0 ─▶ proxy-0 ──────┼──▶ coordinator (sled dir survives kill -9 + restart)
//! minion-1 ─▶ proxy-1 ──────┘
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::client::{JobClient, job_client};
use crate::process::{ManagedProcess, ProcSpec, RunState};
use crate::proxy::FaultProxy;
use crate::wait::wait_for_alive;

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
        }
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
}

/// The `overlord` binary under test: `$OVERLORD_BIN`, else built once with cargo for this workspace
/// (`cargo build -p overlord-cli --bin overlord`, see [`crate::backbone_sandbox::overlord_bin`]), else
/// an existing `<target>/{debug,release}/overlord`.
pub fn overlord_bin() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("OVERLORD_BIN") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        bail!("OVERLORD_BIN={} does not exist", p.display());
    }
    let built = crate::backbone_sandbox::overlord_bin();
    if let Ok(p) = &built
        && p.is_file()
    {
        return Ok(p.clone());
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("overlord");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "the `overlord` binary is not available ({:?}): run `cargo build -p overlord-cli` (looked in {}/{{debug,release}}), \
         or set OVERLORD_BIN",
        built.err(),
        target.display()
    )
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
        std::fs::write(
            &cfg,
            coordinator_config(unbound, &data, &b.timing, &b.coordinator_extra),
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
                let text = std::fs::read_to_string(&addr_file).unwrap_or_default();
                async move { Ok::<_, String>(text.trim().parse::<SocketAddr>().ok()) }
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
            coordinator_config(coord_addr, &data, &b.timing, &b.coordinator_extra),
        )?;
        let client_proxy = FaultProxy::start("client", coord_addr).await?;
        let mut me = Self {
            name: b.name.clone(),
            dir: Some(dir),
            bin,
            timing: b.timing.clone(),
            coordinator,
            coord_addr,
            client_proxy,
            minions: Vec::new(),
        };
        me.wait_serving(Duration::from_secs(30))
            .await
            .context("coordinator did not start serving")?;
        for m in &b.minions {
            let proxy = FaultProxy::start(m.id.clone(), coord_addr).await?;
            let cfg = me.dir().join(format!("minion-{}.toml", m.id));
            std::fs::write(
                &cfg,
                minion_config(m, &proxy.url(), &b.timing, &b.minion_extra),
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

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("sandbox dir").path()
    }

    /// gRPC URL for clients, through the client proxy.
    pub fn url(&self) -> String {
        self.client_proxy.url()
    }

    /// gRPC URL straight to the coordinator.
    pub fn direct_url(&self) -> String {
        format!("http://{}", self.coord_addr)
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
