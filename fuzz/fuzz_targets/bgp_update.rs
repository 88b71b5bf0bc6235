//! Any bytes as a BGP update: decoding never panics, and whatever decodes encodes back into
//! something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use router::bgp::wire::{self, Ctx, Message};

fuzz_target!(|data: &[u8]| {
    let ctx = Ctx::default();
    if let Some(m) = router::bgp::fuzzing::decode_update(data, &ctx) {
        let bytes = m.to_bytes(&ctx);
        let again = wire::decode(&bytes, &ctx).ok().flatten().map(|(m, _)| m);
        if let (Message::Update(a), Some(Message::Update(b))) = (&m, &again) {
            // Discarded attributes are not re-encoded; compare what is kept.
            assert_eq!(a.attrs, b.attrs);
            assert_eq!(a.nlri, b.nlri);
        } else {
            assert_eq!(Some(m), again);
        }
    }
});
