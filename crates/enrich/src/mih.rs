//! In-memory multi-index hashing (Norouzi, Punjani, Fleet: "Fast Search in Hamming Space with
//! Multi-Index Hashing", CVPR 2012) over 64-bit hashes.
//!
//! The 64 bits are split into `m` disjoint substrings; table `j` maps substring `j` to the items
//! that have it. By pigeonhole, an item within Hamming distance `r` of the query agrees with the
//! query to within `r / m` (floor) bits on at least one substring, so probing every substring key
//! within that radius in every table yields a candidate superset; candidates are then checked with
//! the exact full distance. Recall is therefore exact.
//!
//! Tables are static CSR arrays (offsets into an item array) rebuilt from all hashes; items
//! inserted since the last build sit in a small delta list that is scanned linearly and folded in
//! once it grows past `max(4096, n/64)` entries.

/// One substring: `len` bits starting at bit `shift` (from the LSB).
#[derive(Debug, Clone, Copy)]
struct Sub {
    shift: u32,
    len: u32,
}

impl Sub {
    #[inline]
    fn key(&self, h: u64) -> u32 {
        ((h >> self.shift) & ((1u64 << self.len) - 1)) as u32
    }
}

struct Table {
    sub: Sub,
    offsets: Vec<u32>,
    items: Vec<u32>,
    /// `hashes[items[i]]`, stored inline so that a bucket is scanned sequentially.
    item_hashes: Vec<u64>,
}

/// Multi-index hash table over `hashes[i]`; item ids are the positions `i`.
pub struct Mih {
    hashes: Vec<u64>,
    built: usize,
    tables: Vec<Table>,
}

impl Default for Mih {
    fn default() -> Self {
        Mih::build(Vec::new())
    }
}

/// Number of substrings for `n` items: m = round(64 / log2 n), i.e. substrings of about
/// log2(n) bits (the paper's rule), between 3 and 8. Measured over 10^6 hashes at r = 8
/// (`MIH_SWEEP=3,4,5 bench_similar`): m = 3 (21-22-bit tables, mostly empty buckets) beats
/// m = 4 and m = 5 by 3x and 1.3x.
pub fn substrings_for(n: usize) -> usize {
    let lg = (n.max(256) as f64).log2();
    ((64.0 / lg).round() as usize).clamp(3, 8)
}

impl Mih {
    /// Builds the tables over `hashes`.
    pub fn build(hashes: Vec<u64>) -> Mih {
        let m = substrings_for(hashes.len());
        Mih::build_with(hashes, m)
    }

