use super::*;
use encap::{checksum, udp};
use etherparse::PacketBuilder;

const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);
const POD: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const REMOTE: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);
const HOP: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

fn udp_packet(src: End<Ipv4Addr>, dst: End<Ipv4Addr>) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut v, b"a datagram")
        .expect("build");
    v
}

fn tcp_packet(src: End<Ipv4Addr>, dst: End<Ipv4Addr>, syn: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src.0.octets(), dst.0.octets(), 64).tcp(src.1, dst.1, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(5) };
    b.write(&mut v, b"some bytes of a stream").expect("build");
    v
}

fn echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16, request: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv4(src.octets(), dst.octets(), 64);
    let b = if request { b.icmpv4_echo_request(id, 7) } else { b.icmpv4_echo_reply(id, 7) };
    b.write(&mut v, b"ping payload").expect("build");
    v
}

/// `ip` with every checksum checked: the IPv4 header's, and TCP's, UDP's or ICMP's.
fn ends(p: &[u8]) -> (End<Ipv4Addr>, End<Ipv4Addr>) {
    let ip = ipv4::Packet::new_checked(p).expect("IPv4");
    assert!(ip.verify_checksum(), "IPv4 checksum");
    let l4 = ip.payload();
    match ip.protocol() {
        ipv4::Protocol::Udp => {
            assert!(udp::Packet::new_unchecked(l4).verify_checksum(ip.src(), ip.dst()), "UDP checksum");
        }
        ipv4::Protocol::Tcp => {
            assert!(tcp::Packet::new_unchecked(l4).verify_checksum(ip.src(), ip.dst()), "TCP checksum");
        }
        _ => assert_eq!(checksum::checksum(l4), 0, "ICMP checksum"),
    }
    let p = parse(p).expect("L4");
    (p.src, p.dst)
}

#[test]
fn udp_leaves_as_the_node_and_its_answer_finds_the_pod() {
    let nat = Nat::default();
    let mut out = udp_packet((POD, 40000), (REMOTE, 53));
    assert_eq!(nat.outbound(&mut out, NODE, false), Ok(Out::Masqueraded));
    let ((src, port), dst) = ends(&out);
    assert_eq!((src, dst), (NODE, (REMOTE, 53)));
    assert!(PORTS.contains(&port), "{port}");
    // The same flow keeps its port.
    let mut again = udp_packet((POD, 40000), (REMOTE, 53));
    nat.outbound(&mut again, NODE, false).expect("known flow");
    assert_eq!(ends(&again).0, (NODE, port));
    let mut back = udp_packet((REMOTE, 53), (NODE, port));
    assert_eq!(nat.inbound(&mut back, NODE, false), Some(Ok(())));
    assert_eq!(ends(&back), ((REMOTE, 53), (POD, 40000)));
    assert_eq!(nat.len(), 1);
}

#[test]
fn a_udp_datagram_without_a_checksum_keeps_none() {
    let nat = Nat::default();
    let mut out = udp_packet((POD, 40000), (REMOTE, 53));
    out[26..28].copy_from_slice(&[0, 0]);
    nat.outbound(&mut out, NODE, false).expect("masqueraded");
    assert_eq!(&out[26..28], &[0, 0]);
}

#[test]
fn tcp_both_ways_with_full_and_partial_checksums() {
    let nat = Nat::default();
    let mut syn = tcp_packet((POD, 45000), (REMOTE, 80), true);
    nat.outbound(&mut syn, NODE, false).expect("masqueraded");
    let ((_, port), _) = ends(&syn);
    let mut synack = tcp_packet((REMOTE, 80), (NODE, port), false);
    assert_eq!(nat.inbound(&mut synack, NODE, false), Some(Ok(())));
    assert_eq!(ends(&synack).1, (POD, 45000));
    // An offloaded super-packet: its checksum holds the pseudo-header sum, which follows
    // the new source.
    let mut sup = tcp_packet((POD, 45000), (REMOTE, 80), false);
    tcp::Packet::new_unchecked(&mut sup[20..]).fill_partial_checksum(POD, REMOTE);
    nat.outbound(&mut sup, NODE, true).expect("masqueraded");
    let mut expected = sup.clone();
    tcp::Packet::new_unchecked(&mut expected[20..]).fill_partial_checksum(NODE, REMOTE);
    assert_eq!(sup, expected);
    assert_eq!(parse(&sup).expect("TCP").src, (NODE, port));
}

