//! What both FIB benchmarks share: the real table and the address generator.

use forwarding::lpm::{read_table, real_table_path, TextTable};

/// The real table (from the iptrie package), parsed as the FIB tooling parses it.
pub fn real_table() -> TextTable {
    let path = real_table_path().unwrap_or_else(|e| panic!("the real BGP table: {e}"));
    let t = read_table(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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

/// The crates the FIB is compared with, built from a table the same way in both benches.
/// Looks `addrs` up through a batch API, 64 at a time; a checksum of every answer, so that
/// no lookup can be optimised away.
pub fn batched<A: Copy>(addrs: &[A], lookup_batch: impl Fn(&[A], &mut [u32])) -> u32 {
    let mut out = [0u32; 64];
    addrs.chunks(64).fold(0u32, |acc, c| {
        lookup_batch(c, &mut out);
        out[..c.len()].iter().fold(acc, |acc, &v| acc.wrapping_add(v))
    })
}

pub mod crates {
    use ip_network_table_deps_treebitmap::IpLookupTable;
    use ipnet::{Ipv4Net, Ipv6Net};
    use iptrie::{Ipv4Prefix, Ipv4RTrieMap, Ipv6Prefix, Ipv6RTrieMap};
    use prefix_trie::PrefixMap;
    use std::net::{Ipv4Addr, Ipv6Addr};

    pub fn treebitmap4(p: &[(u32, u8, u32)]) -> IpLookupTable<Ipv4Addr, u32> {
        let mut t = IpLookupTable::new();
        for &(a, len, v) in p {
            t.insert(Ipv4Addr::from(a), u32::from(len), v);
        }
        t
    }

    pub fn treebitmap6(p: &[(u128, u8, u32)]) -> IpLookupTable<Ipv6Addr, u32> {
        let mut t = IpLookupTable::new();
        for &(a, len, v) in p {
            t.insert(Ipv6Addr::from(a), u32::from(len), v);
        }
        t
    }

    pub fn net4(a: u32, len: u8) -> Option<Ipv4Net> {
        Ipv4Net::new(Ipv4Addr::from(a), len).ok()
    }

    pub fn net6(a: u128, len: u8) -> Option<Ipv6Net> {
        Ipv6Net::new(Ipv6Addr::from(a), len).ok()
    }

    pub fn prefix_trie4(p: &[(u32, u8, u32)]) -> PrefixMap<Ipv4Net, u32> {
        let mut t = PrefixMap::new();
        for &(a, len, v) in p {
            if let Some(n) = net4(a, len) {
                t.insert(n, v);
            }
        }
        t
    }

    pub fn prefix_trie6(p: &[(u128, u8, u32)]) -> PrefixMap<Ipv6Net, u32> {
        let mut t = PrefixMap::new();
        for &(a, len, v) in p {
            if let Some(n) = net6(a, len) {
                t.insert(n, v);
            }
        }
        t
    }

    pub fn key4(a: u32, len: u8) -> Option<Ipv4Prefix> {
        Ipv4Prefix::new(Ipv4Addr::from(a), len).ok()
    }

    pub fn key6(a: u128, len: u8) -> Option<Ipv6Prefix> {
        Ipv6Prefix::new(Ipv6Addr::from(a), len).ok()
    }

    /// iptrie's radix trie, which its LC-trie is compressed from.
    pub fn radix4(p: &[(u32, u8, u32)]) -> Ipv4RTrieMap<u32> {
        let mut t = Ipv4RTrieMap::with_root(u32::MAX);
        for &(a, len, v) in p {
            if let Some(k) = key4(a, len) {
                t.insert(k, v);
            }
        }
        t
    }

    pub fn radix6(p: &[(u128, u8, u32)]) -> Ipv6RTrieMap<u32> {
        let mut t = Ipv6RTrieMap::with_root(u32::MAX);
        for &(a, len, v) in p {
            if let Some(k) = key6(a, len) {
                t.insert(k, v);
            }
        }
        t
    }

    /// Longest match in prefix-trie, which looks up a host prefix.
    pub fn prefix_trie_lookup4(t: &PrefixMap<Ipv4Net, u32>, a: u32) -> u32 {
        net4(a, 32).and_then(|h| t.get_lpm(&h)).map_or(u32::MAX, |m| *m.1)
    }

    pub fn prefix_trie_lookup6(t: &PrefixMap<Ipv6Net, u32>, a: u128) -> u32 {
        net6(a, 128).and_then(|h| t.get_lpm(&h)).map_or(u32::MAX, |m| *m.1)
    }
}
