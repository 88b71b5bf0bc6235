//! TCP headers (RFC 9293), as far as a router that cuts and merges segments needs them: a
//! view with getters and the setters segmentation uses. The router never terminates TCP.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset|  Rsrvd|W|C|R|C|S|S|Y|I|            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! |                     Options (if data offset > 5)              |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::{be16, be32, checksum, WireError};
use std::net::Ipv4Addr;

mod field {
    use crate::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ: Field = 4..8;
    pub const ACK: Field = 8..12;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

/// Length of a TCP header without options.
pub const HEADER_LEN: usize = field::URGENT.end;

/// Flag bits of byte 13.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;
}

/// The offset of the checksum field in the header (a virtio-net header's `csum_offset`).
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM.start;

/// A view over a TCP segment: header and payload, nothing after.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// `new_unchecked` + `check_len`: after success no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// The buffer holds the fixed header and the header length it announces (at least 20).
    pub fn check_len(&self) -> Result<(), WireError> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let hl = self.header_len();
        if hl < HEADER_LEN || hl > b.len() {
            return Err(WireError::BadHeaderLen);
        }
        Ok(())
    }

    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in bytes, options included (data offset × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFF] >> 4) * 4
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    pub fn window(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    pub fn urgent(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options, between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// Everything in the header but the sequence number, the checksum and the flags in
    /// `ignore`: what must be equal for two segments of one flow to be merged.
    pub fn same_header_as(&self, other: &Packet<impl AsRef<[u8]>>, ignore: u8) -> bool {
        let (a, b) = (self.buffer.as_ref(), other.buffer.as_ref());
        let hl = self.header_len();
        hl == other.header_len()
            && a[field::SRC_PORT.start..field::DST_PORT.end] == b[field::SRC_PORT.start..field::DST_PORT.end]
            && a[field::ACK.start..field::FLAGS] == b[field::ACK.start..field::FLAGS]
            && a[field::FLAGS] & !ignore == b[field::FLAGS] & !ignore
            && a[field::WINDOW] == b[field::WINDOW]
            && a[field::URGENT.start..hl] == b[field::URGENT.start..hl]
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Whether the checksum over the IPv4 pseudo-header and the whole segment verifies.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        checksum::finish(pseudo_header_sum(src, dst, b.len()) + checksum::sum(b)) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_seq(&mut self, seq: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&seq.to_be_bytes());
    }

    pub fn set_flags(&mut self, f: u8) {
        self.buffer.as_mut()[field::FLAGS] = f;
    }

    pub fn set_checksum(&mut self, c: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Computes the full checksum over the pseudo-header and the whole segment.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let c = checksum::finish(pseudo_header_sum(src, dst, b.len()) + checksum::sum(b));
        self.set_checksum(c);
    }

    /// Leaves the checksum partial, as a sender with checksum offload does: the folded
    /// pseudo-header sum, not complemented, for whoever finishes it (the kernel or a NIC).
    pub fn fill_partial_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let len = self.buffer.as_ref().len();
        self.set_checksum(!checksum::finish(pseudo_header_sum(src, dst, len)));
    }
}

/// The one's-complement sum of the IPv4 pseudo-header of a TCP segment of `tcp_len` bytes
/// (addresses, protocol 6, length), not folded.
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, tcp_len: usize) -> u32 {
    checksum::sum(&src.octets()) + checksum::sum(&dst.octets()) + 6 + tcp_len as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data segment built by an independent encoder (etherparse).
    fn segment() -> (Vec<u8>, Ipv4Addr, Ipv4Addr) {
        let (src, dst) = (Ipv4Addr::new(10, 244, 1, 1), Ipv4Addr::new(10, 244, 3, 1));
        let b =
            etherparse::PacketBuilder::ipv4(src.octets(), dst.octets(), 64).tcp(40000, 5201, 1000, 502).ack(77).psh();
        let mut v = Vec::new();
        b.write(&mut v, b"hello, pod").expect("build");
        (v[20..].to_vec(), src, dst)
    }

    #[test]
    fn reads_what_etherparse_wrote() {
        let (seg, src, dst) = segment();
        let t = Packet::new_checked(&seg[..]).expect("tcp");
        assert_eq!((t.src_port(), t.dst_port(), t.seq(), t.ack_number()), (40000, 5201, 1000, 77));
        assert_eq!((t.header_len(), t.flags(), t.window()), (20, flags::ACK | flags::PSH, 502));
        assert_eq!(t.payload(), b"hello, pod");
        assert!(t.verify_checksum(src, dst));
        assert!(!t.verify_checksum(src, Ipv4Addr::new(10, 244, 3, 2)));
    }

    #[test]
    fn setters_and_checksums_round_trip() {
        let (mut seg, src, dst) = segment();
        let before = seg.clone();
        let mut t = Packet::new_unchecked(&mut seg[..]);
        t.set_seq(0xffff_fff0);
        t.set_flags(flags::ACK);
        t.fill_checksum(src, dst);
        assert!(t.verify_checksum(src, dst));
        assert_eq!(t.seq(), 0xffff_fff0);
        let same = Packet::new_unchecked(&before[..]);
        assert!(t.same_header_as(&same, flags::PSH), "only seq, checksum and PSH differ");
        assert!(!t.same_header_as(&same, 0));
        // A partial checksum completed over the segment verifies.
        t.fill_partial_checksum(src, dst);
        let c = checksum::finish(checksum::sum(t.buffer));
        t.set_checksum(c);
        assert!(t.verify_checksum(src, dst));
    }

    #[test]
    fn parse_rejects_a_data_offset_below_5_or_beyond_the_buffer() {
        let (mut seg, _, _) = segment();
        seg[12] = 4 << 4;
        assert_eq!(Packet::new_checked(&seg[..]).err(), Some(WireError::BadHeaderLen));
        seg[12] = 15 << 4;
        assert_eq!(Packet::new_checked(&seg[..25]).err(), Some(WireError::BadHeaderLen));
        assert_eq!(Packet::new_checked(&seg[..19]).err(), Some(WireError::Truncated));
    }
}
