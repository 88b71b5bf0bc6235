//! The node daemon's configuration file (`router node --config FILE`). `lab up` writes one per
//! node; a user can write one by hand. Errors name the file and line.

use crate::fileerr::{self, FileError, Source};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use toml::Spanned;

/// How packets reach the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneMode {
    /// Full userspace forwarding from AF_PACKET sockets on every interface.
    #[default]
    Afpacket,
    /// The kernel forwards; traffic for tunnelled blocks is routed into a TUN device (a
    /// userspace `tunl0`) and IPIP travels on a raw socket.
    Tun,
}

impl DataplaneMode {
    pub fn name(&self) -> &'static str {
        match self {
            DataplaneMode::Afpacket => "afpacket",
            DataplaneMode::Tun => "tun",
        }
    }
}

impl std::fmt::Display for DataplaneMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Calico's `ipipMode` of an IP pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum IpipMode {
    /// Encapsulate only toward next hops outside the uplink's subnet.
    #[default]
    CrossSubnet,
    Always,
    Never,
}

/// A node's admin socket where its config names none: the one `router status` and the
/// other node commands use outside a lab.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/router/router.sock";
/// Calico's names for a node's tunnel devices.
pub const IPIP_DEVICE: &str = "tunl0";
pub const VXLAN_DEVICE: &str = "vxlan.calico";

impl IpipMode {
    pub fn name(&self) -> &'static str {
        match self {
            IpipMode::CrossSubnet => "CrossSubnet",
            IpipMode::Always => "Always",
            IpipMode::Never => "Never",
        }
    }
}

impl std::fmt::Display for IpipMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub cidr: Ipv4Net,
    pub ipip_mode: IpipMode,
    /// Calico's `vxlanMode` (same values); a pool uses IPIP or VXLAN, not both.
    pub vxlan_mode: IpipMode,
    /// Calico's `natOutgoing`: its pods' traffic to outside every pool leaves with the
    /// node's address (afpacket data plane).
    pub nat_outgoing: bool,
    /// Calico's `disableBGPExport`: its routes are not announced to external BGP peers.
    pub disable_bgp_export: bool,
}

impl Pool {
    /// Bytes its pods' packets lose to its tunnel: a pod's MTU is the underlay's minus these
    /// (20 for IPIP, 50 for VXLAN, none without either).
    pub fn tunnel_overhead(&self) -> u16 {
        if self.vxlan_mode != IpipMode::Never {
            encap::vxlan::OVERHEAD as u16
        } else if self.ipip_mode != IpipMode::Never {
            encap::ipip::OVERHEAD as u16
        } else {
            0
        }
    }
}

/// The encapsulation a pool's routes may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    Ipip,
    Vxlan,
}

impl Encap {
    pub fn name(self) -> &'static str {
        match self {
            Encap::Ipip => "ipip",
            Encap::Vxlan => "vxlan",
        }
    }
}

/// BGP of one node (Calico's BGPConfiguration, Node.spec.bgp and BGPPeer, as resolved by
/// `lab up` for this node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpConfig {
    pub as_number: u32,
    pub router_id: Option<Ipv4Addr>,
    pub port: u16,
    pub hold_time: u16,
    pub connect_retry_secs: u16,
    /// 0 turns the graceful-restart capability off.
    pub graceful_restart_secs: u16,
    /// The longest we keep a restarting peer's routes, whatever restart time it asks for.
    pub max_stale_secs: u16,
    pub route_reflector_cluster_id: Option<Ipv4Addr>,
    pub peers: Vec<BgpPeer>,
    /// Calico's BGPFilters, which peers name in `filters`.
    pub filters: Vec<bgp::policy::Filter>,
    /// Communities attached to exported routes inside a CIDR (Calico's prefixAdvertisements).
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    /// Service address ranges the node announces to every peer (Calico's serviceClusterIPs,
    /// serviceExternalIPs and serviceLoadBalancerIPs): kube-proxy on the node serves them.
    pub service_ips: Vec<IpNet>,
    /// Listen on every address of the node instead of its uplink address (Calico's
    /// BGPConfiguration `bindMode: None`).
    pub listen_all: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefixAdvertisement {
    pub cidr: Ipv4Net,
    pub communities: Vec<u32>,
}

/// How a peer relates to us, as `calicoctl node status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PeerKind {
    #[serde(rename = "node-to-node mesh")]
    Mesh,
    #[serde(rename = "route reflector")]
    RouteReflector,
    #[serde(rename = "route reflector client")]
    RouteReflectorClient,
    #[serde(rename = "global")]
    Global,
    /// Another node of the cluster, peered by a BGPPeer's `peerSelector` (calicoctl's name).
    #[serde(rename = "node specific")]
    NodeSpecific,
}

impl std::fmt::Display for PeerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::RouteReflector => "route reflector",
            PeerKind::RouteReflectorClient => "route reflector client",
            PeerKind::Global => "global",
            PeerKind::NodeSpecific => "node specific",
        })
    }
}

pub use bgp::restart::MAX_RESTART_TIME;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    /// An IPv6 address makes a session over IPv6 that carries IPv6 routes only (Calico's
    /// IPv6 BGPPeer); it needs the node's own IPv6 address.
    pub address: IpAddr,
    pub as_number: u32,
    pub port: u16,
    /// How `router status` names it, as calicoctl does.
    pub kind: PeerKind,
    /// A router outside the cluster: it gets only the pools' routes and may not send routes
    /// inside a pool or over the node's own (Calico's rules for BGPPeers that are not nodes).
    pub external: bool,
    pub passive: bool,
    pub password: Option<String>,
    /// GTSM (RFC 5082): the peer is this many hops away; we send with TTL 255 and drop its
    /// segments that arrive with less than 256 minus that.
    pub ttl_security: Option<u8>,
    /// Names of the BGPFilters applied to this peer, in order.
    pub filters: Vec<String>,
    /// Prefixes it may send (accepted or not) before the session is shut down (RFC 4486).
    pub max_prefixes: Option<u32>,
    /// The graceful-restart time announced to this peer instead of `graceful_restart_secs`
    /// (Calico's BGPPeer maxRestartTime; nodeMeshMaxRestartTime for mesh peers).
    pub restart_time: Option<u16>,
    /// Seconds between keepalives to this peer (Calico's keepaliveTime); absent: a third of
    /// the hold time.
    pub keepalive_time: Option<u16>,
    /// Times our AS may appear in its routes' AS_PATH (Calico's numAllowedLocalASNumbers).
    pub allow_local_as: u8,
    /// Routes passed on to this eBGP peer keep their next hop (Calico's keepOriginalNextHop).
    pub keep_original_next_hop: bool,
    /// A peer not on the uplink's subnet is reached through this gateway (of the peer's
    /// family): a static route to it (Calico's reachableBy).
    pub reachable_by: Option<IpAddr>,
    /// Connections to it leave from the address the kernel picks by its routes, not from the
    /// node's (Calico's `sourceAddress: None`).
    pub any_source: bool,
}

/// Another node of the cluster, as the sessions with it need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterNode {
    pub address: Ipv4Addr,
    /// Its route reflector cluster ID: it is a reflector.
    pub reflector: Option<Ipv4Addr>,
    /// Its AS (Calico's Node.spec.bgp.asNumber, or the cluster's): a session between nodes
    /// of different AS numbers is eBGP.
    pub as_number: u32,
    /// Where it listens for BGP (BGPConfiguration.listenPort).
    pub port: u16,
}

/// The sessions a node has with the other nodes of its cluster, as Calico sets them up:
/// reflectors (nodes with a cluster ID) peer with each other and with every other node,
/// whose clients they are; two other nodes peer only with the mesh on. A reflector is never
/// a mesh node, as in Calico: so the mesh can be turned on beside the reflectors and the
/// reflectors undone once the mesh's sessions are up (and the other way round), the routes
/// always having a way. `mesh_restart_time` is the graceful-restart time announced to mesh
/// peers (BGPConfiguration.nodeMeshMaxRestartTime), `mesh_password` their TCP-MD5 key
/// (nodeMeshPassword).
pub fn cluster_peers(
    me: Ipv4Addr,
    my_cluster_id: Option<Ipv4Addr>,
    nodes: &[ClusterNode],
    mesh: bool,
    mesh_restart_time: Option<u16>,
    mesh_password: Option<&str>,
) -> Vec<BgpPeer> {
    nodes
        .iter()
        .filter(|n| n.address != me)
        .filter_map(|n| {
            let kind = match (my_cluster_id, n.reflector) {
                (_, Some(_)) => PeerKind::RouteReflector,
                (Some(_), None) => PeerKind::RouteReflectorClient,
                (None, None) if mesh => PeerKind::Mesh,
                (None, None) => return None,
            };
            let (restart_time, password) = match kind {
                PeerKind::Mesh => (mesh_restart_time, mesh_password.map(str::to_string)),
                _ => (None, None),
            };
            Some(BgpPeer {
                restart_time,
                password,
                ..node_peer(me.into(), n.address.into(), kind, n.as_number, n.port)
            })
        })
        .collect()
}

/// A session with another node of the cluster, over the family of `me` and `address` (the
/// node's own addresses): of a pair, the higher address waits.
pub fn node_peer(me: IpAddr, address: IpAddr, kind: PeerKind, as_number: u32, port: u16) -> BgpPeer {
    BgpPeer {
        address,
        as_number,
        port,
        kind,
        external: false,
        passive: me > address,
        password: None,
        ttl_security: None,
        filters: Vec::new(),
        max_prefixes: None,
        restart_time: None,
        keepalive_time: None,
        allow_local_as: 0,
        keep_original_next_hop: false,
        reachable_by: None,
        any_source: false,
    }
}

/// TLS to etcd, as Calico names its files (`etcdCACertFile`, `etcdCertFile`, `etcdKeyFile`;
/// in a CNI network config `etcd_ca_cert_file`, `etcd_cert_file`, `etcd_key_file`): the CA
/// that signed etcd's certificate, and the client's certificate and key where etcd asks
/// clients for one. PEM files; all unset for `http://` endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdTls {
    #[serde(rename = "etcd_ca_cert_file", default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<std::path::PathBuf>,
    #[serde(rename = "etcd_cert_file", default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<std::path::PathBuf>,
    #[serde(rename = "etcd_key_file", default, skip_serializing_if = "Option::is_none")]
    pub key: Option<std::path::PathBuf>,
}

impl EtcdTls {
    pub fn is_empty(&self) -> bool {
        *self == EtcdTls::default()
    }

