//! Kafka end to end, against a real Kafka-protocol broker (tansu, started by the fixture):
//! telemetry produced over 4 partitions is read by the guard job into the archive and its
//! alerts reach the alert topic equal to a backfill of the same records from a file; bad
//! messages become dead letters named by partition and offset; offsets are committed, so a
//! second run of the same group reads nothing again.

#![allow(clippy::unwrap_used)] // Tests fail loudly on purpose.

use std::io::Write;
use std::path::Path;

use vigil_datasets::generator::{RocketParams, rocket_readings};
use vigil_operators::{Alert, AlertStatus, Reading, Record};
use vigil_pipelines::connect::kafka::KafkaEndpoint;
use vigil_pipelines::jobs::guard::{AlertsOut, GuardJob, InputParams, Summary, run};
use vigil_pipelines::runtime::stop::Stop;
use vigil_pipelines::sources::kafka::KafkaInput;
use vigil_tests::archive::{read_alerts, sql, sql_count, strings};
use vigil_tests::jobs::guard_job;
use vigil_tests::kafka::Broker;

const GUARDS: [&str; 2] = ["zscore:window=60,threshold=6", "level_shift"];

/// Messages no reader can use.
const BAD: [&str; 3] = [
    "not json at all",
    "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000}",
    "{\"source\":\"veh-1\",\"name\":\"temp_c\",\"ts\":1767225600000,\"value\":\"high\"}",
];

fn job(input: InputParams, archive: &Path, alerts: AlertsOut, workers: usize) -> GuardJob {
    let mut job = guard_job(input, archive, &GUARDS, workers);
    job.alerts = alerts;
    job
}

fn run_job(job: GuardJob) -> Summary {
    run(job, Stop::default()).expect("the guard job runs")
}

/// Alerts in a comparable order.
fn sorted(mut alerts: Vec<Alert>) -> Vec<Alert> {
    alerts.sort_by(|a, b| (a.ts, &a.alert_id, a.status).cmp(&(b.ts, &b.alert_id, b.status)));
    alerts
}

/// The generator's readings, as JSON lines, run from a file under `dir`: the backfill the
/// Kafka runs are compared with (its summary and its alerts, sorted).
fn backfill(spec: &RocketParams, dir: &Path) -> (Vec<Reading>, Vec<String>, Summary, Vec<Alert>) {
    let readings: Vec<Reading> = rocket_readings(spec).collect();
    let lines: Vec<String> = readings.iter().map(Record::to_json).collect();
    let file = dir.join("telemetry.ndjson");
    let mut out = std::fs::File::create(&file).unwrap();
    for line in &lines {
        writeln!(out, "{line}").unwrap();
    }
    drop(out);
    let alerts = dir.join("backfill-alerts.ndjson");
    let summary = run_job(job(
        InputParams::Paths(vec![file]),
        &dir.join("backfill"),
        AlertsOut::File(alerts.clone()),
        1,
    ));
    (readings, lines, summary, sorted(read_alerts(&alerts)))
}

