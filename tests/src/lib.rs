//! vigil's end-to-end tests live in tests/; this library holds their fixtures.

#[cfg(feature = "archive")]
pub mod archive;
pub mod files;
pub mod kafka;
