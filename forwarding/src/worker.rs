//! A data-plane worker: one thread pinned to a core, one port per interface (an AF_PACKET
//! socket in the interface's fanout group, a TUN queue, or the raw IPIP socket), preallocated
//! buffers, bounded batches.

use crate::counters::{Counters, DropReason};
use crate::fib::FibHandle;
use crate::iface::{IfaceId, IfaceRole, Interfaces};
use crate::neigh::{NeighHandle, Neighbour};
use crate::pipeline::{self, Context, Span, Verdict};
use crate::tap::{Direction, Tap};
use crate::trace::{self, Tracer};
use crossbeam_channel::{Sender, TrySendError};
use encap::gro;
use encap::gso::{self, VnetHdr};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use netsys::{PacketSocket, RawIpipSocket, TunQueue, UdpTunnelSocket};
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Room in front of a received frame, for headers pushed later (tunnels).
pub const HEADROOM: usize = 128;
/// Largest frame received: an offloaded IPv4 super-packet of up to 64 KiB behind an Ethernet
/// (and VLAN) header. Longer ones are counted as oversize.
pub const RX_MAX: usize = 65535 + 18;
/// Room for the segments cut from one super-packet, each with headroom and its own headers.
const SEGMENT_ROOM: usize = 256 * 1024;
/// Frames handled per port before the next port gets its turn (boringtun caps at 100).
const BATCH: usize = 64;

/// Reusable buffers of one batch: frames received, their lengths and offload headers, what
/// goes out where.
struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    hdrs: Vec<VnetHdr>,
    /// (egress, where the frame lies, span, offload header) of the frames to transmit.
    out: Vec<(IfaceId, Source, Span, VnetHdr)>,
    /// Segments of the super-packet being cut (or datagrams of a UDP one), and what became
    /// of each; UDP super-packets built for VXLAN, with their offload headers.
    seg: Vec<u8>,
    seg_out: Vec<Verdict>,
    tunnel_out: Vec<pipeline::SuperFrame>,
    /// Super-packets merged from the batch's TCP segments to a pod, and what one egress
    /// sends: frames from `bufs` (by index) or from `gro`.
    gro: Vec<u8>,
    send: Vec<(Source, Span, VnetHdr)>,
}

/// Where a frame to send lies: a received frame (by index), the segment room, the merge room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Buf(usize),
    Seg,
    Gro,
}

/// Room for the super-packets merged from one batch: its frames are at most 64 of a
/// 1500-byte MTU each, which is what a merge can take.
const GRO_ROOM: usize = 128 * 1024;

/// Work a worker hands to the slow path.
#[derive(Debug)]
pub enum SlowMsg {
    Resolve {
        iface: IfaceId,
        next_hop: std::net::IpAddr,
        frame: Vec<u8>,
    },
    Learn(Neighbour),
    /// An interface came (with its send socket, on Ethernet) or went (`None`): the slow path
    /// takes the new interface list and forgets the slot's neighbours.
    Port {
        ifaces: Arc<Interfaces>,
        id: IfaceId,
        tx: Option<PacketSocket>,
    },
    /// An interface's entry changed (its MTU): only the list is new.
    Ifaces(Arc<Interfaces>),
    /// An interface's MAC address changed: the new list, and the slow path tells the
    /// neighbours on that link.
    Announce(Arc<Interfaces>, IfaceId),
    /// The data plane is stopping: look at the stop flag now, not at the next timeout.
    Wake,
}

/// How long an idle thread of the data plane sleeps between looks at its timers: events
/// (packets, port changes, stop) wake it at once, so this only bounds what an idle node
/// costs. A hundred idle nodes on one machine must cost next to nothing.
pub const IDLE_WAIT: Duration = Duration::from_secs(1);

/// From the control thread to a worker: an interface came, went or changed. The worker
/// answers on `PortMsg::done` once it reads (or no longer reads) the port.
#[derive(Debug)]
pub struct PortMsg {
    pub ifaces: Arc<Interfaces>,
    pub id: IfaceId,
    pub port: PortChange,
    pub done: Sender<()>,
}

/// What becomes of a worker's port in a [`PortMsg`].
#[derive(Debug)]
pub enum PortChange {
    /// A new interface: read it through this port.
    Open(Port),
    /// The interface is gone.
    Close,
    /// Only the interface's entry changed (its MTU): the port stays.
    Keep,
}

/// The worker's wake-up token: above every interface's.
pub const WAKE: Token = Token(crate::iface::MAX_IFACES);

