//! The lab's commands: `lab up | down | exec | …`, and `trace` and `capture`, which work on a
//! running lab's pods and nodes.

use super::*;

/// How long a trace waits for the answer: long enough for ARP on every hop.
const ANSWER_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// A container's address of one family.
fn container_ip(c: &admin::PodSpec, v6: bool) -> Option<std::net::IpAddr> {
    if v6 {
        c.address6.map(Into::into)
    } else {
        Some(c.address.into())
    }
}

/// What a name of the lab stands for: a host's (not a switch's) or a container's address of
/// one family. None: no such name; Some(None): it has no address of that family.
pub(super) fn named_address(
    st: &lab::state::State,
    containers: &[admin::PodSpec],
    name: &str,
    v6: bool,
) -> Option<Option<std::net::IpAddr>> {
    match st.host(name).filter(|h| h.role != Role::Switch) {
        Some(h) => Some(h.ip(v6)),
        None => containers.iter().find(|c| c.name == name).map(|c| container_ip(c, v6)),
    }
}

/// Whose address `a` is, the other way: a host's or a container's name, and whether it is a
/// pod (or a container).
fn owner<'a>(
    st: &'a lab::state::State,
    containers: &'a [admin::PodSpec],
    a: std::net::IpAddr,
) -> Option<(&'a str, bool)> {
    let host = st.hosts.iter().find(|h| h.ips().any(|x| x == a)).map(|h| (h.name.as_str(), h.role == Role::Pod));
    host.or_else(|| {
        containers.iter().find(|c| container_ip(c, a.is_ipv6()) == Some(a)).map(|c| (c.name.as_str(), true))
    })
}

