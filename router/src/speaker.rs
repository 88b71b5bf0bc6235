//! The BGP speaker's I/O shell on the node's control thread: TCP sessions (mio, socket2)
//! bound to the node address, TCP MD5 and GTSM per peer, write buffers and read budgets. What
//! BGP decides (sessions, timers, RIB, policy, graceful restart) is `bgp::speaker::Core`; this
//! module carries out its actions and feeds it what the sockets bring.

use bgp::fsm::{Down, State};
use bgp::rib::{Candidate, PeerId};
use bgp::speaker::{Action, Core, CoreConfig, Incoming, PeerConfig, Report};
use bgp::wire::{self, Message, Notification};
use ipnet::{IpNet, Ipv4Net};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use nodeapi::admin::PeerStatus;
use nodeapi::config::{BgpPeer, PeerKind};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime};

/// GTSM for a socket to a peer `hops` away: ours leave with TTL 255, and the kernel drops the
/// peer's that arrive with less than 256 - `hops`, which a sender further away cannot forge.
fn gtsm(s: &Socket, hops: u8, ipv6: bool) -> io::Result<()> {
    max_ttl(s, ipv6)?;
    netsys::set_min_ttl(s.as_fd(), bgp::speaker::gtsm_min_ttl(hops), ipv6)
}

/// TTL (IPv6: hop limit) 255 on what the socket sends.
fn max_ttl(s: &Socket, ipv6: bool) -> io::Result<()> {
    match ipv6 {
        false => s.set_ttl(255),
        true => s.set_unicast_hops_v6(255),
    }
}

/// What the shell needs besides the core's config: the port, and the peers as the node's
/// config gives them (TCP MD5 passwords, GTSM, ports), in the core's peer order.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub core: CoreConfig,
    pub port: u16,
    pub peers: Vec<BgpPeer>,
    /// Listen on every address (Calico's bindMode None) instead of the node's.
    pub listen_all: bool,
}

/// A session that went down because someone meant it to: our operator, or the peer's
/// (its shutdown or reset, its graceful restart). Anything else is worth a warning.
fn planned(why: &Down) -> bool {
    use bgp::wire::err;
    match why {
        Down::Stopped | Down::PeerRestarted => true,
        Down::Received(n) => {
            n.code == err::CEASE && [err::ADMIN_SHUTDOWN, err::PEER_DECONFIGURED, err::ADMIN_RESET].contains(&n.subcode)
        }
        _ => false,
    }
}

/// A configured peer as the core sees it.
pub fn peer_config(p: &BgpPeer) -> PeerConfig {
    PeerConfig {
        address: p.address,
        asn: p.as_number,
        passive: p.passive,
        rr_client: p.kind == PeerKind::RouteReflectorClient,
        // Calico's BGPPeer: a router that is not a node of the cluster.
        external: p.external,
        filters: p.filters.clone(),
        max_prefixes: p.max_prefixes,
        ttl_security: p.ttl_security,
        md5: p.password.is_some(),
        restart_time: p.restart_time,
        keepalive: p.keepalive_time,
        allow_local_as: p.allow_local_as,
        keep_next_hop: p.keep_original_next_hop,
    }
}

/// Unsent output under which a peer still receiving its initial table gets the next slice.
const SYNC_LOW_WATER: usize = 256 * 1024;
/// Unsent output beyond which a peer is reset: it is not reading, and memory is bounded.
const OUT_CAP: usize = 64 << 20;
/// Bytes read from one peer per readiness event before timers and other peers get a turn.
const READ_BUDGET: usize = 1 << 20;
/// RFC 9687: output that makes no progress for this long (or twice the hold time, if longer)
/// means the peer stopped reading while its TCP window keeps the session looking alive.
const SEND_HOLD_MIN: Duration = Duration::from_secs(480);

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Outgoing connect still in progress.
    connecting: bool,
    /// When output last made progress (or the buffer was last empty).
    sent_at: Instant,
}

