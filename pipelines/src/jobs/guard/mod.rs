//! The guard job: dataset or generator → timely workers → guards → archive and alert output.

pub mod registry;

use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::{Concat, Input, Probe};
use timely::dataflow::{InputHandle, ProbeHandle};
use tracing::{info, warn};
use vigil_datasets::loaders::{
    InputPlan, RecordSink, TextFormat, TextLimits, TextSource, UnitSource, plan_generator,
    plan_paths, read_range, read_unit, strip_json_payload,
};
use vigil_operators::model::dead_letter::MAX_RAW_BYTES;
use vigil_operators::{
    AnomalyScore, Checkpoints, DeadLetter, GuardMetrics, GuardOptions, LATE_EVENT, Point, Reading,
    ReadingRef, SCHEMA_EVENT, SeriesGuard, SeriesLimits, SessionEvent, SnapshotStore,
    TelemetryColumns,
};

use crate::sinks::alerts::{AlertCounts, AlertTarget, WriteAlerts};
use crate::jobs::archaeology::{ArchaeologyParams, Findings, SessionKey};
use crate::sinks::archive::{Archive, ArchiveBatches, ArchiveLocation, Table, start_writer};
use crate::runtime::snapshot::StateDir;
use crate::runtime::crypto::PayloadKey;
use crate::runtime::shutdown::Shutdown;
use crate::jobs::guard::registry::{ConfiguredGuard, GuardSpec};
use crate::connect::kafka::{KafkaAlerts, KafkaEndpoint, KafkaInput, KafkaMessage, KafkaReader, Watermark};
use crate::sinks::replica::{
    Output, ReplicaHandle, ReplicaSink, ReplicateAlerts, ReplicateTelemetry,
};

/// Guard snapshots are taken at hour boundaries of event time, as archive files close.
const HOUR_MS: i64 = 3_600_000;

/// Units a worker may read ahead of what the dataflow has finished, which bounds memory.
const UNITS_IN_FLIGHT: usize = 4;

/// What the job reads.
#[derive(Clone, Debug, PartialEq)]
pub enum InputSpec {
    /// The recorded dataset compiled into the binary.
    Default,
    /// Files and directories of NDJSON, CSV or Parquet.
    Paths(Vec<PathBuf>),
    /// The built-in generator: `gen:rocket[?…]` or `gen:devices[?…]`.
    Generator(String),
    /// Kafka topics: `kafka://HOST:PORT/TOPIC[,TOPIC…]?group=G`.
    Kafka(Box<KafkaInput>),
}

impl InputSpec {
    /// Reads `--input` values: none is the default dataset, `gen:…` a generator, `kafka://…`
    /// Kafka topics, else paths.
    pub fn from_args(values: &[String]) -> anyhow::Result<InputSpec> {
        if values.iter().any(|v| v.starts_with("kafka://")) {
            anyhow::ensure!(
                values.iter().all(|v| v.starts_with("kafka://")),
                "a Kafka input cannot be combined with files or a generator"
            );
            let inputs = values
                .iter()
                .map(|v| KafkaInput::parse(v))
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(InputSpec::Kafka(Box::new(KafkaInput::merge(inputs)?)));
        }
        match values {
            [] => Ok(InputSpec::Default),
            [one] if one.starts_with("gen:") => Ok(InputSpec::Generator(one.clone())),
            many => {
                anyhow::ensure!(
                    many.iter().all(|v| !v.starts_with("gen:")),
                    "a generator input cannot be combined with other inputs"
                );
                Ok(InputSpec::Paths(many.iter().map(PathBuf::from).collect()))
            }
        }
    }

    /// Cuts the input into units of work.
    pub fn plan(&self, limits: TextLimits) -> anyhow::Result<InputPlan> {
        match self {
            InputSpec::Default => Ok(vigil_datasets::embedded::default_plan(limits)),
            InputSpec::Paths(paths) => plan_paths(paths, limits),
            InputSpec::Generator(spec) => plan_generator(spec),
            InputSpec::Kafka(input) => anyhow::bail!(
                "{} is a stream of messages, not a plan of units",
                input.endpoint
            ),
        }
    }
}

/// Where alerts are written.
#[derive(Clone, Debug, PartialEq)]
pub enum AlertsOut {
    /// Standard output, as NDJSON.
    Stdout,
    /// A file, replaced if it exists, as NDJSON.
    File(PathBuf),
    /// Nowhere (they are still archived).
    Off,
    /// Kafka: each alert to the topic its reaction names.
    Kafka(KafkaEndpoint),
}

impl AlertsOut {
    /// `-` is stdout, `none` is off, `kafka://…` Kafka, anything else a file.
    pub fn parse(value: &str) -> anyhow::Result<AlertsOut> {
        Ok(match value {
            "-" | "stdout" => AlertsOut::Stdout,
            "none" | "off" => AlertsOut::Off,
            url if url.starts_with("kafka://") => AlertsOut::Kafka(KafkaEndpoint::parse(url)?),
            path => AlertsOut::File(PathBuf::from(path)),
        })
    }

    /// Opens the output; for Kafka, checks that every topic in `topics` exists and also
    /// returns the producer, to flush at the end.
    fn open(
        &self,
        topics: &[String],
        spill_dir: &std::path::Path,
        key: Option<PayloadKey>,
    ) -> anyhow::Result<(Option<AlertTarget>, Option<Arc<KafkaAlerts>>)> {
        let lines = |w: Box<dyn Write + Send>| Some(AlertTarget::Lines(w));
        Ok(match self {
            AlertsOut::Stdout => (
                lines(Box::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    std::io::stdout(),
                ))),
                None,
            ),
            AlertsOut::File(path) => {
                let file = std::fs::File::create(path)
                    .with_context(|| format!("creating the alerts file {}", path.display()))?;
                (
                    lines(Box::new(std::io::BufWriter::with_capacity(1 << 16, file))),
                    None,
                )
            }
            AlertsOut::Off => (None, None),
            AlertsOut::Kafka(endpoint) => {
                let producer = Arc::new(KafkaAlerts::connect(endpoint, topics, spill_dir, key)?);
                (Some(AlertTarget::Kafka(producer.clone())), Some(producer))
            }
        })
    }
}

/// Everything the guard job needs to run.
#[derive(Clone, Debug)]
pub struct GuardJob {
    /// What to read.
    pub input: InputSpec,
    /// The archive: a local directory or `s3://bucket/prefix`.
    pub archive: String,
    /// Where alerts go as NDJSON.
    pub alerts: AlertsOut,
    /// The guards to run.
    pub guards: Vec<ConfiguredGuard>,
    /// Timely worker threads.
    pub workers: usize,
    /// How far behind the newest event time a record may be before it is late.
    pub lateness_ms: u64,
    /// The payload key, if payloads are to be accepted.
    pub key: Option<PayloadKey>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Size of the units text files are cut into.
    pub chunk_bytes: u64,
    /// The longest line or Kafka message read; a longer one is an `oversize` dead letter.
    pub max_line_bytes: u64,
    /// How many series the guards keep, and for how long a quiet one.
    pub series_limits: SeriesLimits,
    /// Rows per archive file before a partition is cut into another file.
    pub max_rows_per_file: usize,
    /// Which guards write their per-reading scores to the `anomaly_scores` table.
    pub scores: ScoresOut,
    /// Where alerts for Kafka wait until the broker has them (a local directory).
    pub spill_dir: PathBuf,
    /// Where the guards' state is snapshotted when the input is Kafka (a local directory), so
    /// that a restart from the committed offsets carries on with it.
    pub state_dir: PathBuf,
    /// What the job computes: the guards, or pattern archaeology.
    pub program: Program,
    /// The SQL replica the results are upserted into, if any.
    pub replica: Option<crate::sinks::replica::ReplicaOptions>,
}

