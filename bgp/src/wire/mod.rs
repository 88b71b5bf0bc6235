//! The BGP-4 wire format (RFC 4271 §4), symmetric: every message decodes and encodes back to
//! the same bytes. A decode failure is the NOTIFICATION to send (RFC 4271 §6); attribute
//! errors in UPDATE follow RFC 7606 (treat-as-withdraw, discard, or reset).
//!
//! ```text
//! +--------------------------------+--------+------+
//! | marker: 16 × 0xff              | length | type |
//! +--------------------------------+--------+------+
//! ```

mod open;
pub mod update;

pub use open::{AddPathMode, Capability, Open, OptParam};
pub use update::{Afi, AsSegment, Attr, AttrError, AttrValue, NextHopAddr, Origin, Update};

use std::fmt;

pub const MARKER: [u8; 16] = [0xff; 16];
pub const HEADER_LEN: usize = 19;
/// RFC 4271 §4.1; extended messages (RFC 8654) are not negotiated.
pub const MAX_LEN: usize = 4096;

pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What the session negotiated that changes how messages are read and written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// RFC 6793: AS numbers in AS_PATH and AGGREGATOR are 4 octets.
    pub four_octet_as: bool,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx { four_octet_as: true }
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// RFC 2918 ROUTE-REFRESH (with the RFC 7313 subtype byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    pub subtype: u8,
    pub safi: u8,
}

/// A NOTIFICATION: error code, subcode and data (RFC 4271 §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// Error codes and subcodes (RFC 4271 §4.5, §6; RFC 4486 for Cease).
pub mod err {
    pub const HEADER: u8 = 1;
    pub const CONN_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;

    pub const OPEN: u8 = 2;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_ID: u8 = 3;
    pub const UNSUPPORTED_OPT_PARAM: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    /// RFC 5492: a capability we need is missing (data: the capabilities).
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;

    pub const UPDATE: u8 = 3;
    pub const MALFORMED_ATTR_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const MISSING_WELL_KNOWN: u8 = 3;
    pub const ATTR_FLAGS: u8 = 4;
    pub const ATTR_LENGTH: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTR: u8 = 9;
    pub const INVALID_NETWORK: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;

    pub const CEASE: u8 = 6;
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMIN_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMIN_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const COLLISION_RESOLUTION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;

    /// RFC 9687.
    pub const SEND_HOLD_TIMER_EXPIRED: u8 = 8;
}

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification { code, subcode, data: Vec::new() }
    }

    pub fn with_data(code: u8, subcode: u8, data: &[u8]) -> Self {
        Notification { code, subcode, data: data.to_vec() }
    }

    /// RFC 8203: the operator's shutdown message carried by a Cease/Administrative Shutdown.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != err::CEASE || !matches!(self.subcode, err::ADMIN_SHUTDOWN | err::ADMIN_RESET) {
            return None;
        }
        let (&n, rest) = self.data.split_first()?;
        rest.get(..usize::from(n)).map(|m| String::from_utf8_lossy(m).into_owned())
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use err::*;
        let what = match (self.code, self.subcode) {
            (HEADER, CONN_NOT_SYNCHRONIZED) => "message header: connection not synchronized",
            (HEADER, BAD_MESSAGE_LENGTH) => "message header: bad message length",
            (HEADER, BAD_MESSAGE_TYPE) => "message header: bad message type",
            (HEADER, _) => "message header error",
            (OPEN, UNSUPPORTED_VERSION) => "OPEN: unsupported version number",
            (OPEN, BAD_PEER_AS) => "OPEN: bad peer AS",
            (OPEN, BAD_BGP_ID) => "OPEN: bad BGP identifier",
            (OPEN, UNSUPPORTED_OPT_PARAM) => "OPEN: unsupported optional parameter",
            (OPEN, UNACCEPTABLE_HOLD_TIME) => "OPEN: unacceptable hold time",
            (OPEN, UNSUPPORTED_CAPABILITY) => "OPEN: unsupported capability (no address family in common)",
            (OPEN, _) => "OPEN message error",
            (UPDATE, MALFORMED_ATTR_LIST) => "UPDATE: malformed attribute list",
            (UPDATE, UNRECOGNIZED_WELL_KNOWN) => "UPDATE: unrecognized well-known attribute",
            (UPDATE, MISSING_WELL_KNOWN) => "UPDATE: missing well-known attribute",
            (UPDATE, ATTR_FLAGS) => "UPDATE: attribute flags error",
            (UPDATE, ATTR_LENGTH) => "UPDATE: attribute length error",
            (UPDATE, INVALID_NETWORK) => "UPDATE: invalid network field",
            (UPDATE, _) => "UPDATE message error",
            (HOLD_TIMER_EXPIRED, _) => "hold timer expired",
            (FSM, _) => "finite state machine error",
            (CEASE, MAX_PREFIXES) => "cease: maximum number of prefixes reached",
            (CEASE, ADMIN_SHUTDOWN) => "cease: administrative shutdown",
            (CEASE, PEER_DECONFIGURED) => "cease: peer de-configured",
            (CEASE, ADMIN_RESET) => "cease: administrative reset",
            (CEASE, CONNECTION_REJECTED) => "cease: connection rejected",
            (CEASE, COLLISION_RESOLUTION) => "cease: connection collision resolution",
            (CEASE, OUT_OF_RESOURCES) => "cease: out of resources",
            (CEASE, _) => "cease",
            (SEND_HOLD_TIMER_EXPIRED, _) => "send hold timer expired",
            _ => "error",
        };
        write!(f, "{what} ({}/{})", self.code, self.subcode)?;
        if let Some(m) = self.shutdown_message() {
            write!(f, ": {m:?}")?;
        }
        Ok(())
    }
}

