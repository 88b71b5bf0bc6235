//! Several speaker cores wired together on virtual time, with no sockets: connections are
//! pairs of peer slots, every message goes through the wire encoder and decoder, and time
//! jumps to the next timer. Graceful restart both ways, collisions, stalls and limits are
//! played out here as they are in the lab, in milliseconds.

use super::*;
use crate::wire::Update;
use std::collections::VecDeque;

const AS: u32 = 64512;

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, n)
}

fn block(n: u8) -> IpNet {
    format!("10.244.{n}.0/26").parse().expect("net")
}

/// A cluster of `n` nodes in a full mesh; node k has address .k+1, block 10.244.k+1.0/26,
/// and the higher address of a pair waits (Calico's rule).
struct Cluster {
    now: Instant,
    nodes: Vec<Option<Core>>,
    /// (node, peer slot) -> the connection's id and its other end.
    links: HashMap<(usize, usize), (u64, usize, usize)>,
    /// (to node, its peer slot, connection id, what arrives).
    queue: VecDeque<(usize, usize, u64, Ev)>,
    next_conn: u64,
    gr: Option<u16>,
}

use std::collections::HashMap;

#[derive(Debug)]
enum Ev {
    Bytes(Vec<u8>),
    Closed,
}

fn config(me: usize, n: usize, gr: Option<u16>, restarted: bool) -> CoreConfig {
    let addr = ip(me as u8 + 1);
    CoreConfig {
        local_as: AS,
        router_id: addr,
        local_addr: addr,
        local_addr6: None,
        hold_time: 9,
        connect_retry: Duration::from_secs(2),
        cluster_id: None,
        graceful_restart: gr,
        max_stale: Duration::from_secs(300),
        restarted,
        peers: (0..n)
            .filter(|&o| o != me)
            .map(|o| PeerConfig {
                address: ip(o as u8 + 1).into(),
                asn: AS,
                passive: me > o,
                rr_client: false,
                external: false,
                filters: vec![],
                max_prefixes: None,
                ttl_security: None,
                md5: false,
                restart_time: None,
                keepalive: None,
                allow_local_as: 0,
                keep_next_hop: false,
            })
            .collect(),
        originate: vec![block(me as u8 + 1)],
        policy: ClusterPolicy::default(),
        filters: vec![],
    }
}

impl Cluster {
    fn new(n: usize, gr: Option<u16>) -> Cluster {
        Cluster::of((0..n).map(|k| config(k, n, gr, false)).collect(), gr)
    }

    fn of(configs: Vec<CoreConfig>, gr: Option<u16>) -> Cluster {
        let now = Instant::now();
        let nodes = configs.into_iter().map(|cfg| Some(Core::new(cfg, now))).collect();
        let mut c = Cluster { now, nodes, links: HashMap::new(), queue: VecDeque::new(), next_conn: 0, gr };
        c.settle();
        c
    }

    fn node_of(&self, addr: IpAddr) -> usize {
        let last = match addr {
            IpAddr::V4(a) => a.octets()[3],
            IpAddr::V6(a) => a.octets()[15],
        };
        usize::from(last) - 1
    }

    /// The slot node `at` uses for node `of`.
    fn slot(&self, at: usize, of: usize) -> usize {
        if of < at {
            of
        } else {
            of - 1
        }
    }

    fn core(&mut self, k: usize) -> &mut Core {
        self.nodes[k].as_mut().expect("node is running")
    }

    fn view(&self, k: usize, slot: usize) -> PeerView {
        self.nodes[k].as_ref().expect("node is running").view(slot, self.now)
    }

