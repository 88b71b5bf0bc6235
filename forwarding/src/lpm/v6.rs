use super::{breakpoints, NONE};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// (network, length, value).
type Prefix6 = (u128, u8, u32);

/// Bits the root indexes: IPv6 routes crowd into a few /16s (65 in a full table), so the
/// root is a direct array of /16 segments, most of them empty.
const TOP: u32 = 16;
/// Bits each inner node indexes.
const STRIDE: u32 = 8;
/// A region with more prefixes than this becomes a node instead of a leaf. 64 prefixes make
/// at most 129 points, which an entry's 8-bit count still holds. 16 and 32 looked up no
/// faster in the same run and took more memory (1 KiB per node), and publishes were slower.
const LEAF_MAX: usize = 64;
/// A node entry is a node index, or a leaf: [`LEAF`], [`WIDE`] if its keys are full
/// 128-bit points, where its points start in the key array (22 bits) and how many (8 bits).
/// Keeping the leaf in the entry saves a load per lookup.
const LEAF: u32 = 1 << 31;
const WIDE: u32 = 1 << 30;
const AT_BITS: u32 = 22;
/// A leaf with one answer below 2^22 - 1 (a next-hop index, most AS numbers) keeps it in the
/// entry, in place of the start, with a count of 0; this value of it stands for [`NONE`].
const INLINE_NONE: u32 = (1 << AT_BITS) - 1;

/// The entry of a leaf with the single answer `v`, if it fits.
fn inline(v: u32) -> Option<u32> {
    let x = match v {
        NONE => INLINE_NONE,
        v if v < INLINE_NONE => v,
        _ => return None,
    };
    Some(LEAF | (x << 8))
}

/// One /16 with routes: a multibit trie (8 bits per level) in flat arrays, whose leaves are
/// short sorted runs of the points where the answer changes. Dense regions split until their
/// leaves are small; sparse ones stay one leaf. Each leaf starts with a point at its region's
/// first address, so a search always finds one.
///
/// Most points are /64 or shorter boundaries, whose low 64 bits are zero: such a point `p`
/// is at or below an address `a` exactly when `p >> 64 <= a >> 64`, so those leaves keep
/// 8-byte keys and only the rest (`WIDE`) keep 16. In a narrow leaf of a region `/len` the
/// top `len` bits of every point are the region's, so a key keeps the point's next
/// `64 - len` bits and its answer in the low `len` bits ([`pack`]): the search ends on the
/// answer's cache line, without a second array to read.
#[derive(Debug, Default)]
struct Seg {
    /// The entry for the whole /16.
    root: u32,
    nodes: Vec<[u32; 256]>,
    narrow: Vec<u64>,
    wide: Vec<u128>,
    wide_vals: Vec<u32>,
    /// Set instead of the trie when the points outgrow what an entry can address (millions
    /// of routes in one /16): one sorted run, searched whole.
    flat: Option<(Vec<u128>, Vec<u32>)>,
}

/// A narrow key: point `hi` (the top 64 bits) in a region `/len` (16 to 56), with answer `v`;
/// `None` if `v` does not fit in `len` bits. All ones stand for [`NONE`].
fn pack(hi: u64, len: u32, v: u32) -> Option<u64> {
    let ones = (1u64 << len) - 1;
    let field = if v == NONE { ones } else { Some(u64::from(v)).filter(|&v| v < ones)? };
    Some((hi << len) | field)
}

/// The answer in the narrow leaf `keys` of a region `/len` for an address whose top 64 bits
/// are `hi`.
#[inline]
fn search_packed(keys: &[u64], len: u32, hi: u64) -> u32 {
    let ones = (1u64 << len) - 1;
    let q = (hi << len) | ones;
    let k = keys.partition_point(|&x| x <= q);
    match keys.get(k.wrapping_sub(1)) {
        Some(&x) if x & ones != ones => (x & ones) as u32,
        _ => NONE,
    }
}