#[test]
fn ping_gets_an_identifier_of_the_node_and_the_reply_the_pods() {
    let nat = Nat::default();
    let mut req = echo(POD, REMOTE, 0x1234, true);
    nat.outbound(&mut req, NODE, false).expect("masqueraded");
    let ((src, id), _) = ends(&req);
    assert_eq!(src, NODE);
    assert!(PORTS.contains(&id));
    let mut reply = echo(REMOTE, NODE, id, false);
    assert_eq!(nat.inbound(&mut reply, NODE, false), Some(Ok(())));
    assert_eq!(ends(&reply).1, (POD, 0x1234));
    // An echo reply of the node's own ping (an identifier outside the range) is the kernel's.
    let mut own = echo(REMOTE, NODE, 7, false);
    assert_eq!(nat.inbound(&mut own, NODE, false), None);
    let mut own = echo(REMOTE, NODE, 62000, false);
    assert_eq!(nat.inbound(&mut own, NODE, false), None, "an identifier in the range no flow has");
}

#[test]
fn two_pods_with_the_same_port_get_two_ports_of_the_node() {
    let nat = Nat::default();
    let mut a = udp_packet((POD, 5000), (REMOTE, 53));
    let mut b = udp_packet((POD2, 5000), (REMOTE, 53));
    nat.outbound(&mut a, NODE, false).expect("a");
    nat.outbound(&mut b, NODE, false).expect("b");
    let (pa, pb) = (ends(&a).0 .1, ends(&b).0 .1);
    assert_ne!(pa, pb);
    let mut back = udp_packet((REMOTE, 53), (NODE, pb));
    nat.inbound(&mut back, NODE, false).expect("b's flow").expect("restored");
    assert_eq!(ends(&back).1, (POD2, 5000));
}

#[test]
fn what_no_flow_owns_is_dropped_or_left_to_the_kernel() {
    let nat = Nat::default();
    let mut stray = tcp_packet((REMOTE, 80), (NODE, 61001), false);
    assert_eq!(nat.inbound(&mut stray, NODE, false), Some(Err(DropReason::NatNoFlow)));
    let mut bgp = tcp_packet((HOP, 40000), (NODE, 179), false);
    assert_eq!(nat.inbound(&mut bgp, NODE, false), None, "the node's own port");
    let mut frag = udp_packet((POD, 5000), (REMOTE, 53));
    ipv4::Packet::new_unchecked(&mut frag[..]).set_frag(false, true, 0);
    assert_eq!(nat.outbound(&mut frag, NODE, false), Err(DropReason::NatFragment));
    let mut answer = udp_packet((REMOTE, 53), (NODE, 61001));
    ipv4::Packet::new_unchecked(&mut answer[..]).set_frag(false, true, 0);
    assert_eq!(nat.inbound(&mut answer, NODE, false), Some(Err(DropReason::NatFragment)), "a first fragment");
    ipv4::Packet::new_unchecked(&mut answer[..]).set_frag(false, false, 185);
    assert_eq!(nat.inbound(&mut answer, NODE, false), None, "a later one");
    let mut gre = udp_packet((POD, 5000), (REMOTE, 53));
    ipv4::Packet::new_unchecked(&mut gre[..]).set_protocol(ipv4::Protocol::Unknown(47));
    assert_eq!(nat.outbound(&mut gre, NODE, false), Err(DropReason::NatUnsupported));
    assert!(nat.is_empty());
}

