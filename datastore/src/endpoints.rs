//! Workload endpoints: where each pod is, as Calico's CNI plugin records it in etcd. The
//! router's CNI plugin writes one per container it attaches and deletes it on DEL; a node
//! writes those of its configured pods when it registers; deleting a node deletes its
//! endpoints, as `calicoctl delete node` does. Nodes do not watch them (one per pod, and
//! nothing in them routes traffic); they are for `router get workloadendpoints`,
//! `calicoctl get workloadendpoints` and whatever else shares the datastore.

use crate::etcd::Kv;
use crate::resources::{self, Kind, Resource, Typed, WorkloadEndpointSpec};
use crate::{endpoints_prefix, key, Store};
use std::net::IpAddr;

/// Calico's gateway for pods, the address nobody owns that the node answers for.
const GATEWAY4: &str = "169.254.1.1";
const GATEWAY6: &str = "fe80::ecee:eeff:feee:eeee";

/// What names a pod's endpoint and where it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub node: String,
    /// `k8s` (a Kubernetes pod), `cni` (a container by id) or another orchestrator's name.
    pub orchestrator: String,
    pub namespace: String,
    /// Kubernetes' pod name (orchestrator `k8s`).
    pub pod: String,
    /// The workload's name (any orchestrator but `k8s` and `cni`, and informative there).
    pub workload: String,
    pub container_id: String,
    /// The interface in the pod (`eth0`).
    pub endpoint: String,
    /// The host end of the pod's veth (`cali…`).
    pub interface: String,
    pub mac: Option<String>,
    pub addresses: Vec<IpAddr>,
}

impl Endpoint {
    /// The resource, named as Calico names it; an error names the part that cannot be in
    /// a name.
    pub fn resource(&self) -> anyhow::Result<Resource> {
        let spec = WorkloadEndpointSpec {
            orchestrator: self.orchestrator.clone(),
            workload: self.workload.clone(),
            node: self.node.clone(),
            container_id: self.container_id.clone(),
            pod: self.pod.clone(),
            endpoint: self.endpoint.clone(),
            ip_networks: self
                .addresses
                .iter()
                .map(|a| match a {
                    IpAddr::V4(a) => format!("{a}/32"),
                    IpAddr::V6(a) => format!("{a}/128"),
                })
                .collect(),
            ipv4_gateway: if self.addresses.iter().any(IpAddr::is_ipv4) { GATEWAY4.into() } else { String::new() },
            ipv6_gateway: if self.addresses.iter().any(IpAddr::is_ipv6) { GATEWAY6.into() } else { String::new() },
            interface_name: self.interface.clone(),
            mac: self.mac.clone().unwrap_or_default(),
            ..Default::default()
        };
        let name = resources::endpoint_name(&spec).map_err(|(f, m)| anyhow::anyhow!("{f}: {m}"))?;
        let mut r = resources::typed(Kind::WorkloadEndpoint, &name, spec);
        r.metadata.namespace = Some(self.namespace.clone());
        // The labels Calico's plugin sets, which policy selectors use.
        r.metadata.labels.insert("projectcalico.org/namespace".into(), self.namespace.clone());
        r.metadata.labels.insert("projectcalico.org/orchestrator".into(), self.orchestrator.clone());
        let r = Resource::WorkloadEndpoint(r);
        resources::validate(&r).map_err(|(f, m)| anyhow::anyhow!("workload endpoint {name}: {f}: {m}"))?;
        Ok(r)
    }
}

/// An endpoint as stored, and the revision it was last written at. Read leniently
/// ([`Resource::from_stored`]): an endpoint another writer (Calico's own plugin, a newer
/// Calico) left with fields this router does not know must still count, or `router ipam
/// check` would call its pod's address leaked.
pub type Stored = (Typed<WorkloadEndpointSpec>, i64);

fn read(kv: &Kv) -> Option<Stored> {
    match Resource::from_stored(Kind::WorkloadEndpoint, &kv.value, &kv.key).ok()?.resource {
        Resource::WorkloadEndpoint(w) => Some((w, kv.mod_revision)),
        _ => None,
    }
}

