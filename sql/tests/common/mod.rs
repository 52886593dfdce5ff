//! The small archive the command-line and server tests query.

#![allow(clippy::unwrap_used, dead_code)] // Fixtures fail loudly; not every test uses all.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use tempfile::TempDir;
use vigil_operators::crypto::PayloadKey;

/// The payload key of [`sealed_archive`], as a key file holds it.
pub const KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// An archive whose `telemetry` holds two payloads sealed with `key` (`{"crew":"alpha"}` and
/// `{"crew":"beta"}`) and one row without a payload.
pub fn sealed_archive(key: &PayloadKey) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rng();
    let ids = ["veh-1-temp-1", "veh-1-temp-2", "veh-2-temp-1"];
    let clear = [
        Some(r#"{"crew":"alpha"}"#),
        Some(r#"{"crew":"beta"}"#),
        None,
    ];
    let payloads: Vec<Option<Vec<u8>>> = ids
        .iter()
        .zip(clear)
        .map(|(id, c)| c.map(|c| key.seal(id, c.as_bytes(), &mut rng)))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("key_id", DataType::Utf8, true),
        Field::new("payload", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids.to_vec())),
            Arc::new(StringArray::from(vec![
                Some(key.key_id().as_str()),
                Some(key.key_id().as_str()),
                None,
            ])),
            Arc::new(BinaryArray::from(
                payloads.iter().map(Option::as_deref).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    write(
        &dir.path()
            .join("telemetry/date=2026-01-01/hour=00/part-0.parquet"),
        &batch,
    );
    dir
}

/// An archive with `readings` (12 rows over two hours) and `alerts` (2 rows).
pub fn archive() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    let readings = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    for (hour, first) in [("00", 0), ("01", 6)] {
        let sources: Vec<String> = (first..first + 6)
            .map(|i| format!("dev-{}", i % 3))
            .collect();
        let values: Vec<f64> = (first..first + 6).map(|i| i as f64).collect();
        let batch = RecordBatch::try_new(
            readings.clone(),
            vec![
                Arc::new(StringArray::from(sources)),
                Arc::new(Float64Array::from(values)),
            ],
        )
        .unwrap();
        write(
            &dir.path().join(format!(
                "readings/date=2026-01-01/hour={hour}/part-0.parquet"
            )),
            &batch,
        );
    }
    let alerts = Arc::new(Schema::new(vec![
        Field::new("source", DataType::Utf8, false),
        Field::new("level", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        alerts,
        vec![
            Arc::new(StringArray::from(vec!["dev-0", "dev-2"])),
            Arc::new(Int64Array::from(vec![2, 3])),
        ],
    )
    .unwrap();
    write(
        &dir.path()
            .join("alerts/date=2026-01-01/hour=00/part-0.parquet"),
        &batch,
    );
    dir
}

pub fn write(path: &Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(batch).unwrap();
    writer.close().unwrap();
}
