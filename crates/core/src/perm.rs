//! A keyed pseudo-random permutation of `[0, n)`, computed one index at a time (no table), used to
//! expand jobs lazily in an order that spreads load across networks.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    key: u64,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Permutation {
    pub fn new(n: u64, key: u64) -> Self {
        // Smallest even bit width 2h with 2^(2h) >= n (h >= 1).
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        Permutation { n, half_bits, key }
    }

    pub fn len(&self) -> u64 {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn feistel(&self, x: u64) -> u64 {
        let h = self.half_bits;
        let mask = (1u64 << h) - 1;
        let (mut l, mut r) = (x >> h, x & mask);
        for round in 0..4u64 {
            let f = mix(r ^ self.key.rotate_left(round as u32 * 16) ^ round) & mask;
            (l, r) = (r, l ^ f);
        }
        (l << h) | r
    }

    /// The image of `i` (`i < n`), a bijection on `[0, n)` (cycle walking).
    pub fn at(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        let mut x = self.feistel(i);
        while x >= self.n {
            x = self.feistel(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_bijection() {
        for n in [1u64, 2, 3, 7, 64, 1000, 4097] {
            let p = Permutation::new(n, 42);
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let j = p.at(i) as usize;
                assert!(!seen[j], "n={n} dup {j}");
                seen[j] = true;
            }
        }
    }

    #[test]
    fn spreads() {
        // Consecutive indices should not map to consecutive values.
        let p = Permutation::new(1 << 16, 7);
        let adjacent = (0..1000)
            .filter(|i| p.at(*i).abs_diff(p.at(i + 1)) == 1)
            .count();
        assert!(adjacent < 20, "{adjacent}");
    }
}
