//! The node's kernel: the routes it installs there (tagged `proto 179`), the transit filter,
//! the masquerade of the tun data plane, and the drops the kernel makes on its behalf.
//!
//! Routes and filter changes are made by a thread of their own: `ip`, `tc` and listing the
//! node's addresses all wait for the kernel's one routing lock (rtnl), which a busy machine
//! can hold for seconds at a time (a hundred lab namespaces starting at once), and the control
//! thread must go on answering BGP and the admin socket meanwhile. Of the route sets asked
//! for, only the latest matters; the ones it replaced before they were installed are skipped.

use super::*;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

enum Job {
    Routes(Vec<routes::KernelRoute>),
    /// A pod interface appeared: the filter goes on it.
    FilterAdd(String),
    /// A pod interface is going.
    FilterForget(String),
    /// The node's interfaces or addresses may have changed.
    FilterRecheck,
    /// The pools to masquerade, where the kernel forwards (tun).
    Masquerade(forwarding::nat::NatPolicy),
    /// Links changed: the kernel may have taken routes of ours away (a link that goes down
    /// takes every route through it), or the host's own may be gone from under ours.
    Resync,
}

/// How soon routes that could not be installed are tried again (a link just up may not
/// have its subnet's route yet), and the longest wait between tries of one that keeps failing.
const RETRY: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(60);

pub(super) struct KernelWork {
    tx: Option<crossbeam_channel::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<Option<TransitFilter>>>,
    /// Route sets handed over, and sets the thread is done with (installed or skipped).
    sent: u64,
    done: Arc<AtomicU64>,
    /// The interfaces that have the transit filter (None: no filter).
    filtered: Arc<Mutex<Option<Vec<String>>>>,
    ipv6: bool,
}

