//! VXLAN (RFC 7348) over IPv4, the way Calico runs it: UDP port 4789, VNI 4096, each node a
//! VTEP with its own MAC. The inner packet is an Ethernet frame from one VTEP's MAC to the
//! other's, carrying the pod's IPv4 packet. Like IPIP, done in place: the 50 bytes of outer
//! IPv4, UDP, VXLAN and inner Ethernet headers go into headroom in front of the pod's packet,
//! and decapsulation only moves the start. ECN and DSCP follow RFC 6040 as for IPIP.

use crate::ethernet::{self, EtherType, Frame};
pub use crate::ipip::DecapError;
use crate::ipip::{outer_checked, unwrap_inner, Ecn};
use crate::ipv4::{self, Packet, Protocol};
use crate::{udp, MacAddr, WireError};
use std::net::Ipv4Addr;

/// The IANA port for VXLAN (Linux's and Calico's).
pub const PORT: u16 = 4789;
/// The VNI Calico uses for its pod network.
pub const CALICO_VNI: u32 = 4096;
/// The VXLAN header: flags, 24 reserved bits, the VNI, 8 reserved bits.
pub const HEADER_LEN: usize = 8;
/// Bytes added in front of the pod's packet: 20 + 8 + 8 + 14 = 50 (so a 1500-byte underlay
/// leaves pods 1450, against IPIP's 20 and 1480).
pub const OVERHEAD: usize = ipv4::HEADER_LEN + udp::HEADER_LEN + HEADER_LEN + ethernet::HEADER_LEN;
/// The I flag: the VNI field is valid (RFC 7348 §5). The other flag bits are reserved.
const FLAG_VNI: u8 = 0x08;
/// RFC 7348 §5: the source port is a hash of the inner flow, from the dynamic range, so that
/// the underlay's ECMP keeps a flow on one path and spreads flows over all of them.
const SRC_PORT_MIN: u16 = 49152;

/// The VTEP MAC of the node at `addr`: locally administered, `66:ee` and the address. Why
/// from the address: it is what every node already knows of every other (the BGP next hop),
/// so no table of MACs has to be handed around, as Calico's Felix does through the datastore.
pub fn vtep_mac(addr: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = addr.octets();
    MacAddr([0x66, 0xee, a, b, c, d])
}

/// A view over a VXLAN header (and what follows it).
#[derive(Debug)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// At least a header, with the I flag set; the reserved bits are ignored on receipt.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Header { buffer })
    }

    /// Whether the I flag says the VNI is valid.
    pub fn has_vni(&self) -> bool {
        self.buffer.as_ref()[0] & FLAG_VNI != 0
    }

    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The fields of a VXLAN header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    pub fn emit(&self, b: &mut [u8]) {
        let v = self.vni.to_be_bytes();
        b[..HEADER_LEN].copy_from_slice(&[FLAG_VNI, 0, 0, 0, v[1], v[2], v[3], 0]);
    }
}

/// One end of a tunnel to another VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub vni: u32,
    /// This node's VTEP MAC and the far node's: the inner frame's source and destination.
    pub src_mac: MacAddr,
    pub dst_mac: MacAddr,
}

/// What an unwrapped packet carried: the pod packet's span in the buffer, the VNI and the
/// sending VTEP's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    pub start: usize,
    pub end: usize,
    pub vni: u32,
    pub src_mac: MacAddr,
}

