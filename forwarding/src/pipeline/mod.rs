//! The per-packet pipeline: a pure function from (frame, FIB snapshot, neighbour snapshot,
//! interfaces) to a [`Verdict`], rewriting the packet in place. No I/O, no allocation, no lock.
//!
//! parse → validate → RPF and no-IPIP on pod interfaces → IPIP from the uplink: sender must be
//! a known node, then decapsulate → FIB lookup → TTL → MTU → rewrite (TTL and checksum
//! incrementally, RFC 1624) → encapsulate if the route says IPIP → L2 header. ARP for the
//! pods' gateway 169.254.1.1 is answered here (proxy ARP); ICMP errors are built in place and
//! routed like any locally originated packet. Every drop is counted with its reason.
//!
//! The same stages serve the `tun` data plane, whose interfaces carry bare IPv4 packets
//! ([`process_l3`]).

use crate::counters::{bump, Counters, DropReason};
use crate::fib::{Fib, NextHop};
use crate::iface::{IfaceId, IfaceRole, Interface, Interfaces};
use crate::nat::Nat;
use crate::neigh::{NeighTable, Neighbour};
use encap::arp::{ArpRepr, Operation};
use encap::ethernet::{self, EtherType};
use encap::gro;
use encap::gso::{self, GsoError, TcpSegments, UdpSegments, VnetHdr};
use encap::ipip::{self, DecapError};
use encap::vxlan;
use encap::{icmp, icmpv6, ipv4, ipv6, MacAddr, WireError};
use std::net::{IpAddr, Ipv4Addr};

/// The gateway every pod routes through; it exists only as our proxy-ARP answer (Calico's
/// convention).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// The pods' IPv6 gateway, which the router answers neighbour solicitations for.
pub const POD_GATEWAY6: std::net::Ipv6Addr = encap::icmpv6::CALICO_GATEWAY;

/// TTL of the packets this node originates (ICMP errors).
const LOCAL_TTL: u8 = 64;

/// Room an ICMP error may need past the end of the packet it replaces: it quotes at most the
/// whole packet, after IP and ICMP headers of its own (IPv6's are the longer).
pub const ICMP_ERROR_MAX: usize = ipv6::HEADER_LEN + icmpv6::HEADER_LEN;

/// Room a packet needs in front of it to be encapsulated and get an Ethernet header.
pub const HEADROOM_NEEDED: usize = ethernet::HEADER_LEN + vxlan::OVERHEAD;

/// What the pipeline reads: the snapshots of one batch, and the offload state of the packet
/// at hand (the worker sets `gso` per packet).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub fib: &'a Fib,
    pub neigh: &'a NeighTable,
    pub ifaces: &'a Interfaces,
    /// The masquerade table (`natOutgoing`), shared by the workers.
    pub nat: &'a Nat,
    /// Set while the packet is an offloaded TCP super-packet: the payload bytes of each of
    /// its segments on the wire (`gso_size` of its virtio-net header).
    pub gso: Option<u16>,
    /// How many packets of the wire this one stands for: more than one for a super-packet
    /// merged from a UDP one ([`merge_vxlan_super`]), whose drops and decapsulations count
    /// each.
    pub packets: u64,
}

/// Where a packet sits in the buffer: `buf[start..end]`. The buffer is larger than the packet
/// so that headers can be pushed in front and ICMP errors built in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// Where a routed packet leaves: the interface, the neighbour to hand it to, and the tunnel
/// when it must be wrapped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub iface: IfaceId,
    pub hop: Ipv4Addr,
    pub tunnel: Option<Tunnel>,
}

/// Where a routed IPv6 packet leaves: the interface and the neighbour to hand it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress6 {
    pub iface: IfaceId,
    pub hop: std::net::Ipv6Addr,
}

/// The encapsulation toward another node, and that node's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    Ipip(Ipv4Addr),
    Vxlan(Ipv4Addr),
}

impl Tunnel {
    /// Bytes the encapsulation adds, which the MTU toward the tunnel loses.
    pub fn overhead(self) -> u16 {
        match self {
            Tunnel::Ipip(_) => ipip::OVERHEAD as u16,
            Tunnel::Vxlan(_) => vxlan::OVERHEAD as u16,
        }
    }
}

/// An IPv4 packet at `buf[span]` (TTL already decremented) to be split into pieces of at
/// most `mtu` bytes and sent by `egress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragmentation {
    pub span: Span,
    pub mtu: u16,
    pub egress: Egress,
}

/// An offloaded TCP super-packet at `buf[span]` (TTL already decremented) to be cut into
/// segments of `mss` payload bytes, each sent by `egress`: the tunnel has no offload type, or
/// the next hop must be resolved first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segmentation {
    pub span: Span,
    pub mss: u16,
    pub egress: Egress,
}

/// The outcome for one received packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[span]` out of `iface` (an Ethernet frame, or a bare IPv4 packet on `tun`
    /// interfaces). `learn` carries a neighbour gleaned from the frame (the sender of a
    /// proxy-ARP request) for the slow path.
    Transmit { iface: IfaceId, span: Span, learn: Option<Neighbour> },
    /// Ready to send except for the destination MAC of `next_hop`, which is unknown.
    Resolve { iface: IfaceId, next_hop: IpAddr, span: Span },
    /// Too big for the egress and fragmentable: hand it to [`fragment`].
    Fragment(Fragmentation),
    /// An offloaded super-packet forwarded whole: send `buf[span]` out of `iface` with the
    /// virtio-net header it came with, and the kernel or the next hop segments it.
    TransmitWhole { iface: IfaceId, span: Span },
    /// An offloaded super-packet to cut into segments here: hand it to [`segment`].
    Segment(Segmentation),
    /// An ARP answer for the neighbour table; nothing to send.
    Learn(Neighbour),
    /// Nothing to send: the frame is the kernel's (addressed to this node, not IPv4, not for
    /// our MAC), or it was consumed and counted (an ICMP error that could not be routed).
    Pass,
    /// Dropped, already counted.
    Drop(DropReason),
}

