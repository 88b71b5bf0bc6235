//! The forwarding information base: longest-prefix match from destination to next hop.
//!
//! A [`Fib`] is an immutable snapshot. The control thread builds a new one and publishes it
//! through a [`FibHandle`]; workers load the current snapshot once per batch without locks
//! (`arc_swap`), so they never block and never see a half-applied change. Old snapshots are
//! freed when the last worker drops its guard. Lookups go through the Poptrie of
//! [`crate::lpm`]. A [`FibWriter`] applies single-route changes and publishes snapshots that
//! rebuild only the /8 segments (IPv6: /16s) that changed.

use crate::iface::IfaceId;
use crate::lpm::{Lpm4, Lpm4Writer, Lpm6, Lpm6Writer, NONE};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// What to do with a packet whose destination matched a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// The destination itself is on this link (a pod's /32, or the uplink's subnet).
    Local { iface: IfaceId },
    /// Via a gateway on this link.
    Direct { iface: IfaceId, gateway: Ipv4Addr },
    /// Wrapped in IPIP to the node `remote`; the outer packet leaves by `iface` via `gateway`
    /// (the underlay next hop toward `remote`).
    Ipip { iface: IfaceId, gateway: Ipv4Addr, remote: Ipv4Addr },
    /// Wrapped in VXLAN (VNI 4096, UDP 4789) to the node `remote`, whose VTEP MAC follows
    /// from its address ([`encap::vxlan::vtep_mac`]); out by `iface` via `gateway`.
    Vxlan { iface: IfaceId, gateway: Ipv4Addr, remote: Ipv4Addr },
    /// Addressed to this node: the kernel's business, not forwarded.
    Host,
    /// Dropped silently (counted): a node's own block, so unused pod addresses go nowhere.
    Blackhole,
    /// Dropped with ICMP destination unreachable.
    Unreachable,
}

/// One route as the FIB sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub prefix: Ipv4Net,
    pub next_hop: NextHop,
}

/// What to do with an IPv6 packet whose destination matched a route. There is no tunnel:
/// as in Calico, IPv6 pods on other subnets are reached by routes the fabric learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop6 {
    /// The destination itself is on this link (a pod's /128, or the uplink's prefix).
    Local { iface: IfaceId },
    /// Via a gateway on this link.
    Direct { iface: IfaceId, gateway: Ipv6Addr },
    /// Addressed to this node: the kernel's business.
    Host,
    /// Dropped silently (counted): the node's own block.
    Blackhole,
    /// Dropped with ICMPv6 destination unreachable.
    Unreachable,
}

/// One IPv6 route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route6 {
    pub prefix: Ipv6Net,
    pub next_hop: NextHop6,
}

/// The IPv6 table of a snapshot, shared by the snapshots until an IPv6 route changes.
#[derive(Debug)]
pub struct Fib6 {
    lpm: Lpm6,
    hops: Arc<[NextHop6]>,
}

impl Default for Fib6 {
    fn default() -> Self {
        Fib6::build(&[])
    }
}

impl Fib6 {
    /// A later route for the same prefix replaces an earlier one.
    pub fn build(routes: &[Route6]) -> Fib6 {
        let mut hops: Vec<NextHop6> = Vec::new();
        let mut index: HashMap<NextHop6, u32> = HashMap::new();
        let prefixes: Vec<(u128, u8, u32)> = routes
            .iter()
            .map(|r| {
                let i = *index.entry(r.next_hop).or_insert_with(|| {
                    hops.push(r.next_hop);
                    (hops.len() - 1) as u32
                });
                (u128::from(r.prefix.trunc().network()), r.prefix.prefix_len(), i)
            })
            .collect();
        Fib6 { lpm: Lpm6::build(&prefixes), hops: hops.into() }
    }

    #[inline]
    pub fn lookup(&self, dst: Ipv6Addr) -> Option<NextHop6> {
        match self.lpm.lookup(u128::from(dst)) {
            NONE => None,
            i => self.hops.get(i as usize).copied(),
        }
    }

