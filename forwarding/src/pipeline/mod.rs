//! The per-packet pipeline: a pure function from (frame, FIB snapshot, neighbour snapshot,
//! interfaces) to a [`Verdict`], rewriting the frame in place. No I/O, no allocation, no lock.
//!
//! parse → validate → RPF on pod interfaces → FIB lookup → TTL → MTU → rewrite (TTL and
//! checksum incrementally, RFC 1624) → Ethernet header. ARP for the pods' gateway
//! 169.254.1.1 is answered here (proxy ARP); ICMP errors are built in place and routed like
//! any locally originated packet. Every drop is counted with its reason.

use crate::counters::{bump, Counters, DropReason};
use crate::fib::{Fib, NextHop};
use crate::iface::{IfaceId, IfaceRole, Interface, Interfaces};
use crate::neigh::{NeighTable, Neighbour};
use encap::arp::{ArpRepr, Operation};
use encap::ethernet::{self, EtherType};
use encap::{icmp, ipv4, MacAddr, WireError};
use std::net::Ipv4Addr;

/// The gateway every pod routes through; it exists only as our proxy-ARP answer (Calico's
/// convention).
pub const POD_GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);

/// TTL of the packets this node originates (ICMP errors).
const LOCAL_TTL: u8 = 64;

/// Room an ICMP error needs beyond the received frame: Ethernet + IP + ICMP + quote.
pub const ICMP_ERROR_MAX: usize =
    ethernet::HEADER_LEN + ipv4::HEADER_LEN + icmp::HEADER_LEN + 60 + icmp::QUOTED_PAYLOAD;

/// What the read-only state of one batch looks like to the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub fib: &'a Fib,
    pub neigh: &'a NeighTable,
    pub ifaces: &'a Interfaces,
}

/// Where the frame sits in the buffer: `buf[start..end]`. The buffer is larger than the frame
/// so that ICMP errors can be built in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// The outcome for one received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `buf[span]` out of `iface`. `learn` carries a neighbour gleaned from the frame
    /// (the sender of a proxy-ARP request) for the slow path.
    Transmit {
        iface: IfaceId,
        span: Span,
        learn: Option<Neighbour>,
    },
    /// Ready to send except for the destination MAC of `next_hop`, which is unknown.
    Resolve {
        iface: IfaceId,
        next_hop: Ipv4Addr,
        span: Span,
    },
    /// An ARP answer for the neighbour table; nothing to send.
    Learn(Neighbour),
    /// Nothing to send: the frame is the kernel's (addressed to this node, not IPv4, not for
    /// our MAC), or it was consumed and counted (an ICMP error that could not be routed).
    Pass,
    /// Dropped, already counted.
    Drop(DropReason),
}

/// Processes the frame `buf[span]` received on `in_if`.
pub fn process(
    ctx: &Context<'_>,
    counters: &Counters,
    in_if: IfaceId,
    buf: &mut [u8],
    span: Span,
) -> Verdict {
    let v = classify(ctx, counters, in_if, buf, span);
    if let Verdict::Drop(r) = v {
        counters.count_drop(r);
    }
    v
}

fn classify(
    ctx: &Context<'_>,
    counters: &Counters,
    in_if: IfaceId,
    buf: &mut [u8],
    span: Span,
) -> Verdict {
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
        EtherType::Arp => arp(iface, in_if, counters, buf, span),
        EtherType::Ipv4 => {
            let dst = eth.dst();
            if dst != iface.mac {
                // Broadcast, multicast or another host's frame: not routed by us.
                return Verdict::Pass;
            }
            ipv4_forward(ctx, counters, iface, buf, span)
        }
        _ => Verdict::Pass,
    }
}

fn arp(
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
    let learned = Neighbour {
        iface: in_if,
        ip: req.sender_ip,
        mac: req.sender_mac,
    };
    match iface.role {
        IfaceRole::Pod { addr } => {
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
                    Verdict::Transmit {
                        iface: in_if,
                        span: Span { start: s, end },
                        learn: from_pod.then_some(learned),
                    }
                }
                Operation::Reply if from_pod && req.target_ip == POD_GATEWAY => {
                    Verdict::Learn(learned)
                }
                _ => Verdict::Pass,
            }
        }
        IfaceRole::Uplink { addr } => {
            // Replies to our requests, and requests for our address (RFC 826: the asker is
            // worth remembering). The kernel answers the requests itself.
            let for_us = req.target_ip == addr.addr();
            let sane = addr.contains(&req.sender_ip)
                && req.sender_ip != addr.addr()
                && !req.sender_mac.is_multicast();
            if for_us && sane {
                Verdict::Learn(learned)
            } else {
                Verdict::Pass
            }
        }
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

fn bad_source(a: Ipv4Addr) -> bool {
    a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_loopback()
        || u32::from(a) >> 28 == 0xf
}

