//! Calico's resources, `apiVersion: projectcalico.org/v3`, with Calico's field names: what
//! `router apply -f` reads (YAML or JSON, one or many documents) and `router get` prints.
//!
//! A file is read document by document. Each document is decoded straight into the struct
//! of its kind, which refuses unknown fields, so an error carries the line where it was
//! found; checks that need the whole document (a CIDR, a block size that does not fit the
//! pool) name the field and find its line. Every error names the document too.

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

pub const API_VERSION: &str = "projectcalico.org/v3";

/// The kinds this router knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    IpPool,
    BgpConfiguration,
    BgpPeer,
    BgpFilter,
    Node,
    IpReservation,
    IpamConfiguration,
    WorkloadEndpoint,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::IpPool,
        Kind::BgpConfiguration,
        Kind::BgpPeer,
        Kind::BgpFilter,
        Kind::Node,
        Kind::IpReservation,
        Kind::IpamConfiguration,
        Kind::WorkloadEndpoint,
    ];

    /// Whether it describes the cluster, which nodes watch: all but the workload endpoints,
    /// which say where pods are (one per pod; a node needs none of them).
    pub fn describes_cluster(self) -> bool {
        self != Kind::WorkloadEndpoint
    }

    /// Whether its resources live in a namespace (Calico's `WorkloadEndpoint`).
    pub fn is_namespaced(self) -> bool {
        self == Kind::WorkloadEndpoint
    }

    /// As in `kind:`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::IpPool => "IPPool",
            Kind::BgpConfiguration => "BGPConfiguration",
            Kind::BgpPeer => "BGPPeer",
            Kind::BgpFilter => "BGPFilter",
            Kind::Node => "Node",
            Kind::IpReservation => "IPReservation",
            Kind::IpamConfiguration => "IPAMConfiguration",
            Kind::WorkloadEndpoint => "WorkloadEndpoint",
        }
    }

    /// As in Calico's etcd keys (and `calicoctl get`): lower case, plural.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::IpPool => "ippools",
            Kind::BgpConfiguration => "bgpconfigurations",
            Kind::BgpPeer => "bgppeers",
            Kind::BgpFilter => "bgpfilters",
            Kind::Node => "nodes",
            Kind::IpReservation => "ipreservations",
            Kind::IpamConfiguration => "ipamconfigurations",
            Kind::WorkloadEndpoint => "workloadendpoints",
        }
    }

    /// A kind as a user types it: `IPPool`, `ippool`, `ippools`, `bgppeer`, `bgpconfig`...
    pub fn parse(s: &str) -> Option<Kind> {
        let l = s.to_ascii_lowercase();
        let l = l.strip_suffix('s').unwrap_or(&l);
        Some(match l {
            "ippool" | "pool" => Kind::IpPool,
            "bgpconfiguration" | "bgpconfig" => Kind::BgpConfiguration,
            "bgppeer" => Kind::BgpPeer,
            "bgpfilter" => Kind::BgpFilter,
            "node" => Kind::Node,
            "ipreservation" => Kind::IpReservation,
            "ipamconfiguration" | "ipamconfig" => Kind::IpamConfiguration,
            "workloadendpoint" | "wep" => Kind::WorkloadEndpoint,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    pub name: String,
    /// Set for namespaced kinds only (`default` where a document gives none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The etcd revision the resource was read at (set by `get`; ignored by `apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// One resource: the same envelope for every kind, the spec of its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Typed<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: S,
    /// Kept as written and read by nothing here: what Calico's own components report (a
    /// Node's WireGuard key, its pod CIDRs), so that `calicoctl get -o yaml` output applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapMode {
    #[default]
    Never,
    Always,
    CrossSubnet,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpPoolSpec {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    #[serde(rename = "disableBGPExport", default, skip_serializing_if = "Option::is_none")]
    pub disable_bgp_export: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_uses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<String>,
}

impl IpPoolSpec {
    /// Calico's default: /26 blocks for IPv4, /122 for IPv6.
    pub fn block_size_or_default(&self) -> u8 {
        self.block_size.unwrap_or(if self.cidr.contains(':') { 122 } else { 26 })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    pub cidr: String,
    #[serde(default)]
    pub communities: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceIp {
    pub cidr: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<String>,
    #[serde(rename = "serviceClusterIPs", default, skip_serializing_if = "Option::is_none")]
    pub service_cluster_ips: Option<Vec<ServiceIp>>,
    #[serde(rename = "serviceExternalIPs", default, skip_serializing_if = "Option::is_none")]
    pub service_external_ips: Option<Vec<ServiceIp>>,
    #[serde(rename = "serviceLoadBalancerIPs", default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_ips: Option<Vec<ServiceIp>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<Vec<Community>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_advertisements: Option<Vec<PrefixAdvertisement>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_interfaces: Option<Vec<String>>,
    /// Enabled (the ranges as written, what runs) or Disabled (each service's own address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<String>,
    /// The node's address for BGP sessions with its own workloads.
    #[serde(rename = "localWorkloadPeeringIPV4", default, skip_serializing_if = "Option::is_none")]
    pub local_workload_peering_ipv4: Option<String>,
    #[serde(rename = "localWorkloadPeeringIPV6", default, skip_serializing_if = "Option::is_none")]
    pub local_workload_peering_ipv6: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
    /// Kubernetes' `optional`: with it, a secret that cannot be read leaves the session
    /// without TCP-MD5 instead of leaving it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPassword {
    pub secret_key_ref: SecretKeyRef,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPeerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(rename = "peerIP", default, skip_serializing_if = "Option::is_none")]
    pub peer_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_next_hop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Vec<String>>,
    #[serde(rename = "numAllowedLocalASNumbers", default, skip_serializing_if = "Option::is_none")]
    pub num_allowed_local_as_numbers: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// GracefulRestart (what runs) or LongLivedGracefulRestart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_mode: Option<String>,
    /// Recursive or DirectIfDirectlyConnected: how BIRD resolves next hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bird_gateway_mode: Option<String>,
    /// None or BFDIfDirectlyConnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detection_mode: Option<String>,
    /// Auto, Self or Keep (Keep is keepOriginalNextHop).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterAction {
    Accept,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MatchOperator {
    Equal,
    NotEqual,
    In,
    NotIn,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLength {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterRule {
    pub action: FilterAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub match_operator: Option<MatchOperator>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<RuleSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

/// A rule's `source`: routes learned from BGP peers (not the node's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RuleSource {
    RemotePeers,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BgpFilterSpec {
    #[serde(rename = "exportV4", default, skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<FilterRule>,
    #[serde(rename = "importV4", default, skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<FilterRule>,
    #[serde(rename = "exportV6", default, skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<FilterRule>,
    #[serde(rename = "importV6", default, skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<FilterRule>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeBgp {
    #[serde(rename = "ipv4Address", default, skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    #[serde(rename = "ipv6Address", default, skip_serializing_if = "Option::is_none")]
    pub ipv6_address: Option<String>,
    #[serde(rename = "asNumber", default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<u32>,
    #[serde(rename = "routeReflectorClusterID", default, skip_serializing_if = "Option::is_none")]
    pub route_reflector_cluster_id: Option<String>,
    #[serde(rename = "ipv4IPIPTunnelAddr", default, skip_serializing_if = "Option::is_none")]
    pub ipv4_ipip_tunnel_addr: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(rename = "ipv4VXLANTunnelAddr", default, skip_serializing_if = "Option::is_none")]
    pub ipv4_vxlan_tunnel_addr: Option<String>,
    #[serde(rename = "vxlanTunnelMACAddr", default, skip_serializing_if = "Option::is_none")]
    pub vxlan_tunnel_mac_addr: Option<String>,
    /// What calico-node writes besides: kept as written.
    #[serde(rename = "ipv6VXLANTunnelAddr", default, skip_serializing_if = "Option::is_none")]
    pub ipv6_vxlan_tunnel_addr: Option<String>,
    #[serde(rename = "vxlanTunnelMACAddrV6", default, skip_serializing_if = "Option::is_none")]
    pub vxlan_tunnel_mac_addr_v6: Option<String>,
    #[serde(rename = "orchRefs", default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguard>,
}

/// Which orchestrator's node a Node is (`orchRefs`, written by calico-node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    pub orchestrator: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeWireguard {
    #[serde(rename = "interfaceIPv4Address", default, skip_serializing_if = "Option::is_none")]
    pub interface_ipv4_address: Option<String>,
    #[serde(rename = "interfaceIPv6Address", default, skip_serializing_if = "Option::is_none")]
    pub interface_ipv6_address: Option<String>,
}

/// Addresses that IPAM never hands out by itself (a requested address may still be one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpReservationSpec {
    /// Addresses (`10.244.1.7`) and networks (`10.244.1.64/28`), of either family.
    #[serde(rename = "reservedCIDRs", default)]
    pub reserved_cidrs: Vec<String>,
}

/// How IPAM hands out blocks; one, named `default`, as in Calico.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpamConfigurationSpec {
    /// A node takes addresses from its own blocks only, never borrows another node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_affinity: Option<bool>,
    /// The most blocks a node may claim (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_host: Option<u32>,
    /// Whether a node whose blocks are full claims a new one (true without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate_blocks: Option<bool>,
}

/// Where a pod is: its node, its interface there and its addresses, as Calico's CNI plugin
/// records it. The name is made of the node, the orchestrator, the pod (Kubernetes), the
/// container (`cni`) or the workload (any other orchestrator) and the endpoint, each with
/// its dashes doubled ([`endpoint_name`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(rename = "containerID", default, skip_serializing_if = "String::is_empty")]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    #[serde(rename = "ipNetworks", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    #[serde(rename = "ipNATs", default, skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(rename = "ipv4Gateway", default, skip_serializing_if = "String::is_empty")]
    pub ipv4_gateway: String,
    #[serde(rename = "ipv6Gateway", default, skip_serializing_if = "String::is_empty")]
    pub ipv6_gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    #[serde(rename = "externalIP")]
    pub external_ip: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// A protocol by number or by name (`TCP`, `UDP`, `SCTP`...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Protocol {
    Number(u8),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default)]
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default)]
    pub host_port: u16,
    #[serde(rename = "hostIP", default)]
    pub host_ip: String,
}