    /// Carries out every node's actions and delivers what is in flight until nothing moves.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let mut moved = false;
            for k in 0..self.nodes.len() {
                let Some(core) = self.nodes[k].as_mut() else { continue };
                for a in core.take_actions() {
                    moved = true;
                    self.act(k, a);
                }
            }
            if let Some((k, slot, id, ev)) = self.queue.pop_front() {
                moved = true;
                let now = self.now;
                // What was in flight on a connection that is gone is lost with it.
                if self.links.get(&(k, slot)).is_none_or(|l| l.0 != id) {
                    continue;
                }
                let Some(core) = self.nodes[k].as_mut() else { continue };
                match ev {
                    Ev::Bytes(b) => match wire::decode(&b, &core.ctx(slot)) {
                        Ok(Some((m, _))) => core.message(slot, now, m),
                        Ok(None) => panic!("a whole message was sent"),
                        Err(n) => core.decode_error(slot, now, n),
                    },
                    Ev::Closed => {
                        self.links.remove(&(k, slot));
                        core.closed(slot, now, "the peer closed the connection".into());
                    }
                }
            }
            for k in 0..self.nodes.len() {
                if let Some(core) = self.nodes[k].as_mut() {
                    while let Some(i) = (0..core.peer_count()).find(|&i| core.syncing(i)) {
                        core.sync_more(i);
                        moved = true;
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the cluster never settled");
    }

    fn act(&mut self, k: usize, a: Action) {
        let now = self.now;
        match a {
            Action::Connect(slot) => {
                let addr = self.core(k).peer_config(slot).address;
                let to = self.node_of(addr);
                let back = self.slot(to, k);
                let Some(other) = self.nodes[to].as_mut() else {
                    self.core(k).connect_failed(slot, now, "connection refused".into());
                    return;
                };
                if self.links.contains_key(&(k, slot)) {
                    return;
                }
                let pending = self.links.contains_key(&(to, back));
                match other.incoming(back, now, pending) {
                    Incoming::Refuse => self.core(k).connect_failed(slot, now, "reset".into()),
                    Incoming::Take => {
                        for a in self.core(to).take_actions() {
                            self.act(to, a);
                        }
                        self.next_conn += 1;
                        let id = self.next_conn;
                        self.links.insert((k, slot), (id, to, back));
                        self.links.insert((to, back), (id, k, slot));
                        self.core(to).accepted(back, now);
                        self.core(k).connected(slot, now);
                    }
                }
            }
            Action::Send(slot, m) => {
                if let Some(&(id, to, back)) = self.links.get(&(k, slot)) {
                    let ctx = self.core(k).ctx(slot);
                    self.queue.push_back((to, back, id, Ev::Bytes(m.to_bytes(&ctx))));
                }
            }
            Action::Close(slot) => {
                if let Some((id, to, back)) = self.links.remove(&(k, slot)) {
                    self.queue.push_back((to, back, id, Ev::Closed));
                }
            }
        }
    }

    /// Lets `d` of virtual time pass, firing every timer on its way.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            self.settle();
            let next = self.nodes.iter().flatten().filter_map(|c| c.poll_timeout()).min();
            match next {
                Some(t) if t <= until => {
                    self.now = self.now.max(t);
                    let now = self.now;
                    for c in self.nodes.iter_mut().flatten() {
                        c.tick(now);
                    }
                }
                _ => break,
            }
        }
        self.now = until;
        self.settle();
    }

    fn has(&self, k: usize, b: u8) -> bool {
        self.nodes[k].as_ref().is_some_and(|c| c.rib().best(&block(b)).is_some())
    }

    fn all_up(&self) -> bool {
        self.nodes.iter().flatten().all(|c| (0..c.peer_count()).all(|i| c.state(i) == State::Established))
    }

    /// Node `k` disappears: its connections close with no NOTIFICATION (a crash, or the
    /// quiet close of a planned restart).
    fn vanish(&mut self, k: usize) {
        self.nodes[k] = None;
        let mine: Vec<(usize, usize)> = self.links.keys().filter(|a| a.0 == k).copied().collect();
        for a in mine {
            if let Some((id, to, back)) = self.links.remove(&a) {
                self.queue.push_back((to, back, id, Ev::Closed));
            }
        }
        self.queue.retain(|(to, ..)| *to != k);
        self.settle();
    }

    fn start(&mut self, k: usize, restarted: bool) {
        let n = self.nodes.len();
        self.nodes[k] = Some(Core::new(config(k, n, self.gr, restarted), self.now));
        self.settle();
    }
}

