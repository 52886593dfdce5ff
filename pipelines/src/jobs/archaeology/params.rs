//! What the archaeology job looks for, and how: its operators' parameters and what sessions
//! are kept by.

use vigil_operators::archaeology::entanglements::EntangleParams;
use vigil_operators::archaeology::field::FieldParams;
use vigil_operators::archaeology::motifs::MotifParams;
use vigil_operators::archaeology::sequences::SequenceParams;

pub use crate::jobs::engine::feeder::SessionKey;

/// What the archaeology job looks for, and how.
#[derive(Clone, Debug, PartialEq)]
pub struct ArchaeologyParams {
    /// Sequential patterns.
    pub sequences: SequenceParams,
    /// Motifs in each reading series; `None` leaves them out.
    pub motifs: Option<MotifParams>,
    /// Entangled sources.
    pub entanglements: EntangleParams,
    /// Sessions.
    pub sessions: SessionParams,
    /// The field summary.
    pub field: FieldParams,
    /// How many patterns the end-of-run report shows.
    pub top: usize,
    /// Where sequential patterns carry their state from one run to the next (`--state`).
    pub carry: Option<std::path::PathBuf>,
}

/// Carried state files per worker: the runs in progress and the pattern counts.
pub const CARRIED_PER_WORKER: usize = 2;

impl Default for ArchaeologyParams {
    fn default() -> Self {
        Self {
            sequences: SequenceParams::default(),
            motifs: Some(MotifParams::default()),
            // Judged every minute: each judgement visits every pair that came together.
            entanglements: EntangleParams {
                every_ms: 60_000,
                ..EntangleParams::default()
            },
            sessions: SessionParams::default(),
            field: FieldParams::default(),
            top: 20,
            carry: None,
        }
    }
}

/// How sessions are formed.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionParams {
    /// A session ends after this much event time without an event of its key.
    pub gap_ms: u64,
    /// What a session is of.
    pub by: SessionKey,
}

impl Default for SessionParams {
    fn default() -> Self {
        Self {
            gap_ms: 30_000,
            by: SessionKey::Room("room".into()),
        }
    }
}