/// An ICMP error from `from` to `to` quoting (the first 28 bytes of) `quoted`.
fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, kind: icmp::ErrorKind, quoted: &[u8]) -> Vec<u8> {
    let quote_len = 28.min(quoted.len());
    let mut msg = vec![0u8; icmp::HEADER_LEN + quote_len];
    msg[icmp::HEADER_LEN..].copy_from_slice(&quoted[..quote_len]);
    let n = icmp::emit_error(kind, &mut msg, quote_len);
    let mut v = Vec::new();
    let mut ip = etherparse::Ipv4Header::new(n as u16, 64, etherparse::IpNumber::ICMP, from.octets(), to.octets())
        .expect("header");
    ip.header_checksum = ip.calc_header_checksum();
    ip.write(&mut v).expect("write");
    v.extend_from_slice(&msg[..n]);
    v
}

#[test]
fn an_icmp_error_about_a_masqueraded_packet_reaches_the_pod_with_its_own_packet_quoted() {
    let nat = Nat::default();
    let mut out = udp_packet((POD, 33434), (REMOTE, 33434));
    nat.outbound(&mut out, NODE, false).expect("masqueraded");
    // The router one hop on says time exceeded, quoting the packet as it left the node.
    let mut err = icmp_error(HOP, NODE, icmp::ErrorKind::TtlExceeded, &out);
    assert_eq!(nat.inbound(&mut err, NODE, false), Some(Ok(())));
    let ip = ipv4::Packet::new_checked(&err[..]).expect("IPv4");
    assert!(ip.verify_checksum());
    assert_eq!((ip.src(), ip.dst()), (HOP, POD));
    assert_eq!(checksum::checksum(ip.payload()), 0, "ICMP checksum over the new quote");
    let q = &ip.payload()[icmp::HEADER_LEN..];
    assert_eq!(checksum::checksum(&q[..20]), 0, "the quoted header's checksum");
    let qp = parse(q).expect("quoted UDP");
    assert_eq!((qp.src, qp.dst), ((POD, 33434), (REMOTE, 33434)));
    // Its UDP checksum is the pod's again.
    let sent = udp_packet((POD, 33434), (REMOTE, 33434));
    assert_eq!(&q[26..28], &sent[26..28]);
    // About a port no flow has: ICMP is left to the kernel.
    let mut stray_q = udp_packet((NODE, 62000), (REMOTE, 53));
    let mut stray = icmp_error(HOP, NODE, icmp::ErrorKind::TtlExceeded, &stray_q);
    assert_eq!(nat.inbound(&mut stray, NODE, false), None);
    // About the node's own traffic: the kernel's.
    stray_q = udp_packet((NODE, 40000), (REMOTE, 53));
    let mut own = icmp_error(HOP, NODE, icmp::ErrorKind::NetUnreachable, &stray_q);
    assert_eq!(nat.inbound(&mut own, NODE, false), None);
}

#[test]
fn a_pods_icmp_error_about_an_answer_leaves_as_the_nodes() {
    let nat = Nat::default();
    let mut out = udp_packet((POD, 40000), (REMOTE, 53));
    nat.outbound(&mut out, NODE, false).expect("masqueraded");
    let port = ends(&out).0 .1;
    let mut back = udp_packet((REMOTE, 53), (NODE, port));
    nat.inbound(&mut back, NODE, false).expect("flow").expect("restored");
    // The pod closed its socket: port unreachable, quoting the answer as the pod got it.
    let mut err = icmp_error(POD, REMOTE, icmp::ErrorKind::HostUnreachable, &back);
    assert_eq!(nat.outbound(&mut err, NODE, false), Ok(Out::Masqueraded));
    let ip = ipv4::Packet::new_checked(&err[..]).expect("IPv4");
    assert!(ip.verify_checksum());
    assert_eq!((ip.src(), ip.dst()), (NODE, REMOTE));
    assert_eq!(checksum::checksum(ip.payload()), 0);
    let qp = parse(&ip.payload()[icmp::HEADER_LEN..]).expect("quoted UDP");
    assert_eq!((qp.src, qp.dst), ((REMOTE, 53), (NODE, port)));
    // An error about nothing the node masqueraded cannot be made to look like the node's.
    let other = udp_packet((REMOTE, 53), (POD, 1));
    let mut err = icmp_error(POD, REMOTE, icmp::ErrorKind::HostUnreachable, &other);
    assert_eq!(nat.outbound(&mut err, NODE, false), Err(DropReason::NatNoFlow));
}

