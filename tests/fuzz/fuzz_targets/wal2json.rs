//! Fuzzes `vigil_datasets::fuzz::fuzz_wal2json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_datasets::fuzz::fuzz_wal2json(data));
