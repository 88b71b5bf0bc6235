//! Packet trace: while a trace runs, workers recognise marked probes (a payload that starts
//! with [`MAGIC`] and the trace id), and report what they did with each: the packet before,
//! the verdict, the packet after. When no trace runs the cost is one relaxed load per batch.

use crate::counters::DropReason;
use crate::iface::IfaceId;
use crate::pipeline::Verdict;
use crossbeam_channel::{Receiver, Sender};
use encap::{ethernet, ipv4, ipv6, tcp, vxlan};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
use std::time::SystemTime;

/// Marks a trace probe's payload; the trace id follows (4 bytes, big-endian).
pub const MAGIC: &[u8; 8] = b"RTRACE\x00\x01";

/// The IP header fields of a packet (and of the packet inside, for IPIP and VXLAN); for
/// IPv6, `protocol` is the next header, `ttl` the hop limit and `icmp_type` ICMPv6's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub ttl: u8,
    pub len: u16,
    /// ICMP type, for ICMP packets.
    pub icmp_type: Option<u8>,
    /// What it carries, in words: "ICMP echo request", "TCP RST", "UDP"; empty for other protocols.
    pub what: &'static str,
    pub inner: Option<Inner>,
    pub vxlan: Option<VxlanInfo>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Inner {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub icmp_type: Option<u8>,
    pub what: &'static str,
}

/// What the worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent {
        egress: IfaceId,
        after: Option<Summary>,
    },
    /// Waiting for ARP of `next_hop` on `egress`.
    Resolving {
        egress: IfaceId,
        next_hop: std::net::IpAddr,
        after: Option<Summary>,
    },
    Fragmented {
        egress: IfaceId,
    },
    /// An offloaded TCP super-packet cut into segments.
    Segmented {
        egress: IfaceId,
    },
    Kernel,
    Dropped(DropReason),
    Other,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub id: u32,
    pub time: SystemTime,
    pub ingress: IfaceId,
    pub before: Summary,
    pub outcome: Outcome,
}

fn l3(data: &[u8], ethernet: bool) -> Option<&[u8]> {
    if !ethernet {
        return Some(data);
    }
    let f = ethernet::Frame::new_checked(data).ok()?;
    matches!(f.ethertype(), ethernet::EtherType::Ipv4 | ethernet::EtherType::Ipv6)
        .then(|| &data[ethernet::HEADER_LEN..])
}

fn is_v6(l3: &[u8]) -> bool {
    l3.first().is_some_and(|b| b >> 4 == 6)
}

/// An IPv6 packet's summary (IPv6 is never tunnelled here).
fn summarize6(bytes: &[u8]) -> Option<Summary> {
    let p = ipv6::Packet::new_checked(bytes).ok()?;
    let icmp_type = (p.next_header() == ipv6::NEXT_ICMPV6).then(|| p.payload().first().copied()).flatten();
    Some(Summary {
        src: p.src().into(),
        dst: p.dst().into(),
        protocol: p.next_header(),
        ttl: p.hop_limit(),
        len: u16::try_from(p.total_len()).unwrap_or(u16::MAX),
        icmp_type,
        what: what(bytes),
        inner: None,
        vxlan: None,
    })
}

/// What an IP packet carries, in words (see [`Summary::what`]).
fn what(ip: &[u8]) -> &'static str {
    use encap::icmp::types as v4;
    use encap::icmpv6::types as v6;
    let Some((protocol, t)) = transport(ip) else {
        return "";
    };
    let (kind, code) = (t.first().copied(), t.get(1).copied().unwrap_or(0));
    match (protocol, kind) {
        (ICMP, Some(v4::ECHO_REPLY)) => "ICMP echo reply",
        (ICMP, Some(v4::ECHO_REQUEST)) => "ICMP echo request",
        (ipv6::NEXT_ICMPV6, Some(v6::ECHO_REPLY)) => "ICMPv6 echo reply",
        (ipv6::NEXT_ICMPV6, Some(v6::ECHO_REQUEST)) => "ICMPv6 echo request",
        (ICMP, Some(v4::DEST_UNREACHABLE)) => match code {
            0 => "ICMP net unreachable",
            1 => "ICMP host unreachable",
            3 => "ICMP port unreachable",
            4 => "ICMP fragmentation needed",
            13 => "ICMP administratively prohibited",
            _ => "ICMP destination unreachable",
        },
        (ipv6::NEXT_ICMPV6, Some(v6::DEST_UNREACHABLE)) => match code {
            0 => "ICMPv6 no route",
            1 => "ICMPv6 administratively prohibited",
            3 => "ICMPv6 address unreachable",
            4 => "ICMPv6 port unreachable",
            _ => "ICMPv6 destination unreachable",
        },
        (ICMP, Some(v4::TIME_EXCEEDED)) => "ICMP time exceeded",
        (ipv6::NEXT_ICMPV6, Some(v6::TIME_EXCEEDED)) => "ICMPv6 time exceeded",
        (ipv6::NEXT_ICMPV6, Some(v6::PACKET_TOO_BIG)) => "ICMPv6 packet too big",
        (ICMP, _) => "ICMP",
        (ipv6::NEXT_ICMPV6, _) => "ICMPv6",
        (ipv6::NEXT_TCP, _) => match tcp::Packet::new_checked(t).map(|p| p.flags()) {
            Ok(f) if f & tcp::flags::RST != 0 => "TCP RST",
            Ok(f) if f & (tcp::flags::SYN | tcp::flags::ACK) == tcp::flags::SYN => "TCP SYN",
            Ok(f) if f & tcp::flags::SYN != 0 => "TCP SYN-ACK",
            _ => "TCP",
        },
        (ipv6::NEXT_UDP, _) => "UDP",
        _ => "",
    }
}

