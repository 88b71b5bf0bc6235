//! Starting and stopping the data plane: workers, and the slow-path thread that owns ARP
//! resolution (the [`NeighManager`]) and sends what waited for it.

use crate::counters::{Counters, Totals};
use crate::fib::FibHandle;
use crate::iface::{IfaceId, IfaceRole, Interface, Interfaces, MAX_IFACES};
use crate::neigh::{NeighAction, NeighConfig, NeighHandle, NeighManager};
use crate::pipeline::POD_GATEWAY;
use crate::worker::{Port, PortChange, PortMsg, SlowMsg, Worker, IDLE_WAIT, WAKE};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use encap::arp::{ArpRepr, Operation};
use encap::ethernet::{self, EtherType};
use encap::MacAddr;
use netsys::{PacketSocket, RawIpipSocket, TunQueue, UdpTunnelSocket};
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// Worker threads; each reads every interface through PACKET_FANOUT.
    pub workers: usize,
    /// Pin workers to cores (leaving the first core to the control thread when possible).
    pub pin: bool,
    pub neigh: NeighConfig,
    /// SO_RCVBUF per socket, so bursts wait in the kernel instead of being lost.
    pub rcvbuf: usize,
    /// Merge TCP segments on their way to a pod into super-packets (see `Worker::merge`).
    pub gro: bool,
    /// Send what goes into VXLAN from a TCP super-packet as UDP super-packets (see
    /// `pipeline::segment_vxlan`); off, or refused by the kernel, each segment is a frame.
    pub udp_gso: bool,
    /// The workers' nice value (see [`DEFAULT_WORKER_NICE`]).
    pub nice: i32,
    /// Fault injection, for the test of the node's supervision only: the first worker stops
    /// with an error this long after it started.
    pub fail_worker_after: Option<std::time::Duration>,
    /// Fault injection, for the test of the fallback only: the workers take every UDP
    /// super-packet as refused by the kernel (`EINVAL`), as a kernel before 6.2 refuses it.
    pub refuse_udp_gso: bool,
}

/// Workers run a little ahead of ordinary processes, as the kernel's own forwarding (in
/// softirq) runs ahead of all of them: where senders and the router share cores, a busy
/// sender then cannot take the CPU the router needs to carry what it sends. Much higher
/// and a worker preempts the sender at every packet, so its batches shrink (measured on
/// 2 cores: -5 carried 15% more 64-byte UDP with 1 worker than 0; -8 and -12 less than -5).
pub const DEFAULT_WORKER_NICE: i32 = -5;

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            workers: 1,
            pin: true,
            neigh: NeighConfig::default(),
            rcvbuf: 4 << 20,
            gro: true,
            udp_gso: true,
            nice: DEFAULT_WORKER_NICE,
            fail_worker_after: None,
            refuse_udp_gso: false,
        }
    }
}

/// One neighbour as shown by status commands.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NeighbourInfo {
    pub interface: String,
    pub ip: std::net::IpAddr,
    pub mac: Option<String>,
    /// incomplete, reachable or failed.
    pub state: String,
}

/// How the control thread reaches one worker: its port messages and its poll's waker.
#[derive(Debug)]
struct WorkerCtl {
    tx: Sender<PortMsg>,
    waker: mio::Waker,
}

/// A running data plane.
#[derive(Debug)]
pub struct Dataplane {
    ifaces: Arc<Interfaces>,
    workers: Vec<WorkerCtl>,
    slow_tx: Sender<SlowMsg>,
    rcvbuf: usize,
    counters: Vec<Arc<Counters>>,
    neighbours: Arc<Mutex<Vec<NeighbourInfo>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    tap: Arc<crate::tap::Tap>,
    tracer: Arc<crate::trace::Tracer>,
    /// Drops the control thread learns about from the kernel (the TUN queue).
    control: Arc<Counters>,
    /// The masquerade table the workers share.
    nat: Arc<crate::nat::Nat>,
    /// Held open so that the kernel does not answer IPIP with "protocol unreachable", nor
    /// VXLAN with "port unreachable" (afpacket: the router took its copy already).
    _ipip_guard: Option<RawIpipSocket>,
    _vxlan_guard: Option<UdpTunnelSocket>,
}

