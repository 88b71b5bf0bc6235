//! `cargo bench -p encap --bench offload`: what the offload paths cost per super-packet, in
//! the same run: cutting a TCP super-packet into 1448-byte segments (copies and a checksum
//! per segment), and merging a UDP super-packet of the same segments in VXLAN back in place
//! (`gro::merge_vxlan`), with and without checking every segment's checksums.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use encap::{gro, gso::TcpSegments, ipv4, tcp};
use std::hint::black_box;

const MSS: u16 = 1448;

/// A TCP/IPv4 super-packet of `payload` bytes, ACK set, checksums complete.
fn super_packet(payload: usize) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    ipv4::Repr {
        src: [10, 244, 1, 1].into(),
        dst: [10, 244, 2, 1].into(),
        protocol: ipv4::Protocol::Tcp,
        tos: 0,
        ident: 1,
        dont_frag: true,
        ttl: 64,
        payload_len: 20 + payload,
    }
    .emit(&mut p);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&1u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = tcp::flags::ACK;
    p.extend((0..payload).map(|i| (i % 251) as u8));
    tcp::Packet::new_unchecked(&mut p[20..]).fill_checksum([10, 244, 1, 1].into(), [10, 244, 2, 1].into());
    p
}

/// The same super-packet's segments as one UDP super-packet of VXLAN, and its datagram size.
fn vxlan_super(pkt: &[u8]) -> (Vec<u8>, u16) {
    let segs = TcpSegments::new(pkt, MSS).expect("segments");
    let cut: Vec<Vec<u8>> = (0..segs.count())
        .map(|i| {
            let mut seg = vec![0u8; segs.len(i)];
            segs.write(i, &mut seg).expect("room");
            seg
        })
        .collect();
    let packets: Vec<&[u8]> = cut.iter().map(Vec::as_slice).collect();
    encap::fuzzing::vxlan_super(&packets).expect("under 64 KB")
}

fn offload(c: &mut Criterion) {
    // 40 segments: about what a pod's stack hands over at once, and what one UDP
    // super-packet of VXLAN can carry (its datagrams 62 bytes longer each, under 64 KB).
    let pkt = super_packet(40 * usize::from(MSS));
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Bytes(pkt.len() as u64));
    let mut out = vec![0u8; 2000];
    g.bench_function("cut 64 KB into segments", |b| {
        b.iter(|| {
            let segs = TcpSegments::new(black_box(&pkt), MSS).expect("segments");
            for i in 0..segs.count() {
                black_box(segs.write(i, &mut out));
            }
        })
    });
    let (wrapped, size) = vxlan_super(&pkt);
    let mut work = wrapped.clone();
    for (name, verify) in [("merge VXLAN super-packet in place", false), ("merge VXLAN, checksums verified", true)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                work.copy_from_slice(&wrapped);
                black_box(gro::merge_vxlan(&mut work, size, verify).expect("one run"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, offload);
criterion_main!(benches);
