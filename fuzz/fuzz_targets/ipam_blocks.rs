//! Any bytes as an IPAM block another user of the etcd wrote (Calico's IPAM, a hand): the
//! first byte picks the family. The checks are `datastore::ipam::fuzz_block`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| datastore::ipam::fuzz_block(data));
