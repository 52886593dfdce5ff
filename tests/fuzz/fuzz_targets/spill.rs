//! Fuzzes `vigil_pipelines::fuzz::fuzz_spill`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_pipelines::fuzz::fuzz_spill(data));
