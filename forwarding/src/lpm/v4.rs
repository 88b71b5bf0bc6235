use super::trie::{Entry, Trie, NO_ROUTE};
use super::{breakpoints, NONE};
use std::collections::HashMap;
use std::sync::Arc;

/// /16 chunks per /8 segment.
const CHUNKS: usize = 256;
/// Direct-indexed /18 slots per /8 segment (four per chunk).
const DIR: usize = 1024;
/// Bit offset, from the top of the address, where the nodes under a /18 slot start.
const NODES_AT: u32 = 18;

/// One /8 of the address space.
#[derive(Debug, Clone)]
struct Seg {
    /// Per /18: its value, or its node.
    dir: [Entry; DIR],
    trie: Trie,
    /// Per chunk: where its nodes and leaves start; a 257th entry closes the last. A chunk's
    /// nodes point only inside the chunk, so an unchanged chunk moves to a new segment by
    /// shifting its indices. The lookup never reads this.
    spans: Box<[(u32, u32); CHUNKS + 1]>,
}

impl Seg {
    fn empty() -> Seg {
        Seg { dir: [NO_ROUTE; DIR], trie: Trie::default(), spans: Box::new([(0, 0); CHUNKS + 1]) }
    }

    /// The slot of `a` in `dir` (its bits 8..18).
    #[inline]
    fn slot(a: u32) -> usize {
        ((a >> (32 - NODES_AT)) as usize) & (DIR - 1)
    }

    #[inline]
    fn lookup(&self, a: u32) -> u32 {
        self.trie.walk(self.dir[Self::slot(a)], a, NODES_AT)
    }

    fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Seg>() + std::mem::size_of::<[(u32, u32); CHUNKS + 1]>() + self.trie.memory_bytes()
    }

    /// Appends chunk `i`, built from its points (first address within the chunk, value
    /// from there on; sorted) and the value it starts with.
    fn push_chunk(&mut self, i: usize, base: u32, points: &[(u32, u32)]) {
        self.spans[i] = (self.trie.nodes.len() as u32, self.trie.leaves.len() as u32);
        const SLOT_BITS: u32 = 32 - NODES_AT;
        for q in 0..4u32 {
            let (start, end) = (q << SLOT_BITS, (q + 1) << SLOT_BITS);
            let from = points.partition_point(|p| p.0 <= start);
            let to = points.partition_point(|p| p.0 < end);
            let v0 = from.checked_sub(1).map_or(base, |k| points[k].1);
            self.dir[i * 4 + q as usize] = self.trie.entry(start, SLOT_BITS, v0, &points[from..to]);
        }
    }

    /// Appends chunk `i` of `old` unchanged.
    fn copy_chunk(&mut self, i: usize, old: &Seg) {
        let (n0, l0) = old.spans[i];
        let (n1, l1) = old.spans[i + 1];
        self.spans[i] = (self.trie.nodes.len() as u32, self.trie.leaves.len() as u32);
        let moved = self.trie.append_from(&old.trie, n0 as usize..n1 as usize, l0 as usize..l1 as usize);
        for q in i * 4..i * 4 + 4 {
            self.dir[q] = Trie::moved(old.dir[q], moved);
        }
    }
}

/// IPv4 longest-prefix match for forwarding, in the manner of Poptrie: the top 18 bits index
/// a table directly, and what lies below a /18 with longer prefixes is a multibit trie of
/// 6-bit nodes compressed with bitmaps. A /24 route is found with three dependent reads (the
/// /18 slot, one node, one leaf), and a full Internet table takes a few MiB.
///
/// A snapshot is immutable and cheap to clone: its 256 /8 segments are shared. An
/// [`Lpm4Writer`] applies single-route changes and publishes a new snapshot that rebuilds
/// only the segments that changed; readers of older snapshots are never disturbed, and a
/// segment is freed when the last snapshot holding it goes away.
#[derive(Debug, Clone)]
pub struct Lpm4 {
    segs: Vec<Arc<Seg>>,
    /// Distinct prefixes it holds.
    prefixes: usize,
}

