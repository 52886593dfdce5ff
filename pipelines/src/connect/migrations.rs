//! Idempotent schema migrations of vigil's own tables, with a tracking table, and the
//! least-privilege roles.
//!
//! Each migration has an id, a name and its SQL for each dialect. `vigil_migrations` records
//! the id, name and SHA-256 of every migration applied, in the same transaction as the
//! migration itself: a migration is applied once, a crash leaves it applied or not at all, and
//! a migration whose SQL changed after it was applied is refused rather than silently skipped.

use anyhow::Context;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::connect::replica::{Dialect, Replica, quote};

/// One schema change.
#[derive(Clone, Copy, Debug)]
pub struct Migration {
    /// Applied in increasing order.
    pub id: u32,
    /// What it does.
    pub name: &'static str,
    /// The SQL on PostgreSQL and CockroachDB.
    pub postgres: &'static str,
    /// The SQL on SQLite.
    pub sqlite: &'static str,
}

impl Migration {
    /// The SQL for `dialect`.
    pub fn sql(&self, dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Postgres => self.postgres,
            Dialect::Sqlite => self.sqlite,
        }
    }

    /// The SHA-256 of the SQL for `dialect`, hex.
    pub fn checksum(&self, dialect: Dialect) -> String {
        hex::encode(Sha256::digest(self.sql(dialect).as_bytes()))
    }
}

