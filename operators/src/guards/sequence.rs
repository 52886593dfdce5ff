//! The sequence guard (security): per source, sequence numbers that skip (a gap: records were
//! lost or withheld) or repeat or go back (a replay). Run per source
//! ([`crate::SeriesGuard::guards_by_source`]): the readings of one `seq` may span several
//! names (all metrics of one tick), and only the same name twice at one `seq` is a duplicate.

use compact_str::CompactString;

use crate::guards::series_guard::{SeriesLogic, Verdict};
use crate::model::SeriesReading;

/// Parameters of the sequence guard.
///
/// # Examples
/// ```
/// use vigil_operators::guards::sequence::SequenceState;
/// use vigil_operators::{SeriesReading, Reading, Sequence, SeriesLogic};
///
/// let guard = Sequence { max_gap: 0 };
/// let mut state = SequenceState::default();
/// let mut score = |name: &str, seq: u64| {
///     let reading = Reading::new("veh-1", name, seq as i64 * 1_000, 1.0).with_seq(seq);
///     guard.observe(&mut state, &SeriesReading::from(&reading)).map(|v| v.score)
/// };
/// assert_eq!(score("temp_c", 1), Some(0.0));
/// assert_eq!(score("rpm", 1), Some(0.0)); // another metric of the same tick
/// assert_eq!(score("temp_c", 2), Some(0.0));
/// assert_eq!(score("temp_c", 4), Some(1.0)); // 3 is missing: a gap
/// assert_eq!(score("temp_c", 4), Some(1.0)); // the same record again: a replay
/// assert_eq!(score("temp_c", 2), Some(1.0)); // going back: a replay
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sequence {
    /// Missing sequence numbers tolerated between two records before it is a gap.
    pub max_gap: u64,
}

/// The sequence guard's memory of one source.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SequenceState {
    /// The highest sequence number seen.
    last: Option<u64>,
    /// The names seen at `last`, to tell a duplicate from another metric of the same tick.
    names: Vec<CompactString>,
}

impl SeriesLogic for Sequence {
    type State = SequenceState;

    fn observe(&self, state: &mut SequenceState, reading: &SeriesReading) -> Option<Verdict> {
        let seq = reading.seq?;
        let verdict = |score: f64, expected: f64| Verdict {
            score,
            observed: seq as f64,
            expected,
            window_start: reading.ts,
            window_end: reading.ts,
        };
        let Some(last) = state.last else {
            state.last = Some(seq);
            state.names = vec![reading.name.clone()];
            return Some(verdict(0.0, seq as f64));
        };
        let expected = last.saturating_add(1) as f64;
        Some(if seq == last {
            if state.names.contains(&reading.name) {
                // The same record again: a replay.
                verdict(1.0, expected)
            } else {
                state.names.push(reading.name.clone());
                verdict(0.0, last as f64)
            }
        } else if seq < last {
            // Going back: a replay of older records.
            verdict(1.0, expected)
        } else {
            state.last = Some(seq);
            state.names.clear();
            state.names.push(reading.name.clone());
            let missing = seq - last - 1;
            verdict(if missing > self.max_gap { 1.0 } else { 0.0 }, expected)
        })
    }

    fn state_bytes(&self, state: &SequenceState) -> usize {
        std::mem::size_of::<SequenceState>()
            + state.names.capacity() * std::mem::size_of::<CompactString>()
    }
}
