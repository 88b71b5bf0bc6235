//! The first slice end to end: the seed lab, real pings, real captures.
//! These build network namespaces and need root.

mod support;

use std::time::{Duration, Instant};
use support::*;

const POD_A2: &str = "10.244.1.2";
const POD_B1: &str = "10.244.2.1";
const POD_C1: &str = "10.244.3.1";

#[test]
fn pods_ping_on_the_same_node_and_across_nodes() {
    let lab = TestLab::up(&[]);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "5", "-i", "0.2", "-W", "2", POD_A2]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "5", "-i", "0.2", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    // Two router hops (node-a, node-b) decremented the TTL of the replies.
    assert!(out.contains("ttl=62"), "{out}");

    // Forwarding is ours: the kernels of the nodes do not forward.
    for node in ["node-a", "node-b", "node-c"] {
        let out = lab.exec(node, &["cat", "/proc/sys/net/ipv4/ip_forward"]);
        assert_eq!(text(&out.stdout).trim(), "0", "{node}");
    }
    // And our router counted what it carried: node-a sent the requests out of its uplink.
    let stats = lab.json(&["stats", "--node", "node-a", "--json"]);
    let uplink = &stats["interfaces"][0];
    assert_eq!(uplink["interface"], "eth0");
    assert!(uplink["tx_packets"].as_u64().unwrap_or(0) >= 5, "{stats}");
    // Root opens /dev/net/tun: the node has its tunl0, and nothing says it is missing.
    assert!(stats.get("tunnel_device_missing").is_none(), "{stats}");
    assert!(stats["interfaces"].as_array().is_some_and(|l| l.iter().any(|i| i["interface"] == "tunl0")), "{stats}");
    // The node's log is a file: plain text, no terminal colours.
    let log = std::fs::read_to_string(lab.dir.join(&lab.name).join("node-a.log")).expect("node-a's log");
    assert!(log.contains("node up") && !log.contains('\x1b'), "{log}");
}

/// A counter of the `Ip:` lines of a host's /proc/net/snmp (its namespace's IP stack).
fn ip_counter(lab: &TestLab, host: &str, name: &str) -> u64 {
    snmp(lab, host, "Ip", name).0
}

/// What the nodes' own IP stacks received while pod-a1 pinged pod-b1 (direct) and pod-c1
/// (IPIP) 20 times each: (node-b's failed route lookups, node-c's packets in).
fn kernel_work_for_transit(lab: &TestLab) -> (u64, u64) {
    // First make sure both paths work (and ARP is resolved), so that only the counted pings count.
    for dst in [POD_B1, POD_C1] {
        let (ok, out) = ping(lab, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", dst]);
        assert!(ok, "{out}");
    }
    let (b0, c0) = (ip_counter(lab, "node-b", "InAddrErrors"), ip_counter(lab, "node-c", "InReceives"));
    for dst in [POD_B1, POD_C1] {
        let (ok, out) = ping(lab, "pod-a1", &["-q", "-c", "20", "-i", "0.02", "-W", "2", dst]);
        assert!(ok, "{out}");
        assert_no_loss(&out);
    }
    (ip_counter(lab, "node-b", "InAddrErrors") - b0, ip_counter(lab, "node-c", "InReceives") - c0)
}

/// The nice value of each worker thread of a node's daemon.
fn worker_nice(lab: &TestLab, node: &str) -> Vec<i64> {
    let tasks = format!("/proc/{}/task", lab.daemon_pid(node));
    let mut v = Vec::new();
    for t in std::fs::read_dir(&tasks).expect("tasks").flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        // "tid (comm) state ...": the nice value is the 19th field, the 17th after the name.
        let (Some(name), Some(rest)) = (stat.split(['(', ')']).nth(1), stat.rsplit(") ").next()) else { continue };
        if name.starts_with("worker-") {
            v.push(rest.split_whitespace().nth(16).and_then(|n| n.parse().ok()).expect("nice"));
        }
    }
    v
}

