//! The node's kernel: the routes it installs there (tagged `proto 179`) and the drops the
//! kernel makes on its behalf.

use super::*;

impl Node {
    /// Removes every kernel route of ours (`proto 179`): at start, what a run that crashed
    /// left behind; at stop, what this run installed, which would otherwise route the node's
    /// traffic into a `tunl0` that is gone or to blocks nobody announces any more.
    pub(super) fn flush_kernel(&mut self) {
        if let Err(e) = ipcmd::ip(&["route", "flush", "proto", routes::KERNEL_PROTO]) {
            tracing::warn!(error = %e, "could not flush our kernel routes");
        }
        if self.cfg.ipv6.is_some() {
            if let Err(e) = ipcmd::ip(&["-6", "route", "flush", "proto", routes::KERNEL_PROTO]) {
                tracing::warn!(error = %e, "could not flush our IPv6 kernel routes");
            }
        }
        self.kernel.clear();
    }

    pub(super) fn sync_kernel(&mut self, want: &[routes::KernelRoute]) {
        let wanted: std::collections::HashSet<&routes::KernelRoute> = want.iter().collect();
        let have: std::collections::HashSet<&routes::KernelRoute> = self.kernel.iter().collect();
        let gone: Vec<&routes::KernelRoute> = self.kernel.iter().filter(|k| !wanted.contains(k)).collect();
        let new: Vec<&routes::KernelRoute> = want.iter().filter(|r| !have.contains(r)).collect();
        if gone.is_empty() && new.is_empty() {
            return;
        }
        // One `ip` for all the changes: a process per route made a pool change across a
        // 50-node cluster take seconds. Only if that fails, route by route, to say which.
        let line = |verb: &str, r: &routes::KernelRoute| format!("route {verb} {}\n", r.args().join(" "));
        let script: String =
            gone.iter().map(|r| line("del", r)).chain(new.iter().map(|r| line("replace", r))).collect();
        if ipcmd::ip_batch(&script).is_ok() {
            self.kernel = want.to_vec();
            return;
        }
        let tun = self.cfg.dataplane == DataplaneMode::Tun;
        for old in gone {
            let mut v = vec!["route", "del"];
            let args = old.args();
            v.extend(args.iter().map(String::as_str));
            if let Err(e) = ipcmd::ip(&v) {
                tracing::debug!(error = %e, "kernel route already gone");
            }
        }
        let mut installed: Vec<routes::KernelRoute> = want.iter().filter(|r| have.contains(r)).cloned().collect();
        for r in new {
            let args = r.args();
            let mut v = vec!["route", "replace"];
            v.extend(args.iter().map(String::as_str));
            match ipcmd::ip(&v) {
                Ok(_) => installed.push(r.clone()),
                Err(e) if tun => tracing::error!(error = %e, "kernel route not installed: pod traffic will not flow"),
                // afpacket: these serve only the node's own traffic.
                Err(e) => tracing::warn!(error = %e, "kernel route not installed"),
            }
        }
        self.kernel = installed;
    }

    /// The kernel drops what the tunnel device's queue cannot hold before we read it; those are
    /// ours to count too.
    pub(super) fn account_tun_drops(&mut self) {
        // Once a second is enough for a counter, and an idle node wakes for every keepalive.
        if self.dp.interfaces().by_role(|r| *r == IfaceRole::Tun).is_none()
            || self.tun_read_at.is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.tun_read_at = Some(Instant::now());
        let path = format!("/sys/class/net/{}/statistics/tx_dropped", self.cfg.tunnel_device());
        let Some(now) = std::fs::read_to_string(path).ok().and_then(|v| v.trim().parse::<u64>().ok()) else { return };
        if let Some(before) = self.tun_dropped {
            self.dp.count_kernel_drops(forwarding::DropReason::RxQueueFull, now.saturating_sub(before));
        }
        self.tun_dropped = Some(now);
    }
}
