//! Neighbour resolution for next hops, ARP for IPv4 and neighbour discovery for IPv6: a
//! lock-free snapshot the workers read, and a sans-IO manager that owns the state machine
//! (time is passed in; actions come out). The state machine is the same for both families.
//!
//! States follow the kernel's spirit: *incomplete* (requests sent, packets queued, bounded),
//! *reachable* (answer known, refreshed by a unicast probe before it expires), *failed*
//! (no answer after the retries; packets dropped and counted for a hold-down period).
//!
//! A pod that sends to every address of the uplink's subnet must not make the node keep an
//! entry and send ARP for each: entries are bounded per interface (failed ones make room
//! first), and new resolutions per interface are rate-limited (a token bucket). What does
//! not fit is dropped and counted.

use crate::counters::DropReason;
use crate::iface::IfaceId;
use encap::MacAddr;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

/// A neighbour as learned from ARP or neighbour discovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub iface: IfaceId,
    pub ip: IpAddr,
    pub mac: MacAddr,
}

/// Immutable neighbour snapshot read by workers: one map per family, so an IPv4 lookup
/// hashes an IPv4 key.
#[derive(Debug, Default, Clone)]
pub struct NeighTable {
    v4: HashMap<(IfaceId, Ipv4Addr), MacAddr>,
    v6: HashMap<(IfaceId, Ipv6Addr), MacAddr>,
}

impl NeighTable {
    #[inline]
    pub fn lookup(&self, iface: IfaceId, ip: Ipv4Addr) -> Option<MacAddr> {
        self.v4.get(&(iface, ip)).copied()
    }

    #[inline]
    pub fn lookup6(&self, iface: IfaceId, ip: Ipv6Addr) -> Option<MacAddr> {
        self.v6.get(&(iface, ip)).copied()
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn insert(&mut self, n: Neighbour) {
        match n.ip {
            IpAddr::V4(a) => self.v4.insert((n.iface, a), n.mac),
            IpAddr::V6(a) => self.v6.insert((n.iface, a), n.mac),
        };
    }
}

/// Publication point for neighbour snapshots (freed by the writer, as the FIB's are).
pub type NeighHandle = crate::snapshot::Published<NeighTable>;

/// Timers and limits of resolution.
#[derive(Debug, Clone, Copy)]
pub struct NeighConfig {
    /// How long an answer stays valid without reconfirmation.
    pub reachable: Duration,
    /// Time between requests while incomplete.
    pub retransmit: Duration,
    /// Requests sent before giving up.
    pub max_probes: u32,
    /// Packets held per unresolved neighbour (the rest are dropped and counted).
    pub queue_len: usize,
    /// How long a failed neighbour drops packets before resolution is tried again.
    pub failed_hold: Duration,
    /// Entries per interface, whatever their state.
    pub max_per_iface: usize,
    /// New resolutions started per interface: a burst of this many, refilled at
    /// `new_per_sec`.
    pub new_burst: u32,
    pub new_per_sec: u32,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            reachable: Duration::from_secs(60),
            retransmit: Duration::from_secs(1),
            max_probes: 3,
            queue_len: 16,
            failed_hold: Duration::from_secs(3),
            // A /23 of neighbours on one link; Linux's whole table holds 1024 by default.
            max_per_iface: 512,
            new_burst: 64,
            new_per_sec: 64,
        }
    }
}

/// What the manager asks its driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeighAction {
    /// Ask for `target` on `iface` (an ARP request, or a neighbour solicitation for IPv6),
    /// to `dst` (broadcast, which for IPv6 means the solicited-node group, or the known MAC
    /// when refreshing).
    Request { iface: IfaceId, target: IpAddr, dst: MacAddr },
    /// Send a frame that waited for resolution; its destination MAC is filled in.
    Transmit { iface: IfaceId, frame: Vec<u8> },
    /// Packets were dropped.
    Dropped { reason: DropReason, count: u64 },
    /// The table changed: publish `snapshot()`.
    Changed,
}

#[derive(Debug)]
enum State {
    Incomplete { probes: u32, next: Instant, queue: VecDeque<Vec<u8>> },
    Reachable { mac: MacAddr, confirmed: Instant, probed: bool },
    Failed { until: Instant },
}

