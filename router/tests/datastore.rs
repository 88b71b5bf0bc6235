//! Calico's resources in a real etcd (Debian's etcd-server), started by the test inside a
//! network namespace of its own, through `router apply | get | delete` run there too. Root.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{text, Killed, ROUTER};

/// etcd in a namespace of its own, gone (with its data) when dropped.
struct Etcd {
    ns: String,
    dir: PathBuf,
    child: Child,
    /// Served over TLS, asking clients for a certificate: the CA, certificates and keys
    /// are in `dir` (`ca.pem`, `client.pem`, `client.key`).
    tls: bool,
}

impl Etcd {
    fn start(tag: &str) -> Etcd {
        Etcd::start_with(tag, false)
    }

    fn start_with(tag: &str, tls: bool) -> Etcd {
        support::require_root();
        let ns = format!("t{}-{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("router-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert!(Command::new("ip").args(["netns", "add", &ns]).status().expect("ip").success());
        let _ = Command::new("ip").args(["-n", &ns, "link", "set", "lo", "up"]).status();
        let log = std::fs::File::create(dir.join("etcd.log")).expect("log");
        let url = if tls { "https://127.0.0.1:2379" } else { "http://127.0.0.1:2379" };
        let mut etcd = Command::new("ip");
        etcd.args(["netns", "exec", &ns, "etcd", "--name", "t", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args([
                "--listen-peer-urls",
                "http://127.0.0.1:2380",
                "--initial-advertise-peer-urls",
                "http://127.0.0.1:2380",
            ])
            .args(["--initial-cluster", "t=http://127.0.0.1:2380"]);
        if tls {
            make_certs(&dir);
            etcd.arg("--cert-file").arg(dir.join("server.pem")).arg("--key-file").arg(dir.join("server.key"));
            etcd.arg("--client-cert-auth").arg("--trusted-ca-file").arg(dir.join("ca.pem"));
        }
        let child = etcd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd runs (Debian package etcd-server)");
        let e = Etcd { ns, dir, child, tls };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !e.router(&["get", "ippools"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "etcd did not start: {}",
                std::fs::read_to_string(e.dir.join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        e
    }

    fn router(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("router")
    }

    /// `router ARGS` in etcd's namespace, told where etcd is (and, over TLS, its files).
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, ROUTER]).args(args).stdin(Stdio::null());
        if self.tls {
            c.env("ROUTER_ETCD_ENDPOINTS", "https://127.0.0.1:2379");
            c.env("ROUTER_ETCD_CA_CERT_FILE", self.dir.join("ca.pem"));
            c.env("ROUTER_ETCD_CERT_FILE", self.dir.join("client.pem"));
            c.env("ROUTER_ETCD_KEY_FILE", self.dir.join("client.key"));
        } else {
            c.env("ROUTER_ETCD_ENDPOINTS", "http://127.0.0.1:2379");
        }
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.router(args);
        assert!(o.status.success(), "{args:?}: {}{}", text(&o.stdout), text(&o.stderr));
        text(&o.stdout)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA (`ca.pem`, `ca.key`) that signs a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) and a client certificate (`client.pem`, `client.key`), made in `dir` with
/// openssl(1).
fn make_certs(dir: &Path) {
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (Debian package openssl)");
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o.stderr));
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca = ["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=router test CA"];
    openssl(&[&["req", "-x509"], &key[..], &ca[..]].concat());
    for (name, ext) in [
        // etcd's JSON gateway calls its own gRPC with the server's certificate: both uses.
        ("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        let (pem, k, csr, extfile) =
            (format!("{name}.pem"), format!("{name}.key"), format!("{name}.csr"), format!("{name}.ext"));
        std::fs::write(dir.join(&extfile), ext).expect("extfile");
        openssl(&[&["req"], &key[..], &["-keyout", &k, "-out", &csr, "-subj", &format!("/CN={name}")]].concat());
        let sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", &extfile];
        openssl(&[&["x509", "-req", "-in", &csr, "-out", &pem][..], &sign[..]].concat());
    }
}

/// TLS to etcd, as production etcd runs it: the CLI, a node (its config's files) and the
/// CNI plugin's IPAM read and write over https with client certificates, and each wrong
/// or missing file is refused in words that name it.
#[test]
fn etcd_over_tls_with_client_certificates() {
    let etcd = Etcd::start_with("etcd-tls", true);
    let dir = etcd.dir.clone();
    let f = |name: &str| dir.join(name).to_string_lossy().into_owned();
    // The CLI, from ROUTER_ETCD_* (as `ok` passes them).
    let file = dir.join("pool.yaml");
    std::fs::write(
        &file,
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: tls\nspec:\n  cidr: 10.244.0.0/16\n",
    )
    .expect("write");
    assert_eq!(etcd.ok(&["apply", "-f", &f("pool.yaml")]).trim(), "ippools/tls created");
    assert!(etcd.ok(&["get", "ippool", "tls"]).contains("10.244.0.0/16"));
    // And from flags, which stand over the environment.
    let refused = |envs: &[(&str, Option<String>)], args: &[&str], says: &str| {
        let mut c = etcd.command(&[&["get", "ippools"], args].concat());
        for (k, v) in envs {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        let o = c.output().expect("router");
        assert!(!o.status.success() && text(&o.stderr).contains(says), "{envs:?} {args:?}: {}", text(&o.stderr));
    };
    let none = |k: &'static str| (k, None);
    refused(&[none("ROUTER_ETCD_CA_CERT_FILE")], &[], "needs the CA that signed etcd's certificate");
    refused(&[none("ROUTER_ETCD_KEY_FILE")], &[], "an etcd client certificate and its key go together");
    // etcd asks for a client certificate: without one, the handshake fails.
    // (etcd's alert, or a broken pipe where it hangs up first: either way the hint.)
    let no_cert = [none("ROUTER_ETCD_CERT_FILE"), none("ROUTER_ETCD_KEY_FILE")];
    refused(&no_cert, &[], "no etcd endpoint answers: https://127.0.0.1:2379: ");
    refused(&no_cert, &[], "(does etcd ask clients for a certificate? --etcd-cert-file and --etcd-key-file)");
    refused(&[], &["--etcd-ca-cert-file", &f("missing.pem")], &format!("etcd CA certificate {}", f("missing.pem")));
    refused(&[], &["--etcd-endpoints", "http://127.0.0.1:2379"], "no endpoint is https://");
    // A server certificate from another CA is not etcd's.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("mkdir");
    make_certs(&other);
    let other_ca = other.join("ca.pem").to_string_lossy().into_owned();
    refused(&[], &["--etcd-ca-cert-file", &other_ca], "invalid peer certificate");

    // A node whose config names the files registers itself and follows etcd's changes.
    let ns = &etcd.ns;
    for args in [
        &["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"][..],
        &["addr", "add", "192.168.100.100/24", "dev", "eth0"],
        &["link", "set", "eth0", "up"],
        &["link", "set", "eth1", "up"],
    ] {
        assert!(Command::new("ip").args(["-n", ns]).args(args).status().expect("ip").success());
    }
    let socket = dir.join("node.sock");
    let config = format!(
        "name = \"tls-node\"\nworkers = 1\nadmin_socket = \"{}\"\nblocks = [\"10.244.1.0/26\"]\n\
         etcd_endpoints = [\"https://127.0.0.1:2379\"]\netcd_ca_cert_file = \"{}\"\n\
         etcd_cert_file = \"{}\"\netcd_key_file = \"{}\"\n\n[uplink]\ninterface = \"eth0\"\n\
         address = \"192.168.100.100/24\"\n",
        socket.display(),
        f("ca.pem"),
        f("client.pem"),
        f("client.key")
    );
    std::fs::write(dir.join("node.toml"), config).expect("node config");
    let log = std::fs::File::create(dir.join("node.log")).expect("log");
    let node = Killed(
        Command::new("ip")
            .args(["netns", "exec", ns, ROUTER, "node", "--config", &f("node.toml")])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("router node"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = || etcd.command(&["status", "--socket", &socket.to_string_lossy(), "--json"]).output().ok();
    let read_up_to = |at_least: i64| loop {
        let st = status()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok());
        let rev = st.as_ref().and_then(|s| s["datastore"]["revision"].as_i64());
        if rev.is_some_and(|r| r >= at_least) && st.as_ref().is_some_and(|s| s["datastore"]["answering"] == true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node over TLS: {st:?}\n{}",
            std::fs::read_to_string(dir.join("node.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    read_up_to(1);
    assert!(etcd.ok(&["get", "nodes"]).contains("tls-node"), "registered over TLS");
    // A change made now reaches it through its watch, which is TLS too.
    std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: tls\nspec:\n  cidr: 10.244.0.0/16\n  ipipMode: Always\n").expect("write");
    etcd.ok(&["apply", "-f", &f("pool.yaml")]);
    let rev: i64 = etcd
        .ok(&["get", "ippool", "tls", "-o", "json"])
        .split("\"resourceVersion\": \"")
        .nth(1)
        .and_then(|r| r.split('"').next()?.parse().ok())
        .expect("resourceVersion");
    read_up_to(rev);
    drop(node);

    // The CNI plugin's IPAM in etcd, from Calico's keys in its network config.
    let t = {
        let ns = ns.clone();
        let tls = nodeapi::config::EtcdTls {
            ca_cert: Some(dir.join("ca.pem")),
            cert: Some(dir.join("client.pem")),
            key: Some(dir.join("client.key")),
        };
        std::thread::spawn(move || {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let conf = serde_json::json!({
                "cniVersion": "1.0.0", "name": "router", "type": "router", "node": "tls-node",
                "admin_socket": "/nonexistent.sock", "etcd_endpoints": ["https://127.0.0.1:2379"],
                "etcd_ca_cert_file": tls.ca_cert, "etcd_cert_file": tls.cert, "etcd_key_file": tls.key,
            });
            let conf: cni::plugin::NetConf = serde_json::from_value(conf).expect("conf");
            assert_eq!(conf.etcd_tls, tls);
            datastore::etcd::Etcd::with_tls(&conf.etcd_endpoints, &conf.etcd_tls)
                .expect("client")
                .list("/calico/")
                .map(|(kvs, _)| kvs.len())
        })
    };
    assert!(t.join().expect("plugin's etcd").expect("listed over TLS") > 0);
}

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../datastore/tests/fixtures").join(name).to_string_lossy().into_owned()
}

const FIXTURES: [&str; 8] = [
    "ippool.yaml",
    "bgpconfiguration.yaml",
    "bgppeer.yaml",
    "bgpfilter.yaml",
    "node.json",
    "ipreservation.yaml",
    "ipamconfiguration.yaml",
    "workloadendpoint.yaml",
];

#[test]
fn every_kind_goes_in_and_out_of_etcd_unchanged() {
    let etcd = Etcd::start("etcd-rt");
    for f in FIXTURES {
        let out = etcd.ok(&["apply", "-f", &fixture(f)]);
        assert!(out.lines().all(|l| l.ends_with(" created")), "{f}: {out}");
    }
    // Every kind read back as it was written (metadata aside), in YAML and JSON.
    for (kind, f) in [
        ("ippools", "ippool.yaml"),
        ("bgpconfigurations", "bgpconfiguration.yaml"),
        ("bgppeers", "bgppeer.yaml"),
        ("bgpfilters", "bgpfilter.yaml"),
        ("nodes", "node.json"),
        ("ipreservations", "ipreservation.yaml"),
        ("ipamconfigurations", "ipamconfiguration.yaml"),
        ("workloadendpoints", "workloadendpoint.yaml"),
    ] {
        let want = datastore::resources::parse(&std::fs::read_to_string(fixture(f)).expect("fixture")).expect("parse");
        let got = datastore::resources::parse(&etcd.ok(&["get", kind, "-A", "-o", "yaml"])).expect("get -o yaml reads");
        let strip = |rs: Vec<datastore::resources::Resource>| -> Vec<serde_json::Value> {
            let mut v: Vec<serde_json::Value> = rs
                .iter()
                .map(|r| {
                    let mut j = r.to_json();
                    j["metadata"] = serde_json::json!(r.name());
                    j
                })
                .collect();
            v.sort_by_key(|j| j["metadata"].to_string());
            v
        };
        assert_eq!(strip(got.clone()), strip(want), "{kind}");
        assert!(got.iter().all(|r| r.metadata().uid.is_some() && r.metadata().resource_version.is_some()), "{kind}");
        let list: serde_json::Value = serde_json::from_str(&etcd.ok(&["get", kind, "-A", "-o", "json"])).expect("json");
        assert_eq!(list["items"].as_array().map(Vec::len), Some(got.len()), "{kind}");
    }
    // Again: unchanged. Changed: configured, with a newer resourceVersion, same uid.
    assert_eq!(etcd.ok(&["apply", "-f", &fixture("ippool.yaml")]).trim(), "ippools/lab-ipv4-pool unchanged");
    let before: serde_json::Value =
        serde_json::from_str(&etcd.ok(&["get", "ippool", "lab-ipv4-pool", "-o", "json"])).expect("json");
    let changed = std::fs::read_to_string(fixture("ippool.yaml")).expect("fixture").replace("CrossSubnet", "Always");
    let path = etcd.dir.join("changed.yaml");
    std::fs::write(&path, changed).expect("write");
    assert_eq!(etcd.ok(&["apply", "-f", path.to_str().unwrap_or_default()]).trim(), "ippools/lab-ipv4-pool configured");
    let after: serde_json::Value =
        serde_json::from_str(&etcd.ok(&["get", "ippool", "lab-ipv4-pool", "-o", "json"])).expect("json");
    assert_eq!(after["spec"]["ipipMode"], "Always");
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["metadata"]["creationTimestamp"], before["metadata"]["creationTimestamp"]);
    let rv = |v: &serde_json::Value| v["metadata"]["resourceVersion"].as_str().and_then(|s| s.parse::<i64>().ok());
    assert!(rv(&after) > rv(&before), "{before} {after}");
    // The table.
    let table = etcd.ok(&["get", "bgppeers"]);
    assert!(table.starts_with("NAME") && table.contains("rack1-tor") && table.contains("(global)"), "{table}");
    let table = etcd.ok(&["get", "ipamconfig"]);
    assert!(table.contains("STRICTAFFINITY") && table.contains("default   true"), "{table}");
    // -o wide, as calicoctl's: a pool's NAT and flags, a peer's selectors and filters, a
    // node's AS number (the cluster's in parentheses, where it has none of its own).
    let row = |t: &str, name: &str| -> Vec<String> {
        let line = t.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_default();
        line.split_whitespace().map(str::to_string).collect()
    };
    let wide = etcd.ok(&["get", "ippools", "-o", "wide"]);
    assert!(wide.starts_with("NAME") && wide.lines().next().unwrap_or("").contains("DISABLEBGPEXPORT"), "{wide}");
    assert_eq!(
        row(&wide, "lab-ipv4-pool"),
        ["lab-ipv4-pool", "10.244.0.0/16", "26", "Always", "Never", "true", "false", "false", "all()"]
    );
    assert_eq!(row(&etcd.ok(&["get", "bgppeers", "-o", "wide"]), "rack1-tor")[4..], ["-", "-", "only-pools"]);
    let config = std::fs::read_to_string(fixture("bgpconfiguration.yaml")).expect("fixture");
    let own_as = etcd.dir.join("as.yaml");
    std::fs::write(&own_as, config.replace("asNumber: 64512", "asNumber: 65010")).expect("write");
    etcd.ok(&["apply", "-f", own_as.to_str().unwrap_or_default()]);
    let wide = etcd.ok(&["get", "nodes", "-o", "wide"]);
    assert_eq!(row(&wide, "node-a"), ["node-a", "(65010)", "192.168.100.100/24", "-", "224.0.0.1"], "{wide}");
    // Workload endpoints live in namespaces: `default` unless -n says, all with -A.
    let wep = "worker1-k8s-shop--web--5f7c9-eth0";
    let table = etcd.ok(&["get", "wep"]);
    assert_eq!(table.lines().count(), 2, "only default's: {table}");
    assert!(table.starts_with("WORKLOAD") && table.contains("4f1a9c0e77d3   worker1   10.244.1.18/32"), "{table}");
    let table = etcd.ok(&["get", "wep", "-A"]);
    assert!(table.contains("shop        shop-web-5f7c9   worker1"), "{table}");
    let missing = etcd.router(&["get", "wep", wep]);
    assert!(text(&missing.stderr).contains(&format!("workloadendpoints/default/{wep} does not exist")));
    let v: serde_json::Value =
        serde_json::from_str(&etcd.ok(&["get", "wep", wep, "-n", "shop", "-o", "json"])).expect("json");
    assert_eq!(v["spec"]["ipNetworks"][1], "fd00:10:244::11/128");
    assert_eq!(etcd.ok(&["delete", "wep", wep, "-n", "shop"]).trim(), format!("workloadendpoints/shop/{wep} deleted"));
    assert_eq!(etcd.ok(&["get", "wep", "-n", "shop"]).lines().count(), 1);
    let not_here = etcd.router(&["get", "ippools", "-n", "shop"]);
    assert!(text(&not_here.stderr).contains("ippools are not in a namespace"), "{}", text(&not_here.stderr));
    let out = etcd.router(&["apply", "-f", &fixture("workloadendpoint.yaml")]);
    assert!(text(&out.stderr).contains("not acted on by this router"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("workloadendpoints/shop/{wep} created")), "{}", text(&out.stdout));

    // Delete by name and by file; deleting what is gone says so.
    assert_eq!(etcd.ok(&["delete", "bgppeer", "rack1-tor"]).trim(), "bgppeers/rack1-tor deleted");
    let again = etcd.router(&["delete", "bgppeer", "rack1-tor"]);
    assert!(!again.status.success() && text(&again.stderr).contains("does not exist"));
    for f in FIXTURES.iter().filter(|f| **f != "bgppeer.yaml") {
        etcd.ok(&["delete", "-f", &fixture(f)]);
    }
    // node-a's own peer went with node-a, as calicoctl deletes it.
    let gone = etcd.router(&["delete", "bgppeer", "node-a-edge"]);
    assert!(!gone.status.success() && text(&gone.stderr).contains("does not exist"), "{}", text(&gone.stderr));
    for kind in [
        "ippools",
        "bgpconfigurations",
        "bgppeers",
        "bgpfilters",
        "nodes",
        "ipreservations",
        "ipamconfigurations",
        "workloadendpoints",
    ] {
        assert_eq!(etcd.ok(&["get", kind, "-A"]).lines().count(), 1, "{kind} is empty (header only)");
    }
    let missing = etcd.router(&["get", "node", "nope"]);
    assert!(!missing.status.success() && text(&missing.stderr).contains("nodes/nope does not exist"));
}

#[test]
fn a_nodes_endpoints_follow_its_pods_and_a_stale_delete_keeps_a_newer_one() {
    use datastore::endpoints::Endpoint;
    let etcd = Etcd::start("etcd-wep");
    let t = with_etcd(&etcd.ns, |etcd| {
        let store = datastore::Store::new(etcd);
        let ep = |node: &str, orchestrator: &str, id: &str| {
            let e = Endpoint {
                node: node.into(),
                orchestrator: orchestrator.into(),
                namespace: "default".into(),
                workload: id.into(),
                container_id: id.into(),
                endpoint: "eth0".into(),
                addresses: vec!["10.244.1.9".parse().expect("ip")],
                ..Default::default()
            };
            e.resource().expect("endpoint")
        };
        let names = |store: &datastore::Store| {
            let mut v: Vec<String> =
                store.endpoints(None).expect("endpoints").into_iter().map(|(w, _)| w.metadata.name).collect();
            v.sort();
            v
        };
        // A node's configured pods: written; one it no longer has goes, and neither its
        // containers' endpoints nor another node's configured pods are touched.
        store.apply(&ep("node-a", "cni", "c1")).expect("apply");
        store.apply(&ep("node-b", "router", "p1")).expect("apply");
        store
            .sync_endpoints("node-a", "router", &[ep("node-a", "router", "p1"), ep("node-a", "router", "p2")])
            .expect("sync");
        assert_eq!(
            names(&store),
            ["node--a-cni-c1-eth0", "node--a-router-p1-eth0", "node--a-router-p2-eth0", "node--b-router-p1-eth0"]
        );
        store.sync_endpoints("node-a", "router", &[ep("node-a", "router", "p2")]).expect("sync");
        assert_eq!(names(&store), ["node--a-cni-c1-eth0", "node--a-router-p2-eth0", "node--b-router-p1-eth0"]);
        // An endpoint written again since it was read is not deleted by what read it before.
        let old = store
            .endpoints(Some("node-a"))
            .expect("endpoints")
            .into_iter()
            .find(|(w, _)| w.spec.orchestrator == "cni")
            .expect("c1");
        let mut newer = ep("node-a", "cni", "c1");
        newer.metadata_mut().labels.insert("again".into(), "yes".into());
        store.apply(&newer).expect("apply");
        assert!(!store.delete_endpoint(&old).expect("delete"));
        assert_eq!(store.delete_endpoints_of("node-a").expect("delete"), 2);
        assert_eq!(names(&store), ["node--b-router-p1-eth0"]);
        // One another writer left, with fields this router does not know, still counts.
        let theirs = br#"{"apiVersion":"projectcalico.org/v3","kind":"WorkloadEndpoint","metadata":{"name":"w1-k8s-web-eth0","namespace":"shop","generateName":"web-","ownerReferences":[]},"spec":{"node":"w1","orchestrator":"k8s","pod":"web","endpoint":"eth0","ipNetworks":["10.244.9.3/32"],"qosControls":{"ingressBandwidth":1000}}}"#;
        let key = datastore::key(datastore::resources::Kind::WorkloadEndpoint, Some("shop"), "w1-k8s-web-eth0");
        store.etcd.put(&key, theirs).expect("put");
        let seen = store.endpoints(Some("w1")).expect("endpoints");
        assert_eq!(seen.len(), 1);
        assert_eq!(
            (seen[0].0.spec.ip_networks.as_slice(), seen[0].0.metadata.namespace.as_deref()),
            (&["10.244.9.3/32".to_string()][..], Some("shop"))
        );
        assert_eq!(store.delete_endpoints_of("w1").expect("delete"), 1);
    });
    t.join().expect("endpoints");
}

#[test]
fn deleting_a_node_deletes_what_configures_it_alone() {
    let etcd = Etcd::start("etcd-delnode");
    let doc = |kind: &str, name: &str, spec: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: {kind}\nmetadata:\n  name: {name}\nspec:\n{spec}---\n")
    };
    let file = [
        doc("Node", "worker-2", "  bgp:\n    ipv4Address: 10.0.0.2/24\n"),
        doc("BGPPeer", "worker-2-tor", "  node: worker-2\n  peerIP: 10.0.0.254\n  asNumber: 65001\n"),
        doc("BGPPeer", "everyone-tor", "  peerIP: 10.0.0.253\n  asNumber: 65001\n"),
        doc("BGPPeer", "worker-3-tor", "  node: worker-3\n  peerIP: 10.0.0.252\n  asNumber: 65001\n"),
        doc("BGPConfiguration", "node.worker-2", "  listenPort: 1179\n"),
        doc("BGPConfiguration", "default", "  asNumber: 64512\n"),
    ]
    .concat();
    let path = etcd.dir.join("worker.yaml");
    std::fs::write(&path, file).expect("write");
    etcd.ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    let out = etcd.ok(&["delete", "node", "worker-2"]);
    assert!(out.contains("bgppeers/worker-2-tor deleted"), "{out}");
    assert!(out.contains("bgpconfigurations/node.worker-2 deleted"), "{out}");
    let left = |kind: &str| -> Vec<String> {
        let t = etcd.ok(&["get", kind]);
        t.lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_string)).collect()
    };
    assert_eq!(left("bgppeers"), ["everyone-tor", "worker-3-tor"]);
    assert_eq!(left("bgpconfigurations"), ["default"]);
}

/// A pool and a node as another tool (Calico's agent, a newer calicoctl) wrote them, with
/// fields this router does not know: nodes and `router get` read them with those fields
/// left out and named, `apply` replaces them whole, and a node putting its own address
/// right keeps every field of its `Node`.
#[test]
fn what_another_tool_wrote_reads_and_a_node_keeps_its_fields_when_put_right() {
    use datastore::resources::{Kind, Resource};
    let etcd = Etcd::start("etcd-foreign");
    let t = with_etcd(&etcd.ns, |e| {
        let pool = r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"future",
            "generation":2},"spec":{"cidr":"10.250.0.0/16","ipipMode":"Always","futureKnob":true}}"#;
        let node = r#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"worker-9"},
            "spec":{"bgp":{"ipv4Address":"10.0.0.9/24","future":1},"orchRefs":[{"orchestrator":"k8s","nodeName":"worker-9"}]},
            "status":{"podCIDRs":["10.250.1.0/24"]}}"#;
        e.put(&datastore::key(Kind::IpPool, None, "future"), pool.as_bytes()).expect("put");
        let node_key = datastore::key(Kind::Node, None, "worker-9");
        e.put(&node_key, node.as_bytes()).expect("put");
        let store = datastore::Store::new(e.clone());
        let (rs, _, notes) = store.all().expect("all");
        let pool = rs.iter().find(|r| r.name() == "future").expect("the pool is not lost");
        assert!(matches!(pool, Resource::IpPool(p) if p.spec.cidr == "10.250.0.0/16"), "{pool:?}");
        assert!(rs.iter().any(|r| r.name() == "worker-9"), "{rs:?}");
        let all = notes.join("\n");
        assert!(all.contains("ippools/future") && all.contains("spec.futureKnob"), "{all}");
        // calico-node's own fields (orchRefs, status) are known and kept, not foreign.
        assert!(all.contains("spec.bgp.future") && !all.contains("orchRefs"), "{all}");
        // The node's address put right, in place: nothing else of the Node changes.
        assert!(store.set_node_addresses("worker-9", "10.0.0.10/24", None).expect("patch"));
        let raw = |k: &str| -> serde_json::Value {
            serde_json::from_slice(&e.get(k).expect("get").expect("there").value).expect("json")
        };
        let v = raw(&node_key);
        assert_eq!(v["spec"]["bgp"]["ipv4Address"], "10.0.0.10/24");
        assert_eq!(v["spec"]["bgp"]["future"], 1);
        assert_eq!(v["spec"]["orchRefs"][0]["nodeName"], "worker-9");
        assert_eq!(v["status"]["podCIDRs"][0], "10.250.1.0/24");
        let rev = e.get(&node_key).expect("get").expect("there").mod_revision;
        assert!(!store.set_node_addresses("worker-9", "10.0.0.10/24", None).expect("patch"), "already right");
        assert_eq!(e.get(&node_key).expect("get").expect("there").mod_revision, rev, "nothing written");
        // A dual-stack node adds its IPv6 address beside.
        assert!(store.set_node_addresses("worker-9", "10.0.0.10/24", Some("fd00::10/64")).expect("patch"));
        assert_eq!(raw(&node_key)["spec"]["bgp"]["ipv6Address"], "fd00::10/64");
        assert!(store.set_node_addresses("worker-404", "10.0.0.11/24", None).is_err(), "no such node");
        // A Node with no spec at all (or a null one) gets one.
        let bare = datastore::key(Kind::Node, None, "worker-8");
        e.put(
            &bare,
            br#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"worker-8"},"spec":null}"#,
        )
        .expect("put");
        assert!(store.set_node_addresses("worker-8", "10.0.0.8/24", None).expect("patch"));
        assert_eq!(raw(&bare)["spec"]["bgp"]["ipv4Address"], "10.0.0.8/24");
    });
    t.join().expect("etcd test");
    let o = etcd.router(&["get", "ippool", "future", "-o", "yaml"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("cidr: 10.250.0.0/16"), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains("note:") && err.contains("metadata.generation, spec.futureKnob"), "{err}");
    let table = etcd.ok(&["get", "nodes"]);
    let worker9 = table.lines().find(|l| l.starts_with("worker-9 ")).unwrap_or_default();
    assert!(worker9.contains("10.0.0.10/24") && worker9.contains("fd00::10/64"), "{table}");
    // apply replaces what this router knows of the pool (as calicoctl's does) and keeps what
    // it does not know: nobody could have set or removed that through it.
    let file = etcd.dir.join("pool.yaml");
    let yaml =
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: future\nspec:\n  cidr: 10.250.0.0/16\n";
    std::fs::write(&file, yaml).expect("write");
    let out = etcd.ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    assert!(out.contains("configured"), "{out}");
    let stored = |kind, name: &'static str| -> serde_json::Value {
        let t = with_etcd(&etcd.ns, move |e| e.get(&datastore::key(kind, None, name)).expect("get").expect("there"));
        serde_json::from_slice(&t.join().expect("etcd read").value).expect("json")
    };
    let pool = stored(Kind::IpPool, "future");
    assert_eq!((pool["spec"]["futureKnob"].as_bool(), pool["metadata"]["generation"].as_i64()), (Some(true), Some(2)));
    assert!(pool["spec"].get("ipipMode").is_none(), "the user's version dropped a field this router knows: {pool}");
    // `get` piped into `apply` loses nothing of a Node that Calico's agent wrote.
    let node = etcd.router(&["get", "node", "worker-9", "-o", "yaml"]);
    assert!(node.status.success(), "{}", text(&node.stderr));
    let labelled = text(&node.stdout).replace("metadata:\n", "metadata:\n  labels:\n    rack: r1\n");
    std::fs::write(&file, labelled).expect("write");
    let out = etcd.ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    assert!(out.contains("nodes/worker-9 configured"), "{out}");
    let node = stored(Kind::Node, "worker-9");
    assert_eq!(node["metadata"]["labels"]["rack"], "r1");
    assert_eq!(node["spec"]["orchRefs"][0]["nodeName"], "worker-9", "{node}");
    assert_eq!((&node["spec"]["bgp"]["future"], &node["status"]["podCIDRs"][0]), (&1.into(), &"10.250.1.0/24".into()));
}

/// `patch` and `label`, as Calico's documentation uses them: one field changed, checked as
/// `apply` checks it, and everything else of the resource kept, another tool's fields too;
/// `create` and `replace`, all or nothing.
#[test]
fn patch_label_create_and_replace_do_what_calicoctl_s_do_and_keep_the_rest() {
    use datastore::resources::Kind;
    let etcd = Etcd::start("etcd-patch");
    let node_key = datastore::key(Kind::Node, None, "worker-9");
    let node = r#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"worker-9","uid":"u-9"},
        "spec":{"bgp":{"ipv4Address":"10.0.0.9/24","future":1},"orchRefs":[{"orchestrator":"k8s","nodeName":"worker-9"}]}}"#;
    let k = node_key.clone();
    with_etcd(&etcd.ns, move |e| e.put(&k, node.as_bytes()).expect("put")).join().expect("put");
    let stored = || -> (serde_json::Value, i64) {
        let k = node_key.clone();
        let kv = with_etcd(&etcd.ns, move |e| e.get(&k).expect("get").expect("there")).join().expect("read");
        (serde_json::from_slice(&kv.value).expect("json"), kv.mod_revision)
    };
    let fails = |args: &[&str], says: &str| {
        let o = etcd.router(args);
        assert!(!o.status.success() && text(&o.stderr).contains(says), "{args:?}: {}", text(&o.stderr));
    };
    let rr = r#"{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}}}"#;
    assert_eq!(etcd.ok(&["patch", "node", "worker-9", "-p", rr]).trim(), "nodes/worker-9 patched");
    let (v, rev) = stored();
    assert_eq!(v["spec"]["bgp"]["routeReflectorClusterID"], "244.0.0.1");
    assert_eq!((&v["spec"]["bgp"]["ipv4Address"], &v["spec"]["bgp"]["future"]), (&"10.0.0.9/24".into(), &1.into()));
    assert_eq!((&v["spec"]["orchRefs"][0]["nodeName"], &v["metadata"]["uid"]), (&"worker-9".into(), &"u-9".into()));
    assert_eq!(etcd.ok(&["patch", "node", "worker-9", "-p", rr]).trim(), "nodes/worker-9 unchanged");
    assert_eq!(stored().1, rev, "nothing written");
    // A field kept but not acted on is named, as by apply.
    let wg = r#"{"spec":{"wireguard":{"interfaceIPv4Address":"10.244.7.1"}}}"#;
    let o = etcd.router(&["patch", "node", "worker-9", "-p", wg]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr)
            .contains("nodes/worker-9: kept in the datastore, but not acted on by this router: spec.wireguard"),
        "{}",
        text(&o.stderr)
    );
    etcd.ok(&["patch", "node", "worker-9", "-p", r#"{"spec":{"wireguard":null}}"#]);
    // Labels: set, refused over another value, replaced with --overwrite, removed.
    assert_eq!(
        etcd.ok(&["label", "nodes", "worker-9", "route-reflector=true"]).trim(),
        "nodes/worker-9 labelled route-reflector=true"
    );
    fails(
        &["label", "node", "worker-9", "route-reflector=false"],
        "nodes/worker-9: the label route-reflector=true is there already: --overwrite replaces it",
    );
    assert_eq!(stored().0["metadata"]["labels"]["route-reflector"], "true");
    etcd.ok(&["label", "node", "worker-9", "route-reflector=false", "--overwrite"]);
    etcd.ok(&["label", "node", "worker-9", "example.com/rack=r-1"]);
    let (v, _) = stored();
    assert_eq!(
        (&v["metadata"]["labels"]["route-reflector"], &v["metadata"]["labels"]["example.com/rack"]),
        (&"false".into(), &"r-1".into())
    );
    etcd.ok(&["label", "node", "worker-9", "route-reflector", "--remove"]);
    fails(
        &["label", "node", "worker-9", "route-reflector", "--remove"],
        "nodes/worker-9: no label \"route-reflector\" to remove",
    );
    fails(&["label", "node", "worker-9", "bad key=1"], "a name is at most 63");
    fails(&["label", "node", "worker-9", "rack=-x"], "value \"-x\"");
    fails(&["label", "node", "worker-9", "rack"], "KEY=VALUE");
    fails(&["label", "node", "worker-404", "rack=r1"], "nodes/worker-404 does not exist");
    // Checked as apply checks a file; nothing written when refused.
    let rev = stored().1;
    fails(
        &["patch", "node", "worker-9", "-p", r#"{"spec":{"bgp":{"asnumber":1}}}"#],
        "spec.bgp.asnumber: unknown field",
    );
    fails(
        &["patch", "node", "worker-9", "-p", r#"{"metadata":{"name":"worker-10"}}"#],
        "cannot change a resource's kind, name",
    );
    fails(&["patch", "node", "worker-9", "-p", "[1]"], "a merge patch is an object");
    fails(&["patch", "node", "worker-9", "-p", "{nope"], "reading the patch");
    fails(&["patch", "node", "worker-9", "-p", r#"{"metadata":{"labels":{"a b":"c"}}}"#], "metadata.labels");
    // RFC 6902: a failed test operation changes nothing.
    let test = r#"[{"op":"test","path":"/spec/bgp/ipv4Address","value":"10.0.0.1/24"},{"op":"remove","path":"/spec/bgp/routeReflectorClusterID"}]"#;
    fails(
        &["patch", "node", "worker-9", "--type", "json", "-p", test],
        "nodes/worker-9: the JSON patch: operation '/0' failed",
    );
    assert_eq!(stored().1, rev, "nothing written");
    let test = test.replace("10.0.0.1/24", "10.0.0.9/24");
    etcd.ok(&["patch", "node", "worker-9", "--type", "json", "-p", &test]);
    let (v, _) = stored();
    assert!(v["spec"]["bgp"].get("routeReflectorClusterID").is_none() && v["spec"]["bgp"]["future"] == 1, "{v}");
    // A pool's rules hold for a patch too; null removes a field (merge patch).
    let file = etcd.dir.join("pool.yaml");
    std::fs::write(&file, "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: p\nspec:\n  cidr: 10.250.0.0/16\n  natOutgoing: true\n").expect("write");
    etcd.ok(&["apply", "-f", file.to_str().unwrap_or_default()]);
    fails(&["patch", "ippool", "p", "-p", r#"{"spec":{"cidr":"10.251.0.0/16"}}"#], "a pool's CIDR cannot change");
    etcd.ok(&["patch", "ippool", "p", "-p", r#"{"spec":{"natOutgoing":null,"ipipMode":"Always"}}"#]);
    let pool = etcd.ok(&["get", "ippool", "p", "-o", "yaml"]);
    assert!(pool.contains("ipipMode: Always") && !pool.contains("natOutgoing: true"), "{pool}");
    fails(&["patch", "ippool", "nope", "-p", "{}"], "ippools/nope does not exist");
    // calicoctl's create and replace: all or nothing, as apply.
    let f = file.to_str().unwrap_or_default();
    let q = "---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: q\nspec:\n  cidr: 10.252.0.0/16\n";
    std::fs::write(&file, q).expect("write");
    fails(&["replace", "-f", f], "ippools/q does not exist (`apply` or `create` makes it)");
    assert_eq!(etcd.ok(&["create", "-f", f]).trim(), "ippools/q created");
    fails(&["create", "-f", f], "ippools/q exists already");
    let two = format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: r\nspec:\n  cidr: 10.253.0.0/16\n{q}"
    );
    std::fs::write(&file, two).expect("write");
    fails(&["create", "-f", f], "ippools/q exists already");
    assert!(!etcd.router(&["get", "ippool", "r"]).status.success(), "nothing of a refused file is written");
    std::fs::write(&file, q.replace("spec:", "spec:\n  disabled: true")).expect("write");
    assert_eq!(etcd.ok(&["replace", "-f", f]).trim(), "ippools/q configured");
    assert!(etcd.ok(&["get", "ippool", "q", "-o", "yaml"]).contains("disabled: true"));
}

#[test]
fn a_file_is_written_in_one_revision_and_a_long_one_in_whole_parts() {
    let etcd = Etcd::start("etcd-txn");
    let node = |name: &str, i: usize| {
        format!("apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  bgp:\n    ipv4Address: 10.0.{}.{}/16\n", i / 200, i % 200 + 1)
    };
    // Mesh off and the reflector named: both at one revision, so no node sees one alone.
    let path = etcd.dir.join("switch.yaml");
    let config = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  nodeToNodeMeshEnabled: false\n";
    std::fs::write(&path, format!("{config}---\n{}---\n{}", node("rr", 1000), node("rr", 1001))).expect("write");
    let out = etcd.ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["bgpconfigurations/default created", "nodes/rr created", "nodes/rr created"]
    );
    let rv = |kind: &str, name: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(&etcd.ok(&["get", kind, name, "-o", "json"])).expect("json");
        assert!(kind != "node" || v["spec"]["bgp"]["ipv4Address"] == "10.0.5.2/16", "the last copy wins: {v}");
        v["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(rv("bgpconfiguration", "default"), rv("node", "rr"));
    // 250 nodes: more than etcd takes in one transaction; every one is written.
    let many: Vec<String> = (0..250).map(|i| node(&format!("n{i}"), i)).collect();
    std::fs::write(&path, many.join("---\n")).expect("write");
    let out = etcd.ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    assert_eq!(out.lines().filter(|l| l.ends_with(" created")).count(), 250, "{out}");
    assert_eq!(etcd.ok(&["get", "nodes"]).lines().count(), 1 + 251);
}

#[test]
fn a_file_with_a_mistake_changes_nothing_and_says_where() {
    let etcd = Etcd::start("etcd-err");
    let good = std::fs::read_to_string(fixture("ippool.yaml")).expect("fixture");
    let bad = std::fs::read_to_string(fixture("bgppeer.yaml"))
        .expect("fixture")
        .replace("192.168.100.251:179", "192.168.100.999");
    let path = etcd.dir.join("mixed.yaml");
    std::fs::write(&path, format!("{good}---\n{bad}")).expect("write");
    let o = etcd.router(&["apply", "-f", path.to_str().unwrap_or_default()]);
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("mixed.yaml: document 3, line 30, field spec.peerIP"), "{err}");
    assert_eq!(etcd.ok(&["get", "ippools"]).lines().count(), 1, "the good document was not written either");
    let kind = etcd.router(&["get", "profiles"]);
    assert!(text(&kind.stderr).contains("not a kind this router knows"), "{}", text(&kind.stderr));
    // No etcd there: a clear error, not a hang.
    let o = Command::new("ip")
        .args(["netns", "exec", &etcd.ns, ROUTER, "get", "ippools", "--etcd-endpoints", "http://127.0.0.1:2999"])
        .output()
        .expect("router");
    let err = text(&o.stderr);
    assert!(
        !o.status.success() && err.contains("no etcd endpoint answers: http://127.0.0.1:2999: Connection refused"),
        "{err}"
    );
    assert!(!err.contains("Network Error"), "said once, at the bottom: {err}");
    // A mistake in the file is told before etcd is even looked for.
    let o = Command::new(ROUTER)
        .args(["apply", "-f", path.to_str().unwrap_or_default()])
        .env_remove("ROUTER_ETCD_ENDPOINTS")
        .env("ROUTER_LAB", "no-such-lab")
        .output()
        .expect("router");
    assert!(!o.status.success() && text(&o.stderr).contains("field spec.peerIP"), "{}", text(&o.stderr));
}

#[test]
fn pools_overlap_no_other_and_keep_their_cidr_and_block_size() {
    let etcd = Etcd::start("etcd-pools");
    let path = etcd.dir.join("pools.yaml");
    let pool = |name: &str, cidr: &str, bs: u8| {
        format!("---\napiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\nspec:\n  cidr: {cidr}\n  blockSize: {bs}\n")
    };
    let apply = |docs: &[String]| {
        std::fs::write(&path, docs.concat()).expect("write");
        etcd.router(&["apply", "-f", path.to_str().unwrap_or_default()])
    };
    let refused = |docs: &[String], why: &str| {
        let o = apply(docs);
        assert!(!o.status.success() && text(&o.stderr).contains(why), "{why}: {}", text(&o.stderr));
    };
    assert!(apply(&[pool("main", "10.244.0.0/16", 26), pool("v6", "fd00:10:244::/48", 122)]).status.success());
    // Inside it, around it, or two new ones over each other: refused, and nothing written.
    let other = pool("other", "10.99.0.0/16", 26);
    refused(
        &[other.clone(), pool("half", "10.244.0.0/17", 26)],
        "ippools/half: spec.cidr: 10.244.0.0/17 overlaps the pool main (10.244.0.0/16)",
    );
    refused(&[pool("wide", "10.0.0.0/8", 24)], "overlaps the pool main");
    refused(&[pool("x", "10.98.0.0/16", 26), pool("y", "10.98.128.0/17", 26)], "overlaps the pool");
    refused(&[pool("v6b", "fd00:10:244:7::/64", 122)], "overlaps the pool v6");
    let pools = etcd.ok(&["get", "ippools"]);
    assert_eq!(pools.lines().count(), 3, "only main and v6: {pools}");
    // A stored pool keeps its CIDR and its block size; the rest of it may change.
    refused(&[pool("main", "10.245.0.0/16", 26)], "a pool's CIDR cannot change (it is 10.244.0.0/16)");
    refused(&[pool("main", "10.244.0.0/16", 28)], "a pool's block size cannot change (it is /26)");
    let changed = pool("main", "10.244.0.0/16", 26) + "  natOutgoing: true\n";
    assert!(text(&apply(&[changed, other]).stdout).contains("ippools/main configured"));
    // Deleted, its range is free for a pool cut differently.
    etcd.ok(&["delete", "ippool", "main"]);
    assert!(apply(&[pool("half", "10.244.0.0/17", 28)]).status.success());
    // Nor may a new pool hold a node's address, stored or given beside it.
    let node = |name: &str, addr: &str| {
        format!("---\napiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  bgp:\n    ipv4Address: {addr}\n")
    };
    assert!(apply(&[node("node-a", "192.168.100.100/24")]).status.success());
    refused(
        &[pool("underlay", "192.168.0.0/16", 26)],
        "ippools/underlay: spec.cidr: 192.168.0.0/16 holds node node-a's address 192.168.100.100",
    );
    refused(&[node("node-c", "10.97.0.9/24"), pool("c", "10.97.0.0/16", 26)], "holds node node-c's address 10.97.0.9");
    assert!(apply(&[pool("elsewhere", "10.96.0.0/16", 26)]).status.success());
    // No two nodes at one address, stored or given together; a node may keep its own.
    refused(
        &[node("node-x", "192.168.100.100/24")],
        "nodes/node-x: spec.bgp.ipv4Address: 192.168.100.100 is node node-a's already",
    );
    refused(&[node("node-y", "10.95.0.1/24"), node("node-z", "10.95.0.1/24")], "10.95.0.1 is node node-");
    assert!(apply(&[node("node-a", "192.168.100.100/24")]).status.success());
    assert!(apply(&[node("node-a", "192.168.100.50/24"), node("node-x", "192.168.100.100/24")]).status.success());
    let out =
        etcd.router(&["patch", "node", "node-x", "-p", r#"{"spec":{"bgp":{"ipv4Address":"192.168.100.50/24"}}}"#]);
    assert!(!out.status.success() && text(&out.stderr).contains("is node node-a's already"), "{}", text(&out.stderr));
}

/// Runs `f` on a thread that has entered etcd's namespace (setns is per thread).
fn in_etcd_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(datastore::ipam::Ipam) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    with_etcd(ns, |etcd| f(datastore::ipam::Ipam::new(etcd)))
}

fn with_etcd<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce(datastore::etcd::Etcd) -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f(datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()]).expect("endpoint"))
    })
}

#[test]
fn a_watch_sees_changes_as_they_happen_and_says_when_its_history_is_gone() {
    use datastore::etcd::{WatchEvent, WATCH_IDLE};
    let etcd = Etcd::start("etcd-watch");
    let t = with_etcd(&etcd.ns, |etcd| {
        let (_, rev) = etcd.list("/w/").expect("list");
        let mut w = etcd.watch("/w/", rev + 1).expect("watch");
        // A change under the prefix arrives at once; one elsewhere does not arrive at all.
        let writer = etcd.clone();
        let put = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            writer.put("/other", b"x").expect("put");
            writer.put("/w/a", b"1").expect("put")
        });
        let started = Instant::now();
        let ev = w.wait().expect("event");
        let written = put.join().expect("writer");
        assert_eq!(ev, WatchEvent::Changed(written));
        assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
        // Silence ends the read after WATCH_IDLE, so that the caller can look up.
        let started = Instant::now();
        assert_eq!(w.wait().expect("idle"), WatchEvent::Idle);
        assert!(started.elapsed() >= WATCH_IDLE - Duration::from_millis(100), "{:?}", started.elapsed());
        // A watch resumed from a revision that compaction removed says so.
        let later = etcd.put("/w/b", b"2").expect("put");
        etcd.compact(later).expect("compact");
        let mut w = etcd.watch("/w/", rev + 1).expect("watch");
        assert_eq!(w.wait().expect("compacted"), WatchEvent::Compacted(later));
        // Resumed from where it is not compacted: the changes since then, then quiet.
        let mut w = etcd.watch("/w/", later).expect("watch");
        assert_eq!(w.wait().expect("event"), WatchEvent::Changed(later));
    });
    t.join().expect("watch test");
}

#[test]
fn nodes_racing_for_blocks_and_addresses_never_get_the_same_one() {
    let etcd = Etcd::start("etcd-ipam");
    let pool: ipnet::Ipv4Net = "10.250.0.0/24".parse().expect("pool");
    // Hundreds of rounds of two nodes claiming every /28 of a /24 at once.
    for round in 0..120 {
        let ns = etcd.ns.clone();
        in_etcd_ns(&ns, |ipam| ipam.etcd.delete_prefix("/calico/ipam/").expect("clean")).join().expect("clean");
        let claim = |node: &'static str| {
            in_etcd_ns(&ns, move |ipam| {
                let mut got = Vec::new();
                while let Some(b) = ipam.claim_block(node, pool, 28).expect("claim") {
                    got.push(b);
                }
                got
            })
        };
        let (a, b) = (claim("node-a"), claim("node-b"));
        let (a, b) = (a.join().expect("a"), b.join().expect("b"));
        let mut all: Vec<_> = a.iter().chain(&b).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(a.len() + b.len(), 16, "round {round}: {a:?} {b:?}");
        assert_eq!(all.len(), 16, "round {round}: a block went to both: {a:?} {b:?}");
    }
    // Addresses: 2 × 40 allocations at once in a /25 of /29 blocks (16 × 6 addresses).
    let ns = etcd.ns.clone();
    in_etcd_ns(&ns, |ipam| ipam.etcd.delete_prefix("/calico/ipam/").expect("clean")).join().expect("clean");
    let pool: ipnet::Ipv4Net = "10.251.0.0/25".parse().expect("pool");
    let alloc = |node: &'static str| {
        in_etcd_ns(&ns, move |ipam| {
            (0..40)
                .map(|i| ipam.allocate(node, &format!("{node}-c{i}"), pool, 29).expect("address"))
                .collect::<Vec<_>>()
        })
    };
    let (a, b) = (alloc("node-a"), alloc("node-b"));
    let (a, b) = (a.join().expect("a"), b.join().expect("b"));
    let mut addrs: Vec<_> = a.iter().chain(&b).map(|x| x.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 80, "an address was given twice");
    let (a2, b2) = (a.clone(), b.clone());
    let check = in_etcd_ns(&ns, move |ipam| {
        // The same handle keeps its address; a node's own addresses come from its blocks.
        assert_eq!(ipam.allocate("node-a", "node-a-c0", pool, 29).expect("again").address, a2[0].address);
        let blocks_a = ipam.node_blocks("node-a").expect("blocks");
        assert!(a2.iter().filter(|x| !x.borrowed).all(|x| blocks_a.contains(&x.block)));
        // The node's affinity keys say the same as the blocks (what a running node reads).
        assert!(blocks_a.len() > 1);
        assert_eq!(ipam.affine_blocks::<ipnet::Ipv4Net>("node-a").expect("affinities"), blocks_a);
        assert!(b2.iter().filter(|x| !x.borrowed).all(|x| !blocks_a.contains(&x.block)));
        // Released addresses are handed out again; a handle released twice is fine.
        let freed = ipam.release::<ipnet::Ipv4Net>("node-b-c3").expect("release");
        assert_eq!(freed, Some(b2[3].address));
        assert_eq!(ipam.release::<ipnet::Ipv4Net>("node-b-c3").expect("again"), None);
        let held = |a: std::net::Ipv4Addr| {
            ipam.blocks::<ipnet::Ipv4Net>().expect("blocks").iter().any(|(b, _)| b.holder(a).is_some())
        };
        assert!(!held(b2[3].address), "released in its block");
        let blocks_b = ipam.node_blocks("node-b").expect("blocks");
        let again = ipam.allocate("node-b", "node-b-new", pool, 29).expect("again");
        assert!(!again.borrowed && blocks_b.contains(&again.block), "{again:?}");
        // 16 left at most: the pool runs out with a clear error.
        let mut n = 0;
        let err = loop {
            match ipam.allocate("node-c", &format!("fill-{n}"), pool, 29) {
                Ok(_) => n += 1,
                Err(e) => break e.to_string(),
            }
            assert!(n <= 96, "never ran out");
        };
        assert!(err.contains("no free address"), "{err}");
        n
    });
    assert!(check.join().expect("checks") <= 16);
    // IPv6: two containers' plugins at once on one node, each handle getting an address of
    // the node's own /122 (63 to give), never the same one; then the block is full.
    let block6: ipnet::Ipv6Net = "fd00:10:250::/122".parse().expect("block");
    let alloc6 = |tag: &'static str| {
        in_etcd_ns(&ns, move |ipam| {
            (0..30)
                .map(|i| ipam.allocate_in("node-a", &format!("{tag}-{i}"), &[block6]).expect("address").address)
                .collect::<Vec<_>>()
        })
    };
    let (x, y) = (alloc6("x"), alloc6("y"));
    let mut got: Vec<_> = x.join().expect("x").into_iter().chain(y.join().expect("y")).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), 60, "an IPv6 address was given twice");
    assert!(got.iter().all(|a| block6.contains(a) && *a != block6.network()));
    let fill = in_etcd_ns(&ns, move |ipam| {
        let more: Vec<_> =
            (0..3).map(|i| ipam.allocate_in("node-a", &format!("z-{i}"), &[block6]).expect("room")).collect();
        let full = ipam.allocate_in("node-a", "z-3", &[block6]).expect_err("full").to_string();
        // Another node may not take it, nor allocate from it.
        let theirs = ipam.allocate_in("node-b", "w-0", &[block6]).expect_err("not node-b's").to_string();
        let freed = ipam.release::<ipnet::Ipv6Net>("z-1").expect("release");
        (more.len(), full, theirs, freed == Some(more[1].address))
    });
    let (more, full, theirs, freed) = fill.join().expect("fill");
    assert_eq!(more, 3);
    assert!(full.contains("blocks are full"), "{full}");
    assert!(theirs.contains("claimed by another node"), "{theirs}");
    assert!(freed);
}

