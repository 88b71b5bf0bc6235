//! What a lab made, written down before each step so that `lab down` can undo a lab that
//! crashed or was interrupted halfway.

use anyhow::Context as _;
use nodeapi::config::{DataplaneMode, IpipMode};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Switch,
    Underlay,
    Node,
    Pod,
    /// The lab's etcd (`lab up --datastore etcd`).
    Datastore,
    /// A container a runtime attached through the CNI plugin (not in the state file: the
    /// nodes report them).
    Container,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    pub role: Role,
    pub namespace: String,
    /// Addresses as shown by status (CIDR).
    pub addresses: Vec<String>,
    /// For pods: their node; for nodes: their subnet.
    #[serde(default)]
    pub parent: Option<String>,
    /// For pods: the host end of the veth pair on the node.
    #[serde(default)]
    pub interface: Option<String>,
}

impl Host {
    /// Its addresses, without their prefix lengths.
    pub fn ips(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        self.addresses.iter().filter_map(|a| a.split('/').next()?.parse().ok())
    }

    /// Its first address of one family.
    pub fn ip(&self, v6: bool) -> Option<std::net::IpAddr> {
        self.ips().find(|a| a.is_ipv6() == v6)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Daemon {
    pub node: String,
    pub pid: i32,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
}

fn never() -> IpipMode {
    IpipMode::Never
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub topology: String,
    pub dataplane: DataplaneMode,
    #[serde(default)]
    pub ipip_mode: IpipMode,
    /// Labs from before VXLAN have none: Never.
    #[serde(default = "never")]
    pub vxlan_mode: IpipMode,
    /// The pool's natOutgoing.
    #[serde(default)]
    pub nat_outgoing: bool,
    /// The IPv6 pool's natOutgoing.
    #[serde(default)]
    pub nat_outgoing_v6: bool,
    pub created_unix: u64,
    /// False until `lab up` finished every step.
    pub complete: bool,
    /// Every namespace the lab created (or was about to), in creation order.
    pub namespaces: Vec<String>,
    pub hosts: Vec<Host>,
    pub daemons: Vec<Daemon>,
    /// With `--datastore etcd`: etcd's host (its namespace) and client URL on the underlay.
    #[serde(default)]
    pub etcd: Option<EtcdHost>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtcdHost {
    pub namespace: String,
    pub url: String,
    /// etcd's process (`ip netns exec` execs it).
    #[serde(default)]
    pub pid: Option<i32>,
}

pub const FILE: &str = "state.json";

impl State {
    pub fn load(dir: &Path) -> anyhow::Result<Option<State>> {
        let p = dir.join(FILE);
        match std::fs::read_to_string(&p) {
            Ok(t) => {
                Ok(Some(serde_json::from_str(&t).with_context(|| {
                    format!("{} is corrupt; remove it and the lab's namespaces by hand", p.display())
                })?))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Writes atomically (temp file + rename): a crash never leaves half a state file.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        // The lab's directory is private (0700): it holds node configs with passwords, the
        // admin sockets and the logs.
        nodeapi::private::dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        nodeapi::private::write(&tmp, text.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(FILE)).with_context(|| format!("writing {}", dir.join(FILE).display()))?;
        Ok(())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }
}