impl KernelWork {
    /// Starts the thread, which first removes the routes a run that crashed left behind and
    /// puts the transit filter on `filter_on`.
    pub(super) fn start(tun: bool, ipv6: bool, filter_on: Option<Vec<String>>) -> anyhow::Result<KernelWork> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let done = Arc::new(AtomicU64::new(0));
        let filtered = Arc::new(Mutex::new(filter_on.as_ref().map(|_| Vec::new())));
        let (finished, shown) = (done.clone(), filtered.clone());
        let thread = std::thread::Builder::new()
            .name("kernel".into())
            .spawn(move || {
                // What a crashed run or, on a planned restart, the previous run left: the
                // first route set replaces it, changing only what differs.
                let mut installed = table(ipv6, true).and_then(|t| t.ours).unwrap_or_else(|| {
                    flush(ipv6);
                    Vec::new()
                });
                let mut filter = filter_on.and_then(|devs| TransitFilter::install(&devs));
                *shown.lock().unwrap_or_else(|e| e.into_inner()) = filter.as_ref().map(|f| f.devs.clone());
                let mut masquerading = forwarding::nat::NatPolicy::default();
                // Routes we want where the kernel has one of its owner's for the prefix.
                let mut left_alone = std::collections::HashSet::new();
                // The last set asked for; while some of it is not in the kernel, when to try
                // again (a deadline: the periodic jobs must not keep pushing it back), and the
                // wait after that, doubling up to RETRY_MAX.
                // None until the first set: until then, what the last run left stays.
                let mut wanted: Option<Vec<routes::KernelRoute>> = None;
                let (mut retry_at, mut backoff) = (None::<Instant>, RETRY);
                loop {
                    let first = match retry_at {
                        Some(at) => match rx.recv_deadline(at) {
                            Ok(job) => Some(job),
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => None,
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                        },
                        None => match rx.recv() {
                            Ok(job) => Some(job),
                            Err(_) => break,
                        },
                    };
                    // The retry is a resync of its own.
                    let retry = retry_at.is_some_and(|at| Instant::now() >= at);
                    let mut resync = retry;
                    let mut jobs: Vec<Job> = first.into_iter().collect();
                    jobs.extend(rx.try_iter());
                    let mut want = None;
                    let mut sets = 0;
                    for job in jobs {
                        match (job, filter.as_mut()) {
                            (Job::Routes(r), _) => {
                                want = Some(r);
                                sets += 1;
                            }
                            (Job::Resync, _) => resync = true,
                            (Job::Masquerade(p), f) if p != masquerading => {
                                if tun {
                                    masquerade(&p);
                                }
                                if let Some(f) = f {
                                    f.set_masquerade((!p.masquerade.is_empty(), !p.masquerade6.is_empty()));
                                }
                                masquerading = p;
                            }
                            (Job::Masquerade(_), _) => {}
                            (Job::FilterAdd(dev), Some(f)) => f.add(&dev),
                            (Job::FilterForget(dev), Some(f)) => f.forget(&dev),
                            (Job::FilterRecheck, Some(f)) => f.recheck(),
                            (_, None) => {}
                        }
                    }
                    if want.is_some() {
                        wanted = want;
                    }
                    if let (Some(wanted), true) = (&wanted, sets > 0 || resync) {
                        let mut foreign = None;
                        if resync {
                            // What the kernel has now, not what we installed; routes left to
                            // the host's own are looked at again (theirs may be gone).
                            let (ours, theirs) =
                                table(ipv6, true).map_or((None, Default::default()), |t| (t.ours, t.foreign));
                            if let Some(now) = ours {
                                installed = now;
                            }
                            left_alone.retain(|r: &routes::KernelRoute| theirs.contains(&r.prefix()));
                            foreign = Some(theirs);
                        }
                        let known = Known { foreign, retry };
                        installed = sync(&installed, wanted.clone(), tun, known, &mut left_alone);
                        let missing = installed.len() + left_alone.len() < wanted.len();
                        retry_at = match (missing, retry) {
                            (false, _) => None,
                            (true, true) => {
                                backoff = (backoff * 2).min(RETRY_MAX);
                                Some(Instant::now() + backoff)
                            }
                            (true, false) if retry_at.is_some() => retry_at,
                            (true, false) => {
                                backoff = RETRY;
                                Some(Instant::now() + RETRY)
                            }
                        };
                    }
                    if let Some(f) = &filter {
                        *shown.lock().unwrap_or_else(|e| e.into_inner()) = Some(f.devs.clone());
                    }
                    finished.fetch_add(sets, Ordering::Release);
                }
                if tun && masquerading.any() {
                    masquerade(&forwarding::nat::NatPolicy::default());
                }
                filter
            })
            .context("starting the kernel thread")?;
        Ok(KernelWork { tx: Some(tx), thread: Some(thread), sent: 0, done, filtered, ipv6 })
    }

    fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    /// The routes the kernel should have; installed soon, not now.
    pub(super) fn want(&mut self, routes: Vec<routes::KernelRoute>) {
        if self.send(Job::Routes(routes)) {
            self.sent += 1;
        }
    }

    /// Whether the kernel has the last set asked for.
    pub(super) fn in_sync(&self) -> bool {
        self.done.load(Ordering::Acquire) == self.sent
    }

    pub(super) fn filter_add(&self, dev: &str) {
        self.send(Job::FilterAdd(dev.to_string()));
    }

    pub(super) fn filter_forget(&self, dev: &str) {
        self.send(Job::FilterForget(dev.to_string()));
    }

    pub(super) fn filter_recheck(&self) {
        self.send(Job::FilterRecheck);
    }

    /// Links changed: puts back what the kernel took away of ours.
    pub(super) fn resync(&self) {
        self.send(Job::Resync);
    }

    /// The pools to masquerade (applied when it changes): tun, by the kernel's rules; afpacket,
    /// the transit filter keeps the ports of masqueraded flows from the kernel.
    pub(super) fn masquerade(&self, policy: forwarding::nat::NatPolicy) {
        self.send(Job::Masquerade(policy));
    }

    /// The interfaces that have the transit filter; None without one.
    pub(super) fn filtered(&self) -> Option<Vec<String>> {
        self.filtered.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the thread, removes the transit filter, then every kernel route of ours:
    /// what this run installed would otherwise route the node's traffic into a `tunl0` that
    /// is gone or to blocks nobody announces any more. A planned restart (`keep_routes`)
    /// leaves them to the next run, as it leaves its forwarding state: the node's own
    /// traffic, BGP's first connections included, keeps its routes across the restart.
    pub(super) fn stop(&mut self, keep_routes: bool) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            if let Ok(Some(f)) = t.join() {
                f.remove();
            }
        }
        if !keep_routes {
            flush(self.ipv6);
        }
    }
}

