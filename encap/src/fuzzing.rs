//! Entry points for the fuzz targets in `fuzz/` (and the tests that replay their corpora):
//! each takes the fuzzer's bytes and panics only where an invariant breaks.

use crate::gro::{coalesce, merge_vxlan, mergeable, run_len};
use crate::gso::{complete_checksum, TcpSegments, UdpSegments, GSO_TCPV4, MIN_MSS, MIN_UDP_SEGMENT};
use crate::ipv4::Packet;
use crate::tcp;

/// Any bytes as a super-packet and a segment size: cutting it never panics, every segment is
/// a valid IPv4/TCP packet no longer than headers plus the segment size, and the segments'
/// payloads put end to end are the super-packet's payload. Where the segments may be merged
/// again (receive offload), the merge gives back that payload too.
/// Input: two bytes of segment size (big-endian), then the IPv4 packet.
pub fn gso(data: &[u8]) {
    let Some((mss, pkt)) = data.split_first_chunk::<2>() else { return };
    let mss = u16::from_be_bytes(*mss);
    udp_gso(pkt, mss);
    let Ok(segs) = TcpSegments::new(pkt, mss) else { return };
    assert!(mss >= MIN_MSS);
    let ip = Packet::new_checked(pkt).expect("accepted packet parses");
    let hdrs = ip.header_len() + tcp::Packet::new_checked(ip.payload()).expect("accepted TCP header").header_len();
    let total = usize::from(ip.total_len());
    let payload = &pkt[hdrs..total];
    assert!(segs.count() <= payload.len() / usize::from(mss) + 1);
    let mut out = vec![0u8; 70_000];
    let mut joined = Vec::with_capacity(payload.len());
    let mut cut: Vec<Vec<u8>> = Vec::new();
    for i in 0..segs.count() {
        let len = segs.write(i, &mut out).expect("a segment that exists fits the buffer");
        assert_eq!(len, segs.len(i));
        assert!(len <= hdrs + usize::from(mss));
        let seg = Packet::new_checked(&out[..len]).expect("segment parses");
        assert!(seg.verify_checksum());
        let t = tcp::Packet::new_checked(seg.payload()).expect("segment's TCP header");
        assert!(t.verify_checksum(seg.src(), seg.dst()), "segment {i}: TCP checksum");
        joined.extend_from_slice(&out[hdrs..len]);
        cut.push(out[..len].to_vec());
    }
    assert!(segs.write(segs.count(), &mut out).is_none());
    assert_eq!(joined, payload);
    // Receive offload on what we cut: a run that merges carries the same bytes.
    let frames: Vec<_> = cut.iter().map(|c| mergeable(c).map(|m| (&c[..], m))).collect();
    let n = run_len(&frames, 0);
    if n > 1 {
        let run: Vec<_> = frames[..n].iter().flatten().copied().collect();
        let (len, _) = coalesce(&run, 0, &mut out).expect("room for the merge");
        let merged: usize = run.iter().map(|(_, m)| m.payload).sum();
        assert_eq!(len, hdrs + merged);
        assert_eq!(&out[hdrs..len], &payload[..merged]);
    }
}

/// The same bytes as a UDP super-packet: every datagram is a valid IPv4/UDP packet with a
/// right checksum, no longer than the headers and the size, and the payloads put end to end
/// are the super-packet's.
fn udp_gso(pkt: &[u8], size: u16) {
    let Ok(segs) = UdpSegments::new(pkt, size) else { return };
    assert!(size >= MIN_UDP_SEGMENT);
    let ip = Packet::new_checked(pkt).expect("accepted packet parses");
    let (src, dst, hdrs) = (ip.src(), ip.dst(), ip.header_len() + crate::udp::HEADER_LEN);
    let payload = &pkt[hdrs..usize::from(ip.total_len())];
    let mut out = vec![0u8; 70_000];
    let mut joined = Vec::with_capacity(payload.len());
    for i in 0..segs.count() {
        let len = segs.write(i, &mut out, true).expect("a datagram that exists fits the buffer");
        assert!(len <= hdrs + usize::from(size));
        let d = Packet::new_checked(&out[..len]).expect("datagram parses");
        assert!(d.verify_checksum());
        let u = crate::udp::Packet::new_checked(d.payload()).expect("UDP header");
        assert!(u.verify_checksum(src, dst));
        joined.extend_from_slice(u.payload());
    }
    assert_eq!(joined, payload);
}

