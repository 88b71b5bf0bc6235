//! A map keyed by prefix that keeps IPv4 and IPv6 prefixes apart. One map keyed by `IpNet`
//! (18 bytes, an enum) pads every entry to 40 or 48 bytes; an IPv4 key alone is 5 bytes, and
//! a full table is a million IPv4 entries in each of the RIBs: a third less memory.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// aHash instead of std's SipHash: a full table is a million lookups and inserts in each
/// map, and SipHash was a tenth of the node's time loading one. aHash is as resistant to
/// crafted keys and several times faster on these small ones.
type Map<K, V> = HashMap<K, V, ahash::RandomState>;

#[derive(Debug, Clone)]
pub struct PrefixMap<V> {
    v4: Map<Ipv4Net, V>,
    v6: Map<Ipv6Net, V>,
}

impl<V> Default for PrefixMap<V> {
    fn default() -> Self {
        PrefixMap { v4: Map::default(), v6: Map::default() }
    }
}

impl<V> PrefixMap<V> {
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    pub fn get(&self, k: &IpNet) -> Option<&V> {
        match k {
            IpNet::V4(k) => self.v4.get(k),
            IpNet::V6(k) => self.v6.get(k),
        }
    }

    pub fn contains_key(&self, k: &IpNet) -> bool {
        self.get(k).is_some()
    }

    pub fn insert(&mut self, k: IpNet, v: V) -> Option<V> {
        match k {
            IpNet::V4(k) => self.v4.insert(k, v),
            IpNet::V6(k) => self.v6.insert(k, v),
        }
    }

    pub fn remove(&mut self, k: &IpNet) -> Option<V> {
        match k {
            IpNet::V4(k) => self.v4.remove(k),
            IpNet::V6(k) => self.v6.remove(k),
        }
    }

    /// Sets the entry for `k` to a copy of `v` (removes it for `None`) with one probe, and
    /// copies only if it changes; false if nothing changed.
    pub fn set(&mut self, k: IpNet, v: Option<&V>) -> bool
    where
        V: PartialEq + Clone,
    {
        match k {
            IpNet::V4(k) => set(&mut self.v4, k, v),
            IpNet::V6(k) => set(&mut self.v6, k, v),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (IpNet, &V)> {
        let v4 = self.v4.iter().map(|(k, v)| (IpNet::V4(*k), v));
        v4.chain(self.v6.iter().map(|(k, v)| (IpNet::V6(*k), v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The IPv6 keys alone: a million IPv4 ones beside them cost nothing.
    pub fn keys6(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.v6.keys().map(|k| IpNet::V6(*k))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.v4.values_mut().chain(self.v6.values_mut())
    }

    pub fn into_keys(self) -> impl Iterator<Item = IpNet> {
        self.v4.into_keys().map(IpNet::V4).chain(self.v6.into_keys().map(IpNet::V6))
    }

    /// Moves every entry of `other` into this map (an entry of `other` wins).
    pub fn append(&mut self, other: PrefixMap<V>) {
        if self.is_empty() {
            *self = other;
            return;
        }
        self.v4.extend(other.v4);
        self.v6.extend(other.v6);
    }
}

fn set<K: std::hash::Hash + Eq, V: PartialEq + Clone>(m: &mut Map<K, V>, k: K, v: Option<&V>) -> bool {
    match (m.entry(k), v) {
        (Entry::Occupied(o), Some(v)) if o.get() == v => false,
        (Entry::Occupied(mut o), Some(v)) => {
            o.insert(v.clone());
            true
        }
        (Entry::Occupied(o), None) => {
            o.remove();
            true
        }
        (Entry::Vacant(e), Some(v)) => {
            e.insert(v.clone());
            true
        }
        (Entry::Vacant(_), None) => false,
    }
}

impl<V> std::ops::Index<&IpNet> for PrefixMap<V> {
    type Output = V;

    /// Panics if `k` is missing, as a map's index does.
    fn index(&self, k: &IpNet) -> &V {
        self.get(k).expect("no entry for this prefix")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("prefix")
    }

    #[test]
    fn both_families_side_by_side() {
        let mut m = PrefixMap::default();
        assert!(m.is_empty());
        assert_eq!(m.insert(net("10.0.0.0/8"), 1), None);
        assert_eq!(m.insert(net("2001:db8::/32"), 2), None);
        assert_eq!(m.insert(net("10.0.0.0/8"), 3), Some(1));
        assert_eq!((m.len(), m[&net("10.0.0.0/8")], m.get(&net("2001:db8::/32"))), (2, 3, Some(&2)));
        assert!(!m.contains_key(&net("10.0.0.0/9")));
        let mut keys: Vec<IpNet> = m.keys().collect();
        keys.sort();
        assert_eq!(keys, [net("10.0.0.0/8"), net("2001:db8::/32")]);
        m.values_mut().for_each(|v| *v += 10);
        assert_eq!(m.iter().map(|(_, v)| *v).sum::<i32>(), 25);
        // set: one probe, and whether anything changed.
        assert!(!m.set(net("10.0.0.0/8"), Some(&13)));
        assert!(m.set(net("10.0.0.0/8"), Some(&4)));
        assert!(m.set(net("2001:db8::/32"), None));
        assert!(!m.set(net("2001:db8::/32"), None));
        assert!(m.set(net("2001:db8::/48"), Some(&5)));
        assert_eq!(m.remove(&net("2001:db8::/48")), Some(5));
        let mut other = PrefixMap::default();
        other.insert(net("10.0.0.0/8"), 7);
        other.insert(net("2001:db8::/32"), 8);
        m.append(other);
        assert_eq!((m.len(), m[&net("10.0.0.0/8")]), (2, 7));
        let mut keys: Vec<IpNet> = m.into_keys().collect();
        keys.sort();
        assert_eq!(keys, [net("10.0.0.0/8"), net("2001:db8::/32")]);
    }
}
