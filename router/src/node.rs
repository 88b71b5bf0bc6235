//! `router node`: one node's daemon. Reads its config, finds its interfaces, builds the FIB,
//! starts the data plane, then serves the admin socket on the control thread until SIGTERM.

use crate::admin::{self, Request};
use crate::config::{DataplaneMode, NodeConfig};
use crate::ipcmd;
use crate::routes::{self, RouteEntry};
use anyhow::{bail, Context as _};
use forwarding::dataplane::{Dataplane, DataplaneConfig};
use forwarding::fib::Tunnels;
use forwarding::{Fib, FibHandle, IfaceId, IfaceRole, Interface, Interfaces};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Finds the data plane's interfaces in this network namespace: the uplink and every pod
/// interface (afpacket), or the raw IPIP socket and `tunl0` (tun).
pub fn discover(cfg: &NodeConfig) -> anyhow::Result<Interfaces> {
    let mut list = Vec::new();
    let up = forwarding::sys::link_info(&cfg.uplink.interface)
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
        let l = forwarding::sys::link_info(&p.interface)
            .with_context(|| format!("interface {} of pod {}", p.interface, p.name))?;
        list.push(Interface {
            name: p.interface.clone(),
            ifindex: l.ifindex,
            mac: l.mac,
            mtu: l.mtu,
            role: IfaceRole::Pod { addr: p.address },
        });
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

/// Brings `tunl0` up and installs the kernel routes the table asks for. A route the kernel
/// refuses is logged, not fatal: in afpacket mode these only serve the node's own traffic.
fn program_kernel(cfg: &NodeConfig, dp: &Dataplane, table: &routes::Table) -> anyhow::Result<()> {
    if cfg.dataplane == DataplaneMode::Tun {
        let mtu = dp.interfaces().get(IfaceId(1)).map_or(1480, |f| f.mtu).to_string();
        ipcmd::ip(&["link", "set", routes::TUN_NAME, "up", "mtu", &mtu])?;
    }
    for r in &table.kernel {
        let args = r.args();
        let mut v = vec!["route", "replace"];
        v.extend(args.iter().map(String::as_str));
        match ipcmd::ip(&v) {
            Ok(_) => {}
            Err(e) if cfg.dataplane == DataplaneMode::Tun => return Err(e),
            Err(e) => tracing::warn!(error = %e, "kernel route not installed"),
        }
    }
    Ok(())
}

pub fn run(config_path: &Path) -> anyhow::Result<()> {
    let cfg = NodeConfig::load(config_path)?;
    check_kernel_forwarding(cfg.dataplane)?;
    let ifaces = discover(&cfg)?;
    let table = routes::build(&cfg, &ifaces).map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    let tunnels = Tunnels {
        ttl: cfg.ipip_ttl,
        peers: cfg.ipip_peers.iter().copied().collect(),
        allowed: cfg.ipip_allowed_sources.clone(),
    };
    let fib = FibHandle::new(Fib::build(&table.fib).with_tunnels(tunnels));
    let entries: Vec<RouteEntry> = table.entries.clone();

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let listener = bind_admin(&cfg.admin_socket)?;
    let dp_cfg = DataplaneConfig { workers: cfg.workers, pin: cfg.pin_workers, ..Default::default() };
    let dp = Dataplane::start(ifaces, fib, dp_cfg).context("starting the data plane")?;
    if let Err(e) = program_kernel(&cfg, &dp, &table) {
        dp.stop();
        return Err(e.context("programming the kernel"));
    }
    tracing::info!(
        node = %cfg.name,
        interfaces = dp.interfaces().len(),
        routes = entries.len(),
        workers = cfg.workers,
        socket = %cfg.admin_socket.display(),
        "node up"
    );
    let started = Instant::now();
    let result = serve(&listener, &stop, |req| answer(req, &cfg, &dp, &entries, started));
    tracing::info!(node = %cfg.name, "stopping");
    dp.stop();
    let _ = std::fs::remove_file(&cfg.admin_socket);
    result
}

fn bind_admin(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another node already answers on {}; stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding admin socket {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

fn serve(
    listener: &UnixListener,
    stop: &AtomicBool,
    mut handle: impl FnMut(Request) -> serde_json::Value,
) -> anyhow::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry().register(&mut SourceFd(&listener.as_raw_fd()), Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(8);
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(200))) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    if let Err(e) = s.set_nonblocking(false).and_then(|_| admin::serve_one(s, &mut handle)) {
                        tracing::debug!(error = %e, "admin connection failed");
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    break;
                }
            }
        }
    }
    Ok(())
}

fn answer(
    req: Request,
    cfg: &NodeConfig,
    dp: &Dataplane,
    routes: &[RouteEntry],
    started: Instant,
) -> serde_json::Value {
    match req {
        Request::Routes => json!(routes),
        Request::Neighbours => json!(dp.neighbours()),
        Request::Stats => {
            let t = dp.totals();
            let ifaces: Vec<_> = dp
                .interfaces()
                .iter()
                .zip(t.ifaces.iter())
                .map(|((_, f), c)| json!({"interface": f.name, "rx_packets": c.rx_packets, "rx_bytes": c.rx_bytes, "tx_packets": c.tx_packets, "tx_bytes": c.tx_bytes}))
                .collect();
            let drops: serde_json::Map<String, serde_json::Value> =
                t.drops.iter().map(|(n, v)| (n.to_string(), json!(v))).collect();
            json!({
                "interfaces": ifaces,
                "drops": drops,
                "icmp_errors_sent": t.icmp_errors_sent,
                "arp_replies_sent": t.arp_replies_sent,
                "ipip_encapsulated": t.ipip_encapsulated,
                "ipip_decapsulated": t.ipip_decapsulated,
                "fragments_sent": t.fragments_sent,
            })
        }
        Request::Status => {
            let ifaces: Vec<_> = dp
                .interfaces()
                .iter()
                .map(|(_, f)| {
                    let addr = match f.role {
                        IfaceRole::Uplink { addr } => addr.to_string(),
                        IfaceRole::Pod { addr } => addr.to_string(),
                        IfaceRole::Tun | IfaceRole::RawIpip => String::new(),
                    };
                    let role = f.role.name();
                    json!({"name": f.name, "role": role, "address": addr, "mac": f.mac.to_string(), "mtu": f.mtu, "ifindex": f.ifindex})
                })
                .collect();
            json!({
                "name": cfg.name,
                "pid": std::process::id(),
                "dataplane": cfg.dataplane,
                "workers": cfg.workers,
                "uptime_secs": started.elapsed().as_secs(),
                "routes": routes.len(),
                "interfaces": ifaces,
            })
        }
    }
}
