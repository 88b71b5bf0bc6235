//! The lab as a user without root: `nobody`, reached with `setpriv` (no sudo, no setuid bit,
//! no file capabilities), with its lab in a user namespace of its own. The test itself runs
//! as root only to become nobody and to look at what the lab left behind.

mod support;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use support::*;

const NOBODY: u32 = 65534;
/// The copy's name: not `router`, as nothing may depend on what the binary is called.
const BIN: &str = "router-of-nobody";
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A lab of user nobody, with the lab directory at its default place (no XDG_RUNTIME_DIR:
/// `/tmp/router-lab-65534`). Taken down when dropped, also when the test fails.
struct UserLab {
    name: String,
    /// A copy of the router binary that nobody may run (the build tree may sit in a
    /// directory only root can enter).
    scratch: PathBuf,
}

impl UserLab {
    fn new() -> UserLab {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self::named(&format!("u{}-{n}", std::process::id() % 100_000))
    }

    fn named(name: &str) -> UserLab {
        require_root();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = name.to_string();
        let scratch = std::env::temp_dir().join(format!("router-rootless-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&scratch).expect("scratch dir");
        std::fs::copy(ROUTER, scratch.join(BIN)).expect("copy the router binary");
        for p in [&scratch, &scratch.join(BIN)] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::os::unix::fs::chown(&scratch, Some(NOBODY), Some(NOBODY)).expect("chown");
        UserLab { name, scratch }
    }

    fn dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("router-lab-{NOBODY}")).join(&self.name)
    }

    fn command(&self, args: &[&str]) -> Command {
        as_nobody(&self.scratch.join(BIN), args, &self.name)
    }

    fn router(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run router as nobody")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.router(args);
        assert!(out.status.success(), "{args:?} as nobody failed:\n{}{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }

    fn ping(&self, pod: &str, dst: &str) {
        let out = self.router(&["lab", "exec", pod, "--", "ping", "-c", "3", "-i", "0.2", "-W", "2", dst]);
        assert!(out.status.success(), "{pod} → {dst}:\n{}{}", text(&out.stdout), text(&out.stderr));
        assert_no_loss(&text(&out.stdout));
    }

    /// The keeper's user namespace, from the lab's directory.
    fn userns(&self) -> u64 {
        let k: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir().join("keeper.json")).expect("keeper.json"))
                .expect("keeper.json is JSON");
        k["userns"].as_u64().expect("userns")
    }
}

impl Drop for UserLab {
    fn drop(&mut self) {
        let _ = self.router(&["lab", "down"]);
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// `router ARGS` as nobody, in a clean environment: no runtime directory, cwd `/`.
fn as_nobody(exe: &Path, args: &[&str], lab: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", &NOBODY.to_string(), "--regid", &NOBODY.to_string(), "--clear-groups", "--"])
        .arg(exe)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent")
        .env("ROUTER_LAB", lab)
        .current_dir("/")
        .stdin(Stdio::null());
    c
}

/// Processes (other than zombies) whose user namespace is `ns`.
fn processes_in(ns: u64) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::metadata(format!("/proc/{p}/ns/user")).is_ok_and(|m| m.ino() == ns))
        .filter(|p| !std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z ")))
        .collect()
}

#[test]
fn an_unprivileged_user_runs_the_seed_lab_and_leaves_nothing_behind() {
    let lab = UserLab::new();
    let up = lab.router(&["lab", "up"]);
    assert!(up.status.success(), "lab up as nobody:\n{}{}", text(&up.stdout), text(&up.stderr));
    let ns = lab.userns();
    assert_eq!(std::fs::metadata(lab.dir()).map(|m| m.permissions().mode() & 0o777).ok(), Some(0o700));

    // Direct on the same subnet, IPIP across.
    lab.ping("pod-a1", "10.244.2.1");
    lab.ping("pod-a1", "10.244.3.1");

    let routes = lab.json(&["routes", "--node", "node-a", "--json"]);
    let to_c = routes.as_array().into_iter().flatten().find(|r| r["prefix"] == "10.244.3.0/26").expect("route to c");
    assert_eq!(to_c["encap"], "ipip", "{to_c}");
    let st = lab.json(&["status", "--node", "node-a", "--json"]);
    let peers = st["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 2, "{peers:?}");
    assert!(peers.iter().all(|p| p["state"] == "up"), "{peers:?}");
    let ipam = lab.json(&["ipam", "show", "--json"]);
    let blocks = ipam["blocks"].as_array().map(Vec::len);
    assert_eq!((blocks, ipam["pools"][0]["in_use"].as_u64()), (Some(3), Some(4)), "{ipam}");

    let trace = lab.json(&["trace", "pod-a1", "pod-c1", "--json"]);
    let actions: Vec<(String, String)> = trace["hops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| (h["node"].as_str().unwrap_or("").to_string(), h["action"].as_str().unwrap_or("").to_string()))
        .collect();
    assert!(actions.iter().any(|(n, a)| n == "node-a" && a == "encapsulate"), "{actions:?}");
    assert!(actions.iter().any(|(n, a)| n == "node-c" && a == "decapsulate"), "{actions:?}");
    assert_eq!(trace["answer"]["what"], "ICMP echo reply", "{trace}");

    // The node writes the capture as the user: into the user's own directory.
    let pcap = lab.scratch.join("c.pcap");
    let cap = lab
        .command(&["capture", "--node", "node-c", "--interface", "eth0", "-c", "4", "--duration", "8", "-w"])
        .arg(&pcap)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("capture");
    std::thread::sleep(std::time::Duration::from_millis(500));
    lab.ping("pod-a1", "10.244.3.1");
    let cap = cap.wait_with_output().expect("capture ends");
    assert!(cap.status.success(), "{}", text(&cap.stderr));
    let rows = pcap_fields(&pcap, None, &["ip.proto"]);
    assert_eq!(rows.lines().count(), 4, "{rows}");
    assert!(rows.lines().all(|l| l.starts_with("4,")), "not IPIP on node-c's uplink: {rows}");
    use std::os::unix::fs::MetadataExt as _;
    assert_eq!(std::fs::metadata(&pcap).expect("pcap").uid(), NOBODY);

    // A graceful restart hands over from the running daemon: node-b's pod is reached
    // meanwhile, and its sessions come back.
    let restart = lab.ok(&["lab", "restart", "node-b"]);
    assert!(restart.starts_with("node-b restarted gracefully"), "{restart}");
    lab.ping("pod-a1", "10.244.2.1");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let peers = &lab.json(&["status", "--node", "node-b", "--json"])["peers"];
        let up = peers.as_array().is_some_and(|p| p.len() == 2 && p.iter().all(|p| p["state"] == "up"));
        if up {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "node-b's sessions after its restart: {peers}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // Containers need root's lab, and the user is told so, not podman's first failure.
    let podman = lab.router(&["lab", "exec", "node-a", "--", "podman", "ps"]);
    assert!(!podman.status.success());
    assert!(text(&podman.stderr).contains("podman needs a lab made by root"), "{}", text(&podman.stderr));

    // The host saw none of it, and why the nodes have no tunl0 was said in one line each:
    // by lab up, in the node's log and by its stats.
    let host = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    assert!(!text(&host.stdout).contains(&format!("{}-", lab.name)), "{}", text(&host.stdout));
    let tun_open = std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    let log = std::fs::read_to_string(lab.dir().join("node-a.log")).expect("node log");
    assert_eq!(log.matches("no tunl0").count(), usize::from(!tun_open), "{log}");
    let said = text(&up.stdout).matches("note: /dev/net/tun is not open to this user").count();
    assert_eq!(said, usize::from(!tun_open), "{}", text(&up.stdout));
    let missing = lab.json(&["stats", "--node", "node-a", "--json"])["tunnel_device_missing"].clone();
    assert_eq!(
        missing.as_str().is_some_and(|m| m.starts_with("no tunl0: /dev/net/tun cannot be opened")),
        !tun_open,
        "{missing}"
    );

    let down = lab.ok(&["lab", "down"]);
    assert!(down.contains("removed 10 namespaces"), "{down}");
    assert!(!lab.dir().exists(), "the lab's directory is left");
    assert_eq!(processes_in(ns), Vec::<i32>::new(), "processes of the lab's user namespace are left");
}

#[test]
fn a_users_lab_and_roots_lab_of_the_same_name_run_side_by_side() {
    let root = TestLab::up(&[]);
    let user = UserLab::named(&root.name);
    let up = user.router(&["lab", "up"]);
    assert!(up.status.success(), "{}{}", text(&up.stdout), text(&up.stderr));
    // Same namespace names, different worlds.
    let inside = user.ok(&["lab", "exec", "node-a", "--", "ip", "netns", "list"]);
    let names: Vec<&str> = inside.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(names.contains(&root.ns("pod-a1").as_str()), "{inside}");
    assert_eq!(names.len(), 10, "the user's lab sees only its own namespaces: {inside}");
    assert_eq!(root.leftover_namespaces().len(), 10, "root's lab sees only its own");
    user.ping("pod-a1", "10.244.3.1");
    let (ok, out) = ping(&root, "pod-a1", &["-c", "3", "-i", "0.2", "-W", "2", "10.244.3.1"]);
    assert!(ok, "{out}");
    // Each command reaches its own lab's sockets.
    let st = user.json(&["lab", "status", "--json"]);
    let user_pid = st.as_array().into_iter().flatten().find(|h| h["host"] == "node-a").and_then(|h| h["pid"].as_i64());
    assert!(user_pid.is_some_and(|p| p != root.daemon_pid("node-a")), "{st}");

    // Taking the user's lab down leaves root's alone.
    user.ok(&["lab", "down"]);
    assert_eq!(root.leftover_namespaces().len(), 10);
    let (ok, out) = ping(&root, "pod-a1", &["-c", "2", "-i", "0.2", "-W", "2", "10.244.2.1"]);
    assert!(ok, "{out}");
}

/// Dual stack needs no more privilege than IPv4: IPv6 on the underlay, proxy NDP for the pods'
/// gateway and the router's IPv6 forwarding all work inside the user's namespaces.
#[test]
fn an_unprivileged_user_runs_the_dual_stack_lab() {
    let lab = UserLab::new();
    lab.ok(&["lab", "up", "--dual-stack"]);
    // Same node, same subnet, and across the underlay router.
    for dst in ["fd00:10:244::2", "fd00:10:244::41", "fd00:10:244::81"] {
        let out = lab.router(&["lab", "exec", "pod-a1", "--", "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", dst]);
        assert!(out.status.success(), "pod-a1 → {dst}:\n{}{}", text(&out.stdout), text(&out.stderr));
        assert_no_loss(&text(&out.stdout));
    }
    lab.ping("pod-a1", "10.244.3.1");
    let r = lab.json(&["routes", "--node", "node-a", "--lookup", "fd00:10:244::81", "--json"]);
    assert_eq!((r["prefix"].as_str(), r["source"].as_str()), (Some("fd00:10:244::80/122"), Some("bgp")), "{r}");
    let down = lab.ok(&["lab", "down"]);
    assert!(down.contains("removed 10 namespaces"), "{down}");
}

#[test]
fn down_cleans_up_after_the_keeper_died() {
    let lab = UserLab::new();
    lab.ok(&["lab", "up"]);
    let ns = lab.userns();
    let k: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.dir().join("keeper.json")).expect("keeper.json")).expect("JSON");
    let keeper = k["pid"].as_i64().expect("pid") as i32;
    // Something the user started in a pod, then the keeper killed: the daemons still run.
    lab.ok(&["lab", "exec", "pod-b1", "--", "sh", "-c", "sleep 600 >/dev/null 2>&1 &"]);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(keeper), nix::sys::signal::Signal::SIGKILL).expect("kill");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(processes_in(ns).len() >= 4, "daemons and the sleep live on: {:?}", processes_in(ns));
    let exec = lab.router(&["lab", "exec", "pod-a1", "--", "true"]);
    assert!(!exec.status.success() && text(&exec.stderr).contains("keeper"), "{}", text(&exec.stderr));

    let down = lab.ok(&["lab", "down"]);
    assert!(down.contains("stopped"), "{down}");
    assert_eq!(processes_in(ns), Vec::<i32>::new());
    assert!(!lab.dir().exists());
    // And a new lab of the same name comes up.
    lab.ok(&["lab", "up"]);
    lab.ping("pod-a1", "10.244.2.1");
}

#[test]
fn a_machine_without_user_namespaces_is_told_which_setting_and_how_to_allow_it() {
    use std::io::Write as _;
    let lab = UserLab::new();
    // A user namespace (of root's, with uids 0-65535 mapped as they are) whose
    // user.max_user_namespaces is 0: nobody inside it can make another, as on a machine set up
    // that way. The map is written from outside before the shell execs again with it.
    let script = format!(
        "read go; exec sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && echo limited && exec setpriv --reuid {NOBODY} --regid {NOBODY} --clear-groups -- {} lab up'",
        lab.scratch.join(BIN).display()
    );
    let mut child = Command::new("unshare")
        .args(["--user", "sh", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("ROUTER_LAB", &lab.name)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare --user");
    let pid = child.id();
    // Wait until unshare has made the namespace and exec'd the shell.
    let me = std::fs::read_link("/proc/self/ns/user").expect("own userns");
    for _ in 0..200 {
        if std::fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|l| l != me) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 0 65536").expect("uid_map");
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 0 65536").expect("gid_map");
    child.stdin.take().expect("stdin").write_all(b"go\n").expect("go");
    let out = child.wait_with_output().expect("lab up");
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(stdout.lines().next() == Some("limited"), "{stdout}{stderr}");
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("user.max_user_namespaces = 0") && stderr.contains("sudo sysctl -w user.max_user_namespaces="),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one message: {stderr}");
    assert!(!lab.dir().exists(), "a refused lab leaves nothing");
}

#[test]
fn the_tun_data_plane_without_root_follows_dev_net_tun() {
    let lab = UserLab::new();
    let out = lab.router(&["lab", "up", "--dataplane", "tun"]);
    let tun_open = std::fs::metadata("/dev/net/tun").is_ok_and(|m| m.permissions().mode() & 0o006 == 0o006);
    if tun_open {
        assert!(out.status.success(), "{}", text(&out.stderr));
        lab.ping("pod-a1", "10.244.3.1");
    } else {
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains("/dev/net/tun") && err.contains("afpacket"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!lab.dir().exists(), "a refused lab leaves nothing");
    }
}

/// Processes of user nobody whose command line mentions `needle`.
fn nobody_processes_with(needle: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| std::fs::metadata(format!("/proc/{p}")).is_ok_and(|m| m.uid() == NOBODY))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .filter(|p| !std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z ")))
        .collect()
}

#[test]
fn down_cleans_up_after_an_interrupted_up() {
    let lab = UserLab::new();
    for ms in [150, 600, 1500] {
        let mut up = lab.command(&["lab", "up"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("lab up");
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let _ = up.kill();
        let _ = up.wait();
        let ns = std::fs::read(lab.dir().join("keeper.json"))
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok().and_then(|v| v["userns"].as_u64()));
        let down = lab.router(&["lab", "down"]);
        assert!(down.status.success(), "after {ms} ms: {}", text(&down.stderr));
        assert!(!lab.dir().exists(), "after {ms} ms: the lab's directory is left");
        if let Some(ns) = ns {
            assert_eq!(processes_in(ns), Vec::<i32>::new(), "after {ms} ms");
        }
        let dir = lab.dir().to_string_lossy().into_owned();
        assert_eq!(nobody_processes_with(&dir), Vec::<i32>::new(), "after {ms} ms: a process of the lab is left");
    }
    // And the next lab comes up.
    lab.ok(&["lab", "up"]);
    lab.ping("pod-a1", "10.244.3.1");
}
