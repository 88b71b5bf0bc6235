//! IPAM in etcd, as Calico keeps it, for both families: blocks of a pool claimed by nodes
//! (an affinity), addresses allocated from them, borrowing from other nodes' blocks when a
//! node's are full and the pool has no block left to claim. Every change is one etcd
//! transaction that checks the revisions it read, so two nodes racing for a block or an
//! address never both win; the loser reads again and tries the next.
//!
//! Keys and values are Calico's (libcalico-go's `model.AllocationBlock`, `IPAMHandle`,
//! `BlockAffinity`, field for field), for Calico's own tools to read what our nodes write
//! and our nodes what Calico's IPAM wrote: `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-len>` (the block: its affinity,
//! which handle holds each address, the free ones), `/calico/ipam/v2/host/<node>/ipv4/block/
//! <a.b.c.d-len>` (the node's claim), `/calico/ipam/v2/handle/<handle>` (how many addresses
//! a handle holds in which blocks, of both families); `ipv6` for IPv6 blocks.

use crate::etcd::Etcd;
use anyhow::{bail, Context as _};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Conflicts a single operation rides out before it gives up (each is another writer's
/// success, so this is never reached in practice).
const RETRIES: usize = 64;

/// The largest block this IPAM makes: Calico's pools allow /20 (IPv4) and /116 (IPv6),
/// 4096 addresses, each an entry of the stored block.
const MAX_BLOCK_ADDRESSES: u128 = 1 << 12;

/// An address family's blocks as the IPAM handles them.
pub trait Family:
    Copy + Ord + std::fmt::Debug + std::fmt::Display + std::str::FromStr + Serialize + DeserializeOwned
{
    type Addr: Copy + Ord + std::fmt::Debug + std::fmt::Display + Serialize + DeserializeOwned;
    /// `ipv4` or `ipv6`, as in the keys.
    const NAME: &'static str;
    /// `a.b.c.d-len`, as in the keys.
    fn dashed(&self) -> String {
        self.to_string().replacen('/', "-", 1)
    }
    /// The addresses handed out, in order: IPv4 without the network and broadcast
    /// addresses, IPv6 without the block's first (its subnet-router anycast address).
    fn hosts(&self) -> Box<dyn Iterator<Item = Self::Addr>>;
    /// How many addresses `hosts` gives (saturating for a /0).
    fn host_count(&self) -> u128;
    fn covers(&self, other: &Self) -> bool;
    fn blocks_of(&self, len: u8) -> Option<Vec<Self>>;
    fn has(&self, a: Self::Addr) -> bool;
    /// The block of `len` that holds `a`.
    fn block_of(a: Self::Addr, len: u8) -> Option<Self>;
    fn ip(a: Self::Addr) -> IpAddr;
    /// How many addresses the network holds (saturating).
    fn size(&self) -> u128;
    /// `a`'s offset in the network (Calico's ordinal).
    fn ordinal(&self, a: Self::Addr) -> Option<usize>;
    /// The address at offset `i`.
    fn nth(&self, i: usize) -> Option<Self::Addr>;
}

impl Family for Ipv4Net {
    type Addr = Ipv4Addr;
    const NAME: &'static str = "ipv4";
    fn hosts(&self) -> Box<dyn Iterator<Item = Ipv4Addr>> {
        Box::new(Ipv4Net::hosts(self))
    }
    fn host_count(&self) -> u128 {
        // ipnet's hosts: all of a /31 or /32, else without the first and the last.
        match self.prefix_len() {
            31.. => self.size(),
            _ => self.size() - 2,
        }
    }
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
    fn blocks_of(&self, len: u8) -> Option<Vec<Self>> {
        Some(self.subnets(len).ok()?.collect())
    }
    fn has(&self, a: Ipv4Addr) -> bool {
        self.contains(&a)
    }
    fn block_of(a: Ipv4Addr, len: u8) -> Option<Self> {
        Some(Ipv4Net::new(a, len).ok()?.trunc())
    }
    fn ip(a: Ipv4Addr) -> IpAddr {
        a.into()
    }
    fn size(&self) -> u128 {
        1u128 << (32 - self.prefix_len())
    }
    fn ordinal(&self, a: Ipv4Addr) -> Option<usize> {
        let off = u32::from(a).checked_sub(u32::from(self.network()))?;
        (self.contains(&a)).then_some(off as usize)
    }
    fn nth(&self, i: usize) -> Option<Ipv4Addr> {
        let a = Ipv4Addr::from(u32::from(self.network()).checked_add(u32::try_from(i).ok()?)?);
        self.contains(&a).then_some(a)
    }
}

impl Family for Ipv6Net {
    type Addr = Ipv6Addr;
    const NAME: &'static str = "ipv6";
    fn hosts(&self) -> Box<dyn Iterator<Item = Ipv6Addr>> {
        Box::new(Ipv6Net::hosts(self).skip(1))
    }
    fn host_count(&self) -> u128 {
        self.size() - 1
    }
    fn covers(&self, other: &Self) -> bool {
        self.contains(other)
    }
    fn blocks_of(&self, len: u8) -> Option<Vec<Self>> {
        // A /48 holds 2^26 blocks of /122: the pool is walked, never listed whole.
        Some(self.subnets(len).ok()?.take(1 << 16).collect())
    }
    fn has(&self, a: Ipv6Addr) -> bool {
        self.contains(&a)
    }
    fn block_of(a: Ipv6Addr, len: u8) -> Option<Self> {
        Some(Ipv6Net::new(a, len).ok()?.trunc())
    }
    fn ip(a: Ipv6Addr) -> IpAddr {
        a.into()
    }
    fn size(&self) -> u128 {
        1u128.checked_shl(u32::from(128 - self.prefix_len())).unwrap_or(u128::MAX)
    }
    fn ordinal(&self, a: Ipv6Addr) -> Option<usize> {
        let off = u128::from(a).checked_sub(u128::from(self.network()))?;
        if self.contains(&a) {
            usize::try_from(off).ok()
        } else {
            None
        }
    }
    fn nth(&self, i: usize) -> Option<Ipv6Addr> {
        let a = Ipv6Addr::from(u128::from(self.network()).checked_add(i as u128)?);
        self.contains(&a).then_some(a)
    }
}

fn blocks_prefix<N: Family>() -> String {
    format!("/calico/ipam/v2/assignment/{}/block/", N::NAME)
}

fn block_key<N: Family>(b: &N) -> String {
    format!("{}{}", blocks_prefix::<N>(), b.dashed())
}

/// Where `node`'s block affinities are (changed only when it claims or gives up a block).
pub fn affinities_prefix(node: &str) -> String {
    format!("/calico/ipam/v2/host/{node}/")
}

/// Where `node`'s block affinities of the family are.
pub fn affinity_keys<N: Family>(node: &str) -> String {
    format!("{}{}/block/", affinities_prefix(node), N::NAME)
}

fn affinity_key<N: Family>(node: &str, b: &N) -> String {
    format!("{}{}", affinity_keys::<N>(node), b.dashed())
}

/// The blocks that `node`'s affinity keys (read under [`affinity_keys`]) name, in address
/// order; a key that names no block is passed over.
pub fn blocks_of_affinities<N: Family>(node: &str, kvs: &[crate::etcd::Kv]) -> Vec<N> {
    let prefix = affinity_keys::<N>(node);
    let mut blocks: Vec<N> = kvs
        .iter()
        .filter_map(|kv| {
            let (addr, len) = kv.key.strip_prefix(&prefix)?.rsplit_once('-')?;
            format!("{addr}/{len}").parse().ok()
        })
        .collect();
    blocks.sort();
    blocks
}

fn handle_key(handle: &str) -> String {
    format!("/calico/ipam/v2/handle/{handle}")
}

/// A JSON `null` (Go's nil slice or map) reads as empty.
fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Fields a newer Calico may write that this IPAM does not use: kept as they were.
type Other = serde_json::Map<String, serde_json::Value>;

/// One block as Calico stores it: `allocations[i]` is the index in `attributes` of whoever
/// holds the block's i-th address (`null`: free), `unallocated` the free offsets in the
/// order Calico hands them out. Every write bumps `sequenceNumber`, and each allocation
/// keeps the number it was made at (Calico's guard against releasing an address that was
/// given again since).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "N: Family"))]
pub struct Block<N: Family = Ipv4Net> {
    pub cidr: N,
    /// `host:<node>`; None: no node holds the block.
    #[serde(default)]
    affinity: Option<String>,
    /// What Calico wrote before `affinity`: the node's name alone. Read, never written.
    #[serde(rename = "hostAffinity", default, skip_serializing_if = "Option::is_none")]
    host_affinity: Option<String>,
    /// Deprecated in Calico (IPAMConfiguration decides); kept as read.
    #[serde(rename = "strictAffinity", default)]
    strict_affinity: bool,
    #[serde(default, deserialize_with = "null_default")]
    allocations: Vec<Option<usize>>,
    #[serde(default, deserialize_with = "null_default")]
    unallocated: Vec<usize>,
    #[serde(default, deserialize_with = "null_default")]
    attributes: Vec<Attribute>,
    #[serde(rename = "sequenceNumber", default)]
    sequence_number: u64,
    #[serde(rename = "sequenceNumberForAllocation", default, deserialize_with = "null_default")]
    sequence_for: BTreeMap<String, u64>,
    #[serde(default)]
    deleted: bool,
    #[serde(flatten)]
    other: Other,
}

/// Who holds an address: the handle, and Calico's `secondary` attributes (`node`: the node
/// it was given to; Calico's CNI adds `namespace`, `pod` and `timestamp`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Attribute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handle_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty", deserialize_with = "null_default")]
    secondary: BTreeMap<String, String>,
    #[serde(flatten)]
    other: Other,
}

