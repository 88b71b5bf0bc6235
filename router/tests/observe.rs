//! Seeing inside: metrics (checked by a strict parser of the Prometheus text format),
//! captures and traces. These build namespaces and need root.

mod support;

use std::collections::HashMap;
use support::*;

/// A strict reader of the Prometheus text exposition format 0.0.4: every sample belongs to a
/// family declared with `# TYPE` before it, names and labels are well-formed, values parse,
/// counters end in `_total`. Returns `name{labels}` → value.
fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    let name_ok = |n: &str| {
        let mut c = n.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name, tail) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !name_ok(name) {
                return Err(at("bad metric name"));
            }
            match kw {
                "HELP" => {}
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail) {
                        return Err(at("unknown type"));
                    }
                    if types.insert(name.to_string(), tail.to_string()).is_some() {
                        return Err(at("TYPE declared twice"));
                    }
                }
                _ => return Err(at("unknown comment keyword")),
            }
            continue;
        }
        let (series, value) = match line.rfind('}') {
            Some(close) => (&line[..=close], line[close + 1..].trim()),
            None => line.split_once(' ').map(|(a, b)| (a, b.trim())).ok_or_else(|| at("no value"))?,
        };
        let name = series.split('{').next().unwrap_or("");
        if !name_ok(name) {
            return Err(at("bad metric name"));
        }
        if let Some(labels) =
            series.strip_prefix(name).and_then(|l| l.strip_prefix('{')).and_then(|l| l.strip_suffix('}'))
        {
            let mut rest = labels;
            while !rest.is_empty() {
                let (k, after) = rest.split_once("=\"").ok_or_else(|| at("label without =\""))?;
                if !name_ok(k) || k.contains(':') {
                    return Err(at("bad label name"));
                }
                // Find the closing quote, honouring \\ \" \n escapes.
                let mut end = None;
                let mut chars = after.char_indices();
                while let Some((j, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some((_, '\\' | '"' | 'n')) => {}
                            _ => return Err(at("bad escape in label value")),
                        },
                        '"' => {
                            end = Some(j);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.ok_or_else(|| at("unterminated label value"))?;
                rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
            }
        }
        let v = value.split(' ').next().unwrap_or("");
        let v: f64 = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            x => x.parse().map_err(|_| at("value is not a number"))?,
        };
        let t = types.get(name).ok_or_else(|| at("sample before its # TYPE"))?;
        if t == "counter" && !name.ends_with("_total") {
            return Err(at("counter name does not end in _total"));
        }
        samples.insert(series.to_string(), v);
    }
    Ok(samples)
}

fn scrape(lab: &TestLab, node: &str) -> HashMap<String, f64> {
    let py =
        "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:9091/metrics').read().decode(),end='')";
    let out = lab.exec(node, &["python3", "-c", py]);
    assert!(out.status.success(), "scrape failed: {}", text(&out.stderr));
    parse_prometheus(&text(&out.stdout)).unwrap_or_else(|e| panic!("invalid Prometheus text: {e}"))
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    assert!(parse_prometheus("# TYPE a_total counter\na_total 1\n").is_ok());
    assert!(parse_prometheus("a_total 1\n").is_err(), "no TYPE");
    assert!(parse_prometheus("# TYPE a counter\na 1\n").is_err(), "counter without _total");
    assert!(parse_prometheus("# TYPE a gauge\na{b=\"c} 1\n").is_err(), "unterminated label");
    assert!(parse_prometheus("# TYPE a gauge\na one\n").is_err(), "not a number");
    assert!(parse_prometheus("# TYPE 1a gauge\n").is_err(), "bad name");
}

