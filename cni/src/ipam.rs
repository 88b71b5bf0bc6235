//! IPAM as Calico's, in one JSON file that every plugin call on the machine (and, in the
//! lab, every node) shares: blocks with an affinity to a node, and one allocation per
//! address. A call takes an exclusive `flock` on `<file>.lock` for its whole
//! read-modify-write, so two ADDs at the same time never get the same address; the file is
//! replaced by rename, so a crash never leaves half of it.

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Who holds it: `<container id>/<ifname>` for a container, `pod:<name>` for a pod of
    /// the lab's topology.
    pub handle: String,
    pub node: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Block → the node it is affine to.
    pub blocks: BTreeMap<Ipv4Net, String>,
    pub allocations: BTreeMap<Ipv4Addr, Allocation>,
    /// Dual stack: the IPv6 blocks and addresses, alike.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocks6: BTreeMap<Ipv6Net, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocations6: BTreeMap<Ipv6Addr, Allocation>,
}

/// An address handed out, and whether it was borrowed from another node's block (the node
/// then announces it as a /32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub address: Ipv4Addr,
    pub borrowed: bool,
}

impl State {
    /// The address `handle` holds, if any.
    pub fn find(&self, handle: &str) -> Option<Ipv4Addr> {
        self.allocations.iter().find(|(_, a)| a.handle == handle).map(|(ip, _)| *ip)
    }

    fn take_in(&mut self, block: Ipv4Net, handle: &str, node: &str) -> Option<Ipv4Addr> {
        let a = block.hosts().find(|a| !self.allocations.contains_key(a))?;
        self.allocations.insert(a, Allocation { handle: handle.to_string(), node: node.to_string() });
        Some(a)
    }

    /// The next free address of `node`'s blocks; with those full, of another node's block
    /// (the first with room, in address order), as Calico borrows. The same handle gets
    /// the address it already holds.
    pub fn allocate(&mut self, node: &str, handle: &str) -> Result<Assigned, String> {
        self.allocate_within(node, handle, &[])
    }

    /// [`State::allocate`] from the blocks inside `within` only (none: every block).
    pub fn allocate_within(&mut self, node: &str, handle: &str, within: &[Ipv4Net]) -> Result<Assigned, String> {
        let inside = |b: &Ipv4Net| within.is_empty() || within.iter().any(|w| w.contains(b));
        let mine: Vec<Ipv4Net> = self.blocks.iter().filter(|(b, n)| *n == node && inside(b)).map(|(b, _)| *b).collect();
        let borrowed = |a: Ipv4Addr| !mine.iter().any(|b| b.contains(&a));
        if let Some(a) = self.find(handle) {
            return Ok(Assigned { address: a, borrowed: borrowed(a) });
        }
        if mine.is_empty() {
            return Err(format!("node {node} has no block in the IPAM state{}", in_pools(within)));
        }
        for b in &mine {
            if let Some(a) = self.take_in(*b, handle, node) {
                return Ok(Assigned { address: a, borrowed: false });
            }
        }
        let others: Vec<Ipv4Net> =
            self.blocks.iter().filter(|(b, n)| *n != node && inside(b)).map(|(b, _)| *b).collect();
        for b in others {
            if let Some(a) = self.take_in(b, handle, node) {
                return Ok(Assigned { address: a, borrowed: true });
            }
        }
        Err(format!("no free address{}: node {node}'s blocks and every other block are full", in_pools(within)))
    }

    /// `address` for `handle`, as the runtime asked for it: free, and not a block's first
    /// or last address, in a block of the state; in another node's block it is borrowed.
    /// The same handle keeps its address.
    pub fn request(&mut self, node: &str, handle: &str, address: Ipv4Addr) -> Result<Assigned, String> {
        let Some((block, owner)) = self.blocks.iter().find(|(b, _)| b.contains(&address)) else {
            return Err(format!("{address} is in none of the blocks this IPAM file holds"));
        };
        let assigned = Assigned { address, borrowed: owner != node };
        match self.find(handle) {
            Some(a) if a == address => return Ok(assigned),
            Some(a) => return Err(format!("{handle} holds {a} already, not {address}")),
            None => {}
        }
        if !block.hosts().any(|a| a == address) {
            return Err(format!("{address} is not handed out: it is the first or last address of block {block}"));
        }
        if let Some(a) = self.allocations.get(&address) {
            return Err(format!("{address} is in use (by {})", a.handle));
        }
        self.allocations.insert(address, Allocation { handle: handle.to_string(), node: node.to_string() });
        Ok(assigned)
    }

