//! The robust guard: a reading far from the median of the previous `window` readings, in
//! units of their median absolute deviation (MAD), which a few outliers cannot drag along.

use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::guards::zscore::is_degenerate_std;
use crate::model::SeriesReading;

/// Scales a MAD to a standard deviation for normally distributed data.
pub const MAD_TO_STD: f64 = 1.4826;

/// Parameters of the robust (median/MAD) guard.
///
/// # Examples
/// One wild outlier in the window inflates the standard deviation, so the z-score guard
/// misses the next anomaly; the median and MAD barely move, so this guard does not.
/// ```
/// use vigil_operators::{Mad, SeriesReading, Reading, SeriesLogic, ZScore};
///
/// fn last_score<L: SeriesLogic>(guard: &L, points: &[SeriesReading]) -> Option<f64> {
///     let mut state = L::State::default();
///     points.iter().filter_map(|p| guard.observe(&mut state, p)).last().map(|v| v.score)
/// }
///
/// let values = [10.0, 11.0, 10.0, 11.0, 10.0, 1000.0, 11.0, 10.0, 11.0, 10.0, 20.0];
/// let points: Vec<SeriesReading> = (0..)
///     .zip(values)
///     .map(|(i, v)| SeriesReading::from(&Reading::new("veh-1", "temp_c", i * 1_000, v)))
///     .collect();
/// let robust = last_score(&Mad { window: 10, ..Mad::default() }, &points).expect("judged");
/// let zscore = last_score(&ZScore::new(10, 6.0), &points).expect("judged");
/// assert!(robust > 0.5 && zscore < 0.5, "robust {robust}, zscore {zscore}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mad {
    /// How many previous readings the median and MAD are taken over.
    pub window: usize,
    /// Raise at this many robust deviations (MAD × 1.4826) from the median.
    pub threshold: f64,
    /// Clear below this many robust deviations.
    pub clear: f64,
}

impl Default for Mad {
    fn default() -> Self {
        Self {
            window: 60,
            threshold: 6.0,
            clear: 3.0,
        }
    }
}

/// A sliding window of values kept both in arrival order and sorted, so that the median and
/// the MAD come without sorting per reading.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SortedWindow {
    ring: Vec<f64>,
    sorted: Vec<f64>,
    head: usize,
}

impl SortedWindow {
    /// Adds `x`, dropping the oldest value once `capacity` values are held. A full window
    /// moves only the values between the old one's place and the new one's, once.
    pub fn push(&mut self, x: f64, capacity: usize) {
        let at = self.sorted.partition_point(|v| v.total_cmp(&x).is_lt());
        if self.ring.len() < capacity {
            if self.ring.is_empty() {
                self.ring.reserve_exact(capacity);
                self.sorted.reserve_exact(capacity);
            }
            self.ring.push(x);
            self.sorted.insert(at, x);
            return;
        }
        let old = std::mem::replace(&mut self.ring[self.head], x);
        self.head = (self.head + 1) % capacity;
        let gone = self.sorted.partition_point(|v| v.total_cmp(&old).is_lt());
        if gone < at {
            self.sorted.copy_within(gone + 1..at, gone);
            self.sorted[at - 1] = x;
        } else {
            self.sorted.copy_within(at..gone, at + 1);
            self.sorted[at] = x;
        }
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether no values are held.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The median of the values held.
    pub fn median(&self) -> f64 {
        let n = self.sorted.len();
        match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => self.sorted[n / 2],
            _ => (self.sorted[n / 2 - 1] + self.sorted[n / 2]) / 2.0,
        }
    }

    /// The median absolute deviation from `center`. The deviations below the center, read
    /// from the center outward, and those above it are two ascending sequences; the middle of
    /// their union is found by binary search in O(log n), without building either.
    pub fn mad(&self, center: f64) -> f64 {
        let s = &self.sorted;
        let n = s.len();
        if n == 0 {
            return f64::NAN;
        }
        // s[..split] lie below the center, s[split..] at or above it.
        let split = s.partition_point(|v| *v < center);
        let (below, above) = s.split_at(split);
        let (kth, next) = kth_of_two(below, above, center, (n - 1) / 2);
        if n % 2 == 1 { kth } else { (kth + next) / 2.0 }
    }

    /// The mean absolute deviation from `center`.
    pub fn mean_abs_dev(&self, center: f64) -> f64 {
        let n = self.sorted.len().max(1) as f64;
        self.sorted.iter().map(|v| (v - center).abs()).sum::<f64>() / n
    }

