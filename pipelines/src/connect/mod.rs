//! Connections to other systems.
//! - `kafka`: Kafka endpoints and their security settings (the consumer is in `sources`, the
//!   producers in `sinks`).
//! - `replica`: SQL replica URLs and connections (SQLite, PostgreSQL, CockroachDB).
//! - `pg_tls`: PostgreSQL connections with TLS as libpq's `sslmode` and `sslrootcert` say.
//! - `tables`: the replica tables and their columns.
//! - `migrations`: the replica schema's migrations and roles.
//! - `column_type`: the allowlist a remote catalogue's column types pass before `--restore` uses them.

pub mod column_type;
pub mod kafka;
pub mod migrations;
pub mod pg_tls;
pub mod replica;
pub mod tables;
