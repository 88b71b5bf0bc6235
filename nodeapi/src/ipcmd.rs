//! Driving the kernel through iproute2's `ip` (the lab's namespaces, the node's kernel routes).
//!
//! Why `ip` and not a netlink crate: the lab is a one-shot setup of a few dozen objects, each
//! step is exactly the command a learner would type (so errors and docs can show it), and the
//! netlink crates would pull an async runtime into a synchronous CLI. Every exit status is
//! checked and the command plus its stderr end up in the error.

use anyhow::{bail, Context as _};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Runs a command, failing with the command line and its stderr.
pub fn run(prog: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{prog}`: is it installed? (Debian: apt-get install iproute2)"))?;
    if !out.status.success() {
        bail!("`{prog} {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run("ip", args)
}

/// `ip -n NS ...`
pub fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    ip(&v)
}

/// `ip -n NS -batch -` with `commands`, one per line: many objects for the price of one
/// process.
pub fn ip_batch_in(ns: &str, commands: &str) -> anyhow::Result<()> {
    batch(&["-n", ns], commands)
}

/// `ip -batch -` in this process's namespace.
pub fn ip_batch(commands: &str) -> anyhow::Result<()> {
    batch(&[], commands)
}

fn batch(options: &[&str], commands: &str) -> anyhow::Result<()> {
    let args = [options, &["-batch", "-"]].concat();
    with_stdin("ip", &args, commands, "iproute2")
}

/// `nft -f -` with `rules`: one transaction, applied whole or not at all.
pub fn nft(rules: &str) -> anyhow::Result<()> {
    with_stdin("nft", &["-f", "-"], rules, "nftables")
}

/// Runs `prog` with `input` on its stdin, failing with the command line and its stderr;
/// `package` is Debian's, for the error when `prog` is missing.
fn with_stdin(prog: &str, args: &[&str], input: &str, package: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{prog}`: is it installed? (Debian: apt-get install {package})"))?;
    child.stdin.take().with_context(|| format!("{prog}'s stdin"))?.write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("`{prog} {}` failed ({}): {}", args.join(" "), out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Runs a program inside a namespace.
pub fn exec_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut v = vec!["netns", "exec", ns];
    v.extend_from_slice(args);
    ip(&v)
}

/// Writes a per-namespace sysctl (net.* sysctls belong to the namespace that writes them).
pub fn sysctl_in(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    exec_in(ns, &["sh", "-c", &format!("echo {value} > {path}")])?;
    Ok(())
}

pub fn sysctl_get(ns: &str, key: &str) -> anyhow::Result<String> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    Ok(exec_in(ns, &["cat", &path])?.trim().to_string())
}

/// Names of all network namespaces.
pub fn list() -> anyhow::Result<Vec<String>> {
    let out = ip(&["netns", "list"])?;
    Ok(out.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect())
}

pub fn exists(ns: &str) -> bool {
    std::path::Path::new("/run/netns").join(ns).exists()
}

/// PIDs of the processes inside a namespace.
pub fn pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns]).map(|o| o.lines().filter_map(|l| l.trim().parse().ok()).collect()).unwrap_or_default()
}

/// Creates namespaces `a` and `b` joined by a veth pair, each end (`(namespace, device,
/// address)`) with its /24 address and up, as is each namespace's loopback.
pub fn veth_between(a: (&str, &str, Ipv4Addr), b: (&str, &str, Ipv4Addr)) -> anyhow::Result<()> {
    ip(&["netns", "add", a.0])?;
    ip(&["netns", "add", b.0])?;
    ip(&["link", "add", a.1, "netns", a.0, "type", "veth", "peer", "name", b.1, "netns", b.0])?;
    for (ns, dev, addr) in [a, b] {
        ip_in(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ip_in(ns, &["link", "set", dev, "up"])?;
        ip_in(ns, &["link", "set", "lo", "up"])?;
    }
    Ok(())
}

/// Kills every process inside `ns` and deletes it; returns how many processes it killed.
pub fn remove(ns: &str) -> anyhow::Result<usize> {
    use nix::sys::signal::{kill, Signal};
    let killed = pids(ns).into_iter().filter(|&p| kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL).is_ok()).count();
    ip(&["netns", "del", ns])?;
    Ok(killed)
}
