//! The CNI commands: the network config on stdin, `CNI_*` in the environment, a result or
//! an error as JSON on stdout (CNI specification 1.0.0 §§ 3–5; GC and STATUS from 1.1.0).

use crate::ipam::{Assigned, Ipam};
use ipnet::{Ipv4Net, Ipv6Net};
use nodeapi::admin::{self, PodSpec};
use nodeapi::config::DataplaneMode;
use nodeapi::ipcmd;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// The versions whose network configs and results this plugin speaks.
pub const SUPPORTED: &[&str] = &["1.0.0", "1.1.0"];
/// The address every pod's default route points at; the node answers ARP for it.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 one, Calico's: answered by proxy NDP (afpacket) or owned by the host end, which
/// then has Calico's MAC (tun).
pub const GATEWAY6: Ipv6Addr = encap::icmpv6::CALICO_GATEWAY;

/// A CNI error: the spec's well-known codes below 100, ours from 100.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }
    pub fn io(details: impl Into<String>) -> CniError {
        CniError::new(5, "I/O failure", details)
    }
    fn env(details: impl Into<String>) -> CniError {
        CniError::new(4, "invalid necessary environment variables", details)
    }
    fn config(details: impl Into<String>) -> CniError {
        CniError::new(7, "invalid network config", details)
    }
    fn node(details: impl Into<String>) -> CniError {
        CniError::new(11, "try again later: the node does not answer", details)
    }
    fn setup(details: impl Into<String>) -> CniError {
        CniError::new(100, "setting up the pod's network failed", details)
    }
    fn check(details: impl Into<String>) -> CniError {
        CniError::new(101, "the pod's network is not as ADD left it", details)
    }
    fn ipam(details: impl Into<String>) -> CniError {
        CniError::new(102, "no address", details)
    }
}

/// The plugin's entry of the network config (`type: router`). Of the keys a runtime adds,
/// `runtimeConfig.ips` is read (the `ips` capability); others are ignored, as the spec allows.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The node: its name (in the IPAM state), its admin socket, its blocks.
    pub node: String,
    pub admin_socket: PathBuf,
    /// IPAM in a file this machine's plugin calls share (the lab's, or one host's)...
    #[serde(default)]
    pub ipam_file: Option<PathBuf>,
    /// ...or in etcd, shared by every host (Calico's IPAM layout): then `pool` and
    /// `block_size` say where new blocks come from (in the lab's file too, which every node
    /// shares, once every block is full).
    #[serde(default)]
    pub etcd_endpoints: Vec<String>,
    /// For `https://` endpoints, Calico's `etcd_ca_cert_file`, `etcd_cert_file` and
    /// `etcd_key_file`.
    #[serde(flatten)]
    pub etcd_tls: nodeapi::config::EtcdTls,
    #[serde(default)]
    pub pool: Option<Ipv4Net>,
    #[serde(default)]
    pub block_size: Option<u8>,
    #[serde(default)]
    pub blocks: Vec<Ipv4Net>,
    /// Dual stack: the node's IPv6 blocks; containers then get a /128 from them too (in
    /// the file, or in etcd; beyond them only with `pool6`).
    #[serde(default)]
    pub blocks6: Vec<Ipv6Net>,
    /// With etcd: the IPv6 pool and its block size. A node whose IPv6 blocks are full then
    /// gets a new block (or borrows), and announces each such address as a /128, as for
    /// IPv4; without it containers' IPv6 addresses come from `blocks6` alone.
    #[serde(default)]
    pub pool6: Option<Ipv6Net>,
    #[serde(default)]
    pub block_size6: Option<u8>,
    /// Calico's `ipv4_pools` / `ipv6_pools`: this network's containers take addresses from
    /// these pools only (IPPool names or CIDRs, in order of preference; with the IPAM file,
    /// CIDRs, within which its blocks are used). Manual pools may be named.
    #[serde(default)]
    pub ipv4_pools: Vec<String>,
    #[serde(default)]
    pub ipv6_pools: Vec<String>,
    /// The pods' MTU. Unset or 0 (Calico's "auto"): the node's answer, its uplink's less the
    /// pools' tunnel (1480 with IPIP, 1450 with VXLAN on 1500), so a pool changed in etcd or
    /// a jumbo-frame uplink needs no new conflist.
    #[serde(default)]
    pub mtu: Option<u16>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<Attachment>>,
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
}

/// What the runtime passes for the capabilities the plugin declares.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// The addresses the container asks for (`podman run --ip`, `nerdctl run --ip`): one of
    /// each family at most, `address` or `address/prefix`.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The MAC address the container's interface gets (`podman run --mac-address`).
    #[serde(default)]
    pub mac: Option<String>,
}

