//! Fuzzes `vigil_datasets::fuzz::fuzz_serde_line`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_datasets::fuzz::fuzz_serde_line(data));
