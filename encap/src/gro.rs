//! Receive offload in software: consecutive TCP segments of one flow on their way to a pod
//! become one super-packet again (as the kernel's GRO does for a NIC), described by a
//! virtio-net header, so the pod takes one packet where it took dozens. Pure functions over
//! views: which frames make a run (`run_len`), and the merge (`coalesce`).

use crate::gso::{UdpSegments, VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use crate::ipv4::{self, Protocol};
use crate::tcp::{self, flags};
use crate::{ethernet, udp, vxlan};

/// A TCP/IPv4 segment that may join a coalesced super-packet: no IP options, not a
/// fragment, only ACK (and PSH) set, a payload, and both checksums correct, so that merging
/// hides no corruption.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mergeable {
    /// Bytes of the TCP header (options included).
    pub thl: usize,
    pub payload: usize,
    pub seq: u32,
    pub psh: bool,
}

/// `pkt` (an IPv4 packet, possibly followed by padding) as a [`Mergeable`] segment.
pub fn mergeable(pkt: &[u8]) -> Option<Mergeable> {
    shape(pkt, true)
}

/// [`mergeable`], with the checksums looked at only if `verify`.
fn shape(pkt: &[u8], verify: bool) -> Option<Mergeable> {
    let ip = ipv4::Packet::new_checked(pkt).ok()?;
    let plain = ip.header_len() == ipv4::HEADER_LEN && !ip.reserved_flag() && !ip.is_fragment();
    if !plain || ip.protocol() != Protocol::Tcp {
        return None;
    }
    let t = tcp::Packet::new_checked(ip.payload()).ok()?;
    let f = t.flags();
    if t.payload().is_empty() || f & flags::ACK == 0 || f & !(flags::ACK | flags::PSH) != 0 {
        return None;
    }
    if verify && (!ip.verify_checksum() || !t.verify_checksum(ip.src(), ip.dst())) {
        return None;
    }
    Some(Mergeable { thl: t.header_len(), payload: t.payload().len(), seq: t.seq(), psh: f & flags::PSH != 0 })
}

/// Whether segment `next` may follow `prev` in a run that `first` started: same flow,
/// addresses, TOS, DF, TTL, acknowledgement, window and options; the very next sequence
/// number; `prev` full-sized (the segment size is the first's) and without PSH, which ends a
/// run; and the total still an IPv4 packet.
pub fn follows(first: (&[u8], Mergeable), prev: (&[u8], Mergeable), next: (&[u8], Mergeable), total: usize) -> bool {
    let (f, fm) = first;
    let (_, pm) = prev;
    let (n, nm) = next;
    if nm.thl != fm.thl
        || pm.psh
        || pm.payload != fm.payload
        || nm.payload > fm.payload
        || nm.seq != pm.seq.wrapping_add(pm.payload as u32)
        || total + nm.payload > usize::from(u16::MAX)
    {
        return false;
    }
    let (fi, ni) = (ipv4::Packet::new_unchecked(f), ipv4::Packet::new_unchecked(n));
    let same_ip = fi.tos() == ni.tos()
        && fi.dont_frag() == ni.dont_frag()
        && fi.ttl() == ni.ttl()
        && fi.src() == ni.src()
        && fi.dst() == ni.dst();
    same_ip
        && tcp::Packet::new_unchecked(fi.payload())
            .same_header_as(&tcp::Packet::new_unchecked(ni.payload()), flags::PSH)
}

/// How many frames from the start of `segs` make one run to coalesce: each frame is `Some`
/// (its bytes, `l2` bytes of link header first, and its [`Mergeable`] packet) when it may
/// join one; a run has frames with the same link header where each [`follows`] the one
/// before. 0 when the first frame may not start one.
pub fn run_len(segs: &[Option<(&[u8], Mergeable)>], l2: usize) -> usize {
    let Some(&Some((first, fm))) = segs.first() else { return 0 };
    let (Some(head), Some(first_pkt)) = (first.get(..l2), first.get(l2..)) else { return 0 };
    let mut prev = (first_pkt, fm);
    let mut total = 20 + fm.thl + fm.payload;
    let mut n = 1;
    for &(f, m) in segs[1..].iter().map_while(|s| s.as_ref()) {
        let (Some(h), Some(pkt)) = (f.get(..l2), f.get(l2..)) else { break };
        if h != head || !follows((first_pkt, fm), prev, (pkt, m), total) {
            break;
        }
        prev = (pkt, m);
        total += m.payload;
        n += 1;
    }
    n
}

