//! The seasonal guard: a reading far from what the series usually does at this phase of its
//! period (by default the time of day), judged against the spread seen at that phase.

use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::guards::zscore::is_degenerate_std;
use crate::model::SeriesReading;

/// Parameters of the seasonal guard.
///
/// # Examples
/// A series that goes 0, 10, 20, 10 in every period of 4 s: after ten periods, 20 is usual
/// at the third phase and far out at the first.
/// ```
/// use vigil_operators::guards::seasonal::SeasonalState;
/// use vigil_operators::{SeriesReading, Reading, Seasonal, SeriesLogic};
///
/// let guard = Seasonal { period_ms: 4_000, buckets: 4, ..Seasonal::default() };
/// let mut state = SeasonalState::default();
/// let mut judge = |ts: i64, value: f64| {
///     let point = SeriesReading::from(&Reading::new("veh-1", "load", ts, value));
///     guard.observe(&mut state, &point)
/// };
/// for i in 0..40 {
///     let noise = if (i / 4) % 2 == 0 { 0.5 } else { -0.5 };
///     judge(i * 1_000, [0.0, 10.0, 20.0, 10.0][i as usize % 4] + noise);
/// }
/// let first_phase = judge(40_000, 20.0).expect("two periods seen");
/// let third_phase = judge(42_000, 20.0).expect("two periods seen");
/// assert!(first_phase.score > 0.5 && first_phase.expected.abs() < 1.0);
/// assert!(third_phase.score < 0.5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seasonal {
    /// The period in milliseconds (a day by default).
    pub period_ms: i64,
    /// Phases the period is cut into; each keeps its own mean and spread.
    pub buckets: u32,
    /// Weight of the newest reading in its phase's mean and variance.
    pub alpha: f64,
    /// Raise at this many deviations from the phase's mean.
    pub threshold: f64,
    /// Clear below this many deviations.
    pub clear: f64,
}

impl Default for Seasonal {
    fn default() -> Self {
        Self {
            period_ms: 86_400_000,
            buckets: 24,
            alpha: 0.1,
            threshold: 6.0,
            clear: 3.0,
        }
    }
}

/// One phase of the period: an exponentially weighted mean and variance, in `f32` to keep the
/// state small.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Phase {
    mean: f32,
    var: f32,
    n: u32,
}

/// The seasonal guard's memory of one series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct SeasonalState {
    phases: Vec<Phase>,
    /// Exponentially weighted mean square of the residuals over all phases: a floor for the
    /// spread of a phase that happens to have been flat.
    residual_sq: f64,
    first_ts: Option<i64>,
}

impl SeasonalState {
    /// Heap bytes held (the phases).
    pub fn heap_bytes(&self) -> usize {
        self.phases.capacity() * std::mem::size_of::<Phase>()
    }
}

impl Seasonal {
    fn phase(&self, ts: i64) -> usize {
        let period = self.period_ms.max(1);
        let width = (period / i64::from(self.buckets.max(1))).max(1);
        (ts.rem_euclid(period) / width).min(i64::from(self.buckets.max(1)) - 1) as usize
    }

    /// Judges `value` at `ts` against its phase and folds it in: (deviations, phase mean), or
    /// `None` until two whole periods have been seen.
    pub fn step(&self, state: &mut SeasonalState, ts: i64, value: f64) -> Option<(f64, f64)> {
        if state.phases.is_empty() {
            state.phases = vec![Phase::default(); self.buckets.max(1) as usize];
        }
        let first = *state.first_ts.get_or_insert(ts);
        let phase = &mut state.phases[self.phase(ts)];
        let mean = f64::from(phase.mean);
        let out = (ts - first >= 2 * self.period_ms && phase.n >= 2).then(|| {
            let spread = f64::from(phase.var)
                .max(0.0)
                .sqrt()
                .max(0.25 * state.residual_sq.sqrt());
            let d = if is_degenerate_std(spread, mean) {
                0.0
            } else {
                (value - mean).abs() / spread
            };
            (d, mean)
        });
        // EwmaStats::update, kept in f32 to keep the phases small.
        if phase.n == 0 {
            phase.mean = value as f32;
        } else {
            let diff = value - mean;
            state.residual_sq += self.alpha * 0.1 * (diff * diff - state.residual_sq);
            let incr = self.alpha * diff;
            phase.mean = (mean + incr) as f32;
            phase.var = ((1.0 - self.alpha) * (f64::from(phase.var) + diff * incr)) as f32;
        }
        phase.n = phase.n.saturating_add(1);
        out
    }
}

impl SeriesLogic for Seasonal {
    type State = SeasonalState;

    fn observe(&self, state: &mut SeasonalState, reading: &SeriesReading) -> Option<Verdict> {
        let (d, expected) = self.step(state, reading.ts, reading.value)?;
        Some(Verdict {
            score: distance_score(d, self.threshold),
            observed: reading.value,
            expected,
            window_start: reading.ts - self.period_ms,
            window_end: reading.ts,
        })
    }

    fn hysteresis(&self) -> Hysteresis {
        hysteresis_for(self.threshold, self.clear)
    }

    fn state_bytes(&self, state: &SeasonalState) -> usize {
        std::mem::size_of::<SeasonalState>() + state.heap_bytes()
    }
}
