//! The checks guard parameters share: positive numbers, lower bounds, raise and clear levels,
//! durations in milliseconds, and spans as EWMA weights.

use std::fmt::Display;
use std::time::Duration;

use super::params::ParamError;

/// The raise and clear levels in the guard's own unit: the threshold positive, the clear
/// level (half of the threshold unless given) between 0 and it.
pub(super) fn levels(threshold: f64, clear: Option<f64>) -> Result<(f64, f64), ParamError> {
    let threshold = positive("threshold", threshold)?;
    let clear = clear.unwrap_or(threshold / 2.0);
    if !(0.0..=threshold).contains(&clear) {
        return Err(ParamError::new(format!(
            "clear must be between 0 and threshold ({threshold}), not {clear}"
        )));
    }
    Ok((threshold, clear))
}

/// `value` when it is above 0.
pub(super) fn positive(key: &str, value: f64) -> Result<f64, ParamError> {
    if value > 0.0 {
        Ok(value)
    } else {
        Err(ParamError::new(format!(
            "{key} must be positive, not {value}"
        )))
    }
}

/// `value` when it is at least `min`.
pub(super) fn at_least<T: PartialOrd + Display>(
    key: &str,
    value: T,
    min: T,
) -> Result<T, ParamError> {
    if value >= min {
        Ok(value)
    } else {
        Err(ParamError::new(format!(
            "{key} must be at least {min}, not {value}"
        )))
    }
}

/// A duration in milliseconds, at least `min_ms`.
pub(super) fn millis(key: &str, duration: Duration, min_ms: i64) -> Result<i64, ParamError> {
    let ms = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
    if ms >= min_ms {
        Ok(ms)
    } else {
        Err(ParamError::new(format!(
            "{key} must be at least {min_ms} ms"
        )))
    }
}

/// A span in readings as an EWMA weight.
pub(super) fn alpha_of_span(span: usize) -> f64 {
    2.0 / (span as f64 + 1.0)
}

/// The span in readings an EWMA weight stands for.
pub(super) fn span_of_alpha(alpha: f64) -> usize {
    (2.0 / alpha - 1.0).round() as usize
}
