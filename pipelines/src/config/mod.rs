//! The job configuration file of `vigil-guard --config FILE.toml`.
//!
//! These types are the file's shape and nothing else: every field is documented, unknown keys
//! are errors, and [`JobConfig::apply`] turns them into the runtime [`GuardJob`], checking
//! guard parameters with the same rules as `--guard`, and rejecting zero workers or zero rows
//! per file. A sample lives in `deploy/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::jobs::archaeology::{ArchaeologyParams, SessionKey};
use crate::jobs::guard::{AlertsOut, GuardJob, InputSpec, ScoresOut};
use crate::jobs::guard::registry::{ConfiguredGuard, GuardSpec, Reaction, Severity, Topic};
use crate::connect::replica::ReplicaUrl;
use crate::sinks::replica::{DEFAULT_REPLICA, ReplicaOptions};
use crate::runtime::secrets::SecretUrl;

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
}

/// The `[replica]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaConfig {
    /// `postgres://…`, `sqlite://PATH` (relative to the config file) or `none`; shown with its
    /// password hidden.
    pub url: Option<SecretUrl>,
    /// A role to take after connecting, e.g. `observer_writer`.
    pub role: Option<String>,
    /// Apply vigil's migrations at start-up.
    pub migrate: Option<bool>,
    /// Replicate the encrypted payloads too.
    pub replicate_payload: Option<bool>,
    /// Rows after which a batch is written.
    pub batch_rows: Option<usize>,
    /// Time after which a batch is written, e.g. `"500ms"`.
    pub batch_interval: Option<String>,
    /// How rows reach a PostgreSQL-protocol replica: `auto` (binary COPY on PostgreSQL,
    /// array parameters on CockroachDB), `copy` or `arrays`.
    pub bulk: Option<String>,
}

impl ReplicaConfig {
    /// Sets what the table configures on `job`.
    pub fn apply(&self, file: &Path, job: &mut GuardJob) -> anyhow::Result<()> {
        if let Some(url) = &self.url {
            let url = match url.strip_prefix("sqlite://") {
                Some(path) if !Path::new(path).is_absolute() => {
                    format!("sqlite://{}", relative_to(file, Path::new(path)).display())
                }
                _ => url.expose().to_owned(),
            };
            set_replica_url(job, &url)
                .with_context(|| format!("{}: replica.url", file.display()))?;
        }
        // Every value is checked, whether or not the job has a replica to set it on.
        let interval = match &self.batch_interval {
            Some(text) => Some(humantime::parse_duration(text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: replica.batch_interval = {text:?} is not a duration ({e}); write e.g. \
                     \"500ms\"",
                    file.display()
                )
            })?),
            None => None,
        };
        let bulk = match &self.bulk {
            Some(text) => Some(
                crate::sinks::replica::Bulk::parse(text)
                    .with_context(|| format!("{}: replica.bulk", file.display()))?,
            ),
            None => None,
        };
        if let Some(options) = &mut job.replica {
            if let Some(role) = &self.role {
                options.role = Some(role.clone());
            }
            if let Some(migrate) = self.migrate {
                options.migrate = migrate;
            }
            if let Some(payload) = self.replicate_payload {
                options.replicate_payload = payload;
            }
            if let Some(rows) = self.batch_rows {
                options.batch_rows = rows.max(1);
            }
            if let Some(interval) = interval {
                options.batch_interval = interval;
            }
            if let Some(bulk) = bulk {
                options.bulk = bulk;
            }
        }
        Ok(())
    }
}

/// The replica of a job run from the command line with none configured.
pub fn default_replica() -> anyhow::Result<ReplicaOptions> {
    Ok(ReplicaOptions::new(ReplicaUrl::parse(DEFAULT_REPLICA)?))
}

/// Points the job's replica at `url` (`none` turns it off), keeping its other settings.
fn set_replica_url(job: &mut GuardJob, url: &str) -> anyhow::Result<()> {
    job.replica = match url {
        "none" | "off" => None,
        url => {
            let url = ReplicaUrl::parse(url)?;
            Some(match job.replica.take() {
                Some(options) => ReplicaOptions { url, ..options },
                None => ReplicaOptions::new(url),
            })
        }
    };
    Ok(())
}

