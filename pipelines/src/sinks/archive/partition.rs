//! Which file a row goes to — its event time's hour, and the Kafka partition it was read
//! from — and what that file is named.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMillisecondType;
use tracing::{info, warn};
use vigil_operators::time::partition_of;

use super::table::{HOUR_MS, PartitionFile, Table};
use super::writer::{ArchiveWriter, PutRequest, WriterMessage};

/// The Kafka topic and partition a batch was read from.
pub(super) type KafkaOrigin = (Arc<str>, i32);

/// The column and schema metadata that tag a batch read from Kafka with its origin.
const KAFKA_OFFSET: &str = "_kafka_offset";
const KAFKA_TOPIC: &str = "vigil.kafka.topic";
const KAFKA_PARTITION: &str = "vigil.kafka.partition";

/// Tags a batch of rows read from one Kafka partition with that partition and each row's
/// offset, so that the archive writes it to files of that partition named by the offset of
/// their first row: a run that replays from a committed offset rewrites the same files.
pub fn tag_kafka_batch(
    batch: RecordBatch,
    topic: &str,
    partition: i32,
    offsets: Vec<i64>,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    let mut fields: Vec<arrow::datatypes::FieldRef> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(arrow::datatypes::Field::new(
        KAFKA_OFFSET,
        arrow::datatypes::DataType::Int64,
        false,
    )));
    let metadata = HashMap::from([
        (KAFKA_TOPIC.to_owned(), topic.to_owned()),
        (KAFKA_PARTITION.to_owned(), partition.to_string()),
    ]);
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(arrow::array::Int64Array::from(offsets)));
    RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new_with_metadata(
            fields, metadata,
        )),
        columns,
    )
}

/// A batch's Kafka origin and row offsets, if tagged, and its rows as the table stores them.
pub(super) fn untag(
    batch: RecordBatch,
    table: &Table,
) -> (
    Option<KafkaOrigin>,
    Option<arrow::array::Int64Array>,
    RecordBatch,
) {
    let schema = batch.schema();
    let metadata = schema.metadata();
    let origin = metadata
        .get(KAFKA_TOPIC)
        .zip(metadata.get(KAFKA_PARTITION).and_then(|p| p.parse().ok()));
    let offsets = batch
        .column_by_name(KAFKA_OFFSET)
        .and_then(|c| c.as_primitive_opt::<arrow::datatypes::Int64Type>())
        .cloned();
    match (origin, offsets) {
        (Some((topic, partition)), Some(offsets)) => {
            let columns = batch.columns()[..table.schema.fields().len()].to_vec();
            match RecordBatch::try_new(table.schema.clone(), columns) {
                Ok(rows) => (
                    Some((topic.as_str().into(), partition)),
                    Some(offsets),
                    rows,
                ),
                Err(_) => (None, None, batch),
            }
        }
        _ => (None, None, batch),
    }
}

/// The first hour still open at a frontier (`None` once the input is complete): partitions
/// before it are closed, because the watermark has passed their end.
pub(super) fn closed_before(frontier: Option<&u64>) -> Option<i64> {
    frontier.map(|t| (*t as i64).div_euclid(HOUR_MS))
}

/// A batch cut by the hour of its event-time column. A batch that lies in one hour, the usual
/// case, is passed on whole.
pub(super) fn split_by_hour(batch: &RecordBatch, time_column: usize) -> Vec<(i64, RecordBatch)> {
    let Some(ts) = batch
        .column(time_column)
        .as_primitive_opt::<TimestampMillisecondType>()
    else {
        return Vec::new();
    };
    let hours = || ts.values().iter().map(|t| t.div_euclid(HOUR_MS));
    let (Some(min), Some(max)) = (hours().min(), hours().max()) else {
        return Vec::new();
    };
    if min == max {
        return vec![(min, batch.clone())];
    }
    let mut distinct: Vec<i64> = hours().collect();
    distinct.sort_unstable();
    distinct.dedup();
    distinct
        .into_iter()
        .filter_map(|hour| {
            let mask: BooleanArray = hours().map(|h| Some(h == hour)).collect();
            filter_record_batch(batch, &mask).ok().map(|b| (hour, b))
        })
        .collect()
}

/// Names the files of one sink: each partition's files are numbered, so a reopened partition
/// gets new names.
#[derive(Default)]
pub(super) struct FileNames {
    next_seq: HashMap<i64, u32>,
}

impl FileNames {
    /// Finishes a partition's file and hands it to the writer task.
    pub(super) fn flush(
        &mut self,
        writer: &ArchiveWriter,
        table: &Table,
        worker: usize,
        (hour, origin): &(i64, Option<KafkaOrigin>),
        file: &mut PartitionFile,
        encoded: anyhow::Result<()>,
    ) {
        let (hour, (date, hh)) = (*hour, partition_of(hour * HOUR_MS));
        let path = match (origin, file.first_offset) {
            // Rows of one Kafka partition: named by partition and first offset, so the same
            // rows always make the same file, whichever run writes them.
            (Some((topic, partition)), Some(first)) => format!(
                "{}/date={date}/hour={hh}/part-{topic}-p{partition:05}-o{first:020}.parquet",
                table.name
            ),
            _ => {
                let seq = self.next_seq.entry(hour).or_insert(0);
                let path = format!(
                    "{}/date={date}/hour={hh}/part-{}-w{worker:03}-{seq:05}.parquet",
                    table.name, writer.run
                );
                *seq += 1;
                path
            }
        };
        match encoded.and_then(|()| file.finish()) {
            Ok((bytes, rows)) => {
                info!(message = "Archive file ready.", table = table.name, %path, rows, bytes = bytes.len());
                let request = PutRequest {
                    path,
                    bytes,
                    rows,
                    table: table.name,
                };
                // The writer task only stops early after a failed write, which `finish` reports.
                let _ = writer.tx.blocking_send(WriterMessage::Put(request));
            }
            Err(error) => {
                warn!(message = "Archive file could not be encoded.", table = table.name, %error)
            }
        }
    }
}
