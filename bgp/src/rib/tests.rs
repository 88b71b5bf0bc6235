//! RIB tests: origination, the decision process, iBGP and route-reflection export rules, loop
//! detection, eBGP export, and the graceful-restart helper.

use super::*;
use crate::wire::update::code;
use crate::wire::Afi;

const AS: u32 = 64512;
const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("ip")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("net")
}

fn peer(addr: &str, asn: u32, client: bool) -> PeerInfo {
    PeerInfo { addr: IpAddr::V4(ip(addr)), router_id: ip(addr), asn, rr_client: client, local_addr: ME }
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
    r.peer_up(1, &[]);
    r.peer_up(2, &[]);
    let ch = r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    assert_eq!(ch.loc.len(), 1, "learned");
    assert!(sent_to(&ch, 2).is_empty(), "not re-advertised to another iBGP peer");
    let best = &r.loc_rib()[&net("10.244.2.0/26")];
    assert_eq!(best.from, From::Peer(1));
    assert_eq!(best.attrs.next_hop, IpAddr::V4(ip("192.168.100.101")));
}

#[test]
fn withdrawal_removes_the_route() {
    let mut r = mesh_rib();
    r.peer_up(1, &[]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let IpNet::V4(p) = net("10.244.2.0/26") else { panic!() };
    let ch = r.update(1, &Update { withdrawn: vec![p], ..Default::default() });
    assert_eq!(ch.loc, vec![(net("10.244.2.0/26"), None)]);
    assert!(r.loc_rib().is_empty());
}

#[test]
fn treat_as_withdraw_removes_what_the_peer_had_sent() {
    let mut r = mesh_rib();
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let mut bad = route("10.244.2.0/26", "192.168.100.101", vec![]);
    bad.treat_as_withdraw = true;
    r.update(1, &bad);
    assert!(r.loc_rib().is_empty());
}

fn reflector() -> Rib {
    let mut r = Rib::new(AS, ME, Some(ip("1.1.1.1")));
    r.add_peer(1, peer("192.168.100.101", AS, true));
    r.add_peer(2, peer("192.168.200.101", AS, true));
    r.add_peer(3, peer("192.168.100.50", AS, false));
    r.add_peer(4, peer("192.168.100.51", AS, false));
    for p in 1..=4 {
        r.peer_up(p, &[]);
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
    assert!(r.loc_rib().is_empty());
}

#[test]
fn ebgp_routes_with_our_as_are_refused_and_exports_prepend_our_as() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.1", 65000, false));
    r.add_peer(2, peer("192.168.100.101", AS, false));
    r.peer_up(1, &[]);
    r.peer_up(2, &[]);
    let looped =
        route("10.1.0.0/16", "192.168.100.1", vec![AttrValue::AsPath(vec![AsSegment::sequence(vec![65000, AS])])]);
    r.update(1, &looped);
    assert!(r.loc_rib().is_empty());
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
fn decision_process_order() {
    let mut r = Rib::new(AS, ME, None);
    r.add_peer(1, peer("192.168.100.101", AS, false));
    r.add_peer(2, peer("192.168.100.102", AS, false));
    let p = "10.9.0.0/16";
    let best = |r: &Rib| r.loc_rib()[&net(p)].from;
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
    assert_eq!(r.loc_rib()[&net("10.9.0.0/16")].from, From::Peer(2));
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib() {
    let mut r = mesh_rib();
    r.peer_up(1, &[]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    r.update(1, &route("10.244.7.0/26", "192.168.100.101", vec![]));
    let ch = r.peer_down(1, true);
    assert!(ch.loc.is_empty(), "stale routes stay in the FIB");
    assert!(r.has_stale(1));
    // The peer comes back and re-announces only one of them, then End-of-RIB.
    r.peer_up(1, &[]);
    r.update(1, &route("10.244.2.0/26", "192.168.100.101", vec![]));
    let ch = r.update(1, &Update::end_of_rib(Afi::Ipv4));
    assert_eq!(ch.loc, vec![(net("10.244.7.0/26"), None)]);
    assert!(r.loc_rib().contains_key(&net("10.244.2.0/26")));
    assert!(!r.has_stale(1));
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
    assert!(r.loc_rib().is_empty());
}