/// Makes both checksums of an IPv4/TCP packet right, where its headers allow.
fn fix_checksums(p: &mut [u8]) {
    let Ok(mut ip) = Packet::new_checked(&mut p[..]) else { return };
    ip.fill_checksum();
    let (src, dst) = (ip.src(), ip.dst());
    if let Ok(mut t) = tcp::Packet::new_checked(ip.payload_mut()) {
        t.fill_checksum(src, dst);
    }
}

/// Any bytes as a batch of frames toward a pod: deciding which to merge and merging them
/// (receive offload, as the workers do) never panics, and a merged super-packet is a valid
/// IPv4 packet whose payload is its segments' payloads in order, whose TCP checksum, once
/// completed as the receiver's kernel would, verifies, and whose header describes it.
/// Input: frames as (length byte, bytes); a frame whose first byte is odd gets its
/// checksums fixed first, so that runs the merge accepts are common.
pub fn gro(data: &[u8]) {
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let mut f = tail[..take].to_vec();
        if f.first().is_some_and(|b| b & 1 == 1) {
            // Keep the fuzzer's headers but make it an IPv4/TCP packet of its own length.
            if f.len() >= 40 {
                f[0] = 0x45;
                let n = f.len() as u16;
                f[2..4].copy_from_slice(&n.to_be_bytes());
                f[9] = 6;
            }
            fix_checksums(&mut f);
        }
        frames.push(f);
        rest = &tail[take..];
        if frames.len() == 64 {
            break;
        }
    }
    let segs: Vec<_> = frames.iter().map(|f| mergeable(f).map(|m| (&f[..], m))).collect();
    let mut out = vec![0u8; 70_000];
    let mut i = 0;
    while i < segs.len() {
        let n = run_len(&segs[i..], 0);
        if n < 2 {
            i += 1;
            continue;
        }
        let run: Vec<_> = segs[i..i + n].iter().flatten().copied().collect();
        assert_eq!(run.len(), n);
        let (len, hdr) = coalesce(&run, 0, &mut out).expect("a run fits in 64 KB");
        assert!(len <= usize::from(u16::MAX));
        let pkt = &mut out[..len];
        let ip = Packet::new_checked(&pkt[..]).expect("merged packet parses");
        assert!(ip.verify_checksum());
        assert_eq!(usize::from(ip.total_len()), len);
        let hdrs = 20 + run[0].1.thl;
        let mut at = hdrs;
        for (seg, m) in &run {
            assert_eq!(&pkt[at..at + m.payload], &seg[hdrs..hdrs + m.payload]);
            at += m.payload;
        }
        assert_eq!(at, len);
        assert_eq!((hdr.gso_type, usize::from(hdr.gso_size)), (GSO_TCPV4, run[0].1.payload));
        complete_checksum(pkt, usize::from(hdr.csum_start), usize::from(hdr.csum_offset)).expect("range");
        let ip = Packet::new_unchecked(&pkt[..]);
        assert!(tcp::Packet::new_unchecked(ip.payload()).verify_checksum(ip.src(), ip.dst()), "TCP checksum");
        i += n;
    }
    vxlan_run(&frames, &segs);
}

/// `packets` as one UDP super-packet of VXLAN (outer IPv4 onward), each packet in a
/// datagram of its own behind the VXLAN and inner Ethernet headers, as a node sends them
/// from 192.168.100.100 to 192.168.100.101 (VNI 4096): the packet and its datagram size
/// (the first's). `None` if it would exceed 64 KB. For the tests, fuzz targets and benches
/// that need what [`merge_vxlan`] takes; built with the headers the data plane writes.
pub fn vxlan_super(packets: &[&[u8]]) -> Option<(Vec<u8>, u16)> {
    use crate::vxlan::{emit_inner_headers, vtep_mac, Outer, Tunnel, CALICO_VNI, INNER_HEADERS, OUTER_HEADERS};
    let payload_len: usize = packets.iter().map(|p| INNER_HEADERS + p.len()).sum();
    if OUTER_HEADERS + payload_len > usize::from(u16::MAX) {
        return None;
    }
    let (src, dst) = ([192, 168, 100, 100].into(), [192, 168, 100, 101].into());
    let t = Tunnel { src, dst, ttl: 64, vni: CALICO_VNI, src_mac: vtep_mac(src), dst_mac: vtep_mac(dst) };
    let mut p = vec![0u8; OUTER_HEADERS + payload_len];
    let mut at = OUTER_HEADERS;
    for pkt in packets {
        at += INNER_HEADERS;
        emit_inner_headers(&mut p, at, &t);
        p[at..at + pkt.len()].copy_from_slice(pkt);
        at += pkt.len();
    }
    Outer { tos: 0, dont_frag: true, ident: 1, src_port: 50000, partial_checksum: false }.emit(
        &mut p,
        0,
        payload_len,
        &t,
    );
    let size = INNER_HEADERS + packets.first().map_or(0, |p| p.len());
    Some((p, size as u16))
}

