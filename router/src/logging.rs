//! The process's log filter, and changing it while the node runs: a datastore's
//! BGPConfiguration `logSeverityScreen` sets the node's level live, unless `RUST_LOG` or the
//! node's config chose one (those are the operator's on this host, and win).

pub use datastore::resources::calico_level;
use std::sync::OnceLock;
use tracing_subscriber::{prelude::*, reload, EnvFilter, Registry};

static LIVE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the subscriber with `filter`; `settable`: the datastore may change it later.
pub fn init(filter: EnvFilter, settable: bool) {
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        // Colours only on a terminal: a node's log is a file (`lab up` writes one per node).
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(stderr_is_terminal()))
        .init();
    if settable {
        let _ = LIVE.set(handle);
    }
}

fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Sets the level (`info`, `debug`, …) where the datastore may; whether it did.
pub fn set_level(level: &str) -> bool {
    let Some(handle) = LIVE.get() else { return false };
    match EnvFilter::try_new(level) {
        Ok(f) => handle.reload(f).is_ok(),
        Err(_) => false,
    }
}