/// Processes the Ethernet frame `buf[span]` received on `in_if`.
pub fn process(ctx: &Context<'_>, counters: &Counters, in_if: IfaceId, buf: &mut [u8], span: Span) -> Verdict {
    let v = classify(ctx, counters, in_if, buf, span);
    if let Verdict::Drop(r) = v {
        counters.count_drops(r, ctx.packets);
    }
    v
}

/// Processes the bare IPv4 packet `buf[span]` received on a `tun`-mode interface.
pub fn process_l3(ctx: &Context<'_>, counters: &Counters, in_if: IfaceId, buf: &mut [u8], span: Span) -> Verdict {
    // The kernel also routes its own IPv6 into tunl0; that is not ours to judge.
    if buf.get(span.start).is_some_and(|b| b >> 4 == 6) {
        return Verdict::Pass;
    }
    let v = match ctx.ifaces.get(in_if).map(|f| f.role) {
        Some(IfaceRole::Tun) => ip_input(ctx, counters, Ingress::Tun, buf, span.start, span.end),
        Some(IfaceRole::RawIpip) => ip_input(ctx, counters, Ingress::RawIpip, buf, span.start, span.end),
        Some(IfaceRole::VxlanUdp) => ip_input(ctx, counters, Ingress::VxlanUdp, buf, span.start, span.end),
        _ => Verdict::Pass,
    };
    count(counters, v)
}

fn count(counters: &Counters, v: Verdict) -> Verdict {
    if let Verdict::Drop(r) = v {
        counters.count_drop(r);
    }
    v
}

/// How a packet entered, which decides the checks it gets.
#[derive(Debug, Clone, Copy)]
enum Ingress {
    /// From a pod's veth: RPF, no IPIP.
    Pod(Ipv4Addr),
    /// From the underlay link: IPIP to our address is decapsulated.
    Uplink,
    /// Routed to `tunl0` by the kernel, which already decremented the TTL.
    Tun,
    /// IPIP delivered to the node address by the kernel, on the raw socket.
    RawIpip,
    /// VXLAN delivered to the node's UDP port 4789 by the kernel (outer headers rebuilt).
    VxlanUdp,
}

fn classify(ctx: &Context<'_>, counters: &Counters, in_if: IfaceId, buf: &mut [u8], span: Span) -> Verdict {
    let Some(iface) = ctx.ifaces.get(in_if) else {
        return Verdict::Pass;
    };
    let Some(frame) = buf.get(span.start..span.end) else {
        return Verdict::Drop(DropReason::ShortFrame);
    };
    let Ok(eth) = ethernet::Frame::new_checked(frame) else {
        return Verdict::Drop(DropReason::ShortFrame);
    };
    match eth.ethertype() {
        EtherType::Arp => arp(ctx.neigh, iface, in_if, counters, buf, span),
        EtherType::Ipv4 => {
            if eth.dst() != iface.mac {
                // Broadcast, multicast or another host's frame: not routed by us.
                return Verdict::Pass;
            }
            let ingress = match iface.role {
                IfaceRole::Pod { addr, .. } => Ingress::Pod(addr),
                _ => Ingress::Uplink,
            };
            ip_input(ctx, counters, ingress, buf, span.start + ethernet::HEADER_LEN, span.end)
        }
        EtherType::Ipv6 => v6::frame(ctx, counters, iface, in_if, buf, span),
        _ => Verdict::Pass,
    }
}

fn arp(
    neigh: &NeighTable,
    iface: &Interface,
    in_if: IfaceId,
    counters: &Counters,
    buf: &mut [u8],
    span: Span,
) -> Verdict {
    let payload = &buf[span.start + ethernet::HEADER_LEN..span.end];
    let Ok(req) = ArpRepr::parse(payload) else {
        return Verdict::Drop(DropReason::BadArp);
    };
    let learned = Neighbour { iface: in_if, ip: req.sender_ip.into(), mac: req.sender_mac };
    // RFC 826's merge: a neighbour we know that speaks with another MAC address has a new
    // one (a gratuitous ARP after a change, RFC 5227), whatever it asks.
    let moved = || neigh.lookup(in_if, req.sender_ip).is_some_and(|m| m != req.sender_mac);
    match iface.role {
        IfaceRole::Pod { addr, .. } => {
            let from_pod = req.sender_ip == addr && !req.sender_mac.is_multicast();
            match req.operation {
                Operation::Request if req.target_ip == POD_GATEWAY => {
                    // Proxy ARP: we are the pod's gateway. Answer in place.
                    let reply = ArpRepr {
                        operation: Operation::Reply,
                        sender_mac: iface.mac,
                        sender_ip: POD_GATEWAY,
                        target_mac: req.sender_mac,
                        target_ip: req.sender_ip,
                    };
                    let s = span.start;
                    ethernet::emit_header(&mut buf[s..], req.sender_mac, iface.mac, EtherType::Arp);
                    reply.emit(&mut buf[s + ethernet::HEADER_LEN..]);
                    bump(&counters.arp_replies_sent, 1);
                    let end = s + ethernet::HEADER_LEN + encap::arp::PACKET_LEN;
                    Verdict::Transmit { iface: in_if, span: Span { start: s, end }, learn: from_pod.then_some(learned) }
                }
                Operation::Reply if from_pod && req.target_ip == POD_GATEWAY => Verdict::Learn(learned),
                _ if from_pod && moved() => Verdict::Learn(learned),
                _ => Verdict::Pass,
            }
        }
        IfaceRole::Uplink { addr } => {
            // Replies to our requests, requests for our address (RFC 826: the asker is worth
            // remembering), and a known neighbour's new address. The kernel answers the
            // requests itself.
            let for_us = req.target_ip == addr.addr();
            let sane = addr.contains(&req.sender_ip) && req.sender_ip != addr.addr() && !req.sender_mac.is_multicast();
            if (for_us || moved()) && sane {
                Verdict::Learn(learned)
            } else {
                Verdict::Pass
            }
        }
        IfaceRole::Tun | IfaceRole::RawIpip | IfaceRole::VxlanUdp => Verdict::Pass,
    }
}