/// Applies the replica flags of the command line (after any config file).
pub fn apply_replica_flags(
    job: &mut GuardJob,
    url: Option<&str>,
    role: Option<&str>,
    migrate: bool,
    replicate_payload: bool,
) -> anyhow::Result<()> {
    if let Some(url) = url {
        set_replica_url(job, url).context("--replica")?;
    }
    if let Some(options) = &mut job.replica {
        if let Some(role) = role {
            options.role = Some(role.to_owned());
        }
        options.migrate |= migrate;
        options.replicate_payload |= replicate_payload;
    }
    Ok(())
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

/// One `[[guard]]`: exactly one guard table (`[guard.zscore]`, …) and its `[guard.reaction]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardConfig {
    /// The name alerts carry in `guard`; the kind when absent.
    pub name: Option<String>,
    /// What the guard's alerts set off. Required: every guard has a reaction.
    pub reaction: ReactionConfig,
    /// Rolling z-score.
    pub zscore: Option<ZScoreConfig>,
    /// Fixed bounds on one metric.
    pub threshold: Option<ThresholdConfig>,
    /// Distance from the exponentially weighted mean.
    pub ewma: Option<EwmaConfig>,
    /// Distance from the rolling median in MADs.
    pub mad: Option<MadConfig>,
    /// Rate of change per second.
    pub rate: Option<RateConfig>,
    /// Lasting level shifts (CUSUM).
    pub level_shift: Option<LevelShiftConfig>,
    /// Distance from the usual value at this phase of the period.
    pub seasonal: Option<SeasonalConfig>,
    /// All statistical views combined into one calibrated score.
    pub composite: Option<CompositeConfig>,
    /// A series that stops reporting.
    pub silence: Option<SilenceConfig>,
    /// Per source: sequence numbers that skip, repeat or go back.
    pub sequence: Option<SequenceConfig>,
    /// Per source: a source not in the registry.
    pub unknown_source: Option<UnknownSourceConfig>,
    /// Per source: a burst of failed authentications.
    pub auth_failures: Option<BurstConfig>,
    /// Per source: records later than the allowed lateness.
    pub late_records: Option<BurstConfig>,
    /// Per input: malformed or mistyped records.
    pub schema_violations: Option<BurstConfig>,
}

/// `[guard.reaction]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReactionConfig {
    /// `telemetry-alerts` or `security-guard-feed`.
    pub topic: TopicConfig,
    /// `info`, `warning` or `critical`.
    pub severity: SeverityConfig,
    /// What an alert of this guard means, for the people who react to it.
    pub description: String,
}

/// A topic name in the file.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicConfig {
    /// `telemetry-alerts`.
    TelemetryAlerts,
    /// `security-guard-feed`.
    SecurityGuardFeed,
}

/// A severity name in the file.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeverityConfig {
    /// `info`.
    Info,
    /// `warning`.
    Warning,
    /// `critical`.
    Critical,
}

/// `[guard.zscore]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZScoreConfig {
    /// Previous readings the mean and deviation are taken over (≥ 2; default 60).
    pub window: Option<usize>,
    /// Raise at this many deviations (default 6).
    pub threshold: Option<f64>,
    /// Clear below this many deviations (default half of threshold).
    pub clear: Option<f64>,
}

/// `[guard.threshold]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    /// The metric name the bounds apply to.
    pub name: String,
    /// Alert below this.
    pub min: Option<f64>,
    /// Alert above this.
    pub max: Option<f64>,
}

/// `[guard.ewma]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EwmaConfig {
    /// Span of the weighted mean in readings (default 60).
    pub span: Option<usize>,
    /// Readings before the guard gives an opinion (default 30).
    pub warmup: Option<usize>,
    /// Raise at this many weighted deviations (default 6).
    pub threshold: Option<f64>,
    /// Clear below this many (default half of threshold).
    pub clear: Option<f64>,
}

/// `[guard.mad]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadConfig {
    /// Previous readings the median and MAD are taken over (≥ 3; default 60).
    pub window: Option<usize>,
    /// Raise at this many robust deviations (default 6).
    pub threshold: Option<f64>,
    /// Clear below this many (default half of threshold).
    pub clear: Option<f64>,
}

/// `[guard.rate]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// A fixed bound on |rate| in units per second; without it, rates are compared with the
    /// series' usual rates.
    pub max: Option<f64>,
    /// Without `max`: span of the usual rate in readings (default 60).
    pub span: Option<usize>,
    /// Without `max`: 1 judges rates, 2 changes of rate (default 1).
    pub order: Option<usize>,
    /// Without `max`: raise at this many deviations from the usual rate (default 6).
    pub threshold: Option<f64>,
    /// Clear level: a share of `max` (default 0.5), or deviations without it.
    pub clear: Option<f64>,
}

