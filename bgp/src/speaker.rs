//! The speaker core: one RIB and its peers (state machine, graceful-restart helper,
//! counters), driven by events and `now`, answering with [`Action`]s for an I/O shell to
//! carry out. Everything a BGP speaker decides is here, timers included (collisions, a peer's
//! restart, stalled connects, silent GTSM peers, max-prefix, the deferral after our own
//! restart); the shell only moves bytes. Several cores wired together on virtual time are a
//! cluster without sockets (see the tests).

use crate::fsm::{Down, Fsm, FsmConfig, Input, Negotiated, Output, State};
use crate::policy::{ClusterPolicy, Filter};
use crate::restart::Helper;
use crate::rib::{Candidate, Changes, PathAttrs, PeerId, PeerInfo, Rib};
use crate::wire::{self, Afi, Ctx, Message, Notification};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a peer that sent more than its `max_prefixes` stays shut out. BIRD's `receive
/// limit ... action restart` and GoBGP wait a similar time; RFC 4486 leaves it to the operator.
pub const MAX_PREFIXES_HOLD_DOWN: Duration = Duration::from_secs(60);

/// The longest a replaced peer's routes are kept while its new session comes up.
pub const REPLACE_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// An IPv6 address: the session runs over IPv6 and carries IPv6 routes only, as Calico's
    /// IPv6 BGPPeers do (it needs `local_addr6`).
    pub address: IpAddr,
    pub asn: u32,
    /// Wait for the peer to connect (Calico: the higher address waits).
    pub passive: bool,
    /// We reflect routes for it (we are a route reflector, it is our client).
    pub rr_client: bool,
    /// A router outside the cluster (Calico's BGPPeer).
    pub external: bool,
    /// Names of its filters, in order.
    pub filters: Vec<String>,
    pub max_prefixes: Option<u32>,
    /// GTSM: the peer is this many hops away (the shell sets the socket options).
    pub ttl_security: Option<u8>,
    /// TCP MD5 is on (for the hint when connects go unanswered).
    pub md5: bool,
    /// The graceful-restart time our OPENs announce to this peer, instead of the node's
    /// (Calico's BGPPeer maxRestartTime, BGPConfiguration nodeMeshMaxRestartTime).
    pub restart_time: Option<u16>,
    /// Seconds between our keepalives (Calico's keepaliveTime); see [`FsmConfig::keepalive`].
    pub keepalive: Option<u16>,
    /// How many times our own AS may appear in the AS_PATH of a route it sends (Calico's
    /// numAllowedLocalASNumbers, BIRD's `allow local as`); 0: the loop check of RFC 4271.
    pub allow_local_as: u8,
    /// eBGP: pass routes on with the next hop they came with (Calico's keepOriginalNextHop).
    pub keep_next_hop: bool,
}

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub local_addr: Ipv4Addr,
    /// Dual stack: our IPv6 address. Sessions (over IPv4) then also negotiate IPv6 unicast
    /// (RFC 4760) and announce IPv6 routes with it as next hop.
    pub local_addr6: Option<std::net::Ipv6Addr>,
    pub hold_time: u16,
    pub connect_retry: Duration,
    pub cluster_id: Option<Ipv4Addr>,
    pub graceful_restart: Option<u16>,
    /// Our local limit on how long a restarting peer's stale routes are kept.
    pub max_stale: Duration,
    /// We have just restarted gracefully and forward on saved routes: R and F in our OPENs,
    /// and nothing sent until every peer's End-of-RIB (or the restart time).
    pub restarted: bool,
    pub peers: Vec<PeerConfig>,
    /// Our own prefixes, announced with our address as next hop.
    pub originate: Vec<IpNet>,
    pub policy: ClusterPolicy,
    pub filters: Vec<Filter>,
}

/// What the shell does for the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Open a TCP connection to peer `i` (answer with `connected` or `connect_failed`).
    Connect(usize),
    Send(usize, Message),
    /// Close peer `i`'s connection after sending what is queued.
    Close(usize),
}

/// What an operator reads about a session in the log: the core has no I/O, so the shell
/// writes them ([`Core::take_reports`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Established, carrying these families.
    Up(Vec<Afi>),
    /// An Established session went down, or a NOTIFICATION ended one on its way up. A
    /// connection attempt that fails is not reported: an absent peer would fill the log.
    Down(Down),
    /// RFC 7606: an UPDATE with malformed attributes; `withdrawn`: its routes counted as
    /// withdrawn, `discarded`: the codes of attributes dropped. `count` is how many the
    /// session has had: reported at 1, 2, 4, 8, …, so a peer cannot flood the log.
    Malformed { withdrawn: bool, discarded: Vec<u8>, count: u64 },
}

/// What to do with a connection a peer opened to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incoming {
    Refuse,
    /// Take it: carry out the actions (they close any connection of ours), put it in place,
    /// then call [`Core::accepted`].
    Take,
}

