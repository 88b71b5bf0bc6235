//! `router node`: one node's daemon. Reads its config, finds its interfaces, builds the FIB,
//! starts the data plane, then runs BGP on the control thread until SIGTERM (or a planned
//! restart).
//!
//! Here: the node's state, its start and stop, the control loop (BGP, FIB publication,
//! supervision of the data plane). `interfaces` finds what the data plane reads, `filter`
//! keeps the transit filter, `kernel` the node's kernel routes, `front` reads admin and
//! metrics requests on a thread of its own, `serve` computes their answers, `restart` keeps
//! the routes across a planned restart.

use crate::routes;
use crate::speaker::{Speaker, SpeakerConfig};
use anyhow::{bail, Context as _};
use bgp::speaker::LocChanges;
use forwarding::dataplane::{Dataplane, DataplaneConfig};
use forwarding::fib::{FibWriter, NextHop6, Tunnels};
use forwarding::{FibHandle, IfaceRole, Interface, Interfaces, NextHop};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use mio::{Events, Poll, Token};
use nodeapi::admin::RouteEntry;
use nodeapi::admin::{self, Request};
use nodeapi::config::{DataplaneMode, NodeConfig};
use nodeapi::ipcmd;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod filter;
mod front;
mod interfaces;
mod kernel;
mod pods;
mod restart;
mod serve;
mod watch;

use filter::TransitFilter;
use interfaces::check_kernel_forwarding;
pub use interfaces::discover;
use serve::{answer, metrics_body};

/// The running node: its config, data plane, route table and what it installed in the kernel.
struct Node {
    cfg: NodeConfig,
    dp: Dataplane,
    fib: FibHandle,
    /// The FIB's routes, changed one by one.
    writer: FibWriter,
    /// The IPv4 FIB's base ([`routes::base_routes`]): the node's own routes and the learned
    /// ones the kernel gets too, as last built. The learned router-only routes (a full
    /// table from a peer) go into the FIB one by one over it, and a prefix falls back to its
    /// base route when BGP withdraws them. What BGP taught is read from the speaker, or
    /// from `saved`.
    base: HashMap<Ipv4Net, NextHop>,
    /// The IPv6 FIB's base, alike ([`routes::base_routes6`]).
    base6: HashMap<Ipv6Net, NextHop6>,
    /// Our routes in the kernel and the transit filter, changed by a thread of their own.
    kernel: kernel::KernelWork,
    started: Instant,
    capture: Option<crate::capture::Capture>,
    /// (path, packets) of the last finished capture.
    last_capture: Option<(std::path::PathBuf, u64)>,
    /// tunl0's tx_dropped when last read (tun mode): packets the kernel could not queue to us.
    tun_dropped: Option<u64>,
    /// When `tun_dropped` was last read.
    tun_read_at: Option<Instant>,
    /// The running trace: id, hops so far, when it stops by itself.
    trace: Option<(u32, Vec<nodeapi::admin::Hop>, Instant)>,
    /// After a planned restart: the routes saved before it, forwarded on until BGP is back.
    saved: Option<restart::Saved>,
    /// A planned restart was asked for: save, close quietly, exit.
    restart_requested: bool,
    /// Why the tunnel device the pools need is missing, while it is (logged once per
    /// change; `router stats` shows it).
    tunnel_missing: Option<String>,
    /// Why the uplink does not hold the config's addresses, while it does not (they went
    /// after the start: readdressed, or IPv6 taken away with an MTU below 1280).
    uplink_missing: Option<String>,
    /// Names of the pods added while running (not from the config).
    dynamic: HashSet<String>,
    /// BGP peers the datastore no longer lists, removed when the new sessions are up (or at
    /// the instant given).
    removals: Vec<watch::Removal>,
    /// The log level the datastore last set (BGPConfiguration logSeverityScreen).
    log_level: &'static str,
    /// The datastore's resources as last listed, and when the secrets they name were last
    /// read: a password changed in its file changes the session without an etcd event.
    resources: Vec<datastore::resources::Resource>,
    secrets_read: Instant,
    /// The pools' `natOutgoing` the node follows now.
    nat: forwarding::nat::NatPolicy,
    /// BGP could not start with the datastore's cluster: why, and when to try again.
    bgp_failed: Option<(String, Instant)>,
    /// The blocks of the node's config: always its own, whatever etcd says.
    configured_blocks: (Vec<Ipv4Net>, Vec<Ipv6Net>),
    /// The blocks etcd's IPAM last gave the node (with the configured ones, `cfg`'s).
    affine: (Vec<Ipv4Net>, Vec<Ipv6Net>),
    /// Whether etcd answers, as the datastore thread last found; `None` without one.
    datastore: Option<Arc<Mutex<admin::DatastoreStatus>>>,
    /// The etcd client of a node on a datastore, made once at start.
    etcd: Option<datastore::etcd::Etcd>,
    /// What of the datastore the node does not use: resources that did not read (the last
    /// listing's), and what the view of them left out.
    listing_notes: Vec<String>,
    datastore_notes: Vec<String>,
    /// BGP peers that could not be configured (why, each), and when to try them again.
    peers_failed: Option<(Vec<String>, Instant)>,
}

/// How often a speaker that could not start is tried again.
const BGP_RETRY: Duration = Duration::from_secs(5);

