//! Sends one trace probe (run inside the source pod's namespace by `router trace`): an ICMP
//! echo, a UDP datagram or a TCP SYN whose payload is the trace marker and id.

use anyhow::Context as _;
use encap::checksum;
use forwarding::trace::MAGIC;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeProto {
    Icmp,
    Udp,
    Tcp,
}

fn payload(id: u32) -> Vec<u8> {
    let mut p = MAGIC.to_vec();
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(b" router trace probe");
    p
}

/// The source address the kernel would use toward `dst` (no packet is sent).
fn source_for(dst: Ipv4Addr) -> anyhow::Result<Ipv4Addr> {
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.connect((dst, 9))?;
    match s.local_addr()? {
        SocketAddr::V4(a) => Ok(*a.ip()),
        SocketAddr::V6(_) => anyhow::bail!("no IPv4 source toward {dst}"),
    }
}

pub fn send(dst: Ipv4Addr, proto: ProbeProto, id: u32) -> anyhow::Result<()> {
    let to = SockAddr::from(SocketAddrV4::new(dst, 0));
    let body = payload(id);
    match proto {
        ProbeProto::Icmp => {
            let s =
                Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).context("raw ICMP socket (needs root)")?;
            let mut m = vec![8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
            m.extend_from_slice(&body);
            let c = checksum::checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            s.send_to(&m, &to).context("sending the ICMP probe")?;
        }
        ProbeProto::Udp => {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.send_to(&body, (dst, 33434)).context("sending the UDP probe")?;
        }
        ProbeProto::Tcp => {
            let src = source_for(dst)?;
            let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::TCP)).context("raw TCP socket (needs root)")?;
            let sport = 40000 + (id % 20000) as u16;
            let mut t = Vec::with_capacity(20 + body.len());
            t.extend_from_slice(&sport.to_be_bytes());
            t.extend_from_slice(&80u16.to_be_bytes());
            t.extend_from_slice(&id.to_be_bytes()); // sequence number
            t.extend_from_slice(&[0, 0, 0, 0]); // ack
            t.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // offset 5, SYN, window, csum, urg
            t.extend_from_slice(&body);
            // Checksum over the pseudo header (RFC 793 §3.1).
            let mut pseudo = Vec::with_capacity(12);
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, 6]);
            pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
            let c = checksum::finish(checksum::sum(&t) + checksum::sum(&pseudo));
            t[16..18].copy_from_slice(&c.to_be_bytes());
            s.send_to(&t, &to).context("sending the TCP probe")?;
        }
    }
    Ok(())
}
