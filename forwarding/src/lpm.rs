//! IPv4 longest-prefix match as ranges (in the manner of DXR): the prefixes are flattened into
//! the sorted points where the answer changes, split by the top 16 bits of the address. A
//! lookup is one index read and a binary search over the few points of one /16 — compact
//! (a full Internet table is about 12 MB) and with no pointer chasing.
//!
//! The structure is immutable: changes build a new one (see `fib`), which readers pick up
//! through the snapshot swap.

/// "No route": the value of addresses no prefix covers.
pub const NONE: u32 = u32::MAX;

#[derive(Debug, Default, Clone)]
pub struct Lpm4 {
    /// Per /16: index of its first breakpoint in `low`/`val`.
    first: Vec<u32>,
    /// Per /16: the value at the start of the /16 (before its first breakpoint).
    base: Vec<u32>,
    /// Low 16 bits of the breakpoints, sorted within each /16.
    low: Vec<u16>,
    /// Value from each breakpoint on.
    val: Vec<u32>,
    /// Distinct prefixes it was built from.
    prefixes: usize,
}

/// A routing table read from lines `PREFIX VALUE` (the format of the real BGP table in
/// `../shared/data`, where the value is the origin AS).
#[derive(Debug, Default, Clone)]
pub struct TextTable {
    pub v4: Vec<(u32, u8, u32)>,
    pub v6: Vec<(u128, u8, u32)>,
    /// Prefixes that had host bits set (masked, kept).
    pub host_bits: usize,
    /// Lines that are not `PREFIX VALUE` (skipped).
    pub skipped: usize,
}

/// Parses a table tolerantly: a bad line is counted and skipped, host bits are masked and
/// counted; nothing panics.
pub fn parse_table(text: &str) -> TextTable {
    let mut t = TextTable::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(prefix), Some(value)) = (f.next(), f.next()) else {
            t.skipped += usize::from(!line.trim().is_empty());
            continue;
        };
        let Ok(value) = value.parse::<u32>() else {
            t.skipped += 1;
            continue;
        };
        match prefix.parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(n)) => {
                t.host_bits += usize::from(n.trunc() != n);
                t.v4.push((u32::from(n.network()), n.prefix_len(), value));
            }
            Ok(ipnet::IpNet::V6(n)) => {
                t.host_bits += usize::from(n.trunc() != n);
                t.v6.push((u128::from(n.network()), n.prefix_len(), value));
            }
            Err(_) => t.skipped += 1,
        }
    }
    t
}

/// The mask of a `len`-bit prefix in a `bits`-bit address space, kept in the low bits.
fn prefix_mask(len: u8, bits: u32) -> u128 {
    if len == 0 {
        0
    } else {
        (u128::MAX << (128 - u32::from(len))) >> (128 - bits)
    }
}

/// The points where the longest match changes, sorted: (first address, value from there on),
/// starting with (0, NONE); and how many distinct prefixes there were. Prefixes are (network, length, value) in a `bits`-bit space;
/// host bits are ignored and a later entry for the same prefix wins. A sweep over the
/// prefixes sorted by start (shorter first) with a stack of the ones still open.
fn breakpoints(prefixes: impl Iterator<Item = (u128, u8, u32)>, bits: u32) -> (Vec<(u128, u32)>, usize) {
    let mut p: Vec<(u128, u8, u32, usize)> = prefixes
        .enumerate()
        .map(|(i, (a, len, v))| {
            let len = len.min(bits as u8);
            (a & prefix_mask(len, bits), len, v, i)
        })
        .collect();
    p.sort_unstable_by_key(|&(a, len, _, i)| (a, len, i));
    p.dedup_by(|later, earlier| {
        if later.0 == earlier.0 && later.1 == earlier.1 {
            earlier.2 = later.2;
            true
        } else {
            false
        }
    });
    let mut points: Vec<(u128, u32)> = Vec::with_capacity(p.len() * 2 + 1);
    let mut put = |at: u128, v: u32| match points.last_mut() {
        Some(last) if last.0 == at => last.1 = v,
        _ => points.push((at, v)),
    };
    put(0, NONE);
    // (end exclusive, value); None: the prefix runs to the end of the address space.
    let mut stack: Vec<(Option<u128>, u32)> = Vec::new();
    for &(a, len, v, _) in &p {
        let size_bits = bits - u32::from(len);
        let end = if size_bits >= 128 { None } else { a.checked_add(1u128 << size_bits) };
        let end = end.filter(|e| bits == 128 || *e < (1u128 << bits));
        while let Some(&(Some(top_end), _)) = stack.last() {
            if top_end > a {
                break;
            }
            stack.pop();
            let under = stack.last().map_or(NONE, |s| s.1);
            put(top_end, under);
        }
        put(a, v);
        stack.push((end, v));
    }
    while let Some((top_end, _)) = stack.pop() {
        let under = stack.last().map_or(NONE, |s| s.1);
        if let Some(e) = top_end {
            put(e, under);
        }
    }
    points.dedup_by(|later, earlier| later.1 == earlier.1);
    (points, p.len())
}

