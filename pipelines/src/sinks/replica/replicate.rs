//! The sink operators that replicate a job's outputs: one per part, folding, cutting batches
//! as the frontier moves, and handing them to the worker's writer.

use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use timely::dataflow::Stream;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use tracing::warn;
use vigil_operators::model::Alert;

use super::batch::Batch;
use super::fold::{AlertFold, CollectionFold, Fold, Keyed, TelemetryFold};
use super::handle::{ReplicaHandle, ToWriter, part_name};
use super::options::Output;
use crate::connect::tables::ReplicaTable;

/// Builds the sink operator of one part: folds, cuts batches as the frontier moves, and
/// hands them to the writer (blocking when it is behind, which holds the dataflow back).
/// Nothing, for an output the replica does not take (`--replica-tables`).
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
    if !handle.replicates(output) {
        return;
    }
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

/// Replicates a stream of telemetry batches into `telemetry_meta`.
pub trait ReplicateTelemetry {
    /// Sends the readings' metadata (and their ciphertext, when configured) to the replica.
    fn replicate_telemetry(self, handle: ReplicaHandle);
}

impl ReplicateTelemetry for Stream<'_, u64, Vec<RecordBatch>> {
    fn replicate_telemetry(self, handle: ReplicaHandle) {
        let fold = TelemetryFold::new(handle.options.replicate_payload);
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
        let fold = CollectionFold::new(table);
        replicate(self, exchange, handle, output, fold);
    }
}
