//! UPDATE (RFC 4271 §4.3) and the path attributes in use: ORIGIN, AS_PATH (4-octet per
//! RFC 6793), NEXT_HOP, MED, LOCAL_PREF, ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES,
//! ORIGINATOR_ID, CLUSTER_LIST (RFC 4456), MP_REACH/MP_UNREACH for IPv4 and IPv6 unicast
//! (RFC 4760; IPv6 next hop of 16 or 32 bytes) and AS4_PATH. Errors follow RFC 7606: most
//! malformed attributes make the UPDATE's routes withdrawn ("treat-as-withdraw"), a few are
//! discarded, and only what leaves the message unparseable resets the session.
//!
//! ```text
//! withdrawn_len(2) withdrawn... attrs_len(2) attrs... nlri...
//! attr: flags(1) code(1) len(1, or 2 with the extended-length flag) value
//! ```

use super::{be16, be32, err, Ctx, Notification};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

pub mod code {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH: u8 = 14;
    pub const MP_UNREACH: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const LARGE_COMMUNITIES: u8 = 32;
}

pub mod flag {
    pub const OPTIONAL: u8 = 0x80;
    pub const TRANSITIVE: u8 = 0x40;
    pub const PARTIAL: u8 = 0x20;
    pub const EXTENDED_LENGTH: u8 = 0x10;
}

/// Address families we carry (SAFI 1, unicast).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Afi {
    Ipv4,
    Ipv6,
}

impl Afi {
    pub fn code(self) -> u16 {
        match self {
            Afi::Ipv4 => 1,
            Afi::Ipv6 => 2,
        }
    }

    /// As `router status` and the log write it.
    pub fn name(self) -> &'static str {
        match self {
            Afi::Ipv4 => "ipv4",
            Afi::Ipv6 => "ipv6",
        }
    }

    pub fn from_code(c: u16) -> Option<Afi> {
        match c {
            1 => Some(Afi::Ipv4),
            2 => Some(Afi::Ipv6),
            _ => None,
        }
    }
}

pub const SAFI_UNICAST: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

/// One AS_PATH segment: 1 AS_SET, 2 AS_SEQUENCE, 3/4 confederation sequence/set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: u8,
    pub asns: Vec<u32>,
}

impl AsSegment {
    pub const SET: u8 = 1;
    pub const SEQUENCE: u8 = 2;

    pub fn sequence(asns: Vec<u32>) -> Self {
        AsSegment { kind: Self::SEQUENCE, asns }
    }
}

/// The next hop of MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHopAddr {
    V4(Ipv4Addr),
    /// 16 bytes (global) or 32 bytes (global + link-local, RFC 2545).
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AttrValue {
    Origin(Origin),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    AtomicAggregate,
    Aggregator {
        asn: u32,
        addr: Ipv4Addr,
    },
    Communities(Vec<u32>),
    OriginatorId(Ipv4Addr),
    ClusterList(Vec<Ipv4Addr>),
    MpReach {
        afi: Afi,
        next_hop: NextHopAddr,
        nlri: Vec<IpNet>,
    },
    MpUnreach {
        afi: Afi,
        withdrawn: Vec<IpNet>,
    },
    As4Path(Vec<AsSegment>),
    /// An attribute we do not interpret (or an MP family we do not carry), kept as is.
    Unknown {
        code: u8,
        data: Vec<u8>,
    },
}

impl AttrValue {
    pub fn code(&self) -> u8 {
        match self {
            AttrValue::Origin(_) => code::ORIGIN,
            AttrValue::AsPath(_) => code::AS_PATH,
            AttrValue::NextHop(_) => code::NEXT_HOP,
            AttrValue::Med(_) => code::MED,
            AttrValue::LocalPref(_) => code::LOCAL_PREF,
            AttrValue::AtomicAggregate => code::ATOMIC_AGGREGATE,
            AttrValue::Aggregator { .. } => code::AGGREGATOR,
            AttrValue::Communities(_) => code::COMMUNITIES,
            AttrValue::OriginatorId(_) => code::ORIGINATOR_ID,
            AttrValue::ClusterList(_) => code::CLUSTER_LIST,
            AttrValue::MpReach { .. } => code::MP_REACH,
            AttrValue::MpUnreach { .. } => code::MP_UNREACH,
            AttrValue::As4Path(_) => code::AS4_PATH,
            AttrValue::Unknown { code, .. } => *code,
        }
    }
}