#[test]
fn a_flow_the_outside_opens_is_answered_as_it_is() {
    let nat = Nat::default();
    let syn = tcp_packet((REMOTE, 50000), (POD, 80), true);
    nat.note_inbound::<Ipv4Addr>(&syn);
    let mut answer = tcp_packet((POD, 80), (REMOTE, 50000), false);
    let before = answer.clone();
    assert_eq!(nat.outbound(&mut answer, NODE, false), Ok(Out::Untouched));
    assert_eq!(answer, before);
    // And a ping from outside is answered by the pod itself.
    let mut reply = echo(POD, REMOTE, 9, false);
    assert_eq!(nat.outbound(&mut reply, NODE, false), Ok(Out::Untouched));
}

#[test]
fn one_pod_cannot_take_the_whole_table_and_ports_run_out_per_destination() {
    let nat = Nat::default();
    let n = PORTS.len() as u16;
    for i in 0..n {
        let mut p = udp_packet((POD, 1 + i), (REMOTE, 53));
        nat.outbound(&mut p, NODE, false).expect("a port is free");
    }
    let mut p = udp_packet((POD, n + 1), (REMOTE, 53));
    assert_eq!(nat.outbound(&mut p, NODE, false), Err(DropReason::NatPortsExhausted));
    // Another destination has every port free.
    let mut p = udp_packet((POD, n + 1), (REMOTE, 54));
    assert_eq!(nat.outbound(&mut p, NODE, false), Ok(Out::Masqueraded));
    for i in 0..MAX_FLOWS_PER_POD as u16 {
        let mut p = udp_packet((POD2, 1 + i % 1000), (Ipv4Addr::from(0x0800_0000 + u32::from(i / 1000)), 53));
        nat.outbound(&mut p, NODE, false).expect("within the pod's share");
    }
    let mut p = udp_packet((POD2, 1), (REMOTE, 53));
    assert_eq!(nat.outbound(&mut p, NODE, false), Err(DropReason::NatTableFull));
}

#[test]
fn idle_flows_go_after_their_protocols_time() {
    let mut t = Table::default();
    let flow = |proto, port, state| {
        let key = Inside { proto, pod: (POD, port), remote: (REMOTE, 53) };
        let outside = Outside { proto, node: (NODE, 61000 + port), remote: (REMOTE, 53) };
        (key, Flow { outside: Some(outside), seen: 0, state })
    };
    for (k, f) in [
        flow(Proto::Udp, 1, 0),
        flow(Proto::Udp, 2, ANSWERED),
        flow(Proto::Tcp, 3, ANSWERED),
        flow(Proto::Tcp, 4, ANSWERED | RESET),
    ] {
        t.insert(k, f);
    }
    t.expire(UDP_UNANSWERED + 1);
    let left = |t: &Table<Ipv4Addr>| {
        let mut v: Vec<u16> = t.flows.keys().map(|k| k.pod.1).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(left(&t), vec![2, 3], "unanswered UDP and a reset connection went");
    t.expire(UDP_ANSWERED + 1);
    assert_eq!(left(&t), vec![3]);
    t.expire(TCP_ESTABLISHED + 1);
    assert!(t.flows.is_empty() && t.back.is_empty() && t.per_pod.is_empty());
}

#[test]
fn policy_masquerades_from_its_pools_to_outside_every_pool() {
    let p = NatPolicy {
        masquerade: vec!["10.244.0.0/16".parse().expect("net")],
        pools: vec!["10.244.0.0/16".parse().expect("net"), "10.245.0.0/16".parse().expect("net")],
        ..Default::default()
    };
    assert!(p.applies(POD, REMOTE));
    assert!(!p.applies(POD, Ipv4Addr::new(10, 245, 0, 1)), "another pool");
    assert!(!p.applies(POD, POD2), "its own pool");
    assert!(!p.applies(Ipv4Addr::new(10, 245, 0, 1), REMOTE), "a pool without natOutgoing");
    assert!(!NatPolicy::default().applies(POD, REMOTE));
}

const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x100, 0, 0, 0, 0x100);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, 1);
const REMOTE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x200, 0, 0, 0, 1);
const HOP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x100, 0, 0, 0, 1);

