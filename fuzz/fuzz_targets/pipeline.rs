//! Any bytes on any interface of either data plane: the pipeline never panics and every span
//! it hands out stays in its buffer, also for super-packets (virtio-net header with a segment
//! size), tunnel routes (IPIP out and in), fragmentation and the tun entry point.
//! Input: a selector byte (bits 0-1: ingress interface; bit 2: the tun node instead of the
//! afpacket one; bit 3: a super-packet, its segment size in the next two bytes), then the
//! frame (the packet, in tun mode).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| forwarding::fuzzing::pipeline(data));
