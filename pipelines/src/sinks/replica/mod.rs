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

pub mod write;

use std::collections::HashMap;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use tracing::{info, warn};
use vigil_operators::archaeology::entanglements::Entanglement;
use vigil_operators::model::{Alert, AlertStatus, Pattern, Record, Session};

pub use crate::connect::tables::{Column, ReplicaTable, SqlKind};
pub use write::{Batch, Bulk, TableChange, Target};

use crate::runtime::crypto::PayloadKey;
use crate::connect::replica::ReplicaUrl;
use crate::runtime::spill::Spill;

/// The replica a job writes to when none is configured: an embedded SQLite file.
pub const DEFAULT_REPLICA: &str = "sqlite://vigil-replica.db";

/// Undelivered bytes a part's spill may hold before the job waits for the replica.
const SPILL_MAX_BYTES: u64 = 1 << 30;

/// The longest pause between two attempts to reach the replica.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Batches that may wait for a writer before the dataflow is held back.
const QUEUE: usize = 8;

/// How a job writes to its replica.
#[derive(Clone, Debug)]
pub struct ReplicaOptions {
    /// Where.
    pub url: ReplicaUrl,
    /// A role to take after connecting (`SET ROLE`), e.g. `observer_writer`.
    pub role: Option<String>,
    /// Apply vigil's migrations (and, on PostgreSQL, grant the roles) at start-up.
    pub migrate: bool,
    /// Replicate the encrypted payload of each reading (opaque; never decrypted).
    pub replicate_payload: bool,
    /// A batch is cut once it holds this many rows…
    pub batch_rows: usize,
    /// …or this long after the last one.
    pub batch_interval: Duration,
    /// Where batches wait while the replica is away.
    pub spill_dir: PathBuf,
    /// How rows reach a PostgreSQL-protocol replica.
    pub bulk: Bulk,
    /// How long a batch write may wait for a PostgreSQL replica before the replica is taken as
    /// away and the batch spilled.
    pub write_timeout: Duration,
}

impl ReplicaOptions {
    /// The options for `url` with the defaults.
    pub fn new(url: ReplicaUrl) -> ReplicaOptions {
        ReplicaOptions {
            url,
            role: None,
            migrate: false,
            replicate_payload: false,
            batch_rows: 100_000,
            batch_interval: Duration::from_millis(500),
            spill_dir: PathBuf::from("vigil-spill").join("replica"),
            bulk: Bulk::Auto,
            write_timeout: crate::connect::pg_tls::ANSWER_TIMEOUT,
        }
    }
}

/// What the writers did.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Rows written to the replica (upserted or deleted).
    pub rows: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Batches that went to the spill because the replica was away.
    pub spilled: AtomicU64,
    /// Rows skipped because a previous run had written them.
    pub skipped: AtomicU64,
}

/// How far each part's output is kept (in the replica or the spill), for committing input
/// positions.
#[derive(Debug, Default)]
pub struct ReplicaDurability {
    parts: Mutex<HashMap<String, i64>>,
    expected: usize,
}

impl ReplicaDurability {
    fn set(&self, part: &str, before: i64) {
        if let Ok(mut parts) = self.parts.lock() {
            let at = parts.entry(part.to_owned()).or_insert(i64::MIN);
            *at = (*at).max(before);
        }
    }

    /// The event time before which every part's output is kept; `None` until every part has
    /// reported once.
    pub fn durable_before(&self) -> Option<i64> {
        let parts = self.parts.lock().ok()?;
        (parts.len() >= self.expected).then(|| parts.values().copied().min().unwrap_or(i64::MIN))
    }
}

/// The outputs a job replicates; each is a part per worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `telemetry_meta`.
    Telemetry,
    /// `alerts` and `alert_history`.
    Alerts,
    /// `patterns`.
    Patterns,
    /// `sessions`.
    Sessions,
    /// `entanglements`.
    Entanglements,
    /// `sync_actions`.
    SyncActions,
}

impl Output {
    fn name(self) -> &'static str {
        match self {
            Output::Telemetry => "telemetry",
            Output::Alerts => "alerts",
            Output::Patterns => "patterns",
            Output::Sessions => "sessions",
            Output::Entanglements => "entanglements",
            Output::SyncActions => "sync_actions",
        }
    }
}