#[test]
fn a_full_mesh_comes_up_and_every_node_learns_every_block() {
    let mut c = Cluster::new(4, Some(120));
    c.run_for(Duration::from_secs(1));
    assert!(c.all_up());
    for k in 0..4 {
        for b in 1..=4 {
            assert!(c.has(k, b), "node {k} lacks block {b}");
        }
    }
    // Keepalives hold the sessions through many hold times.
    c.run_for(Duration::from_secs(60));
    assert!(c.all_up());
}

#[test]
fn a_crashed_node_keeps_its_block_at_helpers_until_its_restart_time_then_loses_it() {
    let mut c = Cluster::new(3, Some(120));
    c.run_for(Duration::from_secs(1));
    c.vanish(1);
    c.run_for(Duration::from_secs(100));
    assert!(c.has(0, 2) && c.has(2, 2), "stale, kept within the restart time");
    let info = c.view(0, 0).info;
    assert!(info.contains("kept (graceful restart)"), "{info}");
    c.run_for(Duration::from_secs(21));
    assert!(!c.has(0, 2) && !c.has(2, 2), "gone after 120 s");
}

#[test]
fn a_restart_time_set_for_one_peer_is_the_one_that_peer_keeps_our_routes_for() {
    // Node 1 announces 30 s to node 0 (Calico's maxRestartTime on that BGPPeer), the node's
    // 120 s to node 2.
    let mut configs: Vec<CoreConfig> = (0..3).map(|k| config(k, 3, Some(120), false)).collect();
    configs[1].peers[0].restart_time = Some(30);
    let mut c = Cluster::of(configs, Some(120));
    c.run_for(Duration::from_secs(1));
    assert!(c.all_up());
    c.vanish(1);
    c.run_for(Duration::from_secs(29));
    assert!(c.has(0, 2) && c.has(2, 2), "both keep it within 30 s");
    c.run_for(Duration::from_secs(2));
    assert!(!c.has(0, 2), "node 0 was told 30 s");
    assert!(c.has(2, 2), "node 2 was told 120 s");
}

#[test]
fn without_graceful_restart_a_lost_connection_withdraws_at_once() {
    let mut c = Cluster::new(3, None);
    c.run_for(Duration::from_secs(1));
    c.vanish(1);
    assert!(!c.has(0, 2) && !c.has(2, 2));
}

#[test]
fn a_planned_restart_keeps_routes_and_the_restarted_node_defers_until_end_of_rib() {
    let mut c = Cluster::new(3, Some(120));
    c.run_for(Duration::from_secs(1));
    c.core(1).close_for_restart();
    c.vanish(1);
    c.run_for(Duration::from_secs(5));
    assert!(c.has(0, 2) && c.has(2, 2));
    c.start(1, true);
    // Node 1 is back: it learned everything, and nobody ever lost its block.
    for _ in 0..50 {
        c.run_for(Duration::from_millis(100));
        assert!(c.has(0, 2) && c.has(2, 2), "a helper dropped the restarting node's block");
    }
    assert!(!c.core(1).deferring(), "End-of-RIB from both peers ends the deferral");
    assert!(c.all_up());
    for b in 1..=3 {
        assert!(c.has(1, b));
    }
    // Fresh again at the helpers: node 1's End-of-RIB purged nothing it re-announced.
    assert!(!c.core(0).rib().has_stale(0));
    c.run_for(Duration::from_secs(200));
    assert!(c.has(0, 2) && c.has(2, 2), "still there after the restart time");
}

#[test]
fn a_failed_reconnect_does_not_flush_stale_routes() {
    let mut c = Cluster::new(2, Some(120));
    c.run_for(Duration::from_secs(1));
    c.vanish(1);
    // Node 0 (the lower address) keeps connecting and failing for a minute.
    c.run_for(Duration::from_secs(60));
    assert!(c.has(0, 2));
    let info = c.view(0, 0).info;
    assert!(info.contains("refused") && info.contains("kept"), "{info}");
}

