//! `router ipam show | check | release`: which node holds which block, what is in use and
//! what is held for nothing, as `calicoctl ipam` shows it, from etcd or from an IPAM file
//! (a lab's, or a host's).

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;

/// Where the addresses are kept.
#[derive(Debug)]
pub enum Source {
    Etcd(datastore::Store),
    /// The file, and the pools with their block sizes where they are known (a lab's node
    /// configs say).
    File(PathBuf, Vec<(IpNet, u8)>),
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolUse {
    pub cidr: IpNet,
    pub block_size: u8,
    /// Addresses IPAM can hand out in it: its blocks' addresses but their first (and, for
    /// IPv4, last).
    pub total: u128,
    pub in_use: u128,
}

#[derive(Debug, Clone, Serialize)]
pub struct BlockUse {
    pub cidr: IpNet,
    pub node: String,
    pub total: u128,
    /// Address → handle.
    pub used: BTreeMap<IpAddr, String>,
    /// Handle → the node it was given to, where that is not the block's node (borrowed).
    pub lent: BTreeMap<String, String>,
    /// Handle → the Kubernetes pod it is (`namespace/pod`), where Calico's attributes say.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub pools: Vec<PoolUse>,
    pub blocks: Vec<BlockUse>,
    pub reserved: Vec<IpNet>,
}

/// The addresses IPAM hands out in a block of `len`.
fn hosts(v6: bool, len: u8) -> u128 {
    use datastore::ipam::Family;
    match v6 {
        false => Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, len.min(32)).map_or(0, |n| n.host_count()),
        true => Ipv6Net::new(std::net::Ipv6Addr::UNSPECIFIED, len.min(128)).map_or(0, |n| n.host_count()),
    }
}

fn pool_use(cidr: IpNet, block_size: u8, blocks: &[BlockUse]) -> PoolUse {
    let v6 = matches!(cidr, IpNet::V6(_));
    let count = 1u128 << (block_size.saturating_sub(cidr.prefix_len())).min(127);
    let in_use = blocks.iter().filter(|b| cidr.contains(&b.cidr)).map(|b| b.used.len() as u128).sum();
    PoolUse { cidr, block_size, total: count.saturating_mul(hosts(v6, block_size)), in_use }
}

impl Source {
    pub fn usage(&self) -> anyhow::Result<Usage> {
        match self {
            Source::Etcd(store) => {
                use datastore::resources::{Kind, Resource};
                let ipam = datastore::ipam::Ipam::new(store.etcd.clone());
                let mut blocks = etcd_blocks::<Ipv4Net>(&ipam)?;
                blocks.extend(etcd_blocks::<Ipv6Net>(&ipam)?);
                let mut pools = Vec::new();
                for r in store.get(Kind::IpPool, None)? {
                    let Resource::IpPool(p) = r else { continue };
                    let Ok(cidr) = p.spec.cidr.parse::<IpNet>() else { continue };
                    pools.push(pool_use(cidr.trunc(), p.spec.block_size_or_default(), &blocks));
                }
                Ok(Usage { pools, blocks, reserved: ipam.policy()?.reserved })
            }
            Source::File(path, known) => {
                let st = existing(path)?.with(|st| st.clone())?;
                let mut blocks = Vec::new();
                for (cidr, node) in &st.blocks {
                    let mine = st.allocations.iter().filter(|(a, _)| cidr.contains(*a));
                    blocks.push(block_use(IpNet::V4(*cidr), node, mine.map(|(a, x)| (IpAddr::V4(*a), x))));
                }
                for (cidr, node) in &st.blocks6 {
                    let mine = st.allocations6.iter().filter(|(a, _)| cidr.contains(*a));
                    blocks.push(block_use(IpNet::V6(*cidr), node, mine.map(|(a, x)| (IpAddr::V6(*a), x))));
                }
                let pools = known.iter().map(|(p, len)| pool_use(*p, *len, &blocks)).collect();
                Ok(Usage { pools, blocks, reserved: Vec::new() })
            }
        }
    }

