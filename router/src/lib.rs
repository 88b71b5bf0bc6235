//! A Calico-style pod network as one userspace router.
//!
//! This crate holds the node daemon (config, BGP speaker, route table, admin socket), the
//! lab that builds a topology of network namespaces, and the CLI glue. The data plane is in
//! `forwarding`, the wire formats in `encap`, the BGP protocol in `bgp`, and every syscall
//! in `netsys`.

pub mod admin;
pub mod capture;
pub mod civil;
pub mod config;
pub mod fileerr;
pub mod ipcmd;
pub mod lab;
pub mod metrics;
pub mod node;
pub mod private;
pub mod probe;
pub mod routes;
pub mod speaker;
pub mod topology;
pub mod trace;
