//! `vigil-bench sql`: analytical queries over a generated archive, timed in vigil-sql and in
//! DuckDB (its Python package, through `tests/duckdb/query.py`) on the same Parquet files in
//! the same run, each engine's answer checked against the other's.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use vigil_datasets::generator::{RocketParams, rocket_labels, rocket_readings};
use vigil_operators::{Alert, AlertStatus, Reading, alert_id};
use vigil_pipelines::sinks::archive::{ArchiveLocation, write_records};
use vigil_tests::duckdb::{self, Answer, canonical_rows, compare};

/// Readings per archive file: about what vigil-guard's hourly partitions hold at this load.
const ROWS_PER_WRITE: usize = 1_000_000;

/// The benchmark's queries: what an analyst asks of telemetry history. Each runs as written
/// in both engines (`date_bin` is a macro over `time_bucket` in DuckDB).
pub const QUERIES: [(&str, &str); 10] = [
    (
        "overview",
        "SELECT count(*), count(DISTINCT source), avg(value), min(ts), max(ts) FROM telemetry",
    ),
    (
        "per-series stats",
        "SELECT source, name, count(*), avg(value), stddev_samp(value), min(value), max(value) \
         FROM telemetry GROUP BY source, name ORDER BY source, name",
    ),
    (
        "15-minute buckets",
        "SELECT date_bin(INTERVAL '15 minutes', ts) AS bucket, name, avg(value), max(value) \
         FROM telemetry GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    (
        "one hour partition",
        "SELECT source, avg(value), max(value) FROM telemetry \
         WHERE date = DATE '2026-01-01' AND hour = 5 AND name = 'temp_c' \
         GROUP BY source ORDER BY source",
    ),
    (
        "ts range scan",
        "SELECT name, count(*), avg(value) FROM telemetry \
         WHERE ts >= TIMESTAMP '2026-01-01 07:10:00' AND ts < TIMESTAMP '2026-01-01 07:40:00' \
         GROUP BY name ORDER BY name",
    ),
    (
        "median per metric",
        "SELECT name, median(value) FROM telemetry GROUP BY name ORDER BY name",
    ),
    (
        "top 20 thrust",
        "SELECT source, ts, value FROM telemetry WHERE name = 'thrust_kn' \
         ORDER BY value DESC, source, ts LIMIT 20",
    ),
    (
        "moving average",
        "SELECT source, max(moving) FROM (SELECT source, avg(value) OVER (PARTITION BY source \
         ORDER BY ts ROWS BETWEEN 59 PRECEDING AND CURRENT ROW) AS moving FROM telemetry \
         WHERE name = 'temp_c') AS m GROUP BY source ORDER BY source",
    ),
    (
        "alerts join readings",
        "SELECT a.name, count(*), avg(t.value) FROM alerts a JOIN telemetry t \
         ON t.source = a.source AND t.name = a.name AND t.ts BETWEEN a.window_start AND a.window_end \
         GROUP BY a.name ORDER BY a.name",
    ),
    (
        "distinct event ids",
        "SELECT count(DISTINCT event_id) FROM telemetry WHERE value > 0",
    ),
];

