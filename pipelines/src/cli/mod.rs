//! The command line of `vigil-guard`, kept in the library so that tests parse it too.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{ArchaeologyConfig, JobConfig};
use crate::jobs::archaeology::ArchaeologyJob;
use crate::jobs::archaeology::ArchaeologyParams;
use crate::jobs::guard::registry::{CATALOGUE, GuardSpec};
use crate::jobs::guard::{AlertsOut, GuardJob, InputSpec, ScoresOut};
use crate::runtime::secrets::SecretUrl;

/// Replays a dataset (or runs the generator) through vigil's anomaly guards, archives
/// telemetry, alerts and dead letters as Parquet, and prints alerts as NDJSON.
#[derive(Debug, Parser)]
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

    /// Timely worker threads (default 1).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,

    /// How far out of order a record may arrive before it is late (e.g. `10s`, the default).
    #[arg(long)]
    pub lateness: Option<humantime::Duration>,

    /// A file holding the 64-hex-character payload key (else the VIGIL_KEY variable).
    #[arg(long)]
    pub key_file: Option<PathBuf>,

    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Rows per archive file before a partition is cut into another file (default 1,000,000).
    #[arg(long)]
    pub max_rows_per_file: Option<usize>,

    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

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

    /// The longest line (or Kafka message) read, in bytes (default 1048576, 1 MiB). A longer
    /// one becomes an `oversize` dead letter that keeps only its first bytes, and is skipped
    /// without being held in memory whole.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line_bytes: Option<u64>,

    /// The most series the guards keep (default 1000000, or `none`). At the limit the
    /// longest-quiet series without an open alert are forgotten to make room.
    #[arg(long, value_name = "N", value_parser = parse_max_series)]
    pub max_series: Option<Limit<usize>>,

    /// Forget a series with no reading for this long in event time, no open alert and no
    /// verdict due (default 7d, or `none`); its next reading starts it afresh.
    #[arg(long, value_name = "DURATION", value_parser = parse_series_idle)]
    pub series_idle: Option<Limit<i64>>,

    /// Size of the units text inputs are cut into for parallel parsing.
    #[arg(long, default_value_t = vigil_datasets::loaders::DEFAULT_CHUNK_BYTES, hide = true)]
    pub chunk_bytes: u64,
}

impl GuardArgs {
    /// Builds the job the arguments describe: defaults, then the config file, then flags.
    pub fn into_job(self) -> anyhow::Result<GuardJob> {
        let mut job = GuardJob {
            replica: Some(crate::config::default_replica()?),
            ..GuardJob::default()
        };
        if let Some(path) = &self.config {
            JobConfig::load(path)?.apply(path, &mut job)?;
        }
        if !self.input.is_empty() {
            job.input = InputSpec::from_args(&self.input)?;
        }
        if let Some(archive) = self.archive {
            job.archive = archive;
        }
        if let Some(alerts) = &self.alerts {
            job.alerts = AlertsOut::parse(alerts)?;
        }
        if !self.guards.is_empty() {
            job.guards = GuardSpec::parse_all(&self.guards)?;
        }
        if let Some(workers) = self.workers {
            job.workers = workers.max(1);
        }
        if let Some(scores) = &self.scores {
            job.scores = ScoresOut::parse(scores);
        }
        if let Some(lateness) = self.lateness {
            job.lateness_ms = lateness.as_millis() as u64;
        }
        if let Some(dir) = &self.spill {
            job.spill_dir = dir.clone();
        }
        if let Some(dir) = &self.state {
            job.state_dir = dir.clone();
        }
        if let Some(rows) = self.max_rows_per_file {
            job.max_rows_per_file = rows.max(1);
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
        job.chunk_bytes = self.chunk_bytes;
        if let Some(max) = self.max_line_bytes {
            job.max_line_bytes = max;
        }
        if let Some(Limit(max)) = self.max_series {
            job.series_limits.max_series = max;
        }
        if let Some(Limit(idle)) = self.series_idle {
            job.series_limits.idle_ms = idle;
        }
        self.replica.apply(&mut job)?;
        job.key = crate::runtime::crypto::load_key(self.key_file.as_deref())?;
        job.progress = !self.no_progress
            && std::io::stderr().is_terminal()
            && !matches!(job.input, InputSpec::Default);
        Ok(job)
    }

    /// The text `--list-guards` prints: the catalogue, or the job's guards with `--config`.
    pub fn list_guards(&self) -> anyhow::Result<String> {
        let mut out = String::new();
        if self.config.is_some() || !self.guards.is_empty() {
            let guards = self.configured_guards()?;
            out.push_str(
                "GUARD                KIND          TOPIC                SEVERITY  DESCRIPTION\n",
            );
            for g in &guards {
                out.push_str(&format!(
                    "{:<20} {:<13} {:<20} {:<9} {}\n",
                    g.name,
                    g.spec.name(),
                    g.reaction.topic.as_str(),
                    g.reaction.severity.as_str(),
                    g.reaction.description
                ));
            }
        } else {
            out.push_str("KIND          TOPIC                SEVERITY  DESCRIPTION\n");
            for e in CATALOGUE {
                out.push_str(&format!(
                    "{:<13} {:<20} {:<9} {}\n{:<44}parameters: {}\n",
                    e.kind,
                    e.topic.as_str(),
                    e.severity.as_str(),
                    e.description,
                    "",
                    e.parameters
                ));
            }
        }
        Ok(out)
    }

    /// The guards the arguments configure (config file, then `--guard` flags), without
    /// touching keys or inputs.
    fn configured_guards(
        &self,
    ) -> anyhow::Result<Vec<crate::jobs::guard::registry::ConfiguredGuard>> {
        let mut job = GuardJob::default();
        if let Some(path) = &self.config {
            JobConfig::load(path)?.apply(path, &mut job)?;
        }
        if !self.guards.is_empty() {
            job.guards = GuardSpec::parse_all(&self.guards)?;
        }
        Ok(job.guards)
    }
}

/// Finds what keeps recurring in a dataset or the generator's events — sequential patterns,
/// motifs, entangled sources, sessions — archives it as the `patterns`, `sessions` and
/// `entanglements` tables, and prints the top patterns at the end.
#[derive(Debug, Parser)]
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

