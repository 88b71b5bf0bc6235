//! Test harness: a lab with a name unique to this test, taken down when the test ends, also
//! when it fails.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const ROUTER: &str = env!("CARGO_BIN_EXE_router");

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Fails loudly without root: these tests build network namespaces.
pub fn require_root() {
    let uid = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
    });
    assert_eq!(uid.as_deref(), Some("0"), "lab tests create network namespaces and must run as root (sudo cargo test)");
}

#[derive(Debug)]
pub struct TestLab {
    pub name: String,
    pub dir: PathBuf,
}

impl TestLab {
    /// A fresh name and state directory; nothing is built yet.
    pub fn named() -> TestLab {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}-{n}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("router-test-{}", std::process::id()));
        TestLab { name, dir }
    }

    /// Builds the lab (default: the seed topology) and fails the test if that fails.
    pub fn up(extra: &[&str]) -> TestLab {
        let lab = Self::named();
        let mut args = vec!["lab", "up"];
        args.extend_from_slice(extra);
        let out = lab.router(&args);
        assert!(out.status.success(), "lab up failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        lab
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ROUTER);
        c.args(args).env("ROUTER_LAB", &self.name).env("ROUTER_LAB_DIR", &self.dir).stdin(Stdio::null());
        c
    }

    pub fn router(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run router")
    }

    /// `router lab exec HOST -- CMD...`
    pub fn exec(&self, host: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["lab", "exec", host, "--"];
        args.extend_from_slice(cmd);
        self.router(&args)
    }

    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.router(args);
        assert!(out.status.success(), "{args:?} failed: {}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    pub fn drops(&self, node: &str, reason: &str) -> u64 {
        self.json(&["stats", "--node", node, "--json"])["drops"][reason].as_u64().unwrap_or(0)
    }

    /// The pid of a node's daemon, from `lab status`.
    pub fn daemon_pid(&self, node: &str) -> i64 {
        let st = self.json(&["lab", "status", "--json"]);
        st.as_array().into_iter().flatten().find(|h| h["host"] == node).and_then(|h| h["pid"].as_i64()).expect("pid")
    }

    /// Sends `signal` (`-9`, `-TERM`, ...) to a node's daemon.
    pub fn signal_daemon(&self, node: &str, signal: &str) {
        let pid = self.daemon_pid(node).to_string();
        assert!(Command::new("kill").args([signal, &pid]).status().is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }

    pub fn down(&self) -> Output {
        self.router(&["lab", "down"])
    }

    /// A node's log so far, colours stripped.
    pub fn node_log(&self, node: &str) -> String {
        strip_colours(
            &std::fs::read_to_string(self.dir.join(&self.name).join(format!("{node}.log"))).unwrap_or_default(),
        )
    }

    /// The last lines each node logged, on stderr: what a failed test leaves to go on.
    fn print_node_logs(&self) {
        let Ok(dir) = std::fs::read_dir(self.dir.join(&self.name)) else { return };
        let mut logs: Vec<PathBuf> =
            dir.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
        logs.sort();
        for p in logs {
            let Ok(t) = std::fs::read_to_string(&p) else { continue };
            let t = strip_colours(&t);
            let lines: Vec<&str> = t.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("--- {} (last {} lines) ---\n{}", p.display(), tail.len(), tail.join("\n"));
        }
    }

    /// Namespaces of this lab still present.
    pub fn leftover_namespaces(&self) -> Vec<String> {
        let prefix = format!("{}-", self.name);
        std::fs::read_dir("/run/netns")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&prefix))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_node_logs();
        }
        let _ = self.down();
        // What a test wrote next to its lab (topologies, BGP daemons' directories) is named
        // after the lab.
        let prefix = format!("{}-", self.name);
        for e in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = match e.file_type() {
                    Ok(t) if t.is_dir() => std::fs::remove_dir_all(e.path()),
                    _ => std::fs::remove_file(e.path()),
                };
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs ping in a pod and returns (exit success, stdout).
pub fn ping(lab: &TestLab, pod: &str, args: &[&str]) -> (bool, String) {
    let mut cmd = vec!["ping"];
    cmd.extend_from_slice(args);
    let out = lab.exec(pod, &cmd);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

/// "0% packet loss" and nothing else counts as success.
pub fn assert_no_loss(out: &str) {
    assert!(out.contains(" 0% packet loss"), "packets were lost:\n{out}");
}

/// A tshark capture running inside a lab host, written to a pcap file.
#[derive(Debug)]
pub struct Capture {
    child: std::process::Child,
    pub file: PathBuf,
}

/// Runs iperf3 from `client` to a one-shot server in `server` (`server_args` like `-6`) and
/// returns the client's output, asserting that it succeeded.
pub fn iperf3(lab: &TestLab, server: &str, server_args: &[&str], client: &str, client_args: &[&str]) -> Output {
    let mut cmd = vec!["lab", "exec", server, "--", "iperf3", "-s", "-1"];
    cmd.extend(server_args);
    let mut srv = lab.command(&cmd).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("iperf3 -s");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut args = vec!["iperf3"];
    args.extend(client_args);
    let out = lab.exec(client, &args);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(out.status.success(), "iperf3 to {server}: {}{}", text(&out.stdout), text(&out.stderr));
    out
}

/// Starts `tshark -i IFACE -f FILTER -c COUNT` in `host` and returns once it is capturing.
pub fn start_capture(lab: &TestLab, host: &str, iface: &str, filter: &str, count: usize) -> Capture {
    use std::io::{BufRead, BufReader};
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let file = std::env::temp_dir().join(format!("{}-{host}-{n}.pcap", lab.name));
    let count = count.to_string();
    let fname = file.to_string_lossy().into_owned();
    let mut child = lab
        .command(&[
            "lab",
            "exec",
            host,
            "--",
            "tshark",
            "-q",
            "-i",
            iface,
            "-f",
            filter,
            "-c",
            &count,
            "-a",
            "duration:20",
            "-w",
            &fname,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tshark runs (Debian package tshark)");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            panic!("tshark did not start capturing on {host}/{iface}");
        }
        if line.contains("Capturing on") {
            break;
        }
    }
    // Keep draining stderr so tshark never blocks on it.
    std::thread::spawn(move || for _ in err.lines() {});
    // "Capturing on" comes a moment before the capture really starts.
    std::thread::sleep(std::time::Duration::from_millis(500));
    Capture { child, file }
}

impl Capture {
    /// Waits for the capture to end and decodes it: one row per packet, one column per field
    /// (fields of nested headers, like both IP headers of IPIP, are comma-separated).
    pub fn fields(mut self, fields: &[&str]) -> Vec<Vec<String>> {
        let _ = self.child.wait();
        let rows = pcap_fields(&self.file, None, fields);
        let _ = std::fs::remove_file(&self.file);
        rows.lines().map(|l| l.split('\t').map(str::to_string).collect()).collect()
    }
}

/// tshark's reading of a pcap file: a line per packet (those `display_filter` keeps), the
/// `fields` tab-separated, with IPv4 header checksums checked.
pub fn pcap_fields(file: &std::path::Path, display_filter: Option<&str>, fields: &[&str]) -> String {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file).args(["-o", "ip.check_checksum:TRUE", "-T", "fields"]);
    if let Some(f) = display_filter {
        cmd.args(["-Y", f]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark -r (Debian package tshark)");
    assert!(out.status.success(), "tshark could not read {}: {}", file.display(), text(&out.stderr));
    text(&out.stdout)
}

/// The text without its terminal colour sequences (`ESC [ ... m`), which the node logs carry.
fn strip_colours(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        rest = &rest[i + 2..];
        match rest.find('m') {
            Some(j) => rest = &rest[j + 1..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

/// Polls `cond` every 0.2 s until it holds; fails the test after `secs` seconds.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out after {secs} s waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A counter of `/proc/net/snmp` in `host` (`group` like "Tcp", `name` like "OutRsts"), and
/// the whole file for a failure message.
pub fn snmp(lab: &TestLab, host: &str, group: &str, name: &str) -> (u64, String) {
    let all = text(&lab.exec(host, &["cat", "/proc/net/snmp"]).stdout);
    let rows: Vec<Vec<&str>> =
        all.lines().filter(|l| l.split(':').next() == Some(group)).map(|l| l.split_whitespace().collect()).collect();
    let at =
        rows.first().and_then(|h| h.iter().position(|f| *f == name)).unwrap_or_else(|| panic!("no {name}:\n{all}"));
    let v = rows.get(1).and_then(|r| r.get(at)).and_then(|v| v.parse().ok()).expect("a number");
    (v, all)
}

/// `router apply -f -` of `yaml`, to the lab's etcd; its warnings.
pub fn apply(lab: &TestLab, yaml: &str) -> String {
    use std::io::Write as _;
    let mut c = lab
        .command(&["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("apply");
    c.stdin.take().expect("stdin").write_all(yaml.as_bytes()).expect("write");
    let out = c.wait_with_output().expect("apply");
    assert!(out.status.success(), "apply: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stderr)
}

/// A process killed when dropped: one a test started by hand (a node, a daemon) does not
/// outlive the test when it fails.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
