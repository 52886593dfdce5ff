//! The composite anomaly guard: every statistical guard's view of a reading, each turned into
//! a tail probability against that series' own history of it, combined into one calibrated
//! score. Causal (a reading is judged only against what came before it), streaming, bounded
//! in memory, and one configuration for every series.
//!
//! Per reading the components measure, in their own deviations: distance from the EWMA mean,
//! distance from the rolling median (MAD), the rate of change against the usual rates, a
//! CUSUM of lasting shifts, and distance from the usual value at this time of day. Each
//! component keeps a decaying histogram of its measure for the series, which gives the
//! probability `p` of a measure at least this large; the composite takes the smallest `p`
//! times the number of components (a Bonferroni bound, so that five chances to look odd do
//! not make an ordinary reading alarming) and scores `1 - p`.

use crate::guards::ewma::EwmaStats;
use crate::guards::level_shift::{LevelShift, LevelShiftState};
use crate::guards::mad::SortedWindow;
use crate::guards::rate::RateState;
use crate::guards::seasonal::{Seasonal, SeasonalState};
use crate::guards::series_guard::{Hysteresis, SeriesLogic, Verdict};
use crate::model::SeriesReading;

/// Components the composite combines.
const COMPONENTS: usize = 5;

/// Parameters of the composite guard. The defaults are the configuration NAB is scored with.
///
/// # Examples
/// Three hundred ordinary readings, then a spike: one alert, at the spike.
/// ```
/// use vigil_operators::{AlertStatus, Composite, Guard, GuardLabel, SeriesReading, Reading};
///
/// let mut points: Vec<SeriesReading> = (0..300)
///     .map(|i| SeriesReading::from(&Reading::new("veh-1", "temp_c", i * 60_000, (i * 37 % 11) as f64)))
///     .collect();
/// points.push(SeriesReading::from(&Reading::new("veh-1", "temp_c", 300 * 60_000, 100.0)));
/// let alerts = Guard::new(GuardLabel::new("composite"), Composite::default()).replay(&points);
/// let raised: Vec<_> = alerts.iter().filter(|a| a.status == AlertStatus::Raised).collect();
/// assert_eq!(raised.len(), 1);
/// assert_eq!((raised[0].ts, raised[0].observed), (300 * 60_000, 100.0));
/// assert!(raised[0].score > 0.99);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Composite {
    /// Window of the rolling median and MAD, and span of the EWMA mean and the usual rates.
    pub window: usize,
    /// Readings of history each component's histogram remembers (its decay horizon).
    pub memory: f64,
    /// Readings seen before the guard gives an opinion.
    pub warmup: u32,
    /// Raise when the combined tail probability is at most this.
    pub raise_p: f64,
    /// Clear when the combined tail probability is above this.
    pub clear_p: f64,
    /// How fast a low probability wears off: the score holds the smallest probability seen,
    /// which grows by this factor per reading, so an alert stays open a while after its
    /// anomaly and one episode is one alert.
    pub hold: f64,
    /// Readings after an alarm during which the guard does not raise again.
    pub refractory: u32,
    /// The seasonal component's period and phases.
    pub seasonal: Seasonal,
    /// The level-shift component.
    pub level_shift: LevelShift,
}

impl Default for Composite {
    fn default() -> Self {
        Self {
            window: 30,
            memory: 2000.0,
            warmup: 100,
            raise_p: 3e-3,
            clear_p: 0.5,
            hold: 1.1,
            refractory: 0,
            // The phase means remember longer than the standalone guard's: a day's shape is
            // learnt over weeks, not days.
            seasonal: Seasonal {
                alpha: 0.05,
                ..Seasonal::default()
            },
            level_shift: LevelShift::default(),
        }
    }
}

/// Bins of a component's histogram: half-octaves of the measure from 2^-4 up.
const BINS: usize = 40;

/// A decaying histogram of a non-negative measure, on a log scale, kept as tail sums:
/// `tails[b]` is the weight of every bin from `b` up, so a tail probability is one read and
/// adding a measure touches only the bins at or below its own (usually a handful).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct TailHistogram {
    #[serde(with = "bins")]
    tails: [f32; BINS],
    /// The highest bin that holds weight.
    top: usize,
}

impl Default for TailHistogram {
    fn default() -> Self {
        Self {
            tails: [0.0; BINS],
            top: 0,
        }
    }
}

/// The half-octave bin of a measure: `floor(2 · log2(measure)) + 8`, clamped, from the bits
/// of the float (no logarithm).
fn bin_of(measure: f64) -> usize {
    if measure.is_nan() || measure <= 0.0 {
        return 0;
    }
    let bits = measure.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // The upper half of the octave starts at a mantissa of √2.
    let upper = (bits & ((1 << 52) - 1)) >= 0x6A09E667F3BCD;
    let b = 2 * exponent + i64::from(upper) + 8;
    b.clamp(0, (BINS - 1) as i64) as usize
}

impl TailHistogram {
    fn total(&self) -> f32 {
        self.tails[0]
    }

    /// The probability of a measure at least this large: the weight above its bin and half of
    /// its own bin over the total. Past the largest measure seen, the last half reading's
    /// worth halves with every half-octave further out, so that a record is scored by how far
    /// it goes beyond what the series has done.
    fn tail(&self, measure: f64) -> f64 {
        let b = bin_of(measure);
        let total = f64::from(self.total()) + 1.0;
        if b > self.top {
            return 0.5 / total * 0.5f64.powi((b - self.top) as i32);
        }
        let above = if b + 1 < BINS { self.tails[b + 1] } else { 0.0 };
        let own = self.tails[b] - above;
        ((f64::from(above) + 0.5 * f64::from(own) + 0.5) / total).min(1.0)
    }