fn wire_drop(e: WireError) -> DropReason {
    match e {
        WireError::Truncated => DropReason::Ipv4Truncated,
        WireError::BadVersion => DropReason::BadVersion,
        WireError::BadHeaderLen => DropReason::BadHeaderLen,
        WireError::BadTotalLen => DropReason::BadTotalLen,
        WireError::BadChecksum => DropReason::BadChecksum,
        WireError::UnsupportedArp => DropReason::BadArp,
    }
}

fn gso_drop(_: GsoError) -> DropReason {
    DropReason::GsoFailed
}

fn decap_drop(e: DecapError) -> DropReason {
    match e {
        DecapError::Inner(_) | DecapError::InnerChecksum => DropReason::IpipMalformedInner,
        DecapError::InvalidEcn => DropReason::IpipInvalidEcn,
        _ => DropReason::IpipMalformedOuter,
    }
}

fn vxlan_decap_drop(e: DecapError) -> DropReason {
    match e {
        DecapError::InvalidEcn => DropReason::VxlanInvalidEcn,
        _ => DropReason::VxlanMalformed,
    }
}

fn bad_source(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() || u32::from(a) >> 28 == 0xf
}

/// Validates the IPv4 packet at `buf[l3..end]` and routes it.
fn ip_input(
    ctx: &Context<'_>,
    counters: &Counters,
    ingress: Ingress,
    buf: &mut [u8],
    l3: usize,
    end: usize,
) -> Verdict {
    let ip = match ipv4::Packet::new_checked(&buf[l3..end]) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(wire_drop(e)),
    };
    if !ip.verify_checksum() {
        return Verdict::Drop(DropReason::BadChecksum);
    }
    let (src, dst, proto) = (ip.src(), ip.dst(), ip.protocol());
    // Trim Ethernet padding: what we handle is exactly the datagram.
    let end = l3 + usize::from(ip.total_len());
    if dst.is_multicast() || dst.is_broadcast() {
        return Verdict::Pass;
    }
    if bad_source(src) {
        return Verdict::Drop(DropReason::BadSource);
    }
    match ingress {
        Ingress::Pod(addr) => {
            // RPF: a pod may only speak with its own address, and may not tunnel.
            if src != addr {
                return Verdict::Drop(DropReason::Spoofed);
            }
            if proto == ipv4::Protocol::IpIp {
                return Verdict::Drop(DropReason::IpipFromPod);
            }
        }
        Ingress::Tun if proto == ipv4::Protocol::IpIp => return Verdict::Drop(DropReason::IpipFromPod),
        // tun mode: the kernel routed this into tunl0 from a pod or from the node itself;
        // anything else would leave wrapped with our node address outside. (The kernel's
        // rp_filter on cali* holds pods to their own address, as Felix sets it.)
        Ingress::Tun if !ctx.fib.tunnels().is_local_pod(src) && ctx.ifaces.node_addr() != Some(src) => {
            return Verdict::Drop(DropReason::Spoofed)
        }
        // Our pods' addresses are ours: from the underlay they are forged.
        Ingress::Uplink if ctx.fib.tunnels().is_local_pod(src) => return Verdict::Drop(DropReason::Spoofed),
        Ingress::RawIpip => return decapsulate(ctx, counters, buf, l3, end, true),
        Ingress::VxlanUdp => return vxlan_decapsulate(ctx, counters, buf, l3, end, true),
        // We never send IPIP as one super-packet, and its inner packets' segment size is
        // not the outer one's.
        Ingress::Uplink if proto == ipv4::Protocol::IpIp && ctx.gso.is_some() => {
            return Verdict::Drop(DropReason::GsoFailed)
        }
        _ => {}
    }
    match ctx.fib.lookup(dst) {
        Some(NextHop::Host) => match ingress {
            Ingress::Uplink if proto == ipv4::Protocol::IpIp => decapsulate(ctx, counters, buf, l3, end, false),
            Ingress::Uplink if proto == ipv4::Protocol::Udp && is_vxlan(&buf[l3..end]) => {
                vxlan_decapsulate(ctx, counters, buf, l3, end, false)
            }
            Ingress::Uplink if !ctx.fib.tunnels().nat.masquerade.is_empty() && ctx.ifaces.node_addr() == Some(dst) => {
                restore(ctx, counters, (buf, l3, end), ctx.ifaces.node_addr(), |buf| {
                    let dst = ipv4::Packet::new_unchecked(&buf[l3..end]).dst();
                    forward(ctx, counters, buf, l3, end, ctx.fib.lookup(dst), Hop::Router)
                })
            }
            _ => Verdict::Pass,
        },
        nh => {
            let nat = &ctx.fib.tunnels().nat;
            let hop = match ingress {
                Ingress::Tun => Hop::Kernel,
                Ingress::Pod(_) if nat.applies(src, dst) => Hop::Masquerade,
                Ingress::Uplink => {
                    // A flow the outside opens toward a masquerading pod is answered as it is.
                    if matches!(nh, Some(NextHop::Local { .. })) && nat.applies(dst, src) {
                        ctx.nat.note_inbound::<std::net::Ipv4Addr>(&buf[l3..end]);
                    }
                    Hop::Router
                }
                _ => Hop::Router,
            };
            forward(ctx, counters, buf, l3, end, nh, hop)
        }
    }
}

/// What [`forward`] does besides routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hop {
    /// Nothing: the kernel routed the packet already (tun mode) and decremented its TTL.
    Kernel,
    /// Decrements the TTL.
    Router,
    /// Decrements the TTL, and masquerades the packet once every check that could answer
    /// its pod with an ICMP error has passed.
    Masquerade,
}