/// What went over the wire with one peer, all its sessions together.
#[derive(Debug, Default, Clone, Copy)]
struct WireCount {
    messages_received: u64,
    messages_sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

/// Token of the listening socket; peer `i` uses `PEER_BASE + i`.
pub const LISTEN: Token = Token(1);
/// Token of the IPv6 listening socket, there once an IPv6 peer is configured.
pub const LISTEN6: Token = Token(5);
const PEER_BASE: usize = 16;

pub struct Speaker {
    cfg: SpeakerConfig,
    core: Core,
    conns: Vec<Option<Conn>>,
    /// Per peer slot, like `conns`.
    wire: Vec<WireCount>,
    listener: TcpListener,
    listener6: Option<TcpListener>,
    /// Peers whose socket had more to read when their read budget ran out.
    backlog: Vec<usize>,
    started: (Instant, SystemTime),
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").field("peers", &self.conns.len()).finish()
    }
}

/// The listening socket at `addr` for the peers of its family.
fn listen(addr: SocketAddr, peers: &[BgpPeer]) -> io::Result<TcpListener> {
    let ipv6 = addr.is_ipv6();
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    if ipv6 {
        s.set_only_v6(true)?;
        // The address may still be tentative (duplicate address detection) when the node
        // starts; the kernel takes connections to it once it is not.
        s.set_freebind_ipv6(true)?;
    }
    let mine = || peers.iter().filter(|p| p.address.is_ipv6() == ipv6);
    for p in mine() {
        if let Some(pw) = &p.password {
            netsys::set_tcp_md5(s.as_fd(), p.address, pw.as_bytes())?;
        }
    }
    // Accepted connections inherit the TTL: a GTSM peer then gets our SYN-ACK at 255. TTL 255
    // is harmless for the others.
    if mine().any(|p| p.ttl_security.is_some()) {
        max_ttl(&s, ipv6)?;
    }
    s.bind(&SockAddr::from(addr)).map_err(|e| io::Error::new(e.kind(), format!("binding BGP to {addr}: {e}")))?;
    s.listen(64)?;
    Ok(TcpListener::from_std(s.into()))
}

impl Speaker {
    pub fn new(cfg: SpeakerConfig, registry: &Registry, now: Instant) -> io::Result<Speaker> {
        let at: IpAddr = if cfg.listen_all { Ipv4Addr::UNSPECIFIED.into() } else { cfg.core.local_addr.into() };
        let mut listener = listen(SocketAddr::new(at, cfg.port), &cfg.peers)?;
        registry.register(&mut listener, LISTEN, Interest::READABLE)?;
        let listener6 = match cfg.peers.iter().any(|p| p.address.is_ipv6()) {
            true => Some(Self::listen6(&cfg, registry)?),
            false => None,
        };
        let core = Core::new(cfg.core.clone(), now);
        let conns = (0..cfg.peers.len()).map(|_| None).collect();
        let wire = vec![WireCount::default(); cfg.peers.len()];
        let mut sp = Speaker {
            cfg,
            core,
            conns,
            wire,
            listener,
            listener6,
            backlog: Vec::new(),
            started: (now, SystemTime::now()),
        };
        // Outgoing connections start right away instead of on the first tick.
        sp.run(registry, now);
        Ok(sp)
    }

