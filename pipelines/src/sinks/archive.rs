//! The Parquet archive on object_store: hive-partitioned tables written atomically.
//!
//! Layout: `TABLE/date=YYYY-MM-DD/hour=HH/part-RUN-wWORKER-SEQ.parquet`. `RUN` is a fingerprint
//! of the input and the worker count, so replaying the same input with the same settings
//! (`-w`, `--max-rows-per-file`) rewrites the same files instead of adding duplicates, while a
//! different input never overwrites them; a replay with other settings writes its files beside
//! the earlier run's. Each file is one `put`, which object stores make visible atomically, so
//! no reader ever sees half a file. A local archive is written here rather than through
//! object_store's local store, which does not sync: each file goes to a temporary name, is
//! synced, renamed into place, and its directory (and any partition directory created for it)
//! synced, all before the file counts as durable and input positions may move past it.

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

use crate::runtime::durable::{Fsync, Syncer};

const HOUR_MS: i64 = 3_600_000;

/// Files written to the store at the same time.
const PUTS_IN_FLIGHT: usize = 8;

/// Where the archive lives: a local directory or an object-store URL.
#[derive(Clone, Debug)]
pub struct ArchiveLocation {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    display: String,
    /// For a local archive: how files are written and synced.
    local: Option<Arc<LocalArchive>>,
}

/// The local directory an archive location names, or `None` for an object-store URL.
pub fn local_dir(location: &str) -> Option<std::path::PathBuf> {
    if location.starts_with("s3://") {
        return None;
    }
    Some(location.strip_prefix("file://").unwrap_or(location).into())
}

/// A local archive's root, and the directories already known to be durable in it.
struct LocalArchive {
    root: std::path::PathBuf,
    syncer: Arc<dyn Syncer>,
    /// Partition directories created (or found) and synced into their parents by this
    /// process: each needs that only once.
    durable_dirs: std::sync::Mutex<std::collections::HashSet<std::path::PathBuf>>,
}

impl std::fmt::Debug for LocalArchive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalArchive")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// Numbers temporary file names, so that two writes of one file never share one.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

