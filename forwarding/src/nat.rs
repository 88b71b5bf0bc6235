//! Masquerade for pools with Calico's `natOutgoing`: what a pod of such a pool sends to an
//! address outside every pool leaves with the node's address as its source, and the answers
//! find their way back to the pod.
//!
//! Flows are TCP and UDP (by ports) and ICMP echo (by identifier); each gets one of the
//! node's [`PORTS`], which the transit filter keeps from the node's kernel, so that the kernel
//! neither answers them with a reset nor with "port unreachable". ICMP errors about a flow
//! (time exceeded, fragmentation needed, unreachable) are translated both ways, quote
//! included (RFC 5508), so that traceroute and path MTU discovery work through the node.
//! What cannot be translated is dropped and counted: fragments (no ports to read), other
//! protocols, a full table.
//!
//! IPv6 pools masquerade alike, behind the node's IPv6 address (ICMPv6 echo and errors, whose
//! checksum also covers the addresses); a packet with IPv6 extension headers other than a
//! fragment header is not translated (`nat_unsupported`).
//!
//! The table is shared by the workers: a pod's packets and their answers may reach different
//! workers (`PACKET_FANOUT` spreads by flow, and a translated flow is two flows to the
//! kernel). One mutex guards it, taken only by packets that are masqueraded or could be
//! answers (TCP, UDP and echo replies to the node at one of its [`PORTS`], ICMP errors about
//! them, traffic from outside the pools to a masquerading pod); pod-to-pod traffic never
//! touches it.

use crate::counters::DropReason;
use encap::{icmp, icmpv6, ipv4, ipv6, tcp};
use ipnet::{Ipv4Net, Ipv6Net};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// The node's ports (and ICMP echo identifiers) that masqueraded flows get: above Linux's
/// ephemeral range (32768–60999), so the node's own connections never pick one.
pub const PORTS: std::ops::RangeInclusive<u16> = 61000..=65535;

/// Flows at most, and flows of one pod at most: one pod cannot take every other pod's share.
pub const MAX_FLOWS: usize = 65536;
pub const MAX_FLOWS_PER_POD: u32 = 16384;

/// Idle seconds before a flow is forgotten, by what it has seen (RFC 5382 asks at least 2 h
/// 4 min for an established TCP connection and 4 min for one opening or closing; RFC 4787
/// 2 min for UDP, here for UDP that has been answered; RFC 5508 60 s for ICMP).
const TCP_ESTABLISHED: u32 = 7440;
const TCP_TRANSITORY: u32 = 240;
const TCP_RESET: u32 = 10;
const UDP_ANSWERED: u32 = 180;
const UDP_UNANSWERED: u32 = 30;
const ICMP_IDLE: u32 = 60;

/// Which pods are masqueraded, and toward where.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatPolicy {
    /// The pools with `natOutgoing`: their pods' traffic to outside every pool is masqueraded.
    pub masquerade: Vec<Ipv4Net>,
    /// Every pool of the cluster: traffic to these keeps its pod source.
    pub pools: Vec<Ipv4Net>,
    /// The same for the IPv6 pools.
    pub masquerade6: Vec<Ipv6Net>,
    pub pools6: Vec<Ipv6Net>,
}

impl NatPolicy {
    /// Whether a packet from `src` to `dst` leaves masqueraded.
    #[inline]
    pub fn applies(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        !self.masquerade.is_empty()
            && self.masquerade.iter().any(|n| n.contains(&src))
            && !self.pools.iter().any(|n| n.contains(&dst))
    }

    /// [`NatPolicy::applies`] for IPv6.
    #[inline]
    pub fn applies6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        !self.masquerade6.is_empty()
            && self.masquerade6.iter().any(|n| n.contains(&src))
            && !self.pools6.iter().any(|n| n.contains(&dst))
    }

    /// Whether any pool of either family masquerades.
    pub fn any(&self) -> bool {
        !self.masquerade.is_empty() || !self.masquerade6.is_empty()
    }
}