/// Writes the segments `run` (each a [`mergeable`] IPv4 packet that [`follows`] the one
/// before) as one super-packet at the start of `out`, with the virtio-net header that
/// describes it: segment size, and the TCP checksum left partial (the pseudo-header sum in
/// its field) as a sender's TSO leaves it. `l2` is the length of the link header that will
/// precede the packet. Returns the packet's length, or `None` if `out` is too short.
pub fn coalesce(run: &[(&[u8], Mergeable)], l2: usize, out: &mut [u8]) -> Option<(usize, VnetHdr)> {
    let &(first, fm) = run.first()?;
    let hdrs = ipv4::HEADER_LEN + fm.thl;
    let len = hdrs + run.iter().map(|(_, m)| m.payload).sum::<usize>();
    let pkt = out.get_mut(..len)?;
    pkt[..hdrs].copy_from_slice(&first[..hdrs]);
    let mut at = hdrs;
    for (seg, m) in run {
        pkt[at..at + m.payload].copy_from_slice(&seg[hdrs..hdrs + m.payload]);
        at += m.payload;
    }
    let mut ip = ipv4::Packet::new_unchecked(&mut pkt[..]);
    ip.set_total_len(len as u16);
    ip.fill_checksum();
    let (src, dst) = (ip.src(), ip.dst());
    let mut t = tcp::Packet::new_unchecked(&mut pkt[ipv4::HEADER_LEN..]);
    if run.iter().any(|(_, m)| m.psh) {
        t.set_flags(t.flags() | flags::PSH);
    }
    t.fill_partial_checksum(src, dst);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: (l2 + hdrs) as u16,
        gso_size: fm.payload as u16,
        csum_start: (l2 + ipv4::HEADER_LEN) as u16,
        csum_offset: tcp::CHECKSUM_OFFSET as u16,
    };
    Some((len, hdr))
}

/// What [`merge_vxlan`] made: the packet's new length, how many segments it took, and the
/// segment size and TCP header length of the TCP super-packet inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanMerge {
    pub len: usize,
    pub segments: usize,
    pub mss: u16,
    pub thl: usize,
}

/// Bytes in front of the inner IPv4 header in each VXLAN datagram's UDP payload.
const VXLAN_INNER: usize = vxlan::HEADER_LEN + ethernet::HEADER_LEN;