fn tunnels(cfg: &NodeConfig, cluster_hops: &HashSet<Ipv4Addr>) -> Tunnels {
    // IPIP is accepted from the configured nodes and from the next hops of routes that cluster
    // nodes announced: the nodes we route pod blocks to send us their pods' traffic. A next
    // hop an external peer announced is not a node, and does not become a tunnel source.
    let mut peers: HashSet<Ipv4Addr> = cfg.ipip_peers.iter().copied().collect();
    peers.extend(cluster_hops.iter().copied());
    let mut local_pods: Vec<Ipv4Addr> = cfg.pods.iter().map(|p| p.address).collect();
    local_pods.sort_unstable();
    let mut local_pods6: Vec<Ipv6Addr> = cfg.pods.iter().filter_map(|p| p.address6).collect();
    local_pods6.sort_unstable();
    Tunnels {
        ttl: cfg.ipip_ttl,
        peers,
        allowed: cfg.ipip_allowed_sources.clone(),
        local_pods,
        local_pods6,
        nat: nat_policy(cfg),
    }
}

/// Calico's `natOutgoing` of the pools.
fn nat_policy(cfg: &NodeConfig) -> forwarding::nat::NatPolicy {
    forwarding::nat::NatPolicy {
        masquerade: cfg.pools.iter().filter(|p| p.nat_outgoing).map(|p| p.cidr).collect(),
        pools: cfg.pools.iter().map(|p| p.cidr).collect(),
        masquerade6: cfg.ipv6.as_ref().map(|v| v.nat_outgoing.clone()).unwrap_or_default(),
        pools6: cfg.ipv6.as_ref().map(|v| v.pools.clone()).unwrap_or_default(),
    }
}

impl Node {
    /// Where the pools' `natOutgoing` changed: the workers follow the FIB's copy; in tun
    /// mode the kernel forwards, and masquerades by rules the kernel thread installs.
    fn follow_nat(&mut self) {
        let p = nat_policy(&self.cfg);
        if p == self.nat {
            return;
        }
        if self.cfg.dataplane == DataplaneMode::Afpacket && p.any() {
            if !self.cfg.transit_filter {
                tracing::warn!(
                    "natOutgoing without the transit filter: the node's kernel resets masqueraded TCP connections"
                );
            }
            // The node's own connections must not take the masquerade ports, whose answers the
            // router keeps from the kernel.
            let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
            let top = range.split_whitespace().nth(1).and_then(|t| t.parse::<u16>().ok());
            if top.is_some_and(|t| t >= *forwarding::nat::PORTS.start()) {
                tracing::warn!(
                    range = range.trim(),
                    "natOutgoing: the node's ephemeral ports reach into the masquerade ports 61000-65535; \
                     set net.ipv4.ip_local_port_range below 61000, or the node's own connections from those ports fail"
                );
            }
        }
        self.kernel.masquerade(p.clone());
        self.nat = p;
    }

