//! The guard job as a value: what it reads, which guards it runs, where alerts go.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use vigil_operators::SeriesLimits;

use crate::connect::kafka::KafkaEndpoint;
use crate::jobs::engine::settings::{InputSpec, Settings};
use crate::jobs::guard::registry::{ConfiguredGuard, GuardSpec};
use crate::runtime::crypto::PayloadKey;
use crate::sinks::alerts::AlertTarget;
use crate::sinks::kafka::KafkaAlerts;

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
    pub(crate) fn open(
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
    /// The SQL replica the results are upserted into, if any.
    pub replica: Option<crate::sinks::replica::ReplicaOptions>,
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
            replica: None,
        }
    }
}

impl GuardJob {
    /// Locks the local directories the job writes for as long as the locks are held: the
    /// archive, the state directory when it snapshots (Kafka input), and the spill when alerts go to Kafka or results to a replica. A second
    /// job on one of them fails with [`crate::runtime::dir_lock::DirectoryInUse`].
    pub fn lock_directories(&self) -> anyhow::Result<Vec<crate::runtime::dir_lock::DirLock>> {
        let mut dirs = Vec::new();
        if let Some(dir) = crate::sinks::archive::local_dir(&self.archive) {
            dirs.push((dir, "archive directory", "--archive"));
        }
        if let InputSpec::Kafka(_) = &self.input {
            dirs.push((self.state_dir.clone(), "state directory", "--state"));
        }
        if matches!(self.alerts, AlertsOut::Kafka(_)) || self.replica.is_some() {
            dirs.push((self.spill_dir.clone(), "spill directory", "--spill"));
        }
        crate::runtime::dir_lock::lock_all(&dirs)
    }

    /// What the engine reads of the job: input, archive, workers, limits and outputs.
    pub fn settings(&self) -> Settings {
        Settings {
            input: self.input.clone(),
            archive: self.archive.clone(),
            workers: self.workers,
            lateness_ms: self.lateness_ms,
            key: self.key.clone(),
            progress: self.progress,
            chunk_bytes: self.chunk_bytes,
            max_line_bytes: self.max_line_bytes,
            max_rows_per_file: self.max_rows_per_file,
            spill_dir: self.spill_dir.clone(),
            replica: self.replica.clone(),
        }
    }
}

/// The guards' series limits unless told otherwise: a million series per job, and a series
/// quiet for a week (in event time) forgotten.
pub const DEFAULT_SERIES_LIMITS: SeriesLimits = SeriesLimits {
    max_series: Some(1_000_000),
    idle_ms: Some(7 * 24 * 3_600_000),
};
