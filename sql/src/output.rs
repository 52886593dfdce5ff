//! Writing query results: an aligned table for people, CSV and JSON lines for tools.

use std::io::Write;

use anyhow::Context;
use arrow::array::RecordBatch;
use clap::ValueEnum;

/// How query results are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table, for reading in a terminal.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per row and line (JSON lines).
    Json,
}

/// Writes `batches` to `out` in the given format.
pub fn write_batches(
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            let table = arrow::util::pretty::pretty_format_batches(batches)
                .context("formatting results as a table")?;
            writeln!(out, "{table}").context("writing results")?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for batch in batches {
                writer.write(batch).context("writing results as CSV")?;
            }
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch).context("writing results as JSON")?;
            }
            writer.finish().context("writing results as JSON")?;
        }
    }
    out.flush().context("writing results")
}