    /// Folds in a measure with weight `weight` (which grows to make older ones count less).
    fn add(&mut self, measure: f64, weight: f32) {
        let b = bin_of(measure);
        for tail in &mut self.tails[..=b] {
            *tail += weight;
        }
        self.top = self.top.max(b);
    }

    fn rescale(&mut self, factor: f32) {
        for tail in &mut self.tails {
            *tail *= factor;
        }
    }
}

/// The composite guard's memory of one series.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CompositeState {
    n: u32,
    first_ts: i64,
    ewma: EwmaStats,
    window: SortedWindow,
    rate_base: RateState,
    rates: EwmaStats,
    level: LevelShiftState,
    seasonal: SeasonalState,
    histograms: [TailHistogram; COMPONENTS],
    /// The weight of the next measure; grows by `1 + 1/memory` per reading.
    weight: f32,
    /// The held combined probability (see [`Composite::hold`]).
    held: f64,
    /// Readings since the last alarm (saturating).
    since_alarm: u32,
}

impl Composite {
    /// The components' measures for a reading (`None` where a component has no opinion yet),
    /// with the value each expected; folds the reading into their state.
    fn measures(
        &self,
        s: &mut CompositeState,
        p: &SeriesReading,
    ) -> [Option<(f64, f64)>; COMPONENTS] {
        let alpha = 2.0 / (self.window as f64 + 1.0);
        let x = p.value;
        let ewma = (s.ewma.n >= 2).then(|| (s.ewma.deviations(x), s.ewma.mean));
        s.ewma.update(x, alpha);

        let robust = (s.window.len() >= self.window.min(30)).then(|| s.window.robust_distance(x));
        s.window.push(x, self.window.max(1));

        let mut rate = None;
        if let Some((r, (t0, x0))) = s.rate_base.advance((p.ts, x)) {
            if s.rates.n >= 2 {
                let dt = (p.ts - t0) as f64 / 1000.0;
                rate = Some((s.rates.deviations(r), x0 + s.rates.mean * dt));
            }
            s.rates.update(r, alpha);
        }

        let level = self.level_shift.step(&mut s.level, x);
        let seasonal = self.seasonal.step(&mut s.seasonal, p.ts, x);
        [ewma, robust, rate, level, seasonal]
    }
}

impl SeriesLogic for Composite {
    type State = CompositeState;

    fn observe(&self, s: &mut CompositeState, p: &SeriesReading) -> Option<Verdict> {
        if s.n == 0 {
            s.first_ts = p.ts;
            s.weight = 1.0;
            s.since_alarm = u32::MAX;
        }
        s.n = s.n.saturating_add(1);
        let measures = self.measures(s, p);
        // Judge against the history so far, then add this reading's measures to it.
        let mut best: Option<(f64, f64)> = None;
        for (histogram, measure) in s.histograms.iter_mut().zip(&measures) {
            let Some((d, expected)) = *measure else {
                continue;
            };
            if histogram.total() > 0.0 {
                let tail = histogram.tail(d);
                if best.is_none_or(|(p, _)| tail < p) {
                    best = Some((tail, expected));
                }
            }
            histogram.add(d, s.weight);
        }
        s.weight *= 1.0 + 1.0 / self.memory.max(1.0) as f32;
        if s.weight > 1e6 {
            let factor = 1.0 / s.weight;
            s.histograms.iter_mut().for_each(|h| h.rescale(factor));
            s.weight = 1.0;
        }
        let (tail, expected) = best?;
        if s.n <= self.warmup {
            return None;
        }
        let p_value = (tail * COMPONENTS as f64).min(1.0);
        let p_value = if s.held > 0.0 {
            p_value.min(s.held * self.hold)
        } else {
            p_value
        };
        s.held = p_value;
        // After an alarm, a refractory period: the same episode does not raise again.
        let p_value = if p_value > self.raise_p {
            p_value
        } else if s.since_alarm < self.refractory {
            p_value.max(self.raise_p * 1.000_001)
        } else {
            s.since_alarm = 0;
            p_value
        };
        s.since_alarm = s.since_alarm.saturating_add(1);
        Some(Verdict {
            score: 1.0 - p_value,
            observed: p.value,
            expected,
            window_start: s.first_ts,
            window_end: p.ts,
        })
    }

    fn hysteresis(&self) -> Hysteresis {
        Hysteresis::new(1.0 - self.raise_p, 1.0 - self.clear_p)
    }

    fn state_bytes(&self, state: &CompositeState) -> usize {
        std::mem::size_of::<CompositeState>()
            + state.window.heap_bytes()
            + state.seasonal.heap_bytes()
    }
}

/// Serde for the histogram's bins, an array longer than serde derives for.
mod bins {
    use super::BINS;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bins: &[f32; BINS], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(bins.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<[f32; BINS], D::Error> {
        let bins = Vec::<f32>::deserialize(deserializer)?;
        let len = bins.len();
        bins.try_into()
            .map_err(|_| serde::de::Error::invalid_length(len, &"the histogram's number of bins"))
    }
}