/// A resource as `kind/name`, or `kind/namespace/name` for a namespaced kind (`default`
/// where none is given): what `apply`, `get` and `delete` print.
pub fn path(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match kind.is_namespaced() {
        true => format!("{}/{}/{name}", kind.plural(), namespace.unwrap_or("default")),
        false => format!("{}/{name}", kind.plural()),
    }
}

/// Whether `s` can be a namespace: a DNS label, at most 63 lower-case letters, digits and
/// '-', starting and ending with a letter or digit.
pub fn is_namespace(s: &str) -> bool {
    is_resource_name(s) && !s.contains('.') && s.len() <= 63
}

/// Any of the kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Resource {
    IpPool(Typed<IpPoolSpec>),
    BgpConfiguration(Typed<BgpConfigurationSpec>),
    BgpPeer(Typed<BgpPeerSpec>),
    BgpFilter(Typed<BgpFilterSpec>),
    Node(Typed<NodeSpec>),
    IpReservation(Typed<IpReservationSpec>),
    IpamConfiguration(Typed<IpamConfigurationSpec>),
    WorkloadEndpoint(Typed<WorkloadEndpointSpec>),
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self {
            Resource::IpPool(_) => Kind::IpPool,
            Resource::BgpConfiguration(_) => Kind::BgpConfiguration,
            Resource::BgpPeer(_) => Kind::BgpPeer,
            Resource::BgpFilter(_) => Kind::BgpFilter,
            Resource::Node(_) => Kind::Node,
            Resource::IpReservation(_) => Kind::IpReservation,
            Resource::IpamConfiguration(_) => Kind::IpamConfiguration,
            Resource::WorkloadEndpoint(_) => Kind::WorkloadEndpoint,
        }
    }

    pub fn metadata(&self) -> &Metadata {
        match self {
            Resource::IpPool(r) => &r.metadata,
            Resource::BgpConfiguration(r) => &r.metadata,
            Resource::BgpPeer(r) => &r.metadata,
            Resource::BgpFilter(r) => &r.metadata,
            Resource::Node(r) => &r.metadata,
            Resource::IpReservation(r) => &r.metadata,
            Resource::IpamConfiguration(r) => &r.metadata,
            Resource::WorkloadEndpoint(r) => &r.metadata,
        }
    }

    pub fn metadata_mut(&mut self) -> &mut Metadata {
        match self {
            Resource::IpPool(r) => &mut r.metadata,
            Resource::BgpConfiguration(r) => &mut r.metadata,
            Resource::BgpPeer(r) => &mut r.metadata,
            Resource::BgpFilter(r) => &mut r.metadata,
            Resource::Node(r) => &mut r.metadata,
            Resource::IpReservation(r) => &mut r.metadata,
            Resource::IpamConfiguration(r) => &mut r.metadata,
            Resource::WorkloadEndpoint(r) => &mut r.metadata,
        }
    }

    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// Its namespace: `None` for the cluster's kinds.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata().namespace.as_deref()
    }

    /// As [`path`] says it.
    pub fn path(&self) -> String {
        path(self.kind(), self.namespace(), self.name())
    }

    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Resource::IpPool(r) => serde_json::to_value(r),
            Resource::BgpConfiguration(r) => serde_json::to_value(r),
            Resource::BgpPeer(r) => serde_json::to_value(r),
            Resource::BgpFilter(r) => serde_json::to_value(r),
            Resource::Node(r) => serde_json::to_value(r),
            Resource::IpReservation(r) => serde_json::to_value(r),
            Resource::IpamConfiguration(r) => serde_json::to_value(r),
            Resource::WorkloadEndpoint(r) => serde_json::to_value(r),
        };
        v.unwrap_or(serde_json::Value::Null)
    }

    /// A resource as read from the datastore, leniently: fields this router does not know
    /// (another tool or a newer Calico wrote them) are left out and named in
    /// [`Stored::ignored`], as Calico's own readers skip them, rather than the whole resource
    /// being unreadable and a pool or peer vanishing from the cluster. A field it knows with
    /// a value it cannot read is still an error. `what` names the resource in it.
    pub fn from_stored(kind: Kind, bytes: &[u8], what: &str) -> anyhow::Result<Stored> {
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        Ok(Resource::read_lenient(kind, v, what)?.0)
    }

    /// `new` (this router's JSON of a resource) made ready to be written over `old`, as
    /// stored ([`StoredDoc::carry_into`]). The paths carried over.
    pub fn carry_unknown(
        kind: Kind,
        old: &[u8],
        new: &mut serde_json::Value,
        what: &str,
    ) -> anyhow::Result<Vec<String>> {
        Ok(Resource::read_stored_doc(kind, old, what)?.carry_into(new))
    }

    /// [`Resource::from_stored`], keeping the document it was read from, for a next version
    /// to carry over what this router left out of it.
    pub fn read_stored_doc(kind: Kind, bytes: &[u8], what: &str) -> anyhow::Result<StoredDoc> {
        let raw: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        let (stored, known) = Resource::read_lenient(kind, raw.clone(), what)?;
        Ok(StoredDoc { stored, raw, known })
    }

    /// [`Resource::from_stored`] of a parsed document, and the document without what it
    /// left out.
    fn read_lenient(kind: Kind, mut v: serde_json::Value, what: &str) -> anyhow::Result<(Stored, serde_json::Value)> {
        // Each round removes one field; a resource with more to remove than this is not ours.
        const MOST_REMOVED: usize = 64;
        let mut ignored = Vec::new();
        for _ in 0..=MOST_REMOVED {
            let e = match Resource::from_value(kind, &v) {
                Ok(resource) => return Ok((Stored { resource, ignored }, v)),
                Err(e) => e,
            };
            let message = e.inner().to_string();
            let unknown = message.starts_with("unknown field `");
            // Go writes a nil member as null where it has no omitempty: the same as absent.
            let null = message.starts_with("invalid type: null");
            if !(unknown || null) || !remove_at(&mut v, e.path()) {
                anyhow::bail!("{what}: {}: {message}", e.path());
            }
            if unknown {
                ignored.push(e.path().to_string());
            }
        }
        anyhow::bail!("{what}: more than {MOST_REMOVED} fields this router does not know")
    }

    fn from_value(
        kind: Kind,
        v: &serde_json::Value,
    ) -> Result<Resource, serde_path_to_error::Error<serde_json::Error>> {
        use serde_path_to_error::deserialize as de;
        Ok(match kind {
            Kind::IpPool => Resource::IpPool(de(v)?),
            Kind::BgpConfiguration => Resource::BgpConfiguration(de(v)?),
            Kind::BgpPeer => Resource::BgpPeer(de(v)?),
            Kind::BgpFilter => Resource::BgpFilter(de(v)?),
            Kind::Node => Resource::Node(de(v)?),
            Kind::IpReservation => Resource::IpReservation(de(v)?),
            Kind::IpamConfiguration => Resource::IpamConfiguration(de(v)?),
            Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(de(v)?),
        })
    }

    /// A resource as stored (JSON), strictly: an unknown field is an error (what this
    /// router writes always reads this way); `what` names it in an error.
    pub fn from_json(kind: Kind, bytes: &[u8], what: &str) -> anyhow::Result<Resource> {
        let e = |e: serde_json::Error| anyhow::anyhow!("{what}: {e}");
        Ok(match kind {
            Kind::IpPool => Resource::IpPool(serde_json::from_slice(bytes).map_err(e)?),
            Kind::BgpConfiguration => Resource::BgpConfiguration(serde_json::from_slice(bytes).map_err(e)?),
            Kind::BgpPeer => Resource::BgpPeer(serde_json::from_slice(bytes).map_err(e)?),
            Kind::BgpFilter => Resource::BgpFilter(serde_json::from_slice(bytes).map_err(e)?),
            Kind::Node => Resource::Node(serde_json::from_slice(bytes).map_err(e)?),
            Kind::IpReservation => Resource::IpReservation(serde_json::from_slice(bytes).map_err(e)?),
            Kind::IpamConfiguration => Resource::IpamConfiguration(serde_json::from_slice(bytes).map_err(e)?),
            Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(serde_json::from_slice(bytes).map_err(e)?),
        })
    }
}

