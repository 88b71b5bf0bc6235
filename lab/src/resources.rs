//! A topology file as Calico's resources (`router lab resources`): what to `router apply`
//! to describe the same cluster in a datastore.

use crate::topology::Topology;
use datastore::resources::{self as r, Kind, Resource};
use nodeapi::config::IpipMode;

/// The label Calico's documentation gives route reflectors.
const RR_LABEL: &str = "route-reflector";

/// A list of service ranges as Calico writes it; none: no field.
fn services(list: &[ipnet::IpNet]) -> Option<Vec<r::ServiceIp>> {
    (!list.is_empty()).then(|| list.iter().map(|n| r::ServiceIp { cidr: n.to_string() }).collect())
}

fn community(c: u32) -> String {
    format!("{}:{}", c >> 16, c & 0xffff)
}

/// The secret that holds the lab's BGP passwords, a key per `BGPPeer` (the name Calico's
/// documentation uses).
pub const SECRET: &str = "bgp-secrets";

/// The key of [`SECRET`] that holds the mesh's password (`nodeMeshPassword`).
pub const MESH_KEY: &str = "node-to-node-mesh";

/// A topology as Calico's resources.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    pub resources: Vec<Resource>,
    /// What a topology holds that resources cannot (prefix limits, which Calico does not
    /// have), for a note.
    pub left_out: Vec<String>,
    /// The TCP-MD5 passwords, which Calico keeps in a secret: (key of [`SECRET`], password).
    pub secrets: Vec<(String, String)>,
}

