//! One worker's writer thread: writes batches while the replica answers, spills them while it
//! is away, and drains the spill in order once it is back.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use super::batch::{Batch, decode_batch, encode_batch};
use super::durability::{ReplicaDurability, ReplicaStats};
use super::errors::refused_for_good;
use super::handle::ToWriter;
use super::options::ReplicaParams;
use super::write::Target;
use crate::runtime::backoff::{Backoff, Jitter};
use crate::runtime::crypto::PayloadKey;
use crate::runtime::spill::Spill;

/// Undelivered bytes a part's spill may hold before the job waits for the replica.
const SPILL_MAX_BYTES: u64 = 1 << 30;

/// How long a writer told to finish keeps trying a replica that is away.
const GIVE_UP_AFTER: Duration = Duration::from_secs(10);

/// The longest pause between two attempts to reach the replica.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One worker's writer: a connection when the replica answers, the spill when it does not.
pub(super) struct Writer {
    options: Arc<ReplicaParams>,
    job: String,
    runtime: Arc<tokio::runtime::Runtime>,
    target: Option<Target>,
    /// Opened when a batch first has to wait, or at start when a previous run left some.
    spill: Option<Spill>,
    spill_dir: PathBuf,
    key: Option<PayloadKey>,
    stats: Arc<ReplicaStats>,
    durability: Arc<ReplicaDurability>,
    backoff: Backoff,
    retry_at: Instant,
    /// Whether the replica was seen away (for the log line when it is back).
    away: bool,
    /// Spilled batches read back and not yet sent, oldest first.
    draining: VecDeque<(u64, Vec<u8>)>,
}

