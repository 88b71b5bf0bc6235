//! `router-perf bgp-load`: a BGP peer announces the real Internet table (1.07 M IPv4 prefixes;
//! with `--ipv6` its 176 k IPv6 ones too, over the same session) to our node and, in the
//! same run, to BIRD 2 as the anchor; how long from the first UPDATE until every route is in
//! the node's FIB (lookups answer with it) and in BIRD's tables.
//!
//! Two namespaces joined by a veth pair: the feeder (`router-perf bgp-feed`, our BGP codec)
//! and the device under test, first `router node`, then `bird`. The feeder encodes all its
//! UPDATEs before the clock starts, so what is timed is the receiver. With `--peers N`, N−1
//! more peers (`bgp-feed --idle`, each from its own address) are established with the
//! receiver before the table comes: what a receiver's sessions cost while it loads.

use anyhow::{bail, Context as _};
use bgp::wire::{self, AsSegment, Attr, AttrValue, Capability, Ctx, Message, Open, Origin, Update};
use bgp::wire::{Afi, NextHopAddr};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use nodeapi::ipcmd::{pids, veth_between};
use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const GEN_NS: &str = "rpb-gen";
const DUT_NS: &str = "rpb-dut";
const GEN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);
const DUT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
/// With `--ipv6`: the feeder's IPv6 address (its routes' next hop) and the receiver's.
const GEN_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x254, 0, 0, 0, 0, 0, 1);
const DUT_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x254, 0, 0, 0, 0, 0, 2);
const FEED_AS: u32 = 65001;
const DUT_AS: u32 = 64512;

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The table: lines `PREFIX ORIGIN_AS`, gzip-compressed or not (default: the real table
    /// that the iptrie package ships, found with `cargo metadata`).
    #[arg(long)]
    pub table: Option<PathBuf>,
    /// Announce only the first N prefixes of each family (0: all).
    #[arg(long, default_value_t = 0)]
    pub limit: usize,
    /// Announce the table's IPv6 prefixes too, over the same session (MP-BGP, RFC 4760), to
    /// a dual-stack node and to BIRD's ipv6 channel.
    #[arg(long)]
    pub ipv6: bool,
    /// Peers of the receiver, the feeder included: one run per number (e.g. `1,8`).
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = clap::value_parser!(u16).range(1..=200))]
    pub peers: Vec<u16>,
    /// Give up on a receiver after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Where the JSON report goes.
    #[arg(long, default_value = "target/perf/bgp-load.json")]
    pub out: PathBuf,
    /// Where the table for the documentation goes (with date, machine and command); `--docs
    /// ''` skips it.
    #[arg(long, default_value = "docs/bench", value_parser = crate::path_or_empty)]
    pub docs: PathBuf,
}

/// The prefixes to announce with their origin AS, distinct, in table order: IPv4, and
/// IPv6 where asked for.
pub fn load_table(path: &Path, limit: usize, ipv6: bool) -> anyhow::Result<Prefixes> {
    let t = forwarding::lpm::read_table(path).with_context(|| format!("reading {}", path.display()))?;
    let v4 = first_distinct(t.v4, limit);
    let v6 = if ipv6 { first_distinct(t.v6, limit) } else { Vec::new() };
    if v4.is_empty() {
        bail!("{} holds no IPv4 prefixes", path.display());
    }
    if ipv6 && v6.is_empty() {
        bail!("{} holds no IPv6 prefixes", path.display());
    }
    Ok(Prefixes { v4, v6 })
}

/// The prefixes to announce, each (address, length, origin AS).
pub struct Prefixes {
    pub v4: Vec<(u32, u8, u32)>,
    pub v6: Vec<(u128, u8, u32)>,
}

impl Prefixes {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }
}

fn first_distinct<A: Copy + Eq + std::hash::Hash>(all: Vec<(A, u8, u32)>, limit: usize) -> Vec<(A, u8, u32)> {
    let mut seen = std::collections::HashSet::new();
    let mut v: Vec<(A, u8, u32)> = all.into_iter().filter(|&(a, len, _)| seen.insert((a, len))).collect();
    if limit > 0 {
        v.truncate(limit);
    }
    v
}

