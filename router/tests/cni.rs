//! The CNI plugin as a runtime calls it: `router-cni` with the network config on stdin and
//! `CNI_*` in the environment, inside node-a's network namespace of a seed lab, against the
//! CNI 1.0.0 specification's results and errors. Root: it makes namespaces.

mod support;

use serde_json::{json, Value};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::*;

/// The plugin binary.
fn plugin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_router-cni"))
}

struct Cni<'a> {
    lab: &'a TestLab,
    conf: Value,
}

#[derive(Debug)]
struct Reply {
    code: i32,
    out: Value,
    raw: String,
}

impl Cni<'_> {
    fn new(lab: &TestLab) -> Cni<'_> {
        let dir = lab.dir.join(&lab.name);
        let conf = json!({
            "cniVersion": "1.0.0",
            "name": "router",
            "type": "router",
            "node": "node-a",
            "admin_socket": dir.join("node-a.sock"),
            "ipam_file": dir.join("ipam.json"),
            "blocks": ["10.244.1.0/26"],
            "mtu": 1480,
        });
        Cni { lab, conf }
    }

    /// Runs the plugin in node-a's namespace (as a runtime on node-a would).
    fn call(&self, command: &str, container: &str, netns: Option<&str>, stdin: &str) -> Reply {
        run_plugin(self.lab, "node-a", command, container, netns, stdin)
    }

    fn conf_with(&self, extra: &[(&str, Value)]) -> String {
        let mut c = self.conf.clone();
        for (k, v) in extra {
            c[*k] = v.clone();
        }
        c.to_string()
    }

    fn add(&self, container: &str, netns: &str) -> Reply {
        self.call("ADD", container, Some(netns), &self.conf.to_string())
    }
}

/// A container's network namespace, removed when the test ends (also when it fails).
struct Netns(String);

impl std::ops::Deref for Netns {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        del_netns(&self.0);
    }
}

fn netns(lab: &TestLab, name: &str) -> Netns {
    let ns = lab.ns(name);
    let out = Command::new("ip").args(["netns", "add", &ns]).output().expect("ip netns add");
    assert!(out.status.success(), "{}", text(&out.stderr));
    Netns(ns)
}

fn del_netns(ns: &str) {
    let _ = Command::new("ip").args(["netns", "del", ns]).output();
}

fn in_ns(ns: &str, cmd: &[&str]) -> (bool, String) {
    let o = Command::new("ip").args(["netns", "exec", ns]).args(cmd).output().expect("ip netns exec");
    (o.status.success(), text(&o.stdout) + &text(&o.stderr))
}

fn error_code(r: &Reply) -> u64 {
    assert_eq!(r.code, 1, "an error exits 1: {}", r.raw);
    assert!(r.out["msg"].is_string(), "an error has msg: {}", r.raw);
    r.out["code"].as_u64().expect("an error has a code")
}

fn address(r: &Reply) -> String {
    r.out["ips"][0]["address"].as_str().expect("ips[0].address").to_string()
}

