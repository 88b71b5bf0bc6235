//! A Calico-style pod network as one userspace router: the node daemon (BGP speaker, route
//! table, admin socket server, captures, traces) and the CLI's helpers.
//!
//! The data plane is in `forwarding`, the wire formats in `encap`, the BGP protocol in `bgp`,
//! every syscall in `netsys`, the config and admin API shared with the CLI in `nodeapi`, and
//! the lab of namespaces in `lab`.

pub mod calico;
pub mod capture;
pub mod cluster;
pub mod ipam;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod routes;
pub mod speaker;
pub mod trace;