/// How a worker reaches one interface.
#[derive(Debug)]
pub enum Port {
    /// Ethernet frames (afpacket mode): received on `rx`, sent on `tx`.
    Packet { rx: PacketSocket, tx: PacketSocket },
    /// Bare IPv4 packets to and from the kernel (tun mode's `tunl0`).
    Tun(TunQueue),
    /// Outer IPIP packets (tun mode); `rx` false for a send-only socket.
    Raw { sock: RawIpipSocket, rx: bool },
    /// VXLAN datagrams to the node's address (tun mode), received only.
    Udp { sock: UdpTunnelSocket, node: std::net::Ipv4Addr },
}

impl Port {
    /// The port's sockets, each to be closed on its own (see [`close_all`]).
    fn into_parts(self) -> Vec<Box<dyn Send>> {
        match self {
            Port::Packet { rx, tx } => vec![Box::new(rx), Box::new(tx)],
            other => vec![Box::new(other)],
        }
    }
}

/// Closes `items` at once, a thread each. Closing an AF_PACKET socket waits for an RCU grace
/// period (the kernel's `synchronize_net`), some 10–20 ms: one after the other, a node's six
/// sockets kept a stopping data plane, and so a planned restart's gap, 80 ms longer.
pub(crate) fn close_all<T: Send>(items: Vec<T>) {
    std::thread::scope(|s| {
        for item in items {
            // Without a thread (none to be had), it closes here.
            let _ = std::thread::Builder::new().name("close".into()).spawn_scoped(s, move || drop(item));
        }
    });
}

/// Outer IPv4 and UDP headers, which the UDP socket's datagrams arrive without.
const UDP_HEADERS: usize = encap::vxlan::OUTER_HEADERS;

/// Receives one VXLAN datagram into `buf` behind room for its outer headers, and writes them
/// back as they were on the wire but for what the socket does not tell: identification,
/// DF and TTL (none of which decapsulation looks at). Returns the outer packet's length, and
/// the offload header of a UDP super-packet (several datagrams the socket read as one).
fn recv_vxlan(sock: &UdpTunnelSocket, node: std::net::Ipv4Addr, buf: &mut [u8]) -> io::Result<(usize, VnetHdr)> {
    let Some(room) = buf.get_mut(UDP_HEADERS..) else {
        return Err(io::ErrorKind::InvalidInput.into());
    };
    let d = sock.recv(room)?;
    let len = UDP_HEADERS + d.len;
    if len > buf.len() || len > usize::from(u16::MAX) {
        // Truncated: counted as oversize by the caller.
        return Ok((len, VnetHdr::NONE));
    }
    encap::ipv4::Repr {
        src: *d.src.ip(),
        dst: node,
        protocol: encap::ipv4::Protocol::Udp,
        tos: d.tos,
        ident: 0,
        dont_frag: false,
        ttl: 64,
        payload_len: encap::udp::HEADER_LEN + d.len,
    }
    .emit(buf);
    let udp = encap::udp::Repr { src_port: d.src.port(), dst_port: encap::vxlan::PORT, payload_len: d.len };
    udp.emit(&mut buf[encap::ipv4::HEADER_LEN..]);
    let hdr = match d.segment.filter(|s| usize::from(*s) < d.len) {
        Some(size) => VnetHdr {
            flags: 0,
            gso_type: gso::GSO_UDP_L4,
            hdr_len: UDP_HEADERS as u16,
            gso_size: size,
            csum_start: 0,
            csum_offset: 0,
        },
        None => VnetHdr::NONE,
    };
    Ok((len, hdr))
}