#[test]
fn a_restarted_peers_new_connection_replaces_the_one_that_still_looks_up() {
    let mut c = Cluster::new(2, Some(120));
    c.run_for(Duration::from_secs(1));
    // Node 0 restarts and node 1 never hears its old connection go (the FIN was lost).
    c.nodes[0] = None;
    c.links.retain(|a, _| a.0 != 0);
    c.queue.clear();
    assert_eq!(c.core(1).state(0), State::Established);
    c.start(0, true);
    // Node 0 connects (it has the lower address); node 1 takes the connection as the restart.
    c.run_for(Duration::from_millis(500));
    assert!(c.all_up());
    assert_eq!(c.view(1, 0).flaps, 1, "the old session ended");
    assert!(c.has(1, 1), "node 0's block was kept across the restart");
    assert!(!c.core(0).deferring() && !c.core(1).rib().has_stale(0));
}

#[test]
fn incoming_connections_follow_the_collision_rule() {
    let now = Instant::now();
    let cease = Notification::new(wire::err::CEASE, wire::err::COLLISION_RESOLUTION);
    // .1 has its own connection in OpenSent when .2 (higher identifier) connects: .2's wins,
    // with a Cease on ours.
    let mut a = Core::new(config(0, 2, Some(120), false), now);
    assert_eq!(a.take_actions(), vec![Action::Connect(0)]);
    a.connected(0, now);
    assert!(matches!(a.take_actions().as_slice(), [Action::Send(0, Message::Open(_))]));
    assert_eq!(a.incoming(0, now, true), Incoming::Take);
    let acts = a.take_actions();
    assert!(acts.contains(&Action::Send(0, Message::Notification(cease))), "{acts:?}");
    assert!(acts.contains(&Action::Close(0)));
    a.accepted(0, now);
    assert_eq!(a.state(0), State::OpenSent);
    // .2 in OpenSent on a connection it accepted keeps it against a second one from .1 (.2's
    // identifier is higher: the connection .2 opened... is none; the rule keeps the session).
    let mut b = Core::new(config(1, 2, None, false), now);
    let _ = b.take_actions();
    assert_eq!(b.incoming(0, now, false), Incoming::Take);
    b.accepted(0, now);
    let _ = b.take_actions();
    assert_eq!(b.incoming(0, now, true), Incoming::Refuse, "OpenSent, our identifier is higher");
    // Established without graceful restart: a second connection is refused.
    let mut c = Cluster::new(2, None);
    c.run_for(Duration::from_secs(1));
    let t = c.now;
    assert_eq!(c.core(1).incoming(0, t, true), Incoming::Refuse);
}

#[test]
fn a_connect_that_is_never_answered_is_abandoned_with_a_reason() {
    let now = Instant::now();
    let mut cfg = config(0, 2, None, false);
    cfg.peers[0].md5 = true;
    let mut a = Core::new(cfg, now);
    assert_eq!(a.take_actions(), vec![Action::Connect(0)]);
    assert_eq!(a.poll_timeout(), Some(now + Duration::from_secs(2)));
    a.tick(now + Duration::from_secs(2));
    let acts = a.take_actions();
    assert!(acts.contains(&Action::Close(0)), "{acts:?}");
    let info = a.view(0, now).info;
    assert!(info.contains("no answer to TCP connect within 2 s") && info.contains("MD5"), "{info}");
}

