//! `vigil-bench`: the figures vigil's README reports, one command per figure.
//!
//! `vigil-bench guard` generates N readings (1,000 sources × 8 metrics by default) as NDJSON,
//! runs the real `vigil-guard` binary on them with the z-score guard into a Parquet archive,
//! and prints events/s in total and per core, peak RSS, and guard state bytes per series.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use vigil_datasets::generator::{RocketParams, write_rocket_ndjson};

use binaries::sibling_binary;

mod binaries;
mod kafka;
mod launch;
mod nab;
mod replica;
mod sql;

#[derive(Debug, Parser)]
#[command(
    name = "vigil-bench",
    about = "vigil's throughput, latency and memory figures"
)]
struct Args {
    #[command(subcommand)]
    command: Bench,
}

/// The generated load a throughput benchmark runs, and with how many workers.
#[derive(Debug, clap::Args)]
struct Load {
    /// Readings to generate (rounded down to whole ticks of all sources).
    #[arg(long, default_value_t = 2_000_000)]
    readings: u64,
    /// Sources (vehicles); each has 8 metrics.
    #[arg(long, default_value_t = 1_000)]
    sources: usize,
    /// Timely workers (`-w`) for vigil-guard.
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
}

impl Load {
    /// The generator's rocket telemetry for this load.
    fn spec(&self) -> RocketParams {
        RocketParams {
            vehicles: self.sources,
            ticks: (self.readings / (self.sources as u64 * 8)).max(1),
            ..RocketParams::default()
        }
    }
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// vigil-guard from NDJSON to the Parquet archive with the z-score guard.
    Guard {
        #[command(flatten)]
        load: Load,
        /// Runs to make; the best and the median are reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Where to put the generated data and archives (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The guards to run (as vigil-guard's `--guard`; default the z-score guard).
        #[arg(long)]
        guard: Vec<String>,
        /// Run every statistical guard and the composite (zscore, ewma, mad, rate,
        /// level_shift, seasonal, composite) instead of --guard.
        #[arg(long)]
        suite: bool,
        /// Which guards archive per-reading scores (vigil-guard's `--scores`).
        #[arg(long, default_value = "all")]
        scores: String,
        /// The replica set-ups to time, comma-separated, alternating run by run: `none`
        /// (`--replica none --alerts none`), `default` (vigil-guard's default command line:
        /// the embedded SQLite replica in the run's directory, alerts to stdout), and
        /// `telemetry_meta` (the default plus one replica row per reading).
        #[arg(long, default_value = "none", value_delimiter = ',')]
        replica: Vec<ReplicaMode>,
    },
    /// Detection quality: NAB's standard score of vigil-guard's alerts on the NAB corpus.
    Nab {
        /// The NAB corpus: a directory with `combined_windows.json` and the CSV files.
        #[arg(long, default_value = "../shared/datasets/nab")]
        dir: PathBuf,
        /// The guards to run (as vigil-guard's `--guard`).
        #[arg(long, default_value = "composite")]
        guard: Vec<String>,
        /// Timely workers (`-w`) for vigil-guard.
        #[arg(long, short = 'w', default_value_t = 2)]
        workers: usize,
        /// Score a published detector instead of vigil: NAB's `results/<detector>` directory
        /// (one `<detector>_<file>.csv` per file, with an `anomaly_score` column), on the same
        /// files as vigil, so the two compare on equal terms.
        #[arg(long, value_name = "DIR")]
        results: Option<PathBuf>,
        /// The detector's threshold for --results: rows scoring at least this are detections
        /// (NAB's `config/thresholds.json` holds each detector's standard-profile threshold).
        #[arg(long, requires = "results")]
        threshold: Option<f64>,
        /// Replay each file through the guards in this process instead of running vigil-guard.
        #[arg(long)]
        in_process: bool,
    },
    /// Launch events: do the guards flag the engine events of real SpaceX launches?
    Launch {
        /// The launch dataset: one directory per flight with analysed.ndjson and events.ndjson.
        #[arg(long, default_value = "../shared/datasets/launch")]
        dir: PathBuf,
        /// The guards to run (as vigil-guard's `--guard`).
        #[arg(long, default_value = "rate:order=2")]
        guard: Vec<String>,
    },
    /// vigil-guard from a Kafka topic (4 partitions, keyed by source) to the archive.
    Kafka {
        #[command(flatten)]
        load: Load,
        /// Partitions of the topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// The guards to run (as vigil-guard's `--guard`; default the z-score guard).
        #[arg(long)]
        guard: Vec<String>,
    },
    /// Produce-to-alert latency of a live vigil-guard reading Kafka at a fixed rate.
    KafkaLatency {
        /// Readings per second to produce.
        #[arg(long, default_value_t = 100_000)]
        rate: u64,
        /// Seconds to produce for.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Timely workers (`-w`) for vigil-guard.
        #[arg(long, short = 'w', default_value_t = 2)]
        workers: usize,
    },
    /// vigil-archaeology over generated device events with every operator on: sequential
    /// patterns, motifs, entanglements, sessions per room and the field.
    Archaeology {
        /// Devices (`dev-0`, …).
        #[arg(long, default_value_t = 200)]
        devices: usize,
        /// Ticks; about a tenth of the devices emit per tick (100,000 ticks of 200 devices
        /// and 8 rooms are about 2,000,000 events).
        #[arg(long, default_value_t = 100_000)]
        ticks: u64,
        /// Rooms, whose guests hold meetings.
        #[arg(long, default_value_t = 8)]
        rooms: usize,
        /// Timely workers (`-w`) for vigil-archaeology.
        #[arg(long, short = 'w', default_value_t = 2)]
        workers: usize,
    },
    /// Analytical SQL over a generated archive: vigil-sql against DuckDB on the same files.
    Sql {
        /// Readings in the archive (50 vehicles × 8 metrics per tick, one tick a second).
        #[arg(long, default_value_t = 20_000_000)]
        readings: u64,
        /// Where the archive is generated and kept for the next run.
        #[arg(long, default_value = "target/bench-sql")]
        dir: PathBuf,
        /// Runs of each query in each engine; the best time is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Rows per second into the SQL replica: telemetry metadata through the replica sink's
    /// writers into PostgreSQL (new rows, then all conflicts) and SQLite, and optionally the
    /// whole guard job with the replica on and off.
    Replica {
        /// Telemetry rows (50 vehicles × 8 metrics per tick).
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        /// Writers, one per worker, as a job with `-w N` has.
        #[arg(long, short = 'w', default_value_t = 2)]
        workers: usize,
        /// The PostgreSQL server; a database `vigil_bench_replica` is created there.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
        server: String,
        /// Also time vigil-guard over the same readings with the replica on and off.
        #[arg(long)]
        end_to_end: bool,
    },
    /// Parsing alone: how fast the loaders turn a file into readings, on one thread.
    Parse {
        /// The file or directory to parse.
        input: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Bench::Guard {
            load,
            runs,
            dir,
            guard: guards,
            suite,
            scores,
            replica,
        } => {
            let guards = if suite {
                SUITE.iter().map(|g| g.to_string()).collect()
            } else if guards.is_empty() {
                vec!["zscore:window=60,threshold=6".to_owned()]
            } else {
                guards
            };
            let run = GuardRun {
                guards,
                scores,
                workers: load.workers,
                modes: replica,
            };
            guard(&load.spec(), &run, runs, dir)
        }
        Bench::Nab {
            dir,
            guard,
            workers,
            in_process,
            results,
            threshold,
        } => match results {
            Some(results) => {
                let threshold = threshold.context(
                    "--results needs --threshold: the detector's standard-profile threshold \
                     from NAB's config/thresholds.json",
                )?;
                nab::run_published(&dir, &results, threshold)
            }
            None => nab::run(&dir, &guard, workers, in_process),
        },
        Bench::Launch { dir, guard } => launch::run(&dir, &guard),
        Bench::Kafka {
            load,
            partitions,
            guard,
        } => kafka::throughput(&load.spec(), load.workers, partitions, &guard),
        Bench::KafkaLatency {
            rate,
            seconds,
            workers,
        } => kafka::latency(rate, seconds, workers),
        Bench::Archaeology {
            devices,
            ticks,
            rooms,
            workers,
        } => archaeology(devices, ticks, rooms, workers),
        Bench::Sql {
            readings,
            dir,
            repeat,
        } => sql::run(readings, &dir, repeat),
        Bench::Replica {
            rows,
            workers,
            server,
            end_to_end,
        } => replica::run(rows, workers, &server, end_to_end),
        Bench::Parse { input } => parse(&input),
    }
}

/// Runs vigil-archaeology over the generator and prints events/s per core and memory.
fn archaeology(devices: usize, ticks: u64, rooms: usize, workers: usize) -> anyhow::Result<()> {
    let binary = sibling_binary("vigil-archaeology")?;
    let dir = tempfile::tempdir()?;
    let summary_path = dir.path().join("summary.json");
    let input = format!("gen:devices?devices={devices}&ticks={ticks}&rooms={rooms}");
    let wall = Instant::now();
    let status = Command::new(&binary)
        .args([
            "--input",
            &input,
            "--no-progress",
            "--top",
            "5",
            "--replica",
            "none",
        ])
        .args([
            "--archive",
            &dir.path().join("archive").display().to_string(),
        ])
        .args(["-w", &workers.to_string()])
        .args(["--summary-json", &summary_path.display().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running vigil-archaeology")?;
    let wall = wall.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "vigil-archaeology failed: {status}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path)?)?;
    let number = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    let events = number("events_in");
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(workers) as f64;
    let findings = &summary["findings"];
    println!("vigil-archaeology, {input}, -w {workers}");
    println!("  events                  {events:.0}");
    println!("  wall                    {wall:.2} s");
    println!("  events/s                {:.0}", events / wall);
    println!("  events/s per core       {:.0}", events / wall / cores);
    println!(
        "  events per CPU-second   {:.0}",
        events / number("cpu_seconds")
    );
    println!(
        "  peak memory             {:.0} MB",
        number("peak_rss_bytes") / 1e6
    );
    println!(
        "  found                   {} sequence patterns, {} motifs, {} entangled pairs, {} sessions",
        findings["sequence_patterns"],
        findings["motifs"],
        findings["entanglements"],
        findings["sessions"]
    );
    Ok(())
}

/// Counts what a loader produces without keeping it.
#[derive(Default)]
struct Count {
    readings: u64,
    dead: u64,
}

impl vigil_datasets::loaders::RecordSink for Count {
    fn reading(&mut self, reading: vigil_operators::ReadingRef<'_>, _payload: Option<&[u8]>) {
        self.readings += 1;
        std::hint::black_box(reading);
    }

    fn dead_letter(
        &mut self,
        _: Option<i64>,
        _: String,
        _: &'static str,
        _: String,
        _: Option<&[u8]>,
    ) {
        self.dead += 1;
    }
}

fn parse(input: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let plan = vigil_datasets::loaders::plan_paths(
        &[input.to_path_buf()],
        vigil_datasets::loaders::TextLimits::default(),
    )?;
    let planned = started.elapsed().as_secs_f64();
    let mut count = Count::default();
    let mut buf = Vec::new();
    for unit in &plan.units {
        vigil_datasets::loaders::read_unit(unit, &mut buf, &mut count);
    }
    let total = started.elapsed().as_secs_f64();
    println!(
        "parsed {} readings ({} dead letters) from {:.1} MB in {total:.2}s (planning {planned:.2}s): {:.0} readings/s, {:.0} MB/s on one thread",
        count.readings,
        count.dead,
        plan.total as f64 / 1e6,
        count.readings as f64 / total,
        plan.total as f64 / 1e6 / total
    );
    Ok(())
}

/// Every statistical guard and the composite: the configuration the guard suite is measured in.
const SUITE: [&str; 7] = [
    "zscore",
    "ewma",
    "mad",
    "rate",
    "level_shift",
    "seasonal",
    "composite",
];

/// How vigil-guard is run in the benchmark.
struct GuardRun {
    guards: Vec<String>,
    scores: String,
    workers: usize,
    modes: Vec<ReplicaMode>,
}

/// A replica set-up `vigil-bench guard` times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ReplicaMode {
    /// No replica, no alert output.
    None,
    /// The default command line: the embedded SQLite replica, alerts on stdout.
    Default,
    /// The default plus `telemetry_meta`: a replica row per reading.
    #[value(name = "telemetry_meta")]
    TelemetryMeta,
}

impl ReplicaMode {
    fn label(self) -> &'static str {
        match self {
            ReplicaMode::None => "--replica none --alerts none",
            ReplicaMode::Default => "default (SQLite replica, alerts to stdout)",
            ReplicaMode::TelemetryMeta => "default + --replica-tables default,telemetry_meta",
        }
    }

    /// The flags the mode adds to the command line.
    fn args(self) -> &'static [&'static str] {
        match self {
            ReplicaMode::None => &["--replica", "none", "--alerts", "none"],
            ReplicaMode::Default => &[],
            ReplicaMode::TelemetryMeta => &["--replica-tables", "default,telemetry_meta"],
        }
    }
}