fn udp6(src: End<Ipv6Addr>, dst: End<Ipv6Addr>) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv6(src.0.octets(), dst.0.octets(), 64)
        .udp(src.1, dst.1)
        .write(&mut v, b"a datagram")
        .expect("build");
    v
}

fn tcp6(src: End<Ipv6Addr>, dst: End<Ipv6Addr>) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv6(src.0.octets(), dst.0.octets(), 64).tcp(src.1, dst.1, 1000, 64240).syn();
    b.write(&mut v, b"some bytes of a stream").expect("build");
    v
}

fn echo6(src: Ipv6Addr, dst: Ipv6Addr, id: u16, request: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = PacketBuilder::ipv6(src.octets(), dst.octets(), 64);
    let b = if request { b.icmpv6_echo_request(id, 7) } else { b.icmpv6_echo_reply(id, 7) };
    b.write(&mut v, b"ping payload").expect("build");
    v
}

/// The ends of IPv6 packet `p`, its upper-layer checksum checked over the pseudo-header.
fn ends6(p: &[u8]) -> (End<Ipv6Addr>, End<Ipv6Addr>) {
    let ip = ipv6::Packet::new_checked(p).expect("IPv6");
    let l4 = ip.payload();
    let sum = ipv6::pseudo_header_sum(ip.src(), ip.dst(), ip.next_header(), l4.len()) + checksum::sum(l4);
    assert_eq!(checksum::finish(sum), 0, "checksum of next header {}", ip.next_header());
    let p = parse(p).expect("L4");
    (p.src, p.dst)
}

#[test]
fn ipv6_udp_tcp_and_ping_leave_as_the_node_and_come_back_to_the_pod() {
    let nat = Nat::default();
    let mut out = udp6((POD6, 40000), (REMOTE6, 53));
    assert_eq!(nat.outbound(&mut out, NODE6, false), Ok(Out::Masqueraded));
    let ((src, port), dst) = ends6(&out);
    assert_eq!((src, dst), (NODE6, (REMOTE6, 53)));
    assert!(PORTS.contains(&port));
    let mut back = udp6((REMOTE6, 53), (NODE6, port));
    assert_eq!(nat.inbound(&mut back, NODE6, false), Some(Ok(())));
    assert_eq!(ends6(&back), ((REMOTE6, 53), (POD6, 40000)));

    let mut syn = tcp6((POD6, 45000), (REMOTE6, 80));
    nat.outbound(&mut syn, NODE6, false).expect("masqueraded");
    let ((_, tport), _) = ends6(&syn);
    let mut synack = tcp6((REMOTE6, 80), (NODE6, tport));
    assert_eq!(nat.inbound(&mut synack, NODE6, false), Some(Ok(())));
    assert_eq!(ends6(&synack).1, (POD6, 45000));
    // An offloaded super-packet: the pseudo-header sum follows the new source.
    let mut sup = tcp6((POD6, 45000), (REMOTE6, 80));
    let partial = |p: &mut [u8], src| {
        let len = p.len() - 40;
        let s = !checksum::finish(ipv6::pseudo_header_sum(src, REMOTE6, 6, len));
        p[40 + 16..40 + 18].copy_from_slice(&s.to_be_bytes());
    };
    partial(&mut sup, POD6);
    nat.outbound(&mut sup, NODE6, true).expect("masqueraded");
    let mut expected = sup.clone();
    partial(&mut expected, NODE6);
    assert_eq!(sup, expected);

    // ICMPv6 echo: the checksum covers the addresses too.
    let mut req = echo6(POD6, REMOTE6, 0x1234, true);
    nat.outbound(&mut req, NODE6, false).expect("masqueraded");
    let ((src, id), _) = ends6(&req);
    assert!(src == NODE6 && PORTS.contains(&id));
    let mut reply = echo6(REMOTE6, NODE6, id, false);
    assert_eq!(nat.inbound(&mut reply, NODE6, false), Some(Ok(())));
    assert_eq!(ends6(&reply).1, (POD6, 0x1234));
    assert_eq!(nat.len(), 3);
    // The two families' flows never meet: an IPv4 answer to the same port finds nothing.
    let mut v4 = udp_packet((REMOTE, 53), (NODE, port));
    assert_eq!(nat.inbound(&mut v4, NODE, false), Some(Err(DropReason::NatNoFlow)));
}

