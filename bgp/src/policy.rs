//! Route policy: what a node accepts from a peer and what it tells one, as Calico sets it up.
//!
//! By default a node is a stub of the cluster, never a transit: it exports only cluster routes
//! (its own blocks and borrowed /32s, and the pool routes of other cluster nodes), and from an
//! external peer it accepts nothing inside an IP pool and nothing that would override one of
//! its own local, connected or static routes. Filters shaped like Calico's BGPFilter come
//! first and decide where one of their rules matches; the well-known communities of RFC 1997
//! are honoured whatever a filter says.

use ipnet::IpNet;
use std::fmt;

/// The well-known communities (RFC 1997).
pub mod community {
    pub const NO_EXPORT: u32 = 0xFFFF_FF01;
    pub const NO_ADVERTISE: u32 = 0xFFFF_FF02;
    pub const NO_EXPORT_SUBCONFED: u32 = 0xFFFF_FF03;

    /// `"64512:100"`, or a well-known name (`no-export`, `no-advertise`, `no-export-subconfed`).
    pub fn parse(s: &str) -> Result<u32, String> {
        match s {
            "no-export" => return Ok(NO_EXPORT),
            "no-advertise" => return Ok(NO_ADVERTISE),
            "no-export-subconfed" => return Ok(NO_EXPORT_SUBCONFED),
            _ => {}
        }
        let bad = || {
            format!("`{s}` is not a community: write AS:VALUE (two numbers up to 65535) or no-export, no-advertise, no-export-subconfed")
        };
        let (a, v) = s.split_once(':').ok_or_else(bad)?;
        if v.contains(':') {
            return Err(format!(
                "`{s}` is a large community (RFC 8092); only standard communities (AS:VALUE) are supported"
            ));
        }
        let a: u16 = a.parse().map_err(|_| bad())?;
        let v: u16 = v.parse().map_err(|_| bad())?;
        Ok(u32::from(a) << 16 | u32::from(v))
    }

    /// The inverse of [`parse`].
    pub fn format(c: u32) -> String {
        match c {
            NO_EXPORT => "no-export".into(),
            NO_ADVERTISE => "no-advertise".into(),
            NO_EXPORT_SUBCONFED => "no-export-subconfed".into(),
            c => format!("{}:{}", c >> 16, c & 0xffff),
        }
    }
}

/// Calico's BGPFilter `matchOperator`: how a route's prefix is compared with a rule's CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum MatchOperator {
    Equal,
    NotEqual,
    /// The prefix lies inside the CIDR (or is it).
    In,
    NotIn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Action {
    Accept,
    Reject,
}

/// Calico's BGPFilter rule `source`: which routes a rule speaks of. Without one, every route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Source {
    /// Routes learned from BGP peers, not the node's own (on import, every route is).
    RemotePeers,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub cidr: IpNet,
    pub operator: MatchOperator,
    pub action: Action,
    /// Calico's `prefixLength`: the route's prefix length must be from `min` to `max`.
    pub lengths: Option<(u8, u8)>,
    pub source: Option<Source>,
}

impl Rule {
    pub fn new(cidr: IpNet, operator: MatchOperator, action: Action) -> Rule {
        Rule { cidr, operator, action, lengths: None, source: None }
    }

    /// Whether the rule speaks of a route for `prefix`, `learned` from a peer or not.
    pub fn applies(&self, prefix: &IpNet, learned: bool) -> bool {
        (learned || self.source.is_none()) && self.matches(prefix)
    }

    /// Whether the rule speaks of `prefix`. A rule is of its CIDR's family (Calico keeps
    /// `exportV4` and `exportV6` apart): "not in 10.0.0.0/8" says nothing of IPv6 routes.
    pub fn matches(&self, prefix: &IpNet) -> bool {
        if !same_family(&self.cidr, prefix) {
            return false;
        }
        if self.lengths.is_some_and(|(min, max)| !(min..=max).contains(&prefix.prefix_len())) {
            return false;
        }
        match self.operator {
            MatchOperator::Equal => *prefix == self.cidr,
            MatchOperator::NotEqual => *prefix != self.cidr,
            MatchOperator::In => self.cidr.contains(prefix),
            MatchOperator::NotIn => !self.cidr.contains(prefix),
        }
    }
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!((a, b), (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_)))
}

/// Calico's BGPFilter: ordered rules for each direction; the first rule that matches decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub export: Vec<Rule>,
    pub import: Vec<Rule>,
}

