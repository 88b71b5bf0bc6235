//! BGP-4 for the node: the wire codec, the session state machine, the RIBs and the session
//! driver. The codec, the FSM and the RIBs are sans-IO: they open no socket and read no
//! clock; time comes in as an argument and actions come out as values. Only `session` does
//! I/O.

pub mod fsm;
pub mod rib;
pub mod session;
pub mod wire;
