//! Debezium envelopes: `before`/`after`/`op`/`ts_ms`/`source`, bare or inside the Kafka
//! Connect JSON converter's `{"schema": …, "payload": …}`.

use serde_json::{Map, Value};
use vigil_operators::ChangeOp;

use super::feed::{ChangeSink, Document, FeedParams, change, key_of, row_updated_at, time_of};

/// One envelope into one change.
pub fn parse(
    document: &Document<'_>,
    options: &FeedParams,
    sink: &mut impl ChangeSink,
) -> Result<(), String> {
    let envelope = match document.value.get("payload") {
        Some(Value::Object(payload)) => payload,
        Some(Value::Null) => return Err("a tombstone (null payload): nothing to apply".into()),
        Some(_) => return Err("payload is not an object".into()),
        None => &document.value,
    };
    let op = match envelope.get("op").and_then(Value::as_str) {
        Some("c" | "r") => ChangeOp::Insert,
        Some("u") => ChangeOp::Update,
        Some("d") => ChangeOp::Delete,
        Some("t") => return Err("a truncate event: not a row change; resync the table".into()),
        Some(other) => return Err(format!("unknown op {other:?} (expected c, r, u or d)")),
        None => return Err("no op field: not a Debezium envelope".into()),
    };
    let row = |name: &str| -> Result<Option<&Map<String, Value>>, String> {
        match envelope.get(name) {
            Some(Value::Object(row)) => Ok(Some(row)),
            Some(Value::Null) | None => Ok(None),
            Some(_) => Err(format!("{name} is not an object")),
        }
    };
    let (before, after) = (row("before")?, row("after")?);
    let keyed = match op {
        ChangeOp::Delete => before.ok_or("a delete without before: cannot tell which row")?,
        _ => after.ok_or("an insert or update without after")?,
    };
    let source = envelope.get("source").and_then(Value::as_object);
    let field = |name: &str| source.and_then(|s| s.get(name));
    let text = |name: &str| field(name).and_then(Value::as_str);
    // PostgreSQL names a schema, MySQL a database.
    let table = match (text("schema").or(text("db")), text("table")) {
        (Some(namespace), Some(table)) => format!("{namespace}.{table}"),
        (None, Some(table)) => table.to_owned(),
        _ => options
            .table
            .clone()
            .ok_or("source names no table: give one with --table")?,
    };
    let updated_at = after
        .and_then(|r| row_updated_at(r, options))
        .or_else(|| field("ts_ms").and_then(time_of).filter(|t| *t > 0))
        .or_else(|| envelope.get("ts_ms").and_then(time_of));
    // PostgreSQL gives an LSN, MySQL a binlog file and position.
    let position = match (field("lsn"), text("file"), field("pos")) {
        (Some(lsn), _, _) if !lsn.is_null() => lsn.to_string(),
        (_, Some(file), Some(pos)) => format!("{file}:{pos}"),
        _ => document.origin.clone(),
    };
    let key = key_of(keyed, options.key_columns_of(&table))?;
    sink.change(change(
        options, table, key, op, before, after, updated_at, position,
    ));
    Ok(())
}
