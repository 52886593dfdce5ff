//! The `sessions` table: activity of a room (or a source) with no gap longer than allowed.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef};
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// One session: events of one key (a room, or a source) none further apart than the gap.
///
/// # Examples
/// ```
/// use vigil_operators::{Record, Session};
///
/// let session = Session {
///     key: "room-1".into(),
///     start: 1_000,
///     end: 5_000,
///     participants: vec!["dev-1".into(), "dev-2".into()],
///     events: 4,
///     open: false,
/// };
/// // Partitioned by when it started.
/// assert_eq!(session.event_time(), 1_000);
/// let batch = Session::to_batch(std::slice::from_ref(&session))?;
/// assert_eq!(batch.schema(), Session::schema());
/// assert_eq!(Session::from_batch(&batch)?, [session]);
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Session {
    /// What the session is of: a room, or a source.
    pub key: String,
    /// Event time of its first event, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub start: i64,
    /// Event time of its last event so far, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub end: i64,
    /// Who took part, sorted.
    pub participants: Vec<String>,
    /// How many events it holds.
    pub events: u64,
    /// Whether an event may still extend it (the watermark has not passed `end` + gap).
    pub open: bool,
}

impl Record for Session {
    const TABLE: &'static str = "sessions";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("key", DataType::Utf8, false),
            ts_field("start", false),
            ts_field("end", false),
            field(
                "participants",
                DataType::List(Arc::new(Field::new("element", DataType::Utf8, false))),
                false,
            ),
            field("events", DataType::UInt64, false),
            field("open", DataType::Boolean, false),
        ]
    }

    fn event_time(&self) -> i64 {
        self.start
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn sessions_round_trip_through_arrow() {
        let rows = vec![Session {
            key: "room-1".into(),
            start: 1_000,
            end: 5_000,
            participants: vec!["dev-1".into(), "dev-2".into()],
            events: 4,
            open: false,
        }];
        let batch = Session::to_batch(&rows).unwrap();
        assert_eq!(Session::from_batch(&batch).unwrap(), rows);
    }
}
