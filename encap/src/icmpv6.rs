//! ICMPv6 (RFC 4443) and the two Neighbor Discovery messages a router needs (RFC 4861):
//! the errors this router sends, neighbour solicitations it answers for the pods' gateway or
//! sends for its next hops, and the advertisements that answer them.
//!
//! ```text
//! type(1) code(1) checksum(2) | body: the rest of the header (4) and data, or, in NDP,
//! reserved/flags(4) target address(16) options (type, length in 8-byte units, value)
//! ```
//!
//! Unlike ICMPv4's, the checksum covers an IPv6 pseudo-header, so a message's checksum
//! depends on the addresses of the packet that carries it.

use crate::ipv6::{self, NEXT_ICMPV6};
use crate::{checksum, MacAddr, WireError};
use std::net::Ipv6Addr;

mod field {
    use crate::Field;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Field = 2..4;
    pub const REST: Field = 4..8;
    pub const TARGET: Field = 8..24;
}

/// Length of the fixed ICMPv6 header (type, code, checksum, 4 bytes of the rest).
pub const HEADER_LEN: usize = field::REST.end;
/// A neighbour solicitation or advertisement without options.
pub const NDP_LEN: usize = field::TARGET.end;
/// A link-layer address option for Ethernet: type, length 1 (8 bytes), the MAC.
pub const LLADDR_OPTION_LEN: usize = 8;

pub mod types {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAMETER_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    pub const ROUTER_SOLICITATION: u8 = 133;
    pub const ROUTER_ADVERTISEMENT: u8 = 134;
    pub const NEIGHBOR_SOLICITATION: u8 = 135;
    pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
    pub const REDIRECT: u8 = 137;
}

/// Types below 128 report errors (RFC 4443 §2.1); no error is sent about one (§2.4 e).
pub fn is_error_type(t: u8) -> bool {
    t < 128
}

/// The errors this router originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Type 1 code 0: no route covers the destination.
    NoRoute,
    /// Type 1 code 3: the next hop did not answer neighbour discovery.
    AddressUnreachable,
    /// Type 2: too big for the next link; carries that link's MTU. IPv6 routers never
    /// fragment (RFC 8200 §5).
    PacketTooBig { mtu: u32 },
    /// Type 3 code 0: the hop limit ran out in transit.
    HopLimitExceeded,
}

impl ErrorKind {
    pub fn type_code(&self) -> (u8, u8) {
        match self {
            ErrorKind::NoRoute => (types::DEST_UNREACHABLE, 0),
            ErrorKind::AddressUnreachable => (types::DEST_UNREACHABLE, 3),
            ErrorKind::PacketTooBig { .. } => (types::PACKET_TOO_BIG, 0),
            ErrorKind::HopLimitExceeded => (types::TIME_EXCEEDED, 0),
        }
    }
}

/// The most of the offending packet an error quotes: the error's IPv6 packet then fits the
/// minimum MTU of 1280 (RFC 4443 §2.4 c).
pub const MAX_QUOTE: usize = ipv6::MIN_MTU - ipv6::HEADER_LEN - HEADER_LEN;

/// A view over an ICMPv6 message.
#[derive(Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// At least the 4 bytes of type, code and checksum.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = Self::new_unchecked(buffer);
        if p.buffer.as_ref().len() < field::REST.start {
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

    /// The target address of a neighbour solicitation or advertisement, unchecked otherwise
    /// (what it asks about or announces: the address a capture of that host wants to see).
    pub fn ndp_target(&self) -> Option<Ipv6Addr> {
        let b = self.buffer.as_ref();
        let t = self.msg_type();
        if t != types::NEIGHBOR_SOLICITATION && t != types::NEIGHBOR_ADVERTISEMENT {
            return None;
        }
        let o: [u8; 16] = b.get(field::TARGET)?.try_into().ok()?;
        Some(Ipv6Addr::from(o))
    }

    /// Whether the checksum over the pseudo-header of `src` → `dst` and the message is right.
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        checksum::finish(ipv6::pseudo_header_sum(src, dst, NEXT_ICMPV6, b.len()) + checksum::sum(b)) == 0
    }
}

