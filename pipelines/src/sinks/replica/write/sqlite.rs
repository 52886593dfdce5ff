//! Writing to SQLite: prepared multi-row upserts, and the part's position, in one
//! transaction synced to disk.

use std::path::Path;
use std::time::Duration;

use arrow::array::Array;

use super::sql::{column_list, kept_rows, key_columns, upsert_plan};
use super::values::{Values, json_list, project, values};
use crate::connect::replica::{open_sqlite, quote_column};
use crate::connect::tables::Column;
use crate::sinks::replica::batch::Batch;

/// A SQLite connection.
pub struct SqliteTarget {
    conn: rusqlite::Connection,
}

/// Rows per SQLite multi-row statement.
const SQLITE_ROWS: usize = 128;

impl SqliteTarget {
    /// Opens (or creates) the replica file, every commit synced before it returns.
    pub(super) fn open(path: &Path) -> anyhow::Result<SqliteTarget> {
        let conn = open_sqlite(path, Duration::from_secs(30))?;
        // Every commit is on disk before it returns: its position may be relied on.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // The key index of a large table stays in memory: 64 MiB of page cache.
        conn.pragma_update(None, "cache_size", -65_536)?;
        Ok(SqliteTarget { conn })
    }

    /// Every part's position of `job`.
    pub(super) fn progress(&mut self, job: &str) -> anyhow::Result<Vec<(String, i64)>> {
        let mut statement = self
            .conn
            .prepare("SELECT part, position FROM vigil_progress WHERE job = ?1")?;
        let rows = statement.query_map([job], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Writes the batch and the part's position in one transaction.
    pub(super) fn write(&mut self, job: &str, batch: &Batch) -> anyhow::Result<()> {
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
                let kept = kept_rows(keep.as_deref(), b, rows.num_rows());
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
