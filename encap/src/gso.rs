//! Offloaded super-packets: the virtio-net header that AF_PACKET puts in front of each frame
//! when `PACKET_VNET_HDR` is on, the software completion of a partial checksum, and software
//! TCP segmentation (for IPIP, which the header has no offload type for).
//!
//! A sender with TSO hands the kernel one TCP/IPv4 packet of up to 64 KB whose IPv4 header
//! describes the whole and whose TCP checksum holds only the pseudo-header sum; the header
//! says how long each wire segment's payload is (`gso_size`). Cutting it into segments means
//! copying the headers in front of each piece and fixing, per segment: total length,
//! identification, IPv4 checksum, sequence number, the flags only the first or last segment
//! may carry, and the TCP checksum.

use crate::checksum;
use crate::ipv4;

/// `virtio_net_hdr.flags`: the checksum from `csum_start` on is left for someone to finish.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
/// Set together with a type when the sender uses ECN (CWR may appear on the first segment).
pub const GSO_ECN: u8 = 0x80;

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = 10;

/// The virtio-net header (little-endian on the wire of the socket, as the kernel uses it for
/// AF_PACKET on every little-endian host and for legacy virtio everywhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// A plain frame: complete checksums, no segmentation.
    pub const NONE: VnetHdr =
        VnetHdr { flags: 0, gso_type: GSO_NONE, hdr_len: 0, gso_size: 0, csum_start: 0, csum_offset: 0 };

    pub fn parse(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr { flags: b[0], gso_type: b[1], hdr_len: u(2), gso_size: u(4), csum_start: u(6), csum_offset: u(8) }
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// A super-packet the receiver must cut into `gso_size` pieces.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }

    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }
}

/// Why a frame's offload header cannot be honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    #[error("partial checksum range outside the frame")]
    BadCsumRange,
    #[error("offload type other than TCP over IPv4")]
    Unsupported,
    #[error("super-packet too short for its IPv4 and TCP headers, or a segment size below the minimum")]
    Malformed,
}

