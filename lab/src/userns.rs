//! The lab without root: a keeper process owns a user namespace (the user is root inside
//! it, nowhere else), a mount namespace and an empty network namespace. Every host of the
//! lab is a named network namespace inside it, named under a tmpfs that only the keeper's
//! mount namespace sees, so the host's `/run/netns` and other users' labs never meet ours.
//!
//! The `router` commands that need the lab's namespaces enter the keeper's namespaces with
//! `setns` and then run exactly the code root runs. `lab down` kills every process of the
//! user namespace, and with the last of them the kernel frees every namespace, veth and
//! bridge the lab made: nothing can be left behind, also after a crash.

use anyhow::{bail, Context as _};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use serde::{Deserialize, Serialize};
use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where a lab's keeper is written down, in the lab's directory.
const FILE: &str = "keeper.json";

/// The process that holds a rootless lab's namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keeper {
    pub pid: i32,
    /// The user (outside) who owns the lab.
    pub uid: u32,
    /// The user namespace's inode: tells the keeper from a process that reused its pid, and
    /// finds every process of the lab.
    pub userns: u64,
}

/// Where the default lab directory lives for a user without root: the session's runtime
/// directory (`$XDG_RUNTIME_DIR`, private by definition) or, without one, a directory of
/// the user's own under /tmp. The caller makes it private (0700) and refuses one that is not.
pub fn default_base(xdg_runtime_dir: Option<&str>, uid: u32) -> PathBuf {
    match xdg_runtime_dir.filter(|d| !d.is_empty() && Path::new(d).is_absolute()) {
        Some(d) => Path::new(d).join("router-lab"),
        None => std::env::temp_dir().join(format!("router-lab-{uid}")),
    }
}

fn userns_inode(pid: &str) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/user")).ok().map(|m| m.ino())
}

