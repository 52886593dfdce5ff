//! One worker's writer thread: writes batches while the replica answers, spills them while it
//! is away, and drains the spill in order once it is back.

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
        })
    }

    pub(super) fn run(mut self, rx: Receiver<ToWriter>) -> anyhow::Result<()> {
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
        spill.append(&encode_batch(&batch)?)?;
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
                let batch = match decode_batch(&bytes) {
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
        self.backoff.reset();
    }
}
