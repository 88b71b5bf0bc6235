//! A node's view of the cluster from Calico's resources (what `router node` reads from etcd
//! with a datastore): its BGP sessions, the pools and the other nodes, resolved as Calico's
//! own node agent does.
//!
//! - `BGPConfiguration` `default`: the AS number (64512 without one), the node-to-node mesh
//!   (on without one), prefix advertisements and communities, the listen port and the log
//!   level; `node.<name>` overrides the last three for that node.
//! - `Node`s: every node with `bgp.ipv4Address` is a cluster node (an allowed IPIP source
//!   and pool-route next hop; its `bgp.ipv6Address` an IPv6 pool-route next hop), in its
//!   `bgp.asNumber` or else the cluster's: nodes of different AS numbers speak eBGP. Sessions
//!   between nodes follow `nodeapi::config::cluster_peers`: with the mesh on, each peers
//!   with each; with it off, nodes with a `routeReflectorClusterID` are reflectors.
//! - `BGPPeer`s with no `node`, or this node's name: external peers of this node.
//! - `IPPool`s (not `disabled`): the IPv4 pools with their `ipipMode` and `vxlanMode`, and
//!   the IPv6 pools (never tunnelled).
//! - `BGPFilter`s: the rules of both families; a rule without a CIDR matches every prefix of
//!   its family.

use datastore::resources::{self as r, Resource};
use datastore::selector::Selector;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nodeapi::config::{BgpConfig, BgpPeer, IpipMode, PeerKind, Pool, PrefixAdvertisement, MAX_RESTART_TIME};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Calico's AS number for a cluster whose BGPConfiguration names none.
const DEFAULT_AS_NUMBER: u32 = 64512;

/// The cluster's AS number, which a node without one of its own runs with: the `default`
/// BGPConfiguration's among `resources`, else Calico's default.
pub fn cluster_as_number(resources: &[Resource]) -> u32 {
    default_config(resources).and_then(|c| c.as_number).unwrap_or(DEFAULT_AS_NUMBER)
}

fn default_config(resources: &[Resource]) -> Option<&datastore::resources::BgpConfigurationSpec> {
    config_named(resources, "default")
}

fn config_named<'a>(resources: &'a [Resource], name: &str) -> Option<&'a datastore::resources::BgpConfigurationSpec> {
    resources.iter().find_map(|x| match x {
        Resource::BgpConfiguration(c) if c.metadata.name == name => Some(&c.spec),
        _ => None,
    })
}

/// What the resources say for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    pub as_number: u32,
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    pub peers: Vec<BgpPeer>,
    pub filters: Vec<bgp::policy::Filter>,
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// BGPConfiguration.listenPort (this node's own, or the default's): where it listens;
    /// the other nodes are reached at theirs.
    pub listen_port: Option<u16>,
    /// BGPConfiguration.logSeverityScreen as a log level.
    pub log_level: Option<&'static str>,
    pub pools: Vec<Pool>,
    /// Every other node's address.
    pub nodes: Vec<Ipv4Addr>,
    /// The IPv6 pools, for a dual-stack node.
    pub pools6: Vec<Ipv6Net>,
    /// Every other node's IPv6 address (`bgp.ipv6Address`).
    pub nodes6: Vec<Ipv6Addr>,
    /// The default BGPConfiguration's service address ranges (cluster, external and load
    /// balancer IPs), which every node announces.
    pub service_ips: Vec<IpNet>,
    /// BGPConfiguration.bindMode None: BGP listens on every address of the node.
    pub listen_all: bool,
    /// The IPv6 pools with `natOutgoing`, and those with `disableBGPExport`.
    pub nat6: Vec<Ipv6Net>,
    pub no_export6: Vec<Ipv6Net>,
    /// What the resources hold that this node cannot use, for the log.
    pub notes: Vec<String>,
}

fn community(s: &str, named: &[r::Community]) -> Option<u32> {
    let v = named.iter().find(|c| c.name == s).map_or(s, |c| c.value.as_str());
    let (a, b) = v.split_once(':')?;
    if b.contains(':') {
        return None; // a large community: not a 32-bit one
    }
    Some((a.parse::<u32>().ok()? << 16) | b.parse::<u32>().ok()?)
}

/// A filter's rules of one family; `every` is the family's whole space, which a rule without
/// a CIDR matches.
fn rules(list: &[r::FilterRule], every: IpNet) -> Vec<bgp::policy::Rule> {
    list.iter()
        .filter_map(|x| {
            let cidr: IpNet = match &x.cidr {
                Some(c) => c.parse().ok()?,
                None => every,
            };
            let operator = match x.match_operator.unwrap_or(r::MatchOperator::In) {
                r::MatchOperator::Equal => bgp::policy::MatchOperator::Equal,
                r::MatchOperator::NotEqual => bgp::policy::MatchOperator::NotEqual,
                r::MatchOperator::In => bgp::policy::MatchOperator::In,
                r::MatchOperator::NotIn => bgp::policy::MatchOperator::NotIn,
            };
            let action = match x.action {
                r::FilterAction::Accept => bgp::policy::Action::Accept,
                r::FilterAction::Reject => bgp::policy::Action::Reject,
            };
            let lengths =
                x.prefix_length.as_ref().map(|l| (l.min.unwrap_or(0), l.max.unwrap_or(every.max_prefix_len())));
            let source = x.source.map(|r::RuleSource::RemotePeers| bgp::policy::Source::RemotePeers);
            Some(bgp::policy::Rule { cidr, operator, action, lengths, source })
        })
        .collect()
}

/// A duration field in whole seconds, or a note of why it is left out (`apply` refuses such
/// values; a resource written to etcd by other means may still hold one).
fn secs(resource: &str, field: &str, text: &str, lo: u16, hi: u16, notes: &mut Vec<String>) -> Option<u16> {
    r::duration_secs(field, text, lo, hi).map_err(|(f, e)| notes.push(format!("{resource}: {f}: {e}: not used"))).ok()
}

/// A field of the node's own BGPConfiguration where it sets it, else of the default.
fn pick<'a, T: ?Sized>(
    mine: Option<&'a r::BgpConfigurationSpec>,
    default: Option<&'a r::BgpConfigurationSpec>,
    field: impl Fn(&'a r::BgpConfigurationSpec) -> Option<&'a T>,
) -> Option<&'a T> {
    mine.and_then(&field).or_else(|| default.and_then(&field))
}

/// Reads a secret's key (`nodeapi::secrets::read_password` on the node's `secrets_dir`):
/// the value, or why there is none.
pub type Secrets<'a> = &'a dyn Fn(&str, &str) -> Result<String, String>;

/// The view of node `me` (whose underlay address is `my_addr`, and `my_addr6` on a
/// dual-stack node), for a node without secrets: a peer with a password is left out.
pub fn view(resources: &[Resource], me: &str, my_addr: Ipv4Addr, my_addr6: Option<Ipv6Addr>) -> View {
    view_with(resources, me, my_addr, my_addr6, &|_, _| Err("the node has no secrets_dir".into()))
}

