//! The admin socket: one JSON request per connection, one JSON answer. The CLI uses it to ask
//! a running node for its routes, counters and neighbours.
//!
//! Only the node's own user and root may talk to it: the socket is 0600 (in a 0700 directory
//! when the node creates that), and every connection's peer uid is checked (`SO_PEERCRED`),
//! which also covers the moment between `bind` and `chmod`.

use crate::config::PeerKind;
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Routes,
    Stats,
    Neighbours,
    BgpStatus,
    /// Write what the data plane receives and sends to a new pcap file (`count` 0: no packet
    /// limit), for at most `seconds` and always within the node's caps.
    CaptureStart {
        path: std::path::PathBuf,
        interface: Option<String>,
        count: u64,
        #[serde(default)]
        seconds: Option<u64>,
        /// Only frames to or from these addresses (also inside a tunnel, and ARP or NDP for
        /// them): a host's, or a dual-stack pod's two; none: every frame. At most
        /// [`MAX_CAPTURE_HOSTS`].
        #[serde(default)]
        hosts: Vec<IpAddr>,
    },
    CaptureStop,
    CaptureStatus,
    /// What BGP peers sent that import refused (all peers, or one).
    Rejected {
        #[serde(default)]
        peer: Option<IpAddr>,
    },
    /// How many prefixes import refused, per peer and reason.
    RefusedCounts,
    /// Every BGP path for a prefix and how the decision process ranked them.
    Paths {
        prefix: ipnet::IpNet,
    },
    /// Save the routes forwarded on, close the BGP sessions without a NOTIFICATION and exit,
    /// for a `router node` started next to take over (graceful restart, RFC 4724).
    GracefulRestart,
    /// The route an address takes (like `ip route get`).
    Lookup {
        addr: std::net::IpAddr,
    },
    /// A pod appeared (a container runtime's CNI plugin made it): serve its interface,
    /// route its address, announce it when borrowed. Replaces a pod of the same name.
    PodAdd {
        pod: PodSpec,
    },
    /// A pod went: stop serving it, withdraw its address. A pod the node does not know is
    /// not an error (DEL is idempotent).
    PodDel {
        name: String,
    },
    /// The node's pods, from its config and those added since, and whether each is up.
    Pods,
    /// Report probes carrying this trace id (for a few seconds).
    TraceStart {
        id: u32,
    },
    /// The hops recorded for the trace so far.
    TraceCollect {
        id: u32,
    },
    TraceStop,
}

/// What `Status` answers: the node and the interfaces of its data plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub pid: u32,
    pub dataplane: crate::config::DataplaneMode,
    pub workers: usize,
    pub uptime_secs: u64,
    /// Routes in the FIB.
    pub routes: usize,
    pub interfaces: Vec<InterfaceStatus>,
    /// The kernel has the routes the node last wanted there (they are installed in the
    /// background; in tun mode the kernel forwards on them).
    #[serde(default = "yes")]
    pub kernel_routes_synced: bool,
    /// The MTU a new pod's interface gets: the uplink's less the largest tunnel overhead of
    /// the pools the node has now (the CNI plugin's when its network sets none).
    #[serde(default)]
    pub pod_mtu: Option<u16>,
    /// Whether the node routes IPv6 (its config has an `[ipv6]` section).
    #[serde(default)]
    pub ipv6: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    /// uplink, pod, tun, raw-ip (tun mode's raw IPv4 socket, which sends IPIP and VXLAN) or vxlan-udp.
    pub role: String,
    /// The interface's address with its prefix length (uplink) or the pod's (pod); empty for
    /// the others.
    pub address: String,
    pub mac: String,
    pub mtu: u16,
    pub ifindex: u32,
}

/// What `BgpStatus` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BgpStatus {
    /// Whether the node speaks BGP at all (a `[bgp]` section in its config).
    pub configured: bool,
    /// Why BGP is configured but not running (it could not start; the node tries again).
    #[serde(default)]
    pub failed: Option<String>,
    pub as_number: Option<u32>,
    pub router_id: Option<std::net::Ipv4Addr>,
    pub peers: Vec<PeerStatus>,
    /// The datastore the node follows (`None`: its config alone), shown beside its sessions
    /// as calicoctl's node status shows the process behind them.
    #[serde(default)]
    pub datastore: Option<DatastoreStatus>,
}