/// The resources of topology `t`.
pub fn from_topology(t: &Topology) -> Resources {
    let mut out = Vec::new();
    let mut left_out = Vec::new();
    let mut secrets = Vec::new();
    let calico = |m: IpipMode| match m {
        IpipMode::Always => r::EncapMode::Always,
        IpipMode::CrossSubnet => r::EncapMode::CrossSubnet,
        IpipMode::Never => r::EncapMode::Never,
    };
    out.push(Resource::IpPool(r::typed(
        Kind::IpPool,
        "default-ipv4-ippool",
        r::IpPoolSpec {
            cidr: t.pool.to_string(),
            block_size: Some(t.block_size),
            ipip_mode: Some(calico(t.ipip_mode)),
            vxlan_mode: Some(calico(t.vxlan_mode)),
            nat_outgoing: Some(t.nat_outgoing),
            disable_bgp_export: t.disable_bgp_export.then_some(true),
            node_selector: Some("all()".into()),
            ..Default::default()
        },
    )));
    if let Some(pool6) = t.pool_v6 {
        // IPv6 is never tunnelled in IPIP (Calico refuses it), and the lab routes it natively.
        out.push(Resource::IpPool(r::typed(
            Kind::IpPool,
            "default-ipv6-ippool",
            r::IpPoolSpec {
                cidr: pool6.to_string(),
                block_size: Some(t.block_size_v6),
                ipip_mode: Some(r::EncapMode::Never),
                vxlan_mode: Some(r::EncapMode::Never),
                nat_outgoing: Some(t.nat_outgoing_v6),
                node_selector: Some("all()".into()),
                ..Default::default()
            },
        )));
    }
    let ads: Vec<r::PrefixAdvertisement> = t
        .prefix_advertisements
        .iter()
        .map(|a| r::PrefixAdvertisement {
            cidr: a.cidr.to_string(),
            communities: a.communities.iter().map(|c| community(*c)).collect(),
        })
        .collect();
    // The mesh's key, in the same secret as the peers' (no BGPPeer is named so: theirs
    // start with `peer-` or a node's name and `-peer-`).
    let node_mesh_password = t.node_mesh_password.as_ref().map(|pw| {
        secrets.push((MESH_KEY.to_string(), pw.clone()));
        r::BgpPassword { secret_key_ref: r::SecretKeyRef { name: SECRET.into(), key: MESH_KEY.into(), optional: None } }
    });
    out.push(Resource::BgpConfiguration(r::typed(
        Kind::BgpConfiguration,
        "default",
        r::BgpConfigurationSpec {
            as_number: Some(t.as_number),
            node_mesh_password,
            node_to_node_mesh_enabled: Some(t.node_to_node_mesh),
            prefix_advertisements: (!ads.is_empty()).then_some(ads),
            node_mesh_max_restart_time: t.node_mesh_max_restart_time.map(|s| format!("{s}s")),
            service_cluster_ips: services(&t.service_cluster_ips),
            service_external_ips: services(&t.service_external_ips),
            service_load_balancer_ips: services(&t.service_load_balancer_ips),
            ..Default::default()
        },
    )));
    for n in &t.nodes {
        let bgp = r::NodeBgp {
            ipv4_address: Some(n.address.to_string()),
            ipv6_address: n.v6.map(|(a, _)| a.to_string()),
            route_reflector_cluster_id: n.route_reflector_cluster_id.map(|c| c.to_string()),
            as_number: n.as_number,
            ..Default::default()
        };
        let mut node = r::typed(Kind::Node, &n.name, r::NodeSpec { bgp: Some(bgp), ..Default::default() });
        if n.route_reflector_cluster_id.is_some() {
            node.metadata.labels.insert(RR_LABEL.into(), "true".into());
        }
        out.push(Resource::Node(node));
    }
    if t.nodes.iter().any(|n| n.route_reflector_cluster_id.is_some()) {
        // What Calico needs besides the cluster IDs for the reflectors' sessions (its
        // documentation's setup); our nodes make them from the cluster IDs alone, and do not
        // double them.
        out.push(Resource::BgpPeer(r::typed(
            Kind::BgpPeer,
            "peer-with-route-reflectors",
            r::BgpPeerSpec {
                node_selector: Some("all()".into()),
                peer_selector: Some(format!("{RR_LABEL} == 'true'")),
                ..Default::default()
            },
        )));
    }
    for p in &t.bgp_peers {
        let mut name = format!("peer-{}", p.peer_ip.to_string().replace(['.', ':'], "-"));
        if let Some(n) = &p.node {
            name = format!("{n}-{name}");
        }
        let password = p.password.as_ref().map(|pw| {
            secrets.push((name.clone(), pw.clone()));
            r::BgpPassword {
                secret_key_ref: r::SecretKeyRef { name: SECRET.into(), key: name.clone(), optional: None },
            }
        });
        if p.max_prefixes.is_some() {
            left_out.push(format!("bgppeers/{name}: max_prefixes (not a Calico field)"));
        }
        out.push(Resource::BgpPeer(r::typed(
            Kind::BgpPeer,
            &name,
            r::BgpPeerSpec {
                node: p.node.clone(),
                peer_ip: Some(p.peer_ip.to_string()),
                as_number: Some(p.as_number),
                password,
                ttl_security: p.ttl_security,
                filters: (!p.filters.is_empty()).then(|| p.filters.clone()),
                max_restart_time: p.max_restart_time.map(|s| format!("{s}s")),
                keepalive_time: p.keepalive_time.map(|s| format!("{s}s")),
                num_allowed_local_as_numbers: (p.num_allowed_local_as_numbers > 0)
                    .then_some(u32::from(p.num_allowed_local_as_numbers)),
                keep_original_next_hop: p.keep_original_next_hop.then_some(true),
                reachable_by: p.reachable_by.map(|g| g.to_string()),
                ..Default::default()
            },
        )));
    }
    for f in &t.bgp_filters {
        // Calico keeps each family's rules in lists of their own.
        let rules = |rs: &[bgp::policy::Rule], v4: bool| -> Vec<r::FilterRule> {
            rs.iter()
                .filter(|x| x.cidr.addr().is_ipv4() == v4)
                .map(|x| r::FilterRule {
                    action: match x.action {
                        bgp::policy::Action::Accept => r::FilterAction::Accept,
                        bgp::policy::Action::Reject => r::FilterAction::Reject,
                    },
                    match_operator: Some(match x.operator {
                        bgp::policy::MatchOperator::Equal => r::MatchOperator::Equal,
                        bgp::policy::MatchOperator::NotEqual => r::MatchOperator::NotEqual,
                        bgp::policy::MatchOperator::In => r::MatchOperator::In,
                        bgp::policy::MatchOperator::NotIn => r::MatchOperator::NotIn,
                    }),
                    cidr: Some(x.cidr.to_string()),
                    prefix_length: None,
                    source: x.source.map(|bgp::policy::Source::RemotePeers| r::RuleSource::RemotePeers),
                    interface: None,
                })
                .collect()
        };
        let spec = r::BgpFilterSpec {
            export_v4: rules(&f.export, true),
            import_v4: rules(&f.import, true),
            export_v6: rules(&f.export, false),
            import_v6: rules(&f.import, false),
        };
        out.push(Resource::BgpFilter(r::typed(Kind::BgpFilter, &f.name, spec)));
    }
    Resources { resources: out, left_out, secrets }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_seed_topologies_print_as_resources_that_read_back() {
        for (name, text) in [("seed", crate::topology::SEED), ("seed-rr", crate::topology::SEED_RR)] {
            let t = Topology::parse(Path::new(name), text).expect("topology");
            let rs = from_topology(&t).resources;
            let yaml = datastore::resources::to_yaml(&rs);
            let back = datastore::resources::parse(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
            assert_eq!(back, rs, "{name}");
            // What the lab writes, the router acts on.
            for r in &rs {
                assert_eq!(datastore::resources::not_followed(r), Vec::<&str>::new(), "{name}: {r:?}");
            }
            assert_eq!(rs.iter().filter(|r| r.kind() == Kind::Node).count(), 3);
        }
        // Dual stack: the IPv6 pool (never IPIP) and every node's IPv6 address.
        let dual = Topology::parse_with(Path::new("dual"), crate::topology::SEED, true).expect("dual");
        let yaml = datastore::resources::to_yaml(&from_topology(&dual).resources);
        assert!(yaml.contains("name: default-ipv6-ippool") && yaml.contains("cidr: fd00:10:244::/48"), "{yaml}");
        assert!(yaml.contains("blockSize: 122") && yaml.contains("ipv6Address: fd00:192:168:100::100/64"), "{yaml}");
        let back = datastore::resources::parse(&yaml).unwrap_or_else(|e| panic!("dual: {e}\n{yaml}"));
        assert_eq!(back, from_topology(&dual).resources);
        // A peer's timers and allowed local AS, and the mesh's restart time, as Calico's fields.
        let timed = crate::topology::SEED
            .replace(
                "[cluster]\n",
                "[cluster]\nnode_mesh_max_restart_time = 90\ndisable_bgp_export = true\n\
                 service_cluster_ips = [\"10.96.0.0/12\"]\nservice_load_balancer_ips = [\"198.51.100.16/28\"]\n",
            )
            .replacen("name = \"node-c\"\n", "name = \"node-c\"\nas_number = 64513\n", 1)
            + "\n[[bgp_peers]]\npeer_ip = \"192.168.100.1\"\nas_number = 65001\nmax_restart_time = 45\n\
               keepalive_time = 3\nnum_allowed_local_as_numbers = 1\nkeep_original_next_hop = true\n\
               node = \"node-a\"\nreachable_by = \"192.168.100.1\"\npassword = \"s3cret\"\n";
        let t = Topology::parse(Path::new("timed"), &timed).expect("timed");
        let all = from_topology(&t);
        // The password goes in the secret, and the resource names it (never holds it).
        assert_eq!(all.secrets, vec![("node-a-peer-192-168-100-1".to_string(), "s3cret".to_string())]);
        let rs = all.resources;
        let yaml = datastore::resources::to_yaml(&rs);
        for field in [
            "nodeMeshMaxRestartTime: 90s",
            "maxRestartTime: 45s",
            "keepaliveTime: 3s",
            "numAllowedLocalASNumbers: 1",
            "asNumber: 64513",
            "keepOriginalNextHop: true",
            "reachableBy: 192.168.100.1",
            "name: bgp-secrets",
            "disableBGPExport: true",
            "serviceClusterIPs:\n  - cidr: 10.96.0.0/12",
            "serviceLoadBalancerIPs:\n  - cidr: 198.51.100.16/28",
            "key: node-a-peer-192-168-100-1",
        ] {
            assert!(yaml.contains(field), "{field}:\n{yaml}");
        }
        assert!(!yaml.contains("s3cret"), "{yaml}");
        assert_eq!(datastore::resources::parse(&yaml).expect("reads back"), rs);
        assert!(rs.iter().all(|r| datastore::resources::not_followed(r).is_empty()));
        let rr = Topology::parse(Path::new("rr"), crate::topology::SEED_RR).expect("rr");
        let yaml = datastore::resources::to_yaml(&from_topology(&rr).resources);
        assert!(yaml.contains("nodeToNodeMeshEnabled: false") && yaml.contains("routeReflectorClusterID"), "{yaml}");
        assert!(
            yaml.contains("peerSelector: route-reflector == 'true'") && yaml.contains("route-reflector: 'true'"),
            "{yaml}"
        );
    }
}