    /// These files where set, else `other`'s (command-line flags over a config file's).
    pub fn or(self, other: &EtcdTls) -> EtcdTls {
        EtcdTls {
            ca_cert: self.ca_cert.or_else(|| other.ca_cert.clone()),
            cert: self.cert.or_else(|| other.cert.clone()),
            key: self.key.or_else(|| other.key.clone()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub dataplane: DataplaneMode,
    pub workers: usize,
    pub pin_workers: bool,
    /// The workers' nice value, -20 to 19 (default `forwarding::dataplane::DEFAULT_WORKER_NICE`).
    pub worker_nice: i32,
    /// Merge TCP segments on their way to a pod into super-packets (on by default).
    pub gro: bool,
    /// Send VXLAN cut from a TCP super-packet as UDP super-packets (on by default; the
    /// kernel must have UDP GSO on packet sockets, Linux 6.2 or later).
    pub udp_gso: bool,
    /// `afpacket`: have the kernel drop, after the router's copy, the frames the router
    /// forwards, instead of routing them only to fail (on by default; see `kfilter`).
    pub transit_filter: bool,
    /// Where the CLI and the CNI plugin reach the node ([`DEFAULT_ADMIN_SOCKET`] unless set).
    pub admin_socket: PathBuf,
    pub uplink: Uplink,
    pub blocks: Vec<Ipv4Net>,
    pub pools: Vec<Pool>,
    pub pods: Vec<PodConfig>,
    pub routes: Vec<StaticRoute>,
    /// TTL of the outer IPIP header.
    pub ipip_ttl: u8,
    /// Addresses of the other nodes: IPIP is accepted from these, and a pool route from an
    /// outside peer (a route reflector) is accepted only with one of them as next hop.
    pub ipip_peers: Vec<Ipv4Addr>,
    /// Further outer sources IPIP is accepted from (external routers).
    pub ipip_allowed_sources: Vec<Ipv4Net>,
    pub bgp: Option<BgpConfig>,
    /// Serve Prometheus metrics here (off when absent; Calico's Felix uses port 9091).
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Log filter (`info`, `debug`, or a tracing directive); `RUST_LOG` overrides it.
    pub log_level: Option<String>,
    /// With a datastore: etcd's client URLs. The cluster (pools, BGP, the other nodes) then
    /// comes from Calico's resources there and follows them live; `bgp` and `pools` here are
    /// what the node starts with until etcd answers.
    pub etcd_endpoints: Vec<String>,
    /// With `https://` endpoints: the CA and this node's certificate and key.
    pub etcd_tls: EtcdTls,
    /// With a datastore: where the secrets that `BGPPeer` passwords name are, one directory
    /// per secret and a file per key (`nodeapi::secrets`, Kubernetes' secret volume layout).
    pub secrets_dir: Option<std::path::PathBuf>,
    /// The node's IPv6 side; absent: IPv4 only, and IPv6 is left to the kernel.
    pub ipv6: Option<Ipv6Config>,
}

/// Dual stack: the uplink's IPv6 address, the IPv6 pools and the node's IPv6 blocks. IPv6
/// is never tunnelled (as in Calico): a block of a node on another subnet is reached through
/// the underlay router, which must know the pod routes (in the lab it learns them over BGP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6Config {
    pub address: Ipv6Net,
    /// The underlay router on the uplink: where IPv6 goes whose next hop is off the subnet.
    pub gateway: Option<Ipv6Addr>,
    /// Prefixes reached through `gateway` (the underlay's other subnets).
    pub routes: Vec<Ipv6Net>,
    pub pools: Vec<Ipv6Net>,
    pub blocks: Vec<Ipv6Net>,
    /// The other nodes' IPv6 addresses: an IPv6 pool route is accepted only with one of
    /// them (or this node's) as next hop.
    pub nodes: Vec<Ipv6Addr>,
    /// The pools (of `pools`) with Calico's `natOutgoing`: their pods reach outside every
    /// pool with the node's IPv6 address.
    pub nat_outgoing: Vec<Ipv6Net>,
    /// The pools (of `pools`) with Calico's `disableBGPExport`.
    pub disable_bgp_export: Vec<Ipv6Net>,
}

impl NodeConfig {
    /// The encapsulation mode for routes to `prefix`: its pool's, or Never outside pools.
    /// The tunnel routes to `prefix` use and its mode: VXLAN where the pool's `vxlanMode`
    /// is not Never, else IPIP with the pool's `ipipMode` (Never outside pools).
    pub fn encap_for(&self, prefix: &Ipv4Net) -> (Encap, IpipMode) {
        match self.pools.iter().find(|p| p.cidr.contains(prefix)) {
            Some(p) if p.vxlan_mode != IpipMode::Never => (Encap::Vxlan, p.vxlan_mode),
            Some(p) => (Encap::Ipip, p.ipip_mode),
            None => (Encap::Ipip, IpipMode::Never),
        }
    }

    /// Whether some pool uses VXLAN.
    pub fn uses_vxlan(&self) -> bool {
        self.pools.iter().any(|p| p.vxlan_mode != IpipMode::Never)
    }

    /// Whether some pool uses IPIP or VXLAN.
    pub fn uses_tunnel(&self) -> bool {
        self.pools.iter().any(|p| p.tunnel_overhead() > 0)
    }

    /// The TUN device through which the node's own traffic enters the tunnel (and in tun
    /// mode the pods' too), named as Calico names its tunnel devices: `vxlan.calico` where
    /// the pools tunnel only with VXLAN, `tunl0` otherwise. The name is what a user sees;
    /// what is wrapped how is the FIB's business, whatever device a packet came through.
    pub fn tunnel_device(&self) -> &'static str {
        let ipip = self.pools.iter().any(|p| p.ipip_mode != IpipMode::Never);
        if self.uses_vxlan() && !ipip {
            VXLAN_DEVICE
        } else {
            IPIP_DEVICE
        }
    }

    /// The tunnel device's MTU: the underlay's less the largest overhead of the pools'
    /// tunnels (1450 for VXLAN on 1500, 1480 for IPIP).
    pub fn tunnel_device_mtu(&self, underlay_mtu: u16) -> u16 {
        underlay_mtu.saturating_sub(self.tunnel_overhead().max(encap::ipip::OVERHEAD as u16))
    }

    /// A new pod's MTU, as Calico's auto-detection sets it: the underlay's less the largest
    /// overhead of the pools' tunnels (the whole underlay's without any).
    pub fn pod_mtu(&self, underlay_mtu: u16) -> u16 {
        underlay_mtu.saturating_sub(self.tunnel_overhead())
    }

    fn tunnel_overhead(&self) -> u16 {
        self.pools.iter().map(Pool::tunnel_overhead).max().unwrap_or(0)
    }
}

#[derive(Debug, Clone)]
pub struct Uplink {
    pub interface: String,
    pub address: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    pub name: String,
    pub interface: String,
    pub address: Ipv4Addr,
    /// Its IPv6 address, on a dual-stack node.
    pub address6: Option<Ipv6Addr>,
    /// The container it is (a CNI pod); None for a configured pod.
    pub container: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticAction {
    Via(Ipv4Addr),
    Blackhole,
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub prefix: Ipv4Net,
    pub action: StaticAction,
}

impl NodeConfig {
    /// The static routes: the config's, and a /32 through its gateway to each BGP peer that
    /// is not on the uplink's subnet (Calico's BGPPeer reachableBy).
    pub fn static_routes(&self) -> impl Iterator<Item = StaticRoute> + '_ {
        let peers = self.bgp.iter().flat_map(|b| &b.peers).filter_map(|p| match (p.address, p.reachable_by) {
            (IpAddr::V4(a), Some(IpAddr::V4(gw))) => {
                Some(StaticRoute { prefix: Ipv4Net::from(a), action: StaticAction::Via(gw) })
            }
            _ => None,
        });
        self.routes.iter().cloned().chain(peers)
    }

    /// The IPv6 BGP peers reached through a gateway (reachableBy): a /128 to each.
    pub fn peer_routes6(&self) -> impl Iterator<Item = (Ipv6Net, Ipv6Addr)> + '_ {
        self.bgp.iter().flat_map(|b| &b.peers).filter_map(|p| match (p.address, p.reachable_by) {
            (IpAddr::V6(a), Some(IpAddr::V6(gw))) => Some((Ipv6Net::from(a), gw)),
            _ => None,
        })
    }
}

// The file format, as written by `lab up` and read back.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub dataplane: DataplaneMode,
    #[serde(default = "default_workers")]
    pub workers: Spanned<usize>,
    #[serde(default = "default_true")]
    pub pin_workers: bool,
    #[serde(default = "default_worker_nice")]
    pub worker_nice: Spanned<i32>,
    #[serde(default = "default_true")]
    pub gro: bool,
    #[serde(default = "default_true")]
    pub udp_gso: bool,
    #[serde(default = "default_true")]
    pub transit_filter: bool,
    #[serde(default = "default_admin_socket")]
    pub admin_socket: PathBuf,
    #[serde(default)]
    pub metrics_address: Option<Spanned<String>>,
    #[serde(default)]
    pub log_level: Option<Spanned<String>>,
    #[serde(default = "default_ttl")]
    pub ipip_ttl: Spanned<u8>,
    #[serde(default)]
    pub ipip_peers: Vec<Spanned<String>>,
    #[serde(default)]
    pub ipip_allowed_sources: Vec<Spanned<String>>,
    pub uplink: RawUplink,
    #[serde(default)]
    pub blocks: Vec<Spanned<String>>,
    #[serde(default)]
    pub pools: Vec<RawPool>,
    #[serde(default)]
    pub pods: Vec<RawPod>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub bgp: Option<RawBgp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_endpoints: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_ca_cert_file: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_cert_file: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_key_file: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<RawIpv6>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpv6 {
    pub address: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Spanned<String>>,
    #[serde(default)]
    pub routes: Vec<Spanned<String>>,
    #[serde(default)]
    pub pools: Vec<Spanned<String>>,
    #[serde(default)]
    pub blocks: Vec<Spanned<String>>,
    #[serde(default)]
    pub nodes: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat_outgoing: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable_bgp_export: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    pub as_number: Spanned<u32>,
    #[serde(default)]
    pub router_id: Option<Spanned<String>>,
    #[serde(default = "default_bgp_port")]
    pub port: Spanned<u16>,
    #[serde(default = "default_hold")]
    pub hold_time: Spanned<u16>,
    #[serde(default = "default_retry")]
    pub connect_retry_secs: u16,
    #[serde(default = "default_gr")]
    pub graceful_restart_secs: u16,
    #[serde(default = "default_max_stale")]
    pub max_stale_secs: u16,
    #[serde(default)]
    pub route_reflector_cluster_id: Option<Spanned<String>>,
    #[serde(default)]
    pub peers: Vec<RawBgpPeer>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<RawFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<RawPrefixAdvertisement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_ips: Vec<Spanned<String>>,
    /// Calico's bindMode: `NodeIP` (the default) or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<Spanned<String>>,
}

/// Calico's BGPFilter, as the node config and the lab's topology both write it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    pub name: Spanned<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<RawRule>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<RawRule>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub cidr: Spanned<String>,
    pub match_operator: bgp::policy::MatchOperator,
    pub action: bgp::policy::Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<bgp::policy::Source>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrefixAdvertisement {
    pub cidr: Spanned<String>,
    pub communities: Vec<Spanned<String>>,
}

