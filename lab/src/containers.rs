//! Containers on the lab's nodes: each node gets the CNI network `router` (this binary as
//! the plugin, the lab's shared IPAM file) and a `containers.conf` that points podman at
//! it, so `router lab exec node-a -- podman run --network router IMAGE CMD` puts a
//! container on node-a's pod network with nothing else to set up.
//!
//! `lab exec` runs container runtimes in the node's network namespace with the machine's
//! mounts (see [`RUNTIMES`]); everything else as `ip netns exec` does.

use crate::topology::Topology;
use crate::Lab;
use anyhow::Context as _;
use cni::ipam::{Allocation, Ipam};
use std::path::{Path, PathBuf};

/// The lab's IPAM state, shared by every node's plugin calls (so a full block can borrow).
pub fn ipam_file(lab: &Lab) -> PathBuf {
    lab.dir.join("ipam.json")
}

fn node_dir(lab: &Lab, node: &str) -> PathBuf {
    lab.dir.join("cni").join(node)
}

/// The `containers.conf` of a node, for `CONTAINERS_CONF`.
pub fn containers_conf(lab: &Lab, node: &str) -> PathBuf {
    node_dir(lab, node).join("containers.conf")
}

/// The annotations that mark a container made on a lab's node: the lab's directory, and the
/// node.
const LAB_ANNOTATION: &str = "router.lab";
const NODE_ANNOTATION: &str = "router.node";