/// `[guard.level_shift]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelShiftConfig {
    /// Span of the baseline in readings (default 240).
    pub span: Option<usize>,
    /// Deviations per reading that do not count towards a shift (default 1).
    pub drift: Option<f64>,
    /// Raise when the cumulative sum reaches this (default 12).
    pub threshold: Option<f64>,
    /// Clear below this (default half of threshold).
    pub clear: Option<f64>,
}

/// `[guard.seasonal]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonalConfig {
    /// The period, e.g. `1d` (default), `7d`, `12h`.
    pub period: Option<String>,
    /// Phases per period (default 24).
    pub buckets: Option<usize>,
    /// Raise at this many deviations from the phase's mean (default 6).
    pub threshold: Option<f64>,
    /// Clear below this many (default half of threshold).
    pub clear: Option<f64>,
}

/// `[guard.composite]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeConfig {
    /// Window of the rolling median and span of the weighted means (default 30).
    pub window: Option<usize>,
    /// Readings of history each component remembers (default 2000).
    pub memory: Option<f64>,
    /// Readings before the guard gives an opinion (default 100).
    pub warmup: Option<usize>,
    /// Raise when the combined tail probability is at most this (default 0.003).
    pub raise_p: Option<f64>,
    /// Clear when it is above this (default 0.5).
    pub clear_p: Option<f64>,
    /// How fast a low probability wears off per reading (≥ 1; default 1.1).
    pub hold: Option<f64>,
    /// Readings after an alarm during which the guard does not raise again (default 0).
    pub refractory: Option<usize>,
}

/// `[guard.silence]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SilenceConfig {
    /// Usual intervals without a reading that make a series silent (default 5).
    pub factor: Option<f64>,
    /// Silence shorter than this never counts, e.g. `30s` (default `1s`).
    pub min: Option<String>,
    /// Intervals seen before the usual interval is trusted (default 5).
    pub warmup: Option<usize>,
}

/// `[guard.sequence]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// Missing sequence numbers tolerated before it is a gap (default 0).
    pub max_gap: Option<usize>,
}

/// `[guard.unknown_source]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnknownSourceConfig {
    /// Known sources: exact names or patterns with one `*`, e.g. `["veh-*", "ground-1"]`.
    pub registry: Vec<String>,
}

/// `[guard.auth_failures]`, `[guard.late_records]`, `[guard.schema_violations]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstConfig {
    /// The event name counted (auth_failures only; default `AUTH_FAILURE`).
    pub event: Option<String>,
    /// The window, e.g. `1m`.
    pub window: Option<String>,
    /// Raise when more than this many events fall in the window.
    pub limit: Option<usize>,
    /// Clear when at most this many do.
    pub clear: Option<usize>,
}