/// A resource read from the datastore ([`Resource::from_stored`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub resource: Resource,
    /// The fields left out, as paths (`spec.colour`, `spec.exportV4[0].weight`).
    pub ignored: Vec<String>,
}

impl Stored {
    /// What to tell about the fields left out, if any.
    pub fn note(&self) -> Option<String> {
        (!self.ignored.is_empty()).then(|| {
            format!("{}: left out what this router does not know: {}", self.resource.path(), self.ignored.join(", "))
        })
    }
}

/// A resource read from the datastore with the document it came from
/// ([`Resource::read_stored_doc`]).
#[derive(Debug, Clone)]
pub struct StoredDoc {
    pub stored: Stored,
    /// As stored, and without what the lenient read left out.
    raw: serde_json::Value,
    known: serde_json::Value,
}

impl StoredDoc {
    /// `new` (this router's JSON of the next version) made ready to be written over this
    /// one: the members this router does not know are carried over where `new` has their
    /// place (an object it also has; a list element only when `new` left it as it was),
    /// since nobody could have set or removed them through this router. So a `Node` keeps
    /// the `orchRefs` and `status` Calico's agent wrote when its labels are applied, and
    /// `get` piped into `apply` loses nothing. The paths carried over.
    pub fn carry_into(&self, new: &mut serde_json::Value) -> Vec<String> {
        let mut carried = Vec::new();
        // Only what the read left out as unknown is ever carried (a null stays behind).
        if !self.stored.ignored.is_empty() {
            carry([&self.raw, &self.known, &self.stored.resource.to_json()], new, "", &mut carried);
        }
        carried
    }
}

/// Carries the members of `raw` that `known` (the same document without them) lacks into
/// `new`, where `new` has the object they belong in and not the member. Into a list element
/// only when `new`'s element is `typed`'s (the old version as this router writes it): a
/// changed list is the user's whole. A `null` member means absent and stays behind.
fn carry(
    [raw, known, typed]: [&serde_json::Value; 3],
    new: &mut serde_json::Value,
    at: &str,
    carried: &mut Vec<String>,
) {
    use serde_json::Value;
    const NONE: &Value = &Value::Null;
    match (raw, known, new) {
        (Value::Object(r), Value::Object(k), Value::Object(n)) => {
            for (key, rv) in r {
                let path = if at.is_empty() { key.clone() } else { format!("{at}.{key}") };
                match (k.get(key), n.get_mut(key)) {
                    (None, None) if !rv.is_null() => {
                        n.insert(key.clone(), rv.clone());
                        carried.push(path);
                    }
                    (Some(kv), Some(nv)) => carry([rv, kv, typed.get(key).unwrap_or(NONE)], nv, &path, carried),
                    _ => {}
                }
            }
        }
        (Value::Array(r), Value::Array(k), Value::Array(n)) => {
            for (i, ((rv, kv), nv)) in r.iter().zip(k).zip(n.iter_mut()).enumerate() {
                let tv = typed.get(i).unwrap_or(NONE);
                if nv == tv {
                    carry([rv, kv, tv], nv, &format!("{at}[{i}]"), carried);
                }
            }
        }
        _ => {}
    }
}

/// Removes the member at `path` (its last step a key) from `v`; whether there was one.
fn remove_at(v: &mut serde_json::Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let steps: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = steps.split_last() else { return false };
    let mut at = v;
    for step in parents {
        let next = match step {
            Segment::Map { key } => at.get_mut(key.as_str()),
            Segment::Seq { index } => at.get_mut(*index),
            _ => None,
        };
        let Some(next) = next else { return false };
        at = next;
    }
    at.as_object_mut().is_some_and(|o| o.remove(key.as_str()).is_some())
}

/// What is wrong with a document of a file: where, and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    /// 1-based: the first document of the file is document 1.
    pub document: usize,
    /// 1-based, in the file.
    pub line: Option<usize>,
    pub field: Option<String>,
    pub message: String,
}