/// The values of `key` in `CNI_ARGS` (`K=V;K=V`), in order.
fn cni_args<'a>(args: Option<&'a str>, key: &'a str) -> impl DoubleEndedIterator<Item = &'a str> {
    args.into_iter()
        .flat_map(|a| a.split(';'))
        .filter_map(|kv| kv.split_once('='))
        .filter(move |(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// The last value of `key` in `CNI_ARGS`, if not empty.
fn cni_arg<'a>(args: Option<&'a str>, key: &'a str) -> Option<&'a str> {
    cni_args(args, key).next_back().filter(|v| !v.is_empty())
}

/// The MAC address asked for the container's interface: `runtimeConfig.mac` or `MAC=` in
/// `CNI_ARGS` (as podman passes it), a unicast address other than zero.
fn asked_mac(conf: &NetConf, cni_args: Option<&str>) -> Result<Option<String>, CniError> {
    let asked = match (conf.runtime_config.mac.as_deref().filter(|m| !m.is_empty()), cni_arg(cni_args, "MAC")) {
        (Some(m), _) => Some((m, "runtimeConfig.mac", CniError::config as fn(String) -> CniError)),
        (None, Some(m)) => Some((m, "CNI_ARGS MAC", CniError::env as _)),
        _ => None,
    };
    let Some((text, source, error)) = asked else { return Ok(None) };
    match text.parse::<encap::MacAddr>() {
        Ok(m) if !m.is_multicast() && m != encap::MacAddr::ZERO => Ok(Some(m.to_string())),
        Ok(_) => {
            Err(error(format!("{source}: {text} is a multicast or zero MAC address, not one an interface can have")))
        }
        Err(_) => Err(error(format!("{source}: {text:?} is not a MAC address (six hex octets separated by ':')"))),
    }
}

/// The addresses a container asks for, instead of the next free ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Asked {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl Asked {
    /// From `runtimeConfig.ips` and from `IP=` in `CNI_ARGS` (`K=V;K=V`, the addresses
    /// separated by commas, as Calico's IPAM reads it); both may name the same addresses.
    fn read(conf: &NetConf, cni_args: Option<&str>) -> Result<Asked, CniError> {
        let from_args = self::cni_args(cni_args, "IP")
            .flat_map(|v| v.split(','))
            .map(|v| (v.trim(), "CNI_ARGS IP", CniError::env as fn(String) -> CniError));
        let from_conf = conf.runtime_config.ips.iter().map(|v| (v.trim(), "runtimeConfig.ips", CniError::config as _));
        let mut asked = Asked::default();
        for (text, source, error) in from_conf.chain(from_args).filter(|(v, _, _)| !v.is_empty()) {
            let bad = || error(format!("{source}: {text:?} is not an address (or address/prefix)"));
            let (addr, len) = match text.split_once('/') {
                Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
                None => (text, None),
            };
            let twice = |family: &str| error(format!("{source}: a second {family} address, {text}"));
            match addr.parse::<std::net::IpAddr>().map_err(|_| bad())? {
                std::net::IpAddr::V4(a) if len.unwrap_or(32) <= 32 => {
                    if asked.v4.is_some_and(|x| x != a) {
                        return Err(twice("IPv4"));
                    }
                    asked.v4 = Some(a);
                }
                std::net::IpAddr::V6(a) if len.unwrap_or(128) <= 128 => {
                    if asked.v6.is_some_and(|x| x != a) {
                        return Err(twice("IPv6"));
                    }
                    asked.v6 = Some(a);
                }
                _ => return Err(bad()),
            }
        }
        Ok(asked)
    }
}

/// A pod's MTU when the network sets none and the node does not say (an older node): room
/// for IPIP on a 1500-byte underlay.
const FALLBACK_MTU: u16 = 1480;

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The plugin as a process: the config on stdin, the environment, the answer on stdout,
/// the exit status.
pub fn run_process() -> ! {
    let mut stdin = String::new();
    let env: HashMap<String, String> = std::env::vars().collect();
    let mut out = std::io::stdout();
    let code = match std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin) {
        Ok(_) => main(&env, &stdin, &mut out),
        Err(e) => fail(&mut out, "1.0.0", &CniError::io(format!("reading stdin: {e}"))),
    };
    let _ = out.flush();
    std::process::exit(code);
}

/// Runs one plugin call; returns the exit code (0: success, 1: an error was printed).
pub fn main(env: &HashMap<String, String>, stdin: &str, out: &mut impl Write) -> i32 {
    let version = serde_json::from_str::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string))
        .filter(|v| SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".to_string());
    match run(env, stdin) {
        Ok(Some(v)) => {
            let _ = writeln!(out, "{}", serde_json::to_string(&v).unwrap_or_default());
            0
        }
        Ok(None) => 0,
        Err(e) => fail(out, &version, &e),
    }
}

/// Prints `e` as the spec's error object.
pub fn fail(out: &mut impl Write, version: &str, e: &CniError) -> i32 {
    let v = json!({ "cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details });
    let _ = writeln!(out, "{v}");
    1
}

fn need<'a>(env: &'a HashMap<String, String>, key: &str) -> Result<&'a str, CniError> {
    env.get(key).map(String::as_str).filter(|v| !v.is_empty()).ok_or_else(|| CniError::env(format!("{key} is not set")))
}

fn run(env: &HashMap<String, String>, stdin: &str) -> Result<Option<Value>, CniError> {
    // An unknown command is the error, whatever the config says.
    let command = match need(env, "CNI_COMMAND")? {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "GC" => Command::Gc,
        "STATUS" => Command::Status,
        "VERSION" => Command::Version,
        other => {
            return Err(CniError::env(format!("CNI_COMMAND {other:?} is not ADD, DEL, CHECK, GC, STATUS or VERSION")))
        }
    };
    let raw: Value =
        serde_json::from_str(stdin).map_err(|e| CniError::new(6, "failed to decode content", e.to_string()))?;
    let version = raw.get("cniVersion").and_then(Value::as_str).unwrap_or("");
    if command == Command::Version {
        return Ok(Some(json!({
            "cniVersion": if SUPPORTED.contains(&version) { version } else { "1.1.0" },
            "supportedVersions": SUPPORTED,
        })));
    }
    if !SUPPORTED.contains(&version) {
        return Err(CniError::new(
            1,
            "incompatible CNI version",
            format!("cniVersion {version:?} is not one of {}", SUPPORTED.join(", ")),
        ));
    }
    let conf: NetConf = serde_json::from_value(raw).map_err(|e| CniError::config(e.to_string()))?;
    if conf.kind != "router" {
        return Err(CniError::config(format!("type is {:?}; this plugin is \"router\"", conf.kind)));
    }
    match command {
        Command::Add => add(&conf, &Call::from_env(env, true)?).map(Some),
        Command::Del => del(&conf, &Call::from_env(env, false)?).map(|_| None),
        Command::Check => check(&conf, &Call::from_env(env, true)?).map(|_| None),
        Command::Gc => gc(&conf).map(|_| None),
        Command::Status => status(&conf).map(|_| None),
        Command::Version => Ok(None),
    }
}

/// The spec's commands (CNI_COMMAND).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Add,
    Del,
    Check,
    Gc,
    Status,
    Version,
}

/// What a call is about: the container, its network namespace, the interface inside it.
#[derive(Debug)]
struct Call {
    container: String,
    netns: Option<String>,
    ifname: String,
    /// `CNI_ARGS`, as given.
    args: Option<String>,
}

impl Call {
    fn from_env(env: &HashMap<String, String>, netns_required: bool) -> Result<Call, CniError> {
        let container = need(env, "CNI_CONTAINERID")?.to_string();
        if !admin::valid_token(&container, admin::MAX_CONTAINER_ID) {
            return Err(CniError::env(format!(
                "CNI_CONTAINERID {container:?} is not 1-{} characters of a-z, 0-9, '-', '_', '.'",
                admin::MAX_CONTAINER_ID
            )));
        }
        let ifname = need(env, "CNI_IFNAME")?.to_string();
        if ifname.len() > 15
            || ifname == "."
            || ifname == ".."
            || ifname.bytes().any(|b| b == b'/' || b == b':' || b <= b' ')
        {
            return Err(CniError::env(format!("CNI_IFNAME {ifname:?} is not a valid interface name")));
        }
        let netns = match env.get("CNI_NETNS").filter(|v| !v.is_empty()) {
            Some(n) => Some(n.clone()),
            None if netns_required => return Err(CniError::env("CNI_NETNS is not set")),
            None => None,
        };
        Ok(Call { container, netns, ifname, args: env.get("CNI_ARGS").cloned() })
    }