fn ipv4_forward(
    ctx: &Context<'_>,
    counters: &Counters,
    iface: &Interface,
    buf: &mut [u8],
    span: Span,
) -> Verdict {
    let l3 = span.start + ethernet::HEADER_LEN;
    let ip = match ipv4::Packet::new_checked(&buf[l3..span.end]) {
        Ok(p) => p,
        Err(e) => return Verdict::Drop(wire_drop(e)),
    };
    if !ip.verify_checksum() {
        return Verdict::Drop(DropReason::BadChecksum);
    }
    let (src, dst, ttl) = (ip.src(), ip.dst(), ip.ttl());
    let total = usize::from(ip.total_len());
    if dst.is_multicast() || dst.is_broadcast() {
        return Verdict::Pass;
    }
    if bad_source(src) {
        return Verdict::Drop(DropReason::BadSource);
    }
    if let IfaceRole::Pod { addr } = iface.role {
        // RPF: a pod may only speak with its own address.
        if src != addr {
            return Verdict::Drop(DropReason::Spoofed);
        }
    }
    // Trim Ethernet padding: what we send is exactly the datagram.
    let span = Span {
        start: span.start,
        end: l3 + total,
    };
    let (out_if, hop) = match ctx.fib.lookup(dst) {
        Some(NextHop::Host) => return Verdict::Pass,
        Some(NextHop::Blackhole) => return Verdict::Drop(DropReason::Blackhole),
        None | Some(NextHop::Unreachable) => {
            return icmp_error(
                ctx,
                counters,
                buf,
                span,
                icmp::ErrorKind::NetUnreachable,
                DropReason::NoRoute,
            );
        }
        Some(NextHop::Local { iface }) => (iface, dst),
        Some(NextHop::Direct { iface, gateway }) => (iface, gateway),
    };
    if ttl <= 1 {
        return icmp_error(
            ctx,
            counters,
            buf,
            span,
            icmp::ErrorKind::TtlExceeded,
            DropReason::TtlExceeded,
        );
    }
    let Some(out) = ctx.ifaces.get(out_if) else {
        return Verdict::Drop(DropReason::NoRoute);
    };
    if total > usize::from(out.mtu) {
        if ip.dont_frag() {
            let kind = icmp::ErrorKind::FragmentationNeeded { mtu: out.mtu };
            return icmp_error(ctx, counters, buf, span, kind, DropReason::FragNeeded);
        }
        return Verdict::Drop(DropReason::NeedsFragmentation);
    }
    ipv4::Packet::new_unchecked(&mut buf[l3..span.end]).decrement_ttl();
    finish_l2(ctx, buf, span, out_if, out.mac, hop)
}

/// Writes the Ethernet header for `out_if` and picks the verdict by neighbour state.
fn finish_l2(
    ctx: &Context<'_>,
    buf: &mut [u8],
    span: Span,
    out_if: IfaceId,
    out_mac: MacAddr,
    hop: Ipv4Addr,
) -> Verdict {
    let dst_mac = ctx.neigh.lookup(out_if, hop).unwrap_or(MacAddr::ZERO);
    ethernet::emit_header(&mut buf[span.start..], dst_mac, out_mac, EtherType::Ipv4);
    if dst_mac == MacAddr::ZERO {
        Verdict::Resolve {
            iface: out_if,
            next_hop: hop,
            span,
        }
    } else {
        Verdict::Transmit {
            iface: out_if,
            span,
            learn: None,
        }
    }
}

/// Replaces the datagram in `buf[span]` by an ICMP error about it, addressed to its source and
/// routed like a locally originated packet. The original is counted as dropped for `reason`
/// whether or not an error may be sent (RFC 1812 §4.3.2.7 says when not).
fn icmp_error(
    ctx: &Context<'_>,
    counters: &Counters,
    buf: &mut [u8],
    span: Span,
    kind: icmp::ErrorKind,
    reason: DropReason,
) -> Verdict {
    let l3 = span.start + ethernet::HEADER_LEN;
    let ip = ipv4::Packet::new_unchecked(&buf[l3..span.end]);
    let orig_src = ip.src();
    let hl = ip.header_len();
    let total = usize::from(ip.total_len());
    let about_icmp_error = ip.protocol() == ipv4::Protocol::Icmp
        && ip
            .payload()
            .first()
            .is_some_and(|t| icmp::is_error_type(*t));
    if about_icmp_error || ip.frag_offset() != 0 || bad_source(orig_src) {
        return Verdict::Drop(reason);
    }
    let Some(node_addr) = ctx.ifaces.node_addr() else {
        return Verdict::Drop(reason);
    };
    let quote_len = (hl + icmp::QUOTED_PAYLOAD).min(total);
    let icmp_at = l3 + ipv4::HEADER_LEN;
    let quote_at = icmp_at + icmp::HEADER_LEN;
    let end = quote_at + quote_len;
    if end > buf.len() {
        return Verdict::Drop(reason);
    }
    counters.count_drop(reason);
    buf.copy_within(l3..l3 + quote_len, quote_at);
    let icmp_len = icmp::emit_error(kind, &mut buf[icmp_at..end], quote_len);
    let repr = ipv4::Repr {
        src: node_addr,
        dst: orig_src,
        protocol: ipv4::Protocol::Icmp,
        tos: 0xc0, // internetwork control, as routers mark their own errors
        ident: 0,
        dont_frag: true,
        ttl: LOCAL_TTL,
        payload_len: icmp_len,
    };
    repr.emit(&mut buf[l3..]);
    let span = Span {
        start: span.start,
        end,
    };
    // Route the error back; a failure here is not answered with another error.
    let (out_if, hop) = match ctx.fib.lookup(orig_src) {
        Some(NextHop::Local { iface }) => (iface, orig_src),
        Some(NextHop::Direct { iface, gateway }) => (iface, gateway),
        _ => return Verdict::Pass,
    };
    let Some(out) = ctx.ifaces.get(out_if) else {
        return Verdict::Pass;
    };
    bump(&counters.icmp_errors_sent, 1);
    finish_l2(ctx, buf, span, out_if, out.mac, hop)
}

#[cfg(test)]
mod tests;
