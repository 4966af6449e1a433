//! Times one query's phases on an existing index: `qtime DIR QUERY [RUNS]` (a profiling aid;
//! `QVIEW=hosts` pages hosts instead of services, `QPLAIN=1` pages with the reference paths:
//! `Engine::plain_paths`).
use overlord_query::index::QueryIndex;
use overlord_query::search::{Engine, SearchRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let idx = QueryIndex::open_or_rebuild(std::path::Path::new(&a[1])).expect("index");
    let runs: usize = a.get(3).and_then(|x| x.parse().ok()).unwrap_or(5);
    let mut e = Engine::new(Arc::new(idx));
    e.plain_paths = std::env::var_os("QPLAIN").is_some();
    println!("segments {}", e.index.searcher().segment_readers().len());
    for _ in 0..runs {
        let t = Instant::now();
        let c = e.count(&a[2], &[], Duration::from_secs(60)).expect("count");
        let tc = t.elapsed();
        let t = Instant::now();
        let mut r = SearchRequest::new(&a[2]);
        if std::env::var("QVIEW").is_ok_and(|v| v == "hosts") {
            r.view = overlord_query::search::View::Hosts;
        }
        let p = e.search(&r).expect("search");
        println!(
            "count {:.2} ms ({}), search {:.2} ms ({} rows)",
            tc.as_secs_f64() * 1e3,
            c.matched,
            t.elapsed().as_secs_f64() * 1e3,
            p.services.len() + p.hosts.len()
        );
    }
}
