//! One peer's Adj-RIB-In, with the paths a restarting peer left behind (RFC 4724) apart from
//! the ones it has sent since: when its session drops, the whole map moves to `stale` at
//! once; what it sends again lands in `fresh` and leaves `stale`; End-of-RIB or the restart
//! timer flushes what is still in `stale`. Two maps instead of a flag on each path keep an
//! entry at a prefix and a pointer, 16 bytes instead of 24: 16 MiB less for a full table.

use super::{PathAttrs, PrefixMap};
use ipnet::IpNet;
use std::sync::Arc;

/// A prefix is in at most one of the two maps.
#[derive(Debug, Default)]
pub(super) struct AdjIn {
    fresh: PrefixMap<Arc<PathAttrs>>,
    stale: PrefixMap<Arc<PathAttrs>>,
}

impl AdjIn {
    /// The peer's path for `prefix`, and whether it is stale.
    #[inline]
    pub fn get(&self, prefix: &IpNet) -> Option<(&Arc<PathAttrs>, bool)> {
        if let Some(a) = self.fresh.get(prefix) {
            return Some((a, false));
        }
        if self.stale.is_empty() {
            return None;
        }
        self.stale.get(prefix).map(|a| (a, true))
    }

    pub fn contains(&self, prefix: &IpNet) -> bool {
        self.get(prefix).is_some()
    }

    pub fn len(&self) -> usize {
        self.fresh.len() + self.stale.len()
    }

    /// Sets the peer's path for `prefix` (no longer stale).
    pub fn insert(&mut self, prefix: IpNet, attrs: Arc<PathAttrs>) {
        self.fresh.insert(prefix, attrs);
        if !self.stale.is_empty() {
            self.stale.remove(&prefix);
        }
    }

    /// Removes the peer's path for `prefix`; whether there was one.
    pub fn remove(&mut self, prefix: &IpNet) -> bool {
        let fresh = self.fresh.remove(prefix).is_some();
        fresh || (!self.stale.is_empty() && self.stale.remove(prefix).is_some())
    }

    /// The session dropped and the peer may come back: every path is stale now.
    pub fn mark_stale(&mut self) {
        let fresh = std::mem::take(&mut self.fresh);
        self.stale.append(fresh);
    }

    pub fn stale_len(&self) -> usize {
        self.stale.len()
    }

    /// The stale prefixes that `keep` selects.
    pub fn stale_prefixes(&self, keep: impl Fn(&IpNet) -> bool) -> Vec<IpNet> {
        self.stale.keys().filter(|p| keep(p)).collect()
    }

    /// Every path: (prefix, attributes, stale).
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &Arc<PathAttrs>, bool)> {
        let fresh = self.fresh.iter().map(|(p, a)| (p, a, false));
        fresh.chain(self.stale.iter().map(|(p, a)| (p, a, true)))
    }

    pub fn keys(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.fresh.keys().chain(self.stale.keys())
    }

    pub fn keys6(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.fresh.keys6().chain(self.stale.keys6())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn stale_paths_move_back_when_sent_again() {
        let a = Arc::new(PathAttrs::local(Ipv4Addr::new(192, 168, 0, 1)));
        let mut m = AdjIn::default();
        m.insert(net("10.0.0.0/8"), a.clone());
        m.insert(net("10.1.0.0/16"), a.clone());
        assert_eq!((m.len(), m.get(&net("10.0.0.0/8")).map(|(_, s)| s)), (2, Some(false)));
        m.mark_stale();
        assert_eq!((m.len(), m.stale_len(), m.get(&net("10.0.0.0/8")).map(|(_, s)| s)), (2, 2, Some(true)));
        // Sent again: fresh, and counted once.
        m.insert(net("10.0.0.0/8"), a.clone());
        assert_eq!((m.len(), m.stale_len(), m.get(&net("10.0.0.0/8")).map(|(_, s)| s)), (2, 1, Some(false)));
        // A second drop before End-of-RIB: both maps merge into the stale one.
        m.insert(net("10.2.0.0/16"), a.clone());
        m.mark_stale();
        assert_eq!((m.len(), m.stale_len()), (3, 3));
        let mut stale = m.stale_prefixes(|p| p.prefix_len() == 16);
        stale.sort();
        assert_eq!(stale, [net("10.1.0.0/16"), net("10.2.0.0/16")]);
        assert!(m.remove(&net("10.1.0.0/16")) && !m.remove(&net("10.1.0.0/16")));
        assert!(m.contains(&net("10.2.0.0/16")) && !m.contains(&net("10.1.0.0/16")));
        let mut all: Vec<(IpNet, bool)> = m.iter().map(|(p, _, s)| (p, s)).collect();
        all.sort();
        assert_eq!(all, [(net("10.0.0.0/8"), true), (net("10.2.0.0/16"), true)]);
        assert_eq!(m.keys().count(), 2);
        assert!(m.remove(&net("10.0.0.0/8")) && m.remove(&net("10.2.0.0/16")) && m.len() == 0);
    }
}