/// The name of a part's progress row.
fn part_name(output: Output, worker: usize, peers: usize) -> String {
    format!("{}/{worker}of{peers}", output.name())
}

enum ToWriter {
    Batch(Batch),
    Finish,
}

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
    options: Arc<ReplicaOptions>,
}

/// What a worker's sink operators use to reach their writer.
#[derive(Clone)]
pub struct ReplicaHandle {
    tx: SyncSender<ToWriter>,
    skip_before: i64,
    worker: usize,
    peers: usize,
    options: Arc<ReplicaOptions>,
    stats: Arc<ReplicaStats>,
}

impl ReplicaSink {
    /// Connects (migrating when asked), reads where `job` got to, and starts one writer per
    /// worker. An unreachable PostgreSQL replica is not fatal: the writers spill until it
    /// answers.
    pub fn start(
        options: ReplicaOptions,
        job: &str,
        outputs: &[Output],
        workers: usize,
        key: Option<PayloadKey>,
    ) -> anyhow::Result<ReplicaSink> {
        let options = Arc::new(options);
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the replica's I/O runtime")?,
        );
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
        let stats = Arc::new(ReplicaStats::default());
        let durability = Arc::new(ReplicaDurability {
            parts: Mutex::default(),
            expected: expected.len(),
        });
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
    options: &ReplicaOptions,
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

/// Whether an error means the replica could not be reached (rather than refused something).
fn is_unreachable(error: &anyhow::Error) -> bool {
    // A server that refused the TLS asked for did answer: waiting will not change its
    // certificate, so the job stops with the reason instead of spilling.
    if error
        .chain()
        .any(|cause| cause.is::<crate::connect::pg_tls::TlsRefused>())
    {
        return false;
    }
    error.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg.code().is_none() || pg.is_closed();
        }
        cause.downcast_ref::<std::io::Error>().is_some()
    })
}

/// Whether the replica refused a batch for the data it holds, so that writing it again can
/// never succeed: a PostgreSQL data exception (SQLSTATE class 22: a NUL byte in text, a value
/// out of range), or on SQLite a value too big or of the wrong type. Constraint violations are
/// not: a migration can fix those, and the batch then goes through.
fn refused_for_good(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(pg) = cause.downcast_ref::<tokio_postgres::Error>() {
            return pg.code().is_some_and(|c| c.code().starts_with("22"));
        }
        if let Some(rusqlite::Error::SqliteFailure(failure, _)) =
            cause.downcast_ref::<rusqlite::Error>()
        {
            return matches!(
                failure.code,
                rusqlite::ErrorCode::TooBig | rusqlite::ErrorCode::TypeMismatch
            );
        }
        false
    })
}

/// One worker's writer: a connection when the replica answers, the spill when it does not.
struct Writer {
    options: Arc<ReplicaOptions>,
    job: String,
    runtime: Arc<tokio::runtime::Runtime>,
    target: Option<Target>,
    /// Opened when a batch first has to wait, or at start when a previous run left some.
    spill: Option<Spill>,
    spill_dir: PathBuf,
    key: Option<PayloadKey>,
    stats: Arc<ReplicaStats>,
    durability: Arc<ReplicaDurability>,
    backoff: Duration,
    retry_at: Instant,
    /// Whether the replica was seen away (for the log line when it is back).
    away: bool,
}