/// Where a packet is in its fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frag {
    Whole,
    First,
    Later,
}

/// What a translation reads of a packet's IP header.
#[derive(Debug, Clone, Copy)]
pub struct Header<A> {
    /// The upper-layer protocol (IPv6: after a fragment header, else the next header).
    protocol: u8,
    /// Where the upper-layer header starts.
    l4: usize,
    src: A,
    dst: A,
    frag: Frag,
}

/// An address family the masquerade translates: how its packets are read and rewritten.
pub trait Family: Copy + Eq + Hash + std::fmt::Debug + Send + 'static {
    /// The family's ICMP protocol number and its echo types.
    const ICMP: u8;
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// Whether the ICMP checksum covers the addresses (ICMPv6's pseudo-header).
    const ICMP_PSEUDO: bool;
    /// The address's bytes (an array: no allocation per packet).
    #[doc(hidden)]
    type Octets: AsRef<[u8]>;
    #[doc(hidden)]
    fn bytes(self) -> Self::Octets;
    #[doc(hidden)]
    fn is_error_type(t: u8) -> bool;
    /// The header of `pkt`, a packet or an ICMP error's quote: `None` when it is not one of
    /// this family or too short to say.
    #[doc(hidden)]
    fn header(pkt: &[u8]) -> Option<Header<Self>>;
    #[doc(hidden)]
    fn set_addr(pkt: &mut [u8], side: Side, a: Self);
    /// Rebuilds the partial TCP checksum of an offloaded super-packet's segment `l4`.
    #[doc(hidden)]
    fn fill_partial_tcp(l4: &mut [u8], src: Self, dst: Self);
    /// Rebuilds the checksum of the ICMP message of `pkt` (its header as `h` says).
    #[doc(hidden)]
    fn refill_icmp_checksum(pkt: &mut [u8], h: &Header<Self>);
    #[doc(hidden)]
    fn table(nat: &Nat) -> &Mutex<Table<Self>>;
}

impl Family for Ipv4Addr {
    const ICMP: u8 = 1;
    const ECHO_REQUEST: u8 = icmp::types::ECHO_REQUEST;
    const ECHO_REPLY: u8 = icmp::types::ECHO_REPLY;
    const ICMP_PSEUDO: bool = false;

    type Octets = [u8; 4];

    fn bytes(self) -> [u8; 4] {
        self.octets()
    }

    fn is_error_type(t: u8) -> bool {
        icmp::is_error_type(t)
    }

    fn header(pkt: &[u8]) -> Option<Header<Self>> {
        let ip = ipv4::Packet::new_unchecked(pkt);
        if pkt.len() < ipv4::HEADER_LEN || ip.version() != 4 || pkt.len() < ip.header_len() {
            return None;
        }
        let frag = match (ip.is_fragment(), ip.frag_offset()) {
            (false, _) => Frag::Whole,
            (true, 0) => Frag::First,
            (true, _) => Frag::Later,
        };
        let protocol = u8::from(ip.protocol());
        Some(Header { protocol, l4: ip.header_len(), src: ip.src(), dst: ip.dst(), frag })
    }

    fn set_addr(pkt: &mut [u8], side: Side, a: Self) {
        let mut ip = ipv4::Packet::new_unchecked(pkt);
        match side {
            Side::Src => ip.set_src_update_checksum(a),
            Side::Dst => ip.set_dst_update_checksum(a),
        }
    }

    fn fill_partial_tcp(l4: &mut [u8], src: Self, dst: Self) {
        tcp::Packet::new_unchecked(l4).fill_partial_checksum(src, dst);
    }

    fn refill_icmp_checksum(pkt: &mut [u8], h: &Header<Self>) {
        let msg = &mut pkt[h.l4..];
        put16(msg, 2, 0);
        let c = encap::checksum::checksum(msg);
        put16(msg, 2, c);
    }

