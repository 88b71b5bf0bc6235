//! `router lab tour`: the seed's story, claim by claim, each shown live in the lab with the
//! command that shows it. Text stays short; the output is real.

use super::state::{Role, State};
use super::Lab;
use anyhow::{bail, Context as _};
use std::path::Path;
use std::process::Command;

struct Tour<'a> {
    lab: &'a Lab,
    exe: &'a Path,
    step: usize,
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}\n")).collect()
}

impl Tour<'_> {
    fn title(&mut self, t: &str, claim: &str) {
        self.step += 1;
        nodeapi::outln!("\n── {}. {t}\n{claim}", self.step);
    }

    /// Runs `router args...` in the lab and shows the command and its output.
    fn router(&self, args: &[&str]) -> anyhow::Result<String> {
        self.router_in(&self.lab.name, args)
    }

    /// [`Tour::router`] in the lab named `lab` (the tour's own, or its VXLAN twin).
    fn router_in(&self, lab: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut shown = vec!["router"];
        shown.extend_from_slice(args);
        nodeapi::outln!("  $ {}", shown.join(" "));
        let out = self.cli(lab, args).output().with_context(|| format!("running {}", shown.join(" ")))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        nodeapi::out!("{}", indent(text.trim_end()));
        Ok(text)
    }

    /// `router args...` in the lab named `lab`, not run yet.
    fn cli(&self, lab: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.exe);
        c.args(args).env("ROUTER_LAB", lab).env("ROUTER_LAB_DIR", self.lab.dir.parent().unwrap_or(Path::new("/")));
        c
    }

    /// Each node's sessions that are up, asked of every node of the lab named `lab` at once
    /// (`router status --json`) without showing anything: what the tour's notes count.
    fn sessions_up(&self, lab: &str) -> anyhow::Result<Vec<usize>> {
        let out = self.cli(lab, &["status", "--json"]).output().context("running router status --json")?;
        let nodes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("router status --json: {}", String::from_utf8_lossy(&out.stderr).trim()))?;
        Ok(nodes
            .iter()
            .map(|n| n["peers"].as_array().map_or(0, |ps| ps.iter().filter(|p| p["state"] == "up").count()))
            .collect())
    }

    /// `router lab exec HOST -- cmd...`; fails the tour when `must_succeed` and it fails.
    fn exec(&self, host: &str, cmd: &[&str], must_succeed: bool) -> anyhow::Result<String> {
        self.exec_in(&self.lab.name, host, cmd, must_succeed)
    }

    /// [`Tour::exec`] in the lab named `lab`, which the command line then names.
    fn exec_in(&self, lab: &str, host: &str, cmd: &[&str], must_succeed: bool) -> anyhow::Result<String> {
        let named = format!("--lab={lab}");
        let mut args = vec!["lab", "exec"];
        if lab != self.lab.name {
            args.push(&named);
        }
        args.extend_from_slice(&[host, "--"]);
        args.extend_from_slice(cmd);
        let mut shown = vec!["router"];
        shown.extend_from_slice(&args);
        nodeapi::outln!("  $ {}", shown.join(" "));
        let out = Command::new(self.exe)
            .args(&args)
            .env("ROUTER_LAB", lab)
            .env("ROUTER_LAB_DIR", self.lab.dir.parent().unwrap_or(Path::new("/")))
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
        nodeapi::out!("{}", indent(text.trim_end()));
        if must_succeed && !out.status.success() {
            bail!("`{}` failed", shown.join(" "));
        }
        Ok(text)
    }

    fn note(&self, s: &str) {
        nodeapi::outln!("  → {s}");
    }

    /// Pings pod-c1 (at `to`) from pod-a1 of lab `lab` while node-a's router captures its
    /// uplink, and shows `fields` of what it sent and received, decoded by tshark. False if
    /// there is no tshark to decode with (said so).
    fn capture_ping(&self, lab: &str, to: &str, fields: &[&str]) -> anyhow::Result<bool> {
        let dir = self.lab.dir.parent().unwrap_or(Path::new("/"));
        let pcap = self.lab.dir.join(format!("tour-{lab}.pcap"));
        let pcap_s = pcap.to_string_lossy().into_owned();
        // The first ping resolves ARP, so that the captured one goes straight through.
        self.exec_in(lab, "pod-a1", &["ping", "-c", "1", "-W", "2", to], true)?;
        // Shown as a user would type it: the pings to and from pod-c1, in the background.
        let named = format!("--lab={lab}");
        let mut args = vec!["capture"];
        if lab != self.lab.name {
            args.push(&named);
        }
        args.extend(["--node", "node-a", "--interface", "eth0", "--host", to, "-c", "2", "-w", &pcap_s]);
        nodeapi::outln!("  $ router {} &", args.join(" "));
        let cap = Command::new(self.exe)
            .args(&args)
            .env("ROUTER_LAB", lab)
            .env("ROUTER_LAB_DIR", dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the capture")?;
        std::thread::sleep(std::time::Duration::from_millis(400));
        self.exec_in(lab, "pod-a1", &["ping", "-c", "1", "-W", "2", to], true)?;
        let _ = cap.wait_with_output();
        let mut args = vec!["-r", pcap_s.as_str(), "-T", "fields"];
        for f in fields {
            args.extend_from_slice(&["-e", f]);
        }
        nodeapi::outln!("  $ tshark {}", args.join(" "));
        let decoded = match Command::new("tshark").args(&args).output() {
            Ok(o) if o.status.success() => {
                nodeapi::out!("{}", indent(String::from_utf8_lossy(&o.stdout).trim_end()));
                true
            }
            _ => {
                self.note(&format!("(install tshark to decode {pcap_s}; Wireshark opens it too)"));
                false
            }
        };
        let _ = std::fs::remove_file(&pcap);
        Ok(decoded)
    }
}

