//! IP-in-IP (RFC 2003), done in place: the outer header is written into headroom in front of
//! the inner packet, and decapsulation only moves the start of the packet. No payload copy.
//!
//! ECN follows RFC 6040 normal mode: the encapsulator copies the inner ECN field outward;
//! the decapsulator merges congestion marks back inward and drops the one invalid
//! combination (outer CE on a Not-ECT inner packet). DSCP is copied outward (uniform model).

use crate::ipv4::{self, Packet, Protocol, Repr};
use crate::WireError;
use std::net::Ipv4Addr;

/// Bytes the outer header adds.
pub const OVERHEAD: usize = ipv4::HEADER_LEN;

/// The ECN field (RFC 3168).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecn {
    NotEct,
    Ect1,
    Ect0,
    Ce,
}

impl Ecn {
    pub fn from_tos(tos: u8) -> Ecn {
        match tos & 0b11 {
            0 => Ecn::NotEct,
            1 => Ecn::Ect1,
            2 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }

    pub fn bits(self) -> u8 {
        match self {
            Ecn::NotEct => 0,
            Ecn::Ect1 => 1,
            Ecn::Ect0 => 2,
            Ecn::Ce => 3,
        }
    }
}

/// RFC 6040 §4.2, Figure 4: the inner ECN after decapsulation, or `None` to drop.
pub fn decap_ecn(inner: Ecn, outer: Ecn) -> Option<Ecn> {
    use Ecn::*;
    match (inner, outer) {
        (NotEct, Ce) => None,
        (NotEct, _) => Some(NotEct),
        (_, Ce) | (Ce, _) => Some(Ce),
        (Ect0, Ect1) => Some(Ect1),
        (inner, _) => Some(inner),
    }
}

/// Parameters of the outer header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tunnel {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
}

/// Why a tunnelled packet (IPIP, or VXLAN) could not be unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecapError {
    #[error("outer header: {0}")]
    Outer(WireError),
    #[error("outer header checksum does not verify")]
    OuterChecksum,
    #[error("outer protocol is not 4 (IPIP)")]
    NotIpip,
    #[error("outer packet is a fragment (not reassembled)")]
    OuterFragment,
    #[error("not UDP to port 4789")]
    NotVxlan,
    #[error("UDP header: {0}")]
    Udp(WireError),
    #[error("UDP checksum does not verify")]
    UdpChecksum,
    #[error("VXLAN header truncated or without the VNI flag")]
    NoVni,
    #[error("inner frame is not Ethernet carrying IPv4")]
    InnerNotIpv4,
    #[error("inner header: {0}")]
    Inner(WireError),
    #[error("inner header checksum does not verify")]
    InnerChecksum,
    #[error("outer CE mark on a Not-ECT inner packet (RFC 6040)")]
    InvalidEcn,
}

/// Wraps the inner IPv4 packet at `buf[inner_start..inner_end]` (a checked packet) into an
/// outer header written at `inner_start - OVERHEAD`. DF and TOS come from the inner header.
/// Returns the start of the outer packet. The caller guarantees `inner_start >= OVERHEAD`.
pub fn encapsulate(buf: &mut [u8], inner_start: usize, inner_end: usize, t: &Tunnel, ident: u16) -> usize {
    let inner = Packet::new_unchecked(&buf[inner_start..inner_end]);
    let repr = Repr {
        src: t.src,
        dst: t.dst,
        protocol: Protocol::IpIp,
        tos: inner.tos(),
        ident,
        dont_frag: inner.dont_frag(),
        ttl: t.ttl,
        payload_len: inner_end - inner_start,
    };
    let start = inner_start - OVERHEAD;
    repr.emit(&mut buf[start..inner_start]);
    start
}

/// Unwraps the outer packet at `buf[start..end]`. On success returns the inner packet's
/// span (inside the same buffer), its ECN merged per RFC 6040 and its checksum still valid.
pub fn decapsulate(buf: &mut [u8], start: usize, end: usize) -> Result<(usize, usize), DecapError> {
    let outer = outer_checked(&buf[start..end])?;
    if outer.protocol() != Protocol::IpIp {
        return Err(DecapError::NotIpip);
    }
    let outer_ecn = Ecn::from_tos(outer.tos());
    let istart = start + outer.header_len();
    let oend = start + usize::from(outer.total_len());
    let iend = unwrap_inner(buf, istart, oend, outer_ecn)?;
    Ok((istart, iend))
}