/// Masquerades the routed packet `pkt` as leaving `node` (the node's address of the
/// packet's family), counted ([`Nat::outbound`]).
pub(super) fn masquerade<A: crate::nat::Family>(
    ctx: &Context<'_>,
    counters: &Counters,
    pkt: &mut [u8],
    node: Option<A>,
) -> Result<(), DropReason> {
    let node = node.ok_or(DropReason::NoRoute)?;
    if ctx.nat.outbound(pkt, node, ctx.gso.is_some())? == crate::nat::Out::Masqueraded {
        bump(&counters.nat_masqueraded, 1);
    }
    Ok(())
}

/// The packet at `buf[l3..end]` from the underlay to the node's address `node` (of its
/// family): an answer to a masqueraded flow goes back to its pod ([`Nat::inbound`]), routed
/// by `route` (the family's forwarding, to the new destination); the rest is the kernel's.
pub(super) fn restore<A: crate::nat::Family>(
    ctx: &Context<'_>,
    counters: &Counters,
    (buf, l3, end): (&mut [u8], usize, usize),
    node: Option<A>,
    route: impl FnOnce(&mut [u8]) -> Verdict,
) -> Verdict {
    let Some(node) = node else {
        return Verdict::Pass;
    };
    match ctx.nat.inbound(&mut buf[l3..end], node, ctx.gso.is_some()) {
        None => Verdict::Pass,
        Some(Err(r)) => Verdict::Drop(r),
        Some(Ok(())) => {
            bump(&counters.nat_restored, 1);
            route(buf)
        }
    }
}

/// Unwraps IPIP addressed to this node. The sender must be a node of the cluster (or an
/// allowed range) before anything inside is looked at.
fn decapsulate(ctx: &Context<'_>, counters: &Counters, buf: &mut [u8], l3: usize, end: usize, to_tun: bool) -> Verdict {
    let outer_src = ipv4::Packet::new_unchecked(&buf[l3..end]).src();
    if !ctx.fib.tunnels().allows(outer_src) {
        return Verdict::Drop(DropReason::IpipUnknownSource);
    }
    let (s, e) = match ipip::decapsulate(buf, l3, end) {
        Ok(r) => r,
        Err(err) => return Verdict::Drop(decap_drop(err)),
    };
    bump(&counters.ipip_decapsulated, 1);
    from_tunnel(ctx, counters, buf, s, e, to_tun)
}

/// The packet that came out of a tunnel (IPIP or VXLAN) at `buf[s..e]`: checked as the
/// underlay's would be, then routed (or, `to_tun`, handed to the kernel through tunl0).
fn from_tunnel(ctx: &Context<'_>, counters: &Counters, buf: &mut [u8], s: usize, e: usize, to_tun: bool) -> Verdict {
    let inner = ipv4::Packet::new_unchecked(&buf[s..e]);
    let dst = inner.dst();
    if bad_source(inner.src()) {
        return Verdict::Drop(DropReason::BadSource);
    }
    // A cluster node does not send our own pods' traffic: forged inside the tunnel.
    if ctx.fib.tunnels().is_local_pod(inner.src()) {
        return Verdict::Drop(DropReason::Spoofed);
    }
    if to_tun {
        // `tun` mode: the kernel routes the inner packet to the pod (and decrements its TTL).
        // A merged super-packet goes whole: the device takes it with its offload header.
        let span = Span { start: s, end: e };
        return match ctx.ifaces.by_role(|r| *r == IfaceRole::Tun) {
            Some(iface) if ctx.gso.is_some() => Verdict::TransmitWhole { iface, span },
            Some(iface) => Verdict::Transmit { iface, span, learn: None },
            None => Verdict::Drop(DropReason::TxError),
        };
    }
    match ctx.fib.lookup(dst) {
        Some(NextHop::Host) => Verdict::Drop(DropReason::IpipForNode),
        nh => forward(ctx, counters, buf, s, e, nh, Hop::Router),
    }
}

/// Whether the checked IPv4 packet is UDP to the VXLAN port (and not a later fragment).
fn is_vxlan(ip: &[u8]) -> bool {
    let p = ipv4::Packet::new_unchecked(ip);
    let l4 = p.header_len();
    p.frag_offset() == 0 && ip.get(l4 + 2..l4 + 4).is_some_and(|d| d == vxlan::PORT.to_be_bytes())
}

/// Unwraps VXLAN addressed to this node, from a node of the cluster (or an allowed range),
/// on the pod network's VNI, and forwards the pod packet inside (`to_tun`: hands it to the
/// kernel through the tunnel device).
fn vxlan_decapsulate(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    l3: usize,
    end: usize,
    to_tun: bool,
) -> Verdict {
    let outer_src = ipv4::Packet::new_unchecked(&buf[l3..end]).src();
    if !ctx.fib.tunnels().allows(outer_src) {
        return Verdict::Drop(DropReason::VxlanUnknownSource);
    }
    let d = match vxlan::decapsulate(buf, l3, end) {
        Ok(d) => d,
        Err(err) => return Verdict::Drop(vxlan_decap_drop(err)),
    };
    if d.vni != vxlan::CALICO_VNI {
        return Verdict::Drop(DropReason::VxlanWrongVni);
    }
    bump(&counters.vxlan_decapsulated, ctx.packets);
    from_tunnel(ctx, counters, buf, d.start, d.end, to_tun)
}

/// Resolves a route to the interface and neighbour a packet leaves by.
fn egress(nh: NextHop, dst: Ipv4Addr) -> Option<Egress> {
    match nh {
        NextHop::Local { iface } => Some(Egress { iface, hop: dst, tunnel: None }),
        NextHop::Direct { iface, gateway } => Some(Egress { iface, hop: gateway, tunnel: None }),
        NextHop::Ipip { iface, gateway, remote } => {
            Some(Egress { iface, hop: gateway, tunnel: Some(Tunnel::Ipip(remote)) })
        }
        NextHop::Vxlan { iface, gateway, remote } => {
            Some(Egress { iface, hop: gateway, tunnel: Some(Tunnel::Vxlan(remote)) })
        }
        NextHop::Host | NextHop::Blackhole | NextHop::Unreachable => None,
    }
}