fn guard(
    spec: &RocketParams,
    run: &GuardRun,
    runs: usize,
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let workers = run.workers;
    let binary = sibling_binary("vigil-guard")?;
    let tmp = tempfile::tempdir()?;
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let dir = dir.canonicalize()?;
    let input = dir.join("bench.ndjson");
    let started = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&input)?);
    let written = write_rocket_ndjson(spec, &mut out)?;
    drop(out);
    let bytes = std::fs::metadata(&input)?.len();
    eprintln!(
        "generated {written} readings ({} sources × 8 metrics × {} ticks), {:.1} MB of NDJSON in {:.1}s",
        spec.vehicles,
        spec.ticks,
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(workers);
    let mut results: Vec<Vec<Run>> = run.modes.iter().map(|_| Vec::new()).collect();
    // The set-ups alternate run by run, so that a machine slowing down weighs on all alike.
    for attempt in 1..=runs {
        for (mode, results) in run.modes.iter().zip(results.iter_mut()) {
            let result = guard_once(&binary, &input, &dir, run, *mode, attempt, written)?;
            eprintln!(
                "run {attempt}, {}: {:.2}s, {:.0} events/s, peak RSS {:.0} MB",
                mode.label(),
                result.wall,
                result.events_per_s,
                result.peak_rss_mb
            );
            results.push(result);
        }
    }
    let mut medians = Vec::new();
    for (mode, results) in run.modes.iter().zip(results.iter_mut()) {
        results.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        let best = &results[0];
        let median = &results[results.len() / 2];
        report(written, run, *mode, cores, best, median, bytes, &input);
        medians.push((*mode, median.wall));
    }
    if let Some((_, none)) = medians.iter().find(|(m, _)| *m == ReplicaMode::None) {
        println!("median wall time against --replica none");
        for (mode, wall) in &medians {
            println!(
                "  {:<50} {:.2}s  {:+.1} %",
                mode.label(),
                wall,
                (wall / none - 1.0) * 100.0
            );
        }
    }
    Ok(())
}

