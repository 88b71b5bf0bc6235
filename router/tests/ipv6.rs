//! Dual stack end to end: the seed lab with `--dual-stack`, every pod pinging every other over
//! IPv6 (same node, same subnet, across the underlay), TCP over IPv6, the ICMPv6 errors the
//! router sends, and the IPv6 routes learned over BGP. These build namespaces (root).

mod support;

use std::process::Stdio;
use support::*;

const PODS6: [(&str, &str); 4] = [
    ("pod-a1", "fd00:10:244::1"),
    ("pod-a2", "fd00:10:244::2"),
    ("pod-b1", "fd00:10:244::41"),
    ("pod-c1", "fd00:10:244::81"),
];
const NODE_A6: &str = "fd00:192:168:100::100";

fn lookup(lab: &TestLab, node: &str, addr: &str) -> serde_json::Value {
    lab.json(&["routes", "--node", node, "--lookup", addr, "--json"])
}

fn every_pod_pair(lab: &TestLab) {
    for (from, _) in PODS6 {
        for (to, addr) in PODS6.iter().filter(|(to, _)| *to != from) {
            let (ok, out) = ping(lab, from, &["-6", "-c", "2", "-i", "0.2", "-W", "2", addr]);
            assert!(ok, "{from} -> {to} ({addr}): {out}");
            assert_no_loss(&out);
        }
    }
}

/// IPv6 packets a host's own stack took in that were not for it: with forwarding off, each
/// lands in `Ip6InAddrErrors` (or `Ip6InNoRoutes`) of its /proc/net/snmp6. Unlike all it
/// takes in, that does not grow with the neighbour probes a loaded machine lets fall due.
fn ip6_not_for_me(lab: &TestLab, host: &str) -> u64 {
    let snmp = text(&lab.exec(host, &["cat", "/proc/net/snmp6"]).stdout);
    ["Ip6InAddrErrors", "Ip6InNoRoutes"]
        .iter()
        .map(|c| {
            let line = snmp
                .lines()
                .find(|l| l.split_whitespace().next() == Some(c))
                .unwrap_or_else(|| panic!("no {c} in\n{snmp}"));
            line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).expect("a count")
        })
        .sum()
}

/// The transit filter holds for IPv6 too: the IPv6 the router forwards does not also climb
/// the nodes' own IPv6 stacks (node-a's from the pod and the replies from the uplink,
/// node-b's both ways), while the nodes' own IPv6 addresses still reach their kernels.
#[test]
fn the_nodes_kernels_leave_the_ipv6_the_router_forwards_alone() {
    let lab = TestLab::up(&["--dual-stack"]);
    let pod_b1 = "fd00:10:244::41";
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "2", "-i", "0.2", "-W", "2", pod_b1]);
    assert!(ok, "{out}");
    let (a0, b0) = (ip6_not_for_me(&lab, "node-a"), ip6_not_for_me(&lab, "node-b"));
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-q", "-c", "20", "-i", "0.02", "-W", "2", pod_b1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    // 40 frames crossed each node (without the filter each kernel counts all 40).
    let (a, b) = (ip6_not_for_me(&lab, "node-a") - a0, ip6_not_for_me(&lab, "node-b") - b0);
    assert!(a == 0 && b == 0, "the nodes' kernels took in {a} and {b} IPv6 packets not for them");
    // node-b's own address, from a pod behind node-a: through both routers to node-b's kernel.
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:192:168:100::101"]);
    assert!(ok, "{out}");
}

