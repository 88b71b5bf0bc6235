//! The IPv6 path of the pipeline, in the shape of the IPv4 one (RFC 8200, RFC 4443,
//! RFC 4861): header checks, proxy neighbour discovery for the pods' gateway, the pod source
//! check, hop limit with ICMPv6 time exceeded, ICMPv6 destination unreachable and packet too
//! big (a router never fragments IPv6), the node's own block blackholed, neighbours
//! resolved by the router. No header checksum to fix; upper-layer checksums are untouched.
//!
//! Nothing here runs in a single-stack node: with no IPv6 route, every IPv6 frame is the
//! kernel's, as before.

use super::{Context, Egress6, Span, Verdict, POD_GATEWAY6};
use crate::counters::{bump, Counters, DropReason};
use crate::fib::NextHop6;
use crate::iface::{IfaceId, IfaceRole, Interface};
use crate::neigh::Neighbour;
use encap::ethernet::{self, EtherType};
use encap::icmpv6::{self, Ndp, NDP_HOP_LIMIT};
use encap::ipv6::{self, NEXT_ICMPV6};
use encap::MacAddr;
use std::net::Ipv6Addr;

/// Hop limit of the packets this node originates (ICMPv6 errors).
const LOCAL_HOP_LIMIT: u8 = 64;

/// All-nodes multicast, where an advertisement answering a solicitation from :: goes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

fn bad_source(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.is_multicast() || a.is_loopback()
}

/// The IPv6 frame `buf[span]` received on `iface` (Ethernet).
pub(super) fn frame(
    ctx: &Context<'_>,
    counters: &Counters,
    iface: &Interface,
    in_if: IfaceId,
    buf: &mut [u8],
    span: Span,
) -> Verdict {
    if ctx.fib.v6().is_empty() {
        return Verdict::Pass;
    }
    let l3 = span.start + ethernet::HEADER_LEN;
    let Ok(ip) = ipv6::Packet::new_checked(&buf[l3..span.end]) else {
        return Verdict::Drop(DropReason::Ipv6Malformed);
    };
    let end = l3 + ip.total_len();
    if ip.next_header() == NEXT_ICMPV6 {
        let t = ip.payload().first().copied();
        if t == Some(icmpv6::types::NEIGHBOR_SOLICITATION) || t == Some(icmpv6::types::NEIGHBOR_ADVERTISEMENT) {
            return ndp(iface, in_if, counters, buf, Span { start: span.start, end }, ctx.neigh);
        }
    }
    let (src, dst) = (ip.src(), ip.dst());
    let eth = ethernet::Frame::new_unchecked(&buf[span.start..span.end]);
    // Multicast (MLD, router discovery) and other hosts' frames are not routed by us;
    // link-local addresses never leave their link (RFC 4291 §2.5.6).
    if dst.is_multicast() || eth.dst() != iface.mac || is_link_local(dst) || is_link_local(src) {
        return Verdict::Pass;
    }
    if bad_source(src) {
        return Verdict::Drop(DropReason::BadSource);
    }
    match iface.role {
        // RPF: a pod may only speak with its own address.
        IfaceRole::Pod { addr6, .. } if addr6 != Some(src) => return Verdict::Drop(DropReason::Spoofed),
        IfaceRole::Uplink { .. } if ctx.fib.tunnels().is_local_pod6(src) => return Verdict::Drop(DropReason::Spoofed),
        _ => {}
    }
    let nh = ctx.fib.lookup6(dst);
    let nat = &ctx.fib.tunnels().nat;
    let masquerade = match (iface.role, nh) {
        (IfaceRole::Pod { .. }, _) => nat.applies6(src, dst),
        (IfaceRole::Uplink { .. }, Some(NextHop6::Host))
            if !nat.masquerade6.is_empty() && ctx.ifaces.node_addr6() == Some(dst) =>
        {
            return super::restore(ctx, counters, (buf, l3, end), ctx.ifaces.node_addr6(), |buf| {
                let dst = ipv6::Packet::new_unchecked(&buf[l3..end]).dst();
                forward(ctx, counters, buf, l3, end, ctx.fib.lookup6(dst), false)
            });
        }
        (IfaceRole::Uplink { .. }, Some(NextHop6::Local { .. })) => {
            // A flow the outside opens toward a masquerading pod is answered as it is.
            if nat.applies6(dst, src) {
                ctx.nat.note_inbound::<Ipv6Addr>(&buf[l3..end]);
            }
            false
        }
        _ => false,
    };
    forward(ctx, counters, buf, l3, end, nh, masquerade)
}