#[test]
fn a_peer_over_its_prefix_limit_is_shut_down_with_cease_1() {
    let now = Instant::now();
    let mut cfg = config(0, 2, None, false);
    cfg.peers[0].max_prefixes = Some(2);
    cfg.peers[0].external = true;
    let mut a = Core::new(cfg, now);
    let _ = a.take_actions();
    a.connected(0, now);
    let _ = a.take_actions();
    let open = crate::wire::Open::new(AS, 9, ip(2), vec![crate::wire::Capability::FourOctetAs(AS)]);
    a.message(0, now, Message::Open(open));
    a.message(0, now, Message::Keepalive);
    assert_eq!(a.state(0), State::Established);
    let _ = a.take_actions();
    let u = Update {
        attrs: vec![
            crate::wire::Attr::new(crate::wire::AttrValue::Origin(crate::wire::Origin::Igp)),
            crate::wire::Attr::new(crate::wire::AttrValue::AsPath(vec![])),
            crate::wire::Attr::new(crate::wire::AttrValue::NextHop(ip(2))),
        ],
        nlri: ["198.51.100.0/24", "198.51.101.0/24", "198.51.102.0/24"]
            .iter()
            .map(|p| p.parse().expect("net"))
            .collect(),
        ..Default::default()
    };
    a.message(0, now, Message::Update(u));
    let acts = a.take_actions();
    let sent_cease = acts.iter().any(|x| {
        matches!(x, Action::Send(0, Message::Notification(n)) if n.code == wire::err::CEASE && n.subcode == wire::err::MAX_PREFIXES)
    });
    assert!(sent_cease, "{acts:?}");
    assert_eq!(a.state(0), State::Idle);
    assert!(a.view(0, now).info.contains("max_prefixes = 2"));
    assert_eq!(a.poll_timeout(), Some(now + MAX_PREFIXES_HOLD_DOWN));
}

#[test]
fn sessions_report_up_down_and_malformed_updates_but_not_failed_connects() {
    let now = Instant::now();
    let mut a = Core::new(config(0, 2, None, false), now);
    let _ = a.take_actions();
    // A connection that fails before the session is up is not news: a peer that is not
    // there yet would fill the log.
    a.connect_failed(0, now, "refused".into());
    a.tick(now + Duration::from_secs(3));
    a.connected(0, now);
    a.closed(0, now, "reset by peer".into());
    assert_eq!(a.take_reports(), vec![]);
    a.tick(now + Duration::from_secs(6));
    a.connected(0, now);
    let open = crate::wire::Open::new(AS, 9, ip(2), vec![crate::wire::Capability::FourOctetAs(AS)]);
    a.message(0, now, Message::Open(open));
    a.message(0, now, Message::Keepalive);
    assert_eq!(a.take_reports(), vec![(0, Report::Up(vec![Afi::Ipv4]))]);
    // RFC 7606 treat-as-withdraw: reported at the 1st, 2nd and 4th, not the 3rd.
    let broken =
        Update { nlri: vec!["10.244.2.0/26".parse().expect("net")], treat_as_withdraw: true, ..Default::default() };
    let mut counts = Vec::new();
    for _ in 0..4 {
        a.message(0, now, Message::Update(broken.clone()));
        for (_, r) in a.take_reports() {
            let Report::Malformed { withdrawn: true, count, .. } = r else { panic!("{r:?}") };
            counts.push(count);
        }
    }
    assert_eq!(counts, [1, 2, 4]);
    let cease = Notification::new(wire::err::CEASE, wire::err::ADMIN_SHUTDOWN);
    a.message(0, now, Message::Notification(cease.clone()));
    assert_eq!(a.take_reports(), vec![(0, Report::Down(Down::Received(cease)))]);
}

/// While the restarted node waits for a peer that is not back, it sends nothing and says why;
/// the restart time ends the wait.
#[test]
fn the_deferral_waits_for_every_peer_and_ends_at_the_restart_time() {
    let mut c = Cluster::new(3, Some(30));
    c.run_for(Duration::from_secs(1));
    c.core(1).close_for_restart();
    c.vanish(1);
    c.vanish(2);
    c.start(1, true);
    c.run_for(Duration::from_secs(5));
    assert!(c.core(1).deferring(), "node 2 is not back");
    assert!(c.view(1, 0).info.contains("wait for every peer's End-of-RIB"));
    assert_eq!(c.view(1, 0).advertised, 0, "nothing sent while deferring");
    c.run_for(Duration::from_secs(26));
    assert!(!c.core(1).deferring());
    assert_eq!(c.view(1, 0).advertised, 1, "its own block, once the deferral ended");
}

