//! The EWMA guard: a reading far from the series' exponentially weighted mean, in units of its
//! exponentially weighted standard deviation.

use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::guards::zscore::is_degenerate_std;
use crate::model::SeriesReading;

/// Parameters of the EWMA guard.
///
/// # Examples
/// ```
/// use vigil_operators::guards::ewma::EwmaState;
/// use vigil_operators::{Ewma, SeriesReading, Reading, SeriesLogic};
///
/// let guard = Ewma { warmup: 10, ..Ewma::default() };
/// let mut state = EwmaState::default();
/// let mut judge = |i: i64, value: f64| {
///     let point = SeriesReading::from(&Reading::new("veh-1", "temp_c", i * 1_000, value));
///     guard.observe(&mut state, &point)
/// };
/// // No opinion while warming up; then a reading near 20 is usual and a jump to 40 is not.
/// for i in 0..10 {
///     assert_eq!(judge(i, 20.0 + (i % 2) as f64), None);
/// }
/// assert!(judge(10, 20.5).expect("warmed up").score < 0.5);
/// let jump = judge(11, 40.0).expect("warmed up");
/// assert!(jump.score > 0.5 && jump.expected < 21.0);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ewma {
    /// Weight of the newest reading in the mean and variance (0 < alpha ≤ 1); `2 / (span + 1)`
    /// for a span of `span` readings.
    pub alpha: f64,
    /// Readings seen before the guard gives an opinion.
    pub warmup: u32,
    /// Raise at this many deviations from the mean.
    pub threshold: f64,
    /// Clear below this many deviations.
    pub clear: f64,
}

impl Default for Ewma {
    fn default() -> Self {
        Self {
            alpha: 2.0 / 61.0,
            warmup: 30,
            threshold: 6.0,
            clear: 3.0,
        }
    }
}

/// An exponentially weighted mean and variance (West's incremental form).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EwmaStats {
    /// The weighted mean.
    pub mean: f64,
    /// The weighted variance.
    pub var: f64,
    /// Readings folded in (saturating).
    pub n: u32,
}

impl EwmaStats {
    /// Folds in `x` with weight `alpha` (the first value sets the mean).
    pub fn update(&mut self, x: f64, alpha: f64) {
        if self.n == 0 {
            self.mean = x;
            self.var = 0.0;
        } else {
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.var = (1.0 - alpha) * (self.var + diff * incr);
        }
        self.n = self.n.saturating_add(1);
    }

    /// The weighted standard deviation.
    pub fn std(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// How many deviations `x` is from the mean; 0 when the deviation is degenerate.
    pub fn deviations(&self, x: f64) -> f64 {
        let std = self.std();
        if is_degenerate_std(std, self.mean) {
            0.0
        } else {
            (x - self.mean).abs() / std
        }
    }
}

/// The EWMA guard's memory of one series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct EwmaState {
    stats: EwmaStats,
    first_ts: i64,
}

impl SeriesLogic for Ewma {
    type State = EwmaState;

    fn observe(&self, state: &mut EwmaState, reading: &SeriesReading) -> Option<Verdict> {
        if state.stats.n == 0 {
            state.first_ts = reading.ts;
        }
        let verdict = (state.stats.n >= self.warmup).then(|| Verdict {
            score: distance_score(state.stats.deviations(reading.value), self.threshold),
            observed: reading.value,
            expected: state.stats.mean,
            window_start: state.first_ts,
            window_end: reading.ts,
        });
        state.stats.update(reading.value, self.alpha);
        verdict
    }

    fn hysteresis(&self) -> Hysteresis {
        hysteresis_for(self.threshold, self.clear)
    }
}
