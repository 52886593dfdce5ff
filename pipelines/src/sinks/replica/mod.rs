//! The replica sink: a job's results as rows in a SQL replica — PostgreSQL, CockroachDB, or
//! an embedded SQLite file — upserted exactly once.
//!
//! # How a row gets there
//! Each output of a job (telemetry metadata, alerts, patterns, sessions, entanglements) is a
//! *part* per worker. A part's sink operator folds what the dataflow emits into per-key
//! changes — an upsert or a delete — and, when enough rows have gathered or enough time has
//! passed, cuts a [`Batch`] of everything before the input frontier and hands it to its
//! worker's writer thread. The writer applies the batch and the part's position (the frontier)
//! in one transaction, in `vigil_progress`.
//!
//! # Exactly once
//! A part's position says that all of its output before it is in the replica. On start, the
//! job reads the positions of all its parts; output before the least of them is skipped, since
//! it is there already, whichever worker produced it. Everything after is written again as
//! idempotent upserts keyed by the record's id, so a restart after `kill -9` neither loses nor
//! duplicates a row.
//!
//! # Offline first
//! When a write fails (the replica is away), the batch and every later one go to a local
//! durable spill, sealed with the payload key when one is set, and the writer reconnects with
//! jittered exponential backoff; once connected it drains the spill in order and logs that the
//! replica is back. A job's input positions count a spilled batch as kept.
//!
//! # Layout
//! - `options`: how a job writes to its replica ([`ReplicaParams`]).
//! - `handle`: the outputs a job replicates and what its sink operators hold ([`ReplicaHandle`]).
//! - `replicate`: the sink operators, one extension trait per kind of stream.
//! - `fold`: what a part emits folded into per-table changes until a batch is cut.
//! - `batch`: a [`Batch`] of changes, and its bytes in the spill.
//! - `writer`: one worker's writer thread, the spill while the replica is away.
//! - `write`: a batch written in one transaction, per dialect ([`Target`]).
//! - `durability`: what the writers did and how far the output is kept.
//! - `errors`: a replica that is away told from one that refuses.

mod batch;
mod durability;
mod errors;
mod fold;
mod handle;
mod options;
mod replicate;
pub mod write;
mod writer;

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc::SyncSender};

use anyhow::Context;
use tracing::{info, warn};

pub use crate::connect::tables::{Column, ReplicaTable, SqlKind};
pub use batch::{Batch, TableChange};
pub use durability::{ReplicaDurability, ReplicaStats};
pub use fold::Keyed;
pub use handle::ReplicaHandle;
pub use options::{DEFAULT_OUTPUTS, DEFAULT_REPLICA, Output, ReplicaParams};
pub use replicate::{ReplicateAlerts, ReplicateCollection, ReplicateTelemetry};
pub use write::{Bulk, Target};

use crate::connect::replica::ReplicaUrl;
use crate::runtime::crypto::PayloadKey;
use crate::runtime::metrics::Metrics;
use errors::is_unreachable;
use handle::{ToWriter, part_name};
use writer::Writer;

/// Batches that may wait for a writer before the dataflow is held back; past them, the
/// writer puts what gathers in its spill, so the workers wait for the disk at worst.
const QUEUE: usize = 8;

/// How often the end of a run says how much of the replica's backlog is left.
const BACKLOG_LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// A job's replica writers, one per worker.
pub struct ReplicaSink {
    senders: Vec<SyncSender<ToWriter>>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<()>>>,
    /// What the writers did.
    pub stats: Arc<ReplicaStats>,
    /// How far the output is kept.
    pub durability: Arc<ReplicaDurability>,
    /// Output before this event time is in the replica already.
    pub skip_before: i64,
    options: Arc<ReplicaParams>,
}

