//! The node's route table as the control plane sees it: every route with where it came from,
//! how it leaves (direct or IPIP, and why), shown by `router routes` the way `route -n` shows
//! the kernel's. It also yields the FIB for the workers and, where the kernel forwards, the
//! kernel routes to install.

use forwarding::fib::{FibFamily, NextHop6, Route6};
use forwarding::{IfaceId, IfaceRole, Interfaces, NextHop, Route};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nodeapi::admin::{RouteEntry, RouteSource};
use nodeapi::config::{DataplaneMode, Encap, IpipMode, NodeConfig, StaticAction, StaticRoute};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How the kernel of the node namespace should route a prefix (tun mode forwarding, and the
/// node's own traffic in afpacket mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KernelRoute {
    Via { prefix: IpNet, gateway: IpAddr, dev: String },
    Dev { prefix: IpNet, dev: String },
    Blackhole { prefix: IpNet },
}

/// The routing protocol number our kernel routes carry (`ip route ... proto 179`, after
/// BGP's port), so that a node can flush every route it or a crashed run of it left, and
/// nothing else: at start and at stop.
pub const KERNEL_PROTO: &str = "179";

impl KernelRoute {
    pub fn prefix(&self) -> IpNet {
        match self {
            KernelRoute::Via { prefix, .. } | KernelRoute::Dev { prefix, .. } | KernelRoute::Blackhole { prefix } => {
                *prefix
            }
        }
    }

    /// For a route to one address straight out of a device (a pod's, as the lab or the CNI
    /// plugin makes it), that device.
    pub fn pod_dev(&self) -> Option<&str> {
        match self {
            KernelRoute::Dev { prefix, dev } if prefix.prefix_len() == prefix.max_prefix_len() => Some(dev),
            _ => None,
        }
    }

    /// Arguments of `ip route replace` and `ip route del`, ours marked with [`KERNEL_PROTO`].
    pub fn args(&self) -> Vec<String> {
        let mut a = match self {
            KernelRoute::Via { prefix, gateway, dev } => {
                vec![prefix.to_string(), "via".into(), gateway.to_string(), "dev".into(), dev.clone()]
            }
            KernelRoute::Dev { prefix, dev } => vec![prefix.to_string(), "dev".into(), dev.clone()],
            KernelRoute::Blackhole { prefix } => vec!["blackhole".into(), prefix.to_string()],
        };
        a.extend(["proto".into(), KERNEL_PROTO.into()]);
        a
    }
}

/// The node's routes: rows for display, the FIB, the kernel routes.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Rows for display; left empty by [`build_fib`].
    pub entries: Vec<RouteEntry>,
    pub fib: Vec<Route>,
    pub kernel: Vec<KernelRoute>,
    with_entries: bool,
}

/// What natOutgoing does to traffic leaving the pools: nothing said when no pool
/// masquerades; the pools named when only some do (the others' pods keep their address).
fn masq_note<N: std::fmt::Display>(masquerading: &[N], pools: usize) -> String {
    match masquerading {
        [] => String::new(),
        m if m.len() >= pools => "pods leave masqueraded as the node (natOutgoing)".into(),
        m => {
            let names: Vec<String> = m.iter().map(|n| n.to_string()).collect();
            format!("pods of {} leave masqueraded as the node (natOutgoing)", names.join(", "))
        }
    }
}

fn flags(prefix: &IpNet, gateway: bool, reject: bool) -> String {
    let mut f = String::from("U");
    if gateway {
        f.push('G');
    }
    if prefix.prefix_len() == prefix.max_prefix_len() {
        f.push('H');
    }
    if reject {
        f.push('!');
    }
    f
}

struct Row<'a> {
    prefix: Ipv4Net,
    nh: NextHop,
    gateway: Option<Ipv4Addr>,
    iface: Option<&'a str>,
    kind: &'a str,
    encap: &'a str,
    /// Why it is (not) tunnelled, formatted only when the table is for display: a full table
    /// would format a million reasons for the FIB alone.
    why: &'a dyn Fn() -> String,
    source: RouteSource,
    kernel: bool,
}

impl Table {
    fn push(&mut self, r: Row<'_>) {
        self.fib.push(Route { prefix: r.prefix, next_hop: r.nh });
        if !self.with_entries {
            return;
        }
        let reject = matches!(r.kind, "blackhole" | "unreachable");
        self.entries.push(RouteEntry {
            prefix: r.prefix.into(),
            next_hop: r.gateway.map(IpAddr::V4),
            interface: r.iface.map(str::to_string),
            flags: flags(&r.prefix.into(), r.gateway.is_some(), reject),
            source: r.source,
            kind: r.kind.to_string(),
            encap: r.encap.to_string(),
            why: (r.why)(),
            forwarded_by: if r.kernel { "kernel" } else { "router" }.to_string(),
        });
    }
}

/// The node's IPv6 table (dual stack): what the FIB gets, what the kernel gets, and (when
/// asked) rows for display.
#[derive(Debug, Clone, Default)]
pub struct Table6 {
    pub fib: Vec<Route6>,
    pub kernel: Vec<KernelRoute>,
    /// Left empty unless asked for: a full IPv6 table from a peer would format a reason per
    /// route for nothing, as [`build_fib`] avoids for IPv4.
    pub entries: Vec<RouteEntry>,
}

