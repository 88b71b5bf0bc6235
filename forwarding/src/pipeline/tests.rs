//! Pipeline tests: real captured frames and hand-built ones, no sockets.

use super::*;
use crate::fib::{NextHop6, Route, Route6, Tunnels};
use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket};
use std::net::{IpAddr, Ipv6Addr};

const NODE_A: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);
const NODE_B: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 101);
const POD_A1: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_A2: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 3);
const POD_B1: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 2);
const UPLINK: IfaceId = IfaceId(0);
const CALI_A1: IfaceId = IfaceId(1);
const CALI_A2: IfaceId = IfaceId(2);
const UPLINK_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xa0]);
/// In the capture, the pod is 02::01 and its peer 02::02; we play the peer.
const POD_A1_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const CALI_A1_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);
const CALI_A2_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x12]);
const POD_A2_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x13]);
const NODE_B_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xb0]);
const UNDERLAY_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);
const UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const NODE_C: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 101);
const POD_C1: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 1);

struct Lab {
    fib: Fib,
    neigh: NeighTable,
    ifaces: Interfaces,
    counters: Counters,
    nat: Nat,
}

fn lab_routes() -> Vec<Route> {
    let r = |p: &str, nh| Route { prefix: p.parse().expect("net"), next_hop: nh };
    vec![
        r("192.168.100.0/24", NextHop::Local { iface: UPLINK }),
        r("192.168.100.100/32", NextHop::Host),
        r("10.244.1.0/26", NextHop::Blackhole),
        r("10.244.1.2/32", NextHop::Local { iface: CALI_A1 }),
        r("10.244.1.3/32", NextHop::Local { iface: CALI_A2 }),
        r("10.244.2.0/26", NextHop::Direct { iface: UPLINK, gateway: NODE_B }),
        r("10.244.4.0/26", NextHop::Direct { iface: UPLINK, gateway: Ipv4Addr::new(192, 168, 100, 102) }),
        r("10.244.3.0/26", NextHop::Ipip { iface: UPLINK, gateway: UNDERLAY, remote: NODE_C }),
        r("10.244.5.0/26", NextHop::Vxlan { iface: UPLINK, gateway: UNDERLAY, remote: NODE_C }),
    ]
}

fn lab_tunnels() -> Tunnels {
    Tunnels {
        ttl: 64,
        peers: [NODE_B, NODE_C].into_iter().collect(),
        allowed: vec![],
        local_pods: vec![POD_A1, POD_A2],
        local_pods6: vec![],
        nat: Default::default(),
    }
}

fn lab() -> Lab {
    let ifaces = Interfaces::new(vec![
        Interface {
            name: "eth0".into(),
            ifindex: 2,
            mac: UPLINK_MAC,
            mtu: 1500,
            role: IfaceRole::Uplink { addr: "192.168.100.100/24".parse().expect("net") },
        },
        Interface {
            name: "calia1".into(),
            ifindex: 3,
            mac: CALI_A1_MAC,
            mtu: 1500,
            role: IfaceRole::Pod { addr: POD_A1, addr6: None },
        },
        Interface {
            name: "calia2".into(),
            ifindex: 4,
            mac: CALI_A2_MAC,
            mtu: 1500,
            role: IfaceRole::Pod { addr: POD_A2, addr6: None },
        },
    ]);
    let fib = Fib::build(&lab_routes()).with_tunnels(lab_tunnels());
    let mut neigh = NeighTable::default();
    neigh.insert(Neighbour { iface: CALI_A2, ip: POD_A2.into(), mac: POD_A2_MAC });
    neigh.insert(Neighbour { iface: CALI_A1, ip: POD_A1.into(), mac: POD_A1_MAC });
    neigh.insert(Neighbour { iface: UPLINK, ip: NODE_B.into(), mac: NODE_B_MAC });
    neigh.insert(Neighbour { iface: UPLINK, ip: UNDERLAY.into(), mac: UNDERLAY_MAC });
    let counters = Counters::new(ifaces.len());
    Lab { fib, neigh, ifaces, counters, nat: Nat::default() }
}

/// Frames of `fixtures/linux-ping.pcap`: ARP request, ARP reply, echo request, echo reply.
fn captured(i: usize) -> Vec<u8> {
    pcap_frame(include_bytes!("../../../fixtures/linux-ping.pcap"), i)
}

/// Frame `i` of a pcap file.
fn pcap_frame(bytes: &[u8], i: usize) -> Vec<u8> {
    let mut r = pcap_file::pcap::PcapReader::new(bytes).expect("pcap header");
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        let p = p.expect("pcap record");
        if n == i {
            return p.data.into_owned();
        }
        n += 1;
    }
    panic!("fixture has no frame {i}");
}

const BUF: usize = 2048;
const HEADROOM: usize = 64;

impl Lab {
    fn ctx(&self) -> Context<'_> {
        Context { fib: &self.fib, neigh: &self.neigh, ifaces: &self.ifaces, nat: &self.nat, gso: None, packets: 1 }
    }

    /// Runs a frame and, for a `Fragment` verdict, the fragmentation step; returns every
    /// frame that would be sent.
    fn run_all(&self, in_if: IfaceId, frame: &[u8]) -> Vec<(Verdict, Vec<u8>)> {
        let mut buf = vec![0u8; BUF];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
        let v = process(&self.ctx(), &self.counters, in_if, &mut buf, span);
        let mut out = Vec::new();
        if let Verdict::Fragment(job) = v {
            let mut scratch = vec![0u8; BUF];
            fragment(&self.ctx(), &self.counters, &buf, job, &mut scratch, |v, b| {
                if let Verdict::Transmit { span, .. } = v {
                    out.push((v, b[span.start..span.end].to_vec()));
                }
            });
        }
        out
    }

    fn run_on(&self, in_if: IfaceId, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; BUF];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let ctx =
            Context { fib: &self.fib, neigh: &self.neigh, ifaces: &self.ifaces, nat: &self.nat, gso: None, packets: 1 };
        let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
        let v = process(&ctx, &self.counters, in_if, &mut buf, span);
        let out = match v {
            Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } => buf[span.start..span.end].to_vec(),
            _ => Vec::new(),
        };
        (v, out)
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.counters.drops(r)
    }
}

fn echo(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let b =
        PacketBuilder::ethernet2(src_mac.0, dst_mac.0).ipv4(src.octets(), dst.octets(), ttl).icmpv4_echo_request(7, 1);
    let payload = [0xabu8; 56];
    let mut v = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut v, &payload).expect("build");
    v
}

/// Sets or clears DF and fixes the header checksum.
fn with_df(mut frame: Vec<u8>, df: bool) -> Vec<u8> {
    if df {
        frame[20] |= 0x40;
    } else {
        frame[20] &= !0x40;
    }
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = encap::checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    frame
}

fn from_pod_a1(dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    echo(POD_A1_MAC, CALI_A1_MAC, POD_A1, dst, ttl)
}

#[test]
fn forwards_captured_ping_to_pod_on_same_node() {
    let l = lab();
    let frame = captured(2);
    let (v, out) = l.run_on(CALI_A1, &frame);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A2, learn: None, .. }), "{v:?}");
    // Only the Ethernet addresses, TTL and checksum change.
    assert_eq!(&out[..6], &POD_A2_MAC.0);
    assert_eq!(&out[6..12], &CALI_A2_MAC.0);
    let ip = ipv4::Packet::new_checked(&out[14..]).expect("ip");
    assert_eq!(ip.ttl(), 63);
    assert!(ip.verify_checksum());
    assert_eq!(&out[26..], &frame[26..]);
    assert_eq!(&out[12..22], &frame[12..22]);
    l.counters.rx(1, 1); // counters untouched by forwarding itself
    assert!(DropReason::ALL.iter().all(|r| l.drops(*r) == 0));
}

#[test]
fn forwards_to_pod_on_other_node_via_its_address() {
    let l = lab();
    let (v, out) = l.run_on(CALI_A1, &from_pod_a1(POD_B1, 64));
    assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
    let p = SlicedPacket::from_ethernet(&out).expect("etherparse");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else { panic!("no ethernet") };
    assert_eq!(eth.destination(), NODE_B_MAC.0);
    assert_eq!(eth.source(), UPLINK_MAC.0);
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else { panic!("no ip") };
    assert_eq!(ip.header().ttl(), 63);
    assert_eq!(ip.header().destination_addr(), POD_B1);
    assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
}

#[test]
fn forwards_from_uplink_to_local_pod() {
    let l = lab();
    let frame = echo(NODE_B_MAC, UPLINK_MAC, POD_B1, POD_A1, 63);
    let (v, out) = l.run_on(UPLINK, &frame);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    assert_eq!(&out[..6], &POD_A1_MAC.0);
}

#[test]
fn unknown_next_hop_asks_for_resolution() {
    let l = lab();
    let (v, _) = l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 244, 4, 9), 64));
    assert_eq!(
        v,
        Verdict::Resolve {
            iface: UPLINK,
            next_hop: Ipv4Addr::new(192, 168, 100, 102).into(),
            span: Span { start: HEADROOM, end: HEADROOM + 98 }
        }
    );
}

#[test]
fn ttl_1_gets_time_exceeded_from_the_node() {
    for ttl in [0, 1] {
        let l = lab();
        let frame = from_pod_a1(POD_B1, ttl);
        let (v, out) = l.run_on(CALI_A1, &frame);
        assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
        let p = SlicedPacket::from_ethernet(&out).expect("etherparse");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("no ip") };
        assert_eq!(ip.header().source_addr(), NODE_A);
        assert_eq!(ip.header().destination_addr(), POD_A1);
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!("no icmp") };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
        // The whole datagram is quoted (it is shorter than 548 bytes), checksum valid.
        assert_eq!(icmp.payload(), &frame[14..]);
        assert!(encap::icmp::Packet::new_checked(&out[34..]).expect("icmp").verify_checksum());
        assert_eq!(l.drops(DropReason::TtlExceeded), 1);
        assert_eq!(l.counters.icmp_errors_sent.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

#[test]
fn no_route_gets_net_unreachable() {
    let l = lab();
    let (v, out) = l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let icmp = encap::icmp::Packet::new_checked(&out[34..]).expect("icmp");
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 0));
    assert_eq!(l.drops(DropReason::NoRoute), 1);
}

#[test]
fn unused_address_in_own_block_is_blackholed() {
    let l = lab();
    let (v, _) = l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 244, 1, 40), 64));
    assert_eq!(v, Verdict::Drop(DropReason::Blackhole));
    assert_eq!(l.drops(DropReason::Blackhole), 1);
}

#[test]
fn pod_with_foreign_source_is_dropped() {
    let l = lab();
    let frame = echo(POD_A1_MAC, CALI_A1_MAC, POD_A2, POD_B1, 64);
    assert_eq!(l.run_on(CALI_A1, &frame).0, Verdict::Drop(DropReason::Spoofed));
}

#[test]
fn traffic_for_the_node_itself_is_left_to_the_kernel() {
    let l = lab();
    assert_eq!(l.run_on(CALI_A1, &from_pod_a1(NODE_A, 64)).0, Verdict::Pass);
}

#[test]
fn frames_for_other_macs_are_not_routed() {
    let l = lab();
    let frame = echo(POD_A1_MAC, MacAddr([2, 9, 9, 9, 9, 9]), POD_A1, POD_B1, 64);
    assert_eq!(l.run_on(CALI_A1, &frame).0, Verdict::Pass);
}

