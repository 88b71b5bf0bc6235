//! Real containers on the lab's nodes: podman (Debian's, CNI backend) runs them through our
//! CNI plugin, and the running nodes carry their traffic. The image is built offline from
//! busybox-static. Root.

mod support;

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::*;

const IMAGE: &str = "localhost/router-test-busybox:latest";

/// Imports the busybox image once, or reuses the one an earlier run imported (importing it
/// again every run would leave the previous one behind as a dangling image).
fn image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        if Command::new("podman").args(["image", "exists", IMAGE]).status().is_ok_and(|s| s.success()) {
            return;
        }
        let root = tempfile_dir("busybox-root");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed (scripts/setup)");
        let list = Command::new("/bin/busybox").arg("--list").output().expect("busybox --list");
        for applet in text(&list.stdout).lines().filter(|a| *a != "busybox") {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet link");
        }
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("tar -C {} -c . | podman import - {IMAGE} >/dev/null", root.display()))
            .status()
            .expect("podman import");
        assert!(status.success(), "podman import failed");
        let _ = std::fs::remove_dir_all(&root);
    });
    IMAGE
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("router-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `podman ARGS` on a node of the lab (through `router lab exec`).
fn podman(lab: &TestLab, node: &str, args: &[&str]) -> String {
    let mut cmd = vec!["podman"];
    cmd.extend_from_slice(args);
    let out = lab.exec(node, &cmd);
    assert!(out.status.success(), "podman {args:?} on {node}:\n{}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Starts a container on `node`; its id and address.
fn run(lab: &TestLab, node: &str) -> (String, String) {
    run_with(lab, node, &[])
}

/// [`run`] with more `podman run` options.
fn run_with(lab: &TestLab, node: &str, options: &[&str]) -> (String, String) {
    let mut args = vec!["run", "-d", "--network", "router"];
    args.extend_from_slice(options);
    args.extend([image(), "sleep", "600"]);
    let id = podman(lab, node, &args).trim().to_string();
    let inside = podman(lab, node, &["exec", &id, "ip", "-4", "-o", "addr", "show", "eth0"]);
    let addr = inside
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.strip_suffix("/32"))
        .unwrap_or_else(|| panic!("no /32 on eth0: {inside}"))
        .to_string();
    (id, addr)
}

/// Calico's move to a new pool: with the old one disabled, a container takes its address
/// from a block of the new pool that its node's plugin claims in etcd, and the node
/// announces that block whole (a blackhole for its free addresses), not a /32 per container.
#[test]
fn blocks_claimed_in_a_new_pool_are_announced_whole_by_their_node() {
    let lab = TestLab::up(&["--datastore", "etcd"]);
    apply(
        &lab,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: new-pool\nspec:\n  cidr: 10.245.0.0/16\n  \
         blockSize: 26\n  ipipMode: CrossSubnet\n  nodeSelector: all()\n---\napiVersion: projectcalico.org/v3\n\
         kind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  cidr: 10.244.0.0/16\n  blockSize: 26\n  \
         ipipMode: CrossSubnet\n  disabled: true\n  nodeSelector: all()\n",
    );
    let (c, c_ip) = run(&lab, "node-c");
    assert_eq!(c_ip, "10.245.0.1", "the first block of the new pool, claimed for node-c");
    let (a, a_ip) = run(&lab, "node-a");
    assert_eq!(a_ip, "10.245.0.65", "the next block, node-a's");
    wait_until("node-a to learn node-c's new block", || {
        let r = lab.json(&["routes", "--node", "node-a", "--json"]);
        r.as_array().into_iter().flatten().any(|e| e["prefix"] == "10.245.0.0/26" && e["next_hop"] == "192.168.200.101")
    });
    for (node, own, other) in
        [("node-a", "10.245.0.64/26", "10.245.0.1/32"), ("node-c", "10.245.0.0/26", "10.245.0.65/32")]
    {
        let r = lab.json(&["routes", "--node", node, "--json"]);
        let kind = |p: &str| r.as_array().into_iter().flatten().find(|e| e["prefix"] == p).map(|e| e["type"].clone());
        assert_eq!(kind(own), Some(serde_json::json!("blackhole")), "{node}'s own block: {r}");
        assert_eq!(kind(other), None, "the other node's container is reached through its block: {r}");
    }
    container_pings(&lab, "node-a", &a, &c_ip);
    let b = lab.json(&["routes", "--node", "node-b", "--json"]);
    assert!(!b.as_array().into_iter().flatten().any(|e| e["prefix"] == "10.245.0.1/32"), "{b}");
    for (node, id) in [("node-c", &c), ("node-a", &a)] {
        podman(&lab, node, &["rm", "--force", "--time", "0", id]);
    }
}

/// The MTU of a container's eth0.
fn mtu_of(lab: &TestLab, node: &str, id: &str) -> String {
    podman(lab, node, &["exec", id, "cat", "/sys/class/net/eth0/mtu"]).trim().to_string()
}

fn container_pings(lab: &TestLab, node: &str, id: &str, dst: &str) {
    let out = lab.exec(node, &["podman", "exec", id, "ping", "-c", "2", "-W", "2", dst]);
    assert!(out.status.success(), "{id} on {node} → {dst}:\n{}{}", text(&out.stdout), text(&out.stderr));
}

fn pods_of(lab: &TestLab, node: &str) -> Vec<serde_json::Value> {
    let st = lab.json(&["lab", "status", "--json"]);
    st.as_array().into_iter().flatten().filter(|h| h["role"] == "container" && h["parent"] == node).cloned().collect()
}

fn has_route(lab: &TestLab, node: &str, prefix: &str) -> bool {
    let r = lab.json(&["routes", "--node", node, "--json"]);
    r.as_array().into_iter().flatten().any(|e| e["prefix"] == prefix)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn containers_on_two_subnets_talk_through_the_router_and_go_away_cleanly() {
    let lab = TestLab::up(&[]);
    let (a, a_ip) = run(&lab, "node-a");
    // podman passes the container's name (K8S_POD_NAME) and --mac-address (MAC) in CNI_ARGS.
    let (c, c_ip) = run_with(&lab, "node-c", &["--name", "shop-c", "--mac-address", "0a:58:0a:f4:03:07"]);
    assert!(a_ip.starts_with("10.244.1.") && c_ip.starts_with("10.244.3."), "{a_ip} {c_ip}");
    let link = podman(&lab, "node-c", &["exec", &c, "ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 0a:58:0a:f4:03:07"), "{link}");
    // Across the underlay (IPIP), to a topology pod, and from one.
    container_pings(&lab, "node-a", &a, &c_ip);
    container_pings(&lab, "node-c", &c, "10.244.2.1");
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", &c_ip]);
    assert!(ok, "{out}");
    let tunnelled = lab.json(&["stats", "--node", "node-c", "--json"])["ipip_decapsulated"].as_u64();
    assert!(tunnelled.unwrap_or(0) >= 4, "node-c unwrapped the containers' IPIP: {tunnelled:?}");
    // Listed beside the topology's pods.
    let listed = pods_of(&lab, "node-c");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["addresses"][0], format!("{c_ip}/32"));
    assert_eq!(listed[0]["host"], "shop-c", "named as podman named it: {listed:?}");
    // Each right after its node's pods: node-a's before node-b.
    let rows = lab.json(&["lab", "status", "--json"]);
    let order: Vec<(&str, &str)> = rows
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| (h["host"].as_str().unwrap_or_default(), h["parent"].as_str().unwrap_or_default()))
        .collect();
    let at = |f: &dyn Fn(&(&str, &str)) -> bool| order.iter().position(f).unwrap_or(usize::MAX);
    let on_a = at(&|r| r.1 == "node-a" && !r.0.starts_with("pod-"));
    assert!(at(&|r| r.0 == "pod-a2") < on_a && on_a < at(&|r| r.0 == "node-b"), "{order:?}");
    assert!(has_route(&lab, "node-c", &format!("{c_ip}/32")));
    // A trace takes the container's name, and names it where it is given by its address.
    let t = lab.router(&["trace", "pod-a1", "shop-c"]);
    let out = text(&t.stdout);
    assert!(t.status.success() && out.contains(&format!("→ shop-c {c_ip} (icmp)")), "{out}{}", text(&t.stderr));
    assert!(out.contains("pod shop-c") && out.contains("decapsulate"), "node-c delivered it to the container: {out}");
    let exec = lab.router(&["lab", "exec", "shop-c", "--", "true"]);
    assert!(!exec.status.success());
    assert!(text(&exec.stderr).contains("router lab exec node-c -- podman exec shop-c"), "{}", text(&exec.stderr));
    let t = text(&lab.router(&["trace", "pod-a1", &c_ip]).stdout);
    assert!(t.lines().next().is_some_and(|l| l.ends_with(&format!("→ shop-c {c_ip} (icmp)"))), "{t}");
    // And starts at one: the probe is sent from the container's own network namespace.
    let t = lab.router(&["trace", "shop-c", "pod-a1", "--proto", "udp"]);
    let out = text(&t.stdout);
    assert!(t.status.success() && out.starts_with("trace 0x"), "{out}{}", text(&t.stderr));
    assert!(
        out.lines().next().is_some_and(|l| l.ends_with(&format!("shop-c {c_ip} → pod-a1 10.244.1.1 (udp)"))),
        "{out}"
    );
    assert!(out.contains("encapsulate") && out.contains("ms: ICMP port unreachable from pod-a1 10.244.1.1"), "{out}");

    // podman rm: the node forgets it, the address is free again.
    podman(&lab, "node-c", &["rm", "--force", "--time", "0", &c]);
    assert!(pods_of(&lab, "node-c").is_empty());
    assert!(!has_route(&lab, "node-c", &format!("{c_ip}/32")));
    let ipam = std::fs::read_to_string(lab.dir.join(&lab.name).join("ipam.json")).expect("ipam");
    assert!(!ipam.contains(&format!("\"{c_ip}\"")), "{ipam}");
    let (c2, c2_ip) = run(&lab, "node-c");
    assert_eq!(c2_ip, c_ip, "the freed address is handed out again");

    // lab down takes the containers with it.
    let down = lab.down();
    assert!(down.status.success(), "{}", text(&down.stderr));
    for id in [&a, &c2] {
        let ps =
            Command::new("podman").args(["ps", "-a", "-q", "--no-trunc", "--filter", &format!("id={id}")]).output();
        assert_eq!(ps.map(|o| text(&o.stdout)).unwrap_or_default().trim(), "", "container {id} is left");
    }
}

#[test]
fn a_container_on_a_full_block_borrows_an_address_that_every_node_routes() {
    // /30 blocks: node-a's two pods fill its block.
    let seed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../lab/topologies/seed.toml")).expect("seed");
    let dir = tempfile_dir("borrow-topology");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let topo = dir.join("seed-30.toml");
    let small = seed.replacen("block_size = 26", "block_size = 30", 1).replace(".0/26", ".0/30");
    std::fs::write(&topo, small).expect("write");
    let lab = TestLab::up(&["--topology", topo.to_str().unwrap_or_default()]);
    let _ = std::fs::remove_dir_all(&dir);
    let (a, a_ip) = run(&lab, "node-a");
    // node-a's block is 10.244.1.0/30 (pods .1 and .2): the container's address is another's.
    let ip: std::net::Ipv4Addr = a_ip.parse().expect("address");
    let own: ipnet::Ipv4Net = "10.244.1.0/30".parse().expect("net");
    assert!(!own.contains(&ip), "{a_ip} is inside node-a's full block");
    let slash32 = format!("{a_ip}/32");
    for node in ["node-b", "node-c"] {
        wait_until(&format!("{node} to learn {slash32}"), || {
            let r = lab.json(&["routes", "--node", node, "--json"]);
            r.as_array()
                .into_iter()
                .flatten()
                .any(|e| e["prefix"] == slash32.as_str() && e["next_hop"] == "192.168.100.100")
        });
    }
    let (ok, out) = ping(&lab, "pod-c1", &["-c", "2", "-i", "0.2", "-W", "2", &a_ip]);
    assert!(ok, "pod-c1 reaches the borrowed address: {out}");
    container_pings(&lab, "node-a", &a, "10.244.3.1");
    // Every block full (node-c's last address borrowed too): a new block of the pool for
    // node-a, the first free /30, whose address node-a announces as it does a borrowed one.
    let (_, b_ip) = run(&lab, "node-a");
    assert_eq!(b_ip, "10.244.3.2", "the last free address is borrowed before a block is claimed");
    let (c, c_ip) = run(&lab, "node-a");
    assert_eq!(c_ip, "10.244.0.1", "the first address of the first free /30 of the pool");
    let blocks = text(&lab.router(&["ipam", "show", "--show-blocks"]).stdout);
    assert!(
        blocks.lines().any(|l| l.starts_with("Block") && l.contains("10.244.0.0/30") && l.contains("node-a")),
        "{blocks}"
    );
    // The two borrowed addresses, and not the one of node-a's new block.
    let borrowed = lab.json(&["ipam", "show", "--show-borrowed", "--json"]);
    let mut held: Vec<(&str, &str, &str)> = borrowed
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or_default();
            (s("ip"), s("borrowing_node"), s("block_owner"))
        })
        .collect();
    held.sort();
    let owner = if a_ip.starts_with("10.244.2.") { "node-b" } else { "node-c" };
    let mut want = vec![(a_ip.as_str(), "node-a", owner), ("10.244.3.2", "node-a", "node-c")];
    want.sort();
    assert_eq!(held, want, "{borrowed}");
    wait_until("node-c to learn 10.244.0.1/32", || has_route(&lab, "node-c", "10.244.0.1/32"));
    let (ok, out) = ping(&lab, "pod-c1", &["-c", "2", "-i", "0.2", "-W", "2", &c_ip]);
    assert!(ok, "pod-c1 reaches the address of the new block: {out}");
    container_pings(&lab, "node-a", &c, "10.244.2.1");
    podman(&lab, "node-a", &["rm", "--force", "--time", "0", &a]);
    for node in ["node-b", "node-c"] {
        wait_until(&format!("{node} to forget {slash32}"), || !has_route(&lab, node, &slash32));
    }
}