#[derive(Debug)]
struct Peer {
    cfg: PeerConfig,
    fsm: Fsm,
    helper: Helper,
    /// End-of-RIB of its first family (IPv4 where it carries IPv4) since the session came up.
    eor: bool,
    last_negotiated: Option<Negotiated>,
    /// Our connect in progress since, or the connection up since (for the stall timers).
    connecting_since: Option<Instant>,
    connected_at: Option<Instant>,
    flaps: u64,
    /// UPDATEs with malformed attributes since the session came up.
    malformed: u64,
    updates_received: u64,
    updates_sent: u64,
    /// Removed while running: the slot stays (indices are the shell's too) but is dead.
    removed: bool,
    /// Replaced by the peer in this slot (same address, new settings): this slot's routes
    /// stay, stale, until that one has sent its table (End-of-RIB), and so has every peer
    /// added with it or since, or the instant passes.
    replaced_by: Option<(usize, Instant)>,
    /// When it was configured.
    added_at: Instant,
}

/// One peer as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerView {
    pub state: State,
    pub since: Instant,
    /// Why it is not up, or what it waits for.
    pub info: String,
    pub received: usize,
    pub rejected: usize,
    pub advertised: usize,
    pub flaps: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    /// The address families the session carries (empty while it is not up).
    pub families: Vec<Afi>,
}

#[derive(Debug)]
pub struct Core {
    cfg: CoreConfig,
    rib: Rib,
    peers: Vec<Peer>,
    actions: Vec<Action>,
    reports: Vec<(usize, Report)>,
    deferral_until: Option<Instant>,
    /// What the Loc-RIB changed since [`Core::take_changes`].
    changed: LocChanges,
}

/// What changed in the Loc-RIB, for whoever keeps a FIB from it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum LocChanges {
    #[default]
    Nothing,
    /// Changed routes, with what [`Core::learned`] (IPv6: [`Core::learned6`]) now has for
    /// them: the next hop, or `None` (withdrawn, or a route this node originates); where a
    /// prefix is listed more than once, the last entry holds. The lists carry the next hops
    /// so that whoever applies them need not look each prefix up again in a table of a
    /// million.
    Routes { v4: Vec<(Ipv4Net, Option<Ipv4Addr>)>, v6: Vec<(Ipv6Net, Option<Ipv6Addr>)> },
    /// Anything may have changed: read the whole Loc-RIB.
    Everything,
}

impl LocChanges {
    /// Beyond this many routes the lists stop growing and become
    /// [`LocChanges::Everything`]: nobody who reads the whole table then gains from it, and
    /// it would hold memory (10 bytes a route).
    pub const MAX_LISTED: usize = 1 << 20;

    fn add(&mut self, changed: &[(IpNet, Option<crate::rib::Best>)]) {
        if *self == LocChanges::Nothing {
            *self = LocChanges::Routes { v4: Vec::with_capacity(changed.len()), v6: Vec::new() };
        }
        let LocChanges::Routes { v4, v6 } = self else { return };
        for (p, best) in changed {
            match p {
                IpNet::V4(p) => v4.push((*p, best.as_ref().and_then(learned_next_hop))),
                IpNet::V6(p) => v6.push((*p, best.as_ref().and_then(learned_next_hop6))),
            }
        }
        if v4.len() + v6.len() > Self::MAX_LISTED {
            *self = LocChanges::Everything;
        }
    }
}

/// The IPv4 next hop of a learned best path (none for one this node originates).
fn learned_next_hop(b: &crate::rib::Best) -> Option<Ipv4Addr> {
    match (b.from, b.attrs.next_hop) {
        (crate::rib::From::Local, _) | (_, IpAddr::V6(_)) => None,
        (_, IpAddr::V4(nh)) => Some(nh),
    }
}

/// The IPv6 next hop of a learned best path, alike.
fn learned_next_hop6(b: &crate::rib::Best) -> Option<Ipv6Addr> {
    match (b.from, b.attrs.next_hop) {
        (crate::rib::From::Local, _) | (_, IpAddr::V4(_)) => None,
        (_, IpAddr::V6(nh)) => Some(nh),
    }
}

/// The lowest TTL a GTSM peer `hops` away can reach us with.
pub fn gtsm_min_ttl(hops: u8) -> u8 {
    255 - hops.saturating_sub(1)
}

impl Core {
    pub fn new(cfg: CoreConfig, now: Instant) -> Core {
        let mut rib = Rib::new(cfg.local_as, cfg.router_id, cfg.cluster_id);
        rib.set_policy(cfg.policy.clone());
        let peers = Vec::new();
        for b in &cfg.originate {
            rib.originate(*b, PathAttrs::local(cfg.local_addr));
        }
        let restart_time = Duration::from_secs(u64::from(cfg.graceful_restart.unwrap_or(120)));
        let deferral_until = cfg.restarted.then(|| now + restart_time);
        if cfg.restarted {
            rib.defer();
        }
        let initial = cfg.peers.clone();
        let mut core = Core {
            cfg,
            rib,
            peers,
            actions: Vec::new(),
            reports: Vec::new(),
            deferral_until,
            changed: LocChanges::Everything,
        };
        for p in initial {
            core.push_peer(p, now);
        }
        for i in 0..core.peers.len() {
            core.feed(i, now, Input::Start);
        }
        core
    }

