//! `router node`: one node's daemon. Reads its config, finds its interfaces, builds the FIB,
//! starts the data plane, then serves the admin socket on the control thread until SIGTERM.

use crate::admin::{self, Request};
use crate::config::{DataplaneMode, IpipMode, NodeConfig};
use crate::ipcmd;
use crate::routes::{self, RouteEntry};
use crate::speaker::{PeerConfig, PeerKind, Speaker, SpeakerConfig};
use anyhow::{bail, Context as _};
use forwarding::dataplane::{Dataplane, DataplaneConfig};
use forwarding::fib::{FibWriter, Tunnels};
use forwarding::{FibHandle, IfaceRole, Interface, Interfaces};
use ipnet::Ipv4Net;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Finds the data plane's interfaces in this network namespace: the uplink, every pod
/// interface and, when a pool uses IPIP, `tunl0` for the node's own traffic into the tunnel
/// (afpacket); or the raw IPIP socket and `tunl0` (tun).
pub fn discover(cfg: &NodeConfig) -> anyhow::Result<Interfaces> {
    let mut list = Vec::new();
    let up = netsys::link_info(&cfg.uplink.interface)
        .with_context(|| format!("uplink interface {} (from the config)", cfg.uplink.interface))?;
    if cfg.dataplane == DataplaneMode::Tun {
        let zero = encap::MacAddr::ZERO;
        list.push(Interface { name: "raw-ipip".into(), ifindex: 0, mac: zero, mtu: up.mtu, role: IfaceRole::RawIpip });
        let mtu = up.mtu.saturating_sub(encap::ipip::OVERHEAD as u16);
        list.push(Interface { name: routes::TUN_NAME.into(), ifindex: 0, mac: zero, mtu, role: IfaceRole::Tun });
        return Ok(Interfaces::new(list).with_node_addr(cfg.uplink.address.addr()));
    }
    list.push(Interface {
        name: cfg.uplink.interface.clone(),
        ifindex: up.ifindex,
        mac: up.mac,
        mtu: up.mtu,
        role: IfaceRole::Uplink { addr: cfg.uplink.address },
    });
    for p in &cfg.pods {
        let l =
            netsys::link_info(&p.interface).with_context(|| format!("interface {} of pod {}", p.interface, p.name))?;
        list.push(Interface {
            name: p.interface.clone(),
            ifindex: l.ifindex,
            mac: l.mac,
            mtu: l.mtu,
            role: IfaceRole::Pod { addr: p.address },
        });
    }
    // The node's kernel cannot wrap IPIP itself. As in Calico, its routes to the blocks
    // behind the tunnel point into `tunl0`, and the router wraps what it reads there: a
    // host-network process reaches pods on other subnets, and their replies reach it.
    let dev = Path::new("/sys/class/net").join(routes::TUN_NAME);
    if cfg.pools.iter().any(|p| p.ipip_mode != IpipMode::Never) {
        if dev.exists() && !dev.join("tun_flags").exists() {
            // Where the kernel has its ipip module, it made a tunl0 of its own in every
            // namespace; the pods' traffic does not need ours.
            tracing::warn!(
                "{} exists and is not a TUN device (the kernel's ipip module?): the node's own traffic to pods behind the tunnel will not reach them",
                routes::TUN_NAME
            );
            return Ok(Interfaces::new(list));
        }
        let mtu = up.mtu.saturating_sub(encap::ipip::OVERHEAD as u16);
        let zero = encap::MacAddr::ZERO;
        list.push(Interface { name: routes::TUN_NAME.into(), ifindex: 0, mac: zero, mtu, role: IfaceRole::Tun });
    }
    Ok(Interfaces::new(list))
}

/// afpacket: kernel forwarding would forward every packet a second time. tun: the kernel
/// forwards pod traffic into `tunl0` and out of it, so it must be on.
fn check_kernel_forwarding(mode: DataplaneMode) -> anyhow::Result<()> {
    let v = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    match (mode, v.trim()) {
        (DataplaneMode::Afpacket, "1") => bail!(
            "kernel IPv4 forwarding is on in this network namespace (net.ipv4.ip_forward=1): \
             packets would be forwarded twice. Turn it off (`sysctl -w net.ipv4.ip_forward=0`) \
             or run the node in its own namespace (`router lab up` does)"
        ),
        (DataplaneMode::Tun, "0") => bail!(
            "the tun data plane lets the kernel forward pod traffic to and from tunl0, but \
             net.ipv4.ip_forward=0 here; turn it on (`sysctl -w net.ipv4.ip_forward=1`) or use \
             `router lab up --dataplane tun`, which does"
        ),
        _ => Ok(()),
    }
}