    /// [`State::request`], where an address inside `pool` but in no block claims the block
    /// of `len` bits around it for `node` first, as Calico's IPAM does (and the etcd one
    /// here): the node then announces the address as a /32, its config naming other blocks.
    pub fn request_in_pool(
        &mut self,
        node: &str,
        handle: &str,
        address: Ipv4Addr,
        pool: Option<Ipv4Net>,
        len: u8,
    ) -> Result<Assigned, String> {
        if self.blocks.keys().any(|b| b.contains(&address)) {
            return self.request(node, handle, address);
        }
        let Some(pool) = pool.filter(|p| p.contains(&address)) else {
            return Err(match pool {
                Some(p) => format!("{address} is outside the pool {p}"),
                None => format!("{address} is in none of the blocks this IPAM file holds"),
            });
        };
        let block = Ipv4Net::new(address, len).map_err(|e| format!("/{len} blocks of {pool}: {e}"))?.trunc();
        if !pool.contains(&block) || !self.unclaimed(&block) {
            return Err(format!(
                "{address} is in no block, and block {block} does not fit in pool {pool} beside the others"
            ));
        }
        // Claimed for the request's checks, and given back if it is refused.
        self.blocks.insert(block, node.to_string());
        let r = self.request(node, handle, address);
        if r.is_err() {
            self.blocks.remove(&block);
        }
        r
    }

    /// The IPv6 `address` for `handle`, as asked: free, in one of `node`'s IPv6 blocks (as
    /// for [`State::allocate6`], never borrowed), not a block's first address.
    pub fn request6(&mut self, node: &str, handle: &str, address: Ipv6Addr) -> Result<Ipv6Addr, String> {
        match self.find6(handle) {
            Some(a) if a == address => return Ok(a),
            Some(a) => return Err(format!("{handle} holds {a} already, not {address}")),
            None => {}
        }
        let Some(block) = self.blocks6.iter().find(|(b, n)| *n == node && b.contains(&address)).map(|(b, _)| b) else {
            return Err(format!("{address} is in none of node {node}'s IPv6 blocks"));
        };
        if address == block.network() {
            return Err(format!("{address} is not handed out: it is the first address of block {block}"));
        }
        if let Some(a) = self.allocations6.get(&address) {
            return Err(format!("{address} is in use (by {})", a.handle));
        }
        self.allocations6.insert(address, Allocation { handle: handle.to_string(), node: node.to_string() });
        Ok(address)
    }

    /// The IPv6 address `handle` holds, if any.
    pub fn find6(&self, handle: &str) -> Option<Ipv6Addr> {
        self.allocations6.iter().find(|(_, a)| a.handle == handle).map(|(ip, _)| *ip)
    }

    /// The next free IPv6 address of `node`'s IPv6 blocks, from the block's first host (the
    /// same handle keeps its address). A /122 holds 64 addresses and a node claims as many
    /// blocks as it is given; a full one is an error, not a reason to borrow.
    pub fn allocate6(&mut self, node: &str, handle: &str) -> Result<Ipv6Addr, String> {
        self.allocate6_within(node, handle, &[])
    }

    /// [`State::allocate6`] from the blocks inside `within` only (none: every block).
    pub fn allocate6_within(&mut self, node: &str, handle: &str, within: &[Ipv6Net]) -> Result<Ipv6Addr, String> {
        if let Some(a) = self.find6(handle) {
            return Ok(a);
        }
        let inside = |b: &Ipv6Net| within.is_empty() || within.iter().any(|w| w.contains(b));
        let mine: Vec<Ipv6Net> =
            self.blocks6.iter().filter(|(b, n)| *n == node && inside(b)).map(|(b, _)| *b).collect();
        if mine.is_empty() {
            return Err(format!("node {node} has no IPv6 block in the IPAM state{}", in_pools(within)));
        }
        for b in &mine {
            // The addresses etcd's IPAM hands out too: all but the block's first.
            let free = datastore::ipam::Family::hosts(b).find(|a| !self.allocations6.contains_key(a));
            if let Some(a) = free {
                self.allocations6.insert(a, Allocation { handle: handle.to_string(), node: node.to_string() });
                return Ok(a);
            }
        }
        Err(format!("no free IPv6 address: node {node}'s IPv6 blocks are full"))
    }