/// The checks every tunnel's outer IPv4 header gets: well formed, its checksum right, and
/// not a fragment (nothing is reassembled).
pub(crate) fn outer_checked(b: &[u8]) -> Result<Packet<&[u8]>, DecapError> {
    let outer = Packet::new_checked(b).map_err(DecapError::Outer)?;
    if !outer.verify_checksum() {
        return Err(DecapError::OuterChecksum);
    }
    if outer.is_fragment() {
        return Err(DecapError::OuterFragment);
    }
    Ok(outer)
}

/// The checks every tunnel's inner packet at `buf[istart..limit]` gets, then the outer ECN
/// merged into it (RFC 6040, its checksum kept valid). Returns the inner packet's end.
pub(crate) fn unwrap_inner(buf: &mut [u8], istart: usize, limit: usize, outer: Ecn) -> Result<usize, DecapError> {
    let inner = Packet::new_checked(&buf[istart..limit]).map_err(DecapError::Inner)?;
    if !inner.verify_checksum() {
        return Err(DecapError::InnerChecksum);
    }
    let iend = istart + usize::from(inner.total_len());
    let mut p = Packet::new_unchecked(&mut buf[istart..iend]);
    let tos = p.tos();
    let ecn = decap_ecn(Ecn::from_tos(tos), outer).ok_or(DecapError::InvalidEcn)?;
    let new_tos = (tos & !0b11) | ecn.bits();
    if new_tos != tos {
        p.set_tos_update_checksum(new_tos);
    }
    Ok(iend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::ethernet;
    use crate::fixtures::*;

    const HEAD: usize = 40;
    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 100);
    const C: Ipv4Addr = Ipv4Addr::new(192, 168, 200, 101);

    /// The captured echo request (84 bytes of IPv4) behind `HEAD` bytes of headroom.
    fn inner_in_headroom() -> Vec<u8> {
        let mut b = vec![0u8; HEAD];
        b.extend_from_slice(&hex(ECHO_REQUEST)[ethernet::HEADER_LEN..]);
        b
    }

    /// The outer header for the capture, written out by hand from RFC 791/2003:
    /// 45 | tos 00 | len 104 | id 0x1234 | DF (copied) | ttl 64 | proto 4 | csum | A | C.
    const OUTER: &str = "4500 0068 1234 4000 4004 0000 c0a8 6464 c0a8 c865";

    fn expected_outer() -> Vec<u8> {
        let mut h = hex(OUTER);
        let c = checksum::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn encapsulates_in_place_with_the_expected_header() {
        let mut b = inner_in_headroom();
        let len = b.len();
        let t = Tunnel { src: A, dst: C, ttl: 64 };
        let start = encapsulate(&mut b, HEAD, len, &t, 0x1234);
        assert_eq!(start, HEAD - OVERHEAD);
        assert_eq!(&b[start..HEAD], &expected_outer()[..]);
        // The inner packet is untouched.
        assert_eq!(&b[HEAD..], &hex(ECHO_REQUEST)[ethernet::HEADER_LEN..]);
        // etherparse reads it as IPIP carrying the original ICMP.
        let (outer, rest) = etherparse::Ipv4Header::from_slice(&b[start..]).expect("outer");
        assert_eq!(outer.protocol, etherparse::IpNumber::IPV4);
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        let (inner, _) = etherparse::Ipv4Header::from_slice(rest).expect("inner");
        assert_eq!(inner.protocol, etherparse::IpNumber::ICMP);
    }

    #[test]
    fn decapsulates_the_fixture_back_to_the_inner_packet() {
        let mut b = expected_outer();
        b.extend_from_slice(&hex(ECHO_REQUEST)[ethernet::HEADER_LEN..]);
        let len = b.len();
        let (s, e) = decapsulate(&mut b, 0, len).expect("decap");
        assert_eq!(&b[s..e], &hex(ECHO_REQUEST)[ethernet::HEADER_LEN..]);
    }

    #[test]
    fn tos_and_df_are_copied_outward() {
        let mut b = inner_in_headroom();
        b[HEAD + 1] = 0xb8 | 0b10; // EF + ECT(0)
        b[HEAD + 6] = 0; // clear DF
        let len = b.len();
        let start = encapsulate(&mut b, HEAD, len, &Tunnel { src: A, dst: C, ttl: 9 }, 1);
        let o = Packet::new_checked(&b[start..]).expect("outer");
        assert_eq!(o.tos(), 0xba);
        assert!(!o.dont_frag());
        assert_eq!(o.ttl(), 9);
    }

    fn wrapped(inner_ecn: Ecn, outer_ecn: Ecn) -> Vec<u8> {
        let mut b = inner_in_headroom();
        b[HEAD + 1] = inner_ecn.bits();
        b[HEAD + 10..HEAD + 12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&b[HEAD..HEAD + 20]);
        b[HEAD + 10..HEAD + 12].copy_from_slice(&c.to_be_bytes());
        let len = b.len();
        let s = encapsulate(&mut b, HEAD, len, &Tunnel { src: A, dst: C, ttl: 64 }, 7);
        // A router on the way marks the outer header.
        b[s + 1] = outer_ecn.bits();
        b[s + 10..s + 12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&b[s..s + 20]);
        b[s + 10..s + 12].copy_from_slice(&c.to_be_bytes());
        b[s..].to_vec()
    }

    #[test]
    fn congestion_mark_survives_decapsulation() {
        let mut b = wrapped(Ecn::Ect0, Ecn::Ce);
        let len = b.len();
        let (s, e) = decapsulate(&mut b, 0, len).expect("decap");
        let inner = Packet::new_checked(&b[s..e]).expect("inner");
        assert_eq!(Ecn::from_tos(inner.tos()), Ecn::Ce);
        assert!(inner.verify_checksum());
    }

    #[test]
    fn ce_on_not_ect_inner_is_dropped() {
        let mut b = wrapped(Ecn::NotEct, Ecn::Ce);
        let len = b.len();
        assert_eq!(decapsulate(&mut b, 0, len), Err(DecapError::InvalidEcn));
    }

    #[test]
    fn rfc6040_table_is_followed() {
        use Ecn::*;
        let all = [NotEct, Ect0, Ect1, Ce];
        let expect = |i: Ecn, o: Ecn| match (i, o) {
            (NotEct, Ce) => None,
            (NotEct, _) => Some(NotEct),
            (Ect0, NotEct) | (Ect0, Ect0) => Some(Ect0),
            (Ect0, Ect1) => Some(Ect1),
            (Ect1, NotEct) | (Ect1, Ect0) | (Ect1, Ect1) => Some(Ect1),
            _ => Some(Ce),
        };
        for i in all {
            for o in all {
                assert_eq!(decap_ecn(i, o), expect(i, o), "inner {i:?} outer {o:?}");
            }
        }
    }

    /// Replays the decap fuzz corpus: no panic, and what is accepted is a valid inner packet.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decap");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("no corpus at {}: {e}", dir.display()));
        let mut accepted = 0;
        let mut n = 0;
        for e in entries.flatten() {
            let mut b = std::fs::read(e.path()).expect("corpus file");
            let len = b.len();
            if let Ok((s, e)) = decapsulate(&mut b, 0, len) {
                let inner = Packet::new_checked(&b[s..e]).expect("inner parses");
                assert!(inner.verify_checksum());
                accepted += 1;
            }
            n += 1;
        }
        assert!(n >= 5 && accepted >= 1, "corpus: {n} files, {accepted} accepted");
    }

    #[test]
    fn malformed_outer_and_inner_have_their_own_errors() {
        let good = wrapped(Ecn::NotEct, Ecn::NotEct);
        let run = |mut b: Vec<u8>| {
            let len = b.len();
            decapsulate(&mut b, 0, len).err()
        };
        assert_eq!(run(good[..10].to_vec()), Some(DecapError::Outer(WireError::Truncated)));
        let mut v = good.clone();
        v[10] ^= 1;
        assert_eq!(run(v), Some(DecapError::OuterChecksum));
        let mut v = good.clone();
        v[9] = 41;
        v[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&v[..20]);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(run(v), Some(DecapError::NotIpip));
        let mut v = good.clone();
        v[6] = 0x20; // MF
        v[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&v[..20]);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        assert_eq!(run(v), Some(DecapError::OuterFragment));
        assert_eq!(run(good[..30].to_vec()), Some(DecapError::Outer(WireError::BadTotalLen)));
        let mut v = good.clone();
        v[20] = 0x65;
        assert_eq!(run(v), Some(DecapError::Inner(WireError::BadVersion)));
        let mut v = good.clone();
        v[20] = 0x44;
        assert_eq!(run(v), Some(DecapError::Inner(WireError::BadHeaderLen)));
        let mut v = good.clone();
        v[22..24].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(run(v), Some(DecapError::Inner(WireError::BadTotalLen)));
        let mut v = good.clone();
        v[30] ^= 1;
        assert_eq!(run(v), Some(DecapError::InnerChecksum));
    }
}