impl Port {
    /// Receives a batch into `bufs` (each frame at `HEADROOM`); lengths into `lens`, offload
    /// headers into `hdrs`. AF_PACKET ports always carry the header (`open_rx` sets it).
    fn recv_batch(&self, bufs: &mut [Vec<u8>], lens: &mut [usize], hdrs: &mut [VnetHdr]) -> io::Result<usize> {
        let one = |buf: &mut [u8]| match self {
            Port::Tun(t) => t.recv(buf),
            Port::Raw { sock, .. } => sock.recv(buf).map(|n| (n, VnetHdr::NONE)),
            Port::Udp { sock, node } => recv_vxlan(sock, *node, buf),
            Port::Packet { .. } => Err(io::ErrorKind::Unsupported.into()),
        };
        if let Port::Packet { rx, .. } = self {
            return netsys::recv_batch_vnet(rx.as_fd(), bufs, HEADROOM, RX_MAX, lens, hdrs);
        }
        // TUN and raw sockets: one read per packet, until empty or the batch is full.
        let mut k = 0;
        while k < bufs.len().min(lens.len()).min(hdrs.len()) {
            match one(&mut bufs[k][HEADROOM..HEADROOM + RX_MAX]) {
                Ok((n, h)) => {
                    lens[k] = n;
                    hdrs[k] = h;
                    k += 1;
                }
                Err(e) if k > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Ok(k)
    }

    /// Sends frames (each with its offload header, which only AF_PACKET ports carry) out of
    /// this port, many per system call where the socket allows; returns how many went out.
    fn send_batch(&self, frames: &[(VnetHdr, &[u8])]) -> usize {
        match self {
            Port::Packet { tx, .. } => {
                let mut done = 0;
                while done < frames.len() {
                    match netsys::send_batch_vnet(tx.as_fd(), &frames[done..]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => done += n,
                    }
                }
                done
            }
            Port::Tun(t) => frames.iter().filter(|f| t.send(f.0, f.1).is_ok()).count(),
            _ => frames.iter().filter(|f| self.send(f.1).is_ok()).count(),
        }
    }

    fn send(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            Port::Packet { tx, .. } => tx.send(data),
            Port::Tun(t) => t.send(VnetHdr::NONE, data),
            Port::Raw { sock, .. } => sock.send(data),
            Port::Udp { .. } => Err(io::ErrorKind::Unsupported.into()),
        }
    }

    fn readable(&self) -> bool {
        !matches!(self, Port::Raw { rx: false, .. })
    }

    fn is_ethernet(&self) -> bool {
        matches!(self, Port::Packet { .. })
    }

    /// Frames the kernel dropped before we could read them (AF_PACKET and the receiving raw
    /// socket; a TUN device's are read from the device by the node).
    fn take_drops(&self) -> u64 {
        match self {
            Port::Packet { rx, .. } => rx.take_drops().unwrap_or(0),
            Port::Raw { sock, rx: true } => sock.take_drops().unwrap_or(0),
            Port::Udp { sock, .. } => sock.take_drops().unwrap_or(0),
            _ => 0,
        }
    }

    fn raw_fd(&self) -> i32 {
        match self {
            Port::Packet { rx, .. } => rx.as_raw_fd(),
            Port::Tun(t) => t.as_raw_fd(),
            Port::Raw { sock, .. } => sock.as_raw_fd(),
            Port::Udp { sock, .. } => sock.as_raw_fd(),
        }
    }
}

pub struct Worker {
    pub index: usize,
    pub core: Option<core_affinity::CoreId>,
    /// Indexed by `IfaceId`; `None` for a freed slot.
    pub ports: Vec<Option<Port>>,
    pub ifaces: Arc<Interfaces>,
    /// Interfaces that come and go ([`PortMsg`]), with `poll` woken through [`WAKE`].
    pub ctl: crossbeam_channel::Receiver<PortMsg>,
    /// Made by the data plane, which keeps its waker; taken by `run`.
    pub poll: Option<Poll>,
    pub fib: FibHandle,
    pub neigh: NeighHandle,
    /// The masquerade table, shared with the other workers.
    pub nat: Arc<crate::nat::Nat>,
    pub counters: Arc<Counters>,
    pub slow: Sender<SlowMsg>,
    pub stop: Arc<AtomicBool>,
    pub tap: Arc<Tap>,
    pub tracer: Arc<Tracer>,
    /// Merge TCP segments to pods into super-packets.
    pub gro: bool,
    /// Send VXLAN as UDP super-packets; shared by the workers, cleared (and said once in the
    /// log) when the kernel refuses one.
    pub udp_gso: Arc<AtomicBool>,
    /// Nice value to run at (0: leave it).
    pub nice: i32,
    /// Fault injection for the supervision test: the worker stops with an error this long
    /// after it started (see `DataplaneConfig::fail_worker_after`).
    pub fail_after: Option<Duration>,
    /// Fault injection for the fallback test (see `DataplaneConfig::refuse_udp_gso`).
    pub refuse_udp_gso: bool,
    /// Tun mode's UDP sockets for VXLAN super-packets, each opened when the first is sent
    /// through it (a pool may turn to VXLAN while the node runs); `None` inside if it could
    /// not be. A socket's source port is its own, so flows are spread over several by the
    /// port the pipeline derived from the inner flow: a fabric's ECMP still sees many.
    pub vxlan_tx: [std::cell::OnceCell<Option<UdpTunnelSocket>>; VXLAN_TX_SOCKETS],
}

/// How many UDP sockets (source ports) a tun-mode worker sends VXLAN super-packets from.
pub const VXLAN_TX_SOCKETS: usize = 8;

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("index", &self.index).field("ports", &self.ports.len()).finish()
    }
}