/// The node's IPv6 routes: its own address for the kernel, the uplink's prefix on link, its
/// blocks blackholed, each pod's /128 on its interface, and what BGP taught: via the next
/// hop where it is on the uplink's prefix, else via the underlay router (IPv6 is never
/// tunnelled; the fabric knows the pod routes). The kernel gets the learned routes (for the
/// node's own traffic, and in tun mode, where the kernel forwards IPv6, for the pods') and in
/// tun mode the blackholes.
pub fn table6(cfg: &NodeConfig, ifaces: &Interfaces, learned: &[(Ipv6Net, Ipv6Addr)], with_entries: bool) -> Table6 {
    let tun = cfg.dataplane == DataplaneMode::Tun;
    let mut t = Table6::default();
    let Some(resolver) = Resolver6::new(cfg, ifaces) else { return t };
    let (v6, uplink) = (resolver.v6, resolver.uplink);
    let up = cfg.uplink.interface.as_str();
    let mut push = |prefix: Ipv6Net, next_hop, iface: Option<&str>, source, kind: &str, why: &dyn Fn() -> String| {
        let gateway = match next_hop {
            NextHop6::Direct { gateway, .. } => Some(gateway),
            _ => None,
        };
        t.fib.push(Route6 { prefix, next_hop });
        match (gateway, next_hop) {
            (Some(g), _) if source == RouteSource::Bgp => {
                t.kernel.push(KernelRoute::Via { prefix: prefix.into(), gateway: g.into(), dev: up.to_string() })
            }
            (_, NextHop6::Blackhole) if tun => t.kernel.push(KernelRoute::Blackhole { prefix: prefix.into() }),
            _ => {}
        }
        if !with_entries {
            return;
        }
        let forwarded_by = if next_hop == NextHop6::Host || tun { "kernel" } else { "router" };
        t.entries.push(RouteEntry {
            prefix: prefix.into(),
            next_hop: gateway.map(IpAddr::V6),
            interface: iface.map(str::to_string),
            flags: flags(&prefix.into(), gateway.is_some(), matches!(kind, "blackhole" | "unreachable")),
            source,
            kind: kind.to_string(),
            encap: "none".into(),
            why: why(),
            forwarded_by: forwarded_by.into(),
        });
    };
    let local = RouteSource::Local;
    push(v6.address.trunc(), NextHop6::Local { iface: uplink }, Some(up), local, "unicast", &|| {
        "the uplink's subnet".into()
    });
    push(Ipv6Net::from(v6.address.addr()), NextHop6::Host, Some(up), local, "local", &String::new);
    if let Some(gateway) = v6.gateway {
        for p in &v6.routes {
            let why = || match masq_note(&v6.nat_outgoing, v6.pools.len()) {
                m if m.is_empty() => "another underlay subnet, through the underlay router".to_string(),
                m => format!("another underlay subnet, through the underlay router; {m}"),
            };
            push(*p, NextHop6::Direct { iface: uplink, gateway }, Some(up), RouteSource::Static, "unicast", &why);
        }
    }
    // IPv6 BGP peers off the subnet (reachableBy): the node's own session needs the route too.
    for (peer, gateway) in cfg.peer_routes6() {
        let why = || format!("BGP peer reached through its gateway {gateway} (reachableBy)");
        push(peer, NextHop6::Direct { iface: uplink, gateway }, Some(up), RouteSource::Static, "unicast", &why);
    }
    for b in &v6.blocks {
        push(*b, NextHop6::Blackhole, None, local, "blackhole", &|| "this node's own block".into());
    }
    let mut pod_routes = Vec::new();
    for p in &cfg.pods {
        let nh = match ifaces.by_name(&p.interface) {
            Some(i) => NextHop6::Local { iface: i },
            None if tun => NextHop6::Host,
            None => continue,
        };
        if let Some(a) = p.address6 {
            push(Ipv6Net::from(a), nh, Some(&p.interface), local, "unicast", &|| format!("pod {}", p.name));
            // As for IPv4: the kernel's route to the pod, put back when a flap took it.
            pod_routes.push(KernelRoute::Dev { prefix: Ipv6Net::from(a).into(), dev: p.interface.clone() });
        }
    }
    for (prefix, nh) in learned {
        let direct = v6.address.contains(nh);
        let Some(gateway) = resolver.gateway(*nh) else {
            if *nh != v6.address.addr() {
                tracing::warn!(%prefix, next_hop = %nh, "learned IPv6 route's next hop is off the uplink's prefix and there is no IPv6 gateway; not installed");
            }
            continue;
        };
        let why = || {
            match direct {
            true => "IPv6 is not tunnelled: direct to the node that announced it".to_string(),
            false => format!("IPv6 is not tunnelled: next hop {nh} is on another subnet, so through the underlay router, which knows the pod routes"),
        }
        };
        push(*prefix, NextHop6::Direct { iface: uplink, gateway }, Some(up), RouteSource::Bgp, "unicast", &why);
    }
    t.kernel.extend(pod_routes);
    let peers = cfg.peer_routes6();
    t.kernel.extend(peers.map(|(p, g)| KernelRoute::Via { prefix: p.into(), gateway: g.into(), dev: up.to_string() }));
    // The other underlay subnets, as IPv4's: the node's own traffic needs them (where the
    // host has its own route for one, the kernel thread leaves the host's).
    if let Some(g) = v6.gateway {
        t.kernel.extend(v6.routes.iter().map(|p| KernelRoute::Via {
            prefix: (*p).into(),
            gateway: g.into(),
            dev: up.into(),
        }));
    }
    // Display rows sorted by prefix, as `build`'s IPv4 rows (stable: equal prefixes keep their order).
    t.entries.sort_by_key(|r| (r.prefix.network(), r.prefix.prefix_len()));
    t
}

/// Builds the node's routes from its config, its data-plane interfaces and what it learned
/// over BGP (prefix, next hop). A learned route whose next hop cannot be reached is left out
/// (and logged); a static one is a config error.
pub fn build(cfg: &NodeConfig, ifaces: &Interfaces, learned: &[(Ipv4Net, Ipv4Addr)]) -> Result<Table, String> {
    build_inner(cfg, ifaces, learned, true)
}

/// Like [`build`] without the display rows: what the FIB and the kernel need, and nothing a
/// full Internet table would pay for per route (strings, explanations).
pub fn build_fib(cfg: &NodeConfig, ifaces: &Interfaces, learned: &[(Ipv4Net, Ipv4Addr)]) -> Result<Table, String> {
    build_inner(cfg, ifaces, learned, false)
}

#[derive(Debug)]
/// How a route via a gateway leaves this node, worked out the same way for the whole table
/// ([`build`]) and for one learned route at a time ([`Resolver::learned`]).
pub struct Resolver<'a> {
    cfg: &'a NodeConfig,
    tun: bool,
    /// Where routed and tunnelled packets leave: the uplink, or in tun mode the raw socket.
    out_if: IfaceId,
    subnet: Ipv4Net,
}

/// Where a route via `gateway` goes, and the facts a display row explains it with.
struct Via {
    nh: NextHop,
    tunnel: Encap,
    mode: IpipMode,
    /// Tunnelled (IPIP or VXLAN), by the pool's mode.
    encap: bool,
    /// The underlay next hop toward the gateway.
    hop: Ipv4Addr,
    in_pool: bool,
    on_link: bool,
}

