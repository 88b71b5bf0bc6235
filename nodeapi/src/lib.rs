//! What the node daemon, the lab and the CLI share: the node's config file, the admin API
//! (request and answer types, and the client), and small OS helpers (private files, `ip`
//! commands, errors that name a file and line). It does no packet work and runs no thread.

pub mod admin;
pub mod civil;
pub mod config;
pub mod fileerr;
pub mod ipcmd;
pub mod out;
pub mod private;
pub mod secrets;
