//! The transit filter on the node's interfaces (afpacket): installed, kept in step with the
//! node's addresses, removed at stop.

use super::*;

/// The tc preference of the transit filter on each interface.
const FILTER_PREF: &str = "49";

/// The transit filter (`forwarding::kfilter`) on the interfaces the router reads, so that
/// the node's kernel drops the frames we forward instead of routing each one only to fail.
/// It speeds things up and nothing depends on it: without `tc` or the kernel's classic-BPF
/// classifier the node runs unfiltered and says so.
pub(super) struct TransitFilter {
    /// Interfaces that have it.
    pub(super) devs: Vec<String>,
    /// The node's addresses it lets through.
    local: Local,
    /// The node masquerades pods of IPv4 and of IPv6 pools: the ports of masqueraded flows
    /// at its address of that family are kept from the kernel.
    masquerade: Masquerade,
}

/// The node's IPv4 addresses, and its IPv6 ones but link-local (which the filter lets
/// through whatever they are).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Local {
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
}

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all: Vec<String> =
            self.v4.iter().map(|a| a.to_string()).chain(self.v6.iter().map(|a| a.to_string())).collect();
        f.write_str(&all.join(","))
    }
}

/// Every address of the namespace: the kernel delivers to any of them, whichever
/// interface a frame comes in on. Asked of the kernel directly (getifaddrs), not of `ip`:
/// this runs every few seconds on every node, and a process each time is what an idle node
/// would mostly spend its CPU on.
fn local_addresses() -> anyhow::Result<Local> {
    let mut l = Local::default();
    for a in nix::ifaddrs::getifaddrs()?.filter_map(|i| i.address) {
        if let Some(a) = a.as_sockaddr_in() {
            l.v4.push(a.ip());
        } else if let Some(a) = a.as_sockaddr_in6().map(|a| a.ip()) {
            if a.segments()[0] & 0xffc0 != 0xfe80 {
                l.v6.push(a);
            }
        }
    }
    l.v4.sort();
    l.v4.dedup();
    l.v6.sort();
    l.v6.dedup();
    Ok(l)
}

/// Puts the program for `local` on each of `devs` (replacing an older one); returns the
/// interfaces where that worked.
/// Whether IPv4 and IPv6 pools masquerade.
pub(super) type Masquerade = (bool, bool);

fn apply_transit_filter<'a>(devs: impl Iterator<Item = &'a str>, local: &Local, masquerade: Masquerade) -> Vec<String> {
    // More IPv6 addresses than the program holds: IPv6 goes unfiltered, IPv4 keeps its filter.
    let v6 = (local.v6.len() <= forwarding::kfilter::MAX_LOCAL6).then_some(&local.v6[..]);
    if v6.is_none() {
        tracing::warn!(
            addresses = local.v6.len(),
            "too many IPv6 addresses for the transit filter: IPv6 goes to the kernel unfiltered"
        );
    }
    let code = match forwarding::kfilter::transit_filter(&local.v4, v6, masquerade.0, masquerade.1) {
        Ok(p) => forwarding::kfilter::tc_bytecode(&p),
        Err(e) => {
            tracing::warn!(error = %e, "no transit filter");
            return Vec::new();
        }
    };
    let mut done = Vec::new();
    for dev in devs {
        let r = ipcmd::run("tc", &["qdisc", "replace", "dev", dev, "clsact"]).and_then(|_| {
            let filter = ["filter", "replace", "dev", dev, "ingress", "pref", FILTER_PREF, "handle", "1"];
            ipcmd::run("tc", &[&filter[..], &["bpf", "da", "bytecode", &code]].concat())
        });
        match r {
            Ok(_) => done.push(dev.to_string()),
            Err(e) => {
                tracing::warn!(interface = dev, error = %e, "no transit filter here: the kernel routes what we forward too")
            }
        }
    }
    done
}

impl TransitFilter {
    /// Puts the filter on `devs` (the Ethernet interfaces the router reads).
    pub(super) fn install(devs: &[String]) -> Option<TransitFilter> {
        let local = match local_addresses() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "no transit filter: cannot list the node's addresses");
                return None;
            }
        };
        let devs = apply_transit_filter(devs.iter().map(String::as_str), &local, (false, false));
        tracing::info!(interfaces = devs.len(), local = %local, "transit filter on");
        Some(TransitFilter { devs, local, masquerade: (false, false) })
    }

    /// Follows the pools' natOutgoing: with it, TCP and UDP to the ports of masqueraded flows
    /// are the router's; without, the kernel's.
    pub(super) fn set_masquerade(&mut self, on: Masquerade) {
        if on == self.masquerade {
            return;
        }
        self.masquerade = on;
        let done = apply_transit_filter(self.devs.iter().map(String::as_str), &self.local, on);
        tracing::info!(interfaces = done.len(), masquerade = ?on, "transit filter updated for natOutgoing");
    }

    /// Follows the node's addresses: one added later must reach the kernel too, and one
    /// removed is no longer the node's. Asked on address and link events (and now and then).
    pub(super) fn recheck(&mut self) {
        if self.devs.is_empty() {
            return;
        }
        match local_addresses() {
            Ok(local) if local != self.local => {
                let done = apply_transit_filter(self.devs.iter().map(String::as_str), &local, self.masquerade);
                tracing::info!(interfaces = done.len(), local = %local, "node addresses changed: transit filter updated");
                self.local = local;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot list the node's addresses"),
        }
    }

    /// Puts the filter on a pod interface that appeared.
    pub(super) fn add(&mut self, dev: &str) {
        if self.devs.iter().any(|d| d == dev) {
            return;
        }
        self.devs.extend(apply_transit_filter(std::iter::once(dev), &self.local, self.masquerade));
    }

    /// A pod interface that is going: its filter goes with it (or now, if it stays).
    pub(super) fn forget(&mut self, dev: &str) {
        if let Some(i) = self.devs.iter().position(|d| d == dev) {
            self.devs.remove(i);
            if std::path::Path::new("/sys/class/net").join(dev).exists() {
                let _ = ipcmd::run("tc", &["filter", "del", "dev", dev, "ingress", "pref", FILTER_PREF]);
            }
        }
    }

    pub(super) fn remove(&self) {
        for dev in &self.devs {
            if let Err(e) = ipcmd::run("tc", &["filter", "del", "dev", dev, "ingress", "pref", FILTER_PREF]) {
                tracing::warn!(interface = %dev, error = %e, "removing the transit filter");
            }
        }
    }
}
