use super::{breakpoints, NONE};

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