/// What a job computes over its input.
#[derive(Clone, Debug, Default)]
pub enum Program {
    /// The anomaly guards: alerts, scores, and the telemetry archived.
    #[default]
    Guards,
    /// Pattern archaeology: patterns, sessions and entanglements (telemetry is not archived).
    Archaeology(Box<ArchaeologyParams>),
}

/// Which guards' per-reading scores are archived in `anomaly_scores`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScoresOut {
    /// Every guard's.
    All,
    /// None.
    Off,
    /// The named guards'.
    Guards(Vec<String>),
}

impl ScoresOut {
    /// `all`, `none`, or a comma-separated list of guard names.
    pub fn parse(value: &str) -> ScoresOut {
        match value.trim() {
            "all" => ScoresOut::All,
            "none" | "off" => ScoresOut::Off,
            list => ScoresOut::Guards(
                list.split(',')
                    .map(|g| g.trim().to_owned())
                    .filter(|g| !g.is_empty())
                    .collect(),
            ),
        }
    }

    /// Whether the guard named `name` writes its scores.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            ScoresOut::All => true,
            ScoresOut::Off => false,
            ScoresOut::Guards(names) => names.iter().any(|n| n == name),
        }
    }
}

impl Default for GuardJob {
    fn default() -> Self {
        Self {
            input: InputSpec::Default,
            archive: "./vigil-data".into(),
            alerts: AlertsOut::Stdout,
            guards: vec![ConfiguredGuard::with_default_reaction(GuardSpec::ZScore(
                Default::default(),
            ))],
            workers: 1,
            lateness_ms: 10_000,
            key: None,
            progress: false,
            chunk_bytes: vigil_datasets::loaders::DEFAULT_CHUNK_BYTES,
            max_line_bytes: vigil_datasets::loaders::DEFAULT_MAX_LINE_BYTES,
            series_limits: DEFAULT_SERIES_LIMITS,
            max_rows_per_file: 1_000_000,
            scores: ScoresOut::All,
            spill_dir: PathBuf::from("vigil-spill"),
            state_dir: PathBuf::from("vigil-state"),
            program: Program::Guards,
            replica: None,
        }
    }
}

impl GuardJob {
    /// Locks the local directories the job writes for as long as the locks are held: the
    /// archive, the state directory when it snapshots (Kafka input, or archaeology carrying
    /// its patterns), and the spill when alerts go to Kafka or results to a replica. A second
    /// job on one of them fails with [`crate::runtime::dir_lock::DirectoryInUse`].
    pub fn lock_directories(&self) -> anyhow::Result<Vec<crate::runtime::dir_lock::DirLock>> {
        let mut dirs = Vec::new();
        if let Some(dir) = crate::sinks::archive::local_dir(&self.archive) {
            dirs.push((dir, "archive directory", "--archive"));
        }
        let state = match (&self.input, &self.program) {
            (InputSpec::Kafka(_), _) => Some(self.state_dir.clone()),
            (_, Program::Archaeology(params)) => params.carry.clone(),
            _ => None,
        };
        if let Some(dir) = state {
            dirs.push((dir, "state directory", "--state"));
        }
        if matches!(self.alerts, AlertsOut::Kafka(_)) || self.replica.is_some() {
            dirs.push((self.spill_dir.clone(), "spill directory", "--spill"));
        }
        crate::runtime::dir_lock::lock_all(&dirs)
    }
}

/// The guards' series limits unless told otherwise: a million series per job, and a series
/// quiet for a week (in event time) forgotten.
pub const DEFAULT_SERIES_LIMITS: SeriesLimits = SeriesLimits {
    max_series: Some(1_000_000),
    idle_ms: Some(7 * 24 * 3_600_000),
};

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Valid records read.
    pub events_in: u64,
    /// Telemetry rows made durable in the archive.
    pub archived: u64,
    /// Rows written to the SQL replica (upserted or deleted).
    pub replicated: u64,
    /// Alerts raised.
    pub alerts_raised: u64,
    /// Alerts cleared.
    pub alerts_cleared: u64,
    /// In a live run (Kafka input): how long after their event time raised alerts were sent,
    /// by the wall clock, as the 50th and 99th percentile in ms.
    pub alert_lag_ms: Option<(i64, i64)>,
    /// Dead letters (malformed, late or unusable input).
    pub errors: u64,
    /// Of the dead letters, how many were late.
    pub late: u64,
    /// Archive files written.
    pub files: u64,
    /// Archive bytes written.
    pub bytes: u64,
    /// Series the guards held state for (summed over guards).
    pub series: u64,
    /// Bytes of guard state (summed over guards and workers).
    pub guard_state_bytes: u64,
    /// Series forgotten: quiet past `--series-idle`, or to make room under `--max-series`.
    pub series_forgotten: u64,
    /// Readings not judged because every series held had an open alert at `--max-series`.
    pub series_refused: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Peak resident memory of the process, where the OS reports it.
    pub peak_rss_bytes: Option<u64>,
    /// CPU time the process used (user and system), where the OS reports it.
    pub cpu_seconds: Option<f64>,
    /// What pattern archaeology found, for an archaeology job.
    pub findings: Option<Findings>,
}

