//! Pods that come and go while the node runs: added and removed over the admin socket (the
//! CNI plugin does so for a container runtime), and followed by their interfaces, which
//! appear and vanish with the pod (rtnetlink link events wake the control loop). A pod whose interface is missing is down: it has no
//! route and no port until the interface comes (back).
//!
//! Pods added while running are written to `<admin socket>.pods`, so a restarted node
//! serves the containers that still run (and forgets those whose interface went meanwhile).

use super::*;
use nodeapi::admin::{self, PodSpec, PodStatus};
use nodeapi::config::PodConfig;

/// How often pod interfaces are looked for without link events (with them, five times as
/// long: a lost event is found late, not never). A pod's veth can vanish with its
/// namespace without anyone telling us.
pub(super) const LINK_CHECK: Duration = Duration::from_secs(1);

fn pods_file(cfg: &NodeConfig) -> std::path::PathBuf {
    cfg.admin_socket.with_extension("pods")
}

/// The pods a previous run of this node was given while running, less those whose interface
/// is gone: containers deleted while no node ran (their DEL could not tell us, and IPAM may
/// have given their addresses to others since). The file keeps them until the next pod comes
/// or goes: a node started by mistake where the interfaces are not (another namespace) must
/// not empty it.
pub(super) fn load_dynamic(cfg: &NodeConfig) -> Vec<PodSpec> {
    let p = pods_file(cfg);
    let specs: Vec<PodSpec> = match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).unwrap_or_else(|e| {
            tracing::warn!(path = %p.display(), error = %e, "ignoring an unreadable pods file");
            Vec::new()
        }),
        Err(_) => return Vec::new(),
    };
    let (live, gone): (Vec<PodSpec>, Vec<PodSpec>) =
        specs.into_iter().partition(|s| netsys::link_info(&s.interface).is_ok());
    for s in &gone {
        tracing::info!(pod = %s.name, interface = %s.interface, address = %s.address,
            "pod forgotten: its interface went while the node was not running");
    }
    live
}

fn valid_name(s: &str) -> bool {
    admin::valid_token(s, admin::MAX_POD_NAME)
}

fn valid_ifname(s: &str) -> bool {
    admin::valid_token(s, 15)
}

impl Node {
    fn borrowed(&self, addr: Ipv4Addr) -> bool {
        !self.cfg.blocks.iter().any(|b| b.contains(&addr))
    }

    pub(super) fn pods(&self) -> Vec<PodStatus> {
        let ifaces = self.dp.interfaces();
        // In tun mode the kernel forwards for pods, and the data plane has no port for them.
        let up = |p: &PodConfig| match self.cfg.dataplane {
            DataplaneMode::Afpacket => ifaces.by_name(&p.interface).is_some(),
            DataplaneMode::Tun => netsys::link_info(&p.interface).is_ok(),
        };
        self.cfg
            .pods
            .iter()
            .map(|p| PodStatus {
                pod: PodSpec::from(p),
                up: up(p),
                borrowed: self.borrowed(p.address),
                dynamic: self.dynamic.contains(&p.name),
            })
            .collect()
    }

    fn save_dynamic(&self) {
        let specs: Vec<PodSpec> =
            self.cfg.pods.iter().filter(|p| self.dynamic.contains(&p.name)).map(PodSpec::from).collect();
        let p = pods_file(&self.cfg);
        let text = serde_json::to_string(&specs).unwrap_or_default();
        if let Err(e) = nodeapi::private::write(&p, text.as_bytes()) {
            tracing::warn!(path = %p.display(), error = %e, "cannot write the pods file");
        }
    }

    /// A pod added over the admin socket whose interface is gone: a container that went
    /// without a DEL reaching us. IPAM is the authority on addresses, so a new pod that was
    /// given its address (or interface name) takes its place.
    fn vanished(&self, p: &PodConfig) -> bool {
        self.dynamic.contains(&p.name) && netsys::link_info(&p.interface).is_err()
    }