    fn table(nat: &Nat) -> &Mutex<Table<Self>> {
        &nat.v4
    }
}

/// IPv6's fragment header (RFC 8200 §4.5), the one extension header a translation reads past.
const NEXT_FRAGMENT: u8 = 44;

impl Family for Ipv6Addr {
    const ICMP: u8 = ipv6::NEXT_ICMPV6;
    const ECHO_REQUEST: u8 = icmpv6::types::ECHO_REQUEST;
    const ECHO_REPLY: u8 = icmpv6::types::ECHO_REPLY;
    const ICMP_PSEUDO: bool = true;

    type Octets = [u8; 16];

    fn bytes(self) -> [u8; 16] {
        self.octets()
    }

    fn is_error_type(t: u8) -> bool {
        icmpv6::is_error_type(t)
    }

    fn header(pkt: &[u8]) -> Option<Header<Self>> {
        if pkt.len() < ipv6::HEADER_LEN || pkt[0] >> 4 != 6 {
            return None;
        }
        let ip = ipv6::Packet::new_unchecked(pkt);
        let (src, dst) = (ip.src(), ip.dst());
        let next = ip.next_header();
        if next != NEXT_FRAGMENT {
            return Some(Header { protocol: next, l4: ipv6::HEADER_LEN, src, dst, frag: Frag::Whole });
        }
        let f = pkt.get(ipv6::HEADER_LEN..ipv6::HEADER_LEN + 8)?;
        let frag = if u16::from_be_bytes([f[2], f[3]]) & 0xfff8 == 0 { Frag::First } else { Frag::Later };
        Some(Header { protocol: f[0], l4: ipv6::HEADER_LEN + 8, src, dst, frag })
    }

    fn set_addr(pkt: &mut [u8], side: Side, a: Self) {
        let mut ip = ipv6::Packet::new_unchecked(pkt);
        match side {
            Side::Src => ip.set_src(a),
            Side::Dst => ip.set_dst(a),
        }
    }

    fn fill_partial_tcp(l4: &mut [u8], src: Self, dst: Self) {
        // As Linux leaves it: the pseudo-header over the whole super-packet's length, folded
        // and not complemented.
        let sum = ipv6::pseudo_header_sum(src, dst, ipv6::NEXT_TCP, l4.len());
        put16(l4, tcp::CHECKSUM_OFFSET, !encap::checksum::finish(sum));
    }

    fn refill_icmp_checksum(pkt: &mut [u8], h: &Header<Self>) {
        let (src, dst) = {
            let ip = ipv6::Packet::new_unchecked(&*pkt);
            (ip.src(), ip.dst())
        };
        icmpv6::fill_checksum(&mut pkt[h.l4..], src, dst);
    }

    fn table(nat: &Nat) -> &Mutex<Table<Self>> {
        &nat.v6
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// One end of a flow: an address and a port (ICMP echo: the identifier, and 0 for the remote).
type End<A> = (A, u16);

/// A flow as the pod sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Inside<A> {
    proto: Proto,
    pod: End<A>,
    remote: End<A>,
}

/// A flow as the outside sees it: to the node's address at one of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Outside<A> {
    proto: Proto,
    node: End<A>,
    remote: End<A>,
}

const ANSWERED: u8 = 1;
const FIN_OUT: u8 = 2;
const FIN_IN: u8 = 4;
const RESET: u8 = 8;

#[derive(Debug, Clone, Copy)]
struct Flow<A> {
    /// `None`: a flow the outside opened toward the pod (a BGP peer may route to pods), whose
    /// answers leave untranslated, as conntrack leaves them.
    outside: Option<Outside<A>>,
    /// Seconds since the table's epoch at the last packet.
    seen: u32,
    state: u8,
}