#[test]
fn the_plugin_answers_as_the_cni_spec_says() {
    let lab = TestLab::up(&[]);
    let cni = Cni::new(&lab);
    let ns: Vec<Netns> = (0..10).map(|i| netns(&lab, &format!("ctr{i}"))).collect();
    let ipam = lab.dir.join(&lab.name).join("ipam.json");
    let held = || -> Value { serde_json::from_str(&std::fs::read_to_string(&ipam).expect("ipam")).expect("json") };

    // VERSION, and the errors of the spec's table.
    let v = cni.call("VERSION", "", None, r#"{"cniVersion":"1.0.0"}"#);
    assert_eq!(v.code, 0);
    let versions = v.out["supportedVersions"].as_array().expect("versions");
    assert!(versions.contains(&json!("1.0.0")) && versions.contains(&json!("1.1.0")), "{}", v.raw);
    assert_eq!(error_code(&cni.call("ADD", "c0", Some(&ns[0]), "{not json")), 6);
    assert_eq!(error_code(&cni.call("ADD", "c0", Some(&ns[0]), &cni.conf_with(&[("cniVersion", json!("0.9.9"))]))), 1);
    assert_eq!(error_code(&cni.call("ADD", "c0", None, &cni.conf.to_string())), 4, "no CNI_NETNS");
    assert_eq!(error_code(&cni.call("ADD", "c0", Some(&ns[0]), &cni.conf_with(&[("type", json!("bridge"))]))), 7);
    assert_eq!(error_code(&cni.call("ADD", "c0", Some("no-such-ns"), &cni.conf.to_string())), 3);

    // ADD: a Calico-style attachment the node serves at once.
    let a = cni.add("container0", &ns[0]);
    assert_eq!(a.code, 0, "{}", a.raw);
    assert_eq!(a.out["cniVersion"], "1.0.0");
    let addr = address(&a);
    assert!(addr.starts_with("10.244.1.") && addr.ends_with("/32"), "{addr}");
    let host = a.out["interfaces"][0]["name"].as_str().expect("host if").to_string();
    assert!(host.starts_with("cali") && host.len() == 15, "{host}");
    assert_eq!(a.out["interfaces"][1]["name"], "eth0");
    assert_eq!(a.out["interfaces"][1]["sandbox"], format!("/run/netns/{}", ns[0].0));
    assert_eq!(a.out["ips"][0]["gateway"], "169.254.1.1");
    let (_, routes) = in_ns(&ns[0], &["ip", "-4", "route"]);
    assert!(
        routes.contains("default via 169.254.1.1 dev eth0") && routes.contains("169.254.1.1 dev eth0 scope link"),
        "{routes}"
    );
    let (_, mtu) = in_ns(&ns[0], &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1480");
    let (ok, out) = in_ns(&ns[0], &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.3.1"]);
    assert!(ok, "the container reaches pod-c1 over IPIP: {out}");
    let ip = addr.trim_end_matches("/32");
    let (ok, out) = ping(&lab, "pod-b1", &["-c", "2", "-i", "0.2", "-W", "2", ip]);
    assert!(ok, "pod-b1 reaches the container: {out}");

    // ADD again: the same answer, nothing new held.
    let again = cni.add("container0", &ns[0]);
    assert_eq!(again.code, 0, "{}", again.raw);
    assert_eq!(address(&again), addr);
    assert_eq!(held()["allocations"].as_object().map(|m| m.len()), Some(5), "4 pods + 1 container");

    // CHECK against prevResult.
    let prev = cni.conf_with(&[("prevResult", a.out.clone())]);
    assert_eq!(cni.call("CHECK", "container0", Some(&ns[0]), &prev).code, 0);
    let mut wrong = a.out.clone();
    wrong["ips"][0]["address"] = json!("10.244.1.60/32");
    assert_eq!(
        error_code(&cni.call("CHECK", "container0", Some(&ns[0]), &cni.conf_with(&[("prevResult", wrong)]))),
        101
    );
    assert_eq!(error_code(&cni.call("CHECK", "container0", Some(&ns[0]), &cni.conf.to_string())), 7, "no prevResult");

    // Eight ADDs at once: eight addresses.
    let mut addrs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (1..9)
            .map(|i| {
                let (cni, ns) = (&cni, &ns);
                s.spawn(move || cni.add(&format!("container{i}"), &ns[i]))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("thread"))
            .map(|r| {
                assert_eq!(r.code, 0, "{}", r.raw);
                address(&r)
            })
            .collect()
    });
    addrs.push(addr.clone());
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 9, "an address was given twice: {addrs:?}");

    // DEL: gone from the kernel, the node and IPAM; again; after the netns is gone; unknown.
    let d = cni.call("DEL", "container0", Some(&ns[0]), &cni.conf.to_string());
    assert_eq!((d.code, d.raw.trim()), (0, ""), "DEL prints nothing");
    let st = lab.json(&["routes", "--node", "node-a", "--json"]);
    assert!(!st.to_string().contains(&format!("\"{ip}/32\"")), "the route stayed: {st}");
    assert!(!held()["allocations"].as_object().expect("map").contains_key(ip));
    assert!(!Command::new("ip")
        .args(["-n", &lab.ns("node-a"), "link", "show", &host])
        .output()
        .expect("ip")
        .status
        .success());
    assert_eq!(cni.call("DEL", "container0", Some(&ns[0]), &cni.conf.to_string()).code, 0, "DEL twice");
    del_netns(&ns[1]);
    assert_eq!(cni.call("DEL", "container1", Some(&ns[1]), &cni.conf.to_string()).code, 0, "DEL after the netns went");
    assert_eq!(cni.call("DEL", "never-seen", None, &cni.conf.to_string()).code, 0, "DEL of an unknown container");

    // GC (1.1): everything of node-a's containers but container2 goes.
    let gc = cni.conf_with(&[
        ("cniVersion", json!("1.1.0")),
        ("cni.dev/valid-attachments", json!([{"containerID": "container2", "ifname": "eth0"}])),
    ]);
    assert_eq!(cni.call("GC", "", None, &gc).code, 0);
    let left: Vec<String> = held()["allocations"]
        .as_object()
        .expect("map")
        .values()
        .map(|a| a["handle"].as_str().unwrap_or("").to_string())
        .filter(|h| !h.starts_with("pod:"))
        .collect();
    assert_eq!(left, vec!["container2@eth0".to_string()]);

    // Addresses asked for: `IP=` in CNI_ARGS (Calico's IPAM argument) and runtimeConfig.ips
    // (the `ips` capability: podman's --ip). One in another node's block is borrowed, and
    // that node's peers learn the /32 from node-a.
    let asked = |container: &str, netns: &str, conf: &str, args: &str| {
        run_plugin_with(&lab, "node-a", "ADD", container, Some(netns), conf, &[("CNI_ARGS", args)])
    };
    let plain = cni.conf.to_string();
    let r = asked("asked0", &ns[9], &plain, "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.244.1.40");
    assert_eq!((r.code, address(&r)), (0, "10.244.1.40/32".to_string()), "{}", r.raw);
    let (ok, out) = ping(&lab, "pod-b1", &["-c", "1", "-W", "2", "10.244.1.40"]);
    assert!(ok, "{out}");
    let by_runtime = cni.conf_with(&[("runtimeConfig", json!({"ips": ["10.244.2.50/24"]}))]);
    let r = asked("asked1", &ns[3], &by_runtime, "");
    assert_eq!((r.code, address(&r)), (0, "10.244.2.50/32".to_string()), "{}", r.raw);
    wait_for(10, "node-c to learn the borrowed 10.244.2.50/32 from node-a", || {
        let r = lab.json(&["routes", "--node", "node-c", "--json"]);
        r.as_array()
            .into_iter()
            .flatten()
            .any(|e| e["prefix"] == "10.244.2.50/32" && e["next_hop"] == "192.168.100.100")
    });
    let (ok, out) = ping(&lab, "pod-c1", &["-c", "1", "-W", "2", "10.244.2.50"]);
    assert!(ok, "{out}");
    // `router ipam show` reads the lab's IPAM file: node-b's block lent one address.
    let show = lab.router(&["ipam", "show", "--show-blocks"]);
    let table = text(&show.stdout);
    assert!(table.lines().any(|l| l.starts_with("IP Pool") && l.contains("10.244.0.0/16")), "{table}");
    let b = table.lines().find(|l| l.contains("10.244.2.0/26")).unwrap_or_else(|| panic!("{table}"));
    assert!(b.contains("node-b") && b.ends_with(" 1"), "one address lent: {b}");
    let one = lab.json(&["ipam", "show", "--ip", "10.244.2.50", "--json"]);
    assert_eq!((one["handle"].as_str(), one["borrowed_by"].as_str()), (Some("asked1@eth0"), Some("node-a")), "{one}");
    for (args, code, says) in [
        ("IP=10.244.1.40", 102, "10.244.1.40 is in use (by asked0@eth0)"),
        ("IP=10.244.1.300", 4, "10.244.1.300\\\" is not an address"),
        ("IP=10.244.1.41,10.244.1.42", 4, "a second IPv4 address"),
        ("IP=10.244.1.63", 102, "first or last address of block 10.244.1.0/26"),
        ("IP=10.9.0.1", 102, "in none of the blocks this IPAM file holds"),
        ("IP=fd00:10:244::9", 102, "node node-a has no IPv6 blocks"),
    ] {
        let r = asked("asked2", &ns[4], &plain, args);
        assert_eq!(error_code(&r), code, "{args}: {}", r.raw);
        assert!(r.raw.contains(says), "{args}: {}", r.raw);
    }
    let r = asked("asked2", &ns[4], &cni.conf_with(&[("runtimeConfig", json!({"ips": ["10.244.1/24"]}))]), "");
    assert_eq!(error_code(&r), 7, "{}", r.raw);
    // With the pool known (the lab's conflist names it), an address in no block claims the
    // block around it for the node, as Calico's IPAM does, and the node announces it.
    let pooled = cni.conf_with(&[("pool", json!("10.244.0.0/16")), ("block_size", json!(26))]);
    let r = asked("asked2", &ns[4], &pooled, "IP=10.9.0.1");
    assert!(error_code(&r) == 102 && r.raw.contains("outside the pool 10.244.0.0/16"), "{}", r.raw);
    let r = asked("asked2", &ns[4], &pooled, "IP=10.244.50.5");
    assert_eq!((r.code, address(&r)), (0, "10.244.50.5/32".to_string()), "{}", r.raw);
    let show = text(&lab.router(&["ipam", "show", "--show-blocks"]).stdout);
    assert!(show.lines().any(|l| l.contains("10.244.50.0/26") && l.contains("node-a")), "{show}");
    wait_for(10, "node-c to learn 10.244.50.5/32 from node-a", || {
        let r = lab.json(&["routes", "--node", "node-c", "--lookup", "10.244.50.5", "--json"]);
        r["prefix"] == "10.244.50.5/32" && r["next_hop"] == "192.168.100.100"
    });
    let (ok, out) = ping(&lab, "pod-c1", &["-c", "1", "-W", "2", "10.244.50.5"]);
    assert!(ok, "{out}");
    for c in ["asked0", "asked1", "asked2"] {
        assert_eq!(cni.call("DEL", c, None, &plain).code, 0);
    }
    // What a crash leaves behind, found by `router ipam check` (container2 and the pods are
    // served, so only these): an address no node serves, one given to a node that does not
    // exist, a block of that node. --release frees them all.
    ipam_file_alloc(&ipam, "10.244.1.44", "gone@eth0", "node-a");
    ipam_file_alloc(&ipam, "10.244.2.45", "x@eth0", "node-z");
    ipam_file_block(&ipam, "10.244.9.0/26", "node-z");
    let check = lab.router(&["ipam", "check"]);
    let report = text(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{report}");
    for line in [
        "leaked     10.244.1.44     gone@eth0   given to node-a, and no node serves pod gone",
        "orphaned   10.244.2.45     x@eth0      given to node-z, which is not a node",
        "block      10.244.9.0/26   -           affine to node-z, which is not a node",
    ] {
        assert!(report.contains(line), "{line:?} in:\n{report}");
    }
    assert_eq!(report.lines().count(), 5, "nothing else is held for nothing:\n{report}");
    let fixed = lab.router(&["ipam", "check", "--release"]);
    assert!(fixed.status.success(), "{}{}", text(&fixed.stdout), text(&fixed.stderr));
    let clean = lab.router(&["ipam", "check", "--json"]);
    let clean: Value = serde_json::from_slice(&clean.stdout).expect("json");
    assert_eq!(clean["findings"], json!([]), "{clean}");
    // One address, by hand: `router ipam release`.
    let leak = ipam_file_alloc(&ipam, "10.244.1.44", "gone@eth0", "node-a");
    let rel = lab.router(&["ipam", "release", "--ip", "10.244.1.44"]);
    assert_eq!(text(&rel.stdout).trim(), "released 10.244.1.44 (held by gone@eth0)", "{}", text(&rel.stderr));
    assert!(!held()["allocations"].as_object().expect("map").contains_key("10.244.1.44"), "{leak}");
    let again = lab.router(&["ipam", "release", "--ip", "10.244.1.44"]);
    assert!(!again.status.success() && text(&again.stderr).contains("not allocated"));

    // The workload's name from CNI_ARGS (Kubernetes' namespace and pod; podman's container
    // name): the node serves the pod by it, another workload of that name is refused, CHECK
    // and a DEL without CNI_ARGS (as GC makes it) find the pod by its interface, and
    // `router ipam check` counts it as served. A MAC asked for is the interface's.
    let k8s = "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=k8s1";
    let mac_conf = cni.conf_with(&[("runtimeConfig", json!({"mac": "0A:58:0A:F4:01:2A"}))]);
    let named = run_plugin_with(&lab, "node-a", "ADD", "k8s1", Some(&ns[4]), &mac_conf, &[("CNI_ARGS", k8s)]);
    assert_eq!(named.code, 0, "{}", named.raw);
    assert_eq!(named.out["interfaces"][1]["mac"], "0a:58:0a:f4:01:2a", "{}", named.raw);
    let (_, link) = in_ns(&ns[4], &["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("link/ether 0a:58:0a:f4:01:2a"), "{link}");
    let containers = |node: &str| -> Vec<String> {
        let st = lab.json(&["lab", "status", "--json"]);
        st.as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["role"] == "container" && h["parent"] == node)
            .map(|h| h["host"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(containers("node-a").contains(&"shop.web-0".to_string()), "{:?}", containers("node-a"));
    let twin = run_plugin_with(&lab, "node-a", "ADD", "k8s2", Some(&ns[9]), &plain, &[("CNI_ARGS", k8s)]);
    assert_eq!(error_code(&twin), 100, "{}", twin.raw);
    assert!(twin.raw.contains("pod shop.web-0 is served already (container k8s1) on cali"), "{}", twin.raw);
    let podman = "IgnoreUnknown=1;K8S_POD_NAME=frontend;MAC=0a:58:0a:f4:01:2b";
    let by_name = run_plugin_with(&lab, "node-a", "ADD", "pm1", Some(&ns[9]), &plain, &[("CNI_ARGS", podman)]);
    assert_eq!(
        (by_name.code, &by_name.out["interfaces"][1]["mac"]),
        (0, &json!("0a:58:0a:f4:01:2b")),
        "{}",
        by_name.raw
    );
    assert!(containers("node-a").contains(&"frontend".to_string()));
    let prev = cni.conf_with(&[("prevResult", named.out.clone())]);
    assert_eq!(cni.call("CHECK", "k8s1", Some(&ns[4]), &prev).code, 0, "found by its interface");
    let check = lab.router(&["ipam", "check"]);
    assert!(check.status.success(), "named pods are served: {}", text(&check.stdout));
    for (conf, args, code, says) in [
        (&plain, "MAC=01:00:5e:00:00:01", 4, "multicast or zero"),
        (&plain, "MAC=0a:58:0a:f4:01", 4, "is not a MAC address"),
        (&cni.conf_with(&[("runtimeConfig", json!({"mac": "zz:58:0a:f4:01:2b"}))]), "", 7, "is not a MAC address"),
    ] {
        let r = run_plugin_with(&lab, "node-a", "ADD", "badmac", Some(&ns[5]), conf, &[("CNI_ARGS", args)]);
        assert_eq!(error_code(&r), code, "{args}: {}", r.raw);
        assert!(r.raw.contains(says), "{args}: {}", r.raw);
    }
    for c in ["k8s1", "pm1"] {
        assert_eq!(cni.call("DEL", c, None, &plain).code, 0);
    }
    let left = containers("node-a");
    assert!(!left.iter().any(|n| n == "shop.web-0" || n == "frontend"), "{left:?}");

    // STATUS (1.1): the node answers; with no node, code 50.
    let status = cni.conf_with(&[("cniVersion", json!("1.1.0"))]);
    assert_eq!(cni.call("STATUS", "", None, &status).code, 0);
    let gone = cni.conf_with(&[("cniVersion", json!("1.1.0")), ("admin_socket", json!("/nonexistent.sock"))]);
    assert_eq!(error_code(&cni.call("STATUS", "", None, &gone)), 50);

    // `router cni install`: the conflist for node-a and the plugin, as a runtime finds them.
    let dir = lab.dir.join(format!("{}-install", lab.name));
    let node_conf = lab.dir.join(&lab.name).join("node-a.toml");
    let (conf_dir, bin_dir) = (dir.join("net.d"), dir.join("bin"));
    let out = lab.router(&[
        "cni",
        "install",
        "--node-config",
        node_conf.to_str().unwrap_or_default(),
        "--conf-dir",
        conf_dir.to_str().unwrap_or_default(),
        "--bin-dir",
        bin_dir.to_str().unwrap_or_default(),
        "--ipam-file",
        dir.join("ipam.json").to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(conf_dir.join("10-router.conflist")).expect("conflist"))
            .expect("JSON");
    assert_eq!((list["name"].as_str(), list["cniVersion"].as_str()), (Some("router"), Some("1.0.0")));
    let p = &list["plugins"][0];
    assert_eq!((p["type"].as_str(), p["node"].as_str()), (Some("router"), Some("node-a")));
    assert!(p.get("mtu").is_none(), "the MTU is the node's to say: {p}");
    assert_eq!(p["blocks"], json!(["10.244.1.0/26"]));
    assert_eq!(
        p["capabilities"],
        json!({"ips": true, "mac": true}),
        "runtimes pass --ip and --mac-address as runtimeConfig"
    );
    assert_eq!(p["admin_socket"].as_str().map(PathBuf::from), Some(lab.dir.join(&lab.name).join("node-a.sock")));
    let mut v = Command::new(bin_dir.join("router"))
        .env_clear()
        .env("CNI_COMMAND", "VERSION")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the installed plugin runs");
    v.stdin.take().expect("stdin").write_all(br#"{"cniVersion":"1.0.0"}"#).expect("write");
    let v = v.wait_with_output().expect("VERSION");
    assert!(text(&v.stdout).contains("supportedVersions"), "{}", text(&v.stdout));

    // The installed network with its own, new IPAM file (a host's first container): the
    // node's configured pods hold .1 and .2, so the container gets .3, and keeps them held.
    let mut installed = p.clone();
    installed["cniVersion"] = list["cniVersion"].clone();
    installed["name"] = list["name"].clone();
    let ns = netns(&lab, "c-host");
    let r = cni.call("ADD", "host0", Some(&ns), &installed.to_string());
    assert_eq!((r.code, address(&r).as_str()), (0, "10.244.1.3/32"), "{}", r.raw);
    // The node's MTU for pods: its uplink's 1500 less IPIP's 20 (the seed pool is CrossSubnet).
    let (_, mtu) = in_ns(&ns.0, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1480");
    let held = std::fs::read_to_string(dir.join("ipam.json")).expect("the host's IPAM file");
    assert!(held.contains("pod:pod-a1") && held.contains("pod:pod-a2"), "{held}");
    assert_eq!(cni.call("DEL", "host0", Some(&ns), &installed.to_string()).code, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Holds `ip` for `handle` of `node` in the IPAM file as a plugin call would; the file's text.
fn ipam_file_alloc(file: &std::path::Path, ip: &str, handle: &str, node: &str) -> String {
    ipam_file_edit(file, |st| st["allocations"][ip] = json!({"handle": handle, "node": node}))
}

fn ipam_file_block(file: &std::path::Path, block: &str, node: &str) -> String {
    ipam_file_edit(file, |st| st["blocks"][block] = json!(node))
}

fn ipam_file_edit(file: &std::path::Path, edit: impl FnOnce(&mut Value)) -> String {
    let mut st: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("ipam")).expect("json");
    edit(&mut st);
    let text = serde_json::to_string_pretty(&st).expect("json");
    std::fs::write(file, &text).expect("write ipam");
    text
}

/// etcd inside node-a's namespace, on its loopback and its underlay address (so node-b's
/// plugin reaches it over the lab network); gone when dropped.
struct NodeEtcd {
    child: std::process::Child,
    dir: PathBuf,
}

impl Drop for NodeEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the plugin as a runtime on `node` would: `stdin` as the network config.
fn run_plugin(lab: &TestLab, node: &str, command: &str, container: &str, netns: Option<&str>, stdin: &str) -> Reply {
    run_plugin_with(lab, node, command, container, netns, stdin, &[])
}

/// [`run_plugin`] with more of the environment (`CNI_ARGS`).
fn run_plugin_with(
    lab: &TestLab,
    node: &str,
    command: &str,
    container: &str,
    netns: Option<&str>,
    stdin: &str,
    env: &[(&str, &str)],
) -> Reply {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &lab.ns(node)])
        .arg(plugin())
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = netns {
        c.env("CNI_NETNS", format!("/run/netns/{n}"));
    }
    c.envs(env.iter().copied());
    let mut child = c.spawn().expect("run the plugin");
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write config");
    let o = child.wait_with_output().expect("plugin ends");
    let raw = text(&o.stdout);
    let out = if raw.trim().is_empty() { Value::Null } else { serde_json::from_str(&raw).expect("stdout is JSON") };
    Reply { code: o.status.code().unwrap_or(-1), out, raw }
}

fn plugin_call(lab: &TestLab, node: &str, conf: &Value, command: &str, container: &str, netns: Option<&str>) -> Reply {
    run_plugin(lab, node, command, container, netns, &conf.to_string())
}

/// etcd in node-a's namespace, holding the blocks and the addresses of the lab's pods (as
/// they would have got them).
fn node_a_etcd(lab: &TestLab) -> NodeEtcd {
    let dir = lab.dir.join(format!("{}-etcd", lab.name));
    let child = lab::etcd_command(&lab.ns("node-a"), &dir.join("data"), "http://192.168.100.100:2379")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (etcd-server)");
    let etcd = NodeEtcd { child, dir };
    // The topology's pods hold their addresses in etcd too (as they would have got them).
    let ns_a = lab.ns("node-a");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(format!("/run/netns/{ns_a}")).expect("netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let ipam = datastore::ipam::Ipam::new(etcd);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while ipam.blocks::<ipnet::Ipv4Net>().is_err() {
            assert!(std::time::Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let pool: ipnet::Ipv4Net = "10.244.0.0/16".parse().expect("pool");
        for (node, block, block6, pods) in [
            ("node-a", "10.244.1.0/26", "fd00:10:244::/122", 2),
            ("node-b", "10.244.2.0/26", "fd00:10:244::40/122", 1),
            ("node-c", "10.244.3.0/26", "fd00:10:244::80/122", 1),
        ] {
            let (block, block6): (ipnet::Ipv4Net, ipnet::Ipv6Net) =
                (block.parse().expect("block"), block6.parse().expect("block"));
            assert!(ipam.claim(node, block).expect("claim"));
            for i in 0..pods {
                let handle = format!("pod:{node}-{i}");
                ipam.allocate(node, &handle, pool, 26).expect("seed");
                // A dual-stack lab's pods hold their IPv6 addresses too.
                ipam.allocate_in(node, &handle, &[block6]).expect("seed IPv6");
            }
        }
    })
    .join()
    .expect("seed etcd");
    etcd
}

#[test]
fn with_etcd_endpoints_the_plugin_keeps_addresses_in_etcd_for_every_host() {
    let lab = TestLab::up(&[]);
    let _etcd = node_a_etcd(&lab);
    let conf = |node: &str, block: &str, endpoint: &str| {
        json!({
            "cniVersion": "1.0.0", "name": "router", "type": "router", "node": node,
            "admin_socket": lab.dir.join(&lab.name).join(format!("{node}.sock")),
            "etcd_endpoints": [endpoint], "pool": "10.244.0.0/16", "block_size": 26,
            "blocks": [block], "mtu": 1480,
        })
    };
    let conf_a = conf("node-a", "10.244.1.0/26", "http://127.0.0.1:2379");
    let conf_b = conf("node-b", "10.244.2.0/26", "http://192.168.100.100:2379");
    let (x, y) = (netns(&lab, "ex"), netns(&lab, "ey"));
    let a = plugin_call(&lab, "node-a", &conf_a, "ADD", "cx", Some(&x));
    assert_eq!(a.code, 0, "{}", a.raw);
    assert_eq!(address(&a), "10.244.1.3/32", "after the two pods node-a holds in etcd");
    let b = plugin_call(&lab, "node-b", &conf_b, "ADD", "cy", Some(&y));
    assert_eq!(b.code, 0, "node-b's plugin, over the lab network: {}", b.raw);
    assert_eq!(address(&b), "10.244.2.2/32");
    let (ok, out) = in_ns(&x, &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.244.2.2"]);
    assert!(ok, "container to container: {out}");
    // Each container's workload endpoint, as Calico's plugin writes it: named by node,
    // orchestrator `cni`, container and interface (dashes doubled), in `default`.
    let weps = endpoints(&lab);
    let names: Vec<&str> = weps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["default/node--a-cni-cx-eth0", "default/node--b-cni-cy-eth0"]);
    let spec = &weps[0].1["spec"];
    assert_eq!(
        (&spec["node"], &spec["orchestrator"], &spec["containerID"], &spec["endpoint"], &spec["ipNetworks"]),
        (&json!("node-a"), &json!("cni"), &json!("cx"), &json!("eth0"), &json!(["10.244.1.3/32"])),
        "{spec}"
    );
    assert_eq!(spec["interfaceName"], a.out["interfaces"][0]["name"], "{spec}");
    assert_eq!(spec["mac"], a.out["interfaces"][1]["mac"], "{spec}");
    assert_eq!(spec["ipv4Gateway"], "169.254.1.1");
    // CHECK, DEL and DEL again against etcd.
    let prev = {
        let mut c = conf_a.clone();
        c["prevResult"] = a.out.clone();
        c
    };
    assert_eq!(plugin_call(&lab, "node-a", &prev, "CHECK", "cx", Some(&x)).code, 0);
    assert_eq!(plugin_call(&lab, "node-a", &conf_a, "DEL", "cx", Some(&x)).code, 0);
    assert_eq!(plugin_call(&lab, "node-a", &conf_a, "DEL", "cx", Some(&x)).code, 0);
    assert_eq!(endpoint_names(&lab), ["default/node--b-cni-cy-eth0"], "DEL takes the endpoint");
    let again = plugin_call(&lab, "node-a", &conf_a, "ADD", "cz", Some(&x));
    assert_eq!(address(&again), "10.244.1.3/32", "the released address is free again");
    assert_eq!(plugin_call(&lab, "node-b", &conf_b, "DEL", "cy", Some(&y)).code, 0);
    assert_eq!(plugin_call(&lab, "node-a", &conf_a, "DEL", "cz", Some(&x)).code, 0);
    // etcd out of reach is a condition that passes: "try again later", as with the node.
    let away = conf("node-b", "10.244.2.0/26", "http://192.168.100.100:2999");
    let r = plugin_call(&lab, "node-b", &away, "ADD", "cw", Some(&y));
    assert_eq!(error_code(&r), 11, "{}", r.raw);
    assert!(r.raw.contains("etcd does not answer") && r.raw.contains("Connection refused"), "{}", r.raw);
    // STATUS (1.1) says so too: ADD needs etcd as much as the node.
    let v11 = |mut c: Value| {
        c["cniVersion"] = json!("1.1.0");
        c
    };
    assert_eq!(plugin_call(&lab, "node-b", &v11(conf_b.clone()), "STATUS", "", None).code, 0);
    let r = plugin_call(&lab, "node-b", &v11(away), "STATUS", "", None);
    assert_eq!(error_code(&r), 50, "{}", r.raw);
    assert!(r.raw.contains("no etcd endpoint answers"), "{}", r.raw);
    // A Kubernetes pod named in CNI_ARGS: Calico's attributes beside its address in etcd.
    let args = [("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0")];
    let k8s = run_plugin_with(&lab, "node-a", "ADD", "ck", Some(&x), &conf_a.to_string(), &args);
    assert_eq!((k8s.code, address(&k8s)), (0, "10.244.1.3/32".to_string()), "{}", k8s.raw);
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let kv = etcd.get("/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26").expect("get").expect("block");
        let block: Value = serde_json::from_slice(&kv.value).expect("json");
        let at = block["allocations"][3].as_u64().expect("10.244.1.3 in use") as usize;
        let attr = &block["attributes"][at];
        assert_eq!(attr["handle_id"], "ck@eth0", "{block}");
        let s = &attr["secondary"];
        assert_eq!(
            (&s["namespace"], &s["pod"], &s["node"]),
            (&json!("shop"), &json!("web-0"), &json!("node-a")),
            "{s}"
        );
        assert!(s["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");
    });
    // Its endpoint is the pod's (orchestrator k8s) in the pod's namespace.
    let weps = endpoints(&lab);
    let (name, wep) = weps.iter().find(|(n, _)| n.starts_with("shop/")).expect("the pod's endpoint");
    assert_eq!(name, "shop/node--a-k8s-web--0-eth0");
    assert_eq!((&wep["spec"]["pod"], &wep["spec"]["containerID"]), (&json!("web-0"), &json!("ck")));
    assert_eq!(wep["metadata"]["labels"]["projectcalico.org/namespace"], "shop");
    // CHECK sees it; with it deleted behind the plugin's back, CHECK says so, and ADD
    // again writes it again.
    let mut prev = conf_a.clone();
    prev["prevResult"] = k8s.out.clone();
    let check = run_plugin_with(&lab, "node-a", "CHECK", "ck", Some(&x), &prev.to_string(), &args);
    assert_eq!(check.code, 0, "{}", check.raw);
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let store = datastore::Store::new(etcd);
        let wep = datastore::resources::Kind::WorkloadEndpoint;
        assert!(store.delete_in(wep, Some("shop"), "node--a-k8s-web--0-eth0").expect("delete"));
    });
    let check = run_plugin_with(&lab, "node-a", "CHECK", "ck", Some(&x), &prev.to_string(), &args);
    assert!(check.raw.contains("workloadendpoints/shop/node--a-k8s-web--0-eth0 is gone"), "{}", check.raw);
    let k8s_again = run_plugin_with(&lab, "node-a", "ADD", "ck", Some(&x), &conf_a.to_string(), &args);
    assert_eq!((k8s_again.code, address(&k8s_again)), (0, "10.244.1.3/32".to_string()), "{}", k8s_again.raw);
    assert!(endpoint_names(&lab).contains(&"shop/node--a-k8s-web--0-eth0".to_string()));
    // A name that cannot make an endpoint is refused before anything is done.
    let bad = [("CNI_ARGS", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-")];
    let refused = run_plugin_with(&lab, "node-a", "ADD", "cb", Some(&y), &conf_a.to_string(), &bad);
    assert!(refused.code != 0 && refused.raw.contains("spec.pod"), "{}", refused.raw);
    // DEL without CNI_ARGS (a runtime that forgot the pod) still finds the endpoint.
    assert_eq!(plugin_call(&lab, "node-a", &conf_a, "DEL", "ck", Some(&x)).code, 0);
    assert!(!endpoint_names(&lab).iter().any(|n| n.starts_with("shop/")), "{:?}", endpoint_names(&lab));
    // Calico's IPPool nodeSelector: a pool for rack r2, which node-b is in, and the default
    // pool for the other racks. node-b's next container gets its address from the rack's
    // pool (announced by node-b as a /32), node-a's still from the default one.
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let pool = |name: &str, cidr: &str, sel: &str| {
            format!("---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  nodeSelector: {sel}\n")
        };
        let yaml = [
            pool("default-ipv4-ippool", "10.244.0.0/16", "rack != 'r2'"),
            pool("rack-r2", "10.250.0.0/16", "rack == 'r2'"),
            "---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: node-b\n  labels:\n    rack: r2\n"
                .into(),
        ]
        .concat();
        let rs = datastore::resources::parse(&yaml).expect("resources");
        datastore::Store::new(etcd).apply_all(&rs).expect("apply");
    });
    let b = plugin_call(&lab, "node-b", &conf_b, "ADD", "cr", Some(&y));
    assert_eq!((b.code, address(&b)), (0, "10.250.0.1/32".to_string()), "{}", b.raw);
    let a = plugin_call(&lab, "node-a", &conf_a, "ADD", "cx", Some(&x));
    assert!(address(&a).starts_with("10.244.1."), "{}", a.raw);
    wait_for(10, "node-a's container to reach the one from rack r2's pool", || {
        in_ns(&x, &["ping", "-c", "1", "-W", "1", "10.250.0.1"]).0
    });
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let store = datastore::Store::new(etcd);
        store.delete(datastore::resources::Kind::IpPool, "default-ipv4-ippool").expect("delete");
        // Pools that select node-a but are not for containers: Calico's manual assignment
        // and a pool for tunnel addresses only.
        let yaml = "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: manual\nspec:\n  cidr: 10.251.0.0/16\n  assignmentMode: Manual\n\
---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: tunnels\nspec:\n  cidr: 10.252.0.0/16\n  allowedUses: [Tunnel]\n";
        store.apply_all(&datastore::resources::parse(yaml).expect("pools")).expect("apply");
    });
    let none = plugin_call(&lab, "node-a", &conf_a, "ADD", "cn", Some(&x));
    assert!(none.raw.contains("no enabled IPv4 IPPool's nodeSelector selects node node-a"), "{}", none.raw);
    // Calico's ipv4_pools: a network that names its pools, the Manual one included (by
    // name or CIDR); a pool not for workloads, or none at all, is refused.
    let with_pools = |pools: Value| {
        let mut c = conf_a.clone();
        c["ipv4_pools"] = pools;
        c
    };
    let z = netns(&lab, "ez");
    let m = plugin_call(&lab, "node-a", &with_pools(json!(["manual"])), "ADD", "cm", Some(&z));
    assert_eq!(m.code, 0, "{}", m.raw);
    assert_eq!(address(&m), "10.251.0.1/32");
    let (ok, out) = ping(&lab, "pod-b1", &["-c", "1", "-W", "2", "10.251.0.1"]);
    assert!(ok, "node-a announces the manual pool's address: {out}");
    let t = plugin_call(&lab, "node-a", &with_pools(json!(["10.252.0.0/16"])), "ADD", "ct", Some(&z));
    assert!(t.raw.contains("none of the network's IPv4 pools (10.252.0.0/16) is for workloads"), "{}", t.raw);
    let n = plugin_call(&lab, "node-a", &with_pools(json!(["nope"])), "ADD", "ct", Some(&z));
    assert_eq!(error_code(&n), 7, "{}", n.raw);
    // GC in an etcd that Calico's own plugin shares: node-a's containers the runtime no
    // longer lists go (cm), the one it lists stays (cx), and the address Calico's IPAM gave
    // one of its pods on the same node is not ours to collect.
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let block = json!({"cidr": "10.253.0.0/30", "affinity": "host:node-a", "allocations": [null, 0, null, null],
            "unallocated": [2, 3, 0], "attributes": [{"handle_id": "k8s-pod-network.c0ffee",
            "secondary": {"namespace": "default", "node": "node-a", "pod": "theirs"}}],
            "sequenceNumber": 2, "sequenceNumberForAllocation": {"1": 1}, "deleted": false});
        etcd.put("/calico/ipam/v2/assignment/ipv4/block/10.253.0.0-30", block.to_string().as_bytes()).expect("put");
        etcd.put("/calico/ipam/v2/handle/k8s-pod-network.c0ffee", br#"{"block":{"10.253.0.0/30":1},"deleted":false}"#)
            .expect("put");
        // Endpoints: one of a container that holds no address any more (its DEL was cut
        // short), and one of a configured pod, which GC leaves to its node.
        let store = datastore::Store::new(etcd);
        for (orchestrator, id) in [("cni", "gone"), ("router", "pod-a1")] {
            let e = datastore::endpoints::Endpoint {
                node: "node-a".into(),
                orchestrator: orchestrator.into(),
                namespace: "default".into(),
                workload: id.into(),
                container_id: id.into(),
                endpoint: "eth0".into(),
                ..Default::default()
            };
            store.apply(&e.resource().expect("endpoint")).expect("apply");
        }
    });
    let mut gc = conf_a.clone();
    gc["cniVersion"] = json!("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "cx", "ifname": "eth0"}]);
    assert_eq!(plugin_call(&lab, "node-a", &gc, "GC", "", None).code, 0);
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let ipam = datastore::ipam::Ipam::new(etcd.clone());
        let mut left = ipam.handles("node-a").expect("handles");
        left.retain(|h| !h.starts_with("pod:"));
        assert_eq!(left, ["cx@eth0", "k8s-pod-network.c0ffee"]);
        assert!(etcd.get("/calico/ipam/v2/handle/k8s-pod-network.c0ffee").expect("get").is_some());
        assert!(etcd.get("/calico/ipam/v2/handle/cm@eth0").expect("get").is_none());
    });
    let mut left = endpoint_names(&lab);
    left.retain(|n| n.contains("node--a"));
    assert_eq!(left, ["default/node--a-cni-cx-eth0", "default/node--a-router-pod--a1-eth0"]);
    assert_eq!(plugin_call(&lab, "node-a", &conf_a, "DEL", "cm", Some(&z)).code, 0);
    assert_eq!(plugin_call(&lab, "node-b", &conf_b, "DEL", "cr", Some(&y)).code, 0);
    assert_eq!(plugin_call(&lab, "node-a", &conf_a, "DEL", "cx", Some(&x)).code, 0);
}

/// Runs `f` on a thread in node-a's network namespace (where the test's etcd listens).
fn in_node_a<R: Send + 'static>(lab: &TestLab, f: impl FnOnce() -> R + Send + 'static) -> R {
    let ns_a = lab.ns("node-a");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(format!("/run/netns/{ns_a}")).expect("netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("in node-a's namespace")
}

/// The workload endpoints in the test's etcd: `namespace/name` and the whole resource.
fn endpoints(lab: &TestLab) -> Vec<(String, Value)> {
    in_node_a(lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let store = datastore::Store::new(etcd);
        let all = store.get_in(datastore::resources::Kind::WorkloadEndpoint, None, None).expect("endpoints");
        all.iter()
            .map(|s| &s.resource)
            .map(|r| (format!("{}/{}", r.namespace().unwrap_or("?"), r.name()), r.to_json()))
            .collect()
    })
}