/// The standard flags of an attribute we originate.
fn default_flags(code: u8) -> u8 {
    use code::*;
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => flag::TRANSITIVE,
        AGGREGATOR | COMMUNITIES | AS4_PATH => flag::OPTIONAL | flag::TRANSITIVE,
        _ => flag::OPTIONAL,
    }
}

/// A path attribute with its flags as received (so that it encodes back identically).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attr {
    pub flags: u8,
    pub value: AttrValue,
}

impl Attr {
    pub fn new(value: AttrValue) -> Attr {
        Attr { flags: default_flags(value.code()), value }
    }
}

/// RFC 7606 outcome for one bad attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrError {
    /// Drop the attribute, keep the routes.
    Discard,
    /// Treat the UPDATE's routes as withdrawn.
    Withdraw,
    /// Reset the session with this NOTIFICATION.
    Reset(Notification),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attrs: Vec<Attr>,
    pub nlri: Vec<Ipv4Net>,
    /// RFC 7606: an attribute error means every route announced here counts as withdrawn.
    pub treat_as_withdraw: bool,
    /// RFC 7606: codes of attributes dropped while decoding.
    pub discarded: Vec<u8>,
}

fn reset(subcode: u8) -> Notification {
    Notification::new(err::UPDATE, subcode)
}

/// Parses a run of (length, prefix) NLRI entries of one family.
fn parse_prefixes(mut b: &[u8], v6: bool) -> Result<Vec<IpNet>, Notification> {
    let max = if v6 { 128 } else { 32 };
    let mut out = Vec::new();
    while let Some((&len, rest)) = b.split_first() {
        if len > max {
            return Err(reset(err::INVALID_NETWORK));
        }
        let n = usize::from(len).div_ceil(8);
        let Some(bytes) = rest.get(..n) else {
            return Err(reset(err::INVALID_NETWORK));
        };
        let net = if v6 {
            let mut o = [0u8; 16];
            o[..n].copy_from_slice(bytes);
            IpNet::V6(Ipv6Net::new(Ipv6Addr::from(o), len).map_err(|_| reset(err::INVALID_NETWORK))?.trunc())
        } else {
            let mut o = [0u8; 4];
            o[..n].copy_from_slice(bytes);
            IpNet::V4(Ipv4Net::new(Ipv4Addr::from(o), len).map_err(|_| reset(err::INVALID_NETWORK))?.trunc())
        };
        out.push(net);
        b = &rest[n..];
    }
    Ok(out)
}

fn v4_only(nets: Vec<IpNet>) -> Vec<Ipv4Net> {
    nets.into_iter()
        .filter_map(|n| match n {
            IpNet::V4(v) => Some(v),
            IpNet::V6(_) => None,
        })
        .collect()
}

fn put_prefix(out: &mut Vec<u8>, net: &IpNet) {
    let len = net.prefix_len();
    out.push(len);
    let n = usize::from(len).div_ceil(8);
    match net {
        IpNet::V4(v) => out.extend_from_slice(&v.network().octets()[..n]),
        IpNet::V6(v) => out.extend_from_slice(&v.network().octets()[..n]),
    }
}

fn parse_as_path(d: &[u8], four: bool) -> Option<Vec<AsSegment>> {
    let w = if four { 4 } else { 2 };
    let mut segs = Vec::new();
    let mut d = d;
    while !d.is_empty() {
        if d.len() < 2 {
            return None;
        }
        let (kind, n) = (d[0], usize::from(d[1]));
        if !(1..=4).contains(&kind) || n == 0 {
            return None;
        }
        let body = d.get(2..2 + n * w)?;
        let asns = body.chunks_exact(w).map(|c| if four { be32(c, 0) } else { u32::from(be16(c, 0)) }).collect();
        segs.push(AsSegment { kind, asns });
        d = &d[2 + n * w..];
    }
    Some(segs)
}

