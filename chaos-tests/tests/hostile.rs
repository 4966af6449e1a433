//! Hostile parts against a secured coordinator (mTLS + API tokens), in-process over real
//! loopback sockets: anonymous and wrong-role clients, other owners, plaintext against TLS,
//! stolen identities, revoked minions, reused join tokens, reserved ids, half-open handshakes,
//! hostile job specs and file inputs. Each asserts the attack fails with the right status and
//! that nothing was stored.

use overlord_coordinator::security::{TlsSettings, pki, tokens};
use overlord_core::security::Role;
use overlord_proto::v1::{
    self, enroll_service_client::EnrollServiceClient, job_service_client::JobServiceClient,
    minion_service_client::MinionServiceClient,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

struct Cluster {
    _dir: tempfile::TempDir,
    ca_dir: PathBuf,
    running: overlord_coordinator::Running,
    admin: String,
    op_a: String,
    view_a: String,
    op_b: String,
    ca_pem: String,
}

async fn secured() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("pki");
    pki::init(&ca_dir, &[]).unwrap();
    let tf = dir.path().join("tokens.toml");
    let admin = tokens::add_token(&tf, "root", Role::Admin, None).unwrap();
    let op_a = tokens::add_token(&tf, "alice", Role::Operator, Some("team-a")).unwrap();
    let view_a = tokens::add_token(&tf, "bob", Role::Viewer, Some("team-a")).unwrap();
    let op_b = tokens::add_token(&tf, "carol", Role::Operator, Some("team-b")).unwrap();
    let mut s = overlord_coordinator::Settings::local(dir.path().join("data"));
    s.tls = Some(TlsSettings {
        ca_dir: ca_dir.clone(),
    });
    s.tokens = Some(tokens::Tokens::load(&tf).unwrap());
    s.limits.handshake_timeout_ms = 1000;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = overlord_coordinator::start(s, l).await.unwrap();
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap();
    Cluster {
        _dir: dir,
        ca_dir,
        running,
        admin,
        op_a,
        view_a,
        op_b,
        ca_pem,
    }
}

impl Cluster {
    async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.running.local_url())
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    async fn enroll(&self, id: &str, provider: &str) -> pki::Issued {
        let tok = pki::new_join_token(&self.ca_dir, id, provider, Duration::from_secs(60)).unwrap();
        self.enroll_with(&tok).await.expect("enrolled")
    }

    async fn enroll_with(&self, tok: &str) -> Result<pki::Issued, tonic::Status> {
        let csr = pki::make_csr().unwrap();
        let r = EnrollServiceClient::new(self.channel().await)
            .enroll(v1::EnrollRequest {
                join_token: tok.into(),
                csr_pem: csr.cert_pem,
            })
            .await?
            .into_inner();
        Ok(pki::Issued {
            cert_pem: r.cert_pem,
            key_pem: csr.key_pem,
        })
    }

    fn minion_settings(
        &self,
        id: &pki::Issued,
        claimed_id: &str,
    ) -> overlord_minion::MinionSettings {
        let mut s = overlord_minion::MinionSettings::local(
            &self.running.minion_url(),
            claimed_id,
            "claimed-provider",
            8,
        );
        s.modules = vec!["noop".into(), "beacon".into()];
        s.tls = Some(overlord_minion::config::ClientTls {
            ca_pem: self.ca_pem.clone(),
            cert_pem: id.cert_pem.clone(),
            key_pem: id.key_pem.clone(),
        });
        s.reconnect_max = Duration::from_millis(200);
        s
    }
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn noop_spec(count: u64) -> v1::JobSpec {
    v1::JobSpec {
        name: "noop".into(),
        targets: vec![],
        ports: String::new(),
        modules: vec!["noop".into()],
        params_json: format!("{{\"count\":{count},\"emit\":true}}"),
        ..Default::default()
    }
}

fn submit_req(spec: v1::JobSpec, rid: &str, token: &str) -> tonic::Request<v1::SubmitJobRequest> {
    with_token(
        v1::SubmitJobRequest {
            spec: Some(spec),
            request_id: rid.into(),
        },
        token,
    )
}