impl Writer {
    fn open(
        options: Arc<ReplicaOptions>,
        job: String,
        worker: usize,
        key: Option<PayloadKey>,
        stats: Arc<ReplicaStats>,
        durability: Arc<ReplicaDurability>,
    ) -> anyhow::Result<Writer> {
        let runtime = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the replica's I/O runtime")?,
        );
        // A spill of the job's own: another job's batches carry other positions.
        let spill_dir = options.spill_dir.join(&job).join(format!("w{worker}"));
        let spill = match spill_dir.exists() {
            true => Some(Spill::open(&spill_dir, key.clone(), SPILL_MAX_BYTES)?.0),
            false => None,
        };
        Ok(Writer {
            options,
            job,
            runtime,
            target: None,
            spill,
            spill_dir,
            key,
            stats,
            durability,
            backoff: Duration::from_millis(200),
            retry_at: Instant::now(),
            away: false,
        })
    }

    fn run(mut self, rx: Receiver<ToWriter>) -> anyhow::Result<()> {
        // What a previous run left in the spill goes first.
        self.reconnect();
        loop {
            let wait = if self.target.is_none() || self.waiting() > 0 {
                self.retry_at.saturating_duration_since(Instant::now())
            } else {
                Duration::from_secs(3600)
            };
            match rx.recv_timeout(wait) {
                Ok(ToWriter::Batch(batch)) => self.handle(batch)?,
                Ok(ToWriter::Finish) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if (self.target.is_none() || self.waiting() > 0) && Instant::now() >= self.retry_at {
                self.reconnect();
            }
        }
        // At the end: a last few tries to send what waits, then it stays for the next run.
        let give_up = Instant::now() + Duration::from_secs(10);
        while self.waiting() > 0 && Instant::now() < give_up {
            std::thread::sleep(self.retry_at.saturating_duration_since(Instant::now()));
            self.reconnect();
        }
        if self.waiting() > 0 {
            warn!(message = "The replica is still away; results wait in the spill and the next run with the same spill sends them first.", spill = %self.spill_dir.display(), batches = self.waiting());
        }
        Ok(())
    }

    /// Writes a batch, or spills it when the replica is away (or batches wait before it).
    fn handle(&mut self, batch: Batch) -> anyhow::Result<()> {
        if self.waiting() == 0
            && let Some(target) = self.target.as_mut()
        {
            match target.write(&self.job, &batch) {
                Ok(()) => {
                    self.wrote(&batch);
                    return Ok(());
                }
                Err(error) => self.lost(&error),
            }
        }
        if self.spill.is_none() {
            self.spill = Some(Spill::open(&self.spill_dir, self.key.clone(), SPILL_MAX_BYTES)?.0);
        }
        let mut warned = false;
        while self.spill.as_ref().is_some_and(Spill::full) {
            if !warned {
                warn!(message = "The replica spill is full; waiting for the replica.", spill = %self.spill_dir.display());
                warned = true;
            }
            std::thread::sleep(self.retry_at.saturating_duration_since(Instant::now()));
            self.reconnect();
        }
        let spill = self
            .spill
            .as_mut()
            .context("the replica spill is not open")?;
        spill.append(&write::encode_batch(&batch)?)?;
        spill.sync()?;
        self.stats.spilled.fetch_add(1, Ordering::Relaxed);
        self.durability.set(&batch.part, batch.before);
        Ok(())
    }

    /// Batches waiting in the spill.
    fn waiting(&self) -> u64 {
        self.spill.as_ref().map_or(0, Spill::pending)
    }

    fn wrote(&self, batch: &Batch) {
        self.stats
            .rows
            .fetch_add(batch.rows() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.durability.set(&batch.part, batch.before);
    }

    /// The replica failed a write: drop the connection and try again later.
    fn lost(&mut self, error: &anyhow::Error) {
        if !self.away {
            warn!(message = "Writing to the replica failed; results wait in the local spill and are sent when it answers.", replica = %self.options.url.redacted(), error = %format!("{error:#}"));
        }
        self.away = true;
        self.target = None;
        self.schedule_retry();
    }

    fn schedule_retry(&mut self) {
        // Jitter keeps the writers of several jobs from retrying in lockstep.
        let jitter = rand::random_range(0.5..1.5);
        self.retry_at = Instant::now() + self.backoff.mul_f64(jitter);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Puts spilled batch `seq`, which can never be written, in the spill's dead-letter file,
    /// so that the batches after it go on. Returns false (and retries later) when that fails.
    fn dead_letter(&mut self, seq: u64, reason: &str, bytes: &[u8]) -> bool {
        let written = match self.spill.as_mut() {
            Some(spill) => spill.dead_letter(seq, reason, bytes),
            None => Err(anyhow::anyhow!("the replica spill is not open")),
        };
        match written {
            Ok(()) => true,
            Err(error) => {
                warn!(message = "A replica batch that cannot be written could not be dead-lettered; trying again later.", seq, error = %format!("{error:#}"));
                self.schedule_retry();
                false
            }
        }
    }

    /// Connects when not connected, then sends what waits in the spill, in order.
    fn reconnect(&mut self) {
        if self.target.is_none() {
            match Target::connect(
                &self.options.url,
                self.options.role.as_deref(),
                self.options.bulk,
                &self.runtime,
            ) {
                Ok(mut target) => {
                    target.set_timeout(self.options.write_timeout);
                    self.target = Some(target);
                }
                Err(error) => {
                    if !self.away {
                        warn!(message = "The replica does not answer; results wait in the local spill.", replica = %self.options.url.redacted(), error = %format!("{error:#}"));
                    }
                    self.away = true;
                    self.schedule_retry();
                    return;
                }
            }
        }
        if self.waiting() > 0 {
            // The spill is read again from disk: its mark must say what was sent already.
            if let Some(Err(error)) = self.spill.as_mut().map(Spill::flush_mark) {
                warn!(message = "The replica spill's drained mark could not be written.", error = %format!("{error:#}"));
            }
            let waiting = match Spill::open(&self.spill_dir, self.key.clone(), SPILL_MAX_BYTES) {
                Ok((spill, waiting)) => {
                    self.spill = Some(spill);
                    waiting
                }
                Err(error) => {
                    warn!(message = "The replica spill could not be read.", error = %format!("{error:#}"));
                    self.schedule_retry();
                    return;
                }
            };
            let count = waiting.len();
            for (seq, bytes) in waiting {
                let batch = match write::decode_batch(&bytes) {
                    Ok(batch) => batch,
                    Err(error) => {
                        let reason = format!("the spilled batch is unreadable: {error:#}");
                        if !self.dead_letter(seq, &reason, &bytes) {
                            return;
                        }
                        continue;
                    }
                };
                let Some(target) = self.target.as_mut() else {
                    return;
                };
                match target.write(&self.job, &batch) {
                    Ok(()) => {
                        self.wrote(&batch);
                        let drained = self.spill.as_mut().map(|s| s.drained(seq));
                        if let Some(Err(error)) = drained {
                            warn!(message = "The replica spill's drained mark could not be written.", error = %format!("{error:#}"));
                        }
                    }
                    Err(error) if refused_for_good(&error) => {
                        let reason = format!("the replica refuses it for good: {error:#}");
                        if !self.dead_letter(seq, &reason, &bytes) {
                            return;
                        }
                    }
                    Err(error) => {
                        self.lost(&error);
                        return;
                    }
                }
            }
            if count > 0 {
                info!(message = "Sent the results that waited in the replica spill.", batches = count, replica = %self.options.url.redacted());
            }
        }
        if self.away {
            info!(message = "The replica is back; writing to it again.", replica = %self.options.url.redacted());
            self.away = false;
        }
        self.backoff = Duration::from_millis(200);
    }
}

/// Per-key folding of what a part emits, until a batch is cut.
trait Fold: 'static {
    /// What the stream carries.
    type Item;
    /// Takes items received at `time` (dropping what is before `skip_before`).
    fn receive(&mut self, time: u64, items: &mut Vec<Self::Item>, skip_before: i64) -> u64;
    /// Rows waiting.
    fn pending(&self) -> usize;
    /// The changes of everything before `before` (everything with `None`).
    fn cut(&mut self, before: Option<u64>) -> Vec<TableChange>;
}

/// Builds the sink operator of one part: folds, cuts batches as the frontier moves, and
/// hands them to the writer (blocking when it is behind, which holds the dataflow back).
fn replicate<'scope, F, P>(
    stream: Stream<'scope, u64, Vec<F::Item>>,
    pact: P,
    handle: ReplicaHandle,
    output: Output,
    mut fold: F,
) where
    F: Fold,
    F::Item: 'static,
    P: timely::dataflow::channels::pact::ParallelizationContract<u64, Vec<F::Item>>,
{
    let part = part_name(output, handle.worker, handle.peers);
    let name = format!("Replicate({})", output.name());
    let mut last_cut = Instant::now();
    let mut cut_at: Option<u64> = Some(0);
    let mut done = false;
    stream.sink(pact, &name, move |(input, frontier)| {
        input.for_each_stamp(|cap, data| {
            let time = cap.least().copied().unwrap_or(u64::MAX);
            for items in data {
                let skipped = fold.receive(time, items, handle.skip_before);
                if skipped > 0 {
                    handle.stats.skipped.fetch_add(skipped, Ordering::Relaxed);
                }
            }
        });
        if done {
            return;
        }
        let bound = frontier.frontier().first().copied();
        let moved = bound != cut_at;
        let due = bound.is_none()
            || fold.pending() >= handle.options.batch_rows
            || last_cut.elapsed() >= handle.options.batch_interval;
        if !(moved && due) {
            return;
        }
        let changes = fold.cut(bound);
        let before = bound.map_or(i64::MAX, |b| i64::try_from(b).unwrap_or(i64::MAX));
        cut_at = bound;
        last_cut = Instant::now();
        done = bound.is_none();
        // Output before the skip mark is in the replica: its position is not moved back.
        if before <= handle.skip_before && changes.is_empty() {
            return;
        }
        let batch = Batch {
            part: part.clone(),
            before,
            changes,
        };
        if handle.tx.send(ToWriter::Batch(batch)).is_err() {
            warn!(message = "The replica writer has stopped; results are no longer replicated.", part = %part);
            done = true;
        }
    });
}

