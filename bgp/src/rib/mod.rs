//! The RIBs (RFC 4271 §3.2, §9): Adj-RIB-In per peer, the Loc-RIB chosen by the decision
//! process (with the RFC 4456 tie-breaks), and Adj-RIB-Out per peer, with route reflection
//! (cluster ID, ORIGINATOR_ID, CLUSTER_LIST, client/non-client rules) and the graceful-restart
//! helper's stale marking (RFC 4724). Sans-IO: calls go in, changes come out.

use super::policy::{self, community, Action, ClusterPolicy, Filter, Rejected};
use super::wire::update::flag;
use super::wire::{Afi, AsSegment, Attr, AttrValue, Origin, Update};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

/// A peer, by its place in the node's peer list.
pub type PeerId = u32;

/// Where a Loc-RIB route came from, for the FIB and for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Local,
    Peer(PeerId),
}

#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: IpAddr,
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// We reflect for this peer (we are a route reflector and it is our client).
    pub rr_client: bool,
    /// Our address toward this peer: the next hop we announce.
    pub local_addr: Ipv4Addr,
    /// Our IPv6 address, the next hop of the IPv6 routes we announce (dual stack); without
    /// one, IPv6 routes are carried but not announced.
    pub local_addr6: Option<std::net::Ipv6Addr>,
    /// A router outside the cluster (Calico's BGPPeer, not a node): what it sends is checked
    /// against the pools and our own routes, and it is never passed on.
    pub external: bool,
    /// Its BGPFilters, in the order it lists them.
    pub filters: Vec<Arc<Filter>>,
    /// Received prefixes (accepted and rejected) beyond which the session is shut down.
    pub max_prefixes: Option<u32>,
    /// Times our AS may appear in the AS_PATH of its routes before they count as a loop.
    pub allow_local_as: u8,
    /// eBGP: routes we pass on keep the next hop they came with, where it is of the route's
    /// family (Calico's keepOriginalNextHop), instead of ours.
    pub keep_next_hop: bool,
}

impl PeerInfo {
    /// A cluster peer with no filters and no limit; its router ID is its IPv4 address (an
    /// IPv6 peer's 0.0.0.0) until its OPEN says otherwise.
    pub fn new(addr: impl Into<IpAddr>, asn: u32, local_addr: Ipv4Addr) -> PeerInfo {
        let addr = addr.into();
        PeerInfo {
            addr,
            router_id: match addr {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
            },
            asn,
            rr_client: false,
            local_addr,
            local_addr6: None,
            external: false,
            filters: Vec::new(),
            max_prefixes: None,
            allow_local_as: 0,
            keep_next_hop: false,
        }
    }
}

/// A step of the decision process (RFC 4271 §9.1.2.2 with RFC 4456 §9), in the order they
/// are applied: the step at which a candidate lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A route this node originates beats every learned one.
    Local,
    LocalPref,
    AsPathLength,
    Origin,
    /// Only against routes from the same neighbouring AS.
    Med,
    EbgpOverIbgp,
    /// Lowest BGP identifier (the ORIGINATOR_ID of a reflected route).
    RouterId,
    ClusterListLength,
    PeerAddress,
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Local => "originated by this node",
            Step::LocalPref => "higher LOCAL_PREF",
            Step::AsPathLength => "shorter AS_PATH",
            Step::Origin => "lower ORIGIN",
            Step::Med => "lower MED from the same neighbouring AS",
            Step::EbgpOverIbgp => "eBGP over iBGP",
            Step::RouterId => "lower BGP identifier",
            Step::ClusterListLength => "shorter CLUSTER_LIST",
            Step::PeerAddress => "lower peer address",
        }
    }
}

/// One path for a prefix, as `router routes --detail` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub from: From,
    pub attrs: Arc<PathAttrs>,
    pub stale: bool,
    /// `None` for the best path; else the step at which it lost.
    pub lost_at: Option<Step>,
}

/// The attributes of one path, shared between the prefixes that carry them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    pub next_hop: IpAddr,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Optional transitive attributes we pass on without interpreting.
    pub transitive: Vec<Attr>,
}

impl PathAttrs {
    /// A route this node originates (its own pod blocks).
    pub fn local(next_hop: Ipv4Addr) -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: vec![],
            next_hop: IpAddr::V4(next_hop),
            med: None,
            local_pref: Some(100),
            communities: vec![],
            originator_id: None,
            cluster_list: vec![],
            transitive: vec![],
        }
    }

    fn as_path_len(&self) -> usize {
        self.as_path.iter().map(|s| if s.kind == AsSegment::SET { 1 } else { s.asns.len() }).sum()
    }

    fn first_as(&self) -> Option<u32> {
        self.as_path.first().and_then(|s| s.asns.first().copied())
    }

    fn count_as(&self, asn: u32) -> usize {
        self.as_path.iter().flat_map(|s| &s.asns).filter(|a| **a == asn).count()
    }
}

/// A Loc-RIB entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    pub from: From,
    pub attrs: Arc<PathAttrs>,
}

/// What one call changed: Loc-RIB entries for the FIB, UPDATEs for the peers.
#[derive(Debug, Default)]
pub struct Changes {
    /// (prefix, new best or None if gone).
    pub loc: Vec<(IpNet, Option<Best>)>,
    /// Packed: routes sharing attributes in one message, each at most 4096 bytes.
    pub out: Vec<(PeerId, Update)>,
    /// Export decisions of this call, packed into `out` when it returns.
    pending: Vec<(PeerId, out::Pending)>,
}

