//! The command line of `vigil-guard`, kept in the library so that tests parse it too.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Parser;

use crate::crypto::PayloadKey;
use crate::guard_job::{AlertsOut, GuardJob, InputSpec};
use crate::guards::GuardSpec;

/// Replays a dataset (or runs the generator) through vigil's anomaly guards, archives
/// telemetry, alerts and dead letters as Parquet, and prints alerts as NDJSON.
#[derive(Debug, Parser)]
#[command(name = "vigil-guard", version)]
pub struct GuardArgs {
    /// Input: NDJSON/CSV/Parquet files or directories, or `gen:rocket[?vehicles=…&ticks=…]`,
    /// `gen:devices[?…]`. Repeatable. Without it the built-in NAB dataset is replayed.
    #[arg(long, short = 'i')]
    pub input: Vec<String>,

    /// The archive: a local directory or `s3://bucket/prefix` (credentials from AWS_* variables).
    #[arg(long, default_value = "./vigil-data", env = "VIGIL_ARCHIVE")]
    pub archive: String,

    /// Where alerts go as NDJSON: `-` for stdout, a file path, or `none`.
    #[arg(long, default_value = "-")]
    pub alerts: String,

    /// A guard with parameters, e.g. `zscore:window=60,threshold=6` or
    /// `threshold:name=temp_c,max=90`. Repeatable. Default: zscore with its defaults.
    #[arg(long = "guard", short = 'g')]
    pub guards: Vec<String>,

    /// Timely worker threads.
    #[arg(long, short = 'w', default_value_t = 1)]
    pub workers: usize,

    /// How far out of order a record may arrive before it is late (e.g. `10s`, `500ms`).
    #[arg(long, default_value = "10s")]
    pub lateness: humantime::Duration,

    /// A file holding the 64-hex-character payload key (else the VIGIL_KEY variable).
    #[arg(long)]
    pub key_file: Option<PathBuf>,

    /// Never show the progress bar.
    #[arg(long)]
    pub no_progress: bool,

    /// Rows per archive file before a partition is cut into another file.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rows_per_file: usize,

    /// Also write the end-of-run summary as JSON to this file.
    #[arg(long)]
    pub summary_json: Option<PathBuf>,

    /// Size of the units text inputs are cut into for parallel parsing.
    #[arg(long, default_value_t = vigil_datasets::loaders::DEFAULT_CHUNK_BYTES, hide = true)]
    pub chunk_bytes: u64,
}

impl GuardArgs {
    /// Builds the job the arguments describe.
    pub fn into_job(self) -> anyhow::Result<GuardJob> {
        let input = InputSpec::from_args(&self.input)?;
        let progress = !self.no_progress
            && std::io::stderr().is_terminal()
            && !matches!(input, InputSpec::Default);
        Ok(GuardJob {
            input,
            archive: self.archive,
            alerts: AlertsOut::parse(&self.alerts),
            guards: GuardSpec::parse_all(&self.guards)?,
            workers: self.workers.max(1),
            lateness_ms: self.lateness.as_millis() as u64,
            key: PayloadKey::from_env_or_file(self.key_file.as_deref())?,
            progress,
            max_rows_per_file: self.max_rows_per_file,
            chunk_bytes: self.chunk_bytes,
        })
    }
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
        assert_eq!(
            job.guards,
            vec![GuardSpec::ZScore(vigil_operators::ZScore::new(30, 4.0))]
        );
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
