//! The interfaces a node forwards between. Pods come and go while the node runs: an
//! interface keeps its [`IfaceId`] (its slot) while it exists, and a slot that was freed is
//! given to the next interface.

use encap::MacAddr;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Index of an interface in [`Interfaces`]; small so verdicts and counters stay compact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct IfaceId(pub u16);

/// What an interface is for; the pipeline's checks differ per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfaceRole {
    /// The node's link to the underlay, with the node's address and subnet.
    Uplink { addr: Ipv4Net },
    /// The host end of a pod's veth pair; the pod owns exactly `addr` (and `addr6` in a
    /// dual-stack cluster).
    Pod { addr: Ipv4Addr, addr6: Option<std::net::Ipv6Addr> },
    /// The userspace tunnel device (`tunl0`, or `vxlan.calico` for VXLAN pools), a TUN device
    /// carrying bare IPv4 packets that the kernel routed to it (and, in `tun` mode, that we
    /// hand back after decapsulation).
    Tun,
    /// `tun` mode: a raw IPv4 socket for protocol 4; IPIP comes in here, and every outer
    /// packet (IPIP or VXLAN, headers ours) goes out here, routed by the kernel.
    RawIpip,
    /// `tun` mode: the UDP socket on the node's address and port 4789, where the kernel
    /// delivers VXLAN. The worker puts the outer IPv4 and UDP headers the kernel took off back
    /// in front, so the pipeline checks the datagram as it came.
    VxlanUdp,
}

impl IfaceRole {
    /// Whether frames on this interface carry an Ethernet header.
    pub fn is_ethernet(&self) -> bool {
        matches!(self, IfaceRole::Uplink { .. } | IfaceRole::Pod { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            IfaceRole::Uplink { .. } => "uplink",
            IfaceRole::Pod { .. } => "pod",
            IfaceRole::Tun => "tun",
            IfaceRole::RawIpip => "raw-ip",
            IfaceRole::VxlanUdp => "vxlan-udp",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    pub mtu: u16,
    pub role: IfaceRole,
}

/// How many interface slots a data plane has (counters are allocated for all of them).
pub const MAX_IFACES: usize = 4096;

/// All interfaces of the data plane, indexed by [`IfaceId`], and the node's own address.
#[derive(Debug, Clone, Default)]
pub struct Interfaces {
    list: Vec<Option<Interface>>,
    node_addr: Option<Ipv4Addr>,
    node_addr6: Option<std::net::Ipv6Addr>,
}

impl Interfaces {
    /// The node's address is the uplink's, when there is an uplink.
    pub fn new(list: Vec<Interface>) -> Self {
        let node_addr = list.iter().find_map(|f| match f.role {
            IfaceRole::Uplink { addr } => Some(addr.addr()),
            _ => None,
        });
        Interfaces { list: list.into_iter().map(Some).collect(), node_addr, node_addr6: None }
    }

    /// A copy with `f` in the first free slot; None when every slot is taken.
    pub fn with_added(&self, f: Interface) -> Option<(Interfaces, IfaceId)> {
        let mut next = self.clone();
        let slot = match next.list.iter().position(Option::is_none) {
            Some(i) => i,
            None if next.list.len() < MAX_IFACES => {
                next.list.push(None);
                next.list.len() - 1
            }
            None => return None,
        };
        next.list[slot] = Some(f);
        Some((next, IfaceId(slot as u16)))
    }

    /// A copy without the interface in slot `id`.
    pub fn with_removed(&self, id: IfaceId) -> Interfaces {
        let mut next = self.clone();
        if let Some(s) = next.list.get_mut(usize::from(id.0)) {
            *s = None;
        }
        next
    }

    /// A copy with the interface in slot `id` replaced by `f`.
    pub fn with_replaced(&self, id: IfaceId, f: Interface) -> Interfaces {
        let mut next = self.clone();
        if let Some(s @ Some(_)) = next.list.get_mut(usize::from(id.0)) {
            *s = Some(f);
        }
        next
    }

    /// For data planes without an uplink interface of their own (`tun`).
    pub fn with_node_addr(mut self, addr: Ipv4Addr) -> Self {
        self.node_addr = Some(addr);
        self
    }

    pub fn get(&self, id: IfaceId) -> Option<&Interface> {
        self.list.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    /// The interfaces present, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (IfaceId, &Interface)> {
        self.list.iter().enumerate().filter_map(|(i, f)| Some((IfaceId(i as u16), f.as_ref()?)))
    }

    /// The number of slots in use or freed (one past the highest `IfaceId`).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<IfaceId> {
        self.iter().find(|(_, f)| f.name == name).map(|(i, _)| i)
    }

    pub fn by_role(&self, pred: impl Fn(&IfaceRole) -> bool) -> Option<IfaceId> {
        self.iter().find(|(_, f)| pred(&f.role)).map(|(i, _)| i)
    }

    /// The node's own underlay address: source of its ICMP errors and of its tunnels.
    pub fn node_addr(&self) -> Option<Ipv4Addr> {
        self.node_addr
    }

    /// The node's IPv6 address on the uplink, in a dual-stack node.
    pub fn node_addr6(&self) -> Option<std::net::Ipv6Addr> {
        self.node_addr6
    }

    pub fn with_node_addr6(mut self, addr: std::net::Ipv6Addr) -> Self {
        self.node_addr6 = Some(addr);
        self
    }
}
