//! IPIP CrossSubnet end to end, in both data-plane modes: node-c sits behind the underlay
//! router, so pod traffic to and from it travels inside IPIP. These build namespaces (root).

mod support;

use support::*;

const POD_A1: &str = "10.244.1.1";
const POD_B1: &str = "10.244.2.1";
const POD_C1: &str = "10.244.3.1";
const NODE_A: &str = "192.168.100.100";
const NODE_C: &str = "192.168.200.101";

fn up(dataplane: &str, mode: &str) -> TestLab {
    TestLab::up(&["--dataplane", dataplane, "--ipip-mode", mode])
}

fn pods_on_other_subnets_reach_each_other(dp: &str) {
    let lab = up(dp, "cross-subnet");
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "5", "-i", "0.2", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    let (ok, out) = ping(&lab, "pod-c1", &["-c", "5", "-i", "0.2", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    // And direct routing still works next to it.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "3", "-i", "0.2", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
    let routes = lab.json(&["routes", "--node", "node-a", "--json"]);
    let encap = |p: &str| {
        routes
            .as_array()
            .and_then(|a| a.iter().find(|r| r["prefix"] == p))
            .map(|r| r["encap"].clone())
            .unwrap_or_default()
    };
    assert_eq!(encap("10.244.3.0/26"), "ipip");
    assert_eq!(encap("10.244.2.0/26"), "none");
    assert!(lab.json(&["stats", "--node", "node-c", "--json"])["ipip_decapsulated"].as_u64().unwrap_or(0) >= 5);
}

fn underlay_sees_ipip_between_node_addresses(dp: &str) {
    let lab = up(dp, "cross-subnet");
    // Warm up ARP on every hop, so that requests and replies alternate in the capture.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    // eth0 is the underlay router's leg on node-a's subnet.
    let cap = start_capture(&lab, "underlay", "eth0", "ip proto 4", 2);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "4", "-i", "0.3", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "ip.dst", "ip.proto", "icmp.type", "ip.checksum.status", "_ws.malformed"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    let request =
        rows.iter().find(|r| r[0] == format!("{NODE_A},{POD_A1}")).expect("outer a -> c around pod-a1's request");
    assert_eq!(request[1], format!("{NODE_C},{POD_C1}"));
    assert_eq!(request[2], "4,1", "IPIP carrying ICMP");
    assert_eq!(request[3], "8");
    let reply = rows.iter().find(|r| r[0] == format!("{NODE_C},{POD_C1}")).expect("outer c -> a around the reply");
    assert_eq!(reply[1], format!("{NODE_A},{POD_A1}"));
    for r in &rows {
        // Both IPv4 headers verified by tshark ("1" = good), nothing malformed.
        assert_eq!(r[4], "1,1", "checksums: {r:?}");
        assert_eq!(r.get(5).map(String::as_str).unwrap_or(""), "", "malformed: {r:?}");
    }
}

/// The IP protocol field(s) of the first two a -> b packets seen on node-b's uplink
/// ("1" plain ICMP, "4,1" ICMP inside IPIP).
fn protocols_a_to_b(lab: &TestLab) -> Vec<String> {
    let cap = start_capture(lab, "node-b", "eth0", "icmp or ip proto 4", 2);
    let (ok, out) = ping(lab, "pod-a1", &["-c", "4", "-i", "0.3", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.proto", "ip.src"]);
    assert_eq!(rows.len(), 2, "{rows:?}");
    rows.into_iter().map(|r| r[0].clone()).collect()
}

fn modes_decide_what_is_wrapped(dp: &str) {
    // CrossSubnet: a -> b travels plain, node to node on the shared subnet.
    let lab = up(dp, "cross-subnet");
    assert_eq!(protocols_a_to_b(&lab), ["1", "1"], "plain ICMP under CrossSubnet");
    drop(lab);

    // Always: a -> b wrapped too.
    let lab = up(dp, "always");
    assert_eq!(protocols_a_to_b(&lab), ["4,1", "4,1"], "wrapped under Always");
    drop(lab);

    // Never: the underlay router has no pod routes, so pod-a1 cannot reach pod-c1.
    let lab = up(dp, "never");
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.3", "-W", "1", POD_C1]);
    assert!(!ok, "pod-c1 must be unreachable without IPIP:\n{out}");
    assert!(!out.contains("bytes from"), "{out}");
    // ...while same-subnet pods still talk.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.3", "-W", "2", POD_B1]);
    assert!(ok, "{out}");
}

fn large_packets_arrive_or_are_refused_loudly(dp: &str) {
    let lab = up(dp, "cross-subnet");
    let mtu = text(&lab.exec("pod-a1", &["cat", "/sys/class/net/eth0/mtu"]).stdout);
    assert_eq!(mtu.trim(), "1480", "pod MTU leaves room for the outer header");
    // 1500 bytes with DF: refused, with the tunnel MTU.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "-M", "do", "-s", "1472", POD_C1]);
    assert!(!ok);
    assert!(out.contains("mtu=1480") || out.contains("mtu = 1480"), "{out}");
    // Without DF it arrives (fragmented), and 1480 bytes with DF fit exactly.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.3", "-W", "2", "-s", "1472", POD_C1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.3", "-W", "2", "-M", "do", "-s", "1452", POD_C1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
}

fn forged_ipip_from_the_underlay_is_dropped(dp: &str) {
    let lab = up(dp, "cross-subnet");
    let cap = start_capture(&lab, "pod-c1", "eth0", "icmp", 1);
    // From the underlay router (not a node): outer 192.168.200.1 -> node-c around a ping to pod-c1.
    let script = r#"
import socket, struct
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff
def ip(src, dst, proto, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0, socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
icmp = struct.pack('!BBHHH', 8, 0, 0, 7, 1) + b'forged!!'
icmp = icmp[:2] + struct.pack('!H', csum(icmp)) + icmp[4:]
pkt = ip('192.168.200.1', '192.168.200.101', 4, ip('10.244.1.1', '10.244.3.1', 1, icmp))
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for _ in range(3): s.sendto(pkt, ('192.168.200.101', 0))
"#;
    let out = lab.exec("underlay", &["python3", "-c", script]);
    assert!(out.status.success(), "sending the forged packets: {}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(lab.drops("node-c", "ipip_unknown_source") >= 3, "node-c must count the forged packets");
    // Let the capture end (count 1 or its 20 s limit) only after a real ping proves it worked.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", POD_C1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "ip.dst", "icmp.type"]);
    assert!(rows.iter().all(|r| r[0] == POD_A1), "pod-c1 saw the forged packet: {rows:?}");
}

/// The nodes' own traffic crosses the tunnel too, as host-network pods' does in Calico: the
/// node's kernel routes remote blocks into tunl0 and the router wraps what it reads there.
/// Pods reach the other subnet's node address as well: the reply goes back through tunl0.
fn nodes_reach_pods_on_other_subnets(dp: &str) {
    let lab = up(dp, "cross-subnet");
    for (from, to) in [("node-c", POD_A1), ("node-a", POD_C1), ("pod-a1", NODE_C), ("pod-c1", NODE_A)] {
        let (ok, out) = ping(&lab, from, &["-c", "3", "-i", "0.2", "-W", "2", to]);
        assert!(ok, "{from} -> {to}: {out}");
        assert_no_loss(&out);
    }
    let route = lab.exec("node-c", &["ip", "route", "show", "10.244.1.0/26"]);
    assert!(String::from_utf8_lossy(&route.stdout).contains("dev tunl0"), "{route:?}");
    // One qdisc on the TUN device: one per queue, on its 256, took ~100 MB a node.
    let link = lab.exec("node-c", &["ip", "link", "show", "tunl0"]);
    assert!(String::from_utf8_lossy(&link.stdout).contains("qdisc pfifo_fast"), "{link:?}");
    // On the wire between the subnets: node-c's own request, wrapped from node to node.
    let cap = start_capture(&lab, "underlay", "eth0", "ip proto 4", 1);
    let (ok, out) = ping(&lab, "node-c", &["-c", "1", "-W", "2", POD_A1]);
    assert!(ok, "{out}");
    let rows = cap.fields(&["ip.src", "ip.dst", "icmp.type"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], format!("{NODE_C},{NODE_C}"), "outer and inner source: {rows:?}");
    assert_eq!(rows[0][1], format!("{NODE_A},{POD_A1}"), "outer and inner destination: {rows:?}");
    assert_eq!(rows[0][2], "8");
}

/// afpacket only: with a pod MTU too big for the tunnel, the router itself answers DF packets
/// with "fragmentation needed" carrying the tunnel MTU.
#[test]
fn afpacket_router_sends_frag_needed() {
    let lab = up("afpacket", "cross-subnet");
    let out = lab.exec("pod-a1", &["ip", "link", "set", "eth0", "mtu", "1500"]);
    assert!(out.status.success());
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "-M", "do", "-s", "1472", POD_C1]);
    assert!(!ok);
    assert!(out.contains("Frag needed") && out.contains("mtu = 1480"), "{out}");
    assert_eq!(lab.drops("node-a", "frag_needed"), 1);
}

/// afpacket only: a 1500-byte packet without DF from a pod whose MTU is too big for the
/// tunnel is fragmented by the router and still arrives.
#[test]
fn afpacket_router_fragments_packets_without_df() {
    let lab = up("afpacket", "cross-subnet");
    let out = lab.exec("pod-a1", &["ip", "link", "set", "eth0", "mtu", "1500"]);
    assert!(out.status.success());
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.3", "-W", "2", "-M", "dont", "-s", "1472", POD_C1]);
    assert!(ok, "{out}");
    assert_no_loss(&out);
    assert!(lab.json(&["stats", "--node", "node-a", "--json"])["fragments_sent"].as_u64().unwrap_or(0) >= 4);
}

/// The uplink's MTU lowered while the node runs (`ip link set eth0 mtu 1400`): the node
/// follows it, so a DF packet too big is answered with the new MTU, directly and through the
/// tunnel (whose device shrinks with it), instead of being lost on the way out.
fn a_new_uplink_mtu_is_followed(dp: &str) {
    let lab = up(dp, "cross-subnet");
    let out = lab.exec("node-a", &["ip", "link", "set", "eth0", "mtu", "1400"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    wait_for(10, "tunl0 to follow the uplink", || {
        text(&lab.exec("node-a", &["ip", "-o", "link", "show", "tunl0"]).stdout).contains("mtu 1380")
    });
    for (dst, mtu) in [(POD_B1, 1400), (POD_C1, 1380)] {
        let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "-M", "do", "-s", "1420", dst]);
        assert!(!ok && out.contains(&format!("mtu = {mtu}")), "{dst}: {out}");
        // What fits still goes, wrapped or not.
        let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "-M", "do", "-s", &(mtu - 28).to_string(), dst]);
        assert!(ok, "{dst}: {out}");
    }
    if dp == "afpacket" {
        assert_eq!(lab.drops("node-a", "tx_error"), 0);
        assert!(lab.node_log("node-a").contains("the uplink's MTU changed"));
    }
}

macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod afpacket {
            $(#[test] fn $name() { super::$name("afpacket") })*
        }
        mod tun {
            $(#[test] fn $name() { super::$name("tun") })*
        }
    };
}

both_modes!(
    pods_on_other_subnets_reach_each_other,
    underlay_sees_ipip_between_node_addresses,
    modes_decide_what_is_wrapped,
    large_packets_arrive_or_are_refused_loudly,
    forged_ipip_from_the_underlay_is_dropped,
    nodes_reach_pods_on_other_subnets,
    a_new_uplink_mtu_is_followed,
);
