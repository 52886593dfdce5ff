//! Ad-hoc SQL over vigil's Parquet archive, with DataFusion.
//!
//! The archive written by the pipelines is laid out as
//! `TABLE/date=YYYY-MM-DD/hour=HH/part-….parquet`; every top-level directory becomes
//! one SQL table with the partition columns `date` and `hour`.
//!
//! # Layout
//!
//! - `archive`: opens an archive (local path, `file://` or `s3://`) and registers its tables.
//! - `output`: writes query results as a table, CSV or JSON lines.
//! - `cli`: the `vigil-sql` command line: arguments and `run`.

mod archive;
mod cli;
mod output;

pub use archive::{PARTITION_COLUMNS, open_archive, query, table_names};
pub use cli::{Args, run};
pub use output::{OutputFormat, write_batches};
