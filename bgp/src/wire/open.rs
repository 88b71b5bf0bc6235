//! OPEN (RFC 4271 §4.2) with capabilities (RFC 5492) and extended optional parameters
//! (RFC 9072). Capabilities are accepted packed in one parameter or split over several; the
//! grouping is kept so that a message encodes back to the bytes it came from. Unknown
//! capabilities are kept and ignored.
//!
//! ```text
//! version(1) my_as(2) hold_time(2) bgp_id(4) opt_len(1) params...
//! ```

use super::{be16, be32, err, Notification};
use std::net::Ipv4Addr;

pub mod cap {
    pub const MULTIPROTOCOL: u8 = 1;
    pub const ROUTE_REFRESH: u8 = 2;
    pub const GRACEFUL_RESTART: u8 = 64;
    pub const FOUR_OCTET_AS: u8 = 65;
    pub const ADD_PATH: u8 = 69;
    pub const ENHANCED_ROUTE_REFRESH: u8 = 70;
}

const PARAM_CAPABILITIES: u8 = 2;
const PARAM_EXTENDED: u8 = 255;

/// ADD-PATH send/receive per AFI/SAFI (RFC 7911).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddPathMode {
    Receive,
    Send,
    Both,
    Other(u8),
}

impl AddPathMode {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => AddPathMode::Receive,
            2 => AddPathMode::Send,
            3 => AddPathMode::Both,
            o => AddPathMode::Other(o),
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            AddPathMode::Receive => 1,
            AddPathMode::Send => 2,
            AddPathMode::Both => 3,
            AddPathMode::Other(o) => o,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol {
        afi: u16,
        safi: u8,
    },
    RouteRefresh,
    EnhancedRouteRefresh,
    /// RFC 4724: restart flags (upper 4 bits), restart time (seconds), and per AFI/SAFI the
    /// forwarding-state flags.
    GracefulRestart {
        flags: u8,
        time: u16,
        families: Vec<(u16, u8, u8)>,
    },
    FourOctetAs(u32),
    AddPath(Vec<(u16, u8, AddPathMode)>),
    /// Anything else, kept as is.
    Unknown {
        code: u8,
        data: Vec<u8>,
    },
}

