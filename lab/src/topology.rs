//! The lab topology file: underlay subnets, nodes with their pod blocks, and pods.
//! Everything is checked up front; an error names the file, the line and what is wrong.

use ipnet::{Ipv4Net, Ipv6Net};
use nodeapi::fileerr::{self, FileError, Source};
use serde::Deserialize;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use toml::Spanned;

/// The seed topology shipped with the project (docs/lab.md).
pub const SEED: &str = include_str!("../topologies/seed.toml");
/// The seed with node-a as route reflector instead of a full mesh.
pub const SEED_RR: &str = include_str!("../topologies/seed-rr.toml");

#[derive(Debug, Clone)]
pub struct Topology {
    pub pool: Ipv4Net,
    pub block_size: u8,
    /// Dual stack: the IPv6 pool (absent: IPv4 only) and its block size (Calico's /122).
    pub pool_v6: Option<Ipv6Net>,
    pub block_size_v6: u8,
    pub as_number: u32,
    /// The pool's `ipipMode` (Calico's names).
    pub ipip_mode: nodeapi::config::IpipMode,
    /// The pool's `vxlanMode`; a pool uses IPIP or VXLAN, not both.
    pub vxlan_mode: nodeapi::config::IpipMode,
    /// The (IPv4) pool's `natOutgoing`: pods reach what lies outside the pools with their
    /// node's address.
    pub nat_outgoing: bool,
    /// The IPv6 pool's `natOutgoing` (off by default, as Calico's default IPv6 pool has it).
    pub nat_outgoing_v6: bool,
    /// Calico's BGPConfiguration.nodeToNodeMeshEnabled.
    pub node_to_node_mesh: bool,
    /// BGP hold time the nodes propose (seconds; short values make failover tests quick).
    pub bgp_hold_time: u16,
    /// Calico's BGPConfiguration.nodeMeshMaxRestartTime: the graceful-restart time (seconds)
    /// nodes announce to their mesh peers (absent: 120).
    pub node_mesh_max_restart_time: Option<u16>,
    /// Calico's BGPConfiguration.nodeMeshPassword: the TCP-MD5 key of every mesh session.
    pub node_mesh_password: Option<String>,
    pub bgp_peers: Vec<BgpPeerSpec>,
    /// Calico's BGPFilters, named by `[[bgp_peers]]`.
    pub bgp_filters: Vec<bgp::policy::Filter>,
    /// Communities attached to exported routes (BGPConfiguration.prefixAdvertisements).
    pub prefix_advertisements: Vec<nodeapi::config::PrefixAdvertisement>,
    /// The pool's `disableBGPExport`: announced to no `[[bgp_peers]]` router.
    pub disable_bgp_export: bool,
    /// Service ranges every node announces (BGPConfiguration.serviceClusterIPs,
    /// serviceExternalIPs, serviceLoadBalancerIPs).
    pub service_cluster_ips: Vec<ipnet::IpNet>,
    pub service_external_ips: Vec<ipnet::IpNet>,
    pub service_load_balancer_ips: Vec<ipnet::IpNet>,
    pub subnets: Vec<Subnet>,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
pub struct Subnet {
    pub name: String,
    pub prefix: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub mtu: u16,
    /// Dual stack: the subnet's IPv6 prefix and the underlay router's address on it.
    pub v6: Option<(Ipv6Net, Ipv6Addr)>,
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// The node's address with its subnet's prefix length.
    pub address: Ipv4Net,
    /// Index into `Topology::subnets`.
    pub subnet: usize,
    pub block: Ipv4Net,
    pub pods: Vec<Pod>,
    /// Dual stack: the node's IPv6 address on its subnet and its IPv6 block.
    pub v6: Option<(Ipv6Net, Ipv6Net)>,
    /// Calico's Node.spec.bgp.routeReflectorClusterID: this node is a route reflector.
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    /// Calico's Node.spec.bgp.asNumber: the node's own AS instead of the cluster's; its
    /// sessions with nodes of another AS are eBGP (Calico's AS-per-rack designs).
    pub as_number: Option<u32>,
}

/// Calico's BGPPeer: an external router some or all nodes peer with.
#[derive(Debug, Clone)]
pub struct BgpPeerSpec {
    /// An IPv6 address (dual-stack labs): a session over IPv6, for IPv6 routes.
    pub peer_ip: IpAddr,
    pub as_number: u32,
    /// Only this node peers (absent: every node).
    pub node: Option<String>,
    pub password: Option<String>,
    /// Calico's BGPPeer.ttlSecurity: GTSM (RFC 5082) with the peer this many hops away.
    pub ttl_security: Option<u8>,
    /// Names of the BGPFilters applied, in order.
    pub filters: Vec<String>,
    /// Shut the session down when the peer sends more prefixes than this.
    pub max_prefixes: Option<u32>,
    /// Calico's BGPPeer.maxRestartTime in seconds: the graceful-restart time announced to it.
    pub max_restart_time: Option<u16>,
    /// Calico's BGPPeer.keepaliveTime in seconds.
    pub keepalive_time: Option<u16>,
    /// Calico's BGPPeer.numAllowedLocalASNumbers: times the cluster's AS may appear in the
    /// AS_PATH of the peer's routes.
    pub num_allowed_local_as_numbers: u8,
    /// Calico's BGPPeer.keepOriginalNextHop: other nodes' blocks go to this eBGP peer with
    /// their owner as next hop.
    pub keep_original_next_hop: bool,
    /// Calico's BGPPeer.reachableBy: the gateway (on the peering node's subnet) through
    /// which a peer that is not on it is reached.
    pub reachable_by: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub name: String,
    pub address: Ipv4Addr,
    /// Dual stack: the pod's IPv6 address (a /128), from its node's IPv6 block.
    pub address_v6: Option<Ipv6Addr>,
    /// Host end of the pod's veth pair: `cali` + 11 hex digits of SHA-1 of the pod's name.
    pub iface: String,
}

/// Calico's host-side interface name for a pod (the CNI plugin's rule).
pub use cni::cali_name;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    cluster: RawCluster,
    #[serde(default)]
    subnets: Vec<RawSubnet>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default)]
    bgp_peers: Vec<RawBgpPeer>,
    #[serde(default)]
    bgp_filters: Vec<nodeapi::config::RawFilter>,
    #[serde(default)]
    prefix_advertisements: Vec<nodeapi::config::RawPrefixAdvertisement>,
    #[serde(default)]
    communities: Vec<nodeapi::config::RawCommunity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    pool: Spanned<String>,
    #[serde(default = "default_block_size")]
    block_size: Spanned<u8>,
    #[serde(default = "default_as")]
    as_number: Spanned<u32>,
    #[serde(default)]
    ipip_mode: nodeapi::config::IpipMode,
    #[serde(default = "never")]
    vxlan_mode: Spanned<nodeapi::config::IpipMode>,
    #[serde(default)]
    nat_outgoing: bool,
    #[serde(default)]
    nat_outgoing_v6: bool,
    #[serde(default)]
    disable_bgp_export: bool,
    #[serde(default)]
    service_cluster_ips: Vec<Spanned<String>>,
    #[serde(default)]
    service_external_ips: Vec<Spanned<String>>,
    #[serde(default)]
    service_load_balancer_ips: Vec<Spanned<String>>,
    #[serde(default = "default_true")]
    node_to_node_mesh: bool,
    #[serde(default = "default_hold")]
    bgp_hold_time: Spanned<u16>,
    #[serde(default)]
    node_mesh_max_restart_time: Option<Spanned<u16>>,
    #[serde(default)]
    node_mesh_password: Option<Spanned<String>>,
    #[serde(default)]
    pool_v6: Option<Spanned<String>>,
    #[serde(default = "default_block_size_v6")]
    block_size_v6: Spanned<u8>,
}

