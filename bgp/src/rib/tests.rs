//! RIB tests: origination, the decision process, iBGP and route-reflection export rules, loop
//! detection, eBGP export, the graceful-restart helper, and the import and export policy.

use super::*;
use crate::wire::update::code;
use crate::wire::Afi;
use crate::wire::{Ctx, Message};

const AS: u32 = 64512;
const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn peer(addr: &str, asn: u32, client: bool) -> PeerInfo {
    PeerInfo { rr_client: client, ..PeerInfo::new(ip(addr), asn, ME) }
}

/// A router outside the cluster (Calico's BGPPeer).
fn external(addr: &str, asn: u32) -> PeerInfo {
    PeerInfo { external: true, ..PeerInfo::new(ip(addr), asn, ME) }
}

/// An UPDATE as peer at `nh` would send it for `prefix`.
fn route(prefix: &str, nh: &str, extra: Vec<AttrValue>) -> Update {
    let mut attrs = vec![
        Attr::new(AttrValue::Origin(Origin::Igp)),
        Attr::new(AttrValue::AsPath(vec![])),
        Attr::new(AttrValue::NextHop(ip(nh))),
    ];
    for e in extra {
        attrs.retain(|a| a.value.code() != e.code());
        attrs.push(Attr::new(e));
    }
    let IpNet::V4(p) = net(prefix) else { panic!("v4") };
    Update { attrs, nlri: vec![p], ..Default::default() }
}

fn sent_to(ch: &Changes, id: PeerId) -> Vec<&Update> {
    ch.out.iter().filter(|(p, _)| *p == id).map(|(_, u)| u).collect()
}

fn mesh_rib() -> Rib {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.101", AS, false));
    r.add_peer(2, peer("192.168.200.101", AS, false));
    r
}

#[test]
fn own_block_goes_to_every_peer_with_next_hop_self_then_end_of_rib() {
    let mut r = mesh_rib();
    r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    let ch = r.peer_up(1, &[Afi::Ipv4]);
    let u = sent_to(&ch, 1);
    assert_eq!(u.len(), 2);
    assert_eq!(u[0].get(code::NEXT_HOP), Some(&AttrValue::NextHop(ME)));
    assert_eq!(u[0].get(code::LOCAL_PREF), Some(&AttrValue::LocalPref(100)));
    assert_eq!(u[0].get(code::AS_PATH), Some(&AttrValue::AsPath(vec![])));
    assert_eq!(u[1].is_end_of_rib(), Some(Afi::Ipv4));
}

#[test]
fn full_mesh_does_not_pass_ibgp_routes_on() {
    let mut r = mesh_rib();
    r.peer_up(1, &[Afi::Ipv4]);
    r.peer_up(2, &[Afi::Ipv4]);
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    assert_eq!(ch.loc.len(), 1, "learned");
    assert!(sent_to(&ch, 2).is_empty(), "not re-advertised to another iBGP peer");
    let best = &r.best(&net("10.244.2.0/26")).expect("a best path");
    assert_eq!(best.from, From::Peer(1));
    assert_eq!(best.attrs.next_hop, IpAddr::V4(ip("192.168.100.101")));
}

#[test]
fn a_peer_s_routes_are_taught_elsewhere_once_another_peer_has_them_all() {
    // Node-b's view as the mesh turns into a reflector: node-c (peer 2) goes, and its block
    // must first arrive from node-a (peer 1), which reflects it only once it is a reflector.
    let mut r = mesh_rib();
    r.peer_up(1, &[Afi::Ipv4]);
    r.peer_up(2, &[Afi::Ipv4]);
    r.originate(net("10.244.2.0/26"), PathAttrs::local(ME));
    r.update(1, &route("10.244.1.0/26", "192.168.100.101", vec![]));
    r.update(2, &route("10.244.3.0/26", "192.168.200.101", vec![]));
    assert!(!r.taught_elsewhere(&[2]), "only node-c has its block");
    assert!(r.taught_elsewhere(&[]), "nothing goes");
    r.update(1, &route("10.244.3.0/26", "192.168.200.101", vec![]));
    assert!(r.taught_elsewhere(&[2]), "the reflector passes it on now");
    assert!(!r.taught_elsewhere(&[1, 2]), "not when both go");
    // What is also ours needs no other peer.
    r.update(2, &route("10.244.2.0/26", "192.168.200.101", vec![]));
    assert!(r.taught_elsewhere(&[2]));
}

#[test]
fn withdrawal_removes_the_route() {
    let mut r = mesh_rib();
    r.peer_up(1, &[Afi::Ipv4]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let IpNet::V4(p) = net("10.244.2.0/26") else { panic!() };
    let ch = r.update(1, &Update { withdrawn: vec![p], ..Default::default() });
    assert_eq!(ch.loc, vec![(net("10.244.2.0/26"), None)]);
    assert!(r.loc_rib().next().is_none());
}

#[test]
fn treat_as_withdraw_removes_what_the_peer_had_sent() {
    let mut r = mesh_rib();
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let mut bad = route("10.244.2.0/26", "192.168.100.101", vec![]);
    bad.treat_as_withdraw = true;
    r.update(1, &bad);
    assert!(r.loc_rib().next().is_none());
}

fn reflector() -> Rib {
    let mut r = Rib::new(AS, ME, Some(ip("1.1.1.1")));
    r.add_peer(1, peer("192.168.100.101", AS, true));
    r.add_peer(2, peer("192.168.200.101", AS, true));
    r.add_peer(3, peer("192.168.100.50", AS, false));
    r.add_peer(4, peer("192.168.100.51", AS, false));
    for p in 1..=4 {
        r.peer_up(p, &[Afi::Ipv4]);
    }
    r
}

#[test]
fn reflector_passes_client_routes_to_everyone_with_originator_and_cluster_list() {
    let mut r = reflector();
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    for to in [2, 3, 4] {
        let u = sent_to(&ch, to);
        assert_eq!(u.len(), 1, "to {to}");
        assert_eq!(u[0].get(code::ORIGINATOR_ID), Some(&AttrValue::OriginatorId(ip("192.168.100.101"))));
        assert_eq!(u[0].get(code::CLUSTER_LIST), Some(&AttrValue::ClusterList(vec![ip("1.1.1.1")])));
        // The next hop is the originating node, not the reflector.
        assert_eq!(u[0].get(code::NEXT_HOP), Some(&AttrValue::NextHop(ip("192.168.100.101"))));
    }
    assert!(sent_to(&ch, 1).is_empty(), "not back to its source");
}

#[test]
fn reflector_passes_non_client_routes_to_clients_only() {
    let mut r = reflector();
    let ch = r.update(3, &route("10.99.0.0/24", "192.168.100.50", vec![]));
    assert_eq!(sent_to(&ch, 1).len(), 1);
    assert_eq!(sent_to(&ch, 2).len(), 1);
    assert!(sent_to(&ch, 4).is_empty(), "non-client to non-client is not reflected");
}

#[test]
fn reflection_loops_are_refused() {
    let mut r = reflector();
    r.update(1, &route("10.244.5.0/26", "192.168.100.101", vec![AttrValue::ClusterList(vec![ip("1.1.1.1")])]));
    r.update(1, &route("10.244.6.0/26", "192.168.100.101", vec![AttrValue::OriginatorId(ME)]));
    assert!(r.loc_rib().next().is_none());
}

#[test]
fn ebgp_routes_with_our_as_are_refused_and_exports_prepend_our_as() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.1", 65000, false));
    r.add_peer(2, peer("192.168.100.101", AS, false));
    r.peer_up(1, &[Afi::Ipv4]);
    r.peer_up(2, &[Afi::Ipv4]);
    let looped =
        route("10.1.0.0/16", "192.168.100.1", vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![65000, AS])])]);
    r.update(1, &looped);
    assert!(r.loc_rib().next().is_none());
    let ch = r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    let u = sent_to(&ch, 1);
    assert_eq!(u[0].get(code::AS_PATH), Some(&AttrValue::AsPath(vec![AsSegment::sequence(vec![AS])])));
    assert_eq!(u[0].get(code::LOCAL_PREF), None, "no LOCAL_PREF to eBGP");
    // An eBGP route goes to iBGP peers with us as next hop.
    let ch = r.update(
        1,
        &route("10.2.0.0/16", "192.168.100.1", vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![65000])])]),
    );
    assert_eq!(sent_to(&ch, 2)[0].get(code::NEXT_HOP), Some(&AttrValue::NextHop(ME)));
}