/// Checks BGPFilters: names unique, CIDRs valid.
pub fn check_filters(src: &Source<'_>, raw: &[RawFilter]) -> Result<Vec<bgp::policy::Filter>, FileError> {
    use bgp::policy::{Filter, Rule};
    let rules = |rs: &[RawRule]| -> Result<Vec<Rule>, FileError> {
        rs.iter()
            .map(|r| {
                let cidr = ipnet::IpNet::V4(src.at(&r.cidr, fileerr::parse_net(r.cidr.get_ref(), "cidr"))?);
                Ok(Rule { source: r.source, ..Rule::new(cidr, r.match_operator, r.action) })
            })
            .collect()
    };
    let mut out: Vec<Filter> = Vec::new();
    for f in raw {
        let name = f.name.get_ref();
        if name.is_empty() || out.iter().any(|o| &o.name == name) {
            return Err(src.error_at(f.name.span(), format!("filter name `{name}` is empty or used twice")));
        }
        if f.import_v4.len() > usize::from(u16::MAX) || f.export_v4.len() > usize::from(u16::MAX) {
            return Err(src.error_at(f.name.span(), "a filter has at most 65535 rules a direction"));
        }
        out.push(Filter { name: name.clone(), export: rules(&f.export_v4)?, import: rules(&f.import_v4)? });
    }
    Ok(out)
}

/// Checks a peer's list of filter names against the defined filters.
/// `section` is where filters are defined in this kind of file, for the error message.
pub fn check_filter_names(
    src: &Source<'_>,
    names: &[Spanned<String>],
    defined: &[bgp::policy::Filter],
    section: &str,
) -> Result<Vec<String>, FileError> {
    if names.len() > usize::from(u8::MAX) {
        return Err(src.error("a peer takes at most 255 filters"));
    }
    names
        .iter()
        .map(|n| match defined.iter().any(|f| &f.name == n.get_ref()) {
            true => Ok(n.get_ref().clone()),
            false => Err(src.error_at(n.span(), format!("no [[{section}]] entry is named `{}`", n.get_ref()))),
        })
        .collect()
}

/// Calico's BGPConfiguration.communities: a name for a community value.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommunity {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
}

/// Checks named communities: names unique and not a well-known name, values valid.
pub fn check_communities(src: &Source<'_>, raw: &[RawCommunity]) -> Result<Vec<(String, u32)>, FileError> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for c in raw {
        let name = c.name.get_ref();
        if name.is_empty() || out.iter().any(|(n, _)| n == name) || bgp::policy::community::parse(name).is_ok() {
            return Err(src.error_at(c.name.span(), format!("community name `{name}` is empty, used twice or a value")));
        }
        out.push((name.clone(), src.at(&c.value, bgp::policy::community::parse(c.value.get_ref()))?));
    }
    Ok(out)
}

/// Checks prefix advertisements; a community is a value, a well-known name, or one of
/// `named` (Calico's BGPConfiguration.communities).
pub fn check_prefix_advertisements(
    src: &Source<'_>,
    raw: &[RawPrefixAdvertisement],
    named: &[(String, u32)],
) -> Result<Vec<PrefixAdvertisement>, FileError> {
    let community = |c: &Spanned<String>| match named.iter().find(|(n, _)| n == c.get_ref()) {
        Some((_, v)) => Ok(*v),
        None => src.at(c, bgp::policy::community::parse(c.get_ref())),
    };
    raw.iter()
        .map(|a| {
            Ok(PrefixAdvertisement {
                cidr: src.at(&a.cidr, fileerr::parse_net(a.cidr.get_ref(), "cidr"))?,
                communities: a.communities.iter().map(community).collect::<Result<_, _>>()?,
            })
        })
        .collect()
}

