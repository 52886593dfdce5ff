//! `vigil-archaeology`'s command line and how it becomes an archaeology job.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::common::dataflow_report;
use super::{CommonArgs, JobCommand, JobError, Prepared, ReplicaArgs, Report};
use crate::config::ArchaeologyConfig;
use crate::jobs::archaeology::{ArchaeologyJob, ArchaeologyParams};
use crate::jobs::engine::settings::{InputParams, Settings};
use crate::runtime::stop::Stop;

/// Finds what keeps recurring in a dataset or the generator's events — sequential patterns,
/// motifs, entangled sources, sessions — archives it as the `patterns`, `sessions` and
/// `entanglements` tables, and prints the top patterns at the end.
#[derive(Debug, clap::Parser)]
#[command(name = "vigil-archaeology", version)]
pub struct ArchaeologyArgs {
    /// Input: NDJSON/CSV/Parquet files or directories, `gen:devices[?devices=…&ticks=…&rooms=…]`
    /// or `gen:rocket[?…]`. Repeatable. Default: the generator's devices with rooms.
    #[arg(long, short = 'i')]
    pub input: Vec<String>,

    /// A job configuration file (TOML): input, archive, workers and each operator's
    /// parameters (`deploy/vigil-archaeology.toml` documents them all). Flags given as well
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,

    /// The archive: a local directory or `s3://bucket/prefix`. Default `./vigil-data`.
    #[arg(long, env = "VIGIL_ARCHIVE")]
    pub archive: Option<String>,

    /// Serve the live page on this address (e.g. `127.0.0.1:8080`): progress while the job
    /// runs, then the top patterns, the entangled pairs as a graph and the sessions per room;
    /// with `/metrics`, `/health` and `/ready` beside it. The job keeps serving after its input
    /// ends, until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,

    /// Workers, lateness, payload key, summary file and line limit.
    #[command(flatten)]
    pub common: CommonArgs,

    /// How many patterns of each kind the end-of-run report shows.
    #[arg(long)]
    pub top: Option<usize>,

    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Carry the sequential patterns' state in this directory from one run to the next, so
    /// that a backfill in parts (each run given the next part, in event-time order) finds the
    /// patterns one run over the whole would.
    #[arg(long)]
    pub state: Option<PathBuf>,

    /// Where results wait, on local disk, while the replica is away (default `./vigil-spill`).
    #[arg(long)]
    pub spill: Option<PathBuf>,

    /// The SQL replica and how results are written to it.
    #[command(flatten)]
    pub replica: ReplicaArgs,
}

/// The input of `vigil-archaeology` when none is given: devices in rooms, with rituals,
/// entangled pairs and meetings planted.
pub const ARCHAEOLOGY_DEFAULT_INPUT: &str = "gen:devices?devices=200&ticks=3600&rooms=8";

impl ArchaeologyArgs {
    /// Builds the job the arguments describe: defaults, then the config file, then flags.
    pub fn into_job(self) -> anyhow::Result<ArchaeologyJob> {
        let mut settings = Settings {
            input: InputParams::Generator(ARCHAEOLOGY_DEFAULT_INPUT.into()),
            replica: Some(crate::config::default_replica()?),
            ..Settings::default()
        };
        let mut params = ArchaeologyParams::default();
        if let Some(path) = &self.config {
            ArchaeologyConfig::load(path)?.apply(path, &mut settings, &mut params)?;
        }
        if !self.input.is_empty() {
            settings.input = InputParams::from_args(&self.input)?;
        }
        if matches!(settings.input, InputParams::Kafka(_)) {
            anyhow::bail!(
                "vigil-archaeology reads files, the built-in dataset and the generator; Kafka input is not supported yet: archive the topic with vigil-guard and point --input at the archive's telemetry"
            );
        }
        if let Some(archive) = self.archive {
            settings.archive = archive;
        }
        if let Some(top) = self.top {
            params.top = top;
        }
        if let Some(dir) = self.state {
            params.carry = Some(dir);
        }
        if let Some(dir) = self.spill {
            settings.spill_dir = dir;
        }
        self.replica.apply(&mut settings)?;
        self.common.apply(&mut settings)?;
        if let Some(addr) = self.serve {
            settings.serve_addr = Some(addr);
        }
        settings.progress = !self.no_progress && std::io::stderr().is_terminal();
        Ok(ArchaeologyJob { settings, params })
    }
}

impl JobCommand for ArchaeologyArgs {
    type Job = ArchaeologyJob;

    fn log_format(&self) -> super::LogFormat {
        self.common.log_format
    }

    fn prepare(mut self) -> Result<Option<Prepared<ArchaeologyJob>>, JobError> {
        let summary_json = self.common.summary_json.take();
        let job = self.into_job().map_err(JobError::Usage)?;
        Ok(Some(Prepared { job, summary_json }))
    }

    fn run(job: ArchaeologyJob, stop: Stop) -> Result<Report, JobError> {
        let top = job.params.top;
        let summary = crate::jobs::archaeology::run(job, stop).map_err(JobError::run)?;
        Ok(Report {
            stdout: summary
                .findings
                .as_ref()
                .map(|findings| findings.report(top))
                .unwrap_or_default(),
            ..dataflow_report(&summary)
        })
    }
}