impl<A> Flow<A> {
    fn idle_limit(&self, proto: Proto) -> u32 {
        match proto {
            Proto::Tcp if self.state & RESET != 0 => TCP_RESET,
            Proto::Tcp if self.state & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN => TCP_TRANSITORY,
            Proto::Tcp if self.state & ANSWERED != 0 => TCP_ESTABLISHED,
            Proto::Tcp => TCP_TRANSITORY,
            Proto::Udp if self.state & ANSWERED != 0 => UDP_ANSWERED,
            Proto::Udp => UDP_UNANSWERED,
            Proto::Icmp => ICMP_IDLE,
        }
    }
}

/// aHash with random keys: with std's SipHash a masqueraded packet cost 2.0× a plain one in
/// the pipeline bench, with aHash 1.35×; and pods that pick their ports still cannot aim at
/// one bucket without the keys.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

/// The flows of one address family.
#[derive(Debug)]
pub struct Table<A> {
    flows: Map<Inside<A>, Flow<A>>,
    back: Map<Outside<A>, Inside<A>>,
    per_pod: Map<A, u32>,
}

impl<A> Default for Table<A> {
    fn default() -> Self {
        Table { flows: Map::default(), back: Map::default(), per_pod: Map::default() }
    }
}

impl<A: Family> Table<A> {
    /// Room for one more flow of `pod`: sweeps idle flows once when the table is full.
    fn room_for(&mut self, pod: A, now: u32) -> Result<(), DropReason> {
        if self.flows.len() >= MAX_FLOWS {
            self.expire(now);
        }
        if self.flows.len() >= MAX_FLOWS || self.per_pod.get(&pod).copied().unwrap_or(0) >= MAX_FLOWS_PER_POD {
            return Err(DropReason::NatTableFull);
        }
        Ok(())
    }

    fn insert(&mut self, key: Inside<A>, flow: Flow<A>) {
        if let Some(o) = flow.outside {
            self.back.insert(o, key);
        }
        self.flows.insert(key, flow);
        *self.per_pod.entry(key.pod.0).or_default() += 1;
    }

    fn expire(&mut self, now: u32) {
        let Table { flows, back, per_pod } = self;
        flows.retain(|k, f| {
            if now.saturating_sub(f.seen) <= f.idle_limit(k.proto) {
                return true;
            }
            if let Some(o) = f.outside {
                back.remove(&o);
            }
            forget_one(per_pod, k.pod.0);
            false
        });
    }
}

/// One flow of `pod` fewer.
fn forget_one<A: Family>(per_pod: &mut Map<A, u32>, pod: A) {
    if let Some(n) = per_pod.get_mut(&pod) {
        *n -= 1;
        if *n == 0 {
            per_pod.remove(&pod);
        }
    }
}

/// The masquerade table of one node. See the module documentation.
#[derive(Debug)]
pub struct Nat {
    v4: Mutex<Table<Ipv4Addr>>,
    v6: Mutex<Table<Ipv6Addr>>,
    epoch: Instant,
    /// Seconds since `epoch`, as of the last [`Nat::expire`]: a clock read per packet cost
    /// more than the rest of a translation, and flows idle for seconds at least.
    now: AtomicU32,
    /// Spreads the first port tried per flow, so that flows do not all probe from the start.
    seed: ahash::RandomState,
}

impl Default for Nat {
    fn default() -> Self {
        Nat {
            v4: Mutex::default(),
            v6: Mutex::default(),
            epoch: Instant::now(),
            now: AtomicU32::new(0),
            seed: Default::default(),
        }
    }
}

/// Which end of a packet a translation rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// The parts of a packet a translation looks at.
#[derive(Debug, Clone, Copy)]
struct Parsed<A> {
    proto: Proto,
    src: End<A>,
    dst: End<A>,
    /// TCP flags; for ICMP, the message type.
    flags: u8,
    /// Where the L4 header starts.
    l4: usize,
}

