//! The transit filter: a classic BPF program for the kernel's ingress hook (tc `clsact`) on
//! the interfaces the router reads.
//!
//! An AF_PACKET socket gets its copy of a frame before that hook runs, and the kernel goes on
//! with the frame as well. With forwarding off, each frame the router forwards then climbs the
//! node's IP stack only to fail a route lookup (and IPIP for the node hits its raw sockets).
//! On a 2-core machine that was a sixth of the 64-byte rate. The filter drops, after our copy,
//! the IPv4 frames that are not for the node, and the tunnels' packets that are (IPIP, and
//! VXLAN: UDP to port 4789, which the kernel would otherwise cut from a super-packet into
//! datagrams only to find no one to take them), and TCP and UDP to the ports of masqueraded
//! flows (which the kernel would answer with a reset or "port unreachable"); frames to the node's own addresses (BGP,
//! ping), broadcast and multicast frames (DHCP, a subnet's broadcast address: the router
//! never forwards them, and the node's kernel may want them), ARP and everything that is
//! neither IPv4 nor IPv6 go on to the kernel. IPv6 alike: what is not for one of the node's
//! addresses is dropped, but for link-local and multicast destinations (NDP).

use std::net::{Ipv4Addr, Ipv6Addr};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_H_ABS: u16 = 0x28;
const LD_W_ABS: u16 = 0x20;
const LD_B_ABS: u16 = 0x30;
/// `ldh [x + k]`, and `ldx 4 * ([k] & 0xf)` (the IPv4 header length).
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JA: u16 = 0x05;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
/// tc actions a direct-action program returns: go on (to the kernel), and drop.
const TC_ACT_UNSPEC: u32 = u32::MAX;
const TC_ACT_SHOT: u32 = 2;
/// At tc ingress a program sees the frame from its Ethernet header.
const ETHERTYPE_AT: u32 = 12;
/// The first byte of the destination MAC; its lowest bit marks a group (broadcast or
/// multicast) address.
const GROUP_BIT_AT: u32 = 0;
const IP_AT: u32 = 14;
const FRAG_AT: u32 = 14 + 6;
const PROTOCOL_AT: u32 = 14 + 9;
const DST_AT: u32 = 14 + 16;
/// The UDP or TCP destination port, past the IPv4 header (whose length is in X).
const DST_PORT_AT: u32 = 14 + 2;

/// At most this many local IPv4 addresses, and IPv6 ones: jumps in classic BPF reach 255
/// instructions.
pub const MAX_LOCAL: usize = 64;
pub const MAX_LOCAL6: usize = 16;

/// `and #k`, and the IPv6 destination address (four words from here).
const AND_K: u16 = 0x54;
const DST6_AT: u32 = 14 + 24;
const NEXT_HEADER6_AT: u32 = 14 + 6;
/// The destination port of TCP or UDP right after the IPv6 header.
const DST_PORT6_AT: u32 = 14 + 40 + 2;

fn insn(code: u16, jt: usize, jf: usize, k: u32) -> Insn {
    // MAX_LOCAL and MAX_LOCAL6 keep every jump within reach (a test builds the longest).
    debug_assert!(jt <= 255 && jf <= 255, "jump {jt}/{jf}");
    Insn { code, jt: jt as u8, jf: jf as u8, k }
}