/// [`view`], with `secrets` to read the passwords of `BGPPeer`s and the mesh's
/// (`nodeMeshPassword`). A peer whose password cannot be read is left out (and noted), the
/// whole mesh for the mesh's: a session without the TCP-MD5 the resource asks for would
/// either not come up or run unauthenticated.
pub fn view_with(
    resources: &[Resource],
    me: &str,
    my_addr: Ipv4Addr,
    my_addr6: Option<Ipv6Addr>,
    secrets: Secrets<'_>,
) -> View {
    let mut notes = Vec::new();
    let config = default_config(resources);
    // Calico's node-specific BGPConfiguration, `node.<name>`, overrides the default's
    // prefixAdvertisements, listenPort and logSeverityScreen for that node.
    let mine = config_named(resources, &format!("node.{me}"));
    let cluster_as = cluster_as_number(resources);
    let mesh = config.and_then(|c| c.node_to_node_mesh_enabled).unwrap_or(true);
    let log_level = pick(mine, config, |c| c.log_severity_screen.as_deref()).and_then(|s| {
        let level = crate::logging::calico_level(s);
        if level.is_none() {
            notes.push(format!("logSeverityScreen {s:?} is none of Debug, Info, Warning, Error, Fatal: not used"));
        }
        level
    });
    let service_ips = service_ips(config, &mut notes);
    let port_of = |name: &str| {
        config_named(resources, &format!("node.{name}"))
            .and_then(|c| c.listen_port)
            .or_else(|| config.and_then(|c| c.listen_port))
    };
    let nodes = cluster_nodes(resources, cluster_as);
    let my_rr = nodes.iter().find(|n| n.name == me).and_then(|n| n.reflector);
    let my_node = resources.iter().find_map(|x| match x {
        Resource::Node(n) if n.metadata.name == me => Some(n),
        _ => None,
    });
    // The node's own AS and labels, from its resource even where that has no address yet.
    let as_number = my_node.and_then(|n| n.spec.bgp.as_ref()?.as_number).unwrap_or(cluster_as);
    let no_labels = Labels::new();
    let my_labels = my_node.map_or(&no_labels, |n| &n.metadata.labels);
    if !mesh && nodes.iter().any(|n| n.reflector.is_some()) && nodes.iter().any(|n| n.as_number != as_number) {
        notes.push(format!(
            "nodes of other AS numbers than this one's ({as_number}) with route reflectors: a reflector passes on iBGP routes only, so those sessions are eBGP and reflect nothing"
        ));
    }
    if !nodes.iter().any(|n| n.name == me) {
        notes.push(format!(
            "no Node resource named {me} with spec.bgp.ipv4Address: other nodes do not peer with this one"
        ));
    }
    let others: Vec<nodeapi::config::ClusterNode> = nodes
        .iter()
        .filter(|n| n.name != me)
        .map(|n| nodeapi::config::ClusterNode {
            address: n.addr,
            reflector: n.reflector,
            as_number: n.as_number,
            port: port_of(n.name).unwrap_or(179),
        })
        .collect();
    let mesh_restart = config.and_then(|c| c.node_mesh_max_restart_time.as_deref()).and_then(|t| {
        secs("bgpconfigurations/default", "spec.nodeMeshMaxRestartTime", t, 0, MAX_RESTART_TIME, &mut notes)
    });
    // The mesh's TCP-MD5 key, as a BGPPeer's: unreadable, the mesh waits for it.
    let mesh_key = match config.and_then(|c| c.node_mesh_password.as_ref()).filter(|_| mesh) {
        None => Ok(None),
        Some(pw) => {
            let what = "bgpconfigurations/default: nodeMeshPassword";
            read_key(secrets, &pw.secret_key_ref, what, "the mesh sessions", &mut notes)
        }
    };
    let mut peers = match mesh_key {
        Ok(key) => nodeapi::config::cluster_peers(my_addr, my_rr, &others, mesh, mesh_restart, key.as_deref()),
        Err(()) => Vec::new(),
    };
    let here = Here { me, my_addr, my_addr6, my_rr, my_labels, nodes: &nodes, cluster_as, port_of: &port_of, secrets };
    for x in resources {
        if let Resource::BgpPeer(p) = x {
            here.add_peers(p, &mut peers, &mut notes);
        }
    }
    let named: Vec<r::Community> =
        [mine, config].into_iter().flatten().flat_map(|c| c.communities.iter().flatten().cloned()).collect();
    let prefix_advertisements = pick(mine, config, |c| c.prefix_advertisements.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some(PrefixAdvertisement {
                cidr: a.cidr.parse().ok()?,
                communities: a.communities.iter().filter_map(|c| community(c, &named)).collect(),
            })
        })
        .collect();
    let (pools6, nat6, no_export6) = pools6(resources, &mut notes);
    View {
        as_number,
        route_reflector_cluster_id: my_rr,
        peers,
        filters: filters(resources),
        prefix_advertisements,
        listen_port: port_of(me),
        log_level,
        pools: pools(resources, &mut notes),
        nodes: nodes.iter().filter(|n| n.name != me).map(|n| n.addr).collect(),
        pools6,
        nodes6: nodes6(resources, me),
        nat6,
        no_export6,
        service_ips,
        listen_all: config.and_then(|c| c.bind_mode.as_deref()) == Some("None"),
        notes,
    }
}

type Labels = std::collections::BTreeMap<String, String>;

/// A node with an IPv4 address, as its Node resource says.
struct ClusterNode<'a> {
    name: &'a str,
    addr: Ipv4Addr,
    /// Its route reflector cluster ID, if it is a reflector.
    reflector: Option<Ipv4Addr>,
    /// Its IPv6 address (Node.spec.bgp.ipv6Address), if it has one.
    addr6: Option<Ipv6Addr>,
    labels: &'a Labels,
    as_number: u32,
}

/// Every node with an IPv4 address, by address; in the cluster's AS unless it has its own.
fn cluster_nodes(resources: &[Resource], cluster_as: u32) -> Vec<ClusterNode<'_>> {
    let mut nodes: Vec<ClusterNode<'_>> = resources
        .iter()
        .filter_map(|x| match x {
            Resource::Node(n) => {
                let b = n.spec.bgp.as_ref()?;
                Some(ClusterNode {
                    name: &n.metadata.name,
                    addr: b.ipv4_address.as_ref()?.parse::<Ipv4Net>().ok()?.addr(),
                    reflector: b.route_reflector_cluster_id.as_ref().and_then(|c| c.parse().ok()),
                    addr6: b.ipv6_address.as_ref().and_then(|a| a.parse::<Ipv6Net>().ok()).map(|a| a.addr()),
                    labels: &n.metadata.labels,
                    as_number: b.as_number.unwrap_or(cluster_as),
                })
            }
            _ => None,
        })
        .collect();
    nodes.sort_by_key(|n| n.addr);
    nodes
}

/// Every other node's IPv6 address, sorted.
fn nodes6(resources: &[Resource], me: &str) -> Vec<Ipv6Addr> {
    let mut nodes6: Vec<Ipv6Addr> = resources
        .iter()
        .filter_map(|x| match x {
            Resource::Node(n) if n.metadata.name != me => {
                Some(n.spec.bgp.as_ref()?.ipv6_address.as_ref()?.parse::<Ipv6Net>().ok()?.addr())
            }
            _ => None,
        })
        .collect();
    nodes6.sort();
    nodes6
}

/// A TCP-MD5 key from its secret: Err (noted) while it cannot be read, so that `sessions`
/// wait for it, unless the reference is `optional`: then they run without one (noted too).
fn read_key(
    secrets: Secrets<'_>,
    r: &r::SecretKeyRef,
    what: &str,
    sessions: &str,
    notes: &mut Vec<String>,
) -> Result<Option<String>, ()> {
    match secrets(&r.name, &r.key) {
        Ok(pw) => Ok(Some(pw)),
        Err(e) if r.optional == Some(true) => {
            notes.push(format!(
                "{what} (secret {:?}, key {:?}): {e}: optional, so {sessions} run without TCP-MD5",
                r.name, r.key
            ));
            Ok(None)
        }
        Err(e) => {
            notes.push(format!(
                "{what} (secret {:?}, key {:?}): {e}: {sessions} wait until it can be read",
                r.name, r.key
            ));
            Err(())
        }
    }
}