/// Whether the node hears its datastore: while it does not, it forwards and announces with
/// what it last read, and changes made there do not reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreStatus {
    pub endpoints: Vec<String>,
    pub answering: bool,
    /// Since when (Unix seconds) it answers, or does not.
    pub since: u64,
    /// The etcd revision of what the node last read.
    pub revision: Option<i64>,
    /// Why it does not answer (`None` while not answering: not read yet).
    pub error: Option<String>,
    /// What of the datastore the node does not use, and why (a BGP peer it cannot
    /// configure, a resource that does not read, a field out of range), as of its last read.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What `Stats` answers: counters summed over the workers and the slow path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub interfaces: Vec<InterfaceCounters>,
    /// Packets dropped, by reason (every reason, zeros included).
    pub drops: std::collections::BTreeMap<String, u64>,
    #[serde(flatten)]
    pub tallies: forwarding::counters::Tallies,
    /// IPv4 prefixes in the FIB.
    pub fib_routes: usize,
    /// IPv6 prefixes in the FIB (dual stack).
    #[serde(default)]
    pub fib_routes6: usize,
    /// The interfaces the transit filter sits on (afpacket); `None` where the kernel
    /// forwards (tun) and there is nothing to filter.
    pub transit_filter: Option<Vec<String>>,
    /// Masqueraded flows the node keeps (`natOutgoing`).
    #[serde(default)]
    pub nat_flows: usize,
    /// Why the tunnel device a pool needs (`tunl0`, `vxlan.calico`) is missing, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_device_missing: Option<String>,
    /// Why the uplink does not hold the config's addresses any more, while it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink_address_missing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceCounters {
    pub interface: String,
    #[serde(flatten)]
    pub counts: forwarding::counters::IfaceTotals,
}

/// What `CaptureStart` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStarted {
    pub path: PathBuf,
    pub active: bool,
}

/// What `CaptureStatus` answers: the running capture, or the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStatus {
    pub active: bool,
    pub path: Option<PathBuf>,
    pub written: u64,
    /// Frames the writer could not keep up with.
    pub lost: u64,
    /// Why the capture stopped by itself: "packet count", "size limit" or "time limit".
    pub ended: Option<String>,
}

/// What `CaptureStop` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureStopped {
    pub written: u64,
}

/// One row of `router status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PeerStatus {
    pub peer: IpAddr,
    pub peer_type: PeerKind,
    /// A router outside the cluster (not another node).
    #[serde(default)]
    pub external: bool,
    #[serde(rename = "as_number")]
    pub asn: u32,
    pub state: String,
    /// Seconds since the UNIX epoch when the state was entered.
    pub since: u64,
    pub info: String,
    pub received: usize,
    /// Prefixes the peer sent that import refused (`router routes --rejected` says why).
    #[serde(default)]
    pub rejected: usize,
    pub advertised: usize,
    /// Times the session left Established.
    #[serde(default)]
    pub flaps: u64,
    #[serde(default)]
    pub updates_received: u64,
    #[serde(default)]
    pub updates_sent: u64,
    /// Every BGP message (OPEN, UPDATE, KEEPALIVE, …) and every byte over the wire with this
    /// peer, all its sessions together.
    #[serde(default)]
    pub messages_received: u64,
    #[serde(default)]
    pub messages_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub bytes_sent: u64,
    /// The address families the session carries ("ipv4", "ipv6"); empty while it is down.
    #[serde(default)]
    pub families: Vec<String>,
}

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RouteSource {
    /// Derived from the node itself: its address, its subnet, its blocks, its pods.
    Local,
    /// From the config file.
    Static,
    /// Learned over BGP.
    Bgp,
}

/// One row of `router routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RouteEntry {
    pub prefix: ipnet::IpNet,
    pub next_hop: Option<std::net::IpAddr>,
    pub interface: Option<String>,
    /// `route -n` flags: U up, G via a gateway, H host route (/32), ! reject.
    pub flags: String,
    pub source: RouteSource,
    /// What happens to matching packets: unicast, local (for this node), blackhole, unreachable.
    #[serde(rename = "type")]
    pub kind: String,
    /// Encapsulation toward the next hop: "none" (direct routing) or "ipip".
    pub encap: String,
    /// Why this encapsulation, in words.
    #[serde(default)]
    pub why: String,
    /// Who forwards matching packets: "router" (userspace) or "kernel" (tun mode's direct routes).
    #[serde(default)]
    pub forwarded_by: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RouteMatch {
    pub prefix: String,
    pub next_hop: Option<std::net::IpAddr>,
    pub source: RouteSource,
    pub encap: String,
    pub why: String,
}

