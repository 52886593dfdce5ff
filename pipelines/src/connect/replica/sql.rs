//! SQL text and values both dialects share: quoted names, the key columns of a table as lists
//! and matches, rows as one JSON array parameter, JSON values as SQLite stores them and as SQL
//! orders them.

use serde_json::{Map, Value};

use super::schema::TableInfo;

/// `"name"`, quoted for SQL, with a schema prefix quoted apart (`"public"."orders"`).
pub fn quote(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

/// `"name"`, one identifier quoted for SQL.
pub fn quote_column(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table's key columns, quoted: `"a", "b"`.
pub(super) fn key_list(table: &TableInfo) -> String {
    table
        .key
        .iter()
        .map(|k| quote_column(k))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key columns of `left` equal to those of `right`: `t."a" = k."a" AND …`.
pub(super) fn key_match(table: &TableInfo, left: &str, right: &str) -> String {
    table
        .key
        .iter()
        .map(|k| format!("{left}.{0} = {right}.{0}", quote_column(k)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// Rows as one JSON array, the text parameter `json_populate_recordset` reads.
pub(super) fn json_array(rows: &[Map<String, Value>]) -> String {
    Value::Array(rows.iter().cloned().map(Value::Object).collect()).to_string()
}

/// Rows of one `row_to_json(t)::text` column as JSON objects.
pub(super) fn json_rows(rows: &[tokio_postgres::Row]) -> anyhow::Result<Vec<Map<String, Value>>> {
    rows.iter()
        .map(|row| {
            let text: String = row.try_get(0)?;
            match serde_json::from_str(&text)? {
                Value::Object(map) => Ok(map),
                _ => anyhow::bail!("row_to_json gave a non-object"),
            }
        })
        .collect()
}

/// Orders JSON values as SQL orders them: numbers by value, text by bytes, nulls first.
pub(super) fn compare_json(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or(f64::NAN)
            .total_cmp(&y.as_f64().unwrap_or(f64::NAN)),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

/// A JSON value as SQLite stores it: objects and arrays as JSON text.
pub(super) fn sqlite_value(value: Option<&Value>) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match value {
        None | Some(Value::Null) => V::Null,
        Some(Value::Bool(b)) => V::Integer(i64::from(*b)),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => V::Integer(i),
            None => V::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Some(Value::String(s)) => V::Text(s.clone()),
        Some(other) => V::Text(other.to_string()),
    }
}
