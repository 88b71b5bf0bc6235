//! UDP (RFC 768): the header view and its `Repr`, enough to carry VXLAN.

use crate::{be16, checksum, Field, WireError};
use std::net::Ipv4Addr;

mod field {
    use super::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
}

pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// A view over a UDP datagram (header and payload). The buffer may run past the datagram.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// A datagram whose length field covers at least its header and fits the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Packet { buffer };
        let b = p.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(p.len());
        if len < HEADER_LEN || len > b.len() {
            return Err(WireError::BadTotalLen);
        }
        Ok(p)
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Header and payload, in bytes.
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= HEADER_LEN
    }

    /// 0: the sender computed none (allowed over IPv4).
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// Whether the checksum is zero ("none") or right over the pseudo-header and datagram.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let len = usize::from(self.len());
        self.checksum() == 0
            || checksum::finish(pseudo_header_sum(src, dst, len) + checksum::sum(&self.buffer.as_ref()[..len])) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Computes the checksum over the pseudo-header and the datagram of `len()` bytes
    /// (RFC 768; a result of 0 is sent as 0xffff, since 0 means "none").
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = usize::from(self.len());
        let acc = pseudo_header_sum(src, dst, len) + checksum::sum(&self.buffer.as_ref()[..len]);
        let c = match checksum::finish(acc) {
            0 => 0xffff,
            c => c,
        };
        self.set_checksum(c);
    }
}

/// The pseudo-header's sum (RFC 768): addresses, protocol 17 and the UDP length; also what
/// a partial (offloaded) checksum field holds.
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u32 {
    checksum::sum(&src.octets()) + checksum::sum(&dst.octets()) + 17 + len as u32
}

/// The fields of a UDP header to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    /// Writes the header into `b[..HEADER_LEN]` with a zero checksum: over IPv4 that means
    /// "none", which is what RFC 7348 asks of VXLAN senders (the inner packet has its own).
    pub fn emit(&self, b: &mut [u8]) {
        let len = (HEADER_LEN + self.payload_len) as u16;
        b[field::SRC_PORT].copy_from_slice(&self.src_port.to_be_bytes());
        b[field::DST_PORT].copy_from_slice(&self.dst_port.to_be_bytes());
        b[field::LENGTH].copy_from_slice(&len.to_be_bytes());
        b[field::CHECKSUM].copy_from_slice(&[0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_once() {
        assert_eq!(Packet::new_checked(&[0u8; 7][..]).err(), Some(WireError::Truncated));
        // Length 7 (below the header) and 20 (beyond the buffer).
        assert_eq!(Packet::new_checked(&[0, 1, 0, 2, 0, 7, 0, 0][..]).err(), Some(WireError::BadTotalLen));
        assert_eq!(Packet::new_checked(&[0, 1, 0, 2, 0, 20, 0, 0][..]).err(), Some(WireError::BadTotalLen));
        let mut b = [0u8; 12];
        Repr { src_port: 51234, dst_port: 4789, payload_len: 2 }.emit(&mut b);
        let p = Packet::new_checked(&b[..]).expect("valid");
        assert_eq!((p.src_port(), p.dst_port(), p.len(), p.checksum()), (51234, 4789, 10, 0));
        assert_eq!(p.payload().len(), 2);
    }
}
