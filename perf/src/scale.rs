//! `router-perf bgp-scale`: what BGP mode costs as the cluster grows, a full mesh against
//! route reflectors. For each lab size N and each layout it runs `router lab up --nodes N`
//! (with `--route-reflectors K` for the reflector layout) and measures:
//!
//! - `lab up` until it returns (every session up, every node has every other node's block),
//!   and from the first node daemon's start to that moment (BGP's share of it);
//! - sessions: per node and in total, checked against what the layout implies;
//! - what BGP sent to get there: messages and bytes, all nodes together;
//! - each node daemon's resident memory, the CPU time all of them used until converged, and
//!   their CPU use while idle afterwards;
//! - how long a change takes to reach every other node: a pod on the last node given an
//!   address borrowed from the first node's block (its /32 announced, then withdrawn), and the
//!   last node stopping (its block withdrawn by its peers).
//!
//! Propagation is timed from just before the change, by asking every other node's admin socket
//! in turn until each shows it; a sweep over 100 nodes takes a few milliseconds, which bounds
//! the resolution of the "every node" times.

use anyhow::{bail, Context as _};
use indicatif::{ProgressBar, ProgressStyle};
use nodeapi::admin::{Client, PodSpec};
use plotters::prelude::*;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LAB: &str = "rps";
/// The host end of the borrowing pod's veth on the last node.
const BENCH_IFACE: &str = "calibench0";
/// How often the nodes are asked while a change propagates.
const POLL: Duration = Duration::from_millis(2);
/// Give up on one change after this long.
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Lab sizes (nodes); each is measured as a full mesh and with route reflectors.
    #[arg(long, value_delimiter = ',', default_value = "10,25,50,100", value_parser = clap::value_parser!(u16).range(4..=200))]
    pub nodes: Vec<u16>,
    /// Route reflectors in the reflector layout (the first nodes, one cluster ID).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub route_reflectors: u16,
    /// Underlay subnets the nodes are spread over.
    #[arg(long, default_value_t = 2)]
    pub subnets: usize,
    /// Times the borrowed /32 is announced and withdrawn per lab.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds of idle CPU measured per lab after it converged.
    #[arg(long, default_value_t = 10.0)]
    pub idle_secs: f64,
    /// The longest to wait, before each lab, for the machine to be quiet.
    #[arg(long, default_value_t = 60.0)]
    pub settle_secs: f64,
    /// Where bgp-scale.{json,md,svg} go.
    #[arg(long, default_value = "target/perf")]
    pub out: PathBuf,
    /// Where the table and plot for the documentation go (with date, machine and command);
    /// `--docs ''` skips them.
    #[arg(long, default_value = "docs/bench", value_parser = crate::path_or_empty)]
    pub docs: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Layout {
    Mesh,
    Reflectors,
}

impl Layout {
    fn name(self, k: usize) -> String {
        match self {
            Layout::Mesh => "full mesh".into(),
            Layout::Reflectors => format!("{k} route reflector{}", if k == 1 { "" } else { "s" }),
        }
    }
}

/// Milliseconds until the first and until the last of the other nodes showed a change.
#[derive(Debug, Clone, Copy, Serialize)]
struct Spread {
    first_ms: f64,
    every_ms: f64,
}

#[derive(Debug, Serialize)]
struct LabResult {
    layout: Layout,
    nodes: usize,
    route_reflectors: usize,
    subnets: usize,
    /// From starting `lab up` until it returned with every node converged.
    lab_up_s: f64,
    /// From the first node daemon's start until then.
    converged_s: f64,
    /// From the last node daemon's start until then: BGP's own part, the daemons' start
    /// one after the other left out.
    after_last_start_s: f64,
    sessions: usize,
    expected_sessions: usize,
    sessions_per_node_min: usize,
    sessions_per_node_max: usize,
    /// Sent by all nodes together until converged (each message is received once).
    bgp_messages: u64,
    bgp_updates: u64,
    bgp_bytes: u64,
    rss_mib_mean: f64,
    rss_mib_max: f64,
    /// What the machine had less of once the lab was up and idle (MemAvailable), per node:
    /// the daemons and what the kernel keeps for them, their namespaces and links.
    machine_mib_per_node: f64,
    /// CPU time (user + system) of all node daemons from their start until converged.
    cpu_s_to_converge: f64,
    /// Idle afterwards: CPU time per node as a percentage of one core.
    idle_cpu_pct_per_node: f64,
    idle_secs: f64,
    borrowed_announced: Vec<Spread>,
    borrowed_withdrawn: Vec<Spread>,
    node_stopped: Spread,
}

