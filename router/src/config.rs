//! The node daemon's configuration file (`router node --config FILE`). `lab up` writes one per
//! node; a user can write one by hand. Errors name the file and line.

use crate::fileerr::{self, FileError, Source};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// How packets reach the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DataplaneMode {
    /// Full userspace forwarding from AF_PACKET sockets on every interface.
    #[default]
    Afpacket,
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub dataplane: DataplaneMode,
    pub workers: usize,
    pub pin_workers: bool,
    pub admin_socket: PathBuf,
    pub uplink: Uplink,
    pub blocks: Vec<Ipv4Net>,
    pub pods: Vec<PodConfig>,
    pub routes: Vec<StaticRoute>,
}

#[derive(Debug, Clone)]
pub struct Uplink {
    pub interface: String,
    pub address: Ipv4Net,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    pub name: String,
    pub interface: String,
    pub address: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticAction {
    Via(Ipv4Addr),
    Blackhole,
    Unreachable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRoute {
    pub prefix: Ipv4Net,
    pub action: StaticAction,
}

// The file format, as written by `lab up` and read back.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub name: Spanned<String>,
    #[serde(default)]
    pub dataplane: DataplaneMode,
    #[serde(default = "default_workers")]
    pub workers: Spanned<usize>,
    #[serde(default = "default_true")]
    pub pin_workers: bool,
    pub admin_socket: PathBuf,
    pub uplink: RawUplink,
    #[serde(default)]
    pub blocks: Vec<Spanned<String>>,
    #[serde(default)]
    pub pods: Vec<RawPod>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

fn default_workers() -> Spanned<usize> {
    // All cores but one (the control thread's), at least one.
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    Spanned::new(0..0, n.saturating_sub(1).max(1))
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUplink {
    pub interface: Spanned<String>,
    pub address: Spanned<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPod {
    pub name: Spanned<String>,
    pub interface: Spanned<String>,
    pub address: Spanned<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Spanned<String>,
    #[serde(default)]
    pub via: Option<Spanned<String>>,
    /// "blackhole" or "unreachable" instead of `via`.
    #[serde(default, rename = "type")]
    pub kind: Option<Spanned<String>>,
}

fn check_ifname(src: &Source<'_>, s: &Spanned<String>) -> Result<String, FileError> {
    let n = s.get_ref();
    if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']) {
        return Err(src.error_at(
            s.span(),
            format!("interface name {n:?} is not valid (1-15 characters, no '/' or spaces)"),
        ));
    }
    Ok(n.clone())
}

impl NodeConfig {
    pub fn load(path: &Path) -> Result<NodeConfig, FileError> {
        let text = fileerr::read(path)?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, FileError> {
        let src = Source { path, text };
        let raw: RawConfig = src.parse()?;

        let workers = *raw.workers.get_ref();
        if !(1..=64).contains(&workers) {
            return Err(src.error_at(
                raw.workers.span(),
                format!("workers = {workers}: use 1 to 64"),
            ));
        }
        let interface = check_ifname(&src, &raw.uplink.interface)?;
        let address = src.at(
            &raw.uplink.address,
            fileerr::parse_net(raw.uplink.address.get_ref(), "uplink address"),
        )?;
        let uplink = Uplink { interface, address };

        let mut blocks = Vec::new();
        for b in &raw.blocks {
            let net = src.at(b, fileerr::parse_net(b.get_ref(), "block"))?;
            if net.trunc() != net {
                return Err(src.error_at(b.span(), format!("block {net} has host bits set")));
            }
            blocks.push(net);
        }
        let mut pods: Vec<PodConfig> = Vec::new();
        for p in &raw.pods {
            let interface = check_ifname(&src, &p.interface)?;
            let address = src.at(
                &p.address,
                fileerr::parse_addr(p.address.get_ref(), "pod address"),
            )?;
            if let Some(o) = pods
                .iter()
                .find(|o| o.interface == interface || o.address == address)
            {
                return Err(src.error_at(
                    p.name.span(),
                    format!(
                        "pod {} shares its interface or address with pod {}",
                        p.name.get_ref(),
                        o.name
                    ),
                ));
            }
            if interface == uplink.interface {
                return Err(
                    src.error_at(p.interface.span(), "a pod cannot use the uplink interface")
                );
            }
            pods.push(PodConfig {
                name: p.name.get_ref().clone(),
                interface,
                address,
            });
        }
        let mut routes = Vec::new();
        for r in &raw.routes {
            let prefix = src.at(
                &r.prefix,
                fileerr::parse_net(r.prefix.get_ref(), "route prefix"),
            )?;
            if prefix.trunc() != prefix {
                return Err(src.error_at(
                    r.prefix.span(),
                    format!("route prefix {prefix} has host bits set"),
                ));
            }
            let action = match (&r.via, &r.kind) {
                (Some(v), None) => {
                    let gw = src.at(v, fileerr::parse_addr(v.get_ref(), "via"))?;
                    // Without a tunnel, a next hop must be reachable on the uplink's link.
                    if !address.contains(&gw) || gw == address.addr() {
                        return Err(src.error_at(
                            v.span(),
                            format!(
                                "next hop {gw} for {prefix} is not a neighbour on the uplink subnet {}; \
                                 only on-link next hops can be routed directly",
                                address.trunc()
                            ),
                        ));
                    }
                    StaticAction::Via(gw)
                }
                (None, Some(k)) => match k.get_ref().as_str() {
                    "blackhole" => StaticAction::Blackhole,
                    "unreachable" => StaticAction::Unreachable,
                    other => {
                        return Err(src.error_at(
                            k.span(),
                            format!("route type {other:?}: use \"blackhole\" or \"unreachable\""),
                        ))
                    }
                },
                _ => {
                    return Err(src.error_at(
                        r.prefix.span(),
                        format!("route {prefix} needs exactly one of `via` or `type`"),
                    ))
                }
            };
            routes.push(StaticRoute { prefix, action });
        }
        Ok(NodeConfig {
            name: raw.name.get_ref().clone(),
            dataplane: raw.dataplane,
            workers,
            pin_workers: raw.pin_workers,
            admin_socket: raw.admin_socket,
            uplink,
            blocks,
            pods,
            routes,
        })
    }

    /// The file text for this config (what `lab up` writes).
    pub fn to_toml(&self) -> String {
        let s = |v: String| Spanned::new(0..0, v);
        let raw = RawConfig {
            name: s(self.name.clone()),
            dataplane: self.dataplane,
            workers: Spanned::new(0..0, self.workers),
            pin_workers: self.pin_workers,
            admin_socket: self.admin_socket.clone(),
            uplink: RawUplink {
                interface: s(self.uplink.interface.clone()),
                address: s(self.uplink.address.to_string()),
            },
            blocks: self.blocks.iter().map(|b| s(b.to_string())).collect(),
            pods: self
                .pods
                .iter()
                .map(|p| RawPod {
                    name: s(p.name.clone()),
                    interface: s(p.interface.clone()),
                    address: s(p.address.to_string()),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| {
                    let (via, kind) = match r.action {
                        StaticAction::Via(g) => (Some(s(g.to_string())), None),
                        StaticAction::Blackhole => (None, Some(s("blackhole".into()))),
                        StaticAction::Unreachable => (None, Some(s("unreachable".into()))),
                    };
                    RawRoute {
                        prefix: s(r.prefix.to_string()),
                        via,
                        kind,
                    }
                })
                .collect(),
        };
        toml::to_string(&raw).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "node-a"
workers = 1
admin_socket = "/tmp/node-a.sock"
blocks = ["10.244.1.0/26"]

[uplink]
interface = "eth0"
address = "192.168.100.100/24"

[[pods]]
name = "pod-a1"
interface = "cali48dfb98be23"
address = "10.244.1.1"

[[routes]]
prefix = "10.244.2.0/26"
via = "192.168.100.101"
"#;

    fn parse(t: &str) -> Result<NodeConfig, FileError> {
        NodeConfig::parse(Path::new("n.toml"), t)
    }

    #[test]
    fn parses_and_round_trips() {
        let c = parse(GOOD).expect("good");
        assert_eq!(
            c.routes[0].action,
            StaticAction::Via(Ipv4Addr::new(192, 168, 100, 101))
        );
        let again = parse(&c.to_toml()).expect("round trip");
        assert_eq!(again.pods, c.pods);
        assert_eq!(again.routes, c.routes);
        assert_eq!(again.uplink.address, c.uplink.address);
    }

    #[test]
    fn off_link_next_hop_is_refused() {
        let e = parse(&GOOD.replace("192.168.100.101", "192.168.200.101"))
            .expect_err("off-link")
            .to_string();
        assert!(
            e.starts_with("n.toml:18:") && e.contains("not a neighbour"),
            "{e}"
        );
    }

    #[test]
    fn unknown_dataplane_names_line() {
        let e = parse(&GOOD.replace("workers = 1", "workers = 1\ndataplane = \"dpdk\""))
            .expect_err("bad")
            .to_string();
        assert!(e.starts_with("n.toml:4:") && e.contains("dpdk"), "{e}");
    }

    #[test]
    fn bad_values_are_explained() {
        for (from, to, needle) in [
            ("workers = 1", "workers = 0", "use 1 to 64"),
            (
                "\"cali48dfb98be23\"",
                "\"cali48dfb98be23xyz\"",
                "interface name",
            ),
            (
                "via = \"192.168.100.101\"",
                "type = \"nowhere\"",
                "blackhole",
            ),
            ("10.244.1.0/26\"]", "10.244.1.1/26\"]", "host bits"),
        ] {
            let e = parse(&GOOD.replace(from, to)).expect_err(to).to_string();
            assert!(e.contains(needle) && e.starts_with("n.toml:"), "{to}: {e}");
        }
    }
}