/// `node_mesh_password`, checked: a key for sessions that exist (as Calico refuses it with
/// the mesh off), of a length Linux takes.
fn mesh_password(src: &Source<'_>, c: &RawCluster) -> Result<Option<String>, FileError> {
    let Some(pw) = &c.node_mesh_password else { return Ok(None) };
    if !c.node_to_node_mesh {
        return Err(src.error_at(pw.span(), "node_mesh_password needs the mesh (node_to_node_mesh = true)"));
    }
    if pw.get_ref().is_empty() || pw.get_ref().len() > nodeapi::secrets::MAX_PASSWORD {
        let most = nodeapi::secrets::MAX_PASSWORD;
        return Err(src.error_at(pw.span(), format!("TCP MD5 passwords are 1 to {most} bytes")));
    }
    Ok(Some(pw.get_ref().clone()))
}

fn default_block_size_v6() -> Spanned<u8> {
    Spanned::new(0..0, DEFAULT_BLOCK_SIZE_V6)
}

/// Calico's default IPv6 block size.
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;
/// The IPv6 pool `lab up --dual-stack` adds to a topology without one (Calico picks a
/// random ULA /48; this one mirrors the IPv4 pool 10.244.0.0/16).
pub const DUAL_STACK_POOL: &str = "fd00:10:244::/48";

/// An IPv6 address that reads like an IPv4 one: its decimal digits written as hex digits
/// (`192.168.100.0` → `fd00:192:168:100::`, host 100 → `::100`).
fn decimal_as_hex(n: u32) -> u128 {
    u128::from_str_radix(&n.to_string(), 16).unwrap_or(0)
}

/// The /64 a subnet gets where the file names none: `fd00:A:B:C::/64` for `A.B.C.x`.
fn derived_prefix6(p: Ipv4Net) -> Ipv6Net {
    let o = p.network().octets();
    let groups = [0xfd00, decimal_as_hex(o[0].into()), decimal_as_hex(o[1].into()), decimal_as_hex(o[2].into())];
    let addr = groups.iter().fold(0u128, |acc, g| (acc << 16) | g) << 64;
    Ipv6Net::new(Ipv6Addr::from(addr), 64).unwrap_or_default()
}

/// The IPv6 twin of `a` in `prefix6`: the same host number, as decimal digits.
fn derived_host6(a: Ipv4Addr, p4: Ipv4Net, prefix6: Ipv6Net) -> Ipv6Addr {
    let host = u32::from(a) & !u32::from(p4.netmask());
    Ipv6Addr::from(u128::from(prefix6.network()) | decimal_as_hex(host))
}

fn never() -> Spanned<nodeapi::config::IpipMode> {
    Spanned::new(0..0, nodeapi::config::IpipMode::Never)
}

fn default_true() -> bool {
    true
}