#[test]
fn a_peer_allowed_our_as_n_times_has_routes_with_it_up_to_n_times_taken() {
    // Calico's numAllowedLocalASNumbers: sites of one AS joined through a provider's AS.
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, PeerInfo { allow_local_as: 1, ..external("192.168.100.1", 65000) });
    r.peer_up(1, &[Afi::Ipv4]);
    let path = |v: Vec<u32>| vec![AttrValue::AsPath(vec![AsSegment::sequence(v)])];
    r.update(1, &route("198.51.100.0/24", "192.168.100.1", path(vec![65000, AS, 65010])));
    r.update(1, &route("203.0.113.0/24", "192.168.100.1", path(vec![65000, AS, AS])));
    assert_eq!(r.best(&net("198.51.100.0/24")).map(|b| b.from), Some(From::Peer(1)), "our AS once: taken");
    assert!(r.best(&net("203.0.113.0/24")).is_none(), "our AS twice: a loop");
    assert_eq!(r.rejected_routes(1), vec![(net("203.0.113.0/24"), Rejected::AsLoop)]);
}

#[test]
fn a_node_in_another_as_is_not_offered_a_path_through_its_own_as() {
    // AS-per-rack: we are AS 64512; nodes in 64513 and 64514 are eBGP cluster peers.
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.101", 64513, false));
    r.add_peer(2, peer("192.168.200.101", 64514, false));
    r.add_peer(3, external("192.168.100.1", 65000));
    for id in 1..=3 {
        r.peer_up(id, &[Afi::Ipv4]);
    }
    let path = |v: Vec<u32>| vec![AttrValue::AsPath(vec![AsSegment::sequence(v)])];
    let ch = r.update(2, &route("10.244.3.0/26", "192.168.200.101", path(vec![64514])));
    let to_1 = sent_to(&ch, 1);
    assert_eq!(to_1[0].get(code::AS_PATH), Some(&AttrValue::AsPath(vec![AsSegment::sequence(vec![AS, 64514])])));
    // One that came through 64513 on its way: 64513 would refuse it as a loop.
    let ch = r.update(2, &route("10.244.4.0/26", "192.168.200.101", path(vec![64514, 64513])));
    assert!(sent_to(&ch, 1).is_empty(), "not offered to the node in 64513");
    assert_eq!(sent_to(&ch, 3).len(), 1, "a router outside the cluster is told as before");
}

#[test]
fn an_ebgp_peer_keeping_next_hops_gets_other_nodes_blocks_with_their_owner_as_next_hop() {
    let mut r = mesh_rib();
    r.add_peer(3, PeerInfo { keep_next_hop: true, ..external("192.168.100.1", 65000) });
    r.add_peer(4, external("192.168.100.2", 65000));
    for id in 1..=4 {
        r.peer_up(id, &[Afi::Ipv4]);
    }
    r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let hop = |u: &Update| u.get(code::NEXT_HOP).cloned();
    assert_eq!(hop(sent_to(&ch, 3)[0]), Some(AttrValue::NextHop(ip("192.168.100.101"))), "node-b's own address");
    assert_eq!(hop(sent_to(&ch, 4)[0]), Some(AttrValue::NextHop(ME)), "without it: us");
    // Our own block goes with us as next hop either way.
    let ch = r.originate(net("10.244.9.0/26"), PathAttrs::local(ME));
    assert_eq!(hop(sent_to(&ch, 3)[0]), Some(AttrValue::NextHop(ME)));
}

#[test]
fn decision_process_order() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.101", AS, false));
    r.add_peer(2, peer("192.168.100.102", AS, false));
    let p = "10.9.0.0/16";
    let best = |r: &Rib| r.best(&net(p)).expect("a best path").from;
    let seq = |v: Vec<u32>| AttrValue::AsPath(vec![AsSegment::sequence(v)]);
    // Higher LOCAL_PREF wins over a shorter AS path.
    r.update(1, &route(p, "192.168.100.101", vec![AttrValue::LocalPref(200), seq(vec![1, 2, 3])]));
    r.update(2, &route(p, "192.168.100.102", vec![AttrValue::LocalPref(100)]));
    assert_eq!(best(&r), From::Peer(1));
    // Equal LOCAL_PREF: shorter AS path.
    r.update(1, &route(p, "192.168.100.101", vec![seq(vec![1, 2])]));
    assert_eq!(best(&r), From::Peer(2));
    // Equal path length: lower origin.
    r.update(1, &route(p, "192.168.100.101", vec![]));
    r.update(2, &route(p, "192.168.100.102", vec![AttrValue::Origin(Origin::Incomplete)]));
    assert_eq!(best(&r), From::Peer(1));
    // Then lower MED from the same neighbour AS.
    r.update(1, &route(p, "192.168.100.101", vec![seq(vec![7]), AttrValue::Med(50)]));
    r.update(2, &route(p, "192.168.100.102", vec![seq(vec![7]), AttrValue::Med(10)]));
    assert_eq!(best(&r), From::Peer(2));
    // All equal: lower router ID (ORIGINATOR_ID stands in for it), then shorter CLUSTER_LIST.
    r.update(1, &route(p, "192.168.100.101", vec![]));
    r.update(2, &route(p, "192.168.100.102", vec![]));
    assert_eq!(best(&r), From::Peer(1));
    r.update(2, &route(p, "192.168.100.102", vec![AttrValue::OriginatorId(ip("1.0.0.1"))]));
    assert_eq!(best(&r), From::Peer(2));
    r.update(1, &route(p, "192.168.100.101", vec![AttrValue::OriginatorId(ip("1.0.0.1"))]));
    r.update(
        2,
        &route(
            p,
            "192.168.100.102",
            vec![AttrValue::OriginatorId(ip("1.0.0.1")), AttrValue::ClusterList(vec![ip("9.9.9.9")])],
        ),
    );
    assert_eq!(best(&r), From::Peer(1));
}