/// The UPDATEs announcing `prefixes` from `next_hop` (IPv6 ones in MP_REACH_NLRI, from
/// `next_hop6`), grouped by origin AS so that each message carries many prefixes under one
/// set of attributes (as a real router packs them).
fn encode_updates(prefixes: &Prefixes, next_hop: Ipv4Addr, next_hop6: Ipv6Addr) -> (Vec<u8>, usize) {
    let ctx = Ctx::default();
    let (mut out, mut count) = (Vec::with_capacity(prefixes.v4.len() * 6 + prefixes.v6.len() * 10), 0);
    let v4 =
        prefixes.v4.iter().filter_map(|&(a, len, o)| Some((o, IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), len).ok()?))));
    let v6 =
        prefixes.v6.iter().filter_map(|&(a, len, o)| Some((o, IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), len).ok()?))));
    for (family, nets) in [(Afi::Ipv4, by_origin(v4)), (Afi::Ipv6, by_origin(v6))] {
        for (origin, nets) in nets {
            // Our AS or the feeder's at the origin would be a loop or a duplicate: path of one.
            let path = if origin == FEED_AS || origin == DUT_AS { vec![FEED_AS] } else { vec![FEED_AS, origin] };
            let common = [
                Attr::new(AttrValue::Origin(Origin::Igp)),
                Attr::new(AttrValue::AsPath(vec![AsSegment::sequence(path)])),
            ];
            // 4096-byte messages: 19 header + 4 lengths + ~30 (IPv6: ~60) bytes of
            // attributes, and at most 5 (IPv6: 17) bytes a prefix.
            let per_message = if family == Afi::Ipv4 { 800 } else { 220 };
            for nets in nets.chunks(per_message) {
                let mut attrs = common.to_vec();
                let u = if family == Afi::Ipv4 {
                    attrs.push(Attr::new(AttrValue::NextHop(next_hop)));
                    let nlri = nets.iter().filter_map(|n| if let IpNet::V4(n) = n { Some(*n) } else { None }).collect();
                    Update { attrs, nlri, ..Default::default() }
                } else {
                    let next_hop = NextHopAddr::V6 { global: next_hop6, link_local: None };
                    attrs.push(Attr::new(AttrValue::MpReach { afi: Afi::Ipv6, next_hop, nlri: nets.to_vec() }));
                    Update { attrs, ..Default::default() }
                };
                Message::Update(u).encode(&ctx, &mut out);
                count += 1;
            }
        }
    }
    (out, count)
}

