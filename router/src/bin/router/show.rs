//! What the node commands print for people: BGP status tables, counters, and the paths of a
//! prefix. `--json` prints the admin API's types instead.

use super::*;

/// `since` as UTC wall-clock time (today) or date, as calicoctl shows it.
pub(super) fn since(secs: u64) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (d, t) = (secs / 86400, secs % 86400);
    if d == now / 86400 {
        format!("{:02}:{:02}:{:02}", t / 3600, t % 3600 / 60, t % 60)
    } else {
        let (year, month, day) = nodeapi::civil::from_days(d as i64);
        format!("{year:04}-{month:02}-{day:02}")
    }
}

/// `router status` of one node: its peers, as a table or JSON.
pub(super) fn print_one_status(client: &admin::Client, json: bool) -> anyhow::Result<i32> {
    let st = client.bgp_status()?;
    if json {
        // The whole status, as each node's `status` in the every-node JSON: peers, the
        // datastore's health and notes, why BGP could not start.
        nodeapi::outln!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print_bgp_status(&st);
        // A refused count is a question; the reasons, counted per peer, answer it.
        if st.peers.iter().any(|p| p.rejected > 0) {
            print_refused(&client.refused_counts()?);
        }
        if let Some(d) = &st.datastore {
            nodeapi::outln!("{}", datastore_text(d));
        }
    }
    Ok(0)
}

/// Under the table: whether the node hears its datastore, and what it means when it does not.
fn datastore_text(d: &admin::DatastoreStatus) -> String {
    let at = d.endpoints.join(",");
    let mut text = match (d.answering, d.revision) {
        (true, rev) => format!(
            "Datastore: etcd {at} answers (since {}; read up to revision {})",
            since(d.since),
            rev.map_or_else(|| "-".into(), |r| r.to_string())
        ),
        (false, read) => format!(
            "Datastore: etcd {at} DOES NOT ANSWER since {} ({})\n  {}; what changes there reaches it when etcd answers again",
            since(d.since),
            d.error.as_deref().unwrap_or("not read yet"),
            if read.is_some() {
                "the node forwards and announces with what it last read"
            } else {
                "the node has not read it yet and runs on its config"
            },
        ),
    };
    // A resource that applies but is not used shows nowhere else but in the log.
    const SHOWN: usize = 10;
    for n in d.notes.iter().take(SHOWN) {
        text.push_str(&format!("\n  note: {n}"));
    }
    if d.notes.len() > SHOWN {
        text.push_str(&format!("\n  and {} more in the node's log", d.notes.len() - SHOWN));
    }
    text
}

/// Under the table: why each peer's routes were refused, reason by reason.
fn print_refused(counts: &[admin::RefusedCount]) {
    for c in counts {
        nodeapi::outln!("refused from {}: {} × {}", c.peer, c.count, c.reason);
    }
    nodeapi::outln!("(every refused prefix: router routes --rejected)");
}

