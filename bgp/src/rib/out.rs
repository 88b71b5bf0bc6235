//! From export decisions to UPDATE messages: routes that share attributes travel together,
//! packed up to the 4096-byte limit, and a route whose attributes could never fit one message
//! is not exported at all (a receiver must reset a session that sends it one).

use super::{Afi, Attr, AttrValue, PathAttrs, PeerId, Update};
use crate::wire::update::{flag, NextHopAddr};
use crate::wire::{Ctx, HEADER_LEN, MAX_LEN};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// One export decision, in the order the RIB made them.
#[derive(Debug, Clone)]
pub(super) enum Pending {
    /// Announce with these attributes, or withdraw (`None`).
    Route(IpNet, Option<Arc<PathAttrs>>),
    EndOfRib(Afi),
}

/// The last export decision for a prefix towards one peer.
type Decision = (IpNet, Option<Arc<PathAttrs>>);

/// Bytes of an UPDATE besides its three variable parts: header and the two length fields.
const FIXED: usize = HEADER_LEN + 4;

/// Bytes of a prefix in NLRI or withdrawn routes.
fn prefix_len(p: &IpNet) -> usize {
    1 + usize::from(p.prefix_len()).div_ceil(8)
}

/// Bytes an IPv6 UPDATE spends on MP_UNREACH_NLRI besides its prefixes: flags, code, a
/// two-byte length, AFI and SAFI.
const MP_UNREACH_FIXED: usize = 7;

/// The path attributes announcing a route with `a` (LOCAL_PREF only inside the AS). An
/// IPv6 route's next hop goes in MP_REACH_NLRI (RFC 4760), whose NLRI [`pack`] fills in.
pub(super) fn announce_attrs(a: &PathAttrs, ibgp: bool) -> Vec<Attr> {
    let next_hop = match a.next_hop {
        IpAddr::V4(nh) => AttrValue::NextHop(nh),
        IpAddr::V6(global) => AttrValue::MpReach {
            afi: Afi::Ipv6,
            next_hop: NextHopAddr::V6 { global, link_local: None },
            nlri: Vec::new(),
        },
    };
    let mut attrs = vec![
        Attr::new(AttrValue::Origin(a.origin)),
        Attr::new(AttrValue::AsPath(a.as_path.clone())),
        Attr::new(next_hop),
    ];
    if let Some(m) = a.med {
        attrs.push(Attr::new(AttrValue::Med(m)));
    }
    if ibgp {
        attrs.push(Attr::new(AttrValue::LocalPref(a.local_pref.unwrap_or(100))));
    }
    if !a.communities.is_empty() {
        attrs.push(Attr::new(AttrValue::Communities(a.communities.clone())));
    }
    if let Some(o) = a.originator_id {
        attrs.push(Attr::new(AttrValue::OriginatorId(o)));
    }
    if !a.cluster_list.is_empty() {
        attrs.push(Attr::new(AttrValue::ClusterList(a.cluster_list.clone())));
    }
    for t in &a.transitive {
        // RFC 4271 §5: an optional transitive attribute we pass on unread is marked partial.
        let partial = if t.flags & flag::OPTIONAL != 0 { flag::PARTIAL } else { 0 };
        attrs.push(Attr { flags: t.flags | partial, value: t.value.clone() });
    }
    attrs
}

/// The attribute block's size on the wire, the larger of the two AS encodings (a 2-octet
/// peer gets AS_PATH and AS4_PATH).
fn attrs_wire_len(attrs: &[Attr]) -> usize {
    [Ctx { four_octet_as: true }, Ctx { four_octet_as: false }]
        .iter()
        .map(|ctx| {
            let mut b = Vec::new();
            Update { attrs: attrs.to_vec(), ..Default::default() }.encode(ctx, &mut b);
            b.len() - 4
        })
        .max()
        .unwrap_or(0)
}

/// A cheap upper bound of the attribute block (each segment in both AS_PATH and AS4_PATH,
/// 4 bytes an AS), so the exact encoding is needed only for paths near the limit.
fn attrs_len_bound(a: &PathAttrs) -> usize {
    let asns: usize = a.as_path.iter().map(|s| 4 + 8 * s.asns.len()).sum();
    let transitive: usize = a
        .transitive
        .iter()
        .map(|t| {
            4 + match &t.value {
                AttrValue::Unknown { data, .. } => data.len(),
                _ => 8,
            }
        })
        .sum();
    64 + asns + 4 * (a.communities.len() + a.cluster_list.len()) + transitive
}

/// Whether a route with these attributes fits one UPDATE (with a /128, the longest prefix,
/// and the byte MP_REACH_NLRI's length may grow by).
pub(super) fn fits(a: &PathAttrs, ibgp: bool) -> bool {
    let room = MAX_LEN - FIXED - 18;
    attrs_len_bound(a) <= room || attrs_wire_len(&announce_attrs(a, ibgp)) <= room
}