#[test]
fn malformed_frames_each_have_their_reason() {
    let l = lab();
    let good = captured(2);
    let mut cases: Vec<(Vec<u8>, DropReason)> =
        vec![(good[..10].to_vec(), DropReason::ShortFrame), (good[..30].to_vec(), DropReason::Ipv4Truncated)];
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    cases.push((ihl, DropReason::BadHeaderLen));
    let mut ver = good.clone();
    ver[14] = 0x55;
    cases.push((ver, DropReason::BadVersion));
    let mut len = good.clone();
    len[16..18].copy_from_slice(&1000u16.to_be_bytes());
    cases.push((len, DropReason::BadTotalLen));
    let mut sum = good.clone();
    sum[24] ^= 0xff;
    cases.push((sum, DropReason::BadChecksum));
    let mut arp = captured(0);
    arp[0..6].copy_from_slice(&CALI_A1_MAC.0);
    arp.truncate(30);
    cases.push((arp, DropReason::BadArp));
    for (frame, reason) in cases {
        assert_eq!(l.run_on(CALI_A1, &frame).0, Verdict::Drop(reason), "{reason:?}");
        assert_eq!(l.drops(reason), 1, "{reason:?}");
    }
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let l = lab();
    // A time-exceeded message from pod-a1 with TTL 1.
    let b = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv4(POD_A1.octets(), POD_B1.octets(), 1)
        .icmpv4(Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit));
    let mut frame = Vec::new();
    b.write(&mut frame, &[0u8; 28]).expect("build");
    assert_eq!(l.run_on(CALI_A1, &frame).0, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(l.counters.icmp_errors_sent.load(std::sync::atomic::Ordering::Relaxed), 0);
}

#[test]
fn too_big_with_df_gets_fragmentation_needed() {
    let mut l = lab();
    l.ifaces = Interfaces::new(
        l.ifaces
            .iter()
            .map(|(_, f)| Interface { mtu: if f.name == "eth0" { 80 } else { f.mtu }, ..f.clone() })
            .collect(),
    );
    let (v, out) = l.run_on(CALI_A1, &with_df(from_pod_a1(POD_B1, 64), true));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let icmp = encap::icmp::Packet::new_checked(&out[34..]).expect("icmp");
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    assert_eq!(icmp.rest(), [0, 0, 0, 80]);
    // Without DF it is fragmented.
    let (v, _) = l.run_on(CALI_A1, &with_df(from_pod_a1(POD_B1, 64), false));
    assert!(matches!(v, Verdict::Fragment(Fragmentation { mtu: 80, .. })), "{v:?}");
}

#[test]
fn proxy_arp_answers_for_the_pod_gateway() {
    let l = lab();
    let mut req = captured(0);
    req[38..42].copy_from_slice(&POD_GATEWAY.octets());
    let (v, out) = l.run_on(CALI_A1, &req);
    let Verdict::Transmit { iface, learn, .. } = v else { panic!("{v:?}") };
    assert_eq!(iface, CALI_A1);
    assert_eq!(learn, Some(Neighbour { iface: CALI_A1, ip: POD_A1.into(), mac: POD_A1_MAC }));
    assert_eq!(&out[..6], &POD_A1_MAC.0);
    let reply = ArpRepr::parse(&out[14..]).expect("arp");
    assert_eq!(reply.operation, Operation::Reply);
    assert_eq!(reply.sender_ip, POD_GATEWAY);
    assert_eq!(reply.sender_mac, CALI_A1_MAC);
    assert_eq!(reply.target_ip, POD_A1);
}

#[test]
fn arp_for_other_addresses_on_pod_link_is_ignored() {
    let l = lab();
    assert_eq!(l.run_on(CALI_A1, &captured(0)).0, Verdict::Pass);
}

#[test]
fn arp_reply_on_uplink_teaches_the_neighbour() {
    let l = lab();
    let reply = ArpRepr {
        operation: Operation::Reply,
        sender_mac: NODE_B_MAC,
        sender_ip: NODE_B,
        target_mac: UPLINK_MAC,
        target_ip: NODE_A,
    };
    let mut frame = vec![0u8; 42];
    ethernet::emit_header(&mut frame, UPLINK_MAC, NODE_B_MAC, EtherType::Arp);
    reply.emit(&mut frame[14..]);
    assert_eq!(
        l.run_on(UPLINK, &frame).0,
        Verdict::Learn(Neighbour { iface: UPLINK, ip: NODE_B.into(), mac: NODE_B_MAC })
    );
}

/// A gratuitous ARP (RFC 5227: the sender asks for its own address) moves a neighbour we
/// know to its new MAC, on the uplink and from a pod; one we do not know stays unknown (a
/// neighbour cannot fill the table by announcing itself).
#[test]
fn a_gratuitous_arp_moves_a_known_neighbour_only() {
    let l = lab();
    let garp = |mac: MacAddr, ip: Ipv4Addr| {
        let req = ArpRepr {
            operation: Operation::Request,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: MacAddr::ZERO,
            target_ip: ip,
        };
        let mut frame = vec![0u8; 42];
        ethernet::emit_header(&mut frame, MacAddr::BROADCAST, mac, EtherType::Arp);
        req.emit(&mut frame[14..]);
        frame
    };
    let moved = MacAddr([0x02, 0x11, 0x22, 0x33, 0x44, 0x55]);
    assert_eq!(
        l.run_on(UPLINK, &garp(moved, NODE_B)).0,
        Verdict::Learn(Neighbour { iface: UPLINK, ip: NODE_B.into(), mac: moved })
    );
    assert_eq!(l.run_on(UPLINK, &garp(NODE_B_MAC, NODE_B)).0, Verdict::Pass, "the MAC we know: nothing to learn");
    assert_eq!(l.run_on(UPLINK, &garp(moved, Ipv4Addr::new(192, 168, 100, 77))).0, Verdict::Pass);
    assert_eq!(
        l.run_on(CALI_A1, &garp(moved, POD_A1)).0,
        Verdict::Learn(Neighbour { iface: CALI_A1, ip: POD_A1.into(), mac: moved })
    );
    assert_eq!(l.run_on(CALI_A1, &garp(moved, POD_A2)).0, Verdict::Pass, "not the pod of this link");
}

#[test]
fn ipv6_and_padding_are_handled() {
    let l = lab();
    let mut v6 = captured(2);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(l.run_on(CALI_A1, &v6).0, Verdict::Pass);
    let mut padded = captured(2);
    padded.extend_from_slice(&[0u8; 20]);
    let (v, out) = l.run_on(CALI_A1, &padded);
    assert!(matches!(v, Verdict::Transmit { .. }));
    assert_eq!(out.len(), 98, "padding trimmed");
}

/// Replays every file of the fuzz corpus through the fuzz target's own checks: nothing
/// panics, and every span a verdict hands out lies inside its buffer.
#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pipeline");
    let Ok(entries) = std::fs::read_dir(&dir) else { panic!("no corpus at {}", dir.display()) };
    let mut n = 0;
    for e in entries.flatten() {
        crate::fuzzing::pipeline(&std::fs::read(e.path()).expect("read corpus file"));
        n += 1;
    }
    assert!(n >= 5, "corpus too small: {n}");
}

fn ipip_route_lab_with_mtu(mtu: u16) -> Lab {
    let mut l = lab();
    l.ifaces = Interfaces::new(
        l.ifaces
            .iter()
            .map(|(_, f)| Interface { mtu: if f.name == "eth0" { mtu } else { f.mtu }, ..f.clone() })
            .collect(),
    );
    l
}

/// A frame from node-c's side: outer NODE_C -> NODE_A around `inner` (an IPv4 packet).
fn ipip_frame(outer_src: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20];
    ethernet::emit_header(&mut f, UPLINK_MAC, UNDERLAY_MAC, EtherType::Ipv4);
    let repr = ipv4::Repr {
        src: outer_src,
        dst: NODE_A,
        protocol: ipv4::Protocol::IpIp,
        tos: 0,
        ident: 9,
        dont_frag: false,
        ttl: 63,
        payload_len: inner.len(),
    };
    repr.emit(&mut f[14..]);
    f.extend_from_slice(inner);
    f
}

#[test]
fn route_to_other_subnet_is_encapsulated_toward_node_c() {
    let l = lab();
    let frame = from_pod_a1(POD_C1, 64);
    let (v, out) = l.run_on(CALI_A1, &frame);
    assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
    // Ethernet to the underlay router, outer A -> C protocol 4, inner TTL decremented.
    assert_eq!(&out[..6], &UNDERLAY_MAC.0);
    let outer = ipv4::Packet::new_checked(&out[14..]).expect("outer");
    assert_eq!((outer.src(), outer.dst(), outer.protocol()), (NODE_A, NODE_C, ipv4::Protocol::IpIp));
    assert!(outer.verify_checksum());
    assert_eq!(outer.ttl(), 64);
    assert_eq!(usize::from(outer.total_len()), 20 + frame.len() - 14);
    let inner = ipv4::Packet::new_checked(outer.payload()).expect("inner");
    assert_eq!((inner.src(), inner.dst(), inner.ttl()), (POD_A1, POD_C1, 63));
    assert!(inner.verify_checksum());
    assert_eq!(inner.payload(), &frame[34..]);
    assert_eq!(l.counters.ipip_encapsulated.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn ipip_from_a_known_node_is_delivered_to_the_pod() {
    let l = lab();
    let inner = echo(MacAddr::ZERO, MacAddr::ZERO, POD_C1, POD_A1, 63)[14..].to_vec();
    let (v, out) = l.run_on(UPLINK, &ipip_frame(NODE_C, &inner));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    assert_eq!(&out[..6], &POD_A1_MAC.0);
    assert_eq!(&out[6..12], &CALI_A1_MAC.0);
    let ip = ipv4::Packet::new_checked(&out[14..]).expect("inner");
    assert_eq!((ip.src(), ip.dst(), ip.ttl()), (POD_C1, POD_A1, 62));
    assert!(ip.verify_checksum());
    assert_eq!(&out[34..], &inner[20..]);
}

#[test]
fn ipip_from_an_unknown_sender_is_dropped() {
    let l = lab();
    let inner = echo(MacAddr::ZERO, MacAddr::ZERO, POD_C1, POD_A1, 63)[14..].to_vec();
    let (v, _) = l.run_on(UPLINK, &ipip_frame(UNDERLAY, &inner));
    assert_eq!(v, Verdict::Drop(DropReason::IpipUnknownSource));
    assert_eq!(l.drops(DropReason::IpipUnknownSource), 1);
}

#[test]
fn our_pods_addresses_from_the_underlay_or_a_tunnel_are_spoofed() {
    let l = lab();
    // From the uplink, claiming to be pod-a1, to its neighbour pod-a2.
    let frame = echo(NODE_B_MAC, UPLINK_MAC, POD_A1, POD_A2, 63);
    assert_eq!(l.run_on(UPLINK, &frame).0, Verdict::Drop(DropReason::Spoofed));
    // Out of a tunnel from a real node, with the same lie inside.
    let inner = echo(MacAddr::ZERO, MacAddr::ZERO, POD_A1, POD_A2, 63)[14..].to_vec();
    assert_eq!(l.run_on(UPLINK, &ipip_frame(NODE_C, &inner)).0, Verdict::Drop(DropReason::Spoofed));
    assert_eq!(l.drops(DropReason::Spoofed), 2);
    // Another node's pod is fine, as before.
    let frame = echo(NODE_B_MAC, UPLINK_MAC, POD_B1, POD_A2, 63);
    assert!(matches!(l.run_on(UPLINK, &frame).0, Verdict::Transmit { iface: CALI_A2, .. }));
}

#[test]
fn ipip_with_a_broken_inner_packet_is_dropped_with_its_reason() {
    let l = lab();
    let mut inner = echo(MacAddr::ZERO, MacAddr::ZERO, POD_C1, POD_A1, 63)[14..].to_vec();
    inner[10] ^= 0xff;
    assert_eq!(l.run_on(UPLINK, &ipip_frame(NODE_C, &inner)).0, Verdict::Drop(DropReason::IpipMalformedInner));
    assert_eq!(l.run_on(UPLINK, &ipip_frame(NODE_C, &inner[..10])).0, Verdict::Drop(DropReason::IpipMalformedInner));
}

#[test]
fn pods_may_not_send_ipip() {
    let l = lab();
    let inner = echo(MacAddr::ZERO, MacAddr::ZERO, POD_A1, POD_C1, 63)[14..].to_vec();
    let mut frame = ipip_frame(POD_A1, &inner);
    // From pod-a1's veth, to node-c, encapsulated.
    frame[..6].copy_from_slice(&CALI_A1_MAC.0);
    frame[30..34].copy_from_slice(&NODE_C.octets());
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = encap::checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(l.run_on(CALI_A1, &frame).0, Verdict::Drop(DropReason::IpipFromPod));
}

#[test]
fn too_big_for_the_tunnel_with_df_gets_the_tunnel_mtu() {
    let l = lab();
    let big = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv4(POD_A1.octets(), POD_C1.octets(), 64)
        .icmpv4_echo_request(1, 1);
    let mut frame = Vec::new();
    b_write(big, &[0u8; 1472], &mut frame);
    assert_eq!(frame.len(), 14 + 1500);
    let frame = with_df(frame, true);
    let (v, out) = l.run_on(CALI_A1, &frame);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let icmp = encap::icmp::Packet::new_checked(&out[34..]).expect("icmp");
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    assert_eq!(icmp.rest(), [0, 0, 0x05, 0xc8], "mtu 1480");
    // As much of the packet is quoted as fits 576 bytes (RFC 1812 §4.3.2.3).
    assert_eq!(out.len() - 14, 576);
    assert_eq!(icmp.data(), &frame[14..14 + 548]);
    assert!(icmp.verify_checksum());
    assert_eq!(l.drops(DropReason::FragNeeded), 1);
}

/// A 1500-byte echo request with DF from `src` on `iface` towards pod-c1: too big for the
/// tunnel, so it is answered with "fragmentation needed" while that budget lasts.
fn too_big_from(src: Ipv4Addr, src_mac: MacAddr, cali_mac: MacAddr) -> Vec<u8> {
    let big = PacketBuilder::ethernet2(src_mac.0, cali_mac.0)
        .ipv4(src.octets(), POD_C1.octets(), 64)
        .icmpv4_echo_request(1, 1);
    let mut frame = Vec::new();
    b_write(big, &[0u8; 1472], &mut frame);
    with_df(frame, true)
}

#[test]
fn frag_needed_has_its_own_per_source_budget() {
    use crate::counters::{frag_slot, FRAG_TOKENS, ICMP_TOKENS};
    let l = lab();
    // Spend the shared budget with unroutable packets.
    for _ in 0..ICMP_TOKENS {
        l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64));
    }
    assert_eq!(l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64)).0, Verdict::Drop(DropReason::NoRoute));
    // Path MTU discovery still works.
    for _ in 0..FRAG_TOKENS {
        let (v, _) = l.run_on(CALI_A1, &too_big_from(POD_A1, POD_A1_MAC, CALI_A1_MAC));
        assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    }
    // pod-a1 has spent its own bucket, not pod-a2's.
    let (v, _) = l.run_on(CALI_A1, &too_big_from(POD_A1, POD_A1_MAC, CALI_A1_MAC));
    assert_eq!(v, Verdict::Drop(DropReason::FragNeeded));
    assert_ne!(frag_slot(POD_A1), frag_slot(POD_A2));
    let (v, _) = l.run_on(CALI_A2, &too_big_from(POD_A2, POD_A2_MAC, CALI_A2_MAC));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A2, .. }), "{v:?}");
    l.counters.refill_icmp();
    let (v, _) = l.run_on(CALI_A1, &too_big_from(POD_A1, POD_A1_MAC, CALI_A1_MAC));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
}

