//! Any bytes as a VXLAN packet: see `encap::fuzzing::vxlan_decap` for what must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| encap::fuzzing::vxlan_decap(data));
