//! Graceful restart (RFC 4724), both roles, without I/O: what a helper keeps of a peer that
//! went away and until when, and what a restarting speaker announces. The speaker feeds in
//! session events and `now`; decisions come back.
//!
//! We do not set RFC 8538's N bit, so graceful restart ends at any NOTIFICATION, a hold
//! timer expiry included: a node that froze or whose data plane died loses its routes at
//! the hold time or at once (the failover the lab shows), and only a lost connection (a
//! crash, a planned restart) keeps them. One NOTIFICATION is an exception: a cluster node's
//! "peer de-configured" ([`DECONFIGURED_HOLD`]).

use crate::fsm::{Down, Negotiated};
use crate::wire::{err, Afi, Capability};
use std::time::{Duration, Instant};

/// The capability's restart flags (upper nibble of its first two bytes).
pub mod flags {
    /// R: the sender has restarted (RFC 4724 §3).
    pub const RESTARTED: u8 = 0x8;
    /// Per family: forwarding state was kept across the restart.
    pub const FORWARDING: u8 = 0x80;
}

/// How long a cluster node's routes stay, stale, after it said it removed us from its
/// configuration (Cease, peer de-configured). Nodes read a change of the cluster's peering
/// (the mesh off, a reflector named) at slightly different moments, and a node that drops a
/// peering waits only until it has the routes by the new way itself: the other end may not
/// have them yet. Until our own removal of the peer (which waits for that way too), its
/// routes still carry the traffic. A node that really leaves is gone from our
/// configuration soon too.
pub const DECONFIGURED_HOLD: Duration = Duration::from_secs(10);

/// What the peer announced in its OPEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGr {
    pub restart_time: u16,
    /// It has just restarted (R).
    pub restarted: bool,
    /// The families it listed, and which of them kept their forwarding state (F).
    pub families: Vec<(Afi, bool)>,
}

impl PeerGr {
    pub fn from_capability(c: &Capability) -> Option<PeerGr> {
        let Capability::GracefulRestart { flags: f, time, families } = c else { return None };
        Some(PeerGr {
            restart_time: *time,
            restarted: f & flags::RESTARTED != 0,
            families: families
                .iter()
                .filter(|(_, safi, _)| *safi == 1)
                .filter_map(|(afi, _, fl)| Some((Afi::from_code(*afi)?, fl & flags::FORWARDING != 0)))
                .collect(),
        })
    }

    /// Whether this family's routes may stay while the session comes back.
    pub fn forwarding_kept(&self, afi: Afi) -> bool {
        self.families.iter().any(|(a, f)| *a == afi && *f)
    }
}

/// Our capability: restart time, whether we have just restarted (R, until our deferral
/// ends) and, per family, whether we kept forwarding meanwhile (F).
/// The longest restart time the capability can carry: 12 bits of seconds (RFC 4724 §3).
pub const MAX_RESTART_TIME: u16 = 0x0fff;

pub fn capability(restart_time: u16, restarted: bool, forwarding: &[(Afi, bool)]) -> Capability {
    let f = if restarted { flags::RESTARTED } else { 0 };
    Capability::GracefulRestart {
        flags: f,
        time: restart_time.min(MAX_RESTART_TIME),
        families: forwarding
            .iter()
            .map(|(afi, kept)| (afi.code(), 1, if *kept { flags::FORWARDING } else { 0 }))
            .collect(),
    }
}

/// The helper's side for one peer: whether its routes are kept (marked stale in the RIB)
/// and until when.
#[derive(Debug, Default)]
pub struct Helper {
    /// While set, the peer's stale routes live until then (or its End-of-RIB).
    stale_until: Option<Instant>,
    /// Why they are kept: the peer said it removed us from its configuration (else it is
    /// restarting).
    deconfigured: bool,
}

/// What the helper asks of the speaker when the peer's session comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resumed {
    /// Families whose stale routes go now (the peer kept no forwarding state for them, or
    /// does not do graceful restart any more).
    pub flush: Vec<Afi>,
}

