//! End to end: vigil-guard on a dataset with malformed lines, read back with vigil-sql and with
//! the parquet crate, alerts compared with a sequential reference, and a second run compared
//! byte for byte with the first.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use vigil_datasets::generator::{RocketParams, rocket_readings};
use vigil_operators::{AlertStatus, Reading, alert_id, is_degenerate_std};
use vigil_pipelines::jobs::guard::{AlertsOut, GuardJob, InputParams, Summary, run};
use vigil_pipelines::runtime::stop::Stop;
use vigil_tests::archive::{parquet_files, read_alerts, sql, sql_count, strings};
use vigil_tests::jobs::guard_job;

/// Lines no reader can use, each with a word its dead letter's reason must contain.
const MALFORMED: &[(&str, &str)] = &[
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000",
        "EOF",
    ),
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000}",
        "missing field `value`",
    ),
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000,\"value\":\"21.5\"}",
        "invalid type",
    ),
    (
        "{\"source\":7,\"name\":\"temp_c\",\"ts\":1767225600000,\"value\":1.0}",
        "invalid type",
    ),
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":-5,\"value\":1.0}",
        "out of range",
    ),
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":\"yesterday\",\"value\":1.0}",
        "not a valid timestamp",
    ),
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000,\"value\":1e999}",
        "number out of range",
    ),
    (
        "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000,\"value\":NaN}",
        "expected value",
    ),
    ("[1,2,3]", "invalid type"),
    ("not json at all", "expected"),
];

struct Dataset {
    dir: PathBuf,
    valid: Vec<Reading>,
}

/// A dataset directory: generated rocket telemetry with the malformed lines spread through it,
/// an empty file and a README that is not data.
fn dataset(root: &Path) -> Dataset {
    let dir = root.join("input");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = RocketParams {
        vehicles: 12,
        ticks: 400,
        interval_ms: 20_000,
        anomaly_rate: 0.004,
        ..RocketParams::default()
    };
    let valid: Vec<Reading> = rocket_readings(&spec).collect();
    let mut file =
        std::io::BufWriter::new(std::fs::File::create(dir.join("telemetry.ndjson")).unwrap());
    let every = valid.len() / (MALFORMED.len() + 1);
    for (i, reading) in valid.iter().enumerate() {
        if i > 0 && i % every == 0 && i / every <= MALFORMED.len() {
            writeln!(file, "{}", MALFORMED[i / every - 1].0).unwrap();
        }
        writeln!(file, "{}", serde_json::to_string(reading).unwrap()).unwrap();
    }
    file.flush().unwrap();
    std::fs::write(dir.join("empty.ndjson"), "").unwrap();
    std::fs::write(dir.join("README.txt"), "notes about this dataset\n").unwrap();
    Dataset { dir, valid }
}

fn job(input: &Path, archive: &Path, alerts: &Path, workers: usize) -> GuardJob {
    let input = InputParams::Paths(vec![input.to_path_buf()]);
    let mut job = guard_job(input, archive, &["zscore:window=60,threshold=6"], workers);
    job.alerts = AlertsOut::File(alerts.to_path_buf());
    // Small units and files, so that several workers and files are exercised.
    job.settings.chunk_bytes = 256 << 10;
    job.settings.max_rows_per_file = 20_000;
    job
}

/// The z-score guard written out plainly over whole series.
fn reference_alerts(
    readings: &[Reading],
    window: usize,
    threshold: f64,
) -> Vec<(String, AlertStatus, i64)> {
    let mut series: BTreeMap<(&str, &str), Vec<&Reading>> = BTreeMap::new();
    for r in readings {
        series.entry((&r.source, &r.name)).or_default().push(r);
    }
    let mut out = Vec::new();
    for ((source, name), mut rs) in series {
        rs.sort_by(|a, b| {
            (a.ts, a.seq)
                .cmp(&(b.ts, b.seq))
                .then(a.value.total_cmp(&b.value))
        });
        let mut open: Option<String> = None;
        for i in window..rs.len() {
            let last: Vec<f64> = rs[i - window..i].iter().map(|r| r.value).collect();
            let mean = last.iter().sum::<f64>() / window as f64;
            let std = (last.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / window as f64).sqrt();
            let z = if is_degenerate_std(std, mean) {
                0.0
            } else {
                (rs[i].value - mean).abs() / std
            };
            // Raised at `threshold` deviations, cleared below half of it (the default).
            match (z >= threshold, z < threshold / 2.0, &open) {
                (true, _, None) => {
                    let id = alert_id("zscore", source, name, rs[i].ts).to_string();
                    out.push((id.clone(), AlertStatus::Raised, rs[i].ts));
                    open = Some(id);
                }
                (_, true, Some(id)) => {
                    out.push((id.clone(), AlertStatus::Cleared, rs[i].ts));
                    open = None;
                }
                _ => {}
            }
        }
    }
    out.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    out
}