/// The tc preference of the transit filter on each interface.
const FILTER_PREF: &str = "49";
/// How often the node's addresses are checked for changes the filter must follow.
const FILTER_RECHECK: Duration = Duration::from_secs(5);

/// The transit filter (`forwarding::kfilter`) on the interfaces the router reads, so that
/// the node's kernel drops the frames we forward instead of routing each one only to fail.
/// It speeds things up and nothing depends on it: without `tc` or the kernel's classic-BPF
/// classifier the node runs unfiltered and says so.
struct TransitFilter {
    /// Interfaces that have it.
    devs: Vec<String>,
    /// The node's addresses it lets through.
    local: Vec<Ipv4Addr>,
    checked: Instant,
}

/// Every IPv4 address of the namespace: the kernel delivers to any of them, whichever
/// interface a frame comes in on.
fn local_addresses() -> anyhow::Result<Vec<Ipv4Addr>> {
    let out = ipcmd::ip(&["-4", "-o", "addr", "show"])?;
    let mut v: Vec<Ipv4Addr> = out
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

/// Puts the program for `local` on each of `devs` (replacing an older one); returns the
/// interfaces where that worked.
fn apply_transit_filter<'a>(devs: impl Iterator<Item = &'a str>, local: &[Ipv4Addr]) -> Vec<String> {
    let code = match forwarding::kfilter::transit_filter(local) {
        Ok(p) => forwarding::kfilter::tc_bytecode(&p),
        Err(e) => {
            tracing::warn!(error = %e, "no transit filter");
            return Vec::new();
        }
    };
    let mut done = Vec::new();
    for dev in devs {
        let r = ipcmd::run("tc", &["qdisc", "replace", "dev", dev, "clsact"]).and_then(|_| {
            let filter = ["filter", "replace", "dev", dev, "ingress", "pref", FILTER_PREF, "handle", "1"];
            ipcmd::run("tc", &[&filter[..], &["bpf", "da", "bytecode", &code]].concat())
        });
        match r {
            Ok(_) => done.push(dev.to_string()),
            Err(e) => {
                tracing::warn!(interface = dev, error = %e, "no transit filter here: the kernel routes what we forward too")
            }
        }
    }
    done
}

impl TransitFilter {
    fn install(ifaces: &Interfaces) -> Option<TransitFilter> {
        let local = match local_addresses() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no transit filter: cannot list the node's addresses");
                return None;
            }
        };
        let devs = ifaces.iter().filter(|(_, f)| f.role.is_ethernet()).map(|(_, f)| f.name.as_str());
        let devs = apply_transit_filter(devs, &local);
        tracing::info!(interfaces = devs.len(), local = ?local, "transit filter on");
        Some(TransitFilter { devs, local, checked: Instant::now() })
    }

    /// Follows the node's addresses: one added later must reach the kernel too, and one
    /// removed is no longer the node's.
    fn recheck(&mut self) {
        if self.devs.is_empty() || self.checked.elapsed() < FILTER_RECHECK {
            return;
        }
        self.checked = Instant::now();
        match local_addresses() {
            Ok(local) if local != self.local => {
                let done = apply_transit_filter(self.devs.iter().map(String::as_str), &local);
                tracing::info!(interfaces = done.len(), local = ?local, "node addresses changed: transit filter updated");
                self.local = local;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot list the node's addresses"),
        }
    }

    fn remove(&self) {
        for dev in &self.devs {
            if let Err(e) = ipcmd::run("tc", &["filter", "del", "dev", dev, "ingress", "pref", FILTER_PREF]) {
                tracing::warn!(interface = %dev, error = %e, "removing the transit filter");
            }
        }
    }
}

/// The running node: its config, data plane, route table and what it installed in the kernel.
struct Node {
    cfg: NodeConfig,
    dp: Dataplane,
    fib: FibHandle,
    /// The FIB's routes, changed one by one.
    writer: FibWriter,
    /// What BGP taught us; display rows are built from it when someone asks.
    learned: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Kernel routes currently installed by us.
    kernel: Vec<routes::KernelRoute>,
    started: Instant,
    capture: Option<crate::capture::Capture>,
    /// (path, packets) of the last finished capture.
    last_capture: Option<(std::path::PathBuf, u64)>,
    /// tunl0's tx_dropped when last read (tun mode): packets the kernel could not queue to us.
    tun_dropped: Option<u64>,
    filter: Option<TransitFilter>,
    /// The running trace: id, hops so far, when it stops by itself.
    trace: Option<(u32, Vec<crate::trace::Hop>, Instant)>,
}