mod adj_in;
mod out;
mod prefix_map;
use adj_in::AdjIn;
pub use prefix_map::PrefixMap;

/// Prefixes a peer coming up is sent per call ([`Rib::peer_up`], [`Rib::sync_next`]): the
/// table reaches it in slices the speaker asks for as the socket drains, instead of as a
/// million UPDATEs built at once.
pub const SYNC_BATCH: usize = 4096;

/// A peer's initial table dump in progress: the Loc-RIB's prefixes when it came up, in order,
/// and how far the dump got. A prefix at or past `pos` is sent when the dump reaches it, with
/// whatever is best then; a prefix that was not in the table yet is sent as it changes.
#[derive(Debug)]
struct Sync {
    prefixes: Vec<IpNet>,
    pos: usize,
}

#[derive(Debug)]
pub struct Rib {
    local_as: u32,
    router_id: Ipv4Addr,
    /// Set when this node is a route reflector.
    cluster_id: Option<Ipv4Addr>,
    peers: HashMap<PeerId, PeerInfo>,
    /// Peers with an Established session (only they get UPDATEs).
    /// A list: it is walked for every changed prefix, and a node has few peers.
    up: Vec<PeerId>,
    /// The Loc-RIB is not stored: a prefix's best path is chosen from these and `local`
    /// when asked for ([`Rib::best`]), which for a full table saves a second map of a
    /// million entries (50 MiB) and costs no more probes: where a stored Loc-RIB was read
    /// and written once per change, the best before and after are chosen once each.
    adj_in: HashMap<PeerId, AdjIn>,
    local: BTreeMap<IpNet, Arc<PathAttrs>>,
    adj_out: HashMap<PeerId, PrefixMap<Arc<PathAttrs>>>,
    /// Per peer, the prefixes it sent that import refused, and why.
    rejected: HashMap<PeerId, PrefixMap<Rejected>>,
    policy: ClusterPolicy,
    sync: HashMap<PeerId, Sync>,
    /// The address families each Established session negotiated: only those are exported.
    families: HashMap<PeerId, Vec<Afi>>,
    /// Some peer's filters have an export Accept rule (which may pass on an external route).
    export_accept_rules: bool,
    /// After our own restart: nothing is sent until [`Rib::end_deferral`] (RFC 4724 §4.1),
    /// so peers get one consistent table instead of what a half-learned RIB would choose.
    /// The peers that came up meanwhile (their families are in `families`).
    deferred: Option<Vec<PeerId>>,
    /// Exported attributes, one allocation per distinct set: Adj-RIBs-Out of a full table
    /// share a few thousand, and packing groups routes by pointer.
    interned: std::collections::HashSet<Arc<PathAttrs>>,
    interned_at_gc: usize,
}

impl Rib {
    pub fn new(local_as: u32, router_id: Ipv4Addr, cluster_id: Option<Ipv4Addr>) -> Rib {
        Rib {
            local_as,
            router_id,
            cluster_id,
            peers: HashMap::new(),
            up: Vec::new(),
            adj_in: HashMap::new(),
            local: BTreeMap::new(),
            adj_out: HashMap::new(),
            rejected: HashMap::new(),
            policy: ClusterPolicy::default(),
            sync: HashMap::new(),
            families: HashMap::new(),
            export_accept_rules: false,
            deferred: None,
            interned: Default::default(),
            interned_at_gc: 0,
        }
    }

    /// Turns the call's export decisions into packed UPDATEs.
    fn finish(&self, mut ch: Changes) -> Changes {
        let pending = std::mem::take(&mut ch.pending);
        ch.out.extend(out::pack(pending, |p| self.ibgp(p)));
        ch
    }

    fn intern(&mut self, a: PathAttrs) -> Arc<PathAttrs> {
        if let Some(x) = self.interned.get(&a) {
            return x.clone();
        }
        // Forget sets no route uses any more, whenever the set has doubled since last time.
        if self.interned.len() >= 2 * self.interned_at_gc.max(1024) {
            self.interned.retain(|a| Arc::strong_count(a) > 1);
            self.interned_at_gc = self.interned.len();
        }
        let a = Arc::new(a);
        self.interned.insert(a.clone());
        a
    }

    /// Holds every export back: we have just restarted (see `deferred`).
    pub fn defer(&mut self) {
        self.deferred.get_or_insert_with(Vec::new);
    }

    pub fn deferring(&self) -> bool {
        self.deferred.is_some()
    }