impl BgpConfig {
    /// The raw forms of the filters and prefix advertisements, for writing a config back.
    fn raw_policy(&self) -> (Vec<RawFilter>, Vec<RawPrefixAdvertisement>) {
        use bgp::policy::Rule;
        let s = |v: String| Spanned::new(0..0, v);
        let rules = |rs: &[Rule]| {
            rs.iter()
                .map(|r| RawRule {
                    cidr: s(r.cidr.to_string()),
                    match_operator: r.operator,
                    action: r.action,
                    source: r.source,
                })
                .collect()
        };
        let filters = self
            .filters
            .iter()
            .map(|f| RawFilter { name: s(f.name.clone()), export_v4: rules(&f.export), import_v4: rules(&f.import) })
            .collect();
        let ads = self
            .prefix_advertisements
            .iter()
            .map(|a| RawPrefixAdvertisement {
                cidr: s(a.cidr.to_string()),
                communities: a.communities.iter().map(|c| s(bgp::policy::community::format(*c))).collect(),
            })
            .collect();
        (filters, ads)
    }
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgpPeer {
    pub address: Spanned<String>,
    pub as_number: Spanned<u32>,
    #[serde(default = "default_bgp_port")]
    pub port: Spanned<u16>,
    pub kind: PeerKind,
    /// Absent: a "global" peer is external, any other kind a node of the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<bool>,
    #[serde(default)]
    pub passive: bool,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_prefixes: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_time: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<u16>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allow_local_as: u8,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_original_next_hop: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<Spanned<String>>,
    /// Calico's sourceAddress: `UseNodeIP` (the default) or `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<Spanned<String>>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}

fn default_bgp_port() -> Spanned<u16> {
    Spanned::new(0..0, 179)
}

fn default_hold() -> Spanned<u16> {
    Spanned::new(0..0, 90)
}

fn default_retry() -> u16 {
    5
}

fn default_gr() -> u16 {
    120
}

fn default_max_stale() -> u16 {
    300
}

fn default_worker_nice() -> Spanned<i32> {
    Spanned::new(0..0, forwarding::dataplane::DEFAULT_WORKER_NICE)
}

fn default_admin_socket() -> PathBuf {
    PathBuf::from(DEFAULT_ADMIN_SOCKET)
}

fn default_workers() -> Spanned<usize> {
    // All cores but one (the control thread's), at least one.
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    Spanned::new(0..0, n.saturating_sub(1).max(1))
}

fn default_true() -> bool {
    true
}

fn default_ttl() -> Spanned<u8> {
    Spanned::new(0..0, 64)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    pub interface: Spanned<String>,
    pub address: Spanned<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    pub cidr: Spanned<String>,
    #[serde(default)]
    pub ipip_mode: IpipMode,
    #[serde(default = "never", skip_serializing_if = "is_never")]
    pub vxlan_mode: Spanned<IpipMode>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_bgp_export: bool,
}

fn never() -> Spanned<IpipMode> {
    Spanned::new(0..0, IpipMode::Never)
}

fn is_never(m: &Spanned<IpipMode>) -> bool {
    *m.get_ref() == IpipMode::Never
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPod {
    pub name: Spanned<String>,
    pub interface: Spanned<String>,
    pub address: Spanned<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Spanned<String>,
    #[serde(default)]
    pub via: Option<Spanned<String>>,
    /// "blackhole" or "unreachable" instead of `via`.
    #[serde(default, rename = "type")]
    pub kind: Option<Spanned<String>>,
}

fn check_ifname(src: &Source<'_>, s: &Spanned<String>) -> Result<String, FileError> {
    let n = s.get_ref();
    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']) {
        return Err(
            src.error_at(s.span(), format!("interface name {n:?} is not valid (1-15 characters, no '/' or spaces)"))
        );
    }
    Ok(n.clone())
}

/// Workers, their nice value and the outer TTL, each within its range.
fn tuning(src: &Source<'_>, raw: &RawConfig) -> Result<(usize, i32, u8), FileError> {
    let workers = *raw.workers.get_ref();
    if !(1..=64).contains(&workers) {
        return Err(src.error_at(raw.workers.span(), format!("workers = {workers}: use 1 to 64")));
    }
    let worker_nice = *raw.worker_nice.get_ref();
    if !(-20..=19).contains(&worker_nice) {
        return Err(src.error_at(
            raw.worker_nice.span(),
            format!("worker_nice = {worker_nice}: a nice value is -20 (first) to 19 (last)"),
        ));
    }
    let ipip_ttl = *raw.ipip_ttl.get_ref();
    if ipip_ttl == 0 {
        return Err(
            src.error_at(raw.ipip_ttl.span(), "ipip_ttl = 0 would drop every tunnelled packet at the first hop")
        );
    }
    Ok((workers, worker_nice, ipip_ttl))
}

fn uplink(src: &Source<'_>, raw: &RawUplink) -> Result<Uplink, FileError> {
    let interface = check_ifname(src, &raw.interface)?;
    let address = src.at(&raw.address, fileerr::parse_net(raw.address.get_ref(), "uplink address"))?;
    if address.prefix_len() >= 31 {
        // Under CrossSubnet every peer would look remote and everything would be tunnelled.
        return Err(src.error_at(
            raw.address.span(),
            format!(
                "uplink address {address} has no neighbours on its subnet, so every node would look remote \
                 (CrossSubnet would tunnel everything); give the uplink its real prefix length, like {}/24",
                address.addr()
            ),
        ));
    }
    Ok(Uplink { interface, address })
}

/// The pods, each with an interface and an address of its own, none on the uplink.
fn pods(src: &Source<'_>, raw: &[RawPod], uplink: &Uplink) -> Result<Vec<PodConfig>, FileError> {
    let mut pods: Vec<PodConfig> = Vec::new();
    for p in raw {
        let interface = check_ifname(src, &p.interface)?;
        let address = src.at(&p.address, fileerr::parse_addr(p.address.get_ref(), "pod address"))?;
        let name = p.name.get_ref();
        // As the admin socket takes a pod's name (the pods file and `router` output hold it).
        if !crate::admin::valid_token(name, crate::admin::MAX_POD_NAME) {
            return Err(src.error_at(
                p.name.span(),
                format!("pod name {name:?} is not 1-{} letters, digits, '-', '_' or '.'", crate::admin::MAX_POD_NAME),
            ));
        }
        if pods.iter().any(|o| &o.name == name) {
            return Err(src.error_at(p.name.span(), format!("a second pod named {name}")));
        }
        if let Some(o) = pods.iter().find(|o| o.interface == interface) {
            return Err(
                src.error_at(p.interface.span(), format!("pod {name} has the interface {interface} of pod {}", o.name))
            );
        }
        if let Some(o) = pods.iter().find(|o| o.address == address) {
            return Err(
                src.error_at(p.address.span(), format!("pod {name} has the address {address} of pod {}", o.name))
            );
        }
        if interface == uplink.interface {
            return Err(src.error_at(p.interface.span(), "a pod cannot use the uplink interface"));
        }
        let address6 = match &p.address6 {
            Some(a) => {
                let a6 = src.at(a, fileerr::parse_addr6(a.get_ref(), "pod address6"))?;
                if let Some(o) = pods.iter().find(|o| o.address6 == Some(a6)) {
                    return Err(
                        src.error_at(a.span(), format!("pod {name} has the IPv6 address {a6} of pod {}", o.name))
                    );
                }
                Some(a6)
            }
            None => None,
        };
        pods.push(PodConfig { name: p.name.get_ref().clone(), interface, address, address6, container: None });
    }
    Ok(pods)
}

/// Blocks and pods inside the pools, of each family where its pools are in the file (with a
/// datastore they may come from etcd alone): outside them a block would be blackholed here
/// and announced to nobody, since nodes export only the pools' routes, and its pods
/// reachable from this node only.
fn in_pools(
    src: &Source<'_>,
    raw: &RawConfig,
    blocks: &[Ipv4Net],
    pools: &[Pool],
    pods: &[PodConfig],
    ipv6: Option<&Ipv6Config>,
) -> Result<(), FileError> {
    if !pools.is_empty() {
        let pooled = |b: &Ipv4Net| pools.iter().any(|p| p.cidr.contains(b));
        if let Some((n, b)) = raw.blocks.iter().zip(blocks).find(|(_, b)| !pooled(b)) {
            return Err(src.error_at(n.span(), format!("block {b} is not inside one of the pools")));
        }
        if let Some((r, p)) = raw.pods.iter().zip(pods).find(|(_, p)| !pooled(&Ipv4Net::from(p.address))) {
            let why = format!("pod {} has {}, which is in none of the pools", p.name, p.address);
            return Err(src.error_at(r.address.span(), why));
        }
    }
    let (Some(v6), Some(raw6)) = (ipv6.filter(|v| !v.pools.is_empty()), raw.ipv6.as_ref()) else { return Ok(()) };
    let pooled = |b: &Ipv6Net| v6.pools.iter().any(|p| p.contains(b));
    if let Some((n, b)) = raw6.blocks.iter().zip(&v6.blocks).find(|(_, b)| !pooled(b)) {
        return Err(src.error_at(n.span(), format!("ipv6 block {b} is not inside one of ipv6.pools")));
    }
    let stray = raw.pods.iter().zip(pods).find_map(|(r, p)| {
        let a = p.address6.filter(|a| !pooled(&Ipv6Net::from(*a)))?;
        Some((r.address6.as_ref()?, p, a))
    });
    match stray {
        Some((at, p, a)) => {
            Err(src.error_at(at.span(), format!("pod {} has {a}, which is in none of ipv6.pools", p.name)))
        }
        None => Ok(()),
    }
}

fn static_route(src: &Source<'_>, r: &RawRoute, uplink: &Uplink) -> Result<StaticRoute, FileError> {
    let prefix = net_no_host_bits(src, &r.prefix, "route prefix")?;
    let action = match (&r.via, &r.kind) {
        (Some(v), None) => {
            let gw = src.at(v, fileerr::parse_addr(v.get_ref(), "via"))?;
            if gw == uplink.address.addr() {
                return Err(src.error_at(v.span(), format!("next hop {gw} for {prefix} is this node itself")));
            }
            StaticAction::Via(gw)
        }
        (None, Some(k)) => match k.get_ref().as_str() {
            "blackhole" => StaticAction::Blackhole,
            "unreachable" => StaticAction::Unreachable,
            other => {
                return Err(
                    src.error_at(k.span(), format!("route type {other:?}: use \"blackhole\" or \"unreachable\""))
                )
            }
        },
        _ => return Err(src.error_at(r.prefix.span(), format!("route {prefix} needs exactly one of `via` or `type`"))),
    };
    Ok(StaticRoute { prefix, action })
}

/// The first of `nets` that overlaps one before it, with that one: blocks and pools are
/// disjoint (as Calico's), or a pod address would have two owners.
fn overlap<N: Copy>(nets: &[N], contains: impl Fn(&N, &N) -> bool) -> Option<(usize, N, N)> {
    nets.iter().enumerate().find_map(|(i, n)| {
        let o = nets[..i].iter().find(|o| contains(o, n) || contains(n, o))?;
        Some((i, *n, *o))
    })
}

/// Blocks and pools of each family disjoint, and no static route for what the node routes
/// itself (one of its blocks, its uplink's subnet or address): the two would race for one
/// prefix. A static route inside a block stays allowed: it is how a node without BGP
/// reaches a borrowed address of its block on another node.
fn no_overlaps(
    src: &Source<'_>,
    raw: &RawConfig,
    blocks: &[Ipv4Net],
    pools: &[Pool],
    routes: &[StaticRoute],
    uplink: &Uplink,
    ipv6: Option<&Ipv6Config>,
) -> Result<(), FileError> {
    if let Some((i, b, o)) = overlap(blocks, |a, b| a.contains(b)) {
        return Err(src.error_at(raw.blocks[i].span(), format!("block {b} overlaps block {o}")));
    }
    let cidrs: Vec<Ipv4Net> = pools.iter().map(|p| p.cidr).collect();
    if let Some((i, p, o)) = overlap(&cidrs, |a, b| a.contains(b)) {
        return Err(src.error_at(raw.pools[i].cidr.span(), format!("pool {p} overlaps pool {o}")));
    }
    let host = Ipv4Net::from(uplink.address.addr());
    for (r, raw_r) in routes.iter().zip(&raw.routes) {
        let why = if blocks.contains(&r.prefix) {
            "is one of the node's blocks, which it routes itself"
        } else if r.prefix == uplink.address.trunc() {
            "is the uplink's subnet, which the node reaches directly"
        } else if r.prefix == host {
            "is the node's own address"
        } else {
            continue;
        };
        return Err(src.error_at(raw_r.prefix.span(), format!("route {} {why}", r.prefix)));
    }
    let (Some(v6), Some(raw6)) = (ipv6, &raw.ipv6) else { return Ok(()) };
    for (nets, spans, what) in [(&v6.blocks, &raw6.blocks, "ipv6 block"), (&v6.pools, &raw6.pools, "ipv6 pool")] {
        if let Some((i, n, o)) = overlap(nets, |a, b| a.contains(b)) {
            return Err(src.error_at(spans[i].span(), format!("{what} {n} overlaps {what} {o}")));
        }
    }
    for (r, raw_r) in v6.routes.iter().zip(&raw6.routes) {
        let why = if v6.blocks.contains(r) {
            "is one of the node's blocks, which it routes itself"
        } else if *r == v6.address.trunc() {
            "is the uplink's subnet, which the node reaches directly"
        } else {
            continue;
        };
        return Err(src.error_at(raw_r.span(), format!("ipv6 route {r} {why}")));
    }
    Ok(())
}

/// No pool may hold a node's address (this one's or another's): pods would get the nodes'
/// addresses, and the routes to the nodes would become pod routes.
fn no_node_in_pools(
    src: &Source<'_>,
    raw: &RawConfig,
    pools: &[Pool],
    uplink: &Uplink,
    peers: &[Ipv4Addr],
    ipv6: Option<&Ipv6Config>,
) -> Result<(), FileError> {
    let v6 = ipv6.zip(raw.ipv6.as_ref());
    // Both families' pools with where the file names them, and the nodes' addresses.
    let all: Vec<(ipnet::IpNet, std::ops::Range<usize>, &str)> = (pools.iter().zip(&raw.pools))
        .map(|(p, r)| (p.cidr.into(), r.cidr.span(), "pool"))
        .chain(
            v6.into_iter()
                .flat_map(|(v, r)| v.pools.iter().zip(&r.pools).map(|(p, r)| ((*p).into(), r.span(), "ipv6 pool"))),
        )
        .collect();
    let nodes = std::iter::once((IpAddr::from(uplink.address.addr()), "the node's own address"))
        .chain(peers.iter().map(|p| (IpAddr::from(*p), "a node's (ipip_peers)")))
        .chain(ipv6.map(|v| (IpAddr::from(v.address.addr()), "the node's own address")))
        .chain(ipv6.into_iter().flat_map(|v| v.nodes.iter().map(|n| (IpAddr::from(*n), "a node's (ipv6.nodes)"))));
    for (addr, whose) in nodes {
        if let Some((p, span, what)) = all.iter().find(|(p, ..)| p.contains(&addr)) {
            let msg = format!("{what} {p} holds {addr}, {whose}: pods would get the nodes' addresses");
            return Err(src.error_at(span.clone(), msg));
        }
    }
    Ok(())
}

fn bgp(src: &Source<'_>, b: &RawBgp, uplink: &Uplink, net6: Option<Ipv6Net>) -> Result<BgpConfig, FileError> {
    let filters = check_filters(src, &b.filters)?;
    let hold = *b.hold_time.get_ref();
    as_and_port(src, &b.as_number, &b.port)?;
    if hold == 1 || hold == 2 {
        return Err(
            src.error_at(b.hold_time.span(), format!("hold_time = {hold}: use 0 or at least 3 seconds (RFC 4271)"))
        );
    }
    let addr = |r: &Option<Spanned<String>>, what: &str| match r {
        Some(r) => src.at(r, fileerr::parse_addr(r.get_ref(), what)).map(Some),
        None => Ok(None),
    };
    Ok(BgpConfig {
        as_number: *b.as_number.get_ref(),
        router_id: addr(&b.router_id, "router_id")?,
        port: *b.port.get_ref(),
        hold_time: hold,
        connect_retry_secs: b.connect_retry_secs.max(1),
        graceful_restart_secs: b.graceful_restart_secs.min(MAX_RESTART_TIME),
        max_stale_secs: b.max_stale_secs,
        route_reflector_cluster_id: addr(&b.route_reflector_cluster_id, "route_reflector_cluster_id")?,
        peers: {
            let peers: Vec<BgpPeer> =
                b.peers.iter().map(|p| bgp_peer(src, p, uplink, net6, &filters)).collect::<Result<_, _>>()?;
            // A session is known by its peer's address: a second one there could never open.
            for (i, p) in peers.iter().enumerate() {
                if let Some(j) = peers[..i].iter().position(|q| q.address == p.address) {
                    let first = src.line_of(b.peers[j].address.span().start);
                    return Err(src.error_at(
                        b.peers[i].address.span(),
                        format!("a second peer at {} (the first is on line {first})", p.address),
                    ));
                }
            }
            peers
        },
        prefix_advertisements: check_prefix_advertisements(src, &b.prefix_advertisements, &[])?,
        service_ips: b
            .service_ips
            .iter()
            .map(|n| src.at(n, fileerr::parse_cidr(n.get_ref(), "service_ips")))
            .collect::<Result<_, _>>()?,
        listen_all: match b.bind_mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
            None | Some((_, "NodeIP")) => false,
            Some((_, "None")) => true,
            Some((m, other)) => {
                return Err(src.error_at(m.span(), format!("bind_mode {other:?}: use \"NodeIP\" or \"None\"")))
            }
        },
        filters,
    })
}

/// An AS a session can use, and a port that is one.
fn as_and_port(src: &Source<'_>, asn: &Spanned<u32>, port: &Spanned<u16>) -> Result<(), FileError> {
    if let Some(why) = bgp::unusable_as(*asn.get_ref()) {
        return Err(src.error_at(asn.span(), why));
    }
    if *port.get_ref() == 0 {
        return Err(src.error_at(port.span(), "port = 0: BGP's port is 179; use 1 to 65535"));
    }
    Ok(())
}

fn bgp_peer(
    src: &Source<'_>,
    p: &RawBgpPeer,
    uplink: &Uplink,
    net6: Option<Ipv6Net>,
    filters: &[bgp::policy::Filter],
) -> Result<BgpPeer, FileError> {
    let address = src.at(&p.address, fileerr::parse_ip(p.address.get_ref(), "peer address"))?;
    as_and_port(src, &p.as_number, &p.port)?;
    let refuse = |why: &str| Err(src.error_at(p.address.span(), why));
    let addr6 = net6.map(|n| n.addr());
    if address == uplink.address.addr() || Some(address) == addr6.map(IpAddr::V6) {
        return refuse("a node cannot peer with itself");
    }
    if address.is_ipv6() && addr6.is_none() {
        return refuse("an IPv6 peer needs the node's own IPv6 address: add an [ipv6] section");
    }
    if p.password.as_ref().is_some_and(|pw| pw.len() > crate::secrets::MAX_PASSWORD) {
        return refuse(&format!("TCP MD5 passwords are at most {} bytes", crate::secrets::MAX_PASSWORD));
    }
    if p.ttl_security.is_some_and(|t| !(1..=254).contains(&t)) {
        return refuse("ttl_security is a hop count from 1 to 254");
    }
    if p.max_prefixes == Some(0) {
        return refuse("max_prefixes = 0 would refuse every session; leave it out for no limit");
    }
    if p.ttl_security.is_some() && p.passive {
        return refuse("ttl_security needs passive = false: the TTL is checked on the connection we open");
    }
    if p.restart_time.is_some_and(|t| t > MAX_RESTART_TIME) {
        return refuse("restart_time is at most 4095 seconds (12 bits in the capability)");
    }
    let reachable_by = match &p.reachable_by {
        Some(g) => {
            let gw = src.at(g, fileerr::parse_ip(g.get_ref(), "reachable_by"))?;
            let on_link = match gw {
                IpAddr::V4(gw) => address.is_ipv4() && uplink.address.contains(&gw),
                IpAddr::V6(gw) => address.is_ipv6() && net6.is_some_and(|n| n.contains(&gw)),
            };
            if !on_link {
                return Err(src.error_at(
                    g.span(),
                    "reachable_by is a gateway on the uplink's subnet of the peer's family (ipv6.address's for an IPv6 peer)",
                ));
            }
            Some(gw)
        }
        None => None,
    };
    if p.keepalive_time == Some(0) {
        return refuse("keepalive_time = 0 sends no keepalives; leave it out for a third of the hold time");
    }
    Ok(BgpPeer {
        address,
        as_number: *p.as_number.get_ref(),
        port: *p.port.get_ref(),
        kind: p.kind,
        external: p.external.unwrap_or(p.kind == PeerKind::Global),
        passive: p.passive,
        password: p.password.clone(),
        ttl_security: p.ttl_security,
        filters: check_filter_names(src, &p.filters, filters, "bgp.filters")?,
        max_prefixes: p.max_prefixes,
        restart_time: p.restart_time,
        keepalive_time: p.keepalive_time,
        allow_local_as: p.allow_local_as,
        keep_original_next_hop: p.keep_original_next_hop,
        reachable_by,
        any_source: match p.source_address.as_ref().map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "UseNodeIP")) => false,
            Some((_, "None")) => true,
            Some((s, other)) => {
                return Err(src.error_at(s.span(), format!("source_address {other:?}: use \"UseNodeIP\" or \"None\"")))
            }
        },
    })
}