fn by_origin(nets: impl Iterator<Item = (u32, IpNet)>) -> std::collections::BTreeMap<u32, Vec<IpNet>> {
    let mut m: std::collections::BTreeMap<u32, Vec<IpNet>> = Default::default();
    for (o, n) in nets {
        m.entry(o).or_default().push(n);
    }
    m
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Reads one whole BGP message (blocking).
fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Message> {
    loop {
        if let Some((m, used)) =
            wire::decode(buf, &Ctx::default()).map_err(|n| anyhow::anyhow!("bad message: {n:?}"))?
        {
            buf.drain(..used);
            return Ok(m);
        }
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk)?;
        if n == 0 {
            bail!("the peer closed the session");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `router-perf bgp-feed` (runs in the feeder namespace): establishes a session with `peer`,
/// announces the table, prints JSON events on stdout, then keeps the session up until killed.
/// With `table` None, an idle peer: it announces nothing, sends End-of-RIB and stays.
pub fn feed(peer: Ipv4Addr, local: Ipv4Addr, table: Option<&Path>, limit: usize, ipv6: bool) -> anyhow::Result<()> {
    let prefixes = match table {
        Some(t) => load_table(t, limit, ipv6)?,
        None => Prefixes { v4: Vec::new(), v6: Vec::new() },
    };
    let (updates, messages) = encode_updates(&prefixes, local, GEN_ADDR6);
    let deadline = Instant::now() + Duration::from_secs(60);
    let connect = || -> std::io::Result<TcpStream> {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        // From its own address: the receiver tells its peers apart by address.
        s.bind(&SocketAddr::from((local, 0)).into())?;
        s.connect_timeout(&SocketAddr::from((peer, 179)).into(), Duration::from_secs(1))?;
        Ok(s.into())
    };
    let mut s = loop {
        match connect() {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(e).context(format!("connecting to {peer}:179")),
        }
    };
    s.set_nodelay(true)?;
    let ctx = Ctx::default();
    let mut out = Vec::new();
    let mut caps = vec![Capability::Multiprotocol { afi: 1, safi: 1 }, Capability::RouteRefresh];
    if ipv6 {
        caps.push(Capability::Multiprotocol { afi: 2, safi: 1 });
    }
    Message::Open(Open::new(FEED_AS, 240, local, caps)).encode(&ctx, &mut out);
    s.write_all(&out)?;
    let mut inbuf = Vec::new();
    let mut got_open = false;
    // Wait for the peer's OPEN, answer with KEEPALIVE, then wait for its KEEPALIVE.
    loop {
        match read_message(&mut s, &mut inbuf)? {
            Message::Open(_) => {
                got_open = true;
                out.clear();
                Message::Keepalive.encode(&ctx, &mut out);
                s.write_all(&out)?;
            }
            Message::Keepalive if got_open => break,
            Message::Notification(n) => bail!("the peer refused the session: {n:?}"),
            _ => {}
        }
    }
    // From here on another thread drains what the peer sends, so it never blocks on us.
    let mut reader = s.try_clone()?;
    std::thread::spawn(move || {
        let mut b = [0u8; 65536];
        while matches!(reader.read(&mut b), Ok(n) if n > 0) {}
    });
    let mut keepalive = Vec::new();
    Message::Keepalive.encode(&ctx, &mut keepalive);
    nodeapi::outln!("{}", serde_json::json!({"event": "established", "t": unix_now()}));
    let t0 = unix_now();
    nodeapi::outln!(
        "{}",
        serde_json::json!({"event": "first_update", "t": t0, "prefixes": prefixes.len(), "updates": messages})
    );
    let _ = std::io::stdout().flush();
    // Whole messages at a time, with a KEEPALIVE between batches every 20 s.
    let mut last_ka = Instant::now();
    let mut at = 0;
    while at < updates.len() {
        let mut end = at;
        while end < updates.len() && end - at < 1 << 16 {
            let len = usize::from(u16::from_be_bytes([updates[end + 16], updates[end + 17]]));
            end += len;
        }
        s.write_all(&updates[at..end])?;
        at = end;
        if last_ka.elapsed() > Duration::from_secs(20) {
            s.write_all(&keepalive)?;
            last_ka = Instant::now();
        }
    }
    // End-of-RIB: an empty UPDATE (IPv6: an empty MP_UNREACH_NLRI).
    out.clear();
    Message::Update(Update::default()).encode(&ctx, &mut out);
    if ipv6 {
        let eor6 = Attr::new(AttrValue::MpUnreach { afi: Afi::Ipv6, withdrawn: Vec::new() });
        Message::Update(Update { attrs: vec![eor6], ..Default::default() }).encode(&ctx, &mut out);
    }
    s.write_all(&out)?;
    nodeapi::outln!("{}", serde_json::json!({"event": "sent", "t": unix_now(), "secs": unix_now() - t0}));
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(20));
        s.write_all(&keepalive)?;
    }
}

/// Set when a run failed, so that its logs stay for a look.
static KEEP_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The two namespaces and whatever runs in them; removed on drop, also after an error.
struct Bench {
    dir: PathBuf,
    children: Vec<Child>,
}

/// The address of idle peer `k` (0-based) in the feeder namespace.
fn idle_addr(k: u16) -> Ipv4Addr {
    let [a, b, c, _] = GEN_ADDR.octets();
    Ipv4Addr::new(a, b, c, 3 + k as u8)
}

impl Bench {
    fn new(idle: u16) -> anyhow::Result<Bench> {
        let dir = crate::scratch_dir("router-perf-bgp-")?;
        let b = Bench { dir, children: Vec::new() };
        b.remove_namespaces();
        veth_between((GEN_NS, "rpb-g", GEN_ADDR), (DUT_NS, "rpb-d", DUT_ADDR))?;
        for (ns, dev, a) in [(GEN_NS, "rpb-g", GEN_ADDR6), (DUT_NS, "rpb-d", DUT_ADDR6)] {
            nodeapi::ipcmd::ip_in(ns, &["-6", "addr", "add", &format!("{a}/64"), "dev", dev, "nodad"])?;
        }
        for k in 0..idle {
            nodeapi::ipcmd::ip_in(GEN_NS, &["addr", "add", &format!("{}/24", idle_addr(k)), "dev", "rpb-g"])?;
        }
        Ok(b)
    }

    /// Starts the idle peers, which establish and stay; the caller waits for them.
    fn start_idle(&mut self, perf: &Path, idle: u16) -> anyhow::Result<()> {
        for k in 0..idle {
            let (dut, local) = (DUT_ADDR.to_string(), idle_addr(k).to_string());
            let args = [perf.to_str().unwrap_or_default(), "bgp-feed", "--peer", &dut, "--local", &local, "--idle"];
            self.spawn(GEN_NS, &args, Stdio::null())?;
        }
        Ok(())
    }

    /// Kills whatever still runs in the namespaces and deletes them.
    fn remove_namespaces(&self) {
        for ns in [GEN_NS, DUT_NS].into_iter().filter(|ns| nodeapi::ipcmd::exists(ns)) {
            let _ = nodeapi::ipcmd::remove(ns);
        }
    }

    /// Runs `cmd` in `ns`; its stderr goes to `<dir>/<ns>.log` (the bench keeps it on failure).
    fn spawn(&mut self, ns: &str, cmd: &[&str], stdout: Stdio) -> anyhow::Result<usize> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join(format!("{ns}.log")))?;
        let c = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", cmd.join(" ")))?;
        self.children.push(c);
        Ok(self.children.len() - 1)
    }

    fn stop_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.stop_all();
        self.remove_namespaces();
        if KEEP_LOGS.load(std::sync::atomic::Ordering::Relaxed) || std::env::var_os("ROUTER_PERF_KEEP_LOGS").is_some() {
            eprintln!("logs kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Starts the feeder toward the DUT and returns the unix time of its first UPDATE.
type Events = std::sync::mpsc::Receiver<serde_json::Value>;

fn start_feed(b: &mut Bench, perf: &Path, o: &Options) -> anyhow::Result<(f64, u64, Events)> {
    let path = o.table.as_deref().unwrap_or(Path::new(""));
    let table = std::fs::canonicalize(path).with_context(|| format!("the table {}", path.display()))?;
    let args = [
        perf.to_str().unwrap_or_default(),
        "bgp-feed",
        "--peer",
        &DUT_ADDR.to_string(),
        "--local",
        &GEN_ADDR.to_string(),
        "--table",
        table.to_str().unwrap_or_default(),
        "--limit",
        &o.limit.to_string(),
    ];
    let args: Vec<&str> = args.into_iter().chain(o.ipv6.then_some("--ipv6")).collect();
    let i = b.spawn(GEN_NS, &args, Stdio::piped())?;
    let stdout = b.children[i].stdout.take().context("feeder output")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    loop {
        let v = rx.recv_timeout(Duration::from_secs(120)).context("the feeder never established its session")?;
        if v["event"] == "first_update" {
            return Ok((v["t"].as_f64().unwrap_or(0.0), v["updates"].as_u64().unwrap_or(0), rx));
        }
    }
}

/// Set by SIGINT/SIGTERM: the wait loops stop, and dropping the bench cleans up.
static INTERRUPTED: std::sync::OnceLock<std::sync::Arc<std::sync::atomic::AtomicBool>> = std::sync::OnceLock::new();

/// Polls `count` until it reaches `want`, or until it has not moved for 3 s after the feed
/// ended (a receiver may refuse a few routes, such as BIRD does with martians); returns the
/// unix time of the last change and the count then.
fn wait_for(
    want: usize,
    timeout: Duration,
    sent: Option<&std::sync::mpsc::Receiver<serde_json::Value>>,
    mut count: impl FnMut() -> Option<usize>,
) -> anyhow::Result<(f64, usize)> {
    let deadline = Instant::now() + timeout;
    let (mut last, mut changed, mut done) = (0, unix_now(), false);
    while Instant::now() < deadline {
        if INTERRUPTED.get().is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed)) {
            bail!("interrupted");
        }
        done |= sent.is_some_and(|rx| rx.try_iter().any(|v| v["event"] == "sent"));
        if let Some(n) = count() {
            if n != last {
                (last, changed) = (n, unix_now());
            }
            if n >= want {
                return Ok((changed, n));
            }
        }
        if done && unix_now() - changed > 3.0 {
            return Ok((changed, last));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("only {last} of {want} routes after {timeout:?}")
}

fn rss_of_ns(ns: &str, name: &str) -> u64 {
    pids(ns)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter(|s| s.lines().next().is_some_and(|l| l.split_whitespace().nth(1) == Some(name)))
        .filter_map(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .sum::<u64>()
        * 1024
}

#[derive(Debug, serde::Serialize)]
struct Outcome {
    receiver: &'static str,
    /// Established peers during the load, the feeder included.
    peers: u16,
    /// Prefixes announced, both families.
    prefixes: usize,
    /// Of them IPv6.
    prefixes6: usize,
    /// Routes the receiver took in (it may refuse a few).
    installed: usize,
    updates: u64,
    /// From the feeder's first UPDATE until every route was in place.
    secs: f64,
    routes_per_sec: f64,
    rss_bytes: u64,
    /// One `router routes --lookup` answered over the admin socket with the table loaded.
    route_lookup_ms: Option<f64>,
    /// A pod added, then deleted, over the admin socket with the table loaded: each call
    /// returns once the FIB without (with) the pod is published.
    pod_add_ms: Option<f64>,
    pod_del_ms: Option<f64>,
    what_is_counted: &'static str,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let table = match &o.table {
        Some(t) => t.clone(),
        None => forwarding::lpm::real_table_path()
            .map_err(|e| anyhow::anyhow!("the real BGP table: {e}; or pass --table"))?,
    };
    let o = &Options { table: Some(table), ..o.clone() };
    let perf = std::env::current_exe()?;
    let router = perf.with_file_name("router");
    if !router.exists() {
        bail!("{} is missing: build everything first with `cargo build --release`", router.display());
    }
    if Command::new("bird").arg("--version").output().is_err() {
        bail!("bird is not installed (Debian package bird2; scripts/setup installs it)");
    }
    let table = load_table(o.table.as_deref().unwrap_or(Path::new("")), o.limit, o.ipv6)?;
    // The probe of `routes --lookup`: the last IPv4 prefix's first address.
    let probe = table.v4.last().map_or(Ipv4Addr::UNSPECIFIED, |&(a, _, _)| Ipv4Addr::from(a));
    let load = Load { n: table.len(), n6: table.v6.len(), probe };
    drop(table);
    let flag = INTERRUPTED.get_or_init(Default::default);
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, std::sync::Arc::clone(flag)).context("installing signal handlers")?;
    }
    let mut results = Vec::new();
    for &peers in &o.peers {
        for measure in [measure_node as fn(&mut Bench, &Path, &Path, &Options, Load, u16) -> _, measure_bird] {
            let mut b = Bench::new(peers - 1)?;
            let r = measure(&mut b, &perf, &router, o, load, peers);
            if r.is_err() {
                KEEP_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            results.push(r?);
        }
    }
    use std::fmt::Write as _;
    let mut md = String::from(
        "| receiver | peers | announced | taken in | first UPDATE → all in place | routes/s | RSS |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &results {
        let announced = match r.prefixes6 {
            0 => r.prefixes.to_string(),
            v6 => format!("{} + {v6} IPv6", r.prefixes - v6),
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} s | {:.2} M | {:.0} MiB |",
            r.receiver,
            r.peers,
            announced,
            r.installed,
            r.secs,
            r.routes_per_sec / 1e6,
            r.rss_bytes as f64 / (1 << 20) as f64
        )?;
    }
    md.push('\n');
    for r in results.iter().filter(|r| r.pod_add_ms.is_some()) {
        writeln!(
            md,
            "{} peer(s), table loaded: a pod added in {:.1} ms and deleted in {:.1} ms; a route looked up in {:.1} ms  ",
            r.peers,
            r.pod_add_ms.unwrap_or_default(),
            r.pod_del_ms.unwrap_or_default(),
            r.route_lookup_ms.unwrap_or_default()
        )?;
    }
    for pair in results.chunks(2) {
        if let [ours, bird] = pair {
            writeln!(
                md,
                "{} peer(s): router node ÷ BIRD 2: time {:.2}, RSS {:.2}  ",
                ours.peers,
                ours.secs / bird.secs,
                ours.rss_bytes as f64 / bird.rss_bytes.max(1) as f64
            )?;
        }
    }
    nodeapi::out!("{md}");
    crate::write_results(
        &o.out,
        &results,
        &o.docs,
        if o.ipv6 { "bgp-load-ipv6" } else { "bgp-load" },
        if o.ipv6 {
            "BGP at table scale, both families: our node against BIRD 2"
        } else {
            "BGP at table scale: our node against BIRD 2"
        },
        &md,
        "[../bgp.md](../bgp.md)",
    )
}