/// Per interface: the tokens for new resolutions, as of `at`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    tokens: f64,
    at: Option<Instant>,
}

/// The neighbour state machine for all interfaces of one node.
#[derive(Debug, Default)]
pub struct NeighManager {
    config: NeighConfig,
    entries: HashMap<(IfaceId, IpAddr), State>,
    budgets: HashMap<IfaceId, Budget>,
}

impl NeighManager {
    pub fn new(config: NeighConfig) -> Self {
        NeighManager { config, entries: HashMap::new(), budgets: HashMap::new() }
    }

    /// Forgets every neighbour of an interface that came or went (its slot may serve
    /// another interface next); packets that waited on them are dropped and counted.
    pub fn forget(&mut self, iface: IfaceId, out: &mut Vec<NeighAction>) {
        let mut waiting = 0;
        let before = self.entries.len();
        self.entries.retain(|(i, _), st| {
            if *i != iface {
                return true;
            }
            if let State::Incomplete { queue, .. } = st {
                waiting += queue.len() as u64;
            }
            false
        });
        self.budgets.remove(&iface);
        if waiting > 0 {
            out.push(NeighAction::Dropped { reason: DropReason::NeighbourFailed, count: waiting });
        }
        if self.entries.len() != before {
            out.push(NeighAction::Changed);
        }
    }

    fn budget(&mut self, iface: IfaceId) -> &mut Budget {
        let burst = f64::from(self.config.new_burst);
        self.budgets.entry(iface).or_insert(Budget { tokens: burst, at: None })
    }

    /// Whether `iface` has as many entries as it may. Counted, not kept: only a table that
    /// holds `max_per_iface` entries in all can have an interface at the limit, so the count
    /// runs only then (on the slow path, at most a few thousand entries).
    fn full(&self, iface: IfaceId) -> bool {
        let max = self.config.max_per_iface;
        self.entries.len() >= max && self.entries.keys().filter(|(i, _)| *i == iface).count() >= max
    }

    /// Makes room for one more entry of `iface`, giving up a failed entry if its table is
    /// full.
    fn make_room(&mut self, iface: IfaceId) -> Result<(), DropReason> {
        if self.full(iface) {
            let victim = self
                .entries
                .iter()
                .find(|(&(i, _), st)| i == iface && matches!(st, State::Failed { .. }))
                .map(|(k, _)| *k)
                .ok_or(DropReason::NeighbourTableFull)?;
            self.entries.remove(&victim);
        }
        Ok(())
    }

    /// Takes a token for starting a resolution on `iface`.
    fn take_token(&mut self, now: Instant, iface: IfaceId) -> Result<(), DropReason> {
        let cfg = self.config;
        let b = self.budget(iface);
        if let Some(at) = b.at {
            let refill = now.saturating_duration_since(at).as_secs_f64() * f64::from(cfg.new_per_sec);
            b.tokens = (b.tokens + refill).min(f64::from(cfg.new_burst));
        }
        b.at = Some(now);
        if b.tokens < 1.0 {
            return Err(DropReason::NeighbourRateLimited);
        }
        b.tokens -= 1.0;
        Ok(())
    }

    /// A worker could not forward `frame` (Ethernet header first) for lack of `ip`'s MAC.
    pub fn on_miss(
        &mut self,
        now: Instant,
        iface: IfaceId,
        ip: IpAddr,
        mut frame: Vec<u8>,
        out: &mut Vec<NeighAction>,
    ) {
        let cfg = self.config;
        match self.entries.get_mut(&(iface, ip)) {
            Some(State::Reachable { mac, .. }) => {
                // The worker's snapshot was older than our answer.
                set_dst(&mut frame, *mac);
                out.push(NeighAction::Transmit { iface, frame });
            }
            Some(State::Incomplete { queue, .. }) => {
                if queue.len() >= cfg.queue_len {
                    out.push(NeighAction::Dropped { reason: DropReason::NeighbourQueueFull, count: 1 });
                } else {
                    queue.push_back(frame);
                }
            }
            Some(State::Failed { until }) if *until > now => {
                out.push(NeighAction::Dropped { reason: DropReason::NeighbourFailed, count: 1 });
            }
            found => {
                // A failed entry that may be tried again keeps its place; a new one needs
                // room. Both need a token.
                let admitted = if found.is_some() {
                    self.take_token(now, iface)
                } else {
                    self.take_token(now, iface).and_then(|()| self.make_room(iface))
                };
                if let Err(reason) = admitted {
                    out.push(NeighAction::Dropped { reason, count: 1 });
                    return;
                }
                let mut queue = VecDeque::with_capacity(cfg.queue_len.min(4));
                queue.push_back(frame);
                self.entries.insert((iface, ip), State::Incomplete { probes: 1, next: now + cfg.retransmit, queue });
                out.push(NeighAction::Request { iface, target: ip, dst: MacAddr::BROADCAST });
            }
        }
    }

