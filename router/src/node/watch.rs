//! A node with a datastore: a thread lists Calico's resources and the node's IPAM blocks
//! from etcd, watches their prefixes from that revision on, lists again on every change and
//! hands each list to the control loop, which applies the node's view of it live
//! (`Node::apply_view`). While etcd does not answer, the node forwards with what it last
//! knew and says so once; when it answers again the watch resumes from the last revision
//! read (a new list if that was compacted).

use super::*;
use crossbeam_channel::{Receiver, Sender};

/// How long to wait before trying etcd again after it did not answer.
const RETRY: Duration = Duration::from_millis(500);
/// How often the secrets that BGP peers' passwords name are read again.
const SECRETS_REREAD: Duration = Duration::from_secs(5);
/// The longest a peer that was removed from the cluster keeps its session while the new
/// sessions come up.
const REMOVAL_GRACE: Duration = Duration::from_secs(10);

/// A BGP peer the datastore no longer lists, on its way out.
pub(super) struct Removal {
    peer: IpAddr,
    /// When it goes whatever else is up.
    until: Instant,
}

pub(super) struct Watcher {
    pub rx: Receiver<Listed>,
    /// Whether etcd answers, as the datastore thread last found (`router status`).
    pub health: Arc<Mutex<admin::DatastoreStatus>>,
    stop: Arc<AtomicBool>,
}

/// What the datastore holds for the node, as last listed.
pub(super) struct Listed {
    pub resources: Vec<datastore::resources::Resource>,
    /// The blocks etcd's IPAM gives the node (Calico's block affinity): its configured ones,
    /// and those its CNI plugin claimed since, which it announces whole as Calico does.
    pub blocks: Vec<Ipv4Net>,
    pub blocks6: Vec<Ipv6Net>,
    /// The resources that did not read (logged by `apply_view` when new).
    pub notes: Vec<String>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

pub(super) fn watch(cfg: &NodeConfig, etcd: datastore::etcd::Etcd, waker: Arc<mio::Waker>) -> anyhow::Result<Watcher> {
    let store = datastore::Store::new(etcd);
    let (tx, rx) = crossbeam_channel::bounded(4);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let me = Me {
        name: cfg.name.clone(),
        address: cfg.uplink.address,
        address6: cfg.ipv6.as_ref().map(|v| v.address),
        blocks: cfg.blocks.clone(),
        blocks6: cfg.ipv6.as_ref().map(|v| v.blocks.clone()).unwrap_or_default(),
        // The configured pods; a container's address is its CNI plugin's to record.
        pods: cfg.pods.iter().filter(|p| p.container.is_none()).cloned().collect(),
    };
    let health = Arc::new(Mutex::new(admin::DatastoreStatus {
        endpoints: cfg.etcd_endpoints.clone(),
        answering: false,
        since: unix_now(),
        revision: None,
        error: None,
        notes: Vec::new(),
    }));
    let link = Link { health: health.clone() };
    std::thread::Builder::new().name("datastore".into()).spawn(move || run(store, me, tx, waker, s, link))?;
    Ok(Watcher { rx, health, stop })
}

/// The IPv4 pools as etcd has them, read once before the data plane starts: its tunnel
/// devices (`tunl0`, `vxlan.calico` and tun mode's VXLAN socket) follow the pools' modes and
/// are made at start. `None`, logged, where etcd does not answer: the config's pools stand
/// until the watch reads them.
pub(super) fn pools_at_start(cfg: &NodeConfig, etcd: &datastore::etcd::Etcd) -> Option<Vec<nodeapi::config::Pool>> {
    match datastore::Store::new(etcd.clone()).all() {
        Ok((rs, ..)) => {
            let me6 = cfg.ipv6.as_ref().map(|v| v.address.addr());
            let no_secrets = |_: &str, _: &str| Err(String::new());
            let view = crate::cluster::view_with(&rs, &cfg.name, cfg.uplink.address.addr(), me6, &no_secrets);
            Some(view.pools)
        }
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "etcd does not answer: the tunnel devices follow the config's pools");
            None
        }
    }
}

