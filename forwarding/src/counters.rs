//! Per-worker counters: packets in and out per interface, and one counter per drop reason.
//!
//! Each worker writes only its own `Counters`, so an increment is a relaxed load and store
//! (no locked instruction); readers sum over workers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why a packet was not forwarded. Every drop has one.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// Stable snake_case name used by the CLI and metrics.
            pub fn name(&self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }

            pub fn describe(&self) -> &'static str {
                match self {
                    $(DropReason::$variant => $doc,)*
                }
            }
        }
    };
}

drop_reasons! {
    ShortFrame => "short_frame": "frame shorter than an Ethernet header",
    Oversize => "oversize": "frame larger than the receive buffer (offloaded super-packet)",
    BadArp => "bad_arp": "ARP that is not Ethernet/IPv4 or is truncated",
    Ipv4Truncated => "ipv4_truncated": "shorter than an IPv4 header",
    BadVersion => "bad_version": "IP version field is not 4",
    BadHeaderLen => "bad_header_len": "IHL below 5 or beyond the frame",
    BadTotalLen => "bad_total_len": "IPv4 total length disagrees with the frame",
    BadChecksum => "bad_checksum": "IPv4 header checksum does not verify",
    Spoofed => "spoofed_source": "source address is not the pod's own (RPF check), or one of our pods' from outside the node",
    BadSource => "bad_source": "source is multicast, broadcast, loopback or unspecified",
    TtlExceeded => "ttl_exceeded": "TTL ran out (ICMP time exceeded sent)",
    NoRoute => "no_route": "no route covers the destination (ICMP unreachable sent)",
    Blackhole => "blackhole": "destination in a blackholed block (unused pod address)",
    FragNeeded => "frag_needed": "too big for the egress MTU with DF set (ICMP sent)",
    NeedsFragmentation => "needs_fragmentation": "too big for the egress MTU and cannot be fragmented (IP options)",
    IpipFromPod => "ipip_from_pod": "a pod sent an encapsulated packet",
    IpipUnknownSource => "ipip_unknown_source": "IPIP from an address that is not a node of the cluster",
    IpipMalformedOuter => "ipip_malformed_outer": "IPIP outer header truncated, bad or fragmented",
    IpipMalformedInner => "ipip_malformed_inner": "IPIP inner packet truncated or with a bad header",
    IpipInvalidEcn => "ipip_invalid_ecn": "IPIP outer CE on a Not-ECT inner packet (RFC 6040)",
    IpipForNode => "ipip_for_node": "inner packet addressed to the node itself (no kernel tunnel to hand it to)",
    VxlanUnknownSource => "vxlan_unknown_source": "VXLAN from an address that is not a node of the cluster",
    VxlanMalformed => "vxlan_malformed": "VXLAN packet truncated, fragmented, with a bad checksum or not carrying IPv4",
    VxlanWrongVni => "vxlan_wrong_vni": "VXLAN with a VNI other than the pod network's (4096)",
    VxlanInvalidEcn => "vxlan_invalid_ecn": "VXLAN outer CE on a Not-ECT inner packet (RFC 6040)",
    NoHeadroom => "no_headroom": "no room in front of the packet for the outer header",
    NeighbourFailed => "neighbour_failed": "next hop did not answer ARP",
    NeighbourQueueFull => "neighbour_queue_full": "too many packets waiting for one ARP answer",
    NeighbourTableFull => "neighbour_table_full": "the interface's neighbour table is full: no new next hop is resolved",
    NeighbourRateLimited => "neighbour_rate_limited": "too many new next hops to resolve at once on the interface",
    SlowPathFull => "slow_path_full": "slow-path channel full",
    TxError => "tx_error": "the kernel refused to send the frame",
    RxQueueFull => "rx_queue_full": "the kernel dropped packets for us: a worker's socket (or tunl0's) queue was full",
    Ipv6Malformed => "ipv6_malformed": "IPv6 header truncated, or a payload length beyond the frame",
    NdpInvalid => "ndp_invalid": "neighbour discovery that fails RFC 4861's checks (hop limit, checksum, options)",
    HopLimitExceeded => "hop_limit_exceeded": "IPv6 hop limit ran out (ICMPv6 time exceeded sent)",
    PacketTooBig => "packet_too_big": "IPv6 packet too big for the egress MTU (ICMPv6 packet too big sent; routers never fragment IPv6)",
    NatFragment => "nat_fragment": "a fragment to masquerade (only whole packets carry the ports a flow is known by)",
    NatUnsupported => "nat_unsupported": "a packet to masquerade that is not TCP, UDP, ICMP echo or an ICMP error",
    NatTableFull => "nat_table_full": "no room for another masqueraded flow (in the table, or of this pod)",
    NatPortsExhausted => "nat_ports_exhausted": "every port of the node for masqueraded flows is taken toward this destination",
    NatNoFlow => "nat_no_flow": "TCP or UDP to a port of the node for masqueraded flows that no flow has, or a pod's ICMP error about no masqueraded flow",
    GsoFailed => "gso_failed": "an offloaded super-packet we could not cut into segments (not TCP/IPv4, malformed, or a bad checksum range)",
}