    pub fn len(&self) -> usize {
        self.lpm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }
}

/// Who may send us IPIP, and how we send it. Part of the snapshot because it changes with
/// the set of nodes, like the routes do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnels {
    /// TTL of outer headers.
    pub ttl: u8,
    /// Node addresses of the cluster: decapsulation is allowed from these.
    pub peers: std::collections::HashSet<Ipv4Addr>,
    /// Further allowed outer sources (external routers).
    pub allowed: Vec<Ipv4Net>,
    /// This node's pods, sorted. Only they may use these addresses: a packet carrying one as
    /// its source from the underlay or out of a tunnel is spoofed, and in `tun` mode a
    /// packet the kernel routed into `tunl0` must come from one of them or the node.
    pub local_pods: Vec<Ipv4Addr>,
    /// Their IPv6 addresses, sorted, in a dual-stack cluster.
    pub local_pods6: Vec<Ipv6Addr>,
    /// Which pods' traffic leaves masqueraded (`natOutgoing`).
    pub nat: crate::nat::NatPolicy,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            ttl: 64,
            peers: Default::default(),
            allowed: Vec::new(),
            local_pods: Vec::new(),
            local_pods6: Vec::new(),
            nat: Default::default(),
        }
    }
}

impl Tunnels {
    pub fn allows(&self, src: Ipv4Addr) -> bool {
        self.peers.contains(&src) || self.allowed.iter().any(|n| n.contains(&src))
    }

    /// Whether `a` is one of this node's pods (`local_pods` must be sorted).
    #[inline]
    pub fn is_local_pod(&self, a: Ipv4Addr) -> bool {
        self.local_pods.binary_search(&a).is_ok()
    }

    /// Whether `a` is one of this node's pods' IPv6 addresses.
    #[inline]
    pub fn is_local_pod6(&self, a: Ipv6Addr) -> bool {
        self.local_pods6.binary_search(&a).is_ok()
    }
}

/// An immutable FIB snapshot: the LPM ([`Lpm4`]) maps an address to an index into
/// the next-hop table.
#[derive(Debug, Default, Clone)]
pub struct Fib {
    tunnels: Tunnels,
    lpm: Lpm4,
    /// Next hops by index; shared between snapshots until the set of next hops changes.
    hops: Arc<[NextHop]>,
    v6: Arc<Fib6>,
}

impl Fib {
    /// Builds a snapshot; a later route for the same prefix replaces an earlier one.
    pub fn build(routes: &[Route]) -> Fib {
        FibWriter::with_routes(routes).publish()
    }

    /// Longest-prefix match.
    #[inline]
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<NextHop> {
        match self.lpm.lookup(u32::from(dst)) {
            NONE => None,
            i => self.hops.get(i as usize).copied(),
        }
    }

    /// Longest-prefix match in the IPv6 table.
    #[inline]
    pub fn lookup6(&self, dst: Ipv6Addr) -> Option<NextHop6> {
        self.v6.lookup(dst)
    }

    /// The IPv6 table.
    pub fn v6(&self) -> &Fib6 {
        &self.v6
    }

    /// Sets the IPv6 routes carried with this snapshot.
    pub fn with_v6(mut self, routes: &[Route6]) -> Fib {
        self.v6 = Arc::new(Fib6::build(routes));
        self
    }

    /// Sets the tunnel policy carried with this snapshot.
    pub fn with_tunnels(mut self, t: Tunnels) -> Fib {
        self.tunnels = t;
        self
    }

    pub fn tunnels(&self) -> &Tunnels {
        &self.tunnels
    }

    /// Heap bytes of the lookup structures and the next-hop tables, both families.
    pub fn memory_bytes(&self) -> usize {
        self.lpm.memory_bytes()
            + self.hops.len() * std::mem::size_of::<NextHop>()
            + self.v6.lpm.memory_bytes()
            + self.v6.hops.len() * std::mem::size_of::<NextHop6>()
    }