fn b_write(b: etherparse::PacketBuilderStep<etherparse::Icmpv4Header>, payload: &[u8], out: &mut Vec<u8>) {
    b.write(out, payload).expect("build");
}

#[test]
fn too_big_without_df_is_fragmented_and_reassembles() {
    let l = ipip_route_lab_with_mtu(1500);
    let big = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv4(POD_A1.octets(), POD_C1.octets(), 64)
        .icmpv4_echo_request(1, 1);
    let payload: Vec<u8> = (0..1472u32).map(|i| i as u8).collect();
    let mut frame = Vec::new();
    b_write(big, &payload, &mut frame);
    let frame = with_df(frame, false);
    let sent = l.run_all(CALI_A1, &frame);
    assert_eq!(sent.len(), 2, "two fragments");
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for (v, f) in &sent {
        assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }));
        let outer = ipv4::Packet::new_checked(&f[14..]).expect("outer");
        assert_eq!(outer.protocol(), ipv4::Protocol::IpIp);
        assert!(f.len() - 14 <= 1500, "each outer packet fits the uplink");
        let inner = ipv4::Packet::new_checked(outer.payload()).expect("inner");
        assert!(inner.verify_checksum());
        assert_eq!(inner.ttl(), 63);
        offsets.push((inner.frag_offset(), inner.more_frags()));
        data.extend_from_slice(inner.payload());
    }
    assert_eq!(offsets[0], (0, true));
    assert!(!offsets[1].1);
    assert_eq!(usize::from(offsets[1].0), sent[0].1.len() - 14 - 40);
    assert_eq!(data, frame[34..].to_vec(), "fragments carry the whole ICMP message");
}

#[test]
fn tun_mode_encapsulates_from_tunl0_and_hands_decapsulated_packets_back() {
    let raw = IfaceId(0);
    let tun = IfaceId(1);
    let ifaces = Interfaces::new(vec![
        Interface { name: "raw-ip".into(), ifindex: 0, mac: MacAddr::ZERO, mtu: 1500, role: IfaceRole::RawIpip },
        Interface { name: "tunl0".into(), ifindex: 9, mac: MacAddr::ZERO, mtu: 1480, role: IfaceRole::Tun },
    ])
    .with_node_addr(NODE_A);
    let fib = Fib::build(&[
        Route {
            prefix: "10.244.3.0/26".parse().expect("net"),
            next_hop: NextHop::Ipip { iface: raw, gateway: NODE_C, remote: NODE_C },
        },
        Route { prefix: "10.244.1.0/26".parse().expect("net"), next_hop: NextHop::Host },
    ])
    .with_tunnels(Tunnels {
        ttl: 64,
        peers: [NODE_C].into_iter().collect(),
        allowed: vec![],
        local_pods: vec![POD_A1],
        local_pods6: vec![],
        nat: Default::default(),
    });
    let neigh = NeighTable::default();
    let counters = Counters::new(2);
    let nat = Nat::default();
    let ctx = Context { fib: &fib, neigh: &neigh, ifaces: &ifaces, nat: &nat, gso: None, packets: 1 };
    let run = |in_if, pkt: &[u8]| {
        let mut buf = vec![0u8; BUF];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let v = process_l3(&ctx, &counters, in_if, &mut buf, Span { start: HEADROOM, end: HEADROOM + pkt.len() });
        let out = match v {
            Verdict::Transmit { span, .. } => buf[span.start..span.end].to_vec(),
            _ => Vec::new(),
        };
        (v, out)
    };
    // The kernel routes into tunl0 only what our pods and the node send; a pod that lies
    // about its address (someone else's pod, an underlay host) is not wrapped.
    for liar in [POD_B1, UNDERLAY, POD_A2] {
        let mut p = from_pod_a1(POD_C1, 63)[14..].to_vec();
        p[12..16].copy_from_slice(&liar.octets());
        p[10..12].copy_from_slice(&[0, 0]);
        let c = encap::checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(run(tun, &p).0, Verdict::Drop(DropReason::Spoofed), "from {liar}");
    }
    // The node's own traffic (its address) is wrapped like a pod's.
    let mut own = from_pod_a1(POD_C1, 64)[14..].to_vec();
    own[12..16].copy_from_slice(&NODE_A.octets());
    own[10..12].copy_from_slice(&[0, 0]);
    let c = encap::checksum::checksum(&own[..20]);
    own[10..12].copy_from_slice(&c.to_be_bytes());
    assert!(matches!(run(tun, &own).0, Verdict::Transmit { iface, .. } if iface == raw));
    // Pod traffic the kernel routed into tunl0 leaves as IPIP on the raw socket, TTL as is.
    let inner = from_pod_a1(POD_C1, 63)[14..].to_vec();
    let (v, out) = run(tun, &inner);
    assert!(matches!(v, Verdict::Transmit { iface, .. } if iface == raw), "{v:?}");
    let outer = ipv4::Packet::new_checked(&out[..]).expect("outer");
    assert_eq!((outer.src(), outer.dst()), (NODE_A, NODE_C));
    assert_eq!(outer.payload(), &inner[..]);
    // IPIP from node-c on the raw socket goes back into tunl0 as the bare inner packet.
    let reply = echo(MacAddr::ZERO, MacAddr::ZERO, POD_C1, POD_A1, 63)[14..].to_vec();
    let mut from_c = vec![0u8; ipv4::HEADER_LEN + reply.len()];
    ipv4::Repr {
        src: NODE_C,
        dst: NODE_A,
        protocol: ipv4::Protocol::IpIp,
        tos: 0,
        ident: 1,
        dont_frag: false,
        ttl: 64,
        payload_len: reply.len(),
    }
    .emit(&mut from_c);
    from_c[ipv4::HEADER_LEN..].copy_from_slice(&reply);
    let (v, back) = run(raw, &from_c);
    assert!(matches!(v, Verdict::Transmit { iface, .. } if iface == tun), "{v:?}");
    assert_eq!(back, reply);
    // The same tunnel may not bring our own pod's address back in.
    let mut echo_back = from_c.clone();
    echo_back[ipv4::HEADER_LEN..].copy_from_slice(&echo(MacAddr::ZERO, MacAddr::ZERO, POD_A1, POD_A1, 63)[14..]);
    assert_eq!(run(raw, &echo_back).0, Verdict::Drop(DropReason::Spoofed));
    // From anyone else: dropped and counted.
    let mut forged = from_c.clone();
    forged[12..16].copy_from_slice(&UNDERLAY.octets());
    forged[10..12].copy_from_slice(&[0, 0]);
    let c = encap::checksum::checksum(&forged[..20]);
    forged[10..12].copy_from_slice(&c.to_be_bytes());
    assert_eq!(run(raw, &forged).0, Verdict::Drop(DropReason::IpipUnknownSource));
    assert_eq!(counters.drops(DropReason::IpipUnknownSource), 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let l = lab();
    for _ in 0..crate::counters::ICMP_TOKENS {
        assert!(matches!(l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64)).0, Verdict::Transmit { .. }));
    }
    // The budget is spent: still dropped and counted, but no error goes out.
    assert_eq!(l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64)).0, Verdict::Drop(DropReason::NoRoute));
    assert_eq!(l.drops(DropReason::NoRoute), crate::counters::ICMP_TOKENS + 1);
    l.counters.refill_icmp();
    assert!(matches!(l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64)).0, Verdict::Transmit { .. }));
}

#[test]
fn a_super_packet_with_a_tiny_segment_size_is_dropped_not_multiplied() {
    let l = lab();
    let frame = super_packet(POD_C1, 20_000);
    let (v, out) = l.run_super(&frame, 1);
    assert_eq!(v, Verdict::Drop(DropReason::GsoFailed));
    assert!(out.is_empty());
    let (v, out) = l.run_super(&frame, encap::gso::MIN_MSS);
    assert!(matches!(v, Verdict::Segment(_)), "{v:?}");
    assert_eq!(out.len(), 20_000usize.div_ceil(usize::from(encap::gso::MIN_MSS)));
}

/// A TCP super-packet from pod-a1 to `dst`: `payload` bytes that its sender's TSO would cut
/// into `mss`-byte segments; DF set, TCP checksum left partial as a sender with checksum
/// offload leaves it.
fn super_packet(dst: Ipv4Addr, payload: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let b = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv4(POD_A1.octets(), dst.octets(), 64)
        .tcp(40000, 5201, 1_000_000, 65535);
    let mut f = Vec::new();
    b.ack(7).psh().write(&mut f, &data).expect("build");
    with_df(f, true)
}