/// RFC 6793 §4.2.3: from a 2-octet speaker, AS_PATH (with AS_TRANS for 4-octet ASNs) and
/// AS4_PATH become one path: the leading ASNs of AS_PATH that AS4_PATH does not cover, then
/// AS4_PATH. An AS4_PATH longer than AS_PATH is ignored, and a 4-octet speaker must not send
/// one at all: both are discarded. Afterwards the UPDATE holds only AS_PATH, whole.
fn merge_as4_path(u: &mut Update, ctx: &Ctx) {
    let Some(i) = u.attrs.iter().position(|a| matches!(a.value, AttrValue::As4Path(_))) else { return };
    let AttrValue::As4Path(as4) = u.attrs.remove(i).value else { return };
    let path = u.attrs.iter_mut().find_map(|a| match &mut a.value {
        AttrValue::AsPath(p) => Some(p),
        _ => None,
    });
    let count =
        |p: &[AsSegment]| -> usize { p.iter().map(|s| if s.kind == AsSegment::SET { 1 } else { s.asns.len() }).sum() };
    match path {
        Some(path) if !ctx.four_octet_as && count(path) >= count(&as4) => {
            let mut keep = count(path) - count(&as4);
            let mut merged = Vec::new();
            for s in path.iter() {
                if keep == 0 {
                    break;
                }
                let take = if s.kind == AsSegment::SET { s.asns.len() } else { keep.min(s.asns.len()) };
                merged.push(AsSegment { kind: s.kind, asns: s.asns[..take].to_vec() });
                keep -= if s.kind == AsSegment::SET { 1 } else { take };
            }
            merged.extend(as4);
            *path = merged;
        }
        _ => u.discarded.push(code::AS4_PATH),
    }
}

fn put_as_path(out: &mut Vec<u8>, segs: &[AsSegment], four: bool) {
    for s in segs {
        out.push(s.kind);
        out.push(s.asns.len() as u8);
        for a in &s.asns {
            if four {
                out.extend_from_slice(&a.to_be_bytes());
            } else {
                out.extend_from_slice(&u16::try_from(*a).unwrap_or(23456).to_be_bytes());
            }
        }
    }
}

fn addr4(d: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(d[0], d[1], d[2], d[3])
}

fn addr6(d: &[u8]) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&d[..16]);
    Ipv6Addr::from(o)
}

/// Decodes one attribute's value; an MP family we do not carry is kept raw.
fn decode_value(code: u8, d: &[u8], ctx: &Ctx) -> Result<AttrValue, AttrError> {
    use AttrError::*;
    Ok(match code {
        code::ORIGIN => match d {
            [0] => AttrValue::Origin(Origin::Igp),
            [1] => AttrValue::Origin(Origin::Egp),
            [2] => AttrValue::Origin(Origin::Incomplete),
            _ => return Err(Withdraw),
        },
        code::AS_PATH => AttrValue::AsPath(parse_as_path(d, ctx.four_octet_as).ok_or(Withdraw)?),
        code::AS4_PATH => AttrValue::As4Path(parse_as_path(d, true).ok_or(Discard)?),
        code::NEXT_HOP => {
            if d.len() != 4 {
                return Err(Withdraw);
            }
            let a = addr4(d);
            // RFC 7606 §7.3: a semantically invalid next hop is treat-as-withdraw.
            if a.is_unspecified() || a.is_multicast() || a.is_broadcast() || a.is_loopback() {
                return Err(Withdraw);
            }
            AttrValue::NextHop(a)
        }
        code::MED if d.len() == 4 => AttrValue::Med(be32(d, 0)),
        code::MED => return Err(Withdraw),
        code::LOCAL_PREF if d.len() == 4 => AttrValue::LocalPref(be32(d, 0)),
        code::LOCAL_PREF => return Err(Withdraw),
        code::ATOMIC_AGGREGATE if d.is_empty() => AttrValue::AtomicAggregate,
        code::ATOMIC_AGGREGATE => return Err(Discard),
        code::AGGREGATOR => match (d.len(), ctx.four_octet_as) {
            (8, true) => AttrValue::Aggregator { asn: be32(d, 0), addr: addr4(&d[4..]) },
            (6, false) => AttrValue::Aggregator { asn: u32::from(be16(d, 0)), addr: addr4(&d[2..]) },
            _ => return Err(Discard),
        },
        code::COMMUNITIES if !d.is_empty() && d.len().is_multiple_of(4) => {
            AttrValue::Communities(d.chunks_exact(4).map(|c| be32(c, 0)).collect())
        }
        code::COMMUNITIES => return Err(Withdraw),
        code::ORIGINATOR_ID if d.len() == 4 => AttrValue::OriginatorId(addr4(d)),
        code::ORIGINATOR_ID => return Err(Withdraw),
        code::CLUSTER_LIST if !d.is_empty() && d.len().is_multiple_of(4) => {
            AttrValue::ClusterList(d.chunks_exact(4).map(addr4).collect())
        }
        code::CLUSTER_LIST => return Err(Withdraw),
        code::MP_REACH => {
            // RFC 7606 §7.11: a malformed MP_REACH leaves the family unknown: reset.
            let bad = || Reset(reset(err::OPTIONAL_ATTR));
            if d.len() < 5 {
                return Err(bad());
            }
            let (afi, safi, nhl) = (be16(d, 0), d[2], usize::from(d[3]));
            let Some(afi) = Afi::from_code(afi).filter(|_| safi == SAFI_UNICAST) else {
                return Ok(AttrValue::Unknown { code, data: d.to_vec() });
            };
            let nh = d.get(4..4 + nhl).ok_or_else(bad)?;
            let next_hop = match (afi, nhl) {
                (Afi::Ipv4, 4) => NextHopAddr::V4(addr4(nh)),
                (Afi::Ipv6, 16) => NextHopAddr::V6 { global: addr6(nh), link_local: None },
                (Afi::Ipv6, 32) => NextHopAddr::V6 { global: addr6(nh), link_local: Some(addr6(&nh[16..])) },
                _ => return Err(bad()),
            };
            // One reserved byte (the old SNPA count) follows the next hop.
            let nlri = d.get(5 + nhl..).ok_or_else(bad)?;
            let nlri = parse_prefixes(nlri, afi == Afi::Ipv6).map_err(|_| bad())?;
            AttrValue::MpReach { afi, next_hop, nlri }
        }
        code::MP_UNREACH => {
            let bad = || Reset(reset(err::OPTIONAL_ATTR));
            if d.len() < 3 {
                return Err(bad());
            }
            let Some(afi) = Afi::from_code(be16(d, 0)).filter(|_| d[2] == SAFI_UNICAST) else {
                return Ok(AttrValue::Unknown { code, data: d.to_vec() });
            };
            let withdrawn = parse_prefixes(&d[3..], afi == Afi::Ipv6).map_err(|_| bad())?;
            AttrValue::MpUnreach { afi, withdrawn }
        }
        // Carried unread, but their length rules are the receiver's to check: RFC 7606 §7.14
        // (extended communities, 8 bytes each) and RFC 8092 §5 (large ones, 12 bytes each).
        code::EXTENDED_COMMUNITIES if d.is_empty() || !d.len().is_multiple_of(8) => return Err(Withdraw),
        code::LARGE_COMMUNITIES if d.is_empty() || !d.len().is_multiple_of(12) => return Err(Withdraw),
        _ => AttrValue::Unknown { code, data: d.to_vec() },
    })
}

