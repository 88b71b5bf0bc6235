//! `router lab`: builds a topology of network namespaces (switches, an underlay router, nodes,
//! pods), starts one `router node` per node, and takes it all down again.
//!
//! Nothing touches the host's own namespace: every link is a veth pair between namespaces
//! the lab created. The state file lists every namespace before it is created, so `down`
//! also cleans up after a crash or an interrupted `up`.

pub mod containers;
pub mod fuzzing;
pub mod resources;
pub mod state;
pub mod topology;
pub mod tour;
pub mod userns;

use nodeapi::ipcmd as netns;

use anyhow::{bail, Context as _};
use nodeapi::admin;
use nodeapi::config::PeerKind;
use nodeapi::config::{
    BgpConfig, BgpPeer, DataplaneMode, IpipMode, Ipv6Config, NodeConfig, PodConfig, Pool, StaticAction, StaticRoute,
    Uplink,
};
use state::{Daemon, Host, Role, State};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use topology::Topology;

/// Which lab, and where its state lives.
#[derive(Debug, Clone)]
pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
}

impl Lab {
    /// `name` becomes a namespace prefix; `base` holds one directory per lab.
    pub fn new(name: &str, base: &Path) -> anyhow::Result<Lab> {
        let ok = !name.is_empty()
            && name.len() <= 16
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-');
        if !ok {
            bail!("lab name {name:?} must be 1-16 characters of a-z, 0-9 and '-'");
        }
        Ok(Lab { name: name.to_string(), dir: base.join(name) })
    }

    fn ns(&self, host: &str) -> String {
        format!("{}-{}", self.name, host)
    }

    pub fn socket(&self, node: &str) -> PathBuf {
        self.dir.join(format!("{node}.sock"))
    }

    pub fn state(&self) -> anyhow::Result<Option<State>> {
        State::load(&self.dir)
    }

    /// Held while a command builds, removes or restarts parts of the lab: two `lab up` at
    /// once would each pass the "already up" check and then tear down what the other
    /// made. The lock file sits beside the lab's directory and lives as long as it: let go
    /// when there is no lab directory (after `down`, or an `up` that failed before it made
    /// one), it is removed first, and a waiter that then holds the lock of a removed file
    /// tries again.
    fn lock(&self) -> anyhow::Result<Held> {
        use nix::fcntl::{Flock, FlockArg};
        use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
        let base = self.dir.parent().context("the lab directory has no parent")?;
        nodeapi::private::dir_if_missing(base).with_context(|| format!("creating {}", base.display()))?;
        let path = self.lock_path();
        let mut said = false;
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let held = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => held,
                Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
                    if !said {
                        eprintln!("waiting for another `router lab` command on lab {:?} to finish", self.name);
                        said = true;
                    }
                    Flock::lock(file, FlockArg::LockExclusive)
                        .map_err(|(_, e)| e)
                        .with_context(|| format!("locking {}", path.display()))?
                }
                Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
            };
            let same = |m: std::fs::Metadata| held.metadata().is_ok_and(|h| (h.dev(), h.ino()) == (m.dev(), m.ino()));
            if std::fs::metadata(&path).is_ok_and(same) {
                return Ok(Held { _lock: held, path, dir: self.dir.clone() });
            }
        }
    }

    fn lock_path(&self) -> PathBuf {
        let base = self.dir.parent().unwrap_or(Path::new("."));
        base.join(format!("{}.lock", self.name))
    }

    fn running_state(&self) -> anyhow::Result<State> {
        match self.state()? {
            Some(s) => Ok(s),
            None => bail!("no lab named {:?} is up: start it with `router lab up`", self.name),
        }
    }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root, or the lab's own user namespace (`router lab up` as the same user makes it)");
    }
    Ok(())
}

/// Moves this process into a rootless lab's namespaces (see [`userns`]); a lab that root
/// made needs nothing. Call it before any thread starts.
pub fn enter(lab: &Lab) -> anyhow::Result<()> {
    match userns::Keeper::load(&lab.dir)? {
        Some(k) => k.enter(),
        None => Ok(()),
    }
}

/// `lab up` as a user without root: a keeper for the lab (a stale one's leftovers
/// removed first), entered.
fn enter_new_keeper(lab: &Lab, exe: &Path) -> anyhow::Result<()> {
    let k = match userns::Keeper::load(&lab.dir)? {
        Some(k) if k.alive() => k,
        old => {
            if old.is_some() || lab.state()?.is_some() {
                down_locked(lab)?;
            }
            userns::Keeper::start(&lab.dir, exe)?
        }
    };
    k.enter()
}

/// Options of `lab up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub topology: Option<PathBuf>,
    /// A generated topology instead (`--nodes N`).
    pub generated: Option<topology::Generated>,
    /// Run etcd in the lab, load the topology into it as Calico resources, and have every
    /// node follow them live.
    pub datastore: bool,
    pub dataplane: DataplaneMode,
    pub workers: usize,
    /// Overrides the topology's `ipip_mode`.
    pub ipip_mode: Option<IpipMode>,
    /// Overrides the topology's `vxlan_mode` (and turns IPIP off unless `ipip_mode` is given).
    pub vxlan_mode: Option<IpipMode>,
    /// Sets the pool's `natOutgoing` (otherwise the topology's).
    pub nat_outgoing: bool,
    /// Serve each node's metrics on 127.0.0.1:9091 inside its namespace.
    pub metrics: bool,
    /// Leave the pods' TX offloads on (checksum, TSO); off, pods send only complete,
    /// MTU-sized packets.
    pub pod_offload: bool,
    /// Let the nodes merge TCP segments to pods into super-packets.
    pub gro: bool,
    /// Let the nodes send VXLAN as UDP super-packets.
    pub udp_gso: bool,
    /// `afpacket`: let the nodes' kernels drop the frames the routers forward (`kfilter`).
    pub transit_filter: bool,
    /// The nodes' workers' nice value.
    pub worker_nice: i32,
    /// Dual stack: IPv6 beside IPv4 (the topology's `pool_v6`, or `topology::DUAL_STACK_POOL`).
    pub dual_stack: bool,
    /// The `router` binary the nodes run (normally this one).
    pub exe: PathBuf,
}

/// [`Lab::lock`] held.
struct Held {
    _lock: nix::fcntl::Flock<std::fs::File>,
    path: PathBuf,
    dir: PathBuf,
}