impl Lab {
    /// Runs a super-packet (segment size `mss`) and, for a `Segment` verdict, the
    /// segmentation step; returns the verdict and every frame that would be sent.
    fn run_super(&self, frame: &[u8], mss: u16) -> (Verdict, Vec<Vec<u8>>) {
        let mut buf = vec![0u8; 70_000];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let ctx = Context { gso: Some(mss), ..self.ctx() };
        let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
        let v = process(&ctx, &self.counters, CALI_A1, &mut buf, span);
        let mut out = Vec::new();
        match v {
            Verdict::TransmitWhole { span, .. } | Verdict::Transmit { span, .. } => {
                out.push(buf[span.start..span.end].to_vec())
            }
            Verdict::Segment(job) => {
                let mut scratch = vec![0u8; 256 * 1024];
                let mut verdicts = Vec::new();
                segment(&ctx, &self.counters, &buf, job, &mut scratch, &mut verdicts);
                for v in verdicts {
                    if let Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } = v {
                        out.push(scratch[span.start..span.end].to_vec());
                    }
                }
            }
            _ => {}
        }
        (v, out)
    }
}

/// The TCP segment inside `frame` (after Ethernet and every IPv4 header): checks both
/// checksums and returns (sequence number, flags, payload).
fn tcp_in(frame: &[u8]) -> (u32, u8, Vec<u8>) {
    let p = SlicedPacket::from_ethernet(frame).expect("parses");
    let inner = match &p.net {
        Some(etherparse::NetSlice::Ipv4(outer)) if outer.header().protocol() == etherparse::IpNumber::IPV4 => {
            etherparse::Ipv4Slice::from_slice(outer.payload().payload).expect("inner IPv4")
        }
        Some(etherparse::NetSlice::Ipv4(ip)) => ip.clone(),
        _ => panic!("not IPv4"),
    };
    let h = inner.header();
    assert_eq!(encap::checksum::checksum(h.slice()), 0, "IPv4 checksum");
    assert_eq!(usize::from(h.total_len()), h.slice().len() + inner.payload().payload.len());
    let tcp = etherparse::TcpSlice::from_slice(inner.payload().payload).expect("TCP");
    let want = tcp.to_header().calc_checksum_ipv4_raw(h.source(), h.destination(), tcp.payload()).expect("sum");
    assert_eq!(tcp.checksum(), want, "TCP checksum");
    let flags = inner.payload().payload[13];
    (tcp.sequence_number(), flags, tcp.payload().to_vec())
}

#[test]
fn a_super_packet_on_a_direct_route_leaves_whole() {
    let lab = lab();
    let f = super_packet(POD_B1, 4000);
    let (v, out) = lab.run_super(&f, 1448);
    assert!(matches!(v, Verdict::TransmitWhole { iface: UPLINK, .. }), "{v:?}");
    let sent = &out[0];
    assert_eq!(sent.len(), f.len(), "one frame, not segments");
    assert_eq!(&sent[..6], &NODE_B_MAC.0, "to node-b");
    assert_eq!(sent[14 + 8], 63, "TTL decremented");
    assert_eq!(encap::checksum::checksum(&sent[14..34]), 0, "IPv4 checksum updated");
}

#[test]
fn a_super_packet_into_the_tunnel_is_cut_into_complete_segments() {
    let lab = lab();
    let f = super_packet(POD_C1, 4000);
    // The pod MTU under IPIP is 1480, so its MSS is 1440.
    let (v, out) = lab.run_super(&f, 1440);
    assert!(matches!(v, Verdict::Segment(_)), "{v:?}");
    assert_eq!(out.len(), 3);
    let mut data = Vec::new();
    for (i, seg) in out.iter().enumerate() {
        assert_eq!(&seg[..6], &UNDERLAY_MAC.0);
        assert_eq!(seg[14 + 9], 4, "IPIP");
        assert!(seg.len() - 14 <= 1500, "segment {i} fits the uplink");
        let (seq, flags, payload) = tcp_in(seg);
        assert_eq!(seq, 1_000_000 + (i * 1440) as u32);
        assert_eq!(flags & 0x08 != 0, i == 2, "PSH only on the last");
        data.extend(payload);
    }
    assert_eq!(data, (0..4000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    assert_eq!(lab.counters.gso_segments.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(lab.counters.ipip_encapsulated.load(std::sync::atomic::Ordering::Relaxed), 3);
}

#[test]
fn a_super_packet_whose_next_hop_is_unknown_is_cut_for_the_arp_queue() {
    let lab = lab();
    // 10.244.4.0/26 goes via 192.168.100.102, which has not answered ARP yet.
    let (v, out) = lab.run_super(&super_packet(Ipv4Addr::new(10, 244, 4, 9), 3000), 1448);
    assert!(matches!(v, Verdict::Segment(_)), "{v:?}");
    assert_eq!(out.len(), 3, "three MTU-sized frames wait for the answer");
    for seg in &out {
        tcp_in(seg);
    }
}

#[test]
fn a_super_packet_whose_segments_do_not_fit_gets_fragmentation_needed() {
    let lab = ipip_route_lab_with_mtu(1500);
    // Segments of 1480 bytes of payload: 1520 with headers, more than the tunnel's 1480.
    let (v, out) = lab.run_super(&super_packet(POD_C1, 4000), 1480);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let p = SlicedPacket::from_ethernet(&out[0]).expect("parses");
    match p.transport {
        Some(etherparse::TransportSlice::Icmpv4(icmp)) => assert!(matches!(
            icmp.icmp_type(),
            Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1480
            })
        )),
        other => panic!("not ICMP: {other:?}"),
    }
    assert_eq!(lab.drops(DropReason::FragNeeded), 1);
}

#[test]
fn a_super_packet_that_is_not_tcp_is_dropped_with_its_reason() {
    let lab = lab();
    let mut f = super_packet(POD_C1, 3000);
    f[14 + 9] = 17; // claims UDP
    f[14 + 10..14 + 12].copy_from_slice(&[0, 0]);
    let c = encap::checksum::checksum(&f[14..34]);
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let (v, _) = lab.run_super(&f, 1448);
    assert_eq!(v, Verdict::Drop(DropReason::GsoFailed));
    assert_eq!(lab.drops(DropReason::GsoFailed), 1);
}

/// A pod behind node-c's VXLAN route.
const POD_C5: Ipv4Addr = Ipv4Addr::new(10, 244, 5, 1);

/// `inner` (an IPv4 packet) as node `outer_src` wraps it in VXLAN with `vni` toward node-a.
fn vxlan_frame(outer_src: Ipv4Addr, vni: u32, inner: &[u8]) -> Vec<u8> {
    let at = 14 + encap::vxlan::OVERHEAD;
    let mut f = vec![0u8; at];
    f.extend_from_slice(inner);
    let end = f.len();
    let t = encap::vxlan::Tunnel {
        src: outer_src,
        dst: NODE_A,
        ttl: 63,
        vni,
        src_mac: encap::vxlan::vtep_mac(outer_src),
        dst_mac: encap::vxlan::vtep_mac(NODE_A),
    };
    let start = encap::vxlan::encapsulate(&mut f, at, end, &t, 9, 50000);
    assert_eq!(start, 14);
    ethernet::emit_header(&mut f, UPLINK_MAC, UNDERLAY_MAC, EtherType::Ipv4);
    f
}

#[test]
fn a_vxlan_route_wraps_in_udp_4789_with_vni_4096_and_the_vteps_macs() {
    let l = lab();
    let frame = from_pod_a1(POD_C5, 64);
    let (v, out) = l.run_on(CALI_A1, &frame);
    assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
    assert_eq!(&out[..6], &UNDERLAY_MAC.0);
    let outer = ipv4::Packet::new_checked(&out[14..]).expect("outer");
    assert_eq!((outer.src(), outer.dst(), outer.protocol()), (NODE_A, NODE_C, ipv4::Protocol::Udp));
    assert!(outer.verify_checksum());
    assert_eq!(usize::from(outer.total_len()), 50 + frame.len() - 14);
    // etherparse reads UDP to 4789; our own decapsulation gives back the pod packet.
    let sliced = SlicedPacket::from_ethernet(&out).expect("parses");
    let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else { panic!("not UDP") };
    assert_eq!(udp.destination_port(), 4789);
    assert!(udp.source_port() >= 49152);
    let mut wire = out[14..].to_vec();
    let len = wire.len();
    let d = encap::vxlan::decapsulate(&mut wire, 0, len).expect("decap");
    assert_eq!((d.vni, d.src_mac), (4096, encap::vxlan::vtep_mac(NODE_A)));
    assert_eq!(&wire[d.start - 14..d.start - 8], &encap::vxlan::vtep_mac(NODE_C).0, "inner frame to node-c's VTEP");
    let inner = ipv4::Packet::new_checked(&wire[d.start..d.end]).expect("inner");
    assert_eq!((inner.src(), inner.dst(), inner.ttl()), (POD_A1, POD_C5, 63));
    assert_eq!(l.counters.vxlan_encapsulated.load(std::sync::atomic::Ordering::Relaxed), 1);
}

#[test]
fn vxlan_from_a_node_reaches_the_pod_and_anything_else_is_dropped_with_its_reason() {
    let l = lab();
    let inner = echo(MacAddr::ZERO, MacAddr::ZERO, POD_C5, POD_A1, 63)[14..].to_vec();
    let (v, out) = l.run_on(UPLINK, &vxlan_frame(NODE_C, 4096, &inner));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let ip = ipv4::Packet::new_checked(&out[14..]).expect("inner");
    assert_eq!((ip.src(), ip.dst(), ip.ttl()), (POD_C5, POD_A1, 62));
    assert_eq!(&out[34..], &inner[20..]);
    assert_eq!(l.counters.vxlan_decapsulated.load(std::sync::atomic::Ordering::Relaxed), 1);
    // From a host that is not a node, on another VNI, broken, or lying about our own pod.
    let cases = [
        (vxlan_frame(UNDERLAY, 4096, &inner), DropReason::VxlanUnknownSource),
        (vxlan_frame(NODE_C, 7, &inner), DropReason::VxlanWrongVni),
        (vxlan_frame(NODE_C, 4096, &inner[..10]), DropReason::VxlanMalformed),
    ];
    for (f, why) in cases {
        assert_eq!(l.run_on(UPLINK, &f).0, Verdict::Drop(why));
        assert_eq!(l.drops(why), 1);
    }
    let forged = echo(MacAddr::ZERO, MacAddr::ZERO, POD_A2, POD_A1, 63)[14..].to_vec();
    assert_eq!(l.run_on(UPLINK, &vxlan_frame(NODE_C, 4096, &forged)).0, Verdict::Drop(DropReason::Spoofed));
}

#[test]
fn a_df_packet_too_big_for_vxlan_gets_frag_needed_with_mtu_1450() {
    let l = lab();
    // 1451 bytes of IPv4 with DF: fits 1500, not 1500 - 50.
    let mut frame = from_pod_a1(POD_C5, 64);
    frame.resize(14 + 1451, 0);
    frame[16..18].copy_from_slice(&1451u16.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = encap::checksum::checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    assert!(ipv4::Packet::new_checked(&frame[14..]).expect("ip").dont_frag());
    let (v, out) = l.run_on(CALI_A1, &frame);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let sliced = SlicedPacket::from_ethernet(&out).expect("icmp");
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = sliced.transport else { panic!("not ICMP") };
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1450
        })
    );
}