/// Compares alert lists and reports the first difference rather than both lists.
fn assert_same_alerts(got: &[(String, AlertStatus, i64)], expected: &[(String, AlertStatus, i64)]) {
    if let Some(i) = (0..got.len().min(expected.len())).find(|&i| got[i] != expected[i]) {
        panic!(
            "alert {i} differs: got {:?}, expected {:?}",
            &got[i..(i + 3).min(got.len())],
            &expected[i..(i + 3).min(expected.len())]
        );
    }
    assert_eq!(got.len(), expected.len(), "alert counts differ");
}

fn parquet_rows(dir: &Path) -> usize {
    parquet_files(dir)
        .iter()
        .map(|path| {
            let file = std::fs::File::open(path).unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap();
            reader.map(|b| b.unwrap().num_rows()).sum::<usize>()
        })
        .sum()
}

fn relative_files(dir: &Path) -> Vec<String> {
    parquet_files(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

fn run_job(job: GuardJob) -> Summary {
    run(job, Stop::default()).expect("the guard job runs")
}

#[test]
fn guard_job_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(tmp.path());
    let (archive, alerts) = (tmp.path().join("archive"), tmp.path().join("alerts.ndjson"));
    let summary = run_job(job(&data.dir, &archive, &alerts, 2));

    // Every valid line is archived; every bad line and file is a dead letter.
    let valid = data.valid.len() as u64;
    assert_eq!(summary.events_in, valid);
    assert_eq!(summary.archived, valid);
    assert_eq!(summary.errors, MALFORMED.len() as u64 + 2, "{summary}");
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM telemetry"),
        valid as i64
    );
    assert_eq!(parquet_rows(&archive.join("telemetry")), valid as usize);
    let telemetry_files = relative_files(&archive.join("telemetry"));
    assert!(telemetry_files.len() >= 2, "{telemetry_files:?}");
    assert!(
        telemetry_files
            .iter()
            .all(|f| f.starts_with("date=2026-01-01/hour=")),
        "hive layout: {telemetry_files:?}"
    );

    // Dead letters carry a reason a user can act on.
    let errors = sql(
        &archive,
        "SELECT origin, kind, reason FROM errors ORDER BY origin",
    );
    let reasons: Vec<(String, String)> = errors
        .iter()
        .flat_map(|b| strings(b, 0).into_iter().zip(strings(b, 2)))
        .collect();
    for (_, expected) in MALFORMED {
        assert!(
            reasons.iter().any(|(_, r)| r.contains(expected)),
            "no dead letter mentions {expected:?}: {reasons:?}"
        );
    }
    assert!(
        reasons
            .iter()
            .any(|(o, r)| o.ends_with("empty.ndjson:1") && r.contains("empty"))
    );
    assert!(
        reasons
            .iter()
            .any(|(o, r)| o.ends_with("README.txt") && r.contains("unsupported file type"))
    );
    assert!(
        reasons.iter().any(|(o, _)| o.contains("telemetry.ndjson:")),
        "origins give file and line"
    );

    // Alerts equal the sequential reference, in event-time order.
    let written = read_alerts(&alerts);
    let expected = reference_alerts(&data.valid, 60, 6.0);
    assert!(
        expected.len() >= 10,
        "the dataset must raise alerts ({})",
        expected.len()
    );
    let got: Vec<_> = written
        .iter()
        .map(|a| (a.alert_id.to_string(), a.status, a.ts))
        .collect();
    assert_same_alerts(&got, &expected);
    assert_eq!(
        summary.alerts_raised,
        expected
            .iter()
            .filter(|a| a.1 == AlertStatus::Raised)
            .count() as u64
    );
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM alerts"),
        expected.len() as i64
    );

    // Every reading the z-score judged (all but each series' first 60) has its score, and
    // the score of each raising reading is at least the raise level.
    let mut per_series: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for r in &data.valid {
        *per_series.entry((&r.source, &r.name)).or_default() += 1;
    }
    let judged: i64 = per_series.values().map(|n| (n - 60).max(0)).sum();
    assert_eq!(
        sql_count(
            &archive,
            "SELECT count(*) FROM anomaly_scores WHERE guard = 'zscore'"
        ),
        judged
    );
    assert_eq!(
        sql_count(
            &archive,
            "SELECT count(*) FROM alerts a JOIN anomaly_scores s \
             ON a.source = s.source AND a.name = s.name AND a.ts = s.ts \
             WHERE a.status = 'raised' AND s.score < 0.5"
        ),
        0,
        "a raising reading scores at least the raise level"
    );

    // The same input again: byte-identical alerts and the same archive contents and files.
    let (archive2, alerts2) = (
        tmp.path().join("archive2"),
        tmp.path().join("alerts2.ndjson"),
    );
    run_job(job(&data.dir, &archive2, &alerts2, 2));
    assert_eq!(
        std::fs::read(&alerts).unwrap(),
        std::fs::read(&alerts2).unwrap()
    );
    assert_eq!(relative_files(&archive), relative_files(&archive2));
    let rows = "SELECT event_id, source, name, ts, seq, value FROM telemetry ORDER BY event_id";
    assert_eq!(sql(&archive, rows), sql(&archive2, rows));

    // Replaying into the same archive rewrites the same files instead of adding duplicates.
    run_job(job(&data.dir, &archive, &alerts2, 2));
    assert_eq!(relative_files(&archive), relative_files(&archive2));
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM telemetry"),
        valid as i64
    );

    // One worker gives the same alerts as two.
    let (archive3, alerts3) = (
        tmp.path().join("archive3"),
        tmp.path().join("alerts3.ndjson"),
    );
    run_job(job(&data.dir, &archive3, &alerts3, 1));
    assert_eq!(
        std::fs::read(&alerts).unwrap(),
        std::fs::read(&alerts3).unwrap()
    );
}

