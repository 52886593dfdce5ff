//! The Parquet archive on object_store: hive-partitioned tables written atomically.
//!
//! Layout: `TABLE/date=YYYY-MM-DD/hour=HH/part-RUN-wWORKER-SEQ.parquet`. `RUN` is a fingerprint
//! of the input, so replaying the same input rewrites the same files instead of adding
//! duplicates, while a different input never overwrites them. Each file is one `put`, which
//! object stores make visible atomically (the local store writes a temporary file and renames
//! it), so no reader ever sees half a file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
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
}

/// The handle sinks use to hand finished files to the writer task.
#[derive(Clone)]
pub struct ArchiveWriter {
    tx: mpsc::Sender<PutRequest>,
    /// Input fingerprint used in file names.
    run: Arc<str>,
    /// Rows per file before a partition is cut into another file.
    max_rows: usize,
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
    let (tx, mut rx) = mpsc::channel::<PutRequest>(queue.max(1));
    let stats = Arc::new(ArchiveStats::default());
    let task_stats = stats.clone();
    let handle = runtime.spawn(async move {
        // Several puts in flight hide an object store's latency; files are independent, so
        // the order they land in does not matter.
        let mut puts = tokio::task::JoinSet::new();
        let location = Arc::new(location);
        while let Some(request) = rx.recv().await {
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

/// An open partition: the next file of one `date=`/`hour=` directory, encoded as rows arrive.
/// Only the current Arrow batch and the compressed file so far stay in memory.
struct OpenPartition<R: Record> {
    rows: BatchBuilder<R>,
    file: Option<ArrowWriter<Vec<u8>>>,
    /// Rows in the file, encoded or still in `rows`.
    total: usize,
}

impl<R: Record> OpenPartition<R> {
    fn new() -> Self {
        Self {
            rows: BatchBuilder::new(),
            file: None,
            total: 0,
        }
    }

    fn push(&mut self, record: &R) -> anyhow::Result<()> {
        self.rows.push(record)?;
        self.total += 1;
        if self.rows.len() >= ROW_BATCH {
            self.encode_pending()?;
        }
        Ok(())
    }

    /// Moves the buffered rows into the Parquet encoder (zstd, with statistics for pruning).
    fn encode_pending(&mut self) -> anyhow::Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = self.rows.finish()?;
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
                    .set_max_row_group_row_count(Some(ROW_GROUP))
                    .build();
                self.file
                    .insert(ArrowWriter::try_new(Vec::new(), R::schema(), Some(props))?)
            }
        };
        file.write(&batch)?;
        Ok(())
    }

    /// Finishes the file and leaves the partition empty for the next one.
    fn finish(&mut self) -> anyhow::Result<(Bytes, u64)> {
        self.encode_pending()?;
        let rows = std::mem::take(&mut self.total) as u64;
        let file = self.file.take().context("an archive file with no rows")?;
        Ok((Bytes::from(file.into_inner()?), rows))
    }

    fn is_empty(&self) -> bool {
        self.total == 0
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
        let mut partitions: HashMap<i64, OpenPartition<R>> = HashMap::new();
        // Files already written per partition, so a reopened partition gets new file names.
        let mut next_seq: HashMap<i64, u32> = HashMap::new();
        self.sink(Pipeline, &name, move |(input, frontier)| {
            input.for_each_stamp(|_cap, data| {
                for batch in data {
                    for record in batch.drain(..) {
                        let hour = record.event_time().div_euclid(HOUR_MS);
                        let partition = partitions.entry(hour).or_insert_with(OpenPartition::new);
                        if let Err(error) = partition.push(&record) {
                            // Records are built by vigil and always fit their own schema.
                            warn!(message = "Record could not be archived.", table = R::TABLE, %error);
                            continue;
                        }
                        if partition.total >= writer.max_rows {
                            flush(&writer, worker, hour, partition, &mut next_seq);
                        }
                    }
                }
            });
            // A partition is closed once the watermark has passed the end of its hour.
            let closed_before = frontier.frontier().first().map(|t| (*t as i64).div_euclid(HOUR_MS));
            partitions.retain(|hour, partition| {
                let closed = closed_before.is_none_or(|first_open| *hour < first_open);
                if closed && !partition.is_empty() {
                    flush(&writer, worker, *hour, partition, &mut next_seq);
                }
                !closed
            });
        });
    }
}

fn flush<R: Record>(
    writer: &ArchiveWriter,
    worker: usize,
    hour: i64,
    partition: &mut OpenPartition<R>,
    next_seq: &mut HashMap<i64, u32>,
) {
    let seq = next_seq.entry(hour).or_insert(0);
    let (date, hh) = partition_of(hour * HOUR_MS);
    let path = format!(
        "{}/date={date}/hour={hh}/part-{}-w{worker:03}-{seq:05}.parquet",
        R::TABLE,
        writer.run
    );
    *seq += 1;
    match partition.finish() {
        Ok((bytes, rows)) => {
            info!(message = "Archive file ready.", table = R::TABLE, %path, rows, bytes = bytes.len());
            let request = PutRequest {
                path,
                bytes,
                rows,
                table: R::TABLE,
            };
            // The writer task only stops early after a failed write, which `finish` reports.
            let _ = writer.tx.blocking_send(request);
        }
        Err(error) => {
            warn!(message = "Archive file could not be encoded.", table = R::TABLE, %error)
        }
    }
}
