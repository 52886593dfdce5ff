//! Helpers the test files of this crate share.

pub mod replica;
