//! The task that puts finished files into the store, several at a time and with retries, and
//! the handle sinks reach it by.

use crate::runtime::metrics::Metrics;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use super::durability::Durability;
use super::location::ArchiveLocation;
use super::table::HOUR_MS;
use crate::runtime::backoff::{Backoff, Jitter};

/// Files written to the store at the same time.
const PUTS_IN_FLIGHT: usize = 8;

/// One encoded Parquet file on its way to the store.
pub(super) struct PutRequest {
    /// Path relative to the archive root.
    pub(super) path: String,
    /// The encoded file.
    pub(super) bytes: Bytes,
    /// Rows in it.
    pub(super) rows: u64,
    /// The table it belongs to.
    pub(super) table: &'static str,
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
pub(super) enum WriterMessage {
    /// A file to put.
    Put(PutRequest),
    /// Sink `slot` has handed over every file of event time before `before_ms`: once every
    /// file sent ahead of this is in the store, so is that sink's archive before it.
    Durable { slot: usize, before_ms: i64 },
}

/// The handle sinks use to hand finished files to the writer task.
#[derive(Clone)]
pub struct ArchiveWriter {
    /// The writer task's queue.
    pub(super) tx: mpsc::Sender<WriterMessage>,
    durability: Arc<Durability>,
    /// Input fingerprint used in file names.
    pub(super) run: Arc<str>,
    /// Rows per file before a partition is cut into another file.
    pub(super) max_rows: usize,
}

impl ArchiveWriter {
    /// How far the archive is durable.
    pub fn durability(&self) -> Arc<Durability> {
        self.durability.clone()
    }

    /// A sink's durability reporting: registers the sink, and sends a marker whenever the
    /// first open hour moves on.
    pub(super) fn marks(&self) -> DurableMarks {
        DurableMarks {
            slot: self.durability.register(),
            sent: i64::MIN,
        }
    }
}

/// One sink's durability slot and the last marker it sent.
pub(super) struct DurableMarks {
    slot: usize,
    sent: i64,
}

impl DurableMarks {
    /// After a sink has flushed every partition before `closed_before` (an hour index; `None`
    /// at the end of input): tells the writer, if that is further than before.
    pub(super) fn after_flush(&mut self, writer: &ArchiveWriter, closed_before: Option<i64>) {
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
    metrics: &Metrics,
) -> (ArchiveWriter, ArchiveTask) {
    let latency = metrics.latency(
        "archive_write",
        "How long one archive file took to put, retries included.",
    );
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
            let (location, stats, latency) =
                (location.clone(), task_stats.clone(), latency.clone());
            puts.spawn(async move {
                let started = std::time::Instant::now();
                put_with_retry(&location, &request).await?;
                latency.observe(started.elapsed().as_secs_f64());
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

/// Puts a file, trying again a few times with backoff before giving up.
pub(super) async fn put_with_retry(
    location: &ArchiveLocation,
    request: &PutRequest,
) -> anyhow::Result<()> {
    // No cap: five attempts at most bound the delays.
    let mut backoff =
        Backoff::new(Duration::from_millis(100), Duration::MAX).with_jitter(Jitter::Above);
    for attempt in 1.. {
        match location.put(&request.path, request.bytes.clone()).await {
            Ok(_) => return Ok(()),
            Err(error) if attempt < 5 => {
                warn!(message = "Archive write failed; retrying.", path = %request.path, attempt, error = %format!("{error:#}"));
                // Jitter keeps retries of several writers from hitting the store in lockstep.
                tokio::time::sleep(backoff.next_delay()).await;
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    use super::*;
    use crate::runtime::durable::Syncer;

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
        let runtime = crate::runtime::io::background("archive writer")?;
        let (writer, task) = start_writer(
            location,
            "run",
            10,
            4,
            runtime.handle(),
            &Metrics::default(),
        );
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
}