#[test]
fn the_nodes_kernels_leave_what_the_router_forwards_alone() {
    // With the transit filter (the default) a node's kernel drops what the router forwards
    // or unwraps right after the router's socket took it: node-b's kernel fails no route
    // lookup for the 40 frames it passes on, and node-c's IP stack sees neither the 20 IPIP
    // packets nor the 20 replies (only BGP keepalives, if one falls due).
    let lab = TestLab::up(&["--workers", "2"]);
    // The workers run a little ahead of other processes, as kernel forwarding does.
    assert_eq!(worker_nice(&lab, "node-a"), vec![-5, -5]);
    let (b, c) = kernel_work_for_transit(&lab);
    assert_eq!(b, 0, "node-b's kernel tried to route transit frames");
    assert!(c < 10, "node-c's kernel received {c} packets");
    let filter = text(&lab.exec("node-b", &["tc", "filter", "show", "dev", "eth0", "ingress"]).stdout);
    assert!(filter.contains("direct-action"), "{filter}");
    let on = lab.json(&["stats", "--node", "node-b", "--json"])["transit_filter"].clone();
    assert_eq!(on, serde_json::json!(["eth0", "calie5cfea97bf1"]), "stats say where the filter is");
    // An address node-b gains later is the kernel's too: the filter follows within seconds.
    let out = lab.exec("node-b", &["ip", "addr", "add", "192.168.100.201/24", "dev", "eth0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t0 = Instant::now();
    while !lab.exec("node-a", &["ping", "-c", "1", "-W", "1", "192.168.100.201"]).status.success() {
        assert!(t0.elapsed() < Duration::from_secs(15), "node-b's new address stays filtered");
    }
    drop(lab);
    // Without it each of those climbs the node's IP stack only to be thrown away.
    let lab = TestLab::up(&["--no-transit-filter", "--worker-nice", "0"]);
    assert_eq!(worker_nice(&lab, "node-b"), vec![0]);
    assert_eq!(lab.json(&["stats", "--node", "node-b", "--json"])["transit_filter"], serde_json::json!([]));
    let (b, c) = kernel_work_for_transit(&lab);
    assert!(b >= 40, "node-b's kernel saw {b} transit frames");
    assert!(c >= 40, "node-c's kernel saw {c} packets");
}

#[test]
fn in_tun_mode_a_pods_first_packet_does_not_wait_for_proxy_arp() {
    // The kernel answers the pod's ARP for 169.254.1.1 there; left at its default it holds
    // the answer back up to 0.8 s, and the first ping took about 950 ms.
    let lab = TestLab::up(&["--dataplane", "tun"]);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "3", POD_B1]);
    assert!(ok, "{out}");
    let ms: f64 = out
        .split("time=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no time in {out}"));
    assert!(ms < 300.0, "the first ping took {ms} ms");
    // The kernel forwards here: no transit filter, and stats do not pretend one is off.
    assert!(lab.json(&["stats", "--node", "node-a", "--json"])["transit_filter"].is_null());
    kernel_holds_pods_to_their_own_address(&lab);
    a_trace_says_what_the_kernel_did(&lab);
}

/// The router sees none of a direct route's packets in tun mode; a trace still says why no
/// answer came, and that a pod's own address is nothing to trace.
fn a_trace_says_what_the_kernel_did(lab: &TestLab) {
    let t = text(&lab.router(&["trace", "pod-a1", "192.168.200.1"]).stdout);
    assert!(t.contains("no router saw the probe") && t.contains("no answer reached pod-a1"), "{t}");
    assert!(t.contains("node-a's kernel sent the probe on with pod-a1's own address as its source"), "{t}");
    assert!(t.contains("--nat-outgoing"), "{t}");
    let own = lab.router(&["trace", "pod-a1", "pod-a1"]);
    assert!(!own.status.success());
    let why = text(&own.stderr);
    assert!(why.contains("nothing to trace: pod-a1 10.244.1.1 is pod-a1's own address"), "{why}");
}

/// A counter of the `TcpExt:` lines of a host's /proc/net/netstat.
fn netstat_counter(lab: &TestLab, host: &str, name: &str) -> u64 {
    let t = text(&lab.exec(host, &["cat", "/proc/net/netstat"]).stdout);
    let mut ext = t.lines().filter(|l| l.starts_with("TcpExt:")).map(|l| l.split_whitespace());
    let (Some(names), Some(values)) = (ext.next(), ext.next()) else { panic!("no TcpExt: lines in\n{t}") };
    names.zip(values).find(|(n, _)| *n == name).and_then(|(_, v)| v.parse().ok()).expect(name)
}

/// In tun mode the kernel forwards pods' packets: strict rp_filter on each cali interface,
/// as Felix sets it, drops one that claims another pod's address before it reaches tunl0.
fn kernel_holds_pods_to_their_own_address(lab: &TestLab) {
    let cali = text(&lab.exec("node-a", &["ip", "-o", "link", "show", "type", "veth"]).stdout)
        .split_whitespace()
        .find(|w| w.starts_with("cali"))
        .map(|w| w.trim_end_matches(':').split('@').next().unwrap_or_default().to_string())
        .expect("a cali interface on node-a");
    let rp = text(&lab.exec("node-a", &["cat", &format!("/proc/sys/net/ipv4/conf/{cali}/rp_filter")]).stdout);
    assert_eq!(rp.trim(), "1", "{cali}");
    let before = netstat_counter(lab, "node-a", "IPReversePathFilter");
    let script = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
udp = struct.pack('!HHHH', 4000, 4001, 8 + 6, 0) + b'forged'
h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton('10.244.2.1'), socket.inet_aton('10.244.3.1'))
pkt = h[:10] + struct.pack('!H', csum(h)) + h[12:] + udp
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3): s.sendto(pkt, ('10.244.3.1', 0))
"#;
    let out = lab.exec("pod-a1", &["python3", "-c", script]);
    assert!(out.status.success(), "sending the spoofed packets: {}", text(&out.stderr));
    std::thread::sleep(Duration::from_millis(500));
    let after = netstat_counter(lab, "node-a", "IPReversePathFilter");
    assert!(after >= before + 3, "rp_filter dropped {} of 3", after - before);
}

