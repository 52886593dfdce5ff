//! `vigil-couchdb`'s command line and how it becomes a `_changes` listener.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use super::{JobCommand, JobError, LogFormat, Prepared, Report};
use crate::jobs::couchdb::{ChangeOut, Checkpoint, Feed, Listener};
use crate::runtime::metrics::Metrics;
use crate::runtime::secrets::SecretUrl;
use crate::runtime::stop::Stop;

/// Follows a CouchDB database's changes and forwards their metadata, checkpointing its position.
#[derive(Debug, clap::Parser)]
#[command(name = "vigil-couchdb", version)]
pub struct CouchdbArgs {
    /// The CouchDB (or PouchDB) server; a user and password may be given in the URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:5984",
        env = "VIGIL_COUCHDB",
        hide_env_values = true
    )]
    pub server: SecretUrl,
    /// The database whose changes to follow.
    #[arg(long)]
    pub db: String,
    /// Where the changes go: `kafka://HOST:PORT/TOPIC[?security…]`, `-` for stdout, or a file.
    #[arg(long, default_value = "-")]
    pub to: String,
    /// The file that keeps the feed position (default `vigil-couchdb-DB.seq`).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// How the feed is read.
    #[arg(long, value_enum, default_value = "longpoll")]
    feed: FeedArg,
    /// The mean pause between polls; each is drawn from half to one and a half of it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// Forward what the feed holds now and exit (a backfill) instead of following it.
    #[arg(long)]
    pub once: bool,
    /// Serve Prometheus metrics at `/metrics`, liveness at `/health` and readiness at
    /// `/ready` on this address (e.g. `127.0.0.1:9464`).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Log lines as `text` (default) or `json`; which lines: `RUST_LOG` (default `warn`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "VIGIL_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// How the `_changes` feed is read, as `--feed` names it. (The variants have no doc comments:
/// clap would show them in `--help`.)
#[derive(Clone, Copy, Debug, ValueEnum)]
enum FeedArg {
    Longpoll,
    Continuous,
}

/// A listener and where its changes go.
pub struct CouchdbJob {
    listener: Listener,
    out: ChangeOut,
    metrics: Option<std::net::SocketAddr>,
}

impl JobCommand for CouchdbArgs {
    type Job = CouchdbJob;

    fn log_format(&self) -> LogFormat {
        self.log_format
    }

    fn prepare(self) -> Result<Option<Prepared<CouchdbJob>>, JobError> {
        let checkpoint = self
            .checkpoint
            .unwrap_or_else(|| PathBuf::from(format!("vigil-couchdb-{}.seq", self.db)));
        let out = ChangeOut::open(&self.to).map_err(JobError::Usage)?;
        let listener = Listener {
            server: self.server.expose().to_owned(),
            db: self.db,
            feed: match self.feed {
                FeedArg::Longpoll => Feed::Longpoll,
                FeedArg::Continuous => Feed::Continuous,
            },
            poll: self.poll,
            checkpoint: Checkpoint::new(&checkpoint),
            once: self.once,
            metrics: Metrics::default(),
        };
        Ok(Some(Prepared {
            job: CouchdbJob {
                listener,
                out,
                metrics: self.metrics,
            },
            summary_json: None,
        }))
    }

    fn run(job: CouchdbJob, stop: Stop) -> Result<Report, JobError> {
        let CouchdbJob {
            listener,
            mut out,
            metrics,
        } = job;
        // The server's runtime lives as long as the job.
        let _server = match metrics {
            Some(addr) => {
                let runtime =
                    crate::runtime::io::background("metrics server").map_err(JobError::Usage)?;
                listener.metrics.wait_for(&["couchdb"]);
                listener
                    .metrics
                    .serve(addr, runtime.handle())
                    .map_err(JobError::Usage)?;
                Some(runtime)
            }
            None => None,
        };
        let stats = listener.run(&mut out, &stop).map_err(JobError::Failed)?;
        Ok(Report {
            summary: format!(
                "changes forwarded {}, unusable rows {}, retried requests {}",
                stats.forwarded, stats.bad, stats.retries
            ),
            ..Report::default()
        })
    }
}