    /// The addresses the workload endpoints in etcd have (`ipNetworks`); None for an IPAM
    /// file, which has no endpoints beside it.
    pub fn endpoint_addresses(&self) -> anyhow::Result<Option<BTreeSet<IpAddr>>> {
        let Source::Etcd(store) = self else { return Ok(None) };
        let eps = store.endpoints(None)?;
        let nets = eps.iter().flat_map(|(w, _)| &w.spec.ip_networks);
        Ok(Some(nets.filter_map(|n| n.split('/').next()?.parse().ok()).collect()))
    }

    /// Forgets a block that holds no address (its node is gone); whether it did.
    pub fn release_block(&self, block: IpNet) -> anyhow::Result<bool> {
        match self {
            Source::Etcd(store) => {
                let ipam = datastore::ipam::Ipam::new(store.etcd.clone());
                match block {
                    IpNet::V4(b) => ipam.release_block(b),
                    IpNet::V6(b) => ipam.release_block(b),
                }
            }
            Source::File(path, _) => existing(path)?.with(|st| match block {
                IpNet::V4(b) if !st.allocations.keys().any(|a| b.contains(a)) => st.blocks.remove(&b).is_some(),
                IpNet::V6(b) if !st.allocations6.keys().any(|a| b.contains(a)) => st.blocks6.remove(&b).is_some(),
                _ => false,
            }),
        }
    }

    /// Frees `ip`; the handle that held it.
    pub fn release(&self, ip: IpAddr) -> anyhow::Result<Option<String>> {
        match self {
            Source::Etcd(store) => {
                let ipam = datastore::ipam::Ipam::new(store.etcd.clone());
                match ip {
                    IpAddr::V4(a) => ipam.release_address::<Ipv4Net>(a),
                    IpAddr::V6(a) => ipam.release_address::<Ipv6Net>(a),
                }
            }
            Source::File(path, _) => existing(path)?.with(|st| {
                let handle = match ip {
                    IpAddr::V4(a) => st.allocations.remove(&a),
                    IpAddr::V6(a) => st.allocations6.remove(&a),
                };
                handle.map(|x| x.handle)
            }),
        }
    }
}

/// The IPAM file at `path`, which must be there: these commands never make one (or its
/// directory), as a plugin call does.
fn existing(path: &std::path::Path) -> anyhow::Result<cni::ipam::Ipam> {
    if !path.exists() {
        anyhow::bail!("no IPAM file at {}: no container has been given an address there", path.display());
    }
    Ok(cni::ipam::Ipam::new(path))
}

fn block_use<'a>(
    cidr: IpNet,
    node: &str,
    allocations: impl Iterator<Item = (IpAddr, &'a cni::ipam::Allocation)>,
) -> BlockUse {
    let mut b = BlockUse {
        cidr,
        node: node.to_string(),
        total: hosts(matches!(cidr, IpNet::V6(_)), cidr.prefix_len()),
        used: BTreeMap::new(),
        lent: BTreeMap::new(),
        pods: BTreeMap::new(),
    };
    for (a, x) in allocations {
        b.used.insert(a, x.handle.clone());
        if x.node != node {
            b.lent.insert(x.handle.clone(), x.node.clone());
        }
    }
    b
}

fn etcd_blocks<N>(ipam: &datastore::ipam::Ipam) -> anyhow::Result<Vec<BlockUse>>
where
    N: datastore::ipam::Family + Into<IpNet>,
    N::Addr: Into<IpAddr>,
{
    Ok(ipam
        .blocks::<N>()?
        .into_iter()
        .map(|(b, _)| {
            let cidr: IpNet = b.cidr.into();
            let node = b.node().to_string();
            let (mut lent, mut pods) = (BTreeMap::new(), BTreeMap::new());
            for (a, h) in b.used() {
                if let Some(to) = b.given_to(a).filter(|to| *to != node) {
                    lent.insert(h.to_string(), to.to_string());
                }
                if let Some(pod) = b.workload(a) {
                    pods.insert(h.to_string(), pod);
                }
            }
            BlockUse {
                cidr,
                total: hosts(matches!(cidr, IpNet::V6(_)), cidr.prefix_len()),
                used: b.used().map(|(a, h)| (a.into(), h.to_string())).collect(),
                lent,
                pods,
                node,
            }
        })
        .collect())
}