#[test]
fn a_thousand_pings_at_10ms_lose_nothing() {
    let lab = TestLab::up(&[]);
    let (ok, out) = ping(&lab, "pod-a1", &["-q", "-c", "1000", "-i", "0.01", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
    assert!(out.contains("1000 packets transmitted, 1000 received"), "{out}");
    assert_no_loss(&out);
}

#[test]
fn capture_on_node_b_uplink_shows_plain_icmp_between_pods() {
    let lab = TestLab::up(&[]);
    let cap = start_capture(&lab, "node-b", "eth0", "icmp or ip proto 4", 4);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "6", "-i", "0.3", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "ip.dst", "ip.proto", "icmp.type"]);
    assert_eq!(rows.len(), 4, "expected 2 requests + 2 replies: {rows:?}");
    for r in &rows {
        // Plain IPv4/ICMP between pod addresses: protocol 1, never 4 (IPIP).
        assert_eq!(r[2], "1", "not plain ICMP: {r:?}");
        let pair = (r[0].as_str(), r[1].as_str());
        assert!(pair == ("10.244.1.1", POD_B1) || pair == (POD_B1, "10.244.1.1"), "unexpected addresses {r:?}");
    }
    assert!(rows.iter().any(|r| r[3] == "8") && rows.iter().any(|r| r[3] == "0"), "{rows:?}");
}

