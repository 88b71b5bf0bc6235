//! The real table (1.07 M IPv4, 176 k IPv6 prefixes), from the iptrie package the workspace
//! depends on (`lpm::real_table_path`): `cargo test --release -p forwarding --test full_table`.
//! Every prefix's first, middle and last address must get the same answer from the LPM
//! as from an independent reference (one hash map per prefix length).

use forwarding::lpm::{read_table, real_table_path, Lpm4, Lpm4Writer, Lpm6, Lpm6Writer, TextTable, NONE};
use std::collections::HashMap;
use std::time::Instant;

/// The obvious LPM: a hash map per length, longest first.
struct Reference(Vec<HashMap<u32, u32>>);

impl Reference {
    fn new(p: &[(u32, u8, u32)]) -> Self {
        let mut t = vec![HashMap::new(); 33];
        for &(a, len, v) in p {
            t[usize::from(len)].insert(a & mask(len), v);
        }
        Reference(t)
    }

    fn lookup(&self, a: u32) -> u32 {
        (0..=32u8).rev().find_map(|len| self.0[usize::from(len)].get(&(a & mask(len))).copied()).unwrap_or(NONE)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// The real table, parsed by the same function the FIB tooling uses.
fn real_table() -> TextTable {
    let path = real_table_path().unwrap_or_else(|e| panic!("the real BGP table: {e}"));
    let t = read_table(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert_eq!(t.skipped, 0);
    t
}

#[test]
fn ipv6_range_lpm_matches_the_reference_on_the_real_table() {
    let t = real_table();
    let p = t.v6;
    assert!(p.len() > 170_000, "{} prefixes", p.len());
    let t0 = Instant::now();
    let lpm = Lpm6::build(&p);
    let build = t0.elapsed();
    let m = |len: u8| if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
    let mut by_len = vec![HashMap::new(); 129];
    for &(a, len, v) in &p {
        by_len[usize::from(len)].insert(a & m(len), v);
    }
    let reference = |a: u128| {
        (0..=128u8).rev().find_map(|len| by_len[usize::from(len)].get(&(a & m(len))).copied()).unwrap_or(NONE)
    };
    let edges = |p: &[(u128, u8, u32)]| -> Vec<u128> {
        p.iter()
            .flat_map(|&(a, len, _)| {
                let first = a & m(len);
                [first, first | (!m(len) >> 1), first | !m(len)]
            })
            .collect()
    };
    let addrs = edges(&p);
    let mut batch = vec![0; addrs.len()];
    lpm.lookup_batch(&addrs, &mut batch);
    for (&addr, &b) in addrs.iter().zip(&batch) {
        let want = reference(addr);
        assert_eq!(lpm.lookup(addr), want, "{addr:#x}");
        assert_eq!(b, want, "batch {addr:#x}");
    }
    println!("{} IPv6 prefixes: built in {build:?}, {:.1} MiB", p.len(), lpm.memory_bytes() as f64 / (1 << 20) as f64);

    // Withdraw every third prefix one at a time, publish, compare; announce them again.
    let mut w = Lpm6Writer::with_prefixes(&p);
    w.publish();
    let gone: Vec<(u128, u8, u32)> = p.iter().step_by(3).copied().collect();
    let t0 = Instant::now();
    for &(a, len, _) in &gone {
        w.remove(a, len);
    }
    let after = w.publish();
    let took = t0.elapsed();
    let mut by_len = vec![HashMap::new(); 129];
    for (i, &(a, len, v)) in p.iter().enumerate() {
        if i % 3 != 0 {
            by_len[usize::from(len)].insert(a & m(len), v);
        }
    }
    for &addr in &addrs {
        let want =
            (0..=128u8).rev().find_map(|len| by_len[usize::from(len)].get(&(addr & m(len))).copied()).unwrap_or(NONE);
        assert_eq!(after.lookup(addr), want, "after withdrawals {addr:#x}");
    }
    for &(a, len, v) in &gone {
        w.insert(a, len, v);
    }
    let back = w.publish();
    for &addr in &addrs {
        assert_eq!(back.lookup(addr), reference(addr), "after re-announcing {addr:#x}");
    }
    println!("{} single IPv6 withdrawals and one publish: {took:?}", gone.len());
}

#[test]
fn range_lpm_matches_the_reference_on_the_real_table() {
    let t = real_table();
    let p = t.v4;
    assert!(p.len() > 1_000_000, "{} prefixes", p.len());
    let t0 = Instant::now();
    let lpm = Lpm4::build(&p);
    let build = t0.elapsed();
    let reference = Reference::new(&p);
    let mut checked = 0;
    for &(a, len, _) in &p {
        let m = mask(len);
        let first = a & m;
        for addr in [first, first | (!m >> 1), first | !m] {
            assert_eq!(lpm.lookup(addr), reference.lookup(addr), "{addr:#x}");
            checked += 1;
        }
    }
    let t1 = Instant::now();
    let mut x = 0u32;
    let mut acc = 0u64;
    for _ in 0..10_000_000 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        acc = acc.wrapping_add(u64::from(lpm.lookup(x)));
    }
    let per = t1.elapsed().as_nanos() as f64 / 1e7;
    println!(
        "{} prefixes: built in {build:?}, {:.1} MiB, {checked} addresses agree; {per:.1} ns per random lookup ({acc})",
        p.len(),
        lpm.memory_bytes() as f64 / (1 << 20) as f64
    );
}

#[test]
fn single_route_updates_on_the_real_table_match_the_reference() {
    // Start from the table without every third prefix, add those one at a time, then
    // withdraw every fifth one at a time; the published result must agree with a reference
    // built from the final set.
    let t = real_table();
    let p = t.v4;
    let (kept, later): (Vec<_>, Vec<_>) = p.iter().enumerate().partition(|(i, _)| i % 3 != 0);
    let kept: Vec<(u32, u8, u32)> = kept.into_iter().map(|(_, r)| *r).collect();
    let mut w = Lpm4Writer::with_prefixes(&kept);
    w.publish();
    let t0 = Instant::now();
    for (_, &(a, len, v)) in &later {
        w.insert(a, len, v);
    }
    let withdrawn: Vec<(u32, u8)> = p.iter().step_by(5).map(|&(a, len, _)| (a, len)).collect();
    for &(a, len) in &withdrawn {
        w.remove(a, len);
    }
    let applied = t0.elapsed();
    let t1 = Instant::now();
    let lpm = w.publish();
    let published = t1.elapsed();
    let gone: std::collections::HashSet<(u32, u8)> = withdrawn.iter().map(|&(a, l)| (a & mask(l), l)).collect();
    let left: Vec<(u32, u8, u32)> = p.iter().copied().filter(|&(a, l, _)| !gone.contains(&(a & mask(l), l))).collect();
    let reference = Reference::new(&left);
    assert_eq!(lpm.len(), w.len());
    for &(a, len, _) in &p {
        let m = mask(len);
        for addr in [a & m, (a & m) | (!m >> 1), (a & m) | !m] {
            assert_eq!(lpm.lookup(addr), reference.lookup(addr), "{addr:#x}");
        }
    }
    println!(
        "{} single inserts and {} withdrawals applied in {applied:?}, published in {published:?}",
        later.len(),
        withdrawn.len()
    );
}