/// Packets and bytes through one interface, both directions.
#[derive(Debug, Default)]
pub struct IfaceCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
}

/// One writer's counters.
#[derive(Debug)]
pub struct Counters {
    pub ifaces: Vec<IfaceCounters>,
    drops: Vec<AtomicU64>,
    pub icmp_errors_sent: AtomicU64,
    pub arp_replies_sent: AtomicU64,
    /// Proxy-NDP advertisements for the pods' IPv6 gateway.
    pub ndp_replies_sent: AtomicU64,
    pub ipip_encapsulated: AtomicU64,
    pub ipip_decapsulated: AtomicU64,
    pub vxlan_encapsulated: AtomicU64,
    pub vxlan_decapsulated: AtomicU64,
    pub fragments_sent: AtomicU64,
    /// Offloaded super-packets received whole, and the segments we cut from them.
    pub gso_received: AtomicU64,
    pub gso_segments: AtomicU64,
    pub udp_gso_sent: AtomicU64,
    pub udp_gso_received: AtomicU64,
    /// Super-packets built by merging TCP segments (on their way to a pod, or out of a VXLAN
    /// UDP super-packet), and the segments in them.
    pub gro_packets: AtomicU64,
    pub gro_segments: AtomicU64,
    /// Packets masqueraded on their way out, and answers taken back to their pod.
    pub nat_masqueraded: AtomicU64,
    pub nat_restored: AtomicU64,
    /// IPv4 identification for the packets this writer originates (outer headers).
    ident: AtomicU64,
    /// ICMP errors this writer may still send in the current interval (see `refill_icmp`).
    icmp_tokens: AtomicU64,
    /// "Fragmentation needed" has a budget of its own, per source (hashed into
    /// [`FRAG_SLOTS`] buckets): path MTU discovery must keep working while a flood of other
    /// errors spends the shared budget, and one source's flood spends only its own bucket.
    frag_tokens: Box<[AtomicU64]>,
}

/// Buckets of the per-source "fragmentation needed" budget.
pub const FRAG_SLOTS: usize = 64;
/// "Fragmentation needed" errors each bucket may send per 100 ms.
pub const FRAG_TOKENS: u64 = 20;

/// The bucket of `src` (Fibonacci hashing: the top bits of a multiplication spread
/// neighbouring addresses apart).
#[inline]
pub fn frag_slot(src: std::net::Ipv4Addr) -> usize {
    (u32::from(src).wrapping_mul(0x9E37_79B9) >> 26) as usize % FRAG_SLOTS
}

/// ICMP errors each writer may send per 100 ms (1,000/s, with bursts of 100).
pub const ICMP_TOKENS: u64 = 100;

/// A random start for a writer's IPv4 identification sequence. Every worker writes outer
/// headers between the same node pairs; started alike, two workers would hand out the same
/// ids at once, and fragments of two packets could be put together at the far end (RFC 6864
/// asks for ids unique per source, destination and protocol while fragments live). std's
/// `RandomState` is seeded from the OS once and differs at every call: random bits without a
/// file or a crate.
fn random_start() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Single-writer increment: cheaper than `fetch_add`, correct because only the owner writes.
#[inline]
pub fn bump(c: &AtomicU64, by: u64) {
    c.store(c.load(Relaxed).wrapping_add(by), Relaxed);
}