/// One node daemon's figures from /proc.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss: u64,
    cpu_s: f64,
    /// When it started, in seconds since boot.
    started_s: f64,
}

fn clock_ticks() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}

/// Reads `/proc/PID/stat` and `status`: utime and stime are fields 14 and 15, starttime is
/// field 22, counted after the command name in parentheses (which may hold spaces).
fn usage(pid: i32) -> anyhow::Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("process {pid}"))?;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("/proc stat without a command name")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<f64> {
        f.get(n - 3).and_then(|v| v.parse::<f64>().ok()).with_context(|| format!("/proc/{pid}/stat field {n}"))
    };
    let tck = clock_ticks();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .context("no VmRSS")?;
    Ok(Usage { rss: rss_kib * 1024, cpu_s: (field(14)? + field(15)?) / tck, started_s: field(22)? / tck })
}

/// The machine's MemAvailable, in bytes.
fn mem_available() -> anyhow::Result<u64> {
    let s = std::fs::read_to_string("/proc/meminfo")?;
    let kib = s.lines().find_map(|l| l.strip_prefix("MemAvailable:")).and_then(|v| v.trim().strip_suffix("kB"));
    kib.and_then(|v| v.trim().parse::<u64>().ok()).map(|k| k * 1024).context("no MemAvailable in /proc/meminfo")
}

/// Seconds since boot, on the clock of /proc's start times.
fn uptime() -> anyhow::Result<f64> {
    let s = std::fs::read_to_string("/proc/uptime")?;
    s.split_whitespace().next().and_then(|v| v.parse().ok()).context("/proc/uptime")
}

/// CPU time the machine spent working (user, nice, system, irq, softirq; not steal, which
/// is other guests'), in clock ticks over all cores, and all of it.
fn cpu_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let work = [0, 1, 2, 5, 6].iter().filter_map(|&i| v.get(i)).sum();
    (work, v.iter().take(8).sum())
}

/// Waits (up to `most`) until the machine is quiet: after a lab goes down, the kernel goes
/// on dismantling its namespaces for a while, and each lab should start from the same calm.
fn settle(most: Duration) {
    let t0 = Instant::now();
    let mut before = cpu_ticks();
    while t0.elapsed() < most {
        std::thread::sleep(Duration::from_secs(1));
        let now = cpu_ticks();
        let (work, all) = (now.0.saturating_sub(before.0), now.1.saturating_sub(before.1));
        if all > 0 && (work as f64) < 0.1 * all as f64 {
            return;
        }
        before = now;
    }
}