/// What [`segment_vxlan`] made of a super-packet toward `dst`, with its offload headers.
fn vxlan_supers(l: &Lab, dst: Ipv4Addr, payload: usize, mss: u16) -> Vec<(VnetHdr, Vec<u8>)> {
    let frame = super_packet(dst, payload);
    let mut buf = vec![0u8; 70_000];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
    let ctx = Context { gso: Some(mss), ..l.ctx() };
    let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
    let Verdict::Segment(job) = process(&ctx, &l.counters, CALI_A1, &mut buf, span) else { panic!("not cut") };
    let (mut scratch, mut out) = (vec![0u8; 256 * 1024], Vec::new());
    assert!(segment_vxlan(&ctx, &l.counters, &buf, job, &mut scratch, &mut out));
    out.iter().map(|f| (f.hdr, scratch[f.span.start..f.span.end].to_vec())).collect()
}

#[test]
fn a_super_packet_into_vxlan_leaves_as_one_udp_super_packet_of_complete_datagrams() {
    let l = lab();
    // Pod MTU 1450 under VXLAN: MSS 1410 without TCP options.
    let supers = vxlan_supers(&l, POD_C5, 10_000, 1410);
    assert_eq!(supers.len(), 1);
    let (hdr, frame) = &supers[0];
    let size = 8 + 14 + 40 + 1410;
    assert_eq!(hdr.gso_type, encap::gso::GSO_UDP_L4);
    assert_eq!((hdr.gso_size, hdr.hdr_len, hdr.csum_start, hdr.csum_offset), (size as u16, 42, 34, 6));
    assert!(hdr.needs_csum());
    assert_eq!(&frame[..6], &UNDERLAY_MAC.0, "to the underlay router");
    let ip = ipv4::Packet::new_checked(&frame[14..]).expect("outer IPv4");
    assert!(ip.verify_checksum() && ip.dont_frag());
    assert_eq!((ip.src(), ip.dst(), usize::from(ip.total_len())), (NODE_A, NODE_C, frame.len() - 14));
    // The UDP checksum holds the pseudo-header sum the kernel finishes per datagram.
    let udp_len = frame.len() - 34;
    let partial = !encap::checksum::finish(encap::udp::pseudo_header_sum(NODE_A, NODE_C, udp_len));
    assert_eq!(u16::from_be_bytes([frame[40], frame[41]]), partial);
    // Cut as the kernel cuts it, each datagram is VXLAN 4096 carrying one complete segment.
    let segs = encap::gso::UdpSegments::new(&frame[14..], size as u16).expect("cuttable");
    assert_eq!(segs.count(), 10_000usize.div_ceil(1410));
    let mut data = Vec::new();
    for i in 0..segs.count() {
        let mut d = vec![0u8; 14 + 1500];
        let len = segs.write(i, &mut d[14..], true).expect("datagram");
        assert!(len <= 1500, "datagram {i} fits the underlay");
        let decapped = encap::vxlan::decapsulate(&mut d, 14, 14 + len).expect("VXLAN");
        assert_eq!(decapped.vni, 4096);
        let mut inner = vec![0u8; 14];
        inner[12..14].copy_from_slice(&[0x08, 0x00]);
        inner.extend_from_slice(&d[decapped.start..decapped.end]);
        let (seq, _, payload) = tcp_in(&inner);
        assert_eq!(seq, 1_000_000 + (i * 1410) as u32);
        data.extend(payload);
    }
    assert_eq!(data, (0..10_000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let c = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    // Counted once sent, not when built.
    assert_eq!((c(&l.counters.vxlan_encapsulated), c(&l.counters.udp_gso_sent)), (0, 0));
}

#[test]
fn more_than_64_kb_of_vxlan_datagrams_go_in_two_super_packets() {
    let l = lab();
    // 60 000 bytes at MSS 536: 112 datagrams of 598 bytes, 67 KB with their headers.
    let supers = vxlan_supers(&l, POD_C5, 60_000, 536);
    assert_eq!(supers.len(), 2);
    let per = (65535 - 28) / (22 + 40 + 536);
    for (n, (hdr, frame)) in supers.iter().enumerate() {
        assert!(frame.len() - 14 <= 65535);
        let segs = encap::gso::UdpSegments::new(&frame[14..], hdr.gso_size).expect("cuttable");
        assert_eq!(segs.count(), if n == 0 { per } else { 112 - per });
    }
}

#[test]
fn a_tcp_super_packet_to_an_unresolved_vxlan_hop_is_left_to_single_frames() {
    let mut l = lab();
    l.neigh = NeighTable::default();
    let frame = super_packet(POD_C5, 4000);
    let mut buf = vec![0u8; 70_000];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(&frame);
    let ctx = Context { gso: Some(1410), ..l.ctx() };
    let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
    let Verdict::Segment(job) = process(&ctx, &l.counters, CALI_A1, &mut buf, span) else { panic!("not cut") };
    let mut out = Vec::new();
    assert!(!segment_vxlan(&ctx, &l.counters, &buf, job, &mut vec![0u8; 256 * 1024], &mut out));
    assert!(out.is_empty());
}

/// A UDP super-packet as node-c sends one to node-a: a TCP super-packet from pod-c1 to
/// `dst` cut at `mss`, each segment in VXLAN, behind one outer header.
fn vxlan_super_from_c(dst: Ipv4Addr, payload: usize, mss: u16) -> (Vec<u8>, u16) {
    let data: Vec<u8> = (0..payload).map(|i| (i % 251) as u8).collect();
    let mut tcp = Vec::new();
    PacketBuilder::ipv4(POD_C1.octets(), dst.octets(), 64)
        .tcp(5201, 40000, 7_000, 65535)
        .ack(1)
        .write(&mut tcp, &data)
        .expect("build");
    let segs = encap::gso::TcpSegments::new(&tcp, mss).expect("segments");
    let t = encap::vxlan::Tunnel {
        src: NODE_C,
        dst: NODE_A,
        ttl: 63,
        vni: 4096,
        src_mac: encap::vxlan::vtep_mac(NODE_C),
        dst_mac: encap::vxlan::vtep_mac(NODE_A),
    };
    let mut f = vec![0u8; 70_000];
    let mut end = 42;
    for i in 0..segs.count() {
        let l3 = end + encap::vxlan::INNER_HEADERS;
        end = l3 + segs.write(i, &mut f[l3..]).expect("room");
        encap::vxlan::emit_inner_headers(&mut f, l3, &t);
    }
    let outer = encap::vxlan::Outer { tos: 0, dont_frag: true, ident: 1, src_port: 50000, partial_checksum: true };
    outer.emit(&mut f, 14, end - 42, &t);
    ethernet::emit_header(&mut f, UPLINK_MAC, UNDERLAY_MAC, EtherType::Ipv4);
    f.truncate(end);
    (f, (encap::vxlan::INNER_HEADERS + segs.len(0)) as u16)
}

/// `frame` at `HEADROOM` in a buffer with room for a super-packet, and where it lies.
fn framed(frame: &[u8]) -> (Vec<u8>, Span) {
    let mut buf = vec![0u8; 70_000 + HEADROOM];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    (buf, Span { start: HEADROOM, end: HEADROOM + frame.len() })
}

/// Runs a received UDP super-packet; returns the verdicts and the frames they send.
fn run_udp_super(l: &Lab, in_if: IfaceId, frame: &[u8], size: u16) -> Vec<(Verdict, Vec<u8>)> {
    let (buf, span) = framed(frame);
    let (mut scratch, mut out) = (vec![0u8; 256 * 1024], Vec::new());
    process_udp_super(&l.ctx(), &l.counters, in_if, &buf, span, size, &mut scratch, &mut out);
    out.into_iter()
        .map(|v| match v {
            Verdict::Transmit { span, .. } => (v, scratch[span.start..span.end].to_vec()),
            _ => (v, Vec::new()),
        })
        .collect()
}

#[test]
fn a_udp_super_packet_from_a_node_is_unwrapped_datagram_by_datagram_for_the_pod() {
    let l = lab();
    let (frame, size) = vxlan_super_from_c(POD_A2, 5000, 1410);
    let out = run_udp_super(&l, UPLINK, &frame, size);
    assert_eq!(out.len(), 4);
    let mut data = Vec::new();
    for (v, f) in &out {
        assert!(matches!(v, Verdict::Transmit { iface: CALI_A2, .. }), "{v:?}");
        assert_eq!(&f[..6], &POD_A2_MAC.0);
        data.extend(tcp_in(f).2);
    }
    assert_eq!(data, (0..5000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let c = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((c(&l.counters.udp_gso_received), c(&l.counters.vxlan_decapsulated)), (1, 4));
    // From a sender that is not a node, every datagram is refused as VXLAN alone would be.
    let mut forged = frame.clone();
    forged[26..30].copy_from_slice(&UNDERLAY.octets());
    forged[24..26].copy_from_slice(&[0, 0]);
    let cs = encap::checksum::checksum(&forged[14..34]);
    forged[24..26].copy_from_slice(&cs.to_be_bytes());
    let out = run_udp_super(&l, UPLINK, &forged, size);
    assert!(out.iter().all(|(v, _)| *v == Verdict::Drop(DropReason::VxlanUnknownSource)), "{out:?}");
    assert_eq!(l.drops(DropReason::VxlanUnknownSource), 4);
    // A segment size below the least a datagram can carry: one drop, nothing cut.
    assert!(run_udp_super(&l, UPLINK, &frame, 10).is_empty());
    assert_eq!(l.drops(DropReason::GsoFailed), 1);
}

#[test]
fn a_udp_super_packet_of_one_tcp_run_is_merged_and_reaches_the_pod_whole() {
    let l = lab();
    let (frame, size) = vxlan_super_from_c(POD_A2, 5000, 1410);
    let (mut buf, span) = framed(&frame);
    let (span, hdr, n) = merge_vxlan_super(&l.ctx(), &l.counters, UPLINK, &mut buf, span, size, true).expect("one run");
    assert_eq!(n, 4);
    assert_eq!(
        (hdr.gso_type, hdr.gso_size, hdr.hdr_len, hdr.csum_start, hdr.csum_offset),
        (gso::GSO_TCPV4, 1410, 54, 34, 16)
    );
    assert!(hdr.needs_csum());
    let ctx = Context { gso: Some(hdr.gso_size), packets: n, ..l.ctx() };
    let v = process(&ctx, &l.counters, UPLINK, &mut buf, span);
    let Verdict::TransmitWhole { iface: CALI_A2, span } = v else { panic!("{v:?}") };
    let mut out = buf[span.start..span.end].to_vec();
    assert_eq!(&out[..6], &POD_A2_MAC.0);
    // Finished as the pod's kernel finishes it, it is one TCP packet with all the data.
    encap::gso::complete_checksum(&mut out, 34, 16).expect("in range");
    let (seq, flags, data) = tcp_in(&out);
    assert_eq!((seq, flags & encap::tcp::flags::PSH), (7_000, 0));
    assert_eq!(data, (0..5000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    assert_eq!(out[14 + 8], 63, "TTL decremented once");
    let c = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((c(&l.counters.udp_gso_received), c(&l.counters.vxlan_decapsulated)), (1, 4));
    assert_eq!((c(&l.counters.gro_packets), c(&l.counters.gro_segments)), (1, 4));
    // From a sender that is not a node it merges too, and each of its segments is refused.
    let (mut forged, size) = vxlan_super_from_c(POD_A2, 5000, 1410);
    forged[26..30].copy_from_slice(&UNDERLAY.octets());
    ipv4::Packet::new_unchecked(&mut forged[14..]).fill_checksum();
    let (mut buf, span) = framed(&forged);
    let (span, hdr, n) = merge_vxlan_super(&l.ctx(), &l.counters, UPLINK, &mut buf, span, size, true).expect("one run");
    let ctx = Context { gso: Some(hdr.gso_size), packets: n, ..l.ctx() };
    assert_eq!(process(&ctx, &l.counters, UPLINK, &mut buf, span), Verdict::Drop(DropReason::VxlanUnknownSource));
    assert_eq!(l.drops(DropReason::VxlanUnknownSource), 4);
    // VXLAN to another address is not this node's to merge; nor is a pod's own UDP.
    let (mut other, size) = vxlan_super_from_c(POD_A2, 5000, 1410);
    other[30..34].copy_from_slice(&NODE_C.octets());
    ipv4::Packet::new_unchecked(&mut other[14..]).fill_checksum();
    let (mut buf, span) = framed(&other);
    assert_eq!(merge_vxlan_super(&l.ctx(), &l.counters, UPLINK, &mut buf, span, size, true), None);
    assert_eq!(&buf[span.start..span.end], &other[..], "untouched");
    // From a pod, VXLAN to the node is the kernel's, never unwrapped: not merged either.
    let (ours, size) = vxlan_super_from_c(POD_A2, 5000, 1410);
    let (mut buf, span) = framed(&ours);
    assert_eq!(merge_vxlan_super(&l.ctx(), &l.counters, CALI_A1, &mut buf, span, size, true), None);
}

#[test]
fn a_pods_udp_super_packet_is_cut_into_datagrams_with_their_checksums() {
    let l = lab();
    // pod-a1's UDP_SEGMENT send to pod-b1: 3000 bytes in 1000-byte datagrams.
    let data: Vec<u8> = (0..3000).map(|i| (i % 241) as u8).collect();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv4(POD_A1.octets(), POD_B1.octets(), 64)
        .udp(7000, 7001)
        .write(&mut f, &data)
        .expect("build");
    let out = run_udp_super(&l, CALI_A1, &f, 1000);
    assert_eq!(out.len(), 3);
    let mut got = Vec::new();
    for (v, frame) in &out {
        assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
        let p = SlicedPacket::from_ethernet(frame).expect("parses");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("not IPv4") };
        let Some(etherparse::TransportSlice::Udp(u)) = &p.transport else { panic!("not UDP") };
        let want = u.to_header().calc_checksum_ipv4_raw(ip.header().source(), ip.header().destination(), u.payload());
        assert_eq!(u.checksum(), want.expect("sum"), "UDP checksum");
        assert_eq!(ip.header().ttl(), 63);
        got.extend_from_slice(u.payload());
    }
    assert_eq!(got, data);
}

#[test]
fn tun_mode_wraps_vxlan_for_the_raw_socket_and_unwraps_what_the_udp_socket_got() {
    let (raw, udp, tun) = (IfaceId(0), IfaceId(1), IfaceId(2));
    let ifaces = Interfaces::new(vec![
        Interface { name: "raw-ip".into(), ifindex: 0, mac: MacAddr::ZERO, mtu: 1500, role: IfaceRole::RawIpip },
        Interface { name: "vxlan-udp".into(), ifindex: 0, mac: MacAddr::ZERO, mtu: 1500, role: IfaceRole::VxlanUdp },
        Interface { name: "vxlan.calico".into(), ifindex: 9, mac: MacAddr::ZERO, mtu: 1450, role: IfaceRole::Tun },
    ])
    .with_node_addr(NODE_A);
    let fib = Fib::build(&[
        Route {
            prefix: "10.244.3.0/26".parse().expect("net"),
            next_hop: NextHop::Vxlan { iface: raw, gateway: NODE_C, remote: NODE_C },
        },
        Route { prefix: "10.244.1.0/26".parse().expect("net"), next_hop: NextHop::Host },
    ])
    .with_tunnels(Tunnels {
        ttl: 64,
        peers: [NODE_C].into_iter().collect(),
        allowed: vec![],
        local_pods: vec![POD_A1],
        local_pods6: vec![],
        nat: Default::default(),
    });
    let neigh = NeighTable::default();
    let counters = Counters::new(3);
    let nat = Nat::default();
    let ctx = Context { fib: &fib, neigh: &neigh, ifaces: &ifaces, nat: &nat, gso: None, packets: 1 };
    let run = |in_if, pkt: &[u8]| {
        let mut buf = vec![0u8; BUF];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let v = process_l3(&ctx, &counters, in_if, &mut buf, Span { start: HEADROOM, end: HEADROOM + pkt.len() });
        let out = match v {
            Verdict::Transmit { span, .. } => buf[span.start..span.end].to_vec(),
            _ => Vec::new(),
        };
        (v, out)
    };
    // Out: what the kernel routed into vxlan.calico leaves by the raw socket as a whole
    // outer IPv4/UDP packet to node-c.
    let ping = from_pod_a1(POD_C1, 63)[14..].to_vec();
    let (v, wire) = run(tun, &ping);
    assert!(matches!(v, Verdict::Transmit { iface, .. } if iface == raw), "{v:?}");
    let d = encap::vxlan::parse(&wire).expect("VXLAN");
    assert_eq!((d.vni, &wire[d.inner_start..]), (4096, &ping[..]));
    assert_eq!(ipv4::Packet::new_checked(&wire[..]).expect("outer").dst(), NODE_C);
    // In: a datagram from node-c, with the outer headers the worker rebuilt, goes back to the
    // kernel through vxlan.calico; from a host that is not a node, it is dropped.
    let back = echo(MacAddr::ZERO, MacAddr::ZERO, POD_C1, POD_A1, 63)[14..].to_vec();
    let frame = vxlan_frame(NODE_C, 4096, &back);
    let (v, out) = run(udp, &frame[14..]);
    assert!(matches!(v, Verdict::Transmit { iface, .. } if iface == tun), "{v:?}");
    assert_eq!(out, back);
    let frame = vxlan_frame(UNDERLAY, 4096, &back);
    assert_eq!(run(udp, &frame[14..]).0, Verdict::Drop(DropReason::VxlanUnknownSource));
    // A UDP super-packet the socket read whole (UDP_GRO) is merged and goes to the kernel
    // through vxlan.calico as one TCP super-packet.
    let (sup, size) = vxlan_super_from_c(POD_A1, 5000, 1410);
    let (mut buf, span) = framed(&sup[14..]);
    let (span, hdr, n) = merge_vxlan_super(&ctx, &counters, udp, &mut buf, span, size, false).expect("one run");
    assert_eq!((n, hdr.gso_type, hdr.hdr_len, hdr.csum_start, hdr.csum_offset), (4, gso::GSO_TCPV4, 40, 20, 16));
    let whole = Context { gso: Some(hdr.gso_size), packets: n, ..ctx };
    let v = process_l3(&whole, &counters, udp, &mut buf, span);
    let Verdict::TransmitWhole { iface, span } = v else { panic!("{v:?}") };
    assert_eq!(iface, tun);
    let mut out = buf[span.start..span.end].to_vec();
    encap::gso::complete_checksum(&mut out, 20, 16).expect("in range");
    let framed: Vec<u8> = [0u8; 12].iter().chain(&[8, 0]).chain(&out).copied().collect();
    let (seq, _, data) = tcp_in(&framed);
    assert_eq!(seq, 7_000);
    assert_eq!(data, (0..5000).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
}

// ---- IPv6 ----

const POD_A1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 2);
const POD_A2_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 3);
const POD_B1_6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0x244, 2, 0, 0, 0, 2);
const NODE_A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 100, 0, 0, 0, 0x100);
const NODE_B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 100, 0, 0, 0, 0x101);

/// The seed lab's node A, dual stack: pods fd00:10:244:1::2 and ::3 (the addresses and MACs
/// of `fixtures/linux-ping6.pcap`), node B's block behind the uplink; `cali_a1_mac` is the
/// MAC of pod A1's host end and `uplink_mtu` the uplink's MTU.
fn lab6_with(cali_a1_mac: MacAddr, uplink_mtu: u16) -> Lab {
    let iface = |name: &str, ifindex, mac, mtu, role| Interface { name: name.into(), ifindex, mac, mtu, role };
    let ifaces = Interfaces::new(vec![
        iface(
            "eth0",
            2,
            UPLINK_MAC,
            uplink_mtu,
            IfaceRole::Uplink { addr: "192.168.100.100/24".parse().expect("net") },
        ),
        iface("calia1", 3, cali_a1_mac, 1500, IfaceRole::Pod { addr: POD_A1, addr6: Some(POD_A1_6) }),
        iface("calia2", 4, CALI_A2_MAC, 1500, IfaceRole::Pod { addr: POD_A2, addr6: Some(POD_A2_6) }),
    ])
    .with_node_addr6(NODE_A6);
    let r = |p: &str, nh| Route { prefix: p.parse().expect("net"), next_hop: nh };
    let r6 = |p: &str, next_hop| Route6 { prefix: p.parse().expect("net"), next_hop };
    let fib = Fib::build(&[
        r("192.168.100.0/24", NextHop::Local { iface: UPLINK }),
        r("10.244.1.2/32", NextHop::Local { iface: CALI_A1 }),
        r("10.244.1.3/32", NextHop::Local { iface: CALI_A2 }),
    ])
    .with_v6(&[
        r6("fd00:192:168:100::/64", NextHop6::Local { iface: UPLINK }),
        r6("fd00:192:168:100::100/128", NextHop6::Host),
        r6("fd00:10:244:1::/122", NextHop6::Blackhole),
        r6("fd00:10:244:1::2/128", NextHop6::Local { iface: CALI_A1 }),
        r6("fd00:10:244:1::3/128", NextHop6::Local { iface: CALI_A2 }),
        r6("fd00:10:244:2::/122", NextHop6::Direct { iface: UPLINK, gateway: NODE_B6 }),
    ])
    .with_tunnels(Tunnels {
        local_pods: vec![POD_A1, POD_A2],
        local_pods6: vec![POD_A1_6, POD_A2_6],
        ..Tunnels::default()
    });
    let mut neigh = NeighTable::default();
    neigh.insert(Neighbour { iface: CALI_A1, ip: POD_A1_6.into(), mac: POD_A1_MAC });
    neigh.insert(Neighbour { iface: CALI_A2, ip: POD_A2_6.into(), mac: POD_A2_MAC });
    neigh.insert(Neighbour { iface: UPLINK, ip: NODE_B6.into(), mac: NODE_B_MAC });
    let counters = Counters::new(ifaces.len());
    Lab { fib, neigh, ifaces, counters, nat: Nat::default() }
}

fn lab6() -> Lab {
    lab6_with(CALI_A1_MAC, 1500)
}

fn ping6_frame(i: usize) -> Vec<u8> {
    pcap_frame(include_bytes!("../../../fixtures/linux-ping6.pcap"), i)
}

fn gateway6_frame(i: usize) -> Vec<u8> {
    pcap_frame(include_bytes!("../../../fixtures/linux-gateway6.pcap"), i)
}

/// A UDP datagram of `payload` bytes from pod A1 (on calia1) to `dst`.
fn udp6_from_a1(dst: Ipv6Addr, hop_limit: u8, payload: usize) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv6(POD_A1_6.octets(), dst.octets(), hop_limit)
        .udp(5000, 6000);
    let data = vec![0x5au8; payload];
    let mut v = Vec::new();
    b.write(&mut v, &data).expect("build");
    v
}