/// The upper-layer protocol of an IPv4 or IPv6 packet, or of an ICMP error's quote (which
/// may be cut short), and where its header starts, read as a translation reads it; `None`
/// for a fragment past the first or what is too short to say.
pub(crate) fn upper_layer(pkt: &[u8]) -> Option<(u8, usize)> {
    fn of<A: Family>(pkt: &[u8]) -> Option<(u8, usize)> {
        A::header(pkt).filter(|h| h.frag != Frag::Later).map(|h| (h.protocol, h.l4))
    }
    match pkt.first()? >> 4 {
        4 => of::<Ipv4Addr>(pkt),
        6 => of::<Ipv6Addr>(pkt),
        _ => None,
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|w| u16::from_be_bytes([w[0], w[1]]))
}

/// [`parse_with`], the header read here (the tests' reader).
#[cfg(test)]
fn parse<A: Family>(pkt: &[u8]) -> Option<Parsed<A>> {
    parse_with(pkt, &A::header(pkt)?)
}

/// Reads protocol, ends and flags of the packet (or ICMP quote) `pkt`, whose IP header is
/// `h`; `None` when the L4 header is not there (a later fragment, a short quote, another
/// protocol or an extension header). ICMP echo has the identifier as the sender's port (the
/// request's source, the reply's destination) and 0 for the other end; other ICMP messages
/// have neither.
fn parse_with<A: Family>(pkt: &[u8], h: &Header<A>) -> Option<Parsed<A>> {
    let proto = match h.protocol {
        6 => Proto::Tcp,
        17 => Proto::Udp,
        p if p == A::ICMP => Proto::Icmp,
        _ => return None,
    };
    if h.frag == Frag::Later {
        return None;
    }
    let l4 = pkt.get(h.l4..)?;
    let (sp, dp, flags) = match proto {
        Proto::Tcp | Proto::Udp => (be16(l4, 0)?, be16(l4, 2)?, if proto == Proto::Tcp { *l4.get(13)? } else { 0 }),
        Proto::Icmp => {
            let t = *l4.first()?;
            match t {
                t if t == A::ECHO_REQUEST => (be16(l4, 4)?, 0, t),
                t if t == A::ECHO_REPLY => (0, be16(l4, 4)?, t),
                _ => (0, 0, t),
            }
        }
    };
    Some(Parsed { proto, src: (h.src, sp), dst: (h.dst, dp), flags, l4: h.l4 })
}

/// [`parse_with`] of a whole packet: `None` for any fragment, whose ports cannot be trusted to
/// speak for the others.
fn parse_whole<A: Family>(pkt: &[u8]) -> Option<Parsed<A>> {
    let h = A::header(pkt).filter(|h| h.frag == Frag::Whole)?;
    parse_with(pkt, &h)
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(w) = b.get_mut(at..at + 2) {
        w.copy_from_slice(&v.to_be_bytes());
    }
}