#[test]
fn metrics_are_valid_prometheus_text_and_move_with_traffic() {
    let lab = TestLab::up(&["--metrics"]);
    let before = scrape(&lab, "node-a");
    let key = "router_interface_packets_total{interface=\"eth0\",direction=\"tx\"}";
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "5", "-i", "0.2", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    let after = scrape(&lab, "node-a");
    assert!(after[key] >= before[key] + 5.0, "uplink tx moved from {} to {}", before[key], after[key]);
    assert!(after["router_ipip_encapsulated_total"] >= before["router_ipip_encapsulated_total"] + 5.0);
    for peer in ["192.168.100.101", "192.168.200.101"] {
        let k = format!("router_bgp_session_up{{peer=\"{peer}\",peer_type=\"node-to-node mesh\"}}");
        assert_eq!(after.get(&k), Some(&1.0), "{k}");
        // Every message counts, an UPDATE as well as the OPEN and KEEPALIVEs before it, and
        // every BGP message is 19 to 4096 bytes long.
        let m = |name: &str| after[&format!("router_bgp_{name}{{peer=\"{peer}\"}}")];
        for (msgs, updates, bytes) in [
            ("messages_sent_total", "updates_sent_total", "sent_bytes_total"),
            ("messages_received_total", "updates_received_total", "received_bytes_total"),
        ] {
            assert!(m(msgs) >= m(updates) + 2.0, "{peer}: {msgs} {} against {updates} {}", m(msgs), m(updates));
            assert!((19.0 * m(msgs)..=4096.0 * m(msgs)).contains(&m(bytes)), "{peer}: {bytes} {}", m(bytes));
        }
    }
    assert!(after["router_fib_routes"] >= 7.0);
    assert!(after["router_uptime_seconds"] > 0.0);
    assert!(after.contains_key("router_drops_total{reason=\"no_route\"}"));
    assert!(!after.contains_key("router_datastore_up"), "a node without a datastore has no such gauge");
}

