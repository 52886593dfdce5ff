//! The Parquet archive on object_store: hive-partitioned tables written atomically.
//!
//! Layout: `TABLE/date=YYYY-MM-DD/hour=HH/part-RUN-wWORKER-SEQ.parquet`. `RUN` is a fingerprint
//! of the input and the worker count, so replaying the same input with the same settings
//! (`-w`, `--max-rows-per-file`) rewrites the same files instead of adding duplicates, while a
//! different input never overwrites them; a replay with other settings writes its files beside
//! the earlier run's. Each file is one `put`, which
//! object stores make visible atomically (the local store writes a temporary file and renames
//! it), so no reader ever sees half a file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{SchemaRef, TimestampMillisecondType};
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use tokio::sync::mpsc;
use tracing::{info, warn};
use vigil_operators::{BatchBuilder, Record, time::partition_of};

const HOUR_MS: i64 = 3_600_000;

/// Files written to the store at the same time.
const PUTS_IN_FLIGHT: usize = 8;

/// Where the archive lives: a local directory or an object-store URL.
#[derive(Clone, Debug)]
pub struct ArchiveLocation {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    display: String,
}

impl ArchiveLocation {
    /// Opens `s3://bucket/prefix` (credentials, region and endpoint from the standard `AWS_*`
    /// environment variables), `file:///path`, or a local path, which is created if missing.
    pub fn parse(location: &str) -> anyhow::Result<Self> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            anyhow::ensure!(
                !bucket.is_empty(),
                "archive URL {location} has no bucket: use s3://BUCKET/PREFIX"
            );
            let store = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| {
                    format!("configuring S3 for {location}: check the AWS_* environment variables")
                })?;
            return Ok(Self {
                store: Arc::new(store),
                prefix: ObjectPath::from(prefix.trim_matches('/')),
                display: location.to_owned(),
            });
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        std::fs::create_dir_all(path)
            .with_context(|| format!("creating the archive directory {path}"))?;
        let root = std::fs::canonicalize(path)
            .with_context(|| format!("opening the archive directory {path}"))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .with_context(|| format!("opening the archive directory {}", root.display()))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            display: root.display().to_string(),
        })
    }

    /// The object store the archive is on.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The full object path of a file given relative to the archive root.
    pub fn path(&self, relative: &str) -> ObjectPath {
        if self.prefix.as_ref().is_empty() {
            ObjectPath::from(relative)
        } else {
            ObjectPath::from(format!("{}/{relative}", self.prefix))
        }
    }
}

impl std::fmt::Display for ArchiveLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

/// One encoded Parquet file on its way to the store.
struct PutRequest {
    /// Path relative to the archive root.
    path: String,
    bytes: Bytes,
    rows: u64,
    table: &'static str,
}

/// Counters of what the archive has made durable.
#[derive(Debug, Default)]
pub struct ArchiveStats {
    /// Files written.
    pub files: AtomicU64,
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Telemetry rows written.
    pub telemetry_rows: AtomicU64,
    /// Alert rows written.
    pub alert_rows: AtomicU64,
    /// Dead-letter rows written.
    pub error_rows: AtomicU64,
    /// Anomaly score rows written.
    pub score_rows: AtomicU64,
}

/// What sinks send the writer task.
enum WriterMessage {
    /// A file to put.
    Put(PutRequest),
    /// Sink `slot` has handed over every file of event time before `before_ms`: once every
    /// file sent ahead of this is in the store, so is that sink's archive before it.
    Durable { slot: usize, before_ms: i64 },
}

/// How far each archive sink's output is durable, for committing input positions (Kafka
/// offsets) only once everything read before them is in the store.
#[derive(Debug, Default)]
pub struct Durability {
    /// Per registered sink: event time before which all of its files are in the store.
    slots: std::sync::Mutex<Vec<i64>>,
}

impl Durability {
    fn register(&self) -> usize {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.push(i64::MIN);
        slots.len() - 1
    }

    fn set(&self, slot: usize, before_ms: i64) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.get_mut(slot) {
            *s = (*s).max(before_ms);
        }
    }

    /// The event time before which every sink's records are in the store; `None` until all
    /// `sinks` expected have registered (a sink that has not registered yet may still write).
    pub fn durable_before(&self, sinks: usize) -> Option<i64> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        (slots.len() >= sinks).then(|| slots.iter().copied().min().unwrap_or(i64::MIN))
    }
}

