//! natOutgoing end to end: pods reach the underlay router, which knows no pod, only when
//! their pool masquerades; what leaves carries the node's address (tshark on the underlay),
//! TCP in bulk and UDP get their answers, and an ICMP error from beyond the node finds the
//! pod. These build namespaces (root).

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use support::*;

const NODE_A: &str = "192.168.100.100";
const NODE_C: &str = "192.168.200.101";
/// The underlay router's address on node-c's subnet: outside every pool, and with no route
/// back to any pod.
const OUTSIDE: &str = "192.168.200.1";

/// A TCP and UDP echo server in the underlay router: each answers what it got, and prints
/// who it came from. It ends when its stdin closes, or after a minute.
const SERVER: &str = r#"
import os, signal, socket, threading, sys
signal.alarm(60)
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
t = socket.socket(@FAMILY@); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((@ADDR@, 8080)); t.listen(4)
u = socket.socket(@FAMILY@, socket.SOCK_DGRAM); u.bind((@ADDR@, 5353))
def udp():
    while True:
        d, a = u.recvfrom(2048); print("udp", a[0], a[1], flush=True); u.sendto(d.upper(), a)
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
c, a = t.accept()
data = bytearray()
while True:
    b = c.recv(1 << 16)
    if not b: break
    data += b
print("tcp", a[0], a[1], len(data), flush=True)
c.sendall(data); c.close()
threading.Event().wait()
"#;

/// Sends 4 MB over TCP and one datagram over UDP to the server, and prints what came back.
const CLIENT: &str = r#"
import socket
c = socket.create_connection((@ADDR@, 8080), timeout=10)
sent = bytes(range(256)) * 16384
c.sendall(sent); c.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = c.recv(1 << 16)
    if not b: break
    got += b
print("tcp back", len(got), got == sent)
u = socket.socket(@FAMILY@, socket.SOCK_DGRAM); u.settimeout(5)
u.sendto(b"through the node", (@ADDR@, 5353))
print("udp back", u.recvfrom(2048)[0].decode())
"#;

/// `script` (SERVER or CLIENT) for the server's address `addr`, of either family.
fn at(script: &str, addr: &str) -> String {
    let family = if addr.contains(':') { "socket.AF_INET6" } else { "socket.AF_INET" };
    script.replace("@FAMILY@", family).replace("@ADDR@", &format!("{addr:?}"))
}

