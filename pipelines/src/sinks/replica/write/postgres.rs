//! Writing to PostgreSQL and CockroachDB: session-local staging tables set up once per
//! connection, rows new to a table copied straight in, the rest staged and upserted, and the
//! part's position in the same transaction.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::arrays::write_arrays;
use super::copy::Copier;
use super::sql::{column_list, conflict_action, key_columns, upsert_plan};
use crate::connect::pg_tls;
use crate::connect::replica::{connect_postgres, quote_column};
use crate::connect::tables::{Column, ReplicaTable};
use crate::sinks::replica::batch::Batch;

/// How rows reach a PostgreSQL-protocol replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Bulk {
    /// Binary `COPY` on PostgreSQL, arrays on CockroachDB (where `COPY` needs the admin role
    /// and temporary tables are experimental).
    #[default]
    Auto,
    /// Binary `COPY` into session-local staging tables, then `INSERT … SELECT`.
    Copy,
    /// Each column as one array parameter: `INSERT … SELECT … FROM unnest($1, …)`.
    Arrays,
}

impl Bulk {
    /// `auto`, `copy` or `arrays`.
    pub fn parse(text: &str) -> anyhow::Result<Bulk> {
        Ok(match text {
            "auto" => Bulk::Auto,
            "copy" => Bulk::Copy,
            "arrays" => Bulk::Arrays,
            other => anyhow::bail!("replica bulk mode {other:?}: use auto, copy or arrays"),
        })
    }
}

/// Which kind of server a PostgreSQL-protocol replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL.
    Postgres,
    /// CockroachDB.
    Cockroach,
}

/// A PostgreSQL connection with its staging tables.
pub struct PgTarget {
    client: tokio_postgres::Client,
    runtime: Arc<tokio::runtime::Runtime>,
    /// Per table: the statements that stage, upsert and delete.
    statements: HashMap<ReplicaTable, PgStatements>,
    /// The server's kind.
    pub server: Server,
    /// Whether rows travel as array parameters rather than through `COPY`.
    arrays: bool,
    /// Per table: whether the next rows are tried straight into the table (they were new
    /// last time).
    fresh: HashMap<ReplicaTable, bool>,
    /// Batches written.
    batches: u64,
    /// How long a request may wait for the server's answer before the replica is taken as away.
    limit: Duration,
}

/// Batches after which a table whose rows were not all new is tried on the direct path again.
const FRESH_RETRY: u64 = 16;

/// Whether the error is a unique-key violation.
fn is_unique_violation(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
            == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
    })
}

struct PgStatements {
    upsert: String,
    copy_keys: String,
    delete: String,
}

impl PgTarget {
    /// Connects to the server the connection string `text` names, takes `role`, and sets up
    /// the staging tables.
    pub(super) fn connect(
        text: &str,
        role: Option<&str>,
        bulk: Bulk,
        runtime: &Arc<tokio::runtime::Runtime>,
    ) -> anyhow::Result<PgTarget> {
        let mut target = PgTarget {
            client: connect_postgres(text, runtime)?,
            runtime: runtime.clone(),
            statements: HashMap::new(),
            server: Server::Postgres,
            arrays: bulk == Bulk::Arrays,
            fresh: HashMap::new(),
            batches: 0,
            limit: pg_tls::ANSWER_TIMEOUT,
        };
        target.prepare(role)?;
        Ok(target)
    }

    /// Sets how long a request (a whole batch write included) may wait for the answer.
    pub(super) fn set_timeout(&mut self, limit: Duration) {
        self.limit = limit;
    }

