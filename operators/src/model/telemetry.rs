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
    /// Unique id of the event; derived as `source-name-seq` (or `source-name-tTS`) when absent.
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

    /// The reading borrowed, as loaders hand readings on.
    pub fn view(&self) -> ReadingRef<'_> {
        ReadingRef {
            event_id: Some(&self.event_id),
            source: &self.source,
            kind: self.kind,
            name: &self.name,
            ts: self.ts,
            seq: self.seq,
            value: self.value,
            attrs: self.attrs.as_deref(),
            payload: self.payload.as_deref(),
            key_id: self.key_id.as_deref(),
        }
    }
}

/// A telemetry record borrowed from the text it was read from, so that the hot path copies
/// each field once, straight into its Arrow column ([`super::TelemetryColumns`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadingRef<'a> {
    /// The event id; `None` (or empty) means derive it ([`derive_event_id`]).
    pub event_id: Option<&'a str>,
    /// The vehicle or device.
    pub source: &'a str,
    /// Reading or event.
    pub kind: Kind,
    /// The metric or event type.
    pub name: &'a str,
    /// Event time, epoch ms.
    pub ts: i64,
    /// Per-source sequence number.
    pub seq: Option<u64>,
    /// The reading or intensity; finite.
    pub value: f64,
    /// Clear metadata as JSON object text.
    pub attrs: Option<&'a str>,
    /// Ciphertext (never clear text).
    pub payload: Option<&'a [u8]>,
    /// Id of the key that encrypted `payload`.
    pub key_id: Option<&'a str>,
}

impl<'a> ReadingRef<'a> {
    /// An event of `source` named `name` with intensity `value`, with no id, seq or payload.
    pub fn event(source: &'a str, name: &'a str, ts: i64, value: f64) -> Self {
        ReadingRef {
            event_id: None,
            source,
            kind: Kind::Event,
            name,
            ts,
            seq: None,
            value,
            attrs: None,
            payload: None,
            key_id: None,
        }
    }

    /// The given event id, if there is a non-empty one.
    pub fn given_event_id(&self) -> Option<&str> {
        self.event_id.filter(|id| !id.is_empty())
    }

    /// The event id, derived when none was given.
    pub fn event_id(&self) -> CompactString {
        match self.given_event_id() {
            Some(id) => id.into(),
            None => derive_event_id(self.source, self.name, self.seq, self.ts),
        }
    }

    /// An owned copy.
    pub fn to_reading(&self) -> Reading {
        Reading {
            event_id: self.event_id(),
            source: self.source.into(),
            kind: self.kind,
            name: self.name.into(),
            ts: self.ts,
            seq: self.seq,
            value: self.value,
            attrs: self.attrs.map(str::to_owned),
            payload: self.payload.map(<[u8]>::to_vec),
            key_id: self.key_id.map(CompactString::from),
        }
    }
}

/// A stable 64-bit hash of a series (`source`, `name`): the same on every run and machine.
pub fn series_hash(source: &str, name: &str) -> u64 {
    use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};
    xxh3_64_with_seed(name.as_bytes(), xxh3_64(source.as_bytes()))
}

/// The deterministic event id of a record that came without one: `source-name-seq`, or
/// `source-name-tTS` when there is no sequence number.
///
/// # Examples
/// ```
/// use vigil_operators::derive_event_id;
/// assert_eq!(derive_event_id("veh-7", "temp_c", Some(42), 0), "veh-7-temp_c-42");
/// assert_eq!(derive_event_id("veh-7", "temp_c", None, 1000), "veh-7-temp_c-t1000");
/// ```
pub fn derive_event_id(source: &str, name: &str, seq: Option<u64>, ts: i64) -> CompactString {
    let mut id = CompactString::with_capacity(source.len() + name.len() + 22);
    // Writing into a CompactString cannot fail.
    let _ = write_event_id(&mut id, source, name, seq, ts);
    id
}

/// Writes the derived event id ([`derive_event_id`]) into `out`.
pub(crate) fn write_event_id(
    out: &mut impl std::fmt::Write,
    source: &str,
    name: &str,
    seq: Option<u64>,
    ts: i64,
) -> std::fmt::Result {
    match seq {
        Some(seq) => write!(out, "{source}-{name}-{seq}"),
        None => write!(out, "{source}-{name}-t{ts}"),
    }
}

impl Record for Reading {
    const TABLE: &'static str = "telemetry";
    const DISTINCT_COLUMNS: &'static [&'static str] = &["event_id", "value", "payload"];

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