impl Summary {
    /// The summary as one JSON object, for scripts and the benchmark harness.
    pub fn to_json(&self) -> serde_json::Value {
        let mut json = serde_json::json!({
            "events_in": self.events_in,
            "archived": self.archived,
            "replicated": self.replicated,
            "alerts_raised": self.alerts_raised,
            "alerts_cleared": self.alerts_cleared,
            "alert_lag_p50_ms": self.alert_lag_ms.map(|l| l.0),
            "alert_lag_p99_ms": self.alert_lag_ms.map(|l| l.1),
            "errors": self.errors,
            "late": self.late,
            "files": self.files,
            "bytes": self.bytes,
            "series": self.series,
            "guard_state_bytes": self.guard_state_bytes,
            "series_forgotten": self.series_forgotten,
            "series_refused": self.series_refused,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "events_per_second": self.events_per_second(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "cpu_seconds": self.cpu_seconds,
        });
        if let (Some(findings), Some(object)) = (&self.findings, json.as_object_mut()) {
            object.insert("findings".into(), findings.to_json());
        }
        json
    }

    /// Records (valid and dead letters) per second of wall-clock time.
    pub fn events_per_second(&self) -> f64 {
        (self.events_in + self.errors) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(found) = &self.findings {
            return write!(
                f,
                "events in {}, patterns {}, entangled pairs {}, sessions {}, errors {} (late {}), elapsed {:.2}s, {:.0} ev/s",
                self.events_in,
                found.patterns.len(),
                found.entanglements.len(),
                found.sessions,
                self.errors,
                self.late,
                self.elapsed.as_secs_f64(),
                self.events_per_second()
            );
        }
        write!(
            f,
            "events in {}, archived {}, alerts raised {} / cleared {}, errors {} (late {}), elapsed {:.2}s, {:.0} ev/s",
            self.events_in,
            self.archived,
            self.alerts_raised,
            self.alerts_cleared,
            self.errors,
            self.late,
            self.elapsed.as_secs_f64(),
            self.events_per_second()
        )?;
        if let Some((p50, p99)) = self.alert_lag_ms {
            write!(f, ", alert lag p50 {p50} ms / p99 {p99} ms")?;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Counters {
    events_in: AtomicU64,
    errors: AtomicU64,
    late: AtomicU64,
}

/// Fails at start-up when the input carries clear payloads but no key is configured, so that a
/// payload is never written in clear and the user learns it before any work is done. Reads the
/// NDJSON units once, spread over `threads`, and parses only lines whose payload is not `null`.
/// The error names the first such line in input order.
fn check_payloads(
    plan: &InputPlan,
    key: Option<&PayloadKey>,
    threads: usize,
) -> anyhow::Result<()> {
    if key.is_some() {
        return Ok(());
    }
    let threads = threads.clamp(1, plan.units.len().max(1));
    let first = std::thread::scope(|scope| {
        let checks: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut buf = Vec::new();
                    let units = plan.units.iter().enumerate().skip(t).step_by(threads);
                    units
                        .filter_map(|(i, unit)| Some((i, clear_payload_in(unit, &mut buf)?)))
                        .next()
                })
            })
            .collect();
        let mut first: Option<(usize, String)> = None;
        for check in checks {
            let found = check
                .join()
                .map_err(|_| anyhow::anyhow!("the start-up payload check failed"))?;
            if let Some(found) = found
                && first.as_ref().is_none_or(|(unit, _)| found.0 < *unit)
            {
                first = Some(found);
            }
        }
        anyhow::Ok(first)
    })?;
    match first {
        Some((_, origin)) => anyhow::bail!(
            "{origin} carries a payload but no payload key is configured, and payloads are only ever \
             stored encrypted: set {}=<64 hex chars> (e.g. `export {}=$(openssl rand -hex 32)`) \
             or pass --key-file FILE",
            crate::runtime::crypto::KEY_ENV,
            crate::runtime::crypto::KEY_ENV
        ),
        None => Ok(()),
    }
}

/// The origin of the first line of an NDJSON unit that carries a clear payload, if any.
fn clear_payload_in(unit: &vigil_datasets::loaders::Unit, buf: &mut Vec<u8>) -> Option<String> {
    let UnitSource::Text {
        source,
        format: TextFormat::Ndjson,
        start,
        end,
        max_line_bytes,
        starts_mid_line,
        ends_mid_line,
    } = &unit.source
    else {
        return None;
    };
    let bytes: &[u8] = match source {
        TextSource::Embedded { bytes, .. } => &bytes[*start as usize..*end as usize],
        TextSource::File(file) => match read_range(file.path(), *start, *end, buf) {
            Ok(()) => buf,
            // The worker that reads this unit reports the I/O error as a dead letter.
            Err(_) => return None,
        },
    };
    let finder = memchr::memmem::Finder::new(b"\"payload\"");
    for at in finder.find_iter(bytes) {
        let rest = bytes[at + 9..].trim_ascii_start();
        let value = rest
            .strip_prefix(b":")
            .map(<[u8]>::trim_ascii_start)
            .unwrap_or(rest);
        if value.starts_with(b"null") {
            continue;
        }
        let line_start = memchr::memrchr(b'\n', &bytes[..at]).map_or(0, |i| i + 1);
        let line_end = memchr::memchr(b'\n', &bytes[at..]).map_or(bytes.len(), |i| at + i);
        // A line over the limit, or a piece of one where the unit was cut inside it, is a
        // dead letter, never read as a reading.
        let cut =
            (*starts_mid_line && line_start == 0) || (*ends_mid_line && line_end == bytes.len());
        if cut || (line_end - line_start) as u64 > *max_line_bytes {
            continue;
        }
        let line: serde_json::Result<serde_json::Value> =
            serde_json::from_slice(&bytes[line_start..line_end]);
        if let Ok(value) = line
            && value.get("payload").is_some_and(|p| !p.is_null())
        {
            let line_in_unit = memchr::memchr_iter(b'\n', &bytes[..line_start]).count() as u64;
            return Some(source.origin_at(*start, line_in_unit));
        }
    }
    None
}

/// A stable fingerprint of the input, used in archive file names.
fn run_fingerprint(plan: &InputPlan, workers: usize) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(plan.description.as_bytes());
    hasher.update(&plan.total.to_le_bytes());
    hasher.update(&(plan.units.len() as u64).to_le_bytes());
    hasher.update(&(workers as u64).to_le_bytes());
    format!("{:08x}", hasher.digest() as u32)
}

/// What the workers read: a plan of units (files, the dataset, the generator) or Kafka.
enum Source {
    Plan(InputPlan),
    Kafka {
        input: Box<KafkaInput>,
        /// One reader per worker, taken by the worker that owns it.
        readers: Vec<Mutex<Option<KafkaReader>>>,
        /// Where the readers started: the group's committed offsets.
        start: Vec<(String, i32, i64)>,
        /// Some partition started at an offset the group had committed.
        resumed: bool,
        /// Where each worker got to, for the offset commit once the archive is durable.
        positions: Mutex<Vec<(String, i32, i64)>>,
    },
}

impl Source {
    fn open(job: &GuardJob, workers: usize) -> anyhow::Result<Source> {
        match &job.input {
            InputSpec::Kafka(input) => {
                let partitions = input.partitions()?;
                let readers: Vec<KafkaReader> = (0..workers)
                    .map(|w| input.open_reader(&partitions, w, workers))
                    .collect::<anyhow::Result<_>>()?;
                let start = readers.iter().flat_map(KafkaReader::positions).collect();
                let resumed = readers.iter().any(KafkaReader::resumed);
                Ok(Source::Kafka {
                    input: input.clone(),
                    readers: readers.into_iter().map(|r| Mutex::new(Some(r))).collect(),
                    start,
                    resumed,
                    positions: Mutex::default(),
                })
            }
            other => {
                let limits = TextLimits {
                    chunk_bytes: job.chunk_bytes,
                    max_line_bytes: job.max_line_bytes,
                };
                let plan = other.plan(limits)?;
                check_payloads(&plan, job.key.as_ref(), workers)?;
                Ok(Source::Plan(plan))
            }
        }
    }

    fn description(&self) -> String {
        match self {
            Source::Plan(plan) => plan.description.clone(),
            Source::Kafka { input, .. } => format!(
                "{}/{} (group {})",
                input.endpoint,
                input.topics.join(","),
                input.group
            ),
        }
    }

