//! The index and the answers over it, on a real on-disk tantivy index in a temp dir.

use overlord_query::index::QueryIndex;
use overlord_query::search::{ChangeKind, Engine, QueryError, SearchRequest, View, parse_facet};
use overlord_query::state::{ExtValue, Http, Observation, Provenance, Screen, Tls};
use std::sync::Arc;
use std::time::Duration;

const DAY: u64 = 86_400_000;
/// 2026-11-01T00:00:00Z
const NOV1: u64 = 1_793_491_200_000;

fn prov(job: u64, cursor: u64, ip: &str, port: u16, module: &str, at: u64) -> Provenance {
    Provenance {
        job,
        cursor,
        ip: Some(ip.parse().unwrap()),
        port,
        module: module.into(),
        minion: format!("m-{}", port % 2),
        provider: if port % 2 == 0 {
            "a".into()
        } else {
            "b".into()
        },
        at_ms: at,
    }
}

fn svc(product: &str, version: &str, banner: &str) -> Observation {
    Observation {
        open: Some(true),
        service: Some("http".into()),
        product: Some(product.into()),
        version: Some(version.into()),
        banner: Some(banner.into()),
        ..Default::default()
    }
}

/// Job 1 (Oct 30) and job 2 (Nov 2) over 127.0.0.0/24 and 127.0.1.0/24.
fn corpus(idx: &QueryIndex) {
    let mut b = vec![];
    let t1 = NOV1 - 2 * DAY;
    let t2 = NOV1 + DAY;
    // job 1
    b.push((
        prov(1, 1, "127.0.0.1", 80, "portscan", t1),
        Observation {
            open: Some(true),
            ..Default::default()
        },
    ));
    b.push((
        prov(1, 2, "127.0.0.1", 80, "service", t1),
        svc("nginx", "1.24.0", "HTTP/1.1 200 OK Server: nginx"),
    ));
    b.push((
        prov(1, 3, "127.0.0.1", 22, "service", t1),
        Observation {
            open: Some(true),
            service: Some("ssh".into()),
            product: Some("OpenSSH".into()),
            version: Some("9.2p1".into()),
            banner: Some("SSH-2.0-OpenSSH_9.2p1 Debian".into()),
            ..Default::default()
        },
    ));
    b.push((
        prov(1, 4, "127.0.0.2", 8080, "service", t1),
        svc("Apache httpd", "2.4.57", "Apache default page"),
    ));
    b.push((
        prov(1, 5, "127.0.1.9", 5900, "screenshot", t1),
        Observation {
            open: Some(true),
            screen: Some(Screen {
                image: Some("ab".repeat(32)),
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    b.push((
        prov(1, 6, "127.0.1.9", 5900, "enrich", t1),
        Observation {
            screen: Some(Screen {
                text: Some("PLANT ALARM acknowledged".into()),
                faces: Some(2),
                tags: vec!["login_prompt".into()],
                emails: vec!["Ops@Example.com".into()],
                ..Default::default()
            }),
            ..Default::default()
        },
    ));
    b.push((
        prov(1, 7, "127.0.0.3", 443, "service", t1),
        Observation {
            open: Some(true),
            service: Some("ssl/http".into()),
            product: Some("nginx".into()),
            tls: Some(Tls {
                subject: "CN=old.example".into(),
                issuer: "CN=old.example".into(),
                expired: true,
                self_signed: true,
                sha256: "11".into(),
                not_after: 0,
            }),
            http: Some(Http {
                title: Some("Router Login".into()),
                status: Some(200),
                server: Some("nginx".into()),
            }),
            ..Default::default()
        },
    ));
    b.push((
        prov(1, 8, "127.0.0.4", 9000, "beacon", t1),
        Observation {
            ext: [
                ("beacon.period".to_string(), ExtValue::F64(30.0)),
                ("country".to_string(), ExtValue::Str("NL".into())),
            ]
            .into(),
            ..Default::default()
        },
    ));
    // job 2: 127.0.0.1:80 upgraded, 22 closed, 127.0.0.2:8080 same, new 127.0.1.20:21
    b.push((
        prov(2, 1, "127.0.0.1", 80, "service", t2),
        svc("nginx", "1.25.3", "HTTP/1.1 200 OK Server: nginx"),
    ));
    b.push((
        prov(2, 2, "127.0.0.2", 8080, "service", t2),
        svc("Apache httpd", "2.4.57", "Apache default page"),
    ));
    b.push((
        prov(2, 3, "127.0.1.20", 21, "service", t2),
        Observation {
            open: Some(true),
            service: Some("ftp".into()),
            product: Some("vsftpd".into()),
            version: Some("3.0.3".into()),
            ..Default::default()
        },
    ));
    b.push((
        prov(2, 4, "127.0.0.3", 443, "service", t2),
        Observation {
            open: Some(true),
            service: Some("ssl/http".into()),
            product: Some("nginx".into()),
            tls: Some(Tls {
                subject: "CN=new.example".into(),
                issuer: "CN=R3".into(),
                expired: false,
                self_signed: false,
                sha256: "22".into(),
                not_after: 0,
            }),
            ..Default::default()
        },
    ));
    assert_eq!(idx.add(&b).unwrap(), b.len());
    idx.commit().unwrap();
}

fn engine() -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let idx = QueryIndex::open_or_rebuild(&dir.path().join("q")).unwrap();
    corpus(&idx);
    (dir, Engine::new(Arc::new(idx)))
}

/// `ip:port` of every service row the query finds (latest state per ip:port), sorted.
fn hits(e: &Engine, q: &str) -> Vec<String> {
    let p = e
        .search(&SearchRequest::new(q))
        .unwrap_or_else(|err| panic!("{q}: {err}"));
    p.services.iter().map(|s| s.endpoint()).collect()
}

#[test]
fn field_values_ranges_cidr_text_and_booleans() {
    let (_d, e) = engine();
    assert_eq!(hits(&e, "port:80"), ["127.0.0.1:80"]);
    assert_eq!(
        hits(&e, "product:NGINX"),
        ["127.0.0.1:80", "127.0.0.3:443"],
        "keywords are case-insensitive"
    );
    assert_eq!(hits(&e, r#"product:"apache httpd""#), ["127.0.0.2:8080"]);
    assert_eq!(hits(&e, "port:[8000 TO 8100]"), ["127.0.0.2:8080"]);
    assert_eq!(hits(&e, "port:{80 TO 443]"), ["127.0.0.3:443"]);
    assert_eq!(
        hits(&e, "net:127.0.1.0/24"),
        ["127.0.1.9:5900", "127.0.1.20:21"]
    );
    assert_eq!(hits(&e, "ip:127.0.0.2"), ["127.0.0.2:8080"]);
    assert_eq!(
        hits(&e, "ALARM"),
        ["127.0.1.9:5900"],
        "free text over screen text"
    );
    assert_eq!(
        hits(&e, r#"screen.text:"alarm acknowledged""#),
        ["127.0.1.9:5900"]
    );
    assert!(
        hits(&e, r#"screen.text:"acknowledged alarm""#).is_empty(),
        "phrases keep word order"
    );
    assert_eq!(hits(&e, "banner:debian"), ["127.0.0.1:22"]);
    assert_eq!(hits(&e, "product:open*"), ["127.0.0.1:22"], "prefix");
    assert_eq!(hits(&e, "version:2.?.5*"), ["127.0.0.2:8080"], "wildcard");
    assert_eq!(hits(&e, "http.title:router"), ["127.0.0.3:443"]);
    assert_eq!(hits(&e, "tls.expired:true"), ["127.0.0.3:443"]);
    assert_eq!(
        hits(&e, "tls.subject:\"CN=new.example\""),
        ["127.0.0.3:443"]
    );
    assert_eq!(
        hits(&e, "faces:[1 TO *] AND tag:login_prompt"),
        ["127.0.1.9:5900"]
    );
    assert_eq!(
        hits(&e, "email:ops@example.com has_screenshot:true"),
        ["127.0.1.9:5900"]
    );
    assert_eq!(hits(&e, "product:nginx -port:443"), ["127.0.0.1:80"]);
    assert_eq!(
        hits(&e, "NOT net:127.0.0.0/24"),
        ["127.0.1.9:5900", "127.0.1.20:21"]
    );
    assert_eq!(
        hits(&e, "(port:21 OR port:22) AND provider:b"),
        ["127.0.1.20:21"]
    );
    assert_eq!(hits(&e, "job:2 service:ftp"), ["127.0.1.20:21"]);
    // extension fields (in the ext column, no parser change)
    assert_eq!(hits(&e, "beacon.period:<60"), ["127.0.0.4:9000"]);
    assert!(hits(&e, "beacon.period:>60").is_empty());
    assert_eq!(hits(&e, "country:nl"), ["127.0.0.4:9000"]);
    // dates: job 1 was Oct 30, job 2 Nov 2
    assert_eq!(
        hits(&e, "last_seen:>2026-11-01"),
        [
            "127.0.0.1:80",
            "127.0.0.2:8080",
            "127.0.0.3:443",
            "127.0.1.20:21"
        ]
    );
    assert_eq!(hits(&e, "first_seen:2026-10-30 port:22"), ["127.0.0.1:22"]);
    assert!(hits(&e, "last_seen:<2026-10-30").is_empty());
}

#[test]
fn services_are_one_row_per_endpoint_with_the_latest_state() {
    let (_d, e) = engine();
    let p = e.search(&SearchRequest::new("port:80")).unwrap();
    assert_eq!(p.matched, 2, "two jobs saw it");
    assert_eq!(p.services.len(), 1);
    assert_eq!(p.services[0].version.as_deref(), Some("1.25.3"));
    assert_eq!(p.services[0].job, 2);
}

#[test]
fn hosts_view_and_paging_cover_every_row_once() {
    let (_d, e) = engine();
    let mut r = SearchRequest::new("");
    r.view = View::Hosts;
    let p = e.search(&r).unwrap();
    let ips: Vec<String> = p.hosts.iter().map(|h| h.ip.to_string()).collect();
    assert_eq!(
        ips,
        [
            "127.0.0.1",
            "127.0.0.2",
            "127.0.0.3",
            "127.0.0.4",
            "127.0.1.9",
            "127.0.1.20"
        ]
    );
    assert_eq!(p.hosts[0].services.len(), 2, "127.0.0.1 has 22 and 80");

    let all = hits(&e, "");
    let mut paged = vec![];
    let mut r = SearchRequest::new("");
    r.limit = 2;
    loop {
        let p = e.search(&r).unwrap();
        paged.extend(p.services.iter().map(|s| s.endpoint()));
        match p.next {
            Some(k) => r.after = Some(k),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert_eq!(all.len(), 7);
}

#[test]
fn facets_and_counts() {
    let (_d, e) = engine();
    let c = e
        .count(
            "",
            &[
                parse_facet("product:2").unwrap(),
                parse_facet("port").unwrap(),
            ],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(c.matched, 10);
    assert_eq!(c.facets[0].field, "product");
    assert_eq!(c.facets[0].values[0].value, "nginx");
    assert_eq!(c.facets[0].values[0].count, 4);
    assert_eq!(c.facets[0].values.len(), 2);
    assert!(
        c.facets[1]
            .values
            .iter()
            .any(|v| v.value == "8080" && v.count == 2),
        "{:?}",
        c.facets[1]
    );
    let c = e
        .count(
            "country:nl",
            &[parse_facet("country").unwrap()],
            Duration::from_secs(5),
        )
        .unwrap();
    assert_eq!(c.facets[0].values[0].value, "NL");
    assert!(matches!(
        e.count("", &[("banner".into(), 5)], Duration::from_secs(1)),
        Err(QueryError::Invalid(_))
    ));
    assert!(parse_facet("port:0").is_err());
}

#[test]
fn host_view_history_and_as_of() {
    let (_d, e) = engine();
    let h = e.host("127.0.0.1".parse().unwrap(), None).unwrap();
    let ports: Vec<u16> = h.ports.iter().map(|p| p.port).collect();
    assert_eq!(ports, [22, 80]);
    let p80 = &h.ports[1];
    assert_eq!(p80.jobs, [1, 2]);
    assert_eq!(p80.current.version.as_deref(), Some("1.25.3"));
    assert_eq!(p80.events.len(), 2);
    let ch = &p80.events[1];
    assert_eq!(ch.job, 2);
    assert_eq!(ch.fields.len(), 1);
    assert_eq!(ch.fields[0].field, "version");
    assert_eq!(ch.fields[0].from.as_deref(), Some("1.24.0"));
    // as of Nov 1: only job 1
    let h = e.host("127.0.0.1".parse().unwrap(), Some(NOV1)).unwrap();
    assert_eq!(h.ports[1].current.version.as_deref(), Some("1.24.0"));
    assert_eq!(h.ports[1].events.len(), 1);
    let h = e.host("127.0.0.3".parse().unwrap(), None).unwrap();
    assert!(
        h.ports[0].events[1]
            .fields
            .iter()
            .any(|f| f.field == "tls.sha256")
    );
}

#[test]
fn diff_two_jobs() {
    let (_d, e) = engine();
    let d = e.diff(1, 2, 100, Duration::from_secs(5)).unwrap();
    assert_eq!(
        (d.opened, d.closed, d.changed, d.unchanged),
        (1, 2, 2, 1),
        "{d:#?}"
    );
    let find = |ip: &str, port: u16| {
        d.changes
            .iter()
            .find(|c| c.ip.to_string() == ip && c.port == port)
            .unwrap()
    };
    assert_eq!(find("127.0.1.20", 21).kind, ChangeKind::Opened);
    assert_eq!(find("127.0.0.1", 22).kind, ChangeKind::Closed);
    assert_eq!(find("127.0.0.1", 80).kind, ChangeKind::Changed);
    assert_eq!(find("127.0.0.1", 80).fields[0].field, "version");
    // coverage: open services in 127.0.0.0/24: job 1 has 22, 80, 8080, 443 (the beacon row is
    // not an open port); job 2 has 80, 8080, 443
    let net = |k: &str| {
        d.coverage_net
            .iter()
            .find(|c| c.key == k)
            .map(|c| (c.a, c.b))
    };
    assert_eq!(net("127.0.0.0/24"), Some((4, 3)));
    assert_eq!(
        net("127.0.1.0/24"),
        None,
        "same count in both jobs: not listed"
    );
    assert!(d.coverage_provider.iter().any(|c| c.key == "b"));
    let lim = e.diff(1, 2, 1, Duration::from_secs(5)).unwrap();
    assert_eq!(lim.changes.len(), 1);
    assert_eq!(
        (lim.opened, lim.closed, lim.changed),
        (1, 2, 2),
        "counts exact under a limit"
    );
}

#[test]
fn bad_queries_are_positioned_errors() {
    let (_d, e) = engine();
    let err = |q: &str| match e.search(&SearchRequest::new(q)) {
        Err(QueryError::Parse(p)) => p,
        other => panic!("{q}: {other:?}"),
    };
    let p = err("port:80 AND prodct:nginx");
    assert_eq!(p.column, 13);
    assert!(p.expected.contains("a field name"), "{p}");
    let p = err("port:99999");
    assert_eq!(p.column, 6);
    assert!(p.expected.contains("port number"), "{p}");
    let p = err("net:127.0.0.0/40");
    assert!(p.expected.contains("prefix length"), "{p}");
    let p = err("last_seen:>tomorrow");
    assert!(p.expected.contains("date"), "{p}");
    let p = err("tls.expired:maybe");
    assert!(p.expected.contains("true or false"), "{p}");
    let p = err("banner:[a TO b]");
    assert!(p.expected.contains("text field"), "{p}");
    let mut r = SearchRequest::new("");
    r.limit = 0;
    assert!(matches!(e.search(&r), Err(QueryError::Invalid(_))));
}

#[test]
fn replays_are_skipped_and_a_reopened_index_resumes_from_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    {
        let idx = QueryIndex::open_or_rebuild(&path).unwrap();
        corpus(&idx);
        assert_eq!(idx.cursor(1), 8);
        // uncommitted work is lost with the process (as with kill -9)
        let extra = vec![(
            prov(2, 5, "127.0.0.9", 1, "service", NOV1),
            svc("x", "1", "b"),
        )];
        idx.add(&extra).unwrap();
        assert_eq!(idx.cursor(2), 5);
    }
    let idx = QueryIndex::open_or_rebuild(&path).unwrap();
    assert_eq!(idx.cursor(2), 4, "resumes after the last commit");
    // replaying everything folds nothing twice
    let before = idx.num_rows();
    corpus_replay(&idx);
    idx.commit().unwrap();
    assert_eq!(idx.num_rows(), before);
    let e = Engine::new(Arc::new(idx));
    assert_eq!(e.search(&SearchRequest::new("port:80")).unwrap().matched, 2);
}

fn corpus_replay(idx: &QueryIndex) {
    let n = idx
        .add(&[(
            prov(1, 2, "127.0.0.1", 80, "service", 1),
            svc("evil", "0", "replayed"),
        )])
        .unwrap();
    assert_eq!(n, 0);
}

#[test]
fn a_corrupt_index_is_rebuilt_empty() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    {
        let idx = QueryIndex::open_or_rebuild(&path).unwrap();
        corpus(&idx);
        idx.close().unwrap();
    }
    // damage every file
    for f in std::fs::read_dir(&path).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "store" || e == "json") {
            std::fs::write(&f, b"garbage").unwrap();
        }
    }
    let idx = QueryIndex::open_or_rebuild(&path).unwrap();
    assert_eq!(idx.num_rows(), 0);
    assert_eq!(idx.cursor(1), 0, "rebuilt from the store by the follower");
    corpus(&idx);
    assert_eq!(idx.num_rows(), 10);
}

/// A caller's visible jobs filter every answer on the indexed `job` field: the same rows as the
/// query `job:N`, nothing for an empty set, and host views without the other jobs' history.
#[test]
fn answers_restricted_to_a_set_of_jobs() {
    use std::collections::BTreeSet;
    let (_d, e) = engine();
    let only = |jobs: &[u64]| jobs.iter().copied().collect::<BTreeSet<u64>>();
    let rows = |q: &str, jobs: &BTreeSet<u64>| {
        let p = e.search_in(&SearchRequest::new(q), Some(jobs)).unwrap();
        let mut v: Vec<(String, u64)> = p.services.iter().map(|s| (s.endpoint(), s.job)).collect();
        v.sort();
        v
    };
    let text = |q: &str| {
        let p = e.search(&SearchRequest::new(q)).unwrap();
        let mut v: Vec<(String, u64)> = p.services.iter().map(|s| (s.endpoint(), s.job)).collect();
        v.sort();
        v
    };
    let (one, two) = (rows("", &only(&[1])), rows("", &only(&[2])));
    assert!(!one.is_empty() && !two.is_empty());
    assert_eq!(one, text("job:1"));
    assert_eq!(two, text("job:2"));
    assert_eq!(rows("port:80", &only(&[1])), text("port:80 AND job:1"));
    assert!(rows("", &only(&[])).is_empty());
    assert!(rows("", &only(&[999])).is_empty());
    assert_eq!(
        e.search_in(&SearchRequest::new(""), None)
            .unwrap()
            .services
            .len(),
        text("").len()
    );

    let c = |jobs: &BTreeSet<u64>| {
        e.count_in("", &[], Duration::from_secs(5), Some(jobs))
            .unwrap()
            .matched
    };
    assert_eq!(
        c(&only(&[1])),
        e.count("job:1", &[], Duration::from_secs(5))
            .unwrap()
            .matched
    );
    assert_eq!(c(&only(&[])), 0);

    let ip = "127.0.0.1".parse().unwrap();
    let h = e.host_in(ip, None, Some(&only(&[1]))).unwrap();
    assert!(h.ports.iter().all(|p| p.jobs == [1]), "{h:?}");
    assert!(
        e.host_in(ip, None, Some(&only(&[])))
            .unwrap()
            .ports
            .is_empty()
    );

    // the hosts view shows only the visible jobs' ports too
    let mut r = SearchRequest::new("");
    r.view = View::Hosts;
    let p = e.search_in(&r, Some(&only(&[2]))).unwrap();
    assert!(!p.hosts.is_empty());
    assert!(p.hosts.iter().flat_map(|h| &h.services).all(|s| s.job == 2));
}

/// Rows are handed to the indexing thread in batches before the commit; a row handed over and
/// then changed again (before its commit, or after) stays one row with its latest state, and
/// nothing handed over survives a process that dies before the commit.
#[test]
fn rows_handed_over_early_are_upserted_and_lost_without_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    let many = |job: u64, from: u64, product: &str| -> Vec<(Provenance, Observation)> {
        (0..2000u64)
            .map(|i| {
                (
                    prov(job, from + i, "127.0.0.1", 1 + i as u16, "service", NOV1),
                    svc(product, "1", "b"),
                )
            })
            .collect()
    };
    {
        let idx = QueryIndex::open_or_rebuild(&path).unwrap();
        idx.add(&many(1, 1, "first")).unwrap();
        // port 1 was handed over with the first batch; it changes before the commit
        idx.add(&[(
            prov(1, 5000, "127.0.0.1", 1, "service", NOV1 + 1),
            svc("second", "2", "b"),
        )])
        .unwrap();
        idx.commit().unwrap();
        assert_eq!(idx.num_rows(), 2000);
        // after the commit: every row changes again (each handed over, its old version deleted first)
        idx.add(&many(1, 6000, "third")).unwrap();
        idx.commit().unwrap();
        assert_eq!(idx.num_rows(), 2000);
        // a job whose rows are handed over but never committed (the process dies)
        idx.add(&many(2, 1, "lost")).unwrap();
        assert!(idx.pending_rows() == 2000);
    }
    let idx = QueryIndex::open_or_rebuild(&path).unwrap();
    assert_eq!(idx.num_rows(), 2000);
    assert_eq!(idx.cursor(2), 0, "job 2 was never committed");
    let e = Engine::new(Arc::new(idx));
    assert_eq!(
        e.search(&SearchRequest::new("product:third"))
            .unwrap()
            .matched,
        2000
    );
    assert_eq!(
        e.search(&SearchRequest::new("product:second"))
            .unwrap()
            .matched,
        0
    );
    assert_eq!(
        e.search(&SearchRequest::new("product:lost"))
            .unwrap()
            .matched,
        0
    );
}

/// A row is its (job, address, port): an update after a commit replaces that row only, not the
/// same endpoint in another job nor another port or address of the job; IPv6 rows upsert the
/// same way; a finding without an address is a row of its own.
#[test]
fn a_row_is_its_job_address_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let idx = QueryIndex::open_or_rebuild(&dir.path().join("q")).unwrap();
    let endpoints = [
        ("127.0.0.1", 80),
        ("127.0.0.1", 81),
        ("127.0.0.2", 80),
        ("::1", 80),
    ];
    let mut cursor = 0;
    let mut round = |idx: &QueryIndex, jobs: &[u64], product: &str| {
        let mut b = vec![];
        for &job in jobs {
            for (ip, port) in endpoints {
                cursor += 1;
                b.push((
                    prov(job, cursor, ip, port, "service", NOV1),
                    svc(product, "1", "b"),
                ));
            }
        }
        idx.add(&b).unwrap();
        idx.commit().unwrap();
    };
    round(&idx, &[1, 2], "old");
    let mut lone = prov(1, 100, "127.0.0.1", 0, "import", NOV1);
    lone.ip = None;
    idx.add(&[(lone.clone(), svc("lone", "1", "b"))]).unwrap();
    lone.cursor = 101;
    idx.add(&[(lone, svc("lone", "1", "b"))]).unwrap();
    idx.commit().unwrap();
    // only job 2 changes, twice, in two commits
    round(&idx, &[2], "mid");
    round(&idx, &[2], "new");
    let e = Engine::new(Arc::new(idx));
    let n = |q: &str| e.search(&SearchRequest::new(q)).unwrap().matched;
    assert_eq!(n("job:1 product:old"), 4, "job 1's rows untouched");
    assert_eq!(n("job:2 product:new"), 4);
    assert_eq!(
        n("job:2 -product:new"),
        0,
        "job 2's earlier versions deleted"
    );
    assert_eq!(
        n("product:lone"),
        2,
        "two findings without an address: two rows"
    );
    assert_eq!(e.index.num_rows(), 10);
}

/// Free text reaches the long text columns (kept out of the short-value `text` column) and the
/// short values, with phrases inside one column.
#[test]
fn free_text_covers_banner_title_screen_and_short_values() {
    let idx = QueryIndex::in_ram().unwrap();
    corpus(&idx);
    idx.commit().unwrap();
    let e = Engine::new(Arc::new(idx));
    let n = |q: &str| e.search(&SearchRequest::new(q)).unwrap().matched;
    assert_eq!(n("debian"), 1, "banner word");
    assert_eq!(n("\"openssh_9.2p1 debian\""), 1, "banner phrase");
    assert_eq!(n("openssh"), 1, "product");
    assert_eq!(n("nosuchword"), 0);
}

/// The image service's text search: screens ranked by their text, one hit per image however
/// many rows (jobs) carry it, rows without an image never returned, and a new screenshot of a
/// service does not inherit the old one's text.
#[test]
fn screen_text_search_is_one_ranked_hit_per_image() {
    let idx = QueryIndex::in_ram().unwrap();
    let shot = |img: &str, text: Option<&str>| Observation {
        screen: Some(Screen {
            image: Some(img.repeat(64)),
            text: text.map(str::to_string),
            ..Default::default()
        }),
        ..Default::default()
    };
    idx.add(&[
        // image a (text ALARM twice) seen by jobs 1 and 2; image b says ALARM once
        (
            prov(1, 1, "127.0.0.1", 5900, "enrich", NOV1),
            shot("a", Some("ALARM ALARM tank")),
        ),
        (
            prov(2, 1, "127.0.0.1", 5900, "enrich", NOV1),
            shot("a", Some("ALARM ALARM tank")),
        ),
        (
            prov(1, 2, "127.0.0.2", 5900, "enrich", NOV1),
            shot("b", Some("ALARM acknowledged by operator on duty")),
        ),
        // a banner saying ALARM has no screen: not an image hit
        (
            prov(1, 3, "127.0.0.3", 80, "service", NOV1),
            svc("x", "1", "ALARM"),
        ),
        // c was read, then the service was screenshotted again (d, not read yet)
        (
            prov(1, 4, "127.0.0.4", 5900, "enrich", NOV1),
            shot("c", Some("ALARM")),
        ),
        (
            prov(1, 5, "127.0.0.4", 5900, "screenshot", NOV1 + 1),
            shot("d", None),
        ),
    ])
    .unwrap();
    idx.commit().unwrap();
    let e = Engine::new(Arc::new(idx));
    let hits = e.screen_text("alarm", 10).unwrap();
    let ids: Vec<_> = hits.iter().map(|h| h.image[..1].to_string()).collect();
    assert_eq!(ids, ["a", "b"], "{hits:?}");
    assert!(hits[0].score > hits[1].score);
    assert_eq!(e.screen_text("operator tank", 1).unwrap().len(), 1);
    assert!(e.screen_text("  ", 10).unwrap().is_empty());
    assert!(e.screen_text("nosuchword", 10).unwrap().is_empty());
}

/// An index of `n` bench-corpus findings (two jobs) in two commits, split at `split`, plus a later
/// finding of the committed row of finding `upsert` (its old version is deleted).
fn two_segments_and_an_upsert(
    dir: &std::path::Path,
    seed: u64,
    n: u64,
    split: usize,
    upsert: u64,
) -> QueryIndex {
    let idx = QueryIndex::open_or_rebuild(&dir.join("q")).unwrap();
    let c = overlord_query::corpus::Corpus {
        seed,
        n,
        per_job: n / 2,
        start_ms: NOV1,
    };
    let all: Vec<_> = (0..c.n).map(|i| c.finding(i)).collect();
    idx.add(&all[..split]).unwrap();
    idx.commit().unwrap();
    let (mut p, o) = c.finding(upsert);
    p.cursor = 10_000;
    idx.add(&all[split..]).unwrap();
    idx.add(&[(p, o)]).unwrap();
    idx.commit().unwrap();
    idx
}

/// Small pages over many matches are read by walking the address dictionary (`Engine::page`);
/// one big page reads every match from the fast column. Both must give the same rows in the
/// same order, services and hosts, across `after` and a deleted (upserted) version.
#[test]
fn pages_walked_by_address_equal_one_page_read_from_the_fast_column() {
    let dir = tempfile::tempdir().unwrap();
    let idx = two_segments_and_an_upsert(dir.path(), 11, 3000, 2000, 1600);
    let e = Engine::new(Arc::new(idx));
    for view in [View::Services, View::Hosts] {
        for q in ["transport:tcp", "port:[0 TO 9000] -product:nginx"] {
            let mut big = SearchRequest::new(q);
            big.view = view;
            big.limit = 10_000;
            let one = e.search(&big).unwrap();
            assert!(one.next.is_none());
            let mut walked = (Vec::new(), Vec::new());
            let mut r = SearchRequest::new(q);
            r.view = view;
            r.limit = 3;
            loop {
                let p = e.search(&r).unwrap();
                assert_eq!(p.matched, one.matched, "{q}");
                walked
                    .0
                    .extend(p.services.iter().map(|s| (s.key.clone(), s.cursor)));
                walked.1.extend(p.hosts.iter().map(|h| h.ip));
                match p.next {
                    Some(k) => r.after = Some(k),
                    None => break,
                }
            }
            let expect = (
                one.services
                    .iter()
                    .map(|s| (s.key.clone(), s.cursor))
                    .collect::<Vec<_>>(),
                one.hosts.iter().map(|h| h.ip).collect::<Vec<_>>(),
            );
            assert!(
                expect.0.len() + expect.1.len() > 500,
                "{q}: enough rows to walk"
            );
            assert_eq!(walked, expect, "{q} {view:?}");
        }
    }
}

/// The paging paths beside the reference ones (`Engine::plain_paths`): a conjunction marked
/// window by window (dense) or through tantivy's intersection (sparse) with excluded clauses,
/// and the address walk bounded by the query's CIDRs and address ranges (started at the lower
/// bound, stopped past the upper one, given up on a budget). Every page of a chain of pages must
/// be the same rows in the same order with the same count and cursor, services and hosts,
/// with and without a job restriction, over two segments and a deleted (upserted) version.
#[test]
fn conjunctions_and_bounded_walks_page_as_the_plain_paths() {
    let dir = tempfile::tempdir().unwrap();
    let idx = Arc::new(two_segments_and_an_upsert(dir.path(), 5, 6000, 3500, 3100));
    let fast = Engine::new(idx.clone());
    let mut plain = Engine::new(idx);
    plain.plain_paths = true;
    let late = NOV1 + DAY + 1000 * 10;
    let queries = [
        "net:10.0.0.0/16 port:22".to_string(),
        "net:10.0.2.0/23 transport:tcp -product:nginx".into(),
        "ip:[10.0.1.10 TO 10.0.4.200] service:http".into(),
        "net:10.0.0.0/8 net:10.0.3.0/24 transport:tcp".into(),
        "net:10.0.1.0/24 net:10.0.4.0/24 transport:tcp".into(),
        "(net:10.0.1.0/24 OR net:10.0.4.0/23) port:80".into(),
        format!("job:2 last_seen:>{late}"),
        // the rarest clause (port) starts before the other (a date column) has any match
        format!("port:22 last_seen:>{late}"),
        "port:[0 TO 9000] -product:nginx".into(),
        "transport:tcp -net:10.0.0.0/22".into(),
        "net:10.0.3.0/24".into(),
        "net:10.0.0.0/16 service:ssh -product:openssh".into(),
    ];
    let job2: std::collections::BTreeSet<u64> = [2].into();
    let mut rows = 0;
    for q in &queries {
        for view in [View::Services, View::Hosts] {
            for jobs in [None, Some(&job2)] {
                for limit in [2, 50] {
                    let mut a = SearchRequest::new(q);
                    a.view = view;
                    a.limit = limit;
                    let mut b = a.clone();
                    for _ in 0..25 {
                        let x = fast.search_in(&a, jobs).unwrap();
                        let y = plain.search_in(&b, jobs).unwrap();
                        let keys = |p: &overlord_query::search::Page| {
                            (
                                p.matched,
                                p.next,
                                p.services
                                    .iter()
                                    .map(|s| (s.key.clone(), s.cursor))
                                    .collect::<Vec<_>>(),
                                p.hosts
                                    .iter()
                                    .map(|h| (h.ip, h.services.len()))
                                    .collect::<Vec<_>>(),
                            )
                        };
                        assert_eq!(keys(&x), keys(&y), "{q} {view:?} {jobs:?} limit {limit}");
                        rows += x.services.len() + x.hosts.len();
                        match x.next {
                            Some(k) => {
                                a.after = Some(k);
                                b.after = Some(k);
                            }
                            None => break,
                        }
                    }
                }
            }
        }
    }
    assert!(rows > 5000, "enough rows compared: {rows}");
    // the empty intersection of two CIDRs matches nothing on either path
    let p = fast.search(&SearchRequest::new(&queries[4])).unwrap();
    assert_eq!((p.matched, p.services.len()), (0, 0));
}

/// Segments merged after the last commit are searched once an idle index reloads (before, the
/// searcher changed only at a commit: after a flood the unmerged segments stayed in use until
/// the next finding). Sixteen one-row commits make one merge under the index's merge policy.
#[test]
fn an_idle_index_searches_the_segments_merged_after_its_last_commit() {
    let dir = tempfile::tempdir().unwrap();
    let idx = QueryIndex::open_or_rebuild(&dir.path().join("q")).unwrap();
    for k in 0..16u64 {
        let ip = format!("127.0.2.{}", k + 1);
        idx.add(&[(
            prov(1, k + 1, &ip, 80, "service", NOV1),
            svc("nginx", "1", "x"),
        )])
        .unwrap();
        idx.commit().unwrap();
    }
    let before = idx.searcher().segment_readers().len();
    assert!(before >= 16, "{before} segments after 16 commits");
    // the merge runs in the background; an idle index reloads every RELOAD_INTERVAL
    let t = std::time::Instant::now();
    let mut now = before;
    while now >= before && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
        assert!(!idx.maybe_commit().unwrap(), "nothing was due");
        now = idx.searcher().segment_readers().len();
    }
    assert!(now < before, "still {now} segments after {:?}", t.elapsed());
    assert_eq!(idx.num_rows(), 16);
    let e = Engine::new(Arc::new(idx));
    let p = e.search(&SearchRequest::new("net:127.0.2.0/24")).unwrap();
    assert_eq!(p.services.len(), 16);
}