#[test]
fn kafka_in_and_out_equals_a_backfill_and_commits_its_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = RocketParams {
        vehicles: 12,
        ticks: 400,
        anomaly_rate: 1.0 / 150.0,
        ..RocketParams::default()
    };
    let (readings, lines, backfill, expected) = backfill(&spec, tmp.path());
    assert!(
        expected
            .iter()
            .filter(|a| a.status == AlertStatus::Raised)
            .count()
            >= 5,
        "the data raises alerts: {}",
        expected.len()
    );

    // The same records through Kafka: 4 partitions, keyed by source as a producer would.
    let broker = Broker::start();
    broker.create_topic("telemetry", 4);
    broker.create_topic("telemetry-alerts", 2);
    let messages = readings
        .iter()
        .zip(&lines)
        .map(|(r, line)| (r.source.as_str(), line.as_bytes()));
    broker.produce("telemetry", messages);
    broker.produce("telemetry", BAD.iter().map(|m| ("veh-1", m.as_bytes())));

    let url = format!(
        "kafka://{}/telemetry?group=guard-test&stop=end",
        broker.address()
    );
    let input = InputParams::from_args(&[url]).unwrap();
    let alerts_out =
        AlertsOut::Kafka(KafkaEndpoint::parse(&format!("kafka://{}", broker.address())).unwrap());
    let archive = tmp.path().join("from-kafka");
    let summary = run_job(job(input.clone(), &archive, alerts_out.clone(), 2));

    // Everything archived once; every bad message a dead letter named by partition and offset.
    let n = readings.len() as u64;
    assert_eq!(backfill.events_in, n);
    assert_eq!((summary.events_in, summary.archived), (n, n));
    assert_eq!(summary.errors, BAD.len() as u64);
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM telemetry"),
        n as i64
    );
    assert_eq!(
        sql_count(&archive, "SELECT count(DISTINCT event_id) FROM telemetry"),
        n as i64
    );
    let batches = sql(
        &archive,
        "SELECT origin, reason FROM errors ORDER BY origin",
    );
    let origins = strings(&batches[0], 0);
    assert_eq!(origins.len(), BAD.len());
    assert!(
        origins
            .iter()
            .all(|o| o.starts_with("kafka:telemetry/") && o.contains('@')),
        "{origins:?}"
    );

    // The alert topic holds exactly the backfill's alerts, keyed by source, guard in a header.
    let consumed = broker.consume_all("telemetry-alerts");
    let mut got = Vec::new();
    for message in &consumed {
        let alert: Alert = serde_json::from_str(&message.value).unwrap();
        assert_eq!(message.key.as_deref(), Some(alert.source.as_str()));
        let guard = message.headers.iter().find(|(k, _)| k == "guard");
        assert_eq!(guard.map(|(_, v)| v.as_str()), Some(alert.guard.as_str()));
        got.push(alert);
    }
    assert_eq!(sorted(got), expected);
    assert_eq!(
        summary.alerts_raised + summary.alerts_cleared,
        expected.len() as u64
    );

    // Offsets are committed at the partitions' ends, so the group's next run reads nothing.
    let ends: Vec<i64> = (0..4).map(|p| broker.end_offset("telemetry", p)).collect();
    let committed = broker.committed("guard-test", "telemetry", 4);
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>());
    let again = run_job(job(
        input.clone(),
        &tmp.path().join("again"),
        AlertsOut::Off,
        2,
    ));
    assert_eq!((again.events_in, again.errors), (0, 0));

    // Read the whole topic once more into the same archive: its files of each partition are
    // named by their first offset, so the replay rewrites them and adds no row, with one worker
    // as with two.
    broker.rewind("guard-test", "telemetry");
    let replay = run_job(job(input, &archive, AlertsOut::Off, 1));
    assert_eq!(replay.events_in, n);
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM telemetry"),
        n as i64
    );
    assert_eq!(
        sql_count(&archive, "SELECT count(*) FROM errors"),
        BAD.len() as i64
    );
}

#[test]
fn kafka_urls_and_missing_topics_give_clear_errors() {
    let broker = Broker::start();
    let url = format!("kafka://{}/nowhere?group=g&stop=end", broker.address());
    let tmp = tempfile::tempdir().unwrap();
    let error = run(
        job(
            InputParams::from_args(&[url]).unwrap(),
            tmp.path(),
            AlertsOut::Off,
            1,
        ),
        Stop::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("topic nowhere does not exist") && error.contains("create it"),
        "{error}"
    );

    // The alert topic must exist before the job starts.
    broker.create_topic("telemetry", 1);
    let url = format!("kafka://{}/telemetry?stop=end", broker.address());
    let alerts = AlertsOut::parse(&format!("kafka://{}", broker.address())).unwrap();
    let error = run(
        job(
            InputParams::from_args(&[url]).unwrap(),
            tmp.path(),
            alerts,
            1,
        ),
        Stop::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("alert topic telemetry-alerts does not exist"),
        "{error}"
    );

    let error = KafkaInput::parse("kafka://127.0.0.1:9/t?user=u")
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs a password"), "{error}");
}