fn share(n: u128, total: u128) -> String {
    let pct = (n.saturating_mul(100) + total / 2).checked_div(total).unwrap_or(0);
    format!("{n} ({pct}%)")
}

/// An address a node was given from another node's block (its own was full).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Borrowed {
    pub ip: IpAddr,
    pub borrowing_node: String,
    pub block: IpNet,
    pub block_owner: String,
    /// The pod (`namespace/pod`) where Calico's attributes say, else the handle.
    pub allocated_to: String,
}

/// Every borrowed address, block by block.
pub fn borrowed(u: &Usage) -> Vec<Borrowed> {
    let mut out = Vec::new();
    for b in &u.blocks {
        for (ip, handle) in &b.used {
            let Some(to) = b.lent.get(handle) else { continue };
            out.push(Borrowed {
                ip: *ip,
                borrowing_node: to.clone(),
                block: b.cidr,
                block_owner: b.node.clone(),
                allocated_to: b.pods.get(handle).unwrap_or(handle).clone(),
            });
        }
    }
    out
}

/// `calicoctl ipam show --show-borrowed`'s table of [`borrowed`].
pub fn borrowed_table(list: &[Borrowed]) -> String {
    let mut rows = vec![["IP", "BORROWING NODE", "BLOCK", "BLOCK OWNER", "ALLOCATED TO"].map(String::from)];
    for x in list {
        rows.push([
            x.ip.to_string(),
            x.borrowing_node.clone(),
            x.block.to_string(),
            x.block_owner.clone(),
            x.allocated_to.clone(),
        ]);
    }
    if rows.len() == 1 {
        return "no borrowed addresses\n".into();
    }
    crate::calico::columns(&rows)
}

/// `calicoctl ipam show`'s table: the pools, and with `blocks` every block with its node and
/// the addresses it lent to other nodes.
pub fn table(u: &Usage, blocks: bool) -> String {
    let mut rows = vec![["GROUPING", "CIDR", "NODE", "IPS TOTAL", "IPS IN USE", "IPS FREE", "LENT"].map(String::from)];
    for p in &u.pools {
        rows.push([
            "IP Pool".into(),
            p.cidr.to_string(),
            "-".into(),
            p.total.to_string(),
            share(p.in_use, p.total),
            share(p.total - p.in_use.min(p.total), p.total),
            "-".into(),
        ]);
    }
    let pooled = |b: &BlockUse| u.pools.iter().any(|p| p.cidr.contains(&b.cidr));
    for b in u.blocks.iter().filter(|b| blocks || !pooled(b)) {
        let used = b.used.len() as u128;
        rows.push([
            "Block".into(),
            b.cidr.to_string(),
            if b.node.is_empty() { "-".into() } else { b.node.clone() },
            b.total.to_string(),
            share(used, b.total),
            share(b.total - used.min(b.total), b.total),
            b.lent.len().to_string(),
        ]);
    }
    let mut out = crate::calico::columns(&rows);
    if !u.reserved.is_empty() {
        let r: Vec<String> = u.reserved.iter().map(ToString::to_string).collect();
        out += &format!("reserved (IPReservation): {}\n", r.join(", "));
    }
    out
}

/// What one address is to IPAM.
#[derive(Debug, Clone, Serialize)]
pub struct AddressUse {
    pub ip: IpAddr,
    pub pool: Option<IpNet>,
    pub block: Option<IpNet>,
    pub block_node: Option<String>,
    pub handle: Option<String>,
    /// The node it was given to, where that is not the block's node.
    pub borrowed_by: Option<String>,
    /// The Kubernetes pod it is, `namespace/pod`, where Calico's attributes say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub reserved: bool,
}