#[test]
fn a_prefix_originated_while_running_reaches_every_peer_and_its_withdrawal_too() {
    let mut c = Cluster::new(3, Some(120));
    c.run_for(Duration::from_secs(1));
    let pod: IpNet = "10.244.3.9/32".parse().expect("net");
    let learned = |c: &Cluster, k: usize| {
        c.nodes[k].as_ref().expect("running").learned().iter().any(|(p, _)| IpNet::V4(*p) == pod)
    };
    // The FIB keeper hears the whole table once at start, then only what changed.
    assert_eq!(c.core(1).take_changes(), LocChanges::Everything);
    assert_eq!(c.core(1).take_changes(), LocChanges::Nothing);
    c.core(0).originate(pod);
    c.settle();
    assert!(learned(&c, 1) && learned(&c, 2), "the borrowed /32 reached every node");
    let IpNet::V4(pod4) = pod else { panic!("v4") };
    assert_eq!(c.core(1).take_changes(), LocChanges::Routes { v4: vec![(pod4, Some(ip(1)))], v6: vec![] });
    // What covers the pod's address, found by prefix length, and a part of the table by prefix.
    let IpNet::V4(block3) = block(3) else { panic!("v4") };
    assert_eq!(c.core(1).learned_covering(pod4.addr()), [(block3, ip(3)), (pod4, ip(1))]);
    let mut blocks = c.core(1).learned_where(|p| p.prefix_len() == 26);
    blocks.sort();
    assert_eq!(blocks.len(), 2, "node 1's own block is not learned: {blocks:?}");
    assert_eq!(c.core(1).learned_where(|p| p.prefix_len() == 32), [(pod4, ip(1))]);
    c.core(0).withdraw_local(pod);
    c.core(0).withdraw_local(pod);
    c.settle();
    assert!(!learned(&c, 1) && !learned(&c, 2), "and its withdrawal too");
    assert_eq!(c.core(1).take_changes(), LocChanges::Routes { v4: vec![(pod4, None)], v6: vec![] });
    assert!(c.has(1, 1) && c.has(2, 1), "the block stays");
}

#[test]
fn a_peer_removed_while_running_is_shut_down_and_forgotten_and_one_added_comes_up() {
    let mut c = Cluster::new(3, Some(120));
    c.run_for(Duration::from_secs(1));
    assert!(c.has(1, 1) && c.has(0, 2));
    // Node 0 stops peering with node 1 (slot 0): Cease (peer de-configured), and node 0
    // drops node 1's block at once, graceful restart or not. Node 1 still has node 0 in its
    // configuration: it keeps node 0's block, stale, until it follows (a short while).
    let now = c.now;
    let cfg1 = c.core(0).peer_config(0).clone();
    c.core(0).remove_peer(0, now);
    c.settle();
    assert!(c.core(0).removed(0));
    assert!(!c.has(0, 2), "routes of a removed peer are gone at once");
    assert!(c.has(1, 1), "the other side keeps them while it has not followed");
    let info = c.view(1, 0).info;
    assert!(info.contains("peer de-configured") && info.contains("until we follow the change"), "{info}");
    assert!(c.has(2, 1) && c.has(2, 2), "node 2 is not concerned");
    c.run_for(crate::restart::DECONFIGURED_HOLD + Duration::from_secs(1));
    assert_ne!(c.view(1, 0).state, State::Established, "no session comes back by itself");
    assert!(!c.has(1, 1), "not for longer");
    // Added again, in a new slot: the session comes up and the routes are back.
    let now = c.now;
    let slot = c.core(0).add_peer(cfg1, now);
    assert_eq!(slot, 2);
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.view(0, slot).state, State::Established);
    assert!(c.has(0, 2) && c.has(1, 1));
}