/// Forwards the IPv4 packet at `buf[l3..end]` by route `nh`, doing what `hop` says.
fn forward(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    l3: usize,
    end: usize,
    nh: Option<NextHop>,
    hop: Hop,
) -> Verdict {
    let decrement = hop != Hop::Kernel;
    let ip = ipv4::Packet::new_unchecked(&buf[l3..end]);
    let (dst, ttl, df, ihl) = (ip.dst(), ip.ttl(), ip.dont_frag(), ip.header_len());
    let eg = match nh {
        Some(NextHop::Host) => return Verdict::Pass,
        Some(NextHop::Blackhole) => return Verdict::Drop(DropReason::Blackhole),
        None | Some(NextHop::Unreachable) => {
            return icmp_error(ctx, counters, buf, l3, end, icmp::ErrorKind::NetUnreachable, DropReason::NoRoute);
        }
        Some(nh) => match egress(nh, dst) {
            Some(eg) => eg,
            None => return Verdict::Drop(DropReason::NoRoute),
        },
    };
    if decrement && ttl <= 1 {
        return icmp_error(ctx, counters, buf, l3, end, icmp::ErrorKind::TtlExceeded, DropReason::TtlExceeded);
    }
    let Some(out) = ctx.ifaces.get(eg.iface) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let overhead = eg.tunnel.map_or(0, Tunnel::overhead);
    let mtu = out.mtu.saturating_sub(overhead);
    if let Some(mss) = ctx.gso {
        return forward_super(ctx, counters, buf, l3, end, eg, mss, mtu, hop);
    }
    let too_big = end - l3 > usize::from(mtu);
    if too_big && df {
        let kind = icmp::ErrorKind::FragmentationNeeded { mtu };
        return icmp_error(ctx, counters, buf, l3, end, kind, DropReason::FragNeeded);
    }
    if too_big && (ihl != ipv4::HEADER_LEN || usize::from(mtu) < ipv4::HEADER_LEN + 8) {
        return Verdict::Drop(DropReason::NeedsFragmentation);
    }
    if decrement {
        ipv4::Packet::new_unchecked(&mut buf[l3..end]).decrement_ttl();
    }
    if hop == Hop::Masquerade {
        if let Err(r) = masquerade(ctx, counters, &mut buf[l3..end], ctx.ifaces.node_addr()) {
            return Verdict::Drop(r);
        }
    }
    if too_big {
        return Verdict::Fragment(Fragmentation { span: Span { start: l3, end }, mtu, egress: eg });
    }
    output(ctx, counters, buf, l3, end, eg)
}

/// [`forward`] for an offloaded TCP super-packet: what must fit the MTU is one segment. It
/// goes out whole when the egress is plain Ethernet with a known neighbour; otherwise it is
/// cut into segments here.
#[allow(clippy::too_many_arguments)]
fn forward_super(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    l3: usize,
    end: usize,
    eg: Egress,
    mss: u16,
    mtu: u16,
    hop: Hop,
) -> Verdict {
    let wire = match TcpSegments::new(&buf[l3..end], mss) {
        Ok(s) => s.wire_len(),
        Err(e) => return Verdict::Drop(gso_drop(e)),
    };
    if wire > usize::from(mtu) {
        // TCP sets DF; a segment that does not fit is answered like any other packet.
        if ipv4::Packet::new_unchecked(&buf[l3..end]).dont_frag() {
            let kind = icmp::ErrorKind::FragmentationNeeded { mtu };
            return icmp_error(ctx, counters, buf, l3, end, kind, DropReason::FragNeeded);
        }
        return Verdict::Drop(DropReason::NeedsFragmentation);
    }
    if hop != Hop::Kernel {
        ipv4::Packet::new_unchecked(&mut buf[l3..end]).decrement_ttl();
    }
    if hop == Hop::Masquerade {
        if let Err(r) = masquerade(ctx, counters, &mut buf[l3..end], ctx.ifaces.node_addr()) {
            return Verdict::Drop(r);
        }
    }
    let plain = eg.tunnel.is_none()
        && ctx.ifaces.get(eg.iface).is_some_and(|f| f.role.is_ethernet())
        && ctx.neigh.lookup(eg.iface, eg.hop).is_some();
    if !plain {
        return Verdict::Segment(Segmentation { span: Span { start: l3, end }, mss, egress: eg });
    }
    match output(ctx, counters, buf, l3, end, eg) {
        Verdict::Transmit { iface, span, .. } => Verdict::TransmitWhole { iface, span },
        v => v,
    }
}

/// Puts the routed packet on the wire: encapsulates if needed, then writes the L2 header (or
/// hands a bare packet to a `tun`-mode interface).
fn output(ctx: &Context<'_>, counters: &Counters, buf: &mut [u8], l3: usize, end: usize, eg: Egress) -> Verdict {
    let Some(out) = ctx.ifaces.get(eg.iface) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let mut l3 = l3;
    if let Some(tunnel) = eg.tunnel {
        let Some(src) = ctx.ifaces.node_addr() else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        if l3 < HEADROOM_NEEDED {
            return Verdict::Drop(DropReason::NoHeadroom);
        }
        let ttl = ctx.fib.tunnels().ttl;
        l3 = match tunnel {
            Tunnel::Ipip(remote) => {
                bump(&counters.ipip_encapsulated, 1);
                ipip::encapsulate(buf, l3, end, &ipip::Tunnel { src, dst: remote, ttl }, counters.next_ident())
            }
            Tunnel::Vxlan(remote) => {
                bump(&counters.vxlan_encapsulated, 1);
                let t = vxlan::Tunnel {
                    src,
                    dst: remote,
                    ttl,
                    vni: vxlan::CALICO_VNI,
                    src_mac: vxlan::vtep_mac(src),
                    dst_mac: vxlan::vtep_mac(remote),
                };
                let port = vxlan::source_port(&buf[l3..end]);
                vxlan::encapsulate(buf, l3, end, &t, counters.next_ident(), port)
            }
        };
    }
    if !out.role.is_ethernet() {
        return Verdict::Transmit { iface: eg.iface, span: Span { start: l3, end }, learn: None };
    }
    let dst_mac = ctx.neigh.lookup(eg.iface, eg.hop);
    link_out(buf, l3, end, (eg.iface, out.mac), dst_mac, EtherType::Ipv4, eg.hop.into())
}