    /// The address families our OPENs to a peer at `addr` offer: over IPv4 IPv4 unicast,
    /// and IPv6 unicast too on a dual-stack node; over IPv6 IPv6 unicast only (what would an
    /// IPv4 next hop learned over IPv6 be worth to a peer that may not reach it).
    fn families(&self, addr: IpAddr) -> Vec<Afi> {
        match (addr, self.cfg.local_addr6) {
            (IpAddr::V6(_), _) => vec![Afi::Ipv6],
            (IpAddr::V4(_), Some(_)) => vec![Afi::Ipv4, Afi::Ipv6],
            (IpAddr::V4(_), None) => vec![Afi::Ipv4],
        }
    }

    /// Adds peer slot `peers.len()` (not started).
    fn push_peer(&mut self, p: PeerConfig, now: Instant) -> usize {
        let i = self.peers.len();
        let filters: Vec<Arc<Filter>> = p
            .filters
            .iter()
            .filter_map(|n| self.cfg.filters.iter().find(|f| &f.name == n))
            .cloned()
            .map(Arc::new)
            .collect();
        self.rib.add_peer(
            i as PeerId,
            PeerInfo {
                rr_client: p.rr_client,
                external: p.external,
                filters,
                max_prefixes: p.max_prefixes,
                allow_local_as: p.allow_local_as,
                keep_next_hop: p.keep_next_hop,
                local_addr6: self.cfg.local_addr6,
                ..PeerInfo::new(p.address, p.asn, self.cfg.local_addr)
            },
        );
        let fsm = Fsm::new(
            FsmConfig {
                local_as: self.cfg.local_as,
                peer_as: p.asn,
                local_id: self.cfg.router_id,
                hold_time: self.cfg.hold_time,
                connect_retry: self.cfg.connect_retry,
                passive: p.passive,
                families: self.families(p.address),
                graceful_restart: self.cfg.graceful_restart.map(|t| p.restart_time.unwrap_or(t)),
                keepalive: p.keepalive,
                restarted: self.cfg.restarted,
            },
            now,
        );
        self.peers.push(Peer {
            cfg: p,
            fsm,
            helper: Helper::default(),
            eor: false,
            last_negotiated: None,
            connecting_since: None,
            connected_at: None,
            flaps: 0,
            malformed: 0,
            updates_received: 0,
            updates_sent: 0,
            removed: false,
            replaced_by: None,
            added_at: now,
        });
        i
    }

    /// The same peer with new settings (a route reflector's client now, other filters): the
    /// old session closes without a NOTIFICATION (a peer doing graceful restart keeps our
    /// routes), its routes stay, stale, until the new session has sent its table (and so has
    /// every session configured with it or since), and the new session starts in a new slot,
    /// which this returns. Nothing is lost in between.
    pub fn replace_peer(&mut self, i: usize, p: PeerConfig, now: Instant) -> usize {
        if self.removed(i) {
            return self.add_peer(p, now);
        }
        self.actions.push(Action::Close(i));
        let ch = self.rib.peer_down(i as PeerId, true);
        self.apply(ch);
        self.peers[i].removed = true;
        let j = self.add_peer(p, now);
        self.peers[i].replaced_by = Some((j, now + REPLACE_GRACE));
        j
    }

    /// A peer configured while running (a BGPPeer applied): its slot, started at once.
    /// Slots are never reused, so the shell's per-slot state stays in step.
    pub fn add_peer(&mut self, p: PeerConfig, now: Instant) -> usize {
        let i = self.push_peer(p, now);
        self.feed(i, now, Input::Start);
        i
    }

    /// A peer no longer configured: Cease (administrative shutdown) if a session was up,
    /// its routes gone at once (no graceful restart for a peer that was removed), and the
    /// slot dead for good.
    pub fn remove_peer(&mut self, i: usize, now: Instant) {
        if self.peers.get(i).is_none_or(|p| p.removed) {
            return;
        }
        // RFC 4486's subcode for a peer taken out of the configuration: a cluster node keeps
        // our routes a while on it (restart::DECONFIGURED_HOLD).
        let bye = Notification::new(wire::err::CEASE, wire::err::PEER_DECONFIGURED);
        self.feed(
            i,
            now,
            Input::Shutdown {
                notification: bye,
                reason: "removed from the configuration".into(),
                hold_down: Duration::ZERO,
            },
        );
        self.actions.push(Action::Close(i));
        self.peers[i].helper = Helper::default();
        let ch = self.rib.peer_down(i as PeerId, false);
        self.apply(ch);
        self.rib.remove_peer(i as PeerId);
        self.peers[i].removed = true;
    }

