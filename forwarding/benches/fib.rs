//! `cargo bench -p forwarding --bench fib`: our FIB's LPM against the best Rust LPM crates on
//! the real 1.07 M-prefix table (iptrie's `benches/bgpas.lpm`, see `lpm::real_table_path`), in one run. Prints a
//! table and writes `target/bench/fib.json`. Plain timing: each figure is the best of seven
//! rounds over 1–2 M addresses, the implementations taking turns within each round. The
//! criterion version of the lookups is `--bench fib_criterion`.

use forwarding::lpm::{Lpm4, Lpm4Writer, Lpm6, Lpm6Writer};
use forwarding::snapshot::Published;
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod common;
#[path = "../../perf/src/provenance.rs"]
mod provenance;
use common::{addresses4, addresses6, batched, crates, real_table};

const PASSES: usize = 7;

/// Every allocation is counted, so that a crate's memory is the heap its table holds. RSS
/// growth, measured before, showed 0.0 MiB for crates whose build reused freed memory.
#[global_allocator]
static HEAP: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

/// Looks up every address of a slice; returns a checksum of the answers.
type Run<'a, A> = Box<dyn Fn(&[A]) -> u32 + 'a>;

/// One implementation under test: its lookup over a whole slice of addresses (so that batch
/// APIs can batch), returning a checksum of the answers.
struct Impl<'a, A> {
    name: &'static str,
    memory: usize,
    build: f64,
    updates: Option<f64>,
    run: Run<'a, A>,
}