    /// A stable fingerprint of the input and the worker count, used in archive file names.
    /// `continued`: a Kafka run that carries on from the guard state of the run before it (or
    /// starts at the beginning), whose alerts and scores are the ones that run would have
    /// written, so that it writes the same files.
    fn fingerprint(&self, workers: usize, guards: &str, continued: bool) -> String {
        match self {
            Source::Plan(plan) => run_fingerprint(plan, workers),
            Source::Kafka { start, .. } => {
                let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                hasher.update(self.description().as_bytes());
                hasher.update(guards.as_bytes());
                // Otherwise the start offsets too: a run that resumes elsewhere without the
                // guards' state writes new files beside the earlier run's instead of
                // replacing them with different alerts.
                if !continued {
                    for (topic, partition, offset) in start {
                        hasher.update(topic.as_bytes());
                        hasher.update(&partition.to_le_bytes());
                        hasher.update(&offset.to_le_bytes());
                    }
                }
                hasher.update(&(workers as u64).to_le_bytes());
                format!("{:08x}", hasher.digest() as u32)
            }
        }
    }
}

/// Runs the guard job to the end of its input (or until `shutdown`), and reports what it did.
pub fn run(job: GuardJob, shutdown: Shutdown) -> anyhow::Result<Summary> {
    let stopped = shutdown.clone();
    let started = Instant::now();
    let workers = job.workers.max(1);
    // Opening the source checks the input (a payload without a key, say) before anything,
    // even a lock file, is written.
    let source = Arc::new(Source::open(&job, workers)?);
    // Held until the run has finished with its directories, whichever way it returns.
    let _locks = job.lock_directories()?;
    let location = ArchiveLocation::parse(&job.archive)?;
    let mut topics: Vec<String> = job
        .guards
        .iter()
        .map(|g| g.reaction.topic.as_str().to_owned())
        .collect();
    topics.sort();
    topics.dedup();
    let (alert_target, kafka_alerts) = job.alerts.open(&topics, &job.spill_dir, job.key.clone())?;
    info!(message = "Starting the guard job.", input = %source.description(), archive = %location, workers = job.workers);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vigil-io")
        .enable_all()
        .build()
        .context("starting the I/O runtime")?;
    // Guard state is snapshotted for Kafka input, whose committed offsets a restart resumes
    // from; a file backfill simply runs again.
    let guard_config = format!("{:?}", job.guards);
    let per_source = job.guards.iter().any(|g| g.spec.per_source());
    let state = match &*source {
        Source::Kafka { input, resumed, .. } => {
            let mut hasher = xxhash_rust::xxh3::Xxh3::new();
            hasher.update(source.description().as_bytes());
            hasher.update(guard_config.as_bytes());
            let operators = 1 + usize::from(per_source);
            Some(Arc::new(StateDir::open(
                &job.state_dir,
                &format!("guards-{:016x}", hasher.digest()),
                operators * workers,
                HOUR_MS as u64,
                input.commit_every,
                *resumed,
            )?))
        }
        Source::Plan(_) => match &job.program {
            // An archaeology job with a state directory carries its patterns from the run
            // before and on to the next: a backfill in parts finds what one run would.
            Program::Archaeology(params) => match &params.carry {
                Some(dir) => {
                    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
                    hasher.update(format!("{:?}", params.sequences).as_bytes());
                    let name = format!("archaeology-{:016x}", hasher.digest());
                    // The first run of a backfill in parts has nothing to carry on from.
                    let carried_before = dir.join(&name).exists();
                    Some(Arc::new(StateDir::open(
                        dir,
                        &name,
                        crate::jobs::archaeology::CARRIED_PER_WORKER * workers,
                        HOUR_MS as u64,
                        Duration::ZERO,
                        carried_before,
                    )?))
                }
                None => None,
            },
            Program::Guards => None,
        },
    };
    let continued = match &*source {
        Source::Kafka { resumed, .. } => {
            !*resumed || state.as_ref().is_some_and(|s| s.restored_at().is_some())
        }
        Source::Plan(_) => true,
    };
    let run_id = match &job.program {
        Program::Guards => source.fingerprint(workers, &guard_config, continued),
        // Runs with other parameters find other patterns: they write files of their own.
        Program::Archaeology(params) => {
            let base = source.fingerprint(workers, &guard_config, continued);
            let digest = xxhash_rust::xxh3::xxh3_64(format!("{base}{params:?}").as_bytes());
            format!("{:08x}", digest as u32)
        }
    };
    let (writer, archive_task) = start_writer(
        location,
        &run_id,
        job.max_rows_per_file,
        4 * workers,
        runtime.handle(),
    );
    let replica = match &job.replica {
        Some(options) => {
            let options = crate::sinks::replica::ReplicaOptions {
                spill_dir: job.spill_dir.join("replica"),
                ..options.clone()
            };
            let (name, outputs): (&str, &[Output]) = match &job.program {
                Program::Guards => ("guard", &[Output::Telemetry, Output::Alerts]),
                Program::Archaeology(_) => (
                    "archaeology",
                    &[Output::Patterns, Output::Sessions, Output::Entanglements],
                ),
            };
            Some(ReplicaSink::start(
                options,
                &format!("{name}-{run_id}"),
                outputs,
                workers,
                job.key.clone(),
            )?)
        }
        None => None,
    };
    let replica_handles: Arc<Vec<ReplicaHandle>> = Arc::new(
        replica
            .as_ref()
            .map(|r| (0..workers).filter_map(|w| r.handle(w, workers)).collect())
            .unwrap_or_default(),
    );
    let gate = CommitGate {
        replica: replica.as_ref().map(|r| r.durability.clone()),
        durability: writer.durability(),
        sinks: SINKS_PER_WORKER * workers,
        alerts: kafka_alerts.clone(),
        state: state.clone(),
    };

    let progress = match &*source {
        Source::Plan(plan) if job.progress => {
            let bar = ProgressBar::new(plan.total);
            let template = if plan.total_is_bytes {
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
            } else {
                "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} records ({per_sec}, eta {eta})"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar
        }
        _ => ProgressBar::hidden(),
    };

    let counters = Arc::new(Counters::default());
    let alert_counts = Arc::new(AlertCounts::default());
    let alerts_out = Arc::new(Mutex::new(alert_target));
    let metrics: Arc<Mutex<Vec<GuardMetrics>>> = Arc::default();
    let key = Arc::new(job.key.clone());
    let guards = Arc::new(job.guards.clone());
    let lateness = job.lateness_ms;
    let max_line_bytes = job.max_line_bytes;
    let series_limits = job.series_limits;
    let telemetry = Table::of::<Reading>("ts")?;
    let score_table = Table::of::<AnomalyScore>("ts")?;
    let scores_out = job.scores.clone();

    let end = Arc::new(EndOfInput::default());
    let end_of_input = end.clone();
    let config = timely::Config::process(workers);
    let worker_progress = progress.clone();
    let worker_metrics = metrics.clone();
    let worker_counters = counters.clone();
    let worker_alerts = alert_counts.clone();
    let worker_source = source.clone();
    let worker_state = state.clone();
    let findings: Arc<Mutex<Findings>> = Arc::default();
    let worker_findings = findings.clone();
    let program = job.program.clone();
    let guards_result = timely::execute(config, move |worker| {
        let end = end.clone();
        // Counts this worker as finished when it is, or when it unwinds from a panic, so the
        // others never wait for it at the end of the input.
        let mut finished = Finished::new(&end);
        let index = worker.index();
        let peers = worker.peers();
        let probe = ProbeHandle::new();
        let out = if index == 0 {
            alerts_out.lock().ok().and_then(|mut o| o.take())
        } else {
            None
        };
        let replica = replica_handles.get(index).cloned();
        let inputs = worker.dataflow::<u64, _, _>(|scope| {
            let (readings_in, readings) = scope.new_input::<Vec<RecordBatch>>();
            let (points_in, points) = scope.new_input::<Vec<Point>>();
            let (errors_in, errors) = scope.new_input::<Vec<DeadLetter>>();
            let (violations_in, violations) = scope.new_input::<Vec<Point>>();
            let (sessions_in, sessions) = scope.new_input::<Vec<SessionEvent>>();
            let inputs = Inputs {
                readings: readings_in,
                points: points_in,
                errors: errors_in,
                violations: violations_in,
                sessions: sessions_in,
            };
            errors.archive(writer.clone(), index);
            if let Program::Archaeology(params) = &program {
                crate::jobs::archaeology::build(
                    points,
                    sessions,
                    params,
                    worker_state.clone().map(|s| s as Arc<dyn SnapshotStore>),
                    (&writer, index, replica),
                    &worker_findings,
                    &probe,
                );
                return inputs;
            }
            if let Some(replica) = &replica {
                readings.clone().replicate_telemetry(replica.clone());
            }
            readings.archive_batches(telemetry.clone(), writer.clone(), index);
            let m = GuardMetrics::default();
            if let Ok(mut all) = worker_metrics.lock() {
                all.push(m.clone());
            }
            let per_series = guards
                .iter()
                .filter(|g| !g.spec.per_source())
                .map(|g| g.build().with_scores(scores_out.includes(&g.name)))
                .collect();
            let per_source: Vec<_> = guards
                .iter()
                .filter(|g| g.spec.per_source())
                .map(ConfiguredGuard::build)
                .collect();
            let checkpoints = |operator| {
                worker_state.clone().map(|store| Checkpoints {
                    store: store as Arc<dyn SnapshotStore>,
                    operator,
                })
            };
            let source_alerts = (!per_source.is_empty()).then(|| {
                let options = GuardOptions {
                    metrics: None,
                    checkpoints: checkpoints("source"),
                    limits: series_limits,
                };
                points
                    .clone()
                    .concat(violations)
                    .guards_by_source(per_source, options)
            });
            let options = GuardOptions {
                metrics: Some(m),
                checkpoints: checkpoints("series"),
                limits: series_limits,
            };
            let (alerts, scores) = points.guards_with_scores(per_series, options);
            let alerts = match source_alerts {
                Some(more) => alerts.concat(more),
                None => alerts,
            };
            scores.archive_batches(score_table.clone(), writer.clone(), index);
            alerts.clone().probe_with(&probe);
            alerts.clone().archive(writer.clone(), index);
            if let Some(replica) = replica {
                alerts.clone().replicate_alerts(replica);
            }
            alerts.publish(out, worker_alerts.clone());
            inputs
        });

        let mut sink = WorkerSink::new(inputs, (*key).clone(), lateness, max_line_bytes, &program);
        let reading = ReadLoop {
            probe: &probe,
            end: &end,
            shutdown: &shutdown,
            index,
            gate: &gate,
        };
        let newest = match &*worker_source {
            Source::Plan(plan) => reading.plan(worker, &mut sink, plan, &worker_progress),
            Source::Kafka {
                readers, positions, ..
            } => {
                let reader = readers
                    .get(index)
                    .and_then(|r| r.lock().ok().and_then(|mut r| r.take()));
                match reader {
                    Some(mut reader) => {
                        let newest = reading.kafka(worker, &mut sink, &mut reader);
                        if let Ok(mut all) = positions.lock() {
                            all.extend(reader.positions());
                        }
                        newest
                    }
                    None => i64::MIN,
                }
            }
        };
        sink.flush();
        // End of input: event time has reached the newest event of the whole input. Every
        // worker moves its inputs there before closing them and waits until the guards have
        // seen it, so that what is overdue by then (silence) is decided the same way whatever
        // the number of workers and however the steps fell.
        end.newest.fetch_max(newest, Ordering::SeqCst);
        finished.count();
        while end.done.load(Ordering::SeqCst) < peers {
            worker.step_or_park(Some(std::time::Duration::from_millis(1)));
        }
        let last = end.newest.load(Ordering::SeqCst).max(0) as u64 + 1;
        if let Some(state) = &worker_state {
            // The guards' final snapshot: everything read is decided once time reaches `last`.
            state.set_final(last);
        }
        let last = sink.advance(last);
        while probe.less_than(&last) {
            worker.step_or_park(Some(std::time::Duration::from_millis(1)));
        }
        worker_counters
            .events_in
            .fetch_add(sink.events_in, Ordering::Relaxed);
        worker_counters
            .errors
            .fetch_add(sink.errors_out, Ordering::Relaxed);
        worker_counters.late.fetch_add(sink.late, Ordering::Relaxed);
        drop(sink);
        while worker.step_or_park(None) {}
    })
    .map_err(|e| anyhow::anyhow!("starting the timely workers failed: {e}"))?;
    for (worker, result) in guards_result.join().into_iter().enumerate() {
        result.map_err(|e| anyhow::anyhow!("timely worker {worker} failed: {e}"))?;
    }
    progress.finish_and_clear();

    let stats = runtime.block_on(archive_task.finish())?;
    let replicated = match replica {
        Some(replica) => {
            let stats = replica.finish()?;
            info!(
                message = "Results replicated.",
                rows = stats.rows.load(Ordering::Relaxed),
                transactions = stats.batches.load(Ordering::Relaxed),
                spilled = stats.spilled.load(Ordering::Relaxed),
                skipped = stats.skipped.load(Ordering::Relaxed)
            );
            stats.rows.load(Ordering::Relaxed)
        }
        None => 0,
    };
    if let Some(producer) = &kafka_alerts {
        let delivered = producer.flush()?;
        info!(message = "Alerts delivered to Kafka.", delivered);
    }
    // Every file is durable now, and every alert delivered or spilled: once the guards' final
    // snapshot is current, the consumed offsets can be committed.
    if let Source::Kafka {
        input, positions, ..
    } = &*source
    {
        let last = end_of_input.newest.load(Ordering::SeqCst).max(0) + 1;
        let current = state.as_ref().and_then(|s| s.advance(i64::MAX));
        if current == Some(last) {
            let positions = positions.lock().map(|p| p.clone()).unwrap_or_default();
            input.commit(&positions)?;
        } else {
            warn!(
                message = "The guards' final snapshot is incomplete; offsets stay where they were last committed and the next run replays from there.",
                current, last
            );
        }
    }
    if let (Source::Plan(_), Some(state)) = (&*source, &state) {
        if stopped.is_triggered() {
            // Some input was not read: a state that skipped it must not be carried on.
            warn!(
                message = "The run was stopped before the end of its input; the state it started from stays the one to carry on from."
            );
        } else {
            // The archive is durable: the carried state may be relied on from now.
            let _ = state.advance(i64::MAX);
        }
    }
    let (mut series, mut state_bytes, mut forgotten, mut refused) = (0, 0, 0, 0);
    if let Ok(all) = metrics.lock() {
        for m in all.iter() {
            series += m.series.load(Ordering::Relaxed);
            state_bytes += m.state_bytes.load(Ordering::Relaxed);
            forgotten += m.evicted.load(Ordering::Relaxed);
            refused += m.refused.load(Ordering::Relaxed);
        }
    }
    if refused > 0 {
        warn!(
            message = "Readings of new series were not judged: every series held had an open alert at --max-series; raise it.",
            readings = refused
        );
    }
    Ok(Summary {
        events_in: counters.events_in.load(Ordering::Relaxed),
        archived: stats.telemetry_rows.load(Ordering::Relaxed),
        replicated,
        alerts_raised: alert_counts.raised.load(Ordering::Relaxed),
        alerts_cleared: alert_counts.cleared.load(Ordering::Relaxed),
        alert_lag_ms: match &*source {
            Source::Kafka { .. } => alert_counts.lag_percentiles(),
            Source::Plan(_) => None,
        },
        errors: counters.errors.load(Ordering::Relaxed),
        late: counters.late.load(Ordering::Relaxed),
        files: stats.files.load(Ordering::Relaxed),
        bytes: stats.bytes.load(Ordering::Relaxed),
        series,
        guard_state_bytes: state_bytes,
        series_forgotten: forgotten,
        series_refused: refused,
        elapsed: started.elapsed(),
        peak_rss_bytes: peak_rss_bytes(),
        cpu_seconds: cpu_seconds(),
        findings: match &job.program {
            Program::Guards => None,
            Program::Archaeology(params) => {
                let mut found = findings.lock().map(|f| f.clone()).unwrap_or_default();
                found.rank(params.top);
                Some(found)
            }
        },
    })
}

/// Archive sinks in each worker's dataflow: telemetry, scores, alerts and errors.
const SINKS_PER_WORKER: usize = 4;

/// Decides how far input positions may be committed: up to the event time before which the
/// archive is durable and every alert has been delivered.
struct CommitGate {
    durability: Arc<crate::sinks::archive::Durability>,
    sinks: usize,
    alerts: Option<Arc<KafkaAlerts>>,
    replica: Option<Arc<crate::sinks::replica::ReplicaDurability>>,
    state: Option<Arc<StateDir>>,
}

impl CommitGate {
    /// The event time before which everything read is kept: in archive files, delivered or
    /// spilled alerts, and (for Kafka) the guards' current snapshot.
    fn safe_before(&self) -> Option<i64> {
        let mut safe = self.durability.durable_before(self.sinks)?;
        if let Some(alerts) = &self.alerts {
            safe = safe.min(alerts.delivered_before()?);
        }
        if let Some(replica) = &self.replica {
            safe = safe.min(replica.durable_before()?);
        }
        if let Some(state) = &self.state {
            safe = safe.min(state.advance(safe)?);
        }
        Some(safe)
    }
}

/// What a worker's reading loop consults besides its sink.
struct ReadLoop<'a> {
    probe: &'a ProbeHandle<u64>,
    end: &'a EndOfInput,
    shutdown: &'a Shutdown,
    index: usize,
    gate: &'a CommitGate,
}

