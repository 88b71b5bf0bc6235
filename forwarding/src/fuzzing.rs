//! Entry point for the pipeline fuzz target in `fuzz/` (and the test that replays its
//! corpus): any bytes, on any interface of either data plane.

use crate::fib::{Fib, NextHop, NextHop6, Route, Route6, Tunnels};
use crate::neigh::{NeighTable, Neighbour};
use crate::pipeline::{
    fragment, merge_vxlan_super, process, process_l3, process_udp_super, segment, segment_vxlan, Context, Span,
    Verdict, ICMP_ERROR_MAX,
};
use crate::{Counters, IfaceId, IfaceRole, Interface, Interfaces};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

const HEADROOM: usize = 128;
const BUF: usize = 70_000;

/// A node the frames arrive at, built once: a FIB build per input held the fuzzer to
/// about 50 runs a second.
struct Node {
    ifaces: Interfaces,
    fib: Fib,
    neigh: NeighTable,
    /// Shared by every run, so that flows one input makes meet the answers of the next.
    nat: crate::nat::Nat,
}

fn routes(uplink: IfaceId) -> Vec<Route> {
    let r = |p: &str, nh| Route { prefix: p.parse().expect("a literal prefix"), next_hop: nh };
    let gw = Ipv4Addr::new(192, 168, 100, 1);
    vec![
        r("192.168.100.0/24", NextHop::Local { iface: uplink }),
        r("192.168.100.100/32", NextHop::Host),
        r("10.244.1.0/26", NextHop::Blackhole),
        r("10.244.2.0/26", NextHop::Direct { iface: uplink, gateway: Ipv4Addr::new(192, 168, 100, 101) }),
        r("10.244.3.0/26", NextHop::Ipip { iface: uplink, gateway: gw, remote: Ipv4Addr::new(192, 168, 200, 101) }),
        r("10.244.5.0/26", NextHop::Vxlan { iface: uplink, gateway: gw, remote: Ipv4Addr::new(192, 168, 200, 101) }),
        r("10.250.0.0/16", NextHop::Unreachable),
        r("192.168.200.0/24", NextHop::Direct { iface: uplink, gateway: gw }),
    ]
}

fn pod6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, last)
}

/// The afpacket node is dual stack (the tun node is IPv4 only).
fn routes6(uplink: IfaceId) -> Vec<Route6> {
    let r = |p: &str, next_hop| Route6 { prefix: p.parse().expect("a literal prefix"), next_hop };
    vec![
        r("fd00:192:168:100::/64", NextHop6::Local { iface: uplink }),
        r("fd00:192:168:100::100/128", NextHop6::Host),
        r("fd00:10:244:1::/122", NextHop6::Blackhole),
        r("fd00:10:244:1::2/128", NextHop6::Local { iface: IfaceId(1) }),
        r("fd00:10:244:1::3/128", NextHop6::Local { iface: IfaceId(2) }),
        r(
            "fd00:10:244:2::/122",
            NextHop6::Direct { iface: uplink, gateway: "fd00:192:168:100::101".parse().expect("addr") },
        ),
        r("fd00:10:250::/48", NextHop6::Unreachable),
    ]
}

fn tunnels() -> Tunnels {
    let peers = [Ipv4Addr::new(192, 168, 100, 101), Ipv4Addr::new(192, 168, 200, 101)];
    Tunnels {
        ttl: 64,
        peers: peers.into_iter().collect(),
        allowed: vec!["172.16.0.0/12".parse().expect("a literal prefix")],
        local_pods: vec![Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3)],
        local_pods6: vec![pod6(2), pod6(3)],
        // The node's pods masquerade toward the underlay, so that flows and answers are fuzzed.
        nat: crate::nat::NatPolicy {
            masquerade: vec!["10.244.0.0/16".parse().expect("a literal prefix")],
            pools: vec!["10.244.0.0/16".parse().expect("a literal prefix")],
            masquerade6: vec!["fd00:10:244::/48".parse().expect("a literal prefix")],
            pools6: vec!["fd00:10:244::/48".parse().expect("a literal prefix")],
        },
    }
}