/// Finishes a partial checksum in `frame`: the one's-complement sum from `start` to the end
/// (the field at `start + offset` holds the pseudo-header sum) goes into that field, as the
/// kernel's `skb_checksum_help` does (0 is sent as 0xffff).
pub fn complete_checksum(frame: &mut [u8], start: usize, offset: usize) -> Result<(), GsoError> {
    let field = start.checked_add(offset).ok_or(GsoError::BadCsumRange)?;
    if field + 2 > frame.len() {
        return Err(GsoError::BadCsumRange);
    }
    let c = match checksum::finish(checksum::sum(&frame[start..])) {
        0 => 0xffff,
        c => c,
    };
    frame[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The smallest segment size we cut or pass on (Linux's `TCP_MIN_MSS`). A sender's TCP
/// never asks for less; a forged virtio-net header with `gso_size` 1 would turn one 64 KB
/// super-packet into tens of thousands of frames.
pub const MIN_MSS: u16 = 88;

/// A TCP/IPv4 super-packet and how it splits: segment `i` carries payload bytes
/// `i * mss .. (i + 1) * mss` behind copies of the headers.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegments<'a> {
    pkt: &'a [u8],
    /// IPv4 and TCP header lengths.
    ihl: usize,
    thl: usize,
    mss: usize,
}

impl<'a> TcpSegments<'a> {
    /// `pkt` is the IPv4 packet (no L2 header), its total length covering all of it.
    pub fn new(pkt: &'a [u8], mss: u16) -> Result<Self, GsoError> {
        let ip = ipv4::Packet::new_checked(pkt).map_err(|_| GsoError::Malformed)?;
        if ip.protocol() != ipv4::Protocol::Tcp {
            return Err(GsoError::Unsupported);
        }
        let ihl = ip.header_len();
        let total = usize::from(ip.total_len());
        let thl = usize::from(pkt.get(ihl + 12).ok_or(GsoError::Malformed)? >> 4) * 4;
        if mss < MIN_MSS || thl < 20 || ihl + thl > total {
            return Err(GsoError::Malformed);
        }
        Ok(TcpSegments { pkt: &pkt[..total], ihl, thl, mss: usize::from(mss) })
    }

    fn payload_len(&self) -> usize {
        self.pkt.len() - self.ihl - self.thl
    }

    /// Number of segments (at least one, even for an empty payload).
    pub fn count(&self) -> usize {
        self.payload_len().div_ceil(self.mss).max(1)
    }

    /// Bytes of segment `i` (headers included).
    pub fn len(&self, i: usize) -> usize {
        let off = i * self.mss;
        self.ihl + self.thl + self.payload_len().saturating_sub(off).min(self.mss)
    }

    /// Length of the IPv4 packet each full segment makes: what must fit the egress MTU.
    pub fn wire_len(&self) -> usize {
        self.ihl + self.thl + self.mss.min(self.payload_len())
    }

    /// Writes segment `i` as a complete IPv4 packet at the start of `out`; returns its
    /// length, or `None` if `out` is too short or there is no segment `i`.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Option<usize> {
        if i >= self.count() {
            return None;
        }
        let (ihl, thl) = (self.ihl, self.thl);
        let hdrs = ihl + thl;
        let off = i * self.mss;
        let n = self.payload_len().saturating_sub(off).min(self.mss);
        let len = hdrs + n;
        let seg = out.get_mut(..len)?;
        seg[..hdrs].copy_from_slice(&self.pkt[..hdrs]);
        seg[hdrs..].copy_from_slice(&self.pkt[hdrs + off..hdrs + off + n]);
        // IPv4: length, a distinct identification per segment (as the kernel's GSO does),
        // checksum.
        let ident = u16::from_be_bytes([seg[4], seg[5]]).wrapping_add(i as u16);
        seg[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        seg[4..6].copy_from_slice(&ident.to_be_bytes());
        ipv4::Packet::new_unchecked(&mut seg[..]).fill_checksum();
        // TCP: sequence number, flags, full checksum over the pseudo-header and segment.
        let tcp = &mut seg[ihl..];
        let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]).wrapping_add(off as u32);
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < self.count() {
            tcp[13] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            tcp[13] &= !TCP_CWR;
        }
        tcp[16..18].copy_from_slice(&[0, 0]);
        let c = checksum::finish(tcp_pseudo(self.pkt, thl + n) + checksum::sum(tcp));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
        Some(len)
    }
}

const TCP_ACK: u8 = 0x10;

/// The sum of the TCP pseudo-header of IPv4 packet `ip` (addresses, protocol, `tcp_len`).
fn tcp_pseudo(ip: &[u8], tcp_len: usize) -> u32 {
    checksum::sum(&ip[12..20]) + 6 + tcp_len as u32
}

/// A TCP/IPv4 segment that may join a coalesced super-packet (receive offload, the way
/// the kernel's GRO merges): no IP options, not a fragment, only ACK (and PSH) set, a
/// payload, and both checksums correct, so that merging hides no corruption.
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
    let ip = ipv4::Packet::new_checked(pkt).ok()?;
    let total = usize::from(ip.total_len());
    // 0x45: version 4, no options; flags and offset: at most DF.
    if pkt[0] != 0x45 || ip.protocol() != ipv4::Protocol::Tcp || pkt[6] & !0x40 != 0 || pkt[7] != 0 {
        return None;
    }
    let tcp = pkt.get(20..total)?;
    let thl = usize::from(*tcp.get(12)? >> 4) * 4;
    let flags = *tcp.get(13)?;
    if thl < 20 || thl >= tcp.len() || flags & TCP_ACK == 0 || flags & !(TCP_ACK | TCP_PSH) != 0 {
        return None;
    }
    if !ip.verify_checksum() || checksum::finish(tcp_pseudo(pkt, tcp.len()) + checksum::sum(tcp)) != 0 {
        return None;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    Some(Mergeable { thl, payload: tcp.len() - thl, seq, psh: flags & TCP_PSH != 0 })
}