/// One run of vigil-guard in its own directory (where the default replica file goes).
fn guard_once(
    binary: &Path,
    input: &Path,
    dir: &Path,
    run: &GuardRun,
    mode: ReplicaMode,
    attempt: usize,
    written: u64,
) -> anyhow::Result<Run> {
    let work = dir.join(format!("run-{attempt}-{mode:?}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let summary_path = work.join("summary.json");
    let wall = Instant::now();
    let status = Command::new(binary)
        .current_dir(&work)
        .args(["--input", &input.display().to_string()])
        .args(["--no-progress", "--scores", &run.scores])
        .args(mode.args())
        .args(run.guards.iter().flat_map(|g| ["--guard", g.as_str()]))
        .args([
            "-w",
            &run.workers.to_string(),
            "--summary-json",
            &summary_path.display().to_string(),
        ])
        .stdout(std::fs::File::create(work.join("alerts.ndjson"))?)
        .status()
        .context("running vigil-guard")?;
    let wall = wall.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "vigil-guard failed: {status}");
    let summary: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary_path)?)?;
    let number = |key: &str| summary[key].as_f64().unwrap_or(f64::NAN);
    let events = number("events_in");
    anyhow::ensure!(
        events as u64 == written,
        "vigil-guard read {events} of {written} readings"
    );
    let replica_mb =
        std::fs::metadata(work.join("vigil-replica.db")).map_or(0.0, |m| m.len() as f64 / 1e6);
    let result = Run {
        wall,
        events_per_s: events / wall,
        peak_rss_mb: number("peak_rss_bytes") / 1e6,
        cpu_s: number("cpu_seconds"),
        state_bytes_per_series: number("guard_state_bytes") / number("series"),
        archive_mb: number("bytes") / 1e6,
        replica_mb,
        alerts: number("alerts_raised"),
    };
    let _ = std::fs::remove_dir_all(&work);
    Ok(result)
}