/// Whether `s` may name a pod, its interface or its container: 1 to `max` letters, digits,
/// `-`, `_` and `.` (the CNI's rule for a container id; safe in paths and logs).
pub fn valid_token(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The most addresses a capture's host filter takes: every frame is matched against each.
pub const MAX_CAPTURE_HOSTS: usize = 16;

/// The longest pod name (a DNS subdomain's length) and container id a node takes.
pub const MAX_POD_NAME: usize = 253;
pub const MAX_CONTAINER_ID: usize = 256;

/// A pod as the node serves it: its name (for a CNI pod, the workload's name its runtime
/// gave, else the container's short id), the host end of its veth, its address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub name: String,
    pub interface: String,
    pub address: Ipv4Addr,
    /// Its IPv6 address, on a dual-stack node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<std::net::Ipv6Addr>,
    /// The container it is, by its runtime's id (CNI pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl From<PodSpec> for crate::config::PodConfig {
    fn from(p: PodSpec) -> Self {
        crate::config::PodConfig {
            name: p.name,
            interface: p.interface,
            address: p.address,
            address6: p.address6,
            container: p.container,
        }
    }
}

impl From<&crate::config::PodConfig> for PodSpec {
    fn from(p: &crate::config::PodConfig) -> Self {
        PodSpec {
            name: p.name.clone(),
            interface: p.interface.clone(),
            address: p.address,
            address6: p.address6,
            container: p.container.clone(),
        }
    }
}

/// One row of `Pods`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    #[serde(flatten)]
    pub pod: PodSpec,
    /// Its interface exists and the data plane serves it.
    pub up: bool,
    /// Its address is outside the node's blocks: the node announces it as a /32.
    pub borrowed: bool,
    /// Added while the node ran (a CNI pod), not from the config.
    pub dynamic: bool,
}

/// One hop of a traced packet's journey.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hop {
    pub node: String,
    /// Seconds since the UNIX epoch.
    pub time: f64,
    pub ingress: String,
    pub ingress_role: String,
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    pub protocol: u8,
    /// TTL, or IPv6's hop limit.
    pub ttl: u8,
    /// For IPIP or VXLAN arriving: the packet inside (src, dst, ttl).
    pub inner: Option<(std::net::IpAddr, std::net::IpAddr, u8)>,
    /// What the packet (the one inside, when wrapped) carries: "ICMP echo request", "TCP RST".
    #[serde(default)]
    pub what: String,
    /// The tunnel it arrived in: "IPIP", or "VXLAN" with the outer UDP ports and the VNI.
    #[serde(default)]
    pub tunnel: Option<String>,
    pub route: Option<RouteMatch>,
    /// forward, encapsulate, decapsulate, icmp_error, drop, kernel, arp_pending, fragment
    pub action: String,
    pub reason: String,
    pub egress: Option<String>,
    /// The packet as it left: (src, dst, ttl), and the outer header when wrapped.
    pub out: Option<(std::net::IpAddr, std::net::IpAddr, u8)>,
    pub out_outer: Option<(std::net::IpAddr, std::net::IpAddr, u8)>,
    /// The tunnel it left in, described as `tunnel`.
    #[serde(default)]
    pub out_tunnel: Option<String>,
}

/// A prefix a peer sent that import refused (`router routes --rejected`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRoute {
    pub peer: IpAddr,
    pub prefix: String,
    pub reason: String,
}

/// How many of a peer's prefixes import refused for one reason (`router status --node`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedCount {
    pub peer: IpAddr,
    pub reason: String,
    pub count: usize,
}

