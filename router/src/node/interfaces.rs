//! The interfaces a node's data plane reads, found in its network namespace, and the
//! kernel setting each data plane needs.

use super::*;

/// Finds the data plane's interfaces in this network namespace: the uplink, every pod
/// interface and, when a pool tunnels, the tunnel device (`tunl0` or `vxlan.calico`) for the
/// node's own traffic into the tunnel (afpacket); or the raw IP socket, the VXLAN UDP socket
/// when a pool uses VXLAN, and the tunnel device (tun).
/// Besides them, why the tunnel device a pool needs cannot be had, where it cannot (logged
/// here; the node keeps it for `router stats`).
pub fn discover(cfg: &NodeConfig) -> anyhow::Result<(Interfaces, Option<String>)> {
    let (ifaces, tunnel_missing) = discover_links(cfg)?;
    let ifaces = match &cfg.ipv6 {
        Some(v6) => ifaces.with_node_addr6(v6.address.addr()),
        None => ifaces,
    };
    Ok((ifaces, tunnel_missing))
}

fn discover_links(cfg: &NodeConfig) -> anyhow::Result<(Interfaces, Option<String>)> {
    let mut list = Vec::new();
    let up = check_uplink(cfg)?;
    let tunnel = tunnel_interfaces(cfg, up.mtu);
    if cfg.dataplane == DataplaneMode::Tun {
        let zero = encap::MacAddr::ZERO;
        list.push(Interface { name: "raw-ip".into(), ifindex: 0, mac: zero, mtu: up.mtu, role: IfaceRole::RawIpip });
        list.extend(tunnel.vxlan);
        list.extend(tunnel.device.unwrap_or_default());
        return Ok((Interfaces::new(list).with_node_addr(cfg.uplink.address.addr()), None));
    }
    list.push(Interface {
        name: cfg.uplink.interface.clone(),
        ifindex: up.ifindex,
        mac: up.mac,
        mtu: up.mtu,
        role: IfaceRole::Uplink { addr: cfg.uplink.address },
    });
    list.extend(cfg.pods.iter().filter_map(pod_interface));
    let missing = match tunnel.device {
        Ok(device) => {
            list.extend(device);
            None
        }
        Err(why) => {
            tracing::warn!("{why}");
            Some(why)
        }
    };
    Ok((Interfaces::new(list), missing))
}

/// The data-plane port of a pod's interface, made ready to serve (afpacket), at start and
/// whenever a pod comes: None while the interface is missing (a pod that is down or not made
/// yet, served once it appears) or is not Ethernet.
pub(super) fn pod_interface(p: &nodeapi::config::PodConfig) -> Option<Interface> {
    let Ok(l) = netsys::link_info(&p.interface) else {
        tracing::info!(pod = %p.name, interface = %p.interface, "pod interface missing: the pod is down");
        return None;
    };
    if !l.is_ethernet() {
        tracing::error!(pod = %p.name, interface = %p.interface, kind = %l.kind(), "pod interface is not Ethernet (a veth): not served");
        return None;
    }
    refuse_router_adverts(&p.interface);
    Some(Interface {
        name: p.interface.clone(),
        ifindex: l.ifindex,
        mac: l.mac,
        mtu: l.mtu,
        role: IfaceRole::Pod { addr: p.address, addr6: p.address6 },
    })
}

/// A pod is no router of the node's: its router advertisements are not taken. With IPv6
/// forwarding off (afpacket) the kernel would otherwise take one from any pod and route the
/// node's IPv6 through it (a default route, a SLAAC address). Felix sets the same. Without
/// IPv6 on the interface there is nothing to set.
fn refuse_router_adverts(interface: &str) {
    let path = format!("/proc/sys/net/ipv6/conf/{interface}/accept_ra");
    match std::fs::write(&path, "0") {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(interface, error = %e, "cannot refuse router advertisements from the pod ({path})"),
    }
}

/// Checks the uplink without changing anything: it exists, holds the config's addresses
/// and, for the afpacket data plane, carries Ethernet. Returns what it is.
pub fn check_uplink(cfg: &NodeConfig) -> anyhow::Result<netsys::LinkInfo> {
    let up = netsys::link_info(&cfg.uplink.interface)
        .with_context(|| format!("uplink interface {} (from the config)", cfg.uplink.interface))?;
    check_uplink_addresses(cfg)?;
    if cfg.dataplane == DataplaneMode::Afpacket && !up.is_ethernet() {
        bail!(
            "uplink interface {} is {}, not Ethernet: the afpacket data plane reads and writes Ethernet frames \
             (an Ethernet uplink, or `dataplane = \"tun\"`, where the kernel forwards)",
            cfg.uplink.interface,
            up.kind()
        );
    }
    Ok(up)
}