fn endpoint_names(lab: &TestLab) -> Vec<String> {
    endpoints(lab).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn on_a_dual_stack_node_a_container_gets_a_128_too() {
    let lab = TestLab::up(&["--dual-stack"]);
    let mut cni = Cni::new(&lab);
    cni.conf["blocks6"] = json!(["fd00:10:244::/122"]);
    let ns = netns(&lab, "ctr6");
    let a = cni.add("container6", &ns);
    assert_eq!(a.code, 0, "{}", a.raw);
    // Both families in the result: the IPv6 one after node-a's two pods, with Calico's
    // link-local gateway and default route.
    let ips = a.out["ips"].as_array().expect("ips");
    assert_eq!(ips.len(), 2, "{}", a.raw);
    assert_eq!(
        (ips[1]["address"].as_str(), ips[1]["gateway"].as_str()),
        (Some("fd00:10:244::3/128"), Some("fe80::ecee:eeff:feee:eeee"))
    );
    assert!(a.out["routes"].as_array().expect("routes").iter().any(|r| r["dst"] == "::/0"), "{}", a.raw);
    let (_, routes) = in_ns(&ns, &["ip", "-6", "route"]);
    assert!(routes.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"), "{routes}");
    // It reaches and is reached over IPv6, across the underlay.
    let (ok, out) = in_ns(&ns, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:10:244::81"]);
    assert!(ok, "the container reaches pod-c1: {out}");
    let (ok, out) = ping(&lab, "pod-c1", &["-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:10:244::3"]);
    assert!(ok, "pod-c1 reaches the container: {out}");
    let r = lab.json(&["routes", "--node", "node-a", "--lookup", "fd00:10:244::3", "--json"]);
    assert_eq!(r["prefix"], "fd00:10:244::3/128", "the node serves it: {r}");
    // CHECK knows both; DEL frees both.
    let prev = cni.conf_with(&[("prevResult", a.out.clone())]);
    assert_eq!(cni.call("CHECK", "container6", Some(&ns), &prev).code, 0);
    let (ok, _) = in_ns(&ns, &["ip", "-6", "addr", "del", "fd00:10:244::3/128", "dev", "eth0"]);
    assert!(ok);
    assert_eq!(error_code(&cni.call("CHECK", "container6", Some(&ns), &prev)), 101);
    assert_eq!(cni.call("DEL", "container6", Some(&ns), &cni.conf.to_string()).code, 0);
    let ipam: Value =
        serde_json::from_str(&std::fs::read_to_string(lab.dir.join(&lab.name).join("ipam.json")).expect("ipam"))
            .expect("json");
    assert!(!ipam["allocations6"].as_object().expect("map").contains_key("fd00:10:244::3"), "{ipam}");
}

/// Dual stack with IPAM in etcd: both addresses come from etcd, the IPv6 one from the
/// node's own IPv6 block there; CHECK knows both, DEL frees both, and an IPv6 block that
/// another node holds in etcd is refused with the reason. No IPAM file is involved.
#[test]
fn on_a_dual_stack_node_with_etcd_a_container_gets_its_128_from_etcd_too() {
    let lab = TestLab::up(&["--dual-stack"]);
    let _etcd = node_a_etcd(&lab);
    let mut cni = Cni::new(&lab);
    cni.conf.as_object_mut().expect("object").remove("ipam_file");
    cni.conf["etcd_endpoints"] = json!(["http://127.0.0.1:2379"]);
    cni.conf["pool"] = json!("10.244.0.0/16");
    cni.conf["blocks6"] = json!(["fd00:10:244::/122"]);
    let ns = netns(&lab, "ctr6e");
    let a = cni.add("container6e", &ns);
    assert_eq!(a.code, 0, "{}", a.raw);
    let ips: Vec<&str> = a.out["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(ips, ["10.244.1.3/32", "fd00:10:244::3/128"], "{}", a.raw);
    let (ok, out) = in_ns(&ns, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:10:244::81"]);
    assert!(ok, "the container reaches pod-c1 over IPv6: {out}");
    let st = lab.json(&["lab", "status", "--json"]);
    let row = st.as_array().into_iter().flatten().find(|h| h["role"] == "container").expect("the container listed");
    assert_eq!(row["addresses"], json!(["10.244.1.3/32", "fd00:10:244::3/128"]), "{row}");
    let prev = cni.conf_with(&[("prevResult", a.out.clone())]);
    assert_eq!(cni.call("CHECK", "container6e", Some(&ns), &prev).code, 0);
    assert_eq!(cni.call("DEL", "container6e", Some(&ns), &cni.conf.to_string()).code, 0);
    // Both were freed: the next container gets the same two addresses.
    let again = cni.add("container6f", &ns);
    let ips: Vec<&str> =
        again.out["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(ips, ["10.244.1.3/32", "fd00:10:244::3/128"], "{}", again.raw);
    assert_eq!(cni.call("DEL", "container6f", Some(&ns), &cni.conf.to_string()).code, 0);
    // A host configured with node-b's IPv6 block: etcd says whose it is, and the IPv4
    // address it took goes back.
    let mut wrong = cni.conf.clone();
    wrong["blocks6"] = json!(["fd00:10:244::40/122"]);
    let r = cni.call("ADD", "container6g", Some(&ns), &wrong.to_string());
    assert_eq!(error_code(&r), 102, "{}", r.raw);
    assert!(r.raw.contains("claimed by another node"), "{}", r.raw);
    let again = cni.add("container6h", &ns);
    let ips: Vec<&str> =
        again.out["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(ips, ["10.244.1.3/32", "fd00:10:244::3/128"], "{}", again.raw);
    assert_eq!(cni.call("DEL", "container6h", Some(&ns), &cni.conf.to_string()).code, 0);
    // With the IPv6 pool named and node-a's own /122 full, the IPAM claims the next free
    // block for node-a, and node-a announces the container's /128: node-b, on its subnet,
    // routes the answer back to it. (Across subnets the fabric would have to learn the /128
    // too: the lab's underlay router knows the nodes' blocks only.)
    let ns_a = lab.ns("node-a");
    std::thread::spawn(move || {
        nix::sched::setns(
            std::fs::File::open(format!("/run/netns/{ns_a}")).expect("netns"),
            nix::sched::CloneFlags::CLONE_NEWNET,
        )
        .expect("setns");
        let ipam =
            datastore::ipam::Ipam::new(datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("etcd"));
        let own: ipnet::Ipv6Net = "fd00:10:244::/122".parse().expect("net");
        for i in 0..61 {
            ipam.allocate_in("node-a", &format!("filler-{i}"), &[own]).expect("room in node-a's block");
        }
        assert!(ipam.allocate_in("node-a", "one-more", &[own]).is_err(), "node-a's block is full");
    })
    .join()
    .expect("filling node-a's IPv6 block");
    cni.conf["pool6"] = json!("fd00:10:244::/48");
    cni.conf["block_size6"] = json!(122);
    let b = cni.add("container6i", &ns);
    let ips: Vec<&str> = b.out["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(
        ips,
        ["10.244.1.3/32", "fd00:10:244::c1/128"],
        "a new block, the first after the three nodes':\n{}",
        b.raw
    );
    let learned = |node: &str| lab.json(&["routes", "--node", node, "--lookup", "fd00:10:244::c1", "--json"]);
    for node in ["node-b", "node-c"] {
        wait_for(10, "the /128 from node-a", || learned(node)["prefix"] == "fd00:10:244::c1/128");
    }
    let (ok, out) = in_ns(&ns, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:10:244::41"]);
    assert!(ok, "the container with a /128 of a new block reaches pod-b1: {out}");
    assert_eq!(cni.call("DEL", "container6i", Some(&ns), &cni.conf.to_string()).code, 0);
    wait_for(10, "the /128 withdrawn at node-b", || learned("node-b")["prefix"] != "fd00:10:244::c1/128");
    // IPv6 IPPools in etcd decide over `pool6`: the one whose nodeSelector picks node-a.
    in_node_a(&lab, || {
        let etcd = datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint");
        let pool = |name: &str, cidr: &str, sel: &str| {
            format!("---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  nodeSelector: {sel}\n")
        };
        let yaml =
            // Both inside the pool node-a's config knows, which it accepts pod addresses from.
            [pool("elsewhere", "fd00:10:244::/64", "rack == 'r9'"), pool("everywhere", "fd00:10:244:1::/64", "all()")];
        let rs = datastore::resources::parse(&yaml.concat()).expect("resources");
        datastore::Store::new(etcd).apply_all(&rs).expect("apply");
    });
    let c = cni.add("container6j", &ns);
    assert_eq!(c.code, 0, "{}", c.raw);
    let ips: Vec<&str> = c.out["ips"].as_array().expect("ips").iter().filter_map(|i| i["address"].as_str()).collect();
    assert_eq!(ips, ["10.244.1.3/32", "fd00:10:244:1::1/128"], "{}", c.raw);
    assert_eq!(cni.call("DEL", "container6j", Some(&ns), &cni.conf.to_string()).code, 0);
}
