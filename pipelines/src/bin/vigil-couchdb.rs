//! `vigil-couchdb`: follow a CouchDB `_changes` feed and forward each change's metadata (`id`,
//! `seq`, `type`, `ts`; never the document) to a Kafka topic or as JSON lines.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use vigil_pipelines::cli::{init_logging, on_stop_signal};
use vigil_pipelines::jobs::couchdb::{ChangeOut, Checkpoint, Feed, Listener};
use vigil_pipelines::runtime::shutdown::Shutdown;
use vigil_pipelines::runtime::secrets::SecretUrl;

/// Follows a CouchDB database's changes and forwards their metadata, checkpointing its position.
#[derive(Debug, Parser)]
#[command(name = "vigil-couchdb", version)]
struct Args {
    /// The CouchDB (or PouchDB) server; a user and password may be given in the URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:5984",
        env = "VIGIL_COUCHDB",
        hide_env_values = true
    )]
    server: SecretUrl,
    /// The database whose changes to follow.
    #[arg(long)]
    db: String,
    /// Where the changes go: `kafka://HOST:PORT/TOPIC[?security…]`, `-` for stdout, or a file.
    #[arg(long, default_value = "-")]
    to: String,
    /// The file that keeps the feed position (default `vigil-couchdb-DB.seq`).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// How the feed is read.
    #[arg(long, value_enum, default_value = "longpoll")]
    feed: FeedArg,
    /// The mean pause between polls; each is drawn from half to one and a half of it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    poll: Duration,
    /// Forward what the feed holds now and exit (a backfill) instead of following it.
    #[arg(long)]
    once: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FeedArg {
    Longpoll,
    Continuous,
}

fn main() -> ExitCode {
    init_logging();
    let args = Args::parse();
    let checkpoint = args
        .checkpoint
        .unwrap_or_else(|| PathBuf::from(format!("vigil-couchdb-{}.seq", args.db)));
    let mut out = match ChangeOut::open(&args.to) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let listener = Listener {
        server: args.server.expose().to_owned(),
        db: args.db,
        feed: match args.feed {
            FeedArg::Longpoll => Feed::Longpoll,
            FeedArg::Continuous => Feed::Continuous,
        },
        poll: args.poll,
        checkpoint: Checkpoint::new(&checkpoint),
        once: args.once,
    };
    let shutdown = Shutdown::default();
    let on_signal = shutdown.clone();
    let _ = on_stop_signal(move || on_signal.trigger());
    match listener.run(&mut out, &shutdown) {
        Ok(stats) => {
            eprintln!(
                "changes forwarded {}, unusable rows {}, retried requests {}",
                stats.forwarded, stats.bad, stats.retries
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
