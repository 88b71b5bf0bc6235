//! Turning the data plane's trace events into hop records a learner can read: what came in
//! where, which route matched and why, what was added or removed, where it went out, or why
//! it was dropped. The CLI side sends the probe and prints the journey.

use forwarding::trace::{Event, Outcome, Summary};
use forwarding::{IfaceRole, Interfaces};
use nodeapi::admin::{Hop, RouteEntry, RouteMatch};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A whole trace, as `router trace --json` prints it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    pub id: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: crate::probe::ProbeProto,
    /// In time order, both ways.
    pub hops: Vec<Hop>,
    /// What reached the source in answer, as the probe saw it there.
    #[serde(default)]
    pub answer: Option<crate::probe::Answer>,
    /// Nodes that did not answer (stopped, crashed), each with why: their hops are missing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub untraced: Vec<String>,
}

/// A fresh trace id from the kernel's random source, never 0. The id is what a node's
/// workers match probes on, so one that a pod could guess would let it plant hops in
/// someone else's trace.
pub fn new_id() -> std::io::Result<u32> {
    use std::io::Read;
    let mut f = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        let id = u32::from_ne_bytes(b);
        if id != 0 {
            return Ok(id);
        }
    }
}

/// The route an address takes: the longest prefix of the table that covers it.
pub fn lookup(entries: &[RouteEntry], dst: std::net::IpAddr) -> Option<&RouteEntry> {
    entries.iter().filter(|e| e.prefix.contains(&dst)).max_by_key(|e| e.prefix.prefix_len())
}

/// The name of an ICMP error (ICMPv6's where the packet is IPv6).
fn icmp_error_name(v6: bool, t: Option<u8>) -> Option<&'static str> {
    use encap::{icmp::types as icmp4, icmpv6::types as icmp6};
    match (v6, t?) {
        (false, icmp4::DEST_UNREACHABLE) | (true, icmp6::DEST_UNREACHABLE) => Some("destination unreachable"),
        (false, icmp4::TIME_EXCEEDED) | (true, icmp6::TIME_EXCEEDED) => Some("time exceeded"),
        (true, icmp6::PACKET_TOO_BIG) => Some("packet too big"),
        _ => None,
    }
}

/// The tunnel a packet travels in, in words: "IPIP", or "VXLAN udp 51234 → 4789 vni 4096".
fn tunnel(s: &Summary) -> Option<String> {
    match (s.protocol, s.vxlan, s.inner) {
        (4, _, Some(_)) => Some("IPIP".into()),
        (_, Some((sp, dp, vni)), Some(_)) => Some(format!("VXLAN udp {sp} → {dp} vni {vni}")),
        _ => None,
    }
}

/// The effective packet: the inner one of IPIP or VXLAN, else the packet itself.
fn effective(s: &Summary) -> (IpAddr, IpAddr, u8, u8, Option<u8>) {
    match s.inner {
        Some(i) => (i.src.into(), i.dst.into(), i.ttl, i.protocol, i.icmp_type),
        None => (s.src, s.dst, s.ttl, s.protocol, s.icmp_type),
    }
}

