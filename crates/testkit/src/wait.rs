//! Polling helpers: tests wait for a condition with a deadline, they never sleep blindly.

use std::future::Future;
use std::time::{Duration, Instant};

/// A condition did not hold before its deadline (or, with `exited`, the process that was to bring
/// it about died first).
#[derive(Debug, thiserror::Error)]
#[error(
    "{} after {waited:?} waiting for: {what}{}",
    if *exited { "the process exited" } else { "timed out" },
    last.as_ref().map(|l| format!(" (last: {l})")).unwrap_or_default()
)]
pub struct WaitTimeout {
    pub what: String,
    pub waited: Duration,
    pub last: Option<String>,
    pub exited: bool,
}

const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(100);

/// Polls `cond` until it returns true or `timeout` elapses. Backs off from 5 ms to 100 ms.
pub async fn wait_until<F, Fut>(
    timeout: Duration,
    what: &str,
    mut cond: F,
) -> Result<Duration, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        if cond().await {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                waited: start.elapsed(),
                last: None,
                exited: false,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Polls `probe` (a closure returning a future, or an async closure) until it yields `Some`,
/// backing off like [`wait_until`].
pub async fn wait_some<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> Result<T, WaitTimeout> {
    let start = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                waited: start.elapsed(),
                last: None,
                exited: false,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Blocking [`wait_some`].
pub fn wait_some_sync<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T, WaitTimeout> {
    let mut out = None;
    wait_until_sync(timeout, what, || {
        out = probe();
        out.is_some()
    })?;
    Ok(out.expect("the condition held"))
}

/// Polls a fallible probe until it yields `Some`, keeping the last error for the timeout message.
pub async fn wait_for<T, E, F, Fut>(
    timeout: Duration,
    what: &str,
    probe: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: std::fmt::Display,
{
    wait_for_alive(timeout, what, || true, probe).await
}

/// [`wait_for`] for what only a running process can bring about: gives up at once when `alive()`
/// turns false. Waiting out the deadline for a dead process only delayed the failure and hid its
/// cause behind "timed out" (e.g. a coordinator that could not bind its port).
pub async fn wait_for_alive<T, E, F, Fut>(
    timeout: Duration,
    what: &str,
    mut alive: impl FnMut() -> bool,
    mut probe: F,
) -> Result<T, WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: std::fmt::Display,
{
    let start = Instant::now();
    let mut pause = POLL_MIN;
    let mut last = None;
    loop {
        let was_alive = alive();
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e.to_string()),
        }
        // Checked before the probe: a process that wrote its answer and then exited still counts.
        if !was_alive || start.elapsed() >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                waited: start.elapsed(),
                last,
                exited: !was_alive,
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Blocking variant of [`wait_until`] for synchronous code.
pub fn wait_until_sync(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Result<Duration, WaitTimeout> {
    let start = Instant::now();
    let mut pause = POLL_MIN;
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(WaitTimeout {
                what: what.to_string(),
                waited: start.elapsed(),
                last: None,
                exited: false,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(POLL_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_until_the_probe_answers_and_times_out_naming_what() {
        let mut n = 0;
        let v = wait_some(Duration::from_secs(5), "three polls", async || {
            n += 1;
            (n == 3).then_some(n)
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let e = wait_some(Duration::from_millis(30), "never", async || None::<()>)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("timed out") && e.to_string().contains("never"));
        let mut m = 0;
        assert_eq!(
            wait_some_sync(Duration::from_secs(5), "sync", || {
                m += 1;
                (m == 2).then_some("ok")
            })
            .unwrap(),
            "ok"
        );
        let e = wait_for(Duration::from_millis(30), "failing probe", || async {
            Err::<Option<()>, _>("refused")
        })
        .await
        .unwrap_err();
        assert!(e.to_string().contains("last: refused"), "{e}");
    }
}
