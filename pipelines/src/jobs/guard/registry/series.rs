//! The per-series guards' parameters: what `--guard KIND:key=value,…` and `[guard.KIND]`
//! accept, their defaults (the operator's own), the kind's default reaction, and the checks
//! that turn them into the guard. Listed in [`super::CATALOGUE`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use vigil_operators::{
    Composite, Ewma, LevelShift, Mad, Rate, Seasonal, Silence, Threshold, ZScore,
};

use super::checks::{alpha_of_span, at_least, levels, millis, positive, span_of_alpha};
use super::kind::{GuardParams, KindParams, Severity, Topic};
use super::params::{ParamError, duration};

/// `zscore`: distance from the rolling mean in standard deviations.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZScoreParams {
    /// Previous readings the mean and deviation are taken over (at least 2).
    pub window: usize,
    /// Raise at this many deviations.
    pub threshold: f64,
    /// Clear below this many deviations (default half of threshold).
    pub clear: Option<f64>,
}

impl Default for ZScoreParams {
    fn default() -> Self {
        let g = ZScore::default();
        Self {
            window: g.window,
            threshold: g.threshold,
            clear: None,
        }
    }
}

impl KindParams for ZScoreParams {
    const KIND: &'static str = "zscore";
    const PARAMETERS: &'static str = "window=60 threshold=6 clear=3";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str = "A reading is many standard deviations from the mean of the previous readings of its series.";

    fn check(self) -> Result<GuardParams, ParamError> {
        let (threshold, clear) = levels(self.threshold, self.clear)?;
        Ok(GuardParams::ZScore(ZScore {
            window: at_least("window", self.window, 2)?,
            threshold,
            clear,
        }))
    }
}

/// `threshold`: fixed bounds on one metric.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdParams {
    /// The metric name the bounds apply to.
    pub name: String,
    /// Alert below this.
    pub min: Option<f64>,
    /// Alert above this.
    pub max: Option<f64>,
}

impl KindParams for ThresholdParams {
    const KIND: &'static str = "threshold";
    const PARAMETERS: &'static str = "name=METRIC min=… max=…";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Critical;
    const DESCRIPTION: &'static str = "A metric left its fixed safe range.";

    fn check(self) -> Result<GuardParams, ParamError> {
        if self.min.is_none() && self.max.is_none() {
            return Err(ParamError::new("needs min=… or max=…"));
        }
        Ok(GuardParams::Threshold(
            Threshold::new().bound(&self.name, self.min, self.max),
        ))
    }
}

/// `ewma`: distance from the exponentially weighted mean.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EwmaParams {
    /// Span of the weighted mean in readings (at least 1).
    pub span: usize,
    /// Readings before the guard gives an opinion (at least 1).
    pub warmup: u32,
    /// Raise at this many weighted deviations.
    pub threshold: f64,
    /// Clear below this many (default half of threshold).
    pub clear: Option<f64>,
}

impl Default for EwmaParams {
    fn default() -> Self {
        let g = Ewma::default();
        Self {
            span: span_of_alpha(g.alpha),
            warmup: g.warmup,
            threshold: g.threshold,
            clear: None,
        }
    }
}

impl KindParams for EwmaParams {
    const KIND: &'static str = "ewma";
    const PARAMETERS: &'static str = "span=60 warmup=30 threshold=6 clear=3";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str =
        "A reading is far from the series' exponentially weighted mean, in weighted deviations.";

    fn check(self) -> Result<GuardParams, ParamError> {
        let (threshold, clear) = levels(self.threshold, self.clear)?;
        Ok(GuardParams::Ewma(Ewma {
            alpha: alpha_of_span(at_least("span", self.span, 1)?),
            warmup: at_least("warmup", self.warmup, 1)?,
            threshold,
            clear,
        }))
    }
}

/// `mad`: distance from the rolling median in robust deviations.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MadParams {
    /// Previous readings the median and MAD are taken over (at least 3).
    pub window: usize,
    /// Raise at this many robust deviations.
    pub threshold: f64,
    /// Clear below this many (default half of threshold).
    pub clear: Option<f64>,
}

impl Default for MadParams {
    fn default() -> Self {
        let g = Mad::default();
        Self {
            window: g.window,
            threshold: g.threshold,
            clear: None,
        }
    }
}

impl KindParams for MadParams {
    const KIND: &'static str = "mad";
    const PARAMETERS: &'static str = "window=60 threshold=6 clear=3";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str = "A reading is far from the rolling median in robust deviations (MAD), which outliers cannot inflate.";

