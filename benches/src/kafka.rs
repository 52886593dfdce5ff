//! `vigil-bench kafka`: the guard job reading a Kafka topic.
//!
//! Starts a tansu broker on loopback (the same fixture the tests use), produces generated
//! readings keyed by source into a topic of several partitions, then runs the real
//! `vigil-guard` binary with `--input kafka://…?stop=end` into a Parquet archive and reports
//! events/s in total and per core.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use vigil_datasets::generator::{RocketSpec, rocket_readings};
use vigil_operators::Record;
use vigil_tests::kafka::Broker;

/// Produces `readings` readings and measures vigil-guard consuming them with `workers`.
pub fn throughput(
    readings: u64,
    sources: usize,
    workers: usize,
    partitions: i32,
    guards: &[String],
) -> anyhow::Result<()> {
    let broker = Broker::start();
    let topic = "bench-telemetry";
    broker.create_topic(topic, partitions);
    let spec = RocketSpec {
        vehicles: sources,
        ticks: (readings / (sources as u64 * 8)).max(1),
        ..RocketSpec::default()
    };
    let started = Instant::now();
    let lines: Vec<(String, String)> = rocket_readings(&spec)
        .map(|r| (r.source.to_string(), r.to_json()))
        .collect();
    let produced = lines.len() as u64;
    broker.produce(topic, lines.iter().map(|(k, v)| (k.as_str(), v.as_bytes())));
    eprintln!(
        "produced {produced} readings into {partitions} partitions in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    drop(lines);

    let tmp = tempfile::tempdir()?;
    let summary_path = tmp.path().join("summary.json");
    let guards: Vec<String> = if guards.is_empty() {
        vec!["zscore:window=60,threshold=6".into()]
    } else {
        guards.to_vec()
    };
    let url = format!("kafka://{}/{topic}?group=bench&stop=end", broker.address());
    let broker_cpu = broker.cpu_seconds();
    let wall = Instant::now();
    let status = Command::new(crate::sibling_binary("vigil-guard")?)
        .args(["--input", &url, "--archive"])
        .arg(tmp.path().join("archive"))
        .args(["--alerts", "none", "--no-progress", "--scores", "none"])
        .args(guards.iter().flat_map(|g| ["--guard", g.as_str()]))
        .args(["-w", &workers.to_string(), "--summary-json"])
        .arg(&summary_path)
        .status()
        .context("running vigil-guard")?;
    let wall = wall.elapsed().as_secs_f64();
    let broker_cpu = broker
        .cpu_seconds()
        .zip(broker_cpu)
        .map(|(after, before)| after - before);
    anyhow::ensure!(status.success(), "vigil-guard failed: {status}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path)?)?;
    let events = summary["events_in"].as_f64().unwrap_or(f64::NAN);
    anyhow::ensure!(
        events as u64 == produced,
        "vigil-guard read {events} of {produced} readings"
    );
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(workers) as f64;
    println!(
        "vigil-guard --input kafka:// ({partitions} partitions) -w {workers}, --guard {}",
        guards.join(" --guard ")
    );
    println!("  readings               {produced}");
    println!("  wall time              {wall:.2}s (connecting, reading, guards, archive, commit)");
    println!("  events/s total         {:.0}", events / wall);
    println!(
        "  events/s per core      {:.0}  ({cores} cores busy)",
        events / wall / cores
    );
    if let Some(cpu) = broker_cpu {
        println!(
            "  broker CPU meanwhile   {cpu:.2}s (tansu serving the fetches on the same cores)"
        );
    }
    println!(
        "  peak RSS               {:.0} MB",
        summary["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6
    );
    Ok(())
}