#[test]
fn node_a_answers_ttl_1_and_unrouted_addresses_with_icmp() {
    let lab = TestLab::up(&[]);
    let (_, out) = ping(&lab, "pod-a1", &["-c", "1", "-t", "1", "-W", "2", POD_B1]);
    assert!(out.contains("From 192.168.100.100") && out.contains("Time to live exceeded"), "{out}");
    assert_eq!(lab.drops("node-a", "ttl_exceeded"), 1);

    let (_, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.99.0.1"]);
    assert!(
        out.contains("From 192.168.100.100") && (out.contains("Net Unreachable") || out.contains("Host Unreachable")),
        "{out}"
    );
    assert_eq!(lab.drops("node-a", "no_route"), 1);

    // An unused address of node-a's own block hits the blackhole: dropped, counted, silent.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "1", "10.244.1.40"]);
    assert!(!ok && !out.contains("From "), "{out}");
    assert_eq!(lab.drops("node-a", "blackhole"), 1);
}

#[test]
fn routes_show_the_fib_like_route_n() {
    let lab = TestLab::up(&[]);
    let routes = lab.json(&["routes", "--node", "node-a", "--json"]);
    let find =
        |p: &str| routes.as_array().and_then(|a| a.iter().find(|r| r["prefix"] == p).cloned()).unwrap_or_default();
    let b = find("10.244.2.0/26");
    assert_eq!(b["next_hop"], "192.168.100.101");
    assert_eq!(b["interface"], "eth0");
    assert_eq!(b["flags"], "UG");
    assert_eq!(b["source"], "bgp", "pod blocks are learned over BGP");
    let pod = find("10.244.1.1/32");
    assert_eq!(pod["flags"], "UH");
    assert_eq!(pod["source"], "local");
    assert!(pod["interface"].as_str().unwrap_or("").starts_with("cali"));
    assert_eq!(find("10.244.1.0/26")["type"], "blackhole");
    let table = text(&lab.router(&["routes", "--node", "node-a"]).stdout);
    assert!(table.starts_with("Destination") && table.contains("192.168.100.101"), "{table}");
    // Which route one address takes, like `ip route get`.
    let one = lab.json(&["routes", "--node", "node-a", "--lookup", "10.244.3.7", "--json"]);
    assert_eq!(one["prefix"], "10.244.3.0/26");
    assert_eq!(one["encap"], "ipip");
    assert!(lab.json(&["routes", "--node", "node-a", "--lookup", "10.99.0.1", "--json"]).is_null());
    let out = text(&lab.router(&["routes", "--node", "node-a", "--lookup", "10.99.0.1"]).stdout);
    assert!(out.contains("answered with ICMP destination unreachable"), "{out}");
    // An IPv6 address on an IPv4-only node: not "answered with ICMP", which only a node
    // routing IPv6 does.
    let out = text(&lab.router(&["routes", "--node", "node-a", "--lookup", "fd00::1"]).stdout);
    assert!(out.contains("this node routes no IPv6"), "{out}");
    // A host of the lab stands for its address; a prefix is pointed at --detail.
    let named = lab.json(&["routes", "--node", "node-a", "--lookup", "pod-c1", "--json"]);
    assert_eq!((named["prefix"].as_str(), named["encap"].as_str()), (Some("10.244.3.0/26"), Some("ipip")), "{named}");
    let out = lab.router(&["routes", "--node", "node-a", "--lookup", "pod-c1", "-6"]);
    assert!(text(&out.stderr).contains("pod-c1 has no IPv6 address"), "{}", text(&out.stderr));
    let out = lab.router(&["routes", "--node", "node-a", "--lookup", "10.244.3.0/26"]);
    assert!(text(&out.stderr).contains("--detail 10.244.3.0/26"), "{}", text(&out.stderr));
    // A node that does not exist is a clear error.
    let out = lab.router(&["routes", "--node", "node-x"]);
    assert!(!out.status.success() && text(&out.stderr).contains("no node \"node-x\""), "{}", text(&out.stderr));
}

#[test]
fn pod_interfaces_follow_calico() {
    let lab = TestLab::up(&[]);
    let routes = text(&lab.exec("pod-a1", &["ip", "route"]).stdout);
    assert!(routes.contains("default via 169.254.1.1 dev eth0"), "{routes}");
    assert!(routes.contains("169.254.1.1 dev eth0 scope link"), "{routes}");
    let addr = text(&lab.exec("pod-a1", &["ip", "-o", "-4", "addr", "show", "eth0"]).stdout);
    assert!(addr.contains("10.244.1.1/32"), "{addr}");
    // `echo -n pod-a1 | sha1sum` = 48dfb98be234...
    let links = text(&lab.exec("node-a", &["ip", "-o", "link", "show", "cali48dfb98be23"]).stdout);
    assert!(links.contains("cali48dfb98be23"), "{links}");
}

/// Two `lab up` at once: one builds, the other waits for it and finds the lab up, and the
/// lab works (each used to pass the check and tear down what the other made).
#[test]
fn two_ups_at_once_build_one_lab() {
    let lab = TestLab::named();
    let spawn = || {
        lab.command(&["lab", "up"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn()
    };
    let (a, b) = (spawn().expect("lab up"), spawn().expect("lab up"));
    let outs = [a.wait_with_output().expect("lab up"), b.wait_with_output().expect("lab up")];
    let said: Vec<String> = outs.iter().map(|o| text(&o.stdout) + &text(&o.stderr)).collect();
    assert_eq!(outs.iter().filter(|o| o.status.success()).count(), 1, "{said:?}");
    assert!(said.iter().any(|s| s.contains("already up")), "{said:?}");
    for to in ["10.244.2.1", "10.244.3.1"] {
        let ping = lab.exec("pod-a1", &["ping", "-c", "1", "-W", "5", to]);
        assert!(ping.status.success(), "{to}: {}", text(&ping.stdout));
    }
}

#[test]
fn up_twice_says_so_and_down_leaves_nothing() {
    let lab = TestLab::up(&[]);
    let again = lab.router(&["lab", "up"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("already up"), "{}", text(&again.stderr));
    // `lab exec` passes the command's exit code on, and says 127 as a shell does for a
    // command that is not there.
    assert_eq!(lab.exec("pod-a1", &["sh", "-c", "exit 7"]).status.code(), Some(7));
    let missing = lab.exec("pod-a1", &["no-such-command"]);
    assert_eq!(missing.status.code(), Some(127));
    assert!(text(&missing.stderr).contains("no-such-command: command not found"), "{}", text(&missing.stderr));

    let st = lab.json(&["lab", "status", "--json"]);
    let pids: Vec<i64> = st.as_array().into_iter().flatten().filter_map(|h| h["pid"].as_i64()).collect();
    assert_eq!(pids.len(), 3, "{st}");
    // A crashed node is started again by `lab restart`, and serves its pods.
    let _ = std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status();
    // `lab up` and `lab status` name the dead daemon and the way to start it again.
    wait_for(5, "node-a's daemon gone", || {
        let again = lab.router(&["lab", "up"]);
        text(&again.stderr).contains("but the daemon of node-a has exited")
            && text(&again.stderr).contains("`router lab restart node-a")
    });
    let st = lab.json(&["lab", "status", "--json"]);
    let a = st.as_array().into_iter().flatten().find(|h| h["host"] == "node-a").cloned().unwrap_or_default();
    assert!(a["daemon"].as_str().is_some_and(|d| d.contains("`router lab restart node-a`")), "{a}");
    let restart = lab.router(&["lab", "restart", "node-a"]);
    let said = text(&restart.stdout);
    assert!(
        said.contains(&format!("node-a was not running (pid {} had exited", pids[0])),
        "{said}{}",
        text(&restart.stderr)
    );
    // Started cold (no saved routes), it forwards once its peers have sent their routes again.
    wait_for(15, "node-a forwarding to node-b's pod again", || {
        lab.exec("pod-a1", &["ping", "-c", "1", "-W", "1", "10.244.2.1"]).status.success()
    });
    let st = lab.json(&["lab", "status", "--json"]);
    let pids: Vec<i64> = st.as_array().into_iter().flatten().filter_map(|h| h["pid"].as_i64()).collect();
    // A crashed node must not stop `down` from cleaning up.
    let _ = std::process::Command::new("kill").args(["-9", &pids[0].to_string()]).status();

    let down = lab.json(&["lab", "down", "--json"]);
    assert_eq!(down["was_up"], true, "{down}");
    assert_eq!(down["namespaces_removed"], 10, "seed: 2 switches, underlay, 3 nodes, 4 pods: {down}");
    assert!(lab.leftover_namespaces().is_empty(), "{:?}", lab.leftover_namespaces());
    for p in pids {
        // Gone, or a zombie waiting for its (re)parent to reap it: either way not running.
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
        assert!(matches!(state, None | Some('Z')), "node pid {p} survived: {stat}");
    }
    assert!(!lab.dir.join(&lab.name).exists(), "state directory left behind");
    assert!(!lab.dir.join(format!("{}.lock", lab.name)).exists(), "lock file left behind");
}

#[test]
fn down_cleans_up_after_an_interrupted_up() {
    // A larger topology so that `up` is still building when we kill it.
    let mut topo = String::from(
        "[cluster]\npool = \"10.244.0.0/16\"\n[[subnets]]\nname = \"lan\"\nprefix = \"192.168.100.0/24\"\ngateway = \"192.168.100.1\"\n",
    );
    for n in 0..4 {
        let pods: Vec<String> = (0..6).map(|p| format!("\"p{n}x{p}\"")).collect();
        topo += &format!(
            "[[nodes]]\nname = \"n{n}\"\naddress = \"192.168.100.{}/24\"\nblock = \"10.244.{n}.0/26\"\npods = [{}]\n",
            10 + n,
            pods.join(", ")
        );
    }
    let lab = TestLab::named();
    std::fs::create_dir_all(&lab.dir).expect("dir");
    let file = lab.dir.join(format!("{}-big.toml", lab.name));
    std::fs::write(&file, topo).expect("topology");
    let mut up = lab.command(&["lab", "up", "--topology", file.to_str().unwrap_or_default()]).spawn().expect("lab up");
    let state = lab.dir.join(&lab.name).join("state.json");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st: serde_json::Value =
            std::fs::read_to_string(&state).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        if st["namespaces"].as_array().map_or(0, |a| a.len()) >= 8 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = up.kill();
    let _ = up.wait();
    assert!(!lab.leftover_namespaces().is_empty(), "the interrupted up had made namespaces");
    let out = lab.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(lab.leftover_namespaces().is_empty(), "{:?}", lab.leftover_namespaces());
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_wrong_topology_names_file_and_line() {
    let lab = TestLab::named();
    std::fs::create_dir_all(&lab.dir).expect("dir");
    let file = lab.dir.join(format!("{}-bad.toml", lab.name));
    let text_in = "[cluster]\npool = \"10.244.0.0/16\"\n\n[[subnets]]\nname = \"lan\"\nprefix = \"192.168.100.0/24\"\ngateway = \"192.168.100.1\"\n\n[[nodes]]\nname = \"n1\"\naddress = \"192.168.100.300/24\"\nblock = \"10.244.1.0/26\"\n";
    std::fs::write(&file, text_in).expect("write");
    let out = lab.router(&["lab", "up", "--topology", file.to_str().unwrap_or_default()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{}:11:", file.display())), "{err}");
    assert!(err.contains("192.168.100.300/24"), "{err}");
    assert!(lab.leftover_namespaces().is_empty());
    let lock = lab.dir.join(format!("{}.lock", lab.name));
    assert!(!lock.exists() && !lab.dir.join(&lab.name).exists(), "a failed up left files");
    let _ = std::fs::remove_file(&file);
}

/// Our kernel routes carry `proto 179`: a stopped node takes them all away, and a node that
/// starts first removes what an earlier run left behind (a crash), and nothing else.
#[test]
fn a_node_owns_its_kernel_routes_and_flushes_them_at_stop_and_start() {
    use std::process::{Command, Stdio};
    let lab = TestLab::up(&["--dataplane", "tun"]);
    let ours = |lab: &TestLab| text(&lab.exec("node-a", &["ip", "route", "show", "proto", "179"]).stdout);
    let before = ours(&lab);
    assert!(before.contains("10.244.3.0/26 dev tunl0"), "node-a's routes with proto 179:\n{before}");
    assert!(before.contains("blackhole 10.244.1.0/26"), "{before}");
    let pid = lab.daemon_pid("node-a");
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().is_ok_and(|s| s.success()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(Instant::now() < deadline, "node-a did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ours(&lab), "", "routes left after the node stopped");
    // The route the lab gave node-a to the other subnet, as a host has its own, was left to
    // its owner (the node wants the same one) and outlives the node.
    let all = text(&lab.exec("node-a", &["ip", "route", "show"]).stdout);
    assert!(all.contains("192.168.200.0/24 via 192.168.100.1 dev eth0"), "the host's route went with the node:\n{all}");
    assert!(all.contains("default via 192.168.100.1 dev eth0"), "{all}");
    assert!(lab.node_log("node-a").contains("not ours: theirs left as it is"), "{}", lab.node_log("node-a"));
    // What a crashed run would leave, and a route of someone else's.
    let add = |args: &[&str]| {
        let out = lab.exec("node-a", args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    add(&["ip", "route", "add", "10.99.0.0/24", "dev", "eth0", "proto", "179"]);
    add(&["ip", "route", "add", "10.98.0.0/24", "dev", "eth0", "proto", "static"]);
    let config = lab.dir.join(&lab.name).join("node-a.toml");
    let mut back = Command::new("ip")
        .args(["netns", "exec", &lab.ns("node-a"), ROUTER, "node", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node-a again");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ours(&lab).contains("10.244.1.0/26") {
        assert!(Instant::now() < deadline, "node-a's routes did not come back:\n{}", ours(&lab));
        std::thread::sleep(Duration::from_millis(100));
    }
    let after = ours(&lab);
    assert!(!after.contains("10.99.0.0/24"), "the stale route survived:\n{after}");
    let all = text(&lab.exec("node-a", &["ip", "route", "show"]).stdout);
    assert!(all.contains("10.98.0.0/24"), "someone else's route was removed:\n{all}");
    // A hang-up (the terminal it ran from closed) stops it as cleanly as SIGTERM.
    assert!(Command::new("kill").args(["-HUP", &back.id().to_string()]).status().is_ok_and(|s| s.success()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while back.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "node-a did not stop on SIGHUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(ours(&lab), "", "routes left after the node stopped on SIGHUP");
    drop(lab);
    let _ = back.kill();
    let _ = back.wait();
}

/// A link that goes down takes every kernel route through it, ours and the host's: when it
/// is back up, the node puts back its own and, where the host's is gone, the one it wanted.
/// The same for a pod's veth.
#[test]
fn a_node_puts_its_kernel_routes_back_after_its_uplink_went_down_and_up() {
    let lab = TestLab::up(&["--dual-stack"]);
    let routes = |lab: &TestLab| text(&lab.exec("node-a", &["ip", "route", "show"]).stdout);
    let before = routes(&lab);
    assert!(before.contains("10.244.2.0/26 via 192.168.100.101 dev eth0 proto 179"), "{before}");
    for state in ["down", "up"] {
        let out = lab.exec("node-a", &["ip", "link", "set", "eth0", state]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    wait_for(15, "node-a's routes back after the uplink flapped", || {
        let now = routes(&lab);
        now.contains("10.244.2.0/26 via 192.168.100.101 dev eth0 proto 179")
            && now.contains("192.168.200.0/24 via 192.168.100.1 dev eth0")
    });
    // The node's own traffic to the other subnet and to node-b's pods flows again.
    for to in ["192.168.200.101", "10.244.2.1"] {
        let out = lab.exec("node-a", &["ping", "-c", "1", "-W", "2", to]);
        assert!(out.status.success(), "node-a to {to}: {}", text(&out.stdout));
    }
    // The kernel removed the IPv6 address with the link (keep_addr_on_down is 0). Once the
    // host's network config puts it back, which the node cannot do, the IPv6 routes follow
    // on the node's next try, with no link event.
    let out = lab.exec("node-a", &["ip", "-6", "addr", "replace", "fd00:192:168:100::100/64", "dev", "eth0", "nodad"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let routes6 = |lab: &TestLab| text(&lab.exec("node-a", &["ip", "-6", "route", "show"]).stdout);
    wait_for(15, "node-a's IPv6 routes back", || {
        let now = routes6(&lab);
        now.contains("fd00:10:244::40/122 via fd00:192:168:100::101 dev eth0 proto 179")
            && now.contains("fd00:192:168:200::/64 via fd00:192:168:100::1 dev eth0 proto 179")
    });
    let out = lab.exec("node-a", &["ping", "-c", "1", "-W", "2", "fd00:192:168:200::101"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    // A route the kernel refuses (its gateway is off every subnet now) is tried again later,
    // without any event: the subnet's route comes back by itself here.
    let ip = |args: &[&str]| {
        let out = lab.exec("node-a", args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    };
    ip(&["ip", "route", "del", "192.168.100.0/24", "dev", "eth0"]);
    ip(&["ip", "route", "del", "10.244.2.0/26"]);
    let failures = |lab: &TestLab| lab.node_log("node-a").matches("kernel route not installed").count();
    let before = failures(&lab);
    ip(&["ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"]);
    wait_for(10, "the failed install logged", || failures(&lab) > before);
    assert!(!routes(&lab).contains("10.244.2.0/26"), "{}", routes(&lab));
    ip(&["ip", "route", "add", "192.168.100.0/24", "dev", "eth0", "src", "192.168.100.100"]);
    wait_for(15, "node-b's block back in the kernel on a later try", || {
        routes(&lab).contains("10.244.2.0/26 via 192.168.100.101 dev eth0 proto 179")
    });
    // A pod's veth that flaps loses the route the lab made to the pod: the node, which
    // wants one to each of its pods, makes its own, so the node reaches the pod again.
    let shown = text(&lab.exec("node-a", &["ip", "route", "show", "10.244.1.1"]).stdout);
    let cali = shown.split_whitespace().skip_while(|w| *w != "dev").nth(1).expect("pod-a1's route").to_string();
    assert!(!shown.contains("proto 179"), "the lab's own route at first: {shown}");
    for state in ["down", "up"] {
        ip(&["ip", "link", "set", &cali, state]);
    }
    wait_for(15, "pod-a1's routes back", || {
        routes(&lab).contains(&format!("10.244.1.1 dev {cali} proto 179 scope link"))
            && routes6(&lab).contains(&format!("fd00:10:244::1 dev {cali} proto 179"))
    });
    for to in ["10.244.1.1", "fd00:10:244::1"] {
        let out = lab.exec("node-a", &["ping", "-c", "1", "-W", "2", to]);
        assert!(out.status.success(), "node-a to pod-a1 at {to}: {}", text(&out.stdout));
    }
}

/// A node whose uplink does not hold its config's address (a host readdressed, a config
/// copied from another host) says so and stops, instead of running with no BGP session; so
/// does one whose uplink is no Ethernet, and one started where a node runs already.
#[test]
fn a_node_refuses_an_uplink_without_its_address_or_ethernet_and_a_namespace_another_node_serves() {
    let lab = TestLab::up(&[]);
    let own = std::fs::read_to_string(lab.dir.join(&lab.name).join("node-a.toml")).expect("node-a's config");
    let sock = lab.dir.join(format!("{}-elsewhere.sock", lab.name));
    let config = lab.dir.join(format!("{}-elsewhere.toml", lab.name));
    // node-a's config with some lines replaced, run in node-a's namespace beside its daemon.
    let run_with = |replace: &dyn Fn(&str) -> Option<String>| {
        let changed: String = own
            .lines()
            .map(|l| match l {
                l if l.starts_with("admin_socket") => format!("admin_socket = {:?}\n", sock.display().to_string()),
                l => format!("{}\n", replace(l).unwrap_or_else(|| l.to_string())),
            })
            .collect();
        std::fs::write(&config, changed).expect("write config");
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &lab.ns("node-a"), "timeout", "20", ROUTER, "node", "--config"])
            .arg(&config)
            .output()
            .expect("router node");
        assert!(!out.status.success());
        assert!(!sock.exists(), "no admin socket was made");
        text(&out.stderr)
    };
    let err = run_with(&|l| {
        l.starts_with("address = \"192.168.100.100/24\"").then(|| "address = \"192.168.100.77/24\"".into())
    });
    assert!(
        err.contains("the uplink eth0 does not hold 192.168.100.77/24") && err.contains("it has 192.168.100.100"),
        "{err}"
    );
    // An uplink that holds its address but carries no Ethernet: the afpacket data plane
    // would read frames it cannot parse and send ones nobody can.
    let err = run_with(&|l| match l {
        "interface = \"eth0\"" => Some("interface = \"lo\"".into()),
        "address = \"192.168.100.100/24\"" => Some("address = \"127.0.0.1/8\"".into()),
        l if l.starts_with("prefix = \"192.168.200.0/24\"") || l.starts_with("via = ") => Some(String::new()),
        "[[routes]]" => Some(String::new()),
        _ => None,
    });
    assert!(err.contains("uplink interface lo is loopback, not Ethernet"), "{err}");
    // Nothing wrong but the place: node-a's daemon serves this namespace already, and a
    // second node would forward every frame again and flush its kernel routes at stop.
    let err = run_with(&|_| None);
    assert!(err.contains("another router node already runs in this network namespace"), "{err}");
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.244.3.1"]);
    assert!(ok, "node-a's own daemon still forwards: {out}");
}

/// An uplink that loses the config's address while the node runs (readdressed, or IPv6
/// taken away by an MTU below 1280) is reported once, in the log and in `router stats`,
/// until it is back.
#[test]
fn a_node_says_when_its_uplink_loses_its_address_and_when_it_is_back() {
    let lab = TestLab::up(&[]);
    let missing = || lab.json(&["stats", "--node", "node-b", "--json"])["uplink_address_missing"].clone();
    assert!(missing().is_null(), "{}", missing());
    let ip = |op: &str| {
        let out = lab.exec("node-b", &["ip", "addr", op, "192.168.100.101/24", "dev", "eth0"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    ip("del");
    wait_for(10, "node-b to report its uplink's address gone", || {
        missing().as_str().is_some_and(|m| m.contains("does not hold 192.168.100.101/24"))
    });
    let out = text(&lab.router(&["stats", "--node", "node-b"]).stdout);
    assert!(out.contains("uplink: address missing: the uplink eth0 does not hold 192.168.100.101/24"), "{out}");
    ip("add");
    wait_for(10, "node-b to see its address back", || missing().is_null());
    let log = lab.node_log("node-b");
    assert_eq!(log.matches("does not hold 192.168.100.101/24").count(), 1, "said once:\n{log}");
    assert!(log.contains("the uplink holds the config's addresses again"), "{log}");
}

/// A new MAC address on a node's uplink or on a pod's host end (`ip link set … address`):
/// the router takes frames to the new one and tells the link, so that neighbours move at
/// once. It kept the old one, and once node-a had learned node-b's new one (its next ARP,
/// a minute later) node-b's router left every frame to the kernel, which drops them.
#[test]
fn a_node_follows_a_new_mac_address_and_announces_it() {
    let lab = TestLab::up(&[]);
    let ping = |from: &str, to: &str| lab.exec(from, &["ping", "-c", "10", "-i", "0.1", "-W", "1", to]);
    let set_mac = |node: &str, dev: &str, mac: &str| {
        let out = lab.exec(node, &["ip", "link", "set", dev, "address", mac]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let ok = ping("pod-a1", "10.244.2.1");
    assert!(ok.status.success(), "{}", text(&ok.stdout));
    // The uplink: node-a's router takes node-b's gratuitous ARP.
    set_mac("node-b", "eth0", "02:11:22:33:44:55");
    wait_for(10, "node-a's router to know node-b's new MAC", || {
        let n = lab.json(&["neighbours", "--node", "node-a", "--json"]);
        n.as_array().into_iter().flatten().any(|e| e["ip"] == "192.168.100.101" && e["mac"] == "02:11:22:33:44:55")
    });
    let out = ping("pod-a1", "10.244.2.1");
    assert_no_loss(&text(&out.stdout));
    let log = lab.node_log("node-b");
    assert!(log.contains("MAC address changed") && log.contains("to=02:11:22:33:44:55"), "{log}");
    // A pod's host end: the pod's kernel takes the gateway's new MAC.
    set_mac("node-a", "cali48dfb98be23", "02:aa:bb:cc:dd:ee");
    wait_for(10, "pod-a1 to know its gateway's new MAC", || {
        text(&lab.exec("pod-a1", &["ip", "neigh", "show", "169.254.1.1"]).stdout).contains("02:aa:bb:cc:dd:ee")
    });
    let out = ping("pod-a1", "10.244.2.1");
    assert_no_loss(&text(&out.stdout));
}

/// `ipam check` also looks the other way, as Calico's does: an address a node's pod uses
/// that IPAM has not allocated (released by hand) is found, since IPAM would hand it out
/// again.
#[test]
fn ipam_check_finds_an_address_in_use_that_ipam_does_not_hold() {
    let lab = TestLab::up(&[]);
    let check = lab.router(&["ipam", "check"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stdout));
    let out = lab.router(&["ipam", "release", "--ip", "10.244.2.1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let check = lab.router(&["ipam", "check"]);
    let said = text(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains("unallocated   10.244.2.1   -   in use by pod pod-b1 on node-b"), "{said}");
}

/// A node config that names no admin socket serves the default one, and the node commands
/// find it there when no lab is up (a host that runs `router node` itself).
#[test]
fn a_node_without_an_admin_socket_serves_the_default_one_the_cli_finds() {
    let lab = TestLab::up(&[]);
    let own = lab.dir.join(&lab.name).join("node-a.toml");
    let original = std::fs::read_to_string(&own).expect("node-a's config");
    let config = lab.dir.join(format!("{}-default-socket.toml", lab.name));
    let without: String =
        original.lines().filter(|l| !l.starts_with("admin_socket")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&config, without).expect("write config");
    let pid = lab.daemon_pid("node-a");
    let _ = std::process::Command::new("kill").arg(pid.to_string()).status();
    wait_for(10, "node-a's daemon gone", || !std::path::Path::new(&format!("/proc/{pid}")).exists());
    let node = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.ns("node-a"), ROUTER, "node", "--config", config.to_str().unwrap_or_default()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("router node");
    let node = Killed(node);
    // Outside any lab: `--lab` names one that is not up.
    let status = |args: &[&str]| {
        let mut a = vec!["status", "--lab", "no-such-lab", "--json"];
        a.extend_from_slice(args);
        std::process::Command::new(ROUTER).args(&a).output().expect("router status")
    };
    wait_for(15, "both of node-a's sessions up, seen through the default socket", || {
        let out = status(&[]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["peers"].as_array().is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["state"] == "up"))
    });
    // Stopped as an operator would (SIGTERM), it takes its socket with it.
    let _ = std::process::Command::new("kill").arg(node.0.id().to_string()).status();
    wait_for(10, "the default socket removed with its node", || {
        !std::path::Path::new("/run/router/router.sock").exists()
    });
    let _ = std::fs::remove_dir("/run/router");
    let out = status(&[]);
    assert!(text(&out.stderr).contains("no node serves /run/router/router.sock"), "{}", text(&out.stderr));
}