/// The default configuration's service ranges (Calico reads them from it only), each once.
fn service_ips(config: Option<&r::BgpConfigurationSpec>, notes: &mut Vec<String>) -> Vec<IpNet> {
    let mut service_ips: Vec<IpNet> = Vec::new();
    let Some(c) = config else { return service_ips };
    for (field, list) in [
        ("serviceClusterIPs", &c.service_cluster_ips),
        ("serviceExternalIPs", &c.service_external_ips),
        ("serviceLoadBalancerIPs", &c.service_load_balancer_ips),
    ] {
        for ip in list.iter().flatten() {
            match ip.cidr.parse::<IpNet>() {
                Ok(n) if !service_ips.contains(&n.trunc()) => service_ips.push(n.trunc()),
                Ok(_) => {}
                Err(_) => {
                    notes.push(format!("bgpconfigurations/default: {field} {:?} is not a CIDR: not used", ip.cidr))
                }
            }
        }
    }
    service_ips
}

/// What a BGPPeer is resolved against: this node, the cluster's nodes and how to reach them.
struct Here<'a> {
    me: &'a str,
    my_addr: Ipv4Addr,
    my_addr6: Option<Ipv6Addr>,
    my_rr: Option<Ipv4Addr>,
    my_labels: &'a Labels,
    nodes: &'a [ClusterNode<'a>],
    cluster_as: u32,
    port_of: &'a dyn Fn(&str) -> Option<u16>,
    secrets: Secrets<'a>,
}

impl Here<'_> {
    /// The sessions BGPPeer `p` gives this node, added to `peers`: with a `peerSelector`, one
    /// to each node it pairs this one with; else one to its `peerIP`, where this node has it.
    fn add_peers(&self, p: &r::Typed<r::BgpPeerSpec>, peers: &mut Vec<BgpPeer>, notes: &mut Vec<String>) {
        let name = format!("bgppeers/{}", p.metadata.name);
        let spec = &p.spec;
        let restart_time = spec
            .max_restart_time
            .as_deref()
            .and_then(|t| secs(&name, "spec.maxRestartTime", t, 0, MAX_RESTART_TIME, notes));
        let keepalive_time =
            spec.keepalive_time.as_deref().and_then(|t| secs(&name, "spec.keepaliveTime", t, 1, u16::MAX, notes));
        // The settings every session of this BGPPeer shares.
        let common = |address: IpAddr, password: Option<String>| BgpPeer {
            address,
            as_number: spec.as_number.unwrap_or(self.cluster_as),
            port: 179,
            kind: PeerKind::Global,
            external: true,
            passive: false,
            password,
            ttl_security: spec.ttl_security,
            filters: spec.filters.clone().unwrap_or_default(),
            max_prefixes: None,
            restart_time,
            keepalive_time,
            allow_local_as: spec.num_allowed_local_as_numbers.map_or(0, |n| n.min(255) as u8),
            keep_original_next_hop: spec.keep_original_next_hop == Some(true)
                || spec.next_hop_mode.as_deref() == Some("Keep"),
            reachable_by: None,
            any_source: spec.source_address.as_deref() == Some("None"),
        };
        // Read only where this node has a session by the peer, and once.
        let mut read: Option<Result<Option<String>, ()>> = None;
        let mut password = |notes: &mut Vec<String>| {
            read.get_or_insert_with(|| match &spec.password {
                None => Ok(None),
                Some(pw) => {
                    read_key(self.secrets, &pw.secret_key_ref, &format!("{name}: password"), "its sessions", notes)
                }
            })
            .clone()
        };
        let selector = |s: &str, notes: &mut Vec<String>| {
            let sel = Selector::parse(s);
            if let Err(e) = &sel {
                notes.push(format!("{name}: selector {s:?}: {e}"));
            }
            sel.ok()
        };
        // Which nodes have this peer: the one named, those the selector picks, or all.
        let node_sel = spec.node_selector.as_deref().map(|s| selector(s, notes));
        let has_it = |name: &str, labels: &Labels| match (&spec.node, &node_sel) {
            (Some(n), _) => n == name,
            (None, Some(sel)) => sel.as_ref().is_some_and(|sel| sel.matches(labels)),
            (None, None) => true,
        };
        // A session with another node, as nodes have them: named by the reflectors' cluster
        // IDs, the higher address waiting; never a second one where the mesh or the
        // reflectors made one already.
        let mut node_session =
            |n: &ClusterNode, address: IpAddr, port: Option<u16>, peers: &mut Vec<BgpPeer>, notes: &mut Vec<String>| {
                let mine = match address {
                    IpAddr::V4(_) => Some(IpAddr::V4(self.my_addr)),
                    IpAddr::V6(_) => self.my_addr6.map(IpAddr::V6),
                };
                let Some(mine) = mine else { return };
                if peers.iter().any(|q| q.address == address) {
                    return;
                }
                let Ok(password) = password(notes) else { return };
                let kind = match (self.my_rr, n.reflector) {
                    (Some(mine), theirs) if theirs != Some(mine) => PeerKind::RouteReflectorClient,
                    (None, Some(_)) => PeerKind::RouteReflector,
                    _ => PeerKind::NodeSpecific,
                };
                let port = port.or_else(|| (self.port_of)(n.name)).unwrap_or(179);
                let node = nodeapi::config::node_peer(mine, address, kind, n.as_number, port);
                let (as_number, port, kind, external, passive) =
                    (node.as_number, node.port, node.kind, node.external, node.passive);
                peers.push(BgpPeer { as_number, port, kind, external, passive, ..common(address, password) });
            };
        if let Some(s) = &spec.peer_selector {
            // Nodes as peers (Calico's route reflector setup: every node peers with the nodes
            // labelled as reflectors), at their addresses. A session has two ends: a node the
            // peerSelector picks peers with the nodes that have the BGPPeer, as Calico's node
            // agent does.
            let Some(sel) = selector(s, notes) else { return };
            let (have, picked) = (has_it(self.me, self.my_labels), sel.matches(self.my_labels));
            for n in self.nodes.iter().filter(|n| n.name != self.me) {
                if (have && sel.matches(n.labels)) || (picked && has_it(n.name, n.labels)) {
                    node_session(n, IpAddr::V4(n.addr), None, peers, notes);
                }
            }
            return;
        }
        let Some(ip) = spec.peer_ip.as_deref() else { return };
        let parsed = r::peer_address(ip);
        // A peerIP at a node of the cluster (in the AS the BGPPeer gives) makes two nodes
        // peers, from both ends as Calico does: that node peers back with every node that
        // has the BGPPeer, and the session is one between nodes, not with an outsider.
        let as_number = spec.as_number.unwrap_or(self.cluster_as);
        let node_at = |a: IpAddr| {
            self.nodes.iter().find(|n| {
                n.as_number == as_number && (a == IpAddr::V4(n.addr) || n.addr6.is_some_and(|v6| a == IpAddr::V6(v6)))
            })
        };
        let named = parsed.and_then(|(a, port)| Some((node_at(a)?, a, port)));
        if let Some((_, address, _)) = named.filter(|(n, ..)| n.name == self.me) {
            for other in self.nodes.iter().filter(|o| o.name != self.me && has_it(o.name, o.labels)) {
                let theirs = match address {
                    IpAddr::V4(_) => Some(IpAddr::V4(other.addr)),
                    IpAddr::V6(_) => other.addr6.map(IpAddr::V6),
                };
                if let Some(theirs) = theirs {
                    node_session(other, theirs, None, peers, notes);
                }
            }
            return;
        }
        if !has_it(self.me, self.my_labels) {
            return;
        }
        let Some((address, port)) = parsed else {
            notes.push(format!("{name}: peerIP {ip:?} is not an address"));
            return;
        };
        if address.is_ipv6() && self.my_addr6.is_none() {
            notes.push(format!(
                "{name}: an IPv6 peer needs this node's IPv6 address (an [ipv6] section in its config): not used"
            ));
            return;
        }
        if let Some((n, address, port)) = named {
            node_session(n, address, port, peers, notes);
            return;
        }
        // Not a session with itself (in another AS than its own, the address is still this
        // node's), nor a second one where the node has a session already: a cluster node's
        // in another AS than the BGPPeer says, whose mesh or reflector session would
        // otherwise give way to one that can never open, or another BGPPeer's.
        if address == IpAddr::V4(self.my_addr) || Some(address) == self.my_addr6.map(IpAddr::V6) {
            notes.push(format!("{name}: peerIP {ip} is this node's own address: not used here"));
            return;
        }
        if let Some(q) = peers.iter().find(|q| q.address == address) {
            notes.push(format!(
                "{name}: this node has a session with {address} already ({}, AS {}): not used here",
                q.kind, q.as_number
            ));
            return;
        }
        let reachable_by = spec.reachable_by.as_deref().and_then(|g| match g.parse::<IpAddr>() {
            Ok(g) if g.is_ipv6() == address.is_ipv6() => Some(g),
            _ => {
                notes.push(format!("{name}: reachableBy {g:?} is not an address of the peer's family: not used"));
                None
            }
        });
        let Ok(password) = password(notes) else { return };
        // As calicoctl names it: "node specific" where the BGPPeer picks its nodes.
        let kind =
            if spec.node.is_some() || spec.node_selector.is_some() { PeerKind::NodeSpecific } else { PeerKind::Global };
        peers.push(BgpPeer { port: port.unwrap_or(179), reachable_by, kind, ..common(address, password) });
    }
}