/// Puts the Ethernet header in front of the packet at `buf[l3..end]` for `out` (interface,
/// MAC) and sends it to `dst_mac`, or, while that is unknown, has the slow path resolve
/// `hop` first.
fn link_out(
    buf: &mut [u8],
    l3: usize,
    end: usize,
    out: (IfaceId, MacAddr),
    dst_mac: Option<MacAddr>,
    ethertype: EtherType,
    hop: IpAddr,
) -> Verdict {
    let (iface, src_mac) = out;
    let start = l3 - ethernet::HEADER_LEN;
    let dst_mac = dst_mac.filter(|m| *m != MacAddr::ZERO);
    ethernet::emit_header(&mut buf[start..], dst_mac.unwrap_or(MacAddr::ZERO), src_mac, ethertype);
    let span = Span { start, end };
    match dst_mac {
        None => Verdict::Resolve { iface, next_hop: hop, span },
        Some(_) => Verdict::Transmit { iface, span, learn: None },
    }
}

/// Replaces the datagram at `buf[l3..end]` by an ICMP error about it, addressed to its source
/// and routed like a locally originated packet. The original is counted as dropped for
/// `reason` whether or not an error may be sent (RFC 1812 §4.3.2.7 says when not).
fn icmp_error(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    l3: usize,
    end: usize,
    kind: icmp::ErrorKind,
    reason: DropReason,
) -> Verdict {
    let ip = ipv4::Packet::new_unchecked(&buf[l3..end]);
    let orig_src = ip.src();
    let total = usize::from(ip.total_len());
    let about_icmp_error =
        ip.protocol() == ipv4::Protocol::Icmp && ip.payload().first().is_some_and(|t| icmp::is_error_type(*t));
    // RFC 1812 §4.3.2.8: errors are rate-limited, so a flood of bad packets does not turn the
    // router into an amplifier. "Fragmentation needed" draws on its own per-source budget:
    // without it, path MTU discovery fails for everyone while someone spends the shared one.
    let token = |c: &Counters| match reason {
        DropReason::FragNeeded => c.take_frag_token(orig_src),
        _ => c.take_icmp_token(),
    };
    if about_icmp_error || ip.frag_offset() != 0 || bad_source(orig_src) || !token(counters) {
        return Verdict::Drop(reason);
    }
    let Some(node_addr) = ctx.ifaces.node_addr() else {
        return Verdict::Drop(reason);
    };
    let quote_len = total.min(end - l3).min(icmp::MAX_QUOTE);
    let icmp_at = l3 + ipv4::HEADER_LEN;
    let quote_at = icmp_at + icmp::HEADER_LEN;
    let new_end = quote_at + quote_len;
    if new_end > buf.len() {
        return Verdict::Drop(reason);
    }
    counters.count_drop(reason);
    buf.copy_within(l3..l3 + quote_len, quote_at);
    let icmp_len = icmp::emit_error(kind, &mut buf[icmp_at..new_end], quote_len);
    let repr = ipv4::Repr {
        src: node_addr,
        dst: orig_src,
        protocol: ipv4::Protocol::Icmp,
        tos: 0xc0, // internetwork control, as routers mark their own errors
        ident: counters.next_ident(),
        dont_frag: false,
        ttl: LOCAL_TTL,
        payload_len: icmp_len,
    };
    repr.emit(&mut buf[l3..]);
    // Route the error back; a failure here is not answered with another error.
    let Some(eg) = ctx.fib.lookup(orig_src).and_then(|nh| egress(nh, orig_src)) else {
        return Verdict::Pass;
    };
    bump(&counters.icmp_errors_sent, 1);
    output(ctx, counters, buf, l3, new_end, eg)
}

/// Splits the IPv4 packet at `buf[span]` into fragments of at most `mtu` bytes (RFC 791),
/// builds each in `scratch` (which needs [`HEADROOM_NEEDED`] bytes in front), sends it through
/// `output` and gives the result to `emit`. The original's options-free header is copied into
/// every fragment. Slow path: only packets too big for the egress without DF get here.
pub fn fragment(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &[u8],
    job: Fragmentation,
    scratch: &mut [u8],
    mut emit: impl FnMut(Verdict, &[u8]),
) {
    let Fragmentation { span, mtu, egress } = job;
    let ip = ipv4::Packet::new_unchecked(&buf[span.start..span.end]);
    let hl = ip.header_len();
    let payload = ip.payload();
    let base_off = usize::from(ip.frag_offset());
    let last_mf = ip.more_frags();
    let chunk = (usize::from(mtu) - hl) & !7;
    let mut off = 0;
    while off < payload.len() {
        let n = chunk.min(payload.len() - off);
        let more = off + n < payload.len() || last_mf;
        let at = HEADROOM_NEEDED;
        if at + hl + n > scratch.len() {
            counters.count_drop(DropReason::NeedsFragmentation);
            return;
        }
        let f = &mut scratch[at..at + hl + n];
        f[..hl].copy_from_slice(&buf[span.start..span.start + hl]);
        f[hl..].copy_from_slice(&payload[off..off + n]);
        let mut frag = ipv4::Packet::new_unchecked(&mut f[..]);
        frag.set_total_len((hl + n) as u16);
        frag.set_frag(false, more, ((base_off + off) / 8) as u16);
        frag.fill_checksum();
        let v = count(counters, output(ctx, counters, scratch, at, at + hl + n, egress));
        bump(&counters.fragments_sent, 1);
        emit(v, scratch);
        off += n;
    }
}