impl Default for Lpm4 {
    fn default() -> Self {
        let empty = Arc::new(Seg::empty());
        Lpm4 { segs: vec![empty; 256], prefixes: 0 }
    }
}

impl Lpm4 {
    /// Builds from (network, length, value); later entries for the same prefix win. Host
    /// bits are ignored.
    pub fn build(prefixes: &[(u32, u8, u32)]) -> Lpm4 {
        Lpm4Writer::with_prefixes(prefixes).publish()
    }

    /// The value of the longest prefix covering `a`, or [`NONE`].
    #[inline]
    pub fn lookup(&self, a: u32) -> u32 {
        match self.segs.get((a >> 24) as usize) {
            Some(s) => s.lookup(a),
            None => NONE,
        }
    }

    /// Looks up many addresses at once (`out[i]` for `addrs[i]`). Each group of 16 first reads
    /// all its /18 slots and then walks the tries, so their cache misses overlap instead of
    /// queueing one after another.
    pub fn lookup_batch(&self, addrs: &[u32], out: &mut [u32]) {
        const G: usize = 16;
        for (a, o) in addrs.chunks(G).zip(out.chunks_mut(G)) {
            let mut heads: [Option<(&Seg, Entry)>; G] = [None; G];
            for (h, &x) in heads.iter_mut().zip(a) {
                *h = self.segs.get((x >> 24) as usize).map(|seg| (&**seg, seg.dir[Seg::slot(x)]));
            }
            for ((h, &x), r) in heads.iter().zip(a).zip(o.iter_mut()) {
                *r = h.map_or(NONE, |(seg, e)| seg.trie.walk(e, x, NODES_AT));
            }
        }
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.prefixes
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes == 0
    }

    /// Heap bytes of the structure (shared segments counted once).
    pub fn memory_bytes(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let segs: usize = self.segs.iter().filter(|s| seen.insert(Arc::as_ptr(s))).map(|s| s.memory_bytes()).sum();
        segs + self.segs.capacity() * std::mem::size_of::<Arc<Seg>>()
    }
}

/// The writer's side of an [`Lpm4`]: the prefixes themselves, kept so that one change
/// recomputes only what it touches. Prefixes of /16 and longer live in the /16 chunk they
/// fall in; shorter ones set the value each chunk starts from.
#[derive(Debug)]
pub struct Lpm4Writer {
    /// Per length 0..16: network → value.
    short: Vec<HashMap<u32, u32>>,
    /// Per /16 chunk: (low 16 bits, length, value) of its prefixes /16../32, sorted.
    chunks: Vec<Vec<(u16, u8, u32)>>,
    /// Per chunk: the value of the longest short prefix covering it.
    base: Vec<u32>,
    /// Chunks changed since the last publish, and their segments.
    dirty: Vec<u64>,
    dirty_segs: [bool; 256],
    count: usize,
    current: Lpm4,
}

impl Default for Lpm4Writer {
    fn default() -> Self {
        Lpm4Writer {
            short: vec![HashMap::new(); 16],
            chunks: vec![Vec::new(); 65536],
            base: vec![NONE; 65536],
            dirty: vec![0; 65536 / 64],
            dirty_segs: [false; 256],
            count: 0,
            current: Lpm4::default(),
        }
    }
}

fn mask(len: u8) -> u32 {
    super::prefix_mask(len, 32) as u32
}

