//! What a worker's sink operators hold: the outputs a job replicates, and the channel to their
//! worker's writer.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use super::batch::Batch;
use super::durability::ReplicaStats;
use super::options::ReplicaParams;

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
    pub(super) fn name(self) -> &'static str {
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
pub(super) fn part_name(output: Output, worker: usize, peers: usize) -> String {
    format!("{}/{worker}of{peers}", output.name())
}

/// What a writer is sent.
pub(super) enum ToWriter {
    /// A batch to write.
    Batch(Batch),
    /// No more batches: send what waits, then stop.
    Finish,
}

/// What a worker's sink operators use to reach their writer.
#[derive(Clone)]
pub struct ReplicaHandle {
    /// The worker's writer.
    pub(super) tx: SyncSender<ToWriter>,
    /// Output before this event time is in the replica already.
    pub(super) skip_before: i64,
    /// Which worker, of how many.
    pub(super) worker: usize,
    pub(super) peers: usize,
    pub(super) options: Arc<ReplicaParams>,
    pub(super) stats: Arc<ReplicaStats>,
}