/// The answer among sorted `keys` (which start at or below `a`).
#[inline]
fn search<K: Copy + PartialOrd>(keys: &[K], vals: &[u32], a: K) -> u32 {
    let k = keys.partition_point(|&x| x <= a);
    vals.get(k.wrapping_sub(1)).copied().unwrap_or(NONE)
}

impl Seg {
    #[inline]
    fn lookup(&self, a: u128) -> u32 {
        // Down to /64 the walk needs only the top half of the address, and shifting a
        // u64 takes one instruction where a u128 takes several.
        let hi = (a >> 64) as u64;
        let mut e = self.root;
        let mut shift = 64 - TOP - STRIDE;
        while e & LEAF == 0 {
            let Some(n) = self.nodes.get(e as usize) else { return self.flat_lookup(a) };
            e = n[((hi >> shift) & 0xff) as usize];
            if shift == 0 {
                return self.below_64(e, a);
            }
            shift -= STRIDE;
        }
        // `e` is the entry of a region /(64 - STRIDE - shift).
        self.leaf(e, 64 - STRIDE - shift, a)
    }

    /// The rest of a walk that reached /64 with entry `e` (rare: routes longer than /64).
    #[cold]
    fn below_64(&self, mut e: u32, a: u128) -> u32 {
        let mut shift = 64 - STRIDE;
        while e & LEAF == 0 {
            match self.nodes.get(e as usize) {
                Some(n) => e = n[((a >> shift) & 0xff) as usize],
                None => return self.flat_lookup(a),
            }
            shift = shift.saturating_sub(STRIDE);
        }
        // Regions this deep have no narrow leaves.
        self.leaf(e, 64, a)
    }

    /// The answer for `a` in the leaf of entry `e` of a region `/len` (the flat run if `e` is
    /// no leaf).
    #[inline]
    fn leaf(&self, e: u32, len: u32, a: u128) -> u32 {
        if e & LEAF == 0 {
            return self.flat_lookup(a);
        }
        let lo = ((e >> 8) & ((1 << AT_BITS) - 1)) as usize;
        if e & 0xff == 0 {
            // One answer, in the entry itself.
            return if lo == INLINE_NONE as usize { NONE } else { lo as u32 };
        }
        let r = lo..lo + (e & 0xff) as usize;
        if e & WIDE == 0 {
            // A single point is the region's start, so at or below every address in it.
            search_packed(self.narrow.get(r).unwrap_or(&[]), len.min(56), (a >> 64) as u64)
        } else if r.len() == 1 {
            // One point, at the region's start: no need to read it.
            self.wide_vals.get(lo).copied().unwrap_or(NONE)
        } else {
            search(self.wide.get(r.clone()).unwrap_or(&[]), self.wide_vals.get(r).unwrap_or(&[]), a)
        }
    }

    #[cold]
    fn flat_lookup(&self, a: u128) -> u32 {
        self.flat.as_ref().map_or(NONE, |(k, v)| search(k, v, a))
    }

    fn memory_bytes(&self) -> usize {
        let flat = self.flat.as_ref().map_or(0, |(k, v)| k.capacity() * 16 + v.capacity() * 4);
        self.nodes.capacity() * 1024
            + self.narrow.capacity() * 8
            + self.wide.capacity() * 16
            + self.wide_vals.capacity() * 4
            + flat
    }

    /// The segment for the /16 at `net`: `base` is the answer from shorter prefixes,
    /// `prefixes` its own (sorted, /16 or longer).
    fn build(net: u128, base: u32, prefixes: &[(u128, u8, u32)]) -> Seg {
        Seg::build_within(net, base, prefixes, 1 << AT_BITS)
    }

