//! `router cni install`: what Calico's install step does, for this plugin: the network
//! config `10-router.conflist` (network `router`, plugin type `router`) and the plugin
//! binary, as `router`, where runtimes look for them.

use anyhow::Context as _;
use ipnet::{Ipv4Net, Ipv6Net};
use nodeapi::config::NodeConfig;
use serde_json::json;
use std::path::{Path, PathBuf};

pub const CONF_DIR: &str = "/etc/cni/net.d";
pub const BIN_DIR: &str = "/opt/cni/bin";
pub const CONFLIST: &str = "10-router.conflist";
pub const NETWORK: &str = "router";

/// What the plugin needs to know about its node.
#[derive(Debug, Clone)]
pub struct Target {
    pub node: String,
    pub admin_socket: PathBuf,
    pub blocks: Vec<Ipv4Net>,
    /// Dual stack: the node's IPv6 blocks (containers then get a /128 too).
    pub blocks6: Vec<Ipv6Net>,
    /// The pods' MTU if pinned; by default the plugin asks the node at every ADD (its
    /// uplink's less the pools' tunnel, as they are then).
    pub mtu: Option<u16>,
    pub ipam_file: PathBuf,
    /// IPAM in etcd instead of the file (shared by every host); then the pool's blocks of
    /// `block_size` are claimed there.
    pub etcd_endpoints: Vec<String>,
    /// With `https://` endpoints: the CA and the client's certificate and key.
    pub etcd_tls: nodeapi::config::EtcdTls,
    pub pool: Option<Ipv4Net>,
    /// Dual stack with etcd: the IPv6 pool new IPv6 blocks come from.
    pub pool6: Option<Ipv6Net>,
    /// The IPAM file is every node's (the lab's): with every block full, a new IPv4 block of
    /// the pool is claimed in it. A host's own file has only its configured blocks: the other
    /// hosts would not know a block it claimed.
    pub shared_file: bool,
}

impl Target {
    pub fn from_node(cfg: &NodeConfig, ipam_file: PathBuf) -> Target {
        Target {
            node: cfg.name.clone(),
            admin_socket: cfg.admin_socket.clone(),
            blocks: cfg.blocks.clone(),
            blocks6: cfg.ipv6.iter().flat_map(|v| v.blocks.iter().copied()).collect(),
            mtu: None,
            ipam_file,
            etcd_endpoints: Vec::new(),
            etcd_tls: nodeapi::config::EtcdTls::default(),
            pool: cfg.pools.first().map(|p| p.cidr),
            pool6: cfg.ipv6.as_ref().and_then(|v| v.pools.first().copied()),
            shared_file: false,
        }
    }
}

pub fn conflist(t: &Target) -> serde_json::Value {
    let mut plugin = json!({
        "type": "router",
        "node": t.node,
        "admin_socket": t.admin_socket,
        "blocks": t.blocks,
        // Runtimes pass the addresses a container asks for (`--ip`) as runtimeConfig.ips.
        "capabilities": { "ips": true, "mac": true },
    });
    if let Some(mtu) = t.mtu {
        plugin["mtu"] = json!(mtu);
    }
    if !t.blocks6.is_empty() {
        plugin["blocks6"] = json!(t.blocks6);
    }
    // With etcd, etcd keeps the addresses of both families.
    if t.etcd_endpoints.is_empty() {
        plugin["ipam_file"] = json!(t.ipam_file);
    }
    if !t.etcd_endpoints.is_empty() || t.shared_file {
        if !t.etcd_endpoints.is_empty() {
            plugin["etcd_endpoints"] = json!(t.etcd_endpoints);
            // Calico's keys: etcd_ca_cert_file, etcd_cert_file, etcd_key_file.
            if let (Some(o), Ok(serde_json::Value::Object(tls))) =
                (plugin.as_object_mut(), serde_json::to_value(&t.etcd_tls))
            {
                o.extend(tls);
            }
        }
        if let Some(pool) = t.pool {
            plugin["pool"] = json!(pool);
        }
        plugin["block_size"] = json!(t.blocks.first().map_or(26, |b| b.prefix_len()));
        if let (Some(pool6), false) = (t.pool6, t.blocks6.is_empty()) {
            plugin["pool6"] = json!(pool6);
            plugin["block_size6"] = json!(t.blocks6.first().map_or(122, |b| b.prefix_len()));
        }
    }
    json!({ "cniVersion": "1.0.0", "name": NETWORK, "plugins": [plugin] })
}

