//! What every dataflow job over an input says about its run, whatever it computes.

use std::path::PathBuf;

use crate::jobs::engine::source::InputSpec;
use crate::runtime::crypto::PayloadKey;
use crate::sinks::replica::ReplicaOptions;

/// The settings the engine reads: input, archive, workers, lateness, limits and outputs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// What to read.
    pub input: InputSpec,
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
    pub replica: Option<ReplicaOptions>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            input: InputSpec::Default,
            archive: "./vigil-data".into(),
            workers: 1,
            lateness_ms: 10_000,
            key: None,
            progress: false,
            chunk_bytes: vigil_datasets::loaders::DEFAULT_CHUNK_BYTES,
            max_line_bytes: vigil_datasets::loaders::DEFAULT_MAX_LINE_BYTES,
            max_rows_per_file: 1_000_000,
            spill_dir: PathBuf::from("vigil-spill"),
            replica: None,
        }
    }
}
