//! Wire formats the router reads and rewrites in place.
//!
//! Every format is a typed view over a byte buffer (`Packet<T: AsRef<[u8]>>`): getters need only
//! `AsRef`, setters need `AsMut`. `new_checked` validates lengths once; after it succeeds no
//! accessor panics, so untrusted frames from the kernel always go through it. Nothing here
//! allocates or copies a payload.

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod fuzzing;
pub mod gro;
pub mod gso;
pub mod icmp;
pub mod icmpv6;
pub mod ipip;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod vxlan;

/// A byte range inside a header.
pub(crate) type Field = core::ops::Range<usize>;

/// The big-endian 16-bit field `f` of a header (the views have checked its length).
pub(crate) fn be16(b: &[u8], f: Field) -> u16 {
    u16::from_be_bytes([b[f.start], b[f.start + 1]])
}

/// The big-endian 32-bit field `f` of a header.
pub(crate) fn be32(b: &[u8], f: Field) -> u32 {
    u32::from_be_bytes([b[f.start], b[f.start + 1], b[f.start + 2], b[f.start + 3]])
}

/// Why a buffer is not a valid header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("buffer shorter than the header")]
    Truncated,
    #[error("IP version is not the one the header claims to be")]
    BadVersion,
    #[error("IPv4 header length (IHL) below 5 words or beyond the packet")]
    BadHeaderLen,
    #[error("IPv4 total length disagrees with the frame")]
    BadTotalLen,
    #[error("header checksum does not verify")]
    BadChecksum,
    #[error("ARP is not Ethernet/IPv4 or has a bad operation")]
    UnsupportedArp,
}

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set: broadcast or multicast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl core::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl core::fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(self, f)
    }
}

impl core::str::FromStr for MacAddr {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or(WireError::Truncated)?;
            // Two hex digits: from_str_radix alone takes "+1" and "001".
            if p.len() != 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(WireError::Truncated);
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| WireError::Truncated)?;
        }
        if parts.next().is_some() {
            return Err(WireError::Truncated);
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! A real exchange captured with `tcpdump -w` between two Linux namespaces
    //! (`ping -c 1 10.244.1.3` from 10.244.1.2); the pcap is `fixtures/linux-ping.pcap`.

    /// Every frame of a pcap file (the IPv6 fixtures: `fixtures/linux-ping6.pcap`, Linux
    /// `ping -6` between two namespaces: NS, NA, echo request, echo reply; and
    /// `fixtures/linux-gateway6.pcap`, a pod's NS for Calico's gateway
    /// fe80::ecee:eeff:feee:eeee and the NA of a Linux host end owning it, MAC
    /// ee:ee:ee:ee:ee:ee, forwarding on).
    pub fn pcap_frames(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut r = pcap_file::pcap::PcapReader::new(bytes).expect("pcap header");
        let mut out = Vec::new();
        while let Some(p) = r.next_packet() {
            out.push(p.expect("pcap record").data.into_owned());
        }
        out
    }

    pub fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> =
            s.bytes().filter(|c| c.is_ascii_hexdigit()).map(|c| (c as char).to_digit(16).unwrap_or(0) as u8).collect();
        digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
    }

    pub const ARP_REQUEST: &str = "ffff ffff ffff 0200 0000 0001 0806 0001
        0800 0604 0001 0200 0000 0001 0af4 0102 0000 0000 0000 0af4 0103";
    pub const ARP_REPLY: &str = "0200 0000 0001 0200 0000 0002 0806 0001
        0800 0604 0002 0200 0000 0002 0af4 0103 0200 0000 0001 0af4 0102";
    pub const ECHO_REQUEST: &str = "0200 0000 0002 0200 0000 0001 0800 4500
        0054 3eb4 4000 4001 e408 0af4 0102 0af4 0103 0800 89d1 0858 0001 15ec 076b 0000
        0000 88ab 0100 0000 0000 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f 2021 2223 2425
        2627 2829 2a2b 2c2d 2e2f 3031 3233 3435 3637";
    pub const ECHO_REPLY: &str = "0200 0000 0001 0200 0000 0002 0800 4500
        0054 2f4d 0000 4001 3370 0af4 0103 0af4 0102 0000 91d1 0858 0001 15ec 076b 0000
        0000 88ab 0100 0000 0000 1011 1213 1415 1617 1819 1a1b 1c1d 1e1f 2021 2223 2425
        2627 2829 2a2b 2c2d 2e2f 3031 3233 3435 3637";
}