/// Rewrites one end (address, and port or echo identifier) of the packet `pkt`, with the
/// checksums that cover them: IPv4's header checksum and the L4 one incrementally, the L4 one
/// only where it lies within `pkt` (a quote may end before it). `partial`: the TCP checksum
/// holds only the pseudo-header sum (an offloaded super-packet), rebuilt for the new address.
/// ICMP echo is rewritten only on the side that carries its identifier; ICMPv6's checksum
/// also follows the address. `p` is what [`parse_with`] read of `pkt`.
fn rewrite<A: Family>(pkt: &mut [u8], p: &Parsed<A>, side: Side, to: End<A>, partial: bool) {
    let from = if side == Side::Src { p.src } else { p.dst };
    A::set_addr(pkt, side, to.0);
    let (new_src, new_dst) = match side {
        Side::Src => (to.0, p.dst.0),
        Side::Dst => (p.src.0, to.0),
    };
    let (old_addr, new_addr) = (from.0.bytes(), to.0.bytes());
    let l4 = &mut pkt[p.l4..];
    let port_at = if side == Side::Src { 0 } else { 2 };
    let (old_port, new_port) = (from.1.to_be_bytes(), to.1.to_be_bytes());
    match p.proto {
        Proto::Tcp => {
            put16(l4, port_at, to.1);
            if partial {
                if l4.len() >= tcp::HEADER_LEN {
                    A::fill_partial_tcp(l4, new_src, new_dst);
                }
            } else if let Some(c) = be16(l4, tcp::CHECKSUM_OFFSET) {
                let c = encap::checksum::update_bytes(c, old_addr.as_ref(), new_addr.as_ref());
                put16(l4, tcp::CHECKSUM_OFFSET, encap::checksum::update_bytes(c, &old_port, &new_port));
            }
        }
        Proto::Udp => {
            put16(l4, port_at, to.1);
            // 0 is "no checksum" (RFC 768), and a computed 0 is sent as 0xffff.
            if let Some(c) = be16(l4, 6).filter(|c| *c != 0) {
                let c = encap::checksum::update_bytes(c, old_addr.as_ref(), new_addr.as_ref());
                let c = encap::checksum::update_bytes(c, &old_port, &new_port);
                put16(l4, 6, if c == 0 { 0xffff } else { c });
            }
        }
        Proto::Icmp => {
            let carries_id = match p.flags {
                t if t == A::ECHO_REQUEST => side == Side::Src,
                t if t == A::ECHO_REPLY => side == Side::Dst,
                _ => false,
            };
            if carries_id {
                put16(l4, 4, to.1);
            }
            if let Some(mut c) = be16(l4, 2) {
                if A::ICMP_PSEUDO {
                    c = encap::checksum::update_bytes(c, old_addr.as_ref(), new_addr.as_ref());
                }
                if carries_id {
                    c = encap::checksum::update_bytes(c, &old_port, &new_port);
                }
                put16(l4, 2, c);
            }
        }
    }
}

/// The ICMP error in `pkt` (a checked packet, `h` its header) and its quote: where the quote
/// starts, and what it says.
fn quote<A: Family>(pkt: &[u8], h: &Parsed<A>) -> Option<(usize, Parsed<A>)> {
    let at = h.l4 + icmp::HEADER_LEN;
    Some((at, parse_whole(pkt.get(at..)?)?))
}

/// What [`Nat::outbound`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// The source is now the node's.
    Masqueraded,
    /// An answer in a flow the outside opened: it leaves as the pod sent it.
    Untouched,
}

impl Nat {
    fn now(&self) -> u32 {
        self.now.load(Ordering::Relaxed)
    }