/// Cuts the super-packet of `job` into complete TCP segments (each with its own IPv4 and TCP
/// checksum), lays them one after another in `scratch` (each with [`HEADROOM_NEEDED`] bytes
/// in front), sends each through `output` and appends the results to `out`, whose spans
/// point into `scratch`. Segments that do not fit in `scratch` are counted as dropped.
pub fn segment(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &[u8],
    job: Segmentation,
    scratch: &mut [u8],
    out: &mut Vec<Verdict>,
) {
    let Segmentation { span, mss, egress } = job;
    let segs = match TcpSegments::new(&buf[span.start..span.end], mss) {
        Ok(s) => s,
        Err(e) => {
            counters.count_drop(gso_drop(e));
            return;
        }
    };
    let mut at = 0;
    for i in 0..segs.count() {
        let l3 = at + HEADROOM_NEEDED;
        let Some(len) = scratch.get_mut(l3..).and_then(|room| segs.write(i, room)) else {
            counters.count_drops(DropReason::GsoFailed, (segs.count() - i) as u64);
            return;
        };
        out.push(count(counters, output(ctx, counters, scratch, l3, l3 + len, egress)));
        bump(&counters.gso_segments, 1);
        // The next segment starts on a fresh cache line.
        at = (l3 + len + 63) & !63;
    }
}

/// A frame [`segment_vxlan`] built: where it goes, its offload header, the segments in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuperFrame {
    pub iface: IfaceId,
    pub span: Span,
    pub hdr: VnetHdr,
    pub segments: u64,
}

impl SuperFrame {
    /// Counts what was sent: the segments wrapped, and the super-packet.
    pub fn count_sent(&self, counters: &Counters) {
        bump(&counters.vxlan_encapsulated, self.segments);
        bump(&counters.gso_segments, self.segments);
        bump(&counters.udp_gso_sent, u64::from(self.hdr.is_gso()));
    }
}

/// Cuts the super-packet of `job`, whose egress is a VXLAN tunnel, into TCP segments, wraps
/// each in VXLAN and lays them end to end behind one outer IPv4 and UDP header: a UDP
/// super-packet (`GSO_UDP_L4`) the kernel cuts into complete VXLAN datagrams only where it
/// must, so that 64 KB cross the underlay as one packet and the far node can take them in
/// one read. One super-packet holds what fits in 64 KB; the rest go in the next. Results
/// go to `out`, counted by [`SuperFrame::count_sent`] once the kernel took them.
///
/// On an Ethernet egress (afpacket) each super-packet is a frame with its virtio-net header;
/// on tun mode's raw egress it starts at the outer IPv4 header, which the worker hands to a
/// UDP socket with `UDP_SEGMENT` instead (a raw socket cannot offload).
///
/// Returns false, having written nothing, when the egress's neighbour is not yet known:
/// [`segment`] then sends the segments one by one (and resolves).
pub fn segment_vxlan(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &[u8],
    job: Segmentation,
    scratch: &mut [u8],
    out: &mut Vec<SuperFrame>,
) -> bool {
    let Segmentation { span, mss, egress: eg } = job;
    let Some(Tunnel::Vxlan(remote)) = eg.tunnel else { return false };
    let (Some(port), Some(src)) = (ctx.ifaces.get(eg.iface), ctx.ifaces.node_addr()) else { return false };
    let dst_mac = if port.role.is_ethernet() {
        let Some(mac) = ctx.neigh.lookup(eg.iface, eg.hop) else { return false };
        Some(mac)
    } else {
        None
    };
    let l2 = if dst_mac.is_some() { ethernet::HEADER_LEN } else { 0 };
    let pkt = &buf[span.start..span.end];
    let segs = match TcpSegments::new(pkt, mss) {
        Ok(s) => s,
        Err(e) => {
            counters.count_drop(gso_drop(e));
            return true;
        }
    };
    let inner = ipv4::Packet::new_unchecked(pkt);
    let t = vxlan::Tunnel {
        src,
        dst: remote,
        ttl: ctx.fib.tunnels().ttl,
        vni: vxlan::CALICO_VNI,
        src_mac: vxlan::vtep_mac(src),
        dst_mac: vxlan::vtep_mac(remote),
    };
    let (tos, dont_frag, src_port) = (inner.tos(), inner.dont_frag(), vxlan::source_port(pkt));
    // Every datagram but the last is exactly this long; the kernel cuts at this size.
    let size = vxlan::INNER_HEADERS + segs.len(0);
    let head = l2 + vxlan::OUTER_HEADERS;
    let per_packet = ((usize::from(u16::MAX) - vxlan::OUTER_HEADERS) / size).max(1);
    let mut at = 0;
    let mut i = 0;
    while i < segs.count() {
        let n = per_packet.min(segs.count() - i);
        let mut end = at + head;
        for k in i..i + n {
            let l3 = end + vxlan::INNER_HEADERS;
            let Some(len) = scratch.get_mut(l3..).and_then(|room| segs.write(k, room)) else {
                counters.count_drops(DropReason::GsoFailed, (segs.count() - i) as u64);
                return true;
            };
            vxlan::emit_inner_headers(scratch, l3, &t);
            end = l3 + len;
        }
        let outer = vxlan::Outer { tos, dont_frag, ident: counters.next_ident(), src_port, partial_checksum: n > 1 };
        outer.emit(scratch, at + l2, end - at - head, &t);
        if let Some(mac) = dst_mac {
            ethernet::emit_header(&mut scratch[at..], mac, port.mac, EtherType::Ipv4);
        }
        let hdr = if n > 1 {
            VnetHdr {
                flags: gso::F_NEEDS_CSUM,
                gso_type: gso::GSO_UDP_L4,
                hdr_len: head as u16,
                gso_size: size as u16,
                csum_start: (l2 + ipv4::HEADER_LEN) as u16,
                csum_offset: 6,
            }
        } else {
            VnetHdr::NONE
        };
        out.push(SuperFrame { iface: eg.iface, span: Span { start: at, end }, hdr, segments: n as u64 });
        i += n;
        at = (end + 63) & !63;
    }
    true
}