#[test]
fn a_live_job_commits_only_what_the_archive_holds() {
    let tmp = tempfile::tempdir().unwrap();
    // Ten hours of event time, a reading a minute per metric, so that hours close while the
    // job runs.
    let spec = RocketParams {
        vehicles: 6,
        ticks: 600,
        interval_ms: 60_000,
        ..RocketParams::default()
    };
    let readings: Vec<_> = rocket_readings(&spec).collect();
    let lines: Vec<String> = readings.iter().map(Record::to_json).collect();
    // Two partitions for three workers: one worker reads nothing and must not hold the
    // others back.
    let broker = Broker::start();
    broker.create_topic("live", 2);
    broker.produce(
        "live",
        readings
            .iter()
            .zip(&lines)
            .map(|(r, line)| (r.source.as_str(), line.as_bytes())),
    );
    let ends: Vec<i64> = (0..2).map(|p| broker.end_offset("live", p)).collect();

    // Following the topic (no stop=end) until told to stop.
    let url = format!("kafka://{}/live?group=live&idle=1s", broker.address());
    let archive = tmp.path().join("archive");
    let live = job(
        InputParams::from_args(&[url]).unwrap(),
        &archive,
        AlertsOut::Off,
        3,
    );
    let stop = Stop::default();
    let running = std::thread::spawn({
        let stop = stop.clone();
        move || run(live, stop)
    });

    // While it runs, offsets get committed, but only up to what the archive holds: the
    // newest hour is still open, so no partition is committed to its end yet, and every
    // committed record is in an archive file already.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let committed = loop {
        let committed: Vec<i64> = broker
            .committed("live", "live", 2)
            .into_iter()
            .map(|c| c.unwrap_or(0))
            .collect();
        if committed.iter().all(|c| *c > 0) {
            break committed;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no offsets committed while running: {committed:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let held = sql_count(&archive, "SELECT count(*) FROM telemetry");
    assert!(
        held >= committed.iter().sum::<i64>(),
        "committed {committed:?} but the archive holds {held} rows"
    );
    assert!(
        committed.iter().zip(&ends).all(|(c, e)| c < e),
        "committed {committed:?} of {ends:?} while the last hour is open"
    );

    stop.trigger();
    let summary = running.join().unwrap().expect("the live job stops cleanly");
    assert_eq!(summary.events_in, readings.len() as u64);
    assert_eq!(summary.archived, readings.len() as u64);
    let committed = broker.committed("live", "live", 2);
    assert_eq!(committed, ends.iter().map(|e| Some(*e)).collect::<Vec<_>>());
}

#[test]
fn alerts_wait_in_the_spill_while_the_broker_is_away() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = RocketParams {
        vehicles: 6,
        ticks: 300,
        anomaly_rate: 1.0 / 100.0,
        ..RocketParams::default()
    };
    let (readings, lines, _, expected) = backfill(&spec, tmp.path());
    assert!(!expected.is_empty());

    // Telemetry from one broker, alerts to another that hangs for the whole first run.
    let input = Broker::start();
    input.create_topic("telemetry", 2);
    input.produce(
        "telemetry",
        readings
            .iter()
            .zip(&lines)
            .map(|(r, line)| (r.source.as_str(), line.as_bytes())),
    );
    let alerts = Broker::start();
    alerts.create_topic("telemetry-alerts", 1);
    alerts.pause();
    let url = format!("kafka://{}/telemetry?group=spill&stop=end", input.address());
    let to = AlertsOut::parse(&format!("kafka://{}", alerts.address())).unwrap();
    let key = vigil_pipelines::runtime::crypto::PayloadKey::from_hex(&"5e".repeat(32)).unwrap();
    let archive = tmp.path().join("archive");
    let mut offline = job(InputParams::from_args(&[url]).unwrap(), &archive, to, 2);
    offline.settings.key = Some(key);
    let first = run_job(offline.clone());
    // The job archived everything meanwhile, and kept the alerts, sealed, on local disk.
    assert_eq!(first.archived, readings.len() as u64);
    // The spill's segment files, together.
    let mut log = Vec::new();
    for entry in std::fs::read_dir(archive.with_extension("spill")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
        {
            log.extend(std::fs::read(path).unwrap());
        }
    }
    assert!(log.len() > 100);
    assert!(!String::from_utf8_lossy(&log).contains("alert_id"));
    alerts.resume();
    assert!(alerts.consume_all("telemetry-alerts").is_empty());

    // The broker is back: the next start sends what waited, in order.
    let second = run_job(offline);
    assert_eq!(second.events_in, 0);
    let mut got: Vec<Alert> = alerts
        .consume_all("telemetry-alerts")
        .iter()
        .map(|m| serde_json::from_str(&m.value).unwrap())
        .collect();
    let in_order = got.clone();
    got = sorted(got);
    got.dedup_by(|a, b| a.alert_id == b.alert_id && a.status == b.status);
    assert_eq!(got, expected);
    assert_eq!(
        sorted(in_order.clone()),
        in_order,
        "drained in event-time order"
    );
}