/// The handle sinks use to hand finished files to the writer task.
#[derive(Clone)]
pub struct ArchiveWriter {
    tx: mpsc::Sender<WriterMessage>,
    durability: Arc<Durability>,
    /// Input fingerprint used in file names.
    run: Arc<str>,
    /// Rows per file before a partition is cut into another file.
    max_rows: usize,
}

impl ArchiveWriter {
    /// How far the archive is durable.
    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
    }

    /// A sink's durability reporting: registers the sink, and sends a marker whenever the
    /// first open hour moves on.
    fn marks(&self) -> DurableMarks {
        DurableMarks {
            slot: self.durability.register(),
            sent: i64::MIN,
        }
    }
}

/// One sink's durability slot and the last marker it sent.
struct DurableMarks {
    slot: usize,
    sent: i64,
}

impl DurableMarks {
    /// After a sink has flushed every partition before `closed_before` (an hour index; `None`
    /// at the end of input): tells the writer, if that is further than before.
    fn after_flush(&mut self, writer: &ArchiveWriter, closed_before: Option<i64>) {
        let before_ms = closed_before.map_or(i64::MAX, |hour| hour.saturating_mul(HOUR_MS));
        if before_ms > self.sent {
            self.sent = before_ms;
            let marker = WriterMessage::Durable {
                slot: self.slot,
                before_ms,
            };
            let _ = writer.tx.blocking_send(marker);
        }
    }
}

/// The task that puts files into the store; wait for it with [`ArchiveTask::finish`].
pub struct ArchiveTask {
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// What it has written.
    pub stats: Arc<ArchiveStats>,
}

impl ArchiveTask {
    /// Waits until every file handed over has been written, or returns the first failure.
    pub async fn finish(self) -> anyhow::Result<Arc<ArchiveStats>> {
        self.handle.await.context("the archive writer stopped")??;
        Ok(self.stats)
    }
}

/// Starts the writer task on the current tokio runtime. At most `queue` encoded files wait in
/// memory; sinks block when it is full, which holds the dataflow back instead of buffering.
pub fn start_writer(
    location: ArchiveLocation,
    run: &str,
    max_rows: usize,
    queue: usize,
    runtime: &tokio::runtime::Handle,
) -> (ArchiveWriter, ArchiveTask) {
    let (tx, mut rx) = mpsc::channel::<WriterMessage>(queue.max(1));
    let stats = Arc::new(ArchiveStats::default());
    let task_stats = stats.clone();
    let durability = Arc::new(Durability::default());
    let task_durability = durability.clone();
    let handle = runtime.spawn(async move {
        // Several puts in flight hide an object store's latency; files are independent, so
        // the order they land in does not matter.
        let mut puts = tokio::task::JoinSet::new();
        let location = Arc::new(location);
        while let Some(message) = rx.recv().await {
            let request = match message {
                WriterMessage::Put(request) => request,
                WriterMessage::Durable { slot, before_ms } => {
                    // Everything sent before the marker must be in the store first.
                    while let Some(done) = puts.join_next().await {
                        done.context("an archive write task failed")??;
                    }
                    task_durability.set(slot, before_ms);
                    continue;
                }
            };
            while puts.len() >= PUTS_IN_FLIGHT {
                if let Some(done) = puts.join_next().await {
                    done.context("an archive write task failed")??;
                }
            }
            let (location, stats) = (location.clone(), task_stats.clone());
            puts.spawn(async move {
                put_with_retry(&location, &request).await?;
                let counter = match request.table {
                    "telemetry" => &stats.telemetry_rows,
                    "alerts" => &stats.alert_rows,
                    "anomaly_scores" => &stats.score_rows,
                    _ => &stats.error_rows,
                };
                counter.fetch_add(request.rows, Ordering::Relaxed);
                stats.files.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes
                    .fetch_add(request.bytes.len() as u64, Ordering::Relaxed);
                anyhow::Ok(())
            });
        }
        while let Some(done) = puts.join_next().await {
            done.context("an archive write task failed")??;
        }
        Ok(())
    });
    (
        ArchiveWriter {
            tx,
            durability,
            run: run.into(),
            max_rows: max_rows.max(1),
        },
        ArchiveTask { handle, stats },
    )
}