/// Key/value pairs of the set fields, for the shared parameter checks.
macro_rules! pairs {
    ($config:expr; $($field:ident),*) => {{
        let mut pairs: Vec<(&'static str, String)> = Vec::new();
        $(if let Some(v) = &$config.$field { pairs.push((stringify!($field), v.to_string())); })*
        pairs
    }};
}

impl GuardConfig {
    /// The guard kind and its parameters as key/value pairs.
    fn kind_and_pairs(&self) -> anyhow::Result<(&'static str, Vec<(&'static str, String)>)> {
        let mut found: Vec<(&'static str, Vec<(&'static str, String)>)> = Vec::new();
        if let Some(c) = &self.zscore {
            found.push(("zscore", pairs!(c; window, threshold, clear)));
        }
        if let Some(c) = &self.threshold {
            let mut p = pairs!(c; min, max);
            p.push(("name", c.name.clone()));
            found.push(("threshold", p));
        }
        if let Some(c) = &self.ewma {
            found.push(("ewma", pairs!(c; span, warmup, threshold, clear)));
        }
        if let Some(c) = &self.mad {
            found.push(("mad", pairs!(c; window, threshold, clear)));
        }
        if let Some(c) = &self.rate {
            found.push(("rate", pairs!(c; max, span, order, threshold, clear)));
        }
        if let Some(c) = &self.level_shift {
            found.push(("level_shift", pairs!(c; span, drift, threshold, clear)));
        }
        if let Some(c) = &self.seasonal {
            found.push(("seasonal", pairs!(c; period, buckets, threshold, clear)));
        }
        if let Some(c) = &self.composite {
            found.push((
                "composite",
                pairs!(c; window, memory, warmup, raise_p, clear_p, hold, refractory),
            ));
        }
        if let Some(c) = &self.silence {
            found.push(("silence", pairs!(c; factor, min, warmup)));
        }
        if let Some(c) = &self.sequence {
            found.push(("sequence", pairs!(c; max_gap)));
        }
        if let Some(c) = &self.unknown_source {
            found.push(("unknown_source", vec![("registry", c.registry.join("|"))]));
        }
        for (kind, config) in [
            ("auth_failures", &self.auth_failures),
            ("late_records", &self.late_records),
            ("schema_violations", &self.schema_violations),
        ] {
            if let Some(c) = config {
                found.push((kind, pairs!(c; event, window, limit, clear)));
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => anyhow::bail!(
                "has no guard table: add one of [guard.zscore], [guard.threshold], [guard.ewma], \
                 [guard.mad], [guard.rate], [guard.level_shift], [guard.seasonal], [guard.composite], \
                 [guard.silence], [guard.sequence], [guard.unknown_source], [guard.auth_failures], \
                 [guard.late_records], [guard.schema_violations]"
            ),
            _ => anyhow::bail!(
                "has several guard tables ({}): one [[guard]] runs one guard",
                found.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn to_runtime(&self, context: &str) -> anyhow::Result<ConfiguredGuard> {
        let (kind, pairs) = self.kind_and_pairs().with_context(|| context.to_owned())?;
        let name = self.name.clone().unwrap_or_else(|| kind.to_owned());
        anyhow::ensure!(!name.trim().is_empty(), "{context}: name must not be empty");
        anyhow::ensure!(
            !self.reaction.description.trim().is_empty(),
            "{context}: reaction.description must say what the alert means"
        );
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let spec = GuardSpec::from_pairs(kind, &borrowed, &format!("{context} [guard.{kind}]"))?;
        Ok(ConfiguredGuard {
            name,
            spec,
            reaction: Reaction {
                topic: match self.reaction.topic {
                    TopicConfig::TelemetryAlerts => Topic::TelemetryAlerts,
                    TopicConfig::SecurityGuardFeed => Topic::SecurityGuardFeed,
                },
                severity: match self.reaction.severity {
                    SeverityConfig::Info => Severity::Info,
                    SeverityConfig::Warning => Severity::Warning,
                    SeverityConfig::Critical => Severity::Critical,
                },
                description: self.reaction.description.clone(),
            },
        })
    }
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
        apply_io(&self.input, &self.archive, self.workers, file, job)?;
        self.replica.apply(file, job)?;
        let at = |p: &Path| relative_to(file, p);
        if let Some(scores) = &self.archive.scores {
            job.scores = ScoresOut::parse(scores);
        }
        if let Some(spill) = &self.alerts.spill {
            job.spill_dir = at(spill);
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

/// `p` as written in the config file `file`: relative paths are taken from its directory.
fn relative_to(file: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        file.parent().unwrap_or(Path::new("")).join(p)
    }
}

/// Sets what the `[input]` and `[archive]` tables and `workers` configure on `job`: the part
/// every job's file shares.
pub(crate) fn apply_io(
    input: &InputConfig,
    archive: &ArchiveConfig,
    workers: Option<usize>,
    file: &Path,
    job: &mut GuardJob,
) -> anyhow::Result<()> {
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
        job.input = InputSpec::from_args(&input.kafka)
            .with_context(|| format!("{}: input.kafka", file.display()))?;
    }
    match (&input.generator, input.paths.is_empty()) {
        (Some(_), false) => anyhow::bail!(
            "{}: [input] has both paths and generator: use one",
            file.display()
        ),
        (Some(generator), true) => job.input = InputSpec::Generator(generator.clone()),
        (None, false) => job.input = InputSpec::Paths(input.paths.iter().map(|p| at(p)).collect()),
        (None, true) => {}
    }
    if let Some(lateness) = &input.lateness {
        let d = humantime::parse_duration(lateness).map_err(|e| {
            anyhow::anyhow!(
                "{}: input.lateness = {lateness:?} is not a duration ({e}); write e.g. \"10s\"",
                file.display()
            )
        })?;
        job.lateness_ms = d.as_millis() as u64;
    }
    if let Some(url) = &archive.url {
        job.archive = if url.contains("://") {
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
        job.max_rows_per_file = rows;
    }
    if let Some(state) = &input.state {
        job.state_dir = at(state);
    }
    if let Some(max) = input.max_line_bytes {
        anyhow::ensure!(
            max > 0,
            "{}: input.max_line_bytes must be at least 1",
            file.display()
        );
        job.max_line_bytes = max;
    }
    if let Some(workers) = workers {
        anyhow::ensure!(
            workers > 0,
            "{}: workers must be at least 1",
            file.display()
        );
        job.workers = workers;
    }
    Ok(())
}

/// A `vigil-archaeology` job (`--config FILE.toml`). Every table is optional; what is left
/// out keeps its default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchaeologyConfig {
    /// What the job reads (files, the dataset or a generator).
    #[serde(default)]
    pub input: InputConfig,
    /// Where patterns, sessions, entanglements and dead letters are archived.
    #[serde(default)]
    pub archive: ArchiveConfig,
    /// Timely worker threads.
    pub workers: Option<usize>,
    /// How many patterns the end-of-run report shows (default 20).
    pub top: Option<usize>,
    /// `[sequences]`: sequential patterns.
    #[serde(default)]
    pub sequences: SequencesConfig,
    /// `[motifs]`: recurring shapes in each reading series.
    #[serde(default)]
    pub motifs: MotifsConfig,
    /// `[entanglements]`: sources whose events come together more often than chance.
    #[serde(default)]
    pub entanglements: EntanglementsConfig,
    /// `[sessions]`: session windows per room or per source.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// `[field]`: the bounded summary of all activity.
    #[serde(default)]
    pub field: FieldConfig,
    /// `[replica]`: the SQL replica patterns, sessions and entanglements are upserted into.
    #[serde(default)]
    pub replica: ReplicaConfig,
}

/// The `[sequences]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequencesConfig {
    /// The longest pattern, in events (2 to 8; default 3).
    pub max_len: Option<usize>,
    /// Events of a pattern follow each other within this much event time (default `3s`).
    pub max_gap: Option<String>,
    /// Distinct sources that must show a pattern (default 2).
    pub min_support: Option<u64>,
    /// Occurrences a pattern needs in all (default 2).
    pub min_occurrences: Option<u64>,
}

/// The `[motifs]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MotifsConfig {
    /// Whether motifs are looked for (default true).
    pub enabled: Option<bool>,
    /// Readings per subsequence (default 16).
    pub window: Option<usize>,
    /// PAA segments per subsequence, the SAX word's length; divides `window` (default 4).
    pub segments: Option<usize>,
    /// Letters of the SAX alphabet (3 to 8; default 4).
    pub alphabet: Option<usize>,
    /// Motifs reported per series (default 3).
    pub top_k: Option<usize>,
    /// Occurrences a motif needs (default 3).
    pub min_count: Option<u64>,
}

/// The `[entanglements]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntanglementsConfig {
    /// Two events come together when at most this far apart (default `1500ms`).
    pub delta: Option<String>,
    /// Counted over this much event time (default `10m`).
    pub window: Option<String>,
    /// Evaluated every this much event time (default `1m`); each evaluation visits every pair
    /// that came together in the window.
    pub every: Option<String>,
    /// Events together a pair needs (default 5).
    pub min_count: Option<u64>,
    /// Times more than the average pair (default 1.5).
    pub min_lift: Option<f64>,
}