impl Worker {
    pub fn run(mut self) -> io::Result<()> {
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core) {
                tracing::warn!(worker = self.index, core = core.id, "could not pin worker to core");
            }
        }
        if self.nice != 0 {
            if let Err(e) = netsys::set_thread_nice(self.nice) {
                // Raising a priority takes CAP_SYS_NICE; the worker still forwards without it.
                tracing::warn!(worker = self.index, nice = self.nice, error = %e, "could not set the worker's priority");
            }
        }
        let mut poll = match self.poll.take() {
            Some(p) => p,
            None => Poll::new()?,
        };
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(p) = p.as_ref().filter(|p| p.readable()) {
                poll.registry().register(&mut SourceFd(&p.raw_fd()), Token(i), Interest::READABLE)?;
            }
        }
        let mut events = Events::with_capacity(64);
        let mut batch = Batch {
            bufs: (0..BATCH).map(|_| vec![0u8; HEADROOM + RX_MAX + pipeline::ICMP_ERROR_MAX]).collect(),
            lens: vec![0; BATCH],
            hdrs: vec![VnetHdr::NONE; BATCH],
            out: Vec::with_capacity(4 * BATCH),
            seg: vec![0u8; SEGMENT_ROOM],
            seg_out: Vec::with_capacity(256),
            tunnel_out: Vec::with_capacity(8),
            gro: vec![0u8; GRO_ROOM],
            send: Vec::with_capacity(BATCH),
        };
        let mut scratch = vec![0u8; HEADROOM + RX_MAX];
        // mio is edge-triggered: a port stays "ready" until a read returns WouldBlock.
        let mut ready: Vec<bool> = self.ports.iter().map(|p| p.as_ref().is_some_and(Port::readable)).collect();
        let mut last_stats = std::time::Instant::now();
        let fail_at = self.fail_after.map(|d| std::time::Instant::now() + d);
        while !self.stop.load(Ordering::Relaxed) {
            if fail_at.is_some_and(|t| std::time::Instant::now() >= t) {
                return Err(io::Error::other("stopped on purpose (ROUTER_FAULT_WORKER_EXIT)"));
            }
            // Losses before our socket are ours to report too (every 100 ms, not per packet).
            if last_stats.elapsed() >= Duration::from_millis(100) {
                last_stats = std::time::Instant::now();
                let lost: u64 = self.ports.iter().flatten().map(|p| p.take_drops()).sum();
                self.counters.count_drops(DropReason::RxQueueFull, lost);
                self.counters.refill_icmp();
            }
            let busy = ready.iter().any(|r| *r);
            let timeout = if busy { Duration::ZERO } else { IDLE_WAIT };
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                if let Some(r) = ready.get_mut(ev.token().0) {
                    *r = true;
                }
            }
            while let Ok(m) = self.ctl.try_recv() {
                self.change_port(&poll, m, &mut ready)?;
            }
            // One snapshot per batch round: updates land between rounds, never mid-packet.
            let fib = self.fib.load();
            let neigh = self.neigh.load();
            let ctx = Context { fib: &fib, neigh: &neigh, ifaces: &self.ifaces, nat: &self.nat, gso: None, packets: 1 };
            for (i, r) in ready.iter_mut().enumerate() {
                if *r {
                    *r = self.drain(&ctx, i, &mut batch, &mut scratch);
                }
            }
        }
        close_all(std::mem::take(&mut self.ports).into_iter().flatten().flat_map(Port::into_parts).collect());
        Ok(())
    }

    /// Takes a new port into the poll set, or drops a gone one, and says so.
    fn change_port(&mut self, poll: &Poll, m: PortMsg, ready: &mut Vec<bool>) -> io::Result<()> {
        let i = usize::from(m.id.0);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
            ready.resize(i + 1, false);
        }
        let new = match m.port {
            PortChange::Keep => {
                self.ifaces = m.ifaces;
                let _ = m.done.send(());
                return Ok(());
            }
            PortChange::Open(p) => Some(p),
            PortChange::Close => None,
        };
        if let Some(old) = self.ports[i].take() {
            if old.readable() {
                let _ = poll.registry().deregister(&mut SourceFd(&old.raw_fd()));
            }
        }
        ready[i] = false;
        if let Some(p) = new {
            if p.readable() {
                poll.registry().register(&mut SourceFd(&p.raw_fd()), Token(i), Interest::READABLE)?;
                // Frames may already wait: edge-triggered polling would not report them.
                ready[i] = true;
            }
            self.ports[i] = Some(p);
        }
        self.ifaces = m.ifaces;
        let _ = m.done.send(());
        Ok(())
    }

    /// Handles one batch from port `i` (one receive call, one send call per egress); true if
    /// more may be waiting.
    fn drain(&self, ctx: &Context<'_>, i: usize, b: &mut Batch, scratch: &mut [u8]) -> bool {
        // Capture and trace are looked at once per batch: when off they cost one branch.
        let tapping = self.tap.active();
        let tracing = self.tracer.active();
        let in_if = IfaceId(i as u16);
        let Some(port) = self.ports.get(i).and_then(Option::as_ref) else {
            return false;
        };
        let n = match port.recv_batch(&mut b.bufs, &mut b.lens, &mut b.hdrs) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
            Err(e) => {
                let f = ctx.ifaces.get(in_if);
                let iface = f.map_or("?", |f| f.name.as_str());
                // A pod's veth goes down whenever its container stops: the node follows
                // that on its own; anything else failing is news.
                let pod = f.is_some_and(|f| matches!(f.role, IfaceRole::Pod { .. }));
                if pod && e.raw_os_error() == Some(libc::ENETDOWN) {
                    tracing::debug!(iface, "receive: the pod's interface went down");
                } else {
                    tracing::warn!(iface, error = %e, "receive failed");
                }
                return false;
            }
        };
        b.out.clear();
        for k in 0..n {
            let len = b.lens[k];
            self.counters.rx(i, len);
            if len > RX_MAX {
                self.counters.count_drop(DropReason::Oversize);
                continue;
            }
            let buf = &mut b.bufs[k];
            let mut span = Span { start: HEADROOM, end: HEADROOM + len };
            // Offloads: a partial checksum is finished here (cheaper than a wrong one
            // downstream); a TCP super-packet goes through the pipeline whole.
            let mut hdr = b.hdrs[k];
            let mut packets = 1;
            if hdr.needs_csum() && !hdr.is_gso() {
                let (start, off) = (usize::from(hdr.csum_start), usize::from(hdr.csum_offset));
                if gso::complete_checksum(&mut buf[span.start..span.end], start, off).is_err() {
                    self.counters.count_drop(DropReason::GsoFailed);
                    continue;
                }
            }
            let super_packet = hdr.is_gso();
            if super_packet {
                match hdr.gso_type & !gso::GSO_ECN {
                    gso::GSO_TCPV4 | gso::GSO_TCPV6 => crate::counters::bump(&self.counters.gso_received, 1),
                    gso::GSO_UDP_L4 if port.is_ethernet() || matches!(port, Port::Udp { .. }) => {
                        if tapping {
                            self.tap.copy(in_if, Direction::Rx, &buf[span.start..span.end], port.is_ethernet());
                        }
                        // Merging is receive offload in software: off with the rest of it.
                        let merged = self
                            .gro
                            .then(|| {
                                let trusted = hdr.needs_csum();
                                pipeline::merge_vxlan_super(
                                    ctx,
                                    &self.counters,
                                    in_if,
                                    buf,
                                    span,
                                    hdr.gso_size,
                                    trusted,
                                )
                            })
                            .flatten();
                        let Some((s, h, n)) = merged else {
                            self.udp_super(ctx, in_if, k, span, hdr.gso_size, b, scratch, tapping);
                            continue;
                        };
                        (span, hdr, packets) = (s, h, n);
                    }
                    _ => {
                        self.counters.count_drop(DropReason::GsoFailed);
                        continue;
                    }
                }
            }
            let pctx = Context { gso: super_packet.then_some(hdr.gso_size), packets, ..*ctx };
            let ctx = &pctx;
            if tapping && packets == 1 {
                self.tap.copy(in_if, Direction::Rx, &buf[span.start..span.end], port.is_ethernet());
            }
            // Tracing: look at the packet before the pipeline rewrites it in place.
            let probe = if tracing {
                let data = &buf[span.start..span.end];
                let id = self.tracer.id();
                trace::belongs(data, port.is_ethernet(), id)
                    .then(|| trace::summarize(data, port.is_ethernet()).map(|s| (id, s)))
                    .flatten()
            } else {
                None
            };
            let v = if port.is_ethernet() {
                pipeline::process(ctx, &self.counters, in_if, buf, span)
            } else {
                pipeline::process_l3(ctx, &self.counters, in_if, buf, span)
            };
            if let Some((id, before)) = probe {
                let eth = |i: IfaceId| self.port(i).is_some_and(|p| p.is_ethernet());
                self.tracer.report(id, in_if, before, &v, buf, eth);
            }
            match v {
                Verdict::Transmit { iface, span, learn } => {
                    b.out.push((iface, Source::Buf(k), span, VnetHdr::NONE));
                    if let Some(n) = learn {
                        // A lost hint costs one ARP round trip later, nothing more.
                        let _ = self.slow.try_send(SlowMsg::Learn(n));
                    }
                }
                Verdict::TransmitWhole { iface, span } => b.out.push((iface, Source::Buf(k), span, hdr)),
                Verdict::Segment(job) => {
                    b.tunnel_out.clear();
                    b.seg_out.clear();
                    let whole = self.udp_gso.load(Ordering::Relaxed)
                        && pipeline::segment_vxlan(ctx, &self.counters, buf, job, &mut b.seg, &mut b.tunnel_out);
                    if !whole {
                        pipeline::segment(ctx, &self.counters, buf, job, &mut b.seg, &mut b.seg_out);
                    }
                    // What this batch queued so far goes first: a flow's packets keep their order.
                    self.flush(b, tapping);
                    if whole && !self.send_supers(&b.tunnel_out, &b.seg, tapping) {
                        // The kernel refused UDP GSO: these segments go one by one after all.
                        b.seg_out.clear();
                        pipeline::segment(ctx, &self.counters, &b.bufs[k], job, &mut b.seg, &mut b.seg_out);
                    }
                    self.send_segments(&b.seg_out, &b.seg, tapping);
                }
                Verdict::Fragment(job) => {
                    pipeline::fragment(ctx, &self.counters, buf, job, scratch, |v, bb| self.act(v, bb, tapping))
                }
                other => self.act(other, buf, tapping),
            }
        }
        self.flush(b, tapping);
        // mio is edge-triggered: keep reading until the socket says WouldBlock.
        n > 0
    }

    /// Sends what the batch has queued: one send call per egress port and [`BATCH`] frames.
    /// Frames keep their order within a port.
    fn flush(&self, b: &mut Batch, tapping: bool) {
        // By egress, then in the order received (where they lie, then where in that);
        // unstable sorts do not allocate.
        b.out.sort_unstable_by_key(|o| (o.0, o.1, o.2.start));
        let mut j = 0;
        while j < b.out.len() {
            let iface = b.out[j].0;
            let group = b.out[j..].iter().take_while(|o| o.0 == iface).count();
            let end = j + group.min(BATCH);
            self.merge(b, j, end);
            let mut frames: [(VnetHdr, &[u8]); BATCH] = [(VnetHdr::NONE, &[]); BATCH];
            for (f, &(src, sp, h)) in frames.iter_mut().zip(&b.send) {
                let from = match src {
                    Source::Buf(k) => &b.bufs[k],
                    Source::Seg => &b.seg,
                    Source::Gro => &b.gro,
                };
                *f = (h, &from[sp.start..sp.end]);
            }
            self.transmit_batch(iface, &frames[..b.send.len()], tapping);
            j = end;
        }
        b.out.clear();
    }

    /// A UDP super-packet received in `b.bufs[k]`: its datagrams go through the pipeline one
    /// by one (see [`pipeline::process_udp_super`]), and what they become is sent, merged
    /// for pods, after what the batch queued before it.
    #[allow(clippy::too_many_arguments)]
    fn udp_super(
        &self,
        ctx: &Context<'_>,
        in_if: IfaceId,
        k: usize,
        span: Span,
        size: u16,
        b: &mut Batch,
        scratch: &mut [u8],
        tapping: bool,
    ) {
        self.flush(b, tapping);
        b.seg_out.clear();
        pipeline::process_udp_super(ctx, &self.counters, in_if, &b.bufs[k], span, size, &mut b.seg, &mut b.seg_out);
        for &v in &b.seg_out {
            match v {
                Verdict::Transmit { iface, span, learn } => {
                    b.out.push((iface, Source::Seg, span, VnetHdr::NONE));
                    if let Some(n) = learn {
                        let _ = self.slow.try_send(SlowMsg::Learn(n));
                    }
                }
                Verdict::Fragment(job) => {
                    pipeline::fragment(ctx, &self.counters, &b.seg, job, scratch, |v, bb| self.act(v, bb, tapping))
                }
                other => self.act(other, &b.seg, tapping),
            }
        }
        self.flush(b, tapping);
    }

    /// Lays out what `b.out[j..end]` (one egress) sends in `b.send`. Toward a pod, runs of
    /// consecutive segments of one TCP flow become one super-packet with a virtio-net header,
    /// as the kernel's GRO would make them: the pod's stack then takes one packet, and sends
    /// one acknowledgement, where it took dozens. Segments come one by one out of the IPIP
    /// tunnel, where no offload can carry them whole.
    fn merge(&self, b: &mut Batch, j: usize, end: usize) {
        let Batch { bufs, out, gro, send, seg, .. } = b;
        let bytes = |src: Source| match src {
            Source::Buf(k) => &bufs[k][..],
            Source::Seg => &seg[..],
            Source::Gro => &[][..],
        };
        send.clear();
        let group = out.get(j..end).unwrap_or(&[]);
        // Toward a pod: its veth (afpacket), or tunl0, through which the kernel forwards to
        // it (tun). The link header in front of each packet: Ethernet, or none.
        let egress = group.first().map(|o| o.0);
        let role = egress.and_then(|e| self.ifaces.get(e)).map(|f| &f.role);
        let l2 = match (egress.and_then(|e| self.port(e)), role) {
            (Some(Port::Packet { .. }), Some(crate::iface::IfaceRole::Pod { .. })) => Some(encap::ethernet::HEADER_LEN),
            (Some(Port::Tun(_)), _) => Some(0),
            _ => None,
        };
        let Some(eth) = l2.filter(|_| self.gro) else {
            send.extend(group.iter().map(|&(_, src, sp, h)| (src, sp, h)));
            return;
        };
        // Each frame is looked at once: its bytes and, if it may join a run (a plain IPv4
        // frame without offload, a mergeable TCP segment), its segment.
        let mut segs: [Option<(&[u8], gro::Mergeable)>; BATCH] = [None; BATCH];
        for (s, &(_, src, sp, h)) in segs.iter_mut().zip(group) {
            let Some(f) = bytes(src).get(sp.start..sp.end) else { continue };
            let ipv4 = eth == 0
                || encap::ethernet::Frame::new_checked(f)
                    .is_ok_and(|e| e.ethertype() == encap::ethernet::EtherType::Ipv4);
            if h == VnetHdr::NONE && f.len() >= eth && ipv4 {
                *s = gro::mergeable(&f[eth..]).map(|m| (f, m));
            }
        }
        let mut run: [(&[u8], gro::Mergeable); BATCH] = [(&[], gro::Mergeable::default()); BATCH];
        let mut used = 0;
        let mut i = 0;
        while i < group.len() {
            let (_, src, sp, h) = group[i];
            let n = gro::run_len(&segs[i..group.len()], eth);
            if n > 1 {
                for (r, (f, m)) in run.iter_mut().zip(segs[i..i + n].iter().flatten()) {
                    *r = (&f[eth..], *m);
                }
                let total = 20 + run[0].1.thl + run[..n].iter().map(|(_, m)| m.payload).sum::<usize>();
                let head = segs[i].map_or(&[][..], |(f, _)| &f[..eth]);
                if let Some(room) = gro.get_mut(used..).filter(|r| r.len() >= eth + total) {
                    room[..eth].copy_from_slice(head);
                    if let Some((len, hdr)) = gro::coalesce(&run[..n], eth, &mut room[eth..]) {
                        send.push((Source::Gro, Span { start: used, end: used + eth + len }, hdr));
                        used += eth + len;
                        crate::counters::bump(&self.counters.gro_packets, 1);
                        crate::counters::bump(&self.counters.gro_segments, n as u64);
                        i += n;
                        continue;
                    }
                }
            }
            send.push((src, sp, h));
            i += 1;
        }
    }

    /// Sends the UDP super-packets [`pipeline::segment_vxlan`] built. False if the kernel
    /// refused the first for its offload type (before Linux 6.2): nothing was sent, UDP GSO
    /// is off from now on for every worker, and the caller sends the segments one by one.
    fn send_supers(&self, frames: &[pipeline::SuperFrame], room: &[u8], tapping: bool) -> bool {
        for (i, f) in frames.iter().enumerate() {
            let port = self.port(f.iface);
            let frame = &room[f.span.start..f.span.end];
            if tapping {
                let ethernet = port.is_some_and(Port::is_ethernet);
                self.tap.copy(f.iface, Direction::Tx, frame, ethernet);
            }
            let sent = match port {
                _ if self.refuse_udp_gso && f.hdr.is_gso() => Err(io::Error::from_raw_os_error(libc::EINVAL)),
                Some(Port::Packet { tx, .. }) => netsys::send_batch_vnet(tx.as_fd(), &[(f.hdr, frame)]),
                Some(Port::Raw { sock, .. }) if !f.hdr.is_gso() => sock.send(frame).map(|_| 1),
                Some(Port::Raw { .. }) => self.send_vxlan_super(frame, f.hdr.gso_size),
                _ => Err(io::ErrorKind::Unsupported.into()),
            };
            match sent {
                Ok(1) => {
                    self.counters.tx(usize::from(f.iface.0), frame.len());
                    f.count_sent(&self.counters);
                }
                // EINVAL: a packet socket before Linux 6.2; EIO: a UDP socket on a device
                // without checksum offload; EADDRNOTAVAIL: tun mode has no UDP socket.
                Err(e)
                    if i == 0
                        && f.hdr.is_gso()
                        && matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EIO | libc::EADDRNOTAVAIL)) =>
                {
                    if self.udp_gso.swap(false, Ordering::Relaxed) {
                        tracing::warn!(
                            error = %e,
                            "the kernel refuses UDP GSO here (packet sockets have it from Linux 6.2): \
                             VXLAN segments go one by one"
                        );
                    }
                    return false;
                }
                _ => self.counters.count_drops(DropReason::TxError, f.segments),
            }
        }
        true
    }

    /// Sends the VXLAN super-packet `packet` (outer IPv4 onward, tun mode) through a UDP
    /// socket, which cuts it into datagrams of `size` bytes. The outer UDP header is the
    /// socket's own: its source port is the socket's, picked by the flow's hashed port in
    /// `packet`, so one flow keeps one port and different flows mostly differ.
    fn send_vxlan_super(&self, packet: &[u8], size: u16) -> io::Result<usize> {
        let ip = encap::ipv4::Packet::new_unchecked(packet);
        // The outer headers are ours (no IPv4 options); a super-packet's length fields may
        // not describe it, so only the UDP header's 8 bytes are read.
        let udp = packet.get(encap::ipv4::HEADER_LEN..UDP_HEADERS);
        let flow_port = udp.map_or(0, |h| encap::udp::Packet::new_unchecked(h).src_port());
        let tx = self.vxlan_tx[usize::from(flow_port) % VXLAN_TX_SOCKETS].get_or_init(|| {
            let node = self.ifaces.node_addr()?;
            UdpTunnelSocket::sender(node)
                .inspect_err(|e| tracing::warn!(%node, error = %e, "no UDP socket for VXLAN super-packets"))
                .ok()
        });
        let (Some(tx), Some(payload)) = (tx, packet.get(UDP_HEADERS..)) else {
            return Err(io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
        };
        let to = std::net::SocketAddrV4::new(ip.dst(), encap::vxlan::PORT);
        tx.send_to(payload, to, ip.tos(), ip.ttl(), Some(size)).map(|_| 1)
    }

    /// Sends the segments cut from one super-packet (they share one egress), up to a batch
    /// per send call; those waiting on ARP go to the slow path.
    fn send_segments(&self, verdicts: &[Verdict], scratch: &[u8], tapping: bool) {
        let mut frames: [(VnetHdr, &[u8]); BATCH] = [(VnetHdr::NONE, &[]); BATCH];
        let mut n = 0;
        let mut egress = None;
        for &v in verdicts {
            match v {
                Verdict::Transmit { iface, span, .. } => {
                    if n == BATCH || egress.is_some_and(|e| e != iface) {
                        if let Some(e) = egress {
                            self.transmit_batch(e, &frames[..n], tapping);
                        }
                        n = 0;
                    }
                    egress = Some(iface);
                    frames[n].1 = &scratch[span.start..span.end];
                    n += 1;
                }
                other => self.act(other, scratch, tapping),
            }
        }
        if let Some(e) = egress.filter(|_| n > 0) {
            self.transmit_batch(e, &frames[..n], tapping);
        }
    }

    fn act(&self, v: Verdict, buf: &[u8], tapping: bool) {
        match v {
            Verdict::Transmit { iface, span, learn } => {
                self.transmit(iface, &buf[span.start..span.end], tapping);
                if let Some(n) = learn {
                    // A lost hint costs one ARP round trip later, nothing more.
                    let _ = self.slow.try_send(SlowMsg::Learn(n));
                }
            }
            Verdict::Resolve { iface, next_hop, span } => {
                let msg = SlowMsg::Resolve { iface, next_hop, frame: buf[span.start..span.end].to_vec() };
                if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.slow.try_send(msg) {
                    self.counters.count_drop(DropReason::SlowPathFull);
                }
            }
            Verdict::Learn(n) => {
                let _ = self.slow.try_send(SlowMsg::Learn(n));
            }
            // Only super-packets end so, and they are handled where they were received.
            Verdict::TransmitWhole { .. } | Verdict::Segment(_) => self.counters.count_drop(DropReason::TxError),
            Verdict::Fragment(_) | Verdict::Pass | Verdict::Drop(_) => {}
        }
    }

    fn transmit_batch(&self, iface: IfaceId, frames: &[(VnetHdr, &[u8])], tapping: bool) {
        let i = usize::from(iface.0);
        let Some(port) = self.port(iface) else {
            self.counters.count_drops(DropReason::TxError, frames.len() as u64);
            return;
        };
        if tapping {
            for f in frames {
                self.tap.copy(iface, Direction::Tx, f.1, port.is_ethernet());
            }
        }
        let sent = port.send_batch(frames);
        for f in &frames[..sent] {
            self.counters.tx(i, f.1.len());
        }
        self.counters.count_drops(DropReason::TxError, (frames.len() - sent) as u64);
    }

    fn port(&self, iface: IfaceId) -> Option<&Port> {
        self.ports.get(usize::from(iface.0)).and_then(Option::as_ref)
    }

    fn transmit(&self, iface: IfaceId, frame: &[u8], tapping: bool) {
        let Some(port) = self.port(iface) else {
            self.counters.count_drop(DropReason::TxError);
            return;
        };
        if tapping {
            self.tap.copy(iface, Direction::Tx, frame, port.is_ethernet());
        }
        match port.send(frame) {
            Ok(_) => self.counters.tx(usize::from(iface.0), frame.len()),
            Err(e) => {
                tracing::debug!(iface = iface.0, error = %e, "send failed");
                self.counters.count_drop(DropReason::TxError);
            }
        }
    }
}