fn open_port(
    f: &crate::iface::Interface,
    node: Option<Ipv4Addr>,
    worker: usize,
    workers: usize,
    rcvbuf: usize,
) -> io::Result<Port> {
    let err = |e: io::Error| io::Error::new(e.kind(), format!("opening {} ({}): {e}", f.name, f.role.name()));
    match f.role {
        IfaceRole::Uplink { .. } | IfaceRole::Pod { .. } => {
            let group = (workers > 1).then_some((f.ifindex & 0xffff) as u16);
            // Sending on a socket of its own, which no epoll watches: every frame sent on the
            // receive socket woke its epoll entry again when the frame was freed.
            let rx = PacketSocket::open_rx(f.ifindex, group, rcvbuf).map_err(err)?;
            let tx = PacketSocket::open_tx_vnet(f.ifindex).map_err(err)?;
            Ok(Port::Packet { rx, tx })
        }
        // One queue per worker; the kernel spreads flows over the queues.
        IfaceRole::Tun => TunQueue::open(&f.name).map(Port::Tun).map_err(err),
        // Every raw socket gets a copy of every packet: only the first worker receives.
        IfaceRole::RawIpip => {
            let rx = worker == 0;
            RawIpipSocket::open(rx, rcvbuf).map(|sock| Port::Raw { sock, rx }).map_err(err)
        }
        // One per worker in a SO_REUSEPORT group: the kernel spreads flows over them.
        IfaceRole::VxlanUdp => {
            let Some(node) = node else {
                return Err(err(io::Error::new(io::ErrorKind::InvalidInput, "no node address to bind")));
            };
            let addr = std::net::SocketAddrV4::new(node, encap::vxlan::PORT);
            let sock = UdpTunnelSocket::open(addr, rcvbuf).map_err(err)?;
            // Without it the kernel cuts another node's super-packets for this socket.
            if let Err(e) = sock.enable_gro() {
                tracing::warn!(error = %e, "no UDP_GRO: VXLAN super-packets arrive one datagram at a time");
            }
            Ok(Port::Udp { sock, node })
        }
    }
}