/// Telemetry: batches of readings as they are, projected to the metadata columns.
struct TelemetryFold {
    pending: Vec<RecordBatch>,
    rows: usize,
    payload: bool,
}

impl Fold for TelemetryFold {
    type Item = RecordBatch;

    fn receive(&mut self, time: u64, items: &mut Vec<RecordBatch>, skip_before: i64) -> u64 {
        let skip = (time as i64) < skip_before;
        let mut skipped = 0;
        for batch in items.drain(..) {
            if skip {
                skipped += batch.num_rows() as u64;
                continue;
            }
            let columns = write::written_columns(ReplicaTable::TelemetryMeta, self.payload);
            let indices: Vec<usize> = columns
                .iter()
                .filter_map(|c| batch.schema().index_of(&c.name).ok())
                .collect();
            match batch.project(&indices) {
                Ok(projected) => {
                    self.rows += projected.num_rows();
                    self.pending.push(projected);
                }
                Err(error) => {
                    warn!(message = "Readings could not be replicated.", %error);
                }
            }
        }
        skipped
    }

    fn pending(&self) -> usize {
        self.rows
    }

    fn cut(&mut self, _before: Option<u64>) -> Vec<TableChange> {
        // Readings are never retracted: everything received goes, complete or not.
        self.rows = 0;
        if self.pending.is_empty() {
            return Vec::new();
        }
        vec![TableChange {
            table: ReplicaTable::TelemetryMeta,
            deletes: Vec::new(),
            upserts: std::mem::take(&mut self.pending),
        }]
    }
}

