//! `cargo bench -p forwarding --bench fib_criterion`: the lookup half of `--bench fib` under
//! criterion (confidence intervals, comparison with the previous run), on the real table.
//! Each iteration looks up 65 536 addresses; the throughput is in lookups.

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use forwarding::lpm::{Lpm4, Lpm6};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

mod common;
use common::{addresses4, addresses6, crates, real_table};

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
    let tbm = crates::treebitmap4(&t.v4);
    let pt = crates::prefix_trie4(&t.v4);
    let lc = crates::radix4(&t.v4).compress();
    let (inside, uniform) = addresses4(&t.v4, N, &mut seed);
    for (pattern, addrs) in [("inside-prefixes", &inside), ("uniform", &uniform)] {
        let mut g = c.benchmark_group(format!("ipv4/{pattern}"));
        g.throughput(Throughput::Elements(N as u64));
        run(&mut g, "router", addrs, |a| each(a, |x| ours.lookup(x)));
        run(&mut g, "router-batch", addrs, |a| {
            let mut out = [0u32; 64];
            a.chunks(64).fold(0, |acc, c| {
                ours.lookup_batch(c, &mut out);
                out[..c.len()].iter().fold(acc, |acc, &v| acc ^ v)
            })
        });
        run(&mut g, "treebitmap", addrs, |a| {
            each(a, |x| tbm.longest_match(Ipv4Addr::from(x)).map_or(u32::MAX, |m| *m.2))
        });
        run(&mut g, "prefix-trie", addrs, |a| each(a, |x| crates::prefix_trie_lookup4(&pt, x)));
        run(&mut g, "iptrie-lc", addrs, |a| each(a, |x| *lc.lookup(&Ipv4Addr::from(x)).1));
        g.finish();
    }

    let ours6 = Lpm6::build(&t.v6);
    let tbm6 = crates::treebitmap6(&t.v6);
    let pt6 = crates::prefix_trie6(&t.v6);
    let lc6 = crates::radix6(&t.v6).compress();
    let (inside6, uniform6) = addresses6(&t.v6, N, &mut seed);
    for (pattern, addrs) in [("inside-prefixes", &inside6), ("uniform", &uniform6)] {
        let mut g = c.benchmark_group(format!("ipv6/{pattern}"));
        g.throughput(Throughput::Elements(N as u64));
        run(&mut g, "router", addrs, |a| each(a, |x| ours6.lookup(x)));
        run(&mut g, "router-batch", addrs, |a| {
            let mut out = [0u32; 64];
            a.chunks(64).fold(0, |acc, c| {
                ours6.lookup_batch(c, &mut out);
                out[..c.len()].iter().fold(acc, |acc, &v| acc ^ v)
            })
        });
        run(&mut g, "treebitmap", addrs, |a| {
            each(a, |x| tbm6.longest_match(Ipv6Addr::from(x)).map_or(u32::MAX, |m| *m.2))
        });
        run(&mut g, "prefix-trie", addrs, |a| each(a, |x| crates::prefix_trie_lookup6(&pt6, x)));
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
