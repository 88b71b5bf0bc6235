//! Calico's resources and where they live in etcd: `router apply | get | delete`.
//!
//! Keys follow Calico's etcdv3 layout, `/calico/resources/v3/projectcalico.org/<kind
//! plural>/<name>`, with the resource as JSON; the etcd revision of a key is the resource's
//! `resourceVersion`.

pub mod endpoints;
pub mod etcd;
pub mod ipam;
pub mod resources;
pub mod selector;

use anyhow::Context as _;
use etcd::{Etcd, Kv};
use resources::{Kind, Resource, Stored};

pub const PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

/// Where a resource lives: `<plural>/<name>`, or `<plural>/<namespace>/<name>` for a
/// namespaced kind (`default` where none is given).
pub fn key(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    format!("{PREFIX}{}", resources::path(kind, namespace, name))
}

/// Where the workload endpoints live. Nodes neither list nor watch them: there is one per
/// pod, and they say nothing that routes traffic.
pub fn endpoints_prefix() -> String {
    format!("{PREFIX}{}/", Kind::WorkloadEndpoint.plural())
}

/// A node given an address another node has already (Calico's node refuses to start on one):
/// `apply` says so, and a node that registers itself can tell it from etcd being away.
#[derive(Debug)]
pub struct AddressTaken {
    pub node: String,
    /// `ipv4Address` or `ipv6Address`.
    pub field: &'static str,
    pub other: String,
    pub address: std::net::IpAddr,
}

impl std::fmt::Display for AddressTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let AddressTaken { node, field, other, address } = self;
        write!(f, "nodes/{node}: spec.bgp.{field}: {address} is node {other}'s already")
    }
}

impl std::error::Error for AddressTaken {}

/// What [`Store::all_and`] read.
#[derive(Debug)]
pub struct Listing {
    pub resources: Vec<Resource>,
    /// The store's revision they were read at.
    pub revision: i64,
    /// What did not read as it should (resources or fields left out).
    pub notes: Vec<String>,
    /// The keys under each of the prefixes asked for, in their order.
    pub under: Vec<Vec<etcd::Kv>>,
}

/// What a write may find: `apply` creates or replaces, `create` (calicoctl's) only creates,
/// `replace` only replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Apply,
    Create,
    Replace,
}

impl Write {
    /// Whether `r` may be written, as it `exists` or not.
    fn check(self, r: &Resource, exists: bool) -> anyhow::Result<()> {
        match (self, exists) {
            (Write::Create, true) => anyhow::bail!("{} exists already (`apply` replaces it)", r.path()),
            (Write::Replace, false) => anyhow::bail!("{} does not exist (`apply` or `create` makes it)", r.path()),
            _ => Ok(()),
        }
    }
}

/// What `apply` did with one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Created,
    Configured,
    Unchanged,
}

/// The cluster's resources in etcd.
#[derive(Debug, Clone)]
pub struct Store {
    pub etcd: Etcd,
}

/// The object `o[k]`, made empty where there is none (or `null`).
fn member<'a>(
    o: &'a mut serde_json::Map<String, serde_json::Value>,
    k: &str,
) -> Option<&'a mut serde_json::Map<String, serde_json::Value>> {
    let m = o.entry(k).or_insert(serde_json::Value::Null);
    if m.is_null() {
        *m = serde_json::json!({});
    }
    m.as_object_mut()
}

fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = nodeapi::civil::from_days((secs / 86400) as i64);
    let t = secs % 86400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", t / 3600, t % 3600 / 60, t % 60)
}

fn new_uid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

/// Resources written per transaction.
pub const TXN_PART: usize = 100;

impl Store {
    pub fn new(etcd: Etcd) -> Store {
        Store { etcd }
    }

    /// Creates or replaces a resource. Its `uid` and `creationTimestamp` stay those of the
    /// first version; a write that raced another is read again and retried, never lost.
    pub fn apply(&self, r: &Resource) -> anyhow::Result<Applied> {
        Ok(self.apply_all(std::slice::from_ref(r))?.remove(0))
    }

    /// [`Store::apply`] of several resources in one etcd transaction: the nodes see all of
    /// them or none, never a cluster half changed (mesh off but the reflector not yet named).
    /// A resource given twice is written as its last version.
    /// etcd takes at most 128 operations per transaction (`--max-txn-ops`): a longer list
    /// goes in parts of [`TXN_PART`], each whole.
    pub fn apply_all(&self, rs: &[Resource]) -> anyhow::Result<Vec<Applied>> {
        self.write_all(rs, Write::Apply)
    }