fn tunnels(cfg: &NodeConfig, learned: &[(Ipv4Net, Ipv4Addr)]) -> Tunnels {
    // IPIP is accepted from the configured nodes and from every BGP next hop: the nodes we
    // route pod blocks to are the nodes that send us their pods' traffic.
    let mut peers: std::collections::HashSet<Ipv4Addr> = cfg.ipip_peers.iter().copied().collect();
    peers.extend(learned.iter().map(|(_, nh)| *nh));
    let mut local_pods: Vec<Ipv4Addr> = cfg.pods.iter().map(|p| p.address).collect();
    local_pods.sort_unstable();
    Tunnels { ttl: cfg.ipip_ttl, peers, allowed: cfg.ipip_allowed_sources.clone(), local_pods }
}

impl Node {
    /// Recomputes the route table with what BGP learned and publishes the new FIB; in tun mode
    /// (and for the node's own traffic) brings the kernel routes in line.
    fn rebuild(&mut self, learned: Vec<(Ipv4Net, Ipv4Addr)>) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let table = routes::build_fib(&self.cfg, self.dp.interfaces(), &learned).map_err(anyhow::Error::msg)?;
        let built = t0.elapsed();
        // Only what changed goes to the FIB writer, so a snapshot rebuilds only the /8s touched.
        let (added, removed) = self.writer.sync(&table.fib);
        let diffed = t0.elapsed();
        self.writer.set_tunnels(tunnels(&self.cfg, &learned));
        self.fib.publish(self.writer.publish());
        let published = t0.elapsed();
        self.sync_kernel(&table.kernel);
        tracing::info!(
            routes = self.writer.len(),
            learned = learned.len(),
            added,
            removed,
            ms_table = built.as_millis() as u64,
            ms_diff = (diffed - built).as_millis() as u64,
            ms_publish = (published - diffed).as_millis() as u64,
            "FIB updated"
        );
        self.learned = learned;
        Ok(())
    }

    /// The route table for display (`router routes`).
    fn entries(&self) -> Vec<RouteEntry> {
        routes::build(&self.cfg, self.dp.interfaces(), &self.learned).map(|t| t.entries).unwrap_or_default()
    }

    /// The route `dst` takes, as a display row (like `ip route get`). Only the learned routes
    /// that cover `dst` get rows built, so a full table costs one scan, not a million rows.
    fn route_for(&self, dst: Ipv4Addr) -> Option<RouteEntry> {
        let covering: Vec<(Ipv4Net, Ipv4Addr)> =
            self.learned.iter().filter(|(p, _)| p.contains(&dst)).copied().collect();
        let t = routes::build(&self.cfg, self.dp.interfaces(), &covering).ok()?;
        crate::trace::lookup(&t.entries, dst).cloned()
    }

    /// Removes every kernel route of ours (`proto 179`): at start, what a run that crashed
    /// left behind; at stop, what this run installed, which would otherwise route the node's
    /// traffic into a `tunl0` that is gone or to blocks nobody announces any more.
    fn flush_kernel(&mut self) {
        if let Err(e) = ipcmd::ip(&["route", "flush", "proto", routes::KERNEL_PROTO]) {
            tracing::warn!(error = %e, "could not flush our kernel routes");
        }
        self.kernel.clear();
    }

    fn sync_kernel(&mut self, want: &[routes::KernelRoute]) {
        let tun = self.cfg.dataplane == DataplaneMode::Tun;
        let wanted: std::collections::HashSet<&routes::KernelRoute> = want.iter().collect();
        let have: std::collections::HashSet<&routes::KernelRoute> = self.kernel.iter().collect();
        for old in self.kernel.iter().filter(|k| !wanted.contains(k)) {
            let args = old.args();
            let mut v = vec!["route", "del"];
            v.extend(args.iter().map(String::as_str));
            v.extend(["proto", routes::KERNEL_PROTO]);
            if let Err(e) = ipcmd::ip(&v) {
                tracing::debug!(error = %e, "kernel route already gone");
            }
        }
        let mut installed = Vec::new();
        for r in want {
            if have.contains(r) {
                installed.push(r.clone());
                continue;
            }
            let args = r.args();
            let mut v = vec!["route", "replace"];
            v.extend(args.iter().map(String::as_str));
            v.extend(["proto", routes::KERNEL_PROTO]);
            match ipcmd::ip(&v) {
                Ok(_) => installed.push(r.clone()),
                Err(e) if tun => tracing::error!(error = %e, "kernel route not installed: pod traffic will not flow"),
                // afpacket: these serve only the node's own traffic.
                Err(e) => tracing::warn!(error = %e, "kernel route not installed"),
            }
        }
        self.kernel = installed;
    }
}