#[test]
fn the_node_keeps_forwarding_while_pods_come_and_go() {
    let lab = TestLab::up(&[]);
    let pid = lab.daemon_pid("node-a");
    // An unrelated flow through node-a, 400 pings at 10 ms...
    let flow = std::thread::scope(|s| {
        let flow = s.spawn(|| ping(&lab, "pod-a2", &["-c", "400", "-i", "0.01", "-W", "2", "10.244.2.1"]));
        // ...while containers come and go on the same node.
        for _ in 0..4 {
            let (id, ip) = run(&lab, "node-a");
            container_pings(&lab, "node-a", &id, "10.244.2.1");
            podman(&lab, "node-a", &["rm", "--force", "--time", "0", &id]);
            assert!(!has_route(&lab, "node-a", &format!("{ip}/32")));
        }
        flow.join().expect("ping thread")
    });
    assert!(flow.0, "{}", flow.1);
    assert_no_loss(&flow.1);
    assert_eq!(lab.daemon_pid("node-a"), pid, "node-a restarted");

    // A pod whose interface vanishes is down: no route, and a node started without it runs.
    let cali = lab
        .json(&["lab", "status", "--json"])
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["host"] == "pod-a2")
        .and_then(|h| h["interface"].as_str().map(str::to_string))
        .expect("pod-a2's interface");
    let del = Command::new("ip").args(["-n", &lab.ns("node-a"), "link", "del", &cali]).status().expect("ip");
    assert!(del.success());
    wait_until("node-a to drop pod-a2's route", || !has_route(&lab, "node-a", "10.244.1.2/32"));
    let restart = lab.router(&["lab", "restart", "node-a"]);
    assert!(restart.status.success(), "a node with a pod down starts: {}", text(&restart.stderr));
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
}

