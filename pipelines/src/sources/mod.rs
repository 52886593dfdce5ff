//! Where records come from.
//! - `pg_capture`: PostgreSQL logical decoding slots, for the sync job's following mode.

pub mod files;
pub mod pg_capture;