/// ICMP's IP protocol number (the others' are `ipv6::NEXT_*`, the same for both families).
const ICMP: u8 = 1;

fn icmp_type<T: AsRef<[u8]>>(p: &ipv4::Packet<T>) -> Option<u8> {
    (p.protocol() == ipv4::Protocol::Icmp).then(|| p.payload().first().copied()).flatten()
}

/// A VXLAN packet's outer UDP source and destination ports and its VNI.
pub type VxlanInfo = (u16, u16, u32);

/// The packet inside a tunnel: IPIP's, or VXLAN's with its UDP ports and VNI.
fn tunnelled(ip: &[u8]) -> Option<(&[u8], Option<VxlanInfo>)> {
    let p = ipv4::Packet::new_checked(ip).ok()?;
    match p.protocol() {
        ipv4::Protocol::IpIp => Some((ip.get(p.header_len()..usize::from(p.total_len()))?, None)),
        ipv4::Protocol::Udp => {
            let v = vxlan::parse(ip).ok()?;
            Some((&ip[v.inner_start..v.udp_end], Some((v.src_port, vxlan::PORT, v.vni))))
        }
        _ => None,
    }
}

/// Whether a packet (a frame when `ethernet`) is to or from one of `hosts`: by its addresses,
/// those of the packet inside IPIP or VXLAN (a pod's traffic across the tunnel), an ARP's
/// sender and target, or the target of a neighbour solicitation or advertisement. What a
/// capture's host filter keeps.
pub fn involves(data: &[u8], ethernet: bool, hosts: &[IpAddr]) -> bool {
    let is = |a: IpAddr| hosts.contains(&a);
    let Some(bytes) = l3(data, ethernet) else {
        // Not IP: ARP is the one other kind with addresses to match.
        return ethernet::Frame::new_checked(data).is_ok_and(|f| f.ethertype() == ethernet::EtherType::Arp)
            && encap::arp::ArpRepr::parse(&data[ethernet::HEADER_LEN..])
                .is_ok_and(|a| is(a.sender_ip.into()) || is(a.target_ip.into()));
    };
    if is_v6(bytes) {
        return ipv6::Packet::new_checked(bytes).is_ok_and(|p| {
            let ndp = || {
                p.next_header() == ipv6::NEXT_ICMPV6
                    && encap::icmpv6::Packet::new_checked(p.payload())
                        .is_ok_and(|m| m.ndp_target().is_some_and(|t| is(t.into())))
            };
            is(p.src().into()) || is(p.dst().into()) || ndp()
        });
    }
    let ends = |p: &ipv4::Packet<&[u8]>| is(p.src().into()) || is(p.dst().into());
    ipv4::Packet::new_checked(bytes).is_ok_and(|p| {
        ends(&p) || tunnelled(bytes).is_some_and(|(inner, _)| ipv4::Packet::new_checked(inner).is_ok_and(|i| ends(&i)))
    })
}

