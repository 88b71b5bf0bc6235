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
//! The table is shared by the workers: a pod's packets and their answers may reach different
//! workers (`PACKET_FANOUT` spreads by flow, and a translated flow is two flows to the
//! kernel). One mutex guards it, taken only by packets that are masqueraded or could be
//! answers (TCP, UDP and echo replies to the node at one of its [`PORTS`], ICMP errors about
//! them, traffic from outside the pools to a masquerading pod); pod-to-pod traffic never
//! touches it.

use crate::counters::DropReason;
use encap::{icmp, ipv4, tcp};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;
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
}

impl NatPolicy {
    /// Whether a packet from `src` to `dst` leaves masqueraded.
    #[inline]
    pub fn applies(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        !self.masquerade.is_empty()
            && self.masquerade.iter().any(|n| n.contains(&src))
            && !self.pools.iter().any(|n| n.contains(&dst))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn of(p: ipv4::Protocol) -> Option<Proto> {
        match p {
            ipv4::Protocol::Tcp => Some(Proto::Tcp),
            ipv4::Protocol::Udp => Some(Proto::Udp),
            ipv4::Protocol::Icmp => Some(Proto::Icmp),
            _ => None,
        }
    }
}

/// One end of a flow: an address and a port (ICMP echo: the identifier, and 0 for the remote).
type End = (Ipv4Addr, u16);

/// A flow as the pod sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Inside {
    proto: Proto,
    pod: End,
    remote: End,
}

/// A flow as the outside sees it: to the node's address at one of its ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Outside {
    proto: Proto,
    node: End,
    remote: End,
}

const ANSWERED: u8 = 1;
const FIN_OUT: u8 = 2;
const FIN_IN: u8 = 4;
const RESET: u8 = 8;

#[derive(Debug, Clone, Copy)]
struct Flow {
    /// `None`: a flow the outside opened toward the pod (a BGP peer may route to pods), whose
    /// answers leave untranslated, as conntrack leaves them.
    outside: Option<Outside>,
    /// Seconds since the table's epoch at the last packet.
    seen: u32,
    state: u8,
}

impl Flow {
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

#[derive(Debug, Default)]
struct Table {
    flows: Map<Inside, Flow>,
    back: Map<Outside, Inside>,
    per_pod: Map<Ipv4Addr, u32>,
}

impl Table {
    /// Room for one more flow of `pod`: sweeps idle flows once when the table is full.
    fn room_for(&mut self, pod: Ipv4Addr, now: u32) -> Result<(), DropReason> {
        if self.flows.len() >= MAX_FLOWS {
            self.expire(now);
        }
        if self.flows.len() >= MAX_FLOWS || self.per_pod.get(&pod).copied().unwrap_or(0) >= MAX_FLOWS_PER_POD {
            return Err(DropReason::NatTableFull);
        }
        Ok(())
    }

