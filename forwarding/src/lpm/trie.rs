//! The compressed multibit trie IPv4 builds under its direct-indexed /18 slots, in the
//! manner of Poptrie (Asai and Ohara, SIGCOMM 2015).
//!
//! A node covers 6 address bits. Bit `v` of `vector` says whether position `v` leads to a
//! child node; the children are stored in order from `base1`. The other positions are
//! leaves, which form runs of equal value: bit `v` of `leafvec` marks where a run starts,
//! and the runs' values are stored in order from `base0`. A popcount turns a position into
//! an index, so a node is 24 bytes however sparse it is, and a level costs one read.

use super::NONE;

/// Address bits per node.
const STRIDE: u32 = 6;

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Node {
    vector: u64,
    leafvec: u64,
    base1: u32,
    base0: u32,
}

/// An entry of a direct-indexed level. Without [`INDIRECT`] it holds its range's value + 1
/// (so [`NONE`] is 0): one read settles the range. With it, it holds the index of the
/// range's node ([`NODE`]) or of its value in the leaves (a value too big to sit inline).
/// 4 bytes, so that a full IPv4 table's direct level is 1 MiB.
pub(super) type Entry = u32;
const INDIRECT: u32 = 1 << 31;
const NODE: u32 = 1 << 30;
const INDEX: u32 = NODE - 1;
/// The entry of a range no prefix covers.
pub(super) const NO_ROUTE: Entry = 0;

/// Nodes and leaf runs in flat arrays; indices are positions in them.
#[derive(Debug, Clone, Default)]
pub(super) struct Trie {
    pub nodes: Vec<Node>,
    pub leaves: Vec<u32>,
}

impl Trie {
    /// The value for `a`, whose direct-indexed entry is `e`; its node (if any) starts at
    /// bit `off` of the address.
    #[inline]
    pub fn walk(&self, e: Entry, a: u32, mut off: u32) -> u32 {
        if e & INDIRECT == 0 {
            return e.wrapping_sub(1);
        }
        let i = (e & INDEX) as usize;
        if e & NODE == 0 {
            return self.leaves.get(i).copied().unwrap_or(NONE);
        }
        let Some(mut n) = self.nodes.get(i) else { return NONE };
        while off < 32 {
            // The 6 bits from `off`, padded with zeros past the end.
            let v = (a << off) >> (32 - STRIDE);
            // Positions 0..=v.
            let upto = u64::MAX >> (63 - v);
            if n.vector >> v & 1 == 0 {
                let i = n.base0 as usize + (n.leafvec & upto).count_ones() as usize - 1;
                return self.leaves.get(i).copied().unwrap_or(NONE);
            }
            let i = n.base1 as usize + (n.vector & upto).count_ones() as usize - 1;
            let Some(next) = self.nodes.get(i) else { return NONE };
            n = next;
            off += STRIDE;
        }
        NONE
    }

    /// The entry for a range of `bits` bits from `start` (any frame of reference the
    /// caller likes; IPv4 uses offsets within a /16) that starts with value `v0` and changes at `inner`: (first address,
    /// value from there on), sorted, all strictly inside the range.
    pub fn entry(&mut self, start: u32, bits: u32, v0: u32, inner: &[(u32, u32)]) -> Entry {
        if inner.is_empty() {
            let e = v0.wrapping_add(1);
            if e & INDIRECT == 0 {
                return e;
            }
            self.leaves.push(v0);
            return INDIRECT | (self.leaves.len() as u32 - 1);
        }
        // A segment covers at most 2^24 addresses, so indices stay far below 2^30.
        let at = self.nodes.len() as u32;
        self.nodes.push(Node::default());
        let n = self.node(start, bits, v0, inner);
        self.nodes[at as usize] = n;
        INDIRECT | NODE | at
    }

    /// A node over the range: its leaf runs are appended at once, then a slot for each
    /// child node, then the children's own subtrees, so that siblings sit side by side.
    fn node(&mut self, start: u32, bits: u32, v0: u32, inner: &[(u32, u32)]) -> Node {
        // Under 6 bits, a child is one address and the positions are spread out evenly
        // (the lookup pads the address with zeros).
        let (child_bits, count) = if bits >= STRIDE { (bits - STRIDE, 1u32 << STRIDE) } else { (0, 1 << bits) };
        let step = (1 << STRIDE) / count;
        let mut n = Node { base0: self.leaves.len() as u32, base1: self.nodes.len() as u32, ..Node::default() };
        let mut children: Vec<(u32, u32, usize, usize)> = Vec::new();
        let (mut v, mut k, mut last_leaf) = (v0, 0usize, None);
        for c in 0..count {
            let cs = start + (c << child_bits);
            let ce = cs + (1 << child_bits);
            while k < inner.len() && inner[k].0 <= cs {
                v = inner[k].1;
                k += 1;
            }
            let mut to = k;
            while to < inner.len() && inner[to].0 < ce {
                to += 1;
            }
            let pos = c * step;
            if to > k {
                n.vector |= 1 << pos;
                children.push((cs, v, k, to));
            } else if last_leaf != Some(v) {
                n.leafvec |= 1 << pos;
                self.leaves.push(v);
                last_leaf = Some(v);
            }
        }
        let first = self.nodes.len();
        self.nodes.resize(first + children.len(), Node::default());
        for (j, (cs, cv, from, to)) in children.into_iter().enumerate() {
            self.nodes[first + j] = self.node(cs, child_bits, cv, &inner[from..to]);
        }
        n
    }

    /// Appends nodes `nodes` and leaves `leaves` of `old`, which point only among
    /// themselves, with their indices shifted to where they now sit; returns the shifts of
    /// node and leaf indices, for the entries that point at them.
    pub fn append_from(
        &mut self,
        old: &Trie,
        nodes: std::ops::Range<usize>,
        leaves: std::ops::Range<usize>,
    ) -> (u32, u32) {
        // Wrapping: the nodes may move down as well as up.
        let dn = (self.nodes.len() as u32).wrapping_sub(nodes.start as u32);
        let dl = (self.leaves.len() as u32).wrapping_sub(leaves.start as u32);
        self.nodes.extend(old.nodes.get(nodes).unwrap_or(&[]).iter().map(|n| Node {
            base1: n.base1.wrapping_add(dn),
            base0: n.base0.wrapping_add(dl),
            ..*n
        }));
        self.leaves.extend_from_slice(old.leaves.get(leaves).unwrap_or(&[]));
        (dn, dl)
    }

    /// `e` after the nodes moved by `dn` and the leaves by `dl`.
    pub fn moved(e: Entry, (dn, dl): (u32, u32)) -> Entry {
        let d = match e & (INDIRECT | NODE) {
            0 => return e,
            INDIRECT => dl,
            _ => dn,
        };
        (e & !INDEX) | ((e & INDEX).wrapping_add(d) & INDEX)
    }

    pub fn shrink_to_fit(&mut self) {
        self.nodes.shrink_to_fit();
        self.leaves.shrink_to_fit();
    }

    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>() + self.leaves.capacity() * 4
    }
}