/// The program for a node owning `local` and `local6` (at most [`MAX_LOCAL`] and
/// [`MAX_LOCAL6`]; more is an error). IPv6 follows the IPv4 rule: a unicast frame to an
/// address that is not the node's is transit and dropped; link-local (`fe80::/10`, which no
/// router forwards: NDP, the pods' gateway) and multicast destinations go to the kernel.
/// `local6` `None`: all IPv6 goes to the kernel (a node with more IPv6 addresses than the
/// program can hold keeps the IPv4 filter).
/// `masquerade` (`masquerade6`): the node masquerades pods (natOutgoing) of IPv4 (IPv6) pools,
/// so TCP and UDP to its [`crate::nat::PORTS`] at its IPv4 (IPv6) address are the router's;
/// without, those ports are the kernel's like any. IPv6 with extension headers is the
/// kernel's (the router does not translate it).
pub fn transit_filter(
    local: &[Ipv4Addr],
    local6: Option<&[Ipv6Addr]>,
    masquerade: bool,
    masquerade6: bool,
) -> Result<Vec<Insn>, String> {
    if local.len() > MAX_LOCAL {
        return Err(format!("{} local addresses; the transit filter takes at most {MAX_LOCAL}", local.len()));
    }
    if let Some(l) = local6.filter(|l| l.len() > MAX_LOCAL6) {
        return Err(format!("{} local IPv6 addresses; the transit filter takes at most {MAX_LOCAL6}", l.len()));
    }
    let n = local.len();
    // 0 destination MAC, 1 group address?, 2 ethertype, 3 IPv4?, 4 destination IP, 5.. one
    // test per address, a jump to drop, the tests for the node's own; then IPv6 alike; then
    // drop and pass. Jumps go forward only: from `i` to `t` is `t - i - 1`.
    let to_local = 5 + n + 1;
    let v6 = to_local + 15;
    let addrs6 = v6 + 6;
    // After the IPv6 addresses, the test of a frame for the node: TCP or UDP to a port of
    // masqueraded flows.
    // Without addresses of its own, no such test (and no IPv6 frame is for the node).
    let for_node6 = local6.map_or(v6, |l| addrs6 + 8 * l.len());
    let drop = match local6 {
        Some(l) if !l.is_empty() => for_node6 + 5,
        _ => for_node6,
    };
    let pass = drop + 1;
    let not_ipv4 = if local6.is_some() { v6 } else { pass };
    let mut p = vec![
        insn(LD_B_ABS, 0, 0, GROUP_BIT_AT),
        insn(JSET_K, pass - 2, 0, 1),
        insn(LD_H_ABS, 0, 0, ETHERTYPE_AT),
        insn(JEQ_K, 0, not_ipv4 - 4, 0x0800),
        insn(LD_W_ABS, 0, 0, DST_AT),
    ];
    for (i, a) in local.iter().enumerate() {
        let at = 5 + i;
        p.push(insn(JEQ_K, to_local - at - 1, 0, u32::from(*a)));
    }
    p.push(Insn { code: JA, jt: 0, jf: 0, k: (drop - to_local) as u32 });
    // For the node: IPIP and VXLAN (a first or only fragment of UDP to port 4789) are the
    // router's to unwrap, and TCP and UDP to the ports of masqueraded flows
    // (`nat::PORTS`) the router's to take back to their pods; the rest is the kernel's.
    let at = |i: usize| to_local + i;
    // Without masquerade a bound no 16-bit port reaches: the same program, those ports the
    // kernel's.
    let nat_ports = if masquerade { u32::from(*crate::nat::PORTS.start()) } else { 0x1_0000 };
    p.push(insn(LD_B_ABS, 0, 0, PROTOCOL_AT));
    p.push(insn(JEQ_K, drop - at(1) - 1, 0, 4));
    p.push(insn(JEQ_K, at(4) - at(2) - 1, 0, 17));
    p.push(insn(JEQ_K, at(10) - at(3) - 1, pass - at(3) - 1, 6));
    // UDP
    p.push(insn(LD_H_ABS, 0, 0, FRAG_AT));
    p.push(insn(JSET_K, pass - at(5) - 1, 0, 0x1fff));
    p.push(insn(LDX_B_MSH, 0, 0, IP_AT));
    p.push(insn(LD_H_IND, 0, 0, DST_PORT_AT));
    p.push(insn(JEQ_K, drop - at(8) - 1, 0, u32::from(encap::vxlan::PORT)));
    p.push(insn(JGE_K, drop - at(9) - 1, pass - at(9) - 1, nat_ports));
    // TCP
    p.push(insn(LD_H_ABS, 0, 0, FRAG_AT));
    p.push(insn(JSET_K, pass - at(11) - 1, 0, 0x1fff));
    p.push(insn(LDX_B_MSH, 0, 0, IP_AT));
    p.push(insn(LD_H_IND, 0, 0, DST_PORT_AT));
    p.push(insn(JGE_K, drop - at(14) - 1, pass - at(14) - 1, nat_ports));
    // IPv6 (the ethertype is still in A): multicast and link-local destinations, then the
    // node's addresses a word at a time, each miss on to the next address.
    let at = |i: usize| v6 + i;
    if local6.is_some() {
        p.push(insn(JEQ_K, 0, pass - at(0) - 1, 0x86dd));
        p.push(insn(LD_B_ABS, 0, 0, DST6_AT));
        p.push(insn(JEQ_K, pass - at(2) - 1, 0, 0xff));
        p.push(insn(LD_H_ABS, 0, 0, DST6_AT));
        p.push(insn(AND_K, 0, 0, 0xffc0));
        p.push(insn(JEQ_K, pass - at(5) - 1, 0, 0xfe80));
    }
    let l6 = local6.unwrap_or_default();
    for (j, a) in l6.iter().enumerate() {
        // A miss on the last address is transit.
        let (first, next) = (addrs6 + 8 * j, if j + 1 == l6.len() { drop } else { addrs6 + 8 * (j + 1) });
        for (w, word) in a.octets().chunks_exact(4).enumerate() {
            let word = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            let i = first + 2 * w + 1;
            let hit = if w == 3 { for_node6 - i - 1 } else { 0 };
            p.push(insn(LD_W_ABS, 0, 0, DST6_AT + 4 * w as u32));
            p.push(insn(JEQ_K, hit, next - i - 1, word));
        }
    }
    if local6.is_some_and(|l| !l.is_empty()) {
        let at = |i: usize| for_node6 + i;
        let nat_ports6 = if masquerade6 { u32::from(*crate::nat::PORTS.start()) } else { 0x1_0000 };
        p.push(insn(LD_B_ABS, 0, 0, NEXT_HEADER6_AT));
        p.push(insn(JEQ_K, at(3) - at(1) - 1, 0, 6));
        p.push(insn(JEQ_K, 0, pass - at(2) - 1, 17));
        p.push(insn(LD_H_ABS, 0, 0, DST_PORT6_AT));
        p.push(insn(JGE_K, drop - at(4) - 1, pass - at(4) - 1, nat_ports6));
    }
    p.push(insn(RET_K, 0, 0, TC_ACT_SHOT));
    p.push(insn(RET_K, 0, 0, TC_ACT_UNSPEC));
    debug_assert_eq!(p.len(), pass + 1);
    Ok(p)
}