    /// Recomputes the route table with what BGP learned and publishes the new FIB; in tun mode
    /// (and for the node's own traffic) brings the kernel routes in line.
    fn rebuild(
        &mut self,
        learned: Vec<(Ipv4Net, Ipv4Addr)>,
        learned6: Vec<(Ipv6Net, Ipv6Addr)>,
        cluster_hops: &HashSet<Ipv4Addr>,
    ) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let table = routes::build_fib(&self.cfg, self.dp.interfaces(), &learned).map_err(anyhow::Error::msg)?;
        self.base = routes::base_routes(&self.cfg, self.dp.interfaces(), &learned).map_err(anyhow::Error::msg)?.0;
        let (base6, kernel6) = routes::base_routes6(&self.cfg, self.dp.interfaces(), &learned6);
        self.writer.sync6(&routes::table6(&self.cfg, self.dp.interfaces(), &learned6, false).fib);
        self.base6 = base6;
        let mut kernel = table.kernel.clone();
        kernel.extend(kernel6);
        let built = t0.elapsed();
        // Only what changed goes to the FIB writer, so a snapshot rebuilds only the /8s touched.
        let (added, removed) = self.writer.sync(&table.fib);
        let diffed = t0.elapsed();
        self.writer.set_tunnels(tunnels(&self.cfg, cluster_hops));
        self.fib.publish(self.writer.publish());
        self.follow_nat();
        let published = t0.elapsed();
        self.kernel.want(kernel);
        if added + removed > 10_000 {
            // Big changes leave big freed tables behind (the rows, the diff, the old list).
            netsys::trim_heap();
        }
        tracing::info!(
            routes = self.writer.len(),
            routes6 = self.writer.len6(),
            learned = learned.len(),
            added,
            removed,
            ms_table = built.as_millis() as u64,
            ms_diff = (diffed - built).as_millis() as u64,
            ms_publish = (published - diffed).as_millis() as u64,
            "FIB updated"
        );
        Ok(())
    }

    /// Rebuilds the FIB's base only (the node's own routes and the learned ones the kernel
    /// gets too) and the kernel routes, leaving the learned router-only routes as they are:
    /// what a pod coming or going, or a pool route changing, needs. With a full table from a
    /// peer this reads only the pool routes of the RIB, not a million rows. Valid while the
    /// pools are those of the last full [`Node::rebuild`].
    fn rebuild_base(&mut self, sp: Option<&Speaker>) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let ifaces = self.dp.interfaces();
        let resolver = routes::Resolver::new(&self.cfg, ifaces).map_err(anyhow::Error::msg)?;
        let inner = |p: &Ipv4Net| !resolver.learned_is_router_only(p);
        let hops = sp.map(|s| s.cluster_next_hops()).unwrap_or_default();
        let src = Learned::of(self.saved.as_ref(), sp);
        let resolver6 = routes::Resolver6::new(&self.cfg, ifaces);
        let inner6 = |p: &Ipv6Net| !resolver6.as_ref().is_some_and(|r| r.router_only(p));
        let (learned, learned6) = (src.v4_where(inner), src.v6_where(inner6));
        let (base, mut kernel) = routes::base_routes(&self.cfg, ifaces, &learned).map_err(anyhow::Error::msg)?;
        let mut changed = routes::apply_base(&mut self.writer, &resolver, &self.base, &base, |p| src.v4_at(p));
        self.base = base;
        let (base6, kernel6) = routes::base_routes6(&self.cfg, ifaces, &learned6);
        changed += routes::apply_base6(&mut self.writer, resolver6.as_ref(), &self.base6, &base6, |p| src.v6_at(p));
        self.base6 = base6;
        kernel.extend(kernel6);
        self.writer.set_tunnels(tunnels(&self.cfg, &hops));
        self.fib.publish(self.writer.publish());
        self.follow_nat();
        self.kernel.want(kernel);
        tracing::info!(
            routes = self.writer.len(),
            changed,
            ms = t0.elapsed().as_millis() as u64,
            "FIB updated: the node's own and the cluster's routes"
        );
        Ok(())
    }

    /// Brings the FIB in line with BGP's changes: routes that go to the router alone
    /// (outside the pools, afpacket mode) one by one, each over its base route. A full
    /// table from a peer then costs its changes, not a million rows per UPDATE. True where
    /// some change also needs the base rebuilt ([`Node::rebuild_base`]: a pool route).
    fn apply_learned(&mut self, sp: &Speaker, mut v4: Changes4, mut v6: Changes6) -> anyhow::Result<bool> {
        let t0 = Instant::now();
        let ifaces = self.dp.interfaces();
        let resolver = routes::Resolver::new(&self.cfg, ifaces).map_err(anyhow::Error::msg)?;
        let resolver6 = routes::Resolver6::new(&self.cfg, ifaces);
        let before = v4.len() + v6.len();
        v4.retain(|(p, _)| resolver.learned_is_router_only(p));
        match &resolver6 {
            Some(r) => v6.retain(|(p, _)| r.router_only(p)),
            None => v6.clear(),
        }
        let base_too = v4.len() + v6.len() < before;
        if v4.is_empty() && v6.is_empty() {
            return Ok(base_too);
        }
        // In prefix order (the FIB writer's chunks are then filled in order), and the last
        // word on each prefix.
        let (v4, v6) = (forwarding::fib::last_wins(v4), forwarding::fib::last_wins(v6));
        let mut applied = routes::apply_learned(&mut self.writer, &resolver, &self.base, &v4);
        if let Some(r) = &resolver6 {
            let a6 = routes::apply_learned6(&mut self.writer, r, &self.base6, &v6);
            applied.changed += a6.changed;
            applied.unreachable += a6.unreachable;
        }
        let changed = applied.changed;
        if applied.unreachable > 0 {
            tracing::warn!(routes = applied.unreachable, "learned routes whose next hop is unreachable; not installed");
        }
        self.writer.set_tunnels(tunnels(&self.cfg, &sp.cluster_next_hops()));
        self.fib.publish(self.writer.publish());
        if changed > 10_000 {
            netsys::trim_heap();
        }
        tracing::info!(
            routes = self.writer.len(),
            routes6 = self.writer.len6(),
            prefixes = v4.len() + v6.len(),
            changed,
            ms = t0.elapsed().as_millis() as u64,
            "FIB updated from BGP's changes"
        );
        Ok(base_too)
    }

    /// What BGP taught, as the FIB was built from it.
    fn learned<'a>(&'a self, sp: Option<&'a Speaker>) -> Learned<'a> {
        Learned::of(self.saved.as_ref(), sp)
    }

    /// The route table for display (`router routes`).
    fn entries(&self, sp: Option<&Speaker>) -> Vec<RouteEntry> {
        let src = self.learned(sp);
        let (learned, learned6) = (src.v4_where(|_| true), src.v6());
        let mut e = routes::build(&self.cfg, self.dp.interfaces(), &learned).map(|t| t.entries).unwrap_or_default();
        e.extend(routes::table6(&self.cfg, self.dp.interfaces(), &learned6, true).entries);
        e
    }

    /// The route `dst` takes, as a display row (like `ip route get`). Only the learned routes
    /// that cover `dst` get rows built: one RIB lookup per prefix length, not a million rows.
    fn route_for(&self, dst: IpAddr, sp: Option<&Speaker>) -> Option<RouteEntry> {
        let dst = match dst {
            IpAddr::V4(d) => d,
            IpAddr::V6(d) => {
                let covering = self.learned(sp).v6_covering(d);
                let rows = routes::table6(&self.cfg, self.dp.interfaces(), &covering, true).entries;
                return crate::trace::lookup(&rows, dst).cloned();
            }
        };
        let covering = self.learned(sp).v4_covering(dst);
        let t = routes::build(&self.cfg, self.dp.interfaces(), &covering).ok()?;
        crate::trace::lookup(&t.entries, dst.into()).cloned()
    }
}

type Changes4 = Vec<(Ipv4Net, Option<Ipv4Addr>)>;
type Changes6 = Vec<(Ipv6Net, Option<Ipv6Addr>)>;