impl Writer {
    pub(super) fn open(
        options: Arc<ReplicaParams>,
        job: String,
        worker: usize,
        key: Option<PayloadKey>,
        stats: Arc<ReplicaStats>,
        durability: Arc<ReplicaDurability>,
    ) -> anyhow::Result<Writer> {
        let runtime = Arc::new(crate::runtime::io::current_thread("replica's I/O")?);
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
            backoff: Backoff::new(Duration::from_millis(200), MAX_BACKOFF)
                .with_jitter(Jitter::Around),
            retry_at: Instant::now(),
            away: false,
            draining: VecDeque::new(),
        })
    }

    /// Writes what the workers hand over until told to finish. A batch that arrives alone,
    /// with nothing waiting before it, is written at once; when more have gathered (the writer
    /// is behind: a slow replica, or a backfill faster than it) they go to the spill in order
    /// and are written from there one by one, between looks at the channel, so that the
    /// workers never wait for the replica, only (at worst) for the local disk. At the end the
    /// backlog is written out before the writer stops; only a replica that stays away leaves
    /// it in the spill for the next run.
    pub(super) fn run(mut self, rx: Receiver<ToWriter>) -> anyhow::Result<()> {
        self.connect();
        let mut finish = false;
        let mut give_up: Option<Instant> = None;
        let mut taken: Vec<Batch> = Vec::new();
        loop {
            if !finish {
                let wait = if self.target.is_none() || self.waiting() > 0 {
                    self.retry_at.saturating_duration_since(Instant::now())
                } else {
                    Duration::from_secs(3600)
                };
                match rx.recv_timeout(wait) {
                    Ok(message) => take(message, &mut taken, &mut finish),
                    Err(RecvTimeoutError::Disconnected) => finish = true,
                    Err(RecvTimeoutError::Timeout) => {}
                }
                while let Ok(message) = rx.try_recv() {
                    take(message, &mut taken, &mut finish);
                }
            }
            if taken.len() == 1 && self.waiting() == 0 && self.target.is_some() {
                let batch = taken.remove(0);
                self.handle(batch)?;
            } else if !taken.is_empty() {
                let behind = self.target.is_some();
                self.spill_all(std::mem::take(&mut taken), behind)?;
            }
            if self.target.is_none() && Instant::now() >= self.retry_at {
                self.connect();
            }
            if self.target.is_some() && self.waiting() > 0 && Instant::now() >= self.retry_at {
                self.send_spilled();
            }
            if finish {
                if self.waiting() == 0 {
                    break;
                }
                if self.target.is_none() {
                    // A replica still away at the end: a last few tries, then the batches stay
                    // in the spill for the next run.
                    let until = *give_up.get_or_insert_with(|| Instant::now() + GIVE_UP_AFTER);
                    if Instant::now() >= until {
                        warn!(message = "The replica is still away; results wait in the spill and the next run with the same spill sends them first.", spill = %self.spill_dir.display(), batches = self.waiting());
                        break;
                    }
                    std::thread::sleep(
                        self.retry_at
                            .min(until)
                            .saturating_duration_since(Instant::now()),
                    );
                } else {
                    std::thread::sleep(self.retry_at.saturating_duration_since(Instant::now()));
                }
            }
        }
        Ok(())
    }

    /// Writes a batch, or spills it when the replica fails it.
    fn handle(&mut self, batch: Batch) -> anyhow::Result<()> {
        if self.target.is_some() {
            match self.write(&batch) {
                Ok(()) => return Ok(()),
                Err(error) => self.lost(&error),
            }
        }
        self.spill_all(vec![batch], false)
    }

    /// Appends batches to the spill, in order, and syncs it once: they count as kept. `behind`
    /// says they wait because the writer is behind, not because the replica is away.
    fn spill_all(&mut self, batches: Vec<Batch>, behind: bool) -> anyhow::Result<()> {
        if self.spill.is_none() {
            self.spill = Some(Spill::open(&self.spill_dir, self.key.clone(), SPILL_MAX_BYTES)?.0);
        }
        let mut kept = Vec::with_capacity(batches.len());
        for batch in batches {
            let mut warned = false;
            while self.spill.as_ref().is_some_and(Spill::full) {
                if !warned {
                    warn!(message = "The replica spill is full; waiting for the replica.", spill = %self.spill_dir.display());
                    warned = true;
                }
                if self.target.is_some() {
                    self.send_spilled();
                } else {
                    std::thread::sleep(self.retry_at.saturating_duration_since(Instant::now()));
                    self.connect();
                }
            }
            let spill = self
                .spill
                .as_mut()
                .context("the replica spill is not open")?;
            spill.append(&encode_batch(&batch)?)?;
            kept.push((batch.part, batch.before));
        }
        if let Some(spill) = self.spill.as_mut() {
            spill.sync()?;
        }
        let counter = match behind {
            true => &self.stats.backlogged,
            false => &self.stats.spilled,
        };
        counter.fetch_add(kept.len() as u64, Ordering::Relaxed);
        self.stats
            .backlog
            .fetch_add(kept.len() as i64, Ordering::Relaxed);
        for (part, before) in kept {
            self.durability.set(&part, before);
        }
        Ok(())
    }

    /// Batches waiting in the spill.
    fn waiting(&self) -> u64 {
        self.spill.as_ref().map_or(0, Spill::pending)
    }

    /// Writes `batch` in one transaction, timing it, and counts it as written.
    fn write(&mut self, batch: &Batch) -> anyhow::Result<()> {
        let target = self
            .target
            .as_mut()
            .context("the replica is not connected")?;
        let started = Instant::now();
        target.write(&self.job, batch)?;
        if let Some(latency) = &self.stats.write_seconds {
            latency.observe(started.elapsed().as_secs_f64());
        }
        self.wrote(batch);
        Ok(())
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
        self.retry_at = Instant::now() + self.backoff.next_delay();
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

    /// Connects when not connected (what waits in the spill is sent by [`Writer::send_spilled`]).
    fn connect(&mut self) {
        if self.target.is_some() {
            return;
        }
        match Target::connect(
            &self.options.url,
            self.options.role.as_deref(),
            self.options.bulk,
            &self.runtime,
        ) {
            Ok(mut target) => {
                target.set_timeout(self.options.write_timeout);
                self.target = Some(target);
                if self.away {
                    info!(message = "The replica is back; writing to it again.", replica = %self.options.url.redacted());
                    self.away = false;
                }
                self.backoff.reset();
            }
            Err(error) => {
                if !self.away {
                    warn!(message = "The replica does not answer; results wait in the local spill.", replica = %self.options.url.redacted(), error = %format!("{error:#}"));
                }
                self.away = true;
                self.schedule_retry();
            }
        }
    }

    /// Sends the oldest batch that waits in the spill. The spill is read again from disk when
    /// the batches read last time are all sent.
    fn send_spilled(&mut self) {
        if self.draining.is_empty() {
            // The spill is read again from disk: its mark must say what was sent already.
            if let Some(Err(error)) = self.spill.as_mut().map(Spill::flush_mark) {
                warn!(message = "The replica spill's drained mark could not be written.", error = %format!("{error:#}"));
            }
            match Spill::open(&self.spill_dir, self.key.clone(), SPILL_MAX_BYTES) {
                Ok((spill, waiting)) => {
                    self.spill = Some(spill);
                    self.draining = waiting.into();
                }
                Err(error) => {
                    warn!(message = "The replica spill could not be read.", error = %format!("{error:#}"));
                    self.lost_spill();
                    return;
                }
            }
        }
        let Some((seq, bytes)) = self.draining.pop_front() else {
            return;
        };
        let batch = match decode_batch(&bytes) {
            Ok(batch) => batch,
            Err(error) => {
                let reason = format!("the spilled batch is unreadable: {error:#}");
                if self.dead_letter(seq, &reason, &bytes) {
                    self.stats.backlog.fetch_sub(1, Ordering::Relaxed);
                } else {
                    self.draining.push_front((seq, bytes));
                }
                return;
            }
        };
        match self.write(&batch) {
            Ok(()) => {
                self.stats.backlog.fetch_sub(1, Ordering::Relaxed);
                let drained = self.spill.as_mut().map(|s| s.drained(seq));
                if let Some(Err(error)) = drained {
                    warn!(message = "The replica spill's drained mark could not be written.", error = %format!("{error:#}"));
                }
                if self.waiting() == 0 {
                    info!(message = "Sent the results that waited in the replica spill.", replica = %self.options.url.redacted());
                }
            }
            Err(error) if refused_for_good(&error) => {
                let reason = format!("the replica refuses it for good: {error:#}");
                if self.dead_letter(seq, &reason, &bytes) {
                    self.stats.backlog.fetch_sub(1, Ordering::Relaxed);
                } else {
                    self.draining.push_front((seq, bytes));
                }
            }
            Err(error) => {
                self.lost(&error);
                self.draining.push_front((seq, bytes));
            }
        }
    }

    /// The spill could not be read: try again later.
    fn lost_spill(&mut self) {
        self.draining.clear();
        self.schedule_retry();
        self.target = None;
    }
}

/// A message from the workers: a batch to write, or the end.
fn take(message: ToWriter, taken: &mut Vec<Batch>, finish: &mut bool) {
    match message {
        ToWriter::Batch(batch) => taken.push(batch),
        ToWriter::Finish => *finish = true,
    }
}