/// One node's answer to `router status`, in the list of every node's.
#[derive(serde::Serialize)]
pub(super) struct NodeBgp {
    node: String,
    #[serde(flatten)]
    status: Option<admin::BgpStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// `router status` in a lab, without `--node`: a line per node (its sessions up of all, and
/// why the others are not), asked of every node at once. Non-zero when a node does not
/// answer, as `--node` is.
pub(super) fn every_node_status(daemons: &[lab::state::Daemon], json: bool) -> anyhow::Result<i32> {
    let answers: Vec<NodeBgp> = std::thread::scope(|s| {
        let asks: Vec<_> = daemons
            .iter()
            .map(|d| (d.node.clone(), s.spawn(|| admin::Client::new(d.socket.clone()).bgp_status())))
            .collect();
        asks.into_iter()
            .map(|(node, ask)| match ask.join() {
                Ok(Ok(st)) => NodeBgp { node, status: Some(st), error: None },
                Ok(Err(e)) => NodeBgp { node, status: None, error: Some(format!("does not answer: {e}")) },
                Err(_) => NodeBgp { node, status: None, error: Some("asking it failed".into()) },
            })
            .collect()
    });
    let code = if answers.iter().all(|a| a.status.is_some()) { 0 } else { 1 };
    if json {
        nodeapi::outln!("{}", serde_json::to_string_pretty(&answers)?);
        return Ok(code);
    }
    let width = answers.iter().map(|a| a.node.len()).max().unwrap_or(0).max(4);
    nodeapi::outln!("{:<width$}  {:<10}  {:<15}  {:<8}  NOT UP", "NODE", "AS", "ROUTER ID", "UP");
    for a in &answers {
        // Sessions up may hide a node that no longer hears the cluster's changes.
        let deaf = a
            .status
            .as_ref()
            .and_then(|s| s.datastore.as_ref())
            .filter(|d| !d.answering)
            .map(|d| format!("etcd does not answer it (since {})", since(d.since)));
        let line = match (&a.status, &a.error) {
            (Some(st), _) if st.configured => {
                let up = st.peers.iter().filter(|p| p.state == "up").count();
                let down: Vec<String> = st
                    .peers
                    .iter()
                    .filter(|p| p.state != "up")
                    .map(|p| format!("{} ({}: {})", p.peer, p.state, p.info))
                    .chain(deaf.clone())
                    .collect();
                format!(
                    "{:<10}  {:<15}  {:<8}  {}",
                    st.as_number.map_or_else(|| "-".into(), |n| n.to_string()),
                    st.router_id.map_or_else(|| "-".into(), |r| r.to_string()),
                    format!("{up}/{}", st.peers.len()),
                    if down.is_empty() { "-".into() } else { down.join("; ") }
                )
            }
            (Some(st), _) => match &st.failed {
                Some(why) => format!("BGP could not start ({why}); trying again"),
                None => "BGP is not configured on this node".into(),
            },
            (None, e) => e.clone().unwrap_or_default(),
        };
        let line = match (deaf, a.status.as_ref().is_some_and(|s| s.configured)) {
            (Some(d), false) => format!("{line}; {d}"),
            _ => line,
        };
        nodeapi::outln!("{:<width$}  {line}", a.node);
    }
    nodeapi::outln!("One node's sessions: router status --node NODE");
    Ok(code)
}

pub(super) fn print_bgp_status(st: &admin::BgpStatus) {
    nodeapi::out!("{}", bgp_status_text(st));
}

/// calicoctl's "IPv4 BGP status" table of one node.
fn bgp_status_text(st: &admin::BgpStatus) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(why) = &st.failed {
        return format!("BGP could not start: {why}. The node tries again every few seconds.\n");
    }
    let (Some(asn), Some(id), true) = (st.as_number, st.router_id, st.configured) else {
        return "BGP is not configured on this node (no [bgp] in its config).\n".into();
    };
    let peers = &st.peers;
    // calicoctl's "IPv4 BGP status" table. Sessions over IPv4 carry IPv6 routes too where
    // both ends negotiated it (RFC 4760), and IPv6 peers have sessions over IPv6: one table
    // says which carry what, where calicoctl shows two.
    let v6_peers = peers.iter().any(|p| p.peer.is_ipv6());
    let dual = v6_peers || peers.iter().any(|p| p.families.iter().any(|f| f == "ipv6"));
    let title = match (dual, v6_peers) {
        (true, true) => format!("IPv4 and IPv6 BGP status (AS {asn}, router ID {id})"),
        (true, false) => {
            format!("IPv4 and IPv6 BGP status (AS {asn}, router ID {id}; IPv6 routes over the same sessions)")
        }
        _ => format!("IPv4 BGP status (AS {asn}, router ID {id})"),
    };
    let _ = writeln!(out, "{title}");
    if peers.is_empty() {
        // As calicoctl says it; an empty table looks like a lost answer.
        let _ = writeln!(out, "No IPv4 peers found.");
        return out;
    }
    // calicoctl's columns, and the route counts: received and used / refused by import
    // policy (`router routes --rejected`) / advertised; each as wide as what it holds (a
    // session's reason can be long), calicoctl's widths the least.
    let mut cols = vec![("PEER ADDRESS", 15), ("PEER TYPE", 22), ("STATE", 11), ("SINCE", 10)];
    if dual {
        cols.push(("FAMILIES", 9));
    }
    cols.extend([("IN/REFUSED/OUT", 14), ("INFO", 11)]);
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            let kind =
                serde_json::to_value(p.peer_type).ok().and_then(|k| k.as_str().map(str::to_string)).unwrap_or_default();
            let mut cells = vec![p.peer.to_string(), kind, p.state.clone(), since(p.since)];
            if dual {
                cells.push(p.families.join(","));
            }
            cells.extend([format!("{}/{}/{}", p.received, p.rejected, p.advertised), p.info.clone()]);
            cells
        })
        .collect();
    for (i, (_, w)) in cols.iter_mut().enumerate() {
        *w = rows.iter().map(|r| r[i].chars().count()).fold(*w, usize::max);
    }
    let row = |cells: &[String]| {
        let c: Vec<String> = cells.iter().zip(&cols).map(|(s, (_, w))| format!("{s:<w$}")).collect();
        format!("| {} |", c.join(" | "))
    };
    let line = format!("+{}+", cols.iter().map(|(_, n)| "-".repeat(n + 2)).collect::<Vec<_>>().join("+"));
    let _ = writeln!(out, "{line}");
    let _ = writeln!(out, "{}", row(&cols.iter().map(|(h, _)| h.to_string()).collect::<Vec<_>>()));
    let _ = writeln!(out, "{line}");
    for cells in &rows {
        let _ = writeln!(out, "{}", row(cells));
    }
    let _ = writeln!(out, "{line}");
    out
}