/// One BGP path for a prefix and how the decision process ranked it
/// (`router routes --detail PREFIX`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathDetail {
    /// The peer's address, or "this node".
    pub from: String,
    pub peer_type: Option<PeerKind>,
    /// The peer's BGP identifier (from its OPEN).
    pub router_id: Option<Ipv4Addr>,
    pub next_hop: String,
    pub as_path: Vec<u32>,
    pub origin: String,
    pub local_pref: Option<u32>,
    pub med: Option<u32>,
    pub communities: Vec<String>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    /// Kept from a restarting peer (graceful restart).
    pub stale: bool,
    pub best: bool,
    /// The step of the decision process at which it lost.
    pub lost_at: Option<String>,
}

/// The node's side of one exchange: an answer of the request's type, or why not.
pub type Answer = Result<serde_json::Value, String>;

/// Encodes a typed answer (the node's side; the [`Client`] decodes the same type).
pub fn answer<T: Serialize>(t: &T) -> Answer {
    serde_json::to_value(t).map_err(|e| format!("encoding the answer: {e}"))
}

/// A node's admin socket, with one method per request, each returning the type the node
/// encodes for it.
#[derive(Debug, Clone)]
pub struct Client {
    path: PathBuf,
}

impl Client {
    pub fn new(path: impl Into<PathBuf>) -> Client {
        Client { path: path.into() }
    }

    fn call<T: serde::de::DeserializeOwned>(&self, req: Request) -> Result<T, ClientError> {
        serde_json::from_value(request(&self.path, req)?).map_err(ClientError::Decode)
    }

    pub fn status(&self) -> Result<NodeStatus, ClientError> {
        self.call(Request::Status)
    }

    pub fn bgp_status(&self) -> Result<BgpStatus, ClientError> {
        self.call(Request::BgpStatus)
    }

    pub fn routes(&self) -> Result<Vec<RouteEntry>, ClientError> {
        self.call(Request::Routes)
    }

    pub fn pod_add(&self, pod: PodSpec) -> Result<(), ClientError> {
        self.call(Request::PodAdd { pod })
    }

    pub fn pod_del(&self, name: &str) -> Result<(), ClientError> {
        self.call(Request::PodDel { name: name.to_string() })
    }

    pub fn pods(&self) -> Result<Vec<PodStatus>, ClientError> {
        self.call(Request::Pods)
    }

    pub fn graceful_restart(&self) -> Result<(), ClientError> {
        self.call(Request::GracefulRestart)
    }

    pub fn rejected(&self, peer: Option<IpAddr>) -> Result<Vec<RejectedRoute>, ClientError> {
        self.call(Request::Rejected { peer })
    }

    pub fn refused_counts(&self) -> Result<Vec<RefusedCount>, ClientError> {
        self.call(Request::RefusedCounts)
    }

    pub fn paths(&self, prefix: ipnet::IpNet) -> Result<Vec<PathDetail>, ClientError> {
        self.call(Request::Paths { prefix })
    }

    /// The route `addr` takes, if any.
    pub fn lookup(&self, addr: std::net::IpAddr) -> Result<Option<RouteEntry>, ClientError> {
        self.call(Request::Lookup { addr })
    }

    pub fn stats(&self) -> Result<Stats, ClientError> {
        self.call(Request::Stats)
    }

    pub fn neighbours(&self) -> Result<Vec<forwarding::dataplane::NeighbourInfo>, ClientError> {
        self.call(Request::Neighbours)
    }

    pub fn capture_start(
        &self,
        path: PathBuf,
        interface: Option<String>,
        count: u64,
        seconds: Option<u64>,
        hosts: Vec<IpAddr>,
    ) -> Result<CaptureStarted, ClientError> {
        self.call(Request::CaptureStart { path, interface, count, seconds, hosts })
    }

    pub fn capture_status(&self) -> Result<CaptureStatus, ClientError> {
        self.call(Request::CaptureStatus)
    }

    pub fn capture_stop(&self) -> Result<CaptureStopped, ClientError> {
        self.call(Request::CaptureStop)
    }

    pub fn trace_start(&self, id: u32) -> Result<(), ClientError> {
        self.call(Request::TraceStart { id })
    }

    /// The hops recorded for trace `id` so far.
    pub fn trace_collect(&self, id: u32) -> Result<Vec<Hop>, ClientError> {
        self.call(Request::TraceCollect { id })
    }

