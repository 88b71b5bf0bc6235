//! Sends one trace probe (run inside the source pod's namespace by `router trace`): an ICMP
//! echo (ICMPv6 for an IPv6 destination), a UDP datagram or a TCP SYN whose payload is the
//! trace marker and id; then waits at the pod's interface for what comes back.

use anyhow::Context as _;
use encap::checksum;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::time::{Duration, Instant};

/// What reached the pod in answer to its probe: the truth at the source, which holds also
/// where no router sees the way (tun mode's kernel routes, a host that answers directly).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    pub from: IpAddr,
    /// `ICMP echo reply`, `ICMP port unreachable`, `TCP RST`, …
    pub what: String,
    /// Milliseconds from the probe's sending to the answer's arrival.
    pub after_ms: f64,
}

/// The interface the kernel sends to `dst` by: the one that holds the source address it
/// picks (a pod's `eth0`, whatever its runtime named it).
fn interface_toward(dst: IpAddr) -> anyhow::Result<String> {
    let src = source_for(dst).with_context(|| format!("no route to {dst} in the pod"))?;
    let ip = |a: &nix::sys::socket::SockaddrStorage| {
        a.as_sockaddr_in().map(|s| IpAddr::from(s.ip())).or_else(|| a.as_sockaddr_in6().map(|s| s.ip().into()))
    };
    nix::ifaddrs::getifaddrs()?
        .find(|i| i.address.as_ref().and_then(ip) == Some(src))
        .map(|i| i.interface_name)
        .with_context(|| format!("no interface holds {src}, the pod's address toward {dst}"))
}

/// Sends trace `id`'s probe and waits up to `wait` for the first packet of the trace that
/// arrives on the pod's interface: the answer, or None.
pub fn run(dst: IpAddr, proto: ProbeProto, id: u32, ttl: u8, wait: Duration) -> anyhow::Result<Option<Answer>> {
    // Listening starts before the probe leaves, so no answer can slip past.
    let name = interface_toward(dst)?;
    let link = netsys::link_info(&name).with_context(|| format!("the pod's {name}"))?;
    let rx = netsys::PacketSocket::open_rx(link.ifindex, None, 1 << 20)
        .with_context(|| format!("listening for the answer on {name}"))?;
    let mut poll = mio::Poll::new()?;
    poll.registry().register(&mut mio::unix::SourceFd(&rx.as_raw_fd()), mio::Token(0), mio::Interest::READABLE)?;
    let mut events = mio::Events::with_capacity(4);
    // A TCP or UDP super-packet may arrive whole: room for 64 KB, one frame at a time.
    const MAX: usize = 65_536;
    let (mut bufs, mut lens, mut hdrs) = ([vec![0u8; MAX]], [0usize], [encap::gso::VnetHdr::NONE]);
    let sent = Instant::now();
    send(dst, proto, id, ttl)?;
    loop {
        let Some(left) = wait.checked_sub(sent.elapsed()) else {
            return Ok(None);
        };
        match poll.poll(&mut events, Some(left)) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r?,
        }
        loop {
            let n = match netsys::recv_batch_vnet(rx.as_fd(), &mut bufs, 0, MAX, &mut lens, &mut hdrs) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                r => r.context("reading from the pod's interface")?,
            };
            for (b, &len) in bufs.iter().zip(&lens).take(n) {
                let frame = &b[..len.min(MAX)];
                if !forwarding::trace::belongs(frame, true, id) {
                    continue;
                }
                if let Some(s) = forwarding::trace::summarize(frame, true) {
                    let after_ms = sent.elapsed().as_secs_f64() * 1e3;
                    return Ok(Some(Answer { from: s.src, what: s.what.into(), after_ms }));
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProto {
    Icmp,
    Udp,
    Tcp,
}

/// The source address the kernel would use toward `dst` (no packet is sent).
fn source_for(dst: IpAddr) -> anyhow::Result<IpAddr> {
    let any = if dst.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let s = UdpSocket::bind(any)?;
    s.connect((dst, 9))?;
    Ok(s.local_addr()?.ip())
}

/// Sends trace `id`'s probe to `dst` with `ttl` (IPv6: the hop limit).
fn send(dst: IpAddr, proto: ProbeProto, id: u32, ttl: u8) -> anyhow::Result<()> {
    let to = SockAddr::from(SocketAddr::new(dst, 0));
    let body = forwarding::trace::probe_payload(id);
    let domain = if dst.is_ipv6() { Domain::IPV6 } else { Domain::IPV4 };
    let limit = |s: &Socket| -> anyhow::Result<()> {
        if dst.is_ipv6() {
            s.set_unicast_hops_v6(ttl.into())?;
        } else {
            s.set_ttl(ttl.into())?;
        }
        Ok(())
    };
    match proto {
        ProbeProto::Icmp if dst.is_ipv6() => {
            // The kernel fills in an ICMPv6 checksum itself (RFC 3542 §3.1).
            let s = Socket::new(domain, Type::RAW, Some(Protocol::ICMPV6)).context("raw ICMPv6 socket (needs root)")?;
            limit(&s)?;
            let mut m = vec![128, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
            m.extend_from_slice(&body);
            s.send_to(&m, &to).context("sending the ICMPv6 probe")?;
        }
        ProbeProto::Icmp => {
            let s = Socket::new(domain, Type::RAW, Some(Protocol::ICMPV4)).context("raw ICMP socket (needs root)")?;
            limit(&s)?;
            let mut m = vec![8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
            m.extend_from_slice(&body);
            let c = checksum::checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            s.send_to(&m, &to).context("sending the ICMP probe")?;
        }
        ProbeProto::Udp => {
            let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).context("UDP socket")?;
            limit(&s)?;
            s.send_to(&body, &SockAddr::from(SocketAddr::new(dst, 33434))).context("sending the UDP probe")?;
        }
        ProbeProto::Tcp => {
            let src = source_for(dst)?;
            let s = Socket::new(domain, Type::RAW, Some(Protocol::TCP)).context("raw TCP socket (needs root)")?;
            limit(&s)?;
            let sport = 40000 + (id % 20000) as u16;
            let mut t = Vec::with_capacity(20 + body.len());
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&80u16.to_be_bytes());
            t.extend_from_slice(&id.to_be_bytes()); // sequence number
            t.extend_from_slice(&[0, 0, 0, 0]); // ack
            t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // offset 5, SYN, window, csum, urg
            t.extend_from_slice(&body);
            // Checksum over the pseudo header (RFC 793 §3.1, RFC 8200 §8.1).
            let pseudo = match (src, dst) {
                (IpAddr::V6(s), IpAddr::V6(d)) => encap::ipv6::pseudo_header_sum(s, d, 6, t.len()),
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    let mut p = Vec::with_capacity(12);
                    p.extend_from_slice(&s.octets());
                    p.extend_from_slice(&d.octets());
                    p.extend_from_slice(&[0, 6]);
                    p.extend_from_slice(&(t.len() as u16).to_be_bytes());
                    checksum::sum(&p)
                }
                _ => anyhow::bail!("no source of {dst}'s family"),
            };
            let c = checksum::finish(checksum::sum(&t) + pseudo);
            t[16..18].copy_from_slice(&c.to_be_bytes());
            s.send_to(&t, &to).context("sending the TCP probe")?;
        }
    }
    Ok(())
}
