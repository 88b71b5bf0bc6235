//! ICMPv4 (RFC 792): the error messages a router sends and the checks on when not to.
//!
//! ```text
//! type(1) code(1) checksum(2) rest-of-header(4) | data: offending IP header + first 8 bytes
//! ```

use crate::checksum;
use crate::WireError;

mod field {
    use crate::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
}

/// Length of the fixed ICMP header.
pub const HEADER_LEN: usize = field::REST.end;

/// Longest ICMP error a router sends, its IP header included: it quotes as much of the
/// offending datagram as fits (RFC 1812 §4.3.2.3), at least the header and 8 bytes that RFC
/// 792 asks, and enough that the sender can tell which of its datagrams it was.
pub const MAX_ERROR_LEN: usize = 576;

/// Most bytes of the offending datagram an error quotes (after a 20-byte IP header).
pub const MAX_QUOTE: usize = MAX_ERROR_LEN - crate::ipv4::HEADER_LEN - HEADER_LEN;

pub mod types {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const SOURCE_QUENCH: u8 = 4;
    pub const REDIRECT: u8 = 5;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAMETER_PROBLEM: u8 = 12;
}

/// True for ICMP types that report an error; RFC 1812 §4.3.2.7 forbids answering them
/// with another error.
pub fn is_error_type(t: u8) -> bool {
    matches!(
        t,
        types::DEST_UNREACHABLE
            | types::SOURCE_QUENCH
            | types::REDIRECT
            | types::TIME_EXCEEDED
            | types::PARAMETER_PROBLEM
    )
}

/// The errors this router originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Type 3 code 0: no route covers the destination.
    NetUnreachable,
    /// Type 3 code 1: the next hop did not answer ARP.
    HostUnreachable,
    /// Type 3 code 4 (RFC 1191): too big for the next link and DF set; carries that link's MTU.
    FragmentationNeeded { mtu: u16 },
    /// Type 11 code 0: TTL ran out in transit.
    TtlExceeded,
}

impl ErrorKind {
    pub fn type_code(&self) -> (u8, u8) {
        match self {
            ErrorKind::NetUnreachable => (types::DEST_UNREACHABLE, 0),
            ErrorKind::HostUnreachable => (types::DEST_UNREACHABLE, 1),
            ErrorKind::FragmentationNeeded { .. } => (types::DEST_UNREACHABLE, 4),
            ErrorKind::TtlExceeded => (types::TIME_EXCEEDED, 0),
        }
    }
}

/// A view over an ICMP message.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }

    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    pub fn rest(&self) -> [u8; 4] {
        let b = &self.buffer.as_ref()[field::REST];
        [b[0], b[1], b[2], b[3]]
    }

    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }
}

/// Writes an ICMP error header in front of `out[HEADER_LEN..HEADER_LEN + quote_len]`, where the
/// caller has already placed the quoted datagram, and checksums the whole message.
/// Returns the message length.
pub fn emit_error(kind: ErrorKind, out: &mut [u8], quote_len: usize) -> usize {
    let len = HEADER_LEN + quote_len;
    let (t, c) = kind.type_code();
    out[field::TYPE] = t;
    out[field::CODE] = c;
    out[field::CHECKSUM].copy_from_slice(&[0, 0]);
    let rest = match kind {
        ErrorKind::FragmentationNeeded { mtu } => {
            let m = mtu.to_be_bytes();
            [0, 0, m[0], m[1]]
        }
        _ => [0; 4],
    };
    out[field::REST].copy_from_slice(&rest);
    let sum = checksum::checksum(&out[..len]);
    out[field::CHECKSUM].copy_from_slice(&sum.to_be_bytes());
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;
    use crate::{ethernet, ipv4};

    #[test]
    fn captured_echo_request_and_reply_verify() {
        for (h, t) in [(ECHO_REQUEST, types::ECHO_REQUEST), (ECHO_REPLY, types::ECHO_REPLY)] {
            let b = hex(h);
            let p = Packet::new_checked(&b[ethernet::HEADER_LEN + ipv4::HEADER_LEN..]).expect("icmp");
            assert_eq!(p.msg_type(), t);
            assert!(p.verify_checksum());
            assert!(!is_error_type(p.msg_type()));
        }
    }

    #[test]
    fn time_exceeded_quotes_header_and_8_bytes() {
        let b = hex(ECHO_REQUEST);
        let quote = &b[ethernet::HEADER_LEN..ethernet::HEADER_LEN + 28];
        let mut out = vec![0u8; HEADER_LEN + quote.len()];
        out[HEADER_LEN..].copy_from_slice(quote);
        let n = emit_error(ErrorKind::TtlExceeded, &mut out, quote.len());
        assert_eq!(n, 36);
        let p = Packet::new_checked(&out[..]).expect("icmp");
        assert_eq!((p.msg_type(), p.code()), (11, 0));
        assert!(p.verify_checksum());
        assert_eq!(p.data(), quote);
        // etherparse decodes the same message.
        let e = etherparse::Icmpv4Slice::from_slice(&out).expect("etherparse");
        assert!(matches!(e.icmp_type(), etherparse::Icmpv4Type::TimeExceeded(_)));
    }

    #[test]
    fn fragmentation_needed_carries_mtu() {
        let mut out = [0u8; HEADER_LEN + 28];
        emit_error(ErrorKind::FragmentationNeeded { mtu: 1480 }, &mut out, 28);
        let p = Packet::new_checked(&out[..]).expect("icmp");
        assert_eq!((p.msg_type(), p.code()), (3, 4));
        assert_eq!(p.rest(), [0, 0, 0x05, 0xc8]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn error_types_are_recognised() {
        for t in [3, 4, 5, 11, 12] {
            assert!(is_error_type(t));
        }
        for t in [0, 8, 13, 14] {
            assert!(!is_error_type(t));
        }
    }
}