/// vigil's migrations, in order. Never edit one that has shipped: add another.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        id: 1,
        name: "sync_agreed: the version of every row both replicas last agreed on",
        postgres: "CREATE TABLE IF NOT EXISTS sync_agreed (\
                   table_name TEXT NOT NULL, row_key TEXT NOT NULL, updated_at BIGINT NOT NULL, \
                   origin TEXT NOT NULL, row_json TEXT, PRIMARY KEY (table_name, row_key))",
        sqlite: "CREATE TABLE IF NOT EXISTS sync_agreed (\
                 table_name TEXT NOT NULL, row_key TEXT NOT NULL, updated_at INTEGER NOT NULL, \
                 origin TEXT NOT NULL, row_json TEXT, PRIMARY KEY (table_name, row_key))",
    },
    Migration {
        id: 2,
        name: "sync_state: the conflict log, both versions of every row both replicas changed",
        postgres: "CREATE TABLE IF NOT EXISTS sync_state (\
                   id BIGSERIAL PRIMARY KEY, table_name TEXT NOT NULL, row_key TEXT NOT NULL, \
                   local_row TEXT, local_updated_at BIGINT, remote_row TEXT, \
                   remote_updated_at BIGINT, winner TEXT NOT NULL, \
                   decided_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        sqlite: "CREATE TABLE IF NOT EXISTS sync_state (\
                 id INTEGER PRIMARY KEY AUTOINCREMENT, table_name TEXT NOT NULL, \
                 row_key TEXT NOT NULL, local_row TEXT, local_updated_at INTEGER, \
                 remote_row TEXT, remote_updated_at INTEGER, winner TEXT NOT NULL, \
                 decided_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    },
    Migration {
        id: 3,
        name: "replica tables: telemetry_meta, alerts, alert_history, patterns, sessions, \
               entanglements, sync_actions, and vigil_progress, each job's position",
        postgres: "CREATE TABLE IF NOT EXISTS vigil_progress (\
                   job TEXT NOT NULL, part TEXT NOT NULL, position BIGINT NOT NULL, \
                   updated_at TIMESTAMPTZ NOT NULL DEFAULT now(), PRIMARY KEY (job, part));\n\
                   CREATE TABLE IF NOT EXISTS telemetry_meta (\
                   event_id TEXT NOT NULL PRIMARY KEY, source TEXT NOT NULL, name TEXT NOT NULL, \
                   ts TIMESTAMPTZ NOT NULL, value DOUBLE PRECISION NOT NULL, key_id TEXT, \
                   payload BYTEA);\n\
                   CREATE TABLE IF NOT EXISTS alerts (\
                   alert_id TEXT NOT NULL PRIMARY KEY, guard TEXT NOT NULL, \
                   severity TEXT NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, \
                   ts TIMESTAMPTZ NOT NULL, window_start TIMESTAMPTZ NOT NULL, \
                   window_end TIMESTAMPTZ NOT NULL, observed DOUBLE PRECISION NOT NULL, \
                   expected DOUBLE PRECISION NOT NULL, score DOUBLE PRECISION NOT NULL, \
                   status TEXT NOT NULL, reaction TEXT NOT NULL);\n\
                   CREATE TABLE IF NOT EXISTS alert_history (\
                   alert_id TEXT NOT NULL, guard TEXT NOT NULL, \
                   severity TEXT NOT NULL, source TEXT NOT NULL, name TEXT NOT NULL, \
                   ts TIMESTAMPTZ NOT NULL, window_start TIMESTAMPTZ NOT NULL, \
                   window_end TIMESTAMPTZ NOT NULL, observed DOUBLE PRECISION NOT NULL, \
                   expected DOUBLE PRECISION NOT NULL, score DOUBLE PRECISION NOT NULL, \
                   status TEXT NOT NULL, reaction TEXT NOT NULL, PRIMARY KEY (alert_id, status));\n\
                   CREATE TABLE IF NOT EXISTS patterns (\
                   pattern_id TEXT NOT NULL PRIMARY KEY, kind TEXT NOT NULL, items JSONB NOT NULL, \
                   support BIGINT NOT NULL, occurrences BIGINT NOT NULL, \
                   first_seen TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL, \
                   sources JSONB NOT NULL);\n\
                   CREATE TABLE IF NOT EXISTS sessions (\
                   \"key\" TEXT NOT NULL, \"start\" TIMESTAMPTZ NOT NULL, \
                   \"end\" TIMESTAMPTZ NOT NULL, participants JSONB NOT NULL, \
                   events BIGINT NOT NULL, \"open\" BOOLEAN NOT NULL, \
                   PRIMARY KEY (\"key\", \"start\"));\n\
                   CREATE TABLE IF NOT EXISTS entanglements (\
                   a TEXT NOT NULL, b TEXT NOT NULL, together BIGINT NOT NULL, \
                   lift_milli BIGINT NOT NULL, since TIMESTAMPTZ NOT NULL, PRIMARY KEY (a, b));\n\
                   CREATE TABLE IF NOT EXISTS sync_actions (\
                   \"table\" TEXT NOT NULL, \"key\" TEXT NOT NULL, action TEXT NOT NULL, \
                   winner_origin TEXT NOT NULL, winner_updated_at TIMESTAMPTZ NOT NULL, \
                   conflict BOOLEAN NOT NULL, reason TEXT NOT NULL, \"row\" TEXT, \
                   PRIMARY KEY (\"table\", \"key\", winner_updated_at, winner_origin, action))",
        sqlite: "CREATE TABLE IF NOT EXISTS vigil_progress (\
                 job TEXT NOT NULL, part TEXT NOT NULL, position INTEGER NOT NULL, \
                 updated_at TEXT NOT NULL, PRIMARY KEY (job, part));\n\
                 CREATE TABLE IF NOT EXISTS telemetry_meta (\
                 event_id TEXT NOT NULL PRIMARY KEY, source TEXT NOT NULL, name TEXT NOT NULL, \
                 ts INTEGER NOT NULL, value REAL NOT NULL, key_id TEXT, payload BLOB) WITHOUT ROWID;\n\
                 CREATE TABLE IF NOT EXISTS alerts (\
                 alert_id TEXT NOT NULL PRIMARY KEY, guard TEXT NOT NULL, severity TEXT NOT NULL, \
                 source TEXT NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL, \
                 window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, \
                 observed REAL NOT NULL, expected REAL NOT NULL, score REAL NOT NULL, \
                 status TEXT NOT NULL, reaction TEXT NOT NULL);\n\
                 CREATE TABLE IF NOT EXISTS alert_history (\
                 alert_id TEXT NOT NULL, guard TEXT NOT NULL, severity TEXT NOT NULL, \
                 source TEXT NOT NULL, name TEXT NOT NULL, ts INTEGER NOT NULL, \
                 window_start INTEGER NOT NULL, window_end INTEGER NOT NULL, \
                 observed REAL NOT NULL, expected REAL NOT NULL, score REAL NOT NULL, \
                 status TEXT NOT NULL, reaction TEXT NOT NULL, PRIMARY KEY (alert_id, status));\n\
                 CREATE TABLE IF NOT EXISTS patterns (\
                 pattern_id TEXT NOT NULL PRIMARY KEY, kind TEXT NOT NULL, items TEXT NOT NULL, \
                 support INTEGER NOT NULL, occurrences INTEGER NOT NULL, \
                 first_seen INTEGER NOT NULL, last_seen INTEGER NOT NULL, sources TEXT NOT NULL);\n\
                 CREATE TABLE IF NOT EXISTS sessions (\
                 \"key\" TEXT NOT NULL, \"start\" INTEGER NOT NULL, \"end\" INTEGER NOT NULL, \
                 participants TEXT NOT NULL, events INTEGER NOT NULL, \"open\" INTEGER NOT NULL, \
                 PRIMARY KEY (\"key\", \"start\"));\n\
                 CREATE TABLE IF NOT EXISTS entanglements (\
                 a TEXT NOT NULL, b TEXT NOT NULL, together INTEGER NOT NULL, \
                 lift_milli INTEGER NOT NULL, since INTEGER NOT NULL, PRIMARY KEY (a, b));\n\
                 CREATE TABLE IF NOT EXISTS sync_actions (\
                 \"table\" TEXT NOT NULL, \"key\" TEXT NOT NULL, action TEXT NOT NULL, \
                 winner_origin TEXT NOT NULL, winner_updated_at INTEGER NOT NULL, \
                 conflict INTEGER NOT NULL, reason TEXT NOT NULL, \"row\" TEXT, \
                 PRIMARY KEY (\"table\", \"key\", winner_updated_at, winner_origin, action))",
    },
];

