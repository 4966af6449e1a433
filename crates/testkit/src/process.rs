//! Programs a test starts: killed and reaped when the test ends (even by a panic), and the
//! "start it and wait for the address it bound" step every test of a listening program needs.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Child processes killed (SIGKILL) and reaped on drop.
#[derive(Default)]
pub struct Kill(pub Vec<Child>);

impl Kill {
    pub fn one(c: Child) -> Self {
        Kill(vec![c])
    }

    pub fn push(&mut self, c: Child) {
        self.0.push(c);
    }

    /// The first child (the one [`Kill::one`] holds).
    pub fn first(&mut self) -> &mut Child {
        &mut self.0[0]
    }

    /// `kill -9` every child and reap it (what drop does; a test calls it to crash a program
    /// mid-run). Idempotent.
    pub fn kill9(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Kill {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The address a program wrote to `addr_file` (trimmed), once it wrote one.
pub fn read_addr_file(addr_file: &Path) -> Option<String> {
    let a = std::fs::read_to_string(addr_file).ok()?;
    let a = a.trim();
    (!a.is_empty()).then(|| a.to_string())
}

/// Reads the address `child` writes to `addr_file` once it listens (`--addr-file`), within
/// `timeout`; panics at once if the child exits first (its stderr says why), not at the deadline.
pub fn wait_for_addr_file(child: &mut Child, addr_file: &Path, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(a) = read_addr_file(addr_file) {
            return a;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{} exited with {st} before writing {}",
                program(child),
                addr_file.display()
            );
        }
        assert!(
            t0.elapsed() < timeout,
            "no address in {} after {timeout:?}",
            addr_file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spawns `cmd` (which must be told to write `addr_file`), waits for its address and returns
/// the guarded child with it. A stale `addr_file` from an earlier run is removed first.
pub fn spawn_with_addr_file(
    cmd: &mut Command,
    addr_file: &Path,
    timeout: Duration,
) -> (Kill, String) {
    let _ = std::fs::remove_file(addr_file);
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let mut k = Kill::one(child);
    let addr = wait_for_addr_file(k.first(), addr_file, timeout);
    (k, addr)
}

fn program(c: &Child) -> String {
    format!("process {}", c.id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_file_and_early_exit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("addr");
        let (mut k, a) = spawn_with_addr_file(
            Command::new("sh").arg("-c").arg(format!(
                "sleep 0.1; echo 127.0.0.1:9 > {}; sleep 30",
                f.display()
            )),
            &f,
            Duration::from_secs(10),
        );
        assert_eq!(a, "127.0.0.1:9");
        // killed and reaped: waiting again reports the exit at once
        let mut c = k.0.pop().unwrap();
        c.kill().unwrap();
        assert!(c.wait().is_ok());
        let r = std::panic::catch_unwind(|| {
            spawn_with_addr_file(
                Command::new("sh").arg("-c").arg("exit 3"),
                &dir.path().join("never"),
                Duration::from_secs(10),
            )
        });
        let msg = *r.err().unwrap().downcast::<String>().unwrap();
        assert!(msg.contains("exited with exit status: 3"), "{msg}");
    }
}
