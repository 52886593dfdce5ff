//! The flags the dataflow jobs (`vigil-guard`, `vigil-archaeology`) share, each with one
//! meaning, and the report of a dataflow run.

use std::path::PathBuf;

use super::{JobError, LogFormat, Report};
use crate::jobs::engine::settings::Settings;
use crate::jobs::guard::Summary;
use crate::runtime::secrets::SecretUrl;

/// The flags every dataflow job takes: `#[command(flatten)]` into its arguments.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// Timely worker threads (default 1).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,

    /// How far out of order a record may arrive before it is late (e.g. `10s`, the default).
    #[arg(long)]
    pub lateness: Option<humantime::Duration>,

    /// A file holding the 64-hex-character payload key (else the VIGIL_KEY variable).
    #[arg(long)]
    pub key_file: Option<PathBuf>,

    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

    /// The longest line (or Kafka message) read, in bytes (default 1048576, 1 MiB). A longer
    /// one becomes an `oversize` dead letter that keeps only its first bytes, and is skipped
    /// without being held in memory whole.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line_bytes: Option<u64>,

    /// Serve Prometheus metrics at `/metrics`, liveness at `/health` and readiness at
    /// `/ready` on this address (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Log lines as `text` (default) or `json` (one object per line, for a log shipper). Which
    /// lines: `RUST_LOG` (default `warn`; e.g. `RUST_LOG=info` or `RUST_LOG=vigil_pipelines=debug`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "VIGIL_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Size of the units text inputs are cut into for parallel parsing.
    #[arg(long, default_value_t = vigil_datasets::loaders::DEFAULT_CHUNK_BYTES, hide = true)]
    pub chunk_bytes: u64,
}

impl CommonArgs {
    /// Sets the flags given on `settings` (after any config file), and reads the payload key from
    /// `--key-file` or `VIGIL_KEY`.
    pub fn apply(&self, settings: &mut Settings) -> anyhow::Result<()> {
        if let Some(workers) = self.workers {
            settings.workers = workers.max(1);
        }
        if let Some(lateness) = self.lateness {
            settings.lateness_ms = lateness.as_millis() as u64;
        }
        settings.chunk_bytes = self.chunk_bytes;
        if let Some(max) = self.max_line_bytes {
            settings.max_line_bytes = max;
        }
        if let Some(addr) = self.metrics {
            settings.metrics_addr = Some(addr);
        }
        settings.key = crate::runtime::crypto::load_key(self.key_file.as_deref())?;
        Ok(())
    }
}

/// The replica flags `vigil-guard` and `vigil-archaeology` share.
#[derive(Debug, Default, clap::Args)]
pub struct ReplicaArgs {
    /// The SQL replica results are upserted into: `postgres://USER@HOST:PORT/DB` (PostgreSQL
    /// or CockroachDB), `sqlite://PATH`, or `none`. Default: the embedded SQLite file
    /// `./vigil-replica.db`.
    #[arg(long = "replica", env = "VIGIL_REPLICA", hide_env_values = true)]
    pub url: Option<SecretUrl>,

    /// A role the replica sink takes after connecting (e.g. `observer_writer`, which may write
    /// rows but not change tables).
    #[arg(long)]
    pub replica_role: Option<String>,

    /// Apply vigil's migrations to the replica (and set up the observer_writer role) before
    /// running; needs a user who may create tables.
    #[arg(long)]
    pub replica_migrate: bool,

    /// The replica tables written, comma-separated: `alerts` (with `alert_history`),
    /// `patterns`, `sessions`, `entanglements`, `sync_actions`, `telemetry_meta` (one row per
    /// reading), `default` (all but `telemetry_meta`: the archive holds every reading) or `all`.
    #[arg(long, value_name = "TABLES", overrides_with = "replica_tables")]
    pub replica_tables: Option<String>,

    /// Replicate each reading's encrypted payload (opaque; never decrypted) in
    /// `telemetry_meta`, which this adds to the replica tables. Off by default: only metadata
    /// leaves.
    #[arg(long)]
    pub replicate_payload: bool,
}

impl ReplicaArgs {
    /// Sets the flags given on `settings` (after any config file).
    pub fn apply(&self, settings: &mut Settings) -> anyhow::Result<()> {
        crate::config::apply_replica_flags(
            settings,
            self.url.as_deref(),
            self.replica_role.as_deref(),
            self.replica_tables.as_deref(),
            self.replica_migrate,
            self.replicate_payload,
        )
    }
}

/// What a dataflow run reports: its summary, and a failure when nothing could be read.
pub(super) fn dataflow_report(summary: &Summary) -> Report {
    Report {
        summary: summary.to_string(),
        json: Some(summary.to_json()),
        failure: (summary.events_in == 0 && summary.errors > 0).then_some(JobError::NothingRead),
        ..Report::default()
    }
}

/// A limit that may be lifted: `Limit(None)` for `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<T>(pub Option<T>);

/// `--max-series`: a positive number of series, or `none`.
pub(super) fn parse_max_series(text: &str) -> Result<Limit<usize>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    match text.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n > 0 => Ok(Limit(Some(n))),
        _ => Err(format!(
            "{text:?} is not a number of series: give a positive number, or none"
        )),
    }
}

/// `--series-idle`: a duration of at least 1ms, or `none`.
pub(super) fn parse_series_idle(text: &str) -> Result<Limit<i64>, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Limit(None));
    }
    let idle = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?}: {e}: give a duration such as 1h or 7d, or none"))?;
    match i64::try_from(idle.as_millis()) {
        Ok(ms) if ms > 0 => Ok(Limit(Some(ms))),
        _ => Err(format!(
            "{text:?}: give a duration of at least 1ms, or none"
        )),
    }
}
