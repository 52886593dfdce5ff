//! The SQL both dialects share: the columns a writer fills, quoted column lists, and what an
//! upsert of a change writes.

use std::collections::HashSet;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};

use crate::connect::replica::quote_column;
use crate::connect::tables::{Column, ReplicaTable};
use crate::sinks::replica::batch::TableChange;

/// The columns of `table` the writer fills: `payload` only when payloads are replicated.
pub fn written_columns(table: ReplicaTable, payload: bool) -> Vec<Column> {
    table
        .columns()
        .into_iter()
        .filter(|c| payload || c.name != "payload" || table != ReplicaTable::TelemetryMeta)
        .collect()
}

/// The columns' names, quoted: `"a", "b"`.
pub(super) fn column_list(columns: &[&Column]) -> String {
    columns
        .iter()
        .map(|c| quote_column(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an upsert does on a key that is there: `UPDATE SET` every column not in the key
/// (`excluded` names the proposed row), or `NOTHING` when every column is in the key.
pub(super) fn conflict_action(table: ReplicaTable, columns: &[&Column], excluded: &str) -> String {
    let set = set_list(table, columns, excluded);
    if set.is_empty() {
        "NOTHING".to_owned()
    } else {
        format!("UPDATE SET {set}")
    }
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
pub(super) fn upsert_plan<'a>(
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
    let action = conflict_action(change.table, &present, excluded);
    (present, keep, action)
}

/// The columns of the table's primary key.
pub(super) fn key_columns(table: ReplicaTable) -> Vec<Column> {
    table
        .columns()
        .into_iter()
        .filter(|c| table.key().contains(&c.name.as_str()))
        .collect()
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

/// The rows of upsert batch `b` (of `rows` rows) that are written: every one, or those `keep`
/// keeps ([`upsert_plan`]).
pub(super) fn kept_rows(keep: Option<&[Vec<bool>]>, b: usize, rows: usize) -> Vec<usize> {
    (0..rows)
        .filter(|r| keep.is_none_or(|k| k[b][*r]))
        .collect()
}