impl std::fmt::Display for DocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(l) = self.line {
            write!(f, ", line {l}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for DocError {}

/// One document of a file: its text and the file line it starts at (0-based).
struct Doc<'a> {
    text: &'a str,
    first_line: usize,
}

/// Splits a YAML stream at its `---` lines; a JSON file is one document.
fn documents(text: &str) -> Vec<Doc<'_>> {
    let mut docs = Vec::new();
    let (mut start, mut first_line, mut offset) = (0, 0, 0);
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare == "..." {
            docs.push(Doc { text: &text[start..offset], first_line });
            start = offset + line.len();
            first_line = i + 1;
        }
        offset += line.len();
    }
    docs.push(Doc { text: &text[start..], first_line });
    // Empty documents (a leading `---`, comments only) are not resources.
    docs.retain(|d| d.text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')));
    docs
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// `text` with every line break YAML 1.1 knows (CR LF, CR, NEL, LS, PS) as one LF, so that
/// the lines errors name are those the YAML reader counted, whichever ends a file has.
pub fn lines_as_yaml_breaks_them(text: &str) -> String {
    text.replace("\r\n", "\n").replace(['\r', '\u{85}', '\u{2028}', '\u{2029}'], "\n")
}

/// Reads every document of a file: all of them, or the first error.
pub fn parse(text: &str) -> Result<Vec<Resource>, DocError> {
    let text = lines_as_yaml_breaks_them(text);
    let mut out = Vec::new();
    for (i, doc) in documents(&text).iter().enumerate() {
        out.push(parse_doc(i + 1, doc)?);
    }
    Ok(out)
}

fn yaml_error(document: usize, doc: &Doc<'_>, e: &serde_yaml_ng::Error) -> DocError {
    let msg = e.to_string();
    // The location is the document's; the message repeats it, which the prefix says better.
    let message = msg.split(" at line ").next().unwrap_or(&msg).to_string();
    // "spec: unknown field `colour`, expected ...": the field is spec.colour, which the
    // prefix names; the message keeps what follows it.
    let unknown = message.find("unknown field `").and_then(|i| {
        let name = message[i..].split('`').nth(1)?;
        let path = message[..i].trim_end_matches(": ").trim();
        let field = if path.is_empty() { name.to_string() } else { format!("{path}.{name}") };
        Some((field, nodeapi::fileerr::suggest_field(&message[i..])))
    });
    let (field, message) = match unknown {
        Some((field, rest)) => (Some(field), rest),
        None => (None, message),
    };
    DocError { document, line: e.location().map(|l| doc.first_line + l.line()), field, message }
}

fn parse_doc(n: usize, doc: &Doc<'_>) -> Result<Resource, DocError> {
    let head: Head = serde_yaml_ng::from_str(doc.text).map_err(|e| yaml_error(n, doc, &e))?;
    let err = |field: &str, message: String| DocError {
        document: n,
        line: field_line(doc, field),
        field: Some(field.to_string()),
        message,
    };
    match head.api_version.as_deref() {
        Some(API_VERSION) => {}
        Some(other) => return Err(err("apiVersion", format!("{other:?} is not {API_VERSION}"))),
        None => {
            return Err(DocError {
                document: n,
                line: None,
                field: Some("apiVersion".into()),
                message: "missing".into(),
            })
        }
    }
    let kind_name = head.kind.unwrap_or_default();
    let Some(kind) = Kind::ALL.into_iter().find(|k| k.name() == kind_name) else {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        return Err(err("kind", format!("{kind_name:?} is not one of {}", known.join(", "))));
    };
    let e = |e: serde_yaml_ng::Error| yaml_error(n, doc, &e);
    let r = match kind {
        Kind::IpPool => Resource::IpPool(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::BgpConfiguration => Resource::BgpConfiguration(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::BgpPeer => Resource::BgpPeer(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::BgpFilter => Resource::BgpFilter(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::Node => Resource::Node(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::IpReservation => Resource::IpReservation(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::IpamConfiguration => Resource::IpamConfiguration(serde_yaml_ng::from_str(doc.text).map_err(e)?),
        Kind::WorkloadEndpoint => Resource::WorkloadEndpoint(serde_yaml_ng::from_str(doc.text).map_err(e)?),
    };
    let mut r = r;
    if kind.is_namespaced() && r.namespace().is_none() {
        // As calicoctl: a namespaced resource without one is in `default`.
        r.metadata_mut().namespace = Some("default".into());
    }
    validate(&r).map_err(|(field, message)| err(&field, message))?;
    Ok(r)
}

/// The file line of the first `field:` (or `"field":`) of a document; `a.b` looks for `b`.
fn field_line(doc: &Doc<'_>, field: &str) -> Option<usize> {
    let key = field.rsplit('.').next().unwrap_or(field);
    let key = key.split('[').next().unwrap_or(key);
    doc.text
        .lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{key}:")) || t.starts_with(&format!("\"{key}\""))
        })
        .map(|i| doc.first_line + i + 1)
}

fn cidr(field: &str, s: &str) -> Result<IpNet, (String, String)> {
    let net: IpNet = s.parse().map_err(|_| (field.to_string(), format!("{s:?} is not a CIDR (like 10.244.0.0/16)")))?;
    if net.trunc() != net {
        return Err((field.to_string(), format!("{s} has host bits set; the network is {}", net.trunc())));
    }
    Ok(net)
}

fn community(field: &str, s: &str) -> Result<(), (String, String)> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err((field.to_string(), format!("{s:?} is not a community (aa:nn or aa:nn:mm)")))
    }
}

/// Fields of `r` that are set (to something other than what the router does anyway) but that
/// this router keeps without acting on: `router apply` names them, so that nothing a user
/// writes is silently a no-op.
pub fn not_followed(r: &Resource) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut note = |set: bool, field: &'static str| {
        if set {
            out.push(field);
        }
    };
    match r {
        // Calico can carry IPv6 in VXLAN; this router never tunnels IPv6 (the fabric learns
        // the IPv6 pod routes), so a Calico manifest applies but its mode does nothing.
        Resource::IpPool(p) => note(
            p.spec.cidr.parse::<ipnet::IpNet>().is_ok_and(|n| n.addr().is_ipv6())
                && p.spec.vxlan_mode.is_some_and(|m| m != EncapMode::Never),
            "spec.vxlanMode (IPv6 is never tunnelled here: the fabric learns the IPv6 pod routes over BGP)",
        ),
        Resource::BgpConfiguration(c) => {
            let s = &c.spec;
            let name = c.metadata.name.as_str();
            note(
                name != "default" && !name.starts_with("node."),
                "all of it: only `default` and `node.<node name>` are read",
            );
            // A node's own configuration overrides three fields, as in Calico.
            if name.starts_with("node.") {
                note(s.as_number.is_some(), "spec.asNumber (the default's counts)");
                note(s.node_to_node_mesh_enabled.is_some(), "spec.nodeToNodeMeshEnabled (the default's counts)");
                note(s.node_mesh_max_restart_time.is_some(), "spec.nodeMeshMaxRestartTime (the default's counts)");
                note(s.node_mesh_password.is_some(), "spec.nodeMeshPassword (the default's counts)");
            }
            // Calico's node-specific configuration does not hold it.
            note(name.starts_with("node.") && s.bind_mode.is_some(), "spec.bindMode (the default's counts)");
            // Calico reads the service IP lists from the default configuration only.
            let services = s.service_cluster_ips.is_some()
                || s.service_external_ips.is_some()
                || s.service_load_balancer_ips.is_some();
            note(name != "default" && services, "spec.service*IPs (the default's count)");
            note(s.ignored_interfaces.is_some(), "spec.ignoredInterfaces");
            note(
                s.service_load_balancer_aggregation.as_deref() == Some("Disabled"),
                "spec.serviceLoadBalancerAggregation Disabled (the ranges are announced as written: there are no services to announce one by one)",
            );
            note(
                s.local_workload_peering_ipv4.is_some() || s.local_workload_peering_ipv6.is_some(),
                "spec.localWorkloadPeeringIPV4/IPV6 (no BGP sessions with workloads)",
            );
        }
        Resource::BgpPeer(p) => {
            let s = &p.spec;
            note(
                s.restart_mode.as_deref() == Some("LongLivedGracefulRestart"),
                "spec.restartMode LongLivedGracefulRestart (graceful restart, RFC 4724, is what runs)",
            );
            // Next hops are resolved through the FIB, and one on the node's subnet is direct.
            note(
                s.bird_gateway_mode.as_deref() == Some("DirectIfDirectlyConnected"),
                "spec.birdGatewayMode DirectIfDirectlyConnected (next hops are resolved through the FIB)",
            );
            note(
                s.failure_detection_mode.as_deref() == Some("BFDIfDirectlyConnected"),
                "spec.failureDetectionMode BFDIfDirectlyConnected (no BFD: the hold time finds a dead peer)",
            );
            note(s.next_hop_mode.as_deref() == Some("Self"), "spec.nextHopMode Self (Auto runs)");
        }
        Resource::BgpFilter(f) => {
            let rules = [&f.spec.export_v4, &f.spec.import_v4, &f.spec.export_v6, &f.spec.import_v6];
            let any = |pick: fn(&FilterRule) -> bool| rules.iter().any(|l| l.iter().any(pick));
            note(any(|r| r.interface.is_some()), "a rule's interface");
        }
        Resource::Node(n) => {
            let s = &n.spec;
            note(s.wireguard.is_some(), "spec.wireguard (no WireGuard: pod traffic is not encrypted)");
            // calico-node gives tunl0 and vxlan.calico an address of the node's block; here
            // the node's own traffic into a tunnel leaves from its uplink address, and each
            // VTEP's MAC derives from its node's name.
            note(
                s.bgp.as_ref().is_some_and(|b| b.ipv4_ipip_tunnel_addr.is_some()),
                "spec.bgp.ipv4IPIPTunnelAddr (tunl0 has no address: the node's traffic into it leaves from its uplink address)",
            );
            note(
                s.ipv4_vxlan_tunnel_addr.is_some() || s.vxlan_tunnel_mac_addr.is_some(),
                "spec.ipv4VXLANTunnelAddr, spec.vxlanTunnelMACAddr (vxlan.calico has no address, and a VTEP's MAC derives from its node's name)",
            );
            note(!s.addresses.is_empty(), "spec.addresses (spec.bgp's addresses are the node's)");
            note(
                s.ipv6_vxlan_tunnel_addr.is_some() || s.vxlan_tunnel_mac_addr_v6.is_some(),
                "spec.ipv6VXLANTunnelAddr, spec.vxlanTunnelMACAddrV6 (IPv6 is never tunnelled here)",
            );
        }
        Resource::IpReservation(_) | Resource::IpamConfiguration(_) => {}
        // The CNI plugin and the nodes write these to say where their pods are; one applied
        // by hand makes no pod, and policy (profiles) and 1:1 NAT are not this router's.
        Resource::WorkloadEndpoint(_) => {
            note(true, "all of it: pods come from the CNI plugin and the nodes' configurations")
        }
    }
    out
}

