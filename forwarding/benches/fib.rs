//! `cargo bench -p forwarding --bench fib`: our FIB's LPM against the best Rust LPM crates on
//! the real 1.07 M-prefix table (`../shared/data/bgp-full-table.lpm.gz`), in one run. Prints a
//! table and writes `target/bench/fib.json`. Plain timing, not criterion: each figure is the
//! best of three passes over 2 M addresses.

use forwarding::lpm::{parse_table, Lpm4, Lpm6, TextTable};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::time::Instant;

const PASSES: usize = 3;

/// The real table (outside the repository), parsed as the FIB tooling parses it.
fn real_table() -> TextTable {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/bgp-full-table.lpm.gz");
    let out = std::process::Command::new("gzip").args(["-dc", path]).output().expect("gzip runs");
    assert!(out.status.success(), "cannot read {path}: the table lives outside the repository");
    let t = parse_table(&String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "{} IPv4 and {} IPv6 prefixes ({} with host bits set, masked; {} lines skipped)",
        t.v4.len(),
        t.v6.len(),
        t.host_bits,
        t.skipped
    );
    t
}

fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    s.split_whitespace().nth(1).and_then(|x| x.parse::<usize>().ok()).unwrap_or(0) * 4096
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Lookups per second, best of PASSES.
fn rate(addrs: &[u32], f: impl Fn(u32) -> u32) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..PASSES {
        let t = Instant::now();
        let mut acc = 0u32;
        for &a in addrs {
            acc = acc.wrapping_add(f(black_box(a)));
        }
        black_box(acc);
        best = best.max(addrs.len() as f64 / t.elapsed().as_secs_f64());
    }
    best
}

#[derive(serde::Serialize)]
struct Row {
    implementation: &'static str,
    family: &'static str,
    pattern: &'static str,
    lookups_per_sec: f64,
    ns_per_lookup: f64,
    memory_bytes: usize,
    build_secs: f64,
}

