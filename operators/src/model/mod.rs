//! The data model: one Arrow schema per record type, and every conversion derived from it.
//!
//! Each record type is a plain Rust struct with serde derives plus one [`Record::fields`]
//! definition of its Arrow schema. Conversions to and from `RecordBatch` go through
//! `serde_arrow` against that schema, and NDJSON is the same serde representation written by
//! `serde_json`, so the Rust type, the archive, SQL and JSON cannot drift apart.

pub mod alert;
pub mod anomaly_score;
pub mod change;
pub mod dead_letter;
pub mod pattern;
pub mod series_reading;
pub mod session;
pub mod sync_action;
pub mod telemetry;
pub mod telemetry_columns;

pub use alert::{Alert, AlertStatus};
pub use anomaly_score::{AnomalyScore, ScoreColumns};
pub use change::{Change, ChangeOp};
pub use dead_letter::DeadLetter;
pub use pattern::Pattern;
pub use series_reading::SeriesReading;
pub use session::Session;
pub use sync_action::{SyncAction, SyncActionKind};
pub use telemetry::{Kind, Reading, ReadingRef};
pub use telemetry_columns::TelemetryColumns;

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

/// Errors converting records to and from Arrow.
#[derive(Debug, thiserror::Error)]
#[error("{table}: {message}")]
pub struct ConvertError {
    /// The table whose records failed to convert.
    pub table: &'static str,
    /// What went wrong.
    pub message: String,
}

/// A record type with one Arrow schema, from which its batch and JSON forms are derived.
///
/// # Examples
/// ```
/// use vigil_operators::{Reading, Record};
///
/// let rows = vec![Reading::new("veh-1", "temp_c", 1_000, 20.5).with_seq(3)];
/// let batch = Reading::to_batch(&rows)?;
/// assert_eq!(batch.schema(), Reading::schema());
/// assert_eq!(Reading::from_batch(&batch)?, rows);
/// // JSON is the same serde form.
/// let json = rows[0].to_json();
/// assert_eq!(serde_json::from_str::<Reading>(&json)?, rows[0]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Record: Serialize + for<'de> Deserialize<'de> + Sized {
    /// The archive table that holds these records (`telemetry`, `alerts`, `errors`).
    const TABLE: &'static str;

    /// The Arrow fields of the table, in column order. This is the one definition of the schema.
    fn fields() -> Vec<FieldRef>;

    /// Columns whose values are mostly distinct (ids, measurements, ciphertext). The archive
    /// stores them without dictionary encoding, which for such columns only costs time.
    const DISTINCT_COLUMNS: &'static [&'static str] = &[];

    /// The event time (epoch ms) that decides the record's `date=`/`hour=` partition.
    fn event_time(&self) -> i64;

    /// Where the record was read in a partitioned log — (topic, partition, offset) — when it
    /// came from one; the archive keeps such records in files of one partition, named by it.
    fn log_position(&self) -> Option<(&str, i32, i64)> {
        None
    }

    /// The Arrow schema built from [`Record::fields`].
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(Self::fields()))
    }

    /// Converts records into one `RecordBatch` with [`Record::schema`].
    fn to_batch(rows: &[Self]) -> Result<RecordBatch, ConvertError> {
        serde_arrow::to_record_batch(&Self::fields(), &rows).map_err(|e| Self::error(e))
    }

    /// Reads records back from a `RecordBatch` with this schema (partition columns are ignored).
    fn from_batch(batch: &RecordBatch) -> Result<Vec<Self>, ConvertError> {
        let names: Vec<String> = Self::fields().iter().map(|f| f.name().clone()).collect();
        let indices: Vec<usize> = names
            .iter()
            .map(|name| batch.schema().index_of(name).map_err(|e| Self::error(e)))
            .collect::<Result<_, _>>()?;
        let projected = batch.project(&indices).map_err(|e| Self::error(e))?;
        serde_arrow::from_record_batch(&projected).map_err(|e| Self::error(e))
    }

    /// Writes the record as one line of JSON, without the trailing newline.
    fn to_json(&self) -> String {
        // Serializing a struct of strings and numbers into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Builds a [`ConvertError`] for this table.
    fn error(e: impl std::fmt::Display) -> ConvertError {
        ConvertError {
            table: Self::TABLE,
            message: e.to_string(),
        }
    }
}

/// An incremental batch builder for a [`Record`] type: push records, take a `RecordBatch`.
///
/// # Examples
/// ```
/// use vigil_operators::{BatchBuilder, Reading, Record};
///
/// let rows = [
///     Reading::new("veh-1", "temp_c", 1_000, 20.5),
///     Reading::new("veh-2", "rpm", 2_000, 900.0),
/// ];
/// let mut builder = BatchBuilder::<Reading>::new();
/// for row in &rows {
///     builder.push(row)?;
/// }
/// assert_eq!(builder.len(), 2);
/// let batch = builder.finish()?;
/// assert!(builder.is_empty());
/// assert_eq!(Reading::from_batch(&batch)?, rows);
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
pub struct BatchBuilder<R: Record> {
    inner: serde_arrow::ArrayBuilder,
    rows: usize,
    _record: std::marker::PhantomData<R>,
}

impl<R: Record> BatchBuilder<R> {
    /// A new, empty builder for the record's schema.
    pub fn new() -> Self {
        // The schema is a fixed, valid definition; serde_arrow accepts every type it uses.
        let inner = serde_arrow::ArrayBuilder::from_arrow(&R::fields())
            .expect("record schemas use types serde_arrow supports");
        Self {
            inner,
            rows: 0,
            _record: std::marker::PhantomData,
        }
    }

    /// Appends one record.
    pub fn push(&mut self, record: &R) -> Result<(), ConvertError> {
        self.inner.push(record).map_err(|e| R::error(e))?;
        self.rows += 1;
        Ok(())
    }

    /// The number of records pushed since the last [`BatchBuilder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether no records are pending.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Takes the pending records as a `RecordBatch` and leaves the builder empty.
    pub fn finish(&mut self) -> Result<RecordBatch, ConvertError> {
        self.rows = 0;
        self.inner.to_record_batch().map_err(|e| R::error(e))
    }
}

impl<R: Record> Default for BatchBuilder<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// An event-time column: UTC timestamps in milliseconds.
pub(crate) fn ts_field(name: &str, nullable: bool) -> FieldRef {
    Arc::new(Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    ))
}

/// A plain column.
pub(crate) fn field(name: &str, data_type: DataType, nullable: bool) -> FieldRef {
    Arc::new(Field::new(name, data_type, nullable))
}
