//! Diagnostic: sled apply cost of the job actor's write pattern for given record sizes.
//! `cargo run --release -p overlord-storage --example apply_cost -- TASK_BYTES DONE_BYTES FINDING_BYTES`
fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (ts, ds, fs) = (a[0], a[1], a[2]);
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(256 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .flush_every_ms(None)
        .open()
        .unwrap();
    let n = 100_000u64;
    let per = 256u64;
    let key = |p: &[u8], a: u64| {
        let mut k = p.to_vec();
        k.extend_from_slice(&1u64.to_be_bytes());
        k.extend_from_slice(&a.to_be_bytes());
        k
    };
    let t = std::time::Instant::now();
    let mut apply = std::time::Duration::ZERO;
    let mut i = 0;
    while i < n {
        let r = i..(i + per).min(n);
        let mut b = sled::Batch::default();
        for k in r.clone() {
            b.insert(key(b"t:", k), vec![7u8; ts]);
        }
        let t0 = std::time::Instant::now();
        db.apply_batch(b).unwrap();
        let mut b = sled::Batch::default();
        for k in r {
            b.insert(key(b"t:", k), vec![8u8; ds]);
            b.insert(key(b"f:", k), vec![9u8; fs]);
        }
        db.apply_batch(b).unwrap();
        apply += t0.elapsed();
        if (i / per) % 4 == 3 {
            db.flush().unwrap();
        }
        i += per;
    }
    db.flush().unwrap();
    println!(
        "task {ts} done {ds} finding {fs}: total {:?} apply {:?}",
        t.elapsed(),
        apply
    );
}