#[test]
fn capture_on_node_a_shows_ipip_around_the_inner_icmp() {
    let lab = TestLab::up(&[]);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.244.3.1"]); // warm up ARP
    assert!(ok, "{out}");
    let file = lab.dir.join(format!("{}-capture.pcap", lab.name));
    let cap = lab
        .command(&[
            "capture",
            "--node",
            "node-a",
            "--interface",
            "eth0",
            "-c",
            "4",
            "--duration",
            "20",
            "--host",
            "pod-c1",
            "--json",
            "-w",
            file.to_str().unwrap_or_default(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("router capture");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // pod-b1's pings leave by eth0 too, first: the host filter keeps them out, so the four
    // packets written are pod-c1's, found inside IPIP.
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", "10.244.2.1"]);
    assert!(ok, "{out}");
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "3", "-i", "0.3", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    let done = cap.wait_with_output().expect("capture ends");
    assert!(done.status.success(), "{}", text(&done.stderr));
    let report: serde_json::Value = serde_json::from_slice(&done.stdout).expect("capture --json");
    assert_eq!(report["written"], 4, "{report}");
    let rows = pcap_fields(&file, None, &["ip.src", "ip.dst", "ip.proto", "icmp.type"]);
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 4, "{rows}");
    assert!(lines.iter().all(|l| l.contains(",10.244.3.1\t")), "{rows}");
    assert!(
        lines.iter().any(|l| l.starts_with("192.168.100.100,10.244.1.1\t192.168.200.101,10.244.3.1\t4,1\t8")),
        "{rows}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("192.168.200.101,10.244.3.1\t192.168.100.100,10.244.1.1\t4,1\t0")),
        "{rows}"
    );
    let _ = std::fs::remove_file(&file);
}

/// `router capture` with `args`, running, given half a second to start.
fn start_router_capture(lab: &TestLab, args: &[&str]) -> std::process::Child {
    let cap = lab
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("router capture");
    std::thread::sleep(std::time::Duration::from_millis(500));
    cap
}

/// What the slow path sends is in a capture too: on a cold node the first ping's frames on
/// the uplink are the router's ARP request, the answer, and the held packet, wrapped.
#[test]
fn a_capture_from_cold_shows_the_routers_arp_and_the_packet_it_held() {
    let lab = TestLab::up(&[]);
    let file = lab.dir.join(format!("{}-cold.pcap", lab.name));
    let path = file.to_str().unwrap_or_default();
    let args = ["capture", "--node", "node-a", "--interface", "eth0", "-c", "100", "--duration", "3", "-w", path];
    let cap = start_router_capture(&lab, &args);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "1", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    let done = cap.wait_with_output().expect("capture ends");
    assert!(done.status.success(), "{}", text(&done.stderr));
    let fields = ["arp.opcode", "arp.src.proto_ipv4", "arp.dst.proto_ipv4", "ip.dst", "icmp.type"];
    // The node's kernel may speak on the uplink meanwhile too (IGMP, IPv6): ARP and ICMP only.
    let rows = pcap_fields(std::path::Path::new(path), Some("arp or icmp"), &fields);
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.first().copied(), Some("1\t192.168.100.100\t192.168.100.1\t\t"), "{rows}");
    assert!(lines.contains(&"\t\t\t192.168.200.101,10.244.3.1\t8"), "the held echo request, wrapped:\n{rows}");
    let _ = std::fs::remove_file(&file);
}

/// A node that dies mid-capture ends the CLI's wait with the reason and where the packets
/// written until then are, not with a bare socket error (or a wait that never ends).
#[test]
fn a_capture_whose_node_dies_says_so_and_keeps_what_was_written() {
    let lab = TestLab::up(&[]);
    let file = lab.dir.join(format!("{}-dies.pcap", lab.name));
    let path = file.to_str().unwrap_or_default();
    let args = ["capture", "--node", "node-a", "--duration", "30", "-w", path];
    let cap = start_router_capture(&lab, &args);
    let (ok, out) = ping(&lab, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", "10.244.2.1"]);
    assert!(ok, "{out}");
    lab.signal_daemon("node-a", "-9");
    let started = std::time::Instant::now();
    let done = cap.wait_with_output().expect("capture ends");
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "the CLI waited on");
    let err = text(&done.stderr);
    assert!(!done.status.success() && err.contains("the node stopped answering during the capture"), "{err}");
    assert!(err.contains(&format!("{path} holds what it wrote until then")), "{err}");
    let echoes = pcap_fields(std::path::Path::new(path), Some("icmp.type == 8"), &["ip.dst"]);
    assert!(echoes.lines().count() >= 2, "the pings before the node died: {echoes}");
    let _ = std::fs::remove_file(&file);
}

/// A trace is most wanted when a node is down: the others still report their hops, and the
/// missing node is named.
#[test]
fn a_trace_with_a_node_down_shows_the_others_and_names_it() {
    let lab = TestLab::up(&[]);
    lab.signal_daemon("node-b", "-9");
    wait_for(5, "node-b's socket to refuse", || !lab.router(&["status", "--node", "node-b"]).status.success());
    let t = lab.json(&["trace", "pod-a1", "pod-c1", "--json"]);
    let nodes: Vec<&str> = t["hops"].as_array().into_iter().flatten().filter_map(|h| h["node"].as_str()).collect();
    assert!(nodes.contains(&"node-a") && nodes.contains(&"node-c"), "{t}");
    let untraced = t["untraced"].as_array().cloned().unwrap_or_default();
    assert!(untraced.len() == 1 && untraced[0].as_str().unwrap_or("").starts_with("node-b: "), "{t}");
    assert!(t["answer"].is_object(), "pod-c1 answered: {t}");
    let out = text(&lab.router(&["trace", "pod-a1", "pod-c1"]).stdout);
    assert!(out.contains("not traced: node-b: "), "{out}");
}

fn trace(lab: &TestLab, dst: &str, proto: &str) -> Vec<serde_json::Value> {
    let v = lab.json(&["trace", "pod-a1", dst, "--proto", proto, "--json"]);
    v["hops"].as_array().cloned().unwrap_or_default()
}

fn hop<'a>(hops: &'a [serde_json::Value], node: &str, action: &str) -> &'a serde_json::Value {
    hops.iter()
        .find(|h| h["node"] == node && h["action"] == action)
        .unwrap_or_else(|| panic!("no {action} at {node}: {hops:#?}"))
}