impl Lpm4Writer {
    /// A writer holding these prefixes (later entries for the same prefix win), faster than
    /// inserting them one by one.
    pub fn with_prefixes(prefixes: &[(u32, u8, u32)]) -> Lpm4Writer {
        let mut w = Lpm4Writer::default();
        for &(a, len, v) in prefixes {
            let len = len.min(32);
            let a = a & mask(len);
            if len < 16 {
                w.short[usize::from(len)].insert(a, v);
            } else {
                w.chunks[(a >> 16) as usize].push((a as u16, len, v));
            }
        }
        for c in &mut w.chunks {
            // Stable: equal prefixes stay in input order, and the last one is kept.
            c.sort_by_key(|&(low, len, _)| (low, len));
            c.dedup_by(|later, earlier| {
                let same = (later.0, later.1) == (earlier.0, earlier.1);
                if same {
                    earlier.2 = later.2;
                }
                same
            });
        }
        // Paint chunk bases from the short prefixes, shortest first so longer ones win.
        for len in 0..16u8 {
            for (&net, &v) in &w.short[usize::from(len)] {
                let first = (net >> 16) as usize;
                w.base[first..first + (1usize << (16 - len))].fill(v);
            }
        }
        w.count = w.short.iter().map(HashMap::len).sum::<usize>() + w.chunks.iter().map(Vec::len).sum::<usize>();
        w.dirty.fill(u64::MAX);
        w.dirty_segs = [true; 256];
        w
    }

    /// Adds or replaces a prefix; returns the value it had.
    pub fn insert(&mut self, net: u32, len: u8, value: u32) -> Option<u32> {
        let len = len.min(32);
        let net = net & mask(len);
        let old = if len < 16 {
            let old = self.short[usize::from(len)].insert(net, value);
            if old != Some(value) {
                self.repaint(net, len);
            }
            old
        } else {
            let c = (net >> 16) as usize;
            let chunk = &mut self.chunks[c];
            let key = (net as u16, len);
            let old = match chunk.binary_search_by_key(&key, |&(l, n, _)| (l, n)) {
                Ok(i) => Some(std::mem::replace(&mut chunk[i].2, value)),
                Err(i) => {
                    chunk.insert(i, (key.0, key.1, value));
                    None
                }
            };
            if old != Some(value) {
                self.touch(c);
            }
            old
        };
        self.count += usize::from(old.is_none());
        old
    }

    /// Withdraws a prefix; returns the value it had.
    pub fn remove(&mut self, net: u32, len: u8) -> Option<u32> {
        let len = len.min(32);
        let net = net & mask(len);
        let old = if len < 16 {
            let old = self.short[usize::from(len)].remove(&net);
            if old.is_some() {
                self.repaint(net, len);
            }
            old
        } else {
            let c = (net >> 16) as usize;
            let chunk = &mut self.chunks[c];
            let old = match chunk.binary_search_by_key(&(net as u16, len), |&(l, n, _)| (l, n)) {
                Ok(i) => Some(chunk.remove(i).2),
                Err(_) => None,
            };
            if old.is_some() {
                self.touch(c);
            }
            old
        };
        self.count -= usize::from(old.is_some());
        old
    }

    /// Every prefix as (network, length, value), sorted by network then length.
    pub fn sorted(&self) -> Vec<(u32, u8, u32)> {
        let mut short: Vec<(u32, u8, u32)> =
            (0..16u8).flat_map(|len| self.short[usize::from(len)].iter().map(move |(&a, &v)| (a, len, v))).collect();
        short.sort_unstable_by_key(|&(a, len, _)| (a, len));
        // A short prefix starts on a chunk boundary and sorts before the chunk's own prefixes.
        let mut short = short.into_iter().peekable();
        let mut out = Vec::with_capacity(self.count);
        for (c, chunk) in self.chunks.iter().enumerate() {
            let start = (c as u32) << 16;
            while let Some(x) = short.next_if(|x| x.0 <= start) {
                out.push(x);
            }
            out.extend(chunk.iter().map(|&(low, len, v)| (start | u32::from(low), len, v)));
        }
        out.extend(short);
        out
    }

