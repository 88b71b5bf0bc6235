//! Pipeline tests: real captured frames and hand-built ones, no sockets.

use super::*;
use crate::fib::Route;
use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket};

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

struct Lab {
    fib: Fib,
    neigh: NeighTable,
    ifaces: Interfaces,
    counters: Counters,
}

fn lab() -> Lab {
    let ifaces = Interfaces::new(vec![
        Interface {
            name: "eth0".into(),
            ifindex: 2,
            mac: UPLINK_MAC,
            mtu: 1500,
            role: IfaceRole::Uplink {
                addr: "192.168.100.100/24".parse().expect("net"),
            },
        },
        Interface {
            name: "calia1".into(),
            ifindex: 3,
            mac: CALI_A1_MAC,
            mtu: 1500,
            role: IfaceRole::Pod { addr: POD_A1 },
        },
        Interface {
            name: "calia2".into(),
            ifindex: 4,
            mac: CALI_A2_MAC,
            mtu: 1500,
            role: IfaceRole::Pod { addr: POD_A2 },
        },
    ]);
    let r = |p: &str, nh| Route {
        prefix: p.parse().expect("net"),
        next_hop: nh,
    };
    let fib = Fib::build(&[
        r("192.168.100.0/24", NextHop::Local { iface: UPLINK }),
        r("192.168.100.100/32", NextHop::Host),
        r("10.244.1.0/26", NextHop::Blackhole),
        r("10.244.1.2/32", NextHop::Local { iface: CALI_A1 }),
        r("10.244.1.3/32", NextHop::Local { iface: CALI_A2 }),
        r(
            "10.244.2.0/26",
            NextHop::Direct {
                iface: UPLINK,
                gateway: NODE_B,
            },
        ),
        r(
            "10.244.3.0/26",
            NextHop::Direct {
                iface: UPLINK,
                gateway: Ipv4Addr::new(192, 168, 100, 102),
            },
        ),
    ]);
    let mut neigh = NeighTable::default();
    neigh.insert(Neighbour {
        iface: CALI_A2,
        ip: POD_A2,
        mac: POD_A2_MAC,
    });
    neigh.insert(Neighbour {
        iface: CALI_A1,
        ip: POD_A1,
        mac: POD_A1_MAC,
    });
    neigh.insert(Neighbour {
        iface: UPLINK,
        ip: NODE_B,
        mac: NODE_B_MAC,
    });
    let counters = Counters::new(ifaces.len());
    Lab {
        fib,
        neigh,
        ifaces,
        counters,
    }
}

/// Frames of `fixtures/linux-ping.pcap`: ARP request, ARP reply, echo request, echo reply.
fn captured(i: usize) -> Vec<u8> {
    let bytes: &[u8] = include_bytes!("../../../fixtures/linux-ping.pcap");
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
    fn run_on(&self, in_if: IfaceId, frame: &[u8]) -> (Verdict, Vec<u8>) {
        let mut buf = vec![0u8; BUF];
        buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
        let ctx = Context {
            fib: &self.fib,
            neigh: &self.neigh,
            ifaces: &self.ifaces,
        };
        let span = Span {
            start: HEADROOM,
            end: HEADROOM + frame.len(),
        };
        let v = process(&ctx, &self.counters, in_if, &mut buf, span);
        let out = match v {
            Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } => {
                buf[span.start..span.end].to_vec()
            }
            _ => Vec::new(),
        };
        (v, out)
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.counters.drops(r)
    }
}

fn echo(src_mac: MacAddr, dst_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src_mac.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .icmpv4_echo_request(7, 1);
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
    assert!(
        matches!(
            v,
            Verdict::Transmit {
                iface: CALI_A2,
                learn: None,
                ..
            }
        ),
        "{v:?}"
    );
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
    assert!(
        matches!(v, Verdict::Transmit { iface: UPLINK, .. }),
        "{v:?}"
    );
    let p = SlicedPacket::from_ethernet(&out).expect("etherparse");
    let Some(etherparse::LinkSlice::Ethernet2(eth)) = p.link else {
        panic!("no ethernet")
    };
    assert_eq!(eth.destination(), NODE_B_MAC.0);
    assert_eq!(eth.source(), UPLINK_MAC.0);
    let Some(etherparse::NetSlice::Ipv4(ip)) = p.net else {
        panic!("no ip")
    };
    assert_eq!(ip.header().ttl(), 63);
    assert_eq!(ip.header().destination_addr(), POD_B1);
    assert_eq!(
        ip.header().to_header().calc_header_checksum(),
        ip.header().header_checksum()
    );
}

#[test]
fn forwards_from_uplink_to_local_pod() {
    let l = lab();
    let frame = echo(NODE_B_MAC, UPLINK_MAC, POD_B1, POD_A1, 63);
    let (v, out) = l.run_on(UPLINK, &frame);
    assert!(
        matches!(v, Verdict::Transmit { iface: CALI_A1, .. }),
        "{v:?}"
    );
    assert_eq!(&out[..6], &POD_A1_MAC.0);
}

#[test]
fn unknown_next_hop_asks_for_resolution() {
    let l = lab();
    let (v, _) = l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 244, 3, 9), 64));
    assert_eq!(
        v,
        Verdict::Resolve {
            iface: UPLINK,
            next_hop: Ipv4Addr::new(192, 168, 100, 102),
            span: Span {
                start: HEADROOM,
                end: HEADROOM + 98
            }
        }
    );
}