    /// Claims for `node` the first block of `len` bits in `pool` (inside `within`, if any)
    /// that overlaps no block of the state, as Calico's IPAM does for a node whose blocks
    /// are full.
    pub fn claim_block(&mut self, node: &str, pool: Ipv4Net, len: u8, within: &[Ipv4Net]) -> Option<Ipv4Net> {
        let free = |b: &Ipv4Net| (within.is_empty() || within.iter().any(|w| w.contains(b))) && self.unclaimed(b);
        let b = pool.subnets(len).ok()?.find(free)?;
        self.blocks.insert(b, node.to_string());
        Some(b)
    }

    /// Whether `b` overlaps no block of the state, either way round (blocks of another size
    /// may sit inside it).
    fn unclaimed(&self, b: &Ipv4Net) -> bool {
        !self.blocks.keys().any(|x| x.contains(b) || b.contains(x))
    }

    /// Frees what `handle` holds (IPv4 and IPv6); its IPv4 address, if it held one.
    pub fn release(&mut self, handle: &str) -> Option<Ipv4Addr> {
        if let Some(a6) = self.find6(handle) {
            self.allocations6.remove(&a6);
        }
        let a = self.find(handle)?;
        self.allocations.remove(&a);
        Some(a)
    }
}

/// ` in <pools>` where allocation was limited to some.
fn in_pools<N: std::fmt::Display>(within: &[N]) -> String {
    match within {
        [] => String::new(),
        w => format!(" in {}", w.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")),
    }
}

/// The shared IPAM file.
#[derive(Debug, Clone)]
pub struct Ipam {
    pub path: PathBuf,
}

impl Ipam {
    pub fn new(path: impl Into<PathBuf>) -> Ipam {
        Ipam { path: path.into() }
    }

    fn lock_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        PathBuf::from(p)
    }

    /// Runs `f` on the state under the lock and writes back what it left (only if it
    /// changed anything).
    pub fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> anyhow::Result<R> {
        use anyhow::Context as _;
        if let Some(dir) = self.path.parent() {
            nodeapi::private::dir_if_missing(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.lock_path())
            .with_context(|| format!("opening {}", self.lock_path().display()))?;
        let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .with_context(|| format!("locking {}", self.lock_path().display()))?;
        let before = read(&self.path)?;
        let mut st = before.clone();
        let r = f(&mut st);
        if st != before {
            let tmp = self.path.with_extension("tmp");
            nodeapi::private::write(&tmp, serde_json::to_string_pretty(&st)?.as_bytes())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &self.path).with_context(|| format!("writing {}", self.path.display()))?;
        }
        Ok(r)
    }
}