    fn handle(&self) -> String {
        crate::container_handle(&self.container, &self.ifname)
    }

    /// The workload's name as its runtime passes it in `CNI_ARGS`: Kubernetes'
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` as `<namespace>.<pod>`, or `K8S_POD_NAME`
    /// alone, which podman sets to the container's name. None where there is none or it
    /// cannot name a pod.
    fn workload(&self) -> Option<String> {
        let (namespace, name) = self.pod_args();
        let full = match namespace {
            Some(ns) => format!("{ns}.{}", name?),
            None => name?.to_string(),
        };
        // Room left for `-<ifname>`.
        admin::valid_token(&full, admin::MAX_POD_NAME - 16).then_some(full)
    }

    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS`, where given.
    fn pod_args(&self) -> (Option<&str>, Option<&str>) {
        let args = self.args.as_deref();
        (cni_arg(args, "K8S_POD_NAMESPACE"), cni_arg(args, "K8S_POD_NAME"))
    }

    /// The pod's name at its node: the workload's name, else the container's short id; with
    /// the interface where that is not `eth0`.
    fn pod_name(&self) -> String {
        match self.workload() {
            Some(w) if self.ifname == "eth0" => w,
            Some(w) => format!("{w}-{}", self.ifname),
            None => crate::pod_name(&self.container, &self.ifname),
        }
    }

    fn host_ifname(&self) -> String {
        crate::cali_name(&self.handle())
    }

    /// Its workload endpoint as Calico's plugin names it: a Kubernetes pod's (orchestrator
    /// `k8s`, in the pod's namespace) where `CNI_ARGS` name the pod, else the container's
    /// (`cni`, in `default`). Addresses and MAC are those of `result` (an ADD's answer),
    /// where given.
    fn endpoint(&self, conf: &NetConf, result: Option<&Value>) -> Result<datastore::resources::Resource, CniError> {
        let (namespace, pod) = match self.pod_args() {
            (Some(ns), Some(pod)) => (ns, pod),
            _ => ("default", ""),
        };
        let addresses = result
            .and_then(|r| r.get("ips")?.as_array().cloned())
            .into_iter()
            .flatten()
            .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
            .collect();
        let mac = result.and_then(|r| r.pointer("/interfaces/1/mac")?.as_str()).map(str::to_string);
        datastore::endpoints::Endpoint {
            node: conf.node.clone(),
            orchestrator: if pod.is_empty() { "cni" } else { "k8s" }.into(),
            namespace: namespace.into(),
            pod: pod.into(),
            workload: self.workload().unwrap_or_default(),
            container_id: self.container.clone(),
            endpoint: self.ifname.clone(),
            interface: self.host_ifname(),
            mac,
            addresses,
        }
        .resource()
        .map_err(|e| CniError::env(format!("CNI_ARGS and CNI_IFNAME do not make a workload endpoint: {e:#}")))
    }
}

/// `ip ARGS` inside a network namespace given by path, entered with setns (`nsenter`).
fn ip_in(netns: &str, args: &[&str]) -> anyhow::Result<String> {
    let net = format!("--net={netns}");
    let mut v = vec![net.as_str(), "--", "ip"];
    v.extend_from_slice(args);
    ipcmd::run("nsenter", &v)
}

fn mac_of(out: &str) -> String {
    out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).unwrap_or("").to_string()
}

fn node_client(conf: &NetConf) -> admin::Client {
    admin::Client::new(&conf.admin_socket)
}

/// Where addresses come from: the shared file, or etcd (both families; the IPPools there
/// say which pools a node takes addresses from).
enum Backend {
    File(Ipam),
    Etcd(datastore::ipam::Ipam, datastore::Store),
}

impl Backend {
    /// Addresses given for `call` carry its workload in etcd as Calico's plugin writes it:
    /// the Kubernetes pod's `namespace` and `pod` where `CNI_ARGS` name them.
    fn for_call(self, call: &Call) -> Backend {
        match self {
            Backend::Etcd(ipam, store) => {
                let (namespace, name) = call.pod_args();
                let attrs = namespace.zip(name).map(|(ns, name)| {
                    [("namespace".to_string(), ns.to_string()), ("pod".to_string(), name.to_string())]
                });
                Backend::Etcd(ipam.with_attributes(attrs.into_iter().flatten()), store)
            }
            file => file,
        }
    }
}

fn backend(conf: &NetConf) -> Result<Backend, CniError> {
    if !conf.etcd_endpoints.is_empty() {
        let etcd = datastore::etcd::Etcd::with_tls(&conf.etcd_endpoints, &conf.etcd_tls)
            .map_err(|e| CniError::config(format!("{e:#}")))?;
        return Ok(Backend::Etcd(datastore::ipam::Ipam::new(etcd.clone()), datastore::Store::new(etcd)));
    }
    match &conf.ipam_file {
        Some(f) => Ok(Backend::File(Ipam::new(f))),
        None => Err(CniError::config("neither ipam_file nor etcd_endpoints is set")),
    }
}

/// The pools of each family a container of `conf.node` may take an address from, with
/// their block sizes: the enabled IPPools in etcd whose `nodeSelector` picks the node (by
/// its Node resource's labels), as Calico's IPAM chooses, the node's own pool first, leaving
/// out pools for manual assignment only (`assignmentMode: Manual`) and pools whose
/// `allowedUses` do not include `Workload`. For an address the container `asked` for: every
/// enabled pool for workloads, whatever its `nodeSelector` and assignment mode. `None` for a
/// family etcd holds no IPPool of: then the network config says. Where the network config
/// lists `ipv4_pools` (`ipv6_pools`), those, in its order, whatever their assignment mode.
type Selected = (Option<Vec<(Ipv4Net, u8)>>, Option<Vec<(Ipv6Net, u8)>>);