/// Reads a big-endian u16 at `at` (caller checked the length).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Splits one message off the front of `buf`. `Ok(None)`: not all of it has arrived yet.
/// The returned length is what to consume.
pub fn decode(buf: &[u8], ctx: &Ctx) -> Result<Option<(Message, usize)>, Notification> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    if buf[..16] != MARKER {
        return Err(Notification::new(err::HEADER, err::CONN_NOT_SYNCHRONIZED));
    }
    let len = usize::from(be16(buf, 16));
    let typ = buf[18];
    let bad_len = || Notification::with_data(err::HEADER, err::BAD_MESSAGE_LENGTH, &(len as u16).to_be_bytes());
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(bad_len());
    }
    let min = match typ {
        msg_type::OPEN => 29,
        msg_type::UPDATE => 23,
        msg_type::NOTIFICATION => 21,
        msg_type::KEEPALIVE => 19,
        msg_type::ROUTE_REFRESH => 23,
        _ => return Err(Notification::with_data(err::HEADER, err::BAD_MESSAGE_TYPE, &[typ])),
    };
    if len < min || (typ == msg_type::KEEPALIVE && len != 19) || (typ == msg_type::ROUTE_REFRESH && len != 23) {
        return Err(bad_len());
    }
    if buf.len() < len {
        return Ok(None);
    }
    let body = &buf[HEADER_LEN..len];
    let msg = match typ {
        msg_type::OPEN => Message::Open(Open::decode(body)?),
        msg_type::UPDATE => Message::Update(Update::decode(body, ctx)?),
        msg_type::NOTIFICATION => {
            Message::Notification(Notification { code: body[0], subcode: body[1], data: body[2..].to_vec() })
        }
        msg_type::KEEPALIVE => Message::Keepalive,
        _ => Message::RouteRefresh(RouteRefresh { afi: be16(body, 0), subtype: body[2], safi: body[3] }),
    };
    Ok(Some((msg, len)))
}

