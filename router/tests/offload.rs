//! Pods keep their TX offloads, as real hosts do: TCP leaves them as 64 KB super-packets with
//! partial checksums. The router must forward them whole on a direct route, cut them into
//! complete segments for the IPIP tunnel (or for VXLAN, wrap the segments and send them as
//! one UDP super-packet), and the bytes must arrive unchanged.
//! These build namespaces (root).

mod support;

use std::process::Stdio;
use support::*;

/// Reads one connection to its end and prints the byte count and SHA-256 of what came.
const SINK: &str = r#"
import hashlib, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(1); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 20)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest())
"#;

/// Sends 16 MiB of varied bytes in large writes (so that TSO builds super-packets) and
/// prints the same summary of what it sent.
const SOURCE: &str = r#"
import hashlib, socket, sys, time
data = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(1 << 19))
for attempt in range(50):
    try:
        c = socket.create_connection((sys.argv[1], 9000), timeout=10); break
    except OSError:
        time.sleep(0.1)
c.sendall(data); c.shutdown(socket.SHUT_WR); c.recv(1)
print(len(data), hashlib.sha256(data).hexdigest())
"#;

fn transfer(lab: &TestLab, from: &str, to: &str, to_addr: &str) {
    let sink = lab
        .command(&["lab", "exec", to, "--", "python3", "-c", SINK])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the sink");
    let sent = lab.exec(from, &["python3", "-c", SOURCE, to_addr]);
    let got = sink.wait_with_output().expect("sink ends");
    assert!(sent.status.success(), "source: {}", text(&sent.stderr));
    assert!(got.status.success(), "sink: {}", text(&got.stderr));
    let (sent, got) = (text(&sent.stdout), text(&got.stdout));
    assert!(sent.starts_with("16777216 "), "{sent}");
    assert_eq!(got.trim(), sent.trim(), "{from} -> {to}: what arrived differs from what was sent");
}

fn counter(lab: &TestLab, node: &str, name: &str) -> u64 {
    lab.json(&["stats", "--node", node, "--json"])[name].as_u64().unwrap_or(0)
}

#[test]
fn tcp_super_packets_arrive_intact_directly_and_through_the_tunnel() {
    let lab = TestLab::up(&["--dataplane", "afpacket"]);
    // Direct: node-a forwards the super-packets whole.
    transfer(&lab, "pod-a1", "pod-b1", "10.244.2.1");
    let whole = counter(&lab, "node-a", "gso_received");
    assert!(whole > 0, "no super-packet reached node-a");
    assert_eq!(counter(&lab, "node-a", "gso_segments"), 0, "nothing needed cutting on a direct route");
    // Through the tunnel: node-a cuts them into segments before wrapping each.
    transfer(&lab, "pod-a1", "pod-c1", "10.244.3.1");
    assert!(counter(&lab, "node-a", "gso_received") > whole);
    assert!(counter(&lab, "node-a", "gso_segments") > 0, "nothing was cut for the tunnel");
    // node-c merges the segments coming out of the tunnel back into super-packets for the
    // pod, and what arrives is still byte for byte what was sent.
    let (merged, from) = (counter(&lab, "node-c", "gro_packets"), counter(&lab, "node-c", "gro_segments"));
    assert!(merged > 0, "node-c merged nothing");
    assert!(from >= 2 * merged, "{from} segments in {merged} super-packets");
    // And back, from the far side of the tunnel.
    transfer(&lab, "pod-c1", "pod-a1", "10.244.1.1");
    assert!(counter(&lab, "node-c", "gso_segments") > 0);
    for node in ["node-a", "node-b", "node-c"] {
        assert_eq!(lab.drops(node, "gso_failed"), 0, "{node}");
        assert_eq!(lab.drops(node, "tx_error"), 0, "{node}");
    }
}

#[test]
fn vxlan_carries_tcp_super_packets_cut_and_merged_intact() {
    let _lab = vxlan_super_packets(&["--vxlan-mode", "cross-subnet"]);
}

#[test]
fn in_tun_mode_vxlan_super_packets_go_through_udp_sockets_whole() {
    // No packet socket here: a UDP socket sends them (UDP_SEGMENT) and reads them whole
    // at the far node (UDP_GRO).
    let lab = vxlan_super_packets(&["--dataplane", "tun", "--vxlan-mode", "cross-subnet"]);
    // A socket's source port is its own: flows are spread over several sockets by their
    // hash, so that a fabric's ECMP sees more than one flow (8 streams on 8 sockets: all on
    // one by chance is 8^-7).
    let cap =
        start_capture(&lab, "underlay", "eth0", "src host 192.168.100.100 and udp dst port 4789 and greater 3000", 400);
    iperf3(&lab, "pod-c1", &[], "pod-a1", &["-c", "10.244.3.1", "-t", "2", "-P", "8"]);
    let ports: std::collections::BTreeSet<String> =
        cap.fields(&["udp.srcport"]).into_iter().filter_map(|r| r.into_iter().next()).collect();
    assert!(ports.len() >= 2, "every super-packet from one source port: {ports:?}");
}

