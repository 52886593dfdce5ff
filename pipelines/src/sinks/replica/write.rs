//! Writing batches of changes into a replica, each batch in one transaction with its
//! position: PostgreSQL (binary `COPY` into a session-local staging table, then one
//! `INSERT … SELECT … ON CONFLICT … DO UPDATE` per table) and SQLite (prepared multi-row
//! `INSERT … ON CONFLICT … DO UPDATE`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arrow::array::{
    Array, ArrayAccessor, ArrayRef, AsArray, BinaryArray, BooleanArray, Float64Array, Int64Array,
    ListArray, RecordBatch, StringArray, TimestampMillisecondArray,
};
use bytes::{BufMut, Bytes, BytesMut};
use futures::SinkExt;

use crate::connect::tables::{Column, ReplicaTable, SqlKind};
use crate::connect::replica::{ReplicaUrl, quote_column};

/// What one table gets in a batch: keys to delete, then rows to upsert.
#[derive(Clone, Debug)]
pub struct TableChange {
    /// The table.
    pub table: ReplicaTable,
    /// Rows whose key is to be deleted (the key columns are read; others are ignored).
    pub deletes: Vec<RecordBatch>,
    /// Rows to insert or update, by the table's columns' names.
    pub upserts: Vec<RecordBatch>,
}

impl TableChange {
    /// Rows deleted and upserted.
    pub fn rows(&self) -> usize {
        self.deletes
            .iter()
            .chain(&self.upserts)
            .map(RecordBatch::num_rows)
            .sum()
    }
}

/// One transaction's worth: every change a part of a job made before `before`.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Which output of the job (`alerts/0of2`): its progress row.
    pub part: String,
    /// Event time before which the part's output is complete in this batch and those before.
    pub before: i64,
    /// The changes, one per table at most.
    pub changes: Vec<TableChange>,
}

impl Batch {
    /// Rows the batch changes.
    pub fn rows(&self) -> usize {
        self.changes.iter().map(TableChange::rows).sum()
    }
}