pub(super) fn print_stats(v: &admin::Stats) {
    nodeapi::outln!(
        "{:<16} {:>12} {:>14} {:>12} {:>14}",
        "Interface",
        "RX packets",
        "RX bytes",
        "TX packets",
        "TX bytes"
    );
    for i in &v.interfaces {
        nodeapi::outln!(
            "{:<16} {:>12} {:>14} {:>12} {:>14}",
            i.interface,
            i.counts.rx_packets,
            i.counts.rx_bytes,
            i.counts.tx_packets,
            i.counts.tx_bytes
        );
    }
    nodeapi::outln!(
        "\nIPIP encapsulated: {}   decapsulated: {}   VXLAN encapsulated: {}   decapsulated: {}",
        v.tallies.ipip_encapsulated,
        v.tallies.ipip_decapsulated,
        v.tallies.vxlan_encapsulated,
        v.tallies.vxlan_decapsulated
    );
    nodeapi::outln!(
        "fragments sent: {}   ICMP errors sent: {}   proxy-ARP replies sent: {}   proxy-NDP replies sent: {}",
        v.tallies.fragments_sent,
        v.tallies.icmp_errors_sent,
        v.tallies.arp_replies_sent,
        v.tallies.ndp_replies_sent
    );
    nodeapi::outln!(
        "TCP super-packets received whole: {}   segments cut from them: {}   merged from segments: {} (of {} segments)",
        v.tallies.gso_received,
        v.tallies.gso_segments,
        v.tallies.gro_packets,
        v.tallies.gro_segments
    );
    nodeapi::outln!(
        "UDP super-packets sent whole (VXLAN): {}   received: {}",
        v.tallies.udp_gso_sent,
        v.tallies.udp_gso_received
    );
    nodeapi::outln!(
        "masqueraded (natOutgoing): {}   answers restored: {}   flows: {}",
        v.tallies.nat_masqueraded,
        v.tallies.nat_restored,
        v.nat_flows
    );
    match v.transit_filter.as_deref() {
        Some([]) => {
            nodeapi::outln!("transit filter: off (the node's kernel also routes, and drops, what the router forwards)")
        }
        Some(devs) => {
            nodeapi::outln!("transit filter: on {} (the node's kernel drops what the router forwards)", devs.join(", "))
        }
        None => {}
    }
    if let Some(why) = &v.tunnel_device_missing {
        nodeapi::outln!("tunnel device: missing: {why}");
    }
    if let Some(why) = &v.uplink_address_missing {
        nodeapi::outln!("uplink: address missing: {why}");
    }
    let drops: Vec<_> = v.drops.iter().filter(|(_, n)| **n != 0).collect();
    if drops.is_empty() {
        nodeapi::outln!("drops: none");
    } else {
        nodeapi::outln!("drops:");
        for (reason, count) in drops {
            nodeapi::outln!("  {reason:<24} {count}");
        }
    }
}