async fn put_with_retry(location: &ArchiveLocation, request: &PutRequest) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(100);
    for attempt in 1.. {
        let path = location.path(&request.path);
        match location
            .store
            .put(&path, PutPayload::from(request.bytes.clone()))
            .await
        {
            Ok(_) => return Ok(()),
            Err(error) if attempt < 5 => {
                warn!(message = "Archive write failed; retrying.", path = %request.path, attempt, %error);
                // Jitter keeps retries of several writers from hitting the store in lockstep.
                let jitter =
                    Duration::from_millis(rand::random_range(0..=delay.as_millis() as u64 / 2));
                tokio::time::sleep(delay + jitter).await;
                delay *= 2;
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("writing {} to the archive {location} failed 5 times: check the archive is writable", request.path)
                });
            }
        }
    }
    Ok(())
}

/// Rows converted to Arrow and handed to the Parquet encoder at a time.
const ROW_BATCH: usize = 32 * 1024;

/// Rows per Parquet row group.
const ROW_GROUP: usize = 256 * 1024;

/// An archive table: its name, schema, and how its columns are stored.
#[derive(Clone, Debug)]
pub struct Table {
    name: &'static str,
    schema: SchemaRef,
    /// Columns stored without dictionary encoding ([`Record::DISTINCT_COLUMNS`]).
    distinct: &'static [&'static str],
    /// Index of the event-time column that decides a row's partition.
    time_column: usize,
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
struct PartitionFile {
    file: Option<ArrowWriter<Vec<u8>>>,
    rows: usize,
    /// For a file of one Kafka partition: the offset of its first row, which names it.
    first_offset: Option<i64>,
}

impl PartitionFile {
    /// Encodes a batch into the file (zstd, with statistics for pruning).
    fn write(&mut self, table: &Table, batch: &RecordBatch) -> anyhow::Result<()> {
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
    fn finish(&mut self) -> anyhow::Result<(Bytes, u64)> {
        let rows = std::mem::take(&mut self.rows) as u64;
        self.first_offset = None;
        let file = self.file.take().context("an archive file with no rows")?;
        Ok((Bytes::from(file.into_inner()?), rows))
    }
}

/// An open partition of a record table: rows collected into Arrow batches, then encoded.
struct OpenPartition<R: Record> {
    rows: BatchBuilder<R>,
    file: PartitionFile,
}

impl<R: Record> OpenPartition<R> {
    fn new() -> Self {
        Self {
            rows: BatchBuilder::new(),
            file: PartitionFile::default(),
        }
    }

    fn push(&mut self, table: &Table, record: &R) -> anyhow::Result<()> {
        self.rows.push(record)?;
        if self.rows.len() >= ROW_BATCH {
            self.encode_pending(table)?;
        }
        Ok(())
    }

    fn encode_pending(&mut self, table: &Table) -> anyhow::Result<()> {
        if !self.rows.is_empty() {
            let batch = self.rows.finish()?;
            self.file.write(table, &batch)?;
        }
        Ok(())
    }

    fn total(&self) -> usize {
        self.file.rows + self.rows.len()
    }
}

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
        let table = Table {
            name: R::TABLE,
            schema: R::schema(),
            distinct: R::DISTINCT_COLUMNS,
            time_column: 0,
        };
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

/// The Kafka topic and partition a batch was read from.
type KafkaOrigin = (Arc<str>, i32);

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
fn untag(
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
fn closed_before(frontier: Option<&u64>) -> Option<i64> {
    frontier.map(|t| (*t as i64).div_euclid(HOUR_MS))
}

/// A batch cut by the hour of its event-time column. A batch that lies in one hour, the usual
/// case, is passed on whole.
fn split_by_hour(batch: &RecordBatch, time_column: usize) -> Vec<(i64, RecordBatch)> {
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
struct FileNames {
    next_seq: HashMap<i64, u32>,
}

impl FileNames {
    /// Finishes a partition's file and hands it to the writer task.
    fn flush(
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

/// Writes `rows` of one table outside a dataflow (a one-shot job's results): one file per
/// hour partition of their event time, named `part-RUN.parquet`, each put atomically.
/// Returns the number of files written.
pub async fn write_records<R: Record>(
    location: &ArchiveLocation,
    rows: &[R],
    run: &str,
) -> anyhow::Result<usize> {
    let table = Table {
        name: R::TABLE,
        schema: R::schema(),
        distinct: R::DISTINCT_COLUMNS,
        time_column: 0,
    };
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
