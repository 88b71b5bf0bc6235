//! Any bytes on any interface: the pipeline never panics and its spans stay in the buffer.
//! Input: first byte picks the ingress interface, the rest is the frame.
#![no_main]

use forwarding::fib::{Fib, NextHop, Route};
use forwarding::neigh::{NeighTable, Neighbour};
use forwarding::pipeline::{process, Context, Span, Verdict, ICMP_ERROR_MAX};
use forwarding::{Counters, IfaceId, IfaceRole, Interface, Interfaces};
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

const HEADROOM: usize = 128;
const BUF: usize = 2048;

/// The node the frames arrive at, built once: a FIB build per input held the fuzzer to
/// about 50 runs a second.
struct Node {
    ifaces: Interfaces,
    fib: Fib,
    neigh: NeighTable,
}

fn node() -> &'static Node {
    static NODE: OnceLock<Node> = OnceLock::new();
    NODE.get_or_init(|| {
        let mac = |b| encap::MacAddr([2, 0, 0, 0, 0, b]);
        let ifaces = Interfaces::new(vec![
            Interface { name: "eth0".into(), ifindex: 2, mac: mac(0xa0), mtu: 1500, role: IfaceRole::Uplink { addr: "192.168.100.100/24".parse().unwrap() } },
            Interface { name: "cali1".into(), ifindex: 3, mac: mac(2), mtu: 1500, role: IfaceRole::Pod { addr: Ipv4Addr::new(10, 244, 1, 2) } },
            Interface { name: "cali2".into(), ifindex: 4, mac: mac(3), mtu: 100, role: IfaceRole::Pod { addr: Ipv4Addr::new(10, 244, 1, 3) } },
        ]);
        let r = |p: &str, nh| Route { prefix: p.parse().unwrap(), next_hop: nh };
        let fib = Fib::build(&[
            r("192.168.100.0/24", NextHop::Local { iface: IfaceId(0) }),
            r("192.168.100.100/32", NextHop::Host),
            r("10.244.1.0/26", NextHop::Blackhole),
            r("10.244.1.2/32", NextHop::Local { iface: IfaceId(1) }),
            r("10.244.1.3/32", NextHop::Local { iface: IfaceId(2) }),
            r("10.244.2.0/26", NextHop::Direct { iface: IfaceId(0), gateway: Ipv4Addr::new(192, 168, 100, 101) }),
        ]);
        let mut neigh = NeighTable::default();
        neigh.insert(Neighbour { iface: IfaceId(1), ip: Ipv4Addr::new(10, 244, 1, 2), mac: mac(1) });
        Node { ifaces, fib, neigh }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, frame)) = data.split_first() else { return };
    let frame = &frame[..frame.len().min(BUF - HEADROOM - ICMP_ERROR_MAX)];
    let n = node();
    let counters = Counters::new(3);
    let mut buf = vec![0u8; BUF];
    buf[HEADROOM..HEADROOM + frame.len()].copy_from_slice(frame);
    let ctx = Context { fib: &n.fib, neigh: &n.neigh, ifaces: &n.ifaces, gso: None };
    let span = Span { start: HEADROOM, end: HEADROOM + frame.len() };
    match process(&ctx, &counters, IfaceId(u16::from(sel % 3)), &mut buf, span) {
        Verdict::Transmit { span, .. } | Verdict::Resolve { span, .. } => assert!(span.start <= span.end && span.end <= BUF),
        _ => {}
    }
});