/// The uplink must hold the config's addresses: the node speaks BGP from them, wraps tunnels
/// in them and answers for them. A node started on a host whose address differs would run,
/// peer with no one and drop what it wraps at the far end.
fn check_uplink_addresses(cfg: &NodeConfig) -> anyhow::Result<()> {
    let dev = &cfg.uplink.interface;
    let held: Vec<std::net::IpAddr> = nix::ifaddrs::getifaddrs()
        .context("listing the host's addresses")?
        .filter(|i| &i.interface_name == dev)
        .filter_map(|i| {
            let a = i.address?;
            a.as_sockaddr_in().map(|a| a.ip().into()).or_else(|| a.as_sockaddr_in6().map(|a| a.ip().into()))
        })
        .collect();
    let want = std::iter::once(IpNet::V4(cfg.uplink.address)).chain(cfg.ipv6.as_ref().map(|v6| IpNet::V6(v6.address)));
    for net in want {
        let addr = net.addr();
        if !held.contains(&addr) {
            let has: Vec<String> =
                held.iter().filter(|a| a.is_ipv4() == addr.is_ipv4()).map(|a| a.to_string()).collect();
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            bail!(
                "the uplink {dev} does not hold {net}, the config's address ({}): add it \
                 (`ip addr add {net} dev {dev}`) or correct the config",
                if has.is_empty() {
                    format!("it has no {family} address")
                } else {
                    format!("it has {}", has.join(", "))
                }
            );
        }
    }
    Ok(())
}

/// The tunnel interfaces the config's pools need, at start and whenever the pools change.
pub(super) struct TunnelInterfaces {
    /// tun mode's VXLAN UDP sockets, while a pool uses VXLAN.
    pub vxlan: Option<Interface>,
    /// The tunnel device (`tunl0` or `vxlan.calico`): always in tun mode, where pods' traffic
    /// to other nodes goes through it; in afpacket mode while a pool tunnels, for the node's
    /// own traffic. Err: why it cannot be had (afpacket, which works on without it).
    pub device: Result<Option<Interface>, String>,
}

pub(super) fn tunnel_interfaces(cfg: &NodeConfig, uplink_mtu: u16) -> TunnelInterfaces {
    let zero = encap::MacAddr::ZERO;
    let (dev, mtu) = (cfg.tunnel_device(), cfg.tunnel_device_mtu(uplink_mtu));
    let device = Interface { name: dev.into(), ifindex: 0, mac: zero, mtu, role: IfaceRole::Tun };
    if cfg.dataplane == DataplaneMode::Tun {
        let vxlan = cfg.uses_vxlan().then(|| Interface {
            name: "vxlan-udp".into(),
            ifindex: 0,
            mac: zero,
            mtu: uplink_mtu,
            role: IfaceRole::VxlanUdp,
        });
        return TunnelInterfaces { vxlan, device: Ok(Some(device)) };
    }
    // The node's kernel cannot wrap IPIP or VXLAN itself. As in Calico, its routes to the
    // blocks behind the tunnel point into the tunnel device, and the router wraps what it
    // reads there: a host-network process reaches pods on other subnets, and their replies
    // reach it.
    let device = if !cfg.uses_tunnel() {
        Ok(None)
    } else if Path::new("/sys/class/net").join(dev).exists()
        && !Path::new("/sys/class/net").join(dev).join("tun_flags").exists()
    {
        // Where the kernel has its ipip module, it made a tunl0 of its own in every
        // namespace; the pods' traffic does not need ours.
        Err(format!(
            "{dev} exists and is not a TUN device (the kernel's ipip or vxlan module?): the node's own traffic to pods behind the tunnel will not reach them"
        ))
    } else {
        // Asked with access(2), not by opening it: closing a TUN file takes the kernel's
        // routing lock, which a hundred nodes starting at once queue for.
        let rw = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK;
        match nix::unistd::access("/dev/net/tun", rw) {
            Ok(()) => Ok(Some(device)),
            // A user without root where /dev/net/tun is 0600: everything but this works.
            Err(e) => Err(format!(
                "no {dev}: /dev/net/tun cannot be opened ({e}), so this node's own processes cannot reach pods behind the tunnel (pods can)"
            )),
        }
    };
    TunnelInterfaces { vxlan: None, device }
}

