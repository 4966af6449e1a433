//! Similar-image queries over 1,000,000 64-bit hashes at radius 4 and 8: multi-index hashing
//! vs brute force (exact recall checked on every query), memory, and the sled load path.
//! `cargo run --release -p overlord-enrich --example bench_similar [N] [--sled [--v1]]`
//! `--sled`: bulk-loads the hashes into a sled directory, closes it and reopens it (sled open +
//! index open, the chunked format); `--v1` also times an open of the same index in the previous
//! on-disk format (no `sim.chunk`: every `sim.ord` record read one by one).
use overlord_enrich::mih::Mih;
use overlord_enrich::{PHashes, SimilarityIndex, SledMihIndex};
use std::time::Instant;

mod common;
use common::{loadavg, thread_cpu};

fn rng(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let with_sled = args.iter().any(|a| a == "--sled");
    let with_v1 = args.iter().any(|a| a == "--v1");
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    // uniformly random hashes, plus 1,000 clusters of 20 near-duplicates (1..10 bits flipped)
    let mut hashes: Vec<u64> = (0..n - 20_000).map(|_| rng(&mut s)).collect();
    let mut queries = Vec::new();
    for _ in 0..1000 {
        let c = rng(&mut s);
        queries.push(c);
        for i in 0..20 {
            let mut h = c;
            for _ in 0..=(i % 10) {
                h ^= 1 << (rng(&mut s) % 64);
            }
            hashes.push(h);
        }
    }
    for _ in 0..1000 {
        queries.push(rng(&mut s)); // far from everything
    }
    if let Ok(ms) = std::env::var("MIH_SWEEP") {
        for m in ms.split(',').map(|x| x.parse::<usize>().unwrap()) {
            let mih = Mih::build_with(hashes.clone(), m);
            let mut out = Vec::new();
            for r in [4u32, 8] {
                let c = thread_cpu();
                for &q in &queries {
                    mih.query(q, r, &mut out);
                }
                println!(
                    "m={m} r={r}: {:.1} µs/query CPU, {:.1} MB",
                    (thread_cpu() - c) * 1e6 / queries.len() as f64,
                    mih.heap_bytes() as f64 / 1e6
                );
            }
        }
    }
    println!("load average {}", loadavg());
    let t = Instant::now();
    let mih = Mih::build(hashes.clone());
    println!(
        "built MIH over {} hashes in {:.0} ms: {} substrings, {:.1} MB",
        mih.len(),
        t.elapsed().as_secs_f64() * 1e3,
        mih.substrings(),
        mih.heap_bytes() as f64 / 1e6
    );
    let mut out = Vec::new();
    for r in [4u32, 8] {
        let t = Instant::now();
        let c = thread_cpu();
        let mut found = 0;
        for &q in &queries {
            mih.query(q, r, &mut out);
            found += out.len();
        }
        let mih_us = (thread_cpu() - c) * 1e6 / queries.len() as f64;
        let mih_wall = t.elapsed().as_secs_f64() * 1e6 / queries.len() as f64;
        // brute force on a subset, checking exact recall on every query of the subset
        let sub = &queries[..200.min(queries.len())];
        let c = thread_cpu();
        let mut bf_found = Vec::new();
        for &q in sub {
            let v: Vec<u32> = hashes
                .iter()
                .enumerate()
                .filter(|(_, h)| (**h ^ q).count_ones() <= r)
                .map(|(i, _)| i as u32)
                .collect();
            bf_found.push(v);
        }
        let bf_us = (thread_cpu() - c) * 1e6 / sub.len() as f64;
        for (q, want) in sub.iter().zip(&bf_found) {
            mih.query(*q, r, &mut out);
            let mut got: Vec<u32> = out.iter().map(|x| x.0).collect();
            got.sort();
            assert_eq!(&got, want, "recall must be exact");
        }
        println!(
            "r={r}: MIH {mih_us:.1} µs/query CPU ({mih_wall:.1} wall; {:.1} results/query), brute force {bf_us:.0} µs/query CPU, speed-up {:.0}x, recall exact on {} checked queries",
            found as f64 / queries.len() as f64,
            bf_us / mih_us,
            sub.len()
        );
    }
    if with_sled {
        let dir = tempfile::tempdir()?;
        let db = overlord_storage::kv::KvDb::open_with_cache(dir.path(), 64 << 20)?;
        let idx = SledMihIndex::open(&db)?;
        let ids: Vec<String> = (0..hashes.len()).map(|i| format!("img{i:08}")).collect();
        let t = Instant::now();
        idx.bulk_insert(ids.iter().zip(&hashes).map(|(id, &h)| {
            (
                id.as_str(),
                PHashes {
                    phash64: h,
                    phash256: [h, !h, h, !h],
                },
            )
        }))?;
        idx.flush()?;
        println!(
            "sled bulk load of {} hashes: {:.1} s",
            hashes.len(),
            t.elapsed().as_secs_f64()
        );
        drop(idx);
        drop(db);
        let open_db = || overlord_storage::kv::KvDb::open_with_cache(dir.path(), 64 << 20);
        let t = Instant::now();
        let db = open_db()?;
        let sled_s = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let (idx, rep) = SledMihIndex::open_with_report(&db)?;
        println!(
            "reopen after close: sled open {sled_s:.2} s + index open {:.2} s ({} hashes: {} from sim.chunk, {} from sim.ord records; MIH rebuilt), {:.1} MB in memory",
            t.elapsed().as_secs_f64(),
            rep.hashes,
            rep.from_chunks,
            rep.from_records,
            idx.heap_bytes() as f64 / 1e6
        );
        for r in [4u32, 8] {
            let c = thread_cpu();
            let mut found = 0;
            for &q in &queries {
                found += idx
                    .query(
                        &PHashes {
                            phash64: q,
                            phash256: [q, !q, q, !q],
                        },
                        r,
                    )?
                    .len();
            }
            println!(
                "sled-backed index r={r}: {:.1} µs/query CPU incl. id lookups in sled ({:.1} results/query)",
                (thread_cpu() - c) * 1e6 / queries.len() as f64,
                found as f64 / queries.len() as f64
            );
        }
        if with_v1 {
            // the previous format: no chunk records, no format key
            drop(idx);
            db.open_tree("sim.chunk")?.clear()?;
            db.open_tree("sim.meta")?.clear()?;
            db.flush()?;
            drop(db);
            let t = Instant::now();
            let db = open_db()?;
            let sled_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (idx, rep) = SledMihIndex::open_with_report(&db)?;
            println!(
                "open of the same index in format 1 (every sim.ord record read one by one, then chunked): sled open {sled_s:.2} s + index open {:.2} s ({} from records, {} chunks written)",
                t.elapsed().as_secs_f64(),
                rep.from_records,
                rep.chunks_written
            );
            drop(idx);
            drop(db);
            // sled replays the log written since its last open: a restart after a restart is
            // the steady state
            let t = Instant::now();
            let db = open_db()?;
            let sled_s = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let (_idx, rep) = SledMihIndex::open_with_report(&db)?;
            println!(
                "open again (format 2): sled open {sled_s:.2} s + index open {:.2} s ({} from sim.chunk, {} from sim.ord)",
                t.elapsed().as_secs_f64(),
                rep.from_chunks,
                rep.from_records
            );
        }
    }
    Ok(())
}