/// The afpacket node: uplink and two pods (one with a small MTU, for fragmentation).
fn afpacket() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let mac = |b| encap::MacAddr([2, 0, 0, 0, 0, b]);
        let ifaces = Interfaces::new(vec![
            Interface {
                name: "eth0".into(),
                ifindex: 2,
                mac: mac(0xa0),
                mtu: 1500,
                role: IfaceRole::Uplink { addr: "192.168.100.100/24".parse().expect("a literal prefix") },
            },
            Interface {
                name: "cali1".into(),
                ifindex: 3,
                mac: mac(2),
                mtu: 1500,
                role: IfaceRole::Pod { addr: Ipv4Addr::new(10, 244, 1, 2), addr6: Some(pod6(2)) },
            },
            Interface {
                name: "cali2".into(),
                ifindex: 4,
                mac: mac(3),
                mtu: 100,
                role: IfaceRole::Pod { addr: Ipv4Addr::new(10, 244, 1, 3), addr6: Some(pod6(3)) },
            },
        ])
        .with_node_addr6("fd00:192:168:100::100".parse().expect("addr"));
        let mut rs = routes(IfaceId(0));
        rs.push(Route {
            prefix: "10.244.1.2/32".parse().expect("a literal prefix"),
            next_hop: NextHop::Local { iface: IfaceId(1) },
        });
        rs.push(Route {
            prefix: "10.244.1.3/32".parse().expect("a literal prefix"),
            next_hop: NextHop::Local { iface: IfaceId(2) },
        });
        let fib = Fib::build(&rs).with_v6(&routes6(IfaceId(0))).with_tunnels(tunnels());
        let mut neigh = NeighTable::default();
        neigh.insert(Neighbour { iface: IfaceId(1), ip: Ipv4Addr::new(10, 244, 1, 2).into(), mac: mac(1) });
        neigh.insert(Neighbour { iface: IfaceId(0), ip: Ipv4Addr::new(192, 168, 100, 1).into(), mac: mac(0xa1) });
        neigh.insert(Neighbour { iface: IfaceId(0), ip: Ipv4Addr::new(192, 168, 100, 101).into(), mac: mac(0xa2) });
        neigh.insert(Neighbour { iface: IfaceId(1), ip: pod6(2).into(), mac: mac(1) });
        let gw6: Ipv6Addr = "fd00:192:168:100::101".parse().expect("addr");
        neigh.insert(Neighbour { iface: IfaceId(0), ip: gw6.into(), mac: mac(0xa2) });
        Node { ifaces, fib, neigh, nat: Default::default() }
    })
}

/// The tun node: the kernel keeps the pods; the router sees tunl0, the raw IP socket and the
/// VXLAN UDP socket.
fn tun() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let ifaces = Interfaces::new(vec![
            Interface {
                name: "tunl0".into(),
                ifindex: 5,
                mac: encap::MacAddr([0; 6]),
                mtu: 1480,
                role: IfaceRole::Tun,
            },
            Interface {
                name: "ipip".into(),
                ifindex: 0,
                mac: encap::MacAddr([0; 6]),
                mtu: 1500,
                role: IfaceRole::RawIpip,
            },
            Interface {
                name: "vxlan-udp".into(),
                ifindex: 0,
                mac: encap::MacAddr([0; 6]),
                mtu: 1500,
                role: IfaceRole::VxlanUdp,
            },
        ])
        // As a tun-mode node has it: the address its UDP sockets are bound to.
        .with_node_addr(Ipv4Addr::new(192, 168, 100, 100));
        let mut rs = routes(IfaceId(1));
        rs.push(Route {
            prefix: "10.244.1.0/26".parse().expect("a literal prefix"),
            next_hop: NextHop::Local { iface: IfaceId(0) },
        });
        Node {
            ifaces,
            fib: Fib::build(&rs).with_tunnels(tunnels()),
            neigh: NeighTable::default(),
            nat: Default::default(),
        }
    })
}

fn in_buf(span: Span) {
    assert!(span.start <= span.end && span.end <= BUF, "{span:?}");
}