/// The UDP super-packet (`GSO_UDP_L4`) in the Ethernet frame `buf[span]` received on
/// `in_if`, if it is VXLAN to this node from the underlay (a pod's is not unwrapped) whose
/// datagrams carry one run of a TCP flow's segments (what another node makes
/// of a pod's TCP super-packet), merged in place into one VXLAN packet around the TCP
/// super-packet they make ([`gro::merge_vxlan`]). It then goes through [`process`] once,
/// whole, as a pod's own super-packet does (with [`Context::packets`] its segment count),
/// instead of datagram by datagram and merged again for the pod: one copy of its bytes
/// where that took two and a checksum pass. `trusted`: the kernel marked its checksum
/// partial, so the bytes never left this machine's memory and the segments' checksums need
/// no check, as the kernel's own GRO trusts such packets. Returns the merged frame's span,
/// the offload header of the frame it becomes once unwrapped, and its segment count; `None`,
/// the frame untouched, for anything else, which [`process_udp_super`] takes.
pub fn merge_vxlan_super(
    ctx: &Context<'_>,
    counters: &Counters,
    in_if: IfaceId,
    buf: &mut [u8],
    span: Span,
    size: u16,
    trusted: bool,
) -> Option<(Span, VnetHdr, u64)> {
    // The uplink's frames (afpacket), or tun mode's UDP socket's packets (no link header).
    let l2 = match ctx.ifaces.get(in_if)?.role {
        IfaceRole::Uplink { .. } => ethernet::HEADER_LEN,
        IfaceRole::VxlanUdp => 0,
        _ => return None,
    };
    let l3 = span.start + l2;
    let pkt = buf.get_mut(l3..span.end)?;
    let ip = ipv4::Packet::new_checked(&*pkt).ok()?;
    if ctx.ifaces.node_addr() != Some(ip.dst()) || !is_vxlan(pkt) {
        return None;
    }
    let m = gro::merge_vxlan(pkt, size, !trusted)?;
    bump(&counters.udp_gso_received, 1);
    bump(&counters.gro_packets, 1);
    bump(&counters.gro_segments, m.segments as u64);
    let inner_l4 = l2 + ipv4::HEADER_LEN;
    let hdr = VnetHdr {
        flags: gso::F_NEEDS_CSUM,
        gso_type: gso::GSO_TCPV4,
        hdr_len: (inner_l4 + m.thl) as u16,
        gso_size: m.mss,
        csum_start: inner_l4 as u16,
        csum_offset: encap::tcp::CHECKSUM_OFFSET as u16,
    };
    Some((Span { start: span.start, end: l3 + m.len }, hdr, m.segments as u64))
}

/// A UDP super-packet (`GSO_UDP_L4`: VXLAN from another node, or a pod's `UDP_SEGMENT`) in
/// the Ethernet frame `buf[span]` received on `in_if` (or the bare IPv4 packet, from tun
/// mode's UDP socket): cut into its datagrams, each laid in `scratch` as a frame of its own
/// (with [`HEADROOM_NEEDED`] in front) and processed as if it had been received so. The
/// verdicts, whose spans point into `scratch`, go to `out`.
///
/// Datagrams get a full UDP checksum unless they are VXLAN addressed to this node, which
/// unwraps them at once: the super-packet's bytes never left the kernel of this machine, and
/// a zero checksum (RFC 7348 §5) spares a pass over them.
#[allow(clippy::too_many_arguments)]
pub fn process_udp_super(
    ctx: &Context<'_>,
    counters: &Counters,
    in_if: IfaceId,
    buf: &[u8],
    span: Span,
    size: u16,
    scratch: &mut [u8],
    out: &mut Vec<Verdict>,
) {
    let ethernet = ctx.ifaces.get(in_if).is_some_and(|f| f.role.is_ethernet());
    let l2 = if ethernet { ethernet::HEADER_LEN } else { 0 };
    let l3 = span.start + l2;
    let Some(pkt) = buf.get(l3..span.end) else {
        counters.count_drop(DropReason::ShortFrame);
        return;
    };
    let segs = match UdpSegments::new(pkt, size) {
        Ok(s) => s,
        Err(e) => {
            counters.count_drop(gso_drop(e));
            return;
        }
    };
    bump(&counters.udp_gso_received, 1);
    let ip = ipv4::Packet::new_unchecked(pkt);
    let ours = ctx.ifaces.node_addr() == Some(ip.dst()) && is_vxlan(pkt);
    let ctx = &Context { gso: None, ..*ctx };
    let mut at = 0;
    for i in 0..segs.count() {
        let start = at + HEADROOM_NEEDED;
        let l3 = start + l2;
        let Some(len) = scratch.get_mut(l3..).and_then(|room| segs.write(i, room, !ours)) else {
            counters.count_drops(DropReason::GsoFailed, (segs.count() - i) as u64);
            return;
        };
        scratch[start..l3].copy_from_slice(&buf[span.start..span.start + l2]);
        // The frame may grow in place (an ICMP error), so the next starts beyond that room.
        let one = Span { start, end: l3 + len };
        out.push(if ethernet {
            process(ctx, counters, in_if, scratch, one)
        } else {
            process_l3(ctx, counters, in_if, scratch, one)
        });
        at = (l3 + len + ICMP_ERROR_MAX + 63) & !63;
    }
}

#[cfg(test)]
mod tests;
mod v6;