fn selected_pools(conf: &NetConf, store: &datastore::Store, asked: bool) -> Result<Selected, CniError> {
    use datastore::resources::{Kind, Resource};
    let get = |kind| store.get(kind, None).map_err(io);
    let nodes = get(Kind::Node)?;
    let labels = nodes
        .iter()
        .find_map(|r| match r {
            Resource::Node(n) if n.metadata.name == conf.node => Some(n.metadata.labels.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let pools: Vec<_> = get(Kind::IpPool)?
        .into_iter()
        .filter_map(|r| match r {
            Resource::IpPool(p) => Some(p),
            _ => None,
        })
        .collect();
    // The network's own list: every name must be a pool, and an enabled one.
    let listed = |names: &[String]| -> Result<Vec<usize>, CniError> {
        names
            .iter()
            .map(|n| {
                let at = pools.iter().position(|p| {
                    p.metadata.name == *n
                        || p.spec.cidr.parse::<ipnet::IpNet>().ok().zip(n.parse().ok()).is_some_and(|(a, b)| a == b)
                });
                match at {
                    None => Err(CniError::config(format!("no IPPool {n:?} (named in the network's pools)"))),
                    Some(i) if pools[i].spec.disabled == Some(true) => {
                        Err(CniError::config(format!("IPPool {n:?} (named in the network's pools) is disabled")))
                    }
                    Some(i) => Ok(i),
                }
            })
            .collect()
    };
    let (order4, order6) = (listed(&conf.ipv4_pools)?, listed(&conf.ipv6_pools)?);
    type Ranked<N> = Option<Vec<(N, u8, usize)>>;
    let (mut v4, mut v6): (Ranked<Ipv4Net>, Ranked<Ipv6Net>) = (None, None);
    let ranked = |i: usize, order: &[usize]| order.iter().position(|x| *x == i);
    for (i, p) in pools.iter().enumerate() {
        let for_workloads = p.spec.allowed_uses.as_ref().is_none_or(|u| u.iter().any(|x| x == "Workload"));
        let on_node = p
            .spec
            .node_selector
            .as_deref()
            .is_none_or(|s| datastore::selector::Selector::parse(s).is_ok_and(|sel| sel.matches(&labels)));
        let manual = p.spec.assignment_mode.as_deref() == Some("Manual");
        // A pool that holds a node's address is one the nodes leave out too.
        let holds_node =
            p.spec.cidr.parse().ok().and_then(|net| datastore::resources::node_in_pool(&nodes, net)).is_some();
        let len = p.spec.block_size_or_default();
        let pick = |order: &[usize]| {
            let chosen = match order.is_empty() {
                true => on_node && !manual,
                false => on_node && ranked(i, order).is_some(),
            };
            p.spec.disabled != Some(true) && !holds_node && for_workloads && (asked || chosen)
        };
        if let Ok(cidr) = p.spec.cidr.parse::<Ipv4Net>() {
            v4.get_or_insert_with(Vec::new).extend(pick(&order4).then_some((
                cidr,
                len,
                ranked(i, &order4).unwrap_or(usize::MAX),
            )));
        } else if let Ok(cidr) = p.spec.cidr.parse::<Ipv6Net>() {
            v6.get_or_insert_with(Vec::new).extend(pick(&order6).then_some((
                cidr,
                len,
                ranked(i, &order6).unwrap_or(usize::MAX),
            )));
        }
    }
    // The network's order; else the node's own pool first.
    let v4 = v4.map(|mut v| {
        v.sort_by_key(|(pool, _, rank)| (*rank, !conf.blocks.iter().any(|b| pool.contains(b))));
        v.into_iter().map(|(p, l, _)| (p, l)).collect()
    });
    let v6 = v6.map(|mut v| {
        v.sort_by_key(|(pool, _, rank)| (*rank, !conf.blocks6.iter().any(|b| pool.contains(b))));
        v.into_iter().map(|(p, l, _)| (p, l)).collect()
    });
    Ok((v4, v6))
}

fn file_pools<N: std::str::FromStr>(names: &[String]) -> Result<Vec<N>, CniError> {
    names
        .iter()
        .map(|n| {
            n.parse().map_err(|_| {
                CniError::config(format!("{n:?} is not a CIDR: with the IPAM file the network's pools are CIDRs"))
            })
        })
        .collect()
}

/// An address from the first of `pools` that has one; none selecting the node is an error.
fn allocate_from<N: datastore::ipam::Family>(
    ipam: &datastore::ipam::Ipam,
    conf: &NetConf,
    handle: &str,
    pools: &[(N, u8)],
    family: &str,
) -> Result<datastore::ipam::Assigned<N>, CniError> {
    let listed = if family == "IPv4" { &conf.ipv4_pools } else { &conf.ipv6_pools };
    let mut last = match listed.is_empty() {
        true => CniError::ipam(format!("no enabled {family} IPPool's nodeSelector selects node {}", conf.node)),
        false => CniError::ipam(format!(
            "none of the network's {family} pools ({}) is for workloads on node {}",
            listed.join(", "),
            conf.node
        )),
    };
    for (pool, len) in pools {
        match ipam.allocate(&conf.node, handle, *pool, *len) {
            Ok(a) => return Ok(a),
            Err(e) => last = etcd_or(e, CniError::ipam),
        }
    }
    Err(last)
}

fn io(e: anyhow::Error) -> CniError {
    etcd_or(e, CniError::io)
}

/// An error of etcd's: "try again later" (CNI's code 11) if no endpoint answered, which
/// passes; else what `other` makes of it.
fn etcd_or(e: anyhow::Error, other: fn(String) -> CniError) -> CniError {
    match e.downcast_ref::<datastore::etcd::Unreachable>() {
        Some(_) => CniError::new(11, "try again later: etcd does not answer", format!("{e:#}")),
        None => other(format!("{e:#}")),
    }
}

impl Backend {
    /// The container's IPv4 address, and its IPv6 one where the node has IPv6 blocks: both
    /// or neither, under one lock; those it `asked` for, or the next free ones.
    /// `configured`: the pods the node was started with, whose addresses a file learns as
    /// taken (etcd has them from the node itself).
    fn allocate(
        &self,
        conf: &NetConf,
        handle: &str,
        asked: Asked,
        configured: &[admin::PodSpec],
    ) -> Result<(Assigned, Option<Ipv6Addr>), CniError> {
        if let (Some(a6), true) = (asked.v6, conf.blocks6.is_empty()) {
            return Err(CniError::ipam(format!("{a6} asked for, but node {} has no IPv6 blocks", conf.node)));
        }
        match self {
            Backend::File(f) => {
                // The network's pools, as CIDRs: the IPAM file knows no pool names.
                let (within4, within6) =
                    (file_pools::<Ipv4Net>(&conf.ipv4_pools)?, file_pools::<Ipv6Net>(&conf.ipv6_pools)?);
                f.with(|st| {
                    // A host's first container: the state learns the node's blocks.
                    for b in &conf.blocks {
                        st.blocks.entry(*b).or_insert_with(|| conf.node.clone());
                    }
                    for b in &conf.blocks6 {
                        st.blocks6.entry(*b).or_insert_with(|| conf.node.clone());
                    }
                    // ...and the node's configured pods, which no container may be given
                    // (a lab's state has them from the start; a host's file learns them here).
                    for p in configured {
                        let held =
                            || crate::ipam::Allocation { handle: crate::pod_handle(&p.name), node: conf.node.clone() };
                        st.allocations.entry(p.address).or_insert_with(held);
                        if let Some(a6) = p.address6 {
                            st.allocations6.entry(a6).or_insert_with(held);
                        }
                    }
                    // Every block full (the node's, then others' to borrow from): in the
                    // lab's shared file a new block of the pool, whose addresses the node
                    // announces one by one, as it does borrowed ones.
                    let len = conf.block_size.unwrap_or_else(|| conf.blocks.first().map_or(26, |b| b.prefix_len()));
                    let a = match asked.v4 {
                        Some(ip) => st.request_in_pool(&conf.node, handle, ip, conf.pool, len)?,
                        None => st.allocate_within(&conf.node, handle, &within4).or_else(|full| {
                            match conf.pool.and_then(|p| st.claim_block(&conf.node, p, len, &within4)) {
                                Some(_) => st.allocate_within(&conf.node, handle, &within4),
                                None => Err(full),
                            }
                        })?,
                    };
                    if conf.blocks6.is_empty() {
                        return Ok((a, None));
                    }
                    // IPv6 stays in the node's blocks: across subnets only they are routed
                    // by the lab's fabric (docs/ipv6.md).
                    let a6 = match asked.v6 {
                        Some(ip) => st.request6(&conf.node, handle, ip),
                        None => st.allocate6_within(&conf.node, handle, &within6),
                    };
                    match a6 {
                        Ok(a6) => Ok((a, Some(a6))),
                        Err(e) => {
                            st.release(handle);
                            Err(e)
                        }
                    }
                })
                .map_err(io)?
                .map_err(CniError::ipam)
            }
            Backend::Etcd(e, store) => {
                // The node's configured blocks are its own in etcd too (the node announces
                // them); another node holding one is a misconfiguration worth saying.
                let ipam_err = |e: anyhow::Error| etcd_or(e, CniError::ipam);
                let e = &e.clone().with_policy_read().map_err(ipam_err)?;
                e.claim_own(&conf.node, &conf.blocks).map_err(ipam_err)?;
                let (pools, pools6) = selected_pools(conf, store, false)?;
                let (asked_pools, asked_pools6) = match asked {
                    Asked { v4: None, v6: None } => (None, None),
                    _ => selected_pools(conf, store, true)?,
                };
                let or_config = |p: Option<Vec<(Ipv4Net, u8)>>| match p {
                    Some(p) => Ok(p),
                    None => {
                        let pool = conf
                            .pool
                            .or_else(|| conf.blocks.first().copied())
                            .ok_or_else(|| CniError::config("no pool and no blocks"))?;
                        let len = conf.block_size.unwrap_or_else(|| conf.blocks.first().map_or(26, |b| b.prefix_len()));
                        Ok(vec![(pool, len)])
                    }
                };
                let a = match asked.v4 {
                    Some(ip) => e.request(&conf.node, handle, ip, &or_config(asked_pools)?).map_err(ipam_err)?,
                    None => allocate_from(e, conf, handle, &or_config(pools)?, "IPv4")?,
                };
                // Outside the node's configured blocks, the node announces the /32.
                let borrowed = !conf.blocks.iter().any(|b| b.contains(&a.address));
                let assigned = Assigned { address: a.address, borrowed };
                if conf.blocks6.is_empty() {
                    return Ok((assigned, None));
                }
                // Its own blocks first, then as for IPv4 (the node announces the /128): from
                // the IPv6 IPPools that select the node, or the config's `pool6`; without
                // either, from its own blocks alone.
                let config6 = || conf.pool6.map(|p| vec![(p, conf.block_size6.unwrap_or(122))]);
                let a6 = e.claim_own(&conf.node, &conf.blocks6).map_err(ipam_err).and_then(|()| match asked.v6 {
                    Some(ip) => {
                        let own = || conf.blocks6.iter().map(|b| (*b, b.prefix_len())).collect();
                        let pools6 = asked_pools6.or_else(config6).unwrap_or_else(own);
                        e.request(&conf.node, handle, ip, &pools6).map_err(ipam_err)
                    }
                    None => match pools6.or_else(config6) {
                        Some(pools6) => allocate_from(e, conf, handle, &pools6, "IPv6"),
                        None => e.allocate_in(&conf.node, handle, &conf.blocks6).map_err(ipam_err),
                    },
                });
                match a6 {
                    Ok(a6) => Ok((assigned, Some(a6.address))),
                    Err(err) => {
                        // Both or neither: the IPv4 address goes back to etcd.
                        e.release_all(handle).map_err(io)?;
                        Err(err)
                    }
                }
            }
        }
    }

    fn release(&self, handle: &str) -> Result<Option<Ipv4Addr>, CniError> {
        match self {
            Backend::File(f) => f.with(|st| st.release(handle)).map_err(io),
            Backend::Etcd(ipam, _) => ipam.release_all(handle).map_err(io),
        }
    }

    fn find(&self, handle: &str) -> Result<Option<Ipv4Addr>, CniError> {
        match self {
            Backend::File(f) => f.with(|st| st.find(handle)).map_err(io),
            Backend::Etcd(ipam, _) => ipam.find::<Ipv4Net>(handle).map_err(io),
        }
    }

    fn find6(&self, handle: &str) -> Result<Option<Ipv6Addr>, CniError> {
        match self {
            Backend::File(f) => f.with(|st| st.find6(handle)).map_err(io),
            Backend::Etcd(ipam, _) => ipam.find::<Ipv6Net>(handle).map_err(io),
        }
    }

    /// The container handles holding addresses of `node`: neither the lab's pods nor what
    /// another IPAM user (Calico's own plugin) wrote into a shared etcd.
    fn handles(&self, node: &str) -> Result<Vec<String>, CniError> {
        let mut v = match self {
            Backend::File(f) => f
                .with(|st| {
                    st.allocations.values().filter(|a| a.node == node).map(|a| a.handle.clone()).collect::<Vec<_>>()
                })
                .map_err(io)?,
            Backend::Etcd(ipam, _) => ipam.handles(node).map_err(io)?,
        };
        v.retain(|h| crate::handle_container(h).is_some());
        Ok(v)
    }
}

fn add(conf: &NetConf, call: &Call) -> Result<Value, CniError> {
    let netns = call.netns.as_deref().unwrap_or_default();
    if !std::path::Path::new(netns).exists() {
        return Err(CniError::new(
            3,
            "container unknown or does not exist",
            format!("no network namespace at {netns}"),
        ));
    }
    let node = node_client(conf);
    let status = node.status().map_err(|e| CniError::node(format!("{}: {e}", conf.admin_socket.display())))?;
    let host = call.host_ifname();
    // ADD again for a container that is attached already: the same answer.
    if let Some(r) = existing(conf, call, &host) {
        record_endpoint(&backend(conf)?.for_call(call), conf, call, &r)?;
        return Ok(r);
    }
    let asked = Asked::read(conf, call.args.as_deref())?;
    let mac = asked_mac(conf, call.args.as_deref())?;
    let ipam = backend(conf)?.for_call(call);
    if let Backend::Etcd(..) = ipam {
        // Names that cannot make the endpoint are refused before anything is done.
        call.endpoint(conf, None)?;
    }
    let configured: Vec<admin::PodSpec> = match ipam {
        Backend::File(_) => node
            .pods()
            .map_err(|e| CniError::node(e.to_string()))?
            .into_iter()
            .filter(|p| !p.dynamic)
            .map(|p| p.pod)
            .collect(),
        Backend::Etcd(..) => Vec::new(),
    };
    let (assigned, address6) = ipam.allocate(conf, &call.handle(), asked, &configured)?;
    let mtu = conf.mtu.filter(|m| *m != 0).or(status.pod_mtu).unwrap_or(FALLBACK_MTU);
    let attached = attach(conf, call, &host, (assigned, address6, mac.as_deref()), (status.dataplane, mtu))
        .and_then(|v| record_endpoint(&ipam, conf, call, &v).map(|()| v));
    match attached {
        Ok(v) => Ok(v),
        Err(e) => {
            let _ = del(conf, call);
            Err(e)
        }
    }
}

/// With etcd, the container's workload endpoint written, as Calico's plugin writes it once
/// the container is attached (the same again for an ADD repeated).
fn record_endpoint(ipam: &Backend, conf: &NetConf, call: &Call, result: &Value) -> Result<(), CniError> {
    let Backend::Etcd(_, store) = ipam else { return Ok(()) };
    let wep = call.endpoint(conf, Some(result))?;
    store.apply(&wep).map(|_| ()).map_err(|e| CniError::io(format!("writing the workload endpoint: {e:#}")))
}

/// With etcd, the container's workload endpoint deleted: the one its name says, if it is
/// still this container's (an ADD of the same pod by a new container keeps its own), else
/// any of the node's that names this container and interface (a DEL without `CNI_ARGS`).
fn forget_endpoint(store: &datastore::Store, conf: &NetConf, call: &Call) -> Result<(), CniError> {
    let mine = |w: &datastore::resources::Typed<datastore::resources::WorkloadEndpointSpec>| {
        w.spec.container_id == call.container && w.spec.endpoint == call.ifname
    };
    if let Ok(r) = call.endpoint(conf, None) {
        if let Some(s) = store.endpoint(r.namespace().unwrap_or("default"), r.name()).map_err(io)? {
            if mine(&s.0) {
                store.delete_endpoint(&s).map_err(io)?;
                return Ok(());
            }
        }
    }
    for s in store.endpoints(Some(&conf.node)).map_err(io)? {
        if mine(&s.0) {
            store.delete_endpoint(&s).map_err(io)?;
        }
    }
    Ok(())
}

/// The result of an earlier, complete ADD of the same attachment.
fn existing(conf: &NetConf, call: &Call, host: &str) -> Option<Value> {
    let netns = call.netns.as_deref()?;
    let ipam = backend(conf).ok()?;
    let addr = ipam.find(&call.handle()).ok()??;
    let addr6 = ipam.find6(&call.handle()).ok()?;
    let host_link = ipcmd::ip(&["-o", "link", "show", "dev", host]).ok()?;
    let inside = ip_in(netns, &["-o", "addr", "show", "dev", &call.ifname]).ok()?;
    if !inside.contains(&format!("inet {addr}/32"))
        || addr6.is_some_and(|a| !inside.contains(&format!("inet6 {a}/128")))
    {
        return None;
    }
    let link = ip_in(netns, &["-o", "link", "show", "dev", &call.ifname]).ok()?;
    Some(result(conf, call, host, &mac_of(&host_link), &mac_of(&link), addr, addr6))
}

fn result(
    conf: &NetConf,
    call: &Call,
    host: &str,
    host_mac: &str,
    mac: &str,
    addr: Ipv4Addr,
    addr6: Option<Ipv6Addr>,
) -> Value {
    let mut ips = vec![json!({ "address": format!("{addr}/32"), "gateway": GATEWAY.to_string(), "interface": 1 })];
    let mut routes = vec![json!({ "dst": "0.0.0.0/0", "gw": GATEWAY.to_string() })];
    if let Some(a6) = addr6 {
        ips.push(json!({ "address": format!("{a6}/128"), "gateway": GATEWAY6.to_string(), "interface": 1 }));
        routes.push(json!({ "dst": "::/0", "gw": GATEWAY6.to_string() }));
    }
    json!({
        "cniVersion": conf.cni_version,
        "interfaces": [
            { "name": host, "mac": host_mac },
            { "name": call.ifname, "mac": mac, "sandbox": call.netns },
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

fn attach(
    conf: &NetConf,
    call: &Call,
    host: &str,
    (a, a6, mac): (Assigned, Option<Ipv6Addr>, Option<&str>),
    (dp, mtu): (DataplaneMode, u16),
) -> Result<Value, CniError> {
    let netns = call.netns.as_deref().unwrap_or_default();
    let fail = |e: anyhow::Error| CniError::setup(format!("{e:#}"));
    let mtu = mtu.to_string();
    // A leftover of an interrupted ADD of the same attachment goes first.
    let _ = ipcmd::ip(&["link", "del", host]);
    let host_mac = encap::icmpv6::CALICO_HOST_MAC.to_string();
    let mut add = vec!["link", "add", host, "mtu", &mtu];
    if a6.is_some() && dp == DataplaneMode::Tun {
        // Calico's host-end MAC: the kernel's own link-local address there is then the
        // container's IPv6 gateway.
        add.extend(["address", &host_mac]);
    }
    add.extend(["type", "veth", "peer", "name", &call.ifname]);
    if let Some(m) = mac {
        add.extend(["address", m]);
    }
    add.extend(["netns", netns]);
    ipcmd::ip(&add).map_err(fail)?;
    let cidr = format!("{}/32", a.address);
    let gw = GATEWAY.to_string();
    ip_in(netns, &["addr", "add", &cidr, "dev", &call.ifname]).map_err(fail)?;
    ip_in(netns, &["link", "set", &call.ifname, "mtu", &mtu, "up"]).map_err(fail)?;
    ip_in(netns, &["route", "add", &gw, "dev", &call.ifname, "scope", "link"]).map_err(fail)?;
    ip_in(netns, &["route", "add", "default", "via", &gw, "dev", &call.ifname]).map_err(fail)?;
    if let Some(a6) = a6 {
        let cidr6 = format!("{a6}/128");
        ip_in(netns, &["-6", "addr", "add", &cidr6, "dev", &call.ifname, "nodad"]).map_err(fail)?;
        let gw6 = GATEWAY6.to_string();
        ip_in(netns, &["-6", "route", "add", "default", "via", &gw6, "dev", &call.ifname]).map_err(fail)?;
    }
    // The host end, as Calico's plugin and Felix leave it: up, the node's kernel routing
    // the pod's /32 to it (for the node's own traffic), strict reverse-path filtering; in
    // tun mode the kernel answers the pod's ARP for the gateway, at once.
    ipcmd::ip(&["link", "set", host, "up"]).map_err(fail)?;
    ipcmd::ip(&["route", "replace", &cidr, "dev", host, "scope", "link"]).map_err(fail)?;
    if let Some(a6) = a6 {
        ipcmd::ip(&["-6", "route", "replace", &format!("{a6}/128"), "dev", host]).map_err(fail)?;
    }
    let mut sysctls = vec![(format!("net/ipv4/conf/{host}/rp_filter"), "1")];
    if dp == DataplaneMode::Tun {
        sysctls.push((format!("net/ipv4/conf/{host}/proxy_arp"), "1"));
        sysctls.push((format!("net/ipv4/neigh/{host}/proxy_delay"), "0"));
    }
    for (k, v) in sysctls {
        std::fs::write(format!("/proc/sys/{k}"), v).map_err(|e| CniError::setup(format!("writing {k}: {e}")))?;
    }
    let spec = PodSpec {
        name: call.pod_name(),
        interface: host.to_string(),
        address: a.address,
        address6: a6,
        container: Some(call.container.clone()),
    };
    node_client(conf).pod_add(spec).map_err(|e| match e {
        admin::ClientError::Refused(why) => CniError::setup(format!("the node refused the pod: {why}")),
        e => CniError::node(format!("telling the node about the pod: {e}")),
    })?;
    let host_mac = mac_of(&ipcmd::ip(&["-o", "link", "show", "dev", host]).map_err(fail)?);
    let mac = mac_of(&ip_in(netns, &["-o", "link", "show", "dev", &call.ifname]).map_err(fail)?);
    Ok(result(conf, call, host, &host_mac, &mac, a.address, a6))
}

/// Removes what ADD made; what is already gone is fine (DEL is idempotent, and a container
/// the plugin never saw is not an error).
fn del(conf: &NetConf, call: &Call) -> Result<(), CniError> {
    let host = call.host_ifname();
    let ipam = backend(conf)?;
    if let Backend::Etcd(_, store) = &ipam {
        forget_endpoint(store, conf, call)?;
    }
    ipam.release(&call.handle())?;
    // Asked of the kernel, not of /sys: a runtime that entered the node's namespace with
    // setns sees another namespace's /sys.
    if ipcmd::ip(&["link", "show", "dev", &host]).is_ok() {
        ipcmd::ip(&["link", "del", &host]).map_err(|e| CniError::io(format!("{e:#}")))?;
    }
    // The pod is found by its interface: a GC, or a DEL without CNI_ARGS, does not know the
    // name the runtime gave. A node that is down learns it from the missing interface when
    // it is back.
    let node = node_client(conf);
    let gone = node.pods().map_err(|e| e.to_string()).and_then(|pods| {
        match pods.into_iter().find(|p| p.pod.interface == host) {
            Some(p) => node.pod_del(&p.pod.name).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    });
    if let Err(e) = gone {
        eprintln!("router-cni: the node did not take the pod's removal ({e}); it drops the pod when it sees the interface gone");
    }
    Ok(())
}

fn check(conf: &NetConf, call: &Call) -> Result<(), CniError> {
    let prev = conf.prev_result.as_ref().ok_or_else(|| CniError::config("CHECK needs prevResult"))?;
    let want: Ipv4Addr = prev
        .pointer("/ips/0/address")
        .and_then(Value::as_str)
        .and_then(|a| a.split('/').next())
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| CniError::config("prevResult has no ips[0].address"))?;
    let ipam = backend(conf)?;
    let held = ipam.find(&call.handle())?;
    if held != Some(want) {
        return Err(CniError::check(format!("IPAM holds {held:?} for {}, prevResult says {want}", call.handle())));
    }
    if let Backend::Etcd(_, store) = &ipam {
        let r = call.endpoint(conf, None)?;
        match store.endpoint(r.namespace().unwrap_or("default"), r.name()).map_err(io)? {
            Some((w, _)) if w.spec.container_id == call.container => {}
            Some(_) => {
                return Err(CniError::check(format!("the workload endpoint {} is another container's", r.path())))
            }
            None => return Err(CniError::check(format!("the workload endpoint {} is gone", r.path()))),
        }
    }
    let host = call.host_ifname();
    let link =
        ipcmd::ip(&["-o", "link", "show", "dev", &host]).map_err(|_| CniError::check(format!("{host} is gone")))?;
    if !link.contains(",UP") && !link.contains("<UP") {
        return Err(CniError::check(format!("{host} is down")));
    }
    let netns = call.netns.as_deref().unwrap_or_default();
    if !std::path::Path::new(netns).exists() {
        return Err(CniError::new(
            3,
            "container unknown or does not exist",
            format!("no network namespace at {netns}"),
        ));
    }
    let inside = ip_in(netns, &["-o", "addr", "show", "dev", &call.ifname])
        .map_err(|_| CniError::check(format!("{} is gone from the container", call.ifname)))?;
    if !inside.contains(&format!("inet {want}/32")) {
        return Err(CniError::check(format!("{} lost {want}/32", call.ifname)));
    }
    let routes = ip_in(netns, &["-4", "route", "show"]).map_err(|e| CniError::io(format!("{e:#}")))?;
    if !routes.lines().any(|l| l.starts_with("default via 169.254.1.1")) {
        return Err(CniError::check("the container's default route via 169.254.1.1 is gone"));
    }
    // Dual stack: the IPv6 address and route ADD left, where prevResult lists one.
    let want6: Option<Ipv6Addr> = prev
        .get("ips")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.get("address")?.as_str()?.split('/').next()?.parse().ok())
        .next();
    if let Some(a6) = want6 {
        if !inside.contains(&format!("inet6 {a6}/128")) {
            return Err(CniError::check(format!("{} lost {a6}/128", call.ifname)));
        }
        let routes = ip_in(netns, &["-6", "route", "show"]).map_err(|e| CniError::io(format!("{e:#}")))?;
        if !routes.lines().any(|l| l.starts_with(&format!("default via {GATEWAY6}"))) {
            return Err(CniError::check(format!("the container's default route via {GATEWAY6} is gone")));
        }
    }
    let pods = node_client(conf).pods().map_err(|e| CniError::node(e.to_string()))?;
    match pods.iter().find(|p| p.pod.interface == host) {
        Some(p) if p.up && p.pod.address == want => Ok(()),
        Some(p) => Err(CniError::check(format!("the node has the pod {} but not up with {want}", p.pod.name))),
        None => Err(CniError::check("the node does not know the pod")),
    }
}

/// Releases what this node's containers hold that the runtime no longer lists.
fn gc(conf: &NetConf) -> Result<(), CniError> {
    let valid: Vec<String> = conf
        .valid_attachments
        .as_ref()
        .ok_or_else(|| CniError::config("GC needs cni.dev/valid-attachments"))?
        .iter()
        .map(|a| crate::container_handle(&a.container_id, &a.ifname))
        .collect();
    let ipam = backend(conf)?;
    let stale: Vec<String> = ipam.handles(&conf.node)?.into_iter().filter(|h| !valid.contains(h)).collect();
    for handle in stale {
        let Some((container, ifname)) = crate::handle_container(&handle) else { continue };
        let call = Call { container: container.to_string(), netns: None, ifname: ifname.to_string(), args: None };
        del(conf, &call)?;
    }
    // Endpoints of containers that hold no address any more (an interrupted DEL).
    if let Backend::Etcd(_, store) = &ipam {
        for s in store.endpoints(Some(&conf.node)).map_err(io)? {
            let w = &s.0.spec;
            let handle = crate::container_handle(&w.container_id, &w.endpoint);
            if matches!(w.orchestrator.as_str(), "k8s" | "cni") && !valid.contains(&handle) {
                store.delete_endpoint(&s).map_err(io)?;
            }
        }
    }
    Ok(())
}

/// Ready for ADD: the node answers, and so does etcd where IPAM is kept there.
fn status(conf: &NetConf) -> Result<(), CniError> {
    let unavailable = |why: String| CniError::new(50, "the plugin is not available", why);
    node_client(conf).status().map_err(|e| unavailable(format!("the node does not answer: {e}")))?;
    // What every ADD reads first: IPAM's policy.
    if let Backend::Etcd(ipam, _) = backend(conf)? {
        ipam.with_policy_read().map_err(|e| unavailable(format!("{e:#}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(runtime: Value) -> NetConf {
        serde_json::from_value(json!({
            "cniVersion": "1.0.0", "name": "router", "type": "router", "node": "n",
            "admin_socket": "/x.sock", "ipam_file": "/x.json", "blocks": [], "runtimeConfig": runtime,
        }))
        .expect("conf")
    }

    /// The spec's errors: an unknown command is code 4 whatever stdin holds, undecodable
    /// input 6, an unsupported version 1; VERSION answers without a full config.
    #[test]
    fn the_command_and_the_input_are_checked_in_the_spec_s_order() {
        let call = |command: &str, stdin: &str| {
            let env = HashMap::from([("CNI_COMMAND".to_string(), command.to_string())]);
            let mut out = Vec::new();
            let rc = main(&env, stdin, &mut out);
            (rc, serde_json::from_slice::<Value>(&out).unwrap_or_default())
        };
        let (rc, v) = call("BOGUS", "");
        assert_eq!((rc, v["code"].as_u64()), (1, Some(4)), "{v}");
        assert!(v["details"].as_str().unwrap_or("").contains("BOGUS"), "{v}");
        assert_eq!(call("ADD", "garbage").1["code"].as_u64(), Some(6));
        assert_eq!(call("ADD", r#"{"cniVersion":"9.9.9"}"#).1["code"].as_u64(), Some(1));
        let (rc, v) = call("VERSION", r#"{"cniVersion":"1.0.0"}"#);
        assert_eq!((rc, v["cniVersion"].as_str()), (0, Some("1.0.0")), "{v}");
    }

    #[test]
    fn a_mac_asked_for_is_a_unicast_one_in_six_hex_octets() {
        let none = conf(json!({}));
        assert_eq!(
            asked_mac(&none, Some("IgnoreUnknown=1;MAC=0A:58:0a:f4:01:2B")).ok(),
            Some(Some("0a:58:0a:f4:01:2b".into()))
        );
        assert_eq!(asked_mac(&none, Some("K8S_POD_NAME=x")).ok(), Some(None));
        assert_eq!(asked_mac(&none, None).ok(), Some(None));
        for bad in [
            "+1:58:0a:f4:01:2b",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:2b:00",
            "0a-58-0a-f4-01-2b",
            "",
            "00:00:00:00:00:00",
            "01:00:5e:00:00:01",
        ] {
            let args = format!("MAC={bad}");
            let r = asked_mac(&none, Some(&args));
            assert!(r.as_ref().is_err() || bad.is_empty(), "{bad:?}: {r:?}");
        }
        // runtimeConfig comes first, and its mistakes are the config's.
        let rc = conf(json!({"mac": "0a:58:0a:f4:01:2c"}));
        assert_eq!(asked_mac(&rc, Some("MAC=0a:58:0a:f4:01:2b")).ok(), Some(Some("0a:58:0a:f4:01:2c".into())));
        let bad = asked_mac(&conf(json!({"mac": "zz"})), None).expect_err("bad");
        assert!(format!("{bad:?}").contains("runtimeConfig.mac"), "{bad:?}");
    }

    #[test]
    fn a_pod_is_named_as_its_runtime_names_the_workload() {
        let call = |ifname: &str, args: Option<&str>| Call {
            container: "e7438acae6ed9f00".into(),
            netns: None,
            ifname: ifname.into(),
            args: args.map(String::from),
        };
        assert_eq!(call("eth0", None).pod_name(), "e7438acae6ed");
        assert_eq!(call("eth1", Some("IgnoreUnknown=1")).pod_name(), "e7438acae6ed-eth1");
        assert_eq!(call("eth0", Some("IgnoreUnknown=1;K8S_POD_NAME=frontend")).pod_name(), "frontend");
        let k8s = Some("K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=e7438");
        assert_eq!(call("eth0", k8s).pod_name(), "shop.web-0");
        assert_eq!(call("net1", k8s).pod_name(), "shop.web-0-net1");
        // A name that cannot be a pod's, or an empty one: the short id.
        assert_eq!(call("eth0", Some("K8S_POD_NAME=a/b")).pod_name(), "e7438acae6ed");
        assert_eq!(call("eth0", Some("K8S_POD_NAME=;K8S_POD_NAMESPACE=x")).pod_name(), "e7438acae6ed");
    }
}