pub(super) fn trace(
    lab: &Lab,
    src: &str,
    dst: &str,
    proto: router::probe::ProbeProto,
    ttl: u8,
    ipv6: bool,
    json: bool,
) -> anyhow::Result<i32> {
    // The probe is sent from inside the pod's namespace.
    lab::enter(lab)?;
    let Some(st) = lab.state()? else {
        bail!("no lab named {:?} is up; start it with `router lab up`", lab.name);
    };
    let pods: Vec<&str> = st.hosts.iter().filter(|h| h.role == Role::Pod).map(|h| h.name.as_str()).collect();
    let named: Option<std::net::IpAddr> = dst.parse().ok();
    if let Some(a) = named.filter(|a| ipv6 && a.is_ipv4()) {
        bail!("{a} is an IPv4 address: an IPv6 trace needs an IPv6 destination (or a host's name)");
    }
    let v6 = ipv6 || named.is_some_and(|a| a.is_ipv6());
    // Containers (CNI pods) are named by their nodes, not in the lab's state.
    let served = lab::containers::served(&st);
    let containers: Vec<admin::PodSpec> = served.iter().map(|(_, p)| p.pod.clone()).collect();
    let family = if v6 { "IPv6" } else { "IPv4" };
    let no_addr =
        || format!("{src} has no {family} address{}", if v6 { " (is the lab up with --dual-stack?)" } else { "" });
    let (netns, src_ip) =
        match (st.host(src).filter(|h| h.role == Role::Pod), served.iter().find(|(_, p)| p.pod.name == src)) {
            (Some(h), _) => (Path::new("/run/netns").join(&h.namespace), h.ip(v6).with_context(no_addr)?),
            (None, Some((node, p))) => {
                (container_netns(lab, node, &p.pod)?, container_ip(&p.pod, v6).with_context(no_addr)?)
            }
            (None, None) => {
                let names: Vec<&str> = pods.iter().copied().chain(containers.iter().map(|c| c.name.as_str())).collect();
                bail!("the trace starts at a pod or a container; {src:?} is neither ({})", names.join(", "))
            }
        };
    let dst_ip = match (named_address(&st, &containers, dst, v6), named) {
        (Some(a), _) => a.with_context(|| format!("{dst} has no {family} address"))?,
        (None, Some(a)) => a,
        (None, None) => {
            let names: Vec<&str> = pods.iter().copied().chain(containers.iter().map(|c| c.name.as_str())).collect();
            bail!("{dst:?} is neither a host of the lab nor an IP address (pods: {})", names.join(", "))
        }
    };
    // An address is named by its host or container where it is one.
    let label =
        |a: std::net::IpAddr| owner(&st, &containers, a).map_or_else(|| a.to_string(), |(n, _)| format!("{n} {a}"));
    let dst_label = match named {
        None => format!("{dst} {dst_ip}"),
        Some(a) => label(a),
    };
    if dst_ip == src_ip {
        bail!(
            "nothing to trace: {dst_label} is {src}'s own address, which its kernel answers itself on \
             loopback; no node sees such a packet"
        );
    }
    let id = router::trace::new_id().context("reading a random trace id from /dev/urandom")?;
    // A node that does not answer (stopped, crashed: when a trace is most wanted) leaves a
    // gap in the trace, said below, rather than no trace at all.
    let mut traced = Vec::new();
    let mut untraced = Vec::new();
    for d in &st.daemons {
        match admin::Client::new(&d.socket).trace_start(id) {
            Ok(()) => traced.push(d),
            Err(e) if e.unreachable() => untraced.push(format!("{}: {e}", d.node)),
            Err(e) => return Err(e).with_context(|| format!("starting the trace on {}", d.node)),
        }
    }
    if traced.is_empty() && !st.daemons.is_empty() {
        bail!("no node of the lab answers, so none can report the probe: {}", untraced.join("; "));
    }
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(&exe)
        .args(["internal", "probe", "--netns"])
        .arg(&netns)
        .args(["--dst", &dst_ip.to_string(), "--id", &id.to_string(), "--ttl", &ttl.to_string()])
        .args(["--wait-ms", &ANSWER_WAIT.as_millis().to_string()])
        .arg("--proto")
        .arg(serde_json::to_value(proto)?.as_str().unwrap_or("icmp"))
        .output()?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        bail!("sending the probe from {src} failed: {}", why.trim().trim_start_matches("error: "));
    }
    // Every hop of the answer's way is in by now: a worker reports a probe before it sends
    // it on, and the nodes' reports are read below from what they queued.
    let answer: Option<router::probe::Answer> = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the probe's report: {:?}", String::from_utf8_lossy(&out.stdout)))?;
    let mut hops: Vec<nodeapi::admin::Hop> = Vec::new();
    for d in traced {
        let node = admin::Client::new(&d.socket);
        match node.trace_collect(id) {
            Ok(h) => hops.extend(h),
            Err(e) => untraced.push(format!("{}: {e}", d.node)),
        }
        let _ = node.trace_stop();
    }
    hops.sort_by(|a, b| a.time.total_cmp(&b.time));
    if json {
        let t = router::trace::Trace { id, src: src_ip, dst: dst_ip, proto, hops, answer, untraced };
        nodeapi::outln!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(0);
    }
    nodeapi::outln!(
        "trace {id:#010x}: {src} {src_ip} → {dst_label} ({})\n",
        serde_json::to_value(proto)?.as_str().unwrap_or("")
    );
    if hops.is_empty() && st.dataplane == DataplaneMode::Tun {
        // tun mode hands the router only what the kernel routes into the tunnel device.
        nodeapi::outln!(
            "no router saw the probe: in the tun data plane the nodes' kernels forward what is not \
             tunnelled ({}), and the router sees only what goes through the tunnel device",
            if v6 { "all IPv6" } else { "direct routes" }
        );
    } else if hops.is_empty() {
        nodeapi::outln!("no node saw the probe: {src}'s kernel did not send it (no route in the pod?)");
    } else {
        nodeapi::out!("{}", router::trace::render(&hops));
    }
    for u in &untraced {
        nodeapi::outln!("not traced: {u}");
    }
    match answer {
        Some(a) => nodeapi::outln!("\nanswer at {src} after {:.2} ms: {} from {}", a.after_ms, a.what, label(a.from)),
        None => {
            nodeapi::outln!("\nno answer reached {src} within {} s", ANSWER_WAIT.as_secs_f32());
            // The usual cause: the probe left the cluster with the pod's own address, and
            // the lab's underlay has no route back to pods (it knows IPv6 pods' routes).
            let to_pod = owner(&st, &containers, dst_ip).is_some_and(|(_, pod)| pod);
            let left = hops.iter().rev().find(|h| h.inner.map_or(h.src, |(s, _, _)| s) == src_ip);
            let unnatted = left
                .filter(|h| h.action == "forward" && h.out.is_some_and(|(s, _, _)| s == src_ip))
                .map(|h| format!("{} sent the probe out of {}", h.node, h.egress.as_deref().unwrap_or("?")))
                // In tun mode the node's kernel sends it, unseen by the router, unless it masquerades.
                .or_else(|| {
                    let node = st.host(src).and_then(|h| h.parent.as_deref());
                    let node = node.or_else(|| served.iter().find(|(_, p)| p.pod.name == src).map(|(n, _)| n.as_str()));
                    (hops.is_empty() && st.dataplane == DataplaneMode::Tun && !st.nat_outgoing)
                        .then(|| format!("{}'s kernel sent the probe on", node.unwrap_or("the pod's node")))
                });
            if let Some(sent) = unnatted.filter(|_| !v6 && !to_pod) {
                nodeapi::outln!(
                    "{sent} with {src}'s own address as its source: outside the IP pools an answer needs \
                     a route back to {src_ip}, and the lab's underlay router has none to pods. Calico's \
                     natOutgoing has the node put its own address on it (`router lab up --nat-outgoing`)."
                );
            }
        }
    }
    Ok(0)
}