/// afpacket: kernel forwarding would forward every packet a second time. tun: the kernel
/// forwards pod traffic into the tunnel device and out of it, so it must be on.
pub(super) fn check_kernel_forwarding(mode: DataplaneMode, ipv6: bool) -> anyhow::Result<()> {
    if ipv6 {
        // IPv6 alike: afpacket forwards it in the router; tun leaves it to the kernel (it is
        // never tunnelled, so the kernel's routes are all it takes).
        let v = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").unwrap_or_default();
        match (mode, v.trim()) {
            (DataplaneMode::Afpacket, "1") => bail!(
                "kernel IPv6 forwarding is on in this network namespace (net.ipv6.conf.all.forwarding=1): \
                 packets would be forwarded twice. Turn it off or run the node in its own namespace"
            ),
            (DataplaneMode::Tun, "0") => bail!(
                "the tun data plane leaves IPv6 to the kernel, but net.ipv6.conf.all.forwarding=0 here; \
                 turn it on (`sysctl -w net.ipv6.conf.all.forwarding=1`)"
            ),
            _ => {}
        }
    }
    let v = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    match (mode, v.trim()) {
        (DataplaneMode::Afpacket, "1") => bail!(
            "kernel IPv4 forwarding is on in this network namespace (net.ipv4.ip_forward=1): \
             packets would be forwarded twice. Turn it off (`sysctl -w net.ipv4.ip_forward=0`) \
             or run the node in its own namespace (`router lab up` does)"
        ),
        (DataplaneMode::Tun, "0") => bail!(
            "the tun data plane lets the kernel forward pod traffic to and from the tunnel device, but \
             net.ipv4.ip_forward=0 here; turn it on (`sysctl -w net.ipv4.ip_forward=1`) or use \
             `router lab up --dataplane tun`, which does"
        ),
        _ => Ok(()),
    }
}

impl Node {
    /// The uplink's MTU as the data plane has it: the uplink's own entry (afpacket), or the
    /// raw socket's that sends on it (tun).
    pub(super) fn uplink_mtu(&self) -> Option<u16> {
        let ifaces = self.dp.interfaces();
        let id = ifaces.by_role(|r| matches!(r, IfaceRole::Uplink { .. } | IfaceRole::RawIpip))?;
        ifaces.get(id).map(|f| f.mtu)
    }

    /// Says once when the uplink loses an address of the config, and when it has them again:
    /// BGP from it, the tunnels wrapped in it and the node's own traffic fail meanwhile.
    pub(super) fn follow_uplink_addresses(&mut self) {
        let now = check_uplink_addresses(&self.cfg).err().map(|e| format!("{e:#}"));
        match (&self.uplink_missing, &now) {
            (None, Some(why)) => tracing::error!("{why}"),
            (Some(_), None) => {
                tracing::info!(interface = %self.cfg.uplink.interface, "the uplink holds the config's addresses again")
            }
            _ => {}
        }
        self.uplink_missing = now;
    }

    /// Follows the uplink's MTU and MAC address as they change under the running node.
    pub(super) fn follow_uplink(&mut self) {
        let Ok(up) = netsys::link_info(&self.cfg.uplink.interface) else { return };
        self.follow_uplink_mtu(&up);
        let name = self.cfg.uplink.interface.clone();
        self.follow_mac(&name, up.mac);
    }

    /// Follows a new MAC address of a served interface (`ip link set eth0 address …`): the
    /// kernel answers ARP for the node's address with it, so neighbours send to it; a router
    /// that kept the old one would hand all their frames to the kernel, which does not
    /// forward them.
    pub(super) fn follow_mac(&mut self, name: &str, mac: encap::MacAddr) {
        let ifaces = self.dp.interfaces();
        let Some(id) = ifaces.by_name(name) else { return };
        let Some(old) = ifaces.get(id).filter(|f| f.role.is_ethernet() && f.mac != mac).map(|f| f.mac) else {
            return;
        };
        tracing::info!(interface = name, from = %old, to = %mac, "the interface's MAC address changed: taking frames to the new one, announced to the link");
        self.dp.set_mac(id, mac);
    }

    /// Follows a new MTU on the uplink (`ip link set eth0 mtu 9000`): the data plane sends
    /// up to it (else it would send frames the kernel refuses instead of answering "too
    /// big" or fragmenting), the tunnel device follows as it follows the pools, and new pods
    /// get theirs from it.
    fn follow_uplink_mtu(&mut self, up: &netsys::LinkInfo) {
        let Some(have) = self.uplink_mtu() else { return };
        if up.mtu == have {
            return;
        }
        let on_uplink: Vec<forwarding::iface::IfaceId> = self
            .dp
            .interfaces()
            .iter()
            .filter(|(_, f)| matches!(f.role, IfaceRole::Uplink { .. } | IfaceRole::RawIpip | IfaceRole::VxlanUdp))
            .map(|(id, _)| id)
            .collect();
        for id in on_uplink {
            self.dp.set_mtu(id, up.mtu);
        }
        self.follow_tunnel_devices();
        tracing::info!(
            interface = %self.cfg.uplink.interface,
            from = have,
            to = up.mtu,
            tunnel = self.cfg.tunnel_device_mtu(up.mtu),
            new_pods = self.cfg.pod_mtu(up.mtu),
            "the uplink's MTU changed"
        );
    }
}