/// Where the routes BGP taught are read: the routes saved before a planned restart while it
/// is in progress, else the speaker's Loc-RIB (lists of (prefix, next hop)).
enum Learned<'a> {
    Saved(&'a restart::Saved),
    Speaker(&'a Speaker),
    Nothing,
}

impl<'a> Learned<'a> {
    fn of(saved: Option<&'a restart::Saved>, sp: Option<&'a Speaker>) -> Learned<'a> {
        match (saved, sp) {
            (Some(s), _) => Learned::Saved(s),
            (None, Some(sp)) => Learned::Speaker(sp),
            (None, None) => Learned::Nothing,
        }
    }

    /// The IPv4 routes whose prefix `keep` takes (from the speaker, the others cost no lookup).
    fn v4_where(&self, keep: impl Fn(&Ipv4Net) -> bool) -> Vec<(Ipv4Net, Ipv4Addr)> {
        match self {
            Learned::Saved(s) => s.learned.iter().filter(|(p, _)| keep(p)).copied().collect(),
            Learned::Speaker(sp) => sp.learned_where(keep),
            Learned::Nothing => Vec::new(),
        }
    }

    fn v6(&self) -> Vec<(Ipv6Net, Ipv6Addr)> {
        self.v6_where(|_| true)
    }

    fn v6_where(&self, keep: impl Fn(&Ipv6Net) -> bool) -> Vec<(Ipv6Net, Ipv6Addr)> {
        match self {
            Learned::Saved(s) => s.learned6.iter().filter(|(p, _)| keep(p)).copied().collect(),
            Learned::Speaker(sp) => sp.learned6_where(keep),
            Learned::Nothing => Vec::new(),
        }
    }

    fn v6_at(&self, prefix: Ipv6Net) -> Option<Ipv6Addr> {
        match self {
            Learned::Saved(s) => s.v6_at(prefix),
            Learned::Speaker(sp) => sp.learned6_at(prefix),
            Learned::Nothing => None,
        }
    }

    /// The route for exactly `prefix`.
    fn v4_at(&self, prefix: Ipv4Net) -> Option<Ipv4Addr> {
        match self {
            Learned::Saved(s) => s.v4_at(prefix),
            Learned::Speaker(sp) => sp.learned_at(prefix),
            Learned::Nothing => None,
        }
    }

    /// The routes covering `dst` (from the speaker, one lookup per prefix length).
    fn v4_covering(&self, dst: Ipv4Addr) -> Vec<(Ipv4Net, Ipv4Addr)> {
        match self {
            Learned::Speaker(sp) => sp.learned_covering(dst),
            _ => self.v4_where(|p| p.contains(&dst)),
        }
    }

    fn v6_covering(&self, dst: Ipv6Addr) -> Vec<(Ipv6Net, Ipv6Addr)> {
        match self {
            Learned::Speaker(sp) => sp.learned6_covering(dst),
            _ => self.v6().into_iter().filter(|(p, _)| p.contains(&dst)).collect(),
        }
    }
}

fn speaker_config(cfg: &NodeConfig, restarted: bool) -> Option<SpeakerConfig> {
    let b = cfg.bgp.as_ref()?;
    let local_addr = cfg.uplink.address.addr();
    let core = bgp::speaker::CoreConfig {
        local_as: b.as_number,
        router_id: b.router_id.unwrap_or(local_addr),
        local_addr,
        local_addr6: cfg.ipv6.as_ref().map(|v| v.address.addr()),
        hold_time: b.hold_time,
        connect_retry: Duration::from_secs(u64::from(b.connect_retry_secs)),
        cluster_id: b.route_reflector_cluster_id,
        graceful_restart: (b.graceful_restart_secs > 0).then_some(b.graceful_restart_secs),
        max_stale: Duration::from_secs(u64::from(b.max_stale_secs)),
        restarted: restarted && b.graceful_restart_secs > 0,
        peers: b.peers.iter().map(crate::speaker::peer_config).collect(),
        originate: originated(cfg),
        policy: cluster_policy(cfg),
        filters: b.filters.clone(),
    };
    Some(SpeakerConfig { core, port: b.port, peers: b.peers.clone(), listen_all: b.listen_all })
}

/// What the default import and export rules need: the pools (the cluster's routes), the
/// nodes (`ipip_peers`: the addresses pool routes may point at), the node's address and
/// subnet (nothing from outside may land inside them), its static routes (nothing from
/// outside may replace them), and the communities to attach.
fn cluster_policy(cfg: &NodeConfig) -> bgp::policy::ClusterPolicy {
    let v4 = IpNet::V4;
    let v6 = &cfg.ipv6;
    bgp::policy::ClusterPolicy {
        pools: cfg
            .pools
            .iter()
            .map(|p| v4(p.cidr))
            .chain(v6.iter().flat_map(|v| v.pools.iter().map(|p| IpNet::V6(*p))))
            .collect(),
        nodes: std::iter::once(cfg.uplink.address.addr())
            .chain(cfg.ipip_peers.iter().copied())
            .map(IpAddr::V4)
            .chain(
                v6.iter()
                    .flat_map(|v| std::iter::once(v.address.addr()).chain(v.nodes.iter().copied()).map(IpAddr::V6)),
            )
            .collect(),
        protected: [v4(Ipv4Net::from(cfg.uplink.address.addr())), v4(cfg.uplink.address.trunc())]
            .into_iter()
            .chain(v6.iter().flat_map(|v| [IpNet::V6(Ipv6Net::from(v.address.addr())), IpNet::V6(v.address.trunc())]))
            .collect(),
        static_routes: cfg.static_routes().map(|r| v4(r.prefix)).collect(),
        advertise: cfg
            .bgp
            .iter()
            .flat_map(|b| &b.prefix_advertisements)
            .map(|a| (v4(a.cidr), a.communities.clone()))
            .collect(),
        no_export: cfg
            .pools
            .iter()
            .filter(|p| p.disable_bgp_export)
            .map(|p| v4(p.cidr))
            .chain(v6.iter().flat_map(|v| v.disable_bgp_export.iter().map(|p| IpNet::V6(*p))))
            .collect(),
    }
}