/// Asks every client in turn until `shows` holds for each; when the first and the last did,
/// counted from `t0`.
fn spread(t0: Instant, what: &str, clients: &[Client], shows: impl Fn(&Client) -> bool) -> anyhow::Result<Spread> {
    let mut done: Vec<Option<Duration>> = vec![None; clients.len()];
    loop {
        for (d, c) in done.iter_mut().zip(clients) {
            if d.is_none() && shows(c) {
                *d = Some(t0.elapsed());
            }
        }
        if done.iter().all(Option::is_some) {
            break;
        }
        if t0.elapsed() > TIMEOUT {
            let missing = done.iter().filter(|d| d.is_none()).count();
            bail!("{what}: {missing} of {} nodes not within {} s", clients.len(), TIMEOUT.as_secs());
        }
        std::thread::sleep(POLL);
    }
    let times: Vec<Duration> = done.into_iter().flatten().collect();
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    Ok(Spread { first_ms: ms(times.iter().min()), every_ms: ms(times.iter().max()) })
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("router-perf bgp-scale builds labs of up to hundreds of namespaces: run it as root");
    }
    let router = std::env::current_exe()?.with_file_name("router");
    if !router.exists() {
        bail!("{} is missing: build everything first with `cargo build --release`", router.display());
    }
    if !(0.1..=3600.0).contains(&o.idle_secs) {
        bail!("--idle-secs {}: between 0.1 and 3600 seconds", o.idle_secs);
    }
    if !(0.0..=3600.0).contains(&o.settle_secs) {
        bail!("--settle-secs {}: between 0 and 3600 seconds", o.settle_secs);
    }
    if o.rounds == 0 {
        bail!("--rounds 0: at least one round");
    }
    let k = usize::from(o.route_reflectors);
    if let Some(n) = o.nodes.iter().find(|&&n| usize::from(n) <= k) {
        bail!("{n} nodes with {k} route reflectors: a lab needs more nodes than reflectors");
    }
    let labs: Vec<(usize, Layout)> =
        o.nodes.iter().flat_map(|&n| [Layout::Mesh, Layout::Reflectors].map(|l| (usize::from(n), l))).collect();
    let bar = ProgressBar::new(labs.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(500));
    let mut results = Vec::new();
    for (n, layout) in labs {
        let r = measure(&router, n, layout, k, o, &|stage| {
            bar.set_message(format!("{n} nodes, {}: {stage}", layout.name(k)))
        })?;
        bar.println(format!(
            "{n} nodes, {}: {} sessions, converged {:.1} s after the first node started (lab up {:.1} s), {} KiB of BGP, \
             {:.1} MiB RSS and {:.1} MiB of the machine per node; borrowed /32 at every node in {:.0} ms",
            layout.name(k),
            r.sessions,
            r.converged_s,
            r.lab_up_s,
            r.bgp_bytes / 1024,
            r.rss_mib_mean,
            r.machine_mib_per_node,
            crate::median(&r.borrowed_announced.iter().map(|s| s.every_ms).collect::<Vec<_>>()),
        ));
        results.push(r);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let md = markdown(&results);
    nodeapi::out!("\n{md}");
    std::fs::create_dir_all(&o.out)?;
    std::fs::write(o.out.join("bgp-scale.json"), serde_json::to_string_pretty(&results)?)?;
    std::fs::write(o.out.join("bgp-scale.md"), &md)?;
    plot(&results, &o.out.join("bgp-scale.svg"))?;
    nodeapi::outln!("written: {0}/bgp-scale.md, {0}/bgp-scale.json, {0}/bgp-scale.svg", o.out.display());
    if !o.docs.as_os_str().is_empty() {
        std::fs::create_dir_all(&o.docs)?;
        let text = crate::provenance::header("BGP at scale: a full mesh against route reflectors", &crate::command_line())
            + &md
            + "\n![sessions and convergence against lab size](bgp-scale.svg)\n\nWhat it shows and how it is measured: [../bgp.md](../bgp.md#how-bgp-mode-scales).\n";
        std::fs::write(o.docs.join("bgp-scale.md"), text)?;
        // Copying a file onto itself would empty it.
        if std::fs::canonicalize(&o.docs)? != std::fs::canonicalize(&o.out)? {
            std::fs::copy(o.out.join("bgp-scale.svg"), o.docs.join("bgp-scale.svg"))?;
        }
        nodeapi::outln!("written: {0}/bgp-scale.md, {0}/bgp-scale.svg", o.docs.display());
    }
    Ok(())
}

