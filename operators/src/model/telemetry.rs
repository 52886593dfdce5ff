//! The `telemetry` table: one reading of a metric, or one event with its intensity.

use arrow::datatypes::{DataType, FieldRef};
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{Record, field, ts_field};

/// Whether a telemetry record is a metric reading or a discrete event.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A sampled metric such as `altitude_m`; `value` is the reading.
    #[default]
    Reading,
    /// A discrete event such as `BLOOM`; `value` is its intensity.
    Event,
}

/// One telemetry record, as archived in the `telemetry` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// Unique id of the event; derived as `source-name-seq` (or `source-name-ts`) when absent.
    pub event_id: CompactString,
    /// The vehicle or device that produced the record.
    pub source: CompactString,
    /// Reading or event.
    pub kind: Kind,
    /// The metric (`temp_c`) or the event type (`BLOOM`).
    pub name: CompactString,
    /// Event time, epoch milliseconds UTC.
    #[serde(with = "crate::time::epoch_ms")]
    pub ts: i64,
    /// Per-source sequence number, when the source sends one.
    pub seq: Option<u64>,
    /// The reading, or the event's intensity. Always finite.
    pub value: f64,
    /// Clear metadata as a JSON object text.
    pub attrs: Option<String>,
    /// AES-256-GCM ciphertext (nonce followed by ciphertext and tag); never clear text.
    pub payload: Option<Vec<u8>>,
    /// Id of the key that encrypted `payload`.
    pub key_id: Option<CompactString>,
}

impl Reading {
    /// A reading with only the required fields set and a derived `event_id`.
    pub fn new(source: &str, name: &str, ts: i64, value: f64) -> Self {
        Self {
            event_id: derive_event_id(source, name, None, ts),
            source: source.into(),
            kind: Kind::Reading,
            name: name.into(),
            ts,
            seq: None,
            value,
            attrs: None,
            payload: None,
            key_id: None,
        }
    }

    /// Sets the sequence number and re-derives the event id from it.
    pub fn with_seq(mut self, seq: u64) -> Self {
        self.seq = Some(seq);
        self.event_id = derive_event_id(&self.source, &self.name, Some(seq), self.ts);
        self
    }
}

/// A stable 64-bit hash of a series (`source`, `name`): the same on every run and machine.
pub fn series_hash(source: &str, name: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(source.as_bytes());
    hasher.update(&[0xff]);
    hasher.update(name.as_bytes());
    hasher.digest()
}

/// The deterministic event id of a record that came without one: `source-name-seq`, or
/// `source-name-ts` when there is no sequence number.
///
/// # Examples
/// ```
/// use vigil_operators::derive_event_id;
/// assert_eq!(derive_event_id("veh-7", "temp_c", Some(42), 0), "veh-7-temp_c-42");
/// assert_eq!(derive_event_id("veh-7", "temp_c", None, 1000), "veh-7-temp_c-t1000");
/// ```
pub fn derive_event_id(source: &str, name: &str, seq: Option<u64>, ts: i64) -> CompactString {
    use std::fmt::Write;
    let mut id = CompactString::with_capacity(source.len() + name.len() + 22);
    // Writing into a CompactString cannot fail.
    let _ = match seq {
        Some(seq) => write!(id, "{source}-{name}-{seq}"),
        None => write!(id, "{source}-{name}-t{ts}"),
    };
    id
}

impl Record for Reading {
    const TABLE: &'static str = "telemetry";

    fn fields() -> Vec<FieldRef> {
        vec![
            field("event_id", DataType::Utf8, false),
            field("source", DataType::Utf8, false),
            field("kind", DataType::Utf8, false),
            field("name", DataType::Utf8, false),
            ts_field("ts", false),
            field("seq", DataType::UInt64, true),
            field("value", DataType::Float64, false),
            field("attrs", DataType::Utf8, true),
            field("payload", DataType::Binary, true),
            field("key_id", DataType::Utf8, true),
        ]
    }

    fn event_time(&self) -> i64 {
        self.ts
    }
}