/// The program as `tc ... bpf bytecode` takes it: the count, then `code jt jf k` each.
pub fn tc_bytecode(prog: &[Insn]) -> String {
    let mut s = prog.len().to_string();
    for i in prog {
        s.push_str(&format!(",{} {} {} {}", i.code, i.jt, i.jf, i.k));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the instructions the filter uses, as the kernel would on `frame`.
    fn run(prog: &[Insn], frame: &[u8]) -> u32 {
        let (mut pc, mut a, mut x) = (0usize, 0u32, 0u32);
        loop {
            let i = prog[pc];
            let load = |k: u32, n: usize| -> Option<u32> {
                let b = frame.get(k as usize..k as usize + n)?;
                Some(b.iter().fold(0u32, |x, &y| x << 8 | u32::from(y)))
            };
            pc += 1;
            match i.code {
                LD_H_ABS | LD_W_ABS | LD_B_ABS => {
                    let n = match i.code {
                        LD_H_ABS => 2,
                        LD_W_ABS => 4,
                        _ => 1,
                    };
                    // A load past the end ends the program with 0, which tc reads as "ok".
                    match load(i.k, n) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                LD_H_IND => match load(x + i.k, 2) {
                    Some(v) => a = v,
                    None => return 0,
                },
                LDX_B_MSH => match load(i.k, 1) {
                    Some(v) => x = 4 * (v & 0xf),
                    None => return 0,
                },
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                JGE_K => pc += usize::from(if a >= i.k { i.jt } else { i.jf }),
                JSET_K => pc += usize::from(if a & i.k != 0 { i.jt } else { i.jf }),
                AND_K => a &= i.k,
                JA => pc += i.k as usize,
                RET_K => return i.k,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    fn frame(ethertype: u16, proto: u8, dst: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 12..14 + 16].copy_from_slice(&[10, 244, 1, 1]);
        f[14 + 16..14 + 20].copy_from_slice(&dst);
        f
    }

    #[test]
    fn transit_and_ipip_for_the_node_are_dropped_the_rest_goes_to_the_kernel() {
        let node = [192, 168, 100, 100];
        let other = [192, 168, 200, 101];
        let p = transit_filter(&[Ipv4Addr::from(other), Ipv4Addr::from(node)], Some(&[]), true, true)
            .expect("two addresses");
        assert_eq!(run(&p, &frame(0x0800, 1, [10, 244, 2, 1])), TC_ACT_SHOT, "pod to pod");
        assert_eq!(run(&p, &frame(0x0800, 4, [192, 168, 100, 101])), TC_ACT_SHOT, "IPIP passing by");
        assert_eq!(run(&p, &frame(0x0800, 4, node)), TC_ACT_SHOT, "IPIP for the node");
        assert_eq!(run(&p, &frame(0x0800, 4, other)), TC_ACT_SHOT, "IPIP for its other address");
        assert_eq!(run(&p, &frame(0x0800, 6, node)), TC_ACT_UNSPEC, "BGP");
        assert_eq!(run(&p, &frame(0x0800, 1, other)), TC_ACT_UNSPEC, "ping to the node");
        assert_eq!(run(&p, &frame(0x0806, 0, [0; 4])), TC_ACT_UNSPEC, "ARP");
        assert_eq!(run(&p, &frame(0x0800, 1, [10, 244, 2, 1])[..20]), 0, "a runt goes on");
    }

    /// UDP from 10.244.1.1 to `dst` port `port`, with IPv4 options when `ihl` > 5.
    fn udp(dst: [u8; 4], port: u16, ihl: u8, frag: u16) -> Vec<u8> {
        let mut f = frame(0x0800, 17, dst);
        f[14] = 0x40 | ihl;
        f[14 + 6..14 + 8].copy_from_slice(&frag.to_be_bytes());
        f.resize(14 + usize::from(ihl) * 4 + 8, 0);
        let at = 14 + usize::from(ihl) * 4;
        f[at + 2..at + 4].copy_from_slice(&port.to_be_bytes());
        f
    }

    #[test]
    fn vxlan_for_the_node_is_the_routers_other_udp_the_kernels() {
        let node = [192, 168, 100, 100];
        let p = transit_filter(&[Ipv4Addr::from(node)], Some(&[]), true, true).expect("one address");
        assert_eq!(run(&p, &udp(node, 4789, 5, 0)), TC_ACT_SHOT, "VXLAN");
        assert_eq!(run(&p, &udp(node, 4789, 6, 0x4000)), TC_ACT_SHOT, "VXLAN with options and DF");
        assert_eq!(run(&p, &udp(node, 53, 5, 0)), TC_ACT_UNSPEC, "DNS to the node");
        assert_eq!(run(&p, &udp(node, 4789, 5, 0x0010)), TC_ACT_UNSPEC, "a later fragment: the kernel reassembles");
        assert_eq!(run(&p, &udp([192, 168, 100, 7], 53, 5, 0)), TC_ACT_SHOT, "UDP passing by");
    }

    #[test]
    fn the_ports_of_masqueraded_flows_are_the_routers() {
        let node = [192, 168, 100, 100];
        let p = transit_filter(&[Ipv4Addr::from(node)], Some(&[]), true, true).expect("one address");
        let tcp = |port: u16, ihl: u8, frag: u16| {
            let mut f = udp(node, port, ihl, frag);
            f[14 + 9] = 6;
            f.resize(14 + usize::from(ihl) * 4 + 20, 0);
            f
        };
        for port in [61000, 63000, 65535] {
            assert_eq!(run(&p, &udp(node, port, 5, 0)), TC_ACT_SHOT, "UDP to {port}");
            assert_eq!(run(&p, &tcp(port, 5, 0x4000)), TC_ACT_SHOT, "TCP to {port}");
            assert_eq!(run(&p, &tcp(port, 7, 0)), TC_ACT_SHOT, "TCP with options to {port}");
        }
        for port in [179, 4789, 32768, 60999] {
            assert_eq!(run(&p, &tcp(port, 5, 0x4000)), TC_ACT_UNSPEC, "TCP to the node's {port}");
        }
        assert_eq!(run(&p, &udp(node, 60999, 5, 0)), TC_ACT_UNSPEC, "UDP below the range");
        assert_eq!(run(&p, &tcp(62000, 5, 0x0020)), TC_ACT_UNSPEC, "a later fragment: the kernel's");
        assert_eq!(run(&p, &frame(0x0800, 1, node)), TC_ACT_UNSPEC, "ICMP to the node");
        // A node that masquerades nothing leaves those ports to its kernel.
        let p = transit_filter(&[Ipv4Addr::from(node)], Some(&[]), false, false).expect("one address");
        assert_eq!(run(&p, &tcp(63000, 5, 0x4000)), TC_ACT_UNSPEC);
        assert_eq!(run(&p, &udp(node, 65535, 5, 0)), TC_ACT_UNSPEC);
        assert_eq!(run(&p, &udp(node, 4789, 5, 0)), TC_ACT_SHOT, "VXLAN is the router's all the same");
    }

    #[test]
    fn broadcast_and_multicast_frames_go_to_the_kernel() {
        let p = transit_filter(&[Ipv4Addr::new(192, 168, 100, 100)], Some(&[]), true, true).expect("one address");
        let mut bcast = frame(0x0800, 17, [192, 168, 100, 255]);
        bcast[..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(run(&p, &bcast), TC_ACT_UNSPEC, "subnet broadcast");
        let mut limited = frame(0x0800, 17, [255, 255, 255, 255]);
        limited[..6].copy_from_slice(&[0xff; 6]);
        assert_eq!(run(&p, &limited), TC_ACT_UNSPEC, "limited broadcast (DHCP)");
        let mut mcast = frame(0x0800, 17, [224, 0, 0, 251]);
        mcast[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]);
        assert_eq!(run(&p, &mcast), TC_ACT_UNSPEC, "multicast (mDNS)");
        // The same broadcast address in a unicast frame is transit like any other.
        assert_eq!(run(&p, &frame(0x0800, 17, [192, 168, 100, 255])), TC_ACT_SHOT);
    }

    #[test]
    fn without_local_addresses_every_ipv4_frame_is_dropped() {
        let p = transit_filter(&[], Some(&[]), true, true).expect("no address");
        assert_eq!(run(&p, &frame(0x0800, 6, [192, 168, 100, 100])), TC_ACT_SHOT);
        assert_eq!(run(&p, &frame(0x0806, 0, [0; 4])), TC_ACT_UNSPEC);
    }

    #[test]
    fn the_jumps_reach_for_the_most_addresses_and_too_many_is_an_error() {
        let many: Vec<Ipv4Addr> = (0..MAX_LOCAL as u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect();
        let p = transit_filter(&many, Some(&[]), true, true).expect("the most");
        let last = many[MAX_LOCAL - 1].octets();
        assert_eq!(run(&p, &frame(0x0800, 6, last)), TC_ACT_UNSPEC);
        assert_eq!(run(&p, &frame(0x0800, 6, [10, 0, 1, 0])), TC_ACT_SHOT);
        let too_many: Vec<Ipv4Addr> = (0..=MAX_LOCAL as u32).map(Ipv4Addr::from).collect();
        assert!(transit_filter(&too_many, Some(&[]), true, true).is_err());
    }

    /// An IPv6 frame (next header `next`) to `dst`, in a frame to `mac`.
    fn frame6(mac: [u8; 6], next: u8, dst: &str) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 8];
        f[..6].copy_from_slice(&mac);
        f[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        f[14] = 0x60;
        f[14 + 6] = next;
        f[14 + 8..14 + 24].copy_from_slice(&Ipv6Addr::new(0xfd00, 0x10, 0x244, 1, 0, 0, 0, 2).octets());
        f[14 + 24..14 + 40].copy_from_slice(&dst.parse::<Ipv6Addr>().expect("address").octets());
        f
    }

    #[test]
    fn the_ports_of_masqueraded_ipv6_flows_are_the_routers_only_while_ipv6_masquerades() {
        let node6: Ipv6Addr = "fd00:192:168:100::100".parse().expect("address");
        let to = |next: u8, port: u16| {
            let mut f = frame6([2, 0, 0, 0, 0, 1], next, "fd00:192:168:100::100");
            f[14 + 40 + 2..14 + 40 + 4].copy_from_slice(&port.to_be_bytes());
            f
        };
        let v4 = [Ipv4Addr::new(192, 168, 100, 100)];
        let p = transit_filter(&v4, Some(&[node6]), false, true).expect("one address");
        for port in [61000, 65535] {
            assert_eq!(run(&p, &to(6, port)), TC_ACT_SHOT, "TCP to {port}");
            assert_eq!(run(&p, &to(17, port)), TC_ACT_SHOT, "UDP to {port}");
            assert_eq!(run(&p, &to(0, port)), TC_ACT_UNSPEC, "behind an extension header: the kernel's");
        }
        assert_eq!(run(&p, &to(6, 179)), TC_ACT_UNSPEC, "BGP");
        assert_eq!(run(&p, &to(58, 61000)), TC_ACT_UNSPEC, "ICMPv6");
        // IPv4 masquerades, IPv6 does not: its ports stay the kernel's, and the other way round.
        let p = transit_filter(&v4, Some(&[node6]), true, false).expect("one address");
        assert_eq!(run(&p, &to(6, 61000)), TC_ACT_UNSPEC);
        let p = transit_filter(&v4, Some(&[node6]), false, true).expect("one address");
        assert_eq!(run(&p, &udp([192, 168, 100, 100], 61000, 5, 0)), TC_ACT_UNSPEC);
        let p = transit_filter(&v4, Some(&[node6]), true, true).expect("one address");
        assert_eq!(run(&p, &udp([192, 168, 100, 100], 61000, 5, 0)), TC_ACT_SHOT);
    }

    #[test]
    fn ipv6_transit_is_dropped_the_nodes_link_local_and_multicast_go_to_the_kernel() {
        let node6: Ipv6Addr = "fd00:192:168:100::100".parse().expect("address");
        let other6: Ipv6Addr = "fd00:192:168:100::200".parse().expect("address");
        let p = transit_filter(&[Ipv4Addr::new(192, 168, 100, 100)], Some(&[node6, other6]), true, true)
            .expect("addresses");
        let uni = [2, 0, 0, 0, 0, 1];
        assert_eq!(run(&p, &frame6(uni, 58, "fd00:10:244:2::1")), TC_ACT_SHOT, "pod to pod");
        assert_eq!(run(&p, &frame6(uni, 6, "fd00:192:168:100::100")), TC_ACT_UNSPEC, "BGP to the node");
        assert_eq!(run(&p, &frame6(uni, 58, "fd00:192:168:100::200")), TC_ACT_UNSPEC, "its other address");
        // Differing in any one word of four is another address.
        for w in 0..4 {
            let mut o = node6.octets();
            o[4 * w + 3] ^= 1;
            assert_eq!(run(&p, &frame6(uni, 58, &Ipv6Addr::from(o).to_string())), TC_ACT_SHOT, "word {w}");
        }
        assert_eq!(run(&p, &frame6(uni, 58, "fe80::ecee:eeff:feee:eeee")), TC_ACT_UNSPEC, "the pods' gateway");
        assert_eq!(run(&p, &frame6(uni, 58, "febf::1")), TC_ACT_UNSPEC, "the end of fe80::/10");
        assert_eq!(run(&p, &frame6(uni, 58, "fec0::1")), TC_ACT_SHOT, "beyond fe80::/10");
        assert_eq!(run(&p, &frame6(uni, 58, "ff02::1")), TC_ACT_UNSPEC, "multicast in a unicast frame");
        let sn = [0x33, 0x33, 0xff, 0, 0, 1];
        assert_eq!(run(&p, &frame6(sn, 58, "ff02::1:ff00:1")), TC_ACT_UNSPEC, "a neighbour solicitation");
        assert_eq!(run(&p, &frame6(uni, 58, "fd00:10:244:2::1")[..40]), 0, "a runt goes on");
        // IPv4 as before.
        assert_eq!(run(&p, &frame(0x0800, 1, [10, 244, 2, 1])), TC_ACT_SHOT);
        assert_eq!(run(&p, &frame(0x0800, 6, [192, 168, 100, 100])), TC_ACT_UNSPEC);
        assert_eq!(run(&p, &frame(0x0806, 0, [0; 4])), TC_ACT_UNSPEC, "ARP");
        // Unfiltered IPv6 (too many addresses): all of it to the kernel, IPv4 filtered still.
        let p = transit_filter(&[Ipv4Addr::new(192, 168, 100, 100)], None, true, true).expect("IPv4 only");
        assert_eq!(run(&p, &frame6(uni, 58, "fd00:10:244:2::1")), TC_ACT_UNSPEC, "IPv6 left alone");
        assert_eq!(run(&p, &frame(0x0800, 1, [10, 244, 2, 1])), TC_ACT_SHOT, "IPv4 transit");
        assert_eq!(run(&p, &frame(0x0800, 6, [192, 168, 100, 100])), TC_ACT_UNSPEC);
        assert_eq!(run(&p, &frame(0x0806, 0, [0; 4])), TC_ACT_UNSPEC, "ARP");
        // Without IPv6 addresses, every IPv6 unicast but link-local is transit.
        let p = transit_filter(&[], Some(&[]), true, true).expect("none");
        assert_eq!(run(&p, &frame6(uni, 6, "fd00:192:168:100::100")), TC_ACT_SHOT);
        assert_eq!(run(&p, &frame6(uni, 58, "fe80::1")), TC_ACT_UNSPEC);
    }

    #[test]
    fn with_the_most_addresses_of_both_families_every_jump_lands() {
        let many: Vec<Ipv4Addr> = (0..MAX_LOCAL as u32).map(|i| Ipv4Addr::from(0x0a00_0000 + i)).collect();
        let many6: Vec<Ipv6Addr> = (0..MAX_LOCAL6 as u128).map(|i| Ipv6Addr::from(0xfd00 << 112 | i)).collect();
        let p = transit_filter(&many, Some(&many6), true, true).expect("the most");
        for (i, insn) in p.iter().enumerate() {
            let far = match insn.code {
                JEQ_K | JGE_K | JSET_K => usize::from(insn.jt.max(insn.jf)),
                JA => insn.k as usize,
                _ => continue,
            };
            assert!(i + 1 + far < p.len(), "instruction {i} jumps out");
        }
        let uni = [2, 0, 0, 0, 0, 1];
        assert_eq!(run(&p, &frame6(uni, 6, &many6[MAX_LOCAL6 - 1].to_string())), TC_ACT_UNSPEC);
        assert_eq!(run(&p, &frame6(uni, 6, "fd00::ffff")), TC_ACT_SHOT);
        assert_eq!(run(&p, &frame(0x0800, 6, many[MAX_LOCAL - 1].octets())), TC_ACT_UNSPEC);
        let too_many6: Vec<Ipv6Addr> = (0..=MAX_LOCAL6 as u128).map(Ipv6Addr::from).collect();
        assert!(transit_filter(&[], Some(&too_many6), true, true).is_err());
    }

    #[test]
    fn bytecode_is_what_tc_reads() {
        let p = transit_filter(&[Ipv4Addr::new(192, 168, 100, 101)], Some(&[]), true, true).expect("one");
        assert_eq!(
            tc_bytecode(&p),
            "30,48 0 0 0,69 27 0 1,40 0 0 12,21 0 18 2048,32 0 0 30,21 1 0 3232261221,5 0 0 21,48 0 0 23,\
             21 19 0 4,21 1 0 17,21 6 18 6,40 0 0 20,69 16 0 8191,177 0 0 14,72 0 0 16,21 12 0 4789,\
             53 11 12 61000,40 0 0 20,69 10 0 8191,177 0 0 14,72 0 0 16,53 6 7 61000,21 0 6 34525,\
             48 0 0 38,21 4 0 255,40 0 0 38,84 0 0 65472,21 1 0 65152,6 0 0 2,6 0 0 4294967295"
        );
    }
}