    /// New cluster rules for what comes in and goes out, applied to what is already there.
    /// Peers whose routes the old rules refused are asked to send them again (ROUTE-REFRESH,
    /// RFC 2918, where they offered it), to be judged by the new ones.
    pub fn set_policy(&mut self, policy: ClusterPolicy) {
        self.cfg.policy = policy.clone();
        let refused: Vec<usize> = (0..self.peers.len()).filter(|&i| self.rib.refused_by_policy(i as PeerId)).collect();
        let ch = self.rib.set_policy(policy);
        self.apply(ch);
        for i in refused {
            let p = &self.peers[i];
            if p.removed || p.fsm.state() != State::Established {
                continue;
            }
            let Some(n) = p.fsm.negotiated().filter(|n| n.route_refresh) else { continue };
            for afi in n.families.clone() {
                self.send(i, Message::RouteRefresh(crate::wire::RouteRefresh { afi: afi.code(), subtype: 0, safi: 1 }));
            }
        }
    }

    /// Whether peer `i` is up and has sent its whole table (End-of-RIB, or it does not do
    /// graceful restart and so sends none).
    pub fn synced(&self, i: usize) -> bool {
        let p = &self.peers[i];
        !p.removed
            && p.fsm.state() == State::Established
            && (p.eor || p.fsm.negotiated().is_some_and(|n| n.peer_gr.is_none()))
    }

    /// Whether every peer configured at `since` or later is up and has sent its table.
    fn synced_since(&self, since: Instant) -> bool {
        (0..self.peers.len())
            .filter(|&k| !self.peers[k].removed && self.peers[k].added_at >= since)
            .all(|k| self.synced(k))
    }

    /// Whether every route the peers at slots `going` taught has a path from another peer
    /// too (or is ours).
    pub fn taught_elsewhere(&self, going: &[usize]) -> bool {
        let ids: Vec<PeerId> = going.iter().map(|&i| i as PeerId).collect();
        self.rib.taught_elsewhere(&ids)
    }

    /// Whether slot `i` is a peer that was removed.
    pub fn removed(&self, i: usize) -> bool {
        self.peers.get(i).is_none_or(|p| p.removed)
    }

    /// Starts announcing a prefix of this node (a pod's borrowed /32 that appeared).
    pub fn originate(&mut self, prefix: IpNet) {
        let ch = self.rib.originate(prefix, PathAttrs::local(self.cfg.local_addr));
        self.apply(ch);
    }

    /// Stops announcing a prefix of this node.
    pub fn withdraw_local(&mut self, prefix: IpNet) {
        let ch = self.rib.withdraw_local(prefix);
        self.apply(ch);
    }

    /// What the shell must do now, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// What happened to sessions since the last call, for the log: peer index and report.
    pub fn take_reports(&mut self) -> Vec<(usize, Report)> {
        std::mem::take(&mut self.reports)
    }

    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn peer_config(&self, i: usize) -> &PeerConfig {
        &self.peers[i].cfg
    }

    /// The peer's wire context (AS number size) for encoding and decoding.
    pub fn ctx(&self, i: usize) -> Ctx {
        self.peers[i].fsm.negotiated().map_or_else(Ctx::default, |n| Ctx { four_octet_as: n.four_octet_as })
    }

    /// The hold time agreed with peer `i` (our proposal while no session is up).
    pub fn hold_time(&self, i: usize) -> u16 {
        self.peers[i].fsm.negotiated().map_or(self.cfg.hold_time, |n| n.hold_time)
    }

    pub fn state(&self, i: usize) -> State {
        self.peers[i].fsm.state()
    }

    /// What changed in the Loc-RIB since the last call: time to update the FIB.
    pub fn take_changes(&mut self) -> LocChanges {
        std::mem::take(&mut self.changed)
    }

    pub fn deferring(&self) -> bool {
        self.rib.deferring()
    }