/// The ICMPv6 message in `frame`: checks the checksum, returns (src, dst, type, code, rest
/// of header, body).
fn icmp6_in(frame: &[u8]) -> (Ipv6Addr, Ipv6Addr, u8, u8, u32, Vec<u8>) {
    let ip = encap::ipv6::Packet::new_checked(&frame[14..]).expect("ipv6");
    assert_eq!(ip.next_header(), encap::ipv6::NEXT_ICMPV6);
    let icmp = encap::icmpv6::Packet::new_checked(ip.payload()).expect("icmpv6");
    assert!(icmp.verify_checksum(ip.src(), ip.dst()), "ICMPv6 checksum");
    let p = ip.payload();
    let rest = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
    (ip.src(), ip.dst(), p[0], p[1], rest, p[8..].to_vec())
}

#[test]
fn proxy_ndp_answers_for_the_gateway_as_linux_does() {
    // With the host end's MAC set to Calico's ee:ee:ee:ee:ee:ee, our answer is byte for byte
    // the advertisement Linux sends when the host end owns fe80::ecee:eeff:feee:eeee.
    let l = lab6_with(encap::icmpv6::CALICO_HOST_MAC, 1500);
    let (v, out) = l.run_on(CALI_A1, &gateway6_frame(0));
    match v {
        Verdict::Transmit { iface, learn, .. } => {
            assert_eq!(iface, CALI_A1);
            assert_eq!(learn, Some(Neighbour { iface: CALI_A1, ip: POD_A1_6.into(), mac: POD_A1_MAC }));
        }
        v => panic!("expected an advertisement, got {v:?}"),
    }
    assert_eq!(out, gateway6_frame(1));
}