impl Dataplane {
    /// Opens every socket first (so a missing interface or privilege fails here, with a clear
    /// error), then starts the threads.
    pub fn start(ifaces: Interfaces, fib: FibHandle, cfg: DataplaneConfig) -> io::Result<Dataplane> {
        let ifaces = Arc::new(ifaces);
        let stop = Arc::new(AtomicBool::new(false));
        let udp_gso = Arc::new(AtomicBool::new(cfg.udp_gso));
        let neigh = NeighHandle::default();
        let nat = Arc::new(crate::nat::Nat::default());
        let (slow_tx, slow_rx) = crossbeam_channel::bounded(4096);
        let cores = if cfg.pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
        let mut workers = Vec::new();
        let mut counters = Vec::new();
        let tap = Arc::new(crate::tap::Tap::default());
        let tracer = Arc::new(crate::trace::Tracer::default());
        let mut ctls = Vec::new();
        for index in 0..cfg.workers.max(1) {
            let mut ports = Vec::new();
            for (_, f) in ifaces.iter() {
                ports.push(Some(open_port(f, ifaces.node_addr(), index, cfg.workers.max(1), cfg.rcvbuf)?));
            }
            // Counters for every slot: interfaces added later count from the start.
            let c = Arc::new(Counters::new(MAX_IFACES));
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), WAKE)?;
            let (tx, ctl) = crossbeam_channel::unbounded();
            ctls.push(WorkerCtl { tx, waker });
            counters.push(c.clone());
            let core = match cores.len() {
                0 => None,
                1 => Some(cores[0]),
                n => Some(cores[(index + 1) % n]),
            };
            workers.push(Worker {
                index,
                core,
                ports,
                ifaces: ifaces.clone(),
                ctl,
                poll: Some(poll),
                fib: fib.clone(),
                neigh: neigh.clone(),
                counters: c,
                slow: slow_tx.clone(),
                stop: stop.clone(),
                tap: tap.clone(),
                tracer: tracer.clone(),
                nat: nat.clone(),
                gro: cfg.gro,
                udp_gso: udp_gso.clone(),
                nice: cfg.nice,
                fail_after: cfg.fail_worker_after.filter(|_| index == 0),
                refuse_udp_gso: cfg.refuse_udp_gso,
                vxlan_tx: Default::default(),
            });
        }
        let mut tx = Vec::new();
        for (_, f) in ifaces.iter() {
            tx.push(if f.role.is_ethernet() { Some(PacketSocket::open_tx(f.ifindex)?) } else { None });
        }
        let has_uplink = ifaces.iter().any(|(_, f)| matches!(f.role, IfaceRole::Uplink { .. }));
        let ipip_guard = if has_uplink { Some(RawIpipSocket::open(false, 0)?) } else { None };
        let vxlan_guard = match ifaces.node_addr().filter(|_| has_uplink) {
            Some(node) => {
                let addr = std::net::SocketAddrV4::new(node, encap::vxlan::PORT);
                // Without it VXLAN still flows; the senders just get an ICMP error per second.
                UdpTunnelSocket::guard(addr)
                    .inspect_err(|e| tracing::warn!(%addr, error = %e, "no VXLAN port guard: the kernel will answer VXLAN with port unreachable"))
                    .ok()
            }
            None => None,
        };
        let slow_counters = Arc::new(Counters::new(MAX_IFACES));
        counters.push(slow_counters.clone());
        let control = Arc::new(Counters::new(MAX_IFACES));
        counters.push(control.clone());
        let neighbours = Arc::new(Mutex::new(Vec::new()));
        let slow = SlowPath {
            rx: slow_rx,
            slow_tx: slow_tx.clone(),
            tx,
            ifaces: ifaces.clone(),
            manager: NeighManager::new(cfg.neigh),
            neigh,
            counters: slow_counters,
            neighbours: neighbours.clone(),
            stop: stop.clone(),
            nat: nat.clone(),
            tap: tap.clone(),
        };
        let mut threads = Vec::new();
        for w in workers {
            let name = format!("worker-{}", w.index);
            threads.push(std::thread::Builder::new().name(name).spawn(move || {
                if let Err(e) = w.run() {
                    tracing::error!(error = %e, "worker stopped");
                }
            })?);
        }
        threads.push(std::thread::Builder::new().name("slow-path".into()).spawn(move || slow.run())?);
        Ok(Dataplane {
            ifaces,
            workers: ctls,
            slow_tx,
            rcvbuf: cfg.rcvbuf,
            counters,
            neighbours,
            stop,
            threads,
            tap,
            tracer,
            control,
            nat,
            _ipip_guard: ipip_guard,
            _vxlan_guard: vxlan_guard,
        })
    }

    pub fn interfaces(&self) -> &Interfaces {
        &self.ifaces
    }

    /// Starts reading and serving a new interface (a pod that appeared) without stopping
    /// anything else: its sockets are opened first (an error changes nothing), then every
    /// worker and the slow path take it up; returns once every worker reads it.
    pub fn add_interface(&mut self, f: Interface) -> io::Result<IfaceId> {
        if let Some(id) = self.ifaces.by_name(&f.name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is already served (slot {})", f.name, id.0),
            ));
        }
        let Some((next, id)) = self.ifaces.with_added(f.clone()) else {
            return Err(io::Error::other(format!("no free interface slot for {} ({MAX_IFACES} in use)", f.name)));
        };
        let n = self.workers.len();
        let ports = (0..n)
            .map(|w| open_port(&f, self.ifaces.node_addr(), w, n, self.rcvbuf))
            .collect::<io::Result<Vec<_>>>()?;
        let tx = if f.role.is_ethernet() { Some(PacketSocket::open_tx(f.ifindex)?) } else { None };
        for c in &self.counters {
            c.reset_iface(usize::from(id.0));
        }
        let next = Arc::new(next);
        let slow = SlowMsg::Port { ifaces: next.clone(), id, tx };
        self.publish_port(next, id, ports.into_iter().map(PortChange::Open).collect(), slow);
        Ok(id)
    }

    /// A new MTU for an interface that stays served (the uplink's changed): every worker and
    /// the slow path take it up, their ports untouched; returns once every worker has.
    pub fn set_mtu(&mut self, id: IfaceId, mtu: u16) {
        let Some(f) = self.ifaces.get(id) else { return };
        if f.mtu == mtu {
            return;
        }
        let f = Interface { mtu, ..f.clone() };
        self.replace_interface(id, f, false);
    }

    /// Follows a new MAC address of an interface (`ip link set eth0 address …`): the
    /// workers take the frames sent to it, and no longer those to the old one, as the kernel
    /// does; the slow path announces it (gratuitous ARP, unsolicited neighbour
    /// advertisement), so that neighbours that cached the old one move at once instead of
    /// sending into the void until their caches expire.
    pub fn set_mac(&mut self, id: IfaceId, mac: MacAddr) {
        let Some(f) = self.ifaces.get(id) else { return };
        if f.mac == mac || !f.role.is_ethernet() {
            return;
        }
        let f = Interface { mac, ..f.clone() };
        self.replace_interface(id, f, true);
    }

    /// `id`'s entry, still served, replaced by `f`: every worker and the slow path take it
    /// up, their ports untouched (with `announce`, the slow path tells the link `f`'s MAC).
    fn replace_interface(&mut self, id: IfaceId, f: Interface, announce: bool) {
        let next = Arc::new(self.ifaces.with_replaced(id, f));
        let keep = (0..self.workers.len()).map(|_| PortChange::Keep).collect();
        let slow = match announce {
            true => SlowMsg::Announce(next.clone(), id),
            false => SlowMsg::Ifaces(next.clone()),
        };
        self.publish_port(next, id, keep, slow);
    }

    /// Stops serving an interface (a pod that went): once this returns no worker reads or
    /// sends on it, and its neighbours are forgotten.
    pub fn remove_interface(&mut self, id: IfaceId) {
        if self.ifaces.get(id).is_none() {
            return;
        }
        let next = Arc::new(self.ifaces.with_removed(id));
        let close = (0..self.workers.len()).map(|_| PortChange::Close).collect();
        let slow = SlowMsg::Port { ifaces: next.clone(), id, tx: None };
        self.publish_port(next, id, close, slow);
    }

    fn publish_port(&mut self, ifaces: Arc<Interfaces>, id: IfaceId, ports: Vec<PortChange>, slow: SlowMsg) {
        let (done, acks) = crossbeam_channel::unbounded();
        let mut waiting = 0;
        for (w, port) in self.workers.iter().zip(ports) {
            let m = PortMsg { ifaces: ifaces.clone(), id, port, done: done.clone() };
            if w.tx.send(m).is_ok() && w.waker.wake().is_ok() {
                waiting += 1;
            }
        }
        let _ = self.slow_tx.send(slow);
        // A worker answers at its next round; a dead one never does (supervision sees it).
        let deadline = Instant::now() + Duration::from_secs(2);
        for _ in 0..waiting {
            if acks.recv_deadline(deadline).is_err() {
                tracing::warn!(slot = id.0, "a worker did not take up an interface change in time");
                break;
            }
        }
        self.ifaces = ifaces;
    }

    /// Counters summed over all workers and the slow path.
    pub fn totals(&self) -> Totals {
        Totals::sum(self.ifaces.len(), self.counters.iter().map(|c| c.as_ref()))
    }

    /// Counts drops that happened in the kernel on our behalf (call from one thread only).
    pub fn count_kernel_drops(&self, reason: crate::counters::DropReason, n: u64) {
        self.control.count_drops(reason, n);
    }

    /// Where workers report trace probes.
    /// Masqueraded flows the node keeps now.
    pub fn nat_flows(&self) -> usize {
        self.nat.len()
    }

    pub fn tracer(&self) -> &crate::trace::Tracer {
        &self.tracer
    }

    /// The capture tap the workers copy frames to.
    pub fn tap(&self) -> &crate::tap::Tap {
        &self.tap
    }

    pub fn neighbours(&self) -> Vec<NeighbourInfo> {
        self.neighbours.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// A worker or the slow-path thread that has ended although nobody asked it to stop (an
    /// error or a panic): its name. A node without it forwards nothing, or resolves no next
    /// hop, while BGP would go on announcing its blocks.
    pub fn dead_thread(&self) -> Option<String> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        self.threads
            .iter()
            .find(|t| t.is_finished())
            .map(|t| t.thread().name().unwrap_or("a data-plane thread").to_string())
    }

    /// Stops all threads and waits for them.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Idle threads sleep up to `IDLE_WAIT`: wake them to see the flag.
        for w in &self.workers {
            let _ = w.waker.wake();
        }
        let _ = self.slow_tx.send(SlowMsg::Wake);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct SlowPath {
    rx: Receiver<SlowMsg>,
    /// Kept so that the channel never reads as disconnected while the data plane runs.
    #[allow(dead_code)]
    slow_tx: Sender<SlowMsg>,
    /// Send sockets of the Ethernet interfaces, indexed by `IfaceId`.
    tx: Vec<Option<PacketSocket>>,
    ifaces: Arc<Interfaces>,
    manager: NeighManager,
    neigh: NeighHandle,
    counters: Arc<Counters>,
    neighbours: Arc<Mutex<Vec<NeighbourInfo>>>,
    stop: Arc<AtomicBool>,
    nat: Arc<crate::nat::Nat>,
    /// What it sends (neighbour requests, packets held until they resolved) is captured as
    /// the workers' sends are: the first packet of a flow is in a capture too.
    tap: Arc<crate::tap::Tap>,
}