impl<'a> Resolver<'a> {
    pub fn new(cfg: &'a NodeConfig, ifaces: &Interfaces) -> Result<Resolver<'a>, String> {
        let tun = cfg.dataplane == DataplaneMode::Tun;
        let up_name = cfg.uplink.interface.as_str();
        let out_if = if tun { ifaces.by_role(|r| *r == IfaceRole::RawIpip) } else { ifaces.by_name(up_name) };
        let Some(out_if) = out_if else {
            return Err(format!("the data plane has no interface for the uplink {up_name}"));
        };
        Ok(Resolver { cfg, tun, out_if, subnet: cfg.uplink.address.trunc() })
    }

    /// The underlay next hop toward an address: itself on the uplink's subnet, else the
    /// on-link gateway of the most specific route outside the pools that covers it.
    fn underlay_hop(&self, gw: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.subnet.contains(&gw) {
            return Some(gw);
        }
        let cfg = self.cfg;
        cfg.static_routes()
            .filter(|r| r.prefix.contains(&gw) && cfg.pools.iter().all(|p| !p.cidr.contains(&r.prefix)))
            .filter_map(|r| match r.action {
                StaticAction::Via(h) if self.subnet.contains(&h) => Some((r.prefix.prefix_len(), h)),
                _ => None,
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, h)| h)
    }

    /// `None` where the gateway cannot be reached.
    fn via(&self, prefix: &Ipv4Net, gw: Ipv4Addr) -> Option<Via> {
        let (tunnel, mode) = self.cfg.encap_for(prefix);
        let in_pool = self.cfg.pools.iter().any(|p| p.cidr.contains(prefix));
        let on_link = self.subnet.contains(&gw);
        let encap = match mode {
            IpipMode::Always => true,
            IpipMode::CrossSubnet => !on_link,
            IpipMode::Never => false,
        };
        let hop = self.underlay_hop(gw)?;
        let (tun, iface) = (self.tun, self.out_if);
        let nh = match (encap, tunnel) {
            (true, Encap::Ipip) if tun => NextHop::Ipip { iface, gateway: gw, remote: gw },
            (true, Encap::Ipip) => NextHop::Ipip { iface, gateway: hop, remote: gw },
            (true, Encap::Vxlan) if tun => NextHop::Vxlan { iface, gateway: gw, remote: gw },
            (true, Encap::Vxlan) => NextHop::Vxlan { iface, gateway: hop, remote: gw },
            (false, _) if tun => NextHop::Host,
            (false, _) => NextHop::Direct { iface, gateway: hop },
        };
        Some(Via { nh, tunnel, mode, encap, hop, in_pool, on_link })
    }

    /// The FIB's next hop for a route learned over BGP, as [`build_fib`] would give it
    /// (`None`: its next hop cannot be reached, and it is left out).
    pub fn learned(&self, prefix: &Ipv4Net, gw: Ipv4Addr) -> Option<NextHop> {
        self.via(prefix, gw).map(|v| v.nh)
    }

    /// Whether a learned route for `prefix` puts nothing in the kernel: in afpacket mode,
    /// routes outside the pools are the router's alone (see [`build_fib`]).
    pub fn learned_is_router_only(&self, prefix: &Ipv4Net) -> bool {
        !self.tun && !self.cfg.pools.iter().any(|p| p.cidr.contains(prefix))
    }
}

/// The base of the FIB: every route but the learned router-only ones (see
/// [`Resolver::learned_is_router_only`]), that is the node's own routes and the learned
/// ones the kernel gets too, by prefix (a later row wins, as in the FIB); and the kernel
/// routes. It costs the cluster's routes, not a full table a peer may send.
pub fn base_routes(
    cfg: &NodeConfig,
    ifaces: &Interfaces,
    learned: &[(Ipv4Net, Ipv4Addr)],
) -> Result<(std::collections::HashMap<Ipv4Net, NextHop>, Vec<KernelRoute>), String> {
    let resolver = Resolver::new(cfg, ifaces)?;
    let inner: Vec<(Ipv4Net, Ipv4Addr)> =
        learned.iter().filter(|(p, _)| !resolver.learned_is_router_only(p)).copied().collect();
    let t = build_fib(cfg, ifaces, &inner)?;
    Ok((t.fib.into_iter().map(|r| (r.prefix.trunc(), r.next_hop)).collect(), t.kernel))
}

/// Brings the FIB from base `old` to base `new` (see [`base_routes`]), leaving the learned
/// router-only routes as they are: a prefix that has one that can be reached keeps it, as in
/// a full build, where learned rows come last. `learned_at` gives the learned route for a
/// prefix (asked only for those whose base changed). Returns how many prefixes changed in
/// the FIB.
pub fn apply_base(
    writer: &mut forwarding::fib::FibWriter,
    resolver: &Resolver<'_>,
    old: &HashMap<Ipv4Net, NextHop>,
    new: &HashMap<Ipv4Net, NextHop>,
    learned_at: impl Fn(Ipv4Net) -> Option<Ipv4Addr>,
) -> usize {
    let learned_wins = |p: &Ipv4Net| {
        resolver.learned_is_router_only(p) && learned_at(*p).is_some_and(|gw| resolver.learned(p, gw).is_some())
    };
    apply_base_family(writer, old, new, learned_wins)
}

/// [`apply_base`] for either family: `learned_wins` says where a learned router-only route
/// holds the prefix.
fn apply_base_family<N: Copy + Ord + std::hash::Hash, H: Copy + Eq>(
    writer: &mut impl FibFamily<N, H>,
    old: &HashMap<N, H>,
    new: &HashMap<N, H>,
    learned_wins: impl Fn(&N) -> bool,
) -> usize {
    let gone = old.iter().filter(|(p, nh)| new.get(p) != Some(nh)).map(|(p, _)| *p);
    let came = new.iter().filter(|(p, nh)| old.get(p) != Some(nh)).map(|(p, _)| *p);
    let mut touched: Vec<N> = gone.chain(came).collect();
    touched.sort_unstable();
    touched.dedup();
    let mut changed = 0;
    for p in touched.into_iter().filter(|p| !learned_wins(p)) {
        let want = new.get(&p).copied();
        if want != writer.route(p) {
            changed += 1;
            writer.set_route(p, want);
        }
    }
    changed
}

/// What an incremental update of the FIB did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Prefixes whose FIB entry changed.
    pub changed: usize,
    /// Learned routes left out: their next hop cannot be reached.
    pub unreachable: usize,
}

/// Sets the FIB entry of each prefix in `learned` (IPv4, router-only: see
/// [`Resolver::learned_is_router_only`]; each with the next hop BGP has for it now, or none)
/// to what a full [`build_fib`] would give it: the learned route where its next hop can be
/// reached, else the node's own route for the prefix from `config` (a later row wins in the
/// full table, and learned rows come last), else none. Each prefix once.
pub fn apply_learned(
    writer: &mut forwarding::fib::FibWriter,
    resolver: &Resolver<'_>,
    config: &HashMap<Ipv4Net, NextHop>,
    learned: &[(Ipv4Net, Option<Ipv4Addr>)],
) -> Applied {
    apply_learned_family(writer, |p, gw| resolver.learned(p, gw), config, learned)
}

/// [`apply_learned`] for either family: `resolve` gives the FIB's next hop of a learned
/// route (none where its next hop cannot be reached).
fn apply_learned_family<N: Copy + Eq + std::hash::Hash, G: Copy, H: Copy + Eq>(
    writer: &mut impl FibFamily<N, H>,
    resolve: impl Fn(&N, G) -> Option<H>,
    config: &HashMap<N, H>,
    learned: &[(N, Option<G>)],
) -> Applied {
    let mut a = Applied::default();
    for &(p, learned) in learned {
        let from_bgp = learned.and_then(|gw| resolve(&p, gw));
        a.unreachable += usize::from(learned.is_some() && from_bgp.is_none());
        let want = from_bgp.or_else(|| config.get(&p).copied());
        if want != writer.route(p) {
            a.changed += 1;
            writer.set_route(p, want);
        }
    }
    a
}

/// How learned IPv6 routes enter the FIB, the same way for the whole table ([`table6`])
/// and for one at a time ([`apply_learned6`]).
#[derive(Debug)]
pub struct Resolver6<'a> {
    v6: &'a nodeapi::config::Ipv6Config,
    tun: bool,
    uplink: IfaceId,
}