struct Run {
    wall: f64,
    events_per_s: f64,
    peak_rss_mb: f64,
    cpu_s: f64,
    state_bytes_per_series: f64,
    archive_mb: f64,
    replica_mb: f64,
    alerts: f64,
}

#[allow(clippy::too_many_arguments)]
fn report(
    readings: u64,
    run: &GuardRun,
    mode: ReplicaMode,
    cores: usize,
    best: &Run,
    median: &Run,
    bytes: u64,
    input: &Path,
) {
    println!(
        "vigil-guard -w {} --guard {} --scores {}, {}, NDJSON → Parquet archive",
        run.workers,
        run.guards.join(" --guard "),
        run.scores,
        mode.label()
    );
    println!(
        "  input                  {readings} readings, {:.1} MB ({})",
        bytes as f64 / 1e6,
        input.display()
    );
    println!(
        "  wall time (best/median) {:.2}s / {:.2}s",
        best.wall, median.wall
    );
    println!("  events/s total (best)  {:.0}", best.events_per_s);
    println!(
        "  events/s per core      {:.0}  ({cores} cores busy)",
        best.events_per_s / cores as f64
    );
    println!("  events/s total (median) {:.0}", median.events_per_s);
    println!(
        "  CPU (best run)         {:.2}s: {:.0} events per CPU-second",
        best.cpu_s,
        readings as f64 / best.cpu_s
    );
    println!("  peak RSS               {:.0} MB", best.peak_rss_mb);
    println!(
        "  guard state per series {:.0} bytes",
        best.state_bytes_per_series
    );
    println!(
        "  archive size           {:.1} MB ({:.1} bytes/reading)",
        best.archive_mb,
        best.archive_mb * 1e6 / readings as f64
    );
    if mode != ReplicaMode::None {
        println!("  replica file           {:.1} MB", best.replica_mb);
    }
    println!("  alerts raised          {:.0}", best.alerts);
}