impl<N: Family> Block<N> {
    pub fn node(&self) -> &str {
        match (&self.affinity, &self.host_affinity) {
            (Some(a), _) => a.strip_prefix("host:").unwrap_or(a),
            (None, Some(h)) => h,
            (None, None) => "",
        }
    }

    fn new(cidr: N, node: &str) -> anyhow::Result<Block<N>> {
        let n = cidr.size();
        if n > MAX_BLOCK_ADDRESSES {
            bail!("block {cidr} holds {n} addresses, more than the {MAX_BLOCK_ADDRESSES} of a /20 that IPAM keeps in one block");
        }
        let n = n as usize;
        // Calico starts each block's sequence at the clock, so that a block deleted and made
        // again does not repeat the numbers of the first.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(Block {
            cidr,
            affinity: Some(format!("host:{node}")),
            host_affinity: None,
            strict_affinity: false,
            allocations: vec![None; n],
            unallocated: (0..n).collect(),
            attributes: Vec::new(),
            sequence_number: now as u64,
            sequence_for: BTreeMap::new(),
            deleted: false,
            other: Other::new(),
        })
    }

    /// The addresses in use and their handles (`""` for one allocated without a handle).
    pub fn used(&self) -> impl Iterator<Item = (N::Addr, &str)> + '_ {
        self.allocations.iter().enumerate().filter_map(|(i, at)| {
            let handle = self.attributes.get((*at)?).and_then(|x| x.handle_id.as_deref()).unwrap_or("");
            Some((self.cidr.nth(i)?, handle))
        })
    }

    /// The handle that holds `a`, if it is in use.
    pub fn holder(&self, a: N::Addr) -> Option<&str> {
        let at = (*self.allocations.get(self.cidr.ordinal(a)?)?)?;
        Some(self.attributes.get(at).and_then(|x| x.handle_id.as_deref()).unwrap_or(""))
    }

    /// The node `a` was given to: its `node` attribute, else the block's node.
    pub fn given_to(&self, a: N::Addr) -> Option<&str> {
        let at = (*self.allocations.get(self.cidr.ordinal(a)?)?)?;
        Some(self.attributes.get(at).and_then(|x| x.secondary.get("node")).map_or(self.node(), String::as_str))
    }

    /// The Kubernetes pod `a` was given to, `namespace/pod` (or `pod`), as Calico's plugin
    /// writes it into the attributes.
    pub fn workload(&self, a: N::Addr) -> Option<String> {
        let at = (*self.allocations.get(self.cidr.ordinal(a)?)?)?;
        let s = &self.attributes.get(at)?.secondary;
        let pod = s.get("pod").filter(|p| !p.is_empty())?;
        Some(s.get("namespace").filter(|n| !n.is_empty()).map_or(pod.clone(), |ns| format!("{ns}/{pod}")))
    }

    /// Whether `a` can be handed out: in the block, recorded, and free.
    fn is_free(&self, a: N::Addr) -> bool {
        self.cidr.ordinal(a).and_then(|i| self.allocations.get(i)).is_some_and(Option::is_none)
    }

    fn give(&mut self, a: N::Addr, handle: &str, node: &str, more: &BTreeMap<String, String>) {
        let Some(i) = self.cidr.ordinal(a).filter(|i| *i < self.allocations.len()) else { return };
        self.unallocated.retain(|o| *o != i);
        let mut secondary = more.clone();
        secondary.insert("node".into(), node.into());
        let attr = Attribute { handle_id: Some(handle.to_string()), secondary, other: Other::new() };
        let at = match self.attributes.iter().position(|x| *x == attr) {
            Some(at) => at,
            None => {
                // Indices past the attributes (a block written by hand) must not come to name
                // the new holder: they all point at one empty attribute first (in use, no handle).
                let end = self.attributes.len();
                if self.allocations.iter().flatten().any(|x| *x >= end) {
                    self.attributes.push(Attribute::default());
                    self.allocations.iter_mut().flatten().filter(|x| **x >= end).for_each(|x| *x = end);
                }
                self.attributes.push(attr);
                self.attributes.len() - 1
            }
        };
        self.allocations[i] = Some(at);
        self.sequence_for.insert(i.to_string(), self.sequence_number);
        self.sequence_number = self.sequence_number.wrapping_add(1);
    }

    /// Frees `a`; its handle, if it was in use. Attributes no address refers to any more go.
    fn take(&mut self, a: N::Addr) -> Option<String> {
        let i = self.cidr.ordinal(a)?;
        let at = self.allocations.get_mut(i)?.take()?;
        self.unallocated.push(i);
        self.sequence_for.remove(&i.to_string());
        self.sequence_number = self.sequence_number.wrapping_add(1);
        let handle = self.attributes.get(at).and_then(|x| x.handle_id.clone()).unwrap_or_default();
        if at < self.attributes.len() && !self.allocations.contains(&Some(at)) {
            self.attributes.remove(at);
            for x in self.allocations.iter_mut().flatten() {
                if *x > at {
                    *x -= 1;
                }
            }
        }
        Some(handle)
    }
}

