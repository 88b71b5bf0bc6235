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

use crate::tcp::{self, flags};
use crate::{checksum, ipv4};

/// `virtio_net_hdr.flags`: the checksum from `csum_start` on is left for someone to finish.
pub const F_NEEDS_CSUM: u8 = 1;
/// `gso_type` values.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_TCPV6: u8 = 4;
/// UDP segmentation (`UDP_SEGMENT`): equal datagrams cut from one payload (Linux 6.2+ on
/// AF_PACKET and TUN).
pub const GSO_UDP_L4: u8 = 5;
/// Set together with a type when the sender uses ECN (CWR may appear on the first segment).
pub const GSO_ECN: u8 = 0x80;

/// `struct virtio_net_hdr` (linux/virtio_net.h), field by field.
mod vnet_field {
    use crate::Field;
    pub const FLAGS: usize = 0;
    pub const GSO_TYPE: usize = 1;
    pub const HDR_LEN: Field = 2..4;
    pub const GSO_SIZE: Field = 4..6;
    pub const CSUM_START: Field = 6..8;
    pub const CSUM_OFFSET: Field = 8..10;
}

/// Length of `struct virtio_net_hdr`.
pub const VNET_HDR_LEN: usize = vnet_field::CSUM_OFFSET.end;

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
        use vnet_field::*;
        let u = |f: crate::Field| u16::from_le_bytes([b[f.start], b[f.start + 1]]);
        VnetHdr {
            flags: b[FLAGS],
            gso_type: b[GSO_TYPE],
            hdr_len: u(HDR_LEN),
            gso_size: u(GSO_SIZE),
            csum_start: u(CSUM_START),
            csum_offset: u(CSUM_OFFSET),
        }
    }

    pub fn emit(&self) -> [u8; VNET_HDR_LEN] {
        use vnet_field::*;
        let mut b = [0u8; VNET_HDR_LEN];
        b[FLAGS] = self.flags;
        b[GSO_TYPE] = self.gso_type;
        b[HDR_LEN].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[GSO_SIZE].copy_from_slice(&self.gso_size.to_le_bytes());
        b[CSUM_START].copy_from_slice(&self.csum_start.to_le_bytes());
        b[CSUM_OFFSET].copy_from_slice(&self.csum_offset.to_le_bytes());
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
    #[error("offload type other than TCP or UDP over IPv4")]
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
        let tcp = tcp::Packet::new_checked(ip.payload()).map_err(|_| GsoError::Malformed)?;
        if mss < MIN_MSS {
            return Err(GsoError::Malformed);
        }
        Ok(TcpSegments { pkt: &pkt[..total], ihl, thl: tcp.header_len(), mss: usize::from(mss) })
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
        let mut ip = ipv4::Packet::new_unchecked(&mut seg[..]);
        ip.set_total_len(len as u16);
        ip.set_ident(ip.ident().wrapping_add(i as u16));
        ip.fill_checksum();
        let (src, dst) = (ip.src(), ip.dst());
        // TCP: sequence number, the flags only the last (FIN, PSH) or the first (CWR)
        // segment may carry, full checksum over the pseudo-header and segment.
        let mut t = tcp::Packet::new_unchecked(&mut seg[ihl..]);
        t.set_seq(t.seq().wrapping_add(off as u32));
        let mut f = t.flags();
        if i + 1 < self.count() {
            f &= !(flags::FIN | flags::PSH);
        }
        if i > 0 {
            f &= !flags::CWR;
        }
        t.set_flags(f);
        t.fill_checksum(src, dst);
        Some(len)
    }
}

/// The smallest datagram payload we cut a UDP super-packet into: a VXLAN header, an
/// Ethernet header and an IPv4 header. Like [`MIN_MSS`], a bound on the frames one
/// super-packet can make.
pub const MIN_UDP_SEGMENT: u16 = 42;

/// A UDP/IPv4 super-packet and its datagrams: datagram `i` carries payload bytes
/// `i * size .. (i + 1) * size` behind copies of the IPv4 and UDP headers.
#[derive(Debug, Clone, Copy)]
pub struct UdpSegments<'a> {
    pkt: &'a [u8],
    ihl: usize,
    size: usize,
}