impl Usage {
    pub fn address(&self, ip: IpAddr) -> AddressUse {
        let block = self.blocks.iter().find(|b| b.cidr.contains(&ip));
        let handle = block.and_then(|b| b.used.get(&ip)).cloned();
        AddressUse {
            ip,
            pool: self.pools.iter().find(|p| p.cidr.contains(&ip)).map(|p| p.cidr),
            block: block.map(|b| b.cidr),
            block_node: block.map(|b| b.node.clone()),
            borrowed_by: handle.as_ref().and_then(|h| block?.lent.get(h)).cloned(),
            pod: handle.as_ref().and_then(|h| block?.pods.get(h)).cloned(),
            handle,
            reserved: self.reserved.iter().any(|r| r.contains(&ip)),
        }
    }
}

impl AddressUse {
    /// One line, as `calicoctl ipam show --ip` answers.
    pub fn describe(&self) -> String {
        let ip = self.ip;
        let reserved = if self.reserved { "; reserved (IPReservation): never handed out unasked" } else { "" };
        let whose = match (&self.block, &self.block_node) {
            (Some(b), Some(n)) if n.is_empty() => format!("block {b} is no node's"),
            (Some(b), Some(n)) => format!("block {b} is {n}'s"),
            _ => String::new(),
        };
        match (&self.handle, &self.block, &self.pool) {
            (Some(h), _, _) => {
                let given = match &self.borrowed_by {
                    Some(n) => format!("given to {n}, borrowed: {whose}"),
                    None => whose,
                };
                let pod = self.pod.as_ref().map_or(String::new(), |p| format!(" (pod {p})"));
                format!("{ip} is in use by {h}{pod}; {given}{reserved}")
            }
            (None, Some(_), _) => format!("{ip} is free; {whose}{reserved}"),
            (None, None, Some(p)) => format!("{ip} is free: in pool {p}, in no block yet{reserved}"),
            (None, None, None) => format!("{ip} is in no pool or block that IPAM knows{reserved}"),
        }
    }

    pub fn known(&self) -> bool {
        self.pool.is_some() || self.block.is_some()
    }
}

/// What a check knows of the cluster's nodes: each by name, with its admin socket where it
/// can be asked which pods it serves (a lab's nodes).
pub type Nodes = BTreeMap<String, Option<PathBuf>>;

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// `leaked` (no node serves it), `orphaned` (given to a node that does not exist),
    /// `block` (a block affine to a node that does not exist), or `unallocated` (a pod uses
    /// it, and IPAM has not allocated it).
    pub kind: &'static str,
    pub cidr: IpNet,
    pub handle: Option<String>,
    pub node: String,
    /// Why, in words.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub addresses: usize,
    pub blocks: usize,
    pub findings: Vec<Finding>,
    /// Nodes whose pods could not be asked: their addresses were not checked.
    pub unasked: Vec<String>,
    /// Addresses in blocks no node holds whose attributes name no node: not checked.
    #[serde(skip_serializing_if = "is_zero")]
    pub unowned: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `calicoctl ipam check`: addresses held for pods that no node serves, or for nodes that