fn ipv6(src: &Source<'_>, raw: &RawIpv6, pods: &[PodConfig]) -> Result<Ipv6Config, FileError> {
    let address = src.at(&raw.address, fileerr::parse_net6(raw.address.get_ref(), "ipv6.address"))?;
    if address.prefix_len() >= 127 {
        return Err(src.error_at(
            raw.address.span(),
            format!("ipv6.address {address}: give the uplink its subnet's prefix length, like /64"),
        ));
    }
    let gateway = match &raw.gateway {
        Some(g) => Some(src.at(g, fileerr::parse_addr6(g.get_ref(), "ipv6.gateway"))?),
        None => None,
    };
    let nets = |list: &[Spanned<String>], what: &str| -> Result<Vec<Ipv6Net>, FileError> {
        list.iter()
            .map(|n| {
                let net = src.at(n, fileerr::parse_net6(n.get_ref(), what))?;
                if net.trunc() != net {
                    return Err(src
                        .error_at(n.span(), format!("{what} {net} has host bits set; did you mean {}?", net.trunc())));
                }
                Ok(net)
            })
            .collect()
    };
    let pools = nets(&raw.pools, "ipv6 pool")?;
    let routes = nets(&raw.routes, "ipv6 route")?;
    if let (Some(r), None) = (raw.routes.first(), gateway) {
        return Err(src.error_at(r.span(), "ipv6.routes go through ipv6.gateway, which is missing"));
    }
    let blocks = nets(&raw.blocks, "ipv6 block")?;
    let nodes = raw
        .nodes
        .iter()
        .map(|a| src.at(a, fileerr::parse_addr6(a.get_ref(), "ipv6 node")))
        .collect::<Result<Vec<_>, _>>()?;
    if pools.is_empty() && pods.iter().any(|p| p.address6.is_some()) {
        return Err(src.error_at(raw.address.span(), "pods have IPv6 addresses but [ipv6] names no pool"));
    }
    let nat_outgoing = nets(&raw.nat_outgoing, "ipv6 nat_outgoing pool")?;
    let disable_bgp_export = nets(&raw.disable_bgp_export, "ipv6 disable_bgp_export pool")?;
    for (field, raw_list, list) in [
        ("nat_outgoing", &raw.nat_outgoing, &nat_outgoing),
        ("disable_bgp_export", &raw.disable_bgp_export, &disable_bgp_export),
    ] {
        if let Some((n, net)) = raw_list.iter().zip(list).find(|(_, net)| !pools.contains(net)) {
            return Err(src.error_at(n.span(), format!("ipv6.{field} {net} is not one of ipv6.pools")));
        }
    }
    Ok(Ipv6Config { address, gateway, routes, pools, blocks, nodes, nat_outgoing, disable_bgp_export })
}

