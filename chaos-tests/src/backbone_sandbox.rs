//! A cluster sandbox for the backbone scenarios: real coordinators and minions, either in-process
//! (fast) or as `overlord` processes (so they can be `kill -9`ed), real TCP listeners as targets,
//! temp dirs, port 0 everywhere, and `wait_until` helpers.

use anyhow::{Context, Result, anyhow, bail};
use overlord_proto::v1::{self, job_service_client::JobServiceClient};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Client = JobServiceClient<tonic::transport::Channel>;

/// Polls `f` every 20 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn client(url: &str) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match JobServiceClient::connect(url.to_string()).await {
            Ok(c) => return Ok(c.max_decoding_message_size(overlord_proto::MAX_MESSAGE_BYTES)),
            Err(e) if Instant::now() > deadline => {
                return Err(anyhow!("cannot connect to {url}: {e}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub fn spec(targets: &[&str], ports: &str, modules: &[&str]) -> v1::JobSpec {
    v1::JobSpec {
        targets: targets.iter().map(|s| s.to_string()).collect(),
        ports: ports.into(),
        modules: modules.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn noop_spec(count: u64, sleep_ms: u64) -> v1::JobSpec {
    v1::JobSpec {
        modules: vec!["noop".into()],
        params_json: serde_json::json!({"count": count, "sleep_ms": sleep_ms, "emit": true})
            .to_string(),
        ..Default::default()
    }
}

pub async fn submit(c: &mut Client, spec: v1::JobSpec) -> Result<u64> {
    Ok(c.submit_job(v1::SubmitJobRequest {
        spec: Some(spec),
        ..Default::default()
    })
    .await?
    .into_inner()
    .job_id)
}

pub async fn status(c: &mut Client, job: u64) -> Result<v1::JobStatus> {
    c.get_job(v1::GetJobRequest { job_id: job })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| anyhow!("no status"))
}

/// Waits until the job is no longer running (reconnecting across coordinator restarts).
pub async fn wait_finished(url: &str, job: u64, timeout: Duration) -> Result<v1::JobStatus> {
    wait_until(timeout, &format!("job {job} to finish"), || async {
        let mut c = client(url).await.ok()?;
        let st = status(&mut c, job).await.ok()?;
        (st.state != v1::JobState::Running as i32).then_some(st)
    })
    .await
}

/// Every stored finding of a job, paged.
pub async fn all_results(c: &mut Client, job: u64) -> Result<Vec<v1::Finding>> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .list_results(v1::ListResultsRequest {
                job_id: job,
                after_cursor: after,
                limit: 500,
            })
            .await?
            .into_inner();
        out.extend(page.findings);
        if page.next_cursor == 0 {
            return Ok(out);
        }
        after = page.next_cursor;
    }
}

// ---------------- targets ----------------

/// Real TCP services on 127.0.0.1:0: `speaking` ones send `banner-<port>\r\n` first; `silent`
/// ones answer `reply-<port>\r\n` only after receiving a probe.
pub struct Targets {
    pub speaking: Vec<u16>,
    pub silent: Vec<u16>,
    stop: watch::Sender<bool>,
}

impl Targets {
    pub async fn start(speaking: usize, silent: usize) -> Result<Self> {
        let (stop, _) = watch::channel(false);
        let mut t = Targets {
            speaking: vec![],
            silent: vec![],
            stop,
        };
        for i in 0..speaking + silent {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            let port = l.local_addr()?.port();
            let speaks = i < speaking;
            if speaks {
                t.speaking.push(port)
            } else {
                t.silent.push(port)
            }
            let mut rx = t.stop.subscribe();
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = rx.changed() => return,
                        a = l.accept() => {
                            let Ok((mut s, _)) = a else { continue };
                            tokio::spawn(async move {
                                if speaks {
                                    let _ = s.write_all(format!("banner-{port}\r\n").as_bytes()).await;
                                } else {
                                    let mut buf = [0u8; 256];
                                    if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await
                                        && n > 0 {
                                            let _ = s.write_all(format!("reply-{port}\r\n").as_bytes()).await;
                                        }
                                }
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            });
                        }
                    }
                }
            });
        }
        Ok(t)
    }

    pub fn all(&self) -> Vec<u16> {
        self.speaking
            .iter()
            .chain(self.silent.iter())
            .copied()
            .collect()
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Ports that were free a moment ago (bound then released): almost surely closed.
pub async fn closed_ports(n: usize) -> Result<Vec<u16>> {
    let mut ls = Vec::new();
    for _ in 0..n {
        ls.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    Ok(ls
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?)
}

// ---------------- in-process cluster ----------------

/// The [`overlord_storage::Store`] an in-process coordinator runs on. The in-process scenarios
/// run on both: the memory store proves the coordinator depends on the storage seam only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Mem,
}

/// How to reach an in-process coordinator's store once it stopped.
pub enum StoreHandle {
    /// Its sled directory.
    Sled(PathBuf),
    /// The memory store it ran on.
    Mem(overlord_storage::MemStore),
}

impl StoreHandle {
    /// The store a restart would open: the sled directory, or what the memory store flushed
    /// (unflushed writes are dropped, as a crash would). Call after the coordinator stopped.
    pub fn reopen(&self) -> Result<Box<dyn overlord_storage::Store>> {
        Ok(match self {
            StoreHandle::Sled(dir) => Box::new(overlord_storage::SledStore::open(dir)?),
            StoreHandle::Mem(m) => Box::new(m.after_crash()),
        })
    }
}

pub struct InProc {
    pub url: String,
    pub coordinator: overlord_coordinator::Running,
    pub dir: tempfile::TempDir,
    pub store: StoreHandle,
    stop: watch::Sender<bool>,
    minions: Vec<tokio::task::JoinHandle<()>>,
}

pub fn minion_settings(
    url: &str,
    id: &str,
    provider: &str,
    capacity: u32,
) -> overlord_minion::MinionSettings {
    overlord_minion::MinionSettings {
        id: id.into(),
        provider: provider.into(),
        coordinator: url.into(),
        capacity,
        capabilities: vec![],
        modules: overlord_minion::modules::builtin()
            .iter()
            .map(|m| m.name().to_string())
            .collect(),
        scope: overlord_core::scope::Scope::loopback(),
        reconnect_max: Duration::from_millis(500),
        tls: None,
        internal_secret: None,
        input_dir: None,
    }
}

impl InProc {
    pub async fn start(backend: Backend, minions: &[(&str, &str)], capacity: u32) -> Result<Self> {
        Self::start_with(backend, minions, capacity, |_| {}).await
    }

    /// Like `start`, with a hook to adjust each minion's settings (e.g. its scope).
    pub async fn start_with(
        backend: Backend,
        minions: &[(&str, &str)],
        capacity: u32,
        tweak: impl Fn(&mut overlord_minion::MinionSettings),
    ) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let settings = overlord_coordinator::Settings::local(dir.path().join("data"));
        let (coordinator, store) = match backend {
            Backend::Sled => (
                overlord_coordinator::start(settings, l).await?,
                StoreHandle::Sled(dir.path().join("data")),
            ),
            Backend::Mem => {
                let mem = overlord_storage::MemStore::new();
                let store: std::sync::Arc<dyn overlord_storage::Store> =
                    std::sync::Arc::new(mem.clone());
                (
                    overlord_coordinator::start_with_store(settings, store, l).await?,
                    StoreHandle::Mem(mem),
                )
            }
        };
        let url = format!("http://{}", coordinator.addr);
        let (stop, _) = watch::channel(false);
        let mut handles = Vec::new();
        for (id, provider) in minions {
            let mut s = minion_settings(&url, id, provider, capacity);
            tweak(&mut s);
            let mut rx = stop.subscribe();
            handles.push(tokio::spawn(async move {
                let _ = overlord_minion::run(s, overlord_minion::modules::builtin(), async move {
                    let _ = rx.wait_for(|v| *v).await;
                })
                .await;
            }));
        }
        Ok(InProc {
            url,
            coordinator,
            dir,
            store,
            stop,
            minions: handles,
        })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.minions {
            let _ = h.await;
        }
        self.coordinator.shutdown().await;
    }
}

