//! A cluster sandbox for the backbone scenarios: real coordinators and minions, either in-process
//! (fast) or as `overlord` processes (so they can be `kill -9`ed), real TCP listeners as targets,
//! temp dirs, port 0 everywhere, and `wait_until` helpers.

use crate::sandbox::{MinionSpec, Timing, coordinator_config, minion_config};
use anyhow::{Context, Result, anyhow};
use overlord_proto::v1;
use overlord_testkit::process::spawn_with_addr_file;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Client = crate::client::JobClient;

/// Polls until the probe returns `Some` (the shared helper, with backoff), or fails after
/// `timeout` naming what it waited for.
pub use overlord_testkit::wait::wait_some as wait_until;

/// Every stored finding of a job (paged) and a job's status: the chaos client's helpers.
pub use crate::client::{all_results, get as status};

/// A client connected to `url` (the chaos client's [`crate::client::connect`]), retried for 10 s.
pub async fn client(url: &str) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match crate::client::connect(url).await {
            Ok(c) => return Ok(c),
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

/// Waits until the job is no longer running (reconnecting across coordinator restarts).
pub async fn wait_finished(url: &str, job: u64, timeout: Duration) -> Result<v1::JobStatus> {
    wait_until(timeout, &format!("job {job} to finish"), || async {
        let mut c = client(url).await.ok()?;
        let st = status(&mut c, job).await.ok()?;
        (st.state != v1::JobState::Running as i32).then_some(st)
    })
    .await
    .map_err(Into::into)
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

/// The `overlord` binary (the one lookup, shared with the process sandbox).
pub use crate::sandbox::overlord_bin;
/// A process killed (SIGKILL) and reaped on drop or by `kill9`.
pub use overlord_testkit::process::Kill;

/// Timings of the process scenarios: fast heartbeats and minion reconnects, the coordinator's
/// default lease and attempts.
pub fn process_timing() -> Timing {
    let engine = overlord_coordinator::EngineConfig::default();
    Timing {
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(600),
        lease: Duration::from_millis(engine.task_timeout_ms),
        max_attempts: engine.max_attempts,
        reconnect_max: Duration::from_millis(300),
    }
}

/// How long a coordinator process may take to bind and write its address.
const COORDINATOR_START: Duration = Duration::from_secs(30);

pub struct CoordProc {
    pub proc: Kill,
    pub addr: SocketAddr,
    pub url: String,
    pub config: PathBuf,
}

impl CoordProc {
    /// Starts `overlord coordinator` on `listen` (use 127.0.0.1:0 for a free port) with its sled
    /// data in `dir/data`; waits for the address it writes to `--addr-file`.
    pub fn spawn(dir: &Path, listen: &str) -> Result<Self> {
        let config = dir.join("coordinator.toml");
        std::fs::write(
            &config,
            coordinator_config(listen.parse()?, &dir.join("data"), &process_timing(), ""),
        )?;
        let addr_file = dir.join("coordinator.addr");
        let (proc, addr) = spawn_with_addr_file(
            Command::new(overlord_bin()?)
                .args(["coordinator", "--config"])
                .arg(&config)
                .arg("--addr-file")
                .arg(&addr_file)
                .stdout(Stdio::null())
                .stderr(Stdio::inherit()),
            &addr_file,
            COORDINATOR_START,
        );
        let addr: SocketAddr = addr.parse()?;
        Ok(CoordProc {
            proc,
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
) -> Result<Kill> {
    let config = dir.join(format!("minion-{id}.toml"));
    let m = MinionSpec {
        id: id.into(),
        provider: provider.into(),
        capacity,
    };
    std::fs::write(&config, minion_config(&m, url, &process_timing(), ""))?;
    let child = Command::new(overlord_bin()?)
        .args(["minion", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawning minion")?;
    Ok(Kill::one(child))
}
