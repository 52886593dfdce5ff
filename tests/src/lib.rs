//! vigil's end-to-end tests live in tests/; this library holds their fixtures.

#[cfg(feature = "archive")]
pub mod archive;
#[cfg(feature = "archive")]
pub mod couchdb;
#[cfg(feature = "archive")]
pub mod dashboard;
#[cfg(feature = "archive")]
pub mod duckdb;
pub mod files;
#[cfg(feature = "jobs")]
pub mod jobs;
pub mod kafka;
pub mod postgres;