/// What the node announces: its blocks of both families, and a /32 (/128) for each of its
/// pods whose address lies outside them (borrowed from another node's block, whose owner
/// announces the whole block, and the /32 is longer; or from a block the IPAM claimed for
/// it since), as Calico does; and the cluster's service ranges.
fn originated(cfg: &NodeConfig) -> Vec<IpNet> {
    let blocks6 = cfg.ipv6.iter().flat_map(|v| v.blocks.iter().copied().map(IpNet::V6));
    let borrowed = cfg.pods.iter().flat_map(|p| borrowed_routes(cfg, p));
    let services = cfg.bgp.iter().flat_map(|b| b.service_ips.iter().copied());
    cfg.blocks.iter().copied().map(IpNet::V4).chain(blocks6).chain(borrowed).chain(services).collect()
}

/// The /32 and /128 the node announces for `pod`: its addresses outside the node's blocks.
fn borrowed_routes(cfg: &NodeConfig, pod: &nodeapi::config::PodConfig) -> Vec<IpNet> {
    let v4 = (!cfg.blocks.iter().any(|b| b.contains(&pod.address))).then(|| IpNet::V4(Ipv4Net::from(pod.address)));
    let v6 = pod.address6.zip(cfg.ipv6.as_ref()).filter(|(a, v)| !v.blocks.iter().any(|b| b.contains(a)));
    v4.into_iter().chain(v6.map(|(a, _)| IpNet::V6(Ipv6Net::from(a)))).collect()
}

/// The admin and datastore threads' wake-up (a job or the resources are queued); BGP uses `speaker::LISTEN` (1) and 16 up.
const JOBS: Token = Token(0);
/// Link events: a pod's interface may have come or gone.
const LINKS: Token = Token(2);
/// SIGTERM or SIGINT arrived (the stop flag is set).
const SIGNALS: Token = Token(3);

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    run_with(config_path, None, Default::default(), None)
}

/// One node per network namespace. A second one would forward every frame again, fight
/// over the transit filter and the tunnel device, and flush the first one's kernel routes
/// when it stops. The claim is an abstract Unix socket, which the kernel keeps per network
/// namespace and releases when its holder exits however it exits. A node that is stopping
/// (a restart) is given a moment to let go.
fn claim_namespace() -> anyhow::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(b"router-node")?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
                "another router node already runs in this network namespace: one node per namespace; stop it first"
            ),
            Err(e) => return Err(e).context("claiming this network namespace for the node"),
        }
    }
}