impl Store {
    /// Every workload endpoint of every namespace whose `spec.node` is `node` (all of them
    /// with `None`). One that does not read even leniently is skipped.
    pub fn endpoints(&self, node: Option<&str>) -> anyhow::Result<Vec<Stored>> {
        let (kvs, _) = self.etcd.list(&endpoints_prefix())?;
        Ok(kvs.iter().filter_map(read).filter(|(w, _)| node.is_none_or(|n| w.spec.node == n)).collect())
    }

    /// The endpoint `namespace/name`, with its revision; None where there is none (or it
    /// does not read even leniently).
    pub fn endpoint(&self, namespace: &str, name: &str) -> anyhow::Result<Option<Stored>> {
        Ok(self.etcd.get(&key(Kind::WorkloadEndpoint, Some(namespace), name))?.as_ref().and_then(read))
    }

    /// Deletes an endpoint if it is still the one read at `mod_revision` (a pod attached
    /// again meanwhile keeps its new one); whether it was deleted.
    pub fn delete_endpoint(&self, (w, rev): &Stored) -> anyhow::Result<bool> {
        self.etcd.delete_if(&key(Kind::WorkloadEndpoint, w.metadata.namespace.as_deref(), &w.metadata.name), *rev)
    }

    /// Deletes every endpoint of `node`; how many there were.
    pub fn delete_endpoints_of(&self, node: &str) -> anyhow::Result<usize> {
        let mut n = 0;
        for s in self.endpoints(Some(node))? {
            n += usize::from(self.delete_endpoint(&s)?);
        }
        Ok(n)
    }

    /// The endpoints of `node` made by `orchestrator` become `wanted`: those written, the
    /// others of that node and orchestrator deleted.
    pub fn sync_endpoints(&self, node: &str, orchestrator: &str, wanted: &[Resource]) -> anyhow::Result<()> {
        self.apply_all(wanted)?;
        for s in self.endpoints(Some(node))? {
            let w = &s.0;
            let kept =
                wanted.iter().any(|r| r.name() == w.metadata.name && r.namespace() == w.metadata.namespace.as_deref());
            if w.spec.orchestrator == orchestrator && !kept {
                self.delete_endpoint(&s)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_is_named_and_filled_as_calicos_plugin_does() {
        let e = Endpoint {
            node: "node-a".into(),
            orchestrator: "k8s".into(),
            namespace: "shop".into(),
            pod: "web-7d4b9".into(),
            container_id: "0123abcd".into(),
            endpoint: "eth0".into(),
            interface: "cali0123456789a".into(),
            mac: Some("0a:58:0a:f4:01:05".into()),
            addresses: vec!["10.244.1.5".parse().expect("v4"), "fd00:10:244::5".parse().expect("v6")],
            ..Default::default()
        };
        let Resource::WorkloadEndpoint(w) = e.resource().expect("an endpoint") else { panic!("not an endpoint") };
        assert_eq!(w.metadata.name, "node--a-k8s-web--7d4b9-eth0");
        assert_eq!(w.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(w.spec.ip_networks, ["10.244.1.5/32", "fd00:10:244::5/128"]);
        assert_eq!((w.spec.ipv4_gateway.as_str(), w.spec.ipv6_gateway.as_str()), (GATEWAY4, GATEWAY6));
        assert_eq!(w.metadata.labels["projectcalico.org/namespace"], "shop");
        let cni = Endpoint { orchestrator: "cni".into(), pod: String::new(), ..e.clone() };
        assert_eq!(cni.resource().expect("cni").name(), "node--a-cni-0123abcd-eth0");
        let other = Endpoint { orchestrator: "router".into(), workload: "pod-a1".into(), ..e.clone() };
        assert_eq!(other.resource().expect("other").name(), "node--a-router-pod--a1-eth0");
        let bad = Endpoint { pod: "-web".into(), ..e };
        assert!(format!("{:#}", bad.resource().expect_err("a part that begins with '-'")).contains("spec.pod"));
    }
}
