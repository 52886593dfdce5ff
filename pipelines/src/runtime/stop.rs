//! The stop a job watches for: asked once by a signal, it finishes what it has read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A flag that asks a running job to stop reading and finish what it has.
#[derive(Clone, Debug, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Asks the job to stop.
    pub fn trigger(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for a job that watches an `AtomicBool` (the sync job's rounds).
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }
}
