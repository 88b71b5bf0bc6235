//! IPAM in etcd, in Calico's key layout, for both families: blocks of a pool claimed by
//! nodes (an affinity), addresses allocated from them, borrowing from other nodes' blocks
//! when a node's are full and the pool has no block left to claim. Every change is one etcd
//! transaction that checks the revisions it read, so two nodes racing for a block or an
//! address never both win; the loser reads again and tries the next.
//!
//! Keys: `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-len>` (the block: its affinity and
//! allocations), `/calico/ipam/v2/host/<node>/ipv4/block/<a.b.c.d-len>` (the node's claim),
//! `/calico/ipam/v2/handle/<handle>` (which address a handle holds); `ipv6` and `handle6`
//! for IPv6, so that one handle (a container) holds an address of each family.

use crate::etcd::Etcd;
use anyhow::{bail, Context as _};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Conflicts a single operation rides out before it gives up (each is another writer's
/// success, so this is never reached in practice).
const RETRIES: usize = 64;

/// An address family's blocks as the IPAM handles them.
pub trait Family: Copy + Ord + std::fmt::Display + Serialize + DeserializeOwned {
    type Addr: Copy + Ord + std::fmt::Display + Serialize + DeserializeOwned;
    /// `ipv4` or `ipv6`, as in the keys.
    const NAME: &'static str;
    /// Where handles of this family live.
    const HANDLES: &'static str;
    /// `a.b.c.d-len`, as in the keys.
    fn dashed(&self) -> String {
        self.to_string().replacen('/', "-", 1)
    }
    /// The addresses handed out, in order: IPv4 without the network and broadcast
    /// addresses, IPv6 without the block's first (its subnet-router anycast address).
    fn hosts(&self) -> Box<dyn Iterator<Item = Self::Addr>>;
    fn covers(&self, other: &Self) -> bool;
    fn blocks_of(&self, len: u8) -> Option<Vec<Self>>;
    fn has(&self, a: Self::Addr) -> bool;
    /// The block of `len` that holds `a`.
    fn block_of(a: Self::Addr, len: u8) -> Option<Self>;
    fn ip(a: Self::Addr) -> IpAddr;
}

impl Family for Ipv4Net {
    type Addr = Ipv4Addr;
    const NAME: &'static str = "ipv4";
    const HANDLES: &'static str = "/calico/ipam/v2/handle/";
    fn hosts(&self) -> Box<dyn Iterator<Item = Ipv4Addr>> {
        Box::new(Ipv4Net::hosts(self))
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
}

impl Family for Ipv6Net {
    type Addr = Ipv6Addr;
    const NAME: &'static str = "ipv6";
    const HANDLES: &'static str = "/calico/ipam/v2/handle6/";
    fn hosts(&self) -> Box<dyn Iterator<Item = Ipv6Addr>> {
        Box::new(Ipv6Net::hosts(self).skip(1))
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
}

fn blocks_prefix<N: Family>() -> String {
    format!("/calico/ipam/v2/assignment/{}/block/", N::NAME)
}

fn block_key<N: Family>(b: &N) -> String {
    format!("{}{}", blocks_prefix::<N>(), b.dashed())
}

fn affinity_key<N: Family>(node: &str, b: &N) -> String {
    format!("/calico/ipam/v2/host/{node}/{}/block/{}", N::NAME, b.dashed())
}

fn handle_key<N: Family>(handle: &str) -> String {
    format!("{}{handle}", N::HANDLES)
}

/// One block as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound(deserialize = "N: Family"))]
pub struct Block<N: Family = Ipv4Net> {
    pub cidr: N,
    /// `host:<node>`, as Calico writes it.
    pub affinity: String,
    /// Address → handle.
    #[serde(default)]
    pub allocations: BTreeMap<N::Addr, String>,
}

impl<N: Family> Block<N> {
    pub fn node(&self) -> &str {
        self.affinity.strip_prefix("host:").unwrap_or(&self.affinity)
    }

    fn new(cidr: N, node: &str) -> Block<N> {
        Block { cidr, affinity: format!("host:{node}"), allocations: BTreeMap::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(deserialize = "N: Family"))]
struct Handle<N: Family> {
    address: N::Addr,
    block: N,
    /// The node the address was given to (a borrowed one sits in another node's block).
    #[serde(default)]
    node: String,
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
}

const CONFIRMED: &[u8] = br#"{"state":"confirmed"}"#;

impl Ipam {
    pub fn new(etcd: Etcd) -> Ipam {
        Ipam { etcd }
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

    fn read_handle<N: Family>(&self, handle: &str) -> anyhow::Result<Option<(Handle<N>, i64)>> {
        match self.etcd.get(&handle_key::<N>(handle))? {
            Some(kv) => Ok(Some((serde_json::from_slice(&kv.value).context("a corrupt handle")?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    /// The cluster's IPReservations and IPAMConfiguration, read now.
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
        }
        Ok(p)
    }

    /// Every block of the family that exists, with its revision.
    pub fn blocks<N: Family>(&self) -> anyhow::Result<Vec<(Block<N>, i64)>> {
        let (kvs, _) = self.etcd.list(&blocks_prefix::<N>())?;
        kvs.into_iter()
            .map(|kv| {
                let b = serde_json::from_slice(&kv.value).with_context(|| format!("{} is corrupt", kv.key))?;
                Ok((b, kv.mod_revision))
            })
            .collect()
    }

    /// The IPv4 blocks `node` holds, in address order.
    pub fn node_blocks(&self, node: &str) -> anyhow::Result<Vec<Ipv4Net>> {
        let mut v: Vec<Ipv4Net> =
            self.blocks::<Ipv4Net>()?.into_iter().filter(|(b, _)| b.node() == node).map(|(b, _)| b.cidr).collect();
        v.sort();
        Ok(v)
    }

    /// Claims `block` for `node` if no one holds it; whether `node` holds it now.
    pub fn claim<N: Family>(&self, node: &str, block: N) -> anyhow::Result<bool> {
        if let Some((b, _)) = self.read_block(&block)? {
            return Ok(b.node() == node);
        }
        if self.put_new_block(node, block)? {
            return Ok(true);
        }
        Ok(self.read_block(&block)?.is_some_and(|(b, _)| b.node() == node))
    }

    /// Writes `block` with `node`'s affinity if the key is absent: exactly one claimer wins.
    fn put_new_block<N: Family>(&self, node: &str, block: N) -> anyhow::Result<bool> {
        let body = serde_json::to_vec(&Block::new(block, node))?;
        let (bk, ak) = (block_key(&block), affinity_key(node, &block));
        self.etcd.put_all_if(&[(&bk, 0)], &[(&bk, &body), (&ak, CONFIRMED)])
    }

    /// The address `handle` holds in the family, if any.
    pub fn find<N: Family>(&self, handle: &str) -> anyhow::Result<Option<N::Addr>> {
        Ok(self.read_handle::<N>(handle)?.map(|(h, _)| h.address))
    }

    /// The handles that hold addresses given to `node`, of either family.
    pub fn handles(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let mut out = self.handles_of::<Ipv4Net>(node)?;
        out.extend(self.handles_of::<Ipv6Net>(node)?);
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every handle of the family, with the node its address was given to.
    pub fn handle_nodes<N: Family>(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let (kvs, _) = self.etcd.list(N::HANDLES)?;
        Ok(kvs
            .into_iter()
            .filter_map(|kv| {
                let h = serde_json::from_slice::<Handle<N>>(&kv.value).ok()?;
                Some((kv.key.strip_prefix(N::HANDLES)?.to_string(), h.node))
            })
            .collect())
    }

    /// Frees `address` whoever holds it (what a crash left behind): its block's entry and
    /// the handle that points at it, in one transaction. The handle that held it, if any.
    pub fn release_address<N: Family>(&self, address: N::Addr) -> anyhow::Result<Option<String>> {
        for _ in 0..RETRIES {
            let blocks = self.blocks::<N>()?;
            let Some((b, rev)) = blocks.into_iter().find(|(b, _)| b.cidr.has(address)) else { return Ok(None) };
            let Some(handle) = b.allocations.get(&address).cloned() else { return Ok(None) };
            let mut next = b.clone();
            next.allocations.remove(&address);
            let (bk, hk) = (block_key(&b.cidr), handle_key::<N>(&handle));
            let body = serde_json::to_vec(&next)?;
            let ok = match self.read_handle::<N>(&handle)? {
                Some((h, hrev)) if h.address == address => {
                    self.etcd.txn(&[(&bk, rev), (&hk, hrev)], &[(&bk, &body)], &[&hk])?
                }
                _ => self.etcd.txn(&[(&bk, rev)], &[(&bk, &body)], &[])?,
            };
            if ok {
                return Ok(Some(handle));
            }
        }
        bail!("releasing {address} kept conflicting with other writers")
    }

    /// Removes `block` and its node's claim if it holds no address (a block of a node that
    /// is gone); whether it did. One that holds addresses stays.
    pub fn release_block<N: Family>(&self, block: N) -> anyhow::Result<bool> {
        let Some((b, rev)) = self.read_block(&block)? else { return Ok(false) };
        if !b.allocations.is_empty() {
            return Ok(false);
        }
        let (bk, ak) = (block_key(&block), affinity_key(b.node(), &block));
        self.etcd.txn(&[(&bk, rev)], &[], &[&bk, &ak])
    }

    fn handles_of<N: Family>(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let (kvs, _) = self.etcd.list(N::HANDLES)?;
        Ok(kvs
            .into_iter()
            .filter(|kv| serde_json::from_slice::<Handle<N>>(&kv.value).is_ok_and(|h| h.node == node))
            .filter_map(|kv| kv.key.strip_prefix(N::HANDLES).map(str::to_string))
            .collect())
    }

    /// Records that `handle` holds `address` (a pod made before IPAM lived here), in the
    /// block `block`, which `node` must hold or gets.
    pub fn assign<N: Family>(&self, node: &str, handle: &str, address: N::Addr, block: N) -> anyhow::Result<()> {
        if !self.claim(node, block)? {
            bail!("block {block} belongs to another node");
        }
        for _ in 0..RETRIES {
            let (mut b, rev) = self.read_block(&block)?.context("the block vanished")?;
            match b.allocations.get(&address) {
                Some(h) if h == handle => return Ok(()),
                Some(h) => bail!("{address} is held by {h}"),
                None => {}
            }
            b.allocations.insert(address, handle.to_string());
            let h = serde_json::to_vec(&Handle { address, block, node: node.to_string() })?;
            let (bk, hk) = (block_key(&block), handle_key::<N>(handle));
            if self.etcd.put_all_if(&[(&bk, rev)], &[(&bk, &serde_json::to_vec(&b)?), (&hk, &h)])? {
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
        handle: &str,
        blocks: impl IntoIterator<Item = &'a (Block<N>, i64)>,
        policy: &Policy,
    ) -> anyhow::Result<Option<Option<Assigned<N>>>> {
        for (b, rev) in blocks {
            let free = |a: &N::Addr| !b.allocations.contains_key(a) && !policy.reserves(N::ip(*a));
            let Some(a) = b.cidr.hosts().find(free) else { continue };
            let mut next = b.clone();
            next.allocations.insert(a, handle.to_string());
            let h = serde_json::to_vec(&Handle { address: a, block: b.cidr, node: node.to_string() })?;
            let (bk, hk) = (block_key(&b.cidr), handle_key::<N>(handle));
            let ok =
                self.etcd.put_all_if(&[(&bk, *rev), (&hk, 0)], &[(&bk, &serde_json::to_vec(&next)?), (&hk, &h)])?;
            return Ok(Some(ok.then_some(Assigned { address: a, block: b.cidr, borrowed: b.node() != node })));
        }
        Ok(None)
    }

    /// The address `handle` already holds, as an assignment for `node`.
    fn held<N: Family>(&self, node: &str, handle: &str) -> anyhow::Result<Option<Assigned<N>>> {
        let Some((h, _)) = self.read_handle::<N>(handle)? else { return Ok(None) };
        let borrowed = self.read_block(&h.block)?.is_some_and(|(b, _)| b.node() != node);
        Ok(Some(Assigned { address: h.address, block: h.block, borrowed }))
    }

    /// An address for `handle` on `node`: its blocks first, then a newly claimed block of
    /// `pool`, then one borrowed from another node's block, never a reserved one; the
    /// cluster's IPAM configuration may forbid the last two. The same handle keeps its
    /// address.
    pub fn allocate<N: Family>(&self, node: &str, handle: &str, pool: N, block_len: u8) -> anyhow::Result<Assigned<N>> {
        if let Some(a) = self.held(node, handle)? {
            return Ok(a);
        }
        let policy = self.policy()?;
        for _ in 0..RETRIES {
            let all = self.blocks::<N>()?;
            let held = all.iter().filter(|(b, _)| b.node() == node).count();
            let mine = all.iter().filter(|(b, _)| b.node() == node && pool.covers(&b.cidr));
            let others = all.iter().filter(|(b, _)| b.node() != node && pool.covers(&b.cidr));
            // Own blocks, then (below) a new one, then others'.
            match self.take_first(node, handle, mine, &policy)? {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => {}
            }
            if policy.auto_allocate_blocks
                && policy.may_hold_more(held)
                && self.claim_block(node, pool, block_len)?.is_some()
            {
                continue;
            }
            let borrowed = match policy.strict_affinity {
                true => None,
                false => self.take_first(node, handle, others, &policy)?,
            };
            match borrowed {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => bail!(policy.why_none(node, &pool, held)),
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
        if let Some(a) = self.held(node, handle)? {
            if a.address == address {
                return Ok(a);
            }
            bail!("{handle} holds {} already, not {address}", a.address);
        }
        let Some(&(pool, len)) = pools.iter().find(|(p, _)| p.has(address)) else {
            bail!("{address} is in no enabled IPPool for this node's workloads");
        };
        let block = N::block_of(address, len).with_context(|| format!("/{len} blocks of {pool}"))?;
        if !block.hosts().any(|a| a == address) {
            bail!("{address} is not handed out: it is the first or last address of block {block}");
        }
        let policy = self.policy()?;
        for _ in 0..RETRIES {
            let Some((b, rev)) = self.read_block(&block)? else {
                let held = self.blocks::<N>()?.iter().filter(|(b, _)| b.node() == node).count();
                if !policy.may_hold_more(held) {
                    bail!("{address} is in block {block}, which node {node} may not claim: it holds maxBlocksPerHost ({held}) blocks");
                }
                // Won or lost, the block is read again.
                self.put_new_block(node, block)?;
                continue;
            };
            if let Some(h) = b.allocations.get(&address) {
                bail!("{address} is in use (by {h})");
            }
            if policy.strict_affinity && b.node() != node {
                bail!("{address} is in block {block} of node {}, and strictAffinity forbids borrowing", b.node());
            }
            let mut next = b.clone();
            next.allocations.insert(address, handle.to_string());
            let h = serde_json::to_vec(&Handle { address, block, node: node.to_string() })?;
            let (bk, hk) = (block_key(&block), handle_key::<N>(handle));
            if self.etcd.put_all_if(&[(&bk, rev), (&hk, 0)], &[(&bk, &serde_json::to_vec(&next)?), (&hk, &h)])? {
                return Ok(Assigned { address, block, borrowed: b.node() != node });
            }
        }
        bail!("assigning {address} kept conflicting with other writers")
    }

    /// An address for `handle` from `node`'s own `blocks` only (claimed for it here if no
    /// one holds them): never a new block, never borrowed. The node announces exactly these
    /// blocks (its IPv6 ones come from its configuration). The same handle keeps its address.
    pub fn allocate_in<N: Family>(&self, node: &str, handle: &str, blocks: &[N]) -> anyhow::Result<Assigned<N>> {
        if let Some(a) = self.held(node, handle)? {
            return Ok(a);
        }
        self.claim_own(node, blocks)?;
        let policy = self.policy()?;
        for _ in 0..RETRIES {
            let mut mine = Vec::with_capacity(blocks.len());
            for b in blocks {
                mine.push(self.read_block(b)?.context("a claimed block vanished")?);
            }
            match self.take_first(node, handle, &mine, &policy)? {
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
        let hk = handle_key::<N>(handle);
        for _ in 0..RETRIES {
            let Some((h, hrev)) = self.read_handle::<N>(handle)? else { return Ok(None) };
            let Some((mut b, rev)) = self.read_block(&h.block)? else {
                self.etcd.txn(&[(&hk, hrev)], &[], &[&hk])?;
                return Ok(Some(h.address));
            };
            // The address and the handle go together, or neither does.
            if b.allocations.get(&h.address).is_some_and(|x| x == handle) {
                b.allocations.remove(&h.address);
            }
            let bk = block_key(&b.cidr);
            if self.etcd.txn(&[(&bk, rev), (&hk, hrev)], &[(&bk, &serde_json::to_vec(&b)?)], &[&hk])? {
                return Ok(Some(h.address));
            }
        }
        bail!("releasing {handle} kept conflicting with other writers")
    }

    /// Frees what `handle` holds in both families; its IPv4 address, if it held one.
    pub fn release_all(&self, handle: &str) -> anyhow::Result<Option<Ipv4Addr>> {
        self.release::<Ipv6Net>(handle)?;
        self.release::<Ipv4Net>(handle)
    }
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
        assert_eq!(handle_key::<Ipv6Net>("c1/eth0"), "/calico/ipam/v2/handle6/c1/eth0");
        assert_eq!(Family::hosts(&b4).next(), Some("10.244.1.1".parse().expect("ip")));
        assert_eq!(Family::hosts(&b4).count(), 62);
        assert_eq!(Family::hosts(&b6).next(), Some("fd00:10:244::41".parse().expect("ip")));
        assert_eq!(Family::hosts(&b6).count(), 63);
        // A block stored by an earlier version (IPv4 only) reads the same.
        let old = r#"{"cidr":"10.244.1.0/26","affinity":"host:node-a","allocations":{"10.244.1.1":"pod:a1"}}"#;
        let b: Block = serde_json::from_str(old).expect("block");
        assert_eq!((b.node(), b.allocations.len()), ("node-a", 1));
        let pool6: Ipv6Net = "fd00:10:244::/48".parse().expect("net");
        assert_eq!(pool6.blocks_of(122).map(|v| v.len()), Some(1 << 16), "walked, not listed whole");
    }
}