    /// The IPv6 listener at the node's IPv6 address, for the peers configured so far.
    fn listen6(cfg: &SpeakerConfig, registry: &Registry) -> io::Result<TcpListener> {
        let Some(addr6) = cfg.core.local_addr6 else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an IPv6 BGP peer needs the node's own IPv6 address (an [ipv6] section)",
            ));
        };
        let at: IpAddr = if cfg.listen_all { Ipv6Addr::UNSPECIFIED.into() } else { addr6.into() };
        let mut l = listen(SocketAddr::new(at, cfg.port), &cfg.peers)?;
        registry.register(&mut l, LISTEN6, Interest::READABLE)?;
        Ok(l)
    }

    pub fn rib(&self) -> &bgp::rib::Rib {
        self.core.rib()
    }

    /// What changed in the Loc-RIB since the last call: time to update the FIB.
    pub fn take_changes(&mut self) -> bgp::speaker::LocChanges {
        self.core.take_changes()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.backlog.is_empty() {
            return Some(Instant::now());
        }
        self.core.poll_timeout()
    }

    /// Whether this node is still deferring after its restart.
    pub fn deferring(&self) -> bool {
        self.core.deferring()
    }

    fn token(i: usize) -> Token {
        Token(PEER_BASE + i)
    }

    /// Carries out what the core asks, until it asks nothing more; then feeds peers that are
    /// still getting their initial table while their output is low.
    fn run(&mut self, registry: &Registry, now: Instant) {
        loop {
            self.log_reports();
            let actions = self.core.take_actions();
            if actions.is_empty() {
                let low = (0..self.conns.len()).find(|&i| {
                    self.core.syncing(i)
                        && self.conns[i].as_ref().is_some_and(|c| !c.connecting && c.wbuf.len() < SYNC_LOW_WATER)
                });
                match low {
                    Some(i) => {
                        self.core.sync_more(i);
                        continue;
                    }
                    None => return,
                }
            }
            for a in actions {
                match a {
                    Action::Connect(i) => self.connect(registry, i, now),
                    Action::Send(i, m) => self.send(i, &m, now),
                    Action::Close(i) => self.drop_conn(registry, i),
                }
            }
        }
    }

    /// Writes what happened to sessions into the log: up, down and why, malformed UPDATEs.
    fn log_reports(&mut self) {
        for (i, r) in self.core.take_reports() {
            let peer = self.core.peer_config(i).address;
            match r {
                Report::Up(families) => {
                    let families: Vec<&str> = families.iter().map(|f| f.name()).collect();
                    tracing::info!(%peer, families = %families.join(","), "BGP session up");
                }
                Report::Down(why) if planned(&why) => tracing::info!(%peer, %why, "BGP session down"),
                Report::Down(why) => tracing::warn!(%peer, %why, "BGP session down"),
                Report::Malformed { withdrawn, discarded, count } => tracing::warn!(
                    %peer,
                    routes_withdrawn = withdrawn,
                    discarded_attributes = ?discarded,
                    count,
                    "malformed UPDATE, handled as RFC 7606 says"
                ),
            }
        }
    }

    fn connect(&mut self, registry: &Registry, i: usize, now: Instant) {
        if self.conns[i].is_some() {
            return;
        }
        match self.open_outgoing(i) {
            Ok(mut stream) => {
                if let Err(e) = registry.register(&mut stream, Self::token(i), Interest::READABLE | Interest::WRITABLE)
                {
                    self.core.connect_failed(i, now, e.to_string());
                    return;
                }
                self.conns[i] =
                    Some(Conn { stream, rbuf: Vec::new(), wbuf: Vec::new(), connecting: true, sent_at: now });
            }
            Err(e) => self.core.connect_failed(i, now, e.to_string()),
        }
    }

    fn open_outgoing(&self, i: usize) -> io::Result<TcpStream> {
        let p = &self.cfg.peers[i];
        let local: IpAddr = match p.address {
            IpAddr::V4(_) => self.cfg.core.local_addr.into(),
            IpAddr::V6(_) => {
                self.cfg.core.local_addr6.ok_or_else(|| io::Error::other("the node has no IPv6 address"))?.into()
            }
        };
        let s = Socket::new(Domain::for_address(SocketAddr::new(local, 0)), Type::STREAM, Some(Protocol::TCP))?;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        // Calico's sourceAddress None: the kernel picks the source by its routes.
        if !p.any_source {
            s.bind(&SockAddr::from(SocketAddr::new(local, 0)))?;
        }
        if let Some(pw) = &p.password {
            netsys::set_tcp_md5(s.as_fd(), p.address, pw.as_bytes())?;
        }
        if let Some(hops) = p.ttl_security {
            gtsm(&s, hops, p.address.is_ipv6())?;
        }
        let to = SockAddr::from(SocketAddr::new(p.address, p.port));
        match s.connect(&to) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(s.into()))
    }

    /// Handles a readiness event for the listener or a peer connection.
    pub fn handle(&mut self, registry: &Registry, token: Token, now: Instant) {
        if token == LISTEN || token == LISTEN6 {
            self.accept(registry, token == LISTEN6, now);
            self.run(registry, now);
            return;
        }
        let Some(i) = token.0.checked_sub(PEER_BASE).filter(|i| *i < self.conns.len()) else { return };
        let Some(conn) = self.conns[i].as_mut() else { return };
        if conn.connecting {
            match conn.stream.take_error() {
                Ok(None) if conn.stream.peer_addr().is_ok() => {
                    conn.connecting = false;
                    self.core.connected(i, now);
                }
                Ok(None) => return, // still connecting
                Ok(Some(e)) | Err(e) => {
                    self.drop_conn(registry, i);
                    self.core.connect_failed(i, now, e.to_string());
                    self.run(registry, now);
                    return;
                }
            }
        }
        self.run(registry, now);
        self.flush(registry, i, now);
        self.read(registry, i, now);
        self.run(registry, now);
    }

    fn accept(&mut self, registry: &Registry, ipv6: bool, now: Instant) {
        loop {
            let listener = match ipv6 {
                false => &self.listener,
                true => match &self.listener6 {
                    Some(l) => l,
                    None => return,
                },
            };
            let (mut stream, from) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "BGP accept failed");
                    return;
                }
            };
            let from_ip = from.ip();
            let live = |(i, p): &(usize, &BgpPeer)| p.address == from_ip && !self.core.removed(*i);
            let Some(i) = self.cfg.peers.iter().enumerate().position(|x| live(&x)) else {
                tracing::info!(%from, "refused a BGP connection from an address that is not a peer");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            let was = self.core.state(i);
            if self.core.incoming(i, now, self.conns[i].is_some()) == Incoming::Refuse {
                if self.cfg.peers[i].ttl_security.is_some() {
                    // GTSM: the session runs on the connection we open, every time.
                    tracing::debug!(%from, "refused a connection from a GTSM peer: ours carries the session");
                } else {
                    // Rare (a collision our connection wins): worth a line when a session is
                    // slow to come back.
                    tracing::info!(%from, state = ?was, "refused a second connection from a peer");
                }
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            if was == State::Established {
                tracing::info!(peer = %from_ip, "new connection from an established peer: it restarted");
            }
            // The core's actions close whatever connection of ours this one replaces.
            self.run(registry, now);
            self.drop_conn(registry, i);
            let _ = stream.set_nodelay(true);
            if registry.register(&mut stream, Self::token(i), Interest::READABLE | Interest::WRITABLE).is_err() {
                continue;
            }
            self.conns[i] = Some(Conn { stream, rbuf: Vec::new(), wbuf: Vec::new(), connecting: false, sent_at: now });
            self.core.accepted(i, now);
            self.run(registry, now);
        }
    }

    /// Reads what the socket has (until it would block, as edge-triggered polling needs, or
    /// the read budget is spent) and hands each whole message to the core as it arrives, so
    /// the buffer stays small and a full table streaming in is decoded as it comes.
    fn read(&mut self, registry: &Registry, i: usize, now: Instant) {
        let mut buf = [0u8; 65536];
        let mut budget = READ_BUDGET;
        loop {
            if budget == 0 {
                // Edge-triggered: no new event comes for what is left; `resume` reads on.
                if !self.backlog.contains(&i) {
                    self.backlog.push(i);
                }
                return;
            }
            let Some(conn) = self.conns[i].as_mut() else { return };
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_conn(registry, i);
                    self.core.closed(i, now, "the peer closed the connection".into());
                    self.run(registry, now);
                    return;
                }
                Ok(n) => {
                    self.wire[i].bytes_received += n as u64;
                    conn.rbuf.extend_from_slice(&buf[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.drop_conn(registry, i);
                    self.core.closed(i, now, e.to_string());
                    self.run(registry, now);
                    return;
                }
            }
            if !self.handle_messages(registry, i, now) {
                return;
            }
        }
    }

    /// Goes on reading from peers whose read budget ran out ([`Speaker::poll_timeout`] is
    /// then immediate).
    pub fn resume(&mut self, registry: &Registry, now: Instant) {
        for i in std::mem::take(&mut self.backlog) {
            self.read(registry, i, now);
            self.run(registry, now);
        }
    }

    /// Feeds every whole message in the read buffer to the core; false when the connection
    /// is gone or had to be reset.
    fn handle_messages(&mut self, registry: &Registry, i: usize, now: Instant) -> bool {
        let mut used = 0;
        loop {
            let ctx = self.core.ctx(i);
            let Some(conn) = self.conns[i].as_mut() else { return false };
            match wire::decode(&conn.rbuf[used..], &ctx) {
                Ok(Some((m, n))) => {
                    used += n;
                    self.wire[i].messages_received += 1;
                    self.core.message(i, now, m);
                    self.run(registry, now);
                }
                Ok(None) => {
                    conn.rbuf.drain(..used);
                    return true;
                }
                Err(n) => {
                    conn.rbuf.clear();
                    self.core.decode_error(i, now, n);
                    self.run(registry, now);
                    return false;
                }
            }
        }
    }

    fn flush(&mut self, registry: &Registry, i: usize, now: Instant) {
        let Some(conn) = self.conns[i].as_mut() else { return };
        if conn.connecting {
            return;
        }
        if conn.wbuf.is_empty() {
            conn.sent_at = now;
        }
        while !conn.wbuf.is_empty() {
            match conn.stream.write(&conn.wbuf) {
                Ok(0) => break,
                Ok(n) => {
                    self.wire[i].bytes_sent += n as u64;
                    conn.wbuf.drain(..n);
                    conn.sent_at = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.drop_conn(registry, i);
                    return;
                }
            }
        }
    }

    fn send(&mut self, i: usize, m: &Message, now: Instant) {
        let ctx = self.core.ctx(i);
        let Some(conn) = self.conns[i].as_mut() else { return };
        if conn.wbuf.is_empty() {
            conn.sent_at = now;
        }
        m.encode(&ctx, &mut conn.wbuf);
        self.wire[i].messages_sent += 1;
        // Written at once when the socket takes it; the rest on the next writable event.
        if !conn.connecting {
            while !conn.wbuf.is_empty() {
                match conn.stream.write(&conn.wbuf) {
                    Ok(0) => break,
                    Ok(n) => {
                        self.wire[i].bytes_sent += n as u64;
                        conn.wbuf.drain(..n);
                        conn.sent_at = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
        }
        if conn.wbuf.len() > OUT_CAP {
            let why = format!("the peer is not reading: {} MiB of output queued; reset", conn.wbuf.len() >> 20);
            // Whatever is queued goes: the session starts over with a fresh table.
            conn.wbuf.clear();
            let n = Notification::new(wire::err::CEASE, wire::err::OUT_OF_RESOURCES);
            self.core.shutdown(i, now, n, why, Duration::from_secs(5));
        }
    }

    fn drop_conn(&mut self, registry: &Registry, i: usize) {
        if let Some(mut c) = self.conns[i].take() {
            // Whatever is queued (a NOTIFICATION) gets one last chance.
            let _ = c.stream.write(&c.wbuf);
            let _ = registry.deregister(&mut c.stream);
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Fires due timers: the core's, and RFC 9687's send hold timer on stuck output.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        for i in 0..self.conns.len() {
            let send_hold = SEND_HOLD_MIN.max(Duration::from_secs(2 * u64::from(self.core.hold_time(i))));
            let stuck = self.conns[i]
                .as_ref()
                .is_some_and(|c| !c.wbuf.is_empty() && now.duration_since(c.sent_at) >= send_hold);
            if stuck {
                let why = format!("send hold timer expired: nothing could be sent for {} s", send_hold.as_secs());
                let n = Notification::new(wire::err::SEND_HOLD_TIMER_EXPIRED, 0);
                self.core.shutdown(i, now, n, why, Duration::from_secs(5));
            }
        }
        self.core.tick(now);
        self.run(registry, now);
    }

    /// Starts announcing a prefix of this node; the UPDATEs go out at the next `tick`.
    pub fn originate(&mut self, prefix: IpNet) {
        self.core.originate(prefix);
    }

    /// Stops announcing a prefix of this node; the withdrawals go out at the next `tick`.
    pub fn withdraw_local(&mut self, prefix: IpNet) {
        self.core.withdraw_local(prefix);
    }

    /// Sends Cease to every peer (on shutdown).
    pub fn stop(&mut self, registry: &Registry) {
        let now = Instant::now();
        self.core.stop(now);
        self.run(registry, now);
    }

    /// A planned restart: the connections close without a NOTIFICATION.
    pub fn close_for_restart(&mut self, registry: &Registry) {
        self.core.close_for_restart();
        self.run(registry, Instant::now());
    }

    fn wall(&self, t: Instant) -> u64 {
        let (mono, wall) = self.started;
        let at = if t >= mono { wall + (t - mono) } else { wall - (mono - t) };
        at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// The listener of `p`'s family, the IPv6 one made for the first IPv6 peer.
    fn listener_for(&mut self, registry: &Registry, p: &BgpPeer) -> io::Result<&TcpListener> {
        if !p.address.is_ipv6() {
            return Ok(&self.listener);
        }
        if self.listener6.is_none() {
            self.listener6 = Some(Self::listen6(&self.cfg, registry)?);
        }
        Ok(self.listener6.as_ref().expect("made above"))
    }

    /// The shared listener set up for `p`, as `listen` does at start: its TCP-MD5 key (or,
    /// when it had one before and has none now, the key removed) and TTL 255 for GTSM.
    fn listen_for(&mut self, registry: &Registry, p: &BgpPeer, had_password: Option<bool>) -> io::Result<()> {
        let listener = socket2::SockRef::from(self.listener_for(registry, p)?);
        match &p.password {
            Some(pw) => netsys::set_tcp_md5(listener.as_fd(), p.address, pw.as_bytes())?,
            None if had_password == Some(true) => netsys::set_tcp_md5(listener.as_fd(), p.address, &[])?,
            None => {}
        }
        if p.ttl_security.is_some() {
            max_ttl(&listener, p.address.is_ipv6())?;
        }
        Ok(())
    }

    /// A peer configured while running (a BGPPeer applied): its session starts now.
    pub fn add_peer(&mut self, registry: &Registry, p: BgpPeer, now: Instant) -> io::Result<()> {
        self.listen_for(registry, &p, None)?;
        let pc = peer_config(&p);
        self.cfg.peers.push(p);
        self.conns.push(None);
        self.wire.push(WireCount::default());
        let i = self.core.add_peer(pc, now);
        debug_assert_eq!(i + 1, self.conns.len());
        self.run(registry, now);
        Ok(())
    }

    /// The peer at `p.address` with new settings: its session restarts in a new slot
    /// without a NOTIFICATION, and its routes stay until the new session has sent its own.
    pub fn replace_peer(&mut self, registry: &Registry, p: BgpPeer, now: Instant) -> io::Result<()> {
        let Some(i) =
            (0..self.cfg.peers.len()).find(|&i| self.cfg.peers[i].address == p.address && !self.core.removed(i))
        else {
            return self.add_peer(registry, p, now);
        };
        let had_password = self.cfg.peers[i].password.is_some();
        self.listen_for(registry, &p, Some(had_password))?;
        let pc = peer_config(&p);
        self.cfg.peers.push(p);
        self.conns.push(None);
        self.wire.push(WireCount::default());
        self.core.replace_peer(i, pc, now);
        self.run(registry, now);
        self.drop_conn(registry, i);
        Ok(())
    }

    /// A peer no longer configured: Cease, its routes gone; whether there was one.
    pub fn remove_peer(&mut self, registry: &Registry, address: IpAddr, now: Instant) -> bool {
        let Some(i) =
            (0..self.cfg.peers.len()).find(|&i| self.cfg.peers[i].address == address && !self.core.removed(i))
        else {
            return false;
        };
        self.core.remove_peer(i, now);
        self.run(registry, now);
        self.drop_conn(registry, i);
        if self.cfg.peers[i].password.is_some() {
            // An empty key removes the listener's key for the address.
            let listener = if address.is_ipv6() { self.listener6.as_ref() } else { Some(&self.listener) };
            if let Some(l) = listener {
                let _ = netsys::set_tcp_md5(socket2::SockRef::from(l).as_fd(), address, &[]);
            }
        }
        true
    }

    /// New import and export rules (the pools or the nodes changed); routes already taken
    /// are not judged again.
    pub fn set_policy(&mut self, policy: bgp::policy::ClusterPolicy) {
        self.core.set_policy(policy);
    }

    /// The slots of the peers not removed, and whether each is at one of `addrs`.
    fn live_slots<'a>(&'a self, addrs: &'a [IpAddr]) -> impl Iterator<Item = (usize, bool)> + 'a {
        (0..self.cfg.peers.len())
            .filter(|&i| !self.core.removed(i))
            .map(|i| (i, addrs.contains(&self.cfg.peers[i].address)))
    }

    /// Whether every peer but those at `except` is up and has sent its whole table.
    pub fn synced_except(&self, except: &[IpAddr]) -> bool {
        self.live_slots(except).filter(|(_, at)| !at).all(|(i, _)| self.core.synced(i))
    }

    /// Whether every route the peers at `going` taught has a path from another peer too.
    pub fn taught_elsewhere(&self, going: &[IpAddr]) -> bool {
        let slots: Vec<usize> = self.live_slots(going).filter(|(_, at)| *at).map(|(i, _)| i).collect();
        self.core.taught_elsewhere(&slots)
    }

    /// The configured peers (not those removed), in slot order.
    pub fn peers(&self) -> Vec<&BgpPeer> {
        self.cfg.peers.iter().enumerate().filter(|(i, _)| !self.core.removed(*i)).map(|(_, p)| p).collect()
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        self.cfg
            .peers
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.core.removed(*i))
            .map(|(i, p)| {
                let v = self.core.view(i, now);
                let w = self.wire[i];
                PeerStatus {
                    peer: p.address,
                    peer_type: p.kind,
                    external: p.external,
                    asn: p.as_number,
                    state: match v.state {
                        State::Established => "up".into(),
                        s => s.name().to_string(),
                    },
                    since: self.wall(v.since),
                    info: v.info,
                    received: v.received,
                    rejected: v.rejected,
                    advertised: v.advertised,
                    flaps: v.flaps,
                    updates_received: v.updates_received,
                    updates_sent: v.updates_sent,
                    messages_received: w.messages_received,
                    messages_sent: w.messages_sent,
                    bytes_received: w.bytes_received,
                    bytes_sent: w.bytes_sent,
                    families: v.families.iter().map(|f| f.name().to_string()).collect(),
                }
            })
            .collect()
    }

    /// The next hops of the routes learned from cluster nodes: the only sources, besides the
    /// configured ones, IPIP is accepted from. An external peer's next hop is not a node.
    pub fn cluster_next_hops(&self) -> std::collections::HashSet<Ipv4Addr> {
        self.core.cluster_next_hops()
    }

    /// What a peer sent that import refused, and why.
    pub fn rejected(&self, peer: Option<IpAddr>) -> Vec<nodeapi::admin::RejectedRoute> {
        let rib = self.core.rib();
        let mut out = Vec::new();
        for (id, p, filters) in self.current_peers().filter(|(_, p, _)| peer.is_none_or(|a| a == p.address)) {
            out.extend(rib.rejected_routes(id).into_iter().map(|(prefix, why)| nodeapi::admin::RejectedRoute {
                peer: p.address,
                prefix: prefix.to_string(),
                reason: why.describe(filters),
            }));
        }
        out
    }

    /// How many prefixes import refused, per peer and reason: what `router status` shows
    /// under its table, without building the list a full table of refused routes would be.
    pub fn refused_counts(&self) -> Vec<nodeapi::admin::RefusedCount> {
        let rib = self.core.rib();
        let mut out = Vec::new();
        for (id, p, filters) in self.current_peers() {
            out.extend(rib.rejected_counts(id).into_iter().map(|(why, count)| nodeapi::admin::RefusedCount {
                peer: p.address,
                reason: why.describe(filters),
                count,
            }));
        }
        out.sort_by(|a, b| (a.peer, &a.reason).cmp(&(b.peer, &b.reason)));
        out
    }

    /// The configured peers not removed, with their ids and import filters (by which a
    /// refusal is described).
    fn current_peers(&self) -> impl Iterator<Item = (PeerId, &BgpPeer, &[std::sync::Arc<bgp::policy::Filter>])> {
        let rib = self.core.rib();
        self.cfg.peers.iter().enumerate().filter(|(i, _)| !self.core.removed(*i)).map(move |(i, p)| {
            let id = i as PeerId;
            (id, p, rib.peer(id).map_or(&[][..], |x| x.filters.as_slice()))
        })
    }

    /// Every path for `prefix` and the step of the decision process that ruled it out.
    pub fn paths(&self, prefix: &IpNet) -> Vec<nodeapi::admin::PathDetail> {
        self.core.candidates(prefix).iter().map(|c| self.path_detail(c)).collect()
    }

    fn path_detail(&self, c: &Candidate) -> nodeapi::admin::PathDetail {
        let (from, peer_type, router_id) = match c.from {
            bgp::rib::From::Local => ("this node".to_string(), None, Some(self.cfg.core.router_id)),
            bgp::rib::From::Peer(id) => {
                let p = self.cfg.peers.get(id as usize);
                (
                    p.map_or_else(|| "?".into(), |p| p.address.to_string()),
                    p.map(|p| p.kind),
                    self.core.rib().peer(id).map(|p| p.router_id),
                )
            }
        };
        let a = &c.attrs;
        nodeapi::admin::PathDetail {
            from,
            peer_type,
            router_id,
            next_hop: a.next_hop.to_string(),
            as_path: a.as_path.iter().flat_map(|s| s.asns.iter().copied()).collect(),
            // As routers show it (RFC 4271 names): IGP, EGP, incomplete.
            origin: match a.origin {
                bgp::wire::update::Origin::Igp => "IGP",
                bgp::wire::update::Origin::Egp => "EGP",
                bgp::wire::update::Origin::Incomplete => "incomplete",
            }
            .into(),
            local_pref: a.local_pref,
            med: a.med,
            communities: a.communities.iter().map(|c| bgp::policy::community::format(*c)).collect(),
            originator_id: a.originator_id,
            cluster_list: a.cluster_list.clone(),
            stale: c.stale,
            best: c.lost_at.is_none(),
            lost_at: c.lost_at.map(|s| s.name().to_string()),
        }
    }

    /// The next hop of every Loc-RIB route this node did not originate.
    pub fn learned(&self) -> Vec<(Ipv4Net, Ipv4Addr)> {
        self.core.learned()
    }

    pub fn learned_where(&self, keep: impl Fn(&Ipv4Net) -> bool) -> Vec<(Ipv4Net, Ipv4Addr)> {
        self.core.learned_where(keep)
    }

    pub fn learned_at(&self, prefix: Ipv4Net) -> Option<Ipv4Addr> {
        self.core.learned_at(prefix)
    }

    pub fn learned_covering(&self, dst: Ipv4Addr) -> Vec<(Ipv4Net, Ipv4Addr)> {
        self.core.learned_covering(dst)
    }

    pub fn learned6_covering(&self, dst: std::net::Ipv6Addr) -> Vec<(ipnet::Ipv6Net, std::net::Ipv6Addr)> {
        self.core.learned6_covering(dst)
    }

    pub fn learned6(&self) -> Vec<(ipnet::Ipv6Net, std::net::Ipv6Addr)> {
        self.core.learned6()
    }

    pub fn learned6_where(&self, keep: impl Fn(&ipnet::Ipv6Net) -> bool) -> Vec<(ipnet::Ipv6Net, std::net::Ipv6Addr)> {
        self.core.learned6_where(keep)
    }

    pub fn learned6_at(&self, prefix: ipnet::Ipv6Net) -> Option<std::net::Ipv6Addr> {
        self.core.learned6_at(prefix)
    }
}
