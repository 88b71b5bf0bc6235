//! The BGP speaker on the node's control thread: TCP sessions (mio, socket2) bound to the
//! node address, TCP MD5 per peer, one session per peer, and the glue from FSM outputs to the
//! RIB and back. The protocol itself is the `bgp` crate, which does no I/O; this is where its
//! outputs become sockets and timers.

use bgp::fsm::{Fsm, FsmConfig, Input, Negotiated, Output, State};
use bgp::policy::{ClusterPolicy, Filter};
use bgp::rib::{Candidate, Changes, PathAttrs, PeerId, PeerInfo, Rib};
use bgp::wire::{self, Afi, Ctx, Message};
use ipnet::{IpNet, Ipv4Net};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use nodeapi::admin::PeerStatus;
use nodeapi::config::{BgpPeer, PeerKind};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// GTSM for a socket to a peer `hops` away: ours leave with TTL 255, and the kernel drops the
/// peer's that arrive with less than 256 - `hops`, which a sender further away cannot forge.
fn gtsm(s: &Socket, hops: u8) -> io::Result<()> {
    s.set_ttl(255)?;
    netsys::set_min_ttl(s.as_fd(), gtsm_min_ttl(hops))
}

/// The lowest TTL a GTSM peer `hops` away can reach us with.
fn gtsm_min_ttl(hops: u8) -> u8 {
    255 - hops.saturating_sub(1)
}

#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub local_addr: Ipv4Addr,
    pub port: u16,
    pub hold_time: u16,
    pub connect_retry: Duration,
    pub cluster_id: Option<Ipv4Addr>,
    pub graceful_restart: Option<u16>,
    /// Our local limit on how long a restarting peer's stale routes are kept.
    pub max_stale: Duration,
    /// This node has just restarted gracefully and forwards on its saved routes: R and F in
    /// its OPENs, and nothing sent until every peer's End-of-RIB (or the restart time).
    pub restarted: bool,
    /// The peers as the node's config gives them: one set of peer settings for both.
    pub peers: Vec<BgpPeer>,
    /// Our own prefixes (the node's blocks), announced with next hop = our address.
    pub originate: Vec<Ipv4Net>,
    /// Pools, the node's own routes and advertised communities, for the default rules.
    pub policy: ClusterPolicy,
    /// The BGPFilters the peers name.
    pub filters: Vec<Filter>,
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

/// How long a peer that sent more than its `max_prefixes` stays shut out. BIRD's `receive
/// limit ... action restart` and GoBGP wait a similar time; RFC 4486 leaves it to the operator.
pub const MAX_PREFIXES_HOLD_DOWN: Duration = Duration::from_secs(60);

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// Outgoing connect still in progress.
    connecting: bool,
    opened: Instant,
    /// When output last made progress (or the buffer was last empty).
    sent_at: Instant,
}

struct Peer {
    cfg: BgpPeer,
    fsm: Fsm,
    conn: Option<Conn>,
    ctx: Ctx,
    /// Graceful restart, helper side: whether this peer's stale routes are kept, until when.
    helper: bgp::restart::Helper,
    /// End-of-RIB (IPv4) received since the session came up.
    eor: bool,
    last_negotiated: Option<Negotiated>,
    flaps: u64,
    updates_received: u64,
    updates_sent: u64,
}

/// Token of the listening socket; peer `i` uses `PEER_BASE + i`.
pub const LISTEN: Token = Token(1);
const PEER_BASE: usize = 16;

pub struct Speaker {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: Vec<Peer>,
    listener: TcpListener,
    /// Until when we defer after our own restart, if we do.
    deferral_until: Option<Instant>,
    /// Peers whose socket had more to read when their read budget ran out.
    backlog: Vec<usize>,
    /// Set when the Loc-RIB changed since `take_changed`.
    changed: bool,
    started: (Instant, SystemTime),
}

impl std::fmt::Debug for Speaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Speaker").field("peers", &self.peers.len()).finish()
    }
}