#[test]
fn calicos_ipam_controls_hold_for_every_assignment() {
    use datastore::ipam::Ipam;
    use ipnet::Ipv4Net;
    use std::net::Ipv4Addr;
    let etcd = Etcd::start("etcd-ipamcfg");
    let t = with_etcd(&etcd.ns, |etcd| {
        let store = datastore::Store::new(etcd.clone());
        let apply =
            |yaml: &str| store.apply_all(&datastore::resources::parse(yaml).expect("resources")).expect("apply");
        let config = |spec: &str| {
            apply(&format!(
                "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata:\n  name: default\nspec:\n{spec}"
            ))
        };
        let ipam = Ipam::new(etcd);
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        // A /26 pool of /29 blocks (6 addresses each), node-b holding the first.
        let pool: Ipv4Net = "10.246.0.0/26".parse().expect("pool");
        let pools = [(pool, 29)];
        assert_eq!(ipam.allocate("node-b", "b0", pool, 29).expect("b0").address, ip("10.246.0.1"));

        // Reservations: never handed out unasked, given to a workload that asks. One made
        // while a task that read the policy runs counts from its next task on.
        let task = Ipam::new(ipam.etcd.clone()).with_policy_read().expect("policy");
        apply("apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: kept\nspec:\n  reservedCIDRs: [10.246.0.2, 10.246.0.4/31, 'fd00:99::/64']\n");
        let before = task.allocate("node-b", "task", pool, 29).expect("auto");
        assert_eq!(before.address, ip("10.246.0.2"), "the policy as the task read it");
        assert_eq!(ipam.release::<Ipv4Net>("task").expect("release"), Some(ip("10.246.0.2")));
        let got: Vec<Ipv4Addr> =
            (0..3).map(|i| ipam.allocate("node-b", &format!("b{}", i + 1), pool, 29).expect("auto").address).collect();
        assert_eq!(got, [ip("10.246.0.3"), ip("10.246.0.6"), ip("10.246.0.9")], "around 0.2, 0.4 and 0.5");
        let asked = ipam.request("node-b", "b-asked", ip("10.246.0.4"), &pools).expect("asked");
        assert!(!asked.borrowed && asked.address == ip("10.246.0.4"), "{asked:?}");

        // A requested address: its free block is claimed for the node; one in another
        // node's block is borrowed; the same handle keeps it; taken or outside, refused.
        let a = ipam.request("node-a", "a-asked", ip("10.246.0.42"), &pools).expect("claims 0.40/29");
        assert_eq!((a.block, a.borrowed), ("10.246.0.40/29".parse().expect("net"), false));
        assert_eq!(ipam.node_blocks("node-a").expect("blocks"), [a.block]);
        let b = ipam.request("node-a", "a-borrow", ip("10.246.0.5"), &pools).expect("borrowed");
        assert!(b.borrowed, "{b:?}");
        assert_eq!(ipam.request("node-a", "a-borrow", ip("10.246.0.5"), &pools).expect("again"), b);
        let e = |r: anyhow::Result<datastore::ipam::Assigned>| r.expect_err("refused").to_string();
        assert!(e(ipam.request("node-a", "x", ip("10.246.0.42"), &pools)).contains("in use (by a-asked)"));
        assert!(e(ipam.request("node-a", "x", ip("10.246.0.40"), &pools)).contains("first or last"));
        assert!(e(ipam.request("node-a", "x", ip("10.9.0.1"), &pools)).contains("in no enabled IPPool"));
        assert!(e(ipam.request("node-a", "a-asked", ip("10.246.0.43"), &pools)).contains("holds 10.246.0.42"));

        // strictAffinity: no borrowing, asked or not.
        config("  strictAffinity: true\n");
        let strict = e(ipam.request("node-a", "x", ip("10.246.0.10"), &pools));
        assert!(strict.contains("strictAffinity forbids borrowing"), "{strict}");
        // node-c: 0.8/29 is node-b's; it claims the remaining blocks 0.16, 0.24, 0.32, 0.48
        // and 0.56, then runs out without borrowing node-b's free 0.10-0.14.
        let mut n = 0;
        let full = loop {
            match ipam.allocate("node-c", &format!("c{n}"), pool, 29) {
                Ok(a) => assert!(!a.borrowed, "{a:?}"),
                Err(e) => break e.to_string(),
            }
            n += 1;
            assert!(n < 40, "never ran out");
        };
        assert_eq!(n, 30, "5 blocks of 6");
        assert!(full.contains("every block of the pool is claimed, and strictAffinity forbids borrowing"), "{full}");
        // Without it, node-c borrows.
        config("  strictAffinity: false\n");
        assert!(ipam.allocate("node-c", "c-more", pool, 29).expect("borrows").borrowed);

        // maxBlocksPerHost: node-a holds one block; at 1 it may claim no other.
        ipam.etcd.delete_prefix("/calico/ipam/").expect("clean");
        store.delete(datastore::resources::Kind::IpReservation, "kept").expect("delete");
        config("  maxBlocksPerHost: 1\n");
        for i in 0..6 {
            ipam.allocate("node-a", &format!("m{i}"), pool, 29).expect("first block");
        }
        let limited = e(ipam.allocate("node-a", "m6", pool, 29));
        assert!(limited.contains("it holds maxBlocksPerHost (1) blocks"), "{limited}");
        let asked = e(ipam.request("node-a", "m7", ip("10.246.0.17"), &pools));
        assert!(asked.contains("may not claim"), "{asked}");
        // autoAllocateBlocks off: not even a first block.
        config("  autoAllocateBlocks: false\n");
        let off = e(ipam.allocate("node-d", "d0", pool, 29));
        assert!(off.contains("autoAllocateBlocks is off"), "{off}");
        // The default again: node-d gets a block of its own.
        store.delete(datastore::resources::Kind::IpamConfiguration, "default").expect("delete");
        assert!(!ipam.allocate("node-d", "d0", pool, 29).expect("a block").borrowed);
    });
    t.join().expect("IPAM controls");
}

