//! Opens a small archive written in a tempdir and checks discovery, SQL and output formats.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use clap::Parser;
use datafusion::assert_batches_eq;
use datafusion::parquet::arrow::ArrowWriter;
use tempfile::TempDir;
use vigil_sql::{Args, OutputFormat, open_archive, query, run, table_names, write_batches};

/// Writes one Parquet file of `(sensor, value)` rows at `root/rel`, creating its directories.
fn write_part(root: &Path, rel: &str, rows: &[(&str, f64)]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sensor", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let sensors = StringArray::from_iter_values(rows.iter().map(|(s, _)| *s));
    let values = Float64Array::from_iter_values(rows.iter().map(|(_, v)| *v));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![Arc::new(sensors), Arc::new(values)],
    )
    .expect("valid batch");
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dirs");
    let file = File::create(&path).expect("create parquet file");
    let mut writer = ArrowWriter::try_new(file, schema, None).expect("parquet writer");
    writer.write(&batch).expect("write batch");
    writer.close().expect("close parquet file");
}

/// Builds an archive with two tables, an empty table directory and a directory that is not an
/// SQL identifier.
fn archive() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write_part(
        root,
        "telemetry/date=2026-01-01/hour=00/part-000.parquet",
        &[("a", 1.0), ("b", 2.0), ("c", 3.0)],
    );
    write_part(
        root,
        "telemetry/date=2026-01-01/hour=01/part-000.parquet",
        &[("d", 4.5), ("e", 5.5)],
    );
    write_part(
        root,
        "alerts/date=2026-01-01/hour=00/part-000.parquet",
        &[("a", 9.0)],
    );
    // A table directory the guard created but has not written to yet.
    std::fs::create_dir_all(root.join("errors/date=2026-01-01/hour=00")).expect("create dirs");
    std::fs::write(
        root.join("errors/date=2026-01-01/hour=00/notes.txt"),
        "not parquet",
    )
    .expect("write file");
    // Needs quoting in SQL, so it is skipped rather than registered under a surprising name.
    write_part(
        root,
        "Scratch-Copy/date=2026-01-01/hour=00/part-000.parquet",
        &[("z", 0.0)],
    );
    std::fs::write(root.join("README"), "a file at the root is not a table").expect("write file");
    dir
}

fn path_str(dir: &TempDir) -> &str {
    dir.path().to_str().expect("tempdir path is UTF-8")
}

async fn render(archive: &str, sql: &str, format: OutputFormat) -> String {
    let ctx = open_archive(archive).await.expect("open archive");
    let batches = query(&ctx, sql).await.expect("query");
    let mut out = Vec::new();
    write_batches(&batches, format, &mut out).expect("write batches");
    String::from_utf8(out).expect("output is UTF-8")
}

#[tokio::test]
async fn discovers_tables_with_parquet_files() {
    let dir = archive();
    let ctx = open_archive(path_str(&dir)).await.expect("open archive");
    assert_eq!(table_names(&ctx), ["alerts", "telemetry"]);
}

#[tokio::test]
async fn counts_every_row_written() {
    let dir = archive();
    let ctx = open_archive(path_str(&dir)).await.expect("open archive");
    let batches = query(&ctx, "SELECT count(*) AS n FROM telemetry")
        .await
        .expect("query");
    assert_batches_eq!(["+---+", "| n |", "+---+", "| 5 |", "+---+"], &batches);
}

#[tokio::test]
async fn hour_filter_returns_only_that_partition() {
    let dir = archive();
    let ctx = open_archive(path_str(&dir)).await.expect("open archive");
    let batches = query(
        &ctx,
        "SELECT sensor, value, date, hour FROM telemetry WHERE hour = '01' ORDER BY sensor",
    )
    .await
    .expect("query");
    assert_batches_eq!(
        [
            "+--------+-------+------------+------+",
            "| sensor | value | date       | hour |",
            "+--------+-------+------------+------+",
            "| d      | 4.5   | 2026-01-01 | 1    |",
            "| e      | 5.5   | 2026-01-01 | 1    |",
            "+--------+-------+------------+------+",
        ],
        &batches
    );
}

#[tokio::test]
async fn partition_columns_are_a_date_and_an_hour_number() {
    let dir = archive();
    let ctx = open_archive(path_str(&dir)).await.expect("open archive");
    let schema = ctx
        .table("telemetry")
        .await
        .expect("table")
        .schema()
        .as_arrow()
        .clone();
    for (column, expected) in [("date", DataType::Date32), ("hour", DataType::Int32)] {
        let field = schema.field_with_name(column).expect("partition column");
        assert_eq!(field.data_type(), &expected, "{column}");
    }
    // Typed, they compare as dates and numbers: ranges work, and text literals still match.
    for (sql, n) in [
        (
            "SELECT count(*) AS n FROM telemetry WHERE hour >= 1 AND hour < 2",
            2,
        ),
        ("SELECT count(*) AS n FROM telemetry WHERE hour = '01'", 2),
        (
            "SELECT count(*) AS n FROM telemetry WHERE date = DATE '2026-01-01'",
            5,
        ),
        (
            "SELECT count(*) AS n FROM telemetry WHERE date > '2026-01-01'",
            0,
        ),
    ] {
        let batches = query(&ctx, sql).await.expect("query");
        let count = batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .expect("count")
            .value(0);
        assert_eq!(count, n, "{sql}");
    }
}