/// Who the node is in the datastore: its name and uplink addresses.
struct Me {
    name: String,
    address: Ipv4Net,
    /// On a dual-stack node.
    address6: Option<Ipv6Net>,
    blocks: Vec<Ipv4Net>,
    blocks6: Vec<Ipv6Net>,
    pods: Vec<nodeapi::config::PodConfig>,
}

/// The node's blocks claimed and its configured pods' addresses recorded in etcd's IPAM, as
/// Calico's node agent claims its blocks: a node whose resource (and with it its IPAM) was
/// deleted has them again when it runs. A pod whose address is in another node's block
/// borrowed it, and is recorded so. Best effort: what fails is logged, and the node runs on.
fn record_ipam(store: &datastore::Store, me: &Me) {
    use datastore::ipam::Ipam;
    let ipam = Ipam::new(store.etcd.clone());
    let mut errors = Vec::new();
    if let Err(e) = ipam.claim_own(&me.name, &me.blocks).and_then(|()| ipam.claim_own(&me.name, &me.blocks6)) {
        errors.push(format!("{e:#}"));
    }
    for p in &me.pods {
        let handle = cni::pod_handle(&p.name);
        let recorded = match me.blocks.iter().find(|b| b.contains(&p.address)) {
            Some(b) => ipam.assign(&me.name, &handle, p.address, *b),
            None => ipam.assign_borrowed::<Ipv4Net>(&me.name, &handle, p.address),
        };
        if let Err(e) = recorded {
            errors.push(format!("pod {}: {e:#}", p.name));
        }
        if let Some((a6, b6)) = p.address6.and_then(|a| Some((a, *me.blocks6.iter().find(|b| b.contains(&a))?))) {
            if let Err(e) = ipam.assign(&me.name, &handle, a6, b6) {
                errors.push(format!("pod {}: {e:#}", p.name));
            }
        }
    }
    for e in errors {
        tracing::warn!(error = %e, "the node's IPAM in etcd");
    }
}

/// The orchestrator the workload endpoints of a node's configured pods name: the router
/// itself (a container's endpoint is its CNI plugin's, orchestrator `k8s` or `cni`).
pub const CONFIGURED: &str = "router";

/// The workload endpoints of the node's configured pods written, and those of pods it no
/// longer has deleted. Best effort, as [`record_ipam`].
fn record_endpoints(store: &datastore::Store, me: &Me) {
    let mut wanted = Vec::new();
    for p in &me.pods {
        let e = datastore::endpoints::Endpoint {
            node: me.name.clone(),
            orchestrator: CONFIGURED.into(),
            namespace: "default".into(),
            workload: p.name.clone(),
            endpoint: "eth0".into(),
            interface: p.interface.clone(),
            addresses: std::iter::once(IpAddr::V4(p.address)).chain(p.address6.map(IpAddr::V6)).collect(),
            ..Default::default()
        };
        match e.resource() {
            Ok(r) => wanted.push(r),
            Err(e) => tracing::warn!(pod = p.name, error = %format!("{e:#}"), "no workload endpoint for this pod"),
        }
    }
    if let Err(e) = store.sync_endpoints(&me.name, CONFIGURED, &wanted) {
        tracing::warn!(error = %format!("{e:#}"), "the node's workload endpoints in etcd");
    }
}

