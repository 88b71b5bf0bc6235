//! The `router` command line (README.md lists it; docs/lab.md explains it).

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use lab::{self, state::Role, Lab, UpOptions};
use nodeapi::admin;
use nodeapi::config::{DataplaneMode, IpipMode};
use router::routes;
use std::path::{Path, PathBuf};

mod lab_cmd;
mod show;

use lab_cmd::{capture, run_lab, trace};
use show::{every_node_status, print_one_status, print_stats, render_paths};

#[derive(Parser)]
#[command(name = "router", version, about = "A Calico-style pod network as one userspace router")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct LabSel {
    /// Which lab (namespace prefix); several labs can run side by side.
    #[arg(long = "lab", env = "ROUTER_LAB", default_value = "seed", global = true)]
    name: String,
    /// Where labs keep their state, sockets and logs [default: /run/router-lab for root;
    /// for other users $XDG_RUNTIME_DIR/router-lab, or /tmp/router-lab-UID without one].
    #[arg(long = "lab-dir", env = "ROUTER_LAB_DIR", global = true)]
    dir: Option<PathBuf>,
}

impl LabSel {
    fn lab(&self) -> anyhow::Result<Lab> {
        let uid = nix::unistd::geteuid();
        let base = match &self.dir {
            Some(d) => d.clone(),
            None if uid.is_root() => PathBuf::from("/run/router-lab"),
            None => {
                let base = lab::userns::default_base(std::env::var("XDG_RUNTIME_DIR").ok().as_deref(), uid.as_raw());
                // Under /tmp anyone could have made it first: it must be ours and private.
                nodeapi::private::dir(&base).with_context(|| format!("the labs' directory {}", base.display()))?;
                base
            }
        };
        Lab::new(&self.name, &base)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Build, use and remove the namespace lab.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
        #[command(flatten)]
        sel: LabSel,
    },
    /// Run one node (what `lab up` starts per node).
    Node {
        /// The node's config (TOML): its name, interfaces, pods and the cluster, or with
        /// --datastore etcd only what etcd cannot know (see "A node's config" in docs/lab.md).
        #[arg(long)]
        config: PathBuf,
        /// `etcd`: take the cluster from Calico's resources in etcd and follow them live
        /// (the config's `etcd_endpoints`, or --etcd-endpoints).
        #[arg(long, value_enum)]
        datastore: Option<DatastoreArg>,
        /// etcd's client URLs, comma-separated.
        #[arg(long = "etcd-endpoints", env = "ROUTER_ETCD_ENDPOINTS", value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        #[command(flatten)]
        etcd_tls: EtcdTlsArgs,
        /// Where the secrets named by BGPPeer passwords are: DIR/<secret name>/<key> holds
        /// the password (a Kubernetes secret volume's layout; the config's `secrets_dir`).
        #[arg(long = "secrets-dir", env = "ROUTER_SECRETS_DIR")]
        secrets_dir: Option<PathBuf>,
    },
    /// Show a node's BGP peers, like `calicoctl node status`; in a lab without --node, a
    /// line for every node.
    Status(Query),
    /// Show a node's FIB, like `route -n`; with --lookup, the route one address takes; with
    /// --rejected, what BGP peers sent that the node refused; with --detail, every BGP path
    /// for a prefix and why the best one won.
    Routes {
        /// Which route this address takes (like `ip route get`); in a lab, a host's or a
        /// container's name stands for its address.
        #[arg(long, value_name = "ADDR", conflicts_with_all = ["rejected", "detail"])]
        lookup: Option<String>,
        /// With --lookup and a name: the host's IPv6 address (a dual-stack lab), as `trace -6`.
        #[arg(short = '6', long, requires = "lookup")]
        ipv6: bool,
        /// The prefixes BGP peers sent that import refused, and why.
        #[arg(long, conflicts_with = "detail")]
        rejected: bool,
        /// With --rejected: only this peer's.
        #[arg(long, requires = "rejected")]
        peer: Option<std::net::IpAddr>,
        /// Every BGP path for this prefix and the step of the decision process that ruled
        /// each one out.
        #[arg(long, value_name = "PREFIX", value_parser = prefix_for_detail)]
        detail: Option<ipnet::IpNet>,
        #[command(flatten)]
        query: Query,
    },
    /// Show a node's packet counters and drops by reason.
    Stats(Query),
    /// Show a node's neighbours: its ARP and NDP table.
    Neighbours(Query),
    /// Send a marked probe from a pod and show what every node it crossed did with it.
    Trace {
        /// A pod or a container of the lab.
        src: String,
        /// A host or a container of the lab, or an IP address.
        dst: String,
        #[arg(long, value_enum, default_value = "icmp")]
        proto: router::probe::ProbeProto,
        /// Over IPv6 (a dual-stack lab): a pod named as destination is reached at its IPv6
        /// address. An IPv6 address as destination needs no flag.
        #[arg(short = '6', long)]
        ipv6: bool,
        /// The probe's TTL (IPv6: hop limit). A small one shows where it runs out, and the
        /// "time exceeded" that node sends back.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..))]
        ttl: u8,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sel: LabSel,
    },
    /// Write what a node's router receives and sends into a pcap file (tshark/Wireshark).
    Capture {
        /// Only this interface of the node's data plane (default: all).
        #[arg(long)]
        interface: Option<String>,
        /// Stop after this many packets (0: no limit).
        #[arg(long, short = 'c', default_value_t = 0)]
        count: u64,
        /// Stop after this many seconds at most (0: the node's limit, an hour).
        #[arg(long, default_value_t = 10)]
        duration: u64,
        /// Only packets to or from this address, also inside IPIP or VXLAN, and ARP or NDP
        /// for it; in a lab, a host's or a container's name stands for its address (both,
        /// IPv4 and IPv6, in a dual-stack lab).
        #[arg(long, value_name = "ADDR")]
        host: Option<String>,
        /// The pcap file to write.
        #[arg(short = 'w', long = "write")]
        file: PathBuf,
        #[command(flatten)]
        query: Query,
    },
    /// Create or update Calico resources (IPPool, BGPConfiguration, BGPPeer, BGPFilter, Node,
    /// IPReservation, IPAMConfiguration, WorkloadEndpoint) in etcd from a YAML or JSON file,
    /// like `calicoctl apply -f`.
    Apply {
        /// The file (`-`: stdin); every document is checked before anything is written.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// Create Calico resources in etcd from a file, like `calicoctl create -f`: none of them
    /// may exist already.
    Create {
        /// The file (`-`: stdin); every document is checked before anything is written.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// Replace Calico resources in etcd from a file, like `calicoctl replace -f`: every one
    /// of them must exist.
    Replace {
        /// The file (`-`: stdin); every document is checked before anything is written.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// Show Calico resources from etcd, like `calicoctl get`.
    Get {
        /// ippools, bgpconfigurations, bgppeers, bgpfilters, nodes, ipreservations,
        /// ipamconfigurations or workloadendpoints (singular works too; wep).
        kind: String,
        /// One resource (default: every one of the kind).
        #[arg(value_name = "NAME")]
        resource: Option<String>,
        /// A table, or the resources as `apply -f` takes them.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: router::calico::Output,
        #[command(flatten)]
        ns: NamespaceSel,
        /// Workload endpoints of every namespace.
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// Delete Calico resources from etcd, by kind and name or as listed in a file.
    Delete {
        /// The kind, as `get` names it (ippool, bgppeer, ...).
        #[arg(required_unless_present = "file")]
        kind: Option<String>,
        /// The resource's name.
        #[arg(required_unless_present = "file", value_name = "NAME")]
        resource: Option<String>,
        /// Delete every resource this file (`-`: stdin) names, as `apply -f` reads it.
        #[arg(short = 'f', long = "filename", conflicts_with_all = ["kind", "resource", "namespace"])]
        file: Option<PathBuf>,
        #[command(flatten)]
        ns: NamespaceSel,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// Change one Calico resource in etcd in place, like `calicoctl patch`: a JSON merge patch
    /// (or `--type json`, RFC 6902), checked as `apply` checks a file.
    Patch {
        /// The kind, as `get` names it (node, bgpconfiguration, ippool, ...).
        kind: String,
        /// The resource's name.
        #[arg(value_name = "NAME")]
        resource: String,
        /// The patch, JSON (or YAML): '{"spec":{"nodeToNodeMeshEnabled":false}}'.
        #[arg(short = 'p', long)]
        patch: String,
        #[arg(short = 't', long = "type", value_enum, default_value = "merge")]
        patch_type: router::calico::PatchType,
        #[command(flatten)]
        ns: NamespaceSel,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// Set or remove one label of a Calico resource in etcd, like `calicoctl label`:
    /// `router label node node-a route-reflector=true`, `... route-reflector --remove`.
    Label {
        /// The kind, as `get` names it (node, ippool, ...).
        kind: String,
        /// The resource's name.
        #[arg(value_name = "NAME")]
        resource: String,
        /// KEY=VALUE to set, or KEY with --remove.
        #[arg(value_name = "LABEL")]
        label: String,
        /// Replace the value of a label the resource has already.
        #[arg(long, conflicts_with = "remove")]
        overwrite: bool,
        /// Remove the label.
        #[arg(long)]
        remove: bool,
        #[command(flatten)]
        ns: NamespaceSel,
        #[command(flatten)]
        etcd: EtcdSel,
    },
    /// IPAM: which node holds which block and what is in use, like `calicoctl ipam`.
    Ipam {
        #[command(subcommand)]
        cmd: IpamCmd,
    },
    /// The CNI plugin: write its network config and install it where container runtimes
    /// look (as Calico's install step does).
    Cni {
        #[command(subcommand)]
        cmd: CniCmd,
    },
    /// Print a shell completion script: `router completions bash > /etc/bash_completion.d/router`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Steps the lab runs inside its namespaces.
    #[command(hide = true)]
    Internal {
        #[command(subcommand)]
        cmd: InternalCmd,
    },
}

#[derive(Args, Clone)]
struct EtcdSel {
    /// etcd's client URLs (`http://HOST:2379` or `https://…`, comma-separated); without
    /// them, the etcd of the lab (`router lab up --datastore etcd`).
    #[arg(long = "etcd-endpoints", env = "ROUTER_ETCD_ENDPOINTS", value_delimiter = ',')]
    endpoints: Vec<String>,
    #[command(flatten)]
    tls: EtcdTlsArgs,
    #[command(flatten)]
    sel: LabSel,
}

/// TLS to etcd, for `https://` endpoints.
#[derive(Args, Clone, Default)]
struct EtcdTlsArgs {
    /// The CA that signed etcd's certificate (PEM)
    #[arg(long = "etcd-ca-cert-file", env = "ROUTER_ETCD_CA_CERT_FILE")]
    ca_cert: Option<PathBuf>,
    /// This client's certificate (PEM), where etcd asks clients for one
    #[arg(long = "etcd-cert-file", env = "ROUTER_ETCD_CERT_FILE")]
    cert: Option<PathBuf>,
    /// This client's key (PEM)
    #[arg(long = "etcd-key-file", env = "ROUTER_ETCD_KEY_FILE")]
    key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    fn tls(&self) -> nodeapi::config::EtcdTls {
        nodeapi::config::EtcdTls { ca_cert: self.ca_cert.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }
}

impl EtcdSel {
    fn store(&self) -> anyhow::Result<datastore::Store> {
        if self.endpoints.is_empty() {
            // The lab's etcd listens on the lab's network: reach it from inside its host.
            let lab = self.sel.lab()?;
            if let Some(e) = lab.state()?.and_then(|s| s.etcd) {
                lab::enter(&lab)?;
                lab::containers::enter_net(&e.namespace)?;
                return Ok(datastore::Store::new(datastore::etcd::Etcd::new(&["http://127.0.0.1:2379".into()])?));
            }
        }
        Ok(datastore::Store::new(datastore::etcd::Etcd::with_tls(&self.endpoints, &self.tls.tls())?))
    }
}

#[derive(clap::Args)]
struct NamespaceSel {
    /// The namespace of workload endpoints (default: `default`).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
}

impl NamespaceSel {
    /// The namespace for `kind`: `-n` only where the kind has namespaces.
    fn of(&self, kind: datastore::resources::Kind) -> anyhow::Result<Option<&str>> {
        match (&self.namespace, kind.is_namespaced()) {
            (Some(_), false) => anyhow::bail!("{} are not in a namespace: -n does not apply", kind.plural()),
            (Some(ns), true) if !datastore::resources::is_namespace(ns) => {
                anyhow::bail!("-n {ns:?}: a namespace is lower-case letters, digits and '-'")
            }
            (ns, true) => Ok(Some(ns.as_deref().unwrap_or("default"))),
            (None, false) => Ok(None),
        }
    }
}

#[derive(Subcommand)]
enum IpamCmd {
    /// Addresses in use per pool (and block), or what one address is.
    Show {
        /// Every block too: its node, and how many of its addresses other nodes borrowed.
        #[arg(long)]
        show_blocks: bool,
        /// Only the addresses borrowed from another node's block, and who holds them.
        #[arg(long, conflicts_with_all = ["show_blocks", "ip"])]
        show_borrowed: bool,
        /// What this address is: free, reserved, or in use by which handle and node.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        src: IpamSel,
    },
    /// Find addresses held for pods that no node serves, or for nodes that do not exist,
    /// like `calicoctl ipam check`; exit status 1 when there are any.
    Check {
        /// Free the addresses found, and the blocks they leave empty.
        #[arg(long)]
        release: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        src: IpamSel,
    },
    /// Free an address that no workload holds any more (one a crash left behind). It is
    /// not checked that nothing uses it.
    Release {
        /// The address to free.
        #[arg(long)]
        ip: std::net::IpAddr,
        #[command(flatten)]
        src: IpamSel,
    },
}

/// Where IPAM is read: an IPAM file, etcd, or else the lab's (its etcd, or its file).
#[derive(clap::Args)]
struct IpamSel {
    /// The IPAM file a host's plugin keeps (`router cni install --ipam-file`).
    #[arg(long = "ipam-file", conflicts_with = "endpoints")]
    file: Option<PathBuf>,
    #[command(flatten)]
    etcd: EtcdSel,
}

impl IpamSel {
    /// The nodes a check knows: a lab's (with their admin sockets), or the Node resources
    /// in etcd; none for an IPAM file alone.
    fn nodes(&self, src: &router::ipam::Source) -> anyhow::Result<Option<router::ipam::Nodes>> {
        if self.file.is_some() {
            return Ok(None);
        }
        if self.etcd.endpoints.is_empty() {
            let lab = self.etcd.sel.lab()?;
            if let Some(st) = lab.state()? {
                let nodes = st.hosts.iter().filter(|h| h.role == lab::state::Role::Node);
                return Ok(Some(nodes.map(|h| (h.name.clone(), Some(lab.socket(&h.name)))).collect()));
            }
        }
        let router::ipam::Source::Etcd(store) = src else { return Ok(None) };
        let names =
            store.get(datastore::resources::Kind::Node, None)?.into_iter().map(|r| (r.name().to_string(), None));
        Ok(Some(names.collect()))
    }

    fn source(&self) -> anyhow::Result<router::ipam::Source> {
        use router::ipam::Source;
        if let Some(f) = &self.file {
            return Ok(Source::File(f.clone(), Vec::new()));
        }
        if !self.etcd.endpoints.is_empty() {
            return Ok(Source::Etcd(self.etcd.store()?));
        }
        let lab = self.etcd.sel.lab()?;
        let Some(st) = lab.state()? else {
            bail!("lab {:?} is not up; name an --ipam-file or --etcd-endpoints", lab.name)
        };
        if st.etcd.is_some() {
            return Ok(Source::Etcd(self.etcd.store()?));
        }
        // The lab's pools, with their block sizes, from its nodes' configs.
        let mut pools = Vec::new();
        for h in st.hosts.iter().filter(|h| h.role == lab::state::Role::Node) {
            let cfg = nodeapi::config::NodeConfig::load(&lab.dir.join(format!("{}.toml", h.name)))?;
            let len = cfg.blocks.first().map_or(26, |b| b.prefix_len());
            pools.extend(cfg.pools.iter().map(|p| (ipnet::IpNet::V4(p.cidr), len)));
            if let Some(v6) = &cfg.ipv6 {
                let len = v6.blocks.first().map_or(122, |b| b.prefix_len());
                pools.extend(v6.pools.iter().map(|p| (ipnet::IpNet::V6(*p), len)));
            }
        }
        pools.sort();
        pools.dedup();
        Ok(Source::File(lab::containers::ipam_file(&lab), pools))
    }
}

#[derive(Subcommand)]
enum CniCmd {
    /// Write `10-router.conflist` (network "router", plugin type "router") and copy the
    /// plugin (`router-cni`) in as `router`.
    Install {
        /// The node's config file (its name, admin socket, blocks, pools).
        #[arg(long)]
        node_config: PathBuf,
        #[arg(long, default_value = cni::install::CONF_DIR)]
        conf_dir: PathBuf,
        #[arg(long, default_value = cni::install::BIN_DIR)]
        bin_dir: PathBuf,
        /// The IPAM state the plugin keeps (shared by every container of this machine).
        #[arg(long, default_value = "/var/lib/router/ipam.json")]
        ipam_file: PathBuf,
        /// Keep IPAM in etcd instead, shared by every host (Calico's layout); by default the
        /// node config's `etcd_endpoints`, if it names any.
        #[arg(long = "etcd-endpoints", value_delimiter = ',')]
        etcd_endpoints: Vec<String>,
        /// TLS to etcd; by default the node config's files.
        #[command(flatten)]
        etcd_tls: EtcdTlsArgs,
        /// Pin the containers' MTU; by default the plugin asks the node at each ADD (its
        /// uplink's less the pools' tunnel: 1480 with IPIP, 1450 with VXLAN on 1500).
        #[arg(long, value_parser = clap::value_parser!(u16).range(576..=65535))]
        mtu: Option<u16>,
    },
}

#[derive(Subcommand)]
enum InternalCmd {
    /// Turn off TX checksum offload (and with it TSO) on an interface of this namespace.
    TxChecksumOff { interface: String },
    /// Make the user, mount and network namespaces of a lab without root and hold them.
    Keeper {
        /// Where the keeper writes its pid and user namespace.
        #[arg(long)]
        record: PathBuf,
    },
    /// Send one trace probe from this namespace.
    Probe {
        /// The source pod's network namespace (a file under /run/netns or /proc).
        #[arg(long)]
        netns: PathBuf,
        #[arg(long)]
        dst: std::net::IpAddr,
        #[arg(long, value_enum)]
        proto: router::probe::ProbeProto,
        #[arg(long)]
        id: u32,
        #[arg(long)]
        ttl: u8,
        /// How long to wait for the answer, in milliseconds.
        #[arg(long)]
        wait_ms: u64,
    },
}

/// A generated topology: nodes spread in turn over the underlay subnets behind the underlay
/// router (192.168.100.0/24, 192.168.101.0/24, …), pods from the seed's pool.
#[derive(clap::Args, Debug, Clone)]
struct GenerateArgs {
    /// Build N nodes instead of a topology file.
    #[arg(long, value_name = "N")]
    nodes: Option<usize>,
    /// Underlay subnets the nodes are spread over [default: 2, or 1 for a single node].
    #[arg(long, requires = "nodes")]
    subnets: Option<usize>,
    /// Pods on each node.
    #[arg(long, default_value_t = 1, requires = "nodes")]
    pods_per_node: usize,
    /// Make the first K nodes route reflectors (one cluster ID) and turn the mesh off, as
    /// Calico's documentation does; 0: a full mesh.
    #[arg(long, default_value_t = 0, value_name = "K", requires = "nodes")]
    route_reflectors: usize,
}

impl GenerateArgs {
    fn generated(&self) -> Option<lab::topology::Generated> {
        self.nodes.map(|nodes| lab::topology::Generated {
            nodes,
            // Two subnets show direct routing beside IPIP; a lone node has only one to fill.
            subnets: self.subnets.unwrap_or(nodes.min(2)),
            pods_per_node: self.pods_per_node,
            route_reflectors: self.route_reflectors,
        })
    }
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the topology and start one node daemon per node.
    Up {
        /// Topology file (TOML); the seed topology is built in.
        #[arg(long, conflicts_with = "nodes")]
        topology: Option<PathBuf>,
        #[command(flatten)]
        generate: GenerateArgs,
        /// `etcd`: run etcd in the lab, load the topology into it as Calico resources, and let
        /// every node follow them live (change them with `router apply`).
        #[arg(long, value_enum, default_value = "none")]
        datastore: DatastoreArg,
        #[arg(long, value_enum, default_value = "afpacket")]
        dataplane: Dataplane,
        /// Calico's ipipMode for the pool (default: the topology's, CrossSubnet in the seed).
        #[arg(long, value_enum)]
        ipip_mode: Option<IpipModeArg>,
        /// Calico's vxlanMode for the pool (VNI 4096, UDP 4789, pod MTU 1450); alone it turns
        /// IPIP off, as a pool uses one or the other. Both data planes (tun: `vxlan.calico`).
        #[arg(long, value_enum)]
        vxlan_mode: Option<IpipModeArg>,
        /// Calico's natOutgoing for the pools (both, in a dual-stack lab): pods reach addresses
        /// outside the pools (the underlay, and what lies behind it) with their node's
        /// address as the source.
        #[arg(long)]
        nat_outgoing: bool,
        /// Serve each node's Prometheus metrics on 127.0.0.1:9091 inside its namespace.
        #[arg(long)]
        metrics: bool,
        /// IPv6 beside IPv4: an IPv6 pool (the topology's `pool_v6`, else fd00:10:244::/48,
        /// /122 blocks), a /128 for every pod, IPv6 on the underlay. Both data planes (tun:
        /// the kernel forwards IPv6 on the routes the node installs).
        #[arg(long)]
        dual_stack: bool,
        /// Turn off the pods' TX checksum and segmentation offloads, so that every packet
        /// leaves a pod complete and MTU-sized (the way to compare with offloads on).
        #[arg(long)]
        no_pod_offload: bool,
        /// Do not merge TCP segments on their way to a pod into super-packets (the nodes'
        /// userspace GRO; the way to compare with it on).
        #[arg(long)]
        no_gro: bool,
        /// Send VXLAN segments one frame each, not as UDP super-packets that the underlay
        /// carries whole (the way to compare with it on).
        #[arg(long)]
        no_udp_gso: bool,
        /// Let the nodes' kernels see every frame the routers forward, as a node without the
        /// transit filter does (they route each one only to drop it; the way to compare).
        #[arg(long)]
        no_transit_filter: bool,
        /// The workers' nice value (-20 to 19); 0 runs them like any other process.
        #[arg(long, default_value_t = forwarding::dataplane::DEFAULT_WORKER_NICE, allow_hyphen_values = true,
              value_parser = clap::value_parser!(i32).range(-20..=19))]
        worker_nice: i32,
        /// Worker threads per node.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Print the lab's state (hosts, namespaces, daemons) as JSON instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Stop every daemon and remove every namespace of the lab.
    Down {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a host's namespace: a node, a pod, or "underlay".
    Exec {
        host: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
    /// Walk through the seed's story, each claim shown live in the running lab.
    Tour {
        /// Instead: how BGP scales. Brings up a full mesh and a lab with two route
        /// reflectors of N nodes each, side by side, and compares their sessions and how
        /// long they took to converge (no running lab needed).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "20")]
        scale: Option<usize>,
    },
    /// Restart one node's daemon gracefully (RFC 4724): it saves its routes and closes its
    /// sessions without a NOTIFICATION, so its peers keep its routes; the new daemon forwards
    /// on the saved routes until its peers have sent theirs again. A daemon that has exited
    /// (crashed, killed) is started again. `etcd` restarts a lab's etcd on the same data (or
    /// starts it again): the nodes forward meanwhile and catch up once it answers.
    Restart { node: String },
    /// Print a generated topology file (the one `lab up --nodes N` builds).
    Topology {
        #[command(flatten)]
        generate: GenerateArgs,
    },
    /// Print a topology (default: the seed) as Calico resources, for `router apply -f`.
    Resources {
        /// Topology file (TOML); the seed topology is built in.
        #[arg(long)]
        topology: Option<PathBuf>,
        /// With an IPv6 pool (fd00:10:244::/48 where the topology names none) and the nodes'
        /// IPv6 addresses, as `lab up --dual-stack`.
        #[arg(long)]
        dual_stack: bool,
    },
    /// Show the lab's hosts and whether their daemons answer.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Dataplane {
    /// Userspace forwarding of every packet from AF_PACKET sockets.
    Afpacket,
    /// Kernel forwarding, with IPIP in userspace behind a TUN `tunl0`.
    Tun,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DatastoreArg {
    /// The topology file is the cluster.
    None,
    Etcd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum IpipModeArg {
    /// Wrap only traffic to nodes on other subnets.
    CrossSubnet,
    Always,
    Never,
}

#[derive(Args)]
struct Query {
    /// A lab node's name.
    #[arg(long, conflicts_with = "socket")]
    node: Option<String>,
    /// A node's admin socket, outside a lab (without a lab up: the default one, where a
    /// node serves it).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    sel: LabSel,
}

impl Query {
    fn socket(&self) -> anyhow::Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        // On a host that runs `router node` itself (no lab), its socket is the default one.
        let default = Path::new(nodeapi::config::DEFAULT_ADMIN_SOCKET);
        let (lab, daemons) = self.lab_daemons()?;
        let Some(daemons) = daemons else {
            if self.node.is_none() && default.exists() {
                return Ok(default.to_path_buf());
            }
            bail!(
                "no lab named {:?} is up and no node serves {}; start a lab with `router lab up`, or name a \
                 node's socket with --socket PATH",
                lab.name,
                default.display()
            );
        };
        let nodes: Vec<&str> = daemons.iter().map(|d| d.node.as_str()).collect();
        match (&self.node, daemons.as_slice()) {
            (Some(n), _) => match daemons.iter().find(|d| &d.node == n) {
                Some(d) => Ok(d.socket.clone()),
                None => bail!("lab {:?} has no node {n:?}; nodes: {}", lab.name, nodes.join(", ")),
            },
            // A lab of one node: there is nothing to choose.
            (None, [only]) => Ok(only.socket.clone()),
            (None, _) => bail!("which node? add --node NODE (nodes: {})", nodes.join(", ")),
        }
    }

    /// The lab, and its node daemons if it is up.
    fn lab_daemons(&self) -> anyhow::Result<(Lab, Option<Vec<lab::state::Daemon>>)> {
        let lab = self.sel.lab()?;
        let daemons = lab.state()?.map(|st| st.daemons);
        Ok((lab, daemons))
    }

    /// Every address `s` stands for: itself, or a lab host's or container's IPv4 address and,
    /// in a dual-stack lab, its IPv6 one.
    fn addresses_of(&self, s: &str) -> anyhow::Result<Vec<std::net::IpAddr>> {
        if let Ok(a) = s.parse() {
            return Ok(vec![a]);
        }
        Ok(self.named(s)?.into_iter().flatten().collect())
    }

    /// The IPv4 and IPv6 addresses of the lab's host or container named `s` (the lab's state
    /// and the nodes asked once for both).
    fn named(&self, s: &str) -> anyhow::Result<[Option<std::net::IpAddr>; 2]> {
        let lab = self.sel.lab()?;
        let not = || format!("{s:?} is not an IP address (like 10.244.3.1 or fd00:10:244::1)");
        let Some(st) = lab.state()? else {
            bail!("{}, and no lab {:?} is up to name it", not(), lab.name);
        };
        let containers: Vec<admin::PodSpec> = lab::containers::served(&st).into_iter().map(|(_, p)| p.pod).collect();
        let family = |v6| lab_cmd::named_address(&st, &containers, s, v6);
        match (family(false), family(true)) {
            (Some(v4), v6) => Ok([v4, v6.flatten()]),
            _ => bail!("{}, nor a host or container of lab {:?}", not(), lab.name),
        }
    }

    /// The node's admin socket, as a typed client.
    fn client(&self) -> anyhow::Result<admin::Client> {
        Ok(admin::Client::new(self.socket()?))
    }

    /// Prints `v` as JSON when asked to, else renders it with `text`.
    fn print<T: serde::Serialize>(&self, v: &T, text: impl FnOnce(&T)) -> anyhow::Result<i32> {
        if self.json {
            nodeapi::outln!("{}", serde_json::to_string_pretty(v)?);
        } else {
            text(v);
        }
        Ok(0)
    }
}

/// A prefix for `routes --detail` (host bits dropped); an address alone is pointed at
/// `--lookup`.
fn prefix_for_detail(s: &str) -> Result<ipnet::IpNet, String> {
    match (s.parse::<ipnet::IpNet>(), s.parse::<std::net::IpAddr>()) {
        (Ok(n), _) => Ok(n.trunc()),
        (Err(_), Ok(_)) => Err(format!(
            "{s} is an address; --detail takes a prefix like 10.244.2.0/26 (the route {s} takes: --lookup {s})"
        )),
        (Err(_), Err(_)) => Err(format!("{s:?} is not a prefix like 10.244.2.0/26 or fd00:10:244::40/122")),
    }
}

fn main() {
    // A container runtime runs its CNI plugin with no arguments and CNI_COMMAND set: then
    // this binary is the plugin (the lab installs it so; `router-cni` is the same code).
    if std::env::args_os().len() == 1 && std::env::var_os("CNI_COMMAND").is_some() {
        cni::plugin::run_process();
    }
    let cli = Cli::parse();
    // RUST_LOG wins; a node's config may set its own level; otherwise info, which a
    // datastore's logSeverityScreen may change while the node runs.
    let mut settable = false;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        let from_config = match &cli.cmd {
            Cmd::Node { config, .. } => nodeapi::config::NodeConfig::load(config).ok().and_then(|c| c.log_level),
            _ => None,
        };
        settable = from_config.is_none();
        tracing_subscriber::EnvFilter::try_new(from_config.as_deref().unwrap_or("info"))
            .unwrap_or_else(|_| "info".into())
    });
    router::logging::init(filter, settable);
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.cmd {
        Cmd::Internal { cmd: InternalCmd::TxChecksumOff { interface } } => {
            netsys::set_tx_checksum(&interface, false)?;
            Ok(0)
        }
        Cmd::Internal { cmd: InternalCmd::Keeper { record } } => lab::userns::keeper_main(&record),
        Cmd::Internal { cmd: InternalCmd::Probe { netns, dst, proto, id, ttl, wait_ms } } => {
            // Only the network namespace: the probe needs no other view of the pod.
            let ns = std::fs::File::open(&netns).with_context(|| format!("opening {}", netns.display()))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {}", netns.display()))?;
            let answer = router::probe::run(dst, proto, id, ttl, std::time::Duration::from_millis(wait_ms))?;
            nodeapi::outln!("{}", serde_json::to_string(&answer)?);
            Ok(0)
        }
        // The file is read (and every document checked) before etcd is looked for: a typo
        // in it is the first thing to hear about.
        Cmd::Apply { file, etcd } => {
            let rs = router::calico::read(&file)?;
            router::calico::apply(&etcd.store()?, &rs, datastore::Write::Apply).map(|_| 0)
        }
        Cmd::Create { file, etcd } => {
            let rs = router::calico::read(&file)?;
            router::calico::apply(&etcd.store()?, &rs, datastore::Write::Create).map(|_| 0)
        }
        Cmd::Replace { file, etcd } => {
            let rs = router::calico::read(&file)?;
            router::calico::apply(&etcd.store()?, &rs, datastore::Write::Replace).map(|_| 0)
        }
        Cmd::Get { kind, resource, output, ns, all_namespaces, etcd } => {
            let kind = router::calico::kind(&kind)?;
            let namespace = if all_namespaces && resource.is_none() { None } else { ns.of(kind)? };
            router::calico::get(&etcd.store()?, kind, namespace, resource.as_deref(), output)
        }
        Cmd::Delete { file: Some(file), etcd, .. } => {
            let rs = router::calico::read(&file)?;
            router::calico::delete_all(&etcd.store()?, &rs)
        }
        Cmd::Delete { kind, resource, ns, etcd, .. } => {
            let kind = router::calico::kind(kind.as_deref().unwrap_or_default())?;
            let name = resource.as_deref().unwrap_or_default();
            let existed = router::calico::delete_one(&etcd.store()?, kind, ns.of(kind)?, name)?;
            Ok(i32::from(!existed))
        }
        Cmd::Patch { kind, resource, patch, patch_type, ns, etcd } => {
            let kind = router::calico::kind(&kind)?;
            router::calico::patch(&etcd.store()?, kind, ns.of(kind)?, &resource, &patch, patch_type)?;
            Ok(0)
        }
        Cmd::Label { kind, resource, label, overwrite, remove, ns, etcd } => {
            let kind = router::calico::kind(&kind)?;
            let change = match (label.split_once('='), remove) {
                (None, true) => router::calico::LabelChange::Remove { key: label },
                (Some(_), true) => {
                    bail!("--remove takes the label's key alone: {:?}", label.split('=').next().unwrap_or(""))
                }
                (Some((key, value)), false) => {
                    router::calico::LabelChange::Set { key: key.to_string(), value: value.to_string(), overwrite }
                }
                (None, false) => bail!("{label:?}: give KEY=VALUE to set a label, or KEY --remove to remove it"),
            };
            router::calico::label(&etcd.store()?, kind, ns.of(kind)?, &resource, &change)?;
            Ok(0)
        }
        Cmd::Ipam { cmd: IpamCmd::Show { show_blocks, show_borrowed, ip, json, src } } => {
            let usage = src.source()?.usage()?;
            if show_borrowed {
                let list = router::ipam::borrowed(&usage);
                match json {
                    true => nodeapi::outln!("{}", serde_json::to_string_pretty(&list)?),
                    false => nodeapi::out!("{}", router::ipam::borrowed_table(&list)),
                }
                return Ok(0);
            }
            match (ip, json) {
                (Some(ip), json) => {
                    let a = usage.address(ip);
                    if json {
                        nodeapi::outln!("{}", serde_json::to_string_pretty(&a)?);
                    } else {
                        nodeapi::outln!("{}", a.describe());
                    }
                    Ok(i32::from(!a.known()))
                }
                (None, true) => {
                    nodeapi::outln!("{}", serde_json::to_string_pretty(&usage)?);
                    Ok(0)
                }
                (None, false) => {
                    nodeapi::out!("{}", router::ipam::table(&usage, show_blocks));
                    Ok(0)
                }
            }
        }
        Cmd::Ipam { cmd: IpamCmd::Check { release, json, src } } => {
            let source = src.source()?;
            let nodes = src.nodes(&source)?;
            let endpoints = source.endpoint_addresses()?;
            let check = router::ipam::check(&source.usage()?, nodes.as_ref(), endpoints.as_ref());
            if json {
                nodeapi::outln!("{}", serde_json::to_string_pretty(&check)?);
            } else {
                nodeapi::out!("{}", check.report());
            }
            // Addresses first: a stale block they empty can go too.
            let mut left = 0;
            let (blocks, addresses): (Vec<_>, Vec<_>) = check.findings.iter().partition(|f| f.kind == "block");
            for f in addresses {
                // An address in use that IPAM never allocated has nothing to free.
                if release && f.kind != "unallocated" && source.release(f.cidr.addr())?.is_some() {
                    nodeapi::outln!("released {} (held by {})", f.cidr.addr(), f.handle.as_deref().unwrap_or("-"));
                } else {
                    left += 1;
                }
            }
            for f in blocks {
                if release && source.release_block(f.cidr)? {
                    nodeapi::outln!("released block {} (of {})", f.cidr, f.node);
                } else {
                    if release {
                        eprintln!("block {} still holds addresses: it stays {}'s", f.cidr, f.node);
                    }
                    left += 1;
                }
            }
            Ok(i32::from(left > 0))
        }
        Cmd::Ipam { cmd: IpamCmd::Release { ip, src } } => match src.source()?.release(ip)? {
            Some(handle) => {
                nodeapi::outln!("released {ip} (held by {handle})");
                Ok(0)
            }
            None => {
                eprintln!("{ip} is not allocated");
                Ok(1)
            }
        },
        Cmd::Cni {
            cmd: CniCmd::Install { node_config, conf_dir, bin_dir, ipam_file, etcd_endpoints, etcd_tls, mtu },
        } => {
            let cfg = nodeapi::config::NodeConfig::load(&node_config)?;
            let exe = std::env::current_exe().context("finding the router binary")?;
            // router-cni where it was built; else this binary, which is the plugin too.
            let plugin = cni::install::plugin_beside(&exe).unwrap_or(exe);
            let mut target = cni::install::Target::from_node(&cfg, ipam_file);
            target.etcd_endpoints = match etcd_endpoints.is_empty() {
                true => cfg.etcd_endpoints.clone(),
                false => etcd_endpoints,
            };
            target.etcd_tls = etcd_tls.tls().or(&cfg.etcd_tls);
            // What the plugin will be refused with at every ADD is refused here, once.
            if !target.etcd_endpoints.is_empty() {
                datastore::etcd::Etcd::with_tls(&target.etcd_endpoints, &target.etcd_tls)?;
            }
            target.mtu = mtu;
            let (conf, bin) = cni::install::install(&target, &conf_dir, &bin_dir, &plugin)?;
            let ipam = match target.etcd_endpoints.is_empty() {
                true => format!("IPAM in {}", target.ipam_file.display()),
                false => format!("IPAM in etcd at {}", target.etcd_endpoints.join(",")),
            };
            nodeapi::outln!(
                "wrote {} ({ipam})
installed {} as {}",
                conf.display(),
                plugin.display(),
                bin.display()
            );
            Ok(0)
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            // Into memory first: clap_complete panics on a write error, and stdout's reader
            // may go early (`| head`), which `out!` takes quietly.
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "router", &mut script);
            nodeapi::out!("{}", String::from_utf8_lossy(&script));
            Ok(0)
        }
        Cmd::Trace { src, dst, proto, ipv6, ttl, json, sel } => trace(&sel.lab()?, &src, &dst, proto, ttl, ipv6, json),
        Cmd::Node { config, datastore, etcd_endpoints, etcd_tls, secrets_dir } => {
            let endpoints = match datastore {
                Some(DatastoreArg::Etcd) => Some(etcd_endpoints),
                Some(DatastoreArg::None) => Some(Vec::new()),
                None if !etcd_endpoints.is_empty() => Some(etcd_endpoints),
                None => None,
            };
            if endpoints.as_ref().is_some_and(|e| e.is_empty()) && datastore == Some(DatastoreArg::Etcd) {
                bail!("--datastore etcd needs --etcd-endpoints http://HOST:2379 (or ROUTER_ETCD_ENDPOINTS)");
            }
            router::node::run_with(&config, endpoints, etcd_tls.tls(), secrets_dir).map(|_| 0)
        }
        Cmd::Lab { cmd, sel } => run_lab(cmd, &sel.lab()?),
        Cmd::Status(q) => {
            if q.node.is_none() && q.socket.is_none() {
                if let (_, Some(daemons)) = q.lab_daemons()? {
                    if daemons.len() > 1 {
                        return every_node_status(&daemons, q.json);
                    }
                }
            }
            print_one_status(&q.client()?, q.json)
        }
        Cmd::Routes { rejected: true, peer, query: q, .. } => q.print(&q.client()?.rejected(peer)?, |rs| {
            if rs.is_empty() {
                nodeapi::outln!("No route was refused.");
                return;
            }
            nodeapi::outln!("{:<16} {:<20} Reason", "Peer", "Prefix");
            for r in rs {
                nodeapi::outln!("{:<16} {:<20} {}", r.peer.to_string(), r.prefix, r.reason);
            }
        }),
        Cmd::Routes { detail: Some(prefix), query: q, .. } => {
            q.print(&q.client()?.paths(prefix)?, |ps| nodeapi::out!("{}", render_paths(&prefix, ps)))
        }
        Cmd::Routes { lookup: Some(name), ipv6, query: q, .. } => {
            if name.parse::<ipnet::IpNet>().is_ok() {
                bail!("{name} is a prefix; --lookup takes an address (every path for a prefix: --detail {name})");
            }
            let (addr, v6) = match name.parse::<std::net::IpAddr>() {
                Ok(a) if ipv6 && a.is_ipv4() => bail!("-6 picks a name's IPv6 address; {a} is an IPv4 address"),
                Ok(a) => (a, None),
                Err(_) => {
                    let [v4, v6] = q.named(&name)?;
                    match (ipv6, v4, v6) {
                        (true, _, None) => bail!("{name} has no IPv6 address (a dual-stack lab gives every host one)"),
                        (true, _, Some(a)) => (a, None),
                        (false, Some(a), v6) => (a, v6),
                        (false, None, _) => bail!("{name} has no IPv4 address"),
                    }
                }
            };
            let client = q.client()?;
            let found = client.lookup(addr)?;
            let no_v6 = found.is_none() && addr.is_ipv6() && !client.status()?.ipv6;
            q.print(&found, |e| {
                match e {
                    None if no_v6 => {
                        nodeapi::outln!("{addr}: no route: this node routes no IPv6 (its config has no [ipv6] section)")
                    }
                    None => nodeapi::outln!(
                        "{addr}: no route (packets to it are answered with ICMP destination unreachable)"
                    ),
                    Some(e) => nodeapi::out!("{addr} takes\n{}", routes::render(std::slice::from_ref(e))),
                }
                if let Some(a) = v6 {
                    nodeapi::outln!("{name} also has {a}: --lookup {name} -6");
                }
            })
        }
        Cmd::Routes { lookup: None, query: q, .. } => {
            q.print(&q.client()?.routes()?, |e| nodeapi::out!("{}", routes::render(e)))
        }
        Cmd::Stats(q) => q.print(&q.client()?.stats()?, print_stats),
        Cmd::Capture { interface, count, duration, host, file, query } => {
            let hosts = match host {
                Some(h) => query.addresses_of(&h)?,
                None => Vec::new(),
            };
            capture(&query, interface, count, duration, hosts, file)
        }
        Cmd::Neighbours(q) => {
            let client = q.client()?;
            q.print(&client.neighbours()?, |ns| {
                if ns.is_empty() {
                    // The tun data plane sends only to the kernel, which resolves neighbours itself.
                    let tun = client.status().is_ok_and(|s| s.dataplane == DataplaneMode::Tun);
                    nodeapi::outln!(
                        "{}",
                        if tun {
                            "no neighbours: in the tun data plane the node's kernel resolves them (`ip neigh` in the node)"
                        } else {
                            "no neighbours resolved yet: the router asks when it first sends to an address"
                        }
                    );
                    return;
                }
                let w = ns.iter().map(|n| n.ip.to_string().len()).max().unwrap_or(0).max(17);
                nodeapi::outln!("{:<16} {:<w$} {:<19} State", "Interface", "Address", "MAC");
                for n in ns {
                    nodeapi::outln!(
                        "{:<16} {:<w$} {:<19} {}",
                        n.interface,
                        n.ip.to_string(),
                        n.mac.as_deref().unwrap_or("-"),
                        n.state
                    );
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn detail_takes_a_prefix_and_points_an_address_at_lookup() {
        assert_eq!(super::prefix_for_detail("10.244.2.5/26").map(|n| n.to_string()), Ok("10.244.2.0/26".into()));
        assert!(super::prefix_for_detail("10.244.2.5").is_err_and(|e| e.contains("--lookup 10.244.2.5")));
        assert!(super::prefix_for_detail("banana").is_err_and(|e| e.contains("not a prefix")));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
