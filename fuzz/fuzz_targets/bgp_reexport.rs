//! Any bytes as an UPDATE that a route reflector passes on to clients, non-clients and
//! external peers: no panic, and no UPDATE it emits is longer than 4096 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bgp::fuzzing::reexport(data));