/// What our IPAM writes is what Calico's tools read, and what Calico's IPAM wrote (another
/// node's pod, `calicoctl ipam configure`) holds for ours.
#[test]
fn ipam_in_etcd_is_kept_as_calico_keeps_it() {
    use datastore::ipam::Ipam;
    use ipnet::{Ipv4Net, Ipv6Net};
    use serde_json::{json, Value};
    use std::net::Ipv4Addr;
    let etcd = Etcd::start("etcd-ipamfmt");
    let t = with_etcd(&etcd.ns, |etcd| {
        let ipam = Ipam::new(etcd.clone());
        let raw = |key: &str| -> Option<Value> {
            etcd.get(key).expect("get").map(|kv| serde_json::from_slice(&kv.value).expect("json"))
        };
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        let pool: Ipv4Net = "10.247.0.0/26".parse().expect("pool");
        let pool6: Ipv6Net = "fd00:247::/120".parse().expect("pool");
        let a4 = ipam.allocate("node-a", "c1@eth0", pool, 29).expect("v4");
        let a6 = ipam.allocate("node-a", "c1@eth0", pool6, 122).expect("v6");
        assert_eq!((a4.address, a6.address.to_string().as_str()), (ip("10.247.0.1"), "fd00:247::1"));

        // One handle for both families, counting addresses per block.
        let handle = raw("/calico/ipam/v2/handle/c1@eth0").expect("handle");
        assert_eq!(handle, json!({"block": {"10.247.0.0/29": 1, "fd00:247::/122": 1}, "deleted": false}));
        let block = raw("/calico/ipam/v2/assignment/ipv4/block/10.247.0.0-29").expect("block");
        assert_eq!(block["cidr"], "10.247.0.0/29");
        assert_eq!(block["affinity"], "host:node-a");
        assert_eq!(block["allocations"], json!([null, 0, null, null, null, null, null, null]));
        assert_eq!(block["unallocated"], json!([0, 2, 3, 4, 5, 6, 7]));
        assert_eq!(block["attributes"], json!([{"handle_id": "c1@eth0", "secondary": {"node": "node-a"}}]));
        assert!(block["sequenceNumber"].as_u64().is_some() && block["deleted"] == json!(false), "{block}");
        let affinity = raw("/calico/ipam/v2/host/node-a/ipv4/block/10.247.0.0-29").expect("affinity");
        assert_eq!(affinity["state"], "confirmed");

        // A block Calico's IPAM wrote for its own node and pod: its addresses are not handed
        // out again, its handle is released as Calico would release it, and our GC's list of
        // a node's container handles would not include it.
        let theirs = json!({"cidr": "10.247.0.8/29", "affinity": "host:worker-1", "strictAffinity": false,
            "allocations": [null, 0, 0, null, null, null, null, null], "unallocated": [3, 4, 5, 6, 7, 0],
            "attributes": [{"handle_id": "k8s-pod-network.5f1c", "secondary": {"namespace": "default", "node": "worker-1", "pod": "web"}}],
            "sequenceNumber": 7, "sequenceNumberForAllocation": {"1": 5, "2": 6}, "deleted": false});
        etcd.put("/calico/ipam/v2/assignment/ipv4/block/10.247.0.8-29", theirs.to_string().as_bytes()).expect("put");
        etcd.put("/calico/ipam/v2/host/worker-1/ipv4/block/10.247.0.8-29", br#"{"state":"confirmed","deleted":false}"#)
            .expect("put");
        etcd.put("/calico/ipam/v2/handle/k8s-pod-network.5f1c", br#"{"block":{"10.247.0.8/29":2},"deleted":false}"#)
            .expect("put");
        let pools = [(pool, 29)];
        let taken = ipam.request("node-a", "x@eth0", ip("10.247.0.9"), &pools).expect_err("in use").to_string();
        assert!(taken.contains("in use (by k8s-pod-network.5f1c)"), "{taken}");
        let lent = ipam.request("node-a", "x@eth0", ip("10.247.0.11"), &pools).expect("borrowed");
        assert!(lent.borrowed);
        // Blocks are listed in address order, not in the order of their keys' text.
        assert!(ipam.claim("node-b", "10.247.0.16/29".parse::<Ipv4Net>().expect("net")).expect("claim"));
        let listed: Vec<String> =
            ipam.blocks::<Ipv4Net>().expect("blocks").iter().map(|(b, _)| b.cidr.to_string()).collect();
        assert_eq!(listed, ["10.247.0.0/29", "10.247.0.8/29", "10.247.0.16/29"]);
        assert_eq!(ipam.handles("worker-1").expect("handles"), ["k8s-pod-network.5f1c"]);
        assert_eq!(ipam.handles("node-a").expect("handles"), ["c1@eth0", "x@eth0"]);
        let block = raw("/calico/ipam/v2/assignment/ipv4/block/10.247.0.8-29").expect("block");
        assert_eq!(block["allocations"], json!([null, 0, 0, 1, null, null, null, null]));
        assert_eq!(block["attributes"][0]["secondary"]["pod"], "web", "Calico's attributes kept");
        assert_eq!(block["sequenceNumberForAllocation"], json!({"1": 5, "2": 6, "3": 7}));
        assert_eq!(ipam.release::<Ipv4Net>("k8s-pod-network.5f1c").expect("release"), Some(ip("10.247.0.9")));
        assert_eq!(raw("/calico/ipam/v2/handle/k8s-pod-network.5f1c"), None, "an empty handle goes");
        let block = raw("/calico/ipam/v2/assignment/ipv4/block/10.247.0.8-29").expect("block");
        assert_eq!(block["allocations"], json!([null, null, null, 0, null, null, null, null]));
        assert_eq!(block["attributes"], json!([{"handle_id": "x@eth0", "secondary": {"node": "node-a"}}]));

        // Releasing one family leaves the other's count; the last takes the handle.
        assert_eq!(ipam.release::<Ipv6Net>("c1@eth0").expect("v6").map(|a| a.to_string()), Some("fd00:247::1".into()));
        assert_eq!(
            raw("/calico/ipam/v2/handle/c1@eth0"),
            Some(json!({"block": {"10.247.0.0/29": 1}, "deleted": false}))
        );
        assert_eq!(ipam.release_address::<Ipv4Net>(ip("10.247.0.1")).expect("release"), Some("c1@eth0".into()));
        assert_eq!(raw("/calico/ipam/v2/handle/c1@eth0"), None);
        assert!(ipam.etcd.get("/calico/ipam/v2/handle/").expect("get").is_none());
        assert!(ipam.find::<Ipv4Net>("c1@eth0").expect("find").is_none());
        assert!(ipam.find::<Ipv4Net>("bad/handle").is_err(), "a '/' cannot be a handle key");

        // A node deleted, as Calico does it: worker-1's block still holds node-a's borrowed
        // address, so it stays without a node; node-a's address and its two empty blocks (one
        // of each family) go.
        assert_eq!(ipam.release_node("worker-1").expect("release"), (0, 0));
        let block = raw("/calico/ipam/v2/assignment/ipv4/block/10.247.0.8-29").expect("block");
        assert_eq!(block["affinity"], Value::Null, "{block}");
        assert_eq!(raw("/calico/ipam/v2/host/worker-1/ipv4/block/10.247.0.8-29"), None);
        assert_eq!(ipam.release_node("node-a").expect("release"), (1, 2));
        assert_eq!(raw("/calico/ipam/v2/assignment/ipv4/block/10.247.0.0-29"), None);
        assert_eq!(raw("/calico/ipam/v2/assignment/ipv6/block/fd00:247::-122"), None);
        assert_eq!(raw("/calico/ipam/v2/handle/x@eth0"), None);
        assert_eq!(ipam.handles("node-a").expect("handles"), Vec::<String>::new());

        // `calicoctl ipam configure --strictaffinity=true` writes Calico's v1 key: it holds
        // until an IPAMConfiguration resource says otherwise.
        etcd.put("/calico/ipam/v2/config", br#"{"strict_affinity":true,"auto_allocate_blocks":true}"#).expect("put");
        let p = ipam.policy().expect("policy");
        assert!(p.strict_affinity && p.auto_allocate_blocks && p.max_blocks_per_host.is_none(), "{p:?}");
        let strict = ipam.request("node-a", "y@eth0", ip("10.247.0.12"), &pools).expect_err("strict").to_string();
        assert!(strict.contains("strictAffinity forbids borrowing"), "{strict}");
        let store = datastore::Store::new(etcd.clone());
        let yaml = "apiVersion: projectcalico.org/v3\nkind: IPAMConfiguration\nmetadata:\n  name: default\nspec:\n  strictAffinity: false\n";
        store.apply_all(&datastore::resources::parse(yaml).expect("resources")).expect("apply");
        assert!(!ipam.policy().expect("policy").strict_affinity, "the resource comes first");
    });
    t.join().expect("Calico's IPAM format");
    // `router ipam show` reads a block Calico's IPAM wrote, with the pod its plugin named.
    let theirs = serde_json::json!({"cidr": "10.247.0.16/29", "affinity": "host:worker-1",
        "allocations": [null, 0, null, null, null, null, null, null], "unallocated": [2, 3, 4, 5, 6, 7, 0],
        "attributes": [{"handle_id": "k8s-pod-network.5f1c", "secondary": {"namespace": "default", "node": "worker-1", "pod": "web"}}]});
    with_etcd(&etcd.ns, move |e| {
        e.put("/calico/ipam/v2/assignment/ipv4/block/10.247.0.16-29", theirs.to_string().as_bytes())
    })
    .join()
    .expect("thread")
    .expect("put");
    let said = etcd.ok(&["ipam", "show", "--ip", "10.247.0.17"]);
    assert_eq!(
        said.trim(),
        "10.247.0.17 is in use by k8s-pod-network.5f1c (pod default/web); block 10.247.0.16/29 is worker-1's"
    );
    // `router ipam check` away from a lab: worker-1 cannot be asked, but the workload
    // endpoints say which addresses are in use, as for Calico's check.
    let node = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: worker-1\n";
    let path = etcd.dir.join("worker.yaml");
    std::fs::write(&path, node).expect("write");
    etcd.ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    let check = etcd.router(&["ipam", "check"]);
    let said = text(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{said}");
    assert!(said.contains("leaked") && said.contains("given to worker-1, and no workload endpoint has it"), "{said}");
    let wep = "apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: worker--1-k8s-web-eth0\nspec:\n  node: worker-1\n  orchestrator: k8s\n  pod: web\n  endpoint: eth0\n  ipNetworks: [10.247.0.17/32]\n";
    std::fs::write(&path, wep).expect("write");
    etcd.ok(&["apply", "-f", path.to_str().unwrap_or_default()]);
    let clean = etcd.ok(&["ipam", "check"]);
    assert!(clean.contains("no leaked addresses") && !clean.contains("not checked"), "{clean}");
    // The other way round: an address a workload uses that IPAM never allocated (it would
    // hand it to another pod), which `--release` cannot mend.
    let other = etcd.dir.join("other.yaml");
    std::fs::write(
        &other,
        wep.replace("k8s-web-eth0", "k8s-db-eth0").replace("pod: web", "pod: db").replace(".17/", ".18/"),
    )
    .expect("write");
    etcd.ok(&["apply", "-f", other.to_str().unwrap_or_default()]);
    for args in [&["ipam", "check"][..], &["ipam", "check", "--release"]] {
        let check = etcd.router(args);
        let said = text(&check.stdout);
        assert_eq!(check.status.code(), Some(1), "{said}");
        assert!(
            said.contains(
                "unallocated   10.247.0.18   -   in use by a workload endpoint, but IPAM has not allocated it"
            ),
            "{said}"
        );
        assert!(!said.contains("released"), "{said}");
    }
    etcd.ok(&["delete", "-f", other.to_str().unwrap_or_default()]);
    etcd.ok(&["delete", "-f", path.to_str().unwrap_or_default()]);
    let fixed = etcd.router(&["ipam", "check", "--release"]);
    assert!(
        text(&fixed.stdout).contains("released 10.247.0.17 (held by k8s-pod-network.5f1c)"),
        "{}",
        text(&fixed.stdout)
    );
}
