//! `router-perf gen-check` end to end: our generator and trafgen each send over a fresh veth
//! pair, and what arrives is counted (needs root and the Debian package netsniff-ng).

use std::process::Command;

#[test]
fn the_generator_is_measured_against_trafgen() {
    let dir = std::env::temp_dir().join(format!("gen-check-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out_json = dir.join("generator.json");
    let out = Command::new(env!("CARGO_BIN_EXE_router-perf"))
        .args(["gen-check", "--duration", "1", "--out"])
        .arg(&out_json)
        .output()
        .expect("router-perf runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "gen-check failed:\n{text}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_json).expect("json written")).expect("json");
    let rows = v.as_array().expect("array");
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[1]["generator"], "trafgen");
    for r in rows {
        assert!(r["pps"].as_f64().unwrap_or(0.0) > 1000.0, "{r}");
    }
    let leftover = Command::new("ip").args(["netns", "list"]).output().expect("ip");
    assert!(!String::from_utf8_lossy(&leftover.stdout).contains("rpg-"), "namespaces left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