/// The `[sessions]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// `room` (by an attribute of the event, default) or `source`.
    pub by: Option<String>,
    /// The attribute that names the room (default `room`).
    pub room_attr: Option<String>,
    /// A session ends after this much event time without an event (default `30s`).
    pub gap: Option<String>,
}

/// The `[field]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    /// Resonance and active sources are taken over this much event time (default `60s`).
    pub window: Option<String>,
    /// A snapshot every this much event time (default `10s`).
    pub every: Option<String>,
    /// Events at least this intense are kept as memory particles (default 0.8).
    pub high_intensity: Option<f64>,
    /// Memory particles kept (default 1000).
    pub particles: Option<usize>,
    /// Snapshots kept (default 10).
    pub snapshots: Option<usize>,
}

impl ArchaeologyConfig {
    /// Reads and checks a config file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<ArchaeologyConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the config file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Sets what the file configures on `job` and `params`, checking every value.
    pub fn apply(
        &self,
        file: &Path,
        job: &mut GuardJob,
        params: &mut ArchaeologyParams,
    ) -> anyhow::Result<()> {
        let name = file.display();
        anyhow::ensure!(
            self.archive.scores.is_none(),
            "{name}: archive.scores is a vigil-guard setting; the archaeology job archives no scores"
        );
        apply_io(&self.input, &self.archive, self.workers, file, job)?;
        self.replica.apply(file, job)?;
        if self.input.state.is_some() {
            params.carry = Some(job.state_dir.clone());
        }
        let ms = |key: &str, value: &Option<String>, target: &mut u64| -> anyhow::Result<()> {
            if let Some(text) = value {
                let d = humantime::parse_duration(text).map_err(|e| {
                    anyhow::anyhow!(
                        "{name}: {key} = {text:?} is not a duration ({e}); write e.g. \"30s\""
                    )
                })?;
                *target = d.as_millis() as u64;
            }
            Ok(())
        };
        if let Some(top) = self.top {
            params.top = top;
        }
        let s = &self.sequences;
        let seq = &mut params.sequences;
        seq.max_len = s.max_len.unwrap_or(seq.max_len);
        ms("sequences.max_gap", &s.max_gap, &mut seq.max_gap_ms)?;
        seq.min_support = s.min_support.unwrap_or(seq.min_support);
        seq.min_occurrences = s.min_occurrences.unwrap_or(seq.min_occurrences);
        seq.validate()
            .map_err(|e| anyhow::anyhow!("{name}: sequences: {e}"))?;

        let m = &self.motifs;
        if m.enabled == Some(false) {
            params.motifs = None;
        } else {
            let mut motifs = params.motifs.unwrap_or_default();
            motifs.window = m.window.unwrap_or(motifs.window);
            motifs.segments = m.segments.unwrap_or(motifs.segments);
            motifs.alphabet = m.alphabet.unwrap_or(motifs.alphabet);
            motifs.top_k = m.top_k.unwrap_or(motifs.top_k);
            motifs.min_count = m.min_count.unwrap_or(motifs.min_count);
            motifs
                .validate()
                .map_err(|e| anyhow::anyhow!("{name}: motifs: {e}"))?;
            params.motifs = Some(motifs);
        }

        let e = &self.entanglements;
        let ent = &mut params.entanglements;
        ms("entanglements.delta", &e.delta, &mut ent.delta_ms)?;
        ms("entanglements.window", &e.window, &mut ent.window_ms)?;
        ms("entanglements.every", &e.every, &mut ent.every_ms)?;
        ent.min_count = e.min_count.unwrap_or(ent.min_count);
        ent.min_lift = e.min_lift.unwrap_or(ent.min_lift);
        anyhow::ensure!(
            ent.every_ms > 0 && ent.window_ms >= ent.every_ms.max(ent.delta_ms),
            "{name}: entanglements.every must be positive, and neither it nor entanglements.delta longer than entanglements.window"
        );
        anyhow::ensure!(
            ent.min_lift.is_finite() && ent.min_lift > 0.0,
            "{name}: entanglements.min_lift must be a positive number"
        );

        let x = &self.sessions;
        ms("sessions.gap", &x.gap, &mut params.sessions.gap_ms)?;
        match x.by.as_deref() {
            None | Some("room") => {
                let attr = x.room_attr.clone().unwrap_or_else(|| "room".into());
                anyhow::ensure!(!attr.is_empty(), "{name}: sessions.room_attr is empty");
                params.sessions.by = SessionKey::Room(attr);
            }
            Some("source") => {
                anyhow::ensure!(
                    x.room_attr.is_none(),
                    "{name}: sessions.room_attr is set but sessions.by is \"source\": drop one"
                );
                params.sessions.by = SessionKey::Source;
            }
            Some(other) => {
                anyhow::bail!("{name}: sessions.by = {other:?}: use \"room\" or \"source\"")
            }
        }

        let f = &self.field;
        let field = &mut params.field;
        ms("field.window", &f.window, &mut field.window_ms)?;
        ms("field.every", &f.every, &mut field.every_ms)?;
        field.high_intensity = f.high_intensity.unwrap_or(field.high_intensity);
        field.particles = f.particles.unwrap_or(field.particles);
        field.snapshots = f.snapshots.unwrap_or(field.snapshots);
        anyhow::ensure!(
            field.every_ms > 0 && field.window_ms > 0,
            "{name}: field.window and field.every must be positive"
        );
        Ok(())
    }
}
