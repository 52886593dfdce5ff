//! The `vigil-sql` binary as users run it: one-shot, `-f` files, piped shell scripts, output
//! files, the read-only guard, memory and time limits, and exit codes.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

mod common;

use std::fs::File;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use arrow::array::{Float64Array, RecordBatch};
use common::archive;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use tempfile::TempDir;

fn vigil_sql(archive: &TempDir, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vigil-sql"))
        .arg("--archive")
        .arg(archive.path())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn one_shot_runs_every_statement_in_order() {
    let dir = archive();
    let out = vigil_sql(
        &dir,
        &[
            "--format",
            "csv",
            "SELECT count(*) AS n FROM readings; SELECT source, level FROM alerts ORDER BY level",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n12\nsource,level\ndev-0,2\ndev-2,3\n");
}

#[test]
fn a_file_of_statements_stops_at_the_first_failure_and_names_it() {
    let dir = archive();
    let file = dir.path().join("q.sql");
    std::fs::write(
        &file,
        "-- per hour\nSELECT hour, count(*) AS n\nFROM readings\nGROUP BY hour ORDER BY hour;\n\
         SELECT nope FROM readings;\nSELECT 1 AS never;\n",
    )
    .unwrap();
    let out = vigil_sql(
        &dir,
        &["--format", "csv", "-f", file.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(1), "a failed statement exits 1");
    assert_eq!(text(&out.stdout), "hour,n\n0,6\n1,6\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("statement 2") && stderr.contains("nope"),
        "{stderr}"
    );

    let missing = vigil_sql(&dir, &["-f", "/nonexistent/q.sql"], None);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("-f"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn writes_are_refused_with_exit_code_3_and_change_nothing() {
    let dir = archive();
    let copy = dir.path().join("copy.parquet");
    let before = std::fs::read_dir(dir.path()).unwrap().count();
    for sql in [
        "CREATE TABLE t AS SELECT 1".to_owned(),
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/tmp/x/'".to_owned(),
        "INSERT INTO readings VALUES ('x', 1.0, '2026-01-01', '00')".to_owned(),
        format!("COPY readings TO '{}'", copy.display()),
        "DROP TABLE readings".to_owned(),
        "CREATE VIEW v AS SELECT 1".to_owned(),
        "EXPLAIN ANALYZE INSERT INTO readings VALUES ('x', 1.0, '2026-01-01', '00')".to_owned(),
    ] {
        let out = vigil_sql(&dir, &[&sql], None);
        assert_eq!(out.status.code(), Some(3), "{sql}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("read-only"), "{sql}");
    }
    assert!(!copy.exists(), "COPY wrote nothing");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), before);
    let out = vigil_sql(
        &dir,
        &["--format", "csv", "SELECT count(*) AS n FROM readings"],
        None,
    );
    assert_eq!(text(&out.stdout), "n\n12\n", "the table is unchanged");
}

#[test]
fn a_query_over_the_memory_limit_fails_cleanly_and_fits_under_a_larger_one() {
    let dir = archive();
    // A hash join keeps its build side in memory: 2 million keys need far more than 8 MiB.
    let join = "SELECT count(*) AS n FROM generate_series(1, 2000000) a(x) \
                JOIN generate_series(1, 2000000) b(y) ON x = y";
    let out = vigil_sql(&dir, &["--memory-limit", "8M", join], None);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--memory-limit") && stderr.contains("8.0 MiB"),
        "{stderr}"
    );
    let out = vigil_sql(
        &dir,
        &["--memory-limit", "1G", "--format", "csv", join],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n\n2000000\n");

    let bad = vigil_sql(&dir, &["--memory-limit", "lots", "SELECT 1"], None);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("512M"), "{}", text(&bad.stderr));
}

#[test]
fn a_query_over_the_time_limit_is_stopped() {
    let dir = archive();
    let started = std::time::Instant::now();
    let out = vigil_sql(
        &dir,
        &[
            "--timeout",
            "300ms",
            "SELECT count(*) FROM generate_series(1, 100000000000) t(v) WHERE v % 7 = 3",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--timeout 300ms"),
        "{}",
        text(&out.stderr)
    );
    // Not a timing assertion: only that the query did not run to its end (hours).
    assert!(started.elapsed().as_secs() < 120);
}

#[test]
fn parquet_output_goes_to_a_file_that_reads_back() {
    let dir = archive();
    let path = dir.path().join("out.parquet");
    let out = vigil_sql(
        &dir,
        &[
            "--format",
            "parquet",
            "--output",
            path.to_str().unwrap(),
            "SELECT source, sum(value) AS total FROM readings GROUP BY source ORDER BY source",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 3);
    // Sources 0, 1, 2 take the values i with i % 3 equal to them: 0+3+6+9 = 18, 22, 26.
    let totals: Vec<f64> = batches
        .iter()
        .flat_map(|b| {
            b.column(1)
                .as_any()
                .downcast_ref::<Float64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    assert_eq!(totals, [18.0, 22.0, 26.0]);
    // And vigil-sql reads a Parquet file named in the query, wherever it is.
    let sql = format!("SELECT count(*) AS n FROM '{}'", path.display());
    let out = vigil_sql(&dir, &["--format", "csv", &sql], None);
    assert_eq!(text(&out.stdout), "n\n3\n", "{}", text(&out.stderr));

    let stdout = vigil_sql(&dir, &["--format", "parquet", "SELECT 1"], None);
    assert_eq!(stdout.status.code(), Some(2));
    assert!(text(&stdout.stderr).contains("--output"));
}

#[test]
fn csv_of_no_rows_still_names_the_columns() {
    let dir = archive();
    let out = vigil_sql(
        &dir,
        &[
            "--format",
            "csv",
            "SELECT source, value FROM readings WHERE value < 0",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "source,value\n");
}

#[test]
fn a_piped_script_takes_multi_line_statements_and_shell_commands() {
    let dir = archive();
    let script = "\\d\n.schema alerts\nSELECT source,\n  count(*) AS n\nFROM readings\n\
                  GROUP BY source\nORDER BY source;\n.mode csv\nSELECT max(level) AS top FROM alerts;\n\
                  \\q\nSELECT 'never' AS after_quit;\n";
    let out = vigil_sql(&dir, &[], Some(script));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for expected in [
        "| alerts   | 4       |",
        "| readings | 4       |",
        "| level  | Int64 ",
        "| dev-1  | 4 |",
        "top\n3\n",
    ] {
        assert!(stdout.contains(expected), "{expected:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("never"), "\\q ends the script");

    // A statement without its `;` at the end of the input still runs.
    let out = vigil_sql(&dir, &["--format", "csv"], Some("SELECT 7 AS seven"));
    assert_eq!(text(&out.stdout), "seven\n7\n");

    let out = vigil_sql(&dir, &[], Some("\\bogus\n"));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("\\?"), "{}", text(&out.stderr));
}