/// A value and the etcd revision it was read at (0: absent).
type Revised<T> = (T, i64);

/// A handle as Calico stores it: how many addresses it holds in which blocks (CIDRs of
/// either family). The addresses themselves are found in those blocks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Handle {
    #[serde(default, deserialize_with = "null_default")]
    block: BTreeMap<String, u32>,
    #[serde(default)]
    deleted: bool,
    #[serde(flatten)]
    other: Other,
}

impl Handle {
    fn blocks<N: Family>(&self) -> impl Iterator<Item = N> + '_ {
        self.block.keys().filter_map(|k| k.parse().ok())
    }

    fn add(&mut self, block: &impl std::fmt::Display) {
        let n = self.block.entry(block.to_string()).or_default();
        *n = n.saturating_add(1);
    }

    /// One address fewer in `block`.
    fn drop_one(&mut self, block: &impl std::fmt::Display) {
        let key = block.to_string();
        match self.block.get_mut(&key) {
            Some(n) if *n > 1 => *n -= 1,
            _ => {
                self.block.remove(&key);
            }
        }
    }
}

/// An address handed out, and whether it was borrowed from another node's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned<N: Family = Ipv4Net> {
    pub address: N::Addr,
    pub block: N,
    pub borrowed: bool,
}

/// What the cluster asks of automatic assignment, as Calico's `IPReservation`s and its
/// `IPAMConfiguration` `default` say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Never handed out unasked.
    pub reserved: Vec<IpNet>,
    /// No borrowing from another node's block.
    pub strict_affinity: bool,
    /// The most blocks of a family a node may hold; None: no limit.
    pub max_blocks_per_host: Option<u32>,
    /// Whether a node whose blocks are full claims another.
    pub auto_allocate_blocks: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { reserved: Vec::new(), strict_affinity: false, max_blocks_per_host: None, auto_allocate_blocks: true }
    }
}

impl Policy {
    pub fn reserves(&self, a: IpAddr) -> bool {
        self.reserved.iter().any(|r| r.contains(&a))
    }

    /// Whether a node holding `held` blocks may claim one more.
    fn may_hold_more(&self, held: usize) -> bool {
        self.max_blocks_per_host.is_none_or(|m| held < m as usize)
    }

    /// Why a node holding `held` blocks gets no address of `pool` where its own are full.
    fn why_none(&self, node: &str, pool: &impl std::fmt::Display, held: usize) -> String {
        let claim = if !self.auto_allocate_blocks {
            "autoAllocateBlocks is off".to_string()
        } else if !self.may_hold_more(held) {
            format!("it holds maxBlocksPerHost ({held}) blocks")
        } else {
            "every block of the pool is claimed".to_string()
        };
        let borrow =
            if self.strict_affinity { "strictAffinity forbids borrowing" } else { "every other node's block is full" };
        format!("no free address in {pool} for node {node}: its blocks are full, {claim}, and {borrow}")
    }
}

#[derive(Debug, Clone)]
pub struct Ipam {
    pub etcd: Etcd,
    /// Written with each address given, beside `node`.
    attributes: BTreeMap<String, String>,
    /// The policy as read once for every assignment to come ([`Ipam::with_policy_read`]);
    /// None: read at each.
    policy: Option<Policy>,
}

const CONFIRMED: &[u8] = br#"{"state":"confirmed","deleted":false}"#;

/// Where Calico's IPAM reads its configuration in etcd (`calicoctl ipam configure` writes
/// it); an `IPAMConfiguration` resource, where there is one, comes first.
const CONFIG_V1: &str = "/calico/ipam/v2/config";

/// The configuration as stored there. Go leaves out what is false or zero.
#[derive(Debug, Default, Deserialize)]
struct ConfigV1 {
    #[serde(default)]
    strict_affinity: bool,
    #[serde(default)]
    auto_allocate_blocks: bool,
    #[serde(rename = "maxBlocksPerHost", default)]
    max_blocks_per_host: u32,
}

impl Ipam {
    pub fn new(etcd: Etcd) -> Ipam {
        Ipam { etcd, attributes: BTreeMap::new(), policy: None }
    }

    /// Reads the policy now and holds it for the assignments this value makes: for a
    /// short task such as one CNI call, which then reads it once instead of at every
    /// assignment (three etcd reads each).
    pub fn with_policy_read(mut self) -> anyhow::Result<Ipam> {
        self.policy = Some(self.policy()?);
        Ok(self)
    }

    /// The policy held, or else as read now.
    fn current_policy(&self) -> anyhow::Result<Policy> {
        match &self.policy {
            Some(p) => Ok(p.clone()),
            None => self.policy(),
        }
    }