/// The addresses of the containers `node` serves.
fn served(lab: &TestLab, node: &str) -> Vec<String> {
    let mut v: Vec<String> =
        pods_of(lab, node).iter().map(|h| h["addresses"][0].as_str().unwrap_or_default().to_string()).collect();
    v.sort();
    v
}

/// A DEL that cannot reach the node (stopped, or not running) still succeeds and frees the
/// address; the pod the node kept must not refuse the next container IPAM gives it to.
#[test]
fn a_container_deleted_while_its_node_could_not_hear_leaves_no_ghost() {
    let lab = TestLab::up(&[]);
    let signal = |sig: &str| {
        let pid = lab.daemon_pid("node-a").to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().expect("kill").success());
    };
    let (a, a_ip) = run(&lab, "node-a");
    let (b, b_ip) = run(&lab, "node-a");
    // A frozen node: the DEL waits for it, gives up and frees the address.
    signal("-STOP");
    podman(&lab, "node-a", &["rm", "--force", "--time", "0", &a]);
    signal("-CONT");
    let (c, c_ip) = run(&lab, "node-a");
    assert_eq!(c_ip, a_ip, "IPAM gives the freed address again");
    container_pings(&lab, "node-a", &c, "10.244.3.1");
    let mut both = vec![format!("{b_ip}/32"), format!("{c_ip}/32")];
    both.sort();
    assert_eq!(served(&lab, "node-a"), both);
    // A node that is not running: started again, it forgets the container that went.
    signal("-KILL");
    podman(&lab, "node-a", &["rm", "--force", "--time", "0", &b]);
    let restart = lab.router(&["lab", "restart", "node-a"]);
    assert!(restart.status.success(), "{}", text(&restart.stderr));
    assert_eq!(served(&lab, "node-a"), [format!("{c_ip}/32")]);
    let (d, d_ip) = run(&lab, "node-a");
    assert_eq!(d_ip, b_ip, "IPAM gives the freed address again");
    container_pings(&lab, "node-a", &d, "10.244.2.1");
    assert!(lab.node_log("node-a").contains("pod forgotten"), "{}", lab.node_log("node-a"));

    // An ADD that fails leaves podman a created container that no node or IPAM knows; the
    // lab's mark on it lets `lab down` remove it too.
    signal("-KILL");
    let name = format!("{}-no-node", lab.name);
    let args = ["podman", "run", "-d", "--name", &name, "--network", "router", image(), "sleep", "600"];
    assert!(!lab.exec("node-a", &args).status.success(), "ADD with node-a not running");
    let exists = || Command::new("podman").args(["container", "exists", &name]).status().expect("podman").success();
    assert!(exists(), "podman keeps the container whose ADD failed");
    assert!(lab.down().status.success());
    assert!(!exists(), "lab down removed {name}");
}

