//! Bad input at the edges: invalid job specs, oversized requests, floods of submit and watch calls,
//! garbage bytes and malformed protobuf from a would-be minion. Each gets a precise gRPC status, memory
//! stays bounded, and nothing else is disturbed (a job running meanwhile completes with every invariant).

use std::time::Duration;

use overlord_chaos_tests::client::{self, WatchOptions};
use overlord_chaos_tests::faults::FaultKind;
use overlord_chaos_tests::figures::Figures;
use overlord_chaos_tests::garbage::{
    self, grpc_call_raw, grpc_frame, grpc_frame_declared, malformed_protobufs,
};
use overlord_chaos_tests::ledger::{Ledger, LedgerSpec, loopback_ips};
use overlord_chaos_tests::rng::Rng;
use overlord_chaos_tests::rogue::{RogueIdentity, RogueMinion};
use overlord_chaos_tests::sandbox::ClusterBuilder;
use overlord_chaos_tests::verify::{verify_job, wait_terminal};
use overlord_proto::v1::minion_message::Msg as MinionMsg;
use overlord_proto::v1::{
    GetJobRequest, Heartbeat, ListJobsRequest, MinionMessage, WatchJobRequest,
};
use tonic::Code;

const SUBMIT: &str = "/overlord.v1.JobService/SubmitJob";
const SESSION: &str = "/overlord.v1.MinionService/Session";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_precise_status_bounded_memory_and_disturbs_nothing() {
    let mut figs = Figures::new("edges", None);
    let mut rng = Rng::new(11);
    // Real minions without `noop`: noop tasks go only to the hand-driven (hostile) minions below.
    let mut b = ClusterBuilder::new("edges", &[1, 1], 8);
    b.minion_extra = r#"modules = ["portscan", "banner"]"#.into();
    let cl = b.start().await.expect("cluster");
    let addr = cl.coordinator_addr();
    let mut c = cl.jobs();
    let mut violations: Vec<String> = Vec::new();
    // A job runs the whole time; it must complete untouched.
    let ips = loopback_ips(&mut rng, 8);
    let ledger = Ledger::dense(
        &LedgerSpec {
            ips,
            ports: 4,
            open_ratio: 0.4,
            banner: false,
            cidr: None,
        },
        &mut rng,
    )
    .await
    .expect("ledger");
    let mut spec = client::scan_spec(
        "bystander",
        ledger.targets(),
        ledger.ports_arg(),
        &["portscan"],
    );
    spec.rate_limit = 20; // ~1.6 s: it runs during the abuse below
    let bystander = client::submit(&mut c, spec)
        .await
        .expect("submit bystander");
    let watch = tokio::spawn(client::resumable_watch(
        cl.url(),
        bystander.job_id,
        WatchOptions::default(),
    ));
    let rss0 = cl.coordinator_rss().unwrap_or(0);
    figs.observe_rss(Some(rss0));
    let jobs_before = c
        .list_jobs(ListJobsRequest {})
        .await
        .expect("list")
        .into_inner()
        .jobs
        .len();

    // 1. Invalid specs: precise codes, the offending input named, nothing persisted.
    let bad = |targets: &[&str], ports: &str, modules: &[&str]| {
        client::scan_spec(
            "bad",
            targets.iter().map(|s| s.to_string()).collect(),
            ports.into(),
            modules,
        )
    };
    let cases = [
        (
            "malformed target",
            bad(&["127.0.0.300"], "80", &["portscan"]),
            vec![Code::InvalidArgument],
            "127.0.0.300",
        ),
        (
            "out-of-scope target",
            bad(&["192.0.2.1"], "80", &["portscan"]),
            vec![Code::PermissionDenied],
            "192.0.2.1",
        ),
        (
            "port out of range",
            bad(&["127.0.0.2"], "70000", &["portscan"]),
            vec![Code::InvalidArgument],
            "70000",
        ),
        (
            "reversed range",
            bad(&["127.0.0.2"], "90-80", &["portscan"]),
            vec![Code::InvalidArgument],
            "90",
        ),
        (
            "unknown module",
            bad(&["127.0.0.2"], "80", &["warpdrive"]),
            vec![Code::InvalidArgument],
            "portscan",
        ),
        (
            "no module",
            bad(&["127.0.0.2"], "80", &[]),
            vec![Code::InvalidArgument],
            "portscan",
        ),
        (
            "no target",
            bad(&[], "80", &["portscan"]),
            vec![Code::InvalidArgument],
            "target",
        ),
    ];
    for (what, spec, want, mention) in cases {
        let r = client::submit(&mut c, spec).await.map(|_| ());
        expect_status(&mut violations, what, r, &want, mention);
    }
    let r = c
        .submit_job(overlord_proto::v1::SubmitJobRequest {
            spec: None,
            ..Default::default()
        })
        .await
        .map(|_| ());
    expect_status(
        &mut violations,
        "missing spec",
        r,
        &[Code::InvalidArgument],
        "spec",
    );
    let r = c
        .get_job(GetJobRequest {
            job_id: 987_654_321,
        })
        .await
        .map(|_| ());
    expect_status(
        &mut violations,
        "unknown job",
        r,
        &[Code::NotFound],
        "987654321",
    );
    let r = match c
        .watch_job(WatchJobRequest {
            job_id: 987_654_321,
            after_cursor: 0,
        })
        .await
    {
        Ok(mut s) => s.get_mut().message().await.map(|_| ()),
        Err(e) => Err(e),
    };
    expect_status(
        &mut violations,
        "watch unknown job",
        r,
        &[Code::NotFound],
        "987654321",
    );
    let jobs_after = c
        .list_jobs(ListJobsRequest {})
        .await
        .expect("list")
        .into_inner()
        .jobs
        .len();
    if jobs_after != jobs_before {
        violations.push(format!(
            "invalid submissions persisted jobs: {jobs_before} → {jobs_after}"
        ));
    }

    // 2. Oversized requests: a message above the limit, and a length prefix that lies (4 GiB) with
    //    no body — the server must refuse without allocating it.
    let huge_targets: Vec<String> = (0..2_500_000)
        .map(|i| format!("127.1.{}.{}", (i / 250) % 250, i % 250 + 1))
        .collect();
    let mut big = client::job_client(&cl.url()).max_encoding_message_size(usize::MAX);
    let r = big.submit_job(overlord_proto::v1::SubmitJobRequest {
        spec: Some(client::scan_spec(
            "huge",
            huge_targets,
            "80".into(),
            &["portscan"],
        )),
        ..Default::default()
    });
    let r = r.await.map(|_| ());
    expect_status(
        &mut violations,
        "oversized SubmitJob (~40 MB)",
        r,
        &[
            Code::OutOfRange,
            Code::ResourceExhausted,
            Code::InvalidArgument,
        ],
        "",
    );
    for path in [SUBMIT, SESSION] {
        match grpc_call_raw(
            addr,
            path,
            grpc_frame_declared(b"", u32::MAX),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(reply) => {
                let code = reply.grpc_status.map(Code::from);
                if !matches!(
                    code,
                    Some(
                        Code::OutOfRange
                            | Code::ResourceExhausted
                            | Code::Internal
                            | Code::InvalidArgument
                    )
                ) {
                    violations.push(format!("{path} with a 4 GiB length prefix: {reply:?}"));
                }
            }
            Err(e) => violations.push(format!(
                "{path} with a 4 GiB length prefix: no gRPC answer: {e}"
            )),
        }
        figs.fault(FaultKind::MalformedProtobuf);
    }

    // 3. Malformed protobuf in well-formed gRPC calls, to the client API and to the minion session.
    for (what, payload) in malformed_protobufs() {
        for path in [SUBMIT, SESSION] {
            figs.fault(FaultKind::MalformedProtobuf);
            match grpc_call_raw(addr, path, grpc_frame(&payload), Duration::from_secs(10)).await {
                Ok(reply) => {
                    let code = reply.grpc_status.map(Code::from);
                    // tonic reports undecodable messages as Internal; InvalidArgument is as precise.
                    if !matches!(code, Some(Code::Internal | Code::InvalidArgument)) {
                        violations.push(format!("{path} {what}: {reply:?}"));
                    }
                }
                Err(e) => violations.push(format!("{path} {what}: no gRPC answer: {e}")),
            }
        }
    }

    // 4. Garbage bytes on the port: the connection is closed, nothing else notices.
    let mut junk = vec![0u8; 64 * 1024];
    for (i, b) in junk.iter_mut().enumerate() {
        *b = (rng.next_u64() as u8) ^ (i as u8);
    }
    for g in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &junk[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff",
    ] {
        figs.fault(FaultKind::GarbageBytes);
        match garbage::send_raw(addr, g, Duration::from_secs(5)).await {
            Ok(o) if o.closed => {}
            Ok(o) => violations.push(format!(
                "garbage of {} bytes: connection left open ({o:?})",
                g.len()
            )),
            Err(e) => violations.push(format!("garbage: {e}")),
        }
    }

    // 5. A minion breaking the protocol over a real session: heartbeat before register, then a
    //    register with an empty id. Each session must end with a precise status.
    {
        let ch = tonic::transport::Endpoint::from_shared(cl.url())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let mut mc = overlord_proto::v1::minion_service_client::MinionServiceClient::new(ch);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(MinionMessage {
            msg: Some(MinionMsg::Heartbeat(Heartbeat {
                running: 0,
                held_tokens: vec![],
            })),
        })
        .await
        .unwrap();
        let r = match mc
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
        {
            Ok(s) => {
                let mut s = s.into_inner();
                tokio::time::timeout(Duration::from_secs(10), s.message())
                    .await
                    .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer in 10 s")))
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        expect_status(
            &mut violations,
            "heartbeat before register",
            r,
            &[Code::FailedPrecondition, Code::InvalidArgument],
            "register",
        );
        figs.fault(FaultKind::MalformedProtobuf);
    }
    {
        let who = RogueIdentity {
            id: String::new(),
            ..RogueIdentity::scanner("", "px", 1)
        };
        match RogueMinion::connect(&cl.url(), &who, None).await {
            Ok(m) => {
                let _ = overlord_chaos_tests::wait::wait_until(
                    Duration::from_secs(10),
                    "session closed",
                    || async { m.log().closed.is_some() },
                )
                .await;
                let closed = m.log().closed.clone();
                match closed {
                    Some((_, msg)) if msg.starts_with("InvalidArgument") => {}
                    other => violations.push(format!(
                        "register with empty id: {other:?} (want InvalidArgument)"
                    )),
                }
                if m.generation().is_some() {
                    violations.push("register with empty id was accepted".into());
                }
            }
            Err(e) => match e.downcast_ref::<tonic::Status>() {
                Some(s) if s.code() == Code::InvalidArgument => {}
                _ => violations.push(format!(
                    "register with empty id: {e:#} (want InvalidArgument)"
                )),
            },
        }
        figs.fault(FaultKind::MalformedProtobuf);
    }

    // 6. Malformed results from a minion holding real leases: the bad result is rejected, the session
    //    closed with InvalidArgument, the task re-leased; an over-limit message ends the session; an
    //    honest minion then completes the job.
    {
        let mut nc = cl.jobs();
        let spec = overlord_proto::v1::JobSpec {
            name: "noop-for-rogues".into(),
            modules: vec!["noop".into()],
            params_json: r#"{"count": 4}"#.into(),
            ..Default::default()
        };
        let job = client::submit(&mut nc, spec).await.expect("noop job");
        let job_id = job.job_id;
        let hostile = [
            ("malformed JSON in a finding", 0usize),
            ("finding target not an IP", 1),
            ("40 MiB blob (over the message limit)", 2),
        ];
        for (what, how) in hostile {
            figs.fault(FaultKind::MalformedProtobuf);
            let who = RogueIdentity::noop(&format!("hostile-{how}"), "px", 4);
            let r = match RogueMinion::connect(&cl.url(), &who, Some(Duration::from_millis(200)))
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    violations.push(format!("{what}: cannot connect: {e:#}"));
                    continue;
                }
            };
            let got = overlord_chaos_tests::wait::wait_until(
                Duration::from_secs(10),
                "hostile minion leased",
                || async { r.leases().iter().any(|l| l.job_id == job_id) },
            )
            .await;
            if got.is_err() {
                let st = client::get(&mut nc, job_id).await;
                violations.push(format!(
                    "{what}: the hostile minion never got a lease (generation {:?}, session end {:?}); job: {st:?}",
                    r.generation(),
                    r.log().closed
                ));
                continue;
            }
            let lease = r.leases().into_iter().find(|l| l.job_id == job_id).unwrap();
            let mut res = overlord_chaos_tests::rogue::empty_result(&lease);
            let mut bad = overlord_proto::v1::FindingOut {
                kind: "open_port".into(),
                ..Default::default()
            };
            match how {
                0 => bad.data_json = "{not json".into(),
                1 => bad.target = "not-an-ip".into(),
                _ => bad.blob = vec![0x42; 40 << 20],
            }
            res.findings.push(bad);
            let _ = r.send(vec![res]).await;
            let _ = overlord_chaos_tests::wait::wait_until(
                Duration::from_secs(10),
                "hostile session closed",
                || async { r.log().closed.is_some() },
            )
            .await;
            let closed = r.log().closed.clone().map(|(_, m)| m);
            let accepted = r.log().acks.iter().any(|(_, a)| a.accepted);
            if accepted {
                violations.push(format!("{what}: the malformed result was accepted"));
            }
            match (how, closed) {
                (0 | 1, Some(m)) if m.starts_with("InvalidArgument") => {}
                (2, Some(m)) if !m.starts_with("Ok") => eprintln!("{what}: session ended with {m}"),
                (_, other) => violations.push(format!(
                    "{what}: session end {other:?}, want InvalidArgument"
                )),
            }
            figs.observe_rss(cl.coordinator_rss());
        }
        // An honest minion finishes the job; nothing malformed was stored.
        let mut honest = RogueMinion::connect(
            &cl.url(),
            &RogueIdentity::noop("honest", "px", 8),
            Some(Duration::from_millis(200)),
        )
        .await
        .expect("honest minion");
        let mut sent = std::collections::BTreeSet::new();
        let done = overlord_chaos_tests::wait::wait_until(
            Duration::from_secs(30),
            "noop job done by the honest minion",
            || {
                let fresh: Vec<_> = honest
                    .leases()
                    .into_iter()
                    .filter(|l| l.job_id == job_id && !sent.contains(&l.token))
                    .collect();
                for l in &fresh {
                    sent.insert(l.token);
                }
                let send = honest.send(
                    fresh
                        .iter()
                        .map(overlord_chaos_tests::rogue::empty_result)
                        .collect(),
                );
                let mut nc = nc.clone();
                async move {
                    let _ = send.await;
                    client::get(&mut nc, job_id)
                        .await
                        .map(|s| client::is_terminal(&s))
                        .unwrap_or(false)
                }
            },
        )
        .await;
        if let Err(e) = done {
            violations.push(format!("noop job after hostile minions: {e}"));
        }
        honest.hang_up();
        let v = verify_job(&mut nc, job_id, None, None, &mut figs)
            .await
            .expect("verify noop job");
        violations.extend(v.violations);
        let stored = client::all_results(&mut nc, job_id).await.expect("results");
        if !stored.is_empty() {
            violations.push(format!(
                "noop job has {} stored findings, want 0",
                stored.len()
            ));
        }
    }

    // 7. Floods: 300 concurrent submissions of small valid jobs, 1,000 concurrent watch streams.
    let mut floods = tokio::task::JoinSet::new();
    for i in 0..300 {
        let mut c = client::job_client(&cl.url());
        let target = ledger.targets()[i % ledger.targets().len()].clone();
        floods.spawn(async move {
            let r = client::submit(
                &mut c,
                client::scan_spec("flood", vec![target], "1".into(), &["portscan"]),
            )
            .await;
            r.map(|s| s.job_id).map_err(|e| e.code())
        });
    }
    let mut flood_ok = Vec::new();
    while let Some(r) = floods.join_next().await {
        match r.expect("join") {
            Ok(id) => flood_ok.push(id),
            Err(Code::ResourceExhausted | Code::Unavailable) => {}
            Err(code) => violations.push(format!("submit flood: unexpected {code:?}")),
        }
    }
    let mut watchers = Vec::new();
    for k in 0..10 {
        let ch = tonic::transport::Endpoint::from_shared(cl.url())
            .unwrap()
            .connect()
            .await
            .expect("connect");
        for _ in 0..100 {
            let mut wc = overlord_proto::v1::job_service_client::JobServiceClient::new(ch.clone());
            let job = bystander.job_id;
            watchers.push(tokio::spawn(async move {
                // Open the stream and read nothing: the slowest possible subscriber.
                let s = tokio::time::timeout(
                    Duration::from_secs(5),
                    wc.watch_job(WatchJobRequest {
                        job_id: job,
                        after_cursor: 0,
                    }),
                )
                .await;
                tokio::time::sleep(Duration::from_secs(4 + k % 2)).await;
                match s {
                    Ok(s) => s.map(|_| ()).map_err(|e| e.code()),
                    Err(_) => Ok(()), // the client queued the stream (HTTP/2 stream limit): bounded too
                }
            }));
        }
    }
    figs.fault(FaultKind::SlowWatcher);
    // While flooded, the coordinator still answers promptly.
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        c.get_job(GetJobRequest {
            job_id: bystander.job_id,
        }),
    )
    .await;
    if !matches!(r, Ok(Ok(_))) {
        violations.push(format!(
            "GetJob during the watch flood failed or took > 3 s ({:?})",
            t.elapsed()
        ));
    }
    figs.observe_rss(cl.coordinator_rss());
    for w in watchers {
        match w.await.expect("join") {
            Ok(()) | Err(Code::ResourceExhausted | Code::Unavailable) => {}
            Err(code) => violations.push(format!("watch flood: unexpected {code:?}")),
        }
    }

    // Nothing else disturbed: the bystander job and the accepted flood jobs complete, invariants hold.
    wait_terminal(&c, bystander.job_id, Duration::from_secs(60))
        .await
        .expect("bystander terminal");
    let log = watch.await.expect("watch");
    let v = verify_job(
        &mut c,
        bystander.job_id,
        Some(&ledger),
        Some(&log),
        &mut figs,
    )
    .await
    .expect("verify");
    violations.extend(v.violations);
    for id in flood_ok {
        if let Err(e) = wait_terminal(&c, id, Duration::from_secs(60)).await {
            violations.push(format!("flood job {id}: {e}"));
        }
    }
    figs.observe_rss(cl.coordinator_rss());
    let rss_max = figs.coordinator_rss_max.unwrap_or(0);
    if rss_max > rss0 + 512 * (1 << 20) {
        violations.push(format!(
            "coordinator RSS grew from {rss0} to {rss_max} bytes under abuse"
        ));
    }
    let mut cl = cl;
    violations.extend(cl.crashed());
    eprintln!("{figs}");
    assert!(
        violations.is_empty(),
        "edge violations:\n  {}",
        violations.join("\n  ")
    );
}

fn expect_status(
    v: &mut Vec<String>,
    what: &str,
    got: Result<(), tonic::Status>,
    want: &[Code],
    must_mention: &str,
) {
    match got {
        Ok(()) => v.push(format!("{what}: accepted, want {want:?}")),
        Err(s) if !want.contains(&s.code()) => v.push(format!(
            "{what}: got {:?} ({}), want {want:?}",
            s.code(),
            s.message()
        )),
        Err(s)
            if !s
                .message()
                .to_lowercase()
                .contains(&must_mention.to_lowercase()) =>
        {
            v.push(format!(
                "{what}: message {:?} does not name {must_mention:?}",
                s.message()
            ))
        }
        Err(_) => {}
    }
}
