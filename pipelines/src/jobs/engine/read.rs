//! A worker's reading loop: it feeds the dataflow, paces itself by the dataflow's progress,
//! commits Kafka offsets once everything read is kept, and meets the other workers at the end
//! of the input.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use timely::dataflow::ProbeHandle;
use tracing::{info, warn};
use vigil_datasets::loaders::{InputPlan, read_unit};

use crate::jobs::engine::feeder::{SEND_BATCH, WorkerSink};
use crate::runtime::snapshot::StateDir;
use crate::runtime::stop::Stop;
use crate::sinks::archive::Durability;
use crate::sinks::kafka::KafkaAlerts;
use crate::sinks::replica::ReplicaDurability;
use crate::sources::files::Streams;
use crate::sources::kafka::{KafkaReader, Watermark};

/// Units a worker may read ahead of what the dataflow has finished, which bounds memory.
const UNITS_IN_FLIGHT: usize = 4;

/// Archive sinks in each worker's dataflow: telemetry, scores, alerts and errors.
pub(crate) const SINKS_PER_WORKER: usize = 4;

/// Decides how far input positions may be committed: up to the event time before which the
/// archive is durable and every alert has been delivered.
pub(crate) struct CommitGate {
    pub(crate) durability: Arc<Durability>,
    pub(crate) sinks: usize,
    pub(crate) alerts: Option<Arc<KafkaAlerts>>,
    pub(crate) replica: Option<Arc<ReplicaDurability>>,
    pub(crate) state: Option<Arc<StateDir>>,
}

impl CommitGate {
    /// The event time before which everything read is kept: in archive files, delivered or
    /// spilled alerts, and (for Kafka) the guards' current snapshot.
    pub(crate) fn safe_before(&self) -> Option<i64> {
        let mut safe = self.durability.durable_before(self.sinks)?;
        if let Some(alerts) = &self.alerts {
            safe = safe.min(alerts.delivered_before()?);
        }
        if let Some(replica) = &self.replica {
            safe = safe.min(replica.durable_before()?);
        }
        if let Some(state) = &self.state {
            safe = safe.min(state.advance(safe)?);
        }
        Some(safe)
    }
}

/// What a worker's reading loop consults besides its sink.
pub(crate) struct ReadLoop<'a> {
    pub(crate) probe: &'a ProbeHandle<u64>,
    pub(crate) end: &'a EndOfInput,
    pub(crate) stop: &'a Stop,
    pub(crate) index: usize,
    pub(crate) gate: &'a CommitGate,
}

impl ReadLoop<'_> {
    /// Whether to stop reading: asked to, with a log line.
    pub(crate) fn stopping(&self) -> bool {
        let stop = self.stop.is_triggered();
        if stop {
            info!(
                message = "Stop requested; finishing what was read.",
                worker = self.index
            );
        }
        stop
    }

    /// Lets the dataflow catch up with the input time `target` from `UNITS_IN_FLIGHT` steps
    /// ago. Parks rather than spins while the other workers catch up: a busy loop here would
    /// take the core they need. A worker that has finished reading holds its inputs at its last
    /// watermark until all have finished, so once one has, or a stop was asked for, waiting
    /// for the others could wait forever.
    pub(crate) fn throttle(
        &self,
        worker: &mut timely::worker::Worker,
        in_flight: &mut VecDeque<u64>,
        watermark: u64,
    ) {
        in_flight.push_back(watermark);
        if in_flight.len() > UNITS_IN_FLIGHT
            && let Some(target) = in_flight.pop_front()
        {
            while self.probe.less_than(&target)
                && self.end.done.load(Ordering::SeqCst) == 0
                && !self.stop.is_triggered()
            {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
        }
        worker.step();
    }

    /// Reads this worker's units of `plan`; returns the newest event time read.
    pub(crate) fn plan(
        &self,
        worker: &mut timely::worker::Worker,
        sink: &mut WorkerSink,
        plan: &InputPlan,
        progress: &ProgressBar,
    ) -> i64 {
        let mut buf = Vec::new();
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut streams = Streams::new(plan.units.iter().skip(self.index).step_by(worker.peers()));
        while let Some(stream) = streams.next_stream() {
            if self.stopping() {
                break;
            }
            let Some(unit) = streams.take_unit(stream) else {
                continue;
            };
            sink.max_ts = streams.max_ts(stream);
            read_unit(unit, &mut buf, sink);
            streams.update(stream, sink.max_ts, sink.lateness);
            sink.flush();
            let watermark = sink.advance(streams.watermark());
            progress.inc(unit.size);
            self.throttle(worker, &mut in_flight, watermark);
        }
        streams.newest()
    }

    /// Reads this worker's Kafka partitions until they reach their ends (`stop=end`) or a stop
    /// is asked for; returns the newest event time read.
    pub(crate) fn kafka(
        &self,
        worker: &mut timely::worker::Worker,
        sink: &mut WorkerSink,
        reader: &mut KafkaReader,
    ) -> i64 {
        let mut in_flight: VecDeque<u64> = VecDeque::new();
        let mut last_commit = Instant::now();
        while !reader.finished() && !self.stopping() {
            let read =
                reader.poll_batch(SEND_BATCH, Duration::from_millis(20), |message, max_ts| {
                    // The partition's newest event time, kept only once it has given a reading.
                    let before = *max_ts;
                    sink.max_ts = before.max(0);
                    sink.message(message);
                    if before != i64::MIN || sink.max_ts > 0 {
                        *max_ts = sink.max_ts.max(before);
                    }
                });
            sink.flush();
            reader.record_batch(sink.watermark);
            if last_commit.elapsed() >= reader.commit_every {
                last_commit = Instant::now();
                if let Some(safe) = self.gate.safe_before()
                    && let Err(error) = reader.commit_durable(safe)
                {
                    warn!(message = "Committing Kafka offsets failed; will retry.", error = %format!("{error:#}"));
                }
            }
            // An idle worker (no live partition, or none at all) follows the others, so that
            // it does not hold event time back for the whole job.
            let watermark = match reader.watermark(sink.lateness) {
                Watermark::Live(watermark) => {
                    self.end.live.fetch_max(watermark, Ordering::SeqCst);
                    watermark
                }
                Watermark::Idle(own) => own.unwrap_or(0).max(self.end.live.load(Ordering::SeqCst)),
            };
            let watermark = sink.advance(watermark);
            if read > 0 {
                self.throttle(worker, &mut in_flight, watermark);
                continue;
            }
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        reader.newest().unwrap_or(i64::MIN)
    }
}

/// What the workers share at the end of the input: the newest event time any of them read,
/// and how many have finished reading.
#[derive(Default)]
pub(crate) struct EndOfInput {
    pub(crate) newest: AtomicI64,
    pub(crate) done: AtomicUsize,
    /// The newest watermark of any worker reading live partitions (Kafka), which idle workers
    /// follow.
    pub(crate) live: AtomicU64,
}

/// A worker's place in [`EndOfInput::done`]: counted once, by [`Finished::count`] or on drop.
pub(crate) struct Finished<'a> {
    pub(crate) end: &'a EndOfInput,
    counted: bool,
}

impl<'a> Finished<'a> {
    pub(crate) fn new(end: &'a EndOfInput) -> Self {
        Self {
            end,
            counted: false,
        }
    }

    pub(crate) fn count(&mut self) {
        if !std::mem::replace(&mut self.counted, true) {
            self.end.done.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.count();
    }
}