fn net_no_host_bits(src: &Source<'_>, s: &Spanned<String>, what: &str) -> Result<Ipv4Net, FileError> {
    let net = src.at(s, fileerr::parse_net(s.get_ref(), what))?;
    if net.trunc() != net {
        return Err(src.error_at(s.span(), format!("{what} {net} has host bits set; did you mean {}?", net.trunc())));
    }
    Ok(net)
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, FileError> {
        let text = fileerr::read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, FileError> {
        let src = Source { path, text };
        let raw: RawConfig = src.parse()?;
        let (workers, worker_nice, ipip_ttl) = tuning(&src, &raw)?;
        let uplink = uplink(&src, &raw.uplink)?;
        let nets = |list: &[Spanned<String>], what: &str| -> Result<Vec<Ipv4Net>, FileError> {
            list.iter().map(|n| net_no_host_bits(&src, n, what)).collect()
        };
        let blocks = nets(&raw.blocks, "block")?;
        let ipip_allowed_sources = nets(&raw.ipip_allowed_sources, "allowed IPIP source")?;
        let pools = raw
            .pools
            .iter()
            .map(|p| {
                let vxlan_mode = *p.vxlan_mode.get_ref();
                if vxlan_mode != IpipMode::Never && p.ipip_mode != IpipMode::Never {
                    let msg = "a pool uses IPIP or VXLAN, not both: set ipip_mode = \"Never\" with vxlan_mode";
                    return Err(src.error_at(p.vxlan_mode.span(), msg));
                }
                let cidr = net_no_host_bits(&src, &p.cidr, "pool")?;
                Ok(Pool {
                    cidr,
                    ipip_mode: p.ipip_mode,
                    vxlan_mode,
                    nat_outgoing: p.nat_outgoing,
                    disable_bgp_export: p.disable_bgp_export,
                })
            })
            .collect::<Result<Vec<_>, FileError>>()?;
        let ipip_peers = raw
            .ipip_peers
            .iter()
            .map(|p| src.at(p, fileerr::parse_addr(p.get_ref(), "ipip peer")))
            .collect::<Result<Vec<_>, FileError>>()?;
        let pods = pods(&src, &raw.pods, &uplink)?;
        let ipv6 = raw.ipv6.as_ref().map(|r| ipv6(&src, r, &pods)).transpose()?;
        in_pools(&src, &raw, &blocks, &pools, &pods, ipv6.as_ref())?;
        if ipv6.is_none() {
            if let Some(p) = raw.pods.iter().find(|p| p.address6.is_some()) {
                return Err(src.error_at(
                    p.name.span(),
                    format!("pod {} has an IPv6 address, but there is no [ipv6] section", p.name.get_ref()),
                ));
            }
        }
        let routes = raw.routes.iter().map(|r| static_route(&src, r, &uplink)).collect::<Result<Vec<_>, _>>()?;
        no_overlaps(&src, &raw, &blocks, &pools, &routes, &uplink, ipv6.as_ref())?;
        no_node_in_pools(&src, &raw, &pools, &uplink, &ipip_peers, ipv6.as_ref())?;
        let net6 = ipv6.as_ref().map(|v| v.address);
        let bgp = raw.bgp.as_ref().map(|b| bgp(&src, b, &uplink, net6)).transpose()?;
        let metrics_address = match &raw.metrics_address {
            Some(a) => Some(a.get_ref().parse().map_err(|_| {
                src.error_at(
                    a.span(),
                    format!("metrics_address {:?} is not an address:port like 127.0.0.1:9091", a.get_ref()),
                )
            })?),
            None => None,
        };
        let log_level = match &raw.log_level {
            Some(l) => {
                check_log_filter(l.get_ref()).map_err(|e| {
                    src.error_at(l.span(), format!("log_level {:?}: {e} (try \"info\" or \"debug\")", l.get_ref()))
                })?;
                Some(l.get_ref().clone())
            }
            None => None,
        };
        let etcd_endpoints = raw
            .etcd_endpoints
            .iter()
            .map(|e| {
                if e.get_ref().starts_with("http://") || e.get_ref().starts_with("https://") {
                    Ok(e.get_ref().trim_end_matches('/').to_string())
                } else {
                    Err(src.error_at(
                        e.span(),
                        format!("etcd endpoint {:?} must be http://HOST:PORT or https://HOST:PORT", e.get_ref()),
                    ))
                }
            })
            .collect::<Result<Vec<_>, FileError>>()?;
        let absolute = |d: &Option<Spanned<String>>, field: &str| match d {
            Some(d) if !d.get_ref().starts_with('/') => {
                Err(src.error_at(d.span(), format!("{field} {:?} must be an absolute path", d.get_ref())))
            }
            Some(d) => Ok(Some(std::path::PathBuf::from(d.get_ref()))),
            None => Ok(None),
        };
        let secrets_dir = absolute(&raw.secrets_dir, "secrets_dir")?;
        let etcd_tls = EtcdTls {
            ca_cert: absolute(&raw.etcd_ca_cert_file, "etcd_ca_cert_file")?,
            cert: absolute(&raw.etcd_cert_file, "etcd_cert_file")?,
            key: absolute(&raw.etcd_key_file, "etcd_key_file")?,
        };
        Ok(NodeConfig {
            log_level,
            secrets_dir,
            metrics_address,
            bgp,
            etcd_endpoints,
            etcd_tls,
            name: raw.name.get_ref().clone(),
            dataplane: raw.dataplane,
            workers,
            pin_workers: raw.pin_workers,
            worker_nice,
            gro: raw.gro,
            udp_gso: raw.udp_gso,
            transit_filter: raw.transit_filter,
            admin_socket: raw.admin_socket,
            uplink,
            blocks,
            pools,
            pods,
            routes,
            ipip_ttl,
            ipip_peers,
            ipip_allowed_sources,
            ipv6,
        })
    }

    /// The file text for this config (what `lab up` writes).
    pub fn to_toml(&self) -> String {
        let s = |v: String| Spanned::new(0..0, v);
        let raw = RawConfig {
            name: s(self.name.clone()),
            dataplane: self.dataplane,
            workers: Spanned::new(0..0, self.workers),
            pin_workers: self.pin_workers,
            worker_nice: Spanned::new(0..0, self.worker_nice),
            gro: self.gro,
            udp_gso: self.udp_gso,
            transit_filter: self.transit_filter,
            admin_socket: self.admin_socket.clone(),
            metrics_address: self.metrics_address.map(|a| s(a.to_string())),
            log_level: self.log_level.clone().map(s),
            etcd_endpoints: self.etcd_endpoints.iter().cloned().map(s).collect(),
            etcd_ca_cert_file: self.etcd_tls.ca_cert.as_ref().map(|d| s(d.display().to_string())),
            etcd_cert_file: self.etcd_tls.cert.as_ref().map(|d| s(d.display().to_string())),
            etcd_key_file: self.etcd_tls.key.as_ref().map(|d| s(d.display().to_string())),
            secrets_dir: self.secrets_dir.as_ref().map(|d| s(d.display().to_string())),
            ipip_ttl: Spanned::new(0..0, self.ipip_ttl),
            ipip_peers: self.ipip_peers.iter().map(|a| s(a.to_string())).collect(),
            ipip_allowed_sources: self.ipip_allowed_sources.iter().map(|a| s(a.to_string())).collect(),
            ipv6: self.ipv6.as_ref().map(|v| RawIpv6 {
                address: s(v.address.to_string()),
                gateway: v.gateway.map(|g| s(g.to_string())),
                routes: v.routes.iter().map(|p| s(p.to_string())).collect(),
                pools: v.pools.iter().map(|p| s(p.to_string())).collect(),
                blocks: v.blocks.iter().map(|p| s(p.to_string())).collect(),
                nodes: v.nodes.iter().map(|p| s(p.to_string())).collect(),
                nat_outgoing: v.nat_outgoing.iter().map(|p| s(p.to_string())).collect(),
                disable_bgp_export: v.disable_bgp_export.iter().map(|p| s(p.to_string())).collect(),
            }),
            uplink: RawUplink {
                interface: s(self.uplink.interface.clone()),
                address: s(self.uplink.address.to_string()),
            },
            blocks: self.blocks.iter().map(|b| s(b.to_string())).collect(),
            pools: self
                .pools
                .iter()
                .map(|p| RawPool {
                    cidr: s(p.cidr.to_string()),
                    ipip_mode: p.ipip_mode,
                    vxlan_mode: Spanned::new(0..0, p.vxlan_mode),
                    nat_outgoing: p.nat_outgoing,
                    disable_bgp_export: p.disable_bgp_export,
                })
                .collect(),
            pods: self
                .pods
                .iter()
                .map(|p| RawPod {
                    name: s(p.name.clone()),
                    interface: s(p.interface.clone()),
                    address: s(p.address.to_string()),
                    address6: p.address6.map(|a| s(a.to_string())),
                })
                .collect(),
            bgp: self.bgp.as_ref().map(|b| {
                let (filters, prefix_advertisements) = b.raw_policy();
                RawBgp {
                    as_number: Spanned::new(0..0, b.as_number),
                    router_id: b.router_id.map(|r| s(r.to_string())),
                    port: Spanned::new(0..0, b.port),
                    hold_time: Spanned::new(0..0, b.hold_time),
                    connect_retry_secs: b.connect_retry_secs,
                    graceful_restart_secs: b.graceful_restart_secs,
                    max_stale_secs: b.max_stale_secs,
                    route_reflector_cluster_id: b.route_reflector_cluster_id.map(|r| s(r.to_string())),
                    peers: b
                        .peers
                        .iter()
                        .map(|p| RawBgpPeer {
                            address: s(p.address.to_string()),
                            as_number: Spanned::new(0..0, p.as_number),
                            port: Spanned::new(0..0, p.port),
                            kind: p.kind,
                            external: (p.external != (p.kind == PeerKind::Global)).then_some(p.external),
                            passive: p.passive,
                            password: p.password.clone(),
                            ttl_security: p.ttl_security,
                            filters: p.filters.iter().map(|f| s(f.clone())).collect(),
                            max_prefixes: p.max_prefixes,
                            restart_time: p.restart_time,
                            keepalive_time: p.keepalive_time,
                            allow_local_as: p.allow_local_as,
                            keep_original_next_hop: p.keep_original_next_hop,
                            reachable_by: p.reachable_by.map(|g| s(g.to_string())),
                            source_address: p.any_source.then(|| s("None".to_string())),
                        })
                        .collect(),
                    filters,
                    prefix_advertisements,
                    service_ips: b.service_ips.iter().map(|n| s(n.to_string())).collect(),
                    bind_mode: b.listen_all.then(|| s("None".to_string())),
                }
            }),
            routes: self
                .routes
                .iter()
                .map(|r| {
                    let (via, kind) = match r.action {
                        StaticAction::Via(g) => (Some(s(g.to_string())), None),
                        StaticAction::Blackhole => (None, Some(s("blackhole".into()))),
                        StaticAction::Unreachable => (None, Some(s("unreachable".into()))),
                    };
                    RawRoute { prefix: s(r.prefix.to_string()), via, kind }
                })
                .collect(),
        };
        toml::to_string(&raw).unwrap_or_default()
    }
}

/// The levels a log filter's directive may name.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Checks a log filter as a config file gives it: a level, or directives `target=level`,
/// separated by commas. `tracing`'s own syntax also reads a bare word as a target to log
/// at every level, so a misspelt level (`"debgu"`) would silence the node without a word;
/// here it is an error.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    let is_level = |l: &str| LOG_LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l.trim()));
    let directives: Vec<&str> = filter.split(',').map(str::trim).filter(|d| !d.is_empty()).collect();
    if directives.is_empty() {
        return Err("no level".into());
    }
    for d in directives {
        match d.rsplit_once('=') {
            Some((_, level)) if !is_level(level) => {
                return Err(format!("{level:?} in {d:?} is not a level ({})", LOG_LEVELS.join(", ")))
            }
            Some(_) => {}
            None if !is_level(d) => {
                return Err(format!("{d:?} is neither a level ({}) nor target=level", LOG_LEVELS.join(", ")))
            }
            None => {}
        }
    }
    tracing_subscriber::EnvFilter::try_new(filter).map(|_| ()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "node-a"
workers = 1
admin_socket = "/tmp/node-a.sock"
blocks = ["10.244.1.0/26"]
ipip_peers = ["192.168.100.101", "192.168.200.101"]

[uplink]
interface = "eth0"
address = "192.168.100.100/24"

[[pools]]
cidr = "10.244.0.0/16"
ipip_mode = "CrossSubnet"

[[pods]]
name = "pod-a1"
interface = "cali48dfb98be23"
address = "10.244.1.1"

[[routes]]
prefix = "10.244.2.0/26"
via = "192.168.100.101"
"#;

    fn parse(t: &str) -> Result<NodeConfig, FileError> {
        NodeConfig::parse(Path::new("n.toml"), t)
    }

    #[test]
    fn a_log_level_that_would_silence_the_node_is_refused() {
        for good in ["info", "DEBUG", "router=debug,warn", "router::bgp=trace, info", "off"] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in ["loud", "debgu", "info,router", "router=loud", "", " , "] {
            assert!(check_log_filter(bad).is_err(), "{bad}");
        }
        let e = parse(&format!("log_level = \"debgu\"\n{GOOD}")).expect_err("a typo");
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.to_string().contains("\"debgu\" is neither a level"), "{e}");
    }

    #[test]
    fn reflectors_stay_out_of_the_mesh() {
        let node = |last: u8, reflector: Option<Ipv4Addr>| ClusterNode {
            address: Ipv4Addr::new(192, 168, 100, last),
            reflector,
            as_number: 64512,
            port: 179,
        };
        let id = Some(Ipv4Addr::new(244, 0, 0, 1));
        let cluster = [node(1, id), node(2, None), node(3, None), node(4, id)];
        let kinds = |me: usize, mesh: bool| {
            let others: Vec<ClusterNode> = cluster.iter().copied().filter(|n| n != &cluster[me]).collect();
            cluster_peers(cluster[me].address, cluster[me].reflector, &others, mesh, Some(90), Some("pw"))
                .iter()
                .map(|p| (p.address.to_string(), p.kind, p.restart_time, p.password.clone()))
                .collect::<Vec<_>>()
        };
        let rr = |a: &str| (a.to_string(), PeerKind::RouteReflector, None, None);
        let client = |a: &str| (a.to_string(), PeerKind::RouteReflectorClient, None, None);
        let mesh = |a: &str| (a.to_string(), PeerKind::Mesh, Some(90), Some("pw".to_string()));
        // The mesh on beside two reflectors: the clients mesh with each other only, and the
        // mesh's restart time and key are the mesh sessions' alone.
        assert_eq!(kinds(1, true), [rr("192.168.100.1"), mesh("192.168.100.3"), rr("192.168.100.4")]);
        assert_eq!(kinds(0, true), [client("192.168.100.2"), client("192.168.100.3"), rr("192.168.100.4")]);
        // Off: the same without the clients' session.
        assert_eq!(kinds(1, false), [rr("192.168.100.1"), rr("192.168.100.4")]);
        assert_eq!(kinds(0, false), kinds(0, true));
    }

    #[test]
    fn parses_and_round_trips() {
        let c = parse(GOOD).expect("good");
        assert_eq!(c.routes[0].action, StaticAction::Via(Ipv4Addr::new(192, 168, 100, 101)));
        assert_eq!(c.encap_for(&"10.244.3.0/26".parse().expect("net")), (Encap::Ipip, IpipMode::CrossSubnet));
        assert_eq!(c.encap_for(&"10.99.0.0/16".parse().expect("net")), (Encap::Ipip, IpipMode::Never));
        // What a pod's MTU loses to its pool's tunnel.
        let pool = |ipip_mode, vxlan_mode| Pool {
            cidr: "10.244.0.0/16".parse().expect("net"),
            ipip_mode,
            vxlan_mode,
            nat_outgoing: false,
            disable_bgp_export: false,
        };
        assert_eq!(pool(IpipMode::CrossSubnet, IpipMode::Never).tunnel_overhead(), 20);
        assert_eq!(pool(IpipMode::Never, IpipMode::Always).tunnel_overhead(), 50);
        assert_eq!(pool(IpipMode::Never, IpipMode::Never).tunnel_overhead(), 0);
        assert_eq!(c.ipip_ttl, 64);
        let again = parse(&c.to_toml()).expect("round trip");
        assert_eq!(again.pods, c.pods);
        assert_eq!(again.routes, c.routes);
        assert_eq!(again.pools, c.pools);
        assert_eq!(again.ipip_peers, c.ipip_peers);
        assert_eq!(again.uplink.address, c.uplink.address);
    }

    #[test]
    fn ipv6_section_parses_round_trips_and_is_checked() {
        let dual = GOOD
            .replace("address = \"10.244.1.1\"\n", "address = \"10.244.1.1\"\naddress6 = \"fd00:10:244::1\"\n")
            + "\n[ipv6]\naddress = \"fd00:192:168:100::100/64\"\ngateway = \"fd00:192:168:100::1\"\n\
             routes = [\"fd00:192:168:200::/64\"]\npools = [\"fd00:10:244::/48\"]\nblocks = [\"fd00:10:244::/122\"]\n\
             nodes = [\"fd00:192:168:100::101\"]\n";
        let c = parse(&dual).expect("dual stack");
        let v6 = c.ipv6.clone().expect("ipv6");
        assert_eq!(v6.address.to_string(), "fd00:192:168:100::100/64");
        assert_eq!(c.pods[0].address6, Some("fd00:10:244::1".parse().expect("addr")));
        let again = parse(&c.to_toml()).expect("round trip");
        assert_eq!((again.ipv6, again.pods), (c.ipv6, c.pods));
        // A pod with an IPv6 address needs the section; host bits and routes without a
        // gateway are refused with the line.
        let e = parse(&dual[..dual.find("[ipv6]").expect("section")]).expect_err("no section").to_string();
        assert!(e.contains("no [ipv6] section"), "{e}");
        let e = parse(&dual.replace("fd00:10:244::/122", "fd00:10:244::1/122")).expect_err("host bits").to_string();
        assert!(e.contains("host bits") && e.starts_with("n.toml:"), "{e}");
        let e = parse(&dual.replace("gateway = \"fd00:192:168:100::1\"\n", "")).expect_err("routes").to_string();
        assert!(e.contains("ipv6.gateway"), "{e}");
        // Blocks and pods inside the pools, with the line of the stray one.
        let e = parse(&dual.replace("blocks = [\"fd00:10:244::/122\"]", "blocks = [\"fd00:99::/122\"]"))
            .expect_err("block")
            .to_string();
        assert!(e.contains("ipv6 block fd00:99::/122 is not inside one of ipv6.pools"), "{e}");
        let e = parse(&dual.replace("address6 = \"fd00:10:244::1\"", "address6 = \"fd00:99::1\"")).expect_err("pod");
        assert!(e.to_string().starts_with("n.toml:20:") && e.to_string().contains("pod pod-a1 has fd00:99::1"), "{e}");
        // An IPv6 BGP peer needs the node's own IPv6 address, and is not the node itself.
        let peer = |a: &str| {
            format!("\n[bgp]\nas_number = 64512\n\n[[bgp.peers]]\naddress = \"{a}\"\nas_number = 65001\nkind = \"global\"\n")
        };
        let again = "\n[[bgp.peers]]\naddress = \"fd00:192:168:100::1\"\nas_number = 65002\nkind = \"global\"\n";
        let twice = dual.clone() + &peer("fd00:192:168:100::1") + again;
        let e = parse(&twice).expect_err("two peers at one address").to_string();
        assert!(e.contains("a second peer at fd00:192:168:100::1 (the first is on line"), "{e}");
        let c = parse(&(dual.clone() + &peer("fd00:192:168:100::1"))).expect("IPv6 peer");
        let peers = &c.bgp.as_ref().expect("bgp").peers;
        assert_eq!(peers[0].address, "fd00:192:168:100::1".parse::<IpAddr>().expect("ip"));
        let again = parse(&c.to_toml()).expect("round trip");
        assert_eq!(again.bgp.expect("bgp").peers, *peers);
        let e = parse(&(GOOD.to_string() + &peer("fd00:192:168:100::1"))).expect_err("no [ipv6]").to_string();
        assert!(e.contains("an IPv6 peer needs the node's own IPv6 address"), "{e}");
        let e = parse(&(dual.clone() + &peer("fd00:192:168:100::100"))).expect_err("itself").to_string();
        assert!(e.contains("cannot peer with itself"), "{e}");
    }

    #[test]
    fn blocks_and_pods_stay_inside_the_pools() {
        let e = parse(&GOOD.replace("[\"10.244.1.0/26\"]", "[\"10.245.1.0/26\"]")).expect_err("block").to_string();
        assert!(e.starts_with("n.toml:5:") && e.contains("block 10.245.1.0/26 is not inside one of the pools"), "{e}");
        let e = parse(&GOOD.replace("cidr = \"10.244.0.0/16\"", "cidr = \"10.244.1.0/27\"")).expect_err("wider");
        assert!(e.to_string().contains("block 10.244.1.0/26 is not inside"), "{e}");
        let e = parse(&GOOD.replace("\"10.244.1.1\"", "\"10.9.1.1\"")).expect_err("pod").to_string();
        assert!(
            e.starts_with("n.toml:19:") && e.contains("pod pod-a1 has 10.9.1.1, which is in none of the pools"),
            "{e}"
        );
        // A borrowed address is another node's block, in the pool: fine. Without pools in the
        // file (a datastore node), nothing to check against.
        parse(&GOOD.replace("\"10.244.1.1\"", "\"10.244.3.9\"")).expect("borrowed");
        let no_pool = GOOD.replace("[[pools]]\ncidr = \"10.244.0.0/16\"\nipip_mode = \"CrossSubnet\"\n", "");
        assert!(parse(&no_pool).expect("datastore node").pools.is_empty());
    }

    #[test]
    fn two_pods_never_share_a_name_interface_or_address() {
        let second = |name: &str, interface: &str, address: &str| {
            format!("{GOOD}[[pods]]\nname = \"{name}\"\ninterface = \"{interface}\"\naddress = \"{address}\"\n")
        };
        let fails = |text: String, says: &str| {
            let e = parse(&text).expect_err(says).to_string();
            assert!(e.contains(says), "{e}");
        };
        fails(second("pod-a1", "cali2", "10.244.1.2"), "n.toml:25: a second pod named pod-a1");
        fails(
            second("pod-a2", "cali48dfb98be23", "10.244.1.2"),
            "n.toml:26: pod pod-a2 has the interface cali48dfb98be23 of pod pod-a1",
        );
        fails(second("pod a2", "cali2", "10.244.1.2"), "n.toml:25: pod name \"pod a2\" is not 1-253 letters");
        fails(
            second("pod-a2", "cali2", "10.244.1.1"),
            "n.toml:27: pod pod-a2 has the address 10.244.1.1 of pod pod-a1",
        );
        let dual = GOOD.replace("address = \"10.244.1.1\"", "address = \"10.244.1.1\"\naddress6 = \"fd00:10:244::1\"");
        let text = second("pod-a2", "cali2", "10.244.1.2").replace(GOOD, &dual) + "address6 = \"fd00:10:244::1\"\n";
        fails(text, "n.toml:29: pod pod-a2 has the IPv6 address fd00:10:244::1 of pod pod-a1");
        assert_eq!(parse(&second("pod-a2", "cali2", "10.244.1.2")).expect("different").pods.len(), 2);
    }

    #[test]
    fn blocks_and_pools_are_disjoint_and_static_routes_leave_the_node_s_own_alone() {
        let fails = |text: String, says: &str| {
            let e = parse(&text).expect_err(says).to_string();
            assert!(e.contains(says), "{e}");
        };
        let two = GOOD.replace("[\"10.244.1.0/26\"]", "[\"10.244.1.0/26\", \"10.244.1.32/27\"]");
        fails(two, "n.toml:5: block 10.244.1.32/27 overlaps block 10.244.1.0/26");
        let pools = GOOD.replace("[[routes]]", "[[pools]]\ncidr = \"10.0.0.0/8\"\n\n[[routes]]");
        fails(pools, "n.toml:22: pool 10.0.0.0/8 overlaps pool 10.244.0.0/16");
        for (prefix, says) in [
            ("10.244.1.0/26", "n.toml:22: route 10.244.1.0/26 is one of the node's blocks"),
            ("192.168.100.0/24", "route 192.168.100.0/24 is the uplink's subnet"),
            ("192.168.100.100/32", "route 192.168.100.100/32 is the node's own address"),
        ] {
            fails(GOOD.replace("\"10.244.2.0/26\"", &format!("\"{prefix}\"")), says);
        }
        // A borrowed address of its block on another node: a static /32 inside the block.
        parse(&GOOD.replace("\"10.244.2.0/26\"", "\"10.244.1.9/32\"")).expect("inside a block");
        let v6 = |blocks: &str, routes: &str| {
            format!(
                "{GOOD}\n[ipv6]\naddress = \"fd00:192:168:100::100/64\"\ngateway = \"fd00:192:168:100::1\"\n\
                 routes = [{routes}]\npools = [\"fd00:10:244::/48\"]\nblocks = [{blocks}]\n"
            )
        };
        let route = "\"fd00:192:168:200::/64\"";
        parse(&v6("\"fd00:10:244::/122\"", route)).expect("good");
        fails(v6("\"fd00:10:244::/122\", \"fd00:10:244::/64\"", route), "ipv6 block fd00:10:244::/64 overlaps");
        fails(
            v6("\"fd00:10:244::/122\"", "\"fd00:10:244::/122\""),
            "ipv6 route fd00:10:244::/122 is one of the node's blocks",
        );
        fails(v6("\"fd00:10:244::/122\"", "\"fd00:192:168:100::/64\""), "is the uplink's subnet");
        // No pool holds a node's address, this one's or another's.
        let pool = |cidr: &str| GOOD.replace("[[routes]]", &format!("[[pools]]\ncidr = \"{cidr}\"\n\n[[routes]]"));
        fails(pool("192.168.0.0/16"), "n.toml:22: pool 192.168.0.0/16 holds 192.168.100.100, the node's own address");
        fails(pool("192.168.200.0/24"), "pool 192.168.200.0/24 holds 192.168.200.101, a node's (ipip_peers)");
        let wide = v6("\"fd00:10:244::/122\"", route).replace("[\"fd00:10:244::/48\"]", "[\"fd00::/16\"]");
        fails(wide, "ipv6 pool fd00::/16 holds fd00:192:168:100::100, the node's own address");
    }

    #[test]
    fn etcd_over_tls_names_its_files() {
        let tls = "etcd_endpoints = [\"https://10.0.0.5:2379\"]\netcd_ca_cert_file = \"/etc/router/ca.pem\"\n\
                   etcd_cert_file = \"/etc/router/node.pem\"\netcd_key_file = \"/etc/router/node.key\"\n";
        let c = parse(&format!("{tls}{GOOD}")).expect("https with its files");
        assert_eq!(c.etcd_endpoints, ["https://10.0.0.5:2379"]);
        assert_eq!(c.etcd_tls.ca_cert.as_deref(), Some(Path::new("/etc/router/ca.pem")));
        assert_eq!(parse(&c.to_toml()).expect("round trip").etcd_tls, c.etcd_tls);
        let e = parse(&format!("{}{GOOD}", tls.replace("/etc/router/node.key", "node.key"))).expect_err("relative");
        assert!(e.to_string().contains("n.toml:4: etcd_key_file \"node.key\" must be an absolute path"), "{e}");
        let e = parse(&format!("etcd_endpoints = [\"grpc://x:2379\"]\n{GOOD}")).expect_err("scheme").to_string();
        assert!(e.contains("must be http://HOST:PORT or https://HOST:PORT"), "{e}");
    }

    #[test]
    fn slash_32_uplink_is_refused() {
        let e = parse(&GOOD.replace("192.168.100.100/24", "192.168.100.100/32")).expect_err("/32").to_string();
        assert!(e.starts_with("n.toml:10:") && e.contains("every node would look remote"), "{e}");
    }

    #[test]
    fn unknown_modes_name_their_line() {
        let e = parse(&GOOD.replace("workers = 1", "workers = 1\ndataplane = \"dpdk\"")).expect_err("bad").to_string();
        assert!(e.starts_with("n.toml:4:") && e.contains("dpdk"), "{e}");
        let e = parse(&GOOD.replace("\"CrossSubnet\"", "\"Sometimes\"")).expect_err("bad").to_string();
        assert!(e.starts_with("n.toml:14:") && e.contains("Sometimes"), "{e}");
    }

    #[test]
    fn a_peer_is_external_as_its_kind_says_unless_told() {
        let peer = |kind: &str, more: &str| {
            format!("{GOOD}\n[bgp]\nas_number = 64512\n\n[[bgp.peers]]\naddress = \"192.168.100.1\"\nas_number = 65001\nkind = \"{kind}\"\n{more}")
        };
        let external = |text: &str| {
            let c = parse(text).expect("parses");
            let again = parse(&c.to_toml()).expect("round trip");
            assert_eq!(again.bgp, c.bgp);
            c.bgp.expect("bgp").peers[0].external
        };
        assert!(external(&peer("global", "")));
        assert!(!external(&peer("node specific", "")));
        assert!(external(&peer("node specific", "external = true\n")), "a BGPPeer with a node");
        assert!(!external(&peer("global", "external = false\n")));
    }

    #[test]
    fn ttl_security_round_trips_and_needs_an_active_session() {
        let peer = "\n[bgp]\nas_number = 64512\n\n[[bgp.peers]]\naddress = \"192.168.100.1\"\nas_number = 65001\nkind = \"global\"\nttl_security = 1\n";
        let c = parse(&format!("{GOOD}{peer}")).expect("parses");
        let ttl = |c: &NodeConfig| c.bgp.as_ref().map(|b| b.peers[0].ttl_security);
        assert_eq!(ttl(&c), Some(Some(1)));
        assert_eq!(ttl(&parse(&c.to_toml()).expect("round trip")), Some(Some(1)));
        let e = parse(&format!("{GOOD}{peer}passive = true\n")).expect_err("passive").to_string();
        assert!(e.contains("ttl_security needs passive = false"), "{e}");
        let e = parse(&format!("{GOOD}{}", peer.replace("ttl_security = 1", "ttl_security = 0")))
            .expect_err("0")
            .to_string();
        assert!(e.contains("ttl_security is a hop count from 1 to 254"), "{e}");
    }

    #[test]
    fn service_ranges_and_disable_bgp_export_round_trip_and_are_checked() {
        let bgp = "\n[bgp]\nas_number = 64512\nservice_ips = [\"10.96.0.0/12\", \"fd00:96::/108\"]\n";
        let text = format!("{GOOD}{bgp}").replacen(
            "cidr = \"10.244.0.0/16\"",
            "cidr = \"10.244.0.0/16\"\ndisable_bgp_export = true",
            1,
        );
        let c = parse(&text).expect("parses");
        let got = |c: &NodeConfig| {
            (
                c.bgp.as_ref().map(|b| b.service_ips.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
                c.pools[0].disable_bgp_export,
            )
        };
        let want = (Some(vec!["10.96.0.0/12".to_string(), "fd00:96::/108".to_string()]), true);
        assert_eq!(got(&c), want);
        assert_eq!(got(&parse(&c.to_toml()).expect("round trip")), want);
        let e = parse(&format!("{GOOD}{}", bgp.replace("10.96.0.0/12", "10.96.0.1/12")))
            .expect_err("host bits")
            .to_string();
        assert!(e.contains("service_ips 10.96.0.1/12 has host bits set"), "{e}");
        // Calico's bindMode and sourceAddress, by their values.
        let modes = "\n[bgp]\nas_number = 64512\nbind_mode = \"None\"\n\n[[bgp.peers]]\naddress = \"192.168.100.1\"\nas_number = 65001\nkind = \"global\"\nsource_address = \"None\"\n";
        let c = parse(&format!("{GOOD}{modes}")).expect("parses");
        let got = |c: &NodeConfig| c.bgp.as_ref().map(|b| (b.listen_all, b.peers[0].any_source));
        assert_eq!(got(&c), Some((true, true)));
        assert_eq!(got(&parse(&c.to_toml()).expect("round trip")), Some((true, true)));
        let e =
            parse(&format!("{GOOD}{}", modes.replace("bind_mode = \"None\"", "bind_mode = \"All\""))).expect_err("All");
        assert!(e.to_string().contains("bind_mode \"All\": use \"NodeIP\" or \"None\""), "{e}");
    }

    #[test]
    fn a_peer_s_timers_and_allowed_local_as_round_trip_and_are_checked() {
        let peer = "\n[bgp]\nas_number = 64512\n\n[[bgp.peers]]\naddress = \"192.168.100.1\"\nas_number = 65001\nkind = \"global\"\nrestart_time = 45\nkeepalive_time = 3\nallow_local_as = 1\nkeep_original_next_hop = true\nreachable_by = \"192.168.100.1\"\n";
        let c = parse(&format!("{GOOD}{peer}")).expect("parses");
        let got = |c: &NodeConfig| {
            c.bgp.as_ref().map(|b| {
                let p = &b.peers[0];
                (p.restart_time, p.keepalive_time, p.allow_local_as, p.keep_original_next_hop)
            })
        };
        assert_eq!(got(&c), Some((Some(45), Some(3), 1, true)));
        assert_eq!(got(&parse(&c.to_toml()).expect("round trip")), Some((Some(45), Some(3), 1, true)));
        // The peer's address is reached through its gateway: a static route, shown and used.
        let routes: Vec<String> = c.static_routes().map(|r| format!("{} {:?}", r.prefix, r.action)).collect();
        assert!(routes.contains(&"192.168.100.1/32 Via(192.168.100.1)".to_string()), "{routes:?}");
        for (from, to, why) in [
            ("restart_time = 45", "restart_time = 5000", "restart_time is at most 4095 seconds"),
            ("keepalive_time = 3", "keepalive_time = 0", "keepalive_time = 0 sends no keepalives"),
            (
                "reachable_by = \"192.168.100.1\"",
                "reachable_by = \"192.168.200.1\"",
                "a gateway on the uplink's subnet",
            ),
        ] {
            let e = parse(&format!("{GOOD}{}", peer.replace(from, to))).expect_err(to).to_string();
            assert!(e.contains(why), "{e}");
        }
    }

    const POLICY: &str = r#"
[bgp]
as_number = 64512

[[bgp.peers]]
address = "192.168.100.1"
as_number = 65001
kind = "global"
filters = ["edge"]
max_prefixes = 1000

[[bgp.filters]]
name = "edge"
import_v4 = [{ cidr = "198.51.100.0/24", match_operator = "Equal", action = "Reject" }]
export_v4 = [{ cidr = "10.244.0.0/16", match_operator = "NotIn", action = "Reject" }]

[[bgp.prefix_advertisements]]
cidr = "10.244.0.0/16"
communities = ["64512:100", "no-export"]
"#;

    #[test]
    fn filters_limits_and_communities_parse_and_round_trip() {
        use bgp::policy::{Action, MatchOperator as Op};
        let c = parse(&format!("{GOOD}{POLICY}")).expect("parses");
        let b = c.bgp.as_ref().expect("bgp");
        assert_eq!((b.peers[0].filters.clone(), b.peers[0].max_prefixes), (vec!["edge".to_string()], Some(1000)));
        assert_eq!(b.filters[0].import[0].action, Action::Reject);
        assert_eq!(b.filters[0].export[0].operator, Op::NotIn);
        let nx = bgp::policy::community::NO_EXPORT;
        assert_eq!(b.prefix_advertisements[0].communities, vec![64512 << 16 | 100, nx]);
        let again = parse(&c.to_toml()).expect("round trip");
        assert_eq!(again.bgp, c.bgp);
        for (from, to, needle) in [
            ("filters = [\"edge\"]", "filters = [\"core\"]", "n.toml:32: no [[bgp.filters]] entry is named `core`"),
            ("max_prefixes = 1000", "max_prefixes = 0", "max_prefixes = 0 would refuse every session"),
            ("\"no-export\"", "\"no-exprot\"", "n.toml:42: `no-exprot` is not a community"),
            ("\"Equal\"", "\"Like\"", "n.toml:37"),
            ("198.51.100.0/24", "198.51.100.0/33", "n.toml:37"),
        ] {
            let e = parse(&format!("{GOOD}{}", POLICY.replace(from, to))).expect_err(to).to_string();
            assert!(e.contains(needle), "{to}: {e}");
        }
    }

    #[test]
    fn bad_values_are_explained() {
        for (from, to, needle) in [
            ("workers = 1", "workers = 0", "use 1 to 64"),
            ("workers = 1", "workers = 1\nworker_nice = -30", "worker_nice = -30"),
            ("workers = 1", "workers = 1\nipip_ttl = 0", "ipip_ttl = 0"),
            ("\"cali48dfb98be23\"", "\"cali48dfb98be23xyz\"", "interface name"),
            ("via = \"192.168.100.101\"", "type = \"nowhere\"", "blackhole"),
            ("via = \"192.168.100.101\"", "via = \"192.168.100.100\"", "this node itself"),
            ("10.244.1.0/26\"]", "10.244.1.1/26\"]", "host bits"),
            ("\"192.168.200.101\"]", "\"192.168.200.1011\"]", "not an IPv4 address"),
        ] {
            let e = parse(&GOOD.replace(from, to)).expect_err(to).to_string();
            assert!(e.contains(needle) && e.starts_with("n.toml:"), "{to}: {e}");
        }
        // A session's AS and port, the node's and a peer's, each with its line.
        let bgp = format!(
            "{GOOD}\n[bgp]\nas_number = 64512\nport = 179\n\n[[bgp.peers]]\naddress = \"192.168.100.101\"\n\
             as_number = 64512\nport = 179\nkind = \"node-to-node mesh\"\n"
        );
        parse(&bgp).expect("a good [bgp]");
        for (from, to, needle) in [
            ("[bgp]\nas_number = 64512", "[bgp]\nas_number = 0", "AS 0 is reserved"),
            ("[bgp]\nas_number = 64512", "[bgp]\nas_number = 23456", "AS_TRANS"),
            ("[bgp]\nas_number = 64512\nport = 179", "[bgp]\nas_number = 64512\nport = 0", "port = 0"),
            ("101\"\nas_number = 64512", "101\"\nas_number = 0", "AS 0 is reserved"),
            ("port = 179\nkind", "port = 0\nkind", "port = 0"),
        ] {
            assert_eq!(bgp.matches(from).count(), 1, "{from}");
            let text = bgp.replace(from, to);
            // The error names the line of the value changed.
            let at = text.find(to).expect("replaced") + to.rfind(" = ").expect("a value");
            let line = text[..at].matches('\n').count() + 1;
            let e = parse(&text).expect_err(to).to_string();
            assert!(e.contains(needle) && e.starts_with(&format!("n.toml:{line}:")), "{to}: {e}");
        }
    }
}