/// The first matching rule of a peer's filters (in the order the peer lists them) for one
/// direction: its action and where it sits (filter index, rule index). `learned`: the route
/// came from a peer (every imported one did), not from this node.
pub fn first_match(
    filters: &[std::sync::Arc<Filter>],
    import: bool,
    prefix: &IpNet,
    learned: bool,
) -> Option<(Action, u8, u16)> {
    filters.iter().enumerate().find_map(|(fi, f)| {
        let rules = if import { &f.import } else { &f.export };
        rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.applies(prefix, learned))
            .map(|(ri, r)| (r.action, fi as u8, ri as u16))
    })
}

/// What the default rules need to know about the cluster and the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// The IP pools: the cluster's routes live inside them.
    pub pools: Vec<IpNet>,
    /// The cluster's nodes. A pool route from an external peer is accepted only with one of
    /// them as next hop: an outside route reflector passes node routes on unchanged.
    pub nodes: Vec<std::net::IpAddr>,
    /// The node's own address and connected subnet: an external peer may announce nothing
    /// inside them.
    pub protected: Vec<IpNet>,
    /// The node's static routes: an external peer may not announce the same prefix (a more
    /// specific one is ordinary routing: a default route is a static route too).
    pub static_routes: Vec<IpNet>,
    /// Communities attached to exported routes inside a CIDR (Calico's
    /// BGPConfiguration.prefixAdvertisements).
    pub advertise: Vec<(IpNet, Vec<u32>)>,
    /// Pools with Calico's `disableBGPExport`: their routes go to no external peer (the
    /// cluster's own sessions still carry them; see `Rib::export_attrs`).
    pub no_export: Vec<IpNet>,
}

impl ClusterPolicy {
    /// Whether `prefix` lies in a pool that is not exported to external peers.
    pub fn not_exported(&self, prefix: &IpNet) -> bool {
        self.no_export.iter().any(|p| same_family(p, prefix) && p.contains(prefix))
    }

    pub fn in_pool(&self, prefix: &IpNet) -> bool {
        self.pools.iter().any(|p| same_family(p, prefix) && p.contains(prefix))
    }

    /// Whether an announcement of `prefix` would override one of the node's own routes.
    pub fn overrides(&self, prefix: &IpNet) -> bool {
        self.protected.iter().any(|p| same_family(p, prefix) && p.contains(prefix))
            || self.static_routes.contains(prefix)
    }

    /// The communities to add when exporting `prefix`.
    pub fn communities_for<'a>(&'a self, prefix: &'a IpNet) -> impl Iterator<Item = u32> + 'a {
        self.advertise
            .iter()
            .filter(move |(c, _)| same_family(c, prefix) && c.contains(prefix))
            .flat_map(|(_, cs)| cs.iter().copied())
    }
}

/// Why a route from a peer was not accepted. One byte plus the rule's place: a peer that sends
/// a full table of refused routes costs little more than the prefixes themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejected {
    /// Our own AS is in the AS_PATH (RFC 4271 §9.1.2).
    AsLoop,
    /// The ORIGINATOR_ID is ours: our own route reflected back (RFC 4456 §8).
    OriginatorIsUs,
    /// Our cluster ID is in the CLUSTER_LIST (RFC 4456 §8).
    ClusterLoop,
    /// The next hop is this node.
    NextHopIsUs,
    /// From an external peer, inside an IP pool, and not pointing at a cluster node: only
    /// nodes originate pool routes.
    InsidePool,
    /// From an external peer, inside one of the node's own routes (its address, its subnet,
    /// a static route), which it would override.
    OverridesLocal,
    /// A filter's import rule said Reject.
    Filter { filter: u8, rule: u16 },
}

