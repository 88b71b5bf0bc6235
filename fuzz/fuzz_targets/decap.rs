//! Any bytes as an outer IPIP packet: decapsulation never panics, and what it accepts is a
//! well-formed inner IPv4 packet inside the input.
#![no_main]

use encap::ipip::decapsulate;
use encap::ipv4::Packet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let len = buf.len();
    if let Ok((s, e)) = decapsulate(&mut buf, 0, len) {
        assert!(s <= e && e <= len);
        let inner = Packet::new_checked(&buf[s..e]).expect("accepted inner packet parses");
        assert!(inner.verify_checksum(), "inner checksum stays valid after the ECN merge");
    }
});
