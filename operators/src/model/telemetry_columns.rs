//! The `telemetry` table built column by column: the hot path from parsed text to Arrow.
//!
//! [`Reading`]'s serde form through `serde_arrow` defines the table; this builder writes the
//! same columns directly from borrowed fields, without a row struct in between, and assembles
//! them against [`Reading::schema`], so a column that drifted from the definition is an error.
//! A test checks that both give identical batches.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, Float64Array, StringBuilder, TimestampMillisecondArray, UInt64Builder,
};
use arrow::record_batch::RecordBatch;

use super::telemetry::write_event_id;
use super::{ConvertError, Kind, Reading, ReadingRef, Record};

/// Telemetry rows being collected into Arrow columns.
///
/// # Examples
/// ```
/// use vigil_operators::{Reading, Record, TelemetryColumns};
///
/// let rows = vec![
///     Reading::new("veh-1", "temp_c", 1_000, 20.5),
///     Reading::new("veh-2", "rpm", 2_000, 900.0).with_seq(7),
/// ];
/// let mut columns = TelemetryColumns::with_capacity(rows.len());
/// for row in &rows {
///     columns.push(&row.view());
/// }
/// assert_eq!(columns.len(), 2);
/// // The same batch as the row type's own conversion, without a row struct in between.
/// assert_eq!(columns.finish()?, Reading::to_batch(&rows)?);
/// assert!(columns.is_empty());
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
pub struct TelemetryColumns {
    event_id: StringBuilder,
    source: StringBuilder,
    kind: StringBuilder,
    name: StringBuilder,
    ts: Vec<i64>,
    seq: UInt64Builder,
    value: Vec<f64>,
    attrs: StringBuilder,
    payload: BinaryBuilder,
    key_id: StringBuilder,
}

impl TelemetryColumns {
    /// An empty builder with room for `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            event_id: StringBuilder::with_capacity(rows, rows * 24),
            source: StringBuilder::with_capacity(rows, rows * 8),
            kind: StringBuilder::with_capacity(rows, rows * 7),
            name: StringBuilder::with_capacity(rows, rows * 12),
            ts: Vec::with_capacity(rows),
            seq: UInt64Builder::with_capacity(rows),
            value: Vec::with_capacity(rows),
            attrs: StringBuilder::new(),
            payload: BinaryBuilder::new(),
            key_id: StringBuilder::new(),
        }
    }

    /// Appends one row.
    pub fn push(&mut self, r: &ReadingRef<'_>) {
        match r.given_event_id() {
            Some(id) => self.event_id.append_value(id),
            None => {
                // Writing into a string builder cannot fail.
                let _ = write_event_id(&mut self.event_id, r.source, r.name, r.seq, r.ts);
                self.event_id.append_value("");
            }
        }
        self.source.append_value(r.source);
        self.kind.append_value(match r.kind {
            Kind::Reading => "reading",
            Kind::Event => "event",
        });
        self.name.append_value(r.name);
        self.ts.push(r.ts);
        self.seq.append_option(r.seq);
        self.value.push(r.value);
        self.attrs.append_option(r.attrs);
        self.payload.append_option(r.payload);
        self.key_id.append_option(r.key_id);
    }

    /// Rows pushed since the last [`TelemetryColumns::finish`].
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether no rows are pending.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Takes the pending rows as a batch with the `telemetry` schema and leaves the builder
    /// empty (the numeric columns keep their capacity; the string builders grow again).
    pub fn finish(&mut self) -> Result<RecordBatch, ConvertError> {
        let rows = self.ts.capacity();
        let ts = std::mem::replace(&mut self.ts, Vec::with_capacity(rows));
        let value = std::mem::replace(&mut self.value, Vec::with_capacity(rows));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.source.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.name.finish()),
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(self.seq.finish()),
            Arc::new(Float64Array::from(value)),
            Arc::new(self.attrs.finish()),
            Arc::new(self.payload.finish()),
            Arc::new(self.key_id.finish()),
        ];
        RecordBatch::try_new(Reading::schema(), columns).map_err(Reading::error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_match_the_serde_definition() {
        let mut rows = vec![
            Reading::new("veh-1", "temp_c", 1_000, 20.5),
            Reading::new("veh-2", "BLOOM", 2_000, 0.5).with_seq(7),
            Reading::new("a-rather-long-source-name", "acceleration_mps2", -5, -1e300),
        ];
        rows[1].kind = Kind::Event;
        rows[1].attrs = Some(r#"{"room":"a"}"#.into());
        rows[2].payload = Some(vec![1, 2, 3]);
        rows[2].key_id = Some("k-0011".into());
        rows[2].event_id = "given".into();

        let mut columns = TelemetryColumns::with_capacity(1);
        for row in &rows {
            columns.push(&row.view());
        }
        // A missing event id is derived exactly as the row type derives it.
        let mut derived = rows[0].view();
        derived.event_id = None;
        columns.push(&derived);
        rows.push(rows[0].clone());
        assert_eq!(columns.len(), 4);

        let built = columns.finish().expect("builds");
        let reference = Reading::to_batch(&rows).expect("serde_arrow builds");
        assert_eq!(built, reference);
        assert!(columns.is_empty());
        // The builder is reusable after finish.
        columns.push(&rows[0].view());
        let again = columns.finish().expect("builds");
        assert_eq!(again, Reading::to_batch(&rows[..1]).expect("builds"));
    }
}