fn addr(lab: &Lab, st: &State, host: &str) -> anyhow::Result<String> {
    st.host(host).and_then(|h| h.ips().next()).map(|a| a.to_string()).with_context(|| {
        format!(
            "lab {:?} has no {host}: the tour tells the seed topology's story, host by host; \
                 `router lab tour --lab tour` brings up a seed lab of its own beside this one",
            lab.name
        )
    })
}

pub fn run(lab: &Lab, exe: &Path) -> anyhow::Result<()> {
    super::enter(lab)?;
    let Some(st) = lab.state()? else {
        bail!("lab {:?} is not up; start it with `router lab up` (the tour runs in the seed lab)", lab.name);
    };
    // The seed's shape first: the advice below names its hosts.
    let (a1, b1, c1) = (addr(lab, &st, "pod-a1")?, addr(lab, &st, "pod-b1")?, addr(lab, &st, "pod-c1")?);
    let never = nodeapi::config::IpipMode::Never;
    if st.vxlan_mode != never {
        bail!(
            "lab {:?} runs with vxlanMode {}, and the tour tells the IPIP story; see VXLAN with `router trace \
             pod-a1 pod-c1` and `router lab exec underlay -- tshark -i eth0 udp port 4789`, or bring the lab up \
             with the default mode for the tour: `router lab down && router lab up`",
            lab.name,
            st.vxlan_mode
        );
    }
    if st.ipip_mode == never {
        bail!(
            "lab {:?} runs with ipipMode Never, so node-c's pods are out of reach and the tour's IPIP steps \
             cannot run; bring it up with the default mode: `router lab down && router lab up`",
            lab.name
        );
    }
    let cali = st.host("pod-a1").and_then(|h| h.interface.clone()).context("pod-a1 has no cali interface")?;
    let nodes = st.hosts.iter().filter(|h| h.role == Role::Node).count();
    let mut t = Tour { lab, exe, step: 0 };
    nodeapi::outln!("A tour of the seed lab: how pod traffic travels in a Calico-style network, shown live.");

    t.title(
        "A pod's only way out is a gateway that does not exist",
        "pod-a1 has one interface, eth0, with a /32, and routes everything via 169.254.1.1.",
    );
    t.exec("pod-a1", &["ip", "-4", "addr", "show", "eth0"], true)?;
    t.exec("pod-a1", &["ip", "route"], true)?;

    t.title(
        "The node answers ARP for 169.254.1.1 (proxy ARP)",
        "Whatever the pod sends lands on its node: the MAC it learns for the gateway is the node's end of its veth.",
    );
    t.exec("pod-a1", &["ping", "-c", "1", "-W", "2", &b1], true)?;
    let neigh = t.exec("pod-a1", &["ip", "neigh", "show", "169.254.1.1"], true)?;
    let link = t.exec("node-a", &["ip", "link", "show", &cali], true)?;
    let learned = neigh.split_whitespace().skip_while(|w| *w != "lladdr").nth(1).unwrap_or("");
    if !learned.is_empty() && link.contains(learned) {
        t.note(&format!("{learned} is {cali} on node-a: the router answered for the gateway."));
    }

    t.title("A veth pair: the pod's eth0 and the node's cali… interface", "Calico names the host end cali + 11 hex digits of a hash of the pod; the two ends point at each other's index.");
    let iflink = t.exec("pod-a1", &["cat", "/sys/class/net/eth0/iflink"], true)?;
    let ifindex = t.exec("node-a", &["cat", &format!("/sys/class/net/{cali}/ifindex")], true)?;
    if iflink.trim() == ifindex.trim() {
        t.note(&format!("pod-a1's eth0 is paired with interface {} on node-a: {cali}.", ifindex.trim()));
    }

    t.title("The node's routes", "UH: a host route to each local pod; UG: another node's /26 block via that node; ! the node's own block (blackhole for unused addresses). Encap says whether the route goes through the IPIP tunnel, and why.");
    t.router(&["routes", "--node", "node-a"])?;

    t.title("Where pod addresses come from: one block per node", "Calico's IPAM cuts the pool into blocks (/26: 64 addresses) and gives each node its own; the node hands its pods addresses from it (62 here: not a block's first and last). So one route per node travels over BGP, not one per pod. A node whose blocks are full borrows an address from another node's block and announces that /32 (LENT counts them).");
    t.router(&["ipam", "show", "--show-blocks"])?;

    t.title("The nodes tell each other their blocks over BGP", &format!("A full mesh of N nodes needs N·(N-1)/2 sessions: {} here. With route reflectors every node peers only with the reflectors (lab/topologies/seed-rr.toml: 2 sessions).", nodes * (nodes - 1) / 2));
    t.router(&["status", "--node", "node-a"])?;
    t.router(&["status"])?;
    let ends: usize = t.sessions_up(&t.lab.name)?.iter().sum();
    t.note(&format!("each session has two ends: {ends} counted over the nodes, {} sessions.", ends / 2));

    t.title(
        "node-a and node-b share a subnet: plain routing",
        "The packet leaves node-a unchanged but for its TTL, addressed at L2 to node-b.",
    );
    t.router(&["trace", "pod-a1", "pod-b1"])?;

    if st.dataplane == nodeapi::config::DataplaneMode::Afpacket {
        t.title(
            "The router forwards, not the node's kernel",
            "ip_forward is 0 on the nodes: the router reads every frame from an AF_PACKET socket and forwards it itself.",
        );
        t.exec("node-b", &["cat", "/proc/sys/net/ipv4/ip_forward"], true)?;
        let filter = t.exec("node-b", &["tc", "filter", "show", "dev", "eth0", "ingress"], true)?;
        if filter.contains("bpf") {
            t.note("After the router's socket has its copy, this BPF program drops the kernel's own copy of what the router forwards: node-b's IP stack never sees pod-a1's packets pass.");
        } else {
            t.note("No transit filter in this lab (--no-transit-filter): node-b's kernel also gets each frame, fails to route it and drops it.");
        }
    }

    t.title("node-c is behind a router that knows no pod addresses: IPIP", "node-a wraps the pod's packet in an outer IPv4 header, node address to node address (protocol 4); node-c unwraps it.");
    let fields = ["ip.src", "ip.dst", "ip.proto", "ip.len"];
    if t.capture_ping(&lab.name, &c1, &fields)? {
        t.note("two IPv4 headers per packet: outer node → node with protocol 4, inner pod → pod with protocol 1 (ICMP); the outer packet is 20 bytes longer.");
    }
    t.router(&["trace", "pod-a1", "pod-c1"])?;

    t.title("The node's own traffic into the tunnel: tunl0", "Calico gives each node a tunl0, and the node's routes to blocks behind the tunnel point into it. With no ipip module in the kernel, tunl0 here is a TUN device the router owns: what the kernel routes there, the router wraps.");
    if t.exec("node-c", &["ip", "route", "show", "dev", "tunl0"], false)?.contains("Cannot find device") {
        // A lab without root where /dev/net/tun is closed to the user: the node has no tunl0.
        t.note("node-c has no tunl0: /dev/net/tun is not open to this user (its log says so), so here the node's own traffic cannot reach pods behind the tunnel; the pods' traffic, above, does not need it.");
    } else {
        t.exec("node-c", &["ping", "-c", "1", "-W", "2", &a1], true)?;
    }

    t.title("What happens to a 1500-byte packet", "The outer header costs 20 bytes, so pods get MTU 1480. With DF set, a 1500-byte packet is refused at once; without DF it is fragmented and arrives.");
    t.exec("pod-a1", &["cat", "/sys/class/net/eth0/mtu"], true)?;
    t.exec("pod-a1", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", &c1], false)?;
    t.exec("pod-a1", &["ping", "-c", "1", "-W", "2", "-s", "1472", &c1], true)?;

    outside_the_pools(&mut t, &st, &a1)?;
    vxlan_beside(&mut t, &st, &c1)?;
    ipv6_beside(&mut t, &st)?;

    nodeapi::outln!("\nThat is the whole story. Try `router lab exec pod-c1 -- ping {b1}`, `router trace`, `router capture`,\nor `router lab down` when you are done.");
    Ok(())
}

/// A pod and an address outside every pool: the underlay router, which has no way back
/// unless the node masquerades (`natOutgoing`).
fn outside_the_pools(t: &mut Tour<'_>, st: &State, a1: &str) -> anyhow::Result<()> {
    let far = st
        .host("underlay")
        .and_then(|h| h.ips().filter(|a| a.is_ipv4()).last())
        .context("the tour needs the seed topology's underlay router")?
        .to_string();
    t.title(
        "Outside the pools: the underlay router knows no pod",
        "A pod's packet to an address outside every pool reaches it, but the answer has no way back: the underlay router has no route to the pods. Calico's natOutgoing on the pool has the node put its own address on what its pods send outside the pools, and take the answers back to them.",
    );
    let out = t.exec("pod-a1", &["ping", "-c", "1", "-W", "1", &far], false)?;
    if out.contains(" 0% packet loss") {
        t.note(&format!("this lab masquerades (natOutgoing): {far} answered node-a's address, and node-a took the answer back to pod-a1."));
    } else {
        t.exec("underlay", &["ip", "route", "get", a1], false)?;
        t.note("no answer: the underlay router cannot reach the pod. `router lab up --nat-outgoing` sets natOutgoing on the pool, and the same ping is answered.");
    }
    Ok(())
}

/// IPv6 in the same network: in this lab when it is dual stack, else in a dual-stack twin.
fn ipv6_beside(t: &mut Tour<'_>, st: &State) -> anyhow::Result<()> {
    let dual = st.host("pod-c1").is_some_and(|h| h.addresses.iter().any(|a| a.contains(':')));
    let twin = if dual { t.lab.name.clone() } else { format!("{}-v6", t.lab.name) };
    let named = format!("--lab={twin}");
    // The seed's addresses, dual stack (the tour runs in the seed lab).
    let seed = crate::topology::Topology::parse_with(Path::new("seed.toml"), crate::topology::SEED, true)?;
    let c1 = seed
        .node("node-c")
        .and_then(|n| n.pods.first())
        .and_then(|p| p.address_v6)
        .context("the seed has no pod-c1")?
        .to_string();
    t.title(
        "IPv6: the same pods, no tunnel",
        &format!(
            "With --dual-stack every pod also gets a /128 and a default route via fe80::ecee:eeff:feee:eeee, Calico's IPv6 gateway, answered by the router (proxy NDP). Calico never wraps IPv6 in IPIP: node-c's IPv6 block is routed through the underlay router, which knows the pods' IPv6 routes (in a data centre, the top-of-rack routers learn them over BGP).{}",
            if dual { "" } else { " A dual-stack twin of this lab, beside it:" }
        ),
    );
    if !dual {
        t.router_in(&twin, &["lab", "up", &named, &format!("--dataplane={}", st.dataplane), "--dual-stack"])?;
    }
    let shown = (|| -> anyhow::Result<()> {
        t.exec_in(&twin, "pod-a1", &["ip", "-6", "route"], true)?;
        t.exec_in(&twin, "pod-a1", &["ping", "-6", "-c", "1", "-W", "2", &c1], true)?;
        t.router_in(&twin, &["routes", &named, "--node", "node-a", "--lookup", &c1])?;
        t.note("no encapsulation: the next hop is the underlay router, and BGP carried the block on the same session as the IPv4 ones.");
        t.router_in(&twin, &["trace", &named, "pod-a1", "pod-c1", "-6"])?;
        Ok(())
    })();
    if !dual {
        t.router_in(&twin, &["lab", "down", &named])?;
    }
    shown
}

/// The same ping through Calico's other tunnel: a twin of the lab in VXLAN, side by side.
fn vxlan_beside(t: &mut Tour<'_>, st: &State, c1: &str) -> anyhow::Result<()> {
    let twin = format!("{}-vxlan", t.lab.name);
    let (named, dataplane) = (format!("--lab={twin}"), format!("--dataplane={}", st.dataplane));
    t.title(
        "IPIP or VXLAN: the same ping, 20 bytes against 50",
        "Calico's other tunnel wraps the pod's packet in UDP to port 4789, an 8-byte VXLAN header (VNI 4096) and an inner Ethernet frame between the nodes' VTEP MACs: 50 bytes where IPIP takes 20, so pods get MTU 1450, not 1480. In exchange it crosses fabrics that drop IP protocol 4, as most clouds do. A twin of this lab in VXLAN, beside it:",
    );
    t.router_in(&twin, &["lab", "up", &named, &dataplane, "--vxlan-mode", "cross-subnet"])?;
    let shown = (|| -> anyhow::Result<()> {
        let fields = ["ip.src", "ip.dst", "ip.proto", "ip.len", "udp.dstport", "vxlan.vni"];
        if t.capture_ping(&twin, c1, &fields)? {
            t.note("the outer header is now UDP (protocol 17) to port 4789 with VNI 4096, and the same 84-byte ping makes a 134-byte outer packet: 50 bytes more, where IPIP added 20.");
        }
        t.exec_in(&twin, "pod-a1", &["cat", "/sys/class/net/eth0/mtu"], true)?;
        // 1480 bytes of IPv4 with DF: fits IPIP's tunnel, not VXLAN's.
        t.exec_in(&twin, "pod-a1", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1452", c1], false)?;
        t.exec_in(&twin, "pod-a1", &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", c1], true)?;
        t.note("a 1480-byte packet that IPIP carries whole is refused here with mtu 1450; 1450 bytes pass.");
        t.router_in(&twin, &["trace", &named, "pod-a1", "pod-c1"])?;
        Ok(())
    })();
    t.router_in(&twin, &["lab", "down", &named])?;
    shown
}

/// `router lab tour --scale N`: the lesson of BGP at scale, shown with two generated labs of
/// N nodes side by side: a full mesh (N·(N−1)/2 sessions) and two route reflectors (every
/// other node peers with them only).
pub fn scale(lab: &Lab, exe: &Path, n: usize) -> anyhow::Result<()> {
    anyhow::ensure!((3..=200).contains(&n), "--scale N: between 3 and 200 nodes");
    let mut t = Tour { lab, exe, step: 0 };
    nodeapi::outln!("How BGP mode scales: a full mesh against route reflectors, {n} nodes each, shown live.");
    let mut rows = Vec::new();
    for (kind, reflectors) in [("mesh", 0), ("rr", 2)] {
        let name = format!("{}-{kind}", lab.name);
        let named = format!("--lab={name}");
        let (nodes, k) = (n.to_string(), reflectors.to_string());
        let up = vec!["lab", "up", &named, "--nodes", &nodes, "--route-reflectors", &k];
        // The layout `lab up` builds from those arguments: the sessions the text promises.
        let g = crate::topology::Generated { nodes: n, subnets: 2, pods_per_node: 1, route_reflectors: reflectors };
        let title = match reflectors {
            0 => {
                t.title(
                    "A full mesh",
                    &format!("Every node peers with every other: {n}·{}/2 = {} sessions, {} per node. `lab up` returns once every node has every block.", n - 1, g.sessions(), n - 1),
                );
                "full mesh"
            }
            _ => {
                t.title(
                    "Two route reflectors",
                    &format!("The mesh is off; node-1 and node-2 reflect (one cluster ID) and every other node peers with them only: 1 + 2·{} = {} sessions, 2 per node. Reflectors pass each block on, so every node still learns every block.", n - 2, g.sessions()),
                );
                "2 route reflectors"
            }
        };
        let started = std::time::Instant::now();
        let shown = (|| -> anyhow::Result<(usize, usize)> {
            t.router_in(&name, &up)?;
            let secs = started.elapsed().as_secs_f64();
            let last = format!("node-{n}");
            t.router_in(&name, &["routes", &named, "--node", &last, "--lookup", "10.244.0.1"])?;
            // Sessions: every node's established peers, each session seen from both ends.
            let per_node = t.sessions_up(&name)?;
            let total = per_node.iter().sum::<usize>() / 2;
            let most = per_node.iter().copied().max().unwrap_or(0);
            t.note(&format!("{title}: {total} sessions established (the busiest node holds {most}); up and converged in {secs:.1} s."));
            rows.push((title, total, most, secs));
            Ok((total, most))
        })();
        t.router_in(&name, &["lab", "down", &named])?;
        shown?;
    }
    t.title("Side by side", "The mesh grows with the square of the cluster, the reflectors linearly; Calico's documentation suggests reflectors from about a hundred nodes.");
    nodeapi::outln!("    {:<20} {:>9} {:>14} {:>12}", "layout", "sessions", "busiest node", "converged");
    for (title, total, most, secs) in &rows {
        nodeapi::outln!("    {title:<20} {total:>9} {most:>14} {secs:>10.1} s");
    }
    nodeapi::outln!("\nTry a bigger one: `router lab tour --scale 60`, or `router lab up --nodes 100`.");
    Ok(())
}
