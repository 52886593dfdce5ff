//! `vigil-guard`'s command line and how it becomes a guard job.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::common::{Limit, dataflow_report, parse_max_series, parse_series_idle};
use super::{CommonArgs, JobCommand, JobError, Prepared, ReplicaArgs, Report};
use crate::config::JobConfig;
use crate::jobs::engine::settings::{BUILT_IN_LATENESS_MS, DEFAULT_LATENESS_MS};
use crate::jobs::guard::registry::{
    ConfiguredGuard, GuardParams, catalogue_listing, guards_listing,
};
use crate::jobs::guard::{AlertsOut, GuardJob, InputParams, ScoresOut};
use crate::runtime::stop::Stop;

/// Replays a dataset (or runs the generator) through vigil's anomaly guards, archives
/// telemetry, alerts and dead letters as Parquet, and prints alerts as NDJSON.
#[derive(Debug, clap::Parser)]
#[command(name = "vigil-guard", version)]
pub struct GuardArgs {
    /// Input: NDJSON/CSV/Parquet files or directories, `gen:rocket[?vehicles=…&ticks=…]`,
    /// `gen:devices[?…]`, or Kafka topics `kafka://HOST:PORT/TOPIC[,TOPIC…]?group=G[&stop=end]`.
    /// Repeatable. Without it the built-in NAB dataset is replayed.
    #[arg(long, short = 'i')]
    pub input: Vec<String>,

    /// A job configuration file (TOML): input, archive, alerts, workers, and guards with their
    /// reactions. Flags given as well override it.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// Print every guard with its reaction and exit: the catalogue, or the job's guards when
    /// --config or --guard is given.
    #[arg(long)]
    pub list_guards: bool,

    /// The archive: a local directory or `s3://bucket/prefix` (credentials from AWS_* variables).
    /// Default `./vigil-data`.
    #[arg(long, env = "VIGIL_ARCHIVE")]
    pub archive: Option<String>,

    /// Where alerts go: `-` for stdout as NDJSON (default), a file path, `none`, or
    /// `kafka://HOST:PORT[?security…]` to publish each to the topic its reaction names.
    #[arg(long)]
    pub alerts: Option<String>,

    /// A guard with parameters, e.g. `zscore:window=60,threshold=6`, `composite`, `rate:max=50`
    /// or `threshold:name=temp_c,max=90`. Repeatable. Default: zscore with its defaults.
    /// `--list-guards` shows them all.
    #[arg(long = "guard", short = 'g')]
    pub guards: Vec<String>,

    /// Which guards archive their score for every reading in the `anomaly_scores` table:
    /// `all` (default), `none`, or a comma-separated list of guard names.
    #[arg(long)]
    pub scores: Option<String>,

    /// Serve the live page on this address (e.g. `127.0.0.1:8080`): open alerts, raises and
    /// clears as they happen, charts of the alerting series, the guards; with `/metrics`,
    /// `/health` and `/ready` beside it. The job keeps serving after its input ends, until
    /// Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,

    /// Workers, lateness, payload key, summary file and line limit.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Rows per archive file before a partition is cut into another file (default 1,000,000).
    #[arg(long)]
    pub max_rows_per_file: Option<usize>,

    /// Where alerts for Kafka wait, on local disk, until the broker has them (default
    /// `./vigil-spill`); sealed with the payload key when one is configured.
    #[arg(long)]
    pub spill: Option<PathBuf>,

    /// Where the guards' state is snapshotted when reading Kafka (default `./vigil-state`), so
    /// that a restart from the committed offsets carries on where the guards were.
    #[arg(long)]
    pub state: Option<PathBuf>,

    /// The SQL replica and how results are written to it.
    #[command(flatten)]
    pub replica: ReplicaArgs,

    /// The most series the guards keep (default 1000000, or `none`). At the limit the
    /// longest-quiet series without an open alert are forgotten to make room.
    #[arg(long, value_name = "N", value_parser = parse_max_series)]
    pub max_series: Option<Limit<usize>>,

    /// Forget a series with no reading for this long in event time, no open alert and no
    /// verdict due (default 7d, or `none`); its next reading starts it afresh.
    #[arg(long, value_name = "DURATION", value_parser = parse_series_idle)]
    pub series_idle: Option<Limit<i64>>,
}

