//! What a worker's sink operators hold: the outputs a job replicates, and the channel to their
//! worker's writer.

use std::sync::Arc;
use std::sync::mpsc::SyncSender;

use super::batch::Batch;
use super::durability::ReplicaStats;
use super::options::{Output, ReplicaParams};

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

impl ReplicaHandle {
    /// Whether the job's replica takes `output`.
    pub fn replicates(&self, output: Output) -> bool {
        self.options.tables.contains(&output)
    }
}