/// What is announced: prefixes of both families, of them IPv6, and an IPv4 address to look up.
#[derive(Debug, Clone, Copy)]
struct Load {
    n: usize,
    n6: usize,
    probe: Ipv4Addr,
}

fn measure_node(
    b: &mut Bench,
    perf: &Path,
    router: &Path,
    o: &Options,
    load: Load,
    peers: u16,
) -> anyhow::Result<Outcome> {
    let Load { n, n6, probe } = load;
    let sock = b.dir.join("dut.sock");
    let conf = b.dir.join("dut.toml");
    let mut text = format!(
        "name = \"dut\"\nworkers = 1\nadmin_socket = \"{}\"\n[uplink]\ninterface = \"rpb-d\"\naddress = \"{DUT_ADDR}/24\"\n\
         [bgp]\nas_number = {DUT_AS}\n",
        sock.display()
    );
    if o.ipv6 {
        // Dual stack without pools: every IPv6 route is an outside one, the router's alone.
        text += &format!("[ipv6]\naddress = \"{DUT_ADDR6}/64\"\n");
    }
    for a in std::iter::once(GEN_ADDR).chain((0..peers - 1).map(idle_addr)) {
        text +=
            &format!("[[bgp.peers]]\naddress = \"{a}\"\nas_number = {FEED_AS}\nkind = \"global\"\npassive = true\n");
    }
    std::fs::write(&conf, text)?;
    b.spawn(
        DUT_NS,
        &[router.to_str().unwrap_or_default(), "node", "--config", conf.to_str().unwrap_or_default()],
        Stdio::null(),
    )?;
    let node = nodeapi::admin::Client::new(&sock);
    let fib_routes = || node.stats().ok().map(|s| s.fib_routes + s.fib_routes6);
    // The node's own routes (its address, its subnet) are there before the feed starts.
    let (_, before) = wait_for(1, Duration::from_secs(30), None, fib_routes).context("the node did not come up")?;
    b.start_idle(perf, peers - 1)?;
    let up = || node.bgp_status().ok().map(|s| s.peers.iter().filter(|p| p.state == "up").count());
    wait_for(usize::from(peers - 1), Duration::from_secs(60), None, up).context("the idle peers")?;
    let (t0, updates, events) = start_feed(b, perf, o)?;
    let (t1, got) =
        wait_for(before + n, Duration::from_secs(o.timeout), Some(&events), fib_routes).context("our node")?;
    // `router routes --lookup` on the loaded table.
    let t = Instant::now();
    let answer = node.lookup(probe.into())?;
    let lookup_ms = t.elapsed().as_secs_f64() * 1e3;
    if answer.is_none() {
        bail!("the node has no route for {probe} after the load");
    }
    // A pod whose interface is not there yet (a CNI ADD comes before the link is up): the
    // node's own routes are rebuilt all the same.
    let pod = nodeapi::admin::PodSpec {
        name: "perf-pod".into(),
        interface: "perfpod0".into(),
        address: Ipv4Addr::new(10, 250, 0, 1),
        address6: None,
        container: None,
    };
    let t = Instant::now();
    node.pod_add(pod).context("adding a pod")?;
    let pod_add_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    node.pod_del("perf-pod").context("deleting the pod")?;
    let pod_del_ms = t.elapsed().as_secs_f64() * 1e3;
    Ok(Outcome {
        receiver: "router node",
        peers,
        prefixes: n,
        prefixes6: n6,
        installed: got - before,
        updates,
        secs: t1 - t0,
        routes_per_sec: (got - before) as f64 / (t1 - t0),
        rss_bytes: rss_of_ns(DUT_NS, "router"),
        route_lookup_ms: Some(lookup_ms),
        pod_add_ms: Some(pod_add_ms),
        pod_del_ms: Some(pod_del_ms),
        what_is_counted: "routes in the published FIB snapshot the workers look up in",
    })
}

