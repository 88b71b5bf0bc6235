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
    /// The answer for `a` in this segment on its own (its root is the /16's entry).
    fn lookup(&self, a: u128) -> u32 {
        self.walk(self.root, a, |a| self.flat_lookup(a))
    }

    /// Walks from `e`, the entry of `a`'s /16, down to the answer. An entry that names no
    /// node of these arrays sends the lookup to `elsewhere`.
    #[inline]
    fn walk(&self, mut e: u32, a: u128, elsewhere: impl Fn(u128) -> u32) -> u32 {
        // Down to /64 the walk needs only the top half of the address, and shifting a
        // u64 takes one instruction where a u128 takes several.
        let hi = (a >> 64) as u64;
        let mut shift = 64 - TOP - STRIDE;
        while e & LEAF == 0 {
            let Some(n) = self.nodes.get(e as usize) else { return elsewhere(a) };
            e = n[((hi >> shift) & 0xff) as usize];
            if shift == 0 {
                return self.below_64(e, a, elsewhere);
            }
            shift -= STRIDE;
        }
        // `e` is the entry of a region /(64 - STRIDE - shift).
        self.leaf(e, 64 - STRIDE - shift, a)
    }

    /// The rest of a walk that reached /64 with entry `e` (rare: routes longer than /64).
    #[cold]
    fn below_64(&self, mut e: u32, a: u128, elsewhere: impl Fn(u128) -> u32) -> u32 {
        let mut shift = 64 - STRIDE;
        while e & LEAF == 0 {
            match self.nodes.get(e as usize) {
                Some(n) => e = n[((a >> shift) & 0xff) as usize],
                None => return elsewhere(a),
            }
            shift = shift.saturating_sub(STRIDE);
        }
        // Regions this deep have no narrow leaves.
        self.leaf(e, 64, a)
    }

    /// The answer for `a` in the leaf of entry `e` (which has [`LEAF`] set) of a region
    /// `/len`.
    #[inline]
    fn leaf(&self, e: u32, len: u32, a: u128) -> u32 {
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

    /// Lays `seg` (its own arrays, a trie without the flat run) behind what these arrays
    /// hold and returns its root entry, every entry moved along; `None`, leaving these arrays
    /// as they were, if a leaf entry could not address its keys here (at most `limit` of
    /// each width).
    fn append(&mut self, seg: &Seg, limit: usize) -> Option<u32> {
        let (n0, k0, w0) = (self.nodes.len(), self.narrow.len(), self.wide.len());
        if seg.flat.is_some()
            || k0 + seg.narrow.len() > limit
            || w0 + seg.wide.len() > limit
            || n0 + seg.nodes.len() >= OUTSIDE as usize
        {
            return None;
        }
        let moved = |e: u32| match e {
            e if e & LEAF == 0 => e + n0 as u32,
            // One answer in the entry itself.
            e if e & 0xff == 0 => e,
            e if e & WIDE != 0 => e + ((w0 as u32) << 8),
            e => e + ((k0 as u32) << 8),
        };
        self.nodes.extend(seg.nodes.iter().map(|n| n.map(moved)));
        self.narrow.extend_from_slice(&seg.narrow);
        self.wide.extend_from_slice(&seg.wide);
        self.wide_vals.extend_from_slice(&seg.wide_vals);
        Some(moved(seg.root))
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
    /// `prefixes` its own (sorted, /16 or longer). Past `limit` keys of either width (what a
    /// leaf entry addresses) it is one flat sorted run instead.
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

/// IPv6 longest-prefix match: a direct array of /16 entries, each the root of a small
/// multibit trie with range leaves. A lookup reads the /16's entry, a node or two and a few
/// cache lines of points.
///
/// The writer builds each /16 as a segment of its own (`Seg`) and rebuilds only those a
/// change touches; a snapshot lays all of them end to end in one set of arrays, so that the
/// /16 entry leads straight to a node. With a pointer to each segment and from there to its
/// arrays, lookups inside the table ran at 0.87× (0.85× with the table in cache), old and
/// new compiled into one program. A snapshot is immutable and cheap to clone.
#[derive(Debug, Clone)]
pub struct Lpm6 {
    /// Per /16: the answer from prefixes shorter than /16, and the entry of its region in
    /// `trie` (a node or a leaf), [`OUTSIDE`], or [`NO_SEG`] if it has no routes of its own.
    /// One load settles an address outside every /16 with routes, which is most of the IPv6
    /// space.
    top: Arc<Top>,
    /// Every segment's nodes and leaves, end to end, entries pointing within.
    trie: Arc<Seg>,
    /// The /16s whose segments the entry format cannot address inside `trie` (millions of
    /// routes), by /16, sorted; each is looked up on its own.
    outside: Arc<Vec<(u16, Arc<Seg>)>>,
    prefixes: usize,
}

/// The /16 table, sized so that indexing it with a /16 needs no bounds check.
type Top = [(u32, u32); 1 << TOP];

/// The /16 of `a`.
#[inline]
fn slash16(a: u128) -> usize {
    usize::from((a >> (128 - TOP)) as u16)
}

/// A /16 table of these entries, one per /16 (cut or padded to that).
fn top_of(mut entries: Vec<(u32, u32)>) -> Arc<Top> {
    entries.resize(1 << TOP, (NONE, NO_SEG));
    // Never the fallback: the length is right. Built on the heap, not on the stack.
    let full: Box<Top> = entries.into_boxed_slice().try_into().unwrap_or_else(|_| Box::new([(NONE, NO_SEG); 1 << TOP]));
    Arc::from(full)
}

/// The entry of a /16 kept in [`Lpm6::outside`]: no node has this index.
const OUTSIDE: u32 = LEAF - 1;
/// The entry of a /16 without routes of its own.
const NO_SEG: u32 = u32::MAX;

impl Default for Lpm6 {
    fn default() -> Self {
        Lpm6 { top: top_of(vec![(NONE, NO_SEG); 1 << TOP]), trie: Arc::default(), outside: Arc::default(), prefixes: 0 }
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
        match self.top[slash16(a)] {
            (base, NO_SEG) => base,
            (_, e) => self.walk(e, a),
        }
    }

    /// The walk from the /16 entry `e`, always inlined so that a caller in another crate
    /// (the benchmark, the pipeline) gets the entry check and the walk as one piece.
    #[inline(always)]
    fn walk(&self, e: u32, a: u128) -> u32 {
        self.trie.walk(e, a, |a| self.outside(a))
    }

    /// The answer for `a` from its /16's segment kept apart.
    #[cold]
    fn outside(&self, a: u128) -> u32 {
        let t = (a >> (128 - TOP)) as u16;
        match self.outside.binary_search_by_key(&t, |(t, _)| *t) {
            Ok(i) => self.outside.get(i).map_or(NONE, |(_, seg)| seg.lookup(a)),
            Err(_) => NONE,
        }
    }

    /// Looks up many addresses at once (`out[i]` for `addrs[i]`). Each group of 16 first
    /// reads all its /16 entries and then walks each, so the first misses of the group
    /// overlap. (Walking the 16 level by level in lockstep was slower: the CPU already
    /// overlaps independent walks, and the bookkeeping costs more than it saves.)
    pub fn lookup_batch(&self, addrs: &[u128], out: &mut [u32]) {
        const G: usize = 16;
        for (a, o) in addrs.chunks(G).zip(out.chunks_mut(G)) {
            let mut at = [NO_SEG; G];
            for ((e, &x), r) in at.iter_mut().zip(a).zip(o.iter_mut()) {
                (*r, *e) = self.top[slash16(x)];
            }
            for ((&e, &x), r) in at.iter().zip(a).zip(o.iter_mut()) {
                if e != NO_SEG {
                    *r = self.walk(e, x);
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
        let outside: usize = self.outside.iter().map(|(_, s)| s.memory_bytes()).sum();
        std::mem::size_of::<Top>() + self.trie.memory_bytes() + outside
    }
}

/// The writer's side of an [`Lpm6`]: every prefix, sorted, the segment of every /16 with
/// routes, and the /16s changed since the last publish.
#[derive(Debug)]
pub struct Lpm6Writer {
    prefixes: BTreeMap<(u128, u8), u32>,
    /// Per /16, the answer from prefixes shorter than /16.
    bases: Vec<u32>,
    segs: BTreeMap<u16, Arc<Seg>>,
    /// One bit per /16 whose segment or base must be rebuilt.
    dirty: Vec<u64>,
    /// The most keys of each width a leaf entry may address (2^22; smaller in tests).
    key_limit: usize,
    /// The last snapshot, handed out again while nothing changes.
    current: Option<Lpm6>,
}

impl Default for Lpm6Writer {
    fn default() -> Self {
        Lpm6Writer {
            prefixes: BTreeMap::new(),
            bases: vec![NONE; 1 << TOP],
            segs: BTreeMap::new(),
            dirty: vec![0; (1 << TOP) / 64],
            key_limit: 1 << AT_BITS,
            current: None,
        }
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

    /// Every prefix with its value, in (address, length) order.
    pub fn sorted(&self) -> Vec<(u128, u8, u32)> {
        self.prefixes.iter().map(|(&(a, l), &v)| (a, l, v)).collect()
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

    /// A snapshot with every change so far. Only the /16s that changed are rebuilt; then
    /// the segments are laid end to end, a copy of a few MiB.
    pub fn publish(&mut self) -> Lpm6 {
        if let Some(current) = self.current.as_ref().filter(|_| !self.has_changes()) {
            return current.clone();
        }
        if self.dirty.iter().all(|&d| d == u64::MAX) {
            self.rebuild_all();
        } else {
            for w in 0..self.dirty.len() {
                while let Some(d) = self.dirty.get_mut(w).filter(|d| **d != 0) {
                    let t = w * 64 + d.trailing_zeros() as usize;
                    *d &= *d - 1;
                    self.rebuild(t);
                }
            }
        }
        let snapshot = self.assemble();
        self.current = Some(snapshot.clone());
        snapshot
    }

    /// Rebuilds the base and the segment of the /16 `t`.
    fn rebuild(&mut self, t: usize) {
        let net = (t as u128) << (128 - TOP);
        let base = (0..TOP as u8).rev().find_map(|l| self.prefixes.get(&(net & mask(l), l)).copied()).unwrap_or(NONE);
        let own: Vec<Prefix6> = self
            .prefixes
            .range((net, TOP as u8)..=(net | !mask(TOP as u8), 128))
            .map(|(&(a, l), &v)| (a, l, v))
            .collect();
        if let Some(b) = self.bases.get_mut(t) {
            *b = base;
        }
        if own.is_empty() {
            self.segs.remove(&(t as u16));
        } else {
            self.segs.insert(t as u16, Arc::new(Seg::build_within(net, base, &own, self.key_limit)));
        }
    }

    fn rebuild_all(&mut self) {
        self.dirty.fill(0);
        self.segs.clear();
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
        for (t, g) in groups {
            let base = bases.get(t).copied().unwrap_or(NONE);
            let seg = Seg::build_within((t as u128) << (128 - TOP), base, &g, self.key_limit);
            self.segs.insert(t as u16, Arc::new(seg));
        }
        self.bases = bases;
    }

    /// The snapshot of the current segments: each laid into one set of arrays with its
    /// entries moved along, or kept apart if the arrays grew past what entries address.
    fn assemble(&self) -> Lpm6 {
        let mut trie = Seg::default();
        trie.nodes.reserve(self.segs.values().map(|s| s.nodes.len()).sum());
        trie.narrow.reserve(self.segs.values().map(|s| s.narrow.len()).sum());
        trie.wide.reserve(self.segs.values().map(|s| s.wide.len()).sum());
        trie.wide_vals.reserve(self.segs.values().map(|s| s.wide.len()).sum());
        let mut top: Vec<(u32, u32)> = self.bases.iter().map(|&base| (base, NO_SEG)).collect();
        let mut outside = Vec::new();
        for (&t, seg) in &self.segs {
            let Some((_, r)) = top.get_mut(usize::from(t)) else { continue };
            match trie.append(seg, self.key_limit) {
                Some(e) => *r = e,
                None => {
                    *r = OUTSIDE;
                    outside.push((t, Arc::clone(seg)));
                }
            }
        }
        Lpm6 { top: top_of(top), trie: Arc::new(trie), outside: Arc::new(outside), prefixes: self.prefixes.len() }
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
        single_updates_agree(Lpm6Writer::default());
    }

    #[test]
    fn single_updates_agree_when_segments_move_in_and_out_of_the_shared_arrays() {
        // With room for few keys, the two /16s go from both fitting the shared arrays to one
        // kept apart for want of room, then to flat runs of their own, as the table grows.
        let apart = single_updates_agree(Lpm6Writer { key_limit: 700, ..Lpm6Writer::default() });
        for stage in [(0, 0), (1, 0), (2, 2)] {
            assert!(apart.contains(&stage), "(kept apart, of them flat) {stage:?} never seen: {apart:?}");
        }
    }

    /// Random single updates through `w`, checked after each publish; returns how many /16s
    /// each snapshot kept apart, and how many of those are flat runs.
    fn single_updates_agree(mut w: Lpm6Writer) -> Vec<(usize, usize)> {
        let mut r = Rng(0x6a09_e667);
        let mut apart = Vec::new();
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
            apart.push((t.outside.len(), t.outside.iter().filter(|(_, s)| s.flat.is_some()).count()));
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
        apart
    }

    #[test]
    fn publish_rebuilds_only_changed_segments() {
        let a = 0x2001u128 << 112;
        let b = 0x2a00u128 << 112;
        let mut w = Lpm6Writer::with_prefixes(&[(a, 16, 1), (b, 16, 2)]);
        let before = w.publish();
        let seg = |w: &Lpm6Writer, x: u128| w.segs.get(&((x >> 112) as u16)).cloned();
        let same =
            |x: Option<Arc<Seg>>, y: Option<Arc<Seg>>| matches!((x, y), (Some(x), Some(y)) if Arc::ptr_eq(&x, &y));
        let (seg_a, seg_b) = (seg(&w, a), seg(&w, b));
        w.insert(a | (1 << 96), 32, 3);
        let after = w.publish();
        assert!(!same(seg_a, seg(&w, a)), "the changed /16 is rebuilt");
        assert!(same(seg_b, seg(&w, b)), "the other is kept");
        assert_eq!(before.lookup(a | (1 << 96) | 5), 1, "the old snapshot answers as before");
        assert_eq!(after.lookup(a | (1 << 96) | 5), 3);
        assert!(Arc::ptr_eq(&w.publish().trie, &after.trie), "nothing changed, nothing laid out again");
        // A short prefix changes the answer of /16s without a segment too.
        w.insert(0x2000u128 << 112, 4, 9);
        let t = w.publish();
        assert_eq!(t.lookup(0x2fff_u128 << 112), 9);
        assert_eq!(t.lookup(a | 5), 1);
        w.remove(0x2000u128 << 112, 4);
        assert_eq!(w.publish().lookup(0x2fff_u128 << 112), NONE);
        // A /16 that loses all its routes loses its segment.
        w.remove(a, 16);
        w.remove(a | (1 << 96), 32);
        let t = w.publish();
        assert!(seg(&w, a).is_none());
        assert_eq!((t.lookup(a | 5), t.lookup(b | 5)), (NONE, 2));
    }

    #[test]
    fn segments_the_shared_arrays_cannot_address_are_looked_up_apart() {
        // Leaf entries address 2^22 keys, which takes millions of routes; here the limit is
        // 64 keys. One /16 outgrows it alone (a flat run), the second and third fit alone but
        // not behind the first that fits. Values too big for an entry, so leaves take keys.
        let mut w = Lpm6Writer { key_limit: 64, ..Lpm6Writer::default() };
        let mut model = BTreeMap::new();
        for (top, n) in [(0x2001u128, 300u128), (0x2400, 20), (0x2600, 20), (0x2a00, 20)] {
            for i in 0..n {
                let (a, l, v) = ((top << 112) | (i << 84), 44 + (i % 5) as u8, 0x4000_0000 | i as u32);
                w.insert(a, l, v);
                model.insert((a & mask(l), l), v);
            }
        }
        w.insert(0x2000u128 << 112, 3, 0x7000_0000);
        model.insert((0x2000u128 << 112, 3), 0x7000_0000);
        let t = w.publish();
        let apart: Vec<u16> = t.outside.iter().map(|(t, _)| *t).collect();
        assert_eq!(apart, [0x2001, 0x2600, 0x2a00], "in order: 0x2400 fit first");
        let mut r = Rng(0x3c6e_f372);
        for _ in 0..4000 {
            let top = [0x2001u128, 0x2400, 0x2600, 0x2a00, 0x2b00][(r.next() % 5) as usize];
            let a = (top << 112) | (u128::from(r.next() % 300) << 84) | u128::from(r.next());
            assert_eq!(t.lookup(a), naive(&model, a), "{a:#x}");
            let mut out = [0];
            t.lookup_batch(&[a], &mut out);
            assert_eq!(out[0], naive(&model, a), "batch {a:#x}");
        }
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