#[test]
fn ebgp_beats_ibgp_when_all_else_is_equal() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.101", AS, false));
    r.add_peer(2, peer("192.168.100.200", 65000, false));
    r.update(
        1,
        &route("10.9.0.0/16", "192.168.100.101", vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![65000])])]),
    );
    r.update(
        2,
        &route("10.9.0.0/16", "192.168.100.200", vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![65000])])]),
    );
    assert_eq!(r.best(&net("10.9.0.0/16")).expect("a best path").from, From::Peer(2));
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib() {
    let mut r = mesh_rib();
    r.peer_up(1, &[Afi::Ipv4]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    r.update(1, &route("10.244.7.0/26", "192.168.100.101", vec![]));
    let ch = r.peer_down(1, true);
    assert!(ch.loc.is_empty(), "stale routes stay in the FIB");
    assert!(r.has_stale(1));
    // The peer comes back and re-announces only one of them, then End-of-RIB.
    r.peer_up(1, &[Afi::Ipv4]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let ch = r.update(1, &Update::end_of_rib(Afi::Ipv4));
    assert_eq!(ch.loc, vec![(net("10.244.7.0/26"), None)]);
    assert!(r.best(&net("10.244.2.0/26")).is_some());
    assert!(!r.has_stale(1));
}

#[test]
fn a_restarted_peer_with_a_new_router_id_has_its_stale_paths_chosen_again() {
    let mut r = mesh_rib();
    r.set_router_id(1, ip("1.1.1.1"));
    r.set_router_id(2, ip("5.5.5.5"));
    r.update(1, &route("10.9.0.0/16", "192.168.100.101", vec![]));
    r.update(2, &route("10.9.0.0/16", "192.168.200.101", vec![]));
    assert_eq!(r.best(&net("10.9.0.0/16")).expect("a best path").from, From::Peer(1));
    r.peer_down(1, true);
    assert_eq!(r.best(&net("10.9.0.0/16")).expect("a best path").from, From::Peer(1), "stale, still chosen");
    // It comes back with another identifier, higher than peer 2's: the tie goes the other way,
    // and the FIB hears of it before the peer has sent anything.
    let ch = r.set_router_id(1, ip("9.9.9.9"));
    assert_eq!(ch.loc.len(), 1);
    assert_eq!(ch.loc[0].1.as_ref().map(|b| b.from), Some(From::Peer(2)));
    assert!(r.set_router_id(1, ip("9.9.9.9")).loc.is_empty(), "no change, nothing to do");
}

#[test]
fn the_loc_rib_lists_each_prefix_once_from_its_best_path() {
    let mut r = mesh_rib();
    r.set_router_id(1, ip("1.1.1.1"));
    r.set_router_id(2, ip("5.5.5.5"));
    r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    r.update(1, &route("10.9.0.0/16", "192.168.100.101", vec![]));
    r.update(2, &route("10.9.0.0/16", "192.168.200.101", vec![]));
    r.update(2, &route("10.8.0.0/16", "192.168.200.101", vec![]));
    // A peer's path for our own block loses to it and is not listed.
    r.update(2, &route("10.244.1.0/26", "192.168.200.101", vec![]));
    let mut loc: Vec<(IpNet, From)> = r.loc_rib().map(|(p, from, _)| (p, from)).collect();
    loc.sort_by_key(|(p, _)| *p);
    assert_eq!(
        loc,
        [(net("10.8.0.0/16"), From::Peer(2)), (net("10.9.0.0/16"), From::Peer(1)), (net("10.244.1.0/26"), From::Local)]
    );
}

#[test]
fn session_loss_without_graceful_restart_drops_routes() {
    let mut r = mesh_rib();
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let ch = r.peer_down(1, false);
    assert_eq!(ch.loc, vec![(net("10.244.2.0/26"), None)]);
}

#[test]
fn routes_pointing_at_ourselves_are_ignored() {
    let mut r = mesh_rib();
    r.update(1, &route("10.244.1.0/26", "192.168.100.100", vec![]));
    assert!(r.loc_rib().next().is_none());
}

const POOL: &str = "10.244.0.0/16";

/// A node of a cluster with pool 10.244.0.0/16: mesh peer 1, external peers 2 (AS 65001) and
/// 3 (AS 65002), all up; it owns 10.244.1.0/26 and has a static route to 10.50.0.0/16.
fn edge_node() -> Rib {
    let mut r = Rib::new(AS, ME, None);
    r.set_policy(ClusterPolicy {
        pools: vec![net(POOL)],
        nodes: vec![IpAddr::V4(ME), IpAddr::V4(ip("192.168.100.101"))],
        protected: vec![net("192.168.100.100/32"), net("192.168.100.0/24")],
        static_routes: vec![net("10.50.0.0/16")],
        advertise: vec![],
        no_export: vec![],
    });
    r.add_peer(1, peer("192.168.100.101", AS, false));
    r.add_peer(2, external("192.168.100.1", 65001));
    r.add_peer(3, external("192.168.100.2", 65002));
    r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    for p in 1..=3 {
        r.peer_up(p, &[Afi::Ipv4]);
    }
    r
}

fn from_as(prefix: &str, nh: &str, asn: u32) -> Update {
    route(prefix, nh, vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![asn])])])
}

fn prefixes(us: &[&Update]) -> Vec<String> {
    us.iter().flat_map(|u| u.nlri.iter().map(|p| p.to_string())).collect()
}

