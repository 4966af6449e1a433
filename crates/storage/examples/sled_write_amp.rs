//! Measures sled write volume for the coordinator's write pattern (diagnostic).
fn main() {
    let dir = tempfile::tempdir().unwrap();
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(40_000);
    let per_flush: u64 = std::env::args()
        .nth(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let db = sled::Config::new()
        .path(dir.path())
        .flush_every_ms(None)
        .open()
        .unwrap();
    let t = std::time::Instant::now();
    let val = vec![7u8; 250];
    let mut i = 0;
    while i < n {
        let mut b = sled::Batch::default();
        for k in i..(i + per_flush).min(n) {
            let mut key = b"t:".to_vec();
            key.extend_from_slice(&k.to_be_bytes());
            b.insert(key.clone(), val.clone());
            b.insert(key.clone(), val.clone());
            b.insert(key, val.clone());
        }
        db.apply_batch(b).unwrap();
        db.flush().unwrap();
        i += per_flush;
    }
    println!(
        "{n} x3 writes, flush every {per_flush}: {:?}, size on disk {} MB",
        t.elapsed(),
        db.size_on_disk().unwrap() / 1_000_000
    );
}