    fn check(self) -> Result<GuardParams, ParamError> {
        let (threshold, clear) = levels(self.threshold, self.clear)?;
        Ok(GuardParams::Mad(Mad {
            window: at_least("window", self.window, 3)?,
            threshold,
            clear,
        }))
    }
}

/// `rate`: rate of change per second, against a fixed bound or the series' usual rates. The
/// two ways take different parameters, so none has a default of its own here.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateParams {
    /// A fixed bound on |rate| in units per second; without it, rates are compared with the
    /// series' usual rates.
    pub max: Option<f64>,
    /// Without `max`: span of the usual rate in readings (default 60).
    pub span: Option<usize>,
    /// Without `max`: 1 judges rates, 2 changes of rate (default 1).
    pub order: Option<u8>,
    /// Without `max`: raise at this many deviations from the usual rate (default 6).
    pub threshold: Option<f64>,
    /// With `max`, a share of it (default 0.5); without, deviations (default half of
    /// threshold).
    pub clear: Option<f64>,
}

impl KindParams for RateParams {
    const KIND: &'static str = "rate";
    const PARAMETERS: &'static str =
        "max=UNITS_PER_S clear=0.5 | span=60 order=1 threshold=6 clear=3";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str =
        "A series changes faster per second of event time than its bound, or than it usually does.";

    fn check(self) -> Result<GuardParams, ParamError> {
        const WAYS: &str =
            "use max (units per second) and clear, or span, order, threshold and clear";
        if let Some(max) = self.max {
            let mut g = Rate::bounded(positive("max", max)?);
            let adaptive = [
                ("span", self.span.is_some()),
                ("order", self.order.is_some()),
                ("threshold", self.threshold.is_some()),
            ];
            if let Some((key, _)) = adaptive.iter().find(|(_, given)| *given) {
                return Err(ParamError::new(format!(
                    "{key} does not go with max: {WAYS}"
                )));
            }
            if let Some(clear) = self.clear {
                if !(0.0..=1.0).contains(&clear) {
                    return Err(ParamError::new(
                        "with max, clear is a share of max between 0 and 1",
                    ));
                }
                g.clear = clear;
            }
            return Ok(GuardParams::Rate(g));
        }
        let mut g = Rate::default();
        if let Some(span) = self.span {
            g.alpha = alpha_of_span(at_least("span", span, 1)?);
        }
        if let Some(order) = self.order {
            if !(1..=2).contains(&order) {
                return Err(ParamError::new("order is 1 (rates) or 2 (changes of rate)"));
            }
            g.order = order;
        }
        (g.threshold, g.clear) = levels(self.threshold.unwrap_or(g.threshold), self.clear)?;
        Ok(GuardParams::Rate(g))
    }
}

/// `level_shift`: lasting shifts of the level (two-sided CUSUM).
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelShiftParams {
    /// Span of the baseline in readings (at least 1).
    pub span: usize,
    /// Deviations per reading that do not count towards a shift (below 0 counts as 0).
    pub drift: f64,
    /// Raise when the cumulative sum reaches this.
    pub threshold: f64,
    /// Clear below this (default half of threshold).
    pub clear: Option<f64>,
}

impl Default for LevelShiftParams {
    fn default() -> Self {
        let g = LevelShift::default();
        Self {
            span: span_of_alpha(g.alpha),
            drift: g.drift,
            threshold: g.threshold,
            clear: None,
        }
    }
}

impl KindParams for LevelShiftParams {
    const KIND: &'static str = "level_shift";
    const PARAMETERS: &'static str = "span=240 drift=1 threshold=12 clear=6";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Info;
    const DESCRIPTION: &'static str =
        "A series has moved to a new level and stayed there (two-sided CUSUM).";

    fn check(self) -> Result<GuardParams, ParamError> {
        let (threshold, clear) = levels(self.threshold, self.clear)?;
        Ok(GuardParams::LevelShift(LevelShift {
            alpha: alpha_of_span(at_least("span", self.span, 1)?),
            drift: self.drift.max(0.0),
            threshold,
            clear,
            ..LevelShift::default()
        }))
    }
}

/// `seasonal`: distance from the usual value at this phase of the period.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeasonalParams {
    /// The period, e.g. `1d`, `7d`, `12h`.
    #[serde(with = "duration")]
    pub period: Duration,
    /// Phases per period (at least 1).
    pub buckets: u32,
    /// Raise at this many deviations from the phase's mean.
    pub threshold: f64,
    /// Clear below this many (default half of threshold).
    pub clear: Option<f64>,
}