/// The header summary of any IPv4 packet (a frame when `ethernet`).
pub fn summarize(data: &[u8], ethernet: bool) -> Option<Summary> {
    let bytes = l3(data, ethernet)?;
    if is_v6(bytes) {
        return summarize6(bytes);
    }
    let p = ipv4::Packet::new_checked(bytes).ok()?;
    let wrapped = tunnelled(bytes);
    let vxlan = wrapped.and_then(|(_, v)| v);
    let inner = wrapped.and_then(|(bytes, _)| {
        ipv4::Packet::new_checked(bytes).ok().map(|i| Inner {
            src: i.src(),
            dst: i.dst(),
            protocol: i.protocol().into(),
            ttl: i.ttl(),
            icmp_type: icmp_type(&i),
            what: what(bytes),
        })
    });
    Some(Summary {
        src: p.src().into(),
        dst: p.dst().into(),
        protocol: p.protocol().into(),
        ttl: p.ttl(),
        len: p.total_len(),
        icmp_type: icmp_type(&p),
        what: what(bytes),
        inner,
        vxlan,
    })
}

/// Words a probe's payload carries after the marker and the id, for whoever captures it.
const PROBE_TEXT: &[u8] = b" router trace probe";

/// Length of a probe's payload: the marker, the id and the words.
pub const PROBE_PAYLOAD_LEN: usize = MAGIC.len() + 4 + PROBE_TEXT.len();

/// The payload of trace `id`'s probe (an echo's data, a UDP datagram's, a TCP SYN's).
pub fn probe_payload(id: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(PROBE_PAYLOAD_LEN);
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(PROBE_TEXT);
    p
}

/// Whether a packet (a frame when `ethernet`) belongs to trace `id`, looking inside IPIP and
/// VXLAN: the probe itself, whose payload is [`probe_payload`]; an echo reply, which returns
/// that payload; an ICMP error quoting the probe; or a TCP segment that acknowledges the
/// probe's SYN (the RST of a closed port, a listener's SYN-ACK). The id is random, so a pod
/// cannot plant hops in another's trace by guessing it.
pub fn belongs(data: &[u8], ethernet: bool, id: u32) -> bool {
    let Some(mut bytes) = l3(data, ethernet) else {
        return false;
    };
    if !is_v6(bytes) {
        if let Some((inner, _)) = tunnelled(bytes) {
            bytes = inner;
        }
    }
    transport(bytes).is_some_and(|(protocol, t)| carries(protocol, t, id, false))
}

/// An IP packet's upper-layer protocol and as much of its upper-layer bytes as are there:
/// the packet may be an ICMP error's quote, cut short. None for a fragment past the first.
fn transport(ip: &[u8]) -> Option<(u8, &[u8])> {
    let (protocol, at) = crate::nat::upper_layer(ip)?;
    Some((protocol, ip.get(at..)?))
}

/// Whether upper-layer bytes `t` of `protocol` carry trace `id` (see [`belongs`]); `quoted`
/// when they are an ICMP error's quote, which may hold no more than 8 of them.
fn carries(protocol: u8, t: &[u8], id: u32, quoted: bool) -> bool {
    // ICMP's, ICMPv6's and UDP's headers are 8 bytes; the payload follows.
    const HEADER: usize = 8;
    let marked = |at: usize| {
        t.get(at..at + MAGIC.len() + 4)
            .is_some_and(|m| m[..MAGIC.len()] == MAGIC[..] && m[MAGIC.len()..] == id.to_be_bytes())
    };
    let kind = t.first().copied();
    let error = match protocol {
        ICMP => kind.is_some_and(encap::icmp::is_error_type),
        ipv6::NEXT_ICMPV6 => kind.is_some_and(encap::icmpv6::is_error_type),
        _ => false,
    };
    match protocol {
        // An error about the probe; an error about an error is never sent, so one level.
        ICMP | ipv6::NEXT_ICMPV6 if error => {
            !quoted && t.get(HEADER..).and_then(transport).is_some_and(|(p, q)| carries(p, q, id, true))
        }
        // Echo request and reply (ICMP, ICMPv6) and UDP.
        ICMP | ipv6::NEXT_ICMPV6 | ipv6::NEXT_UDP => marked(HEADER),
        // The probe's sequence number is the id: in a quote, that may be all there is.
        ipv6::NEXT_TCP if quoted => t.len() >= HEADER && tcp::Packet::new_unchecked(t).seq() == id,
        ipv6::NEXT_TCP => tcp::Packet::new_checked(t).is_ok_and(|p| {
            let acked = p.flags() & tcp::flags::ACK != 0
                && [1, 1 + PROBE_PAYLOAD_LEN as u32].iter().any(|n| p.ack_number() == id.wrapping_add(*n));
            marked(p.header_len()) || acked
        }),
        _ => false,
    }
}

