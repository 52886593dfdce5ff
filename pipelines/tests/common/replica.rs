//! What the replica tests share: the jobs they run and how they read a replica back and
//! compare it with the archive.

#![allow(dead_code)] // Each test file uses some of these.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use vigil_operators::{Alert, AlertStatus, Reading, Record};
use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};

use vigil_pipelines::jobs::guard::{GuardJob, InputParams};
use vigil_pipelines::sinks::replica::{Output, ReplicaParams};

pub const GUARDS: [&str; 2] = ["zscore:window=30,threshold=3.5", "level_shift"];

/// Rocket telemetry with planted anomalies: alerts are raised and cleared.
pub fn rocket(vehicles: usize, ticks: u64) -> String {
    format!("gen:rocket?vehicles={vehicles}&ticks={ticks}&interval_ms=1000&anomaly_rate=0.01")
}

pub fn guard_job(input: &str, dir: &Path, replica: ReplicaParams, workers: usize) -> GuardJob {
    let input = InputParams::Generator(input.into());
    let mut job = vigil_tests::jobs::guard_job(input, &dir.join("archive"), &GUARDS, workers);
    job.settings.spill_dir = dir.join("spill");
    job.state_dir = dir.join("state");
    job.settings.replica = Some(ReplicaParams {
        batch_rows: 20_000,
        ..replica
    });
    job
}

/// A replica at `url` that takes every output, `telemetry_meta` too.
pub fn options(url: &str) -> ReplicaParams {
    ReplicaParams {
        tables: Output::ALL.to_vec(),
        ..ReplicaParams::new(ReplicaUrl::parse(url).unwrap())
    }
}

/// Every record of the Parquet files under `dir`.
pub fn records<R: Record>(dir: &Path) -> Vec<R> {
    vigil_tests::archive::read_records(dir)
}

/// A replica's rows of `query`, as text.
pub fn rows(url: &str, query: &str) -> Vec<Vec<Option<String>>> {
    let runtime = Arc::new(tokio::runtime::Runtime::new().unwrap());
    let mut replica = Replica::connect(&ReplicaUrl::parse(url).unwrap(), &runtime).unwrap();
    replica.query_text(query, &[]).unwrap()
}

/// A time column as epoch milliseconds, as text, in the replica's dialect.
pub fn ms(url: &str, column: &str) -> String {
    if url.starts_with("sqlite://") {
        format!("CAST({column} AS TEXT)")
    } else {
        format!("CAST(CAST(extract(epoch FROM {column}) * 1000 AS BIGINT) AS TEXT)")
    }
}

pub fn text(value: &Option<String>) -> String {
    value.clone().unwrap_or_default()
}

pub fn number(value: &Option<String>) -> f64 {
    value.as_deref().unwrap().parse().unwrap()
}

pub fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Checks that the guard tables of the replica at `url` hold what the archive in `dir` holds.
pub fn assert_guard_tables_match(url: &str, dir: &Path) {
    let archive = dir.join("archive");
    // telemetry_meta: one row per reading, metadata equal.
    let readings: BTreeMap<String, Reading> = records::<Reading>(&archive.join("telemetry"))
        .into_iter()
        .map(|r| (r.event_id.to_string(), r))
        .collect();
    assert!(readings.len() > 10_000, "the run archived telemetry");
    let replicated = rows(
        url,
        &format!(
            "SELECT event_id, source, name, {}, CAST(value AS TEXT), key_id FROM telemetry_meta",
            ms(url, "ts")
        ),
    );
    assert_eq!(
        replicated.len(),
        readings.len(),
        "one telemetry_meta row per reading"
    );
    for row in &replicated {
        let reading = &readings[&text(&row[0])];
        assert_eq!(text(&row[1]), reading.source.as_str());
        assert_eq!(text(&row[2]), reading.name.as_str());
        assert_eq!(number(&row[3]) as i64, reading.ts, "{row:?}");
        assert!(
            close(number(&row[4]), reading.value),
            "{row:?} vs {reading:?}"
        );
        assert_eq!(row[5].as_deref(), reading.key_id.as_deref());
    }

    // alert_history: every raise and clear once; alerts: the ones not cleared.
    let alerts = records::<Alert>(&archive.join("alerts"));
    let raised = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Raised)
        .count();
    assert!(raised > 0, "the run raised alerts");
    let history: BTreeSet<(String, String, String)> = alerts
        .iter()
        .map(|a| {
            let status = match a.status {
                AlertStatus::Raised => "raised",
                AlertStatus::Cleared => "cleared",
            };
            (a.alert_id.to_string(), status.to_owned(), a.ts.to_string())
        })
        .collect();
    assert_eq!(
        history.len(),
        alerts.len(),
        "the archive holds each alert once"
    );
    let replicated: BTreeSet<(String, String, String)> = rows(
        url,
        &format!(
            "SELECT alert_id, status, {} FROM alert_history",
            ms(url, "ts")
        ),
    )
    .iter()
    .map(|r| (text(&r[0]), text(&r[1]), text(&r[2])))
    .collect();
    assert_eq!(
        replicated, history,
        "alert_history holds every raise and clear"
    );
    let cleared: BTreeSet<&str> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Cleared)
        .map(|a| a.alert_id.as_str())
        .collect();
    let open: BTreeSet<String> = alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Raised && !cleared.contains(a.alert_id.as_str()))
        .map(|a| a.alert_id.to_string())
        .collect();
    assert!(!cleared.is_empty(), "the run cleared alerts");
    let replicated: BTreeSet<String> = rows(url, "SELECT alert_id, status FROM alerts")
        .iter()
        .map(|r| {
            assert_eq!(text(&r[1]), "raised");
            text(&r[0])
        })
        .collect();
    assert_eq!(
        replicated, open,
        "alerts holds exactly the alerts still open"
    );

    // Every part ended at the end of the input.
    let positions = rows(url, "SELECT CAST(position AS TEXT) FROM vigil_progress");
    assert!(!positions.is_empty());
    for p in positions {
        assert_eq!(text(&p[0]), i64::MAX.to_string());
    }
}

pub fn guard_binary(input: &str, dir: &Path, url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-guard"));
    command
        .args(["--input", input, "--archive"])
        .arg(dir.join("archive"))
        .arg("--spill")
        .arg(dir.join("spill"))
        .args([
            "--alerts",
            "none",
            "--no-progress",
            "-w",
            "2",
            "--replica",
            url,
            "--replica-tables",
            "all",
        ])
        .args(GUARDS.iter().flat_map(|g| ["--guard", g]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}