fn speaker_config(cfg: &NodeConfig) -> Option<SpeakerConfig> {
    let b = cfg.bgp.as_ref()?;
    let local_addr = cfg.uplink.address.addr();
    Some(SpeakerConfig {
        local_as: b.as_number,
        router_id: b.router_id.unwrap_or(local_addr),
        local_addr,
        port: b.port,
        hold_time: b.hold_time,
        connect_retry: Duration::from_secs(u64::from(b.connect_retry_secs)),
        cluster_id: b.route_reflector_cluster_id,
        graceful_restart: (b.graceful_restart_secs > 0).then_some(b.graceful_restart_secs),
        peers: b
            .peers
            .iter()
            .map(|p| PeerConfig {
                addr: p.address,
                asn: p.as_number,
                port: p.port,
                kind: p.kind,
                rr_client: p.kind == PeerKind::RouteReflectorClient,
                passive: p.passive,
                password: p.password.clone(),
                ttl_security: p.ttl_security,
            })
            .collect(),
        originate: originated(cfg),
    })
}

/// What the node announces: its blocks, and a /32 for each of its pods whose address it
/// borrowed from another node's block (the block's owner announces the whole block, and the
/// /32 is longer), as Calico does.
fn originated(cfg: &NodeConfig) -> Vec<Ipv4Net> {
    let borrowed = cfg.pods.iter().filter(|p| !cfg.blocks.iter().any(|b| b.contains(&p.address)));
    cfg.blocks.iter().copied().chain(borrowed.map(|p| Ipv4Net::from(p.address))).collect()
}

const ADMIN: Token = Token(0);
/// The metrics listener; BGP uses `session::LISTEN` (1) and 16 and up.
const METRICS: Token = Token(2);

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config_path)?;
    check_kernel_forwarding(cfg.dataplane)?;
    let ifaces = discover(&cfg)?;
    let table = routes::build(&cfg, &ifaces, &[]).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let mut writer = FibWriter::with_routes(&table.fib);
    writer.set_tunnels(tunnels(&cfg, &[]));
    let fib = FibHandle::new(writer.publish());

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let listener = admin::bind(&cfg.admin_socket)?;
    let dp_cfg = DataplaneConfig {
        workers: cfg.workers,
        pin: cfg.pin_workers,
        gro: cfg.gro,
        nice: cfg.worker_nice,
        fail_worker_after: fault_worker_exit(&cfg.name),
        ..Default::default()
    };
    let dp = Dataplane::start(ifaces, fib.clone(), dp_cfg).context("starting the data plane")?;
    let filter = match cfg.dataplane {
        DataplaneMode::Afpacket if cfg.transit_filter => TransitFilter::install(dp.interfaces()),
        _ => None,
    };
    let mut node = Node {
        cfg,
        dp,
        fib,
        writer,
        learned: Vec::new(),
        kernel: Vec::new(),
        started: Instant::now(),
        capture: None,
        last_capture: None,
        trace: None,
        tun_dropped: None,
        filter,
    };
    if let Some(tun) = node.dp.interfaces().by_role(|r| *r == IfaceRole::Tun) {
        let mtu = node.dp.interfaces().get(tun).map_or(1480, |f| f.mtu).to_string();
        // A longer queue than TUN's default 500 absorbs bursts while a worker is busy.
        if let Err(e) = ipcmd::ip(&["link", "set", routes::TUN_NAME, "up", "mtu", &mtu, "txqueuelen", "10000"]) {
            node.dp.stop();
            return Err(e.context("bringing tunl0 up"));
        }
    }
    node.flush_kernel();
    node.sync_kernel(&table.kernel);
    let result = control_loop(&mut node, &listener, &stop);
    tracing::info!(node = %node.cfg.name, "stopping");
    if let Some(f) = &node.filter {
        f.remove();
    }
    node.flush_kernel();
    node.dp.stop();
    let _ = std::fs::remove_file(&node.cfg.admin_socket);
    result
}