#[test]
fn late_records_are_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("input");
    std::fs::create_dir_all(&dir).unwrap();
    let mut lines = String::new();
    for i in 0..100 {
        let r = Reading::new(
            "veh-1",
            "temp_c",
            1_767_225_600_000 + i * 1000,
            20.0 + (i % 3) as f64,
        );
        lines.push_str(&serde_json::to_string(&r).unwrap());
        lines.push('\n');
    }
    // An hour behind everything else: far beyond the allowed lateness whatever the chunking.
    let late = Reading::new("veh-1", "temp_c", 1_767_225_600_000 - 3_600_000, 99.0);
    let late_line = serde_json::to_string(&late).unwrap();
    std::fs::write(dir.join("a.ndjson"), format!("{lines}{late_line}\n")).unwrap();
    let (archive, alerts) = (tmp.path().join("archive"), tmp.path().join("alerts.ndjson"));
    let summary = run_job({
        let mut custom = job(&dir, &archive, &alerts, 1);
        custom.settings.lateness_ms = 5_000;
        custom
    });
    assert_eq!(
        (summary.events_in, summary.late, summary.errors),
        (100, 1, 1)
    );
    let batches = sql(&archive, "SELECT kind, reason, raw FROM errors");
    assert_eq!(strings(&batches[0], 0), ["late"]);
    assert!(strings(&batches[0], 1)[0].contains("--lateness"));
    assert!(strings(&batches[0], 2)[0].contains("99"));
}

#[test]
fn nothing_readable_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("input");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("bad.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(dir.join("bad.ndjson"), "{}\n").unwrap();
    let (archive, alerts) = (tmp.path().join("archive"), tmp.path().join("alerts.ndjson"));
    let summary = run_job(job(&dir, &archive, &alerts, 2));
    assert_eq!((summary.events_in, summary.errors), (0, 2));
    assert!(
        run(
            job(&tmp.path().join("missing"), &archive, &alerts, 1),
            Stop::default()
        )
        .expect_err("a missing input is an error")
        .to_string()
        .contains("does not exist")
    );
}

#[test]
fn default_dataset_and_csv_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let (archive, alerts) = (tmp.path().join("archive"), tmp.path().join("alerts.ndjson"));
    let summary = run_job({
        let mut custom = job(tmp.path(), &archive, &alerts, 2);
        custom.settings.input = InputParams::Default;
        custom
    });
    // NAB's machine temperature file has 22,695 rows; its series is named after the file. The
    // file repeats the hour 02:00-02:55 of 2014-01-07; eleven of those rows are more than the
    // allowed 10 s behind the newest event time and are late.
    assert_eq!(
        (summary.events_in, summary.errors, summary.late),
        (22_684, 11, 11)
    );
    let names = sql(&archive, "SELECT DISTINCT source, name FROM telemetry");
    assert_eq!(strings(&names[0], 0), ["nab"]);
    assert_eq!(
        strings(&names[0], 1),
        ["machine_temperature_system_failure"]
    );
    assert!(
        summary.alerts_raised > 0,
        "the machine failure raises alerts"
    );
}

#[test]
fn files_covering_different_periods_are_not_late() {
    // One file per series, as NAB ships them: the second file's series is a year older. Each
    // file has its own watermark, so neither makes the other late, at one worker or two.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("input");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, start) in [
        ("a_recent.ndjson", 1_767_225_600_000i64),
        ("b_older.ndjson", 1_735_689_600_000),
    ] {
        let mut lines = String::new();
        for i in 0..500 {
            let r = Reading::new("veh-1", file, start + i * 60_000, (i % 7) as f64);
            lines.push_str(&serde_json::to_string(&r).unwrap());
            lines.push('\n');
        }
        std::fs::write(dir.join(file), lines).unwrap();
    }
    for workers in [1, 2] {
        let (archive, alerts) = (
            tmp.path().join(format!("archive{workers}")),
            tmp.path().join("alerts.ndjson"),
        );
        let summary = run_job({
            let mut custom = job(&dir, &archive, &alerts, workers);
            custom.settings.chunk_bytes = 16 << 10;
            custom
        });
        assert_eq!(
            (summary.events_in, summary.late, summary.errors),
            (1000, 0, 0),
            "{workers} workers"
        );
    }
}
