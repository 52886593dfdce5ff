//! The archive's sink operators, one per kind of stream, and [`write_records`] for a one-shot
//! job's results.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tracing::warn;
use vigil_operators::Record;
use vigil_operators::time::partition_of;

use super::location::ArchiveLocation;
use super::partition::{FileNames, KafkaOrigin, closed_before, split_by_hour, untag};
use super::table::{HOUR_MS, OpenPartition, PartitionFile, Table};
use super::writer::{ArchiveWriter, PutRequest, put_with_retry};

/// Archives a stream of records into its table.
pub trait Archive<'scope, R> {
    /// Buffers records per hour partition on each worker and writes a file when a partition is
    /// full or closed (the watermark has passed its end), and everything at the end of input.
    fn archive(self, writer: ArchiveWriter, worker: usize);
}

impl<'scope, R> Archive<'scope, R> for Stream<'scope, u64, Vec<R>>
where
    R: Record + timely::ExchangeData + Clone,
{
    fn archive(self, writer: ArchiveWriter, worker: usize) {
        let name = format!("Archive({})", R::TABLE);
        let table = Table::of_records::<R>();
        // One file per hour, and per log partition for records read from one (Kafka).
        let mut partitions: HashMap<(i64, Option<KafkaOrigin>), OpenPartition<R>> = HashMap::new();
        let mut names = FileNames::default();
        let mut marks = writer.marks();
        self.sink(Pipeline, &name, move |(input, frontier)| {
            input.for_each_stamp(|_cap, data| {
                for batch in data {
                    for record in batch.drain(..) {
                        let hour = record.event_time().div_euclid(HOUR_MS);
                        let position = record.log_position();
                        let key = (hour, position.map(|(topic, p, _)| (Arc::from(topic), p)));
                        let partition = partitions.entry(key.clone()).or_insert_with(OpenPartition::new);
                        if partition.total() == 0 {
                            partition.file.first_offset = position.map(|(_, _, offset)| offset);
                        }
                        if let Err(error) = partition.push(&table, &record) {
                            // Records are built by vigil and always fit their own schema.
                            warn!(message = "Record could not be archived.", table = R::TABLE, %error);
                            continue;
                        }
                        if partition.total() >= writer.max_rows {
                            let encoded = partition.encode_pending(&table);
                            names.flush(&writer, &table, worker, &key, &mut partition.file, encoded);
                        }
                    }
                }
            });
            let closed_before = closed_before(frontier.frontier().first());
            partitions.retain(|key, partition| {
                let closed = closed_before.is_none_or(|first_open| key.0 < first_open);
                if closed && partition.total() > 0 {
                    let encoded = partition.encode_pending(&table);
                    names.flush(&writer, &table, worker, key, &mut partition.file, encoded);
                }
                !closed
            });
            marks.after_flush(&writer, closed_before);
        });
    }
}

/// Archives a stream of Arrow batches of one table, as built on the hot path.
pub trait ArchiveBatches<'scope> {
    /// Splits each batch by hour partition and encodes it straight into that partition's file;
    /// files are written as in [`Archive::archive`].
    fn archive_batches(self, table: Table, writer: ArchiveWriter, worker: usize);
}

impl<'scope> ArchiveBatches<'scope> for Stream<'scope, u64, Vec<RecordBatch>> {
    fn archive_batches(self, table: Table, writer: ArchiveWriter, worker: usize) {
        let name = format!("Archive({})", table.name);
        // One file per hour, and per Kafka partition for batches read from Kafka.
        let mut partitions: HashMap<(i64, Option<KafkaOrigin>), PartitionFile> = HashMap::new();
        let mut names = FileNames::default();
        let mut marks = writer.marks();
        self.sink(Pipeline, &name, move |(input, frontier)| {
            input.for_each_stamp(|_cap, data| {
                for batch in data.flat_map(|batches| batches.drain(..)) {
                    for (hour, rows) in split_by_hour(&batch, table.time_column) {
                        let (origin, mut offsets, mut rows) = untag(rows, &table);
                        let key = (hour, origin);
                        let file = partitions.entry(key.clone()).or_default();
                        // Fill the file up to the row limit, then start the next one.
                        while rows.num_rows() > 0 {
                            let room = writer.max_rows.saturating_sub(file.rows).max(1);
                            let take = room.min(rows.num_rows());
                            if file.rows == 0 {
                                file.first_offset = offsets.as_ref().map(|o| o.value(0));
                            }
                            let written = file.write(&table, &rows.slice(0, take));
                            rows = rows.slice(take, rows.num_rows() - take);
                            offsets = offsets.map(|o| o.slice(take, o.len() - take));
                            if let Err(error) = &written {
                                warn!(message = "Rows could not be archived.", table = table.name, %error);
                            }
                            if file.rows >= writer.max_rows {
                                names.flush(&writer, &table, worker, &key, file, Ok(()));
                            }
                        }
                    }
                }
            });
            let closed_before = closed_before(frontier.frontier().first());
            partitions.retain(|key, file| {
                let closed = closed_before.is_none_or(|first_open| key.0 < first_open);
                if closed && file.rows > 0 {
                    names.flush(&writer, &table, worker, key, file, Ok(()));
                }
                !closed
            });
            marks.after_flush(&writer, closed_before);
        });
    }
}

/// Writes `rows` of one table outside a dataflow (a one-shot job's results): one file per
/// hour partition of their event time, named `part-RUN.parquet`, each put atomically.
/// Returns the number of files written.
pub async fn write_records<R: Record>(
    location: &ArchiveLocation,
    rows: &[R],
    run: &str,
) -> anyhow::Result<usize> {
    let table = Table::of_records::<R>();
    let mut by_hour: std::collections::BTreeMap<i64, Vec<&R>> = std::collections::BTreeMap::new();
    for row in rows {
        by_hour
            .entry(row.event_time().div_euclid(HOUR_MS))
            .or_default()
            .push(row);
    }
    for (hour, rows) in &by_hour {
        let mut partition = OpenPartition::<R>::new();
        for row in rows {
            partition.push(&table, row)?;
        }
        partition.encode_pending(&table)?;
        let (bytes, rows) = partition.file.finish()?;
        let (date, hh) = partition_of(hour * HOUR_MS);
        let request = PutRequest {
            path: format!("{}/date={date}/hour={hh}/part-{run}.parquet", R::TABLE),
            bytes,
            rows,
            table: R::TABLE,
        };
        put_with_retry(location, &request).await?;
    }
    Ok(by_hour.len())
}