fn encode_value(v: &AttrValue, ctx: &Ctx, out: &mut Vec<u8>) {
    match v {
        AttrValue::Origin(o) => out.push(match o {
            Origin::Igp => 0,
            Origin::Egp => 1,
            Origin::Incomplete => 2,
        }),
        AttrValue::AsPath(s) => put_as_path(out, s, ctx.four_octet_as),
        AttrValue::As4Path(s) => put_as_path(out, s, true),
        AttrValue::NextHop(a) | AttrValue::OriginatorId(a) => out.extend_from_slice(&a.octets()),
        AttrValue::Med(v) | AttrValue::LocalPref(v) => out.extend_from_slice(&v.to_be_bytes()),
        AttrValue::AtomicAggregate => {}
        AttrValue::Aggregator { asn, addr } => {
            if ctx.four_octet_as {
                out.extend_from_slice(&asn.to_be_bytes());
            } else {
                out.extend_from_slice(&u16::try_from(*asn).unwrap_or(23456).to_be_bytes());
            }
            out.extend_from_slice(&addr.octets());
        }
        AttrValue::Communities(c) => c.iter().for_each(|c| out.extend_from_slice(&c.to_be_bytes())),
        AttrValue::ClusterList(c) => c.iter().for_each(|a| out.extend_from_slice(&a.octets())),
        AttrValue::MpReach { afi, next_hop, nlri } => {
            out.extend_from_slice(&afi.code().to_be_bytes());
            out.push(SAFI_UNICAST);
            match next_hop {
                NextHopAddr::V4(a) => {
                    out.push(4);
                    out.extend_from_slice(&a.octets());
                }
                NextHopAddr::V6 { global, link_local } => {
                    out.push(if link_local.is_some() { 32 } else { 16 });
                    out.extend_from_slice(&global.octets());
                    if let Some(l) = link_local {
                        out.extend_from_slice(&l.octets());
                    }
                }
            }
            out.push(0);
            nlri.iter().for_each(|n| put_prefix(out, n));
        }
        AttrValue::MpUnreach { afi, withdrawn } => {
            out.extend_from_slice(&afi.code().to_be_bytes());
            out.push(SAFI_UNICAST);
            withdrawn.iter().for_each(|n| put_prefix(out, n));
        }
        AttrValue::Unknown { data, .. } => out.extend_from_slice(data),
    }
}