/// `router routes --detail`: each path with its attributes, the best first, and for the others
/// the step of RFC 4271 §9.1.2.2 that ruled them out.
pub(super) fn render_paths(prefix: &ipnet::IpNet, ps: &[admin::PathDetail]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if ps.is_empty() {
        let _ = writeln!(out, "{prefix}: no BGP path (not originated here, not learned)");
        return out;
    }
    let _ = writeln!(out, "{prefix}: {} path(s)", ps.len());
    let mut sorted: Vec<&admin::PathDetail> = ps.iter().collect();
    sorted.sort_by_key(|p| !p.best);
    for p in sorted {
        let verdict = match &p.lost_at {
            None => "BEST".to_string(),
            Some(step) => format!("lost: {step}"),
        };
        let kind = p
            .peer_type
            .map(|k| {
                format!(
                    " ({})",
                    serde_json::to_value(k).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let _ = writeln!(out, "  from {}{kind}: {verdict}{}", p.from, if p.stale { " [stale]" } else { "" });
        let path: Vec<String> = p.as_path.iter().map(|a| a.to_string()).collect();
        let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "    next hop {}  AS path [{}]  origin {}  local pref {}  MED {}",
            p.next_hop,
            path.join(" "),
            p.origin,
            opt(p.local_pref),
            opt(p.med)
        );
        let mut extra = Vec::new();
        if let Some(r) = p.router_id {
            extra.push(format!("router id {r}"));
        }
        if let Some(o) = p.originator_id {
            extra.push(format!("originator {o}"));
        }
        if !p.cluster_list.is_empty() {
            let cl: Vec<String> = p.cluster_list.iter().map(|c| c.to_string()).collect();
            extra.push(format!("cluster list [{}]", cl.join(" ")));
        }
        if !p.communities.is_empty() {
            extra.push(format!("communities {}", p.communities.join(" ")));
        }
        if !extra.is_empty() {
            let _ = writeln!(out, "    {}", extra.join("  "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_stays_a_box_with_a_long_reason_or_an_ipv6_peer() {
        let peer = |addr: &str, info: &str| {
            serde_json::from_value::<admin::PeerStatus>(serde_json::json!({
                "peer": addr, "peer_type": "global", "as_number": 65001, "state": "Active",
                "since": 0, "info": info, "received": 0, "advertised": 0,
            }))
            .expect("a peer")
        };
        let st = admin::BgpStatus {
            configured: true,
            failed: None,
            as_number: Some(64512),
            router_id: Some([192, 168, 100, 100].into()),
            peers: vec![
                peer("192.168.100.101", "Established"),
                peer("fd00:192:168:100::1", "connect: Connection refused (os error 111)"),
            ],
            datastore: None,
        };
        let text = bgp_status_text(&st);
        let table: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(table.len(), 6, "{text}");
        let width = table[0].chars().count();
        assert!(table.iter().all(|l| l.chars().count() == width), "{text}");
        let bars = |l: &str| l.match_indices(['|', '+']).map(|(i, _)| i).collect::<Vec<_>>();
        assert!(table.iter().all(|l| bars(l) == bars(table[0])), "{text}");
        assert!(text.contains("| connect: Connection refused (os error 111) |"), "{text}");
    }
}