    pub fn trace_stop(&self) -> Result<(), ClientError> {
        self.call(Request::TraceStop)
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    // The io error is in the message, and not a `source`: anyhow's `{:#}` would say it twice.
    #[error("cannot reach the node's admin socket {path}: {err}; {}", connect_hint(err))]
    Connect { path: String, err: std::io::Error },
    #[error("talking to {path}: {}", io_text(err))]
    Io { path: String, err: std::io::Error },
    #[error("the node's answer does not decode (is it another version of router?): {0}")]
    Decode(serde_json::Error),
    #[error("the node refused: {0}")]
    Refused(String),
}

impl ClientError {
    /// The node could not be reached or did not answer (stopped, crashed, stuck), as
    /// opposed to an answer that refused or did not decode.
    pub fn unreachable(&self) -> bool {
        matches!(self, ClientError::Connect { .. } | ClientError::Io { .. })
    }
}

/// An exchange's failure in words: a read or write that timed out says so, rather than
/// "Resource temporarily unavailable".
fn io_text(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            format!("no answer within {} s: the node is stopped or too busy to answer", ANSWER_WAIT.as_secs())
        }
        _ => err.to_string(),
    }
}

/// How long a client waits for the node to take its request and to answer.
const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// What a failed connect most likely means.
fn connect_hint(err: &std::io::Error) -> &'static str {
    match err.kind() {
        std::io::ErrorKind::PermissionDenied => "the socket is for its node's user and root only",
        _ => "is the node running? (try `router lab status`)",
    }
}

/// Sends one request and returns the node's answer as JSON (the [`Client`] decodes it).
fn request(path: &Path, req: Request) -> Result<serde_json::Value, ClientError> {
    let p = path.display().to_string();
    let io = |err| ClientError::Io { path: p.clone(), err };
    let mut s = UnixStream::connect(path).map_err(|err| ClientError::Connect { path: p.clone(), err })?;
    s.set_read_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    s.set_write_timeout(Some(ANSWER_WAIT)).map_err(io)?;
    let mut line = serde_json::to_string(&req).map_err(ClientError::Decode)?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    if BufReader::new(&s).read_line(&mut answer).map_err(io)? == 0 {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the node closed the connection unanswered",
        )));
    }
    let r: Response = serde_json::from_str(&answer).map_err(ClientError::Decode)?;
    match (r.ok, r.result, r.error) {
        (true, Some(v), _) => Ok(v),
        (true, None, _) => Ok(serde_json::Value::Null),
        (false, _, e) => Err(ClientError::Refused(e.unwrap_or_default())),
    }
}

/// How long a client has to send its whole request, and to take the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// The longest request line accepted (every request is a few hundred bytes).
pub const REQUEST_CAP: usize = 64 * 1024;

/// Reads from `s` until `stop` says the bytes so far are complete, within `deadline` (for the
/// whole request, not each read: a client trickling one byte a second is cut off like a
/// silent one) and `cap` bytes.
pub fn read_until(
    mut s: impl std::io::Read,
    set_timeout: impl Fn(Duration) -> std::io::Result<()>,
    deadline: std::time::Instant,
    cap: usize,
    stop: impl Fn(&[u8]) -> bool,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind};
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !stop(&got) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(Error::new(ErrorKind::TimedOut, "the request did not arrive in time"));
        }
        set_timeout(left)?;
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() > cap {
            return Err(Error::new(ErrorKind::InvalidData, format!("request longer than {cap} bytes")));
        }
    }
    Ok(got)
}

/// Reads one request line from `s` (whole within [`REQUEST_DEADLINE`], at most
/// [`REQUEST_CAP`] bytes) and answers it with `handle`.
pub fn serve_one(s: UnixStream, handle: impl FnOnce(Request) -> Answer) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + REQUEST_DEADLINE;
    let line = read_until(&s, |t| s.set_read_timeout(Some(t)), deadline, REQUEST_CAP, |b| b.contains(&b'\n'))?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let resp = match serde_json::from_slice::<Request>(line) {
        Ok(req) => match handle(req) {
            Ok(v) => Response { ok: true, result: Some(v), error: None },
            Err(e) => Response { ok: false, result: None, error: Some(e) },
        },
        Err(e) => Response { ok: false, result: None, error: Some(format!("bad request: {e}")) },
    };
    let mut out = serde_json::to_string(&resp).map_err(std::io::Error::other)?;
    out.push('\n');
    s.set_write_timeout(Some(REQUEST_DEADLINE))?;
    (&s).write_all(out.as_bytes())
}

