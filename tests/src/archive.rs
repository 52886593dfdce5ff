//! Reading what a job wrote: its alerts file, its archive's Parquet files, and SQL over the
//! archive through vigil-sql.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // Fixtures fail loudly on purpose.

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type};
use vigil_operators::{Alert, Record};

pub use crate::files::parquet_files;

/// The alerts of an NDJSON alerts file.
pub fn read_alerts(path: &Path) -> Vec<Alert> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("every alert line is an Alert"))
        .collect()
}

/// Every record batch of every Parquet file under `dir`, file by file in name order.
pub fn read_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for path in parquet_files(dir) {
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap_or_else(|e| panic!("{} is a Parquet file: {e}", path.display()))
            .build()
            .unwrap();
        batches.extend(reader.map(Result::unwrap));
    }
    batches
}

/// Every record of the Parquet files under `dir` (a table's folder of the archive).
pub fn read_records<R: Record>(dir: &Path) -> Vec<R> {
    read_batches(dir)
        .iter()
        .flat_map(|batch| R::from_batch(batch).unwrap())
        .collect()
}

/// Runs `query` over the archive at `archive` with vigil-sql.
pub fn sql(archive: &Path, query: &str) -> Vec<RecordBatch> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let ctx = vigil_sql::open_archive(&archive.display().to_string())
            .await
            .unwrap();
        vigil_sql::query(&ctx, query).await.unwrap()
    })
}

/// The single count a `SELECT count(*) …` query returns.
pub fn sql_count(archive: &Path, query: &str) -> i64 {
    let batches = sql(archive, query);
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// A column as strings, whatever string type the engine chose.
pub fn strings(batch: &RecordBatch, column: usize) -> Vec<String> {
    let utf8 = arrow::compute::cast(batch.column(column), &DataType::Utf8).unwrap();
    let array = utf8.as_string::<i32>();
    (0..array.len())
        .map(|i| array.value(i).to_owned())
        .collect()
}
