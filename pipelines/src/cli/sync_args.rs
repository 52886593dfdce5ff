//! `vigil-sync`'s command line and how its run goes: one pass, or following both replicas.
//! (How the flags become a [`SyncJob`] is in `sync.rs`.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{JobCommand, JobError, Prepared, Report};
use crate::jobs::sync::{SyncJob, print_actions, run_once};
use crate::runtime::dir_lock::DirLock;
use crate::runtime::metrics::Metrics;
use crate::runtime::secrets::SecretUrl;
use crate::runtime::stop::Stop;

/// The command line of `vigil-sync`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "vigil-sync",
    version,
    about = "Keeps a local and a remote SQL replica equal, last writer wins on updated_at.",
    long_about = "Keeps a local and a remote SQL replica equal, last writer wins on updated_at.\n\n\
                  With no --local/--remote it demonstrates itself on two SQLite files under \
                  ./vigil-sync/ (a `vehicles` table edited on both sides)."
)]
pub struct SyncArgs {
    /// The local replica: `postgres://USER@HOST:PORT/DB` (PostgreSQL or CockroachDB) or
    /// `sqlite://PATH`.
    #[arg(long, env = "VIGIL_SYNC_LOCAL", hide_env_values = true)]
    pub local: Option<SecretUrl>,

    /// The remote replica, the durable primary (same forms as --local).
    #[arg(long, env = "VIGIL_SYNC_REMOTE", hide_env_values = true)]
    pub remote: Option<SecretUrl>,

    /// A table to sync (repeatable; `schema.table` allowed). It needs a primary key, and
    /// `updated_at` and `origin` columns for last-writer-wins and echo suppression.
    #[arg(long = "table")]
    pub tables: Vec<String>,

    /// Which way rows may flow: `up` (local to remote), `down`, or `both`.
    #[arg(long, default_value = "both")]
    pub direction: String,

    /// Print the planned actions as JSON lines and change nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// One pass (diff, apply, exit) instead of following both replicas.
    #[arg(long)]
    pub once: bool,

    /// Build the local replica's tables from the remote (they must be missing or empty).
    #[arg(long)]
    pub restore: bool,

    /// How changes are read when following: `slot` (a PostgreSQL logical replication slot
    /// through wal2json), `poll` (rows with a newer `updated_at`; any PostgreSQL-protocol
    /// database, CockroachDB included), `scan` (whole tables compared), or `auto` (a slot
    /// where possible, else polling; scans for SQLite).
    #[arg(long, default_value = "auto")]
    pub capture: String,

    /// The mean pause between passes when following; each is drawn from half to one and a
    /// half of it.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// The SQL replica applied actions are also upserted into, as the `sync_actions` table:
    /// `postgres://…`, `sqlite://PATH` or `none`. Default: the embedded SQLite file
    /// `./vigil-replica.db`.
    #[arg(long, env = "VIGIL_REPLICA", hide_env_values = true)]
    pub replica: Option<SecretUrl>,

    /// A role the replica sink takes after connecting (e.g. `observer_writer`).
    #[arg(long)]
    pub replica_role: Option<String>,

    /// Apply vigil's migrations to the replica before writing to it.
    #[arg(long)]
    pub replica_migrate: bool,

    /// Where actions wait, on local disk, while the replica is away (default `./vigil-spill`;
    /// its `replica` subdirectory is used).
    #[arg(long)]
    pub spill: Option<PathBuf>,

    /// Where applied actions are archived as the `sync_actions` table (`none` for nowhere).
    #[arg(long, default_value = "./vigil-data")]
    pub archive: String,

    /// Timely worker threads for the diff.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,

    /// When following: serve `/metrics` (Prometheus) and `/health` on this address, e.g.
    /// `127.0.0.1:9464`.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,

    /// Log lines as `text` (default) or `json`; which lines: `RUST_LOG` (default `warn`).
    #[arg(long, value_enum, default_value_t = super::LogFormat::Text, env = "VIGIL_LOG_FORMAT")]
    pub log_format: super::LogFormat,

    /// Rows written per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,

    /// Also write each pass's summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// A sync job ready to run, holding its directories.
pub struct SyncRun {
    job: SyncJob,
    /// When following both replicas, how: otherwise one pass.
    following: Option<Following>,
    /// Held for the life of the job: another job on the same spill stops at start-up.
    _locks: Vec<DirLock>,
}

/// How a sync job follows both replicas.
struct Following {
    interval: Duration,
    metrics: Option<SocketAddr>,
    /// Where each pass's summary is written.
    summary_json: Option<PathBuf>,
}

impl JobCommand for SyncArgs {
    type Job = SyncRun;

    fn log_format(&self) -> super::LogFormat {
        self.log_format
    }

    fn prepare(self) -> Result<Option<Prepared<SyncRun>>, JobError> {
        let job = self.job().map_err(JobError::Usage)?;
        let locks = job.lock_directories().map_err(JobError::run)?;
        // One pass writes its summary at the end; following writes each pass's.
        let (following, summary_json) = if self.once || job.dry_run {
            (None, self.summary_json)
        } else {
            let following = Following {
                interval: self.interval,
                metrics: self.metrics,
                summary_json: self.summary_json,
            };
            (Some(following), None)
        };
        Ok(Some(Prepared {
            job: SyncRun {
                job,
                following,
                _locks: locks,
            },
            summary_json,
        }))
    }

    fn run(run: SyncRun, stop: Stop) -> Result<Report, JobError> {
        let job = &run.job;
        if let Some(following) = &run.following {
            return follow(job, following, &stop);
        }
        let (summary, actions) = run_once(job).map_err(JobError::Failed)?;
        if job.dry_run {
            print_actions(&actions);
        }
        Ok(Report {
            summary: format!(
                "vigil-sync: {} ↔ {}{}: {summary}",
                job.local.redacted(),
                job.remote.redacted(),
                if job.dry_run {
                    " (dry run: nothing changed)"
                } else {
                    ""
                }
            ),
            json: Some(summary.to_json()),
            ..Report::default()
        })
    }
}

/// Follows both replicas until `stop`: the diff dataflow lives across rounds.
fn follow(job: &SyncJob, following: &Following, stop: &Stop) -> Result<Report, JobError> {
    let metrics = Metrics::default();
    // The server's runtime lives as long as the job; its worker thread serves requests.
    let _server = match following.metrics {
        Some(addr) => {
            let runtime =
                crate::runtime::io::background("metrics server").map_err(JobError::Usage)?;
            metrics.wait_for(&["replicas"]);
            metrics
                .serve(addr, runtime.handle())
                .map_err(JobError::Usage)?;
            Some(runtime)
        }
        None => None,
    };
    let total = crate::jobs::sync::follow::follow(
        job,
        stop.flag(),
        following.interval,
        &metrics,
        |summary| {
            if summary.planned > 0 || summary.pulled + summary.pushed > 0 {
                eprintln!("vigil-sync: {summary}");
            }
            if let Some(path) = &following.summary_json {
                // A pass whose summary cannot be written is no reason to stop following.
                let _ = std::fs::write(path, summary.to_json().to_string());
            }
        },
    )
    .map_err(JobError::Failed)?;
    Ok(Report {
        summary: format!("vigil-sync: stopped; in all {total}"),
        ..Report::default()
    })
}