    /// ARP or NDP told us `n.ip` is at `n.mac` (an answer, or a question addressed to us).
    pub fn on_learn(&mut self, now: Instant, n: Neighbour, out: &mut Vec<NeighAction>) {
        let key = (n.iface, n.ip);
        // An answer nobody asked for (or a request to us) only refreshes what we know while
        // the table is full: it must not let a neighbour fill it either.
        if !self.entries.contains_key(&key) && self.full(n.iface) {
            return;
        }
        let old = self.entries.insert(key, State::Reachable { mac: n.mac, confirmed: now, probed: false });
        match old {
            Some(State::Incomplete { queue, .. }) => {
                for mut frame in queue {
                    set_dst(&mut frame, n.mac);
                    out.push(NeighAction::Transmit { iface: n.iface, frame });
                }
                out.push(NeighAction::Changed);
            }
            Some(State::Reachable { mac, .. }) if mac == n.mac => {}
            _ => out.push(NeighAction::Changed),
        }
    }

    /// Advances timers: retransmits, refresh probes, expiry and give-up.
    pub fn on_tick(&mut self, now: Instant, out: &mut Vec<NeighAction>) {
        let cfg = self.config;
        let mut changed = false;
        self.entries.retain(|&(iface, ip), st| Self::tick_one(cfg, now, iface, ip, st, out, &mut changed));
        if changed {
            out.push(NeighAction::Changed);
        }
    }

    fn tick_one(
        cfg: NeighConfig,
        now: Instant,
        iface: IfaceId,
        ip: IpAddr,
        st: &mut State,
        out: &mut Vec<NeighAction>,
        changed: &mut bool,
    ) -> bool {
        match st {
            State::Incomplete { probes, next, queue } => {
                if now < *next {
                    return true;
                }
                if *probes >= cfg.max_probes {
                    out.push(NeighAction::Dropped { reason: DropReason::NeighbourFailed, count: queue.len() as u64 });
                    *st = State::Failed { until: now + cfg.failed_hold };
                    return true;
                }
                *probes += 1;
                *next = now + cfg.retransmit;
                out.push(NeighAction::Request { iface, target: ip, dst: MacAddr::BROADCAST });
                true
            }
            State::Reachable { mac, confirmed, probed } => {
                let age = now.saturating_duration_since(*confirmed);
                if age >= cfg.reachable {
                    *changed = true;
                    return false;
                }
                // Refresh before expiry so a live neighbour never drops out of the table.
                if !*probed && age >= cfg.reachable * 3 / 4 {
                    *probed = true;
                    out.push(NeighAction::Request { iface, target: ip, dst: *mac });
                }
                true
            }
            State::Failed { until } => *until > now,
        }
    }

    /// The earliest time `on_tick` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let cfg = self.config;
        self.entries
            .values()
            .map(|st| match st {
                State::Incomplete { next, .. } => *next,
                State::Reachable { confirmed, probed: false, .. } => *confirmed + cfg.reachable * 3 / 4,
                State::Reachable { confirmed, .. } => *confirmed + cfg.reachable,
                State::Failed { until } => *until,
            })
            .min()
    }

    /// The resolved neighbours, for the workers.
    pub fn snapshot(&self) -> NeighTable {
        let mut t = NeighTable::default();
        for (&(iface, ip), st) in &self.entries {
            if let State::Reachable { mac, .. } = st {
                t.insert(Neighbour { iface, ip, mac: *mac });
            }
        }
        t
    }

    /// (iface, ip, mac or None while unresolved, state name) for status displays.
    pub fn entries(&self) -> Vec<(IfaceId, IpAddr, Option<MacAddr>, &'static str)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .map(|(&(i, ip), st)| match st {
                State::Incomplete { .. } => (i, ip, None, "incomplete"),
                State::Reachable { mac, .. } => (i, ip, Some(*mac), "reachable"),
                State::Failed { .. } => (i, ip, None, "failed"),
            })
            .collect();
        v.sort_by_key(|e| (e.0, e.1));
        v
    }
}