/// Whether a node serves the admin socket at `path`. A node being killed still accepts
/// connections until the kernel has torn all its threads down (a few hundred ms), but answers
/// nothing: its socket counts as stale once connecting fails. One that accepts and stays
/// silent past the deadline is taken as alive (busy), never replaced.
fn node_answers(path: &Path) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        match Client::new(path).status() {
            Err(ClientError::Connect { .. }) => return false,
            Err(ClientError::Io { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return true,
        }
    }
}

/// Binds the admin socket at `path` (non-blocking), mode 0600. A stale socket of a node that
/// is gone is replaced; a live one is an error.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if path.exists() {
        if node_answers(path) {
            bail!("another node already answers on {}; stop it first", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::private::dir_if_missing(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} private", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Whether a peer with `uid` may use the admin socket of a node running as `ours`.
pub fn peer_allowed(uid: u32, ours: u32) -> bool {
    uid == ours || uid == 0
}

/// Answers every connection waiting on `listener` (non-blocking) with `handle`; a peer of
/// another user gets a refusal and is logged.
pub fn serve_pending(listener: &UnixListener, mut handle: impl FnMut(Request) -> Answer) {
    let ours = nix::unistd::geteuid().as_raw();
    loop {
        let s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                return;
            }
        };
        let uid = nix::sys::socket::getsockopt(&s, nix::sys::socket::sockopt::PeerCredentials).map(|c| c.uid());
        let r = s.set_nonblocking(false).and_then(|_| match uid {
            Ok(uid) if peer_allowed(uid, ours) => serve_one(s, &mut handle),
            Ok(uid) => {
                tracing::warn!(uid, "refused an admin connection from another user");
                serve_one(s, |_| Err(format!("uid {uid} may not use this node's admin socket (it runs as uid {ours})")))
            }
            Err(e) => Err(std::io::Error::other(format!("reading the peer's credentials: {e}"))),
        });
        if let Err(e) = r {
            tracing::debug!(error = %e, "admin connection failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("router-admin-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn socket_is_0600_in_a_0700_directory_and_answers_its_owner() {
        let d = scratch("mode");
        let path = d.join("node.sock");
        let l = bind(&path).expect("bind");
        assert_eq!(std::fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&d).expect("stat").mode() & 0o777, 0o700);
        let client = std::thread::spawn({
            let path = path.clone();
            move || request(&path, Request::Status)
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !client.is_finished() && std::time::Instant::now() < deadline {
            serve_pending(&l, |_| Ok(serde_json::json!("hello")));
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = client.join().expect("client thread").expect("answer");
        assert_eq!(got, serde_json::json!("hello"));
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    /// A socket whose node is still being torn down (it accepts, never answers, then goes)
    /// is replaced once it is gone; a node that answers keeps its socket.
    #[test]
    fn a_dying_nodes_socket_is_waited_for_and_a_live_one_kept() {
        let d = scratch("dying");
        let path = d.join("node.sock");
        let dying = bind(&path).expect("bind");
        let gone = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(dying);
        });
        let live = bind(&path).expect("the dying node's socket is replaced");
        gone.join().expect("thread");
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = std::thread::spawn({
            let done = done.clone();
            move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    serve_pending(&live, |_| Ok(serde_json::json!({})));
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        let e = bind(&path).expect_err("a live node keeps its socket").to_string();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(e.contains("another node already answers"), "{e}");
        server.join().expect("server");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    /// The node encodes each answer with the type the client decodes it into.
    #[test]
    fn the_client_decodes_what_the_node_encodes() {
        let d = scratch("typed");
        let path = d.join("node.sock");
        let l = bind(&path).expect("bind");
        let stats = Stats {
            interfaces: vec![InterfaceCounters {
                interface: "eth0".into(),
                counts: forwarding::counters::IfaceTotals { rx_packets: 1, rx_bytes: 2, tx_packets: 3, tx_bytes: 4 },
            }],
            drops: [("no_route".to_string(), 5)].into_iter().collect(),
            tallies: forwarding::counters::Tallies {
                icmp_errors_sent: 6,
                arp_replies_sent: 7,
                ndp_replies_sent: 21,
                ipip_encapsulated: 8,
                ipip_decapsulated: 9,
                vxlan_encapsulated: 16,
                vxlan_decapsulated: 17,
                fragments_sent: 10,
                gso_received: 11,
                gso_segments: 12,
                udp_gso_sent: 18,
                udp_gso_received: 19,
                gro_packets: 13,
                gro_segments: 14,
                nat_masqueraded: 22,
                nat_restored: 23,
            },
            fib_routes: 15,
            fib_routes6: 0,
            transit_filter: None,
            nat_flows: 24,
            tunnel_device_missing: Some("no tunl0".into()),
            uplink_address_missing: Some("eth0 lost 192.168.100.100/24".into()),
        };
        let server_stats = stats.clone();
        let client = std::thread::spawn({
            let path = path.clone();
            move || {
                let c = Client::new(path);
                (c.stats(), c.lookup(std::net::Ipv4Addr::new(10, 99, 0, 1).into()), c.trace_start(7), c.capture_stop())
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !client.is_finished() && std::time::Instant::now() < deadline {
            serve_pending(&l, |req| match req {
                Request::Stats => answer(&server_stats),
                Request::Lookup { .. } => answer(&None::<RouteEntry>),
                Request::TraceStart { .. } => answer(&()),
                _ => Err("not served here".into()),
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        let (got_stats, lookup, trace, capture) = client.join().expect("client thread");
        assert_eq!(got_stats.expect("stats"), stats);
        assert_eq!(lookup.expect("lookup"), None);
        trace.expect("trace start");
        let e = capture.expect_err("refused");
        assert!(e.to_string().contains("not served here"), "{e}");
        std::fs::remove_dir_all(&d).expect("clean up");
    }

    #[test]
    fn a_refused_connect_says_whose_socket_it_is_and_a_missing_one_asks_for_the_node() {
        let e = |kind| ClientError::Connect { path: "/x.sock".into(), err: std::io::Error::from(kind) }.to_string();
        assert!(e(std::io::ErrorKind::PermissionDenied).ends_with("the socket is for its node's user and root only"));
        assert!(e(std::io::ErrorKind::NotFound).contains("is the node running?"));
        // A node that takes the connection but never answers (stopped, stuck) is named so.
        let e = |kind| ClientError::Io { path: "/x.sock".into(), err: std::io::Error::from(kind) }.to_string();
        assert!(e(std::io::ErrorKind::WouldBlock)
            .ends_with("no answer within 5 s: the node is stopped or too busy to answer"));
        assert!(e(std::io::ErrorKind::BrokenPipe).contains("broken pipe"), "{}", e(std::io::ErrorKind::BrokenPipe));
    }

    #[test]
    fn only_the_owner_and_root_are_allowed() {
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 1000));
        assert!(!peer_allowed(65534, 1000));
        assert!(!peer_allowed(1000, 0));
    }

    /// Another user who can reach the socket file (here: made 0666 on purpose, as a lax
    /// umask or a shared directory might) is still refused, by the peer check.
    #[test]
    fn another_user_is_refused_even_where_the_file_lets_them_connect() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root: it connects as user nobody (uid 65534) through setpriv");
        }
        let d = scratch("peer");
        let path = d.join("node.sock");
        let l = bind(&path).expect("bind");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).expect("chmod dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod socket");
        let script = "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'{\"cmd\":\"status\"}\\n')\nprint(s.makefile().readline())";
        let child = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", script])
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux) and python3 are needed");
        let served = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = std::thread::spawn({
            let (served, stop) = (served.clone(), stop.clone());
            move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    serve_pending(&l, |_| {
                        served.store(true, std::sync::atomic::Ordering::Relaxed);
                        Ok(serde_json::json!("secret"))
                    });
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        let out = child.wait_with_output().expect("output");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        server.join().expect("server thread");
        let served = served.load(std::sync::atomic::Ordering::Relaxed);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!served, "the handler ran for another user");
        assert!(
            text.contains("uid 65534 may not use"),
            "stdout {text:?}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::remove_dir_all(&d).expect("clean up");
    }
}
