//! Crash campaign against a real Kafka-protocol broker: vigil-guard follows a topic and is
//! killed with SIGKILL at random moments, then restarted from the group's committed offsets
//! and the guards' snapshot; a last run reads to the end. Every record produced must be in the
//! archive exactly once (nothing acknowledged is lost, nothing written twice), the alert topic
//! must hold every alert a file backfill of the same records raises and clears, and no other
//! (duplicates by id allowed, as consumers de-duplicate), and the offsets end committed at the
//! partitions' ends.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use arrow::array::AsArray;
use rand::{RngExt, SeedableRng};
use vigil_datasets::generator::{RocketParams, rocket_readings};
use vigil_operators::{Alert, Record};
use vigil_tests::kafka::Broker;

/// Guards over series and over sources, so that both kinds of state are snapshotted.
const GUARDS: [&str; 3] = ["zscore:window=20,threshold=3", "level_shift", "sequence"];

fn guard(input: &str, dir: &Path, alerts: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vigil-guard"));
    command
        .args(["--input", input, "--archive"])
        .arg(dir.join("archive"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--spill")
        .arg(dir.join("spill"))
        .args([
            "--alerts",
            alerts,
            "--no-progress",
            "-w",
            "2",
            "--replica",
            "none",
        ])
        .args(GUARDS.iter().flat_map(|g| ["--guard", g]))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Alerts as (id, status, event time, score), sorted, duplicates removed.
fn distinct(alerts: impl IntoIterator<Item = Alert>) -> Vec<(String, String, i64, u64)> {
    let mut seen: Vec<_> = alerts
        .into_iter()
        .map(|a| {
            let status = format!("{:?}", a.status);
            (a.alert_id.to_string(), status, a.ts, a.score.to_bits())
        })
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// How many times each event id occurs in the archive's telemetry files.
fn archived_ids(archive: &Path) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    for batch in vigil_tests::archive::read_batches(&archive.join("telemetry")) {
        let column = batch.column_by_name("event_id").unwrap();
        let ids_here = arrow::compute::cast(column, &arrow::datatypes::DataType::Utf8).unwrap();
        for id in ids_here.as_string::<i32>().iter().flatten() {
            *ids.entry(id.to_owned()).or_insert(0) += 1;
        }
    }
    ids
}

/// Waits until the group has committed an offset on some partition, or the deadline passes
/// (the campaign's premise check then says what went wrong).
fn wait_for_commit(broker: &Broker, deadline: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < deadline {
        if broker
            .committed("crash", "crash", 4)
            .iter()
            .any(Option::is_some)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killed_at_random_and_restarted_nothing_is_lost_or_archived_twice() {
    let tmp = tempfile::tempdir().unwrap();
    // 40,000 readings over 10 hours of event time, so that hours close (and offsets are
    // committed) while the job runs.
    let spec = RocketParams {
        vehicles: 25,
        ticks: 200,
        interval_ms: 180_000,
        ..RocketParams::default()
    };
    let readings: Vec<_> = rocket_readings(&spec).collect();
    let lines: Vec<String> = readings.iter().map(Record::to_json).collect();
    let broker = Broker::start();
    broker.create_topic("crash", 4);
    broker.create_topic("telemetry-alerts", 1);
    broker.create_topic("security-guard-feed", 1);
    let to_kafka = format!("kafka://{}", broker.address());

    let archive = tmp.path().join("archive");
    let follow = format!(
        "kafka://{}/crash?group=crash&idle=500ms&commit=200ms",
        broker.address()
    );
    // Another campaign: VIGIL_CRASH_SEED=N.
    let seed = std::env::var("VIGIL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut progress = Vec::new();
    std::thread::scope(|scope| {
        // The producer writes while the job consumes, gets killed and restarts.
        let producing = scope.spawn(|| {
            let messages = readings
                .iter()
                .zip(&lines)
                .map(|(r, line)| (r.source.as_str(), line.as_bytes()));
            broker.produce_in_batches("crash", 1, messages);
        });
        for run in 0..4 {
            let mut child = guard(&follow, tmp.path(), &to_kafka).spawn().unwrap();
            if run == 0 {
                // A cold machine may take seconds to start the first run; it is killed only
                // after it has committed, so that the restarts have a position to resume from.
                wait_for_commit(&broker, Duration::from_secs(120));
            }
            std::thread::sleep(Duration::from_millis(rng.random_range(700..2500)));
            child.kill().unwrap(); // SIGKILL: no clean-up of any kind.
            child.wait().unwrap();
            progress.push(broker.committed("crash", "crash", 4));
        }
        producing.join().unwrap();
    });
    assert!(
        progress.iter().flatten().any(Option::is_some),
        "some killed run committed offsets first, so restarts resume mid-topic: {progress:?}"
    );
    let status = guard(&format!("{follow}&stop=end"), tmp.path(), &to_kafka)
        .status()
        .unwrap();
    assert!(status.success(), "the last run reads to the end: {status}");

    let ids = archived_ids(&archive);
    let missing: Vec<&str> = readings
        .iter()
        .map(|r| r.event_id.as_str())
        .filter(|id| !ids.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} records lost after the kills (committed offsets along the way: {progress:?}); first: {:?}",
        missing.len(),
        readings.len(),
        missing.first()
    );
    assert_eq!(
        ids.len(),
        readings.len(),
        "no record the input does not hold"
    );
    // Files are named by partition and first offset, so a replay rewrites what an earlier run
    // wrote instead of adding to it: no record twice.
    let twice: Vec<(&String, &usize)> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} records archived more than once (committed offsets along the way: {progress:?}); e.g. {:?}",
        twice.len(),
        twice.first()
    );
    let ends: Vec<Option<i64>> = (0..4)
        .map(|p| Some(broker.end_offset("crash", p)))
        .collect();
    assert_eq!(broker.committed("crash", "crash", 4), ends);

    // The same records backfilled from a file, in one run: the alerts to expect.
    let file = tmp.path().join("readings.ndjson");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let reference = tmp.path().join("reference");
    let alerts_file = tmp.path().join("reference.ndjson");
    let status = guard(
        file.to_str().unwrap(),
        &reference,
        alerts_file.to_str().unwrap(),
    )
    .status()
    .unwrap();
    assert!(status.success());
    let expected = distinct(
        std::fs::read_to_string(&alerts_file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Alert>(l).unwrap()),
    );
    let raised = expected.iter().filter(|a| a.1 == "Raised").count();
    assert!(raised >= 10, "the data raises alerts: {raised}");
    let published: Vec<Alert> = ["telemetry-alerts", "security-guard-feed"]
        .iter()
        .flat_map(|topic| broker.consume_all(topic))
        .map(|m| serde_json::from_str(&m.value).unwrap())
        .collect();
    let got = distinct(published);
    let missing: Vec<_> = expected.iter().filter(|a| !got.contains(a)).collect();
    let extra: Vec<_> = got.iter().filter(|a| !expected.contains(a)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "alerts across the kills equal the backfill's: {} of {} missing (first {:?}), {} extra (first {:?})",
        missing.len(),
        expected.len(),
        missing.first(),
        extra.len(),
        extra.first()
    );
}
