//! DuckDB, through its Python package, as the reference SQL engine: the same query text over
//! the same archive, its rows in a canonical form that vigil-sql's rows are compared with.
//!
//! `scripts/setup.sh --tests` installs the package; without it every user of this fixture
//! fails with a message that says so.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)] // Fixtures fail loudly on purpose.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use serde_json::{Value, json};

/// The script that runs SQL in DuckDB and prints canonical rows.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("duckdb/query.py")
}

/// Fails with what to do when Python 3 or its `duckdb`/`pyarrow` packages are missing.
pub fn require() {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb, pyarrow"])
        .output();
    match probe {
        Err(error) => panic!(
            "python3 is needed for the DuckDB comparison ({error}): install Python 3 and run scripts/setup.sh --tests"
        ),
        Ok(out) if !out.status.success() => panic!(
            "the DuckDB comparison needs the duckdb and pyarrow Python packages: run scripts/setup.sh --tests \
             (python3 said: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => {}
    }
}

/// DuckDB's answer to one statement.
#[derive(Debug, Clone)]
pub enum Answer {
    /// The rows, canonical, and the wall time of each run in seconds.
    Rows(Vec<Vec<Value>>, Vec<f64>),
    /// DuckDB's error message.
    Error(String),
}

/// Runs each of `statements` (`repeat` times each) in one DuckDB connection over `archive`.
pub fn run(archive: &Path, statements: &[String], repeat: usize) -> Vec<Answer> {
    require();
    let requests: Vec<Value> = statements
        .iter()
        .map(|sql| json!({"sql": sql, "repeat": repeat}))
        .collect();
    let mut child = Command::new("python3")
        .arg(script())
        .arg(archive)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting python3 with the DuckDB script");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&requests).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the DuckDB script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    answers
        .into_iter()
        .map(|answer| match answer.get("error") {
            Some(error) => Answer::Error(error.as_str().unwrap_or_default().to_owned()),
            None => Answer::Rows(
                serde_json::from_value(answer["rows"].clone()).unwrap(),
                serde_json::from_value(answer["seconds"].clone()).unwrap(),
            ),
        })
        .collect()
}

/// vigil-sql's rows in the canonical form of the DuckDB script: numbers, timestamps as UTC
/// microseconds, dates as `YYYY-MM-DD`, bytes as hex, NULL as null.
pub fn canonical_rows(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .map(|column| canonical(column.as_ref(), row))
                    .collect(),
            );
        }
    }
    rows
}

fn canonical(column: &dyn Array, row: usize) -> Value {
    use arrow::datatypes::{
        Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type,
        UInt16Type, UInt32Type, UInt64Type,
    };
    if column.is_null(row) {
        return Value::Null;
    }
    let float = |x: f64| {
        if x.is_nan() {
            json!("NaN")
        } else if x.is_infinite() {
            json!(if x > 0.0 { "inf" } else { "-inf" })
        } else {
            json!(x)
        }
    };
    match column.data_type() {
        DataType::Boolean => json!(column.as_boolean().value(row)),
        DataType::Int8 => json!(column.as_primitive::<Int8Type>().value(row)),
        DataType::Int16 => json!(column.as_primitive::<Int16Type>().value(row)),
        DataType::Int32 => json!(column.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(row)),
        DataType::UInt8 => json!(column.as_primitive::<UInt8Type>().value(row)),
        DataType::UInt16 => json!(column.as_primitive::<UInt16Type>().value(row)),
        DataType::UInt32 => json!(column.as_primitive::<UInt32Type>().value(row)),
        DataType::UInt64 => json!(column.as_primitive::<UInt64Type>().value(row)),
        DataType::Float32 => float(f64::from(column.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Date32 => {
            let days = column.as_primitive::<Date32Type>().value(row);
            json!(civil_date(days))
        }
        DataType::Timestamp(..) => {
            let micros = arrow::compute::cast(
                &column.slice(row, 1),
                &DataType::Timestamp(TimeUnit::Microsecond, None),
            )
            .unwrap();
            let value = micros.as_primitive::<TimestampMicrosecondType>().value(0);
            json!(value)
        }
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => {
            let bytes = arrow::compute::cast(&column.slice(row, 1), &DataType::Binary).unwrap();
            json!(hex(bytes.as_binary::<i32>().value(0)))
        }
        DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => {
            let value = arrow::compute::cast(&column.slice(row, 1), &DataType::Float64).unwrap();
            float(value.as_primitive::<Float64Type>().value(0))
        }
        _ => {
            let text = arrow::compute::cast(&column.slice(row, 1), &DataType::Utf8).unwrap();
            json!(text.as_string::<i32>().value(0))
        }
    }
}

/// `YYYY-MM-DD` of a count of days since 1970-01-01 (proleptic Gregorian).
fn civil_date(days: i32) -> String {
    // Howard Hinnant's civil-from-days.
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether two canonical rows sets are equal: numbers within a relative 1e-7, everything
/// else exactly. Engines sum floating point in different orders, and DataFusion slides a
/// window's variance by retracting the rows that leave it, which after a run of equal values
/// (a stuck sensor) drifts from DuckDB's by up to about 2e-8 of the value. `Err` says where they differ.
pub fn compare(vigil: &[Vec<Value>], duckdb: &[Vec<Value>]) -> Result<(), String> {
    if vigil.len() != duckdb.len() {
        return Err(format!(
            "vigil-sql gave {} rows, DuckDB {}; first rows: {:?} vs {:?}",
            vigil.len(),
            duckdb.len(),
            vigil.first(),
            duckdb.first()
        ));
    }
    for (i, (a, b)) in vigil.iter().zip(duckdb).enumerate() {
        if a.len() != b.len() {
            return Err(format!("row {i}: {} columns vs {}", a.len(), b.len()));
        }
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            if !same_value(x, y) {
                return Err(format!(
                    "row {i} column {j}: vigil-sql {x} vs DuckDB {y}\n  vigil-sql row: {a:?}\n  DuckDB row:    {b:?}"
                ));
            }
        }
    }
    Ok(())
}

fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => {
                let (x, y) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                (x - y).abs() <= 1e-7 * x.abs().max(y.abs()).max(1.0)
            }
        },
        _ => a == b,
    }
}

/// Sorts rows by their JSON text, for results whose order the query leaves open.
pub fn sorted(mut rows: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    rows.sort_by_cached_key(|row| serde_json::to_string(row).unwrap_or_default());
    rows
}