/// The node's own `Node` resource, as Calico's node agent writes it: created when missing,
/// its `bgp.ipv4Address` (and on a dual-stack node `bgp.ipv6Address`) put right when they are
/// not the node's; everything else (labels, a reflector cluster ID) is the user's and stays.
/// `Ok(Some(why))`: not registered, another node has this one's address (Calico's node
/// refuses to start then; this one forwards on and tries again).
fn register(store: &datastore::Store, me: &Me) -> anyhow::Result<Option<String>> {
    use datastore::resources::{self as r, Kind, Resource};
    let (v4, v6) = (me.address.to_string(), me.address6.map(|a| a.to_string()));
    let written = match store.get(Kind::Node, Some(&me.name))?.first() {
        // In place: what Calico's agent or the user wrote there, and this router does not
        // know, stays. Nothing to write when the addresses are right already.
        Some(_) => store.set_node_addresses(&me.name, &v4, v6.as_deref()),
        None => {
            let mut node = r::typed(Kind::Node, &me.name, r::NodeSpec::default());
            node.spec.bgp = Some(r::NodeBgp { ipv4_address: Some(v4), ipv6_address: v6, ..Default::default() });
            store.apply(&Resource::Node(node)).map(|_| true)
        }
    };
    match written {
        Ok(false) => return Ok(None),
        Ok(true) => {}
        Err(e) => {
            let Some(taken) = e.downcast_ref::<datastore::AddressTaken>() else { return Err(e) };
            return Ok(Some(format!(
                "node {} has this node's address {} in the datastore: not registered, so the other nodes do not peer with this one; \
                 give one of them another address (Calico's node would not start)",
                taken.other, taken.address
            )));
        }
    }
    tracing::info!(node = me.name, address = %me.address, address6 = ?me.address6, "registered in the datastore");
    Ok(None)
}

fn run(
    store: datastore::Store,
    me: Me,
    tx: Sender<Listed>,
    waker: Arc<mio::Waker>,
    stop: Arc<AtomicBool>,
    mut link: Link,
) {
    use datastore::etcd::WatchEvent;
    // The revision of the resources last handed over; None: to be listed (again).
    let mut listed: Option<i64> = None;
    let mut registered = false;
    // Why the node could not register (another node has its address), as last logged.
    let mut conflict: Option<String> = None;
    // Lists the resources and hands them over; false once the node has gone.
    let affinities = datastore::ipam::affinities_prefix(&me.name);
    // The node's blocks are read with the resources, in one transaction.
    let read = || -> anyhow::Result<_> {
        use datastore::ipam::{affinity_keys, blocks_of_affinities};
        let (p4, p6) = (affinity_keys::<Ipv4Net>(&me.name), affinity_keys::<Ipv6Net>(&me.name));
        let l = store.all_and(&[&p4, &p6])?;
        let blocks = blocks_of_affinities(&me.name, &l.under[0]);
        let blocks6 = blocks_of_affinities(&me.name, &l.under[1]);
        Ok((Listed { resources: l.resources, blocks, blocks6, notes: l.notes }, l.revision))
    };
    let list = |listed: &mut Option<i64>, link: &mut Link| -> bool {
        match read() {
            Ok((view, rev)) => {
                link.answers(rev, "etcd answers again: resynced");
                *listed = Some(rev);
                tracing::debug!(revision = rev, resources = view.resources.len(), "datastore listed");
                if tx.send(view).is_err() {
                    return false;
                }
                let _ = waker.wake();
            }
            Err(e) => link.outage(&e),
        }
        true
    };
    while !stop.load(Ordering::Relaxed) {
        if !registered {
            match register(&store, &me) {
                Ok(None) => {
                    registered = true;
                    record_ipam(&store, &me);
                    record_endpoints(&store, &me);
                }
                Ok(Some(why)) => {
                    if conflict.as_ref() != Some(&why) {
                        tracing::error!("{why}");
                    }
                    conflict = Some(why);
                }
                Err(e) => link.outage(&e),
            }
        }
        if listed.is_none() && !list(&mut listed, &mut link) {
            return;
        }
        let Some(from) = listed else {
            std::thread::sleep(RETRY);
            continue;
        };
        // Watch from just after what was listed: nothing is missed between the two, and a
        // watch that broke resumes from there.
        // Pods coming and going (their workload endpoints, the addresses in the blocks)
        // change nothing a node routes by; the node's blocks do.
        let mut watch = match store.etcd.watch("/calico/", from + 1) {
            Ok(w) => {
                let w = w.within(&[datastore::PREFIX, &affinities]).ignoring(&datastore::endpoints_prefix());
                link.answers(from, "etcd answers again: watching from where the node was");
                w
            }
            Err(e) => {
                link.outage(&e);
                std::thread::sleep(RETRY);
                continue;
            }
        };
        while !stop.load(Ordering::Relaxed) {
            match watch.wait() {
                // A change already in the last list (the stream runs behind a list made
                // for an earlier event) needs no other.
                Ok(WatchEvent::Changed(rev)) if listed.is_some_and(|l| rev <= l) => {}
                Ok(WatchEvent::Changed(rev)) => {
                    tracing::debug!(revision = rev, "datastore changed");
                    if !list(&mut listed, &mut link) {
                        return;
                    }
                }
                Ok(WatchEvent::Idle) => break,
                Ok(WatchEvent::Compacted(rev)) => {
                    tracing::info!(revision = rev, "etcd compacted what the node had not read: listing again");
                    listed = None;
                    break;
                }
                Err(e) => {
                    link.outage(&e);
                    std::thread::sleep(RETRY);
                    break;
                }
            }
        }
    }
}