const TRACKING: &str = "CREATE TABLE IF NOT EXISTS vigil_migrations (\
                        id INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, \
                        applied_at TEXT NOT NULL)";

/// Where a migration stands on a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationState {
    /// Applied, with this SQL.
    Applied,
    /// Not applied yet.
    Pending,
}

/// The migrations and where each stands; fails when an applied one has changed since.
pub fn status(replica: &mut Replica) -> anyhow::Result<Vec<(Migration, MigrationState)>> {
    let dialect = replica.dialect();
    let applied: Vec<(String, String)> = if replica.table_exists("vigil_migrations")? {
        replica
            .query_text(
                "SELECT CAST(id AS TEXT), checksum FROM vigil_migrations",
                &[],
            )?
            .into_iter()
            .map(|row| {
                let mut row = row.into_iter().flatten();
                (
                    row.next().unwrap_or_default(),
                    row.next().unwrap_or_default(),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    MIGRATIONS
        .iter()
        .map(
            |m| match applied.iter().find(|(id, _)| *id == m.id.to_string()) {
                Some((_, checksum)) if *checksum == m.checksum(dialect) => {
                    Ok((*m, MigrationState::Applied))
                }
                Some((_, checksum)) => anyhow::bail!(
                    "migration {} ({}) on {} was applied with other SQL (checksum {checksum}, this \
                     build has {}): restore its original text, or add a new migration instead of \
                     editing one",
                    m.id,
                    m.name,
                    replica.name(),
                    m.checksum(dialect)
                ),
                None => Ok((*m, MigrationState::Pending)),
            },
        )
        .collect()
}

/// Applies the pending migrations, each in one transaction with its tracking row; with
/// `dry_run` only reports them. Returns the pending migrations' names.
pub fn migrate(replica: &mut Replica, dry_run: bool) -> anyhow::Result<Vec<&'static str>> {
    let dialect = replica.dialect();
    let pending: Vec<Migration> = status(replica)?
        .into_iter()
        .filter(|(_, s)| *s == MigrationState::Pending)
        .map(|(m, _)| m)
        .collect();
    if dry_run {
        return Ok(pending.iter().map(|m| m.name).collect());
    }
    if !pending.is_empty() {
        // An index over a large table may rightly take longer than a statement usually may.
        replica.bounded(false)?;
    }
    replica.execute_batch(TRACKING)?;
    for m in &pending {
        let record = format!(
            "INSERT INTO vigil_migrations (id, name, checksum, applied_at) VALUES ({}, '{}', '{}', '{}')",
            m.id,
            m.name.replace('\'', "''"),
            m.checksum(dialect),
            chrono::Utc::now().to_rfc3339()
        );
        replica
            .execute_batch(&format!("{};\n{record};", m.sql(dialect)))
            .with_context(|| {
                format!(
                    "applying migration {} ({}) to {}: if another vigil-sync applied it at the \
                     same time, run again",
                    m.id,
                    m.name,
                    replica.name()
                )
            })?;
        info!(message = "Migration applied.", id = m.id, name = m.name, replica = %replica.name());
    }
    if !pending.is_empty() {
        replica.bounded(true)?;
    }
    Ok(pending.iter().map(|m| m.name).collect())
}

/// The least-privilege roles, on PostgreSQL: `observer_writer` (insert and update on the
/// telemetry tables, no DDL) and `replicator` (read and write the synced tables and sync's
/// own, no DDL). Created only when the connecting user may create roles; otherwise a notice
/// says what an administrator must run. Returns whether they exist now.
pub fn ensure_roles(replica: &mut Replica, synced: &[String]) -> anyhow::Result<bool> {
    if replica.dialect() != Dialect::Postgres {
        return Ok(false);
    }
    let tables: Vec<String> = synced
        .iter()
        .map(|t| quote(t))
        .chain(["sync_agreed".into(), "sync_state".into()])
        .collect();
    let sql = roles_sql(&tables);
    if !may_create_roles(replica)? {
        warn!(
            message = "The connecting user may not create roles; observer_writer and replicator were not created. An administrator can run the statements printed here.",
            replica = %replica.name(),
            sql = %sql
        );
        return Ok(false);
    }
    replica.execute_batch(&sql)?;
    info!(message = "Roles observer_writer and replicator are in place.", replica = %replica.name());
    Ok(true)
}

/// The role the replica sink may connect as, on PostgreSQL: `observer_writer` reads and writes
/// the replica tables' rows and `vigil_progress`, and has no right to create, alter or drop
/// anything. Created (if missing) and granted only when the connecting user may; otherwise a
/// notice says what an administrator must run. Returns whether it is in place.
pub fn ensure_observer_writer(replica: &mut Replica) -> anyhow::Result<bool> {
    if replica.dialect() != Dialect::Postgres {
        return Ok(false);
    }
    let tables: Vec<&str> = crate::connect::tables::ReplicaTable::ALL
        .iter()
        .map(|t| t.name())
        .chain(["vigil_progress"])
        .collect();
    let sql = format!(
        "DO $$ BEGIN CREATE ROLE observer_writer NOLOGIN; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;\n\
         GRANT USAGE ON SCHEMA public TO observer_writer;\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO observer_writer;\n",
        tables.join(", ")
    );
    if !may_create_roles(replica)? {
        warn!(
            message = "The connecting user may not create roles; observer_writer was not set up. An administrator can run the statements printed here.",
            replica = %replica.name(),
            sql = %sql
        );
        return Ok(false);
    }
    replica.execute_batch(&sql)?;
    info!(message = "Role observer_writer is in place.", replica = %replica.name());
    Ok(true)
}

/// Whether the connecting user is a superuser or may create roles.
fn may_create_roles(replica: &mut Replica) -> anyhow::Result<bool> {
    let may = replica.query_text(
        "SELECT CASE WHEN rolsuper OR rolcreaterole THEN 'yes' ELSE 'no' END \
           FROM pg_roles WHERE rolname = current_user",
        &[],
    )?;
    Ok(may
        .first()
        .and_then(|r| r.first())
        .cloned()
        .flatten()
        .as_deref()
        == Some("yes"))
}

/// The statements that create the roles (if missing) and grant them what they need.
fn roles_sql(tables: &[String]) -> String {
    let mut sql = String::new();
    for role in ["observer_writer", "replicator"] {
        sql.push_str(&format!(
            "DO $$ BEGIN CREATE ROLE {role} NOLOGIN; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;\n"
        ));
        sql.push_str(&format!("GRANT USAGE ON SCHEMA public TO {role};\n"));
    }
    let list = tables.join(", ");
    sql.push_str(&format!(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {list} TO replicator;\n\
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO replicator;\n"
    ));
    sql
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::connect::replica::test_sqlite;

    #[test]
    fn migrations_apply_once_and_a_changed_one_is_refused() {
        let (mut replica, _runtime, _dir) = test_sqlite();
        assert_eq!(migrate(&mut replica, true).unwrap().len(), MIGRATIONS.len());
        assert!(
            !replica.table_exists("sync_agreed").unwrap(),
            "a dry run changes nothing"
        );
        assert_eq!(
            migrate(&mut replica, false).unwrap().len(),
            MIGRATIONS.len()
        );
        assert!(replica.table_exists("sync_state").unwrap());
        assert!(
            migrate(&mut replica, false).unwrap().is_empty(),
            "idempotent"
        );

        replica
            .execute_batch("UPDATE vigil_migrations SET checksum = 'edited' WHERE id = 2")
            .unwrap();
        let err = format!("{:#}", migrate(&mut replica, false).unwrap_err());
        assert!(err.contains("other SQL"), "{err}");
    }

    /// The replica tables the migration makes are the ones the writer fills: same columns,
    /// same order, on SQLite (the PostgreSQL text is checked by the replica tests' writes).
    #[test]
    fn the_replica_tables_have_the_writers_columns() {
        let (mut replica, _runtime, _dir) = test_sqlite();
        migrate(&mut replica, false).unwrap();
        for table in crate::connect::tables::ReplicaTable::ALL {
            let names: Vec<String> = replica
                .query_text(
                    &format!("SELECT name FROM pragma_table_info('{}')", table.name()),
                    &[],
                )
                .unwrap()
                .into_iter()
                .map(|row| row.into_iter().flatten().collect())
                .collect();
            let expected: Vec<String> = table.columns().into_iter().map(|c| c.name).collect();
            assert_eq!(names, expected, "{}", table.name());
        }
    }

    #[test]
    fn checksums_are_stable_and_ids_increase() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].id < pair[1].id);
        }
        assert_eq!(MIGRATIONS[0].checksum(Dialect::Sqlite).len(), 64);
    }
}
