//! What the scan tests of this crate share (`mod support;`): listeners on one port of several
//! loopback addresses, and running a job to its end on a cluster to read its open set.

use overlord_cli::client::{self, Client};
use overlord_proto::v1;
use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener};
use std::time::Duration;

/// Listeners on the same free port of each of `addrs` (the first picks the port; retried on
/// another port until all of them bind). Returns the port, the listeners and the expected open set.
pub fn listeners(addrs: &[&str]) -> (u16, Vec<TcpListener>, BTreeSet<(IpAddr, u16)>) {
    loop {
        let first_ip: IpAddr = addrs[0].parse().unwrap();
        let first = TcpListener::bind((first_ip, 0)).unwrap();
        let p = first.local_addr().unwrap().port();
        let mut ls = vec![first];
        let mut ok = true;
        for a in &addrs[1..] {
            match TcpListener::bind((a.parse::<IpAddr>().unwrap(), p)) {
                Ok(l) => ls.push(l),
                Err(_) => ok = false,
            }
        }
        if ok {
            let want = ls
                .iter()
                .map(|l| (l.local_addr().unwrap().ip(), p))
                .collect();
            return (p, ls, want);
        }
    }
}

/// Submits `spec`, waits (up to `limit`) until the job leaves Running, and reads its findings:
/// (final status, open set, number of findings).
pub async fn run_to_end(
    c: &mut Client,
    spec: v1::JobSpec,
    limit: Duration,
) -> (v1::JobStatus, BTreeSet<(IpAddr, u16)>, usize) {
    let id = client::submit(c, spec).await.unwrap().job_id;
    let mut last = String::new();
    let st = overlord_testkit::wait::wait_some(limit, "the job to end", async || {
        let s = client::get(c, id).await.unwrap();
        last = client::status_line(&s);
        (s.state != v1::JobState::Running as i32).then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    let mut open = BTreeSet::new();
    let mut n = 0;
    client::results(c, id, |f| {
        n += 1;
        open.insert((f.target.parse().unwrap(), f.port as u16));
    })
    .await
    .unwrap();
    (st, open, n)
}
