//! The level-shift guard: a two-sided CUSUM of the readings' deviations from a slow baseline,
//! which adds up a small but lasting shift that no single reading shows.

use crate::guards::ewma::EwmaStats;
use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::guards::zscore::is_degenerate_std;
use crate::model::SeriesReading;

/// Parameters of the level-shift guard.
///
/// # Examples
/// Readings 10 ± 0.5, then 11 ± 0.5: no single reading is more than three deviations out, so
/// the z-score guard sees nothing, but together they are a shift, raised once they add up.
/// ```
/// use vigil_operators::{AlertStatus, Guard, GuardLabel, LevelShift, SeriesReading, Reading, ZScore};
///
/// let points: Vec<SeriesReading> = (0..300)
///     .map(|i| {
///         let level = if i < 200 { 10.0 } else { 11.0 };
///         let noise = if i % 2 == 0 { 0.5 } else { -0.5 };
///         SeriesReading::from(&Reading::new("veh-1", "temp_c", i * 1_000, level + noise))
///     })
///     .collect();
/// let zscore = Guard::new(GuardLabel::new("zscore"), ZScore::default()).replay(&points);
/// assert!(zscore.is_empty());
/// let shift = Guard::new(GuardLabel::new("level_shift"), LevelShift::default());
/// let raised: Vec<i64> = shift
///     .replay(&points)
///     .iter()
///     .filter(|a| a.status == AlertStatus::Raised)
///     .map(|a| a.ts)
///     .collect();
/// assert_eq!(raised.len(), 1);
/// // Not at the first shifted reading: it took several to add up.
/// assert!(raised[0] > 205_000, "raised at {}", raised[0]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LevelShift {
    /// Weight of the newest reading in the baseline mean and variance.
    pub alpha: f64,
    /// Readings seen before the guard gives an opinion.
    pub warmup: u32,
    /// Deviations (in baseline standard deviations) that do not count towards a shift.
    pub drift: f64,
    /// Raise when the cumulative sum reaches this.
    pub threshold: f64,
    /// Clear below this cumulative sum.
    pub clear: f64,
}

impl Default for LevelShift {
    fn default() -> Self {
        Self {
            alpha: 2.0 / 241.0,
            warmup: 60,
            drift: 1.0,
            threshold: 12.0,
            clear: 6.0,
        }
    }
}

/// The level-shift guard's memory of one series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LevelShiftState {
    baseline: EwmaStats,
    up: f64,
    down: f64,
    since: i64,
}

impl LevelShift {
    /// Folds one reading into the CUSUM and returns the cumulative sum after it (in baseline
    /// deviations) and the baseline mean before it; `None` while warming up.
    pub fn step(&self, state: &mut LevelShiftState, value: f64) -> Option<(f64, f64)> {
        let base = state.baseline;
        let std = base.std();
        let out = if base.n >= self.warmup && !is_degenerate_std(std, base.mean) {
            let z = (value - base.mean) / std;
            state.up = (state.up + z - self.drift).max(0.0);
            state.down = (state.down - z - self.drift).max(0.0);
            Some((state.up.max(state.down), base.mean))
        } else {
            None
        };
        if let Some((sum, _)) = out
            && sum >= self.threshold
        {
            // The level has moved: start the baseline over at the new level, and hold the sum
            // that tripped at the threshold. A level that then stays put wears the sum down
            // by the drift per reading until the alert clears; a level that keeps moving the
            // same way keeps it up, so one shift, or one long trend, is one alert.
            state.baseline.mean = value;
            if state.up >= state.down {
                (state.up, state.down) = (self.threshold, 0.0);
            } else {
                (state.up, state.down) = (0.0, self.threshold);
            }
        }
        state.baseline.update(value, self.alpha);
        out
    }
}

impl SeriesLogic for LevelShift {
    type State = LevelShiftState;

    fn observe(&self, state: &mut LevelShiftState, reading: &SeriesReading) -> Option<Verdict> {
        if state.baseline.n == 0 {
            state.since = reading.ts;
        }
        let (sum, expected) = self.step(state, reading.value)?;
        Some(Verdict {
            score: distance_score(sum, self.threshold),
            observed: reading.value,
            expected,
            window_start: state.since,
            window_end: reading.ts,
        })
    }

    fn hysteresis(&self) -> Hysteresis {
        hysteresis_for(self.threshold, self.clear)
    }
}
