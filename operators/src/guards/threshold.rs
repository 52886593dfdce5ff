//! The threshold guard: fixed lower and upper bounds per metric name.

use std::collections::HashMap;

use compact_str::CompactString;

use crate::guards::series_guard::{SeriesLogic, Verdict};
use crate::model::SeriesReading;

/// Lower and upper bounds per metric name; a metric without bounds is not watched.
///
/// # Examples
/// ```
/// use vigil_operators::{SeriesReading, Reading, SeriesLogic, Threshold};
///
/// let guard = Threshold::new().bound("temp_c", Some(-10.0), Some(90.0));
/// let judge = |name: &str, value: f64| {
///     let point = SeriesReading::from(&Reading::new("veh-1", name, 1_000, value));
///     guard.observe(&mut (), &point)
/// };
/// let hot = judge("temp_c", 99.0).expect("temp_c is watched");
/// assert_eq!((hot.score, hot.expected), (1.0, 90.0));
/// assert_eq!(judge("temp_c", 20.0).map(|v| v.score), Some(0.0));
/// // A metric without bounds gets no verdict at all.
/// assert_eq!(judge("rpm", 1e9), None);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Threshold {
    bounds: HashMap<CompactString, (Option<f64>, Option<f64>)>,
}

impl Threshold {
    /// A threshold guard that watches nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bounds for metric `name`: alert below `min` or above `max`.
    pub fn bound(mut self, name: &str, min: Option<f64>, max: Option<f64>) -> Self {
        self.bounds.insert(name.into(), (min, max));
        self
    }

    /// Adds every bound of `other`, replacing bounds of the same metric.
    pub fn merge(&mut self, other: Threshold) {
        self.bounds.extend(other.bounds);
    }
}

impl SeriesLogic for Threshold {
    type State = ();

    fn observe(&self, _state: &mut (), reading: &SeriesReading) -> Option<Verdict> {
        let (min, max) = self.bounds.get(&reading.name)?;
        let value = reading.value;
        let (anomalous, expected) = match (min, max) {
            (Some(min), _) if value < *min => (true, *min),
            (_, Some(max)) if value > *max => (true, *max),
            (Some(min), Some(max)) => (false, (min + max) / 2.0),
            (Some(min), None) => (false, *min),
            (None, Some(max)) => (false, *max),
            (None, None) => return None,
        };
        Some(Verdict {
            score: if anomalous { 1.0 } else { 0.0 },
            observed: value,
            expected,
            window_start: reading.ts,
            window_end: reading.ts,
        })
    }
}
