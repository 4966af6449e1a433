//! Stable-Rust smoke run of the fuzz entry points: deterministic pseudo-random and mutated inputs
//! must never panic (the real fuzzing is `cargo fuzz`, see crates/probes/fuzz/README.md).

use overlord_probes::service::fuzzing;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn mutate(r: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..(r.next() % 8 + 1) {
        if v.is_empty() {
            v.push(r.next() as u8);
            continue;
        }
        let i = (r.next() as usize) % v.len();
        match r.next() % 4 {
            0 => v[i] = r.next() as u8,
            1 => v.insert(i, r.next() as u8),
            2 => {
                v.remove(i);
            }
            _ => v.truncate(i),
        }
    }
    v
}

#[test]
fn probefile_parser_survives_random_and_mutated_input() {
    let seed = include_bytes!("../data/overlord-service-probes");
    let lines: Vec<&[u8]> = seed.split(|&b| b == b'\n').collect();
    let mut r = Rng(0x1234_5678_9abc_def1);
    for _ in 0..1500 {
        let l = lines[(r.next() as usize) % lines.len()];
        let mut input = b"Probe TCP NULL q||\n".to_vec();
        input.extend(mutate(&mut r, l));
        fuzzing::probefile(&input);
        let n = (r.next() % 200) as usize;
        fuzzing::probefile(&r.bytes(n));
    }
}

#[test]
fn protocol_parsers_survive_random_and_mutated_input() {
    let seeds: [&[u8]; 10] = [
        b"\x00\x00\x00\x2c\x04\x14aaaaaaaaaaaaaaaa\x00\x00\x00\x04kex1\x00\x00\x00\x00",
        b"\x01HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n<tit\r\n0\r\n\r\n",
        b"\x02$12\r\n# Server\r\nredis_version:7\r\n",
        b"\x03\x30\x0a\x00\x03abc123\x20\x02\x00\x00",
        b"\x04RFB 003.008\n",
        b"\x05\x01\x00\x0b\x00\x00\x00\x10\x00",
        b"\x06220-a\r\n220 b\r\n",
        b"\x070\x82\x01\x00",
        b"\x08$P(1)$SUBST(1,\"a\",\"b\")$I(1,\">\")\xffabc",
        b"\x09\x00\xff\r\n",
    ];
    let mut r = Rng(0xfeed_beef_cafe_f00d);
    for i in 0..20_000 {
        let s = seeds[i % seeds.len()];
        fuzzing::protocols(&mutate(&mut r, s));
        let n = (r.next() % 300) as usize;
        fuzzing::protocols(&r.bytes(n));
    }
}
