//! The interfaces a node forwards between, fixed when the data plane starts.

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
    /// The host end of a pod's veth pair; the pod owns exactly `addr`.
    Pod { addr: Ipv4Addr },
}

#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: MacAddr,
    pub mtu: u16,
    pub role: IfaceRole,
}

/// All interfaces of the data plane, indexed by [`IfaceId`].
#[derive(Debug, Clone, Default)]
pub struct Interfaces {
    list: Vec<Interface>,
}

impl Interfaces {
    pub fn new(list: Vec<Interface>) -> Self {
        Interfaces { list }
    }

    pub fn get(&self, id: IfaceId) -> Option<&Interface> {
        self.list.get(usize::from(id.0))
    }

    pub fn iter(&self) -> impl Iterator<Item = (IfaceId, &Interface)> {
        self.list
            .iter()
            .enumerate()
            .map(|(i, f)| (IfaceId(i as u16), f))
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn by_name(&self, name: &str) -> Option<IfaceId> {
        self.iter().find(|(_, f)| f.name == name).map(|(i, _)| i)
    }

    /// The node's own underlay address: the source of the ICMP errors it originates.
    pub fn node_addr(&self) -> Option<Ipv4Addr> {
        self.list.iter().find_map(|f| match f.role {
            IfaceRole::Uplink { addr } => Some(addr.addr()),
            IfaceRole::Pod { .. } => None,
        })
    }
}
