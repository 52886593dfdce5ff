//! Snapshots of guard state at event-time boundaries.
//!
//! A job that reads a log (Kafka) restarts from the position it last committed. Without its
//! guards' state it would warm up again from there and judge the replayed readings differently
//! from the run that was interrupted: alerts would be missed or raised twice. With snapshots,
//! the guard operator saves what it knows once its input frontier passes a boundary `at` —
//! exactly the state after every reading with event time before `at` — and a restarted job
//! loads the newest snapshot and skips the replayed readings before `at`, which that state
//! already holds. Its alerts from `at` on are then the interrupted run's, with the same ids.
//!
//! The operator only encodes and decodes; where snapshots are kept, which boundaries are
//! taken, and when a snapshot may be relied on is the [`SnapshotStore`]'s business.

use std::sync::Arc;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// Where the guard operators of a job keep their snapshots. Shared by every worker.
///
/// # Examples
/// A job stops after the readings before 3 s, with an alert open; restarted from its final
/// snapshot and fed the whole input again, it skips what the snapshot holds and clears the
/// alert under the id it was raised with.
/// ```
/// use std::sync::{Arc, Mutex};
/// use timely::dataflow::operators::{Capture, ToStream, capture::Event};
/// use vigil_operators::{
///     Alert, AlertStatus, Snapshots, Guard, GuardLabel, GuardOperatorParams, SeriesReading, Reading,
///     SeriesGuard, SnapshotStore, Threshold,
/// };
///
/// /// Takes one snapshot, at the end of the input at `final_at`; starts from `start`.
/// #[derive(Default)]
/// struct Memory {
///     final_at: Option<u64>,
///     start: Option<(u64, Vec<Vec<u8>>)>,
///     saved: Mutex<Vec<Vec<u8>>>,
/// }
///
/// impl SnapshotStore for Memory {
///     fn target(&self, _frontier: u64) -> Option<u64> {
///         None
///     }
///     fn final_at(&self) -> Option<u64> {
///         self.final_at
///     }
///     fn save(&self, _operator: &str, _worker: usize, _peers: usize, _at: u64, bytes: Vec<u8>) {
///         self.saved.lock().expect("not poisoned").push(bytes);
///     }
///     fn restore(&self, _operator: &str) -> Option<(u64, Vec<Vec<u8>>)> {
///         self.start.clone()
///     }
///     fn restore_failed(&self, operator: &str, error: &str) {
///         panic!("{operator}: {error}");
///     }
/// }
///
/// fn run(readings: &[(i64, f64)], store: Arc<Memory>) -> Vec<Alert> {
///     let points: Vec<SeriesReading> = readings
///         .iter()
///         .map(|(ts, v)| SeriesReading::from(&Reading::new("veh-1", "temp_c", *ts, *v)))
///         .collect();
///     let captured = timely::example(move |scope| {
///         let guard = Threshold::new().bound("temp_c", None, Some(90.0));
///         let options = GuardOperatorParams {
///             snapshots: Some(Snapshots { store, operator: "guards" }),
///             ..GuardOperatorParams::default()
///         };
///         let guards = vec![Guard::new(GuardLabel::new("threshold"), guard)];
///         points.to_stream(scope).container::<Vec<_>>().guards(guards, options).capture()
///     });
///     captured
///         .try_iter()
///         .flat_map(|event| match event {
///             Event::Messages(_, alerts) => alerts,
///             Event::Progress(_) => Vec::new(),
///         })
///         .collect()
/// }
///
/// let input = [(1_000, 20.0), (2_000, 99.0), (4_000, 20.0)];
/// let first = Arc::new(Memory { final_at: Some(3_000), ..Memory::default() });
/// let before = run(&input[..2], first.clone());
/// assert_eq!(before.len(), 1);
/// assert_eq!((before[0].status, before[0].ts), (AlertStatus::Raised, 2_000));
///
/// let saved = std::mem::take(&mut *first.saved.lock().expect("not poisoned"));
/// let restarted = Arc::new(Memory { start: Some((3_000, saved)), ..Memory::default() });
/// let after = run(&input, restarted);
/// assert_eq!(after.len(), 1);
/// assert_eq!((after[0].status, after[0].ts), (AlertStatus::Cleared, 4_000));
/// assert_eq!(after[0].alert_id, before[0].alert_id);
/// ```
pub trait SnapshotStore: Send + Sync + 'static {
    /// Called by every operator instance whenever its input frontier moves, with the new
    /// frontier: the time of the snapshot to take next, if one is wanted. The store must pick
    /// a time no instance's frontier has passed yet (later than every frontier reported), and
    /// keep it until every instance has saved it: each instance saves its state there when
    /// its frontier passes it, however far it jumps at once.
    fn target(&self, frontier: u64) -> Option<u64>;

    /// At the end of the input: the event time the final snapshot is taken at (everything
    /// read is decided by then), or `None` for no final snapshot.
    fn final_at(&self) -> Option<u64>;

    /// Keeps the snapshot of `operator` on `worker` (of `peers`) at `at`.
    fn save(&self, operator: &str, worker: usize, peers: usize, at: u64, bytes: Vec<u8>);

    /// The snapshot to start from, if any: its time and the bytes of `operator` saved by every
    /// worker of the run that took it.
    fn restore(&self, operator: &str) -> Option<(u64, Vec<Vec<u8>>)>;

    /// A snapshot could not be used; the operator starts empty.
    fn restore_failed(&self, operator: &str, error: &str);
}

