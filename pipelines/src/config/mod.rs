//! The job configuration files: `vigil-guard --config FILE.toml` and `vigil-archaeology
//! --config FILE.toml`.
//!
//! These types are the files' shape and nothing else: every field is documented, unknown keys
//! are errors, and [`JobConfig::apply`] turns them into the runtime [`GuardJob`], checking
//! guard parameters with the same rules as `--guard`, and rejecting zero workers or zero rows
//! per file. Samples live in `deploy/`, and tests parse them.
//!
//! # Layout
//! - here: the guard job's file ([`JobConfig`]) and the `[input]`, `[archive]` and `[alerts]`
//!   tables every job's file shares.
//! - `guards`: the `[[guard]]` tables, read by the guard registry.
//! - `archaeology`: the archaeology job's file and its operators' tables.
//! - `replica`: the `[replica]` table and the replica flags applied over it.

mod archaeology;
mod guards;
mod paths;
mod replica;

pub use archaeology::{
    ArchaeologyConfig, EntanglementsConfig, FieldConfig, MotifsConfig, SequencesConfig, SessionBy,
    SessionsConfig,
};
pub use guards::GuardConfig;
pub use replica::{ReplicaConfig, apply_replica_flags, default_replica};

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::jobs::engine::settings::Settings;
use crate::jobs::guard::{AlertsOut, GuardJob, InputParams, ScoresOut};
use paths::relative_to;

/// A `vigil-guard` job.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// What the job reads.
    #[serde(default)]
    pub input: InputConfig,
    /// Where telemetry, alerts and dead letters are archived.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Where alerts are written: NDJSON or Kafka.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// Timely worker threads.
    pub workers: Option<usize>,
    /// The guards, each with its reaction: `[[guard]]` tables.
    #[serde(default, rename = "guard")]
    pub guards: Vec<GuardConfig>,
    /// `[replica]`: the SQL replica results are upserted into.
    #[serde(default)]
    pub replica: ReplicaConfig,
    /// `[metrics]`: where metrics, health and readiness are served.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The `[metrics]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `/metrics`, `/health` and `/ready` on this address, e.g. `"127.0.0.1:9464"`.
    pub address: Option<String>,
}

impl MetricsConfig {
    /// Sets the address on `settings`, checked.
    pub(crate) fn apply(&self, file: &Path, settings: &mut Settings) -> anyhow::Result<()> {
        if let Some(address) = &self.address {
            let addr = address.parse().map_err(|e| {
                anyhow::anyhow!(
                    "{}: metrics.address = {address:?} is not an address ({e}); write e.g. \"127.0.0.1:9464\"",
                    file.display()
                )
            })?;
            settings.metrics_addr = Some(addr);
        }
        Ok(())
    }
}

/// The `[input]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// NDJSON/CSV/Parquet files or directories, relative to the config file.
    #[serde(default)]
    pub paths: Vec<PathBuf>,
    /// A generator instead of files: `gen:rocket?…` or `gen:devices?…`.
    pub generator: Option<String>,
    /// Kafka topics instead of files: `kafka://HOST:PORT/TOPIC[,TOPIC…]?group=G[&stop=end]`
    /// (see the README's Kafka section for the parameters).
    #[serde(default)]
    pub kafka: Vec<String>,
    /// How far out of order a record may arrive before it is late, e.g. `10s`.
    pub lateness: Option<String>,
    /// With Kafka: where the guards' state is snapshotted, relative to the config file
    /// (default `./vigil-state`).
    pub state: Option<PathBuf>,
    /// The longest line (or Kafka message) read, in bytes (default 1048576); a longer one is
    /// an `oversize` dead letter.
    pub max_line_bytes: Option<u64>,
}

/// The `[archive]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveConfig {
    /// A local directory (relative to the config file) or `s3://bucket/prefix`.
    pub url: Option<String>,
    /// Rows per archive file before a partition is cut into another file.
    pub max_rows_per_file: Option<usize>,
    /// Which guards archive per-reading scores in `anomaly_scores`: `"all"` (default),
    /// `"none"`, or a comma-separated list of guard names.
    pub scores: Option<String>,
}

