//! IPv4 headers (RFC 791): a view for in-place forwarding and a `Repr` for building headers.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version|  IHL  |  DSCP   |ECN|          Total Length         |
//! |         Identification        |Flags|     Fragment Offset     |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::checksum;
use crate::{be16, Field, WireError};
use std::net::Ipv4Addr;

mod field {
    use crate::Field;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC: Field = 12..16;
    pub const DST: Field = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = field::DST.end;

/// IP protocol numbers; a router forwards what it does not recognise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Icmp,
    IpIp,
    Tcp,
    Udp,
    Unknown(u8),
}

impl From<u8> for Protocol {
    fn from(v: u8) -> Self {
        match v {
            1 => Protocol::Icmp,
            4 => Protocol::IpIp,
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            o => Protocol::Unknown(o),
        }
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        match p {
            Protocol::Icmp => 1,
            Protocol::IpIp => 4,
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Unknown(o) => o,
        }
    }
}

/// A view over an IPv4 packet. The buffer may be longer than `total_len` (Ethernet padding).
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn addr(b: &[u8], f: crate::Field) -> Ipv4Addr {
    Ipv4Addr::new(b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3])
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// `new_unchecked` + `check_len`: after success no accessor panics. The checksum is not
    /// verified here (`verify_checksum`), so a caller can tell the two failures apart.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if self.version() != 4 {
            return Err(WireError::BadVersion);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN || hl > b.len() {
            return Err(WireError::BadHeaderLen);
        }
        let tl = usize::from(self.total_len());
        if tl < hl || tl > b.len() {
            return Err(WireError::BadTotalLen);
        }
        Ok(())
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    pub fn total_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    pub fn dont_frag(&self) -> bool {
        self.buffer.as_ref()[field::FLG_OFF.start] & 0x40 != 0
    }

    /// The reserved flag bit (RFC 791: must be zero).
    pub fn reserved_flag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLG_OFF) & 0x8000 != 0
    }

    pub fn more_frags(&self) -> bool {
        self.buffer.as_ref()[field::FLG_OFF.start] & 0x20 != 0
    }

    /// Fragment offset in bytes.
    /// Whether the packet is a fragment (more follow, or it is not the first).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLG_OFF) & 0x1fff) << 3
    }

    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    pub fn protocol(&self) -> Protocol {
        Protocol::from(self.buffer.as_ref()[field::PROTOCOL])
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn src(&self) -> Ipv4Addr {
        addr(self.buffer.as_ref(), field::SRC)
    }

    pub fn dst(&self) -> Ipv4Addr {
        addr(self.buffer.as_ref(), field::DST)
    }

    /// True when the header checksum verifies (sum over the header is 0xffff).
    pub fn verify_checksum(&self) -> bool {
        let b = self.buffer.as_ref();
        checksum::finish(checksum::sum(&b[..self.header_len()])) == 0
    }

    /// The payload up to `total_len` (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Decrements TTL by one and patches the checksum incrementally (RFC 1624), touching
    /// nothing else. The caller has checked that TTL > 1.
    pub fn decrement_ttl(&mut self) {
        let b = self.buffer.as_mut();
        let old = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        b[field::TTL] = b[field::TTL].wrapping_sub(1);
        let new = u16::from_be_bytes([b[field::TTL], b[field::PROTOCOL]]);
        let hc = be16(b, field::CHECKSUM);
        b[field::CHECKSUM].copy_from_slice(&checksum::update(hc, old, new).to_be_bytes());
    }

    /// Sets TOS (DSCP and ECN) and patches the checksum incrementally (RFC 1624, on the
    /// 16-bit word that holds version, IHL and TOS).
    pub fn set_tos_update_checksum(&mut self, tos: u8) {
        let b = self.buffer.as_mut();
        let old = u16::from_be_bytes([b[field::VER_IHL], b[field::TOS]]);
        b[field::TOS] = tos;
        let new = u16::from_be_bytes([b[field::VER_IHL], b[field::TOS]]);
        let hc = be16(b, field::CHECKSUM);
        b[field::CHECKSUM].copy_from_slice(&checksum::update(hc, old, new).to_be_bytes());
    }

    /// Sets the source address and patches the checksum incrementally (RFC 1624).
    pub fn set_src_update_checksum(&mut self, a: Ipv4Addr) {
        self.set_addr_update_checksum(field::SRC, a);
    }

    /// Sets the destination address and patches the checksum incrementally (RFC 1624).
    pub fn set_dst_update_checksum(&mut self, a: Ipv4Addr) {
        self.set_addr_update_checksum(field::DST, a);
    }

    fn set_addr_update_checksum(&mut self, at: Field, a: Ipv4Addr) {
        let b = self.buffer.as_mut();
        let hc = checksum::update_bytes(be16(b, field::CHECKSUM), &b[at.clone()], &a.octets());
        b[at].copy_from_slice(&a.octets());
        b[field::CHECKSUM].copy_from_slice(&hc.to_be_bytes());
    }

    /// The setters below leave the checksum alone: call [`Packet::fill_checksum`] after them.
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_ident(&mut self, ident: u16) {
        self.buffer.as_mut()[field::IDENT].copy_from_slice(&ident.to_be_bytes());
    }

    /// Flags and fragment offset (in 8-byte units): DF, MF and the offset.
    pub fn set_frag(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v = (offset & 0x1fff) | if dont_frag { 0x4000 } else { 0 } | if more_frags { 0x2000 } else { 0 };
        self.buffer.as_mut()[field::FLG_OFF].copy_from_slice(&v.to_be_bytes());
    }

    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    pub fn set_protocol(&mut self, p: Protocol) {
        self.buffer.as_mut()[field::PROTOCOL] = p.into();
    }

    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&a.octets());
    }

    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&a.octets());
    }

    /// Recomputes the header checksum from scratch (after rewriting several fields).
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&b[..hl]);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let tl = usize::from(self.total_len());
        &mut self.buffer.as_mut()[hl..tl]
    }
}

