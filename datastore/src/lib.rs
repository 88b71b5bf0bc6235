//! Calico's resources and where they live in etcd: `router apply | get | delete`.
//!
//! Keys follow Calico's etcdv3 layout, `/calico/resources/v3/projectcalico.org/<kind
//! plural>/<name>`, with the resource as JSON; the etcd revision of a key is the resource's
//! `resourceVersion`.

pub mod etcd;
pub mod ipam;
pub mod resources;

use anyhow::Context as _;
use etcd::Etcd;
use resources::{Kind, Resource};

pub const PREFIX: &str = "/calico/resources/v3/projectcalico.org/";

pub fn key(kind: Kind, name: &str) -> String {
    format!("{PREFIX}{}/{name}", kind.plural())
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

impl Store {
    pub fn new(etcd: Etcd) -> Store {
        Store { etcd }
    }

    /// Creates or replaces a resource. Its `uid` and `creationTimestamp` stay those of the
    /// first version; a write that raced another is read again and retried, never lost.
    pub fn apply(&self, r: &Resource) -> anyhow::Result<Applied> {
        let k = key(r.kind(), r.name());
        for _ in 0..10 {
            let old = self.etcd.get(&k)?;
            let mut next = r.clone();
            let m = next.metadata_mut();
            m.resource_version = None;
            let outcome = match &old {
                Some(kv) => {
                    let prev = Resource::from_json(r.kind(), &kv.value, &k)?;
                    let pm = prev.metadata();
                    m.uid = pm.uid.clone();
                    m.creation_timestamp = pm.creation_timestamp.clone();
                    let mut same = prev.clone();
                    same.metadata_mut().resource_version = None;
                    if same == next {
                        return Ok(Applied::Unchanged);
                    }
                    Applied::Configured
                }
                None => {
                    m.uid = Some(new_uid());
                    m.creation_timestamp = Some(now_rfc3339());
                    Applied::Created
                }
            };
            let body = serde_json::to_vec(&next.to_json())?;
            if self.etcd.put_if(&k, &body, old.map_or(0, |kv| kv.mod_revision))? {
                return Ok(outcome);
            }
        }
        anyhow::bail!("{k} kept changing under us; try again")
    }

    /// Every resource of a kind (or the one named), with `resourceVersion` set.
    pub fn get(&self, kind: Kind, name: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        let kvs = match name {
            Some(n) => self.etcd.get(&key(kind, n))?.into_iter().collect(),
            None => self.etcd.list(&format!("{PREFIX}{}/", kind.plural()))?.0,
        };
        kvs.into_iter()
            .map(|kv| {
                let mut r =
                    Resource::from_json(kind, &kv.value, &kv.key).with_context(|| format!("reading {}", kv.key))?;
                r.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
                Ok(r)
            })
            .collect()
    }

    /// Every resource of every kind, and the revision they were read at. A resource that no
    /// longer reads (written by something else) is left out and named in the notes.
    pub fn all(&self) -> anyhow::Result<(Vec<Resource>, i64, Vec<String>)> {
        let (kvs, rev) = self.etcd.list(PREFIX)?;
        let mut out = Vec::new();
        let mut notes = Vec::new();
        for kv in kvs {
            let Some(kind) = Kind::ALL.iter().find(|k| kv.key.starts_with(&format!("{PREFIX}{}/", k.plural()))) else {
                continue;
            };
            match Resource::from_json(*kind, &kv.value, &kv.key) {
                Ok(r) => out.push(r),
                Err(e) => notes.push(format!("{e:#}")),
            }
        }
        Ok((out, rev, notes))
    }

    /// Deletes a resource; whether it existed.
    pub fn delete(&self, kind: Kind, name: &str) -> anyhow::Result<bool> {
        self.etcd.delete(&key(kind, name))
    }
}

#[cfg(test)]
mod tests {
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