fn listen(cfg: &SpeakerConfig) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    for p in &cfg.peers {
        if let Some(pw) = &p.password {
            netsys::set_tcp_md5(s.as_fd(), p.address, pw.as_bytes())?;
        }
    }
    // Accepted connections inherit the TTL: a GTSM peer then gets our SYN-ACK at 255. TTL 255
    // is harmless for the others.
    if cfg.peers.iter().any(|p| p.ttl_security.is_some()) {
        s.set_ttl(255)?;
    }
    let addr = SocketAddr::V4(SocketAddrV4::new(cfg.local_addr, cfg.port));
    s.bind(&SockAddr::from(addr)).map_err(|e| io::Error::new(e.kind(), format!("binding BGP to {addr}: {e}")))?;
    s.listen(64)?;
    Ok(TcpListener::from_std(s.into()))
}

impl Speaker {
    pub fn new(cfg: SpeakerConfig, registry: &Registry, now: Instant) -> io::Result<Speaker> {
        let mut listener = listen(&cfg)?;
        registry.register(&mut listener, LISTEN, Interest::READABLE)?;
        let mut rib = Rib::new(cfg.local_as, cfg.router_id, cfg.cluster_id);
        rib.set_policy(cfg.policy.clone());
        let filters: Vec<Arc<Filter>> = cfg.filters.iter().cloned().map(Arc::new).collect();
        let mut peers = Vec::new();
        for (i, p) in cfg.peers.iter().enumerate() {
            rib.add_peer(
                i as PeerId,
                PeerInfo {
                    // We reflect routes for our clients.
                    rr_client: p.kind == PeerKind::RouteReflectorClient,
                    // Calico's BGPPeer: a router that is not a node of the cluster.
                    external: p.kind == PeerKind::Global,
                    filters: p.filters.iter().filter_map(|n| filters.iter().find(|f| &f.name == n).cloned()).collect(),
                    max_prefixes: p.max_prefixes,
                    ..PeerInfo::new(p.address, p.as_number, cfg.local_addr)
                },
            );
            let fsm_cfg = FsmConfig {
                local_as: cfg.local_as,
                peer_as: p.as_number,
                local_id: cfg.router_id,
                hold_time: cfg.hold_time,
                connect_retry: cfg.connect_retry,
                passive: p.passive,
                families: vec![Afi::Ipv4],
                graceful_restart: cfg.graceful_restart,
                restarted: cfg.restarted,
            };
            let mut fsm = Fsm::new(fsm_cfg, now);
            let _ = fsm.process(now, Input::Start);
            peers.push(Peer {
                cfg: p.clone(),
                fsm,
                conn: None,
                ctx: Ctx::default(),
                helper: bgp::restart::Helper::default(),
                eor: false,
                last_negotiated: None,
                flaps: 0,
                updates_received: 0,
                updates_sent: 0,
            });
        }
        for b in &cfg.originate {
            rib.originate(IpNet::V4(*b), PathAttrs::local(cfg.local_addr));
        }
        let restart_time = Duration::from_secs(u64::from(cfg.graceful_restart.unwrap_or(120)));
        let deferral_until = cfg.restarted.then(|| now + restart_time);
        if cfg.restarted {
            rib.defer();
        }
        let mut sp = Speaker {
            cfg,
            rib,
            peers,
            listener,
            deferral_until,
            backlog: Vec::new(),
            changed: true,
            started: (now, SystemTime::now()),
        };
        // Start outgoing connections right away instead of on the first tick.
        for i in 0..sp.peers.len() {
            if !sp.peers[i].cfg.passive {
                sp.connect(registry, i);
            }
        }
        Ok(sp)
    }

    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// True once after every Loc-RIB change: time to rebuild the FIB.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.backlog.is_empty() {
            return Some(Instant::now());
        }
        let peers = self.peers.iter().flat_map(|p| [p.fsm.poll_timeout(), p.helper.poll_timeout()]);
        peers.chain([self.deferral_until]).flatten().min()
    }

    /// Goes on reading from peers whose read budget ran out ([`Speaker::poll_timeout`] is
    /// then immediate).
    pub fn resume(&mut self, registry: &Registry, now: Instant) {
        for i in std::mem::take(&mut self.backlog) {
            self.read(registry, i, now);
        }
    }

    fn wall(&self, t: Instant) -> u64 {
        let (mono, wall) = self.started;
        let at = if t >= mono { wall + (t - mono) } else { wall - (mono - t) };
        at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    pub fn status(&self) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let state = p.fsm.state();
                // Every state but up says why, or what it waits for.
                let info = match (state, p.fsm.last_error()) {
                    (State::Established, _) if self.rib.deferring() => {
                        "Established; our routes wait for every peer's End-of-RIB (we restarted)".to_string()
                    }
                    (State::Established, _) if p.helper.active() => {
                        "Established; its routes from before its restart are stale until its End-of-RIB".to_string()
                    }
                    (State::Established, _) => "Established".to_string(),
                    (_, Some(e)) => match p.helper.poll_timeout() {
                        Some(t) => {
                            let left = t.saturating_duration_since(Instant::now()).as_secs();
                            format!("{e}; its routes are kept (graceful restart) for up to {left} s more")
                        }
                        None => e.to_string(),
                    },
                    (State::Active, None) if p.cfg.passive => "waiting for the peer to connect".into(),
                    (State::Connect | State::Active, None) => format!("connecting to {}:{}", p.cfg.address, p.cfg.port),
                    (State::OpenSent, None) => "connected; waiting for the peer's OPEN".into(),
                    (State::OpenConfirm, None) => "OPENs exchanged; waiting for the peer's KEEPALIVE".into(),
                    (State::Idle, None) => "idle: not started".into(),
                };
                PeerStatus {
                    peer: p.cfg.address,
                    peer_type: p.cfg.kind,
                    asn: p.cfg.as_number,
                    state: match state {
                        State::Established => "up".into(),
                        s => s.name().to_string(),
                    },
                    since: self.wall(p.fsm.since()),
                    info,
                    received: self.rib.received(i as PeerId),
                    rejected: self.rib.rejected(i as PeerId),
                    advertised: self.rib.advertised(i as PeerId),
                    flaps: p.flaps,
                    updates_received: p.updates_received,
                    updates_sent: p.updates_sent,
                }
            })
            .collect()
    }

    fn token(i: usize) -> Token {
        Token(PEER_BASE + i)
    }

    fn connect(&mut self, registry: &Registry, i: usize) {
        if self.peers[i].conn.is_some() {
            return;
        }
        let now = Instant::now();
        match self.open_outgoing(i) {
            Ok(mut stream) => {
                if let Err(e) = registry.register(&mut stream, Self::token(i), Interest::READABLE | Interest::WRITABLE)
                {
                    self.feed(registry, i, now, Input::TcpFailed(e.to_string()));
                    return;
                }
                self.peers[i].conn = Some(Conn {
                    stream,
                    rbuf: Vec::new(),
                    wbuf: Vec::new(),
                    connecting: true,
                    opened: now,
                    sent_at: now,
                });
            }
            Err(e) => self.feed(registry, i, now, Input::TcpFailed(e.to_string())),
        }
    }

    fn open_outgoing(&self, i: usize) -> io::Result<TcpStream> {
        let p = &self.peers[i].cfg;
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
        s.set_nonblocking(true)?;
        s.set_nodelay(true)?;
        s.bind(&SockAddr::from(SocketAddr::V4(SocketAddrV4::new(self.cfg.local_addr, 0))))?;
        if let Some(pw) = &p.password {
            netsys::set_tcp_md5(s.as_fd(), p.address, pw.as_bytes())?;
        }
        if let Some(hops) = p.ttl_security {
            gtsm(&s, hops)?;
        }
        let to = SockAddr::from(SocketAddr::V4(SocketAddrV4::new(p.address, p.port)));
        match s.connect(&to) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(s.into()))
    }

    /// Handles a readiness event for the listener or a peer connection.
    pub fn handle(&mut self, registry: &Registry, token: Token, now: Instant) {
        if token == LISTEN {
            self.accept(registry, now);
            return;
        }
        let Some(i) = token.0.checked_sub(PEER_BASE).filter(|i| *i < self.peers.len()) else { return };
        let Some(conn) = self.peers[i].conn.as_mut() else { return };
        if conn.connecting {
            match conn.stream.take_error() {
                Ok(None) if conn.stream.peer_addr().is_ok() => {
                    conn.connecting = false;
                    self.feed(registry, i, now, Input::TcpUp);
                }
                Ok(None) => return, // still connecting
                Ok(Some(e)) | Err(e) => {
                    self.drop_conn(registry, i);
                    self.feed(registry, i, now, Input::TcpFailed(e.to_string()));
                    return;
                }
            }
        }
        self.flush(registry, i);
        self.pump(registry, i);
        self.read(registry, i, now);
    }

    /// Feeds a peer the next slices of its initial table while its output runs low: the
    /// table is built as the peer reads it, not all at once.
    fn pump(&mut self, registry: &Registry, i: usize) {
        while self.rib.syncing(i as PeerId)
            && self.peers[i].conn.as_ref().is_some_and(|c| !c.connecting && c.wbuf.len() < SYNC_LOW_WATER)
        {
            let ch = self.rib.sync_next(i as PeerId);
            self.apply(registry, ch);
        }
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut stream, from) = match self.listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "BGP accept failed");
                    return;
                }
            };
            let IpAddr::V4(from_ip) = from.ip() else { continue };
            let Some(i) = self.peers.iter().position(|p| p.cfg.address == from_ip) else {
                tracing::info!(%from, "refused a BGP connection from an address that is not a peer");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            };
            if self.peers[i].cfg.ttl_security.is_some() {
                // GTSM: the listener, shared by every peer, let this handshake through whatever
                // its TTL. The session runs on the connection we open, whose socket checks it.
                tracing::debug!(%from, "closed a GTSM peer's connection: we connect to it ourselves");
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            // One session per peer (RFC 4271 §6.8): of two connections, the one opened by
            // the speaker with the higher BGP Identifier survives. The peer's identifier is
            // in its OPEN once we are in OpenConfirm; before that it is the one of the last
            // session, or else its address (a Calico node's router ID). Between our nodes
            // collisions do not happen: the higher address only listens.
            let state = self.peers[i].fsm.state();
            let ours_pending = self.peers[i].conn.is_some();
            let peer = &self.peers[i];
            let peer_id = peer.fsm.negotiated().or(peer.last_negotiated.as_ref()).map_or(from_ip, |n| n.peer_id);
            let theirs_wins = !bgp::fsm::keep_ours(self.cfg.router_id, peer_id);
            // RFC 4724 §4.2: from a peer doing graceful restart, a new connection while the
            // session looks Established means it restarted: the old session ends as if its
            // connection had been lost (routes kept, stale) and the new one goes on.
            let restarted = state == State::Established && peer.fsm.negotiated().is_some_and(|n| n.peer_gr.is_some());
            let take = match state {
                State::Idle | State::Active | State::Connect => true,
                State::OpenSent | State::OpenConfirm => theirs_wins,
                State::Established => restarted,
            };
            if !take {
                let _ = stream.shutdown(Shutdown::Both);
                continue;
            }
            let _ = stream.set_nodelay(true);
            if restarted {
                tracing::info!(peer = %from_ip, "new connection from an established peer: it restarted");
                self.feed(registry, i, now, Input::PeerRestarted);
                let _ = self.peers[i].fsm.process(now, Input::Start);
            } else if matches!(state, State::OpenSent | State::OpenConfirm) {
                // Cease on ours, then the exchange starts over on the peer's connection.
                self.feed(registry, i, now, Input::Collision);
            } else if ours_pending {
                // Our connect is still in progress: the peer's connection is here first.
                self.drop_conn(registry, i);
            }
            if state == State::Idle {
                // Backing off after an error: the peer's connection ends the wait. The FSM's
                // Connect output is moot, the connection is already here.
                let _ = self.peers[i].fsm.process(now, Input::Start);
            }
            if registry.register(&mut stream, Self::token(i), Interest::READABLE | Interest::WRITABLE).is_err() {
                continue;
            }
            self.peers[i].conn =
                Some(Conn { stream, rbuf: Vec::new(), wbuf: Vec::new(), connecting: false, opened: now, sent_at: now });
            self.feed(registry, i, now, Input::TcpUp);
        }
    }

    /// Reads what the socket has (until it would block, as edge-triggered polling needs) and
    /// handles each whole message after every read, so the buffer stays small and a full
    /// table streaming in is decoded as it arrives, each byte moved once.
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
            let Some(conn) = self.peers[i].conn.as_mut() else { return };
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    self.drop_conn(registry, i);
                    self.feed(registry, i, now, Input::TcpClosed("the peer closed the connection".into()));
                    return;
                }
                Ok(n) => {
                    conn.rbuf.extend_from_slice(&buf[..n]);
                    budget = budget.saturating_sub(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.drop_conn(registry, i);
                    self.feed(registry, i, now, Input::TcpClosed(e.to_string()));
                    return;
                }
            }
            if !self.handle_messages(registry, i, now) {
                return;
            }
        }
    }

    /// Feeds every whole message in the read buffer to the FSM; false when the connection
    /// is gone or had to be reset.
    fn handle_messages(&mut self, registry: &Registry, i: usize, now: Instant) -> bool {
        let mut used = 0;
        loop {
            let ctx = self.peers[i].ctx;
            let Some(conn) = self.peers[i].conn.as_mut() else { return false };
            match wire::decode(&conn.rbuf[used..], &ctx) {
                Ok(Some((m, n))) => {
                    used += n;
                    self.feed(registry, i, now, Input::Message(m));
                }
                Ok(None) => {
                    conn.rbuf.drain(..used);
                    return true;
                }
                Err(n) => {
                    conn.rbuf.clear();
                    self.feed(registry, i, now, Input::DecodeError(n));
                    return false;
                }
            }
        }
    }

    fn flush(&mut self, registry: &Registry, i: usize) {
        let Some(conn) = self.peers[i].conn.as_mut() else { return };
        if conn.connecting {
            return;
        }
        if conn.wbuf.is_empty() {
            conn.sent_at = Instant::now();
        }
        while !conn.wbuf.is_empty() {
            match conn.stream.write(&conn.wbuf) {
                Ok(0) => break,
                Ok(n) => {
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

    fn send(&mut self, registry: &Registry, i: usize, m: &Message) {
        if matches!(m, Message::Update(_)) {
            self.peers[i].updates_sent += 1;
        }
        let ctx = self.peers[i].ctx;
        if let Some(conn) = self.peers[i].conn.as_mut() {
            if conn.wbuf.is_empty() {
                conn.sent_at = Instant::now();
            }
            m.encode(&ctx, &mut conn.wbuf);
        }
        self.flush(registry, i);
        let queued = self.peers[i].conn.as_ref().map_or(0, |c| c.wbuf.len());
        if queued > OUT_CAP {
            let reason = format!("the peer is not reading: {} MiB of output queued; reset", queued >> 20);
            let n = wire::Notification::new(wire::err::CEASE, wire::err::OUT_OF_RESOURCES);
            // Whatever is queued goes: the session starts over with a fresh table.
            if let Some(c) = self.peers[i].conn.as_mut() {
                c.wbuf.clear();
            }
            self.feed(
                registry,
                i,
                Instant::now(),
                Input::Shutdown { notification: n, reason, hold_down: Duration::from_secs(5) },
            );
        }
    }

    fn drop_conn(&mut self, registry: &Registry, i: usize) {
        if let Some(mut c) = self.peers[i].conn.take() {
            // Whatever is queued (a NOTIFICATION) gets one last chance.
            let _ = c.stream.write(&c.wbuf);
            let _ = registry.deregister(&mut c.stream);
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Feeds one input to peer `i`'s FSM and carries out what it asks.
    fn feed(&mut self, registry: &Registry, i: usize, now: Instant, input: Input) {
        if let Some(n) = self.peers[i].fsm.negotiated() {
            self.peers[i].last_negotiated = Some(n.clone());
        }
        let was_established = self.peers[i].fsm.state() == State::Established;
        let outputs = self.peers[i].fsm.process(now, input);
        for o in outputs {
            match o {
                Output::Connect => self.connect(registry, i),
                Output::Send(m) => self.send(registry, i, &m),
                Output::Close => self.drop_conn(registry, i),
                Output::Established(neg) => {
                    tracing::info!(peer = %self.peers[i].cfg.address, hold = neg.hold_time, "BGP session up");
                    self.peers[i].ctx = Ctx { four_octet_as: neg.four_octet_as };
                    self.rib.set_router_id(i as PeerId, neg.peer_id);
                    self.peers[i].eor = false;
                    // Back from a restart: families whose forwarding state it did not keep
                    // lose their stale routes now (RFC 4724 §4.2).
                    for afi in self.peers[i].helper.up(&neg, &neg.families).flush {
                        let ch = self.rib.purge_stale_family(i as PeerId, Some(afi));
                        self.apply(registry, ch);
                    }
                    if !self.rib.has_stale(i as PeerId) {
                        self.peers[i].helper.done();
                    }
                    let ch = self.rib.peer_up(i as PeerId, &neg.families);
                    self.apply(registry, ch);
                    self.pump(registry, i);
                }
                Output::Down(reason) => {
                    self.peers[i].ctx = Ctx::default();
                    if was_established {
                        self.peers[i].flaps += 1;
                        tracing::info!(peer = %self.peers[i].cfg.address, %reason, "BGP session down");
                    } else {
                        tracing::debug!(peer = %self.peers[i].cfg.address, %reason, "BGP session not established");
                    }
                    // RFC 4724 §4.2 (and RFC 8538): a restarting peer keeps its routes, stale.
                    let max_stale = self.cfg.max_stale;
                    let p = &mut self.peers[i];
                    let keep = p.helper.down(now, was_established, &reason, p.last_negotiated.as_ref(), max_stale);
                    let ch = self.rib.peer_down(i as PeerId, keep);
                    self.apply(registry, ch);
                }
                Output::Update(u) => {
                    self.peers[i].updates_received += 1;
                    let ch = self.rib.update(i as PeerId, &u);
                    if !self.rib.has_stale(i as PeerId) {
                        self.peers[i].helper.done();
                    }
                    if u.is_end_of_rib() == Some(Afi::Ipv4) {
                        self.peers[i].eor = true;
                    }
                    self.apply(registry, ch);
                    self.end_deferral_if_ready(registry, now);
                    if let Some((max, got)) = self.rib.over_limit(i as PeerId) {
                        self.feed(registry, i, now, max_prefixes_shutdown(max, got));
                    }
                }
                Output::RefreshRequested(_) => {
                    let fams = self.peers[i].last_negotiated.as_ref().map(|n| n.families.clone()).unwrap_or_default();
                    let ch = self.rib.peer_up(i as PeerId, &fams);
                    self.apply(registry, ch);
                    self.pump(registry, i);
                }
            }
        }
    }

    fn apply(&mut self, registry: &Registry, ch: Changes) {
        if !ch.loc.is_empty() {
            self.changed = true;
        }
        for (to, u) in ch.out {
            self.send(registry, to as usize, &Message::Update(u));
        }
    }

    /// Fires due timers.
    pub fn tick(&mut self, registry: &Registry, now: Instant) {
        for i in 0..self.peers.len() {
            // A SYN that is never answered (peer down, or a TCP MD5 mismatch, which the kernel
            // drops silently) would otherwise hang for minutes in the kernel's retries.
            let stalled = self.peers[i]
                .conn
                .as_ref()
                .is_some_and(|c| c.connecting && now.duration_since(c.opened) >= self.cfg.connect_retry);
            if stalled {
                self.drop_conn(registry, i);
                let gtsm = match self.peers[i].cfg.ttl_security {
                    Some(h) => {
                        format!(", or its packets arrive with a TTL below {} (ttl_security)", gtsm_min_ttl(h))
                    }
                    None => String::new(),
                };
                let msg = format!(
                    "no answer to TCP connect within {} s (peer down, or a TCP MD5 password mismatch{gtsm})",
                    self.cfg.connect_retry.as_secs()
                );
                self.feed(registry, i, now, Input::TcpFailed(msg));
            }
            // GTSM: a peer that sends below the TTL we require gets its handshake through when
            // its listener sends at 255 (BIRD's does), and then its OPEN is dropped. Waiting the
            // OpenSent hold time (4 minutes) would tell nobody anything.
            let silent_gtsm = self.peers[i].cfg.ttl_security.filter(|_| {
                self.peers[i].fsm.state() == State::OpenSent
                    && self.peers[i]
                        .conn
                        .as_ref()
                        .is_some_and(|c| now.duration_since(c.opened) >= self.cfg.connect_retry)
            });
            if let Some(h) = silent_gtsm {
                self.drop_conn(registry, i);
                let msg = format!(
                    "no OPEN within {} s; its packets may arrive with a TTL below {} (ttl_security), which the kernel drops",
                    self.cfg.connect_retry.as_secs(),
                    gtsm_min_ttl(h)
                );
                self.feed(registry, i, now, Input::TcpFailed(msg));
            }
            // RFC 9687: output stuck for the send hold time ends the session.
            let hold = self.peers[i].fsm.negotiated().map_or(0, |n| u64::from(n.hold_time));
            let send_hold = SEND_HOLD_MIN.max(Duration::from_secs(2 * hold));
            let stuck = self.peers[i]
                .conn
                .as_ref()
                .is_some_and(|c| !c.wbuf.is_empty() && now.duration_since(c.sent_at) >= send_hold);
            if stuck {
                let reason = format!("send hold timer expired: nothing could be sent for {} s", send_hold.as_secs());
                let n = wire::Notification::new(wire::err::SEND_HOLD_TIMER_EXPIRED, 0);
                self.feed(
                    registry,
                    i,
                    now,
                    Input::Shutdown { notification: n, reason, hold_down: Duration::from_secs(5) },
                );
            }
            if self.peers[i].fsm.poll_timeout().is_some_and(|t| t <= now) {
                self.feed(registry, i, now, Input::Tick);
            }
            if self.peers[i].helper.expired(now) {
                let ch = self.rib.purge_stale(i as PeerId);
                self.apply(registry, ch);
            }
        }
        self.end_deferral_if_ready(registry, now);
    }

    /// After our own restart, the table goes out once every peer is back and has sent its
    /// End-of-RIB (a peer without graceful restart sends none: it is not waited for), or
    /// when the restart time is up (RFC 4724 §4.1's selection deferral).
    fn end_deferral_if_ready(&mut self, registry: &Registry, now: Instant) {
        if !self.rib.deferring() {
            return;
        }
        let all_back = self.peers.iter().all(|p| {
            p.fsm.state() == State::Established && (p.eor || p.fsm.negotiated().is_some_and(|n| n.peer_gr.is_none()))
        });
        if !all_back && self.deferral_until.is_some_and(|t| t > now) {
            return;
        }
        tracing::info!(all_back, "restart complete: sending our routes");
        self.deferral_until = None;
        for p in &mut self.peers {
            p.fsm.restart_done();
        }
        let ch = self.rib.end_deferral();
        self.changed = true;
        self.apply(registry, ch);
        for i in 0..self.peers.len() {
            self.pump(registry, i);
        }
    }

    /// Whether this node is still deferring after its restart (its FIB then holds the routes
    /// it saved before, not the half-learned Loc-RIB).
    pub fn deferring(&self) -> bool {
        self.rib.deferring()
    }

    /// A planned restart: the connections close without a NOTIFICATION, so peers doing
    /// graceful restart keep our routes until we are back (RFC 4724 §4.2).
    pub fn close_for_restart(&mut self, registry: &Registry) {
        for i in 0..self.peers.len() {
            self.drop_conn(registry, i);
        }
    }

    /// Sends Cease to every peer (on shutdown).
    pub fn stop(&mut self, registry: &Registry) {
        let now = Instant::now();
        for i in 0..self.peers.len() {
            self.feed(registry, i, now, Input::Stop);
        }
    }

    /// The next hops of the routes learned from cluster nodes: the only sources, besides the
    /// configured ones, IPIP is accepted from. An external peer's next hop is not a node.
    pub fn cluster_next_hops(&self) -> std::collections::HashSet<Ipv4Addr> {
        self.rib
            .loc_rib()
            .iter()
            .filter_map(|(_, b)| match (b.from, b.attrs.next_hop) {
                (bgp::rib::From::Peer(id), IpAddr::V4(nh)) if self.rib.peer(id).is_some_and(|p| !p.external) => {
                    Some(nh)
                }
                _ => None,
            })
            .collect()
    }

    /// What a peer sent that import refused, and why.
    pub fn rejected(&self, peer: Option<Ipv4Addr>) -> Vec<nodeapi::admin::RejectedRoute> {
        let mut out = Vec::new();
        for (i, p) in self.peers.iter().enumerate().filter(|(_, p)| peer.is_none_or(|a| a == p.cfg.address)) {
            let filters = self.rib.peer(i as PeerId).map(|x| x.filters.clone()).unwrap_or_default();
            out.extend(self.rib.rejected_routes(i as PeerId).into_iter().map(|(prefix, why)| {
                nodeapi::admin::RejectedRoute {
                    peer: p.cfg.address,
                    prefix: prefix.to_string(),
                    reason: why.describe(&filters),
                }
            }));
        }
        out
    }

    /// Every path for `prefix` and the step of the decision process that ruled it out.
    pub fn paths(&self, prefix: &IpNet) -> Vec<nodeapi::admin::PathDetail> {
        self.rib.candidates(prefix).iter().map(|c| self.path_detail(c)).collect()
    }

    fn path_detail(&self, c: &Candidate) -> nodeapi::admin::PathDetail {
        let (from, peer_type, router_id) = match c.from {
            bgp::rib::From::Local => ("this node".to_string(), None, Some(self.cfg.router_id)),
            bgp::rib::From::Peer(id) => {
                let p = self.peers.get(id as usize);
                (
                    p.map_or_else(|| "?".into(), |p| p.cfg.address.to_string()),
                    p.map(|p| p.cfg.kind),
                    self.rib.peer(id).map(|p| p.router_id),
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
            origin: format!("{:?}", a.origin),
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
        self.rib
            .loc_rib()
            .iter()
            .filter(|(_, b)| b.from != bgp::rib::From::Local)
            .filter_map(|(p, b)| match (p, b.attrs.next_hop) {
                (IpNet::V4(p), IpAddr::V4(nh)) => Some((p, nh)),
                _ => None,
            })
            .collect()
    }
}

/// RFC 4486 §4: Cease, "maximum number of prefixes reached", with AFI, SAFI and the limit.
fn max_prefixes_shutdown(max: u32, got: usize) -> Input {
    let mut data = vec![0, 1, 1];
    data.extend_from_slice(&max.to_be_bytes());
    Input::Shutdown {
        notification: wire::Notification::with_data(wire::err::CEASE, wire::err::MAX_PREFIXES, &data),
        reason: format!(
            "sent {got} prefixes, more than max_prefixes = {max}: shut down (Cease, maximum prefixes), retrying in {} s",
            MAX_PREFIXES_HOLD_DOWN.as_secs()
        ),
        hold_down: MAX_PREFIXES_HOLD_DOWN,
    }
}