#[test]
fn a_node_exports_cluster_routes_only_and_never_what_external_peers_sent() {
    let mut r = edge_node();
    // An external prefix is used here, but goes to no one: not to the other external peer
    // (we are no transit AS), not to the mesh.
    let ch = r.update(2, &from_as("198.51.100.0/24", "192.168.100.1", 65001));
    assert!(r.best(&net("198.51.100.0/24")).is_some());
    assert!(ch.out.is_empty(), "{:?}", ch.out);
    // Another node's block goes to the external peers (next hop self, our AS prepended)...
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    for to in [2, 3] {
        let u = sent_to(&ch, to);
        assert_eq!(prefixes(&u), ["10.244.2.0/26"], "to {to}");
        assert_eq!(u[0].get(code::NEXT_HOP), Some(&AttrValue::NextHop(ME)));
    }
    // ...but a mesh route outside the pools is not the cluster's to announce.
    let ch = r.update(1, &route("10.99.0.0/24", "192.168.100.101", vec![]));
    assert!(sent_to(&ch, 2).is_empty() && sent_to(&ch, 3).is_empty());
    // A peer that comes up later gets the same: our block and the other node's, no more.
    r.peer_down(3, false);
    let ch = r.peer_up(3, &[Afi::Ipv4]);
    assert_eq!(prefixes(&sent_to(&ch, 3)), ["10.244.1.0/26", "10.244.2.0/26"]);
}

#[test]
fn an_external_peer_cannot_announce_pool_routes_or_override_our_own() {
    let mut r = edge_node();
    let refused = [
        ("10.244.1.0/26", Rejected::InsidePool),
        ("10.244.0.0/16", Rejected::InsidePool),
        ("10.244.3.7/32", Rejected::InsidePool),
        ("192.168.100.100/32", Rejected::OverridesLocal),
        ("192.168.100.0/25", Rejected::OverridesLocal),
        ("10.50.0.0/16", Rejected::OverridesLocal),
    ];
    for (p, _) in refused {
        r.update(2, &from_as(p, "192.168.100.1", 65001));
    }
    r.update(2, &from_as("198.51.100.0/24", "192.168.100.1", 65001));
    r.update(2, &from_as("0.0.0.0/0", "192.168.100.1", 65001));
    // Inside a static route is ordinary routing, not an override.
    r.update(2, &from_as("10.50.1.0/24", "192.168.100.1", 65001));
    let mut want: Vec<(IpNet, Rejected)> = refused.iter().map(|(p, w)| (net(p), *w)).collect();
    want.sort_unstable_by_key(|(p, _)| *p);
    assert_eq!(r.rejected_routes(2), want);
    assert_eq!((r.received(2), r.rejected(2)), (3, 6));
    let mut counts = r.rejected_counts(2);
    counts.sort_unstable_by_key(|(w, _)| *w == Rejected::OverridesLocal);
    assert_eq!(counts, [(Rejected::InsidePool, 3), (Rejected::OverridesLocal, 3)]);
    assert!(r.rejected_counts(1).is_empty());
    // Our block is still ours; the pool route did not land.
    assert_eq!(r.best(&net("10.244.1.0/26")).expect("a best path").from, From::Local);
    assert!(r.best(&net("10.244.0.0/16")).is_none());
    // A withdrawal clears the record.
    r.update(2, &Update { withdrawn: vec!["10.244.0.0/16".parse().expect("net")], ..Default::default() });
    assert_eq!(r.rejected(2), 5);
    // A cluster node may announce pool routes, and an outside route reflector may pass them
    // on with the node as next hop; a route first refused then fixed counts once.
    r.update(1, &route("10.244.3.7/32", "192.168.100.101", vec![]));
    assert!(r.best(&net("10.244.3.7/32")).is_some());
    r.update(3, &from_as("10.244.4.0/26", "192.168.100.101", 65002));
    assert_eq!(r.best(&net("10.244.4.0/26")).expect("a best path").from, From::Peer(3));
    r.update(2, &route("10.244.3.7/32", "192.168.100.1", vec![AttrValue::Communities(vec![1])]));
    assert_eq!(r.rejected(2), 5);
}

fn rule(cidr: &str, operator: policy::MatchOperator, action: Action) -> policy::Rule {
    policy::Rule::new(net(cidr), operator, action)
}

#[test]
fn filters_decide_first_but_cannot_open_the_pools() {
    use policy::MatchOperator::*;
    let mut r = edge_node();
    let f = Arc::new(Filter {
        name: "edge".into(),
        import: vec![rule("198.51.100.0/24", Equal, Action::Reject), rule(POOL, In, Action::Accept)],
        export: vec![rule("10.244.1.0/26", Equal, Action::Reject), rule("203.0.113.0/24", Equal, Action::Accept)],
    });
    // Filters are configuration: the peer's entry is replaced and the session restarts.
    r.peer_down(2, false);
    r.add_peer(2, PeerInfo { filters: vec![f.clone()], ..external("192.168.100.1", 65001) });
    let ch = r.peer_up(2, &[Afi::Ipv4]);
    assert!(prefixes(&sent_to(&ch, 2)).is_empty(), "the export filter holds our block back");
    r.update(2, &from_as("198.51.100.0/24", "192.168.100.1", 65001));
    r.update(2, &from_as("10.244.9.0/26", "192.168.100.1", 65001));
    let why: Vec<String> =
        r.rejected_routes(2).iter().map(|(p, w)| format!("{p}: {}", w.describe(std::slice::from_ref(&f)))).collect();
    assert_eq!(
        why,
        [
            "10.244.9.0/26: inside an IP pool, with a next hop that is not a cluster node",
            "198.51.100.0/24: rejected by filter edge, import rule 1"
        ]
    );
    // An Accept export rule makes a route transit on purpose (here: from peer 3 to peer 2).
    let ch = r.update(3, &from_as("203.0.113.0/24", "192.168.100.2", 65002));
    assert_eq!(prefixes(&sent_to(&ch, 2)), ["203.0.113.0/24"]);
    // Peer 3 has no filter: our block still reaches it.
    assert_eq!(r.advertised(3), 1);
}

#[test]
fn a_rule_with_source_remote_peers_leaves_the_nodes_own_routes_alone() {
    use policy::MatchOperator::*;
    let mut r = edge_node();
    // Calico's "only my own blocks to the ToR": pool routes learned from peers are held back.
    let f = Arc::new(Filter {
        name: "own-only".into(),
        import: vec![],
        export: vec![policy::Rule { source: Some(policy::Source::RemotePeers), ..rule(POOL, In, Action::Reject) }],
    });
    r.peer_down(2, false);
    r.add_peer(2, PeerInfo { filters: vec![f], ..external("192.168.100.1", 65001) });
    let ch = r.peer_up(2, &[Afi::Ipv4]);
    assert_eq!(prefixes(&sent_to(&ch, 2)), ["10.244.1.0/26"], "the node's own block goes out");
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    assert!(sent_to(&ch, 2).is_empty(), "node-b's block, learned, does not");
    assert_eq!(prefixes(&sent_to(&ch, 3)), ["10.244.2.0/26"], "without the filter it does");
}