#[test]
fn ipv6_packet_too_big_about_a_masqueraded_flow_reaches_the_pod_with_its_own_packet() {
    let nat = Nat::default();
    let mut out = udp6((POD6, 40000), (REMOTE6, 53));
    nat.outbound(&mut out, NODE6, false).expect("masqueraded");
    // A router on the way says the datagram did not fit, to the node, quoting it.
    let mut err = vec![0u8; 40 + 8 + out.len()];
    err[48..].copy_from_slice(&out);
    let n = icmpv6::emit_error(icmpv6::ErrorKind::PacketTooBig { mtu: 1280 }, &mut err[40..], out.len(), HOP6, NODE6);
    let repr = ipv6::Repr { src: HOP6, dst: NODE6, next_header: 58, traffic_class: 0, hop_limit: 64, payload_len: n };
    repr.emit(&mut err);
    assert_eq!(nat.inbound(&mut err, NODE6, false), Some(Ok(())));
    let ((from, _), (to, _)) = ends6(&err);
    assert_eq!((from, to), (HOP6, POD6));
    assert_eq!(parse::<Ipv6Addr>(&err[48..]).expect("the quote").src, (POD6, 40000), "the quote as the pod sent it");
    // An error about no flow of ours is the kernel's.
    let mut other = err.clone();
    other[8 + 16..8 + 32].copy_from_slice(&NODE6.octets());
    other[48 + 8..48 + 24].copy_from_slice(&NODE6.octets());
    assert_eq!(nat.inbound(&mut other, NODE6, false), None);
}

#[test]
fn ipv6_fragments_and_extension_headers_are_not_translated() {
    let nat = Nat::default();
    let plain = udp6((POD6, 40000), (REMOTE6, 53));
    // The same datagram behind a fragment header (the first fragment, more to come).
    let mut frag = plain[..40].to_vec();
    frag[6] = NEXT_FRAGMENT;
    frag.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]);
    frag.extend_from_slice(&plain[40..]);
    let len = (frag.len() - 40) as u16;
    frag[4..6].copy_from_slice(&len.to_be_bytes());
    assert_eq!(nat.outbound(&mut frag.clone(), NODE6, false), Err(DropReason::NatFragment));
    // Behind a hop-by-hop options header: not read past.
    let mut hbh = plain[..40].to_vec();
    hbh[6] = 0;
    hbh.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    hbh.extend_from_slice(&plain[40..]);
    hbh[4..6].copy_from_slice(&len.to_be_bytes());
    assert_eq!(nat.outbound(&mut hbh, NODE6, false), Err(DropReason::NatUnsupported));
    // A first fragment of an answer to one of the flows' ports is dropped, not the kernel's.
    let mut out = plain.clone();
    nat.outbound(&mut out, NODE6, false).expect("masqueraded");
    let port = ends6(&out).0 .1;
    let answer = udp6((REMOTE6, 53), (NODE6, port));
    let mut first = answer[..40].to_vec();
    first[6] = NEXT_FRAGMENT;
    first.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]);
    first.extend_from_slice(&answer[40..]);
    first[4..6].copy_from_slice(&len.to_be_bytes());
    assert_eq!(nat.inbound(&mut first, NODE6, false), Some(Err(DropReason::NatFragment)));
    assert_eq!(nat.len(), 1);
}