fn vxlan_super_packets(args: &[&str]) -> TestLab {
    let lab = TestLab::up(args);
    // Frames far beyond the underlay's 1500-byte MTU cross the underlay router whole: UDP
    // super-packets of VXLAN, which the kernel cuts only if it must.
    let cap = start_capture(&lab, "underlay", "eth0", "udp dst port 4789 and greater 3000", 3);
    transfer(&lab, "pod-a1", "pod-c1", "10.244.3.1");
    let rows = cap.fields(&["frame.len", "ip.src", "vxlan.vni"]);
    assert_eq!(rows.len(), 3, "no super-packets seen on the underlay: {rows:?}");
    for r in &rows {
        let len: usize = r[0].parse().expect("frame length");
        assert!(len > 3000, "{r:?}");
        // Outer source node-a, inner pod-a1 (tshark decodes the first datagram's inside).
        assert_eq!((r[1].as_str(), r[2].as_str()), ("192.168.100.100,10.244.1.1", "4096"), "{r:?}");
    }
    transfer(&lab, "pod-c1", "pod-a1", "10.244.1.1");
    // Cut into segments before VXLAN wraps each, merged again for the pod at the far end.
    for node in ["node-a", "node-c"] {
        assert!(counter(&lab, node, "gso_received") > 0, "{node}: no super-packet from its pod");
        assert!(counter(&lab, node, "gso_segments") > 0, "{node}: nothing was cut for the tunnel");
        assert!(counter(&lab, node, "vxlan_encapsulated") > 0 && counter(&lab, node, "vxlan_decapsulated") > 0);
        assert!(counter(&lab, node, "gro_packets") > 0, "{node}: merged nothing for its pod");
        // The segments crossed the underlay as UDP super-packets, whole both ways.
        assert!(counter(&lab, node, "udp_gso_sent") > 0, "{node}: sent no UDP super-packet");
        assert!(counter(&lab, node, "udp_gso_received") > 0, "{node}: received no UDP super-packet");
        assert_eq!(counter(&lab, node, "ipip_encapsulated"), 0, "{node}");
        assert_eq!(lab.drops(node, "gso_failed"), 0, "{node}");
        assert_eq!(lab.drops(node, "tx_error"), 0, "{node}");
    }
    lab
}

#[test]
fn without_pod_offloads_the_same_transfer_needs_no_super_packets() {
    let lab = TestLab::up(&["--dataplane", "afpacket", "--no-pod-offload"]);
    transfer(&lab, "pod-a1", "pod-c1", "10.244.3.1");
    assert_eq!(counter(&lab, "node-a", "gso_received"), 0);
}

#[test]
fn in_tun_mode_tunl0_carries_super_packets_both_ways() {
    // tunl0 speaks virtio-net headers: node-a gets the pod's super-packets from the kernel
    // whole and cuts them for the tunnel; node-c writes merged ones back for the kernel to
    // forward to the pod.
    let lab = TestLab::up(&["--dataplane", "tun"]);
    transfer(&lab, "pod-a1", "pod-c1", "10.244.3.1");
    assert!(counter(&lab, "node-a", "gso_received") > 0, "no super-packet came out of tunl0");
    assert!(counter(&lab, "node-a", "gso_segments") > 0);
    assert!(counter(&lab, "node-c", "gro_packets") > 0, "node-c merged nothing");
    for node in ["node-a", "node-c"] {
        assert_eq!(lab.drops(node, "gso_failed"), 0, "{node}");
        assert_eq!(lab.drops(node, "tx_error"), 0, "{node}");
    }
}

#[test]
fn without_udp_gso_vxlan_segments_go_one_by_one_and_arrive_intact() {
    let lab = TestLab::up(&["--vxlan-mode", "always", "--no-udp-gso"]);
    transfer(&lab, "pod-a1", "pod-b1", "10.244.2.1");
    assert!(counter(&lab, "node-a", "gso_segments") > 0, "nothing was cut for the tunnel");
    assert!(counter(&lab, "node-a", "vxlan_encapsulated") > 0);
    for node in ["node-a", "node-b"] {
        assert_eq!(counter(&lab, node, "udp_gso_sent"), 0, "{node}");
        assert_eq!(counter(&lab, node, "udp_gso_received"), 0, "{node}");
        assert_eq!(lab.drops(node, "tx_error"), 0, "{node}");
    }
}

/// A kernel that refuses UDP GSO on packet sockets (before Linux 6.2; here node-a's workers
/// act as if, `ROUTER_FAULT_REFUSE_UDP_GSO`): the first refusal turns it off for the node,
/// its log says so once, and the segments of that super-packet and of every later one go
/// as frames of their own. Nothing is lost on the way: the transfer arrives intact. node-b,
/// whose kernel takes them, still sends its own VXLAN whole.
#[test]
fn where_the_kernel_refuses_udp_gso_the_segments_go_one_by_one_and_the_log_says_so_once() {
    for dataplane in ["afpacket", "tun"] {
        refused_udp_gso(dataplane);
    }
}

fn refused_udp_gso(dataplane: &str) {
    let lab = TestLab::named();
    let out = lab
        .command(&["lab", "up", "--vxlan-mode", "always", "--dataplane", dataplane])
        .env("ROUTER_FAULT_REFUSE_UDP_GSO", "node-a")
        .output()
        .expect("router runs");
    assert!(out.status.success(), "lab up: {}{}", text(&out.stdout), text(&out.stderr));
    transfer(&lab, "pod-a1", "pod-b1", "10.244.2.1");
    transfer(&lab, "pod-b1", "pod-a1", "10.244.1.1");
    assert_eq!(counter(&lab, "node-a", "udp_gso_sent"), 0);
    assert!(counter(&lab, "node-a", "gso_segments") > 0, "nothing was cut for the tunnel");
    assert!(counter(&lab, "node-a", "vxlan_encapsulated") > 0);
    assert!(counter(&lab, "node-b", "udp_gso_sent") > 0, "node-b's kernel takes them");
    for node in ["node-a", "node-b"] {
        assert_eq!(lab.drops(node, "tx_error"), 0, "{node}");
    }
    let log = std::fs::read_to_string(lab.dir.join(&lab.name).join("node-a.log")).expect("node-a's log");
    assert_eq!(log.matches("the kernel refuses UDP GSO").count(), 1, "{log}");
}
