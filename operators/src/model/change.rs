//! The `changes` table: one row version from a database's change feed.

use arrow::datatypes::{DataType, FieldRef};
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// What a change did to its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    /// The row was created.
    Insert,
    /// The row was changed (or the feed cannot tell a new row from a changed one).
    Update,
    /// The row was removed; the change is a tombstone.
    Delete,
}

impl ChangeOp {
    /// The name used in the `op` column.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Insert => "insert",
            ChangeOp::Update => "update",
            ChangeOp::Delete => "delete",
        }
    }
}

/// One change of one row, in whatever feed it came from (Debezium, wal2json, CockroachDB
/// changefeeds, CouchDB `_changes`, polling).
///
/// # Examples
/// ```
/// use vigil_operators::{Change, ChangeOp, Record};
///
/// let delete = Change {
///     table: "public.orders".into(),
///     key: "[8]".into(),
///     op: ChangeOp::Delete,
///     before: Some(r#"{"id":8}"#.into()),
///     after: None,
///     updated_at: Some(1_700_000_000_000),
///     origin: "remote".into(),
///     position: "0/16B3748".into(),
/// };
/// assert!(delete.is_delete());
/// assert!(delete.to_json().contains(r#""op":"delete""#));
/// let batch = Change::to_batch(std::slice::from_ref(&delete))?;
/// assert_eq!(Change::from_batch(&batch)?, [delete]);
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Change {
    /// The table, schema-qualified when the feed says (`public.orders`, `inventory.customers`).
    pub table: String,
    /// The row's primary key as a JSON array of its values in key-column order (`[1004]`,
    /// `["seattle","68ee…"]`), so that the same row has the same key in every feed.
    pub key: String,
    /// Insert, update or delete.
    pub op: ChangeOp,
    /// The row before the change as a JSON object, when the feed gives it.
    pub before: Option<String>,
    /// The row after the change as a JSON object; `None` for a delete.
    pub after: Option<String>,
    /// When the row was last written, in epoch milliseconds: the row's own `updated_at` column
    /// when it has one, else the feed's commit time; `None` when neither is known.
    pub updated_at: Option<i64>,
    /// The replica the change was made on; a change that sync applied carries the origin of
    /// the replica it came from, so it is never sent back.
    pub origin: String,
    /// Where the change is in its feed: an LSN, a sequence, an HLC timestamp, a byte offset.
    pub position: String,
}

impl Change {
    /// Whether the change removes the row.
    pub fn is_delete(&self) -> bool {
        self.op == ChangeOp::Delete
    }
}

impl Record for Change {
    const TABLE: &'static str = "changes";

    const DISTINCT_COLUMNS: &'static [&'static str] = &["key", "before", "after", "position"];

    fn fields() -> Vec<FieldRef> {
        vec![
            field("table", DataType::Utf8, false),
            field("key", DataType::Utf8, false),
            field("op", DataType::Utf8, false),
            field("before", DataType::Utf8, true),
            field("after", DataType::Utf8, true),
            ts_field("updated_at", true),
            field("origin", DataType::Utf8, false),
            field("position", DataType::Utf8, false),
        ]
    }

    fn event_time(&self) -> i64 {
        self.updated_at.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn changes_round_trip_through_arrow_and_json() {
        let rows = vec![
            Change {
                table: "public.orders".into(),
                key: "[7]".into(),
                op: ChangeOp::Update,
                before: Some(r#"{"id":7,"qty":1}"#.into()),
                after: Some(r#"{"id":7,"qty":2}"#.into()),
                updated_at: Some(1_700_000_000_123),
                origin: "local".into(),
                position: "0/16B3748".into(),
            },
            Change {
                table: "public.orders".into(),
                key: "[8]".into(),
                op: ChangeOp::Delete,
                before: None,
                after: None,
                updated_at: None,
                origin: "remote".into(),
                position: "42".into(),
            },
        ];
        let batch = Change::to_batch(&rows).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(Change::from_batch(&batch).unwrap(), rows);
        let json = rows[1].to_json();
        assert!(json.contains(r#""op":"delete""#), "{json}");
        assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), rows[1]);
    }
}
