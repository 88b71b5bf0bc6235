//! Prometheus text exposition (format 0.0.4) of a node's state, and the small HTTP endpoint
//! that serves it. Off unless the node config names an address (Calico's Felix uses 9091).

use forwarding::counters::Totals;
use nodeapi::admin::PeerStatus;
use std::fmt::Write as _;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// What the node knows, gathered for one scrape.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub interfaces: Vec<String>,
    pub totals: &'a Totals,
    pub fib_routes: usize,
    pub fib_routes6: usize,
    pub fib_memory_bytes: usize,
    pub neighbours: usize,
    pub nat_flows: usize,
    pub uptime_secs: f64,
    pub peers: &'a [PeerStatus],
    /// Whether etcd answers; `None` for a node without a datastore.
    pub datastore_up: Option<bool>,
}

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", esc(v))).collect();
            let _ = write!(self.0, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }
}

pub fn render(s: &Snapshot<'_>) -> String {
    let mut o = Out(String::new());
    o.family("router_build_info", "gauge", "Version of the router binary.");
    o.sample("router_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    o.family("router_uptime_seconds", "gauge", "Seconds since the node daemon started.");
    o.sample("router_uptime_seconds", &[], s.uptime_secs);
    if let Some(up) = s.datastore_up {
        o.family(
            "router_datastore_up",
            "gauge",
            "1 while etcd answers the node, 0 while it forwards with what it last read.",
        );
        o.sample("router_datastore_up", &[], if up { 1.0 } else { 0.0 });
    }

    o.family("router_interface_packets_total", "counter", "Packets the data plane received or sent on an interface.");
    for (name, c) in s.interfaces.iter().zip(&s.totals.ifaces) {
        o.sample("router_interface_packets_total", &[("interface", name), ("direction", "rx")], c.rx_packets as f64);
        o.sample("router_interface_packets_total", &[("interface", name), ("direction", "tx")], c.tx_packets as f64);
    }
    o.family("router_interface_bytes_total", "counter", "Bytes the data plane received or sent on an interface.");
    for (name, c) in s.interfaces.iter().zip(&s.totals.ifaces) {
        o.sample("router_interface_bytes_total", &[("interface", name), ("direction", "rx")], c.rx_bytes as f64);
        o.sample("router_interface_bytes_total", &[("interface", name), ("direction", "tx")], c.tx_bytes as f64);
    }
    o.family("router_drops_total", "counter", "Packets dropped, by reason.");
    for (reason, n) in &s.totals.drops {
        o.sample("router_drops_total", &[("reason", reason)], *n as f64);
    }
    for (name, help, v) in [
        ("router_icmp_errors_sent_total", "ICMP errors the router originated.", s.totals.tallies.icmp_errors_sent),
        (
            "router_arp_replies_sent_total",
            "Proxy-ARP replies for the pods' gateway.",
            s.totals.tallies.arp_replies_sent,
        ),
        (
            "router_ndp_replies_sent_total",
            "Proxy-NDP advertisements for the pods' IPv6 gateway.",
            s.totals.tallies.ndp_replies_sent,
        ),
        ("router_ipip_encapsulated_total", "Packets wrapped in IPIP.", s.totals.tallies.ipip_encapsulated),
        ("router_ipip_decapsulated_total", "IPIP packets unwrapped.", s.totals.tallies.ipip_decapsulated),
        ("router_vxlan_encapsulated_total", "Packets wrapped in VXLAN.", s.totals.tallies.vxlan_encapsulated),
        ("router_vxlan_decapsulated_total", "VXLAN packets unwrapped.", s.totals.tallies.vxlan_decapsulated),
        ("router_fragments_sent_total", "Fragments the router made.", s.totals.tallies.fragments_sent),
        ("router_gso_received_total", "Offloaded TCP super-packets received whole.", s.totals.tallies.gso_received),
        (
            "router_gso_segments_total",
            "Segments the router cut from super-packets (for IPIP).",
            s.totals.tallies.gso_segments,
        ),
        (
            "router_udp_gso_sent_total",
            "UDP super-packets sent whole (VXLAN segments behind one outer header).",
            s.totals.tallies.udp_gso_sent,
        ),
        (
            "router_udp_gso_received_total",
            "UDP super-packets received: VXLAN merged whole where its datagrams are one TCP run, anything else cut into its datagrams.",
            s.totals.tallies.udp_gso_received,
        ),
        (
            "router_gro_packets_total",
            "Super-packets the router built by merging TCP segments: for a pod, or out of a VXLAN UDP super-packet.",
            s.totals.tallies.gro_packets,
        ),
        ("router_gro_segments_total", "TCP segments merged into those super-packets.", s.totals.tallies.gro_segments),
        (
            "router_nat_masqueraded_total",
            "Packets of pools with natOutgoing that left with the node's address.",
            s.totals.tallies.nat_masqueraded,
        ),
        (
            "router_nat_restored_total",
            "Answers to masqueraded packets taken back to their pod.",
            s.totals.tallies.nat_restored,
        ),
    ] {
        o.family(name, "counter", help);
        o.sample(name, &[], v as f64);
    }
    o.family("router_fib_routes", "gauge", "IPv4 prefixes in the FIB.");
    o.sample("router_fib_routes", &[], s.fib_routes as f64);
    o.family("router_fib_routes_ipv6", "gauge", "IPv6 prefixes in the FIB.");
    o.sample("router_fib_routes_ipv6", &[], s.fib_routes6 as f64);
    o.family("router_fib_memory_bytes", "gauge", "Approximate memory of the FIB's lookup structure.");
    o.sample("router_fib_memory_bytes", &[], s.fib_memory_bytes as f64);
    o.family("router_nat_flows", "gauge", "Masqueraded flows the node keeps (natOutgoing).");
    o.sample("router_nat_flows", &[], s.nat_flows as f64);
    o.family("router_arp_entries", "gauge", "Neighbours in the router's table, ARP and NDP (any state).");
    o.sample("router_arp_entries", &[], s.neighbours as f64);

    o.family("router_bgp_session_up", "gauge", "1 when the BGP session with the peer is Established.");
    for p in s.peers {
        let kind =
            serde_json::to_value(p.peer_type).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let peer = p.peer.to_string();
        o.sample(
            "router_bgp_session_up",
            &[("peer", &peer), ("peer_type", &kind)],
            if p.state == "up" { 1.0 } else { 0.0 },
        );
    }
    type PerPeer = (&'static str, &'static str, &'static str, fn(&PeerStatus) -> f64);
    let per_peer: [PerPeer; 10] = [
        ("router_bgp_session_flaps_total", "counter", "Times the session left Established.", |p| p.flaps as f64),
        ("router_bgp_updates_received_total", "counter", "UPDATE messages received.", |p| p.updates_received as f64),
        ("router_bgp_updates_sent_total", "counter", "UPDATE messages sent.", |p| p.updates_sent as f64),
        ("router_bgp_messages_received_total", "counter", "BGP messages of every type received.", |p| {
            p.messages_received as f64
        }),
        ("router_bgp_messages_sent_total", "counter", "BGP messages of every type sent.", |p| p.messages_sent as f64),
        ("router_bgp_received_bytes_total", "counter", "Bytes of BGP messages received.", |p| p.bytes_received as f64),
        ("router_bgp_sent_bytes_total", "counter", "Bytes of BGP messages sent.", |p| p.bytes_sent as f64),
        ("router_bgp_prefixes_received", "gauge", "Prefixes in the peer's Adj-RIB-In.", |p| p.received as f64),
        ("router_bgp_prefixes_rejected", "gauge", "Prefixes the peer sent that import refused.", |p| p.rejected as f64),
        ("router_bgp_prefixes_advertised", "gauge", "Prefixes in the peer's Adj-RIB-Out.", |p| p.advertised as f64),
    ];
    for (name, kind, help, f) in per_peer {
        o.family(name, kind, help);
        for p in s.peers {
            o.sample(name, &[("peer", &p.peer.to_string())], f(p));
        }
    }
    o.0
}

/// Whether an HTTP request line asks for the metrics: `GET /metrics` or `GET /`, with any
/// query (a scrape config's `params` adds one).
fn asks_for_metrics(request_line: &str) -> bool {
    let mut words = request_line.split(' ');
    let (method, target) = (words.next(), words.next().map(|t| t.split('?').next().unwrap_or(t)));
    method == Some("GET")
        && matches!(target, Some("/metrics" | "/"))
        && words.next().is_some_and(|v| v.starts_with("HTTP/"))
}

/// Answers one HTTP request on `stream` with `body` for `GET /metrics` (404 otherwise).
pub fn serve_http(mut stream: TcpStream, body: impl FnOnce() -> String) -> std::io::Result<()> {
    // The whole request within the deadline, however slowly it trickles in.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let req = nodeapi::admin::read_until(
        &stream,
        |t| stream.set_read_timeout(Some(t)),
        deadline,
        8192,
        |b| b.windows(4).any(|w| w == b"\r\n\r\n"),
    )?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let line = String::from_utf8_lossy(&req);
    let (status, ctype, body) = if asks_for_metrics(line.lines().next().unwrap_or("")) {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", body())
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_metrics_are_asked_for_with_or_without_a_query() {
        for line in ["GET /metrics HTTP/1.1", "GET / HTTP/1.0", "GET /metrics?name[]=x HTTP/1.1", "GET /? HTTP/1.1"] {
            assert!(super::asks_for_metrics(line), "{line}");
        }
        for line in ["GET /metricsx HTTP/1.1", "POST /metrics HTTP/1.1", "GET /nope HTTP/1.1", "GET /metrics", ""] {
            assert!(!super::asks_for_metrics(line), "{line}");
        }
    }
}
