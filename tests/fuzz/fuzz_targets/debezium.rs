//! Fuzzes `vigil_datasets::fuzz::fuzz_debezium`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vigil_datasets::fuzz::fuzz_debezium(data));