impl ReplicaSink {
    /// Connects (migrating when asked), reads where `job` got to, and starts one writer per
    /// worker. An unreachable PostgreSQL replica is not fatal: the writers spill until it
    /// answers.
    pub fn start(
        options: ReplicaParams,
        job: &str,
        outputs: &[Output],
        workers: usize,
        key: Option<PayloadKey>,
        metrics: &Metrics,
    ) -> anyhow::Result<ReplicaSink> {
        let options = Arc::new(options);
        let runtime = Arc::new(crate::runtime::io::current_thread("replica's I/O")?);
        let expected: Vec<String> = outputs
            .iter()
            .flat_map(|o| (0..workers).map(move |w| part_name(*o, w, workers)))
            .collect();
        let skip_before = match prepare(&options, &runtime) {
            Ok(mut target) => {
                let positions = target.progress(job)?;
                let at = |part: &String| positions.iter().find(|(p, _)| p == part).map(|p| p.1);
                expected
                    .iter()
                    .map(at)
                    .collect::<Option<Vec<i64>>>()
                    .and_then(|all| all.into_iter().min())
                    .unwrap_or(i64::MIN)
            }
            Err(error)
                if matches!(options.url, ReplicaUrl::Postgres(_)) && is_unreachable(&error) =>
            {
                warn!(message = "The replica does not answer; results wait in the local spill until it does.", replica = %options.url.redacted(), error = %format!("{error:#}"));
                i64::MIN
            }
            Err(error) => return Err(error),
        };
        if skip_before > i64::MIN {
            info!(
                message = "Resuming the replica from the positions a previous run committed.",
                job, skip_before
            );
        }
        drop(runtime);
        let stats = Arc::new(ReplicaStats {
            write_seconds: Some(metrics.latency(
                "replica_write",
                "How long one batch took to write to the SQL replica, in one transaction.",
            )),
            ..ReplicaStats::default()
        });
        let durability = Arc::new(ReplicaDurability::new(expected.len()));
        let (mut senders, mut threads) = (Vec::new(), Vec::new());
        for worker in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
            let writer = Writer::open(
                options.clone(),
                job.to_owned(),
                worker,
                key.clone(),
                stats.clone(),
                durability.clone(),
            )?;
            threads.push(
                std::thread::Builder::new()
                    .name(format!("vigil-replica-{worker}"))
                    .spawn(move || writer.run(rx))
                    .context("starting a replica writer")?,
            );
            senders.push(tx);
        }
        info!(message = "Replicating results.", replica = %options.url.redacted(), job, outputs = ?outputs);
        Ok(ReplicaSink {
            senders,
            threads,
            stats,
            durability,
            skip_before,
            options,
        })
    }

    /// The handle worker `worker` of `peers` gives its sink operators.
    pub fn handle(&self, worker: usize, peers: usize) -> Option<ReplicaHandle> {
        Some(ReplicaHandle {
            tx: self.senders.get(worker)?.clone(),
            skip_before: self.skip_before,
            worker,
            peers,
            options: self.options.clone(),
            stats: self.stats.clone(),
        })
    }

    /// Hands a batch to worker 0's writer, outside any dataflow (vigil-sync's actions).
    pub fn send(&self, batch: Batch) -> anyhow::Result<()> {
        self.senders
            .first()
            .context("the replica has no writer")?
            .send(ToWriter::Batch(batch))
            .map_err(|_| anyhow::anyhow!("the replica writer has stopped"))
    }

    /// Waits until every batch handed over is written (or spilled, when the replica stayed
    /// away), after the dataflow has finished.
    pub fn finish(self) -> anyhow::Result<Arc<ReplicaStats>> {
        for tx in &self.senders {
            let _ = tx.send(ToWriter::Finish);
        }
        // A backfill faster than the replica leaves a backlog in the spill: it is written
        // now, with a line every few seconds saying how much is left.
        let started = std::time::Instant::now();
        let mut said = started;
        while self.threads.iter().any(|t| !t.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let left = self.stats.backlog.load(Ordering::Relaxed);
            if left > 0 && said.elapsed() >= BACKLOG_LINE_EVERY {
                said = std::time::Instant::now();
                eprintln!(
                    "vigil: the input is done; writing the replica's backlog: {left} batches left ({} rows written so far, {:.0}s)",
                    self.stats.rows.load(Ordering::Relaxed),
                    started.elapsed().as_secs_f64()
                );
            }
        }
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a replica writer panicked"))??;
        }
        Ok(self.stats)
    }
}

/// Opens the replica for the first time: migrations when asked (always for SQLite, whose file
/// the job owns), then a writing connection, which checks that the tables are there.
fn prepare(
    options: &ReplicaParams,
    runtime: &Arc<tokio::runtime::Runtime>,
) -> anyhow::Result<Target> {
    let embedded = matches!(options.url, ReplicaUrl::Sqlite(_));
    if options.migrate || embedded {
        let mut replica = crate::connect::replica::Replica::connect(&options.url, runtime)?;
        crate::connect::migrations::migrate(&mut replica, false)?;
        if options.migrate {
            crate::connect::migrations::ensure_observer_writer(&mut replica)?;
        }
    }
    let target = Target::connect(&options.url, options.role.as_deref(), options.bulk, runtime);
    let mut target = target.map_err(|error| {
        let text = format!("{error:#}");
        if text.contains("does not exist") && !is_unreachable(&error) {
            error.context(format!(
                "the replica {} lacks vigil's tables: run the job once with --replica-migrate \
                 as a user who may create tables (or give that user's URL), then run it as \
                 usual",
                options.url.redacted()
            ))
        } else {
            error
        }
    })?;
    target.set_timeout(options.write_timeout);
    Ok(target)
}