/// Alerts: a raise upserts the open alert, a clear deletes it; both are appended to the
/// history.
/// Each alert with the time it was emitted at, which decides its batch.
#[derive(Default)]
struct AlertFold {
    pending: Vec<(u64, Alert)>,
}

impl Fold for AlertFold {
    type Item = Alert;

    fn receive(&mut self, time: u64, items: &mut Vec<Alert>, skip_before: i64) -> u64 {
        if (time as i64) < skip_before {
            let skipped = items.len() as u64;
            items.clear();
            return skipped;
        }
        self.pending.extend(items.drain(..).map(|a| (time, a)));
        0
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn cut(&mut self, before: Option<u64>) -> Vec<TableChange> {
        let mut ready: Vec<Alert> = match before {
            Some(bound) => self
                .pending
                .extract_if(.., |(time, _)| *time < bound)
                .map(|(_, a)| a)
                .collect(),
            None => self.pending.drain(..).map(|(_, a)| a).collect(),
        };
        if ready.is_empty() {
            return Vec::new();
        }
        ready.sort_unstable_by(|a, b| {
            (a.ts, &a.alert_id, a.status).cmp(&(b.ts, &b.alert_id, b.status))
        });
        let mut latest: HashMap<&str, &Alert> = HashMap::new();
        let mut history: HashMap<(&str, AlertStatus), &Alert> = HashMap::new();
        for alert in &ready {
            latest.insert(alert.alert_id.as_str(), alert);
            history.insert((alert.alert_id.as_str(), alert.status), alert);
        }
        let (open, closed): (Vec<Alert>, Vec<Alert>) = latest
            .into_values()
            .cloned()
            .partition(|a| a.status == AlertStatus::Raised);
        let history: Vec<Alert> = history.into_values().cloned().collect();
        let mut alerts = TableChange {
            table: ReplicaTable::Alerts,
            deletes: Vec::new(),
            upserts: Vec::new(),
        };
        let mut log = TableChange {
            table: ReplicaTable::AlertHistory,
            deletes: Vec::new(),
            upserts: Vec::new(),
        };
        push_batch(&mut alerts.deletes, &closed);
        push_batch(&mut alerts.upserts, &open);
        push_batch(&mut log.upserts, &history);
        vec![alerts, log]
    }
}

/// Records of `rows` as one batch, when there are any.
fn push_batch<R: Record>(into: &mut Vec<RecordBatch>, rows: &[R]) {
    if rows.is_empty() {
        return;
    }
    match R::to_batch(rows) {
        Ok(batch) => into.push(batch),
        // Records are built by vigil and always fit their own schema.
        Err(error) => warn!(message = "Records could not be replicated.", table = R::TABLE, %error),
    }
}

/// A record kept in a replica table by its key.
pub trait Keyed: Record + Clone + Eq + Hash + 'static {
    /// The key's value, as one comparable string.
    fn replica_key(&self) -> String;
}

