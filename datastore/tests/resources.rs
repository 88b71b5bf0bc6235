//! Calico-format documents: every kind read, printed and read again unchanged; errors name
//! the document, the line and the field.

use datastore::resources::{self, Kind, Resource};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture")
}

#[test]
fn every_kind_reads_and_round_trips_through_yaml_and_json() {
    let all = [
        "ippool.yaml",
        "bgpconfiguration.yaml",
        "bgppeer.yaml",
        "bgpfilter.yaml",
        "node.json",
        "ipreservation.yaml",
        "ipamconfiguration.yaml",
        "workloadendpoint.yaml",
    ];
    let mut kinds = Vec::new();
    for f in all {
        let rs = resources::parse(&fixture(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        for r in &rs {
            kinds.push(r.kind());
            let again = resources::parse(&resources::to_yaml(std::slice::from_ref(r))).expect("printed YAML reads");
            assert_eq!(&again[0], r, "{f}");
            let json = serde_json::to_string(&r.to_json()).expect("json");
            assert_eq!(&resources::parse(&json).expect("printed JSON reads")[0], r, "{f}");
            assert_eq!(&Resource::from_json(r.kind(), json.as_bytes(), f).expect("stored form"), r);
        }
    }
    kinds.dedup();
    assert_eq!(kinds, Kind::ALL.to_vec());
    let peers = resources::parse(&fixture("bgppeer.yaml")).expect("peers");
    assert_eq!(peers.len(), 2);
    let Resource::BgpPeer(edge) = &peers[1] else { panic!("a BGPPeer") };
    assert_eq!(edge.spec.node.as_deref(), Some("node-a"));
    assert_eq!(edge.spec.password.as_ref().map(|p| p.secret_key_ref.key.as_str()), Some("edge"));
    let Resource::IpPool(pool) = &resources::parse(&fixture("ippool.yaml")).expect("pool")[0] else { panic!() };
    assert_eq!(pool.spec.ipip_mode, Some(resources::EncapMode::CrossSubnet));
    assert_eq!(pool.spec.block_size_or_default(), 26);
    // natOutgoing is followed for IPv4 and IPv6 pools.
    assert!(resources::not_followed(&Resource::IpPool(pool.clone())).is_empty());
    let v6 = fixture("ippool.yaml")
        .replace("10.244.0.0/16", "fd00:10:244::/48")
        .replace("blockSize: 26", "blockSize: 122")
        .replace("CrossSubnet", "Never");
    let vxlan6 = resources::parse(&v6.replace("vxlanMode: Never", "vxlanMode: Always")).expect("IPv6 VXLAN");
    assert!(resources::not_followed(&vxlan6[0])[0].starts_with("spec.vxlanMode (IPv6 is never tunnelled"));
    let v6 = resources::parse(&v6).expect("an IPv6 pool");
    assert!(resources::not_followed(&v6[0]).is_empty());
    // An endpoint is in its namespace, `default` where the document names none.
    let weps = resources::parse(&fixture("workloadendpoint.yaml")).expect("endpoints");
    let ns: Vec<Option<&str>> = weps.iter().map(Resource::namespace).collect();
    assert_eq!(ns, [Some("shop"), Some("default")]);
    assert_eq!(weps[0].path(), "workloadendpoints/shop/worker1-k8s-shop--web--5f7c9-eth0");
    let Resource::WorkloadEndpoint(w) = &weps[0] else { panic!("an endpoint") };
    assert_eq!(w.spec.ports[1].protocol, resources::Protocol::Number(17));
}

#[test]
fn an_endpoint_has_calicos_name_for_it_and_a_namespace_only_it_has() {
    let text = fixture("workloadendpoint.yaml");
    let first = text.split("---\n").next().expect("the first document");
    // The name says node, orchestrator, pod and endpoint; one that does not is refused.
    let e = error(&first.replace("name: worker1-k8s-shop--web--5f7c9-eth0", "name: web"));
    assert_eq!((e.line, e.field.as_deref()), (Some(6), Some("metadata.name")), "{e}");
    assert!(e.message.contains("worker1-k8s-shop--web--5f7c9-eth0"), "{e}");
    let e = error(&first.replace("pod: shop-web-5f7c9", "pod: shop-web-"));
    assert_eq!(e.field.as_deref(), Some("spec.pod"), "{e}");
    let e = error(&first.replace("10.244.1.17/32", "10.244.1.17/33"));
    assert_eq!((e.line, e.field.as_deref()), (Some(21), Some("spec.ipNetworks[0]")), "{e}");
    let e = error(&first.replace("6a:1f:0c:22:9b:41", "6a:1f:0c:22:9b"));
    assert_eq!(e.field.as_deref(), Some("spec.mac"), "{e}");
    let e = error(&first.replace("namespace: shop", "namespace: Shop"));
    assert_eq!(e.field.as_deref(), Some("metadata.namespace"), "{e}");
    let e = error(&first.replace("spec:\n", "  colour: blue\nspec:\n"));
    assert_eq!(e.field.as_deref(), Some("metadata.colour"), "{e}");
    assert!(e.message.starts_with("unknown field `colour`, expected one of"), "the field said once: {e}");
    assert!(!e.message.contains("did you mean"), "nothing near colour: {e}");
    let e = error(&first.replace("interfaceName:", "InterfaceNme:"));
    assert_eq!(e.field.as_deref(), Some("spec.InterfaceNme"), "{e}");
    assert!(e.message.ends_with("(did you mean `interfaceName`?)"), "{e}");
    // The cluster's kinds have no namespace.
    let pool = fixture("ippool.yaml").replacen("metadata:\n", "metadata:\n  namespace: shop\n", 1);
    let e = error(&pool);
    assert_eq!(e.field.as_deref(), Some("metadata.namespace"), "{e}");
}

/// What another tool or a newer Calico wrote to etcd reads with the fields this router does
/// not know left out and named; a file given to `apply` still refuses them, and a field it
/// knows with a value it cannot read still makes the resource unreadable.
#[test]
fn what_this_router_does_not_know_of_a_stored_resource_is_carried_into_its_next_version() {
    let stored = r#"{"apiVersion":"projectcalico.org/v3","kind":"BGPFilter",
        "metadata":{"name":"edge","generation":3},
        "spec":{"exportV4":[{"action":"Accept","cidr":"10.244.0.0/16","matchOperator":"In","weight":7},
                            {"action":"Reject","cidr":"10.0.0.0/8","matchOperator":"In","weight":9}],
                "colour":"red","shade":null}}"#;
    // The user's next version: the first rule as it was, the second changed, a third added.
    let doc = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: edge\nspec:\n  exportV4:\n  \
               - {action: Accept, cidr: 10.244.0.0/16, matchOperator: In}\n  \
               - {action: Accept, cidr: 10.0.0.0/8, matchOperator: In}\n  \
               - {action: Reject, cidr: 10.1.0.0/16, matchOperator: In}\n";
    let next = datastore::resources::parse(doc).expect("parses").remove(0);
    let mut json = next.to_json();
    let carried = Resource::carry_unknown(Kind::BgpFilter, stored.as_bytes(), &mut json, "edge").expect("carries");
    // Into the rule left as it was, not into the changed one; a null member stays behind.
    assert_eq!(carried, ["metadata.generation", "spec.colour", "spec.exportV4[0].weight"]);
    assert_eq!(json["spec"]["exportV4"][0]["weight"], 7);
    assert!(json["spec"]["exportV4"][1].get("weight").is_none() && json["spec"].get("shade").is_none(), "{json}");
    let again =
        Resource::from_stored(Kind::BgpFilter, &serde_json::to_vec(&json).expect("json"), "edge").expect("reads");
    assert_eq!(again.resource, next, "what this router knows is the user's version");
    assert_eq!(again.ignored, ["metadata.generation", "spec.colour", "spec.exportV4[0].weight"]);
    // A field the user sets is theirs; nothing stored that does not read is written over.
    let mut json = next.to_json();
    json["spec"]["colour"] = "blue".into();
    Resource::carry_unknown(Kind::BgpFilter, stored.as_bytes(), &mut json, "edge").expect("carries");
    assert_eq!(json["spec"]["colour"], "blue");
    assert!(Resource::carry_unknown(Kind::BgpFilter, b"{", &mut next.to_json(), "edge").is_err());
}

#[test]
fn a_stored_resource_reads_without_the_fields_this_router_does_not_know() {
    let stored = r#"{"apiVersion":"projectcalico.org/v3","kind":"BGPFilter",
        "metadata":{"name":"edge","generation":3,"uid":"u-1"},
        "spec":{"exportV4":[{"action":"Accept","cidr":"10.244.0.0/16","matchOperator":"In","weight":7},
                            {"action":"Reject","priority":{"of":"two"}}],
                "colour":"red"}}"#;
    let s = Resource::from_stored(Kind::BgpFilter, stored.as_bytes(), "edge").expect("reads");
    assert_eq!(
        s.ignored,
        ["metadata.generation", "spec.colour", "spec.exportV4[0].weight", "spec.exportV4[1].priority"]
    );
    let Resource::BgpFilter(f) = &s.resource else { panic!("a BGPFilter") };
    assert_eq!(f.metadata.uid.as_deref(), Some("u-1"));
    assert_eq!(f.spec.export_v4.len(), 2);
    assert_eq!(f.spec.export_v4[0].cidr.as_deref(), Some("10.244.0.0/16"));
    let note = s.note().expect("a note");
    assert!(note.contains("bgpfilters/edge") && note.contains("spec.colour"), "{note}");
    assert!(Resource::from_json(Kind::BgpFilter, stored.as_bytes(), "edge").is_err(), "the strict reader refuses");
    // What this router writes reads with nothing left out.
    let clean = serde_json::to_vec(&s.resource.to_json()).expect("json");
    let again = Resource::from_stored(Kind::BgpFilter, &clean, "edge").expect("reads");
    assert!(again.ignored.is_empty() && again.note().is_none() && again.resource == s.resource);
    // A known field with a value it cannot read: an error that names the field.
    let bad = r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p","x":1},
        "spec":{"cidr":"10.244.0.0/16","ipipMode":"Sometimes"}}"#;
    let e = Resource::from_stored(Kind::IpPool, bad.as_bytes(), "p").expect_err("refused").to_string();
    assert!(e.contains("spec.ipipMode") && e.contains("Sometimes"), "{e}");
    // A member written as null (Go's nil without omitempty) is as if absent; a required
    // one is then missing.
    let nulls = r#"{"apiVersion":"projectcalico.org/v3","kind":"Node","metadata":{"name":"n","labels":null},
        "spec":null}"#;
    let s = Resource::from_stored(Kind::Node, nulls.as_bytes(), "n").expect("reads");
    assert!(s.ignored.is_empty() && s.resource.name() == "n", "{s:?}");
    let no_cidr =
        r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"p"},"spec":{"cidr":null}}"#;
    let e = Resource::from_stored(Kind::IpPool, no_cidr.as_bytes(), "p").expect_err("no cidr").to_string();
    assert!(e.contains("missing field `cidr`"), "{e}");
    // Not JSON, or not an object where one is expected: errors, no panic.
    assert!(Resource::from_stored(Kind::IpPool, b"{", "p").is_err());
    assert!(Resource::from_stored(Kind::IpPool, b"[1,2]", "p").is_err());
    let not_object =
        r#"{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":7,"spec":{"cidr":"10.0.0.0/8"}}"#;
    assert!(Resource::from_stored(Kind::IpPool, not_object.as_bytes(), "p").is_err());
}