#[test]
fn trace_shows_encapsulation_direct_routes_and_drops() {
    let lab = TestLab::up(&[]);
    // pod-a1 → pod-c1: wrapped at node-a toward node-c, unwrapped at node-c.
    let hops = trace(&lab, "pod-c1", "icmp");
    let a = hop(&hops, "node-a", "encapsulate");
    assert_eq!(a["out_outer"][0], "192.168.100.100");
    assert_eq!(a["out_outer"][1], "192.168.200.101");
    assert_eq!(a["route"]["prefix"], "10.244.3.0/26");
    assert!(a["route"]["why"].as_str().unwrap_or("").contains("outside 192.168.100.0/24"), "{a}");
    let c = hop(&hops, "node-c", "decapsulate");
    assert_eq!((c["src"].as_str(), c["dst"].as_str()), (Some("192.168.100.100"), Some("192.168.200.101")));
    assert_eq!(c["inner"][1], "10.244.3.1");
    assert!(c["egress"].as_str().unwrap_or("").starts_with("cali"));
    // The echo reply is a probe too: it comes back wrapped the other way.
    hop(&hops, "node-c", "encapsulate");
    hop(&hops, "node-a", "decapsulate");

    assert_eq!(a["what"], "ICMP echo request");
    assert_eq!(hop(&hops, "node-a", "decapsulate")["what"], "ICMP echo reply");

    // pod-a1 → pod-b1: a direct route, nothing wrapped. The answer to UDP is pod-b1's port
    // unreachable, which quotes the probe: it is traced back too.
    let hops = trace(&lab, "pod-b1", "udp");
    let a = hop(&hops, "node-a", "forward");
    assert_eq!(a["route"]["encap"], "none");
    assert_eq!(a["egress"], "eth0");
    assert!(a["out_outer"].is_null());
    assert_eq!(a["what"], "UDP");
    hop(&hops, "node-b", "forward");
    let back = hops.iter().filter(|h| h["what"] == "ICMP port unreachable").collect::<Vec<_>>();
    assert_eq!(
        back.iter().map(|h| h["node"].as_str().unwrap_or("")).collect::<Vec<_>>(),
        ["node-b", "node-a"],
        "{hops:#?}"
    );
    assert!(back[1]["egress"].as_str().unwrap_or("").starts_with("cali"), "{hops:#?}");

    // TCP to pod-c1: the SYN goes wrapped, the closed port's RST comes back wrapped.
    let hops = trace(&lab, "pod-c1", "tcp");
    assert_eq!(hop(&hops, "node-a", "encapsulate")["what"], "TCP SYN");
    assert_eq!(hop(&hops, "node-c", "encapsulate")["what"], "TCP RST");
    assert_eq!(hop(&hops, "node-a", "decapsulate")["what"], "TCP RST");

    // An address no route covers: dropped at node-a, and why.
    let hops = trace(&lab, "10.99.0.1", "tcp");
    let a = hop(&hops, "node-a", "icmp_error");
    assert!(a["reason"].as_str().unwrap_or("").contains("no_route"), "{a}");
    // Where nothing comes back, the text says so: an unused address of node-c's block is
    // blackholed there, silently (an error sent back is an answer, as above).
    let silent = text(&lab.router(&["trace", "pod-a1", "10.244.3.50"]).stdout);
    assert!(silent.contains("blackhole") && silent.contains("no answer reached pod-a1"), "{silent}");
    let answered = text(&lab.router(&["trace", "pod-a1", "10.99.0.1"]).stdout);
    assert!(answered.contains("icmp_error"), "{answered}");
    // What reached the pod is seen at the pod, and its sender named.
    assert!(
        answered.contains("answer at pod-a1 after ")
            && answered.ends_with("ms: ICMP net unreachable from node-a 192.168.100.100\n"),
        "{answered}"
    );

    // A TTL that runs out at node-c: its time exceeded quotes the whole UDP probe (RFC 1812
    // quoting), so the error is followed back through the tunnel to pod-a1.
    let v = lab.json(&["trace", "pod-a1", "pod-c1", "--proto", "udp", "--ttl", "2", "--json"]);
    let hops = v["hops"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        (v["answer"]["what"].as_str(), v["answer"]["from"].as_str()),
        (Some("ICMP time exceeded"), Some("192.168.200.101"))
    );
    let c = hop(&hops, "node-c", "icmp_error");
    assert!(c["reason"].as_str().unwrap_or("").contains("ttl_exceeded"), "{c}");
    let a = hop(&hops, "node-a", "decapsulate");
    assert_eq!((a["what"].as_str(), a["inner"][0].as_str()), (Some("ICMP time exceeded"), Some("192.168.200.101")));
    assert!(a["egress"].as_str().unwrap_or("").starts_with("cali"), "{a}");
}

