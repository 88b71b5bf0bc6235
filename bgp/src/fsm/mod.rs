//! The BGP session state machine (RFC 4271 §8), sans-IO: events go in with the current time,
//! actions come out. It opens no socket and reads no clock; the session driver turns
//! [`Output`]s into I/O and feeds back what happened.
//!
//! Idle → Connect/Active → OpenSent → OpenConfirm → Established, with the connect-retry,
//! hold and keepalive timers, hold-time negotiation (0, or ≥ 3), and an exponential idle
//! back-off after errors so a broken peer is not hammered.

use super::wire::{err, Afi, Capability, Message, Notification, Open, Update};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// What the session is configured to be.
#[derive(Debug, Clone)]
pub struct FsmConfig {
    pub local_as: u32,
    pub peer_as: u32,
    pub local_id: Ipv4Addr,
    /// Proposed hold time in seconds (0 disables keepalives, else ≥ 3).
    pub hold_time: u16,
    pub connect_retry: Duration,
    /// Wait for the peer to connect instead of connecting (Calico: the higher address waits).
    pub passive: bool,
    pub families: Vec<Afi>,
    /// Announce the graceful-restart capability with this restart time.
    pub graceful_restart: Option<u16>,
    /// Seconds between our keepalives (Calico's BGPPeer keepaliveTime, BIRD's `keepalive
    /// time`); absent: a third of the negotiated hold time, which also caps it, so that a
    /// long setting cannot let the peer's hold timer run out.
    pub keepalive: Option<u16>,
    /// We have just restarted and kept forwarding meanwhile: R and F set in our OPEN until
    /// [`Fsm::restart_done`].
    pub restarted: bool,
}

/// What both sides agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_id: Ipv4Addr,
    pub peer_as: u32,
    pub hold_time: u16,
    pub four_octet_as: bool,
    pub families: Vec<Afi>,
    pub route_refresh: bool,
    /// The peer's graceful-restart time, if it announced the capability (RFC 4724).
    pub peer_restart_time: Option<u16>,
    /// The peer's graceful-restart capability.
    pub peer_gr: Option<crate::restart::PeerGr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Administrative start (also re-armed automatically after the idle back-off).
    Start,
    /// Administrative stop: Cease, and stay idle.
    Stop,
    /// Shut the session down with this NOTIFICATION (a Cease, such as RFC 4486's maximum
    /// number of prefixes reached) and stay down for `hold_down` before trying again.
    Shutdown {
        notification: Notification,
        reason: String,
        hold_down: Duration,
    },
    /// The TCP connection (ours or an accepted one) is up.
    TcpUp,
    /// Connecting failed.
    TcpFailed(String),
    /// The connection closed under us.
    TcpClosed(String),
    /// A connection the peer opened won the collision with ours (RFC 4271 §6.8): ours is
    /// closed with a Cease, and the OPEN exchange starts over on the peer's (`TcpUp` next).
    Collision,
    Message(Message),
    /// The bytes from the peer did not decode: send this and reset.
    DecodeError(Notification),
    /// The peer opened a new connection while this session looked Established: it
    /// restarted (RFC 4724 §4.2). This session ends as if its connection had been lost.
    PeerRestarted,
    /// Time passed; fire whatever timers are due.
    Tick,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    Send(Message),
    /// Close the TCP connection (after sending what is queued).
    Close,
    Established(Negotiated),
    /// The session left Established (or never got there), and why.
    Down(Down),
    /// An UPDATE for the RIB.
    Update(Update),
    /// The peer asked for our routes again (RFC 2918).
    RefreshRequested(u16),
}

/// Why a session went down: typed, because graceful restart decides on it (a lost
/// connection keeps the peer's routes, a NOTIFICATION does not), and shown by `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// The connection closed or failed under us, without a NOTIFICATION.
    ConnectionLost(String),
    HoldTimerExpired,
    /// The peer sent this NOTIFICATION.
    Received(Notification),
    /// We sent this NOTIFICATION about an error of the peer's (`why`: which, in words).
    Sent {
        notification: Notification,
        why: String,
    },
    /// Stopped by the operator (Cease, administrative shutdown).
    Stopped,
    /// Shut down by policy (maximum prefixes, output stuck, ...) with this NOTIFICATION.
    Shutdown {
        notification: Notification,
        why: String,
    },
    /// A new connection came from the peer while this one looked Established: the peer
    /// restarted (RFC 4724 §4.2).
    PeerRestarted,
}