    /// Serves a pod that appeared, or replaces the pod of the same name when it is the same
    /// workload made again (the same interface, or the old one gone).
    pub(super) fn pod_add(&mut self, spec: PodSpec, speaker: Option<&mut Speaker>) -> anyhow::Result<()> {
        if !valid_name(&spec.name) {
            bail!("pod name {:?} must be 1-253 characters of a-z, A-Z, 0-9, '-', '_' and '.'", spec.name);
        }
        if !valid_ifname(&spec.interface) {
            bail!("interface name {:?} must be 1-15 characters of a-z, A-Z, 0-9, '-', '_' and '.'", spec.interface);
        }
        if spec.interface == self.cfg.uplink.interface || spec.interface == self.cfg.tunnel_device() {
            bail!("{} is not a pod interface on this node", spec.interface);
        }
        if spec.address == self.cfg.uplink.address.addr() || spec.address.is_unspecified() {
            bail!("{} cannot be a pod's address", spec.address);
        }
        // Another pod holding this one's address or interface refuses it, unless that pod
        // vanished: then this one takes its place, below, once everything else is checked.
        let clashes = |p: &PodConfig| {
            p.name != spec.name
                && (p.address == spec.address
                    || p.interface == spec.interface
                    || spec.address6.is_some_and(|a6| p.address6 == Some(a6)))
        };
        if let Some(other) = self.cfg.pods.iter().find(|p| clashes(p) && !self.vanished(p)) {
            let what = match (other.address == spec.address, other.interface == spec.interface) {
                (true, _) => format!("{} is already the address", spec.address),
                (_, true) => format!("{} is already the interface", spec.interface),
                _ => format!("{} is already the address", spec.address6.map(|a| a.to_string()).unwrap_or_default()),
            };
            bail!("{what} of pod {}", other.name);
        }
        if let Some(a6) = spec.address6 {
            let Some(v6) = &self.cfg.ipv6 else {
                bail!("{a6}: this node is IPv4 only (no [ipv6] in its config)");
            };
            if a6 == v6.address.addr() || !v6.blocks.iter().chain(&v6.pools).any(|b| b.contains(&a6)) {
                bail!("{a6} is not an address of this node's IPv6 blocks or pools");
            }
        }
        if let Some(c) = &spec.container {
            if !admin::valid_token(c, admin::MAX_CONTAINER_ID) {
                bail!("container id {c:?} must be 1-256 characters of a-z, A-Z, 0-9, '-', '_' and '.'");
            }
        }
        let pod = PodConfig::from(spec.clone());
        let mut speaker = speaker;
        let displaced: Vec<String> = self.cfg.pods.iter().filter(|p| clashes(p)).map(|p| p.name.clone()).collect();
        if let Some(old) = self.cfg.pods.iter().find(|p| p.name == spec.name).cloned() {
            // A name is the pod's key: another workload's pod whose interface is still there
            // is not replaced (one whose interface went is, as a container made again).
            if old.interface != spec.interface && netsys::link_info(&old.interface).is_ok() {
                let whose = old.container.as_deref().map_or(String::new(), |c| format!(" (container {c})"));
                bail!(
                    "pod {} is served already{whose} on {}, which is up: give this workload another name",
                    old.name,
                    old.interface
                );
            }
            let same_link = netsys::link_info(&old.interface).ok().map(|l| l.ifindex);
            let served = self.dp.interfaces().by_name(&old.interface).and_then(|i| self.dp.interfaces().get(i));
            if old == pod && served.is_some_and(|f| Some(f.ifindex) == same_link) {
                self.dynamic.insert(spec.name);
                self.save_dynamic();
                return Ok(());
            }
            self.pod_del(&old.name, speaker.as_deref_mut())?;
        }
        for name in displaced {
            tracing::info!(pod = %name, by = %pod.name, "pod forgotten: its interface is gone, its address is another's");
            self.pod_del(&name, speaker.as_deref_mut())?;
        }
        self.cfg.pods.push(pod.clone());
        self.dynamic.insert(pod.name.clone());
        self.save_dynamic();
        self.bring_up(&pod);
        self.refresh(speaker.as_deref());
        if let Some(sp) = speaker {
            for p in super::borrowed_routes(&self.cfg, &pod) {
                sp.originate(p);
            }
        }
        tracing::info!(pod = %pod.name, interface = %pod.interface, address = %pod.address, "pod added");
        Ok(())
    }