/// The nftables table of the tun data plane's masquerade.
const NAT_TABLE: &str = "router-nat";

/// The rules that make the kernel masquerade as Calico's `natOutgoing` does where the kernel
/// forwards (tun): from a masquerading pool to outside every pool, the source becomes the
/// address the packet leaves by, with a random port (Calico's `--random-fully`). The table is
/// replaced whole in one transaction; no pool masquerading removes it. IPv6 pools alike, in
/// a table of the `ip6` family.
pub(super) fn masquerade_rules(p: &forwarding::nat::NatPolicy) -> String {
    // `add` then `delete`: removes a table whether or not it exists.
    let mut s = format!("add table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n");
    s.push_str(&format!("add table ip6 {NAT_TABLE}\ndelete table ip6 {NAT_TABLE}\n"));
    let list = |nets: Vec<String>| nets.join(", ");
    let mut table = |family: &str, kind: &str, masq: Vec<String>, all: Vec<String>| {
        if masq.is_empty() {
            return;
        }
        s.push_str(&format!(
            "table {family} {NAT_TABLE} {{\n\
             \tset masq-pools {{ type {kind}; flags interval; elements = {{ {} }} }}\n\
             \tset all-pools {{ type {kind}; flags interval; elements = {{ {} }} }}\n\
             \tchain postrouting {{\n\
             \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
             \t\t{family} saddr @masq-pools {family} daddr != @all-pools masquerade fully-random\n\
             \t}}\n\
             }}\n",
            list(masq),
            list(all)
        ));
    };
    let text = |nets: &[ipnet::Ipv4Net]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let text6 = |nets: &[ipnet::Ipv6Net]| nets.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    table("ip", "ipv4_addr", text(&p.masquerade), text(&p.pools));
    table("ip6", "ipv6_addr", text6(&p.masquerade6), text6(&p.pools6));
    s
}

fn masquerade(p: &forwarding::nat::NatPolicy) {
    match ipcmd::nft(&masquerade_rules(p)) {
        Ok(()) if !p.any() => tracing::info!("masquerade off"),
        Ok(()) => tracing::info!(
            pools = ?p.masquerade,
            pools6 = ?p.masquerade6,
            "the kernel masquerades these pools' pods (natOutgoing)"
        ),
        Err(e) => tracing::warn!(error = %e, "natOutgoing not applied: pods leave the pools with their own address"),
    }
}

/// Removes every kernel route of ours (`proto 179`).
fn flush(ipv6: bool) {
    let families: &[&str] = if ipv6 { &["-4", "-6"] } else { &["-4"] };
    for family in families {
        match ipcmd::ip(&[family, "route", "flush", "proto", routes::KERNEL_PROTO]) {
            Ok(_) => {}
            // A main table with no route at all: nothing of ours to remove.
            Err(e) if e.to_string().contains("FIB table does not exist") => {}
            Err(e) => tracing::warn!(error = %e, family, "could not flush our kernel routes"),
        }
    }
}

/// The main table of each family in one listing: the prefixes of everyone else's routes and,
/// with `ours`, our routes (`proto 179`) in the terms [`sync`] compares (left empty without:
/// in tun mode ours may be a peer's million routes). None where it cannot be listed.
fn table(ipv6: bool, ours: bool) -> Option<Listing> {
    let mut all = Listing { ours: Some(Vec::new()), foreign: Default::default() };
    for family in if ipv6 { &["-4", "-6"][..] } else { &["-4"][..] } {
        let out = ipcmd::ip(&["-j", family, "route", "show", "table", "main"]).ok()?;
        let one = split(&out, *family == "-6", ours)?;
        all.ours = all.ours.zip(one.ours).map(|(mut a, b)| {
            a.extend(b);
            a
        });
        all.foreign.extend(one.foreign);
    }
    Some(all)
}

/// What [`table`] found.
struct Listing {
    /// Ours; None when one is of a shape we never install (then they are flushed).
    ours: Option<Vec<routes::KernelRoute>>,
    foreign: std::collections::HashSet<ipnet::IpNet>,
}