    /// [`Store::apply_all`] that refuses, before writing anything, a resource that exists
    /// ([`Write::Create`]) or does not ([`Write::Replace`]); each transaction checks it again.
    pub fn write_all(&self, rs: &[Resource], how: Write) -> anyhow::Result<Vec<Applied>> {
        self.check_pools(rs)?;
        self.check_node_addresses(rs)?;
        if how != Write::Apply {
            for r in rs {
                how.check(r, self.etcd.get(&key(r.kind(), r.namespace(), r.name()))?.is_some())?;
            }
        }
        let mut out = Vec::with_capacity(rs.len());
        for part in rs.chunks(TXN_PART) {
            out.extend(self.apply_part(part, how)?);
        }
        Ok(out)
    }

    /// Calico's rules for IP pools among themselves, checked before anything is written: a
    /// new pool's CIDR overlaps no other pool's (an address would belong to two, and their blocks
    /// could overlap), and a stored pool keeps its CIDR and block size (its blocks were cut
    /// to them: a new pool, and the old one disabled, is how addresses move). Against the
    /// pools stored (those that read) and the others given.
    fn check_pools(&self, rs: &[Resource]) -> anyhow::Result<()> {
        use std::collections::BTreeMap;
        let pools = |rs: Vec<&Resource>| -> BTreeMap<String, (ipnet::IpNet, u8)> {
            rs.into_iter()
                .filter_map(|r| match r {
                    Resource::IpPool(p) => {
                        Some((p.metadata.name.clone(), (p.spec.cidr.parse().ok()?, p.spec.block_size_or_default())))
                    }
                    _ => None,
                })
                .collect()
        };
        let given = pools(rs.iter().collect());
        if given.is_empty() {
            return Ok(());
        }
        let read = self.stored(Kind::IpPool)?;
        let stored = pools(read.iter().collect());
        for (name, (net, bs)) in &given {
            let Some((was, was_bs)) = stored.get(name) else { continue };
            if net != was {
                anyhow::bail!("ippools/{name}: spec.cidr: a pool's CIDR cannot change (it is {was}): create a pool for {net} and disable this one");
            }
            if bs != was_bs {
                anyhow::bail!("ippools/{name}: spec.blockSize: a pool's block size cannot change (it is /{was_bs}): its blocks were cut to it");
            }
        }
        // Only a pool created is checked, as in Calico: one stored keeps its CIDR anyway.
        let created: Vec<(String, ipnet::IpNet)> =
            given.iter().filter(|(n, _)| !stored.contains_key(*n)).map(|(n, (net, _))| (n.clone(), *net)).collect();
        let mut after = stored;
        after.extend(given);
        for (name, net) in &created {
            let overlap = |o: &ipnet::IpNet| o.contains(&net.network()) || net.contains(&o.network());
            if let Some((other, (o, _))) = after.iter().find(|(n, (o, _))| *n != name && overlap(o)) {
                anyhow::bail!("ippools/{name}: spec.cidr: {net} overlaps the pool {other} ({o})");
            }
        }
        if created.is_empty() {
            return Ok(());
        }
        // Nor may it hold a node's address: pods would get the nodes' addresses, and the
        // routes to the nodes would become pod routes.
        let mut nodes = self.stored(Kind::Node)?;
        nodes.extend(rs.iter().filter(|r| r.kind() == Kind::Node).cloned());
        for (name, net) in &created {
            if let Some((node, addr)) = resources::node_in_pool(&nodes, *net) {
                anyhow::bail!(
                    "ippools/{name}: spec.cidr: {net} holds node {node}'s address {addr}: pods would get the nodes' addresses"
                );
            }
        }
        Ok(())
    }

