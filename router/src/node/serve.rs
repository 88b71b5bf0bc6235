//! What the node answers: admin requests (status, routes, stats, neighbours, captures,
//! traces) and Prometheus scrapes.

use super::*;

/// The counters, with the interface rows of the interfaces present only (slots of pods that
/// went are left out), and their names in the same order.
fn present_totals(dp: &Dataplane) -> (Vec<String>, forwarding::counters::Totals) {
    let mut t = dp.totals();
    let (names, rows) = dp
        .interfaces()
        .iter()
        .map(|(id, f)| (f.name.clone(), t.ifaces.get(usize::from(id.0)).cloned().unwrap_or_default()))
        .unzip();
    t.ifaces = rows;
    (names, t)
}

/// The Prometheus exposition of the node's counters and sessions.
pub(super) fn metrics_body(node: &Node, speaker: Option<&Speaker>) -> String {
    let (interfaces, totals) = present_totals(&node.dp);
    let fib = node.fib.load();
    let peers = speaker.map(|s| s.status()).unwrap_or_default();
    crate::metrics::render(&crate::metrics::Snapshot {
        interfaces,
        totals: &totals,
        fib_routes: fib.len(),
        fib_routes6: fib.v6().len(),
        fib_memory_bytes: fib.memory_bytes(),
        neighbours: node.dp.neighbours().len(),
        nat_flows: node.dp.nat_flows(),
        uptime_secs: node.started.elapsed().as_secs_f64(),
        peers: &peers,
        datastore_up: node.datastore_status().map(|d| d.answering),
    })
}

impl Node {
    /// Turns the workers' trace events into hops; ends a trace nobody stopped.
    pub(super) fn collect_trace(&mut self, sp: Option<&Speaker>) {
        let Some((id, _, until)) = &self.trace else { return };
        let (id, until) = (*id, *until);
        let rx = self.dp.tracer().receiver();
        while let Ok(e) = rx.try_recv() {
            if e.id != id {
                continue;
            }
            let h = crate::trace::hop(&self.cfg.name, self.dp.interfaces(), &|dst| self.route_for(dst, sp), &e);
            if let Some((_, hops, _)) = self.trace.as_mut() {
                hops.push(h);
            }
        }
        if Instant::now() > until {
            self.dp.tracer().stop();
        }
    }

    fn trace_request(&mut self, req: Request, sp: Option<&Speaker>) -> admin::Answer {
        match req {
            Request::TraceStart { id } => {
                while self.dp.tracer().receiver().try_recv().is_ok() {}
                self.trace = Some((id, Vec::new(), Instant::now() + Duration::from_secs(10)));
                self.dp.tracer().start(id);
                admin::answer(&())
            }
            Request::TraceCollect { id } => {
                self.collect_trace(sp);
                match &self.trace {
                    Some((tid, hops, _)) if *tid == id => admin::answer(hops),
                    _ => admin::answer(&Vec::<nodeapi::admin::Hop>::new()),
                }
            }
            _ => {
                self.dp.tracer().stop();
                self.trace = None;
                admin::answer(&())
            }
        }
    }

    /// Closes a capture that reached its count.
    pub(super) fn reap_capture(&mut self) {
        if self.capture.as_ref().is_some_and(|c| c.done()) {
            self.stop_capture();
        }
    }

    fn stop_capture(&mut self) -> Option<Result<u64, String>> {
        let c = self.capture.take()?;
        self.dp.tap().stop();
        let path = c.path.clone();
        let r = c.finish();
        if let Ok(n) = &r {
            tracing::info!(path = %path.display(), packets = n, "capture written");
            self.last_capture = Some((path, *n));
        }
        Some(r)
    }

    fn capture_request(&mut self, req: Request) -> admin::Answer {
        match req {
            Request::CaptureStart { path, interface, count, seconds, hosts } => {
                if let Some(c) = &self.capture {
                    return Err(format!("a capture into {} is already running; stop it first", c.path.display()));
                }
                if hosts.len() > admin::MAX_CAPTURE_HOSTS {
                    return Err(format!(
                        "a capture filters on {} addresses at most, not {}",
                        admin::MAX_CAPTURE_HOSTS,
                        hosts.len()
                    ));
                }
                let iface = match &interface {
                    Some(name) => Some(self.dp.interfaces().by_name(name).ok_or_else(|| {
                        let names: Vec<String> = self.dp.interfaces().iter().map(|(_, f)| f.name.clone()).collect();
                        format!("no interface {name:?} in this node's data plane; interfaces: {}", names.join(", "))
                    })?),
                    None => None,
                };
                let limits = crate::capture::Limits::capped(count, seconds);
                let c = crate::capture::Capture::start(&path, limits, self.dp.tap())?;
                self.dp.tap().start(iface, hosts);
                self.capture = Some(c);
                admin::answer(&admin::CaptureStarted { path, active: true })
            }
            Request::CaptureStop => match self.stop_capture() {
                Some(Ok(n)) => admin::answer(&admin::CaptureStopped { written: n }),
                Some(Err(e)) => Err(format!("the capture failed: {e}")),
                None => {
                    admin::answer(&admin::CaptureStopped { written: self.last_capture.as_ref().map_or(0, |c| c.1) })
                }
            },
            _ => {
                let lost = self.dp.tap().lost.load(std::sync::atomic::Ordering::Relaxed);
                admin::answer(&match &self.capture {
                    Some(c) => admin::CaptureStatus {
                        active: !c.done(),
                        path: Some(c.path.clone()),
                        written: c.written.load(std::sync::atomic::Ordering::Relaxed),
                        lost,
                        ended: c.ended.lock().ok().and_then(|e| *e).map(str::to_string),
                    },
                    None => admin::CaptureStatus {
                        active: false,
                        path: self.last_capture.as_ref().map(|c| c.0.clone()),
                        written: self.last_capture.as_ref().map_or(0, |c| c.1),
                        lost,
                        ended: None,
                    },
                })
            }
        }
    }
}