/// Generates the archive at `dir` (kept between runs with the same spec), then times every
/// query `repeat` times in each engine and prints the best times.
pub fn run(readings: u64, dir: &Path, repeat: usize) -> anyhow::Result<()> {
    duckdb::require();
    let vehicles = 50;
    let spec = RocketParams {
        vehicles,
        ticks: (readings / (vehicles as u64 * 8)).max(1),
        interval_ms: 1_000,
        anomaly_rate: 0.0005,
        ..RocketParams::default()
    };
    let archive = dir.join(format!("archive-{}x{}", spec.vehicles, spec.ticks));
    generate(&spec, &archive)?;
    let files = vigil_tests::files::parquet_files(&archive);
    let bytes: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "archive: {} ({} readings, {} files, {:.0} MB)",
        archive.display(),
        spec.readings(),
        files.len(),
        bytes as f64 / 1e6
    );

    let statements: Vec<String> = QUERIES.iter().map(|(_, q)| (*q).to_owned()).collect();
    let duck = duckdb::run(&archive, &statements, repeat);

    let runtime = tokio::runtime::Runtime::new()?;
    let session = runtime.block_on(vigil_sql::Session::open(
        &archive.display().to_string(),
        vigil_sql::Limits::default(),
        None,
    ))?;
    println!(
        "{:<22} {:>12} {:>12} {:>8}  answers",
        "query", "vigil-sql ms", "DuckDB ms", "ratio"
    );
    let (mut ours_total, mut theirs_total) = (0.0, 0.0);
    for ((name, sql), answer) in QUERIES.iter().zip(&duck) {
        let mut best = f64::INFINITY;
        let mut rows = Vec::new();
        for _ in 0..repeat.max(1) {
            let start = Instant::now();
            let result = runtime
                .block_on(session.query(sql))
                .with_context(|| format!("vigil-sql: {name}"))?;
            best = best.min(start.elapsed().as_secs_f64());
            rows = canonical_rows(&result.batches);
        }
        let (theirs, agreement) = match answer {
            Answer::Rows(reference, seconds) => (
                seconds.iter().copied().fold(f64::INFINITY, f64::min),
                match compare(&rows, reference) {
                    Ok(()) => "same".to_owned(),
                    Err(difference) => format!("DIFFER: {difference}"),
                },
            ),
            Answer::Error(error) => (f64::NAN, format!("DuckDB failed: {error}")),
        };
        ours_total += best;
        theirs_total += theirs;
        println!(
            "{name:<22} {:>12.1} {:>12.1} {:>8.2}  {agreement}",
            best * 1e3,
            theirs * 1e3,
            best / theirs
        );
    }
    println!(
        "{:<22} {:>12.1} {:>12.1} {:>8.2}",
        "total",
        ours_total * 1e3,
        theirs_total * 1e3,
        ours_total / theirs_total
    );
    Ok(())
}

/// Writes the generator's readings as the `telemetry` table and its planted anomaly windows
/// as the `alerts` table, unless a complete archive of the same spec is already there.
fn generate(spec: &RocketParams, archive: &Path) -> anyhow::Result<()> {
    let done = archive.join(".complete");
    if done.exists() {
        return Ok(());
    }
    if archive.exists() {
        std::fs::remove_dir_all(archive)?;
    }
    std::fs::create_dir_all(archive)?;
    let location = ArchiveLocation::parse(&archive.display().to_string())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let start = Instant::now();
    let mut chunk: Vec<Reading> = Vec::with_capacity(ROWS_PER_WRITE);
    let mut part = 0;
    for reading in rocket_readings(spec) {
        chunk.push(reading);
        if chunk.len() == ROWS_PER_WRITE {
            runtime.block_on(write_records(&location, &chunk, &format!("{part:04}")))?;
            part += 1;
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        runtime.block_on(write_records(&location, &chunk, &format!("{part:04}")))?;
    }
    let alerts: Vec<Alert> = rocket_labels(spec)
        .into_iter()
        .map(|label| Alert {
            alert_id: alert_id("planted", &label.source, &label.name, label.start_ms),
            guard: "planted".into(),
            severity: "warning".into(),
            source: label.source.as_str().into(),
            name: label.name.as_str().into(),
            ts: label.start_ms,
            // The readings around the anomaly, as a guard's window would hold them.
            window_start: label.start_ms - 60_000,
            window_end: label.end_ms,
            observed: 0.0,
            expected: 0.0,
            score: 0.0,
            status: AlertStatus::Raised,
            reaction: label.kind.as_str().into(),
        })
        .collect();
    runtime.block_on(write_records(&location, &alerts, "0000"))?;
    std::fs::write(&done, b"")?;
    eprintln!(
        "generated {} readings and {} alerts in {:.1} s",
        spec.readings(),
        alerts.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
