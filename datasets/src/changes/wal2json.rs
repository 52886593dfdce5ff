//! wal2json, the PostgreSQL logical decoding plugin: format version 1 (one document per
//! transaction, `{"change": [{"kind", "columnnames", "columnvalues", "oldkeys"}]}`) and format
//! version 2 (one document per action: `B`egin, `I`nsert, `U`pdate, `D`elete, `C`ommit).

use serde_json::{Map, Value};
use vigil_operators::ChangeOp;

use super::feed::{ChangeSink, Document, FeedParams, FeedState, change, row_updated_at, time_of};

/// One document into changes.
pub fn parse(
    document: &Document<'_>,
    options: &FeedParams,
    state: &mut FeedState,
    sink: &mut impl ChangeSink,
) -> Result<(), String> {
    let value = &document.value;
    match value.get("change") {
        Some(Value::Array(changes)) => {
            let committed = value.get("timestamp").and_then(time_of);
            let lsn = value.get("nextlsn").and_then(Value::as_str);
            for (i, item) in changes.iter().enumerate() {
                let position = format!("{}#{i}", lsn.unwrap_or(&document.origin));
                let outcome = match item {
                    Value::Object(item) => version1(item, committed, position)
                        .and_then(|action| action.map_or(Ok(()), |a| emit(a, options, sink))),
                    _ => Err("a change that is not an object".into()),
                };
                if let Err(reason) = outcome {
                    let origin = format!("{}#{i}", document.origin);
                    sink.dead_letter(origin, reason, item.to_string().as_bytes());
                }
            }
            if let Some(lsn) = lsn {
                sink.resolved(lsn);
            }
            Ok(())
        }
        Some(_) => Err("change is not an array".into()),
        None => match version2(document, state, sink)? {
            Some(action) => emit(action, options, sink),
            None => Ok(()),
        },
    }
}

/// A row of names and values as a JSON object.
fn zip_row(names: &[Value], values: &[Value]) -> Result<Map<String, Value>, String> {
    if names.len() != values.len() {
        return Err(format!(
            "{} column names for {} values",
            names.len(),
            values.len()
        ));
    }
    names
        .iter()
        .zip(values)
        .map(|(n, v)| {
            let name = n.as_str().ok_or("a column name that is not text")?;
            Ok((name.to_owned(), v.clone()))
        })
        .collect()
}

/// The text values of an array of names.
fn names(values: &[Value]) -> Vec<String> {
    values
        .iter()
        .filter_map(|n| Some(n.as_str()?.to_owned()))
        .collect()
}

fn array<'a>(item: &'a Map<String, Value>, field: &str) -> &'a [Value] {
    item.get(field)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// One element of a version-1 `change` array; `None` for a logical message.
fn version1(
    item: &Map<String, Value>,
    committed: Option<i64>,
    position: String,
) -> Result<Option<Action>, String> {
    let op = match item.get("kind").and_then(Value::as_str) {
        Some("insert") => ChangeOp::Insert,
        Some("update") => ChangeOp::Update,
        Some("delete") => ChangeOp::Delete,
        Some("message") => return Ok(None),
        other => return Err(format!("unknown kind {other:?}")),
    };
    let after = match op {
        ChangeOp::Delete => None,
        _ => Some(zip_row(
            array(item, "columnnames"),
            array(item, "columnvalues"),
        )?),
    };
    let old = item.get("oldkeys").and_then(Value::as_object);
    let before = old
        .map(|k| zip_row(array(k, "keynames"), array(k, "keyvalues")))
        .transpose()?;
    let pk: Vec<String> = item
        .get("pk")
        .and_then(|pk| pk.get("pknames"))
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |n| names(n));
    // In the identity's own order: a row's map is sorted by name, a key is not.
    let key_names: Vec<String> = match old {
        Some(k) => names(array(k, "keynames")),
        None => pk,
    };
    Ok(Some(Action {
        table: qualified(item)?,
        op,
        before,
        after,
        key_names,
        committed,
        position,
    }))
}