impl Helper {
    /// The session went down: whether the peer's routes stay, stale. `cap` is our local
    /// limit on how long, whatever the peer's restart time says; `cluster`: the peer is a
    /// node of our cluster.
    pub fn down(
        &mut self,
        now: Instant,
        was_established: bool,
        why: &Down,
        negotiated: Option<&Negotiated>,
        cap: Duration,
        cluster: bool,
    ) -> bool {
        if !was_established {
            // A reconnect attempt that failed changes nothing: a restart in progress keeps
            // its routes until its own deadline.
            return self.stale_until.is_some();
        }
        let deconfigured =
            matches!(why, Down::Received(n) if n.code == err::CEASE && n.subcode == err::PEER_DECONFIGURED);
        self.deconfigured = cluster && deconfigured;
        if self.deconfigured {
            self.stale_until = Some(now + cap.min(DECONFIGURED_HOLD));
            return true;
        }
        let Some(gr) = negotiated.and_then(|n| n.peer_gr.as_ref()) else {
            self.stale_until = None;
            return false;
        };
        let keep = matches!(why, Down::ConnectionLost(_) | Down::PeerRestarted);
        if !keep || gr.restart_time == 0 {
            self.stale_until = None;
            return false;
        }
        self.stale_until = Some(now + cap.min(Duration::from_secs(u64::from(gr.restart_time))));
        true
    }

    /// The peer's session is up again: families without forwarding state go now; the rest
    /// stay stale until their End-of-RIB, within the same deadline.
    pub fn up(&mut self, negotiated: &Negotiated, families: &[Afi]) -> Resumed {
        if self.stale_until.is_none() {
            return Resumed { flush: Vec::new() };
        }
        let flush: Vec<Afi> = match &negotiated.peer_gr {
            Some(gr) => families.iter().copied().filter(|f| !gr.forwarding_kept(*f)).collect(),
            None => families.to_vec(),
        };
        if flush.len() == families.len() {
            self.stale_until = None;
        }
        Resumed { flush }
    }

    /// All stale routes are gone (End-of-RIB for every family, or flushed).
    pub fn done(&mut self) {
        self.stale_until = None;
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.stale_until
    }

    /// Whether the deadline passed: the stale routes go now.
    pub fn expired(&mut self, now: Instant) -> bool {
        if self.stale_until.is_some_and(|t| t <= now) {
            self.stale_until = None;
            return true;
        }
        false
    }

    pub fn active(&self) -> bool {
        self.stale_until.is_some()
    }