impl<'a> UdpSegments<'a> {
    /// `pkt` is the IPv4 packet (no L2 header) whose UDP length covers the whole payload.
    pub fn new(pkt: &'a [u8], size: u16) -> Result<Self, GsoError> {
        let ip = ipv4::Packet::new_checked(pkt).map_err(|_| GsoError::Malformed)?;
        if ip.protocol() != ipv4::Protocol::Udp {
            return Err(GsoError::Unsupported);
        }
        let u = crate::udp::Packet::new_checked(ip.payload()).map_err(|_| GsoError::Malformed)?;
        let ihl = ip.header_len();
        if size < MIN_UDP_SEGMENT
            || ip.more_frags()
            || ip.frag_offset() != 0
            || usize::from(u.len()) != ip.payload().len()
        {
            return Err(GsoError::Malformed);
        }
        Ok(UdpSegments { pkt: &pkt[..usize::from(ip.total_len())], ihl, size: usize::from(size) })
    }

    fn payload_len(&self) -> usize {
        self.pkt.len() - self.ihl - crate::udp::HEADER_LEN
    }

    /// Number of datagrams (at least one).
    pub fn count(&self) -> usize {
        self.payload_len().div_ceil(self.size).max(1)
    }

    /// Writes datagram `i` as a complete IPv4 packet at the start of `out`; returns its
    /// length, or `None` if `out` is too short or there is no datagram `i`. With `checksum`
    /// the UDP checksum is computed; without, it is zero ("none", allowed over IPv4), for
    /// datagrams this node terminates itself.
    pub fn write(&self, i: usize, out: &mut [u8], checksum: bool) -> Option<usize> {
        if i >= self.count() {
            return None;
        }
        let hdrs = self.ihl + crate::udp::HEADER_LEN;
        let off = i * self.size;
        let n = self.payload_len().saturating_sub(off).min(self.size);
        let len = hdrs + n;
        let d = out.get_mut(..len)?;
        d[..hdrs].copy_from_slice(&self.pkt[..hdrs]);
        d[hdrs..].copy_from_slice(&self.pkt[hdrs + off..hdrs + off + n]);
        let mut ip = ipv4::Packet::new_unchecked(&mut d[..]);
        ip.set_total_len(len as u16);
        ip.set_ident(ip.ident().wrapping_add(i as u16));
        ip.fill_checksum();
        let (src, dst) = (ip.src(), ip.dst());
        let mut u = crate::udp::Packet::new_unchecked(&mut d[self.ihl..]);
        u.set_len((crate::udp::HEADER_LEN + n) as u16);
        if checksum {
            u.fill_checksum(src, dst);
        } else {
            u.set_checksum(0);
        }
        Some(len)
    }
}

#[cfg(test)]
pub(crate) mod testdata {
    //! Packets the GSO and GRO tests share.
    use super::*;

    /// The TCP pseudo-header sum of an IPv4 packet without options.
    pub fn pseudo(p: &[u8]) -> u32 {
        let ip = ipv4::Packet::new_unchecked(p);
        tcp::pseudo_header_sum(ip.src(), ip.dst(), p.len() - 20)
    }

    /// A TCP/IPv4 packet 10.0.0.1:1000 → 10.0.0.2:2000 with `payload`, flags PSH|ACK|FIN|CWR,
    /// seq 0xfffffff0 (so that segments wrap), checksums complete.
    pub fn packet(payload: &[u8]) -> Vec<u8> {
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
        p[33] = flags::FIN | flags::PSH | flags::ACK | flags::CWR;
        p.extend_from_slice(payload);
        refresh_tcp_checksum(&mut p);
        p
    }

    /// Recomputes the TCP checksum of an IPv4 packet without options, after an edit.
    pub fn refresh_tcp_checksum(p: &mut [u8]) {
        let ip = ipv4::Packet::new_unchecked(&*p);
        let (src, dst) = (ip.src(), ip.dst());
        tcp::Packet::new_unchecked(&mut p[20..]).fill_checksum(src, dst);
    }

