//! `router apply | get | delete`: Calico's resources in etcd, as `calicoctl` handles them.

use anyhow::{bail, Context as _};
use datastore::resources::{self, path, Kind, Resource};
use datastore::{Applied, Store, Write};
use std::path::Path;

/// Reads a file (or `-` for stdin) of Calico-format documents; an error names the file too.
pub fn read(file: &Path) -> anyhow::Result<Vec<Resource>> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let rs = resources::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if rs.is_empty() {
        bail!("{}: no resources in it", file.display());
    }
    Ok(rs)
}

/// Writes resources that [`read`] checked, all in one transaction: a file with a mistake
/// changes nothing. `how`: apply, or calicoctl's create (none may exist) or replace (all
/// must).
pub fn apply(store: &Store, rs: &[Resource], how: Write) -> anyhow::Result<()> {
    rs.iter().for_each(warn_unfollowed);
    for (r, applied) in rs.iter().zip(store.write_all(rs, how)?) {
        let what = match applied {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        };
        nodeapi::outln!("{} {what}", r.path());
    }
    Ok(())
}

/// Names on stderr the fields of `r` that this router keeps without acting on, so that
/// nothing written with apply, patch or label is silently a no-op.
fn warn_unfollowed(r: &Resource) {
    let unfollowed = resources::not_followed(r);
    if !unfollowed.is_empty() {
        eprintln!(
            "warning: {}/{}: kept in the datastore, but not acted on by this router: {}",
            r.kind().plural(),
            r.name(),
            unfollowed.join(", ")
        );
    }
}

/// How `router patch` reads its patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PatchType {
    /// A JSON merge patch (RFC 7386): objects merge, `null` removes, lists are replaced
    /// whole. calicoctl's default, "strategic", is this for Calico's resources, whose lists
    /// have no merge keys.
    #[value(alias = "strategic")]
    Merge,
    /// A JSON patch (RFC 6902): a list of add, remove, replace, move, copy and test
    /// operations at JSON pointers.
    Json,
}

/// `calicoctl patch`: the patch (JSON, or YAML as a file is) applied to the resource as
/// `get -o json` shows it, checked and written as `apply` does.
pub fn patch(
    store: &Store,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    patch: &str,
    how: PatchType,
) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_yaml_ng::from_str(patch).context("reading the patch (JSON or YAML)")?;
    let ops: Option<json_patch::Patch> = match how {
        PatchType::Merge if !value.is_object() => bail!("a merge patch is an object, like '{{\"spec\":{{...}}}}'"),
        PatchType::Merge => None,
        PatchType::Json => Some(serde_json::from_value(value.clone()).context("reading the JSON patch (RFC 6902)")?),
    };
    let (applied, r) = store.patch_with(kind, namespace, name, |doc| {
        match &ops {
            Some(ops) => json_patch::patch(doc, ops).map_err(|e| anyhow::anyhow!("the JSON patch: {e}"))?,
            None => json_patch::merge(doc, &value),
        }
        Ok(())
    })?;
    warn_unfollowed(&r);
    let what = if applied == Applied::Unchanged { "unchanged" } else { "patched" };
    nodeapi::outln!("{} {what}", path(kind, namespace, name));
    Ok(())
}

/// What `router label` does to one label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// Set it; an existing label with another value only with `overwrite`.
    Set {
        key: String,
        value: String,
        overwrite: bool,
    },
    Remove {
        key: String,
    },
}

/// `calicoctl label`: one label set or removed, the rest of the resource untouched. Err
/// when the label is there with another value (without `overwrite`) or, to remove, is not.
pub fn label(
    store: &Store,
    kind: Kind,
    namespace: Option<&str>,
    name: &str,
    change: &LabelChange,
) -> anyhow::Result<()> {
    if let LabelChange::Set { key, value, .. } = change {
        resources::check_label(key, value).map_err(anyhow::Error::msg)?;
    }
    let what = path(kind, namespace, name);
    let (applied, _) = store.patch_with(kind, namespace, name, |doc| {
        let labels = doc
            .pointer_mut("/metadata")
            .and_then(|m| m.as_object_mut())
            .context("the resource has no metadata")?
            .entry("labels")
            .or_insert_with(|| serde_json::json!({}));
        let labels = labels.as_object_mut().context("metadata.labels is not an object")?;
        match change {
            LabelChange::Set { key, value, overwrite } => match labels.get(key).and_then(|v| v.as_str()) {
                Some(old) if old != value && !overwrite => {
                    bail!("the label {key}={old} is there already: --overwrite replaces it")
                }
                _ => {
                    labels.insert(key.clone(), value.clone().into());
                }
            },
            LabelChange::Remove { key } => {
                if labels.remove(key).is_none() {
                    bail!("no label {key:?} to remove");
                }
            }
        }
        Ok(())
    })?;
    let done = match (change, applied) {
        (_, Applied::Unchanged) => "unchanged".to_string(),
        (LabelChange::Set { key, value, .. }, _) => format!("labelled {key}={value}"),
        (LabelChange::Remove { key }, _) => format!("unlabelled {key}"),
    };
    nodeapi::outln!("{what} {done}");
    Ok(())
}