impl Keyed for Pattern {
    fn replica_key(&self) -> String {
        self.pattern_id.to_string()
    }
}

impl Keyed for Session {
    fn replica_key(&self) -> String {
        format!("{}\u{0}{}", self.key, self.start)
    }
}

impl Keyed for Entanglement {
    fn replica_key(&self) -> String {
        format!("{}\u{0}{}", self.a, self.b)
    }
}

/// A differential collection's updates, folded per key: the newest record with a positive
/// count is upserted; a key whose records were all retracted is deleted.
struct CollectionFold<R> {
    table: ReplicaTable,
    pending: Vec<(R, u64, isize)>,
}

impl<R: Keyed> Fold for CollectionFold<R> {
    type Item = (R, u64, isize);

    fn receive(&mut self, _time: u64, items: &mut Vec<(R, u64, isize)>, skip_before: i64) -> u64 {
        let mut skipped = 0;
        for update in items.drain(..) {
            if (update.1 as i64) < skip_before {
                skipped += 1;
            } else {
                self.pending.push(update);
            }
        }
        skipped
    }

    fn pending(&self) -> usize {
        self.pending.len()
    }

    fn cut(&mut self, before: Option<u64>) -> Vec<TableChange> {
        let mut ready: Vec<(R, u64, isize)> = match before {
            Some(bound) => self.pending.extract_if(.., |u| u.1 < bound).collect(),
            None => std::mem::take(&mut self.pending),
        };
        if ready.is_empty() {
            return Vec::new();
        }
        ready.sort_by_key(|u| u.1);
        let mut state: HashMap<String, (R, bool)> = HashMap::new();
        let mut at = 0;
        while at < ready.len() {
            let time = ready[at].1;
            let end = at + ready[at..].iter().take_while(|u| u.1 == time).count();
            // Consolidate the time's updates, then apply retractions before insertions.
            let mut net: HashMap<&R, isize> = HashMap::new();
            for (record, _, diff) in &ready[at..end] {
                *net.entry(record).or_default() += diff;
            }
            let (gone, came): (Vec<_>, Vec<_>) = net
                .into_iter()
                .filter(|(_, d)| *d != 0)
                .partition(|(_, d)| *d < 0);
            for (record, _) in gone {
                state.insert(record.replica_key(), (record.clone(), false));
            }
            for (record, _) in came {
                state.insert(record.replica_key(), (record.clone(), true));
            }
            at = end;
        }
        let (kept, dropped): (Vec<_>, Vec<_>) = state.into_values().partition(|(_, up)| *up);
        let kept: Vec<R> = kept.into_iter().map(|(r, _)| r).collect();
        let dropped: Vec<R> = dropped.into_iter().map(|(r, _)| r).collect();
        let mut change = TableChange {
            table: self.table,
            deletes: Vec::new(),
            upserts: Vec::new(),
        };
        push_batch(&mut change.deletes, &dropped);
        push_batch(&mut change.upserts, &kept);
        vec![change]
    }
}

/// Replicates a stream of telemetry batches into `telemetry_meta`.
pub trait ReplicateTelemetry {
    /// Sends the readings' metadata (and their ciphertext, when configured) to the replica.
    fn replicate_telemetry(self, handle: ReplicaHandle);
}