async fn all_jobs(c: &Cluster) -> Vec<v1::JobStatus> {
    c.jobs()
        .await
        .list_jobs(with_token(v1::ListJobsRequest {}, &c.admin))
        .await
        .unwrap()
        .into_inner()
        .jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_wrong_role_and_other_owner_clients_are_refused_and_nothing_is_stored() {
    let c = secured().await;
    let mut j = c.jobs().await;
    // Anonymous.
    let e = j
        .submit_job(v1::SubmitJobRequest {
            spec: Some(noop_spec(1)),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = j.list_jobs(v1::ListJobsRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let e = j
        .list_jobs(with_token(v1::ListJobsRequest {}, "ovl_forged"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    // A viewer may not submit or cancel.
    let e = j
        .submit_job(submit_req(noop_spec(1), "", &c.view_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        all_jobs(&c).await.is_empty(),
        "a refused submission stored nothing"
    );
    // The operator of team-a submits; team-a's viewer reads it; team-b sees nothing of it.
    let st = j
        .submit_job(submit_req(noop_spec(1), "", &c.op_a))
        .await
        .unwrap()
        .into_inner();
    let id = st.job_id;
    let got = j
        .get_job(with_token(v1::GetJobRequest { job_id: id }, &c.view_a))
        .await
        .unwrap();
    assert_eq!(got.into_inner().status.unwrap().job_id, id);
    let e = j
        .cancel_job(with_token(v1::CancelJobRequest { job_id: id }, &c.view_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    for call in ["get", "cancel", "results", "watch"] {
        let code = match call {
            "get" => j
                .get_job(with_token(v1::GetJobRequest { job_id: id }, &c.op_b))
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
            "cancel" => j
                .cancel_job(with_token(v1::CancelJobRequest { job_id: id }, &c.op_b))
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
            "results" => j
                .list_results(with_token(
                    v1::ListResultsRequest {
                        job_id: id,
                        after_cursor: 0,
                        limit: 10,
                    },
                    &c.op_b,
                ))
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
            _ => j
                .watch_job(with_token(
                    v1::WatchJobRequest {
                        job_id: id,
                        after_cursor: 0,
                    },
                    &c.op_b,
                ))
                .await
                .map(|_| ())
                .unwrap_err()
                .code(),
        };
        assert_eq!(code, tonic::Code::NotFound, "{call} by another owner");
    }
    let listed = j
        .list_jobs(with_token(v1::ListJobsRequest {}, &c.op_b))
        .await
        .unwrap()
        .into_inner()
        .jobs;
    assert!(listed.is_empty(), "team-b lists none of team-a's jobs");
    // The job is still running: team-b's cancel did nothing.
    let st = all_jobs(&c).await;
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, v1::JobState::Running as i32);
    // The same request id from another owner never returns the first owner's job.
    let first = j
        .submit_job(submit_req(noop_spec(1), "rid-1", &c.op_a))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let e = j
        .submit_job(submit_req(noop_spec(1), "rid-1", &c.op_b))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    // ... nor a different spec under the same id.
    let e = j
        .submit_job(submit_req(noop_spec(2), "rid-1", &c.op_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    let again = j
        .submit_job(submit_req(noop_spec(1), "rid-1", &c.op_a))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    assert_eq!(again, first, "an honest retry gets its job");
    assert_eq!(all_jobs(&c).await.len(), 2);
    c.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_specs_get_precise_short_errors() {
    let c = secured().await;
    let mut j = c.jobs().await;
    let mut spec = noop_spec(1);
    spec.modules = vec!["portscan".into()];
    spec.targets = vec!["127.0.0.1".into()];
    spec.ports = "-1".into();
    let e = j
        .submit_job(submit_req(spec.clone(), "", &c.op_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("-1"), "{}", e.message());
    spec.ports = "80".into();
    spec.targets = vec!["x".repeat(900_000)];
    let e = j
        .submit_job(submit_req(spec, "", &c.op_a))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().len() < 1000,
        "the target is not echoed: {} bytes",
        e.message().len()
    );
    assert!(all_jobs(&c).await.is_empty());
    c.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_never_reaches_a_tls_coordinator_and_https_never_falls_back() {
    let c = secured().await;
    let plain = c.running.local_url().replace("https://", "http://");
    // Plaintext HTTP/2 to the TLS port: the call fails, nothing is stored.
    let r = async {
        let ch = Endpoint::from_shared(plain.clone())?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await?;
        JobServiceClient::new(ch)
            .submit_job(submit_req(noop_spec(1), "", &c.admin))
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error>)
    }
    .await;
    assert!(r.is_err(), "plaintext call succeeded");
    // An https:// URL without TLS configured does not connect in the clear.
    let r = Endpoint::from_shared(c.running.local_url())
        .unwrap()
        .connect()
        .await;
    assert!(r.is_err(), "https without TLS config connected");
    assert!(all_jobs(&c).await.is_empty());
    c.running.shutdown().await;
}

async fn raw_session(
    c: &Cluster,
    ident: Option<&pki::Issued>,
    reg: v1::Register,
) -> Result<tonic::Streaming<v1::CoordinatorMessage>, tonic::Status> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&c.ca_pem));
    if let Some(i) = ident {
        tls = tls.identity(Identity::from_pem(&i.cert_pem, &i.key_pem));
    }
    let ch = Endpoint::from_shared(c.running.minion_url())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(v1::MinionMessage {
        msg: Some(v1::minion_message::Msg::Register(reg)),
    })
    .await
    .unwrap();
    // Keep the stream open while the caller looks at the answer.
    std::mem::forget(tx);
    let mut s = MinionServiceClient::new(ch)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    match s.message().await? {
        Some(_) => Ok(s),
        None => Err(tonic::Status::unknown("session ended")),
    }
}

fn register(id: &str, modules: &[&str]) -> v1::Register {
    v1::Register {
        minion_id: id.into(),
        incarnation: "x".into(),
        provider: "rogue".into(),
        capabilities: vec![],
        modules: modules.iter().map(|m| m.to_string()).collect(),
        capacity: 64,
        version: "0".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_comes_from_the_certificate_and_cannot_be_stolen_or_reused() {
    let c = secured().await;
    // No certificate: refused before registering.
    let e = raw_session(&c, None, register("minion-a", &["noop"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // A join token works once.
    let tok = pki::new_join_token(&c.ca_dir, "minion-a", "lab-a", Duration::from_secs(60)).unwrap();
    let a = c.enroll_with(&tok).await.unwrap();
    let e = c.enroll_with(&tok).await.err().expect("second use refused");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = c.enroll_with("abc.def").await.err().expect("forged token");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    // The real minion-a runs under its certificate's identity even though it claims another.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let settings = c.minion_settings(&a, "i-am-someone-else");
    let m = tokio::spawn(overlord_minion::run(
        settings,
        overlord_minion::modules::builtin(),
        async move {
            let _ = stopped.await;
        },
    ));
    let gate = c.running.gate.clone();
    overlord_chaos_tests::wait::wait_until(Duration::from_secs(10), "minion-a live", || {
        let g = gate.clone();
        async move { g.live_ids().contains(&"minion-a".to_string()) }
    })
    .await
    .unwrap();
    assert!(!gate.live_ids().contains(&"i-am-someone-else".to_string()));
    let mut j = c.jobs().await;
    let id = j
        .submit_job(submit_req(noop_spec(4), "", &c.op_a))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    overlord_chaos_tests::wait::wait_until(Duration::from_secs(20), "noop job done", || {
        let c = &c;
        async move {
            all_jobs(c)
                .await
                .iter()
                .any(|s| s.job_id == id && s.state == v1::JobState::Completed as i32)
        }
    })
    .await
    .unwrap();
    let page = j
        .list_results(with_token(
            v1::ListResultsRequest {
                job_id: id,
                after_cursor: 0,
                limit: 100,
            },
            &c.view_a,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.findings.is_empty());
    assert!(
        page.findings
            .iter()
            .all(|f| f.minion_id == "minion-a" && f.provider == "lab-a"),
        "findings carry the certified identity"
    );
    // A second session with minion-a's own key while it is live: refused.
    let e = raw_session(&c, Some(&a), register("minion-a", &["noop"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    // Revocation cuts minion-a off within seconds, and it stays off.
    let t0 = Instant::now();
    assert_eq!(pki::revoke(&c.ca_dir, "minion-a").unwrap(), 1);
    overlord_chaos_tests::wait::wait_until(Duration::from_secs(5), "revoked minion gone", || {
        let g = gate.clone();
        async move { !g.live_ids().contains(&"minion-a".to_string()) }
    })
    .await
    .unwrap();
    let cut = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !gate.live_ids().contains(&"minion-a".to_string()),
        "a revoked minion does not come back"
    );
    let e = raw_session(&c, Some(&a), register("minion-a", &["noop"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    eprintln!("revocation took effect after {cut:?}");
    let _ = stop.send(());
    let _ = m.await;
    c.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_minion_can_claim_the_coordinators_lookup_work() {
    // Plaintext loopback coordinator: a rogue without a certificate tries the reserved id and
    // the reserved module.
    let dir = tempfile::tempdir().unwrap();
    let s = overlord_coordinator::Settings::local(dir.path().join("data"));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = overlord_coordinator::start(s, l).await.unwrap();
    for (id, modules) in [
        ("coordinator-lookup", vec!["leak"]),
        ("coordinator-lookup", vec!["noop"]),
        ("rogue", vec!["leak"]),
    ] {
        let ch = Endpoint::from_shared(running.minion_url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.send(v1::MinionMessage {
            msg: Some(v1::minion_message::Msg::Register(register(id, &modules))),
        })
        .await
        .unwrap();
        let r = MinionServiceClient::new(ch)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let e = match r {
            Err(e) => e,
            Ok(s) => s.into_inner().message().await.unwrap_err(),
        };
        assert_eq!(
            e.code(),
            tonic::Code::PermissionDenied,
            "{id} {modules:?}: {e:?}"
        );
        drop(tx);
    }
    // The lookup is not a minion at all: the coordinator runs `leak` tasks itself (never leased).
    assert!(
        running.gate.live_ids().is_empty(),
        "{:?}",
        running.gate.live_ids()
    );
    running.shutdown().await;
}

fn raise_nofile(n: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(n.max(r.rlim_cur));
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_preface_connections_are_closed_and_others_still_served() {
    raise_nofile(16_384);
    let dir = tempfile::tempdir().unwrap();
    let mut s = overlord_coordinator::Settings::local(dir.path().join("data"));
    s.limits.handshake_timeout_ms = 1000;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = overlord_coordinator::start(s, l).await.unwrap();
    const N: usize = 3000;
    let mut conns = Vec::with_capacity(N);
    for _ in 0..N {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::net::TcpStream::connect(running.addr).await.unwrap();
        c.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(); // half of the 24-byte preface
        conns.push(c);
    }
    let t0 = Instant::now();
    let closed = futures_closed(conns, Duration::from_secs(15)).await;
    eprintln!(
        "{closed}/{N} half-preface connections closed after {:?}",
        t0.elapsed()
    );
    assert_eq!(closed, N, "every half-open handshake was closed");
    // A real client is served.
    let mut j = JobServiceClient::new(
        Endpoint::from_shared(running.local_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    j.list_jobs(v1::ListJobsRequest {}).await.unwrap();
    running.shutdown().await;
}

/// How many of `conns` the server closes (EOF or reset) within `within`.
async fn futures_closed(conns: Vec<tokio::net::TcpStream>, within: Duration) -> usize {
    let mut set = tokio::task::JoinSet::new();
    for mut c in conns {
        set.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 256];
            let deadline = tokio::time::Instant::now() + within;
            loop {
                match tokio::time::timeout_at(deadline, c.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue, // the server's SETTINGS frame
                    Err(_) => return false,
                }
            }
        });
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        n += usize::from(r.unwrap_or(false));
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_inputs_outside_the_input_dir_devices_and_fifos_are_refused() {
    let c = secured().await;
    let inputs = c._dir.path().join("inputs");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(c._dir.path().join("secret.txt"), "TOP SECRET LINE\n").unwrap();
    std::os::unix::fs::symlink(c._dir.path().join("secret.txt"), inputs.join("link.log")).unwrap();
    let a = c.enroll("minion-in", "lab").await;
    let mut settings = c.minion_settings(&a, "minion-in");
    settings.input_dir = Some(std::fs::canonicalize(&inputs).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let m = tokio::spawn(overlord_minion::run(
        settings,
        overlord_minion::modules::builtin(),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut j = c.jobs().await;
    let spec = v1::JobSpec {
        name: "hostile inputs".into(),
        modules: vec!["beacon".into()],
        inputs: vec![
            "/etc/shadow".into(),
            "../secret.txt".into(),
            "link.log".into(),
            "/dev/zero".into(),
        ],
        ..Default::default()
    };
    let id = j
        .submit_job(submit_req(spec, "", &c.op_a))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let t0 = Instant::now();
    let st = loop {
        let st = all_jobs(&c)
            .await
            .into_iter()
            .find(|s| s.job_id == id)
            .unwrap();
        if st.state != v1::JobState::Running as i32 {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "job did not finish: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(st.tasks_failed, 4, "{st:?}");
    assert_eq!(st.findings, 0, "nothing read, nothing stored");
    let _ = stop.send(());
    let _ = m.await;
    c.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_minions_forged_findings_are_rejected_and_it_is_quarantined() {
    use v1::coordinator_message::Msg as CMsg;
    use v1::minion_message::Msg as MMsg;
    let c = secured().await;
    let rogue = c.enroll("rogue-1", "evil").await;
    let mut j = c.jobs().await;
    let spec = v1::JobSpec {
        name: "bait".into(),
        targets: vec!["127.0.0.1".into()],
        ports: "1-10".into(),
        modules: vec!["portscan".into()],
        ..Default::default()
    };
    let id = j
        .submit_job(submit_req(spec, "", &c.op_a))
        .await
        .unwrap()
        .into_inner()
        .job_id;
    // The rogue registers for portscan and answers every lease with forged findings; each
    // violation closes its session, it reconnects, until it is quarantined.
    let forged = [
        ("open_port", "10.9.9.9", 5),     // out of the task's target
        ("leak", "127.0.0.1", 5),         // a kind portscan never produces
        ("open_port", "127.0.0.1", 9999), // a port the task did not scan
    ];
    let mut ends = Vec::new();
    let mut quarantined = None;
    // Three violations within the strike window quarantine it. Not every round earns a strike:
    // on a loaded machine a reconnect can find its previous session not yet cleaned up, or the
    // task still waiting out its retry delay; a round is cheap, so allow many (the assertion is
    // unchanged: it must end quarantined, and nothing forged may be stored).
    let t0 = std::time::Instant::now();
    for round in 0..24 {
        if t0.elapsed() > Duration::from_secs(50) {
            break; // stay inside the 60 s strike window
        }
        let ch = Endpoint::from_shared(c.running.minion_url())
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&c.ca_pem))
                    .identity(Identity::from_pem(&rogue.cert_pem, &rogue.key_pem)),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut reg = register("rogue-1", &["portscan"]);
        reg.capabilities = vec!["scan".into()];
        tx.send(v1::MinionMessage {
            msg: Some(MMsg::Register(reg)),
        })
        .await
        .unwrap();
        let opened = MinionServiceClient::new(ch)
            .session(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await;
        let mut inbound = match opened {
            Ok(s) => s.into_inner(),
            Err(st) => {
                quarantined = Some(st);
                break;
            }
        };
        let end = loop {
            let m = match tokio::time::timeout(Duration::from_secs(15), inbound.message()).await {
                Ok(Ok(Some(m))) => m,
                Ok(Ok(None)) => break tonic::Status::ok("ended"),
                Ok(Err(st)) => break st,
                Err(_) => panic!("round {round}: the rogue's session was never closed"),
            };
            match m.msg {
                Some(CMsg::Leases(b)) => {
                    for l in b.leases {
                        let (kind, target, port) = forged[round % forged.len()];
                        let _ = tx
                            .send(v1::MinionMessage {
                                msg: Some(MMsg::Results(v1::ResultBatch {
                                    items: vec![v1::TaskResult {
                                        job_id: l.job_id,
                                        task_id: l.task_id,
                                        token: l.token,
                                        ok: true,
                                        findings: vec![v1::FindingOut {
                                            kind: kind.into(),
                                            target: target.into(),
                                            port,
                                            data_json: "{}".into(),
                                            blob: vec![],
                                            schema_version: overlord_core::finding::SCHEMA_VERSION,
                                        }],
                                        ..Default::default()
                                    }],
                                })),
                            })
                            .await;
                    }
                }
                Some(CMsg::Ack(a)) => {
                    assert!(
                        a.items.iter().all(|i| !i.accepted),
                        "a forged finding was accepted"
                    );
                }
                _ => {}
            }
        };
        ends.push(end);
        if ends
            .last()
            .is_some_and(|e| e.message().contains("quarantined"))
        {
            // Closed by the quarantine itself: the next attempt must be refused.
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let q = quarantined.expect("the rogue was never quarantined");
    assert_eq!(q.code(), tonic::Code::PermissionDenied, "{q:?}");
    assert!(q.message().contains("quarantined"), "{q:?}");
    assert!(
        ends.iter()
            .any(|e| e.message().contains("rejected finding")),
        "the sessions were closed naming the violation: {ends:?}"
    );
    // Nothing forged was stored, and the rogue cannot come back for now.
    let st = all_jobs(&c)
        .await
        .into_iter()
        .find(|s| s.job_id == id)
        .unwrap();
    assert_eq!(st.findings, 0, "{st:?}");
    assert_eq!(st.tasks_done, 0, "{st:?}");
    let e = raw_session(&c, Some(&rogue), register("rogue-1", &["portscan"]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("quarantined"), "{}", e.message());
    c.running.shutdown().await;
}
