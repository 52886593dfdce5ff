//! `--restore`: a new local replica's tables, created from the remote's columns before the
//! first pass fills them. The remote's column types pass an allowlist before they reach a
//! statement (`connect::column_type`).

use anyhow::Context;
use tracing::info;

use crate::connect::column_type::ColumnType;
use crate::connect::replica::{Dialect, Replica, quote, quote_column};

/// Creates the local table from the remote's columns when it is missing; refuses when it
/// holds rows (a restore builds a new replica, it does not merge into one).
pub(crate) fn restore_table(
    local: &mut Replica,
    remote: &mut Replica,
    table: &str,
    dry_run: bool,
) -> anyhow::Result<()> {
    let info = remote.table(table)?;
    if local.table_exists(table)? {
        let rows = local.query_text(
            &format!("SELECT CAST(count(*) AS TEXT) FROM {}", quote(table)),
            &[],
        )?;
        let count = rows
            .first()
            .and_then(|r| r.first())
            .cloned()
            .flatten()
            .unwrap_or_default();
        anyhow::ensure!(
            count == "0",
            "--restore builds a new local replica, but {table} on {} holds {count} rows: drop \
             it, or sync without --restore",
            local.name()
        );
        return Ok(());
    }
    let columns: Vec<String> = info
        .columns
        .iter()
        .map(|(name, kind)| {
            let kind = portable_type(kind, local.dialect()).with_context(|| {
                format!(
                    "--restore cannot create {table} on {}: column {name:?} has type {kind:?} \
                     on {}, which is not one it maps (integer kinds, numeric, real, double \
                     precision, text, varchar, char, boolean, timestamp, date, time, interval, \
                     bytea, json, jsonb, uuid, arrays and enums as text): create the table, \
                     empty, on the local replica, then restore again",
                    local.name(),
                    remote.name()
                )
            })?;
            Ok(format!("{} {kind}", quote_column(name)))
        })
        .collect::<anyhow::Result<_>>()?;
    let key: Vec<String> = info.key.iter().map(|k| quote_column(k)).collect();
    let sql = format!(
        "CREATE TABLE {} ({}, PRIMARY KEY ({}))",
        quote(table),
        columns.join(", "),
        key.join(", ")
    );
    if dry_run {
        println!("-- would create: {sql}");
        return Ok(());
    }
    local.execute_batch(&sql)?;
    info!(message = "Local table created from the remote's columns.", table, replica = %local.name());
    Ok(())
}

/// A column type of the remote as the local dialect declares it; `None` for a type PostgreSQL
/// would be given that vigil does not know. The remote's text never reaches the statement:
/// PostgreSQL gets the canonical spelling of an allowlisted type, SQLite one of three
/// affinities.
fn portable_type(kind: &str, dialect: Dialect) -> Option<String> {
    match dialect {
        // An unknown type is an error rather than text: a restore builds the twin of the
        // durable replica, and a column quietly changed to text would compare, sort and
        // constrain differently from the remote's without anyone having chosen that.
        Dialect::Postgres => ColumnType::parse(kind).map(ColumnType::postgres),
        // SQLite stores any value under any declared type; the affinity only keeps numbers
        // numbers, so an unknown type is text there, as it always was.
        Dialect::Sqlite => Some(
            if kind.contains("int") || kind.contains("INT") {
                "INTEGER"
            } else if ["double", "real", "numeric", "REAL", "NUMERIC"]
                .iter()
                .any(|t| kind.contains(t))
            {
                "REAL"
            } else {
                "TEXT"
            }
            .into(),
        ),
    }
}
