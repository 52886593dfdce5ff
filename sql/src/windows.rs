//! `zscore(value) OVER (…)`: how many standard deviations a reading is from the mean of its
//! window frame.
//!
//! It is what `(value - avg(value) OVER w) / stddev_samp(value) OVER w` means, computed so
//! that it stays exact where that expression does not: DataFusion slides a frame's variance by
//! retracting the rows that leave it, which after a run of equal readings (a stuck sensor)
//! leaves noise where the variance is zero. Here a frame that only grows adds its new rows
//! (Welford's method), and a frame that slides is summed again in two passes; a flat frame
//! (the deviation within rounding of zero), a frame of fewer than two readings, and a NULL
//! reading give NULL.

use std::ops::Range;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Field, FieldRef, Float64Type};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{PartitionEvaluatorArgs, WindowUDFFieldArgs};
use datafusion::logical_expr::{
    PartitionEvaluator, Signature, TypeSignature, Volatility, WindowUDF, WindowUDFImpl,
};

/// The `zscore` window function.
pub fn zscore() -> WindowUDF {
    WindowUDF::from(ZScore {
        signature: Signature::one_of(
            vec![TypeSignature::Uniform(1, vec![DataType::Float64])],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ZScore {
    signature: Signature,
}

impl WindowUDFImpl for ZScore {
    fn name(&self) -> &str {
        "zscore"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn partition_evaluator(
        &self,
        _args: PartitionEvaluatorArgs,
    ) -> Result<Box<dyn PartitionEvaluator>> {
        Ok(Box::new(Evaluator::default()))
    }

    fn field(&self, args: WindowUDFFieldArgs) -> Result<FieldRef> {
        Ok(Field::new(args.name(), DataType::Float64, true).into())
    }
}

/// One partition's evaluation. DataFusion evaluates a frame-using function over a whole
/// partition, row after row in order (this function does not claim bounded execution), so
/// the current row is the count of rows evaluated so far.
#[derive(Debug, Default)]
struct Evaluator {
    row: usize,
    /// The frame the running figures are of.
    frame: Range<usize>,
    stats: Running,
}

/// Count, mean and sum of squared deviations (Welford).
#[derive(Debug, Default, Clone, Copy)]
struct Running {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Running {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Two passes over the values: the mean, then the squared deviations from it.
    fn of(values: impl Iterator<Item = f64> + Clone) -> Running {
        let (n, sum) = values.clone().fold((0u64, 0.0), |(n, s), x| (n + 1, s + x));
        if n == 0 {
            return Running::default();
        }
        let mean = sum / n as f64;
        let m2 = values.map(|x| (x - mean) * (x - mean)).sum();
        Running { n, mean, m2 }
    }
}

impl PartitionEvaluator for Evaluator {
    fn uses_window_frame(&self) -> bool {
        true
    }

    fn evaluate(&mut self, values: &[ArrayRef], range: &Range<usize>) -> Result<ScalarValue> {
        let row = self.row;
        self.row += 1;
        let Some(column) = values.first() else {
            return exec_err!("zscore takes one argument: zscore(value) OVER (…)");
        };
        let column = column.as_primitive::<Float64Type>();
        let present = |r: Range<usize>| {
            r.filter(move |&i| column.is_valid(i))
                .map(move |i| column.value(i))
        };
        if range.start == self.frame.start && range.end >= self.frame.end && self.stats.n > 0 {
            for x in present(self.frame.end..range.end) {
                self.stats.add(x);
            }
        } else {
            self.stats = Running::of(present(range.clone()));
        }
        self.frame = range.clone();
        if row >= column.len() || column.is_null(row) || self.stats.n < 2 {
            return Ok(ScalarValue::Float64(None));
        }
        let Running { n, mean, m2 } = self.stats;
        let sd = (m2 / (n - 1) as f64).sqrt();
        // A flat frame: what deviation there is, is rounding.
        if !sd.is_normal() || sd <= 4.0 * f64::EPSILON * mean.abs() {
            return Ok(ScalarValue::Float64(None));
        }
        Ok(ScalarValue::Float64(Some((column.value(row) - mean) / sd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn welford_and_two_passes_agree() {
        let values = [3.0, 1.5, 7.25, 7.25, -2.0, 100.0];
        let mut running = Running::default();
        for x in values {
            running.add(x);
        }
        let twice = Running::of(values.iter().copied());
        assert_eq!(running.n, twice.n);
        assert!((running.mean - twice.mean).abs() < 1e-12);
        assert!((running.m2 - twice.m2).abs() < 1e-9);
    }
}
