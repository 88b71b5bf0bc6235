//! `cargo bench -p forwarding --bench pipeline`: the per-packet cost of the pipeline alone
//! (no sockets), IPv4 against IPv6 in the same run: a small UDP datagram from a pod to
//! another node's block on a direct route, and one to a pod of the same node. The same
//! payload in both families; the IPv6 frame is 20 bytes longer. `ipv4/masqueraded` and
//! `ipv6/masqueraded` are the datagrams to outside the pools (natOutgoing) on a known flow,
//! against `*/other-node`: what the shared flow table costs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use encap::MacAddr;
use forwarding::fib::Tunnels;
use forwarding::neigh::{NeighTable, Neighbour};
use forwarding::pipeline::{process, Context, Span};
use forwarding::{Counters, Fib, IfaceId, IfaceRole, Interface, Interfaces, NextHop, NextHop6, Route, Route6};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

const UPLINK: IfaceId = IfaceId(0);
const POD1: IfaceId = IfaceId(1);
const POD2: IfaceId = IfaceId(2);
const HEADROOM: usize = 64;

struct Node {
    ifaces: Interfaces,
    fib: Fib,
    neigh: NeighTable,
    nat: forwarding::nat::Nat,
}

fn mac(b: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, b])
}

fn node() -> Node {
    let pod = |n: u8| (Ipv4Addr::new(10, 244, 1, n), Ipv6Addr::new(0xfd00, 0x10, 0x244, 0, 0, 0, 0, n.into()));
    let iface = |name: &str, ifindex, m, role| Interface { name: name.into(), ifindex, mac: mac(m), mtu: 1500, role };
    let ifaces = Interfaces::new(vec![
        iface("eth0", 2, 0xa0, IfaceRole::Uplink { addr: "192.168.100.100/24".parse().expect("net") }),
        iface("cali1", 3, 0x02, IfaceRole::Pod { addr: pod(1).0, addr6: Some(pod(1).1) }),
        iface("cali2", 4, 0x12, IfaceRole::Pod { addr: pod(2).0, addr6: Some(pod(2).1) }),
    ])
    .with_node_addr6("fd00:192:168:100::100".parse().expect("addr"));
    let r = |p: &str, next_hop| Route { prefix: p.parse().expect("net"), next_hop };
    let r6 = |p: &str, next_hop| Route6 { prefix: p.parse().expect("net"), next_hop };
    let node_b = Ipv4Addr::new(192, 168, 100, 101);
    let node_b6: Ipv6Addr = "fd00:192:168:100::101".parse().expect("addr");
    let fib = Fib::build(&[
        r("192.168.100.0/24", NextHop::Local { iface: UPLINK }),
        r("192.168.100.100/32", NextHop::Host),
        r("10.244.1.0/26", NextHop::Blackhole),
        r("10.244.1.1/32", NextHop::Local { iface: POD1 }),
        r("10.244.1.2/32", NextHop::Local { iface: POD2 }),
        r("10.244.2.0/26", NextHop::Direct { iface: UPLINK, gateway: node_b }),
        r("192.168.200.0/24", NextHop::Direct { iface: UPLINK, gateway: node_b }),
    ])
    .with_v6(&[
        r6("fd00:192:168:100::/64", NextHop6::Local { iface: UPLINK }),
        r6("fd00:192:168:100::100/128", NextHop6::Host),
        r6("fd00:10:244::/122", NextHop6::Blackhole),
        r6("fd00:10:244::1/128", NextHop6::Local { iface: POD1 }),
        r6("fd00:10:244::2/128", NextHop6::Local { iface: POD2 }),
        r6("fd00:10:244::40/122", NextHop6::Direct { iface: UPLINK, gateway: node_b6 }),
        r6("fd00:192:168:200::/64", NextHop6::Direct { iface: UPLINK, gateway: node_b6 }),
    ])
    .with_tunnels(Tunnels {
        local_pods: vec![pod(1).0, pod(2).0],
        local_pods6: vec![pod(1).1, pod(2).1],
        nat: forwarding::nat::NatPolicy {
            masquerade: vec!["10.244.0.0/16".parse().expect("net")],
            pools: vec!["10.244.0.0/16".parse().expect("net")],
            masquerade6: vec!["fd00:10:244::/48".parse().expect("net")],
            pools6: vec!["fd00:10:244::/48".parse().expect("net")],
        },
        ..Tunnels::default()
    });
    let mut neigh = NeighTable::default();
    neigh.insert(Neighbour { iface: UPLINK, ip: node_b.into(), mac: mac(0xb0) });
    neigh.insert(Neighbour { iface: UPLINK, ip: node_b6.into(), mac: mac(0xb0) });
    neigh.insert(Neighbour { iface: POD2, ip: pod(2).0.into(), mac: mac(0x13) });
    neigh.insert(Neighbour { iface: POD2, ip: pod(2).1.into(), mac: mac(0x13) });
    Node { ifaces, fib, neigh, nat: Default::default() }
}

/// A UDP datagram with 22 bytes of payload (a 64-byte IPv4 frame) from pod 1 to `dst`.
fn frame(dst: std::net::IpAddr) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(mac(1).0, mac(2).0);
    let b = match dst {
        std::net::IpAddr::V4(d) => b.ipv4([10, 244, 1, 1], d.octets(), 64),
        std::net::IpAddr::V6(d) => b.ipv6("fd00:10:244::1".parse::<Ipv6Addr>().expect("addr").octets(), d.octets(), 64),
    };
    let mut v = Vec::new();
    b.udp(20000, 9000).write(&mut v, &[0x5a; 22]).expect("build");
    v
}

fn pipeline(c: &mut Criterion) {
    let n = node();
    let ctx = Context { fib: &n.fib, neigh: &n.neigh, ifaces: &n.ifaces, nat: &n.nat, gso: None, packets: 1 };
    let counters = Counters::new(n.ifaces.len());
    let cases = [
        ("ipv4/other-node", frame(Ipv4Addr::new(10, 244, 2, 1).into())),
        ("ipv4/masqueraded", frame(Ipv4Addr::new(192, 168, 200, 1).into())),
        ("ipv6/other-node", frame("fd00:10:244::41".parse::<Ipv6Addr>().expect("addr").into())),
        ("ipv6/masqueraded", frame("fd00:192:168:200::1".parse::<Ipv6Addr>().expect("addr").into())),
        ("ipv4/same-node", frame(Ipv4Addr::new(10, 244, 1, 2).into())),
        ("ipv6/same-node", frame("fd00:10:244::2".parse::<Ipv6Addr>().expect("addr").into())),
    ];
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for (name, f) in &cases {
        let mut buf = vec![0u8; 2048];
        let span = Span { start: HEADROOM, end: HEADROOM + f.len() };
        g.bench_function(*name, |b| {
            b.iter(|| {
                // A fresh copy each time: the pipeline rewrites the frame in place.
                buf[span.start..span.end].copy_from_slice(f);
                black_box(process(&ctx, &counters, POD1, black_box(&mut buf), span))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
