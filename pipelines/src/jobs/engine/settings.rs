//! What every dataflow job over an input says about its run, whatever it computes.

use std::net::SocketAddr;
use std::path::PathBuf;

use vigil_datasets::loaders::{InputPlan, TextLimits, plan_generator, plan_paths};

use crate::runtime::crypto::PayloadKey;
use crate::runtime::metrics::Metrics;
use crate::sinks::replica::ReplicaParams;
use crate::sources::kafka::KafkaInput;

/// How late a record may be, by default: 10 s behind the newest event time.
pub const DEFAULT_LATENESS_MS: u64 = 10_000;

/// How late a reading of the built-in dataset may be when no lateness is given: an hour. NAB's
/// machine-temperature file records the hour 2014-01-07 02:00–02:55 twice; with an hour's
/// lateness the repeat is read like the rest instead of becoming eleven late dead letters.
pub const BUILT_IN_LATENESS_MS: u64 = 3_600_000;

/// The settings the engine reads: input, archive, workers, lateness, limits and outputs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What to read.
    pub input: InputParams,
    /// The archive: a local directory or `s3://bucket/prefix`.
    pub archive: String,
    /// Timely worker threads.
    pub workers: usize,
    /// How far behind the newest event time a record may be before it is late.
    pub lateness_ms: u64,
    /// The payload key, if payloads are to be accepted.
    pub key: Option<PayloadKey>,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Size of the units text files are cut into.
    pub chunk_bytes: u64,
    /// The longest line or Kafka message read; a longer one is an `oversize` dead letter.
    pub max_line_bytes: u64,
    /// Rows per archive file before a partition is cut into another file.
    pub max_rows_per_file: usize,
    /// Where outgoing batches wait while a peer is away (a local directory).
    pub spill_dir: PathBuf,
    /// The SQL replica the results are upserted into, if any.
    pub replica: Option<ReplicaParams>,
    /// Where `/metrics`, `/health` and `/ready` are served (`--metrics`), if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the live page is served (`--serve`), with the metrics, if anywhere. The job then
    /// keeps serving after its input ends, until it is stopped.
    pub serve_addr: Option<SocketAddr>,
    /// The job's metrics, which its parts register and update whether or not they are served.
    pub metrics: Metrics,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            input: InputParams::Default,
            archive: "./vigil-data".into(),
            workers: 1,
            lateness_ms: DEFAULT_LATENESS_MS,
            key: None,
            progress: false,
            chunk_bytes: vigil_datasets::loaders::DEFAULT_CHUNK_BYTES,
            max_line_bytes: vigil_datasets::loaders::DEFAULT_MAX_LINE_BYTES,
            max_rows_per_file: 1_000_000,
            spill_dir: PathBuf::from("vigil-spill"),
            replica: None,
            metrics_addr: None,
            serve_addr: None,
            metrics: Metrics::default(),
        }
    }
}

/// What the job reads.
#[derive(Clone, Debug, PartialEq)]
pub enum InputParams {
    /// The recorded dataset compiled into the binary.
    Default,
    /// Files and directories of NDJSON, CSV or Parquet.
    Paths(Vec<PathBuf>),
    /// The built-in generator: `gen:rocket[?…]` or `gen:devices[?…]`.
    Generator(String),
    /// Kafka topics: `kafka://HOST:PORT/TOPIC[,TOPIC…]?group=G`.
    Kafka(Box<KafkaInput>),
}

impl InputParams {
    /// Reads `--input` values: none is the default dataset, `gen:…` a generator, `kafka://…`
    /// Kafka topics, else paths.
    pub fn from_args(values: &[String]) -> anyhow::Result<InputParams> {
        if values.iter().any(|v| v.starts_with("kafka://")) {
            anyhow::ensure!(
                values.iter().all(|v| v.starts_with("kafka://")),
                "a Kafka input cannot be combined with files or a generator"
            );
            let inputs = values
                .iter()
                .map(|v| KafkaInput::parse(v))
                .collect::<anyhow::Result<Vec<_>>>()?;
            return Ok(InputParams::Kafka(Box::new(KafkaInput::merge(inputs)?)));
        }
        match values {
            [] => Ok(InputParams::Default),
            [one] if one.starts_with("gen:") => Ok(InputParams::Generator(one.clone())),
            many => {
                anyhow::ensure!(
                    many.iter().all(|v| !v.starts_with("gen:")),
                    "a generator input cannot be combined with other inputs"
                );
                Ok(InputParams::Paths(many.iter().map(PathBuf::from).collect()))
            }
        }
    }

    /// Cuts the input into units of work.
    pub fn plan(&self, limits: TextLimits) -> anyhow::Result<InputPlan> {
        match self {
            InputParams::Default => Ok(vigil_datasets::embedded::default_plan(limits)),
            InputParams::Paths(paths) => plan_paths(paths, limits),
            InputParams::Generator(spec) => plan_generator(spec),
            InputParams::Kafka(input) => anyhow::bail!(
                "{} is a stream of messages, not a plan of units",
                input.endpoint
            ),
        }
    }
}