/// A planned restart of a dual-stack node (RFC 4724 for both families): the new daemon starts
/// on the saved IPv6 routes as well as the IPv4 ones, the other nodes keep its IPv6 block
/// throughout, and IPv6 between the other nodes' pods loses nothing.
#[test]
fn a_planned_restart_keeps_the_ipv6_routes_too() {
    let lab = TestLab::up(&["--dual-stack"]);
    let old_pid = lab.daemon_pid("node-b");
    let (b_block, b_pod) = ("fd00:10:244::40/122", "fd00:10:244::41");
    let mut others = lab.command(&[
        "lab",
        "exec",
        "pod-a1",
        "--",
        "ping",
        "-6",
        "-c",
        "100",
        "-i",
        "0.05",
        "-W",
        "1",
        "fd00:10:244::81",
    ]);
    let others = others.stdout(Stdio::piped()).spawn().expect("ping");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let mut restart = lab.command(&["lab", "restart", "node-b"]);
    let restart = std::thread::spawn(move || restart.output().expect("router runs"));
    while !restart.is_finished() {
        for node in ["node-a", "node-c"] {
            let r = lookup(&lab, node, b_pod);
            assert_eq!(r["prefix"], b_block, "{node} dropped node-b's IPv6 block during the restart: {r}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = restart.join().expect("restart thread");
    assert!(out.status.success(), "lab restart: {}{}", text(&out.stdout), text(&out.stderr));
    assert_ne!(lab.daemon_pid("node-b"), old_pid);
    // The new daemon started on node-a's and node-c's IPv6 blocks, saved by the old one.
    let log = std::fs::read_to_string(lab.dir.join(&lab.name).join("node-b.log")).expect("log");
    let plain: String = strip_ansi(&log);
    let line = plain.lines().find(|l| l.contains("restarting gracefully")).unwrap_or_else(|| panic!("{plain}"));
    assert!(line.contains("routes6=2"), "{line}");
    assert_no_loss(&text(&others.wait_with_output().expect("ping").stdout));
    every_pod_pair(&lab);
}

/// The text of a log without its terminal colours.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn on_the_tun_data_plane_the_kernel_forwards_ipv6_on_the_routes_bgp_taught() {
    let lab = TestLab::up(&["--dual-stack", "--dataplane", "tun"]);
    every_pod_pair(&lab);
    // The routes the node installed (proto 179), the same next hops as afpacket's FIB.
    let routes = text(&lab.exec("node-a", &["ip", "-6", "route", "show", "proto", "179"]).stdout);
    assert!(routes.contains("fd00:10:244::40/122 via fd00:192:168:100::101"), "{routes}");
    assert!(routes.contains("fd00:10:244::80/122 via fd00:192:168:100::1"), "{routes}");
    assert!(routes.contains("blackhole fd00:10:244::/122"), "{routes}");
    // `router status` says which sessions carry IPv6 too, in its table and its JSON.
    let table = text(&lab.router(&["status", "--node", "node-a"]).stdout);
    assert!(table.starts_with("IPv4 and IPv6 BGP status"), "{table}");
    assert_eq!(table.matches("| ipv4,ipv6 ").count(), 2, "{table}");
    let st = lab.json(&["status", "--node", "node-a", "--json"]);
    let peers = st["peers"].as_array().expect("peers");
    assert!(peers.iter().all(|p| p["families"] == serde_json::json!(["ipv4", "ipv6"])), "{st}");
    let c = lookup(&lab, "node-a", "fd00:10:244::81");
    assert_eq!(c["forwarded_by"], "kernel", "{c}");
    // The pods' gateway is the host end's own link-local address (MAC ee:ee:ee:ee:ee:ee).
    let neigh = text(&lab.exec("pod-a1", &["ip", "-6", "neigh", "show", "dev", "eth0"]).stdout);
    assert!(neigh.contains("fe80::ecee:eeff:feee:eeee lladdr ee:ee:ee:ee:ee:ee"), "{neigh}");
    // The router resolves no neighbour here, and says who does.
    let n = text(&lab.router(&["neighbours", "--node", "node-c"]).stdout);
    assert!(n.contains("in the tun data plane the node's kernel resolves them"), "{n}");
    // IPv6 rows are sorted by prefix, as IPv4's are.
    let table = text(&lab.router(&["routes", "--node", "node-c"]).stdout);
    let head = table.split("\n\n").next().unwrap_or_default();
    let rows: Vec<ipnet::Ipv6Net> = head
        .lines()
        .filter(|l| l.starts_with("fd00:"))
        .map(|l| l.split(' ').next().unwrap_or_default().parse().expect("an IPv6 prefix"))
        .collect();
    let mut sorted = rows.clone();
    sorted.sort_by_key(|n| (n.network(), n.prefix_len()));
    assert!(rows.len() >= 6 && rows == sorted, "{table}");
    // A trace the routers cannot see says why, rather than blaming the pod's routes.
    let t = text(&lab.router(&["trace", "pod-a1", "pod-c1", "-6"]).stdout);
    assert!(t.contains("no router saw the probe: in the tun data plane") && t.contains("(all IPv6)"), "{t}");
    // The pod itself still tells whether, and what, came back.
    assert!(t.contains("ms: ICMPv6 echo reply from pod-c1 fd00:10:244::81"), "{t}");
}

#[test]
fn every_pod_reaches_every_other_over_ipv6_and_ipv4_still_works() {
    let lab = TestLab::up(&["--dual-stack"]);
    every_pod_pair(&lab);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", "10.244.3.1"]);
    assert!(ok, "IPv4 beside IPv6: {out}");
    // The pods' gateway is Calico's link-local address, answered by the router (proxy NDP).
    let neigh = text(&lab.exec("pod-a1", &["ip", "-6", "neigh", "show", "dev", "eth0"]).stdout);
    assert!(neigh.contains("fe80::ecee:eeff:feee:eeee") && neigh.contains("router"), "{neigh}");
    // The afpacket node's kernel forwards no IPv6: the router did all of the above.
    let fwd = text(&lab.exec("node-a", &["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout);
    assert_eq!(fwd.trim(), "0");
    // Node B's block is learned over BGP, direct on the shared subnet; node C's, on the other
    // subnet, goes through the underlay router (IPv6 is never tunnelled).
    let b = lookup(&lab, "node-a", "fd00:10:244::41");
    assert_eq!((b["prefix"].as_str(), b["source"].as_str()), (Some("fd00:10:244::40/122"), Some("bgp")), "{b}");
    assert_eq!(b["next_hop"], "fd00:192:168:100::101");
    let c = lookup(&lab, "node-a", "fd00:10:244::81");
    assert_eq!(
        (c["prefix"].as_str(), c["next_hop"].as_str()),
        (Some("fd00:10:244::80/122"), Some("fd00:192:168:100::1"))
    );
    assert_eq!(c["encap"], "none");
    // A pod's name stands for its IPv4 address, and with -6 for its IPv6 one; the text
    // points at the other family.
    let named = lab.json(&["routes", "--node", "node-a", "--lookup", "pod-c1", "-6", "--json"]);
    assert_eq!(named["prefix"], "fd00:10:244::80/122", "{named}");
    let out = text(&lab.router(&["routes", "--node", "node-a", "--lookup", "pod-c1"]).stdout);
    assert!(out.starts_with("10.244.3.1 takes") && out.contains("--lookup pod-c1 -6"), "{out}");
    // The node's neighbours include its IPv6 next hops, found by its own NDP.
    let n = lab.json(&["neighbours", "--node", "node-a", "--json"]);
    let ips: Vec<&str> = n.as_array().into_iter().flatten().filter_map(|e| e["ip"].as_str()).collect();
    assert!(ips.contains(&"fd00:192:168:100::101") && ips.contains(&"fd00:10:244::1"), "{ips:?}");
    assert_eq!(lab.drops("node-a", "ipv6_malformed"), 0);
    let stats = lab.json(&["stats", "--node", "node-a", "--json"]);
    // At least pod-a1 asked; a pod the router solicited first learns the gateway from the
    // solicitation's source link-layer option (RFC 4861 §7.2.3) and need not ask.
    assert!(stats["ndp_replies_sent"].as_u64().unwrap_or(0) >= 1, "proxy NDP: {stats}");
}

#[test]
fn tcp_crosses_every_ipv6_path() {
    let lab = TestLab::up(&["--dual-stack"]);
    for (server, addr) in [("pod-a2", "fd00:10:244::2"), ("pod-b1", "fd00:10:244::41"), ("pod-c1", "fd00:10:244::81")] {
        let out = iperf3(&lab, server, &["-6"], "pod-a1", &["-6", "-c", addr, "-t", "1", "-J"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
        let bytes = v["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 1_000_000, "only {bytes} bytes reached {server}");
    }
}

/// IPv6 neighbours stay resolved while they answer. node-a refreshes its entries every
/// second here (`ROUTER_TEST_NEIGH_REACHABLE`, a minute otherwise) with a solicitation to
/// the neighbour's own address, which Linux answers without the link-layer option: that
/// answer must confirm the entry, or it lapses and is resolved again, and the TCP
/// super-packets that meet the gap are dropped (`gso_failed`).
#[test]
fn ipv6_neighbours_stay_resolved_across_their_refreshes() {
    let lab = TestLab::named();
    let out = lab
        .command(&["lab", "up", "--dual-stack"])
        .env("ROUTER_TEST_NEIGH_REACHABLE", "node-a:1000")
        .output()
        .expect("router runs");
    assert!(out.status.success(), "lab up: {}{}", text(&out.stdout), text(&out.stderr));
    iperf3(&lab, "pod-c1", &["-6"], "pod-a1", &["-6", "-c", "fd00:10:244::81", "-t", "5", "-J"]);
    let stats = lab.json(&["stats", "--node", "node-a", "--json"]);
    assert!(stats["gso_received"].as_u64().unwrap_or(0) > 0, "no super-packet crossed node-a: {stats}");
    for reason in ["gso_failed", "neighbour_failed", "neighbour_queue_full"] {
        assert_eq!(lab.drops("node-a", reason), 0, "{reason}: {stats}");
    }
    let n = text(&lab.router(&["neighbours", "--node", "node-a"]).stdout);
    let underlay = n.lines().find(|l| l.contains("fd00:192:168:100::1 ")).unwrap_or_default().to_string();
    assert!(underlay.ends_with("reachable"), "the underlay router's entry: {n}");
}

#[test]
fn the_router_answers_with_icmpv6_errors() {
    let lab = TestLab::up(&["--dual-stack"]);
    // Hop limit 1: time exceeded, from node-a's IPv6 address.
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", "-t", "1", "fd00:10:244::81"]);
    assert!(!ok && out.contains(&format!("From {NODE_A6}")) && out.contains("Time exceeded"), "{out}");
    // No route: destination unreachable.
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", "fd00:99::1"]);
    assert!(!ok && out.contains("Destination unreachable: No route"), "{out}");
    // Too big for the uplink (the pod's link is made larger than the underlay's 1500):
    // packet too big with the uplink's MTU, never a fragment.
    let out = lab.exec("pod-a1", &["ip", "link", "set", "eth0", "mtu", "9000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host_end = text(&lab.exec("node-a", &["ip", "-o", "link", "show"]).stdout)
        .lines()
        .find(|l| l.contains("link-netns") && l.contains("-pod-a1"))
        .and_then(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or_default().to_string())
        .expect("pod-a1's host end");
    let out = lab.exec("node-a", &["ip", "link", "set", &host_end, "mtu", "9000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", "-s", "2000", "-M", "do", "fd00:10:244::81"]);
    assert!(!ok && out.contains("Packet too big: mtu=1500"), "{out}");
    for reason in ["hop_limit_exceeded", "no_route", "packet_too_big"] {
        assert_eq!(lab.drops("node-a", reason), 1, "{reason}");
    }
    assert_eq!(lab.json(&["stats", "--node", "node-a", "--json"])["fragments_sent"], 0);
}

/// A pod is no router of its node's: a router advertisement it sends (default route, a
/// prefix to autoconfigure from) changes nothing on the node, whose kernel, with IPv6
/// forwarding off, would otherwise take it.
#[test]
fn a_pod_s_router_advertisement_does_not_reroute_its_node() {
    let lab = TestLab::up(&["--dual-stack"]);
    // RFC 4861 §4.2, to all nodes, with a prefix information option (on-link, autonomous).
    let ra = r#"
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
idx = socket.if_nametoindex("eth0")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
ra = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0)
pi = struct.pack("!BBBBIII", 3, 4, 64, 0xc0, 86400, 14400, 0) + socket.inet_pton(socket.AF_INET6, "2001:db8:666::")
for _ in range(3):
    s.sendto(ra + pi, ("ff02::1", 0, 0, idx))
"#;
    let out = lab.exec("pod-a1", &["python3", "-c", ra]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The pod's own packets still get through (the advertisement left through the same veth).
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", "fd00:10:244::41"]);
    assert!(ok, "{out}");
    let routes = text(&lab.exec("node-a", &["ip", "-6", "route", "show"]).stdout);
    assert!(!routes.contains("default") && !routes.contains("2001:db8:666"), "{routes}");
    let addrs = text(&lab.exec("node-a", &["ip", "-6", "addr", "show"]).stdout);
    assert!(!addrs.contains("2001:db8:666"), "{addrs}");
}

#[test]
fn trace_follows_an_ipv6_probe_there_and_back() {
    let lab = TestLab::up(&["--dual-stack"]);
    let out = lab.router(&["trace", "pod-a1", "pod-c1", "-6", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    assert_eq!((t["src"].as_str(), t["dst"].as_str()), (Some("fd00:10:244::1"), Some("fd00:10:244::81")));
    let hops = t["hops"].as_array().expect("hops");
    let at = |node: &str, src: &str| {
        hops.iter().find(|h| h["node"] == node && h["src"] == src).unwrap_or_else(|| panic!("{node} {src}: {t:#}"))
    };
    // Out: node-a routes it to the underlay router (node-c's block is on another subnet),
    // node-c hands it to its pod, hop limit one less at each router.
    let a = at("node-a", "fd00:10:244::1");
    assert_eq!((a["action"].as_str(), a["route"]["next_hop"].as_str()), (Some("forward"), Some("fd00:192:168:100::1")));
    assert_eq!(a["out"][2], 63);
    assert_eq!(at("node-c", "fd00:10:244::1")["action"], "forward");
    // And the echo reply back.
    assert_eq!(at("node-a", "fd00:10:244::81")["action"], "forward");
    // An unrouted destination: the error the node sends, in the trace.
    let out = lab.router(&["trace", "pod-a1", "fd00:99::1", "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).expect("trace JSON");
    let h = &t["hops"][0];
    assert_eq!(h["action"], "icmp_error", "{t:#}");
    assert!(h["reason"].as_str().unwrap_or("").contains("ICMPv6 destination unreachable"), "{h}");
}

/// `router capture` on node-a's uplink into `file`, with `more` options, once it runs.
fn capture_on_node_a_uplink(lab: &TestLab, more: &[&str], file: &std::path::Path) -> std::process::Child {
    let args = [&["capture", "--node", "node-a", "--interface", "eth0", "--json"], more].concat();
    let cap = lab
        .command(&[&args[..], &["-w", file.to_str().unwrap_or_default()]].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("router capture");
    std::thread::sleep(std::time::Duration::from_millis(500));
    cap
}

#[test]
fn capture_shows_ipv6_as_the_router_forwards_it() {
    let lab = TestLab::up(&["--dual-stack"]);
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", "fd00:10:244::41"]); // warm up NDP
    assert!(ok, "{out}");
    let file = lab.dir.join(format!("{}-capture6.pcap", lab.name));
    // A few seconds of everything: IPv6 brings multicast chatter (MLD) that a count would
    // take in place of the pings.
    let cap = capture_on_node_a_uplink(&lab, &["--duration", "4"], &file);
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "3", "-i", "0.3", "-W", "2", "fd00:10:244::41"]);
    assert!(ok, "{out}");
    let done = cap.wait_with_output().expect("capture ends");
    assert!(done.status.success(), "{}", text(&done.stderr));
    let rows = pcap_fields(&file, None, &["ipv6.src", "ipv6.dst", "ipv6.hlim", "icmpv6.type"]);
    // Requests leave node-a with hop limit 63; replies arrive from node-b's router at 63.
    assert!(rows.lines().any(|l| l == "fd00:10:244::1\tfd00:10:244::41\t63\t128"), "{rows}");
    assert!(rows.lines().any(|l| l == "fd00:10:244::41\tfd00:10:244::1\t63\t129"), "{rows}");

    // A pod named as the host to capture is both its addresses in a dual-stack lab; pod-c1's
    // pings, which leave by eth0 too, stay out.
    let file = lab.dir.join(format!("{}-capture-both.pcap", lab.name));
    let cap = capture_on_node_a_uplink(&lab, &["--host", "pod-b1", "-c", "4"], &file);
    for (pod, addr) in
        [("c1", "fd00:10:244::81"), ("b1", "fd00:10:244::41"), ("c1", "10.244.3.1"), ("b1", "10.244.2.1")]
    {
        let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", addr]);
        assert!(ok, "pod-{pod}: {out}");
    }
    let done = cap.wait_with_output().expect("capture ends");
    assert!(done.status.success(), "{}", text(&done.stderr));
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).expect("capture --json");
    assert_eq!(report["written"], 4, "{report}");
    let rows = pcap_fields(&file, None, &["ipv6.dst", "ip.dst"]);
    let want = "fd00:10:244::41\t\nfd00:10:244::1\t\n\t10.244.2.1\n\t10.244.1.1\n";
    assert_eq!(rows, want);
}