fn set_dst(frame: &mut [u8], mac: MacAddr) {
    if frame.len() >= encap::ethernet::HEADER_LEN {
        encap::ethernet::Frame::new_unchecked(frame).set_dst(mac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IF: IfaceId = IfaceId(0);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 7]);

    fn ip4() -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 100, 101)
    }

    fn ip() -> IpAddr {
        ip4().into()
    }

    fn frame() -> Vec<u8> {
        vec![0u8; 60]
    }

    #[test]
    fn miss_sends_request_and_answer_releases_queue() {
        let mut m = NeighManager::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        m.on_miss(t0, IF, ip(), frame(), &mut out);
        m.on_miss(t0, IF, ip(), frame(), &mut out);
        assert_eq!(out, vec![NeighAction::Request { iface: IF, target: ip(), dst: MacAddr::BROADCAST }]);
        out.clear();
        m.on_learn(t0, Neighbour { iface: IF, ip: ip(), mac: MAC }, &mut out);
        let sent: Vec<_> = out
            .iter()
            .filter_map(|a| match a {
                NeighAction::Transmit { frame, .. } => Some(frame[..6].to_vec()),
                _ => None,
            })
            .collect();
        assert_eq!(sent, vec![MAC.0.to_vec(), MAC.0.to_vec()]);
        assert!(out.contains(&NeighAction::Changed));
        assert_eq!(m.snapshot().lookup(IF, ip4()), Some(MAC));
    }

    #[test]
    fn queue_is_bounded() {
        let mut m = NeighManager::new(NeighConfig { queue_len: 2, ..Default::default() });
        let t0 = Instant::now();
        let mut out = Vec::new();
        for _ in 0..5 {
            m.on_miss(t0, IF, ip(), frame(), &mut out);
        }
        let dropped = out
            .iter()
            .filter(|a| matches!(a, NeighAction::Dropped { reason: DropReason::NeighbourQueueFull, .. }))
            .count();
        assert_eq!(dropped, 3);
    }

    #[test]
    fn retries_then_fails_then_tries_again() {
        let cfg = NeighConfig::default();
        let mut m = NeighManager::new(cfg);
        let t0 = Instant::now();
        let mut out = Vec::new();
        m.on_miss(t0, IF, ip(), frame(), &mut out);
        let mut t = t0;
        for _ in 0..cfg.max_probes {
            t += cfg.retransmit;
            m.on_tick(t, &mut out);
        }
        let requests = out.iter().filter(|a| matches!(a, NeighAction::Request { .. })).count();
        assert_eq!(requests as u32, cfg.max_probes);
        assert!(out.contains(&NeighAction::Dropped { reason: DropReason::NeighbourFailed, count: 1 }));
        out.clear();
        m.on_miss(t, IF, ip(), frame(), &mut out);
        assert_eq!(out, vec![NeighAction::Dropped { reason: DropReason::NeighbourFailed, count: 1 }]);
        out.clear();
        m.on_miss(t + cfg.failed_hold, IF, ip(), frame(), &mut out);
        assert!(matches!(out[0], NeighAction::Request { .. }));
    }

    #[test]
    fn reachable_entry_is_refreshed_then_expires_if_silent() {
        let cfg = NeighConfig::default();
        let mut m = NeighManager::new(cfg);
        let t0 = Instant::now();
        let mut out = Vec::new();
        m.on_learn(t0, Neighbour { iface: IF, ip: ip(), mac: MAC }, &mut out);
        out.clear();
        let probe_at = m.poll_timeout().expect("timer");
        assert_eq!(probe_at, t0 + cfg.reachable * 3 / 4);
        m.on_tick(probe_at, &mut out);
        assert_eq!(out, vec![NeighAction::Request { iface: IF, target: ip(), dst: MAC }]);
        out.clear();
        m.on_tick(t0 + cfg.reachable, &mut out);
        assert_eq!(out, vec![NeighAction::Changed]);
        assert_eq!(m.snapshot().lookup(IF, ip4()), None);
    }

    #[test]
    fn answer_to_refresh_keeps_entry() {
        let cfg = NeighConfig::default();
        let mut m = NeighManager::new(cfg);
        let t0 = Instant::now();
        let mut out = Vec::new();
        let n = Neighbour { iface: IF, ip: ip(), mac: MAC };
        m.on_learn(t0, n, &mut out);
        m.on_tick(t0 + cfg.reachable * 3 / 4, &mut out);
        m.on_learn(t0 + cfg.reachable * 3 / 4, n, &mut out);
        out.clear();
        m.on_tick(t0 + cfg.reachable, &mut out);
        assert!(out.is_empty());
        assert_eq!(m.snapshot().lookup(IF, ip4()), Some(MAC));
    }

    fn requests(out: &[NeighAction]) -> usize {
        out.iter().filter(|a| matches!(a, NeighAction::Request { .. })).count()
    }

    fn dropped(out: &[NeighAction], why: DropReason) -> u64 {
        out.iter()
            .map(|a| {
                if let NeighAction::Dropped { reason, count } = a {
                    if *reason == why {
                        *count
                    } else {
                        0
                    }
                } else {
                    0
                }
            })
            .sum()
    }

    #[test]
    fn a_pod_cannot_make_the_node_resolve_every_address_of_a_subnet() {
        let cfg = NeighConfig { max_per_iface: 8, new_burst: 100, new_per_sec: 100, ..Default::default() };
        let mut m = NeighManager::new(cfg);
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 1..=50u8 {
            m.on_miss(now, IF, Ipv4Addr::new(192, 168, 100, i).into(), frame(), &mut out);
        }
        assert_eq!(requests(&out), 8);
        assert_eq!(dropped(&out, DropReason::NeighbourTableFull), 42);
        assert_eq!(m.entries().len(), 8);
        // Another interface has a table of its own.
        out.clear();
        m.on_miss(now, IfaceId(1), ip(), frame(), &mut out);
        assert_eq!(requests(&out), 1);
        // Once the unanswered ones have failed, they make room for new neighbours.
        out.clear();
        let mut later = now;
        for _ in 0..cfg.max_probes {
            later += cfg.retransmit;
            m.on_tick(later, &mut out);
        }
        assert!(m.entries().iter().filter(|e| e.0 == IF).all(|e| e.3 == "failed"));
        out.clear();
        m.on_miss(later, IF, Ipv4Addr::new(192, 168, 100, 200).into(), frame(), &mut out);
        assert_eq!(requests(&out), 1, "{out:?}");
        assert_eq!(m.entries().iter().filter(|e| e.0 == IF).count(), 8);
        // Unsolicited answers cannot fill a full table either.
        out.clear();
        m.on_learn(later, Neighbour { iface: IF, ip: Ipv4Addr::new(192, 168, 100, 201).into(), mac: MAC }, &mut out);
        assert_eq!(m.entries().iter().filter(|e| e.0 == IF).count(), 8);
    }

    #[test]
    fn new_resolutions_are_rate_limited_per_interface() {
        let cfg = NeighConfig { new_burst: 3, new_per_sec: 2, ..Default::default() };
        let mut m = NeighManager::new(cfg);
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 1..=5u8 {
            m.on_miss(now, IF, Ipv4Addr::new(10, 0, 0, i).into(), frame(), &mut out);
        }
        assert_eq!(requests(&out), 3);
        assert_eq!(dropped(&out, DropReason::NeighbourRateLimited), 2);
        // Half a second later one more token has come back.
        out.clear();
        for i in 6..=7u8 {
            m.on_miss(now + Duration::from_millis(500), IF, Ipv4Addr::new(10, 0, 0, i).into(), frame(), &mut out);
        }
        assert_eq!(requests(&out), 1);
        // Misses for a neighbour being resolved queue without a token.
        out.clear();
        m.on_miss(now + Duration::from_millis(500), IF, Ipv4Addr::new(10, 0, 0, 1).into(), frame(), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }
}