/// Deletes what a file ([`read`]) lists; 1 when some of it did not exist.
pub fn delete_all(store: &Store, rs: &[Resource]) -> anyhow::Result<i32> {
    let mut missing = 0;
    for r in rs {
        missing += i32::from(!delete_one(store, r.kind(), r.namespace(), r.name())?);
    }
    Ok(i32::from(missing > 0))
}

/// Whether it existed. `namespace`: for a namespaced kind (`None`: `default`).
pub fn delete_one(store: &Store, kind: Kind, namespace: Option<&str>, name: &str) -> anyhow::Result<bool> {
    let held = match kind {
        Kind::IpPool => pool_in_use(store, name)?,
        _ => None,
    };
    let existed = store.delete_in(kind, namespace, name)?;
    if existed {
        nodeapi::outln!("{} deleted", path(kind, namespace, name));
        if let Some((cidr, n)) = held {
            // As in Calico, the pool goes anyway; its workloads keep their addresses but not
            // their routes and tunnels, which follow the pools.
            let what = if n == 1 { "address" } else { "addresses" };
            eprintln!(
                "warning: pool {cidr} still has {n} {what} in use (`router ipam show --show-blocks`): their \
                 workloads lose their routes and tunnels with the pool (`disabled: true` stops new ones while they move)"
            );
        }
        if kind == Kind::Node {
            // As `calicoctl delete node`: the node's addresses, blocks, workload endpoints,
            // BGP peers and BGP configuration go with it (a node that runs again claims its
            // blocks and records its pods anew).
            let (addresses, blocks) = datastore::ipam::Ipam::new(store.etcd.clone()).release_node(name)?;
            let endpoints = store.delete_endpoints_of(name)?;
            let n = |k: usize, one: &str, many: &str| format!("{k} {}", if k == 1 { one } else { many });
            let (a, b) = (n(addresses, "address", "addresses"), n(blocks, "block", "blocks"));
            nodeapi::outln!("released {a} and {b} of node {name}");
            nodeapi::outln!("deleted {} of node {name}", n(endpoints, "workload endpoint", "workload endpoints"));
            // And what configures that node alone: its BGP peers and its BGPConfiguration.
            for r in store.get(Kind::BgpPeer, None)? {
                if matches!(&r, Resource::BgpPeer(p) if p.spec.node.as_deref() == Some(name))
                    && store.delete(Kind::BgpPeer, r.name())?
                {
                    nodeapi::outln!("{} deleted", r.path());
                }
            }
            let own = format!("node.{name}");
            if store.delete(Kind::BgpConfiguration, &own)? {
                nodeapi::outln!("{} deleted", path(Kind::BgpConfiguration, None, &own));
            }
        }
    } else {
        eprintln!("{} does not exist", path(kind, namespace, name));
    }
    Ok(existed)
}

/// The pool `name`'s CIDR and how many addresses of its blocks are in use, where any are
/// (as `router ipam show` counts them).
fn pool_in_use(store: &Store, name: &str) -> anyhow::Result<Option<(ipnet::IpNet, u128)>> {
    let Some(Resource::IpPool(p)) = store.get(Kind::IpPool, Some(name))?.into_iter().next() else {
        return Ok(None);
    };
    let Ok(cidr) = p.spec.cidr.parse::<ipnet::IpNet>() else { return Ok(None) };
    let usage = crate::ipam::Source::Etcd(store.clone()).usage()?;
    let in_use = usage.pools.iter().find(|u| u.cidr == cidr.trunc()).map_or(0, |u| u.in_use);
    Ok((in_use > 0).then_some((cidr, in_use)))
}

