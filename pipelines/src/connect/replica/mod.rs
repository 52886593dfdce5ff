//! SQL replicas: PostgreSQL (and CockroachDB, which speaks its protocol) through
//! `tokio-postgres`, and SQLite files through `rusqlite`, the embedded default.
//!
//! Rows travel as JSON objects, keys in column order-independent (sorted) form, so that the
//! same row reads the same from either kind of replica and can be written back by column
//! name: PostgreSQL reads them with `row_to_json` and writes them with
//! `json_populate_recordset` (one statement per batch), SQLite binds them to a prepared
//! `INSERT … ON CONFLICT … DO UPDATE`.
//!
//! # Layout
//! - `url`: where a replica is and which SQL it speaks.
//! - `open`: opening a connection, one way for every user (this module and the replica sink).
//! - `connection`: an open [`Replica`] and the statements every dialect runs alike.
//! - `schema`: a table's columns and primary key, read from the catalogue.
//! - `read`: rows read as JSON objects (all of them, by key, or polled by write time).
//! - `write`: rows upserted, deleted and inserted from JSON objects.
//! - `sql`: SQL text and values: quoting, JSON arrays of rows, SQLite values.

mod connection;
mod open;
mod read;
mod schema;
mod sql;
mod url;
mod write;

pub use connection::Replica;
pub use open::{connect_postgres, open_sqlite};
pub use schema::TableInfo;
pub use sql::{quote, quote_column};
pub use url::{Dialect, ReplicaUrl};

/// A SQLite replica in a temporary directory for unit tests, with the runtime it runs on and
/// the directory, both to be held as long as the replica.
#[cfg(test)]
pub(crate) fn test_sqlite() -> (
    Replica,
    std::sync::Arc<tokio::runtime::Runtime>,
    tempfile::TempDir,
) {
    #![allow(clippy::unwrap_used)]
    let dir = tempfile::tempdir().unwrap();
    let runtime = std::sync::Arc::new(crate::runtime::io::background("test").unwrap());
    let url = ReplicaUrl::Sqlite(dir.path().join("r.db"));
    let replica = Replica::connect(&url, &runtime).unwrap();
    (replica, runtime, dir)
}
