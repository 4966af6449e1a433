//! Who goes first on a busy coordinator: folding accepted results into the index.
//!
//! Queries and tantivy's segment merges are work that can wait a little; results arriving from
//! minions are not (the follower falling behind is index lag every user sees). So query threads
//! and merge threads run at a lower scheduling priority than the follower and tantivy's indexing
//! threads. On Linux (CFS) a thread at nice +10 gets about a tenth of what a nice-0 thread gets
//! *while both want the CPU*; on an idle machine it runs at full speed. Elsewhere these are no-ops.
//!
//! The numbers are the policy, in one place; `index.rs` applies [`MERGE_NICE`] to the writer's
//! merge threads, the coordinator's query service and the benchmark run every query through
//! [`below_ingest`].

/// Nice value of query threads.
pub const QUERY_NICE: i32 = 10;
/// Nice value of tantivy's merge threads. Merges only need to keep up over minutes: deferred
/// under a flood, they leave more (smaller) segments for a while and catch up when it ends.
pub const MERGE_NICE: i32 = 10;

/// Lowers the calling thread's priority to `nice` (never raises it). Returns whether the thread
/// now runs at `nice` or lower.
pub fn lower_current_thread(nice: i32) -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority on a thread id of this process
        // changes that thread only (Linux's per-thread nice value).
        unsafe {
            let tid = libc::gettid();
            renice(tid, nice)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        false
    }
}

#[cfg(target_os = "linux")]
unsafe fn renice(tid: libc::pid_t, nice: i32) -> bool {
    // SAFETY (caller): `tid` is a thread of this process.
    unsafe {
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if *libc::__errno_location() != 0 {
            return false;
        }
        if now >= nice {
            return true;
        }
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
    }
}

/// The ids of this process's threads whose name starts with `prefix` (Linux; empty elsewhere).
pub fn threads_named(prefix: &str) -> Vec<i32> {
    #[cfg(target_os = "linux")]
    {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim_end().starts_with(prefix))
            })
            .filter_map(|t| t.file_name().to_str()?.parse().ok())
            .collect()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = prefix;
        Vec::new()
    }
}

/// Lowers every thread of this process whose name starts with `prefix` to `nice`. Returns how
/// many such threads now run at `nice` or lower.
pub fn lower_threads_named(prefix: &str, nice: i32) -> usize {
    #[cfg(target_os = "linux")]
    {
        threads_named(prefix)
            .into_iter()
            // SAFETY: the id was listed under /proc/self/task: a thread of this process (if it
            // ended since, the call fails harmlessly).
            .filter(|tid| unsafe { renice(*tid, nice) })
            .count()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (prefix, nice);
        0
    }
}

/// Runs `f` on a fresh thread at [`QUERY_NICE`] and returns its result. A fresh thread because
/// a lowered priority cannot be raised again without privileges (a pooled thread would stay
/// low for whatever it runs next); starting one costs tens of microseconds, against queries of
/// milliseconds.
pub fn below_ingest<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("query".into())
            .spawn_scoped(s, move || {
                lower_current_thread(QUERY_NICE);
                f()
            })
            .expect("spawn query thread");
        match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_current() -> i32 {
        // SAFETY: as above.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_query_runs_below_the_caller_and_the_caller_keeps_its_priority() {
        let before = nice_of_current();
        let inside = below_ingest(nice_of_current);
        assert_eq!(inside, QUERY_NICE.max(before));
        assert_eq!(nice_of_current(), before);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn named_threads_are_lowered_and_others_are_not() {
        use std::sync::{Arc, Barrier};
        // every thread has named itself once it reaches the first barrier; it reads its
        // priority after the second
        let (named, lowered) = (Arc::new(Barrier::new(3)), Arc::new(Barrier::new(3)));
        let spawn = |name: &str| {
            let (named, lowered) = (named.clone(), lowered.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    named.wait();
                    lowered.wait();
                    nice_of_current()
                })
                .unwrap()
        };
        let (a, b) = (spawn("prio_test_a"), spawn("other_b"));
        named.wait();
        let base = nice_of_current();
        let to = 7.max(base + 1);
        assert_eq!(lower_threads_named("prio_test_", to), 1);
        lowered.wait();
        assert_eq!(a.join().unwrap(), to);
        assert_eq!(b.join().unwrap(), base);
    }
}
