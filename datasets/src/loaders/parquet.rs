//! Parquet in the `telemetry` shape, such as vigil's own archive, read one row group at a time.

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, UInt64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use vigil_operators::{Kind, Reading, derive_event_id, time::check_range};

use super::sink::RecordSink;

/// The number of rows of each row group of a Parquet file.
pub(super) fn row_groups(path: &Path) -> Result<Vec<u64>, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    Ok(builder
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows().max(0) as u64)
        .collect())
}

/// Reads one row group. A file whose columns are not the `telemetry` shape gives one dead letter.
pub(super) fn read_row_group(path: &Path, row_group: usize, sink: &mut impl RecordSink) {
    let origin = format!("{}#row_group={row_group}", path.display());
    let reader = File::open(path)
        .map_err(|e| e.to_string())
        .and_then(|file| ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string()))
        .and_then(|b| {
            b.with_row_groups(vec![row_group])
                .build()
                .map_err(|e| e.to_string())
        });
    let reader = match reader {
        Ok(reader) => reader,
        Err(e) => {
            return sink.dead_letter(
                None,
                origin,
                "file",
                format!("could not read the Parquet file: {e}"),
                None,
            );
        }
    };
    for batch in reader {
        let result = batch
            .map_err(|e| e.to_string())
            .and_then(|batch| read_batch(&batch, &origin, sink));
        if let Err(reason) = result {
            return sink.dead_letter(None, origin, "file", reason, None);
        }
    }
}

fn column(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<Option<arrow::array::ArrayRef>, String> {
    match batch.column_by_name(name) {
        None => Ok(None),
        Some(array) => cast(array, to)
            .map(Some)
            .map_err(|e| format!("column {name} cannot be read as {to}: {e}")),
    }
}

fn required(
    batch: &RecordBatch,
    name: &str,
    to: &DataType,
) -> Result<arrow::array::ArrayRef, String> {
    column(batch, name, to)?.ok_or_else(|| {
        format!("the Parquet file has no `{name}` column: vigil reads Parquet with source, name, ts and value columns")
    })
}

fn read_batch(batch: &RecordBatch, origin: &str, sink: &mut impl RecordSink) -> Result<(), String> {
    let source = required(batch, "source", &DataType::Utf8)?;
    let name = required(batch, "name", &DataType::Utf8)?;
    let ts = match batch.column_by_name("ts").map(|a| a.data_type().clone()) {
        Some(DataType::Timestamp(_, _)) => {
            let millis = required(
                batch,
                "ts",
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?;
            cast(&millis, &DataType::Int64).map_err(|e| e.to_string())?
        }
        _ => required(batch, "ts", &DataType::Int64)?,
    };
    let value = required(batch, "value", &DataType::Float64)?;
    let event_id = column(batch, "event_id", &DataType::Utf8)?;
    let seq = column(batch, "seq", &DataType::UInt64)?;
    let kind = column(batch, "kind", &DataType::Utf8)?;
    let attrs = column(batch, "attrs", &DataType::Utf8)?;
    let payload = column(batch, "payload", &DataType::Binary)?;
    let key_id = column(batch, "key_id", &DataType::Utf8)?;

    let (source, name) = (source.as_string::<i32>(), name.as_string::<i32>());
    let (ts, value) = (
        ts.as_primitive::<Int64Type>(),
        value.as_primitive::<Float64Type>(),
    );
    let event_id = event_id.as_ref().map(|a| a.as_string::<i32>());
    let seq = seq.as_ref().map(|a| a.as_primitive::<UInt64Type>());
    let kind = kind.as_ref().map(|a| a.as_string::<i32>());
    let attrs = attrs.as_ref().map(|a| a.as_string::<i32>());
    let payload = payload.as_ref().map(|a| a.as_binary::<i32>());
    let key_id = key_id.as_ref().map(|a| a.as_string::<i32>());

    for row in 0..batch.num_rows() {
        let place = || format!("{origin} row {row}");
        if source.is_null(row) || name.is_null(row) || ts.is_null(row) || value.is_null(row) {
            sink.dead_letter(
                None,
                place(),
                "schema",
                "source, name, ts and value must not be null".into(),
                None,
            );
            continue;
        }
        let Some(t) = check_range(ts.value(row)) else {
            sink.dead_letter(
                None,
                place(),
                "schema",
                format!("ts {} is out of range", ts.value(row)),
                None,
            );
            continue;
        };
        let v = value.value(row);
        if !v.is_finite() {
            sink.dead_letter(
                Some(t),
                place(),
                "schema",
                format!("value {v} is not a finite number"),
                None,
            );
            continue;
        }
        let kind = match text(kind, row) {
            None | Some("reading") => Kind::Reading,
            Some("event") => Kind::Event,
            Some(other) => {
                let reason = format!("kind {other:?} is neither reading nor event");
                sink.dead_letter(Some(t), place(), "schema", reason, None);
                continue;
            }
        };
        let (s, n) = (source.value(row), name.value(row));
        let seq = seq.filter(|a| a.is_valid(row)).map(|a| a.value(row));
        let ciphertext = payload
            .filter(|a| a.is_valid(row))
            .map(|a| a.value(row).to_vec());
        let key_id = text(key_id, row);
        if ciphertext.is_some() && key_id.is_none() {
            let reason =
                "payload without key_id: Parquet input must carry payloads encrypted by vigil"
                    .into();
            sink.dead_letter(Some(t), place(), "schema", reason, None);
            continue;
        }
        let reading = Reading {
            event_id: match text(event_id, row) {
                Some(id) if !id.is_empty() => id.into(),
                _ => derive_event_id(s, n, seq, t),
            },
            source: s.into(),
            kind,
            name: n.into(),
            ts: t,
            seq,
            value: v,
            attrs: text(attrs, row).map(str::to_owned),
            payload: ciphertext,
            key_id: key_id.map(Into::into),
        };
        sink.reading(reading.view(), None);
    }
    Ok(())
}

fn text(array: Option<&arrow::array::StringArray>, row: usize) -> Option<&str> {
    array.filter(|a| a.is_valid(row)).map(|a| a.value(row))
}
