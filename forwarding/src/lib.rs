//! The data plane of one node.
//!
//! Workers pinned to cores read frames from AF_PACKET sockets, run them through [`pipeline`]
//! (a pure function of frame, FIB snapshot and neighbour snapshot) and transmit the result.
//! The FIB and the neighbour table are published as immutable snapshots: readers never block.
//! What a worker cannot finish alone (an unresolved next hop, a learned neighbour) goes over a
//! channel to the slow-path thread that owns ARP resolution.

pub mod counters;
pub mod dataplane;
pub mod fib;
pub mod fuzzing;
pub mod iface;
pub mod kfilter;
pub mod lpm;
pub mod nat;
pub mod neigh;
pub mod pipeline;
pub mod snapshot;
pub mod tap;
pub mod trace;
mod worker;
pub use worker::IDLE_WAIT;

pub use counters::{Counters, DropReason};
pub use fib::{Fib, FibHandle, NextHop, NextHop6, Route, Route6};
pub use iface::{IfaceId, IfaceRole, Interface, Interfaces};