/// A lab container's network namespace, by its first process (podman on its node knows it).
fn container_netns(lab: &Lab, node: &str, c: &admin::PodSpec) -> anyhow::Result<PathBuf> {
    let id = c.container.as_deref().unwrap_or(&c.name);
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["lab", "exec", node, "--", "podman", "inspect", "--format", "{{.State.Pid}}", id])
        .env("ROUTER_LAB", &lab.name)
        .env("ROUTER_LAB_DIR", lab.dir.parent().unwrap_or(Path::new("/")))
        .stdin(std::process::Stdio::null())
        .output()
        .context("asking podman for the container's process")?;
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok().filter(|p| *p > 0).with_context(|| {
        format!(
            "container {} on {node} has no running process to send the probe from: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })?;
    Ok(PathBuf::from(format!("/proc/{pid}/ns/net")))
}

pub(super) fn capture(
    q: &Query,
    interface: Option<String>,
    count: u64,
    duration: u64,
    hosts: Vec<std::net::IpAddr>,
    file: PathBuf,
) -> anyhow::Result<i32> {
    let path = if file.is_absolute() { file } else { std::env::current_dir()?.join(file) };
    // The node writes only new files; a regular file of ours from an earlier capture is
    // replaced here, with our own rights, as tcpdump -w would.
    if let Ok(m) = std::fs::symlink_metadata(&path) {
        use std::os::unix::fs::MetadataExt;
        if m.is_file() && m.uid() == nix::unistd::geteuid().as_raw() {
            std::fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let mut what = interface.clone().unwrap_or_else(|| "all interfaces".into());
    if !hosts.is_empty() {
        let hs: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        what.push_str(&format!(", to or from {}", hs.join(" or ")));
    }
    let node = q.client()?;
    // The node ends the capture at its limits (0 seconds: its own, an hour); this loop only
    // waits for that, or for Ctrl-C.
    let limit = router::capture::Limits::capped(count, Some(duration)).time.as_secs();
    node.capture_start(path.clone(), interface, count, Some(duration), hosts)?;
    eprintln!(
        "capturing on {what} into {} (up to {limit} s{}; Ctrl-C stops)",
        path.display(),
        if count > 0 { format!(" or {count} packets") } else { String::new() }
    );
    let mut written = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let st = match node.capture_status() {
            Ok(st) => st,
            Err(e) if e.unreachable() => bail!(
                "the node stopped answering during the capture ({e}); {} holds what it wrote until then: {written} packets or more",
                path.display()
            ),
            Err(e) => return Err(e.into()),
        };
        written = st.written;
        if !st.active || stop.load(std::sync::atomic::Ordering::Relaxed) {
            let n = node.capture_stop()?.written;
            let lost = st.lost;
            // What the user asked for needs no note; the node's own caps do.
            let asked = |w: &str| w == "packet count" || (w == "time limit" && duration > 0);
            if let Some(why) = st.ended.as_deref().filter(|w| !asked(w)) {
                eprintln!("the node stopped the capture: {why}");
            }
            if q.json {
                let done = admin::CaptureStatus { active: false, path: Some(path), written: n, lost, ended: st.ended };
                nodeapi::outln!("{}", serde_json::to_string(&done)?);
                return Ok(0);
            }
            nodeapi::outln!(
                "{n} packets written to {}{}",
                path.display(),
                if lost > 0 { format!(" ({lost} lost: the writer fell behind)") } else { String::new() }
            );
            return Ok(0);
        }
    }
}

pub(super) fn run_lab(cmd: LabCmd, lab: &Lab) -> anyhow::Result<i32> {
    match cmd {
        LabCmd::Up {
            topology,
            generate,
            datastore,
            dataplane,
            workers,
            ipip_mode,
            vxlan_mode,
            nat_outgoing,
            metrics,
            dual_stack,
            no_pod_offload,
            no_gro,
            no_udp_gso,
            no_transit_filter,
            worker_nice,
            json,
        } => {
            let exe = std::env::current_exe().context("finding the router binary")?;
            let dataplane = match dataplane {
                Dataplane::Afpacket => DataplaneMode::Afpacket,
                Dataplane::Tun => DataplaneMode::Tun,
            };
            let mode = |m: IpipModeArg| match m {
                IpipModeArg::CrossSubnet => IpipMode::CrossSubnet,
                IpipModeArg::Always => IpipMode::Always,
                IpipModeArg::Never => IpipMode::Never,
            };
            let (ipip_mode, vxlan_mode) = (ipip_mode.map(mode), vxlan_mode.map(mode));
            let pod_offload = !no_pod_offload;
            let opts = UpOptions {
                topology,
                generated: generate.generated(),
                datastore: datastore == DatastoreArg::Etcd,
                dataplane,
                workers,
                ipip_mode,
                vxlan_mode,
                nat_outgoing,
                metrics,
                pod_offload,
                gro: !no_gro,
                udp_gso: !no_udp_gso,
                transit_filter: !no_transit_filter,
                worker_nice,
                dual_stack,
                exe,
            };
            let st = lab::up(lab, &opts)?;
            if json {
                nodeapi::outln!("{}", serde_json::to_string_pretty(&st)?);
                return Ok(0);
            }
            let flag = if lab.name == "seed" { String::new() } else { format!(" --lab {}", lab.name) };
            nodeapi::outln!(
                "lab {:?} is up (topology: {}, data plane: {}, ipipMode: {}, vxlanMode: {}, natOutgoing: {}{})",
                st.name,
                st.topology,
                st.dataplane,
                st.ipip_mode,
                st.vxlan_mode,
                st.nat_outgoing,
                if st.nat_outgoing_v6 { ", IPv6 natOutgoing: true" } else { "" }
            );
            for h in st.hosts.iter().filter(|h| h.role == Role::Node) {
                let pods: Vec<String> = st
                    .hosts
                    .iter()
                    .filter(|p| p.role == Role::Pod && p.parent.as_deref() == Some(&h.name))
                    .map(|p| format!("{} {}", p.name, p.addresses.join(",")))
                    .collect();
                nodeapi::outln!("  {:<8} {:<20} pods: {}", h.name, h.addresses.join(","), pods.join(", "));
            }
            if let (Some(e), DataplaneMode::Afpacket) = (lab::tun_closed(), opts.dataplane) {
                nodeapi::outln!(
                    "note: /dev/net/tun is not open to this user ({e}): the nodes make no tunl0 or vxlan.calico, so a node's own processes cannot reach pods behind a tunnel (pods can)"
                );
            }
            // A ping from the first pod to the first pod of another node, whatever the topology.
            let pods: Vec<&lab::state::Host> = st.hosts.iter().filter(|h| h.role == Role::Pod).collect();
            nodeapi::outln!("try:");
            if let Some(from) = pods.first() {
                if let Some(to) = pods.iter().find(|p| p.parent != from.parent) {
                    let addr = to.ips().next().map(|a| a.to_string()).unwrap_or_default();
                    nodeapi::outln!("  router lab exec{flag} {} -- ping -c 3 {addr}", from.name);
                }
            }
            if let Some(node) = st.hosts.iter().find(|h| h.role == Role::Node) {
                nodeapi::outln!("  router routes{flag} --node {}", node.name);
            }
            nodeapi::outln!("  router lab down{flag}");
            Ok(0)
        }
        LabCmd::Down { json } => {
            let r = lab::down(lab)?;
            if json {
                let v = serde_json::json!({"lab": lab.name, "was_up": r.existed, "namespaces_removed": r.namespaces, "processes_stopped": r.processes});
                nodeapi::outln!("{v}");
            } else if r.existed {
                let s = |n: usize| if n == 1 { "" } else { "s" };
                nodeapi::outln!(
                    "lab {:?} is down: removed {} namespace{}, stopped {} process{}",
                    lab.name,
                    r.namespaces,
                    s(r.namespaces),
                    r.processes,
                    if r.processes == 1 { "" } else { "es" }
                );
            } else {
                nodeapi::outln!("lab {:?} is not up; nothing to do", lab.name);
            }
            Ok(0)
        }
        LabCmd::Exec { host, cmd } => lab::exec(lab, &host, &cmd),
        LabCmd::Restart { node } => {
            let exe = std::env::current_exe().context("finding the router binary")?;
            match lab::restart(lab, &node, &exe)? {
                lab::Restarted::Graceful { old, new, gap } => nodeapi::outln!(
                    "{node} restarted gracefully: pid {old} -> {new}, answering after {} ms",
                    gap.as_millis()
                ),
                lab::Restarted::Datastore { old: Some(old), new, took } => nodeapi::outln!(
                    "etcd restarted: pid {old} -> {new}, answering after {} ms; the nodes follow it again",
                    took.as_millis()
                ),
                lab::Restarted::Datastore { old: None, new, took } => nodeapi::outln!(
                    "etcd was not running: started again, pid {new}, answering after {} ms; the nodes follow it again",
                    took.as_millis()
                ),
                lab::Restarted::Started { old, new, took, log } => nodeapi::outln!(
                    "{node} was not running (pid {old} had exited; its log: {}): started again, \
                     pid {new}, answering after {} ms",
                    log.display(),
                    took.as_millis()
                ),
            }
            Ok(0)
        }
        LabCmd::Tour { scale } => {
            let exe = std::env::current_exe().context("finding the router binary")?;
            match scale {
                Some(n) => lab::tour::scale(lab, &exe, n).map(|_| 0),
                None => {
                    // One command for the story: with no lab up, the tour brings up the seed lab
                    // (as a plain `lab up` would) and leaves it up to explore.
                    if lab.state()?.is_none() {
                        let flag = if lab.name == "seed" { String::new() } else { format!(" --lab {}", lab.name) };
                        nodeapi::outln!(
                            "no lab {:?} is up: bringing up the seed lab for the tour (it stays up; \
                             `router lab down{flag}` removes it)\n",
                            lab.name
                        );
                        let Cmd::Lab { cmd: up, .. } = Cli::parse_from(["router", "lab", "up"]).cmd else {
                            unreachable!("`router lab up` parses as a lab command")
                        };
                        run_lab(up, lab)?;
                        nodeapi::outln!();
                    }
                    lab::tour::run(lab, &exe).map(|_| 0)
                }
            }
        }
        LabCmd::Topology { generate } => {
            let Some(g) = generate.generated() else {
                bail!("say how many nodes: `router lab topology --nodes N [--subnets S] [--pods-per-node P] [--route-reflectors K]`");
            };
            nodeapi::out!("{}", g.text()?);
            Ok(0)
        }
        LabCmd::Resources { topology, dual_stack } => {
            let topo = match &topology {
                Some(p) => lab::topology::Topology::load_with(p, dual_stack)?,
                None => lab::topology::Topology::parse_with(
                    std::path::Path::new("seed.toml (built in)"),
                    lab::topology::SEED,
                    dual_stack,
                )?,
            };
            let all = lab::resources::from_topology(&topo);
            nodeapi::out!("{}", datastore::resources::to_yaml(&all.resources));
            for l in all.left_out {
                eprintln!("note: not printed: {l}");
            }
            for (key, _) in all.secrets {
                let whose = if key == lab::resources::MESH_KEY {
                    "the mesh (nodeMeshPassword)".to_string()
                } else {
                    format!("bgppeers/{key}")
                };
                eprintln!(
                    "note: the password of {whose} is not printed: on each node, write it to <secrets dir>/{}/{key} (router node --secrets-dir)",
                    lab::resources::SECRET
                );
            }
            Ok(0)
        }
        LabCmd::Status { json } => {
            let (st, rows) = lab::status(lab)?;
            if json {
                nodeapi::outln!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(0);
            }
            // On etcd the IPPools may have changed since `lab up`: the modes it started with
            // would mislead, so the header says where they are.
            let modes = match &st.etcd {
                Some(e) => format!("datastore etcd at {} (its IPPools set the modes: `router get ippool`)", e.url),
                None => format!(
                    "ipipMode {}, vxlanMode {}, natOutgoing {}{}",
                    st.ipip_mode,
                    st.vxlan_mode,
                    st.nat_outgoing,
                    if st.nat_outgoing_v6 { ", IPv6 natOutgoing true" } else { "" }
                ),
            };
            nodeapi::outln!(
                "lab {:?}: topology {}, data plane {}, {modes}{}",
                st.name,
                st.topology,
                st.dataplane,
                if st.complete { "" } else { " (INCOMPLETE: run `router lab down`)" }
            );
            if let Some(k) = lab::userns::Keeper::load(&lab.dir)?.filter(|k| !k.alive()) {
                nodeapi::outln!(
                    "the lab's keeper (pid {}) is gone, and its namespaces with it: `router lab down` removes the rest",
                    k.pid
                );
            }
            let shown: Vec<_> = rows.iter().filter(|r| r.role != Role::Switch).collect();
            // Columns as wide as what they hold: 100-node labs, dual-stack addresses and
            // podman's generated container names are all longer than a fixed guess. Addresses
            // past 44 columns (the underlay's, one or two per subnet) go on lines of their own.
            let width = |f: fn(&lab::HostStatus) -> usize, head: &str| {
                shown.iter().map(|r| f(r)).chain([head.len()]).max().unwrap_or(0)
            };
            let wh = width(|r| r.host.len(), "HOST");
            let wn = width(|r| r.namespace.len(), "NAMESPACE");
            let wa = width(|r| r.addresses.join(",").len(), "ADDRESS").min(44);
            nodeapi::outln!("{:<wh$} {:<9} {:<wn$} {:<wa$} STATE", "HOST", "ROLE", "NAMESPACE", "ADDRESS");
            for r in shown {
                let state = match (&r.daemon, r.namespace_present) {
                    (_, false) if r.role == Role::Container => "down (its interface is gone)".to_string(),
                    (_, false) => "namespace missing".to_string(),
                    (Some(d), _) => match r.pid {
                        Some(pid) => format!("{d} (pid {pid})"),
                        None => d.clone(),
                    },
                    (None, _) => match (&r.role, &r.parent) {
                        (Role::Pod | Role::Container, Some(n)) => {
                            format!("on {n} via {}", r.interface.as_deref().unwrap_or("?"))
                        }
                        _ => "up".to_string(),
                    },
                };
                let lines = address_lines(&r.addresses, wa);
                nodeapi::outln!(
                    "{:<wh$} {:<9} {:<wn$} {:<wa$} {}",
                    r.host,
                    format!("{:?}", r.role).to_lowercase(),
                    r.namespace,
                    lines.first().map(String::as_str).unwrap_or(""),
                    state
                );
                for more in lines.iter().skip(1) {
                    nodeapi::outln!("{:<wh$} {:<9} {:<wn$} {more}", "", "", "");
                }
            }
            Ok(0)
        }
    }
}

/// A host's addresses joined with commas into lines of at most `width` columns (an address
/// longer than that gets a line of its own).
fn address_lines(addresses: &[String], width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for a in addresses {
        match lines.last_mut() {
            Some(l) if l.len() + 1 + a.len() <= width => {
                l.push(',');
                l.push_str(a);
            }
            _ => lines.push(a.clone()),
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::address_lines;

    #[test]
    fn long_address_lists_wrap() {
        let a: Vec<String> =
            ["192.168.100.1/24", "fd00:192:168:100::1/64", "192.168.200.1/24", "fd00:192:168:200::1/64"]
                .map(String::from)
                .to_vec();
        assert_eq!(
            address_lines(&a, 44),
            ["192.168.100.1/24,fd00:192:168:100::1/64", "192.168.200.1/24,fd00:192:168:200::1/64"]
        );
        assert_eq!(address_lines(&a[..2], 44), ["192.168.100.1/24,fd00:192:168:100::1/64"]);
        assert_eq!(address_lines(&a[1..2], 10), ["fd00:192:168:100::1/64"]);
        assert!(address_lines(&[], 44).is_empty());
    }
}