    /// The value stored for exactly this prefix.
    pub fn get(&self, net: u32, len: u8) -> Option<u32> {
        let len = len.min(32);
        let net = net & mask(len);
        if len < 16 {
            return self.short[usize::from(len)].get(&net).copied();
        }
        let chunk = &self.chunks[(net >> 16) as usize];
        chunk.binary_search_by_key(&(net as u16, len), |&(l, n, _)| (l, n)).ok().map(|i| chunk[i].2)
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Changes not yet published.
    pub fn has_changes(&self) -> bool {
        self.dirty_segs.iter().any(|&d| d)
    }

    fn touch(&mut self, c: usize) {
        self.dirty[c / 64] |= 1 << (c % 64);
        self.dirty_segs[c / CHUNKS] = true;
    }

    /// Recomputes the base of every chunk a short prefix covers.
    fn repaint(&mut self, net: u32, len: u8) {
        let first = (net >> 16) as usize;
        for c in first..first + (1usize << (16 - len)) {
            let a = (c as u32) << 16;
            let v =
                (0..16u8).rev().find_map(|l| self.short[usize::from(l)].get(&(a & mask(l))).copied()).unwrap_or(NONE);
            if self.base[c] != v {
                self.base[c] = v;
                self.touch(c);
            }
        }
    }

    /// A snapshot with every change so far. Segments without changes are shared with the
    /// previous snapshot; the cost is that of the changed /8s.
    pub fn publish(&mut self) -> Lpm4 {
        for s in 0..256 {
            if !std::mem::take(&mut self.dirty_segs[s]) {
                continue;
            }
            let old = Arc::clone(&self.current.segs[s]);
            let mut seg = Seg::empty();
            seg.trie.nodes.reserve(old.trie.nodes.len() + 16);
            seg.trie.leaves.reserve(old.trie.leaves.len() + 16);
            let mut points = Vec::new();
            for i in 0..CHUNKS {
                let c = s * CHUNKS + i;
                if self.dirty[c / 64] & (1 << (c % 64)) != 0 {
                    self.dirty[c / 64] &= !(1 << (c % 64));
                    points.clear();
                    let base = chunk_points(self.base[c], &self.chunks[c], &mut points);
                    seg.push_chunk(i, base, &points);
                } else {
                    seg.copy_chunk(i, &old);
                }
            }
            seg.spans[CHUNKS] = (seg.trie.nodes.len() as u32, seg.trie.leaves.len() as u32);
            seg.trie.shrink_to_fit();
            self.current.segs[s] = Arc::new(seg);
        }
        self.current.prefixes = self.count;
        self.current.clone()
    }

    /// Heap bytes the writer keeps besides its snapshot.
    pub fn memory_bytes(&self) -> usize {
        let short: usize = self.short.iter().map(|m| m.capacity() * 12).sum();
        let chunks: usize = self.chunks.iter().map(|c| c.capacity() * std::mem::size_of::<(u16, u8, u32)>()).sum();
        short + chunks + self.chunks.capacity() * std::mem::size_of::<Vec<(u16, u8, u32)>>() + self.base.capacity() * 4
    }
}

/// Appends a chunk's inner points (first address within the chunk, value from there on) and
/// returns the value the chunk starts with: the short-prefix base, overridden by the chunk's
/// own prefixes.
fn chunk_points(base: u32, prefixes: &[(u16, u8, u32)], out: &mut Vec<(u32, u32)>) -> u32 {
    if prefixes.is_empty() {
        return base;
    }
    // In the chunk's 16-bit space the base is a /0 and a /16 prefix is a /0 that replaces it.
    let all =
        std::iter::once((0u128, 0u8, base)).chain(prefixes.iter().map(|&(l, len, v)| (u128::from(l), len - 16, v)));
    let (points, _) = breakpoints(all, 16);
    let mut start = base;
    for (at, v) in points {
        if at == 0 {
            start = v;
        } else {
            out.push((at as u32, v));
        }
    }
    start
}
#[cfg(test)]
mod tests {
    use super::*;

