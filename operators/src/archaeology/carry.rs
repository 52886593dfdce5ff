//! Carrying an archaeology operator's state from the end of one run to the start of the next,
//! so that a backfill in parts finds what one run over the whole would.
//!
//! At the end of its input an operator saves its state at the store's final time; the next
//! run's operators load what every worker saved, keep the part that routes to them, and skip
//! readings before that time, which the state already holds.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::guards::checkpoint::SnapshotStore;

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