/// Where workers report probes while a trace runs.
#[derive(Debug)]
pub struct Tracer {
    active: AtomicBool,
    id: AtomicU32,
    tx: Sender<Event>,
    rx: Receiver<Event>,
}

impl Default for Tracer {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(1024);
        Tracer { active: AtomicBool::new(false), id: AtomicU32::new(0), tx, rx }
    }
}

impl Tracer {
    pub fn start(&self, id: u32) {
        self.id.store(id, Relaxed);
        self.active.store(true, Relaxed);
    }

    pub fn stop(&self) {
        self.active.store(false, Relaxed);
    }

    #[inline]
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    pub fn id(&self) -> u32 {
        self.id.load(Relaxed)
    }

    pub fn receiver(&self) -> Receiver<Event> {
        self.rx.clone()
    }

    /// Reports what became of a probe. `out` is the buffer the verdict's span points into.
    pub fn report(
        &self,
        id: u32,
        ingress: IfaceId,
        before: Summary,
        verdict: &Verdict,
        out: &[u8],
        ethernet_out: impl Fn(IfaceId) -> bool,
    ) {
        let after = |iface: IfaceId, span: &crate::pipeline::Span| {
            out.get(span.start..span.end).and_then(|d| summarize(d, ethernet_out(iface)))
        };
        let outcome = match verdict {
            Verdict::Transmit { iface, span, .. } => Outcome::Sent { egress: *iface, after: after(*iface, span) },
            Verdict::Resolve { iface, next_hop, span } => {
                Outcome::Resolving { egress: *iface, next_hop: *next_hop, after: after(*iface, span) }
            }
            Verdict::Fragment(f) => Outcome::Fragmented { egress: f.egress.iface },
            Verdict::TransmitWhole { iface, span } => Outcome::Sent { egress: *iface, after: after(*iface, span) },
            Verdict::Segment(j) => Outcome::Segmented { egress: j.egress.iface },
            Verdict::Pass => Outcome::Kernel,
            Verdict::Drop(r) => Outcome::Dropped(*r),
            Verdict::Learn(_) => Outcome::Other,
        };
        let _ = self.tx.try_send(Event { id, time: SystemTime::now(), ingress, before, outcome });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(id: u32) -> Vec<u8> {
        let payload = probe_payload(id);
        let b = etherparse::PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 3, 1], 64).icmpv4_echo_request(1, 1);
        let mut v = Vec::new();
        b.write(&mut v, &payload).expect("build");
        v
    }

    #[test]
    fn probes_are_recognised_plain_and_inside_ipip() {
        let p = probe(77);
        assert!(belongs(&p, false, 77));
        assert!(!belongs(&p, false, 78));
        let mut outer = vec![0u8; 20];
        ipv4::Repr {
            src: Ipv4Addr::new(192, 168, 100, 100),
            dst: Ipv4Addr::new(192, 168, 200, 101),
            protocol: ipv4::Protocol::IpIp,
            tos: 0,
            ident: 1,
            dont_frag: false,
            ttl: 64,
            payload_len: p.len(),
        }
        .emit(&mut outer);
        outer.extend_from_slice(&p);
        assert!(belongs(&outer, false, 77));
        let s = summarize(&outer, false).expect("summary");
        assert_eq!((s.protocol, s.what), (4, ""));
        assert_eq!(s.inner.map(|i| (i.dst, i.what)), Some((Ipv4Addr::new(10, 244, 3, 1), "ICMP echo request")));
    }

    #[test]
    fn a_host_filter_looks_inside_the_tunnel_and_at_arp() {
        let pod: std::net::IpAddr = [10, 244, 3, 1].into();
        let frame = |b: etherparse::PacketBuilderStep<etherparse::IpHeaders>, proto: u8, payload: &[u8]| {
            let mut f = Vec::new();
            b.write(&mut f, etherparse::IpNumber(proto), payload).expect("build");
            f
        };
        let eth = || etherparse::PacketBuilder::ethernet2([2; 6], [4; 6]);
        let mut inner = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 3, 1], 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut inner, b"ping")
            .expect("build");
        let ipip = frame(eth().ipv4([192, 168, 100, 100], [192, 168, 200, 101], 64), 4, &inner);
        assert!(involves(&ipip, true, &[pod]));
        assert!(involves(&ipip, true, &[[192, 168, 200, 101].into()]));
        assert!(!involves(&ipip, true, &[[10, 244, 2, 1].into()]));
        // The node's kernel's own chatter on the uplink is not the pod's.
        let igmp = frame(eth().ipv4([192, 168, 100, 100], [224, 0, 0, 22], 1), 2, &[0x22, 0, 0, 0]);
        assert!(!involves(&igmp, true, &[pod]));
        let mut arp = vec![0u8; 14 + encap::arp::PACKET_LEN];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let ask = encap::arp::ArpRepr {
            operation: encap::arp::Operation::Request,
            sender_mac: encap::MacAddr([2; 6]),
            sender_ip: [10, 244, 3, 1].into(),
            target_mac: encap::MacAddr([0; 6]),
            target_ip: [169, 254, 1, 1].into(),
        };
        ask.emit(&mut arp[14..]);
        assert!(involves(&arp, true, &[pod]) && involves(&arp, true, &[[169, 254, 1, 1].into()]));
        assert!(!involves(&arp, true, &[[10, 244, 3, 2].into()]));
        let v6 = frame(eth().ipv6([0xfd; 16], [0xfe; 16], 64), 17, &[0; 8]);
        assert!(involves(&v6, true, &[std::net::IpAddr::from([0xfe; 16])]) && !involves(&v6, true, &[pod]));
        assert!(!involves(&[0u8; 5], true, &[pod]));
        // Bare IP, as the tun data plane has it.
        assert!(involves(&inner, false, &[pod]) && !involves(&inner, false, &[[10, 244, 2, 1].into()]));
        // A dual-stack pod is both its addresses, and its IPv6 address is also what the
        // neighbour discovery about it names as target, between link-local addresses.
        let pod6: std::net::Ipv6Addr = "fd00:10:244::81".parse().expect("addr");
        let both = [pod, pod6.into()];
        assert!(involves(&ipip, true, &both) && !involves(&v6, true, &both));
        let (gw, asked) = ("fe80::ecee:eeff:feee:eeee".parse().expect("addr"), encap::icmpv6::solicited_node(pod6));
        let ns = encap::icmpv6::Ndp::Solicit { target: pod6, source_mac: Some(encap::MacAddr([0xee; 6])) };
        let mut msg = vec![0u8; ns.buffer_len()];
        let n = ns.emit(&mut msg, gw, asked);
        let solicit = frame(eth().ipv6(gw.octets(), asked.octets(), 255), 58, &msg[..n]);
        assert!(involves(&solicit, true, &both) && !involves(&solicit, true, &[pod]));
        let elsewhere =
            encap::icmpv6::Ndp::Solicit { target: "fd00:10:244::82".parse().expect("addr"), source_mac: None };
        let n = elsewhere.emit(&mut msg, gw, asked);
        assert!(!involves(&frame(eth().ipv6(gw.octets(), asked.octets(), 255), 58, &msg[..n]), true, &both));
    }

    #[test]
    fn ipv6_probes_are_recognised_in_frames() {
        let src: std::net::Ipv6Addr = "fd00:10:244::1".parse().expect("addr");
        let dst: std::net::Ipv6Addr = "fd00:10:244::81".parse().expect("addr");
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6(src.octets(), dst.octets(), 64)
            .icmpv6_echo_request(1, 1);
        let mut f = Vec::new();
        b.write(&mut f, &probe_payload(99)).expect("build");
        assert!(belongs(&f, true, 99));
        let s = summarize(&f, true).expect("summary");
        assert_eq!((s.src, s.dst, s.protocol, s.ttl, s.icmp_type), (src.into(), dst.into(), 58, 64, Some(128)));
        assert_eq!(s.what, "ICMPv6 echo request");
        let n = f.len();
        f[n - PROBE_TEXT.len() - 1] ^= 1;
        assert!(!belongs(&f, true, 99));
    }

    #[test]
    fn ordinary_packets_are_not_probes() {
        let mut p = probe(1);
        let n = p.len();
        p[n - PROBE_TEXT.len() - 1] ^= 0xff;
        assert!(!belongs(&p, false, 1));
        assert!(!belongs(&p[..20], false, 1));
        assert!(!belongs(&[], true, 1));
        // Cut anywhere, a probe is never read past its end.
        let p = probe(1);
        for n in 0..p.len() {
            let _ = belongs(&p[..n], false, 1);
        }
    }

    fn ip4(protocol: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 20];
        ipv4::Repr {
            src: Ipv4Addr::new(10, 244, 3, 1),
            dst: Ipv4Addr::new(10, 244, 1, 1),
            protocol: protocol.into(),
            tos: 0,
            ident: 9,
            dont_frag: false,
            ttl: 64,
            payload_len: body.len(),
        }
        .emit(&mut v);
        v.extend_from_slice(body);
        v
    }

    /// An ICMP error of `kind` and `code` quoting `quote`.
    fn error4(kind: u8, code: u8, quote: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(quote);
        ip4(1, &m)
    }

    /// A TCP header from port 80 to 40000 with `seq`, `ack` and `flags`, no payload.
    fn tcp(seq: u32, ack: u32, flags: u8) -> Vec<u8> {
        let mut t = vec![0, 80, 0x9c, 0x40];
        t.extend_from_slice(&seq.to_be_bytes());
        t.extend_from_slice(&ack.to_be_bytes());
        t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t
    }

    #[test]
    fn the_answers_to_a_probe_belong_to_its_trace() {
        let id = 0xdead_beef;
        // A UDP probe, and the port unreachable that quotes all of it, as Linux does.
        let mut udp = vec![0x9c, 0x40, 0x82, 0x9a, 0, (8 + PROBE_PAYLOAD_LEN) as u8, 0, 0];
        udp.extend_from_slice(&probe_payload(id));
        let datagram = ip4(17, &udp);
        assert!(belongs(&datagram, false, id));
        assert_eq!(summarize(&datagram, false).expect("summary").what, "UDP");
        let unreachable = error4(3, 3, &datagram);
        assert!(belongs(&unreachable, false, id));
        assert!(!belongs(&unreachable, false, id + 1));
        assert_eq!(summarize(&unreachable, false).expect("summary").what, "ICMP port unreachable");
        // An error quoting only the header and 8 bytes (RFC 792's minimum) names no UDP probe...
        assert!(!belongs(&error4(11, 0, &datagram[..28]), false, id));
        // ...but does name a TCP one: its sequence number is the id.
        let syn = ip4(6, &[tcp(id, 0, 0x02), probe_payload(id)].concat());
        assert!(belongs(&syn, false, id));
        assert_eq!(summarize(&syn, false).expect("summary").what, "TCP SYN");
        let exceeded = error4(11, 0, &syn[..28]);
        assert!(belongs(&exceeded, false, id));
        assert_eq!(summarize(&exceeded, false).expect("summary").what, "ICMP time exceeded");
        // A closed port's RST acknowledges the SYN and its payload; a listener's SYN-ACK the SYN.
        let rst = ip4(6, &tcp(0, id.wrapping_add(1 + PROBE_PAYLOAD_LEN as u32), 0x14));
        assert!(belongs(&rst, false, id));
        assert_eq!(summarize(&rst, false).expect("summary").what, "TCP RST");
        let syn_ack = ip4(6, &tcp(5, id.wrapping_add(1), 0x12));
        assert!(belongs(&syn_ack, false, id));
        assert_eq!(summarize(&syn_ack, false).expect("summary").what, "TCP SYN-ACK");
        // Other segments, and acknowledgements without the ACK flag, are not the trace's.
        assert!(!belongs(&ip4(6, &tcp(0, id.wrapping_add(2), 0x14)), false, id));
        assert!(!belongs(&ip4(6, &tcp(0, id.wrapping_add(1), 0x04)), false, id));
        assert!(!belongs(&ip4(6, &tcp(id, 0, 0x10)), false, id));
        // An error about an error is not followed (none is ever sent).
        assert!(!belongs(&error4(3, 1, &unreachable), false, id));
        // An echo probe quoted in an error.
        let echo = probe(id);
        assert!(belongs(&error4(3, 1, &echo), false, id));
        assert!(!belongs(&error4(3, 1, &echo[..28]), false, id));
    }

    #[test]
    fn icmpv6_errors_quoting_a_probe_belong_to_its_trace() {
        let src: std::net::Ipv6Addr = "fd00:10:244::1".parse().expect("addr");
        let dst: std::net::Ipv6Addr = "fd00:10:244::81".parse().expect("addr");
        let b = etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64).udp(40000, 33434);
        let mut probe = Vec::new();
        b.write(&mut probe, &probe_payload(5)).expect("build");
        let mut m = vec![1, 4, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&probe);
        let b = etherparse::PacketBuilder::ipv6(dst.octets(), src.octets(), 64);
        let mut err = Vec::new();
        b.write(&mut err, etherparse::IpNumber(58), &m).expect("build");
        assert!(belongs(&err, false, 5));
        assert!(!belongs(&err, false, 6));
        assert_eq!(summarize(&err, false).expect("summary").what, "ICMPv6 port unreachable");
    }
}