pub(super) fn answer(req: Request, node: &mut Node, speaker: Option<&Speaker>) -> admin::Answer {
    let (cfg, dp) = (&node.cfg, &node.dp);
    match req {
        Request::CaptureStart { .. } | Request::CaptureStop | Request::CaptureStatus => node.capture_request(req),
        Request::TraceStart { .. } | Request::TraceCollect { .. } | Request::TraceStop => {
            node.trace_request(req, speaker)
        }
        Request::Lookup { addr } => admin::answer(&node.route_for(addr, speaker)),
        Request::Pods => admin::answer(&node.pods()),
        // The control loop handles these itself: they need BGP to announce or withdraw.
        Request::PodAdd { .. } | Request::PodDel { .. } => Err("pod changes go through the control loop".into()),
        Request::Routes => admin::answer(&node.entries(speaker)),
        Request::GracefulRestart => {
            if cfg.bgp.as_ref().is_none_or(|b| b.graceful_restart_secs == 0) {
                return Err("graceful restart is off for this node (graceful_restart_secs = 0)".into());
            }
            node.restart_requested = true;
            admin::answer(&())
        }
        Request::Rejected { peer } => admin::answer(&speaker.map(|s| s.rejected(peer)).unwrap_or_default()),
        Request::RefusedCounts => admin::answer(&speaker.map(|s| s.refused_counts()).unwrap_or_default()),
        Request::Paths { prefix } => admin::answer(&speaker.map(|s| s.paths(&prefix)).unwrap_or_default()),
        Request::Neighbours => admin::answer(&dp.neighbours()),
        Request::BgpStatus => admin::answer(&admin::BgpStatus {
            configured: speaker.is_some(),
            failed: node.bgp_failed.as_ref().filter(|_| speaker.is_none()).map(|(why, _)| why.clone()),
            as_number: cfg.bgp.as_ref().map(|b| b.as_number),
            router_id: cfg.bgp.as_ref().map(|b| b.router_id.unwrap_or(cfg.uplink.address.addr())),
            peers: speaker.map(|s| s.status()).unwrap_or_default(),
            datastore: node.datastore_status(),
        }),
        Request::Stats => {
            let (names, t) = present_totals(dp);
            let interfaces = names
                .into_iter()
                .zip(t.ifaces)
                .map(|(interface, counts)| admin::InterfaceCounters { interface, counts })
                .collect();
            admin::answer(&admin::Stats {
                interfaces,
                drops: t.drops.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
                tallies: t.tallies,
                fib_routes: node.fib.load().len(),
                fib_routes6: node.fib.load().v6().len(),
                transit_filter: (cfg.dataplane == DataplaneMode::Afpacket)
                    .then(|| node.kernel.filtered().unwrap_or_default()),
                nat_flows: node.dp.nat_flows(),
                tunnel_device_missing: node.tunnel_missing.clone(),
                uplink_address_missing: node.uplink_missing.clone(),
            })
        }
        Request::Status => {
            let interfaces = dp
                .interfaces()
                .iter()
                .map(|(_, f)| admin::InterfaceStatus {
                    name: f.name.clone(),
                    role: f.role.name().to_string(),
                    address: match f.role {
                        IfaceRole::Uplink { addr } => addr.to_string(),
                        IfaceRole::Pod { addr, .. } => addr.to_string(),
                        IfaceRole::Tun | IfaceRole::RawIpip | IfaceRole::VxlanUdp => String::new(),
                    },
                    mac: f.mac.to_string(),
                    mtu: f.mtu,
                    ifindex: f.ifindex,
                })
                .collect();
            admin::answer(&admin::NodeStatus {
                name: cfg.name.clone(),
                pid: std::process::id(),
                dataplane: cfg.dataplane,
                workers: cfg.workers,
                uptime_secs: node.started.elapsed().as_secs(),
                routes: node.writer.len(),
                interfaces,
                kernel_routes_synced: node.kernel.in_sync(),
                pod_mtu: node.uplink_mtu().map(|m| cfg.pod_mtu(m)),
                ipv6: cfg.ipv6.is_some(),
            })
        }
    }
}
