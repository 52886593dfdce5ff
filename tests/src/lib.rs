//! vigil's end-to-end tests live in tests/; this library holds their fixtures.

#[cfg(feature = "archive")]
pub mod archive;
#[cfg(feature = "archive")]
pub mod couchdb;
pub mod files;
pub mod kafka;
pub mod postgres;