/// Whether the optional bit of a known attribute is as RFC 4271 says; a mismatch is an
/// attribute flags error, handled like a malformed value (RFC 7606 §3.c).
fn flags_ok(code: u8, flags: u8) -> bool {
    use code::*;
    let optional = flags & flag::OPTIONAL != 0;
    match code {
        ORIGIN | AS_PATH | NEXT_HOP | LOCAL_PREF | ATOMIC_AGGREGATE => !optional,
        MED | AGGREGATOR | COMMUNITIES | ORIGINATOR_ID | CLUSTER_LIST | MP_REACH | MP_UNREACH | AS4_PATH => optional,
        _ => true,
    }
}

/// How an attribute's flags error is handled (RFC 7606 §7).
fn flags_error(code: u8) -> AttrError {
    match code {
        code::ATOMIC_AGGREGATE | code::AGGREGATOR | code::AS4_PATH => AttrError::Discard,
        code::MP_REACH | code::MP_UNREACH => AttrError::Reset(reset(err::ATTR_FLAGS)),
        _ => AttrError::Withdraw,
    }
}

fn known(code: u8) -> bool {
    matches!(code, 1..=10 | 14 | 15 | 17)
}

impl Update {
    pub fn decode(b: &[u8], ctx: &Ctx) -> Result<Update, Notification> {
        let wl = usize::from(be16(b, 0));
        let Some(w) = b.get(2..2 + wl) else {
            return Err(reset(err::MALFORMED_ATTR_LIST));
        };
        let withdrawn = v4_only(parse_prefixes(w, false)?);
        let rest = &b[2 + wl..];
        if rest.len() < 2 {
            return Err(reset(err::MALFORMED_ATTR_LIST));
        }
        let al = usize::from(be16(rest, 0));
        let Some(mut a) = rest.get(2..2 + al) else {
            return Err(reset(err::MALFORMED_ATTR_LIST));
        };
        let nlri = v4_only(parse_prefixes(&rest[2 + al..], false)?);
        let mut u = Update { withdrawn, nlri, ..Default::default() };
        let mut seen = [false; 256];
        while !a.is_empty() {
            // RFC 7606 §4: an attribute header or length overrunning the attribute block
            // leaves the rest unreadable, but the NLRI is still known: treat-as-withdraw.
            if a.len() < 3 {
                u.treat_as_withdraw = true;
                break;
            }
            let (flags, code) = (a[0], a[1]);
            let (hl, len) = if flags & flag::EXTENDED_LENGTH != 0 {
                if a.len() < 4 {
                    u.treat_as_withdraw = true;
                    break;
                }
                (4, usize::from(be16(a, 2)))
            } else {
                (3, usize::from(a[2]))
            };
            let (Some(d), Some(whole)) = (a.get(hl..hl + len), a.get(..hl + len)) else {
                u.treat_as_withdraw = true;
                break;
            };
            a = &a[hl + len..];
            if seen[usize::from(code)] {
                // RFC 7606 §3.g: repeated MP attributes reset; other repeats are discarded.
                if code == code::MP_REACH || code == code::MP_UNREACH {
                    return Err(reset(err::MALFORMED_ATTR_LIST));
                }
                u.discarded.push(code);
                continue;
            }
            seen[usize::from(code)] = true;
            if !known(code) && flags & flag::OPTIONAL == 0 {
                return Err(Notification::with_data(err::UPDATE, err::UNRECOGNIZED_WELL_KNOWN, whole));
            }
            let value = if flags_ok(code, flags) { decode_value(code, d, ctx) } else { Err(flags_error(code)) };
            match value {
                Ok(value) => u.attrs.push(Attr { flags, value }),
                Err(AttrError::Discard) => u.discarded.push(code),
                Err(AttrError::Withdraw) => u.treat_as_withdraw = true,
                Err(AttrError::Reset(n)) => return Err(n),
            }
        }
        merge_as4_path(&mut u, ctx);
        // RFC 7606 §3.d: missing well-known mandatory attributes → treat-as-withdraw.
        let mp_reach = u.attrs.iter().any(|a| matches!(a.value, AttrValue::MpReach { .. }));
        if !u.nlri.is_empty() || mp_reach {
            let has = |c: u8| u.attrs.iter().any(|a| a.value.code() == c);
            if !has(code::ORIGIN) || !has(code::AS_PATH) || (!u.nlri.is_empty() && !has(code::NEXT_HOP)) {
                u.treat_as_withdraw = true;
            }
        }
        Ok(u)
    }