    /// Writes `attributes` beside `node` with each address it gives (Calico's CNI plugin
    /// writes the pod's `namespace` and `pod`), and the time it gave it (`timestamp`).
    pub fn with_attributes(mut self, attributes: impl IntoIterator<Item = (String, String)>) -> Ipam {
        self.attributes.extend(attributes);
        self.attributes.insert("timestamp".into(), crate::now_rfc3339());
        self
    }

    fn read_block<N: Family>(&self, b: &N) -> anyhow::Result<Option<(Block<N>, i64)>> {
        match self.etcd.get(&block_key(b))? {
            Some(kv) => {
                let blk = serde_json::from_slice(&kv.value).with_context(|| format!("block {b} is corrupt"))?;
                Ok(Some((blk, kv.mod_revision)))
            }
            None => Ok(None),
        }
    }

    /// The handle and its revision; an absent one reads as empty at revision 0 (which a
    /// transaction takes as "still absent").
    fn read_handle(&self, handle: &str) -> anyhow::Result<Revised<Handle>> {
        if handle.is_empty() || handle.contains('/') {
            bail!("handle {handle:?} cannot be a key of Calico's IPAM: it is empty or has a '/'");
        }
        match self.etcd.get(&handle_key(handle))? {
            Some(kv) => Ok((
                serde_json::from_slice(&kv.value).with_context(|| format!("handle {handle} is corrupt"))?,
                kv.mod_revision,
            )),
            None => Ok((Handle::default(), 0)),
        }
    }

