//! The `vigil-sql` command line: its arguments and what a run does.

use std::io::Write;

use clap::Parser;

use crate::{OutputFormat, open_archive, query, write_batches};

/// Arguments of `vigil-sql`: which archive to open, which query to run, how to print it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "vigil-sql",
    version,
    about = "Ad-hoc SQL over vigil's Parquet archive."
)]
pub struct Args {
    /// The archive: a local directory, a file:// URL or an s3://bucket/prefix URL.
    #[arg(long, env = "VIGIL_ARCHIVE", default_value = "./vigil-data")]
    pub archive: String,
    /// How to print the result.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// The SQL query, e.g. "SELECT count(*) FROM telemetry WHERE hour = '01'".
    #[arg(value_name = "SQL")]
    pub sql: String,
}

/// Opens the archive, runs the query and writes the result to `out`.
pub async fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<()> {
    let ctx = open_archive(&args.archive).await?;
    let batches = query(&ctx, &args.sql).await?;
    write_batches(&batches, args.format, out)
}