/// Calico's log severities (`logSeverityScreen`) as a tracing level; `None`: not one of them.
pub fn calico_level(severity: &str) -> Option<&'static str> {
    match severity.to_ascii_lowercase().as_str() {
        "debug" => Some("debug"),
        "info" => Some("info"),
        "warning" => Some("warn"),
        "error" | "fatal" | "panic" => Some("error"),
        _ => None,
    }
}

/// A duration as Calico's resources write it, Go's `time.Duration` text: numbers with units
/// `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`, one after the other (`90s`, `2m`, `1h30m`,
/// `1.5s`), or a bare `0`. Negative durations are refused: nothing here may be negative.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{text:?} is not a duration like 90s, 2m or 1h30m");
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    let mut rest = text;
    let mut nanos: f64 = 0.0;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let (number, tail) = rest.split_at(digits);
        if number.is_empty() || number == "." {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += value * scale;
        rest = tail;
    }
    // Go's own limit, about 292 years.
    if nanos > i64::MAX as f64 {
        return Err(format!("{text:?} is longer than a duration can be"));
    }
    Ok(std::time::Duration::from_nanos(nanos as u64))
}

/// A duration field that becomes whole seconds in `lo..=hi` (as BIRD, which Calico
/// configures with them, takes them).
pub fn duration_secs(field: &str, text: &str, lo: u16, hi: u16) -> Result<u16, (String, String)> {
    let d = parse_duration(text).map_err(|e| (field.to_string(), e))?;
    match u16::try_from(d.as_secs()) {
        Ok(s) if (lo..=hi).contains(&s) => Ok(s),
        _ => Err((field.to_string(), format!("{text}: from {lo}s to {hi}s"))),
    }
}

/// The first node among `resources` whose address (`spec.bgp.ipv4Address` or
/// `ipv6Address`) lies in `pool`, with that address. A pool that holds a node's address
/// would hand pods the nodes' addresses, and the routes to the nodes would become pod
/// routes (tunnelled, exported, blackholed as a block).
pub fn node_in_pool<'a>(resources: impl IntoIterator<Item = &'a Resource>, pool: IpNet) -> Option<(&'a str, IpAddr)> {
    resources
        .into_iter()
        .find_map(|r| node_addresses(r).into_iter().find(|(_, a)| pool.contains(a)).map(|(_, a)| (r.name(), a)))
}

/// A Node resource's addresses (`spec.bgp.ipv4Address`, `ipv6Address`, without their
/// prefix length), each with its field; none for another kind.
pub fn node_addresses(r: &Resource) -> Vec<(&'static str, IpAddr)> {
    let Resource::Node(n) = r else { return Vec::new() };
    let Some(b) = n.spec.bgp.as_ref() else { return Vec::new() };
    [("ipv4Address", &b.ipv4_address), ("ipv6Address", &b.ipv6_address)]
        .into_iter()
        .filter_map(|(f, a)| Some((f, a.as_deref()?.parse::<IpNet>().ok()?.addr())))
        .collect()
}

/// A BGPPeer's `peerIP` in Calico's forms: an address, or with a port `192.0.2.1:1179` and
/// `[2001:db8::1]:1179` (an IPv6 address with a port needs the brackets).
pub fn peer_address(s: &str) -> Option<(IpAddr, Option<u16>)> {
    match s.parse::<std::net::SocketAddr>() {
        Ok(a) => Some((a.ip(), Some(a.port()))),
        Err(_) => s.parse::<IpAddr>().ok().map(|a| (a, None)),
    }
}