/// A column of a batch, read as the kind it is stored as.
enum Values<'a> {
    Text(&'a StringArray),
    Float(&'a Float64Array),
    Int(&'a Int64Array),
    Bool(&'a BooleanArray),
    Timestamp(&'a TimestampMillisecondArray),
    Bytes(&'a BinaryArray),
    Json(&'a ListArray),
}

/// The batch's columns for `columns`, cast to the types the writer reads; a missing nullable
/// column reads as nulls.
fn project(batch: &RecordBatch, columns: &[&Column]) -> anyhow::Result<Vec<ArrayRef>> {
    columns
        .iter()
        .map(|column| {
            let wanted = column.kind.arrow_type();
            match batch.column_by_name(&column.name) {
                Some(array) if array.data_type() == &wanted => Ok(array.clone()),
                Some(array) => arrow::compute::cast(array, &wanted)
                    .with_context(|| format!("column {} as {:?}", column.name, column.kind)),
                None if column.nullable => {
                    Ok(arrow::array::new_null_array(&wanted, batch.num_rows()))
                }
                None => anyhow::bail!("the rows have no column {}", column.name),
            }
        })
        .collect()
}

fn values<'a>(arrays: &'a [ArrayRef], columns: &[&Column]) -> anyhow::Result<Vec<Values<'a>>> {
    arrays
        .iter()
        .zip(columns)
        .map(|(array, column)| {
            let wrong = || anyhow::anyhow!("column {} has an unexpected type", column.name);
            Ok(match column.kind {
                SqlKind::Text => Values::Text(array.as_string_opt().ok_or_else(wrong)?),
                SqlKind::Float => Values::Float(array.as_primitive_opt().ok_or_else(wrong)?),
                SqlKind::Int => Values::Int(array.as_primitive_opt().ok_or_else(wrong)?),
                SqlKind::Bool => Values::Bool(array.as_boolean_opt().ok_or_else(wrong)?),
                SqlKind::Timestamp => {
                    Values::Timestamp(array.as_primitive_opt().ok_or_else(wrong)?)
                }
                SqlKind::Bytes => Values::Bytes(array.as_binary_opt().ok_or_else(wrong)?),
                SqlKind::Json => Values::Json(array.as_list_opt().ok_or_else(wrong)?),
            })
        })
        .collect()
}

/// A list of strings as a JSON array.
fn json_list(list: &ListArray, row: usize, out: &mut Vec<u8>) {
    let items = list.value(row);
    out.push(b'[');
    if let Some(strings) = items.as_string_opt::<i32>() {
        for (i, item) in strings.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let text = serde_json::to_string(item.unwrap_or_default()).unwrap_or_default();
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.push(b']');
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Rows per `COPY` message: a few megabytes, so that encoding and sending overlap.
const COPY_CHUNK_ROWS: usize = 16_384;

/// Appends `rows` of the batch to `buf` in PostgreSQL's binary `COPY` row format.
fn encode_copy_rows(
    values: &[Values<'_>],
    rows: std::ops::Range<usize>,
    keep: Option<&[bool]>,
    buf: &mut BytesMut,
    scratch: &mut Vec<u8>,
) {
    for row in rows {
        if keep.is_some_and(|k| !k[row]) {
            continue;
        }
        buf.put_i16(values.len() as i16);
        for column in values {
            let null = match column {
                Values::Text(a) => a.is_null(row),
                Values::Float(a) => a.is_null(row),
                Values::Int(a) => a.is_null(row),
                Values::Bool(a) => a.is_null(row),
                Values::Timestamp(a) => a.is_null(row),
                Values::Bytes(a) => a.is_null(row),
                Values::Json(a) => a.is_null(row),
            };
            if null {
                buf.put_i32(-1);
                continue;
            }
            match column {
                Values::Text(a) => {
                    let v = a.value(row).as_bytes();
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Values::Float(a) => {
                    buf.put_i32(8);
                    buf.put_f64(a.value(row));
                }
                Values::Int(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row));
                }
                Values::Bool(a) => {
                    buf.put_i32(1);
                    buf.put_u8(u8::from(a.value(row)));
                }
                Values::Timestamp(a) => {
                    buf.put_i32(8);
                    buf.put_i64(a.value(row).saturating_mul(1000) - PG_EPOCH_US);
                }
                Values::Bytes(a) => {
                    let v = a.value(row);
                    buf.put_i32(v.len() as i32);
                    buf.put_slice(v);
                }
                Values::Json(a) => {
                    scratch.clear();
                    json_list(a, row, scratch);
                    // jsonb's binary form: a version byte, then the text.
                    buf.put_i32(scratch.len() as i32 + 1);
                    buf.put_u8(1);
                    buf.put_slice(scratch);
                }
            }
        }
    }
}

/// Which rows to keep so that every key appears once, the last occurrence winning; `None`
/// when every key is distinct already (the usual case). Only single text keys can repeat:
/// telemetry replayed with the same event id.
fn last_per_key(batches: &[RecordBatch], key: &str) -> Option<Vec<Vec<bool>>> {
    let keys: Vec<&StringArray> = batches
        .iter()
        .filter_map(|b| b.column_by_name(key).and_then(|c| c.as_string_opt::<i32>()))
        .collect();
    if keys.len() != batches.len() {
        return None;
    }
    let total: usize = keys.iter().map(|k| k.len()).sum();
    let mut seen: HashSet<&str> = HashSet::with_capacity(total);
    let mut keep: Vec<Vec<bool>> = keys.iter().map(|k| vec![true; k.len()]).collect();
    let mut repeated = false;
    for (b, column) in keys.iter().enumerate().rev() {
        for row in (0..column.len()).rev() {
            if !seen.insert(column.value(row)) {
                keep[b][row] = false;
                repeated = true;
            }
        }
    }
    repeated.then_some(keep)
}

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

/// An open connection that writes batches.
pub enum Target {
    /// PostgreSQL or CockroachDB.
    Postgres(PgTarget),
    /// SQLite.
    Sqlite(SqliteTarget),
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

/// A SQLite connection.
pub struct SqliteTarget {
    conn: rusqlite::Connection,
}

/// Rows per SQLite multi-row statement.
const SQLITE_ROWS: usize = 128;

impl Target {
    /// Connects to the replica (and, on PostgreSQL, takes `role` and sets up the staging
    /// tables, which are temporary: the schema is not changed).
    pub fn connect(
        url: &ReplicaUrl,
        role: Option<&str>,
        bulk: Bulk,
        runtime: &Arc<tokio::runtime::Runtime>,
    ) -> anyhow::Result<Target> {
        match url {
            ReplicaUrl::Postgres(text) => {
                let (client, connection) = runtime
                    .block_on(crate::connect::pg_tls::connect(text))
                    .with_context(|| format!("connecting to the replica {}", url.redacted()))?;
                runtime.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(message = "The replica connection ended.", %error);
                    }
                });
                let mut target = PgTarget {
                    client,
                    runtime: runtime.clone(),
                    statements: HashMap::new(),
                    server: Server::Postgres,
                    arrays: bulk == Bulk::Arrays,
                    fresh: HashMap::new(),
                    batches: 0,
                    limit: crate::connect::pg_tls::ANSWER_TIMEOUT,
                };
                if let Some(sql) = crate::connect::pg_tls::session_setup(text)? {
                    runtime
                        .block_on(crate::connect::pg_tls::answer(
                            target.limit,
                            target.client.batch_execute(&sql),
                        ))
                        .context("setting the replica's statement timeout")?;
                }
                target.prepare(role)?;
                Ok(Target::Postgres(target))
            }
            ReplicaUrl::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                let conn = rusqlite::Connection::open(path)
                    .with_context(|| format!("opening the replica {}", url.redacted()))?;
                conn.pragma_update(None, "journal_mode", "WAL")?;
                // Every commit is on disk before it returns: its position may be relied on.
                conn.pragma_update(None, "synchronous", "FULL")?;
                conn.busy_timeout(std::time::Duration::from_secs(30))?;
                // The key index of a large table stays in memory: 64 MiB of page cache.
                conn.pragma_update(None, "cache_size", -65_536)?;
                Ok(Target::Sqlite(SqliteTarget { conn }))
            }
        }
    }

    /// Sets how long a request (a whole batch write included) may wait for a PostgreSQL
    /// replica's answer; after that the write fails as if the replica were away.
    pub fn set_timeout(&mut self, limit: Duration) {
        if let Target::Postgres(pg) = self {
            pg.limit = limit;
        }
    }

    /// Every part's position of `job`.
    pub fn progress(&mut self, job: &str) -> anyhow::Result<Vec<(String, i64)>> {
        const SQL: &str = "SELECT part, position FROM vigil_progress WHERE job = $1";
        match self {
            Target::Postgres(pg) => {
                let rows = pg.runtime.block_on(crate::connect::pg_tls::answer(
                    pg.limit,
                    pg.client.query(SQL, &[&job]),
                ))?;
                rows.iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                    .collect()
            }
            Target::Sqlite(lite) => {
                let mut statement = lite.conn.prepare(&SQL.replace('$', "?"))?;
                let rows = statement.query_map([job], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            }
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

/// The columns of `table` the writer fills: `payload` only when payloads are replicated.
pub fn written_columns(table: ReplicaTable, payload: bool) -> Vec<Column> {
    table
        .columns()
        .into_iter()
        .filter(|c| payload || c.name != "payload" || table != ReplicaTable::TelemetryMeta)
        .collect()
}

fn column_list(columns: &[&Column]) -> String {
    columns
        .iter()
        .map(|c| quote_column(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"c" = EXCLUDED."c", …` for every column not in the key (`excluded` on SQLite).
fn set_list(table: ReplicaTable, columns: &[&Column], excluded: &str) -> String {
    let set: Vec<String> = columns
        .iter()
        .filter(|c| !table.key().contains(&c.name.as_str()))
        .map(|c| {
            let q = quote_column(&c.name);
            format!("{q} = {excluded}.{q}")
        })
        .collect();
    if set.is_empty() {
        // Every column is in the key: nothing to update, yet the row must stay.
        return String::new();
    }
    set.join(", ")
}

/// What an upsert of a change writes: the table's columns its rows have (a nullable one they
/// lack stays as it is), which rows to keep so that each key comes once, and what a conflict
/// does (`excluded` names the proposed row: `EXCLUDED` or SQLite's `excluded`).
fn upsert_plan<'a>(
    change: &TableChange,
    all: &'a [Column],
    excluded: &str,
) -> (Vec<&'a Column>, Option<Vec<Vec<bool>>>, String) {
    let present: Vec<&Column> = all
        .iter()
        .filter(|c| !c.nullable || change.upserts[0].column_by_name(&c.name).is_some())
        .collect();
    let keep = match change.table.key() {
        [key] => last_per_key(&change.upserts, key),
        _ => None,
    };
    let set = set_list(change.table, &present, excluded);
    let action = if set.is_empty() {
        "NOTHING".to_owned()
    } else {
        format!("UPDATE SET {set}")
    };
    (present, keep, action)
}

fn key_columns(table: ReplicaTable) -> Vec<Column> {
    table
        .columns()
        .into_iter()
        .filter(|c| table.key().contains(&c.name.as_str()))
        .collect()
}

impl PgTarget {
    fn prepare(&mut self, role: Option<&str>) -> anyhow::Result<()> {
        let version: String = self
            .runtime
            .block_on(crate::connect::pg_tls::answer(
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
            let set = set_list(table, &columns, "EXCLUDED");
            let action = if set.is_empty() {
                "NOTHING".to_owned()
            } else {
                format!("UPDATE SET {set}")
            };
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
            .block_on(crate::connect::pg_tls::answer(
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

    fn write(&mut self, job: &str, batch: &Batch) -> anyhow::Result<()> {
        let runtime = self.runtime.clone();
        let client = &mut self.client;
        let statements = &self.statements;
        let arrays = self.arrays;
        let fresh = &mut self.fresh;
        self.batches += 1;
        let batch_number = self.batches;
        // The whole transaction is bounded: a replica that stops answering half-way (frozen,
        // or a connection dropped without a word) fails the write, and the batch is spilled.
        runtime.block_on(crate::connect::pg_tls::answer(self.limit, async {
            let tx = client.transaction().await?;
            let mut buf = BytesMut::new();
            let mut scratch = Vec::new();
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
                    copy_in(
                        &tx,
                        &sql.copy_keys,
                        &change.deletes,
                        &keys,
                        None,
                        &mut buf,
                        &mut scratch,
                    )
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
                        match copy_in(
                            &tx,
                            &copy,
                            &change.upserts,
                            &present,
                            keep.as_deref(),
                            &mut buf,
                            &mut scratch,
                        )
                        .await
                        {
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
                    copy_in(
                        &tx,
                        &copy,
                        &change.upserts,
                        &present,
                        keep.as_deref(),
                        &mut buf,
                        &mut scratch,
                    )
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

/// The values of `rows` of a column, null where the column is null.
fn picked<A: ArrayAccessor>(array: A, rows: &[usize]) -> Vec<Option<A::Item>> {
    rows.iter()
        .map(|&r| array.is_valid(r).then(|| array.value(r)))
        .collect()
}

/// One column of rows as an array parameter.
fn array_param<'a>(
    values: &'a Values<'a>,
    rows: &[usize],
) -> Box<dyn tokio_postgres::types::ToSql + Sync + 'a> {
    match values {
        Values::Text(a) => Box::new(picked(*a, rows)),
        Values::Float(a) => Box::new(picked(*a, rows)),
        Values::Int(a) => Box::new(picked(*a, rows)),
        Values::Bool(a) => Box::new(picked(*a, rows)),
        Values::Timestamp(a) => Box::new(
            rows.iter()
                .map(|&r| {
                    a.is_valid(r).then(|| {
                        let ms = a.value(r);
                        let at = std::time::Duration::from_millis(ms.unsigned_abs());
                        if ms >= 0 {
                            std::time::UNIX_EPOCH + at
                        } else {
                            std::time::UNIX_EPOCH - at
                        }
                    })
                })
                .collect::<Vec<_>>(),
        ),
        Values::Bytes(a) => Box::new(picked(*a, rows)),
        Values::Json(a) => Box::new(
            rows.iter()
                .map(|&r| {
                    a.is_valid(r).then(|| {
                        let mut text = Vec::new();
                        json_list(a, r, &mut text);
                        String::from_utf8_lossy(&text).into_owned()
                    })
                })
                .collect::<Vec<_>>(),
        ),
    }
}

/// `unnest($1::T[], …) AS u(c1, …)` and the select list that reads it as the columns' types.
fn unnest(columns: &[&Column]) -> (String, String) {
    let arrays: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let kind = match c.kind {
                SqlKind::Json => "TEXT",
                other => other.postgres(),
            };
            format!("${}::{kind}[]", i + 1)
        })
        .collect();
    let names: Vec<String> = (1..=columns.len()).map(|i| format!("c{i}")).collect();
    let select: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| match c.kind {
            SqlKind::Json => format!("CAST(u.c{} AS JSONB)", i + 1),
            _ => format!("u.c{}", i + 1),
        })
        .collect();
    (
        format!("unnest({}) AS u({})", arrays.join(", "), names.join(", ")),
        select.join(", "),
    )
}

/// Applies one table's change with array parameters: SQL that PostgreSQL and CockroachDB
/// both accept, and no staging table.
async fn write_arrays(
    tx: &tokio_postgres::Transaction<'_>,
    change: &TableChange,
) -> anyhow::Result<()> {
    let table = change.table;
    let keys = key_columns(table);
    let keys: Vec<&Column> = keys.iter().collect();
    for rows in &change.deletes {
        let arrays = project(rows, &keys)?;
        let values = values(&arrays, &keys)?;
        let all: Vec<usize> = (0..rows.num_rows()).collect();
        let params: Vec<_> = values.iter().map(|v| array_param(v, &all)).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        let (from, select) = unnest(&keys);
        let sql = format!(
            "DELETE FROM {} WHERE ({}) IN (SELECT {select} FROM {from})",
            table.name(),
            column_list(&keys)
        );
        tx.execute(&sql, &refs).await?;
    }
    if change.upserts.is_empty() {
        return Ok(());
    }
    let all = table.columns();
    let (present, keep, action) = upsert_plan(change, &all, "EXCLUDED");
    let (from, select) = unnest(&present);
    let sql = format!(
        "INSERT INTO {} ({}) SELECT {select} FROM {from} ON CONFLICT ({}) DO {action}",
        table.name(),
        column_list(&present),
        column_list(&keys)
    );
    for (b, rows) in change.upserts.iter().enumerate() {
        let arrays = project(rows, &present)?;
        let values = values(&arrays, &present)?;
        let kept: Vec<usize> = (0..rows.num_rows())
            .filter(|r| keep.as_ref().is_none_or(|k| k[b][*r]))
            .collect();
        let params: Vec<_> = values.iter().map(|v| array_param(v, &kept)).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        tx.execute(&sql, &refs).await?;
    }
    Ok(())
}

/// Sends the rows' `columns` through `COPY … FROM STDIN (FORMAT binary)`, in chunks.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    statement: &str,
    batches: &[RecordBatch],
    columns: &[&Column],
    keep: Option<&[Vec<bool>]>,
    buf: &mut BytesMut,
    scratch: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let sink = tx.copy_in::<_, Bytes>(statement).await?;
    futures::pin_mut!(sink);
    buf.clear();
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    for (b, batch) in batches.iter().enumerate() {
        let arrays = project(batch, columns)?;
        let values = values(&arrays, columns)?;
        let mut start = 0;
        while start < batch.num_rows() {
            let end = (start + COPY_CHUNK_ROWS).min(batch.num_rows());
            encode_copy_rows(
                &values,
                start..end,
                keep.map(|k| k[b].as_slice()),
                buf,
                scratch,
            );
            start = end;
            if buf.len() >= 1 << 20 {
                sink.send(buf.split().freeze()).await?;
            }
        }
    }
    buf.put_i16(-1);
    sink.send(buf.split().freeze()).await?;
    sink.finish().await?;
    Ok(())
}

impl SqliteTarget {
    fn write(&mut self, job: &str, batch: &Batch) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        let mut scratch = Vec::new();
        for change in &batch.changes {
            let table = change.table;
            if !change.deletes.is_empty() {
                let keys = key_columns(table);
                let keys: Vec<&Column> = keys.iter().collect();
                let clause: Vec<String> = keys
                    .iter()
                    .map(|c| format!("{} = ?", quote_column(&c.name)))
                    .collect();
                let mut statement = tx.prepare_cached(&format!(
                    "DELETE FROM {} WHERE {}",
                    table.name(),
                    clause.join(" AND ")
                ))?;
                for rows in &change.deletes {
                    let arrays = project(rows, &keys)?;
                    let values = values(&arrays, &keys)?;
                    for row in 0..rows.num_rows() {
                        for (i, column) in values.iter().enumerate() {
                            bind(&mut statement, i + 1, column, row, &mut scratch)?;
                        }
                        statement.raw_execute()?;
                    }
                }
            }
            if change.upserts.is_empty() {
                continue;
            }
            let all = table.columns();
            let (present, keep, action) = upsert_plan(change, &all, "excluded");
            let one = format!("({})", vec!["?"; present.len()].join(", "));
            let statement_for = |rows: usize| {
                format!(
                    "INSERT INTO {} ({}) VALUES {} ON CONFLICT ({}) DO {action}",
                    table.name(),
                    column_list(&present),
                    vec![one.as_str(); rows].join(", "),
                    table
                        .key()
                        .iter()
                        .map(|k| quote_column(k))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let (full, single) = (statement_for(SQLITE_ROWS), statement_for(1));
            for (b, rows) in change.upserts.iter().enumerate() {
                let arrays = project(rows, &present)?;
                let values = values(&arrays, &present)?;
                let kept: Vec<usize> = (0..rows.num_rows())
                    .filter(|r| keep.as_ref().is_none_or(|k| k[b][*r]))
                    .collect();
                let mut chunks = kept.chunks_exact(SQLITE_ROWS);
                let mut statement = tx.prepare_cached(&full)?;
                for chunk in chunks.by_ref() {
                    let mut at = 1;
                    for &row in chunk {
                        for column in &values {
                            bind(&mut statement, at, column, row, &mut scratch)?;
                            at += 1;
                        }
                    }
                    statement.raw_execute()?;
                }
                let mut statement = tx.prepare_cached(&single)?;
                for &row in chunks.remainder() {
                    for (i, column) in values.iter().enumerate() {
                        bind(&mut statement, i + 1, column, row, &mut scratch)?;
                    }
                    statement.raw_execute()?;
                }
            }
        }
        tx.execute(
            "INSERT INTO vigil_progress (job, part, position, updated_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (job, part) DO UPDATE SET position = excluded.position, \
             updated_at = excluded.updated_at",
            rusqlite::params![
                job,
                batch.part,
                batch.before,
                chrono::Utc::now().to_rfc3339()
            ],
        )?;
        tx.commit()?;
        Ok(())
    }
}

fn bind(
    statement: &mut rusqlite::CachedStatement<'_>,
    at: usize,
    column: &Values<'_>,
    row: usize,
    scratch: &mut Vec<u8>,
) -> rusqlite::Result<()> {
    use rusqlite::types::Null;
    match column {
        Values::Text(a) if a.is_valid(row) => statement.raw_bind_parameter(at, a.value(row)),
        Values::Float(a) if a.is_valid(row) => statement.raw_bind_parameter(at, a.value(row)),
        Values::Int(a) if a.is_valid(row) => statement.raw_bind_parameter(at, a.value(row)),
        Values::Bool(a) if a.is_valid(row) => statement.raw_bind_parameter(at, a.value(row)),
        Values::Timestamp(a) if a.is_valid(row) => statement.raw_bind_parameter(at, a.value(row)),
        Values::Bytes(a) if a.is_valid(row) => statement.raw_bind_parameter(at, a.value(row)),
        Values::Json(a) if a.is_valid(row) => {
            scratch.clear();
            json_list(a, row, scratch);
            statement.raw_bind_parameter(at, std::str::from_utf8(scratch).unwrap_or("[]"))
        }
        _ => statement.raw_bind_parameter(at, Null),
    }
}

/// A batch as bytes, for the spill: the part, the position, then each change's deletes and
/// upserts as Arrow IPC streams.
pub fn encode_batch(batch: &Batch) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    put_bytes(&mut out, batch.part.as_bytes());
    out.extend_from_slice(&batch.before.to_le_bytes());
    out.extend_from_slice(&(batch.changes.len() as u32).to_le_bytes());
    for change in &batch.changes {
        out.push(change.table.id());
        for rows in [&change.deletes, &change.upserts] {
            out.extend_from_slice(&(rows.len() as u32).to_le_bytes());
            for batch in rows {
                let mut ipc = Vec::new();
                {
                    let mut writer =
                        arrow::ipc::writer::StreamWriter::try_new(&mut ipc, &batch.schema())?;
                    writer.write(batch)?;
                    writer.finish()?;
                }
                put_bytes(&mut out, &ipc);
            }
        }
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads back what [`encode_batch`] wrote.
pub fn decode_batch(bytes: &[u8]) -> anyhow::Result<Batch> {
    let mut at = 0usize;
    let mut take = |n: usize| -> anyhow::Result<&[u8]> {
        let slice = bytes
            .get(at..at + n)
            .context("a spilled replica batch is cut short")?;
        at += n;
        Ok(slice)
    };
    let u32_at = |s: &[u8]| u32::from_le_bytes(s.try_into().unwrap_or_default()) as usize;
    let len = u32_at(take(4)?);
    let part = String::from_utf8_lossy(take(len)?).into_owned();
    let before = i64::from_le_bytes(take(8)?.try_into().unwrap_or_default());
    let count = u32_at(take(4)?);
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let id = take(1)?[0];
        let table = ReplicaTable::from_id(id).context("a spilled batch names an unknown table")?;
        let mut lists: [Vec<RecordBatch>; 2] = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let n = u32_at(take(4)?);
            for _ in 0..n {
                let len = u32_at(take(4)?);
                let ipc = take(len)?;
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)?;
                for batch in reader {
                    list.push(batch?);
                }
            }
        }
        let [deletes, upserts] = lists;
        changes.push(TableChange {
            table,
            deletes,
            upserts,
        });
    }
    Ok(Batch {
        part,
        before,
        changes,
    })
}