/// The same frames as the datagrams of one UDP super-packet of VXLAN ([`vxlan_super`]):
/// [`merge_vxlan`] merges it exactly when the frames make one run of whole packets, into
/// the packet [`coalesce`] makes of them, and otherwise leaves it as it was.
fn vxlan_run(frames: &[Vec<u8>], segs: &[Option<(&[u8], crate::gro::Mergeable)>]) {
    use crate::vxlan::{INNER_HEADERS, OUTER_HEADERS};
    let (Some(first), Some(last)) = (frames.first(), frames.last()) else { return };
    let n = frames.len();
    let equal = frames[..n - 1].iter().all(|f| f.len() == first.len());
    if n < 2 || !equal || last.is_empty() || last.len() > first.len() {
        return;
    }
    let packets: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let Some((mut p, size)) = vxlan_super(&packets) else { return };
    let before = p.clone();
    let one_run = run_len(segs, 0) == n;
    let exact =
        frames.iter().all(|f| Packet::new_checked(&f[..]).is_ok_and(|ip| usize::from(ip.total_len()) == f.len()));
    let Some(m) = merge_vxlan(&mut p, size, true) else {
        assert!(!(one_run && exact), "a run of whole packets merges");
        assert_eq!(p, before, "left as it was");
        return;
    };
    assert!(one_run && exact);
    assert_eq!((m.segments, m.len), (n, before.len() - (n - 1) * (INNER_HEADERS + 20 + m.thl)));
    let run: Vec<_> = segs.iter().flatten().copied().collect();
    let mut want = vec![0u8; 70_000];
    let (len, hdr) = coalesce(&run, 0, &mut want).expect("a run fits in 64 KB");
    assert_eq!(&p[OUTER_HEADERS + INNER_HEADERS..m.len], &want[..len], "the packet coalesce makes");
    assert_eq!((usize::from(hdr.gso_size), m.thl), (usize::from(m.mss), run[0].1.thl));
    let outer = Packet::new_checked(&p[..m.len]).expect("outer IPv4");
    assert!(outer.verify_checksum() && usize::from(outer.total_len()) == m.len);
}

/// Any bytes as a VXLAN packet (outer IPv4 onward): unwrapping never panics; what it accepts
/// is a valid IPv4 packet inside the input, and wrapping it again with what was read (VNI,
/// sender's MAC) and unwrapping that gives the same packet back.
pub fn vxlan_decap(data: &[u8]) {
    use crate::vxlan::{decapsulate, encapsulate, Tunnel, OVERHEAD};
    let mut buf = data.to_vec();
    let len = buf.len();
    let Ok(d) = decapsulate(&mut buf, 0, len) else { return };
    assert!(d.start >= OVERHEAD && d.start <= d.end && d.end <= len);
    let inner = buf[d.start..d.end].to_vec();
    let p = Packet::new_checked(&inner[..]).expect("accepted inner packet parses");
    assert!(p.verify_checksum(), "inner checksum stays valid after the ECN merge");
    let mut again = vec![0u8; OVERHEAD];
    again.extend_from_slice(&inner);
    let end = again.len();
    let t = Tunnel {
        src: std::net::Ipv4Addr::new(192, 168, 100, 100),
        dst: std::net::Ipv4Addr::new(192, 168, 200, 101),
        ttl: 64,
        vni: d.vni,
        src_mac: d.src_mac,
        dst_mac: crate::MacAddr([0x66, 0xee, 0, 0, 0, 1]),
    };
    let start = encapsulate(&mut again, OVERHEAD, end, &t, 1, crate::vxlan::source_port(&inner));
    let d2 = decapsulate(&mut again, start, end).expect("what we wrap unwraps");
    assert_eq!((d2.vni, d2.src_mac), (d.vni, d.src_mac));
    assert_eq!(&again[d2.start..d2.end], &inner[..]);
}

#[cfg(test)]
mod tests {
    /// Replays each target's corpus: seeds and what the fuzzer kept.
    #[test]
    fn gso_and_gro_corpora_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, f) in [("gso", super::gso as fn(&[u8])), ("gro", super::gro)] {
            let dir = root.join(name);
            let mut n = 0;
            for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
                f(&std::fs::read(e.path()).expect("corpus file"));
                n += 1;
            }
            assert!(n >= 2, "{name}: {n} files");
        }
    }
}