/// An UPDATE announcing `prefixes` (all of one family) with `attrs`: IPv4 in the NLRI
/// field, IPv6 in the attributes' MP_REACH_NLRI.
fn announcement(attrs: &[Attr], prefixes: Vec<IpNet>) -> Update {
    let mut attrs = attrs.to_vec();
    if let Some(AttrValue::MpReach { nlri, .. }) =
        attrs.iter_mut().map(|a| &mut a.value).find(|v| matches!(v, AttrValue::MpReach { .. }))
    {
        *nlri = prefixes;
        return Update { attrs, ..Default::default() };
    }
    let nlri = prefixes
        .into_iter()
        .filter_map(|p| match p {
            IpNet::V4(p) => Some(p),
            IpNet::V6(_) => None,
        })
        .collect();
    Update { attrs, nlri, ..Default::default() }
}

/// Packs one call's export decisions into UPDATEs: per peer, the last decision for each prefix,
/// withdrawals together, announcements grouped by their (shared) attributes, each message at
/// most 4096 bytes, End-of-RIB last.
pub(super) fn pack(pending: Vec<(PeerId, Pending)>, ibgp: impl Fn(PeerId) -> bool) -> Vec<(PeerId, Update)> {
    let mut peers: Vec<PeerId> = Vec::new();
    let mut routes: HashMap<PeerId, Vec<Decision>> = HashMap::new();
    let mut index: HashMap<(PeerId, IpNet), usize> = HashMap::new();
    let mut eor: HashMap<PeerId, Vec<Afi>> = HashMap::new();
    for (peer, p) in pending {
        if !peers.contains(&peer) {
            peers.push(peer);
        }
        match p {
            Pending::Route(prefix, attrs) => {
                let list = routes.entry(peer).or_default();
                match index.get(&(peer, prefix)) {
                    Some(&i) => list[i].1 = attrs,
                    None => {
                        index.insert((peer, prefix), list.len());
                        list.push((prefix, attrs));
                    }
                }
            }
            Pending::EndOfRib(afi) => eor.entry(peer).or_default().push(afi),
        }
    }
    let mut out = Vec::new();
    for peer in peers {
        let list = routes.remove(&peer).unwrap_or_default();
        // Withdrawals, as many per message as fit: IPv4 in the withdrawn routes, IPv6 in
        // MP_UNREACH_NLRI.
        let mut w = Update::default();
        let mut used = FIXED;
        for p in list.iter().filter(|(_, a)| a.is_none()).filter_map(|(p, _)| match p {
            IpNet::V4(p) => Some(*p),
            IpNet::V6(_) => None,
        }) {
            let n = prefix_len(&IpNet::V4(p));
            if used + n > MAX_LEN {
                out.push((peer, std::mem::take(&mut w)));
                used = FIXED;
            }
            used += n;
            w.withdrawn.push(p);
        }
        if !w.withdrawn.is_empty() {
            out.push((peer, w));
        }
        let unreach = |withdrawn: Vec<IpNet>| Update {
            attrs: vec![Attr::new(AttrValue::MpUnreach { afi: Afi::Ipv6, withdrawn })],
            ..Default::default()
        };
        let mut w6: Vec<IpNet> = Vec::new();
        let mut used = FIXED + MP_UNREACH_FIXED;
        for p in list.iter().filter(|(p, a)| a.is_none() && matches!(p, IpNet::V6(_))).map(|(p, _)| *p) {
            if used + prefix_len(&p) > MAX_LEN {
                out.push((peer, unreach(std::mem::take(&mut w6))));
                used = FIXED + MP_UNREACH_FIXED;
            }
            used += prefix_len(&p);
            w6.push(p);
        }
        if !w6.is_empty() {
            out.push((peer, unreach(w6)));
        }
        // Announcements grouped by attributes (the RIB interns them: equal means same Arc).
        let mut groups: Vec<(Arc<PathAttrs>, Vec<IpNet>)> = Vec::new();
        let mut group_of: HashMap<*const PathAttrs, usize> = HashMap::new();
        for (p, a) in list.into_iter().filter_map(|(p, a)| Some((p, a?))) {
            let g = *group_of.entry(Arc::as_ptr(&a)).or_insert_with(|| {
                groups.push((a.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(p);
        }
        for (a, prefixes) in groups {
            let attrs = announce_attrs(&a, ibgp(peer));
            // One more byte where MP_REACH_NLRI's length outgrows one byte.
            let room = MAX_LEN.saturating_sub(FIXED + attrs_wire_len(&attrs) + 1);
            let mut batch: Vec<IpNet> = Vec::new();
            let mut used = 0;
            for p in prefixes {
                if prefix_len(&p) > room {
                    continue; // cannot happen: `fits` held it back from adj-RIB-out
                }
                if used + prefix_len(&p) > room {
                    out.push((peer, announcement(&attrs, std::mem::take(&mut batch))));
                    used = 0;
                }
                used += prefix_len(&p);
                batch.push(p);
            }
            if !batch.is_empty() {
                out.push((peer, announcement(&attrs, batch)));
            }
        }
        for afi in eor.remove(&peer).unwrap_or_default() {
            out.push((peer, Update::end_of_rib(afi)));
        }
    }
    out
}