impl ReadLoop<'_> {
    /// Whether to stop reading: asked to, with a log line.
    fn stopping(&self) -> bool {
        let stop = self.shutdown.is_triggered();
        if stop {
            info!(
                message = "Shutdown requested; finishing what was read.",
                worker = self.index
            );
        }
        stop
    }

    /// Lets the dataflow catch up with the input time `target` from `UNITS_IN_FLIGHT` steps
    /// ago. Parks rather than spins while the other workers catch up: a busy loop here would
    /// take the core they need. A worker that has finished reading holds its inputs at its last
    /// watermark until all have finished, so once one has, or a stop was asked for, waiting
    /// for the others could wait forever.
    fn throttle(
        &self,
        worker: &mut timely::worker::Worker,
        in_flight: &mut VecDeque<u64>,
        watermark: u64,
    ) {
        in_flight.push_back(watermark);
        if in_flight.len() > UNITS_IN_FLIGHT
            && let Some(target) = in_flight.pop_front()
        {
            while self.probe.less_than(&target)
                && self.end.done.load(Ordering::SeqCst) == 0
                && !self.shutdown.is_triggered()
            {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
        }
        worker.step();
    }

    /// Reads this worker's units of `plan`; returns the newest event time read.
    fn plan(
        &self,
        worker: &mut timely::worker::Worker,
        sink: &mut WorkerSink,
        plan: &InputPlan,
        progress: &ProgressBar,
    ) -> i64 {
        let mut buf = Vec::new();
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut streams = Streams::new(plan.units.iter().skip(self.index).step_by(worker.peers()));
        while let Some(stream) = streams.next_stream() {
            if self.stopping() {
                break;
            }
            let Some(unit) = streams.take_unit(stream) else {
                continue;
            };
            sink.max_ts = streams.max_ts(stream);
            read_unit(unit, &mut buf, sink);
            streams.update(stream, sink.max_ts, sink.lateness);
            sink.flush();
            let watermark = sink.advance(streams.watermark());
            progress.inc(unit.size);
            self.throttle(worker, &mut in_flight, watermark);
        }
        streams.newest()
    }

    /// Reads this worker's Kafka partitions until they reach their ends (`stop=end`) or a stop
    /// is asked for; returns the newest event time read.
    fn kafka(
        &self,
        worker: &mut timely::worker::Worker,
        sink: &mut WorkerSink,
        reader: &mut KafkaReader,
    ) -> i64 {
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut last_commit = Instant::now();
        while !reader.finished() && !self.stopping() {
            let read =
                reader.poll_batch(SEND_BATCH, Duration::from_millis(20), |message, max_ts| {
                    // The partition's newest event time, kept only once it has given a reading.
                    let before = *max_ts;
                    sink.max_ts = before.max(0);
                    sink.message(message);
                    if before != i64::MIN || sink.max_ts > 0 {
                        *max_ts = sink.max_ts.max(before);
                    }
                });
            sink.flush();
            reader.record_batch(sink.watermark);
            if last_commit.elapsed() >= reader.commit_every {
                last_commit = Instant::now();
                if let Some(safe) = self.gate.safe_before()
                    && let Err(error) = reader.commit_durable(safe)
                {
                    warn!(message = "Committing Kafka offsets failed; will retry.", error = %format!("{error:#}"));
                }
            }
            // An idle worker (no live partition, or none at all) follows the others, so that
            // it does not hold event time back for the whole job.
            let watermark = match reader.watermark(sink.lateness) {
                Watermark::Live(watermark) => {
                    self.end.live.fetch_max(watermark, Ordering::SeqCst);
                    watermark
                }
                Watermark::Idle(own) => own.unwrap_or(0).max(self.end.live.load(Ordering::SeqCst)),
            };
            let watermark = sink.advance(watermark);
            if read > 0 {
                self.throttle(worker, &mut in_flight, watermark);
                continue;
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        reader.newest().unwrap_or(i64::MIN)
    }
}

/// What the workers share at the end of the input: the newest event time any of them read,
/// and how many have finished reading.
#[derive(Default)]
struct EndOfInput {
    newest: std::sync::atomic::AtomicI64,
    done: std::sync::atomic::AtomicUsize,
    /// The newest watermark of any worker reading live partitions (Kafka), which idle workers
    /// follow.
    live: AtomicU64,
}

/// A worker's place in [`EndOfInput::done`]: counted once, by [`Finished::count`] or on drop.
struct Finished<'a> {
    end: &'a EndOfInput,
    counted: bool,
}

impl<'a> Finished<'a> {
    fn new(end: &'a EndOfInput) -> Self {
        Self {
            end,
            counted: false,
        }
    }

    fn count(&mut self) {
        if !std::mem::replace(&mut self.counted, true) {
            self.end.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.count();
    }
}

/// The process's peak resident set size (`VmHWM`), on Linux.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The process's CPU time, user and system (`/proc/self/stat`, in clock ticks of 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which ends with ')'): utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A worker's units grouped into streams (files, or the generator), read as a merge: always the
/// next unit of the stream that is furthest behind in event time. Each stream has its own
/// watermark, so files that cover different periods (one per series, say) do not make each
/// other late; the worker's input time is the minimum over the streams it has not finished.
struct Streams<'a> {
    units: Vec<VecDeque<&'a vigil_datasets::loaders::Unit>>,
    /// Newest event time read from each stream (`i64::MIN` before its first record).
    max_ts: Vec<i64>,
    /// Each stream's watermark; `None` until its first unit has been read.
    watermark: Vec<Option<u64>>,
}

impl<'a> Streams<'a> {
    fn new(units: impl Iterator<Item = &'a vigil_datasets::loaders::Unit>) -> Self {
        let mut keys: Vec<String> = Vec::new();
        let mut grouped: Vec<VecDeque<&vigil_datasets::loaders::Unit>> = Vec::new();
        for unit in units {
            let key = unit.stream();
            match keys.iter().position(|k| *k == key) {
                Some(i) => grouped[i].push_back(unit),
                None => {
                    keys.push(key);
                    grouped.push(VecDeque::from([unit]));
                }
            }
        }
        let n = grouped.len();
        Self {
            units: grouped,
            max_ts: vec![i64::MIN; n],
            watermark: vec![None; n],
        }
    }

    /// The stream to read next: one not started yet, else the unfinished one furthest behind.
    fn next_stream(&self) -> Option<usize> {
        (0..self.units.len())
            .filter(|&i| !self.units[i].is_empty())
            .min_by_key(|&i| (self.watermark[i].is_some(), self.watermark[i], i))
    }

    fn take_unit(&mut self, stream: usize) -> Option<&'a vigil_datasets::loaders::Unit> {
        self.units[stream].pop_front()
    }

    /// The newest event time read from any stream (`i64::MIN` before the first record).
    fn newest(&self) -> i64 {
        self.max_ts.iter().copied().max().unwrap_or(i64::MIN)
    }

    fn max_ts(&self, stream: usize) -> i64 {
        self.max_ts[stream].max(0)
    }

    fn update(&mut self, stream: usize, max_ts: i64, lateness: u64) {
        self.max_ts[stream] = self.max_ts[stream].max(max_ts);
        let watermark = (self.max_ts[stream].max(0) as u64).saturating_sub(lateness);
        self.watermark[stream] = Some(self.watermark[stream].unwrap_or(0).max(watermark));
    }

    /// The minimum watermark over unfinished streams; once all are finished, the maximum.
    fn watermark(&self) -> u64 {
        let unfinished = (0..self.units.len()).filter(|&i| !self.units[i].is_empty());
        let min = unfinished.map(|i| self.watermark[i].unwrap_or(0)).min();
        min.unwrap_or_else(|| self.watermark.iter().flatten().copied().max().unwrap_or(0))
    }
}