    /// A robust spread: MAD × 1.4826, or, when more than half the values are equal (MAD = 0),
    /// the mean absolute deviation × 1.2533 (both estimate σ for normal data).
    pub fn robust_std(&self, center: f64) -> f64 {
        let mad = self.mad(center);
        if mad > 0.0 {
            mad * MAD_TO_STD
        } else {
            self.mean_abs_dev(center) * 1.2533
        }
    }

    /// How far `x` is from the median in robust deviations, and the median; 0 when the
    /// spread is degenerate (a constant window).
    pub fn robust_distance(&self, x: f64) -> (f64, f64) {
        let median = self.median();
        let spread = self.robust_std(median);
        if is_degenerate_std(spread, median) {
            (0.0, median)
        } else {
            ((x - median).abs() / spread, median)
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        (self.ring.capacity() + self.sorted.capacity()) * std::mem::size_of::<f64>()
    }
}

/// The `k`-th and `k+1`-th smallest (0-based) deviations from `center` of the values `below`
/// it (ascending, so their deviations ascend read backwards) and `above` it: a binary search
/// over how many of the first `k + 1` come from below. With `k + 1` values in all, the
/// `k+1`-th is `NaN`.
fn kth_of_two(below: &[f64], above: &[f64], center: f64, k: usize) -> (f64, f64) {
    let (m, n) = (below.len(), above.len());
    let a = |i: usize| center - below[m - 1 - i];
    let b = |i: usize| above[i] - center;
    // Take i from below and k + 1 - i from above; find the smallest i with a(i) ≥ b(k - i).
    let (lo, hi) = ((k + 1).saturating_sub(n), (k + 1).min(m));
    // A branch-free binary search: on random data a branch here is mispredicted half the time.
    let (mut base, mut len) = (lo, hi - lo);
    while len > 0 {
        let half = len / 2;
        let i = base + half;
        // base ≤ i < hi keeps i < m, i ≤ k and k - i < n, so both reads are in range.
        let less = a(i) < b(k - i);
        base = if less { i + 1 } else { base };
        len = if less { len - half - 1 } else { half };
    }
    let i = base;
    let last_a = if i > 0 { a(i - 1) } else { f64::NEG_INFINITY };
    let last_b = if k + 1 > i {
        b(k - i)
    } else {
        f64::NEG_INFINITY
    };
    let next_a = if i < m { a(i) } else { f64::INFINITY };
    let next_b = if k + 1 - i < n {
        b(k + 1 - i)
    } else {
        f64::INFINITY
    };
    let next = next_a.min(next_b);
    (
        last_a.max(last_b),
        if next.is_finite() { next } else { f64::NAN },
    )
}

/// The robust guard's memory of one series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MadState {
    window: SortedWindow,
    first_ts: i64,
}

impl SeriesLogic for Mad {
    type State = MadState;

    fn observe(&self, state: &mut MadState, reading: &SeriesReading) -> Option<Verdict> {
        if state.window.is_empty() {
            state.first_ts = reading.ts;
        }
        let verdict = (state.window.len() >= self.window).then(|| {
            let (d, median) = state.window.robust_distance(reading.value);
            Verdict {
                score: distance_score(d, self.threshold),
                observed: reading.value,
                expected: median,
                window_start: state.first_ts,
                window_end: reading.ts,
            }
        });
        state.window.push(reading.value, self.window.max(1));
        verdict
    }

    fn hysteresis(&self) -> Hysteresis {
        hysteresis_for(self.threshold, self.clear)
    }

    fn state_bytes(&self, state: &MadState) -> usize {
        std::mem::size_of::<MadState>() + state.window.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_mad_match_sorting() {
        let mut w = SortedWindow::default();
        let values = [
            5.0, 1.0, 9.0, 3.0, 3.0, 7.0, 2.0, 8.0, 100.0, -4.0, 3.0, 6.0,
        ];
        for (i, &x) in values.iter().enumerate() {
            w.push(x, 5);
            let start = (i + 1).saturating_sub(5);
            let mut held: Vec<f64> = values[start..=i].to_vec();
            held.sort_by(f64::total_cmp);
            let n = held.len();
            let median = if n % 2 == 1 {
                held[n / 2]
            } else {
                (held[n / 2 - 1] + held[n / 2]) / 2.0
            };
            let mut dev: Vec<f64> = held.iter().map(|v| (v - median).abs()).collect();
            dev.sort_by(f64::total_cmp);
            let mad = if n % 2 == 1 {
                dev[n / 2]
            } else {
                (dev[n / 2 - 1] + dev[n / 2]) / 2.0
            };
            assert_eq!(w.median(), median, "after {i}");
            assert_eq!(w.mad(median), mad, "after {i}");
        }
    }
}
