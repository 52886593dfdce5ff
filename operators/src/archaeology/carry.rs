//! Carrying an archaeology operator's state from the end of one run to the start of the next,
//! so that a backfill in parts finds what one run over the whole would.
//!
//! At the end of its input an operator saves its state at the store's final time; the next
//! run's operators load what every worker saved, keep the part that routes to them, and skip
//! readings before that time, which the state already holds.
//!
//! # Examples
//! The sequential patterns of a history, mined in two parts split in the middle of a run of
//! events, the second part starting from what the first carried, are those of one run over
//! the whole.
//! ```
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//! use differential_dataflow::consolidation::consolidate;
//! use timely::dataflow::operators::{Capture, ToStream, capture::Extract};
//! use vigil_operators::archaeology::sequences::{SequenceParams, Sequences};
//! use vigil_operators::{Pattern, SeriesReading, Reading, SnapshotStore};
//!
//! type Blobs = HashMap<String, Vec<Vec<u8>>>;
//!
//! /// Saves at the end of the input at `final_at`; starts from `carried`.
//! #[derive(Default)]
//! struct Memory {
//!     final_at: Option<u64>,
//!     carried: Option<(u64, Blobs)>,
//!     saved: Mutex<Blobs>,
//! }
//!
//! impl SnapshotStore for Memory {
//!     fn target(&self, _frontier: u64) -> Option<u64> {
//!         None
//!     }
//!     fn final_at(&self) -> Option<u64> {
//!         self.final_at
//!     }
//!     fn save(&self, operator: &str, _worker: usize, _peers: usize, _at: u64, bytes: Vec<u8>) {
//!         let mut saved = self.saved.lock().expect("not poisoned");
//!         saved.entry(operator.to_owned()).or_default().push(bytes);
//!     }
//!     fn restore(&self, operator: &str) -> Option<(u64, Vec<Vec<u8>>)> {
//!         let (at, blobs) = self.carried.as_ref()?;
//!         Some((*at, blobs.get(operator)?.clone()))
//!     }
//!     fn restore_failed(&self, operator: &str, error: &str) {
//!         panic!("{operator}: {error}");
//!     }
//! }
//!
//! /// The patterns at the end of a run over `points`.
//! fn run(points: Vec<SeriesReading>, store: Option<Arc<Memory>>) -> Vec<Pattern> {
//!     let captured = timely::example(move |scope| {
//!         let store = store.map(|s| s as Arc<dyn SnapshotStore>);
//!         let params = SequenceParams::default();
//!         let stream = points.to_stream(scope).container::<Vec<_>>();
//!         stream.sequences_carried(params, store).inner.capture()
//!     });
//!     let mut updates: Vec<(Pattern, isize)> = captured
//!         .extract()
//!         .into_iter()
//!         .flat_map(|(_, updates)| updates)
//!         .map(|(pattern, _, diff)| (pattern, diff))
//!         .collect();
//!     consolidate(&mut updates);
//!     assert!(updates.iter().all(|(_, diff)| *diff == 1));
//!     updates.into_iter().map(|(pattern, _)| pattern).collect()
//! }
//!
//! // Two sources go BREATH, SPIRAL, BLOOM twice; the split falls inside dev-0's second time.
//! let mut points = Vec::new();
//! for (source, starts) in [("dev-0", [0, 11_000]), ("dev-1", [5_000, 20_000])] {
//!     for start in starts {
//!         for (k, name) in ["BREATH", "SPIRAL", "BLOOM"].into_iter().enumerate() {
//!             let ts = start + k as i64 * 1_000;
//!             points.push(SeriesReading::from(&Reading::new(source, name, ts, 1.0)));
//!         }
//!     }
//! }
//! let whole = run(points.clone(), None);
//! assert_eq!(whole.len(), 3);
//!
//! let split = 12_500;
//! let (before, after): (Vec<SeriesReading>, Vec<SeriesReading>) =
//!     points.iter().cloned().partition(|p| p.ts < split as i64);
//! let first = Arc::new(Memory { final_at: Some(split), ..Memory::default() });
//! run(before, Some(first.clone()));
//! let saved = first.saved.lock().expect("not poisoned").clone();
//! let resume = || {
//!     let carried = Some((split, saved.clone()));
//!     Some(Arc::new(Memory { carried, ..Memory::default() }))
//! };
//! assert_eq!(run(after.clone(), resume()), whole);
//! // Without what the first part carried, the second part alone finds less.
//! assert_ne!(run(after, None), whole);
//! // Readings before the carried time, as a replay from an earlier position sends them, are
//! // skipped: the state holds them already, and they are not counted twice.
//! assert_eq!(run(points, resume()), whole);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::guards::snapshot::SnapshotStore;

/// The format of a carried state.
const VERSION: u32 = 1;

/// Saves this worker's `state` of `operator` at the store's final time, if there is one.
pub(crate) fn save_final<S: Serialize>(
    store: &dyn SnapshotStore,
    operator: &str,
    (index, peers): (usize, usize),
    state: &S,
) {
    let Some(at) = store.final_at() else { return };
    match bincode::serialize(&(VERSION, at, state)) {
        Ok(bytes) => store.save(operator, index, peers, at, bytes),
        Err(error) => store.restore_failed(operator, &format!("unencodable state: {error}")),
    }
}

/// Every worker's saved state of `operator` and the time it was saved at, if the store has
/// one; a state that cannot be read is reported to the store and none is used.
pub(crate) fn restore_all<S: DeserializeOwned>(
    store: &dyn SnapshotStore,
    operator: &str,
) -> Option<(u64, Vec<S>)> {
    let (at, blobs) = store.restore(operator)?;
    let mut states = Vec::with_capacity(blobs.len());
    for bytes in blobs {
        match bincode::deserialize::<(u32, u64, S)>(&bytes) {
            Ok((VERSION, saved_at, state)) if saved_at == at => states.push(state),
            Ok((version, saved_at, _)) => {
                let error =
                    format!("format {version} taken at {saved_at}, expected {VERSION} at {at}");
                store.restore_failed(operator, &error);
                return None;
            }
            Err(error) => {
                store.restore_failed(operator, &format!("undecodable state: {error}"));
                return None;
            }
        }
    }
    Some((at, states))
}

/// Whether timely's exchange routes `hash` to worker `index` of `peers`.
pub(crate) fn routes_to(hash: u64, (index, peers): (usize, usize)) -> bool {
    hash % peers.max(1) as u64 == index as u64
}