/// Fills the checksum of the ICMPv6 message `msg`, sent from `src` to `dst`.
pub fn fill_checksum(msg: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) {
    msg[field::CHECKSUM].copy_from_slice(&[0, 0]);
    let c = checksum::finish(ipv6::pseudo_header_sum(src, dst, NEXT_ICMPV6, msg.len()) + checksum::sum(msg));
    msg[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

/// Writes an ICMPv6 error header in front of `out[HEADER_LEN..HEADER_LEN + quote_len]`, where
/// the caller has placed the quoted packet, and checksums the message as sent from `src` to
/// `dst`. Returns the message length.
pub fn emit_error(kind: ErrorKind, out: &mut [u8], quote_len: usize, src: Ipv6Addr, dst: Ipv6Addr) -> usize {
    let len = HEADER_LEN + quote_len;
    let (t, c) = kind.type_code();
    out[field::TYPE] = t;
    out[field::CODE] = c;
    let rest = match kind {
        ErrorKind::PacketTooBig { mtu } => mtu.to_be_bytes(),
        _ => [0; 4],
    };
    out[field::REST].copy_from_slice(&rest);
    fill_checksum(&mut out[..len], src, dst);
    len
}

/// Why an NDP message is not one to act on (RFC 4861 §7.1: such messages are silently
/// discarded; the router counts them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NdpError {
    #[error("not a neighbour solicitation or advertisement")]
    NotNdp,
    #[error("hop limit not 255: the message crossed a router")]
    HopLimit,
    #[error("code not 0, or shorter than 24 bytes")]
    Malformed,
    #[error("bad ICMPv6 checksum")]
    Checksum,
    #[error("an option of length 0, or running past the message")]
    BadOption,
    #[error("a multicast target address")]
    MulticastTarget,
}

/// A neighbour solicitation or advertisement, as read or to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ndp {
    /// "Who has `target`?"; the asker's MAC when it said it (not from ::).
    Solicit { target: Ipv6Addr, source_mac: Option<MacAddr> },
    /// "`target` is at `target_mac`."
    Advert { target: Ipv6Addr, target_mac: Option<MacAddr>, router: bool, solicited: bool, override_: bool },
}

const FLAG_ROUTER: u8 = 0x80;
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;
const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;

impl Ndp {
    /// Reads the NDP message carried by the checked IPv6 packet `ip`, with the validity
    /// checks of RFC 4861 §7.1.1 and §7.1.2.
    pub fn parse<T: AsRef<[u8]>>(ip: &ipv6::Packet<T>) -> Result<Ndp, NdpError> {
        if ip.next_header() != NEXT_ICMPV6 {
            return Err(NdpError::NotNdp);
        }
        let msg = ip.payload();
        let p = Packet::new_checked(msg).map_err(|_| NdpError::Malformed)?;
        let t = p.msg_type();
        if t != types::NEIGHBOR_SOLICITATION && t != types::NEIGHBOR_ADVERTISEMENT {
            return Err(NdpError::NotNdp);
        }
        if ip.hop_limit() != 255 {
            return Err(NdpError::HopLimit);
        }
        if p.code() != 0 || msg.len() < NDP_LEN {
            return Err(NdpError::Malformed);
        }
        if !p.verify_checksum(ip.src(), ip.dst()) {
            return Err(NdpError::Checksum);
        }
        let mut o = [0u8; 16];
        o.copy_from_slice(&msg[field::TARGET]);
        let target = Ipv6Addr::from(o);
        if target.is_multicast() {
            return Err(NdpError::MulticastTarget);
        }
        let want = if t == types::NEIGHBOR_SOLICITATION { OPT_SOURCE_LLADDR } else { OPT_TARGET_LLADDR };
        let mut mac = None;
        let mut opts = &msg[NDP_LEN..];
        while !opts.is_empty() {
            let len = usize::from(*opts.get(1).ok_or(NdpError::BadOption)?) * 8;
            if len == 0 || len > opts.len() {
                return Err(NdpError::BadOption);
            }
            if opts[0] == want && len == LLADDR_OPTION_LEN {
                mac = Some(MacAddr([opts[2], opts[3], opts[4], opts[5], opts[6], opts[7]]));
            }
            opts = &opts[len..];
        }
        let flags = msg[field::REST.start];
        Ok(match t {
            types::NEIGHBOR_SOLICITATION => Ndp::Solicit { target, source_mac: mac },
            _ => Ndp::Advert {
                target,
                target_mac: mac,
                router: flags & FLAG_ROUTER != 0,
                solicited: flags & FLAG_SOLICITED != 0,
                override_: flags & FLAG_OVERRIDE != 0,
            },
        })
    }

    /// Bytes of the message with its link-layer address option.
    pub fn buffer_len(&self) -> usize {
        NDP_LEN + LLADDR_OPTION_LEN
    }

