//! Rows per second into a SQL replica: generated telemetry metadata written by the replica
//! sink's writers (one per worker, each its own connection and transactions), as a job with
//! `-w N` writes them; then the same rows again, every one a conflict that updates; then the
//! whole guard job with the replica on and off.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use vigil_datasets::generator::{RocketParams, rocket_readings};
use vigil_operators::{Reading, Record};
use vigil_pipelines::connect::replica::{Replica, ReplicaUrl};
use vigil_pipelines::sinks::replica::{Batch, Bulk, ReplicaTable, TableChange, Target};

/// Readings per batch the generator's rows are cut into (as the job's sink cuts them).
const BATCH_ROWS: usize = 100_000;

/// Runs the benchmark against the PostgreSQL server at `server` (a database of its own is
/// created there) and an SQLite file.
pub fn run(rows: u64, workers: usize, server: &str, end_to_end: bool) -> anyhow::Result<()> {
    let batches = generate(rows)?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!("replica sink, {total} telemetry_meta rows, batches of {BATCH_ROWS}, -w {workers}");

    let database = "vigil_bench_replica";
    for bulk in [Bulk::Copy, Bulk::Arrays] {
        let url = fresh_database(server, database)?;
        let insert = write_all(&url, &batches, workers, bulk, "first")?;
        let update = write_all(&url, &batches, workers, bulk, "again")?;
        let count = count_rows(&url)?;
        anyhow::ensure!(
            count == total as i64,
            "PostgreSQL holds {count} rows, not {total}"
        );
        let mode = format!("{bulk:?}").to_lowercase();
        println!(
            "  PostgreSQL ({mode:<6}), new rows        {:>9.0} rows/s ({insert:.2} s)",
            total as f64 / insert
        );
        println!(
            "  PostgreSQL ({mode:<6}), all conflicts   {:>9.0} rows/s ({update:.2} s)",
            total as f64 / update
        );
    }

    let dir = tempfile::tempdir()?;
    let sqlite = format!("sqlite://{}", dir.path().join("replica.db").display());
    migrate(&sqlite)?;
    let lite = write_all(&sqlite, &batches, 1, Bulk::Auto, "first")?;
    anyhow::ensure!(count_rows(&sqlite)? == total as i64, "SQLite lost rows");
    println!(
        "  SQLite, new rows (1 writer) {:>9.0} rows/s ({:.2} s)",
        total as f64 / lite,
        lite
    );

    if end_to_end {
        let spec = spec(rows);
        let input = format!("gen:rocket?vehicles={}&ticks={}", spec.vehicles, spec.ticks);
        let url = fresh_database(server, database)?;
        for (label, replica) in [("no replica", "none"), ("PostgreSQL replica", url.as_str())] {
            let (events, seconds) = guard(&input, workers, replica)?;
            println!(
                "  vigil-guard, {label:<19} {:>9.0} events/s ({seconds:.2} s, {events} events)",
                events / seconds
            );
        }
        anyhow::ensure!(
            count_rows(&url)? == total as i64,
            "the job's replica lost rows"
        );
    }
    Ok(())
}

fn spec(rows: u64) -> RocketParams {
    RocketParams {
        vehicles: 50,
        ticks: (rows / 400).max(1),
        ..RocketParams::default()
    }
}

/// The generator's readings as telemetry batches, built before timing.
fn generate(rows: u64) -> anyhow::Result<Vec<arrow::record_batch::RecordBatch>> {
    let mut batches = Vec::new();
    let mut chunk: Vec<Reading> = Vec::with_capacity(BATCH_ROWS);
    for reading in rocket_readings(&spec(rows)) {
        chunk.push(reading);
        if chunk.len() == BATCH_ROWS {
            batches.push(Reading::to_batch(&chunk)?);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        batches.push(Reading::to_batch(&chunk)?);
    }
    Ok(batches)
}

/// Drops and creates `name` on the server, migrated; returns its URL.
fn fresh_database(server: &str, name: &str) -> anyhow::Result<String> {
    let runtime = Arc::new(tokio::runtime::Runtime::new()?);
    let mut admin = Replica::connect(&ReplicaUrl::parse(server)?, &runtime)
        .context("the benchmark needs a PostgreSQL server whose user may create databases")?;
    // Outside a transaction, which CREATE and DROP DATABASE refuse.
    admin.query_text(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"), &[])?;
    admin.query_text(&format!("CREATE DATABASE {name}"), &[])?;
    let url = match server.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("{server} names no database"),
    };
    migrate(&url)?;
    Ok(url)
}

fn migrate(url: &str) -> anyhow::Result<()> {
    let runtime = Arc::new(tokio::runtime::Runtime::new()?);
    let mut replica = Replica::connect(&ReplicaUrl::parse(url)?, &runtime)?;
    vigil_pipelines::connect::migrations::migrate(&mut replica, false)?;
    Ok(())
}

fn count_rows(url: &str) -> anyhow::Result<i64> {
    let runtime = Arc::new(tokio::runtime::Runtime::new()?);
    let mut replica = Replica::connect(&ReplicaUrl::parse(url)?, &runtime)?;
    let rows = replica.query_text("SELECT CAST(count(*) AS TEXT) FROM telemetry_meta", &[])?;
    Ok(rows
        .first()
        .and_then(|r| r.first().cloned().flatten())
        .and_then(|n| n.parse().ok())
        .unwrap_or(-1))
}

/// Writes the batches through `writers` connections at once, batch `i` by writer
/// `i % writers`, each batch in its own transaction with its position; returns the seconds.
fn write_all(
    url: &str,
    batches: &[arrow::record_batch::RecordBatch],
    writers: usize,
    bulk: Bulk,
    label: &str,
) -> anyhow::Result<f64> {
    let url = ReplicaUrl::parse(url)?;
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let url = url.clone();
                scope.spawn(move || -> anyhow::Result<()> {
                    let runtime = Arc::new(
                        tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?,
                    );
                    let mut target = Target::connect(&url, None, bulk, &runtime)?;
                    for (i, rows) in batches.iter().enumerate().skip(w).step_by(writers) {
                        let batch = Batch {
                            part: format!("telemetry/{w}of{writers}"),
                            before: i as i64,
                            changes: vec![TableChange {
                                table: ReplicaTable::TelemetryMeta,
                                deletes: Vec::new(),
                                upserts: vec![rows.clone()],
                            }],
                        };
                        target.write(&format!("bench-{label}"), &batch)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a writer panicked"))?)
    })?;
    Ok(started.elapsed().as_secs_f64())
}

/// Runs vigil-guard over the generator with `replica`; returns events and seconds.
fn guard(input: &str, workers: usize, replica: &str) -> anyhow::Result<(f64, f64)> {
    let dir = tempfile::tempdir()?;
    let summary = dir.path().join("summary.json");
    let status = Command::new(crate::binaries::sibling_binary("vigil-guard")?)
        .args(["--input", input, "--alerts", "none", "--no-progress"])
        .args(["--scores", "none", "--replica", replica])
        .arg("--archive")
        .arg(dir.path().join("archive"))
        .arg("--spill")
        .arg(dir.path().join("spill"))
        .args(["-w", &workers.to_string()])
        .arg("--summary-json")
        .arg(&summary)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running vigil-guard")?;
    anyhow::ensure!(status.success(), "vigil-guard failed: {status}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary)?)?;
    Ok((
        json["events_in"].as_f64().unwrap_or(f64::NAN),
        json["elapsed_s"].as_f64().unwrap_or(f64::NAN),
    ))
}
