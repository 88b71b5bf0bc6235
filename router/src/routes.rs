//! The node's route table as the control plane sees it: every FIB entry with where it came
//! from, shown by `router routes` the way `route -n` shows the kernel's.

use crate::config::{NodeConfig, StaticAction};
use forwarding::{IfaceId, Interfaces, NextHop, Route};
use ipnet::Ipv4Net;
use serde::Serialize;
use std::net::Ipv4Addr;

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteSource {
    /// Derived from the node itself: its address, its subnet, its blocks, its pods.
    Local,
    /// From the config file.
    Static,
}

/// One row of `router routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RouteEntry {
    pub prefix: Ipv4Net,
    pub next_hop: Option<Ipv4Addr>,
    pub interface: Option<String>,
    /// `route -n` flags: U up, G via a gateway, H host route (/32).
    pub flags: String,
    pub source: RouteSource,
    /// What happens to matching packets: unicast, local (for this node), blackhole, unreachable.
    #[serde(rename = "type")]
    pub kind: String,
    /// Encapsulation toward the next hop: "none" (direct routing).
    pub encap: String,
}

/// A route table entry with its FIB action.
#[derive(Debug, Clone)]
pub struct TableRoute {
    pub entry: RouteEntry,
    pub fib: Route,
}

fn flags(prefix: &Ipv4Net, gateway: bool) -> String {
    let mut f = String::from("U");
    if gateway {
        f.push('G');
    }
    if prefix.prefix_len() == 32 {
        f.push('H');
    }
    f
}

fn make(
    prefix: Ipv4Net,
    next_hop: NextHop,
    source: RouteSource,
    ifaces: &Interfaces,
) -> TableRoute {
    let name = |i: IfaceId| ifaces.get(i).map(|f| f.name.clone());
    let (gw, iface, kind) = match next_hop {
        NextHop::Local { iface } => (None, name(iface), "unicast"),
        NextHop::Direct { iface, gateway } => (Some(gateway), name(iface), "unicast"),
        NextHop::Host => (None, None, "local"),
        NextHop::Blackhole => (None, None, "blackhole"),
        NextHop::Unreachable => (None, None, "unreachable"),
    };
    let up = !matches!(next_hop, NextHop::Blackhole | NextHop::Unreachable);
    let mut f = flags(&prefix, gw.is_some());
    if !up {
        // `route -n` marks reject routes with "!".
        f = format!("{f}!");
    }
    TableRoute {
        entry: RouteEntry {
            prefix,
            next_hop: gw,
            interface: iface,
            flags: f,
            source,
            kind: kind.to_string(),
            encap: "none".to_string(),
        },
        fib: Route { prefix, next_hop },
    }
}

/// Builds the node's routes from its config and its interfaces (uplink first).
pub fn build(cfg: &NodeConfig, ifaces: &Interfaces) -> Vec<TableRoute> {
    let mut out = Vec::new();
    let Some(uplink) = ifaces.by_name(&cfg.uplink.interface) else {
        return out;
    };
    let local = RouteSource::Local;
    let host = Ipv4Net::new(cfg.uplink.address.addr(), 32).unwrap_or_default();
    out.push(make(host, NextHop::Host, local, ifaces));
    out.push(make(
        cfg.uplink.address.trunc(),
        NextHop::Local { iface: uplink },
        local,
        ifaces,
    ));
    for b in &cfg.blocks {
        // Unused addresses of our own block go nowhere instead of bouncing to a default route.
        out.push(make(*b, NextHop::Blackhole, local, ifaces));
    }
    for p in &cfg.pods {
        if let (Some(i), Ok(net)) = (ifaces.by_name(&p.interface), Ipv4Net::new(p.address, 32)) {
            out.push(make(net, NextHop::Local { iface: i }, local, ifaces));
        }
    }
    for r in &cfg.routes {
        let nh = match r.action {
            StaticAction::Via(gateway) => NextHop::Direct {
                iface: uplink,
                gateway,
            },
            StaticAction::Blackhole => NextHop::Blackhole,
            StaticAction::Unreachable => NextHop::Unreachable,
        };
        out.push(make(r.prefix, nh, RouteSource::Static, ifaces));
    }
    out.sort_by(|a, b| {
        (a.entry.prefix.network(), a.entry.prefix.prefix_len())
            .cmp(&(b.entry.prefix.network(), b.entry.prefix.prefix_len()))
    });
    out
}

/// The `route -n`-like table.
pub fn render(entries: &[RouteEntry]) -> String {
    let mut s = format!(
        "{:<20} {:<17} {:<6} {:<16} {:<7} {:<12} {}\n",
        "Destination", "Gateway", "Flags", "Iface", "Source", "Type", "Encap"
    );
    for e in entries {
        s.push_str(&format!(
            "{:<20} {:<17} {:<6} {:<16} {:<7} {:<12} {}\n",
            e.prefix.to_string(),
            e.next_hop.map_or("0.0.0.0".to_string(), |g| g.to_string()),
            e.flags,
            e.interface.as_deref().unwrap_or("-"),
            match e.source {
                RouteSource::Local => "local",
                RouteSource::Static => "static",
            },
            e.kind,
            e.encap
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use forwarding::{IfaceRole, Interface};
    use std::path::Path;

    #[test]
    fn node_a_table_has_the_seed_routes() {
        let cfg = NodeConfig::parse(
            Path::new("n.toml"),
            r#"
name = "node-a"
admin_socket = "/tmp/x.sock"
blocks = ["10.244.1.0/26"]
[uplink]
interface = "eth0"
address = "192.168.100.100/24"
[[pods]]
name = "pod-a1"
interface = "calia1"
address = "10.244.1.1"
[[routes]]
prefix = "10.244.2.0/26"
via = "192.168.100.101"
"#,
        )
        .expect("config");
        let mac = encap::MacAddr([2, 0, 0, 0, 0, 1]);
        let ifaces = Interfaces::new(vec![
            Interface {
                name: "eth0".into(),
                ifindex: 2,
                mac,
                mtu: 1500,
                role: IfaceRole::Uplink {
                    addr: cfg.uplink.address,
                },
            },
            Interface {
                name: "calia1".into(),
                ifindex: 3,
                mac,
                mtu: 1500,
                role: IfaceRole::Pod {
                    addr: Ipv4Addr::new(10, 244, 1, 1),
                },
            },
        ]);
        let t = build(&cfg, &ifaces);
        let rows: Vec<(String, String, String)> = t
            .iter()
            .map(|r| {
                (
                    r.entry.prefix.to_string(),
                    r.entry.flags.clone(),
                    r.entry.kind.clone(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("10.244.1.0/26".into(), "U!".into(), "blackhole".into()),
                ("10.244.1.1/32".into(), "UH".into(), "unicast".into()),
                ("10.244.2.0/26".into(), "UG".into(), "unicast".into()),
                ("192.168.100.0/24".into(), "U".into(), "unicast".into()),
                ("192.168.100.100/32".into(), "UH".into(), "local".into()),
            ]
        );
        let json = serde_json::to_value(&t[2].entry).expect("json");
        assert_eq!(json["next_hop"], "192.168.100.101");
        assert_eq!(json["interface"], "eth0");
        assert_eq!(json["source"], "static");
        assert!(
            render(&t.iter().map(|r| r.entry.clone()).collect::<Vec<_>>())
                .contains("10.244.2.0/26")
        );
    }
}