impl Keeper {
    pub fn load(lab_dir: &Path) -> anyhow::Result<Option<Keeper>> {
        let p = lab_dir.join(FILE);
        match std::fs::read_to_string(&p) {
            Ok(t) => Ok(Some(serde_json::from_str(&t).with_context(|| format!("{} is corrupt", p.display()))?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    /// Whether the keeper still runs (its pid is still in the lab's user namespace).
    pub fn alive(&self) -> bool {
        userns_inode(&self.pid.to_string()) == Some(self.userns) && crate::alive(self.pid)
    }

    /// Whether this process is already inside the lab's user namespace.
    pub fn entered(&self) -> bool {
        userns_inode("self") == Some(self.userns)
    }

    /// Every live process in the lab's user namespace but this one (an exited process
    /// that its parent has not reaped yet is no longer one).
    pub fn processes(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
        rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| p != me && userns_inode(&p.to_string()) == Some(self.userns) && crate::alive(p))
            .collect()
    }

    /// Starts a keeper for the lab in `lab_dir` and writes it down there.
    pub fn start(lab_dir: &Path, exe: &Path) -> anyhow::Result<Keeper> {
        nodeapi::private::dir(lab_dir).with_context(|| format!("creating {}", lab_dir.display()))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(lab_dir.join("keeper.log"))
            .with_context(|| format!("creating {}", lab_dir.join("keeper.log").display()))?;
        // Its own session: a Ctrl-C at the terminal or the end of the shell leaves it alone.
        let mut child = Command::new(exe)
            .args(["internal", "keeper", "--record"])
            .arg(lab_dir.join(FILE))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {} internal keeper", exe.display()))?;
        let pid = child.id() as i32;
        let mut line = String::new();
        let out = child.stdout.take().context("the keeper's stdout")?;
        std::io::BufReader::new(out).read_line(&mut line).context("reading the keeper's answer")?;
        let line = line.trim();
        if line != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            let log = lab_dir.join("keeper.log");
            if line.starts_with("failed ") {
                // The answer says it all: leave nothing behind.
                let _ = std::fs::remove_file(&log);
                let _ = std::fs::remove_dir(lab_dir);
            }
            let why = match line.strip_prefix("failed ") {
                Some(rest) => {
                    let (step, errno) = rest.split_once(' ').unwrap_or((rest, ""));
                    diagnose(step, Errno::from_raw(errno.parse().unwrap_or(0)), &Sysctls::read())
                }
                None => format!("it ended without saying why (see {})", lab_dir.join("keeper.log").display()),
            };
            bail!("cannot build the lab without root here: {why}");
        }
        // The keeper wrote its own record before it said ready: a `lab up` killed at any
        // moment leaves no keeper that `lab down` cannot find.
        let k = Keeper::load(lab_dir)?.context("the keeper said ready without writing its record")?;
        if k.pid != pid || userns_inode(&pid.to_string()) != Some(k.userns) {
            bail!("the keeper's record in {} does not match it", lab_dir.join(FILE).display());
        }
        // Not reaped by us: when this command ends, init adopts it.
        std::mem::forget(child);
        Ok(k)
    }

    /// Moves this (single-threaded) process into the lab's user, network and mount
    /// namespaces, where it is root of the lab and nothing else. The working directory
    /// stays where it was.
    pub fn enter(&self) -> anyhow::Result<()> {
        if self.entered() {
            return Ok(());
        }
        let me = nix::unistd::geteuid().as_raw();
        if me != self.uid {
            bail!("this lab belongs to uid {}; run its commands as that user", self.uid);
        }
        if !self.alive() {
            bail!("the lab's keeper process ({}) is gone, and the lab with it; `router lab down` cleans up", self.pid);
        }
        let open = |ns: &str| {
            std::fs::File::open(format!("/proc/{}/ns/{ns}", self.pid))
                .with_context(|| format!("opening the keeper's {ns} namespace"))
        };
        let (user, net, mnt) = (open("user")?, open("net")?, open("mnt")?);
        let cwd = std::env::current_dir().ok();
        nix::sched::setns(user, CloneFlags::CLONE_NEWUSER).context("entering the lab's user namespace")?;
        nix::sched::setns(net, CloneFlags::CLONE_NEWNET).context("entering the keeper's network namespace")?;
        nix::sched::setns(mnt, CloneFlags::CLONE_NEWNS).context("entering the lab's mount namespace")?;
        // Entering a mount namespace moves to its root directory; the mounts are the same
        // as outside, so the old working directory is still there.
        if let Some(d) = cwd {
            let _ = std::env::set_current_dir(d);
        }
        Ok(())
    }

    /// Ends the lab: SIGTERM to its node daemons first (so they close their sessions), then
    /// SIGKILL to every process of the user namespace. Returns how many processes ended.
    pub fn kill_all(&self, daemons: &[i32]) -> usize {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        let mine = self.processes();
        let daemons: Vec<i32> = daemons.iter().copied().filter(|p| mine.contains(p)).collect();
        for &p in &daemons {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
        crate::wait_gone(&daemons, Duration::from_secs(3));
        let mut ended: std::collections::BTreeSet<i32> =
            daemons.iter().copied().filter(|p| !crate::alive(*p)).collect();
        // A process forked while we kill is found on the next round.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() > deadline {
                return ended.len();
            }
            for &p in &left {
                if kill(Pid::from_raw(p), Signal::SIGKILL).is_ok() {
                    ended.insert(p);
                }
            }
            crate::wait_gone(&left, Duration::from_millis(500));
        }
    }
}

/// `router internal keeper --record FILE`: makes the namespaces, writes its record, says
/// `ready` (or `failed STEP ERRNO`) on stdout and then holds them until it is killed.
pub fn keeper_main(record: &Path) -> ! {
    let uid = nix::unistd::getuid().as_raw();
    match make_namespaces() {
        Ok(()) => {
            let k = Keeper { pid: std::process::id() as i32, uid, userns: userns_inode("self").unwrap_or(0) };
            let text = serde_json::to_string(&k).unwrap_or_default();
            if let Err(e) = nodeapi::private::write(record, text.as_bytes()) {
                nodeapi::outln!("failed record {}", e.raw_os_error().unwrap_or(0));
                eprintln!("keeper: writing {}: {e}", record.display());
                std::process::exit(1);
            }
            nodeapi::outln!("ready");
            let _ = std::io::stdout().flush();
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Err((step, e)) => {
            nodeapi::outln!("failed {step} {}", e as i32);
            eprintln!("keeper: {step}: {e}");
            std::process::exit(1);
        }
    }
}

fn make_namespaces() -> Result<(), (&'static str, Errno)> {
    use nix::mount::{mount, MsFlags};
    let (uid, gid) = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());
    nix::sched::unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET)
        .map_err(|e| ("unshare", e))?;
    let write = |path: &str, text: String| {
        std::fs::write(path, text).map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    };
    // The user is root inside, and only their own uid and gid exist there.
    write("/proc/self/setgroups", "deny".into()).map_err(|e| ("setgroups", e))?;
    write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(|e| ("uid_map", e))?;
    write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(|e| ("gid_map", e))?;
    let none: Option<&str> = None;
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none).map_err(|e| ("mount", e))?;
    let tmpfs = |at: &str| {
        mount(Some("tmpfs"), at, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
            .map_err(|e| ("mount", e))
    };
    if Path::new("/run/netns").is_dir() {
        tmpfs("/run/netns")?;
    } else {
        // No /run/netns on this machine yet, and /run is root's: a tmpfs over all of /run,
        // with the user's runtime directory (where the lab's files may live) bound back.
        let keep = std::env::var("XDG_RUNTIME_DIR").ok().filter(|d| d.starts_with("/run/"));
        let kept = keep.as_ref().and_then(|d| std::fs::File::open(d).ok());
        tmpfs("/run")?;
        std::fs::create_dir("/run/netns").map_err(|e| ("mount", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        if let (Some(d), Some(f)) = (keep, kept) {
            use std::os::fd::AsRawFd as _;
            std::fs::create_dir_all(&d).map_err(|e| ("mount", Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
            let from = format!("/proc/self/fd/{}", f.as_raw_fd());
            mount(Some(from.as_str()), d.as_str(), none, MsFlags::MS_BIND | MsFlags::MS_REC, none)
                .map_err(|e| ("mount", e))?;
        }
    }
    Ok(())
}

/// The machine settings that decide whether a user may make user namespaces (`None`: the
/// kernel has no such setting).
#[derive(Debug, Default, Clone)]
pub struct Sysctls {
    pub max_user_namespaces: Option<u64>,
    pub unprivileged_userns_clone: Option<u64>,
    pub apparmor_restrict_unprivileged_userns: Option<u64>,
}

impl Sysctls {
    pub fn read() -> Sysctls {
        let get = |p: &str| std::fs::read_to_string(format!("/proc/sys/{p}")).ok().and_then(|s| s.trim().parse().ok());
        Sysctls {
            max_user_namespaces: get("user/max_user_namespaces"),
            unprivileged_userns_clone: get("kernel/unprivileged_userns_clone"),
            apparmor_restrict_unprivileged_userns: get("kernel/apparmor_restrict_unprivileged_userns"),
        }
    }
}

/// Why making the lab's namespaces failed at `step` with `errno`, naming the setting that
/// stops it and how to allow it.
pub fn diagnose(step: &str, errno: Errno, s: &Sysctls) -> String {
    let fix = |key: &str, value: &str| {
        format!("An administrator can allow them with `sudo sysctl -w {key}={value}` (and a line `{key} = {value}` in /etc/sysctl.d/ to keep it)")
    };
    if s.max_user_namespaces == Some(0) {
        return format!(
            "this machine allows no user namespaces (user.max_user_namespaces = 0). {}, or run the lab as root",
            fix("user.max_user_namespaces", "15000")
        );
    }
    if step == "unshare" && errno == Errno::ENOSPC {
        return format!(
            "the limit of user namespaces is reached (user.max_user_namespaces = {}, counted over \
             all of this user's namespaces); `router lab down` other labs, or raise the limit with \
             `sudo sysctl -w user.max_user_namespaces=15000`",
            s.max_user_namespaces.map_or("?".into(), |n| n.to_string())
        );
    }
    if s.unprivileged_userns_clone == Some(0) {
        return format!(
            "this kernel lets only root make user namespaces (kernel.unprivileged_userns_clone = 0). {}, \
             or run the lab as root",
            fix("kernel.unprivileged_userns_clone", "1")
        );
    }
    if s.apparmor_restrict_unprivileged_userns == Some(1) {
        return format!(
            "AppArmor gives user namespaces of unconfined programs no privileges \
             (kernel.apparmor_restrict_unprivileged_userns = 1), so {step} failed ({errno}). {}, \
             or with an AppArmor profile for the router binary that has `userns,`; or run the lab as root",
            fix("kernel.apparmor_restrict_unprivileged_userns", "0")
        );
    }
    format!(
        "making the lab's user namespace failed at {step}: {errno} (a seccomp filter, as in many \
         containers, can forbid it: run the lab on the machine itself, or as root)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_that_forbids_user_namespaces_is_named_with_its_fix() {
        let zero = Sysctls { max_user_namespaces: Some(0), ..Default::default() };
        let m = diagnose("unshare", Errno::ENOSPC, &zero);
        assert!(m.contains("user.max_user_namespaces = 0") && m.contains("sysctl -w user.max_user_namespaces="), "{m}");

        let clone =
            Sysctls { max_user_namespaces: Some(1000), unprivileged_userns_clone: Some(0), ..Default::default() };
        let m = diagnose("unshare", Errno::EPERM, &clone);
        assert!(m.contains("kernel.unprivileged_userns_clone = 0") && m.contains("=1"), "{m}");

        let aa = Sysctls {
            max_user_namespaces: Some(1000),
            unprivileged_userns_clone: Some(1),
            apparmor_restrict_unprivileged_userns: Some(1),
        };
        let m = diagnose("uid_map", Errno::EPERM, &aa);
        assert!(m.contains("kernel.apparmor_restrict_unprivileged_userns = 1") && m.contains("uid_map"), "{m}");
        assert!(m.contains("apparmor_restrict_unprivileged_userns=0"), "{m}");

        let full = Sysctls { max_user_namespaces: Some(3), ..Default::default() };
        assert!(diagnose("unshare", Errno::ENOSPC, &full).contains("limit of user namespaces is reached"));

        let other = Sysctls { max_user_namespaces: Some(1000), ..Default::default() };
        let m = diagnose("unshare", Errno::EPERM, &other);
        assert!(m.contains("seccomp") && m.contains("EPERM"), "{m}");
    }

    #[test]
    fn the_default_base_is_the_runtime_dir_or_a_per_user_tmp_dir() {
        assert_eq!(default_base(Some("/run/user/1000"), 1000), Path::new("/run/user/1000/router-lab"));
        let tmp = std::env::temp_dir().join("router-lab-1000");
        assert_eq!(default_base(None, 1000), tmp);
        assert_eq!(default_base(Some(""), 1000), tmp);
        assert_eq!(default_base(Some("relative"), 1000), tmp);
    }
}