#[test]
fn proxy_ndp_answers_duplicate_address_detection_to_all_nodes() {
    let mut f = gateway6_frame(0);
    // From :: with no source link-layer option: a probe of a tentative address.
    f[22..38].copy_from_slice(&Ipv6Addr::UNSPECIFIED.octets());
    f.truncate(14 + 40 + 24);
    f[18..20].copy_from_slice(&24u16.to_be_bytes());
    let sum = encap::ipv6::pseudo_header_sum(Ipv6Addr::UNSPECIFIED, ip6_dst(&f), 58, 24);
    f[56..58].copy_from_slice(&[0, 0]);
    let c = encap::checksum::finish(sum + encap::checksum::sum(&f[54..]));
    f[56..58].copy_from_slice(&c.to_be_bytes());
    let l = lab6();
    let (v, out) = l.run_on(CALI_A1, &f);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, learn: None, .. }), "{v:?}");
    let (src, dst, t, _, rest, _) = icmp6_in(&out);
    assert_eq!((src, dst, t), (POD_GATEWAY6, "ff02::1".parse().expect("addr"), 136));
    assert_eq!(rest >> 29, 0b101, "router and override, not solicited");
    assert_eq!(&out[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
}

fn ip6_dst(frame: &[u8]) -> Ipv6Addr {
    encap::ipv6::Packet::new_unchecked(&frame[14..]).dst()
}

#[test]
fn ndp_with_a_hop_limit_below_255_is_dropped() {
    let l = lab6();
    let mut f = gateway6_frame(0);
    f[21] = 64; // not in the checksum: only the hop limit rule can reject it
    let (v, _) = l.run_on(CALI_A1, &f);
    assert_eq!(v, Verdict::Drop(DropReason::NdpInvalid));
    assert_eq!(l.drops(DropReason::NdpInvalid), 1);
}

/// A neighbour advertisement for `from`'s own address, from `mac` to node A's uplink, as
/// Linux sends it: with the target link-layer option when answering a multicast
/// solicitation, without it (solicited, no override) when answering a unicast one.
fn advert6(from: Ipv6Addr, mac: MacAddr, tlla: bool, solicited: bool) -> Vec<u8> {
    let mut icmp = vec![136, 0, 0, 0, if solicited { 0x40 } else { 0 }, 0, 0, 0];
    icmp.extend_from_slice(&from.octets());
    if tlla {
        icmp.extend_from_slice(&[2, 1]);
        icmp.extend_from_slice(&mac.0);
    }
    let sum = encap::ipv6::pseudo_header_sum(from, NODE_A6, 58, icmp.len());
    let c = encap::checksum::finish(sum + encap::checksum::sum(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = vec![0u8; 14 + 40];
    ethernet::emit_header(&mut f, UPLINK_MAC, mac, EtherType::Ipv6);
    f[14..18].copy_from_slice(&[0x60, 0, 0, 0]);
    f[18..20].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
    f[20..22].copy_from_slice(&[58, 255]);
    f[22..38].copy_from_slice(&from.octets());
    f[38..54].copy_from_slice(&NODE_A6.octets());
    f.extend_from_slice(&icmp);
    f
}

#[test]
fn an_advertisement_without_the_link_layer_option_confirms_the_mac_known() {
    let l = lab6();
    let learned = |mac| Verdict::Learn(Neighbour { iface: UPLINK, ip: NODE_B6.into(), mac });
    // The answer to our unicast refresh: what the workers know of node B is confirmed, so
    // its entry does not lapse.
    assert_eq!(l.run_on(UPLINK, &advert6(NODE_B6, NODE_B_MAC, false, true)).0, learned(NODE_B_MAC));
    assert_eq!(l.run_on(UPLINK, &advert6(NODE_B6, NODE_B_MAC, true, true)).0, learned(NODE_B_MAC));
    // Unsolicited, or from a neighbour nobody knows: nothing to confirm.
    assert_eq!(l.run_on(UPLINK, &advert6(NODE_B6, NODE_B_MAC, false, false)).0, Verdict::Pass);
    let stranger = Ipv6Addr::new(0xfd00, 0x192, 0x168, 100, 0, 0, 0, 0x177);
    assert_eq!(l.run_on(UPLINK, &advert6(stranger, NODE_B_MAC, false, true)).0, Verdict::Pass);
    assert_eq!(l.drops(DropReason::NdpInvalid), 0);
}

#[test]
fn neighbour_solicitations_for_other_targets_are_the_kernels() {
    let l = lab6();
    // The pod asking for its sibling (same /64 in the capture): not ours to answer.
    let (v, _) = l.run_on(CALI_A1, &ping6_frame(0));
    assert_eq!(v, Verdict::Pass);
}

#[test]
fn forwards_captured_ping6_between_pods_of_the_node() {
    let l = lab6();
    let f = ping6_frame(2);
    let (v, out) = l.run_on(CALI_A1, &f);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A2, .. }), "{v:?}");
    assert_eq!(&out[0..6], &POD_A2_MAC.0);
    assert_eq!(&out[6..12], &CALI_A2_MAC.0);
    assert_eq!(out[21], f[21] - 1, "hop limit decremented");
    // Nothing else changes: no header checksum, and the hop limit is not in the ICMPv6 one.
    assert_eq!(out[12..21], f[12..21]);
    assert_eq!(out[22..], f[22..]);
    let (_, _, t, ..) = icmp6_in(&out);
    assert_eq!(t, 128);
}

#[test]
fn forwards_ipv6_to_another_nodes_block_directly() {
    let l = lab6();
    let (v, out) = l.run_on(CALI_A1, &udp6_from_a1(POD_B1_6, 64, 100));
    assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
    assert_eq!(&out[0..6], &NODE_B_MAC.0);
    assert_eq!(&out[6..12], &UPLINK_MAC.0);
    assert_eq!(u16::from_be_bytes([out[12], out[13]]), 0x86dd);
    assert_eq!(out[21], 63);
}

#[test]
fn unresolved_ipv6_next_hop_asks_the_slow_path() {
    let mut l = lab6();
    l.neigh = NeighTable::default();
    let (v, _) = l.run_on(CALI_A1, &udp6_from_a1(POD_B1_6, 64, 10));
    match v {
        Verdict::Resolve { iface, next_hop, .. } => {
            assert_eq!(iface, UPLINK);
            assert_eq!(next_hop, IpAddr::V6(NODE_B6));
        }
        v => panic!("expected Resolve, got {v:?}"),
    }
}

#[test]
fn hop_limit_one_gets_time_exceeded_from_the_node() {
    let l = lab6();
    let f = udp6_from_a1(POD_B1_6, 1, 100);
    let (v, out) = l.run_on(CALI_A1, &f);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    assert_eq!(&out[0..6], &POD_A1_MAC.0);
    let (src, dst, t, code, _, body) = icmp6_in(&out);
    assert_eq!((src, dst, t, code), (NODE_A6, POD_A1_6, 3, 0));
    assert_eq!(body, f[14..], "the whole offending packet quoted");
    assert_eq!(l.drops(DropReason::HopLimitExceeded), 1);
}

#[test]
fn unrouted_ipv6_gets_no_route_unreachable() {
    let l = lab6();
    let (v, out) = l.run_on(CALI_A1, &udp6_from_a1("fd00:99::1".parse().expect("addr"), 64, 10));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let (src, _, t, code, ..) = icmp6_in(&out);
    assert_eq!((src, t, code), (NODE_A6, 1, 0));
    assert_eq!(l.drops(DropReason::NoRoute), 1);
}

#[test]
fn the_nodes_own_block_is_a_blackhole() {
    let l = lab6();
    let (v, _) = l.run_on(CALI_A1, &udp6_from_a1("fd00:10:244:1::9".parse().expect("addr"), 64, 10));
    assert_eq!(v, Verdict::Drop(DropReason::Blackhole));
}

#[test]
fn too_big_for_the_uplink_gets_packet_too_big_and_is_never_fragmented() {
    let l = lab6_with(CALI_A1_MAC, 1400);
    let f = udp6_from_a1(POD_B1_6, 64, 1400);
    let (v, out) = l.run_on(CALI_A1, &f);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let (src, dst, t, code, mtu, body) = icmp6_in(&out);
    assert_eq!((src, dst, t, code, mtu), (NODE_A6, POD_A1_6, 2, 0, 1400));
    assert_eq!(out.len() - 14, encap::ipv6::MIN_MTU, "the quote fills the minimum MTU");
    assert_eq!(body, f[14..14 + body.len()]);
    assert_eq!(l.drops(DropReason::PacketTooBig), 1);
}

#[test]
fn a_pod_may_only_speak_ipv6_with_its_own_address() {
    let l = lab6();
    let mut f = udp6_from_a1(POD_B1_6, 64, 10);
    f[22..38].copy_from_slice(&POD_A2_6.octets());
    assert_eq!(l.run_on(CALI_A1, &f).0, Verdict::Drop(DropReason::Spoofed));
    // From outside, nobody may claim to be one of our pods.
    let mut f = udp6_from_a1(POD_A2_6, 64, 10);
    f[0..6].copy_from_slice(&UPLINK_MAC.0);
    f[22..38].copy_from_slice(&POD_A1_6.octets());
    assert_eq!(l.run_on(UPLINK, &f).0, Verdict::Drop(DropReason::Spoofed));
    assert_eq!(l.drops(DropReason::Spoofed), 2);
}

#[test]
fn no_icmpv6_error_about_an_icmpv6_error() {
    let l = lab6();
    // A "destination unreachable" with hop limit 1: dropped, no error about it.
    let b = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv6(POD_A1_6.octets(), POD_B1_6.octets(), 1)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::NoRoute));
    let mut f = Vec::new();
    b.write(&mut f, &[0u8; 48]).expect("build");
    assert_eq!(l.run_on(CALI_A1, &f).0, Verdict::Drop(DropReason::HopLimitExceeded));
}

#[test]
fn single_stack_nodes_leave_ipv6_to_the_kernel() {
    let l = lab();
    assert_eq!(l.run_on(CALI_A1, &ping6_frame(2)).0, Verdict::Pass);
    assert_eq!(l.run_on(CALI_A1, &gateway6_frame(0)).0, Verdict::Pass);
}

#[test]
fn link_local_and_multicast_ipv6_are_not_routed() {
    let l = lab6();
    let mut f = udp6_from_a1("ff02::2".parse().expect("addr"), 1, 10);
    assert_eq!(l.run_on(CALI_A1, &f).0, Verdict::Pass);
    f[38..54].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().expect("addr").octets());
    assert_eq!(l.run_on(CALI_A1, &f).0, Verdict::Pass);
}

#[test]
fn malformed_ipv6_is_dropped_and_counted() {
    let l = lab6();
    // Payload length beyond the frame.
    let mut f = udp6_from_a1(POD_B1_6, 64, 10);
    f[18..20].copy_from_slice(&500u16.to_be_bytes());
    assert_eq!(l.run_on(CALI_A1, &f).0, Verdict::Drop(DropReason::Ipv6Malformed));
    // Shorter than a header.
    let f = udp6_from_a1(POD_B1_6, 64, 10);
    assert_eq!(l.run_on(CALI_A1, &f[..14 + 30]).0, Verdict::Drop(DropReason::Ipv6Malformed));
    // Version 4 in an IPv6 EtherType.
    let mut f = udp6_from_a1(POD_B1_6, 64, 10);
    f[14] = 0x40 | (f[14] & 0x0f);
    assert_eq!(l.run_on(CALI_A1, &f).0, Verdict::Drop(DropReason::Ipv6Malformed));
    assert_eq!(l.drops(DropReason::Ipv6Malformed), 3);
}