/// Neighbour discovery on `iface`: the pods' gateway is answered here (proxy NDP), and what
/// the answers and questions teach about a neighbour is learned. The node's own addresses
/// are its kernel's to answer. `neigh`: the neighbours as the workers know them.
fn ndp(
    iface: &Interface,
    in_if: IfaceId,
    counters: &Counters,
    buf: &mut [u8],
    span: Span,
    neigh: &crate::neigh::NeighTable,
) -> Verdict {
    let l3 = span.start + ethernet::HEADER_LEN;
    let ip = ipv6::Packet::new_unchecked(&buf[l3..span.end]);
    let msg = match Ndp::parse(&ip) {
        Ok(m) => m,
        Err(_) => return Verdict::Drop(DropReason::NdpInvalid),
    };
    let (src, eth_src) = (ip.src(), ethernet::Frame::new_unchecked(&buf[span.start..span.end]).src());
    let learned = |mac: Option<MacAddr>| {
        mac.filter(|m| !m.is_multicast() && !src.is_unspecified()).map(|mac| Neighbour {
            iface: in_if,
            ip: src.into(),
            mac,
        })
    };
    // Linux answers a unicast solicitation (our refresh of an entry) without the target's
    // link-layer option: solicited, that confirms the MAC we know (RFC 4861 §7.2.5), or else
    // every entry would lapse and be resolved again each `reachable` period, dropping the
    // super-packets that met it unresolved.
    let confirmed = |mac: Option<MacAddr>, solicited: bool| {
        let mac = mac.or_else(|| solicited.then(|| neigh.lookup6(in_if, src)).flatten());
        learned(mac).map_or(Verdict::Pass, Verdict::Learn)
    };
    match (iface.role, msg) {
        (IfaceRole::Pod { .. }, Ndp::Solicit { target, source_mac }) if target == POD_GATEWAY6 => {
            // From :: (duplicate address detection) the answer goes to all nodes, unsolicited.
            let (dst, dst_mac, solicited) = if src.is_unspecified() {
                (ALL_NODES, icmpv6::multicast_mac(ALL_NODES), false)
            } else {
                (src, source_mac.unwrap_or(eth_src), true)
            };
            let na = Ndp::Advert { target, target_mac: Some(iface.mac), router: true, solicited, override_: true };
            let s = span.start;
            let at = l3 + ipv6::HEADER_LEN;
            if at + na.buffer_len() > buf.len() {
                return Verdict::Drop(DropReason::NdpInvalid);
            }
            let n = na.emit(&mut buf[at..], POD_GATEWAY6, dst);
            let repr = ipv6::Repr {
                src: POD_GATEWAY6,
                dst,
                next_header: NEXT_ICMPV6,
                traffic_class: 0,
                hop_limit: NDP_HOP_LIMIT,
                payload_len: n,
            };
            repr.emit(&mut buf[l3..]);
            ethernet::emit_header(&mut buf[s..], dst_mac, iface.mac, EtherType::Ipv6);
            bump(&counters.ndp_replies_sent, 1);
            Verdict::Transmit { iface: in_if, span: Span { start: s, end: at + n }, learn: learned(source_mac) }
        }
        (IfaceRole::Pod { addr6, .. }, Ndp::Advert { target, target_mac, solicited, .. }) if Some(target) == addr6 => {
            confirmed(target_mac, solicited)
        }
        // Answers to our solicitations, and questions for the node's address: the asker is
        // worth remembering; the kernel answers the questions itself.
        (IfaceRole::Uplink { .. }, Ndp::Advert { target, target_mac, solicited, .. }) if target == src => {
            confirmed(target_mac, solicited)
        }
        (IfaceRole::Uplink { .. }, Ndp::Solicit { source_mac, .. }) => match learned(source_mac) {
            Some(n) => Verdict::Learn(n),
            None => Verdict::Pass,
        },
        _ => Verdict::Pass,
    }
}

fn egress(nh: NextHop6, dst: Ipv6Addr) -> Option<Egress6> {
    match nh {
        NextHop6::Local { iface } => Some(Egress6 { iface, hop: dst }),
        NextHop6::Direct { iface, gateway } => Some(Egress6 { iface, hop: gateway }),
        NextHop6::Host | NextHop6::Blackhole | NextHop6::Unreachable => None,
    }
}