    /// The routes are kept because the peer de-configured us, not for a restart.
    pub fn deconfigured(&self) -> bool {
        self.deconfigured && self.active()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Notification;
    use std::net::Ipv4Addr;

    fn neg(gr: Option<PeerGr>) -> Negotiated {
        Negotiated {
            peer_id: Ipv4Addr::new(1, 1, 1, 1),
            peer_as: 64512,
            hold_time: 90,
            four_octet_as: true,
            families: vec![Afi::Ipv4],
            route_refresh: true,
            peer_restart_time: gr.as_ref().map(|g| g.restart_time),
            peer_gr: gr,
        }
    }

    fn gr(time: u16, f: bool) -> PeerGr {
        PeerGr { restart_time: time, restarted: false, families: vec![(Afi::Ipv4, f)] }
    }

    const CAP: Duration = Duration::from_secs(300);

    #[test]
    fn a_lost_connection_keeps_routes_for_the_restart_time_within_our_cap() {
        let now = Instant::now();
        let mut h = Helper::default();
        assert!(h.down(now, true, &Down::ConnectionLost("reset".into()), Some(&neg(Some(gr(120, true)))), CAP, true));
        assert_eq!(h.poll_timeout(), Some(now + Duration::from_secs(120)));
        let mut h = Helper::default();
        assert!(h.down(now, true, &Down::PeerRestarted, Some(&neg(Some(gr(4000, true)))), CAP, true));
        assert_eq!(h.poll_timeout(), Some(now + CAP), "our cap");
        assert!(!h.expired(now + CAP - Duration::from_secs(1)));
        assert!(h.expired(now + CAP) && !h.active());
    }

    #[test]
    fn no_capability_a_zero_restart_time_or_an_operator_stop_flushes() {
        let now = Instant::now();
        let lost = Down::ConnectionLost("x".into());
        assert!(!Helper::default().down(now, true, &lost, Some(&neg(None)), CAP, true));
        assert!(!Helper::default().down(now, true, &lost, Some(&neg(Some(gr(0, true)))), CAP, true));
        // A NOTIFICATION, or a hold timer expiry, ends the session for good.
        let cease = Down::Received(Notification::new(err::CEASE, err::ADMIN_SHUTDOWN));
        assert!(!Helper::default().down(now, true, &cease, Some(&neg(Some(gr(120, true)))), CAP, true));
        assert!(!Helper::default().down(
            now,
            true,
            &Down::HoldTimerExpired,
            Some(&neg(Some(gr(120, true)))),
            CAP,
            true
        ));
    }

    #[test]
    fn a_cluster_node_that_deconfigured_us_keeps_its_routes_a_short_while_an_outsider_not() {
        let now = Instant::now();
        let bye = Down::Received(Notification::new(err::CEASE, err::PEER_DECONFIGURED));
        let mut h = Helper::default();
        assert!(h.down(now, true, &bye, Some(&neg(None)), CAP, true), "even without graceful restart");
        assert_eq!(h.poll_timeout(), Some(now + DECONFIGURED_HOLD));
        assert!(h.deconfigured());
        // It refuses our reconnects meanwhile; that changes nothing.
        assert!(h.down(now + Duration::from_secs(1), false, &Down::ConnectionLost("refused".into()), None, CAP, true));
        assert!(h.expired(now + DECONFIGURED_HOLD) && !h.deconfigured());
        assert!(!Helper::default().down(now, true, &bye, Some(&neg(Some(gr(120, true)))), CAP, false), "external");
        let short = Duration::from_secs(2);
        let mut h = Helper::default();
        assert!(h.down(now, true, &bye, None, short, true));
        assert_eq!(h.poll_timeout(), Some(now + short), "within our cap");
    }

    #[test]
    fn failed_reconnects_do_not_flush_a_restart_in_progress() {
        let now = Instant::now();
        let mut h = Helper::default();
        assert!(h.down(now, true, &Down::ConnectionLost("x".into()), Some(&neg(Some(gr(120, true)))), CAP, true));
        let later = now + Duration::from_secs(10);
        for d in [Down::ConnectionLost("refused".into()), Down::HoldTimerExpired] {
            assert!(h.down(later, false, &d, None, CAP, true), "{d}");
        }
        assert_eq!(h.poll_timeout(), Some(now + Duration::from_secs(120)), "the deadline did not move");
        // Without a restart in progress, a failed attempt keeps nothing.
        assert!(!Helper::default().down(later, false, &Down::ConnectionLost("x".into()), None, CAP, true));
    }

    #[test]
    fn forwarding_bits_decide_per_family_when_the_peer_is_back() {
        let now = Instant::now();
        let mut h = Helper::default();
        h.down(now, true, &Down::PeerRestarted, Some(&neg(Some(gr(120, true)))), CAP, true);
        let back = neg(Some(PeerGr {
            families: vec![(Afi::Ipv4, true), (Afi::Ipv6, false)],
            restarted: true,
            ..gr(120, true)
        }));
        assert_eq!(h.up(&back, &[Afi::Ipv4, Afi::Ipv6]).flush, vec![Afi::Ipv6]);
        assert!(h.active(), "IPv4 stays stale until its End-of-RIB");
        let mut h = Helper::default();
        h.down(now, true, &Down::PeerRestarted, Some(&neg(Some(gr(120, true)))), CAP, true);
        assert_eq!(h.up(&neg(None), &[Afi::Ipv4]).flush, vec![Afi::Ipv4], "no capability: all go");
        assert!(!h.active());
    }

    #[test]
    fn our_capability_carries_r_and_f() {
        let c = capability(120, true, &[(Afi::Ipv4, true)]);
        let g = PeerGr::from_capability(&c).expect("graceful restart");
        assert_eq!((g.restart_time, g.restarted), (120, true));
        assert!(g.forwarding_kept(Afi::Ipv4) && !g.forwarding_kept(Afi::Ipv6));
        let c = capability(120, false, &[(Afi::Ipv4, false)]);
        let g = PeerGr::from_capability(&c).expect("graceful restart");
        assert!(!g.restarted && !g.forwarding_kept(Afi::Ipv4));
    }
}