#[test]
fn ipv6_tcp_super_packets_leave_whole_on_direct_routes() {
    let l = lab6();
    let data: Vec<u8> = (0..20_000).map(|i| (i % 251) as u8).collect();
    let b = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv6(POD_A1_6.octets(), POD_B1_6.octets(), 64)
        .tcp(40000, 5201, 1, 65535);
    let mut f = Vec::new();
    b.ack(7).write(&mut f, &data).expect("build");
    let (v, out) = l.run_super(&f, 1440);
    assert!(matches!(v, Verdict::TransmitWhole { iface: UPLINK, .. }), "{v:?}");
    assert_eq!(out[0].len(), f.len());
    assert_eq!(out[0][21], 63);
    // Too big per segment for the egress: packet too big, for the segment size.
    let (v, _) = lab6_with(CALI_A1_MAC, 1400).run_super(&f, 1440);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    // Next hop unknown: dropped and counted, TCP sends again once it is resolved.
    let mut l = lab6();
    l.neigh = NeighTable::default();
    assert_eq!(l.run_super(&f, 1440).0, Verdict::Drop(DropReason::GsoFailed));
}

/// The lab with the pool masquerading (`natOutgoing`) and a route to the underlay's other
/// subnet, whose router knows no pod.
fn nat_lab() -> Lab {
    let mut l = lab();
    let mut routes = lab_routes();
    routes.push(Route {
        prefix: "192.168.200.0/24".parse().expect("net"),
        next_hop: NextHop::Direct { iface: UPLINK, gateway: UNDERLAY },
    });
    let pool: ipnet::Ipv4Net = "10.244.0.0/16".parse().expect("net");
    let nat = crate::nat::NatPolicy { masquerade: vec![pool], pools: vec![pool], ..Default::default() };
    l.fib = Fib::build(&routes).with_tunnels(Tunnels { nat, ..lab_tunnels() });
    l
}

const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 1);

#[test]
fn a_pod_reaches_outside_the_pools_as_its_node_and_the_answer_comes_back() {
    let l = nat_lab();
    let (v, out) = l.run_on(CALI_A1, &from_pod_a1(OUTSIDE, 64));
    assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
    assert_eq!(&out[..6], &UNDERLAY_MAC.0);
    let p = SlicedPacket::from_ethernet(&out).expect("etherparse");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("no ip") };
    assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (NODE_A, OUTSIDE));
    assert_eq!(ip.header().ttl(), 63);
    assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!("no icmp") };
    let Icmpv4Type::EchoRequest(req) = icmp.icmp_type() else { panic!("not an echo request") };
    assert!(crate::nat::PORTS.contains(&req.id), "{}", req.id);
    assert!(encap::icmp::Packet::new_checked(&out[34..]).expect("icmp").verify_checksum());
    // The answer, to the node's address and identifier, goes to the pod.
    let b = PacketBuilder::ethernet2(UNDERLAY_MAC.0, UPLINK_MAC.0)
        .ipv4(OUTSIDE.octets(), NODE_A.octets(), 64)
        .icmpv4_echo_reply(req.id, req.seq);
    let mut reply = Vec::new();
    b.write(&mut reply, &[0xab; 56]).expect("build");
    let (v, back) = l.run_on(UPLINK, &reply);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let p = SlicedPacket::from_ethernet(&back).expect("etherparse");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else { panic!("no ip") };
    assert_eq!((ip.header().source_addr(), ip.header().destination_addr()), (OUTSIDE, POD_A1));
    assert_eq!(ip.header().to_header().calc_header_checksum(), ip.header().header_checksum());
    let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else { panic!("no icmp") };
    assert!(matches!(icmp.icmp_type(), Icmpv4Type::EchoReply(e) if e.id == 7));
    assert!(encap::icmp::Packet::new_checked(&back[34..]).expect("icmp").verify_checksum());
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((n(&l.counters.nat_masqueraded), n(&l.counters.nat_restored)), (1, 1));
    assert_eq!(l.nat.len(), 1);
}

#[test]
fn inside_the_pools_and_errors_the_node_sends_a_pod_keep_the_pods_address() {
    let l = nat_lab();
    let (_, out) = l.run_on(CALI_A1, &from_pod_a1(POD_B1, 64));
    assert_eq!(ipv4::Packet::new_checked(&out[14..]).expect("ip").src(), POD_A1, "pod to pod");
    // TTL runs out here: the pod hears it from the node, and nothing was masqueraded.
    let (v, out) = l.run_on(CALI_A1, &from_pod_a1(OUTSIDE, 1));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let ip = ipv4::Packet::new_checked(&out[14..]).expect("ip");
    assert_eq!((ip.src(), ip.dst()), (NODE_A, POD_A1));
    assert_eq!(&ip.payload()[8..8 + 28], &from_pod_a1(OUTSIDE, 1)[14..14 + 28], "the pod's own packet quoted");
    assert!(l.nat.is_empty());
}

#[test]
fn tcp_to_a_port_of_the_node_no_flow_has_is_dropped_and_bgp_goes_to_the_kernel() {
    let l = nat_lab();
    let tcp = |port: u16| {
        let b = PacketBuilder::ethernet2(UNDERLAY_MAC.0, UPLINK_MAC.0)
            .ipv4(OUTSIDE.octets(), NODE_A.octets(), 64)
            .tcp(80, port, 1, 1000)
            .ack(1);
        let mut v = Vec::new();
        b.write(&mut v, b"stray").expect("build");
        v
    };
    assert_eq!(l.run_on(UPLINK, &tcp(61500)).0, Verdict::Drop(DropReason::NatNoFlow));
    assert_eq!(l.run_on(UPLINK, &tcp(179)).0, Verdict::Pass);
    // Without natOutgoing the node's ports are all the kernel's.
    assert_eq!(lab().run_on(UPLINK, &tcp(61500)).0, Verdict::Pass);
}

const UNDERLAY6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x100, 0, 0, 0, 1);
const OUTSIDE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x192, 0x168, 0x200, 0, 0, 0, 1);

/// The dual-stack lab with its IPv6 pool masquerading and the underlay's other subnet
/// behind the underlay router.
fn nat_lab6() -> Lab {
    let mut l = lab6();
    let pool: ipnet::Ipv6Net = "fd00:10:244::/48".parse().expect("net");
    let nat = crate::nat::NatPolicy { masquerade6: vec![pool], pools6: vec![pool], ..Default::default() };
    let mut tunnels = l.fib.tunnels().clone();
    tunnels.nat = nat;
    let r6 = |p: &str, next_hop| Route6 { prefix: p.parse().expect("net"), next_hop };
    l.fib = Fib::build(&[])
        .with_v6(&[
            r6("fd00:192:168:100::/64", NextHop6::Local { iface: UPLINK }),
            // The node's own address, as the lab's interfaces have it.
            r6(&format!("{NODE_A6}/128"), NextHop6::Host),
            r6("fd00:10:244:1::/122", NextHop6::Blackhole),
            r6("fd00:10:244:1::2/128", NextHop6::Local { iface: CALI_A1 }),
            r6("fd00:10:244:1::3/128", NextHop6::Local { iface: CALI_A2 }),
            r6("fd00:192:168:200::/64", NextHop6::Direct { iface: UPLINK, gateway: UNDERLAY6 }),
        ])
        .with_tunnels(tunnels);
    l.neigh.insert(Neighbour { iface: UPLINK, ip: UNDERLAY6.into(), mac: UNDERLAY_MAC });
    l
}

/// Source and destination ends of the UDP datagram in `frame`, its checksum checked.
fn udp6_ends(frame: &[u8]) -> ((Ipv6Addr, u16), (Ipv6Addr, u16)) {
    let ip = encap::ipv6::Packet::new_checked(&frame[14..]).expect("ipv6");
    assert_eq!(ip.next_header(), encap::ipv6::NEXT_UDP);
    let u = ip.payload();
    let sum = encap::ipv6::pseudo_header_sum(ip.src(), ip.dst(), 17, u.len()) + encap::checksum::sum(u);
    assert_eq!(encap::checksum::finish(sum), 0, "UDP checksum");
    let port = |at: usize| u16::from_be_bytes([u[at], u[at + 1]]);
    ((ip.src(), port(0)), (ip.dst(), port(2)))
}

#[test]
fn an_ipv6_pod_reaches_outside_the_pools_as_its_node_and_the_answer_comes_back() {
    let l = nat_lab6();
    let (v, out) = l.run_on(CALI_A1, &udp6_from_a1(OUTSIDE6, 64, 100));
    assert!(matches!(v, Verdict::Transmit { iface: UPLINK, .. }), "{v:?}");
    assert_eq!(&out[..6], &UNDERLAY_MAC.0);
    let ((src, port), dst) = udp6_ends(&out);
    assert_eq!((src, dst), (NODE_A6, (OUTSIDE6, 6000)));
    assert!(crate::nat::PORTS.contains(&port), "{port}");
    assert_eq!(encap::ipv6::Packet::new_checked(&out[14..]).expect("ipv6").hop_limit(), 63);
    // The answer, to the node's address and port, goes to the pod.
    let b = PacketBuilder::ethernet2(UNDERLAY_MAC.0, UPLINK_MAC.0)
        .ipv6(OUTSIDE6.octets(), NODE_A6.octets(), 64)
        .udp(6000, port);
    let mut reply = Vec::new();
    b.write(&mut reply, b"answer").expect("build");
    let (v, back) = l.run_on(UPLINK, &reply);
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    assert_eq!(udp6_ends(&back), ((OUTSIDE6, 6000), (POD_A1_6, 5000)));
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((n(&l.counters.nat_masqueraded), n(&l.counters.nat_restored)), (1, 1));
    // Another port of the node that no flow has: dropped, the kernel's ports stay its own.
    let b = PacketBuilder::ethernet2(UNDERLAY_MAC.0, UPLINK_MAC.0)
        .ipv6(OUTSIDE6.octets(), NODE_A6.octets(), 64)
        .udp(6000, 179);
    let mut bgp = Vec::new();
    b.write(&mut bgp, b"x").expect("build");
    assert_eq!(l.run_on(UPLINK, &bgp).0, Verdict::Pass);
    let stray = port.wrapping_add(1).max(*crate::nat::PORTS.start());
    let b = PacketBuilder::ethernet2(UNDERLAY_MAC.0, UPLINK_MAC.0)
        .ipv6(OUTSIDE6.octets(), NODE_A6.octets(), 64)
        .udp(6000, stray);
    let mut s = Vec::new();
    b.write(&mut s, b"x").expect("build");
    assert_eq!(l.run_on(UPLINK, &s).0, Verdict::Drop(DropReason::NatNoFlow));
}

#[test]
fn ipv6_inside_the_pools_and_errors_the_node_sends_keep_the_pods_address() {
    let l = nat_lab6();
    let (_, out) = l.run_on(CALI_A1, &udp6_from_a1(POD_A2_6, 64, 10));
    assert_eq!(udp6_ends(&out).0, (POD_A1_6, 5000), "pod to pod");
    // The hop limit runs out here: the pod hears it from the node, nothing is masqueraded.
    let (v, out) = l.run_on(CALI_A1, &udp6_from_a1(OUTSIDE6, 1, 10));
    assert!(matches!(v, Verdict::Transmit { iface: CALI_A1, .. }), "{v:?}");
    let (src, dst, t, ..) = icmp6_in(&out);
    assert_eq!((src, dst, t), (NODE_A6, POD_A1_6, encap::icmpv6::types::TIME_EXCEEDED));
    assert!(l.nat.is_empty());
}