impl Rejected {
    /// In words, with the filter's name when a filter decided.
    pub fn describe(&self, filters: &[std::sync::Arc<Filter>]) -> String {
        match self {
            Rejected::Filter { filter, rule } => {
                let name = filters.get(usize::from(*filter)).map_or("?", |f| f.name.as_str());
                format!("rejected by filter {name}, import rule {}", rule + 1)
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rejected::AsLoop => "our AS is in the AS_PATH (loop)",
            Rejected::OriginatorIsUs => "ORIGINATOR_ID is ours (reflected back)",
            Rejected::ClusterLoop => "our cluster ID is in the CLUSTER_LIST (loop)",
            Rejected::NextHopIsUs => "the next hop is this node",
            Rejected::InsidePool => "inside an IP pool, with a next hop that is not a cluster node",
            Rejected::OverridesLocal => "would override this node's own address, subnet or static route",
            Rejected::Filter { .. } => "rejected by an import filter",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn communities_parse_and_print_both_ways() {
        assert_eq!(community::parse("64512:100"), Ok(64512 << 16 | 100));
        assert_eq!(community::parse("no-export"), Ok(community::NO_EXPORT));
        for bad in ["", "64512", "70000:1", "1:70000", "a:b", "1:2:3"] {
            assert!(community::parse(bad).is_err(), "{bad}");
        }
        assert!(community::parse("1:2:3").expect_err("large").contains("large community"));
        for c in ["65535:65535", "0:0", "no-advertise", "no-export-subconfed"] {
            assert_eq!(community::format(community::parse(c).expect("parses")), c);
        }
    }

    #[test]
    fn operators_compare_as_calico_says() {
        let r = |op| Rule::new(net("10.0.0.0/8"), op, Action::Accept);
        let (same, inside, outside, v6) = (net("10.0.0.0/8"), net("10.1.0.0/16"), net("11.0.0.0/8"), net("::/0"));
        // An IPv4 rule says nothing of IPv6 routes, whatever its operator.
        let table = [
            (MatchOperator::Equal, [true, false, false, false]),
            (MatchOperator::NotEqual, [false, true, true, false]),
            (MatchOperator::In, [true, true, false, false]),
            (MatchOperator::NotIn, [false, false, true, false]),
        ];
        for (op, want) in table {
            let got = [same, inside, outside, v6].map(|p| r(op).matches(&p));
            assert_eq!(got, want, "{op:?}");
        }
        // prefixLength: Calico's documentation's "/30 or longer inside 77.0.0.0/16".
        let long = Rule { lengths: Some((30, 32)), ..Rule::new(net("77.0.0.0/16"), MatchOperator::In, Action::Accept) };
        let got = ["77.0.1.0/30", "77.0.1.1/32", "77.0.1.0/24", "78.0.0.0/30"].map(|p| long.matches(&net(p)));
        assert_eq!(got, [true, true, false, false]);
        // source: RemotePeers speaks only of learned routes.
        let learned = Rule { source: Some(Source::RemotePeers), ..r(MatchOperator::In) };
        assert!(learned.applies(&inside, true) && !learned.applies(&inside, false));
        assert!(r(MatchOperator::In).applies(&inside, false));
    }

    #[test]
    fn the_first_matching_rule_of_the_first_filter_that_has_one_decides() {
        let rule = |cidr: &str, operator, action| Rule::new(net(cidr), operator, action);
        let a = Arc::new(Filter {
            name: "a".into(),
            export: vec![],
            import: vec![rule("10.0.0.0/8", MatchOperator::Equal, Action::Reject)],
        });
        let b = Arc::new(Filter {
            name: "b".into(),
            export: vec![rule("0.0.0.0/0", MatchOperator::In, Action::Accept)],
            import: vec![
                rule("10.0.0.0/8", MatchOperator::In, Action::Accept),
                rule("0.0.0.0/0", MatchOperator::In, Action::Reject),
            ],
        });
        let fs = [a, b];
        assert_eq!(first_match(&fs, true, &net("10.0.0.0/8"), true), Some((Action::Reject, 0, 0)));
        assert_eq!(first_match(&fs, true, &net("10.1.0.0/16"), true), Some((Action::Accept, 1, 0)));
        assert_eq!(first_match(&fs, true, &net("192.0.2.0/24"), true), Some((Action::Reject, 1, 1)));
        assert_eq!(first_match(&fs, false, &net("10.0.0.0/8"), false), Some((Action::Accept, 1, 0)));
        assert_eq!(first_match(&fs[..1], false, &net("10.0.0.0/8"), false), None);
        let why = Rejected::Filter { filter: 1, rule: 1 }.describe(&fs);
        assert_eq!(why, "rejected by filter b, import rule 2");
    }

    #[test]
    fn pools_and_protected_routes_cover_what_is_inside_them() {
        let c = ClusterPolicy {
            pools: vec![net("10.244.0.0/16")],
            nodes: vec![],
            protected: vec![net("192.168.100.0/24"), net("192.168.100.100/32")],
            static_routes: vec![net("0.0.0.0/0")],
            advertise: vec![(net("10.244.0.0/16"), vec![1, 2]), (net("10.244.1.0/26"), vec![3])],
            no_export: vec![net("10.245.0.0/16")],
        };
        assert!(c.not_exported(&net("10.245.3.0/26")) && !c.not_exported(&net("10.244.1.0/26")));
        assert!(c.in_pool(&net("10.244.1.0/26")) && c.in_pool(&net("10.244.0.0/16")));
        assert!(!c.in_pool(&net("10.0.0.0/8")) && !c.in_pool(&net("::/0")));
        assert!(c.overrides(&net("192.168.100.128/25")) && c.overrides(&net("192.168.100.100/32")));
        assert!(!c.overrides(&net("192.168.0.0/16")) && !c.overrides(&net("10.0.0.0/8")));
        assert!(c.overrides(&net("0.0.0.0/0")), "the same prefix as a static route");
        let p = net("10.244.1.0/26");
        assert_eq!(c.communities_for(&p).collect::<Vec<_>>(), vec![1, 2, 3]);
    }
}
