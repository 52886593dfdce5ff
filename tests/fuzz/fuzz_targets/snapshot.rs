//! Fuzzes `vigil_pipelines::fuzz::fuzz_snapshot`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_pipelines::fuzz::fuzz_snapshot(data));