impl Lpm4 {
    /// Builds from (network, length, value); later entries for the same prefix win. Host
    /// bits are ignored.
    pub fn build(prefixes: &[(u32, u8, u32)]) -> Lpm4 {
        let (points, distinct) = breakpoints(prefixes.iter().map(|&(a, len, v)| (u128::from(a), len, v)), 32);
        // Split by /16: each chunk keeps the value it starts with and its inner points.
        let mut t = Lpm4 {
            first: Vec::with_capacity(65537),
            base: Vec::with_capacity(65536),
            prefixes: distinct,
            ..Default::default()
        };
        let mut i = 0;
        let mut current = NONE;
        for chunk in 0u128..65536 {
            let lo = chunk << 16;
            let hi = lo + 65536;
            while i < points.len() && points[i].0 <= lo {
                current = points[i].1;
                i += 1;
            }
            t.first.push(t.low.len() as u32);
            t.base.push(current);
            while i < points.len() && points[i].0 < hi {
                t.low.push((points[i].0 & 0xffff) as u16);
                t.val.push(points[i].1);
                current = points[i].1;
                i += 1;
            }
        }
        t.first.push(t.low.len() as u32);
        t
    }

    /// The value of the longest prefix covering `a`, or [`NONE`].
    #[inline]
    pub fn lookup(&self, a: u32) -> u32 {
        let c = (a >> 16) as usize;
        let (Some(&lo), Some(&hi)) = (self.first.get(c), self.first.get(c + 1)) else { return NONE };
        let (lo, hi) = (lo as usize, hi as usize);
        let low = (a & 0xffff) as u16;
        let k = self.low[lo..hi].partition_point(|&x| x <= low);
        if k == 0 {
            self.base[c]
        } else {
            self.val[lo + k - 1]
        }
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Looks up many addresses at once (`out[i]` for `addrs[i]`). Each group of 16 first reads
    /// all its /16 index entries and then searches, so their cache misses overlap instead of
    /// queueing one after another.
    pub fn lookup_batch(&self, addrs: &[u32], out: &mut [u32]) {
        const G: usize = 16;
        for (a, o) in addrs.chunks(G).zip(out.chunks_mut(G)) {
            let mut bounds = [(0u32, 0u32, NONE); G];
            for (b, &x) in bounds.iter_mut().zip(a) {
                let c = (x >> 16) as usize;
                // `first` has 65537 entries and `base` 65536 (built that way), so c and c + 1 are
                // in range for every u32 address.
                *b = (self.first[c], self.first[c + 1], self.base[c]);
            }
            for ((&(lo, hi, base), &x), r) in bounds.iter().zip(a).zip(o.iter_mut()) {
                let (lo, hi) = (lo as usize, hi as usize);
                let k = self.low[lo..hi].partition_point(|&y| y <= (x & 0xffff) as u16);
                *r = if k == 0 { base } else { self.val[lo + k - 1] };
            }
        }
    }

    /// Heap bytes of the structure.
    pub fn memory_bytes(&self) -> usize {
        self.first.capacity() * 4 + self.base.capacity() * 4 + self.low.capacity() * 2 + self.val.capacity() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(p: &[(u32, u8, u32)], a: u32) -> u32 {
        let mut best: Option<(u8, u32)> = None;
        for &(net, len, v) in p {
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            if a & mask == net & mask && best.is_none_or(|(l, _)| len >= l) {
                best = Some((len, v));
            }
        }
        best.map_or(NONE, |b| b.1)
    }

    #[test]
    fn batch_lookup_agrees_with_single_lookups() {
        let p = [(0x0a00_0000, 8, 1), (0x0a01_0000, 16, 2), (0x0a01_0100, 24, 3), (0, 0, 9)];
        let t = Lpm4::build(&p);
        let addrs: Vec<u32> = (0..1000u32).map(|i| 0x0a01_0000u32.wrapping_add(i.wrapping_mul(0x0001_0101))).collect();
        let mut out = vec![0; addrs.len()];
        t.lookup_batch(&addrs, &mut out);
        for (a, o) in addrs.iter().zip(&out) {
            assert_eq!(*o, t.lookup(*a));
        }
    }

    #[test]
    fn table_text_is_parsed_tolerantly() {
        let t = parse_table("1.0.4.0/22 38803\n10.1.2.3/8 7\n\ngarbage\n2001:db8::/32 65000\n1.2.3.0/24 notanumber\n");
        assert_eq!(t.v4, vec![(0x0100_0400, 22, 38803), (0x0a00_0000, 8, 7)]);
        assert_eq!(t.v6, vec![(0x2001_0db8u128 << 96, 32, 65000)]);
        assert_eq!((t.host_bits, t.skipped), (1, 2));
    }

    #[test]
    fn empty_table_has_no_routes() {
        let t = Lpm4::build(&[]);
        assert_eq!(t.lookup(0), NONE);
        assert_eq!(t.lookup(u32::MAX), NONE);
    }

    #[test]
    fn edges_of_the_address_space() {
        let t = Lpm4::build(&[(0, 0, 1), (0xffff_ffff, 32, 2), (0, 32, 3), (0x8000_0000, 1, 4)]);
        assert_eq!(t.lookup(0), 3);
        assert_eq!(t.lookup(1), 1);
        assert_eq!(t.lookup(0x7fff_ffff), 1);
        assert_eq!(t.lookup(0x8000_0000), 4);
        assert_eq!(t.lookup(0xffff_fffe), 4);
        assert_eq!(t.lookup(0xffff_ffff), 2);
    }

    #[test]
    fn nested_prefixes_and_later_duplicates() {
        let p = [(0x0a00_0000, 8, 1), (0x0a01_0000, 16, 2), (0x0a01_0100, 24, 3), (0x0a01_0000, 16, 5)];
        let t = Lpm4::build(&p);
        assert_eq!(t.lookup(0x0a01_0101), 3);
        assert_eq!(t.lookup(0x0a01_0201), 5, "the later duplicate replaced the first");
        assert_eq!(t.lookup(0x0a02_0000), 1);
        assert_eq!(t.lookup(0x0b00_0000), NONE);
    }

    #[test]
    fn agrees_with_naive_on_random_tables() {
        let mut s: u64 = 0x9e37_79b9;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..30 {
            // Cluster addresses so that prefixes nest and share /16s.
            let space = if round % 2 == 0 { 0x00ff_ffff } else { 0xffff_ffff };
            let p: Vec<(u32, u8, u32)> =
                (0..300).map(|i| (((next() as u32) & space) | 0x0a00_0000, (next() % 33) as u8, i)).collect();
            let t = Lpm4::build(&p);
            for _ in 0..3000 {
                let a = ((next() as u32) & space) | 0x0a00_0000;
                assert_eq!(t.lookup(a), naive(&p, a), "round {round} addr {a:#x}");
            }
            // Every prefix's first and last address too.
            for &(net, len, _) in &p {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
                let (first, last) = (net & mask, (net & mask) | !mask);
                assert_eq!(t.lookup(first), naive(&p, first));
                assert_eq!(t.lookup(last), naive(&p, last));
            }
        }
    }
}

/// IPv6 longest-prefix match on the same idea: the sorted points where the answer changes,
/// grouped by /32 (the groups of each /16 found through a direct index, since IPv6 routes
/// crowd into a few /16s). A lookup is an index read, a search among the /32 groups of one
/// /16, and a search among the points of one /32.
#[derive(Debug, Default, Clone)]
pub struct Lpm6 {
    /// Per top 16 bits: the first of its groups in `keys` (65537 entries).
    by16: Vec<u32>,
    /// Per top 16 bits: the value in effect where that /16 starts.
    start16: Vec<u32>,
    /// Sorted top-32 values of the groups (/32s that contain points).
    keys: Vec<u32>,
    /// Per group: index of its first point, and the value at the group's start.
    firsts: Vec<(u32, u32)>,
    /// Per group, in key order: where its points end.
    ends: Vec<u32>,
    /// Low 96 bits of the points, and the value from each point on.
    low: Vec<u128>,
    val: Vec<u32>,
    /// The value of each gap between groups: the answer for a /32 without points.
    gap: Vec<u32>,
}

impl Lpm6 {
    /// Builds from (network, length, value); later entries for the same prefix win.
    pub fn build(prefixes: &[(u128, u8, u32)]) -> Lpm6 {
        let (points, _) = breakpoints(prefixes.iter().copied(), 128);
        // Group by top 32 bits.
        let mut t = Lpm6::default();
        let mut current = NONE;
        let mut i = 0;
        while i < points.len() {
            let key = (points[i].0 >> 96) as u32;
            // The value where this /32 starts is what the previous point left.
            let start_value = if points[i].0 & ((1u128 << 96) - 1) == 0 { NONE } else { current };
            let first = t.low.len() as u32;
            let mut start = start_value;
            while i < points.len() && (points[i].0 >> 96) as u32 == key {
                if points[i].0 & ((1u128 << 96) - 1) == 0 {
                    start = points[i].1;
                } else {
                    t.low.push(points[i].0 & ((1u128 << 96) - 1));
                    t.val.push(points[i].1);
                }
                current = points[i].1;
                i += 1;
            }
            t.gap.push(current);
            t.firsts.push((first, start));
            t.keys.push(key);
            t.ends.push(t.low.len() as u32);
        }
        // The /16 index: where each /16's groups start, and the value in effect at its start.
        let mut g = 0;
        for top in 0u32..65536 {
            while g < t.keys.len() && (t.keys[g] >> 16) < top {
                g += 1;
            }
            t.by16.push(g as u32);
            let before = if g == 0 { NONE } else { t.gap[g - 1] };
            // A group at the very start of the /16 sets its own start value.
            t.start16.push(before);
        }
        t.by16.push(t.keys.len() as u32);
        t
    }

    #[inline]
    pub fn lookup(&self, a: u128) -> u32 {
        let key = (a >> 96) as u32;
        let top = (key >> 16) as usize;
        let (Some(&g0), Some(&g1)) = (self.by16.get(top), self.by16.get(top + 1)) else { return NONE };
        let (g0, g1) = (g0 as usize, g1 as usize);
        // Groups of this /16 at or before our /32.
        let n = self.keys[g0..g1].partition_point(|&k| k <= key);
        if n == 0 {
            return self.start16.get(top).copied().unwrap_or(NONE);
        }
        let g = g0 + n - 1;
        if self.keys[g] != key {
            // No point inside our /32: what the last group before it left.
            return self.gap[g];
        }
        let (first, start) = self.firsts[g];
        let (lo, hi) = (first as usize, self.ends[g] as usize);
        let low = a & ((1u128 << 96) - 1);
        let k = self.low[lo..hi].partition_point(|&x| x <= low);
        if k == 0 {
            start
        } else {
            self.val[lo + k - 1]
        }
    }

    pub fn memory_bytes(&self) -> usize {
        self.by16.capacity() * 4
            + self.start16.capacity() * 4
            + self.firsts.capacity() * 8
            + self.keys.capacity() * 4
            + self.ends.capacity() * 4
            + self.low.capacity() * 16
            + self.val.capacity() * 4
            + self.gap.capacity() * 4
    }
}

#[cfg(test)]
mod tests6 {
    use super::*;

    fn naive(p: &[(u128, u8, u32)], a: u128) -> u32 {
        let mut best: Option<(u8, u32)> = None;
        for &(net, len, v) in p {
            let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            if a & mask == net & mask && best.is_none_or(|(l, _)| len >= l) {
                best = Some((len, v));
            }
        }
        best.map_or(NONE, |b| b.1)
    }

    #[test]
    fn v6_edges_and_nesting() {
        let p = [
            (0u128, 0u8, 1u32),
            (0x2001_0db8u128 << 96, 32, 2),
            ((0x2001_0db8u128 << 96) | (1u128 << 80), 48, 3),
            (u128::MAX, 128, 4),
        ];
        let t = Lpm6::build(&p);
        for a in [
            0u128,
            0x2001_0db8u128 << 96,
            (0x2001_0db8u128 << 96) | (1u128 << 80) | 5,
            (0x2001_0db9u128 << 96) - 1,
            u128::MAX,
            u128::MAX - 1,
        ] {
            assert_eq!(t.lookup(a), naive(&p, a), "{a:#x}");
        }
        assert_eq!(Lpm6::build(&[]).lookup(7), NONE);
    }

    #[test]
    fn v6_agrees_with_naive_on_random_tables() {
        let mut s: u64 = 0x51ed_270b;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        for round in 0..20 {
            // Addresses under a few /16s, like the real IPv6 table.
            let addr = |n: &mut dyn FnMut() -> u64| -> u128 {
                let top = [0x2001u128, 0x2400, 0x2a00][(n() % 3) as usize];
                (top << 112) | (u128::from(n() & 0xff_ffff) << 88) | u128::from(n())
            };
            let p: Vec<(u128, u8, u32)> = (0..300)
                .map(|i| (addr(&mut next), [0, 16, 19, 29, 32, 40, 48, 56, 64, 128][(next() % 10) as usize], i))
                .collect();
            let t = Lpm6::build(&p);
            for _ in 0..2000 {
                let a = addr(&mut next);
                assert_eq!(t.lookup(a), naive(&p, a), "round {round} addr {a:#x}");
            }
            for &(net, len, _) in &p {
                let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
                for a in [net & mask, (net & mask) | !mask] {
                    assert_eq!(t.lookup(a), naive(&p, a), "prefix edge {a:#x}");
                }
            }
        }
    }
}