    /// [`Seg::build`] with at most `limit` keys of each width before the flat fallback.
    fn build_within(net: u128, base: u32, prefixes: &[(u128, u8, u32)], limit: usize) -> Seg {
        let mut seg = Seg::default();
        match seg.region(&mut HashMap::new(), limit, net, TOP as u8, base, prefixes) {
            Some(root) => seg.root = root,
            None => {
                let all = std::iter::once((net, TOP as u8, base)).chain(prefixes.iter().copied());
                let (points, _) = breakpoints(all, 128);
                seg = Seg { flat: Some(points.into_iter().unzip()), ..Seg::default() };
                // No node 0: lookups go to the flat run.
                seg.root = 0;
            }
        }
        seg.nodes.shrink_to_fit();
        seg.narrow.shrink_to_fit();
        seg.wide.shrink_to_fit();
        seg.wide_vals.shrink_to_fit();
        seg
    }

    /// Emits the region `net/len` and returns its entry, or `None` when the key arrays
    /// outgrow the entry format. Leaves with one answer are shared per value (`plain`).
    fn region(
        &mut self,
        plain: &mut HashMap<u32, u32>,
        limit: usize,
        net: u128,
        len: u8,
        base: u32,
        prefixes: &[(u128, u8, u32)],
    ) -> Option<u32> {
        if prefixes.is_empty() {
            if let Some(&e) = plain.get(&base) {
                return Some(e);
            }
        }
        if prefixes.len() <= LEAF_MAX || u32::from(len) + STRIDE > 128 {
            let end = (net | !mask(len)).checked_add(1);
            let all = std::iter::once((net, len, base)).chain(prefixes.iter().copied());
            let (points, _) = breakpoints(all, 128);
            let mut start = base;
            let mut inner: Vec<(u128, u32)> = Vec::new();
            for (at, v) in points {
                if at <= net {
                    start = v;
                } else if end.is_none_or(|e| at < e) {
                    inner.push((at, v));
                }
            }
            if inner.is_empty() {
                if let Some(e) = inline(start) {
                    if prefixes.is_empty() {
                        plain.insert(base, e);
                    }
                    return Some(e);
                }
            }
            let narrow: Option<Vec<u64>> = (u32::from(len) < 64)
                .then(|| {
                    std::iter::once((net, start))
                        .chain(inner.iter().copied())
                        .map(|(at, v)| {
                            Some(at)
                                .filter(|at| *at as u64 == 0)
                                .and_then(|at| pack((at >> 64) as u64, u32::from(len), v))
                        })
                        .collect()
                })
                .flatten();
            let wide = narrow.is_none();
            let count = inner.len() + 1;
            let lo = if wide { self.wide.len() } else { self.narrow.len() };
            if count > 0xff || lo + count > limit {
                return None;
            }
            match narrow {
                Some(keys) => self.narrow.extend(keys),
                None => {
                    for (at, v) in std::iter::once((net, start)).chain(inner) {
                        self.wide.push(at);
                        self.wide_vals.push(v);
                    }
                }
            }
            let e = LEAF | if wide { WIDE } else { 0 } | ((lo as u32) << 8) | count as u32;
            if prefixes.is_empty() {
                plain.insert(base, e);
            }
            return Some(e);
        }
        // A node: prefixes shorter than a child paint the children's bases, the rest go down.
        let child_len = len + STRIDE as u8;
        let shift = 128 - u32::from(child_len);
        let mut bases = [base; 256];
        let mut spanning: Vec<&(u128, u8, u32)> = prefixes.iter().filter(|p| p.1 < child_len).collect();
        spanning.sort_by_key(|p| p.1);
        for &(a, l, v) in spanning {
            let first = ((a >> shift) & 0xff) as usize;
            if let Some(s) = bases.get_mut(first..first + (1usize << (child_len - l))) {
                s.fill(v);
            }
        }
        let index = self.nodes.len();
        self.nodes.push([0; 256]);
        let below: Vec<(u128, u8, u32)> = prefixes.iter().filter(|p| p.1 >= child_len).copied().collect();
        let mut rest = below.as_slice();
        for (c, &b) in bases.iter().enumerate() {
            let n = rest.partition_point(|p| ((p.0 >> shift) & 0xff) as usize == c);
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let e = self.region(plain, limit, net | ((c as u128) << shift), child_len, b, group)?;
            if let Some(node) = self.nodes.get_mut(index) {
                node[c] = e;
            }
        }
        Some(index as u32)
    }
}