/// The UDP source port for the inner IPv4 packet: a hash of its addresses, protocol and,
/// for TCP and UDP that are not fragments, ports.
pub fn source_port(inner: &[u8]) -> u16 {
    let Ok(p) = Packet::new_checked(inner) else { return SRC_PORT_MIN };
    let mut h: u32 = 0x811c_9dc5;
    let mut mix = |b: &[u8]| {
        for &x in b {
            h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
    };
    mix(&p.src().octets());
    mix(&p.dst().octets());
    mix(&[u8::from(p.protocol())]);
    let ports = matches!(p.protocol(), Protocol::Tcp | Protocol::Udp) && p.frag_offset() == 0;
    if let Some(l4) = p.payload().get(..4).filter(|_| ports) {
        mix(l4);
    }
    SRC_PORT_MIN + (h % u32::from(u16::MAX - SRC_PORT_MIN + 1)) as u16
}

/// Bytes of one VXLAN datagram's payload in front of the pod packet: the VXLAN header and
/// the inner Ethernet header.
pub const INNER_HEADERS: usize = HEADER_LEN + ethernet::HEADER_LEN;
/// Outer IPv4 and UDP headers, in front of one datagram or of a UDP super-packet's many.
pub const OUTER_HEADERS: usize = ipv4::HEADER_LEN + udp::HEADER_LEN;

/// Wraps the inner IPv4 packet at `buf[inner_start..inner_end]` (a checked packet) in
/// VXLAN, written at `inner_start - OVERHEAD`. DF and TOS come from the inner header, the
/// UDP checksum is zero (RFC 7348 §5 for IPv4). Returns the start of the outer packet. The
/// caller guarantees `inner_start >= OVERHEAD`.
pub fn encapsulate(
    buf: &mut [u8],
    inner_start: usize,
    inner_end: usize,
    t: &Tunnel,
    ident: u16,
    src_port: u16,
) -> usize {
    let inner = Packet::new_unchecked(&buf[inner_start..inner_end]);
    let (tos, dont_frag) = (inner.tos(), inner.dont_frag());
    let start = inner_start - OVERHEAD;
    emit_inner_headers(buf, inner_start, t);
    let outer = Outer { tos, dont_frag, ident, src_port, partial_checksum: false };
    outer.emit(buf, start, inner_end - start - OUTER_HEADERS, t);
    start
}

/// Writes the VXLAN and inner Ethernet headers into the [`INNER_HEADERS`] bytes in front of
/// the pod packet at `inner_start`.
pub fn emit_inner_headers(buf: &mut [u8], inner_start: usize, t: &Tunnel) {
    let vxlan_at = inner_start - INNER_HEADERS;
    let eth_at = vxlan_at + HEADER_LEN;
    Repr { vni: t.vni }.emit(&mut buf[vxlan_at..eth_at]);
    ethernet::emit_header(&mut buf[eth_at..inner_start], t.dst_mac, t.src_mac, EtherType::Ipv4);
}

/// The outer IPv4 and UDP headers of a tunnel packet, which may hold one VXLAN datagram or,
/// as a UDP super-packet, many of the same length (the kernel cuts it, `GSO_UDP_L4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub tos: u8,
    pub dont_frag: bool,
    pub ident: u16,
    pub src_port: u16,
    /// Leave the pseudo-header sum in the UDP checksum for the kernel to finish per datagram
    /// (a super-packet sent with `NEEDS_CSUM`); otherwise the checksum is zero.
    pub partial_checksum: bool,
}

impl Outer {
    /// Writes the headers at `buf[start..start + OUTER_HEADERS]`, in front of `payload_len`
    /// bytes of VXLAN datagram payload.
    pub fn emit(&self, buf: &mut [u8], start: usize, payload_len: usize, t: &Tunnel) {
        let udp_at = start + ipv4::HEADER_LEN;
        let end = udp_at + udp::HEADER_LEN;
        ipv4::Repr {
            src: t.src,
            dst: t.dst,
            protocol: Protocol::Udp,
            tos: self.tos,
            ident: self.ident,
            dont_frag: self.dont_frag,
            ttl: t.ttl,
            payload_len: udp::HEADER_LEN + payload_len,
        }
        .emit(&mut buf[start..udp_at]);
        udp::Repr { src_port: self.src_port, dst_port: PORT, payload_len }.emit(&mut buf[udp_at..end]);
        if self.partial_checksum {
            let sum = udp::pseudo_header_sum(t.src, t.dst, udp::HEADER_LEN + payload_len);
            udp::Packet::new_unchecked(&mut buf[udp_at..end]).set_checksum(!crate::checksum::finish(sum));
        }
    }
}