impl Drop for Held {
    fn drop(&mut self) {
        // Before the lock goes with `_lock`: no one can hold the file being removed.
        if !self.dir.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why this user cannot open `/dev/net/tun` (mode 0600 on some machines), if they cannot:
/// then the tun data plane cannot run, and afpacket nodes make no `tunl0`/`vxlan.calico`.
pub fn tun_closed() -> Option<std::io::Error> {
    std::fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun").err()
}

pub fn up(lab: &Lab, opts: &UpOptions) -> anyhow::Result<State> {
    let _held = lab.lock()?;
    up_locked(lab, opts)
}

fn up_locked(lab: &Lab, opts: &UpOptions) -> anyhow::Result<State> {
    let (mut topo, topo_name) = match (&opts.topology, &opts.generated) {
        (Some(_), Some(_)) => bail!("--topology and --nodes both say which nodes to build; give one"),
        (Some(p), None) => (Topology::load_with(p, opts.dual_stack)?, p.display().to_string()),
        (None, Some(g)) => {
            let name = g.describe();
            (Topology::parse_with(Path::new(&name), &g.text()?, opts.dual_stack)?, name)
        }
        (None, None) => (
            Topology::parse_with(Path::new("seed.toml (built in)"), topology::SEED, opts.dual_stack)?,
            "seed (built in)".to_string(),
        ),
    };
    (topo.ipip_mode, topo.vxlan_mode) = encap_modes(&topo, opts)?;
    topo.nat_outgoing |= opts.nat_outgoing;
    topo.nat_outgoing_v6 |= opts.nat_outgoing && topo.pool_v6.is_some();
    if opts.dataplane == DataplaneMode::Tun {
        if let Some(e) = tun_closed() {
            bail!("the tun data plane needs /dev/net/tun, which this user cannot open ({e}); use the default afpacket data plane, or run the lab as root");
        }
    }
    let mut opts = opts.clone();
    if !nix::unistd::geteuid().is_root() {
        // Without root a process cannot raise its priority: the workers run at nice 0.
        opts.worker_nice = opts.worker_nice.max(0);
        enter_new_keeper(lab, &opts.exe)?;
    }
    let opts = &opts;
    require_root("`router lab up`")?;
    if let Some(old) = lab.state()? {
        let alive = old.namespaces.iter().any(|n| netns::exists(n));
        if alive {
            let flag = if lab.name == "seed" { String::new() } else { format!(" --lab {}", lab.name) };
            // A lab whose daemons died (killed, crashed) is up but carries nothing: say so.
            let mut exited: Vec<&str> = old.daemons.iter().filter(|d| !is_daemon(d)).map(|d| d.node.as_str()).collect();
            if old.etcd.as_ref().is_some_and(|e| !e.pid.is_some_and(is_etcd)) {
                exited.push("etcd");
            }
            if let Some((last, first)) = exited.split_last() {
                let (which, again) = match first {
                    [] => {
                        let who = if *last == "etcd" { "etcd".to_string() } else { format!("the daemon of {last}") };
                        (format!("{who} has"), format!("it again with `router lab restart {last}"))
                    }
                    _ => (
                        format!("{} and {last} have", first.join(", ")),
                        "each again with `router lab restart NODE".to_string(),
                    ),
                };
                bail!(
                    "lab {:?} is already up, but {which} exited (logs in {}): start {again}{flag}`, or take the lab down with `router lab down{flag}`",
                    lab.name,
                    lab.dir.display(),
                );
            }
            bail!(
                "lab {:?} is already up ({} namespaces); use it, or take it down with `router lab down{flag}`",
                lab.name,
                old.namespaces.len(),
            );
        }
        // Leftovers of a lab whose namespaces are gone: clear them quietly.
        down_locked(lab)?;
    }
    for ns in all_namespaces(lab, &topo) {
        if netns::exists(&ns) {
            bail!("network namespace {ns} already exists but is not part of lab {:?}; remove it (`ip netns del {ns}`) or pick another --lab name", lab.name);
        }
    }
    let mut st = State {
        name: lab.name.clone(),
        topology: topo_name,
        dataplane: opts.dataplane,
        ipip_mode: topo.ipip_mode,
        vxlan_mode: topo.vxlan_mode,
        nat_outgoing: topo.nat_outgoing,
        nat_outgoing_v6: topo.nat_outgoing_v6,
        created_unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        complete: false,
        namespaces: Vec::new(),
        hosts: Vec::new(),
        daemons: Vec::new(),
        etcd: None,
    };
    st.save(&lab.dir)?;
    match build(lab, &topo, opts, &mut st) {
        Ok(()) => {
            st.complete = true;
            st.save(&lab.dir)?;
            Ok(st)
        }
        Err(e) => {
            let _ = st.save(&lab.dir);
            if let Err(e2) = down_locked(lab) {
                eprintln!("warning: cleaning up after the failed `lab up` also failed: {e2:#}");
            }
            Err(e.context(format!("building lab {:?} failed; everything it had made was removed", lab.name)))
        }
    }
}

/// The pool's `ipipMode` and `vxlanMode` for this lab: the options over the topology's. A
/// `--vxlan-mode` alone turns IPIP off (a pool uses one or the other, as in Calico).
fn encap_modes(topo: &Topology, opts: &UpOptions) -> anyhow::Result<(IpipMode, IpipMode)> {
    let vxlan = opts.vxlan_mode.unwrap_or(topo.vxlan_mode);
    let ipip = match (opts.ipip_mode, opts.vxlan_mode) {
        (Some(m), _) => m,
        (None, Some(v)) if v != IpipMode::Never => IpipMode::Never,
        (None, _) => topo.ipip_mode,
    };
    if ipip != IpipMode::Never && vxlan != IpipMode::Never {
        bail!(
            "ipipMode {} with vxlanMode {}: a pool uses IPIP or VXLAN, not both (Calico refuses it too)",
            ipip.name(),
            vxlan.name()
        );
    }
    Ok((ipip, vxlan))
}

/// Bytes a pod's packets lose to the pool's tunnel: its MTU is the underlay's minus these.
pub fn tunnel_overhead(topo: &Topology) -> u16 {
    Pool {
        cidr: topo.pool,
        ipip_mode: topo.ipip_mode,
        vxlan_mode: topo.vxlan_mode,
        nat_outgoing: false,
        disable_bgp_export: false,
    }
    .tunnel_overhead()
}

fn all_namespaces(lab: &Lab, topo: &Topology) -> Vec<String> {
    let mut v: Vec<String> = topo.subnets.iter().map(|s| lab.ns(&format!("sw-{}", s.name))).collect();
    v.push(lab.ns("underlay"));
    for n in &topo.nodes {
        v.push(lab.ns(&n.name));
        v.extend(n.pods.iter().map(|p| lab.ns(&p.name)));
    }
    v
}

fn add_ns(lab: &Lab, st: &mut State, ns: &str, ipv6: bool) -> anyhow::Result<()> {
    // Recorded first: if we die between these two lines, `down` still finds it.
    st.namespaces.push(ns.to_string());
    st.save(&lab.dir)?;
    netns::ip(&["netns", "add", ns])?;
    netns::ip_in(ns, &["link", "set", "lo", "up"])?;
    // An IPv4 lab has no IPv6 at all: no router-solicitation and MLD chatter in captures
    // and counters to distract from the story.
    for conf in ["all", "default"] {
        netns::sysctl_in(ns, &format!("net.ipv6.conf.{conf}.disable_ipv6"), if ipv6 { "0" } else { "1" })?;
    }
    if ipv6 {
        // Addresses usable at once: the lab assigns them, no two hosts share one.
        netns::sysctl_in(ns, "net.ipv6.conf.default.accept_dad", "0")?;
    }
    Ok(())
}

/// A veth port name on a switch, within the 15-character limit.
fn port_name(prefix: &str, host: &str, index: usize) -> String {
    let n = format!("{prefix}{host}");
    if n.len() <= 15 {
        n
    } else {
        format!("{prefix}{index}")
    }
}

fn build(lab: &Lab, topo: &Topology, opts: &UpOptions, st: &mut State) -> anyhow::Result<()> {
    build_switches(lab, topo, st)?;
    let mut segment = build_underlay(lab, topo, st)?;
    if opts.datastore {
        segment.push(start_etcd(lab, topo, opts, st)?);
    }
    let mut configs = Vec::new();
    for (idx, node) in topo.nodes.iter().enumerate() {
        segment.push(build_node(lab, topo, opts, st, idx, node)?);
        let pods = node.pods.iter().map(|pod| add_pod(lab, topo, opts, st, node, pod)).collect::<Result<_, _>>()?;
        let mut cfg = node_config(lab, topo, node, pods, opts, topo.ipip_mode);
        cfg.etcd_endpoints = st.etcd.iter().map(|e| e.url.clone()).collect();
        cfg.secrets_dir = st.etcd.is_some().then(|| secrets_dir(lab));
        configs.push(cfg);
        st.save(&lab.dir)?;
    }

    static_neighbours(&segment)?;
    containers::setup(lab, topo, &opts.exe, st.etcd.as_ref().map(|e| e.url.as_str()))?;
    for cfg in &configs {
        let path = lab.dir.join(format!("{}.toml", cfg.name));
        // 0600: a node's config holds its peers' TCP-MD5 passwords.
        nodeapi::private::write(&path, cfg.to_toml().as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        let log = lab.dir.join(format!("{}.log", cfg.name));
        let pid = spawn_node(&lab.ns(&cfg.name), &opts.exe, &path, &log)?;
        st.daemons.push(Daemon { node: cfg.name.clone(), pid, config: path, socket: cfg.admin_socket.clone(), log });
        st.save(&lab.dir)?;
    }
    let patience = start_patience(st.daemons.len());
    for d in &st.daemons {
        wait_ready(d, patience)?;
    }
    wait_converged(topo, st)
}

/// One L2 segment per underlay subnet: a bridge in its own namespace.
fn build_switches(lab: &Lab, topo: &Topology, st: &mut State) -> anyhow::Result<()> {
    let v6 = topo.pool_v6.is_some();
    for s in &topo.subnets {
        let ns = lab.ns(&format!("sw-{}", s.name));
        add_ns(lab, st, &ns, v6)?;
        netns::ip_in(&ns, &["link", "add", "br0", "type", "bridge"])?;
        netns::ip_in(&ns, &["link", "set", "br0", "up"])?;
        // A switch does not filter: where the host has br_netfilter loaded, bridged frames
        // would each pass the iptables hooks (a fifth of the cost of a frame crossing it).
        // The setting belongs to this namespace only; it is absent without the module.
        for table in ["iptables", "ip6tables", "arptables"] {
            let key = format!("net/bridge/bridge-nf-call-{table}");
            if netns::exec_in(&ns, &["test", "-e", &format!("/proc/sys/{key}")]).is_ok() {
                netns::sysctl_in(&ns, &key, "0")?;
            }
        }
        st.hosts.push(Host {
            name: format!("sw-{}", s.name),
            role: Role::Switch,
            namespace: ns,
            addresses: vec![s.prefix.to_string()],
            parent: None,
            interface: None,
        });
    }
    Ok(())
}

/// The underlay router, on every subnet's switch; its interfaces, for the static neighbours.
fn build_underlay(lab: &Lab, topo: &Topology, st: &mut State) -> anyhow::Result<Vec<Member>> {
    let v6 = topo.pool_v6.is_some();
    // Plain kernel forwarding between the subnets, no pod routes.
    let und = lab.ns("underlay");
    add_ns(lab, st, &und, v6)?;
    let mut und_addrs = Vec::new();
    let mut segment = Vec::new();
    for (i, s) in topo.subnets.iter().enumerate() {
        let sw = lab.ns(&format!("sw-{}", s.name));
        let dev = format!("eth{i}");
        let mtu = s.mtu.to_string();
        netns::ip_in(
            &sw,
            &["link", "add", "to-underlay", "mtu", &mtu, "type", "veth", "peer", "name", &dev, "netns", &und],
        )?;
        netns::ip_in(&sw, &["link", "set", "to-underlay", "master", "br0", "up"])?;
        let gw = format!("{}/{}", s.gateway, s.prefix.prefix_len());
        netns::ip_in(&und, &["addr", "add", &gw, "dev", &dev])?;
        und_addrs.push(gw);
        netns::ip_in(&und, &["link", "set", &dev, "address", &underlay_mac(s.gateway), "up"])?;
        if let Some((prefix, gw6)) = s.v6 {
            let a = format!("{gw6}/{}", prefix.prefix_len());
            netns::ip_in(&und, &["-6", "addr", "add", &a, "dev", &dev, "nodad"])?;
            und_addrs.push(a);
        }
        segment.push(Member { subnet: i, ns: und.clone(), dev, addr: s.gateway });
    }
    netns::sysctl_in(&und, "net.ipv4.ip_forward", "1")?;
    if v6 {
        netns::sysctl_in(&und, "net.ipv6.conf.all.forwarding", "1")?;
        // IPv6 is not tunnelled (as in Calico): the underlay router is the fabric that
        // knows where each node's IPv6 block lives.
        for n in &topo.nodes {
            if let Some((addr, block)) = n.v6 {
                netns::ip_in(&und, &["-6", "route", "add", &block.to_string(), "via", &addr.addr().to_string()])?;
            }
        }
    }
    st.hosts.push(Host {
        name: "underlay".into(),
        role: Role::Underlay,
        namespace: und,
        addresses: und_addrs,
        parent: None,
        interface: None,
    });
    Ok(segment)
}

/// Node `idx`: its namespace on its subnet's switch, addresses, routes and forwarding
/// settings for the data plane; its uplink, for the static neighbours.
fn build_node(
    lab: &Lab,
    topo: &Topology,
    opts: &UpOptions,
    st: &mut State,
    idx: usize,
    node: &topology::Node,
) -> anyhow::Result<Member> {
    let v6 = topo.pool_v6.is_some();
    let subnet = &topo.subnets[node.subnet];
    let ns = lab.ns(&node.name);
    add_ns(lab, st, &ns, v6)?;
    let sw = lab.ns(&format!("sw-{}", subnet.name));
    let port = port_name("to-", &node.name, idx);
    let mtu = subnet.mtu.to_string();
    netns::ip_in(&sw, &["link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    netns::ip_in(&sw, &["link", "set", &port, "master", "br0", "up"])?;
    netns::ip_in(&ns, &["addr", "add", &node.address.to_string(), "dev", "eth0"])?;
    netns::ip_in(&ns, &["link", "set", "eth0", "address", &underlay_mac(node.address.addr()), "up"])?;
    let mut node_addrs = vec![node.address.to_string()];
    if let (Some((addr6, _)), Some((_, gw6)), Some(pool6)) = (node.v6, subnet.v6, topo.pool_v6) {
        netns::ip_in(&ns, &["-6", "addr", "add", &addr6.to_string(), "dev", "eth0", "nodad"])?;
        // The node's own IPv6 to other subnets and to pods elsewhere goes through the
        // underlay router; its own pods it reaches directly (below).
        for other in topo.subnets.iter().filter(|o| o.name != subnet.name) {
            if let Some((p6, _)) = other.v6 {
                netns::ip_in(&ns, &["-6", "route", "add", &p6.to_string(), "via", &gw6.to_string()])?;
            }
        }
        netns::ip_in(&ns, &["-6", "route", "add", &pool6.to_string(), "via", &gw6.to_string()])?;
        // As for IPv4: afpacket forwards in the router; tun lets the kernel forward, and
        // IPv6, never tunnelled, needs nothing else of the router there.
        let fwd = if opts.dataplane == DataplaneMode::Afpacket { "0" } else { "1" };
        netns::sysctl_in(&ns, "net.ipv6.conf.all.forwarding", fwd)?;
        node_addrs.push(addr6.to_string());
    }
    // The node's own traffic (later: BGP) reaches other subnets through the underlay.
    for other in topo.subnets.iter().filter(|o| o.name != subnet.name) {
        netns::ip_in(&ns, &["route", "add", &other.prefix.to_string(), "via", &subnet.gateway.to_string()])?;
    }
    match opts.dataplane {
        // Forwarding is ours: the kernel must not forward a second copy.
        DataplaneMode::Afpacket => netns::sysctl_in(&ns, "net.ipv4.ip_forward", "0")?,
        // The kernel forwards; tunnelled blocks are routed into our tunl0. As on a Calico
        // node, a default route lets proxy ARP answer for 169.254.1.1 (the underlay router
        // has no route out of the lab, so nothing leaves it).
        DataplaneMode::Tun => {
            netns::sysctl_in(&ns, "net.ipv4.ip_forward", "1")?;
            netns::ip_in(&ns, &["route", "add", "default", "via", &subnet.gateway.to_string()])?;
        }
    }
    st.hosts.push(Host {
        name: node.name.clone(),
        role: Role::Node,
        namespace: ns.clone(),
        addresses: node_addrs,
        parent: Some(subnet.name.clone()),
        interface: Some("eth0".into()),
    });
    Ok(Member { subnet: node.subnet, ns, dev: "eth0".into(), addr: node.address.addr() })
}

/// A pod of `node`, wired as Calico wires one.
fn add_pod(
    lab: &Lab,
    topo: &Topology,
    opts: &UpOptions,
    st: &mut State,
    node: &topology::Node,
    pod: &topology::Pod,
) -> anyhow::Result<PodConfig> {
    let v6 = topo.pool_v6.is_some();
    let (ns, subnet) = (lab.ns(&node.name), &topo.subnets[node.subnet]);
    let pns = lab.ns(&pod.name);
    add_ns(lab, st, &pns, v6)?;
    let host_mac = encap::icmpv6::CALICO_HOST_MAC.to_string();
    let mut add = vec!["link", "add", &pod.iface];
    if v6 && opts.dataplane == DataplaneMode::Tun {
        // Calico's host-end MAC: the kernel's own link-local address there is then
        // the pods' IPv6 gateway.
        add.extend(["address", &host_mac]);
    }
    add.extend(["type", "veth", "peer", "name", "eth0", "netns", &pns]);
    netns::ip_in(&ns, &add)?;
    netns::ip_in(&ns, &["link", "set", &pod.iface, "up"])?;
    if opts.dataplane == DataplaneMode::Tun {
        // Calico's way: the kernel answers the pod's ARP for 169.254.1.1.
        netns::sysctl_in(&ns, &format!("net.ipv4.conf.{}.proxy_arp", pod.iface), "1")?;
        // And at once, as Calico sets it: by default the kernel holds a proxy ARP
        // answer back for up to 0.8 s, which a pod's first packet would wait out.
        netns::sysctl_in(&ns, &format!("net.ipv4.neigh.{}.proxy_delay", pod.iface), "0")?;
    }
    // As in Calico, the node's kernel knows its pods (flags UH), so the node itself can
    // reach them; it does not forward for them. `replace`: a running node that serves the
    // pod may have made its own as soon as the link came up.
    netns::ip_in(&ns, &["route", "replace", &format!("{}/32", pod.address), "dev", &pod.iface, "scope", "link"])?;
    // Strict reverse-path filtering, as Felix sets it: the kernel takes from a pod's
    // interface only the source that routes back to it, the pod's own /32.
    netns::sysctl_in(&ns, &format!("net.ipv4.conf.{}.rp_filter", pod.iface), "1")?;
    netns::ip_in(&pns, &["addr", "add", &format!("{}/32", pod.address), "dev", "eth0"])?;
    // Room for the outer header when IPIP may be used (1480 on a 1500 underlay).
    let pod_mtu = subnet.mtu - tunnel_overhead(topo);
    netns::ip_in(&pns, &["link", "set", "eth0", "mtu", &pod_mtu.to_string(), "up"])?;
    netns::ip_in(&pns, &["route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"])?;
    netns::ip_in(&pns, &["route", "add", "default", "via", "169.254.1.1", "dev", "eth0"])?;
    // Pods keep their TX offloads (checksum, TSO), as on a real host: the router
    // reads the resulting partial checksums and super-packets with PACKET_VNET_HDR.
    if !opts.pod_offload {
        let exe = opts.exe.to_string_lossy();
        netns::exec_in(&pns, &[&exe, "internal", "tx-checksum-off", "eth0"])?;
    }
    let mut pod_addrs = vec![format!("{}/32", pod.address)];
    if let Some(a6) = pod.address_v6 {
        // As Calico wires a pod: a /128, and the default route via the link-local
        // address the host end answers for (here: the router, by proxy NDP).
        netns::ip_in(&ns, &["-6", "route", "replace", &format!("{a6}/128"), "dev", &pod.iface])?;
        netns::ip_in(&pns, &["-6", "addr", "add", &format!("{a6}/128"), "dev", "eth0", "nodad"])?;
        let gw6 = encap::icmpv6::CALICO_GATEWAY.to_string();
        netns::ip_in(&pns, &["-6", "route", "add", "default", "via", &gw6, "dev", "eth0"])?;
        pod_addrs.push(format!("{a6}/128"));
    }
    st.hosts.push(Host {
        name: pod.name.clone(),
        role: Role::Pod,
        namespace: pns,
        addresses: pod_addrs,
        parent: Some(node.name.clone()),
        interface: Some(pod.iface.clone()),
    });
    Ok(PodConfig {
        name: pod.name.clone(),
        interface: pod.iface.clone(),
        address: pod.address,
        address6: pod.address_v6,
        container: None,
    })
}

/// A host's interface on an underlay subnet.
struct Member {
    subnet: usize,
    ns: String,
    dev: String,
    addr: std::net::Ipv4Addr,
}

/// The MAC of a lab host's underlay interface: locally administered, from its address, so
/// that it is known before the host exists.
fn underlay_mac(a: std::net::Ipv4Addr) -> String {
    let [b0, b1, b2, b3] = a.octets();
    format!("02:72:{b0:02x}:{b1:02x}:{b2:02x}:{b3:02x}")
}

/// Every host on an underlay subnet knows every other one's MAC from the start (permanent
/// entries). Why: the kernel keeps one neighbour table for all network namespaces, and its
/// dynamic entries are capped machine-wide (`gc_thresh3`, 1024 by default); a full mesh of
/// 50 nodes alone needs more than that, and past the cap the kernel drops the nodes' BGP and
/// etcd packets. Permanent entries do not count against it. The routers' own neighbour
/// tables (userspace, per node) still resolve next hops with ARP as before.
fn static_neighbours(segment: &[Member]) -> anyhow::Result<()> {
    for m in segment {
        let lines: String = segment
            .iter()
            .filter(|o| o.subnet == m.subnet && o.addr != m.addr)
            .map(|o| format!("neigh replace {} lladdr {} dev {} nud permanent\n", o.addr, underlay_mac(o.addr), m.dev))
            .collect();
        if !lines.is_empty() {
            netns::ip_batch_in(&m.ns, &lines)?;
        }
    }
    Ok(())
}

/// Waits until every node's sessions with other nodes are Established and every node has
/// learned every other node's block, so that a lab that says "up" routes pod traffic.
fn wait_converged(topo: &Topology, st: &State) -> anyhow::Result<()> {
    let within = Duration::from_secs(30) + start_patience(st.daemons.len());
    let deadline = Instant::now() + within;
    // What keeps one node from having converged, or None.
    let check = |d: &state::Daemon| -> Option<String> {
        let node = admin::Client::new(&d.socket);
        let peers = node.bgp_status().map(|s| s.peers).unwrap_or_default();
        let stuck: Vec<String> = peers
            .iter()
            .filter(|p| !p.external && p.state != "up")
            .map(|p| format!("{} {}", p.peer, p.state))
            .collect();
        // Nodes that learn only from external peers (an outside route reflector) converge
        // when those peers run; that is the caller's business.
        let node_peers = peers.iter().any(|p| !p.external);
        let routes: std::collections::HashSet<String> =
            node.routes().unwrap_or_default().into_iter().map(|r| r.prefix.to_string()).collect();
        let missing: Vec<String> = topo
            .nodes
            .iter()
            .filter(|n| n.name != d.node)
            .map(|n| n.block.to_string())
            .filter(|b| node_peers && !routes.contains(b))
            .collect();
        // In tun mode the kernel forwards: its routes, installed in the background, count.
        let kernel = node.status().is_ok_and(|s| s.kernel_routes_synced);
        (!stuck.is_empty() || !missing.is_empty() || !kernel).then(|| {
            format!(
                "{}: sessions not up [{}], blocks not learned [{}]{}",
                d.node,
                stuck.join(", "),
                missing.join(", "),
                if kernel { "" } else { ", kernel routes not yet installed" }
            )
        })
    };
    // A node seen converged is asked again only once every node has been: a 100-node lab
    // then costs the nodes still busy converging a few hundred admin calls, not thousands.
    let mut done = vec![false; st.daemons.len()];
    loop {
        let mut waiting = Vec::new();
        let all_seen = done.iter().all(|&d| d);
        for (i, d) in st.daemons.iter().enumerate() {
            if done[i] && !all_seen {
                continue;
            }
            match check(d) {
                None => done[i] = true,
                Some(why) => {
                    done[i] = false;
                    waiting.push(why);
                }
            }
        }
        if all_seen && waiting.is_empty() {
            return Ok(());
        }
        if waiting.is_empty() {
            continue; // the confirming sweep, at once
        }
        if Instant::now() > deadline {
            bail!(
                "BGP did not converge within {} s:\n{}\n(see `router status --node NODE` and the node logs in {})",
                within.as_secs(),
                waiting.join("\n"),
                st.daemons
                    .first()
                    .map_or(String::new(), |d| d.log.parent().map_or(String::new(), |p| p.display().to_string()))
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the nodes of a lab on etcd read the secrets its BGP peers' passwords name: a
/// private directory of the lab, laid out as a Kubernetes secret volume.
pub fn secrets_dir(lab: &Lab) -> PathBuf {
    lab.dir.join("secrets")
}

/// A one-member etcd in namespace `ns` with its data in `data_dir`, serving clients on
/// `url` (`http://ADDR:2379`) and on the namespace's loopback: the lab's, and the tests'.
pub fn etcd_command(ns: &str, data_dir: &Path, url: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, "etcd", "--name", "lab", "--data-dir"])
        .arg(data_dir)
        .args(["--listen-client-urls", &format!("{url},http://127.0.0.1:2379"), "--advertise-client-urls", url])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380"])
        .args(["--initial-cluster", "lab=http://127.0.0.1:2380"]);
    c
}

/// Starts the lab's etcd in its namespace, on the data it has (its log appended to); its pid.
fn spawn_etcd(lab: &Lab, ns: &str, url: &str) -> anyhow::Result<i32> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(lab.dir.join(ETCD_LOG))
        .context("creating etcd.log")?;
    let child = etcd_command(ns, &lab.dir.join("etcd"), url)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting etcd (Debian package etcd-server)")?;
    Ok(child.id() as i32)
}

const ETCD_LOG: &str = "etcd.log";

/// Whether `pid` is the lab's etcd still.
fn is_etcd(pid: i32) -> bool {
    let args = live_args(pid);
    args.first().is_some_and(|p| p == b"etcd" || p.ends_with(b"/etcd"))
}

/// The command line of the live process `pid` (none for one gone, or a zombie).
fn live_args(pid: i32) -> Vec<Vec<u8>> {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(c) if alive(pid) => c.split(|b| *b == 0).map(<[u8]>::to_vec).collect(),
        _ => Vec::new(),
    }
}

/// Whether the lab's etcd answers a read, asked from its own namespace.
fn etcd_answers(ns: &str, exe: &Path) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args(["get", "ippool", "--etcd-endpoints", "http://127.0.0.1:2379"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops the lab's etcd if it runs and starts it again on the same data: the nodes keep
/// forwarding meanwhile and catch up on what changed once it answers.
fn restart_etcd(lab: &Lab, st: &mut State, exe: &Path) -> anyhow::Result<Restarted> {
    let Some(etcd) = st.etcd.clone() else { bail!("lab {:?} has no etcd", lab.name) };
    let t0 = Instant::now();
    let old = etcd.pid.filter(|p| is_etcd(*p));
    if let Some(p) = old {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGTERM);
        if !wait_gone(&[p], Duration::from_secs(10)) {
            bail!("etcd (pid {p}) did not stop within 10 s; its log: {}", lab.dir.join(ETCD_LOG).display());
        }
    }
    let pid = spawn_etcd(lab, &etcd.namespace, &etcd.url)?;
    if let Some(e) = st.etcd.as_mut() {
        e.pid = Some(pid);
    }
    st.save(&lab.dir)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !etcd_answers(&etcd.namespace, exe) {
        if !alive(pid) || Instant::now() > deadline {
            bail!("etcd did not come back; its log: {}", lab.dir.join(ETCD_LOG).display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Restarted::Datastore { old, new: pid, took: t0.elapsed() })
}

/// The lab's etcd: a host on the first subnet (its second address), etcd listening there and
/// on its loopback, the topology loaded as Calico resources before any node starts (a node
/// that found an empty store would have no cluster to follow).
fn start_etcd(lab: &Lab, topo: &Topology, opts: &UpOptions, st: &mut State) -> anyhow::Result<Member> {
    let subnet = &topo.subnets[0];
    let taken: Vec<std::net::Ipv4Addr> = topo.nodes.iter().map(|n| n.address.addr()).chain([subnet.gateway]).collect();
    let Some(addr) = subnet.prefix.hosts().find(|a| !taken.contains(a)) else {
        bail!("subnet {} has no free address for the lab's etcd", subnet.prefix);
    };
    let ns = lab.ns("etcd");
    add_ns(lab, st, &ns, false)?;
    let sw = lab.ns(&format!("sw-{}", subnet.name));
    netns::ip_in(&sw, &["link", "add", "to-etcd", "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
    netns::ip_in(&sw, &["link", "set", "to-etcd", "master", "br0", "up"])?;
    netns::ip_in(&ns, &["addr", "add", &format!("{addr}/{}", subnet.prefix.prefix_len()), "dev", "eth0"])?;
    netns::ip_in(&ns, &["link", "set", "eth0", "address", &underlay_mac(addr), "up"])?;
    netns::ip_in(&ns, &["route", "add", "default", "via", &subnet.gateway.to_string()])?;
    let url = format!("http://{addr}:2379");
    let pid = spawn_etcd(lab, &ns, &url)?;
    st.hosts.push(Host {
        name: "etcd".into(),
        role: Role::Datastore,
        namespace: ns.clone(),
        addresses: vec![format!("{addr}/{}", subnet.prefix.prefix_len())],
        parent: Some(subnet.name.clone()),
        interface: Some("eth0".into()),
    });
    st.etcd = Some(state::EtcdHost { namespace: ns.clone(), url, pid: Some(pid) });
    st.save(&lab.dir)?;
    let all = resources::from_topology(topo);
    for l in all.left_out {
        eprintln!("note: the datastore cannot hold {l}");
    }
    // The BGP passwords, where every node reads them (one machine: one secret for all).
    for (key, pw) in &all.secrets {
        nodeapi::secrets::write(&secrets_dir(lab), resources::SECRET, key, pw)
            .with_context(|| format!("writing the secret {}/{key}", resources::SECRET))?;
    }
    let yaml = datastore::resources::to_yaml(&all.resources);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut c = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(&opts.exe)
            .args(["apply", "-f", "-", "--etcd-endpoints", "http://127.0.0.1:2379"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("loading the topology into etcd")?;
        if let Some(mut i) = c.stdin.take() {
            std::io::Write::write_all(&mut i, yaml.as_bytes())?;
        }
        let out = c.wait_with_output()?;
        if out.status.success() {
            seed_ipam(topo, &ns)?;
            return Ok(Member { subnet: 0, ns, dev: "eth0".into(), addr });
        }
        if Instant::now() > deadline {
            bail!(
                "etcd did not take the topology within 20 s: {} (its log: {})",
                String::from_utf8_lossy(&out.stderr).trim(),
                lab.dir.join("etcd.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The topology's blocks and pods into the lab's etcd IPAM, so that containers get the
/// addresses the pods do not hold. From a thread inside etcd's host (setns is per thread).
fn seed_ipam(topo: &Topology, ns: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let nodes = topo.nodes.clone();
    std::thread::spawn(move || -> anyhow::Result<()> {
        let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).context("entering etcd's host")?;
        let ipam = datastore::ipam::Ipam::new(datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()])?);
        // Every block to its node first: a pod whose address is in another node's block
        // borrowed it, given to the pod's node in its owner's block.
        for n in &nodes {
            ipam.claim(&n.name, n.block)?;
            if let Some((_, block6)) = n.v6 {
                ipam.claim(&n.name, block6)?;
            }
        }
        for n in &nodes {
            for p in &n.pods {
                let handle = cni::pod_handle(&p.name);
                match nodes.iter().find(|o| o.block.contains(&p.address)) {
                    Some(o) if o.name == n.name => ipam.assign(&n.name, &handle, p.address, o.block)?,
                    Some(_) => ipam.assign_borrowed::<ipnet::Ipv4Net>(&n.name, &handle, p.address)?,
                    None => {}
                }
                // Dual stack: the pod's /128, from its own node's IPv6 block.
                let Some(a) = p.address_v6 else { continue };
                if let Some(block6) = n.v6.map(|v| v.1).filter(|b| b.contains(&a)) {
                    ipam.assign(&n.name, &handle, a, block6)?;
                }
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("seeding the IPAM panicked"))?
}

/// The node's config: BGP sessions as Calico would set them up (full mesh, or every node
/// with the route reflectors), external peers, and static routes only for the underlay's
/// other subnets. Pod blocks are learned over BGP; the node decides direct or IPIP per route.
fn node_config(
    lab: &Lab,
    topo: &Topology,
    node: &topology::Node,
    pods: Vec<PodConfig>,
    opts: &UpOptions,
    mode: IpipMode,
) -> NodeConfig {
    let subnet = &topo.subnets[node.subnet];
    let mut routes = Vec::new();
    for s in topo.subnets.iter().filter(|s| s.name != subnet.name) {
        routes.push(StaticRoute { prefix: s.prefix, action: StaticAction::Via(subnet.gateway) });
    }
    NodeConfig {
        name: node.name.clone(),
        dataplane: opts.dataplane,
        workers: opts.workers,
        // Every node of the lab shares the same few cores, and each would pin its first
        // worker to the same one; the scheduler spreads them better.
        pin_workers: false,
        worker_nice: opts.worker_nice,
        gro: opts.gro,
        udp_gso: opts.udp_gso,
        transit_filter: opts.transit_filter,
        admin_socket: lab.socket(&node.name),
        uplink: Uplink { interface: "eth0".into(), address: node.address },
        blocks: vec![node.block],
        pools: vec![Pool {
            cidr: topo.pool,
            ipip_mode: mode,
            vxlan_mode: topo.vxlan_mode,
            nat_outgoing: topo.nat_outgoing,
            disable_bgp_export: topo.disable_bgp_export,
        }],
        pods,
        routes,
        ipip_ttl: 64,
        ipip_peers: topo.nodes.iter().filter(|o| o.name != node.name).map(|o| o.address.addr()).collect(),
        ipip_allowed_sources: Vec::new(),
        bgp: Some(bgp_config(topo, node)),
        metrics_address: opts.metrics.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9091))),
        log_level: None,
        etcd_endpoints: Vec::new(),
        etcd_tls: Default::default(),
        secrets_dir: None,
        ipv6: node.v6.map(|(address, block)| Ipv6Config {
            address,
            gateway: subnet.v6.map(|(_, g)| g),
            routes: topo.subnets.iter().filter(|s| s.name != subnet.name).filter_map(|s| Some(s.v6?.0)).collect(),
            pools: topo.pool_v6.into_iter().collect(),
            blocks: vec![block],
            nodes: topo.nodes.iter().filter(|o| o.name != node.name).filter_map(|o| Some(o.v6?.0.addr())).collect(),
            nat_outgoing: topo.pool_v6.filter(|_| topo.nat_outgoing_v6).into_iter().collect(),
            disable_bgp_export: Vec::new(),
        }),
    }
}

/// Who `node` peers with. Calico: one session per node pair, the higher address passive.
fn bgp_config(topo: &Topology, node: &topology::Node) -> BgpConfig {
    let me = node.address.addr();
    let others: Vec<nodeapi::config::ClusterNode> = topo
        .nodes
        .iter()
        .filter(|o| o.name != node.name)
        .map(|o| nodeapi::config::ClusterNode {
            address: o.address.addr(),
            reflector: o.route_reflector_cluster_id,
            as_number: topo.as_of(o),
            port: 179,
        })
        .collect();
    let mut peers = nodeapi::config::cluster_peers(
        me,
        node.route_reflector_cluster_id,
        &others,
        topo.node_to_node_mesh,
        topo.node_mesh_max_restart_time,
        topo.node_mesh_password.as_deref(),
    );
    for p in topo.bgp_peers.iter().filter(|p| p.node.as_ref().is_none_or(|n| n == &node.name)) {
        peers.push(BgpPeer {
            address: p.peer_ip,
            as_number: p.as_number,
            port: 179,
            // As calicoctl names a BGPPeer with a node: "node specific"; without, "global".
            kind: if p.node.is_some() { PeerKind::NodeSpecific } else { PeerKind::Global },
            external: true,
            passive: false,
            password: p.password.clone(),
            ttl_security: p.ttl_security,
            filters: p.filters.clone(),
            max_prefixes: p.max_prefixes,
            restart_time: p.max_restart_time,
            keepalive_time: p.keepalive_time,
            allow_local_as: p.num_allowed_local_as_numbers,
            keep_original_next_hop: p.keep_original_next_hop,
            reachable_by: p.reachable_by,
            any_source: false,
        });
    }
    BgpConfig {
        as_number: topo.as_of(node),
        router_id: Some(me),
        port: 179,
        hold_time: topo.bgp_hold_time,
        connect_retry_secs: 2,
        graceful_restart_secs: 120,
        max_stale_secs: 300,
        route_reflector_cluster_id: node.route_reflector_cluster_id,
        peers,
        // Every node gets every filter: the peers that name them decide where they apply.
        filters: topo.bgp_filters.clone(),
        prefix_advertisements: topo.prefix_advertisements.clone(),
        service_ips: topo.service_ips(),
        listen_all: false,
    }
}

fn spawn_node(ns: &str, exe: &Path, config: &Path, log: &Path) -> anyhow::Result<i32> {
    // Appended to: a restarted node's log goes on after its predecessor's.
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    // `ip netns exec` execs the program, so the child's pid is the node's pid. Its own
    // process group keeps a Ctrl-C at the terminal from reaching the daemons.
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .arg("node")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {} in {ns}", exe.display()))?;
    Ok(child.id() as i32)
}

pub(crate) fn alive(pid: i32) -> bool {
    // A zombie (exited, not yet reaped) is not alive.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits up to `within` for every pid to exit; whether they all did.
pub(crate) fn wait_gone(pids: &[i32], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while pids.iter().any(|p| alive(*p)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

fn log_tail(p: &Path) -> String {
    let t = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// How much longer than a small lab's a lab of `nodes` nodes may take to start: every node
/// starting changes links, routes and tc filters under the kernel's one routing lock, so
/// with a hundred of them one node may wait longer for its turn than a small lab's 15 s
/// (seen on two cores).
fn start_patience(nodes: usize) -> Duration {
    Duration::from_millis(300 * nodes as u64)
}

/// Waits until a node answers on its admin socket: 15 s, and `patience` more in a big lab.
fn wait_ready(d: &Daemon, patience: Duration) -> anyhow::Result<()> {
    let within = Duration::from_secs(15) + patience;
    let deadline = Instant::now() + within;
    loop {
        if admin::Client::new(&d.socket).status().is_ok() {
            return Ok(());
        }
        if !alive(d.pid) {
            bail!(
                "node {} exited during start; its log ({}) ends with:\n{}",
                d.node,
                d.log.display(),
                log_tail(&d.log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "node {} did not answer on {} within {} s; its log ({}) ends with:\n{}",
                d.node,
                d.socket.display(),
                within.as_secs(),
                d.log.display(),
                log_tail(&d.log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `d.pid` is still that node's daemon, not a pid reused by another process: by the
/// config path it was started with (`… node --config PATH`), whatever the binary is called.
fn is_daemon(d: &Daemon) -> bool {
    let config = d.config.as_os_str().as_encoded_bytes();
    live_args(d.pid).windows(3).any(|w| w[0] == b"node" && w[1] == b"--config" && w[2] == config)
}

/// What `restart` did.
#[derive(Debug, Clone)]
pub enum Restarted {
    /// The running daemon handed over: `gap` is how long the node did not answer.
    Graceful { old: i32, new: i32, gap: Duration },
    /// The lab's etcd started again (`old`: the one stopped first, if it ran), answering
    /// after `took`.
    Datastore { old: Option<i32>, new: i32, took: Duration },
    /// The daemon had exited (a crash, a kill): a new one was started with the same config,
    /// answering after `took`. Its peers kept its routes meanwhile if it came back within
    /// their restart time, as for any BGP speaker that died (graceful restart helpers).
    Started { old: i32, new: i32, took: Duration, log: PathBuf },
}

/// A planned restart of one node's daemon: it saves its routes and exits without a
/// NOTIFICATION to its peers; a new daemon with the same config takes over. A daemon that
/// is no longer running is started again.
pub fn restart(lab: &Lab, node: &str, exe: &Path) -> anyhow::Result<Restarted> {
    let _held = lab.lock()?;
    enter(lab)?;
    require_root("`router lab restart`")?;
    let Some(mut st) = lab.state()? else {
        bail!("no lab named {:?} is up; start it with `router lab up`", lab.name);
    };
    if node == "etcd" && st.etcd.is_some() {
        return restart_etcd(lab, &mut st, exe);
    }
    let Some(i) = st.daemons.iter().position(|d| d.node == node) else {
        let nodes: Vec<&str> = st.daemons.iter().map(|d| d.node.as_str()).collect();
        let etcd = if st.etcd.is_some() { ", and etcd" } else { "" };
        bail!("lab {:?} has no node {node:?}; nodes: {}{etcd}", lab.name, nodes.join(", "));
    };
    let old = st.daemons[i].clone();
    let t0 = Instant::now();
    let running = is_daemon(&old);
    if !running && admin::Client::new(&old.socket).status().is_ok() {
        // A daemon the state does not know (started by hand?) would keep the socket, and
        // its answer would pass for the new one's.
        bail!(
            "{node} answers on {}, but not from the daemon the lab started (pid {}); `router lab down` stops both",
            old.socket.display(),
            old.pid
        );
    }
    if running {
        admin::Client::new(&old.socket).graceful_restart().context(format!("asking {node} to restart gracefully"))?;
        if !wait_gone(&[old.pid], Duration::from_secs(10)) {
            bail!("{node} (pid {}) did not stop within 10 s; its log: {}", old.pid, old.log.display());
        }
    }
    // A daemon just killed may still be closing its admin socket in its last threads; the new
    // one's bind waits for that (`nodeapi::admin::bind`), and `wait_ready` asks for an answer,
    // which only the new one gives.
    let pid = spawn_node(&lab.ns(node), exe, &old.config, &old.log)?;
    st.daemons[i].pid = pid;
    st.save(&lab.dir)?;
    wait_ready(&st.daemons[i], Duration::ZERO)?;
    let (new, gap) = (pid, t0.elapsed());
    Ok(if running {
        Restarted::Graceful { old: old.pid, new, gap }
    } else {
        Restarted::Started { old: old.pid, new, took: gap, log: old.log }
    })
}

/// What `down` removed.
#[derive(Debug, Default)]
pub struct DownReport {
    pub namespaces: usize,
    pub processes: usize,
    pub existed: bool,
}

/// Stops the lab's daemons, kills whatever else runs in its namespaces, deletes them.
pub fn down(lab: &Lab) -> anyhow::Result<DownReport> {
    let _held = lab.lock()?;
    down_locked(lab)
}

fn down_locked(lab: &Lab) -> anyhow::Result<DownReport> {
    let mut report = DownReport::default();
    if let Some(k) = userns::Keeper::load(&lab.dir)? {
        // A rootless lab: ending its user namespace's processes frees every namespace in it.
        let st = lab.state()?;
        let daemons: Vec<i32> = st.iter().flat_map(|s| s.daemons.iter().map(|d| d.pid)).collect();
        report.existed = true;
        report.processes = k.kill_all(&daemons);
        report.namespaces = st.map_or(0, |s| s.namespaces.len());
        if !k.processes().is_empty() {
            bail!("some processes of the lab's user namespace did not end; state kept in {}", lab.dir.display());
        }
        std::fs::remove_dir_all(&lab.dir).with_context(|| format!("removing {}", lab.dir.display()))?;
        return Ok(report);
    }
    let Some(st) = lab.state()? else {
        return Ok(report);
    };
    require_root("`router lab down`")?;
    report.existed = true;
    // Containers first, while their nodes still answer the plugin's DEL.
    containers::remove_all(lab, &st);
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let daemons: Vec<i32> = st.daemons.iter().filter(|d| is_daemon(d)).map(|d| d.pid).collect();
    for &p in &daemons {
        let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
    }
    wait_gone(&daemons, Duration::from_secs(3));
    for &p in &daemons {
        if alive(p) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    report.processes += daemons.len();
    let mut errors = Vec::new();
    for ns in st.namespaces.iter().rev() {
        if !netns::exists(ns) {
            continue;
        }
        match netns::remove(ns) {
            Ok(killed) => {
                report.processes += killed;
                report.namespaces += 1;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    // An interrupted `lab up` can leave an `ip netns add` child that finishes after the pass
    // above: look once more.
    std::thread::sleep(Duration::from_millis(200));
    for ns in st.namespaces.iter().filter(|n| netns::exists(n)) {
        match netns::remove(ns) {
            Ok(_) => report.namespaces += 1,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("some namespaces could not be removed (state kept in {}):\n{}", lab.dir.display(), errors.join("\n"));
    }
    std::fs::remove_dir_all(&lab.dir).with_context(|| format!("removing {}", lab.dir.display()))?;
    Ok(report)
}

/// Runs `cmd` inside `host`'s namespace with the terminal attached; returns its exit code.
pub fn exec(lab: &Lab, host: &str, cmd: &[String]) -> anyhow::Result<i32> {
    let st = lab.running_state()?;
    let Some(h) = st.host(host) else {
        // A container is its runtime's to enter, on its node.
        if let Some((node, _)) = containers::served(&st).into_iter().find(|(_, p)| p.pod.name == host) {
            bail!("{host:?} is a container on {node}: `router lab exec {node} -- podman exec {host} COMMAND...`");
        }
        let names: Vec<&str> = st.hosts.iter().filter(|h| h.role != Role::Switch).map(|h| h.name.as_str()).collect();
        bail!("no host {host:?} in lab {:?}; hosts: {}", lab.name, names.join(", "));
    };
    if cmd.is_empty() {
        bail!("nothing to run: `router lab exec {host} -- COMMAND...`");
    }
    // A runtime in a user namespace of ours finds /var/lib/containers, /var/lib/cni, /run and
    // the cgroups read-only: it fails on the first of them, with a message that does not say
    // why. Said here instead (a user who set CONTAINERS_CONF up for it goes ahead).
    let rootless = userns::Keeper::load(&lab.dir)?.is_some();
    if rootless && containers::is_runtime(&cmd[0]) && std::env::var_os("CONTAINERS_CONF").is_none() {
        bail!(
            "{} needs a lab made by root: a container runtime keeps its images and network state under \
             /var/lib and /run and puts containers in cgroups, none of which this lab's user namespace may \
             write; as root, `router lab up` makes a lab where `podman run --network router` works",
            cmd[0]
        );
    }
    // As a shell or env would: 127 for a command that is not there, before any namespace is
    // entered (`ip netns exec` exits 1 for it, as for a command that ran and failed).
    if find_program(&cmd[0]).is_none() {
        eprintln!("{}: command not found", cmd[0]);
        return Ok(127);
    }
    enter(lab)?;
    require_root("`router lab exec`")?;
    let mut c = if containers::is_runtime(&cmd[0]) {
        containers::enter_net(&h.namespace)?;
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        c
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.namespace]).args(cmd);
        c
    };
    // On a node, podman finds the node's CNI network (unless told otherwise).
    if h.role == Role::Node && std::env::var_os("CONTAINERS_CONF").is_none() {
        c.env("CONTAINERS_CONF", containers::containers_conf(lab, host));
    }
    let status = c.status().with_context(|| format!("running {:?} in {}", cmd, h.namespace))?;
    use std::os::unix::process::ExitStatusExt as _;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(9)))
}

/// Where `program` is: itself when it names a path, else the first of `$PATH` that has it.
fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// One row of `lab status`.
#[derive(Debug, serde::Serialize)]
pub struct HostStatus {
    pub host: String,
    pub role: Role,
    pub namespace: String,
    pub addresses: Vec<String>,
    pub parent: Option<String>,
    pub interface: Option<String>,
    pub namespace_present: bool,
    /// For nodes: "running" (admin socket answers), "not answering", or "exited".
    pub daemon: Option<String>,
    /// The daemon's process while it lives.
    pub pid: Option<i32>,
}

pub fn status(lab: &Lab) -> anyhow::Result<(State, Vec<HostStatus>)> {
    let st = lab.running_state()?;
    // A rootless lab's namespaces are seen from inside it only; with its keeper gone, they are.
    let keeper = userns::Keeper::load(&lab.dir)?;
    if let Some(k) = keeper.as_ref().filter(|k| k.alive()) {
        k.enter()?;
    }
    let visible = keeper.is_none_or(|k| k.entered());
    let rows = st
        .hosts
        .iter()
        .map(|h| {
            let d = st.daemons.iter().find(|d| d.node == h.name);
            let mut pid = d.map(|d| d.pid);
            let mut daemon = d.map(|d| {
                if admin::Client::new(&d.socket).status().is_ok() {
                    "running".to_string()
                } else if alive(d.pid) {
                    "not answering".to_string()
                } else {
                    // An exited process's pid may be another's by now.
                    pid = None;
                    format!("exited (see {}; `router lab restart {}`)", d.log.display(), d.node)
                }
            });
            if let Some(e) = st.etcd.as_ref().filter(|_| h.role == Role::Datastore) {
                pid = e.pid.filter(|p| is_etcd(*p));
                daemon = Some(match pid {
                    Some(_) => "running".to_string(),
                    None => format!("exited (see {}; `router lab restart etcd`)", lab.dir.join(ETCD_LOG).display()),
                });
            }
            HostStatus {
                host: h.name.clone(),
                role: h.role,
                namespace: h.namespace.clone(),
                addresses: h.addresses.clone(),
                parent: h.parent.clone(),
                interface: h.interface.clone(),
                namespace_present: visible && netns::exists(&h.namespace),
                daemon,
                pid,
            }
        })
        .collect::<Vec<_>>();
    // Containers, as their nodes serve them, each after its node's pods.
    let mut rows = rows;
    for (node, p) in containers::served(&st) {
        let at = rows
            .iter()
            .rposition(|r| r.host == node || r.parent.as_deref() == Some(node.as_str()))
            .map_or(rows.len(), |i| i + 1);
        rows.insert(
            at,
            HostStatus {
                host: p.pod.name,
                role: Role::Container,
                namespace: String::new(),
                addresses: std::iter::once(format!("{}/32", p.pod.address))
                    .chain(p.pod.address6.map(|a| format!("{a}/128")))
                    .collect(),
                parent: Some(node),
                interface: Some(p.pod.interface),
                namespace_present: p.up,
                daemon: None,
                pid: None,
            },
        );
    }
    Ok((st, rows))
}