/// Both ends drop the peering, one after the other (they read the change at different
/// moments): the second drops the first's routes when it follows, not before.
#[test]
fn a_peering_both_ends_remove_goes_when_the_second_follows() {
    let mut c = Cluster::new(3, None);
    c.run_for(Duration::from_secs(1));
    let now = c.now;
    c.core(1).remove_peer(0, now);
    c.run_for(Duration::from_secs(3));
    assert!(c.has(0, 2) && !c.has(1, 1), "node 0 has not followed yet, graceful restart or not");
    let now = c.now;
    c.core(0).remove_peer(0, now);
    c.settle();
    assert!(!c.has(0, 2) && !c.has(1, 1));
    // Nobody said de-configured to node 2: a Cease of another kind ends its routes at once.
    let now = c.now;
    c.core(2).stop(now);
    c.settle();
    assert!(!c.has(0, 3) && !c.has(1, 3), "an administrative shutdown keeps nothing");
}

#[test]
fn a_peer_replaced_with_new_settings_keeps_its_routes_until_the_new_session_sent_its_own() {
    let mut c = Cluster::new(3, Some(120));
    c.run_for(Duration::from_secs(1));
    let now = c.now;
    let mut cfg = c.core(0).peer_config(0).clone();
    cfg.max_prefixes = Some(1000);
    let j = c.core(0).replace_peer(0, cfg, now);
    // Before anything is delivered: node 1's block is still there (stale), and node 1 still
    // has ours (no NOTIFICATION: its graceful-restart helper keeps it).
    assert!(c.has(0, 2), "the old session's routes stay");
    c.settle();
    assert!(c.has(1, 1), "node 1 keeps node 0's block");
    c.run_for(Duration::from_secs(5));
    assert_eq!(c.view(0, j).state, State::Established);
    assert!(c.core(0).removed(0));
    assert!(c.has(0, 2) && c.has(1, 1));
    // The old slot's stale routes are gone once the new session has sent its table.
    assert!(c.core(0).rib().best(&block(2)).is_some());
    assert!(c.core(0).poll_timeout().is_some_and(|t| t > c.now), "no timer of the dead slot keeps firing");
}

#[test]
fn a_restarted_node_does_not_wait_for_a_peer_removed_meanwhile() {
    let mut c = Cluster::new(3, Some(120));
    c.run_for(Duration::from_secs(1));
    c.vanish(2);
    c.vanish(0);
    c.start(0, true);
    c.run_for(Duration::from_secs(5));
    assert!(c.core(0).deferring(), "node 0 waits for node 2, which does not come back");
    let now = c.now;
    c.core(0).remove_peer(1, now);
    c.run_for(Duration::from_secs(1));
    assert!(!c.core(0).deferring(), "with node 2 no longer a peer, node 0 waits no more");
    assert!(c.has(1, 1), "and its block went out to node 1");
}

/// An external peer whose route the pools refused is asked for its table again when the
/// pools change (ROUTE-REFRESH), and what it sends again is judged by the new rules; a peer
/// that did not offer ROUTE-REFRESH is not asked.
#[test]
fn a_policy_change_asks_peers_for_the_routes_it_may_now_take() {
    use crate::wire::{Attr, AttrValue, Capability, Open, Origin};
    let now = Instant::now();
    let pool: IpNet = "10.245.0.0/16".parse().expect("net");
    let refused: IpNet = "10.245.1.0/24".parse().expect("net");
    let mut cfg = config(0, 3, None, false);
    for p in &mut cfg.peers {
        p.external = true;
    }
    cfg.policy.pools = vec![pool];
    let mut a = Core::new(cfg, now);
    let _ = a.take_actions();
    let u = Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Igp)),
            Attr::new(AttrValue::AsPath(vec![])),
            Attr::new(AttrValue::NextHop(ip(9))),
        ],
        nlri: vec!["10.245.1.0/24".parse().expect("net")],
        ..Default::default()
    };
    // Slot 0 offers ROUTE-REFRESH, slot 1 does not; both send the refused route.
    for (slot, caps) in [(0, vec![Capability::FourOctetAs(AS), Capability::RouteRefresh]), (1, vec![])] {
        a.connected(slot, now);
        let _ = a.take_actions();
        a.message(slot, now, Message::Open(Open::new(AS, 9, ip(slot as u8 + 2), caps)));
        a.message(slot, now, Message::Keepalive);
        assert_eq!(a.state(slot), State::Established);
        a.message(slot, now, Message::Update(u.clone()));
    }
    let _ = a.take_actions();
    assert!(a.rib().best(&refused).is_none());
    // The pool goes: only the peer that can be asked is.
    a.set_policy(ClusterPolicy::default());
    let acts = a.take_actions();
    let asked: Vec<usize> = acts
        .iter()
        .filter_map(|x| match x {
            Action::Send(i, Message::RouteRefresh(r)) if r.afi == 1 && r.safi == 1 => Some(*i),
            _ => None,
        })
        .collect();
    assert_eq!(asked, [0], "{acts:?}");
    // Its answer is taken now.
    a.message(0, now, Message::Update(u));
    assert!(a.rib().best(&refused).is_some());
}

