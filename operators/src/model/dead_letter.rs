//! The `errors` table: dead letters, the input vigil could not use, with the reason.

use arrow::datatypes::{DataType, FieldRef};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// The longest excerpt of the offending input kept in a dead letter.
pub const MAX_RAW_BYTES: usize = 4096;

/// One record that could not be used, and why. Nothing is dropped without one.
///
/// # Examples
/// ```
/// use vigil_operators::model::dead_letter::MAX_RAW_BYTES;
/// use vigil_operators::{DeadLetter, Record};
///
/// let line = vec![b'x'; 10_000];
/// let origin = "kafka:telemetry/3@1207".to_owned();
/// let letter = DeadLetter::new(0, origin, "oversize", "line too long".into(), Some(&line));
/// // The excerpt is cut to size, and the Kafka origin says where the record was read.
/// assert_eq!(letter.raw.as_ref().map(String::len), Some(MAX_RAW_BYTES));
/// assert_eq!(letter.log_position(), Some(("telemetry", 3, 1207)));
/// let file = DeadLetter::new(0, "input.ndjson:7".into(), "parse", "not JSON".into(), None);
/// assert_eq!(file.log_position(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Event time of the record when it could be read, otherwise the reader's watermark.
    #[serde(with = "crate::time::epoch_ms")]
    pub ts: i64,
    /// Where the record came from: `path:line`, `gen:rocket`, a topic and offset.
    pub origin: String,
    /// The class of problem: `parse`, `schema`, `oversize` (a line over the length limit),
    /// `late`, `file`.
    pub kind: CompactString,
    /// What is wrong, in words a user can act on.
    pub reason: String,
    /// The offending input (at most [`MAX_RAW_BYTES`]), when there is one, with any clear
    /// payload taken out before the dead letter is built: it is stored and replicated as is.
    pub raw: Option<String>,
}

impl DeadLetter {
    /// A dead letter with the offending input cut to [`MAX_RAW_BYTES`] on a character boundary.
    pub fn new(ts: i64, origin: String, kind: &str, reason: String, raw: Option<&[u8]>) -> Self {
        // A cut through a multi-byte character becomes U+FFFD rather than an error.
        let raw = raw.map(|bytes| {
            String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_RAW_BYTES)]).into_owned()
        });
        Self {
            ts,
            origin,
            kind: kind.into(),
            reason,
            raw,
        }
    }
}

impl Record for DeadLetter {
    const TABLE: &'static str = "errors";

    /// Dead letters of Kafka messages carry `kafka:TOPIC/PARTITION@OFFSET` as their origin.
    fn log_position(&self) -> Option<(&str, i32, i64)> {
        let rest = self.origin.strip_prefix("kafka:")?;
        let (place, offset) = rest.rsplit_once('@')?;
        let (topic, partition) = place.rsplit_once('/')?;
        Some((topic, partition.parse().ok()?, offset.parse().ok()?))
    }

    fn fields() -> Vec<FieldRef> {
        vec![
            ts_field("ts", false),
            field("origin", DataType::Utf8, false),
            field("kind", DataType::Utf8, false),
            field("reason", DataType::Utf8, false),
            field("raw", DataType::Utf8, true),
        ]
    }

    fn event_time(&self) -> i64 {
        self.ts
    }
}