impl LocalArchive {
    /// Writes `relative` under the root durably: a temporary file (hidden, and not named
    /// `*.parquet`, so readers never see it), synced, renamed into place, the directory synced.
    fn write(&self, relative: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.root.join(relative);
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(std::io::Error::other(format!(
                "{relative} is not a file path"
            )));
        };
        self.ensure_dir(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            TEMPORARY.fetch_add(1, Ordering::Relaxed)
        ));
        let written = std::fs::File::create(&tmp).and_then(|mut file| {
            std::io::Write::write_all(&mut file, bytes)?;
            self.syncer.file(&file, &tmp)
        });
        let renamed = written.and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = renamed {
            let _ = std::fs::remove_file(&tmp);
            return Err(error);
        }
        self.syncer.dir(dir)
    }

    /// Creates a partition directory if missing, with each new directory synced into its
    /// parent, once per process.
    fn ensure_dir(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let mut known = self.durable_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if known.contains(dir) {
            return Ok(());
        }
        crate::runtime::durable::create_dir_all_with(dir, self.syncer.as_ref())?;
        known.insert(dir.to_path_buf());
        Ok(())
    }
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
                local: None,
            });
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        Self::local(std::path::Path::new(path), Arc::new(Fsync))
    }

    /// A local archive at `path` (created if missing), its files made durable by `syncer`.
    fn local(path: &std::path::Path, syncer: Arc<dyn Syncer>) -> anyhow::Result<Self> {
        crate::runtime::durable::create_dir_all_with(path, syncer.as_ref())
            .with_context(|| format!("creating the archive directory {}", path.display()))?;
        let root = std::fs::canonicalize(path)
            .with_context(|| format!("opening the archive directory {}", path.display()))?;
        let store = LocalFileSystem::new_with_prefix(&root)
            .with_context(|| format!("opening the archive directory {}", root.display()))?;
        Ok(Self {
            store: Arc::new(store),
            prefix: ObjectPath::default(),
            display: root.display().to_string(),
            local: Some(Arc::new(LocalArchive {
                root,
                syncer,
                durable_dirs: Default::default(),
            })),
        })
    }

    /// Writes a file given relative to the archive root, atomically and durably.
    async fn put(&self, relative: &str, bytes: Bytes) -> anyhow::Result<()> {
        match &self.local {
            Some(local) => {
                let (local, relative) = (local.clone(), relative.to_owned());
                tokio::task::spawn_blocking(move || local.write(&relative, &bytes))
                    .await
                    .context("the archive write task failed")??;
            }
            None => {
                self.store
                    .put(&self.path(relative), PutPayload::from(bytes))
                    .await?;
            }
        }
        Ok(())
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
        match location.put(&request.path, request.bytes.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) if attempt < 5 => {
                warn!(message = "Archive write failed; retrying.", path = %request.path, attempt, error = %format!("{error:#}"));
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::*;

    /// Syncs for real, and records each path synced with how far the archive counted as
    /// durable at that moment.
    #[derive(Default)]
    struct Recorder {
        durability: Mutex<Option<Arc<Durability>>>,
        synced: Mutex<Vec<(PathBuf, Option<i64>)>>,
    }

    impl Recorder {
        fn note(&self, path: &Path) {
            let durable = self
                .durability
                .lock()
                .ok()
                .and_then(|d| d.as_ref().and_then(|d| d.durable_before(1)));
            if let Ok(mut synced) = self.synced.lock() {
                synced.push((path.to_path_buf(), durable));
            }
        }
    }

    impl Syncer for Recorder {
        fn file(&self, file: &std::fs::File, path: &Path) -> std::io::Result<()> {
            file.sync_all()?;
            self.note(path);
            Ok(())
        }

        fn dir(&self, dir: &Path) -> std::io::Result<()> {
            crate::runtime::durable::sync_dir(dir)?;
            self.note(dir);
            Ok(())
        }
    }

    #[test]
    fn a_local_file_and_its_new_directories_are_synced_before_it_counts_as_durable()
    -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let recorder = Arc::new(Recorder::default());
        let location = ArchiveLocation::local(&tmp.path().join("archive"), recorder.clone())?;
        let root = std::fs::canonicalize(tmp.path().join("archive"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (writer, task) = start_writer(location, "run", 10, 4, runtime.handle());
        if let Ok(mut durability) = recorder.durability.lock() {
            *durability = Some(writer.durability());
        }
        let mut marks = writer.marks();
        let relative = "telemetry/date=2026-01-01/hour=00/part-a.parquet";
        let bytes = Bytes::from_static(b"a whole file");
        writer.tx.blocking_send(WriterMessage::Put(PutRequest {
            path: relative.into(),
            bytes: bytes.clone(),
            rows: 1,
            table: "telemetry",
        }))?;
        marks.after_flush(&writer, Some(1));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while writer.durability().durable_before(1) != Some(HOUR_MS) {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "the archive never became durable"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Whole, in place, when it counts as durable.
        assert_eq!(std::fs::read(root.join(relative))?, bytes);

        let synced = recorder
            .synced
            .lock()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .clone();
        assert!(
            synced.iter().all(|(_, d)| d.is_none_or(|d| d < HOUR_MS)),
            "something was synced after the file counted as durable: {synced:?}"
        );
        let paths: Vec<&PathBuf> = synced.iter().map(|(p, _)| p).collect();
        let hour = root.join("telemetry/date=2026-01-01/hour=00");
        // The file (under its temporary name), each new directory in its parent, and the
        // directory that holds the file, last.
        assert!(
            paths.iter().any(|p| p.parent() == Some(hour.as_path())
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".part-a.parquet."))),
            "{paths:?}"
        );
        for dir in [
            root.clone(),
            root.join("telemetry"),
            root.join("telemetry/date=2026-01-01"),
        ] {
            assert!(
                paths.contains(&&dir),
                "{} not synced: {paths:?}",
                dir.display()
            );
        }
        assert_eq!(paths.last(), Some(&&hour));
        drop(writer);
        runtime.block_on(task.finish())?;
        let left: Vec<_> = std::fs::read_dir(&hour)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(left, ["part-a.parquet"], "no temporary file is left");
        Ok(())
    }

    #[test]
    fn only_local_locations_name_a_directory() {
        assert_eq!(
            local_dir("./vigil-data"),
            Some(PathBuf::from("./vigil-data"))
        );
        assert_eq!(local_dir("file:///srv/a"), Some(PathBuf::from("/srv/a")));
        assert_eq!(local_dir("s3://bucket/prefix"), None);
    }
}
