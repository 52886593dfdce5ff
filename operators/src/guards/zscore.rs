//! The z-score guard: a reading far from the mean of the series' previous `window` readings.

use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::model::SeriesReading;

/// Parameters of the z-score guard.
///
/// # Examples
/// ```
/// use vigil_operators::{SeriesReading, Reading, SeriesLogic, ZScore, ZScoreState};
///
/// let guard = ZScore::new(4, 6.0);
/// let mut state = ZScoreState::default();
/// let mut judge = |ts: i64, value: f64| {
///     let point = SeriesReading::from(&Reading::new("veh-1", "temp_c", ts, value));
///     guard.observe(&mut state, &point)
/// };
/// // No opinion until the window holds four readings; then 10 ± 1 is usual, 30 is not.
/// for (ts, value) in [(0, 9.0), (1_000, 11.0), (2_000, 9.0), (3_000, 11.0)] {
///     assert_eq!(judge(ts, value), None);
/// }
/// let spike = judge(4_000, 30.0).expect("the window is full");
/// assert_eq!((spike.expected, spike.observed, spike.window_start), (10.0, 30.0, 0));
/// assert!(spike.score > 0.5); // 20 deviations, past the threshold of 6
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ZScore {
    /// How many previous readings the mean and standard deviation are taken over.
    pub window: usize,
    /// Raise when `|value - mean| / std` reaches this.
    pub threshold: f64,
    /// Clear when `|value - mean| / std` falls below this (at most `threshold`).
    pub clear: f64,
}

impl Default for ZScore {
    fn default() -> Self {
        Self::new(60, 6.0)
    }
}

impl ZScore {
    /// A z-score guard over `window` previous readings raising at `threshold` deviations and
    /// clearing below half of it.
    pub fn new(window: usize, threshold: f64) -> Self {
        Self {
            window: window.max(1),
            threshold,
            clear: threshold / 2.0,
        }
    }

    /// Sets the level (in deviations) below which an open alert clears.
    pub fn clear_below(mut self, clear: f64) -> Self {
        self.clear = clear.min(self.threshold);
        self
    }
}

/// Whether a standard deviation is too small to divide by: zero up to rounding error, so that
/// a constant series (std = 0) never alerts.
///
/// # Examples
/// ```
/// use vigil_operators::is_degenerate_std;
/// assert!(is_degenerate_std(0.0, 5.0));
/// assert!(!is_degenerate_std(0.1, 5.0));
/// ```
pub fn is_degenerate_std(std: f64, mean: f64) -> bool {
    std <= 1e-9 * mean.abs().max(1.0)
}

/// The z-score guard's memory of one series: a ring of the last `window` readings and their
/// sums, kept relative to a shift near the mean so that the variance does not cancel out.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ZScoreState {
    values: Vec<f64>,
    /// Event times as offsets from `base` (ms), which keeps the window small.
    times: Vec<u32>,
    base: i64,
    /// Index of the oldest reading once the ring is full.
    head: usize,
    shift: f64,
    sum: f64,
    sum_sq: f64,
    /// Readings added since the sums were last recomputed exactly.
    since_exact: usize,
}

impl ZScoreState {
    /// The offset of `ts` from the base. Readings come in event-time order, so offsets only
    /// grow; when one would not fit, the base moves up to the oldest time in the window. A
    /// window spanning more than 49 days keeps its times to that span.
    fn offset(&mut self, ts: i64) -> u32 {
        let far = ts.saturating_sub(self.base);
        if far <= i64::from(u32::MAX) {
            return far.max(0) as u32;
        }
        let shift = self.times.iter().copied().min().unwrap_or(0);
        for t in &mut self.times {
            *t -= shift;
        }
        self.base += i64::from(shift);
        ts.saturating_sub(self.base).clamp(0, i64::from(u32::MAX)) as u32
    }

    fn recompute(&mut self) {
        let n = self.values.len() as f64;
        self.shift = self.values.iter().sum::<f64>() / n;
        let shift = self.shift;
        self.sum = self.values.iter().map(|v| v - shift).sum();
        self.sum_sq = self.values.iter().map(|v| (v - shift) * (v - shift)).sum();
        self.since_exact = 0;
    }
}

impl SeriesLogic for ZScore {
    type State = ZScoreState;

    fn observe(&self, state: &mut ZScoreState, reading: &SeriesReading) -> Option<Verdict> {
        let value = reading.value;
        let verdict = if state.values.len() == self.window {
            let n = self.window as f64;
            let mean_shifted = state.sum / n;
            let variance = (state.sum_sq / n - mean_shifted * mean_shifted).max(0.0);
            let mut mean = state.shift + mean_shifted;
            let mut std = variance.sqrt();
            // Running sums cannot tell a constant window from one with a rounding error's worth
            // of spread; near zero, take the exact two-pass figures so std = 0 stays exactly 0.
            if std <= 1e-6 * mean.abs().max(1.0) {
                mean = state.values.iter().sum::<f64>() / n;
                std = (state
                    .values
                    .iter()
                    .map(|v| (v - mean) * (v - mean))
                    .sum::<f64>()
                    / n)
                    .sqrt();
            }
            let z = if is_degenerate_std(std, mean) {
                0.0
            } else {
                (value - mean).abs() / std
            };
            Some(Verdict {
                score: distance_score(z, self.threshold),
                observed: value,
                expected: mean,
                window_start: state.base + i64::from(state.times[state.head]),
                window_end: reading.ts,
            })
        } else {
            None
        };

        // The current reading joins the window only after it has been judged.
        if state.values.len() < self.window {
            if state.values.is_empty() {
                state.values.reserve_exact(self.window);
                state.times.reserve_exact(self.window);
                state.base = reading.ts;
                state.shift = value;
            }
            state.values.push(value);
            let offset = state.offset(reading.ts);
            state.times.push(offset);
            state.sum += value - state.shift;
            state.sum_sq += (value - state.shift) * (value - state.shift);
        } else {
            let old = state.values[state.head];
            state.values[state.head] = value;
            // The oldest time leaves the window first, so it does not hold the base back.
            state.times[state.head] = u32::MAX;
            let offset = state.offset(reading.ts);
            state.times[state.head] = offset;
            state.head = (state.head + 1) % self.window;
            let (o, v) = (old - state.shift, value - state.shift);
            state.sum += v - o;
            state.sum_sq += v * v - o * o;
        }
        state.since_exact += 1;
        if state.since_exact >= self.window {
            state.recompute();
        }
        verdict
    }

    fn hysteresis(&self) -> Hysteresis {
        hysteresis_for(self.threshold, self.clear)
    }

    fn state_bytes(&self, state: &ZScoreState) -> usize {
        std::mem::size_of::<ZScoreState>()
            + state.values.capacity() * std::mem::size_of::<f64>()
            + state.times.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Reading, SeriesReading};

    #[test]
    fn window_start_survives_long_gaps() {
        // Readings 20 days apart: a window of three spans 40 days, past what a u32 of
        // milliseconds from the first reading can hold, so the base has to move.
        let day = 86_400_000i64;
        let guard = ZScore::new(3, 6.0);
        let mut state = ZScoreState::default();
        for i in 0..10i64 {
            let point = SeriesReading::from(&Reading::new("s", "n", i * 20 * day, (i % 3) as f64));
            if let Some(verdict) = guard.observe(&mut state, &point) {
                assert_eq!(verdict.window_start, (i - 3) * 20 * day, "reading {i}");
            }
        }
    }
}