/// The datastore thread's view of etcd, kept for `router status`: not answering with no
/// error yet is the start, before the first read; with one, an outage. Logged once per change.
struct Link {
    health: Arc<Mutex<admin::DatastoreStatus>>,
}

impl Link {
    fn outage(&mut self, e: &anyhow::Error) {
        let error = format!("{e:#}");
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.error.is_none() {
            tracing::warn!(%error, "etcd does not answer; forwarding with what the node last knew, and retrying");
        }
        if h.answering {
            h.since = unix_now();
        }
        h.answering = false;
        h.error = Some(error);
    }

    /// etcd answered with what it held at `revision`; `again` is logged after an outage.
    fn answers(&mut self, revision: i64, again: &str) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.error.is_some() {
            tracing::info!(revision, "{again}");
        }
        if !h.answering {
            h.since = unix_now();
        }
        h.answering = true;
        h.error = None;
        h.revision = Some(h.revision.map_or(revision, |r| r.max(revision)));
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Node {
    /// Applies the cluster as the resources now say: BGP peers added and removed one by one
    /// (other sessions untouched), pools and the other nodes for routes, encapsulation and
    /// import rules; a change of AS number, reflector cluster ID, filters or advertisements
    /// restarts the speaker. Whether the FIB must be rebuilt.
    pub(super) fn apply_view(
        &mut self,
        resources: Vec<datastore::resources::Resource>,
        speaker: &mut Option<Speaker>,
        registry: &mio::Registry,
    ) -> bool {
        let me = self.cfg.uplink.address.addr();
        let me6 = self.cfg.ipv6.as_ref().map(|v| v.address.addr());
        let view = crate::cluster::view_with(&resources, &self.cfg.name, me, me6, &|n, k| self.read_secret(n, k));
        // Kept for reading the secrets again (`reread_secrets`).
        self.resources = resources;
        self.secrets_read = Instant::now();
        // Each note logged when it is new (the cluster is listed again on every change);
        // `router status` shows them all.
        let mut notes = Vec::new();
        for n in &self.listing_notes {
            if !self.datastore_notes.contains(n) {
                tracing::warn!(note = %n, "a resource in etcd does not read as this router knows it");
            }
            notes.push(n.clone());
        }
        for n in &view.notes {
            if !self.datastore_notes.contains(n) {
                tracing::warn!(note = %n, "datastore");
            }
            notes.push(n.clone());
        }
        let level = view.log_level.unwrap_or("info");
        if level != self.log_level {
            self.log_level = level;
            match crate::logging::set_level(level) {
                true => tracing::info!(level, "log level from the datastore (logSeverityScreen)"),
                false => tracing::info!(
                    level,
                    "the datastore's logSeverityScreen is not used: RUST_LOG or the node's log_level set the level"
                ),
            }
        }
        let bgp = view.bgp(self.cfg.bgp.as_ref(), me);
        let mut routes_changed = self.cfg.pools != view.pools || self.cfg.ipip_peers != view.nodes;
        self.cfg.pools = view.pools.clone();
        self.cfg.ipip_peers = view.nodes.clone();
        routes_changed |= self.follow_affine_blocks(speaker.as_mut());
        self.follow_tunnel_devices();
        match self.cfg.ipv6.as_mut() {
            Some(v6) => {
                routes_changed |= v6.pools != view.pools6
                    || v6.nodes != view.nodes6
                    || v6.nat_outgoing != view.nat6
                    || v6.disable_bgp_export != view.no_export6;
                v6.pools = view.pools6.clone();
                v6.nodes = view.nodes6.clone();
                v6.nat_outgoing = view.nat6.clone();
                v6.disable_bgp_export = view.no_export6.clone();
            }
            None if !view.pools6.is_empty() => {
                let n = "the IPv6 pools: this node's config has no [ipv6] section: IPv4 only".to_string();
                if !self.datastore_notes.contains(&n) {
                    tracing::warn!(
                        "the datastore has IPv6 pools, but this node's config has no [ipv6] section: IPv4 only"
                    )
                }
                notes.push(n);
            }
            None => {}
        }
        self.datastore_notes = notes;
        let reachable = |b: Option<&nodeapi::config::BgpConfig>| {
            b.map(|b| b.peers.iter().filter_map(|p| p.reachable_by.map(|g| (p.address, g))).collect::<Vec<_>>())
        };
        routes_changed |= reachable(self.cfg.bgp.as_ref()) != reachable(Some(&bgp));
        let old = self.cfg.bgp.replace(bgp.clone());
        let now = Instant::now();
        let restart = old.as_ref().is_none_or(|o| {
            o.as_number != bgp.as_number
                || o.port != bgp.port
                || o.listen_all != bgp.listen_all
                || o.route_reflector_cluster_id != bgp.route_reflector_cluster_id
                || o.filters != bgp.filters
                || o.prefix_advertisements != bgp.prefix_advertisements
        });
        if restart || speaker.is_none() {
            self.removals.clear();
            let mut restarted = false;
            if let Some(mut sp) = speaker.take() {
                tracing::info!(
                    "the cluster's AS, BGP port or bind mode, reflector cluster ID, filters or advertisements changed: restarting BGP"
                );
                // As a planned restart: the FIB keeps the routes until the new sessions have
                // sent theirs, and peers doing graceful restart keep ours meanwhile.
                if self.saved.is_none() {
                    self.saved = Some(super::restart::Saved {
                        saved_at: 0,
                        learned: sp.learned(),
                        learned6: sp.learned6(),
                        cluster_hops: sp.cluster_next_hops().into_iter().collect(),
                    });
                }
                sp.close_for_restart(registry);
                restarted = true;
            }
            self.bgp_failed = None;
            self.peers_failed = None;
            self.start_bgp(speaker, registry, restarted, now);
            return true;
        }
        let Some(sp) = speaker.as_mut() else { return routes_changed };
        if routes_changed {
            sp.set_policy(cluster_policy(&self.cfg));
        }
        // The service ranges: announced or withdrawn at once, the sessions untouched.
        let before = old.as_ref().map(|o| o.service_ips.clone()).unwrap_or_default();
        for n in bgp.service_ips.iter().filter(|n| !before.contains(n)) {
            tracing::info!(prefix = %n, "datastore: announcing a service range");
            sp.originate(*n);
        }
        for n in before.iter().filter(|n| !bgp.service_ips.contains(n)) {
            tracing::info!(prefix = %n, "datastore: withdrawing a service range");
            sp.withdraw_local(*n);
        }
        let live: Vec<nodeapi::config::BgpPeer> = sp.peers().into_iter().cloned().collect();
        // New sessions first, so that routes have somewhere to come from before old ones go.
        let mut failed = Vec::new();
        for p in bgp.peers.iter().filter(|p| !live.contains(p)) {
            let changed = live.iter().any(|o| o.address == p.address);
            let r = match changed {
                true => sp.replace_peer(registry, p.clone(), now),
                false => sp.add_peer(registry, p.clone(), now),
            };
            match r {
                Ok(()) if changed => tracing::info!(peer = %p.address, kind = ?p.kind, "datastore: BGP peer changed"),
                Ok(()) => tracing::info!(peer = %p.address, kind = ?p.kind, "datastore: BGP peer added"),
                Err(e) => {
                    let why = format!("BGP peer {}: {e}; tried again every {} s", p.address, BGP_RETRY.as_secs());
                    if !self.peers_failed.as_ref().is_some_and(|(f, _)| f.contains(&why)) {
                        tracing::error!(peer = %p.address, error = %e, "configuring the BGP peer failed; trying again");
                    }
                    failed.push(why);
                }
            }
        }
        // A peer that could not be configured (its listener's port taken, say) is tried
        // again: nothing in etcd may change to bring it back.
        self.peers_failed = (!failed.is_empty()).then_some((failed, now + BGP_RETRY));
        // Peers that go are removed once the new sessions are up (or after a while): until
        // then their routes carry the traffic that is moving to the new ones.
        self.removals.retain(|r| !bgp.peers.iter().any(|p| p.address == r.peer));
        for p in live.iter().filter(|o| !bgp.peers.iter().any(|p| p.address == o.address)) {
            if !self.removals.iter().any(|r| r.peer == p.address) {
                self.removals.push(Removal { peer: p.address, until: now + REMOVAL_GRACE });
            }
        }
        routes_changed
    }

    /// The node's blocks become its configured ones and those etcd's IPAM gives it (a block
    /// its CNI plugin claimed when the others were full, or in a new pool): the node announces
    /// each whole, with a blackhole for its free addresses, instead of a /32 per container in
    /// it, as Calico does. Whether they changed.
    fn follow_affine_blocks(&mut self, speaker: Option<&mut Speaker>) -> bool {
        fn merged<N: Copy + Ord>(configured: &[N], affine: &[N]) -> Vec<N> {
            let mut extra: Vec<N> = affine.iter().filter(|b| !configured.contains(b)).copied().collect();
            extra.sort();
            configured.iter().copied().chain(extra).collect()
        }
        let blocks = merged(&self.configured_blocks.0, &self.affine.0);
        let blocks6 = merged(&self.configured_blocks.1, &self.affine.1);
        let same6 = self.cfg.ipv6.as_ref().is_none_or(|v| v.blocks == blocks6);
        if self.cfg.blocks == blocks && same6 {
            return false;
        }
        let before = originated(&self.cfg);
        self.cfg.blocks = blocks;
        if let Some(v6) = self.cfg.ipv6.as_mut() {
            v6.blocks = blocks6;
        }
        let after = originated(&self.cfg);
        let v6 = self.cfg.ipv6.as_ref().map(|v| v.blocks.clone()).unwrap_or_default();
        tracing::info!(blocks = ?self.cfg.blocks, blocks6 = ?v6, "the node's blocks in etcd's IPAM changed");
        if let Some(sp) = speaker {
            for p in after.iter().filter(|p| !before.contains(p)) {
                sp.originate(*p);
            }
            for p in before.iter().filter(|p| !after.contains(p)) {
                sp.withdraw_local(*p);
            }
        }
        true
    }

    /// Starts the speaker as the config now says. What fails (the port taken by another
    /// program, say) is logged once and tried again every [`BGP_RETRY`] until it works or the
    /// cluster changes: a node must not stay without BGP because of a moment's conflict.
    pub(super) fn start_bgp(
        &mut self,
        speaker: &mut Option<Speaker>,
        registry: &mio::Registry,
        restarted: bool,
        now: Instant,
    ) {
        let Some(sc) = speaker_config(&self.cfg, restarted) else { return };
        match Speaker::new(sc, registry, now) {
            Ok(sp) => {
                if self.bgp_failed.take().is_some() {
                    tracing::info!("BGP started");
                }
                *speaker = Some(sp);
            }
            Err(e) => {
                let why = e.to_string();
                if self.bgp_failed.as_ref().is_none_or(|(w, _)| *w != why) {
                    tracing::error!(
                        error = %why,
                        retry_secs = BGP_RETRY.as_secs(),
                        "starting BGP with the datastore's cluster failed; trying again"
                    );
                }
                self.bgp_failed = Some((why, now + BGP_RETRY));
            }
        }
    }

    /// Applies the datastore again when a peer could not be configured and it is time;
    /// whether the FIB must be rebuilt.
    pub(super) fn retry_peers(
        &mut self,
        speaker: &mut Option<Speaker>,
        registry: &mio::Registry,
        now: Instant,
    ) -> bool {
        match self.peers_failed.as_mut() {
            // The next try is due later whatever this one does; apply_view says again what
            // still fails, and logs only what did not before.
            Some((_, at)) if now >= *at => *at = now + BGP_RETRY,
            _ => return false,
        }
        self.apply_view(self.resources.clone(), speaker, registry)
    }

    /// The datastore's state for `router status`: whether etcd answers and what the node
    /// does not use of it.
    pub(super) fn datastore_status(&self) -> Option<admin::DatastoreStatus> {
        let mut st = self.datastore.as_ref()?.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let failed = self.peers_failed.iter().flat_map(|(f, _)| f);
        st.notes = self.datastore_notes.iter().chain(failed).cloned().collect();
        Some(st)
    }

    /// Tries again to start the speaker that could not start, when it is time; whether it
    /// started (the FIB is then rebuilt, as after any restart of BGP).
    pub(super) fn retry_bgp(&mut self, speaker: &mut Option<Speaker>, registry: &mio::Registry, now: Instant) -> bool {
        let due = self.bgp_failed.as_ref().is_some_and(|(_, at)| now >= *at);
        if speaker.is_none() && due {
            let restarted = self.saved.is_some();
            self.start_bgp(speaker, registry, restarted, now);
        }
        due && speaker.is_some()
    }

    /// Makes the tunnel devices follow the pools, as the data plane follows pods: a pool
    /// that turns from IPIP to VXLAN (or back) needs `vxlan.calico` where `tunl0` was (its
    /// MTU too) and, in tun mode, the VXLAN UDP sockets. The old device goes, the new one is
    /// made and brought up before the routes into it are installed. What fails is said once
    /// per change (in tun mode, as an error: pods behind the tunnel depend on it).
    pub(super) fn follow_tunnel_devices(&mut self) {
        let tun_mode = self.cfg.dataplane == DataplaneMode::Tun;
        let Ok(up) = netsys::link_info(&self.cfg.uplink.interface) else { return };
        let want = interfaces::tunnel_interfaces(&self.cfg, up.mtu);
        let mut failed = Vec::new();
        let device = want.device.unwrap_or_else(|why| {
            failed.push(why);
            None
        });
        let ifaces = self.dp.interfaces();
        let have =
            ifaces.by_role(|r| *r == IfaceRole::Tun).and_then(|id| ifaces.get(id).map(|f| (id, f.name.clone(), f.mtu)));
        match (&have, &device) {
            (None, None) => {}
            // The same device: at most its MTU changed (the uplink's did). It stays, and so
            // do the kernel's routes into it.
            (Some((id, name, mtu)), Some(f)) if *name == f.name => {
                if *mtu != f.mtu {
                    self.dp.set_mtu(*id, f.mtu);
                    if let Err(e) = ipcmd::ip(&["link", "set", name, "mtu", &f.mtu.to_string()]) {
                        failed.push(format!("{name}: {e:#}"));
                    }
                }
            }
            _ => self.replace_tunnel_device(have.map(|(id, _, _)| id), device, &mut failed),
        }
        match (want.vxlan, self.dp.interfaces().by_role(|r| *r == IfaceRole::VxlanUdp)) {
            (Some(f), None) => {
                if let Err(e) = self.dp.add_interface(f) {
                    failed.push(format!("VXLAN UDP sockets: {e}"));
                }
            }
            (None, Some(id)) => self.dp.remove_interface(id),
            _ => {}
        }
        let what = (!failed.is_empty()).then(|| failed.join("; "));
        if let (Some(what), None) = (&what, &self.tunnel_missing) {
            if tun_mode {
                tracing::error!(%what, "the tunnel device for the pools' encapsulation could not be made: pods behind the tunnel are unreachable");
            } else {
                tracing::warn!(%what, "the tunnel device for the pools' encapsulation could not be made: the node's own traffic to pods behind the tunnel will not reach them");
            }
        }
        self.tunnel_missing = what;
    }

    /// The tunnel device the pools needed goes (`old`), the one they need now is made.
    fn replace_tunnel_device(
        &mut self,
        old: Option<forwarding::iface::IfaceId>,
        device: Option<forwarding::iface::Interface>,
        failed: &mut Vec<String>,
    ) {
        if let Some(id) = old {
            self.dp.remove_interface(id);
            self.tun_dropped = None;
        }
        if let Some(f) = device {
            let (name, mtu) = (f.name.clone(), f.mtu);
            match self.dp.add_interface(f).map_err(anyhow::Error::from).and_then(|_| tunnel_device_up(&name, mtu)) {
                Ok(()) => tracing::info!(device = %name, mtu, "tunnel device made for the pools' encapsulation"),
                Err(e) => failed.push(format!("{name}: {e:#}")),
            }
        }
    }

    fn read_secret(&self, name: &str, key: &str) -> Result<String, String> {
        match &self.cfg.secrets_dir {
            Some(d) => nodeapi::secrets::read_password(d, name, key),
            None => {
                Err("the node has no secrets directory (router node --secrets-dir DIR, or secrets_dir in its config)"
                    .into())
            }
        }
    }

    /// Reads the secrets that the BGP peers' passwords name again (every few seconds, as the
    /// kubelet refreshes a secret volume) and applies the resources again if one changed,
    /// appeared or went: the sessions concerned start over with the new key, the others stay.
    /// Whether the FIB must be rebuilt.
    pub(super) fn reread_secrets(&mut self, speaker: &mut Option<Speaker>, registry: &mio::Registry) -> bool {
        use datastore::resources::Resource;
        if self.secrets_read.elapsed() < SECRETS_REREAD {
            return false;
        }
        self.secrets_read = Instant::now();
        let keyed = |r: &Resource| match r {
            Resource::BgpPeer(p) => p.spec.password.is_some(),
            Resource::BgpConfiguration(c) => c.metadata.name == "default" && c.spec.node_mesh_password.is_some(),
            _ => false,
        };
        if !self.resources.iter().any(keyed) {
            return false;
        }
        let me = self.cfg.uplink.address.addr();
        let me6 = self.cfg.ipv6.as_ref().map(|v| v.address.addr());
        let view = crate::cluster::view_with(&self.resources, &self.cfg.name, me, me6, &|n, k| self.read_secret(n, k));
        let now = view.bgp(self.cfg.bgp.as_ref(), me);
        if self.cfg.bgp.as_ref().is_some_and(|b| b.peers == now.peers) {
            return false;
        }
        tracing::info!("a BGP peer's password in the secrets directory changed: applying the datastore again");
        self.apply_view(self.resources.clone(), speaker, registry)
    }

    /// Removes the peers that went once every other session is up and has sent its table,
    /// or their grace is over.
    pub(super) fn finish_removals(&mut self, speaker: Option<&mut Speaker>, registry: &mio::Registry) {
        let Some(sp) = speaker else { return };
        if self.removals.is_empty() {
            return;
        }
        let now = Instant::now();
        let going: Vec<IpAddr> = self.removals.iter().map(|r| r.peer).collect();
        // The others up and with their whole tables. For a peer that is still a node of the
        // cluster (only the peering changed: the mesh off, a reflector named) that is not
        // enough: a new reflector may still be a mesh peer that passes on no one else's
        // routes (nodes read the datastore at slightly different moments), so its routes
        // must also have arrived by another way.
        let others_up = sp.synced_except(&going);
        let moving = |a: &IpAddr| matches!(a, IpAddr::V4(a) if self.cfg.ipip_peers.contains(a));
        let staying: Vec<IpAddr> = going.iter().copied().filter(moving).collect();
        let moved = others_up && (staying.is_empty() || sp.taught_elsewhere(&staying));
        let (due, keep): (Vec<_>, Vec<_>) =
            self.removals.drain(..).partition(|r| now >= r.until || if moving(&r.peer) { moved } else { others_up });
        self.removals = keep;
        for r in due {
            tracing::info!(peer = %r.peer, "datastore: BGP peer removed");
            sp.remove_peer(registry, r.peer, now);
        }
    }
}