impl Counters {
    pub fn new(n_ifaces: usize) -> Self {
        Counters {
            ifaces: (0..n_ifaces).map(|_| IfaceCounters::default()).collect(),
            drops: DropReason::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            icmp_errors_sent: AtomicU64::new(0),
            arp_replies_sent: AtomicU64::new(0),
            ndp_replies_sent: AtomicU64::new(0),
            ipip_encapsulated: AtomicU64::new(0),
            ipip_decapsulated: AtomicU64::new(0),
            vxlan_encapsulated: AtomicU64::new(0),
            vxlan_decapsulated: AtomicU64::new(0),
            fragments_sent: AtomicU64::new(0),
            gso_received: AtomicU64::new(0),
            gso_segments: AtomicU64::new(0),
            udp_gso_sent: AtomicU64::new(0),
            udp_gso_received: AtomicU64::new(0),
            gro_packets: AtomicU64::new(0),
            gro_segments: AtomicU64::new(0),
            nat_masqueraded: AtomicU64::new(0),
            nat_restored: AtomicU64::new(0),
            ident: AtomicU64::new(random_start()),
            icmp_tokens: AtomicU64::new(ICMP_TOKENS),
            frag_tokens: (0..FRAG_SLOTS).map(|_| AtomicU64::new(FRAG_TOKENS)).collect(),
        }
    }

    /// Takes one ICMP error token; false when the budget of this interval is spent.
    #[inline]
    pub fn take_icmp_token(&self) -> bool {
        let t = self.icmp_tokens.load(Relaxed);
        if t == 0 {
            return false;
        }
        self.icmp_tokens.store(t - 1, Relaxed);
        true
    }

    /// Takes one "fragmentation needed" token of `src`'s bucket.
    #[inline]
    pub fn take_frag_token(&self, src: std::net::Ipv4Addr) -> bool {
        let slot = &self.frag_tokens[frag_slot(src)];
        let t = slot.load(Relaxed);
        if t == 0 {
            return false;
        }
        slot.store(t - 1, Relaxed);
        true
    }

    /// Takes one "packet too big" token of the IPv6 `src`'s bucket (the buckets are shared
    /// with IPv4's "fragmentation needed", by a hash of the address).
    #[inline]
    pub fn take_frag_token6(&self, src: std::net::Ipv6Addr) -> bool {
        let o = src.octets();
        let folded = std::net::Ipv4Addr::from(
            u32::from_be_bytes([o[0], o[1], o[2], o[3]])
                ^ u32::from_be_bytes([o[4], o[5], o[6], o[7]])
                ^ u32::from_be_bytes([o[8], o[9], o[10], o[11]])
                ^ u32::from_be_bytes([o[12], o[13], o[14], o[15]]),
        );
        self.take_frag_token(folded)
    }

    /// Starts a new interval of the ICMP error budgets (the owner calls this every 100 ms).
    pub fn refill_icmp(&self) {
        self.icmp_tokens.store(ICMP_TOKENS, Relaxed);
        for t in self.frag_tokens.iter() {
            t.store(FRAG_TOKENS, Relaxed);
        }
    }

    /// A fresh IPv4 identification for an originated header (single writer).
    #[inline]
    pub fn next_ident(&self) -> u16 {
        let v = self.ident.load(Relaxed).wrapping_add(1);
        self.ident.store(v, Relaxed);
        v as u16
    }

    #[inline]
    pub fn count_drop(&self, r: DropReason) {
        if let Some(c) = self.drops.get(r as usize) {
            bump(c, 1);
        }
    }

    /// Counts `n` drops at once.
    pub fn count_drops(&self, r: DropReason, n: u64) {
        if let Some(c) = self.drops.get(r as usize) {
            bump(c, n);
        }
    }

    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops.get(r as usize).map_or(0, |c| c.load(Relaxed))
    }

    #[inline]
    pub fn rx(&self, iface: usize, bytes: usize) {
        if let Some(c) = self.ifaces.get(iface) {
            bump(&c.rx_packets, 1);
            bump(&c.rx_bytes, bytes as u64);
        }
    }

    #[inline]
    /// Zeroes an interface slot's counters before a new interface takes the slot (no one
    /// writes them then: no port and no route refers to the slot).
    pub fn reset_iface(&self, iface: usize) {
        if let Some(c) = self.ifaces.get(iface) {
            for a in [&c.rx_packets, &c.rx_bytes, &c.tx_packets, &c.tx_bytes] {
                a.store(0, Relaxed);
            }
        }
    }

    pub fn tx(&self, iface: usize, bytes: usize) {
        if let Some(c) = self.ifaces.get(iface) {
            bump(&c.tx_packets, 1);
            bump(&c.tx_bytes, bytes as u64);
        }
    }
}

/// Sums of several writers' counters, for reports.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Totals {
    pub ifaces: Vec<IfaceTotals>,
    pub drops: Vec<(&'static str, u64)>,
    pub tallies: Tallies,
}

