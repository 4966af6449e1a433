//! A local `nats-server` (Debian package, 2.9) with JetStream for the firehose's tests and
//! benchmark: one node, or a cluster of nodes, each bound to 127.0.0.1, its store in a directory
//! the caller owns.
//!
//! Ready = the server's own pid holds the client port it logged (docs/DESIGN.md "Tests that start
//! programs"), and it logged "Server is ready". Client ports are chosen by the server (`-p -1`);
//! cluster (route) ports must be known to every node up front, so they are picked free and a
//! cluster whose node cannot bind its route port is started again on new ports.

use overlord_probes::service::testsupport::{stop_child, tcp_listeners_of};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const READY_WITHIN: Duration = Duration::from_secs(20);

/// How one node is started.
#[derive(Clone, Debug, Default)]
pub struct NatsOpts {
    /// Client credentials the server requires.
    pub user_pass: Option<(String, String)>,
    /// Client port; None = chosen by the server.
    pub port: Option<u16>,
    /// (cluster name, this node's route port, every node's route port).
    pub cluster: Option<(String, u16, Vec<u16>)>,
}

/// A running `nats-server`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub name: String,
    /// Store and log live here.
    pub dir: PathBuf,
    pub port: u16,
    opts: NatsOpts,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("nats.log")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl NatsServer {
    /// Starts node `name` with its store and log under `dir`.
    pub fn start(dir: &Path, name: &str, opts: NatsOpts) -> Result<NatsServer, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut s = NatsServer {
            child: None,
            name: name.into(),
            dir: dir.to_path_buf(),
            port: 0,
            opts,
        };
        s.launch()?;
        Ok(s)
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = log_path(&self.dir);
        let _ = std::fs::remove_file(&log);
        let port = self.opts.port.map(|p| p.to_string()).unwrap_or("-1".into());
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &port, "-js", "-n", &self.name])
            .arg("-sd")
            .arg(self.dir.join("store"))
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((u, p)) = &self.opts.user_pass {
            cmd.args(["--user", u, "--pass", p]);
        }
        if let Some((cluster, route, all)) = &self.opts.cluster {
            let routes: Vec<String> = all
                .iter()
                .map(|p| format!("nats://127.0.0.1:{p}"))
                .collect();
            cmd.args(["--cluster_name", cluster])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{route}"))
                .arg("--routes")
                .arg(routes.join(","));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run nats-server (apt-get install nats-server): {e}"))?;
        let t0 = Instant::now();
        let port = loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "nats-server {} exited with {st}:\n{}",
                    self.name,
                    tail(&log)
                ));
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text
                .lines()
                .find_map(|l| l.split("Listening for client connections on ").nth(1))
                .and_then(|a| a.trim().rsplit(':').next()?.parse::<u16>().ok());
            if let Some(p) = port
                && text.contains("Server is ready")
                && tcp_listeners_of(child.id())
                    .unwrap_or_default()
                    .iter()
                    .any(|a| a.port() == p)
            {
                break p;
            }
            if t0.elapsed() > READY_WITHIN {
                stop_child(&mut child);
                return Err(format!(
                    "nats-server {} not ready within {READY_WITHIN:?}:\n{}",
                    self.name,
                    tail(&log)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.port = port;
        // A restart comes back on the same client port (clients reconnect there).
        self.opts.port = Some(port);
        self.child = Some(child);
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM (SIGKILL after 3 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            stop_child(&mut c);
        }
    }

    /// Starts it again on the same client port with the same store.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    pub fn log(&self) -> String {
        tail(&log_path(&self.dir))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

use overlord_probes::service::testsupport::free_port;

/// A JetStream cluster of `n` nodes (`n0`, `n1`, ...) under `dir`.
pub struct NatsCluster {
    pub nodes: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start(dir: &Path, n: usize) -> Result<NatsCluster, String> {
        let mut last = String::new();
        for attempt in 0..5 {
            let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
            let mut nodes = Vec::new();
            for (i, route) in routes.iter().enumerate() {
                let opts = NatsOpts {
                    cluster: Some(("overlord-test".into(), *route, routes.clone())),
                    ..Default::default()
                };
                match NatsServer::start(
                    &dir.join(format!("a{attempt}-n{i}")),
                    &format!("n{i}"),
                    opts,
                ) {
                    Ok(s) => nodes.push(s),
                    Err(e) => {
                        last = e;
                        break;
                    }
                }
            }
            if nodes.len() == n {
                return Ok(NatsCluster { nodes });
            }
        }
        Err(format!("cannot start a {n}-node nats cluster: {last}"))
    }

    /// Every node's client URL, comma separated (the firehose's `url`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