fn read(path: &Path) -> anyhow::Result<State> {
    use anyhow::Context as _;
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t).with_context(|| format!("{} is not an IPAM state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_nodes(block_len: u8) -> State {
        let mut st = State::default();
        st.blocks.insert(format!("10.244.1.0/{block_len}").parse().expect("net"), "a".into());
        st.blocks.insert(format!("10.244.2.0/{block_len}").parse().expect("net"), "b".into());
        st
    }

    #[test]
    fn a_new_block_is_the_first_of_the_pool_that_overlaps_none() {
        let mut st = two_nodes(30);
        st.blocks.insert("10.244.0.0/30".parse().expect("net"), "b".into());
        let pool: Ipv4Net = "10.244.0.0/16".parse().expect("net");
        assert_eq!(st.claim_block("a", pool, 30, &[]), Some("10.244.0.4/30".parse().expect("net")));
        assert_eq!(st.blocks.get(&"10.244.0.4/30".parse().expect("net")).map(String::as_str), Some("a"));
        let a = st.allocate("a", "c1@eth0").expect("in a's blocks");
        assert_eq!(a.address, "10.244.0.5".parse::<Ipv4Addr>().expect("ip"), "the lowest of a's blocks first");
        // A /26 may not cover a /30 another node holds.
        assert_eq!(st.claim_block("a", pool, 26, &[]), Some("10.244.0.64/26".parse().expect("net")));
        let within: Ipv4Net = "10.244.9.0/24".parse().expect("net");
        assert_eq!(st.claim_block("a", pool, 26, &[within]), Some("10.244.9.0/26".parse().expect("net")));
        let full: Ipv4Net = "10.244.1.0/30".parse().expect("net");
        assert_eq!(st.claim_block("a", full, 30, &[]), None, "a pool with no free block");
    }

    #[test]
    fn addresses_come_from_the_nodes_block_then_are_borrowed_then_run_out() {
        let mut st = two_nodes(30);
        let a1 = st.allocate("a", "c1@eth0").expect("first");
        assert_eq!(a1, Assigned { address: "10.244.1.1".parse().expect("ip"), borrowed: false });
        assert_eq!(st.allocate("a", "c1@eth0").expect("again"), a1, "the same handle keeps its address");
        let a2 = st.allocate("a", "c2@eth0").expect("second");
        assert_eq!(a2.address, "10.244.1.2".parse::<Ipv4Addr>().expect("ip"));
        let a3 = st.allocate("a", "c3@eth0").expect("borrowed");
        assert_eq!(a3, Assigned { address: "10.244.2.1".parse().expect("ip"), borrowed: true });
        st.allocate("b", "d1@eth0").expect("b's own");
        let e = st.allocate("a", "c4@eth0").expect_err("full");
        assert!(e.contains("full"), "{e}");
        assert_eq!(st.release("c2@eth0"), Some("10.244.1.2".parse().expect("ip")));
        assert_eq!(st.release("c2@eth0"), None);
        assert_eq!(st.allocate("a", "c4@eth0").expect("freed").address, "10.244.1.2".parse::<Ipv4Addr>().expect("ip"));
        assert!(st.allocate("z", "x@eth0").is_err(), "a node without a block");
    }

    #[test]
    fn ipv6_addresses_come_from_the_nodes_ipv6_block_and_go_with_the_handle() {
        let mut st = two_nodes(26);
        st.blocks6.insert("fd00:10:244::/126".parse().expect("net"), "a".into());
        let ip6 = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        assert_eq!(st.allocate6("a", "c1@eth0"), Ok(ip6("fd00:10:244::1")));
        assert_eq!(st.allocate6("a", "c1@eth0"), Ok(ip6("fd00:10:244::1")), "the same handle keeps it");
        assert_eq!(st.allocate6("a", "c2@eth0"), Ok(ip6("fd00:10:244::2")));
        assert_eq!(st.allocate6("a", "c3@eth0"), Ok(ip6("fd00:10:244::3")));
        assert!(st.allocate6("a", "c4@eth0").expect_err("full").contains("full"));
        assert!(st.allocate6("b", "d1@eth0").expect_err("none").contains("no IPv6 block"));
        st.allocate("a", "c2@eth0").expect("v4");
        st.release("c2@eth0");
        assert_eq!(st.find6("c2@eth0"), None, "released with the IPv4 one");
        assert_eq!(st.allocate6("a", "c4@eth0"), Ok(ip6("fd00:10:244::2")));
        // An IPv4-only state reads and writes as before.
        let json = serde_json::to_string(&two_nodes(26)).expect("json");
        assert!(!json.contains("blocks6"), "{json}");
    }

    #[test]
    fn a_requested_address_is_taken_where_it_is_free_and_borrowed_from_another_block() {
        let mut st = two_nodes(29);
        st.blocks6.insert("fd00:10:244::/122".parse().expect("net"), "a".into());
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        assert_eq!(
            st.request("a", "c1@eth0", ip("10.244.1.5")),
            Ok(Assigned { address: ip("10.244.1.5"), borrowed: false })
        );
        assert_eq!(st.request("a", "c1@eth0", ip("10.244.1.5")).map(|a| a.address), Ok(ip("10.244.1.5")), "again");
        let e = st.request("a", "c1@eth0", ip("10.244.1.6")).expect_err("one per handle");
        assert!(e.contains("holds 10.244.1.5 already"), "{e}");
        let e = st.request("b", "d1@eth0", ip("10.244.1.5")).expect_err("taken");
        assert!(e.contains("in use (by c1@eth0)"), "{e}");
        assert_eq!(
            st.request("a", "c2@eth0", ip("10.244.2.3")),
            Ok(Assigned { address: ip("10.244.2.3"), borrowed: true })
        );
        for (bad, says) in
            [("10.244.1.0", "first or last"), ("10.244.1.7", "first or last"), ("10.9.0.1", "none of the blocks")]
        {
            let e = st.request("a", "c3@eth0", ip(bad)).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Automatic assignment goes around what was asked for.
        assert_eq!(st.allocate("a", "c3@eth0").map(|a| a.address), Ok(ip("10.244.1.1")));
        // Inside the pool but in no block: the block around it becomes the node's, as
        // Calico's IPAM does; nothing is claimed for a request that fails.
        let pool = Some("10.244.0.0/16".parse::<Ipv4Net>().expect("net"));
        let blocks = st.blocks.len();
        for (bad, says) in [("10.244.9.8", "first or last"), ("10.99.0.1", "outside the pool 10.244.0.0/16")] {
            let e = st.request_in_pool("a", "c4@eth0", ip(bad), pool, 29).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = st.request_in_pool("a", "c3@eth0", ip("10.244.9.9"), pool, 29).expect_err("holds one");
        assert!(e.contains("holds 10.244.1.1 already"), "{e}");
        assert_eq!(st.blocks.len(), blocks, "no block claimed for a refused request");
        assert_eq!(
            st.request_in_pool("a", "c4@eth0", ip("10.244.9.9"), pool, 29),
            Ok(Assigned { address: ip("10.244.9.9"), borrowed: false })
        );
        assert_eq!(st.blocks.get(&"10.244.9.8/29".parse().expect("net")).map(String::as_str), Some("a"));
        // A /26 around the address would cover another node's /29 (blocks of another size).
        st.blocks.insert("10.244.20.8/29".parse().expect("net"), "b".into());
        let e = st.request_in_pool("a", "c5@eth0", ip("10.244.20.33"), pool, 26).expect_err("covers b's /29");
        assert!(e.contains("block 10.244.20.0/26 does not fit"), "{e}");
        let e = st.request_in_pool("a", "c5@eth0", ip("10.244.7.9"), None, 29).expect_err("no pool known");
        assert!(e.contains("none of the blocks"), "{e}");
        let ip6 = |s: &str| s.parse::<Ipv6Addr>().expect("ip");
        assert_eq!(st.request6("a", "c1@eth0", ip6("fd00:10:244::9")), Ok(ip6("fd00:10:244::9")));
        assert!(st.request6("b", "d1@eth0", ip6("fd00:10:244::a")).expect_err("not b's").contains("none of node b's"));
        assert!(st.request6("a", "c2@eth0", ip6("fd00:10:244::")).expect_err("first").contains("first address"));
        assert_eq!(st.release("c1@eth0"), Some(ip("10.244.1.5")));
        assert_eq!(st.find6("c1@eth0"), None);
    }

    #[test]
    fn a_network_limited_to_some_pools_takes_only_their_blocks() {
        let mut st = two_nodes(30);
        st.blocks.insert("10.250.0.0/30".parse().expect("net"), "a".into());
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        let within = |s: &str| vec![s.parse::<Ipv4Net>().expect("net")];
        assert_eq!(st.allocate_within("a", "m1", &within("10.250.0.0/16")).map(|a| a.address), Ok(ip("10.250.0.1")));
        let pods: Vec<_> =
            (0..3).map(|i| st.allocate_within("a", &format!("p{i}"), &within("10.244.0.0/16"))).collect();
        let got: Vec<_> = pods.into_iter().map(|a| a.map(|a| (a.address, a.borrowed))).collect();
        assert_eq!(got, [Ok((ip("10.244.1.1"), false)), Ok((ip("10.244.1.2"), false)), Ok((ip("10.244.2.1"), true))]);
        st.allocate_within("a", "m2", &within("10.250.0.0/16")).expect("the pool's second");
        let e = st.allocate_within("a", "m3", &within("10.250.0.0/16")).expect_err("full");
        assert!(e.contains("in 10.250.0.0/16"), "{e}");
        assert!(st.allocate_within("b", "x", &within("10.9.0.0/16")).expect_err("none").contains("no block"));
    }

    #[test]
    fn concurrent_allocations_under_the_lock_never_share_an_address() {
        let dir = tempfile::tempdir().expect("tmp");
        let ipam = Ipam::new(dir.path().join("ipam.json"));
        ipam.with(|st| *st = two_nodes(26)).expect("seed");
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let ipam = ipam.clone();
                std::thread::spawn(move || {
                    (0..6)
                        .map(|k| ipam.with(|st| st.allocate("a", &format!("c{t}-{k}"))).expect("io").expect("room"))
                        .map(|a| a.address)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        assert_eq!(all.len(), 96);
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 96, "an address was handed out twice");
        let st = ipam.with(|st| st.clone()).expect("read");
        assert_eq!(st.allocations.len(), 96);
    }
}