    /// Number of distinct prefixes.
    pub fn len(&self) -> usize {
        self.lpm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }
}

/// The next hops an LPM's values index, counted so that an index whose last route went
/// away is reused.
#[derive(Debug)]
struct HopTable<H> {
    hops: Vec<H>,
    /// Routes per index; 0 marks a free slot.
    refs: Vec<usize>,
    index: HashMap<H, u32>,
    free: Vec<u32>,
    /// `hops` changed since the last publish.
    changed: bool,
    published: Arc<[H]>,
}

impl<H> Default for HopTable<H> {
    fn default() -> Self {
        HopTable {
            hops: Vec::new(),
            refs: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            changed: false,
            published: Arc::from(Vec::new()),
        }
    }
}

impl<H: Copy + Eq + std::hash::Hash> HopTable<H> {
    fn intern(&mut self, nh: H) -> u32 {
        if let Some(&i) = self.index.get(&nh) {
            self.refs[i as usize] += 1;
            return i;
        }
        self.changed = true;
        let i = match self.free.pop() {
            Some(i) => {
                self.hops[i as usize] = nh;
                self.refs[i as usize] = 1;
                i
            }
            None => {
                self.hops.push(nh);
                self.refs.push(1);
                (self.hops.len() - 1) as u32
            }
        };
        self.index.insert(nh, i);
        i
    }

    /// One route less uses index `i`; what it pointed to.
    fn release(&mut self, i: u32) -> Option<H> {
        let r = self.refs.get_mut(i as usize)?;
        *r = r.saturating_sub(1);
        let nh = self.hops[i as usize];
        if *r == 0 {
            self.index.remove(&nh);
            self.free.push(i);
        }
        Some(nh)
    }

    fn get(&self, i: u32) -> Option<H> {
        self.hops.get(i as usize).copied()
    }

    fn publish(&mut self) -> Arc<[H]> {
        if self.changed {
            self.published = self.hops.as_slice().into();
            self.changed = false;
        }
        Arc::clone(&self.published)
    }
}

/// What to insert (`Some`) or withdraw (`None`) so that a table holding `have` holds
/// `want`; both sorted by key. One merge of two sorted lists, so a full table that barely
/// changed costs little.
fn sync_ops<K: Ord + Copy, H: Copy + PartialEq>(
    have: impl IntoIterator<Item = (K, Option<H>)>,
    want: &[(K, H)],
) -> Vec<(K, Option<H>)> {
    let mut ops = Vec::new();
    let mut have = have.into_iter().peekable();
    let mut want = want.iter().peekable();
    loop {
        match (have.peek(), want.peek()) {
            (Some(h), Some(w)) if h.0 == w.0 => {
                if h.1 != Some(w.1) {
                    ops.push((w.0, Some(w.1)));
                }
                have.next();
                want.next();
            }
            (Some(h), Some(w)) if h.0 < w.0 => {
                ops.push((h.0, None));
                have.next();
            }
            (Some(h), None) => {
                ops.push((h.0, None));
                have.next();
            }
            (_, Some(w)) => {
                ops.push((w.0, Some(w.1)));
                want.next();
            }
            (None, None) => return ops,
        }
    }
}

/// (inserted or changed, withdrawn) of a list of [`sync_ops`].
fn count_ops<K, H>(ops: &[(K, Option<H>)]) -> (usize, usize) {
    let withdrawn = ops.iter().filter(|(_, nh)| nh.is_none()).count();
    (ops.len() - withdrawn, withdrawn)
}

/// Sorted by key, a later entry for the same key winning (stable, and nearly free on
/// input that is already sorted, as route tables are).
pub fn last_wins<K: Ord + Copy, H>(mut v: Vec<(K, H)>) -> Vec<(K, H)> {
    v.reverse();
    v.sort_by_key(|e| e.0);
    v.dedup_by_key(|e| e.0);
    v
}