    /// The cluster's IPReservations and IPAM configuration, read now.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        use crate::resources::{Kind, Resource};
        let store = crate::Store::new(self.etcd.clone());
        let mut p = Policy::default();
        for r in store.get(Kind::IpReservation, None)? {
            let Resource::IpReservation(r) = r else { continue };
            // apply checked them; one written past it is skipped, not fatal to every ADD.
            p.reserved.extend(
                r.spec.reserved_cidrs.iter().filter_map(|c| crate::resources::reserved("reservedCIDRs", c).ok()),
            );
        }
        if let Some(Resource::IpamConfiguration(c)) = store.get(Kind::IpamConfiguration, Some("default"))?.pop() {
            p.strict_affinity = c.spec.strict_affinity.unwrap_or(false);
            p.max_blocks_per_host = c.spec.max_blocks_per_host.filter(|m| *m > 0);
            p.auto_allocate_blocks = c.spec.auto_allocate_blocks.unwrap_or(true);
        } else if let Some(kv) = self.etcd.get(CONFIG_V1)? {
            let c: ConfigV1 = serde_json::from_slice(&kv.value).with_context(|| format!("{CONFIG_V1} is corrupt"))?;
            p.strict_affinity = c.strict_affinity;
            p.max_blocks_per_host = Some(c.max_blocks_per_host).filter(|m| *m > 0);
            p.auto_allocate_blocks = c.auto_allocate_blocks;
        }
        Ok(p)
    }

    /// Every block of the family that exists, in address order, with its revision.
    pub fn blocks<N: Family>(&self) -> anyhow::Result<Vec<(Block<N>, i64)>> {
        let (kvs, _) = self.etcd.list(&blocks_prefix::<N>())?;
        let mut blocks = kvs
            .into_iter()
            .map(|kv| {
                let b = serde_json::from_slice(&kv.value).with_context(|| format!("{} is corrupt", kv.key))?;
                Ok((b, kv.mod_revision))
            })
            .collect::<anyhow::Result<Vec<(Block<N>, i64)>>>()?;
        // The keys sort as text (10-50-0-12-30 before 10-50-0-4-30); callers want addresses.
        blocks.sort_by_key(|(b, _)| b.cidr);
        Ok(blocks)
    }

    /// The IPv4 blocks `node` holds, in address order.
    pub fn node_blocks(&self, node: &str) -> anyhow::Result<Vec<Ipv4Net>> {
        Ok(self.blocks::<Ipv4Net>()?.into_iter().filter(|(b, _)| b.node() == node).map(|(b, _)| b.cidr).collect())
    }

    /// The blocks of the family whose affinity is `node` (Calico's: the node announces
    /// them), in address order: read from the node's affinity keys, a few short keys where
    /// the blocks themselves are every node's, with every address in them.
    pub fn affine_blocks<N: Family>(&self, node: &str) -> anyhow::Result<Vec<N>> {
        let (kvs, _) = self.etcd.list(&affinity_keys::<N>(node))?;
        Ok(blocks_of_affinities(node, &kvs))
    }

    /// Claims `block` for `node` if no one holds it; whether `node` holds it now. A block
    /// that is there without a node (its node went while others' borrowed addresses kept
    /// it) is claimed as one that is not.
    pub fn claim<N: Family>(&self, node: &str, block: N) -> anyhow::Result<bool> {
        for _ in 0..RETRIES {
            let won = match self.read_block(&block)? {
                Some((b, _)) if !b.node().is_empty() => return Ok(b.node() == node),
                Some((mut b, rev)) => {
                    b.affinity = Some(format!("host:{node}"));
                    let (bk, ak) = (block_key(&block), affinity_key(node, &block));
                    self.etcd.put_all_if(&[(&bk, rev)], &[(&bk, &serde_json::to_vec(&b)?), (&ak, CONFIRMED)])?
                }
                None => self.put_new_block(node, block)?,
            };
            if won {
                return Ok(true);
            }
        }
        Ok(self.read_block(&block)?.is_some_and(|(b, _)| b.node() == node))
    }

    /// Writes `block` with `node`'s affinity if the key is absent: exactly one claimer wins.
    fn put_new_block<N: Family>(&self, node: &str, block: N) -> anyhow::Result<bool> {
        let body = serde_json::to_vec(&Block::new(block, node)?)?;
        let (bk, ak) = (block_key(&block), affinity_key(node, &block));
        self.etcd.put_all_if(&[(&bk, 0)], &[(&bk, &body), (&ak, CONFIRMED)])
    }

    /// The address of the family `handle` holds per `h`, and its block.
    fn locate<N: Family>(&self, handle: &str, h: &Handle) -> anyhow::Result<Option<(N::Addr, Block<N>)>> {
        for cidr in h.blocks::<N>() {
            let Some((b, _)) = self.read_block(&cidr)? else { continue };
            let found = b.used().find(|(_, x)| *x == handle).map(|(a, _)| a);
            if let Some(a) = found {
                return Ok(Some((a, b)));
            }
        }
        Ok(None)
    }

    /// The address `handle` holds in the family, if any.
    pub fn find<N: Family>(&self, handle: &str) -> anyhow::Result<Option<N::Addr>> {
        let (h, _) = self.read_handle(handle)?;
        Ok(self.locate::<N>(handle, &h)?.map(|(a, _)| a))
    }

    /// The handles that hold addresses given to `node`, of either family.
    pub fn handles(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let mut out = self.handles_of::<Ipv4Net>(node)?;
        out.extend(self.handles_of::<Ipv6Net>(node)?);
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn handles_of<N: Family>(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for (b, _) in self.blocks::<N>()? {
            for (a, h) in b.used() {
                if !h.is_empty() && b.given_to(a) == Some(node) {
                    out.push(h.to_string());
                }
            }
        }
        Ok(out)
    }

    /// Writes `a` of `b` (read at `rev`) as given to `handle` on `node`, with the handle (read
    /// at `hrev`) counting it; whether no one wrote either in between.
    fn write_give<N: Family>(
        &self,
        node: &str,
        handle: &str,
        (b, rev): (&Block<N>, i64),
        a: N::Addr,
        (h, hrev): (&Handle, i64),
    ) -> anyhow::Result<bool> {
        let mut next = b.clone();
        next.give(a, handle, node, &self.attributes);
        let mut h = h.clone();
        h.add(&b.cidr);
        let (bk, hk) = (block_key(&b.cidr), handle_key(handle));
        self.etcd.put_all_if(
            &[(&bk, rev), (&hk, hrev)],
            &[(&bk, &serde_json::to_vec(&next)?), (&hk, &serde_json::to_vec(&h)?)],
        )
    }

    /// Frees `address` whoever holds it (what a crash left behind): its block's entry and
    /// the handle's count of it, in one transaction. The handle that held it, if any.
    pub fn release_address<N: Family>(&self, address: N::Addr) -> anyhow::Result<Option<String>> {
        for _ in 0..RETRIES {
            let blocks = self.blocks::<N>()?;
            let Some((b, rev)) = blocks.into_iter().find(|(b, _)| b.cidr.has(address)) else { return Ok(None) };
            let mut next = b.clone();
            let Some(handle) = next.take(address) else { return Ok(None) };
            let bk = block_key(&b.cidr);
            let body = serde_json::to_vec(&next)?;
            let ok = match handle.is_empty() || handle.contains('/') {
                true => self.etcd.txn(&[(&bk, rev)], &[(&bk, &body)], &[])?,
                false => {
                    let (mut h, hrev) = self.read_handle(&handle)?;
                    h.drop_one(&b.cidr);
                    self.write_with_handle(&bk, rev, &body, &handle, &h, hrev)?
                }
            };
            if ok {
                return Ok(Some(handle));
            }
        }
        bail!("releasing {address} kept conflicting with other writers")
    }

    /// Writes a block and its handle together; a handle left without blocks is deleted, as
    /// Calico does.
    fn write_with_handle(
        &self,
        bk: &str,
        rev: i64,
        body: &[u8],
        handle: &str,
        h: &Handle,
        hrev: i64,
    ) -> anyhow::Result<bool> {
        let hk = handle_key(handle);
        let expect = [(bk, rev), (hk.as_str(), hrev)];
        if h.block.is_empty() {
            let deletes: &[&str] = if hrev == 0 { &[] } else { &[&hk] };
            self.etcd.txn(&expect, &[(bk, body)], deletes)
        } else {
            self.etcd.txn(&expect, &[(bk, body), (&hk, &serde_json::to_vec(h)?)], &[])
        }
    }

    /// Removes `block` and its node's claim if it holds no address (a block of a node that
    /// is gone); whether it did. One that holds addresses stays.
    pub fn release_block<N: Family>(&self, block: N) -> anyhow::Result<bool> {
        let Some((b, rev)) = self.read_block(&block)? else { return Ok(false) };
        if b.used().next().is_some() {
            return Ok(false);
        }
        let (bk, ak) = (block_key(&block), affinity_key(b.node(), &block));
        self.etcd.txn(&[(&bk, rev)], &[], &[&bk, &ak])
    }

    /// Records that `handle` holds `address` (a pod made before IPAM lived here), in the
    /// block `block`, which `node` must hold or gets.
    pub fn assign<N: Family>(&self, node: &str, handle: &str, address: N::Addr, block: N) -> anyhow::Result<()> {
        if !self.claim(node, block)? {
            bail!("block {block} belongs to another node");
        }
        self.record(node, handle, address, block)
    }

    /// [`Ipam::assign`] of an address in another node's block, whichever holds it: given to
    /// `node`, borrowed, as Calico records a borrowed address. The block must be there
    /// already (its node claimed it): borrowing never claims another's block.
    pub fn assign_borrowed<N: Family>(&self, node: &str, handle: &str, address: N::Addr) -> anyhow::Result<()> {
        let Some((b, _)) = self.blocks::<N>()?.into_iter().find(|(b, _)| b.cidr.has(address)) else {
            bail!("{address} is in no block in etcd: it cannot be borrowed");
        };
        self.record(node, handle, address, b.cidr)
    }

    fn record<N: Family>(&self, node: &str, handle: &str, address: N::Addr, block: N) -> anyhow::Result<()> {
        for _ in 0..RETRIES {
            let (b, rev) = self.read_block(&block)?.context("the block vanished")?;
            match b.holder(address) {
                Some(h) if h == handle => return Ok(()),
                Some(h) => bail!("{address} is held by {h}"),
                None if !b.is_free(address) => bail!("{address} is not an address of block {block}"),
                None => {}
            }
            let (h, hrev) = self.read_handle(handle)?;
            if self.write_give(node, handle, (&b, rev), address, (&h, hrev))? {
                return Ok(());
            }
        }
        bail!("assigning {address} kept conflicting with other writers")
    }

    /// Claims the first free block of `pool` for `node`; None when every block is taken.
    pub fn claim_block<N: Family>(&self, node: &str, pool: N, block_len: u8) -> anyhow::Result<Option<N>> {
        let blocks = pool.blocks_of(block_len).with_context(|| format!("/{block_len} blocks of {pool}"))?;
        for b in blocks {
            if self.read_block(&b)?.is_none() && self.put_new_block(node, b)? {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// Takes the first free address of the first block in `blocks` that has one for
    /// `handle`, in one transaction with the handle. None: no room in any; Some(None): lost
    /// a race (read everything again).
    fn take_first<'a, N: Family + 'a>(
        &self,
        node: &str,
        (handle, h): (&str, &Revised<Handle>),
        blocks: impl IntoIterator<Item = &'a (Block<N>, i64)>,
        policy: &Policy,
    ) -> anyhow::Result<Option<Option<Assigned<N>>>> {
        for (b, rev) in blocks {
            let free = |a: &N::Addr| b.is_free(*a) && !policy.reserves(N::ip(*a));
            let Some(a) = b.cidr.hosts().find(free) else { continue };
            let ok = self.write_give(node, handle, (b, *rev), a, (&h.0, h.1))?;
            return Ok(Some(ok.then_some(Assigned { address: a, block: b.cidr, borrowed: b.node() != node })));
        }
        Ok(None)
    }

    /// The handle as it is now, and the address of the family it holds already, as an
    /// assignment for `node`.
    fn held<N: Family>(&self, node: &str, handle: &str) -> anyhow::Result<(Revised<Handle>, Option<Assigned<N>>)> {
        let (h, hrev) = self.read_handle(handle)?;
        let held = self.locate::<N>(handle, &h)?.map(|(address, b)| Assigned {
            address,
            block: b.cidr,
            borrowed: b.node() != node,
        });
        Ok(((h, hrev), held))
    }

    /// An address for `handle` on `node`: its blocks first, then a newly claimed block of
    /// `pool`, then one borrowed from another node's block, never a reserved one; the
    /// cluster's IPAM configuration may forbid the last two. The same handle keeps its
    /// address.
    pub fn allocate<N: Family>(&self, node: &str, handle: &str, pool: N, block_len: u8) -> anyhow::Result<Assigned<N>> {
        let policy = self.current_policy()?;
        for _ in 0..RETRIES {
            let (h, held) = self.held::<N>(node, handle)?;
            if let Some(a) = held {
                return Ok(a);
            }
            let all = self.blocks::<N>()?;
            let count = all.iter().filter(|(b, _)| b.node() == node).count();
            let mine = all.iter().filter(|(b, _)| b.node() == node && pool.covers(&b.cidr));
            let others = all.iter().filter(|(b, _)| b.node() != node && pool.covers(&b.cidr));
            // Own blocks, then (below) a new one, then others'.
            match self.take_first(node, (handle, &h), mine, &policy)? {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => {}
            }
            if policy.auto_allocate_blocks
                && policy.may_hold_more(count)
                && self.claim_block(node, pool, block_len)?.is_some()
            {
                continue;
            }
            let borrowed = match policy.strict_affinity {
                true => None,
                false => self.take_first(node, (handle, &h), others, &policy)?,
            };
            match borrowed {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => bail!(policy.why_none(node, &pool, count)),
            }
        }
        bail!("allocating for {handle} kept conflicting with other writers")
    }

    /// `address` for `handle`, as a workload asked for it (Calico's `IP` argument): it must
    /// lie in one of `pools` (those for manual assignment too). Its block is claimed for
    /// `node` where no one holds it; one in another node's block is borrowed, unless
    /// `strictAffinity` forbids it. Reservations do not apply: asking is how a workload gets
    /// a reserved address. The same handle keeps its address.
    pub fn request<N: Family>(
        &self,
        node: &str,
        handle: &str,
        address: N::Addr,
        pools: &[(N, u8)],
    ) -> anyhow::Result<Assigned<N>> {
        let Some(&(pool, len)) = pools.iter().find(|(p, _)| p.has(address)) else {
            bail!("{address} is in no enabled IPPool for this node's workloads");
        };
        let block = N::block_of(address, len).with_context(|| format!("/{len} blocks of {pool}"))?;
        if !block.hosts().any(|a| a == address) {
            bail!("{address} is not handed out: it is the first or last address of block {block}");
        }
        let policy = self.current_policy()?;
        for _ in 0..RETRIES {
            let (h, held) = self.held::<N>(node, handle)?;
            match held {
                Some(a) if a.address == address => return Ok(a),
                Some(a) => bail!("{handle} holds {} already, not {address}", a.address),
                None => {}
            }
            let Some((b, rev)) = self.read_block(&block)? else {
                let count = self.blocks::<N>()?.iter().filter(|(b, _)| b.node() == node).count();
                if !policy.may_hold_more(count) {
                    bail!("{address} is in block {block}, which node {node} may not claim: it holds maxBlocksPerHost ({count}) blocks");
                }
                // Won or lost, the block is read again.
                self.put_new_block(node, block)?;
                continue;
            };
            if let Some(h) = b.holder(address) {
                bail!("{address} is in use (by {h})");
            }
            if !b.is_free(address) {
                bail!("{address} is not an address of block {block} as etcd holds it");
            }
            if policy.strict_affinity && b.node() != node {
                bail!("{address} is in block {block} of node {}, and strictAffinity forbids borrowing", b.node());
            }
            if self.write_give(node, handle, (&b, rev), address, (&h.0, h.1))? {
                return Ok(Assigned { address, block, borrowed: b.node() != node });
            }
        }
        bail!("assigning {address} kept conflicting with other writers")
    }

    /// An address for `handle` from `node`'s own `blocks` only (claimed for it here if no
    /// one holds them): never a new block, never borrowed. The node announces exactly these
    /// blocks (its IPv6 ones come from its configuration). The same handle keeps its address.
    pub fn allocate_in<N: Family>(&self, node: &str, handle: &str, blocks: &[N]) -> anyhow::Result<Assigned<N>> {
        self.claim_own(node, blocks)?;
        let policy = self.current_policy()?;
        for _ in 0..RETRIES {
            let (h, held) = self.held::<N>(node, handle)?;
            if let Some(a) = held {
                return Ok(a);
            }
            let mut mine = Vec::with_capacity(blocks.len());
            for b in blocks {
                mine.push(self.read_block(b)?.context("a claimed block vanished")?);
            }
            match self.take_first(node, (handle, &h), &mine, &policy)? {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => bail!("no free {} address: node {node}'s blocks are full", N::NAME),
            }
        }
        bail!("allocating for {handle} kept conflicting with other writers")
    }

    /// Claims a node's configured `blocks` for it (the node announces them): one that
    /// another node holds is an error that says so.
    pub fn claim_own<N: Family>(&self, node: &str, blocks: &[N]) -> anyhow::Result<()> {
        for b in blocks {
            if !self.claim(node, *b)? {
                bail!("block {b} of node {node} is claimed by another node in etcd");
            }
        }
        Ok(())
    }

    /// Frees what `handle` holds in the family; the address, if it held one.
    pub fn release<N: Family>(&self, handle: &str) -> anyhow::Result<Option<N::Addr>> {
        let mut freed = None;
        for _ in 0..RETRIES {
            let (mut h, hrev) = self.read_handle(handle)?;
            let Some(cidr) = h.blocks::<N>().next() else { return Ok(freed) };
            h.block.remove(&cidr.to_string());
            let Some((mut b, rev)) = self.read_block(&cidr)? else {
                // The block went (deleted by hand): the handle forgets it.
                let hk = handle_key(handle);
                match h.block.is_empty() {
                    true => self.etcd.txn(&[(&hk, hrev)], &[], &[&hk])?,
                    false => self.etcd.txn(&[(&hk, hrev)], &[(&hk, &serde_json::to_vec(&h)?)], &[])?,
                };
                continue;
            };
            // The addresses and the handle go together, or neither does.
            let mine: Vec<N::Addr> = b.used().filter(|(_, x)| *x == handle).map(|(a, _)| a).collect();
            for a in &mine {
                b.take(*a);
            }
            let body = serde_json::to_vec(&b)?;
            if self.write_with_handle(&block_key(&cidr), rev, &body, handle, &h, hrev)? {
                freed = freed.or(mine.first().copied());
            }
        }
        bail!("releasing {handle} kept conflicting with other writers")
    }

    /// What Calico does when a node is deleted: frees every address given to `node` and the
    /// blocks it holds; a block that still holds other nodes' addresses keeps them and loses
    /// its node. The addresses and blocks freed.
    pub fn release_node(&self, node: &str) -> anyhow::Result<(usize, usize)> {
        let (a4, b4) = self.release_node_family::<Ipv4Net>(node)?;
        let (a6, b6) = self.release_node_family::<Ipv6Net>(node)?;
        Ok((a4 + a6, b4 + b6))
    }

    fn release_node_family<N: Family>(&self, node: &str) -> anyhow::Result<(usize, usize)> {
        let mut addresses = 0;
        for (b, _) in self.blocks::<N>()? {
            let given: Vec<N::Addr> = b.used().map(|(a, _)| a).filter(|a| b.given_to(*a) == Some(node)).collect();
            for a in given {
                addresses += usize::from(self.release_address::<N>(a)?.is_some());
            }
        }
        let mut blocks = 0;
        for (b, _) in self.blocks::<N>()?.into_iter().filter(|(b, _)| b.node() == node) {
            if self.release_block(b.cidr)? {
                blocks += 1;
                continue;
            }
            for _ in 0..RETRIES {
                let Some((mut b, rev)) = self.read_block(&b.cidr)? else { break };
                if b.node() != node {
                    break;
                }
                (b.affinity, b.host_affinity) = (None, None);
                let (bk, ak) = (block_key(&b.cidr), affinity_key(node, &b.cidr));
                if self.etcd.txn(&[(&bk, rev)], &[(&bk, &serde_json::to_vec(&b)?)], &[&ak])? {
                    break;
                }
            }
        }
        Ok((addresses, blocks))
    }

    /// Frees what `handle` holds in both families; its IPv4 address, if it held one.
    pub fn release_all(&self, handle: &str) -> anyhow::Result<Option<Ipv4Addr>> {
        self.release::<Ipv6Net>(handle)?;
        self.release::<Ipv4Net>(handle)
    }
}

/// The body of the `ipam_blocks` fuzz target (`fuzz/`), here so that the tests replay its
/// corpus: any bytes as a block another IPAM user wrote into etcd, the first byte choosing
/// the family. Reading never panics; every address in use names its holder; every free
/// address can be given and is then held by its handle; what is written reads back the
/// same; every address taken is free again, and the block is then empty.
#[doc(hidden)]
pub fn fuzz_block(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else { return };
    match which % 2 {
        0 => fuzz_family::<Ipv4Net>(json),
        _ => fuzz_family::<Ipv6Net>(json),
    }
}

fn fuzz_family<N: Family>(json: &[u8]) {
    let Ok(mut b) = serde_json::from_slice::<Block<N>>(json) else { return };
    let _ = b.node();
    let mut held: Vec<(N::Addr, String)> = b.used().map(|(a, h)| (a, h.to_string())).collect();
    for (a, h) in &held {
        assert_eq!(b.holder(*a), Some(h.as_str()));
        assert!(b.given_to(*a).is_some() && !b.is_free(*a));
    }
    let free: Vec<N::Addr> = b.cidr.hosts().take(MAX_BLOCK_ADDRESSES as usize).filter(|a| b.is_free(*a)).collect();
    for (i, a) in free.into_iter().enumerate() {
        let h = format!("fuzz@eth{}", i % 3);
        b.give(a, &h, "fuzz-node", &BTreeMap::new());
        assert_eq!((b.holder(a), b.given_to(a)), (Some(h.as_str()), Some("fuzz-node")));
        held.push((a, h));
    }
    let body = serde_json::to_vec(&b).expect("a block is written");
    let again: Block<N> = serde_json::from_slice(&body).expect("what is written reads back");
    assert_eq!(again, b);
    for (a, h) in held {
        assert_eq!(b.take(a), Some(h));
        assert!(b.is_free(a));
    }
    assert!(b.used().next().is_none(), "every address was taken");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_addresses_follow_the_family() {
        let b4: Ipv4Net = "10.244.1.0/26".parse().expect("net");
        let b6: Ipv6Net = "fd00:10:244::40/122".parse().expect("net");
        assert_eq!(block_key(&b4), "/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26");
        assert_eq!(block_key(&b6), "/calico/ipam/v2/assignment/ipv6/block/fd00:10:244::40-122");
        assert_eq!(affinity_key("node-b", &b6), "/calico/ipam/v2/host/node-b/ipv6/block/fd00:10:244::40-122");
        assert_eq!(handle_key("c1@eth0"), "/calico/ipam/v2/handle/c1@eth0");
        assert_eq!(Family::hosts(&b4).next(), Some("10.244.1.1".parse().expect("ip")));
        assert_eq!(Family::hosts(&b4).count(), 62);
        for n in ["10.0.0.0/31", "10.0.0.0/32", "10.0.0.0/29", "fd00::/127", "fd00::/128", "fd00::/122"] {
            let c = match n.parse::<IpNet>().expect("net") {
                IpNet::V4(v) => (Family::hosts(&v).count(), v.host_count()),
                IpNet::V6(v) => (Family::hosts(&v).count(), v.host_count()),
            };
            assert_eq!(c.0 as u128, c.1, "{n}");
        }
        assert_eq!(Family::hosts(&b6).next(), Some("fd00:10:244::41".parse().expect("ip")));
        assert_eq!(Family::hosts(&b6).count(), 63);
        assert_eq!(b6.ordinal("fd00:10:244::7f".parse().expect("ip")), Some(63));
        assert_eq!(b6.ordinal("fd00:10:244::80".parse().expect("ip")), None);
        assert_eq!(b4.nth(63), Some("10.244.1.63".parse().expect("ip")));
        assert_eq!(b4.nth(64), None);
        let pool6: Ipv6Net = "fd00:10:244::/48".parse().expect("net");
        assert_eq!(pool6.blocks_of(122).map(|v| v.len()), Some(1 << 16), "walked, not listed whole");
    }

    /// A block as Calico's IPAM writes it: nulls where Go has nil slices, the deprecated
    /// `strictAffinity`, a field this IPAM does not know, two addresses of one pod.
    const CALICOS: &str = r#"{"cidr":"10.244.7.0/30","affinity":"host:worker-1","affinityClaimTime":"2026-11-30T10:00:00Z",
        "strictAffinity":false,"allocations":[null,0,0,null],"unallocated":[3,0],
        "attributes":[{"handle_id":"k8s-pod-network.5f1c","secondary":{"namespace":"default","node":"worker-1","pod":"web","timestamp":"2026-11-30 10:00:01 +0000 UTC"}}],
        "sequenceNumber":1764496800000000007,"sequenceNumberForAllocation":{"1":1764496800000000005,"2":1764496800000000006},"deleted":false}"#;

    #[test]
    fn calicos_blocks_read_and_write_as_calico_wrote_them() {
        let mut b: Block = serde_json::from_str(CALICOS).expect("block");
        assert_eq!(b.node(), "worker-1");
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        let used: Vec<_> = b.used().collect();
        assert_eq!(used, vec![(a("10.244.7.1"), "k8s-pod-network.5f1c"), (a("10.244.7.2"), "k8s-pod-network.5f1c")]);
        assert!(!b.is_free(a("10.244.7.1")) && b.is_free(a("10.244.7.3")) && !b.is_free(a("10.244.7.4")));
        // Ours beside Calico's: a new attribute, the sequence moved on, what we do not know kept.
        b.give(a("10.244.7.3"), "c9@eth0", "worker-2", &BTreeMap::new());
        assert_eq!(b.holder(a("10.244.7.3")), Some("c9@eth0"));
        assert_eq!(b.given_to(a("10.244.7.3")), Some("worker-2"));
        assert_eq!(b.given_to(a("10.244.7.1")), Some("worker-1"));
        assert_eq!(b.workload(a("10.244.7.1")).as_deref(), Some("default/web"));
        assert_eq!(b.workload(a("10.244.7.3")), None);
        let v: serde_json::Value = serde_json::to_value(&b).expect("json");
        assert_eq!(v["allocations"], serde_json::json!([null, 0, 0, 1]));
        assert_eq!(v["unallocated"], serde_json::json!([0]));
        assert_eq!(v["attributes"][1], serde_json::json!({"handle_id": "c9@eth0", "secondary": {"node": "worker-2"}}));
        assert_eq!(v["sequenceNumber"], 1764496800000000008u64);
        assert_eq!(v["sequenceNumberForAllocation"]["3"], 1764496800000000007u64);
        assert_eq!(v["affinityClaimTime"], "2026-11-30T10:00:00Z");
        // Releasing the pod's addresses drops its attribute and renumbers ours.
        assert_eq!(b.take(a("10.244.7.1")).as_deref(), Some("k8s-pod-network.5f1c"));
        assert_eq!(b.take(a("10.244.7.2")).as_deref(), Some("k8s-pod-network.5f1c"));
        assert_eq!(b.take(a("10.244.7.2")), None, "already free");
        let v: serde_json::Value = serde_json::to_value(&b).expect("json");
        assert_eq!(v["allocations"], serde_json::json!([null, null, null, 0]));
        assert_eq!(v["unallocated"], serde_json::json!([0, 1, 2]));
        assert_eq!(v["attributes"].as_array().map(Vec::len), Some(1));
        assert_eq!(b.holder(a("10.244.7.3")), Some("c9@eth0"));
        // An older Calico's `hostAffinity`, and a block whose arrays were cut short by hand.
        let old: Block = serde_json::from_str(
            r#"{"cidr":"10.244.8.0/30","hostAffinity":"worker-3","allocations":[null],"unallocated":null,"attributes":null}"#,
        )
        .expect("old block");
        assert_eq!(old.node(), "worker-3");
        assert!(
            old.is_free(a("10.244.8.0")) && !old.is_free(a("10.244.8.1")),
            "an address with no entry is not handed out"
        );
    }

    /// Replays the `ipam_blocks` fuzz corpus: the seeds and what the fuzzer kept.
    #[test]
    fn ipam_blocks_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/ipam_blocks");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            fuzz_block(&std::fs::read(e.path()).expect("corpus file"));
            n += 1;
        }
        assert!(n >= 4, "{n} files");
        let mut calicos = vec![0u8];
        calicos.extend_from_slice(CALICOS.as_bytes());
        fuzz_block(&calicos);
    }

    #[test]
    fn a_new_block_is_calicos_and_a_huge_one_is_refused() {
        let b = Block::new("10.244.1.0/26".parse::<Ipv4Net>().expect("net"), "node-a").expect("block");
        let v = serde_json::to_value(&b).expect("json");
        assert_eq!(v["affinity"], "host:node-a");
        assert_eq!(v["allocations"].as_array().map(Vec::len), Some(64));
        assert_eq!(v["unallocated"].as_array().map(Vec::len), Some(64));
        assert_eq!(v["attributes"], serde_json::json!([]));
        assert!(Block::new("10.0.0.0/8".parse::<Ipv4Net>().expect("net"), "node-a").is_err());
        let mut h = Handle::default();
        h.add(&b.cidr);
        h.add(&"fd00::/122".parse::<Ipv6Net>().expect("net"));
        h.add(&b.cidr);
        assert_eq!(
            serde_json::to_value(&h).expect("json"),
            serde_json::json!({"block": {"10.244.1.0/26": 2, "fd00::/122": 1}, "deleted": false})
        );
        assert_eq!(h.blocks::<Ipv6Net>().count(), 1);
        h.drop_one(&b.cidr);
        h.drop_one(&b.cidr);
        assert_eq!(h.blocks::<Ipv4Net>().count(), 0);
    }
}