    /// Every part's position of `job`.
    pub(super) fn progress(&mut self, job: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = self.runtime.block_on(pg_tls::answer(
            self.limit,
            self.client.query(
                "SELECT part, position FROM vigil_progress WHERE job = $1",
                &[&job],
            ),
        ))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    fn prepare(&mut self, role: Option<&str>) -> anyhow::Result<()> {
        let version: String = self
            .runtime
            .block_on(pg_tls::answer(
                self.limit,
                self.client.query_one("SELECT version()", &[]),
            ))?
            .try_get(0)?;
        if version.contains("CockroachDB") {
            self.server = Server::Cockroach;
            self.arrays = true;
        }
        let mut setup = String::new();
        if let Some(role) = role {
            setup.push_str(&format!("SET ROLE {};\n", quote_column(role)));
        }
        for table in ReplicaTable::ALL {
            if self.arrays {
                // The tables must be there, even though no staging table is made.
                setup.push_str(&format!("SELECT 1 FROM {} LIMIT 0;\n", table.name()));
                continue;
            }
            let name = table.name();
            let all = table.columns();
            let columns: Vec<&Column> = all.iter().collect();
            let keys = key_columns(table);
            let keys: Vec<&Column> = keys.iter().collect();
            let (cols, key_cols) = (column_list(&columns), column_list(&keys));
            let (stage, gone) = (format!("vigil_stage_{name}"), format!("vigil_gone_{name}"));
            // Session-local tables with the replica table's column types and no constraints;
            // emptied at every commit.
            setup.push_str(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS \
                 SELECT {cols} FROM {name} WITH NO DATA;\n\
                 CREATE TEMP TABLE IF NOT EXISTS {gone} ON COMMIT DELETE ROWS AS \
                 SELECT {key_cols} FROM {name} WITH NO DATA;\n"
            ));
            let action = conflict_action(table, &columns, "EXCLUDED");
            let matches: Vec<String> = keys
                .iter()
                .map(|c| {
                    let q = quote_column(&c.name);
                    format!("t.{q} = g.{q}")
                })
                .collect();
            self.statements.insert(
                table,
                PgStatements {
                    upsert: format!(
                        "INSERT INTO {name} ({{cols}}) SELECT {{cols}} FROM {stage} \
                         ON CONFLICT ({key_cols}) DO {action}"
                    ),
                    copy_keys: format!("COPY {gone} ({key_cols}) FROM STDIN (FORMAT binary)"),
                    delete: format!(
                        "DELETE FROM {name} t USING {gone} g WHERE {}",
                        matches.join(" AND ")
                    ),
                },
            );
        }
        self.runtime
            .block_on(pg_tls::answer(
                self.limit,
                self.client.batch_execute(&setup),
            ))
            .context(
                "setting up the replica connection: the vigil tables must exist (apply the \
                 migrations with --replica-migrate, as a user who may create tables) and the \
                 user must be allowed to create temporary tables",
            )?;
        Ok(())
    }

    /// Writes the batch and the part's position in one transaction.
    pub(super) fn write(&mut self, job: &str, batch: &Batch) -> anyhow::Result<()> {
        let runtime = self.runtime.clone();
        let client = &mut self.client;
        let statements = &self.statements;
        let arrays = self.arrays;
        let fresh = &mut self.fresh;
        self.batches += 1;
        let batch_number = self.batches;
        // The whole transaction is bounded: a replica that stops answering half-way (frozen,
        // or a connection dropped without a word) fails the write, and the batch is spilled.
        runtime.block_on(pg_tls::answer(self.limit, async {
            let tx = client.transaction().await?;
            let mut copier = Copier::default();
            for change in &batch.changes {
                if arrays {
                    write_arrays(&tx, change).await?;
                    continue;
                }
                let sql = statements
                    .get(&change.table)
                    .context("a table the connection was not set up for")?;
                if !change.deletes.is_empty() {
                    let keys = key_columns(change.table);
                    let keys: Vec<&Column> = keys.iter().collect();
                    copier
                        .copy(&tx, &sql.copy_keys, &change.deletes, &keys, None)
                        .await?;
                    tx.execute(&sql.delete, &[]).await?;
                }
                if !change.upserts.is_empty() {
                    let all = change.table.columns();
                    let (present, keep, _) = upsert_plan(change, &all, "EXCLUDED");
                    let cols = column_list(&present);
                    // Rows written for the first time (the usual case) go straight into the
                    // table; a key that is there already (a run after a crash, an update)
                    // undoes that and takes the staged upsert.
                    let name = change.table.name();
                    if *fresh.get(&change.table).unwrap_or(&true) {
                        tx.batch_execute("SAVEPOINT vigil_fresh").await?;
                        let copy = format!("COPY {name} ({cols}) FROM STDIN (FORMAT binary)");
                        let copied = copier
                            .copy(&tx, &copy, &change.upserts, &present, keep.as_deref())
                            .await;
                        match copied {
                            Ok(()) => {
                                tx.batch_execute("RELEASE SAVEPOINT vigil_fresh").await?;
                                continue;
                            }
                            Err(error) if is_unique_violation(&error) => {
                                tx.batch_execute("ROLLBACK TO SAVEPOINT vigil_fresh")
                                    .await?;
                                fresh.insert(change.table, false);
                            }
                            Err(error) => return Err(error),
                        }
                    } else if batch_number.is_multiple_of(FRESH_RETRY) {
                        // Try the direct path again now and then: updates come in spells.
                        fresh.insert(change.table, true);
                    }
                    let stage = format!("vigil_stage_{name}");
                    let copy = format!("COPY {stage} ({cols}) FROM STDIN (FORMAT binary)");
                    copier
                        .copy(&tx, &copy, &change.upserts, &present, keep.as_deref())
                        .await?;
                    tx.execute(&sql.upsert.replace("{cols}", &cols), &[])
                        .await?;
                }
            }
            tx.execute(
                "INSERT INTO vigil_progress (job, part, position, updated_at) \
                 VALUES ($1, $2, $3, now()) ON CONFLICT (job, part) DO UPDATE \
                 SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at",
                &[&job, &batch.part, &batch.before],
            )
            .await?;
            tx.commit().await?;
            anyhow::Ok(())
        }))
    }
}
