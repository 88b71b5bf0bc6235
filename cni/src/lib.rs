//! `router-cni`: a CNI plugin (specification 1.0.0, and GC and STATUS of 1.1.0) that
//! attaches a container to the node's pod network the way Calico's plugin does: a veth
//! whose host end is `cali` + 11 hex digits, `eth0` with a /32 from the node's block (or
//! borrowed from another node's), routes via 169.254.1.1, and the running `router node`
//! told over its admin socket, so it serves the pod at once.

pub mod install;
pub mod ipam;
pub mod plugin;

/// Calico's host-side interface name: `cali` + the first 11 hex digits of a SHA-1.
pub fn cali_name(identity: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(identity.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("cali{}", &hex[..11])
}
