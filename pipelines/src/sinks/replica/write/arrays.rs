//! Rows as one array parameter per column (`unnest($1, …)`): SQL that PostgreSQL and
//! CockroachDB both accept, with no staging table.

use arrow::array::{Array, ArrayAccessor};

use super::sql::{column_list, kept_rows, key_columns, upsert_plan};
use super::values::{Values, json_list, project, values};
use crate::connect::tables::{Column, SqlKind};
use crate::sinks::replica::batch::TableChange;

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
pub(super) async fn write_arrays(
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
        let kept = kept_rows(keep.as_deref(), b, rows.num_rows());
        let params: Vec<_> = values.iter().map(|v| array_param(v, &kept)).collect();
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p.as_ref()).collect();
        tx.execute(&sql, &refs).await?;
    }
    Ok(())
}
