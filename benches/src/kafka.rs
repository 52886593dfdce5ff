//! `vigil-bench kafka`: the guard job reading a Kafka topic.
//!
//! Starts a tansu broker on loopback (the same fixture the tests use), produces generated
//! readings keyed by source into a topic of several partitions, then runs the real
//! `vigil-guard` binary with `--input kafka://…?stop=end` into a Parquet archive and reports
//! events/s in total and per core.

use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use vigil_datasets::generator::{RocketParams, rocket_readings};
use vigil_operators::Record;
use vigil_tests::kafka::Broker;

/// Produces `readings` readings and measures vigil-guard consuming them with `workers`.
pub fn throughput(
    spec: &RocketParams,
    workers: usize,
    partitions: i32,
    guards: &[String],
) -> anyhow::Result<()> {
    let broker = Broker::start();
    let topic = "bench-telemetry";
    broker.create_topic(topic, partitions);
    let started = Instant::now();
    let lines: Vec<(String, String)> = rocket_readings(spec)
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
    let status = Command::new(crate::binaries::sibling_binary("vigil-guard")?)
        .args(["--input", &url, "--archive"])
        .arg(tmp.path().join("archive"))
        .args([
            "--alerts",
            "none",
            "--no-progress",
            "--scores",
            "none",
            "--replica",
            "none",
        ])
        .arg("--state")
        .arg(tmp.path().join("state"))
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
    if let Some(cpu) = summary["cpu_seconds"].as_f64() {
        println!(
            "  vigil-guard CPU        {cpu:.2}s: {:.0} events per CPU-second",
            events / cpu
        );
    }
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

/// Produces readings at a fixed rate with event time = now into a live vigil-guard, and
/// measures, for the planted spikes, the time from producing the reading to receiving its
/// alert from the alert topic.
pub fn latency(rate: u64, seconds: u64, workers: usize) -> anyhow::Result<()> {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    let broker = Broker::start();
    let topic = "latency-telemetry";
    broker.create_topic(topic, 4);
    broker.create_topic("telemetry-alerts", 1);
    let tmp = tempfile::tempdir()?;
    let url = format!(
        "kafka://{}/{topic}?group=latency&idle=200ms",
        broker.address()
    );
    let summary_path = tmp.path().join("summary.json");
    let mut guard = Command::new(crate::binaries::sibling_binary("vigil-guard")?)
        .arg("--summary-json")
        .arg(&summary_path)
        .arg("--spill")
        .arg(tmp.path().join("spill"))
        .arg("--state")
        .arg(tmp.path().join("state"))
        .args(["--input", &url, "--archive"])
        .arg(tmp.path().join("archive"))
        .args(["--alerts", &format!("kafka://{}", broker.address())])
        .args([
            "--guard",
            "threshold:name=spike,max=100",
            "--lateness",
            "0s",
        ])
        .args([
            "--scores",
            "none",
            "--no-progress",
            "--replica",
            "none",
            "-w",
            &workers.to_string(),
        ])
        .spawn()
        .context("starting vigil-guard")?;

    let now_ms = || {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    };
    let alerts: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "latency-reader")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "1")
        .create()?;
    alerts.subscribe(&["telemetry-alerts"])?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("linger.ms", "1")
        .create()?;
    // Let the job connect and the reader join before the clock starts.
    std::thread::sleep(Duration::from_secs(2));

    // The broker's own floor: one message at a time through a topic, produce to consume.
    broker.create_topic("latency-ping", 1);
    let ping: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "latency-ping")
        .set("fetch.wait.max.ms", "1")
        .create()?;
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment.add_partition_offset("latency-ping", 0, rdkafka::Offset::Beginning)?;
    ping.assign(&assignment)?;
    let mut round_trips = Vec::new();
    for _ in 0..50 {
        let sent = Instant::now();
        let _ = producer.send(
            BaseRecord::<str, str>::to("latency-ping")
                .key("p")
                .payload("p"),
        );
        producer.flush(Duration::from_secs(5))?;
        while let Some(Err(_)) | None = ping.poll(Duration::from_millis(1)) {
            if sent.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        round_trips.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    round_trips.sort_by(f64::total_cmp);

    // 100 sources × 10 metrics, and every 50 ms one source reports a spike.
    let total = rate * seconds;
    let started = Instant::now();
    let mut latencies: Vec<f64> = Vec::new();
    let mut spikes = 0u64;
    for i in 0..total {
        let due = Duration::from_secs_f64(i as f64 / rate as f64);
        while started.elapsed() < due {
            producer.poll(Duration::ZERO);
            drain_alerts(&alerts, &mut latencies, now_ms);
        }
        let spike = i % (rate / 20).max(1) == 0;
        // Spikes go round the sources, so each has long cleared before its next one.
        let source = format!("veh-{}", if spike { spikes % 100 } else { i % 100 });
        let (name, value) = if spike {
            spikes += 1;
            ("spike", 1000.0)
        } else if (i / 100) % 10 == 0 {
            ("spike", 1.0)
        } else {
            ("temp_c", 20.0 + (i % 7) as f64)
        };
        let line = format!(
            "{{\"source\":\"{source}\",\"name\":\"{name}\",\"ts\":{},\"seq\":{i},\"value\":{value}}}",
            now_ms()
        );
        let mut record = BaseRecord::to(topic)
            .key(source.as_str())
            .payload(line.as_str());
        while let Err((_, back)) = producer.send(record) {
            record = back;
            producer.poll(Duration::from_millis(1));
        }
    }
    producer.flush(Duration::from_secs(30))?;
    let produced_in = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && (latencies.len() as u64) < spikes {
        drain_alerts(&alerts, &mut latencies, now_ms);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &guard.id().to_string()])
        .status();
    let _ = guard.wait();

    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "vigil-guard live from Kafka, -w {workers}: {total} readings at {rate}/s target ({:.0}/s achieved), {spikes} planted spikes",
        total as f64 / produced_in
    );
    anyhow::ensure!(!latencies.is_empty(), "no alert arrived");
    println!("  alerts received        {} of {spikes}", latencies.len());
    println!(
        "  broker alone (ms)      p50 {:.1}   p99 {:.1}   (one message produced and consumed)",
        round_trips[round_trips.len() / 2],
        round_trips[round_trips.len() * 99 / 100]
    );
    println!(
        "  produce → alert (ms)   p50 {:.1}   p99 {:.1}   max {:.1}   (through the broker twice)",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path)?)?;
    println!(
        "  produce → alert sent   p50 {}   p99 {}   (vigil-guard's own summary: in through the broker, out to the producer)",
        summary["alert_lag_p50_ms"], summary["alert_lag_p99_ms"]
    );
    Ok(())
}

/// Reads whatever raised alerts have arrived and notes how long after their event time.
fn drain_alerts(
    consumer: &rdkafka::consumer::BaseConsumer,
    latencies: &mut Vec<f64>,
    now_ms: impl Fn() -> i64,
) {
    use rdkafka::Message;
    while let Some(Ok(message)) = consumer.poll(std::time::Duration::ZERO) {
        let Some(payload) = message.payload() else {
            continue;
        };
        let Ok(alert) = serde_json::from_slice::<vigil_operators::Alert>(payload) else {
            continue;
        };
        if alert.status == vigil_operators::AlertStatus::Raised {
            latencies.push((now_ms() - alert.ts) as f64);
        }
    }
}