fn measure_bird(
    b: &mut Bench,
    perf: &Path,
    _router: &Path,
    o: &Options,
    load: Load,
    peers: u16,
) -> anyhow::Result<Outcome> {
    let Load { n, n6, .. } = load;
    let v6 = if o.ipv6 { " ipv6 { import all; export none; };" } else { "" };
    let sock = b.dir.join("bird.ctl");
    let conf = b.dir.join("bird.conf");
    let mut text = format!("router id {DUT_ADDR};\nprotocol device {{}}\n");
    for (i, a) in std::iter::once(GEN_ADDR).chain((0..peers - 1).map(idle_addr)).enumerate() {
        text += &format!(
            "protocol bgp p{i} {{ local {DUT_ADDR} as {DUT_AS}; neighbor {a} as {FEED_AS}; passive on;\n\
             ipv4 {{ import all; export none; }};{v6} }}\n"
        );
    }
    std::fs::write(&conf, text)?;
    let (c, s, pid) = (conf.to_string_lossy(), sock.to_string_lossy(), b.dir.join("bird.pid"));
    b.spawn(DUT_NS, &["bird", "-f", "-c", &c, "-s", &s, "-P", &pid.to_string_lossy()], Stdio::null())?;
    let count = || {
        let out = Command::new("birdc").args(["-s", &s, "show", "route", "count"]).output().ok()?;
        // "1072529 of 1072529 routes for 1072529 networks in table master4", and master6
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // (and with both, a "Total: ..." line)
        let lines = text.lines().filter(|l| l.contains("routes for") && l.contains(" in table "));
        lines.map(|l| l.split_whitespace().next()?.parse::<usize>().ok()).sum::<Option<usize>>()
    };
    wait_for(0, Duration::from_secs(30), None, count).context("bird did not come up")?;
    b.start_idle(perf, peers - 1)?;
    let up = || {
        let out = Command::new("birdc").args(["-s", &s, "show", "protocols"]).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).matches("Established").count())
    };
    wait_for(usize::from(peers - 1), Duration::from_secs(60), None, up).context("the idle peers at BIRD")?;
    let (t0, updates, events) = start_feed(b, perf, o)?;
    let (t1, got) = wait_for(n, Duration::from_secs(o.timeout), Some(&events), count).context("BIRD")?;
    Ok(Outcome {
        receiver: "BIRD 2",
        peers,
        prefixes: n,
        prefixes6: n6,
        installed: got,
        updates,
        secs: t1 - t0,
        routes_per_sec: got as f64 / (t1 - t0),
        rss_bytes: rss_of_ns(DUT_NS, "bird"),
        route_lookup_ms: None,
        pod_add_ms: None,
        pod_del_ms: None,
        what_is_counted: "routes in BIRD's master4 and master6 tables (BIRD has no forwarding table of its own)",
    })
}