/// Fault injection for the supervision test: `ROUTER_FAULT_WORKER_EXIT=NODE:MS` makes the
/// first worker of node NODE stop with an error MS milliseconds after it started.
fn fault_worker_exit(node: &str) -> Option<Duration> {
    let v = std::env::var("ROUTER_FAULT_WORKER_EXIT").ok()?;
    let (name, ms) = v.split_once(':')?;
    let ms: u64 = ms.parse().ok()?;
    (name == node).then(|| {
        tracing::warn!(ms, "ROUTER_FAULT_WORKER_EXIT: the first worker will stop on purpose");
        Duration::from_millis(ms)
    })
}

/// The control thread: admin socket, BGP sessions and their timers, FIB publication.
fn control_loop(node: &mut Node, listener: &UnixListener, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), ADMIN, Interest::READABLE)?;
    let mut speaker = match speaker_config(&node.cfg) {
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
    let mut metrics = match node.cfg.metrics_address {
        Some(addr) => {
            let mut l = mio::net::TcpListener::bind(addr).with_context(|| format!("serving metrics on {addr}"))?;
            poll.registry().register(&mut l, METRICS, Interest::READABLE)?;
            tracing::info!(%addr, "metrics at http://{addr}/metrics");
            Some(l)
        }
        None => None,
    };
    let mut events = Events::with_capacity(64);
    let (mut pending, mut last_rebuild, mut rebuild_cost) = (false, Instant::now(), Duration::ZERO);
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        // Supervision: without a worker or the slow path the node would blackhole what BGP
        // keeps drawing to it. Stop: Cease to every peer withdraws our routes at once, and
        // the exit status says something went wrong.
        if let Some(name) = node.dp.dead_thread() {
            tracing::error!(thread = %name, "a data-plane thread died; withdrawing the node's routes and stopping");
            result = Err(anyhow::anyhow!("the data-plane thread {name} died (its error is in the log above)"));
            break;
        }
        let now = Instant::now();
        let mut timeout = Duration::from_millis(200);
        if let Some(t) = speaker.as_ref().and_then(|s| s.poll_timeout()) {
            timeout = timeout.min(t.saturating_duration_since(now));
        }
        if pending {
            timeout = timeout.min((rebuild_cost * 2).saturating_sub(last_rebuild.elapsed()));
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        for ev in events.iter() {
            if ev.token() == ADMIN {
                admin::serve_pending(listener, |req| answer(req, node, speaker.as_ref()));
                node.reap_capture();
            } else if ev.token() == METRICS {
                if let Some(l) = metrics.as_mut() {
                    serve_metrics(l, node, speaker.as_ref());
                }
            } else if let Some(sp) = speaker.as_mut() {
                sp.handle(poll.registry(), ev.token(), now);
            }
        }
        node.reap_capture();
        node.collect_trace();
        node.account_tun_drops();
        if let Some(f) = node.filter.as_mut() {
            f.recheck();
        }
        if let Some(sp) = speaker.as_mut() {
            sp.tick(poll.registry(), now);
            pending |= sp.take_changed();
            // Coalesced: while routes pour in (a full table), rebuilding costs O(routes), so
            // wait twice as long as the last rebuild took; a small lab rebuilds at once.
            if pending && last_rebuild.elapsed() >= rebuild_cost * 2 {
                let t = Instant::now();
                if let Err(e) = node.rebuild(sp.learned()) {
                    tracing::error!(error = %e, "rebuilding the FIB failed");
                }
                pending = false;
                last_rebuild = Instant::now();
                rebuild_cost = t.elapsed();
            }
        }
    }
    if let Some(sp) = speaker.as_mut() {
        // Cease to every peer: written at once, before the sockets close.
        sp.stop(poll.registry());
    }
    result
}

