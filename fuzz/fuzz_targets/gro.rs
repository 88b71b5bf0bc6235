//! Any bytes as a batch of frames toward a pod: deciding which to merge and merging them
//! (receive offload, as the workers do) never panics, and a merged super-packet is a valid
//! IPv4 packet whose payload is its segments' payloads in order, whose TCP checksum, once
//! completed as the receiver's kernel would, verifies, and whose header describes it.
//! Input: frames as (length byte, bytes); a frame whose first byte is odd gets its
//! checksums fixed first, so that runs the merge accepts are common.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encap::fuzzing::gro(data));