/// IPv6 longest-prefix match: a direct array of /16 segments, each a small multibit trie
/// with range leaves (`Seg`). A lookup reads the root, a node or two and a few cache lines
/// of points.
///
/// A snapshot is immutable and cheap to clone: the segments are shared. An [`Lpm6Writer`]
/// rebuilds only the /16s a change touches; older snapshots keep theirs until their last
/// reader lets go.
#[derive(Debug, Clone)]
pub struct Lpm6 {
    /// Per /16: the answer from prefixes shorter than /16, and the index of its segment in
    /// `segs` ([`NO_SEG`] if none). One load settles an address outside every /16 with
    /// routes, which is most of the IPv6 space.
    top: Arc<Vec<(u32, u32)>>,
    segs: Arc<Vec<Option<Arc<Seg>>>>,
    prefixes: usize,
}

/// A /16 without a segment.
const NO_SEG: u32 = u32::MAX;

impl Default for Lpm6 {
    fn default() -> Self {
        Lpm6 { top: Arc::new(vec![(NONE, NO_SEG); 1 << TOP]), segs: Arc::default(), prefixes: 0 }
    }
}

fn mask(len: u8) -> u128 {
    super::prefix_mask(len, 128)
}

impl Lpm6 {
    /// Builds from (network, length, value); later entries for the same prefix win. Host
    /// bits are ignored.
    pub fn build(prefixes: &[(u128, u8, u32)]) -> Lpm6 {
        Lpm6Writer::with_prefixes(prefixes).publish()
    }

    /// The value of the longest prefix covering `a`, or [`NONE`].
    #[inline]
    pub fn lookup(&self, a: u128) -> u32 {
        match self.seg(a) {
            Ok(seg) => seg.lookup(a),
            Err(v) => v,
        }
    }

    /// The segment of `a`'s /16, or the answer there if it has none.
    #[inline]
    fn seg(&self, a: u128) -> Result<&Seg, u32> {
        let Some(&(base, i)) = self.top.get((a >> (128 - TOP)) as usize) else { return Err(NONE) };
        if i == NO_SEG {
            return Err(base);
        }
        match self.segs.get(i as usize) {
            Some(Some(seg)) => Ok(seg),
            _ => Err(base),
        }
    }