fn measure(
    router: &Path,
    n: usize,
    layout: Layout,
    k: usize,
    o: &Options,
    stage: &dyn Fn(&str),
) -> anyhow::Result<LabResult> {
    let b = crate::scratchlab::ScratchLab::new(router, LAB, "router-perf-scale-")?;
    let rr = match layout {
        Layout::Mesh => 0,
        Layout::Reflectors => k,
    };
    let g = lab::topology::Generated { nodes: n, subnets: o.subnets, pods_per_node: 1, route_reflectors: rr };
    let topo_file = b.scratch.join("topology.toml");
    let text = g.text()?;
    std::fs::write(&topo_file, &text)?;
    let topo = lab::topology::Topology::parse(&topo_file, &text).map_err(|e| anyhow::anyhow!("{e}"))?;

    stage("waiting for a quiet machine");
    settle(Duration::from_secs_f64(o.settle_secs));
    let available_before = mem_available()?;
    stage("lab up");
    let (nodes, subnets, rrs) = (n.to_string(), o.subnets.to_string(), rr.to_string());
    let t0 = Instant::now();
    b.router(&["lab", "up", "--nodes", &nodes, "--subnets", &subnets, "--route-reflectors", &rrs])?;
    let lab_up_s = t0.elapsed().as_secs_f64();
    let up_at = uptime()?;
    let st = b.lab.state()?.context("the lab has no state after lab up")?;
    let pids: Vec<i32> = topo
        .nodes
        .iter()
        .map(|node| st.daemons.iter().find(|d| d.node == node.name).map(|d| d.pid).context("a daemon per node"))
        .collect::<anyhow::Result<_>>()?;
    let at_converged: Vec<Usage> = pids.iter().map(|&p| usage(p)).collect::<anyhow::Result<_>>()?;
    let first_start = at_converged.iter().map(|u| u.started_s).fold(f64::INFINITY, f64::min);
    let last_start = at_converged.iter().map(|u| u.started_s).fold(0.0, f64::max);
    let clients: Vec<Client> = topo.nodes.iter().map(|node| Client::new(b.lab.socket(&node.name))).collect();

    // Converged as `lab up` says: checked here again, node by node, from the routes.
    stage("counting sessions");
    let mut per_node = Vec::new();
    let (mut messages, mut updates, mut bytes) = (0, 0, 0);
    for (node, c) in topo.nodes.iter().zip(&clients) {
        let routes = c.routes().with_context(|| format!("{}'s routes", node.name))?;
        if let Some(m) =
            topo.nodes.iter().find(|x| x.name != node.name && !routes.iter().any(|r| r.prefix == x.block.into()))
        {
            bail!("lab up returned, yet {} has no route for {}'s block {}", node.name, m.name, m.block);
        }
        let peers = c.bgp_status()?.peers;
        per_node.push(peers.iter().filter(|p| p.state == "up").count());
        for p in &peers {
            messages += p.messages_sent;
            updates += p.updates_sent;
            bytes += p.bytes_sent;
        }
    }
    let sessions = per_node.iter().sum::<usize>() / 2;
    let expected = g.sessions();
    if sessions != expected {
        bail!("{n} nodes, {}: {sessions} sessions up, {expected} expected", layout.name(k));
    }

    stage("idle");
    std::thread::sleep(Duration::from_secs_f64(o.idle_secs));
    let idle: Vec<Usage> = pids.iter().map(|&p| usage(p)).collect::<anyhow::Result<_>>()?;
    let idle_cpu: f64 = idle.iter().zip(&at_converged).map(|(b, a)| b.cpu_s - a.cpu_s).sum();
    let rss: Vec<f64> = idle.iter().map(|u| u.rss as f64 / (1 << 20) as f64).collect();
    let machine = available_before.saturating_sub(mem_available()?) as f64 / (1 << 20) as f64 / n as f64;

    // A pod on the last node with an address of the first node's block: the last node
    // announces it as a /32 and every other node routes it there.
    let (first, last) = (&topo.nodes[0], &topo.nodes[n - 1]);
    let borrowed = first
        .block
        .hosts()
        .rev()
        .find(|a| !first.pods.iter().any(|p| p.address == *a))
        .context("a free address in the first block")?;
    let host = ipnet::Ipv4Net::from(borrowed);
    b.router(&[
        "lab",
        "exec",
        &last.name,
        "--",
        "ip",
        "link",
        "add",
        BENCH_IFACE,
        "type",
        "veth",
        "peer",
        "name",
        "calibench1",
    ])?;
    b.router(&["lab", "exec", &last.name, "--", "ip", "link", "set", BENCH_IFACE, "up"])?;
    let (others, last_client) = clients.split_at(n - 1);
    let last_client = &last_client[0];
    let (mut announced, mut withdrawn) = (Vec::new(), Vec::new());
    for round in 0..o.rounds {
        stage(&format!("borrowed /32, round {}/{}", round + 1, o.rounds));
        let pod = PodSpec {
            name: "bench-borrowed".into(),
            interface: BENCH_IFACE.into(),
            address: borrowed,
            address6: None,
            container: None,
        };
        let t0 = Instant::now();
        last_client.pod_add(pod)?;
        announced.push(spread(t0, "the borrowed /32", others, |c| routes_by(c, borrowed, host) == Some(true))?);
        let t0 = Instant::now();
        last_client.pod_del("bench-borrowed")?;
        withdrawn.push(spread(t0, "the borrowed /32's withdrawal", others, |c| {
            routes_by(c, borrowed, host) == Some(false)
        })?);
    }

    // The last node stops (SIGTERM: it sends Cease to its peers) and its block goes.
    stage("last node stopping");
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pids[n - 1]), nix::sys::signal::Signal::SIGTERM)?;
    let node_stopped = spread(t0, "the stopped node's block withdrawn", others, |c| {
        routes_by(c, last.block.addr(), last.block) == Some(false)
    })?;

    stage("lab down");
    drop(b);
    Ok(LabResult {
        layout,
        nodes: n,
        route_reflectors: rr,
        subnets: o.subnets,
        lab_up_s,
        converged_s: up_at - first_start,
        after_last_start_s: up_at - last_start,
        sessions,
        expected_sessions: expected,
        sessions_per_node_min: per_node.iter().copied().min().unwrap_or(0),
        sessions_per_node_max: per_node.iter().copied().max().unwrap_or(0),
        bgp_messages: messages,
        bgp_updates: updates,
        bgp_bytes: bytes,
        rss_mib_mean: rss.iter().sum::<f64>() / rss.len() as f64,
        rss_mib_max: rss.iter().copied().fold(0.0, f64::max),
        machine_mib_per_node: machine,
        cpu_s_to_converge: at_converged.iter().map(|u| u.cpu_s).sum(),
        idle_cpu_pct_per_node: 100.0 * idle_cpu / o.idle_secs / n as f64,
        idle_secs: o.idle_secs,
        borrowed_announced: announced,
        borrowed_withdrawn: withdrawn,
        node_stopped,
    })
}

