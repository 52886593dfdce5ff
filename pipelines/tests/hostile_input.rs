//! The `vigil-guard` binary on hostile input: a clear payload in a line that becomes a dead
//! letter reaches no file and no log line, and a line over the length limit is a dead letter
//! that keeps only its head.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::AsArray;
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

const KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The text every payload of the input carries; none of it may be stored or logged in clear.
const SECRET: &str = "TOPSECRET-c4f1e9";

fn guard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vigil-guard"))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every cell of every Parquet file under `dir`, as text. The archive compresses its files, so
/// a clear value could hide from a search of the raw bytes; the decoded cells cannot.
fn parquet_cells(dir: &Path) -> Vec<String> {
    let mut cells = Vec::new();
    for path in files(dir) {
        if path.extension().is_none_or(|e| e != "parquet") {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            for column in batch.columns() {
                match column.data_type() {
                    DataType::Binary => cells.extend(
                        column
                            .as_binary::<i32>()
                            .iter()
                            .flatten()
                            .map(|b| String::from_utf8_lossy(b).into_owned()),
                    ),
                    // Numbers and times cannot hold the text; every kind of string can.
                    DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Dictionary(..) => {
                        let text = arrow::compute::cast(column, &DataType::Utf8).unwrap();
                        cells.extend(text.as_string::<i32>().iter().flatten().map(str::to_owned));
                    }
                    _ => {}
                }
            }
        }
    }
    cells
}

/// Runs the job in `dir` with the payload key, debug logs and the default embedded replica.
fn run_guard(dir: &Path, args: &[&str]) -> Output {
    guard()
        .current_dir(dir)
        .env("VIGIL_KEY", KEY)
        .env("RUST_LOG", "debug")
        .env_remove("VIGIL_ARCHIVE")
        .env_remove("VIGIL_REPLICA")
        .args(["--alerts", "none", "--no-progress"])
        .args(args)
        .output()
        .unwrap()
}

/// Asserts that the secret is in no file under `dir` but `input`, in no decoded Parquet cell and
/// in neither output stream.
fn assert_no_clear_secret(dir: &Path, input: &Path, output: &Output) {
    let secret = SECRET.as_bytes();
    for path in files(dir) {
        if path == input {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !contains(&bytes, secret),
            "the clear payload is in {}",
            path.display()
        );
    }
    for cell in parquet_cells(&dir.join("vigil-data")) {
        assert!(
            !cell.contains(SECRET),
            "the clear payload is archived: {cell}"
        );
    }
    assert!(
        !contains(&output.stderr, secret),
        "the clear payload is logged"
    );
    assert!(
        !contains(&output.stdout, secret),
        "the clear payload is printed"
    );
}

#[test]
fn clear_payloads_of_dead_letters_reach_no_file_and_no_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("readings.ndjson");
    let ts = 1_767_225_600_000u64;
    let mut text = String::new();
    for i in 0..20u64 {
        text.push_str(&format!(
            "{{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":{},\"seq\":{i},\"value\":21.5,\"payload\":\"{SECRET} good {i}\"}}\n",
            ts + i * 1000
        ));
    }
    let bad = [
        // Cut off inside the payload string.
        format!("{{\"ts\":{ts},\"source\":\"veh-1\",\"payload\":\"{SECRET}"),
        // A value of the wrong type, the payload well-formed.
        format!(
            "{{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":{ts},\"value\":\"warm\",\"payload\":\"{SECRET}\"}}"
        ),
        // An object payload in a line with a bad timestamp.
        format!(
            "{{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":\"yesterday\",\"value\":1,\"payload\":{{\"note\":\"{SECRET}\"}}}}"
        ),
        // Escaped quotes inside the payload, and no closing brace.
        format!(
            "{{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":{ts},\"value\":1,\"payload\":\"a \\\"{SECRET}\\\" b\""
        ),
        // A bare value after the payload key.
        format!("{{\"source\":\"veh-1\",\"payload\":{SECRET} and more,\"value\":1}}"),
        // A late reading (an hour behind), with a payload.
        format!(
            "{{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":{},\"value\":1,\"payload\":\"{SECRET} late\"}}",
            ts - 3_600_000
        ),
    ];
    for line in &bad {
        text.push_str(line);
        text.push('\n');
    }
    let mut bytes = text.into_bytes();
    // A line that is not UTF-8.
    bytes.extend_from_slice(
        format!("{{\"source\":\"veh-1\",\"payload\":\"{SECRET}\",\"x\":\"").as_bytes(),
    );
    bytes.extend_from_slice(b"\xff\xfe\"}\n");
    std::fs::write(&input, &bytes).unwrap();

    let output = run_guard(dir, &["--input", "readings.ndjson"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("events in 20,") && stderr.contains("errors 7 (late 1)"),
        "{stderr}"
    );
    assert!(
        dir.join("vigil-replica.db").is_file(),
        "the embedded replica is written"
    );
    assert_no_clear_secret(dir, &input, &output);
    let cells = parquet_cells(&dir.join("vigil-data/errors"));
    let removed = cells
        .iter()
        .filter(|c| c.contains("<payload removed>"))
        .count();
    assert_eq!(
        removed, 4,
        "the malformed lines' raw text keeps its shape with the payload masked: {cells:?}"
    );
}

#[test]
fn a_line_over_the_limit_is_a_dead_letter_and_the_flag_raises_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("readings.ndjson");
    let ts = 1_767_225_600_000u64;
    let reading = |i: u64, payload: &str| {
        format!(
            "{{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":{},\"seq\":{i},\"value\":21.5,\"payload\":\"{payload}\"}}\n",
            ts + i * 1000
        )
    };
    let mut text = String::new();
    for i in 0..10 {
        text.push_str(&reading(i, "note"));
    }
    // Three MiB, the secret at its head, where the dead letter keeps the line.
    text.push_str(&reading(10, &format!("{SECRET} {}", "x".repeat(3 << 20))));
    for i in 11..20 {
        text.push_str(&reading(i, "note"));
    }
    std::fs::write(&input, text).unwrap();

    // Small chunks, so that the long line is cut across units rather than read whole.
    let limited = [
        "--input",
        "readings.ndjson",
        "--max-line-bytes",
        "1048576",
        "--chunk-bytes",
        "65536",
    ];
    let output = run_guard(dir, &limited);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("events in 19,") && stderr.contains("errors 1 (late 0)"),
        "{stderr}"
    );
    assert_no_clear_secret(dir, &input, &output);
    let cells = parquet_cells(&dir.join("vigil-data/errors"));
    assert!(cells.iter().any(|c| c == "oversize"), "{cells:?}");
    assert!(
        cells
            .iter()
            .any(|c| c.contains("1048576-byte limit") && c.contains("--max-line-bytes")),
        "the reason says the limit and how to raise it: {cells:?}"
    );
    let raw = cells
        .iter()
        .find(|c| c.starts_with("{\"source\""))
        .expect("the dead letter keeps the head of the line");
    assert!(raw.len() <= 4096 + 32, "{} bytes kept", raw.len());

    // Raised over the line's length, the limit lets the line be read as a reading.
    let raised = tempfile::tempdir().unwrap();
    std::fs::copy(&input, raised.path().join("readings.ndjson")).unwrap();
    let output = run_guard(
        raised.path(),
        &["--input", "readings.ndjson", "--max-line-bytes", "4194304"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("events in 20,") && stderr.contains("errors 0"),
        "{stderr}"
    );
}