fn error(text: &str) -> resources::DocError {
    resources::parse(text).expect_err("an error")
}

#[test]
fn errors_name_the_document_the_line_and_the_field() {
    let two = format!(
        "{}---\n{}",
        fixture("ippool.yaml"),
        fixture("ippool.yaml").replace("  natOutgoing: true\n", "  natOutgoing: true\n  colour: blue\n")
    );
    let e = error(&two);
    assert_eq!((e.document, e.line, e.field.as_deref()), (2, Some(23), Some("spec.colour")), "{e}");

    let bad_cidr = fixture("ippool.yaml").replace("10.244.0.0/16", "10.244.0.300/16");
    let e = error(&bad_cidr);
    assert_eq!((e.document, e.line, e.field.as_deref()), (1, Some(6), Some("spec.cidr")), "{e}");
    assert!(e.to_string().contains("not a CIDR"), "{e}");

    let host_bits = fixture("ippool.yaml").replace("10.244.0.0/16", "10.244.1.0/16");
    assert!(error(&host_bits).message.contains("host bits"));

    for (over, within) in
        [("169.254.0.0/16", "169.254.0.0/16"), ("169.0.0.0/8", "169.254.0.0/16"), ("169.254.3.0/24", "169.254.0.0/16")]
    {
        let e = error(&fixture("ippool.yaml").replace("10.244.0.0/16", over));
        assert_eq!(e.field.as_deref(), Some("spec.cidr"), "{e}");
        assert!(e.message.contains(&format!("overlaps the link-local range {within}")), "{e}");
    }
    for (over, within) in [("127.0.0.0/16", "127.0.0.0/8"), ("224.1.0.0/16", "224.0.0.0/4"), ("0.0.0.0/9", "0.0.0.0/8")]
    {
        let e = error(&fixture("ippool.yaml").replace("10.244.0.0/16", over));
        assert_eq!(e.field.as_deref(), Some("spec.cidr"), "{e}");
        assert!(e.message.contains(&format!("overlaps {within}, which no pod can have")), "{e}");
    }
    let v6 = fixture("ippool.yaml").replace("10.244.0.0/16", "fe80::/64").replace("blockSize: 26", "blockSize: 122");
    let e = error(&v6.replace("fe80::/64", "ff05::/64").replace("ipipMode: CrossSubnet", "ipipMode: Never"));
    assert!(e.message.contains("overlaps ff00::/8, which no pod can have"), "{e}");
    assert!(error(&v6.replace("ipipMode: CrossSubnet", "ipipMode: Never"))
        .message
        .contains("link-local range fe80::/10"));

    let selector = fixture("ippool.yaml").replace("nodeSelector: all()", "nodeSelector: \"rack ==\"");
    let e = error(&selector);
    assert!(e.field.as_deref() == Some("spec.nodeSelector") && e.message.contains("expected a quoted value"), "{e}");

    let too_big = fixture("ippool.yaml").replace("blockSize: 26", "blockSize: 12");
    let e = error(&too_big);
    assert_eq!((e.line, e.field.as_deref()), (Some(7), Some("spec.blockSize")), "{e}");
    assert!(e.message.contains("does not fit"), "{e}");

    let uses = fixture("ippool.yaml")
        .replace("  natOutgoing: true\n", "  natOutgoing: true\n  allowedUses: [Workload, Pods]\n");
    assert_eq!(error(&uses).field.as_deref(), Some("spec.allowedUses"));
    let mode =
        fixture("ippool.yaml").replace("  natOutgoing: true\n", "  natOutgoing: true\n  assignmentMode: Sometimes\n");
    assert_eq!(error(&mode).field.as_deref(), Some("spec.assignmentMode"));
    let both = fixture("ippool.yaml").replace("vxlanMode: Never", "vxlanMode: Always");
    assert_eq!(error(&both).field.as_deref(), Some("spec.vxlanMode"));

    // IPAM's kinds: reservations that are not addresses or networks, a configuration that
    // is not the one Calico reads, a field Calico does not have.
    for (bad, says) in [("10.244.2.0/299", "not an address or a CIDR"), ("10.244.2.3/29", "host bits"), ("x", "not an")]
    {
        let e = error(&fixture("ipreservation.yaml").replace("10.244.2.0/29", bad));
        assert_eq!((e.document, e.field.as_deref()), (1, Some("spec.reservedCIDRs[1]")), "{bad}: {e}");
        assert!(e.message.contains(says), "{bad}: {e}");
    }
    let e = error(&fixture("ipamconfiguration.yaml").replace("name: default", "name: mine"));
    assert_eq!((e.line, e.field.as_deref()), (Some(5), Some("metadata.name")), "{e}");
    let e = error(&fixture("ipamconfiguration.yaml").replace("strictAffinity", "strictAfinity"));
    assert_eq!(e.field.as_deref(), Some("spec.strictAfinity"), "{e}");

    let wrong_mode = fixture("ippool.yaml").replace("CrossSubnet", "Sometimes");
    let e = error(&wrong_mode);
    assert_eq!(e.line, Some(8), "{e}");
    assert!(e.message.contains("Sometimes"), "{e}");

    let peer = fixture("bgppeer.yaml").replace("192.168.100.251:179", "not-an-ip");
    let e = error(&peer);
    assert_eq!((e.document, e.field.as_deref()), (2, Some("spec.peerIP")), "{e}");
    assert_eq!(e.line, Some(18), "{e}");
    let e = error(&fixture("bgppeer.yaml").replace("asNumber: 64700", "asNumber: 23456"));
    assert_eq!((e.document, e.field.as_deref()), (2, Some("spec.asNumber")), "{e}");
    assert!(e.message.contains("AS_TRANS"), "{e}");
    let e = error(&fixture("bgppeer.yaml").replace("192.168.100.251:179", "192.168.100.251:0"));
    assert_eq!(e.field.as_deref(), Some("spec.peerIP"), "{e}");
    // No router has these: a session there would try and fail for ever.
    for nowhere in ["0.0.0.0", "224.0.0.5:179", "255.255.255.255", "127.0.0.1", "[::]:179", "ff02::5", "::1"] {
        let e = error(&fixture("bgppeer.yaml").replace("192.168.100.251:179", &format!("\"{nowhere}\"")));
        assert_eq!(e.field.as_deref(), Some("spec.peerIP"), "{nowhere}: {e}");
        assert!(e.message.contains("is not a unicast address a router can have"), "{nowhere}: {e}");
    }

    // What the router keeps but does not act on is named.
    let peers = resources::parse(&fixture("bgppeer.yaml")).expect("peers");
    assert!(resources::not_followed(&peers[0]).is_empty());
    // The password is read from the node's secrets directory.
    assert!(resources::not_followed(&peers[1]).is_empty());
    let bad = fixture("bgppeer.yaml").replace("key: edge", "key: ../../etc/shadow");
    let e = error(&bad);
    assert_eq!(e.field.as_deref(), Some("spec.password.secretKeyRef.key"), "{e}");

    // The mesh's password, as Calico's documentation sets it; refused with the mesh off, and
    // checked as a peer's is.
    let mesh = "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata:\n  name: default\nspec:\n  logSeverityScreen: Info\n  nodeToNodeMeshEnabled: true\n  nodeMeshPassword:\n    secretKeyRef:\n      name: bgp-secrets\n      key: rr-password\n";
    let c = resources::parse(mesh).expect("Calico's example");
    assert!(resources::not_followed(&c[0]).is_empty(), "{:?}", resources::not_followed(&c[0]));
    let e = error(&mesh.replace("MeshEnabled: true", "MeshEnabled: false"));
    assert_eq!(e.field.as_deref(), Some("spec.nodeMeshPassword"), "{e}");
    assert!(e.message.contains("cannot be set when nodeToNodeMeshEnabled is false"), "{e}");
    let e = error(&mesh.replace("name: bgp-secrets", "name: ../x"));
    assert_eq!(e.field.as_deref(), Some("spec.nodeMeshPassword.secretKeyRef.name"), "{e}");
    let node = resources::parse(&mesh.replace("name: default", "name: node.node-a")).expect("a node's");
    assert!(resources::not_followed(&node[0]).iter().any(|n| n.contains("spec.nodeMeshPassword")));

    // A Node as `calicoctl get node -o yaml` shows one that calico-node registered.
    let node = "apiVersion: projectcalico.org/v3\nkind: Node\nmetadata:\n  name: worker-1\n  resourceVersion: \"1234\"\n  creationTimestamp: \"2026-01-02T03:04:05Z\"\nspec:\n  bgp:\n    ipv4Address: 10.0.1.10/24\n    ipv4IPIPTunnelAddr: 10.244.7.0\n  orchRefs:\n  - nodeName: worker-1\n    orchestrator: k8s\n  wireguard:\n    interfaceIPv4Address: 10.244.7.1\nstatus:\n  podCIDRs:\n  - 10.244.7.0/24\n  wireguardPublicKey: abc=\n";
    let n = resources::parse(node).expect("calicoctl's Node");
    let named = resources::not_followed(&n[0]);
    assert_eq!(named[0], "spec.wireguard (no WireGuard: pod traffic is not encrypted)");
    assert!(named[1].starts_with("spec.bgp.ipv4IPIPTunnelAddr (tunl0 has no address"), "{named:?}");
    assert_eq!(named.len(), 2, "{named:?}");
    // Its tunnel addresses, MACs and addresses are kept, and checked as Calico checks them.
    let more = node.replace("  orchRefs:\n", "  ipv4VXLANTunnelAddr: 10.244.7.1\n  vxlanTunnelMACAddr: 66:a1:b2:c3:d4:e5\n  addresses:\n  - address: 10.0.1.10/24\n    type: CalicoNodeIP\n  orchRefs:\n");
    let n = resources::parse(&more).expect("with tunnel addresses");
    assert_eq!(resources::not_followed(&n[0]).len(), 4, "{:?}", resources::not_followed(&n[0]));
    for (bad, field) in [
        ("ipv4IPIPTunnelAddr: 10.244.7.0\n", "spec.bgp.ipv4IPIPTunnelAddr"),
        ("ipv4VXLANTunnelAddr: 10.244.7.1\n", "spec.ipv4VXLANTunnelAddr"),
        ("vxlanTunnelMACAddr: 66:a1:b2:c3:d4:e5\n", "spec.vxlanTunnelMACAddr"),
        ("address: 10.0.1.10/24\n", "spec.addresses[0].address"),
    ] {
        let (key, _) = bad.split_once(": ").expect("key: value");
        let e = error(&more.replace(bad, &format!("{key}: nonsense\n")));
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.message.contains("\"nonsense\" is not"), "{e}");
    }
    let back = resources::to_yaml(&n);
    assert!(back.contains("orchestrator: k8s") && back.contains("wireguardPublicKey: abc="), "{back}");
    assert!(error(&node.replace("    orchestrator: k8s\n", "    orchestrator: k8s\n    colour: red\n"))
        .message
        .contains("colour"));

    // Calico's newer BGPConfiguration fields: kept, and named where they ask for more.
    let newer = mesh.replace(
        "  logSeverityScreen: Info\n",
        "  logSeverityScreen: Info\n  serviceLoadBalancerAggregation: Enabled\n",
    );
    let c = resources::parse(&newer).expect("aggregation");
    assert!(resources::not_followed(&c[0]).is_empty(), "{:?}", resources::not_followed(&c[0]));
    let newer =
        newer.replace("Aggregation: Enabled\n", "Aggregation: Disabled\n  localWorkloadPeeringIPV4: 169.254.0.179\n");
    let c = resources::parse(&newer).expect("workload peering");
    let named = resources::not_followed(&c[0]);
    assert!(named.iter().any(|n| n.starts_with("spec.serviceLoadBalancerAggregation")), "{named:?}");
    assert!(named.iter().any(|n| n.starts_with("spec.localWorkloadPeeringIPV4")), "{named:?}");
    let e = error(&newer.replace("169.254.0.179", "fe80::179"));
    assert_eq!(e.field.as_deref(), Some("spec.localWorkloadPeeringIPV4"), "{e}");
    let e = error(&newer.replace("Aggregation: Disabled", "Aggregation: Sometimes"));
    assert_eq!(e.field.as_deref(), Some("spec.serviceLoadBalancerAggregation"), "{e}");

    // Calico's newer BGPPeer fields: what runs anyway is taken silently, the rest named.
    let newer = |extra: &str| {
        format!("apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: tor\nspec:\n  peerIP: 192.168.1.1\n  asNumber: 63400\n{extra}")
    };
    let quiet = newer("  restartMode: GracefulRestart\n  birdGatewayMode: Recursive\n  failureDetectionMode: None\n  nextHopMode: Keep\n  keepOriginalNextHop: true\n  password:\n    secretKeyRef:\n      name: bgp-secrets\n      key: tor\n      optional: true\n");
    let p = resources::parse(&quiet).expect("Calico's fields");
    assert!(resources::not_followed(&p[0]).is_empty(), "{:?}", resources::not_followed(&p[0]));
    let loud = newer("  restartMode: LongLivedGracefulRestart\n  birdGatewayMode: DirectIfDirectlyConnected\n  failureDetectionMode: BFDIfDirectlyConnected\n  nextHopMode: Self\n");
    let p = resources::parse(&loud).expect("Calico's fields");
    let named = resources::not_followed(&p[0]);
    for f in ["spec.restartMode", "spec.birdGatewayMode", "spec.failureDetectionMode", "spec.nextHopMode"] {
        assert!(named.iter().any(|n| n.starts_with(f)), "{f}: {named:?}");
    }
    let e = error(&newer("  nextHopMode: Sometimes\n"));
    assert_eq!(e.field.as_deref(), Some("spec.nextHopMode"), "{e}");
    assert!(e.message.contains("Auto or Self or Keep"), "{e}");
    let e = error(&newer("  nextHopMode: Self\n  keepOriginalNextHop: true\n"));
    assert_eq!(e.field.as_deref(), Some("spec.nextHopMode"), "{e}");
    assert_eq!(error(&newer("  restartMode: Never\n")).field.as_deref(), Some("spec.restartMode"));
    let off = fixture("bgppeer.yaml").replace("  ttlSecurity: 1\n", "  ttlSecurity: 1\n  sourceAddress: None\n");
    let off = resources::parse(&off).expect("peers");
    assert!(resources::not_followed(&off[1]).is_empty(), "sourceAddress None is followed");
    let bad = fixture("bgppeer.yaml").replace("  ttlSecurity: 1\n", "  ttlSecurity: 1\n  sourceAddress: Elsewhere\n");
    assert_eq!(error(&bad).field.as_deref(), Some("spec.sourceAddress"));
    let bad = fixture("bgppeer.yaml").replace("  ttlSecurity: 1\n", "  ttlSecurity: 1\n  reachableBy: fd00::1\n");
    let e = error(&bad);
    assert!(e.field.as_deref() == Some("spec.reachableBy") && e.message.contains("peerIP's family"), "{e}");
    let kept = fixture("bgppeer.yaml").replace("  ttlSecurity: 1\n", "  ttlSecurity: 1\n  keepOriginalNextHop: true\n");
    assert!(resources::not_followed(&resources::parse(&kept).expect("peers")[1]).is_empty());

    // Durations as Go writes them, in the seconds BIRD would be given.
    for (from, to, why) in [
        ("maxRestartTime: 2m", "maxRestartTime: 2 minutes", "not a duration"),
        ("maxRestartTime: 2m", "maxRestartTime: 2h", "from 0s to 4095s"),
        ("keepaliveTime: 20s", "keepaliveTime: 500ms", "from 1s to 65535s"),
        ("numAllowedLocalASNumbers: 1", "numAllowedLocalASNumbers: 300", "at most 255"),
    ] {
        let e = error(&fixture("bgppeer.yaml").replace(from, to));
        let field = format!("spec.{}", from.split(':').next().unwrap_or_default());
        assert_eq!((e.document, e.field.as_deref()), (2, Some(field.as_str())), "{e}");
        assert!(e.message.contains(why), "{to}: {e}");
    }
    let e = error(&fixture("bgpconfiguration.yaml").replace("logSeverityScreen: Info", "logSeverityScreen: Loud"));
    assert_eq!(e.field.as_deref(), Some("spec.logSeverityScreen"), "{e}");
    let own = resources::parse(&fixture("bgpconfiguration.yaml").replace("name: default", "name: node.node-a"))
        .expect("a node's own");
    let notes = resources::not_followed(&own[0]);
    assert!(notes.contains(&"spec.asNumber (the default's counts)"), "{notes:?}");
    let e = error(&fixture("bgpconfiguration.yaml").replace("90s", "-90s"));
    assert_eq!(e.field.as_deref(), Some("spec.nodeMeshMaxRestartTime"), "{e}");
    let secs = |t: &str| resources::parse_duration(t).map(|d| d.as_secs_f64());
    assert_eq!(secs("1h30m"), Ok(5400.0));
    assert_eq!(secs("1.5s"), Ok(1.5));
    assert_eq!(secs("2m0.5s"), Ok(120.5));
    assert_eq!(secs("250ms"), Ok(0.25));
    assert_eq!(secs("0"), Ok(0.0));
    for bad in ["", "90", "s", "1.2.3s", "5d", "-1s", "1m 30s", ".s"] {
        assert!(resources::parse_duration(bad).is_err(), "{bad:?}");
    }

    // Calico's peerIP forms: IPv4 or IPv6, a port only with brackets around IPv6.
    let at = |s: &str| datastore::resources::peer_address(s).map(|(a, p)| (a.to_string(), p));
    assert_eq!(at("192.168.100.251:179"), Some(("192.168.100.251".into(), Some(179))));
    assert_eq!(at("[fd00::1]:1179"), Some(("fd00::1".into(), Some(1179))));
    assert_eq!(at("fd00::1:179"), Some(("fd00::1:179".into(), None)), "without brackets, all of it is the address");
    assert_eq!(at("fd00::1"), Some(("fd00::1".into(), None)));
    assert_eq!(at("[fd00::1]"), None);
    let e = error(&fixture("bgppeer.yaml").replace("192.168.100.251:179", "fd00::1]:179"));
    assert_eq!(e.field.as_deref(), Some("spec.peerIP"), "{e}");

    // Selectors: checked, and a peer is a router (peerIP, asNumber) or the nodes a
    // peerSelector picks, not both.
    let rr = "apiVersion: projectcalico.org/v3\nkind: BGPPeer\nmetadata:\n  name: peer-with-route-reflectors\n\
              spec:\n  nodeSelector: all()\n  peerSelector: route-reflector == 'true'\n";
    assert_eq!(resources::parse(rr).expect("Calico's reflector example").len(), 1);
    let e = error(&rr.replace("all()", "all("));
    assert_eq!((e.field.as_deref(), e.line), (Some("spec.nodeSelector"), Some(6)), "{e}");
    let e = error(&format!("{rr}  peerIP: 192.168.100.1\n"));
    assert_eq!(e.field.as_deref(), Some("spec.peerIP"), "{e}");
    assert!(e.message.contains("not with peerSelector"), "{e}");
    let e = error(&format!("{rr}  node: node-a\n"));
    assert_eq!(e.field.as_deref(), Some("spec.nodeSelector"), "{e}");

    let e = error(&fixture("bgppeer.yaml").replace("  asNumber: 64600\n", ""));
    assert_eq!(e.field.as_deref(), Some("spec.asNumber"), "{e}");

    let long = "apiVersion: projectcalico.org/v3\nkind: BGPFilter\nmetadata:\n  name: long\nspec:\n  exportV4:\n  \
                - action: Accept\n    matchOperator: In\n    cidr: 77.0.0.0/16\n    prefixLength:\n      min: 30\n";
    assert!(resources::parse(long).is_ok());
    let e = error(&long.replace("min: 30", "min: 33"));
    assert_eq!(e.field.as_deref(), Some("spec.exportV4[0].prefixLength"), "{e}");

    // A rule's source: RemotePeers is followed; any other value names the field.
    let learned = long.replace("    prefixLength:\n      min: 30\n", "    source: RemotePeers\n");
    let parsed = resources::parse(&learned).expect("source: RemotePeers");
    assert!(resources::not_followed(&parsed[0]).is_empty());
    let e = error(&learned.replace("RemotePeers", "LocalRoutes"));
    assert!(e.to_string().contains("spec.exportV4[0].source: unknown variant `LocalRoutes`"), "{e}");

    let filter = fixture("bgpfilter.yaml").replace("198.51.100.0/24", "2001:db8::/32");
    let e = error(&filter);
    assert_eq!(e.field.as_deref(), Some("spec.importV4[0].cidr"), "{e}");
    assert!(e.message.contains("not an IPv4 prefix"), "{e}");

    let e = error(&fixture("ippool.yaml").replace("kind: IPPool", "kind: IPPoool"));
    assert_eq!((e.line, e.field.as_deref()), (Some(2), Some("kind")), "{e}");
    let e = error(&fixture("ippool.yaml").replace("projectcalico.org/v3", "crd.projectcalico.org/v1"));
    assert_eq!(e.field.as_deref(), Some("apiVersion"), "{e}");
    let e = error(&fixture("ippool.yaml").replace("lab-ipv4-pool", "Lab_Pool"));
    assert_eq!((e.line, e.field.as_deref()), (Some(4), Some("metadata.name")), "{e}");
    let e = error(&fixture("node.json").replace("224.0.0.1", "cluster-1"));
    assert_eq!(e.field.as_deref(), Some("spec.bgp.routeReflectorClusterID"), "{e}");
    let own_as = |n: &str| {
        fixture("node.json")
            .replace("\"routeReflectorClusterID\"", &format!("\"asNumber\": {n}, \"routeReflectorClusterID\""))
    };
    let node = resources::parse(&own_as("64513")).expect("a node in its own AS");
    assert!(resources::not_followed(&node[0]).is_empty());
    assert_eq!(error(&own_as("0")).field.as_deref(), Some("spec.bgp.asNumber"));
    let v6 = |a: &str| {
        fixture("node.json")
            .replace("\"routeReflectorClusterID\"", &format!("\"ipv6Address\": \"{a}\", \"routeReflectorClusterID\""))
    };
    assert!(resources::parse(&v6("fd00:192:168:100::100/64")).is_ok());
    for bad in ["fd00:192:168:100::100", "192.168.100.100/24"] {
        let e = error(&v6(bad));
        assert_eq!(e.field.as_deref(), Some("spec.bgp.ipv6Address"), "{bad}: {e}");
    }
    let e = error("apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: x\nspec:\n  cidr: [unclosed\n");
    assert!(e.line.is_some(), "{e}");
    // Windows (CR LF) and old Mac (CR) line ends read alike, and errors count their lines.
    for end in ["\r\n", "\r"] {
        let text = fixture("ippool.yaml").replace('\n', end);
        assert_eq!(resources::parse(&text).expect(end), resources::parse(&fixture("ippool.yaml")).expect("LF"));
        let e = error(&text.replace("10.244.0.0/16", "10.244.0.300/16"));
        assert_eq!((e.line, e.field.as_deref()), (Some(6), Some("spec.cidr")), "{end:?}: {e}");
        let e = error(&text.replace("  natOutgoing: true", "  natOutgoing: [true"));
        assert!(e.line.is_some_and(|l| l <= text.split(end).count()), "{end:?}: {e}");
    }
}

#[test]
fn kinds_are_read_as_users_type_them() {
    for (s, k) in [
        ("ippool", Kind::IpPool),
        ("IPPools", Kind::IpPool),
        ("bgpconfig", Kind::BgpConfiguration),
        ("bgppeers", Kind::BgpPeer),
        ("BGPFilter", Kind::BgpFilter),
        ("nodes", Kind::Node),
        ("ipreservations", Kind::IpReservation),
        ("IPAMConfiguration", Kind::IpamConfiguration),
        ("ipamconfig", Kind::IpamConfiguration),
        ("workloadendpoints", Kind::WorkloadEndpoint),
        ("wep", Kind::WorkloadEndpoint),
    ] {
        assert_eq!(Kind::parse(s), Some(k), "{s}");
    }
    assert_eq!(Kind::parse("workload"), None);
}