fn default_hold() -> Spanned<u16> {
    Spanned::new(0..0, 90)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBgpPeer {
    peer_ip: Spanned<String>,
    as_number: Spanned<u32>,
    #[serde(default)]
    node: Option<Spanned<String>>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    ttl_security: Option<Spanned<u8>>,
    #[serde(default)]
    filters: Vec<Spanned<String>>,
    #[serde(default)]
    max_prefixes: Option<Spanned<u32>>,
    #[serde(default)]
    max_restart_time: Option<Spanned<u16>>,
    #[serde(default)]
    keepalive_time: Option<Spanned<u16>>,
    #[serde(default)]
    num_allowed_local_as_numbers: u8,
    #[serde(default)]
    keep_original_next_hop: bool,
    #[serde(default)]
    reachable_by: Option<Spanned<String>>,
}

fn default_block_size() -> Spanned<u8> {
    Spanned::new(0..0, 26)
}

fn default_as() -> Spanned<u32> {
    Spanned::new(0..0, 64512)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubnet {
    name: Spanned<String>,
    prefix: Spanned<String>,
    gateway: Spanned<String>,
    #[serde(default = "default_mtu")]
    mtu: Spanned<u16>,
    #[serde(default)]
    prefix_v6: Option<Spanned<String>>,
    #[serde(default)]
    gateway_v6: Option<Spanned<String>>,
}

fn default_mtu() -> Spanned<u16> {
    Spanned::new(0..0, 1500)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Spanned<String>,
    address: Spanned<String>,
    /// Absent: the first block of the pool that no node names or has taken.
    #[serde(default)]
    block: Option<Spanned<String>>,
    #[serde(default)]
    pods: Vec<Spanned<RawPod>>,
    #[serde(default)]
    route_reflector_cluster_id: Option<Spanned<String>>,
    #[serde(default)]
    as_number: Option<Spanned<u32>>,
    #[serde(default)]
    address_v6: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawPod {
    Name(String),
    Full { name: String, address: String },
}

/// Host names become namespace names and file names: keep them plain.
fn check_name(src: &Source<'_>, n: &Spanned<String>, what: &str) -> Result<(), FileError> {
    let s = n.get_ref();
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-');
    if ok && s != "underlay" {
        Ok(())
    } else {
        Err(src.error_at(
            n.span(),
            format!("{what} name {s:?} must be 1-32 characters of a-z, 0-9 and '-' (and not \"underlay\")"),
        ))
    }
}

/// Pods that take the next free address once every block and explicit address is known:
/// (node, pod, where it is written).
type Automatic = Vec<(usize, usize, std::ops::Range<usize>)>;

/// The underlay subnets: distinct, not overlapping each other or the pod pool.
fn subnets(
    src: &Source<'_>,
    raw: &[RawSubnet],
    pool: Ipv4Net,
    names: &mut HashSet<String>,
) -> Result<Vec<Subnet>, FileError> {
    let mut subnets: Vec<Subnet> = Vec::new();
    for s in raw {
        check_name(src, &s.name, "subnet")?;
        let prefix = src.at(&s.prefix, fileerr::parse_net(s.prefix.get_ref(), "prefix"))?;
        if prefix.trunc() != prefix {
            return Err(src.error_at(
                s.prefix.span(),
                format!("prefix {prefix} has host bits set; did you mean {}?", prefix.trunc()),
            ));
        }
        let gateway = src.at(&s.gateway, fileerr::parse_addr(s.gateway.get_ref(), "gateway"))?;
        if !prefix.contains(&gateway) || gateway == prefix.network() || gateway == prefix.broadcast() {
            return Err(src.error_at(s.gateway.span(), format!("gateway {gateway} is not a host address of {prefix}")));
        }
        if let Some(o) =
            subnets.iter().find(|o| o.prefix.contains(&prefix.network()) || prefix.contains(&o.prefix.network()))
        {
            return Err(
                src.error_at(s.prefix.span(), format!("subnet {prefix} overlaps subnet {} ({})", o.name, o.prefix))
            );
        }
        if prefix.contains(&pool.network()) || pool.contains(&prefix.network()) {
            return Err(src.error_at(s.prefix.span(), format!("subnet {prefix} overlaps the pod pool {pool}")));
        }
        let mtu = *s.mtu.get_ref();
        if !(576..=9000).contains(&mtu) {
            return Err(src.error_at(s.mtu.span(), format!("mtu {mtu} must be between 576 and 9000")));
        }
        if !names.insert(s.name.get_ref().clone()) {
            return Err(src.error_at(s.name.span(), format!("name {:?} is used twice", s.name.get_ref())));
        }
        subnets.push(Subnet { name: s.name.get_ref().clone(), prefix, gateway, mtu, v6: None });
    }
    Ok(subnets)
}

/// The nodes with their blocks (named, or the next free one) and their pods; pods given only
/// a name get their address later ([`assign_addresses`]).
fn nodes(
    src: &Source<'_>,
    raw: &[RawNode],
    subnets: &[Subnet],
    pool: Ipv4Net,
    block_size: u8,
    names: &mut HashSet<String>,
) -> Result<(Vec<Node>, Automatic, HashSet<Ipv4Addr>), FileError> {
    let mut nodes: Vec<Node> = Vec::new();
    let mut pod_addrs = HashSet::new();
    // Pods that take the next free address: (node, pod, where it is written), filled in
    // once every block and every explicit address is known.
    let mut automatic: Automatic = Vec::new();
    // Blocks the file names: a node without one must not take them.
    let named_blocks: Vec<Ipv4Net> =
        raw.iter().filter_map(|n| n.block.as_ref().and_then(|b| b.get_ref().parse::<Ipv4Net>().ok())).collect();
    for n in raw {
        check_name(src, &n.name, "node")?;
        if !names.insert(n.name.get_ref().clone()) {
            return Err(src.error_at(n.name.span(), format!("name {:?} is used twice", n.name.get_ref())));
        }
        let address = src.at(&n.address, fileerr::parse_net(n.address.get_ref(), "address"))?;
        let Some(subnet) = subnets.iter().position(|s| s.prefix == address.trunc()) else {
            return Err(src.error_at(
                n.address.span(),
                format!("address {address} is not inside any [[subnets]] prefix (with the same prefix length)"),
            ));
        };
        let sn = &subnets[subnet];
        let a = address.addr();
        if a == sn.gateway || a == sn.prefix.network() || a == sn.prefix.broadcast() {
            return Err(src.error_at(
                n.address.span(),
                format!("address {a} is the gateway, network or broadcast address of {}", sn.prefix),
            ));
        }
        if let Some(o) = nodes.iter().find(|o| o.address.addr() == a) {
            return Err(src.error_at(n.address.span(), format!("address {a} is already node {}'s", o.name)));
        }
        let block = match &n.block {
            Some(b) => {
                let block = src.at(b, fileerr::parse_net(b.get_ref(), "block"))?;
                if block.trunc() != block || block.prefix_len() != block_size || !pool.contains(&block) {
                    return Err(src.error_at(
                        b.span(),
                        format!("block {block} must be a /{block_size} inside the pool {pool} without host bits"),
                    ));
                }
                if let Some(o) = nodes.iter().find(|o| o.block == block) {
                    return Err(src.error_at(b.span(), format!("block {block} already belongs to node {}", o.name)));
                }
                block
            }
            // Calico's IPAM hands a node the next free block of the pool.
            None => pool
                .subnets(block_size)
                .into_iter()
                .flatten()
                .find(|b| !named_blocks.contains(b) && nodes.iter().all(|o| o.block != *b))
                .ok_or_else(|| {
                    src.error_at(
                        n.name.span(),
                        format!("the pool {pool} has no free /{block_size} block left for node {}", n.name.get_ref()),
                    )
                })?,
        };
        let mut pods = Vec::new();
        for p in &n.pods {
            let (name, address) = match p.get_ref() {
                RawPod::Name(name) => {
                    automatic.push((nodes.len(), pods.len(), p.span()));
                    (name.clone(), Ipv4Addr::UNSPECIFIED)
                }
                RawPod::Full { name, address } => {
                    let addr = fileerr::parse_addr(address, "pod address").map_err(|m| src.error_at(p.span(), m))?;
                    if !block.contains(&addr) {
                        return Err(
                            src.error_at(p.span(), format!("pod address {addr} is outside the node's block {block}"))
                        );
                    }
                    (name.clone(), addr)
                }
            };
            check_name(src, &Spanned::new(p.span(), name.clone()), "pod")?;
            if !names.insert(name.clone()) {
                return Err(src.error_at(p.span(), format!("name {name:?} is used twice")));
            }
            if !address.is_unspecified() && !pod_addrs.insert(address) {
                return Err(src.error_at(p.span(), format!("pod address {address} is used twice")));
            }
            let iface = cali_name(&name);
            pods.push(Pod { name, address, address_v6: None, iface });
        }
        let route_reflector_cluster_id = match &n.route_reflector_cluster_id {
            Some(c) => Some(src.at(c, fileerr::parse_addr(c.get_ref(), "route_reflector_cluster_id"))?),
            None => None,
        };
        if let Some((a, why)) = n.as_number.as_ref().and_then(|a| Some((a, bgp::unusable_as(*a.get_ref())?))) {
            return Err(src.error_at(a.span(), why));
        }
        nodes.push(Node {
            name: n.name.get_ref().clone(),
            address,
            subnet,
            block,
            pods,
            route_reflector_cluster_id,
            as_number: n.as_number.as_ref().map(|a| *a.get_ref()),
            v6: None,
        });
    }
    Ok((nodes, automatic, pod_addrs))
}

fn assign_addresses(
    src: &Source<'_>,
    nodes: &mut [Node],
    automatic: Automatic,
    mut pod_addrs: HashSet<Ipv4Addr>,
) -> Result<(), FileError> {
    // Sequential IPAM, as Calico's: every pod first takes the next free address of its
    // node's block; a pod whose block is full then borrows one from another node's block
    // (the first, in file order, with room), and its node announces that /32 over BGP.
    let blocks: Vec<Ipv4Net> = nodes.iter().map(|n| n.block).collect();
    let mut take = |block: &Ipv4Net| {
        let a = block.hosts().find(|a| !pod_addrs.contains(a))?;
        pod_addrs.insert(a);
        Some(a)
    };
    let mut full = Vec::new();
    for (node, pod, span) in automatic {
        match take(&blocks[node]) {
            Some(a) => nodes[node].pods[pod].address = a,
            None => full.push((node, pod, span)),
        }
    }
    for (node, pod, span) in full {
        let Some(a) = blocks.iter().find_map(&mut take) else {
            let p = &nodes[node].pods[pod];
            return Err(src.error_at(
                span,
                format!(
                    "no address left for pod {}: block {} and every other node's block are full",
                    p.name, blocks[node]
                ),
            ));
        };
        nodes[node].pods[pod].address = a;
    }
    Ok(())
}

/// Dual stack: each subnet's IPv6 prefix and gateway (written, or derived from the IPv4
/// ones), each node's IPv6 address (written, or its IPv4 host number on the IPv6 prefix) and
/// IPv6 block (the next free one of the pool), each pod's IPv6 address (the next free one of
/// its node's block; IPv6 blocks are large enough that none is borrowed).
fn assign_v6(
    src: &Source<'_>,
    raw: &Raw,
    pool6: Ipv6Net,
    block_size6: u8,
    subnets: &mut [Subnet],
    nodes: &mut [Node],
) -> Result<(), FileError> {
    for (s, r) in subnets.iter_mut().zip(&raw.subnets) {
        let prefix = match &r.prefix_v6 {
            Some(p) => src.at(p, fileerr::parse_net6(p.get_ref(), "prefix_v6"))?,
            None => derived_prefix6(s.prefix),
        };
        if prefix.trunc() != prefix || prefix.prefix_len() > 120 {
            let at = r.prefix_v6.as_ref().map_or(r.prefix.span(), |p| p.span());
            return Err(
                src.error_at(at, format!("prefix_v6 {prefix} must be a network (no host bits) of at most /120"))
            );
        }
        if prefix.contains(&pool6.network()) || pool6.contains(&prefix.network()) {
            let at = r.prefix_v6.as_ref().map_or(r.prefix.span(), |p| p.span());
            return Err(src.error_at(at, format!("subnet {prefix} overlaps the IPv6 pod pool {pool6}")));
        }
        let gateway = match &r.gateway_v6 {
            Some(g) => src.at(g, fileerr::parse_addr6(g.get_ref(), "gateway_v6"))?,
            None => derived_host6(s.gateway, s.prefix, prefix),
        };
        if !prefix.contains(&gateway) || gateway == prefix.network() {
            let at = r.gateway_v6.as_ref().map_or(r.gateway.span(), |g| g.span());
            return Err(src.error_at(at, format!("gateway_v6 {gateway} is not a host address of {prefix}")));
        }
        s.v6 = Some((prefix, gateway));
    }
    for (i, s) in subnets.iter().enumerate() {
        if let Some(o) = subnets[..i].iter().find(|o| o.v6.map(|v| v.0) == s.v6.map(|v| v.0)) {
            let at = raw.subnets[i].prefix_v6.as_ref().map_or(raw.subnets[i].prefix.span(), |p| p.span());
            return Err(src.error_at(
                at,
                format!("subnets {} and {} get the same IPv6 prefix; give them prefix_v6", o.name, s.name),
            ));
        }
    }
    let mut blocks = pool6.subnets(block_size6).into_iter().flatten();
    let mut taken: HashSet<Ipv6Addr> = HashSet::new();
    for (n, r) in nodes.iter_mut().zip(&raw.nodes) {
        let (prefix, gateway) = subnets[n.subnet].v6.unwrap_or((Ipv6Net::default(), Ipv6Addr::UNSPECIFIED));
        let addr = match &r.address_v6 {
            Some(a) => src.at(a, fileerr::parse_addr6(a.get_ref(), "address_v6"))?,
            None => derived_host6(n.address.addr(), n.address.trunc(), prefix),
        };
        if !prefix.contains(&addr) || addr == gateway || addr == prefix.network() || !taken.insert(addr) {
            let at = r.address_v6.as_ref().map_or(r.address.span(), |a| a.span());
            return Err(src.error_at(
                at,
                format!("IPv6 address {addr} is not a free host address of {prefix} (gateway {gateway})"),
            ));
        }
        let block = blocks.next().ok_or_else(|| {
            src.error_at(r.name.span(), format!("the IPv6 pool {pool6} has no free /{block_size6} block left"))
        })?;
        // The block's first address is its network's (Calico's IPAM hands it out too, but a
        // pod at ::0 of a /122 reads like a mistake).
        let mut free = (1..(1u128 << (128 - block_size6))).map(|i| Ipv6Addr::from(u128::from(block.network()) + i));
        for p in &mut n.pods {
            p.address_v6 = Some(free.next().ok_or_else(|| {
                src.error_at(r.name.span(), format!("the IPv6 block {block} of node {} is full", n.name))
            })?);
        }
        n.v6 = Some((Ipv6Net::new(addr, prefix.prefix_len()).unwrap_or_default(), block));
    }
    Ok(())
}

fn bgp_peer(
    src: &Source<'_>,
    p: &RawBgpPeer,
    nodes: &[Node],
    filters: &[bgp::policy::Filter],
) -> Result<BgpPeerSpec, FileError> {
    let peer_ip = src.at(&p.peer_ip, fileerr::parse_ip(p.peer_ip.get_ref(), "peer_ip"))?;
    if let Some(why) = bgp::unusable_as(*p.as_number.get_ref()) {
        return Err(src.error_at(p.as_number.span(), why));
    }
    let is_node = |n: &Node| {
        IpAddr::from(n.address.addr()) == peer_ip || n.v6.is_some_and(|v| IpAddr::from(v.0.addr()) == peer_ip)
    };
    if nodes.iter().any(is_node) {
        return Err(
            src.error_at(p.peer_ip.span(), format!("peer_ip {peer_ip} is a node; nodes peer with each other already"))
        );
    }
    if peer_ip.is_ipv6() && nodes.iter().any(|n| n.v6.is_none()) {
        return Err(
            src.error_at(p.peer_ip.span(), "an IPv6 peer_ip needs a dual-stack lab (pool_v6, or lab up --dual-stack)")
        );
    }
    if let Some(n) = &p.node {
        if !nodes.iter().any(|x| &x.name == n.get_ref()) {
            return Err(src.error_at(n.span(), format!("no node named {:?}", n.get_ref())));
        }
    }
    if p.password.as_ref().is_some_and(|pw| pw.len() > nodeapi::secrets::MAX_PASSWORD) {
        let most = nodeapi::secrets::MAX_PASSWORD;
        return Err(src.error_at(p.peer_ip.span(), format!("TCP MD5 passwords are at most {most} bytes")));
    }
    let ttl_security = match &p.ttl_security {
        Some(t) if !(1..=254).contains(t.get_ref()) => {
            return Err(src.error_at(t.span(), "ttl_security is a hop count from 1 to 254"));
        }
        t => t.as_ref().map(|t| *t.get_ref()),
    };
    if let Some(m) = p.max_prefixes.as_ref().filter(|m| *m.get_ref() == 0) {
        return Err(src.error_at(m.span(), "max_prefixes = 0 would refuse every session; leave it out for no limit"));
    }
    let max_restart_time = restart_time(src, &p.max_restart_time, "max_restart_time")?;
    let reachable_by = match &p.reachable_by {
        Some(g) => {
            let gw = src.at(g, fileerr::parse_ip(g.get_ref(), "reachable_by"))?;
            // On the subnet of every node that has the peer, in the peer's family.
            let has = |n: &&Node| p.node.as_ref().is_none_or(|x| x.get_ref() == &n.name);
            let on_link = |n: &Node| match gw {
                std::net::IpAddr::V4(gw) => peer_ip.is_ipv4() && n.address.contains(&gw),
                std::net::IpAddr::V6(gw) => peer_ip.is_ipv6() && n.v6.is_some_and(|(a, _)| a.contains(&gw)),
            };
            if !nodes.iter().filter(has).all(on_link) {
                return Err(src.error_at(
                    g.span(),
                    "reachable_by is a gateway on the subnet of the nodes that peer, of the peer_ip's family",
                ));
            }
            Some(gw)
        }
        None => None,
    };
    if let Some(k) = p.keepalive_time.as_ref().filter(|k| *k.get_ref() == 0) {
        return Err(
            src.error_at(k.span(), "keepalive_time = 0 sends no keepalives; leave it out for a third of the hold time")
        );
    }
    Ok(BgpPeerSpec {
        peer_ip,
        as_number: *p.as_number.get_ref(),
        node: p.node.as_ref().map(|n| n.get_ref().clone()),
        password: p.password.clone(),
        ttl_security,
        filters: nodeapi::config::check_filter_names(src, &p.filters, filters, "bgp_filters")?,
        max_prefixes: p.max_prefixes.as_ref().map(|m| *m.get_ref()),
        max_restart_time,
        keepalive_time: p.keepalive_time.as_ref().map(|k| *k.get_ref()),
        num_allowed_local_as_numbers: p.num_allowed_local_as_numbers,
        keep_original_next_hop: p.keep_original_next_hop,
        reachable_by,
    })
}

/// A graceful-restart time in seconds, which the capability carries in 12 bits.
fn restart_time(src: &Source<'_>, t: &Option<Spanned<u16>>, what: &str) -> Result<Option<u16>, FileError> {
    match t {
        Some(t) if *t.get_ref() > nodeapi::config::MAX_RESTART_TIME => {
            Err(src.error_at(t.span(), format!("{what} is at most 4095 seconds (12 bits in the capability)")))
        }
        t => Ok(t.as_ref().map(|t| *t.get_ref())),
    }
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, FileError> {
        Self::load_with(path, false)
    }

    /// [`Topology::load`]; `dual_stack` adds [`DUAL_STACK_POOL`] where the file has no `pool_v6`.
    pub fn load_with(path: &Path, dual_stack: bool) -> Result<Topology, FileError> {
        let text = fileerr::read(path)?;
        Self::parse_with(path, &text, dual_stack)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Topology, FileError> {
        Self::parse_with(path, text, false)
    }

    pub fn parse_with(path: &Path, text: &str, dual_stack: bool) -> Result<Topology, FileError> {
        let src = Source { path, text };
        let mut raw: Raw = src.parse()?;
        if dual_stack && raw.cluster.pool_v6.is_none() {
            raw.cluster.pool_v6 = Some(Spanned::new(0..0, DUAL_STACK_POOL.to_string()));
        }

        let pool = src.at(&raw.cluster.pool, fileerr::parse_net(raw.cluster.pool.get_ref(), "pool"))?.trunc();
        if let Some(why) = bgp::unusable_as(*raw.cluster.as_number.get_ref()) {
            return Err(src.error_at(raw.cluster.as_number.span(), why));
        }
        let block_size = *raw.cluster.block_size.get_ref();
        if block_size < pool.prefix_len() || block_size > 32 {
            return Err(src.error_at(
                raw.cluster.block_size.span(),
                format!("block_size /{block_size} must lie between the pool's /{} and /32", pool.prefix_len()),
            ));
        }
        // Every host's name, once: subnets, nodes and pods share one namespace.
        let mut names = HashSet::new();
        let subnets = subnets(&src, &raw.subnets, pool, &mut names)?;
        if subnets.is_empty() {
            return Err(src.error("no [[subnets]]: the nodes need an underlay subnet"));
        }
        let (mut nodes, automatic, pod_addrs) = nodes(&src, &raw.nodes, &subnets, pool, block_size, &mut names)?;
        if nodes.is_empty() {
            return Err(src.error("no [[nodes]]: a lab needs at least one node"));
        }
        assign_addresses(&src, &mut nodes, automatic, pod_addrs)?;
        let mut subnets = subnets;
        let pool_v6 = match &raw.cluster.pool_v6 {
            Some(p) => Some(src.at(p, fileerr::parse_net6(p.get_ref(), "pool_v6"))?.trunc()),
            None => None,
        };
        let block_size_v6 = *raw.cluster.block_size_v6.get_ref();
        if let Some(pool6) = pool_v6 {
            if block_size_v6 < pool6.prefix_len() || block_size_v6 > 128 {
                return Err(src.error_at(
                    raw.cluster.block_size_v6.span(),
                    format!(
                        "block_size_v6 /{block_size_v6} must lie between the pool's /{} and /128",
                        pool6.prefix_len()
                    ),
                ));
            }
            assign_v6(&src, &raw, pool6, block_size_v6, &mut subnets, &mut nodes)?;
        }
        let vxlan_mode = *raw.cluster.vxlan_mode.get_ref();
        if vxlan_mode != nodeapi::config::IpipMode::Never && raw.cluster.ipip_mode != nodeapi::config::IpipMode::Never {
            return Err(src.error_at(
                raw.cluster.vxlan_mode.span(),
                "a pool uses IPIP or VXLAN, not both: set ipip_mode = \"Never\" with vxlan_mode",
            ));
        }
        let node_mesh_password = mesh_password(&src, &raw.cluster)?;
        let hold = raw.cluster.bgp_hold_time;
        if *hold.get_ref() == 1 || *hold.get_ref() == 2 {
            return Err(src.error_at(hold.span(), "bgp_hold_time must be 0 or at least 3 seconds (RFC 4271)"));
        }
        let bgp_filters = nodeapi::config::check_filters(&src, &raw.bgp_filters)?;
        let bgp_peers =
            raw.bgp_peers.iter().map(|p| bgp_peer(&src, p, &nodes, &bgp_filters)).collect::<Result<Vec<_>, _>>()?;
        let named = nodeapi::config::check_communities(&src, &raw.communities)?;
        let prefix_advertisements =
            nodeapi::config::check_prefix_advertisements(&src, &raw.prefix_advertisements, &named)?;
        let services = |list: &[Spanned<String>], what: &str| -> Result<Vec<ipnet::IpNet>, FileError> {
            list.iter().map(|n| src.at(n, fileerr::parse_cidr(n.get_ref(), what))).collect()
        };
        let service_cluster_ips = services(&raw.cluster.service_cluster_ips, "service_cluster_ips")?;
        let service_external_ips = services(&raw.cluster.service_external_ips, "service_external_ips")?;
        let service_load_balancer_ips = services(&raw.cluster.service_load_balancer_ips, "service_load_balancer_ips")?;
        if !raw.cluster.node_to_node_mesh
            && nodes.len() > 1
            && bgp_peers.is_empty()
            && nodes.iter().all(|n| n.route_reflector_cluster_id.is_none())
        {
            return Err(src.error(
                "node_to_node_mesh = false needs a node with route_reflector_cluster_id or [[bgp_peers]]; \
                 without either, nodes learn nothing",
            ));
        }
        // A reflector passes on iBGP routes only: it and every node it serves share one AS.
        if !raw.cluster.node_to_node_mesh && nodes.iter().any(|n| n.route_reflector_cluster_id.is_some()) {
            let as_of = |n: &Node| n.as_number.unwrap_or(*raw.cluster.as_number.get_ref());
            if let Some(odd) = nodes.iter().find(|n| as_of(n) != as_of(&nodes[0])) {
                let span = raw.nodes.iter().find(|r| r.name.get_ref() == &odd.name).and_then(|r| r.as_number.as_ref());
                let why = format!(
                    "{} is in AS {} and {} in AS {}: a route reflector and its clients share one AS",
                    odd.name,
                    as_of(odd),
                    nodes[0].name,
                    as_of(&nodes[0])
                );
                return Err(match span {
                    Some(a) => src.error_at(a.span(), why),
                    None => src.error(why),
                });
            }
        }
        Ok(Topology {
            pool,
            block_size,
            pool_v6,
            block_size_v6,
            as_number: *raw.cluster.as_number.get_ref(),
            ipip_mode: raw.cluster.ipip_mode,
            vxlan_mode,
            nat_outgoing: raw.cluster.nat_outgoing,
            nat_outgoing_v6: raw.cluster.nat_outgoing_v6,
            node_to_node_mesh: raw.cluster.node_to_node_mesh,
            bgp_hold_time: *hold.get_ref(),
            node_mesh_max_restart_time: restart_time(
                &src,
                &raw.cluster.node_mesh_max_restart_time,
                "node_mesh_max_restart_time",
            )?,
            node_mesh_password,
            bgp_peers,
            bgp_filters,
            prefix_advertisements,
            disable_bgp_export: raw.cluster.disable_bgp_export,
            service_cluster_ips,
            service_external_ips,
            service_load_balancer_ips,
            subnets,
            nodes,
        })
    }

    /// Every service range once, as the nodes announce them.
    pub fn service_ips(&self) -> Vec<ipnet::IpNet> {
        let mut all: Vec<ipnet::IpNet> = Vec::new();
        for n in
            self.service_cluster_ips.iter().chain(&self.service_external_ips).chain(&self.service_load_balancer_ips)
        {
            if !all.contains(n) {
                all.push(*n);
            }
        }
        all
    }

    /// The AS `node` speaks BGP in: its own, or the cluster's.
    pub fn as_of(&self, node: &Node) -> u32 {
        node.as_number.unwrap_or(self.as_number)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// What `lab up --nodes N` and `lab topology` generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generated {
    pub nodes: usize,
    pub subnets: usize,
    pub pods_per_node: usize,
    /// Nodes that are route reflectors (the first ones); 0: a full mesh.
    pub route_reflectors: usize,
}

impl Generated {
    /// The topology file's text, as a user could have written it.
    pub fn text(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.route_reflectors <= self.nodes,
            "{} route reflectors among {} nodes: at most one per node",
            self.route_reflectors,
            self.nodes
        );
        let mut t = generate(self.nodes, self.subnets, self.pods_per_node)?;
        if self.route_reflectors > 0 {
            // As Calico's documentation sets it up: the mesh off, the reflectors sharing one
            // cluster ID, every other node peering with each of them.
            t = t.replacen(
                "ipip_mode = \"CrossSubnet\"\n",
                "ipip_mode = \"CrossSubnet\"\nnode_to_node_mesh = false\n",
                1,
            );
            for i in 1..=self.route_reflectors {
                let node = format!("name = \"node-{i}\"\n");
                t = t.replacen(&node, &format!("{node}route_reflector_cluster_id = \"{RR_CLUSTER_ID}\"\n"), 1);
            }
        }
        Ok(t)
    }

    /// BGP sessions of the layout: every pair of nodes in a mesh; with reflectors, every
    /// pair of reflectors and every client with each reflector.
    pub fn sessions(&self) -> usize {
        let (n, k) = (self.nodes, self.route_reflectors.min(self.nodes));
        match k {
            0 => n * n.saturating_sub(1) / 2,
            k => k * (k - 1) / 2 + k * (n - k),
        }
    }

    /// How the lab names its topology in `lab status`.
    pub fn describe(&self) -> String {
        let layout = match self.route_reflectors {
            0 => "full mesh".to_string(),
            k => format!("{k} route reflector{}", if k == 1 { "" } else { "s" }),
        };
        format!(
            "generated: {} nodes on {} subnet{}, {} pod{} each, {layout}",
            self.nodes,
            self.subnets,
            if self.subnets == 1 { "" } else { "s" },
            self.pods_per_node,
            if self.pods_per_node == 1 { "" } else { "s" }
        )
    }
}

/// The cluster ID generated reflectors share (the one Calico's documentation uses).
pub const RR_CLUSTER_ID: &str = "244.0.0.1";

/// A topology of `nodes` nodes spread in turn over `subnets` underlay subnets
/// (192.168.100.0/24, 192.168.101.0/24, …; the underlay router at .1 of each, nodes from
/// .10), `pods_per_node` pods each, the seed's pool and AS, blocks and pod addresses left to
/// the topology's IPAM. The text of a topology file, as a user could have written it.
pub fn generate(nodes: usize, subnets: usize, pods_per_node: usize) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    anyhow::ensure!(nodes >= 1, "a lab needs at least one node");
    anyhow::ensure!((1..=100).contains(&subnets), "between 1 and 100 subnets");
    anyhow::ensure!(
        nodes.div_ceil(subnets) <= 240,
        "at most 240 nodes per subnet: {nodes} nodes need --subnets {} or more",
        nodes.div_ceil(240)
    );
    // A /16 pool holds 1024 blocks of /26 (64 addresses).
    anyhow::ensure!(nodes <= 1024, "at most 1024 nodes: the pool 10.244.0.0/16 holds 1024 blocks of /26");
    // Every node's block is as full as every other's, so there is nothing to borrow from.
    anyhow::ensure!(
        pods_per_node <= 62,
        "at most 62 pods per node: a node's block is a /26, and IPAM gives neither its first nor its last address"
    );
    anyhow::ensure!(subnets <= nodes, "{subnets} subnets for {nodes} nodes: every subnet needs a node");
    let mut t = String::from(
        "# Generated: nodes spread in turn over the subnets, pods and blocks from the pool.\n\n\
         [cluster]\npool = \"10.244.0.0/16\"\nblock_size = 26\nas_number = 64512\nipip_mode = \"CrossSubnet\"\n",
    );
    for s in 0..subnets {
        let _ = write!(
            t,
            "\n[[subnets]]\nname = \"lan-{s}\"\nprefix = \"192.168.{n}.0/24\"\ngateway = \"192.168.{n}.1\"\n",
            n = 100 + s
        );
    }
    for i in 0..nodes {
        let pods: Vec<String> = (1..=pods_per_node).map(|p| format!("\"pod-{}-{p}\"", i + 1)).collect();
        let _ = write!(
            t,
            "\n[[nodes]]\nname = \"node-{}\"\naddress = \"192.168.{}.{}/24\"\npods = [{}]\n",
            i + 1,
            100 + i % subnets,
            10 + i / subnets,
            pods.join(", ")
        );
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_topologies_parse_and_spread_the_nodes() {
        let t = parse(&generate(100, 3, 2).expect("text")).expect("parses");
        assert_eq!((t.nodes.len(), t.subnets.len()), (100, 3));
        assert_eq!(t.nodes.iter().map(|n| n.pods.len()).sum::<usize>(), 200);
        assert_eq!(t.nodes.iter().filter(|n| n.subnet == 2).count(), 33);
        let last = t.node("node-100").expect("node-100");
        assert_eq!(last.address.to_string(), "192.168.100.43/24");
        let blocks: HashSet<_> = t.nodes.iter().map(|n| n.block).collect();
        assert_eq!(blocks.len(), 100);
        assert!(generate(0, 1, 1).is_err() && generate(2000, 2, 1).is_err() && generate(10, 0, 1).is_err());
        let e = generate(500, 2, 1).expect_err("250 a subnet").to_string();
        assert!(e.contains("--subnets 3 or more"), "{e}");
        assert!(generate(500, 3, 1).is_ok());
        let e = generate(3, 1, 63).expect_err("63 pods").to_string();
        assert!(e.contains("62 pods per node"), "{e}");
        let e = generate(3, 5, 1).expect_err("empty subnets").to_string();
        assert!(e.contains("every subnet needs a node"), "{e}");
        let full = parse(&generate(2, 2, 62).expect("62 pods")).expect("62 pods fit");
        assert_eq!(full.nodes.iter().map(|n| n.pods.len()).sum::<usize>(), 124);
    }

    #[test]
    fn generated_layouts_know_their_sessions() {
        let g = |nodes, route_reflectors| Generated { nodes, subnets: 2, pods_per_node: 1, route_reflectors };
        assert_eq!(g(100, 0).sessions(), 4950);
        // Two reflectors: one session between them, two for each of the 98 clients.
        assert_eq!(g(100, 2).sessions(), 1 + 2 * 98);
        assert_eq!(g(20, 1).sessions(), 19);
        assert_eq!(g(1, 0).sessions(), 0);
    }

    #[test]
    fn generated_reflector_topologies_turn_the_mesh_off_and_share_one_cluster_id() {
        let g = Generated { nodes: 20, subnets: 2, pods_per_node: 1, route_reflectors: 2 };
        let t = parse(&g.text().expect("text")).expect("parses");
        assert!(!t.node_to_node_mesh);
        let rrs: Vec<&str> =
            t.nodes.iter().filter(|n| n.route_reflector_cluster_id.is_some()).map(|n| n.name.as_str()).collect();
        assert_eq!(rrs, ["node-1", "node-2"]);
        assert!(t.nodes.iter().filter_map(|n| n.route_reflector_cluster_id).all(|c| c.to_string() == RR_CLUSTER_ID));
        let mesh = parse(&Generated { route_reflectors: 0, ..g }.text().expect("text")).expect("parses");
        assert!(mesh.node_to_node_mesh && mesh.nodes.iter().all(|n| n.route_reflector_cluster_id.is_none()));
        assert!(Generated { route_reflectors: 21, ..g }.text().is_err());
        assert_eq!(g.describe(), "generated: 20 nodes on 2 subnets, 1 pod each, 2 route reflectors");
    }

    fn parse(text: &str) -> Result<Topology, FileError> {
        Topology::parse(Path::new("t.toml"), text)
    }

    #[test]
    fn seed_topology_is_the_design() {
        let t = parse(SEED).expect("seed parses");
        assert_eq!(t.nodes.len(), 3);
        let a = t.node("node-a").expect("node-a");
        assert_eq!(a.address.to_string(), "192.168.100.100/24");
        assert_eq!(a.block.to_string(), "10.244.1.0/26");
        assert_eq!(a.pods[0].address, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(a.pods[1].address, Ipv4Addr::new(10, 244, 1, 2));
        let c = t.node("node-c").expect("node-c");
        assert_eq!(t.subnets[c.subnet].name, "lan-b");
        assert_eq!(t.as_number, 64512);
    }

    #[test]
    fn dual_stack_gives_every_host_an_ipv6_address_that_reads_like_its_ipv4_one() {
        let t = Topology::parse_with(Path::new("t.toml"), SEED, true).expect("seed, dual stack");
        assert_eq!(t.pool_v6.map(|p| p.to_string()).as_deref(), Some(DUAL_STACK_POOL));
        assert_eq!(t.block_size_v6, 122);
        let b = &t.subnets[1];
        let (p, gw) = b.v6.expect("lan-b's IPv6");
        assert_eq!((p.to_string(), gw.to_string()), ("fd00:192:168:200::/64".into(), "fd00:192:168:200::1".into()));
        let a = t.node("node-a").expect("node-a");
        let (addr, block) = a.v6.expect("node-a's IPv6");
        assert_eq!(
            (addr.to_string(), block.to_string()),
            ("fd00:192:168:100::100/64".into(), "fd00:10:244::/122".into())
        );
        assert_eq!(a.pods[1].address_v6, Some("fd00:10:244::2".parse().expect("addr")));
        let c = t.node("node-c").expect("node-c");
        assert_eq!(c.v6.map(|v| v.1.to_string()).as_deref(), Some("fd00:10:244::80/122"));
        // Without it, nothing of IPv6.
        let t = parse(SEED).expect("seed");
        assert!(t.pool_v6.is_none() && t.nodes.iter().all(|n| n.v6.is_none()));
    }

    #[test]
    fn ipv6_mistakes_are_refused_with_the_line() {
        let with = |cluster: &str| SEED.replacen("as_number = 64512\n", &format!("as_number = 64512\n{cluster}\n"), 1);
        let e = parse(&with("pool_v6 = \"fd00:10:244::/48\"\nblock_size_v6 = 40")).expect_err("block").to_string();
        assert!(e.contains("block_size_v6 /40"), "{e}");
        let e = parse(&with("pool_v6 = \"fd00:192:168::/48\"")).expect_err("overlap").to_string();
        assert!(e.contains("overlaps the IPv6 pod pool"), "{e}");
        let e = parse(&with("pool_v6 = \"10.0.0.0/8\"")).expect_err("not v6").to_string();
        assert!(e.contains("not an IPv6 address"), "{e}");
    }

    /// The seed with /30 blocks (two pod addresses each) and `pods` on node-a.
    fn small_blocks(pods: &str, b_pods: &str) -> String {
        SEED.replacen("block_size = 26", "block_size = 30", 1)
            .replace("10.244.1.0/26", "10.244.1.0/30")
            .replace("10.244.2.0/26", "10.244.2.0/30")
            .replace("10.244.3.0/26", "10.244.3.0/30")
            .replacen(r#"pods = ["pod-a1", "pod-a2"]"#, &format!("pods = [{pods}]"), 1)
            .replacen(r#"pods = ["pod-b1"]"#, &format!("pods = [{b_pods}]"), 1)
    }

    #[test]
    fn a_pod_whose_block_is_full_borrows_from_another_nodes_block() {
        let t = parse(&small_blocks(r#""pod-a1", "pod-a2", "pod-a3""#, r#""pod-b1""#)).expect("parses");
        let addr = |node: &str, i: usize| t.node(node).expect("node").pods[i].address.to_string();
        assert_eq!((addr("node-a", 0), addr("node-a", 1)), ("10.244.1.1".into(), "10.244.1.2".into()));
        // node-b's own pod keeps the first address of its block, even though node-a comes first.
        assert_eq!(addr("node-b", 0), "10.244.2.1");
        assert_eq!(addr("node-a", 2), "10.244.2.2", "borrowed from node-b's block");
        // An explicit address is never handed out again.
        let t = parse(&small_blocks(
            r#""pod-a1", "pod-a2", "pod-a3""#,
            r#""pod-b1", { name = "pod-b2", address = "10.244.2.2" }"#,
        ))
        .expect("parses");
        assert_eq!(t.node("node-a").expect("node-a").pods[2].address.to_string(), "10.244.3.2");
    }

    #[test]
    fn a_node_without_a_block_gets_the_next_free_one_of_the_pool() {
        let text = SEED
            .replacen("block = \"10.244.1.0/26\"\n", "", 1)
            .replacen("block = \"10.244.2.0/26\"\n", "", 1)
            .replacen("10.244.3.0/26", "10.244.0.64/26", 1);
        let t = parse(&text).expect("parses");
        let block = |n: &str| t.node(n).expect("node").block.to_string();
        // node-c names 10.244.0.64/26 further down the file: node-b skips it.
        assert_eq!(
            (block("node-a"), block("node-b"), block("node-c")),
            ("10.244.0.0/26".into(), "10.244.0.128/26".into(), "10.244.0.64/26".into())
        );
        assert_eq!(t.node("node-b").expect("node-b").pods[0].address.to_string(), "10.244.0.129");
        // A /24 pool holds four /26 blocks.
        let text = SEED.replacen("10.244.0.0/16", "10.244.1.0/24", 1).replacen("block = \"10.244.2.0/26\"\n", "", 1);
        let text = text.replacen("block = \"10.244.3.0/26\"", "block = \"10.244.1.128/26\"", 1);
        let t = parse(&text).expect("parses");
        assert_eq!(t.node("node-b").expect("node-b").block.to_string(), "10.244.1.64/26");
        let tail = "\n[[nodes]]\nname = \"node-d\"\naddress = \"192.168.100.102/24\"\n\n[[nodes]]\nname = \"node-e\"\naddress = \"192.168.100.103/24\"\n";
        let e = err(&(text + tail));
        assert!(e.contains("the pool 10.244.1.0/24 has no free /26 block left for node node-e"), "{e}");
    }

    #[test]
    fn a_pod_gets_an_error_when_every_block_is_full() {
        let text = small_blocks(r#""pod-a1", "pod-a2", "pod-a3""#, r#""pod-b1", "pod-b2""#).replacen(
            r#"pods = ["pod-c1"]"#,
            r#"pods = ["pod-c1", "pod-c2"]"#,
            1,
        );
        let e = err(&text);
        let line = text.lines().position(|l| l.contains("pod-a3")).expect("line") + 1;
        assert!(e.contains(&format!("t.toml:{line}")), "{e}");
        assert!(
            e.contains("no address left for pod pod-a3: block 10.244.1.0/30 and every other node's block are full"),
            "{e}"
        );
    }

    #[test]
    fn cali_names_follow_calico() {
        // `echo -n pod-a1 | sha1sum` prints 48dfb98be234e5db...
        assert_eq!(cali_name("pod-a1"), "cali48dfb98be23");
    }

    fn replace(from: &str, to: &str) -> String {
        assert!(SEED.contains(from), "{from}");
        SEED.replacen(from, to, 1)
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("must fail").to_string()
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = err("[cluster]\npool = \"10.244.0.0/16\"\nblock_size = = 3\n");
        assert!(e.starts_with("t.toml:3:"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_line() {
        let e = err(&replace("block_size = 26", "block_size = 26\ncolour = \"red\""));
        let line = SEED.lines().position(|l| l.starts_with("block_size")).expect("line") + 2;
        assert!(e.starts_with(&format!("t.toml:{line}:")) && e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_address_names_the_line() {
        let e = err(&replace("192.168.100.101/24", "192.168.100.300/24"));
        let line = SEED.lines().position(|l| l.contains("192.168.100.101/24")).expect("line") + 1;
        assert!(e.starts_with(&format!("t.toml:{line}:")), "{e}");
        assert!(e.contains("not an IPv4 address"), "{e}");
    }

    #[test]
    fn semantic_errors_are_explained() {
        for (from, to, needle) in [
            ("192.168.200.101/24", "192.168.150.101/24", "not inside any [[subnets]]"),
            ("10.244.2.0/26", "10.244.1.0/26", "already belongs to node node-a"),
            ("10.244.3.0/26", "10.245.3.0/26", "inside the pool"),
            ("10.244.3.0/26", "10.244.3.0/25", "must be a /26"),
            ("\"pod-b1\"", "\"pod-a1\"", "used twice"),
            ("192.168.100.101/24", "192.168.100.100/24", "already node node-a's"),
            ("gateway = \"192.168.100.1\"", "gateway = \"192.168.101.1\"", "not a host address"),
            ("name = \"node-b\"", "name = \"Node_B\"", "must be 1-32 characters"),
            ("\"pod-c1\"", "{ name = \"pod-c1\", address = \"10.244.1.9\" }", "outside the node's block"),
            ("[cluster]\n", "[cluster]\nservice_cluster_ips = [\"10.96.0.1/12\"]\n", "has host bits set"),
            (
                "[cluster]\n",
                "[cluster]\nservice_external_ips = [\"ten\"]\n",
                "service_external_ips \"ten\" is not a CIDR",
            ),
        ] {
            let e = err(&replace(from, to));
            assert!(e.contains(needle), "{from} -> {to}: {e}");
            assert!(e.starts_with("t.toml:"), "{e}");
        }
    }

    #[test]
    fn peer_timers_and_the_mesh_restart_time_are_read_and_checked() {
        let cluster = |line: &str| SEED.replace("[cluster]\n", &format!("[cluster]\n{line}\n"));
        let peer = "\n[[bgp_peers]]\npeer_ip = \"192.168.100.1\"\nas_number = 65001\nmax_restart_time = 45\n\
                    keepalive_time = 3\nnum_allowed_local_as_numbers = 2\n";
        let t = parse(&format!("{}{peer}", cluster("node_mesh_max_restart_time = 90"))).expect("parses");
        let p = &t.bgp_peers[0];
        assert_eq!((p.max_restart_time, p.keepalive_time, p.num_allowed_local_as_numbers), (Some(45), Some(3), 2));
        assert_eq!(t.node_mesh_max_restart_time, Some(90));
        for (text, needle) in [
            (format!("{SEED}{}", peer.replace("= 45", "= 4096")), "max_restart_time is at most 4095 seconds"),
            (format!("{SEED}{}", peer.replace("= 3", "= 0")), "keepalive_time = 0 sends no keepalives"),
            (cluster("node_mesh_max_restart_time = 5000"), "node_mesh_max_restart_time is at most 4095"),
        ] {
            let e = err(&text);
            assert!(e.contains(needle) && e.starts_with("t.toml:"), "{needle}: {e}");
        }
    }

    #[test]
    fn a_node_may_have_its_own_as_but_not_against_a_reflector() {
        let own = |text: &str, node: &str, asn: &str| {
            text.replacen(&format!("name = \"{node}\"\n"), &format!("name = \"{node}\"\nas_number = {asn}\n"), 1)
        };
        let t = parse(&own(SEED, "node-c", "64513")).expect("parses");
        let asns: Vec<u32> = t.nodes.iter().map(|n| t.as_of(n)).collect();
        assert_eq!(asns, vec![64512, 64512, 64513]);
        let e = err(&own(SEED, "node-c", "0"));
        assert!(e.contains("AS 0 is reserved") && e.starts_with("t.toml:"), "{e}");
        let e = err(&SEED.replacen("as_number = 64512", "as_number = 23456", 1));
        assert!(e.contains("AS_TRANS") && e.starts_with("t.toml:9:"), "{e}");
        let e = err(&own(SEED_RR, "node-c", "64513"));
        assert!(e.contains("node-c is in AS 64513 and node-a in AS 64512: a route reflector and its clients"), "{e}");
    }

    #[test]
    fn the_mesh_password_needs_the_mesh_and_a_key_linux_takes() {
        let with =
            |text: &str, pw: &str| text.replacen("[cluster]\n", &format!("[cluster]\nnode_mesh_password = {pw}\n"), 1);
        assert_eq!(parse(&with(SEED, "\"m3sh\"")).expect("parses").node_mesh_password.as_deref(), Some("m3sh"));
        assert_eq!(parse(SEED).expect("parses").node_mesh_password, None);
        let e = err(&with(SEED_RR, "\"m3sh\""));
        assert!(e.contains("node_mesh_password needs the mesh") && e.starts_with("t.toml:"), "{e}");
        let e = err(&with(SEED, &format!("\"{}\"", "x".repeat(81))));
        assert!(e.contains("1 to 80 bytes"), "{e}");
        assert!(err(&with(SEED, "\"\"")).contains("1 to 80 bytes"));
    }

    #[test]
    fn reflector_variant_has_node_a_as_reflector() {
        let t = parse(SEED_RR).expect("seed-rr parses");
        assert!(!t.node_to_node_mesh);
        assert!(t.node("node-a").and_then(|n| n.route_reflector_cluster_id).is_some());
        assert!(t.node("node-b").and_then(|n| n.route_reflector_cluster_id).is_none());
    }

    #[test]
    fn named_communities_and_filters_resolve_and_mistakes_name_their_line() {
        let extra = "\n[[communities]]\nname = \"edge\"\nvalue = \"64512:300\"\n\
                     \n[[prefix_advertisements]]\ncidr = \"10.244.0.0/16\"\ncommunities = [\"edge\", \"no-export\", \"1:2\"]\n\
                     \n[[bgp_filters]]\nname = \"f\"\nimport_v4 = [{ cidr = \"0.0.0.0/0\", match_operator = \"In\", action = \"Reject\" }]\n\
                     \n[[bgp_peers]]\npeer_ip = \"192.168.100.1\"\nas_number = 65000\nfilters = [\"f\"]\nmax_prefixes = 10\n";
        let t = parse(&format!("{SEED}{extra}")).expect("parses");
        let nx = bgp::policy::community::NO_EXPORT;
        assert_eq!(t.prefix_advertisements[0].communities, vec![64512 << 16 | 300, nx, 1 << 16 | 2]);
        assert_eq!((t.bgp_peers[0].filters.clone(), t.bgp_peers[0].max_prefixes), (vec!["f".to_string()], Some(10)));
        for (from, to, needle) in [
            ("\"edge\", \"no", "\"edgy\", \"no", "`edgy` is not a community"),
            ("filters = [\"f\"]", "filters = [\"g\"]", "no [[bgp_filters]] entry is named `g`"),
            ("max_prefixes = 10", "max_prefixes = 0", "max_prefixes = 0"),
            ("name = \"edge\"", "name = \"no-export\"", "community name `no-export`"),
        ] {
            let e = err(&format!("{SEED}{}", extra.replace(from, to)));
            assert!(e.contains(needle) && e.contains("t.toml:"), "{to}: {e}");
        }
    }

    #[test]
    fn bgp_peers_are_checked() {
        let extra = "\n[[bgp_peers]]\npeer_ip = \"192.168.100.1\"\nas_number = 65000\nnode = \"node-z\"\n";
        let e = err(&format!("{SEED}{extra}"));
        assert!(e.contains("no node named \"node-z\""), "{e}");
        let ok = parse(&format!("{SEED}{}", extra.replace("node-z", "node-a"))).expect("ok");
        assert_eq!(ok.bgp_peers[0].as_number, 65000);
        assert_eq!(ok.bgp_peers[0].ttl_security, None);
        let gtsm = parse(&format!("{SEED}{}ttl_security = 1\n", extra.replace("node-z", "node-a"))).expect("ok");
        assert_eq!(gtsm.bgp_peers[0].ttl_security, Some(1));
        for bad in ["0", "255"] {
            let e = err(&format!("{SEED}{}ttl_security = {bad}\n", extra.replace("node-z", "node-a")));
            assert!(e.contains("ttl_security is a hop count from 1 to 254"), "{e}");
        }
        // An IPv6 peer: only in a dual-stack lab, and never a node.
        let six = extra.replace("node-z", "node-a").replace("192.168.100.1", "fd00:192:168:100::1");
        let e = err(&format!("{SEED}{six}"));
        assert!(e.contains("an IPv6 peer_ip needs a dual-stack lab"), "{e}");
        let t = Topology::parse_with(Path::new("t.toml"), &format!("{SEED}{six}"), true).expect("dual stack");
        assert_eq!(t.bgp_peers[0].peer_ip, "fd00:192:168:100::1".parse::<IpAddr>().expect("ip"));
        let node = six.replace("::1\"", "::100\"");
        let e = Topology::parse_with(Path::new("t.toml"), &format!("{SEED}{node}"), true).expect_err("a node");
        assert!(e.to_string().contains("is a node"), "{e}");
    }

    #[test]
    fn explicit_pod_addresses_are_kept() {
        let t = parse(&replace("\"pod-c1\"", "{ name = \"pod-c1\", address = \"10.244.3.50\" }")).expect("ok");
        assert_eq!(t.node("node-c").expect("c").pods[0].address, Ipv4Addr::new(10, 244, 3, 50));
    }
}