#[test]
fn no_export_stays_in_the_as_and_no_advertise_goes_nowhere() {
    let mut r = Rib::new(AS, ME, Some(ip("1.1.1.1")));
    r.add_peer(1, peer("192.168.100.101", AS, true));
    r.add_peer(4, peer("192.168.100.104", AS, true));
    r.add_peer(2, external("192.168.100.1", 65001));
    for p in [1, 2, 4] {
        r.peer_up(p, &[Afi::Ipv4]);
    }
    let c = |v: u32| vec![AttrValue::Communities(vec![64512 << 16 | 7, v])];
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", c(community::NO_EXPORT)));
    assert_eq!(prefixes(&sent_to(&ch, 4)), ["10.244.2.0/26"], "reflected inside the AS");
    assert!(sent_to(&ch, 2).is_empty(), "NO_EXPORT: not to another AS");
    let ch = r.update(1, &route("10.244.3.0/26", "192.168.100.101", c(community::NO_EXPORT_SUBCONFED)));
    assert!(sent_to(&ch, 2).is_empty() && !sent_to(&ch, 4).is_empty());
    let ch = r.update(1, &route("10.244.4.0/26", "192.168.100.101", c(community::NO_ADVERTISE)));
    assert!(ch.out.is_empty(), "NO_ADVERTISE: to no one");
    assert!(r.best(&net("10.244.4.0/26")).is_some(), "but used");
}

#[test]
fn a_pool_with_disable_bgp_export_reaches_the_cluster_but_no_external_peer() {
    let mut r = edge_node();
    // The mesh peer's block of the same pool, learned before the pool stops being exported.
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let mut policy = r.policy.clone();
    policy.no_export = vec![net(POOL)];
    let ch = r.set_policy(policy);
    // Both blocks withdrawn from the external peers, nothing changed for the mesh peer.
    for p in [2, 3] {
        let w: Vec<String> = sent_to(&ch, p).iter().flat_map(|u| u.withdrawn.iter().map(|x| x.to_string())).collect();
        assert_eq!(w.len(), 2, "to {p}: {w:?}");
    }
    assert!(sent_to(&ch, 1).is_empty());
    // A session coming up gets none of the pool; a mesh peer's comes up with ours.
    r.peer_down(2, false);
    assert!(prefixes(&sent_to(&r.peer_up(2, &[Afi::Ipv4]), 2)).is_empty());
    r.peer_down(1, false);
    assert_eq!(prefixes(&sent_to(&r.peer_up(1, &[Afi::Ipv4]), 1)), ["10.244.1.0/26"]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    // An export filter's Accept comes first, as in Calico.
    let accept = Arc::new(Filter {
        name: "out".into(),
        export: vec![rule(POOL, policy::MatchOperator::In, Action::Accept)],
        import: vec![],
    });
    r.peer_down(3, false);
    r.add_peer(3, PeerInfo { filters: vec![accept], ..external("192.168.100.2", 65002) });
    let mut sent = prefixes(&sent_to(&r.peer_up(3, &[Afi::Ipv4]), 3));
    sent.sort();
    assert_eq!(sent, ["10.244.1.0/26", "10.244.2.0/26"]);
}

#[test]
fn prefix_advertisements_attach_their_communities_on_export() {
    let mut r = edge_node();
    r.set_policy(ClusterPolicy {
        pools: vec![net(POOL)],
        advertise: vec![(net(POOL), vec![64512 << 16 | 100]), (net("10.244.1.0/26"), vec![community::NO_EXPORT])],
        ..Default::default()
    });
    r.peer_down(2, false);
    let ch = r.peer_up(2, &[Afi::Ipv4]);
    let u = sent_to(&ch, 2);
    assert_eq!(prefixes(&u), ["10.244.1.0/26"]);
    assert_eq!(
        u[0].get(code::COMMUNITIES),
        Some(&AttrValue::Communities(vec![64512 << 16 | 100, community::NO_EXPORT]))
    );
}

/// Three paths where MED decides between two from AS 1 but not against the one from AS 2:
/// compared in pairs, the result would depend on the order.
#[test]
fn med_is_compared_only_within_a_neighbouring_as_whatever_the_order() {
    let paths = [
        ("a", 1, 20, "1.0.0.1"), // loses to "c" on MED
        ("b", 2, 0, "1.0.0.2"),  // the best: lower router ID than "c"
        ("c", 1, 10, "1.0.0.3"), // loses to "b" on router ID
    ];
    let orders = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    let p = net("10.9.0.0/16");
    for order in orders {
        let mut r = Rib::new(AS, ME, None);
        // Peer ids and arrival follow the order; addresses too, so that no tie-break after the
        // router ID is left to hide a wrong result.
        for (slot, &i) in order.iter().enumerate() {
            let (_, asn, med, rid) = paths[i];
            let id = slot as PeerId + 1;
            let addr = format!("192.168.100.{}", 10 + slot);
            r.add_peer(id, peer(&addr, AS, false));
            r.set_router_id(id, ip(rid));
            r.update(
                id,
                &route(
                    "10.9.0.0/16",
                    &addr,
                    vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![asn])]), AttrValue::Med(med)],
                ),
            );
        }
        let name = |from: From| match from {
            From::Peer(id) => paths[order[id as usize - 1]].0,
            From::Local => "local",
        };
        assert_eq!(name(r.best(&p).expect("a best path").from), "b", "order {order:?}");
        let mut lost: Vec<(&str, Option<Step>)> = r.candidates(&p).iter().map(|c| (name(c.from), c.lost_at)).collect();
        lost.sort_unstable();
        assert_eq!(lost, [("a", Some(Step::Med)), ("b", None), ("c", Some(Step::RouterId))], "order {order:?}");
    }
}

#[test]
fn the_router_id_from_the_open_breaks_ties_not_the_address() {
    let mut r = mesh_rib();
    r.set_router_id(1, ip("9.9.9.9"));
    r.set_router_id(2, ip("1.1.1.1"));
    r.update(1, &route("10.9.0.0/16", "192.168.100.101", vec![]));
    r.update(2, &route("10.9.0.0/16", "192.168.200.101", vec![]));
    assert_eq!(r.best(&net("10.9.0.0/16")).expect("a best path").from, From::Peer(2));
    // A reflector names the originator by its router ID too (RFC 4456 §8), not its address.
    let mut rr = reflector();
    rr.set_router_id(1, ip("7.7.7.7"));
    let ch = rr.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    assert_eq!(sent_to(&ch, 3)[0].get(code::ORIGINATOR_ID), Some(&AttrValue::OriginatorId(ip("7.7.7.7"))));
}