/// Records are handed to the dataflow in batches of this many, which keeps them in cache.
const SEND_BATCH: usize = 4096;

/// One worker's inputs: readings for the archive, their points for the guards, dead letters.
struct Inputs {
    readings: InputHandle<u64, CapacityContainerBuilder<Vec<RecordBatch>>>,
    points: InputHandle<u64, CapacityContainerBuilder<Vec<Point>>>,
    errors: InputHandle<u64, CapacityContainerBuilder<Vec<DeadLetter>>>,
    /// Late and malformed records as events of their source, for the security guards.
    violations: InputHandle<u64, CapacityContainerBuilder<Vec<Point>>>,
    /// Events as sessions see them (archaeology only).
    sessions: InputHandle<u64, CapacityContainerBuilder<Vec<SessionEvent>>>,
}

/// Feeds one worker's inputs: decides lateness against the worker's watermark, seals clear
/// payloads, and sends readings, points and dead letters in batches.
struct WorkerSink {
    inputs: Inputs,
    readings: TelemetryColumns,
    points: Vec<Point>,
    errors: Vec<DeadLetter>,
    violations: Vec<Point>,
    events_in: u64,
    errors_out: u64,
    late: u64,
    /// The worker's input time: its watermark. Readings before it are late.
    watermark: u64,
    max_ts: i64,
    lateness: u64,
    /// The longest Kafka message read; a longer one is an `oversize` dead letter.
    max_line_bytes: u64,
    key: Option<PayloadKey>,
    rng: rand::rngs::ThreadRng,
    /// Reading Kafka: the partition the buffered rows come from, the offset of the message
    /// being read, and each buffered row's offset (see [`crate::sinks::archive::tag_kafka_batch`]).
    kafka: Option<(Arc<str>, i32)>,
    offset: i64,
    offsets: Vec<i64>,
    /// Whether readings go to the telemetry archive (not for archaeology).
    archive_readings: bool,
    /// How events are keyed for sessions, when the job has them.
    session_key: Option<SessionKey>,
    session_events: Vec<SessionEvent>,
}

