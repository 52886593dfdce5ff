//! An archive table, and the Parquet file of one partition as it is written.

use anyhow::Context;
use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use vigil_operators::{BatchBuilder, Record};

/// An hour, the span of one partition, in milliseconds.
pub(super) const HOUR_MS: i64 = 3_600_000;

/// Rows converted to Arrow and handed to the Parquet encoder at a time.
const ROW_BATCH: usize = 32 * 1024;

/// Rows per Parquet row group.
const ROW_GROUP: usize = 256 * 1024;

/// An archive table: its name, schema, and how its columns are stored.
#[derive(Clone, Debug)]
pub struct Table {
    /// The table's name, its folder in the archive.
    pub(super) name: &'static str,
    /// The rows' schema.
    pub(super) schema: SchemaRef,
    /// Columns stored without dictionary encoding ([`Record::DISTINCT_COLUMNS`]).
    distinct: &'static [&'static str],
    /// Index of the event-time column that decides a row's partition.
    pub(super) time_column: usize,
}

impl Table {
    /// The table of a record type; `time_column` names its event-time column.
    pub fn of<R: Record>(time_column: &str) -> anyhow::Result<Self> {
        let schema = R::schema();
        let time_column = schema
            .index_of(time_column)
            .with_context(|| format!("table {} has no column {time_column}", R::TABLE))?;
        Ok(Self {
            name: R::TABLE,
            schema,
            distinct: R::DISTINCT_COLUMNS,
            time_column,
        })
    }

    /// The table of a record type whose event time is its first column.
    pub(super) fn of_records<R: Record>() -> Self {
        Self {
            name: R::TABLE,
            schema: R::schema(),
            distinct: R::DISTINCT_COLUMNS,
            time_column: 0,
        }
    }

    fn writer_properties(&self) -> anyhow::Result<WriterProperties> {
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
            .set_max_row_group_row_count(Some(ROW_GROUP));
        for column in self.distinct {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
        }
        Ok(props.build())
    }
}

/// The file being written for one partition: Parquet encoded as batches arrive, so only the
/// compressed file so far stays in memory.
#[derive(Default)]
pub(super) struct PartitionFile {
    file: Option<ArrowWriter<Vec<u8>>>,
    /// Rows encoded so far.
    pub(super) rows: usize,
    /// For a file of one Kafka partition: the offset of its first row, which names it.
    pub(super) first_offset: Option<i64>,
}

impl PartitionFile {
    /// Encodes a batch into the file (zstd, with statistics for pruning).
    pub(super) fn write(&mut self, table: &Table, batch: &RecordBatch) -> anyhow::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => self.file.insert(ArrowWriter::try_new(
                Vec::new(),
                table.schema.clone(),
                Some(table.writer_properties()?),
            )?),
        };
        file.write(batch)?;
        self.rows += batch.num_rows();
        Ok(())
    }

    /// Finishes the file and leaves the partition empty for the next one.
    pub(super) fn finish(&mut self) -> anyhow::Result<(Bytes, u64)> {
        let rows = std::mem::take(&mut self.rows) as u64;
        self.first_offset = None;
        let file = self.file.take().context("an archive file with no rows")?;
        Ok((Bytes::from(file.into_inner()?), rows))
    }
}

/// An open partition of a record table: rows collected into Arrow batches, then encoded.
pub(super) struct OpenPartition<R: Record> {
    rows: BatchBuilder<R>,
    /// The file the rows are encoded into.
    pub(super) file: PartitionFile,
}

impl<R: Record> OpenPartition<R> {
    /// An empty partition.
    pub(super) fn new() -> Self {
        Self {
            rows: BatchBuilder::new(),
            file: PartitionFile::default(),
        }
    }

    /// Adds a record, encoding the rows gathered when they make a batch.
    pub(super) fn push(&mut self, table: &Table, record: &R) -> anyhow::Result<()> {
        self.rows.push(record)?;
        if self.rows.len() >= ROW_BATCH {
            self.encode_pending(table)?;
        }
        Ok(())
    }

    /// Encodes the rows gathered so far into the file.
    pub(super) fn encode_pending(&mut self, table: &Table) -> anyhow::Result<()> {
        if !self.rows.is_empty() {
            let batch = self.rows.finish()?;
            self.file.write(table, &batch)?;
        }
        Ok(())
    }

    /// Rows in the partition, encoded or not.
    pub(super) fn total(&self) -> usize {
        self.file.rows + self.rows.len()
    }
}
