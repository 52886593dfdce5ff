//! What every job binary does around its job: logging, stop signals, the summary and the
//! exit code. A binary is `fn main() -> ExitCode { job_main::<ItsArgs>() }`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::JobError;
use crate::runtime::stop::Stop;

/// A job binary's command line: how it becomes a job, and how the job runs.
pub trait JobCommand: clap::Parser {
    /// The job the command line describes, ready to run.
    type Job;

    /// Builds the job: config file, flags, keys, locks. `Ok(None)` when the command line asks
    /// for something printed instead of a run (`--list-guards`), printed here.
    ///
    /// # Errors
    /// A [`JobError`] with the exit code the binary ends with.
    fn prepare(self) -> Result<Option<Prepared<Self::Job>>, JobError>;

    /// How log lines are written (`--log-format`).
    fn log_format(&self) -> LogFormat {
        LogFormat::Text
    }

    /// Runs the job to its end, or until `stop` is triggered (the first Ctrl-C or
    /// SIGTERM), and says what it did.
    ///
    /// # Errors
    /// A [`JobError`] with the exit code the binary ends with.
    fn run(job: Self::Job, stop: Stop) -> Result<Report, JobError>;
}

/// A job ready to run, and where its summary goes.
#[derive(Debug)]
pub struct Prepared<J> {
    /// The job.
    pub job: J,
    /// `--summary-json`: where the run's summary is written as JSON.
    pub summary_json: Option<PathBuf>,
}

/// What a finished run reports.
#[derive(Debug, Default)]
pub struct Report {
    /// Printed on stdout at the end (the archaeology job's findings).
    pub stdout: String,
    /// The summary, printed on stderr.
    pub summary: String,
    /// The summary as JSON, written to `--summary-json` when one is given.
    pub json: Option<serde_json::Value>,
    /// Why the job failed although it ran to the end (nothing could be read), said after the
    /// summary.
    pub failure: Option<JobError>,
}

/// Runs the binary of `C`: logs to stderr, parses the command line (clap exits 2 on a bad
/// one), prepares the job, watches for stop signals, runs the job, writes and prints its
/// summary, and exits with the code its [`JobError`] carries, or 0.
pub fn job_main<C: JobCommand>() -> ExitCode {
    let command = C::parse();
    init_logging(command.log_format());
    match run_command(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn run_command<C: JobCommand>(command: C) -> Result<(), JobError> {
    let Some(Prepared { job, summary_json }) = command.prepare()? else {
        return Ok(());
    };
    let stop = Stop::default();
    let on_signal = stop.clone();
    // A second signal ends the process at once (see on_stop_signal).
    on_stop_signal(move || on_signal.trigger()).map_err(|error| {
        JobError::Usage(anyhow::Error::new(error).context("cannot watch for Ctrl-C"))
    })?;
    let report = C::run(job, stop)?;
    if let (Some(path), Some(json)) = (&summary_json, &report.json) {
        std::fs::write(path, json.to_string()).map_err(|error| {
            JobError::Failed(
                anyhow::Error::new(error)
                    .context(format!("writing the summary to {}", path.display())),
            )
        })?;
    }
    print!("{}", report.stdout);
    if !report.summary.is_empty() {
        eprintln!("{}", report.summary);
    }
    match report.failure {
        Some(failure) => Err(failure),
        None => Ok(()),
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line, with the event's fields, for a log shipper.
    Json,
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
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

    let runtime = crate::runtime::io::current_thread("signal")
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
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