/// Whether segment `next` may follow `prev` in a run that `first` started: same flow,
/// addresses, TOS, TTL, acknowledgement, window and options; the very next sequence number;
/// `prev` full-sized (the segment size is the first's) and without PSH, which ends a run;
/// and the total still an IPv4 packet.
pub fn follows(first: (&[u8], Mergeable), prev: (&[u8], Mergeable), next: (&[u8], Mergeable), total: usize) -> bool {
    let (f, fm) = first;
    let (_, pm) = prev;
    let (n, nm) = next;
    let hdrs = 20 + fm.thl;
    nm.thl == fm.thl
        && !pm.psh
        && pm.payload == fm.payload
        && nm.payload <= fm.payload
        && nm.seq == pm.seq.wrapping_add(pm.payload as u32)
        && total + nm.payload <= usize::from(u16::MAX)
        // TOS, DF, TTL, protocol, addresses.
        && f[1] == n[1]
        && f[6..10] == n[6..10]
        && f[12..20] == n[12..20]
        // Ports; then acknowledgement, offset, flags (but PSH), window, urgent, options.
        && f[20..24] == n[20..24]
        && f[28..33] == n[28..33]
        && f[33] & !TCP_PSH == n[33] & !TCP_PSH
        && f[34..36] == n[34..36]
        && f[38..hdrs] == n[38..hdrs]
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
    let hdrs = 20 + fm.thl;
    let len = hdrs + run.iter().map(|(_, m)| m.payload).sum::<usize>();
    let pkt = out.get_mut(..len)?;
    pkt[..hdrs].copy_from_slice(&first[..hdrs]);
    let mut at = hdrs;
    for (seg, m) in run {
        pkt[at..at + m.payload].copy_from_slice(&seg[hdrs..hdrs + m.payload]);
        at += m.payload;
    }
    pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ipv4::Packet::new_unchecked(&mut pkt[..]).fill_checksum();
    if run.iter().any(|(_, m)| m.psh) {
        pkt[33] |= TCP_PSH;
    }
    // Partial: the folded pseudo-header sum, not complemented.
    let partial = !checksum::finish(tcp_pseudo(pkt, len - 20));
    pkt[36..38].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: (l2 + hdrs) as u16,
        gso_size: fm.payload as u16,
        csum_start: (l2 + 20) as u16,
        csum_offset: 16,
    };
    Some((len, hdr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet 10.0.0.1:1000 → 10.0.0.2:2000 with `payload`, flags PSH|ACK|FIN|CWR,
    /// seq 0xfffffff0 (so that segments wrap), checksums complete.
    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload.len()) as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0xfffeu16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        p[20..22].copy_from_slice(&1000u16.to_be_bytes());
        p[22..24].copy_from_slice(&2000u16.to_be_bytes());
        p[24..28].copy_from_slice(&0xffff_fff0u32.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = TCP_FIN | TCP_PSH | 0x10 | TCP_CWR;
        p.extend_from_slice(payload);
        refresh_tcp_checksum(&mut p);
        p
    }

    /// Recomputes the TCP checksum of an IPv4 packet without options, after an edit.
    fn refresh_tcp_checksum(p: &mut [u8]) {
        p[36..38].copy_from_slice(&[0, 0]);
        let c = checksum::finish(tcp_pseudo(p, p.len() - 20) + checksum::sum(&p[20..]));
        p[36..38].copy_from_slice(&c.to_be_bytes());
    }

    fn tcp_checksum_ok(seg: &[u8]) -> bool {
        checksum::finish(tcp_pseudo(seg, seg.len() - 20) + checksum::sum(&seg[20..])) == 0
    }

    #[test]
    fn a_super_packet_splits_into_complete_segments() {
        let payload: Vec<u8> = (0..3500u32).map(|i| (i * 7) as u8).collect();
        let p = packet(&payload);
        let s = TcpSegments::new(&p, 1448).expect("valid");
        assert_eq!((s.count(), s.wire_len()), (3, 1488));
        let mut joined = Vec::new();
        let mut out = [0u8; 2000];
        for i in 0..3 {
            let n = s.write(i, &mut out).expect("fits");
            let seg = &out[..n];
            assert_eq!(n, s.len(i));
            assert_eq!(usize::from(u16::from_be_bytes([seg[2], seg[3]])), n, "total length");
            assert_eq!(u16::from_be_bytes([seg[4], seg[5]]), 0xfffeu16.wrapping_add(i as u16), "ident");
            assert_eq!(checksum::checksum(&seg[..20]), 0, "IPv4 checksum");
            assert!(tcp_checksum_ok(seg), "TCP checksum of segment {i}");
            let seq = u32::from_be_bytes([seg[24], seg[25], seg[26], seg[27]]);
            assert_eq!(seq, 0xffff_fff0u32.wrapping_add((i * 1448) as u32));
            let flags = seg[33];
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR only on the first");
            assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, i == 2, "FIN and PSH only on the last");
            assert_eq!(seg[6], 0x40, "DF kept");
            joined.extend_from_slice(&seg[40..]);
        }
        assert_eq!(joined, payload);
        assert_eq!(s.write(3, &mut out), None);
        assert_eq!(s.write(0, &mut out[..100]), None, "too small an output");
    }

    #[test]
    fn bad_super_packets_are_refused() {
        let p = packet(&[1, 2, 3]);
        assert_eq!(TcpSegments::new(&p, 0).err(), Some(GsoError::Malformed));
        assert_eq!(TcpSegments::new(&p[..30], 100).err(), Some(GsoError::Malformed));
        let mut udp = p.clone();
        udp[9] = 17;
        assert_eq!(TcpSegments::new(&udp, 100).err(), Some(GsoError::Unsupported));
        let mut short_tcp = p.clone();
        short_tcp[32] = 2 << 4;
        assert_eq!(TcpSegments::new(&short_tcp, 100).err(), Some(GsoError::Malformed));
        let empty = packet(&[]);
        let s = TcpSegments::new(&empty, 100).expect("a bare ACK still makes one segment");
        assert_eq!(s.count(), 1);
    }

    #[test]
    fn a_partial_checksum_is_completed_like_the_kernel_does() {
        let mut p = packet(b"hello, world");
        let want = [p[36], p[37]];
        assert!(tcp_checksum_ok(&p));
        // What a sender with checksum offload leaves: the pseudo-header sum, not complemented.
        let folded = !checksum::finish(tcp_pseudo(&p, p.len() - 20));
        p[36..38].copy_from_slice(&folded.to_be_bytes());
        complete_checksum(&mut p, 20, 16).expect("in range");
        assert_eq!([p[36], p[37]], want);
        assert_eq!(complete_checksum(&mut p, 60, 16), Err(GsoError::BadCsumRange));
        assert_eq!(complete_checksum(&mut p, usize::MAX, 16), Err(GsoError::BadCsumRange));
    }

    #[test]
    fn the_header_round_trips() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.emit()), h);
        assert!(h.is_gso() && h.needs_csum());
        assert!(!VnetHdr::NONE.is_gso());
    }

    /// The segments of a 10 000-byte ACK|PSH super-packet cut at 1448 bytes, and the packet.
    fn cut() -> (Vec<u8>, Vec<Vec<u8>>) {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut p = packet(&payload);
        p[33] = TCP_ACK | TCP_PSH;
        refresh_tcp_checksum(&mut p);
        let segs = TcpSegments::new(&p, 1448).expect("valid");
        let mut out = Vec::new();
        for i in 0..segs.count() {
            let mut b = vec![0u8; 1600];
            let n = segs.write(i, &mut b).expect("fits");
            b.truncate(n);
            out.push(b);
        }
        (p, out)
    }

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
        fin[33] |= TCP_FIN;
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
        psh[33] |= TCP_PSH;
        refresh_tcp_checksum(&mut psh);
        assert!(!follows((a, m(a)), (&psh, m(&psh)), (q, m(q)), total));
    }
}