/// Whether the node routes `addr` by the route for `prefix`; None when it cannot be asked.
fn routes_by(c: &Client, addr: Ipv4Addr, prefix: ipnet::Ipv4Net) -> Option<bool> {
    c.lookup(addr.into()).ok().map(|r| r.is_some_and(|r| r.prefix == prefix.into()))
}

fn markdown(results: &[LabResult]) -> String {
    use std::fmt::Write as _;
    let layout = |r: &LabResult| r.layout.name(r.route_reflectors);
    let mut md = String::from(
        "**Sessions and convergence.** Converged: from the first node daemon's start until every node has every \
         other node's block (`lab up` returns then; it builds the namespaces before it starts the daemons, one \
         after the other); after the last start: from the last daemon's start until then.\n\n\
         | layout | nodes | sessions | per node | converged | after the last start | lab up | CPU s to converge | BGP messages | BGP KiB |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        let per_node = if r.sessions_per_node_min == r.sessions_per_node_max {
            r.sessions_per_node_min.to_string()
        } else {
            format!("{}–{}", r.sessions_per_node_min, r.sessions_per_node_max)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {per_node} | {:.1} s | {:.1} s | {:.1} s | {:.1} | {} | {} |",
            layout(r),
            r.nodes,
            r.sessions,
            r.converged_s,
            r.after_last_start_s,
            r.lab_up_s,
            r.cpu_s_to_converge,
            r.bgp_messages,
            r.bgp_bytes / 1024
        );
    }
    let _ = write!(
        md,
        "\n**Each node, idle.** Resident memory of a node daemon, what the machine gave up per node (the drop in \
         its available memory from before `lab up`: the daemon without the pages all daemons share, the kernel's \
         part, the namespaces and links; the page cache moves it by some MiB, so small labs read low), and \
         the daemon's CPU use over {:.0} s after convergence.\n\n\
         | layout | nodes | RSS per node (mean / max) | all nodes | machine per node | idle CPU per node |\n\
         |---|---:|---:|---:|---:|---:|\n",
        results.first().map_or(0.0, |r| r.idle_secs)
    );
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} / {:.1} MiB | {:.0} MiB | {:.1} MiB | {:.2} % of a core |",
            layout(r),
            r.nodes,
            r.rss_mib_mean,
            r.rss_mib_max,
            r.rss_mib_mean * r.nodes as f64,
            r.machine_mib_per_node,
            r.idle_cpu_pct_per_node
        );
    }
    let rounds = results.first().map_or(0, |r| r.borrowed_announced.len());
    md.push_str(
        "\n**Changes reaching every node**, in milliseconds until the first / the last of the other nodes routes \
         accordingly: a pod on the last node with an address borrowed from the first node's block (its /32 \
         announced, then withdrawn; medians of ",
    );
    let _ = write!(
        md,
        "{rounds} rounds), and the last node stopping (its peers withdraw its block).\n\n\
         | layout | nodes | /32 announced | /32 withdrawn | node stopped |\n|---|---:|---:|---:|---:|\n"
    );
    let med = |v: &[Spread]| {
        let f: Vec<f64> = v.iter().map(|s| s.first_ms).collect();
        let e: Vec<f64> = v.iter().map(|s| s.every_ms).collect();
        format!("{:.0} / {:.0}", crate::median(&f), crate::median(&e))
    };
    for r in results {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.0} / {:.0} |",
            layout(r),
            r.nodes,
            med(&r.borrowed_announced),
            med(&r.borrowed_withdrawn),
            r.node_stopped.first_ms,
            r.node_stopped.every_ms
        );
    }
    // Ratios within the run: reflectors against the mesh of the same size.
    md.push('\n');
    for r in results.iter().filter(|r| r.layout == Layout::Reflectors) {
        if let Some(m) = results.iter().find(|m| m.layout == Layout::Mesh && m.nodes == r.nodes) {
            let _ = writeln!(
                md,
                "- {} nodes, reflectors ÷ mesh: sessions {:.2}×, converged {:.2}×, BGP bytes {:.2}×, CPU to converge {:.2}×, RSS per node {:.2}×",
                r.nodes,
                r.sessions as f64 / m.sessions as f64,
                r.converged_s / m.converged_s,
                r.bgp_bytes as f64 / m.bgp_bytes as f64,
                r.cpu_s_to_converge / m.cpu_s_to_converge,
                r.rss_mib_mean / m.rss_mib_mean
            );
        }
    }
    md
}