    /// No two nodes at one address, as Calico's node refuses to start on an address another
    /// node has: their sessions and tunnels would go to whichever answers. Against the
    /// nodes stored under other names and the others given.
    fn check_node_addresses(&self, rs: &[Resource]) -> anyhow::Result<()> {
        let addresses = resources::node_addresses;
        let given: Vec<&Resource> = rs.iter().filter(|r| r.kind() == Kind::Node).collect();
        if given.iter().all(|g| addresses(g).is_empty()) {
            return Ok(());
        }
        // Every node's addresses once the given ones are written (the last version of each).
        let stored = self.stored(Kind::Node)?;
        let mut after: std::collections::BTreeMap<&str, Vec<(&'static str, std::net::IpAddr)>> =
            stored.iter().map(|n| (n.name(), addresses(n))).collect();
        for g in &given {
            after.insert(g.name(), addresses(g));
        }
        for g in &given {
            for (field, a) in &after[g.name()] {
                if let Some((other, _)) =
                    after.iter().find(|(n, addrs)| **n != g.name() && addrs.iter().any(|(_, b)| b == a))
                {
                    let (node, other, address) = (g.name().to_string(), other.to_string(), *a);
                    return Err(AddressTaken { node, field, other, address }.into());
                }
            }
        }
        Ok(())
    }

    /// The stored resources of a kind that read (leniently, as stored).
    fn stored(&self, kind: Kind) -> anyhow::Result<Vec<Resource>> {
        let (kvs, _) = self.etcd.list(&format!("{PREFIX}{}/", kind.plural()))?;
        Ok(kvs.iter().filter_map(|kv| Some(Resource::from_stored(kind, &kv.value, &kv.key).ok()?.resource)).collect())
    }

    fn apply_part(&self, rs: &[Resource], how: Write) -> anyhow::Result<Vec<Applied>> {
        let keys: Vec<String> = rs.iter().map(|r| key(r.kind(), r.namespace(), r.name())).collect();
        for _ in 0..10 {
            let mut outcomes = Vec::with_capacity(rs.len());
            let mut expect: Vec<(&str, i64)> = Vec::new();
            let mut puts: Vec<(&str, Vec<u8>)> = Vec::new();
            for (i, (r, k)) in rs.iter().zip(&keys).enumerate() {
                if keys[i + 1..].contains(k) {
                    outcomes.push(None);
                    continue;
                }
                let old = self.etcd.get(k)?;
                how.check(r, old.is_some())?;
                let (next, outcome) = Self::next_version(r, old.as_ref(), k)?;
                expect.push((k, old.map_or(0, |kv| kv.mod_revision)));
                if outcome != Applied::Unchanged {
                    puts.push((k, serde_json::to_vec(&next)?));
                }
                outcomes.push(Some(outcome));
            }
            let puts_ref: Vec<(&str, &[u8])> = puts.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            if puts.is_empty() || self.etcd.put_all_if(&expect, &puts_ref)? {
                // An earlier copy of a resource given twice went the way of its last one.
                let mut out: Vec<Applied> = Vec::with_capacity(rs.len());
                for i in (0..rs.len()).rev() {
                    let o = match outcomes[i] {
                        Some(o) => o,
                        None => {
                            let last = (i + 1..rs.len()).rev().find(|&j| keys[j] == keys[i]).unwrap_or(i);
                            outcomes[last].unwrap_or(Applied::Unchanged)
                        }
                    };
                    out.push(o);
                }
                out.reverse();
                return Ok(out);
            }
        }
        anyhow::bail!("{} kept changing under us; try again", keys.join(", "))
    }

    /// What `r` becomes when written over `old`, as JSON: uid and creation time kept, and
    /// the fields of `old` this router does not know ([`resources::StoredDoc::carry_into`]). Apply
    /// replaces what it knows of a resource whole, as calicoctl's does.
    fn next_version(r: &Resource, old: Option<&Kv>, k: &str) -> anyhow::Result<(serde_json::Value, Applied)> {
        let mut next = r.clone();
        let m = next.metadata_mut();
        m.resource_version = None;
        let Some(kv) = old else {
            m.uid = Some(new_uid());
            m.creation_timestamp = Some(now_rfc3339());
            return Ok((next.to_json(), Applied::Created));
        };
        // One lenient read serves both: the old version to compare with, and what of it to
        // carry over.
        let prev = Resource::read_stored_doc(r.kind(), &kv.value, k)?;
        let pm = prev.stored.resource.metadata();
        m.uid = pm.uid.clone();
        m.creation_timestamp = pm.creation_timestamp.clone();
        let mut same = prev.stored.resource.clone();
        same.metadata_mut().resource_version = None;
        let outcome = if same == next { Applied::Unchanged } else { Applied::Configured };
        let mut json = next.to_json();
        prev.carry_into(&mut json);
        Ok((json, outcome))
    }

    /// Every resource of a kind (or the one named), with `resourceVersion` set; fields this
    /// router does not know left out ([`Resource::from_stored`]).
    pub fn get(&self, kind: Kind, name: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        Ok(self.get_in(kind, None, name)?.into_iter().map(|s| s.resource).collect())
    }

    /// [`Store::get`] in a namespace (`None` lists every namespace, and finds a named
    /// resource in `default`), with the fields left out of each.
    pub fn get_in(&self, kind: Kind, namespace: Option<&str>, name: Option<&str>) -> anyhow::Result<Vec<Stored>> {
        let kvs = match (name, namespace) {
            (Some(n), ns) => self.etcd.get(&key(kind, ns, n))?.into_iter().collect(),
            (None, Some(ns)) if kind.is_namespaced() => self.etcd.list(&format!("{PREFIX}{}/{ns}/", kind.plural()))?.0,
            (None, _) => self.etcd.list(&format!("{PREFIX}{}/", kind.plural()))?.0,
        };
        kvs.into_iter()
            .map(|kv| {
                let mut r =
                    Resource::from_stored(kind, &kv.value, &kv.key).with_context(|| format!("reading {}", kv.key))?;
                r.resource.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
                Ok(r)
            })
            .collect()
    }

    /// Every resource of the kinds that describe the cluster ([`Kind::describes_cluster`]),
    /// and the revision they were read at. A resource that does not read (written by
    /// something else) is left out and named in the notes, as are fields left out of one.
    pub fn all(&self) -> anyhow::Result<(Vec<Resource>, i64, Vec<String>)> {
        let l = self.all_and(&[])?;
        Ok((l.resources, l.revision, l.notes))
    }

    /// [`Store::all`], and the keys under each of `prefixes`, read in the same transaction
    /// (one round trip, one revision).
    pub fn all_and(&self, prefixes: &[&str]) -> anyhow::Result<Listing> {
        // The endpoints sort after every kind of the cluster: one range up to them reads
        // the cluster at one revision without reading a key per pod.
        let ends: Vec<Vec<u8>> = prefixes.iter().map(|p| etcd::prefix_end(p)).collect();
        let end = endpoints_prefix();
        let mut ranges: Vec<(&[u8], &[u8])> = vec![(PREFIX.as_bytes(), end.as_bytes())];
        ranges.extend(prefixes.iter().zip(&ends).map(|(p, e)| (p.as_bytes(), e.as_slice())));
        let (mut lists, rev) = self.etcd.ranges(&ranges)?;
        let kvs = lists.remove(0);
        let mut out = Vec::new();
        let mut notes = Vec::new();
        for kv in kvs {
            let of = |k: &&Kind| k.describes_cluster() && kv.key.starts_with(&format!("{PREFIX}{}/", k.plural()));
            let Some(kind) = Kind::ALL.iter().find(of) else {
                continue;
            };
            match Resource::from_stored(*kind, &kv.value, &kv.key) {
                Ok(r) => {
                    notes.extend(r.note());
                    out.push(r.resource);
                }
                Err(e) => notes.push(format!("{e:#}")),
            }
        }
        Ok(Listing { resources: out, revision: rev, notes, under: lists })
    }

    /// Changes a stored resource in place, as JSON: `change` returns whether it changed
    /// anything. Unlike [`Store::apply`], every field is kept, those this router does not
    /// know included (a node putting its address right in a `Node` that Calico's agent
    /// wrote). A write that raced another is read again and retried. Whether it wrote.
    pub fn patch(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        change: impl Fn(&mut serde_json::Value) -> bool,
    ) -> anyhow::Result<bool> {
        let k = key(kind, namespace, name);
        for _ in 0..10 {
            let Some(kv) = self.etcd.get(&k)? else { anyhow::bail!("{k} does not exist") };
            let mut v: serde_json::Value = serde_json::from_slice(&kv.value).with_context(|| format!("reading {k}"))?;
            if !change(&mut v) {
                return Ok(false);
            }
            // What is written must still read as its kind, and a node keep to its own address.
            let r = Resource::from_stored(kind, &serde_json::to_vec(&v)?, &k)?.resource;
            self.check_node_addresses(std::slice::from_ref(&r))?;
            if self.etcd.put_all_if(&[(&k, kv.mod_revision)], &[(&k, &serde_json::to_vec(&v)?)])? {
                return Ok(true);
            }
        }
        anyhow::bail!("{k} kept changing under us; try again")
    }

    /// `calicoctl patch`: `change` edits the resource as `get -o json` shows it (a JSON merge
    /// patch, RFC 7386, or a JSON patch, RFC 6902), and what it gives is checked as `apply`
    /// checks a file and written as `apply` writes it (the fields this router does not know
    /// kept), unless the resource changed since it was read: then it is read and patched
    /// again. Its kind, name and namespace cannot change. Gives the resource as patched.
    pub fn patch_with(
        &self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        change: impl Fn(&mut serde_json::Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<(Applied, Resource)> {
        let k = key(kind, namespace, name);
        let what = resources::path(kind, namespace, name);
        for _ in 0..10 {
            let Some(kv) = self.etcd.get(&k)? else { anyhow::bail!("{what} does not exist") };
            let mut doc = Resource::from_stored(kind, &kv.value, &k)?.resource.to_json();
            change(&mut doc).with_context(|| what.clone())?;
            let text = serde_json::to_string(&doc)?;
            // The document and line are of the JSON made here, which nobody has seen: the
            // field and the message say it.
            let parsed = resources::parse(&text).map_err(|e| match e.field {
                Some(f) => anyhow::anyhow!("{what} as patched: {f}: {}", e.message),
                None => anyhow::anyhow!("{what} as patched: {}", e.message),
            })?;
            let r = match parsed.as_slice() {
                [r] => r.clone(),
                _ => anyhow::bail!("{what} as patched is not one resource"),
            };
            if (r.kind(), r.namespace(), r.name()) != (kind, namespace, name) {
                anyhow::bail!("{what}: a patch cannot change a resource's kind, name or namespace");
            }
            self.check_pools(std::slice::from_ref(&r))?;
            self.check_node_addresses(std::slice::from_ref(&r))?;
            let (next, outcome) = Self::next_version(&r, Some(&kv), &k)?;
            if outcome == Applied::Unchanged {
                return Ok((outcome, r));
            }
            if self.etcd.put_all_if(&[(&k, kv.mod_revision)], &[(&k, &serde_json::to_vec(&next)?)])? {
                return Ok((outcome, r));
            }
        }
        anyhow::bail!("{k} kept changing under us; try again")
    }

    /// Puts a `Node`'s `spec.bgp.ipv4Address` (and `ipv6Address`, when given) right in
    /// place ([`Store::patch`]); whether it wrote.
    pub fn set_node_addresses(&self, name: &str, v4: &str, v6: Option<&str>) -> anyhow::Result<bool> {
        let want = [("ipv4Address", Some(v4)), ("ipv6Address", v6)];
        self.patch(Kind::Node, None, name, |v| {
            let Some(bgp) = v.as_object_mut().and_then(|o| member(o, "spec")).and_then(|o| member(o, "bgp")) else {
                return false;
            };
            let mut changed = false;
            for (field, value) in want.iter().filter_map(|(f, v)| Some((*f, (*v)?))) {
                if bgp.get(field).and_then(|x| x.as_str()) != Some(value) {
                    bgp.insert(field.into(), value.into());
                    changed = true;
                }
            }
            changed
        })
    }

    /// Deletes a resource; whether it existed.
    pub fn delete(&self, kind: Kind, name: &str) -> anyhow::Result<bool> {
        self.delete_in(kind, None, name)
    }

    /// [`Store::delete`] in a namespace (`None`: `default`).
    pub fn delete_in(&self, kind: Kind, namespace: Option<&str>, name: &str) -> anyhow::Result<bool> {
        self.etcd.delete(&key(kind, namespace, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_sorts_before_the_endpoints_and_endpoints_live_in_namespaces() {
        let end = endpoints_prefix();
        for k in Kind::ALL.into_iter().filter(|k| k.describes_cluster()) {
            assert!(format!("{PREFIX}{}/", k.plural()) < end, "{k}");
        }
        assert!(!Kind::WorkloadEndpoint.describes_cluster());
        assert_eq!(key(Kind::IpPool, Some("x"), "p"), format!("{PREFIX}ippools/p"));
        assert_eq!(key(Kind::WorkloadEndpoint, None, "w"), format!("{PREFIX}workloadendpoints/default/w"));
        assert_eq!(key(Kind::WorkloadEndpoint, Some("shop"), "w"), format!("{PREFIX}workloadendpoints/shop/w"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 20, "{t}");
        assert!(t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T", "{t}");
        let u = super::new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
    }
}