    /// The deferral is over: every peer that came up meanwhile gets the table now.
    pub fn end_deferral(&mut self) -> Changes {
        let Some(waiting) = self.deferred.take() else { return Changes::default() };
        let mut ch = Changes::default();
        let mut ids: Vec<PeerId> = waiting.into_iter().filter(|id| self.up.contains(id)).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let families = self.families.get(&id).cloned().unwrap_or_default();
            let more = self.peer_up(id, &families);
            ch.out.extend(more.out);
        }
        ch
    }

    /// Whether the peer's initial table dump is still going ([`Rib::sync_next`]).
    pub fn syncing(&self, id: PeerId) -> bool {
        self.sync.contains_key(&id)
    }

    /// The next slice of a peer's initial table dump, and End-of-RIB after the last.
    pub fn sync_next(&mut self, id: PeerId) -> Changes {
        let mut ch = Changes::default();
        self.sync_step(id, SYNC_BATCH, &mut ch);
        self.finish(ch)
    }

    fn sync_step(&mut self, id: PeerId, n: usize, ch: &mut Changes) {
        for _ in 0..n {
            let Some(s) = self.sync.get_mut(&id) else { return };
            let Some(&p) = s.prefixes.get(s.pos) else { break };
            // Past the cursor first: `export_best` holds back what the dump has not reached.
            s.pos += 1;
            self.export(id, p, ch);
        }
        let done = self.sync.get(&id).is_some_and(|s| s.pos >= s.prefixes.len());
        if done && self.sync.remove(&id).is_some() {
            let families = self.families.get(&id).into_iter().flatten();
            ch.pending.extend(families.map(|f| (id, out::Pending::EndOfRib(*f))));
        }
    }

    /// The pools, protected routes and advertised communities the default rules use. A new
    /// policy also judges what is already there: paths it now refuses leave the table, and
    /// every peer's exports are judged again (a route of a new pool goes out, one of a pool
    /// that went is withdrawn). Paths refused before are not kept, so they pass only when
    /// their peers send them again: [`Rib::refused_by_policy`] says which peers to ask.
    pub fn set_policy(&mut self, policy: ClusterPolicy) -> Changes {
        if policy == self.policy {
            return Changes::default();
        }
        self.policy = policy;
        let mut ch = Changes::default();
        let mut refused = Vec::new();
        for (&id, m) in &self.adj_in {
            for (prefix, attrs, _) in m.iter() {
                if let Err(why) = self.import_prefix(id, &prefix, attrs.next_hop) {
                    refused.push((id, prefix, why));
                }
            }
        }
        for (id, prefix, why) in refused {
            self.rejected.entry(id).or_default().insert(prefix, why);
            self.remove_path(id, prefix, &mut ch);
        }
        for id in self.up.clone() {
            let mut prefixes = self.loc_prefixes();
            prefixes.extend(self.adj_out.get(&id).into_iter().flat_map(|o| o.keys()));
            prefixes.sort_unstable();
            prefixes.dedup();
            for p in prefixes {
                self.export(id, p, &mut ch);
            }
        }
        self.finish(ch)
    }

    /// Whether the peer sent routes that the cluster policy (not its filters, not loop
    /// checks) refused: a new policy may take them.
    pub fn refused_by_policy(&self, id: PeerId) -> bool {
        self.rejected
            .get(&id)
            .is_some_and(|r| r.iter().any(|(_, why)| matches!(why, Rejected::InsidePool | Rejected::OverridesLocal)))
    }

    /// The BGP identifier the peer's OPEN carried (before that, its address stands in). It
    /// breaks ties, so the paths the peer left stale are chosen again with it.
    pub fn set_router_id(&mut self, id: PeerId, router_id: Ipv4Addr) -> Changes {
        let mut ch = Changes::default();
        if self.peers.get(&id).is_none_or(|p| p.router_id == router_id) {
            return ch;
        }
        let prefixes: Vec<IpNet> = self.adj_in.get(&id).map(|m| m.keys().collect()).unwrap_or_default();
        let before: Vec<Option<Best>> = prefixes.iter().map(|p| self.best(p)).collect();
        if let Some(p) = self.peers.get_mut(&id) {
            p.router_id = router_id;
        }
        for (p, old) in prefixes.into_iter().zip(before) {
            self.recompute(p, old, &mut ch);
        }
        self.finish(ch)
    }

    pub fn peer(&self, id: PeerId) -> Option<&PeerInfo> {
        self.peers.get(&id)
    }

    /// How many of the peer's prefixes import refused.
    pub fn rejected(&self, id: PeerId) -> usize {
        self.rejected.get(&id).map_or(0, |m| m.len())
    }

    /// The peer's refused prefixes and why, in prefix order.
    pub fn rejected_routes(&self, id: PeerId) -> Vec<(IpNet, Rejected)> {
        let mut v: Vec<(IpNet, Rejected)> =
            self.rejected.get(&id).map(|m| m.iter().map(|(k, r)| (k, *r)).collect()).unwrap_or_default();
        v.sort_unstable_by_key(|(p, _)| *p);
        v
    }

    /// How many of the peer's prefixes were refused for each reason, without listing them.
    pub fn rejected_counts(&self, id: PeerId) -> Vec<(Rejected, usize)> {
        let mut counts: HashMap<Rejected, usize> = HashMap::new();
        for (_, r) in self.rejected.get(&id).into_iter().flat_map(|m| m.iter()) {
            *counts.entry(*r).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// The peer's limit and what it sent, when it sent more than its `max_prefixes`.
    pub fn over_limit(&self, id: PeerId) -> Option<(u32, usize)> {
        let max = self.peers.get(&id)?.max_prefixes?;
        let n = self.received(id) + self.rejected(id);
        (n > max as usize).then_some((max, n))
    }

    /// Forgets a peer that was removed (after [`Rib::peer_down`]).
    pub fn remove_peer(&mut self, id: PeerId) {
        self.peers.remove(&id);
        self.adj_in.remove(&id);
        self.rejected.remove(&id);
    }

    pub fn add_peer(&mut self, id: PeerId, info: PeerInfo) {
        self.peers.insert(id, info);
        self.export_accept_rules =
            self.peers.values().any(|p| p.filters.iter().any(|f| f.export.iter().any(|r| r.action == Action::Accept)));
    }

    /// The best path for `prefix`: the Loc-RIB's entry.
    pub fn best(&self, prefix: &IpNet) -> Option<Best> {
        self.select(prefix).map(|(from, attrs)| Best { from, attrs: attrs.clone() })
    }

    /// The Loc-RIB, each prefix once, in no particular order.
    pub fn loc_rib(&self) -> impl Iterator<Item = (IpNet, From, &Arc<PathAttrs>)> + '_ {
        fn all(_: &IpNet) -> bool {
            true
        }
        self.loc_rib_where(&all)
    }

    /// The Loc-RIB entries whose prefix `keep` takes: the others cost no lookup.
    pub fn loc_rib_where<'a, F: Fn(&IpNet) -> bool>(
        &'a self,
        keep: &'a F,
    ) -> impl Iterator<Item = (IpNet, From, &'a Arc<PathAttrs>)> + 'a {
        let local = self.local.iter().filter(move |(p, _)| keep(p)).map(|(p, a)| (*p, From::Local, a));
        // A learned prefix is listed by the peer whose path won, and a prefix we originate
        // by `local` only.
        let learned = self.adj_in.iter().flat_map(move |(&id, m)| {
            m.keys().filter(move |p| keep(p)).filter_map(move |p| match self.select(&p) {
                Some((From::Peer(w), a)) if w == id => Some((p, From::Peer(id), a)),
                _ => None,
            })
        });
        local.chain(learned)
    }

    /// The IPv6 Loc-RIB entries whose prefix `keep` takes: only IPv6 prefixes are read,
    /// whatever the size of the IPv4 table beside them, and the others cost no lookup.
    pub fn loc_rib6<'a, F: Fn(&IpNet) -> bool>(
        &'a self,
        keep: &'a F,
    ) -> impl Iterator<Item = (IpNet, From, &'a Arc<PathAttrs>)> + 'a {
        let local = self
            .local
            .iter()
            .filter(move |(p, _)| matches!(p, IpNet::V6(_)) && keep(p))
            .map(|(p, a)| (*p, From::Local, a));
        let learned = self.adj_in.iter().flat_map(move |(&id, m)| {
            m.keys6().filter(move |p| keep(p)).filter_map(move |p| match self.select(&p) {
                Some((From::Peer(w), a)) if w == id => Some((p, From::Peer(id), a)),
                _ => None,
            })
        });
        local.chain(learned)
    }

    /// The Loc-RIB routes learned from cluster nodes (not external peers), each prefix once.
    /// Only those peers' paths are read: a full table from an outside peer costs nothing here.
    pub fn cluster_routes(&self) -> impl Iterator<Item = (IpNet, &Arc<PathAttrs>)> + '_ {
        let cluster = self.adj_in.iter().filter(|(id, _)| self.peers.get(id).is_some_and(|p| !p.external));
        cluster.flat_map(move |(&id, m)| {
            m.keys().filter_map(move |p| match self.select(&p) {
                Some((From::Peer(w), a)) if w == id => Some((p, a)),
                _ => None,
            })
        })
    }

    /// Every prefix with a path, sorted.
    fn loc_prefixes(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.local.keys().copied().collect();
        self.adj_in.values().for_each(|m| v.extend(m.keys()));
        v.sort_unstable();
        v.dedup();
        v
    }

    pub fn received(&self, id: PeerId) -> usize {
        self.adj_in.get(&id).map_or(0, |m| m.len())
    }

    pub fn advertised(&self, id: PeerId) -> usize {
        self.adj_out.get(&id).map_or(0, |m| m.len())
    }

    fn ibgp(&self, id: PeerId) -> bool {
        self.peers.get(&id).is_some_and(|p| p.asn == self.local_as)
    }

    /// Originates (or re-originates) a local route.
    pub fn originate(&mut self, prefix: IpNet, attrs: PathAttrs) -> Changes {
        let old = self.best(&prefix);
        self.local.insert(prefix, Arc::new(attrs));
        let mut ch = Changes::default();
        self.recompute(prefix, old, &mut ch);
        self.finish(ch)
    }

    /// Stops originating a local route; peers that had it get a withdrawal (or another
    /// path, when one exists).
    pub fn withdraw_local(&mut self, prefix: IpNet) -> Changes {
        let old = self.best(&prefix);
        if self.local.remove(&prefix).is_none() {
            return Changes::default();
        }
        let mut ch = Changes::default();
        self.recompute(prefix, old, &mut ch);
        self.finish(ch)
    }

    /// A session reached Established: the peer gets our whole table, then End-of-RIB. The
    /// first [`SYNC_BATCH`] prefixes come now; while [`Rib::syncing`], the speaker asks for
    /// the rest with [`Rib::sync_next`] as the peer reads.
    pub fn peer_up(&mut self, id: PeerId, families: &[Afi]) -> Changes {
        if !self.up.contains(&id) {
            self.up.push(id);
        }
        self.adj_out.insert(id, PrefixMap::default());
        self.families.insert(id, families.to_vec());
        if let Some(d) = self.deferred.as_mut() {
            d.push(id);
            return Changes::default();
        }
        // In prefix order, as the peer would get them from a sorted table.
        let prefixes = self.loc_prefixes();
        self.sync.insert(id, Sync { prefixes, pos: 0 });
        let mut ch = Changes::default();
        self.sync_step(id, SYNC_BATCH, &mut ch);
        self.finish(ch)
    }

    /// A session went down. With `keep_stale` (graceful restart, RFC 4724 §4.2) its routes
    /// stay, marked stale, until `end_of_rib` or `purge_stale`; otherwise they go now.
    pub fn peer_down(&mut self, id: PeerId, keep_stale: bool) -> Changes {
        self.up.retain(|p| *p != id);
        self.adj_out.remove(&id);
        self.families.remove(&id);
        // What it sent again after coming back is judged again.
        self.rejected.remove(&id);
        self.sync.remove(&id);
        let mut ch = Changes::default();
        if keep_stale {
            if let Some(m) = self.adj_in.get_mut(&id) {
                m.mark_stale();
            }
            return ch;
        }
        let gone: Vec<IpNet> = self.adj_in.get(&id).map(|m| m.keys().collect()).unwrap_or_default();
        for p in gone {
            self.remove_path(id, p, &mut ch);
        }
        self.adj_in.remove(&id);
        self.finish(ch)
    }

    /// Drops whatever a restarting peer left stale (its End-of-RIB came, or time ran out).
    pub fn purge_stale(&mut self, id: PeerId) -> Changes {
        self.purge_stale_family(id, None)
    }

    /// [`Rib::purge_stale`] for one family (its End-of-RIB, or no forwarding state kept).
    pub fn purge_stale_family(&mut self, id: PeerId, afi: Option<Afi>) -> Changes {
        let mut ch = Changes::default();
        let Some(m) = self.adj_in.get(&id) else { return ch };
        let stale = m.stale_prefixes(|p| match afi {
            None => true,
            Some(Afi::Ipv4) => matches!(p, IpNet::V4(_)),
            Some(Afi::Ipv6) => matches!(p, IpNet::V6(_)),
        });
        for p in stale {
            self.remove_path(id, p, &mut ch);
        }
        self.finish(ch)
    }

    pub fn has_stale(&self, id: PeerId) -> bool {
        self.adj_in.get(&id).is_some_and(|m| m.stale_len() > 0)
    }

    /// Removes the peer's path for `prefix`, if it has one, and chooses again.
    fn remove_path(&mut self, id: PeerId, prefix: IpNet, ch: &mut Changes) {
        if !self.adj_in.get(&id).is_some_and(|m| m.contains(&prefix)) {
            return;
        }
        let old = self.best(&prefix);
        if let Some(m) = self.adj_in.get_mut(&id) {
            m.remove(&prefix);
        }
        self.recompute(prefix, old, ch);
    }

    /// Applies an UPDATE from a peer.
    pub fn update(&mut self, id: PeerId, u: &Update) -> Changes {
        let mut ch = Changes::default();
        if let Some(afi) = u.is_end_of_rib() {
            return self.purge_stale_family(id, Some(afi));
        }
        for p in u.withdrawn_all() {
            if let Some(r) = self.rejected.get_mut(&id) {
                r.remove(&p);
            }
            self.remove_path(id, p, &mut ch);
        }
        if u.treat_as_withdraw {
            return self.finish(ch);
        }
        // The attributes are the UPDATE's, shared by all its prefixes with the same next hop.
        let mut imported: Option<(IpAddr, Result<Arc<PathAttrs>, Rejected>)> = None;
        for (prefix, nh) in u.announced() {
            let Some(nh) = nh else { continue };
            let attrs = match &imported {
                Some((at, a)) if *at == nh => a.clone(),
                _ => {
                    let a = self.import(id, u, nh);
                    imported = Some((nh, a.clone()));
                    a
                }
            };
            match attrs.and_then(|a| self.import_prefix(id, &prefix, nh).map(|()| a)) {
                Ok(a) => {
                    if let Some(r) = self.rejected.get_mut(&id) {
                        r.remove(&prefix);
                    }
                    let old = self.best(&prefix);
                    self.adj_in.entry(id).or_default().insert(prefix, a);
                    self.recompute(prefix, old, &mut ch);
                }
                // Refused: it also replaces whatever the peer had sent before.
                Err(why) => {
                    self.rejected.entry(id).or_default().insert(prefix, why);
                    self.remove_path(id, prefix, &mut ch);
                }
            }
        }
        self.finish(ch)
    }

    /// The per-prefix import rules: the peer's filters, then (for an external peer) the
    /// pools and the node's own routes, which no filter can open up.
    fn import_prefix(&self, id: PeerId, prefix: &IpNet, next_hop: IpAddr) -> Result<(), Rejected> {
        let Some(peer) = self.peers.get(&id) else { return Ok(()) };
        if let Some((Action::Reject, filter, rule)) = policy::first_match(&peer.filters, true, prefix, true) {
            return Err(Rejected::Filter { filter, rule });
        }
        if peer.external {
            if self.policy.in_pool(prefix) && !self.policy.nodes.contains(&next_hop) {
                return Err(Rejected::InsidePool);
            }
            if self.policy.overrides(prefix) {
                return Err(Rejected::OverridesLocal);
            }
        }
        Ok(())
    }

    /// Import policy for an UPDATE's attributes: loop detection (RFC 4271 §9.1.2, RFC 4456
    /// §8) and defaults.
    fn import(&self, id: PeerId, u: &Update, next_hop: IpAddr) -> Result<Arc<PathAttrs>, Rejected> {
        let ibgp = self.ibgp(id);
        let mut a = PathAttrs {
            origin: Origin::Incomplete,
            as_path: vec![],
            next_hop,
            med: None,
            local_pref: None,
            communities: vec![],
            originator_id: None,
            cluster_list: vec![],
            transitive: vec![],
        };
        for attr in &u.attrs {
            match &attr.value {
                AttrValue::Origin(o) => a.origin = *o,
                AttrValue::AsPath(p) => a.as_path = p.clone(),
                AttrValue::Med(m) => a.med = Some(*m),
                AttrValue::LocalPref(l) if ibgp => a.local_pref = Some(*l),
                AttrValue::Communities(c) => a.communities = c.clone(),
                AttrValue::OriginatorId(o) if ibgp => a.originator_id = Some(*o),
                AttrValue::ClusterList(c) if ibgp => a.cluster_list = c.clone(),
                AttrValue::Unknown { .. } | AttrValue::Aggregator { .. } | AttrValue::AtomicAggregate
                    if attr.flags & flag::TRANSITIVE != 0 =>
                {
                    a.transitive.push(attr.clone())
                }
                _ => {}
            }
        }
        let allowed = self.peers.get(&id).map_or(0, |p| p.allow_local_as);
        if !ibgp && a.count_as(self.local_as) > usize::from(allowed) {
            return Err(Rejected::AsLoop);
        }
        if a.originator_id == Some(self.router_id) {
            return Err(Rejected::OriginatorIsUs);
        }
        if self.cluster_id.is_some_and(|c| a.cluster_list.contains(&c)) {
            return Err(Rejected::ClusterLoop);
        }
        if self.peers.values().any(|p| p.is_local_addr(next_hop)) {
            return Err(Rejected::NextHopIsUs);
        }
        if a.local_pref.is_none() {
            a.local_pref = Some(100);
        }
        Ok(Arc::new(a))
    }

    /// Whether every route the peers `going` taught is the node's own or was taught by
    /// another peer too: they can go without leaving a prefix without a path.
    pub fn taught_elsewhere(&self, going: &[PeerId]) -> bool {
        let others: Vec<&AdjIn> = self.adj_in.iter().filter(|(id, _)| !going.contains(id)).map(|(_, m)| m).collect();
        going
            .iter()
            .filter_map(|id| self.adj_in.get(id))
            .all(|m| m.keys().all(|p| self.local.contains_key(&p) || others.iter().any(|o| o.contains(&p))))
    }

    /// The paths for one prefix, in peer order, each with the step at which it lost.
    pub fn candidates(&self, prefix: &IpNet) -> Vec<Candidate> {
        let mut paths: Vec<(PeerId, (&Arc<PathAttrs>, bool))> =
            self.adj_in.iter().filter_map(|(id, m)| Some((*id, m.get(prefix)?))).collect();
        paths.sort_unstable_by_key(|(id, _)| *id);
        let mut out = Vec::new();
        let local = self.local.get(prefix);
        if let Some(a) = local {
            out.push(Candidate { from: From::Local, attrs: a.clone(), stale: false, lost_at: None });
        }
        let mut lost = vec![None; paths.len()];
        if local.is_some() {
            lost.iter_mut().for_each(|l| *l = Some(Step::Local));
        } else {
            let cands: Vec<(PeerId, &PathAttrs)> = paths.iter().map(|(id, (a, _))| (*id, &***a)).collect();
            self.decide(&cands, &mut lost);
        }
        for ((id, (attrs, stale)), lost_at) in paths.into_iter().zip(lost) {
            out.push(Candidate { from: From::Peer(id), attrs: attrs.clone(), stale, lost_at });
        }
        out
    }

    /// The decision process among the candidates for one prefix.
    fn select(&self, prefix: &IpNet) -> Option<(From, &Arc<PathAttrs>)> {
        if let Some(a) = self.local.get(prefix) {
            // Our own routes win over anything learned.
            return Some((From::Local, a));
        }
        // The common case, one path (a full table from one peer), without allocating.
        let mut found = self.adj_in.iter().filter_map(|(id, m)| m.get(prefix).map(|(a, _)| (*id, a)));
        let first = found.next()?;
        let Some(second) = found.next() else {
            return Some((From::Peer(first.0), first.1));
        };
        // Peer order, so that nothing depends on the order a hash map walks in.
        let mut cands: Vec<(PeerId, &Arc<PathAttrs>)> = [first, second].into_iter().chain(found).collect();
        cands.sort_unstable_by_key(|(id, _)| *id);
        let plain: Vec<(PeerId, &PathAttrs)> = cands.iter().map(|(id, a)| (*id, &***a)).collect();
        let mut lost = vec![None; plain.len()];
        let w = self.decide(&plain, &mut lost);
        cands.get(w).map(|(id, a)| (From::Peer(*id), *a))
    }

    /// RFC 4271 §9.1.2.2 with RFC 4456 §9, step by step: each step keeps only the paths that
    /// are best by its criterion and records in `lost` where the others dropped out. As a
    /// filter over the whole set, not a comparison of pairs, the result does not depend on
    /// the candidates' order (pairs are not transitive once MED only compares within an AS).
    /// Returns the index of the winner.
    fn decide(&self, c: &[(PeerId, &PathAttrs)], lost: &mut [Option<Step>]) -> usize {
        fn keep_min<K: Ord>(lost: &mut [Option<Step>], step: Step, key: impl Fn(usize) -> K) {
            let best = (0..lost.len()).filter(|&i| lost[i].is_none()).map(&key).min();
            if let Some(best) = best {
                for (i, l) in lost.iter_mut().enumerate() {
                    if l.is_none() && key(i) != best {
                        *l = Some(step);
                    }
                }
            }
        }
        let attrs = |i: usize| c[i].1;
        let peer = |i: usize| self.peers.get(&c[i].0);
        keep_min(lost, Step::LocalPref, |i| std::cmp::Reverse(attrs(i).local_pref.unwrap_or(100)));
        keep_min(lost, Step::AsPathLength, |i| attrs(i).as_path_len());
        keep_min(lost, Step::Origin, |i| attrs(i).origin);
        // MED: a path loses to any remaining path from the same neighbouring AS with a lower
        // MED (a missing MED counts as 0); paths from different ASes are not compared.
        let neighbour = |i: usize| attrs(i).first_as().unwrap_or(self.local_as);
        let med = |i: usize| attrs(i).med.unwrap_or(0);
        let beaten: Vec<usize> = (0..c.len())
            .filter(|&i| lost[i].is_none())
            .filter(|&i| (0..c.len()).any(|j| lost[j].is_none() && neighbour(j) == neighbour(i) && med(j) < med(i)))
            .collect();
        beaten.into_iter().for_each(|i| lost[i] = Some(Step::Med));
        keep_min(lost, Step::EbgpOverIbgp, |i| self.ibgp(c[i].0));
        keep_min(lost, Step::RouterId, |i| {
            u32::from(attrs(i).originator_id.unwrap_or_else(|| peer(i).map_or(Ipv4Addr::UNSPECIFIED, |p| p.router_id)))
        });
        keep_min(lost, Step::ClusterListLength, |i| attrs(i).cluster_list.len());
        keep_min(lost, Step::PeerAddress, |i| peer(i).map(|p| p.addr));
        // Two sessions from one address cannot exist; should two paths still be left, the
        // lower peer id wins.
        let winner = lost.iter().position(|l| l.is_none()).unwrap_or(0);
        for (i, l) in lost.iter_mut().enumerate() {
            if i != winner && l.is_none() {
                *l = Some(Step::PeerAddress);
            }
        }
        winner
    }

    /// Chooses the best path for `prefix` again, after a change to its paths; `old` is the
    /// best before the change.
    fn recompute(&mut self, prefix: IpNet, old: Option<Best>, ch: &mut Changes) {
        let new = self.best(&prefix);
        if new == old {
            return;
        }
        // A route from an external peer goes nowhere unless some export filter may accept it:
        // then only peers that had the prefix need a look (to withdraw it). With a full table
        // from one outside peer and several more peers, this skips every per-peer export.
        let from_outside = |b: &Best| match b.from {
            From::Peer(id) => self.peers.get(&id).is_some_and(|p| p.external),
            From::Local => false,
        };
        let nowhere = new.as_ref().is_some_and(from_outside) && !self.export_accept_rules;
        for i in 0..self.up.len() {
            let Some(&p) = self.up.get(i) else { break };
            if nowhere && !self.adj_out.get(&p).is_some_and(|o| o.contains_key(&prefix)) {
                continue;
            }
            self.export_best(p, prefix, new.as_ref(), ch);
        }
        ch.loc.push((prefix, new));
    }

    /// What peer `to` should hear about `prefix`: the export policy (RFC 1997 communities,
    /// the peer's filters, then Calico's default of cluster routes only), then the iBGP and
    /// reflection rules.
    fn export_attrs(&self, to: PeerId, prefix: &IpNet, best: &Best) -> Option<PathAttrs> {
        let peer = self.peers.get(&to)?;
        let to_ibgp = peer.asn == self.local_as;
        // Only in a family the session negotiated (RFC 4760), and IPv6 only with an IPv6
        // next hop of our own to put in it.
        let afi = match prefix {
            IpNet::V4(_) => Afi::Ipv4,
            IpNet::V6(_) => Afi::Ipv6,
        };
        if !self.families.get(&to).is_some_and(|f| f.contains(&afi)) {
            return None;
        }
        let self_hop = match afi {
            Afi::Ipv4 => IpAddr::V4(peer.local_addr),
            Afi::Ipv6 => IpAddr::V6(peer.local_addr6?),
        };
        // Never back to where it came from: checked before copying the attributes, which a
        // full table from one peer would otherwise do a million times for nothing.
        if best.from == From::Peer(to) {
            return None;
        }
        // Another node of the cluster in another AS would refuse a path through its own AS
        // as a loop: not sent, so that its refused-routes count stays a sign of trouble.
        if !to_ibgp && !peer.external && best.attrs.count_as(peer.asn) > 0 {
            return None;
        }
        let cs = &best.attrs.communities;
        if cs.contains(&community::NO_ADVERTISE) {
            return None;
        }
        // Without confederations, NO_EXPORT_SUBCONFED means the same as NO_EXPORT.
        if !to_ibgp && (cs.contains(&community::NO_EXPORT) || cs.contains(&community::NO_EXPORT_SUBCONFED)) {
            return None;
        }
        match policy::first_match(&peer.filters, false, prefix, best.from != From::Local) {
            Some((Action::Reject, ..)) => return None,
            Some((Action::Accept, ..)) => {}
            None => {
                let cluster_route = match best.from {
                    From::Local => true,
                    // Without pools in the config, whatever the nodes send is the cluster's.
                    From::Peer(from) => {
                        self.peers.get(&from).is_some_and(|p| !p.external)
                            && (self.policy.pools.is_empty() || self.policy.in_pool(prefix))
                    }
                };
                if !cluster_route {
                    return None;
                }
                // Calico's disableBGPExport. Calico's nodes route such a pool without BGP
                // (Felix reads the IPAM blocks); ours learn each other's blocks over BGP, so
                // the pool stays on the cluster's own sessions and only leaves the cluster.
                if peer.external && self.policy.not_exported(prefix) {
                    return None;
                }
            }
        }
        let mut a = (*best.attrs).clone();
        match best.from {
            From::Peer(from) if to_ibgp && self.ibgp(from) => {
                // RFC 4456 §6: only a reflector passes iBGP routes to iBGP peers; from a
                // client to everyone, from a non-client to clients only.
                let cluster = self.cluster_id?;
                let from_client = self.peers.get(&from).is_some_and(|p| p.rr_client);
                if !from_client && !peer.rr_client {
                    return None;
                }
                if a.originator_id.is_none() {
                    a.originator_id = self.peers.get(&from).map(|p| p.router_id);
                }
                if a.originator_id == Some(peer.router_id) {
                    return None;
                }
                a.cluster_list.insert(0, cluster);
            }
            _ => {}
        }
        if to_ibgp {
            if best.from == From::Local {
                a.next_hop = self_hop;
            }
            if let From::Peer(from) = best.from {
                if !self.ibgp(from) {
                    // eBGP-learned routes enter iBGP with us as next hop.
                    a.next_hop = self_hop;
                }
            }
        } else {
            let mut path = a.as_path.clone();
            match path.first_mut() {
                Some(s) if s.kind == AsSegment::SEQUENCE && s.asns.len() < 255 => s.asns.insert(0, self.local_as),
                _ => path.insert(0, AsSegment::sequence(vec![self.local_as])),
            }
            a.as_path = path;
            // Our own routes always go with us as next hop; another node's block, with
            // keepOriginalNextHop, with that node's address, so the peer sends straight there.
            if best.from == From::Local || !peer.keep_next_hop || a.next_hop.is_ipv4() != self_hop.is_ipv4() {
                a.next_hop = self_hop;
            }
            a.local_pref = None;
            a.originator_id = None;
            a.cluster_list.clear();
            if best.from != From::Local {
                a.med = None;
            }
        }
        if a.next_hop.is_ipv4() != prefix.addr().is_ipv4() {
            // A reflected route whose next hop is of the other family: not ours to fix.
            return None;
        }
        for c in self.policy.communities_for(prefix) {
            if !a.communities.contains(&c) {
                a.communities.push(c);
            }
        }
        Some(a)
    }

    fn export(&mut self, to: PeerId, prefix: IpNet, ch: &mut Changes) {
        let best = self.best(&prefix);
        self.export_best(to, prefix, best.as_ref(), ch);
    }

    /// [`Rib::export`] with the Loc-RIB's entry for `prefix` at hand.
    fn export_best(&mut self, to: PeerId, prefix: IpNet, best: Option<&Best>, ch: &mut Changes) {
        if !self.up.contains(&to) || self.deferred.is_some() {
            return;
        }
        if let Some(s) = self.sync.get(&to) {
            if s.prefixes.binary_search(&prefix).is_ok_and(|i| i >= s.pos) {
                return; // the dump will send it, as it is then
            }
        }
        let ibgp = self.ibgp(to);
        // A route whose attributes cannot fit one UPDATE is not exported: the peer would have
        // to reset the session, and again after every reconnect.
        let want = best.and_then(|b| self.export_attrs(to, &prefix, b)).filter(|a| out::fits(a, ibgp));
        let had = self.adj_out.get(&to).and_then(|o| o.get(&prefix));
        if want.as_ref() == had.map(|a| &**a) {
            return;
        }
        let want = want.map(|a| self.intern(a));
        let out = self.adj_out.entry(to).or_default();
        match &want {
            Some(a) => out.insert(prefix, a.clone()),
            None => out.remove(&prefix),
        };
        ch.pending.push((to, out::Pending::Route(prefix, want)));
    }
}

impl PeerInfo {
    fn is_local_addr(&self, a: IpAddr) -> bool {
        a == IpAddr::V4(self.local_addr) || self.local_addr6.is_some_and(|l| a == IpAddr::V6(l))
    }
}

#[cfg(test)]
mod tests;
