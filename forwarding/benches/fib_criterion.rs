//! `cargo bench -p forwarding --bench fib_criterion`: the lookup half of `--bench fib` under
//! criterion (confidence intervals, comparison with the previous run), on the real table.
//! Each iteration looks up 65 536 addresses; the throughput is in lookups.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use forwarding::lpm::{Lpm4, Lpm6};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

mod common;
use common::{addresses4, addresses6, batched, crates, real_table};

/// Addresses per iteration: enough that the lookups touch much of each table, as the
/// plain benchmark's 2 M do, without making one iteration of the slowest crate take seconds.
const N: usize = 65_536;

/// One implementation's lookup over a slice of addresses, returning a checksum.
type Lookup<'a, A> = (&'static str, Box<dyn Fn(&[A]) -> u32 + 'a>);

/// A criterion group per address pattern of `family`, each timing every implementation.
fn family<A: Copy>(c: &mut Criterion, family: &str, patterns: [(&str, &[A]); 2], impls: &[Lookup<'_, A>]) {
    for (pattern, addrs) in patterns {
        let mut g = c.benchmark_group(format!("{family}/{pattern}"));
        g.throughput(Throughput::Elements(N as u64));
        for (name, f) in impls {
            g.bench_function(*name, |b| b.iter(|| black_box(f(black_box(addrs)))));
        }
        g.finish();
    }
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
    let impls: [Lookup<'_, u32>; 5] = [
        ("router", Box::new(|a| each(a, |x| ours.lookup(x)))),
        ("router-batch", Box::new(|a| batched(a, |c, out| ours.lookup_batch(c, out)))),
        ("treebitmap", Box::new(|a| each(a, |x| tbm.longest_match(Ipv4Addr::from(x)).map_or(u32::MAX, |m| *m.2)))),
        ("prefix-trie", Box::new(|a| each(a, |x| crates::prefix_trie_lookup4(&pt, x)))),
        ("iptrie-lc", Box::new(|a| each(a, |x| *lc.lookup(&Ipv4Addr::from(x)).1))),
    ];
    family(c, "ipv4", [("inside-prefixes", &inside), ("uniform", &uniform)], &impls);

    let ours6 = Lpm6::build(&t.v6);
    let tbm6 = crates::treebitmap6(&t.v6);
    let pt6 = crates::prefix_trie6(&t.v6);
    let lc6 = crates::radix6(&t.v6).compress();
    let (inside6, uniform6) = addresses6(&t.v6, N, &mut seed);
    let impls6: [Lookup<'_, u128>; 5] = [
        ("router", Box::new(|a| each(a, |x| ours6.lookup(x)))),
        ("router-batch", Box::new(|a| batched(a, |c, out| ours6.lookup_batch(c, out)))),
        ("treebitmap", Box::new(|a| each(a, |x| tbm6.longest_match(Ipv6Addr::from(x)).map_or(u32::MAX, |m| *m.2)))),
        ("prefix-trie", Box::new(|a| each(a, |x| crates::prefix_trie_lookup6(&pt6, x)))),
        ("iptrie-lc", Box::new(|a| each(a, |x| *lc6.lookup(&Ipv6Addr::from(x)).1))),
    ];
    family(c, "ipv6", [("inside-prefixes", &inside6), ("uniform", &uniform6)], &impls6);
}

criterion_group! {
    name = fib;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = lookups
}
criterion_main!(fib);