#[test]
fn a_change_list_says_what_is_learned_now_and_past_its_cap_becomes_everything() {
    use crate::rib::{Best, From};
    let v4 = |b: IpNet| match b {
        IpNet::V4(p) => p,
        IpNet::V6(_) => unreachable!(),
    };
    let learned = Best { from: From::Peer(1), attrs: Arc::new(PathAttrs::local(ip(7))) };
    let ours = Best { from: From::Local, attrs: Arc::new(PathAttrs::local(ip(1))) };
    let v6: IpNet = "2001:db8:1::/122".parse().expect("net");
    let mut ch = LocChanges::Nothing;
    ch.add(&[(block(1), Some(learned.clone())), (block(2), Some(ours)), (block(3), None)]);
    let want = vec![(v4(block(1)), Some(ip(7))), (v4(block(2)), None), (v4(block(3)), None)];
    assert_eq!(ch, LocChanges::Routes { v4: want.clone(), v6: vec![] });
    let nh6: std::net::Ipv6Addr = "fd00::7".parse().expect("ip");
    let learned6 = Best {
        from: From::Peer(1),
        attrs: Arc::new(PathAttrs { next_hop: IpAddr::V6(nh6), ..PathAttrs::local(ip(7)) }),
    };
    ch.add(&[(v6, None), (v6, Some(learned6))]);
    let IpNet::V6(v6) = v6 else { unreachable!() };
    assert_eq!(ch, LocChanges::Routes { v4: want, v6: vec![(v6, None), (v6, Some(nh6))] });
    let many = vec![(block(4), Some(learned)); LocChanges::MAX_LISTED];
    ch.add(&many);
    assert_eq!(ch, LocChanges::Everything);
    ch.add(&[(block(5), None)]);
    assert_eq!(ch, LocChanges::Everything);
}

#[test]
fn a_session_over_ipv6_carries_ipv6_routes_only_with_our_ipv6_address_as_next_hop() {
    let ip6 = |n: u8| -> Ipv6Addr { format!("fd00:100::{n}").parse().expect("ip") };
    let block6 = |n: u8| -> IpNet { format!("fd00:10:244:{n}::/122").parse().expect("net") };
    let configs = (0..2)
        .map(|k| {
            let mut cfg = config(k, 2, Some(120), false);
            cfg.local_addr6 = Some(ip6(k as u8 + 1));
            cfg.originate.push(block6(k as u8 + 1));
            for p in &mut cfg.peers {
                let IpAddr::V4(a) = p.address else { unreachable!() };
                p.address = ip6(a.octets()[3]).into();
            }
            cfg
        })
        .collect();
    let mut c = Cluster::of(configs, Some(120));
    c.run_for(Duration::from_secs(1));
    assert!(c.all_up());
    for (k, other) in [(0, 2u8), (1, 1)] {
        let core = c.nodes[k].as_ref().expect("running");
        assert_eq!(core.view(0, c.now).families, [Afi::Ipv6]);
        assert!(core.synced(0), "its IPv6 End-of-RIB counts as the table sent");
        let best = core.rib().best(&block6(other)).expect("the other's IPv6 block");
        assert_eq!(best.attrs.next_hop, IpAddr::V6(ip6(other)));
        assert!(!c.has(k, other), "no IPv4 route over an IPv6 session");
    }
}