impl Message {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, ctx: &Ctx, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0, 0]);
        let typ = match self {
            Message::Open(o) => {
                o.encode(out);
                msg_type::OPEN
            }
            Message::Update(u) => {
                u.encode(ctx, out);
                msg_type::UPDATE
            }
            Message::Notification(n) => {
                out.extend_from_slice(&[n.code, n.subcode]);
                out.extend_from_slice(&n.data);
                msg_type::NOTIFICATION
            }
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(r) => {
                out.extend_from_slice(&r.afi.to_be_bytes());
                out.extend_from_slice(&[r.subtype, r.safi]);
                msg_type::ROUTE_REFRESH
            }
        };
        let len = (out.len() - start) as u16;
        out[start + 16..start + 18].copy_from_slice(&len.to_be_bytes());
        out[start + 18] = typ;
    }

    pub fn to_bytes(&self, ctx: &Ctx) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(ctx, &mut v);
        v
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Messages captured with tcpdump from a BIRD 2.0.12 and a GoBGP 3 session (eBGP, AS 64512
    //! and 64513, IPv4 and IPv6 unicast), split at BGP message boundaries.
    pub const BIRD_OPEN: &[u8] = include_bytes!("../fixtures/bird-open-1.bin");
    pub const BIRD_KEEPALIVE: &[u8] = include_bytes!("../fixtures/bird-keepalive-1.bin");
    /// 10.244.9.0/26, ORIGIN IGP, AS_PATH 64512, NEXT_HOP 10.0.0.1.
    pub const BIRD_UPDATE_V4: &[u8] = include_bytes!("../fixtures/bird-update-1.bin");
    /// IPv4 End-of-RIB.
    pub const BIRD_EOR_V4: &[u8] = include_bytes!("../fixtures/bird-update-2.bin");
    /// fd00:9::/64 in MP_REACH with a 32-byte next hop (global + link-local).
    pub const BIRD_UPDATE_V6: &[u8] = include_bytes!("../fixtures/bird-update-3.bin");
    /// IPv6 End-of-RIB (empty MP_UNREACH).
    pub const BIRD_EOR_V6: &[u8] = include_bytes!("../fixtures/bird-update-4.bin");
    /// Cease / administrative shutdown.
    pub const BIRD_NOTIFICATION: &[u8] = include_bytes!("../fixtures/bird-notification-1.bin");
    pub const GOBGP_OPEN: &[u8] = include_bytes!("../fixtures/gobgp-open-1.bin");
    /// 10.244.8.0/26, ORIGIN INCOMPLETE, AS_PATH 64513, NEXT_HOP 10.0.0.2.
    pub const GOBGP_UPDATE_V4: &[u8] = include_bytes!("../fixtures/gobgp-update-1.bin");
    /// fd00:8::/64 in MP_REACH with a 16-byte next hop (::ffff:10.0.0.2).
    pub const GOBGP_UPDATE_V6: &[u8] = include_bytes!("../fixtures/gobgp-update-2.bin");
    /// Withdrawal of 10.244.8.0/26.
    pub const GOBGP_WITHDRAW: &[u8] = include_bytes!("../fixtures/gobgp-update-3.bin");
    /// Cease / administrative shutdown (`gobgp neighbor ... disable`).
    pub const GOBGP_NOTIFICATION: &[u8] = include_bytes!("../fixtures/gobgp-notification-1.bin");

    pub const ALL: &[&[u8]] = &[
        BIRD_OPEN,
        BIRD_KEEPALIVE,
        BIRD_UPDATE_V4,
        BIRD_EOR_V4,
        BIRD_UPDATE_V6,
        BIRD_EOR_V6,
        BIRD_NOTIFICATION,
        GOBGP_OPEN,
        GOBGP_UPDATE_V4,
        GOBGP_UPDATE_V6,
        GOBGP_WITHDRAW,
        GOBGP_NOTIFICATION,
    ];
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    fn one(b: &[u8]) -> Message {
        let (m, n) = decode(b, &Ctx::default()).expect("decodes").expect("complete");
        assert_eq!(n, b.len());
        m
    }

    #[test]
    fn every_captured_message_round_trips_byte_for_byte() {
        for b in ALL {
            let m = one(b);
            assert_eq!(&m.to_bytes(&Ctx::default())[..], *b, "{m:?}");
        }
    }

    #[test]
    fn keepalive_and_notification_decode() {
        assert_eq!(one(BIRD_KEEPALIVE), Message::Keepalive);
        let Message::Notification(n) = one(BIRD_NOTIFICATION) else { panic!("not a notification") };
        assert_eq!((n.code, n.subcode), (err::CEASE, err::ADMIN_SHUTDOWN));
        assert_eq!(one(GOBGP_NOTIFICATION), Message::Notification(Notification::new(err::CEASE, err::ADMIN_SHUTDOWN)));
        assert!(n.to_string().contains("administrative shutdown"));
    }

    #[test]
    fn partial_message_waits_for_more() {
        let b = BIRD_OPEN;
        assert_eq!(decode(&b[..10], &Ctx::default()), Ok(None));
        assert_eq!(decode(&b[..b.len() - 1], &Ctx::default()), Ok(None));
    }

    #[test]
    fn bad_marker_is_connection_not_synchronized() {
        let mut b = BIRD_KEEPALIVE.to_vec();
        b[3] = 0;
        assert_eq!(decode(&b, &Ctx::default()), Err(Notification::new(err::HEADER, err::CONN_NOT_SYNCHRONIZED)));
    }

    #[test]
    fn bad_lengths_and_types_are_header_errors() {
        let mut b = BIRD_KEEPALIVE.to_vec();
        b[17] = 20; // a KEEPALIVE must be 19 bytes
        b.push(0);
        assert_eq!(
            decode(&b, &Ctx::default()).map_err(|n| (n.code, n.subcode)),
            Err((err::HEADER, err::BAD_MESSAGE_LENGTH))
        );
        let mut b = BIRD_KEEPALIVE.to_vec();
        b[16..18].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(decode(&b, &Ctx::default()).map_err(|n| n.subcode), Err(err::BAD_MESSAGE_LENGTH));
        let mut b = BIRD_KEEPALIVE.to_vec();
        b[18] = 9;
        assert_eq!(decode(&b, &Ctx::default()), Err(Notification::with_data(err::HEADER, err::BAD_MESSAGE_TYPE, &[9])));
    }

    #[test]
    fn route_refresh_round_trips() {
        let m = Message::RouteRefresh(RouteRefresh { afi: 1, subtype: 0, safi: 1 });
        let b = m.to_bytes(&Ctx::default());
        assert_eq!(b.len(), 23);
        assert_eq!(one(&b), m);
    }

    #[test]
    fn shutdown_communication_is_shown() {
        let mut data = vec![5];
        data.extend_from_slice(b"maint");
        let n = Notification::with_data(err::CEASE, err::ADMIN_SHUTDOWN, &data);
        assert_eq!(n.shutdown_message().as_deref(), Some("maint"));
        assert!(n.to_string().contains("\"maint\""));
    }
}
