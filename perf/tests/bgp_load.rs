//! `router-perf bgp-load` end to end on a small generated table: the feeder, our node and
//! BIRD 2 in their own namespaces (needs root and the Debian package bird2).

use std::process::Command;

#[test]
fn bgp_load_times_our_node_and_bird_on_the_same_table() {
    let dir = std::env::temp_dir().join(format!("bgp-load-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // 5000 prefixes of mixed lengths under 20.0.0.0/8 and 30.0.0.0/8, two origin ASes.
    let mut table = String::new();
    for i in 0..5000u32 {
        let (a, b) = (20 + (i % 2) * 10, i / 2);
        let len = [24, 22, 20, 32][(i % 4) as usize];
        let addr = std::net::Ipv4Addr::from((a << 24) | (b << 8));
        let net = ipnet::Ipv4Net::new(addr, len).expect("len").trunc();
        table.push_str(&format!("{net} {}\n", 64600 + i % 2));
    }
    let path = dir.join("table.txt");
    std::fs::write(&path, &table).expect("table");
    let distinct = table
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let out_json = dir.join("bgp-load.json");
    let out = Command::new(env!("CARGO_BIN_EXE_router-perf"))
        .args(["bgp-load", "--timeout", "60", "--table"])
        .arg(&path)
        .arg("--out")
        .arg(&out_json)
        .output()
        .expect("router-perf runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bgp-load failed:\n{text}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).expect("json written")).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0]["receiver"], "router node");
    assert_eq!(rows[0]["installed"].as_u64(), Some(distinct as u64), "every route in our FIB:\n{text}");
    assert_eq!(rows[1]["receiver"], "BIRD 2");
    assert_eq!(rows[1]["installed"].as_u64(), Some(distinct as u64), "every route in BIRD:\n{text}");
    for r in rows {
        assert!(r["secs"].as_f64().is_some_and(|s| s > 0.0 && s < 60.0), "{r}");
    }
    let ns =
        String::from_utf8_lossy(&Command::new("ip").args(["netns", "list"]).output().expect("ip").stdout).into_owned();
    assert!(!ns.contains("rpb-"), "namespaces left behind: {ns}");
    let _ = std::fs::remove_dir_all(&dir);
}