impl Down {
    /// The NOTIFICATION that ended the session, either way.
    pub fn notification(&self) -> Option<&Notification> {
        match self {
            Down::Received(n) | Down::Sent { notification: n, .. } | Down::Shutdown { notification: n, .. } => Some(n),
            _ => None,
        }
    }
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::ConnectionLost(e) => write!(f, "connection closed: {e}"),
            Down::HoldTimerExpired => f.write_str("hold timer expired"),
            Down::Received(n) => write!(f, "received NOTIFICATION: {n}"),
            Down::Sent { notification, why } if why.is_empty() => write!(f, "sent NOTIFICATION: {notification}"),
            Down::Sent { why, .. } | Down::Shutdown { why, .. } => f.write_str(why),
            Down::Stopped => f.write_str("stopped by the operator"),
            Down::PeerRestarted => f.write_str("the peer restarted: a new connection came while this one was up"),
        }
    }
}

#[derive(Debug)]
pub struct Fsm {
    cfg: FsmConfig,
    state: State,
    since: Instant,
    /// Whether to restart by itself after an error (false after Stop).
    auto_start: bool,
    idle_until: Option<Instant>,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// Consecutive failures, for the back-off.
    failures: u32,
    negotiated: Option<Negotiated>,
    last_error: Option<String>,
}

