//! IPAM in etcd, in Calico's key layout: blocks of a pool claimed by nodes (an affinity),
//! addresses allocated from them, borrowing from other nodes' blocks when a node's are full
//! and the pool has no block left to claim. Every change is one etcd transaction that
//! checks the revisions it read, so two nodes racing for a block or an address never both
//! win; the loser reads again and tries the next.
//!
//! Keys: `/calico/ipam/v2/assignment/ipv4/block/<a.b.c.d-len>` (the block: its affinity and
//! allocations), `/calico/ipam/v2/host/<node>/ipv4/block/<a.b.c.d-len>` (the node's claim),
//! `/calico/ipam/v2/handle/<handle>` (which address a handle holds).

use crate::etcd::Etcd;
use anyhow::{bail, Context as _};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

const BLOCKS: &str = "/calico/ipam/v2/assignment/ipv4/block/";
const HOSTS: &str = "/calico/ipam/v2/host/";
const HANDLES: &str = "/calico/ipam/v2/handle/";
/// Conflicts a single operation rides out before it gives up (each is another writer's
/// success, so this is never reached in practice).
const RETRIES: usize = 64;

fn dashed(b: &Ipv4Net) -> String {
    format!("{}-{}", b.network(), b.prefix_len())
}

fn block_key(b: &Ipv4Net) -> String {
    format!("{BLOCKS}{}", dashed(b))
}

fn affinity_key(node: &str, b: &Ipv4Net) -> String {
    format!("{HOSTS}{node}/ipv4/block/{}", dashed(b))
}

fn handle_key(handle: &str) -> String {
    format!("{HANDLES}{handle}")
}

/// One block as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub cidr: Ipv4Net,
    /// `host:<node>`, as Calico writes it.
    pub affinity: String,
    /// Address → handle.
    #[serde(default)]
    pub allocations: BTreeMap<Ipv4Addr, String>,
}

impl Block {
    fn node(&self) -> &str {
        self.affinity.strip_prefix("host:").unwrap_or(&self.affinity)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Handle {
    address: Ipv4Addr,
    block: Ipv4Net,
    /// The node the address was given to (a borrowed one sits in another node's block).
    #[serde(default)]
    node: String,
}

/// An address handed out, and whether it was borrowed from another node's block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub address: Ipv4Addr,
    pub block: Ipv4Net,
    pub borrowed: bool,
}

#[derive(Debug, Clone)]
pub struct Ipam {
    pub etcd: Etcd,
}

impl Ipam {
    pub fn new(etcd: Etcd) -> Ipam {
        Ipam { etcd }
    }

    fn read_block(&self, b: &Ipv4Net) -> anyhow::Result<Option<(Block, i64)>> {
        match self.etcd.get(&block_key(b))? {
            Some(kv) => {
                let blk: Block = serde_json::from_slice(&kv.value).with_context(|| format!("block {b} is corrupt"))?;
                Ok(Some((blk, kv.mod_revision)))
            }
            None => Ok(None),
        }
    }

    /// Every block of every pool that exists, with its revision.
    pub fn blocks(&self) -> anyhow::Result<Vec<(Block, i64)>> {
        let (kvs, _) = self.etcd.list(BLOCKS)?;
        kvs.into_iter()
            .map(|kv| {
                let b: Block = serde_json::from_slice(&kv.value).with_context(|| format!("{} is corrupt", kv.key))?;
                Ok((b, kv.mod_revision))
            })
            .collect()
    }

    /// The blocks `node` holds, in address order.
    pub fn node_blocks(&self, node: &str) -> anyhow::Result<Vec<Ipv4Net>> {
        let mut v: Vec<Ipv4Net> =
            self.blocks()?.into_iter().filter(|(b, _)| b.node() == node).map(|(b, _)| b.cidr).collect();
        v.sort();
        Ok(v)
    }