/// The BGPFilters, each with the rules of both families.
fn filters(resources: &[Resource]) -> Vec<bgp::policy::Filter> {
    let (v4, v6) = (IpNet::V4(Ipv4Net::default()), IpNet::V6(Ipv6Net::default()));
    let both = |a: &[r::FilterRule], b: &[r::FilterRule]| [rules(a, v4), rules(b, v6)].concat();
    resources
        .iter()
        .filter_map(|x| match x {
            Resource::BgpFilter(f) => Some(bgp::policy::Filter {
                name: f.metadata.name.clone(),
                export: both(&f.spec.export_v4, &f.spec.export_v6),
                import: both(&f.spec.import_v4, &f.spec.import_v6),
            }),
            _ => None,
        })
        .collect()
}

/// Whether pool `p` holds no node's address (noted where it does): such a
/// pool is left out, or the routes to that node would become pod routes, and with them the
/// cluster's sessions and tunnels (`router apply` refuses to create one).
fn holds_no_node(resources: &[Resource], p: &r::Typed<r::IpPoolSpec>, notes: &mut Vec<String>) -> bool {
    let Some((node, addr)) = p.spec.cidr.parse().ok().and_then(|net| r::node_in_pool(resources, net)) else {
        return true;
    };
    notes.push(format!(
        "ippools/{}: {} holds node {node}'s address {addr}: not used (pods would get the nodes' addresses)",
        p.metadata.name, p.spec.cidr
    ));
    false
}

/// The IPv4 pools, disabled ones too: `disabled` stops IPAM from handing out their
/// addresses, but the workloads that hold some keep their routes, tunnels and export, as
/// Calico's BIRD config keeps every pool (Calico's pool migration relies on it).
fn pools(resources: &[Resource], notes: &mut Vec<String>) -> Vec<Pool> {
    let mode = |m: Option<r::EncapMode>| match m.unwrap_or_default() {
        r::EncapMode::Never => IpipMode::Never,
        r::EncapMode::Always => IpipMode::Always,
        r::EncapMode::CrossSubnet => IpipMode::CrossSubnet,
    };
    resources
        .iter()
        .filter_map(|x| match x {
            Resource::IpPool(p) => Some(Pool {
                cidr: p.spec.cidr.parse::<Ipv4Net>().ok().filter(|_| holds_no_node(resources, p, notes))?,
                ipip_mode: mode(p.spec.ipip_mode),
                vxlan_mode: mode(p.spec.vxlan_mode),
                nat_outgoing: p.spec.nat_outgoing == Some(true),
                disable_bgp_export: p.spec.disable_bgp_export == Some(true),
            }),
            _ => None,
        })
        .collect()
}

/// The IPv6 pools (disabled ones too, as in [`pools`]), those of them with `natOutgoing`,
/// and those with `disableBGPExport`.
fn pools6(resources: &[Resource], notes: &mut Vec<String>) -> (Vec<Ipv6Net>, Vec<Ipv6Net>, Vec<Ipv6Net>) {
    let pools: Vec<(Ipv6Net, &r::IpPoolSpec)> = resources
        .iter()
        .filter_map(|x| match x {
            Resource::IpPool(p) => Some((
                p.spec.cidr.parse::<Ipv6Net>().ok().filter(|_| holds_no_node(resources, p, notes))?.trunc(),
                &p.spec,
            )),
            _ => None,
        })
        .collect();
    let with = |f: fn(&r::IpPoolSpec) -> bool| pools.iter().filter(|p| f(p.1)).map(|p| p.0).collect();
    (
        pools.iter().map(|p| p.0).collect(),
        with(|s| s.nat_outgoing == Some(true)),
        with(|s| s.disable_bgp_export == Some(true)),
    )
}