/// An IPv4 header without options, for building packets (ICMP errors, tunnel headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: Protocol,
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub ttl: u8,
    /// Length of what follows the header.
    pub payload_len: usize,
}

impl Repr {
    /// Reads the fields of a checked packet (options are not carried over).
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            ttl: p.ttl(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
        }
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the 20-byte header with a correct checksum into `b[..HEADER_LEN]`.
    pub fn emit(&self, b: &mut [u8]) {
        let b = &mut b[..HEADER_LEN];
        b[field::VER_IHL] = 0x45;
        b[field::TOS] = self.tos;
        let total = (HEADER_LEN + self.payload_len) as u16;
        b[field::LENGTH].copy_from_slice(&total.to_be_bytes());
        b[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        let flags: u16 = if self.dont_frag { 0x4000 } else { 0 };
        b[field::FLG_OFF].copy_from_slice(&flags.to_be_bytes());
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol.into();
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        Packet::new_unchecked(b).fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethernet;
    use crate::fixtures::*;

    fn captured() -> Vec<u8> {
        hex(ECHO_REQUEST)[ethernet::HEADER_LEN..].to_vec()
    }

    #[test]
    fn parses_captured_echo_request() {
        let b = captured();
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 84);
        assert_eq!(p.ttl(), 64);
        assert!(p.dont_frag());
        assert_eq!(p.protocol(), Protocol::Icmp);
        assert_eq!(p.src(), Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(10, 244, 1, 3));
        assert!(p.verify_checksum());
        assert_eq!(p.payload().len(), 64);
    }

    #[test]
    fn repr_emits_the_captured_header() {
        let b = captured();
        let r = Repr::parse(&Packet::new_checked(&b[..]).expect("valid"));
        let mut out = [0u8; HEADER_LEN];
        r.emit(&mut out);
        assert_eq!(&out[..], &b[..HEADER_LEN]);
    }

    #[test]
    fn decrement_ttl_keeps_checksum_valid() {
        let mut b = captured();
        let mut p = Packet::new_checked(&mut b[..]).expect("valid");
        p.decrement_ttl();
        assert_eq!(p.ttl(), 63);
        assert!(p.verify_checksum());
        // etherparse agrees the header is sound.
        let (h, _) = etherparse::Ipv4Header::from_slice(&b).expect("etherparse");
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }

    #[test]
    fn parse_rejects_short_buffer() {
        assert_eq!(Packet::new_checked(&captured()[..19]).err(), Some(WireError::Truncated));
    }

    #[test]
    fn parse_rejects_ihl_below_5() {
        let mut b = captured();
        b[0] = 0x44;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadHeaderLen));
    }

    #[test]
    fn parse_rejects_ihl_beyond_buffer() {
        let mut b = captured();
        b[0] = 0x4f;
        assert_eq!(Packet::new_checked(&b[..40]).err(), Some(WireError::BadHeaderLen));
    }

    #[test]
    fn parse_rejects_total_length_beyond_frame() {
        let mut b = captured();
        b[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadTotalLen));
    }

    #[test]
    fn parse_rejects_total_length_below_header() {
        let mut b = captured();
        b[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadTotalLen));
    }

    #[test]
    fn parse_rejects_version_6() {
        let mut b = captured();
        b[0] = 0x65;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(WireError::BadVersion));
    }

    #[test]
    fn bad_checksum_is_detected() {
        let mut b = captured();
        b[10] ^= 0x01;
        assert!(!Packet::new_checked(&b[..]).expect("lengths fine").verify_checksum());
    }

    #[test]
    fn padding_after_total_length_is_ignored() {
        let mut b = captured();
        b.extend_from_slice(&[0u8; 10]);
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!(p.payload().len(), 64);
    }
}
