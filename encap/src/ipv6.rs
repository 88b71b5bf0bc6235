//! IPv6 headers (RFC 8200): a view for in-place forwarding and a `Repr` for building headers.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                   Source Address (128 bits)                   |
//! |                Destination Address (128 bits)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! No header checksum: a router changes the hop limit and nothing to fix follows. Extension
//! headers are not walked; a router forwards them as payload (RFC 8200 §4: only the
//! destination looks at them, Hop-by-Hop aside, which a router may skip).

use crate::{be16, WireError};
use std::net::Ipv6Addr;

mod field {
    use crate::Field;
    pub const VER_TC_FLOW: Field = 0..4;
    pub const PAYLOAD_LEN: Field = 4..6;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Field = 8..24;
    pub const DST: Field = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = field::DST.end;
/// The least MTU every IPv6 link has (RFC 8200 §5); ICMPv6 errors never exceed it.
pub const MIN_MTU: usize = 1280;

/// Next-header values the router acts on.
pub const NEXT_ICMPV6: u8 = 58;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_UDP: u8 = 17;
pub const NEXT_HOP_BY_HOP: u8 = 0;

/// A view over an IPv6 packet. The buffer may be longer than the packet (Ethernet padding).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr(b: &[u8], f: crate::Field) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[f]);
    Ipv6Addr::from(o)
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A header, version 6, and a payload length that fits the buffer. A payload length of
    /// 0 with a Hop-by-Hop header would be a jumbogram (RFC 2675), which no link here
    /// carries; it is read as an empty payload.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if p.version() != 6 {
            return Err(WireError::BadVersion);
        }
        if HEADER_LEN + usize::from(p.payload_len()) > b.len() {
            return Err(WireError::BadTotalLen);
        }
        Ok(p)
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    pub fn traffic_class(&self) -> u8 {
        let b = self.buffer.as_ref();
        (b[0] << 4) | (b[1] >> 4)
    }

    pub fn flow_label(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[1] & 0x0f, b[2], b[3]])
    }

    pub fn payload_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Header and payload: the packet's length on the wire.
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    pub fn src(&self) -> Ipv6Addr {
        addr(self.buffer.as_ref(), field::SRC)
    }

    pub fn dst(&self) -> Ipv6Addr {
        addr(self.buffer.as_ref(), field::DST)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// One hop less; the caller has checked it is above 1.
    pub fn decrement_hop_limit(&mut self) {
        let b = self.buffer.as_mut();
        b[field::HOP_LIMIT] = b[field::HOP_LIMIT].saturating_sub(1);
    }

    /// Sets the source address (IPv6 has no header checksum; the upper layer's covers the
    /// address through its pseudo-header, and is the caller's to update).
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    /// Sets the destination address; see [`Packet::set_src`].
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::PAYLOAD_LEN].copy_from_slice(&len.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.total_len();
        &mut self.buffer.as_mut()[HEADER_LEN..end]
    }
}

/// An IPv6 header for building packets (ICMPv6 errors, NDP answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    pub traffic_class: u8,
    pub hop_limit: u8,
    /// Length of what follows the header.
    pub payload_len: usize,
}

impl Repr {
    /// Writes the 40-byte header into `b[..HEADER_LEN]` (flow label 0).
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..HEADER_LEN];
        let vtf = (6u32 << 28) | (u32::from(self.traffic_class) << 20);
        b[field::VER_TC_FLOW].copy_from_slice(&vtf.to_be_bytes());
        b[field::PAYLOAD_LEN].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
        b[field::NEXT_HEADER] = self.next_header;
        b[field::HOP_LIMIT] = self.hop_limit;
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
    }
}

/// The sum of the IPv6 pseudo-header (RFC 8200 §8.1) for an upper-layer packet of `len`
/// bytes: what TCP, UDP and ICMPv6 checksums start from.
pub fn pseudo_header_sum(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, len: usize) -> u32 {
    let len = len as u32;
    crate::checksum::sum(&src.octets())
        + crate::checksum::sum(&dst.octets())
        + (len >> 16)
        + (len & 0xffff)
        + u32::from(next_header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pcap_frames;

    #[test]
    fn parses_the_captured_echo_request() {
        let f = &pcap_frames(include_bytes!("../../fixtures/linux-ping6.pcap"))[2];
        let p = Packet::new_checked(&f[14..]).expect("valid");
        assert_eq!(
            (p.version(), p.traffic_class(), p.payload_len(), p.next_header(), p.hop_limit()),
            (6, 0, 64, 58, 64)
        );
        assert_eq!(p.src(), "fd00:10:244:1::2".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(p.dst(), "fd00:10:244:1::3".parse::<Ipv6Addr>().expect("addr"));
        assert_eq!(p.payload().len(), 64);
        assert_eq!(p.total_len(), f.len() - 14);
    }

    #[test]
    fn what_is_not_ipv6_is_refused_with_a_reason() {
        let f = &pcap_frames(include_bytes!("../../fixtures/linux-ping6.pcap"))[2];
        let p = f[14..].to_vec();
        assert_eq!(Packet::new_checked(&p[..39]).err(), Some(WireError::Truncated));
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert_eq!(Packet::new_checked(&v4[..]).err(), Some(WireError::BadVersion));
        assert_eq!(Packet::new_checked(&p[..p.len() - 1]).err(), Some(WireError::BadTotalLen));
        for cut in 0..p.len() {
            let _ = Packet::new_checked(&p[..cut]).map(|q| (q.payload().len(), q.src(), q.flow_label()));
        }
    }

    #[test]
    fn a_header_built_reads_back_and_the_hop_limit_counts_down() {
        let r = Repr {
            src: "fd00::1".parse().expect("addr"),
            dst: "fd00::2".parse().expect("addr"),
            next_header: NEXT_UDP,
            traffic_class: 0xb8,
            hop_limit: 2,
            payload_len: 8,
        };
        let mut b = [0u8; 48];
        r.emit(&mut b);
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        assert_eq!((p.traffic_class(), p.flow_label(), p.payload_len(), p.next_header()), (0xb8, 0, 8, NEXT_UDP));
        p.decrement_hop_limit();
        assert_eq!(p.hop_limit(), 1);
        assert_eq!((p.src(), p.dst()), (r.src, r.dst));
    }
}