impl View {
    /// The node's BGP config with this view's cluster; the session timers are the node's own.
    pub fn bgp(&self, base: Option<&BgpConfig>, my_addr: Ipv4Addr) -> BgpConfig {
        BgpConfig {
            as_number: self.as_number,
            router_id: base.and_then(|b| b.router_id).or(Some(my_addr)),
            port: self.listen_port.unwrap_or_else(|| base.map_or(179, |b| b.port)),
            hold_time: base.map_or(90, |b| b.hold_time),
            connect_retry_secs: base.map_or(2, |b| b.connect_retry_secs),
            graceful_restart_secs: base.map_or(120, |b| b.graceful_restart_secs),
            max_stale_secs: base.map_or(300, |b| b.max_stale_secs),
            route_reflector_cluster_id: self.route_reflector_cluster_id,
            peers: self.peers.clone(),
            filters: self.filters.clone(),
            prefix_advertisements: self.prefix_advertisements.clone(),
            service_ips: self.service_ips.clone(),
            listen_all: self.listen_all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(extra: &str) -> Vec<Resource> {
        let t = lab::topology::Topology::parse(std::path::Path::new("seed"), lab::topology::SEED).expect("seed");
        let mut rs = lab::resources::from_topology(&t).resources;
        if !extra.is_empty() {
            rs.extend(datastore::resources::parse(extra).expect("extra"));
        }
        rs
    }

    #[test]
    fn the_default_configuration_s_service_ranges_are_every_node_s_to_announce() {
        let cfg = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  \
                   serviceClusterIPs:\n  - cidr: 10.96.0.0/12\n  - cidr: fd00:96::/108\n  serviceExternalIPs:\n  \
                   - cidr: 10.96.0.0/12\n  serviceLoadBalancerIPs:\n  - cidr: 198.51.100.16/28\n\
                   ---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-a\nspec:\n  \
                   serviceClusterIPs:\n  - cidr: 10.200.0.0/16\n";
        let mut rs = seed("");
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        rs.extend(datastore::resources::parse(cfg).expect("config"));
        // What `apply` refuses may still be in etcd, written by other means.
        for x in &mut rs {
            if let Resource::BgpConfiguration(c) = x {
                if let Some(l) = c.spec.service_external_ips.as_mut() {
                    l.push(r::ServiceIp { cidr: "nonsense".into() });
                }
            }
        }
        let a: Ipv4Addr = "192.168.100.100".parse().expect("ip");
        let v = view(&rs, "node-a", a, None);
        let want: Vec<IpNet> =
            ["10.96.0.0/12", "fd00:96::/108", "198.51.100.16/28"].iter().map(|n| n.parse().expect("net")).collect();
        assert_eq!(v.service_ips, want, "once each, the node's own configuration not counted");
        assert_eq!(v.bgp(None, a).service_ips, want);
        assert!(v.notes.iter().any(|n| n.contains("\"nonsense\" is not a CIDR")), "{:?}", v.notes);
    }

    #[test]
    fn a_peer_s_password_comes_from_its_secret_and_without_one_the_peer_waits() {
        let a: Ipv4Addr = "192.168.100.100".parse().expect("ip");
        let peers = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.168.100.1\n  asNumber: 65001\n  password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: tor\n\
                     ---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: far\nspec:\n  node: node-c\n  peerIP: 192.168.200.1\n  asNumber: 65002\n  password:\n    secretKeyRef:\n      name: other\n      key: far\n";
        let rs = seed(peers);
        let secrets = |n: &str, k: &str| match (n, k) {
            ("bgp-secrets", "tor") => Ok("s3cret".to_string()),
            _ => Err(format!("{n}/{k} does not exist")),
        };
        let v = view_with(&rs, "node-a", a, None, &secrets);
        let tor = v.peers.iter().find(|p| p.kind == PeerKind::Global).expect("the peer with its password");
        assert_eq!(tor.password.as_deref(), Some("s3cret"));
        assert!(v.peers.iter().filter(|p| p.kind == PeerKind::Mesh).all(|p| p.password.is_none()));
        // Only the node that has the peer reads its secret (node-a has no session with "far").
        assert!(v.notes.is_empty(), "{:?}", v.notes);
        // A secret that cannot be read: no session at all, rather than one without the key.
        let c = view_with(&rs, "node-c", "192.168.200.101".parse().expect("ip"), None, &secrets);
        let far: IpAddr = "192.168.200.1".parse().expect("ip");
        assert!(c.peers.iter().all(|p| p.address != far), "{:?}", c.peers);
        assert!(c.peers.iter().any(|p| p.password.as_deref() == Some("s3cret")), "tor is every node's");
        assert!(
            c.notes.iter().any(|n| n.contains("bgppeers/far") && n.contains("other/far does not exist")),
            "{:?}",
            c.notes
        );
        let none = view(&rs, "node-a", a, None);
        assert!(none.peers.iter().all(|p| p.kind == PeerKind::Mesh));
        assert!(none.notes.iter().any(|n| n.contains("no secrets_dir")), "{:?}", none.notes);
        // With peerSelector, both ends of each session it makes use the password.
        let sel = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: rack\nspec:\n  nodeSelector: all()\n  peerSelector: all()\n  password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: tor\n\
                   ---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n";
        let mut rs = seed("");
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        rs.extend(datastore::resources::parse(sel).expect("sel"));
        for (me, addr) in [("node-a", a), ("node-c", "192.168.200.101".parse().expect("ip"))] {
            let v = view_with(&rs, me, addr, None, &secrets);
            assert_eq!(v.peers.len(), 2, "{me}: {:?}", v.peers);
            assert!(v.peers.iter().all(|p| p.password.as_deref() == Some("s3cret")), "{me}: {:?}", v.peers);
        }
    }

    #[test]
    fn the_mesh_password_keys_every_mesh_session_and_without_it_the_mesh_waits() {
        // Calico's "Secure BGP sessions" example, with an outside peer beside the mesh.
        let docs = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  logSeverityScreen: Info\n  nodeToNodeMeshEnabled: true\n  nodeMeshPassword:\n    secretKeyRef:\n      name: bgp-secrets\n      key: rr-password\n\
                    ---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.168.100.1\n  asNumber: 65001\n";
        let mut rs = seed("");
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        rs.extend(datastore::resources::parse(docs).expect("Calico's example"));
        let a: Ipv4Addr = "192.168.100.100".parse().expect("ip");
        let secrets = |n: &str, k: &str| match (n, k) {
            ("bgp-secrets", "rr-password") => Ok("m3sh".to_string()),
            _ => Err(format!("{n}/{k} does not exist")),
        };
        let v = view_with(&rs, "node-a", a, None, &secrets);
        let keys: Vec<(PeerKind, Option<&str>)> = v.peers.iter().map(|p| (p.kind, p.password.as_deref())).collect();
        assert_eq!(keys, [(PeerKind::Mesh, Some("m3sh")), (PeerKind::Mesh, Some("m3sh")), (PeerKind::Global, None)]);
        assert!(v.notes.is_empty(), "{:?}", v.notes);
        // Unreadable: no mesh session rather than one without its key; the outside peer stays.
        let v = view(&rs, "node-a", a, None);
        assert_eq!(v.peers.iter().map(|p| p.kind).collect::<Vec<_>>(), [PeerKind::Global]);
        assert!(
            v.notes.iter().any(|n| n.contains("nodeMeshPassword") && n.contains("the mesh sessions wait")),
            "{:?}",
            v.notes
        );
        // `optional`, as Kubernetes has it: without the secret, the mesh runs unsigned.
        let optional = docs.replace("key: rr-password\n", "key: rr-password\n      optional: true\n");
        let mut rs = seed("");
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        rs.extend(datastore::resources::parse(&optional).expect("optional"));
        let v = view(&rs, "node-a", a, None);
        let keys: Vec<(PeerKind, Option<&str>)> = v.peers.iter().map(|p| (p.kind, p.password.as_deref())).collect();
        assert_eq!(keys, [(PeerKind::Mesh, None), (PeerKind::Mesh, None), (PeerKind::Global, None)]);
        assert!(
            v.notes.iter().any(|n| n.contains("optional, so the mesh sessions run without TCP-MD5")),
            "{:?}",
            v.notes
        );
        // The lab's topology key becomes the same resource and secret.
        let topo = lab::topology::SEED.replace("[cluster]\n", "[cluster]\nnode_mesh_password = \"m3sh\"\n");
        let t = lab::topology::Topology::parse(std::path::Path::new("seed"), &topo).expect("topology");
        assert_eq!(t.node_mesh_password.as_deref(), Some("m3sh"));
        let all = lab::resources::from_topology(&t);
        assert_eq!(all.secrets, [(lab::resources::MESH_KEY.to_string(), "m3sh".to_string())]);
        let lab_secrets = |n: &str, k: &str| {
            all.secrets
                .iter()
                .find(|(key, _)| n == lab::resources::SECRET && key == k)
                .map(|(_, pw)| pw.clone())
                .ok_or_else(|| "none".to_string())
        };
        let v = view_with(&all.resources, "node-c", "192.168.200.101".parse().expect("ip"), None, &lab_secrets);
        assert!(v.peers.len() == 2 && v.peers.iter().all(|p| p.password.as_deref() == Some("m3sh")), "{:?}", v.peers);
    }

    #[test]
    fn the_seed_as_resources_gives_each_node_the_lab_s_sessions() {
        let a: Ipv4Addr = "192.168.100.100".parse().expect("ip");
        let v = view(&seed(""), "node-a", a, None);
        assert_eq!(v.as_number, 64512);
        assert_eq!(v.peers.len(), 2);
        assert!(v.peers.iter().all(|p| p.kind == PeerKind::Mesh && !p.passive), "{:?}", v.peers);
        assert_eq!(
            v.pools,
            vec![Pool {
                cidr: "10.244.0.0/16".parse().expect("net"),
                ipip_mode: IpipMode::CrossSubnet,
                vxlan_mode: IpipMode::Never,
                nat_outgoing: false,
                disable_bgp_export: false,
            }]
        );
        assert_eq!(v.nodes.len(), 2);
        let c = view(&seed(""), "node-c", "192.168.200.101".parse().expect("ip"), None);
        assert!(c.peers.iter().all(|p| p.passive), "node-c has the highest address");
        // listenPort: where this node listens and where it reaches the other nodes; an
        // outside router keeps its own port.
        let port = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  listenPort: 1179\n\
                    ---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.168.100.1\n  asNumber: 65001\n";
        let mut rs = seed("");
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        rs.extend(datastore::resources::parse(port).expect("port"));
        let v = view(&rs, "node-a", a, None);
        assert_eq!(v.bgp(None, a).port, 1179);
        let ports: Vec<(PeerKind, u16)> = v.peers.iter().map(|p| (p.kind, p.port)).collect();
        assert_eq!(ports, [(PeerKind::Mesh, 1179), (PeerKind::Mesh, 1179), (PeerKind::Global, 179)]);
        // The reflector topology as resources (with Calico's peerSelector for the
        // reflectors): one session per client, two at the reflector.
        let t = lab::topology::Topology::parse(std::path::Path::new("rr"), lab::topology::SEED_RR).expect("rr");
        let rs = lab::resources::from_topology(&t).resources;
        let b = view(&rs, "node-b", "192.168.100.101".parse().expect("ip"), None);
        assert_eq!(b.peers.iter().map(|p| p.kind).collect::<Vec<_>>(), [PeerKind::RouteReflector]);
        let a = view(&rs, "node-a", a, None);
        assert_eq!(a.peers.iter().map(|p| p.kind).collect::<Vec<_>>(), [PeerKind::RouteReflectorClient; 2]);
    }

    #[test]
    fn a_dual_stack_cluster_gives_ipv6_pools_node_addresses_and_filter_rules() {
        let t =
            lab::topology::Topology::parse_with(std::path::Path::new("seed"), lab::topology::SEED, true).expect("dual");
        let mut rs = lab::resources::from_topology(&t).resources;
        let extra = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: off\nspec:\n  cidr: fd00:99::/48\n  disabled: true\n\
---\napiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: f\nspec:\n  exportV6:\n  - action: Reject\n  importV4:\n  - action: Accept\n    matchOperator: In\n    cidr: 10.0.0.0/8\n  importV6:\n  - action: Reject\n    matchOperator: Equal\n    cidr: fd00:98::/48\n";
        rs.extend(datastore::resources::parse(extra).expect("extra"));
        let v = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        let net6 = |s: &str| s.parse::<Ipv6Net>().expect("net");
        assert_eq!(
            v.pools6,
            vec![net6("fd00:10:244::/48"), net6("fd00:99::/48")],
            "a disabled pool still routes what it holds"
        );
        assert_eq!(v.pools.len(), 1);
        let others: Vec<Ipv6Addr> =
            ["fd00:192:168:100::101", "fd00:192:168:200::101"].iter().map(|a| a.parse().expect("ip")).collect();
        assert_eq!(v.nodes6, others, "every other node's IPv6 address, not this node's");
        let f = &v.filters[0];
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        // A rule without a CIDR matches its own family only.
        assert_eq!(f.export.len(), 1);
        assert!(f.export[0].matches(&net("fd00:1::/64")) && !f.export[0].matches(&net("10.0.0.0/8")));
        assert_eq!(f.import.iter().map(|r| r.cidr).collect::<Vec<_>>(), vec![net("10.0.0.0/8"), net("fd00:98::/48")]);
        assert!(v.notes.is_empty(), "{:?}", v.notes);
        // An IPv4-only cluster has no IPv6 side.
        let v4 = view(&seed(""), "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert!(v4.pools6.is_empty() && v4.nodes6.is_empty());
        // IPv6 BGPPeers in Calico's forms, with and without a port: sessions over IPv6 on a
        // node with an IPv6 address, a note on one without.
        let peers = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor6\nspec:\n  peerIP: fd00:192:168:100::1\n  asNumber: 65001\n\
---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: edge6\nspec:\n  peerIP: \"[fd00:192:168:100::2]:1179\"\n  asNumber: 65002\n";
        rs.extend(datastore::resources::parse(peers).expect("peers"));
        let me = "192.168.100.100".parse().expect("ip");
        let v = view(&rs, "node-a", me, Some("fd00:192:168:100::100".parse().expect("ip")));
        let outside: Vec<(String, u16)> =
            v.peers.iter().filter(|p| p.kind == PeerKind::Global).map(|p| (p.address.to_string(), p.port)).collect();
        assert_eq!(outside, [("fd00:192:168:100::1".to_string(), 179), ("fd00:192:168:100::2".to_string(), 1179)]);
        let v = view(&rs, "node-a", me, None);
        assert!(v.peers.iter().all(|p| p.address.is_ipv4()), "{:?}", v.peers);
        assert!(v.notes.iter().any(|n| n.contains("bgppeers/tor6: an IPv6 peer needs")), "{:?}", v.notes);
    }

    #[test]
    fn mesh_off_with_a_reflector_and_an_external_peer() {
        let extra = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  asNumber: 64512\n  nodeToNodeMeshEnabled: false\n\
---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-a\nspec:\n  bgp:\n    ipv4Address: 192.168.100.100/24\n    routeReflectorClusterID: 224.0.0.1\n\
---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  node: node-b\n  peerIP: 192.168.100.250\n  asNumber: 64600\n";
        let mut rs = seed("");
        // The later documents replace the seed's of the same kind and name.
        let over = datastore::resources::parse(extra).expect("extra");
        rs.retain(|x| !over.iter().any(|o| o.kind() == x.kind() && o.name() == x.name()));
        rs.extend(over);
        let a = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert_eq!(a.route_reflector_cluster_id, Some("224.0.0.1".parse().expect("id")));
        assert!(a.peers.iter().all(|p| p.kind == PeerKind::RouteReflectorClient), "{:?}", a.peers);
        let b = view(&rs, "node-b", "192.168.100.101".parse().expect("ip"), None);
        let kinds: Vec<(PeerKind, bool)> = b.peers.iter().map(|p| (p.kind, p.external)).collect();
        // A BGPPeer with a node is "node specific" to calicoctl, and still an outside router.
        assert_eq!(kinds, vec![(PeerKind::RouteReflector, false), (PeerKind::NodeSpecific, true)], "{:?}", b.peers);
        let c = view(&rs, "node-c", "192.168.200.101".parse().expect("ip"), None);
        assert_eq!(c.peers.len(), 1, "clients do not peer with each other: {:?}", c.peers);
    }

    #[test]
    fn restart_keepalive_and_local_as_settings_reach_the_sessions_they_concern() {
        let extra = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeMeshMaxRestartTime: 1m30s\n\
---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.168.100.250\n  asNumber: 64600\n  maxRestartTime: 45s\n  keepaliveTime: 2500ms\n  numAllowedLocalASNumbers: 2\n  nextHopMode: Keep\n\
---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: odd\nspec:\n  peerIP: 192.168.100.251\n  asNumber: 64601\n  keepaliveTime: 5s\n  nextHopMode: Auto\n";
        let mut rs = seed("");
        let mut over = datastore::resources::parse(extra).expect("extra");
        if let Some(Resource::BgpPeer(odd)) = over.last_mut() {
            odd.spec.keepalive_time = Some("soon".into());
        }
        rs.retain(|x| !over.iter().any(|o| o.kind() == x.kind() && o.name() == x.name()));
        rs.extend(over);
        let a = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        let got: Vec<(PeerKind, Option<u16>, Option<u16>, u8)> =
            a.peers.iter().map(|p| (p.kind, p.restart_time, p.keepalive_time, p.allow_local_as)).collect();
        assert_eq!(
            got,
            vec![
                (PeerKind::Mesh, Some(90), None, 0),
                (PeerKind::Mesh, Some(90), None, 0),
                (PeerKind::Global, Some(45), Some(2), 2),
                (PeerKind::Global, None, None, 0),
            ]
        );
        // A value `apply` would have refused, written to etcd some other way, is noted.
        assert!(a.notes.iter().any(|n| n.contains("bgppeers/odd: spec.keepaliveTime")), "{:?}", a.notes);
        // nextHopMode Keep is keepOriginalNextHop; Auto, the default, is not.
        let keep: Vec<bool> = a.peers.iter().map(|p| p.keep_original_next_hop).collect();
        assert_eq!(keep, [false, false, true, false]);
    }

    #[test]
    fn a_node_s_own_as_makes_its_sessions_with_the_others_ebgp() {
        let mut rs = seed("");
        for r in rs.iter_mut() {
            if let Resource::Node(n) = r {
                if n.metadata.name == "node-c" {
                    n.spec.bgp.as_mut().expect("bgp").as_number = Some(64513);
                }
            }
        }
        let asns = |v: &View| v.peers.iter().map(|p| p.as_number).collect::<Vec<u32>>();
        let a = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert_eq!((a.as_number, asns(&a)), (64512, vec![64512, 64513]));
        let c = view(&rs, "node-c", "192.168.200.101".parse().expect("ip"), None);
        assert_eq!((c.as_number, asns(&c)), (64513, vec![64512, 64512]));
        assert!(c.notes.is_empty(), "{:?}", c.notes);
    }

    #[test]
    fn a_node_s_own_bgp_configuration_overrides_port_advertisements_and_log_level() {
        let extra = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  logSeverityScreen: Warning\n  listenPort: 1179\n\
---\napiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: node.node-c\nspec:\n  logSeverityScreen: Debug\n  listenPort: 1790\n  communities:\n  - name: rack\n    value: 64512:7\n  prefixAdvertisements:\n  - cidr: 10.244.3.0/26\n    communities: [rack]\n";
        let mut rs = seed("");
        let over = datastore::resources::parse(extra).expect("extra");
        rs.retain(|x| !over.iter().any(|o| o.kind() == x.kind() && o.name() == x.name()));
        rs.extend(over);
        let a = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        let ports: Vec<u16> = a.peers.iter().map(|p| p.port).collect();
        assert_eq!((a.listen_port, ports, a.log_level), (Some(1179), vec![1179, 1790], Some("warn")));
        assert!(a.prefix_advertisements.is_empty());
        let c = view(&rs, "node-c", "192.168.200.101".parse().expect("ip"), None);
        assert_eq!((c.listen_port, c.log_level), (Some(1790), Some("debug")));
        assert_eq!(
            c.prefix_advertisements,
            vec![PrefixAdvertisement {
                cidr: "10.244.3.0/26".parse().expect("net"),
                communities: vec![64512 << 16 | 7]
            }]
        );
    }

    #[test]
    fn selectors_pick_which_nodes_have_a_peer_and_which_nodes_are_peers() {
        let res = |kind: &str, name: &str, labels: &str, spec: &str| {
            format!(
                "---\napiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: {name}\n{labels}spec:\n{spec}"
            )
        };
        let node = |name: &str, addr: &str, labels: &str| {
            res("Node", name, &format!("  labels:\n{labels}"), &format!("  bgp:\n    ipv4Address: {addr}\n"))
        };
        let extra = [
            res("BGPConfiguration", "default", "", "  nodeToNodeMeshEnabled: false\n"),
            node("node-a", "192.168.100.100/24", "    rack: r1\n"),
            node("node-b", "192.168.100.101/24", "    rack: r1\n"),
            node("node-c", "192.168.200.101/24", "    rack: r2\n"),
            // The nodes of rack r1 peer with each other, and with their top-of-rack router.
            res("BGPPeer", "rack-r1", "", "  nodeSelector: rack == 'r1'\n  peerSelector: rack == 'r1'\n"),
            res("BGPPeer", "tor-r1", "", "  nodeSelector: rack == 'r1'\n  peerIP: 192.168.100.1\n  asNumber: 65001\n"),
        ]
        .concat();
        let mut rs = seed("");
        let over = datastore::resources::parse(&extra).expect("extra");
        rs.retain(|x| !over.iter().any(|o| o.kind() == x.kind() && o.name() == x.name()));
        rs.extend(over.clone());
        let at = |rs: &[Resource], name: &str, addr: &str| {
            let v = view(rs, name, addr.parse().expect("ip"), None);
            assert!(v.notes.is_empty(), "{:?}", v.notes);
            v.peers.iter().map(|p| (p.address.to_string(), p.kind, p.passive)).collect::<Vec<_>>()
        };
        let a = at(&rs, "node-a", "192.168.100.100");
        assert_eq!(
            a,
            [
                ("192.168.100.101".into(), PeerKind::NodeSpecific, false),
                ("192.168.100.1".into(), PeerKind::NodeSpecific, false)
            ]
        );
        let outside = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert_eq!(outside.peers.iter().map(|p| p.external).collect::<Vec<_>>(), [false, true]);
        let b = at(&rs, "node-b", "192.168.100.101");
        assert_eq!(b[0], ("192.168.100.100".into(), PeerKind::NodeSpecific, true), "the higher address waits");
        assert!(at(&rs, "node-c", "192.168.200.101").is_empty(), "node-c is in rack r2");

        // Both ends of a selected pair have the session: rack r1's nodes peer with the edge
        // node, and the edge node, which the nodeSelector does not pick, with them.
        let edge = res("BGPPeer", "rack-r1", "", "  nodeSelector: rack == 'r1'\n  peerSelector: rack == 'r2'\n");
        let mut rs2 = rs.clone();
        rs2.retain(|x| x.name() != "rack-r1");
        rs2.extend(datastore::resources::parse(&edge).expect("edge"));
        let c = at(&rs2, "node-c", "192.168.200.101");
        assert_eq!(
            c,
            [
                ("192.168.100.100".into(), PeerKind::NodeSpecific, true),
                ("192.168.100.101".into(), PeerKind::NodeSpecific, true)
            ]
        );
        let a = at(&rs2, "node-a", "192.168.100.100");
        assert!(a.contains(&("192.168.200.101".into(), PeerKind::NodeSpecific, false)), "{a:?}");

        // Calico's route reflector setup: every node peers with the nodes labelled as
        // reflectors, which are clients to none but each other.
        let rr = [
            res("BGPConfiguration", "default", "", "  nodeToNodeMeshEnabled: false\n"),
            res(
                "Node",
                "node-c",
                "  labels:\n    route-reflector: 'true'\n",
                "  bgp:\n    ipv4Address: 192.168.200.101/24\n    routeReflectorClusterID: 224.0.0.1\n",
            ),
            res(
                "BGPPeer",
                "peer-with-route-reflectors",
                "",
                "  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n",
            ),
        ]
        .concat();
        let mut rs = seed("");
        let over = datastore::resources::parse(&rr).expect("rr");
        rs.retain(|x| !over.iter().any(|o| o.kind() == x.kind() && o.name() == x.name()));
        rs.extend(over);
        let a = at(&rs, "node-a", "192.168.100.100");
        assert_eq!(a, [("192.168.200.101".into(), PeerKind::RouteReflector, false)], "one session, not two");
        let c = at(&rs, "node-c", "192.168.200.101");
        assert!(c.iter().all(|p| p.1 == PeerKind::RouteReflectorClient) && c.len() == 2, "{c:?}");

        // A selector that does not parse is named, and picks nothing.
        let bad =
            res("BGPPeer", "bad", "", "  nodeSelector: rack = 'r1'\n  peerIP: 192.168.100.1\n  asNumber: 65001\n");
        let mut rs = seed("");
        rs.extend(datastore::resources::parse(&bad.replace("rack = ", "rack == ")).expect("valid"));
        let r::Resource::BgpPeer(p) = rs.last_mut().expect("peer") else { unreachable!() };
        p.spec.node_selector = Some("rack = 'r1'".into());
        let v = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert!(v.notes.iter().any(|n| n.contains("bgppeers/bad: selector")), "{:?}", v.notes);
        assert!(v.peers.iter().all(|p| p.kind != PeerKind::Global));
    }

    #[test]
    fn a_pool_that_holds_a_node_s_address_is_left_out_with_a_note() {
        let pool = |name: &str, cidr: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n"
            )
        };
        let mut rs = seed(&format!("{}---\n{}", pool("underlay", "192.168.0.0/16"), pool("v6", "fd00:192:168::/48")));
        // node-c with an IPv6 address inside the IPv6 pool.
        for x in rs.iter_mut() {
            if let Resource::Node(n) = x {
                if n.metadata.name == "node-c" {
                    n.spec.bgp.as_mut().expect("bgp").ipv6_address = Some("fd00:192:168:200::101/64".into());
                }
            }
        }
        let v = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert_eq!(v.pools.iter().map(|p| p.cidr.to_string()).collect::<Vec<_>>(), ["10.244.0.0/16"]);
        assert!(v.pools6.is_empty(), "{:?}", v.pools6);
        assert_eq!(
            v.notes,
            [
                "ippools/v6: fd00:192:168::/48 holds node node-c's address fd00:192:168:200::101: not used (pods would get the nodes' addresses)",
                "ippools/underlay: 192.168.0.0/16 holds node node-a's address 192.168.100.100: not used (pods would get the nodes' addresses)",
            ]
        );
    }

    #[test]
    fn a_peer_ip_at_a_node_peers_the_two_nodes_from_both_ends() {
        let peer = |spec: &str| {
            format!(
                "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n\
                 ---\napiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: a-to-c\nspec:\n{spec}"
            )
        };
        let cluster = |extra: &str| {
            let mut rs = seed("");
            let over = datastore::resources::parse(extra).expect("extra");
            rs.retain(|x| !over.iter().any(|o| o.kind() == x.kind() && o.name() == x.name()));
            rs.extend(over);
            rs
        };
        let at = |rs: &[Resource], name: &str, addr: &str| {
            let v = view(rs, name, addr.parse().expect("ip"), None);
            assert!(v.notes.is_empty(), "{:?}", v.notes);
            v.peers.iter().map(|p| (p.address.to_string(), p.kind, p.external, p.passive)).collect::<Vec<_>>()
        };
        // node-a names node-c by its address: a session between nodes, which node-c, which
        // no BGPPeer gives a session of its own, opens from its end too, as Calico's nodes do.
        let rs = cluster(&peer("  node: node-a\n  peerIP: 192.168.200.101\n  asNumber: 64512\n"));
        let a = at(&rs, "node-a", "192.168.100.100");
        assert_eq!(a, [("192.168.200.101".into(), PeerKind::NodeSpecific, false, false)]);
        let c = at(&rs, "node-c", "192.168.200.101");
        assert_eq!(c, [("192.168.100.100".into(), PeerKind::NodeSpecific, false, true)], "the higher address waits");
        assert!(at(&rs, "node-b", "192.168.100.101").is_empty());

        // Without a node, every node peers with node-c, and node-c with every node; never
        // with itself.
        let rs = cluster(&peer("  peerIP: 192.168.200.101\n  asNumber: 64512\n"));
        assert_eq!(
            at(&rs, "node-b", "192.168.100.101"),
            [("192.168.200.101".into(), PeerKind::NodeSpecific, false, false)]
        );
        let c = at(&rs, "node-c", "192.168.200.101");
        assert_eq!(c.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["192.168.100.100", "192.168.100.101"]);

        // In another AS than node-c's, the address is not node-c's: an outside router.
        let rs = cluster(&peer("  node: node-a\n  peerIP: 192.168.200.101\n  asNumber: 65001\n"));
        assert_eq!(
            at(&rs, "node-a", "192.168.100.100"),
            [("192.168.200.101".into(), PeerKind::NodeSpecific, true, false)]
        );
        assert!(at(&rs, "node-c", "192.168.200.101").is_empty());

        // A global peer at node-a's address in another AS: never a session with itself, and
        // at the other nodes it does not take the place of their mesh session with node-a.
        let mut rs = cluster(&peer("  peerIP: 192.168.100.100\n  asNumber: 65001\n"));
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        let v = view(&rs, "node-a", "192.168.100.100".parse().expect("ip"), None);
        assert!(v.peers.iter().all(|p| p.address.to_string() != "192.168.100.100"), "{:?}", v.peers);
        assert_eq!(v.notes, ["bgppeers/a-to-c: peerIP 192.168.100.100 is this node's own address: not used here"]);
        let v = view(&rs, "node-c", "192.168.200.101".parse().expect("ip"), None);
        let to_a: Vec<_> = v.peers.iter().filter(|p| p.address.to_string() == "192.168.100.100").collect();
        assert_eq!(to_a.iter().map(|p| (p.kind, p.as_number)).collect::<Vec<_>>(), [(PeerKind::Mesh, 64512)]);
        assert_eq!(
            v.notes,
            ["bgppeers/a-to-c: this node has a session with 192.168.100.100 already (node-to-node mesh, AS 64512): not used here"]
        );

        // With the mesh on, the mesh's session stays the only one.
        let mut rs = cluster(&peer("  node: node-a\n  peerIP: 192.168.200.101\n  asNumber: 64512\n"));
        rs.retain(|x| x.kind() != r::Kind::BgpConfiguration);
        let a = at(&rs, "node-a", "192.168.100.100");
        assert_eq!(a.iter().filter(|p| p.0 == "192.168.200.101").map(|p| p.1).collect::<Vec<_>>(), [PeerKind::Mesh]);
    }

    #[test]
    fn filter_rules_keep_to_their_family_and_prefix_lengths() {
        let f = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: g\nspec:\n\
                 \x20 importV4:\n  - action: Reject\n    matchOperator: NotIn\n    cidr: 10.0.0.0/8\n\
                 \x20 exportV4:\n  - action: Accept\n    matchOperator: In\n    cidr: 77.0.0.0/16\n    prefixLength:\n      min: 30\n\
                 \x20 - action: Reject\n    source: RemotePeers\n";
        let v = view(&seed(f), "node-a", "192.168.100.100".parse().expect("ip"), None);
        let g = v.filters.iter().find(|x| x.name == "g").expect("filter g");
        let net = |s: &str| s.parse::<IpNet>().expect("net");
        // An IPv4 rule leaves IPv6 routes to the IPv6 rules (none here: the defaults).
        assert!(g.import[0].matches(&net("11.0.0.0/8")) && !g.import[0].matches(&net("fd00:99::/48")));
        let got = ["77.0.1.0/30", "77.0.1.1/32", "77.0.1.0/24"].map(|p| g.export[0].matches(&net(p)));
        assert_eq!(got, [true, true, false]);
        // A rule without a CIDR speaks of every route of its family; source: RemotePeers only
        // of learned ones.
        assert!(g.export[1].applies(&net("10.244.2.0/26"), true) && !g.export[1].applies(&net("10.244.1.0/26"), false));
    }
}