    fn insert(&mut self, key: Inside, flow: Flow) {
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
fn forget_one(per_pod: &mut Map<Ipv4Addr, u32>, pod: Ipv4Addr) {
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
    table: Mutex<Table>,
    epoch: Instant,
    /// Seconds since `epoch`, as of the last [`Nat::expire`]: a clock read per packet cost
    /// more than the rest of a translation, and flows idle for seconds at least.
    now: AtomicU32,
    /// Spreads the first port tried per flow, so that flows do not all probe from the start.
    seed: ahash::RandomState,
}

impl Default for Nat {
    fn default() -> Self {
        Nat { table: Mutex::default(), epoch: Instant::now(), now: AtomicU32::new(0), seed: Default::default() }
    }
}

/// Which end of a packet a translation rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// The parts of a packet a translation looks at.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    proto: Proto,
    src: End,
    dst: End,
    /// TCP flags; for ICMP, the message type.
    flags: u8,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|w| u16::from_be_bytes([w[0], w[1]]))
}

/// Reads protocol, ends and flags of the IPv4 packet (or ICMP quote) `pkt`, which must hold
/// its header; `None` when the L4 header is not there (a fragment, a short quote, another
/// protocol). ICMP echo has the identifier as the sender's port (the request's source, the
/// reply's destination) and 0 for the other end; other ICMP messages have neither.
fn parse(pkt: &[u8]) -> Option<Parsed> {
    let ip = ipv4::Packet::new_unchecked(pkt);
    let hl = ip.header_len();
    let l4 = pkt.get(hl..)?;
    let proto = Proto::of(ip.protocol())?;
    let (sp, dp, flags) = match proto {
        Proto::Tcp | Proto::Udp => (be16(l4, 0)?, be16(l4, 2)?, if proto == Proto::Tcp { *l4.get(13)? } else { 0 }),
        Proto::Icmp => {
            let t = *l4.first()?;
            match t {
                icmp::types::ECHO_REQUEST => (be16(l4, 4)?, 0, t),
                icmp::types::ECHO_REPLY => (0, be16(l4, 4)?, t),
                _ => (0, 0, t),
            }
        }
    };
    Some(Parsed { proto, src: (ip.src(), sp), dst: (ip.dst(), dp), flags })
}

fn is_fragment(pkt: &[u8]) -> bool {
    ipv4::Packet::new_unchecked(pkt).is_fragment()
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    if let Some(w) = b.get_mut(at..at + 2) {
        w.copy_from_slice(&v.to_be_bytes());
    }
}

/// Rewrites one end (address, and port or echo identifier) of the IPv4 packet `pkt`, with
/// the checksums that cover them: the IPv4 header's incrementally, and the L4 one
/// incrementally where it lies within `pkt` (a quote may end before it). `partial`: the TCP
/// checksum holds only the pseudo-header sum (an offloaded super-packet), rebuilt for the
/// new address. ICMP echo is rewritten only on the side that carries its identifier. `p`
/// is what [`parse`] read of `pkt`.
fn rewrite(pkt: &mut [u8], p: &Parsed, side: Side, to: End, partial: bool) {
    let from = if side == Side::Src { p.src } else { p.dst };
    set_addr(pkt, side, to.0);
    let hl = ipv4::Packet::new_unchecked(&*pkt).header_len();
    let (new_src, new_dst) = {
        let ip = ipv4::Packet::new_unchecked(&*pkt);
        (ip.src(), ip.dst())
    };
    let l4 = &mut pkt[hl..];
    let port_at = if side == Side::Src { 0 } else { 2 };
    let (old_port, new_port) = (from.1.to_be_bytes(), to.1.to_be_bytes());
    match p.proto {
        Proto::Tcp => {
            put16(l4, port_at, to.1);
            if partial {
                if l4.len() >= tcp::HEADER_LEN {
                    tcp::Packet::new_unchecked(&mut *l4).fill_partial_checksum(new_src, new_dst);
                }
            } else if let Some(c) = be16(l4, tcp::CHECKSUM_OFFSET) {
                let c = encap::checksum::update_bytes(c, &from.0.octets(), &to.0.octets());
                put16(l4, tcp::CHECKSUM_OFFSET, encap::checksum::update_bytes(c, &old_port, &new_port));
            }
        }
        Proto::Udp => {
            put16(l4, port_at, to.1);
            // 0 is "no checksum" (RFC 768), and a computed 0 is sent as 0xffff.
            if let Some(c) = be16(l4, 6).filter(|c| *c != 0) {
                let c = encap::checksum::update_bytes(c, &from.0.octets(), &to.0.octets());
                let c = encap::checksum::update_bytes(c, &old_port, &new_port);
                put16(l4, 6, if c == 0 { 0xffff } else { c });
            }
        }
        Proto::Icmp => {
            let carries_id = match p.flags {
                icmp::types::ECHO_REQUEST => side == Side::Src,
                icmp::types::ECHO_REPLY => side == Side::Dst,
                _ => false,
            };
            if carries_id {
                put16(l4, 4, to.1);
                if let Some(c) = be16(l4, 2) {
                    put16(l4, 2, encap::checksum::update_bytes(c, &old_port, &new_port));
                }
            }
        }
    }
}

fn set_addr(pkt: &mut [u8], side: Side, a: Ipv4Addr) {
    let mut ip = ipv4::Packet::new_unchecked(pkt);
    match side {
        Side::Src => ip.set_src_update_checksum(a),
        Side::Dst => ip.set_dst_update_checksum(a),
    }
}

/// The ICMP error in `pkt` (a checked IPv4 packet) and its quote: where the quote starts,
/// and what it says.
fn quote(pkt: &[u8]) -> Option<(usize, Parsed)> {
    let hl = ipv4::Packet::new_unchecked(pkt).header_len();
    let at = hl + icmp::HEADER_LEN;
    let q = pkt.get(at..)?;
    let inner = ipv4::Packet::new_unchecked(q);
    if q.len() < ipv4::HEADER_LEN || inner.version() != 4 || q.len() < inner.header_len() || is_fragment(q) {
        return None;
    }
    Some((at, parse(q)?))
}

/// Rebuilds the checksum of the ICMP message of `pkt` after its quote changed.
fn refill_icmp_checksum(pkt: &mut [u8]) {
    let hl = ipv4::Packet::new_unchecked(&*pkt).header_len();
    let msg = &mut pkt[hl..];
    put16(msg, 2, 0);
    let c = encap::checksum::checksum(msg);
    put16(msg, 2, c);
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // A worker that panicked holding the lock left a consistent table: every change is
        // made whole before the next one starts.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flows in the table.
    pub fn len(&self) -> usize {
        self.lock().flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves the table's clock on and forgets idle flows (the slow path calls this every
    /// second).
    pub fn expire(&self) {
        let now = self.epoch.elapsed().as_secs() as u32;
        self.now.store(now, Ordering::Relaxed);
        self.lock().expire(now);
    }

    /// Masquerades the IPv4 packet `pkt` (checked; from a pod, to outside the pools) as
    /// leaving `node`, making its flow if it has none. `partial`: an offloaded TCP
    /// super-packet, whose checksum holds only the pseudo-header sum.
    pub fn outbound(&self, pkt: &mut [u8], node: Ipv4Addr, partial: bool) -> Result<Out, DropReason> {
        if is_fragment(pkt) {
            return Err(DropReason::NatFragment);
        }
        let p = parse(pkt).ok_or(DropReason::NatUnsupported)?;
        if p.proto == Proto::Icmp && icmp::is_error_type(p.flags) {
            return self.error_outbound(pkt, node);
        }
        match p.flags {
            _ if p.proto != Proto::Icmp => {}
            icmp::types::ECHO_REQUEST => {}
            // A pod answers a ping from outside the pools: that leaves as it is.
            icmp::types::ECHO_REPLY => return Ok(Out::Untouched),
            _ => return Err(DropReason::NatUnsupported),
        }
        let key = Inside { proto: p.proto, pod: p.src, remote: p.dst };
        let now = self.now();
        let mut t = self.lock();
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
    fn free_port(&self, t: &Table, key: &Inside, node: Ipv4Addr) -> Option<u16> {
        let (lo, n) = (u32::from(*PORTS.start()), u32::from(PORTS.end() - PORTS.start()) + 1);
        let start = (self.seed.hash_one(key) % u64::from(n)) as u32;
        (0..n)
            .map(|i| (lo + (start + i) % n) as u16)
            .find(|port| !t.back.contains_key(&Outside { proto: key.proto, node: (node, *port), remote: key.remote }))
    }

    /// An ICMP error a pod sends about a packet of a flow the outside answered: the quote
    /// shows the packet as the pod got it, which becomes the packet as it was sent.
    fn error_outbound(&self, pkt: &mut [u8], node: Ipv4Addr) -> Result<Out, DropReason> {
        let (at, q) = quote(pkt).ok_or(DropReason::NatUnsupported)?;
        // The quoted packet went from the remote to the pod.
        let key = Inside { proto: q.proto, pod: q.dst, remote: q.src };
        let now = self.now();
        let outside = {
            let mut t = self.lock();
            let f = t.flows.get_mut(&key).ok_or(DropReason::NatNoFlow)?;
            f.seen = now;
            f.outside
        };
        let Some(o) = outside else { return Ok(Out::Untouched) };
        set_addr(pkt, Side::Src, node);
        rewrite(&mut pkt[at..], &q, Side::Dst, o.node, false);
        refill_icmp_checksum(pkt);
        Ok(Out::Masqueraded)
    }

    /// Takes the IPv4 packet `pkt` (checked, addressed to `node`, from the underlay) back to
    /// its pod if it belongs to a masqueraded flow: `None` when it cannot (it is the node's),
    /// `Some(Err)` for TCP or UDP to one of the flows' [`PORTS`] that no flow has, which the
    /// transit filter keeps from the kernel. ICMP that no flow has is the kernel's (the
    /// node's own ping may use an identifier in the range).
    pub fn inbound(&self, pkt: &mut [u8], node: Ipv4Addr, partial: bool) -> Option<Result<(), DropReason>> {
        let p = parse(pkt)?;
        if is_fragment(pkt) {
            // The first fragment of an answer says so (its ports are there); the later ones
            // cannot, and go to the kernel, which finds no one to give them to.
            let first = ipv4::Packet::new_unchecked(&*pkt).frag_offset() == 0;
            let ours = first && p.proto != Proto::Icmp && PORTS.contains(&p.dst.1);
            return ours.then_some(Err(DropReason::NatFragment));
        }
        if p.proto == Proto::Icmp && icmp::is_error_type(p.flags) {
            return self.error_inbound(pkt, node);
        }
        if !PORTS.contains(&p.dst.1) || (p.proto == Proto::Icmp && p.flags != icmp::types::ECHO_REPLY) {
            return None;
        }
        let key = Outside { proto: p.proto, node: p.dst, remote: p.src };
        let now = self.now();
        let pod = {
            let mut t = self.lock();
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
    fn error_inbound(&self, pkt: &mut [u8], node: Ipv4Addr) -> Option<Result<(), DropReason>> {
        let (at, q) = quote(pkt)?;
        if q.src.0 != node || !PORTS.contains(&q.src.1) {
            return None;
        }
        let key = Outside { proto: q.proto, node: q.src, remote: q.dst };
        let pod = self.lock().back.get(&key)?.pod;
        set_addr(pkt, Side::Dst, pod.0);
        rewrite(&mut pkt[at..], &q, Side::Src, pod, false);
        refill_icmp_checksum(pkt);
        Some(Ok(()))
    }

    /// Notes a packet from outside the pools to a masquerading pod (`pkt`, checked): the flow
    /// it opens is answered untranslated. A full table notes nothing.
    pub fn note_inbound(&self, pkt: &[u8]) {
        if is_fragment(pkt) {
            return;
        }
        let Some(p) = parse(pkt) else { return };
        if p.proto == Proto::Icmp && p.flags != icmp::types::ECHO_REQUEST {
            return;
        }
        // The pod's answer will go from p.dst to p.src; ICMP echo keeps the identifier.
        let key = match p.proto {
            Proto::Icmp => Inside { proto: p.proto, pod: (p.dst.0, p.src.1), remote: (p.src.0, 0) },
            _ => Inside { proto: p.proto, pod: p.dst, remote: p.src },
        };
        let now = self.now();
        let mut t = self.lock();
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