impl SlowPath {
    fn run(mut self) {
        let mut actions = Vec::new();
        let mut last_expiry = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now.duration_since(last_expiry) >= Duration::from_secs(1) {
                last_expiry = now;
                self.nat.expire();
            }
            let wait =
                self.manager.poll_timeout().map_or(IDLE_WAIT, |t| t.saturating_duration_since(now)).min(IDLE_WAIT);
            match self.rx.recv_timeout(wait) {
                Ok(SlowMsg::Resolve { iface, next_hop, frame }) => {
                    self.manager.on_miss(Instant::now(), iface, next_hop, frame, &mut actions)
                }
                Ok(SlowMsg::Learn(n)) => self.manager.on_learn(Instant::now(), n, &mut actions),
                Ok(SlowMsg::Port { ifaces, id, tx }) => {
                    let i = usize::from(id.0);
                    if self.tx.len() <= i {
                        self.tx.resize_with(i + 1, || None);
                    }
                    self.tx[i] = tx;
                    self.ifaces = ifaces;
                    self.manager.forget(id, &mut actions);
                }
                Ok(SlowMsg::Ifaces(ifaces)) => self.ifaces = ifaces,
                Ok(SlowMsg::Announce(ifaces, id)) => {
                    self.ifaces = ifaces;
                    self.announce(id);
                }
                Ok(SlowMsg::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.manager.on_tick(Instant::now(), &mut actions);
            self.apply(&mut actions);
        }
        crate::worker::close_all(std::mem::take(&mut self.tx).into_iter().flatten().collect());
    }

    fn apply(&mut self, actions: &mut Vec<NeighAction>) {
        let mut changed = false;
        for a in actions.drain(..) {
            match a {
                NeighAction::Request { iface, target, dst } => self.send_request(iface, target, dst),
                NeighAction::Transmit { iface, frame } => self.send(iface, &frame),
                NeighAction::Dropped { reason, count } => self.counters.count_drops(reason, count),
                NeighAction::Changed => changed = true,
            }
        }
        if changed {
            self.neigh.publish(self.manager.snapshot());
            let info = self
                .manager
                .entries()
                .into_iter()
                .map(|(i, ip, mac, state)| NeighbourInfo {
                    interface: self.ifaces.get(i).map(|f| f.name.clone()).unwrap_or_default(),
                    ip,
                    mac: mac.map(|m| m.to_string()),
                    state: state.to_string(),
                })
                .collect();
            if let Ok(mut n) = self.neighbours.lock() {
                *n = info;
            }
        }
    }

    /// Tells the link of `iface` the MAC address it has now, for the address we speak for
    /// there (the node's on the uplink, the pods' gateway on a pod link): a gratuitous ARP
    /// request, and for IPv6 an unsolicited advertisement with the override flag to all
    /// nodes. Neighbours update an entry they have from either (RFC 5227, RFC 4861 §7.2.6).
    fn announce(&self, iface: IfaceId) {
        use encap::icmpv6::{multicast_mac, Ndp};
        let Some(f) = self.ifaces.get(iface) else { return };
        let (v4, v6, router) = match f.role {
            IfaceRole::Uplink { addr } => (addr.addr(), self.ifaces.node_addr6(), false),
            IfaceRole::Pod { addr6, .. } => (POD_GATEWAY, addr6.map(|_| crate::pipeline::POD_GATEWAY6), true),
            IfaceRole::Tun | IfaceRole::RawIpip | IfaceRole::VxlanUdp => return,
        };
        self.send_request(iface, v4.into(), MacAddr::BROADCAST);
        let Some(src) = v6 else { return };
        let all_nodes = std::net::Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let na = Ndp::Advert { target: src, target_mac: Some(f.mac), router, solicited: false, override_: true };
        self.send_ndp(iface, f.mac, na, src, (all_nodes, multicast_mac(all_nodes)));
    }

    fn send_request(&self, iface: IfaceId, target: std::net::IpAddr, dst: MacAddr) {
        let target = match target {
            std::net::IpAddr::V4(a) => a,
            std::net::IpAddr::V6(a) => return self.send_solicitation(iface, a, dst),
        };
        let Some(f) = self.ifaces.get(iface) else {
            return;
        };
        // On a pod link we speak as the pod's gateway, the only address the pod knows there.
        let sender_ip = match f.role {
            IfaceRole::Uplink { addr } => addr.addr(),
            IfaceRole::Pod { .. } => POD_GATEWAY,
            IfaceRole::Tun | IfaceRole::RawIpip | IfaceRole::VxlanUdp => return,
        };
        let mut frame = [0u8; ethernet::HEADER_LEN + encap::arp::PACKET_LEN];
        ethernet::emit_header(&mut frame, dst, f.mac, EtherType::Arp);
        let req = ArpRepr {
            operation: Operation::Request,
            sender_mac: f.mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip: target,
        };
        req.emit(&mut frame[ethernet::HEADER_LEN..]);
        self.send(iface, &frame);
    }

    /// A neighbour solicitation for `target`: to its solicited-node group, or to `dst`
    /// itself when refreshing a known neighbour. On a pod link we speak as the pods'
    /// gateway, on the uplink with the node's IPv6 address.
    fn send_solicitation(&self, iface: IfaceId, target: std::net::Ipv6Addr, dst: MacAddr) {
        use encap::icmpv6::{multicast_mac, solicited_node, Ndp};
        let Some(f) = self.ifaces.get(iface) else {
            return;
        };
        let src = match f.role {
            IfaceRole::Uplink { .. } => match self.ifaces.node_addr6() {
                Some(a) => a,
                None => return,
            },
            IfaceRole::Pod { .. } => crate::pipeline::POD_GATEWAY6,
            IfaceRole::Tun | IfaceRole::RawIpip | IfaceRole::VxlanUdp => return,
        };
        let (dst_ip, dst_mac) = if dst == MacAddr::BROADCAST {
            let g = solicited_node(target);
            (g, multicast_mac(g))
        } else {
            (target, dst)
        };
        let ns = Ndp::Solicit { target, source_mac: Some(f.mac) };
        self.send_ndp(iface, f.mac, ns, src, (dst_ip, dst_mac));
    }

    /// Sends the NDP message `msg` from `src` (at `mac`) to `dst` (an address and its MAC).
    fn send_ndp(
        &self,
        iface: IfaceId,
        mac: MacAddr,
        msg: encap::icmpv6::Ndp,
        src: std::net::Ipv6Addr,
        dst: (std::net::Ipv6Addr, MacAddr),
    ) {
        let mut frame = [0u8; ethernet::HEADER_LEN + encap::ipv6::HEADER_LEN + 32];
        ethernet::emit_header(&mut frame, dst.1, mac, EtherType::Ipv6);
        let l4 = ethernet::HEADER_LEN + encap::ipv6::HEADER_LEN;
        let n = msg.emit(&mut frame[l4..], src, dst.0);
        let ip = encap::ipv6::Repr {
            src,
            dst: dst.0,
            next_header: encap::ipv6::NEXT_ICMPV6,
            traffic_class: 0,
            hop_limit: encap::icmpv6::NDP_HOP_LIMIT,
            payload_len: n,
        };
        ip.emit(&mut frame[ethernet::HEADER_LEN..]);
        self.send(iface, &frame[..l4 + n]);
    }

    fn send(&self, iface: IfaceId, frame: &[u8]) {
        let i = usize::from(iface.0);
        let Some(socket) = self.tx.get(i).and_then(|s| s.as_ref()) else {
            return self.counters.count_drop(crate::counters::DropReason::TxError);
        };
        // Copied before it leaves, as the workers do: an answer to it is never captured first.
        if self.tap.active() {
            self.tap.copy(iface, crate::tap::Direction::Tx, frame, true);
        }
        match socket.send(frame) {
            Ok(_) => self.counters.tx(i, frame.len()),
            Err(_) => self.counters.count_drop(crate::counters::DropReason::TxError),
        }
    }
}
