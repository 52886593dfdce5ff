//! CockroachDB changefeed messages: `{"after": …, "key": […], "updated": "HLC"}` (wrapped,
//! optionally with `before` under the `diff` option), rows with a `__crdb__` field (bare), and
//! `{"resolved": "HLC"}` lines. Changefeeds deliver at least once: a row may come twice.

use serde_json::{Map, Value};
use vigil_operators::ChangeOp;

use super::feed::{ChangeSink, Document, FeedParams, change, key_of, row_updated_at};

/// One message into one change, or a resolved position.
pub fn parse(
    document: &Document<'_>,
    options: &FeedParams,
    sink: &mut impl ChangeSink,
) -> Result<(), String> {
    let message = &document.value;
    if let Some(resolved) = message.get("resolved") {
        sink.resolved(&hlc_text(resolved));
        return Ok(());
    }
    let mut after = match message.get("after") {
        Some(Value::Object(row)) => Some(row.clone()),
        Some(Value::Null) => None,
        Some(_) => return Err("after is not an object".into()),
        // The bare envelope: the row is the message, with the metadata in `__crdb__`.
        None if message.contains_key("__crdb__") => Some(message.clone()),
        None => return Err("no after field: not a changefeed message".into()),
    };
    let meta = after
        .as_mut()
        .and_then(|row| row.remove("__crdb__"))
        .or_else(|| message.get("__crdb__").cloned());
    let updated = message
        .get("updated")
        .or_else(|| meta.as_ref().and_then(|m| m.get("updated")))
        .map(hlc_text);
    let before = match message.get("before") {
        Some(Value::Object(row)) => Some(row),
        _ => None,
    };
    let op = match (&after, message.get("before")) {
        (None, _) => ChangeOp::Delete,
        // With the diff option a new row has a null `before`.
        (Some(_), Some(Value::Null)) => ChangeOp::Insert,
        (Some(_), _) => ChangeOp::Update,
    };
    let key = match message
        .get("key")
        .or_else(|| meta.as_ref().and_then(|m| m.get("key")))
    {
        Some(Value::Array(values)) => Value::Array(values.clone()).to_string(),
        Some(_) => return Err("key is not an array".into()),
        None => key_of(
            after.as_ref().or(before).ok_or("a delete without a key")?,
            options.key_columns_of(options.table.as_deref().unwrap_or_default()),
        )?,
    };
    let table = message
        .get("topic")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| options.table.clone())
        .ok_or("the message names no table: give one with --table")?;
    let updated_at = after
        .as_ref()
        .and_then(|r| row_updated_at(r, options))
        .or_else(|| updated.as_deref().and_then(hlc_ms));
    let position = updated.unwrap_or_else(|| document.origin.clone());
    let after: Option<&Map<String, Value>> = after.as_ref();
    sink.change(change(
        options, table, key, op, before, after, updated_at, position,
    ));
    Ok(())
}

fn hlc_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The wall time of an HLC timestamp (`WALLNANOS.LOGICAL`) in milliseconds.
fn hlc_ms(hlc: &str) -> Option<i64> {
    let wall = hlc.split('.').next()?;
    let nanos: i64 = wall.parse().ok()?;
    vigil_operators::time::check_range(nanos / 1_000_000)
}
