//! `router-perf`: the throughput benchmark. `forward` builds the lab for each scenario, drives
//! UDP (fixed sizes and IMIX, many flows) and TCP (iperf3) from pod-a1 to a pod on another
//! node, and compares the router with Linux kernel forwarding on the same topology.

mod bench;
mod bgpload;
mod datastore;
mod gencheck;
mod provenance;
mod report;
mod scale;
mod scratchlab;
mod traffic;

use clap::{Parser, Subcommand};
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "router-perf", version, about = "Throughput of the userspace router against Linux kernel forwarding")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the forwarding benchmark and write target/perf/forward.{md,json,svg}.
    Forward(bench::Options),
    /// Announce the real BGP table to our node and to BIRD 2; time until each holds it all.
    BgpLoad(bgpload::Options),
    /// How BGP mode scales: labs of 10 to 100 nodes, full mesh against route reflectors;
    /// writes target/perf/bgp-scale.{md,json,svg}.
    BgpScale(scale::Options),
    /// Time from `router apply` of a BGPPeer or a pool change to its effect on the nodes of
    /// labs on etcd (3 and 50 nodes); writes target/perf/datastore.json.
    Datastore(datastore::Options),
    /// Check the UDP generator against trafgen on a bare veth; writes target/perf/generator.json.
    GenCheck(gencheck::Options),
    /// Announce a table over BGP and keep the session up (runs in the feeder namespace).
    #[command(hide = true)]
    BgpFeed {
        #[arg(long)]
        peer: Ipv4Addr,
        #[arg(long)]
        local: Ipv4Addr,
        /// The table to announce; without it (`--idle`), announce nothing and stay.
        #[arg(long, required_unless_present = "idle")]
        table: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 0)]
        limit: usize,
        #[arg(long)]
        idle: bool,
        /// Announce the table's IPv6 prefixes too (MP-BGP).
        #[arg(long)]
        ipv6: bool,
    },
    /// Send UDP for a while (runs inside the source pod).
    #[command(hide = true)]
    Gen {
        #[arg(long)]
        dst: std::net::IpAddr,
        #[arg(long, default_value_t = 9000)]
        port: u16,
        #[arg(long)]
        size: traffic::Size,
        #[arg(long, default_value_t = 16)]
        flows: usize,
        #[arg(long)]
        secs: f64,
        #[arg(long, default_value_t = 0)]
        pps: u64,
        /// Stop after this many packets (0: run for `secs`, which stays the limit).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// Count what arrives (runs inside the destination pod).
    #[command(hide = true)]
    Sink {
        #[arg(long, default_value_t = 9000)]
        port: u16,
        /// Receive IPv6 (frames counted with the IPv6 header).
        #[arg(long)]
        ipv6: bool,
        #[arg(long, default_value_t = 60.0)]
        max_secs: f64,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Forward(o) => bench::run(&o),
        Cmd::BgpLoad(o) => bgpload::run(&o),
        Cmd::BgpScale(o) => scale::run(&o),
        Cmd::GenCheck(o) => gencheck::run(&o),
        Cmd::Datastore(o) => datastore::run(&o),
        Cmd::BgpFeed { peer, local, table, limit, idle: _, ipv6 } => {
            bgpload::feed(peer, local, table.as_deref(), limit, ipv6)
        }
        Cmd::Gen { dst, port, size, flows, secs, pps, count } => {
            traffic::generate(dst, port, size, flows, Duration::from_secs_f64(secs), pps, count)
                .map(|r| nodeapi::outln!("{}", serde_json::json!(r)))
        }
        Cmd::Sink { port, ipv6, max_secs } => {
            traffic::sink(port, ipv6, Duration::from_secs(1), Duration::from_secs_f64(max_secs))
                .map(|r| nodeapi::outln!("{}", serde_json::json!(r)))
        }
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The median of `v` (the upper one of an even count); NaN for none.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A path that may be empty (`--docs ''`: no table for the documentation); clap's own path
/// parser refuses empty values.
fn path_or_empty(s: &str) -> Result<std::path::PathBuf, std::convert::Infallible> {
    Ok(std::path::PathBuf::from(s))
}

/// Writes a benchmark's results: the JSON report to `out`, and unless `docs` is empty the
/// Markdown table to `docs/<name>.md` under the header of where it came from, with a link to
/// how it is measured.
fn write_results(
    out: &std::path::Path,
    json: &impl serde::Serialize,
    docs: &std::path::Path,
    name: &str,
    title: &str,
    md: &str,
    how: &str,
) -> anyhow::Result<()> {
    if !docs.as_os_str().is_empty() {
        std::fs::create_dir_all(docs)?;
        let file = docs.join(format!("{name}.md"));
        let text = provenance::header(title, &command_line()) + md + &format!("\nHow it is measured: {how}.\n");
        std::fs::write(&file, text)?;
        nodeapi::outln!("written: {}", file.display());
    }
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(json)?)?;
    nodeapi::outln!("written: {}", out.display());
    Ok(())
}

/// How this run was started, for the header of a generated table: `router-perf` and its
/// arguments.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::iter::once("router-perf".to_string()).chain(args).collect::<Vec<_>>().join(" ")
}

/// A new directory of a random name under the system's temp directory, mode 0700, that the
/// caller removes: router-perf runs as root, and a predictable `/tmp/name-<pid>` could have
/// been made beforehand by someone else.
fn scratch_dir(prefix: &str) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // tempfile leaves a directory's mode to the umask unless told.
    let private = std::fs::Permissions::from_mode(0o700);
    Ok(tempfile::Builder::new().prefix(prefix).permissions(private).tempdir()?.keep())
}

#[cfg(test)]
mod tests {
    #[test]
    fn scratch_dirs_are_private_and_unpredictable() {
        use std::os::unix::fs::MetadataExt;
        let a = super::scratch_dir("router-perf-test-").expect("a");
        let b = super::scratch_dir("router-perf-test-").expect("b");
        assert_ne!(a, b);
        assert!(!a.to_string_lossy().contains(&std::process::id().to_string()), "{}", a.display());
        for d in [&a, &b] {
            assert_eq!(std::fs::metadata(d).expect("stat").mode() & 0o777, 0o700, "{}", d.display());
            std::fs::remove_dir(d).expect("clean up");
        }
    }
}