/// Where the parts of a VXLAN packet (outer IPv4 onward) lie, read without changing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    /// Where the inner IPv4 packet starts, and where the UDP datagram that holds it ends.
    pub inner_start: usize,
    pub udp_end: usize,
    pub src_port: u16,
    pub vni: u32,
    pub src_mac: MacAddr,
    pub outer_ecn: Ecn,
}

/// Checks the outer headers of the VXLAN packet `b` (outer IPv4 onward): the outer IPv4
/// header as for IPIP, UDP to port 4789 (its checksum where there is one), the VNI flag, an
/// inner Ethernet frame carrying IPv4. The inner packet itself is not looked at.
pub fn parse(b: &[u8]) -> Result<Parsed, DecapError> {
    let outer = outer_checked(b)?;
    if outer.protocol() != Protocol::Udp {
        return Err(DecapError::NotVxlan);
    }
    let (src, dst) = (outer.src(), outer.dst());
    let udp_at = outer.header_len();
    let outer_end = usize::from(outer.total_len());
    let u = udp::Packet::new_checked(&b[udp_at..outer_end]).map_err(DecapError::Udp)?;
    if u.dst_port() != PORT {
        return Err(DecapError::NotVxlan);
    }
    let udp_end = udp_at + usize::from(u.len());
    if !udp::Packet::new_unchecked(&b[udp_at..udp_end]).verify_checksum(src, dst) {
        return Err(DecapError::UdpChecksum);
    }
    let vxlan_at = udp_at + udp::HEADER_LEN;
    let h = Header::new_checked(&b[vxlan_at..udp_end]).map_err(|_| DecapError::NoVni)?;
    if !h.has_vni() {
        return Err(DecapError::NoVni);
    }
    let eth_at = vxlan_at + HEADER_LEN;
    let f = Frame::new_checked(&b[eth_at..udp_end]).map_err(|_| DecapError::InnerNotIpv4)?;
    if f.ethertype() != EtherType::Ipv4 {
        return Err(DecapError::InnerNotIpv4);
    }
    Ok(Parsed {
        inner_start: eth_at + ethernet::HEADER_LEN,
        udp_end,
        src_port: u.src_port(),
        vni: h.vni(),
        src_mac: f.src(),
        outer_ecn: Ecn::from_tos(outer.tos()),
    })
}