impl<'a> Resolver6<'a> {
    /// None without IPv6, or (afpacket) without the uplink in the data plane: no IPv6 FIB.
    pub fn new(cfg: &'a NodeConfig, ifaces: &Interfaces) -> Option<Resolver6<'a>> {
        let v6 = cfg.ipv6.as_ref()?;
        let tun = cfg.dataplane == DataplaneMode::Tun;
        // In tun mode the data plane has no uplink of its own: the table is for display and
        // for the kernel routes.
        let uplink = match ifaces.by_name(&cfg.uplink.interface) {
            Some(i) => i,
            None if tun => IfaceId(0),
            None => return None,
        };
        Some(Resolver6 { v6, tun, uplink })
    }

    /// The gateway of a learned route via `nh`: itself on the uplink's prefix, else the
    /// underlay router (IPv6 is never tunnelled); none for our own address, or off the
    /// prefix without an IPv6 gateway.
    pub fn gateway(&self, nh: Ipv6Addr) -> Option<Ipv6Addr> {
        if nh == self.v6.address.addr() {
            return None;
        }
        if self.v6.address.contains(&nh) {
            Some(nh)
        } else {
            self.v6.gateway
        }
    }

    /// The FIB's next hop for a learned route via `nh`, as [`table6`] gives it.
    pub fn learned(&self, nh: Ipv6Addr) -> Option<NextHop6> {
        self.gateway(nh).map(|gateway| NextHop6::Direct { iface: self.uplink, gateway })
    }

    /// Whether a learned route for `prefix` puts nothing in the kernel: in afpacket mode,
    /// routes outside the IPv6 pools are the router's alone, as for IPv4. A full IPv6 table
    /// from a peer then costs the FIB its changes one by one and the kernel nothing.
    pub fn router_only(&self, prefix: &Ipv6Net) -> bool {
        !self.tun && !self.v6.pools.iter().any(|p| p.contains(prefix))
    }
}

/// The IPv6 FIB's base, as [`base_routes`] for IPv4: every route of [`table6`] but the
/// learned router-only ones, by prefix; and the kernel routes.
pub fn base_routes6(
    cfg: &NodeConfig,
    ifaces: &Interfaces,
    learned: &[(Ipv6Net, Ipv6Addr)],
) -> (HashMap<Ipv6Net, NextHop6>, Vec<KernelRoute>) {
    let inner: Vec<(Ipv6Net, Ipv6Addr)> = match Resolver6::new(cfg, ifaces) {
        Some(r) => learned.iter().filter(|(p, _)| !r.router_only(p)).copied().collect(),
        None => Vec::new(),
    };
    let t = table6(cfg, ifaces, &inner, false);
    (t.fib.into_iter().map(|r| (r.prefix.trunc(), r.next_hop)).collect(), t.kernel)
}

/// [`apply_base`] for IPv6.
pub fn apply_base6(
    writer: &mut forwarding::fib::FibWriter,
    resolver: Option<&Resolver6<'_>>,
    old: &HashMap<Ipv6Net, NextHop6>,
    new: &HashMap<Ipv6Net, NextHop6>,
    learned_at: impl Fn(Ipv6Net) -> Option<Ipv6Addr>,
) -> usize {
    let learned_wins = |p: &Ipv6Net| {
        resolver.is_some_and(|r| r.router_only(p) && learned_at(*p).is_some_and(|nh| r.learned(nh).is_some()))
    };
    apply_base_family(writer, old, new, learned_wins)
}

/// [`apply_learned`] for IPv6 (router-only routes: see [`Resolver6::router_only`]).
pub fn apply_learned6(
    writer: &mut forwarding::fib::FibWriter,
    resolver: &Resolver6<'_>,
    config: &HashMap<Ipv6Net, NextHop6>,
    learned: &[(Ipv6Net, Option<Ipv6Addr>)],
) -> Applied {
    apply_learned_family(writer, |_, nh| resolver.learned(nh), config, learned)
}

fn build_inner(
    cfg: &NodeConfig,
    ifaces: &Interfaces,
    learned: &[(Ipv4Net, Ipv4Addr)],
    with_entries: bool,
) -> Result<Table, String> {
    let resolver = Resolver::new(cfg, ifaces)?;
    let (tun, out_if) = (resolver.tun, resolver.out_if);
    let up_name = cfg.uplink.interface.as_str();
    let subnet = resolver.subnet;
    let tun_if = ifaces.by_role(|r| *r == IfaceRole::Tun);
    let tun_dev = cfg.tunnel_device();
    let mut t = Table { with_entries, ..Default::default() };
    let local = RouteSource::Local;
    let host = Ipv4Net::new(cfg.uplink.address.addr(), 32).map_err(|e| e.to_string())?;
    t.push(Row {
        prefix: host,
        nh: NextHop::Host,
        gateway: None,
        iface: Some(up_name),
        kind: "local",
        encap: "none",
        why: &String::new,
        source: local,
        kernel: true,
    });
    let connected = if tun { NextHop::Host } else { NextHop::Local { iface: out_if } };
    t.push(Row {
        prefix: subnet,
        nh: connected,
        gateway: None,
        iface: Some(up_name),
        kind: "unicast",
        encap: "none",
        why: &|| "the uplink's subnet".into(),
        source: local,
        kernel: tun,
    });
    for b in &cfg.blocks {
        // Unused addresses of our own block go nowhere instead of bouncing to a default route.
        // In tun mode the kernel holds the blackhole and we hand our block's packets back to it.
        let nh = match (tun, tun_if) {
            (true, Some(i)) => NextHop::Local { iface: i },
            _ => NextHop::Blackhole,
        };
        t.push(Row {
            prefix: *b,
            nh,
            gateway: None,
            iface: None,
            kind: "blackhole",
            encap: "none",
            why: &|| "this node's own block".into(),
            source: local,
            kernel: tun,
        });
        if tun {
            t.kernel.push(KernelRoute::Blackhole { prefix: (*b).into() });
        }
    }
    for p in &cfg.pods {
        let net = Ipv4Net::new(p.address, 32).map_err(|e| e.to_string())?;
        let nh = match ifaces.by_name(&p.interface) {
            Some(i) => NextHop::Local { iface: i },
            // tun: the kernel forwards to pods.
            None if tun => NextHop::Host,
            // afpacket: a pod whose interface is missing is down, and has no route.
            None => continue,
        };
        t.push(Row {
            prefix: net,
            nh,
            gateway: None,
            iface: Some(&p.interface),
            kind: "unicast",
            encap: "none",
            why: &|| format!("pod {}", p.name),
            source: local,
            kernel: tun,
        });
        // The kernel's route to the pod (its own traffic to pods; in tun mode all of theirs).
        // The lab or the CNI plugin makes one with the veth; this one puts it back when
        // the kernel took it away (a link flap takes every route through the link).
        t.kernel.push(KernelRoute::Dev { prefix: net.into(), dev: p.interface.clone() });
    }
    let statics = cfg.static_routes().map(|r| (r.prefix, r.action, RouteSource::Static));
    let masq: Vec<Ipv4Net> = cfg.pools.iter().filter(|p| p.nat_outgoing).map(|p| p.cidr).collect();
    let masquerade = masq_note(&masq, cfg.pools.len());
    let bgp = learned.iter().map(|(p, nh)| (*p, StaticAction::Via(*nh), RouteSource::Bgp));
    for (prefix, action, src) in statics.chain(bgp) {
        let r = StaticRoute { prefix, action };
        let gw = match r.action {
            StaticAction::Via(gw) => gw,
            StaticAction::Blackhole | StaticAction::Unreachable => {
                let (nh, kind) = if r.action == StaticAction::Blackhole {
                    (NextHop::Blackhole, "blackhole")
                } else {
                    (NextHop::Unreachable, "unreachable")
                };
                t.push(Row {
                    prefix: r.prefix,
                    nh,
                    gateway: None,
                    iface: None,
                    kind,
                    encap: "none",
                    why: &String::new,
                    source: src,
                    kernel: false,
                });
                continue;
            }
        };
        let Some(Via { nh, tunnel, mode, encap, hop, in_pool, on_link }) = resolver.via(&r.prefix, gw) else {
            if src == RouteSource::Bgp {
                tracing::warn!(prefix = %r.prefix, next_hop = %gw, "learned route's next hop is unreachable; not installed");
                continue;
            }
            return Err(format!(
                "next hop {gw} of route {} is not on the uplink subnet {subnet} and no route to it exists; \
                 add a route for it (like the underlay gateway)",
                r.prefix
            ));
        };
        let mode_name = match tunnel {
            Encap::Ipip => "ipipMode",
            Encap::Vxlan => "vxlanMode",
        };
        if encap {
            let why = move || match mode {
                IpipMode::Always => format!("{mode_name} Always"),
                _ => format!("{gw} is outside {subnet} ({mode_name} CrossSubnet)"),
            };
            let dev = if tun { tun_dev } else { up_name };
            t.push(Row {
                prefix: r.prefix,
                nh,
                gateway: Some(gw),
                iface: Some(dev),
                kind: "unicast",
                encap: tunnel.name(),
                why: &why,
                source: src,
                kernel: false,
            });
            // afpacket: the node's own traffic to these blocks goes into tunl0, where the
            // router wraps it (without tunl0, the kernel has no way there).
            if tun || (tun_if.is_some() && (in_pool || src != RouteSource::Bgp)) {
                t.kernel.push(KernelRoute::Dev { prefix: r.prefix.into(), dev: tun_dev.into() });
            }
        } else {
            let why = || match (in_pool, on_link) {
                (false, _) if !masquerade.is_empty() => {
                    format!("outside the IP pools: never tunnelled, and {masquerade}; {gw} is the next hop")
                }
                (false, _) => format!("outside the IP pools: never tunnelled; {gw} is the next hop"),
                (true, true) if mode == IpipMode::Never => format!("{gw} is inside {subnet} ({mode_name} Never)"),
                (true, true) => format!("{gw} is inside {subnet}: direct"),
                (true, false) => {
                    format!("{mode_name} Never: sent unencapsulated via {hop}, whose router must know the route")
                }
            };
            t.push(Row {
                prefix: r.prefix,
                nh,
                gateway: Some(gw),
                iface: Some(up_name),
                kind: "unicast",
                encap: "none",
                why: &why,
                source: src,
                kernel: tun,
            });
            // afpacket: the kernel needs routes only for the node's own traffic to pods and to
            // what the config names; a full Internet table from a peer stays ours alone (a
            // million `ip route` calls would stall the control thread for minutes).
            if tun || in_pool || src != RouteSource::Bgp {
                t.kernel.push(KernelRoute::Via { prefix: r.prefix.into(), gateway: hop.into(), dev: up_name.into() });
            }
        }
    }
    // Sorted by prefix (stable: a later route for the same prefix stays later and wins).
    let order = |p: &Ipv4Net| (p.network(), p.prefix_len());
    if with_entries {
        let mut rows: Vec<(RouteEntry, Route)> = std::mem::take(&mut t.entries).into_iter().zip(t.fib).collect();
        rows.sort_by_key(|(_, r)| order(&r.prefix));
        (t.entries, t.fib) = rows.into_iter().unzip();
    } else {
        t.fib.sort_by_key(|r| order(&r.prefix));
    }
    Ok(t)
}

/// The `route -n`-like table, then why each tunnelled route is tunnelled.
pub fn render(entries: &[RouteEntry]) -> String {
    // IPv6 rows are wider: the columns grow to fit them.
    let w = entries.iter().map(|e| e.prefix.to_string().len()).max().unwrap_or(0).max(20);
    let g = entries.iter().filter_map(|e| e.next_hop).map(|g| g.to_string().len()).max().unwrap_or(0).max(17);
    let mut s = format!(
        "{:<w$} {:<g$} {:<6} {:<16} {:<7} {:<12} {}\n",
        "Destination", "Gateway", "Flags", "Iface", "Source", "Type", "Encap"
    );
    for e in entries {
        s.push_str(&format!(
            "{:<w$} {:<g$} {:<6} {:<16} {:<7} {:<12} {}\n",
            e.prefix.to_string(),
            e.next_hop.map_or(if e.prefix.addr().is_ipv4() { "0.0.0.0" } else { "::" }.to_string(), |g| g.to_string()),
            e.flags,
            e.interface.as_deref().unwrap_or("-"),
            match e.source {
                RouteSource::Local => "local",
                RouteSource::Static => "static",
                RouteSource::Bgp => "bgp",
            },
            e.kind,
            e.encap
        ));
    }
    let notes: Vec<&RouteEntry> =
        entries.iter().filter(|e| e.source != RouteSource::Local && !e.why.is_empty()).collect();
    if !notes.is_empty() {
        s.push('\n');
        for e in notes {
            s.push_str(&format!("{:<w$} {}: {}\n", e.prefix.to_string(), e.encap, e.why));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use forwarding::Interface;
    use std::path::Path;

    #[test]
    fn the_masquerade_note_names_the_pools_when_only_some_masquerade() {
        let pools: Vec<Ipv4Net> = vec!["10.1.0.0/16".parse().expect("net")];
        assert_eq!(masq_note::<Ipv4Net>(&[], 2), "");
        assert_eq!(masq_note(&pools, 1), "pods leave masqueraded as the node (natOutgoing)");
        assert_eq!(masq_note(&pools, 2), "pods of 10.1.0.0/16 leave masqueraded as the node (natOutgoing)");
    }

    const CFG: &str = r#"
name = "node-a"
admin_socket = "/tmp/x.sock"
blocks = ["10.244.1.0/26"]
[uplink]
interface = "eth0"
address = "192.168.100.100/24"
[[pools]]
cidr = "10.244.0.0/16"
ipip_mode = "CrossSubnet"
[[pods]]
name = "pod-a1"
interface = "calia1"
address = "10.244.1.1"
[[routes]]
prefix = "10.244.2.0/26"
via = "192.168.100.101"
[[routes]]
prefix = "10.244.3.0/26"
via = "192.168.200.101"
[[routes]]
prefix = "192.168.200.0/24"
via = "192.168.100.1"
"#;

    fn cfg(mode: &str, dataplane: &str) -> NodeConfig {
        let text = CFG
            .replace("CrossSubnet", mode)
            .replace("name = \"node-a\"", &format!("name = \"node-a\"\ndataplane = \"{dataplane}\""));
        NodeConfig::parse(Path::new("n.toml"), &text).expect("config")
    }

    fn afpacket_ifaces(cfg: &NodeConfig) -> Interfaces {
        let mac = encap::MacAddr([2, 0, 0, 0, 0, 1]);
        Interfaces::new(vec![
            Interface {
                name: "eth0".into(),
                ifindex: 2,
                mac,
                mtu: 1500,
                role: IfaceRole::Uplink { addr: cfg.uplink.address },
            },
            Interface {
                name: "calia1".into(),
                ifindex: 3,
                mac,
                mtu: 1500,
                role: IfaceRole::Pod { addr: Ipv4Addr::new(10, 244, 1, 1), addr6: None },
            },
        ])
    }

    fn row<'a>(t: &'a Table, p: &str) -> (&'a RouteEntry, NextHop) {
        let i = t.entries.iter().position(|e| e.prefix.to_string() == p).expect(p);
        (&t.entries[i], t.fib[i].next_hop)
    }

    const UP: IfaceId = IfaceId(0);
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    /// The kernel gets a route to each pod the node serves (tun: each pod, the kernel forwards
    /// for them), IPv6 too; a pod that is down (afpacket: its interface missing) gets none.
    #[test]
    fn the_kernel_gets_a_route_to_every_pod_that_is_up() {
        let pod = |t: &[KernelRoute], p: &str| {
            t.contains(&KernelRoute::Dev { prefix: p.parse().expect("net"), dev: "calia1".into() })
        };
        let c = cfg6("afpacket");
        let ifaces = afpacket_ifaces(&c);
        assert!(pod(&build(&c, &ifaces, &[]).expect("table").kernel, "10.244.1.1/32"));
        assert!(pod(&table6(&c, &ifaces, &[], false).kernel, "fd00:10:244::1/128"));
        let down = Interfaces::new(vec![ifaces.get(UP).expect("uplink").clone()]);
        assert!(!pod(&build(&c, &down, &[]).expect("table").kernel, "10.244.1.1/32"));
        assert!(!pod(&table6(&c, &down, &[], false).kernel, "fd00:10:244::1/128"));
        let c = cfg6("tun");
        let tun = with_raw_socket(&Interfaces::new(Vec::new()));
        assert!(pod(&build(&c, &tun, &[]).expect("table").kernel, "10.244.1.1/32"));
    }

    #[test]
    fn an_incremental_update_gives_the_fib_a_full_build_gives() {
        let c = cfg("CrossSubnet", "afpacket");
        let ifaces = afpacket_ifaces(&c);
        let net = |s: &str| -> Ipv4Net { s.parse().expect("net") };
        let before = [
            (net("198.51.100.0/24"), ip("192.168.100.101")),
            (net("203.0.113.0/24"), ip("192.168.200.101")),
            // Learned over a static route for the same prefix: the learned one wins.
            (net("192.168.200.0/24"), ip("192.168.100.5")),
            // A next hop nothing leads to: left out.
            (net("192.0.2.0/24"), ip("10.9.9.9")),
        ];
        let after = [
            (net("203.0.113.0/24"), ip("192.168.100.7")),
            (net("192.0.2.0/24"), ip("10.9.9.9")),
            (net("100.64.0.0/10"), ip("192.168.100.9")),
        ];
        let full = |learned: &[(Ipv4Net, Ipv4Addr)]| {
            forwarding::fib::FibWriter::with_routes(&build_fib(&c, &ifaces, learned).expect("table").fib)
        };
        let mut w = full(&before);
        let config: std::collections::HashMap<Ipv4Net, NextHop> =
            build_fib(&c, &ifaces, &[]).expect("table").fib.into_iter().map(|r| (r.prefix, r.next_hop)).collect();
        let resolver = Resolver::new(&c, &ifaces).expect("resolver");
        let mut touched: Vec<Ipv4Net> = before.iter().chain(&after).map(|(p, _)| *p).collect();
        touched.sort_unstable();
        touched.dedup();
        assert!(touched.iter().all(|p| resolver.learned_is_router_only(p)));
        let learned_at = |p: Ipv4Net| after.iter().find(|(q, _)| *q == p).map(|(_, gw)| *gw);
        let changes: Vec<(Ipv4Net, Option<Ipv4Addr>)> = touched.iter().map(|p| (*p, learned_at(*p))).collect();
        let a = apply_learned(&mut w, &resolver, &config, &changes);
        // Withdrawn, moved, fallen back to the static route, added; the unreachable one is
        // still out.
        assert_eq!(a, Applied { changed: 4, unreachable: 1 });
        let want = full(&after);
        assert_eq!(w.len(), want.len());
        for p in touched.iter().chain(config.keys()) {
            assert_eq!(w.get(*p), want.get(*p), "{p}");
        }
        assert_eq!(w.get(net("192.168.200.0/24")), Some(NextHop::Direct { iface: UP, gateway: ip("192.168.100.1") }));
        // Inside a pool, or in tun mode, the kernel needs a route too: not for this path.
        assert!(!resolver.learned_is_router_only(&net("10.244.9.0/26")));
        let t = cfg("CrossSubnet", "tun");
        let tun_ifaces = with_raw_socket(&ifaces);
        assert!(!Resolver::new(&t, &tun_ifaces).expect("resolver").learned_is_router_only(&net("198.51.100.0/24")));
    }

    #[test]
    fn rebuilding_the_base_leaves_the_learned_router_only_routes_as_a_full_build_would() {
        let before_cfg = cfg("CrossSubnet", "afpacket");
        // The underlay gateway moves: every route through it changes, in the base only.
        let text = CFG.replace("via = \"192.168.100.1\"", "via = \"192.168.100.2\"");
        let after_cfg = NodeConfig::parse(Path::new("n.toml"), &text).expect("config");
        let ifaces = afpacket_ifaces(&before_cfg);
        let net = |s: &str| -> Ipv4Net { s.parse().expect("net") };
        let outer = [(net("198.51.100.0/24"), ip("192.168.100.101")), (net("192.168.200.0/24"), ip("192.168.100.5"))];
        let mut before = outer.to_vec();
        before.push((net("10.244.5.0/26"), ip("192.168.100.102")));
        let mut after = outer.to_vec();
        after.push((net("10.244.6.0/26"), ip("192.168.200.101")));
        let full = |c: &NodeConfig, learned: &[(Ipv4Net, Ipv4Addr)]| {
            forwarding::fib::FibWriter::with_routes(&build_fib(c, &ifaces, learned).expect("table").fib)
        };
        let mut w = full(&before_cfg, &before);
        let (old, _) = base_routes(&before_cfg, &ifaces, &before).expect("base");
        let (new, kernel) = base_routes(&after_cfg, &ifaces, &after).expect("base");
        assert!(!old.contains_key(&net("198.51.100.0/24")) && new.contains_key(&net("10.244.6.0/26")));
        let resolver = Resolver::new(&after_cfg, &ifaces).expect("resolver");
        let learned_at = |p: Ipv4Net| after.iter().find(|(q, _)| *q == p).map(|(_, gw)| *gw);
        let changed = apply_base(&mut w, &resolver, &old, &new, learned_at);
        // 10.244.5.0/26 gone, 10.244.6.0/26 come, 10.244.3.0/26 through the new gateway; the
        // static 192.168.200.0/24 changed too, but the learned route for it still wins.
        assert_eq!(changed, 3);
        let want = full(&after_cfg, &after);
        assert_eq!(w.len(), want.len());
        for p in old.keys().chain(new.keys()).chain(outer.iter().map(|(p, _)| p)) {
            assert_eq!(w.get(*p), want.get(*p), "{p}");
        }
        assert_eq!(kernel, build_fib(&after_cfg, &ifaces, &after).expect("table").kernel);
        assert_eq!(apply_base(&mut w, &resolver, &new, &new, learned_at), 0);
    }

    /// `ifaces` and the raw IPIP socket a tun-mode data plane has.
    fn with_raw_socket(ifaces: &Interfaces) -> Interfaces {
        let mut list: Vec<Interface> = ifaces.iter().map(|(_, f)| f.clone()).collect();
        let raw = Interface {
            name: "raw".into(),
            ifindex: 0,
            mac: encap::MacAddr::ZERO,
            mtu: 1500,
            role: IfaceRole::RawIpip,
        };
        list.push(raw);
        Interfaces::new(list)
    }

    /// The dual-stack test node: pool fd00:10:244::/48, a pod's /128, a static route.
    fn cfg6(dataplane: &str) -> NodeConfig {
        let text = CFG.replace("address = \"10.244.1.1\"\n", "address = \"10.244.1.1\"\naddress6 = \"fd00:10:244::1\"\n")
            + "\n[ipv6]\naddress = \"fd00:192:168:100::100/64\"\ngateway = \"fd00:192:168:100::1\"\n\
               routes = [\"fd00:192:168:200::/64\"]\npools = [\"fd00:10:244::/48\"]\nblocks = [\"fd00:10:244::/122\"]\n";
        let text = text.replace("name = \"node-a\"", &format!("name = \"node-a\"\ndataplane = \"{dataplane}\""));
        NodeConfig::parse(Path::new("n.toml"), &text).expect("config")
    }

    /// IPv6 as IPv4: learned routes outside the pools go into the FIB one by one over the
    /// base and come out the same as a full build; a base rebuild leaves them alone; only
    /// the base's learned routes reach the kernel.
    #[test]
    fn ipv6_changes_one_by_one_and_base_rebuilds_match_a_full_build() {
        let c = cfg6("afpacket");
        let ifaces = afpacket_ifaces(&c);
        let net = |s: &str| -> Ipv6Net { s.parse().expect("net") };
        let ip6 = |s: &str| -> Ipv6Addr { s.parse().expect("ip") };
        let (near, far) = (ip6("fd00:192:168:100::101"), ip6("fd00:192:168:200::101"));
        let before = vec![
            (net("2001:db8:1::/48"), near),
            (net("2001:db8:2::/48"), far),
            (net("fd00:192:168:200::/64"), near),
            (net("fd00:10:244::40/122"), near),
        ];
        let after = vec![
            (net("2001:db8:2::/48"), near),
            (net("2001:db8:3::/48"), far),
            (net("2001:db8:4::/48"), ip6("fd00:192:168:100::100")),
            (net("fd00:10:244::80/122"), far),
        ];
        let full = |learned: &[(Ipv6Net, Ipv6Addr)]| {
            let mut w = forwarding::fib::FibWriter::default();
            w.sync6(&table6(&c, &ifaces, learned, false).fib);
            w
        };
        let r = Resolver6::new(&c, &ifaces).expect("resolver");
        assert!(!r.router_only(&net("fd00:10:244::80/122")) && r.router_only(&net("2001:db8:1::/48")));
        let mut w = full(&before);
        let (old, _) = base_routes6(&c, &ifaces, &before);
        let (new, kernel) = base_routes6(&c, &ifaces, &after);
        let learned_at = |p: Ipv6Net| after.iter().find(|(q, _)| *q == p).map(|(_, nh)| *nh);
        // The pool routes through the base, the rest one by one.
        assert_eq!(apply_base6(&mut w, Some(&r), &old, &new, learned_at), 2);
        let mut touched: Vec<Ipv6Net> =
            before.iter().chain(&after).map(|(p, _)| *p).filter(|p| r.router_only(p)).collect();
        touched.sort_unstable();
        touched.dedup();
        let changes: Vec<(Ipv6Net, Option<Ipv6Addr>)> = touched.iter().map(|p| (*p, learned_at(*p))).collect();
        let a = apply_learned6(&mut w, &r, &new, &changes);
        // 1::/48 withdrawn, 2::/48 moved, 3::/48 added, the static /64 back from the learned
        // route to its own; 4::/48 via our own address stays out.
        assert_eq!(a, Applied { changed: 4, unreachable: 1 });
        let want = full(&after);
        assert_eq!(w.len6(), want.len6());
        for p in touched.iter().chain(new.keys()).chain(old.keys()) {
            assert_eq!(w.get6(*p), want.get6(*p), "{p}");
        }
        assert_eq!(
            w.get6(net("2001:db8:3::/48")),
            Some(NextHop6::Direct { iface: UP, gateway: ip6("fd00:192:168:100::1") })
        );
        // The kernel gets the pool route, not the router-only ones.
        let via: Vec<String> = kernel
            .iter()
            .filter_map(|k| match k {
                KernelRoute::Via { prefix, .. } => Some(prefix.to_string()),
                _ => None,
            })
            .collect();
        assert!(
            via.contains(&"fd00:10:244::80/122".to_string()) && !via.iter().any(|p| p.starts_with("2001:db8")),
            "{via:?}"
        );
        assert_eq!(apply_base6(&mut w, Some(&r), &new, &new, learned_at), 0);
        // In tun mode the kernel forwards: every learned route is the base's.
        let t = cfg6("tun");
        let tun_ifaces = with_raw_socket(&ifaces);
        assert!(!Resolver6::new(&t, &tun_ifaces).expect("resolver").router_only(&net("2001:db8:1::/48")));
    }

    #[test]
    fn cross_subnet_tunnels_only_off_link_next_hops() {
        let c = cfg("CrossSubnet", "afpacket");
        let t = build(&c, &afpacket_ifaces(&c), &[]).expect("table");
        let (b, nh) = row(&t, "10.244.2.0/26");
        assert_eq!((b.encap.as_str(), b.flags.as_str()), ("none", "UG"));
        assert_eq!(nh, NextHop::Direct { iface: UP, gateway: ip("192.168.100.101") });
        let (c3, nh) = row(&t, "10.244.3.0/26");
        assert_eq!(c3.encap, "ipip");
        assert!(c3.why.contains("outside 192.168.100.0/24"), "{}", c3.why);
        assert_eq!(nh, NextHop::Ipip { iface: UP, gateway: ip("192.168.100.1"), remote: ip("192.168.200.101") });
        assert_eq!(row(&t, "10.244.1.0/26").0.flags, "U!");
        assert_eq!(row(&t, "10.244.1.1/32").0.flags, "UH");
        let json = serde_json::to_value(c3).expect("json");
        assert_eq!(json["encap"], "ipip");
        assert!(render(&t.entries).contains("10.244.3.0/26        ipip: 192.168.200.101 is outside"));
    }

    #[test]
    fn always_tunnels_everything_in_the_pool() {
        let c = cfg("Always", "afpacket");
        let t = build(&c, &afpacket_ifaces(&c), &[]).expect("table");
        assert_eq!(
            row(&t, "10.244.2.0/26").1,
            NextHop::Ipip { iface: UP, gateway: ip("192.168.100.101"), remote: ip("192.168.100.101") }
        );
        // Routes outside the pool are never tunnelled.
        assert_eq!(row(&t, "192.168.200.0/24").0.encap, "none");
    }

    #[test]
    fn never_sends_off_link_blocks_to_the_underlay_unwrapped() {
        let c = cfg("Never", "afpacket");
        let t = build(&c, &afpacket_ifaces(&c), &[]).expect("table");
        assert_eq!(row(&t, "10.244.3.0/26").1, NextHop::Direct { iface: UP, gateway: ip("192.168.100.1") });
    }

    #[test]
    fn unreachable_next_hop_is_an_error() {
        let text = CFG.replace("prefix = \"192.168.200.0/24\"", "prefix = \"192.168.201.0/24\"");
        let c = NodeConfig::parse(Path::new("n.toml"), &text).expect("config");
        let e = build(&c, &afpacket_ifaces(&c), &[]).expect_err("unreachable");
        assert!(e.contains("192.168.200.101") && e.contains("no route"), "{e}");
    }

    #[test]
    fn afpacket_routes_the_nodes_own_traffic_for_tunnelled_blocks_into_tunl0() {
        let c = cfg("CrossSubnet", "afpacket");
        let dev = |t: &Table, p: &str| {
            t.kernel.contains(&KernelRoute::Dev { prefix: p.parse().expect("net"), dev: "tunl0".into() })
        };
        // Without a tunl0 the kernel has no route there at all.
        let t = build(&c, &afpacket_ifaces(&c), &[]).expect("table");
        assert!(!dev(&t, "10.244.3.0/26"));
        let mut list: Vec<Interface> = afpacket_ifaces(&c).iter().map(|(_, f)| f.clone()).collect();
        list.push(Interface {
            name: "tunl0".into(),
            ifindex: 0,
            mac: encap::MacAddr::ZERO,
            mtu: 1480,
            role: IfaceRole::Tun,
        });
        let t = build(&c, &Interfaces::new(list), &[]).expect("table");
        assert!(dev(&t, "10.244.3.0/26"), "{:?}", t.kernel);
        // The router still forwards the pods' packets itself, out of the uplink.
        let (e, nh) = row(&t, "10.244.3.0/26");
        assert_eq!(e.interface.as_deref(), Some("eth0"));
        assert_eq!(nh, NextHop::Ipip { iface: UP, gateway: ip("192.168.100.1"), remote: ip("192.168.200.101") });
        // Blocks on the node's own subnet keep their route through the uplink.
        assert!(!dev(&t, "10.244.2.0/26"));
        assert!(t.kernel.contains(&KernelRoute::Via {
            prefix: "10.244.2.0/26".parse().expect("net"),
            gateway: ip("192.168.100.101").into(),
            dev: "eth0".into()
        }));
    }

    #[test]
    fn tun_mode_routes_tunnelled_blocks_into_tunl0() {
        let c = cfg("CrossSubnet", "tun");
        let ifaces = Interfaces::new(vec![
            Interface {
                name: "raw-ip".into(),
                ifindex: 0,
                mac: encap::MacAddr::ZERO,
                mtu: 1500,
                role: IfaceRole::RawIpip,
            },
            Interface { name: "tunl0".into(), ifindex: 0, mac: encap::MacAddr::ZERO, mtu: 1480, role: IfaceRole::Tun },
        ])
        .with_node_addr(c.uplink.address.addr());
        let t = build(&c, &ifaces, &[]).expect("table");
        let (e, nh) = row(&t, "10.244.3.0/26");
        assert_eq!(e.interface.as_deref(), Some("tunl0"));
        assert_eq!(
            nh,
            NextHop::Ipip { iface: IfaceId(0), gateway: ip("192.168.200.101"), remote: ip("192.168.200.101") }
        );
        assert_eq!(row(&t, "10.244.2.0/26").0.forwarded_by, "kernel");
        assert!(t
            .kernel
            .contains(&KernelRoute::Dev { prefix: "10.244.3.0/26".parse().expect("net"), dev: "tunl0".into() }));
        assert!(t.kernel.contains(&KernelRoute::Via {
            prefix: "10.244.2.0/26".parse().expect("net"),
            gateway: ip("192.168.100.101").into(),
            dev: "eth0".into()
        }));
        assert!(t.kernel.contains(&KernelRoute::Blackhole { prefix: "10.244.1.0/26".parse().expect("net") }));
    }

    /// Pods get the uplink's MTU less the pools' tunnel; the tunnel device always has room
    /// for IPIP, which the node's own traffic may take.
    #[test]
    fn a_pods_mtu_leaves_room_for_the_pools_tunnel_only() {
        let ipip = NodeConfig::parse(Path::new("n.toml"), CFG).expect("config");
        assert_eq!((ipip.pod_mtu(1500), ipip.pod_mtu(9000)), (1480, 8980));
        let plain = NodeConfig::parse(
            Path::new("n.toml"),
            &CFG.replace("ipip_mode = \"CrossSubnet\"", "ipip_mode = \"Never\""),
        )
        .expect("config");
        assert_eq!((plain.pod_mtu(1500), plain.tunnel_device_mtu(1500)), (1500, 1480));
    }

    #[test]
    fn tun_mode_routes_vxlan_blocks_into_vxlan_calico_and_wraps_for_the_raw_socket() {
        let c = NodeConfig::parse(
            Path::new("n.toml"),
            &CFG.replace("ipip_mode = \"CrossSubnet\"", "ipip_mode = \"Never\"\nvxlan_mode = \"CrossSubnet\"")
                .replace("name = \"node-a\"", "name = \"node-a\"\ndataplane = \"tun\""),
        )
        .expect("config");
        assert_eq!((c.tunnel_device(), c.tunnel_device_mtu(1500)), ("vxlan.calico", 1450));
        assert_eq!(c.pod_mtu(1500), 1450);
        let z = encap::MacAddr::ZERO;
        let ifaces = Interfaces::new(vec![
            Interface { name: "raw-ip".into(), ifindex: 0, mac: z, mtu: 1500, role: IfaceRole::RawIpip },
            Interface { name: "vxlan-udp".into(), ifindex: 0, mac: z, mtu: 1500, role: IfaceRole::VxlanUdp },
            Interface { name: "vxlan.calico".into(), ifindex: 0, mac: z, mtu: 1450, role: IfaceRole::Tun },
        ])
        .with_node_addr(c.uplink.address.addr());
        let t = build(&c, &ifaces, &[]).expect("table");
        let (e, nh) = row(&t, "10.244.3.0/26");
        assert_eq!((e.interface.as_deref(), e.encap.as_str()), (Some("vxlan.calico"), "vxlan"));
        let node_c = ip("192.168.200.101");
        assert_eq!(nh, NextHop::Vxlan { iface: IfaceId(0), gateway: node_c, remote: node_c });
        let dev = KernelRoute::Dev { prefix: "10.244.3.0/26".parse().expect("net"), dev: "vxlan.calico".into() };
        assert!(t.kernel.contains(&dev), "{:?}", t.kernel);
    }
}