/// One version-2 document: a row action, or `None` for a begin, commit or message (a commit
/// tells `sink` its position).
fn version2(
    document: &Document<'_>,
    state: &mut FeedState,
    sink: &mut impl ChangeSink,
) -> Result<Option<Action>, String> {
    let item = &document.value;
    let action = item
        .get("action")
        .and_then(Value::as_str)
        .ok_or("neither change nor action: not wal2json")?;
    let op = match action {
        "B" => {
            state.transaction_ts = item.get("timestamp").and_then(time_of);
            return Ok(None);
        }
        "C" => {
            if let Some(lsn) = item
                .get("nextlsn")
                .or_else(|| item.get("lsn"))
                .and_then(Value::as_str)
            {
                sink.resolved(lsn);
            }
            state.transaction_ts = None;
            return Ok(None);
        }
        // A logical message is not a row change.
        "M" => return Ok(None),
        "T" => return Err("a truncate: not a row change; resync the table".into()),
        "I" => ChangeOp::Insert,
        "U" => ChangeOp::Update,
        "D" => ChangeOp::Delete,
        other => return Err(format!("unknown action {other:?}")),
    };
    let named = |field: &str| -> Result<Option<Map<String, Value>>, String> {
        let Some(columns) = item.get(field) else {
            return Ok(None);
        };
        let columns = columns
            .as_array()
            .ok_or_else(|| format!("{field} is not an array"))?;
        columns
            .iter()
            .map(|c| {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("a column of {field} without a name"))?;
                Ok((
                    name.to_owned(),
                    c.get("value").cloned().unwrap_or(Value::Null),
                ))
            })
            .collect::<Result<Map<String, Value>, String>>()
            .map(Some)
    };
    let after = match op {
        ChangeOp::Delete => None,
        _ => Some(named("columns")?.ok_or("an insert or update without columns")?),
    };
    let before = named("identity")?;
    // In the identity's (or primary key's) own order: a row's map is sorted by name.
    let column_names = |field: &str| -> Vec<String> {
        item.get(field)
            .and_then(Value::as_array)
            .map(|cols| {
                cols.iter()
                    .filter_map(|c| Some(c.get("name")?.as_str()?.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let key_names = match before {
        Some(_) => column_names("identity"),
        None => column_names("pk"),
    };
    let committed = item
        .get("timestamp")
        .and_then(time_of)
        .or(state.transaction_ts);
    let position = item
        .get("lsn")
        .and_then(Value::as_str)
        .map_or_else(|| document.origin.clone(), str::to_owned);
    Ok(Some(Action {
        table: qualified(item)?,
        op,
        before,
        after,
        key_names,
        committed,
        position,
    }))
}

/// `schema.table` of an action.
fn qualified(item: &Map<String, Value>) -> Result<String, String> {
    let table = item
        .get("table")
        .and_then(Value::as_str)
        .ok_or("no table")?;
    Ok(match item.get("schema").and_then(Value::as_str) {
        Some(schema) => format!("{schema}.{table}"),
        None => table.to_owned(),
    })
}

/// One row action, in either format.
struct Action {
    table: String,
    op: ChangeOp,
    /// The replica identity's old values (the key, or the whole row with `REPLICA IDENTITY
    /// FULL`).
    before: Option<Map<String, Value>>,
    after: Option<Map<String, Value>>,
    /// The key columns, when the feed names them.
    key_names: Vec<String>,
    committed: Option<i64>,
    position: String,
}

fn emit(action: Action, options: &FeedParams, sink: &mut impl ChangeSink) -> Result<(), String> {
    let key_names = if action.key_names.is_empty() {
        options.key_columns_of(&action.table).to_vec()
    } else {
        action.key_names
    };
    let key_of = |row: &Map<String, Value>| super::feed::key_of(row, &key_names);
    let updated_at = action
        .after
        .as_ref()
        .and_then(|r| row_updated_at(r, options))
        .or(action.committed);
    let new_key = action.after.as_ref().map(key_of).transpose()?;
    let old_key = action.before.as_ref().map(key_of).transpose()?;
    // An update that changes the key moves the row: the old key is gone.
    if let (Some(old), Some(new)) = (&old_key, &new_key)
        && old != new
    {
        sink.change(change(
            options,
            action.table.clone(),
            old.clone(),
            ChangeOp::Delete,
            action.before.as_ref(),
            None,
            updated_at,
            action.position.clone(),
        ));
    }
    let key = new_key
        .or(old_key)
        .ok_or("neither the new row nor the old key")?;
    sink.change(change(
        options,
        action.table,
        key,
        action.op,
        action.before.as_ref(),
        action.after.as_ref(),
        updated_at,
        action.position,
    ));
    Ok(())
}
