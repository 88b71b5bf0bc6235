//! `router-perf gen --count`: a counted run sends exactly that many packets, and the sink in
//! the other namespace of a fresh veth pair counts them all (root).

use std::process::{Command, Stdio};

/// Deletes the test's namespaces, also when an assertion fails.
struct Netns(Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("ip runs");
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn a_counted_run_sends_exactly_its_count() {
    let (a, b) = (format!("rpc-a-{}", std::process::id()), format!("rpc-b-{}", std::process::id()));
    ip(&["netns", "add", &a]);
    let _ns = Netns(vec![a.clone(), b.clone()]);
    ip(&["netns", "add", &b]);
    ip(&["-n", &a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &b]);
    for (ns, addr) in [(&a, "10.99.0.1/24"), (&b, "10.99.0.2/24")] {
        ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
    }
    let exe = env!("CARGO_BIN_EXE_router-perf");
    let sink = Command::new("ip")
        .args(["netns", "exec", &b, exe, "sink", "--max-secs", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sink runs");
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Slow enough that a bare veth loses nothing; the duration is only a cap.
    let gen = Command::new("ip")
        .args(["netns", "exec", &a, exe, "gen", "--dst", "10.99.0.2", "--size", "64"])
        .args(["--secs", "15", "--pps", "20000", "--count", "5000"])
        .output()
        .expect("generator runs");
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    let g: serde_json::Value = serde_json::from_slice(&gen.stdout).expect("generator report");
    assert_eq!(g["sent"], 5000, "{g}");
    let out = sink.wait_with_output().expect("sink ends");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sink report");
    assert_eq!(s["received"], 5000, "{s}");
    assert_eq!(s["lost"], 0, "{s}");
}
