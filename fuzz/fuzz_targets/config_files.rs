//! Any text as one of the files a user writes: a node config, a lab topology, Calico
//! resources. The first byte picks which; the checks are `lab::fuzzing::config_files`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| lab::fuzzing::config_files(data));