/// The prefix of a route's `dst` as `ip -j route show` writes it (`default`, a bare address
/// for a host route).
fn dst_prefix(dst: &str, v6: bool) -> Option<ipnet::IpNet> {
    match dst {
        "default" if v6 => "::/0".parse().ok(),
        "default" => "0.0.0.0/0".parse().ok(),
        d if d.contains('/') => d.parse().ok(),
        d => d.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from),
    }
}

/// The fields of one route of `ip -j route show` that we read, borrowed: in tun mode the
/// table may hold a peer's million routes.
#[derive(serde::Deserialize)]
struct Listed<'a> {
    #[serde(borrow, default)]
    dst: &'a str,
    #[serde(borrow, default)]
    protocol: Option<&'a str>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a str>,
    #[serde(borrow, default)]
    gateway: Option<&'a str>,
    #[serde(borrow, default)]
    dev: Option<&'a str>,
}

/// One route as we install them; None for a shape we never make.
fn parse_route(r: &Listed<'_>, v6: bool) -> Option<routes::KernelRoute> {
    let prefix = dst_prefix(r.dst, v6)?;
    let dev = r.dev.map(str::to_string);
    Some(match (r.kind.unwrap_or("unicast"), r.gateway, dev) {
        ("blackhole", None, _) => routes::KernelRoute::Blackhole { prefix },
        ("unicast", Some(gw), Some(dev)) => routes::KernelRoute::Via { prefix, gateway: gw.parse().ok()?, dev },
        ("unicast", None, Some(dev)) => routes::KernelRoute::Dev { prefix, dev },
        _ => return None,
    })
}

/// `ip -j route show` output told apart: ours, and the prefixes of the others (the host's
/// default route, its subnets' routes, what its administrator or the lab set).
fn split(listing: &str, v6: bool, read_ours: bool) -> Option<Listing> {
    let list: Vec<Listed<'_>> = serde_json::from_str(listing).ok()?;
    let mut found = Listing { ours: Some(Vec::new()), foreign: Default::default() };
    for r in &list {
        if r.protocol != Some(routes::KERNEL_PROTO) {
            found.foreign.extend(dst_prefix(r.dst, v6));
        } else if read_ours {
            // One of a shape we never install: the listing of ours is not to be trusted.
            found.ours = found.ours.zip(parse_route(r, v6)).map(|(mut v, k)| {
                v.push(k);
                v
            });
        }
    }
    Some(found)
}

/// What [`sync`] is told besides the routes: the host's prefixes where they were just listed,
/// and whether this is a try again of routes whose failures were logged then.
struct Known {
    foreign: Option<std::collections::HashSet<ipnet::IpNet>>,
    retry: bool,
}

