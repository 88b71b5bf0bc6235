//! The traffic generator and sink. Both run inside lab namespaces as ordinary UDP endpoints,
//! many datagrams per system call (`sendmmsg`/`recvmmsg`), so the router sees real pod
//! traffic: many flows (source ports), fixed sizes or IMIX, sequence numbers for loss and
//! reordering.

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Frame sizes on the wire (Ethernet + IPv4 + UDP + payload).
pub const HEADERS: usize = 14 + 20 + 8;
/// What an IPv6 header adds. A size names an IPv4 frame; over IPv6 the same payload travels
/// in a frame this much longer (84 bytes for 64: a 64-byte IPv6 frame has no room for the
/// generator's 14-byte tag).
pub const IPV6_EXTRA: usize = 20;
/// The payload starts with this, then flow (2 bytes) and sequence (8 bytes).
const MAGIC: &[u8; 4] = b"RPRF";

/// Simple IMIX: 7 small, 4 medium, 1 large (the classic 7:4:1).
const IMIX: [usize; 12] = [64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    Fixed(usize),
    Imix,
}

impl std::str::FromStr for Size {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(Size::Imix);
        }
        let n: usize = s.parse().map_err(|_| format!("size {s:?}: a frame size in bytes (64 to 1500) or imix"))?;
        if !(HEADERS + MAGIC.len() + 10..=1500).contains(&n) {
            return Err(format!("size {n}: use 64 to 1500"));
        }
        Ok(Size::Fixed(n))
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Fixed(n) => write!(f, "{n}"),
            Size::Imix => write!(f, "imix"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenReport {
    pub sent: u64,
    pub bytes: u64,
    pub secs: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SinkReport {
    pub received: u64,
    /// Frame bytes (headers included), for Gbit/s.
    pub bytes: u64,
    pub flows: usize,
    /// Sequence numbers never seen, per flow, summed.
    pub lost: u64,
    /// Packets that arrived after a later one of their flow.
    pub reordered: u64,
    /// From the first packet to the last.
    pub secs: f64,
}

/// Sends to `dst:port` from `flows` source ports for `duration`, at most `pps` packets/s
/// (0: as fast as possible).
pub fn generate(
    dst: IpAddr,
    port: u16,
    size: Size,
    flows: usize,
    duration: Duration,
    pps: u64,
    count: u64,
) -> anyhow::Result<GenReport> {
    // A frame larger than the pod's MTU would leave the pod as fragments; keep every datagram
    // one packet (1500 becomes 1494 on a 1480-byte IPIP-ready pod).
    let mtu: usize =
        std::fs::read_to_string("/sys/class/net/eth0/mtu").ok().and_then(|m| m.trim().parse().ok()).unwrap_or(1500);
    let size = match size {
        Size::Fixed(n) => Size::Fixed(n.min(mtu + 14)),
        s => s,
    };
    let extra = if dst.is_ipv6() { IPV6_EXTRA } else { 0 };
    let clamp = |n: usize| n.min(mtu + 14 - extra);
    let any = if dst.is_ipv6() { "::" } else { "0.0.0.0" };
    let socks: Vec<UdpSocket> = (0..flows.max(1))
        .map(|i| {
            let s = UdpSocket::bind((any, 20000 + i as u16)).context("binding a generator port")?;
            s.connect((dst, port))?;
            Ok(s)
        })
        .collect::<anyhow::Result<_>>()?;
    const BATCH: usize = 64;
    // Preallocated payloads per flow; only the sequence numbers change.
    let mut bufs: Vec<Vec<Vec<u8>>> = (0..socks.len())
        .map(|f| {
            (0..BATCH)
                .map(|i| {
                    let frame = clamp(match size {
                        Size::Fixed(n) => n,
                        Size::Imix => IMIX[i % IMIX.len()],
                    });
                    let mut b = vec![0u8; frame - HEADERS];
                    b[..4].copy_from_slice(MAGIC);
                    b[4..6].copy_from_slice(&(f as u16).to_be_bytes());
                    b
                })
                .collect()
        })
        .collect();
    let mut seq = vec![0u64; socks.len()];
    let (mut sent, mut bytes) = (0u64, 0u64);
    let start = Instant::now();
    let end = start + duration;
    'outer: loop {
        for (f, s) in socks.iter().enumerate() {
            let now = Instant::now();
            if now >= end || (count > 0 && sent >= count) {
                break 'outer;
            }
            if pps > 0 {
                let due = (now - start).as_secs_f64() * pps as f64;
                if sent as f64 >= due {
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
            }
            // The last batch of a counted run stops at the count.
            let want = if count > 0 { BATCH.min((count - sent) as usize) } else { BATCH };
            for b in bufs[f][..want].iter_mut() {
                b[6..14].copy_from_slice(&seq[f].to_be_bytes());
                seq[f] += 1;
            }
            let mut refs: [&[u8]; BATCH] = [&[]; BATCH];
            for (r, b) in refs.iter_mut().zip(&bufs[f][..want]) {
                *r = b.as_slice();
            }
            match netsys::send_batch(s.as_fd(), &refs[..want]) {
                Ok(n) => {
                    sent += n as u64;
                    bytes += refs[..n].iter().map(|b| (b.len() + HEADERS + extra) as u64).sum::<u64>();
                    // What the kernel did not take is not counted as sent; rewind.
                    seq[f] -= (want - n) as u64;
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::ECONNREFUSED)
                    ) =>
                {
                    seq[f] -= want as u64;
                }
                Err(e) => return Err(e).context("sending"),
            }
        }
    }
    Ok(GenReport { sent, bytes, secs: start.elapsed().as_secs_f64() })
}

/// Receives on `port` until `idle` passes without traffic after the first packet, or
/// `max` passes in all.
pub fn sink(port: u16, ipv6: bool, idle: Duration, max: Duration) -> anyhow::Result<SinkReport> {
    let (domain, any, extra) = match ipv6 {
        true => (socket2::Domain::IPV6, IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), IPV6_EXTRA),
        false => (socket2::Domain::IPV4, IpAddr::from([0, 0, 0, 0]), 0),
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, None)?;
    s.set_recv_buffer_size(64 << 20)?;
    s.bind(&socket2::SockAddr::from(std::net::SocketAddr::from((any, port))))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let fd = s.as_fd();
    let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; 2048]).collect();
    let mut lens = vec![0usize; 64];
    // Per flow: (highest sequence seen, packets).
    let mut flows: HashMap<u16, (u64, u64)> = HashMap::new();
    let mut r = SinkReport::default();
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    loop {
        let now = Instant::now();
        if now - started > max || first.is_some_and(|_| now - last > idle) {
            break;
        }
        let n = match netsys::recv_batch(fd, &mut bufs, 0, 2048, &mut lens) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receiving"),
        };
        last = Instant::now();
        first.get_or_insert(last);
        for (b, &len) in bufs.iter().zip(lens.iter()).take(n) {
            if len < 14 || &b[..4] != MAGIC {
                continue;
            }
            let flow = u16::from_be_bytes([b[4], b[5]]);
            let seq = u64::from_be_bytes([b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13]]);
            let e = flows.entry(flow).or_insert((0, 0));
            if e.1 > 0 && seq < e.0 {
                r.reordered += 1;
            }
            e.0 = e.0.max(seq);
            e.1 += 1;
            r.received += 1;
            r.bytes += (len + HEADERS + extra) as u64;
        }
    }
    r.flows = flows.len();
    r.lost = flows.values().map(|(max, n)| (max + 1).saturating_sub(*n)).sum();
    r.secs = match first {
        Some(f) => (last - f).as_secs_f64(),
        None => 0.0,
    };
    Ok(r)
}