#[test]
fn ttl_1_gets_time_exceeded_from_the_node() {
    for ttl in [0, 1] {
        let l = lab();
        let frame = from_pod_a1(POD_B1, ttl);
        let (v, out) = l.run_on(CALI_A1, &frame);
        assert!(
            matches!(v, Verdict::Transmit { iface: CALI_A1, .. }),
            "{v:?}"
        );
        let p = SlicedPacket::from_ethernet(&out).expect("etherparse");
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            panic!("no ip")
        };
        assert_eq!(ip.header().source_addr(), NODE_A);
        assert_eq!(ip.header().destination_addr(), POD_A1);
        let Some(etherparse::TransportSlice::Icmpv4(icmp)) = &p.transport else {
            panic!("no icmp")
        };
        assert!(matches!(icmp.icmp_type(), Icmpv4Type::TimeExceeded(_)));
        // The quote is the original header plus 8 bytes, checksum valid.
        assert_eq!(icmp.payload(), &frame[14..14 + 28]);
        assert!(encap::icmp::Packet::new_checked(&out[34..])
            .expect("icmp")
            .verify_checksum());
        assert_eq!(l.drops(DropReason::TtlExceeded), 1);
        assert_eq!(
            l.counters
                .icmp_errors_sent
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}

#[test]
fn no_route_gets_net_unreachable() {
    let l = lab();
    let (v, out) = l.run_on(CALI_A1, &from_pod_a1(Ipv4Addr::new(10, 99, 0, 1), 64));
    assert!(
        matches!(v, Verdict::Transmit { iface: CALI_A1, .. }),
        "{v:?}"
    );
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
    assert_eq!(
        l.run_on(CALI_A1, &frame).0,
        Verdict::Drop(DropReason::Spoofed)
    );
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
    let mut cases: Vec<(Vec<u8>, DropReason)> = vec![
        (good[..10].to_vec(), DropReason::ShortFrame),
        (good[..30].to_vec(), DropReason::Ipv4Truncated),
    ];
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
        assert_eq!(
            l.run_on(CALI_A1, &frame).0,
            Verdict::Drop(reason),
            "{reason:?}"
        );
        assert_eq!(l.drops(reason), 1, "{reason:?}");
    }
}

#[test]
fn no_icmp_error_about_an_icmp_error() {
    let l = lab();
    // A time-exceeded message from pod-a1 with TTL 1.
    let b = PacketBuilder::ethernet2(POD_A1_MAC.0, CALI_A1_MAC.0)
        .ipv4(POD_A1.octets(), POD_B1.octets(), 1)
        .icmpv4(Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ));
    let mut frame = Vec::new();
    b.write(&mut frame, &[0u8; 28]).expect("build");
    assert_eq!(
        l.run_on(CALI_A1, &frame).0,
        Verdict::Drop(DropReason::TtlExceeded)
    );
    assert_eq!(
        l.counters
            .icmp_errors_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn too_big_with_df_gets_fragmentation_needed() {
    let mut l = lab();
    l.ifaces = Interfaces::new(
        l.ifaces
            .iter()
            .map(|(_, f)| Interface {
                mtu: if f.name == "eth0" { 80 } else { f.mtu },
                ..f.clone()
            })
            .collect(),
    );
    let (v, out) = l.run_on(CALI_A1, &with_df(from_pod_a1(POD_B1, 64), true));
    assert!(
        matches!(v, Verdict::Transmit { iface: CALI_A1, .. }),
        "{v:?}"
    );
    let icmp = encap::icmp::Packet::new_checked(&out[34..]).expect("icmp");
    assert_eq!((icmp.msg_type(), icmp.code()), (3, 4));
    assert_eq!(icmp.rest(), [0, 0, 0, 80]);
    // Without DF the packet cannot be fragmented yet: counted drop.
    let (v, _) = l.run_on(CALI_A1, &with_df(from_pod_a1(POD_B1, 64), false));
    assert_eq!(v, Verdict::Drop(DropReason::NeedsFragmentation));
}

#[test]
fn proxy_arp_answers_for_the_pod_gateway() {
    let l = lab();
    let mut req = captured(0);
    req[38..42].copy_from_slice(&POD_GATEWAY.octets());
    let (v, out) = l.run_on(CALI_A1, &req);
    let Verdict::Transmit { iface, learn, .. } = v else {
        panic!("{v:?}")
    };
    assert_eq!(iface, CALI_A1);
    assert_eq!(
        learn,
        Some(Neighbour {
            iface: CALI_A1,
            ip: POD_A1,
            mac: POD_A1_MAC
        })
    );
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
        Verdict::Learn(Neighbour {
            iface: UPLINK,
            ip: NODE_B,
            mac: NODE_B_MAC
        })
    );
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

/// Replays every file of the fuzz corpus through the pipeline: nothing panics, and every
/// verdict's span lies inside the buffer.
#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pipeline");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("no corpus at {}", dir.display())
    };
    let l = lab();
    let mut n = 0;
    for e in entries.flatten() {
        let data = std::fs::read(e.path()).expect("read corpus file");
        if data.is_empty() {
            continue;
        }
        let in_if = IfaceId(u16::from(data[0] % 3));
        let frame = &data[1..data.len().min(1 + BUF - HEADROOM - ICMP_ERROR_MAX)];
        let (v, _) = l.run_on(in_if, frame);
        if let Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } = v {
            assert!(span.start <= span.end && span.end <= BUF);
        }
        n += 1;
    }
    assert!(n >= 5, "corpus too small: {n}");
}
