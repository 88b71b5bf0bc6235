//! Ethernet II frames: a view over `[dst(6) src(6) ethertype(2) payload]`.

use crate::{Field, MacAddr, WireError};

mod field {
    use crate::Field;
    pub const DST: Field = 0..6;
    pub const SRC: Field = 6..12;
    pub const ETHERTYPE: Field = 12..14;
}

/// Length of the Ethernet II header.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;

/// EtherType values the router cares about; anything else is `Unknown` and left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtherType {
    Ipv4,
    Arp,
    Ipv6,
    Unknown(u16),
}

impl From<u16> for EtherType {
    fn from(v: u16) -> Self {
        match v {
            0x0800 => EtherType::Ipv4,
            0x0806 => EtherType::Arp,
            0x86dd => EtherType::Ipv6,
            other => EtherType::Unknown(other),
        }
    }
}

impl From<EtherType> for u16 {
    fn from(v: EtherType) -> u16 {
        match v {
            EtherType::Ipv4 => 0x0800,
            EtherType::Arp => 0x0806,
            EtherType::Ipv6 => 0x86dd,
            EtherType::Unknown(o) => o,
        }
    }
}

/// A view over an Ethernet II frame.
#[derive(Debug)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

fn mac_at(b: &[u8], f: Field) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[f]);
    MacAddr(m)
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps without checking; accessors may panic on a short buffer.
    pub fn new_unchecked(buffer: T) -> Self {
        Frame { buffer }
    }

    /// Wraps and checks that the header fits; no accessor panics afterwards.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let f = Self::new_unchecked(buffer);
        f.check_len()?;
        Ok(f)
    }

    pub fn check_len(&self) -> Result<(), WireError> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    pub fn dst(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DST)
    }

    pub fn src(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SRC)
    }

    pub fn ethertype(&self) -> EtherType {
        let b = &self.buffer.as_ref()[field::ETHERTYPE];
        EtherType::from(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    pub fn set_src(&mut self, m: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    pub fn set_ethertype(&mut self, t: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&u16::from(t).to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Writes a whole Ethernet header in one go.
pub fn emit_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: EtherType) {
    let mut f = Frame::new_unchecked(&mut buf[..HEADER_LEN]);
    f.set_dst(dst);
    f.set_src(src);
    f.set_ethertype(ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn parses_captured_echo_request() {
        let bytes = hex(ECHO_REQUEST);
        let f = Frame::new_checked(&bytes[..]).expect("valid frame");
        assert_eq!(f.dst(), MacAddr([2, 0, 0, 0, 0, 2]));
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), EtherType::Ipv4);
        assert_eq!(f.payload().len(), 84);
    }

    #[test]
    fn emits_the_captured_header() {
        let bytes = hex(ECHO_REQUEST);
        let mut out = [0u8; HEADER_LEN];
        emit_header(&mut out, MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]), EtherType::Ipv4);
        assert_eq!(&out[..], &bytes[..HEADER_LEN]);
    }

    #[test]
    fn rejects_short_frame() {
        assert_eq!(Frame::new_checked(&[0u8; 13][..]).err(), Some(WireError::Truncated));
    }

    #[test]
    fn unknown_ethertype_round_trips() {
        assert_eq!(u16::from(EtherType::from(0x88cc)), 0x88cc);
    }

    #[test]
    fn mac_parses_and_prints() {
        let m: MacAddr = "02:aa:00:00:00:01".parse().expect("mac");
        assert_eq!(m.to_string(), "02:aa:00:00:00:01");
        assert!("02:aa".parse::<MacAddr>().is_err());
        for bad in ["+2:aa:00:00:00:01", "002:aa:00:00:00:01", "2:aa:00:00:00:01", "02:aa:00:00:00:0g"] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }
}
