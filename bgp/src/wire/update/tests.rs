//! UPDATE tests: captured BIRD and GoBGP messages both ways, and one named test per RFC 7606
//! error class.

use super::super::fixtures::*;
use super::super::{decode, Ctx, Message, HEADER_LEN};
use super::*;

fn update(b: &[u8]) -> Update {
    match decode(b, &Ctx::default()) {
        Ok(Some((Message::Update(u), _))) => u,
        other => panic!("not an UPDATE: {other:?}"),
    }
}

fn net4(s: &str) -> Ipv4Net {
    s.parse().expect("net")
}

#[test]
fn bird_v4_update() {
    let u = update(BIRD_UPDATE_V4);
    assert_eq!(u.nlri, vec![net4("10.244.9.0/26")]);
    assert_eq!(u.get(code::ORIGIN), Some(&AttrValue::Origin(Origin::Igp)));
    assert_eq!(u.get(code::AS_PATH), Some(&AttrValue::AsPath(vec![AsSegment::sequence(vec![64512])])));
    assert_eq!(u.get(code::NEXT_HOP), Some(&AttrValue::NextHop(Ipv4Addr::new(10, 0, 0, 1))));
    assert!(!u.treat_as_withdraw);
}

#[test]
fn bird_v6_update_has_a_32_byte_next_hop() {
    let u = update(BIRD_UPDATE_V6);
    let Some(AttrValue::MpReach { afi, next_hop, nlri }) = u.get(code::MP_REACH) else { panic!("no MP_REACH") };
    assert_eq!(*afi, Afi::Ipv6);
    assert_eq!(nlri, &vec!["fd00:9::/64".parse::<IpNet>().expect("net")]);
    let NextHopAddr::V6 { global, link_local: Some(ll) } = next_hop else { panic!("{next_hop:?}") };
    assert_eq!(*global, "fd00::1".parse::<Ipv6Addr>().expect("ip"));
    assert!(ll.segments()[0] == 0xfe80);
}

#[test]
fn gobgp_v6_update_has_a_16_byte_next_hop() {
    let u = update(GOBGP_UPDATE_V6);
    let Some(AttrValue::MpReach { next_hop: NextHopAddr::V6 { link_local: None, .. }, .. }) = u.get(code::MP_REACH)
    else {
        panic!("{u:?}")
    };
}

#[test]
fn end_of_rib_markers_are_recognised_and_built() {
    assert_eq!(update(BIRD_EOR_V4).is_end_of_rib(), Some(Afi::Ipv4));
    assert_eq!(update(BIRD_EOR_V6).is_end_of_rib(), Some(Afi::Ipv6));
    assert_eq!(Message::Update(Update::end_of_rib(Afi::Ipv4)).to_bytes(&Ctx::default()), BIRD_EOR_V4);
    assert_eq!(Message::Update(Update::end_of_rib(Afi::Ipv6)).to_bytes(&Ctx::default()), BIRD_EOR_V6);
    assert_eq!(update(BIRD_UPDATE_V4).is_end_of_rib(), None);
}

#[test]
fn gobgp_withdrawal() {
    let u = update(GOBGP_WITHDRAW);
    assert_eq!(u.withdrawn, vec![net4("10.244.8.0/26")]);
    assert_eq!(u.withdrawn_all(), vec![IpNet::V4(net4("10.244.8.0/26"))]);
}

/// Builds an UPDATE for 10.244.9.0/26 with the given raw attribute bytes.
fn with_attrs(attrs: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&[26, 10, 244, 9, 0]);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(2);
    m.extend_from_slice(&body);
    m
}

const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
const AS_PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfc, 0];
const NEXT_HOP: [u8; 7] = [0x40, 3, 4, 10, 0, 0, 1];

fn good_plus(extra: &[u8]) -> Vec<u8> {
    let mut a = Vec::new();
    a.extend_from_slice(&ORIGIN);
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(&NEXT_HOP);
    a.extend_from_slice(extra);
    with_attrs(&a)
}