    /// The earliest time [`Core::tick`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let replaced = self.peers.iter().filter_map(|p| p.replaced_by.map(|r| r.1)).min();
        if let Some(t) = replaced {
            return Some(self.poll_timeout_peers().map_or(t, |u| u.min(t)));
        }
        self.poll_timeout_peers()
    }

    fn poll_timeout_peers(&self) -> Option<Instant> {
        let retry = self.cfg.connect_retry;
        let peers = self.peers.iter().filter(|p| !p.removed).flat_map(|p| {
            let stall = p.connecting_since.map(|t| t + retry);
            let gtsm =
                p.cfg.ttl_security.and(p.connected_at).filter(|_| p.fsm.state() == State::OpenSent).map(|t| t + retry);
            [p.fsm.poll_timeout(), p.helper.poll_timeout(), stall, gtsm]
        });
        peers.chain([self.deferral_until]).flatten().min()
    }

    /// Our connect to peer `i` completed.
    pub fn connected(&mut self, i: usize, now: Instant) {
        self.peers[i].connecting_since = None;
        self.peers[i].connected_at = Some(now);
        self.feed(i, now, Input::TcpUp);
    }

    pub fn connect_failed(&mut self, i: usize, now: Instant, error: String) {
        self.peers[i].connecting_since = None;
        self.feed(i, now, Input::TcpFailed(error));
    }

    /// The connection closed under us (or failed).
    pub fn closed(&mut self, i: usize, now: Instant, error: String) {
        self.peers[i].connected_at = None;
        self.feed(i, now, Input::TcpClosed(error));
    }

    pub fn message(&mut self, i: usize, now: Instant, m: Message) {
        self.feed(i, now, Input::Message(m));
    }

    /// What the peer sent does not decode: `n` goes back and the session resets.
    pub fn decode_error(&mut self, i: usize, now: Instant, n: Notification) {
        self.feed(i, now, Input::DecodeError(n));
    }

    /// Ends a session for a reason the shell found (output stuck, too much queued).
    pub fn shutdown(&mut self, i: usize, now: Instant, notification: Notification, why: String, hold_down: Duration) {
        self.feed(i, now, Input::Shutdown { notification, reason: why, hold_down });
    }

    /// Peer `i` opened a connection to us while we have `ours_pending` (a connect of ours in
    /// progress or up). One session per peer (RFC 4271 §6.8): in OpenSent or OpenConfirm the
    /// connection opened by the higher BGP identifier survives; a new connection from a peer
    /// doing graceful restart while its session looks Established is its restart (RFC 4724
    /// §4.2); otherwise an Established session keeps its connection.
    pub fn incoming(&mut self, i: usize, now: Instant, ours_pending: bool) -> Incoming {
        let p = &self.peers[i];
        if p.removed {
            return Incoming::Refuse;
        }
        let state = p.fsm.state();
        if p.cfg.ttl_security.is_some() {
            // GTSM: the shared listener let this handshake through whatever its TTL. The
            // session runs on the connection we open, whose socket checks it.
            return Incoming::Refuse;
        }
        // The peer's identifier is in its OPEN once we are in OpenConfirm; before that it is
        // what the RIB holds: the one of the last session, or else the default of
        // `PeerInfo::new` (its IPv4 address, a Calico node's router ID; an IPv6 peer's
        // 0.0.0.0, and ours wins).
        let known = || self.rib.peer(i as PeerId).map_or(Ipv4Addr::UNSPECIFIED, |x| x.router_id);
        let peer_id = p.fsm.negotiated().map_or_else(known, |n| n.peer_id);
        let theirs_wins = !crate::fsm::keep_ours(self.cfg.router_id, peer_id);
        let restarted = state == State::Established && p.fsm.negotiated().is_some_and(|n| n.peer_gr.is_some());
        let take = match state {
            State::Idle | State::Active | State::Connect => true,
            State::OpenSent | State::OpenConfirm => theirs_wins,
            State::Established => restarted,
        };
        if !take {
            return Incoming::Refuse;
        }
        if restarted {
            self.feed(i, now, Input::PeerRestarted);
            let _ = self.peers[i].fsm.process(now, Input::Start);
        } else if matches!(state, State::OpenSent | State::OpenConfirm) {
            // Cease on ours, then the exchange starts over on the peer's connection.
            self.feed(i, now, Input::Collision);
        } else if ours_pending {
            // Our connect is still in progress: the peer's connection is here first.
            self.actions.push(Action::Close(i));
        }
        if state == State::Idle {
            // Backing off after an error: the peer's connection ends the wait. The FSM's
            // Connect output is moot, the connection is already here.
            let _ = self.peers[i].fsm.process(now, Input::Start);
        }
        self.peers[i].connecting_since = None;
        Incoming::Take
    }

    /// The connection [`Core::incoming`] said to take is in place (after the shell carried
    /// out the actions that closed any other): the session starts on it.
    pub fn accepted(&mut self, i: usize, now: Instant) {
        self.peers[i].connected_at = Some(now);
        self.feed(i, now, Input::TcpUp);
    }

    /// Whether peer `i` still has part of its initial table to get ([`Core::sync_more`]).
    pub fn syncing(&self, i: usize) -> bool {
        self.rib.syncing(i as PeerId)
    }

    /// The next slice of peer `i`'s initial table (the shell asks while its output is low).
    pub fn sync_more(&mut self, i: usize) {
        let ch = self.rib.sync_next(i as PeerId);
        self.apply(ch);
    }

    /// Fires due timers.
    pub fn tick(&mut self, now: Instant) {
        let retry = self.cfg.connect_retry;
        for i in 0..self.peers.len() {
            if let Some((j, until)) = self.peers[i].replaced_by {
                // A change of settings may move routes to other sessions (a reflector's
                // client joining the mesh learns a third node's block from that node now,
                // not through the reflector): they all must have sent theirs first.
                if self.peers[j].eor && self.synced_since(self.peers[j].added_at) || now >= until {
                    let ch = self.rib.purge_stale(i as PeerId);
                    self.apply(ch);
                    self.rib.remove_peer(i as PeerId);
                    self.peers[i].replaced_by = None;
                }
            }
            if self.peers[i].removed {
                continue;
            }
            // A SYN that is never answered (peer down, or a TCP MD5 mismatch, which the kernel
            // drops silently) would otherwise hang for minutes in the kernel's retries.
            if self.peers[i].connecting_since.is_some_and(|t| now >= t + retry) {
                self.peers[i].connecting_since = None;
                self.actions.push(Action::Close(i));
                let p = &self.peers[i].cfg;
                let mut hint = String::from("peer down");
                if p.md5 {
                    hint += ", or a TCP MD5 password mismatch";
                }
                if let Some(h) = p.ttl_security {
                    hint += &format!(", or its packets arrive with a TTL below {} (ttl_security)", gtsm_min_ttl(h));
                }
                let msg = format!("no answer to TCP connect within {} s ({hint})", retry.as_secs());
                self.feed(i, now, Input::TcpFailed(msg));
            }
            // GTSM: a peer that sends below the TTL we require gets its handshake through when
            // its listener sends at 255 (BIRD's does), and then its OPEN is dropped. Waiting the
            // OpenSent hold time (4 minutes) would tell nobody anything.
            let silent = self.peers[i].cfg.ttl_security.filter(|_| {
                self.peers[i].fsm.state() == State::OpenSent
                    && self.peers[i].connected_at.is_some_and(|t| now >= t + retry)
            });
            if let Some(h) = silent {
                self.peers[i].connected_at = None;
                self.actions.push(Action::Close(i));
                let msg = format!(
                    "no OPEN within {} s; its packets may arrive with a TTL below {} (ttl_security), which the kernel drops",
                    retry.as_secs(),
                    gtsm_min_ttl(h)
                );
                self.feed(i, now, Input::TcpFailed(msg));
            }
            if self.peers[i].fsm.poll_timeout().is_some_and(|t| t <= now) {
                self.feed(i, now, Input::Tick);
            }
            if self.peers[i].helper.expired(now) {
                let ch = self.rib.purge_stale(i as PeerId);
                self.apply(ch);
            }
        }
        self.end_deferral_if_ready(now);
    }

    /// Cease to every peer (shutting down for good).
    pub fn stop(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            if !self.peers[i].removed {
                self.feed(i, now, Input::Stop);
            }
        }
    }

    /// A planned restart: every connection closes without a NOTIFICATION, so peers doing
    /// graceful restart keep our routes until we are back (RFC 4724 §4.2).
    pub fn close_for_restart(&mut self) {
        for i in 0..self.peers.len() {
            if !self.peers[i].removed {
                self.actions.push(Action::Close(i));
            }
        }
    }

    /// Feeds one input to peer `i`'s FSM and carries out what it asks.
    fn feed(&mut self, i: usize, now: Instant, input: Input) {
        // What is still in flight for a removed peer goes nowhere.
        if self.peers[i].removed {
            return;
        }
        if let Some(n) = self.peers[i].fsm.negotiated() {
            self.peers[i].last_negotiated = Some(n.clone());
        }
        let was_established = self.peers[i].fsm.state() == State::Established;
        for o in self.peers[i].fsm.process(now, input) {
            match o {
                Output::Connect => {
                    self.peers[i].connecting_since = Some(now);
                    self.actions.push(Action::Connect(i));
                }
                Output::Send(m) => self.send(i, m),
                Output::Close => {
                    self.peers[i].connecting_since = None;
                    self.peers[i].connected_at = None;
                    self.actions.push(Action::Close(i));
                }
                Output::Established(neg) => {
                    self.reports.push((i, Report::Up(neg.families.clone())));
                    self.established(i, neg)
                }
                Output::Down(why) => {
                    if was_established || why.notification().is_some() {
                        self.reports.push((i, Report::Down(why.clone())));
                    }
                    self.down(i, now, was_established, why)
                }
                Output::Update(u) => {
                    self.peers[i].updates_received += 1;
                    if u.treat_as_withdraw || !u.discarded.is_empty() {
                        let p = &mut self.peers[i];
                        p.malformed += 1;
                        if p.malformed.is_power_of_two() {
                            let r = Report::Malformed {
                                withdrawn: u.treat_as_withdraw,
                                discarded: u.discarded.clone(),
                                count: p.malformed,
                            };
                            self.reports.push((i, r));
                        }
                    }
                    let ch = self.rib.update(i as PeerId, &u);
                    if !self.rib.has_stale(i as PeerId) {
                        self.peers[i].helper.done();
                    }
                    // Synced: the End-of-RIB of IPv4, or of IPv6 on a session without IPv4.
                    let first = self.peers[i].fsm.negotiated().and_then(|n| n.families.first().copied());
                    if u.is_end_of_rib().is_some_and(|f| Some(f) == first) {
                        self.peers[i].eor = true;
                    }
                    self.apply(ch);
                    if let Some((max, got)) = self.rib.over_limit(i as PeerId) {
                        self.feed(i, now, max_prefixes_shutdown(max, got));
                    }
                    self.end_deferral_if_ready(now);
                }
                Output::RefreshRequested(_) => {
                    let fams = self.peers[i].last_negotiated.as_ref().map(|n| n.families.clone()).unwrap_or_default();
                    let ch = self.rib.peer_up(i as PeerId, &fams);
                    self.apply(ch);
                }
            }
        }
    }

    fn send(&mut self, i: usize, m: Message) {
        if matches!(m, Message::Update(_)) {
            self.peers[i].updates_sent += 1;
        }
        self.actions.push(Action::Send(i, m));
    }

    fn established(&mut self, i: usize, neg: Negotiated) {
        let ch = self.rib.set_router_id(i as PeerId, neg.peer_id);
        self.apply(ch);
        self.peers[i].eor = false;
        self.peers[i].malformed = 0;
        self.peers[i].connected_at = None;
        // Back from a restart: families whose forwarding state it did not keep lose their
        // stale routes now (RFC 4724 §4.2).
        for afi in self.peers[i].helper.up(&neg, &neg.families).flush {
            let ch = self.rib.purge_stale_family(i as PeerId, Some(afi));
            self.apply(ch);
        }
        if !self.rib.has_stale(i as PeerId) {
            self.peers[i].helper.done();
        }
        let ch = self.rib.peer_up(i as PeerId, &neg.families);
        self.apply(ch);
    }

    fn down(&mut self, i: usize, now: Instant, was_established: bool, why: Down) {
        if was_established {
            self.peers[i].flaps += 1;
        }
        // RFC 4724 §4.2: a restarting peer keeps its routes, stale.
        let max_stale = self.cfg.max_stale;
        let p = &mut self.peers[i];
        let keep = p.helper.down(now, was_established, &why, p.last_negotiated.as_ref(), max_stale, !p.cfg.external);
        let ch = self.rib.peer_down(i as PeerId, keep);
        self.apply(ch);
    }

    fn apply(&mut self, ch: Changes) {
        if !ch.loc.is_empty() {
            self.changed.add(&ch.loc);
        }
        for (to, u) in ch.out {
            self.send(to as usize, Message::Update(u));
        }
    }

    /// After our own restart, the table goes out once every peer is back and has sent its
    /// End-of-RIB (a peer without graceful restart sends none: it is not waited for), or
    /// when the restart time is up (RFC 4724 §4.1's selection deferral).
    fn end_deferral_if_ready(&mut self, now: Instant) {
        if !self.rib.deferring() {
            return;
        }
        // Peers removed while we waited are not waited for.
        let all_back = self.peers.iter().filter(|p| !p.removed).all(|p| {
            p.fsm.state() == State::Established && (p.eor || p.fsm.negotiated().is_some_and(|n| n.peer_gr.is_none()))
        });
        if !all_back && self.deferral_until.is_some_and(|t| t > now) {
            return;
        }
        self.deferral_until = None;
        for p in &mut self.peers {
            p.fsm.restart_done();
        }
        let ch = self.rib.end_deferral();
        self.changed = LocChanges::Everything;
        self.apply(ch);
    }

    /// Peer `i` as `status` shows it: every state but up says why, or what it waits for.
    pub fn view(&self, i: usize, now: Instant) -> PeerView {
        let p = &self.peers[i];
        let state = p.fsm.state();
        let info = match (state, p.fsm.last_error()) {
            (State::Established, _) if self.rib.deferring() => {
                "Established; our routes wait for every peer's End-of-RIB (we restarted)".to_string()
            }
            (State::Established, _) if p.helper.active() => {
                "Established; its routes from before its restart are stale until its End-of-RIB".to_string()
            }
            (State::Established, _) => "Established".to_string(),
            (_, Some(e)) => match p.helper.poll_timeout() {
                Some(t) => {
                    let left = t.saturating_duration_since(now).as_secs();
                    let why = if p.helper.deconfigured() { "until we follow the change" } else { "graceful restart" };
                    format!("{e}; its routes are kept ({why}) for up to {left} s more")
                }
                None => e.to_string(),
            },
            (State::Active, None) if p.cfg.passive => "waiting for the peer to connect".into(),
            (State::Connect | State::Active, None) => format!("connecting to {}", p.cfg.address),
            (State::OpenSent, None) => "connected; waiting for the peer's OPEN".into(),
            (State::OpenConfirm, None) => "OPENs exchanged; waiting for the peer's KEEPALIVE".into(),
            (State::Idle, None) => "idle: not started".into(),
        };
        PeerView {
            state,
            since: p.fsm.since(),
            info,
            received: self.rib.received(i as PeerId),
            rejected: self.rib.rejected(i as PeerId),
            advertised: self.rib.advertised(i as PeerId),
            flaps: p.flaps,
            updates_received: p.updates_received,
            updates_sent: p.updates_sent,
            families: p.fsm.negotiated().map(|n| n.families.clone()).unwrap_or_default(),
        }
    }

    /// The next hops of the routes learned from cluster nodes.
    pub fn cluster_next_hops(&self) -> std::collections::HashSet<Ipv4Addr> {
        self.rib
            .cluster_routes()
            .filter_map(|(_, attrs)| match attrs.next_hop {
                IpAddr::V4(nh) => Some(nh),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    /// The next hop of every IPv4 Loc-RIB route this node did not originate.
    pub fn learned(&self) -> Vec<(ipnet::Ipv4Net, Ipv4Addr)> {
        self.learned_where(|_| true)
    }

    /// [`Core::learned`] for the prefixes `keep` takes; the others cost no lookup.
    pub fn learned_where(&self, keep: impl Fn(&Ipv4Net) -> bool) -> Vec<(Ipv4Net, Ipv4Addr)> {
        let keep = |p: &IpNet| matches!(p, IpNet::V4(p) if keep(p));
        self.rib
            .loc_rib_where(&keep)
            .filter_map(|(p, from, attrs)| match (p, from, attrs.next_hop) {
                (_, crate::rib::From::Local, _) => None,
                (IpNet::V4(p), _, IpAddr::V4(nh)) => Some((p, nh)),
                _ => None,
            })
            .collect()
    }

    /// The entry of [`Core::learned`] for exactly `prefix`, if there is one.
    pub fn learned_at(&self, prefix: Ipv4Net) -> Option<Ipv4Addr> {
        self.rib.best(&IpNet::V4(prefix)).as_ref().and_then(learned_next_hop)
    }

    /// The entries of [`Core::learned`] whose prefix covers `dst`: one lookup per prefix
    /// length, whatever the size of the table.
    pub fn learned_covering(&self, dst: Ipv4Addr) -> Vec<(Ipv4Net, Ipv4Addr)> {
        (0..=32u8)
            .filter_map(|len| Ipv4Net::new(dst, len).ok().map(|n| n.trunc()))
            .filter_map(|p| self.learned_at(p).map(|nh| (p, nh)))
            .collect()
    }

    /// The entry of [`Core::learned6`] for exactly `prefix`, if there is one.
    pub fn learned6_at(&self, prefix: Ipv6Net) -> Option<Ipv6Addr> {
        self.rib.best(&IpNet::V6(prefix)).as_ref().and_then(learned_next_hop6)
    }

    /// The entries of [`Core::learned6`] whose prefix covers `dst`, alike.
    pub fn learned6_covering(&self, dst: Ipv6Addr) -> Vec<(Ipv6Net, Ipv6Addr)> {
        (0..=128u8)
            .filter_map(|len| Ipv6Net::new(dst, len).ok().map(|n| n.trunc()))
            .filter_map(|p| self.learned6_at(p).map(|nh| (p, nh)))
            .collect()
    }

    /// The next hop of every IPv6 Loc-RIB route this node did not originate.
    pub fn learned6(&self) -> Vec<(Ipv6Net, Ipv6Addr)> {
        self.learned6_where(|_| true)
    }

    /// The entries of [`Core::learned6`] whose prefix `keep` accepts.
    pub fn learned6_where(&self, keep: impl Fn(&Ipv6Net) -> bool) -> Vec<(Ipv6Net, Ipv6Addr)> {
        // Only IPv6 prefixes are read (a node may hold a million IPv4 ones), and only those
        // `keep` takes are looked up.
        let keep = |p: &IpNet| matches!(p, IpNet::V6(p) if keep(p));
        self.rib
            .loc_rib6(&keep)
            .filter(|(_, from, _)| *from != crate::rib::From::Local)
            .filter_map(|(p, _, attrs)| match (p, attrs.next_hop) {
                (IpNet::V6(p), IpAddr::V6(nh)) => Some((p, nh)),
                _ => None,
            })
            .collect()
    }

    pub fn candidates(&self, prefix: &IpNet) -> Vec<Candidate> {
        self.rib.candidates(prefix)
    }
}

/// RFC 4486 §4: Cease, "maximum number of prefixes reached", with AFI, SAFI and the limit.
fn max_prefixes_shutdown(max: u32, got: usize) -> Input {
    let mut data = vec![0, 1, 1];
    data.extend_from_slice(&max.to_be_bytes());
    Input::Shutdown {
        notification: Notification::with_data(wire::err::CEASE, wire::err::MAX_PREFIXES, &data),
        reason: format!(
            "sent {got} prefixes, more than max_prefixes = {max}: shut down (Cease, maximum prefixes), retrying in {} s",
            MAX_PREFIXES_HOLD_DOWN.as_secs()
        ),
        hold_down: MAX_PREFIXES_HOLD_DOWN,
    }
}

#[cfg(test)]
mod tests;