    fn lock<A: Family>(&self) -> std::sync::MutexGuard<'_, Table<A>> {
        // A worker that panicked holding the lock left a consistent table: every change is
        // made whole before the next one starts.
        A::table(self).lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flows in the table, of both families.
    pub fn len(&self) -> usize {
        self.lock::<Ipv4Addr>().flows.len() + self.lock::<Ipv6Addr>().flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the table's clock on and forgets idle flows (the slow path calls this every
    /// second).
    pub fn expire(&self) {
        let now = self.epoch.elapsed().as_secs() as u32;
        self.now.store(now, Ordering::Relaxed);
        self.lock::<Ipv4Addr>().expire(now);
        self.lock::<Ipv6Addr>().expire(now);
    }

    /// Masquerades the packet `pkt` (checked; from a pod, to outside the pools) as leaving
    /// `node`, making its flow if it has none. `partial`: an offloaded TCP super-packet,
    /// whose checksum holds only the pseudo-header sum.
    pub fn outbound<A: Family>(&self, pkt: &mut [u8], node: A, partial: bool) -> Result<Out, DropReason> {
        let h = A::header(pkt).ok_or(DropReason::NatUnsupported)?;
        if h.frag != Frag::Whole {
            return Err(DropReason::NatFragment);
        }
        let p = parse_with(pkt, &h).ok_or(DropReason::NatUnsupported)?;
        if p.proto == Proto::Icmp && A::is_error_type(p.flags) {
            return self.error_outbound(pkt, &p, node);
        }
        match p.flags {
            _ if p.proto != Proto::Icmp => {}
            t if t == A::ECHO_REQUEST => {}
            // A pod answers a ping from outside the pools: that leaves as it is.
            t if t == A::ECHO_REPLY => return Ok(Out::Untouched),
            _ => return Err(DropReason::NatUnsupported),
        }
        let key = Inside { proto: p.proto, pod: p.src, remote: p.dst };
        let now = self.now();
        let mut t = self.lock::<A>();
        let port = match t.flows.get_mut(&key) {
            Some(f) => {
                f.seen = now;
                if p.proto == Proto::Tcp {
                    f.state |= tcp_state(p.flags, FIN_OUT);
                }
                match f.outside {
                    Some(o) => o.node.1,
                    None => return Ok(Out::Untouched),
                }
            }
            None => {
                t.room_for(p.src.0, now)?;
                let port = self.free_port(&t, &key, node).ok_or(DropReason::NatPortsExhausted)?;
                let outside = Outside { proto: p.proto, node: (node, port), remote: p.dst };
                let state = if p.proto == Proto::Tcp { tcp_state(p.flags, FIN_OUT) } else { 0 };
                t.insert(key, Flow { outside: Some(outside), seen: now, state });
                port
            }
        };
        drop(t);
        rewrite(pkt, &p, Side::Src, (node, port), partial);
        Ok(Out::Masqueraded)
    }

    /// A free port of [`PORTS`] toward `key`'s remote end, tried from a spot that depends on
    /// the flow.
    fn free_port<A: Family>(&self, t: &Table<A>, key: &Inside<A>, node: A) -> Option<u16> {
        let (lo, n) = (u32::from(*PORTS.start()), u32::from(PORTS.end() - PORTS.start()) + 1);
        let start = (self.seed.hash_one(key) % u64::from(n)) as u32;
        (0..n)
            .map(|i| (lo + (start + i) % n) as u16)
            .find(|port| !t.back.contains_key(&Outside { proto: key.proto, node: (node, *port), remote: key.remote }))
    }

    /// An ICMP error a pod sends about a packet of a flow the outside answered: the quote
    /// shows the packet as the pod got it, which becomes the packet as it was sent.
    fn error_outbound<A: Family>(&self, pkt: &mut [u8], p: &Parsed<A>, node: A) -> Result<Out, DropReason> {
        let (at, q) = quote(pkt, p).ok_or(DropReason::NatUnsupported)?;
        // The quoted packet went from the remote to the pod.
        let key = Inside { proto: q.proto, pod: q.dst, remote: q.src };
        let now = self.now();
        let outside = {
            let mut t = self.lock::<A>();
            let f = t.flows.get_mut(&key).ok_or(DropReason::NatNoFlow)?;
            f.seen = now;
            f.outside
        };
        let Some(o) = outside else { return Ok(Out::Untouched) };
        A::set_addr(pkt, Side::Src, node);
        rewrite(&mut pkt[at..], &q, Side::Dst, o.node, false);
        self.refill::<A>(pkt);
        Ok(Out::Masqueraded)
    }

    /// The ICMP checksum of `pkt` rebuilt after its quote (and addresses) changed.
    fn refill<A: Family>(&self, pkt: &mut [u8]) {
        if let Some(h) = A::header(pkt) {
            A::refill_icmp_checksum(pkt, &h);
        }
    }

    /// Takes the packet `pkt` (checked, addressed to `node`, from the underlay) back to its
    /// pod if it belongs to a masqueraded flow: `None` when it cannot (it is the node's),
    /// `Some(Err)` for TCP or UDP to one of the flows' [`PORTS`] that no flow has, which the
    /// transit filter keeps from the kernel. ICMP that no flow has is the kernel's (the
    /// node's own ping may use an identifier in the range).
    pub fn inbound<A: Family>(&self, pkt: &mut [u8], node: A, partial: bool) -> Option<Result<(), DropReason>> {
        let h = A::header(pkt)?;
        if h.frag != Frag::Whole {
            // The first fragment of an answer says so (its ports are there); the later ones
            // cannot, and go to the kernel, which finds no one to give them to.
            let ours = parse_with(pkt, &h).is_some_and(|p| p.proto != Proto::Icmp && PORTS.contains(&p.dst.1));
            return ours.then_some(Err(DropReason::NatFragment));
        }
        let p = parse_with(pkt, &h)?;
        if p.proto == Proto::Icmp && A::is_error_type(p.flags) {
            return self.error_inbound(pkt, &p, node);
        }
        if !PORTS.contains(&p.dst.1) || (p.proto == Proto::Icmp && p.flags != A::ECHO_REPLY) {
            return None;
        }
        let key = Outside { proto: p.proto, node: p.dst, remote: p.src };
        let now = self.now();
        let pod = {
            let mut t = self.lock::<A>();
            let Some(inside) = t.back.get(&key).copied() else {
                return (p.proto != Proto::Icmp).then_some(Err(DropReason::NatNoFlow));
            };
            if let Some(f) = t.flows.get_mut(&inside) {
                f.seen = now;
                f.state |= ANSWERED;
                if p.proto == Proto::Tcp {
                    f.state |= tcp_state(p.flags, FIN_IN);
                }
            }
            inside.pod
        };
        rewrite(pkt, &p, Side::Dst, pod, partial);
        Some(Ok(()))
    }

    /// An ICMP error to the node about a packet a masqueraded flow sent: to the pod, with the
    /// quote as the pod sent it.
    fn error_inbound<A: Family>(&self, pkt: &mut [u8], p: &Parsed<A>, node: A) -> Option<Result<(), DropReason>> {
        let (at, q) = quote(pkt, p)?;
        if q.src.0 != node || !PORTS.contains(&q.src.1) {
            return None;
        }
        let key = Outside { proto: q.proto, node: q.src, remote: q.dst };
        let pod = self.lock::<A>().back.get(&key)?.pod;
        A::set_addr(pkt, Side::Dst, pod.0);
        rewrite(&mut pkt[at..], &q, Side::Src, pod, false);
        self.refill::<A>(pkt);
        Some(Ok(()))
    }

    /// Notes a packet from outside the pools to a masquerading pod (`pkt`, checked): the flow
    /// it opens is answered untranslated. A full table notes nothing.
    pub fn note_inbound<A: Family>(&self, pkt: &[u8]) {
        let Some(p) = parse_whole::<A>(pkt) else { return };
        if p.proto == Proto::Icmp && p.flags != A::ECHO_REQUEST {
            return;
        }
        // The pod's answer will go from p.dst to p.src; ICMP echo keeps the identifier.
        let key = match p.proto {
            Proto::Icmp => Inside { proto: p.proto, pod: (p.dst.0, p.src.1), remote: (p.src.0, 0) },
            _ => Inside { proto: p.proto, pod: p.dst, remote: p.src },
        };
        let now = self.now();
        let mut t = self.lock::<A>();
        if let Some(f) = t.flows.get_mut(&key) {
            f.seen = now;
            return;
        }
        if t.room_for(key.pod.0, now).is_ok() {
            t.insert(key, Flow { outside: None, seen: now, state: ANSWERED });
        }
    }
}

/// The state bits a TCP segment with `flags` adds, `fin` being the direction's FIN bit.
fn tcp_state(flags: u8, fin: u8) -> u8 {
    let mut s = 0;
    if flags & tcp::flags::RST != 0 {
        s |= RESET;
    }
    if flags & tcp::flags::FIN != 0 {
        s |= fin;
    }
    s
}

#[cfg(test)]
mod tests;