/// Whether `s` is a name Calico takes for a resource (a DNS subdomain): lower-case letters,
/// digits, '-' and '.', starting and ending with a letter or digit.
pub fn is_resource_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// Whether `s` is a label's name, or its value when not empty: at most 63 letters, digits,
/// '-', '_' and '.', starting and ending with a letter or digit (Kubernetes' rule).
fn is_label_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// Checks a label as Kubernetes (and so Calico) does: the key a name with an optional DNS
/// prefix (`example.com/rack`), the value empty or like a name. The message says what is wrong.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    let (prefix, name) = key.rsplit_once('/').map_or((None, key), |(p, n)| (Some(p), n));
    if prefix.is_some_and(|p| !is_resource_name(p)) {
        return Err(format!(
            "label {key:?}: the prefix before '/' is a DNS name (lower-case letters, digits, '-' and '.')"
        ));
    }
    if !is_label_part(name) {
        return Err(format!(
            "label {key:?}: a name is at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    if !value.is_empty() && !is_label_part(value) {
        return Err(format!(
            "label {key:?}: value {value:?}: at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks what decoding cannot: values that must parse, and fit together. The error names
/// the field.
pub fn validate(r: &Resource) -> Result<(), (String, String)> {
    if let Some(e) = r.metadata().labels.iter().find_map(|(k, v)| check_label(k, v).err()) {
        return Err(("metadata.labels".into(), e));
    }
    let name = r.name();
    if !is_resource_name(name) {
        return Err((
            "metadata.name".into(),
            format!("{name:?}: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"),
        ));
    }
    match (r.namespace(), r.kind().is_namespaced()) {
        (Some(ns), true) if !is_namespace(ns) => {
            return Err((
                "metadata.namespace".into(),
                format!(
                    "{ns:?}: at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit"
                ),
            ))
        }
        (Some(_), false) => {
            return Err(("metadata.namespace".into(), format!("a {} is not in a namespace", r.kind())));
        }
        _ => {}
    }
    match r {
        Resource::IpPool(p) => validate_pool(p)?,
        Resource::BgpConfiguration(c) => validate_bgp_configuration(c)?,
        Resource::BgpPeer(p) => validate_bgp_peer(p)?,
        Resource::BgpFilter(f) => validate_filter(f)?,
        Resource::Node(n) => validate_node(n)?,
        Resource::IpReservation(r) => {
            for (i, c) in r.spec.reserved_cidrs.iter().enumerate() {
                reserved(&format!("spec.reservedCIDRs[{i}]"), c)?;
            }
        }
        Resource::IpamConfiguration(_) if name != "default" => {
            return Err(("metadata.name".into(), format!("{name:?}: Calico's IPAM configuration is named default")));
        }
        Resource::IpamConfiguration(_) => {}
        Resource::WorkloadEndpoint(w) => validate_endpoint(name, &w.spec)?,
    }
    Ok(())
}

fn validate_pool(p: &Typed<IpPoolSpec>) -> Result<(), (String, String)> {
    let net = cidr("spec.cidr", &p.spec.cidr)?;
    // Pods' gateways (169.254.1.1, fe80::…) live there, as in Calico.
    const LINK_LOCAL: [IpNet; 2] = [
        IpNet::V4(ipnet::Ipv4Net::new_assert(std::net::Ipv4Addr::new(169, 254, 0, 0), 16)),
        IpNet::V6(ipnet::Ipv6Net::new_assert(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10)),
    ];
    let link_local = LINK_LOCAL[usize::from(net.addr().is_ipv6())];
    let overlaps = |r: &IpNet| r.contains(&net.network()) || net.contains(&r.network());
    if overlaps(&link_local) {
        return Err(("spec.cidr".into(), format!("{net} overlaps the link-local range {link_local}")));
    }
    // Addresses no pod can have: every host's own loopback, multicast groups, "this network".
    let nowhere: [&str; 5] = ["127.0.0.0/8", "224.0.0.0/4", "0.0.0.0/8", "::1/128", "ff00::/8"];
    if let Some(r) = nowhere.iter().filter_map(|r| r.parse::<IpNet>().ok()).find(overlaps) {
        return Err(("spec.cidr".into(), format!("{net} overlaps {r}, which no pod can have as its address")));
    }
    let bs = p.spec.block_size_or_default();
    let (lo, hi) = if net.addr().is_ipv4() { (20, 32) } else { (116, 128) };
    if !(lo..=hi).contains(&bs) || bs < net.prefix_len() {
        return Err((
            "spec.blockSize".into(),
            format!("/{bs} does not fit the pool {net}: it must be from /{} to /{hi}", lo.max(net.prefix_len())),
        ));
    }
    let on = |m: Option<EncapMode>| m.is_some_and(|m| m != EncapMode::Never);
    if on(p.spec.ipip_mode) && on(p.spec.vxlan_mode) {
        return Err(("spec.vxlanMode".into(), "a pool uses IPIP or VXLAN, not both".into()));
    }
    if net.addr().is_ipv6() && on(p.spec.ipip_mode) {
        return Err(("spec.ipipMode".into(), "IPIP carries IPv4 only".into()));
    }
    if let Some(u) =
        p.spec.allowed_uses.iter().flatten().find(|u| !["Workload", "Tunnel", "LoadBalancer"].contains(&u.as_str()))
    {
        return Err(("spec.allowedUses".into(), format!("{u:?}: Workload, Tunnel or LoadBalancer")));
    }
    one_of("spec.assignmentMode", &p.spec.assignment_mode, &["Automatic", "Manual"])?;
    if let Some(s) = &p.spec.node_selector {
        crate::selector::Selector::parse(s).map_err(|e| ("spec.nodeSelector".into(), format!("{s:?}: {e}")))?;
    }

    Ok(())
}

fn validate_bgp_configuration(c: &Typed<BgpConfigurationSpec>) -> Result<(), (String, String)> {
    one_of("spec.bindMode", &c.spec.bind_mode, &["NodeIP", "None"])?;
    for (field, list) in [
        ("serviceClusterIPs", &c.spec.service_cluster_ips),
        ("serviceExternalIPs", &c.spec.service_external_ips),
        ("serviceLoadBalancerIPs", &c.spec.service_load_balancer_ips),
    ] {
        for (i, ip) in list.iter().flatten().enumerate() {
            cidr(&format!("spec.{field}[{i}].cidr"), &ip.cidr)?;
        }
    }
    for (i, a) in c.spec.prefix_advertisements.iter().flatten().enumerate() {
        cidr(&format!("spec.prefixAdvertisements[{i}].cidr"), &a.cidr)?;
        let named: Vec<&str> = c.spec.communities.iter().flatten().map(|c| c.name.as_str()).collect();
        for cm in &a.communities {
            if !named.contains(&cm.as_str()) {
                community(&format!("spec.prefixAdvertisements[{i}].communities"), cm)?;
            }
        }
    }
    for (i, cm) in c.spec.communities.iter().flatten().enumerate() {
        community(&format!("spec.communities[{i}].value"), &cm.value)?;
    }
    if let Some(why) = c.spec.as_number.and_then(bgp::unusable_as) {
        return Err(("spec.asNumber".into(), why.into()));
    }
    if let Some(t) = &c.spec.node_mesh_max_restart_time {
        duration_secs("spec.nodeMeshMaxRestartTime", t, 0, nodeapi::config::MAX_RESTART_TIME)?;
    }
    one_of("spec.serviceLoadBalancerAggregation", &c.spec.service_load_balancer_aggregation, &["Enabled", "Disabled"])?;
    for (field, addr, v6) in [
        ("spec.localWorkloadPeeringIPV4", &c.spec.local_workload_peering_ipv4, false),
        ("spec.localWorkloadPeeringIPV6", &c.spec.local_workload_peering_ipv6, true),
    ] {
        if let Some(a) = addr.as_deref().filter(|a| a.parse::<IpAddr>().map_or(true, |ip| ip.is_ipv6() != v6)) {
            return Err((field.into(), format!("{a:?} is not an IPv{} address", if v6 { 6 } else { 4 })));
        }
    }
    if let Some(pw) = &c.spec.node_mesh_password {
        // Calico refuses a key for sessions that do not exist.
        if c.spec.node_to_node_mesh_enabled == Some(false) {
            return Err(("spec.nodeMeshPassword".into(), "cannot be set when nodeToNodeMeshEnabled is false".into()));
        }
        secret_ref("spec.nodeMeshPassword", pw)?;
    }
    if let Some(l) = &c.spec.log_severity_screen {
        if calico_level(l).is_none() {
            return Err(("spec.logSeverityScreen".into(), format!("{l:?}: one of Debug, Info, Warning, Error, Fatal")));
        }
    }

    Ok(())
}

/// A field that takes one of a few words, as Calico spells them.
fn one_of(field: &str, value: &Option<String>, allowed: &[&str]) -> Result<(), (String, String)> {
    match value.as_deref() {
        Some(v) if !allowed.contains(&v) => Err((field.into(), format!("{v:?}: {}", allowed.join(" or ")))),
        _ => Ok(()),
    }
}

/// A password's secret and key as Kubernetes names them: never a path outside the node's
/// secrets directory.
fn secret_ref(field: &str, pw: &BgpPassword) -> Result<(), (String, String)> {
    let r = &pw.secret_key_ref;
    if !nodeapi::secrets::valid_name(&r.name) {
        return Err((
            format!("{field}.secretKeyRef.name"),
            format!(
                "{:?}: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit",
                r.name
            ),
        ));
    }
    if !nodeapi::secrets::valid_key(&r.key) {
        return Err((format!("{field}.secretKeyRef.key"), format!("{:?}: letters, digits, '-', '_' and '.'", r.key)));
    }
    Ok(())
}

fn validate_bgp_peer(p: &Typed<BgpPeerSpec>) -> Result<(), (String, String)> {
    one_of("spec.sourceAddress", &p.spec.source_address, &["UseNodeIP", "None"])?;
    if p.spec.ttl_security.is_some_and(|t| t == 0 || t == 255) {
        return Err(("spec.ttlSecurity".into(), "a hop count from 1 to 254".into()));
    }
    if let Some(t) = &p.spec.max_restart_time {
        duration_secs("spec.maxRestartTime", t, 0, nodeapi::config::MAX_RESTART_TIME)?;
    }
    if let Some(t) = &p.spec.keepalive_time {
        duration_secs("spec.keepaliveTime", t, 1, u16::MAX)?;
    }
    if let Some(g) = &p.spec.reachable_by {
        let gw =
            g.parse::<IpAddr>().map_err(|_| ("spec.reachableBy".to_string(), format!("{g:?} is not an IP address")))?;
        let peer = p.spec.peer_ip.as_deref().and_then(peer_address).map(|(a, _)| a);
        if peer.is_some_and(|a| a.is_ipv6() != gw.is_ipv6()) {
            return Err(("spec.reachableBy".into(), format!("{g}: a gateway of the peerIP's family")));
        }
    }
    if let Some(pw) = &p.spec.password {
        secret_ref("spec.password", pw)?;
    }
    one_of("spec.restartMode", &p.spec.restart_mode, &["GracefulRestart", "LongLivedGracefulRestart"])?;
    one_of("spec.birdGatewayMode", &p.spec.bird_gateway_mode, &["Recursive", "DirectIfDirectlyConnected"])?;
    one_of("spec.failureDetectionMode", &p.spec.failure_detection_mode, &["None", "BFDIfDirectlyConnected"])?;
    one_of("spec.nextHopMode", &p.spec.next_hop_mode, &["Auto", "Self", "Keep"])?;
    if p.spec.keep_original_next_hop == Some(true) && p.spec.next_hop_mode.as_deref().is_some_and(|m| m != "Keep") {
        return Err((
            "spec.nextHopMode".into(),
            "keepOriginalNextHop: true is nextHopMode Keep: give one of them".into(),
        ));
    }
    if p.spec.num_allowed_local_as_numbers.is_some_and(|n| n > 255) {
        return Err(("spec.numAllowedLocalASNumbers".into(), "at most 255".into()));
    }
    for (field, sel) in [("spec.nodeSelector", &p.spec.node_selector), ("spec.peerSelector", &p.spec.peer_selector)] {
        if let Some(s) = sel {
            crate::selector::Selector::parse(s).map_err(|e| (field.to_string(), format!("{s:?}: {e}")))?;
        }
    }
    if p.spec.node.is_some() && p.spec.node_selector.is_some() {
        return Err(("spec.nodeSelector".into(), "give node or nodeSelector, not both".into()));
    }
    // Calico's two kinds of peer: a router at peerIP with asNumber, or the nodes that
    // peerSelector picks, at their own addresses and AS numbers.
    if p.spec.peer_selector.is_some() {
        if p.spec.peer_ip.is_some() || p.spec.as_number.is_some() {
            let field = if p.spec.peer_ip.is_some() { "spec.peerIP" } else { "spec.asNumber" };
            return Err((field.into(), "not with peerSelector: the selected nodes' own are used".into()));
        }
        return Ok(());
    }
    let ip =
        p.spec.peer_ip.as_deref().ok_or(("spec.peerIP".to_string(), "missing (or give peerSelector)".to_string()))?;
    let (addr, port) =
        peer_address(ip).ok_or_else(|| ("spec.peerIP".to_string(), format!("{ip:?} is not an IP address")))?;
    let broadcast = addr == IpAddr::V4(std::net::Ipv4Addr::BROADCAST);
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() || broadcast {
        return Err(("spec.peerIP".into(), format!("{ip:?} is not a unicast address a router can have")));
    }
    if port == Some(0) {
        return Err(("spec.peerIP".into(), format!("{ip:?}: port 0 is no port; BGP's is 179")));
    }
    match p.spec.as_number.map(bgp::unusable_as) {
        None => return Err(("spec.asNumber".into(), "missing".into())),
        Some(Some(why)) => return Err(("spec.asNumber".into(), why.into())),
        Some(None) => {}
    }

    Ok(())
}

fn validate_filter(f: &Typed<BgpFilterSpec>) -> Result<(), (String, String)> {
    let rules = [("exportV4", &f.spec.export_v4), ("importV4", &f.spec.import_v4)]
        .into_iter()
        .chain([("exportV6", &f.spec.export_v6), ("importV6", &f.spec.import_v6)]);
    for (dir, list) in rules {
        for (i, rule) in list.iter().enumerate() {
            let field = format!("spec.{dir}[{i}].cidr");
            match (&rule.cidr, rule.match_operator) {
                (Some(c), Some(_)) => {
                    let net = cidr(&field, c)?;
                    if net.addr().is_ipv4() != dir.ends_with("V4") {
                        let family = if dir.ends_with("V4") { "IPv4" } else { "IPv6" };
                        return Err((field, format!("{c} is not an {family} prefix")));
                    }
                }
                (Some(_), None) => return Err((format!("spec.{dir}[{i}].matchOperator"), "missing".into())),
                (None, Some(_)) => return Err((field, "missing".into())),
                (None, None) => {}
            }
            if let Some(l) = &rule.prefix_length {
                let top = if dir.ends_with("V4") { 32 } else { 128 };
                let (min, max) = (l.min.unwrap_or(0), l.max.unwrap_or(top));
                if max > top || min > max {
                    return Err((
                        format!("spec.{dir}[{i}].prefixLength"),
                        format!("min {min} and max {max}: from 0 to {top}, min not above max"),
                    ));
                }
            }
        }
    }

    Ok(())
}

fn validate_node(n: &Typed<NodeSpec>) -> Result<(), (String, String)> {
    if let Some(b) = &n.spec.bgp {
        if let Some(a) = &b.ipv4_address {
            a.parse::<Ipv4Net>().map_err(|_| {
                ("spec.bgp.ipv4Address".to_string(), format!("{a:?} is not an IPv4 address with its prefix length"))
            })?;
        }
        if let Some(a) = &b.ipv6_address {
            a.parse::<ipnet::Ipv6Net>().map_err(|_| {
                ("spec.bgp.ipv6Address".to_string(), format!("{a:?} is not an IPv6 address with its prefix length"))
            })?;
        }
        if let Some(id) = &b.route_reflector_cluster_id {
            id.parse::<std::net::Ipv4Addr>().map_err(|_| {
                ("spec.bgp.routeReflectorClusterID".to_string(), format!("{id:?} is not a dotted quad"))
            })?;
        }
        if let Some(why) = b.as_number.and_then(bgp::unusable_as) {
            return Err(("spec.bgp.asNumber".into(), why.into()));
        }
    }
    // What calico-node writes of its tunnels and addresses: kept, but checked as Calico does.
    let s = &n.spec;
    let tunnel4 = [
        ("spec.bgp.ipv4IPIPTunnelAddr", s.bgp.as_ref().and_then(|b| b.ipv4_ipip_tunnel_addr.as_ref())),
        ("spec.ipv4VXLANTunnelAddr", s.ipv4_vxlan_tunnel_addr.as_ref()),
    ];
    for (field, a) in tunnel4.into_iter().filter_map(|(f, a)| Some((f, a?))) {
        a.parse::<std::net::Ipv4Addr>().map_err(|_| (field.to_string(), format!("{a:?} is not an IPv4 address")))?;
    }
    if let Some(a) = &s.ipv6_vxlan_tunnel_addr {
        a.parse::<std::net::Ipv6Addr>()
            .map_err(|_| ("spec.ipv6VXLANTunnelAddr".to_string(), format!("{a:?} is not an IPv6 address")))?;
    }
    for (field, m) in [
        ("spec.vxlanTunnelMACAddr", &s.vxlan_tunnel_mac_addr),
        ("spec.vxlanTunnelMACAddrV6", &s.vxlan_tunnel_mac_addr_v6),
    ] {
        if let Some(m) = m {
            mac(field, m)?;
        }
    }
    for (i, a) in s.addresses.iter().enumerate() {
        let ok = a.address.parse::<IpAddr>().is_ok() || a.address.parse::<ipnet::IpNet>().is_ok();
        if !ok {
            return Err((format!("spec.addresses[{i}].address"), format!("{:?} is not an IP address", a.address)));
        }
    }
    Ok(())
}

fn mac(field: &str, text: &str) -> Result<(), (String, String)> {
    let octets: Vec<&str> = text.split(':').collect();
    if octets.len() != 6 || octets.iter().any(|o| o.len() != 2 || u8::from_str_radix(o, 16).is_err()) {
        return Err((field.into(), format!("{text:?} is not a MAC address (six hex octets with ':')")));
    }
    Ok(())
}

fn validate_endpoint(name: &str, s: &WorkloadEndpointSpec) -> Result<(), (String, String)> {
    let want = endpoint_name(s)?;
    if name != want {
        return Err((
            "metadata.name".into(),
            format!("{name:?} is not the name Calico gives this endpoint: {want:?} (node, orchestrator, pod or container or workload, endpoint)"),
        ));
    }
    for (i, n) in s.ip_networks.iter().enumerate() {
        let field = format!("spec.ipNetworks[{i}]");
        match n.parse::<IpAddr>() {
            Ok(_) => {}
            Err(_) => {
                cidr(&field, n)?;
            }
        }
    }
    for (field, g, v4) in [("spec.ipv4Gateway", &s.ipv4_gateway, true), ("spec.ipv6Gateway", &s.ipv6_gateway, false)] {
        if !g.is_empty() && g.parse::<IpAddr>().map_or(true, |a| a.is_ipv4() != v4) {
            return Err((field.into(), format!("{g:?} is not an IPv{} address", if v4 { 4 } else { 6 })));
        }
    }
    if !s.mac.is_empty() {
        mac("spec.mac", &s.mac)?;
    }
    let i = &s.interface_name;
    if i.len() > 15 || i.bytes().any(|b| b == b'/' || b == b':' || b <= b' ') {
        return Err(("spec.interfaceName".into(), format!("{i:?} is not an interface name")));
    }
    for (i, n) in s.ip_nats.iter().enumerate() {
        for (f, a) in [("internalIP", &n.internal_ip), ("externalIP", &n.external_ip)] {
            a.parse::<IpAddr>().map_err(|_| (format!("spec.ipNATs[{i}].{f}"), format!("{a:?} is not an address")))?;
        }
    }
    for (i, p) in s.allow_spoofed_source_prefixes.iter().enumerate() {
        reserved(&format!("spec.allowSpoofedSourcePrefixes[{i}]"), p)?;
    }
    for (i, p) in s.ports.iter().enumerate() {
        if p.port == 0 {
            return Err((format!("spec.ports[{i}].port"), "0 is not a port".into()));
        }
    }
    Ok(())
}

/// The name Calico gives a workload endpoint: `<node>-<orchestrator>-<id>-<endpoint>`, the id
/// being the pod (orchestrator `k8s`), the container (`cni`) or the workload, each part with
/// its dashes doubled so that the name splits back into them. The error names the field that
/// is missing or cannot be a part (it begins or ends with '-').
pub fn endpoint_name(s: &WorkloadEndpointSpec) -> Result<String, (String, String)> {
    let id = match s.orchestrator.as_str() {
        "k8s" => ("spec.pod", &s.pod),
        "cni" => ("spec.containerID", &s.container_id),
        "libnetwork" => ("spec.orchestrator", &s.orchestrator),
        _ => ("spec.workload", &s.workload),
    };
    let parts = [("spec.node", &s.node), ("spec.orchestrator", &s.orchestrator), id, ("spec.endpoint", &s.endpoint)];
    let mut out = Vec::with_capacity(parts.len());
    for (field, v) in parts {
        if v.is_empty() {
            return Err((field.into(), "missing: it makes the endpoint's name".into()));
        }
        if v.starts_with('-') || v.ends_with('-') {
            return Err((field.into(), format!("{v:?}: a part of a name may not begin or end with '-'")));
        }
        out.push(v.replace('-', "--"));
    }
    Ok(out.join("-"))
}

/// A reservation: an address, or a network without host bits.
pub fn reserved(field: &str, s: &str) -> Result<IpNet, (String, String)> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok(IpNet::from(a));
    }
    if s.parse::<IpNet>().is_err() {
        return Err((field.to_string(), format!("{s:?} is not an address or a CIDR")));
    }
    cidr(field, s)
}

/// Resources as YAML documents (`router get -o yaml`).
pub fn to_yaml(rs: &[Resource]) -> String {
    rs.iter().map(|r| serde_yaml_ng::to_string(&r.to_json()).unwrap_or_default()).collect::<Vec<_>>().join("---\n")
}

/// A new resource with the envelope filled in.
pub fn typed<S>(kind: Kind, name: &str, spec: S) -> Typed<S> {
    Typed {
        api_version: API_VERSION.into(),
        kind: kind.name().into(),
        metadata: Metadata { name: name.into(), ..Default::default() },
        spec,
        status: None,
    }
}
