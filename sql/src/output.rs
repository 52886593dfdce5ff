//! Writing query results: an aligned table for people; CSV, JSON lines and Parquet for tools.

use std::io::Write;

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use clap::ValueEnum;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;

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
    /// A Parquet file (zstd), readable by DuckDB, pyarrow and vigil-sql; needs `--output`.
    Parquet,
}

/// Writes `batches` to `out` in the given format.
pub fn write_batches(
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => std::sync::Arc::new(arrow::datatypes::Schema::empty()),
    };
    write_result(&schema, batches, format, out)
}

/// Writes a result of `schema` (which shows even when there are no rows) to `out`.
pub fn write_result(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Table => {
            let table =
                arrow::util::pretty::pretty_format_batches_with_schema(schema.clone(), batches)
                    .context("formatting results as a table")?;
            writeln!(out, "{table}").context("writing results")?;
        }
        OutputFormat::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            if batches.iter().all(|b| b.num_rows() == 0) {
                // No rows: the header alone says what the columns were.
                writer
                    .write(&RecordBatch::new_empty(schema.clone()))
                    .context("writing results as CSV")?;
            }
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
        OutputFormat::Parquet => {
            let properties = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .build();
            let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))
                .context("starting the Parquet output")?;
            for batch in batches {
                writer.write(batch).context("writing results as Parquet")?;
            }
            let bytes = writer
                .into_inner()
                .context("finishing the Parquet output")?;
            out.write_all(&bytes).context("writing results")?;
        }
    }
    out.flush().context("writing results")
}