    /// Writes the message (with the link-layer address option where there is a MAC) into
    /// `out`, checksummed as sent from `src` to `dst`; returns its length.
    pub fn emit(&self, out: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr) -> usize {
        let (t, flags, target, opt) = match *self {
            Ndp::Solicit { target, source_mac } => {
                (types::NEIGHBOR_SOLICITATION, 0, target, source_mac.map(|m| (OPT_SOURCE_LLADDR, m)))
            }
            Ndp::Advert { target, target_mac, router, solicited, override_ } => {
                let f = (if router { FLAG_ROUTER } else { 0 })
                    | (if solicited { FLAG_SOLICITED } else { 0 })
                    | (if override_ { FLAG_OVERRIDE } else { 0 });
                (types::NEIGHBOR_ADVERTISEMENT, f, target, target_mac.map(|m| (OPT_TARGET_LLADDR, m)))
            }
        };
        out[field::TYPE] = t;
        out[field::CODE] = 0;
        out[field::REST].copy_from_slice(&[flags, 0, 0, 0]);
        out[field::TARGET].copy_from_slice(&target.octets());
        let mut len = NDP_LEN;
        if let Some((kind, mac)) = opt {
            out[len] = kind;
            out[len + 1] = 1;
            out[len + 2..len + 8].copy_from_slice(&mac.0);
            len += LLADDR_OPTION_LEN;
        }
        fill_checksum(&mut out[..len], src, dst);
        len
    }
}

/// The solicited-node multicast address of `a` (RFC 4291 §2.7.1): where solicitations for
/// it are sent.
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(o[13]), u16::from_be_bytes([o[14], o[15]]))
}