/// Tun mode with VXLAN: the kernel forwards the container's packets into vxlan.calico, and
/// the node gives it the MTU that leaves room for VXLAN.
#[test]
fn containers_work_on_the_tun_data_plane_too() {
    let lab = TestLab::up(&["--dataplane", "tun", "--vxlan-mode", "cross-subnet"]);
    let (a, a_ip) = run(&lab, "node-a");
    assert_eq!(mtu_of(&lab, "node-a", &a), "1450");
    container_pings(&lab, "node-a", &a, "10.244.3.1");
    let (ok, out) = ping(&lab, "pod-b1", &["-c", "2", "-i", "0.2", "-W", "2", &a_ip]);
    assert!(ok, "{out}");
    // The kernel forwards in tun mode: it answers the container's ARP for the gateway.
    let listed = &pods_of(&lab, "node-a")[0];
    assert_eq!(listed["namespace_present"], true, "the container is up: {listed}");
    let cali = listed["interface"].as_str().unwrap_or_default().to_string();
    let proxy = lab.exec("node-a", &["cat", &format!("/proc/sys/net/ipv4/conf/{cali}/proxy_arp")]);
    assert_eq!(text(&proxy.stdout).trim(), "1");
    podman(&lab, "node-a", &["rm", "--force", "--time", "0", &a]);
    assert!(pods_of(&lab, "node-a").is_empty());
}