/// do not exist, and blocks of nodes that do not exist. `nodes`: None where the nodes are
/// not known (an IPAM file alone), then only the pods of nodes with sockets are asked.
/// `endpoints`: the addresses of the workload endpoints in etcd, which speak for the nodes
/// that cannot be asked, as they do for Calico's check (a node's own answer comes first).
pub fn check(u: &Usage, nodes: Option<&Nodes>, endpoints: Option<&BTreeSet<IpAddr>>) -> Check {
    let mut pods: BTreeMap<&str, Option<Vec<nodeapi::admin::PodStatus>>> = BTreeMap::new();
    for (name, socket) in nodes.into_iter().flatten() {
        let asked = socket.as_ref().and_then(|s| nodeapi::admin::Client::new(s).pods().ok());
        pods.insert(name, asked);
    }
    let exists = |n: &str| nodes.is_none_or(|ns| ns.contains_key(n));
    // A container's pod is known by its interface (its name is what the runtime called the
    // workload), a topology's pod by its name.
    let served = |handle: &str, ip: IpAddr| {
        let (key, by_interface) = match cni::handle_container(handle) {
            Some(_) => (cni::cali_name(handle), true),
            None => (cni::handle_pod(handle), false),
        };
        let is = |p: &nodeapi::admin::PodStatus| *if by_interface { &p.pod.interface } else { &p.pod.name } == key;
        pods.values()
            .flatten()
            .flatten()
            .any(|p| is(p) && (IpAddr::V4(p.pod.address) == ip || p.pod.address6.map(IpAddr::V6) == Some(ip)))
    };
    let mut findings = Vec::new();
    let mut unasked = std::collections::BTreeSet::new();
    let mut unowned = 0;
    for b in &u.blocks {
        // A block no node holds (Calico releases a gone node's affinity and keeps a block
        // that others' addresses still use) is no one's orphan.
        if !b.node.is_empty() && !exists(&b.node) {
            let reason = format!("affine to {}, which is not a node", b.node);
            findings.push(Finding { kind: "block", cidr: b.cidr, handle: None, node: b.node.clone(), reason });
        }
        for (ip, handle) in &b.used {
            let node = b.lent.get(handle).unwrap_or(&b.node).clone();
            let cidr = IpNet::from(*ip);
            let asked = matches!(pods.get(node.as_str()), Some(Some(_)));
            let finding =
                |kind, reason| Finding { kind, cidr, handle: Some(handle.clone()), node: node.clone(), reason };
            if node.is_empty() {
                // In a block no node holds, given to no node its attributes name: no node to
                // ask, only the endpoints.
                match endpoints {
                    Some(eps) if !eps.contains(ip) => findings.push(finding(
                        "leaked",
                        "in a block no node holds, and no workload endpoint has it".to_string(),
                    )),
                    Some(_) => {}
                    None => unowned += 1,
                }
            } else if !exists(&node) {
                findings.push(finding("orphaned", format!("given to {node}, which is not a node")));
            } else if asked {
                if !served(handle, *ip) {
                    let why = format!("given to {node}, and no node serves pod {}", cni::handle_pod(handle));
                    findings.push(finding("leaked", why));
                }
            } else if let Some(eps) = endpoints {
                if !eps.contains(ip) {
                    findings.push(finding("leaked", format!("given to {node}, and no workload endpoint has it")));
                }
            } else {
                unasked.insert(node);
            }
        }
    }
    // The other way round, as Calico's check looks: an address a pod uses (its node says so,
    // or a workload endpoint) inside a pool or block, that IPAM has not allocated. IPAM would
    // hand it to another pod.
    let allocated = |ip: &IpAddr| u.blocks.iter().any(|b| b.used.contains_key(ip));
    let ipam_knows =
        |ip: &IpAddr| u.pools.iter().any(|p| p.cidr.contains(ip)) || u.blocks.iter().any(|b| b.cidr.contains(ip));
    let mut in_use: BTreeMap<IpAddr, String> = BTreeMap::new();
    for (node, list) in &pods {
        for p in list.iter().flatten() {
            for ip in std::iter::once(IpAddr::V4(p.pod.address)).chain(p.pod.address6.map(IpAddr::V6)) {
                in_use.insert(ip, format!("pod {} on {node}", p.pod.name));
            }
        }
    }
    for ip in endpoints.into_iter().flatten() {
        in_use.entry(*ip).or_insert_with(|| "a workload endpoint".into());
    }
    for (ip, user) in in_use.into_iter().filter(|(ip, _)| ipam_knows(ip) && !allocated(ip)) {
        let reason = format!("in use by {user}, but IPAM has not allocated it: it may hand it to another pod");
        findings.push(Finding {
            kind: "unallocated",
            cidr: IpNet::from(ip),
            handle: None,
            node: String::new(),
            reason,
        });
    }
    Check {
        addresses: u.blocks.iter().map(|b| b.used.len()).sum(),
        blocks: u.blocks.len(),
        findings,
        unasked: unasked.into_iter().collect(),
        unowned,
    }
}

