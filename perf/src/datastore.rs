//! `router-perf datastore`: how long a change made with `router apply` takes to act in a lab
//! whose nodes follow etcd. For each lab size N it builds a generated N-node lab with
//! `--datastore etcd` and BIRD 2 in the underlay router, then times, over several rounds:
//!
//! - a BGPPeer for node-1 applied → the session with BIRD Established → BIRD's route in
//!   node-1's FIB; the BGPPeer deleted → session and route gone;
//! - the pool's `ipipMode` changed (CrossSubnet ↔ Never) → the first and the last node whose
//!   FIB routes to another subnet's block with the new encapsulation.
//!
//! The clock starts before `router apply` runs, so what is timed is what a user waits for: the
//! CLI writing to etcd, the nodes' watches, their control loops and BGP. The nodes are asked
//! over their admin sockets every few milliseconds.

use anyhow::{bail, Context as _};
use nodeapi::admin::Client;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LAB: &str = "rpd";
/// BIRD in the underlay router, at the gateway address of the first subnet.
const BIRD_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const BIRD_AS: u32 = 65001;
/// What BIRD announces to node-1.
const BIRD_PREFIX: &str = "10.99.0.0/24";
/// How often the nodes are asked.
const POLL: Duration = Duration::from_millis(2);
/// Give up on one change after this long.
const TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Lab sizes (nodes), one lab each.
    #[arg(long, value_delimiter = ',', default_value = "3,50", value_parser = clap::value_parser!(u16).range(2..=200))]
    pub nodes: Vec<u16>,
    /// Underlay subnets the nodes are spread over.
    #[arg(long, default_value_t = 2)]
    pub subnets: usize,
    /// Times each change is made (and undone) per lab.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/perf/datastore.json")]
    pub out: PathBuf,
    /// Where the table for the documentation goes (with date, machine and command); `--docs
    /// ''` skips it.
    #[arg(long, default_value = "docs/bench", value_parser = crate::path_or_empty)]
    pub docs: PathBuf,
}

/// Milliseconds of each round.
#[derive(Debug, Default, Serialize)]
struct Series {
    peer_session_ms: Vec<f64>,
    peer_route_ms: Vec<f64>,
    peer_gone_ms: Vec<f64>,
    pool_first_node_ms: Vec<f64>,
    pool_every_node_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct LabResult {
    nodes: usize,
    subnets: usize,
    lab_up_s: f64,
    rounds: Series,
}

/// The lab, and what this benchmark does with it.
struct Bench(crate::scratchlab::ScratchLab);

impl std::ops::Deref for Bench {
    type Target = crate::scratchlab::ScratchLab;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Bench {
    /// `router apply -f` of `yaml`, the way a user would.
    fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        let f = self.scratch.join("change.yaml");
        std::fs::write(&f, yaml)?;
        self.router(&["apply", "-f", &f.to_string_lossy()]).map(drop)
    }

