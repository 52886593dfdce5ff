//! What the writers did, and how far each part's output is kept (in the replica or the
//! spill), for committing input positions.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// What the writers did.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Rows written to the replica (upserted or deleted).
    pub rows: AtomicU64,
    /// Transactions committed.
    pub batches: AtomicU64,
    /// Batches that went to the spill because the replica was away.
    pub spilled: AtomicU64,
    /// Batches that went to the spill because the writer was behind the workers.
    pub backlogged: AtomicU64,
    /// Batches in the spill not yet written (a gauge).
    pub backlog: std::sync::atomic::AtomicI64,
    /// Rows skipped because a previous run had written them.
    pub skipped: AtomicU64,
    /// How long each batch write took (`vigil_replica_write_seconds`).
    pub write_seconds: Option<prometheus_client::metrics::histogram::Histogram>,
}

/// How far each part's output is kept (in the replica or the spill), for committing input
/// positions.
#[derive(Debug, Default)]
pub struct ReplicaDurability {
    parts: Mutex<HashMap<String, i64>>,
    expected: usize,
}

impl ReplicaDurability {
    /// Nothing kept yet, of `expected` parts.
    pub(super) fn new(expected: usize) -> ReplicaDurability {
        ReplicaDurability {
            parts: Mutex::default(),
            expected,
        }
    }

    /// Part `part`'s output before `before` is kept.
    pub(super) fn set(&self, part: &str, before: i64) {
        if let Ok(mut parts) = self.parts.lock() {
            let at = parts.entry(part.to_owned()).or_insert(i64::MIN);
            *at = (*at).max(before);
        }
    }

    /// The event time before which every part's output is kept; `None` until every part has
    /// reported once.
    pub fn durable_before(&self) -> Option<i64> {
        let parts = self.parts.lock().ok()?;
        (parts.len() >= self.expected).then(|| parts.values().copied().min().unwrap_or(i64::MIN))
    }
}