fn serve_metrics(l: &mut mio::net::TcpListener, node: &Node, speaker: Option<&Speaker>) {
    while let Ok((stream, _)) = l.accept() {
        let Ok(std_stream) = stream_to_std(stream) else { continue };
        let body = || {
            let totals = node.dp.totals();
            let fib = node.fib.load();
            let peers = speaker.map(|s| s.status()).unwrap_or_default();
            crate::metrics::render(&crate::metrics::Snapshot {
                interfaces: node.dp.interfaces().iter().map(|(_, f)| f.name.clone()).collect(),
                totals: &totals,
                fib_routes: fib.len(),
                fib_memory_bytes: fib.memory_bytes(),
                neighbours: node.dp.neighbours().len(),
                uptime_secs: node.started.elapsed().as_secs_f64(),
                peers: &peers,
            })
        };
        if let Err(e) = crate::metrics::serve_http(std_stream, body) {
            tracing::debug!(error = %e, "metrics request failed");
        }
    }
}

/// A blocking std stream for a short, bounded request/response exchange.
fn stream_to_std(s: mio::net::TcpStream) -> std::io::Result<std::net::TcpStream> {
    let s = std::net::TcpStream::from(std::os::fd::OwnedFd::from(s));
    s.set_nonblocking(false)?;
    Ok(s)
}

impl Node {
    /// The kernel drops what tunl0's queue cannot hold before we read it; those packets are
    /// ours to count too.
    fn account_tun_drops(&mut self) {
        if self.dp.interfaces().by_role(|r| *r == IfaceRole::Tun).is_none() {
            return;
        }
        let path = format!("/sys/class/net/{}/statistics/tx_dropped", routes::TUN_NAME);
        let Some(now) = std::fs::read_to_string(path).ok().and_then(|v| v.trim().parse::<u64>().ok()) else { return };
        if let Some(before) = self.tun_dropped {
            self.dp.count_kernel_drops(forwarding::DropReason::RxQueueFull, now.saturating_sub(before));
        }
        self.tun_dropped = Some(now);
    }

    /// Turns the workers' trace events into hops; ends a trace nobody stopped.
    fn collect_trace(&mut self) {
        let Some((id, _, until)) = &self.trace else { return };
        let (id, until) = (*id, *until);
        let rx = self.dp.tracer().receiver();
        while let Ok(e) = rx.try_recv() {
            if e.id != id {
                continue;
            }
            let h = crate::trace::hop(
                &self.cfg.name,
                self.dp.interfaces().node_addr(),
                self.dp.interfaces(),
                &|dst| self.route_for(dst),
                &e,
            );
            if let Some((_, hops, _)) = self.trace.as_mut() {
                hops.push(h);
            }
        }
        if Instant::now() > until {
            self.dp.tracer().stop();
        }
    }

    fn trace_request(&mut self, req: Request) -> admin::Answer {
        match req {
            Request::TraceStart { id } => {
                while self.dp.tracer().receiver().try_recv().is_ok() {}
                self.trace = Some((id, Vec::new(), Instant::now() + Duration::from_secs(10)));
                self.dp.tracer().start(id);
                admin::answer(&())
            }
            Request::TraceCollect { id } => {
                self.collect_trace();
                match &self.trace {
                    Some((tid, hops, _)) if *tid == id => admin::answer(hops),
                    _ => admin::answer(&Vec::<crate::trace::Hop>::new()),
                }
            }
            _ => {
                self.dp.tracer().stop();
                self.trace = None;
                admin::answer(&())
            }
        }
    }

    /// Closes a capture that reached its count.
    fn reap_capture(&mut self) {
        if self.capture.as_ref().is_some_and(|c| c.done()) {
            self.stop_capture();
        }
    }

    fn stop_capture(&mut self) -> Option<Result<u64, String>> {
        let c = self.capture.take()?;
        self.dp.tap().stop();
        let path = c.path.clone();
        let r = c.finish();
        if let Ok(n) = &r {
            tracing::info!(path = %path.display(), packets = n, "capture written");
            self.last_capture = Some((path, *n));
        }
        Some(r)
    }