/// Merges, in place, a UDP super-packet of VXLAN datagrams into one VXLAN packet around the
/// TCP super-packet they carry. `pkt` is the outer IPv4 packet (no link header) whose
/// payload the kernel would cut every `size` bytes ([`UdpSegments`]); it merges when every
/// datagram holds exactly one TCP/IPv4 segment, behind the same VXLAN and inner Ethernet
/// headers, and each segment [`follows`] the one before: what a sender makes of one TCP
/// super-packet with [`crate::gso::TcpSegments`] and `GSO_UDP_L4`. The payloads move
/// together behind the first segment's headers (one pass over the bytes, where cutting the
/// datagrams apart and merging them again took two); lengths and the outer and inner IPv4
/// checksums are rewritten, the outer UDP checksum left out (zero) and the TCP one partial,
/// as [`coalesce`] leaves it. `verify`: check each segment's IPv4 and TCP checksums first;
/// the caller may skip that only for bytes that never left this machine's memory (the
/// kernel's partial checksum says so). `None`, with `pkt` untouched, for anything else.
pub fn merge_vxlan(pkt: &mut [u8], size: u16, verify: bool) -> Option<VxlanMerge> {
    let segs = UdpSegments::new(pkt, size).ok()?;
    let n = segs.count();
    let ihl = ipv4::Packet::new_unchecked(&pkt[..]).header_len();
    let hdrs = ihl + udp::HEADER_LEN;
    let end = usize::from(ipv4::Packet::new_unchecked(&pkt[..]).total_len());
    let size = usize::from(size);
    if n < 2 {
        return None;
    }
    let datagram = |i: usize| &pkt[hdrs + i * size..end.min(hdrs + (i + 1) * size)];
    let d0 = datagram(0);
    let outer_heads = d0.get(..VXLAN_INNER)?;
    if outer_heads[VXLAN_INNER - 2..] != [0x08, 0x00] {
        return None;
    }
    let first = (d0.get(VXLAN_INNER..)?, shape(&d0[VXLAN_INNER..], verify)?);
    let (mut prev, mut total) = (first, ipv4::HEADER_LEN + first.1.thl + first.1.payload);
    for i in 0..n {
        let d = datagram(i);
        let (Some(heads), Some(inner)) = (d.get(..VXLAN_INNER), d.get(VXLAN_INNER..)) else { return None };
        let m = if i == 0 { first.1 } else { shape(inner, verify)? };
        // Exactly one packet per datagram: no padding to carry along.
        if heads != outer_heads || inner.len() != ipv4::HEADER_LEN + m.thl + m.payload {
            return None;
        }
        if i > 0 {
            if !follows(first, prev, (inner, m), total) {
                return None;
            }
            total += m.payload;
        }
        prev = (inner, m);
    }
    let (thl, mss) = (first.1.thl, first.1.payload);
    let psh = prev.1.psh;
    // Every segment but the first gives up its headers; only the payloads move.
    let heads = VXLAN_INNER + ipv4::HEADER_LEN + thl;
    let mut at = hdrs + size;
    for i in 1..n {
        let from = hdrs + i * size + heads;
        let len = end.min(hdrs + (i + 1) * size) - from;
        pkt.copy_within(from..from + len, at);
        at += len;
    }
    let len = at;
    let mut outer = ipv4::Packet::new_unchecked(&mut pkt[..len]);
    outer.set_total_len(len as u16);
    outer.fill_checksum();
    let mut u = udp::Packet::new_unchecked(&mut pkt[ihl..len]);
    u.set_len((len - ihl) as u16);
    u.set_checksum(0);
    let l3 = hdrs + VXLAN_INNER;
    let mut ip = ipv4::Packet::new_unchecked(&mut pkt[l3..len]);
    ip.set_total_len((len - l3) as u16);
    ip.fill_checksum();
    let (src, dst) = (ip.src(), ip.dst());
    let mut t = tcp::Packet::new_unchecked(&mut pkt[l3 + ipv4::HEADER_LEN..len]);
    if psh {
        t.set_flags(t.flags() | flags::PSH);
    }
    t.fill_partial_checksum(src, dst);
    Some(VxlanMerge { len, segments: n, mss: mss as u16, thl })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::gso::complete_checksum;
    use crate::gso::testdata::*;

    #[test]
    fn segments_coalesce_back_into_their_super_packet() {
        let (orig, segs) = cut();
        let run: Vec<(&[u8], Mergeable)> = segs.iter().map(|s| (&s[..], mergeable(s).expect("mergeable"))).collect();
        assert!(run[..run.len() - 1].iter().all(|(_, m)| !m.psh), "PSH only on the last");
        let mut total = run[0].0.len();
        for w in 1..run.len() {
            assert!(follows(run[0], run[w - 1], run[w], total), "segment {w}");
            total += run[w].1.payload;
        }
        let mut out = vec![0u8; 20_000];
        let (len, hdr) = coalesce(&run, 14, &mut out).expect("fits");
        assert_eq!(len, orig.len());
        assert_eq!(
            (hdr.gso_type, hdr.gso_size, hdr.hdr_len, hdr.csum_start, hdr.csum_offset),
            (GSO_TCPV4, 1448, 54, 34, 16)
        );
        assert!(hdr.needs_csum());
        let mut pkt = out[..len].to_vec();
        assert_eq!(pkt[40..], orig[40..], "payload in order");
        assert_eq!(checksum::checksum(&pkt[..20]), 0, "IPv4 checksum");
        // Finishing the partial checksum gives the original packet back, byte for byte.
        complete_checksum(&mut pkt, 20, 16).expect("in range");
        assert_eq!(pkt, orig);
    }

    #[test]
    fn what_may_not_merge_does_not() {
        let (_, segs) = cut();
        let m = |s: &[u8]| mergeable(s).expect("mergeable");
        let (a, b, c) = (&segs[0][..], &segs[1][..], &segs[2][..]);
        let total = a.len();
        assert!(!follows((a, m(a)), (a, m(a)), (c, m(c)), total), "a gap in the sequence");
        assert!(!follows((a, m(a)), (a, m(a)), (b, m(b)), usize::from(u16::MAX) - 100), "over 64 KiB");
        let mut other = b.to_vec();
        other[31] ^= 1; // acknowledgement
        refresh_tcp_checksum(&mut other);
        assert!(!follows((a, m(a)), (a, m(a)), (&other, m(&other)), total), "another acknowledgement");
        let mut bad = b.to_vec();
        bad[100] ^= 0xff;
        assert_eq!(mergeable(&bad), None, "a bad TCP checksum");
        let mut fin = b.to_vec();
        fin[33] |= flags::FIN;
        assert_eq!(mergeable(&fin), None, "FIN");
        let mut frag = b.to_vec();
        frag[6] |= 0x20;
        assert_eq!(mergeable(&frag), None, "a fragment");
        assert_eq!(mergeable(&b[..30]), None, "truncated");
        // A TCP header cut after its offset byte, with a total length that says so.
        let mut short = b[..33].to_vec();
        short[2..4].copy_from_slice(&33u16.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut short[..]).fill_checksum();
        assert_eq!(mergeable(&short), None, "13 bytes of TCP header");
        // Every shorter packet that claims its own length is looked at without a panic.
        for n in 20..b.len() {
            let mut cut = b[..n].to_vec();
            cut[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            ipv4::Packet::new_unchecked(&mut cut[..]).fill_checksum();
            let _ = mergeable(&cut);
        }
        // A PSH segment ends a run.
        let last = segs.len() - 1;
        let (p, q) = (&segs[last - 1][..], &segs[last][..]);
        let mut psh = p.to_vec();
        psh[33] |= flags::PSH;
        refresh_tcp_checksum(&mut psh);
        assert!(!follows((a, m(a)), (&psh, m(&psh)), (q, m(q)), total));
    }

    /// The segments as one UDP super-packet of VXLAN, one per datagram.
    fn wrapped(segs: &[Vec<u8>]) -> (Vec<u8>, u16) {
        let packets: Vec<&[u8]> = segs.iter().map(Vec::as_slice).collect();
        crate::fuzzing::vxlan_super(&packets).expect("under 64 KB")
    }

    #[test]
    fn a_udp_super_packet_of_vxlan_segments_merges_in_place_into_their_super_packet() {
        let (orig, segs) = cut();
        let (mut p, size) = wrapped(&segs);
        let heads = p[28..28 + VXLAN_INNER].to_vec();
        let m = merge_vxlan(&mut p, size, true).expect("merges");
        assert_eq!(m, VxlanMerge { len: 28 + VXLAN_INNER + orig.len(), segments: segs.len(), mss: 1448, thl: 20 });
        let p = &mut p[..m.len];
        let outer = ipv4::Packet::new_checked(&p[..]).expect("outer IPv4");
        assert!(outer.verify_checksum());
        assert_eq!(usize::from(outer.total_len()), m.len);
        let u = udp::Packet::new_unchecked(&p[20..]);
        assert_eq!((usize::from(u.len()), u.checksum(), u.dst_port()), (m.len - 20, 0, vxlan::PORT));
        assert_eq!(p[28..28 + VXLAN_INNER], heads, "the first datagram's VXLAN and inner headers");
        let inner = &mut p[28 + VXLAN_INNER..];
        assert_eq!(checksum::checksum(&inner[..20]), 0, "inner IPv4 checksum");
        // Finishing the partial checksum gives the sender's super-packet back, byte for byte.
        complete_checksum(inner, 20, 16).expect("in range");
        assert_eq!(inner, &orig[..]);
    }

    #[test]
    fn datagrams_that_are_not_one_run_stay_as_they_are() {
        let (_, segs) = cut();
        let refused = |segs: &[Vec<u8>], verify: bool, what: &str| {
            let (mut p, size) = wrapped(segs);
            let before = p.clone();
            assert_eq!(merge_vxlan(&mut p, size, verify), None, "{what}");
            assert_eq!(p, before, "{what}: untouched");
        };
        let mut swapped = segs.clone();
        swapped.swap(1, 2);
        refused(&swapped, true, "out of order");
        refused(&segs[..1], true, "one datagram");
        let mut bad = segs.clone();
        bad[3][100] ^= 0xff;
        refused(&bad, true, "a bad TCP checksum");
        let (mut p, size) = wrapped(&bad);
        assert!(merge_vxlan(&mut p, size, false).is_some(), "trusted bytes are not summed");
        let mut fin = segs.clone();
        fin[2][33] |= flags::FIN;
        refresh_tcp_checksum(&mut fin[2]);
        refused(&fin, true, "FIN");
        // Another VNI, another inner MAC, or not IPv4 inside, in one datagram or all.
        for (at, what) in [(5, "VNI"), (9 + 5, "inner MAC"), (VXLAN_INNER - 1, "inner ethertype")] {
            let (mut p, size) = wrapped(&segs);
            p[28 + usize::from(size) * 2 + at] ^= 1;
            assert_eq!(merge_vxlan(&mut p, size, true), None, "{what} of one datagram");
            let (mut p, size) = wrapped(&segs);
            for i in 0..segs.len() {
                p[28 + usize::from(size) * i + at] ^= 1;
            }
            let merged = merge_vxlan(&mut p, size, true);
            if at == VXLAN_INNER - 1 {
                assert_eq!(merged, None, "{what} of all");
            } else {
                // The same headers everywhere merge; the pipeline judges them once.
                assert!(merged.is_some(), "{what} of all");
            }
        }
        // Padding behind a segment inside its datagram.
        let mut padded = segs.clone();
        padded.last_mut().expect("segments").extend_from_slice(&[0; 4]);
        refused(&padded, true, "padding");
        // A cut anywhere, and a segment size that does not match, never panic.
        let (p, size) = wrapped(&segs);
        for n in 0..p.len() {
            let mut cut = p[..n].to_vec();
            let _ = merge_vxlan(&mut cut, size, false);
        }
        for size in [0, 41, 42, size - 1, size + 1, u16::MAX] {
            let mut q = p.clone();
            let _ = merge_vxlan(&mut q, size, false);
        }
    }
}
