//! The scenarios and how one run is measured.

use crate::report::{self, Run};
use crate::traffic::{GenReport, SinkReport, Size};
use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds of traffic per run (for UDP, unless `--packets` is given).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Send this many UDP packets per run instead of sending for `--duration` (then at
    /// most 120 s).
    #[arg(long)]
    pub packets: Option<u64>,
    /// Scenarios to run, comma-separated or the option again (default: all): kernel,
    /// afpacket, afpacket-ipip, afpacket-ipip-ab, afpacket-vxlan, afpacket-vxlan-ab, tun-ipip,
    /// tun-vxlan, kernel6, afpacket6, kernel-masq, afpacket-masq.
    #[arg(long = "scenario", value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// UDP frame sizes.
    #[arg(long, value_delimiter = ',', default_value = "64,512,1500,imix")]
    pub sizes: Vec<Size>,
    /// Worker counts for the router scenarios.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// Skip the iperf3 TCP runs.
    #[arg(long)]
    pub no_tcp: bool,
    /// Run the nodes without the transit filter (`router lab up --no-transit-filter`), to
    /// see what it is worth.
    #[arg(long)]
    pub no_transit_filter: bool,
    /// The routers' workers' nice value (`router lab up --worker-nice`; default: the router's).
    #[arg(long, allow_hyphen_values = true)]
    pub worker_nice: Option<i32>,
    /// Where the reports go.
    #[arg(long, default_value = "target/perf")]
    pub out: PathBuf,
    /// Where the table and plot for the documentation go (with date, machine and command);
    /// `--docs ''` skips them.
    #[arg(long, default_value = "docs/bench", value_parser = crate::path_or_empty)]
    pub docs: PathBuf,
}

/// One way of carrying pod-a1's traffic to a pod on another node.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
    dataplane: &'static str,
    dst_pod: &'static str,
    router: bool,
    /// More `router lab up` options: the tunnel and its mode (none: the lab's default, IPIP
    /// CrossSubnet).
    lab_args: &'static [&'static str],
    /// The traffic is IPv6 (the lab dual stack).
    ipv6: bool,
    /// The kernel scenario its `× kernel` compares with (itself for a kernel scenario).
    baseline: &'static str,
}

impl Scenario {
    /// The destination pod's address.
    fn dst(&self) -> &'static str {
        match (self.dst_pod, self.ipv6) {
            // Outside every pool: the underlay router's address on node-a's subnet.
            ("underlay", _) => "192.168.100.1",
            ("pod-b1", false) => "10.244.2.1",
            ("pod-b1", true) => "fd00:10:244::41",
            (_, false) => "10.244.3.1",
            (_, true) => "fd00:10:244::81",
        }
    }
}

