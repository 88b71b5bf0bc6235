//! BGP-4 without I/O: the wire codec (RFC 4271, 4760, 6793, 7911, 7606), the session state
//! machine (RFC 4271 §8), the RIBs with route reflection (RFC 4456).
//!
//! Nothing here opens a socket or reads a clock: time comes in as an argument, and actions
//! come out as values for a driver to carry out (the router's `speaker` module is one).

pub mod fsm;
pub mod policy;
pub mod restart;
pub mod rib;
pub mod speaker;
pub mod wire;

/// Why `asn` cannot be a speaker's AS, or None: 0 is reserved (RFC 7607: an OPEN with it is
/// refused) and 23456 is AS_TRANS, the stand-in for 4-octet numbers (RFC 6793).
pub fn unusable_as(asn: u32) -> Option<&'static str> {
    match asn {
        0 => Some("AS 0 is reserved and refused in an OPEN (RFC 7607); private ASes are 64512-65534"),
        23456 => Some("AS 23456 is AS_TRANS, the stand-in for 4-octet AS numbers (RFC 6793), never a speaker's own"),
        _ => None,
    }
}

/// Entry points for the fuzz targets (`fuzz/`): one per message decoder, each taking raw
/// bytes as the peer would send them.
pub mod fuzzing {
    use super::wire::{self, Ctx, Message, Open, Update};

    /// A body that fits in one message, as the header's length check guarantees on the wire.
    fn fits(body: &[u8]) -> bool {
        body.len() <= wire::MAX_LEN - wire::HEADER_LEN
    }

    /// An OPEN body (after the 19-byte header).
    pub fn decode_open(body: &[u8], _ctx: &Ctx) -> Option<Message> {
        if !fits(body) || body.len() < 10 {
            return None;
        }
        Open::decode(body).ok().map(Message::Open)
    }

    /// An UPDATE body (after the header).
    pub fn decode_update(body: &[u8], ctx: &Ctx) -> Option<Message> {
        if !fits(body) || body.len() < 4 {
            return None;
        }
        Update::decode(body, ctx).ok().map(Message::Update)
    }

    /// What every decoder target checks: a decoded message encodes into bytes that decode to
    /// the same routes and attributes (discarded attributes are not re-encoded).
    pub fn check_round_trip(m: Message, ctx: &Ctx) {
        let bytes = m.to_bytes(ctx);
        let again = wire::decode(&bytes, ctx).ok().flatten().map(|(m, _)| m);
        if let (Message::Update(a), Some(Message::Update(b))) = (&m, &again) {
            assert_eq!(a.attrs, b.attrs);
            assert_eq!(a.nlri, b.nlri);
        } else {
            assert_eq!(Some(m), again);
        }
    }

    /// An UPDATE body from a reflector client and from an eBGP cluster peer, passed on by a
    /// route reflector to clients, non-clients, an eBGP cluster peer and an external peer,
    /// every session carrying IPv4 and IPv6: no panic, and every UPDATE the RIB emits
    /// encodes within 4096 bytes for a 4-octet and a 2-octet peer alike (a receiver must
    /// reset a session that sends it a longer one), IPv6 in MP_REACH_NLRI as well.
    pub fn reexport(body: &[u8]) {
        use crate::rib::{PeerInfo, Rib};
        use std::net::Ipv4Addr;
        let me = Ipv4Addr::new(192, 168, 100, 100);
        let me6 = std::net::Ipv6Addr::new(0xfd00, 0x192, 0x168, 100, 0, 0, 0, 0x100);
        let mut rib = Rib::new(64512, me, Some(Ipv4Addr::new(1, 1, 1, 1)));
        let peers = [
            PeerInfo { rr_client: true, ..PeerInfo::new(Ipv4Addr::new(192, 168, 100, 101), 64512, me) },
            PeerInfo { rr_client: true, ..PeerInfo::new(Ipv4Addr::new(192, 168, 100, 102), 64512, me) },
            PeerInfo::new(Ipv4Addr::new(192, 168, 100, 103), 64512, me),
            PeerInfo::new(Ipv4Addr::new(192, 168, 100, 104), 65010, me),
            PeerInfo { external: true, ..PeerInfo::new(Ipv4Addr::new(192, 168, 100, 1), 65001, me) },
        ];
        for (i, p) in peers.into_iter().enumerate() {
            rib.add_peer(i as u32, PeerInfo { local_addr6: Some(me6), ..p });
            rib.peer_up(i as u32, &[wire::Afi::Ipv4, wire::Afi::Ipv6]);
        }
        for ctx in [Ctx { four_octet_as: true }, Ctx { four_octet_as: false }] {
            let Some(Message::Update(u)) = decode_update(body, &ctx) else { continue };
            for from in [0, 3] {
                let ch = rib.update(from, &u);
                for (_, out) in ch.out {
                    for c in [Ctx { four_octet_as: true }, Ctx { four_octet_as: false }] {
                        let len = Message::Update(out.clone()).to_bytes(&c).len();
                        assert!(len <= wire::MAX_LEN, "{len}-byte UPDATE emitted: {out:?}");
                    }
                }
            }
        }
    }