    pub fn tcp_checksum_ok(seg: &[u8]) -> bool {
        let ip = ipv4::Packet::new_unchecked(seg);
        tcp::Packet::new_unchecked(&seg[20..]).verify_checksum(ip.src(), ip.dst())
    }

    /// The segments of a 10 000-byte ACK|PSH super-packet cut at 1448 bytes, and the packet.
    pub fn cut() -> (Vec<u8>, Vec<Vec<u8>>) {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut p = packet(&payload);
        p[33] = flags::ACK | flags::PSH;
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
}

#[cfg(test)]
mod tests {
    use super::testdata::*;
    use super::*;

    /// A UDP/IPv4 super-packet 10.0.0.1:5000 → 10.0.0.2:4789 with `payload`, its UDP
    /// checksum partial as a sender with `NEEDS_CSUM` leaves it.
    fn udp_super(payload: &[u8]) -> Vec<u8> {
        let mut p = packet(&[]);
        p.truncate(20);
        p[9] = 17;
        p[2..4].copy_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        p[10..12].copy_from_slice(&[0, 0]);
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        let mut u = [0u8; 8];
        crate::udp::Repr { src_port: 5000, dst_port: 4789, payload_len: payload.len() }.emit(&mut u);
        let partial = crate::udp::pseudo_header_sum([10, 0, 0, 1].into(), [10, 0, 0, 2].into(), 8 + payload.len());
        u[6..8].copy_from_slice(&(!checksum::finish(partial)).to_be_bytes());
        p.extend_from_slice(&u);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn a_udp_super_packet_splits_into_complete_datagrams() {
        let payload: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
        let p = udp_super(&payload);
        let s = UdpSegments::new(&p, 1400).expect("valid");
        assert_eq!(s.count(), 3);
        let mut out = [0u8; 1500];
        let mut joined = Vec::new();
        for i in 0..3 {
            let n = s.write(i, &mut out, true).expect("fits");
            let d = &out[..n];
            assert_eq!(n, 28 + [1400, 1400, 200][i]);
            assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), n, "total length");
            assert_eq!(checksum::checksum(&d[..20]), 0, "IPv4 checksum");
            let u = crate::udp::Packet::new_checked(&d[20..]).expect("UDP");
            assert_eq!((usize::from(u.len()), u.dst_port()), (n - 20, 4789));
            assert!(u.checksum() != 0 && u.verify_checksum([10, 0, 0, 1].into(), [10, 0, 0, 2].into()), "datagram {i}");
            joined.extend_from_slice(u.payload());
            // Without a checksum: the same datagram, its checksum "none".
            let m = s.write(i, &mut out, false).expect("fits");
            assert_eq!((m, u16::from_be_bytes([out[26], out[27]])), (n, 0));
        }
        assert_eq!(joined, payload);
        assert_eq!(s.write(3, &mut out, true), None);
        assert_eq!(s.write(0, &mut out[..100], true), None, "too small an output");
    }

    #[test]
    fn udp_super_packets_that_cannot_be_cut_are_refused() {
        let p = udp_super(&[7u8; 500]);
        assert_eq!(UdpSegments::new(&p, MIN_UDP_SEGMENT - 1).err(), Some(GsoError::Malformed));
        let mut short_udp = p.clone();
        short_udp[24..26].copy_from_slice(&100u16.to_be_bytes()); // UDP length below the IPv4 payload
        assert_eq!(UdpSegments::new(&short_udp, 100).err(), Some(GsoError::Malformed));
        assert_eq!(UdpSegments::new(&packet(&[1; 100]), 100).err(), Some(GsoError::Unsupported), "TCP");
        for cut in 0..p.len() {
            let _ = UdpSegments::new(&p[..cut], 100);
        }
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
            assert_eq!(flags & flags::CWR != 0, i == 0, "CWR only on the first");
            assert_eq!(flags & (flags::FIN | flags::PSH) != 0, i == 2, "FIN and PSH only on the last");
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
        let folded = !checksum::finish(pseudo(&p));
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
}