/// Keeps the routes of a FIB, both families, and applies changes one route at a time: the
/// LPM writers hold next-hop indices into counted `HopTable`s. [`FibWriter::publish`]
/// yields the snapshot for a [`FibHandle`].
#[derive(Debug, Default)]
pub struct FibWriter {
    lpm: Lpm4Writer,
    hops: HopTable<NextHop>,
    tunnels: Tunnels,
    lpm6: Lpm6Writer,
    hops6: HopTable<NextHop6>,
    /// The last IPv6 table published, until an IPv6 route changes.
    v6: Option<Arc<Fib6>>,
}

impl FibWriter {
    /// A writer holding these routes (later ones for the same prefix win), built in bulk.
    pub fn with_routes(routes: &[Route]) -> FibWriter {
        let mut last: HashMap<Ipv4Net, NextHop> = HashMap::with_capacity(routes.len());
        for r in routes {
            last.insert(r.prefix.trunc(), r.next_hop);
        }
        let mut w = FibWriter::default();
        let prefixes: Vec<(u32, u8, u32)> =
            last.iter().map(|(p, nh)| (u32::from(p.network()), p.prefix_len(), w.hops.intern(*nh))).collect();
        w.lpm = Lpm4Writer::with_prefixes(&prefixes);
        w
    }

    /// Adds or replaces the route for `prefix`; returns the next hop it had.
    pub fn insert(&mut self, prefix: Ipv4Net, nh: NextHop) -> Option<NextHop> {
        let idx = self.hops.intern(nh);
        let old = self.lpm.insert(u32::from(prefix.network()), prefix.prefix_len(), idx)?;
        self.hops.release(old)
    }

    /// Withdraws the route for `prefix`; returns the next hop it had.
    pub fn remove(&mut self, prefix: Ipv4Net) -> Option<NextHop> {
        let old = self.lpm.remove(u32::from(prefix.network()), prefix.prefix_len())?;
        self.hops.release(old)
    }

    /// The next hop stored for exactly this prefix.
    pub fn get(&self, prefix: Ipv4Net) -> Option<NextHop> {
        self.hops.get(self.lpm.get(u32::from(prefix.network()), prefix.prefix_len())?)
    }

    /// [`FibWriter::insert`] for IPv6.
    pub fn insert6(&mut self, prefix: Ipv6Net, nh: NextHop6) -> Option<NextHop6> {
        let idx = self.hops6.intern(nh);
        let old = self.lpm6.insert(u128::from(prefix.network()), prefix.prefix_len(), idx);
        if old != Some(idx) {
            self.v6 = None;
        }
        self.hops6.release(old?)
    }

    /// [`FibWriter::remove`] for IPv6.
    pub fn remove6(&mut self, prefix: Ipv6Net) -> Option<NextHop6> {
        let old = self.lpm6.remove(u128::from(prefix.network()), prefix.prefix_len())?;
        self.v6 = None;
        self.hops6.release(old)
    }

    /// The IPv6 next hop stored for exactly this prefix.
    pub fn get6(&self, prefix: Ipv6Net) -> Option<NextHop6> {
        self.hops6.get(self.lpm6.get(u128::from(prefix.network()), prefix.prefix_len())?)
    }

    /// Makes the writer hold exactly these IPv6 routes (a later route for the same prefix
    /// wins), changing only what differs; returns (inserted or changed, withdrawn).
    pub fn sync6(&mut self, routes: &[Route6]) -> (usize, usize) {
        let want = last_wins(
            routes.iter().map(|r| ((r.prefix.trunc().network(), r.prefix.prefix_len()), r.next_hop)).collect(),
        );
        let have: Vec<_> =
            self.lpm6.sorted().into_iter().map(|(a, l, i)| ((Ipv6Addr::from(a), l), self.hops6.get(i))).collect();
        let ops = sync_ops(have, &want);
        let counts = count_ops(&ops);
        for ((a, len), nh) in ops {
            self.set_route(Ipv6Net::new(a, len).unwrap_or_default(), nh);
        }
        counts
    }

