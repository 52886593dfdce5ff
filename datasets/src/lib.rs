//! vigil's datasets: the seeded generator, the loaders, and the recorded datasets.
//!
//! # Layout
//! - `generator`: seeded, deterministic rocket telemetry and device events with ground truth.
//! - `loaders`: plan an input (NDJSON, CSV, Parquet; files or directories; the embedded
//!   default; a generator) into units, and parse units into readings and dead letters.
//! - `fuzz`: fuzz entry points, one per parser, shared by the fuzzer and the corpus test.
//! - `nab`: the Numenta Anomaly Benchmark's labelled windows and scoring rules.
//! - `embedded`: the recorded dataset compiled into the binaries, replayed when a job is given
//!   no input.

pub mod changes;
#[doc(hidden)]
pub mod fuzz;
pub mod generator;
pub mod loaders;
pub mod nab;

/// The recorded datasets compiled into vigil's binaries.
pub mod embedded {
    /// The name the default dataset is reported under.
    pub const DEFAULT_NAME: &str = "datasets/nab/machine_temperature_system_failure.csv";

    /// NAB's `machine_temperature_system_failure.csv` (MIT license, Numenta): a temperature
    /// sensor of an industrial machine with a known failure; the job's built-in default input.
    pub const DEFAULT_BYTES: &[u8] =
        include_bytes!("../nab/machine_temperature_system_failure.csv");

    /// Plans the default dataset.
    pub fn default_plan(limits: crate::loaders::TextLimits) -> crate::loaders::InputPlan {
        crate::loaders::plan_embedded(DEFAULT_NAME, DEFAULT_BYTES, limits)
    }
}