    /// Looks up many addresses at once (`out[i]` for `addrs[i]`). Each group of 16 first
    /// reads all its /16 entries and then walks each segment, so the first misses of the
    /// group overlap. (Walking the 16 level by level in lockstep was slower: the CPU already
    /// overlaps independent walks, and the bookkeeping costs more than it saves.)
    pub fn lookup_batch(&self, addrs: &[u128], out: &mut [u32]) {
        const G: usize = 16;
        for (a, o) in addrs.chunks(G).zip(out.chunks_mut(G)) {
            let mut at: [Option<&Seg>; G] = [None; G];
            for ((s, &x), r) in at.iter_mut().zip(a).zip(o.iter_mut()) {
                match self.seg(x) {
                    Ok(seg) => *s = Some(seg),
                    Err(v) => *r = v,
                }
            }
            for ((s, &x), r) in at.iter().zip(a).zip(o.iter_mut()) {
                if let Some(seg) = s {
                    *r = seg.lookup(x);
                }
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

    /// Heap bytes of the structure.
    pub fn memory_bytes(&self) -> usize {
        let segs: usize = self.segs.iter().flatten().map(|s| s.memory_bytes()).sum();
        segs + self.top.capacity() * 8 + self.segs.capacity() * 8
    }
}

/// The writer's side of an [`Lpm6`]: every prefix, sorted, and the /16s changed since the
/// last publish.
#[derive(Debug)]
pub struct Lpm6Writer {
    prefixes: BTreeMap<(u128, u8), u32>,
    /// One bit per /16 whose segment or base must be rebuilt.
    dirty: Vec<u64>,
    current: Lpm6,
}

impl Default for Lpm6Writer {
    fn default() -> Self {
        Lpm6Writer { prefixes: BTreeMap::new(), dirty: vec![0; (1 << TOP) / 64], current: Lpm6::default() }
    }
}

impl Lpm6Writer {
    /// A writer holding these prefixes (later entries for the same prefix win).
    pub fn with_prefixes(prefixes: &[(u128, u8, u32)]) -> Lpm6Writer {
        let mut w = Lpm6Writer::default();
        for &(a, len, v) in prefixes {
            let len = len.min(128);
            w.prefixes.insert((a & mask(len), len), v);
        }
        w.dirty.fill(u64::MAX);
        w
    }

    /// Adds or replaces a prefix; returns the value it had.
    pub fn insert(&mut self, net: u128, len: u8, value: u32) -> Option<u32> {
        let len = len.min(128);
        let key = (net & mask(len), len);
        let old = self.prefixes.insert(key, value);
        if old != Some(value) {
            self.touch(key.0, len);
        }
        old
    }

    /// Withdraws a prefix; returns the value it had.
    pub fn remove(&mut self, net: u128, len: u8) -> Option<u32> {
        let len = len.min(128);
        let key = (net & mask(len), len);
        let old = self.prefixes.remove(&key);
        if old.is_some() {
            self.touch(key.0, len);
        }
        old
    }

    /// The value stored for exactly this prefix.
    pub fn get(&self, net: u128, len: u8) -> Option<u32> {
        let len = len.min(128);
        self.prefixes.get(&(net & mask(len), len)).copied()
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Changes not yet published.
    pub fn has_changes(&self) -> bool {
        self.dirty.iter().any(|&d| d != 0)
    }

    /// Marks the /16s a prefix covers.
    fn touch(&mut self, net: u128, len: u8) {
        let first = (net >> (128 - TOP)) as usize;
        let n = 1usize << TOP.saturating_sub(u32::from(len));
        for t in first..first + n {
            if let Some(d) = self.dirty.get_mut(t / 64) {
                *d |= 1 << (t % 64);
            }
        }
    }

    /// A snapshot with every change so far. Only the /16s that changed are rebuilt.
    pub fn publish(&mut self) -> Lpm6 {
        let all = self.dirty.iter().all(|&d| d == u64::MAX);
        if all {
            self.rebuild_all();
        } else if self.has_changes() {
            let top = Arc::make_mut(&mut self.current.top);
            let segs = Arc::make_mut(&mut self.current.segs);
            for (w, d) in self.dirty.iter_mut().enumerate() {
                while *d != 0 {
                    let t = w * 64 + d.trailing_zeros() as usize;
                    *d &= *d - 1;
                    let net = (t as u128) << (128 - TOP);
                    let base = (0..TOP as u8)
                        .rev()
                        .find_map(|l| self.prefixes.get(&(net & mask(l), l)).copied())
                        .unwrap_or(NONE);
                    let own: Vec<Prefix6> = self
                        .prefixes
                        .range((net, TOP as u8)..=(net | !mask(TOP as u8), 128))
                        .map(|(&(a, l), &v)| (a, l, v))
                        .collect();
                    let Some(entry) = top.get_mut(t) else { continue };
                    let seg = (!own.is_empty()).then(|| Arc::new(Seg::build(net, base, &own)));
                    *entry = (base, place(segs, entry.1, seg));
                }
            }
        }
        self.current.prefixes = self.prefixes.len();
        self.current.clone()
    }

    fn rebuild_all(&mut self) {
        self.dirty.fill(0);
        let mut bases = vec![NONE; 1 << TOP];
        let mut short: Vec<(u128, u8, u32)> = Vec::new();
        let mut groups: Vec<(usize, Vec<Prefix6>)> = Vec::new();
        for (&(a, l), &v) in &self.prefixes {
            if u32::from(l) < TOP {
                short.push((a, l, v));
                continue;
            }
            let top = (a >> (128 - TOP)) as usize;
            match groups.last_mut() {
                Some((t, g)) if *t == top => g.push((a, l, v)),
                _ => groups.push((top, vec![(a, l, v)])),
            }
        }
        short.sort_by_key(|&(_, l, _)| l);
        for (a, l, v) in short {
            let first = (a >> (128 - TOP)) as usize;
            if let Some(s) = bases.get_mut(first..first + (1usize << (TOP - u32::from(l)))) {
                s.fill(v);
            }
        }
        let mut top: Vec<(u32, u32)> = bases.iter().map(|&b| (b, NO_SEG)).collect();
        let mut segs = Vec::with_capacity(groups.len());
        for (t, g) in groups {
            if let Some(entry) = top.get_mut(t) {
                entry.1 = segs.len() as u32;
                segs.push(Some(Arc::new(Seg::build((t as u128) << (128 - TOP), entry.0, &g))));
            }
        }
        self.current.top = Arc::new(top);
        self.current.segs = Arc::new(segs);
    }
}

/// Puts a /16's new segment (or none) into `segs`, reusing its old slot or a free one;
/// returns the index for the /16's entry.
fn place(segs: &mut Vec<Option<Arc<Seg>>>, old: u32, seg: Option<Arc<Seg>>) -> u32 {
    if let Some(slot) = segs.get_mut(old as usize) {
        *slot = seg;
        return if slot.is_some() { old } else { NO_SEG };
    }
    let Some(seg) = seg else { return NO_SEG };
    match segs.iter().position(Option::is_none) {
        Some(i) => {
            if let Some(slot) = segs.get_mut(i) {
                *slot = Some(seg);
            }
            i as u32
        }
        None => {
            segs.push(Some(seg));
            segs.len() as u32 - 1
        }
    }
}

#[cfg(test)]
mod tests6 {
    use super::*;

    fn naive(p: &[(u128, u8, u32)], a: u128) -> u32 {
        crate::lpm::testing::naive(p.iter().copied(), a, 128)
    }

    #[test]
    fn values_around_the_inline_limit_come_back_unchanged() {
        // Below 2^22 - 1 a single answer sits in the entry; from there on it is stored.
        let values = [0, 1, INLINE_NONE - 1, INLINE_NONE, INLINE_NONE + 1, NONE - 1];
        let p: Vec<(u128, u8, u32)> =
            values.iter().enumerate().map(|(i, &v)| ((0x2001_0db8u128 << 96) | ((i as u128) << 80), 48, v)).collect();
        let t = Lpm6::build(&p);
        for &(a, _, v) in &p {
            assert_eq!(t.lookup(a | 0xffff), v, "{a:#x}");
        }
        assert_eq!(t.lookup(0x2001_0db8_00ff_u128 << 80), NONE, "between the prefixes");
    }

    #[test]
    fn answers_too_big_for_a_narrow_key_are_kept_whole() {
        // A leaf of the whole /16 keeps 16 bits of answer beside each key, one at /24 keeps
        // 24: the values at and above each limit must take the wide form and come back.
        for (len, width) in [(32u8, 16u32), (40, 24)] {
            let values = [0, (1 << width) - 2, (1 << width) - 1, 1 << width, NONE - 1, 7];
            let p: Vec<(u128, u8, u32)> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| ((0x2a00_0000u128 << 96) | ((i as u128 * 2) << (128 - u32::from(len))), len, v))
                .collect();
            let t = Lpm6::build(&p);
            for &(a, _, v) in &p {
                assert_eq!(t.lookup(a), v, "/{len} {a:#x}");
                assert_eq!(t.lookup(a | (u128::MAX >> len)), v, "/{len} {a:#x}");
                assert_eq!(t.lookup(a + (1 << (128 - u32::from(len)))), NONE, "/{len} after {a:#x}");
            }
            // With a second /24 full of routes, the first /24 becomes a leaf of its own.
            let mut dense = p.clone();
            dense.extend((0..80u128).map(|i| ((0x2a00_0100u128 << 96) | (i << 88), 40, 9)));
            let t = Lpm6::build(&dense);
            for &(a, l, v) in &dense {
                assert_eq!(t.lookup(a), v, "dense /{l} {a:#x}");
            }
        }
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
        let mut rng = crate::lpm::testing::Rng(0x51ed_270b);
        let mut next = || rng.next();
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
                let mask = mask(len);
                for a in [net & mask, (net & mask) | !mask] {
                    assert_eq!(t.lookup(a), naive(&p, a), "prefix edge {a:#x}");
                }
            }
        }
    }
}

#[cfg(test)]
mod writer_tests6 {
    use super::*;

