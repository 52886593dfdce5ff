//! Fuzzes `vigil_datasets::fuzz::fuzz_cockroach`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_datasets::fuzz::fuzz_cockroach(data));