impl WorkerSink {
    fn new(
        inputs: Inputs,
        key: Option<PayloadKey>,
        lateness: u64,
        max_line_bytes: u64,
        program: &Program,
    ) -> Self {
        let (archive_readings, session_key) = match program {
            Program::Guards => (true, None),
            Program::Archaeology(params) => (false, Some(params.sessions.by.clone())),
        };
        Self {
            inputs,
            readings: TelemetryColumns::with_capacity(SEND_BATCH),
            points: Vec::with_capacity(SEND_BATCH),
            errors: Vec::new(),
            violations: Vec::new(),
            events_in: 0,
            errors_out: 0,
            late: 0,
            watermark: 0,
            max_ts: 0,
            lateness,
            max_line_bytes,
            key,
            rng: rand::rng(),
            kafka: None,
            offset: 0,
            offsets: Vec::new(),
            archive_readings,
            session_key,
            session_events: Vec::new(),
        }
    }

    /// Sends what is buffered at the current input time.
    fn flush(&mut self) {
        if !self.readings.is_empty() {
            self.events_in += self.readings.len() as u64;
            let finished = self.readings.finish().and_then(|batch| match &self.kafka {
                Some((topic, partition)) => {
                    let offsets = std::mem::take(&mut self.offsets);
                    crate::sinks::archive::tag_kafka_batch(batch, topic, *partition, offsets)
                        .map_err(<Reading as vigil_operators::Record>::error)
                }
                None => Ok(batch),
            });
            match finished {
                Ok(batch) => self.inputs.readings.send(batch),
                // The columns are vigil's own and always fit the telemetry schema.
                Err(error) => {
                    tracing::error!(message = "Telemetry rows could not be archived.", %error)
                }
            }
        }
        if !self.archive_readings {
            self.events_in += self.points.len() as u64;
        }
        self.errors_out += self.errors.len() as u64;
        self.inputs.sessions.send_batch(&mut self.session_events);
        self.session_events.clear();
        self.inputs.points.send_batch(&mut self.points);
        self.inputs.errors.send_batch(&mut self.errors);
        self.inputs.violations.send_batch(&mut self.violations);
        self.points.clear();
        self.errors.clear();
        self.violations.clear();
        if self.points.capacity() < SEND_BATCH {
            self.points.reserve(SEND_BATCH);
        }
    }