    fn naive(p: &BTreeMap<(u128, u8), u32>, a: u128) -> u32 {
        crate::lpm::testing::naive(p.iter().map(|(&(n, l), &v)| (n, l, v)), a, 128)
    }

    use crate::lpm::testing::Rng;

    /// Addresses for the tests.
    trait Addr {
        fn addr(&mut self) -> u128;
    }
    impl Addr for Rng {
        /// Addresses crowded into two /16s and a few /32s, so regions split into nodes.
        fn addr(&mut self) -> u128 {
            let top = [0x2001u128, 0x2a00][(self.next() % 2) as usize];
            let mid = u128::from(self.next() % 4) << 88;
            (top << 112) | mid | (u128::from(self.next() & 0xff_ffff) << 64) | u128::from(self.next() % 3)
        }
    }

    #[test]
    fn single_updates_agree_with_a_rebuild_and_with_naive() {
        let mut r = Rng(0x6a09_e667);
        let mut w = Lpm6Writer::default();
        let mut model: BTreeMap<(u128, u8), u32> = BTreeMap::new();
        let lens = [0u8, 8, 15, 16, 20, 24, 29, 32, 36, 40, 44, 48, 48, 48, 56, 64, 96, 127, 128];
        for round in 0..30 {
            for _ in 0..300 {
                let len = lens[(r.next() % lens.len() as u64) as usize];
                let net = r.addr() & mask(len);
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
            let flat: Vec<(u128, u8, u32)> = model.iter().map(|(&(a, l), &v)| (a, l, v)).collect();
            let rebuilt = Lpm6::build(&flat);
            let mut addrs: Vec<u128> = (0..2000).map(|_| r.addr()).collect();
            for &(net, len) in model.keys() {
                addrs.extend([net, net | !mask(len), net.wrapping_sub(1)]);
            }
            let mut batch = vec![0; addrs.len()];
            t.lookup_batch(&addrs, &mut batch);
            for (&a, &b) in addrs.iter().zip(&batch) {
                let want = naive(&model, a);
                assert_eq!(t.lookup(a), want, "round {round} addr {a:#x}");
                assert_eq!(b, want, "batch, round {round} addr {a:#x}");
                assert_eq!(rebuilt.lookup(a), want, "rebuilt, round {round} addr {a:#x}");
            }
        }
    }

    #[test]
    fn publish_rebuilds_only_changed_segments() {
        let a = 0x2001u128 << 112;
        let b = 0x2a00u128 << 112;
        let mut w = Lpm6Writer::with_prefixes(&[(a, 16, 1), (b, 16, 2)]);
        let before = w.publish();
        w.insert(a | (1 << 96), 32, 3);
        let after = w.publish();
        let seg = |t: &Lpm6, x: u128| t.segs[t.top[(x >> 112) as usize].1 as usize].clone();
        let same =
            |x: Option<Arc<Seg>>, y: Option<Arc<Seg>>| matches!((x, y), (Some(x), Some(y)) if Arc::ptr_eq(&x, &y));
        assert!(!same(seg(&before, a), seg(&after, a)), "the changed /16 is new");
        assert!(same(seg(&before, b), seg(&after, b)), "the other is shared");
        assert_eq!(before.lookup(a | (1 << 96) | 5), 1, "the old snapshot answers as before");
        assert_eq!(after.lookup(a | (1 << 96) | 5), 3);
        // A short prefix changes the answer of /16s without a segment too.
        w.insert(0x2000u128 << 112, 4, 9);
        let t = w.publish();
        assert_eq!(t.lookup(0x2fff_u128 << 112), 9);
        assert_eq!(t.lookup(a | 5), 1);
        w.remove(0x2000u128 << 112, 4);
        assert_eq!(w.publish().lookup(0x2fff_u128 << 112), NONE);
        // A /16 that loses all its routes gives its segment slot to the next one that needs it.
        w.remove(a, 16);
        w.remove(a | (1 << 96), 32);
        let t = w.publish();
        assert_eq!(t.top[0x2001].1, NO_SEG);
        assert_eq!((t.lookup(a | 5), t.lookup(b | 5)), (NONE, 2));
        let c = 0x2400u128 << 112;
        w.insert(c, 16, 4);
        let t = w.publish();
        assert_eq!(t.segs.len(), 2, "the free slot was reused");
        assert_eq!((t.lookup(a | 5), t.lookup(b | 5), t.lookup(c | 5)), (NONE, 2, 4));
    }

    #[test]
    fn a_segment_too_big_for_leaf_entries_falls_back_to_one_sorted_run() {
        // A leaf entry addresses 2^22 keys per segment, which takes millions of routes in
        // one /16; the same fallback is exercised here with a limit of 64 keys.
        let net = 0x2001_0db8u128 << 96;
        // Values too big to sit in an entry, so that every leaf takes keys.
        let p: Vec<(u128, u8, u32)> =
            (0..300u128).map(|i| (net | (i << 70), 48 + (i % 5) as u8, 0x4000_0000 | i as u32)).collect();
        let mut model = BTreeMap::new();
        for &(a, l, v) in &p {
            model.insert((a & mask(l), l), v);
        }
        let seg = Seg::build_within(0x2001u128 << 112, 7, &p, 64);
        assert!(seg.flat.is_some());
        let mut r = Rng(0x3c6e_f372);
        for _ in 0..2000 {
            let a = net | (u128::from(r.next() % 300) << 70) | u128::from(r.next());
            let want = match naive(&model, a) {
                NONE => 7,
                v => v,
            };
            assert_eq!(seg.lookup(a), want, "{a:#x}");
        }
        assert_eq!(seg.lookup((0x2001u128 << 112) | 5), 7, "the base, outside every prefix");
    }

    #[test]
    fn concurrent_readers_see_the_old_or_the_new_answer() {
        let prefixes: Vec<u128> = (0..256u128).map(|i| (0x2001_0db8u128 << 96) | (i << 80)).collect();
        let mut w = Lpm6Writer::default();
        for &a in &prefixes {
            w.insert(a, 48, 1);
        }
        let handle = Arc::new(arc_swap::ArcSwap::from_pointee(w.publish()));
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let reader = {
            let (handle, stop, seen, prefixes) =
                (Arc::clone(&handle), Arc::clone(&stop), Arc::clone(&seen), prefixes.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = handle.load();
                    for &a in &prefixes {
                        let v = t.lookup(a | 0x123);
                        assert!(v == 1 || v == 2, "{a:#x} answered {v}");
                    }
                    seen.fetch_add(prefixes.len() as u64, Ordering::Relaxed);
                }
            })
        };
        let mut round = 0u32;
        while round < 200 || seen.load(Ordering::Relaxed) < 100_000 {
            for (i, &a) in prefixes.iter().enumerate() {
                if i % 5 == round as usize % 5 {
                    w.insert(a, 48, 1 + round % 2);
                }
            }
            handle.store(Arc::new(w.publish()));
            round += 1;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().is_ok(), "the reader saw a wrong answer");
    }
}
