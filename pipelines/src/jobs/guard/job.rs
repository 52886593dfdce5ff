//! The guard job as a value: what it reads, which guards it runs, where alerts go.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use vigil_operators::SeriesLimits;

use crate::connect::kafka::KafkaEndpoint;
use crate::jobs::engine::settings::{InputParams, Settings};
use crate::jobs::guard::registry::{ConfiguredGuard, GuardParams};
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
    /// Input, archive, workers, limits and outputs, as for every dataflow job.
    pub settings: Settings,
    /// Where alerts go as NDJSON.
    pub alerts: AlertsOut,
    /// The guards to run.
    pub guards: Vec<ConfiguredGuard>,
    /// How many series the guards keep, and for how long a quiet one.
    pub series_limits: SeriesLimits,
    /// Which guards write their per-reading scores to the `anomaly_scores` table.
    pub scores: ScoresOut,
    /// Where the guards' state is snapshotted when the input is Kafka (a local directory), so
    /// that a restart from the committed offsets carries on with it.
    pub state_dir: PathBuf,
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
            settings: Settings::default(),
            alerts: AlertsOut::Stdout,
            guards: vec![ConfiguredGuard::with_default_reaction(GuardParams::ZScore(
                Default::default(),
            ))],
            series_limits: DEFAULT_SERIES_LIMITS,
            scores: ScoresOut::All,
            state_dir: PathBuf::from("vigil-state"),
        }
    }
}

impl GuardJob {
    /// A job with the defaults over `input`, archiving to `archive`.
    pub fn over(input: InputParams, archive: impl Into<String>) -> Self {
        let mut job = GuardJob::default();
        job.settings.input = input;
        job.settings.archive = archive.into();
        job
    }

    /// Locks the local directories the job writes for as long as the locks are held: the
    /// archive, the state directory when it snapshots (Kafka input), and the spill when
    /// alerts go to Kafka or results to a replica. A second job on one of them fails with
    /// [`crate::runtime::dir_lock::DirectoryInUse`].
    pub fn lock_directories(&self) -> anyhow::Result<Vec<crate::runtime::dir_lock::DirLock>> {
        let settings = &self.settings;
        let mut dirs = Vec::new();
        if let Some(dir) = crate::sinks::archive::local_dir(&settings.archive) {
            dirs.push((dir, "archive directory", "--archive"));
        }
        if let InputParams::Kafka(_) = &settings.input {
            dirs.push((self.state_dir.clone(), "state directory", "--state"));
        }
        if matches!(self.alerts, AlertsOut::Kafka(_)) || settings.replica.is_some() {
            dirs.push((settings.spill_dir.clone(), "spill directory", "--spill"));
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