/// Writes the conflist into `conf_dir` and copies `plugin` to `bin_dir/router`; returns
/// both paths.
pub fn install(t: &Target, conf_dir: &Path, bin_dir: &Path, plugin: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(conf_dir).with_context(|| format!("creating {}", conf_dir.display()))?;
    std::fs::create_dir_all(bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let conf = conf_dir.join(CONFLIST);
    let tmp = conf.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&conflist(t))? + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &conf).with_context(|| format!("writing {}", conf.display()))?;
    // Copied beside, then renamed: a runtime never executes half a binary.
    let bin = bin_dir.join("router");
    let tmp = bin_dir.join(".router.tmp");
    std::fs::copy(plugin, &tmp).with_context(|| format!("copying {} to {}", plugin.display(), tmp.display()))?;
    std::fs::rename(&tmp, &bin).with_context(|| format!("installing {}", bin.display()))?;
    Ok((conf, bin))
}

/// The plugin binary beside the running `router`.
pub fn plugin_beside(exe: &Path) -> anyhow::Result<PathBuf> {
    let p = exe.with_file_name("router-cni");
    if !p.exists() {
        anyhow::bail!("{} is missing: build it with `cargo build --release` (it builds router-cni too)", p.display());
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(blocks6: &[&str], etcd: bool) -> Target {
        Target {
            node: "node-a".into(),
            admin_socket: "/run/node-a.sock".into(),
            blocks: vec!["10.244.1.0/26".parse().expect("net")],
            blocks6: blocks6.iter().map(|b| b.parse().expect("net")).collect(),
            mtu: None,
            ipam_file: "/run/ipam.json".into(),
            etcd_endpoints: if etcd { vec!["http://127.0.0.1:2379".into()] } else { Vec::new() },
            etcd_tls: nodeapi::config::EtcdTls::default(),
            pool: Some("10.244.0.0/16".parse().expect("net")),
            pool6: Some("fd00:10:244::/48".parse().expect("net")),
            shared_file: false,
        }
    }

    #[test]
    fn with_etcd_no_file_is_named_for_either_family() {
        let plugin = |t: &Target| conflist(t)["plugins"][0].clone();
        let v4 = plugin(&target(&[], true));
        assert!(v4.get("ipam_file").is_none() && v4["etcd_endpoints"][0] == "http://127.0.0.1:2379", "{v4}");
        let dual = plugin(&target(&["fd00:10:244::/122"], true));
        assert!(dual.get("ipam_file").is_none() && dual["pool"] == "10.244.0.0/16", "{dual}");
        assert_eq!(dual["blocks6"][0], "fd00:10:244::/122");
        assert_eq!((dual["pool6"].as_str(), dual["block_size6"].as_u64()), (Some("fd00:10:244::/48"), Some(122)));
        assert!(v4.get("etcd_ca_cert_file").is_none(), "{v4}");
        // TLS to etcd under Calico's keys, which the plugin reads back.
        let tls = nodeapi::config::EtcdTls {
            ca_cert: Some("/etc/router/etcd-ca.pem".into()),
            cert: Some("/etc/router/etcd-cert.pem".into()),
            key: Some("/etc/router/etcd-key.pem".into()),
        };
        let secure = plugin(&Target { etcd_tls: tls.clone(), ..target(&[], true) });
        assert_eq!(secure["etcd_ca_cert_file"], "/etc/router/etcd-ca.pem", "{secure}");
        let mut conf = secure.clone();
        conf["cniVersion"] = "1.0.0".into();
        conf["name"] = NETWORK.into();
        let read: crate::plugin::NetConf = serde_json::from_value(conf).expect("the plugin reads it");
        assert_eq!(read.etcd_tls, tls);
        let file = plugin(&target(&["fd00:10:244::/122"], false));
        assert!(file.get("etcd_endpoints").is_none() && file["ipam_file"] == "/run/ipam.json", "{file}");
        // A host's own file claims no block, so it is told no pool; the lab's shared one is.
        assert!(file.get("pool").is_none(), "{file}");
        let shared = plugin(&Target { shared_file: true, ..target(&[], false) });
        assert_eq!((shared["pool"].as_str(), shared["block_size"].as_u64()), (Some("10.244.0.0/16"), Some(26)));
        // etcd has the pools: a node config without any names none (no `null`).
        let no_pool = plugin(&Target { pool: None, ..target(&[], true) });
        assert!(no_pool.get("pool").is_none(), "{no_pool}");
    }

    #[test]
    fn the_mtu_is_left_to_the_node_unless_pinned() {
        let plugin = |t: &Target| conflist(t)["plugins"][0].clone();
        assert!(plugin(&target(&[], false)).get("mtu").is_none());
        assert_eq!(plugin(&Target { mtu: Some(8950), ..target(&[], true) })["mtu"], 8950);
    }
}
