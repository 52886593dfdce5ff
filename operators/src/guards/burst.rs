//! The burst guard (security): more than `limit` events of one kind from a source within a
//! window of event time, e.g. failed authentications (`AUTH_FAILURE`), or the records vigil
//! itself found late or malformed (`vigil.late`, `vigil.schema`). Run per source
//! ([`crate::SeriesGuard::guards_by_source`]).

use std::collections::VecDeque;

use compact_str::CompactString;

use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::model::SeriesReading;

/// The prefix of the names of vigil's own events about a source or input.
pub const VIGIL_EVENT_PREFIX: &str = "vigil.";

/// The event name of a record vigil found later than the allowed lateness.
pub const LATE_EVENT: &str = "vigil.late";

/// The event name of a record vigil could not read (malformed or mistyped).
pub const SCHEMA_EVENT: &str = "vigil.schema";

/// Parameters of a burst guard.
///
/// # Examples
/// Six failed authentications within a minute are more than the five allowed: the alert is
/// raised at the sixth, and cleared once the minute has moved past them.
/// ```
/// use vigil_operators::{AlertStatus, Burst, Guard, GuardLabel, SeriesReading, Reading};
///
/// let mut points: Vec<SeriesReading> = (0..6)
///     .map(|i| SeriesReading::from(&Reading::new("veh-1", "AUTH_FAILURE", i * 1_000, 1.0)))
///     .collect();
/// points.push(SeriesReading::from(&Reading::new("veh-1", "AUTH_FAILURE", 120_000, 1.0)));
/// let alerts = Guard::new(GuardLabel::new("burst"), Burst::auth_failures()).replay(&points);
/// let seen: Vec<_> = alerts.iter().map(|a| (a.status, a.ts, a.observed)).collect();
/// assert_eq!(
///     seen,
///     [(AlertStatus::Raised, 5_000, 6.0), (AlertStatus::Cleared, 120_000, 1.0)]
/// );
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Burst {
    /// The event name counted.
    pub event: CompactString,
    /// The window, ms of event time.
    pub window_ms: i64,
    /// Raise when more than this many events fall in the window.
    pub limit: u32,
    /// Clear when at most this many do (at most `limit`).
    pub clear: u32,
}

impl Burst {
    /// Failed authentications: more than 5 `AUTH_FAILURE` events within a minute.
    pub fn auth_failures() -> Self {
        Self {
            event: "AUTH_FAILURE".into(),
            window_ms: 60_000,
            limit: 5,
            clear: 2,
        }
    }

    /// Any record later than the allowed lateness within ten minutes.
    pub fn late_records() -> Self {
        Self {
            event: LATE_EVENT.into(),
            window_ms: 600_000,
            limit: 0,
            clear: 0,
        }
    }

    /// Any malformed record within ten minutes.
    pub fn schema_violations() -> Self {
        Self {
            event: SCHEMA_EVENT.into(),
            ..Self::late_records()
        }
    }
}

/// A burst guard's memory of one source: the times of its recent events.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BurstState {
    times: VecDeque<i64>,
}

impl SeriesLogic for Burst {
    type State = BurstState;

    fn observe(&self, state: &mut BurstState, reading: &SeriesReading) -> Option<Verdict> {
        let counted = reading.name == self.event;
        if counted {
            state.times.push_back(reading.ts);
        }
        while state
            .times
            .front()
            .is_some_and(|t| *t <= reading.ts - self.window_ms)
        {
            state.times.pop_front();
        }
        if !counted && state.times.is_empty() {
            return None;
        }
        let count = state.times.len() as f64;
        Some(Verdict {
            score: distance_score(count, f64::from(self.limit) + 0.5),
            observed: count,
            expected: f64::from(self.limit),
            window_start: state.times.front().copied().unwrap_or(reading.ts),
            window_end: reading.ts,
        })
    }

    fn hysteresis(&self) -> Hysteresis {
        hysteresis_for(
            f64::from(self.limit) + 0.5,
            f64::from(self.clear.min(self.limit)) + 0.5,
        )
    }

    fn state_bytes(&self, state: &BurstState) -> usize {
        std::mem::size_of::<BurstState>() + state.times.capacity() * std::mem::size_of::<i64>()
    }
}