    fn naive(p: &[(u32, u8, u32)], a: u32) -> u32 {
        crate::lpm::testing::naive(p.iter().map(|&(n, l, v)| (u128::from(n), l, v)), u128::from(a), 32)
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
    fn values_too_big_to_sit_inline_survive_lookups_and_moves() {
        // Values from 2^31 - 1 up go to the leaves instead of the direct slot; unchanged
        // chunks around a changed one must keep them through a publish.
        let big = [0x7fff_ffff, 0x8000_0000, 0xffff_fffe, 1];
        let p: Vec<(u32, u8, u32)> = (0..64u32)
            .map(|i| (0x0a00_0000 | (i << 18), if i % 2 == 0 { 18 } else { 24 }, big[i as usize % 4]))
            .collect();
        let mut w = Lpm4Writer::with_prefixes(&p);
        let t = w.publish();
        for &(a, _, v) in &p {
            assert_eq!(t.lookup(a | 0x7f), v, "{a:#x}");
        }
        w.insert(0x0a00_0000, 26, 5);
        let t = w.publish();
        assert_eq!(t.lookup(0x0a00_0001), 5);
        for &(a, _, v) in &p[1..] {
            assert_eq!(t.lookup(a | 0xff), v, "{a:#x} after the publish");
        }
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
        let mut rng = crate::lpm::testing::Rng(0x9e37_79b9);
        let mut next = || rng.next();
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
                let mask = mask(len);
                let (first, last) = (net & mask, (net & mask) | !mask);
                assert_eq!(t.lookup(first), naive(&p, first));
                assert_eq!(t.lookup(last), naive(&p, last));
            }
        }
    }
}

#[cfg(test)]
mod writer_tests {
    use super::*;
    use std::collections::BTreeMap;

    fn naive(p: &BTreeMap<(u32, u8), u32>, a: u32) -> u32 {
        crate::lpm::testing::naive(p.iter().map(|(&(n, l), &v)| (u128::from(n), l, v)), u128::from(a), 32)
    }

    use crate::lpm::testing::Rng;

    #[test]
    fn single_updates_agree_with_a_rebuild_and_with_naive() {
        let mut r = Rng(0x2545_f491);
        let mut w = Lpm4Writer::default();
        let mut model: BTreeMap<(u32, u8), u32> = BTreeMap::new();
        for round in 0..40 {
            for _ in 0..200 {
                // Clustered so that prefixes nest, share chunks and cross /8 segments.
                let a = ((r.next() as u32) & 0x03ff_ffff) | 0x0a00_0000;
                let len = [0u8, 6, 8, 12, 15, 16, 17, 20, 24, 24, 26, 28, 32][(r.next() % 13) as usize];
                let net = a & mask(len);
                if r.next().is_multiple_of(3) {
                    assert_eq!(w.remove(net, len), model.remove(&(net, len)));
                } else {
                    let v = (r.next() % 50) as u32;
                    assert_eq!(w.insert(net, len, v), model.insert((net, len), v));
                }
            }
            let t = w.publish();
            assert_eq!(t.len(), model.len());
            assert!(!w.has_changes());
            let flat: Vec<(u32, u8, u32)> = model.iter().map(|(&(a, l), &v)| (a, l, v)).collect();
            let rebuilt = Lpm4::build(&flat);
            for _ in 0..3000 {
                let a = ((r.next() as u32) & 0x03ff_ffff) | 0x0a00_0000;
                let want = naive(&model, a);
                assert_eq!(t.lookup(a), want, "round {round} addr {a:#x}");
                assert_eq!(rebuilt.lookup(a), want);
            }
            for &(net, len) in model.keys() {
                for a in [net, net | !mask(len)] {
                    assert_eq!(t.lookup(a), naive(&model, a), "round {round} edge {a:#x}/{len}");
                }
            }
        }
    }