pub const SCENARIOS: [Scenario; 12] = [
    Scenario {
        name: "kernel",
        what: "Linux kernel forwarding, pod-a1 → node-a → node-b → pod-b1 (no router in the path)",
        dataplane: "tun",
        dst_pod: "pod-b1",
        router: false,
        lab_args: &[],
        ipv6: false,
        baseline: "kernel",
    },
    Scenario {
        name: "afpacket",
        what: "router, AF_PACKET, direct routing: same path as kernel",
        dataplane: "afpacket",
        dst_pod: "pod-b1",
        router: true,
        lab_args: &[],
        ipv6: false,
        baseline: "kernel",
    },
    Scenario {
        name: "afpacket-ipip",
        what: "router, AF_PACKET, IPIP: pod-a1 → node-a (encap) → underlay → node-c (decap) → pod-c1",
        dataplane: "afpacket",
        dst_pod: "pod-c1",
        router: true,
        lab_args: &[],
        ipv6: false,
        baseline: "kernel",
    },
    // The same path as `afpacket`, wrapped: what the encapsulation itself costs, without
    // the underlay router's extra hop that the cross-subnet path also pays.
    Scenario {
        name: "afpacket-ipip-ab",
        what: "router, AF_PACKET, IPIP on the direct path (`--ipip-mode always`): pod-a1 → node-a (encap) → node-b (decap) → pod-b1",
        dataplane: "afpacket",
        dst_pod: "pod-b1",
        router: true,
        lab_args: &["--ipip-mode", "always"],
        ipv6: false,
        baseline: "kernel",
    },
    Scenario {
        name: "afpacket-vxlan",
        what: "router, AF_PACKET, VXLAN (`--vxlan-mode cross-subnet`): pod-a1 → node-a (encap) → underlay → node-c (decap) → pod-c1",
        dataplane: "afpacket",
        dst_pod: "pod-c1",
        router: true,
        lab_args: &["--vxlan-mode", "cross-subnet"],
        ipv6: false,
        baseline: "kernel",
    },
    Scenario {
        name: "afpacket-vxlan-ab",
        what: "router, AF_PACKET, VXLAN on the direct path (`--vxlan-mode always`): pod-a1 → node-a (encap) → node-b (decap) → pod-b1",
        dataplane: "afpacket",
        dst_pod: "pod-b1",
        router: true,
        lab_args: &["--vxlan-mode", "always"],
        ipv6: false,
        baseline: "kernel",
    },
    Scenario {
        name: "tun-ipip",
        what: "kernel forwarding with the router's userspace tunl0: pod-a1 → node-a → underlay → node-c → pod-c1",
        dataplane: "tun",
        dst_pod: "pod-c1",
        router: true,
        lab_args: &[],
        ipv6: false,
        baseline: "kernel",
    },
    Scenario {
        name: "tun-vxlan",
        what: "kernel forwarding with the router's userspace vxlan.calico (`--vxlan-mode cross-subnet`): pod-a1 → node-a → underlay → node-c → pod-c1",
        dataplane: "tun",
        dst_pod: "pod-c1",
        router: true,
        lab_args: &["--vxlan-mode", "cross-subnet"],
        ipv6: false,
        baseline: "kernel",
    },
    // IPv6 on the direct path: the kernel's forwarding (tun mode leaves IPv6 to the kernel)
    // against the router's; the same payloads as IPv4, in frames 20 bytes longer.
    Scenario {
        name: "kernel6",
        what: "Linux kernel IPv6 forwarding, pod-a1 → node-a → node-b → pod-b1 (`--dual-stack`, tun mode: no router in the path)",
        dataplane: "tun",
        dst_pod: "pod-b1",
        router: false,
        lab_args: &["--dual-stack"],
        ipv6: true,
        baseline: "kernel6",
    },
    Scenario {
        name: "afpacket6",
        what: "router, AF_PACKET, IPv6 direct routing (`--dual-stack`): same path as kernel6",
        dataplane: "afpacket",
        dst_pod: "pod-b1",
        router: true,
        lab_args: &["--dual-stack"],
        ipv6: true,
        baseline: "kernel6",
    },
    // Masquerade (natOutgoing): pod-a1 to an address outside every pool, leaving with
    // node-a's address. The kernel's baseline is its own forwarding and nftables
    // masquerade, which a tun-mode node sets up for such a pool.
    Scenario {
        name: "kernel-masq",
        what: "Linux kernel forwarding and nftables masquerade (`--nat-outgoing`, tun mode), pod-a1 → node-a → the underlay router, outside the pools",
        dataplane: "tun",
        dst_pod: "underlay",
        router: false,
        lab_args: &["--nat-outgoing"],
        ipv6: false,
        baseline: "kernel-masq",
    },
    Scenario {
        name: "afpacket-masq",
        what: "router, AF_PACKET, masquerade (`--nat-outgoing`): same path as kernel-masq, node-a's address as the source",
        dataplane: "afpacket",
        dst_pod: "underlay",
        router: true,
        lab_args: &["--nat-outgoing"],
        ipv6: false,
        baseline: "kernel-masq",
    },
];

const LAB: &str = "perf";

struct Tools {
    router: PathBuf,
    perf: PathBuf,
}

impl Tools {
    fn find() -> anyhow::Result<Tools> {
        let perf = std::env::current_exe()?;
        let router = perf.with_file_name("router");
        if !router.exists() {
            bail!("{} is missing: build everything first with `cargo build --release`", router.display());
        }
        Ok(Tools { router, perf })
    }

    fn router(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.router).env("ROUTER_LAB", LAB).args(args).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            bail!("router {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn in_pod(&self, pod: &str, cmd: &[&str]) -> Command {
        let mut c = Command::new(&self.router);
        c.env("ROUTER_LAB", LAB).args(["lab", "exec", pod, "--"]).args(cmd).stdin(Stdio::null());
        c
    }
}

/// Busy CPU time of the whole machine, in seconds (all cores, from /proc/stat).
fn cpu_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().next() else { return 0.0 };
    let v: Vec<f64> = cpu.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    let busy: f64 = v.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| x).sum();
    busy / 100.0
}

/// Packets the routers dropped, summed over nodes and reasons.
fn router_drops(t: &Tools) -> u64 {
    ["node-a", "node-b", "node-c"]
        .iter()
        .filter_map(|n| t.router(&["stats", "--node", n, "--json"]).ok())
        .filter_map(|s| serde_json::from_str::<nodeapi::admin::Stats>(&s).ok())
        .map(|st| st.drops.values().sum::<u64>())
        .sum()
}