/// Brings the kernel from `have` to `want`; what is installed afterwards. A route we want
/// for a prefix the kernel already routes by someone else's route (the host's default route,
/// its other subnets) is left to its owner and kept in `left_alone`: replacing it would make it
/// ours, and our stop would then take the host's route away with ours.
fn sync(
    have: &[routes::KernelRoute],
    want: Vec<routes::KernelRoute>,
    tun: bool,
    known: Known,
    left_alone: &mut std::collections::HashSet<routes::KernelRoute>,
) -> Vec<routes::KernelRoute> {
    let wanted: std::collections::HashSet<&routes::KernelRoute> = want.iter().collect();
    let had: std::collections::HashSet<&routes::KernelRoute> = have.iter().collect();
    let gone: Vec<&routes::KernelRoute> = have.iter().filter(|k| !wanted.contains(k)).collect();
    left_alone.retain(|r| wanted.contains(r));
    let mut new: Vec<routes::KernelRoute> =
        want.iter().filter(|r| !had.contains(r) && !left_alone.contains(*r)).cloned().collect();
    if !new.is_empty() {
        let foreign = known.foreign.unwrap_or_else(|| {
            table(new.iter().any(|r| r.prefix().addr().is_ipv6()), false).map(|t| t.foreign).unwrap_or_default()
        });
        new.retain(|r| {
            let theirs = foreign.contains(&r.prefix());
            // A pod's route as the lab or the CNI plugin made it is the usual case, not news.
            match (theirs, r.pod_dev().is_some()) {
                (false, _) => {}
                (true, true) => tracing::debug!(route = %r.args().join(" "), "the pod's own route is in place"),
                (true, false) => tracing::info!(
                    ours = %r.args().join(" "),
                    "the kernel routes this prefix already, by a route that is not ours: theirs left as it is, ours not added"
                ),
            }
            if theirs {
                left_alone.insert(r.clone());
            }
            !theirs
        });
    }
    let want: Vec<routes::KernelRoute> = want.into_iter().filter(|r| !left_alone.contains(r)).collect();
    if gone.is_empty() && new.is_empty() {
        return want;
    }
    // One `ip` for all the changes: a process per route made a pool change across a
    // 50-node cluster take seconds. Only if that fails, route by route, to say which.
    let line = |verb: &str, r: &routes::KernelRoute| format!("route {verb} {}\n", r.args().join(" "));
    let script: String = gone.iter().map(|r| line("del", r)).chain(new.iter().map(|r| line("replace", r))).collect();
    if ipcmd::ip_batch(&script).is_ok() {
        return want;
    }
    for old in gone {
        let mut v = vec!["route", "del"];
        let args = old.args();
        v.extend(args.iter().map(String::as_str));
        if let Err(e) = ipcmd::ip(&v) {
            tracing::debug!(error = %e, "kernel route already gone");
        }
    }
    let mut installed: Vec<routes::KernelRoute> = want.iter().filter(|r| had.contains(r)).cloned().collect();
    for r in new {
        let args = r.args();
        let mut v = vec!["route", "replace"];
        v.extend(args.iter().map(String::as_str));
        match ipcmd::ip(&v) {
            Ok(_) => installed.push(r.clone()),
            // Tried again later: said when it first failed, not every time.
            Err(e) if known.retry => tracing::debug!(error = %e, "kernel route still not installed"),
            // A pod that left between the set and now (`podman run --rm` of a short command):
            // the next set takes its route away anyway.
            Err(e) if r.pod_dev().is_some_and(|d| netsys::link_info(d).is_err()) => {
                tracing::debug!(error = %e, "kernel route not installed: its interface is gone")
            }
            Err(e) if tun => tracing::error!(error = %e, "kernel route not installed: pod traffic will not flow"),
            // afpacket: these serve only the node's own traffic.
            Err(e) => tracing::warn!(error = %e, "kernel route not installed"),
        }
    }
    installed
}

