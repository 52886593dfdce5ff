//! What the feed parsers share: the sink changes go to, the options and state a feed is read
//! with, and the row helpers (keys, times, JSON text) a change is made of.

use serde_json::{Map, Value};
use vigil_operators::{Change, ChangeOp};

/// Where a feed's changes go.
pub trait ChangeSink {
    /// One row change.
    fn change(&mut self, change: Change);

    /// The feed says it is complete up to `position` (a CockroachDB `resolved` timestamp, a
    /// wal2json commit, CouchDB's `last_seq`).
    fn resolved(&mut self, position: &str) {
        let _ = position;
    }

    /// A document that is not a change vigil can use, and why.
    fn dead_letter(&mut self, origin: String, reason: String, raw: &[u8]);
}

/// What a feed's documents do not say themselves.
#[derive(Clone, Debug)]
pub struct FeedParams {
    /// The replica the feed is from, stamped on every change's `origin`.
    pub origin: String,
    /// The table, for feeds whose messages do not name it (CockroachDB, CouchDB); else the
    /// name of the recorded file.
    pub table: Option<String>,
    /// The key columns, for rows whose feed does not say which they are.
    pub key_columns: Vec<String>,
    /// Key columns of particular tables (by the name the feed gives them), overriding
    /// `key_columns`.
    pub table_keys: std::collections::BTreeMap<String, Vec<String>>,
    /// The column holding when a row was last written, used for last-writer-wins.
    pub updated_at_column: String,
}

impl Default for FeedParams {
    fn default() -> Self {
        Self {
            origin: "feed".into(),
            table: None,
            key_columns: vec!["id".into()],
            table_keys: Default::default(),
            updated_at_column: "updated_at".into(),
        }
    }
}

impl FeedParams {
    /// The key columns of `table`.
    pub fn key_columns_of(&self, table: &str) -> &[String] {
        let bare = table.rsplit('.').next().unwrap_or(table);
        self.table_keys
            .get(table)
            .or_else(|| self.table_keys.get(bare))
            .unwrap_or(&self.key_columns)
    }
}

/// One document being read: where it is, for positions and dead letters.
pub struct Document<'a> {
    /// The document as parsed.
    pub value: Map<String, Value>,
    /// `SOURCE:LINE` of its first line.
    pub origin: String,
    /// Its text, for dead letters.
    pub raw: &'a [u8],
}

/// State a feed carries from one document to the next (wal2json v2 gives the commit time on
/// the transaction's `B` line only).
#[derive(Default)]
pub struct FeedState {
    /// The commit time of the open transaction, in epoch milliseconds.
    pub transaction_ts: Option<i64>,
}

/// The key of a row: the values of `columns` as a JSON array.
pub fn key_of(row: &Map<String, Value>, columns: &[String]) -> Result<String, String> {
    let values = columns
        .iter()
        .map(|c| {
            row.get(c).cloned().ok_or_else(|| {
                format!("the row has no key column {c}: name the key columns with --key")
            })
        })
        .collect::<Result<Vec<Value>, String>>()?;
    Ok(Value::Array(values).to_string())
}

/// The row as JSON text, keys in order.
pub fn row_text(row: &Map<String, Value>) -> String {
    Value::Object(row.clone()).to_string()
}

/// When the row was last written, from its `updated_at` column, if it has one that reads as
/// a time.
pub(crate) fn row_updated_at(row: &Map<String, Value>, options: &FeedParams) -> Option<i64> {
    row.get(&options.updated_at_column).and_then(time_of)
}

/// A time as feeds write it: epoch seconds, milliseconds, microseconds or nanoseconds (told
/// apart by size), or text (RFC 3339, PostgreSQL's `2024-01-02 03:04:05.678+00`).
pub fn time_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => {
            let v = n.as_f64()?;
            let ms = match v.abs() {
                a if a >= 1e17 => v / 1e6,
                a if a >= 1e14 => v / 1e3,
                a if a >= 1e11 => v,
                _ => v * 1e3,
            };
            vigil_operators::time::check_range(ms.round() as i64)
        }
        Value::String(text) => vigil_operators::time::parse_ts(text).or_else(|| {
            chrono::DateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f%#z")
                .ok()
                .and_then(|t| vigil_operators::time::check_range(t.timestamp_millis()))
        }),
        _ => None,
    }
}

/// A change with the options' origin.
#[allow(clippy::too_many_arguments)]
pub(crate) fn change(
    options: &FeedParams,
    table: String,
    key: String,
    op: ChangeOp,
    before: Option<&Map<String, Value>>,
    after: Option<&Map<String, Value>>,
    updated_at: Option<i64>,
    position: String,
) -> Change {
    Change {
        table,
        key,
        op,
        before: before.map(row_text),
        after: after.map(row_text),
        updated_at,
        origin: options.origin.clone(),
        position,
    }
}

/// Changes and dead letters, collected: for tests and tools.
#[derive(Debug, Default)]
pub struct CollectedChanges {
    /// The changes, in feed order.
    pub changes: Vec<Change>,
    /// Positions the feed said it was complete up to.
    pub resolved: Vec<String>,
    /// (origin, reason) of every dead letter.
    pub dead_letters: Vec<(String, String)>,
}

impl ChangeSink for CollectedChanges {
    fn change(&mut self, change: Change) {
        self.changes.push(change);
    }

    fn resolved(&mut self, position: &str) {
        self.resolved.push(position.to_owned());
    }

    fn dead_letter(&mut self, origin: String, reason: String, _raw: &[u8]) {
        self.dead_letters.push((origin, reason));
    }
}
