//! What both FIB benchmarks share: the real table and the address generator.

use forwarding::lpm::{read_table, TextTable};

/// The real table (outside the repository), parsed as the FIB tooling parses it.
pub fn real_table() -> TextTable {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/bgp-full-table.lpm.gz");
    let t =
        read_table(path.as_ref()).unwrap_or_else(|e| panic!("{path}: {e} (the table lives outside the repository)"));
    eprintln!(
        "{} IPv4 and {} IPv6 prefixes ({} with host bits set, masked; {} lines skipped)",
        t.v4.len(),
        t.v6.len(),
        t.host_bits,
        t.skipped
    );
    t
}

/// xorshift64: cheap, and the same addresses every run.
pub fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// `n` addresses inside random prefixes of the table, and `n` uniformly random ones.
pub fn addresses4(p: &[(u32, u8, u32)], n: usize, seed: &mut u64) -> (Vec<u32>, Vec<u32>) {
    let inside = (0..n)
        .map(|_| {
            let (a, len, _) = p[(rng(seed) % p.len() as u64) as usize];
            a | if len >= 32 { 0 } else { (rng(seed) as u32) & (u32::MAX >> len) }
        })
        .collect();
    (inside, (0..n).map(|_| rng(seed) as u32).collect())
}

/// The same for IPv6.
pub fn addresses6(p: &[(u128, u8, u32)], n: usize, seed: &mut u64) -> (Vec<u128>, Vec<u128>) {
    let r128 = |seed: &mut u64| (u128::from(rng(seed)) << 64) | u128::from(rng(seed));
    let inside = (0..n)
        .map(|_| {
            let (a, len, _) = p[(rng(seed) % p.len() as u64) as usize];
            a | if len >= 128 { 0 } else { r128(seed) & (u128::MAX >> len) }
        })
        .collect();
    (inside, (0..n).map(|_| r128(seed)).collect())
}