/// Writes the IPAM state (every node's block, the topology's pods), the plugin, and per
/// node its network config and `containers.conf`.
pub fn setup(lab: &Lab, topo: &Topology, exe: &Path, etcd: Option<&str>) -> anyhow::Result<()> {
    Ipam::new(ipam_file(lab)).with(|st| {
        for n in &topo.nodes {
            st.blocks.insert(n.block, n.name.clone());
            for p in &n.pods {
                let a = Allocation { handle: cni::pod_handle(&p.name), node: n.name.clone() };
                if let Some(a6) = p.address_v6 {
                    st.allocations6.insert(a6, a.clone());
                }
                st.allocations.insert(p.address, a);
            }
            if let Some((_, block6)) = n.v6 {
                st.blocks6.insert(block6, n.name.clone());
            }
        }
    })?;
    let bin = lab.dir.join("cni").join("bin");
    std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    // The runtime runs the plugin type "router" from here: this very binary.
    let plugin = bin.join("router");
    let _ = std::fs::remove_file(&plugin);
    std::os::unix::fs::symlink(exe, &plugin).with_context(|| format!("linking {}", plugin.display()))?;
    let runtime =
        if Path::new("/usr/bin/runc").exists() || !Path::new("/usr/bin/crun").exists() { "runc" } else { "crun" };
    for n in &topo.nodes {
        let dir = node_dir(lab, &n.name);
        let target = cni::install::Target {
            node: n.name.clone(),
            admin_socket: lab.socket(&n.name),
            blocks: vec![n.block],
            blocks6: n.v6.map(|(_, b)| b).into_iter().collect(),
            // The node's: its uplink's less the pools' tunnel, as they are at each ADD.
            mtu: None,
            ipam_file: ipam_file(lab),
            // With the lab's etcd, containers' addresses live there (as on real machines).
            etcd_endpoints: etcd.iter().map(|e| e.to_string()).collect(),
            etcd_tls: Default::default(),
            pool: Some(topo.pool),
            pool6: topo.pool_v6,
            shared_file: true,
        };
        let net_d = dir.join("net.d");
        std::fs::create_dir_all(&net_d).with_context(|| format!("creating {}", net_d.display()))?;
        let conf = net_d.join(cni::install::CONFLIST);
        std::fs::write(&conf, serde_json::to_string_pretty(&cni::install::conflist(&target))?)
            .with_context(|| format!("writing {}", conf.display()))?;
        // What podman needs on these machines: the CNI backend pointed at the node's
        // network, cgroupfs, and ulimits it may set; and a mark on every container made
        // here, so that `lab down` finds also those whose ADD failed (the plugin never
        // recorded them, and podman keeps them, named, in its state of the whole machine).
        let text = format!(
            "# podman on lab node {node} (CONTAINERS_CONF; `router lab exec {node} -- podman ...` sets it)\n\
             [containers]\n\
             annotations = [\"{LAB_ANNOTATION}={lab_dir}\", \"{NODE_ANNOTATION}={node}\"]\n\
             default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             runtime = \"{runtime}\"\n\
             [network]\n\
             network_backend = \"cni\"\n\
             network_config_dir = \"{net_d}\"\n\
             cni_plugin_dirs = [\"{bin}\", \"/usr/lib/cni\"]\n\
             default_network = \"{net}\"\n",
            node = n.name,
            lab_dir = lab.dir.display(),
            net_d = net_d.display(),
            bin = bin.display(),
            net = cni::install::NETWORK,
        );
        let path = containers_conf(lab, &n.name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The containers the lab's nodes ran (from the IPAM state): their ids.
pub fn container_ids(lab: &Lab) -> Vec<(String, String)> {
    let path = ipam_file(lab);
    if !path.exists() {
        return Vec::new();
    }
    Ipam::new(path)
        .with(|st| {
            st.allocations
                .values()
                .filter(|a| !cni::is_pod_handle(&a.handle))
                .filter_map(|a| Some((a.node.clone(), cni::handle_container(&a.handle)?.0.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// The containers (CNI pods) the lab's nodes serve now, each with its node's name. Only the
/// nodes know them: the lab's state lists the topology's hosts.
pub fn served(st: &crate::state::State) -> Vec<(String, nodeapi::admin::PodStatus)> {
    let mut all = Vec::new();
    for d in &st.daemons {
        let Ok(pods) = nodeapi::admin::Client::new(&d.socket).pods() else { continue };
        all.extend(pods.into_iter().filter(|p| p.dynamic).map(|p| (d.node.clone(), p)));
    }
    all
}

/// The containers podman keeps that were made on the lab's nodes (by their annotations),
/// whether or not they ever got an address: each with its node.
fn annotated(lab: &Lab, st: &crate::state::State) -> Vec<(String, String)> {
    let Some(node) = st.hosts.iter().find(|h| h.role == crate::state::Role::Node) else { return Vec::new() };
    let podman = |args: &[&str]| {
        std::process::Command::new("podman")
            .args(args)
            .env("CONTAINERS_CONF", containers_conf(lab, &node.name))
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let Some(all) = podman(&["ps", "--all", "--quiet", "--no-trunc"]) else { return Vec::new() };
    let ids: Vec<&str> = all.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    let format =
        format!("{{{{.ID}}}} {{{{index .Config.Annotations \"{LAB_ANNOTATION}\"}}}} {{{{index .Config.Annotations \"{NODE_ANNOTATION}\"}}}}");
    let Some(marks) = podman(&[&["inspect", "--type", "container", "--format", &format][..], &ids].concat()) else {
        return Vec::new();
    };
    let dir = lab.dir.display().to_string();
    marks
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (id, at, node) = (w.next()?, w.next()?, w.next()?);
            (at == dir).then(|| (node.to_string(), id.to_string()))
        })
        .collect()
}

/// Removes the containers the lab's nodes ran, through podman with each node's config (so
/// the plugin's DEL runs while the nodes still do). They are found in the file IPAM, in
/// what the nodes serve (with the lab's IPAM in etcd, only there) and by the annotation
/// every container made on a node carries. Without podman there are none.
pub fn remove_all(lab: &Lab, st: &crate::state::State) {
    let mut ids = container_ids(lab);
    let more = served(st).into_iter().filter_map(|(n, p)| Some((n, p.pod.container?))).chain(annotated(lab, st));
    for (node, id) in more {
        if !ids.iter().any(|(_, known)| *known == id) {
            ids.push((node, id));
        }
    }
    if ids.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    for (node, id) in ids {
        let _ = std::process::Command::new(&exe)
            .args(["lab", "exec", &node, "--", "podman", "rm", "--force", "--time", "0", &id])
            .env("ROUTER_LAB", &lab.name)
            .env("ROUTER_LAB_DIR", lab.dir.parent().unwrap_or(Path::new("/")))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Programs that `lab exec` runs in a host's network namespace only, keeping the mounts of
/// the machine: container runtimes need its cgroup hierarchies (which the fresh /sys of
/// `ip netns exec` hides), and the network namespaces they pin under /run/netns must outlive
/// the command. They see the machine's /sys, which they do not need for networking.
pub const RUNTIMES: &[&str] = &["podman", "buildah", "runc", "crun", "ctr", "nerdctl", "crictl"];

/// Whether `program` is one of [`RUNTIMES`].
pub fn is_runtime(program: &str) -> bool {
    let base = Path::new(program).file_name().and_then(|n| n.to_str()).unwrap_or(program);
    RUNTIMES.contains(&base)
}

/// Moves this process into `ns`'s network namespace only (as `nsenter --net` does).
pub fn enter_net(ns: &str) -> anyhow::Result<()> {
    let netns =
        std::fs::File::open(Path::new("/run/netns").join(ns)).with_context(|| format!("opening namespace {ns}"))?;
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET).with_context(|| format!("entering {ns}"))
}