fn outcome(b: &[u8]) -> Result<(bool, Vec<u8>), (u8, u8)> {
    match decode(b, &Ctx::default()) {
        Ok(Some((Message::Update(u), _))) => Ok((u.treat_as_withdraw, u.discarded)),
        Ok(other) => panic!("{other:?}"),
        Err(n) => Err((n.code, n.subcode)),
    }
}

#[test]
fn well_formed_baseline_is_accepted() {
    assert_eq!(outcome(&good_plus(&[])), Ok((false, vec![])));
}

#[test]
fn rfc7606_bad_origin_is_treat_as_withdraw() {
    let mut a = vec![0x40, 1, 1, 7];
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(&NEXT_HOP);
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
}

#[test]
fn rfc7606_malformed_as_path_is_treat_as_withdraw() {
    let mut a = ORIGIN.to_vec();
    a.extend_from_slice(&[0x40, 2, 6, 2, 2, 0, 0, 0xfc, 0]); // says 2 ASes, carries 1
    a.extend_from_slice(&NEXT_HOP);
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
}

#[test]
fn rfc7606_bad_next_hop_length_and_value_are_treat_as_withdraw() {
    let mut a = ORIGIN.to_vec();
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(&[0x40, 3, 3, 10, 0, 0]);
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
    let mut a = ORIGIN.to_vec();
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(&[0x40, 3, 4, 0, 0, 0, 0]); // 0.0.0.0
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
}

#[test]
fn rfc7606_bad_med_local_pref_communities_originator_cluster_list_are_treat_as_withdraw() {
    for extra in [
        &[0x80, 4, 3, 0, 0, 1][..],        // MED of 3 bytes
        &[0x40, 5, 2, 0, 1][..],           // LOCAL_PREF of 2 bytes
        &[0xc0, 8, 3, 0, 0, 1][..],        // COMMUNITIES not a multiple of 4
        &[0x80, 9, 2, 1, 1][..],           // ORIGINATOR_ID of 2 bytes
        &[0x80, 10, 5, 1, 1, 1, 1, 1][..], // CLUSTER_LIST not a multiple of 4
    ] {
        assert_eq!(outcome(&good_plus(extra)), Ok((true, vec![])), "{extra:?}");
    }
}

#[test]
fn rfc7606_and_rfc8092_community_lengths_are_checked() {
    let ext = [0xc0, 16, 8, 0, 2, 0xfd, 0xe8, 0, 0, 0, 100];
    let large = [0xc0, 32, 12, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 2];
    // Well formed: carried on (kept as unknown transitive attributes).
    assert_eq!(outcome(&good_plus(&ext)), Ok((false, vec![])));
    assert_eq!(outcome(&good_plus(&large)), Ok((false, vec![])));
    for bad in [
        &[0xc0, 16, 7, 0, 2, 0xfd, 0xe8, 0, 0, 0][..],                    // 7 bytes
        &[0xc0, 16, 0][..],                                               // empty
        &[0xc0, 32, 8, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1][..],                 // 8 bytes
        &[0xc0, 32, 13, 0, 0, 0xfd, 0xe8, 0, 0, 0, 1, 0, 0, 0, 2, 3][..], // 13 bytes
    ] {
        assert_eq!(outcome(&good_plus(bad)), Ok((true, vec![])), "{bad:?}");
    }
}

#[test]
fn rfc7606_bad_atomic_aggregate_and_aggregator_are_discarded() {
    assert_eq!(outcome(&good_plus(&[0x40, 6, 1, 0])), Ok((false, vec![6])));
    assert_eq!(outcome(&good_plus(&[0xc0, 7, 3, 0, 0, 1])), Ok((false, vec![7])));
}

#[test]
fn rfc7606_attribute_flags_error_follows_the_attribute() {
    // ORIGIN marked optional: treat-as-withdraw.
    let mut a = vec![0xc0, 1, 1, 0];
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(&NEXT_HOP);
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
    // MED marked well-known: treat-as-withdraw.
    assert_eq!(outcome(&good_plus(&[0x40, 4, 4, 0, 0, 0, 1])), Ok((true, vec![])));
}

#[test]
fn rfc7606_missing_well_known_attribute_is_treat_as_withdraw() {
    let mut a = ORIGIN.to_vec();
    a.extend_from_slice(&NEXT_HOP);
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
}