// ---------------- processes ----------------

/// The `overlord` binary: `$OVERLORD_BIN`, or built once with cargo for this workspace.
pub fn overlord_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("OVERLORD_BIN") {
            return Ok(PathBuf::from(p));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "overlord-cli",
                "--bin",
                "overlord",
                "--message-format=short",
            ])
            .current_dir(&root)
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "building overlord failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"));
        let bin = target.join("debug").join("overlord");
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("{} not found after build", bin.display()))
        }
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A process killed (SIGKILL) on drop.
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct CoordProc {
    pub proc: Proc,
    pub addr: SocketAddr,
    pub url: String,
    pub config: PathBuf,
}

impl CoordProc {
    /// Starts `overlord coordinator` on `listen` (use 127.0.0.1:0 for a free port) with its sled
    /// data in `dir/data`; waits for its `listening on ADDR` line.
    pub fn spawn(dir: &Path, listen: &str) -> Result<Self> {
        let config = dir.join("coordinator.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\nlisten = \"{listen}\"\ndata_dir = \"data\"\nheartbeat_interval_ms = 100\nheartbeat_timeout_ms = 600\n"
            ),
        )?;
        let mut child = Command::new(overlord_bin()?)
            .args(["coordinator", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning coordinator")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        let addr: SocketAddr = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("unexpected first line from coordinator: {line:?}"))?
            .parse()?;
        Ok(CoordProc {
            proc: Proc { child },
            addr,
            url: format!("http://{addr}"),
            config,
        })
    }
}

/// Starts `overlord minion` with a generated config.
pub fn spawn_minion(
    dir: &Path,
    url: &str,
    id: &str,
    provider: &str,
    capacity: u32,
) -> Result<Proc> {
    let config = dir.join(format!("minion-{id}.toml"));
    std::fs::write(
        &config,
        format!(
            "version = 1\nid = \"{id}\"\nprovider = \"{provider}\"\ncoordinator = \"{url}\"\ncapacity = {capacity}\nreconnect_max_ms = 300\n"
        ),
    )?;
    let child = Command::new(overlord_bin()?)
        .args(["minion", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning minion")?;
    Ok(Proc { child })
}