/// The Ethernet address of the IPv6 multicast group `a` (RFC 2464 §7): 33:33 and its last
/// 32 bits.
pub fn multicast_mac(a: Ipv6Addr) -> MacAddr {
    let o = a.octets();
    MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The hop limit NDP messages are sent with and must arrive with.
pub const NDP_HOP_LIMIT: u8 = 255;

/// The MAC Calico gives the host end of every pod's veth.
pub const CALICO_HOST_MAC: MacAddr = MacAddr([0xee; 6]);

/// Calico's IPv6 pod gateway: the link-local address (EUI-64) of [`CALICO_HOST_MAC`], which
/// a host end with that MAC owns, and which the router answers for where it does not.
pub const CALICO_GATEWAY: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::pcap_frames;

    fn ping6() -> Vec<Vec<u8>> {
        pcap_frames(include_bytes!("../../fixtures/linux-ping6.pcap"))
    }

    fn gateway6() -> Vec<Vec<u8>> {
        pcap_frames(include_bytes!("../../fixtures/linux-gateway6.pcap"))
    }

    fn a(s: &str) -> Ipv6Addr {
        s.parse().expect("address")
    }

    #[test]
    fn linuxs_solicitation_and_advertisement_parse() {
        let f = ping6();
        let ns = ipv6::Packet::new_checked(&f[0][14..]).expect("ipv6");
        assert_eq!(ns.dst(), solicited_node(a("fd00:10:244:1::3")));
        assert_eq!(&f[0][..6], &multicast_mac(ns.dst()).0, "sent to the group's MAC");
        let want = Ndp::Solicit { target: a("fd00:10:244:1::3"), source_mac: Some(MacAddr([2, 0, 0, 0, 0, 1])) };
        assert_eq!(Ndp::parse(&ns), Ok(want));
        let na = ipv6::Packet::new_checked(&f[1][14..]).expect("ipv6");
        let want = Ndp::Advert {
            target: a("fd00:10:244:1::3"),
            target_mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
            router: false,
            solicited: true,
            override_: true,
        };
        assert_eq!(Ndp::parse(&na), Ok(want));
        // The echo is ICMPv6 but not NDP; its checksum verifies.
        let echo = ipv6::Packet::new_checked(&f[2][14..]).expect("ipv6");
        assert_eq!(Ndp::parse(&echo), Err(NdpError::NotNdp));
        let p = Packet::new_checked(echo.payload()).expect("icmpv6");
        assert_eq!(p.msg_type(), types::ECHO_REQUEST);
        assert!(p.verify_checksum(echo.src(), echo.dst()));
    }

    #[test]
    fn linuxs_answer_to_a_unicast_solicitation_has_no_link_layer_option() {
        // Linux 6.18 (fd00::2 at 02:00:00:00:00:02) answering a solicitation sent to its
        // unicast address: solicited, no override, and no target link-layer option.
        let hex = "6000000000183afffd000000000000000000000000000002fd0000000000000000000000000000018800\
                   40a540000000fd000000000000000000000000000002";
        let b: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        let na = ipv6::Packet::new_checked(&b[..]).expect("ipv6");
        let want =
            Ndp::Advert { target: a("fd00::2"), target_mac: None, router: false, solicited: true, override_: false };
        assert_eq!(Ndp::parse(&na), Ok(want));
    }

    #[test]
    fn the_gateways_advertisement_is_what_linux_sends_byte_for_byte() {
        // What a Linux host end owning fe80::ecee:eeff:feee:eeee answered the pod.
        let f = gateway6();
        let ns = ipv6::Packet::new_checked(&f[0][14..]).expect("ipv6");
        let Ok(Ndp::Solicit { target, source_mac }) = Ndp::parse(&ns) else { panic!("a solicitation") };
        assert_eq!(target, a("fe80::ecee:eeff:feee:eeee"));
        let na = ipv6::Packet::new_checked(&f[1][14..]).expect("ipv6");
        let ours = Ndp::Advert {
            target,
            target_mac: Some(MacAddr([0xee; 6])),
            router: true,
            solicited: true,
            override_: true,
        };
        let mut out = [0u8; 32];
        let n = ours.emit(&mut out, na.src(), na.dst());
        assert_eq!(&out[..n], na.payload());
        assert_eq!(source_mac, Some(MacAddr([2, 0, 0, 0, 0, 1])));
    }

    #[test]
    fn invalid_ndp_is_refused_with_a_reason() {
        let f = ping6();
        let good = f[0][14..].to_vec();
        let case = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut p = good.clone();
            edit(&mut p);
            let ip = ipv6::Packet::new_checked(&p[..]).expect("ipv6");
            Ndp::parse(&ip)
        };
        assert_eq!(case(&|p| p[7] = 64), Err(NdpError::HopLimit));
        assert_eq!(case(&|p| p[41] = 1), Err(NdpError::Malformed));
        assert_eq!(case(&|p| p[50] ^= 1), Err(NdpError::Checksum));
        // An option of length 0, with the checksum made right again.
        let zero_len = |p: &mut Vec<u8>| {
            p[40 + 24 + 1] = 0;
            let (s, d) = (ipv6::Packet::new_unchecked(&p[..]).src(), ipv6::Packet::new_unchecked(&p[..]).dst());
            fill_checksum(&mut p[40..], s, d);
        };
        assert_eq!(case(&zero_len), Err(NdpError::BadOption));
        for cut in 0..good.len() {
            let mut p = good.clone();
            p.truncate(cut);
            if p.len() >= 40 {
                let l = (p.len() - 40) as u16;
                p[4..6].copy_from_slice(&l.to_be_bytes());
            }
            if let Ok(ip) = ipv6::Packet::new_checked(&p[..]) {
                let _ = Ndp::parse(&ip);
            }
        }
    }

    #[test]
    fn errors_carry_their_type_code_and_mtu_and_checksum_over_the_pseudo_header() {
        let f = ping6();
        let quote = &f[2][14..];
        let mut out = vec![0u8; HEADER_LEN + quote.len()];
        out[HEADER_LEN..].copy_from_slice(quote);
        let (src, dst) = (a("fd00:10:244:1::1"), a("fd00:10:244:1::2"));
        let n = emit_error(ErrorKind::PacketTooBig { mtu: 1450 }, &mut out, quote.len(), src, dst);
        let p = Packet::new_checked(&out[..n]).expect("icmpv6");
        assert_eq!((p.msg_type(), p.code()), (2, 0));
        assert_eq!(&out[4..8], &1450u32.to_be_bytes());
        assert!(p.verify_checksum(src, dst));
        assert!(!p.verify_checksum(src, a("fd00:10:244:1::3")), "the pseudo-header counts");
        // etherparse agrees.
        let mut ip = vec![0u8; 40];
        ipv6::Repr { src, dst, next_header: NEXT_ICMPV6, traffic_class: 0, hop_limit: 64, payload_len: n }
            .emit(&mut ip);
        ip.extend_from_slice(&out[..n]);
        let e = etherparse::SlicedPacket::from_ip(&ip).expect("etherparse");
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = e.transport else { panic!("ICMPv6") };
        assert!(matches!(icmp.icmp_type(), etherparse::Icmpv6Type::PacketTooBig { mtu: 1450 }));
        for t in [1, 2, 3, 4] {
            assert!(is_error_type(t));
        }
        assert!(!is_error_type(types::ECHO_REQUEST) && !is_error_type(types::NEIGHBOR_SOLICITATION));
    }

    #[test]
    fn solicited_node_groups_and_their_macs() {
        let g = solicited_node(a("fe80::ecee:eeff:feee:eeee"));
        assert_eq!(g, a("ff02::1:ffee:eeee"));
        assert_eq!(multicast_mac(g), MacAddr([0x33, 0x33, 0xff, 0xee, 0xee, 0xee]));
    }

    #[test]
    fn calicos_gateway_is_the_link_local_address_of_its_host_mac() {
        // EUI-64 (RFC 4291 appendix A): the MAC split by ff:fe, the universal/local bit flipped.
        let m = CALICO_HOST_MAC.0;
        let iid = [m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
        let mut a = [0u8; 16];
        a[0] = 0xfe;
        a[1] = 0x80;
        a[8..].copy_from_slice(&iid);
        assert_eq!(CALICO_GATEWAY, Ipv6Addr::from(a));
    }
}