#[test]
fn our_own_route_wins_and_detail_says_why_the_others_lost() {
    let mut r = mesh_rib();
    r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    r.update(1, &route("10.244.1.0/26", "192.168.100.101", vec![]));
    let c = r.candidates(&net("10.244.1.0/26"));
    assert_eq!(
        c.iter().map(|c| (c.from, c.lost_at)).collect::<Vec<_>>(),
        [(From::Local, None), (From::Peer(1), Some(Step::Local))]
    );
}

#[test]
fn max_prefixes_counts_every_prefix_received_rejected_or_not() {
    let mut r = edge_node();
    r.add_peer(2, PeerInfo { max_prefixes: Some(2), ..external("192.168.100.1", 65001) });
    r.update(2, &from_as("198.51.100.0/24", "192.168.100.1", 65001));
    r.update(2, &from_as("10.244.7.0/26", "192.168.100.1", 65001));
    assert_eq!(r.over_limit(2), None);
    r.update(2, &from_as("198.51.101.0/24", "192.168.100.1", 65001));
    assert_eq!(r.over_limit(2), Some((2, 3)));
    assert_eq!(r.over_limit(1), None, "no limit set");
}

/// RFC 7606 §7.5, §7.9, §7.10: LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST from an external
/// neighbour are discarded, not believed (they would otherwise steer our decision process).
#[test]
fn ibgp_only_attributes_from_an_ebgp_peer_are_discarded() {
    let mut r = edge_node();
    r.update(
        2,
        &route(
            "198.51.100.0/24",
            "192.168.100.1",
            vec![
                AttrValue::AsPath(vec![AsSegment::sequence(vec![65001])]),
                AttrValue::LocalPref(1000),
                AttrValue::OriginatorId(ip("1.2.3.4")),
                AttrValue::ClusterList(vec![ip("5.6.7.8")]),
            ],
        ),
    );
    let b = &r.best(&net("198.51.100.0/24")).expect("a best path");
    assert_eq!((b.attrs.local_pref, b.attrs.originator_id, b.attrs.cluster_list.len()), (Some(100), None, 0));
}

fn wire_len(u: &Update) -> usize {
    [true, false]
        .iter()
        .map(|&f| Message::Update(u.clone()).to_bytes(&Ctx { four_octet_as: f }).len())
        .max()
        .unwrap_or(0)
}

/// `n` /24s from one external peer, all with the same attributes.
fn many(n: u32, asn: u32) -> Vec<Update> {
    (0..n)
        .map(|i| {
            let p = format!("100.{}.{}.0/24", i / 256, i % 256);
            from_as(&p, "192.168.100.1", asn)
        })
        .collect()
}

#[test]
fn updates_are_packed_by_shared_attributes_up_to_the_size_limit() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, PeerInfo { external: false, ..PeerInfo::new(ip("192.168.100.1"), 65001, ME) });
    r.add_peer(2, peer("192.168.100.101", AS, false));
    r.peer_up(2, &[Afi::Ipv4]);
    // One UPDATE carrying 3000 prefixes in, as a feeder packs them.
    let mut big = many(1, 65001).remove(0);
    big.nlri = many(3000, 65001).iter().flat_map(|u| u.nlri.clone()).collect();
    let ch = r.update(1, &big);
    let sent = sent_to(&ch, 2);
    assert_eq!(sent.iter().map(|u| u.nlri.len()).sum::<usize>(), 3000);
    // 4 bytes a /24: about a thousand per message, not one message per prefix.
    assert!(sent.len() <= 4, "{} UPDATEs", sent.len());
    assert!(sent.iter().all(|u| wire_len(u) <= crate::wire::MAX_LEN));
    // The Adj-RIB-Out holds one attribute set for them all.
    let out = &r.adj_out[&2];
    let first = out.get(&net("100.0.0.0/24")).expect("advertised");
    assert!(out.iter().all(|(_, a)| Arc::ptr_eq(a, first)));
    // Withdrawals are packed too.
    let gone = Update { withdrawn: big.nlri.clone(), ..Default::default() };
    let ch = r.update(1, &gone);
    let sent = sent_to(&ch, 2);
    assert_eq!(sent.iter().map(|u| u.withdrawn.len()).sum::<usize>(), 3000);
    assert!(sent.len() <= 4 && sent.iter().all(|u| wire_len(u) <= crate::wire::MAX_LEN));
}

/// A path that arrives just under 4096 bytes grows when passed on (a reflector adds
/// ORIGINATOR_ID and CLUSTER_LIST, 14 bytes): it must never be sent, since the receiver would
/// reset the session, and again after every reconnect.
#[test]
fn a_route_grown_past_the_size_limit_is_withdrawn_not_sent() {
    let mut r = reflector();
    let communities = |n: u32| AttrValue::Communities((0..n).map(|i| 65000 << 16 | i).collect());
    let with = |n| {
        let mut u = route("10.244.2.0/26", "192.168.100.101", vec![communities(n)]);
        u.attrs.push(Attr::new(AttrValue::LocalPref(100)));
        u
    };
    // 1000 communities: 4053 bytes as received, 4067 reflected: sent to every other peer.
    let ch = r.update(1, &with(1000));
    for to in [2, 3, 4] {
        let u = sent_to(&ch, to);
        assert_eq!((u.len(), u[0].nlri.len()), (1, 1), "to {to}");
        assert!(wire_len(u[0]) <= crate::wire::MAX_LEN);
    }
    // 1010: 4093 bytes as received, fine; 4107 reflected: withdrawn instead.
    let near = with(1010);
    assert!(wire_len(&near) <= crate::wire::MAX_LEN);
    let ch = r.update(1, &near);
    for to in [2, 3, 4] {
        let u = sent_to(&ch, to);
        assert_eq!(u.len(), 1, "to {to}");
        assert_eq!(u[0].withdrawn, vec!["10.244.2.0/26".parse::<ipnet::Ipv4Net>().expect("net")]);
        assert!(u[0].nlri.is_empty());
        assert_eq!(r.advertised(to), 0);
    }
    assert!(r.best(&net("10.244.2.0/26")).is_some(), "still used here");
}

