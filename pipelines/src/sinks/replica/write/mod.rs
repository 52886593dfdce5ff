//! Writing batches of changes into a replica, each batch in one transaction with its
//! position: PostgreSQL (binary `COPY` into a session-local staging table, then one
//! `INSERT … SELECT … ON CONFLICT … DO UPDATE` per table) and SQLite (prepared multi-row
//! `INSERT … ON CONFLICT … DO UPDATE`).
//!
//! # Layout
//! - `postgres`: PostgreSQL and CockroachDB: staging tables, the direct `COPY` path, progress.
//! - `copy`: rows in PostgreSQL's binary `COPY` format.
//! - `arrays`: rows as array parameters, for CockroachDB (and `--replica-bulk arrays`).
//! - `sqlite`: SQLite: prepared multi-row upserts.
//! - `sql`: the SQL both dialects share: column lists and what an upsert writes.
//! - `values`: a batch's columns read as the kinds the replica stores.

mod arrays;
mod copy;
mod postgres;
mod sql;
mod sqlite;
mod values;

use std::sync::Arc;
use std::time::Duration;

pub use postgres::{Bulk, PgTarget, Server};
pub use sql::written_columns;
pub use sqlite::SqliteTarget;

use crate::connect::replica::ReplicaUrl;
use crate::sinks::replica::batch::Batch;

/// An open connection that writes batches.
pub enum Target {
    /// PostgreSQL or CockroachDB.
    Postgres(PgTarget),
    /// SQLite.
    Sqlite(SqliteTarget),
}

impl Target {
    /// Connects to the replica (and, on PostgreSQL, takes `role` and sets up the staging
    /// tables, which are temporary: the schema is not changed).
    pub fn connect(
        url: &ReplicaUrl,
        role: Option<&str>,
        bulk: Bulk,
        runtime: &Arc<tokio::runtime::Runtime>,
    ) -> anyhow::Result<Target> {
        Ok(match url {
            ReplicaUrl::Postgres(text) => {
                Target::Postgres(PgTarget::connect(text, role, bulk, runtime)?)
            }
            ReplicaUrl::Sqlite(path) => Target::Sqlite(SqliteTarget::open(path)?),
        })
    }

    /// Sets how long a request (a whole batch write included) may wait for a PostgreSQL
    /// replica's answer; after that the write fails as if the replica were away.
    pub fn set_timeout(&mut self, limit: Duration) {
        if let Target::Postgres(pg) = self {
            pg.set_timeout(limit);
        }
    }

    /// Every part's position of `job`.
    pub fn progress(&mut self, job: &str) -> anyhow::Result<Vec<(String, i64)>> {
        match self {
            Target::Postgres(pg) => pg.progress(job),
            Target::Sqlite(lite) => lite.progress(job),
        }
    }

    /// Writes the batch and the part's position in one transaction.
    pub fn write(&mut self, job: &str, batch: &Batch) -> anyhow::Result<()> {
        match self {
            Target::Postgres(pg) => pg.write(job, batch),
            Target::Sqlite(lite) => lite.write(job, batch),
        }
    }
}
