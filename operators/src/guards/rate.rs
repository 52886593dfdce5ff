//! The rate-of-change guard: how fast a series moves per second of event time. Either against
//! a fixed bound (`max`, in units per second) or, without one, against the series' own usual
//! rates (deviations from their exponentially weighted mean).

use crate::guards::ewma::EwmaStats;
use crate::guards::series_guard::{
    Hysteresis, SeriesLogic, Verdict, distance_score, hysteresis_for,
};
use crate::model::SeriesReading;

/// Parameters of the rate-of-change guard.
///
/// # Examples
/// ```
/// use vigil_operators::guards::rate::RateState;
/// use vigil_operators::{SeriesReading, Rate, Reading, SeriesLogic};
///
/// // At most 10 m/s: 5 m in the first second is fine, 25 m in the next is not.
/// let guard = Rate::bounded(10.0);
/// let mut state = RateState::default();
/// let mut judge = |ts: i64, value: f64| {
///     let point = SeriesReading::from(&Reading::new("veh-1", "altitude_m", ts, value));
///     guard.observe(&mut state, &point)
/// };
/// assert_eq!(judge(0, 100.0), None);
/// let slow = judge(1_000, 105.0).expect("a rate");
/// assert_eq!(slow.observed, 5.0);
/// assert!(slow.score < 0.5);
/// let fast = judge(2_000, 130.0).expect("a rate");
/// assert_eq!(fast.observed, 25.0);
/// assert!(fast.score > 0.5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// A fixed bound on |rate| in units per second; `None` compares with the series' usual rates.
    pub max: Option<f64>,
    /// Without `max`: raise at this many deviations from the usual rate.
    pub threshold: f64,
    /// Without `max`: clear below this many deviations. With `max`: clear below this share of it.
    pub clear: f64,
    /// Without `max`: weight of the newest rate in the usual rate.
    pub alpha: f64,
    /// Without `max`: rates seen before the guard gives an opinion.
    pub warmup: u32,
    /// Without `max`: 1 judges the rate against the usual rates; 2 judges how much the rate
    /// changed since the previous one (per second) against the usual changes, which flags a
    /// change of slope, such as an engine cutting off, even while the series trends.
    pub order: u8,
}

impl Default for Rate {
    fn default() -> Self {
        Self {
            max: None,
            threshold: 6.0,
            clear: 3.0,
            alpha: 2.0 / 61.0,
            warmup: 30,
            order: 1,
        }
    }
}

impl Rate {
    /// A guard with a fixed bound on |rate| (units per second), clearing below half of it.
    pub fn bounded(max: f64) -> Self {
        Self {
            max: Some(max),
            clear: 0.5,
            ..Self::default()
        }
    }

    /// The rate of change between two readings, per second of event time; `None` when they
    /// share a timestamp.
    ///
    /// # Examples
    /// ```
    /// use vigil_operators::Rate;
    /// assert_eq!(Rate::rate((0, 1.0), (500, 2.0)), Some(2.0));
    /// assert_eq!(Rate::rate((500, 1.0), (500, 2.0)), None);
    /// ```
    pub fn rate(previous: (i64, f64), current: (i64, f64)) -> Option<f64> {
        let dt = (current.0 - previous.0) as f64 / 1000.0;
        (dt > 0.0).then(|| (current.1 - previous.1) / dt)
    }
}

/// The rate guard's memory of one series: the latest reading, the latest one at an earlier
/// event time (the base of the rate while readings share a timestamp), and the usual rates.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RateState {
    last: Option<(i64, f64)>,
    base: Option<(i64, f64)>,
    rates: EwmaStats,
    /// The previous rate and its time, for order 2.
    previous_rate: Option<(i64, f64)>,
}

impl RateState {
    /// Takes a reading and returns its rate against the latest reading at an earlier event
    /// time, with that reading (time, value); `None` for the first timestamp of a series.
    pub fn advance(&mut self, current: (i64, f64)) -> Option<(f64, (i64, f64))> {
        if let Some(last) = self.last
            && last.0 < current.0
        {
            self.base = Some(last);
        }
        self.last = Some(current);
        let base = self.base?;
        Rate::rate(base, current).map(|rate| (rate, base))
    }
}

impl SeriesLogic for Rate {
    type State = RateState;

    fn observe(&self, state: &mut RateState, reading: &SeriesReading) -> Option<Verdict> {
        let (rate, since) = state.advance((reading.ts, reading.value))?;
        let (rate, since) = if self.max.is_none() && self.order >= 2 {
            // The change of the rate, per second, since the previous rate.
            let previous = state.previous_rate.replace((reading.ts, rate));
            let (t0, r0) = previous?;
            let change = Rate::rate((t0, r0), (reading.ts, rate))?;
            (change, (t0, r0))
        } else {
            (rate, since)
        };
        let verdict = match self.max {
            Some(max) => Some(Verdict {
                score: distance_score(rate, max),
                observed: rate,
                expected: max.copysign(rate),
                window_start: since.0,
                window_end: reading.ts,
            }),
            None => (state.rates.n >= self.warmup).then(|| Verdict {
                score: distance_score(state.rates.deviations(rate), self.threshold),
                observed: rate,
                expected: state.rates.mean,
                window_start: since.0,
                window_end: reading.ts,
            }),
        };
        if self.max.is_none() {
            state.rates.update(rate, self.alpha);
        }
        verdict
    }

    fn hysteresis(&self) -> Hysteresis {
        match self.max {
            Some(max) => hysteresis_for(max, max * self.clear),
            None => hysteresis_for(self.threshold, self.clear),
        }
    }
}
