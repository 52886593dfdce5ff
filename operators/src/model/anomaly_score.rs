//! The `anomaly_scores` table: each guard's score for each reading it judged, so that users can
//! see with SQL why an alert fired (or why it did not).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, StringBuilder, TimestampMillisecondArray, UInt64Builder,
};
use arrow::datatypes::{DataType, FieldRef};
use arrow::record_batch::RecordBatch;
use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::{ConvertError, Record, field, ts_field};

/// One guard's score for one reading. Joins to `telemetry` on (source, name, ts, seq).
///
/// # Examples
/// Guards collect their scores in [`ScoreColumns`]; the batches read back as these records.
/// ```
/// use vigil_operators::{AnomalyScore, Record, ScoreColumns};
///
/// let mut columns = ScoreColumns::default();
/// columns.push(1_000, "veh-1", "temp_c", Some(7), "zscore", 0.25);
/// columns.push(2_000, "veh-1", "temp_c", None, "zscore", 0.75);
/// let batch = columns.finish()?;
/// assert!(columns.is_empty());
/// let scores = AnomalyScore::from_batch(&batch)?;
/// assert_eq!(scores.len(), 2);
/// assert_eq!((scores[0].ts, scores[0].seq, scores[0].score), (1_000, Some(7), 0.25));
/// assert_eq!((scores[1].seq, scores[1].guard.as_str()), (None, "zscore"));
/// # Ok::<(), vigil_operators::ConvertError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyScore {
    /// Event time of the reading, epoch ms.
    #[serde(with = "crate::time::epoch_ms")]
    pub ts: i64,
    /// The vehicle or device.
    pub source: CompactString,
    /// The metric or event name.
    pub name: CompactString,
    /// The reading's sequence number, if it had one.
    pub seq: Option<u64>,
    /// The guard's name.
    pub guard: CompactString,
    /// The guard's score in [0, 1]; its alert raises and clears on this.
    pub score: f64,
}

impl Record for AnomalyScore {
    const TABLE: &'static str = "anomaly_scores";
    const DISTINCT_COLUMNS: &'static [&'static str] = &["score"];

    fn fields() -> Vec<FieldRef> {
        vec![
            ts_field("ts", false),
            field("source", DataType::Utf8, false),
            field("name", DataType::Utf8, false),
            field("seq", DataType::UInt64, true),
            field("guard", DataType::Utf8, false),
            field("score", DataType::Float64, false),
        ]
    }

    fn event_time(&self) -> i64 {
        self.ts
    }
}

/// Scores collected straight into Arrow columns (the same columns [`AnomalyScore`]'s schema
/// defines; a test checks they match serde_arrow's batch).
pub struct ScoreColumns {
    ts: Vec<i64>,
    source: StringBuilder,
    name: StringBuilder,
    seq: UInt64Builder,
    guard: StringBuilder,
    score: Vec<f64>,
}

impl Default for ScoreColumns {
    fn default() -> Self {
        Self {
            ts: Vec::new(),
            source: StringBuilder::new(),
            name: StringBuilder::new(),
            seq: UInt64Builder::new(),
            guard: StringBuilder::new(),
            score: Vec::new(),
        }
    }
}

impl ScoreColumns {
    /// Appends one score.
    pub fn push(
        &mut self,
        ts: i64,
        source: &str,
        name: &str,
        seq: Option<u64>,
        guard: &str,
        score: f64,
    ) {
        self.ts.push(ts);
        self.source.append_value(source);
        self.name.append_value(name);
        self.seq.append_option(seq);
        self.guard.append_value(guard);
        self.score.push(score);
    }

    /// Scores pending.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether none are pending.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Takes the pending scores as a batch with the `anomaly_scores` schema.
    pub fn finish(&mut self) -> Result<RecordBatch, ConvertError> {
        let ts = std::mem::take(&mut self.ts);
        let score = std::mem::take(&mut self.score);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
            Arc::new(self.source.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.seq.finish()),
            Arc::new(self.guard.finish()),
            Arc::new(Float64Array::from(score)),
        ];
        RecordBatch::try_new(AnomalyScore::schema(), columns).map_err(AnomalyScore::error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_match_the_serde_definition() {
        let rows = vec![
            AnomalyScore {
                ts: 1_000,
                source: "veh-1".into(),
                name: "temp_c".into(),
                seq: Some(3),
                guard: "zscore".into(),
                score: 0.25,
            },
            AnomalyScore {
                ts: 2_000,
                source: "veh-2".into(),
                name: "BLOOM".into(),
                seq: None,
                guard: "composite".into(),
                score: 0.999,
            },
        ];
        let mut columns = ScoreColumns::default();
        for r in &rows {
            columns.push(r.ts, &r.source, &r.name, r.seq, &r.guard, r.score);
        }
        assert_eq!(columns.len(), 2);
        let built = columns.finish().expect("builds");
        assert_eq!(
            built,
            AnomalyScore::to_batch(&rows).expect("serde_arrow builds")
        );
        assert!(columns.is_empty());
    }
}