impl ReplicateTelemetry for Stream<'_, u64, Vec<RecordBatch>> {
    fn replicate_telemetry(self, handle: ReplicaHandle) {
        let fold = TelemetryFold {
            pending: Vec::new(),
            rows: 0,
            payload: handle.options.replicate_payload,
        };
        replicate(self, Pipeline, handle, Output::Telemetry, fold);
    }
}

/// Replicates a stream of alerts into `alerts` (open ones) and `alert_history`.
pub trait ReplicateAlerts {
    /// Sends raises and clears to the replica.
    fn replicate_alerts(self, handle: ReplicaHandle);
}

impl ReplicateAlerts for Stream<'_, u64, Vec<Alert>> {
    fn replicate_alerts(self, handle: ReplicaHandle) {
        let exchange = Exchange::new(|a: &Alert| xxhash_rust::xxh3::xxh3_64(a.alert_id.as_bytes()));
        replicate(self, exchange, handle, Output::Alerts, AlertFold::default());
    }
}

/// Replicates a differential collection's updates into its table.
pub trait ReplicateCollection<R: Keyed> {
    /// Sends the collection's changes to the replica table of `output`.
    fn replicate_collection(self, handle: ReplicaHandle, output: Output);
}

impl<R> ReplicateCollection<R> for Stream<'_, u64, Vec<(R, u64, isize)>>
where
    R: Keyed + timely::ExchangeData,
{
    fn replicate_collection(self, handle: ReplicaHandle, output: Output) {
        let table = match output {
            Output::Patterns => ReplicaTable::Patterns,
            Output::Sessions => ReplicaTable::Sessions,
            Output::Entanglements => ReplicaTable::Entanglements,
            Output::Telemetry => ReplicaTable::TelemetryMeta,
            Output::Alerts => ReplicaTable::Alerts,
            Output::SyncActions => ReplicaTable::SyncActions,
        };
        let exchange = Exchange::new(|u: &(R, u64, isize)| {
            xxhash_rust::xxh3::xxh3_64(u.0.replica_key().as_bytes())
        });
        let fold = CollectionFold {
            table,
            pending: Vec::new(),
        };
        replicate(self, exchange, handle, output, fold);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::{BTreeMap, BTreeSet};

    use compact_str::format_compact;
    use rand::{RngExt, SeedableRng};

    use super::*;

    /// Applies cut changes to a model of the table: deletes, then upserts, by key.
    fn apply<R: Keyed>(model: &mut BTreeMap<String, R>, changes: Vec<TableChange>) {
        for change in changes {
            for batch in &change.deletes {
                for record in R::from_batch(batch).unwrap() {
                    model.remove(&record.replica_key());
                }
            }
            for batch in &change.upserts {
                for record in R::from_batch(batch).unwrap() {
                    model.insert(record.replica_key(), record);
                }
            }
        }
    }

    /// A collection of pairs changed at random over time, its updates shuffled within each
    /// time, cut into batches at random frontiers: the table the cuts build equals the
    /// collection's final content, and equals its content at every frontier cut at.
    #[test]
    fn collection_folds_equal_a_sequential_reference() {
        for seed in 0..20 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut current: BTreeMap<String, Entanglement> = BTreeMap::new();
            let mut updates: Vec<(Entanglement, u64, isize)> = Vec::new();
            let mut snapshots: Vec<BTreeMap<String, Entanglement>> = Vec::new();
            for time in 0..200u64 {
                let mut at_time = Vec::new();
                for _ in 0..rng.random_range(0..4) {
                    let a = format_compact!("dev-{}", rng.random_range(0..6));
                    let pair = Entanglement {
                        a: a.clone(),
                        b: "hub".into(),
                        together: rng.random_range(1..50),
                        lift_milli: 1_500,
                        since: time as i64,
                    };
                    let key = pair.replica_key();
                    if let Some(old) = current.remove(&key) {
                        at_time.push((old, time, -1));
                    }
                    if rng.random_bool(0.7) {
                        current.insert(key, pair.clone());
                        at_time.push((pair, time, 1));
                    }
                }
                // A record inserted and retracted at the same time nets to nothing.
                if rng.random_bool(0.2) {
                    let ghost = Entanglement {
                        a: "ghost".into(),
                        b: "hub".into(),
                        together: 1,
                        lift_milli: 1,
                        since: 0,
                    };
                    at_time.push((ghost.clone(), time, 1));
                    at_time.push((ghost, time, -1));
                }
                for i in (1..at_time.len()).rev() {
                    at_time.swap(i, rng.random_range(0..=i));
                }
                updates.extend(at_time);
                snapshots.push(current.clone());
            }
            let mut fold = CollectionFold {
                table: ReplicaTable::Entanglements,
                pending: Vec::new(),
            };
            let mut model = BTreeMap::new();
            let mut frontier = 0u64;
            for chunk in updates.chunks(7) {
                let mut items = chunk.to_vec();
                fold.receive(chunk[0].1, &mut items, i64::MIN);
                let seen = chunk.last().map_or(0, |u| u.1);
                if rng.random_bool(0.3) && seen > frontier {
                    frontier = rng.random_range(frontier + 1..=seen);
                    apply(&mut model, fold.cut(Some(frontier)));
                    assert_eq!(model, snapshots[frontier as usize - 1], "seed {seed}");
                }
            }
            apply(&mut model, fold.cut(None));
            assert_eq!(model, current, "seed {seed}");
        }
    }

    /// Raises and clears of many alerts, cut at random frontiers: `alerts` ends with the
    /// alerts still open, `alert_history` with every raise and clear once.
    #[test]
    fn alert_folds_equal_a_sequential_reference() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut fold = AlertFold::default();
        let (mut open, mut history) = (BTreeMap::new(), BTreeMap::new());
        let (mut expected_open, mut expected_history) = (BTreeSet::new(), BTreeSet::new());
        let mut raised: Vec<String> = Vec::new();
        let mut frontier = 0;
        for time in 0..500u64 {
            let alert = if !raised.is_empty() && rng.random_bool(0.4) {
                let id = raised.swap_remove(rng.random_range(0..raised.len()));
                expected_open.remove(&id);
                alert(&id, time, AlertStatus::Cleared)
            } else {
                let id = format!("a{time}");
                raised.push(id.clone());
                expected_open.insert(id.clone());
                alert(&id, time, AlertStatus::Raised)
            };
            expected_history.insert((alert.alert_id.to_string(), alert.status));
            fold.receive(time, &mut vec![alert], i64::MIN);
            if rng.random_bool(0.1) {
                frontier = rng.random_range(frontier..=time + 1);
                for change in fold.cut(Some(frontier)) {
                    let target = match change.table {
                        ReplicaTable::Alerts => &mut open,
                        _ => &mut history,
                    };
                    for batch in &change.deletes {
                        for a in Alert::from_batch(batch).unwrap() {
                            target.remove(&(a.alert_id.to_string(), a.status));
                            target.remove(&(a.alert_id.to_string(), AlertStatus::Raised));
                        }
                    }
                    for batch in &change.upserts {
                        for a in Alert::from_batch(batch).unwrap() {
                            let key = (a.alert_id.to_string(), a.status);
                            assert!(
                                change.table == ReplicaTable::Alerts || !target.contains_key(&key),
                                "history written twice: {key:?}"
                            );
                            target.insert(key, a);
                        }
                    }
                }
            }
        }
        for change in fold.cut(None) {
            let target = match change.table {
                ReplicaTable::Alerts => &mut open,
                _ => &mut history,
            };
            for batch in &change.deletes {
                for a in Alert::from_batch(batch).unwrap() {
                    target.remove(&(a.alert_id.to_string(), AlertStatus::Raised));
                }
            }
            for batch in &change.upserts {
                for a in Alert::from_batch(batch).unwrap() {
                    target.insert((a.alert_id.to_string(), a.status), a);
                }
            }
        }
        let open: BTreeSet<String> = open.into_keys().map(|(id, _)| id).collect();
        assert_eq!(open, expected_open);
        assert_eq!(
            history.into_keys().collect::<BTreeSet<_>>(),
            expected_history
        );
    }

    fn alert(id: &str, ts: u64, status: AlertStatus) -> Alert {
        Alert {
            alert_id: id.into(),
            guard: "zscore".into(),
            severity: "warning".into(),
            source: "veh-0".into(),
            name: "altitude_m".into(),
            ts: ts as i64,
            window_start: ts as i64,
            window_end: ts as i64,
            observed: 1.0,
            expected: 0.0,
            score: 4.0,
            status,
            reaction: "telemetry-alerts".into(),
        }
    }
}
