//! `router-perf gen-check`: is our generator fast enough not to be what the forwarding
//! benchmark measures? It sends 64-byte UDP over one veth between two fresh namespaces, as
//! fast as it can for a while, and so does `trafgen` (netsniff-ng, an AF_PACKET TX ring) from
//! one CPU; both are counted where they arrive, by the receiving interface.

use anyhow::{bail, Context as _};
use nodeapi::ipcmd::{exists, remove, veth_between};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Instant;

const GEN_NS: &str = "rpg-gen";
const SINK_NS: &str = "rpg-sink";
const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 1);
const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 253, 0, 2);

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Seconds each generator sends.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Where the report goes.
    #[arg(long, default_value = "target/perf/generator.json")]
    pub out: std::path::PathBuf,
}

#[derive(Debug, Serialize)]
struct Run {
    generator: &'static str,
    frame_bytes: usize,
    /// Frames per second that reached the receiving interface.
    pps: f64,
    secs: f64,
}

/// The two namespaces; removed on drop, also after an error.
struct Pair;

impl Pair {
    fn new() -> anyhow::Result<Pair> {
        Pair::remove();
        let p = Pair;
        veth_between((GEN_NS, "rpg-g", GEN_ADDR), (SINK_NS, "rpg-s", SINK_ADDR))?;
        Ok(p)
    }

    fn remove() {
        for ns in [GEN_NS, SINK_NS].into_iter().filter(|ns| exists(ns)) {
            let _ = remove(ns);
        }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        Pair::remove();
    }
}

fn rx_packets() -> anyhow::Result<u64> {
    let out = nodeapi::ipcmd::exec_in(SINK_NS, &["cat", "/sys/class/net/rpg-s/statistics/rx_packets"])?;
    out.trim().parse().context("reading rx_packets")
}

/// Runs `cmd` in the generator namespace and counts what arrives meanwhile.
fn measure(generator: &'static str, cmd: &[&str]) -> anyhow::Result<Run> {
    let before = rx_packets()?;
    let t = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", GEN_NS])
        .args(cmd)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", cmd.join(" ")))?;
    let secs = t.elapsed().as_secs_f64();
    // trafgen ends on SIGINT from `timeout`, which is its normal way out.
    if !out.status.success() && generator != "trafgen" {
        bail!("{} failed: {}", cmd.join(" "), String::from_utf8_lossy(&out.stderr));
    }
    let arrived = rx_packets()? - before;
    if arrived == 0 {
        bail!("{generator} delivered nothing: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(Run { generator, frame_bytes: 64, pps: arrived as f64 / secs, secs })
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    if Command::new("trafgen").arg("--version").output().is_err() {
        bail!("trafgen is not installed (Debian package netsniff-ng; scripts/setup installs it)");
    }
    let perf = std::env::current_exe()?;
    let pair = Pair::new()?;
    let mac = nodeapi::ipcmd::exec_in(SINK_NS, &["cat", "/sys/class/net/rpg-s/address"])?;
    let src_mac = nodeapi::ipcmd::exec_in(GEN_NS, &["cat", "/sys/class/net/rpg-g/address"])?;
    // 64-byte frames like ours: Ethernet, IPv4, UDP, 22 bytes of payload; 16 source ports.
    // A new file of a random name, 0600: router-perf runs as root, so a predictable path in
    // /tmp could be a symlink someone else put there. Removed when dropped.
    let conf_file = tempfile::Builder::new().prefix("router-perf-trafgen-").suffix(".cfg").tempfile()?;
    let conf = conf_file.path().to_path_buf();
    std::fs::write(
        &conf,
        format!(
            "{{ eth(da={}, sa={}, type=0x0800), ipv4(saddr={GEN_ADDR}, daddr={SINK_ADDR}, ttl=64), \
             udp(sport=dinc(20000, 20015), dport=9000), fill(0x52, 22) }}\n",
            mac.trim(),
            src_mac.trim()
        ),
    )?;
    let secs = o.duration.to_string();
    let ours = measure(
        "router-perf gen (sendmmsg)",
        &[perf.to_str().unwrap_or_default(), "gen", "--dst", &SINK_ADDR.to_string(), "--size", "64", "--secs", &secs],
    );
    let theirs = measure(
        "trafgen",
        &[
            "timeout",
            "-s",
            "INT",
            &secs,
            "trafgen",
            "--dev",
            "rpg-g",
            "--conf",
            conf.to_str().unwrap_or_default(),
            "--cpus",
            "1",
            // Leave the host alone: no global socket memory tuning, no IRQ affinity changes.
            "--no-sock-mem",
            "--notouch-irq",
            "--no-cpu-stats",
        ],
    );
    drop(conf_file);
    drop(pair);
    let runs = [ours?, theirs?];
    nodeapi::outln!("| generator | frame | pps at the receiver |\n|---|---:|---:|");
    for r in &runs {
        nodeapi::outln!("| {} | {} B | {:.0} |", r.generator, r.frame_bytes, r.pps);
    }
    nodeapi::outln!("\nours ÷ trafgen: {:.2}", runs[0].pps / runs[1].pps.max(1.0));
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&runs)?)?;
    nodeapi::outln!("written: {}", o.out.display());
    Ok(())
}