    /// Timely worker threads (default 1).
    #[arg(long, short = 'w')]
    pub workers: Option<usize>,

    /// How far out of order a record may arrive before it is late (e.g. `10s`, the default).
    #[arg(long)]
    pub lateness: Option<humantime::Duration>,

    /// How many patterns of each kind the end-of-run report shows.
    #[arg(long)]
    pub top: Option<usize>,

    /// A file holding the 64-hex-character payload key (else the VIGIL_KEY variable).
    #[arg(long)]
    pub key_file: Option<PathBuf>,

    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

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

    /// The longest line (or Kafka message) read, in bytes (default 1048576, 1 MiB). A longer
    /// one becomes an `oversize` dead letter that keeps only its first bytes, and is skipped
    /// without being held in memory whole.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_line_bytes: Option<u64>,

    /// Size of the units text inputs are cut into for parallel parsing.
    #[arg(long, default_value_t = vigil_datasets::loaders::DEFAULT_CHUNK_BYTES, hide = true)]
    pub chunk_bytes: u64,
}

/// The input of `vigil-archaeology` when none is given: devices in rooms, with rituals,
/// entangled pairs and meetings planted.
pub const ARCHAEOLOGY_DEFAULT_INPUT: &str = "gen:devices?devices=200&ticks=3600&rooms=8";