#[tokio::test]
async fn writes_csv_with_header() {
    let dir = archive();
    let out = render(
        path_str(&dir),
        "SELECT sensor, value FROM telemetry WHERE hour = '01' ORDER BY sensor",
        OutputFormat::Csv,
    )
    .await;
    assert_eq!(out, "sensor,value\nd,4.5\ne,5.5\n");
}

#[tokio::test]
async fn writes_json_lines() {
    let dir = archive();
    let out = render(
        path_str(&dir),
        "SELECT sensor, value, hour FROM telemetry WHERE hour = '01' ORDER BY sensor",
        OutputFormat::Json,
    )
    .await;
    assert_eq!(
        out,
        "{\"sensor\":\"d\",\"value\":4.5,\"hour\":1}\n\
         {\"sensor\":\"e\",\"value\":5.5,\"hour\":1}\n"
    );
}

#[tokio::test]
async fn writes_aligned_table() {
    let dir = archive();
    let out = render(
        path_str(&dir),
        "SELECT sensor FROM alerts",
        OutputFormat::Table,
    )
    .await;
    assert_eq!(
        out,
        "+--------+\n| sensor |\n+--------+\n| a      |\n+--------+\n"
    );
}

#[tokio::test]
async fn opens_file_urls() {
    let dir = archive();
    let url = url::Url::from_directory_path(dir.path()).expect("absolute path");
    let out = render(
        url.as_str(),
        "SELECT count(*) AS n FROM telemetry",
        OutputFormat::Csv,
    )
    .await;
    assert_eq!(out, "n\n5\n");
}

#[tokio::test]
async fn missing_archive_says_what_to_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("vigil-data");
    let missing = missing.to_str().expect("UTF-8 path");
    let Err(error) = open_archive(missing).await else {
        panic!("a missing archive must fail to open");
    };
    assert_eq!(
        error.to_string(),
        format!("archive {missing} does not exist: run vigil-guard first or pass --archive")
    );
}

#[tokio::test]
async fn unsupported_scheme_is_an_error() {
    let Err(error) = open_archive("gs://bucket/vigil").await else {
        panic!("gs:// is not supported");
    };
    assert!(
        error.to_string().contains("unsupported archive URL scheme"),
        "{error:#}"
    );
}

#[tokio::test]
async fn queries_cannot_change_the_archive() {
    let dir = archive();
    let ctx = open_archive(path_str(&dir)).await.expect("open archive");
    let copy = dir.path().join("copy.parquet");
    let sql = format!("COPY telemetry TO '{}'", copy.display());
    assert!(query(&ctx, &sql).await.is_err(), "COPY must be refused");
    assert!(!copy.exists());
    assert!(
        query(&ctx, "CREATE TABLE t AS SELECT 1").await.is_err(),
        "CREATE must be refused"
    );
}

#[tokio::test]
async fn run_prints_the_result_of_the_command_line() {
    let dir = archive();
    let args = Args::try_parse_from([
        "vigil-sql",
        "--archive",
        path_str(&dir),
        "--format",
        "csv",
        "SELECT hour, count(*) AS n FROM telemetry GROUP BY hour ORDER BY hour",
    ])
    .expect("valid arguments");
    let mut out = Vec::new();
    run(&args, &mut out).await.expect("run");
    assert_eq!(String::from_utf8(out).expect("UTF-8"), "hour,n\n0,3\n1,2\n");
}

#[tokio::test]
async fn explain_shows_only_the_files_of_the_partitions_asked_for() {
    let dir = archive();
    let ctx = open_archive(path_str(&dir)).await.expect("open archive");
    let plan = |sql: &'static str| {
        let ctx = ctx.clone();
        async move {
            let batches = query(&ctx, sql).await.expect("explain");
            let out = arrow::util::pretty::pretty_format_batches(&batches)
                .expect("format")
                .to_string();
            out.lines()
                .filter(|l| l.contains("DataSourceExec"))
                .collect::<Vec<_>>()
                .join("\n")
        }
    };
    let pruned = plan("EXPLAIN SELECT sensor FROM telemetry WHERE hour = 1").await;
    assert!(pruned.contains("hour=01/part-000.parquet"), "{pruned}");
    assert!(!pruned.contains("hour=00"), "hour 0 is pruned: {pruned}");
    let pruned = plan(
        "EXPLAIN SELECT sensor FROM telemetry WHERE date BETWEEN '2025-12-01' AND '2025-12-31'",
    )
    .await;
    assert!(!pruned.contains("part-000"), "no file of January: {pruned}");
    let all = plan("EXPLAIN SELECT sensor FROM telemetry").await;
    assert!(
        all.contains("hour=00") && all.contains("hour=01"),
        "without a filter both hours are read: {all}"
    );
}