pub fn kind(s: &str) -> anyhow::Result<Kind> {
    Kind::parse(s).with_context(|| {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.plural()).collect();
        format!("{s:?} is not a kind this router knows ({})", known.join(", "))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    /// The table with calicoctl's wide columns (a node's AS, a pool's NAT and flags).
    Wide,
    Yaml,
    Json,
}

/// `namespace`: for a namespaced kind, the one to look in (`None`: all of them; a named
/// resource is then looked for in `default`).
pub fn get(store: &Store, kind: Kind, namespace: Option<&str>, name: Option<&str>, out: Output) -> anyhow::Result<i32> {
    let stored = store.get_in(kind, namespace, name)?;
    for n in stored.iter().filter_map(|s| s.note()) {
        eprintln!("note: {n}");
    }
    let rs: Vec<Resource> = stored.into_iter().map(|s| s.resource).collect();
    if let (Some(n), true) = (name, rs.is_empty()) {
        eprintln!("{} does not exist", path(kind, namespace, n));
        return Ok(1);
    }
    match out {
        Output::Yaml => nodeapi::out!("{}", resources::to_yaml(&rs)),
        Output::Json if name.is_some() => nodeapi::outln!("{}", serde_json::to_string_pretty(&rs[0].to_json())?),
        Output::Json => {
            let items: Vec<serde_json::Value> = rs.iter().map(Resource::to_json).collect();
            let list = serde_json::json!({
                "apiVersion": resources::API_VERSION,
                "kind": format!("{}List", kind.name()),
                "items": items,
            });
            nodeapi::outln!("{}", serde_json::to_string_pretty(&list)?);
        }
        Output::Table | Output::Wide => {
            // Only nodes show the cluster's AS number: the extra read is theirs alone.
            let wide = (out == Output::Wide)
                .then(|| Wide { cluster_as: (kind == Kind::Node).then(|| cluster_as_number(store)) });
            nodeapi::out!("{}", table(kind, &rs, kind.is_namespaced() && namespace.is_none(), wide))
        }
    }
    Ok(0)
}

/// The cluster's AS number as etcd holds it (see [`crate::cluster::cluster_as_number`]).
fn cluster_as_number(store: &Store) -> u32 {
    let stored = store.get_in(Kind::BgpConfiguration, None, Some("default")).unwrap_or_default();
    let rs: Vec<Resource> = stored.into_iter().map(|s| s.resource).collect();
    crate::cluster::cluster_as_number(&rs)
}

/// What `-o wide` shows beyond the table: for a node without an AS number of its own, the
/// cluster's, in parentheses as calicoctl writes it.
struct Wide {
    /// Read for nodes only.
    cluster_as: Option<u32>,
}

/// `calicoctl get`'s columns per kind; `namespaces`: with the namespace first; `wide`: with
/// the columns of `-o wide` too.
fn table(kind: Kind, rs: &[Resource], namespaces: bool, wide: Option<Wide>) -> String {
    let header: &[&str] = match (kind, &wide) {
        (Kind::IpPool, None) => &["NAME", "CIDR", "BLOCK", "IPIP", "VXLAN", "SELECTOR"],
        (Kind::IpPool, Some(_)) => {
            &["NAME", "CIDR", "BLOCK", "IPIP", "VXLAN", "NAT", "DISABLED", "DISABLEBGPEXPORT", "SELECTOR"]
        }
        (Kind::BgpConfiguration, _) => &["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        (Kind::BgpPeer, None) => &["NAME", "PEERIP", "NODE", "ASN"],
        (Kind::BgpPeer, Some(_)) => &["NAME", "PEERIP", "NODE", "ASN", "NODESELECTOR", "PEERSELECTOR", "FILTERS"],
        (Kind::BgpFilter, _) => &["NAME", "RULES"],
        (Kind::Node, None) => &["NAME", "IPV4", "IPV6", "RRCLUSTERID"],
        (Kind::Node, Some(_)) => &["NAME", "ASN", "IPV4", "IPV6", "RRCLUSTERID"],
        (Kind::IpReservation, _) => &["NAME", "RESERVED"],
        (Kind::IpamConfiguration, _) => &["NAME", "STRICTAFFINITY", "MAXBLOCKSPERHOST", "AUTOALLOCATEBLOCKS"],
        (Kind::WorkloadEndpoint, _) if namespaces => &["NAMESPACE", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        (Kind::WorkloadEndpoint, _) => &["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
    };
    let opt = |s: Option<String>| s.unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = rs
        .iter()
        .map(|r| match r {
            Resource::IpPool(p) => {
                let mut row = vec![
                    p.metadata.name.clone(),
                    p.spec.cidr.clone(),
                    p.spec.block_size_or_default().to_string(),
                    format!("{:?}", p.spec.ipip_mode.unwrap_or_default()),
                    format!("{:?}", p.spec.vxlan_mode.unwrap_or_default()),
                ];
                if wide.is_some() {
                    let flag = |b: Option<bool>| b.unwrap_or(false).to_string();
                    row.extend([flag(p.spec.nat_outgoing), flag(p.spec.disabled), flag(p.spec.disable_bgp_export)]);
                }
                row.push(opt(p.spec.node_selector.clone()));
                row
            }
            Resource::BgpConfiguration(c) => vec![
                c.metadata.name.clone(),
                opt(c.spec.log_severity_screen.clone()),
                opt(c.spec.node_to_node_mesh_enabled.map(|b| b.to_string())),
                opt(c.spec.as_number.map(|n| n.to_string())),
            ],
            Resource::BgpPeer(p) => {
                let mut row = vec![
                    p.metadata.name.clone(),
                    opt(p.spec.peer_ip.clone()),
                    p.spec.node.clone().unwrap_or_else(|| "(global)".into()),
                    opt(p.spec.as_number.map(|n| n.to_string())),
                ];
                if wide.is_some() {
                    row.extend([
                        opt(p.spec.node_selector.clone()),
                        opt(p.spec.peer_selector.clone()),
                        opt(p.spec.filters.as_ref().filter(|f| !f.is_empty()).map(|f| f.join(","))),
                    ]);
                }
                row
            }
            Resource::BgpFilter(f) => {
                let n =
                    f.spec.export_v4.len() + f.spec.import_v4.len() + f.spec.export_v6.len() + f.spec.import_v6.len();
                vec![f.metadata.name.clone(), n.to_string()]
            }
            Resource::Node(n) => {
                let bgp = n.spec.bgp.as_ref();
                let mut row = vec![
                    n.metadata.name.clone(),
                    opt(bgp.and_then(|b| b.ipv4_address.clone())),
                    opt(bgp.and_then(|b| b.ipv6_address.clone())),
                    opt(bgp.and_then(|b| b.route_reflector_cluster_id.clone())),
                ];
                if let Some(w) = &wide {
                    let asn = bgp.and_then(|b| b.as_number);
                    let inherited = || w.cluster_as.map_or_else(|| "-".into(), |c| format!("({c})"));
                    row.insert(1, asn.map_or_else(inherited, |a| a.to_string()));
                }
                row
            }
            Resource::IpReservation(r) => vec![r.metadata.name.clone(), r.spec.reserved_cidrs.join(",")],
            Resource::IpamConfiguration(c) => vec![
                c.metadata.name.clone(),
                c.spec.strict_affinity.unwrap_or(false).to_string(),
                c.spec.max_blocks_per_host.unwrap_or(0).to_string(),
                c.spec.auto_allocate_blocks.unwrap_or(true).to_string(),
            ],
            Resource::WorkloadEndpoint(w) => {
                let s = &w.spec;
                // The pod, as calicoctl shows it: Kubernetes' pod name, else the workload's
                // or the container's.
                let workload = [&s.pod, &s.workload, &s.container_id].into_iter().find(|x| !x.is_empty());
                let mut row = vec![
                    workload.cloned().unwrap_or_else(|| "-".into()),
                    s.node.clone(),
                    s.ip_networks.join(","),
                    s.interface_name.clone(),
                ];
                if namespaces {
                    row.insert(0, opt(w.metadata.namespace.clone()));
                }
                row
            }
        })
        .collect();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    columns(&[vec![header], rows].concat())
}

/// Rows as calicoctl prints them: each column as wide as its widest cell, three spaces
/// between, no trailing blanks.
pub(crate) fn columns<R: AsRef<[String]>>(rows: &[R]) -> String {
    let mut width: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.as_ref().iter().enumerate() {
            match width.get_mut(i) {
                Some(w) => *w = (*w).max(c.len()),
                None => width.push(c.len()),
            }
        }
    }
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r.as_ref().iter().zip(&width).map(|(c, w)| format!("{c:<w$}")).collect();
        out += cells.join("   ").trim_end();
        out.push('\n');
    }
    out
}