/// Unwraps the VXLAN packet (outer IPv4 onward) at `buf[start..end]`. The caller checks the
/// VNI and the sender. On success the pod packet's checksum is valid and its ECN merged.
pub fn decapsulate(buf: &mut [u8], start: usize, end: usize) -> Result<Decapped, DecapError> {
    let p = parse(&buf[start..end])?;
    let istart = start + p.inner_start;
    let iend = unwrap_inner(buf, istart, start + p.udp_end, p.outer_ecn)?;
    Ok(Decapped { start: istart, end: iend, vni: p.vni, src_mac: p.src_mac })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    const HEAD: usize = 64;
    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);
    const C: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 101);
    const MAC_A: MacAddr = MacAddr([0x66, 0xee, 0, 0, 0, 0x0a]);
    const MAC_C: MacAddr = MacAddr([0x66, 0xee, 0, 0, 0, 0x0c]);

    /// The captured echo request wrapped by scapy (`IP(src=A, dst=C, id=0x1234, flags="DF")
    /// / UDP(sport=51234, dport=4789, chksum=0) / VXLAN(vni=4096) / Ether(src=MAC_A,
    /// dst=MAC_C)`); tshark decodes it as VXLAN, VNI 4096, carrying the ICMP echo.
    const WRAPPED_HEADERS: &str = "4500 0086 1234 4000 4011 7a18 c0a8 6464 c0a8 c865
        c822 12b5 0072 0000 0800 0000 0010 0000 66ee 0000 000c 66ee 0000 000a 0800";

    fn inner() -> Vec<u8> {
        hex(ECHO_REQUEST)[ethernet::HEADER_LEN..].to_vec()
    }

    fn tunnel() -> Tunnel {
        Tunnel { src: A, dst: C, ttl: 64, vni: CALICO_VNI, src_mac: MAC_A, dst_mac: MAC_C }
    }

    fn wrapped() -> Vec<u8> {
        let mut b = hex(WRAPPED_HEADERS);
        b.extend_from_slice(&inner());
        b
    }

    #[test]
    fn encapsulates_in_place_as_scapy_does() {
        let mut b = vec![0u8; HEAD];
        b.extend_from_slice(&inner());
        let len = b.len();
        let start = encapsulate(&mut b, HEAD, len, &tunnel(), 0x1234, 51234);
        assert_eq!(start, HEAD - OVERHEAD);
        assert_eq!(&b[start..], &wrapped()[..]);
    }

    #[test]
    fn decapsulates_the_fixture_back_to_the_pod_packet() {
        let mut b = wrapped();
        let len = b.len();
        let d = decapsulate(&mut b, 0, len).expect("decap");
        assert_eq!((d.vni, d.src_mac), (CALICO_VNI, MAC_A));
        assert_eq!(&b[d.start..d.end], &inner()[..]);
    }

    #[test]
    fn a_udp_checksum_is_checked_when_there_is_one() {
        let mut b = wrapped();
        // The checksum scapy computes for the same datagram with chksum left to it.
        let udp = 20..20 + 0x72;
        let mut acc = crate::checksum::sum(&A.octets()) + crate::checksum::sum(&C.octets()) + 17 + 0x72;
        acc += crate::checksum::sum(&b[udp.clone()]);
        let c = crate::checksum::finish(acc);
        b[26..28].copy_from_slice(&c.to_be_bytes());
        let len = b.len();
        assert!(decapsulate(&mut b.clone(), 0, len).is_ok());
        b[udp.end - 1] ^= 1;
        assert_eq!(decapsulate(&mut b, 0, len), Err(DecapError::UdpChecksum));
    }

    #[test]
    fn what_is_not_vxlan_is_refused_with_a_reason() {
        let len = wrapped().len();
        let cases: [(usize, u8, DecapError); 3] = [
            (23, 0xb6, DecapError::NotVxlan),     // port 4790
            (28, 0x00, DecapError::NoVni),        // I flag clear
            (48, 0x86, DecapError::InnerNotIpv4), // ethertype 0x8600
        ];
        for (at, v, want) in cases {
            let mut b = wrapped();
            b[at] = v;
            assert_eq!(decapsulate(&mut b, 0, len), Err(want), "byte {at}");
        }
        // Not UDP at all (the protocol byte changed, the checksum made right again).
        let mut b = wrapped();
        b[9] = 4;
        b[10..12].copy_from_slice(&[0, 0]);
        let c = crate::checksum::checksum(&b[..20]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(decapsulate(&mut b, 0, len), Err(DecapError::NotVxlan));
        // Cut short anywhere: an error, never a panic.
        for cut in 0..len {
            let mut b = wrapped();
            assert!(decapsulate(&mut b, 0, cut).is_err(), "cut at {cut}");
        }
    }

    /// Replays the `vxlan_decap` fuzz corpus through its checks.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/vxlan_decap");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()));
        let (mut n, mut accepted) = (0, 0);
        for e in entries.flatten() {
            let b = std::fs::read(e.path()).expect("corpus file");
            crate::fuzzing::vxlan_decap(&b);
            accepted += usize::from(decapsulate(&mut b.clone(), 0, b.len()).is_ok());
            n += 1;
        }
        assert!(n >= 5 && accepted >= 1, "corpus: {n} files, {accepted} accepted");
    }

    #[test]
    fn source_ports_follow_the_flow_and_stay_in_the_dynamic_range() {
        let p = inner();
        let a = source_port(&p);
        assert!(a >= SRC_PORT_MIN);
        assert_eq!(a, source_port(&p), "same flow, same port");
        let mut other = p.clone();
        other[19] = 4; // another destination
        assert_ne!(a, source_port(&other));
        assert_eq!(source_port(&[0u8; 3]), SRC_PORT_MIN);
    }
}