/// Any bytes on any interface of either data plane: the pipeline never panics and every span
/// it hands out stays in its buffer, also for super-packets (virtio-net header with a segment
/// size), tunnel routes (IPIP and VXLAN out, and in), fragmentation and the tun entry point.
/// Input: a selector byte (bits 0-1: ingress interface; bit 2: the tun node instead of the
/// afpacket one; bit 3: a super-packet, its segment size in the next two bytes; bit 4 with
/// bit 3: a UDP super-packet, as the uplink's packet socket or tun mode's UDP socket reads
/// one, bit 5 its checksum partial), then the frame (the packet, in tun mode).
pub fn pipeline(data: &[u8]) {
    let Some((&sel, mut frame)) = data.split_first() else { return };
    let tun_mode = sel & 4 != 0;
    let mut gso = None;
    if sel & 8 != 0 {
        let Some((mss, rest)) = frame.split_first_chunk::<2>() else { return };
        gso = Some(u16::from_be_bytes(*mss));
        frame = rest;
    }
    let frame = &frame[..frame.len().min(BUF - HEADROOM - ICMP_ERROR_MAX)];
    // While a trace runs, the worker reads every packet for the trace id first.
    if crate::trace::belongs(frame, !tun_mode, 0x5254_5243) {
        let _ = crate::trace::summarize(frame, !tun_mode);
    }
    let n = if tun_mode { tun() } else { afpacket() };
    let counters = Counters::new(n.ifaces.len());
    let mut buf = vec![0u8; BUF];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let ctx = Context { fib: &n.fib, neigh: &n.neigh, ifaces: &n.ifaces, nat: &n.nat, gso, packets: 1 };
    let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
    let in_if = IfaceId(u16::from(sel & 3) % n.ifaces.len() as u16);
    let mut scratch = vec![0u8; 256 * 1024];
    if let Some(size) = gso.filter(|_| sel & 16 != 0) {
        // As the worker: merged whole if it is one TCP run in VXLAN to us, else datagrams.
        let trusted = sel & 32 != 0;
        let plain = Context { gso: None, ..ctx };
        if let Some((merged, hdr, packets)) = merge_vxlan_super(&plain, &counters, in_if, &mut buf, span, size, trusted)
        {
            in_buf(merged);
            assert!(merged.start == span.start && merged.end <= span.end, "merging never grows a frame");
            assert!(packets >= 2);
            let whole = Context { gso: Some(hdr.gso_size), packets, ..ctx };
            if tun_mode {
                let v = process_l3(&whole, &counters, in_if, &mut buf, merged);
                return check(&whole, &counters, v, &buf, &mut scratch);
            }
            return after(&whole, &counters, in_if, &mut buf, merged, &mut scratch);
        }
        let mut out = Vec::new();
        process_udp_super(&Context { gso: None, ..ctx }, &counters, in_if, &buf, span, size, &mut scratch, &mut out);
        for v in out {
            if let Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } = v {
                assert!(span.start <= span.end && span.end <= scratch.len());
            }
        }
        return;
    }
    if tun_mode {
        let v = process_l3(&ctx, &counters, in_if, &mut buf, span);
        return check(&ctx, &counters, v, &buf, &mut scratch);
    }
    after(&ctx, &counters, in_if, &mut buf, span, &mut scratch)
}

/// The afpacket pipeline on `buf[span]`, and [`check`] on what it says.
fn after(ctx: &Context<'_>, counters: &Counters, in_if: IfaceId, buf: &mut [u8], span: Span, scratch: &mut [u8]) {
    let v = process(ctx, counters, in_if, buf, span);
    check(ctx, counters, v, buf, scratch)
}

/// Every span a verdict hands out stays in its buffer, also once cut or fragmented.
fn check(ctx: &Context<'_>, counters: &Counters, v: Verdict, buf: &[u8], scratch: &mut [u8]) {
    match v {
        Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } | Verdict::TransmitWhole { span, .. } => {
            in_buf(span)
        }
        Verdict::Segment(job) => {
            in_buf(job.span);
            let mut supers = Vec::new();
            if segment_vxlan(ctx, counters, buf, job, scratch, &mut supers) {
                for f in supers {
                    assert!(f.span.start <= f.span.end && f.span.end <= scratch.len());
                    assert!(f.span.end - f.span.start <= 14 + 65535, "an outer IPv4 packet holds at most 64 KB");
                }
            }
            let mut out = Vec::new();
            segment(ctx, counters, buf, job, scratch, &mut out);
            for v in out {
                if let Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } = v {
                    assert!(span.start <= span.end && span.end <= scratch.len());
                }
            }
        }
        Verdict::Fragment(job) => {
            in_buf(job.span);
            let len = scratch.len();
            fragment(ctx, counters, buf, job, scratch, |v, _| {
                if let Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } = v {
                    assert!(span.start <= span.end && span.end <= len);
                }
            });
        }
        _ => {}
    }
}
