//! VXLAN (vxlanMode) end to end on both data planes: the seed lab with `--vxlan-mode`, pods
//! and nodes pinging across it, the underlay seen with tshark. These build namespaces (root).

mod support;

use support::*;

const POD_A1: &str = "10.244.1.1";
const POD_A2: &str = "10.244.1.2";
const POD_B1: &str = "10.244.2.1";
const POD_C1: &str = "10.244.3.1";
const NODE_A: &str = "192.168.100.100";
const NODE_C: &str = "192.168.200.101";

fn encap_of(lab: &TestLab, node: &str, prefix: &str) -> String {
    let routes = lab.json(&["routes", "--node", node, "--json"]);
    routes
        .as_array()
        .and_then(|a| a.iter().find(|r| r["prefix"] == prefix))
        .and_then(|r| r["encap"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn every_pod_reaches_every_other(lab: &TestLab) {
    for (from, to) in [("pod-a1", POD_B1), ("pod-a1", POD_C1), ("pod-c1", POD_B1), ("pod-b1", POD_A2)] {
        let (ok, out) = ping(lab, from, &["-c", "3", "-i", "0.2", "-W", "2", to]);
        assert!(ok, "{from} -> {to}: {out}");
        assert_no_loss(&out);
    }
    // No node's kernel answered the VXLAN it got with "port unreachable": the router took it.
    for node in ["node-a", "node-b", "node-c"] {
        let (sent, all) = snmp(lab, node, "Icmp", "OutDestUnreachs");
        assert_eq!(sent, 0, "{node} sent destination unreachable:\n{all}");
    }
}

#[test]
fn vxlan_always_and_cross_subnet_carry_every_pod_pair() {
    let lab = TestLab::up(&["--vxlan-mode", "always"]);
    every_pod_reaches_every_other(&lab);
    assert_eq!(
        (encap_of(&lab, "node-a", "10.244.2.0/26"), encap_of(&lab, "node-a", "10.244.3.0/26")),
        ("vxlan".into(), "vxlan".into())
    );
    let stats = lab.json(&["stats", "--node", "node-c", "--json"]);
    assert!(stats["vxlan_decapsulated"].as_u64().unwrap_or(0) >= 3, "{stats}");
    assert_eq!(stats["ipip_decapsulated"].as_u64(), Some(0), "{stats}");
    drop(lab);

    let lab = TestLab::up(&["--vxlan-mode", "cross-subnet"]);
    every_pod_reaches_every_other(&lab);
    assert_eq!(
        (encap_of(&lab, "node-a", "10.244.2.0/26"), encap_of(&lab, "node-a", "10.244.3.0/26")),
        ("none".into(), "vxlan".into())
    );
    // Pods get the pool's MTU: 1500 less VXLAN's 50 bytes.
    let link = lab.exec("pod-a1", &["ip", "-o", "link", "show", "eth0"]);
    assert!(text(&link.stdout).contains("mtu 1450"), "{}", text(&link.stdout));
    // A 1422-byte ping (1450 bytes of IPv4) with DF crosses the tunnel whole.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-s", "1422", "-M", "do", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
}

#[test]
fn the_underlay_carries_udp_4789_with_vni_4096_around_the_pod_packet() {
    let lab = TestLab::up(&["--vxlan-mode", "cross-subnet"]);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    let cap = start_capture(&lab, "underlay", "eth0", "udp port 4789", 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "4", "-i", "0.3", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "ip.dst", "udp.dstport", "vxlan.vni", "icmp.type", "_ws.malformed"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let request = rows.iter().find(|r| r[0] == format!("{NODE_A},{POD_A1}")).expect("outer a -> c around the request");
    assert_eq!(request[1], format!("{NODE_C},{POD_C1}"));
    assert_eq!((request[2].as_str(), request[3].as_str(), request[4].as_str()), ("4789", "4096", "8"));
    let reply = rows.iter().find(|r| r[0] == format!("{NODE_C},{POD_C1}")).expect("outer c -> a around the reply");
    assert_eq!((reply[3].as_str(), reply[4].as_str()), ("4096", "0"));
    for r in &rows {
        assert_eq!(r.get(5).map(String::as_str).unwrap_or(""), "", "malformed: {r:?}");
    }
    // The trace names the tunnel: wrapped at node-a, unwrapped at node-c, both ways.
    let out = lab.router(&["trace", "pod-a1", "pod-c1"]);
    let t = text(&out.stdout);
    assert!(out.status.success(), "{t}{}", text(&out.stderr));
    assert_eq!(t.matches("encapsulate — VXLAN udp ").count(), 2, "{t}");
    assert_eq!(t.matches("decapsulate — VXLAN udp ").count(), 2, "{t}");
    assert!(t.contains("→ 4789 vni 4096") && t.contains("(vxlanMode CrossSubnet)"), "{t}");
}

#[test]
fn vxlan_from_a_host_that_is_not_a_node_is_dropped_and_counted() {
    let lab = TestLab::up(&["--vxlan-mode", "always"]);
    // The underlay router (not a node) sends node-a a well-formed VXLAN packet for pod-a1.
    let script = [
        "import socket",
        "inner = bytes.fromhex('45000054000140004001' + '0000' + '0af40301' + '0af40101') + bytes(64)",
        "frame = bytes.fromhex('66eec0a86464' + '66eec0a8c865' + '0800') + inner",
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)",
        "for _ in range(3): s.sendto(bytes.fromhex('0800000000100000') + frame, ('192.168.100.100', 4789))",
    ]
    .join("\n");
    let out = lab.exec("underlay", &["/usr/bin/python3", "-c", &script]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while lab.drops("node-a", "vxlan_unknown_source") < 3 {
        assert!(std::time::Instant::now() < deadline, "not counted: {}", lab.drops("node-a", "vxlan_unknown_source"));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(lab.json(&["stats", "--node", "node-a", "--json"])["vxlan_decapsulated"].as_u64(), Some(0));
}

#[test]
fn ipip_and_vxlan_together_are_refused_with_a_reason() {
    let lab = TestLab::named();
    let out = lab.router(&["lab", "up", "--ipip-mode", "always", "--vxlan-mode", "always"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("a pool uses IPIP or VXLAN, not both"), "{}", text(&out.stderr));
    assert!(lab.leftover_namespaces().is_empty());
}

#[test]
fn the_nodes_own_traffic_goes_through_vxlan_calico() {
    let lab = TestLab::up(&["--vxlan-mode", "cross-subnet"]);
    // Like Calico's, the device for the node's own traffic into the tunnel is vxlan.calico,
    // with the VXLAN MTU, and the kernel's route to node-c's block points into it.
    let link = text(&lab.exec("node-a", &["ip", "-o", "link", "show", "vxlan.calico"]).stdout);
    assert!(link.contains("mtu 1450"), "{link}");
    let route = text(&lab.exec("node-a", &["ip", "route", "show", "10.244.3.0/26"]).stdout);
    assert!(route.contains("dev vxlan.calico"), "{route}");
    assert!(!text(&lab.exec("node-a", &["ip", "link"]).stdout).contains("tunl0"));
    // IPv4 only: no IPv6 address, so the kernel sends no solicitations or MLD into it.
    let v6 = text(&lab.exec("node-a", &["cat", "/proc/sys/net/ipv6/conf/vxlan.calico/disable_ipv6"]).stdout);
    assert_eq!(v6.trim(), "1");
    assert_eq!(text(&lab.exec("node-a", &["ip", "-6", "addr", "show", "dev", "vxlan.calico"]).stdout), "");
    let out = lab.exec("node-a", &["ping", "-c", "2", "-W", "2", POD_C1]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[test]
fn vxlan_on_the_tun_data_plane_carries_pods_and_nodes() {
    let lab = TestLab::named();
    let up = lab.router(&["lab", "up", "--dataplane", "tun", "--vxlan-mode", "cross-subnet"]);
    let said = text(&up.stdout);
    assert!(up.status.success(), "{said}{}", text(&up.stderr));
    every_pod_reaches_every_other(&lab);
    let out = lab.exec("node-a", &["ping", "-c", "2", "-W", "2", POD_C1]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(encap_of(&lab, "node-a", "10.244.3.0/26"), "vxlan");
    // The kernel routes into vxlan.calico; the router wraps in UDP 4789 toward node-c.
    let cap = start_capture(&lab, "underlay", "eth0", "udp port 4789", 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.3", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "vxlan.vni", "icmp.type"]);
    assert!(rows.iter().any(|r| r[0] == format!("{NODE_A},{POD_A1}") && r[1] == "4096"), "{rows:?}");
    for node in ["node-a", "node-c"] {
        let stats = lab.json(&["stats", "--node", node, "--json"]);
        assert!(stats["vxlan_encapsulated"].as_u64().unwrap_or(0) > 0, "{node}: {stats}");
        assert!(stats["vxlan_decapsulated"].as_u64().unwrap_or(0) > 0, "{node}: {stats}");
    }
    // What `lab up` suggests works as printed.
    let tries: Vec<&str> = said.lines().skip_while(|l| *l != "try:").skip(1).map(str::trim).collect();
    assert_eq!(tries.len(), 3, "{said}");
    for t in tries {
        let args: Vec<&str> = t.split_whitespace().skip(1).collect();
        let out = lab.router(&args);
        assert!(out.status.success(), "{t}: {}{}", text(&out.stdout), text(&out.stderr));
    }
    assert!(lab.leftover_namespaces().is_empty());
}

#[test]
fn a_pool_turned_to_vxlan_in_etcd_brings_vxlan_calico_in_tun_mode_live_and_after_a_restart() {
    // tun mode's pods reach other nodes through the tunnel device: a change of encapsulation
    // swaps tunl0 for vxlan.calico (and adds the VXLAN sockets) while the node runs, and a
    // node restarted reads the pools from etcd before it makes its devices.
    let lab = TestLab::up(&["--dataplane", "tun", "--datastore", "etcd"]);
    assert!(ping(&lab, "pod-a1", &["-c", "1", "-W", "2", POD_C1]).0, "IPIP at first");
    apply(
        &lab,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  \
         cidr: 10.244.0.0/16\n  blockSize: 26\n  ipipMode: Never\n  vxlanMode: CrossSubnet\n  nodeSelector: all()\n",
    );
    let links = || text(&lab.exec("node-a", &["ip", "link"]).stdout);
    wait_for(20, "node-a to swap tunl0 for vxlan.calico", || {
        let l = links();
        l.contains("vxlan.calico") && !l.contains("tunl0")
    });
    assert!(links().lines().any(|l| l.contains("vxlan.calico") && l.contains("qdisc pfifo_fast")), "{}", links());
    wait_for(20, "pod-a1 reaching pod-c1 through VXLAN", || ping(&lab, "pod-a1", &["-c", "1", "-W", "1", POD_C1]).0);
    assert_eq!(encap_of(&lab, "node-a", "10.244.3.0/26"), "vxlan");
    let wrapped = || lab.json(&["stats", "--node", "node-a", "--json"])["vxlan_encapsulated"].as_u64().unwrap_or(0);
    assert!(wrapped() > 0);
    for node in ["node-a", "node-b", "node-c"] {
        let out = lab.router(&["lab", "restart", node]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    assert!(links().contains("vxlan.calico"));
    wait_for(20, "pod-a1 reaching pod-c1 after the restarts", || {
        ping(&lab, "pod-a1", &["-c", "1", "-W", "1", POD_C1]).0
    });
    assert!(wrapped() > 0);
}
