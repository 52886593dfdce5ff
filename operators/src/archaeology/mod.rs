//! Pattern archaeology: what keeps recurring, who moves together, which sessions happened —
//! maintained as events arrive, and the same after a backfill of the same history.

mod carry;
pub mod entanglements;
pub mod field;
pub mod motifs;
mod periodic;
pub mod sequences;
pub mod sessions;

/// The hash map of the archaeology operators' state: keys are names and pattern items, hashed
/// once per event, so the hasher's speed shows; the seed is random per map.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