    /// Makes the writer hold exactly `routes` (a later route for the same prefix wins), by
    /// inserting and withdrawing only what differs; returns (inserted or changed, withdrawn).
    /// One merge of two sorted lists, so a full table that barely changed costs little.
    pub fn sync(&mut self, routes: &[Route]) -> (usize, usize) {
        let want = last_wins(
            routes.iter().map(|r| ((r.prefix.trunc().network(), r.prefix.prefix_len()), r.next_hop)).collect(),
        );
        let hops = &self.hops;
        let have = self.lpm.sorted().into_iter().map(|(a, l, i)| ((Ipv4Addr::from(a), l), hops.get(i)));
        let ops = sync_ops(have, &want);
        let counts = count_ops(&ops);
        for ((a, len), nh) in ops {
            self.set_route(Ipv4Net::new(a, len).unwrap_or_default(), nh);
        }
        counts
    }

    /// Sets the tunnel policy of the next snapshots.
    pub fn set_tunnels(&mut self, t: Tunnels) {
        self.tunnels = t;
    }

    /// Number of IPv4 routes.
    pub fn len(&self) -> usize {
        self.lpm.len()
    }

    /// Number of IPv6 routes.
    pub fn len6(&self) -> usize {
        self.lpm6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }

    /// A snapshot with every change so far (unchanged parts shared with the last one).
    pub fn publish(&mut self) -> Fib {
        let (lpm6, hops6) = (&mut self.lpm6, &mut self.hops6);
        let v6 = self.v6.get_or_insert_with(|| Arc::new(Fib6 { lpm: lpm6.publish(), hops: hops6.publish() }));
        Fib { tunnels: self.tunnels.clone(), lpm: self.lpm.publish(), hops: self.hops.publish(), v6: Arc::clone(v6) }
    }
}

/// One family's routes of a [`FibWriter`], for code that treats IPv4 and IPv6 alike.
pub trait FibFamily<N, H> {
    /// The next hop stored for exactly `prefix`.
    fn route(&self, prefix: N) -> Option<H>;
    /// Stores (`Some`) or withdraws (`None`) the route for `prefix`.
    fn set_route(&mut self, prefix: N, nh: Option<H>);
}

impl FibFamily<Ipv4Net, NextHop> for FibWriter {
    fn route(&self, prefix: Ipv4Net) -> Option<NextHop> {
        self.get(prefix)
    }

    fn set_route(&mut self, prefix: Ipv4Net, nh: Option<NextHop>) {
        match nh {
            Some(nh) => self.insert(prefix, nh),
            None => self.remove(prefix),
        };
    }
}

impl FibFamily<Ipv6Net, NextHop6> for FibWriter {
    fn route(&self, prefix: Ipv6Net) -> Option<NextHop6> {
        self.get6(prefix)
    }

    fn set_route(&mut self, prefix: Ipv6Net, nh: Option<NextHop6>) {
        match nh {
            Some(nh) => self.insert6(prefix, nh),
            None => self.remove6(prefix),
        };
    }
}

