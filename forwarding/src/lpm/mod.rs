//! Longest-prefix match for forwarding. IPv4 ([`Lpm4`]) is a Poptrie: the top 18 bits index
//! a table directly, and longer prefixes live in 6-bit nodes compressed with bitmaps
//! (`trie`). IPv6 ([`Lpm6`]) indexes its top 16 bits directly, then walks 8-bit nodes down to
//! short sorted runs of the points where the answer changes. Both work from those points
//! (`breakpoints`), and both are a full Internet table in a few MiB.
//!
//! Snapshots are immutable: a writer ([`Lpm4Writer`], [`Lpm6Writer`]) rebuilds only what a
//! change touched and publishes a new one, which readers pick up through the snapshot swap.

/// "No route": the value of addresses no prefix covers.
pub const NONE: u32 = u32::MAX;

/// A routing table read from lines `PREFIX VALUE` (the format of the real BGP table in
/// the file iptrie's package ships, see [`real_table_path`], where the value is the origin AS).
#[derive(Debug, Default, Clone)]
pub struct TextTable {
    pub v4: Vec<(u32, u8, u32)>,
    pub v6: Vec<(u128, u8, u32)>,
    /// Prefixes that had host bits set (masked, kept).
    pub host_bits: usize,
    /// Lines that are not `PREFIX VALUE` (skipped).
    pub skipped: usize,
}

/// Parses a table tolerantly: a bad line is counted and skipped, host bits are masked and
/// counted; nothing panics.
pub fn parse_table(text: &str) -> TextTable {
    let mut t = TextTable::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(prefix), Some(value)) = (f.next(), f.next()) else {
            t.skipped += usize::from(!line.trim().is_empty());
            continue;
        };
        let Ok(value) = value.parse::<u32>() else {
            t.skipped += 1;
            continue;
        };
        match prefix.parse::<ipnet::IpNet>() {
            Ok(ipnet::IpNet::V4(n)) => {
                t.host_bits += usize::from(n.trunc() != n);
                t.v4.push((u32::from(n.network()), n.prefix_len(), value));
            }
            Ok(ipnet::IpNet::V6(n)) => {
                t.host_bits += usize::from(n.trunc() != n);
                t.v6.push((u128::from(n.network()), n.prefix_len(), value));
            }
            Err(_) => t.skipped += 1,
        }
    }
    t
}

/// Reads a table file in that format, gzip-compressed or plain.
pub fn read_table(path: &std::path::Path) -> std::io::Result<TextTable> {
    let raw = std::fs::read(path)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(&raw[..]), &mut out)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: not a readable gzip file: {e}", path.display())))?;
        out
    } else {
        raw
    };
    Ok(parse_table(&String::from_utf8_lossy(&text)))
}

/// The package that ships the real table, and the table's path inside it.
const TABLE_PACKAGE: (&str, &str) = ("iptrie", "0.11.2");
const TABLE_FILE: &str = "benches/bgpas.lpm";

/// Where the real BGP table (1.07 M IPv4 and 176 k IPv6 prefixes, `PREFIX ORIGIN_AS` per
/// line) is on this machine: the published iptrie 0.11.2 package carries it, and it is a
/// dev-dependency of this crate, so cargo has fetched it into its registry for any build of
/// the tests or benchmarks. `cargo metadata` says where (`$CARGO`, else `cargo` on the PATH).
pub fn real_table_path() -> Result<std::path::PathBuf, String> {
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--manifest-path", manifest])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("running {} metadata: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed for {manifest}"));
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("cargo metadata printed something else: {e}"))?;
    let (name, version) = TABLE_PACKAGE;
    let pkg = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name && p["version"] == version)
        .ok_or_else(|| format!("{name} {version} is not among the workspace's packages (cargo metadata)"))?;
    let dir = pkg["manifest_path"]
        .as_str()
        .and_then(|m| std::path::Path::new(m).parent())
        .ok_or_else(|| format!("no manifest path for {name} {version}"))?;
    let path = dir.join(TABLE_FILE);
    if !path.exists() {
        return Err(format!("{} is missing; `cargo fetch` brings the package", path.display()));
    }
    Ok(path)
}

/// The mask of a `len`-bit prefix in a `bits`-bit address space, kept in the low bits;
/// lengths beyond `bits` count as `bits`.
fn prefix_mask(len: u8, bits: u32) -> u128 {
    match u32::from(len).min(bits) {
        0 => 0,
        l => (u128::MAX << (128 - l)) >> (128 - bits),
    }
}