impl Node {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_own_routes_are_told_from_ours() {
        // `ip -j route show table main` of a tun node: the host's default route and subnet
        // routes, a pod's /32 (the lab's), and ours.
        let listing = r#"[{"dst":"default","gateway":"192.168.100.1","dev":"eth0","flags":[]},
            {"type":"blackhole","dst":"10.244.1.0/26","protocol":"179","flags":[]},
            {"dst":"10.244.1.1","dev":"cali48dfb98be23","scope":"link","flags":[]},
            {"dst":"10.244.2.0/26","gateway":"192.168.100.101","dev":"eth0","protocol":"179","flags":[]},
            {"dst":"192.168.100.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.168.100.100","flags":[]},
            {"dst":"192.168.200.0/24","gateway":"192.168.100.1","dev":"eth0","protocol":"boot","flags":[]}]"#;
        let got = split(listing, false, true).expect("a listing");
        let mut theirs: Vec<String> = got.foreign.iter().map(|p| p.to_string()).collect();
        theirs.sort();
        assert_eq!(theirs, ["0.0.0.0/0", "10.244.1.1/32", "192.168.100.0/24", "192.168.200.0/24"]);
        let net = |s: &str| s.parse::<ipnet::IpNet>().expect("net");
        let gw = "192.168.100.101".parse().expect("gateway");
        assert_eq!(
            got.ours,
            Some(vec![
                routes::KernelRoute::Blackhole { prefix: net("10.244.1.0/26") },
                routes::KernelRoute::Via { prefix: net("10.244.2.0/26"), gateway: gw, dev: "eth0".into() },
            ])
        );
        // Without ours asked for, the host's prefixes alone.
        let foreign = split(listing, false, false).expect("a listing");
        assert_eq!((foreign.ours, foreign.foreign.len()), (Some(vec![]), 4));
        let v6 = r#"[{"dst":"default","gateway":"fd00::1","dev":"eth0","protocol":"ra","flags":[]}]"#;
        let got = split(v6, true, true).expect("a listing");
        assert_eq!((got.ours, got.foreign.into_iter().collect::<Vec<_>>()), (Some(vec![]), vec![net("::/0")]));
        assert!(split("not json", false, true).is_none());
    }

    #[test]
    fn routes_listed_by_ip_read_back_as_the_ones_installed() {
        // Our routes in `ip -j route show` of a dual-stack tun node, and a route we never make.
        let v4 = r#"[{"dst":"10.244.1.0/26","dev":"tunl0","scope":"link","flags":[]},
            {"type":"blackhole","dst":"10.244.3.0/26","flags":[]},
            {"dst":"192.168.100.0/24","gateway":"192.168.200.1","dev":"eth0","flags":[]},
            {"dst":"10.244.2.7","dev":"cali0123456789a","scope":"link","flags":[]}]"#;
        let v6 = r#"[{"type":"blackhole","dst":"fd00:10:244::80/122","dev":"lo","metric":1024,"flags":[]},
            {"dst":"default","gateway":"fe80::1","dev":"eth0","metric":1024,"flags":[]}]"#;
        let parse = |json: &str, v6: bool| -> Vec<Option<routes::KernelRoute>> {
            let list: Vec<Listed<'_>> = serde_json::from_str(json).expect("json");
            list.iter().map(|r| parse_route(r, v6)).collect()
        };
        let net = |s: &str| s.parse::<ipnet::IpNet>().expect("net");
        let dev = |d: &str| d.to_string();
        use routes::KernelRoute::*;
        assert_eq!(
            parse(v4, false),
            [
                Some(Dev { prefix: net("10.244.1.0/26"), dev: dev("tunl0") }),
                Some(Blackhole { prefix: net("10.244.3.0/26") }),
                Some(Via {
                    prefix: net("192.168.100.0/24"),
                    gateway: "192.168.200.1".parse().expect("gateway"),
                    dev: dev("eth0")
                }),
                Some(Dev { prefix: net("10.244.2.7/32"), dev: dev("cali0123456789a") }),
            ]
        );
        assert_eq!(
            parse(v6, true),
            [
                Some(Blackhole { prefix: net("fd00:10:244::80/122") }),
                Some(Via { prefix: net("::/0"), gateway: "fe80::1".parse().expect("gateway"), dev: dev("eth0") }),
            ]
        );
        // A shape we never install (here: unreachable) is not guessed at: the node flushes.
        let odd: Listed<'_> = serde_json::from_str(r#"{"type":"unreachable","dst":"10.9.0.0/16"}"#).expect("json");
        assert_eq!(parse_route(&odd, false), None);
        let odd = r#"[{"type":"unreachable","dst":"10.9.0.0/16","protocol":"179"}]"#;
        assert_eq!(split(odd, false, true).map(|l| l.ours), Some(None));
    }

    #[test]
    fn masquerade_rules_have_a_table_per_family_that_masquerades() {
        let net = |s: &str| s.parse().expect("net");
        let off = masquerade_rules(&forwarding::nat::NatPolicy::default());
        assert_eq!(
            off,
            "add table ip router-nat\ndelete table ip router-nat\nadd table ip6 router-nat\ndelete table ip6 router-nat\n"
        );
        let v6 = forwarding::nat::NatPolicy {
            masquerade6: vec![net("fd00:10:244::/48")],
            pools6: vec![net("fd00:10:244::/48"), net("fd00:10:245::/48")],
            ..Default::default()
        };
        let r = masquerade_rules(&v6);
        assert!(!r.contains("table ip router-nat {"), "no IPv4 pool masquerades:\n{r}");
        assert!(r.contains("table ip6 router-nat {") && r.contains("type ipv6_addr"), "{r}");
        assert!(r.contains("elements = { fd00:10:244::/48, fd00:10:245::/48 }"), "{r}");
        assert!(r.contains("ip6 saddr @masq-pools ip6 daddr != @all-pools masquerade fully-random"), "{r}");
    }
}
