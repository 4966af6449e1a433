//! Real OS processes under the harness's control: spawn with logs captured to a file, `kill -9`,
//! `SIGSTOP`/`SIGCONT`, restart with the same command line, resident memory from `/proc`.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// Errors of the process layer.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start `{program}` for {name}: {source}")]
    Spawn {
        name: String,
        program: String,
        source: std::io::Error,
    },
    #[error("cannot open log file {path}: {source}")]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("signal {signal} to {name} (pid {pid}) failed: {source}")]
    Signal {
        name: String,
        pid: u32,
        signal: i32,
        source: std::io::Error,
    },
    #[error("{name} is not running")]
    NotRunning { name: String },
}

/// Observable run state of a managed process, as the harness last left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Stopped,
    Dead,
}

/// A spec to (re)start a process.
#[derive(Debug, Clone)]
pub struct ProcSpec {
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
}

/// One managed OS process. Dropping it kills it (`SIGKILL`) and reaps it.
pub struct ManagedProcess {
    spec: ProcSpec,
    log_path: PathBuf,
    child: Option<Child>,
    state: RunState,
    starts: u32,
    started_at: Instant,
}

impl ManagedProcess {
    /// Starts the process; stdout and stderr are appended to `log_dir/<name>.log`.
    pub fn spawn(spec: ProcSpec, log_dir: &Path) -> Result<Self, ProcessError> {
        let log_path = log_dir.join(format!("{}.log", spec.name));
        let mut me = Self {
            spec,
            log_path,
            child: None,
            state: RunState::Dead,
            starts: 0,
            started_at: Instant::now(),
        };
        me.start()?;
        Ok(me)
    }

    fn start(&mut self) -> Result<(), ProcessError> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|source| ProcessError::Log {
                path: self.log_path.clone(),
                source,
            })?;
        self.starts += 1;
        let _ = writeln!(
            log,
            "=== chaos harness: start #{} of {} at {:?} ===",
            self.starts,
            self.spec.name,
            SystemTime::now()
        );
        let err = log.try_clone().map_err(|source| ProcessError::Log {
            path: self.log_path.clone(),
            source,
        })?;
        let mut cmd = Command::new(&self.spec.program);
        cmd.args(&self.spec.args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err));
        for (k, v) in &self.spec.env {
            cmd.env(k, v);
        }
        if let Some(cwd) = &self.spec.cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: self.spec.name.clone(),
            program: self.spec.program.display().to_string(),
            source,
        })?;
        self.child = Some(child);
        self.state = RunState::Running;
        self.started_at = Instant::now();
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn spec(&self) -> &ProcSpec {
        &self.spec
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    pub fn state(&self) -> RunState {
        self.state
    }

    /// How many times the process was started (1 after spawn).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn started_at(&self) -> Instant {
        self.started_at
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn signal(&self, signal: i32) -> Result<(), ProcessError> {
        let pid = self.pid().ok_or_else(|| ProcessError::NotRunning {
            name: self.spec.name.clone(),
        })?;
        // SAFETY: plain syscall on a pid we spawned and have not reaped yet (so it cannot be reused).
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if rc != 0 {
            return Err(ProcessError::Signal {
                name: self.spec.name.clone(),
                pid,
                signal,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// `kill -9` and reap. Idempotent.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = self.signal_child(&child, libc::SIGKILL);
            let _ = child.wait();
        }
        self.state = RunState::Dead;
    }

    fn signal_child(&self, child: &Child, signal: i32) -> std::io::Result<()> {
        // SAFETY: see `signal`.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// `SIGTERM`, then `SIGKILL` after `grace`.
    pub fn terminate(&mut self, grace: Duration) {
        if self.child.is_none() {
            return;
        }
        if self.state == RunState::Stopped {
            let _ = self.signal(libc::SIGCONT);
        }
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !self.is_alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
    }

    /// `SIGSTOP`: the process hangs (sockets stay open, nothing answers).
    pub fn stop(&mut self) -> Result<(), ProcessError> {
        self.signal(libc::SIGSTOP)?;
        self.state = RunState::Stopped;
        Ok(())
    }

    /// `SIGCONT` after [`stop`](Self::stop).
    pub fn cont(&mut self) -> Result<(), ProcessError> {
        self.signal(libc::SIGCONT)?;
        self.state = RunState::Running;
        Ok(())
    }

    /// Kills (if alive) and starts again with the same command line, data dir and id.
    pub fn restart(&mut self) -> Result<(), ProcessError> {
        self.kill9();
        self.start()
    }

    /// Starts a process that is dead (after [`kill9`](Self::kill9)).
    pub fn start_again(&mut self) -> Result<(), ProcessError> {
        if self.is_alive() {
            return Ok(());
        }
        self.start()
    }

    /// Whether the process still exists (reaps it if it exited by itself).
    pub fn is_alive(&mut self) -> bool {
        match self.child.as_mut() {
            None => false,
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    self.child = None;
                    self.state = RunState::Dead;
                    false
                }
            },
        }
    }

    /// Exit status if the process exited by itself (not through the harness).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                self.state = RunState::Dead;
                Some(status)
            }
            _ => None,
        }
    }

    /// Resident set size in bytes, from `/proc/<pid>/status` (`VmRSS`).
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.pid()?)
    }

    /// The last `max` bytes of the log.
    pub fn log_tail(&self, max: u64) -> String {
        tail_file(&self.log_path, max)
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Resident set size of a pid, in bytes.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// The last `max` bytes of a file (lossy UTF-8); empty if unreadable.
pub fn tail_file(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(name: &str, script: &str, dir: &Path) -> ManagedProcess {
        ManagedProcess::spawn(
            ProcSpec {
                name: name.into(),
                program: "/bin/sh".into(),
                args: vec!["-c".into(), script.into()],
                env: vec![],
                cwd: None,
            },
            dir,
        )
        .unwrap()
    }

    #[test]
    fn kill_stop_cont_restart_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh(
            "ticker",
            "echo hello-$$; while true; do sleep 0.05; done",
            dir.path(),
        );
        let first_pid = p.pid().unwrap();
        crate::wait::wait_until_sync(Duration::from_secs(5), "log has hello", || {
            p.log_tail(4096).contains("hello-")
        })
        .unwrap();
        assert!(p.rss_bytes().unwrap() > 0);
        p.stop().unwrap();
        // Field 3 of /proc/PID/stat is the state; T = stopped (the transition is asynchronous).
        crate::wait::wait_until_sync(Duration::from_secs(5), "state T", || {
            let st = std::fs::read_to_string(format!("/proc/{first_pid}/stat")).unwrap_or_default();
            st.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("T")
        })
        .unwrap();
        p.cont().unwrap();
        assert!(p.is_alive());
        p.restart().unwrap();
        assert_ne!(p.pid().unwrap(), first_pid);
        assert_eq!(p.starts(), 2);
        assert!(p.is_alive());
        p.kill9();
        assert!(!p.is_alive());
        assert_eq!(p.state(), RunState::Dead);
        // SIGKILL of the first instance reaped: /proc entry gone.
        assert!(!Path::new(&format!("/proc/{first_pid}")).exists());
        let log = p.log_tail(1 << 16);
        assert!(
            log.contains("start #1") && log.contains("start #2"),
            "{log}"
        );
    }

    #[test]
    fn exit_by_itself_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = sh("quitter", "exit 3", dir.path());
        crate::wait::wait_until_sync(Duration::from_secs(5), "exit", || !p.is_alive()).unwrap();
        assert_eq!(p.state(), RunState::Dead);
    }
}