    /// The current stream's newest event time less the allowed lateness: its records before
    /// this are late. Never below the input time, which no record may precede.
    fn running_watermark(&self) -> u64 {
        self.watermark
            .max((self.max_ts.max(0) as u64).saturating_sub(self.lateness))
    }

    /// Moves the input time up to `watermark` (the minimum over the worker's unfinished
    /// streams); call after [`WorkerSink::flush`].
    fn advance(&mut self, watermark: u64) -> u64 {
        self.watermark = self.watermark.max(watermark);
        self.inputs.readings.advance_to(self.watermark);
        self.inputs.points.advance_to(self.watermark);
        self.inputs.errors.advance_to(self.watermark);
        self.inputs.violations.advance_to(self.watermark);
        self.inputs.sessions.advance_to(self.watermark);
        self.watermark
    }
}

impl RecordSink for WorkerSink {
    fn reading(&mut self, reading: ReadingRef<'_>, payload: Option<&[u8]>) {
        // Lateness is judged against the running watermark, record by record; the input time
        // only catches up between units, which is safe because it never passes the running one.
        let watermark = self.running_watermark();
        if (reading.ts as u64) < watermark {
            self.late += 1;
            let behind = watermark - reading.ts as u64;
            self.violation(reading.source, LATE_EVENT, behind as f64);
            let reason = format!(
                "late: event time {} is {behind} ms behind the watermark {} (allowed lateness {} ms); \
                 raise --lateness to accept records this far out of order",
                vigil_operators::time::format_ts(reading.ts),
                vigil_operators::time::format_ts(watermark as i64),
                self.lateness
            );
            let raw = raw_json(&reading);
            self.errors.push(DeadLetter::new(
                reading.ts,
                format!("event {}", reading.event_id()),
                "late",
                reason,
                Some(raw.as_bytes()),
            ));
            return;
        }
        let sealed = match (payload, &self.key) {
            (None, _) => None,
            (Some(clear), Some(key)) => Some((
                key.seal(&reading.event_id(), clear, &mut self.rng),
                key.key_id().clone(),
            )),
            (Some(_), None) => {
                let reason = format!(
                    "the record carries a payload but no payload key is configured: set {} or pass --key-file",
                    crate::runtime::crypto::KEY_ENV
                );
                self.errors.push(DeadLetter::new(
                    reading.ts,
                    reading.event_id().to_string(),
                    "schema",
                    reason,
                    None,
                ));
                return;
            }
        };
        let reading = match &sealed {
            Some((ciphertext, key_id)) => ReadingRef {
                payload: Some(ciphertext),
                key_id: Some(key_id),
                ..reading
            },
            None => reading,
        };
        self.max_ts = self.max_ts.max(reading.ts);
        self.points.push(Point::from(&reading));
        if let Some(by) = &self.session_key
            && let Some(key) = by.key_of(&reading)
        {
            self.session_events.push(SessionEvent {
                key,
                participant: reading.source.to_owned(),
                ts: reading.ts,
            });
        }
        if !self.archive_readings {
            if self.points.len() >= SEND_BATCH {
                self.flush();
            }
            return;
        }
        self.readings.push(&reading);
        if self.kafka.is_some() {
            self.offsets.push(self.offset);
        }
        if self.readings.len() >= SEND_BATCH {
            self.flush();
        }
    }

    fn dead_letter(
        &mut self,
        ts: Option<i64>,
        origin: String,
        kind: &'static str,
        reason: String,
        raw: Option<&[u8]>,
    ) {
        let ts = ts.unwrap_or(self.max_ts).max(0);
        if matches!(kind, "parse" | "schema" | "oversize") {
            // The input the record came from stands for its source, which may be unreadable.
            let input = origin
                .rsplit_once(':')
                .map_or(origin.as_str(), |(file, _)| file);
            self.violation(input, SCHEMA_EVENT, 1.0);
        }
        self.errors
            .push(DeadLetter::new(ts, origin, kind, reason, raw));
    }
}

impl WorkerSink {
    /// Parses one Kafka message into readings and dead letters (named by topic, partition and
    /// offset).
    fn message(&mut self, message: &KafkaMessage<'_>) {
        // Buffered rows come from one partition at a time, so that the archive can name its
        // files by partition and offset.
        let same = self
            .kafka
            .as_ref()
            .is_some_and(|(t, p)| *p == message.partition && **t == *message.topic);
        if !same {
            self.flush();
            self.kafka = Some((message.topic.into(), message.partition));
        }
        self.offset = message.offset;
        let origin = || message.origin();
        match message.payload {
            None => self.dead_letter(
                None,
                origin(),
                "parse",
                "the message has no value (a tombstone)".into(),
                None,
            ),
            Some(bytes) if bytes.len() as u64 > self.max_line_bytes => {
                let reason = format!(
                    "the message is {} bytes, over the {}-byte limit for one record: raise \
                     --max-line-bytes (max_line_bytes in the [input] table of a job file) to read it",
                    bytes.len(),
                    self.max_line_bytes
                );
                // Only the head is kept, and not parsed: its payload is masked to the cut.
                let head = &bytes[..bytes.len().min(MAX_RAW_BYTES)];
                let raw = strip_json_payload(head);
                self.dead_letter(None, origin(), "oversize", reason, Some(&raw));
            }
            Some(bytes) => vigil_datasets::loaders::parse_message(bytes, &origin, self),
        }
    }

    /// Records a late or malformed record as an event of `source` at the current input time.
    fn violation(&mut self, source: &str, event: &str, value: f64) {
        let ts = self.watermark.max(self.max_ts.max(0) as u64) as i64;
        self.violations
            .push(Point::from(&ReadingRef::event(source, event, ts, value)));
    }
}

/// A reading as JSON for the `raw` column of a dead letter, without its payload.
fn raw_json(reading: &ReadingRef<'_>) -> String {
    let mut shown = reading.to_reading();
    shown.payload = None;
    vigil_operators::Record::to_json(&shown)
}
