//! ARP for IPv4 over Ethernet (RFC 826).
//!
//! ```text
//! htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2)
//! sha(6) spa(4) tha(6) tpa(4)
//! ```

use crate::{MacAddr, WireError};
use std::net::Ipv4Addr;

mod field {
    use crate::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = field::TPA.end;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Request,
    Reply,
}

/// The parsed content of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    pub operation: Operation,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

fn ip_at(b: &[u8], f: crate::Field) -> Ipv4Addr {
    Ipv4Addr::new(b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3])
}

fn mac_at(b: &[u8], f: crate::Field) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[f]);
    MacAddr(m)
}

impl ArpRepr {
    /// Parses an ARP payload (after the Ethernet header); anything but Ethernet/IPv4
    /// request or reply is `UnsupportedArp`.
    pub fn parse(b: &[u8]) -> Result<Self, WireError> {
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if b[field::HTYPE] != [0, 1] || b[field::PTYPE] != [0x08, 0x00] || b[field::HLEN] != 6 || b[field::PLEN] != 4 {
            return Err(WireError::UnsupportedArp);
        }
        let operation = match b[field::OPER] {
            [0, 1] => Operation::Request,
            [0, 2] => Operation::Reply,
            _ => return Err(WireError::UnsupportedArp),
        };
        Ok(ArpRepr {
            operation,
            sender_mac: mac_at(b, field::SHA),
            sender_ip: ip_at(b, field::SPA),
            target_mac: mac_at(b, field::THA),
            target_ip: ip_at(b, field::TPA),
        })
    }

    /// Writes the packet into `b[..PACKET_LEN]`.
    pub fn emit(&self, b: &mut [u8]) {
        b[field::HTYPE].copy_from_slice(&[0, 1]);
        b[field::PTYPE].copy_from_slice(&[0x08, 0x00]);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        let op: u8 = match self.operation {
            Operation::Request => 1,
            Operation::Reply => 2,
        };
        b[field::OPER].copy_from_slice(&[0, op]);
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        b[field::SPA].copy_from_slice(&self.sender_ip.octets());
        b[field::THA].copy_from_slice(&self.target_mac.0);
        b[field::TPA].copy_from_slice(&self.target_ip.octets());
    }

    pub fn buffer_len(&self) -> usize {
        PACKET_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethernet::HEADER_LEN;
    use crate::fixtures::*;

    #[test]
    fn parses_and_emits_captured_request() {
        let bytes = hex(ARP_REQUEST);
        let r = ArpRepr::parse(&bytes[HEADER_LEN..]).expect("arp");
        assert_eq!(r.operation, Operation::Request);
        assert_eq!(r.sender_ip, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(r.target_ip, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(r.target_mac, MacAddr::ZERO);
        let mut out = [0u8; PACKET_LEN];
        r.emit(&mut out);
        assert_eq!(&out[..], &bytes[HEADER_LEN..]);
    }

    #[test]
    fn parses_and_emits_captured_reply() {
        let bytes = hex(ARP_REPLY);
        let r = ArpRepr::parse(&bytes[HEADER_LEN..]).expect("arp");
        assert_eq!(r.operation, Operation::Reply);
        assert_eq!(r.sender_mac, MacAddr([2, 0, 0, 0, 0, 2]));
        let mut out = [0u8; PACKET_LEN];
        r.emit(&mut out);
        assert_eq!(&out[..], &bytes[HEADER_LEN..]);
    }

    #[test]
    fn rejects_short_and_foreign_arp() {
        let bytes = hex(ARP_REQUEST);
        assert_eq!(ArpRepr::parse(&bytes[HEADER_LEN..HEADER_LEN + 27]), Err(WireError::Truncated));
        let mut v = bytes[HEADER_LEN..].to_vec();
        v[7] = 9; // operation 9
        assert_eq!(ArpRepr::parse(&v), Err(WireError::UnsupportedArp));
        let mut v = bytes[HEADER_LEN..].to_vec();
        v[1] = 6; // IEEE 802 hardware
        assert_eq!(ArpRepr::parse(&v), Err(WireError::UnsupportedArp));
    }
}