impl Capability {
    fn decode(code: u8, d: &[u8]) -> Capability {
        let unknown = || Capability::Unknown { code, data: d.to_vec() };
        match code {
            cap::MULTIPROTOCOL if d.len() == 4 => Capability::Multiprotocol { afi: be16(d, 0), safi: d[3] },
            cap::ROUTE_REFRESH if d.is_empty() => Capability::RouteRefresh,
            cap::ENHANCED_ROUTE_REFRESH if d.is_empty() => Capability::EnhancedRouteRefresh,
            cap::FOUR_OCTET_AS if d.len() == 4 => Capability::FourOctetAs(be32(d, 0)),
            cap::GRACEFUL_RESTART if d.len() >= 2 && (d.len() - 2).is_multiple_of(4) => {
                let v = be16(d, 0);
                let families = d[2..].chunks_exact(4).map(|c| (be16(c, 0), c[2], c[3])).collect();
                Capability::GracefulRestart { flags: (v >> 12) as u8, time: v & 0x0fff, families }
            }
            cap::ADD_PATH if !d.is_empty() && d.len().is_multiple_of(4) => {
                Capability::AddPath(d.chunks_exact(4).map(|c| (be16(c, 0), c[2], AddPathMode::from_u8(c[3]))).collect())
            }
            // A known code with a malformed value is kept raw and ignored, like an unknown one.
            _ => unknown(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let (code, data): (u8, Vec<u8>) = match self {
            Capability::Multiprotocol { afi, safi } => {
                let a = afi.to_be_bytes();
                (cap::MULTIPROTOCOL, vec![a[0], a[1], 0, *safi])
            }
            Capability::RouteRefresh => (cap::ROUTE_REFRESH, vec![]),
            Capability::EnhancedRouteRefresh => (cap::ENHANCED_ROUTE_REFRESH, vec![]),
            Capability::FourOctetAs(asn) => (cap::FOUR_OCTET_AS, asn.to_be_bytes().to_vec()),
            Capability::GracefulRestart { flags, time, families } => {
                let mut v = ((u16::from(*flags) << 12) | (time & 0x0fff)).to_be_bytes().to_vec();
                for (afi, safi, f) in families {
                    v.extend_from_slice(&afi.to_be_bytes());
                    v.extend_from_slice(&[*safi, *f]);
                }
                (cap::GRACEFUL_RESTART, v)
            }
            Capability::AddPath(fams) => {
                let mut v = Vec::new();
                for (afi, safi, m) in fams {
                    v.extend_from_slice(&afi.to_be_bytes());
                    v.extend_from_slice(&[*safi, m.to_u8()]);
                }
                (cap::ADD_PATH, v)
            }
            Capability::Unknown { code, data } => (*code, data.clone()),
        };
        out.push(code);
        out.push(data.len() as u8);
        out.extend_from_slice(&data);
    }

    /// The capability as it appears in an OPEN (code, length, value), for the data of an
    /// Unsupported Capability notification.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// One optional parameter of OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptParam {
    Capabilities(Vec<Capability>),
    /// A parameter type we do not know (RFC 5492 leaves only capabilities in use).
    Unknown {
        kind: u8,
        data: Vec<u8>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub version: u8,
    /// AS_TRANS (23456) when the real AS does not fit; see `asn()`.
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub params: Vec<OptParam>,
    /// The parameters came in RFC 9072's extended form (and go out the same way).
    pub extended_params: bool,
}

fn open_err(subcode: u8) -> Notification {
    Notification::new(err::OPEN, subcode)
}

impl Open {
    /// An OPEN announcing `asn` (as AS_TRANS when it needs 4 octets) and `caps` in one parameter.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, mut caps: Vec<Capability>) -> Open {
        if !caps.iter().any(|c| matches!(c, Capability::FourOctetAs(_))) {
            caps.push(Capability::FourOctetAs(asn));
        }
        let my_as = u16::try_from(asn).unwrap_or(23456);
        Open {
            version: 4,
            my_as,
            hold_time,
            bgp_id,
            params: vec![OptParam::Capabilities(caps)],
            extended_params: false,
        }
    }

    pub fn capabilities(&self) -> impl Iterator<Item = &Capability> {
        self.params.iter().flat_map(|p| match p {
            OptParam::Capabilities(c) => c.as_slice(),
            OptParam::Unknown { .. } => &[],
        })
    }

    /// The speaker's AS: the 4-octet capability's when present (RFC 6793).
    pub fn asn(&self) -> u32 {
        self.capabilities()
            .find_map(|c| match c {
                Capability::FourOctetAs(a) => Some(*a),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }

    pub fn has(&self, pred: impl Fn(&Capability) -> bool) -> bool {
        self.capabilities().any(pred)
    }

    pub fn decode(b: &[u8]) -> Result<Open, Notification> {
        if b.len() < 10 {
            return Err(Notification::new(err::HEADER, err::BAD_MESSAGE_LENGTH));
        }
        let version = b[0];
        if version != 4 {
            // RFC 4271 §6.2: the data is the largest version we support.
            return Err(Notification::with_data(err::OPEN, err::UNSUPPORTED_VERSION, &[0, 4]));
        }
        let mut open = Open {
            version,
            my_as: be16(b, 1),
            hold_time: be16(b, 3),
            bgp_id: Ipv4Addr::new(b[5], b[6], b[7], b[8]),
            params: Vec::new(),
            extended_params: false,
        };
        let opt_len = usize::from(b[9]);
        let mut rest = &b[10..];
        // RFC 9072: length 255 followed by type 255 announces 2-byte lengths.
        let extended = opt_len == 255 && rest.first() == Some(&PARAM_EXTENDED);
        let (len, hdr) = if extended {
            if rest.len() < 3 {
                return Err(open_err(0));
            }
            let l = usize::from(be16(rest, 1));
            rest = &rest[3..];
            (l, 3)
        } else {
            (opt_len, 2)
        };
        if rest.len() != len {
            return Err(open_err(0));
        }
        open.extended_params = extended;
        while !rest.is_empty() {
            if rest.len() < hdr {
                return Err(open_err(0));
            }
            let kind = rest[0];
            let plen = if extended { usize::from(be16(rest, 1)) } else { usize::from(rest[1]) };
            let Some(data) = rest.get(hdr..hdr + plen) else {
                return Err(open_err(0));
            };
            rest = &rest[hdr + plen..];
            if kind != PARAM_CAPABILITIES {
                return Err(Notification::with_data(err::OPEN, err::UNSUPPORTED_OPT_PARAM, &[kind]));
            }
            let mut caps = Vec::new();
            let mut d = data;
            while !d.is_empty() {
                if d.len() < 2 || d.len() < 2 + usize::from(d[1]) {
                    return Err(open_err(0));
                }
                let (code, clen) = (d[0], usize::from(d[1]));
                caps.push(Capability::decode(code, &d[2..2 + clen]));
                d = &d[2 + clen..];
            }
            open.params.push(OptParam::Capabilities(caps));
        }
        Ok(open)
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let mut params = Vec::new();
        let extended = self.extended_params;
        for p in &self.params {
            let (kind, data) = match p {
                OptParam::Capabilities(caps) => {
                    let mut d = Vec::new();
                    for c in caps {
                        c.encode(&mut d);
                    }
                    (PARAM_CAPABILITIES, d)
                }
                OptParam::Unknown { kind, data } => (*kind, data.clone()),
            };
            params.push(kind);
            if extended {
                params.extend_from_slice(&(data.len() as u16).to_be_bytes());
            } else {
                params.push(data.len() as u8);
            }
            params.extend_from_slice(&data);
        }
        if extended {
            out.extend_from_slice(&[255, PARAM_EXTENDED]);
            out.extend_from_slice(&(params.len() as u16).to_be_bytes());
        } else {
            out.push(params.len() as u8);
        }
        out.extend_from_slice(&params);
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{decode, Ctx, Message, HEADER_LEN};
    use super::*;

    fn open(b: &[u8]) -> Open {
        match decode(b, &Ctx::default()) {
            Ok(Some((Message::Open(o), _))) => o,
            other => panic!("not an OPEN: {other:?}"),
        }
    }

    #[test]
    fn bird_open_capabilities() {
        let o = open(BIRD_OPEN);
        assert_eq!((o.version, o.asn(), o.hold_time), (4, 64512, 240));
        assert_eq!(o.bgp_id, Ipv4Addr::new(10, 0, 0, 1));
        let caps: Vec<_> = o.capabilities().cloned().collect();
        assert!(caps.contains(&Capability::Multiprotocol { afi: 1, safi: 1 }));
        assert!(caps.contains(&Capability::Multiprotocol { afi: 2, safi: 1 }));
        assert!(caps.contains(&Capability::RouteRefresh));
        assert!(caps.contains(&Capability::GracefulRestart { flags: 0, time: 120, families: vec![] }));
        assert!(caps.contains(&Capability::FourOctetAs(64512)));
        // Long-lived graceful restart is unknown to us: kept, ignored.
        assert!(caps.contains(&Capability::Unknown { code: 71, data: vec![] }));
    }

    #[test]
    fn gobgp_open_capabilities() {
        let o = open(GOBGP_OPEN);
        assert_eq!(o.asn(), 64513);
        assert!(o.has(|c| *c == Capability::Multiprotocol { afi: 2, safi: 1 }));
        // FQDN (73) and extended next hop (5) are kept raw.
        assert!(o.has(|c| matches!(c, Capability::Unknown { code: 73, .. })));
        assert!(o.has(|c| matches!(c, Capability::Unknown { code: 5, .. })));
    }

    #[test]
    fn split_capabilities_are_accepted_and_kept_split() {
        let o = Open {
            version: 4,
            my_as: 64512,
            hold_time: 90,
            bgp_id: Ipv4Addr::new(1, 2, 3, 4),
            params: vec![
                OptParam::Capabilities(vec![Capability::Multiprotocol { afi: 1, safi: 1 }]),
                OptParam::Capabilities(vec![Capability::FourOctetAs(4_200_000_000)]),
            ],
            extended_params: false,
        };
        let b = Message::Open(o.clone()).to_bytes(&Ctx::default());
        assert_eq!(open(&b), o);
        assert_eq!(o.asn(), 4_200_000_000);
    }

    #[test]
    fn rfc9072_extended_parameters_decode_and_round_trip() {
        let o = Open {
            extended_params: true,
            ..Open::new(64512, 90, Ipv4Addr::new(1, 2, 3, 4), vec![Capability::RouteRefresh])
        };
        let b = Message::Open(o.clone()).to_bytes(&Ctx::default());
        assert_eq!(&b[HEADER_LEN + 9..HEADER_LEN + 11], &[255, 255]);
        assert_eq!(open(&b), o);
    }

    #[test]
    fn add_path_offer_is_understood() {
        let o = Open::new(1, 90, Ipv4Addr::new(1, 1, 1, 1), vec![Capability::AddPath(vec![(1, 1, AddPathMode::Both)])]);
        let b = Message::Open(o.clone()).to_bytes(&Ctx::default());
        assert!(open(&b).has(|c| matches!(c, Capability::AddPath(f) if f[0].2 == AddPathMode::Both)));
    }

    #[test]
    fn large_as_goes_out_as_as_trans() {
        let o = Open::new(4_200_000_000, 90, Ipv4Addr::new(1, 1, 1, 1), vec![]);
        assert_eq!(o.my_as, 23456);
        assert_eq!(o.asn(), 4_200_000_000);
    }

    #[test]
    fn version_3_is_refused_with_our_version() {
        let mut b = BIRD_OPEN.to_vec();
        b[HEADER_LEN] = 3;
        assert_eq!(
            decode(&b, &Ctx::default()),
            Err(Notification::with_data(err::OPEN, err::UNSUPPORTED_VERSION, &[0, 4]))
        );
    }

    #[test]
    fn parameter_overrun_and_unknown_parameter_are_open_errors() {
        let mut b = BIRD_OPEN.to_vec();
        b[HEADER_LEN + 9] += 1; // opt_len beyond the message
        assert_eq!(decode(&b, &Ctx::default()).map_err(|n| n.code), Err(err::OPEN));
        let mut b = BIRD_OPEN.to_vec();
        b[HEADER_LEN + 10] = 1; // parameter type 1 (authentication, deprecated)
        assert_eq!(
            decode(&b, &Ctx::default()).map_err(|n| (n.code, n.subcode)),
            Err((err::OPEN, err::UNSUPPORTED_OPT_PARAM))
        );
    }
}