/// The points where the longest match changes, sorted: (first address, value from there on),
/// starting with (0, NONE); and how many distinct prefixes there were. Prefixes are (network, length, value) in a `bits`-bit space;
/// host bits are ignored and a later entry for the same prefix wins. A sweep over the
/// prefixes sorted by start (shorter first) with a stack of the ones still open.
fn breakpoints(prefixes: impl Iterator<Item = (u128, u8, u32)>, bits: u32) -> (Vec<(u128, u32)>, usize) {
    let mut p: Vec<(u128, u8, u32, usize)> = prefixes
        .enumerate()
        .map(|(i, (a, len, v))| {
            let len = len.min(bits as u8);
            (a & prefix_mask(len, bits), len, v, i)
        })
        .collect();
    p.sort_unstable_by_key(|&(a, len, _, i)| (a, len, i));
    p.dedup_by(|later, earlier| {
        if later.0 == earlier.0 && later.1 == earlier.1 {
            earlier.2 = later.2;
            true
        } else {
            false
        }
    });
    let mut points: Vec<(u128, u32)> = Vec::with_capacity(p.len() * 2 + 1);
    let mut put = |at: u128, v: u32| match points.last_mut() {
        Some(last) if last.0 == at => last.1 = v,
        _ => points.push((at, v)),
    };
    put(0, NONE);
    // (end exclusive, value); None: the prefix runs to the end of the address space.
    let mut stack: Vec<(Option<u128>, u32)> = Vec::new();
    for &(a, len, v, _) in &p {
        let size_bits = bits - u32::from(len);
        let end = if size_bits >= 128 { None } else { a.checked_add(1u128 << size_bits) };
        let end = end.filter(|e| bits == 128 || *e < (1u128 << bits));
        while let Some(&(Some(top_end), _)) = stack.last() {
            if top_end > a {
                break;
            }
            stack.pop();
            let under = stack.last().map_or(NONE, |s| s.1);
            put(top_end, under);
        }
        put(a, v);
        stack.push((end, v));
    }
    while let Some((top_end, _)) = stack.pop() {
        let under = stack.last().map_or(NONE, |s| s.1);
        if let Some(e) = top_end {
            put(e, under);
        }
    }
    points.dedup_by(|later, earlier| later.1 == earlier.1);
    (points, p.len())
}

mod trie;
mod v4;
mod v6;

/// What the LPM tests of both families share.
#[cfg(test)]
pub(crate) mod testing {
    use super::{prefix_mask, NONE};

    /// The longest match by brute force, in a `bits`-bit space; a later duplicate wins.
    pub fn naive(p: impl IntoIterator<Item = (u128, u8, u32)>, a: u128, bits: u32) -> u32 {
        let mut best: Option<(u8, u32)> = None;
        for (net, len, v) in p {
            let mask = prefix_mask(len, bits);
            if a & mask == net & mask && best.is_none_or(|(l, _)| len >= l) {
                best = Some((len, v));
            }
        }
        best.map_or(NONE, |b| b.1)
    }

    /// xorshift64: reproducible random tables.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }
}
pub use v4::{Lpm4, Lpm4Writer};
pub use v6::{Lpm6, Lpm6Writer};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_text_is_parsed_tolerantly() {
        let t = parse_table("1.0.4.0/22 38803\n10.1.2.3/8 7\n\ngarbage\n2001:db8::/32 65000\n1.2.3.0/24 notanumber\n");
        assert_eq!(t.v4, vec![(0x0100_0400, 22, 38803), (0x0a00_0000, 8, 7)]);
        assert_eq!(t.v6, vec![(0x2001_0db8u128 << 96, 32, 65000)]);
        assert_eq!((t.host_bits, t.skipped), (1, 2));
    }

    #[test]
    fn gzip_and_plain_tables_read_alike() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("lpm-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let text = "1.0.4.0/22 38803\n2001:db8::/32 65000\n";
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).expect("compress");
        std::fs::write(dir.join("t.gz"), gz.finish().expect("finish")).expect("write");
        std::fs::write(dir.join("t"), text).expect("write");
        let (a, b) = (read_table(&dir.join("t.gz")).expect("gz"), read_table(&dir.join("t")).expect("plain"));
        assert_eq!((a.v4, a.v6), (b.v4, b.v6));
        std::fs::write(dir.join("bad.gz"), [0x1f, 0x8b, 8, 0, 1, 2]).expect("write");
        assert!(read_table(&dir.join("bad.gz")).is_err());
        std::fs::remove_dir_all(&dir).expect("clean up");
    }

    #[test]
    fn the_real_table_ships_with_a_package_of_the_workspace() {
        let path = real_table_path().expect("found through cargo metadata");
        assert!(path.ends_with(TABLE_FILE), "{}", path.display());
        let head = std::fs::read(&path).expect("readable");
        assert!(head.starts_with(b"1.0.0.0/24 13335\n"), "{}", path.display());
    }
}
