//! The silence guard: a series that stops reporting for longer than `factor` times its usual
//! interval raises `silence`; the alert clears when data returns. Driven by event time and
//! the watermark: the alert's time is the moment the series became overdue, so a backfill
//! gives the same alerts as a live run.

use crate::guards::series_guard::{SeriesLogic, Verdict};
use crate::model::SeriesReading;

/// Parameters of the silence guard.
///
/// # Examples
/// A reading every second, then none for a minute: the alert is raised at the moment five
/// usual intervals had passed, and cleared when data returns.
/// ```
/// use vigil_operators::{AlertStatus, Guard, GuardLabel, SeriesReading, Reading, Silence};
///
/// let mut points: Vec<SeriesReading> = (0..10)
///     .map(|i| SeriesReading::from(&Reading::new("veh-1", "temp_c", i * 1_000, 20.0)))
///     .collect();
/// points.push(SeriesReading::from(&Reading::new("veh-1", "temp_c", 70_000, 20.0)));
/// let alerts = Guard::new(GuardLabel::new("silence"), Silence::default()).replay(&points);
/// let seen: Vec<_> = alerts.iter().map(|a| (a.status, a.ts)).collect();
/// assert_eq!(seen, [(AlertStatus::Raised, 14_000), (AlertStatus::Cleared, 70_000)]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Silence {
    /// How many usual intervals without a reading make a series silent.
    pub factor: f64,
    /// Silence shorter than this never counts, however fast the series usually reports.
    pub min_ms: i64,
    /// Intervals seen before the usual interval is trusted.
    pub warmup: u32,
    /// Weight of the newest interval in the usual interval.
    pub alpha: f64,
}

impl Default for Silence {
    fn default() -> Self {
        Self {
            factor: 5.0,
            min_ms: 1_000,
            warmup: 5,
            alpha: 0.1,
        }
    }
}

/// The silence guard's memory of one series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SilenceState {
    last_ts: Option<i64>,
    /// The usual interval between readings, ms (exponentially weighted).
    interval: f64,
    intervals: u32,
    silent: bool,
}

impl SeriesLogic for Silence {
    type State = SilenceState;

    const WATCHES_TIME: bool = true;

    fn observe(&self, state: &mut SilenceState, reading: &SeriesReading) -> Option<Verdict> {
        let previous = state.last_ts;
        if let Some(last) = previous {
            let gap = (reading.ts - last) as f64;
            if gap > 0.0 {
                state.interval = if state.intervals == 0 {
                    gap
                } else {
                    state.interval + self.alpha * (gap - state.interval)
                };
                state.intervals = state.intervals.saturating_add(1);
            }
        }
        state.last_ts = Some(previous.map_or(reading.ts, |l| l.max(reading.ts)));
        // Data is back: the silence is over.
        std::mem::take(&mut state.silent).then(|| Verdict {
            score: 0.0,
            observed: previous.map_or(0.0, |l| (reading.ts - l) as f64 / 1000.0),
            expected: state.interval / 1000.0,
            window_start: previous.unwrap_or(reading.ts),
            window_end: reading.ts,
        })
    }

    fn due(&self, state: &SilenceState) -> Option<i64> {
        if state.silent || state.intervals < self.warmup {
            return None;
        }
        let wait = (state.interval * self.factor).max(self.min_ms as f64);
        Some(state.last_ts?.saturating_add(wait.ceil() as i64))
    }

    fn overdue(&self, state: &mut SilenceState, due: i64) -> Option<Verdict> {
        let last = state.last_ts?;
        state.silent = true;
        Some(Verdict {
            score: 1.0,
            observed: (due - last) as f64 / 1000.0,
            expected: state.interval / 1000.0,
            window_start: last,
            window_end: due,
        })
    }
}