    pub fn encode(&self, ctx: &Ctx, out: &mut Vec<u8>) {
        let mut w = Vec::new();
        self.withdrawn.iter().for_each(|n| put_prefix(&mut w, &IpNet::V4(*n)));
        out.extend_from_slice(&(w.len() as u16).to_be_bytes());
        out.extend_from_slice(&w);
        let mut attrs = Vec::new();
        for a in &self.attrs {
            let mut v = Vec::new();
            encode_value(&a.value, ctx, &mut v);
            let mut flags = a.flags;
            if v.len() > 255 {
                flags |= flag::EXTENDED_LENGTH;
            }
            attrs.push(flags);
            attrs.push(a.value.code());
            if flags & flag::EXTENDED_LENGTH != 0 {
                attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
            } else {
                attrs.push(v.len() as u8);
            }
            attrs.extend_from_slice(&v);
            // RFC 6793 §4.2.2: towards a 2-octet speaker, 4-octet ASNs travel as AS_TRANS in
            // AS_PATH and in full in an AS4_PATH after it.
            if let AttrValue::AsPath(path) = &a.value {
                if !ctx.four_octet_as && path.iter().any(|s| s.asns.iter().any(|&n| n > 0xffff)) {
                    let mut v = Vec::new();
                    put_as_path(&mut v, path, true);
                    let flags = flag::OPTIONAL | flag::TRANSITIVE;
                    if v.len() > 255 {
                        attrs.extend_from_slice(&[flags | flag::EXTENDED_LENGTH, code::AS4_PATH]);
                        attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
                    } else {
                        attrs.extend_from_slice(&[flags, code::AS4_PATH, v.len() as u8]);
                    }
                    attrs.extend_from_slice(&v);
                }
            }
        }
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&attrs);
        self.nlri.iter().for_each(|n| put_prefix(out, &IpNet::V4(*n)));
    }

    /// RFC 4724 §2: the End-of-RIB marker of a family.
    pub fn end_of_rib(afi: Afi) -> Update {
        match afi {
            Afi::Ipv4 => Update::default(),
            Afi::Ipv6 => {
                Update { attrs: vec![Attr::new(AttrValue::MpUnreach { afi, withdrawn: vec![] })], ..Default::default() }
            }
        }
    }

    pub fn is_end_of_rib(&self) -> Option<Afi> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attrs.as_slice() {
            [] => Some(Afi::Ipv4),
            [Attr { value: AttrValue::MpUnreach { afi, withdrawn }, .. }] if withdrawn.is_empty() => Some(*afi),
            _ => None,
        }
    }

    pub fn get(&self, code: u8) -> Option<&AttrValue> {
        self.attrs.iter().map(|a| &a.value).find(|v| v.code() == code)
    }

    /// Every prefix this UPDATE announces, with the next hop of its family.
    pub fn announced(&self) -> Vec<(IpNet, Option<std::net::IpAddr>)> {
        let mut v = Vec::new();
        let nh4 = match self.get(code::NEXT_HOP) {
            Some(AttrValue::NextHop(a)) => Some(std::net::IpAddr::V4(*a)),
            _ => None,
        };
        v.extend(self.nlri.iter().map(|n| (IpNet::V4(*n), nh4)));
        if let Some(AttrValue::MpReach { next_hop, nlri, .. }) = self.get(code::MP_REACH) {
            let nh = match next_hop {
                NextHopAddr::V4(a) => std::net::IpAddr::V4(*a),
                NextHopAddr::V6 { global, .. } => std::net::IpAddr::V6(*global),
            };
            v.extend(nlri.iter().map(|n| (*n, Some(nh))));
        }
        v
    }

    /// Every prefix this UPDATE withdraws (and, under treat-as-withdraw, the announced ones).
    pub fn withdrawn_all(&self) -> Vec<IpNet> {
        let mut v: Vec<IpNet> = self.withdrawn.iter().map(|n| IpNet::V4(*n)).collect();
        if let Some(AttrValue::MpUnreach { withdrawn, .. }) = self.get(code::MP_UNREACH) {
            v.extend(withdrawn.iter().copied());
        }
        if self.treat_as_withdraw {
            v.extend(self.announced().into_iter().map(|(n, _)| n));
        }
        v
    }
}

#[cfg(test)]
mod tests;