    #[test]
    fn sorted_lists_every_prefix_in_address_order() {
        let p = [(0x0a01_0100, 24, 3), (0x0a00_0000, 8, 1), (0, 0, 4), (0x0a01_0000, 16, 2), (0x0b00_0000, 8, 5)];
        let w = Lpm4Writer::with_prefixes(&p);
        let mut want = p.to_vec();
        want.sort_by_key(|&(a, len, _)| (a, len));
        assert_eq!(w.sorted(), want);
    }

    #[test]
    fn removing_everything_leaves_no_route() {
        let p = [(0x0a00_0000, 8, 1), (0x0a01_0000, 16, 2), (0x0a01_0100, 24, 3), (0, 0, 4)];
        let mut w = Lpm4Writer::with_prefixes(&p);
        assert_eq!(w.publish().lookup(0x0a01_0101), 3);
        for &(a, len, v) in &p {
            assert_eq!(w.get(a, len), Some(v));
            assert_eq!(w.remove(a, len), Some(v));
            assert_eq!(w.remove(a, len), None, "already gone");
        }
        let t = w.publish();
        assert!(t.is_empty());
        for a in [0, 0x0a01_0101, u32::MAX] {
            assert_eq!(t.lookup(a), NONE);
        }
    }

    #[test]
    fn publish_rebuilds_only_changed_segments() {
        let mut w = Lpm4Writer::with_prefixes(&[(0x0a00_0000, 8, 1), (0x0b00_0000, 8, 2)]);
        let before = w.publish();
        w.insert(0x0a01_0000, 16, 3);
        let after = w.publish();
        assert!(!Arc::ptr_eq(&before.segs[10], &after.segs[10]), "the changed /8 is new");
        assert!(Arc::ptr_eq(&before.segs[11], &after.segs[11]), "the other is shared");
        // The old snapshot still answers as before.
        assert_eq!(before.lookup(0x0a01_0101), 1);
        assert_eq!(after.lookup(0x0a01_0101), 3);
    }

    #[test]
    fn host_bits_and_overlong_lengths_are_ignored() {
        let mut w = Lpm4Writer::default();
        assert_eq!(w.insert(0x0a01_0203, 8, 1), None);
        assert_eq!(w.insert(0x0a00_0000, 8, 2), Some(1), "the same /8");
        assert_eq!(w.insert(0x0a01_0203, 40, 3), None, "a /32");
        let t = w.publish();
        assert_eq!((t.lookup(0x0a01_0203), t.lookup(0x0a01_0204)), (3, 2));
    }

    #[test]
    fn concurrent_readers_see_the_old_or_the_new_answer() {
        // A reader looks up one address per prefix while the writer flips each prefix between
        // two values and publishes; every answer must be one of the two, never anything else.
        let prefixes: Vec<(u32, u8)> = (0..512u32).map(|i| (0x0a00_0000 | (i << 12), 20)).collect();
        let handle = Arc::new(arc_swap::ArcSwap::from_pointee(Lpm4::default()));
        let mut w = Lpm4Writer::default();
        for &(a, len) in &prefixes {
            w.insert(a, len, 1);
        }
        handle.store(Arc::new(w.publish()));
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let reader = {
            let (handle, stop, seen, prefixes) =
                (Arc::clone(&handle), Arc::clone(&stop), Arc::clone(&seen), prefixes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = handle.load();
                    for &(a, _) in &prefixes {
                        let v = t.lookup(a | 0x123);
                        assert!(v == 1 || v == 2, "{a:#x} answered {v}");
                    }
                    seen.fetch_add(prefixes.len() as u64, Ordering::Relaxed);
                }
            })
        };
        // At least 200 rounds, and until the reader has overlapped with many of them.
        let mut round = 0u32;
        while round < 200 || seen.load(Ordering::Relaxed) < 200_000 {
            for (i, &(a, len)) in prefixes.iter().enumerate() {
                if i % 7 == round as usize % 7 {
                    w.insert(a, len, 1 + round % 2);
                }
            }
            handle.store(Arc::new(w.publish()));
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("reader never saw a wrong answer");
    }
}