    /// Stops serving a pod; whether the node knew it.
    pub(super) fn pod_del(&mut self, name: &str, speaker: Option<&mut Speaker>) -> anyhow::Result<bool> {
        let Some(i) = self.cfg.pods.iter().position(|p| p.name == name) else {
            return Ok(false);
        };
        let pod = self.cfg.pods.remove(i);
        self.dynamic.remove(name);
        self.save_dynamic();
        // Its route goes first, then its port: nothing is routed to a port that is gone.
        self.refresh(speaker.as_deref());
        self.take_down(&pod);
        if let Some(sp) = speaker {
            for p in super::borrowed_routes(&self.cfg, &pod) {
                sp.withdraw_local(p);
            }
        }
        tracing::info!(pod = %pod.name, interface = %pod.interface, address = %pod.address, "pod removed");
        Ok(true)
    }

    /// Starts serving a pod's interface if it exists (afpacket; in tun mode the kernel
    /// forwards for pods and the router has no port for them).
    fn bring_up(&mut self, pod: &PodConfig) -> bool {
        if self.cfg.dataplane != DataplaneMode::Afpacket {
            return true;
        }
        let Some(f) = super::interfaces::pod_interface(pod) else { return false };
        match self.dp.add_interface(f) {
            Ok(_) => {
                self.kernel.filter_add(&pod.interface);
                true
            }
            Err(e) => {
                tracing::warn!(pod = %pod.name, interface = %pod.interface, error = %e, "cannot serve the pod's interface");
                false
            }
        }
    }

    fn take_down(&mut self, pod: &PodConfig) {
        if let Some(id) = self.dp.interfaces().by_name(&pod.interface) {
            self.dp.remove_interface(id);
        }
        self.kernel.filter_forget(&pod.interface);
    }

    /// Rebuilds the FIB's base with what BGP taught so far (the pods changed, the routes
    /// did not).
    fn refresh(&mut self, speaker: Option<&Speaker>) {
        if let Err(e) = self.rebuild_base(speaker) {
            tracing::error!(error = %e, "rebuilding the FIB after a pod change failed");
        }
    }

    /// Follows pod interfaces that appeared, vanished or were made anew (a new ifindex)
    /// since the last look.
    pub(super) fn follow_links(&mut self, speaker: Option<&Speaker>) {
        if self.cfg.dataplane != DataplaneMode::Afpacket {
            return;
        }
        let mut changed = false;
        for pod in self.cfg.pods.clone() {
            let info = netsys::link_info(&pod.interface).ok();
            let link = info.as_ref().map(|l| l.ifindex);
            let served = self
                .dp
                .interfaces()
                .by_name(&pod.interface)
                .and_then(|i| self.dp.interfaces().get(i))
                .map(|f| f.ifindex);
            if link == served {
                if let Some(l) = info {
                    self.follow_mac(&pod.interface, l.mac);
                }
                continue;
            }
            if served.is_some() {
                tracing::info!(pod = %pod.name, interface = %pod.interface, "pod interface gone or replaced");
                // The route first (below, once for all), then the port.
                self.refresh_without(&pod, speaker);
                self.take_down(&pod);
            }
            if link.is_some() && self.bring_up(&pod) {
                tracing::info!(pod = %pod.name, interface = %pod.interface, "pod interface up");
            }
            changed = true;
        }
        if changed {
            self.refresh(speaker);
        }
    }

    /// A FIB without `pod`'s route, published before its port goes.
    fn refresh_without(&mut self, pod: &PodConfig, speaker: Option<&Speaker>) {
        let Some(i) = self.cfg.pods.iter().position(|p| p.name == pod.name) else { return };
        let p = self.cfg.pods.remove(i);
        self.refresh(speaker);
        self.cfg.pods.insert(i, p);
    }
}