#[test]
fn lab_tour_runs_start_to_end() {
    // One command: with no lab up, the tour brings up the seed lab and leaves it up.
    let lab = TestLab::named();
    let out = lab.router(&["lab", "tour"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{all}");
    assert!(all.starts_with(&format!("no lab {:?} is up: bringing up the seed lab", lab.name)), "{all}");
    assert!(text(&lab.router(&["lab", "status"]).stdout).contains("running"), "the lab stays up");
    for claim in [
        "proxy ARP",
        "veth pair",
        "node's routes",
        "one block per node",
        "BGP",
        "plain routing",
        "not the node's kernel",
        "IPIP",
        "tunl0",
        "1500-byte",
        "Outside the pools",
    ] {
        assert!(all.contains(claim), "the tour skipped {claim:?}:\n{all}");
    }
    assert!(all.contains("4,1"), "the IPIP capture shows both headers:\n{all}");
    assert!(all.contains("6 counted over the nodes, 3 sessions"), "every node's sessions:\n{all}");
    assert!(all.lines().any(|l| l.contains("Block") && l.contains("10.244.3.0/26") && l.contains("node-c")), "{all}");
    assert!(all.contains("Network is unreachable") && all.contains("--nat-outgoing"), "{all}");
    // The same ping in a VXLAN twin: UDP 4789, VNI 4096, 50 bytes on top of the 84 (IPIP:
    // 20), MTU 1450; the twin is gone afterwards.
    assert!(all.contains("IPIP or VXLAN"), "{all}");
    assert!(all.contains("104,84"), "IPIP adds 20 bytes:\n{all}");
    assert!(all.lines().any(|l| l.contains("17,1\t134,84\t4789\t4096")), "VXLAN adds 50:\n{all}");
    assert!(all.contains("mtu=1450") || all.contains("mtu = 1450"), "{all}");
    assert!(!text(&lab.router(&["lab", "status", "--lab", &format!("{}-vxlan", lab.name)]).stdout).contains("running"));
    assert!(all.contains("direct-action") && all.contains("this BPF program"), "the transit filter is shown:\n{all}");
    assert!(
        all.lines().any(|l| l.contains("10.244.1.0/26 proto 179 scope link")),
        "node-c's route into tunl0 (ours: proto 179) is shown:\n{all}"
    );
    // IPv6 in a dual-stack twin: the pod's gateway, a ping, no tunnel, the hop limit.
    assert!(all.contains("IPv6: the same pods, no tunnel"), "{all}");
    assert!(all.contains("default via fe80::ecee:eeff:feee:eeee dev eth0"), "{all}");
    assert!(all.contains("fd00:10:244::80/122  fd00:192:168:100::1 UG"), "{all}");
    assert!(all.contains("hop limit 63"), "{all}");
    assert!(!text(&lab.router(&["lab", "status", "--lab", &format!("{}-v6", lab.name)]).stdout).contains("running"));
    assert!(all.contains("That is the whole story"), "{all}");
}

#[test]
fn lab_tour_refuses_a_lab_without_ipip_and_says_why() {
    let lab = TestLab::up(&["--ipip-mode", "never"]);
    let out = lab.router(&["lab", "tour"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("ipipMode Never") && err.contains("router lab up"), "{err}");
    assert!(text(&out.stdout).is_empty(), "nothing half-told before the refusal");
}

#[test]
fn lab_tour_in_a_lab_of_another_shape_says_how_to_get_a_seed_lab() {
    // In VXLAN too: the advice for VXLAN names the seed's hosts, which this lab lacks.
    let lab = TestLab::up(&["--nodes", "2", "--vxlan-mode", "always"]);
    let out = lab.router(&["lab", "tour"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("has no pod-a1") && err.contains("router lab tour --lab tour"), "{err}");
}

#[test]
fn completions_are_generated() {
    let out = std::process::Command::new(ROUTER).args(["completions", "bash"]).output().expect("router");
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("lab"));
    // A reader that goes early (`| head -1`) ends it quietly, not with a panic.
    let mut child = std::process::Command::new(ROUTER)
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("router");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("router");
    assert!(out.status.success() && out.stderr.is_empty(), "{:?}: {}", out.status, text(&out.stderr));
}

#[test]
fn lookup_takes_ipv4_and_ipv6_and_refuses_what_is_neither() {
    // An IPv6 address gets as far as asking the node (there is none at that socket).
    for (addr, why) in [("2001:db8::1", "/nonexistent"), ("banana", "\"banana\" is not an IP address")] {
        let out = std::process::Command::new(ROUTER)
            .args(["routes", "--socket", "/nonexistent", "--lookup", addr])
            .output()
            .expect("router");
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(why), "{addr}: {}", text(&out.stderr));
    }
}