/// Runs the server on the underlay router at `addr` and the client in pod-a1: what the
/// client printed, and the lines the server printed after "ready".
fn echo_through(lab: &TestLab, addr: &str) -> (String, Vec<String>) {
    let mut server = lab
        .command(&["lab", "exec", "underlay", "--", "python3", "-c", &at(SERVER, addr)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"));
    let out = lab.exec("pod-a1", &["python3", "-c", &at(CLIENT, addr)]);
    let client = text(&out.stdout) + &text(&out.stderr);
    // What the server printed is in the pipe; closing its stdin ends it.
    drop(server.stdin.take());
    let _ = server.wait();
    (client, lines.map_while(Result::ok).collect())
}

fn nat_ports(port: &str) -> bool {
    port.parse::<u16>().is_ok_and(|p| p >= 61000)
}

#[test]
fn pods_reach_outside_the_pools_only_masqueraded_as_their_node() {
    // Without natOutgoing, the underlay router gets the ping but has no way back to a pod.
    let lab = TestLab::up(&[]);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "1", OUTSIDE]);
    assert!(!ok, "the underlay answered a pod address: {out}");
    // `router trace` says so, and why.
    let trace = text(&lab.router(&["trace", "pod-a1", OUTSIDE]).stdout);
    assert!(trace.contains("no answer reached pod-a1"), "{trace}");
    assert!(trace.contains("node-a sent the probe out of eth0 with pod-a1's own address as its source"), "{trace}");
    drop(lab);

    let lab = TestLab::up(&["--nat-outgoing"]);
    let cap = start_capture(&lab, "underlay", "eth0", "icmp", 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", OUTSIDE]);
    assert!(ok, "{out}");
    let rows =
        cap.fields(&["ip.src", "ip.dst", "icmp.type", "icmp.ident", "ip.checksum.status", "icmp.checksum.status"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][..3], [NODE_A, OUTSIDE, "8"], "the request leaves as node-a's: {rows:?}");
    // tshark checked both checksums: 1 is good.
    assert!(nat_ports(&rows[0][3]) && rows[0][4] == "1" && rows[0][5] == "1", "{rows:?}");
    assert_eq!(rows[1][..3], [OUTSIDE, NODE_A, "0"], "{rows:?}");
    // `router trace` says which node masqueraded, and where the answer was restored.
    let out = lab.router(&["trace", "pod-a1", OUTSIDE]);
    let trace = text(&out.stdout);
    assert!(trace.contains("masquerade — natOutgoing") && trace.contains("restore — an answer"), "{trace}");
    assert!(trace.contains(&format!("ms: ICMP echo reply from underlay {OUTSIDE}")), "{trace}");
    let status = text(&lab.router(&["lab", "status"]).stdout);
    assert!(status.contains("natOutgoing true"), "{status}");
    let routes = text(&lab.router(&["routes", "--node", "node-a"]).stdout);
    assert!(routes.contains("pods leave masqueraded as the node (natOutgoing)"), "{routes}");
    // Inside the pools nothing changes: pod-c1 sees pod-a1's own address.
    let cap = start_capture(&lab, "pod-c1", "eth0", "icmp", 1);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    assert_eq!(cap.fields(&["ip.src"]), vec![vec!["10.244.1.1".to_string()]]);

    // TCP in bulk (the pods' offloaded super-packets too) and UDP, both ways.
    let (client, seen) = echo_through(&lab, OUTSIDE);
    assert!(client.contains("tcp back 4194304 True"), "{client}");
    assert!(client.contains("udp back THROUGH THE NODE"), "{client}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    for line in &seen {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[1], NODE_A, "the server saw {line}");
        assert!(nat_ports(f[2]), "{line}");
    }
    assert!(seen.iter().any(|l| l.starts_with("tcp ") && l.ends_with(" 4194304")), "{seen:?}");

    // Beyond the underlay router: TTL 2 runs out there, and its ICMP error, sent to node-a,
    // reaches the pod.
    let (_, out) = ping(&lab, "pod-a1", &["-c", "1", "-t", "2", "-W", "2", NODE_C]);
    assert!(out.contains("From 192.168.100.1") && out.contains("Time to live exceeded"), "{out}");

    let stats = lab.json(&["stats", "--node", "node-a", "--json"]);
    assert!(stats["nat_masqueraded"].as_u64().unwrap_or(0) > 100, "{stats}");
    assert!(stats["nat_restored"].as_u64().unwrap_or(0) > 100, "{stats}");
    assert!(stats["nat_flows"].as_u64().unwrap_or(0) >= 3, "{stats}");
    // The node's kernel never reset a masqueraded connection: the transit filter kept the
    // answers from it.
    let (resets, all) = snmp(&lab, "node-a", "Tcp", "OutRsts");
    assert_eq!(resets, 0, "node-a's kernel sent resets:\n{all}");
}

#[test]
fn on_the_tun_data_plane_the_kernel_masquerades_as_in_calico() {
    let lab = TestLab::up(&["--nat-outgoing", "--dataplane", "tun"]);
    let cap = start_capture(&lab, "underlay", "eth0", "icmp", 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", OUTSIDE]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "ip.dst", "icmp.type"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0], [NODE_A, OUTSIDE, "8"], "the request leaves as node-a's: {rows:?}");
    // Pod to pod through the tunnel keeps the pod's address.
    let cap = start_capture(&lab, "pod-c1", "eth0", "icmp", 1);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    assert_eq!(cap.fields(&["ip.src"]), vec![vec!["10.244.1.1".to_string()]]);
    let rules = text(&lab.exec("node-a", &["nft", "list", "table", "ip", "router-nat"]).stdout);
    assert!(rules.contains("masquerade") && rules.contains("10.244.0.0/16"), "{rules}");
}

#[test]
fn natoutgoing_applied_to_the_pool_in_etcd_turns_masquerade_on_and_off_live() {
    let lab = TestLab::up(&["--datastore", "etcd"]);
    let reaches = || ping(&lab, "pod-a1", &["-c", "1", "-W", "1", OUTSIDE]).0;
    assert!(!reaches(), "no natOutgoing yet");
    let pool = |nat: bool| {
        format!(
            "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  \
             cidr: 10.244.0.0/16\n  blockSize: 26\n  ipipMode: CrossSubnet\n  natOutgoing: {nat}\n  nodeSelector: all()\n"
        )
    };
    let warnings = apply(&lab, &pool(true));
    assert!(!warnings.contains("natOutgoing"), "natOutgoing is followed: {warnings}");
    wait_for(20, "pod-a1 reaching the underlay router, masqueraded", reaches);
    apply(&lab, &pool(false));
    wait_for(20, "masquerade to stop", || !reaches());
}

const NODE_A6: &str = "fd00:192:168:100::100";
/// The underlay router's IPv6 address on node-c's subnet.
const OUTSIDE6: &str = "fd00:192:168:200::1";
const NODE_C6: &str = "fd00:192:168:200::101";

/// Echo requests and replies only (no neighbour discovery).
const ECHO6: &str = "icmp6 and (ip6[40] == 128 or ip6[40] == 129)";

#[test]
fn ipv6_pods_of_a_masquerading_pool_leave_as_their_node_on_both_data_planes() {
    let lab = TestLab::up(&["--dual-stack", "--nat-outgoing"]);
    let status = text(&lab.router(&["lab", "status"]).stdout);
    assert!(status.contains("IPv6 natOutgoing true"), "{status}");
    let routes = lab.json(&["routes", "--node", "node-a", "--json"]);
    let beyond = routes.as_array().and_then(|a| a.iter().find(|r| r["prefix"] == "fd00:192:168:200::/64").cloned());
    let why = beyond.as_ref().and_then(|r| r["why"].as_str()).unwrap_or_default().to_string();
    assert!(why.ends_with("pods leave masqueraded as the node (natOutgoing)"), "{beyond:?}");
    let cap = start_capture(&lab, "underlay", "eth0", ECHO6, 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", OUTSIDE6]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ipv6.src", "ipv6.dst", "icmpv6.type", "icmpv6.echo.identifier", "icmpv6.checksum.status"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][..3], [NODE_A6, OUTSIDE6, "128"], "the request leaves as node-a's: {rows:?}");
    let id = u16::from_str_radix(rows[0][3].trim_start_matches("0x"), 16).expect("identifier");
    assert!(id >= 61000 && rows[0][4] == "1", "{rows:?}");
    assert_eq!(rows[1][..3], [OUTSIDE6, NODE_A6, "129"], "{rows:?}");
    // Inside the pools nothing changes: pod-c1 sees pod-a1's own address.
    let cap = start_capture(&lab, "pod-c1", "eth0", ECHO6, 1);
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", "fd00:10:244::81"]);
    assert!(ok, "{out}");
    assert_eq!(cap.fields(&["ipv6.src"]), vec![vec!["fd00:10:244::1".to_string()]]);

    // TCP in bulk (offloaded super-packets among them) and UDP through the masquerade.
    let (client, seen) = echo_through(&lab, OUTSIDE6);
    assert!(client.contains("tcp back 4194304 True") && client.contains("udp back THROUGH THE NODE"), "{client}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    for line in &seen {
        let f: Vec<&str> = line.split(' ').collect();
        assert!(f[1] == NODE_A6 && nat_ports(f[2]), "the server saw {line}");
    }

    // Beyond the underlay router: hop limit 2 runs out there, and its ICMPv6 error, sent to
    // node-a, reaches the pod with the pod's own packet quoted.
    let (_, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-t", "2", "-W", "2", NODE_C6]);
    assert!(out.contains("From fd00:192:168:100::1") && out.contains("Time exceeded"), "{out}");
    let stats = lab.json(&["stats", "--node", "node-a", "--json"]);
    assert!(stats["nat_masqueraded"].as_u64().unwrap_or(0) > 100, "{stats}");
    assert!(stats["nat_restored"].as_u64().unwrap_or(0) > 100, "{stats}");
    let (resets, all) = snmp(&lab, "node-a", "Tcp", "OutRsts");
    assert_eq!(resets, 0, "node-a's kernel sent resets:\n{all}");
    drop(lab);

    // tun: the node's kernel forwards IPv6 and masquerades by its nftables rules.
    let lab = TestLab::up(&["--dual-stack", "--nat-outgoing", "--dataplane", "tun"]);
    let cap = start_capture(&lab, "underlay", "eth0", ECHO6, 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-6", "-c", "1", "-W", "2", OUTSIDE6]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ipv6.src", "ipv6.dst", "icmpv6.type"]);
    assert_eq!(rows.first().map(|r| &r[..]), Some(&[NODE_A6.to_string(), OUTSIDE6.into(), "128".into()][..]));
    let rules = text(&lab.exec("node-a", &["nft", "list", "table", "ip6", "router-nat"]).stdout);
    assert!(rules.contains("masquerade") && rules.contains("fd00:10:244::/48"), "{rules}");
}