#[test]
fn the_initial_dump_streams_in_slices_and_sends_each_prefix_once_as_it_is_then() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, PeerInfo::new(ip("192.168.100.1"), 65001, ME));
    r.add_peer(2, peer("192.168.100.101", AS, false));
    let n = 3 * SYNC_BATCH as u32 + 10;
    for u in many(n, 65001) {
        r.update(1, &u);
    }
    let mut sent: HashMap<ipnet::Ipv4Net, usize> = HashMap::new();
    let mut count = |ch: &Changes| {
        for u in sent_to(ch, 2) {
            for p in &u.nlri {
                *sent.entry(*p).or_default() += 1;
            }
        }
    };
    let ch = r.peer_up(2, &[Afi::Ipv4]);
    count(&ch);
    assert!(r.syncing(2));
    assert!(sent_to(&ch, 2).iter().all(|u| u.is_end_of_rib().is_none()), "no End-of-RIB before the end");
    // Mid-dump: a prefix already sent changes (sent again now), one not reached yet changes
    // (sent once, by the dump), a new one appears (sent now), one not reached goes away.
    let late = format!("100.{}.{}.0/24", (n - 1) / 256, (n - 1) % 256);
    let mut changed = from_as("100.0.0.0/24", "192.168.100.1", 65001);
    changed.attrs.push(Attr::new(AttrValue::Med(5)));
    count(&r.update(1, &changed));
    let mut changed_late = from_as(&late, "192.168.100.1", 65001);
    changed_late.attrs.push(Attr::new(AttrValue::Med(7)));
    count(&r.update(1, &changed_late));
    count(&r.update(1, &from_as("203.0.113.0/24", "192.168.100.1", 65001)));
    let gone: ipnet::Ipv4Net = format!("100.{}.{}.0/24", (n - 2) / 256, (n - 2) % 256).parse().expect("net");
    count(&r.update(1, &Update { withdrawn: vec![gone], ..Default::default() }));
    let mut eor = false;
    for _ in 0..10 {
        let ch = r.sync_next(2);
        count(&ch);
        eor |= sent_to(&ch, 2).iter().any(|u| u.is_end_of_rib() == Some(Afi::Ipv4));
        if !r.syncing(2) {
            break;
        }
    }
    assert!(eor && !r.syncing(2));
    assert_eq!(sent.len(), n as usize, "every prefix but the withdrawn one, plus the new one");
    assert_eq!(sent[&"100.0.0.0/24".parse().expect("net")], 2, "sent, changed, sent again");
    assert_eq!(sent[&late.parse().expect("net")], 1, "sent once, by the dump, as it was then");
    assert!(!sent.contains_key(&gone));
    assert_eq!(r.advertised(2), n as usize);
    // The dump sent the late prefix with the MED it had by then.
    let med = r.adj_out[&2].get(&net(&late)).map(|a| a.med);
    assert_eq!(med, Some(Some(7)));
}

/// RFC 4724 §4.1: after our own restart nothing goes out, our own routes included, until the
/// deferral ends; then every peer that came up meanwhile gets the table and End-of-RIB.
#[test]
fn after_our_restart_exports_wait_for_the_end_of_the_deferral() {
    let mut r = mesh_rib();
    r.defer();
    let ch = r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    assert!(ch.out.is_empty());
    assert!(r.peer_up(1, &[Afi::Ipv4]).out.is_empty());
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    assert!(ch.out.is_empty() && !ch.loc.is_empty(), "learned and selected, not sent");
    assert!(r.peer_up(2, &[Afi::Ipv4]).out.is_empty());
    assert!(r.deferring());
    let ch = r.end_deferral();
    assert!(!r.deferring());
    assert_eq!(prefixes(&sent_to(&ch, 1)), ["10.244.1.0/26"]);
    assert_eq!(prefixes(&sent_to(&ch, 2)), ["10.244.1.0/26"], "iBGP routes are not passed to iBGP peers");
    for p in [1, 2] {
        assert_eq!(sent_to(&ch, p).last().and_then(|u| u.is_end_of_rib()), Some(Afi::Ipv4));
    }
}

#[test]
fn end_of_rib_purges_only_its_own_familys_stale_routes() {
    let mut r = mesh_rib();
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let v6 = Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Igp)),
            Attr::new(AttrValue::AsPath(vec![])),
            Attr::new(AttrValue::MpReach {
                afi: Afi::Ipv6,
                next_hop: crate::wire::NextHopAddr::V6 { global: "fd00::1".parse().expect("ip"), link_local: None },
                nlri: vec![net("fd00:2::/64")],
            }),
        ],
        ..Default::default()
    };
    r.update(1, &v6);
    r.peer_down(1, true);
    r.peer_up(1, &[Afi::Ipv4, Afi::Ipv6]);
    r.update(1, &Update::end_of_rib(Afi::Ipv4));
    assert!(r.best(&net("10.244.2.0/26")).is_none());
    assert!(r.best(&net("fd00:2::/64")).is_some() && r.has_stale(1));
    r.update(1, &Update::end_of_rib(Afi::Ipv6));
    assert!(!r.has_stale(1) && r.best(&net("fd00:2::/64")).is_none());
}

#[test]
fn the_ipv6_loc_rib_is_the_loc_rib_s_ipv6_part() {
    let mut r = mesh_rib();
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let v6 = |prefix: &str, nh: &str| Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Igp)),
            Attr::new(AttrValue::AsPath(vec![])),
            Attr::new(AttrValue::MpReach {
                afi: Afi::Ipv6,
                next_hop: crate::wire::NextHopAddr::V6 { global: nh.parse().expect("ip"), link_local: None },
                nlri: vec![net(prefix)],
            }),
        ],
        ..Default::default()
    };
    r.update(1, &v6("fd00:2::/64", "fd00::1"));
    r.update(2, &v6("fd00:2::/64", "fd00::2"));
    r.update(2, &v6("fd00:3::/64", "fd00::2"));
    r.originate(net("fd00:1::/64"), PathAttrs::local(ME));
    let mut all: Vec<(IpNet, From)> =
        r.loc_rib().filter(|(p, _, _)| matches!(p, IpNet::V6(_))).map(|(p, f, _)| (p, f)).collect();
    let mut six: Vec<(IpNet, From)> = r.loc_rib6(&|_: &IpNet| true).map(|(p, f, _)| (p, f)).collect();
    all.sort_by_key(|(p, _)| *p);
    six.sort_by_key(|(p, _)| *p);
    assert_eq!(six.len(), 3, "each prefix once, ours included: {six:?}");
    assert_eq!(six, all);
}