/// [`run`], with the config's etcd endpoints replaced (`Some(vec![])`: no datastore), and
/// its secrets directory.
pub fn run_with(
    config_path: &Path,
    etcd_endpoints: Option<Vec<String>>,
    etcd_tls: nodeapi::config::EtcdTls,
    secrets_dir: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let mut cfg = NodeConfig::load(config_path)?;
    if let Some(e) = etcd_endpoints {
        cfg.etcd_endpoints = e;
    }
    cfg.etcd_tls = etcd_tls.or(&cfg.etcd_tls);
    // One client for the whole run, made here: TLS files that do not read, or TLS without
    // https://, stop the node at start, not in the datastore thread where they would only
    // be logged.
    let etcd = match cfg.etcd_endpoints.is_empty() {
        true => None,
        false => Some(datastore::etcd::Etcd::with_tls(&cfg.etcd_endpoints, &cfg.etcd_tls)?),
    };
    if let Some(d) = secrets_dir {
        anyhow::ensure!(d.is_absolute(), "--secrets-dir {} must be an absolute path", d.display());
        cfg.secrets_dir = Some(d);
    }
    // Pods a previous run was given (containers that may still run) join the configured ones.
    let mut dynamic = HashSet::new();
    for spec in pods::load_dynamic(&cfg) {
        if !cfg.pods.iter().any(|p| p.name == spec.name || p.address == spec.address || p.interface == spec.interface) {
            dynamic.insert(spec.name.clone());
            cfg.pods.push(spec.into());
        }
    }
    check_kernel_forwarding(cfg.dataplane, cfg.ipv6.is_some())?;
    if let Some(pools) = etcd.as_ref().and_then(|e| watch::pools_at_start(&cfg, e)) {
        cfg.pools = pools;
    }
    interfaces::check_uplink(&cfg)?;
    let _claim = claim_namespace()?;
    let (ifaces, tunnel_missing) = discover(&cfg)?;
    let restart_time = Duration::from_secs(u64::from(cfg.bgp.as_ref().map_or(0, |b| b.graceful_restart_secs)));
    let saved = restart::take(&cfg, restart_time);
    if let Some(s) = &saved {
        tracing::info!(
            routes = s.learned.len(),
            routes6 = s.learned6.len(),
            "restarting gracefully: forwarding on the saved routes"
        );
    }
    let (learned, learned6, hops) = saved
        .as_ref()
        .map(|s| (s.learned.clone(), s.learned6.clone(), s.cluster_hops.iter().copied().collect()))
        .unwrap_or_default();
    let table =
        routes::build(&cfg, &ifaces, &learned).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let mut writer = FibWriter::with_routes(&table.fib);
    let base =
        routes::base_routes(&cfg, &ifaces, &learned).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?.0;
    writer.sync6(&routes::table6(&cfg, &ifaces, &learned6, false).fib);
    let (base6, kernel6) = routes::base_routes6(&cfg, &ifaces, &learned6);
    writer.set_tunnels(tunnels(&cfg, &hops));
    let fib = FibHandle::new(writer.publish());

    let stop = Arc::new(AtomicBool::new(false));
    // The flag says to stop; the pipe wakes the control loop at once to look at it (an idle
    // loop sleeps up to a second).
    let (signals, signal_tx) = std::os::unix::net::UnixStream::pair().context("a pipe for signals")?;
    signals.set_nonblocking(true)?;
    // SIGHUP too: a node started from a terminal that closes stops as cleanly as on SIGTERM
    // (its transit filter and kernel routes would otherwise stay behind).
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
        signal_hook::low_level::pipe::register(sig, signal_tx.try_clone()?).context("installing signal handlers")?;
    }
    let listener = admin::bind(&cfg.admin_socket)?;
    let dp_cfg = DataplaneConfig {
        workers: cfg.workers,
        pin: cfg.pin_workers,
        gro: cfg.gro,
        udp_gso: cfg.udp_gso,
        nice: cfg.worker_nice,
        fail_worker_after: fault_worker_exit(&cfg.name),
        refuse_udp_gso: fault_refuse_udp_gso(&cfg.name),
        neigh: test_neigh_reachable(&cfg.name)
            .map(|reachable| forwarding::neigh::NeighConfig { reachable, ..Default::default() })
            .unwrap_or_default(),
        ..Default::default()
    };
    let dp = Dataplane::start(ifaces, fib.clone(), dp_cfg).context("starting the data plane")?;
    // The filter goes on from the kernel thread: nothing depends on it, and a node that
    // waited for `tc` here would answer nobody meanwhile.
    let filter_on: Option<Vec<String>> = match cfg.dataplane {
        DataplaneMode::Afpacket if cfg.transit_filter => {
            Some(dp.interfaces().iter().filter(|(_, f)| f.role.is_ethernet()).map(|(_, f)| f.name.clone()).collect())
        }
        _ => None,
    };
    let kernel_work =
        match kernel::KernelWork::start(cfg.dataplane == DataplaneMode::Tun, cfg.ipv6.is_some(), filter_on) {
            Ok(k) => k,
            Err(e) => {
                dp.stop();
                return Err(e);
            }
        };
    let configured_blocks = (cfg.blocks.clone(), cfg.ipv6.iter().flat_map(|v| v.blocks.clone()).collect());
    let mut node = Node {
        affine: configured_blocks.clone(),
        configured_blocks,
        cfg,
        dp,
        fib,
        writer,
        base,
        base6,
        kernel: kernel_work,
        started: Instant::now(),
        capture: None,
        last_capture: None,
        trace: None,
        tun_dropped: None,
        tun_read_at: None,
        saved,
        restart_requested: false,
        // What discover() already said: the same reason is not said again at the first view.
        tunnel_missing,
        uplink_missing: None,
        dynamic,
        removals: Vec::new(),
        log_level: "info",
        resources: Vec::new(),
        secrets_read: Instant::now(),
        nat: Default::default(),
        bgp_failed: None,
        datastore: None,
        etcd,
        listing_notes: Vec::new(),
        datastore_notes: Vec::new(),
        peers_failed: None,
    };
    node.follow_nat();
    if let Some(tun) = node.dp.interfaces().by_role(|r| *r == IfaceRole::Tun) {
        let mtu = node.dp.interfaces().get(tun).map_or(1480, |f| f.mtu);
        let dev = node.cfg.tunnel_device();
        if let Err(e) = tunnel_device_up(dev, mtu) {
            node.dp.stop();
            return Err(e.context(format!("bringing {dev} up")));
        }
    }
    let mut kernel = table.kernel.clone();
    kernel.extend(kernel6);
    node.kernel.want(kernel);
    let result = control_loop(&mut node, listener, &stop, signals);
    tracing::info!(node = %node.cfg.name, "stopping");
    node.kernel.stop(node.restart_requested && result.is_ok());
    node.dp.stop();
    let _ = std::fs::remove_file(&node.cfg.admin_socket);
    result
}

/// Brings the tunnel device (`tunl0`, `vxlan.calico`) up with the tunnel's MTU. It carries
/// IPv4 only (IPv6 is never tunnelled), so IPv6 is off on it first: else the kernel sends its
/// router solicitations and MLD reports into it, for the router to read and throw away.
pub(super) fn tunnel_device_up(dev: &str, mtu: u16) -> anyhow::Result<()> {
    let v6 = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
    if std::path::Path::new(&v6).exists() {
        if let Err(e) = std::fs::write(&v6, "1") {
            // Only noise is at stake: the tunnel works either way.
            tracing::warn!(device = dev, error = %e, "could not turn IPv6 off on the tunnel device");
        }
    }
    // One qdisc for the device: on a multi-queue TUN (256 transmit queues) the default gives
    // each queue a pfifo_fast of three rings of txqueuelen slots, about 100 MB of kernel
    // memory per node at the length below. One alone carries as much (no qdisc lost up to
    // 10% more of a 1500-byte flood).
    if let Err(e) = ipcmd::run("tc", &["qdisc", "replace", "dev", dev, "root", "pfifo_fast"]) {
        tracing::warn!(device = dev, error = %e, "could not give the tunnel device one qdisc: it costs kernel memory");
    }
    // A longer ring than TUN's default 500 absorbs bursts while a worker is busy.
    ipcmd::ip(&["link", "set", dev, "up", "mtu", &mtu.to_string(), "txqueuelen", "10000"]).map(|_| ())
}

/// Fault injection for the supervision test: `ROUTER_FAULT_WORKER_EXIT=NODE:MS` makes the
/// first worker of node NODE stop with an error MS milliseconds after it started.
fn fault_worker_exit(node: &str) -> Option<Duration> {
    let d = node_millis("ROUTER_FAULT_WORKER_EXIT", node)?;
    tracing::warn!(ms = d.as_millis(), "ROUTER_FAULT_WORKER_EXIT: the first worker will stop on purpose");
    Some(d)
}

