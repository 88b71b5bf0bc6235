//! Any bytes as a super-packet and a segment size: cutting it never panics, every segment is
//! a valid IPv4/TCP packet no longer than headers plus the segment size, and the segments'
//! payloads put end to end are the super-packet's payload. Where the segments may be merged
//! again (receive offload), the merge gives back that payload too.
//! Input: two bytes of segment size (big-endian), then the IPv4 packet.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| encap::fuzzing::gso(data));