#[test]
fn in_a_lab_on_etcd_containers_get_their_addresses_from_etcd() {
    let lab = TestLab::up(&["--datastore", "etcd"]);
    let (c, c_ip) = run(&lab, "node-c");
    // pod-c1 holds .1 of node-c's block in etcd's IPAM, as the lab seeded it.
    assert_eq!(c_ip, "10.244.3.2");
    assert_eq!(mtu_of(&lab, "node-c", &c), "1480", "room for IPIP");
    container_pings(&lab, "node-c", &c, "10.244.1.1");
    let conf =
        std::fs::read_to_string(lab.dir.join(&lab.name).join("cni/node-c/net.d/10-router.conflist")).expect("conflist");
    assert!(conf.contains("etcd_endpoints"), "{conf}");
    podman(&lab, "node-c", &["rm", "--force", "--time", "0", &c]);
    let (again_id, again) = run(&lab, "node-c");
    assert_eq!(again, c_ip, "released in etcd and handed out again");
    // Calico's IPReservation keeps addresses from automatic assignment (.2, held already,
    // stays held); `podman run --ip` gets the address asked for, reserved or not, and one in
    // another node's block is borrowed and announced.
    apply(
        &lab,
        "apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: kept\nspec:\n  reservedCIDRs: [10.244.3.2/31]\n",
    );
    let (r, r_ip) = run(&lab, "node-c");
    assert_eq!(r_ip, "10.244.3.4", "around the reservation");
    let (k, k_ip) = run_with(&lab, "node-c", &["--ip", "10.244.3.3"]);
    assert_eq!(k_ip, "10.244.3.3", "asked for");
    let (b, b_ip) = run_with(&lab, "node-c", &["--ip", "10.244.2.40"]);
    assert_eq!(b_ip, "10.244.2.40");
    wait_until("node-a to learn 10.244.2.40/32 from node-c", || {
        let r = lab.json(&["routes", "--node", "node-a", "--json"]);
        r.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["prefix"] == "10.244.2.40/32" && e["next_hop"] == "192.168.200.101")
    });
    container_pings(&lab, "node-c", &b, "10.244.1.1");
    // `router ipam show` reads the lab's etcd: who holds it, and whose block lent it.
    let one = lab.router(&["ipam", "show", "--ip", "10.244.2.40"]);
    let said = text(&one.stdout);
    assert!(
        said.contains(&format!("in use by {b}@eth0; given to node-c, borrowed: block 10.244.2.0/26 is node-b's")),
        "{said}"
    );
    let reserved = text(&lab.router(&["ipam", "show", "--ip", "10.244.3.3"]).stdout);
    assert!(reserved.contains("in use by") && reserved.contains("reserved (IPReservation)"), "{reserved}");
    let table = text(&lab.router(&["ipam", "show", "--show-blocks"]).stdout);
    assert!(table.contains("reserved (IPReservation): 10.244.3.2/31"), "{table}");
    let row = table.lines().find(|l| l.contains("10.244.2.0/26")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("node-b") && row.ends_with(" 1"), "{row}");
    // Every address etcd holds is a pod or container some node serves.
    let check = lab.router(&["ipam", "check"]);
    assert!(check.status.success(), "{}{}", text(&check.stdout), text(&check.stderr));
    assert!(text(&check.stdout).contains("no leaked addresses"), "{}", text(&check.stdout));
    let taken =
        lab.exec("node-a", &["podman", "run", "--rm", "--network", "router", "--ip", "10.244.3.3", image(), "true"]);
    assert!(!taken.status.success() && text(&taken.stderr).contains("10.244.3.3 is in use"), "{}", text(&taken.stderr));
    // Each container has its workload endpoint in the lab's etcd, as Calico's plugin
    // leaves one; removed with the container.
    let endpoints = || -> Vec<(String, String)> {
        let list = lab.json(&["get", "wep", "-o", "json"]);
        let items = list["items"].as_array().cloned().unwrap_or_default();
        let cell = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        items.iter().map(|w| (cell(&w["spec"]["containerID"]), cell(&w["spec"]["ipNetworks"][0]))).collect()
    };
    let weps = endpoints();
    assert!(weps.contains(&(b.clone(), "10.244.2.40/32".into())), "{weps:?}");
    for id in [&r, &k, &b] {
        podman(&lab, "node-c", &["rm", "--force", "--time", "0", id]);
    }
    let weps = endpoints();
    assert!(!weps.iter().any(|(c, _)| [&r, &k, &b].contains(&c)), "{weps:?}");
    // The pool turned to VXLAN: a new container's MTU leaves room for it, with the same
    // conflist (the node says the MTU at each ADD).
    apply(
        &lab,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  \
         cidr: 10.244.0.0/16\n  blockSize: 26\n  ipipMode: Never\n  vxlanMode: Always\n  nodeSelector: all()\n",
    );
    wait_until("node-c's vxlan.calico", || {
        lab.exec("node-c", &["ip", "link", "show", "vxlan.calico"]).status.success()
    });
    let (v, _) = run(&lab, "node-c");
    assert_eq!(mtu_of(&lab, "node-c", &v), "1450", "room for VXLAN");
    container_pings(&lab, "node-c", &v, "10.244.1.1");
    podman(&lab, "node-c", &["rm", "--force", "--time", "0", &v]);
    // Calico's move to a new pool: the old one disabled hands out no address, while what
    // holds one keeps its routes and its tunnel. natOutgoing, turned on in the same change,
    // shows when the nodes have applied it.
    apply(
        &lab,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: default-ipv4-ippool\nspec:\n  \
         cidr: 10.244.0.0/16\n  blockSize: 26\n  ipipMode: CrossSubnet\n  natOutgoing: true\n  disabled: true\n  \
         nodeSelector: all()\n",
    );
    wait_until("pod-a1 to reach the underlay router, masqueraded", || {
        ping(&lab, "pod-a1", &["-c", "1", "-W", "1", "192.168.200.1"]).0
    });
    let way = lab.json(&["routes", "--node", "node-a", "--lookup", "10.244.3.1", "--json"]);
    assert_eq!(way["encap"], "ipip", "{way}");
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    container_pings(&lab, "node-c", &again_id, "10.244.1.1");
    let none = lab.exec("node-c", &["podman", "run", "--rm", "--network", "router", image(), "true"]);
    assert!(!none.status.success() && text(&none.stderr).contains("no enabled IPv4 IPPool"), "{}", text(&none.stderr));
    // Deleting it goes through, as in Calico, and says what that costs its workloads.
    let del = lab.router(&["delete", "ippool", "default-ipv4-ippool"]);
    let said = text(&del.stderr);
    assert!(del.status.success() && said.contains("pool 10.244.0.0/16 still has 5 addresses in use"), "{said}");
    // lab down removes it, though its address is in etcd, not in the lab's IPAM file.
    let down = lab.down();
    assert!(down.status.success(), "{}", text(&down.stderr));
    let ps =
        Command::new("podman").args(["ps", "-a", "-q", "--no-trunc", "--filter", &format!("id={again_id}")]).output();
    assert_eq!(ps.map(|o| text(&o.stdout)).unwrap_or_default().trim(), "", "container {again_id} is left");
}