/// Hold time while waiting for the peer's OPEN (RFC 4271 §8.2.2 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Fsm {
    pub fn new(cfg: FsmConfig, now: Instant) -> Fsm {
        Fsm {
            cfg,
            state: State::Idle,
            since: now,
            auto_start: false,
            idle_until: None,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            failures: 0,
            negotiated: None,
            last_error: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn since(&self) -> Instant {
        self.since
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// Our restart is over (End-of-RIB from every peer, or the deferral ran out): later
    /// OPENs no longer say we restarted.
    pub fn restart_done(&mut self) {
        self.cfg.restarted = false;
    }

    /// The earliest time a `Tick` has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.idle_until, self.connect_retry_at, self.hold_at, self.keepalive_at].into_iter().flatten().min()
    }

    fn goto(&mut self, now: Instant, s: State) {
        if self.state != s {
            self.state = s;
            self.since = now;
        }
    }

    fn our_open(&self) -> Open {
        let mut caps: Vec<Capability> =
            self.cfg.families.iter().map(|f| Capability::Multiprotocol { afi: f.code(), safi: 1 }).collect();
        caps.push(Capability::RouteRefresh);
        if let Some(t) = self.cfg.graceful_restart {
            let fams: Vec<(Afi, bool)> = self.cfg.families.iter().map(|f| (*f, self.cfg.restarted)).collect();
            caps.push(crate::restart::capability(t, self.cfg.restarted, &fams));
        }
        caps.push(Capability::FourOctetAs(self.cfg.local_as));
        Open::new(self.cfg.local_as, self.cfg.hold_time, self.cfg.local_id, caps)
    }

    /// Leaves the session after an error: notify if we can, close, back off, report.
    fn fail(&mut self, now: Instant, reason: Down, out: &mut Vec<Output>) {
        let notify = match &reason {
            Down::Sent { notification, .. } | Down::Shutdown { notification, .. } => Some(notification.clone()),
            Down::HoldTimerExpired => Some(Notification::new(err::HOLD_TIMER_EXPIRED, 0)),
            Down::Stopped => Some(Notification::new(err::CEASE, err::ADMIN_SHUTDOWN)),
            Down::ConnectionLost(_) | Down::Received(_) | Down::PeerRestarted => None,
        };
        if let Some(n) = notify {
            if matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established) {
                out.push(Output::Send(Message::Notification(n)));
            }
        }
        if !matches!(self.state, State::Idle) {
            out.push(Output::Close);
        }
        self.last_error = Some(reason.to_string());
        out.push(Output::Down(reason));
        self.failures = self.failures.saturating_add(1);
        // Exponential back-off: 1 s, 2 s, 4 s ... up to 60 s before trying again.
        let backoff = BACKOFF_BASE.saturating_mul(1 << (self.failures - 1).min(6)).min(BACKOFF_MAX);
        self.idle_until = self.auto_start.then_some(now + backoff);
        self.connect_retry_at = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.negotiated = None;
        self.goto(now, State::Idle);
    }

    fn start(&mut self, now: Instant, out: &mut Vec<Output>) {
        self.idle_until = None;
        self.connect_retry_at = Some(now + self.cfg.connect_retry);
        if self.cfg.passive {
            self.goto(now, State::Active);
        } else {
            out.push(Output::Connect);
            self.goto(now, State::Connect);
        }
    }

    fn arm_hold(&mut self, now: Instant) {
        let h = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        if h == 0 {
            self.hold_at = None;
            self.keepalive_at = None;
        } else {
            self.hold_at = Some(now + Duration::from_secs(u64::from(h)));
        }
    }

    fn arm_keepalive(&mut self, now: Instant) {
        let h = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        // RFC 4271 §10: keepalives at a third of the hold time, or more often if configured.
        let third = Duration::from_secs(u64::from(h)) / 3;
        let every = self.cfg.keepalive.map_or(third, |k| Duration::from_secs(u64::from(k.max(1))).min(third));
        self.keepalive_at = (h > 0).then(|| now + every);
    }

    /// Checks the peer's OPEN (RFC 4271 §6.2) and works out what was negotiated.
    fn accept_open(&self, o: &Open) -> Result<Negotiated, Notification> {
        if o.asn() != self.cfg.peer_as {
            return Err(Notification::with_data(err::OPEN, err::BAD_PEER_AS, &o.my_as.to_be_bytes()));
        }
        if o.bgp_id.is_unspecified() || (o.bgp_id == self.cfg.local_id && self.cfg.local_as == self.cfg.peer_as) {
            return Err(Notification::with_data(err::OPEN, err::BAD_BGP_ID, &o.bgp_id.octets()));
        }
        if o.hold_time == 1 || o.hold_time == 2 {
            return Err(Notification::with_data(err::OPEN, err::UNACCEPTABLE_HOLD_TIME, &o.hold_time.to_be_bytes()));
        }
        let peer_mp: Vec<Afi> = o
            .capabilities()
            .filter_map(|c| match c {
                Capability::Multiprotocol { afi, safi: 1 } => Afi::from_code(*afi),
                _ => None,
            })
            .collect();
        // RFC 4760 §8: a speaker without the MP capability carries IPv4 unicast.
        let peer_families =
            if o.has(|c| matches!(c, Capability::Multiprotocol { .. })) { peer_mp } else { vec![Afi::Ipv4] };
        let families: Vec<Afi> = self.cfg.families.iter().copied().filter(|f| peer_families.contains(f)).collect();
        if families.is_empty() {
            // Nothing in common (an IPv6 session to a peer that offers IPv4 only): a session
            // that carries nothing would look up and never sync. RFC 5492 §5: name ours.
            let ours: Vec<u8> = self
                .cfg
                .families
                .iter()
                .flat_map(|f| Capability::Multiprotocol { afi: f.code(), safi: 1 }.to_bytes())
                .collect();
            return Err(Notification::with_data(err::OPEN, err::UNSUPPORTED_CAPABILITY, &ours));
        }
        // ADD-PATH (RFC 7911) is used only when both sides announce it; we never do, so an
        // offer from the peer changes nothing and its paths arrive without identifiers.
        Ok(Negotiated {
            peer_id: o.bgp_id,
            peer_as: o.asn(),
            hold_time: self.cfg.hold_time.min(o.hold_time),
            four_octet_as: o.has(|c| matches!(c, Capability::FourOctetAs(_))),
            families,
            route_refresh: o.has(|c| matches!(c, Capability::RouteRefresh | Capability::EnhancedRouteRefresh)),
            peer_restart_time: o.capabilities().find_map(|c| match c {
                Capability::GracefulRestart { time, .. } => Some(*time),
                _ => None,
            }),
            peer_gr: o.capabilities().find_map(crate::restart::PeerGr::from_capability),
        })
    }

    /// RFC 6608 subcodes: an unexpected message in OpenSent (1), OpenConfirm (2), Established (3).
    fn fsm_error(&self) -> Notification {
        let sub = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        Notification::new(err::FSM, sub)
    }

    pub fn process(&mut self, now: Instant, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => {
                self.auto_start = true;
                self.failures = 0;
                if self.state == State::Idle {
                    self.start(now, &mut out);
                }
            }
            Input::Stop => {
                self.auto_start = false;
                if self.state != State::Idle {
                    self.fail(now, Down::Stopped, &mut out);
                    self.failures = 0;
                }
                self.idle_until = None;
            }
            Input::Shutdown { notification, reason, hold_down } => {
                if self.state != State::Idle {
                    self.fail(now, Down::Shutdown { notification, why: reason }, &mut out);
                    self.idle_until = self.auto_start.then_some(now + hold_down);
                }
            }
            Input::TcpUp => match self.state {
                State::Connect | State::Active => {
                    self.connect_retry_at = None;
                    out.push(Output::Send(Message::Open(self.our_open())));
                    self.hold_at = Some(now + OPEN_HOLD);
                    self.goto(now, State::OpenSent);
                }
                _ => out.push(Output::Close),
            },
            Input::TcpFailed(e) => {
                if matches!(self.state, State::Connect | State::OpenSent) {
                    // RFC 4271 §8.2.2: go Active and retry when the connect-retry timer fires
                    // (from OpenSent too: the connection is gone before any OPEN came back).
                    let what = if self.state == State::Connect { "connect" } else { "waiting for OPEN" };
                    self.last_error = Some(format!("{what}: {e}"));
                    self.hold_at = None;
                    self.connect_retry_at = Some(now + self.cfg.connect_retry);
                    self.goto(now, State::Active);
                }
            }
            Input::Collision => {
                if matches!(self.state, State::OpenSent | State::OpenConfirm) {
                    let n = Notification::new(err::CEASE, err::COLLISION_RESOLUTION);
                    out.push(Output::Send(Message::Notification(n)));
                    out.push(Output::Close);
                    self.hold_at = None;
                    self.keepalive_at = None;
                    self.negotiated = None;
                    self.goto(now, State::Active);
                }
            }
            Input::TcpClosed(e) => {
                if self.state != State::Idle {
                    self.fail(now, Down::ConnectionLost(e), &mut out);
                }
            }
            Input::DecodeError(n) => self.fail(now, Down::Sent { notification: n, why: String::new() }, &mut out),
            Input::PeerRestarted => {
                if self.state != State::Idle {
                    self.fail(now, Down::PeerRestarted, &mut out);
                }
            }
            Input::Message(m) => self.message(now, m, &mut out),
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    fn message(&mut self, now: Instant, m: Message, out: &mut Vec<Output>) {
        if let Message::Notification(n) = &m {
            self.fail(now, Down::Received(n.clone()), out);
            return;
        }
        match (self.state, m) {
            (State::OpenSent, Message::Open(o)) => match self.accept_open(&o) {
                Ok(neg) => {
                    self.negotiated = Some(neg);
                    out.push(Output::Send(Message::Keepalive));
                    self.arm_hold(now);
                    self.arm_keepalive(now);
                    self.goto(now, State::OpenConfirm);
                }
                Err(n) => {
                    let why = format!("refused the peer's OPEN: {n}");
                    self.fail(now, Down::Sent { notification: n, why }, out)
                }
            },
            (State::OpenConfirm, Message::Keepalive) => {
                self.arm_hold(now);
                self.failures = 0;
                self.last_error = None;
                self.goto(now, State::Established);
                if let Some(n) = &self.negotiated {
                    out.push(Output::Established(n.clone()));
                }
            }
            (State::Established, Message::Keepalive) => self.arm_hold(now),
            (State::Established, Message::Update(u)) => {
                self.arm_hold(now);
                out.push(Output::Update(u));
            }
            (State::Established, Message::RouteRefresh(r)) => {
                self.arm_hold(now);
                out.push(Output::RefreshRequested(r.afi));
            }
            (State::Idle | State::Connect | State::Active, _) => {}
            (_, _) => {
                let n = self.fsm_error();
                let why = format!("unexpected message in {}", self.state.name());
                self.fail(now, Down::Sent { notification: n, why }, out);
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if self.state == State::Idle && due(self.idle_until) {
            self.start(now, out);
            return;
        }
        if due(self.hold_at) {
            self.fail(now, Down::HoldTimerExpired, out);
            return;
        }
        if due(self.connect_retry_at) && matches!(self.state, State::Connect | State::Active) {
            self.connect_retry_at = Some(now + self.cfg.connect_retry);
            if !self.cfg.passive {
                out.push(Output::Connect);
                self.goto(now, State::Connect);
            }
        }
        if due(self.keepalive_at) && matches!(self.state, State::OpenConfirm | State::Established) {
            out.push(Output::Send(Message::Keepalive));
            self.arm_keepalive(now);
        }
    }
}

/// RFC 4271 §6.8: when two connections to one peer both reach OpenConfirm, the one opened by
/// the speaker with the higher BGP Identifier survives. Returns true to keep the connection
/// *we* opened.
pub fn keep_ours(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

#[cfg(test)]
mod tests;
