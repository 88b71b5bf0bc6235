//! `cargo bench -p forwarding --bench fib`: our FIB's LPM against the best Rust LPM crates on
//! the real 1.07 M-prefix table (`../shared/data/bgp-full-table.lpm.gz`), in one run. Prints a
//! table and writes `target/bench/fib.json`. Plain timing, not criterion: each figure is the
//! best of three passes over 2 M addresses.

use forwarding::lpm::{read_table, Lpm4, Lpm4Writer, Lpm6, TextTable};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

const PASSES: usize = 3;

/// The real table (outside the repository), parsed as the FIB tooling parses it.
fn real_table() -> TextTable {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/bgp-full-table.lpm.gz");
    let t =
        read_table(path.as_ref()).unwrap_or_else(|e| panic!("{path}: {e} (the table lives outside the repository)"));
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
    /// Single-route withdrawals and re-announcements per second (the crates' own insert and
    /// remove; ours through the writer, published at least every millisecond).
    updates_per_sec: Option<f64>,
}

/// The update stream every implementation gets: 100 000 prefixes of the table, withdrawn one
/// at a time and then announced again.
fn churn(p: &[(u32, u8, u32)]) -> Vec<(u32, u8, u32)> {
    p.iter().step_by(p.len() / 100_000).take(100_000).copied().collect()
}

/// Times `withdraw` over the churn set and then `announce`; updates per second.
fn update_rate<T>(
    set: &[(u32, u8, u32)],
    table: &mut T,
    withdraw: impl Fn(&mut T, u32, u8),
    announce: impl Fn(&mut T, u32, u8, u32),
) -> f64 {
    let t = Instant::now();
    for &(a, len, _) in set {
        withdraw(table, a, len);
    }
    for &(a, len, v) in set {
        announce(table, a, len, v);
    }
    (set.len() * 2) as f64 / t.elapsed().as_secs_f64()
}

/// What a concurrent reader saw while the writer worked.
#[derive(serde::Serialize)]
struct UpdateRun {
    /// "every update" (a snapshot per update) or "every 1 ms" (changes coalesced).
    publish: &'static str,
    updates_per_sec: f64,
    publishes: usize,
    /// Lookups per second of the reader thread while updates ran, and with none running.
    reader_lookups_per_sec: f64,
    reader_idle_lookups_per_sec: f64,
    /// The longest a reader's batch of 64 lookups took while updates ran.
    reader_worst_batch_us: f64,
}

