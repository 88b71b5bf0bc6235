//! Any bytes as a BGP message: decoding never panics, and whatever decodes survives a round
//! trip through the encoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use bgp::fuzzing;
use bgp::wire::Ctx;

fuzz_target!(|data: &[u8]| {
    let ctx = Ctx::default();
    if let Some(m) = fuzzing::decode_message(data, &ctx) {
        fuzzing::check_round_trip(m, &ctx);
    }
});
