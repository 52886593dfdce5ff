//! Anomaly guards: per-series logic on a shared raise-and-clear engine.

pub mod open_alerts;
pub mod series_guard;
pub mod threshold;
pub mod zscore;