/// Checkpointing for one guard operator: the store, and the operator's name in it (unique
/// among the job's guard operators).
#[derive(Clone)]
pub struct Snapshots {
    /// Where snapshots go.
    pub store: Arc<dyn SnapshotStore>,
    /// The operator's name in the store.
    pub operator: &'static str,
}

impl std::fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshots")
            .field("operator", &self.operator)
            .finish_non_exhaustive()
    }
}

/// Encoded form of one operator instance's state.
#[derive(Serialize, Deserialize)]
pub(crate) struct Snapshot {
    /// Format version.
    pub version: u32,
    /// The guards, in order, whose states each series holds.
    pub guards: Vec<CompactString>,
    /// Complete for event time before this.
    pub at: u64,
    pub series: Vec<SeriesSnapshot>,
}

/// One series' slots.
#[derive(Serialize, Deserialize)]
pub(crate) struct SeriesSnapshot {
    /// The hash the series is routed by.
    pub hash: u64,
    pub source: CompactString,
    pub name: CompactString,
    /// Event time of the series' latest reading.
    pub last_seen: i64,
    pub slots: Vec<SlotSnapshot>,
}

/// One guard's state of one series: the alert open on it and the logic's state.
#[derive(Serialize, Deserialize)]
pub(crate) struct SlotSnapshot {
    pub open: Option<CompactString>,
    pub state: Vec<u8>,
}

/// The snapshot format this build writes and reads; it reads [`VERSION_1`] too.
pub(crate) const VERSION: u32 = 2;

/// The format before series kept the time of their latest reading.
const VERSION_1: u32 = 1;

/// A snapshot of [`VERSION_1`].
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    version: u32,
    guards: Vec<CompactString>,
    at: u64,
    series: Vec<SeriesSnapshotV1>,
}

#[derive(Serialize, Deserialize)]
struct SeriesSnapshotV1 {
    hash: u64,
    source: CompactString,
    name: CompactString,
    slots: Vec<SlotSnapshot>,
}

impl Snapshot {
    pub(crate) fn encode(&self) -> Vec<u8> {
        // Encoding plain data into memory cannot fail.
        bincode::serialize(self).unwrap_or_default()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
        // The version leads either format.
        let version: u32 =
            bincode::deserialize(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
        if version == VERSION_1 {
            let old: SnapshotV1 =
                bincode::deserialize(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
            // The series were seen no later than the snapshot was taken.
            let at = old.at;
            return Ok(Snapshot {
                version: old.version,
                guards: old.guards,
                at,
                series: old
                    .series
                    .into_iter()
                    .map(|s| SeriesSnapshot {
                        hash: s.hash,
                        source: s.source,
                        name: s.name,
                        last_seen: at.min(i64::MAX as u64) as i64,
                        slots: s.slots,
                    })
                    .collect(),
            });
        }
        let snapshot: Snapshot =
            bincode::deserialize(bytes).map_err(|e| format!("undecodable snapshot: {e}"))?;
        if snapshot.version != VERSION {
            return Err(format!(
                "snapshot format {} (this build reads {VERSION})",
                snapshot.version
            ));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_of_the_format_before_reads_with_the_series_seen_at_its_time() {
        let old = SnapshotV1 {
            version: VERSION_1,
            guards: vec!["zscore".into()],
            at: 5_000,
            series: vec![SeriesSnapshotV1 {
                hash: 7,
                source: "veh-1".into(),
                name: "temp_c".into(),
                slots: vec![SlotSnapshot {
                    open: None,
                    state: vec![1, 2, 3],
                }],
            }],
        };
        let bytes = bincode::serialize(&old).unwrap_or_default();
        let read = Snapshot::decode(&bytes).expect("a version 1 snapshot reads");
        assert_eq!(read.at, 5_000);
        assert_eq!(read.series[0].last_seen, 5_000);
        assert_eq!(read.series[0].slots[0].state, vec![1, 2, 3]);
        // A snapshot of a later format than this build knows is refused.
        let mut newer = Snapshot::decode(&bytes).expect("reads");
        newer.version = VERSION + 1;
        assert!(Snapshot::decode(&newer.encode()).is_err());
    }
}