/// The publication point shared by the control thread (writer) and the workers (readers):
/// [`FibHandle::publish`] replaces the snapshot atomically, readers switch at their next
/// batch, and old snapshots are freed by the writer, never by a worker.
pub type FibHandle = crate::snapshot::Published<Fib>;

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("prefix")
    }

    fn route(p: &str, nh: NextHop) -> Route {
        Route { prefix: net(p), next_hop: nh }
    }

    const UP: IfaceId = IfaceId(0);

    /// The obvious reference: scan all routes, keep the longest match.
    fn naive(routes: &[Route], dst: Ipv4Addr) -> Option<NextHop> {
        routes.iter().filter(|r| r.prefix.contains(&dst)).max_by_key(|r| r.prefix.prefix_len()).map(|r| r.next_hop)
    }

    #[test]
    fn longest_prefix_wins() {
        let gw = Ipv4Addr::new(192, 168, 100, 101);
        let routes = [
            route("10.244.0.0/16", NextHop::Unreachable),
            route("10.244.1.0/26", NextHop::Blackhole),
            route("10.244.1.2/32", NextHop::Local { iface: IfaceId(1) }),
            route("10.244.2.0/26", NextHop::Direct { iface: UP, gateway: gw }),
        ];
        let fib = Fib::build(&routes);
        assert_eq!(fib.len(), 4);
        assert_eq!(fib.lookup("10.244.1.2".parse().expect("ip")), Some(NextHop::Local { iface: IfaceId(1) }));
        assert_eq!(fib.lookup("10.244.1.3".parse().expect("ip")), Some(NextHop::Blackhole));
        assert_eq!(fib.lookup("10.244.2.9".parse().expect("ip")), Some(NextHop::Direct { iface: UP, gateway: gw }));
        assert_eq!(fib.lookup("10.244.9.9".parse().expect("ip")), Some(NextHop::Unreachable));
        assert_eq!(fib.lookup("8.8.8.8".parse().expect("ip")), None);
    }

    #[test]
    fn default_route_matches_everything() {
        let fib = Fib::build(&[route("0.0.0.0/0", NextHop::Blackhole)]);
        assert_eq!(fib.lookup(Ipv4Addr::BROADCAST), Some(NextHop::Blackhole));
        assert_eq!(fib.lookup(Ipv4Addr::UNSPECIFIED), Some(NextHop::Blackhole));
    }

    #[test]
    fn agrees_with_naive_reference_on_random_tables() {
        // A small deterministic PRNG keeps the test reproducible without extra crates.
        let mut rng = crate::lpm::testing::Rng(0x1234_5678);
        let mut next = || rng.next();
        for _ in 0..20 {
            let routes: Vec<Route> = (0..200)
                .map(|i| {
                    let len = (next() % 33) as u8;
                    let a = Ipv4Addr::from((next() as u32) & 0x0f0f_ffff);
                    let prefix = Ipv4Net::new(a, len).expect("len").trunc();
                    route(&prefix.to_string(), NextHop::Local { iface: IfaceId(i) })
                })
                .collect();
            // Later duplicates replace earlier ones in the FIB; make the reference agree.
            let mut dedup: Vec<Route> = Vec::new();
            for r in &routes {
                dedup.retain(|d| d.prefix != r.prefix);
                dedup.push(*r);
            }
            let fib = Fib::build(&routes);
            for _ in 0..2000 {
                let dst = Ipv4Addr::from((next() as u32) & 0x0f0f_ffff);
                assert_eq!(fib.lookup(dst), naive(&dedup, dst), "dst {dst}");
            }
        }
    }

    #[test]
    fn readers_see_whole_snapshots() {
        let h = FibHandle::default();
        assert_eq!(h.load().lookup(Ipv4Addr::new(1, 1, 1, 1)), None);
        h.publish(Fib::build(&[route("1.0.0.0/8", NextHop::Blackhole)]));
        assert_eq!(h.load().lookup(Ipv4Addr::new(1, 1, 1, 1)), Some(NextHop::Blackhole));
    }

    #[test]
    fn writer_changes_match_a_rebuild_and_reuse_next_hop_slots() {
        let mut rng = crate::lpm::testing::Rng(0x0bad_cafe);
        let mut next = || rng.next();
        let mut w = FibWriter::default();
        let mut model: HashMap<Ipv4Net, NextHop> = HashMap::new();
        for round in 0..30 {
            for _ in 0..100 {
                let len = (next() % 33) as u8;
                let prefix = Ipv4Net::new(Ipv4Addr::from((next() as u32) & 0x0f0f_ffff), len).expect("len").trunc();
                if next().is_multiple_of(3) {
                    assert_eq!(w.remove(prefix), model.remove(&prefix));
                } else {
                    let nh = NextHop::Local { iface: IfaceId((next() % 8) as u16) };
                    assert_eq!(w.insert(prefix, nh), model.insert(prefix, nh));
                }
            }
            let fib = w.publish();
            let routes: Vec<Route> = model.iter().map(|(&prefix, &next_hop)| Route { prefix, next_hop }).collect();
            assert_eq!(fib.len(), routes.len());
            for _ in 0..1000 {
                let dst = Ipv4Addr::from((next() as u32) & 0x0f0f_ffff);
                assert_eq!(fib.lookup(dst), naive(&routes, dst), "round {round} dst {dst}");
            }
            // Only live next hops hold slots: at most the 8 distinct ones.
            assert!(w.hops.hops.len() <= 8, "{} slots", w.hops.hops.len());
            assert_eq!(w.hops.refs.iter().sum::<usize>(), routes.len());
        }
    }

    #[test]
    fn sync_applies_only_the_difference() {
        let (a, b) = (NextHop::Blackhole, NextHop::Unreachable);
        let mut w = FibWriter::with_routes(&[route("10.0.0.0/8", a), route("11.0.0.0/8", a), route("0.0.0.0/0", a)]);
        let want = [route("12.0.0.0/8", b), route("10.0.0.0/8", a), route("11.0.0.0/8", b), route("12.0.0.0/8", a)];
        assert_eq!(w.sync(&want), (2, 1), "11/8 changed, 12/8 added; 0/0 withdrawn");
        assert_eq!(w.sync(&want), (0, 0), "nothing left to do");
        let fib = w.publish();
        assert_eq!(fib.len(), 3);
        assert_eq!(fib.lookup(Ipv4Addr::new(12, 0, 0, 1)), Some(a), "the later duplicate won");
        assert_eq!(fib.lookup(Ipv4Addr::new(11, 0, 0, 1)), Some(b));
        assert_eq!(fib.lookup(Ipv4Addr::new(9, 0, 0, 1)), None);
    }

    #[test]
    fn bulk_build_counts_each_prefix_once() {
        let a = NextHop::Blackhole;
        let b = NextHop::Unreachable;
        let mut w = FibWriter::with_routes(&[route("10.0.0.0/8", a), route("10.0.0.0/8", b), route("11.0.0.0/8", b)]);
        assert_eq!(w.len(), 2);
        assert_eq!(w.get(net("10.0.0.0/8")), Some(b), "the later route won");
        assert_eq!(w.remove(net("10.0.0.0/8")), Some(b));
        assert_eq!(w.remove(net("11.0.0.0/8")), Some(b));
        assert!(w.is_empty());
        assert_eq!(w.publish().lookup(Ipv4Addr::new(10, 1, 1, 1)), None);
    }

    #[test]
    fn the_ipv6_table_matches_longest_prefixes_and_rides_along_with_snapshots() {
        let n = |s: &str| -> Ipv6Net { s.parse().expect("prefix") };
        let a = |s: &str| -> Ipv6Addr { s.parse().expect("addr") };
        let gw = a("fd00:192:168:100::101");
        let routes = [
            Route6 { prefix: n("fd00:10:244::/48"), next_hop: NextHop6::Unreachable },
            Route6 { prefix: n("fd00:10:244:0:1::/122"), next_hop: NextHop6::Blackhole },
            Route6 { prefix: n("fd00:10:244:0:1::1/128"), next_hop: NextHop6::Local { iface: IfaceId(1) } },
            Route6 { prefix: n("fd00:10:244:0:2::/122"), next_hop: NextHop6::Direct { iface: UP, gateway: gw } },
        ];
        let mut w = FibWriter::with_routes(&[]);
        assert_eq!(w.sync6(&routes), (4, 0));
        assert_eq!(w.sync6(&routes), (0, 0), "unchanged");
        let fib = w.publish();
        assert_eq!(fib.v6().len(), 4);
        assert_eq!(fib.lookup6(a("fd00:10:244:0:1::1")), Some(NextHop6::Local { iface: IfaceId(1) }));
        assert_eq!(fib.lookup6(a("fd00:10:244:0:1::2")), Some(NextHop6::Blackhole));
        assert_eq!(fib.lookup6(a("fd00:10:244:0:2::3f")), Some(NextHop6::Direct { iface: UP, gateway: gw }));
        assert_eq!(fib.lookup6(a("fd00:10:244:0:2::40")), Some(NextHop6::Unreachable));
        assert_eq!(fib.lookup6(a("2001:db8::1")), None);
        // IPv4 changes publish new snapshots that keep the IPv6 table.
        w.insert(net("10.0.0.0/8"), NextHop::Blackhole);
        let again = w.publish();
        assert!(Arc::ptr_eq(&fib.v6, &again.v6), "the same IPv6 table");
        assert_eq!(again.lookup6(a("fd00:10:244:0:1::1")), Some(NextHop6::Local { iface: IfaceId(1) }));
        // One IPv6 route changes: a new table, the rest as it was.
        assert_eq!(w.sync6(&routes[..3]), (0, 1));
        let fib = w.publish();
        assert!(!Arc::ptr_eq(&fib.v6, &again.v6));
        assert_eq!(fib.lookup6(a("fd00:10:244:0:2::3f")), Some(NextHop6::Unreachable));
    }

    #[test]
    fn ipv6_changes_one_by_one_match_a_rebuild_and_reuse_next_hop_slots() {
        let mut rng = crate::lpm::testing::Rng(0x6bad_cafe);
        let mut next = || rng.next();
        let mut w = FibWriter::default();
        let mut model: HashMap<Ipv6Net, NextHop6> = HashMap::new();
        // Addresses within a few /16s, so that prefixes overlap.
        let addr =
            |r: u64, s: u64| Ipv6Addr::from((u128::from(0x2001_0db8_u32 | (r as u32 & 3)) << 96) | u128::from(s));
        for round in 0..30 {
            for _ in 0..100 {
                let len = 16 + (next() % 113) as u8;
                let raw = addr(next(), next());
                let prefix = Ipv6Net::new(raw, len.min(128)).expect("len").trunc();
                if next().is_multiple_of(3) {
                    assert_eq!(w.remove6(prefix), model.remove(&prefix));
                } else {
                    let nh = NextHop6::Local { iface: IfaceId((next() % 8) as u16) };
                    assert_eq!(w.insert6(prefix, nh), model.insert(prefix, nh));
                    assert_eq!(w.get6(prefix), Some(nh));
                }
            }
            let fib = w.publish();
            let routes: Vec<Route6> = model.iter().map(|(&prefix, &next_hop)| Route6 { prefix, next_hop }).collect();
            let rebuilt = Fib6::build(&routes);
            assert_eq!((fib.v6().len(), w.len6()), (routes.len(), routes.len()));
            for (i, r) in routes.iter().enumerate() {
                // Inside each prefix and just past its end.
                let last = u128::from(r.prefix.broadcast());
                for dst in [r.prefix.network(), Ipv6Addr::from(last.wrapping_add(1)), addr(next(), next())] {
                    assert_eq!(fib.lookup6(dst), rebuilt.lookup(dst), "round {round} route {i} dst {dst}");
                }
            }
            assert!(w.hops6.hops.len() <= 8, "{} slots", w.hops6.hops.len());
            assert_eq!(w.hops6.refs.iter().sum::<usize>(), routes.len());
        }
        // And sync6 brings a writer to the same table.
        let routes: Vec<Route6> = model.iter().map(|(&prefix, &next_hop)| Route6 { prefix, next_hop }).collect();
        let mut other = FibWriter::default();
        other.insert6("2001:db8::/32".parse().expect("net"), NextHop6::Blackhole);
        other.sync6(&routes);
        assert_eq!(other.len6(), routes.len());
        for r in &routes {
            assert_eq!(other.get6(r.prefix), Some(r.next_hop));
        }
    }
}