/// `ROUTER_TEST_NEIGH_REACHABLE=NODE:MS` (tests only): that node's neighbour entries last MS
/// milliseconds unconfirmed instead of a minute, so that a test sees them refreshed often.
fn test_neigh_reachable(node: &str) -> Option<Duration> {
    let d = node_millis("ROUTER_TEST_NEIGH_REACHABLE", node)?;
    tracing::warn!(ms = d.as_millis(), "ROUTER_TEST_NEIGH_REACHABLE: neighbour entries are refreshed this often");
    Some(d)
}

/// A test hook's `NODE:MS`, when `var` names this node.
fn node_millis(var: &str, node: &str) -> Option<Duration> {
    let v = std::env::var(var).ok()?;
    let (name, ms) = v.split_once(':')?;
    (name == node).then_some(Duration::from_millis(ms.parse().ok()?))
}

/// `ROUTER_FAULT_REFUSE_UDP_GSO=NODE` (tests only): that node's workers act as if the kernel
/// refused UDP GSO, to test the fallback to one frame per segment on a kernel that has it.
fn fault_refuse_udp_gso(node: &str) -> bool {
    let on = std::env::var("ROUTER_FAULT_REFUSE_UDP_GSO").is_ok_and(|v| v == node);
    if on {
        tracing::warn!("ROUTER_FAULT_REFUSE_UDP_GSO: UDP super-packets will be taken as refused");
    }
    on
}

/// When the FIB follows BGP, and how much of it. While routes pour in (a full table), an
/// update waits twice as long as the last one that read the whole table took; a small lab
/// updates at once, and following changes one by one costs only what changed.
struct FibSchedule {
    /// A full rebuild is due (it covers `dirty` too).
    full: bool,
    /// Routes BGP changed since the FIB last followed it.
    dirty: Changes4,
    dirty6: Changes6,
    last: Instant,
    cost: Duration,
}

impl FibSchedule {
    fn new() -> FibSchedule {
        FibSchedule { full: false, dirty: Vec::new(), dirty6: Vec::new(), last: Instant::now(), cost: Duration::ZERO }
    }

    fn waiting(&self) -> bool {
        self.full || !self.dirty.is_empty() || !self.dirty6.is_empty()
    }

    /// How long until the waiting update is due, if one waits.
    fn wait(&self) -> Option<Duration> {
        self.waiting().then(|| (self.cost * 2).saturating_sub(self.last.elapsed()))
    }

    fn note(&mut self, changes: LocChanges) {
        match changes {
            LocChanges::Nothing => {}
            LocChanges::Everything => self.full = true,
            LocChanges::Routes { v4, v6 } => {
                if !self.full {
                    self.dirty.extend(v4);
                    self.dirty6.extend(v6);
                }
                if self.dirty.len() + self.dirty6.len() > LocChanges::MAX_LISTED {
                    self.full = true;
                }
            }
        }
    }

    /// The FIB follows what changed, when due: the learned routes one by one, the base (the
    /// node's own and the cluster's routes, and the kernel's) where those touch it, or all
    /// of it, also when a smaller update failed.
    fn update_if_due(&mut self, node: &mut Node, sp: &Speaker) {
        if !self.waiting() || self.last.elapsed() < self.cost * 2 {
            return;
        }
        let t = Instant::now();
        let mut full = self.full;
        let mut base = false;
        let (dirty, dirty6) = (std::mem::take(&mut self.dirty), std::mem::take(&mut self.dirty6));
        if !full && (!dirty.is_empty() || !dirty6.is_empty()) {
            match node.apply_learned(sp, dirty, dirty6) {
                Ok(more) => base = more,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "updating the FIB failed; rebuilding it");
                    full = true;
                }
            }
        }
        if !full && base {
            if let Err(e) = node.rebuild_base(Some(sp)) {
                tracing::error!(error = %format!("{e:#}"), "updating the FIB failed; rebuilding it");
                full = true;
            }
        }
        if full {
            if let Err(e) = node.rebuild(sp.learned(), sp.learned6(), &sp.cluster_next_hops()) {
                tracing::error!(error = %e, "rebuilding the FIB failed");
            }
        }
        self.full = false;
        self.last = Instant::now();
        // A rebuild reads the whole table whatever changed, so the next one waits.
        self.cost = if full || base { t.elapsed() } else { Duration::ZERO };
    }
}

