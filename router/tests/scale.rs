//! Generated labs (`lab up --nodes N`): a 20-node full mesh and a 20-node lab with route
//! reflectors converge, their first pod reaches their last, and the BGP sessions are as many
//! as the layout implies. These build namespaces (root).

mod support;

use support::*;

const N: usize = 20;

/// Established sessions seen from every node, each counted once.
fn sessions(lab: &TestLab) -> (usize, Vec<usize>) {
    let per_node: Vec<usize> = (1..=N)
        .map(|i| {
            let peers = &lab.json(&["status", "--node", &format!("node-{i}"), "--json"])["peers"];
            peers.as_array().into_iter().flatten().filter(|p| p["state"] == "up").count()
        })
        .collect();
    (per_node.iter().sum::<usize>() / 2, per_node)
}

fn address_of(lab: &TestLab, host: &str) -> String {
    let rows = lab.json(&["lab", "status", "--json"]);
    rows.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["host"] == host)
        .and_then(|r| r["addresses"][0].as_str())
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("{host} in {rows}"))
        .to_string()
}

fn first_pod_reaches_the_last(lab: &TestLab) {
    let last = address_of(lab, &format!("pod-{N}-1"));
    let (ok, out) = ping(lab, "pod-1-1", &["-c", "2", "-i", "0.2", "-W", "2", &last]);
    assert!(ok, "pod-1-1 -> pod-{N}-1 ({last}): {out}");
    assert_no_loss(&out);
}

#[test]
fn a_generated_full_mesh_has_n_times_n_minus_1_over_2_sessions() {
    let n = N.to_string();
    let lab = TestLab::up(&["--nodes", &n]);
    first_pod_reaches_the_last(&lab);
    let (total, per_node) = sessions(&lab);
    assert_eq!(total, N * (N - 1) / 2, "{per_node:?}");
    assert!(per_node.iter().all(|&s| s == N - 1), "{per_node:?}");
    // Every node has every other node's block.
    let routes = lab.json(&["routes", "--node", &format!("node-{N}"), "--json"]);
    let blocks = routes.as_array().into_iter().flatten().filter(|r| r["source"] == "bgp").count();
    assert_eq!(blocks, N - 1, "{routes}");
}

#[test]
fn generated_route_reflectors_need_far_fewer_sessions() {
    let n = N.to_string();
    let lab = TestLab::up(&["--nodes", &n, "--route-reflectors", "2"]);
    first_pod_reaches_the_last(&lab);
    let (total, per_node) = sessions(&lab);
    // The two reflectors peer with each other and with every client; clients only with them.
    assert_eq!(total, 1 + 2 * (N - 2), "{per_node:?}");
    assert_eq!(&per_node[..2], &[N - 1, N - 1], "{per_node:?}");
    assert!(per_node[2..].iter().all(|&s| s == 2), "{per_node:?}");
    let routes = lab.json(&["routes", "--node", &format!("node-{N}"), "--json"]);
    let blocks = routes.as_array().into_iter().flatten().filter(|r| r["source"] == "bgp").count();
    assert_eq!(blocks, N - 1, "every block through the reflectors: {routes}");
    // What one reflector refuses of the other is explained: its clients' blocks, reflected
    // back with the cluster ID they share.
    let why = format!("refused from 192.168.101.10: {} × our cluster ID is in the CLUSTER_LIST (loop)", N - 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // node-2 may still be reflecting the last of them.
        let status = text(&lab.router(&["status", "--node", "node-1"]).stdout);
        if status.contains(&why) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = lab.router(&["lab", "status"]);
    assert!(
        text(&out.stdout).contains("20 nodes on 2 subnets, 1 pod each, 2 route reflectors"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn lab_topology_prints_what_lab_up_builds() {
    let out = std::process::Command::new(ROUTER)
        .args(["lab", "topology", "--nodes", "5", "--subnets", "3", "--route-reflectors", "1"])
        .output()
        .expect("router");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert_eq!(t.matches("[[nodes]]").count(), 5);
    assert_eq!(t.matches("[[subnets]]").count(), 3);
    assert!(t.contains("node_to_node_mesh = false") && t.contains("route_reflector_cluster_id = \"244.0.0.1\""), "{t}");
    let out = std::process::Command::new(ROUTER).args(["lab", "topology"]).output().expect("router");
    assert!(!out.status.success() && text(&out.stderr).contains("--nodes N"), "{}", text(&out.stderr));
}

#[test]
fn lab_resources_print_the_seed_as_calico_resources_with_ipv6_on_demand() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(ROUTER).args(["lab", "resources"]).args(args).output().expect("router");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let rs = datastore::resources::parse(&text(&out.stdout)).unwrap_or_else(|e| panic!("{e}"));
        rs.iter().map(|r| datastore::resources::to_yaml(std::slice::from_ref(r))).collect::<Vec<_>>()
    };
    let v4 = run(&[]);
    assert_eq!(v4.len(), 5, "a pool, the BGP configuration, three nodes: {v4:?}");
    assert!(v4.iter().all(|r| !r.contains("fd00:")), "{v4:?}");
    let dual = run(&["--dual-stack"]);
    assert_eq!(dual.len(), 6, "{dual:?}");
    assert!(dual.iter().any(|r| r.contains("name: default-ipv6-ippool") && r.contains("ipipMode: Never")));
    assert_eq!(dual.iter().filter(|r| r.contains("ipv6Address: fd00:192:168:")).count(), 3, "{dual:?}");
}

/// `router lab topology | head`: a reader that has gone away ends the output quietly, with
/// no panic. The pipe's read end is closed before the program starts, so its first write
/// fails every time.
#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = std::process::Command::new(ROUTER)
        .args(["lab", "topology", "--nodes", "5"])
        .stdout(writer)
        .output()
        .expect("router");
    assert!(out.status.success() && out.stderr.is_empty(), "{:?}: {}", out.status, text(&out.stderr));
}

#[test]
fn the_scale_tour_compares_a_mesh_and_reflectors_and_leaves_nothing() {
    let lab = TestLab::named();
    let out = lab.router(&["lab", "tour", "--scale", "10"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(out.status.success(), "{all}");
    let row = |layout: &str| {
        all.lines()
            .find(|l| l.trim_start().starts_with(layout) && l.trim_end().ends_with(" s"))
            .unwrap_or_else(|| panic!("no {layout} row:\n{all}"))
            .split_whitespace()
            .rev()
            .skip(2)
            .take(2)
            .collect::<Vec<_>>()
    };
    // sessions and the busiest node's: 10·9/2 and 9; 1 + 2·8 and 9 (a reflector).
    assert_eq!(row("full mesh"), ["9", "45"], "{all}");
    assert_eq!(row("2 route reflectors"), ["9", "17"], "{all}");
    let left: Vec<String> = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| {
            text(&o.stdout).lines().filter(|l| l.starts_with(&format!("{}-", lab.name))).map(str::to_string).collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
