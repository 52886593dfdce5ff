//! CouchDB `_changes`: a whole response (`{"results": […], "last_seq": …}`) or the rows of a
//! continuous feed (`{"seq", "id", "changes": [{"rev"}], "deleted"}`), deleted documents and
//! conflicts (several leaf revisions, with `style=all_docs`) included.

use serde_json::{Map, Value};
use vigil_operators::ChangeOp;

use super::feed::{ChangeSink, Document, FeedParams, change, row_updated_at};

/// One response or row into changes.
pub fn parse(
    document: &Document<'_>,
    options: &FeedParams,
    sink: &mut impl ChangeSink,
) -> Result<(), String> {
    let value = &document.value;
    if let Some(results) = value.get("results") {
        let rows = results.as_array().ok_or("results is not an array")?;
        for (i, row) in rows.iter().enumerate() {
            let outcome = match row {
                Value::Object(row) => parse_row(row, options, sink),
                _ => Err("a result that is not an object".into()),
            };
            if let Err(reason) = outcome {
                let origin = format!("{}#{i}", document.origin);
                sink.dead_letter(origin, reason, row.to_string().as_bytes());
            }
        }
        if let Some(last) = value.get("last_seq") {
            sink.resolved(&seq_text(last));
        }
        return Ok(());
    }
    if !value.contains_key("id")
        && let Some(last) = value.get("last_seq")
    {
        sink.resolved(&seq_text(last));
        return Ok(());
    }
    parse_row(value, options, sink)
}

fn parse_row(
    row: &Map<String, Value>,
    options: &FeedParams,
    sink: &mut impl ChangeSink,
) -> Result<(), String> {
    let id = row
        .get("id")
        .and_then(Value::as_str)
        .ok_or("a change row without an id")?;
    let seq = row
        .get("seq")
        .map(seq_text)
        .ok_or("a change row without a seq")?;
    let revs: Vec<&str> = row
        .get("changes")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(|r| r.get("rev")?.as_str()).collect())
        .unwrap_or_default();
    let winner = *revs.first().ok_or("a change row without a revision")?;
    let deleted = row.get("deleted").and_then(Value::as_bool).unwrap_or(false);
    let op = if deleted {
        ChangeOp::Delete
    } else if winner.starts_with("1-") {
        ChangeOp::Insert
    } else {
        ChangeOp::Update
    };
    // The document when the feed includes it, else what the row says of it.
    let after = match (deleted, row.get("doc")) {
        (true, _) => None,
        (false, Some(Value::Object(doc))) => Some(doc.clone()),
        (false, _) => {
            let mut stub = Map::new();
            stub.insert("_id".into(), Value::from(id));
            stub.insert("_rev".into(), Value::from(winner));
            Some(stub)
        }
    };
    let after = after.map(|mut doc| {
        // Other leaf revisions are conflicts CouchDB keeps beside the winner.
        if revs.len() > 1 && !doc.contains_key("_conflicts") {
            let others: Vec<Value> = revs[1..].iter().map(|r| Value::from(*r)).collect();
            doc.insert("_conflicts".into(), Value::Array(others));
        }
        doc
    });
    let table = options
        .table
        .clone()
        .ok_or("the feed names no database: give one with --table")?;
    let updated_at = after.as_ref().and_then(|d| row_updated_at(d, options));
    let key = Value::Array(vec![Value::from(id)]).to_string();
    sink.change(change(
        options,
        table,
        key,
        op,
        None,
        after.as_ref(),
        updated_at,
        seq,
    ));
    Ok(())
}

fn seq_text(seq: &Value) -> String {
    match seq {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