/// The control thread: admin socket, BGP sessions and their timers, FIB publication.
fn control_loop(
    node: &mut Node,
    listener: UnixListener,
    stop: &AtomicBool,
    signals: std::os::unix::net::UnixStream,
) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut mio::unix::SourceFd(&signals.as_raw_fd()), SIGNALS, mio::Interest::READABLE)?;
    let metrics = match node.cfg.metrics_address {
        Some(addr) => {
            let l = mio::net::TcpListener::bind(addr).with_context(|| format!("serving metrics on {addr}"))?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            Some(l)
        }
        None => None,
    };
    // One waker per poll (mio's rule): the admin thread and the datastore thread share it,
    // and the loop looks at both of their queues whenever it wakes.
    let wake = Arc::new(mio::Waker::new(poll.registry(), JOBS)?);
    let front = front::Front::spawn(listener, metrics, wake.clone()).context("starting the admin thread")?;
    // With a datastore the cluster follows etcd; the config's BGP is what runs until then.
    let watcher = match &node.etcd {
        None => None,
        Some(etcd) => Some(watch::watch(&node.cfg, etcd.clone(), wake.clone())?),
    };
    node.datastore = watcher.as_ref().map(|w| w.health.clone());
    let mut speaker = match speaker_config(&node.cfg, node.saved.is_some()) {
        Some(sc) => Some(Speaker::new(sc, poll.registry(), Instant::now()).context("starting BGP")?),
        None => None,
    };
    tracing::info!(
        node = %node.cfg.name,
        interfaces = node.dp.interfaces().len(),
        routes = node.writer.len(),
        workers = node.cfg.workers,
        bgp_peers = node.cfg.bgp.as_ref().map_or(0, |b| b.peers.len()),
        socket = %node.cfg.admin_socket.display(),
        "node up"
    );
    let mut events = Events::with_capacity(64);
    let mut fib = FibSchedule::new();
    let mut links_checked = Instant::now();
    // Pod interfaces are followed on link events, and looked at now and then anyway (an
    // overrun loses events; without netlink, polling is all there is).
    let links = match netsys::LinkEvents::open() {
        Ok(l) => {
            let fd = l.as_raw_fd();
            poll.registry().register(&mut mio::unix::SourceFd(&fd), LINKS, mio::Interest::READABLE)?;
            Some(l)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no link events: pod interfaces are looked for every second");
            None
        }
    };
    let link_check = if links.is_some() { pods::LINK_CHECK * 5 } else { pods::LINK_CHECK };
    let mut links_changed = false;
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) && !node.restart_requested {
        // Supervision: without a worker or the slow path the node would blackhole what BGP
        // keeps drawing to it. Stop: Cease to every peer withdraws our routes at once, and
        // the exit status says something went wrong.
        if let Some(name) = node.dp.dead_thread() {
            tracing::error!(thread = %name, "a data-plane thread died; withdrawing the node's routes and stopping");
            result = Err(anyhow::anyhow!("the data-plane thread {name} died (its error is in the log above)"));
            break;
        }
        let now = Instant::now();
        // Everything that needs the loop wakes it (sockets, jobs, links, signals); the timeout
        // only paces supervision and the node's periodic looks while it is idle.
        let mut timeout = forwarding::IDLE_WAIT;
        if let Some(t) = speaker.as_ref().and_then(|s| s.poll_timeout()) {
            timeout = timeout.min(t.saturating_duration_since(now));
        }
        if let Some(t) = fib.wait() {
            timeout = timeout.min(t);
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        for ev in events.iter() {
            if ev.token() == LINKS {
                links_changed |= links.as_ref().is_some_and(|l| l.drain());
            } else if ev.token() != JOBS {
                if let Some(sp) = speaker.as_mut() {
                    sp.handle(poll.registry(), ev.token(), now);
                }
            }
        }
        // What the admin thread read: answered from memory, the replies never block.
        while let Ok(job) = front.jobs.try_recv() {
            match job {
                front::Job::Admin(Request::PodAdd { pod }, reply) => {
                    let a = match node.pod_add(pod, speaker.as_mut()) {
                        Ok(()) => admin::answer(&()),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    let _ = reply.send(a);
                }
                front::Job::Admin(Request::PodDel { name }, reply) => {
                    let a = match node.pod_del(&name, speaker.as_mut()) {
                        Ok(_) => admin::answer(&()),
                        Err(e) => Err(format!("{e:#}")),
                    };
                    let _ = reply.send(a);
                }
                front::Job::Admin(req, reply) => {
                    let _ = reply.send(answer(req, node, speaker.as_ref()));
                    node.reap_capture();
                }
                front::Job::Metrics(reply) => {
                    let _ = reply.send(metrics_body(node, speaker.as_ref()));
                }
            }
        }
        if let Some(w) = &watcher {
            while let Ok(listed) = w.rx.try_recv() {
                tracing::debug!(resources = listed.resources.len(), "applying the datastore's view");
                node.affine = (listed.blocks, listed.blocks6);
                node.listing_notes = listed.notes;
                fib.full |= node.apply_view(listed.resources, &mut speaker, poll.registry());
            }
            fib.full |= node.reread_secrets(&mut speaker, poll.registry());
            node.finish_removals(speaker.as_mut(), poll.registry());
            fib.full |= node.retry_bgp(&mut speaker, poll.registry(), now);
            fib.full |= node.retry_peers(&mut speaker, poll.registry(), now);
        }
        if links_changed || links_checked.elapsed() >= link_check {
            if links_changed {
                node.kernel.resync();
            }
            links_checked = Instant::now();
            links_changed = false;
            node.follow_uplink();
            node.follow_uplink_addresses();
            node.follow_links(speaker.as_ref());
            node.kernel.filter_recheck();
        }
        node.reap_capture();
        node.collect_trace(speaker.as_ref());
        node.account_tun_drops();
        if let Some(sp) = speaker.as_mut() {
            sp.resume(poll.registry(), now);
            sp.tick(poll.registry(), now);
            fib.note(sp.take_changes());
            if node.saved.is_some() && !sp.deferring() {
                // BGP is back: the Loc-RIB takes over from the saved routes.
                tracing::info!("restart complete: every peer is back; the learned routes replace the saved ones");
                node.saved = None;
                fib.full = true;
            }
            if node.saved.is_none() {
                fib.update_if_due(node, sp);
            }
        }
    }
    if let Some(sp) = speaker.as_mut() {
        if node.restart_requested && result.is_ok() {
            let hops: Vec<Ipv4Addr> = sp.cluster_next_hops().into_iter().collect();
            let src = node.learned(Some(sp));
            let (learned, learned6) = (src.v4_where(|_| true), src.v6());
            match restart::save(&node.cfg, &learned, &learned6, &hops) {
                Ok(()) => {
                    tracing::info!(routes = learned.len(), "planned restart: routes saved, sessions closed quietly");
                    sp.close_for_restart(poll.registry());
                    return result;
                }
                Err(e) => {
                    tracing::error!(error = %e, "saving the restart state failed; stopping with Cease");
                    node.restart_requested = false;
                }
            }
        }
        // Cease to every peer: written at once, before the sockets close.
        sp.stop(poll.registry());
    }
    result
}
