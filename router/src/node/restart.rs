//! A planned restart (`router lab restart NODE`, or the admin request behind it): the node
//! saves the routes it forwards on, closes its BGP sessions without a NOTIFICATION (peers
//! doing graceful restart keep its routes) and exits; the next `router node` for the same
//! config loads them, forwards on them at once, and tells its peers it restarted with its
//! forwarding state kept (RFC 4724 R and F bits) until they have all sent End-of-RIB.

use ipnet::{Ipv4Net, Ipv6Net};
use nodeapi::config::NodeConfig;
use serde::{Deserialize, Serialize};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Saved {
    /// Seconds since the UNIX epoch.
    pub saved_at: u64,
    pub learned: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Dual stack: the IPv6 routes, alike.
    #[serde(default)]
    pub learned6: Vec<(Ipv6Net, Ipv6Addr)>,
    pub cluster_hops: Vec<Ipv4Addr>,
}

/// Beside the admin socket: a directory only the node's user may enter.
fn path(cfg: &NodeConfig) -> PathBuf {
    cfg.admin_socket.with_extension("restart")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub(super) fn save(
    cfg: &NodeConfig,
    learned: &[(Ipv4Net, Ipv4Addr)],
    learned6: &[(Ipv6Net, Ipv6Addr)],
    hops: &[Ipv4Addr],
) -> anyhow::Result<()> {
    let p = path(cfg);
    let saved =
        Saved { saved_at: now(), learned: learned.to_vec(), learned6: learned6.to_vec(), cluster_hops: hops.to_vec() };
    let _ = std::fs::remove_file(&p);
    nodeapi::private::write(&p, serde_json::to_string(&saved)?.as_bytes())?;
    Ok(())
}

/// The saved state, if a planned restart left one younger than `max_age` (the restart time
/// peers were promised); it is removed either way, so it is used once.
pub(super) fn take(cfg: &NodeConfig, max_age: Duration) -> Option<Saved> {
    let p = path(cfg);
    let text = std::fs::read_to_string(&p).ok()?;
    let _ = std::fs::remove_file(&p);
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "ignoring an unreadable restart state");
            return None;
        }
    };
    let age = now().saturating_sub(saved.saved_at);
    if age > max_age.as_secs() {
        tracing::info!(age, "the saved restart state is older than the restart time; starting afresh");
        return None;
    }
    Some(saved)
}