    fn client(&self, node: &str) -> Client {
        Client::new(self.lab.socket(node))
    }
}

impl Drop for Bench {
    /// BIRD first; the lab goes after, with the scratch lab.
    fn drop(&mut self) {
        let sock = self.scratch.join("bird.ctl");
        let _ = self.router(&["lab", "exec", "underlay", "--", "birdc", "-s", &sock.to_string_lossy(), "down"]);
    }
}

/// Asks `done` every [`POLL`] until it holds; the time since `t0`.
fn until(t0: Instant, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<Duration> {
    loop {
        if done() {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > TIMEOUT {
            bail!("{what}: not within {} s", TIMEOUT.as_secs());
        }
        std::thread::sleep(POLL);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("router-perf datastore builds labs and starts BIRD in them: run it as root");
    }
    let router = std::env::current_exe()?.with_file_name("router");
    if !router.exists() {
        bail!("{} is missing: build everything first with `cargo build --release`", router.display());
    }
    for (tool, package) in [("bird", "bird2"), ("etcd", "etcd-server")] {
        if Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("{tool} is not installed (Debian package {package}; scripts/setup installs it)");
        }
    }
    let mut results = Vec::new();
    for &n in &o.nodes {
        let r = measure(&router, usize::from(n), o)?;
        nodeapi::outln!(
            "{n} nodes: lab up in {:.1} s; BGPPeer → session {:.0} ms, → route {:.0} ms; pool → every node {:.0} ms (medians)",
            r.lab_up_s,
            crate::median(&r.rounds.peer_session_ms),
            crate::median(&r.rounds.peer_route_ms),
            crate::median(&r.rounds.pool_every_node_ms)
        );
        results.push(r);
    }
    let md = markdown(&results, o.rounds);
    nodeapi::out!("\n{md}");
    crate::write_results(
        &o.out,
        &results,
        &o.docs,
        "datastore",
        "Changes applied to etcd: time until the nodes act on them",
        &md,
        "[../datastore.md](../datastore.md#how-fast-a-change-acts)",
    )
}

fn measure(router: &Path, n: usize, o: &Options) -> anyhow::Result<LabResult> {
    let b = Bench(crate::scratchlab::ScratchLab::new(router, LAB, "router-perf-datastore-")?);
    let topo_text = lab::topology::generate(n, o.subnets, 1)?;
    let topo_file = b.scratch.join("topology.toml");
    std::fs::write(&topo_file, &topo_text)?;
    let topo = lab::topology::Topology::parse(&topo_file, &topo_text).map_err(|e| anyhow::anyhow!("{e}"))?;

    eprintln!("{n} nodes: lab up");
    let t0 = Instant::now();
    b.router(&["lab", "up", "--topology", &topo_file.to_string_lossy(), "--datastore", "etcd"])?;
    let lab_up_s = t0.elapsed().as_secs_f64();
    start_bird(&b, topo.nodes[0].address.addr())?;

    // For each node, a block on another subnet: its route's encapsulation follows the mode.
    let probes: Vec<(Client, Ipv4Addr)> = topo
        .nodes
        .iter()
        .map(|me| {
            let other = topo.nodes.iter().find(|x| x.subnet != me.subnet).context("a node on another subnet")?;
            Ok((b.client(&me.name), other.block.addr()))
        })
        .collect::<anyhow::Result<_>>()?;
    let first = b.client(&topo.nodes[0].name);
    let prefix: ipnet::Ipv4Net = BIRD_PREFIX.parse()?;
    let session_up =
        |c: &Client| c.bgp_status().is_ok_and(|s| s.peers.iter().any(|p| p.peer == BIRD_ADDR && p.state == "up"));
    let has_route =
        |c: &Client| c.lookup(prefix.addr().into()).ok().flatten().is_some_and(|r| r.prefix == prefix.into());
    let encap_is = |c: &Client, a: Ipv4Addr, e: &str| c.lookup(a.into()).ok().flatten().is_some_and(|r| r.encap == e);
    // The lab's default mode, as every node must show it before a round starts.
    until(Instant::now(), "the lab's routes", || probes.iter().all(|(c, a)| encap_is(c, *a, "ipip")))?;

    let mut s = Series::default();
    for round in 0..o.rounds {
        eprintln!("{n} nodes: round {}/{}", round + 1, o.rounds);
        let t0 = Instant::now();
        b.apply(&format!(
            "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: bench\nspec:\n  node: {}\n  peerIP: {BIRD_ADDR}\n  asNumber: {BIRD_AS}\n",
            topo.nodes[0].name
        ))?;
        s.peer_session_ms.push(ms(until(t0, "the session with BIRD", || session_up(&first))?));
        s.peer_route_ms.push(ms(until(t0, "BIRD's route in the FIB", || has_route(&first))?));
        let t0 = Instant::now();
        b.router(&["delete", "bgppeer", "bench"])?;
        s.peer_gone_ms.push(ms(until(t0, "the session and the route to go", || {
            first.bgp_status().is_ok_and(|st| st.peers.iter().all(|p| p.peer != BIRD_ADDR)) && !has_route(&first)
        })?));

        for (mode, encap) in [("Never", "none"), ("CrossSubnet", "ipip")] {
            let t0 = Instant::now();
            b.apply(&format!(
                "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: {}\n  blockSize: {}\n  ipipMode: {mode}\n",
                topo.pool, topo.block_size
            ))?;
            let mut done: Vec<Option<Duration>> = vec![None; probes.len()];
            until(t0, "every node's routes in the new mode", || {
                for (d, (c, a)) in done.iter_mut().zip(&probes) {
                    if d.is_none() && encap_is(c, *a, encap) {
                        *d = Some(t0.elapsed());
                    }
                }
                done.iter().all(Option::is_some)
            })?;
            let times: Vec<Duration> = done.into_iter().flatten().collect();
            s.pool_first_node_ms.push(ms(times.iter().copied().min().unwrap_or_default()));
            s.pool_every_node_ms.push(ms(times.iter().copied().max().unwrap_or_default()));
        }
    }
    Ok(LabResult { nodes: n, subnets: o.subnets, lab_up_s, rounds: s })
}

/// BIRD 2 in the underlay router, passive, announcing [`BIRD_PREFIX`] to `node`: the session
/// is opened by the node as soon as it has the BGPPeer, so the time is the node's.
fn start_bird(b: &Bench, node: Ipv4Addr) -> anyhow::Result<()> {
    let conf = b.scratch.join("bird.conf");
    std::fs::write(
        &conf,
        format!(
            "router id {BIRD_ADDR};\nprotocol device {{}}\nprotocol static {{ ipv4; route {BIRD_PREFIX} unreachable; }}\n\
             protocol bgp node {{\n  local {BIRD_ADDR} as {BIRD_AS};\n  neighbor {node} as 64512;\n  passive on;\n  \
             ipv4 {{ import none; export all; }};\n}}\n"
        ),
    )?;
    let sock = b.scratch.join("bird.ctl");
    b.router(&[
        "lab",
        "exec",
        "underlay",
        "--",
        "bird",
        "-c",
        &conf.to_string_lossy(),
        "-s",
        &sock.to_string_lossy(),
        "-P",
        &b.scratch.join("bird.pid").to_string_lossy(),
    ])
    .context("starting BIRD (Debian package bird2)")?;
    Ok(())
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn markdown(results: &[LabResult], rounds: usize) -> String {
    use std::fmt::Write as _;
    let mut md = format!(
        "Median and worst of {rounds} rounds, in milliseconds from the start of `router apply` \
         (or `router delete`).\n\n\
         | nodes | lab up | BGPPeer → session | → BIRD's route in FIB | delete → gone | pool mode → first node | → every node |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let cell = |v: &[f64]| format!("{:.0} / {:.0}", crate::median(v), max(v));
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {:.1} s | {} | {} | {} | {} | {} |",
            r.nodes,
            r.lab_up_s,
            cell(&r.rounds.peer_session_ms),
            cell(&r.rounds.peer_route_ms),
            cell(&r.rounds.peer_gone_ms),
            cell(&r.rounds.pool_first_node_ms),
            cell(&r.rounds.pool_every_node_ms)
        );
    }
    // The smallest lab is the baseline of the run: the ratios hold on a noisy machine.
    if let (Some(base), Some(big)) = (results.first(), results.last().filter(|_| results.len() > 1)) {
        let ratio = |f: fn(&Series) -> &Vec<f64>| crate::median(f(&big.rounds)) / crate::median(f(&base.rounds));
        let _ = writeln!(
            md,
            "\n{} nodes ÷ {} nodes (medians): BGPPeer → session {:.1}×, → route {:.1}×, pool mode → every node {:.1}×",
            big.nodes,
            base.nodes,
            ratio(|s| &s.peer_session_ms),
            ratio(|s| &s.peer_route_ms),
            ratio(|s| &s.pool_every_node_ms)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_worst_cases() {
        assert_eq!(crate::median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(max(&[3.0, 1.0, 2.0]), 3.0);
        assert!(crate::median(&[]).is_nan());
    }
}