impl ArchaeologyArgs {
    /// Builds the job the arguments describe: defaults, then the config file, then flags.
    pub fn into_job(self) -> anyhow::Result<ArchaeologyJob> {
        let mut job = GuardJob {
            input: InputSpec::Generator(ARCHAEOLOGY_DEFAULT_INPUT.into()),
            alerts: AlertsOut::Off,
            guards: Vec::new(),
            scores: ScoresOut::Off,
            replica: Some(crate::config::default_replica()?),
            ..GuardJob::default()
        };
        let mut params = ArchaeologyParams::default();
        if let Some(path) = &self.config {
            ArchaeologyConfig::load(path)?.apply(path, &mut job, &mut params)?;
        }
        if !self.input.is_empty() {
            job.input = InputSpec::from_args(&self.input)?;
        }
        if matches!(job.input, InputSpec::Kafka(_)) {
            anyhow::bail!(
                "vigil-archaeology reads files, the built-in dataset and the generator; Kafka input is not supported yet: archive the topic with vigil-guard and point --input at the archive's telemetry"
            );
        }
        if let Some(archive) = self.archive {
            job.archive = archive;
        }
        if let Some(workers) = self.workers {
            job.workers = workers.max(1);
        }
        if let Some(lateness) = self.lateness {
            job.lateness_ms = lateness.as_millis() as u64;
        }
        if let Some(top) = self.top {
            params.top = top;
        }
        if let Some(dir) = self.state {
            params.carry = Some(dir);
        }
        if let Some(dir) = self.spill {
            job.spill_dir = dir;
        }
        job.chunk_bytes = self.chunk_bytes;
        if let Some(max) = self.max_line_bytes {
            job.max_line_bytes = max;
        }
        self.replica.apply(&mut job)?;
        job.key = crate::runtime::crypto::load_key(self.key_file.as_deref())?;
        job.progress = !self.no_progress && std::io::stderr().is_terminal();
        Ok(ArchaeologyJob {
            settings: job.settings(),
            params,
        })
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

    /// Replicate each reading's encrypted payload (opaque; never decrypted). Off by default:
    /// only metadata leaves.
    #[arg(long)]
    pub replicate_payload: bool,
}

impl ReplicaArgs {
    /// Sets the flags given on `job` (after any config file).
    pub fn apply(&self, job: &mut GuardJob) -> anyhow::Result<()> {
        crate::config::apply_replica_flags(
            job,
            self.url.as_deref(),
            self.replica_role.as_deref(),
            self.replica_migrate,
            self.replicate_payload,
        )
    }
}

/// The command line of `vigil-sync`.
#[derive(Debug, Parser)]
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
    pub interval: std::time::Duration,

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
    pub metrics: Option<std::net::SocketAddr>,

    /// Rows written per transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_rows: usize,

    /// Also write each pass's summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Calls `on_interrupt` on the first Ctrl-C or SIGTERM, from a small thread with its own runtime;
/// a second one ends the process at once, with exit code 130 (SIGINT) or 143 (SIGTERM), for an
/// operator who cannot wait for the graceful stop (a flush to a replica that hangs, say).
///
/// # Errors
/// When the signal thread cannot be started.
pub fn on_stop_signal(on_interrupt: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    use tokio::signal::unix::{Signal, SignalKind, signal};

    /// The next SIGINT or SIGTERM: its name and the exit code a shell gives a process it ends.
    async fn next(
        interrupt: &mut Option<Signal>,
        terminate: &mut Option<Signal>,
    ) -> (&'static str, i32) {
        // A signal that could not be hooked never arrives here; the other one still does.
        let interrupted = async {
            match interrupt {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        let terminated = async {
            match terminate {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = interrupted => ("SIGINT", 130),
            _ = terminated => ("SIGTERM", 143),
        }
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("vigil-signal".into())
        .spawn(move || {
            runtime.block_on(async {
                // SIGTERM (a service manager stopping the job) finishes the same way as Ctrl-C.
                let mut interrupt = signal(SignalKind::interrupt()).ok();
                let mut terminate = signal(SignalKind::terminate()).ok();
                next(&mut interrupt, &mut terminate).await;
                on_interrupt();
                let (name, code) = next(&mut interrupt, &mut terminate).await;
                eprintln!("vigil: second {name}; exiting now without finishing the graceful stop");
                std::process::exit(code);
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
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
        assert_eq!(job.workers, 2);
        assert_eq!(job.lateness_ms, 500);
        let guards: Vec<&GuardSpec> = job.guards.iter().map(|g| &g.spec).collect();
        assert_eq!(
            guards,
            vec![&GuardSpec::ZScore(vigil_operators::ZScore::new(30, 4.0))]
        );
        assert_eq!(job.guards[0].reaction.topic.as_str(), "telemetry-alerts");
        assert_eq!(job.alerts, AlertsOut::File("out.ndjson".into()));
        assert_eq!(job.input, InputSpec::Paths(vec!["a.ndjson".into()]));
    }

    #[test]
    fn rejects_unknown_guard_parameters() {
        let args = GuardArgs::try_parse_from(["vigil-guard", "--guard", "zscore:windw=3"])
            .expect("parses");
        let err = args.into_job().expect_err("unknown parameter").to_string();
        assert!(err.contains("windw"), "{err}");
    }
}

/// A limit that may be lifted: `Limit(None)` for `none`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit<T>(pub Option<T>);

fn parse_max_series(text: &str) -> Result<Limit<usize>, String> {
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

fn parse_series_idle(text: &str) -> Result<Limit<i64>, String> {
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