/// Single-route updates through [`Lpm4Writer`] while another thread keeps looking up in the
/// published snapshot (loaded once per batch of 64, as a worker does).
fn concurrent_updates(p: &[(u32, u8, u32)], addrs: &[u32], every_update: bool) -> UpdateRun {
    let set = churn(p);
    let mut w = Lpm4Writer::with_prefixes(p);
    let handle = Arc::new(arc_swap::ArcSwap::from_pointee(w.publish()));
    let reader = |handle: Arc<arc_swap::ArcSwap<Lpm4>>, stop: Arc<AtomicBool>, addrs: Vec<u32>| {
        std::thread::spawn(move || {
            let (mut n, mut worst, mut out) = (0u64, 0f64, [0u32; 64]);
            let t0 = Instant::now();
            'run: loop {
                for chunk in addrs.chunks(64) {
                    let t = Instant::now();
                    handle.load().lookup_batch(chunk, &mut out);
                    black_box(out[0]);
                    worst = worst.max(t.elapsed().as_secs_f64());
                    n += chunk.len() as u64;
                    if stop.load(Ordering::Relaxed) {
                        break 'run;
                    }
                }
            }
            (n as f64 / t0.elapsed().as_secs_f64(), worst)
        })
    };
    let idle = {
        let stop = Arc::new(AtomicBool::new(false));
        let r = reader(Arc::clone(&handle), Arc::clone(&stop), addrs.to_vec());
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        r.join().map(|x| x.0).unwrap_or(0.0)
    };
    let stop = Arc::new(AtomicBool::new(false));
    let r = reader(Arc::clone(&handle), Arc::clone(&stop), addrs.to_vec());
    let mut publishes = 0;
    let mut last = Instant::now();
    let mut maybe_publish = |w: &mut Lpm4Writer| {
        if every_update || last.elapsed().as_micros() >= 1000 {
            handle.store(Arc::new(w.publish()));
            publishes += 1;
            last = Instant::now();
        }
    };
    let t = Instant::now();
    for &(a, len, _) in &set {
        w.remove(a, len);
        maybe_publish(&mut w);
    }
    for &(a, len, v) in &set {
        w.insert(a, len, v);
        maybe_publish(&mut w);
    }
    handle.store(Arc::new(w.publish()));
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (during, worst) = r.join().unwrap_or((0.0, 0.0));
    UpdateRun {
        publish: if every_update { "every update" } else { "every 1 ms" },
        updates_per_sec: (set.len() * 2) as f64 / secs,
        publishes: publishes + 1,
        reader_lookups_per_sec: during,
        reader_idle_lookups_per_sec: idle,
        reader_worst_batch_us: worst * 1e6,
    }
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
    let add =
        |rows: &mut Vec<Row>, name: &'static str, mem: usize, build: f64, upd: Option<f64>, f: &dyn Fn(u32) -> u32| {
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
                    updates_per_sec: upd,
                });
            }
        };

    let m0 = rss();
    let t = Instant::now();
    let ours = Lpm4::build(&p);
    let build = t.elapsed().as_secs_f64();
    let _ = m0;
    let runs = [concurrent_updates(&p, &inside, false), concurrent_updates(&p, &inside, true)];
    let ours_upd = Some(runs[0].updates_per_sec);
    add(&mut rows, "router (range LPM)", ours.memory_bytes(), build, ours_upd, &|a| ours.lookup(a));
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
            updates_per_sec: ours_upd,
        });
    }

    let m0 = rss();
    let t = Instant::now();
    let mut tbm = ip_network_table_deps_treebitmap::IpLookupTable::new();
    for &(a, len, v) in &p {
        tbm.insert(Ipv4Addr::from(a), u32::from(len), v);
    }
    let build = t.elapsed().as_secs_f64();
    let mem = rss().saturating_sub(m0);
    let upd = update_rate(
        &churn(&p),
        &mut tbm,
        |tbm, a, len| {
            tbm.remove(Ipv4Addr::from(a), u32::from(len));
        },
        |tbm, a, len, v| {
            tbm.insert(Ipv4Addr::from(a), u32::from(len), v);
        },
    );
    add(&mut rows, "ip_network_table-deps-treebitmap", mem, build, Some(upd), &|a| {
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
    let mem = rss().saturating_sub(m0);
    let net = |a: u32, len: u8| ipnet::Ipv4Net::new(Ipv4Addr::from(a), len).unwrap_or_default();
    let upd = update_rate(
        &churn(&p),
        &mut pt,
        |pt, a, len| {
            pt.remove(&net(a, len));
        },
        |pt, a, len, v| {
            pt.insert(net(a, len), v);
        },
    );
    add(&mut rows, "prefix-trie", mem, build, Some(upd), &|a| {
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
    let mem = rss().saturating_sub(m0);
    // The LC-trie is static: updates go to the radix trie it is compressed from.
    let mut rt = iptrie::Ipv4RTrieMap::with_root(u32::MAX);
    for &(a, len, v) in &p {
        if let Ok(k) = iptrie::Ipv4Prefix::new(Ipv4Addr::from(a), len) {
            rt.insert(k, v);
        }
    }
    let key = |a: u32, len: u8| iptrie::Ipv4Prefix::new(Ipv4Addr::from(a), len).ok();
    let upd = update_rate(
        &churn(&p),
        &mut rt,
        |rt, a, len| {
            if let Some(k) = key(a, len) {
                rt.remove(&k);
            }
        },
        |rt, a, len, v| {
            if let Some(k) = key(a, len) {
                rt.insert(k, v);
            }
        },
    );
    add(&mut rows, "iptrie (LC-trie)", mem, build, Some(upd), &|a| *lc.lookup(&Ipv4Addr::from(a)).1);

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
                updates_per_sec: None,
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
    println!(
        "| implementation | family | pattern | lookups/s | ns/lookup | memory | build | updates/s |\n|---|---|---|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.1} M | {:.1} | {:.1} MiB | {:.2} s | {} |",
            r.implementation,
            r.family,
            r.pattern,
            r.lookups_per_sec / 1e6,
            r.ns_per_lookup,
            r.memory_bytes as f64 / (1 << 20) as f64,
            r.build_secs,
            r.updates_per_sec.map_or("–".to_string(), |u| format!("{:.2} M", u / 1e6))
        );
    }
    println!(
        "\nSingle-route updates (100 000 withdrawals, then the same announced again) while a reader thread looks up:"
    );
    println!("| publish | updates/s | snapshots | reader lookups/s (during / idle) | reader's worst batch of 64 |\n|---|---:|---:|---:|---:|");
    for u in &runs {
        println!(
            "| {} | {:.2} M | {} | {:.1} M / {:.1} M | {:.0} µs |",
            u.publish,
            u.updates_per_sec / 1e6,
            u.publishes,
            u.reader_lookups_per_sec / 1e6,
            u.reader_idle_lookups_per_sec / 1e6,
            u.reader_worst_batch_us
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
    let _ = std::fs::write(dir.join("fib-updates.json"), serde_json::to_string_pretty(&runs).unwrap_or_default());
    println!("\nwritten: target/bench/fib.json, target/bench/fib-updates.json");
}