fn main() {
    let tables = real_table();
    let p = tables.v4;
    let mut seed = 0x1234_5678_9abc_def0;
    let inside: Vec<u32> = (0..2_000_000)
        .map(|_| {
            let (a, len, _) = p[(rng(&mut seed) % p.len() as u64) as usize];
            let host = if len == 32 { 0 } else { (rng(&mut seed) as u32) & (u32::MAX >> len) };
            a | host
        })
        .collect();
    let uniform: Vec<u32> = (0..2_000_000).map(|_| rng(&mut seed) as u32).collect();
    let mut rows = Vec::new();
    let add = |rows: &mut Vec<Row>, name: &'static str, mem: usize, build: f64, f: &dyn Fn(u32) -> u32| {
        for (pattern, addrs) in [("inside-prefixes", &inside), ("uniform", &uniform)] {
            let r = rate(addrs, f);
            rows.push(Row {
                implementation: name,
                family: "ipv4",
                pattern,
                lookups_per_sec: r,
                ns_per_lookup: 1e9 / r,
                memory_bytes: mem,
                build_secs: build,
            });
        }
    };

    let m0 = rss();
    let t = Instant::now();
    let ours = Lpm4::build(&p);
    let build = t.elapsed().as_secs_f64();
    let _ = m0;
    add(&mut rows, "router (range LPM)", ours.memory_bytes(), build, &|a| ours.lookup(a));
    // The batch API over the same addresses, 64 at a time (a worker's batch).
    for (pattern, addrs) in [("inside-prefixes", &inside), ("uniform", &uniform)] {
        let mut best = 0.0f64;
        let mut out = [0u32; 64];
        for _ in 0..PASSES {
            let t = Instant::now();
            let mut acc = 0u32;
            for chunk in addrs.chunks(64) {
                ours.lookup_batch(black_box(chunk), &mut out);
                acc = acc.wrapping_add(out[0]);
            }
            black_box(acc);
            best = best.max(addrs.len() as f64 / t.elapsed().as_secs_f64());
        }
        rows.push(Row {
            implementation: "router (range LPM, batch)",
            family: "ipv4",
            pattern,
            lookups_per_sec: best,
            ns_per_lookup: 1e9 / best,
            memory_bytes: ours.memory_bytes(),
            build_secs: build,
        });
    }

    let m0 = rss();
    let t = Instant::now();
    let mut tbm = ip_network_table_deps_treebitmap::IpLookupTable::new();
    for &(a, len, v) in &p {
        tbm.insert(Ipv4Addr::from(a), u32::from(len), v);
    }
    let build = t.elapsed().as_secs_f64();
    add(&mut rows, "ip_network_table-deps-treebitmap", rss().saturating_sub(m0), build, &|a| {
        tbm.longest_match(Ipv4Addr::from(a)).map_or(u32::MAX, |(_, _, v)| *v)
    });
    drop(tbm);

    let m0 = rss();
    let t = Instant::now();
    let mut pt: prefix_trie::PrefixMap<ipnet::Ipv4Net, u32> = prefix_trie::PrefixMap::new();
    for &(a, len, v) in &p {
        if let Ok(n) = ipnet::Ipv4Net::new(Ipv4Addr::from(a), len) {
            pt.insert(n, v);
        }
    }
    let build = t.elapsed().as_secs_f64();
    add(&mut rows, "prefix-trie", rss().saturating_sub(m0), build, &|a| {
        let host = ipnet::Ipv4Net::new(Ipv4Addr::from(a), 32).unwrap_or_default();
        pt.get_lpm(&host).map_or(u32::MAX, |(_, v)| *v)
    });
    drop(pt);

    let m0 = rss();
    let t = Instant::now();
    let mut rt = iptrie::Ipv4RTrieMap::with_root(u32::MAX);
    for &(a, len, v) in &p {
        if let Ok(k) = iptrie::Ipv4Prefix::new(Ipv4Addr::from(a), len) {
            rt.insert(k, v);
        }
    }
    let lc = rt.compress();
    let build = t.elapsed().as_secs_f64();
    add(&mut rows, "iptrie (LC-trie)", rss().saturating_sub(m0), build, &|a| *lc.lookup(&Ipv4Addr::from(a)).1);

    // IPv6, the same way.
    let p6 = tables.v6;
    let inside6: Vec<u128> = (0..1_000_000)
        .map(|_| {
            let (a, len, _) = p6[(rng(&mut seed) % p6.len() as u64) as usize];
            let r = (u128::from(rng(&mut seed)) << 64) | u128::from(rng(&mut seed));
            let host = if len == 128 { 0 } else { r & (u128::MAX >> len) };
            a | host
        })
        .collect();
    let uniform6: Vec<u128> =
        (0..1_000_000).map(|_| (u128::from(rng(&mut seed)) << 64) | u128::from(rng(&mut seed))).collect();
    let rate6 = |addrs: &[u128], f: &dyn Fn(u128) -> u32| {
        let mut best = 0.0f64;
        for _ in 0..PASSES {
            let t = Instant::now();
            let mut acc = 0u32;
            for &a in addrs {
                acc = acc.wrapping_add(f(black_box(a)));
            }
            black_box(acc);
            best = best.max(addrs.len() as f64 / t.elapsed().as_secs_f64());
        }
        best
    };
    let add6 = |rows: &mut Vec<Row>, name: &'static str, mem: usize, build: f64, f: &dyn Fn(u128) -> u32| {
        for (pattern, addrs) in [("inside-prefixes", &inside6), ("uniform", &uniform6)] {
            let r = rate6(addrs, f);
            rows.push(Row {
                implementation: name,
                family: "ipv6",
                pattern,
                lookups_per_sec: r,
                ns_per_lookup: 1e9 / r,
                memory_bytes: mem,
                build_secs: build,
            });
        }
    };
    let t = Instant::now();
    let ours6 = Lpm6::build(&p6);
    let build = t.elapsed().as_secs_f64();
    add6(&mut rows, "router (range LPM)", ours6.memory_bytes(), build, &|a| ours6.lookup(a));
    let m0 = rss();
    let t = Instant::now();
    let mut tbm6 = ip_network_table_deps_treebitmap::IpLookupTable::new();
    for &(a, len, v) in &p6 {
        tbm6.insert(Ipv6Addr::from(a), u32::from(len), v);
    }
    let build = t.elapsed().as_secs_f64();
    add6(&mut rows, "ip_network_table-deps-treebitmap", rss().saturating_sub(m0), build, &|a| {
        tbm6.longest_match(Ipv6Addr::from(a)).map_or(u32::MAX, |(_, _, v)| *v)
    });
    drop(tbm6);
    let m0 = rss();
    let t = Instant::now();
    let mut pt6: prefix_trie::PrefixMap<ipnet::Ipv6Net, u32> = prefix_trie::PrefixMap::new();
    for &(a, len, v) in &p6 {
        if let Ok(n) = ipnet::Ipv6Net::new(Ipv6Addr::from(a), len) {
            pt6.insert(n, v);
        }
    }
    let build = t.elapsed().as_secs_f64();
    add6(&mut rows, "prefix-trie", rss().saturating_sub(m0), build, &|a| {
        let host = ipnet::Ipv6Net::new(Ipv6Addr::from(a), 128).unwrap_or_default();
        pt6.get_lpm(&host).map_or(u32::MAX, |(_, v)| *v)
    });
    drop(pt6);
    let m0 = rss();
    let t = Instant::now();
    let mut rt6 = iptrie::Ipv6RTrieMap::with_root(u32::MAX);
    for &(a, len, v) in &p6 {
        if let Ok(k) = iptrie::Ipv6Prefix::new(Ipv6Addr::from(a), len) {
            rt6.insert(k, v);
        }
    }
    let lc6 = rt6.compress();
    let build = t.elapsed().as_secs_f64();
    add6(&mut rows, "iptrie (LC-trie)", rss().saturating_sub(m0), build, &|a| *lc6.lookup(&Ipv6Addr::from(a)).1);

    // Table and ratios.
    println!("| implementation | family | pattern | lookups/s | ns/lookup | memory | build |\n|---|---|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} M | {:.1} | {:.1} MiB | {:.2} s |",
            r.implementation,
            r.family,
            r.pattern,
            r.lookups_per_sec / 1e6,
            r.ns_per_lookup,
            r.memory_bytes as f64 / (1 << 20) as f64,
            r.build_secs
        );
    }
    println!();
    for family in ["ipv4", "ipv6"] {
        for pattern in ["inside-prefixes", "uniform"] {
            let best = rows
                .iter()
                .filter(|r| r.family == family && r.pattern == pattern && !r.implementation.starts_with("router"))
                .map(|r| r.lookups_per_sec)
                .fold(0.0, f64::max);
            for ours in rows
                .iter()
                .filter(|r| r.family == family && r.pattern == pattern && r.implementation.starts_with("router"))
            {
                println!(
                    "{family} {pattern}: {} ÷ best crate = {:.1}×",
                    ours.implementation,
                    ours.lookups_per_sec / best.max(1.0)
                );
            }
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("fib.json"), serde_json::to_string_pretty(&rows).unwrap_or_default());
    println!("\nwritten: target/bench/fib.json");
}