    /// Claims `block` for `node` if no one holds it; whether `node` holds it now.
    pub fn claim(&self, node: &str, block: Ipv4Net) -> anyhow::Result<bool> {
        if let Some((b, _)) = self.read_block(&block)? {
            return Ok(b.node() == node);
        }
        let blk = Block { cidr: block, affinity: format!("host:{node}"), allocations: BTreeMap::new() };
        let (bk, ak) = (block_key(&block), affinity_key(node, &block));
        if self
            .etcd
            .put_all_if(&[(&bk, 0)], &[(&bk, &serde_json::to_vec(&blk)?), (&ak, br#"{"state":"confirmed"}"#)])?
        {
            return Ok(true);
        }
        Ok(self.read_block(&block)?.is_some_and(|(b, _)| b.node() == node))
    }

    /// The address `handle` holds, if any.
    pub fn find(&self, handle: &str) -> anyhow::Result<Option<Ipv4Addr>> {
        match self.etcd.get(&handle_key(handle))? {
            Some(kv) => Ok(Some(serde_json::from_slice::<Handle>(&kv.value).context("a corrupt handle")?.address)),
            None => Ok(None),
        }
    }

    /// The handles that hold addresses given to `node`.
    pub fn handles(&self, node: &str) -> anyhow::Result<Vec<String>> {
        let (kvs, _) = self.etcd.list(HANDLES)?;
        Ok(kvs
            .into_iter()
            .filter(|kv| serde_json::from_slice::<Handle>(&kv.value).is_ok_and(|h| h.node == node))
            .filter_map(|kv| kv.key.strip_prefix(HANDLES).map(str::to_string))
            .collect())
    }

    /// Records that `handle` holds `address` (a pod made before IPAM lived here), in the
    /// block `block`, which `node` must hold or gets.
    pub fn assign(&self, node: &str, handle: &str, address: Ipv4Addr, block: Ipv4Net) -> anyhow::Result<()> {
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
            let (bk, hk) = (block_key(&block), handle_key(handle));
            if self.etcd.put_all_if(&[(&bk, rev)], &[(&bk, &serde_json::to_vec(&b)?), (&hk, &h)])? {
                return Ok(());
            }
        }
        bail!("assigning {address} kept conflicting with other writers")
    }

    /// Claims the first free block of `pool` for `node`; None when every block is taken.
    pub fn claim_block(&self, node: &str, pool: Ipv4Net, block_len: u8) -> anyhow::Result<Option<Ipv4Net>> {
        let blocks = pool.subnets(block_len).with_context(|| format!("/{block_len} blocks of {pool}"))?;
        for b in blocks {
            if self.read_block(&b)?.is_some() {
                continue;
            }
            let blk = Block { cidr: b, affinity: format!("host:{node}"), allocations: BTreeMap::new() };
            let body = serde_json::to_vec(&blk)?;
            let (bk, ak) = (block_key(&b), affinity_key(node, &b));
            let confirmed = br#"{"state":"confirmed"}"#;
            // Exactly one claimer finds the key absent.
            if self.etcd.put_all_if(&[(&bk, 0)], &[(&bk, &body), (&ak, confirmed)])? {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// An address for `handle` on `node`: its blocks first, then a newly claimed block of
    /// `pool`, then one borrowed from another node's block. The same handle keeps its address.
    pub fn allocate(&self, node: &str, handle: &str, pool: Ipv4Net, block_len: u8) -> anyhow::Result<Assigned> {
        if let Some(kv) = self.etcd.get(&handle_key(handle))? {
            let h: Handle = serde_json::from_slice(&kv.value).context("a corrupt handle")?;
            let borrowed = self.read_block(&h.block)?.is_some_and(|(b, _)| b.node() != node);
            return Ok(Assigned { address: h.address, block: h.block, borrowed });
        }
        for _ in 0..RETRIES {
            let all = self.blocks()?;
            let mine = all.iter().filter(|(b, _)| b.node() == node && pool.contains(&b.cidr));
            let others = all.iter().filter(|(b, _)| b.node() != node && pool.contains(&b.cidr));
            // Own blocks, then (below) a new one, then others'.
            let try_in = |list: &mut dyn Iterator<Item = &(Block, i64)>| -> anyhow::Result<Option<Option<Assigned>>> {
                for (b, rev) in list {
                    let Some(a) = b.cidr.hosts().find(|a| !b.allocations.contains_key(a)) else { continue };
                    let mut next = b.clone();
                    next.allocations.insert(a, handle.to_string());
                    let h = serde_json::to_vec(&Handle { address: a, block: b.cidr, node: node.to_string() })?;
                    let (bk, hk) = (block_key(&b.cidr), handle_key(handle));
                    let ok = self
                        .etcd
                        .put_all_if(&[(&bk, *rev), (&hk, 0)], &[(&bk, &serde_json::to_vec(&next)?), (&hk, &h)])?;
                    // Lost a race: read everything again.
                    return Ok(Some(ok.then_some(Assigned { address: a, block: b.cidr, borrowed: b.node() != node })));
                }
                Ok(None)
            };
            match try_in(&mut mine.into_iter())? {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => {}
            }
            if self.claim_block(node, pool, block_len)?.is_some() {
                continue;
            }
            match try_in(&mut others.into_iter())? {
                Some(Some(a)) => return Ok(a),
                Some(None) => continue,
                None => bail!("no free address in {pool}: every block is claimed and full"),
            }
        }
        bail!("allocating for {handle} kept conflicting with other writers")
    }

    /// Frees what `handle` holds; the address, if it held one.
    pub fn release(&self, handle: &str) -> anyhow::Result<Option<Ipv4Addr>> {
        for _ in 0..RETRIES {
            let Some(kv) = self.etcd.get(&handle_key(handle))? else { return Ok(None) };
            let h: Handle = serde_json::from_slice(&kv.value).context("a corrupt handle")?;
            let hk = handle_key(handle);
            let Some((mut b, rev)) = self.read_block(&h.block)? else {
                self.etcd.txn(&[(&hk, kv.mod_revision)], &[], &[&hk])?;
                return Ok(Some(h.address));
            };
            // The address and the handle go together, or neither does.
            if b.allocations.get(&h.address).is_some_and(|x| x == handle) {
                b.allocations.remove(&h.address);
            }
            let bk = block_key(&b.cidr);
            if self.etcd.txn(&[(&bk, rev), (&hk, kv.mod_revision)], &[(&bk, &serde_json::to_vec(&b)?)], &[&hk])? {
                return Ok(Some(h.address));
            }
        }
        bail!("releasing {handle} kept conflicting with other writers")
    }
}