/// The counters that are neither per interface nor per drop reason, summed; the admin API
/// carries them as they are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tallies {
    pub icmp_errors_sent: u64,
    pub arp_replies_sent: u64,
    #[serde(default)]
    pub ndp_replies_sent: u64,
    pub ipip_encapsulated: u64,
    pub ipip_decapsulated: u64,
    #[serde(default)]
    pub vxlan_encapsulated: u64,
    #[serde(default)]
    pub vxlan_decapsulated: u64,
    pub fragments_sent: u64,
    pub gso_received: u64,
    pub gso_segments: u64,
    /// UDP super-packets sent whole (VXLAN), and received and cut into their datagrams.
    #[serde(default)]
    pub udp_gso_sent: u64,
    #[serde(default)]
    pub udp_gso_received: u64,
    pub gro_packets: u64,
    pub gro_segments: u64,
    /// Packets masqueraded (`natOutgoing`), and answers taken back to their pod.
    #[serde(default)]
    pub nat_masqueraded: u64,
    #[serde(default)]
    pub nat_restored: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IfaceTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
}

impl Totals {
    pub fn sum<'a>(n_ifaces: usize, all: impl IntoIterator<Item = &'a Counters>) -> Totals {
        let mut t = Totals {
            ifaces: vec![IfaceTotals::default(); n_ifaces],
            drops: DropReason::ALL.iter().map(|r| (r.name(), 0)).collect(),
            ..Default::default()
        };
        for c in all {
            for (i, ic) in c.ifaces.iter().enumerate().take(n_ifaces) {
                t.ifaces[i].rx_packets += ic.rx_packets.load(Relaxed);
                t.ifaces[i].rx_bytes += ic.rx_bytes.load(Relaxed);
                t.ifaces[i].tx_packets += ic.tx_packets.load(Relaxed);
                t.ifaces[i].tx_bytes += ic.tx_bytes.load(Relaxed);
            }
            for (i, r) in DropReason::ALL.iter().enumerate() {
                t.drops[i].1 += c.drops(*r);
            }
            t.tallies.icmp_errors_sent += c.icmp_errors_sent.load(Relaxed);
            t.tallies.arp_replies_sent += c.arp_replies_sent.load(Relaxed);
            t.tallies.ndp_replies_sent += c.ndp_replies_sent.load(Relaxed);
            t.tallies.ipip_encapsulated += c.ipip_encapsulated.load(Relaxed);
            t.tallies.ipip_decapsulated += c.ipip_decapsulated.load(Relaxed);
            t.tallies.vxlan_encapsulated += c.vxlan_encapsulated.load(Relaxed);
            t.tallies.vxlan_decapsulated += c.vxlan_decapsulated.load(Relaxed);
            t.tallies.fragments_sent += c.fragments_sent.load(Relaxed);
            t.tallies.gso_received += c.gso_received.load(Relaxed);
            t.tallies.gso_segments += c.gso_segments.load(Relaxed);
            t.tallies.udp_gso_sent += c.udp_gso_sent.load(Relaxed);
            t.tallies.udp_gso_received += c.udp_gso_received.load(Relaxed);
            t.tallies.gro_packets += c.gro_packets.load(Relaxed);
            t.tallies.gro_segments += c.gro_segments.load(Relaxed);
            t.tallies.nat_masqueraded += c.nat_masqueraded.load(Relaxed);
            t.tallies.nat_restored += c.nat_restored.load(Relaxed);
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_name() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }

    #[test]
    fn writers_start_their_ip_id_sequences_apart() {
        let firsts: Vec<u16> = (0..8).map(|_| Counters::new(1).next_ident()).collect();
        let mut distinct = firsts.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // 8 random 16-bit starts: all equal with probability 2^-112; 7 distinct or fewer is
        // a birthday hit of about 4 in 10,000, so ask for at least 6.
        assert!(distinct.len() >= 6, "{firsts:?}");
    }

    #[test]
    fn totals_sum_over_writers() {
        let a = Counters::new(2);
        let b = Counters::new(2);
        a.count_drop(DropReason::NoRoute);
        b.count_drop(DropReason::NoRoute);
        a.rx(1, 100);
        let t = Totals::sum(2, [&a, &b]);
        assert_eq!(t.drops.iter().find(|d| d.0 == "no_route").map(|d| d.1), Some(2));
        assert_eq!(t.ifaces[1].rx_bytes, 100);
    }
}