/// A single-address lookup as an [`Impl`] body.
fn each<'a, A: Copy + 'a>(f: impl Fn(A) -> u32 + 'a) -> Run<'a, A> {
    Box::new(move |addrs: &[A]| addrs.iter().fold(0u32, |acc, &a| acc.wrapping_add(f(black_box(a)))))
}

/// Lookups per second of every implementation on every pattern: PASSES rounds, each timing
/// every implementation once, best round kept. Interleaving the rounds means a noisy
/// moment on this shared machine hits all of them alike instead of one.
fn measure<A: Copy>(
    family: &'static str,
    impls: &[Impl<'_, A>],
    patterns: &[(&'static str, &[A])],
    rows: &mut Vec<Row>,
) {
    let mut best = vec![0.0f64; impls.len() * patterns.len()];
    for _ in 0..PASSES {
        for (i, imp) in impls.iter().enumerate() {
            for (j, (_, addrs)) in patterns.iter().enumerate() {
                let t = Instant::now();
                black_box((imp.run)(black_box(addrs)));
                let r = addrs.len() as f64 / t.elapsed().as_secs_f64();
                best[i * patterns.len() + j] = best[i * patterns.len() + j].max(r);
            }
        }
    }
    for (i, imp) in impls.iter().enumerate() {
        for (j, (pattern, _)) in patterns.iter().enumerate() {
            let r = best[i * patterns.len() + j];
            rows.push(Row {
                implementation: imp.name,
                family,
                pattern,
                lookups_per_sec: r,
                ns_per_lookup: 1e9 / r,
                memory_bytes: imp.memory,
                build_secs: imp.build,
                updates_per_sec: imp.updates,
            });
        }
    }
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

/// The update stream every implementation gets: up to 100 000 prefixes of the table,
/// withdrawn one at a time and then announced again.
fn churn<A: Copy>(p: &[(A, u8, u32)]) -> Vec<(A, u8, u32)> {
    churn_of(p, 100_000)
}

/// `n` prefixes spread over the table.
fn churn_of<A: Copy>(p: &[(A, u8, u32)], n: usize) -> Vec<(A, u8, u32)> {
    p.iter().step_by((p.len() / n).max(1)).take(n).copied().collect()
}

/// Updates in the run that publishes after every one: each publish rebuilds a whole /8
/// (IPv4) or /16 (IPv6), so fewer of them.
const EVERY_UPDATE_CHURN: usize = 5_000;

/// Times `withdraw` over the churn set and then `announce`; updates per second.
fn update_rate<A: Copy, T>(
    set: &[(A, u8, u32)],
    table: &mut T,
    withdraw: impl Fn(&mut T, A, u8),
    announce: impl Fn(&mut T, A, u8, u32),
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
    family: &'static str,
    /// "every update" (a snapshot per update) or "every 1 ms" (changes coalesced).
    publish: &'static str,
    updates_per_sec: f64,
    publishes: usize,
    /// Lookups per second of the reader thread while updates ran, and with none running.
    reader_lookups_per_sec: f64,
    reader_idle_lookups_per_sec: f64,
    /// The longest a reader's batch of 64 lookups took while updates ran, and with none
    /// running for as long.
    reader_worst_batch_us: f64,
    reader_idle_worst_batch_us: f64,
    /// The reader thread's voluntary context switches while updates ran (it blocked: on a
    /// lock, in the allocator, in a syscall), and involuntary ones (the scheduler took its
    /// core away).
    reader_sleeps: u64,
    reader_preemptions: u64,
}

/// This thread's (voluntary, involuntary) context switches so far.
fn switches() -> (u64, u64) {
    let s = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field =
        |name: &str| s.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    (field("voluntary_ctxt_switches:"), field("nonvoluntary_ctxt_switches:"))
}

/// Our two writers and their snapshots, as the update benchmark drives them.
trait Writer: Sized {
    type Addr: Copy + Send + 'static;
    type Snap: Send + Sync + 'static;
    fn new(p: &[(Self::Addr, u8, u32)]) -> Self;
    fn insert(&mut self, a: Self::Addr, len: u8, v: u32);
    fn remove(&mut self, a: Self::Addr, len: u8);
    fn publish(&mut self) -> Self::Snap;
    fn batch(snap: &Self::Snap, addrs: &[Self::Addr], out: &mut [u32]);
}

impl Writer for Lpm4Writer {
    type Addr = u32;
    type Snap = Lpm4;
    fn new(p: &[(u32, u8, u32)]) -> Self {
        Lpm4Writer::with_prefixes(p)
    }
    fn insert(&mut self, a: u32, len: u8, v: u32) {
        Lpm4Writer::insert(self, a, len, v);
    }
    fn remove(&mut self, a: u32, len: u8) {
        Lpm4Writer::remove(self, a, len);
    }
    fn publish(&mut self) -> Lpm4 {
        Lpm4Writer::publish(self)
    }
    fn batch(snap: &Lpm4, addrs: &[u32], out: &mut [u32]) {
        snap.lookup_batch(addrs, out);
    }
}

impl Writer for Lpm6Writer {
    type Addr = u128;
    type Snap = Lpm6;
    fn new(p: &[(u128, u8, u32)]) -> Self {
        Lpm6Writer::with_prefixes(p)
    }
    fn insert(&mut self, a: u128, len: u8, v: u32) {
        Lpm6Writer::insert(self, a, len, v);
    }
    fn remove(&mut self, a: u128, len: u8) {
        Lpm6Writer::remove(self, a, len);
    }
    fn publish(&mut self) -> Lpm6 {
        Lpm6Writer::publish(self)
    }
    fn batch(snap: &Lpm6, addrs: &[u128], out: &mut [u32]) {
        snap.lookup_batch(addrs, out);
    }
}

/// Single-route updates through our writer while another thread keeps looking up in the
/// published snapshot (loaded once per batch of 64, as a worker does).
fn concurrent_updates<W: Writer>(
    family: &'static str,
    p: &[(W::Addr, u8, u32)],
    addrs: &[W::Addr],
    every_update: bool,
) -> UpdateRun {
    let set = if every_update { churn_of(p, EVERY_UPDATE_CHURN) } else { churn(p) };
    let mut w = W::new(p);
    // The data plane's publication point: a reader never frees an old snapshot.
    let handle = Published::new(w.publish());
    let reader = |handle: Published<W::Snap>, stop: Arc<AtomicBool>, addrs: Vec<W::Addr>| {
        std::thread::spawn(move || {
            let (mut n, mut worst, mut out) = (0u64, 0f64, [0u32; 64]);
            let s0 = switches();
            let t0 = Instant::now();
            'run: loop {
                for chunk in addrs.chunks(64) {
                    let t = Instant::now();
                    W::batch(&handle.load(), chunk, &mut out);
                    black_box(out[0]);
                    worst = worst.max(t.elapsed().as_secs_f64());
                    n += chunk.len() as u64;
                    if stop.load(Ordering::Relaxed) {
                        break 'run;
                    }
                }
            }
            let rate = n as f64 / t0.elapsed().as_secs_f64();
            let s1 = switches();
            (rate, worst, (s1.0.saturating_sub(s0.0), s1.1.saturating_sub(s0.1)))
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let r = reader(handle.clone(), Arc::clone(&stop), addrs.to_vec());
    let mut publishes = 0;
    let mut last = Instant::now();
    let mut maybe_publish = |w: &mut W| {
        if every_update || last.elapsed().as_micros() >= 1000 {
            handle.publish(w.publish());
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
    handle.publish(w.publish());
    let secs = t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (during, worst, sw) = r.join().unwrap_or((0.0, 0.0, (0, 0)));
    // The same reader for as long again with no writer: its worst batch there is what the
    // machine itself does to it (preemption, interrupts).
    let (idle, idle_worst) = {
        let stop = Arc::new(AtomicBool::new(false));
        let r = reader(handle.clone(), Arc::clone(&stop), addrs.to_vec());
        std::thread::sleep(std::time::Duration::from_secs_f64(secs.max(0.3)));
        stop.store(true, Ordering::Relaxed);
        let (rate, worst, _) = r.join().unwrap_or((0.0, 0.0, (0, 0)));
        (rate, worst)
    };
    UpdateRun {
        family,
        publish: if every_update { "every update" } else { "every 1 ms" },
        updates_per_sec: (set.len() * 2) as f64 / secs,
        publishes: publishes + 1,
        reader_lookups_per_sec: during,
        reader_idle_lookups_per_sec: idle,
        reader_worst_batch_us: worst * 1e6,
        reader_idle_worst_batch_us: idle_worst * 1e6,
        reader_sleeps: sw.0,
        reader_preemptions: sw.1,
    }
}

/// Builds a crate's table from the prefixes, timing it and counting the heap bytes it holds
/// afterwards (allocated minus freed during the build).
fn built<T>(f: impl FnOnce() -> T) -> (T, f64, usize) {
    let heap = stats_alloc::Region::new(HEAP);
    let t = Instant::now();
    let x = f();
    let secs = t.elapsed().as_secs_f64();
    let c = heap.change();
    let held = c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated;
    (x, secs, usize::try_from(held).unwrap_or(0))
}

/// A rate with the unit that keeps three digits: "2.31 M", "4.2 k".
fn per_sec(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else {
        format!("{:.1} k", x / 1e3)
    }
}

fn main() {
    let tables = real_table();
    let mut seed = 0x1234_5678_9abc_def0;
    let mut rows = Vec::new();
    let mut runs = Vec::new();

    // IPv4.
    let p = tables.v4;
    let (inside4, uniform4) = addresses4(&p, 2_000_000, &mut seed);
    runs.push(concurrent_updates::<Lpm4Writer>("ipv4", &p, &inside4, false));
    runs.push(concurrent_updates::<Lpm4Writer>("ipv4", &p, &inside4, true));
    let ours_upd = Some(runs[0].updates_per_sec);
    let (ours, build, _) = built(|| Lpm4::build(&p));
    let (mut tbm, tbm_build, tbm_mem) = built(|| crates::treebitmap4(&p));
    let tbm_upd = update_rate(
        &churn(&p),
        &mut tbm,
        |t, a, len| {
            t.remove(Ipv4Addr::from(a), u32::from(len));
        },
        |t, a, len, v| {
            t.insert(Ipv4Addr::from(a), u32::from(len), v);
        },
    );
    let (mut pt, pt_build, pt_mem) = built(|| crates::prefix_trie4(&p));
    let pt_upd = update_rate(
        &churn(&p),
        &mut pt,
        |t, a, len| {
            if let Some(n) = crates::net4(a, len) {
                t.remove(&n);
            }
        },
        |t, a, len, v| {
            if let Some(n) = crates::net4(a, len) {
                t.insert(n, v);
            }
        },
    );
    let (lc, lc_build, lc_mem) = built(|| crates::radix4(&p).compress());
    // The LC-trie is static: updates go to the radix trie it is compressed from.
    let mut rt = crates::radix4(&p);
    let lc_upd = update_rate(
        &churn(&p),
        &mut rt,
        |t, a, len| {
            if let Some(k) = crates::key4(a, len) {
                t.remove(&k);
            }
        },
        |t, a, len, v| {
            if let Some(k) = crates::key4(a, len) {
                t.insert(k, v);
            }
        },
    );
    drop(rt);
    let impls = [
        Impl {
            name: "router (poptrie)",
            memory: ours.memory_bytes(),
            build,
            updates: ours_upd,
            run: each(|a| ours.lookup(a)),
        },
        Impl {
            name: "router (poptrie, batch)",
            memory: ours.memory_bytes(),
            build,
            updates: ours_upd,
            run: Box::new(|addrs: &[u32]| batched(addrs, |c, out| ours.lookup_batch(c, out))),
        },
        Impl {
            name: "ip_network_table-deps-treebitmap",
            memory: tbm_mem,
            build: tbm_build,
            updates: Some(tbm_upd),
            run: each(|a| tbm.longest_match(Ipv4Addr::from(a)).map_or(u32::MAX, |(_, _, v)| *v)),
        },
        Impl {
            name: "prefix-trie",
            memory: pt_mem,
            build: pt_build,
            updates: Some(pt_upd),
            run: each(|a| crates::prefix_trie_lookup4(&pt, a)),
        },
        Impl {
            name: "iptrie (LC-trie)",
            memory: lc_mem,
            build: lc_build,
            updates: Some(lc_upd),
            run: each(|a| *lc.lookup(&Ipv4Addr::from(a)).1),
        },
    ];
    measure("ipv4", &impls, &[("inside-prefixes", &inside4), ("uniform", &uniform4)], &mut rows);
    drop(impls);

    // IPv6, the same way.
    let p6 = tables.v6;
    let (inside6, uniform6) = addresses6(&p6, 1_000_000, &mut seed);
    runs.push(concurrent_updates::<Lpm6Writer>("ipv6", &p6, &inside6, false));
    runs.push(concurrent_updates::<Lpm6Writer>("ipv6", &p6, &inside6, true));
    let ours6_upd = Some(runs[2].updates_per_sec);
    let (ours6, build6, _) = built(|| Lpm6::build(&p6));
    let (mut tbm6, tbm6_build, tbm6_mem) = built(|| crates::treebitmap6(&p6));
    let tbm6_upd = update_rate(
        &churn(&p6),
        &mut tbm6,
        |t, a, len| {
            t.remove(Ipv6Addr::from(a), u32::from(len));
        },
        |t, a, len, v| {
            t.insert(Ipv6Addr::from(a), u32::from(len), v);
        },
    );
    let (mut pt6, pt6_build, pt6_mem) = built(|| crates::prefix_trie6(&p6));
    let pt6_upd = update_rate(
        &churn(&p6),
        &mut pt6,
        |t, a, len| {
            if let Some(n) = crates::net6(a, len) {
                t.remove(&n);
            }
        },
        |t, a, len, v| {
            if let Some(n) = crates::net6(a, len) {
                t.insert(n, v);
            }
        },
    );
    let (lc6, lc6_build, lc6_mem) = built(|| crates::radix6(&p6).compress());
    let mut rt6 = crates::radix6(&p6);
    let lc6_upd = update_rate(
        &churn(&p6),
        &mut rt6,
        |t, a, len| {
            if let Some(k) = crates::key6(a, len) {
                t.remove(&k);
            }
        },
        |t, a, len, v| {
            if let Some(k) = crates::key6(a, len) {
                t.insert(k, v);
            }
        },
    );
    drop(rt6);
    let impls6 = [
        Impl {
            name: "router (trie + ranges)",
            memory: ours6.memory_bytes(),
            build: build6,
            updates: ours6_upd,
            run: each(|a| ours6.lookup(a)),
        },
        Impl {
            name: "router (trie + ranges, batch)",
            memory: ours6.memory_bytes(),
            build: build6,
            updates: ours6_upd,
            run: Box::new(|addrs: &[u128]| batched(addrs, |c, out| ours6.lookup_batch(c, out))),
        },
        Impl {
            name: "ip_network_table-deps-treebitmap",
            memory: tbm6_mem,
            build: tbm6_build,
            updates: Some(tbm6_upd),
            run: each(|a| tbm6.longest_match(Ipv6Addr::from(a)).map_or(u32::MAX, |(_, _, v)| *v)),
        },
        Impl {
            name: "prefix-trie",
            memory: pt6_mem,
            build: pt6_build,
            updates: Some(pt6_upd),
            run: each(|a| crates::prefix_trie_lookup6(&pt6, a)),
        },
        Impl {
            name: "iptrie (LC-trie)",
            memory: lc6_mem,
            build: lc6_build,
            updates: Some(lc6_upd),
            run: each(|a| *lc6.lookup(&Ipv6Addr::from(a)).1),
        },
    ];
    measure("ipv6", &impls6, &[("inside-prefixes", &inside6), ("uniform", &uniform6)], &mut rows);
    drop(impls6);

    // Table and ratios, printed and generated into docs/bench/fib.md.
    use std::fmt::Write as _;
    let mut md = String::new();
    writeln!(
        md,
        "| implementation | family | pattern | lookups/s | ns/lookup | memory | build | updates/s |\n|---|---|---|---:|---:|---:|---:|---:|"
    )
    .ok();
    for r in &rows {
        writeln!(
            md,
            "| {} | {} | {} | {:.1} M | {:.1} | {:.1} MiB | {:.2} s | {} |",
            r.implementation,
            r.family,
            r.pattern,
            r.lookups_per_sec / 1e6,
            r.ns_per_lookup,
            r.memory_bytes as f64 / (1 << 20) as f64,
            r.build_secs,
            r.updates_per_sec.map_or("–".to_string(), per_sec)
        )
        .ok();
    }
    writeln!(
        md,
        "\nSingle-route updates (withdrawals, then the same announced again: 100 000 each, or 5 000 when every update is published) through our writers while a reader thread looks up:"
    )
    .ok();
    writeln!(md, "| family | publish | updates/s | snapshots | reader lookups/s (during / idle) | reader's worst batch of 64 (during / idle) | reader sleeps / preemptions |\n|---|---|---:|---:|---:|---:|---:|").ok();
    for u in &runs {
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} M / {:.1} M | {:.0} µs / {:.0} µs | {} / {} |",
            u.family,
            u.publish,
            per_sec(u.updates_per_sec),
            u.publishes,
            u.reader_lookups_per_sec / 1e6,
            u.reader_idle_lookups_per_sec / 1e6,
            u.reader_worst_batch_us,
            u.reader_idle_worst_batch_us,
            u.reader_sleeps,
            u.reader_preemptions
        )
        .ok();
    }
    writeln!(md).ok();
    for family in ["ipv4", "ipv6"] {
        for pattern in ["inside-prefixes", "uniform"] {
            let best = rows
                .iter()
                .filter(|r| r.family == family && r.pattern == pattern && !r.implementation.starts_with("router"))
                .max_by(|a, b| a.lookups_per_sec.total_cmp(&b.lookups_per_sec));
            let Some(best) = best else { continue };
            for ours in rows
                .iter()
                .filter(|r| r.family == family && r.pattern == pattern && r.implementation.starts_with("router"))
            {
                writeln!(
                    md,
                    "{family} {pattern}: {} ÷ best crate ({}) = {:.1}×",
                    ours.implementation,
                    best.implementation,
                    ours.lookups_per_sec / best.lookups_per_sec.max(1.0)
                )
                .ok();
            }
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("fib.json"), serde_json::to_string_pretty(&rows).unwrap_or_default());
    let _ = std::fs::write(dir.join("fib-updates.json"), serde_json::to_string_pretty(&runs).unwrap_or_default());
    print!("{md}");
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench/fib.md");
    let text = provenance::header(
        "FIB lookups and updates against the Rust LPM crates",
        "cargo bench -p forwarding --bench fib",
    ) + &md
        + "\nHow it is measured and what the figures say: [../fib.md](../fib.md).\n";
    let _ = std::fs::create_dir_all(docs.parent().unwrap_or(&dir));
    match std::fs::write(&docs, text) {
        Ok(()) => println!("\nwritten: docs/bench/fib.md, target/bench/fib.json, target/bench/fib-updates.json"),
        Err(e) => println!("\nwritten: target/bench/fib.json, target/bench/fib-updates.json ({}: {e})", docs.display()),
    }
}