impl Check {
    pub fn report(&self) -> String {
        let mut out = format!("checked {} addresses in {} blocks\n", self.addresses, self.blocks);
        let rows: Vec<[String; 4]> = self
            .findings
            .iter()
            .map(|f| {
                let what = if f.kind == "block" { f.cidr.to_string() } else { f.cidr.addr().to_string() };
                [f.kind.to_string(), what, f.handle.clone().unwrap_or_else(|| "-".into()), f.reason.clone()]
            })
            .collect();
        out += &crate::calico::columns(&rows);
        if self.unowned > 0 {
            out +=
                &format!("not checked: {} addresses in blocks no node holds, given to no node named\n", self.unowned);
        }
        if !self.unasked.is_empty() {
            out += &format!("not checked: the addresses of {} (no admin socket answered)\n", self.unasked.join(", "));
        }
        let unallocated = self.findings.iter().filter(|f| f.kind == "unallocated").count();
        match self.findings.len() - unallocated {
            0 => out += "no leaked addresses\n",
            n => out += &format!("{n} found: `router ipam check --release` frees the addresses and empty blocks\n"),
        }
        if unallocated > 0 {
            out += &format!(
                "{unallocated} in use but not allocated: re-create those pods (IPAM then allocates their addresses)\n"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(handle: &str, node: &str) -> cni::ipam::Allocation {
        cni::ipam::Allocation { handle: handle.into(), node: node.into() }
    }

    #[test]
    fn usage_counts_what_ipam_hands_out_and_who_borrowed_it() {
        assert_eq!((hosts(false, 26), hosts(false, 32), hosts(true, 122), hosts(true, 128)), (62, 1, 63, 0));
        assert_eq!((hosts(false, 0), hosts(true, 0)), ((1 << 32) - 2, u128::MAX - 1), "no overflow");
        let (a, b) = (alloc("pod:a1", "node-a"), alloc("c9@eth0", "node-c"));
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let block = block_use(
            "10.244.1.0/26".parse().expect("net"),
            "node-a",
            [(ip("10.244.1.1"), &a), (ip("10.244.1.2"), &b)].into_iter(),
        );
        assert_eq!((block.total, block.used.len(), block.lent.len()), (62, 2, 1));
        let pool = pool_use("10.244.0.0/16".parse().expect("net"), 26, std::slice::from_ref(&block));
        assert_eq!((pool.total, pool.in_use), (1024 * 62, 2));
        let big = pool_use("fd00:10:244::/48".parse().expect("net"), 122, &[]);
        assert_eq!(big.total, (1u128 << 74) * 63);
        let u = Usage { pools: vec![pool], blocks: vec![block], reserved: vec!["10.244.1.9/32".parse().expect("net")] };
        let t = table(&u, true);
        assert!(t.contains("IP Pool    10.244.0.0/16") && t.contains("63488"), "{t}");
        assert!(t.lines().any(|l| l.starts_with("Block") && l.contains("node-a") && l.ends_with("1")), "{t}");
        assert!(!table(&u, false).contains("Block"), "blocks only when asked for");
        let lent = u.address(ip("10.244.1.2")).describe();
        assert_eq!(lent, "10.244.1.2 is in use by c9@eth0; given to node-c, borrowed: block 10.244.1.0/26 is node-a's");
        // --show-borrowed: only the lent address, by its pod where that is known.
        let b = borrowed(&u);
        assert_eq!(b.len(), 1, "{b:?}");
        assert_eq!(
            (b[0].ip, b[0].borrowing_node.as_str(), b[0].block_owner.as_str()),
            (ip("10.244.1.2"), "node-c", "node-a")
        );
        let t = borrowed_table(&b);
        let row: Vec<&str> = t.lines().nth(1).unwrap_or_default().split_whitespace().collect();
        assert_eq!(row, ["10.244.1.2", "node-c", "10.244.1.0/26", "node-a", "c9@eth0"], "{t}");
        assert_eq!(borrowed_table(&[]), "no borrowed addresses\n");
        let mut k8s = u.clone();
        k8s.blocks[0].pods.insert("c9@eth0".into(), "shop/cart-1".into());
        assert_eq!(borrowed(&k8s)[0].allocated_to, "shop/cart-1");
        k8s.blocks[0].pods.insert("pod:a1".into(), "shop/web-0".into());
        let said = k8s.address(ip("10.244.1.1")).describe();
        assert_eq!(said, "10.244.1.1 is in use by pod:a1 (pod shop/web-0); block 10.244.1.0/26 is node-a's");
        assert!(u
            .address(ip("10.244.1.9"))
            .describe()
            .starts_with("10.244.1.9 is free; block 10.244.1.0/26 is node-a's; reserved"));
        assert!(u.address(ip("10.244.7.1")).describe().contains("in no block yet"));
        assert!(!u.address(ip("10.9.0.1")).known());
        // A block no node holds: shown without one, no orphan, its address unchecked.
        let mut free = u.clone();
        free.blocks[0].node = String::new();
        free.blocks[0].lent.clear();
        assert!(
            table(&free, true).lines().any(|l| l.starts_with("Block") && l.contains(" - ")),
            "{}",
            table(&free, true)
        );
        assert!(free.address(ip("10.244.1.9")).describe().contains("block 10.244.1.0/26 is no node's"));
        let c = check(&free, Some(&BTreeMap::from([("node-a".to_string(), None)])), None);
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        assert_eq!((c.unasked.len(), c.unowned), (0, 2));
        assert!(c.report().contains("not checked: 2 addresses in blocks no node holds"), "{}", c.report());
        // On etcd the endpoints check them too.
        let nodes_a = BTreeMap::from([("node-a".to_string(), None)]);
        let c = check(&free, Some(&nodes_a), Some(&BTreeSet::from([ip("10.244.1.2")])));
        let found: Vec<_> = c.findings.iter().map(|f| (f.kind, f.cidr.to_string())).collect();
        assert_eq!((found, c.unowned), (vec![("leaked", "10.244.1.1/32".to_string())], 0));
        // A check that cannot ask node-a's pods says so instead of calling them leaked;
        // without node-c, c9's address is orphaned; without the nodes, nothing is.
        let nodes: Nodes = [("node-a".to_string(), None)].into();
        let c = check(&u, Some(&nodes), None);
        assert_eq!(c.unasked, ["node-a"]);
        let found: Vec<_> = c.findings.iter().map(|f| (f.kind, f.cidr.to_string())).collect();
        assert_eq!(found, [("orphaned", "10.244.1.2/32".to_string())]);
        // On etcd the workload endpoints speak for the nodes that cannot be asked.
        let c = check(&u, Some(&nodes), Some(&BTreeSet::from([ip("10.244.1.1")])));
        assert!(c.unasked.is_empty(), "{c:?}");
        let found: Vec<_> = c.findings.iter().map(|f| (f.kind, f.cidr.to_string())).collect();
        assert_eq!(found, [("orphaned", "10.244.1.2/32".to_string())]);
        let c = check(&u, Some(&nodes), Some(&BTreeSet::new()));
        let found: Vec<_> = c.findings.iter().map(|f| (f.kind, f.cidr.to_string())).collect();
        assert_eq!(found, [("leaked", "10.244.1.1/32".to_string()), ("orphaned", "10.244.1.2/32".to_string())]);
        assert!(c.report().contains("given to node-a, and no workload endpoint has it"), "{}", c.report());
        let c = check(&u, None, None);
        assert!(c.findings.is_empty() && c.unasked.len() == 2, "{c:?}");
        assert!(c.report().contains("not checked: the addresses of node-a, node-c"), "{}", c.report());
    }
}