    /// A whole message with its header, of any type.
    pub fn decode_message(bytes: &[u8], ctx: &Ctx) -> Option<Message> {
        wire::decode(bytes, ctx).ok().flatten().map(|(m, _)| m)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        type Decoder = fn(&[u8], &Ctx) -> Option<Message>;

        /// Replays each target's corpus: no panic, and what decodes survives a round trip.
        #[test]
        fn fuzz_corpora_replay() {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
            let ctx = Ctx::default();
            let targets: [(&str, Decoder); 3] =
                [("bgp_open", decode_open), ("bgp_update", decode_update), ("bgp_message", decode_message)];
            for (name, f) in targets {
                let dir = root.join(name);
                let mut decoded = 0;
                for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
                    let data = std::fs::read(e.path()).expect("corpus file");
                    if let Some(m) = f(&data, &ctx) {
                        check_round_trip(m, &ctx);
                        decoded += 1;
                    }
                }
                assert!(decoded >= 2, "{name}: corpus decodes only {decoded} files");
            }
            // The re-export target replays the UPDATE corpus.
            for e in std::fs::read_dir(root.join("bgp_update")).expect("corpus").flatten() {
                reexport(&std::fs::read(e.path()).expect("corpus file"));
            }
        }

        /// Attributes that fit as received but not once reflected: never emitted whole.
        #[test]
        fn reexport_never_emits_an_oversized_update() {
            use crate::wire::{Attr, AttrValue, Origin, Update};
            for n in [900u32, 1005, 1010, 1015] {
                let u = Update {
                    attrs: vec![
                        Attr::new(AttrValue::Origin(Origin::Igp)),
                        Attr::new(AttrValue::AsPath(vec![])),
                        Attr::new(AttrValue::NextHop(std::net::Ipv4Addr::new(192, 168, 100, 101))),
                        Attr::new(AttrValue::Communities((0..n).collect())),
                    ],
                    nlri: vec!["10.244.2.0/26".parse().expect("net")],
                    ..Default::default()
                };
                let mut body = Vec::new();
                u.encode(&Ctx::default(), &mut body);
                if body.len() + wire::HEADER_LEN <= wire::MAX_LEN {
                    reexport(&body);
                }
                // The same for IPv6: the block and its next hop in MP_REACH_NLRI.
                let mut u6 = u.clone();
                u6.nlri.clear();
                u6.attrs[2] = Attr::new(AttrValue::MpReach {
                    afi: wire::Afi::Ipv6,
                    next_hop: crate::wire::update::NextHopAddr::V6 {
                        global: "fd00:192:168:100::101".parse().expect("addr"),
                        link_local: Some("fe80::1".parse().expect("addr")),
                    },
                    nlri: vec!["fd00:10:244::40/122".parse().expect("net")],
                });
                let mut body = Vec::new();
                u6.encode(&Ctx::default(), &mut body);
                if body.len() + wire::HEADER_LEN <= wire::MAX_LEN {
                    reexport(&body);
                }
            }
        }
    }
}