impl GuardArgs {
    /// Builds the job the arguments describe: defaults, then the config file, then flags.
    pub fn into_job(self) -> anyhow::Result<GuardJob> {
        let mut job = GuardJob::default();
        job.settings.replica = Some(crate::config::default_replica()?);
        if let Some(path) = &self.config {
            JobConfig::load(path)?.apply(path, &mut job)?;
        }
        if !self.input.is_empty() {
            job.settings.input = InputParams::from_args(&self.input)?;
        }
        if let Some(archive) = self.archive {
            job.settings.archive = archive;
        }
        if let Some(alerts) = &self.alerts {
            job.alerts = AlertsOut::parse(alerts)?;
        }
        if !self.guards.is_empty() {
            job.guards = GuardParams::parse_all(&self.guards)?;
        }
        if let Some(scores) = &self.scores {
            job.scores = ScoresOut::parse(scores);
        }
        if let Some(dir) = &self.spill {
            job.settings.spill_dir = dir.clone();
        }
        if let Some(dir) = &self.state {
            job.state_dir = dir.clone();
        }
        if let Some(rows) = self.max_rows_per_file {
            job.settings.max_rows_per_file = rows.max(1);
        }
        if let ScoresOut::Guards(names) = &job.scores
            && let Some(unknown) = names
                .iter()
                .find(|n| !job.guards.iter().any(|g| &g.name == *n))
        {
            let known: Vec<&str> = job.guards.iter().map(|g| g.name.as_str()).collect();
            anyhow::bail!(
                "--scores names `{unknown}`, which is not a guard of this job: use all, none, or some of {}",
                known.join(", ")
            );
        }
        if let Some(Limit(max)) = self.max_series {
            job.series_limits.max_series = max;
        }
        if let Some(Limit(idle)) = self.series_idle {
            job.series_limits.idle_ms = idle;
        }
        self.replica.apply(&mut job.settings)?;
        self.common.apply(&mut job.settings)?;
        if let Some(addr) = self.serve {
            job.settings.serve_addr = Some(addr);
        }
        if job.settings.input == InputParams::Default
            && job.settings.lateness_ms == DEFAULT_LATENESS_MS
            && self.common.lateness.is_none()
        {
            job.settings.lateness_ms = BUILT_IN_LATENESS_MS;
        }
        job.settings.progress = !self.no_progress
            && std::io::stderr().is_terminal()
            && !matches!(job.settings.input, InputParams::Default);
        Ok(job)
    }

    /// The text `--list-guards` prints: the catalogue, or the job's guards with `--config`.
    pub fn list_guards(&self) -> anyhow::Result<String> {
        if self.config.is_some() || !self.guards.is_empty() {
            Ok(guards_listing(&self.configured_guards()?))
        } else {
            Ok(catalogue_listing())
        }
    }

    /// The guards the arguments configure (config file, then `--guard` flags), without
    /// touching keys or inputs.
    fn configured_guards(&self) -> anyhow::Result<Vec<ConfiguredGuard>> {
        let mut job = GuardJob::default();
        if let Some(path) = &self.config {
            JobConfig::load(path)?.apply(path, &mut job)?;
        }
        if !self.guards.is_empty() {
            job.guards = GuardParams::parse_all(&self.guards)?;
        }
        Ok(job.guards)
    }
}

/// What the run of the built-in dataset ends with: where its results are, and what to try.
const NEXT_STEPS: &str = "
next: ask the archive in ./vigil-data with SQL (build the query tool once):
  cargo build --release -p vigil-sql
  target/release/vigil-sql \"SELECT guard, status, ts, round(score, 2) AS score FROM alerts ORDER BY ts\"
or watch a run in the browser: ./run --serve 127.0.0.1:8080, then open http://127.0.0.1:8080/";

impl JobCommand for GuardArgs {
    type Job = GuardJob;

    fn log_format(&self) -> super::LogFormat {
        self.common.log_format
    }

    fn prepare(mut self) -> Result<Option<Prepared<GuardJob>>, JobError> {
        if self.list_guards {
            print!("{}", self.list_guards().map_err(JobError::Usage)?);
            return Ok(None);
        }
        let summary_json = self.common.summary_json.take();
        let job = self.into_job().map_err(JobError::Usage)?;
        Ok(Some(Prepared { job, summary_json }))
    }

    fn run(job: GuardJob, stop: Stop) -> Result<Report, JobError> {
        let demo = job.settings.input == InputParams::Default;
        let summary = crate::jobs::guard::run(job, stop).map_err(JobError::run)?;
        let mut report = dataflow_report(&summary);
        if demo && report.failure.is_none() {
            report.summary.push_str(NEXT_STEPS);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn parses_flags() {
        let args = GuardArgs::try_parse_from([
            "vigil-guard",
            "--input",
            "a.ndjson",
            "--guard",
            "zscore:window=30,threshold=4",
            "-w",
            "2",
            "--lateness",
            "500ms",
            "--alerts",
            "out.ndjson",
        ])
        .expect("valid flags");
        let job = args.into_job().expect("valid job");
        assert_eq!(job.settings.workers, 2);
        assert_eq!(job.settings.lateness_ms, 500);
        let guards: Vec<&GuardParams> = job.guards.iter().map(|g| &g.params).collect();
        assert_eq!(
            guards,
            vec![&GuardParams::ZScore(vigil_operators::ZScore::new(30, 4.0))]
        );
        assert_eq!(job.guards[0].reaction.topic.as_str(), "telemetry-alerts");
        assert_eq!(job.alerts, AlertsOut::File("out.ndjson".into()));
        assert_eq!(
            job.settings.input,
            InputParams::Paths(vec!["a.ndjson".into()])
        );
    }

    #[test]
    fn rejects_unknown_guard_parameters() {
        let args = GuardArgs::try_parse_from(["vigil-guard", "--guard", "zscore:windw=3"])
            .expect("parses");
        let err = args.into_job().expect_err("unknown parameter").to_string();
        assert!(err.contains("windw"), "{err}");
    }
}
