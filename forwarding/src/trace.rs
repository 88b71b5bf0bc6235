//! Packet trace: while a trace runs, workers recognise marked probes (a payload that starts
//! with [`MAGIC`] and the trace id), and report what they did with each: the packet before,
//! the verdict, the packet after. When no trace runs the cost is one relaxed load per batch.

use crate::counters::DropReason;
use crate::iface::IfaceId;
use crate::pipeline::Verdict;
use crossbeam_channel::{Receiver, Sender};
use encap::{ethernet, ipv4, ipv6, vxlan};
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
        inner: None,
        vxlan: None,
    })
}

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
        })
    });
    Some(Summary {
        src: p.src().into(),
        dst: p.dst().into(),
        protocol: p.protocol().into(),
        ttl: p.ttl(),
        len: p.total_len(),
        icmp_type: icmp_type(&p),
        inner,
        vxlan,
    })
}

/// The trace id of a probe (looking inside IPIP and VXLAN), or None for any other packet.
pub fn probe_id(data: &[u8], ethernet: bool) -> Option<u32> {
    let mut bytes = l3(data, ethernet)?;
    let (protocol, t) = if is_v6(bytes) {
        let p = ipv6::Packet::new_checked(bytes).ok()?;
        (p.next_header(), &bytes[ipv6::HEADER_LEN..p.total_len()])
    } else {
        if let Some((inner, _)) = tunnelled(bytes) {
            bytes = inner;
        }
        let p = ipv4::Packet::new_checked(bytes).ok()?;
        (u8::from(p.protocol()), &bytes[p.header_len()..usize::from(p.total_len())])
    };
    let skip = match protocol {
        // ICMP, ICMPv6 (echo) and UDP: an 8-byte header; TCP: its data offset.
        1 | 58 | 17 => 8,
        6 => usize::from(*t.get(12)? >> 4) * 4,
        _ => return None,
    };
    let payload = t.get(skip..)?;
    if payload.len() < MAGIC.len() + 4 || &payload[..MAGIC.len()] != MAGIC {
        return None;
    }
    let id = &payload[MAGIC.len()..MAGIC.len() + 4];
    Some(u32::from_be_bytes([id[0], id[1], id[2], id[3]]))
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
        let mut payload = MAGIC.to_vec();
        payload.extend_from_slice(&id.to_be_bytes());
        let b = etherparse::PacketBuilder::ipv4([10, 244, 1, 1], [10, 244, 3, 1], 64).icmpv4_echo_request(1, 1);
        let mut v = Vec::new();
        b.write(&mut v, &payload).expect("build");
        v
    }

    #[test]
    fn probes_are_recognised_plain_and_inside_ipip() {
        let p = probe(77);
        assert_eq!(probe_id(&p, false), Some(77));
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
        assert_eq!(probe_id(&outer, false), Some(77));
        let s = summarize(&outer, false).expect("summary");
        assert_eq!(s.protocol, 4);
        assert_eq!(s.inner.map(|i| i.dst), Some(Ipv4Addr::new(10, 244, 3, 1)));
    }

    #[test]
    fn ipv6_probes_are_recognised_in_frames() {
        let mut payload = MAGIC.to_vec();
        payload.extend_from_slice(&99u32.to_be_bytes());
        let src: std::net::Ipv6Addr = "fd00:10:244::1".parse().expect("addr");
        let dst: std::net::Ipv6Addr = "fd00:10:244::81".parse().expect("addr");
        let b = etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv6(src.octets(), dst.octets(), 64)
            .icmpv6_echo_request(1, 1);
        let mut f = Vec::new();
        b.write(&mut f, &payload).expect("build");
        assert_eq!(probe_id(&f, true), Some(99));
        let s = summarize(&f, true).expect("summary");
        assert_eq!((s.src, s.dst, s.protocol, s.ttl, s.icmp_type), (src.into(), dst.into(), 58, 64, Some(128)));
        let n = f.len();
        f[n - 5] ^= 1;
        assert_eq!(probe_id(&f, true), None);
    }

    #[test]
    fn ordinary_packets_are_not_probes() {
        let mut p = probe(1);
        let n = p.len();
        p[n - 5] ^= 0xff;
        assert_eq!(probe_id(&p, false), None);
        assert_eq!(probe_id(&p[..20], false), None);
        assert_eq!(probe_id(&[], true), None);
    }
}