    /// Builds the tables with `m` substrings (3..=8).
    pub fn build_with(hashes: Vec<u64>, m: usize) -> Mih {
        let m = m.clamp(3, 8);
        let mut subs = Vec::with_capacity(m);
        let mut shift = 0;
        for j in 0..m {
            let len = (64 - shift) / (m as u32 - j as u32);
            subs.push(Sub { shift, len });
            shift += len;
        }
        let tables = subs
            .into_iter()
            .map(|sub| {
                let nkeys = 1usize << sub.len;
                let mut counts = vec![0u32; nkeys + 1];
                for &h in &hashes {
                    counts[sub.key(h) as usize + 1] += 1;
                }
                for k in 0..nkeys {
                    counts[k + 1] += counts[k];
                }
                let mut fill = counts.clone();
                let mut items = vec![0u32; hashes.len()];
                let mut item_hashes = vec![0u64; hashes.len()];
                for (i, &h) in hashes.iter().enumerate() {
                    let k = sub.key(h) as usize;
                    items[fill[k] as usize] = i as u32;
                    item_hashes[fill[k] as usize] = h;
                    fill[k] += 1;
                }
                Table { sub, offsets: counts, items, item_hashes }
            })
            .collect();
        let n = hashes.len();
        Mih { built: n, hashes, tables }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Number of substrings (tables).
    pub fn substrings(&self) -> usize {
        self.tables.len()
    }

    /// The hash of item `i`.
    pub fn hash(&self, i: u32) -> u64 {
        self.hashes[i as usize]
    }

    /// Appends an item; returns its id. Rebuilds the tables when the delta grows too large.
    pub fn push(&mut self, h: u64) -> u32 {
        let id = self.hashes.len() as u32;
        self.hashes.push(h);
        let delta = self.hashes.len() - self.built;
        if delta > 4096.max(self.built / 64) {
            let hashes = std::mem::take(&mut self.hashes);
            *self = Mih::build(hashes);
        }
        id
    }

    /// Approximate heap bytes used.
    pub fn heap_bytes(&self) -> usize {
        self.hashes.capacity() * 8
            + self
                .tables
                .iter()
                .map(|t| t.offsets.capacity() * 4 + t.items.capacity() * 4 + t.item_hashes.capacity() * 8)
                .sum::<usize>()
    }

    /// All items within Hamming distance `r` of `q`, as `(item, distance)`, unordered.
    pub fn query(&self, q: u64, r: u32, out: &mut Vec<(u32, u32)>) {
        out.clear();
        let m = self.tables.len() as u32;
        let k = r / m;
        // probing cost: sum over tables of C(len, <=k); fall back to a scan when it exceeds n
        let probes: f64 = self.tables.iter().map(|t| ball_size(t.sub.len, k)).sum();
        if probes > self.built as f64 {
            for (i, &h) in self.hashes.iter().enumerate() {
                let d = (h ^ q).count_ones();
                if d <= r {
                    out.push((i as u32, d));
                }
            }
            return;
        }
        // An item is reported by the first table whose substring lies within k of the query's;
        // later tables skip it (no per-query marks, so queries need only &self).
        for (j, t) in self.tables.iter().enumerate() {
            let key = t.sub.key(q);
            let earlier = &self.tables[..j];
            let mut visit = |key: u32| {
                let (a, b) = (t.offsets[key as usize] as usize, t.offsets[key as usize + 1] as usize);
                for (&it, &h) in t.items[a..b].iter().zip(&t.item_hashes[a..b]) {
                    let d = (h ^ q).count_ones();
                    if d <= r && !earlier.iter().any(|e| (e.sub.key(h) ^ e.sub.key(q)).count_ones() <= k) {
                        out.push((it, d));
                    }
                }
            };
            enumerate_ball(key, t.sub.len, k, &mut visit);
        }
        for (i, &h) in self.hashes.iter().enumerate().skip(self.built) {
            let d = (h ^ q).count_ones();
            if d <= r {
                out.push((i as u32, d));
            }
        }
    }
}

fn ball_size(len: u32, k: u32) -> f64 {
    let mut total = 0f64;
    let mut c = 1f64;
    for i in 0..=k.min(len) {
        total += c;
        c = c * (len - i) as f64 / (i + 1) as f64;
    }
    total
}

/// Calls `f` for every `len`-bit key within Hamming distance `k` of `key`.
fn enumerate_ball(key: u32, len: u32, k: u32, f: &mut impl FnMut(u32)) {
    fn rec(key: u32, start: u32, len: u32, left: u32, f: &mut impl FnMut(u32)) {
        f(key);
        if left == 0 {
            return;
        }
        for b in start..len {
            rec(key ^ (1 << b), b + 1, len, left - 1, f);
        }
    }
    rec(key, 0, len, k, f);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    #[test]
    fn exact_recall_against_brute_force() {
        let mut s = 0x1234_5678_9abc_def1u64;
        let mut hashes: Vec<u64> = (0..20_000).map(|_| rng(&mut s)).collect();
        // plant near neighbours of a few centres
        let centres: Vec<u64> = (0..20).map(|_| rng(&mut s)).collect();
        for &c in &centres {
            for i in 0..30 {
                let mut h = c;
                for _ in 0..(i % 12) {
                    h ^= 1 << (rng(&mut s) % 64);
                }
                hashes.push(h);
            }
        }
        let mut mih = Mih::build(hashes[..15_000].to_vec());
        for &h in &hashes[15_000..] {
            mih.push(h);
        }
        let mut out = Vec::new();
        for r in [0, 3, 4, 8, 11] {
            for &c in &centres {
                mih.query(c, r, &mut out);
                let mut got: Vec<u32> = out.iter().map(|x| x.0).collect();
                got.sort();
                let want: Vec<u32> = hashes
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| (**h ^ c).count_ones() <= r)
                    .map(|(i, _)| i as u32)
                    .collect();
                assert_eq!(got, want, "radius {r}");
            }
        }
    }

    #[test]
    fn ball_enumeration_counts() {
        let mut n = 0;
        enumerate_ball(0, 10, 2, &mut |_| n += 1);
        assert_eq!(n, 1 + 10 + 45);
        assert_eq!(ball_size(10, 2), 56.0);
    }
}