/// Two panels against the lab size: sessions in total, and seconds to converge; a line each
/// for the mesh and the reflectors.
fn plot(results: &[LabResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    let max_n = results.iter().map(|r| r.nodes).max().unwrap_or(10) as f64 * 1.05;
    let series = |layout: Layout, f: fn(&LabResult) -> f64| -> Vec<(f64, f64)> {
        results.iter().filter(|r| r.layout == layout).map(|r| (r.nodes as f64, f(r))).collect()
    };
    type Metric = (&'static str, &'static str, fn(&LabResult) -> f64);
    let metrics: [Metric; 2] = [
        ("BGP sessions", "sessions", |r| r.sessions as f64),
        ("Time to converge", "seconds from the first node's start", |r| r.converged_s),
    ];
    let mesh_color = RGBColor(200, 70, 50);
    let rr_color = RGBColor(40, 110, 190);
    for (area, (title, unit, f)) in panels.iter().zip(metrics) {
        let max_y = results.iter().map(f).fold(1.0, f64::max) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..max_n, 0.0..max_y)?;
        chart
            .configure_mesh()
            .x_desc("nodes")
            .y_desc(unit)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        for (layout, color) in [(Layout::Mesh, mesh_color), (Layout::Reflectors, rr_color)] {
            let pts = series(layout, f);
            let label =
                results.iter().find(|r| r.layout == layout).map_or(String::new(), |r| layout.name(r.route_reflectors));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).border_style(BLACK).draw()?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_of_this_process() {
        let u = usage(std::process::id() as i32).expect("our own /proc entry");
        assert!(u.rss > 1 << 20, "{u:?}");
        assert!(u.started_s > 0.0 && u.started_s <= uptime().expect("uptime") + 0.01, "{u:?}");
        assert!(mem_available().expect("MemAvailable") > 1 << 20);
    }
}