    fn capture_request(&mut self, req: Request) -> admin::Answer {
        match req {
            Request::CaptureStart { path, interface, count, seconds } => {
                if let Some(c) = &self.capture {
                    return Err(format!("a capture into {} is already running; stop it first", c.path.display()));
                }
                let iface = match &interface {
                    Some(name) => Some(self.dp.interfaces().by_name(name).ok_or_else(|| {
                        let names: Vec<String> = self.dp.interfaces().iter().map(|(_, f)| f.name.clone()).collect();
                        format!("no interface {name:?} in this node's data plane; interfaces: {}", names.join(", "))
                    })?),
                    None => None,
                };
                let limits = crate::capture::Limits::capped(count, seconds);
                let c = crate::capture::Capture::start(&path, limits, self.dp.tap())?;
                self.dp.tap().start(iface);
                self.capture = Some(c);
                admin::answer(&admin::CaptureStarted { path, active: true })
            }
            Request::CaptureStop => match self.stop_capture() {
                Some(Ok(n)) => admin::answer(&admin::CaptureStopped { written: n }),
                Some(Err(e)) => Err(format!("the capture failed: {e}")),
                None => {
                    admin::answer(&admin::CaptureStopped { written: self.last_capture.as_ref().map_or(0, |c| c.1) })
                }
            },
            _ => {
                let lost = self.dp.tap().lost.load(std::sync::atomic::Ordering::Relaxed);
                admin::answer(&match &self.capture {
                    Some(c) => admin::CaptureStatus {
                        active: !c.done(),
                        path: Some(c.path.clone()),
                        written: c.written.load(std::sync::atomic::Ordering::Relaxed),
                        lost,
                        ended: c.ended.lock().ok().and_then(|e| *e).map(str::to_string),
                    },
                    None => admin::CaptureStatus {
                        active: false,
                        path: self.last_capture.as_ref().map(|c| c.0.clone()),
                        written: self.last_capture.as_ref().map_or(0, |c| c.1),
                        lost,
                        ended: None,
                    },
                })
            }
        }
    }
}

fn answer(req: Request, node: &mut Node, speaker: Option<&Speaker>) -> admin::Answer {
    let (cfg, dp) = (&node.cfg, &node.dp);
    match req {
        Request::CaptureStart { .. } | Request::CaptureStop | Request::CaptureStatus => node.capture_request(req),
        Request::TraceStart { .. } | Request::TraceCollect { .. } | Request::TraceStop => node.trace_request(req),
        Request::Lookup { addr } => admin::answer(&node.route_for(addr)),
        Request::Routes => admin::answer(&node.entries()),
        Request::Neighbours => admin::answer(&dp.neighbours()),
        Request::BgpStatus => admin::answer(&admin::BgpStatus {
            configured: speaker.is_some(),
            as_number: cfg.bgp.as_ref().map(|b| b.as_number),
            router_id: cfg.bgp.as_ref().map(|b| b.router_id.unwrap_or(cfg.uplink.address.addr())),
            peers: speaker.map(|s| s.status()).unwrap_or_default(),
        }),
        Request::Stats => {
            let t = dp.totals();
            let interfaces = dp
                .interfaces()
                .iter()
                .zip(t.ifaces.iter())
                .map(|((_, f), c)| admin::InterfaceCounters {
                    interface: f.name.clone(),
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                })
                .collect();
            admin::answer(&admin::Stats {
                interfaces,
                drops: t.drops.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
                icmp_errors_sent: t.icmp_errors_sent,
                arp_replies_sent: t.arp_replies_sent,
                ipip_encapsulated: t.ipip_encapsulated,
                ipip_decapsulated: t.ipip_decapsulated,
                fragments_sent: t.fragments_sent,
                gso_received: t.gso_received,
                gso_segments: t.gso_segments,
                gro_packets: t.gro_packets,
                gro_segments: t.gro_segments,
                fib_routes: node.fib.load().len(),
                transit_filter: (cfg.dataplane == DataplaneMode::Afpacket)
                    .then(|| node.filter.as_ref().map_or_else(Vec::new, |f| f.devs.clone())),
            })
        }
        Request::Status => {
            let interfaces = dp
                .interfaces()
                .iter()
                .map(|(_, f)| admin::InterfaceStatus {
                    name: f.name.clone(),
                    role: f.role.name().to_string(),
                    address: match f.role {
                        IfaceRole::Uplink { addr } => addr.to_string(),
                        IfaceRole::Pod { addr } => addr.to_string(),
                        IfaceRole::Tun | IfaceRole::RawIpip => String::new(),
                    },
                    mac: f.mac.to_string(),
                    mtu: f.mtu,
                    ifindex: f.ifindex,
                })
                .collect();
            admin::answer(&admin::NodeStatus {
                name: cfg.name.clone(),
                pid: std::process::id(),
                dataplane: cfg.dataplane,
                workers: cfg.workers,
                uptime_secs: node.started.elapsed().as_secs(),
                routes: node.writer.len(),
                interfaces,
            })
        }
    }
}
