//! Ad-hoc SQL over vigil's Parquet archive, with DataFusion.
//!
//! The archive written by the pipelines is laid out as
//! `TABLE/date=YYYY-MM-DD/hour=HH/part-….parquet`; every top-level directory becomes
//! one SQL table with the partition columns `date` (a `DATE`) and `hour` (an integer).
//!
//! # Layout
//!
//! - `archive`: opens an archive (local path, `file://` or `s3://`) and registers its tables.
//! - `prune`: archive tables prune partitions on `ts` ranges and `hour` equalities.
//! - `session`: a read-only session bounded in memory and time, and `query` for a bare
//!   context; its errors and exit codes.
//! - `functions`: `decrypt(payload, event_id, key_id)`, with the key only.
//! - `windows`: `zscore(value) OVER (…)`, exact where sliding variances drift.
//! - `output`: writes query results as a table, CSV, JSON lines or Parquet.
//! - `chart`: draws a query's time series (and shaded alert intervals) to SVG or HTML.
//! - `shell`: statements line by line, with `\d`-style commands (interactive or piped).
//! - `server`: the archive over the PostgreSQL wire protocol, read-only, for psql and drivers;
//!   `server/policy` is what a client may run, `server/tls` its TLS.
//! - `cli`: the `vigil-sql` command line: arguments and `run`.

mod archive;
mod chart;
mod cli;
mod failure;
mod functions;
mod output;
mod prune;
mod server;
mod session;
mod shell;
mod windows;

pub use archive::{PARTITION_COLUMNS, PARTITION_TYPES, Reach, open_archive, table_names};
pub use chart::{
    CHART_EXTENSIONS, ChartFile, ChartKind, ChartSpec, Drawn, MAX_POINTS, MAX_SERIES, SLICES,
    draw as draw_chart,
};
pub use cli::{Args, Failure, MemoryLimit, Output, PASSWORD_ENV, Timeout, open, run, run_text};
pub use functions::register as register_functions;
pub use output::{OutputFormat, write_batches, write_result};
pub use server::{
    DEFAULT_LISTEN, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, Listener, ServerParams, TlsFiles,
    bind, serve,
};
pub use session::{
    Answer, Limits, QueryError, Session, default_memory_limit, format_bytes, parse_memory, query,
    total_memory,
};
pub use shell::{HELP, Shell, Step};