/// Forwards the IPv6 packet at `buf[l3..end]` by route `nh`; `masquerade`: with the node's
/// address as its source, once every check that could answer its pod with an error passed.
fn forward(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    l3: usize,
    end: usize,
    nh: Option<NextHop6>,
    masquerade: bool,
) -> Verdict {
    let ip = ipv6::Packet::new_unchecked(&buf[l3..end]);
    let (dst, hop_limit) = (ip.dst(), ip.hop_limit());
    let eg = match nh {
        Some(NextHop6::Host) => return Verdict::Pass,
        Some(NextHop6::Blackhole) => return Verdict::Drop(DropReason::Blackhole),
        None | Some(NextHop6::Unreachable) => {
            return error(ctx, counters, buf, l3, end, icmpv6::ErrorKind::NoRoute, DropReason::NoRoute)
        }
        Some(nh) => match egress(nh, dst) {
            Some(eg) => eg,
            None => return Verdict::Drop(DropReason::NoRoute),
        },
    };
    if hop_limit <= 1 {
        let kind = icmpv6::ErrorKind::HopLimitExceeded;
        return error(ctx, counters, buf, l3, end, kind, DropReason::HopLimitExceeded);
    }
    let Some(out) = ctx.ifaces.get(eg.iface) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    let mtu = usize::from(out.mtu);
    // Looked up once: the super-packet check and the Ethernet header both need it.
    let dst_mac = ctx.neigh.lookup6(eg.iface, eg.hop);
    // An offloaded TCP super-packet leaves whole where its next hop is known, and what must
    // fit the MTU is one segment. IPv6 super-packets are not cut here: one whose next hop
    // is not known yet is dropped and counted, and TCP sends it again once it is.
    let wire = match ctx.gso {
        Some(mss) => {
            let ip = ipv6::Packet::new_unchecked(&buf[l3..end]);
            let tcp = (ip.next_header() == ipv6::NEXT_TCP).then(|| encap::tcp::Packet::new_checked(ip.payload()).ok());
            let Some(Some(tcp)) = tcp else {
                return Verdict::Drop(DropReason::GsoFailed);
            };
            if !out.role.is_ethernet() || dst_mac.is_none() {
                return Verdict::Drop(DropReason::GsoFailed);
            }
            ipv6::HEADER_LEN + tcp.header_len() + usize::from(mss).min(ip.payload().len() - tcp.header_len())
        }
        None => end - l3,
    };
    if wire > mtu {
        let kind = icmpv6::ErrorKind::PacketTooBig { mtu: mtu as u32 };
        return error(ctx, counters, buf, l3, end, kind, DropReason::PacketTooBig);
    }
    ipv6::Packet::new_unchecked(&mut buf[l3..end]).decrement_hop_limit();
    if masquerade {
        if let Err(r) = super::masquerade(ctx, counters, &mut buf[l3..end], ctx.ifaces.node_addr6()) {
            return Verdict::Drop(r);
        }
    }
    match output(buf, l3, end, eg, out, dst_mac) {
        Verdict::Transmit { iface, span, .. } if ctx.gso.is_some() => Verdict::TransmitWhole { iface, span },
        v => v,
    }
}

/// Puts the routed packet on the wire behind an Ethernet header, out of `out` to `dst_mac`
/// (the next hop's, if known).
fn output(buf: &mut [u8], l3: usize, end: usize, eg: Egress6, out: &Interface, dst_mac: Option<MacAddr>) -> Verdict {
    if !out.role.is_ethernet() || l3 < ethernet::HEADER_LEN {
        return Verdict::Drop(DropReason::NoRoute);
    }
    super::link_out(buf, l3, end, (eg.iface, out.mac), dst_mac, EtherType::Ipv6, eg.hop.into())
}

/// Replaces the packet at `buf[l3..end]` by an ICMPv6 error about it, from the node's IPv6
/// address to its source, quoting as much of it as fits 1280 bytes (RFC 4443 §2.4), and
/// routes it. The original is counted as dropped for `reason` whether or not an error may
/// be sent: never about an ICMPv6 error, a multicast destination or a source that cannot
/// be answered, and within the same rate limits as ICMPv4's.
fn error(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    l3: usize,
    end: usize,
    kind: icmpv6::ErrorKind,
    reason: DropReason,
) -> Verdict {
    let ip = ipv6::Packet::new_unchecked(&buf[l3..end]);
    let (orig_src, orig_dst) = (ip.src(), ip.dst());
    let about_error =
        ip.next_header() == NEXT_ICMPV6 && ip.payload().first().is_some_and(|t| icmpv6::is_error_type(*t));
    // "Packet too big" has a budget per source of its own, as "fragmentation needed" has:
    // path MTU discovery must not fail because someone else spent the shared one.
    let token = match kind {
        icmpv6::ErrorKind::PacketTooBig { .. } => counters.take_frag_token6(orig_src),
        _ => counters.take_icmp_token(),
    };
    if about_error || orig_dst.is_multicast() || bad_source(orig_src) || is_link_local(orig_src) || !token {
        return Verdict::Drop(reason);
    }
    let Some(node) = ctx.ifaces.node_addr6() else {
        return Verdict::Drop(reason);
    };
    let quote_len = (end - l3).min(icmpv6::MAX_QUOTE);
    let icmp_at = l3 + ipv6::HEADER_LEN;
    let quote_at = icmp_at + icmpv6::HEADER_LEN;
    let new_end = quote_at + quote_len;
    if new_end > buf.len() {
        return Verdict::Drop(reason);
    }
    counters.count_drop(reason);
    buf.copy_within(l3..l3 + quote_len, quote_at);
    let n = icmpv6::emit_error(kind, &mut buf[icmp_at..new_end], quote_len, node, orig_src);
    let repr = ipv6::Repr {
        src: node,
        dst: orig_src,
        next_header: NEXT_ICMPV6,
        traffic_class: 0,
        hop_limit: LOCAL_HOP_LIMIT,
        payload_len: n,
    };
    repr.emit(&mut buf[l3..]);
    let Some(eg) = ctx.fib.lookup6(orig_src).and_then(|nh| egress(nh, orig_src)) else {
        return Verdict::Pass;
    };
    // Consumed and counted already: an error that cannot go out is not a second drop.
    let Some(out) = ctx.ifaces.get(eg.iface) else {
        return Verdict::Pass;
    };
    bump(&counters.icmp_errors_sent, 1);
    output(buf, l3, new_end, eg, out, ctx.neigh.lookup6(eg.iface, eg.hop))
}
