//! `router-cni`: a CNI plugin (specification 1.0.0, and GC and STATUS of 1.1.0) that
//! attaches a container to the node's pod network the way Calico's plugin does: a veth
//! whose host end is `cali` + 11 hex digits, `eth0` with a /32 from the node's block (or
//! borrowed from another node's), routes via 169.254.1.1, and the running `router node`
//! told over its admin socket, so it serves the pod at once.

pub mod install;
pub mod ipam;
pub mod plugin;

/// Calico's host-side interface name: `cali` + the first 11 hex digits of a SHA-1.
/// A container's pod name at its node: its short id (as `podman ps` shows it), with the
/// interface where that is not `eth0`.
pub fn pod_name(container: &str, ifname: &str) -> String {
    let short: String = container.chars().take(12).collect();
    if ifname == "eth0" {
        short
    } else {
        format!("{short}-{ifname}")
    }
}

/// A container's IPAM handle: `<container id>@<ifname>`. Calico's handle keys take no '/';
/// a container id has no '@' and an interface name no ':', so this splits back exactly, and
/// never reads as a topology pod's `pod:<name>`.
pub fn container_handle(container: &str, ifname: &str) -> String {
    format!("{container}@{ifname}")
}

/// The container and interface a handle stands for; None for a topology pod's (or one
/// another IPAM user wrote).
pub fn handle_container(handle: &str) -> Option<(&str, &str)> {
    if handle.contains(':') {
        return None;
    }
    handle.split_once('@')
}

/// A topology pod's IPAM handle: `pod:<name>`.
pub fn pod_handle(name: &str) -> String {
    format!("{POD_HANDLE}{name}")
}

const POD_HANDLE: &str = "pod:";

/// Whether a handle is a topology pod's.
pub fn is_pod_handle(handle: &str) -> bool {
    handle.starts_with(POD_HANDLE)
}

/// The pod name an IPAM handle stands for: `pod:<name>` (a topology's pod) or
/// `<container id>@<ifname>` (a container).
pub fn handle_pod(handle: &str) -> String {
    match (handle.strip_prefix(POD_HANDLE), handle_container(handle)) {
        (Some(name), _) => name.to_string(),
        (None, Some((container, ifname))) => pod_name(container, ifname),
        (None, None) => handle.to_string(),
    }
}

pub fn cali_name(identity: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(identity.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_handles_split_back_and_no_other_reads_as_one() {
        let h = container_handle("5f1c.d-e_f", "net1@x");
        assert_eq!(h, "5f1c.d-e_f@net1@x");
        assert_eq!(handle_container(&h), Some(("5f1c.d-e_f", "net1@x")), "an interface name may hold '@'");
        assert_eq!(handle_pod(&h), "5f1c.d-e_f-net1@x");
        assert_eq!(handle_pod(&container_handle("e7438acae6ed9f", "eth0")), "e7438acae6ed");
        for other in ["pod:a1", "pod:x@y", "k8s-pod-network.5f1c", "ipip-tunnel-addr-node-a"] {
            assert_eq!(handle_container(other), None, "{other}");
        }
        assert_eq!(handle_pod("pod:a1"), "a1");
    }
}
