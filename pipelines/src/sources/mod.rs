//! Where records come from.
//! - `kafka`: the Kafka consumer source: partitions spread over the workers, watermarks, commits.
//! - `couchdb`: the CouchDB `_changes` feed read into change metadata.
//! - `pg_capture`: PostgreSQL logical decoding slots, for the sync job's following mode.

pub mod couchdb;
pub mod files;
pub mod kafka;
pub mod pg_capture;