#[test]
fn rfc7606_repeated_attribute_is_discarded_but_repeated_mp_reach_resets() {
    assert_eq!(outcome(&good_plus(&[0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2])), Ok((false, vec![4])));
    let mp = [0x80, 15, 3, 0, 2, 1];
    let mut extra = mp.to_vec();
    extra.extend_from_slice(&mp);
    assert_eq!(outcome(&good_plus(&extra)), Err((err::UPDATE, err::MALFORMED_ATTR_LIST)));
}

#[test]
fn rfc7606_malformed_mp_reach_resets_the_session() {
    // AFI 2 with a 5-byte next hop.
    assert_eq!(outcome(&good_plus(&[0x80, 14, 10, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0])).map_err(|e| e.0), Err(err::UPDATE));
}

#[test]
fn rfc7606_attribute_overrunning_the_block_is_treat_as_withdraw() {
    let mut a = ORIGIN.to_vec();
    a.extend_from_slice(&AS_PATH);
    a.extend_from_slice(&[0x40, 3, 9, 10, 0, 0, 1]); // claims 9 bytes, 4 left
    assert_eq!(outcome(&with_attrs(&a)), Ok((true, vec![])));
}

#[test]
fn rfc7606_unrecognized_well_known_attribute_resets() {
    assert_eq!(outcome(&good_plus(&[0x40, 99, 1, 0])), Err((err::UPDATE, err::UNRECOGNIZED_WELL_KNOWN)));
}

#[test]
fn rfc7606_bad_nlri_resets() {
    let mut b = good_plus(&[]);
    let n = b.len();
    b[n - 5] = 33; // prefix length 33
    assert_eq!(outcome(&b), Err((err::UPDATE, err::INVALID_NETWORK)));
}

#[test]
fn unknown_optional_attributes_are_kept_for_transit() {
    let b = good_plus(&[0xc0, 32, 12, 0, 0, 0xfc, 0, 0, 0, 0, 1, 0, 0, 0, 2]); // large community
    let u = update(&b);
    assert!(u
        .attrs
        .iter()
        .any(|a| a.value == AttrValue::Unknown { code: 32, data: vec![0, 0, 0xfc, 0, 0, 0, 0, 1, 0, 0, 0, 2] }));
    assert_eq!(Message::Update(u).to_bytes(&Ctx::default()), b);
}

#[test]
fn two_octet_as_paths_decode_without_the_capability() {
    let ctx = Ctx { four_octet_as: false };
    let u = Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Igp)),
            Attr::new(AttrValue::AsPath(vec![AsSegment::sequence(vec![64512, 65000])])),
            Attr::new(AttrValue::NextHop(Ipv4Addr::new(10, 0, 0, 1))),
        ],
        nlri: vec![net4("10.244.1.0/26")],
        ..Default::default()
    };
    let b = Message::Update(u.clone()).to_bytes(&ctx);
    let Ok(Some((Message::Update(back), _))) = decode(&b, &ctx) else { panic!("decode") };
    assert_eq!(back, u);
}

#[test]
fn all_route_reflection_attributes_round_trip() {
    let u = Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Incomplete)),
            Attr::new(AttrValue::AsPath(vec![])),
            Attr::new(AttrValue::NextHop(Ipv4Addr::new(192, 168, 100, 101))),
            Attr::new(AttrValue::Med(5)),
            Attr::new(AttrValue::LocalPref(100)),
            Attr::new(AttrValue::Communities(vec![0xfc00_0001])),
            Attr::new(AttrValue::OriginatorId(Ipv4Addr::new(192, 168, 100, 101))),
            Attr::new(AttrValue::ClusterList(vec![Ipv4Addr::new(1, 1, 1, 1)])),
        ],
        nlri: vec![net4("10.244.2.0/26")],
        withdrawn: vec![net4("10.244.7.0/26")],
        ..Default::default()
    };
    let b = Message::Update(u.clone()).to_bytes(&Ctx::default());
    assert_eq!(update(&b), u);
}

