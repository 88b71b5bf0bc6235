//! `cargo bench -p forwarding --bench fib_criterion`: the lookup half of `--bench fib` under
//! criterion (confidence intervals, comparison with the previous run), on the real table.
//! Each iteration looks up 65 536 addresses; the throughput is in lookups.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use forwarding::lpm::{Lpm4, Lpm6};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

mod common;
use common::{addresses4, addresses6, real_table};

/// Addresses per iteration: enough that the lookups touch much of each table, as the
/// plain benchmark's 2 M do, without making one iteration of the slowest crate take seconds.
const N: usize = 65_536;

/// Benchmarks `f` over the address set as one function of the group.
fn run<A: Copy, M: criterion::measurement::Measurement>(
    g: &mut BenchmarkGroup<'_, M>,
    name: &str,
    addrs: &[A],
    f: impl Fn(&[A]) -> u32,
) {
    g.bench_function(name, |b| b.iter(|| black_box(f(black_box(addrs)))));
}

fn each<A: Copy>(addrs: &[A], f: impl Fn(A) -> u32) -> u32 {
    addrs.iter().fold(0u32, |acc, &a| acc.wrapping_add(f(a)))
}

fn lookups(c: &mut Criterion) {
    let t = real_table();
    let mut seed = 0x1234_5678_9abc_def0;
    let ours = Lpm4::build(&t.v4);
    let mut tbm = ip_network_table_deps_treebitmap::IpLookupTable::new();
    let mut pt: prefix_trie::PrefixMap<ipnet::Ipv4Net, u32> = prefix_trie::PrefixMap::new();
    let mut rt = iptrie::Ipv4RTrieMap::with_root(u32::MAX);
    for &(a, len, v) in &t.v4 {
        tbm.insert(Ipv4Addr::from(a), u32::from(len), v);
        if let Ok(n) = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len) {
            pt.insert(n, v);
        }
        if let Ok(k) = iptrie::Ipv4Prefix::new(Ipv4Addr::from(a), len) {
            rt.insert(k, v);
        }
    }
    let lc = rt.compress();
    let (inside, uniform) = addresses4(&t.v4, N, &mut seed);
    for (pattern, addrs) in [("inside-prefixes", &inside), ("uniform", &uniform)] {
        let mut g = c.benchmark_group(format!("ipv4/{pattern}"));
        g.throughput(Throughput::Elements(N as u64));
        run(&mut g, "router", addrs, |a| each(a, |x| ours.lookup(x)));
        run(&mut g, "router-batch", addrs, |a| {
            let mut out = [0u32; 64];
            a.chunks(64).fold(0, |acc, c| {
                ours.lookup_batch(c, &mut out);
                acc ^ out[0]
            })
        });
        run(&mut g, "treebitmap", addrs, |a| {
            each(a, |x| tbm.longest_match(Ipv4Addr::from(x)).map_or(u32::MAX, |m| *m.2))
        });
        run(&mut g, "prefix-trie", addrs, |a| {
            each(a, |x| {
                let host = ipnet::Ipv4Net::new(Ipv4Addr::from(x), 32).unwrap_or_default();
                pt.get_lpm(&host).map_or(u32::MAX, |m| *m.1)
            })
        });
        run(&mut g, "iptrie-lc", addrs, |a| each(a, |x| *lc.lookup(&Ipv4Addr::from(x)).1));
        g.finish();
    }

    let ours6 = Lpm6::build(&t.v6);
    let mut tbm6 = ip_network_table_deps_treebitmap::IpLookupTable::new();
    let mut pt6: prefix_trie::PrefixMap<ipnet::Ipv6Net, u32> = prefix_trie::PrefixMap::new();
    let mut rt6 = iptrie::Ipv6RTrieMap::with_root(u32::MAX);
    for &(a, len, v) in &t.v6 {
        tbm6.insert(Ipv6Addr::from(a), u32::from(len), v);
        if let Ok(n) = ipnet::Ipv6Net::new(Ipv6Addr::from(a), len) {
            pt6.insert(n, v);
        }
        if let Ok(k) = iptrie::Ipv6Prefix::new(Ipv6Addr::from(a), len) {
            rt6.insert(k, v);
        }
    }
    let lc6 = rt6.compress();
    let (inside6, uniform6) = addresses6(&t.v6, N, &mut seed);
    for (pattern, addrs) in [("inside-prefixes", &inside6), ("uniform", &uniform6)] {
        let mut g = c.benchmark_group(format!("ipv6/{pattern}"));
        g.throughput(Throughput::Elements(N as u64));
        run(&mut g, "router", addrs, |a| each(a, |x| ours6.lookup(x)));
        run(&mut g, "router-batch", addrs, |a| {
            let mut out = [0u32; 64];
            a.chunks(64).fold(0, |acc, c| {
                ours6.lookup_batch(c, &mut out);
                acc ^ out[0]
            })
        });
        run(&mut g, "treebitmap", addrs, |a| {
            each(a, |x| tbm6.longest_match(Ipv6Addr::from(x)).map_or(u32::MAX, |m| *m.2))
        });
        run(&mut g, "prefix-trie", addrs, |a| {
            each(a, |x| {
                let host = ipnet::Ipv6Net::new(Ipv6Addr::from(x), 128).unwrap_or_default();
                pt6.get_lpm(&host).map_or(u32::MAX, |m| *m.1)
            })
        });
        run(&mut g, "iptrie-lc", addrs, |a| each(a, |x| *lc6.lookup(&Ipv6Addr::from(x)).1));
        g.finish();
    }
}

criterion_group! {
    name = fib;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = lookups
}
criterion_main!(fib);
