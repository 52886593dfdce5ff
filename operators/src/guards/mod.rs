//! Anomaly guards: per-series logic on a shared raise-and-clear engine.

pub mod burst;
pub mod composite;
pub mod ewma;
pub mod level_shift;
pub mod mad;
pub mod open_alerts;
pub mod rate;
pub mod registry;
pub mod seasonal;
pub mod sequence;
pub mod series_guard;
pub mod silence;
pub mod snapshot;
pub mod threshold;
pub mod zscore;