impl Default for SeasonalParams {
    fn default() -> Self {
        let g = Seasonal::default();
        Self {
            period: Duration::from_millis(g.period_ms.unsigned_abs()),
            buckets: g.buckets,
            threshold: g.threshold,
            clear: None,
        }
    }
}

impl KindParams for SeasonalParams {
    const KIND: &'static str = "seasonal";
    const PARAMETERS: &'static str = "period=1d buckets=24 threshold=6 clear=3";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str =
        "A reading is far from what the series usually does at this time of day.";

    fn check(self) -> Result<GuardParams, ParamError> {
        let (threshold, clear) = levels(self.threshold, self.clear)?;
        Ok(GuardParams::Seasonal(Seasonal {
            period_ms: millis("period", self.period, 1)?,
            buckets: at_least("buckets", self.buckets, 1)?,
            threshold,
            clear,
            ..Seasonal::default()
        }))
    }
}

/// `composite`: all statistical views combined into one calibrated score.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompositeParams {
    /// Window of the rolling median and span of the weighted means (at least 3).
    pub window: usize,
    /// Readings of history each component remembers.
    pub memory: f64,
    /// Raise when the combined tail probability is at most this.
    pub raise_p: f64,
    /// Clear when it is above this (at least raise_p, at most 1).
    pub clear_p: f64,
    /// How fast a low probability wears off per reading (at least 1).
    pub hold: f64,
    /// Readings after an alarm during which the guard does not raise again.
    pub refractory: u32,
    /// Readings before the guard gives an opinion.
    pub warmup: u32,
}

impl Default for CompositeParams {
    fn default() -> Self {
        let g = Composite::default();
        Self {
            window: g.window,
            memory: g.memory,
            raise_p: g.raise_p,
            clear_p: g.clear_p,
            hold: g.hold,
            refractory: g.refractory,
            warmup: g.warmup,
        }
    }
}

impl KindParams for CompositeParams {
    const KIND: &'static str = "composite";
    const PARAMETERS: &'static str =
        "window=30 memory=2000 raise_p=0.003 clear_p=0.5 hold=1.1 refractory=0 warmup=100";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str = "The statistical guards together find a reading rarer than the series has ever been (calibrated per series).";

    fn check(self) -> Result<GuardParams, ParamError> {
        let raise_p = positive("raise_p", self.raise_p)?;
        let clear_p = positive("clear_p", self.clear_p)?;
        if raise_p > clear_p || clear_p > 1.0 {
            return Err(ParamError::new("need raise_p ≤ clear_p ≤ 1"));
        }
        Ok(GuardParams::Composite(Composite {
            window: at_least("window", self.window, 3)?,
            memory: positive("memory", self.memory)?,
            warmup: self.warmup,
            raise_p,
            clear_p,
            hold: at_least("hold", self.hold, 1.0)?,
            refractory: self.refractory,
            ..Composite::default()
        }))
    }
}

/// `silence`: a series that stops reporting.
#[derive(Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SilenceParams {
    /// Usual intervals without a reading that make a series silent.
    pub factor: f64,
    /// Silence shorter than this never counts, e.g. `30s`.
    #[serde(with = "duration")]
    pub min: Duration,
    /// Intervals seen before the usual interval is trusted (at least 1).
    pub warmup: u32,
}

impl Default for SilenceParams {
    fn default() -> Self {
        let g = Silence::default();
        Self {
            factor: g.factor,
            min: Duration::from_millis(g.min_ms.unsigned_abs()),
            warmup: g.warmup,
        }
    }
}

impl KindParams for SilenceParams {
    const KIND: &'static str = "silence";
    const PARAMETERS: &'static str = "factor=5 min=1s warmup=5";
    const TOPIC: Topic = Topic::TelemetryAlerts;
    const SEVERITY: Severity = Severity::Warning;
    const DESCRIPTION: &'static str = "A series stopped reporting for longer than factor × its usual interval (in event time); clears when data returns.";

    fn check(self) -> Result<GuardParams, ParamError> {
        Ok(GuardParams::Silence(Silence {
            factor: positive("factor", self.factor)?,
            min_ms: millis("min", self.min, 0)?,
            warmup: at_least("warmup", self.warmup, 1)?,
            ..Silence::default()
        }))
    }
}