/// What the worker did with one traced packet; `route_for` answers which route an address
/// takes on this node.
pub fn hop(node: &str, ifaces: &Interfaces, route_for: &dyn Fn(IpAddr) -> Option<RouteEntry>, e: &Event) -> Hop {
    let name = |i: forwarding::IfaceId| ifaces.get(i).map_or_else(|| format!("#{}", i.0), |f| f.name.clone());
    let role = ifaces.get(e.ingress).map_or("?", |f| f.role.name());
    let b = &e.before;
    let (src, dst, _, _, _) = effective(b);
    let is_node = |a: IpAddr| match a {
        IpAddr::V4(a) => ifaces.node_addr() == Some(a),
        IpAddr::V6(a) => ifaces.node_addr6() == Some(a),
    };
    let arrived_wrapped = tunnel(b).is_some() && is_node(b.dst);
    let route = route_for(dst).map(|r| RouteMatch {
        prefix: r.prefix.to_string(),
        next_hop: r.next_hop,
        source: r.source,
        encap: r.encap,
        why: r.why,
    });
    let mut h = Hop {
        node: node.to_string(),
        time: e.time.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        ingress: name(e.ingress),
        ingress_role: role.to_string(),
        src: b.src,
        dst: b.dst,
        protocol: b.protocol,
        ttl: b.ttl,
        inner: b.inner.map(|i| (i.src.into(), i.dst.into(), i.ttl)),
        what: b.inner.map_or(b.what, |i| i.what).to_string(),
        tunnel: tunnel(b),
        route,
        action: String::new(),
        reason: String::new(),
        egress: None,
        out: None,
        out_outer: None,
        out_tunnel: None,
    };
    let tun_in = ifaces.get(e.ingress).filter(|f| f.role == IfaceRole::Tun).map(|f| f.name.as_str());
    match &e.outcome {
        Outcome::Dropped(r) => {
            h.action = "drop".into();
            h.reason = format!("{}: {}", r.name(), r.describe());
        }
        Outcome::Kernel => {
            h.action = "kernel".into();
            h.reason = "addressed to this node (or not routed by us): left to the kernel".into();
        }
        Outcome::Fragmented { egress } => {
            h.action = "fragment".into();
            h.reason = "too big for the egress MTU without DF: fragmented".into();
            h.egress = Some(name(*egress));
        }
        Outcome::Segmented { egress } => {
            h.action = "segment".into();
            h.reason = "an offloaded TCP super-packet, cut into MTU-sized segments here (the tunnel, or a next hop \
                        still being resolved, takes no super-packets)"
                .into();
            h.egress = Some(name(*egress));
        }
        Outcome::Other => h.action = "other".into(),
        Outcome::Sent { egress, after } | Outcome::Resolving { egress, after, .. } => {
            h.egress = Some(name(*egress));
            if let Some(a) = after {
                let (asrc, adst, attl, _, aicmp) = effective(a);
                h.out = Some((asrc, adst, attl));
                let wrapped = tunnel(a);
                if wrapped.is_some() {
                    h.out_outer = Some((a.src, a.dst, a.ttl));
                }
                h.out_tunnel = wrapped.clone();
                let v6 = asrc.is_ipv6();
                let error_name = icmp_error_name(v6, aicmp);
                let error_back = is_node(asrc) && adst == src && error_name.is_some();
                h.action = if error_back {
                    let why = match (error_name, &h.route) {
                        (Some("time exceeded"), _) if v6 => "hop_limit_exceeded: the hop limit ran out".to_string(),
                        (Some("time exceeded"), _) => "ttl_exceeded: TTL ran out".to_string(),
                        (Some("packet too big"), _) => "packet_too_big: larger than the egress MTU".to_string(),
                        (_, None) => format!("no_route: no route covers {dst}"),
                        _ => "not forwardable".to_string(),
                    };
                    let icmp = if v6 { "ICMPv6" } else { "ICMP" };
                    h.reason = format!("{why}; dropped, {icmp} {} sent back to {src}", error_name.unwrap_or("error"));
                    "icmp_error".into()
                } else if let (Some(t), false) = (&wrapped, arrived_wrapped) {
                    h.reason = format!("{t} added: outer {} → {}", a.src, a.dst);
                    "encapsulate".into()
                } else if arrived_wrapped && wrapped.is_none() {
                    let t = h.tunnel.as_deref().unwrap_or("tunnel");
                    h.reason = format!("{t} removed: {} is a known node", b.src);
                    "decapsulate".into()
                } else if wrapped.is_none() && asrc != src {
                    h.reason = format!("natOutgoing: {dst} is outside the pools, so the source becomes {asrc}");
                    "masquerade".into()
                } else if wrapped.is_none() && adst != dst {
                    h.reason = format!("an answer to a masqueraded flow: back to the pod, {adst}");
                    "restore".into()
                } else {
                    "forward".into()
                };
            }
            if let Outcome::Resolving { next_hop, .. } = &e.outcome {
                let sep = if h.reason.is_empty() { "" } else { "; " };
                let how = if next_hop.is_ipv6() { "neighbour discovery" } else { "ARP" };
                h.reason = format!("{}{sep}held until {how} resolves {next_hop}", h.reason);
            }
            if h.action.is_empty() {
                h.action = "forward".into();
            }
            if let Some(dev) = tun_in.filter(|_| h.action == "forward") {
                h.reason = format!("routed into {dev} by the kernel");
            }
        }
    }
    h
}

/// IPv6 calls it the hop limit.
fn ttl_word(a: IpAddr) -> &'static str {
    if a.is_ipv6() {
        "hop limit"
    } else {
        "ttl"
    }
}

/// The journey as text, hop by hop.
pub fn render(hops: &[Hop]) -> String {
    let mut s = String::new();
    let mut last_node = "";
    for h in hops {
        let node = if h.node == last_node { "" } else { h.node.as_str() };
        last_node = &h.node;
        let pkt = match h.inner {
            Some((is, id, ittl)) => {
                let t = h.tunnel.as_deref().unwrap_or("IPIP");
                format!("outer {} → {} ({t}) · {is} → {id} ttl {ittl}", h.src, h.dst)
            }
            None => format!("{} → {} {} {}", h.src, h.dst, ttl_word(h.src), h.ttl),
        };
        let what = if h.what.is_empty() { String::new() } else { format!(", {}", h.what) };
        s.push_str(&format!("{node:<8} ← {} ({})  {pkt}{what}\n", h.ingress, h.ingress_role));
        if let Some(r) = &h.route {
            let via = r.next_hop.map(|n| format!(" via {n}")).unwrap_or_default();
            let src =
                serde_json::to_value(r.source).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            let why = if r.why.is_empty() { String::new() } else { format!(": {}", r.why) };
            s.push_str(&format!("{:<8}   route {}{via} [{src}]{why}\n", "", r.prefix));
        }
        let reason = if h.reason.is_empty() { String::new() } else { format!(" — {}", h.reason) };
        s.push_str(&format!("{:<8}   {}{reason}\n", "", h.action));
        if let Some(eg) = &h.egress {
            let out = match (h.out_outer, h.out) {
                (Some((os, od, ot)), Some((is, id, it))) => {
                    let t = h.out_tunnel.as_deref().map(|t| format!(" ({t})")).unwrap_or_default();
                    format!("outer {os} → {od} ttl {ot}{t} · {is} → {id} ttl {it}")
                }
                (None, Some((a, b, t))) => format!("{a} → {b} {} {t}", ttl_word(a)),
                _ => String::new(),
            };
            s.push_str(&format!("{:<8}   → {eg}  {out}\n", ""));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn trace_ids_use_all_32_bits_and_do_not_repeat() {
        let ids: Vec<u32> = (0..64).map(|_| super::new_id().expect("id")).collect();
        // A clock- or pid-derived id leaves the top bits 0 (nanoseconds stay below 2^30).
        assert!(ids.iter().any(|i| i >> 31 == 1), "{ids:x?}");
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }
}