/// The `[alerts]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// `-` for stdout, a file path, `none`, or `kafka://HOST:PORT[?security…]`.
    pub output: Option<String>,
    /// Where alerts for Kafka wait on local disk until the broker has them, relative to the
    /// config file (default `./vigil-spill`).
    pub spill: Option<PathBuf>,
}

impl JobConfig {
    /// Reads and checks a config file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<JobConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Sets what the file configures on `job`. `file` is where it came from: relative paths
    /// are taken from its directory, and errors name it.
    pub fn apply(&self, file: &Path, job: &mut GuardJob) -> anyhow::Result<()> {
        if let Some(state) = apply_io(
            &self.input,
            &self.archive,
            self.workers,
            file,
            &mut job.settings,
        )? {
            job.state_dir = state;
        }
        self.replica.apply(file, &mut job.settings)?;
        self.metrics.apply(file, &mut job.settings)?;
        let at = |p: &Path| relative_to(file, p);
        if let Some(scores) = &self.archive.scores {
            job.scores = ScoresOut::parse(scores);
        }
        if let Some(spill) = &self.alerts.spill {
            job.settings.spill_dir = at(spill);
        }
        if let Some(output) = &self.alerts.output {
            job.alerts = match AlertsOut::parse(output)
                .with_context(|| format!("{}: alerts.output", file.display()))?
            {
                AlertsOut::File(p) => AlertsOut::File(at(&p)),
                other => other,
            };
        }
        if !self.guards.is_empty() {
            job.guards = self
                .guards
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let label = g
                        .name
                        .as_deref()
                        .map_or(String::new(), |n| format!(" ({n})"));
                    g.to_runtime(&format!("{}: guard {}{label}", file.display(), i + 1))
                })
                .collect::<anyhow::Result<_>>()?;
        }
        Ok(())
    }
}

/// Sets what the `[input]` and `[archive]` tables and `workers` configure on `settings`: the
/// part every job's file shares. Returns the state directory `[input] state` names, if any.
pub(crate) fn apply_io(
    input: &InputConfig,
    archive: &ArchiveConfig,
    workers: Option<usize>,
    file: &Path,
    settings: &mut Settings,
) -> anyhow::Result<Option<PathBuf>> {
    let at = |p: &Path| relative_to(file, p);
    let sources = [
        input.generator.is_some(),
        !input.paths.is_empty(),
        !input.kafka.is_empty(),
    ];
    anyhow::ensure!(
        sources.iter().filter(|s| **s).count() <= 1,
        "{}: [input] has more than one of paths, generator and kafka: use one",
        file.display()
    );
    if !input.kafka.is_empty() {
        settings.input = InputParams::from_args(&input.kafka)
            .with_context(|| format!("{}: input.kafka", file.display()))?;
    }
    match (&input.generator, input.paths.is_empty()) {
        (Some(_), false) => anyhow::bail!(
            "{}: [input] has both paths and generator: use one",
            file.display()
        ),
        (Some(generator), true) => settings.input = InputParams::Generator(generator.clone()),
        (None, false) => {
            settings.input = InputParams::Paths(input.paths.iter().map(|p| at(p)).collect())
        }
        (None, true) => {}
    }
    if let Some(lateness) = &input.lateness {
        let d = humantime::parse_duration(lateness).map_err(|e| {
            anyhow::anyhow!(
                "{}: input.lateness = {lateness:?} is not a duration ({e}); write e.g. \"10s\"",
                file.display()
            )
        })?;
        settings.lateness_ms = d.as_millis() as u64;
    }
    if let Some(url) = &archive.url {
        settings.archive = if url.contains("://") {
            url.clone()
        } else {
            at(Path::new(url)).display().to_string()
        };
    }
    if let Some(rows) = archive.max_rows_per_file {
        anyhow::ensure!(
            rows > 0,
            "{}: archive.max_rows_per_file must be positive",
            file.display()
        );
        settings.max_rows_per_file = rows;
    }
    if let Some(max) = input.max_line_bytes {
        anyhow::ensure!(
            max > 0,
            "{}: input.max_line_bytes must be at least 1",
            file.display()
        );
        settings.max_line_bytes = max;
    }
    if let Some(workers) = workers {
        anyhow::ensure!(
            workers > 0,
            "{}: workers must be at least 1",
            file.display()
        );
        settings.workers = workers;
    }
    Ok(input.state.as_deref().map(at))
}