fn udp_run(
    t: &Tools,
    sc: &Scenario,
    size: Size,
    secs: f64,
    count: Option<u64>,
) -> anyhow::Result<(GenReport, SinkReport, f64, u64)> {
    let perf = t.perf.to_string_lossy().into_owned();
    let dst = sc.dst();
    let max = format!("{}", secs + 10.0);
    let mut sink_args = vec![perf.as_str(), "sink", "--max-secs", &max];
    if sc.ipv6 {
        sink_args.push("--ipv6");
    }
    let sink = t
        .in_pod(sc.dst_pod, &sink_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the sink")?;
    std::thread::sleep(Duration::from_millis(300));
    let drops0 = if sc.router { router_drops(t) } else { 0 };
    let cpu0 = cpu_busy();
    let (size, secs, count) = (size.to_string(), secs.to_string(), count.unwrap_or(0).to_string());
    let g = t
        .in_pod("pod-a1", &[&perf, "gen", "--dst", dst, "--size", &size, "--secs", &secs, "--count", &count])
        .output()
        .context("running the generator")?;
    let cpu = cpu_busy() - cpu0;
    if !g.status.success() {
        bail!("generator: {}", String::from_utf8_lossy(&g.stderr).trim());
    }
    let s = sink.wait_with_output()?;
    if !s.status.success() {
        bail!("sink: {}", String::from_utf8_lossy(&s.stderr).trim());
    }
    let gen: GenReport = serde_json::from_slice(&g.stdout).context("generator report")?;
    let sink: SinkReport = serde_json::from_slice(&s.stdout).context("sink report")?;
    let drops = if sc.router { router_drops(t).saturating_sub(drops0) } else { 0 };
    Ok((gen, sink, cpu, drops))
}

fn tcp_run(t: &Tools, sc: &Scenario, streams: usize, secs: f64) -> anyhow::Result<f64> {
    let dst = sc.dst();
    let server = t
        .in_pod(sc.dst_pod, &["iperf3", "-s", "-1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("iperf3 (Debian package iperf3)")?;
    std::thread::sleep(Duration::from_millis(400));
    let out = t
        .in_pod(
            "pod-a1",
            &["iperf3", "-c", dst, "-t", &format!("{}", secs.ceil() as u64), "-P", &streams.to_string(), "-J"],
        )
        .output()?;
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    v["end"]["sum_received"]["bits_per_second"].as_f64().context("iperf3 reported no throughput")
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let tools = Tools::find()?;
    let chosen: Vec<&Scenario> = if o.scenarios.is_empty() {
        SCENARIOS.iter().collect()
    } else {
        o.scenarios
            .iter()
            .map(|n| {
                SCENARIOS.iter().find(|s| s.name == n).with_context(|| {
                    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    format!("no scenario {n:?}; scenarios: {}", names.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let tcp = if o.no_tcp { vec![] } else { vec![1usize, 4] };
    // Every router scenario runs with each worker count (in tun mode the workers share
    // tunl0's queues); the kernel baseline has no workers.
    let per = |s: &Scenario| if s.router { o.workers.len() } else { 1 };
    let total: usize = chosen.iter().map(|s| per(s) * (o.sizes.len() + tcp.len())).sum();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut runs: Vec<Run> = Vec::new();
    for sc in chosen {
        let workers: Vec<usize> = if sc.router { o.workers.clone() } else { vec![1] };
        for w in workers {
            let _ = tools.router(&["lab", "down"]);
            let workers = w.to_string();
            let mut up = vec!["lab", "up", "--dataplane", sc.dataplane, "--workers", &workers];
            if o.no_transit_filter {
                up.push("--no-transit-filter");
            }
            up.extend(sc.lab_args);
            let nice = o.worker_nice.map(|n| n.to_string());
            if let Some(n) = &nice {
                up.extend(["--worker-nice", n.as_str()]);
            }
            tools.router(&up)?;
            // What the routers of these runs were set to, recorded with each.
            let first = runs.len();
            for size in &o.sizes {
                bar.set_message(format!("{} ({} worker{}) UDP {size}", sc.name, w, if w > 1 { "s" } else { "" }));
                let secs = if o.packets.is_some() { 120.0 } else { o.duration };
                match udp_run(&tools, sc, *size, secs, o.packets) {
                    Ok((g, s, cpu, drops)) => runs.push(Run::udp(sc, *size, w, &g, &s, cpu, drops)),
                    Err(e) => bar.println(format!("{} UDP {size}: {e:#}", sc.name)),
                }
                bar.inc(1);
            }
            for &n in &tcp {
                bar.set_message(format!("{} TCP x{n}", sc.name));
                match tcp_run(&tools, sc, n, o.duration) {
                    Ok(bps) => runs.push(Run::tcp(sc, n, w, bps)),
                    Err(e) => bar.println(format!("{} TCP x{n}: {e:#}", sc.name)),
                }
                bar.inc(1);
            }
            let _ = tools.router(&["lab", "down"]);
            if sc.router {
                for r in &mut runs[first..] {
                    r.worker_nice = Some(o.worker_nice.unwrap_or(forwarding::dataplane::DEFAULT_WORKER_NICE));
                    r.transit_filter = (sc.dataplane == "afpacket").then_some(!o.no_transit_filter);
                }
            }
        }
    }
    bar.finish_and_clear();
    let docs = Some(o.docs.as_path()).filter(|d| !d.as_os_str().is_empty());
    report::finish(&mut runs, &o.out, docs)?;
    Ok(())
}

pub fn scenario_note(name: &str) -> &'static str {
    SCENARIOS.iter().find(|s| s.name == name).map_or("", |s| s.what)
}

/// The kernel scenario a scenario's `× kernel` compares with: IPv6 against the kernel's IPv6
/// forwarding, masquerade against the kernel's masquerade, the rest against `kernel`.
pub fn baseline(name: &str) -> &'static str {
    SCENARIOS.iter().find(|s| s.name == name).map_or("kernel", |s| s.baseline)
}
