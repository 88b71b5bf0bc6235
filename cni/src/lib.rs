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

/// The pod name an IPAM handle stands for: `pod:<name>` (a topology's pod) or
/// `<container id>/<ifname>` (a container).
pub fn handle_pod(handle: &str) -> String {
    match (handle.strip_prefix("pod:"), handle.split_once('/')) {
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
