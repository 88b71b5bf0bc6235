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
    Some(saved.sorted())
}

impl Saved {
    /// Sorted by prefix, so that a pod coming or going while the restart lasts finds a
    /// prefix's saved route by a binary search, not a scan of a million.
    fn sorted(mut self) -> Saved {
        self.learned.sort_unstable_by_key(|(p, _)| *p);
        self.learned.dedup_by_key(|(p, _)| *p);
        self.learned6.sort_unstable_by_key(|(p, _)| *p);
        self.learned6.dedup_by_key(|(p, _)| *p);
        self
    }

    /// The saved route for exactly `prefix` (the lists are sorted by [`take`]).
    pub fn v4_at(&self, prefix: Ipv4Net) -> Option<Ipv4Addr> {
        at(&self.learned, prefix)
    }

    pub fn v6_at(&self, prefix: Ipv6Net) -> Option<Ipv6Addr> {
        at(&self.learned6, prefix)
    }
}

fn at<N: Ord, A: Copy>(sorted: &[(N, A)], prefix: N) -> Option<A> {
    sorted.binary_search_by(|(p, _)| p.cmp(&prefix)).ok().map(|i| sorted[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_route_is_found_by_its_prefix_in_either_family() {
        let n4 = |s: &str| -> Ipv4Net { s.parse().expect("net") };
        let n6 = |s: &str| -> Ipv6Net { s.parse().expect("net") };
        let (a, b) = (Ipv4Addr::new(192, 168, 100, 1), Ipv4Addr::new(192, 168, 100, 2));
        let c: Ipv6Addr = "fd00::1".parse().expect("ip");
        let saved = Saved {
            saved_at: 0,
            learned: vec![(n4("10.0.0.0/8"), a), (n4("1.0.0.0/24"), b), (n4("10.0.0.0/16"), b)],
            learned6: vec![(n6("2001:db8::/32"), c), (n6("2001::/16"), c)],
            cluster_hops: vec![],
        }
        .sorted();
        assert_eq!(saved.v4_at(n4("10.0.0.0/8")), Some(a));
        assert_eq!(saved.v4_at(n4("10.0.0.0/16")), Some(b));
        assert_eq!(saved.v4_at(n4("1.0.0.0/24")), Some(b));
        assert_eq!(saved.v4_at(n4("10.0.0.0/24")), None);
        assert_eq!(saved.v6_at(n6("2001:db8::/32")), Some(c));
        assert_eq!(saved.v6_at(n6("2001:db8::/48")), None);
    }
}