fn with_path(path: Vec<AsSegment>) -> Update {
    Update {
        attrs: vec![
            Attr::new(AttrValue::Origin(Origin::Igp)),
            Attr::new(AttrValue::AsPath(path)),
            Attr::new(AttrValue::NextHop(Ipv4Addr::new(192, 0, 2, 1))),
        ],
        nlri: vec![net4("198.51.100.0/24")],
        ..Default::default()
    }
}

fn reencode(u: &Update, ctx: &Ctx) -> (Vec<u8>, Update) {
    let bytes = Message::Update(u.clone()).to_bytes(ctx);
    match decode(&bytes, ctx) {
        Ok(Some((Message::Update(u), _))) => (bytes, u),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc6793_four_octet_asns_reach_a_two_octet_peer_as_as_trans_plus_as4_path_and_come_back_whole() {
    let old = Ctx { four_octet_as: false };
    let path = vec![AsSegment::sequence(vec![64512, 4_200_000_001, 65001])];
    let (bytes, back) = reencode(&with_path(path.clone()), &old);
    // On the wire: AS_PATH 64512 23456 65001, then AS4_PATH with the real numbers.
    let trans = [2u8, 3, 0xfc, 0x00, 0x5b, 0xa0, 0xfd, 0xe9];
    assert!(bytes.windows(trans.len()).any(|w| w == trans), "no AS_TRANS path in {bytes:02x?}");
    assert!(bytes.windows(2).any(|w| w == [0xc0, 17]), "no AS4_PATH in {bytes:02x?}");
    assert_eq!(back.get(code::AS_PATH), Some(&AttrValue::AsPath(path)));
    assert!(back.get(code::AS4_PATH).is_none() && back.discarded.is_empty());
    // Only 2-octet ASNs: no AS4_PATH at all.
    let (bytes, _) = reencode(&with_path(vec![AsSegment::sequence(vec![64512, 65001])]), &old);
    assert!(!bytes.windows(2).any(|w| w == [0xc0, 17]));
}

#[test]
fn rfc6793_as4_path_merges_behind_the_asns_it_does_not_cover_and_is_ignored_when_it_cannot_apply() {
    let old = Ctx { four_octet_as: false };
    // A 2-octet speaker prepended 65010 in front of a path whose tail is 4-octet.
    let as_path = AttrValue::AsPath(vec![AsSegment::sequence(vec![65010, 23456, 23456])]);
    let as4 = AttrValue::As4Path(vec![AsSegment::sequence(vec![4_200_000_001, 4_200_000_002])]);
    let mut u = with_path(vec![]);
    u.attrs[1] = Attr::new(as_path.clone());
    u.attrs.push(Attr::new(as4));
    // AS_PATH holds no 4-octet ASN, so the encoder adds no AS4_PATH of its own: the wire
    // carries exactly what the 2-octet speaker sent.
    let mut body = Vec::new();
    u.encode(&Ctx { four_octet_as: false }, &mut body);
    let merged = Update::decode(&body, &old).expect("decodes");
    let want = vec![AsSegment::sequence(vec![65010]), AsSegment::sequence(vec![4_200_000_001, 4_200_000_002])];
    assert_eq!(merged.get(code::AS_PATH), Some(&AttrValue::AsPath(want)));
    // From a 4-octet speaker an AS4_PATH is discarded (RFC 6793 §4.1), as is one longer than
    // AS_PATH.
    let mut body = Vec::new();
    u.encode(&Ctx::default(), &mut body);
    let new = Update::decode(&body, &Ctx::default()).expect("decodes");
    assert_eq!(new.get(code::AS_PATH), Some(&as_path));
    assert!(new.discarded.contains(&code::AS4_PATH));
    let mut long = with_path(vec![AsSegment::sequence(vec![23456])]);
    long.attrs.push(Attr::new(AttrValue::As4Path(vec![AsSegment::sequence(vec![4_200_000_001, 7])])));
    let mut body = Vec::new();
    long.encode(&old, &mut body);
    let u = Update::decode(&body, &old).expect("decodes");
    assert_eq!(u.get(code::AS_PATH), Some(&AttrValue::AsPath(vec![AsSegment::sequence(vec![23456])])));
    assert!(u.discarded.contains(&code::AS4_PATH));
}