#[test]
fn a_new_policy_judges_the_routes_already_in_and_out() {
    let mut r = edge_node();
    // Outside the pool, an external route is taken; a mesh route there is not exported.
    r.update(2, &from_as("10.245.1.0/24", "192.168.100.1", 65001));
    assert!(r.best(&net("10.245.1.0/24")).is_some());
    let ch = r.update(1, &route("10.245.9.0/26", "192.168.100.101", vec![]));
    assert!(sent_to(&ch, 2).is_empty() && sent_to(&ch, 3).is_empty());
    assert!(!r.refused_by_policy(2));
    // A second pool covers both: the external route is refused and leaves the table, the
    // mesh route is now the cluster's and goes out.
    let mut policy = r.policy.clone();
    policy.pools.push(net("10.245.0.0/16"));
    let ch = r.set_policy(policy.clone());
    assert!(r.best(&net("10.245.1.0/24")).is_none());
    assert!(ch.loc.iter().any(|(p, b)| *p == net("10.245.1.0/24") && b.is_none()), "{:?}", ch.loc);
    assert_eq!(r.rejected_routes(2), [(net("10.245.1.0/24"), Rejected::InsidePool)]);
    assert!(r.refused_by_policy(2), "its peer is to be asked again when the policy changes");
    for to in [2, 3] {
        assert_eq!(prefixes(&sent_to(&ch, to)), ["10.245.9.0/26"], "to {to}");
    }
    // The same policy again changes nothing.
    let ch = r.set_policy(policy.clone());
    assert!(ch.out.is_empty() && ch.loc.is_empty());
    // The pool goes: its route is withdrawn where it went.
    policy.pools.pop();
    let ch = r.set_policy(policy);
    for to in [2, 3] {
        let u = sent_to(&ch, to);
        let gone: Vec<String> = u.iter().flat_map(|u| u.withdrawn.iter().map(|p| p.to_string())).collect();
        assert_eq!(gone, ["10.245.9.0/26"], "to {to}");
        assert!(prefixes(&u).is_empty(), "to {to}");
    }
}

const ME6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0x192, 0x168, 100, 0, 0, 0, 0x100);

fn dual(addr: &str) -> PeerInfo {
    PeerInfo { local_addr6: Some(ME6), ..peer(addr, AS, false) }
}

#[test]
fn ipv6_blocks_go_in_mp_reach_with_our_ipv6_next_hop_and_only_where_negotiated() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, dual("192.168.100.101"));
    r.add_peer(2, dual("192.168.200.101"));
    r.originate(net("10.244.1.0/26"), PathAttrs::local(ME));
    r.originate(net("fd00:10:244::/122"), PathAttrs::local(ME));
    // Peer 1 negotiated both families: the IPv6 block travels in MP_REACH_NLRI (RFC 4760),
    // with no NEXT_HOP attribute, then one End-of-RIB per family.
    let ch = r.peer_up(1, &[Afi::Ipv4, Afi::Ipv6]);
    let u = sent_to(&ch, 1);
    let v6 = u.iter().find(|u| u.get(code::MP_REACH).is_some()).expect("an IPv6 announcement");
    assert_eq!(v6.get(code::NEXT_HOP), None);
    assert!(v6.nlri.is_empty());
    let want = AttrValue::MpReach {
        afi: Afi::Ipv6,
        next_hop: crate::wire::update::NextHopAddr::V6 { global: ME6, link_local: None },
        nlri: vec![net("fd00:10:244::/122")],
    };
    assert_eq!(v6.get(code::MP_REACH), Some(&want));
    assert_eq!(v6.get(code::LOCAL_PREF), Some(&AttrValue::LocalPref(100)));
    let eors: Vec<_> = u.iter().filter_map(|u| u.is_end_of_rib()).collect();
    assert_eq!(eors, vec![Afi::Ipv4, Afi::Ipv6]);
    // It survives the wire both ways.
    let mut b = Vec::new();
    Message::Update((*v6).clone()).encode(&Ctx::default(), &mut b);
    let (back, _) = crate::wire::decode(&b, &Ctx::default()).expect("decodes").expect("one message");
    assert_eq!(back, Message::Update((*v6).clone()));
    // Peer 2 negotiated IPv4 only: it hears nothing of IPv6.
    let ch = r.peer_up(2, &[Afi::Ipv4]);
    assert!(sent_to(&ch, 2).iter().all(|u| u.get(code::MP_REACH).is_none() && u.get(code::MP_UNREACH).is_none()));
    // A withdrawn IPv6 block leaves in MP_UNREACH_NLRI, to peer 1 only.
    let ch = r.withdraw_local(net("fd00:10:244::/122"));
    let u = sent_to(&ch, 1);
    assert_eq!(u.len(), 1);
    assert_eq!(
        u[0].get(code::MP_UNREACH),
        Some(&AttrValue::MpUnreach { afi: Afi::Ipv6, withdrawn: vec![net("fd00:10:244::/122")] })
    );
    assert!(sent_to(&ch, 2).is_empty());
}

#[test]
fn ipv6_routes_learned_from_a_node_are_best_with_their_ipv6_next_hop() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, dual("192.168.100.101"));
    r.peer_up(1, &[Afi::Ipv4, Afi::Ipv6]);
    let nh: std::net::Ipv6Addr = "fd00:192:168:100::101".parse().expect("addr");
    let u = Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Igp)),
            Attr::new(AttrValue::AsPath(vec![])),
            Attr::new(AttrValue::MpReach {
                afi: Afi::Ipv6,
                next_hop: crate::wire::update::NextHopAddr::V6 {
                    global: nh,
                    link_local: Some("fe80::1".parse().expect("ll")),
                },
                nlri: vec![net("fd00:10:244::40/122")],
            }),
        ],
        ..Default::default()
    };
    let ch = r.update(1, &u);
    let (p, best) = ch.loc.first().expect("a new best");
    assert_eq!(*p, net("fd00:10:244::40/122"));
    assert_eq!(best.as_ref().expect("best").attrs.next_hop, IpAddr::V6(nh));
}

#[test]
fn reflected_ipv6_routes_near_the_size_limit_fit_4096_bytes_or_stay_back() {
    use crate::wire::update::NextHopAddr;
    let mut emitted = 0;
    for n in [900u32, 1005, 1010] {
        let mut r = Rib::new(AS, ME, Some(ip("1.1.1.1")));
        r.add_peer(1, PeerInfo { rr_client: true, ..dual("192.168.100.101") });
        r.add_peer(2, PeerInfo { rr_client: true, ..dual("192.168.100.102") });
        r.peer_up(1, &[Afi::Ipv4, Afi::Ipv6]);
        r.peer_up(2, &[Afi::Ipv4, Afi::Ipv6]);
        let u = Update {
            attrs: vec![
                Attr::new(AttrValue::Origin(Origin::Igp)),
                Attr::new(AttrValue::AsPath(vec![])),
                Attr::new(AttrValue::Communities((0..n).collect())),
                Attr::new(AttrValue::MpReach {
                    afi: Afi::Ipv6,
                    next_hop: NextHopAddr::V6 {
                        global: "fd00:192:168:100::101".parse().expect("addr"),
                        link_local: None,
                    },
                    nlri: vec![net("fd00:10:244::40/122")],
                }),
            ],
            ..Default::default()
        };
        let ch = r.update(1, &u);
        for out in sent_to(&ch, 2) {
            let len = Message::Update(out.clone()).to_bytes(&Ctx::default()).len();
            assert!(len <= crate::wire::MAX_LEN, "{n} communities: a {len}-byte UPDATE");
            emitted += usize::from(out.get(code::MP_REACH).is_some());
        }
    }
    assert!(emitted >= 1, "the smallest one is reflected");
}
